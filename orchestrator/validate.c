/* Semantic validation of a plan (see validate.h).
 *
 * Every check appends to one list instead of stopping at the first problem, so that marketing
 * ops fix a plan in one round. Nothing here has a fixed limit that a hostile plan could
 * overflow: node lookup is a hash table sized from the plan, the graph is kept in growable
 * arrays, reachability is a breadth-first walk with an explicit queue and the cycle search is
 * an iterative Tarjan, so a plan of tens of thousands of nodes is checked in milliseconds and
 * never recurses deeply. Only conditions recurse, and they stop at NT_VALIDATE_MAX_DEPTH. */
#include "validate.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lead.h"
#include "tz.h"

#define NT_VALIDATE_MAX_DEPTH 32   /* deepest condition nesting accepted */
#define NT_VALIDATE_ID_MAX 64      /* longest plan or node id */
#define NT_VALIDATE_CYCLE_SHOW 6   /* node ids named in a cycle message */

/* One edge of the graph: which node it leaves, its label, where it points (-1: nowhere). */
typedef struct vedge {
    size_t from;
    long to;
} vedge_t;

typedef struct vctx {
    const Nt__Workflow *wf;
    const nt_modules_t *mods;
    nt_verrs_t *errs;
    int oom;              /* an allocation failed: the result is NT_ENOMEM */
    size_t *table;        /* open addressing: node index + 1, 0 = empty */
    size_t tcap;          /* power of two */
    vedge_t *edges;       /* edges grouped by source node, in node order */
    size_t nedges;
    size_t edges_cap;
    size_t *first;        /* first[i]..first[i+1]: edges of node i (n + 1 entries) */
    unsigned char *dup;   /* dup[i]: node i repeats an earlier id and is left out of the graph */
} vctx_t;

static const char *str(const char *s)
{
    return s != NULL ? s : "";
}

/* Append a problem; node may be NULL. Sets ctx->oom when memory runs out. */
static void add(vctx_t *ctx, const char *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void add(vctx_t *ctx, const char *node, const char *fmt, ...)
{
    nt_verrs_t *e = ctx->errs;
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 16;
        nt_verr_t *v = realloc(e->v, cap * sizeof(*v));
        if (v == NULL) {
            ctx->oom = 1;
            return;
        }
        e->v = v;
        e->cap = cap;
    }
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (r < 0) {
        ctx->oom = 1;
        return;
    }
    char *n = NULL;
    if (node != NULL) {
        n = strdup(node);
        if (n == NULL) {
            free(msg);
            ctx->oom = 1;
            return;
        }
    }
    e->v[e->n].node = n;
    e->v[e->n].msg = msg;
    e->n++;
}

/* Plan ids: 1..64 of [a-z0-9_-]. */
static int plan_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NT_VALIDATE_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Node ids: 1..64 of [A-Za-z0-9_.-]; they appear in Redis values, logs and Graphviz. */
static int node_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NT_VALIDATE_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* Index of the node with this id, or -1. */
static long lookup(const vctx_t *ctx, const char *id)
{
    if (ctx->table == NULL || id == NULL || *id == '\0')
        return -1;
    size_t mask = ctx->tcap - 1;
    for (size_t i = hash_str(id) & mask;; i = (i + 1) & mask) {
        size_t slot = ctx->table[i];
        if (slot == 0)
            return -1;
        if (strcmp(str(ctx->wf->nodes[slot - 1]->id), id) == 0)
            return (long)(slot - 1);
    }
}

