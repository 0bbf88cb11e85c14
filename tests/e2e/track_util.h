/* Helpers of the tracking end-to-end tests (test_tracking.c: messages in the daemon's maildir;
 * test_tracking_smtp.c and test_event_rsvp_email.c: messages received by aiosmtpd): the plans
 * and template they share, HTTP with user agents and headers, leads and runs through the API,
 * the messages of a lead read from a directory of .eml files and taken apart (MIME,
 * quoted-printable, base64), and a fingerprint of what Redis holds for a lead. Include after
 * api_util.h; set track_msg_dir to the directory the messages land in. The functions are
 * API_UNUSED: each test uses what it needs. */
#ifndef NT_TEST_TRACK_UTIL_H
#define NT_TEST_TRACK_UTIL_H

#include <ctype.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "api_util.h"

#define SECRET "tracking-secret-for-the-tests-0123456789"
#define WSECRET "webhook-secret-for-the-tests-0123456789"
#define BROWSER "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
#define MIN_DELAY_S 2

/* Where the messages are: the daemon's maildir/new, or the SMTP server's directory. */
static char track_msg_dir[4096];

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

/* A new template directory holding hello.md (template_md). Malloc'd; caller removes and frees. */
API_UNUSED char *track_templates(void)
{
    char *dir = nt_test_tmpdir("nt-track-tpl"), path[512];
    FILE *f;

    if (!dir)
        return NULL;
    snprintf(path, sizeof(path), "%s/hello.md", dir);
    f = fopen(path, "w");
    if (!f || fputs(template_md, f) < 0 || fclose(f) != 0) {
        free(dir);
        return NULL;
    }
    return dir;
}

/* ---- HTTP with headers -------------------------------------------------------------------- */

typedef struct resp {
    long status;
    char body[8192];
    size_t len;
    char location[4096];
    char ctype[128];
} resp_t;

API_UNUSED size_t on_body(char *p, size_t size, size_t n, void *arg)
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
API_UNUSED void req(const char *method, const char *path, const char *ua, const char *const *hdrs,
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

API_UNUSED void lead_in(const char *id, const char *plan)
{
    char body[512];

    snprintf(body, sizeof(body),
             "{\"id\":\"%s\",\"attributes\":{\"first_name\":\"Ada\",\"email\":\"%s@example.com\"}}",
             id, id);
    create_lead(body);
    enrol_lead(id, plan);
}

/* Timeline entries of id whose text contains needle. */
API_UNUSED int timeline_count(const char *id, const char *needle)
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
    int n;
} tl_want_t;

API_UNUSED int timeline_has(void *arg)
{
    tl_want_t *w = arg;

    return timeline_count(w->id, w->needle) >= w->n;
}

API_UNUSED void wait_timeline(const char *id, const char *needle, int n)
{
    tl_want_t w = {id, needle, n};

    if (nt_test_wait_until(timeline_has, &w, 20000) != 0)
        fail_msg("%s: wanted %d timeline entries with '%s', have %d", id, n, needle,
                 timeline_count(id, needle));
}

/* ---- messages ------------------------------------------------------------------------------ */

/* The value of header `name` in the header block starting at msg (up to the first empty line),
 * unfolded; malloc'd, or NULL when absent. */
API_UNUSED char *header_value(const char *msg, const char *name)
{
    size_t nl = strlen(name);
    const char *end = strstr(msg, "\r\n\r\n");

    for (const char *p = msg; p && *p && (!end || p < end);) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            char *out = calloc(1, strlen(v) + 1), *o = out;

            while (*v == ' ' || *v == '\t')
                v++;
            for (; *v; v++) {
                if (v[0] == '\r' && v[1] == '\n') {
                    if (v[2] != ' ' && v[2] != '\t')
                        break;
                    v++; /* folded: the next line's blank stays */
                    continue;
                }
                *o++ = *v;
            }
            *o = '\0';
            return out;
        }
        p = strstr(p, "\r\n");
        if (p)
            p += 2;
    }
    return NULL;
}

/* Base64 decoded in place (line breaks skipped). */
static void b64_decode(char *s)
{
    char *o = s;
    size_t n;
    unsigned char *out;
    int len;

    for (char *p = s; *p; p++)
        if (!isspace((unsigned char)*p))
            *o++ = *p;
    *o = '\0';
    n = strlen(s);
    out = calloc(1, n + 4);
    len = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    assert_true(len >= 0);
    while (len > 0 && n > 0 && s[n - 1] == '=') { /* EVP_DecodeBlock counts the padding */
        len--;
        n--;
    }
    memcpy(s, out, (size_t)len);
    s[len] = '\0';
    free(out);
}

