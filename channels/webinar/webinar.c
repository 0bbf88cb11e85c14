/* The `webinar` channel: a send registers the lead with the webinar platform, stores the
 * lead's personal join link on the lead (attributes webinar_join_link and webinar_id, through
 * the host's update_lead) and only then reports "registered", so that the run's next step (an
 * email whose template writes {{webinar_join_link|...}}) renders it. It also posts a
 * `webinar.join_link` event {webinar, url} for the lead's timeline. A join link that is not a
 * plain http(s) URL of printable ASCII of at most JOIN_URL_MAX bytes is never stored: the lead
 * is registered all the same and webinar_join_link is written empty (templates fall back to
 * their default). A failed write is transient (NT_EUNAVAIL): the host retries the whole send,
 * and the platform sees the same Idempotency-Key again. With a host older than update_lead the
 * link is only posted as the event.
 *
 * Params: webinar (the platform's webinar id, required), register (yes, the default, or no:
 * nothing is registered or written and the outcome is "sent"), invite (email, the default: a
 * later email step of the plan sends the invitation with its template; platform: the platform
 * sends its own invitation; recorded in the outcome's detail and given to the body template as
 * {{invite}}).
 *
 * Config (channel.webinar.<key>):
 *   url           the registration endpoint, http(s)://...; {{webinar}} is replaced by the id.
 *                 Unset: registration is local (the demo): a fake, deterministic join link
 *                 https://webinars.example/<webinar>/<hash of webinar and lead>
 *   auth          one header line, e.g. "Authorization: Bearer <key>" (default:
 *                 $NT_WEBINAR_AUTH; none when both are unset)
 *   body          the JSON body template (default WEBINAR_DEFAULT_BODY); placeholders go inside
 *                 JSON strings and are replaced JSON-escaped: email, first_name, last_name,
 *                 company (the lead's attributes), webinar, invite, idempotency_key
 *   join_field    the answer's field holding the join link, dots for nested objects
 *                 ("data.join_url"); default join_url
 *   timeout_ms, connect_timeout_ms, max_inflight   (30000, 10000, 8)
 *
 * Each POST carries an Idempotency-Key header (the message id, the same on every attempt).
 * Answers: 2xx is "registered" (a 2xx answer without a usable join link too, said in the
 * detail; nothing is posted then). 408, 429, 5xx, 401 (our credentials: fixed by ops, as the
 * email channel does), other non-2xx non-4xx statuses and transport errors are NT_EUNAVAIL,
 * for the host to retry with backoff (then "failed"; its circuit breaker holds messages during
 * an outage). Other 4xx are NT_EPERMFAIL with the platform's answer (one line, cut) as the
 * detail. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "nurture/channel.h"
#include "nurture/track.h"

#define EXPORT __attribute__((visibility("default")))

#define WEBINAR_ID_MAX 64
#define ANSWER_MAX (64 * 1024) /* of the platform's answer: enough for any join link */
#define DETAIL_ANSWER_MAX 300  /* what a failure's detail quotes of it */
/* The email channel substitutes at most 1024 bytes of a value (NT_EMAIL_VALUE_MAX): a longer
 * link would arrive cut. */
#define JOIN_URL_MAX 1024
#define ATTR_LINK "webinar_join_link"
#define ATTR_ID "webinar_id"
#define LOCAL_BASE "https://webinars.example/"

#define WEBINAR_DEFAULT_BODY                                                                       \
    "{\"webinar\":\"{{webinar}}\",\"email\":\"{{email}}\",\"first_name\":\"{{first_name}}\","      \
    "\"last_name\":\"{{last_name}}\",\"company\":\"{{company}}\",\"invite\":\"{{invite}}\","       \
    "\"idempotency_key\":\"{{idempotency_key}}\"}"

static const char *const outcomes[] = {"registered", NULL};

static const nt_channel_param_t params[] = {
    {"webinar", 1, "the webinar's id on the platform (A-Z a-z 0-9 . _ -, up to 64)"},
    {"register", 0, "yes (default): register the lead with the platform; no: do nothing (sent)"},
    {"invite", 0,
     "email (default): a later email step sends the invitation; platform: the "
     "platform sends it"},
    {NULL, 0, NULL},
};

/* The body placeholders, in the order of the values array of dispatch. */
enum { PH_EMAIL, PH_FIRST_NAME, PH_LAST_NAME, PH_COMPANY, PH_WEBINAR, PH_INVITE, PH_KEY, PH_N };

