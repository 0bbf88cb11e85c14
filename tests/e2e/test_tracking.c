/* End to end: signed links in real messages and the provider webhook, over real HTTP against
 * nurtured run as a process. The email channel writes into the daemon's maildir; the tests read
 * the links out of the .eml files (quoted-printable decoded), click them with chosen user agents
 * and methods, and check what moved a lead and what only reached its timeline. */
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/hmac.h>

#include "api_util.h"
#include "nurture/track.h"

#define SECRET "tracking-secret-for-the-tests-0123456789"
#define WSECRET "webhook-secret-for-the-tests-0123456789"
#define BROWSER "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
#define MIN_DELAY_S 2

static char *tpl_dir;

static const char template_md[] =
    "Subject: Hello {{first_name|there}}\n"
    "\n"
    "Hello {{first_name|there}}, read [the guide](https://example.com/guide?a=1&b=2) and\n"
    "[the docs](https://example.com/docs).\n";

static const char track_plan[] =
    "id: \"track\"\n"
    "start: \"mail1\"\n"
    "nodes { id: \"mail1\" send { channel: \"email\" params { name: \"template\" value: "
    "\"hello\" } on { outcome: \"suppressed\" to: \"supp1\" } next: \"await\" } }\n"
    "nodes { id: \"await\" wait_event { filter { type: \"email.clicked\" } timeout { days: 30 } "
    "on_match: \"mail2\" on_timeout: \"quiet\" } }\n"
    "nodes { id: \"mail2\" send { channel: \"email\" params { name: \"template\" value: "
    "\"hello\" } on { outcome: \"suppressed\" to: \"supp2\" } next: \"await2\" } }\n"
    "nodes { id: \"await2\" wait_event { filter { type: \"email.opened\" } timeout { days: 30 } "
    "on_match: \"opened\" on_timeout: \"quiet\" } }\n"
    "nodes { id: \"opened\" exit { reason: \"opened\" } }\n"
    "nodes { id: \"supp1\" exit { reason: \"suppressed_first\" } }\n"
    "nodes { id: \"supp2\" exit { reason: \"suppressed_second\" } }\n"
    "nodes { id: \"quiet\" exit { reason: \"quiet\" } }\n";

static const char once_plan[] =
    "id: \"once\"\n"
    "start: \"mail\"\n"
    "nodes { id: \"mail\" send { channel: \"email\" params { name: \"template\" value: "
    "\"hello\" } on { outcome: \"suppressed\" to: \"supp\" } next: \"sent\" } }\n"
    "nodes { id: \"sent\" exit { reason: \"sent\" } }\n"
    "nodes { id: \"supp\" exit { reason: \"suppressed\" } }\n";

static int setup(void **state)
{
    static const char *extra[] = {"--tracking-secret", SECRET, "--webhook-secret", WSECRET,
                                  "--channel.email.min_click_delay", "2",
                                  "--channel.email.templates", NULL, "--max-body", "200000",
                                  NULL};
    char path[512];
    FILE *f;

    (void)state;
    tpl_dir = nt_test_tmpdir("nt-track-tpl");
    if (!tpl_dir)
        return -1;
    snprintf(path, sizeof(path), "%s/hello.md", tpl_dir);
    f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(template_md, f);
    fclose(f);
    extra[7] = tpl_dir;
    return api_setup(extra);
}

static int teardown(void **state)
{
    api_teardown(state);
    nt_test_rmrf(tpl_dir);
    free(tpl_dir);
    return 0;
}

/* ---- HTTP with headers -------------------------------------------------------------------- */

typedef struct resp {
    long status;
    char body[8192];
    size_t len;
    char location[4096];
    char ctype[128];
} resp_t;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    resp_t *r = arg;
    size_t k = size * n;
    size_t room = sizeof(r->body) - 1 - r->len;

    memcpy(r->body + r->len, p, k < room ? k : room);
    r->len += k < room ? k : room;
    r->body[r->len] = '\0';
    return k;
}

