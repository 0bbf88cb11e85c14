/* The email channel's HTTP provider transport (see email_http.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "email_buf.h"
#include "email_http.h"

/* What a provider's answer may add to a failure's detail. */
#define HTTP_ANSWER_MAX 300

/* The placeholders, in the order of the values array body() fills. */
enum {
    PH_TO,
    PH_TO_NAME,
    PH_FROM,
    PH_FROM_NAME,
    PH_REPLY_TO,
    PH_SUBJECT,
    PH_HTML,
    PH_TEXT,
    PH_MESSAGE_ID,
    PH_IDEMPOTENCY_KEY,
    PH_UNSUBSCRIBE_URL,
    PH_LIST_UNSUBSCRIBE,
    PH_COUNT
};

static const char *const ph_names[PH_COUNT] = {
    "to",         "to_name",         "from",          "from_name",
    "reply_to",   "subject",         "html",          "text",
    "message_id", "idempotency_key", "unsubscribe_url", "list_unsubscribe",
};

/* The body template as literal pieces, each followed by a placeholder (or none, -1). */
typedef struct seg {
    char *lit;   /* literal JSON text */
    size_t len;  /* its length */
    int ph;      /* PH_* after it, or -1 */
} seg_t;

/* One POST on its way. */
typedef struct hjob hjob_t;
struct hjob {
    nt_email_http_t *h;
    nt_channel_done_fn *done;
    void *done_arg;
    char msgid[NT_EMAIL_MSGID_MAX];
    char *body;                    /* the JSON body */
    size_t len;
    struct curl_slist *hdr;        /* kept for the whole transfer */
    char answer[HTTP_ANSWER_MAX + 1]; /* the start of the provider's answer */
    size_t answer_len;
    CURL *easy;                    /* NULL while queued */
    char errbuf[CURL_ERROR_SIZE];
    hjob_t *prev, *next;
};

struct nt_email_http {
    const nt_channel_host_t *host;
    char *url;
    char *auth;                    /* header line, or NULL */
    char *bounce;                  /* http_bounce: phrases separated by '|' */
    seg_t *segs;
    size_t nsegs;
    long timeout_ms, connect_timeout_ms;
    int max_inflight;
    int started;                   /* nt_email_http_new succeeded */
    int ninflight;
    hjob_t *inflight;              /* transfers on the multi */
    hjob_t *qhead, *qtail;         /* waiting for a slot */
    unsigned long long sent, failed;
};

