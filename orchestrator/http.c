/* The HTTP API server: evhttp with one generic callback that routes by path, authenticates by
 * bearer token, enforces body limits and content types, parses JSON strictly, and hands the
 * request to a route handler (api_*.c). Replies, Redis batches and shared parsing helpers live
 * here too (api.h). Contract: docs/api.md. */
#include "http.h"

#include <ctype.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sys/queue.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "api.h"
#include "log.h"
#include "metrics.h"

typedef struct token_hash {
    unsigned char sha[SHA256_DIGEST_LENGTH];
    int role;
    const char *name;
} token_hash_t;

struct nt_http {
    nt_http_deps_t d;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    token_hash_t *tokens;
    size_t ntokens;
    nt_api_req_t *inflight;
    /* Big bodies: the request being served and those waiting, oldest first (see "Big
     * bodies" below). */
    int big_busy;
    nt_api_req_t *big_head, *big_tail;
    struct event *big_ev;
};

/* --- Routes ---------------------------------------------------------------------------------- */

enum { BODY_NONE = 0, BODY_JSON = 1, BODY_PROTO = 2, BODY_RAW = 3 /* any type, max-body */ };

typedef void handler_fn(nt_api_req_t *r);

static void health(nt_api_req_t *r);
static void metrics(nt_api_req_t *r);
struct route;
static void serve(nt_api_req_t *r, const struct route *rt);

typedef struct route {
    enum evhttp_cmd_type method;
    const char *pattern; /* segments; "*" matches any one */
    int roles;           /* 0: no authentication */
    int body;
    handler_fn *fn;
} route_t;

#define ALL_ROLES (NT_API_ROLE_OPS | NT_API_ROLE_REP | NT_API_ROLE_WEBHOOK)
/* JSON bodies from this size on are served one at a time (see "Big bodies"). */
#define NT_BIG_BODY (256 * 1024)

static const route_t routes[] = {
    {EVHTTP_REQ_GET, "/health", 0, BODY_NONE, health},
    {EVHTTP_REQ_GET, "/metrics", NT_API_ROLE_OPS, BODY_NONE, metrics},
    {EVHTTP_REQ_POST, "/v1/leads", NT_API_ROLE_OPS, BODY_JSON, nt_api_leads_post},
    {EVHTTP_REQ_GET, "/v1/leads/*", NT_API_ROLE_OPS | NT_API_ROLE_REP, BODY_NONE, nt_api_leads_get},
    {EVHTTP_REQ_PATCH, "/v1/leads/*", NT_API_ROLE_OPS, BODY_JSON, nt_api_leads_patch},
    {EVHTTP_REQ_POST, "/v1/leads/*/enrol", NT_API_ROLE_OPS, BODY_JSON, nt_api_leads_enrol},
    {EVHTTP_REQ_POST, "/v1/events", ALL_ROLES, BODY_JSON, nt_api_events_post},
    {EVHTTP_REQ_POST, "/v1/plans", NT_API_ROLE_OPS, BODY_PROTO, nt_api_plans_publish},
    {EVHTTP_REQ_GET, "/v1/plans", NT_API_ROLE_OPS, BODY_NONE, nt_api_plans_list},
    {EVHTTP_REQ_GET, "/v1/plans/*", NT_API_ROLE_OPS, BODY_NONE, nt_api_plans_get},
    {EVHTTP_REQ_POST, "/v1/plans/*/enrol", NT_API_ROLE_OPS, BODY_JSON, nt_api_bulk_enrol},
    {EVHTTP_REQ_POST, "/v1/plans/*/activate", NT_API_ROLE_OPS, BODY_JSON, nt_api_plans_activate},
    {EVHTTP_REQ_GET, "/v1/plans/*/stats", NT_API_ROLE_OPS, BODY_NONE, nt_api_plans_stats},
    {EVHTTP_REQ_POST, "/v1/webhooks/email", NT_API_ROLE_WEBHOOK, BODY_RAW, nt_api_webhook_email},
    {EVHTTP_REQ_POST, "/v1/webhooks/webinar", NT_API_ROLE_WEBHOOK, BODY_RAW,
     nt_api_webhook_webinar},
    {EVHTTP_REQ_POST, "/v1/webhooks/event", NT_API_ROLE_WEBHOOK, BODY_RAW, nt_api_webhook_event},
    {EVHTTP_REQ_GET, "/v1/tasks", NT_API_ROLE_OPS | NT_API_ROLE_REP, BODY_NONE, nt_api_tasks_list},
    {EVHTTP_REQ_GET, "/v1/tasks/*", NT_API_ROLE_OPS | NT_API_ROLE_REP, BODY_NONE, nt_api_tasks_get},
    {EVHTTP_REQ_POST, "/v1/tasks/*/claim", NT_API_ROLE_OPS | NT_API_ROLE_REP, BODY_NONE,
     nt_api_tasks_claim},
    {EVHTTP_REQ_POST, "/v1/tasks/*/complete", NT_API_ROLE_OPS | NT_API_ROLE_REP, BODY_JSON,
     nt_api_tasks_complete},
    {EVHTTP_REQ_POST, "/v1/tasks/*/reassign", NT_API_ROLE_OPS | NT_API_ROLE_REP, BODY_JSON,
     nt_api_tasks_reassign},
    {EVHTTP_REQ_GET, "/v1/reps/*", NT_API_ROLE_OPS | NT_API_ROLE_REP, BODY_NONE, nt_api_reps_get},
    {EVHTTP_REQ_PATCH, "/v1/reps/*", NT_API_ROLE_OPS | NT_API_ROLE_REP, BODY_JSON,
     nt_api_reps_patch},
    /* Signed links in messages: the token is the authority, no bearer token (api_track.c). */
    {EVHTTP_REQ_GET, "/t/c/*", 0, BODY_NONE, nt_api_track_click},
    {EVHTTP_REQ_HEAD, "/t/c/*", 0, BODY_NONE, nt_api_track_click},
    {EVHTTP_REQ_GET, "/t/o/*", 0, BODY_NONE, nt_api_track_open},
    {EVHTTP_REQ_HEAD, "/t/o/*", 0, BODY_NONE, nt_api_track_open},
    /* RSVP links of event invitations (api_event_checkin.c). */
    {EVHTTP_REQ_GET, "/t/r/*", 0, BODY_NONE, nt_api_rsvp_page},
    {EVHTTP_REQ_HEAD, "/t/r/*", 0, BODY_NONE, nt_api_rsvp_page},
    {EVHTTP_REQ_POST, "/t/r/*", 0, BODY_RAW, nt_api_rsvp},
    {EVHTTP_REQ_GET, "/t/u/*", 0, BODY_NONE, nt_api_track_unsub_page},
    {EVHTTP_REQ_HEAD, "/t/u/*", 0, BODY_NONE, nt_api_track_unsub_page},
    {EVHTTP_REQ_POST, "/t/u/*", 0, BODY_RAW, nt_api_track_unsub},
    /* The rep's inbox page: the rep's token goes with the page's API calls (api_inbox.c). */
    {EVHTTP_REQ_GET, "/inbox", 0, BODY_NONE, nt_api_inbox},
    {EVHTTP_REQ_HEAD, "/inbox", 0, BODY_NONE, nt_api_inbox},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "?";
}

