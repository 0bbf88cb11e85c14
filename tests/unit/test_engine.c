/* The decision function, driven directly: plans are built as protobuf-c structs, packed and
 * loaded through nt_plan_new like a published plan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine.h"

#define NOW 1700000000000LL /* 2023-11-14T22:13:20Z */
#define HOUR 3600000LL
#define DAY (24 * HOUR)
#define MAXREP 16           /* room for repeated fields of built plans */

/* ---- plan building: everything comes from a pool freed after each test ---- */

static void *pool[512];
static size_t npool;
static Nt__Workflow wf;
static nt_plan_t *plan;
static nt_lead_t lead;
static nt_decision_t d;

static void *alloc(size_t n)
{
    void *p = calloc(1, n);

    assert_non_null(p);
    assert_true(npool < sizeof(pool) / sizeof(pool[0]));
    pool[npool++] = p;
    return p;
}

static int setup(void **state)
{
    (void)state;
    nt__workflow__init(&wf);
    wf.id = "p1";
    wf.nodes = alloc(64 * sizeof(Nt__Node *));
    wf.goals = alloc(MAXREP * sizeof(Nt__Goal *));
    plan = NULL;
    memset(&d, 0, sizeof(d));
    return nt_lead_init(&lead, "L1");
}

static int teardown(void **state)
{
    (void)state;
    nt_decision_fini(&d);
    nt_plan_free(plan);
    plan = NULL;
    nt_lead_fini(&lead);
    while (npool > 0)
        free(pool[--npool]);
    return 0;
}

static Nt__Duration *dur(uint32_t days, uint32_t hours, uint32_t minutes, uint32_t seconds)
{
    Nt__Duration *x = alloc(sizeof(*x));

    nt__duration__init(x);
    x->days = days;
    x->hours = hours;
    x->minutes = minutes;
    x->seconds = seconds;
    return x;
}

static Nt__Node *node(const char *id, Nt__Node__KindCase kind, void *body)
{
    Nt__Node *n = alloc(sizeof(*n));

    nt__node__init(n);
    n->id = (char *)id;
    n->kind_case = kind;
    n->send = body; /* a union: every member is a pointer */
    wf.nodes[wf.n_nodes++] = n;
    if (wf.start == NULL || *wf.start == '\0')
        wf.start = (char *)id;
    return n;
}

static Nt__Send *send_node(const char *id, const char *channel, const char *next)
{
    Nt__Send *s = alloc(sizeof(*s));

    nt__send__init(s);
    s->channel = (char *)channel;
    s->next = (char *)(next != NULL ? next : "");
    s->params = alloc(MAXREP * sizeof(Nt__Param *));
    s->on = alloc(MAXREP * sizeof(Nt__Edge *));
    node(id, NT__NODE__KIND_SEND, s);
    return s;
}

static void param(Nt__Send *s, const char *name, const char *value)
{
    Nt__Param *p = alloc(sizeof(*p));

    nt__param__init(p);
    p->name = (char *)name;
    p->value = (char *)value;
    s->params[s->n_params++] = p;
}

static void on_edge(Nt__Send *s, const char *outcome, const char *to)
{
    Nt__Edge *e = alloc(sizeof(*e));

    nt__edge__init(e);
    e->outcome = (char *)outcome;
    e->to = (char *)to;
    s->on[s->n_on++] = e;
}

static Nt__Wait *wait_for(const char *id, Nt__Duration *span, const char *next)
{
    Nt__Wait *w = alloc(sizeof(*w));

    nt__wait__init(w);
    w->until_case = NT__WAIT__UNTIL_DURATION;
    w->duration = span;
    w->next = (char *)next;
    node(id, NT__NODE__KIND_WAIT, w);
    return w;
}

static Nt__WaitEvent *wait_event(const char *id, const char *type, const char *on_match,
                                 Nt__Duration *timeout, const char *on_timeout)
{
    Nt__WaitEvent *w = alloc(sizeof(*w));
    Nt__EventFilter *f = alloc(sizeof(*f));

    nt__wait_event__init(w);
    nt__event_filter__init(f);
    f->type = (char *)type;
    f->attrs = alloc(MAXREP * sizeof(Nt__AttrMatch *));
    w->filter = f;
    w->on_match = (char *)on_match;
    w->timeout = timeout;
    w->on_timeout = (char *)(on_timeout != NULL ? on_timeout : "");
    node(id, NT__NODE__KIND_WAIT_EVENT, w);
    return w;
}

static void filter_attr(Nt__WaitEvent *w, const char *name, const char *value)
{
    Nt__AttrMatch *m = alloc(sizeof(*m));

    nt__attr_match__init(m);
    m->name = (char *)name;
    m->value = (char *)value;
    w->filter->attrs[w->filter->n_attrs++] = m;
}

static Nt__Branch *branch(const char *id, const char *dflt)
{
    Nt__Branch *b = alloc(sizeof(*b));

    nt__branch__init(b);
    b->default_ = (char *)(dflt != NULL ? dflt : "");
    b->cases = alloc(MAXREP * sizeof(Nt__Case *));
    node(id, NT__NODE__KIND_BRANCH, b);
    return b;
}