/* Check node ids and index them. Duplicates are reported and only the first one is indexed. */
static void index_nodes(vctx_t *ctx)
{
    const Nt__Workflow *wf = ctx->wf;
    size_t n = wf->n_nodes;
    size_t cap = 16;
    while (cap < n * 2)
        cap *= 2;
    ctx->table = calloc(cap, sizeof(*ctx->table));
    ctx->dup = calloc(n ? n : 1, 1);
    if (ctx->table == NULL || ctx->dup == NULL) {
        ctx->oom = 1;
        return;
    }
    ctx->tcap = cap;
    for (size_t i = 0; i < n; i++) {
        const Nt__Node *node = wf->nodes[i];
        const char *id = str(node->id);
        if (*id == '\0') {
            add(ctx, NULL, "node #%zu has no id", i + 1);
            ctx->dup[i] = 1;
            continue;
        }
        if (!node_id_valid(id))
            add(ctx, id, "node id '%.80s%s' is invalid: use 1 to 64 of A-Z, a-z, 0-9, '_', "
                "'-' and '.'", id, strlen(id) > 80 ? "..." : "");
        size_t mask = cap - 1;
        for (size_t j = hash_str(id) & mask;; j = (j + 1) & mask) {
            size_t slot = ctx->table[j];
            if (slot == 0) {
                ctx->table[j] = i + 1;
                break;
            }
            if (strcmp(str(wf->nodes[slot - 1]->id), id) == 0) {
                add(ctx, id, "duplicate node id '%s' (node #%zu and node #%zu)", id, slot,
                    i + 1);
                ctx->dup[i] = 1;
                break;
            }
        }
    }
}

/* Record an edge of node i named `what` pointing to `to`. An empty target is reported only
 * when `required`; a target that names no node is always reported. */
static void edge(vctx_t *ctx, size_t i, const char *what, const char *to, int required)
{
    const char *id = str(ctx->wf->nodes[i]->id);
    to = str(to);
    long t = -1;
    if (*to == '\0') {
        if (required)
            add(ctx, id, "%s has no target node", what);
        return;
    }
    t = lookup(ctx, to);
    if (t < 0) {
        add(ctx, id, "%s points to missing node '%.80s'", what, to);
        return;
    }
    if (ctx->nedges == ctx->edges_cap) {
        size_t cap = ctx->edges_cap ? ctx->edges_cap * 2 : 64;
        vedge_t *v = realloc(ctx->edges, cap * sizeof(*v));
        if (v == NULL) {
            ctx->oom = 1;
            return;
        }
        ctx->edges = v;
        ctx->edges_cap = cap;
    }
    ctx->edges[ctx->nedges].from = i;
    ctx->edges[ctx->nedges].to = t;
    ctx->nedges++;
}

static int duration_zero(const Nt__Duration *d)
{
    return d == NULL || (d->days == 0 && d->hours == 0 && d->minutes == 0 && d->seconds == 0);
}

/* ---------------------------------------------------------------- conditions and attributes */

static int attr_declared(const Nt__Workflow *wf, const char *name)
{
    for (size_t i = 0; nt_builtin_attrs[i] != NULL; i++)
        if (strcmp(nt_builtin_attrs[i], name) == 0)
            return 1;
    for (size_t i = 0; i < wf->n_attributes; i++)
        if (strcmp(str(wf->attributes[i]->name), name) == 0)
            return 1;
    return 0;
}

static const char *op_name(Nt__Op op)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&nt__op__descriptor, op);
    return v != NULL ? v->name : "?";
}

static int stage_known(int stage)
{
    return stage >= NT__STAGE__INQUIRY && stage <= NT__STAGE__DISQUALIFIED;
}

/* Check one condition tree. where: "entry: ", "goal 'sql': ", "case 2: ".
 * Returns -1 when the nesting limit was hit (reported once by the caller), else 0. */