/* Non-zero when the decoded segments match the pattern. */
static int route_match(const route_t *rt, char **seg, size_t nseg)
{
    const char *p = rt->pattern + 1;
    size_t i = 0;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (i >= nseg)
            return 0;
        if (!(len == 1 && p[0] == '*') && (strlen(seg[i]) != len || memcmp(seg[i], p, len)))
            return 0;
        i++;
        p += len;
        if (*p == '/')
            p++;
    }
    return i == nseg;
}

static const char *status_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 302:
        return "Found";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    }
    return "Unknown";
}

/* --- Request lifecycle ------------------------------------------------------------------------ */

static void req_free(nt_api_req_t *r)
{
    if (r->h) {
        if (r->prev)
            r->prev->next = r->next;
        else
            r->h->inflight = r->next;
        if (r->next)
            r->next->prev = r->prev;
    }
    if (r->ctx && r->ctx_free)
        r->ctx_free(r->ctx);
    for (size_t i = 0; i < r->nseg; i++)
        free(r->seg[i]);
    free(r->seg);
    free(r->query);
    json_decref(r->body);
    if (r->big) {
        /* The parsed body of a bulk request is hundreds of thousands of small jansson chunks,
         * freed here between the worker's long-lived ones: glibc gives back by itself only
         * what is at the top of the heap, malloc_trim the whole free pages in between too. */
        malloc_trim(0);
        if (r->h) {
            r->h->big_busy = 0;
            if (r->h->big_head)
                event_active(r->h->big_ev, 0, 0);
        }
    }
    free(r);
}

void nt_api_ref(nt_api_req_t *r)
{
    r->refs++;
}

void nt_api_unref(nt_api_req_t *r)
{
    if (--r->refs == 0)
        req_free(r);
}

/* The client connection closed before the reply: libevent frees the request right after. */
static void on_conn_close(struct evhttp_connection *conn, void *arg)
{
    nt_api_req_t *r = arg;
    evhttp_connection_set_closecb(conn, NULL, NULL);
    if (r->finished)
        return;
    r->finished = 1;
    r->req = NULL;
    r->conn = NULL;
    r->raw = NULL;
    r->rawlen = 0;
    nt_api_unref(r);
}