static const char *const ph_names[PH_N] = {
    "email", "first_name", "last_name", "company", "webinar", "invite", "idempotency_key",
};

/* The body template as literal pieces, each followed by a placeholder (or none, -1). */
typedef struct seg {
    char *lit;
    size_t len;
    int ph;
} seg_t;

typedef struct wb wb_t;

/* One registration on its way: queued, then on the multi (url set), then writing the link to
 * the lead. In one of the lists of wb_t at a time. */
typedef struct job job_t;
struct job {
    wb_t *w;
    nt_channel_done_fn *done;
    void *done_arg;
    char *lead; /* the lead id */
    char *webinar;
    char *msgid;
    const char *invite; /* "email" or "platform" (static) */
    char *url;          /* the endpoint for this webinar; NULL: local registration */
    char *body;
    size_t len;
    struct curl_slist *hdr; /* kept for the whole transfer */
    char *answer;           /* the start of the platform's answer, NUL-terminated */
    size_t answer_len;
    CURL *easy; /* NULL while queued */
    char errbuf[CURL_ERROR_SIZE];
    char *link;   /* registered: the usable join link, or NULL */
    char *detail; /* registered: the outcome's detail */
    job_t *prev, *next;
};

struct wb {
    const nt_channel_host_t *host;
    char *url;        /* the endpoint template; NULL: local registration */
    char *auth;       /* header line, or NULL */
    char *join_field; /* dotted path in the answer */
    seg_t *segs;
    size_t nsegs;
    long timeout_ms, connect_timeout_ms;
    int max_inflight;
    int ninflight;
    job_t *inflight; /* transfers on the multi */
    job_t *qhead, *qtail;
    job_t *writing; /* registered, the link being written to the lead (host update_lead) */
    unsigned long long registered, failed;
};

static const char *param(const nt_kv_t *kv, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (kv[i].key != NULL && strcmp(kv[i].key, name) == 0)
            return kv[i].value;
    return NULL;
}

static const char *cfg(const nt_channel_host_t *host, const char *key, const char *def)
{
    const char *v = host->config != NULL ? host->config("webinar", key, def) : def;
    return v != NULL && v[0] != '\0' ? v : def;
}

static long cfg_long(const nt_channel_host_t *host, const char *key, long def, long lo, long hi)
{
    const char *v = cfg(host, key, NULL);
    if (v == NULL)
        return def;
    char *end;
    long n = strtol(v, &end, 10);
    return *end == '\0' && n >= lo && n <= hi ? n : -1;
}