static void when(Nt__Branch *b, Nt__Condition *c, const char *to)
{
    Nt__Case *k = alloc(sizeof(*k));

    nt__case__init(k);
    k->when = c;
    k->to = (char *)to;
    b->cases[b->n_cases++] = k;
}

static Nt__Split *split(const char *id)
{
    Nt__Split *s = alloc(sizeof(*s));

    nt__split__init(s);
    s->arms = alloc(MAXREP * sizeof(Nt__Arm *));
    node(id, NT__NODE__KIND_SPLIT, s);
    return s;
}

static void arm(Nt__Split *s, const char *name, uint32_t weight, const char *to)
{
    Nt__Arm *a = alloc(sizeof(*a));

    nt__arm__init(a);
    a->name = (char *)name;
    a->weight = weight;
    a->to = (char *)to;
    s->arms[s->n_arms++] = a;
}

static Nt__Update *update(const char *id, const char *next)
{
    Nt__Update *u = alloc(sizeof(*u));

    nt__update__init(u);
    u->next = (char *)next;
    u->set = alloc(MAXREP * sizeof(Nt__SetAttr *));
    u->unset = alloc(MAXREP * sizeof(char *));
    node(id, NT__NODE__KIND_UPDATE, u);
    return u;
}

static void set_attr(Nt__Update *u, const char *name, const char *value)
{
    Nt__SetAttr *s = alloc(sizeof(*s));

    nt__set_attr__init(s);
    s->name = (char *)name;
    s->value = (char *)value;
    u->set[u->n_set++] = s;
}

static void exit_node(const char *id, const char *reason)
{
    Nt__Exit *e = alloc(sizeof(*e));

    nt__exit__init(e);
    e->reason = (char *)reason;
    node(id, NT__NODE__KIND_EXIT, e);
}

static Nt__Condition *cond(Nt__Condition__KindCase kind, void *body)
{
    Nt__Condition *c = alloc(sizeof(*c));

    nt__condition__init(c);
    c->kind_case = kind;
    c->attr = body; /* a union: every member is a pointer */
    return c;
}

static Nt__Condition *attr_is(const char *name, Nt__Op op, const char *value)
{
    Nt__AttrCmp *a = alloc(sizeof(*a));

    nt__attr_cmp__init(a);
    a->name = (char *)name;
    a->op = op;
    a->value = (char *)value;
    return cond(NT__CONDITION__KIND_ATTR, a);
}

static Nt__Condition *stage_is(Nt__Op op, Nt__Stage st)
{
    Nt__StageCmp *s = alloc(sizeof(*s));

    nt__stage_cmp__init(s);
    s->op = op;
    s->stage = st;
    return cond(NT__CONDITION__KIND_STAGE, s);
}

static Nt__Condition *score_is(Nt__Op op, int64_t v)
{
    Nt__ScoreCmp *s = alloc(sizeof(*s));

    nt__score_cmp__init(s);
    s->op = op;
    s->value = v;
    return cond(NT__CONDITION__KIND_SCORE, s);
}

static Nt__Condition *both(Nt__Condition *a, Nt__Condition *b)
{
    Nt__Conditions *g = alloc(sizeof(*g));

    nt__conditions__init(g);
    g->of = alloc(2 * sizeof(Nt__Condition *));
    g->of[0] = a;
    g->of[1] = b;
    g->n_of = 2;
    return cond(NT__CONDITION__KIND_ALL, g);
}

static void goal(const char *name, Nt__Condition *c, const char *reason)
{
    Nt__Goal *g = alloc(sizeof(*g));

    nt__goal__init(g);
    g->name = (char *)name;
    g->when = c;
    g->reason = (char *)reason;
    wf.goals[wf.n_goals++] = g;
}

/* Pack the workflow built so far and load it like a published plan. */
static void publish(void)
{
    size_t len = nt__workflow__get_packed_size(&wf);
    uint8_t *buf = alloc(len + 1);
    char *err = NULL;

    assert_int_equal(nt__workflow__pack(&wf, buf), len);
    plan = nt_plan_new(buf, len, &err);
    assert_null(err);
    assert_non_null(plan);
}

/* ---- driving the engine ---- */

static nt_run_t run_at(const char *node_id, uint32_t visit, int64_t due)
{
    nt_run_t r;

    memset(&r, 0, sizeof(r));
    r.plan_id = "p1";
    r.version = 1;
    r.node = node_id;
    r.visit = visit;
    r.due_ms = due;
    r.status = NT_RUN_ACTIVE;
    return r;
}

static nt_rc_t start(int64_t now)
{
    nt_run_t r = run_at("", 0, 0);
    nt_trigger_t t = {.kind = NT_TRIG_START};

    nt_decision_fini(&d);
    return nt_engine_decide(plan, &lead, &r, &t, now, &d);
}

static nt_rc_t timer(const char *at, uint32_t visit, int64_t due, int64_t now)
{
    nt_run_t r = run_at(at, visit, due);
    nt_trigger_t t = {.kind = NT_TRIG_TIMER};

    nt_decision_fini(&d);
    return nt_engine_decide(plan, &lead, &r, &t, now, &d);
}

