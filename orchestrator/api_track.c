/* Signed links in messages (include/nurture/track.h), served without a bearer token: the
 * token's HMAC is the authority.
 *
 *   GET|HEAD /t/c/<token>  302 to the signed URL, and an email.clicked event
 *   GET|HEAD /t/o/<token>  a 1x1 GIF, and an email.opened event
 *   GET|HEAD /t/u/<token>  a page asking to confirm, whose button POSTs to the same URL
 *   POST     /t/u/<token>  unsubscribe at once (also RFC 8058 one-click), idempotent
 *
 * Machines are told apart, not turned away: an open or click is posted with machine set when
 * the user agent is a known proxy or scanner (or missing, or Apple's bare "Mozilla/5.0"), for
 * HEAD, for a click sooner than channel.email.min_click_delay seconds after the message was
 * built, and (track_event.lua) when another link of the same message was clicked within
 * CLICK_WINDOW_MS. Machine events reach the timeline but move nothing (engine.c).
 *
 * A bad token gets 400 (malformed) or 403 (signature mismatch, expired) and writes nothing;
 * the unsubscribe page answers in plain text, the others in JSON. Contract: docs/api.md. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "clock.h"
#include "keys.h"
#include "log.h"
#include "nurture/track.h"
#include "webhook_sig.h"

#define CLICK_WINDOW_MS 2000  /* clicks on two links of one message closer than this: a scanner */
#define CLICK_RECORD_MS 60000 /* how long a message's click record lives */