static int webinar_id_ok(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        if (n >= WEBINAR_ID_MAX || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                     (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return n > 0;
}

/* ---- a growable string; an allocation failure sets oom and stops further writes ---- */

typedef struct buf {
    char *p;
    size_t len, cap;
    int oom;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap != 0 ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static char *buf_take(buf_t *b)
{
    if (b->oom || b->p == NULL) {
        free(b->p);
        return b->oom ? NULL : strdup("");
    }
    return b->p;
}

/* ---- JSON ---- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0], cp;
    size_t k;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        k = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        k = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (k > n)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k;
}

/* s as the inside of a JSON string: quotes, backslashes and control characters escaped, valid
 * UTF-8 as is, invalid bytes as U+FFFD. */
static void json_escape(buf_t *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    size_t n = strlen((const char *)p);
    while (n > 0) {
        size_t run = 0, k;
        while (run < n && p[run] >= 0x20 && p[run] != '"' && p[run] != '\\' && p[run] != 0x7f &&
               (k = utf8_len(p + run, n - run)) > 0)
            run += k;
        buf_add(b, (const char *)p, run);
        p += run;
        n -= run;
        if (n == 0)
            break;
        char esc[8];
        switch (*p) {
        case '"':
            buf_add(b, "\\\"", 2);
            break;
        case '\\':
            buf_add(b, "\\\\", 2);
            break;
        case '\n':
            buf_add(b, "\\n", 2);
            break;
        case '\r':
            buf_add(b, "\\r", 2);
            break;
        case '\t':
            buf_add(b, "\\t", 2);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                snprintf(esc, sizeof(esc), "\\u%04x", *p);
                buf_add(b, esc, 6);
            } else {
                buf_add(b, "\\ufffd", 6);
            }
            break;
        }
        p++;
        n--;
    }
}

static void segs_free(seg_t *segs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(segs[i].lit);
    free(segs);
}

/* Split the body template into segments. Returns 0, or -1 with *errmsg. */
static int tpl_parse(wb_t *w, const char *tpl, char **errmsg)
{
    size_t cap = 8;
    w->segs = calloc(cap, sizeof(*w->segs));
    if (w->segs == NULL)
        goto oom;
    for (const char *p = tpl;;) {
        const char *open = strstr(p, "{{");
        const char *close = open != NULL ? strstr(open + 2, "}}") : NULL;
        int ph = -1;
        if (open != NULL && close == NULL) {
            *errmsg = nt_msgf("webinar: channel.webinar.body: '{{' without '}}' at byte %zu",
                              (size_t)(open - tpl));
            return -1;
        }
        if (open != NULL) {
            size_t nl = (size_t)(close - open - 2);
            for (int i = 0; i < PH_N; i++)
                if (strlen(ph_names[i]) == nl && strncmp(open + 2, ph_names[i], nl) == 0)
                    ph = i;
            if (ph < 0) {
                *errmsg = nt_msgf("webinar: channel.webinar.body: unknown placeholder '{{%.*s}}'",
                                  (int)(nl < 40 ? nl : 40), open + 2);
                return -1;
            }
        }
        if (w->nsegs == cap) {
            seg_t *s = realloc(w->segs, 2 * cap * sizeof(*s));
            if (s == NULL)
                goto oom;
            w->segs = s;
            cap *= 2;
        }
        seg_t *s = &w->segs[w->nsegs];
        s->len = open != NULL ? (size_t)(open - p) : strlen(p);
        s->lit = strndup(p, s->len);
        s->ph = ph;
        if (s->lit == NULL)
            goto oom;
        w->nsegs++;
        if (open == NULL)
            return 0;
        p = close + 2;
    }
oom:
    *errmsg = nt_msgf("webinar: out of memory");
    return -1;
}

/* The body from vals[PH_*] (NULL: empty). Malloc'd, or NULL. */
static char *render(const wb_t *w, const char *const *vals, size_t *len)
{
    buf_t b = {0};
    for (size_t i = 0; i < w->nsegs; i++) {
        buf_add(&b, w->segs[i].lit, w->segs[i].len);
        if (w->segs[i].ph >= 0)
            json_escape(&b, vals[w->segs[i].ph]);
    }
    *len = b.len;
    return buf_take(&b);
}

/* The endpoint for webinar id (already checked: no escaping needed). Malloc'd, or NULL. */
static char *endpoint(const wb_t *w, const char *webinar)
{
    buf_t b = {0};
    const char *p = w->url, *q;
    while ((q = strstr(p, "{{webinar}}")) != NULL) {
        buf_add(&b, p, (size_t)(q - p));
        buf_add(&b, webinar, strlen(webinar));
        p = q + strlen("{{webinar}}");
    }
    buf_add(&b, p, strlen(p));
    return buf_take(&b);
}

/* A join link we store and pass on: an http(s) URL with a host, printable ASCII without
 * spaces, quotes, angle brackets or backslashes (nt_track_url_ok: what a click link may point
 * to), at most JOIN_URL_MAX bytes. Anything else (a line break, javascript:, a page of text)
 * would end up in an email. */
static int join_url_ok(const char *s)
{
    const char *host;
    if (!nt_track_url_ok(s) || strlen(s) > JOIN_URL_MAX)
        return 0;
    host = strstr(s, "://") + 3;
    return *host != '\0' && *host != '/' && *host != '?' && *host != '#';
}

/* The string at the dotted path in a JSON answer, or NULL. */
static const char *json_path(json_t *root, const char *path)
{
    char buf[256];
    json_t *v = root;
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *save = NULL, *t = strtok_r(buf, ".", &save); t != NULL && v != NULL;
         t = strtok_r(NULL, ".", &save))
        v = json_object_get(v, t);
    return json_string_value(v);
}

/* ---- validate, init ---- */

static nt_rc_t wb_validate(const nt_kv_t *kv, size_t n, char **errmsg)
{
    const char *v = param(kv, n, "webinar");
    if (v != NULL && !webinar_id_ok(v)) {
        *errmsg = nt_msgf("webinar: webinar must be 1 to %d of A-Z a-z 0-9 . _ -", WEBINAR_ID_MAX);
        return NT_EINVAL;
    }
    v = param(kv, n, "register");
    if (v != NULL && strcmp(v, "yes") != 0 && strcmp(v, "no") != 0) {
        *errmsg = nt_msgf("webinar: register must be yes or no");
        return NT_EINVAL;
    }
    v = param(kv, n, "invite");
    if (v != NULL && strcmp(v, "email") != 0 && strcmp(v, "platform") != 0) {
        *errmsg = nt_msgf("webinar: invite must be email (a later email step sends it) or platform "
                          "(the platform sends it)");
        return NT_EINVAL;
    }
    return NT_OK;
}

static void wb_free(wb_t *w);

static nt_rc_t wb_init(const nt_channel_host_t *host, void **state, char **errmsg)
{
    wb_t *w = calloc(1, sizeof(*w));
    nt_rc_t rc = NT_EINVAL;
    if (w == NULL) {
        *errmsg = nt_msgf("webinar: out of memory");
        return NT_ENOMEM;
    }
    w->host = host;
    w->join_field = strdup(cfg(host, "join_field", "join_url"));
    if (w->join_field == NULL)
        goto oom;
    if (strlen(w->join_field) >= 200 || w->join_field[0] == '.' ||
        strstr(w->join_field, "..") != NULL) {
        *errmsg = nt_msgf("webinar: channel.webinar.join_field must be a field name, dots between "
                          "nested names (data.join_url)");
        goto fail;
    }
    const char *url = cfg(host, "url", NULL);
    if (url == NULL) {
        /* No platform: every registration is local (the demo, or a plan tried out). */
        if (host->log != NULL)
            host->log(NT_LOG_INFO, "webinar",
                      "channel.webinar.url is not set: registering locally, with fake join "
                      "links " LOCAL_BASE "<webinar>/<hash> (no webinar platform is called)");
        *state = w;
        return NT_OK;
    }
    if (host->size < offsetof(nt_channel_host_t, curl_add) + sizeof(host->curl_add) ||
        host->curl_add == NULL) {
        *errmsg = nt_msgf("webinar: channel.webinar.url needs a host with curl_add (a newer "
                          "nurtured)");
        rc = NT_EABI;
        goto fail;
    }
    if ((strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0) ||
        strpbrk(url, " \t\r\n") != NULL) {
        *errmsg = nt_msgf("webinar: channel.webinar.url must be an http:// or https:// URL");
        goto fail;
    }
    for (const char *p = strstr(url, "{{"); p != NULL; p = strstr(p + 2, "{{"))
        if (strncmp(p, "{{webinar}}", 11) != 0) {
            *errmsg = nt_msgf("webinar: channel.webinar.url: the only placeholder is {{webinar}}");
            goto fail;
        }
    w->url = strdup(url);
    if (w->url == NULL)
        goto oom;
    const char *auth = cfg(host, "auth", getenv("NT_WEBINAR_AUTH"));
    if (auth != NULL && auth[0] != '\0') {
        const char *colon = strchr(auth, ':');
        int bad = colon == NULL || colon == auth;
        for (const char *p = auth; !bad && p < colon; p++)
            bad = *p <= ' ' || *p >= 0x7f;
        for (const char *p = auth; !bad && *p != '\0'; p++)
            bad = (unsigned char)*p < 0x20 && *p != '\t';
        if (bad) {
            /* never echo the line: it holds a secret */
            *errmsg = nt_msgf("webinar: channel.webinar.auth (or NT_WEBINAR_AUTH) must be one "
                              "header line 'Name: value'");
            goto fail;
        }
        w->auth = strdup(auth);
        if (w->auth == NULL)
            goto oom;
    }
    w->timeout_ms = cfg_long(host, "timeout_ms", 30000, 100, 3600000);
    w->connect_timeout_ms = cfg_long(host, "connect_timeout_ms", 10000, 100, 600000);
    w->max_inflight = (int)cfg_long(host, "max_inflight", 8, 1, 1024);
    if (w->timeout_ms < 0 || w->connect_timeout_ms < 0 || w->max_inflight < 0) {
        *errmsg = nt_msgf("webinar: timeout_ms (100..3600000), connect_timeout_ms (100..600000) "
                          "and max_inflight (1..1024) must be numbers in range");
        goto fail;
    }
    if (tpl_parse(w, cfg(host, "body", WEBINAR_DEFAULT_BODY), errmsg) != 0)
        goto fail;
    /* The template must be JSON for any values: render it with awkward ones and parse. */
    const char *vals[PH_N];
    for (int i = 0; i < PH_N; i++)
        vals[i] = "a \"b\"\n\\ \xc3\xa9 \xff";
    size_t len;
    char *sample = render(w, vals, &len);
    if (sample == NULL)
        goto oom;
    json_error_t jerr;
    json_t *j = json_loadb(sample, len, 0, &jerr);
    free(sample);
    if (j == NULL) {
        *errmsg = nt_msgf("webinar: channel.webinar.body is not JSON (placeholders go inside "
                          "strings): %s at byte %d",
                          jerr.text, jerr.position);
        goto fail;
    }
    json_decref(j);
    if (host->log != NULL)
        host->log(NT_LOG_INFO, "webinar", "registering with %s, at most %d in flight%s", w->url,
                  w->max_inflight, w->auth != NULL ? ", with an auth header" : "");
    *state = w;
    return NT_OK;
oom:
    *errmsg = nt_msgf("webinar: out of memory");
    rc = NT_ENOMEM;
fail:
    wb_free(w);
    return rc;
}

/* ---- the registration ---- */

/* Tell the lead's timeline (and later steps) the join link. */
static void post_link(wb_t *w, const char *lead, const char *webinar, const char *url)
{
    const nt_kv_t attrs[] = {{"webinar", webinar}, {"url", url}};
    nt_rc_t rc = w->host->post_event != NULL
                     ? w->host->post_event(lead, "webinar.join_link", attrs, 2)
                     : NT_EINVAL;
    if (rc != NT_OK && w->host->log != NULL)
        w->host->log(NT_LOG_WARN, "webinar", "lead %s: the join link for %s was not posted (rc %d)",
                     lead, webinar, (int)rc);
}

static const char *invite_words(const char *invite)
{
    return strcmp(invite, "platform") == 0 ? "invitation by the platform" : "invitation by email";
}

static void job_free(job_t *j)
{
    if (j == NULL)
        return;
    free(j->lead);
    free(j->webinar);
    free(j->msgid);
    free(j->url);
    free(j->body);
    free(j->answer);
    free(j->link);
    free(j->detail);
    curl_slist_free_all(j->hdr);
    free(j);
}

/* Complete j, which is in no list: count it, call its done (detail may be j's own), free it. */
static void job_finish(wb_t *w, job_t *j, nt_rc_t rc, const char *outcome, const char *detail)
{
    if (rc == NT_OK)
        w->registered++;
    else if (rc != NT_ECANCELED)
        w->failed++;
    j->done(j->done_arg, rc, outcome, detail);
    job_free(j);
}

static void writing_add(wb_t *w, job_t *j)
{
    j->prev = NULL;
    j->next = w->writing;
    if (w->writing != NULL)
        w->writing->prev = j;
    w->writing = j;
}

static void writing_del(wb_t *w, job_t *j)
{
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        w->writing = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    j->prev = j->next = NULL;
}

/* The host's answer to the write of the join link: report the registration now. */
static void on_written(void *arg, nt_rc_t rc)
{
    job_t *j = arg;
    wb_t *w = j->w;
    char *detail = NULL;

    writing_del(w, j);
    if (rc == NT_OK) {
        if (j->link != NULL)
            post_link(w, j->lead, j->webinar, j->link);
        job_finish(w, j, NT_OK, "registered", j->detail);
        return;
    }
    if (rc == NT_ECANCELED) {
        job_finish(w, j, rc, NULL, "webinar: shutting down");
        return;
    }
    if (rc == NT_ENOTFOUND) {
        detail = nt_msgf("webinar: %s %s: registered, but the lead no longer exists", j->webinar,
                         j->msgid);
        rc = NT_EPERMFAIL;
    } else {
        /* Transient: the host retries the send, the platform sees the same Idempotency-Key. */
        detail = nt_msgf("webinar: %s %s: registered, but the join link was not stored on the "
                         "lead (%s)",
                         j->webinar, j->msgid, rc == NT_ETIMEOUT ? "timeout" : "unavailable");
        rc = rc == NT_ETIMEOUT ? NT_ETIMEOUT : NT_EUNAVAIL;
    }
    job_finish(w, j, rc, NULL, detail != NULL ? detail : "webinar: out of memory");
    free(detail);
}

/* j (in no list) is registered: link is the usable join link or NULL, detail the outcome's
 * detail (both malloc'd, taken; detail NULL: out of memory). Write webinar_id and
 * webinar_join_link (empty without a usable link, so that no older webinar's link lingers) on
 * the lead, then report. Returns 1 when the report comes later, 0 when j is completed. */
static int registered(wb_t *w, job_t *j, char *link, char *detail)
{
    const nt_channel_host_t *h = w->host;

    j->link = link;
    j->detail = detail;
    if (detail == NULL) {
        job_finish(w, j, NT_EUNAVAIL, NULL, "webinar: out of memory");
        return 0;
    }
    if (h->size < offsetof(nt_channel_host_t, update_lead) + sizeof(h->update_lead) ||
        h->update_lead == NULL) {
        if (link != NULL)
            post_link(w, j->lead, j->webinar, link);
        job_finish(w, j, NT_OK, "registered", j->detail);
        return 0;
    }
    const nt_kv_t attrs[] = {{ATTR_ID, j->webinar}, {ATTR_LINK, link != NULL ? link : ""}};
    writing_add(w, j);
    nt_rc_t rc = h->update_lead(j->lead, attrs, 2, on_written, j);
    if (rc == NT_AGAIN)
        return 1; /* j is on_written's */
    writing_del(w, j);
    char *d = nt_msgf("webinar: %s %s: registered, but the join link cannot be stored on the lead "
                      "(%s)",
                      j->webinar, j->msgid, rc == NT_EINVAL ? "refused" : "unavailable");
    job_finish(w, j, rc == NT_EINVAL ? NT_EPERMFAIL : NT_EUNAVAIL, NULL,
               d != NULL ? d : "webinar: out of memory");
    free(d);
    return 0;
}

static void inflight_unlink(wb_t *w, job_t *j)
{
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        w->inflight = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    j->prev = j->next = NULL;
    w->ninflight--;
}

/* Keep the answer up to ANSWER_MAX; take (and drop) the rest. */
static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
    job_t *j = arg;
    size_t n = size * nmemb, room = ANSWER_MAX - j->answer_len, k = n < room ? n : room;
    if (k > 0) {
        if (j->answer == NULL && (j->answer = malloc(ANSWER_MAX + 1)) == NULL)
            return n;
        memcpy(j->answer + j->answer_len, data, k);
        j->answer_len += k;
        j->answer[j->answer_len] = '\0';
    }
    return n;
}

