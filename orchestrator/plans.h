/* Published plans: versions are immutable, so a version once read from Redis is cached for the
 * life of the process. Redis layout:
 *   nt:plans               set of plan ids
 *   nt:plan:{<id>}         hash: active <ver>, latest <ver>, name <name>, published:<ver> <ms>
 *   nt:plan:{<id>}:<ver>   string: the binary nt.Workflow with version set */
#ifndef NT_PLANS_H
#define NT_PLANS_H

#include <stdint.h>

#include "plan.h"
#include "redis.h"

typedef struct nt_plans nt_plans_t;

/* plan is borrowed and stays valid until nt_plans_free (versions are never evicted). */
typedef void nt_plans_cb(nt_rc_t rc, const nt_plan_t *plan, void *arg);

nt_plans_t *nt_plans_new(nt_redis_t *redis);
void nt_plans_free(nt_plans_t *plans);

/* The cached version, or NULL when it has not been loaded yet. */
const nt_plan_t *nt_plans_cached(nt_plans_t *plans, const char *id, uint32_t version);

/* Load id at version (0: the active version, always asked of Redis). cb fires exactly once:
 * NT_OK with the plan, NT_ENOTFOUND (no such plan or version), NT_EINVAL (stored bytes do not
 * unpack), or a Redis error (NT_EUNAVAIL, NT_ETIMEOUT). Returns NT_OK when cb will fire (it may
 * fire before this returns when the plan is cached), else an error and cb does not fire. */
nt_rc_t nt_plans_get(nt_plans_t *plans, const char *id, uint32_t version, nt_plans_cb *cb,
                     void *arg);

/* Insert an already unpacked plan (after publish); takes ownership. */
void nt_plans_put(nt_plans_t *plans, nt_plan_t *plan);

#endif
