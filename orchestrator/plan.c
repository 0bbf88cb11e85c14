/* A plan in memory: the unpacked nt.Workflow and its nodes sorted by id for bsearch lookup.
 * Semantics are not checked here (validate.c does that): a plan with duplicate node ids still
 * loads, and lookup then finds the first of them in declaration order. */
#include "plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sort_item {
    Nt__Node *node;
    size_t pos; /* index in wf->nodes: ties keep declaration order */
} sort_item_t;

static const char *node_id(const Nt__Node *n)
{
    return n->id != NULL ? n->id : "";
}

static int cmp_item(const void *a, const void *b)
{
    const sort_item_t *x = a, *y = b;
    int c = strcmp(node_id(x->node), node_id(y->node));

    if (c != 0)
        return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int cmp_key(const void *key, const void *elem)
{
    return strcmp((const char *)key, node_id(*(Nt__Node *const *)elem));
}

static char *errdup(const char *msg, size_t len)
{
    char *s = NULL;

    if (asprintf(&s, "%s (%zu bytes)", msg, len) < 0)
        return NULL;
    return s;
}

/* Unpack a binary Workflow and index its nodes. Returns the plan with refs = 1, or NULL with
 * *errmsg (malloc'd, caller frees; may stay NULL when even that allocation fails) saying why:
 * "invalid protobuf: ..." or "out of memory". */
nt_plan_t *nt_plan_new(const uint8_t *data, size_t len, char **errmsg)
{
    static const uint8_t empty[1];
    nt_plan_t *plan = NULL;
    sort_item_t *items = NULL;
    size_t i;

    if (errmsg != NULL)
        *errmsg = NULL;
    plan = calloc(1, sizeof(*plan));
    if (plan == NULL)
        goto oom;
    plan->wf = nt__workflow__unpack(NULL, len, data != NULL ? data : empty);
    if (plan->wf == NULL) {
        if (errmsg != NULL)
            *errmsg = errdup("invalid protobuf: the data is not an nt.Workflow message", len);
        goto fail;
    }
    plan->nnodes = plan->wf->n_nodes;
    plan->refs = 1;
    if (plan->nnodes == 0)
        return plan;
    items = malloc(plan->nnodes * sizeof(*items));
    plan->sorted = malloc(plan->nnodes * sizeof(*plan->sorted));
    if (items == NULL || plan->sorted == NULL)
        goto oom;
    for (i = 0; i < plan->nnodes; i++) {
        items[i].node = plan->wf->nodes[i];
        items[i].pos = i;
    }
    qsort(items, plan->nnodes, sizeof(*items), cmp_item);
    for (i = 0; i < plan->nnodes; i++)
        plan->sorted[i] = items[i].node;
    free(items);
    return plan;

oom:
    if (errmsg != NULL)
        *errmsg = strdup("out of memory");
fail:
    free(items);
    nt_plan_free(plan);
    return NULL;
}

/* Release the plan and its Workflow, whatever refs says (the cache owns counting).
 * NULL does nothing. */
void nt_plan_free(nt_plan_t *plan)
{
    if (plan == NULL)
        return;
    if (plan->wf != NULL)
        nt__workflow__free_unpacked(plan->wf, NULL);
    free(plan->sorted);
    free(plan);
}

/* The node with this id (the first declared one when ids repeat), or NULL. */
const Nt__Node *nt_plan_node(const nt_plan_t *plan, const char *id)
{
    Nt__Node **hit;

    if (plan == NULL || id == NULL || plan->nnodes == 0)
        return NULL;
    hit = bsearch(id, plan->sorted, plan->nnodes, sizeof(*plan->sorted), cmp_key);
    if (hit == NULL)
        return NULL;
    while (hit > plan->sorted && strcmp(node_id(hit[-1]), id) == 0)
        hit--;
    return *hit;
}

/* The kind of node as its field name in workflow.proto; "none" when unset or NULL. */
const char *nt_node_kind_name(const Nt__Node *node)
{
    if (node == NULL)
        return "none";
    switch (node->kind_case) {
    case NT__NODE__KIND_SEND:
        return "send";
    case NT__NODE__KIND_WAIT:
        return "wait";
    case NT__NODE__KIND_WAIT_EVENT:
        return "wait_event";
    case NT__NODE__KIND_BRANCH:
        return "branch";
    case NT__NODE__KIND_SPLIT:
        return "split";
    case NT__NODE__KIND_UPDATE:
        return "update";
    case NT__NODE__KIND_EXIT:
        return "exit";
    default:
        return "none";
    }
}