/* method path (or a full URL) with a user agent (NULL: none), extra header lines (NULL-ended),
 * a body. Fails the test when nothing answered. */
static void req(const char *method, const char *path, const char *ua, const char *const *hdrs,
                const char *ctype, const char *body, size_t len, resp_t *out)
{
    CURL *e = curl_easy_init();
    struct curl_slist *h = NULL;
    char url[8192], line[512];
    char *loc = NULL, *ct = NULL;

    memset(out, 0, sizeof(*out));
    snprintf(url, sizeof(url), "%s%s", strncmp(path, "http", 4) == 0 ? "" : env.daemon.url,
             path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)len);
    }
    if (ua)
        curl_easy_setopt(e, CURLOPT_USERAGENT, ua);
    if (ctype) {
        snprintf(line, sizeof(line), "Content-Type: %s", ctype);
        h = curl_slist_append(h, line);
    }
    for (size_t i = 0; hdrs && hdrs[i]; i++)
        h = curl_slist_append(h, hdrs[i]);
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
    if (curl_easy_perform(e) != CURLE_OK)
        fail_msg("%s %s: no response", method, path);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &loc);
    curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ct);
    snprintf(out->location, sizeof(out->location), "%s", loc ? loc : "");
    snprintf(out->ctype, sizeof(out->ctype), "%s", ct ? ct : "");
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
}

/* ---- plans, leads, runs ------------------------------------------------------------------- */

static void publish_text(const char *textpb)
{
    char path[] = "/tmp/nt-track-XXXXXX";
    int fd = mkstemp(path);
    uint8_t *bin = NULL;
    size_t len = 0;
    nt_test_resp_t r;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, textpb, strlen(textpb)), (ssize_t)strlen(textpb));
    close(fd);
    assert_int_equal(nt_test_compile_plan(path, &bin, &len), 0);
    unlink(path);
    call_raw("POST", "/v1/plans", OPS, "application/x-protobuf", bin, len, &r);
    free(bin);
    if (r.status != 201)
        fail_msg("publish: %ld %s", r.status, r.body);
    nt_test_resp_fini(&r);
}

static void lead_in(const char *id, const char *plan)
{
    char body[512];

    snprintf(body, sizeof(body),
             "{\"id\":\"%s\",\"attributes\":{\"first_name\":\"Ada\",\"email\":\"%s@example.com\"}}",
             id, id);
    create_lead(body);
    enrol_lead(id, plan);
}


static json_t *lead_json(const char *id)
{
    char path[256];
    nt_test_resp_t r;
    json_t *j;

    snprintf(path, sizeof(path), "/v1/leads/%s", id);
    call("GET", path, OPS, NULL, &r);
    expect_status(&r, 200, NULL);
    j = json_incref(r.json);
    nt_test_resp_fini(&r);
    return j;
}

typedef struct want {
    const char *lead, *plan, *node, *status;
} want_t;

static int run_is(void *arg)
{
    want_t *w = arg;
    json_t *l = lead_json(w->lead), *run;
    size_t i;
    int ok = 0;

    json_array_foreach(json_object_get(l, "runs"), i, run)
    {
        const char *p = json_string_value(json_object_get(run, "plan"));
        const char *n = json_string_value(json_object_get(run, "node"));
        const char *s = json_string_value(json_object_get(run, "status"));

        if (p && strcmp(p, w->plan) == 0 && n && strcmp(n, w->node) == 0 &&
            (!w->status || (s && strcmp(s, w->status) == 0)))
            ok = 1;
    }
    json_decref(l);
    return ok;
}

static void wait_run(const char *id, const char *plan, const char *node, const char *status)
{
    want_t w = {id, plan, node, status};

    if (nt_test_wait_until(run_is, &w, 20000) != 0) {
        json_t *l = lead_json(id);
        char *s = json_dumps(l, 0);

        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("%s in %s: wanted node %s, have %s", id, plan, node, s ? s : "?");
    }
}