/* The start of the answer as one printable line (control characters as spaces), in place. */
static const char *answer_line(job_t *j)
{
    if (j->answer == NULL)
        return "";
    if (j->answer_len > DETAIL_ANSWER_MAX) {
        j->answer_len = DETAIL_ANSWER_MAX;
        j->answer[j->answer_len] = '\0';
    }
    for (size_t i = 0; i < j->answer_len; i++)
        if ((unsigned char)j->answer[i] < 0x20 || j->answer[i] == 0x7f)
            j->answer[i] = ' ';
    return j->answer;
}

static void start_queued(wb_t *w);

static void on_http_done(void *easy, int code, void *arg)
{
    job_t *j = arg;
    wb_t *w = j->w;
    long status = 0;
    nt_rc_t rc;
    char *detail = NULL;

    curl_easy_getinfo((CURL *)easy, CURLINFO_RESPONSE_CODE, &status);
    inflight_unlink(w, j);
    curl_easy_cleanup((CURL *)easy);
    j->easy = NULL;
    if (code == CURLE_ABORTED_BY_CALLBACK) {
        rc = NT_ECANCELED;
    } else if (code != CURLE_OK) {
        rc = NT_EUNAVAIL;
        detail = nt_msgf("webinar: %s %s: %s%s%s", j->webinar, j->msgid,
                         curl_easy_strerror((CURLcode)code), j->errbuf[0] ? ": " : "", j->errbuf);
    } else if (status >= 200 && status <= 299) {
        json_t *ans = j->answer != NULL ? json_loadb(j->answer, j->answer_len, 0, NULL) : NULL;
        const char *link = ans != NULL ? json_path(ans, w->join_field) : NULL;
        char *keep = NULL;
        if (join_url_ok(link)) {
            keep = strdup(link);
            detail = keep != NULL ? nt_msgf("%s (%s)", link, invite_words(j->invite)) : NULL;
        } else {
            /* Never quoted: it may be anything, of any length. */
            if (w->host->log != NULL)
                w->host->log(NT_LOG_WARN, "webinar",
                             "%s: registered for %s, but the answer has no usable http(s) link "
                             "in '%s'",
                             j->msgid, j->webinar, w->join_field);
            detail = nt_msgf("registered for %s without a join link (no usable http(s) link in "
                             "'%s' of the answer; %s)",
                             j->webinar, w->join_field, invite_words(j->invite));
        }
        json_decref(ans);
        registered(w, j, keep, detail);
        start_queued(w);
        return;
    } else {
        int perm =
            status >= 400 && status <= 499 && status != 408 && status != 429 && status != 401;
        rc = perm ? NT_EPERMFAIL : NT_EUNAVAIL;
        detail = nt_msgf("webinar: %s %s: status %ld%s%s", j->webinar, j->msgid, status,
                         j->answer_len > 0 ? ": " : "", answer_line(j));
    }
    job_finish(w, j, rc, NULL, detail);
    free(detail);
    start_queued(w);
}