/* A transparent 1x1 GIF. */
static const unsigned char pixel_gif[] = {
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

/* User agents of mail-privacy proxies, security gateways, link scanners and robots (matched
 * case-insensitively anywhere in the header). */
static const char *const machine_agents[] = {
    "googleimageproxy", "yahoomailproxy", "barracuda",   "mimecast",    "proofpoint",
    "safelinks",        "safe links",     "microsoft office", "urlscan", "bot",
    "crawler",          "spider",         "slurp",       "scanner",     "preview",
    "headless",         "phantomjs",      "curl/",       "wget",        "python-",
    "go-http-client",   "java/",          "okhttp",      "libwww",      "httpclient",
    "symantec",         "forcepoint",     "trendmicro",  "sophos",      "fireeye",
    "ironport",         "messagelabs",
};

/* Why the request at hand is a machine's, by its user agent, or NULL when it may be a person. */
static const char *agent_machine(const char *ua)
{
    size_t n;

    if (!ua)
        return "no_user_agent";
    while (*ua == ' ' || *ua == '\t')
        ua++;
    n = strlen(ua);
    while (n && (ua[n - 1] == ' ' || ua[n - 1] == '\t'))
        n--;
    if (n == 0)
        return "no_user_agent";
    /* Apple Mail Privacy Protection fetches images with a bare "Mozilla/5.0". */
    if (n == 11 && strncasecmp(ua, "Mozilla/5.0", 11) == 0)
        return "privacy_proxy";
    for (size_t i = 0; i < sizeof(machine_agents) / sizeof(machine_agents[0]); i++) {
        const char *m = machine_agents[i];
        size_t ml = strlen(m);

        for (size_t j = 0; j + ml <= n; j++)
            if (strncasecmp(ua + j, m, ml) == 0)
                return "user_agent";
    }
    return NULL;
}

static int64_t min_click_delay_s(const nt_config_t *cfg)
{
    const char *v = nt_config_channel(cfg, "email", "min_click_delay", "10");
    char *end = NULL;
    long n = strtol(v, &end, 10);

    return end && *end == '\0' && end != v && n >= 0 ? n : 10;
}

/* An error for a link: JSON, or plain text for the unsubscribe page (a person reads it). */
static void link_error(nt_api_req_t *r, int plain, int status, const char *code, const char *msg)
{
    if (plain) {
        char text[512];
        int n = snprintf(text, sizeof(text), "%s\n", msg);

        nt_api_reply_raw(r, status, "text/plain; charset=utf-8", text, (size_t)n);
    } else {
        nt_api_error(r, status, code, "%s", msg);
    }
}

/* Verify the token in the path (r->seg[2]) as one of kind. Returns 0, or -1 after replying. */
static int link_token(nt_api_req_t *r, char kind, int plain, nt_track_token_t *t)
{
    const char *secret = r->d.cfg->tracking_secret;
    int rc;

    if (!secret || !secret[0]) {
        link_error(r, plain, 503, "unavailable", "links are not configured (tracking-secret)");
        return -1;
    }
    rc = nt_track_verify(secret, strlen(secret), r->seg[2], nt_real_ms() / 1000, t);
    if (rc == NT_TRACK_OK && t->kind != kind)
        rc = NT_TRACK_EMALFORMED;
    switch (rc) {
    case NT_TRACK_OK:
        return 0;
    case NT_TRACK_EFORGED:
        link_error(r, plain, 403, "forbidden", "the link's signature does not match");
        return -1;
    case NT_TRACK_EEXPIRED:
        link_error(r, plain, 403, "expired", "the link has expired");
        return -1;
    default:
        link_error(r, plain, 400, "bad_token", "the link is not valid (malformed token)");
        return -1;
    }
}

/* ---- clicks and opens ------------------------------------------------------------------- */

typedef struct hit_ctx {
    char kind;
    char *url;  /* the redirect (clicks) */
    char *lead; /* to wake its partition */
} hit_ctx_t;

static void hit_ctx_free(void *p)
{
    hit_ctx_t *c = p;

    free(c->url);
    free(c->lead);
    free(c);
}

/* The person gets the target or the pixel whatever became of the event. */
static void hit_reply(nt_api_req_t *r, hit_ctx_t *c)
{
    nt_api_header_out(r, "Cache-Control", "no-store, no-cache, must-revalidate, private");
    nt_api_header_out(r, "Referrer-Policy", "no-referrer");
    if (c->kind == NT_TRACK_CLICK) {
        static const char body[] = "<!DOCTYPE html>\n<title>Moved</title>\n";

        nt_api_header_out(r, "Location", c->url);
        nt_api_reply_raw(r, 302, "text/html; charset=utf-8", body, sizeof(body) - 1);
    } else {
        nt_api_reply_raw(r, 200, "image/gif", pixel_gif, sizeof(pixel_gif));
    }
}

static void on_hit(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    hit_ctx_t *c = r->ctx;

    (void)n;
    (void)arg;
    if (rc != NT_OK)
        nt_log_warn("http", "a %s of %s was not recorded: %s",
                    c->kind == NT_TRACK_CLICK ? "click" : "open", c->lead, nt_strerror(rc));
    else if (nt_api_script_reply_ok(rep[0], 1, "track_event") &&
             strcmp(rep[0]->element[0]->str, "ok") == 0 && r->d.worker)
        nt_worker_wake(r->d.worker, nt_partition(c->lead, r->d.cfg->partitions));
    hit_reply(r, c);
}

static void track_hit(nt_api_req_t *r, char kind)
{
    nt_track_token_t *t = malloc(sizeof(*t));
    hit_ctx_t *c;
    const char *why;
    char k[NT_KEY_MAX], what[NT_KEY_MAX];
    unsigned p;
    nt_api_argv_t a = {0};

    if (!t) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    if (link_token(r, kind, 0, t) != 0) {
        free(t);
        return;
    }
    c = nt_api_ctx_new(r, sizeof(*c), hit_ctx_free);
    if (!c) {
        free(t);
        return;
    }
    c->kind = kind;
    c->lead = strdup(t->lead);
    c->url = kind == NT_TRACK_CLICK ? strdup(t->url) : NULL;
    if (!c->lead || (kind == NT_TRACK_CLICK && !c->url)) {
        free(t);
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    if (!nt_redis_up(r->d.redis)) {
        nt_log_warn("http", "Redis is down: a %s of %s was not recorded",
                    kind == NT_TRACK_CLICK ? "click" : "open", t->lead);
        free(t);
        hit_reply(r, c);
        return;
    }
    why = nt_api_is_head(r) ? "head" : agent_machine(nt_api_header_in(r, "User-Agent"));
    if (!why && kind == NT_TRACK_CLICK &&
        nt_real_ms() / 1000 - t->issued < min_click_delay_s(r->d.cfg))
        why = "too_soon";
    p = nt_partition(t->lead, r->d.cfg->partitions);
    snprintf(what, sizeof(what), "clicks:%.300s", t->msgid);
    nt_api_argv_add(&a, nt_key_lead(k, p, t->lead));
    nt_api_argv_add(&a, nt_key_part(k, p, "events"));
    nt_api_argv_add(&a, nt_key_part(k, p, what));
    nt_api_argv_add(&a, t->lead);
    nt_api_argv_add(&a, kind == NT_TRACK_CLICK ? "email.clicked" : "email.opened");
    nt_api_argv_add(&a, why ? "1" : "0");
    nt_api_argv_addf(&a, "%" PRId64, nt_now_ms());
    nt_api_argv_addf(&a, "%" PRId64, nt_real_ms());
    nt_api_argv_add(&a, kind == NT_TRACK_CLICK ? t->url : "");
    nt_api_argv_addf(&a, "%d", CLICK_WINDOW_MS);
    nt_api_argv_addf(&a, "%d", CLICK_RECORD_MS);
    nt_api_argv_add(&a, why ? why : "");
    nt_api_argv_add(&a, "message");
    nt_api_argv_add(&a, t->msgid);
    nt_api_argv_add(&a, "plan");
    nt_api_argv_add(&a, t->plan);
    nt_api_argv_add(&a, "node");
    nt_api_argv_add(&a, t->node);
    if (kind == NT_TRACK_CLICK) {
        nt_api_argv_add(&a, "url");
        nt_api_argv_add(&a, t->url);
    }
    free(t);
    nt_api_script(r, "track_event", 3, &a, on_hit, NULL);
}

void nt_api_track_click(nt_api_req_t *r)
{
    track_hit(r, NT_TRACK_CLICK);
}

void nt_api_track_open(nt_api_req_t *r)
{
    track_hit(r, NT_TRACK_OPEN);
}

/* ---- unsubscribe ------------------------------------------------------------------------ */

/* The page's form: a one-click unsubscribe (RFC 8058's body) posted to the link itself. */
static const char unsub_fields[] =
    "<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\n"
    "<button type=\"submit\">Unsubscribe</button>\n";

void nt_api_track_unsub_page(nt_api_req_t *r)
{
    nt_track_token_t t;

    if (link_token(r, NT_TRACK_UNSUBSCRIBE, 1, &t) != 0)
        return;
    /* A GET changes nothing: link scanners and previews fetch it too. The token is base64url
     * and '.', safe inside the attribute. */
    nt_api_page(r, 200, "Unsubscribe",
                "Press the button to stop receiving these emails. It takes effect at once.",
                r->seg[2], unsub_fields);
}

typedef struct unsub_ctx {
    char *lead;
} unsub_ctx_t;

static void unsub_ctx_free(void *p)
{
    unsub_ctx_t *c = p;

    free(c->lead);
    free(c);
}

static void on_unsub(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    unsub_ctx_t *c = r->ctx;
    const char *st;

    (void)n;
    (void)arg;
    if (rc != NT_OK) {
        link_error(r, 1, 503, "unavailable",
                   "We could not record your request just now. Please try again in a minute.");
        return;
    }
    if (!nt_api_script_reply_ok(rep[0], 1, "email_feedback")) {
        link_error(r, 1, 500, "internal", "Something went wrong; please try again later.");
        return;
    }
    st = rep[0]->element[0]->str;
    if (strcmp(st, "missing") == 0) {
        link_error(r, 1, 404, "not_found", "There is no subscription for this link any more.");
        return;
    }
    if (strcmp(st, "ok") == 0 && r->d.worker)
        nt_worker_wake(r->d.worker, nt_partition(c->lead, r->d.cfg->partitions));
    nt_api_page(r, 200, "Unsubscribed", "You will not receive these emails any more.", NULL,
                NULL);
}

/* Append the keys and arguments of email_feedback.lua. */
static void feedback_args(nt_api_argv_t *a, const nt_config_t *cfg, const char *lead,
                          const char *kind, const char *msgid, const char *source,
                          const char *bounce, const char *reason)
{
    char k[NT_KEY_MAX];
    unsigned p = nt_partition(lead, cfg->partitions);

    nt_api_argv_add(a, nt_key_lead(k, p, lead));
    nt_api_argv_add(a, nt_key_part(k, p, "events"));
    nt_api_argv_add(a, lead);
    nt_api_argv_add(a, kind);
    nt_api_argv_addf(a, "%" PRId64, nt_now_ms());
    nt_api_argv_addf(a, "%" PRId64, nt_real_ms());
    nt_api_argv_add(a, msgid);
    nt_api_argv_add(a, source);
    nt_api_argv_add(a, bounce ? bounce : "");
    nt_api_argv_add(a, reason ? reason : "");
}

void nt_api_track_unsub(nt_api_req_t *r)
{
    nt_track_token_t t;
    unsub_ctx_t *c;
    nt_api_argv_t a = {0};
    int one_click;

    if (link_token(r, NT_TRACK_UNSUBSCRIBE, 1, &t) != 0)
        return;
    if (!nt_redis_up(r->d.redis)) {
        link_error(r, 1, 503, "unavailable",
                   "We could not record your request just now. Please try again in a minute.");
        return;
    }
    c = nt_api_ctx_new(r, sizeof(*c), unsub_ctx_free);
    if (!c)
        return;
    c->lead = strdup(t.lead);
    if (!c->lead) {
        link_error(r, 1, 500, "internal", "out of memory");
        return;
    }
    one_click = r->rawlen >= 26 && memmem(r->raw, r->rawlen, "List-Unsubscribe=One-Click", 26);
    feedback_args(&a, r->d.cfg, t.lead, "unsubscribe", t.msgid, one_click ? "one_click" : "link",
                  NULL, NULL);
    nt_api_script(r, "email_feedback", 2, &a, on_unsub, NULL);
}

/* ---- the provider webhook: POST /v1/webhooks/email ---------------------------------------- */

#define WEBHOOK_TOLERANCE_S 300
#define WEBHOOK_MAX_EVENTS 1000

typedef struct hook_ev {
    const char *type, *message, *bounce, *reason; /* borrowed from r->body */
    char lead[129];                               /* "" when the message id names no lead */
    int slot;                                     /* index in the batch, -1 when not sent */
} hook_ev_t;

typedef struct hook_ctx {
    hook_ev_t *ev;
    size_t n;
    size_t nsent;
} hook_ctx_t;

static void hook_ctx_free(void *p)
{
    hook_ctx_t *c = p;

    free(c->ev);
    free(c);
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Check X-Nurture-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." body)> (several v1
 * allowed, for key rotation on the provider's side). Returns 0 with the matching v1 in sig
 * (65 bytes), or -1 after replying 401. */
int nt_api_webhook_signed(nt_api_req_t *r, char *sig)
{
    const char *hdr = nt_api_header_in(r, NT_WEBHOOK_SIG_HEADER);
    const char *secret = r->d.cfg->webhook_secret;
    unsigned char want[32];
    long long ts = -1;
    const char *v1[8];
    size_t nv1 = 0;
    int matched = 0;
    char *copy, *save = NULL;

    if (!secret || !secret[0]) {
        nt_api_error(r, 503, "unavailable", "webhook-secret is not configured");
        return -1;
    }
    if (!hdr || !hdr[0]) {
        nt_api_error(r, 401, "unauthorized", "missing header X-Nurture-Signature");
        return -1;
    }
    copy = strdup(hdr);
    if (!copy) {
        nt_api_error(r, 500, "internal", "out of memory");
        return -1;
    }
    for (char *part = strtok_r(copy, ",", &save); part; part = strtok_r(NULL, ",", &save)) {
        while (*part == ' ')
            part++;
        if (strncmp(part, "t=", 2) == 0) {
            char *end = NULL;

            ts = strtoll(part + 2, &end, 10);
            if (end == part + 2 || *end != '\0' || ts < 0)
                ts = -1;
        } else if (strncmp(part, "v1=", 3) == 0 && nv1 < sizeof(v1) / sizeof(v1[0])) {
            v1[nv1++] = part + 3;
        }
    }
    if (ts < 0 || nv1 == 0) {
        free(copy);
        nt_api_error(r, 401, "unauthorized",
                     "X-Nurture-Signature must be t=<unix seconds>,v1=<hex HMAC-SHA256>");
        return -1;
    }
    if (llabs(ts - nt_real_ms() / 1000) > WEBHOOK_TOLERANCE_S) {
        free(copy);
        nt_api_error(r, 401, "unauthorized",
                     "the signature's time is more than %d seconds away from now",
                     WEBHOOK_TOLERANCE_S);
        return -1;
    }
    if (nt_webhook_sig_mac(secret, ts, r->raw, r->rawlen, want) != 0) {
        free(copy);
        nt_api_error(r, 500, "internal", "out of memory");
        return -1;
    }
    for (size_t k = 0; k < nv1; k++) {
        unsigned char got[32];
        int ok = strlen(v1[k]) == 64;

        for (size_t i = 0; i < 32 && ok; i++) {
            int hi = hexval((unsigned char)v1[k][2 * i]), lo = hexval((unsigned char)v1[k][2 * i + 1]);

            ok = hi >= 0 && lo >= 0;
            got[i] = (unsigned char)(hi << 4 | (lo & 15));
        }
        if (ok && CRYPTO_memcmp(got, want, 32) == 0 && !matched) {
            matched = 1;
            for (size_t i = 0; i < 64; i++)
                sig[i] = (char)tolower((unsigned char)v1[k][i]);
            sig[64] = '\0';
        }
    }
    free(copy);
    if (!matched) {
        nt_api_error(r, 401, "unauthorized", "the signature does not match the body");
        return -1;
    }
    return 0;
}

/* Parse and check the whole body before anything is written. Returns 0, or -1 after replying. */
static int webhook_parse(nt_api_req_t *r, hook_ctx_t *c, json_t **root)
{
    static const char *const top[] = {"events", NULL};
    static const char *const fields[] = {"type", "message", "bounce", "reason", NULL};
    static const char *const types[] = {"delivered", "deferred", "bounced", "complaint",
                                        "unsubscribe", NULL};
    const char *ct = nt_api_header_in(r, "Content-Type");
    json_error_t jerr;
    json_t *body, *events;
    char err[256], prefix[48];

    if (ct && strncasecmp(ct, "application/json", 16) != 0) {
        nt_api_error(r, 415, "unsupported_media_type",
                     "the body must be JSON (Content-Type: application/json)");
        return -1;
    }
    body = json_loadb((const char *)r->raw, r->rawlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!body) {
        nt_api_error(r, 400, "bad_json", "malformed JSON at line %d column %d: %s", jerr.line,
                     jerr.column, jerr.text);
        return -1;
    }
    *root = body;
    if (!json_is_object(body)) {
        nt_api_error(r, 400, "bad_request", "the body must be a JSON object");
        return -1;
    }
    if (nt_api_only_fields(body, top, "", err, sizeof(err)) != 0) {
        nt_api_error(r, 400, "bad_request", "%s", err);
        return -1;
    }
    events = json_object_get(body, "events");
    if (!json_is_array(events)) {
        nt_api_error(r, 400, "bad_request", "field 'events' must be an array");
        return -1;
    }
    if (json_array_size(events) > WEBHOOK_MAX_EVENTS) {
        nt_api_error(r, 413, "too_large", "field 'events' has %zu entries, more than %d",
                     json_array_size(events), WEBHOOK_MAX_EVENTS);
        return -1;
    }
    c->n = json_array_size(events);
    c->ev = calloc(c->n ? c->n : 1, sizeof(*c->ev));
    if (!c->ev) {
        nt_api_error(r, 500, "internal", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < c->n; i++) {
        json_t *e = json_array_get(events, i);
        hook_ev_t *h = &c->ev[i];
        size_t k;

        snprintf(prefix, sizeof(prefix), "events[%zu].", i);
        if (!json_is_object(e)) {
            nt_api_error(r, 400, "bad_request", "events[%zu] must be an object", i);
            return -1;
        }
        if (nt_api_only_fields(e, fields, prefix, err, sizeof(err)) != 0) {
            nt_api_error(r, 400, "bad_request", "%s", err);
            return -1;
        }
        h->type = json_string_value(json_object_get(e, "type"));
        h->message = json_string_value(json_object_get(e, "message"));
        h->bounce = json_string_value(json_object_get(e, "bounce"));
        h->reason = json_string_value(json_object_get(e, "reason"));
        h->slot = -1;
        for (k = 0; h->type && types[k] && strcmp(types[k], h->type) != 0; k++)
            ;
        if (!h->type || !types[k]) {
            nt_api_error(r, 400, "bad_request",
                         "%stype must be delivered, deferred, bounced, complaint or unsubscribe",
                         prefix);
            return -1;
        }
        if (!h->message || !h->message[0] || strlen(h->message) > NT_TRACK_MSGID_MAX ||
            strlen(h->message) != json_string_length(json_object_get(e, "message"))) {
            nt_api_error(r, 400, "bad_request",
                         "%smessage must be the message's id (1 to %d bytes)", prefix,
                         NT_TRACK_MSGID_MAX);
            return -1;
        }
        if (json_object_get(e, "bounce") &&
            (!h->bounce || strcmp(h->type, "bounced") != 0 ||
             (strcmp(h->bounce, "hard") != 0 && strcmp(h->bounce, "soft") != 0))) {
            nt_api_error(r, 400, "bad_request",
                         "%sbounce must be \"hard\" or \"soft\", and only for type bounced",
                         prefix);
            return -1;
        }
        if (strcmp(h->type, "bounced") == 0 && !h->bounce) {
            nt_api_error(r, 400, "bad_request", "%sbounce (hard or soft) is missing", prefix);
            return -1;
        }
        if (json_object_get(e, "reason") &&
            (!h->reason || strlen(h->reason) > 500 ||
             strlen(h->reason) != json_string_length(json_object_get(e, "reason")))) {
            nt_api_error(r, 400, "bad_request", "%sreason must be a string of at most 500 bytes",
                         prefix);
            return -1;
        }
        /* The lead is the message id's part before the first ':' (<lead>:<plan>:<node>:<visit>). */
        {
            const char *colon = strchr(h->message, ':');
            size_t ll = colon ? (size_t)(colon - h->message) : 0;

            if (ll > 0 && ll < sizeof(h->lead)) {
                memcpy(h->lead, h->message, ll);
                h->lead[ll] = '\0';
                if (!nt_lead_id_valid(h->lead))
                    h->lead[0] = '\0';
            }
        }
    }
    return 0;
}

static void on_hook_applied(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    hook_ctx_t *c = r->ctx;
    json_t *unknown = json_array();
    size_t applied = 0, already = 0;

    (void)n;
    (void)arg;
    if (rc != NT_OK) {
        /* Some events may be in: the provider retries, and every kind is idempotent enough
         * (marks are set once; a repeated delivered/deferred event moves nothing new). */
        json_decref(unknown);
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    if (!unknown) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        hook_ev_t *h = &c->ev[i];
        const char *st = NULL;

        if (h->slot >= 0 && nt_api_script_reply_ok(rep[h->slot], 1, "email_feedback"))
            st = rep[h->slot]->element[0]->str;
        if (st && strcmp(st, "ok") == 0) {
            applied++;
            if (r->d.worker)
                nt_worker_wake(r->d.worker, nt_partition(h->lead, r->d.cfg->partitions));
        } else if (st && strcmp(st, "already") == 0) {
            already++;
        } else {
            json_array_append_new(unknown, json_pack("{s:I,s:s,s:s}", "index", (json_int_t)i,
                                                     "message", h->message, "error",
                                                     st ? "unknown message" : "not applied"));
        }
    }
    nt_api_reply_json(r, 200, json_pack("{s:I,s:I,s:o}", "applied", (json_int_t)applied,
                                        "already", (json_int_t)already, "unknown", unknown));
}

static void on_hook_fresh(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    hook_ctx_t *c = r->ctx;
    nt_api_batch_t *b;

    (void)n;
    (void)arg;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    if (!rep[0] || rep[0]->type != REDIS_REPLY_STATUS) {
        nt_api_error(r, 409, "conflict", "this signature was used before (a replay)");
        return;
    }
    for (size_t i = 0; i < c->n; i++)
        if (c->ev[i].lead[0])
            c->ev[i].slot = (int)c->nsent++;
    b = nt_api_batch_new(r, c->nsent, on_hook_applied, NULL);
    if (!b) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        hook_ev_t *h = &c->ev[i];
        nt_api_argv_t a = {0};

        if (h->slot < 0)
            continue;
        feedback_args(&a, r->d.cfg, h->lead, h->type, h->message, "provider", h->bounce,
                      h->reason);
        if (nt_api_argv_failed(&a)) {
            nt_api_argv_fini(&a);
            nt_api_error(r, 500, "internal", "out of memory");
            break;
        }
        nt_api_batch_script(b, (size_t)h->slot, "email_feedback", 2, a.n, (const char **)a.v,
                            a.len);
        nt_api_argv_fini(&a);
    }
    nt_api_batch_go(b);
}

void nt_api_webhook_email(nt_api_req_t *r)
{
    char sig[65];
    hook_ctx_t *c;
    json_t *root = NULL;

    if (nt_api_webhook_signed(r, sig) != 0)
        return;
    c = nt_api_ctx_new(r, sizeof(*c), hook_ctx_free);
    if (!c)
        return;
    if (webhook_parse(r, c, &root) != 0) {
        json_decref(root);
        return;
    }
    /* The events point into the body: keep it for the request's life. */
    r->body = root;
    if (nt_api_need_redis(r))
        return;
    nt_api_webhook_fresh(r, sig, on_hook_fresh, NULL);
}

void nt_api_webhook_fresh(nt_api_req_t *r, const char *sig, nt_api_batch_fn *done, void *arg)
{
    char key[96];
    const char *argv[6];

    /* Replays: a signature is accepted once within twice the tolerance. */
    snprintf(key, sizeof(key), "nt:webhook:sig:%s", sig);
    argv[0] = "SET";
    argv[1] = key;
    argv[2] = "1";
    argv[3] = "NX";
    argv[4] = "PX";
    argv[5] = "600000";
    nt_api_command(r, 6, argv, done, arg);
}
