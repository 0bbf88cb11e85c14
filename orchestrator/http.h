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

#endif