/* Start j's transfer. Returns 0, or -1 (j untouched apart from its handle). */
static int http_start(wb_t *w, job_t *j)
{
    CURL *e = curl_easy_init();
    if (e == NULL)
        return -1;
    j->errbuf[0] = '\0';
    j->answer_len = 0;
    curl_easy_setopt(e, CURLOPT_URL, j->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, j->hdr);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "nurture-webinar/1");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, w->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, w->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf);
    j->easy = e;
    j->prev = NULL;
    j->next = w->inflight;
    if (w->inflight != NULL)
        w->inflight->prev = j;
    w->inflight = j;
    w->ninflight++;
    if (w->host->curl_add(e, on_http_done, j) != 0) {
        inflight_unlink(w, j);
        curl_easy_cleanup(e);
        j->easy = NULL;
        return -1;
    }
    return 0;
}

/* Fill free slots from the queue. A job that cannot start completes as unavailable. */
static void start_queued(wb_t *w)
{
    while (w->qhead != NULL && w->ninflight < w->max_inflight) {
        job_t *j = w->qhead;
        w->qhead = j->next;
        if (w->qhead == NULL)
            w->qtail = NULL;
        j->next = NULL;
        if (http_start(w, j) != 0)
            job_finish(w, j, NT_EUNAVAIL, NULL, "webinar: cannot start an HTTP transfer");
    }
}

