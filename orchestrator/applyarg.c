/* apply.lua's argument, the parts derived from a decision (see applyarg.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "applyarg.h"
#include "lead.h"

struct nt_funnel_sum {
    char *plan;
    char *field;            /* "<version>:<node>:in", ...; NULL: empty slot */
    uint32_t hash;
    long long n;
};

void nt_funnel_init(nt_funnel_t *f)
{
    memset(f, 0, sizeof(*f));
    nt_mp_init(&f->per);
}

void nt_funnel_fini(nt_funnel_t *f)
{
    for (size_t i = 0; i < f->cap; i++) {
        free(f->fs[i].plan);
        free(f->fs[i].field);
    }
    free(f->fs);
    free(f->key);
    nt_mp_fini(&f->per);
    memset(f, 0, sizeof(*f));
}

/* FNV-1a, continuing from h. */
static uint32_t fnv1a(const char *s, uint32_t h)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

static int fsum_grow(nt_funnel_t *b)
{
    size_t cap = b->cap ? 2 * b->cap : 64;
    nt_funnel_sum_t *v = calloc(cap, sizeof(*v));

    if (!v)
        return -1;
    for (size_t i = 0; i < b->cap; i++) {
        size_t j;

        if (!b->fs[i].field)
            continue;
        for (j = b->fs[i].hash & (cap - 1); v[j].field; j = (j + 1) & (cap - 1))
            ;
        v[j] = b->fs[i];
    }
    free(b->fs);
    b->fs = v;
    b->cap = cap;
    return 0;
}

/* Add n to the sum of the plan's funnel counter field. */
static int fsum_add(nt_funnel_t *b, const char *plan, const char *field, long long n)
{
    uint32_t h = fnv1a(field, fnv1a(plan, 2166136261u));
    size_t i;

    if (2 * (b->n + 1) > b->cap && fsum_grow(b) != 0)
        return -1;
    for (i = h & (b->cap - 1); b->fs[i].field; i = (i + 1) & (b->cap - 1)) {
        nt_funnel_sum_t *e = &b->fs[i];

        if (e->hash == h && strcmp(e->field, field) == 0 && strcmp(e->plan, plan) == 0) {
            e->n += n;
            return 0;
        }
    }
    b->fs[i].plan = strdup(plan);
    b->fs[i].field = strdup(field);
    if (!b->fs[i].plan || !b->fs[i].field) {
        free(b->fs[i].plan);
        free(b->fs[i].field);
        b->fs[i].plan = b->fs[i].field = NULL;
        return -1;
    }
    b->fs[i].hash = h;
    b->fs[i].n = n;
    b->n++;
    return 0;
}

int nt_funnel_pack(const nt_funnel_t *f, nt_mp_t *m)
{
    char *done = calloc(f->cap ? f->cap : 1, 1);
    size_t at = nt_mp_array_open(m);
    uint32_t nplans = 0;
    nt_mp_t head;

    if (!done)
        return -1;
    for (size_t i = 0; i < f->cap; i++) {
        const char *plan = f->fs[i].plan;
        uint32_t k = 0;

        if (!f->fs[i].field || done[i])
            continue;
        for (size_t j = i; j < f->cap; j++)
            if (f->fs[j].field && !done[j] && strcmp(f->fs[j].plan, plan) == 0)
                k++;
        nt_mp_cstr(m, plan);
        nt_mp_array(m, 2 * k);
        for (size_t j = i; j < f->cap; j++) {
            if (!f->fs[j].field || done[j] || strcmp(f->fs[j].plan, plan) != 0)
                continue;
            done[j] = 1;
            nt_mp_cstr(m, f->fs[j].field);
            nt_mp_int(m, f->fs[j].n);
        }
        nplans++;
    }
    free(done);
    nt_mp_array_fix(m, at, 2 * nplans);

    nt_mp_init(&head);
    nt_mp_array(&head, f->ndec);
    nt_mp_str_head(m, head.len + f->per.len);
    nt_mp_raw(m, head.buf, head.len);
    nt_mp_raw(m, f->per.buf, f->per.len);
    if (head.oom || f->per.oom)
        m->oom = 1;
    nt_mp_fini(&head);
    return m->oom ? -1 : 0;
}