static void send_reply(nt_api_req_t *r, int status, const char *ctype, const char *data, size_t len)
{
    if (r->finished)
        return;
    r->finished = 1;
    struct evhttp_request *req = r->req;
    r->req = NULL;
    r->raw = NULL;
    r->rawlen = 0;
    if (r->conn)
        evhttp_connection_set_closecb(r->conn, NULL, NULL);
    r->conn = NULL;
    nt_metrics.http_requests++;
    if (status >= 400)
        nt_metrics.http_errors++;
    struct evbuffer *out = evbuffer_new();
    if (out && req) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
        evbuffer_add(out, data, len);
        evhttp_send_reply(req, status, status_reason(status), out);
    } else if (req) {
        evhttp_send_error(req, 500, NULL);
    }
    if (out)
        evbuffer_free(out);
    nt_api_unref(r);
}

void nt_api_reply_raw(nt_api_req_t *r, int status, const char *ctype, const void *data, size_t len)
{
    send_reply(r, status, ctype, data, len);
}

void nt_api_body_done(nt_api_req_t *r)
{
    json_decref(r->body);
    r->body = NULL;
}

void nt_api_page(nt_api_req_t *r, int status, const char *title, const char *text,
                 const char *action, const char *fields)
{
    char *html = NULL;
    int n = asprintf(&html,
                     "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                     "<meta name=\"viewport\" content=\"width=device-width\">\n"
                     "<meta name=\"robots\" content=\"noindex\">\n<title>%s</title>\n</head>\n"
                     "<body style=\"font-family: Arial, Helvetica, sans-serif; max-width: 32em; "
                     "margin: 3em auto; padding: 0 1em; line-height: 1.5;\">\n<h1>%s</h1>\n"
                     "<p>%s</p>\n%s%s%s%s%s</body>\n</html>\n",
                     title, title, text, action ? "<form method=\"post\" action=\"" : "",
                     action ? action : "", action ? "\">\n" : "", action && fields ? fields : "",
                     action ? "</form>\n" : "");

    if (n < 0) {
        send_reply(r, 500, "text/plain; charset=utf-8", "out of memory\n", 14);
        return;
    }
    nt_api_header_out(r, "Cache-Control", "no-store");
    nt_api_header_out(r, "Referrer-Policy", "no-referrer");
    send_reply(r, status, "text/html; charset=utf-8", html, (size_t)n);
    free(html);
}

