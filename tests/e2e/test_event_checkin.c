/* End to end: in-person events against nurtured run as a process and a real redis-server:
 * check-ins through `nurturectl events import` (a badge CSV with malformed rows) and the signed
 * webhook POST /v1/webhooks/event (unsigned, replayed and malformed requests write nothing),
 * unknown people becoming leads in the follow-up plan, a check-in moving a waiting lead, the
 * event channel's invitation with its signed RSVP link (in its line and on the lead), and the
 * RSVP page and answer. The link in an email: test_event_rsvp_email.c. */
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "api_util.h"
#include "nurture/track.h"

#define WSECRET "webhook-secret-for-the-event-tests-0123"
#define TSECRET "tracking-secret-for-the-event-tests-0123"

/* Leads that entered wait here for a check-in. */
static const char followup_plan[] =
    "id: \"ev_follow\"\n"
    "start: \"at_show\"\n"
    "nodes { id: \"at_show\" wait_event { filter { type: \"event.checked_in\" } "
    "timeout { days: 30 } on_match: \"came\" on_timeout: \"absent\" } }\n"
    "nodes { id: \"came\" exit { reason: \"attended\" } }\n"
    "nodes { id: \"absent\" exit { reason: \"absent\" } }\n";

/* An invitation through the event channel, then a wait for the answer. */
static const char invite_plan[] =
    "id: \"ev_invite\"\n"
    "start: \"invite\"\n"
    "nodes { id: \"invite\" send { channel: \"event\" params { name: \"event\" value: "
    "\"dinner-2026\" } params { name: \"kind\" value: \"invite\" } params { name: \"message\" "
    "value: \"Join us for dinner\" } next: \"answer\" } }\n"
    "nodes { id: \"answer\" wait_event { filter { type: \"event.rsvp\" } timeout { days: 10 } "
    "on_match: \"answered\" on_timeout: \"silent\" } }\n"
    "nodes { id: \"answered\" exit { reason: \"answered\" } }\n"
    "nodes { id: \"silent\" exit { reason: \"silent\" } }\n";

static int setup(void **state)
{
    static const char *extra[] = {"--webhook-secret", WSECRET, "--tracking-secret", TSECRET,
                                  NULL};

    (void)state;
    return api_setup(extra);
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

typedef struct resp {
    long status;
    char *body;
    size_t len;
    json_t *json;
} resp_t;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    resp_t *r = arg;
    size_t k = size * n;
    char *b = realloc(r->body, r->len + k + 1);

    if (!b)
        return 0;
    memcpy(b + r->len, p, k);
    r->len += k;
    b[r->len] = '\0';
    r->body = b;
    return k;
}

static void resp_fini(resp_t *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

/* A request: method, path, bearer token (NULL none), extra header (NULL none), body (NULL). */
static void req(const char *method, const char *path, const char *token, const char *header,
                const char *ctype, const char *body, resp_t *out)
{
    CURL *e = curl_easy_init();
    struct curl_slist *h = NULL;
    char url[8192], auth[256], ct[128];

    memset(out, 0, sizeof(*out));
    snprintf(url, sizeof(url), "%s%s", env.daemon.url, path);
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (ctype) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
        h = curl_slist_append(h, ct);
    }
    h = curl_slist_append(h, "Expect:");
    if (header)
        h = curl_slist_append(h, header);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "Mozilla/5.0 (X11; Linux x86_64) test");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 60L);
    if (curl_easy_perform(e) != CURLE_OK)
        fail_msg("%s %s: no response", method, path);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    out->json = out->body ? json_loads(out->body, 0, NULL) : NULL;
}

static void hook(const char *body, const char *sig, const char *token, resp_t *out)
{
    req("POST", "/v1/webhooks/event", token, sig, "application/json", body, out);
}

static void signed_hook(const char *body, resp_t *out)
{
    char sig[256];

    sign_webhook(WSECRET, time(NULL), body, sig, sizeof(sig));
    hook(body, sig, WEBHOOK, out);
}

static long long num(const resp_t *r, const char *field)
{
    json_t *v = json_object_get(r->json, field);

    if (!json_is_integer(v))
        fail_msg("no %s in %ld %s", field, r->status, r->body ? r->body : "");
    return (long long)json_integer_value(v);
}

