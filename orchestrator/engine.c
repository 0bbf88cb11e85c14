/* The decision function. One call looks at a run resting at a node (or not started yet), a
 * trigger (start, timer, event) and the lead, and walks the plan graph through pass-through
 * nodes until the run rests again or ends. Everything it produces goes into nt_decision_t;
 * the only side effect is on the in-memory lead snapshot, so that later decisions for the same
 * lead in one batch see the updates. Time comes from the caller, time zones from tz.c. */
#include "engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cond.h"
#include "tz.h"

typedef struct ctx {
    const nt_plan_t *plan;
    nt_lead_t *lead;
    const nt_run_t *run;
    int64_t now;
    nt_decision_t *out;
    const char *cur;   /* node the run is at now: borrowed from the plan or from run->node */
    uint32_t visit;    /* visit counter so far */
    int oom;           /* an allocation failed: the decision is thrown away */
    int done;          /* the run ended */
    int tz_noted;      /* the unknown-zone note was written already */
} ctx_t;

static char *xstrdup(ctx_t *c, const char *s)
{
    char *d = strdup(s != NULL ? s : "");

    if (d == NULL)
        c->oom = 1;
    return d;
}

/* arr (n elements of size elem) with room for one more, or arr unchanged and c->oom set. */
static void *grow(ctx_t *c, void *arr, size_t n, size_t elem)
{
    void *p;

    if (c->oom)
        return arr;
    p = realloc(arr, (n + 1) * elem);
    if (p == NULL) {
        c->oom = 1;
        return arr;
    }
    return p;
}

/* Append a zeroed element to array arr of n elements; evaluates to its address, or NULL (out
 * of memory, c->oom set). */
#define PUSH(c, arr, n)                                                                        \
    ((arr) = grow((c), (arr), (n), sizeof(*(arr))),                                            \
     (c)->oom ? NULL : memset(&(arr)[(n)++], 0, sizeof(*(arr))))

static void note(ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append a timeline line. */
static void note(ctx_t *c, const char *fmt, ...)
{
    char *s = NULL, **slot;
    va_list ap;
    int n;

    if (c->oom)
        return;
    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        c->oom = 1;
        return;
    }
    slot = PUSH(c, c->out->notes, c->out->nnotes);
    if (slot == NULL) {
        free(s);
        return;
    }
    *slot = s;
}

/* End the run with reason (taken as is). No note: the worker writes "left plan <id>: <reason>"
 * for every run that ends, and the notes before this say why. */
static void finish(ctx_t *c, const char *reason)
{
    free(c->out->exit_reason);
    c->out->exit_reason = xstrdup(c, reason);
    c->out->status = NT_RUN_DONE;
    c->out->due_ms = 0;
    c->done = 1;
}

/* End the run with reason "<prefix>:<id>". */
static void finish2(ctx_t *c, const char *prefix, const char *id)
{
    char *r = NULL;

    if (asprintf(&r, "%s:%s", prefix, id != NULL ? id : "") < 0) {
        c->oom = 1;
        return;
    }
    finish(c, r);
    free(r);
}

static int nonempty(const char *s)
{
    return s != NULL && *s != '\0';
}

static int span_set(const Nt__Duration *d)
{
    return d != NULL && (d->days != 0 || d->hours != 0 || d->minutes != 0 || d->seconds != 0);
}

/* Handle a tz.c result: NT_OK and NT_ENOTFOUND (UTC used, noted once) give 0, else -1. */
static int tz_result(ctx_t *c, nt_rc_t rc)
{
    if (rc == NT_ENOTFOUND) {
        if (!c->tz_noted)
            note(c, "unknown time zone '%s', using UTC", nt_lead_tz(c->lead));
        c->tz_noted = 1;
        return 0;
    }
    return rc == NT_OK ? 0 : -1;
}

/* now + d in the lead's zone. Falls back to plain elapsed seconds if tz.c fails otherwise. */
static int64_t after(ctx_t *c, const Nt__Duration *d)
{
    int64_t due = c->now;

    if (d == NULL)
        return c->now;
    if (tz_result(c, nt_tz_add(nt_lead_tz(c->lead), c->now, d->days, d->hours, d->minutes,
                               d->seconds, &due)) != 0)
        due = c->now + ((int64_t)d->days * 86400 + (int64_t)d->hours * 3600 +
                        (int64_t)d->minutes * 60 + (int64_t)d->seconds) * 1000;
    return due;
}