static nt_rc_t event(const char *at, uint32_t visit, const char *type, int machine,
                     const nt_kv_t *attrs, size_t nattrs)
{
    nt_run_t r = run_at(at, visit, 0);
    nt_trigger_t t = {.kind = NT_TRIG_EVENT, .type = type, .attrs = attrs, .nattrs = nattrs,
                      .machine = machine};

    nt_decision_fini(&d);
    return nt_engine_decide(plan, &lead, &r, &t, NOW, &d);
}

static nt_rc_t outcome(const char *at, uint32_t visit, const char *ev_node, const char *ev_visit,
                       const char *what)
{
    nt_kv_t attrs[] = {
        {"plan", "p1"}, {"node", ev_node}, {"visit", ev_visit}, {"outcome", what},
        {"detail", "250 OK"},
    };

    return event(at, visit, NT_EVENT_OUTCOME, 0, attrs, 5);
}

static void assert_path(size_t n, ...)
{
    va_list ap;
    size_t i;

    assert_int_equal(d.npath, n);
    va_start(ap, n);
    for (i = 0; i < n; i++)
        assert_string_equal(d.path[i], va_arg(ap, const char *));
    va_end(ap);
}

static void assert_done(const char *reason)
{
    assert_int_equal(d.changed, 1);
    assert_int_equal(d.status, NT_RUN_DONE);
    assert_non_null(d.exit_reason);
    assert_string_equal(d.exit_reason, reason);
    assert_int_equal(d.due_ms, 0);
}

static int has_note(const char *part)
{
    size_t i;

    for (i = 0; i < d.nnotes; i++) {
        if (strstr(d.notes[i], part) != NULL)
            return 1;
    }
    return 0;
}

/* ---- tests ---- */

static void test_engine_start_chains_update_branch_send(void **state)
{
    Nt__Update *u;
    Nt__Branch *b;
    Nt__Send *s;
    (void)state;

    u = update("tag", "route");
    set_attr(u, "role", "engineer");
    u->add_score = 10;
    b = branch("route", "generic");
    when(b, attr_is("role", NT__OP__EQ, "Engineer"), "tech_guide");
    s = send_node("tech_guide", "email", "done");
    param(s, "template", "getting-started-tech");
    param(s, "subject", "Your guide");
    send_node("generic", "email", "done");
    exit_node("done", "finished");
    publish();

    assert_int_equal(start(NOW), NT_OK);
    assert_int_equal(d.changed, 1);
    assert_int_equal(d.status, NT_RUN_ACTIVE);
    assert_string_equal(d.node, "tech_guide");
    assert_path(3, "tag", "route", "tech_guide");
    assert_int_equal(d.visit, 3);
    assert_int_equal(d.due_ms, 0);
    assert_null(d.left);
    assert_int_equal(d.nmsgs, 1);
    assert_string_equal(d.msgs[0].id, "L1:p1:tech_guide:3");
    assert_string_equal(d.msgs[0].channel, "email");
    assert_string_equal(d.msgs[0].node, "tech_guide");
    assert_int_equal(d.msgs[0].visit, 3);
    assert_int_equal(d.msgs[0].nparams, 2);
    assert_string_equal(d.msgs[0].params[0].key, "template");
    assert_string_equal(d.msgs[0].params[0].value, "getting-started-tech");
    assert_string_equal(d.msgs[0].params[1].key, "subject");
    assert_int_equal(d.nset, 1);
    assert_string_equal(d.set[0].key, "role");
    assert_string_equal(d.set[0].value, "engineer");
    assert_int_equal(d.score_delta, 10);
    assert_int_equal(nt_lead_score(&lead), 10);
    assert_true(has_note("entered tag (update)"));
    assert_true(has_note("entered tech_guide (send)"));
}

static void test_engine_goal_exits_before_the_step(void **state)
{
    (void)state;
    goal("sql", stage_is(NT__OP__GE, NT__STAGE__SQL), "became_sql");
    send_node("welcome", "email", "done");
    exit_node("done", "");
    publish();

    assert_int_equal(nt_lead_set(&lead, "_stage", "sql"), 0);
    assert_int_equal(start(NOW), NT_OK);
    assert_done("became_sql");
    assert_int_equal(d.nmsgs, 0);
    assert_path(1, "welcome");

    /* Resting at the send: any trigger, even one about something else, checks goals first. */
    assert_int_equal(event("welcome", 1, "page_viewed", 0, NULL, 0), NT_OK);
    assert_done("became_sql");
    assert_string_equal(d.node, "welcome");
    assert_string_equal(d.left, "welcome");
    assert_int_equal(d.npath, 0);
}

static void test_engine_goal_without_reason_is_named(void **state)
{
    (void)state;
    goal("unsubscribed", attr_is("unsubscribed", NT__OP__EQ, "yes"), "");
    send_node("welcome", "email", NULL);
    publish();

    assert_int_equal(nt_lead_set(&lead, "unsubscribed", "YES"), 0);
    assert_int_equal(timer("welcome", 1, 0, NOW), NT_OK);
    assert_done("goal:unsubscribed");
}