void nt_api_header_out(nt_api_req_t *r, const char *name, const char *value)
{
    if (r->req && !r->finished)
        evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

const char *nt_api_header_in(const nt_api_req_t *r, const char *name)
{
    if (!r->req || r->finished)
        return NULL;
    return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
}

int nt_api_is_head(const nt_api_req_t *r)
{
    return r->req && evhttp_request_get_command(r->req) == EVHTTP_REQ_HEAD;
}

void nt_api_reply_json(nt_api_req_t *r, int status, json_t *body)
{
    if (r->finished) {
        json_decref(body);
        return;
    }
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        send_reply(r, 500, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    send_reply(r, status, "application/json", text, strlen(text));
    free(text);
}

void nt_api_error_json(nt_api_req_t *r, int status, json_t *body)
{
    nt_api_reply_json(r, status, body);
}

void nt_api_error(nt_api_req_t *r, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    nt_api_reply_json(r, status, json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg));
}

void nt_api_error_rc(nt_api_req_t *r, nt_rc_t rc, const char *what)
{
    switch (rc) {
    case NT_ENOTFOUND:
        nt_api_error(r, 404, "not_found", "%s", what ? what : "not found");
        break;
    case NT_EUNAVAIL:
    case NT_ETIMEOUT:
    case NT_ECANCELED:
        nt_api_error(r, 503, "unavailable", "Redis is unavailable (%s); nothing was written",
                     nt_strerror(rc));
        break;
    default:
        nt_log_error("http", "internal error: %s", nt_strerror(rc));
        nt_api_error(r, 500, "internal", "internal error: %s", nt_strerror(rc));
        break;
    }
}

int nt_api_need_redis(nt_api_req_t *r)
{
    if (nt_redis_up(r->d.redis))
        return 0;
    nt_api_error(r, 503, "unavailable", "Redis is unavailable; nothing was written");
    return 1;
}

char *nt_api_query(const nt_api_req_t *r, const char *name)
{
    if (!r->query)
        return NULL;
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    if (evhttp_parse_query_str(r->query, &q) != 0) {
        evhttp_clear_headers(&q);
        return NULL;
    }
    const char *v = evhttp_find_header(&q, name);
    char *out = v ? strdup(v) : NULL;
    evhttp_clear_headers(&q);
    return out;
}

void *nt_api_ctx_new(nt_api_req_t *r, size_t size, void (*ctx_free)(void *))
{
    void *c = calloc(1, size);
    if (!c) {
        nt_api_error(r, 500, "internal", "out of memory");
        return NULL;
    }
    r->ctx = c;
    r->ctx_free = ctx_free;
    return c;
}

int nt_api_path_plan_id(nt_api_req_t *r)
{
    if (nt_api_plan_id_valid(r->seg[2]))
        return 0;
    nt_api_error(r, 400, "bad_request",
                 "the plan id in the path is not valid (1 to 64 of a-z 0-9 _ -)");
    return -1;
}

int nt_api_path_lead_id(nt_api_req_t *r)
{
    if (nt_lead_id_valid(r->seg[2]))
        return 0;
    nt_api_error(r, 400, "bad_request",
                 "the lead id in the path is not valid (1 to 128 of A-Z a-z 0-9 . _ @ + -)");
    return -1;
}

/* --- Batches --------------------------------------------------------------------------------- */

struct nt_api_batch {
    nt_api_req_t *r;
    size_t n;
    int outstanding; /* issued and unanswered, plus one until go */
    nt_rc_t rc;
    nt_api_batch_fn *done;
    void *arg;
    redisReply **replies;
    struct slot {
        struct nt_api_batch *b;
        size_t i;
    } * slots;
};

static redisReply *reply_dup(const redisReply *src)
{
    redisReply *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->type = src->type;
    d->integer = src->integer;
    if (src->str) {
        d->str = malloc(src->len + 1);
        if (!d->str) {
            free(d);
            return NULL;
        }
        memcpy(d->str, src->str, src->len);
        d->str[src->len] = '\0';
        d->len = src->len;
    }
    if (src->type == REDIS_REPLY_ARRAY && src->elements) {
        d->element = calloc(src->elements, sizeof(*d->element));
        if (!d->element) {
            freeReplyObject(d);
            return NULL;
        }
        d->elements = src->elements;
        for (size_t i = 0; i < src->elements; i++) {
            if (!src->element[i])
                continue;
            d->element[i] = reply_dup(src->element[i]);
            if (!d->element[i]) {
                freeReplyObject(d);
                return NULL;
            }
        }
    }
    return d;
}

nt_api_batch_t *nt_api_batch_new(nt_api_req_t *r, size_t n, nt_api_batch_fn *done, void *arg)
{
    nt_api_batch_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->replies = calloc(n ? n : 1, sizeof(*b->replies));
    b->slots = calloc(n ? n : 1, sizeof(*b->slots));
    if (!b->replies || !b->slots) {
        free(b->replies);
        free(b->slots);
        free(b);
        return NULL;
    }
    b->r = r;
    b->n = n;
    b->outstanding = 1;
    b->done = done;
    b->arg = arg;
    nt_api_ref(r);
    return b;
}

static void batch_release(nt_api_batch_t *b)
{
    if (--b->outstanding > 0)
        return;
    nt_api_req_t *r = b->r;
    if (!r->finished)
        b->done(r, b->rc, b->replies, b->n, b->arg);
    for (size_t i = 0; i < b->n; i++)
        if (b->replies[i])
            freeReplyObject(b->replies[i]);
    free(b->replies);
    free(b->slots);
    free(b);
    nt_api_unref(r);
}

static void batch_cb(nt_rc_t rc, redisReply *reply, void *arg)
{
    struct slot *s = arg;
    nt_api_batch_t *b = s->b;
    if (rc == NT_OK && reply) {
        b->replies[s->i] = reply_dup(reply);
        if (!b->replies[s->i] && b->rc == NT_OK)
            b->rc = NT_ENOMEM;
    } else if (b->rc == NT_OK) {
        b->rc = rc == NT_OK ? NT_ERR : rc;
    }
    batch_release(b);
}

static void batch_issued(nt_api_batch_t *b, size_t i, nt_rc_t rc)
{
    if (rc == NT_OK)
        b->outstanding++;
    else if (b->rc == NT_OK)
        b->rc = rc;
}

void nt_api_batch_argv(nt_api_batch_t *b, size_t i, int argc, const char **argv, const size_t *lens)
{
    if (b->rc != NT_OK || b->r->finished)
        return;
    b->slots[i].b = b;
    b->slots[i].i = i;
    batch_issued(b, i, nt_redis_argv(b->r->d.redis, batch_cb, &b->slots[i], argc, argv, lens));
}

void nt_api_batch_script(nt_api_batch_t *b, size_t i, const char *name, int nkeys, int argc,
                         const char **argv, const size_t *lens)
{
    if (b->rc != NT_OK || b->r->finished)
        return;
    b->slots[i].b = b;
    b->slots[i].i = i;
    batch_issued(
        b, i,
        nt_redis_script(b->r->d.redis, name, batch_cb, &b->slots[i], nkeys, argc, argv, lens));
}

void nt_api_batch_go(nt_api_batch_t *b)
{
    batch_release(b);
}

void nt_api_command(nt_api_req_t *r, int argc, const char **argv, nt_api_batch_fn *done, void *arg)
{
    nt_api_batch_t *b = nt_api_batch_new(r, 1, done, arg);
    if (!b) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    nt_api_batch_argv(b, 0, argc, argv, NULL);
    nt_api_batch_go(b);
}

void nt_api_script(nt_api_req_t *r, const char *name, int nkeys, nt_api_argv_t *a,
                   nt_api_batch_fn *done, void *arg)
{
    nt_api_batch_t *b = nt_api_batch_new(r, 1, done, arg);
    if (!b || nt_api_argv_failed(a)) {
        nt_api_argv_fini(a);
        nt_api_error(r, 500, "internal", "out of memory");
        if (b)
            nt_api_batch_go(b);
        return;
    }
    nt_api_batch_script(b, 0, name, nkeys, a->n, (const char **)a->v, a->len);
    nt_api_argv_fini(a);
    nt_api_batch_go(b);
}

int nt_api_script_reply_ok(const redisReply *x, size_t min, const char *script)
{
    if (x && x->type == REDIS_REPLY_ARRAY && x->elements > 0 && x->elements >= min &&
        x->element[0]->type == REDIS_REPLY_STRING)
        return 1;
    nt_log_error("http", "%s: %s", script,
                 x && x->type == REDIS_REPLY_ERROR ? x->str : "unexpected reply");
    return 0;
}

/* --- Replies --------------------------------------------------------------------------------- */

const char *nt_api_flat_str(const redisReply *flat, const char *name)
{
    if (!flat || flat->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < flat->elements; i += 2)
        if (flat->element[i]->type == REDIS_REPLY_STRING &&
            strcmp(flat->element[i]->str, name) == 0 &&
            flat->element[i + 1]->type == REDIS_REPLY_STRING)
            return flat->element[i + 1]->str;
    return NULL;
}

int64_t nt_api_flat_int(const redisReply *flat, const char *name, int64_t def)
{
    const char *v = nt_api_flat_str(flat, name);
    return v ? strtoll(v, NULL, 10) : def;
}

/* --- argv ------------------------------------------------------------------------------------ */

static int argv_grow(nt_api_argv_t *a)
{
    if (a->n < a->cap)
        return 0;
    if (a->cap < 0)
        return -1;
    int cap = a->cap ? a->cap * 2 : 16;
    char **v = realloc(a->v, (size_t)cap * sizeof(*v));
    if (!v)
        goto fail;
    a->v = v;
    size_t *len = realloc(a->len, (size_t)cap * sizeof(*len));
    if (!len)
        goto fail;
    a->len = len;
    a->cap = cap;
    return 0;
fail:
    a->cap = -1; /* failed: every later add is ignored */
    return -1;
}

void nt_api_argv_addb(nt_api_argv_t *a, const void *s, size_t len)
{
    if (argv_grow(a) != 0)
        return;
    char *c = malloc(len + 1);
    if (!c) {
        a->cap = -1;
        return;
    }
    memcpy(c, s, len);
    c[len] = '\0';
    a->v[a->n] = c;
    a->len[a->n] = len;
    a->n++;
}

void nt_api_argv_add(nt_api_argv_t *a, const char *s)
{
    nt_api_argv_addb(a, s, strlen(s));
}

void nt_api_argv_addf(nt_api_argv_t *a, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        a->cap = -1;
        return;
    }
    nt_api_argv_addb(a, s, (size_t)n);
    free(s);
}