/* The headers of a registration. NULL when out of memory. */
static struct curl_slist *headers(const wb_t *w, const char *key)
{
    char *idem = nt_msgf("Idempotency-Key: %s", key);
    /* "Expect:" turns off 100-continue, a round trip (or a 1 s stall) per larger body. */
    const char *lines[] = {"Content-Type: application/json", "Accept: application/json",
                           "Expect:", idem, w->auth};
    struct curl_slist *hdr = NULL, *t;
    for (size_t i = 0; idem != NULL && i < sizeof(lines) / sizeof(lines[0]); i++) {
        if (lines[i] == NULL)
            continue;
        if ((t = curl_slist_append(hdr, lines[i])) == NULL) {
            curl_slist_free_all(hdr);
            hdr = NULL;
            break;
        }
        hdr = t;
    }
    free(idem);
    return hdr;
}

/* The local join link: LOCAL_BASE<webinar>/<FNV-1a 64 of webinar and lead, hex>. */
static char *local_link(const char *webinar, const char *lead)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    const char *parts[] = {"nurture-webinar", webinar, lead};
    for (size_t i = 0; i < 3; i++)
        for (const unsigned char *p = (const unsigned char *)parts[i];; p++) {
            h = (h ^ *p) * 0x100000001b3ULL;
            if (*p == '\0')
                break;
        }
    return nt_msgf(LOCAL_BASE "%s/%016llx", webinar, (unsigned long long)h);
}