static void test_engine_not_in_track(void **state)
{
    (void)state;
    wf.entry = attr_is("country", NT__OP__EQ, "US");
    send_node("welcome", "email", NULL);
    publish();

    assert_int_equal(nt_lead_set(&lead, "country", "DE"), 0);
    assert_int_equal(start(NOW), NT_OK);
    assert_done("not_in_track");
    assert_int_equal(d.npath, 0);
    assert_int_equal(d.nmsgs, 0);
    assert_null(d.left);

    assert_int_equal(nt_lead_set(&lead, "country", "us"), 0);
    assert_int_equal(start(NOW), NT_OK);
    assert_int_equal(d.status, NT_RUN_ACTIVE);
    assert_string_equal(d.node, "welcome");
}

static void outcome_plan(void)
{
    Nt__Send *s = send_node("invite", "webinar", NULL);

    on_edge(s, "sent", "after_sent");
    on_edge(s, "attended", "hot");
    wait_for("after_sent", dur(3, 0, 0, 0), "hot");
    exit_node("hot", "hot_lead");
    publish();
}

static void test_engine_send_outcome_sent_follows_edge(void **state)
{
    (void)state;
    outcome_plan();
    assert_int_equal(outcome("invite", 4, "invite", "4", "sent"), NT_OK);
    assert_int_equal(d.changed, 1);
    assert_string_equal(d.node, "after_sent");
    assert_string_equal(d.left, "invite");
    assert_int_equal(d.visit, 5);
    assert_int_equal(d.due_ms, NOW + 3 * DAY);
    assert_path(1, "after_sent");
}

static void test_engine_send_custom_outcome_follows_its_edge(void **state)
{
    (void)state;
    outcome_plan();
    assert_int_equal(outcome("invite", 4, "invite", "4", "attended"), NT_OK);
    assert_done("hot_lead");
    assert_string_equal(d.node, "hot");
}

static void test_engine_send_failed_without_edge_ends_run(void **state)
{
    (void)state;
    outcome_plan();
    assert_int_equal(outcome("invite", 4, "invite", "4", "failed"), NT_OK);
    assert_done("failed:invite");
    assert_string_equal(d.node, "invite");
    assert_string_equal(d.left, "invite");
}

static void test_engine_send_unhandled_outcome_changes_nothing(void **state)
{
    Nt__Send *s;
    (void)state;

    s = send_node("call", "call", NULL);
    on_edge(s, "connected", "done");
    exit_node("done", "");
    publish();
    assert_int_equal(outcome("call", 1, "call", "1", "sent"), NT_OK);
    assert_int_equal(d.changed, 0);
    assert_null(d.node);
    assert_int_equal(d.nnotes, 0);
}

static void test_engine_send_stale_visit_ignored(void **state)
{
    (void)state;
    outcome_plan();
    assert_int_equal(outcome("invite", 4, "invite", "3", "sent"), NT_OK);
    assert_int_equal(d.changed, 0);
}

static void test_engine_send_other_node_ignored(void **state)
{
    (void)state;
    outcome_plan();
    assert_int_equal(outcome("invite", 4, "welcome", "4", "sent"), NT_OK);
    assert_int_equal(d.changed, 0);
}

static void test_engine_send_next_takes_outcomes_without_edge(void **state)
{
    (void)state;
    send_node("welcome", "email", "done");
    exit_node("done", "");
    publish();
    assert_int_equal(outcome("welcome", 1, "welcome", "1", "bounced"), NT_OK);
    assert_done("exit:done");
}

/* The _suppressed value the decision writes, or NULL. */
static const char *set_value(const char *name)
{
    for (size_t i = 0; i < d.nset; i++)
        if (strcmp(d.set[i].key, name) == 0)
            return d.set[i].value;
    return NULL;
}

static void test_engine_send_bounced_suppresses_and_takes_its_edge(void **state)
{
    Nt__Send *s;
    (void)state;

    s = send_node("mail", "email", "after");
    on_edge(s, "bounced", "gone");
    on_edge(s, "failed", "broken");
    exit_node("after", "");
    exit_node("gone", "bounced");
    exit_node("broken", "failed");
    publish();
    assert_int_equal(outcome("mail", 1, "mail", "1", "bounced"), NT_OK);
    assert_done("bounced");
    assert_non_null(set_value("_suppressed"));
    assert_string_equal(set_value("_suppressed"), "hard_bounce: 250 OK");
    assert_string_equal(nt_lead_get(&lead, "_suppressed"), "hard_bounce: 250 OK");
}

static void test_engine_send_bounced_without_its_edge_takes_failed_and_keeps_a_reason(
    void **state)
{
    Nt__Send *s;
    (void)state;

    s = send_node("mail", "email", "after");
    on_edge(s, "failed", "broken");
    exit_node("after", "");
    exit_node("broken", "failed");
    publish();
    assert_int_equal(nt_lead_set(&lead, "_suppressed", "complaint"), 0);
    assert_int_equal(outcome("mail", 1, "mail", "1", "bounced"), NT_OK);
    assert_done("failed");
    /* the first reason stays */
    assert_null(set_value("_suppressed"));
    assert_string_equal(nt_lead_get(&lead, "_suppressed"), "complaint");
    /* a sent message suppresses nothing */
    assert_int_equal(nt_lead_set(&lead, "_suppressed", NULL), 0);
    assert_int_equal(outcome("mail", 1, "mail", "1", "sent"), NT_OK);
    assert_done("exit:after");
    assert_null(set_value("_suppressed"));
}

