/* A plan in memory: the unpacked nt.Workflow plus an index of its nodes by id. */
#ifndef NT_PLAN_H
#define NT_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "nurture/rc.h"
#include "workflow.pb-c.h"

typedef struct nt_plan {
    Nt__Workflow *wf;      /* owned; freed with nt__workflow__free_unpacked */
    Nt__Node **sorted;     /* wf->nodes sorted by id, for lookup */
    size_t nnodes;
    int refs;              /* cache reference count */
} nt_plan_t;

/* Unpack a binary Workflow. On failure returns NULL and sets *errmsg (malloc'd, caller frees)
 * to a sentence such as "invalid protobuf". Does not validate semantics (see validate.h). */
nt_plan_t *nt_plan_new(const uint8_t *data, size_t len, char **errmsg);
void nt_plan_free(nt_plan_t *plan);

/* The node with this id, or NULL. */
const Nt__Node *nt_plan_node(const nt_plan_t *plan, const char *id);

/* "send", "wait", "wait_event", "branch", "split", "update", "exit", or "none". */
const char *nt_node_kind_name(const Nt__Node *node);

#endif