int nt_api_argv_failed(const nt_api_argv_t *a)
{
    return a->cap < 0;
}

void nt_api_argv_fini(nt_api_argv_t *a)
{
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    free(a->len);
    memset(a, 0, sizeof(*a));
}

/* --- Built-in routes ------------------------------------------------------------------------ */

static void health(nt_api_req_t *r)
{
    int up = nt_redis_up(r->d.redis);
    json_t *w = r->d.worker ? nt_worker_health(r->d.worker) : json_null();
    nt_api_reply_json(r, up ? 200 : 503,
                      json_pack("{s:s,s:s,s:o}", "status", up ? "ok" : "degraded", "redis",
                                up ? "up" : "down", "worker", w ? w : json_null()));
}

/* Big bodies waiting for their turn, the client still there. */
static size_t big_waiting(const nt_http_t *h)
{
    size_t n = 0;
    for (const nt_api_req_t *q = h ? h->big_head : NULL; q; q = q->qnext)
        n += !q->finished;
    return n;
}

static void metrics(nt_api_req_t *r)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        nt_api_error(r, 500, "internal", "cannot write metrics");
        return;
    }
    nt_metrics_write(f);
    fprintf(f,
            "# HELP nt_redis_commands_total Redis commands sent.\n"
            "# TYPE nt_redis_commands_total counter\n"
            "nt_redis_commands_total %llu\n"
            "# HELP nt_redis_roundtrips_total Redis round trips.\n"
            "# TYPE nt_redis_roundtrips_total counter\n"
            "nt_redis_roundtrips_total %llu\n"
            "# HELP nt_redis_up Whether Redis is connected.\n"
            "# TYPE nt_redis_up gauge\n"
            "nt_redis_up %d\n"
            "# HELP nt_http_big_bodies_waiting Big request bodies waiting for their turn.\n"
            "# TYPE nt_http_big_bodies_waiting gauge\n"
            "nt_http_big_bodies_waiting %zu\n",
            (unsigned long long)nt_redis_commands(r->d.redis),
            (unsigned long long)nt_redis_roundtrips(r->d.redis), nt_redis_up(r->d.redis) ? 1 : 0,
            big_waiting(r->h));
    fclose(f);
    send_reply(r, 200, "text/plain; version=0.0.4", text, len);
    free(text);
}