/* "2024-03-10T13:00:00Z" for ms into buf. */
static const char *iso(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "%lld ms", (long long)ms);
    return buf;
}

static void rest(ctx_t *c, int64_t due)
{
    char buf[64];

    c->out->due_ms = due;
    if (due != 0)
        note(c, "waiting until %s", iso(due, buf, sizeof(buf)));
}

/* The first goal that holds ends the run. Returns 1 when one did. A goal without a condition
 * never holds: an empty `when` is a plan mistake, not "leave at once". */
static int goals_hold(ctx_t *c)
{
    const Nt__Workflow *wf = c->plan->wf;
    size_t i;

    for (i = 0; i < wf->n_goals; i++) {
        const Nt__Goal *g = wf->goals[i];

        if (g == NULL || g->when == NULL || !nt_cond_eval(g->when, c->lead, c->now))
            continue;
        note(c, "goal '%s' reached", g->name != NULL ? g->name : "");
        if (nonempty(g->reason))
            finish(c, g->reason);
        else
            finish2(c, "goal", g->name);
        return 1;
    }
    return 0;
}

static void emit(ctx_t *c, const Nt__Node *n)
{
    const Nt__Send *s = n->send;
    nt_outmsg_t *m;
    size_t i;

    m = PUSH(c, c->out->msgs, c->out->nmsgs);
    if (m == NULL)
        return;
    if (asprintf(&m->id, "%s:%s:%s:%u", c->lead->id, c->run->plan_id, n->id, c->visit) < 0) {
        m->id = NULL;
        c->oom = 1;
        return;
    }
    m->channel = xstrdup(c, s->channel);
    m->node = xstrdup(c, n->id);
    m->visit = c->visit;
    if (s->n_params > 0) {
        m->params = calloc(s->n_params, sizeof(nt_kv_t));
        if (m->params == NULL) {
            c->oom = 1;
            return;
        }
        for (i = 0; i < s->n_params; i++) {
            const Nt__Param *p = s->params[i];

            m->nparams++;
            m->params[i].key = xstrdup(c, p != NULL ? p->name : "");
            m->params[i].value = xstrdup(c, p != NULL ? p->value : "");
        }
    }
    note(c, "queued for %s", s->channel);
}

static void record_set(ctx_t *c, const char *name, const char *value)
{
    nt_kv_t *kv = PUSH(c, c->out->set, c->out->nset);

    if (kv == NULL)
        return;
    kv->key = xstrdup(c, name);
    kv->value = value != NULL ? xstrdup(c, value) : NULL;
}

static void apply_update(ctx_t *c, const Nt__Update *u)
{
    size_t i;

    for (i = 0; i < u->n_set; i++) {
        const Nt__SetAttr *sa = u->set[i];

        if (sa == NULL)
            continue;
        if (!nt_attr_name_valid(sa->name)) {
            note(c, "ignored update of reserved or invalid attribute '%s'", sa->name);
            continue;
        }
        if (nt_lead_set(c->lead, sa->name, sa->value) != 0) {
            c->oom = 1;
            return;
        }
        record_set(c, sa->name, sa->value);
        note(c, "set %s to '%s'", sa->name, sa->value);
    }
    for (i = 0; i < u->n_unset; i++) {
        if (!nt_attr_name_valid(u->unset[i])) {
            note(c, "ignored removal of reserved or invalid attribute '%s'", u->unset[i]);
            continue;
        }
        if (nt_lead_set(c->lead, u->unset[i], NULL) != 0) {
            c->oom = 1;
            return;
        }
        record_set(c, u->unset[i], NULL);
        note(c, "removed %s", u->unset[i]);
    }
    if (u->add_score != 0) {
        int64_t score = nt_lead_score(c->lead), next;
        char buf[32];

        if (__builtin_add_overflow(score, (int64_t)u->add_score, &next))
            next = u->add_score > 0 ? INT64_MAX : INT64_MIN;
        snprintf(buf, sizeof(buf), "%lld", (long long)next);
        if (nt_lead_set(c->lead, "_score", buf) != 0) {
            c->oom = 1;
            return;
        }
        c->out->score_delta += u->add_score;
        note(c, "score %+d, now %lld", (int)u->add_score, (long long)next);
    }
    if (u->stage != NT__STAGE__STAGE_UNSPECIFIED) {
        const char *name = nt_stage_name((int)u->stage);

        if (name == NULL) {
            note(c, "ignored unknown stage %d", (int)u->stage);
        } else {
            if (nt_lead_set(c->lead, "_stage", name) != 0) {
                c->oom = 1;
                return;
            }
            c->out->stage = (int)u->stage;
            note(c, "stage is now %s", name);
        }
    }
}