static nt_rc_t wb_dispatch(void *state, const nt_message_t *msg, nt_channel_done_fn *done,
                           void *done_arg)
{
    wb_t *w = state;
    const char *webinar = param(msg->params, msg->nparams, "webinar");
    const char *reg = param(msg->params, msg->nparams, "register");
    const char *invite = param(msg->params, msg->nparams, "invite");
    const char *email = param(msg->lead, msg->nlead, "email");

    invite = invite != NULL && strcmp(invite, "platform") == 0 ? "platform" : "email";
    if (webinar == NULL || !webinar_id_ok(webinar) || msg->id == NULL || msg->id[0] == '\0' ||
        strpbrk(msg->id, "\r\n") != NULL || msg->lead_id == NULL) {
        done(done_arg, NT_EPERMFAIL, NULL,
             "webinar: the message has no usable webinar id or message id");
        return NT_OK;
    }
    if (reg != NULL && strcmp(reg, "no") == 0) {
        char *detail =
            nt_msgf("not registered for %s (register: no; %s)", webinar, invite_words(invite));
        done(done_arg, NT_OK, "sent", detail);
        free(detail);
        return NT_OK;
    }
    if (email == NULL || email[0] == '\0') {
        done(done_arg, NT_EPERMFAIL, NULL, "webinar: the lead has no email address to register");
        return NT_OK;
    }

    job_t *j = calloc(1, sizeof(*j));
    if (j != NULL) {
        j->w = w;
        j->done = done;
        j->done_arg = done_arg;
        j->invite = invite;
        j->lead = strdup(msg->lead_id);
        j->webinar = strdup(webinar);
        j->msgid = strdup(msg->id);
    }
    if (j == NULL || j->lead == NULL || j->webinar == NULL || j->msgid == NULL) {
        job_free(j);
        done(done_arg, NT_EUNAVAIL, NULL, "webinar: out of memory");
        return NT_OK;
    }

    if (w->url == NULL) {
        char *link = local_link(webinar, msg->lead_id);
        char *detail = link != NULL ? nt_msgf("%s (%s)", link, invite_words(invite)) : NULL;
        return registered(w, j, link, detail) ? NT_AGAIN : NT_OK;
    }

    const char *vals[PH_N] = {
        [PH_EMAIL] = email,
        [PH_FIRST_NAME] = param(msg->lead, msg->nlead, "first_name"),
        [PH_LAST_NAME] = param(msg->lead, msg->nlead, "last_name"),
        [PH_COMPANY] = param(msg->lead, msg->nlead, "company"),
        [PH_WEBINAR] = webinar,
        [PH_INVITE] = invite,
        [PH_KEY] = msg->id,
    };
    j->url = endpoint(w, webinar);
    j->body = render(w, vals, &j->len);
    j->hdr = headers(w, msg->id);
    if (j->url == NULL || j->body == NULL || j->hdr == NULL) {
        job_free(j);
        done(done_arg, NT_EUNAVAIL, NULL, "webinar: out of memory");
        return NT_OK;
    }
    if (w->qtail != NULL)
        w->qtail->next = j;
    else
        w->qhead = j;
    w->qtail = j;
    start_queued(w);
    return NT_AGAIN;
}