/* --- Dispatch -------------------------------------------------------------------------------- */

/* Split the raw path into percent-decoded segments. Returns 0, or -1 (bad encoding, NUL). */
static int split_path(const char *path, char ***segs, size_t *nsegs)
{
    *segs = NULL;
    *nsegs = 0;
    if (!path || path[0] != '/')
        return -1;
    size_t n = 1;
    for (const char *p = path + 1; *p; p++)
        n += *p == '/';
    if (strcmp(path, "/") == 0)
        n = 0;
    char **v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return -1;
    const char *p = path + 1;
    for (size_t i = 0; i < n; i++) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        char *raw = strndup(p, len);
        size_t dlen = 0;
        char *dec = raw ? evhttp_uridecode(raw, 0, &dlen) : NULL;
        free(raw);
        if (!dec || strlen(dec) != dlen) {
            free(dec);
            for (size_t j = 0; j < i; j++)
                free(v[j]);
            free(v);
            return -1;
        }
        v[i] = dec;
        p += len + (slash ? 1 : 0);
    }
    *segs = v;
    *nsegs = n;
    return 0;
}

/* The role of the bearer token, 0 when none matches. Every token is compared in constant time
 * (over SHA-256 digests, so lengths leak nothing either). */
static int authenticate(nt_http_t *h, struct evhttp_request *req, const char **who)
{
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return 0;
    const char *tok = auth + 7;
    while (*tok == ' ')
        tok++;
    size_t len = strlen(tok);
    while (len && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
        len--;
    if (len == 0)
        return 0;
    unsigned char sha[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)tok, len, sha);
    int role = 0;
    for (size_t i = 0; i < h->ntokens; i++) {
        int eq = CRYPTO_memcmp(sha, h->tokens[i].sha, sizeof(sha)) == 0;
        if (eq && !role) {
            role = h->tokens[i].role;
            *who = h->tokens[i].name;
        }
    }
    return role;
}

static int content_type_is(struct evhttp_request *req, const char *want)
{
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    if (!ct)
        return -1;
    size_t n = strlen(want);
    if (strncasecmp(ct, want, n) != 0)
        return 0;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

static void on_request(struct evhttp_request *req, void *arg)
{
    nt_http_t *h = arg;
    nt_api_req_t *r = calloc(1, sizeof(*r));
    if (!r) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    r->d = h->d;
    r->h = h;
    r->req = req;
    r->conn = evhttp_request_get_connection(req);
    r->refs = 1; /* the pending reply */
    r->next = h->inflight;
    if (r->next)
        r->next->prev = r;
    h->inflight = r;
    if (r->conn)
        evhttp_connection_set_closecb(r->conn, on_conn_close, r);

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (query) {
        r->query = strdup(query);
        if (!r->query) {
            nt_api_error(r, 500, "internal", "out of memory");
            return;
        }
    }
    if (split_path(path, &r->seg, &r->nseg) != 0) {
        nt_api_error(r, 400, "bad_request", "the path is not valid (bad escape or NUL byte)");
        return;
    }

    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const route_t *rt = NULL;
    int path_known = 0;
    char allow[128] = "";
    for (size_t i = 0; i < NROUTES; i++) {
        if (!route_match(&routes[i], r->seg, r->nseg))
            continue;
        path_known = 1;
        if (routes[i].method == method) {
            rt = &routes[i];
            break;
        }
        if (allow[0])
            strncat(allow, ", ", sizeof(allow) - strlen(allow) - 1);
        strncat(allow, method_name(routes[i].method), sizeof(allow) - strlen(allow) - 1);
    }
    if (!rt) {
        if (path_known) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
            nt_api_error(r, 405, "method_not_allowed", "%s is not allowed on %s (allowed: %s)",
                         method_name(method), path, allow);
        } else {
            nt_api_error(r, 404, "not_found", "no route %s %s", method_name(method),
                         path ? path : "?");
        }
        return;
    }

    if (rt->roles) {
        const char *who = NULL;
        int role = authenticate(h, req, &who);
        if (!role) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
            nt_api_error(r, 401, "unauthorized", "a valid bearer token is required");
            return;
        }
        if (!(role & rt->roles) && !(role & NT_API_ROLE_OPS)) {
            nt_api_error(r, 403, "forbidden", "this token's role may not %s %s",
                         method_name(method), rt->pattern);
            return;
        }
        r->role = role;
        r->who = who;
    }

    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = in ? evbuffer_get_length(in) : 0;
    if (rt->body == BODY_JSON && len >= NT_BIG_BODY && len <= h->d.cfg->max_body) {
        if (h->big_busy) {
            r->route = rt;
            nt_api_ref(r); /* the queue's */
            if (h->big_tail)
                h->big_tail->qnext = r;
            else
                h->big_head = r;
            h->big_tail = r;
            return;
        }
        h->big_busy = 1;
        r->big = 1;
    }
    serve(r, rt);
}