static int check_cond(vctx_t *ctx, const char *node, const char *where, const Nt__Condition *c,
                      int depth)
{
    if (c == NULL)
        return 0;
    if (depth > NT_VALIDATE_MAX_DEPTH)
        return -1;
    switch (c->kind_case) {
    case NT__CONDITION__KIND_ALL:
    case NT__CONDITION__KIND_ANY: {
        const Nt__Conditions *cs = c->kind_case == NT__CONDITION__KIND_ALL ? c->all : c->any;
        if (cs == NULL)
            return 0;
        for (size_t i = 0; i < cs->n_of; i++)
            if (check_cond(ctx, node, where, cs->of[i], depth + 1) < 0)
                return -1;
        return 0;
    }
    case NT__CONDITION__KIND_NEGATE:
        return check_cond(ctx, node, where, c->negate, depth + 1);
    case NT__CONDITION__KIND_ATTR: {
        const Nt__AttrCmp *a = c->attr;
        if (a == NULL)
            return 0;
        const char *name = str(a->name);
        if (*name == '\0')
            add(ctx, node, "%scondition on an attribute with no name", where);
        else if (strcmp(name, "score") == 0 || strcmp(name, "stage") == 0)
            add(ctx, node, "%scondition on attribute '%s': use a %s condition instead", where,
                name, name);
        else if (!nt_attr_name_valid(name))
            add(ctx, node, "%scondition on invalid attribute name '%.80s' (use 1 to 64 of "
                "a-z, 0-9 and '_')", where, name);
        else if (!attr_declared(ctx->wf, name))
            add(ctx, node, "%scondition on unknown attribute '%s' (declare it in attributes)",
                where, name);
        if ((int)a->op < NT__OP__EQ || (int)a->op > NT__OP__ABSENT)
            add(ctx, node, "%scondition on attribute '%s' has unknown op %d", where, name,
                (int)a->op);
        else if (a->op == NT__OP__IN && a->n_values == 0)
            add(ctx, node, "%scondition on attribute '%s' uses IN with no values", where, name);
        return 0;
    }
    case NT__CONDITION__KIND_SCORE:
        if (c->score != NULL && ((int)c->score->op < NT__OP__EQ || c->score->op > NT__OP__GE))
            add(ctx, node, "%sscore condition uses op %s: use EQ, NE, LT, LE, GT or GE", where,
                op_name(c->score->op));
        return 0;
    case NT__CONDITION__KIND_STAGE:
        if (c->stage == NULL)
            return 0;
        if ((int)c->stage->op < NT__OP__EQ || c->stage->op > NT__OP__GE)
            add(ctx, node, "%sstage condition uses op %s: use EQ, NE, LT, LE, GT or GE", where,
                op_name(c->stage->op));
        if (!stage_known((int)c->stage->stage))
            add(ctx, node, "%sstage condition has no valid stage (inquiry, mql, sal, sql, "
                "opportunity, won, lost or disqualified)", where);
        return 0;
    case NT__CONDITION__KIND_EVENT_SEEN:
        if (c->event_seen != NULL && *str(c->event_seen->type) == '\0')
            add(ctx, node, "%sevent_seen condition has no event type", where);
        return 0;
    default:
        return 0;
    }
}

static void check_cond_top(vctx_t *ctx, const char *node, const char *where,
                           const Nt__Condition *c)
{
    if (check_cond(ctx, node, where, c, 1) < 0)
        add(ctx, node, "%scondition is nested deeper than %d levels", where,
            NT_VALIDATE_MAX_DEPTH);
}

/* Names an update may not touch: the lead's id, and score and stage, which have their own
 * fields (add_score, stage) so that they stay numbers and funnel stages. */
static const char *reserved_hint(const char *name)
{
    if (strcmp(name, "id") == 0)
        return "the lead id never changes";
    if (strcmp(name, "score") == 0)
        return "use add_score";
    if (strcmp(name, "stage") == 0)
        return "use stage";
    return NULL;
}

static void check_update_attr(vctx_t *ctx, const char *node, const char *verb, const char *name)
{
    const char *hint;
    if (*name == '\0')
        add(ctx, node, "update %s an attribute with no name", verb);
    else if ((hint = reserved_hint(name)) != NULL)
        add(ctx, node, "update cannot %s reserved attribute '%s' (%s)",
            strcmp(verb, "sets") == 0 ? "set" : "unset", name, hint);
    else if (!nt_attr_name_valid(name))
        add(ctx, node, "update %s invalid attribute name '%.80s' (use 1 to 64 of a-z, 0-9 and "
            "'_', not starting with '_')", verb, name);
    else if (!attr_declared(ctx->wf, name))
        add(ctx, node, "update %s unknown attribute '%s' (declare it in attributes)", verb,
            name);
}

/* ---------------------------------------------------------------- node kinds */

