/* Semantic validation of a plan: every problem at once, each with its node id and a sentence.
 * Used by `nurturectl validate` and by nurtured when a plan is published. */
#ifndef NT_VALIDATE_H
#define NT_VALIDATE_H

#include <stddef.h>

#include "modules.h"
#include "nurture/rc.h"
#include "workflow.pb-c.h"

typedef struct nt_verr {
    char *node;    /* node id the problem is about, or NULL for the plan as a whole */
    char *msg;     /* a plain sentence, e.g. "edge 'sent' points to missing node 'wait_2'" */
} nt_verr_t;

typedef struct nt_verrs {
    nt_verr_t *v;
    size_t n;
    size_t cap;
} nt_verrs_t;

/* Check wf: ids, entry node, dangling edges, unreachable nodes, cycles with no resting node
 * (send, wait, wait_event) in them, unknown channels, missing/unknown/invalid channel
 * parameters (through the channel's validate hook), conditions and updates on attributes
 * that are neither built in nor declared in wf->attributes, outcome edges the channel never
 * produces, malformed waits and windows, splits without weight, unknown time formats.
 * mods gives the channels; when NULL, channel checks are skipped.
 * errs must be zeroed by the caller; problems are appended. Returns NT_OK when there is none,
 * NT_EINVAL otherwise, NT_ENOMEM. */
nt_rc_t nt_validate(const Nt__Workflow *wf, const nt_modules_t *mods, nt_verrs_t *errs);

void nt_verrs_fini(nt_verrs_t *errs);

#endif