static const char *cfg(const nt_channel_host_t *host, const char *key, const char *def)
{
    const char *v = host->config != NULL ? host->config("email", key, def) : def;
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

/* ---- JSON ---- */

/* s as the inside of a JSON string: quotes, backslashes and control characters escaped,
 * valid UTF-8 copied as is, invalid bytes as U+FFFD. */
static void json_escape(nt_email_buf_t *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    size_t n = strlen((const char *)p);
    while (n > 0) {
        size_t run = 0;
        /* copy plain ASCII and valid multi-byte sequences in runs */
        for (;;) {
            if (run >= n)
                break;
            unsigned c = p[run];
            if (c < 0x20 || c == '"' || c == '\\' || c == 0x7f)
                break;
            size_t k = nt_email_utf8_len(p + run, n - run);
            if (k == 0)
                break;
            run += k;
        }
        nt_email_buf_add(b, (const char *)p, run);
        p += run;
        n -= run;
        if (n == 0)
            break;
        unsigned c = *p;
        switch (c) {
        case '"':
            nt_email_buf_str(b, "\\\"");
            break;
        case '\\':
            nt_email_buf_str(b, "\\\\");
            break;
        case '\n':
            nt_email_buf_str(b, "\\n");
            break;
        case '\r':
            nt_email_buf_str(b, "\\r");
            break;
        case '\t':
            nt_email_buf_str(b, "\\t");
            break;
        default:
            if (c < 0x20 || c == 0x7f)
                nt_email_buf_printf(b, "\\u%04x", c);
            else
                nt_email_buf_str(b, "\\ufffd");
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

/* Split the template into segments. Returns 0, or -1 with *errmsg. */
static int tpl_parse(nt_email_http_t *h, const char *tpl, char **errmsg)
{
    size_t cap = 8;
    h->segs = calloc(cap, sizeof(*h->segs));
    if (h->segs == NULL)
        goto oom;
    const char *p = tpl;
    for (;;) {
        const char *open = strstr(p, "{{");
        const char *close = open != NULL ? strstr(open + 2, "}}") : NULL;
        if (open != NULL && close == NULL) {
            *errmsg = nt_msgf("email: channel.email.http_body: '{{' without '}}' at byte %zu",
                              (size_t)(open - tpl));
            return -1;
        }
        int ph = -1;
        if (open != NULL) {
            size_t nl = (size_t)(close - open - 2);
            for (int i = 0; i < PH_COUNT; i++)
                if (strlen(ph_names[i]) == nl && strncmp(open + 2, ph_names[i], nl) == 0)
                    ph = i;
            if (ph < 0) {
                *errmsg = nt_msgf("email: channel.email.http_body: unknown placeholder "
                                  "'{{%.*s}}'",
                                  (int)(nl < 40 ? nl : 40), open + 2);
                return -1;
            }
        }
        if (h->nsegs == cap) {
            seg_t *s = realloc(h->segs, 2 * cap * sizeof(*s));
            if (s == NULL)
                goto oom;
            h->segs = s;
            cap *= 2;
        }
        seg_t *s = &h->segs[h->nsegs];
        s->len = open != NULL ? (size_t)(open - p) : strlen(p);
        s->lit = strndup(p, s->len);
        s->ph = ph;
        if (s->lit == NULL)
            goto oom;
        h->nsegs++;
        if (open == NULL)
            return 0;
        p = close + 2;
    }
oom:
    *errmsg = nt_msgf("email: out of memory");
    return -1;
}

/* The body from values vals[PH_*] (NULL means empty). Malloc'd, or NULL. */
static char *render(const nt_email_http_t *h, const char *const *vals, size_t *len)
{
    nt_email_buf_t b = {0};
    for (size_t i = 0; i < h->nsegs; i++) {
        nt_email_buf_add(&b, h->segs[i].lit, h->segs[i].len);
        if (h->segs[i].ph >= 0)
            json_escape(&b, vals[h->segs[i].ph]);
    }
    *len = b.len;
    return nt_email_buf_take(&b);
}

nt_rc_t nt_email_http_body(const nt_email_http_t *h, const nt_email_msg_t *m, const char *key,
                           char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    /* Header-bound values as the message builder would put them: one clean line each. */
    char *to_name = nt_email_header_clean(m->to_name != NULL ? m->to_name : "");
    char *from_name = nt_email_header_clean(m->from_name != NULL ? m->from_name : "");
    char *subject = nt_email_header_clean(m->subject != NULL ? m->subject : "");
    char *list_unsub = NULL;
    if (m->unsub_url != NULL || m->unsub_mailto != NULL) {
        list_unsub =
            nt_msgf("%s%s%s%s%s%s", m->unsub_url != NULL ? "<" : "",
                    m->unsub_url != NULL ? m->unsub_url : "", m->unsub_url != NULL ? ">" : "",
                    m->unsub_url != NULL && m->unsub_mailto != NULL ? ", " : "",
                    m->unsub_mailto != NULL ? "<mailto:" : "",
                    m->unsub_mailto != NULL ? m->unsub_mailto : "");
        if (list_unsub != NULL && m->unsub_mailto != NULL) {
            char *full = nt_msgf("%s?subject=unsubscribe>", list_unsub);
            free(list_unsub);
            list_unsub = full;
        }
    }
    nt_rc_t rc = NT_ENOMEM;
    if (to_name != NULL && from_name != NULL && subject != NULL &&
        (list_unsub != NULL || (m->unsub_url == NULL && m->unsub_mailto == NULL))) {
        const char *vals[PH_COUNT] = {
            [PH_TO] = m->to_addr,
            [PH_TO_NAME] = to_name,
            [PH_FROM] = m->from_addr,
            [PH_FROM_NAME] = from_name,
            [PH_REPLY_TO] = m->reply_to != NULL ? m->reply_to : m->from_addr,
            [PH_SUBJECT] = subject,
            [PH_HTML] = m->html,
            [PH_TEXT] = m->text,
            [PH_MESSAGE_ID] = m->msgid,
            [PH_IDEMPOTENCY_KEY] = key,
            [PH_UNSUBSCRIBE_URL] = m->unsub_url,
            [PH_LIST_UNSUBSCRIBE] = list_unsub,
        };
        *out = render(h, vals, len);
        rc = *out != NULL ? NT_OK : NT_ENOMEM;
    }
    free(to_name);
    free(from_name);
    free(subject);
    free(list_unsub);
    return rc;
}

/* ---- the transport ---- */

nt_email_http_t *nt_email_http_new(const nt_channel_host_t *host, const char *url,
                                   char **errmsg)
{
    nt_email_http_t *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        *errmsg = nt_msgf("email: out of memory");
        return NULL;
    }
    h->host = host;
    if (host->size < offsetof(nt_channel_host_t, curl_add) + sizeof(host->curl_add) ||
        host->curl_add == NULL) {
        *errmsg = nt_msgf("email: the HTTP transport needs a host with curl_add (host ABI struct "
                          "too old)");
        goto fail;
    }
    if ((strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0) ||
        strpbrk(url, " \t\r\n") != NULL) {
        *errmsg = nt_msgf("email: channel.email.http_url must be an http:// or https:// URL");
        goto fail;
    }
    h->url = strdup(url);
    const char *auth = cfg(host, "http_auth", getenv("NT_EMAIL_HTTP_AUTH"));
    if (auth != NULL && auth[0] != '\0') {
        const char *colon = strchr(auth, ':');
        int bad = colon == NULL || colon == auth;
        for (const char *p = auth; !bad && p < colon; p++)
            bad = *p <= ' ' || *p >= 0x7f;
        for (const char *p = auth; !bad && *p != '\0'; p++)
            bad = (unsigned char)*p < 0x20 && *p != '\t';
        if (bad) {
            /* never echo the line: it holds a secret */
            *errmsg = nt_msgf("email: channel.email.http_auth (or NT_EMAIL_HTTP_AUTH) must be one "
                              "header line 'Name: value'");
            goto fail;
        }
        h->auth = strdup(auth);
        if (h->auth == NULL)
            goto oom;
    }
    h->timeout_ms = cfg_long(host, "timeout_ms", 30000, 100, 3600000);
    h->connect_timeout_ms = cfg_long(host, "connect_timeout_ms", 10000, 100, 600000);
    h->max_inflight = (int)cfg_long(host, "max_inflight", 8, 1, 1024);
    h->bounce = strdup(cfg(host, "http_bounce", NT_EMAIL_HTTP_DEFAULT_BOUNCE));
    if (h->bounce == NULL) {
        *errmsg = nt_msgf("email: out of memory");
        goto fail;
    }
    if (h->timeout_ms < 0 || h->connect_timeout_ms < 0 || h->max_inflight < 0) {
        *errmsg = nt_msgf("email: timeout_ms (100..3600000), connect_timeout_ms (100..600000) "
                          "and max_inflight (1..1024) must be numbers in range");
        goto fail;
    }
    const char *body = cfg(host, "http_body", NT_EMAIL_HTTP_DEFAULT_BODY);
    if (h->url == NULL)
        goto oom;
    if (tpl_parse(h, body, errmsg) != 0)
        goto fail;
    /* The template must be JSON for any values: render it with awkward ones and parse. */
    const char *vals[PH_COUNT];
    for (int i = 0; i < PH_COUNT; i++)
        vals[i] = "a \"b\"\n\\ \xc3\xa9 \xff";
    size_t len;
    char *sample = render(h, vals, &len);
    if (sample == NULL)
        goto oom;
    json_error_t jerr;
    json_t *j = json_loadb(sample, len, 0, &jerr);
    free(sample);
    if (j == NULL) {
        *errmsg = nt_msgf("email: channel.email.http_body is not JSON (placeholders go inside "
                          "strings): %s at byte %d",
                          jerr.text, jerr.position);
        goto fail;
    }
    json_decref(j);
    h->started = 1;
    if (host->log != NULL)
        host->log(NT_LOG_INFO, "email", "HTTP provider %s, at most %d in flight%s", h->url,
                  h->max_inflight, h->auth != NULL ? ", with an auth header" : "");
    return h;
oom:
    *errmsg = nt_msgf("email: out of memory");
fail:
    nt_email_http_free(h);
    return NULL;
}

static void hjob_free(hjob_t *j)
{
    if (j == NULL)
        return;
    free(j->body);
    curl_slist_free_all(j->hdr);
    free(j);
}

static void inflight_unlink(nt_email_http_t *h, hjob_t *j)
{
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        h->inflight = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    j->prev = j->next = NULL;
    h->ninflight--;
}

/* Keep the start of the answer for a failure's detail; take (and drop) the rest. */
static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
    hjob_t *j = arg;
    size_t n = size * nmemb;
    size_t room = HTTP_ANSWER_MAX - j->answer_len;
    size_t k = n < room ? n : room;
    memcpy(j->answer + j->answer_len, data, k);
    j->answer_len += k;
    j->answer[j->answer_len] = '\0';
    return n;
}

/* The answer as one printable line (control characters as spaces), in place. */
static const char *answer_line(hjob_t *j)
{
    for (size_t i = 0; i < j->answer_len; i++)
        if ((unsigned char)j->answer[i] < 0x20 || j->answer[i] == 0x7f)
            j->answer[i] = ' ';
    return j->answer;
}

static void start_queued(nt_email_http_t *h);

/* Non-zero when the provider's answer names the recipient as undeliverable: it contains one of
 * the '|'-separated phrases of http_bounce, ignoring case. */
static int answer_is_bounce(const nt_email_http_t *h, const char *answer)
{
    for (const char *p = h->bounce; *p != '\0';) {
        size_t n = strcspn(p, "|");
        char phrase[128];
        if (n > 0 && n < sizeof(phrase)) {
            memcpy(phrase, p, n);
            phrase[n] = '\0';
            if (strcasestr(answer, phrase) != NULL)
                return 1;
        }
        p += n + (p[n] == '|');
    }
    return 0;
}

static void on_http_done(void *easy, int code, void *arg)
{
    hjob_t *j = arg;
    nt_email_http_t *h = j->h;
    long status = 0;
    curl_easy_getinfo((CURL *)easy, CURLINFO_RESPONSE_CODE, &status);
    inflight_unlink(h, j);
    nt_rc_t rc;
    const char *outcome = "sent";
    char *detail = NULL;
    if (code == CURLE_ABORTED_BY_CALLBACK) {
        rc = NT_ECANCELED;
    } else if (code != CURLE_OK) {
        rc = NT_EUNAVAIL;
        detail = nt_msgf("email: http %s: %s%s%s", j->msgid, curl_easy_strerror((CURLcode)code),
                         j->errbuf[0] ? ": " : "", j->errbuf);
    } else if (status >= 200 && status <= 299) {
        rc = NT_OK;
    } else {
        int perm = status >= 400 && status <= 499 && status != 408 && status != 429 &&
                   status != 401;
        rc = perm ? NT_EPERMFAIL : NT_EUNAVAIL;
        const char *answer = answer_line(j);
        detail = nt_msgf("email: http %s: status %ld%s%s", j->msgid, status,
                         j->answer_len > 0 ? ": " : "", answer);
        if (perm && answer_is_bounce(h, answer)) {
            /* The provider refused the recipient: a hard bounce (email.c). */
            rc = NT_OK;
            outcome = "bounced";
        }
    }
    if (rc == NT_OK)
        h->sent++;
    else if (rc != NT_ECANCELED)
        h->failed++;
    curl_easy_cleanup((CURL *)easy);
    j->easy = NULL;
    nt_channel_done_fn *done = j->done;
    void *done_arg = j->done_arg;
    hjob_free(j);
    done(done_arg, rc, rc == NT_OK ? outcome : NULL, detail);
    free(detail);
    start_queued(h);
}

/* Start j's transfer. Returns 0, or -1 (j untouched apart from its handle). */
static int http_start(nt_email_http_t *h, hjob_t *j)
{
    CURL *e = curl_easy_init();
    if (e == NULL)
        return -1;
    j->errbuf[0] = '\0';
    j->answer_len = 0;
    j->answer[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, h->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, j->hdr);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "nurture-email/1");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf);
    j->easy = e;
    j->prev = NULL;
    j->next = h->inflight;
    if (h->inflight != NULL)
        h->inflight->prev = j;
    h->inflight = j;
    h->ninflight++;
    if (h->host->curl_add(e, on_http_done, j) != 0) {
        inflight_unlink(h, j);
        curl_easy_cleanup(e);
        j->easy = NULL;
        return -1;
    }
    return 0;
}