/* Compute a wait node's due time. Returns 0 and *due, or -1 when the wait is malformed. */
static int wait_due(ctx_t *c, const Nt__Wait *w, int64_t *due)
{
    const char *tz = nt_lead_tz(c->lead);
    unsigned mask = 0;
    int start, end;
    size_t i;

    *due = c->now;
    switch (w->until_case) {
    case NT__WAIT__UNTIL_DURATION:
        *due = after(c, w->duration);
        return 0;
    case NT__WAIT__UNTIL_WINDOW:
        if (w->window == NULL)
            return -1;
        start = nt_tz_parse_hhmm(w->window->start);
        end = nt_tz_parse_hhmm(w->window->end);
        if (start < 0 || end < 0)
            return -1;
        for (i = 0; i < w->window->n_days; i++) {
            int d = (int)w->window->days[i];

            if (d >= NT__WEEKDAY__MON && d <= NT__WEEKDAY__SUN)
                mask |= 1u << d;
        }
        return tz_result(c, nt_tz_next_window(tz, c->now, start, end, mask, due));
    case NT__WAIT__UNTIL_DATE:
        return tz_result(c, nt_tz_local_to_utc(tz, w->date, due));
    default:
        return -1;
    }
}

/* Do what node n does once entered. Returns the id of the node to enter next, or NULL when
 * the run rests at n or has ended. */
static const char *step(ctx_t *c, const Nt__Node *n)
{
    int64_t due;
    size_t i;
    int arm;

    switch (n->kind_case) {
    case NT__NODE__KIND_SEND:
        emit(c, n);
        rest(c, span_set(n->send->timeout) && nonempty(n->send->on_timeout)
                    ? after(c, n->send->timeout)
                    : 0);
        return NULL;
    case NT__NODE__KIND_WAIT:
        if (wait_due(c, n->wait, &due) != 0) {
            note(c, "wait at %s has no valid time", n->id);
            finish2(c, "invalid_wait", n->id);
            return NULL;
        }
        if (due <= c->now) {
            note(c, "wait at %s is already over", n->id);
            return n->wait->next;
        }
        rest(c, due);
        return NULL;
    case NT__NODE__KIND_WAIT_EVENT:
        rest(c, span_set(n->wait_event->timeout) && nonempty(n->wait_event->on_timeout)
                    ? after(c, n->wait_event->timeout)
                    : 0);
        return NULL;
    case NT__NODE__KIND_BRANCH:
        for (i = 0; i < n->branch->n_cases; i++) {
            const Nt__Case *k = n->branch->cases[i];

            if (k != NULL && nt_cond_eval(k->when, c->lead, c->now)) {
                note(c, "branch %s: case %zu holds, to %s", n->id, i + 1, k->to);
                return k->to;
            }
        }
        if (nonempty(n->branch->default_)) {
            note(c, "branch %s: no case holds, to %s", n->id, n->branch->default_);
            return n->branch->default_;
        }
        note(c, "branch %s: no case holds and there is no default", n->id);
        finish2(c, "no_branch", n->id);
        return NULL;
    case NT__NODE__KIND_SPLIT:
        arm = nt_engine_split_arm(n->split, c->lead->id, c->run->plan_id, n->id);
        if (arm < 0) {
            note(c, "split %s has no arm with weight", n->id);
            finish2(c, "no_arm", n->id);
            return NULL;
        }
        note(c, "split %s: arm '%s', to %s", n->id, n->split->arms[arm]->name,
             n->split->arms[arm]->to);
        return n->split->arms[arm]->to;
    case NT__NODE__KIND_UPDATE:
        apply_update(c, n->update);
        if (c->oom || goals_hold(c))
            return NULL;
        return n->update->next;
    case NT__NODE__KIND_EXIT:
        if (nonempty(n->exit->reason))
            finish(c, n->exit->reason);
        else
            finish2(c, "exit", n->id);
        return NULL;
    default:
        note(c, "node %s has no kind", n->id);
        finish2(c, "invalid_node", n->id);
        return NULL;
    }
}

