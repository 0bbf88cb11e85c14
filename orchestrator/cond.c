/* Evaluation of nt.Condition trees against a lead snapshot. Plans come from outside (HTTP,
 * Redis), so evaluation is bounded: nesting deeper than COND_MAX_DEPTH makes the whole
 * condition false instead of recursing further. */
#include "cond.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define COND_MAX_DEPTH 32

/* Evaluation result inside the tree: TOO_DEEP propagates to the top, through negations too,
 * so that a hostile plan cannot flip a truncated subtree into "true". */
enum { C_FALSE = 0, C_TRUE = 1, C_TOO_DEEP = -1 };

typedef struct num {
    int is_int;
    long long i;
    double d;
} num_t;

/* Parse s completely as a decimal number (integer or floating, no spaces, no hex, no
 * inf/nan). Returns 1 and fills *n, or 0. */
static int parse_num(const char *s, num_t *n)
{
    const char *p;
    char *end;
    int digits = 0;

    if (s == NULL || *s == '\0')
        return 0;
    for (p = s; *p != '\0'; p++) {
        if (*p >= '0' && *p <= '9')
            digits = 1;
        else if (*p != '+' && *p != '-' && *p != '.' && *p != 'e' && *p != 'E')
            return 0;
    }
    if (!digits)
        return 0;
    errno = 0;
    n->i = strtoll(s, &end, 10);
    if (*end == '\0' && errno == 0) {
        n->is_int = 1;
        n->d = (double)n->i;
        return 1;
    }
    errno = 0;
    n->is_int = 0;
    n->d = strtod(s, &end);
    if (*end != '\0' || !isfinite(n->d))
        return 0;
    return 1;
}

/* -1, 0, 1 for a <=> b as numbers. */
static int num_cmp(const num_t *a, const num_t *b)
{
    if (a->is_int && b->is_int)
        return a->i < b->i ? -1 : a->i > b->i;
    return a->d < b->d ? -1 : a->d > b->d;
}

/* Apply an ordering op to a three-way comparison result. */
static int op_holds(Nt__Op op, int c)
{
    switch (op) {
    case NT__OP__EQ:
        return c == 0;
    case NT__OP__NE:
        return c != 0;
    case NT__OP__LT:
        return c < 0;
    case NT__OP__LE:
        return c <= 0;
    case NT__OP__GT:
        return c > 0;
    case NT__OP__GE:
        return c >= 0;
    default:
        return 0;
    }
}

static int i64_cmp(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

/* Compare attribute value a with b under op. Semantics:
 *   PRESENT   a is set and not empty; ABSENT the opposite (b is ignored).
 *   CONTAINS  b is a case-insensitive substring of a.
 *   IN        as EQ with this one value (nt_cond_eval applies it over AttrCmp.values).
 *   others    as numbers when both parse completely as numbers, else case-insensitive strings.
 * An absent attribute (a NULL) satisfies only NE and ABSENT. Returns 1 or 0. */
int nt_cond_compare(const char *a, Nt__Op op, const char *b)
{
    num_t x, y;
    int c;

    if (op == NT__OP__PRESENT)
        return a != NULL && *a != '\0';
    if (op == NT__OP__ABSENT)
        return a == NULL || *a == '\0';
    if (a == NULL)
        return op == NT__OP__NE;
    if (b == NULL)
        b = "";
    if (op == NT__OP__IN)
        op = NT__OP__EQ;
    if (op == NT__OP__CONTAINS)
        return strcasestr(a, b) != NULL;
    if (parse_num(a, &x) && parse_num(b, &y))
        c = num_cmp(&x, &y);
    else
        c = strcasecmp(a, b);
    return op_holds(op, c);
}

static int attr_eval(const Nt__AttrCmp *ac, const nt_lead_t *lead)
{
    const char *v;
    size_t i;

    if (ac == NULL || ac->name == NULL)
        return 0;
    v = nt_lead_get(lead, ac->name);
    if (ac->op == NT__OP__IN) {
        if (v == NULL)
            return 0;
        for (i = 0; i < ac->n_values; i++) {
            if (nt_cond_compare(v, NT__OP__EQ, ac->values[i]))
                return 1;
        }
        return 0;
    }
    return nt_cond_compare(v, ac->op, ac->value);
}

static int64_t span_seconds(const Nt__Duration *d)
{
    if (d == NULL)
        return 0;
    return (int64_t)d->days * 86400 + (int64_t)d->hours * 3600 + (int64_t)d->minutes * 60 +
           (int64_t)d->seconds;
}

static int seen_eval(const Nt__EventSeen *es, const nt_lead_t *lead, int64_t now_ms)
{
    int64_t seen, within;

    if (es == NULL)
        return 0;
    seen = nt_lead_seen_ms(lead, es->type);
    if (seen <= 0)
        return 0;
    within = span_seconds(es->within);
    if (within == 0)
        return 1;
    return now_ms - seen <= within * 1000;
}

static int eval(const Nt__Condition *cond, const nt_lead_t *lead, int64_t now_ms, int depth)
{
    size_t i;
    int r;

    if (cond == NULL)
        return C_TRUE;
    if (depth > COND_MAX_DEPTH)
        return C_TOO_DEEP;
    switch (cond->kind_case) {
    case NT__CONDITION__KIND_ALL:
        if (cond->all == NULL)
            return C_TRUE;
        for (i = 0; i < cond->all->n_of; i++) {
            r = eval(cond->all->of[i], lead, now_ms, depth + 1);
            if (r != C_TRUE)
                return r;
        }
        return C_TRUE;
    case NT__CONDITION__KIND_ANY:
        if (cond->any == NULL)
            return C_FALSE;
        for (i = 0; i < cond->any->n_of; i++) {
            r = eval(cond->any->of[i], lead, now_ms, depth + 1);
            if (r != C_FALSE)
                return r;
        }
        return C_FALSE;
    case NT__CONDITION__KIND_NEGATE:
        r = eval(cond->negate, lead, now_ms, depth + 1);
        if (r == C_TOO_DEEP)
            return r;
        return r == C_TRUE ? C_FALSE : C_TRUE;
    case NT__CONDITION__KIND_ATTR:
        return attr_eval(cond->attr, lead);
    case NT__CONDITION__KIND_SCORE:
        if (cond->score == NULL)
            return C_FALSE;
        return op_holds(cond->score->op, i64_cmp(nt_lead_score(lead), cond->score->value));
    case NT__CONDITION__KIND_STAGE:
        /* Funnel order is the enum order; an unknown stage sorts before inquiry. */
        if (cond->stage == NULL)
            return C_FALSE;
        return op_holds(cond->stage->op, i64_cmp(nt_lead_stage(lead), cond->stage->stage));
    case NT__CONDITION__KIND_EVENT_SEEN:
        return seen_eval(cond->event_seen, lead, now_ms);
    case NT__CONDITION__KIND_ALWAYS:
        return cond->always ? C_TRUE : C_FALSE;
    default:
        return C_TRUE;
    }
}

/* 1 when cond holds for lead at now_ms, else 0. NULL or kind-less conditions hold; a tree
 * nested deeper than 32 levels does not hold, whatever its shape. Score and stage accept
 * EQ NE LT LE GT GE (other ops do not hold). */
int nt_cond_eval(const Nt__Condition *cond, const nt_lead_t *lead, int64_t now_ms)
{
    return eval(cond, lead, now_ms, 1) == C_TRUE;
}