static void expect(const resp_t *r, long status)
{
    if (r->status != status)
        fail_msg("wanted %ld, got %ld %s", status, r->status, r->body ? r->body : "");
}

/* ---- plans and leads -------------------------------------------------------------------------- */

/* Timeline entries of id whose text contains needle. */
static int timeline_count(const char *id, const char *needle)
{
    json_t *l = lead_get(id), *e;
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
} tl_want_t;

static int timeline_has(void *arg)
{
    tl_want_t *w = arg;

    return timeline_count(w->id, w->needle) > 0;
}

static void wait_timeline(const char *id, const char *needle)
{
    tl_want_t w = {id, needle};

    if (nt_test_wait_until(timeline_has, &w, 20000) != 0) {
        json_t *l = lead_get(id);
        char *s = l ? json_dumps(l, 0) : NULL;

        fail_msg("%s: no timeline entry with '%s': %s", id, needle, s ? s : "no lead");
    }
}

/* Everything a request could have written: leads, markers, index entries, the last id added
 * to each events stream. */
static char *fingerprint(void)
{
    char *s = NULL, key[NT_KEY_MAX];
    long long idx = 0, marks = 0, leads = 0;
    size_t cap = 64 * 48 + 128, len = 0;
    char *ids = calloc(1, cap);

    assert_non_null(ids);
    for (unsigned p = 0; p < API_PARTITIONS; p++) {
        redisReply *x;

        idx += redis_int("HLEN %s", nt_key_part(key, p, "idx:email"));
        x = redisCommand(env.rc, "XINFO STREAM %s", nt_key_part(key, p, "events"));
        assert_non_null(x);
        for (size_t i = 0; x->type == REDIS_REPLY_ARRAY && i + 1 < x->elements; i += 2)
            if (strcmp(x->element[i]->str, "last-generated-id") == 0)
                len += (size_t)snprintf(ids + len, cap - len, "%s,", x->element[i + 1]->str);
        freeReplyObject(x);
    }
    {
        redisReply *x = redisCommand(env.rc, "KEYS nt:*:ev:*");

        marks = (long long)x->elements;
        freeReplyObject(x);
        x = redisCommand(env.rc, "KEYS nt:*:lead:*");
        leads = (long long)x->elements;
        freeReplyObject(x);
    }
    assert_true(asprintf(&s, "%lld|%lld|%lld|%s", leads, marks, idx, ids) > 0);
    free(ids);
    return s;
}

/* Run nurturectl with args (a shell fragment); its stdout and stderr together, malloc'd. */
static char *ctl(const char *args, int *status)
{
    char *cmd = NULL, *out = NULL;
    size_t len = 0, cap = 0;
    char buf[4096];
    FILE *p;
    size_t n;

    assert_true(asprintf(&cmd, "%s/tools/nurturectl --url %s %s 2>&1", NT_BINARY_DIR,
                         env.daemon.url, args) > 0);
    p = popen(cmd, "r");
    free(cmd);
    assert_non_null(p);
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        memcpy(out + len, buf, n);
        len += n;
        out[len] = '\0';
    }
    *status = pclose(p);
    return out ? out : strdup("");
}

/* ---- the tests ------------------------------------------------------------------------------ */

