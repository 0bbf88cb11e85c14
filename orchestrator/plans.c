/* Published plans cache (plans.h). Versions are immutable, so a version read once is kept for
 * the life of the process. Concurrent gets of one uncached version share one Redis GET: the
 * first creates a loading entry, the others queue behind it as waiters. The active version is
 * asked of Redis on every get with version 0. */
#include "plans.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "log.h"

#define NBUCKETS 1024

typedef struct waiter {
    nt_plans_cb *cb;
    void *arg;
    struct waiter *next;
} waiter_t;

typedef struct load load_t;

typedef struct entry {
    char *id;
    uint32_t ver;
    nt_plan_t *plan;   /* NULL while loading */
    waiter_t *waiters; /* while loading, in arrival order */
    waiter_t **tail;
    load_t *load; /* the GET in flight, NULL when loaded */
    struct entry *next;
} entry_t;

/* The argument of one Redis GET; outlives the cache when it is freed while the GET runs. */
struct load {
    nt_plans_t *plans; /* NULL once the cache is freed */
    entry_t *e;
};

/* A version-0 lookup: HGET active, then a get of that version. */
typedef struct active_req {
    nt_plans_t *plans;
    char *id;
    nt_plans_cb *cb;
    void *arg;
    struct active_req *next, *prev;
} active_req_t;

struct nt_plans {
    nt_redis_t *redis;
    entry_t *buckets[NBUCKETS];
    active_req_t *actives; /* version-0 lookups in flight */
};

static unsigned bucket_of(const char *id, uint32_t ver)
{
    unsigned h = 2166136261u;
    for (const unsigned char *s = (const unsigned char *)id; *s; s++)
        h = (h ^ *s) * 16777619u;
    h = (h ^ ver) * 16777619u;
    return h % NBUCKETS;
}

static entry_t *find(nt_plans_t *plans, const char *id, uint32_t ver)
{
    for (entry_t *e = plans->buckets[bucket_of(id, ver)]; e; e = e->next)
        if (e->ver == ver && strcmp(e->id, id) == 0)
            return e;
    return NULL;
}

static void unlink_entry(nt_plans_t *plans, entry_t *e)
{
    entry_t **pp = &plans->buckets[bucket_of(e->id, e->ver)];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp)
        *pp = e->next;
}

static entry_t *entry_new(nt_plans_t *plans, const char *id, uint32_t ver)
{
    entry_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->id = strdup(id);
    if (!e->id) {
        free(e);
        return NULL;
    }
    e->ver = ver;
    e->tail = &e->waiters;
    unsigned b = bucket_of(id, ver);
    e->next = plans->buckets[b];
    plans->buckets[b] = e;
    return e;
}

static void entry_free(entry_t *e)
{
    if (!e)
        return;
    nt_plan_free(e->plan);
    free(e->id);
    free(e);
}

/* Fire and free the waiters of e (detached first: a callback may call back into the cache). */
static void fire_waiters(entry_t *e, nt_rc_t rc, const nt_plan_t *plan)
{
    waiter_t *w = e->waiters;
    e->waiters = NULL;
    e->tail = &e->waiters;
    while (w) {
        waiter_t *next = w->next;
        w->cb(rc, plan, w->arg);
        free(w);
        w = next;
    }
}

nt_plans_t *nt_plans_new(nt_redis_t *redis)
{
    nt_plans_t *plans = calloc(1, sizeof(*plans));
    if (!plans)
        return NULL;
    plans->redis = redis;
    return plans;
}

void nt_plans_free(nt_plans_t *plans)
{
    if (!plans)
        return;
    while (plans->actives) {
        active_req_t *a = plans->actives;
        plans->actives = a->next;
        a->plans = NULL;
        a->next = a->prev = NULL;
        a->cb(NT_ECANCELED, NULL, a->arg);
        a->cb = NULL;
    }
    for (unsigned b = 0; b < NBUCKETS; b++) {
        entry_t *e = plans->buckets[b];
        plans->buckets[b] = NULL;
        while (e) {
            entry_t *next = e->next;
            if (e->load) {
                e->load->plans = NULL;
                e->load->e = NULL;
            }
            fire_waiters(e, NT_ECANCELED, NULL);
            entry_free(e);
            e = next;
        }
    }
    free(plans);
}

const nt_plan_t *nt_plans_cached(nt_plans_t *plans, const char *id, uint32_t version)
{
    if (!plans || !id)
        return NULL;
    entry_t *e = find(plans, id, version);
    return e ? e->plan : NULL;
}