/* Big bodies. A bulk request's parsed JSON takes about ten times its size in memory (a
 * 1 MB enrolment of 10,000 leads: some 7 MB of jansson values, and its Redis commands on top),
 * so a few of them at once would set nurtured's peak RSS by how many clients send in
 * parallel. Bodies of NT_BIG_BODY bytes or more are served one at a time, in arrival order;
 * the others wait unparsed (as libevent read them). Redis is the bottleneck of bulk work in
 * any case, so nothing is slower for it. */
static void on_big_turn(evutil_socket_t fd, short what, void *arg)
{
    nt_http_t *h = arg;
    (void)fd;
    (void)what;
    while (!h->big_busy && h->big_head) {
        nt_api_req_t *r = h->big_head;
        h->big_head = r->qnext;
        if (!h->big_head)
            h->big_tail = NULL;
        r->qnext = NULL;
        if (!r->finished) { /* else the client left while it waited */
            h->big_busy = 1;
            r->big = 1;
            serve(r, r->route);
        }
        nt_api_unref(r); /* the queue's */
    }
}

/* Parse the body the route takes and call its handler. */
static void serve(nt_api_req_t *r, const route_t *rt)
{
    nt_http_t *h = r->h;
    struct evhttp_request *req = r->req;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = in ? evbuffer_get_length(in) : 0;
    if (rt->body == BODY_JSON) {
        if (len > h->d.cfg->max_body) {
            nt_api_error(r, 413, "too_large", "the body has %zu bytes, more than max-body %zu", len,
                         h->d.cfg->max_body);
            return;
        }
        if (content_type_is(req, "application/json") == 0) {
            nt_api_error(r, 415, "unsupported_media_type",
                         "the body must be JSON (Content-Type: application/json)");
            return;
        }
        if (len == 0) {
            nt_api_error(r, 400, "bad_json", "the body is empty; a JSON object is expected");
            return;
        }
        const char *data = (const char *)evbuffer_pullup(in, -1);
        json_error_t jerr;
        json_t *body = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (!body) {
            nt_api_error(r, 400, "bad_json", "malformed JSON at line %d column %d: %s", jerr.line,
                         jerr.column, jerr.text);
            return;
        }
        if (!json_is_object(body)) {
            json_decref(body);
            nt_api_error(r, 400, "bad_request", "the body must be a JSON object");
            return;
        }
        r->body = body;
    } else if (rt->body == BODY_PROTO) {
        if (len > h->d.cfg->max_plan_body) {
            nt_api_error(r, 413, "too_large", "the body has %zu bytes, more than max-plan-body %zu",
                         len, h->d.cfg->max_plan_body);
            return;
        }
        if (content_type_is(req, "application/x-protobuf") != 1 &&
            content_type_is(req, "application/octet-stream") != 1) {
            nt_api_error(r, 415, "unsupported_media_type",
                         "a plan must be binary nt.Workflow (Content-Type: "
                         "application/x-protobuf)");
            return;
        }
        r->raw = len ? evbuffer_pullup(in, -1) : (const unsigned char *)"";
        r->rawlen = len;
    } else if (rt->body == BODY_RAW) {
        if (len > h->d.cfg->max_body) {
            nt_api_error(r, 413, "too_large", "the body has %zu bytes, more than max-body %zu", len,
                         h->d.cfg->max_body);
            return;
        }
        r->raw = len ? evbuffer_pullup(in, -1) : (const unsigned char *)"";
        r->rawlen = len;
    } else if (len > 0 && method != EVHTTP_REQ_GET) {
        nt_api_error(r, 400, "bad_request", "this route takes no body");
        return;
    }
    rt->fn(r);
}

/* --- Server ---------------------------------------------------------------------------------- */

static int role_parse(const char *s)
{
    if (!s)
        return 0;
    if (strcmp(s, "ops") == 0)
        return NT_API_ROLE_OPS;
    if (strcmp(s, "rep") == 0)
        return NT_API_ROLE_REP;
    if (strcmp(s, "webhook") == 0)
        return NT_API_ROLE_WEBHOOK;
    return 0;
}