static void test_event_badge_csv_import_reports_bad_lines_imports_the_rest(void **state)
{
    char path[] = "/tmp/nt-badges-XXXXXX", *args = NULL, *out;
    int fd, st;
    json_t *l;
    static const char csv[] =
        "Email,First_Name,Last_Name,Company,Title,Booth\n"       /* 1 (booth: ignored) */
        "KNOWN.ONE@Example.COM,Known,One,Acme,CTO,A1\n"          /* 2 the waiting lead */
        "not-an-address,Bad,Email,Acme,CEO,A1\n"                 /* 3 */
        "new.person@example.org,New,Person,Globex,VP Sales,B2\n" /* 4 */
        "short@example.org,Too,Few\n"                            /* 5 */
        "\"broken@example.org,\"Un,terminated\n"                 /* 6: unterminated quote */
        "x";
    size_t i;

    (void)state;
    publish_textpb(followup_plan, 1);
    create_lead("{\"id\":\"ev-known-1\",\"attributes\":{\"email\":\"known.one@example.com\"}}");
    enrol_lead("ev-known-1", "ev_follow");
    wait_lead_run("ev-known-1", "ev_follow", "at_show", "active");

    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, csv, strlen(csv)), (ssize_t)strlen(csv));
    close(fd);
    assert_true(asprintf(&args, "--webhook-token %s --webhook-secret %s events import "
                                "websummit-2026 %s --followup ev_follow",
                         WEBHOOK, WSECRET, path) > 0);
    out = ctl(args, &st);
    free(args);
    unlink(path);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("nurturectl events import failed: %s", out);
    /* each malformed row by its line number; the good ones imported */
    for (i = 0; i < 2; i++) {
        static const char *const needles[] = {"line 3:", "line 5:"};

        if (!strstr(out, needles[i]))
            fail_msg("wanted '%s' in: %s", needles[i], out);
    }
    if (!strstr(out, "line 6"))
        fail_msg("wanted the unterminated quote of line 6 reported in: %s", out);
    if (!strstr(out, "2 checked in") || !strstr(out, "1 new leads (1 enrolled)"))
        fail_msg("wanted 2 checked in, 1 new lead enrolled: %s", out);
    free(out);

    /* the known lead waiting for the check-in moved on */
    wait_lead_run("ev-known-1", "ev_follow", "came", "done");
    /* the unknown one is a new lead (inquiry) in the follow-up plan */
    l = lead_get("new.person@example.org");
    assert_non_null(l);
    assert_string_equal(json_string_value(json_object_get(l, "stage")), "inquiry");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(l, "attributes"), "company")),
        "Globex");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(l, "attributes"), "source")), "event");
    json_decref(l);
    wait_lead_run("new.person@example.org", "ev_follow", NULL, NULL);
    wait_timeline("ev-known-1", "event.checked_in");
}

