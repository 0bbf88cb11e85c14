/* The decision function: evaluates one run of a plan against a lead snapshot and a trigger and
 * says what changes. Pure: no Redis, no network, no clock of its own (now is passed in), so unit
 * tests drive it directly. The store applies a decision atomically (orchestrator/lua/apply.lua).
 *
 * Run model. A run rests only at send (waiting for the channel's outcome, optionally with a
 * timeout), wait (a timer) and wait_event (an event, optionally with a timeout) nodes. branch,
 * split and update nodes are passed through within one decision; exit ends the run. Each node
 * entered increments the run's visit counter; a message's idempotency key is
 * "<lead>:<plan>:<node>:<visit>" with the visit at which the send node was entered, so a
 * re-delivery after a crash carries the same key. Goals (nt.Goal) are checked before every
 * step and after every update: the first that holds ends the run with its reason. */
#ifndef NT_ENGINE_H
#define NT_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "lead.h"
#include "plan.h"

/* Guard against endless pass-through loops (validation also rejects cycles with no rest). */
#define NT_ENGINE_MAX_STEPS 64

typedef enum nt_run_status {
    NT_RUN_ACTIVE = 0,
    NT_RUN_DONE = 1,
} nt_run_status_t;

/* A run snapshot: the fields of nt:{p}:run:<lead>:<plan>. */
typedef struct nt_run {
    const char *plan_id;
    uint32_t version;
    const char *node;     /* current node; "" before the first step */
    uint64_t token;       /* state token, compared-and-set by the store */
    uint32_t visit;       /* nodes entered so far */
    int64_t entered_ms;   /* when the run was enrolled */
    int64_t node_ms;      /* when the current node was entered */
    int64_t due_ms;       /* pending timer, 0 when none */
    nt_run_status_t status;
    int64_t enrol_real_ms; /* enrolment on the real clock (the store's "er"), carried for the
                            * enrol-to-exit latency; not used in deciding */
} nt_run_t;

typedef enum nt_trigger_kind {
    NT_TRIG_START = 0,    /* the run was just enrolled: take the first step */
    NT_TRIG_TIMER = 1,    /* the run's timer is due */
    NT_TRIG_EVENT = 2,    /* an event for the lead */
} nt_trigger_kind_t;

/* Event type of channel outcomes, posted by dispatch. Its attributes: plan, node, visit,
 * outcome, detail. */
#define NT_EVENT_OUTCOME "outcome"

typedef struct nt_trigger {
    nt_trigger_kind_t kind;
    const char *type;       /* event type (NT_TRIG_EVENT) */
    const nt_kv_t *attrs;   /* event attributes */
    size_t nattrs;
    int machine;            /* non-zero: made by a machine (privacy proxy, scanner) */
} nt_trigger_t;

/* One message to commit to the outbox. All strings owned by the decision. */
typedef struct nt_outmsg {
    char *id;               /* idempotency key */
    char *channel;
    char *node;
    uint32_t visit;
    nt_kv_t *params;
    size_t nparams;
} nt_outmsg_t;

typedef struct nt_decision {
    int changed;            /* 0: the trigger does not concern this run; nothing else is set */
    char *node;             /* node after the decision */
    nt_run_status_t status;
    char *exit_reason;      /* set when status is NT_RUN_DONE */
    int64_t due_ms;         /* the run's timer after the decision; 0: none */
    uint32_t visit;         /* visit counter after the decision */
    nt_kv_t *set;           /* attribute changes in order; value NULL removes */
    size_t nset;
    int64_t score_delta;
    int stage;              /* new stage, 0: unchanged */
    nt_outmsg_t *msgs;
    size_t nmsgs;
    char **notes;           /* timeline lines, in order ("entered welcome (send)", ...) */
    size_t nnotes;
    char **path;            /* ids of the nodes entered, in order (for funnel counts) */
    size_t npath;
    char *left;             /* node the run left (for funnel occupancy), NULL if it did not move */
} nt_decision_t;

/* Decide what trigger does to run. lead is updated in place with the decision's attribute,
 * score and stage changes, so that a caller deciding several runs of one lead sees them.
 * out is initialised by this function; release it with nt_decision_fini.
 * Returns NT_OK (out->changed says whether anything happens), NT_ENOTFOUND (the run's node is
 * not in the plan: the run is ended with reason "node_missing"), NT_ENOMEM. */
nt_rc_t nt_engine_decide(const nt_plan_t *plan, nt_lead_t *lead, const nt_run_t *run,
                         const nt_trigger_t *trig, int64_t now_ms, nt_decision_t *out);

void nt_decision_fini(nt_decision_t *d);

/* The arm index a lead falls in for a split node: stable hash of (lead id, plan id, node id)
 * over the arms' weights. -1 when the split has no arm with weight. */
int nt_engine_split_arm(const Nt__Split *split, const char *lead_id, const char *plan_id,
                        const char *node_id);

#endif