/* The body of the first part of a multipart message whose Content-Type starts with ctype,
 * decoded as its Content-Transfer-Encoding says (quoted-printable, base64, or as it is).
 * Malloc'd; fails the test when there is no such part. */
API_UNUSED char *mime_part(const char *msg, const char *ctype)
{
    char *ct = header_value(msg, "Content-Type"), *b, delim[256];
    const char *p;

    if (!ct || !(b = strstr(ct, "boundary=")))
        fail_msg("not a multipart message:\n%s", msg);
    b += 9;
    snprintf(delim, sizeof(delim), "\r\n--%.*s", (int)strcspn(b + (*b == '"'), "\";"),
             b + (*b == '"'));
    free(ct);
    for (p = strstr(msg, delim); p; p = strstr(p, delim)) {
        const char *head = p + strlen(delim), *body, *next;
        char *pct, *cte, *out;

        if (strncmp(head, "--", 2) == 0)
            break; /* the closing delimiter */
        head += 2; /* CRLF */
        body = strstr(head, "\r\n\r\n");
        next = body ? strstr(body, delim) : NULL;
        if (!body || !next)
            break;
        pct = header_value(head, "Content-Type");
        if (!pct || strncasecmp(pct, ctype, strlen(ctype)) != 0) {
            free(pct);
            p = next;
            continue;
        }
        free(pct);
        body += 4;
        out = strndup(body, (size_t)(next - body));
        cte = header_value(head, "Content-Transfer-Encoding");
        if (cte && strcasecmp(cte, "quoted-printable") == 0)
            nt_test_qp_decode(out);
        else if (cte && strcasecmp(cte, "base64") == 0)
            b64_decode(out);
        free(cte);
        return out;
    }
    fail_msg("no %s part in:\n%s", ctype, msg);
    return NULL;
}

/* The messages for <id>@example.com in track_msg_dir, raw; *n of them. Caller frees each and
 * the array. */
API_UNUSED char **messages_of(const char *id, int *n)
{
    char path[8192], addr[256];
    const char *dir = track_msg_dir;
    DIR *d;
    struct dirent *de;
    char **v = calloc(64, sizeof(*v));

    *n = 0;
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
        v[(*n)++] = buf;
    }
    closedir(d);
    return v;
}

API_UNUSED void messages_free(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

typedef struct count_want {
    const char *id;
    int n;
} count_want_t;

API_UNUSED int has_messages(void *arg)
{
    count_want_t *w = arg;
    int n = 0;
    char **v = messages_of(w->id, &n);

    messages_free(v, n);
    return n >= w->n;
}

/* The path of the k-th link "/t/<kind>/<token>" in the HTML part of the (first) message for
 * id, decoded as the message encodes it. */
API_UNUSED void link_of(const char *id, char kind, int k, char *out, size_t cap)
{
    count_want_t w = {id, 1};
    char **v, *html;
    int n;

    assert_int_equal(nt_test_wait_until(has_messages, &w, 20000), 0);
    v = messages_of(id, &n);
    html = mime_part(v[0], "text/html");
    if (nt_test_nth_link(html, kind, k, out, cap) != 0)
        fail_msg("message for %s has no link %d of kind %c:\n%s", id, k, kind, html);
    free(html);
    messages_free(v, n);
}

API_UNUSED int count_messages(const char *id)
{
    int n = 0;
    char **v = messages_of(id, &n);

    messages_free(v, n);
    return n;
}

/* ---- what Redis holds --------------------------------------------------------------------- */

/* A fingerprint of everything a request could have written: key count, the lead hash, its
 * timeline and its partition's events stream length. Caller frees. */
API_UNUSED char *fingerprint(const char *id)
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

/* ---- the provider webhook ---- */

API_UNUSED void hook(const char *body, const char *sig_hdr, resp_t *r)
{
    char auth[256];
    const char *hdrs[3] = {auth, sig_hdr, NULL};

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", WEBHOOK);
    req("POST", "/v1/webhooks/email", NULL, hdrs, "application/json", body, strlen(body), r);
}

#endif