/* Timeline entries of id whose text contains needle. */
static int timeline_count(const char *id, const char *needle)
{
    json_t *l = lead_json(id), *e;
    size_t i;
    int n = 0;

    json_array_foreach(json_object_get(l, "timeline"), i, e)
    {
        const char *t = json_string_value(json_object_get(e, "text"));

        if (t && strstr(t, needle))
            n++;
    }
    json_decref(l);
    return n;
}

typedef struct tl_want {
    const char *id, *needle;
    int n;
} tl_want_t;

static int timeline_has(void *arg)
{
    tl_want_t *w = arg;

    return timeline_count(w->id, w->needle) >= w->n;
}

static void wait_timeline(const char *id, const char *needle, int n)
{
    tl_want_t w = {id, needle, n};

    if (nt_test_wait_until(timeline_has, &w, 20000) != 0)
        fail_msg("%s: wanted %d timeline entries with '%s', have %d", id, n, needle,
                 timeline_count(id, needle));
}

/* ---- messages in the maildir -------------------------------------------------------------- */

/* The messages for <id>@example.com, decoded; *n of them. Caller frees each and the array. */
static char **messages_of(const char *id, int *n)
{
    char dir[4096], path[8192], addr[256];
    DIR *d;
    struct dirent *de;
    char **v = calloc(64, sizeof(*v));

    *n = 0;
    snprintf(dir, sizeof(dir), "%s/maildir/new", env.daemon.data_dir);
    snprintf(addr, sizeof(addr), "<%s@example.com>", id);
    d = opendir(dir);
    if (!d)
        return v;
    while ((de = readdir(d)) && *n < 64) {
        FILE *f;
        struct stat sb;
        char *buf;

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (stat(path, &sb) != 0 || !(f = fopen(path, "r")))
            continue;
        buf = calloc(1, (size_t)sb.st_size + 1);
        if (fread(buf, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size) {
            free(buf);
            fclose(f);
            continue;
        }
        fclose(f);
        if (!strstr(buf, addr)) {
            free(buf);
            continue;
        }
        nt_test_qp_decode(buf);
        v[(*n)++] = buf;
    }
    closedir(d);
    return v;
}

static void messages_free(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

typedef struct count_want {
    const char *id;
    int n;
} count_want_t;

static int has_messages(void *arg)
{
    count_want_t *w = arg;
    int n = 0;
    char **v = messages_of(w->id, &n);

    messages_free(v, n);
    return n >= w->n;
}

/* The path of the k-th link "/t/<kind>/<token>" in the (only) message for id. */
static void link_of(const char *id, char kind, int k, char *out, size_t cap)
{
    count_want_t w = {id, 1};
    char pat[8], **v;
    int n;
    const char *p;

    assert_int_equal(nt_test_wait_until(has_messages, &w, 20000), 0);
    v = messages_of(id, &n);
    snprintf(pat, sizeof(pat), "/t/%c/", kind);
    p = v[0];
    for (int i = 0; i <= k; i++) {
        p = strstr(p, pat);
        if (!p)
            fail_msg("message for %s has no link %d of kind %c:\n%s", id, k, kind, v[0]);
        if (i < k)
            p += 5;
    }
    size_t len = 5 + strspn(p + 5, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789-_.");
    assert_true(len < cap);
    memcpy(out, p, len);
    out[len] = '\0';
    messages_free(v, n);
}

static int count_messages(const char *id)
{
    int n = 0;
    char **v = messages_of(id, &n);

    messages_free(v, n);
    return n;
}

/* ---- what Redis holds --------------------------------------------------------------------- */

/* A fingerprint of everything a request could have written: key count, the lead hash, its
 * timeline and its partition's events stream length. Caller frees. */
static char *fingerprint(const char *id)
{
    char key[NT_KEY_MAX], *s = NULL;
    redisReply *x;
    long long keys = dbsize(), evs = redis_int("XLEN %s", events_key(key, id));
    char *hash, *hist;

    x = redisCommand(env.rc, "HGETALL %s", lead_key(key, id));
    assert_non_null(x);
    size_t cap = 1;
    for (size_t i = 0; i < x->elements; i++)
        cap += x->element[i]->len + 1;
    hash = calloc(1, cap);
    for (size_t i = 0; i < x->elements; i++) {
        strcat(hash, x->element[i]->str);
        strcat(hash, "\n");
    }
    freeReplyObject(x);
    x = redisCommand(env.rc, "GET %s", nt_key_hist(key, nt_partition(id, API_PARTITIONS), id));
    hist = strdup(x && x->type == REDIS_REPLY_STRING ? x->str : "");
    freeReplyObject(x);
    assert_true(asprintf(&s, "%lld|%lld|%s|%s", keys, evs, hash, hist) > 0);
    free(hash);
    free(hist);
    return s;
}

/* ---- the tests ---------------------------------------------------------------------------- */

static void test_tracking_scanner_head_and_early_clicks_do_not_move_a_lead_a_person_does(
    void **state)
{
    char link[4096];
    resp_t r;
    char key[NT_KEY_MAX];

    (void)state;
    publish_text(track_plan);
    publish_text(once_plan);
    lead_in("tr-a", "track");
    wait_run("tr-a", "track", "await", "active");
    link_of("tr-a", 'c', 0, link, sizeof(link));

    /* within the first seconds after delivery, even with a browser's user agent: a scanner */
    req("GET", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    assert_string_equal(r.location, "https://example.com/guide?a=1&b=2");
    sleep(MIN_DELAY_S + 1);
    /* HEAD, and known scanners or proxies, whenever they come */
    req("HEAD", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    req("GET", link, "Mozilla/5.0 (compatible; Mimecast URL Protect)", NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    req("GET", link, "Mozilla/5.0 (Windows NT 10.0) Microsoft Office/16.0 SafeLinks", NULL, NULL,
        NULL, 0, &r);
    assert_int_equal(r.status, 302);
    req("GET", link, NULL, NULL, NULL, NULL, 0, &r); /* no user agent at all */
    assert_int_equal(r.status, 302);
    wait_timeline("tr-a", "email.clicked (machine)", 5);
    usleep(200 * 1000);
    wait_run("tr-a", "track", "await", "active");
    assert_null(redis_hget(lead_key(key, "tr-a"), "e:email.clicked"));

    /* a person, after the delay */
    req("GET", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    assert_string_equal(r.location, "https://example.com/guide?a=1&b=2");
    wait_run("tr-a", "track", "await2", "active");
    assert_int_equal(timeline_count("tr-a", "email.clicked (machine)"), 5);
}

static void test_tracking_open_pixel_apple_proxy_is_a_machine_a_reader_is_not(void **state)
{
    char link[4096];
    resp_t r;
    count_want_t two = {"tr-a", 2};

    (void)state;
    /* tr-a got its second message after the click of the previous test */
    assert_int_equal(nt_test_wait_until(has_messages, &two, 20000), 0);
    assert_int_equal(count_messages("tr-a"), 2);
    /* the pixel of either message will do: an open is the lead's */
    link_of("tr-a", 'o', 0, link, sizeof(link));
    req("GET", link, "Mozilla/5.0", NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "image/gif");
    assert_int_equal(r.len, 43);
    req("GET", link, "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via "
                     "ggpht.com GoogleImageProxy)", NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    wait_timeline("tr-a", "email.opened (machine)", 2);
    wait_run("tr-a", "track", "await2", "active");
    req("GET", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    wait_run("tr-a", "track", "opened", "done");
}

static void test_tracking_many_links_at_once_is_a_scanner(void **state)
{
    char l0[4096], l1[4096];
    resp_t r;

    (void)state;
    lead_in("tr-b", "track");
    wait_run("tr-b", "track", "await", "active");
    link_of("tr-b", 'c', 0, l0, sizeof(l0));
    link_of("tr-b", 'c', 1, l1, sizeof(l1));
    assert_string_not_equal(l0, l1);
    sleep(MIN_DELAY_S + 1);
    /* a second link of the same message clicked within 2 s of the first: a scanner following
     * every link (the first click cannot be taken back, the second is recorded as a machine's) */
    req("GET", l1, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    assert_string_equal(r.location, "https://example.com/docs");
    req("GET", l0, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    wait_timeline("tr-b", "email.clicked (machine)", 1);
    wait_run("tr-b", "track", "await2", "active");
}

static void test_tracking_tampered_truncated_foreign_and_expired_tokens_get_4xx_and_write_nothing(
    void **state)
{
    char link[4096], bad[4096], *before, *after, *tok;
    resp_t r;
    nt_track_token_t t;

    (void)state;
    link_of("tr-b", 'c', 0, link, sizeof(link));
    assert_int_equal(nt_track_verify(SECRET, strlen(SECRET), link + 5, time(NULL), &t),
                     NT_TRACK_OK);
    before = fingerprint("tr-b");

    /* one character of the payload changed */
    snprintf(bad, sizeof(bad), "%s", link);
    bad[12] = bad[12] == 'A' ? 'B' : 'A';
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_true(r.status == 400 || r.status == 403);
    assert_true(strstr(r.body, "\"error\"") != NULL);
    /* the signature's last character changed (its unused bits too) */
    snprintf(bad, sizeof(bad), "%s", link);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'A' ? 'B' : 'A';
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_true(r.status == 400 || r.status == 403);
    /* truncated */
    snprintf(bad, sizeof(bad), "%s", link);
    bad[strlen(bad) - 3] = '\0';
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_true(r.status == 400 || r.status == 403);
    snprintf(bad, sizeof(bad), "%.*s", (int)(strchr(link, '.') - link), link);
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 400);
    /* another secret */
    tok = nt_track_sign("some-other-secret-0123456789", 28, NT_TRACK_CLICK, t.msgid, t.issued,
                        t.expires, "https://evil.example/");
    snprintf(bad, sizeof(bad), "/t/c/%s", tok);
    free(tok);
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 403);
    assert_string_equal(r.location, "");
    /* expired */
    tok = nt_track_sign(SECRET, strlen(SECRET), NT_TRACK_CLICK, t.msgid, time(NULL) - 800000,
                        time(NULL) - 10, "https://example.com/guide");
    snprintf(bad, sizeof(bad), "/t/c/%s", tok);
    free(tok);
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 403);
    assert_true(strstr(r.body, "expired") != NULL);
    /* a click token on the unsubscribe route: refused, and the page errors are plain text */
    snprintf(bad, sizeof(bad), "/t/u/%s", link + 5);
    req("POST", bad, BROWSER, NULL, "application/x-www-form-urlencoded",
        "List-Unsubscribe=One-Click", 26, &r);
    assert_int_equal(r.status, 400);
    assert_true(strncmp(r.ctype, "text/plain", 10) == 0);

    usleep(300 * 1000);
    after = fingerprint("tr-b");
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static void test_tracking_unsubscribe_page_then_post_is_idempotent_and_suppresses_next_email(
    void **state)
{
    char link[4096], click[4096], key[NT_KEY_MAX], *before, *after, *u1, *u2;
    resp_t r;

    (void)state;
    lead_in("tr-c", "track");
    wait_run("tr-c", "track", "await", "active");
    link_of("tr-c", 'u', 0, link, sizeof(link));
    link_of("tr-c", 'c', 0, click, sizeof(click));

    /* the List-Unsubscribe header carries the signed link and a mailto */
    {
        char **v;
        int n;

        v = messages_of("tr-c", &n);
        assert_int_equal(n, 1);
        assert_non_null(strstr(v[0], "List-Unsubscribe: <http://127.0.0.1:"));
        assert_non_null(strstr(v[0], "<mailto:unsubscribe@"));
        messages_free(v, n);
    }

    /* the page asks, and writes nothing */
    before = fingerprint("tr-c");
    req("GET", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "<form method=\"post\""));
    assert_non_null(strstr(r.body, link));
    req("HEAD", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    usleep(200 * 1000);
    after = fingerprint("tr-c");
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* the button */
    req("POST", link, BROWSER, NULL, "application/x-www-form-urlencoded",
        "List-Unsubscribe=One-Click", 26, &r);
    assert_int_equal(r.status, 200);
    u1 = redis_hget(lead_key(key, "tr-c"), "_unsub");
    assert_non_null(u1);
    req("POST", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    u2 = redis_hget(lead_key(key, "tr-c"), "_unsub");
    assert_string_equal(u1, u2);
    free(u1);
    free(u2);
    wait_timeline("tr-c", "event email.unsubscribed", 1);
    usleep(200 * 1000);
    assert_int_equal(timeline_count("tr-c", "event email.unsubscribed"), 1);

    /* the next email step leaves by "suppressed", and nothing is written for it */
    sleep(MIN_DELAY_S + 1);
    req("GET", click, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    wait_run("tr-c", "track", "supp2", "done");
    assert_int_equal(count_messages("tr-c"), 1);
}

static void test_tracking_one_click_post_unsubscribes_at_once_in_every_plan(void **state)
{
    char link[4096], key[NT_KEY_MAX];
    resp_t r;

    (void)state;
    lead_in("tr-d", "track");
    wait_run("tr-d", "track", "await", "active");
    link_of("tr-d", 'u', 0, link, sizeof(link));
    /* RFC 8058: the mail client POSTs at once, no page */
    req("POST", link, "Mozilla/5.0 (compatible; GoogleOneClick)", NULL,
        "application/x-www-form-urlencoded", "List-Unsubscribe=One-Click", 26, &r);
    assert_int_equal(r.status, 200);
    req("POST", link, NULL, NULL, "application/x-www-form-urlencoded",
        "List-Unsubscribe=One-Click", 26, &r);
    assert_int_equal(r.status, 200);
    char *unsub = redis_hget(lead_key(key, "tr-d"), "_unsub");
    assert_non_null(unsub);
    free(unsub);
    enrol_lead("tr-d", "once");
    wait_run("tr-d", "once", "supp", "done");
    assert_int_equal(count_messages("tr-d"), 1);
}

/* ---- the provider webhook ------------------------------------------------------------------ */

static void sign_webhook(const char *secret, long long t, const char *body, char *hdr, size_t cap)
{
    char *msg = NULL;
    unsigned char mac[32];
    unsigned int len = 0;
    char hex[65];
    int n = asprintf(&msg, "%lld.%s", t, body);

    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, (size_t)n, mac, &len);
    free(msg);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    snprintf(hdr, cap, "X-Nurture-Signature: t=%lld,v1=%s", t, hex);
}

static void hook(const char *body, const char *sig_hdr, resp_t *r)
{
    char auth[256];
    const char *hdrs[3] = {auth, sig_hdr, NULL};

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", WEBHOOK);
    req("POST", "/v1/webhooks/email", NULL, hdrs, "application/json", body, strlen(body), r);
}

static void test_tracking_webhook_signed_applies_refuses_bad_old_and_replayed(void **state)
{
    char sig[256], key[NT_KEY_MAX], *before, *after, *s;
    const char *body = "{\"events\":["
                       "{\"type\":\"delivered\",\"message\":\"tr-e:track:mail1:1\"},"
                       "{\"type\":\"bounced\",\"bounce\":\"hard\",\"message\":\"tr-f:track:mail1:1\","
                       "\"reason\":\"550 5.1.1 no such user\"},"
                       "{\"type\":\"complaint\",\"message\":\"nobody:track:mail1:1\"}]}";
    resp_t r;

    (void)state;
    lead_in("tr-e", "track");
    lead_in("tr-f", "track");
    wait_run("tr-e", "track", "await", "active");
    wait_run("tr-f", "track", "await", "active");

    before = fingerprint("tr-f");
    /* no signature, a wrong one, an old one: 401 and nothing written */
    hook(body, NULL, &r);
    assert_int_equal(r.status, 401);
    sign_webhook("another-secret-0123456789", time(NULL), body, sig, sizeof(sig));
    hook(body, sig, &r);
    assert_int_equal(r.status, 401);
    sign_webhook(WSECRET, time(NULL) - 600, body, sig, sizeof(sig));
    hook(body, sig, &r);
    assert_int_equal(r.status, 401);
    /* signed over another body */
    sign_webhook(WSECRET, time(NULL), "{\"events\":[]}", sig, sizeof(sig));
    hook(body, sig, &r);
    assert_int_equal(r.status, 401);
    /* signed, but malformed or too big */
    sign_webhook(WSECRET, time(NULL), "{\"events\":[", sig, sizeof(sig));
    hook("{\"events\":[", sig, &r);
    assert_int_equal(r.status, 400);
    sign_webhook(WSECRET, time(NULL), "{\"events\":[{\"type\":\"opened\",\"message\":\"a:b:c:1\"}]}",
                 sig, sizeof(sig));
    hook("{\"events\":[{\"type\":\"opened\",\"message\":\"a:b:c:1\"}]}", sig, &r);
    assert_int_equal(r.status, 400);
    {
        size_t cap = 1001 * 60 + 32, o = 0;
        char *big = malloc(cap);

        o += (size_t)snprintf(big + o, cap - o, "{\"events\":[");
        for (int i = 0; i < 1001; i++)
            o += (size_t)snprintf(big + o, cap - o, "%s{\"type\":\"delivered\",\"message\":\"x:y:z:%d\"}",
                                  i ? "," : "", i);
        snprintf(big + o, cap - o, "]}");
        sign_webhook(WSECRET, time(NULL), big, sig, sizeof(sig));
        hook(big, sig, &r);
        assert_int_equal(r.status, 413);
        free(big);
        big = calloc(1, 250000);
        memset(big, ' ', 249999);
        big[0] = '{';
        big[249997] = '}';
        sign_webhook(WSECRET, time(NULL), big, sig, sizeof(sig));
        hook(big, sig, &r);
        assert_int_equal(r.status, 413);
        free(big);
    }
    usleep(200 * 1000);
    after = fingerprint("tr-f");
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* good: applied, the unknown message reported */
    sign_webhook(WSECRET, time(NULL), body, sig, sizeof(sig));
    hook(body, sig, &r);
    if (r.status != 200)
        fail_msg("webhook: %ld %s", r.status, r.body);
    assert_non_null(strstr(r.body, "\"applied\":2"));
    assert_non_null(strstr(r.body, "\"index\":2"));
    s = redis_hget(lead_key(key, "tr-f"), "_suppressed");
    assert_non_null(s);
    assert_non_null(strstr(s, "hard_bounce"));
    free(s);
    assert_null(redis_hget(lead_key(key, "tr-e"), "_suppressed"));
    wait_timeline("tr-e", "event email.delivered", 1);
    wait_timeline("tr-f", "event email.bounced", 1);

    /* the same request again: a replay */
    before = fingerprint("tr-f");
    hook(body, sig, &r);
    assert_int_equal(r.status, 409);
    usleep(200 * 1000);
    after = fingerprint("tr-f");
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* a hard bounce suppresses the address in every plan */
    enrol_lead("tr-f", "once");
    wait_run("tr-f", "once", "supp", "done");
    assert_int_equal(count_messages("tr-f"), 1);
    enrol_lead("tr-e", "once");
    wait_run("tr-e", "once", "sent", "done");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_tracking_scanner_head_and_early_clicks_do_not_move_a_lead_a_person_does),
        cmocka_unit_test(test_tracking_open_pixel_apple_proxy_is_a_machine_a_reader_is_not),
        cmocka_unit_test(test_tracking_many_links_at_once_is_a_scanner),
        cmocka_unit_test(
            test_tracking_tampered_truncated_foreign_and_expired_tokens_get_4xx_and_write_nothing),
        cmocka_unit_test(
            test_tracking_unsubscribe_page_then_post_is_idempotent_and_suppresses_next_email),
        cmocka_unit_test(test_tracking_one_click_post_unsubscribes_at_once_in_every_plan),
        cmocka_unit_test(test_tracking_webhook_signed_applies_refuses_bad_old_and_replayed),
    };

    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests(tests, setup, teardown);
}