static void test_engine_send_timeout(void **state)
{
    Nt__Send *s;
    (void)state;

    s = send_node("call", "call", NULL);
    on_edge(s, "connected", "done");
    s->timeout = dur(1, 2, 0, 0);
    s->on_timeout = "nudge";
    send_node("nudge", "email", NULL);
    exit_node("done", "");
    publish();

    assert_int_equal(start(NOW), NT_OK);
    assert_int_equal(d.due_ms, NOW + DAY + 2 * HOUR);
    /* Early timer: nothing. */
    assert_int_equal(timer("call", 1, NOW + DAY + 2 * HOUR, NOW + DAY), NT_OK);
    assert_int_equal(d.changed, 0);
    assert_int_equal(timer("call", 1, NOW + DAY + 2 * HOUR, NOW + DAY + 2 * HOUR), NT_OK);
    assert_int_equal(d.changed, 1);
    assert_string_equal(d.node, "nudge");
    assert_int_equal(d.nmsgs, 1);
    assert_string_equal(d.msgs[0].id, "L1:p1:nudge:2");
    assert_int_equal(d.due_ms, 0);
}

static void test_engine_wait_duration_rests_and_early_timer_ignored(void **state)
{
    (void)state;
    wait_for("pause", dur(3, 0, 0, 0), "follow_up");
    send_node("follow_up", "email", NULL);
    publish();

    assert_int_equal(start(NOW), NT_OK);
    assert_string_equal(d.node, "pause");
    assert_int_equal(d.due_ms, NOW + 3 * DAY);
    assert_int_equal(d.nmsgs, 0);
    assert_int_equal(d.visit, 1);

    assert_int_equal(timer("pause", 1, NOW + 3 * DAY, NOW + 3 * DAY - 1), NT_OK);
    assert_int_equal(d.changed, 0);
    assert_int_equal(event("pause", 1, "page_viewed", 0, NULL, 0), NT_OK);
    assert_int_equal(d.changed, 0);

    assert_int_equal(timer("pause", 1, NOW + 3 * DAY, NOW + 3 * DAY + 5), NT_OK);
    assert_int_equal(d.changed, 1);
    assert_string_equal(d.node, "follow_up");
    assert_string_equal(d.left, "pause");
    assert_string_equal(d.msgs[0].id, "L1:p1:follow_up:2");
}

static void test_engine_zero_wait_passes_through(void **state)
{
    (void)state;
    wait_for("nothing", dur(0, 0, 0, 0), "welcome");
    send_node("welcome", "email", NULL);
    publish();

    assert_int_equal(start(NOW), NT_OK);
    assert_path(2, "nothing", "welcome");
    assert_string_equal(d.node, "welcome");
    assert_int_equal(d.nmsgs, 1);
    assert_int_equal(d.due_ms, 0);
}

/* Entered on Saturday 2024-03-09 20:00 EST in New York; the clocks jump from 02:00 EST to
 * 03:00 EDT that night, so the next 09:00 local is Sunday 13:00 UTC, not 14:00. */
static void test_engine_wait_until_local_morning_across_dst(void **state)
{
    Nt__Wait *w = alloc(sizeof(*w));
    Nt__LocalWindow *win = alloc(sizeof(*win));
    const int64_t sat_evening = 1710032400000LL; /* 2024-03-10T01:00:00Z */
    const int64_t sun_0900_edt = 1710075600000LL; /* 2024-03-10T13:00:00Z */
    (void)state;

    nt__wait__init(w);
    nt__local_window__init(win);
    win->start = "09:00";
    win->end = "10:00";
    w->until_case = NT__WAIT__UNTIL_WINDOW;
    w->window = win;
    w->next = "welcome";
    node("morning", NT__NODE__KIND_WAIT, w);
    send_node("welcome", "email", NULL);
    publish();

    assert_int_equal(nt_lead_set(&lead, "timezone", "America/New_York"), 0);
    assert_int_equal(start(sat_evening), NT_OK);
    assert_string_equal(d.node, "morning");
    assert_int_equal(d.due_ms, sun_0900_edt);
    assert_int_equal(d.nmsgs, 0);

    /* Inside the window: straight through. */
    assert_int_equal(start(sun_0900_edt + 30 * 60000LL), NT_OK);
    assert_string_equal(d.node, "welcome");
    assert_int_equal(d.nmsgs, 1);
}

