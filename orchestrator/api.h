/* Private to the HTTP API (http.c, api_leads.c, api_plans.c, api_events.c): the request object,
 * replies, pipelined Redis batches and the parsing shared by the routes. Contract: docs/api.md. */
#ifndef NT_API_H
#define NT_API_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "http.h"
#include "lead.h"
#include "plan.h"

struct evhttp_request;
struct evhttp_connection;

/* Roles, as bits. */
#define NT_API_ROLE_OPS 1
#define NT_API_ROLE_REP 2
#define NT_API_ROLE_WEBHOOK 4

typedef struct nt_api_req nt_api_req_t;

/* One HTTP request in flight. It stays alive while Redis work for it is pending (refs), and
 * replies exactly once; after the reply, or when the client went away, `finished` is set and
 * every continuation stops without issuing more work. */
struct nt_api_req {
    nt_http_deps_t d;               /* the server's dependencies (copied) */
    nt_http_t *h;                   /* NULL once the server is freed */
    struct evhttp_request *req;     /* NULL once replied or gone */
    struct evhttp_connection *conn; /* the client connection, while req is set */
    int finished;                   /* replied or gone: do nothing more */
    int refs;                       /* one for the pending reply, one per pending operation */
    char **seg;                     /* decoded path segments */
    size_t nseg;
    char *query;              /* raw query string or NULL */
    json_t *body;             /* the JSON body (object) of JSON routes, else NULL */
    const unsigned char *raw; /* the raw body (protobuf and raw routes) */
    size_t rawlen;
    int role;        /* NT_API_ROLE_* of the caller */
    const char *who; /* the token's name */
    void *ctx;       /* handler state, freed with ctx_free with the request */
    void (*ctx_free)(void *ctx);
    nt_api_req_t *next, *prev; /* the server's in-flight list */
    /* Big JSON bodies are parsed and served one at a time (http.c, "Big bodies"). */
    const void *route;   /* the matched route while queued */
    nt_api_req_t *qnext; /* the queue of big bodies waiting for their turn */
    int big;             /* this request holds the server's big-body turn */
};

/* Reference counting: ref before starting an asynchronous operation, unref when its callback
 * ran. The last unref frees the request. */
void nt_api_ref(nt_api_req_t *r);
void nt_api_unref(nt_api_req_t *r);

/* Reply with status and a JSON body (stolen). No-op when the request is finished. */
void nt_api_reply_json(nt_api_req_t *r, int status, json_t *body);