static void check_send(vctx_t *ctx, size_t i)
{
    const Nt__Node *node = ctx->wf->nodes[i];
    const char *id = str(node->id);
    const Nt__Send *s = node->send;
    const char *ch = str(s->channel);
    const nt_module_t *m = NULL;

    if (*ch == '\0') {
        add(ctx, id, "send has no channel");
    } else if (ctx->mods != NULL) {
        m = nt_modules_find(ctx->mods, ch);
        if (m == NULL) {
            size_t n = nt_modules_count(ctx->mods);
            char *known = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&known, &len);
            if (f == NULL) {
                ctx->oom = 1;
                return;
            }
            for (size_t k = 0; k < n; k++)
                fprintf(f, "%s%s", k ? ", " : "", nt_modules_at(ctx->mods, k)->ops->name);
            fclose(f);
            if (n == 0)
                add(ctx, id, "unknown channel '%.80s' (no channels are loaded)", ch);
            else
                add(ctx, id, "unknown channel '%.80s' (known: %s)", ch, known);
            free(known);
        }
    }

    /* Parameters: names present once, required ones there, none unknown, then the hook. */
    for (size_t p = 0; p < s->n_params; p++) {
        const char *pn = str(s->params[p]->name);
        if (*pn == '\0') {
            add(ctx, id, "parameter #%zu has no name", p + 1);
            continue;
        }
        for (size_t q = 0; q < p; q++)
            if (strcmp(str(s->params[q]->name), pn) == 0) {
                add(ctx, id, "parameter '%.80s' is given twice", pn);
                break;
            }
    }
    if (m != NULL && m->ops->params != NULL) {
        const nt_channel_param_t *defs = m->ops->params;
        for (size_t d = 0; defs[d].name != NULL; d++) {
            if (!defs[d].required)
                continue;
            int found = 0;
            for (size_t p = 0; p < s->n_params && !found; p++)
                found = strcmp(str(s->params[p]->name), defs[d].name) == 0;
            if (!found)
                add(ctx, id, "channel '%s' needs parameter '%s' (%s)", ch, defs[d].name,
                    defs[d].description != NULL ? defs[d].description : "required");
        }
        for (size_t p = 0; p < s->n_params; p++) {
            const char *pn = str(s->params[p]->name);
            int found = 0;
            for (size_t d = 0; defs[d].name != NULL && !found; d++)
                found = strcmp(defs[d].name, pn) == 0;
            if (!found && *pn != '\0') {
                char *known = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&known, &len);
                if (f == NULL) {
                    ctx->oom = 1;
                    return;
                }
                for (size_t d = 0; defs[d].name != NULL; d++)
                    fprintf(f, "%s%s", d ? ", " : "", defs[d].name);
                fclose(f);
                add(ctx, id, "channel '%s' has no parameter '%.80s' (known: %s)", ch, pn,
                    *known ? known : "none");
                free(known);
            }
        }
    }
    if (m != NULL && m->ops->validate != NULL) {
        nt_kv_t *kv = calloc(s->n_params ? s->n_params : 1, sizeof(*kv));
        if (kv == NULL) {
            ctx->oom = 1;
            return;
        }
        for (size_t p = 0; p < s->n_params; p++) {
            kv[p].key = str(s->params[p]->name);
            kv[p].value = str(s->params[p]->value);
        }
        char *err = NULL;
        nt_rc_t rc = m->ops->validate(kv, s->n_params, &err);
        if (rc != NT_OK)
            add(ctx, id, "channel '%s' refuses the parameters: %s", ch,
                err != NULL ? err : nt_strerror(rc));
        free(err);
        free(kv);
    }

    /* Outcome edges. */
    for (size_t e = 0; e < s->n_on; e++) {
        const Nt__Edge *ed = s->on[e];
        const char *out = str(ed->outcome);
        if (*out == '\0') {
            add(ctx, id, "edge #%zu in 'on' has no outcome", e + 1);
            continue;
        }
        for (size_t q = 0; q < e; q++)
            if (strcmp(str(s->on[q]->outcome), out) == 0) {
                add(ctx, id, "outcome '%.80s' has more than one edge", out);
                break;
            }
        if (m != NULL && !nt_module_has_outcome(m, out)) {
            char *known = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&known, &len);
            if (f == NULL) {
                ctx->oom = 1;
                return;
            }
            fprintf(f, "sent, failed");
            for (size_t k = 0; m->ops->outcomes != NULL && m->ops->outcomes[k] != NULL; k++)
                fprintf(f, ", %s", m->ops->outcomes[k]);
            fclose(f);
            add(ctx, id, "channel '%s' never reports outcome '%.80s' (it reports: %s)", ch, out,
                known);
            free(known);
        }
        char what[128];
        snprintf(what, sizeof(what), "edge '%.80s'", out);
        edge(ctx, i, what, ed->to, 1);
    }
    edge(ctx, i, "edge 'next'", s->next, 0);
    if (*str(s->next) == '\0' && s->n_on == 0)
        add(ctx, id, "send has no edge: give it 'next' or at least one 'on' outcome edge");

    int has_timeout = !duration_zero(s->timeout);
    if (has_timeout && *str(s->on_timeout) == '\0')
        add(ctx, id, "send has a timeout but no on_timeout node");
    else if (!has_timeout && *str(s->on_timeout) != '\0')
        add(ctx, id, "send has on_timeout but no timeout (or a zero one)");
    edge(ctx, i, "edge 'on_timeout'", s->on_timeout, 0);
}