static void test_event_webhook_unknown_person_enrolled_and_idempotent(void **state)
{
    const char *body = "{\"event\":\"roadshow-berlin\",\"followup\":\"ev_follow\",\"records\":["
                       "{\"email\":\"Walk.In@Example.net\",\"first_name\":\"Walk\","
                       "\"last_name\":\"In\",\"company\":\"Initech\",\"title\":\"Engineer\","
                       "\"checked_in_at\":\"2026-11-05T10:30:00Z\"},"
                       "{\"event\":\"roadshow-berlin\",\"email\":\"walk.in@example.net\"}]}";
    char *before, *after;
    resp_t r;
    json_t *l;

    (void)state;
    publish_textpb(followup_plan, 1);
    signed_hook(body, &r);
    expect(&r, 200);
    assert_int_equal(num(&r, "applied"), 1);
    assert_int_equal(num(&r, "already"), 1); /* the same person twice in one request */
    assert_int_equal(num(&r, "created"), 1);
    assert_int_equal(num(&r, "enrolled"), 1);
    resp_fini(&r);
    l = lead_get("walk.in@example.net");
    assert_non_null(l);
    assert_string_equal(json_string_value(json_object_get(l, "stage")), "inquiry");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(l, "attributes"), "title")),
        "Engineer");
    json_decref(l);
    wait_lead_run("walk.in@example.net", "ev_follow", NULL, NULL);

    /* the same check-in again, newly signed: already applied, nothing written */
    sleep(1);
    before = fingerprint();
    signed_hook(body, &r);
    expect(&r, 200);
    assert_int_equal(num(&r, "applied"), 0);
    assert_int_equal(num(&r, "already"), 2);
    assert_int_equal(num(&r, "created"), 0);
    resp_fini(&r);
    after = fingerprint();
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static void test_event_webhook_unsigned_replayed_malformed_get_4xx_and_write_nothing(void **state)
{
    const char *body =
        "{\"event\":\"dinner-x\",\"records\":[{\"email\":\"fresh-x@example.org\"}]}";
    char sig[256], *before, *after;
    resp_t r;

    (void)state;
    before = fingerprint();
    hook(body, NULL, WEBHOOK, &r); /* unsigned */
    expect(&r, 401);
    resp_fini(&r);
    sign_webhook("another-secret-0123456789", time(NULL), body, sig, sizeof(sig));
    hook(body, sig, WEBHOOK, &r);
    expect(&r, 401);
    resp_fini(&r);
    sign_webhook(WSECRET, time(NULL) - 900, body, sig, sizeof(sig)); /* too old */
    hook(body, sig, WEBHOOK, &r);
    expect(&r, 401);
    resp_fini(&r);
    sign_webhook(WSECRET, time(NULL), body, sig, sizeof(sig)); /* a rep may not post it */
    hook(body, sig, REP, &r);
    expect(&r, 403);
    resp_fini(&r);
    {
        static const char *const bad[] = {
            "{\"event\":\"dinner-x\",\"records\":[",
            "{\"event\":\"Dinner X\",\"records\":[]}",
            "{\"records\":[{\"email\":\"x@y.z\"}]}",
            "{\"event\":\"dinner-x\",\"records\":[{\"email\":\"not-an-address\"}]}",
            "{\"event\":\"dinner-x\",\"records\":[{\"first_name\":\"No\"}]}",
            "{\"event\":\"dinner-x\",\"records\":[{\"email\":\"x@y.z\",\"colour\":\"red\"}]}",
            "{\"event\":\"dinner-x\",\"records\":[{\"email\":\"x@y.z\",\"event\":\"other\"}]}",
            "{\"event\":\"dinner-x\",\"records\":[{\"email\":\"x@y.z\",\"title\":\"a\\nb\"}]}",
            "{\"event\":\"dinner-x\",\"followup\":\"no_such_plan\",\"records\":[{\"email\":"
            "\"x@y.z\"}]}",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            signed_hook(bad[i], &r);
            if (r.status != 400 && r.status != 404)
                fail_msg("bad[%zu]: %ld %s", i, r.status, r.body);
            resp_fini(&r);
        }
    }
    after = fingerprint();
    assert_string_equal(before, after);
    free(after);

    /* signed once: applied; the same signature again: 409 and nothing more */
    sign_webhook(WSECRET, time(NULL), body, sig, sizeof(sig));
    hook(body, sig, WEBHOOK, &r);
    expect(&r, 200);
    assert_int_equal(num(&r, "applied"), 1);
    assert_int_equal(num(&r, "created"), 1);
    resp_fini(&r);
    free(before);
    before = fingerprint();
    hook(body, sig, WEBHOOK, &r);
    expect(&r, 409);
    resp_fini(&r);
    after = fingerprint();
    assert_string_equal(before, after);
    free(before);
    free(after);
}

/* The invitation signs an RSVP link (on the timeline, with event.invited); a tampered link
 * gets 4xx and writes nothing; "yes" posts event.rsvp, which moves the waiting run. */