/* One counter: field "<version>:<a><c>" of the run's plan moved by delta. */
static int count(nt_funnel_t *f, const nt_run_t *run, const char *a, const char *c, int delta)
{
    int n = snprintf(NULL, 0, "%u:%s%s", (unsigned)run->version, a, c);

    if (n < 0)
        return -1;
    if ((size_t)n + 1 > f->ckey) {
        char *k = realloc(f->key, (size_t)n + 1);

        if (!k)
            return -1;
        f->key = k;
        f->ckey = (size_t)n + 1;
    }
    snprintf(f->key, f->ckey, "%u:%s%s", (unsigned)run->version, a, c);
    nt_mp_str(&f->per, f->key, (size_t)n);
    nt_mp_int(&f->per, delta);
    return fsum_add(f, run->plan_id, f->key, delta);
}

int nt_funnel_add(nt_funnel_t *f, const nt_run_t *run, const nt_decision_t *d)
{
    int done = d->status == NT_RUN_DONE;

    nt_mp_array(&f->per, (uint32_t)(2 * (d->npath + (d->left ? 1 : 0) + (done ? 2 : 1))));
    f->ndec++;
    if (d->left && count(f, run, d->left, ":cur", -1) != 0)
        return -1;
    for (size_t i = 0; i < d->npath; i++)
        if (count(f, run, d->path[i], ":in", 1) != 0)
            return -1;
    if (done)
        return count(f, run, "active", "", -1) != 0 ||
                       count(f, run, "exit:", d->exit_reason ? d->exit_reason : "", 1) != 0
                   ? -1 : 0;
    return count(f, run, d->node ? d->node : "", ":cur", 1);
}

void nt_apply_list(nt_mp_t *m, uint32_t n)
{
    if (n)
        nt_mp_array(m, n);
    else
        nt_mp_str(m, "", 0);
}

void nt_apply_run_fields(nt_mp_t *m, const nt_run_t *run, const nt_decision_t *d, int64_t now)
{
    int done = d->status == NT_RUN_DONE;
    int64_t due = done ? 0 : d->due_ms;
    int dch = due != run->due_ms;

    nt_mp_cstr(m, d->node ? d->node : "");
    nt_mp_int(m, (long long)run->token + 1);
    nt_mp_int(m, d->visit);
    nt_apply_list(m, 2 * ((dch ? 1 : 0) + (done ? 3 : 0)));
    if (dch) {
        nt_mp_cstr(m, "d");
        nt_mp_int(m, due);
    }
    if (done) {
        nt_mp_cstr(m, "s");
        nt_mp_cstr(m, "d");
        nt_mp_cstr(m, "x");
        nt_mp_cstr(m, d->exit_reason ? d->exit_reason : "");
        nt_mp_cstr(m, "xt");
        nt_mp_int(m, now);
    }
}

void nt_apply_timer(nt_mp_t *m, const nt_run_t *run, const nt_decision_t *d)
{
    if (d->status != NT_RUN_DONE && d->due_ms > 0)
        nt_mp_int(m, d->due_ms);
    else
        nt_mp_cstr(m, run->due_ms ? "-" : "");
}

/* Non-zero when attribute change i is followed by another change of the same name. */
static int superseded(const nt_decision_t *d, size_t i)
{
    for (size_t j = i + 1; j < d->nset; j++)
        if (strcmp(d->set[j].key, d->set[i].key) == 0)
            return 1;
    return 0;
}

void nt_apply_lead_fields(nt_mp_t *m, const nt_run_t *run, const nt_decision_t *d)
{
    int done = d->status == NT_RUN_DONE;
    uint32_t nset = 0, ndel = 0;

    for (size_t i = 0; i < d->nset; i++) {
        if (superseded(d, i))
            continue;
        if (d->set[i].value)
            nset++;
        else
            ndel++;
    }

    nt_apply_list(m, 2 * (nset + (d->stage ? 1 : 0) + (done ? 1 : 0)));
    for (size_t i = 0; i < d->nset; i++) {
        if (d->set[i].value && !superseded(d, i)) {
            nt_mp_cstr(m, d->set[i].key);
            nt_mp_cstr(m, d->set[i].value);
        }
    }
    if (d->stage) {
        nt_mp_cstr(m, "_stage");
        nt_mp_cstr(m, nt_stage_name(d->stage));
    }
    if (done) {
        size_t lp = strlen(run->plan_id);

        nt_mp_str_head(m, 2 + lp);
        nt_mp_raw(m, "r:", 2);
        nt_mp_raw(m, run->plan_id, lp);
        nt_mp_cstr(m, "d");
    }

    nt_apply_list(m, ndel);
    for (size_t i = 0; i < d->nset; i++)
        if (!d->set[i].value && !superseded(d, i))
            nt_mp_cstr(m, d->set[i].key);
}