/* "YYYY-MM-DDTHH:MM", optionally followed by "Z", with a real calendar date. */
static int date_valid(const char *s)
{
    static const char pat[] = "dddd-dd-ddTdd:dd";
    size_t n = strlen(s);
    if (n != 16 && !(n == 17 && s[16] == 'Z'))
        return 0;
    for (size_t i = 0; i < 16; i++) {
        if (pat[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != pat[i])
            return 0;
    }
    int y = atoi(s), mo = atoi(s + 5), d = atoi(s + 8), h = atoi(s + 11), mi = atoi(s + 14);
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || h > 23 || mi > 59 || d < 1)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    int max = mdays[mo - 1] + (mo == 2 && leap);
    return d <= max;
}

static void check_wait(vctx_t *ctx, size_t i)
{
    const Nt__Node *node = ctx->wf->nodes[i];
    const char *id = str(node->id);
    const Nt__Wait *w = node->wait;
    switch (w->until_case) {
    case NT__WAIT__UNTIL_DURATION:
        break; /* zero means pass through */
    case NT__WAIT__UNTIL_WINDOW: {
        const Nt__LocalWindow *win = w->window;
        if (win == NULL)
            break;
        int s = nt_tz_parse_hhmm(str(win->start));
        int e = nt_tz_parse_hhmm(str(win->end));
        if (s < 0)
            add(ctx, id, "window start '%.40s' is not a time \"HH:MM\"", str(win->start));
        if (e < 0)
            add(ctx, id, "window end '%.40s' is not a time \"HH:MM\"", str(win->end));
        if (s >= 0 && e >= 0 && e <= s)
            add(ctx, id, "window end %s is not after its start %s", str(win->end),
                str(win->start));
        for (size_t d = 0; d < win->n_days; d++)
            if ((int)win->days[d] < NT__WEEKDAY__MON || (int)win->days[d] > NT__WEEKDAY__SUN) {
                add(ctx, id, "window day #%zu is not a weekday (MON..SUN)", d + 1);
                break;
            }
        break;
    }
    case NT__WAIT__UNTIL_DATE:
        if (!date_valid(str(w->date)))
            add(ctx, id, "date '%.40s' is not \"YYYY-MM-DDTHH:MM\" (local) or "
                "\"YYYY-MM-DDTHH:MMZ\" (UTC)", str(w->date));
        break;
    default:
        add(ctx, id, "wait has no duration, window or date");
        break;
    }
    if (*str(w->next) == '\0')
        add(ctx, id, "wait has no next node");
    edge(ctx, i, "edge 'next'", w->next, 0);
}

static void check_wait_event(vctx_t *ctx, size_t i)
{
    const Nt__Node *node = ctx->wf->nodes[i];
    const char *id = str(node->id);
    const Nt__WaitEvent *w = node->wait_event;
    if (w->filter == NULL || *str(w->filter->type) == '\0')
        add(ctx, id, "wait_event has no filter type (the event type to wait for)");
    if (w->filter != NULL)
        for (size_t a = 0; a < w->filter->n_or_types; a++)
            if (*str(w->filter->or_types[a]) == '\0')
                add(ctx, id, "filter or_types #%zu is empty", a + 1);
    if (w->filter != NULL)
        for (size_t a = 0; a < w->filter->n_attrs; a++)
            if (*str(w->filter->attrs[a]->name) == '\0')
                add(ctx, id, "filter attribute #%zu has no name", a + 1);
    if (*str(w->on_match) == '\0')
        add(ctx, id, "wait_event has no on_match node");
    edge(ctx, i, "edge 'on_match'", w->on_match, 0);
    int has_timeout = !duration_zero(w->timeout);
    if (has_timeout && *str(w->on_timeout) == '\0')
        add(ctx, id, "wait_event has a timeout but no on_timeout node");
    else if (!has_timeout && *str(w->on_timeout) != '\0')
        add(ctx, id, "wait_event has on_timeout but no timeout (or a zero one)");
    edge(ctx, i, "edge 'on_timeout'", w->on_timeout, 0);
}

