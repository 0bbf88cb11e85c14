/* The HTTP JSON API (evhttp + jansson). Routes, roles and error shapes: docs/api.md. */
#ifndef NT_HTTP_H
#define NT_HTTP_H

#include "config.h"
#include "modules.h"
#include "plans.h"
#include "redis.h"
#include "tasks.h"
#include "worker.h"

struct event_base;
typedef struct nt_http nt_http_t;

typedef struct nt_http_deps {
    struct event_base *base;
    const nt_config_t *cfg;
    nt_redis_t *redis;
    nt_plans_t *plans;
    const nt_modules_t *mods;
    nt_worker_t *worker;
    nt_tasks_t *tasks; /* the call task store (api_tasks.c); may be NULL */
} nt_http_deps_t;

/* Bind cfg->bind:cfg->port and serve. Returns NULL with *errmsg when the port cannot be
 * bound. */
nt_http_t *nt_http_new(const nt_http_deps_t *deps, char **errmsg);

/* Stop accepting; requests in flight get their replies (or 503). */
void nt_http_free(nt_http_t *h);

/* Completion of nt_api_lead_update. */
typedef void nt_api_lead_done_fn(void *arg, nt_rc_t rc);

/* Set attributes on an existing lead as PATCH /v1/leads/{id} does (api_leads.c: the same
 * checks, lead_put.lua in mode "update", the same follow-up: worker woken, its messages of the
 * lead in flight decided on the lead as written, email index kept), without a request: the
 * plugin host's update_lead (include/nurture/channel.h). attrs are borrowed for the call.
 * Returns NT_AGAIN, and done fires exactly once on the loop with NT_OK, NT_ENOTFOUND (no such
 * lead), NT_EUNAVAIL/NT_ETIMEOUT (retry) or NT_ECANCELED (Redis closed at shutdown; the worker
 * is not touched then). Otherwise done never fires: NT_EINVAL (a bad lead id, name or value,
 * said in err), NT_EUNAVAIL (Redis down) or NT_ENOMEM. */
nt_rc_t nt_api_lead_update(const nt_http_deps_t *d, const char *lead_id, const nt_kv_t *attrs,
                           size_t nattrs, nt_api_lead_done_fn *done, void *arg, char *err,
                           size_t errlen);

#endif