nt_http_t *nt_http_new(const nt_http_deps_t *deps, char **errmsg)
{
    if (errmsg)
        *errmsg = NULL;
    nt_http_t *h = calloc(1, sizeof(*h));
    if (!h)
        goto oom;
    h->d = *deps;
    const nt_config_t *cfg = deps->cfg;
    h->tokens = calloc(cfg->ntokens ? cfg->ntokens : 1, sizeof(*h->tokens));
    if (!h->tokens)
        goto oom;
    for (size_t i = 0; i < cfg->ntokens; i++) {
        const nt_token_t *t = &cfg->tokens[i];
        int role = role_parse(t->role);
        if (!role || !t->secret || !t->secret[0]) {
            nt_log_warn("http", "token %zu has an unknown role '%s' or no secret: ignored", i,
                        t->role ? t->role : "");
            continue;
        }
        token_hash_t *th = &h->tokens[h->ntokens++];
        SHA256((const unsigned char *)t->secret, strlen(t->secret), th->sha);
        th->role = role;
        th->name = t->name ? t->name : t->role;
    }
    if (h->ntokens == 0)
        nt_log_warn("http", "no API token configured: every authenticated route answers 401");

    h->http = evhttp_new(deps->base);
    if (!h->http)
        goto oom;
    size_t cap = cfg->max_body > cfg->max_plan_body ? cfg->max_body : cfg->max_plan_body;
    evhttp_set_max_body_size(h->http, (ev_ssize_t)(cap + 1));
    evhttp_set_max_headers_size(h->http, 64 * 1024);
    evhttp_set_timeout(h->http, 60);
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(h->http, on_request, h);
    h->big_ev = event_new(deps->base, -1, 0, on_big_turn, h);
    if (!h->big_ev)
        goto oom;
    h->sock = evhttp_bind_socket_with_handle(h->http, cfg->bind, (ev_uint16_t)cfg->port);
    if (!h->sock) {
        if (errmsg && asprintf(errmsg, "cannot listen on %s:%d", cfg->bind, cfg->port) < 0)
            *errmsg = NULL;
        nt_http_free(h);
        return NULL;
    }
    nt_log_info("http", "listening on %s:%d", cfg->bind, cfg->port);
    return h;
oom:
    if (errmsg)
        *errmsg = strdup("out of memory");
    nt_http_free(h);
    return NULL;
}

void nt_http_free(nt_http_t *h)
{
    if (!h)
        return;
    /* Requests in flight: answer 503 now; their Redis callbacks find them finished. */
    nt_api_req_t *r = h->inflight;
    while (r) {
        nt_api_req_t *next = r->next;
        r->h = NULL;
        r->next = r->prev = NULL;
        if (!r->finished)
            nt_api_error(r, 503, "unavailable", "the server is shutting down");
        r = next;
    }
    h->inflight = NULL;
    /* Big bodies still waiting were answered above: drop the queue's references. */
    while (h->big_head) {
        r = h->big_head;
        h->big_head = r->qnext;
        nt_api_unref(r);
    }
    h->big_tail = NULL;
    if (h->big_ev)
        event_free(h->big_ev);
    if (h->http)
        evhttp_free(h->http);
    free(h->tokens);
    free(h);
}

/* --- Shared validation -------------------------------------------------------------------- */

int nt_api_plan_id_valid(const char *id)
{
    size_t n = 0;
    if (!id || !id[0])
        return 0;
    for (; id[n]; n++) {
        unsigned char c = (unsigned char)id[n];
        if (n >= 64)
            return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

int nt_api_event_type_valid(const char *type)
{
    size_t n = 0;
    if (!type || !type[0])
        return 0;
    for (; type[n]; n++) {
        unsigned char c = (unsigned char)type[n];
        if (n >= 64)
            return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

int nt_api_only_fields(json_t *obj, const char *const *allowed, const char *prefix, char *err,
                       size_t errlen)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        int ok = 0;
        for (size_t i = 0; allowed[i]; i++)
            if (strcmp(allowed[i], key) == 0)
                ok = 1;
        if (!ok) {
            char shown[80];
            size_t k = 0;
            for (; key[k] && k < sizeof(shown) - 4; k++)
                shown[k] = isprint((unsigned char)key[k]) ? key[k] : '?';
            shown[k] = '\0';
            if (key[k])
                strcat(shown, "...");
            snprintf(err, errlen, "unknown field '%s%s'", prefix, shown);
            return -1;
        }
    }
    return 0;
}

char *nt_api_value_string(const json_t *v)
{
    char *s = NULL;
    switch (json_typeof(v)) {
    case JSON_STRING:
        return strndup(json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        if (asprintf(&s, "%" JSON_INTEGER_FORMAT, json_integer_value(v)) < 0)
            return NULL;
        return s;
    case JSON_REAL:
        if (asprintf(&s, "%.17g", json_real_value(v)) < 0)
            return NULL;
        return s;
    case JSON_TRUE:
        return strdup("true");
    case JSON_FALSE:
        return strdup("false");
    default:
        return NULL;
    }
}