static void check_branch(vctx_t *ctx, size_t i)
{
    const Nt__Node *node = ctx->wf->nodes[i];
    const char *id = str(node->id);
    const Nt__Branch *b = node->branch;
    if (b->n_cases == 0)
        add(ctx, id, "branch has no cases");
    for (size_t c = 0; c < b->n_cases; c++) {
        const Nt__Case *cs = b->cases[c];
        char where[64];
        snprintf(where, sizeof(where), "case %zu: ", c + 1);
        if (cs->when == NULL)
            add(ctx, id, "case %zu has no condition", c + 1);
        check_cond_top(ctx, id, where, cs->when);
        char what[64];
        snprintf(what, sizeof(what), "edge 'case %zu'", c + 1);
        edge(ctx, i, what, cs->to, 1);
    }
    if (*str(b->default_) == '\0')
        add(ctx, id, "branch has no default node (where leads go when no case holds)");
    edge(ctx, i, "edge 'default'", b->default_, 0);
}

static void check_split(vctx_t *ctx, size_t i)
{
    const Nt__Node *node = ctx->wf->nodes[i];
    const char *id = str(node->id);
    const Nt__Split *s = node->split;
    uint64_t total = 0;
    if (s->n_arms == 0) {
        add(ctx, id, "split has no arms");
        return;
    }
    for (size_t a = 0; a < s->n_arms; a++) {
        const Nt__Arm *arm = s->arms[a];
        total += arm->weight;
        char what[128];
        if (*str(arm->name) != '\0')
            snprintf(what, sizeof(what), "edge 'arm %.80s'", arm->name);
        else
            snprintf(what, sizeof(what), "edge 'arm #%zu'", a + 1);
        edge(ctx, i, what, arm->to, 1);
    }
    if (total == 0)
        add(ctx, id, "split arms have a total weight of 0");
    else if (total > UINT32_MAX)
        add(ctx, id, "split arms have a total weight above %u", (unsigned)UINT32_MAX);
}

static void check_update(vctx_t *ctx, size_t i)
{
    const Nt__Node *node = ctx->wf->nodes[i];
    const char *id = str(node->id);
    const Nt__Update *u = node->update;
    for (size_t s = 0; s < u->n_set; s++)
        check_update_attr(ctx, id, "sets", str(u->set[s]->name));
    for (size_t s = 0; s < u->n_unset; s++)
        check_update_attr(ctx, id, "unsets", str(u->unset[s]));
    if ((int)u->stage != NT__STAGE__STAGE_UNSPECIFIED && !stage_known((int)u->stage))
        add(ctx, id, "update sets unknown stage %d", (int)u->stage);
    if (*str(u->next) == '\0')
        add(ctx, id, "update has no next node");
    edge(ctx, i, "edge 'next'", u->next, 0);
}

/* ---------------------------------------------------------------- graph checks */

static void check_reachable(vctx_t *ctx, long start)
{
    size_t n = ctx->wf->n_nodes;
    unsigned char *seen = calloc(n, 1);
    size_t *queue = malloc(n * sizeof(*queue));
    if (seen == NULL || queue == NULL) {
        ctx->oom = 1;
        goto done;
    }
    size_t head = 0, tail = 0;
    seen[start] = 1;
    queue[tail++] = (size_t)start;
    while (head < tail) {
        size_t v = queue[head++];
        for (size_t e = ctx->first[v]; e < ctx->first[v + 1]; e++) {
            size_t t = (size_t)ctx->edges[e].to;
            if (!seen[t]) {
                seen[t] = 1;
                queue[tail++] = t;
            }
        }
    }
    for (size_t i = 0; i < n; i++)
        if (!seen[i] && !ctx->dup[i])
            add(ctx, str(ctx->wf->nodes[i]->id), "node is not reachable from start node '%s'",
                str(ctx->wf->start));
done:
    free(seen);
    free(queue);
}

/* A node where a lead may pass without stopping: branch, split, update, and waits that can
 * end at once (a zero duration, a window the lead is inside, a date in the past). */