/* Fill free slots from the queue. A job that cannot start completes as unavailable. */
static void start_queued(nt_email_http_t *h)
{
    while (h->qhead != NULL && h->ninflight < h->max_inflight) {
        hjob_t *j = h->qhead;
        h->qhead = j->next;
        if (h->qhead == NULL)
            h->qtail = NULL;
        j->next = NULL;
        if (http_start(h, j) != 0) {
            nt_channel_done_fn *done = j->done;
            void *done_arg = j->done_arg;
            hjob_free(j);
            done(done_arg, NT_EUNAVAIL, NULL, "email: cannot start an HTTP transfer");
        }
    }
}

nt_rc_t nt_email_http_send(nt_email_http_t *h, const char *msgid, const char *key, char *body,
                           size_t len, nt_channel_done_fn *done, void *done_arg)
{
    hjob_t *j = calloc(1, sizeof(*j));
    /* The key names the message to the provider; a header cannot carry line breaks. */
    char *idem =
        key != NULL && strpbrk(key, "\r\n") == NULL ? nt_msgf("Idempotency-Key: %s", key) : NULL;
    struct curl_slist *hdr = NULL, *t;
    if (j != NULL && idem != NULL) {
        /* "Expect:" turns off 100-continue, a round trip (or a 1 s stall) per larger body. */
        const char *lines[] = {"Content-Type: application/json", "Accept: application/json",
                               "Expect:", idem, h->auth};
        for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
            if (lines[i] == NULL)
                continue;
            t = curl_slist_append(hdr, lines[i]);
            if (t == NULL) {
                curl_slist_free_all(hdr);
                hdr = NULL;
                break;
            }
            hdr = t;
        }
    }
    free(idem);
    if (j == NULL || hdr == NULL) {
        free(body);
        free(j);
        curl_slist_free_all(hdr);
        done(done_arg, NT_EUNAVAIL, NULL,
             key == NULL || strpbrk(key, "\r\n") != NULL ? "email: unusable idempotency key"
                                                         : "email: out of memory");
        return NT_OK;
    }
    j->h = h;
    j->done = done;
    j->done_arg = done_arg;
    j->body = body;
    j->len = len;
    j->hdr = hdr;
    snprintf(j->msgid, sizeof(j->msgid), "%s", msgid);
    if (h->qtail != NULL)
        h->qtail->next = j;
    else
        h->qhead = j;
    h->qtail = j;
    start_queued(h);
    return NT_AGAIN;
}

void nt_email_http_free(nt_email_http_t *h)
{
    if (h == NULL)
        return;
    /* Transfers in flight are stopped and their handles left to the host (channel.h). */
    while (h->inflight != NULL) {
        hjob_t *j = h->inflight;
        inflight_unlink(h, j);
        if (h->host->curl_multi != NULL)
            curl_multi_remove_handle(h->host->curl_multi, j->easy);
        nt_channel_done_fn *done = j->done;
        void *done_arg = j->done_arg;
        hjob_free(j);
        done(done_arg, NT_ECANCELED, NULL, "email: shutting down");
    }
    while (h->qhead != NULL) {
        hjob_t *j = h->qhead;
        h->qhead = j->next;
        nt_channel_done_fn *done = j->done;
        void *done_arg = j->done_arg;
        hjob_free(j);
        done(done_arg, NT_ECANCELED, NULL, "email: shutting down");
    }
    if (h->started && h->host->log != NULL)
        h->host->log(NT_LOG_INFO, "email", "HTTP provider: %llu messages sent, %llu failed",
                     h->sent, h->failed);
    segs_free(h->segs, h->nsegs);
    free(h->url);
    free(h->auth);
    free(h->bounce);
    free(h);
}