/* Walk the graph: first do what `resume` does (a node the run already rests at) when given,
 * then enter `id` and the nodes after it until the run rests or ends. */
static void walk(ctx_t *c, const Nt__Node *resume, const char *id)
{
    int steps = 0;

    if (resume != NULL) {
        id = step(c, resume);
        if (id == NULL || c->done || c->oom)
            return;
    }
    for (;;) {
        const Nt__Node *n;
        char **slot;

        if (steps >= NT_ENGINE_MAX_STEPS) {
            note(c, "more than %d steps in one go: stopping", NT_ENGINE_MAX_STEPS);
            finish(c, "step_limit");
            return;
        }
        steps++;
        n = nt_plan_node(c->plan, id);
        if (n == NULL) {
            note(c, "there is no node '%s' in the plan", id != NULL ? id : "");
            finish2(c, "node_missing", id);
            return;
        }
        c->visit++;
        c->cur = n->id;
        slot = PUSH(c, c->out->path, c->out->npath);
        if (slot != NULL)
            *slot = xstrdup(c, n->id);
        note(c, "entered %s (%s)", n->id, nt_node_kind_name(n));
        if (c->oom || goals_hold(c))
            return;
        id = step(c, n);
        if (id == NULL || c->done || c->oom)
            return;
    }
}

static const char *trig_attr(const nt_trigger_t *t, const char *name)
{
    size_t i;

    for (i = 0; i < t->nattrs; i++) {
        if (t->attrs[i].key != NULL && strcmp(t->attrs[i].key, name) == 0)
            return t->attrs[i].value;
    }
    return NULL;
}