static int passes_through(const Nt__Node *node)
{
    switch (node->kind_case) {
    case NT__NODE__KIND_BRANCH:
    case NT__NODE__KIND_SPLIT:
    case NT__NODE__KIND_UPDATE:
        return 1;
    case NT__NODE__KIND_WAIT:
        return node->wait->until_case != NT__WAIT__UNTIL_DURATION ||
               duration_zero(node->wait->duration);
    default:
        return 0;
    }
}

/* Tarjan's strongly connected components over the pass-through nodes, without recursion.
 * Every component with more than one node, or a node with an edge to itself, is a loop a
 * lead could run around forever within one step. */
static void check_cycles(vctx_t *ctx)
{
    const Nt__Workflow *wf = ctx->wf;
    size_t n = wf->n_nodes;
    const size_t UNSET = SIZE_MAX;
    size_t *index = malloc(n * sizeof(size_t));
    size_t *low = malloc(n * sizeof(size_t));
    size_t *edge_pos = malloc(n * sizeof(size_t));
    size_t *call = malloc(n * sizeof(size_t));   /* DFS call stack of nodes */
    size_t *stack = malloc(n * sizeof(size_t));  /* Tarjan's component stack */
    unsigned char *on = calloc(n, 1);
    unsigned char *pt = calloc(n, 1);
    if (!index || !low || !edge_pos || !call || !stack || !on || !pt) {
        ctx->oom = 1;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        index[i] = UNSET;
        pt[i] = !ctx->dup[i] && passes_through(wf->nodes[i]);
    }
    size_t next_index = 0, sp = 0;
    for (size_t root = 0; root < n; root++) {
        if (!pt[root] || index[root] != UNSET)
            continue;
        size_t cp = 0;
        call[cp++] = root;
        index[root] = low[root] = next_index++;
        edge_pos[root] = ctx->first[root];
        stack[sp++] = root;
        on[root] = 1;
        while (cp > 0) {
            size_t v = call[cp - 1];
            if (edge_pos[v] < ctx->first[v + 1]) {
                size_t w = (size_t)ctx->edges[edge_pos[v]++].to;
                if (!pt[w])
                    continue;
                if (index[w] == UNSET) {
                    index[w] = low[w] = next_index++;
                    edge_pos[w] = ctx->first[w];
                    stack[sp++] = w;
                    on[w] = 1;
                    call[cp++] = w;
                } else if (on[w] && index[w] < low[v]) {
                    low[v] = index[w];
                }
                continue;
            }
            cp--;
            if (cp > 0) {
                size_t parent = call[cp - 1];
                if (low[v] < low[parent])
                    low[parent] = low[v];
            }
            if (low[v] != index[v])
                continue;
            /* v roots a component: the stack from v upwards. */
            size_t base = sp;
            while (stack[base - 1] != v)
                base--;
            base--;
            size_t size = sp - base;
            int loop = size > 1;
            if (!loop)
                for (size_t e = ctx->first[v]; e < ctx->first[v + 1] && !loop; e++)
                    loop = (size_t)ctx->edges[e].to == v;
            if (loop) {
                /* Name the component by its first node in plan order, and show a few ids. */
                size_t lead = stack[base];
                for (size_t k = base; k < sp; k++)
                    if (stack[k] < lead)
                        lead = stack[k];
                char *ids = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&ids, &len);
                if (f == NULL) {
                    ctx->oom = 1;
                    goto done;
                }
                size_t shown = 0;
                for (size_t k = base; k < sp && shown < NT_VALIDATE_CYCLE_SHOW; k++, shown++)
                    fprintf(f, "%s'%s'", shown ? ", " : "", str(wf->nodes[stack[k]]->id));
                if (size > shown)
                    fprintf(f, " and %zu more", size - shown);
                fclose(f);
                add(ctx, str(wf->nodes[lead]->id),
                    "cycle through %s has no resting node (send, wait_event, or wait with a "
                    "duration): a lead would loop forever", ids);
                free(ids);
            }
            for (size_t k = base; k < sp; k++)
                on[stack[k]] = 0;
            sp = base;
        }
    }
done:
    free(index);
    free(low);
    free(edge_pos);
    free(call);
    free(stack);
    free(on);
    free(pt);
}

/* ---------------------------------------------------------------- entry point */