static void test_event_invitation_rsvp_link_tampered_4xx_yes_posts_rsvp(void **state)
{
    json_t *l;
    const char *url = NULL;
    char *tok, *path = NULL, *bad = NULL, *before, *after;
    resp_t r;

    (void)state;
    publish_textpb(invite_plan, 1);
    create_lead("{\"id\":\"ev-guest\",\"attributes\":{\"email\":\"guest@example.org\"}}");
    enrol_lead("ev-guest", "ev_invite");
    wait_lead_run("ev-guest", "ev_invite", "answer", "active");
    wait_timeline("ev-guest", "event.invited");
    /* the link, from the channel's bookkeeping line (the timeline names the event only) */
    {
        char *file = NULL, *text = NULL;
        size_t cap = 0;
        FILE *f;

        assert_true(asprintf(&file, "%s/event-channel.jsonl", env.daemon.data_dir) > 0);
        f = fopen(file, "r");
        free(file);
        assert_non_null(f);
        assert_true(getdelim(&text, &cap, '\0', f) > 0);
        fclose(f);
        l = json_loads(text, JSON_DISABLE_EOF_CHECK, NULL);
        free(text);
        assert_non_null(l);
        assert_string_equal(json_string_value(json_object_get(l, "lead")), "ev-guest");
        assert_string_equal(json_string_value(json_object_get(l, "event")), "dinner-2026");
        url = json_string_value(json_object_get(l, "rsvp_url"));
        assert_non_null(url);
        {
            /* the same link on the lead, for the plan's next email */
            json_t *lead = lead_get("ev-guest");
            json_t *attrs = json_object_get(lead, "attributes");

            assert_string_equal(json_string_value(json_object_get(attrs, "event_rsvp_link")),
                                url);
            assert_string_equal(json_string_value(json_object_get(attrs, "event_id")),
                                "dinner-2026");
            json_decref(lead);
        }
        url = strstr(url, "/t/r/");
        if (!url)
            fail_msg("no RSVP link in the bookkeeping line");
    }
    tok = strdup(url + 5);
    json_decref(l);
    {
        nt_track_token_t t;

        assert_int_equal(nt_track_verify(TSECRET, strlen(TSECRET), tok, time(NULL), &t),
                         NT_TRACK_OK);
        assert_int_equal(t.kind, NT_TRACK_RSVP);
        assert_string_equal(t.event, "dinner-2026");
        assert_string_equal(t.lead, "ev-guest");
    }

    /* the page */
    assert_true(asprintf(&path, "/t/r/%s", tok) > 0);
    req("GET", path, NULL, NULL, NULL, NULL, &r);
    expect(&r, 200);
    assert_non_null(strstr(r.body, "answer"));
    resp_fini(&r);

    /* tampered: one character of the payload changed, or signed with another key */
    before = fingerprint();
    bad = strdup(path);
    bad[7] = bad[7] == 'A' ? 'B' : 'A';
    req("POST", bad, NULL, NULL, "application/x-www-form-urlencoded", "answer=yes", &r);
    if (r.status < 400 || r.status > 499)
        fail_msg("tampered: %ld %s", r.status, r.body);
    resp_fini(&r);
    req("GET", bad, NULL, NULL, NULL, NULL, &r);
    if (r.status < 400 || r.status > 499)
        fail_msg("tampered page: %ld %s", r.status, r.body);
    resp_fini(&r);
    free(bad);
    {
        char *other = nt_track_sign("not-the-tracking-secret-012345", 30, NT_TRACK_RSVP,
                                    "ev-guest:ev_invite:invite:1", time(NULL), 0, "dinner-2026");

        assert_true(asprintf(&bad, "/t/r/%s", other) > 0);
        free(other);
        req("POST", bad, NULL, NULL, "application/x-www-form-urlencoded", "answer=yes", &r);
        expect(&r, 403);
        resp_fini(&r);
        free(bad);
    }
    {
        /* a click token is no RSVP token */
        char *click = nt_track_sign(TSECRET, strlen(TSECRET), NT_TRACK_CLICK,
                                    "ev-guest:ev_invite:invite:1", time(NULL), 0,
                                    "https://example.org/");

        assert_true(asprintf(&bad, "/t/r/%s", click) > 0);
        free(click);
        req("POST", bad, NULL, NULL, "application/x-www-form-urlencoded", "answer=yes", &r);
        expect(&r, 400);
        resp_fini(&r);
        free(bad);
    }
    /* no answer */
    req("POST", path, NULL, NULL, "application/x-www-form-urlencoded", "answer=maybe", &r);
    expect(&r, 400);
    resp_fini(&r);
    after = fingerprint();
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* yes */
    req("POST", path, NULL, NULL, "application/x-www-form-urlencoded", "answer=yes", &r);
    expect(&r, 200);
    resp_fini(&r);
    wait_lead_run("ev-guest", "ev_invite", "answered", "done");
    wait_timeline("ev-guest", "event.rsvp");
    free(path);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_badge_csv_import_reports_bad_lines_imports_the_rest),
        cmocka_unit_test(test_event_webhook_unknown_person_enrolled_and_idempotent),
        cmocka_unit_test(test_event_webhook_unsigned_replayed_malformed_get_4xx_and_write_nothing),
        cmocka_unit_test(test_event_invitation_rsvp_link_tampered_4xx_yes_posts_rsvp),
    };

    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests(tests, setup, api_teardown);
}