static void test_engine_wait_window_weekdays_only(void **state)
{
    Nt__Wait *w = alloc(sizeof(*w));
    Nt__LocalWindow *win = alloc(sizeof(*win));
    Nt__Weekday days[] = {NT__WEEKDAY__MON, NT__WEEKDAY__TUE, NT__WEEKDAY__WED,
                          NT__WEEKDAY__THU, NT__WEEKDAY__FRI};
    const int64_t sat_evening = 1710032400000LL;  /* Saturday 20:00 EST */
    const int64_t mon_0900_edt = 1710162000000LL; /* 2024-03-11T13:00:00Z */
    (void)state;

    nt__wait__init(w);
    nt__local_window__init(win);
    win->start = "09:00";
    win->end = "17:00";
    win->days = days;
    win->n_days = 5;
    w->until_case = NT__WAIT__UNTIL_WINDOW;
    w->window = win;
    w->next = "welcome";
    node("office_hours", NT__NODE__KIND_WAIT, w);
    send_node("welcome", "email", NULL);
    publish();

    assert_int_equal(nt_lead_set(&lead, "timezone", "America/New_York"), 0);
    assert_int_equal(start(sat_evening), NT_OK);
    assert_int_equal(d.due_ms, mon_0900_edt);
}

static void test_engine_wait_unknown_tz_uses_utc_and_says_so(void **state)
{
    (void)state;
    wait_for("pause", dur(0, 5, 0, 0), "welcome");
    send_node("welcome", "email", NULL);
    publish();

    assert_int_equal(nt_lead_set(&lead, "timezone", "Mars/Olympus_Mons"), 0);
    assert_int_equal(start(NOW), NT_OK);
    assert_int_equal(d.due_ms, NOW + 5 * HOUR);
    assert_true(has_note("unknown time zone 'Mars/Olympus_Mons', using UTC"));
}

static void test_engine_wait_until_date(void **state)
{
    Nt__Wait *w = alloc(sizeof(*w));
    (void)state;

    nt__wait__init(w);
    w->until_case = NT__WAIT__UNTIL_DATE;
    w->date = "2023-11-20T09:00"; /* Europe/Berlin, CET (UTC+1) */
    w->next = "welcome";
    node("launch_day", NT__NODE__KIND_WAIT, w);
    send_node("welcome", "email", NULL);
    publish();

    assert_int_equal(nt_lead_set(&lead, "timezone", "Europe/Berlin"), 0);
    assert_int_equal(start(NOW), NT_OK);
    assert_string_equal(d.node, "launch_day");
    assert_int_equal(d.due_ms, 1700467200000LL); /* 2023-11-20T08:00:00Z */

    /* A date already past: straight through. */
    assert_int_equal(start(1700467200000LL + 1), NT_OK);
    assert_string_equal(d.node, "welcome");
}

static void test_engine_resting_at_pass_through_node_continues(void **state)
{
    (void)state;
    branch("route", "welcome");
    send_node("welcome", "email", NULL);
    publish();

    assert_int_equal(timer("route", 7, 0, NOW), NT_OK);
    assert_int_equal(d.changed, 1);
    assert_path(1, "welcome");
    assert_string_equal(d.left, "route");
    assert_string_equal(d.msgs[0].id, "L1:p1:welcome:8");
}

/* An enrolled run whose start was lost is started by its timer. */
static void test_engine_unstarted_run_starts_on_timer(void **state)
{
    (void)state;
    send_node("welcome", "email", NULL);
    publish();

    assert_int_equal(timer("", 0, NOW, NOW), NT_OK);
    assert_int_equal(d.changed, 1);
    assert_string_equal(d.node, "welcome");
    assert_null(d.left);
}

/* A privacy proxy's open is not a person: it moves nothing. Delivery results still count. */
static void test_engine_send_machine_outcome_only_for_delivery(void **state)
{
    nt_kv_t opened[] = {{"plan", "p1"}, {"node", "welcome"}, {"visit", "1"},
                        {"outcome", "opened"}};
    nt_kv_t sent[] = {{"plan", "p1"}, {"node", "welcome"}, {"visit", "1"}, {"outcome", "sent"}};
    Nt__Send *s;
    (void)state;

    s = send_node("welcome", "email", NULL);
    on_edge(s, "opened", "engaged");
    on_edge(s, "sent", "pause");
    exit_node("engaged", "");
    wait_for("pause", dur(1, 0, 0, 0), "engaged");
    publish();

    assert_int_equal(event("welcome", 1, NT_EVENT_OUTCOME, 1, opened, 4), NT_OK);
    assert_int_equal(d.changed, 0);
    assert_int_equal(event("welcome", 1, NT_EVENT_OUTCOME, 0, opened, 4), NT_OK);
    assert_done("exit:engaged");
    assert_int_equal(event("welcome", 1, NT_EVENT_OUTCOME, 1, sent, 4), NT_OK);
    assert_string_equal(d.node, "pause");
}

static void wait_event_plan(void)
{
    Nt__WaitEvent *w = wait_event("await", "webinar_attended", "thanks", dur(7, 0, 0, 0),
                                  "missed");

    filter_attr(w, "webinar", "w42");
    send_node("thanks", "email", NULL);
    send_node("missed", "email", NULL);
    publish();
}

static void test_engine_wait_event_match(void **state)
{
    nt_kv_t attrs[] = {{"source", "zoom"}, {"webinar", "w42"}};
    (void)state;

    wait_event_plan();
    assert_int_equal(start(NOW), NT_OK);
    assert_string_equal(d.node, "await");
    assert_int_equal(d.due_ms, NOW + 7 * DAY);

    assert_int_equal(event("await", 1, "webinar_attended", 0, attrs, 2), NT_OK);
    assert_int_equal(d.changed, 1);
    assert_string_equal(d.node, "thanks");
    assert_string_equal(d.left, "await");
    assert_string_equal(d.msgs[0].id, "L1:p1:thanks:2");
}