nt_rc_t nt_validate(const Nt__Workflow *wf, const nt_modules_t *mods, nt_verrs_t *errs)
{
    size_t before = errs->n;
    vctx_t ctx = {.wf = wf, .mods = mods, .errs = errs};

    const char *pid = str(wf->id);
    if (*pid == '\0')
        add(&ctx, NULL, "plan has no id");
    else if (!plan_id_valid(pid))
        add(&ctx, NULL, "plan id '%.80s%s' is invalid: use 1 to 64 of a-z, 0-9, '_' and '-'",
            pid, strlen(pid) > 80 ? "..." : "");

    /* Attributes the plan declares. */
    for (size_t a = 0; a < wf->n_attributes; a++) {
        const char *name = str(wf->attributes[a]->name);
        if (reserved_hint(name) != NULL)
            add(&ctx, NULL, "attribute '%s' is reserved and cannot be declared (%s)", name,
                reserved_hint(name));
        else if (!nt_attr_name_valid(name))
            add(&ctx, NULL, "declared attribute name '%.80s' is invalid (use 1 to 64 of a-z, "
                "0-9 and '_', not starting with '_')", name);
    }

    check_cond_top(&ctx, NULL, "entry: ", wf->entry);
    for (size_t g = 0; g < wf->n_goals; g++) {
        const Nt__Goal *goal = wf->goals[g];
        char where[128];
        if (*str(goal->name) != '\0')
            snprintf(where, sizeof(where), "goal '%.80s': ", goal->name);
        else
            snprintf(where, sizeof(where), "goal #%zu: ", g + 1);
        if (goal->when == NULL || goal->when->kind_case == NT__CONDITION__KIND__NOT_SET)
            add(&ctx, NULL, "%sgoal has no condition", where);
        else
            check_cond_top(&ctx, NULL, where, goal->when);
    }

    size_t n = wf->n_nodes;
    if (n == 0) {
        add(&ctx, NULL, "plan has no nodes");
        goto out;
    }
    index_nodes(&ctx);
    ctx.first = malloc((n + 1) * sizeof(*ctx.first));
    if (ctx.oom || ctx.first == NULL) {
        ctx.oom = 1;
        goto out;
    }

    long start = -1;
    if (*str(wf->start) == '\0') {
        add(&ctx, NULL, "plan has no start node");
    } else {
        start = lookup(&ctx, wf->start);
        if (start < 0)
            add(&ctx, NULL, "start node '%.80s' does not exist", wf->start);
    }

    for (size_t i = 0; i < n; i++) {
        const Nt__Node *node = wf->nodes[i];
        ctx.first[i] = ctx.nedges;
        switch (node->kind_case) {
        case NT__NODE__KIND_SEND:
            check_send(&ctx, i);
            break;
        case NT__NODE__KIND_WAIT:
            check_wait(&ctx, i);
            break;
        case NT__NODE__KIND_WAIT_EVENT:
            check_wait_event(&ctx, i);
            break;
        case NT__NODE__KIND_BRANCH:
            check_branch(&ctx, i);
            break;
        case NT__NODE__KIND_SPLIT:
            check_split(&ctx, i);
            break;
        case NT__NODE__KIND_UPDATE:
            check_update(&ctx, i);
            break;
        case NT__NODE__KIND_EXIT:
            break;
        default:
            add(&ctx, *str(node->id) ? node->id : NULL,
                "node has no kind (send, wait, wait_event, branch, split, update or exit)");
            break;
        }
        if (ctx.dup[i])
            ctx.nedges = ctx.first[i]; /* a duplicate is not part of the graph */
        if (ctx.oom)
            goto out;
    }
    ctx.first[n] = ctx.nedges;

    if (start >= 0)
        check_reachable(&ctx, start);
    check_cycles(&ctx);

out:
    free(ctx.table);
    free(ctx.edges);
    free(ctx.first);
    free(ctx.dup);
    if (ctx.oom)
        return NT_ENOMEM;
    return errs->n > before ? NT_EINVAL : NT_OK;
}

void nt_verrs_fini(nt_verrs_t *errs)
{
    if (errs == NULL)
        return;
    for (size_t i = 0; i < errs->n; i++) {
        free(errs->v[i].node);
        free(errs->v[i].msg);
    }
    free(errs->v);
    errs->v = NULL;
    errs->n = errs->cap = 0;
}