static void on_get(nt_rc_t rc, redisReply *reply, void *arg)
{
    load_t *ld = arg;
    nt_plans_t *plans = ld->plans;
    entry_t *e = ld->e;
    free(ld);
    if (!plans || !e)
        return; /* the cache was freed: the waiters were told */
    e->load = NULL;
    nt_plan_t *plan = NULL;
    if (rc == NT_OK) {
        if (!reply || reply->type == REDIS_REPLY_NIL) {
            rc = NT_ENOTFOUND;
        } else if (reply->type != REDIS_REPLY_STRING) {
            nt_log_error("plans", "GET plan %s v%u: %s", e->id, e->ver,
                         reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
            rc = NT_ERR;
        } else {
            char *err = NULL;
            plan = nt_plan_new((const uint8_t *)reply->str, reply->len, &err);
            if (!plan) {
                nt_log_error("plans", "plan %s v%u in Redis does not unpack: %s", e->id, e->ver,
                             err ? err : "?");
                free(err);
                rc = NT_EINVAL;
            } else {
                plan->refs = 1;
            }
        }
    }
    if (rc != NT_OK) {
        /* Not cached: the next get asks Redis again. */
        unlink_entry(plans, e);
        fire_waiters(e, rc, NULL);
        entry_free(e);
        return;
    }
    e->plan = plan;
    fire_waiters(e, NT_OK, plan);
}

/* Get of a definite version. */
static nt_rc_t get_version(nt_plans_t *plans, const char *id, uint32_t ver, nt_plans_cb *cb,
                           void *arg)
{
    entry_t *e = find(plans, id, ver);
    if (e && e->plan) {
        cb(NT_OK, e->plan, arg);
        return NT_OK;
    }
    waiter_t *w = calloc(1, sizeof(*w));
    if (!w)
        return NT_ENOMEM;
    w->cb = cb;
    w->arg = arg;
    if (e) { /* a GET is in flight: share it */
        *e->tail = w;
        e->tail = &w->next;
        return NT_OK;
    }
    e = entry_new(plans, id, ver);
    load_t *ld = calloc(1, sizeof(*ld));
    if (!e || !ld) {
        if (e) {
            unlink_entry(plans, e);
            entry_free(e);
        }
        free(ld);
        free(w);
        return NT_ENOMEM;
    }
    ld->plans = plans;
    ld->e = e;
    char key[NT_KEY_MAX];
    nt_key_plan(key, id, ver);
    nt_rc_t rc = nt_redis_cmd(plans->redis, on_get, ld, "GET %s", key);
    if (rc != NT_OK) {
        unlink_entry(plans, e);
        entry_free(e);
        free(ld);
        free(w);
        return rc;
    }
    e->load = ld;
    *e->tail = w;
    e->tail = &w->next;
    return NT_OK;
}

static void active_unlink(active_req_t *a)
{
    if (!a->plans)
        return;
    if (a->prev)
        a->prev->next = a->next;
    else
        a->plans->actives = a->next;
    if (a->next)
        a->next->prev = a->prev;
    a->next = a->prev = NULL;
}

static void on_active(nt_rc_t rc, redisReply *reply, void *arg)
{
    active_req_t *a = arg;
    nt_plans_t *plans = a->plans;
    if (!plans) { /* cancelled by nt_plans_free */
        free(a->id);
        free(a);
        return;
    }
    active_unlink(a);
    nt_plans_cb *cb = a->cb;
    void *cbarg = a->arg;
    char *id = a->id;
    free(a);
    uint32_t ver = 0;
    if (rc == NT_OK) {
        if (!reply || reply->type == REDIS_REPLY_NIL) {
            rc = NT_ENOTFOUND;
        } else if (reply->type == REDIS_REPLY_STRING) {
            char *end = NULL;
            errno = 0;
            unsigned long v = strtoul(reply->str, &end, 10);
            if (errno || !end || *end || v == 0 || v > UINT32_MAX)
                rc = NT_EINVAL;
            else
                ver = (uint32_t)v;
        } else {
            rc = NT_ERR;
        }
    }
    if (rc == NT_OK) {
        rc = get_version(plans, id, ver, cb, cbarg);
        if (rc == NT_OK) {
            free(id);
            return;
        }
    }
    free(id);
    cb(rc, NULL, cbarg);
}

nt_rc_t nt_plans_get(nt_plans_t *plans, const char *id, uint32_t version, nt_plans_cb *cb,
                     void *arg)
{
    if (!plans || !id || !cb)
        return NT_EINVAL;
    if (version != 0)
        return get_version(plans, id, version, cb, arg);
    active_req_t *a = calloc(1, sizeof(*a));
    if (!a)
        return NT_ENOMEM;
    a->id = strdup(id);
    if (!a->id) {
        free(a);
        return NT_ENOMEM;
    }
    a->plans = plans;
    a->cb = cb;
    a->arg = arg;
    char key[NT_KEY_MAX];
    nt_key_plan_index(key, id);
    nt_rc_t rc = nt_redis_cmd(plans->redis, on_active, a, "HGET %s active", key);
    if (rc != NT_OK) {
        free(a->id);
        free(a);
        return rc;
    }
    a->next = plans->actives;
    if (a->next)
        a->next->prev = a;
    plans->actives = a;
    return NT_OK;
}

void nt_plans_put(nt_plans_t *plans, nt_plan_t *plan)
{
    if (!plans || !plan || !plan->wf || !plan->wf->id) {
        nt_plan_free(plan);
        return;
    }
    const char *id = plan->wf->id;
    uint32_t ver = plan->wf->version;
    entry_t *e = find(plans, id, ver);
    if (e && e->plan) {
        nt_plan_free(plan); /* immutable: the cached one is the same and may be borrowed */
        return;
    }
    if (!e) {
        e = entry_new(plans, id, ver);
        if (!e) {
            nt_plan_free(plan);
            return;
        }
    }
    plan->refs = 1;
    e->plan = plan;
    if (e->load) { /* a GET is in flight: its reply will find the entry loaded and be ignored */
        e->load->plans = NULL;
        e->load->e = NULL;
        e->load = NULL;
    }
    fire_waiters(e, NT_OK, plan);
}