static int eq(const char *a, const char *b)
{
    return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

/* The outcome an outcome event reports for this run's current send, or NULL when the event
 * is about something else (another plan, node or visit: a stale or foreign outcome). */
static const char *outcome_for(const ctx_t *c, const nt_trigger_t *t)
{
    char visit[16];
    const char *o;

    if (t->kind != NT_TRIG_EVENT || !eq(t->type, NT_EVENT_OUTCOME))
        return NULL;
    snprintf(visit, sizeof(visit), "%u", c->run->visit);
    if (!eq(trig_attr(t, "plan"), c->run->plan_id) || !eq(trig_attr(t, "node"), c->run->node) ||
        !eq(trig_attr(t, "visit"), visit))
        return NULL;
    o = trig_attr(t, "outcome");
    if (!nonempty(o))
        return NULL;
    /* Opens and clicks by privacy proxies and link scanners are not a person: they move
     * nothing. Delivery results (sent, failed) are facts whoever reports them. */
    if (t->machine && strcmp(o, "sent") != 0 && strcmp(o, "failed") != 0)
        return NULL;
    return o;
}

static int event_matches(const Nt__WaitEvent *we, const nt_trigger_t *t)
{
    const Nt__EventFilter *f = we->filter;
    size_t i;

    if (t->kind != NT_TRIG_EVENT || t->machine || f == NULL)
        return 0;
    if (!eq(t->type, f->type)) {
        for (i = 0; i < f->n_or_types && !eq(t->type, f->or_types[i]); i++)
            ;
        if (i == f->n_or_types)
            return 0;
    }
    for (i = 0; i < f->n_attrs; i++) {
        const Nt__AttrMatch *m = f->attrs[i];
        const char *v;

        if (m == NULL)
            continue;
        v = trig_attr(t, m->name);
        if (v == NULL || !eq(v, m->value))
            return 0;
    }
    return 1;
}

/* A channel reported "bounced": the receiving server refused the address for good. The lead
 * is suppressed (_suppressed, as a provider's hard bounce does through the webhook) so that no
 * email step writes to it again; a reason already there stays. */
static void suppress_bounced(ctx_t *c, const nt_trigger_t *t)
{
    const char *detail = trig_attr(t, "detail");
    char why[256];

    if (nt_lead_get(c->lead, "_suppressed") != NULL)
        return;
    snprintf(why, sizeof(why), "hard_bounce%s%.200s", nonempty(detail) ? ": " : "",
             nonempty(detail) ? detail : "");
    if (nt_lead_set(c->lead, "_suppressed", why) != 0) {
        c->oom = 1;
        return;
    }
    record_set(c, "_suppressed", why);
    note(c, "address suppressed (hard bounce)");
}

/* The run resting at n receives t (goals were checked). Returns 1 when something happened. */
static int on_trigger(ctx_t *c, const Nt__Node *n, const nt_trigger_t *t)
{
    int timer_due = t->kind == NT_TRIG_TIMER && c->run->due_ms != 0 && c->run->due_ms <= c->now;
    const char *o;
    size_t i;

    switch (n->kind_case) {
    case NT__NODE__KIND_SEND:
        o = outcome_for(c, t);
        if (o != NULL) {
            const Nt__Send *s = n->send;

            int bounced = strcmp(o, "bounced") == 0;

            if (bounced)
                suppress_bounced(c, t);
            for (i = 0; i < s->n_on; i++) {
                if (s->on[i] != NULL && eq(s->on[i]->outcome, o)) {
                    note(c, "outcome '%s' at %s", o, n->id);
                    walk(c, NULL, s->on[i]->to);
                    return 1;
                }
            }
            /* A bounce is a message that did not arrive: without a bounced edge it takes the
             * failed one. */
            for (i = 0; bounced && i < s->n_on; i++) {
                if (s->on[i] != NULL && eq(s->on[i]->outcome, "failed")) {
                    note(c, "outcome 'bounced' at %s (by its failed edge)", n->id);
                    walk(c, NULL, s->on[i]->to);
                    return 1;
                }
            }
            if (nonempty(s->next)) {
                note(c, "outcome '%s' at %s", o, n->id);
                walk(c, NULL, s->next);
                return 1;
            }
            if (strcmp(o, "failed") == 0 || bounced) {
                note(c, "outcome 'failed' at %s", n->id);
                finish2(c, "failed", n->id);
                return 1;
            }
            return 0;
        }
        if (timer_due && nonempty(n->send->on_timeout)) {
            note(c, "no outcome at %s before the timeout", n->id);
            walk(c, NULL, n->send->on_timeout);
            return 1;
        }
        return 0;
    case NT__NODE__KIND_WAIT:
        if (t->kind != NT_TRIG_TIMER)
            return 0;
        note(c, "wait at %s is over", n->id);
        walk(c, NULL, n->wait->next);
        return 1;
    case NT__NODE__KIND_WAIT_EVENT:
        if (event_matches(n->wait_event, t)) {
            note(c, "event '%s' matched at %s", t->type, n->id);
            walk(c, NULL, n->wait_event->on_match);
            return 1;
        }
        if (timer_due && nonempty(n->wait_event->on_timeout)) {
            note(c, "no matching event at %s before the timeout", n->id);
            walk(c, NULL, n->wait_event->on_timeout);
            return 1;
        }
        return 0;
    default:
        /* Runs never rest at pass-through nodes; if one does (an older engine, a hand-edited
         * run), go on from it as if it had just been entered. */
        walk(c, n, NULL);
        return 1;
    }
}

/* Fill the result fields common to every decision that changed something. */
static nt_rc_t conclude(ctx_t *c, nt_rc_t rc)
{
    nt_decision_t *out = c->out;

    if (!c->oom) {
        out->changed = 1;
        out->visit = c->visit;
        out->node = xstrdup(c, c->cur);
        if (out->status == NT_RUN_DONE)
            out->due_ms = 0;
        if (nonempty(c->run->node) && (out->npath > 0 || out->status == NT_RUN_DONE))
            out->left = xstrdup(c, c->run->node);
    }
    if (c->oom) {
        nt_decision_fini(out);
        return NT_ENOMEM;
    }
    return rc;
}

/* Decide what trig does to run at now_ms; see engine.h. Semantics beyond the header:
 *   - a run with no node yet (node "") takes its first step on any trigger, so that a timer
 *     set at enrolment recovers a run whose start was lost;
 *   - goals are checked first on every trigger, even one that otherwise concerns another node;
 *   - a timer trigger earlier than run->due_ms changes nothing;
 *   - timeouts of send and wait_event set a timer only when on_timeout is set as well. */
nt_rc_t nt_engine_decide(const nt_plan_t *plan, nt_lead_t *lead, const nt_run_t *run,
                         const nt_trigger_t *trig, int64_t now_ms, nt_decision_t *out)
{
    static const nt_trigger_t start = {.kind = NT_TRIG_START};
    const Nt__Workflow *wf;
    const Nt__Node *n;
    ctx_t c;

    if (out == NULL)
        return NT_EINVAL;
    memset(out, 0, sizeof(*out));
    if (plan == NULL || plan->wf == NULL || lead == NULL || run == NULL)
        return NT_EINVAL;
    if (trig == NULL)
        trig = &start;
    if (run->status == NT_RUN_DONE)
        return NT_OK;
    wf = plan->wf;
    memset(&c, 0, sizeof(c));
    c.plan = plan;
    c.lead = lead;
    c.run = run;
    c.now = now_ms;
    c.out = out;
    c.cur = run->node != NULL ? run->node : "";
    c.visit = run->visit;

    if (c.cur[0] == '\0') {
        if (wf->entry != NULL && !nt_cond_eval(wf->entry, lead, now_ms)) {
            note(&c, "not in the plan's track");
            finish(&c, "not_in_track");
        } else {
            walk(&c, NULL, wf->start);
        }
        return conclude(&c, NT_OK);
    }
    n = nt_plan_node(plan, c.cur);
    if (n == NULL) {
        note(&c, "node %s is not in plan %s version %u", c.cur, run->plan_id, run->version);
        finish(&c, "node_missing");
        return conclude(&c, NT_ENOTFOUND);
    }
    if (goals_hold(&c))
        return conclude(&c, NT_OK);
    if (trig->kind == NT_TRIG_TIMER && run->due_ms > now_ms)
        return NT_OK;
    if (!on_trigger(&c, n, trig)) {
        nt_decision_fini(out);
        return NT_OK;
    }
    return conclude(&c, NT_OK);
}

/* Release everything a decision holds and zero it. Safe on a zeroed decision and twice. */
void nt_decision_fini(nt_decision_t *d)
{
    size_t i, j;

    if (d == NULL)
        return;
    free(d->node);
    free(d->exit_reason);
    for (i = 0; i < d->nset; i++) {
        free((char *)d->set[i].key);
        free((char *)d->set[i].value);
    }
    free(d->set);
    for (i = 0; i < d->nmsgs; i++) {
        nt_outmsg_t *m = &d->msgs[i];

        free(m->id);
        free(m->channel);
        free(m->node);
        for (j = 0; j < m->nparams; j++) {
            free((char *)m->params[j].key);
            free((char *)m->params[j].value);
        }
        free(m->params);
    }
    free(d->msgs);
    for (i = 0; i < d->nnotes; i++)
        free(d->notes[i]);
    free(d->notes);
    for (i = 0; i < d->npath; i++)
        free(d->path[i]);
    free(d->path);
    free(d->left);
    memset(d, 0, sizeof(*d));
}

/* FNV-1a 64 over "lead|plan|node", then a murmur3 finaliser so that small moduli (weights
 * such as 50/50 or 10/90) see well-mixed low bits. Stable across builds and platforms:
 * changing it moves leads between arms of running experiments. */
int nt_engine_split_arm(const Nt__Split *split, const char *lead_id, const char *plan_id,
                        const char *node_id)
{
    const char *parts[3] = {lead_id, plan_id, node_id};
    uint64_t h = 14695981039346656037ULL, total = 0, r;
    size_t i;
    int k;

    if (split == NULL)
        return -1;
    for (i = 0; i < split->n_arms; i++) {
        if (split->arms[i] != NULL)
            total += split->arms[i]->weight;
    }
    if (total == 0)
        return -1;
    for (k = 0; k < 3; k++) {
        const unsigned char *p = (const unsigned char *)(parts[k] != NULL ? parts[k] : "");

        if (k > 0) {
            h ^= '|';
            h *= 1099511628211ULL;
        }
        for (; *p != '\0'; p++) {
            h ^= *p;
            h *= 1099511628211ULL;
        }
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    r = h % total;
    for (i = 0; i < split->n_arms; i++) {
        uint64_t w = split->arms[i] != NULL ? split->arms[i]->weight : 0;

        if (r < w)
            return (int)i;
        r -= w;
    }
    return -1;
}