/* Cancel what is in flight or queued (each done fires with NT_ECANCELED), log, free. */
static void wb_free(wb_t *w)
{
    if (w == NULL)
        return;
    /* Transfers in flight are stopped and their handles left to the host (channel.h). */
    while (w->inflight != NULL) {
        job_t *j = w->inflight;
        inflight_unlink(w, j);
        if (w->host->curl_multi != NULL)
            curl_multi_remove_handle(w->host->curl_multi, j->easy);
        job_finish(w, j, NT_ECANCELED, NULL, "webinar: shutting down");
    }
    while (w->qhead != NULL) {
        job_t *j = w->qhead;
        w->qhead = j->next;
        job_finish(w, j, NT_ECANCELED, NULL, "webinar: shutting down");
    }
    /* Writes still waiting: the host never calls on_written after this hook (channel.h). */
    while (w->writing != NULL) {
        job_t *j = w->writing;
        writing_del(w, j);
        job_finish(w, j, NT_ECANCELED, NULL, "webinar: shutting down");
    }
    if ((w->registered > 0 || w->failed > 0) && w->host->log != NULL)
        w->host->log(NT_LOG_INFO, "webinar", "%llu leads registered, %llu attempts failed",
                     w->registered, w->failed);
    segs_free(w->segs, w->nsegs);
    free(w->url);
    free(w->auth);
    free(w->join_field);
    free(w);
}

static void wb_shutdown(void *state)
{
    wb_free(state);
}

static const nt_channel_ops_t webinar_ops = {
    .abi_version = NT_CHANNEL_ABI_VERSION,
    .size = sizeof(nt_channel_ops_t),
    .name = "webinar",
    .description = "registers the lead for a webinar with the platform and stores the personal "
                   "join link on the lead (webinar_join_link)",
    .params = params,
    .outcomes = outcomes,
    .validate = wb_validate,
    .init = wb_init,
    .dispatch = wb_dispatch,
    .shutdown = wb_shutdown,
};

EXPORT const nt_channel_ops_t *nt_channel_entry(void)
{
    return &webinar_ops;
}
