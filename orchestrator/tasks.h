/* The call task store: tasks live in the lead's partition (nt:{p}:task:<id> and the open-task
 * sorted sets of that partition), created exactly once per message id by task_create.lua.
 * Routing (the lead's owner, else the team's reps by smooth weighted round-robin skipping reps
 * out of office or at their cap, else the team queue), due times inside the rep's working hours,
 * and SLA escalation (back to the team queue, a manager webhook notification recorded in the
 * same script and delivered durably: retried with backoff, signed, claimed by one process)
 * happen here, in the daemon, because plugins have no Redis handle (include/nurture/channel.h,
 * create_task). Keys and configuration: docs/architecture.md, "Call tasks". */
#ifndef NT_TASKS_H
#define NT_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "curlm.h"
#include "redis.h"

struct event_base;
typedef struct nt_tasks nt_tasks_t;

typedef struct nt_tasks_deps {
    struct event_base *base;
    const nt_config_t *cfg;
    nt_redis_t *redis;
    nt_curlm_t *curlm; /* for the manager webhook; may be NULL */
} nt_tasks_deps_t;

/* Read the channel.call.* configuration (teams, reps, caps, hours, the manager webhook) and
 * start the SLA timer, which also delivers the pending manager webhook notifications.
 * Returns NULL with *errmsg (malloc'd) for a bad setting or out of memory. */
nt_tasks_t *nt_tasks_new(const nt_tasks_deps_t *deps, char **errmsg);

/* Stop the SLA timer; creations still waiting for Redis complete now with NT_ECANCELED (their
 * Redis replies are dropped later). Webhook POSTs in flight are left to the curl multi's end:
 * their claims' leases run out and a later process sends them. NULL is a no-op. */
void nt_tasks_free(nt_tasks_t *t);

/* The host hook create_task (include/nurture/channel.h): route and create the task for msg.
 * Returns NT_AGAIN (done fires exactly once later) or an error (done never fires). */
nt_rc_t nt_tasks_create(nt_tasks_t *t, const nt_message_t *msg, const nt_kv_t *fields,
                        size_t nfields, nt_channel_done_fn *done, void *done_arg);

/* Non-zero when id may name a task: a message id "<lead>:<plan>:<node>:<visit>" of at most 400
 * printable bytes whose lead part is a valid lead id. */
int nt_tasks_id_valid(const char *id);

/* The partition of a task (its lead's). */
unsigned nt_tasks_partition(const nt_tasks_t *t, const char *id);

/* Non-zero when rep is 1-64 of [A-Za-z0-9._@+-]. */
int nt_tasks_rep_valid(const char *rep);

/* Non-zero when rep is a configured rep: a member of a team, a channel.call.rep.<rep> entry or
 * the name of a rep token. */
int nt_tasks_rep_known(const nt_tasks_t *t, const char *rep);

/* Non-zero when rep is a member of team. */
int nt_tasks_rep_in_team(const nt_tasks_t *t, const char *rep, const char *team);

/* Key builders (NT_KEY_MAX bytes): nt:{p}:task:<id>; nt:{p}:tasks:open; nt:{p}:tasks:sla;
 * nt:{p}:tasks:rep:<rep> (a rep's open and claimed tasks); nt:{p}:tasks:team:<team> (the team
 * queue: tasks nobody holds); nt:{p}:tasks:hooks (manager webhook notifications pending: the
 * escalation id -> when due, ms on the Redis server's clock); nt:{p}:hook:<escalation id> (one
 * notification: task body status attempts created last http error finished); nt:rep:{<rep>}
 * (out_of_office, open: the rep's open-task count over all partitions). An escalation id is
 * "<task id>:esc". Return buf. */
char *nt_tasks_key_task(char *buf, unsigned p, const char *id);
char *nt_tasks_key_set(char *buf, unsigned p, const char *what, const char *name);
char *nt_tasks_key_hook(char *buf, unsigned p, const char *esc_id);
char *nt_tasks_key_rep(char *buf, const char *rep);

/* The set a task with this owner and team is held in: the owner's, else the team queue. */
char *nt_tasks_key_holder(char *buf, unsigned p, const char *owner, const char *team);

#endif