static void test_engine_wait_event_attr_mismatch_ignored(void **state)
{
    nt_kv_t other[] = {{"webinar", "w43"}};
    (void)state;

    wait_event_plan();
    assert_int_equal(event("await", 1, "webinar_attended", 0, other, 1), NT_OK);
    assert_int_equal(d.changed, 0);
    assert_int_equal(event("await", 1, "webinar_attended", 0, NULL, 0), NT_OK);
    assert_int_equal(d.changed, 0);
    assert_int_equal(event("await", 1, "webinar_registered", 0, other, 1), NT_OK);
    assert_int_equal(d.changed, 0);
}

static void test_engine_wait_event_machine_event_ignored(void **state)
{
    nt_kv_t attrs[] = {{"webinar", "w42"}};
    (void)state;

    wait_event_plan();
    assert_int_equal(event("await", 1, "webinar_attended", 1, attrs, 1), NT_OK);
    assert_int_equal(d.changed, 0);
}

static void test_engine_wait_event_timeout(void **state)
{
    (void)state;
    wait_event_plan();
    assert_int_equal(timer("await", 1, NOW + 7 * DAY, NOW + 7 * DAY - 1000), NT_OK);
    assert_int_equal(d.changed, 0);
    assert_int_equal(timer("await", 1, NOW + 7 * DAY, NOW + 7 * DAY), NT_OK);
    assert_int_equal(d.changed, 1);
    assert_string_equal(d.node, "missed");
}

static void test_engine_split_deterministic_and_proportional(void **state)
{
    Nt__Split *s;
    int counts[2] = {0, 0};
    char id[32];
    int i, a;
    (void)state;

    s = split("ab");
    arm(s, "a", 50, "send_a");
    arm(s, "b", 50, "send_b");
    send_node("send_a", "email", NULL);
    send_node("send_b", "email", NULL);
    publish();

    for (i = 0; i < 10000; i++) {
        snprintf(id, sizeof(id), "lead-%d", i);
        a = nt_engine_split_arm(s, id, "p1", "ab");
        assert_true(a == 0 || a == 1);
        assert_int_equal(nt_engine_split_arm(s, id, "p1", "ab"), a);
        counts[a]++;
    }
    assert_in_range(counts[0], 4500, 5500);

    /* 10/90 weights. */
    s->arms[0]->weight = 10;
    s->arms[1]->weight = 90;
    counts[0] = counts[1] = 0;
    for (i = 0; i < 10000; i++) {
        snprintf(id, sizeof(id), "lead-%d", i);
        counts[nt_engine_split_arm(s, id, "p1", "ab")]++;
    }
    assert_in_range(counts[0], 800, 1200);

    s->arms[0]->weight = 0;
    s->arms[1]->weight = 0;
    assert_int_equal(nt_engine_split_arm(s, "L1", "p1", "ab"), -1);

    /* Through the engine: the same arm as the function says. */
    a = nt_engine_split_arm(plan->wf->nodes[0]->split, "L1", "p1", "ab");
    assert_int_equal(start(NOW), NT_OK);
    assert_path(2, "ab", a == 0 ? "send_a" : "send_b");
    assert_int_equal(start(NOW), NT_OK);
    assert_path(2, "ab", a == 0 ? "send_a" : "send_b");
}

static void test_engine_update_sets_attrs_score_stage_and_branch_sees_them(void **state)
{
    Nt__Update *u;
    Nt__Branch *b;
    (void)state;

    u = update("qualify", "route");
    set_attr(u, "owner", "rep-7");
    u->unset[u->n_unset++] = "source";
    u->add_score = 25;
    u->stage = NT__STAGE__MQL;
    b = branch("route", "cold");
    when(b, both(stage_is(NT__OP__EQ, NT__STAGE__MQL), score_is(NT__OP__GE, 30)), "warm");
    exit_node("warm", "warm");
    exit_node("cold", "cold");
    publish();

    assert_int_equal(nt_lead_set(&lead, "_score", "5"), 0);
    assert_int_equal(nt_lead_set(&lead, "source", "csv"), 0);
    assert_int_equal(start(NOW), NT_OK);
    assert_done("warm");
    assert_int_equal(d.nset, 2);
    assert_string_equal(d.set[0].key, "owner");
    assert_string_equal(d.set[0].value, "rep-7");
    assert_string_equal(d.set[1].key, "source");
    assert_null(d.set[1].value);
    assert_int_equal(d.score_delta, 25);
    assert_int_equal(d.stage, NT__STAGE__MQL);
    assert_int_equal(nt_lead_score(&lead), 30);
    assert_string_equal(nt_lead_get(&lead, "_stage"), "mql");
    assert_string_equal(nt_lead_get(&lead, "owner"), "rep-7");
    assert_null(nt_lead_get(&lead, "source"));
    assert_path(3, "qualify", "route", "warm");
}

