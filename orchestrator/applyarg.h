/* The parts of apply.lua's argument that the worker derives from a decision and the snapshot
 * its state token guards (apply.lua documents the format): the run's changed fields, the
 * lead's fields set and removed, the timer, and the funnel counters summed over a batch. */
#ifndef NT_APPLYARG_H
#define NT_APPLYARG_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "msgpack.h"

/* The header of a list of n items; an empty one is written as the empty string, which
 * apply.lua takes for an empty list (# is 0 for both) without making a table. */
void nt_apply_list(nt_mp_t *m, uint32_t n);

/* The run's new node, state token and visits (apply.lua writes them with the node-entered time,
 * the batch's now), then {run field, value, ...}: the due time when it changes; status, exit
 * reason and exit time when the run ends. */
void nt_apply_run_fields(nt_mp_t *m, const nt_run_t *run, const nt_decision_t *d, int64_t now);

/* The timer: its due time while the run waits, "-" when one it had goes, else "". */
void nt_apply_timer(nt_mp_t *m, const nt_run_t *run, const nt_decision_t *d);

/* {lead field, value, ...} then {lead field, ...}: the attributes set and removed (the last
 * change of a name wins), _stage when the stage changes, r:<plan> "d" when the run ends. */
void nt_apply_lead_fields(nt_mp_t *m, const nt_run_t *run, const nt_decision_t *d);

/* The funnel counters of a batch's decisions: each decision's own list, and their sums. */
typedef struct nt_funnel_sum nt_funnel_sum_t;

typedef struct nt_funnel {
    nt_funnel_sum_t *fs;   /* open addressing: n of cap slots used */
    size_t n, cap;
    char *key;             /* scratch for a field name */
    size_t ckey;
    nt_mp_t per;           /* the decisions' lists, in order */
    uint32_t ndec;
} nt_funnel_t;

void nt_funnel_init(nt_funnel_t *f);
void nt_funnel_fini(nt_funnel_t *f);

/* Count the decision's counters: "<version>:<node>:in" +1 for each node entered,
 * "<version>:<node>:cur" -1 for the node left and +1 for the node it rests at, or
 * "<version>:active" -1 and "<version>:exit:<reason>" +1 when it ends. Returns 0, -1 when out of
 * memory. */
int nt_funnel_add(nt_funnel_t *f, const nt_run_t *run, const nt_decision_t *d);

/* Append the batch's two funnel parts: {plan, {field, sum, ...}, ...} (sums of zero included:
 * a decision that does not apply takes its share back out of them) and one string holding
 * the decisions' own lists. Returns 0, -1 when out of memory. */
int nt_funnel_pack(const nt_funnel_t *f, nt_mp_t *m);

#endif