/* Reply {"error":{"code","message"}} with status. */
void nt_api_error(nt_api_req_t *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Reply with status and a body of any type (copied). No-op when the request is finished. */
void nt_api_reply_raw(nt_api_req_t *r, int status, const char *ctype, const void *data, size_t len);

/* The handler has taken what it needs from r->body: free the parsed JSON now rather than when
 * the request ends (a bulk body's jansson values are ten times its size, and the request then
 * waits for Redis). */
void nt_api_body_done(nt_api_req_t *r);

/* A small HTML page for a person who followed a signed link (unsubscribe, RSVP): title, a
 * paragraph of trusted text and, when action is not NULL, a form posting fields (trusted HTML)
 * to action. action is relative (the link's own token, resolved against /t/x/<token>), so the
 * form works behind a public-url with a path prefix. Not cached, no referrer. */
void nt_api_page(nt_api_req_t *r, int status, const char *title, const char *text,
                 const char *action, const char *fields);

/* Add a response header (before the reply). */
void nt_api_header_out(nt_api_req_t *r, const char *name, const char *value);

/* A request header, borrowed while the request is not finished; NULL when absent. */
const char *nt_api_header_in(const nt_api_req_t *r, const char *name);

/* Non-zero for a HEAD request (routed like GET; libevent sends no body). */
int nt_api_is_head(const nt_api_req_t *r);

/* Reply with an error body built by the caller ({"error":{...}}), stolen. */
void nt_api_error_json(nt_api_req_t *r, int status, json_t *body);

/* Map a failed operation: ENOTFOUND -> 404 naming what, EUNAVAIL/ETIMEOUT/ECANCELED -> 503,
 * anything else -> 500. */
void nt_api_error_rc(nt_api_req_t *r, nt_rc_t rc, const char *what);

/* 503 when Redis is down; returns non-zero when it replied. */
int nt_api_need_redis(nt_api_req_t *r);

/* A value of the query string, or NULL (malloc'd, caller frees). */
char *nt_api_query(const nt_api_req_t *r, const char *name);

/* Allocate size zeroed bytes as the handler state r->ctx, freed with ctx_free (taken as is) with
 * the request. Returns the state, or NULL after replying 500 when out of memory. */
void *nt_api_ctx_new(nt_api_req_t *r, size_t size, void (*ctx_free)(void *));

/* Check the id in the path (r->seg[2]) of a plan or lead route. Returns 0, or -1 after replying
 * 400 bad_request. */
int nt_api_path_plan_id(nt_api_req_t *r);
int nt_api_path_lead_id(nt_api_req_t *r);

/* --- Redis batches: n commands issued together, one completion with every reply ------------ */

/* replies[i] is a copy (freed after the call) or NULL when command i failed; rc is NT_OK or the
 * first failure (NT_EUNAVAIL, NT_ETIMEOUT, NT_ECANCELED, NT_ENOMEM, NT_ENOTFOUND for an unknown
 * script). Not called when the request finished meanwhile. */
typedef void nt_api_batch_fn(nt_api_req_t *r, nt_rc_t rc, redisReply **replies, size_t n,
                             void *arg);

typedef struct nt_api_batch nt_api_batch_t;

nt_api_batch_t *nt_api_batch_new(nt_api_req_t *r, size_t n, nt_api_batch_fn *done, void *arg);
void nt_api_batch_argv(nt_api_batch_t *b, size_t i, int argc, const char **argv,
                       const size_t *lens);
void nt_api_batch_script(nt_api_batch_t *b, size_t i, const char *name, int nkeys, int argc,
                         const char **argv, const size_t *lens);
/* Every command is issued: done fires once all replies are in (maybe before this returns). */
void nt_api_batch_go(nt_api_batch_t *b);

/* A growable argv of owned strings. */
typedef struct nt_api_argv {
    char **v;
    size_t *len;
    int n;
    int cap;
} nt_api_argv_t;

void nt_api_argv_add(nt_api_argv_t *a, const char *s);
void nt_api_argv_addb(nt_api_argv_t *a, const void *s, size_t len);
void nt_api_argv_addf(nt_api_argv_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void nt_api_argv_fini(nt_api_argv_t *a);
/* Non-zero when an allocation failed on the way. */
int nt_api_argv_failed(const nt_api_argv_t *a);

/* A batch of one: issue the command argv (argc strings), or the script name with the arguments
 * in a (finalised here in every case); done gets the reply. When out of memory they reply 500
 * and done does not fire. */
void nt_api_command(nt_api_req_t *r, int argc, const char **argv, nt_api_batch_fn *done, void *arg);
void nt_api_script(nt_api_req_t *r, const char *name, int nkeys, nt_api_argv_t *a,
                   nt_api_batch_fn *done, void *arg);

/* Non-zero when x is an array of at least min elements whose first is a string, the shape every
 * script answers in; else logs "<script>: <the error or 'unexpected reply'>" and returns 0. */
int nt_api_script_reply_ok(const redisReply *x, size_t min, const char *script);

/* The value of field name in a flat HGETALL array (borrowed from flat), or NULL. */
const char *nt_api_flat_str(const redisReply *flat, const char *name);
/* The value of field name in a flat HGETALL array as an integer, or def when absent. */
int64_t nt_api_flat_int(const redisReply *flat, const char *name, int64_t def);

/* --- Input ------------------------------------------------------------------------------------ */

/* Check that obj holds only the allowed keys (NULL-terminated). On an unknown key writes
 * "unknown field '<prefix><key>'" into err and returns -1. */
int nt_api_only_fields(json_t *obj, const char *const *allowed, const char *prefix, char *err,
                       size_t errlen);

/* A lead object from the API, validated. */
typedef struct nt_api_lead_in {
    char *id;       /* NULL when absent */
    nt_kv_t *attrs; /* owned copies */
    size_t nattrs;
    int has_score;
    int64_t score;
    int stage; /* 0: not given */
} nt_api_lead_in_t;

#define NT_API_ID_FORBIDDEN 0
#define NT_API_ID_REQUIRED 1

/* Parse a lead object strictly. prefix names it in messages ("" or "leads[3]."). Returns 0, or
 * -1 with a message naming the field in err. */
int nt_api_lead_parse(json_t *obj, int id_mode, const char *prefix, nt_api_lead_in_t *out,
                      char *err, size_t errlen);
void nt_api_lead_in_fini(nt_api_lead_in_t *in);

/* Append the keys and arguments of lead_put.lua for in to a (mode "upsert" or "update");
 * returns the number of keys. */
int nt_api_lead_put_args(const nt_http_deps_t *d, const char *id, const nt_api_lead_in_t *in,
                         const char *mode, nt_api_argv_t *a);

/* Fill lead (initialised by the caller) from a flat HGETALL array. Returns 0 or -1. */
int nt_api_lead_from_reply(nt_lead_t *lead, const redisReply *flat);

/* {"id","attributes","score","stage"} of a lead; new reference. */
json_t *nt_api_lead_json(const nt_lead_t *lead);

/* Append the keys and arguments of enrol.lua; returns the number of keys. */
int nt_api_enrol_args(const nt_api_req_t *r, const char *lead_id, const nt_plan_t *plan,
                      nt_api_argv_t *a);

/* Interpret the reply of enrol.lua. Returns 0 when enrolled; else -1 with *status, *code and a
 * message in err (409 conflict, 422 not_eligible, 404 not_found, 500 internal). */
int nt_api_enrol_result(const redisReply *reply, const char *lead_id, const nt_plan_t *plan,
                        int *status, const char **code, char *err, size_t errlen);

int nt_api_plan_id_valid(const char *id);
int nt_api_event_type_valid(const char *type);

/* Convert an attribute value (string, number, boolean) to a malloc'd string; NULL for any other
 * type. */
char *nt_api_value_string(const json_t *v);

/* --- Route handlers -------------------------------------------------------------------------- */

void nt_api_leads_post(nt_api_req_t *r);
void nt_api_leads_patch(nt_api_req_t *r);
void nt_api_leads_get(nt_api_req_t *r);
void nt_api_leads_enrol(nt_api_req_t *r);
/* POST /v1/plans/{id}/enrol: one api_enrol_many.lua call per partition (api_leads.c). */
void nt_api_bulk_enrol(nt_api_req_t *r);

/* The bulk enrolment for other handlers (webhooks creating leads): status has one letter per
 * lead, in order: 'o' enrolled, 'u' upserted only (entry filter), 'c' active already, 'n'/'w'
 * re-entry refused, 'f' the script call failed. Borrowed for the call. */
typedef void nt_api_enrolled_fn(nt_api_req_t *r, const char *status, size_t n, void *arg);
typedef struct bulk_ctx nt_api_bulk_t;
/* Create or update leads[0..n) (each with an id; the array is taken, freed with the handle) and
 * enrol them in plan (borrowed from the plan cache, as the handlers hold it). done fires once
 * unless the request was answered meanwhile (out of memory, Redis down: replied here). Returns
 * the handle, which the caller frees with nt_api_bulk_free in its ctx_free, or NULL. */
nt_api_bulk_t *nt_api_enrol_many(nt_api_req_t *r, const nt_plan_t *plan, nt_api_lead_in_t *leads,
                                 size_t n, nt_api_enrolled_fn *done, void *arg);
void nt_api_bulk_free(nt_api_bulk_t *b);
void nt_api_events_post(nt_api_req_t *r);
void nt_api_plans_publish(nt_api_req_t *r);
void nt_api_plans_list(nt_api_req_t *r);
void nt_api_plans_get(nt_api_req_t *r);
void nt_api_plans_activate(nt_api_req_t *r);
void nt_api_plans_stats(nt_api_req_t *r);
/* Signed links (api_track.c): /t/c/<token>, /t/o/<token>, /t/u/<token>; the provider webhook. */
void nt_api_track_click(nt_api_req_t *r);
void nt_api_track_open(nt_api_req_t *r);
void nt_api_track_unsub_page(nt_api_req_t *r);
void nt_api_track_unsub(nt_api_req_t *r);
void nt_api_webhook_email(nt_api_req_t *r);
/* Call tasks and reps (api_tasks.c). */
void nt_api_tasks_list(nt_api_req_t *r);
void nt_api_tasks_get(nt_api_req_t *r);
void nt_api_tasks_claim(nt_api_req_t *r);
void nt_api_tasks_complete(nt_api_req_t *r);
void nt_api_tasks_reassign(nt_api_req_t *r);
void nt_api_reps_get(nt_api_req_t *r);
void nt_api_reps_patch(nt_api_req_t *r);
/* GET /inbox: the rep's inbox page, no token (api_inbox.c). */
void nt_api_inbox(nt_api_req_t *r);
/* Webhook signatures (api_track.c), shared by every signed webhook: check X-Nurture-Signature
 * (t=<unix s>,v1=<hex HMAC-SHA256(webhook-secret, "<t>." body)>) over r->raw. Returns 0 with
 * the matching v1 in sig (65 bytes), or -1 after replying 401 (503 without a secret). */
int nt_api_webhook_signed(nt_api_req_t *r, char *sig);
/* Record sig as used (10 minutes); done's rep[0] is a status reply when it was fresh, nil for a
 * replay (reply 409 then). */
void nt_api_webhook_fresh(nt_api_req_t *r, const char *sig, nt_api_batch_fn *done, void *arg);
/* POST /v1/webhooks/webinar: attendance from webinar platforms (api_webinar.c). */
void nt_api_webhook_webinar(nt_api_req_t *r);
/* In-person events (api_event_checkin.c): POST /v1/webhooks/event (check-ins), GET|HEAD
 * /t/r/<token> (the RSVP page) and POST /t/r/<token> (answer=yes|no, event.rsvp). */
void nt_api_webhook_event(nt_api_req_t *r);
void nt_api_rsvp_page(nt_api_req_t *r);
void nt_api_rsvp(nt_api_req_t *r);
/* The email index (api_webinar.c): nt:{q}:idx:email, q = partition of the normalised address,
 * field address -> lead id. Record the lead's `email` and comma-separated `emails` found in
 * attrs; fire and forget (a failure leaves the index stale, and is logged). */
void nt_api_email_index(const nt_http_deps_t *d, const char *lead_id, const nt_kv_t *attrs,
                        size_t n);
/* Normalise an email address (trim, lowercase) into out (cap bytes). Returns 0, or -1 when
 * empty, too long or without '@'. */
int nt_api_email_norm(const char *in, size_t len, char *out, size_t cap);

#endif