static void test_engine_goal_after_update(void **state)
{
    Nt__Update *u;
    (void)state;

    goal("sql", stage_is(NT__OP__GE, NT__STAGE__SQL), "handed_to_sales");
    u = update("promote", "welcome");
    u->stage = NT__STAGE__SQL;
    send_node("welcome", "email", NULL);
    publish();

    assert_int_equal(start(NOW), NT_OK);
    assert_done("handed_to_sales");
    assert_int_equal(d.nmsgs, 0);
    assert_int_equal(d.stage, NT__STAGE__SQL);
}

static void test_engine_step_limit_on_pass_through_cycle(void **state)
{
    (void)state;
    branch("ping", "pong");
    branch("pong", "ping");
    publish();

    assert_int_equal(start(NOW), NT_OK);
    assert_done("step_limit");
    assert_int_equal(d.npath, NT_ENGINE_MAX_STEPS);
    assert_int_equal(d.visit, NT_ENGINE_MAX_STEPS);
}

static void test_engine_node_missing(void **state)
{
    nt_run_t r = run_at("removed_in_v2", 3, 0);
    nt_trigger_t t = {.kind = NT_TRIG_TIMER};
    (void)state;

    branch("route", "nowhere");
    publish();

    assert_int_equal(nt_engine_decide(plan, &lead, &r, &t, NOW, &d), NT_ENOTFOUND);
    assert_done("node_missing");
    assert_string_equal(d.node, "removed_in_v2");
    assert_string_equal(d.left, "removed_in_v2");
    assert_int_equal(d.visit, 3);

    assert_int_equal(start(NOW), NT_OK);
    assert_done("node_missing:nowhere");
    assert_string_equal(d.node, "route");
}

static void test_engine_no_branch_and_exit_reasons(void **state)
{
    Nt__Branch *b;
    (void)state;

    b = branch("route", NULL);
    when(b, attr_is("role", NT__OP__EQ, "cto"), "bye");
    exit_node("bye", "");
    publish();

    assert_int_equal(start(NOW), NT_OK);
    assert_done("no_branch:route");
    assert_int_equal(nt_lead_set(&lead, "role", "CTO"), 0);
    assert_int_equal(start(NOW), NT_OK);
    assert_done("exit:bye");
}

static void test_engine_done_run_is_unchanged(void **state)
{
    nt_run_t r = run_at("welcome", 1, 0);
    nt_trigger_t t = {.kind = NT_TRIG_TIMER};
    (void)state;

    send_node("welcome", "email", NULL);
    publish();
    r.status = NT_RUN_DONE;
    assert_int_equal(nt_engine_decide(plan, &lead, &r, &t, NOW, &d), NT_OK);
    assert_int_equal(d.changed, 0);
    assert_null(d.node);
}

static void test_engine_decision_fini_on_zeroed_struct(void **state)
{
    nt_decision_t z;
    (void)state;

    memset(&z, 0, sizeof(z));
    nt_decision_fini(&z);
    nt_decision_fini(&z);
    nt_decision_fini(NULL);

    send_node("welcome", "email", NULL);
    publish();
    assert_int_equal(start(NOW), NT_OK);
    nt_decision_fini(&d);
    assert_int_equal(d.changed, 0);
    assert_null(d.msgs);
    nt_decision_fini(&d);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_engine_start_chains_update_branch_send),
        T(test_engine_goal_exits_before_the_step),
        T(test_engine_goal_without_reason_is_named),
        T(test_engine_not_in_track),
        T(test_engine_send_outcome_sent_follows_edge),
        T(test_engine_send_custom_outcome_follows_its_edge),
        T(test_engine_send_failed_without_edge_ends_run),
        T(test_engine_send_unhandled_outcome_changes_nothing),
        T(test_engine_send_stale_visit_ignored),
        T(test_engine_send_other_node_ignored),
        T(test_engine_send_next_takes_outcomes_without_edge),
        T(test_engine_send_bounced_suppresses_and_takes_its_edge),
        T(test_engine_send_bounced_without_its_edge_takes_failed_and_keeps_a_reason),
        T(test_engine_send_timeout),
        T(test_engine_wait_duration_rests_and_early_timer_ignored),
        T(test_engine_zero_wait_passes_through),
        T(test_engine_wait_until_local_morning_across_dst),
        T(test_engine_wait_window_weekdays_only),
        T(test_engine_wait_unknown_tz_uses_utc_and_says_so),
        T(test_engine_wait_until_date),
        T(test_engine_resting_at_pass_through_node_continues),
        T(test_engine_unstarted_run_starts_on_timer),
        T(test_engine_send_machine_outcome_only_for_delivery),
        T(test_engine_wait_event_match),
        T(test_engine_wait_event_attr_mismatch_ignored),
        T(test_engine_wait_event_machine_event_ignored),
        T(test_engine_wait_event_timeout),
        T(test_engine_split_deterministic_and_proportional),
        T(test_engine_update_sets_attrs_score_stage_and_branch_sees_them),
        T(test_engine_goal_after_update),
        T(test_engine_step_limit_on_pass_through_cycle),
        T(test_engine_node_missing),
        T(test_engine_no_branch_and_exit_reasons),
        T(test_engine_done_run_is_unchanged),
        T(test_engine_decision_fini_on_zeroed_struct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
