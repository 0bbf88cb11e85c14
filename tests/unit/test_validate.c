/* Plan validation: one plan per kind of problem, asserting the node and the sentence; several
 * problems reported at once; big and hostile plans. Channels come from the built modules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "modules.h"
#include "validate.h"

static nt_modules_t *mods;

/* Compile protobuf text format with protoc into an unpacked Workflow (caller frees). */
static Nt__Workflow *compile(const char *text)
{
    char in[] = "/tmp/nt_test_validate_XXXXXX";
    int fd = mkstemp(in);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    char out[sizeof(in) + 4];
    snprintf(out, sizeof(out), "%s.bin", in);
    char *cmd = NULL;
    assert_true(asprintf(&cmd, "'%s' --encode=nt.Workflow -I '%s' workflow.proto <'%s' >'%s'",
                         NT_PROTOC, NT_PROTO_DIR, in, out) > 0);
    int rc = system(cmd);
    free(cmd);
    if (rc != 0)
        fail_msg("protoc refused the test plan:\n%s", text);
    f = fopen(out, "rb");
    assert_non_null(f);
    uint8_t *buf = malloc(1 << 20);
    size_t n = fread(buf, 1, 1 << 20, f);
    fclose(f);
    unlink(in);
    unlink(out);
    Nt__Workflow *wf = nt__workflow__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(wf);
    return wf;
}

static void print_errs(const nt_verrs_t *e)
{
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "  node %s: %s\n", e->v[i].node ? e->v[i].node : "(plan)", e->v[i].msg);
}

/* Non-zero when some problem is about node (NULL: the plan) and contains fragment. */
static int has(const nt_verrs_t *e, const char *node, const char *fragment)
{
    for (size_t i = 0; i < e->n; i++) {
        int same = node == NULL ? e->v[i].node == NULL
                                : e->v[i].node != NULL && strcmp(e->v[i].node, node) == 0;
        if (same && strstr(e->v[i].msg, fragment) != NULL)
            return 1;
    }
    return 0;
}

#define EXPECT(errs, node, fragment)                                                          \
    do {                                                                                      \
        if (!has(errs, node, fragment)) {                                                     \
            print_errs(errs);                                                                 \
            fail_msg("no problem for %s containing \"%s\"", node ? node : "(plan)", fragment); \
        }                                                                                     \
    } while (0)

/* Validate text; returns the problems (caller finis) and checks the return code agrees. */
static nt_verrs_t check(const char *text)
{
    Nt__Workflow *wf = compile(text);
    nt_verrs_t errs = {0};
    nt_rc_t rc = nt_validate(wf, mods, &errs);
    assert_int_equal(rc, errs.n ? NT_EINVAL : NT_OK);
    nt__workflow__free_unpacked(wf, NULL);
    return errs;
}

#define HEAD "id: \"t\" start: \"a\" "

static void test_validate_clean_plan_passes(void **state)
{
    nt_verrs_t e = check(HEAD
        "attributes { name: \"persona\" } "
        "entry { any { of { attr { name: \"role\" op: EQ value: \"technical\" } } "
        "              of { attr { name: \"persona\" op: PRESENT } } } } "
        "goals { name: \"sql\" when { stage { op: GE stage: SQL } } reason: \"sql\" } "
        "nodes { id: \"a\" send { channel: \"log\" params { name: \"message\" value: \"hi\" } "
        "        next: \"w\" } } "
        "nodes { id: \"w\" wait { duration { days: 2 } next: \"b\" } } "
        "nodes { id: \"b\" branch { cases { when { score { op: GE value: 50 } } to: \"u\" } "
        "        default: \"a2\" } } "
        "nodes { id: \"a2\" wait { window { start: \"09:00\" end: \"17:00\" days: MON days: FRI } "
        "        next: \"x\" } } "
        "nodes { id: \"u\" update { add_score: 5 stage: MQL set { name: \"persona\" value: \"p\" }"
        "        next: \"x\" } } "
        "nodes { id: \"x\" exit { reason: \"done\" } }");
    if (e.n)
        print_errs(&e);
    assert_int_equal(e.n, 0);
    nt_verrs_fini(&e);
}

static void test_validate_plan_id_missing_or_invalid(void **state)
{
    nt_verrs_t e = check("start: \"a\" nodes { id: \"a\" exit {} }");
    EXPECT(&e, NULL, "plan has no id");
    nt_verrs_fini(&e);
    e = check("id: \"Bad Plan!\" start: \"a\" nodes { id: \"a\" exit {} }");
    EXPECT(&e, NULL, "plan id 'Bad Plan!' is invalid");
    nt_verrs_fini(&e);
}

static void test_validate_no_nodes(void **state)
{
    nt_verrs_t e = check("id: \"t\" start: \"a\"");
    EXPECT(&e, NULL, "plan has no nodes");
    nt_verrs_fini(&e);
}

static void test_validate_start_missing_or_unknown(void **state)
{
    nt_verrs_t e = check("id: \"t\" nodes { id: \"a\" exit {} }");
    EXPECT(&e, NULL, "plan has no start node");
    nt_verrs_fini(&e);
    e = check("id: \"t\" start: \"nope\" nodes { id: \"a\" exit {} }");
    EXPECT(&e, NULL, "start node 'nope' does not exist");
    nt_verrs_fini(&e);
}

static void test_validate_node_ids_duplicate_empty_invalid(void **state)
{
    nt_verrs_t e = check(HEAD "nodes { id: \"a\" update { next: \"a b\" } } "
                         "nodes { id: \"a\" exit {} } nodes { exit {} } "
                         "nodes { id: \"a b\" exit {} }");
    EXPECT(&e, "a", "duplicate node id 'a' (node #1 and node #2)");
    EXPECT(&e, NULL, "node #3 has no id");
    EXPECT(&e, "a b", "node id 'a b' is invalid");
    nt_verrs_fini(&e);
}

static void test_validate_node_without_kind(void **state)
{
    nt_verrs_t e = check(HEAD "nodes { id: \"a\" label: \"nothing\" }");
    EXPECT(&e, "a", "node has no kind");
    nt_verrs_fini(&e);
}

static void test_validate_dangling_edges_name_edge_and_target(void **state)
{
    nt_verrs_t e = check(HEAD
        "nodes { id: \"a\" send { channel: \"log\" params { name: \"message\" value: \"m\" } "
        "        on { outcome: \"sent\" to: \"gone1\" } next: \"gone2\" "
        "        timeout { hours: 1 } on_timeout: \"gone3\" } } "
        "nodes { id: \"w\" wait { duration { days: 1 } next: \"gone4\" } } "
        "nodes { id: \"we\" wait_event { filter { type: \"email.clicked\" } on_match: \"gone5\" "
        "        timeout { days: 1 } on_timeout: \"gone6\" } } "
        "nodes { id: \"b\" branch { cases { when { always: true } to: \"gone7\" } "
        "        default: \"gone8\" } } "
        "nodes { id: \"s\" split { arms { name: \"A\" weight: 1 to: \"gone9\" } } } "
        "nodes { id: \"u\" update { next: \"gone10\" } }");
    EXPECT(&e, "a", "edge 'sent' points to missing node 'gone1'");
    EXPECT(&e, "a", "edge 'next' points to missing node 'gone2'");
    EXPECT(&e, "a", "edge 'on_timeout' points to missing node 'gone3'");
    EXPECT(&e, "w", "edge 'next' points to missing node 'gone4'");
    EXPECT(&e, "we", "edge 'on_match' points to missing node 'gone5'");
    EXPECT(&e, "we", "edge 'on_timeout' points to missing node 'gone6'");
    EXPECT(&e, "b", "edge 'case 1' points to missing node 'gone7'");
    EXPECT(&e, "b", "edge 'default' points to missing node 'gone8'");
    EXPECT(&e, "s", "edge 'arm A' points to missing node 'gone9'");
    EXPECT(&e, "u", "edge 'next' points to missing node 'gone10'");
    nt_verrs_fini(&e);
}

static void test_validate_unreachable_nodes(void **state)
{
    nt_verrs_t e = check(HEAD "nodes { id: \"a\" exit {} } nodes { id: \"island\" exit {} }");
    EXPECT(&e, "island", "not reachable from start node 'a'");
    assert_int_equal(e.n, 1);
    nt_verrs_fini(&e);
}

static void test_validate_cycle_without_resting_node(void **state)
{
    nt_verrs_t e = check(HEAD
        "nodes { id: \"a\" branch { cases { when { score { op: GT value: 9 } } to: \"x\" } "
        "        default: \"u\" } } "
        "nodes { id: \"u\" update { add_score: 1 next: \"z\" } } "
        "nodes { id: \"z\" wait { duration {} next: \"a\" } } "
        "nodes { id: \"x\" update { next: \"x\" } }");
    EXPECT(&e, "a", "cycle through");
    EXPECT(&e, "a", "has no resting node");
    EXPECT(&e, "x", "cycle through 'x'");
    nt_verrs_fini(&e);
    /* The same loop with a real wait in it is fine: a lead rests once per round. */
    e = check(HEAD
        "nodes { id: \"a\" branch { cases { when { score { op: GT value: 9 } } to: \"x\" } "
        "        default: \"u\" } } "
        "nodes { id: \"u\" update { add_score: 1 next: \"z\" } } "
        "nodes { id: \"z\" wait { duration { days: 1 } next: \"a\" } } "
        "nodes { id: \"x\" exit {} }");
    if (e.n)
        print_errs(&e);
    assert_int_equal(e.n, 0);
    nt_verrs_fini(&e);
}

static void test_validate_waits(void **state)
{
    nt_verrs_t e = check(HEAD
        "nodes { id: \"a\" wait { next: \"b\" } } "
        "nodes { id: \"b\" wait { duration {} next: \"c\" } } "
        "nodes { id: \"c\" wait { window { start: \"9am\" end: \"25:00\" } next: \"d\" } } "
        "nodes { id: \"d\" wait { window { start: \"17:00\" end: \"09:00\" } next: \"f\" } } "
        "nodes { id: \"f\" wait { date: \"2025-02-30T10:00\" next: \"g\" } } "
        "nodes { id: \"g\" wait { date: \"2025-03-01T10:00Z\" } } ");
    EXPECT(&e, "a", "wait has no duration, window or date");
    assert_false(has(&e, "b", ""));  /* zero duration: passes through, nothing to say */
    EXPECT(&e, "c", "window start '9am' is not a time");
    EXPECT(&e, "c", "window end '25:00' is not a time");
    EXPECT(&e, "d", "window end 09:00 is not after its start 17:00");
    EXPECT(&e, "f", "date '2025-02-30T10:00' is not");
    EXPECT(&e, "g", "wait has no next node");
    assert_false(has(&e, "g", "date"));
    nt_verrs_fini(&e);
}

static void test_validate_missing_next_and_default(void **state)
{
    nt_verrs_t e = check(HEAD
        "nodes { id: \"a\" update { add_score: 1 next: \"b\" } } "
        "nodes { id: \"b\" branch { cases { when { always: true } to: \"c\" } } } "
        "nodes { id: \"c\" update { add_score: 1 } }");
    EXPECT(&e, "b", "branch has no default node");
    EXPECT(&e, "c", "update has no next node");
    nt_verrs_fini(&e);
}

static void test_validate_split_arms_and_weights(void **state)
{
    nt_verrs_t e = check(HEAD
        "nodes { id: \"a\" split { arms { name: \"A\" to: \"b\" } arms { name: \"B\" to: \"x\" } } }"
        "nodes { id: \"b\" split { } } nodes { id: \"x\" exit {} }");
    EXPECT(&e, "a", "total weight of 0");
    EXPECT(&e, "b", "split has no arms");
    nt_verrs_fini(&e);
}

static void test_validate_send_channel_checks(void **state)
{
    nt_verrs_t e = check(HEAD
        "nodes { id: \"a\" send { channel: \"emial\" next: \"b\" } } "
        "nodes { id: \"b\" send { channel: \"log\" params { name: \"message\" value: \"m\" } "
        "        params { name: \"colour\" value: \"red\" } "
        "        on { outcome: \"bounced\" to: \"x\" } } } "
        "nodes { id: \"c\" send { channel: \"log\" params { name: \"message\" value: \"m\" } } } "
        "nodes { id: \"d\" send { channel: \"log\" params { name: \"message\" value: \"m\" } "
        "        next: \"x\" timeout { days: 1 } } } "
        "nodes { id: \"f\" send { channel: \"log\" params { name: \"message\" value: \"m\" } "
        "        next: \"x\" on_timeout: \"x\" } } "
        "nodes { id: \"x\" exit {} }");
    EXPECT(&e, "a", "unknown channel 'emial' (known: ");
    EXPECT(&e, "a", "log");
    EXPECT(&e, "b", "channel 'log' has no parameter 'colour' (known: ");
    EXPECT(&e, "b", "channel 'log' never reports outcome 'bounced'");
    EXPECT(&e, "c", "send has no edge");
    EXPECT(&e, "d", "send has a timeout but no on_timeout node");
    EXPECT(&e, "f", "send has on_timeout but no timeout");
    nt_verrs_fini(&e);
}

static void test_validate_send_channel_validate_hook_refuses(void **state)
{
    nt_verrs_t e = check(HEAD
        "nodes { id: \"a\" send { channel: \"log\" params { name: \"message\" value: \"m\" } "
        "        params { name: \"outcome\" value: \"bogus\" } next: \"x\" } } "
        "nodes { id: \"x\" exit {} }");
    EXPECT(&e, "a", "channel 'log' refuses the parameters: ");
    EXPECT(&e, "a", "bogus");
    nt_verrs_fini(&e);
}

static void test_validate_send_outcome_edges_the_channel_reports(void **state)
{
    nt_verrs_t e = check(HEAD
        "nodes { id: \"a\" send { channel: \"log\" params { name: \"message\" value: \"m\" } "
        "        on { outcome: \"sent\" to: \"x\" } on { outcome: \"failed\" to: \"x\" } "
        "        on { outcome: \"attended\" to: \"x\" } on { outcome: \"no_show\" to: \"x\" } "
        "        on { outcome: \"meeting_booked\" to: \"x\" } } } "
        "nodes { id: \"x\" exit {} }");
    if (e.n)
        print_errs(&e);
    assert_int_equal(e.n, 0);
    nt_verrs_fini(&e);
}

static void test_validate_wait_event_needs_filter_type(void **state)
{
    nt_verrs_t e = check(HEAD
        "nodes { id: \"a\" wait_event { on_match: \"x\" timeout { days: 3 } } } "
        "nodes { id: \"x\" exit {} }");
    EXPECT(&e, "a", "wait_event has no filter type");
    EXPECT(&e, "a", "wait_event has a timeout but no on_timeout node");
    nt_verrs_fini(&e);
}

static void test_validate_conditions_on_unknown_attributes(void **state)
{
    nt_verrs_t e = check(HEAD
        "attributes { name: \"persona\" } "
        "entry { attr { name: \"budget\" op: GT value: \"10\" } } "
        "goals { name: \"g\" when { negate { attr { name: \"churned\" op: PRESENT } } } } "
        "goals { name: \"empty\" } "
        "nodes { id: \"a\" branch { cases { when { all { of { attr { name: \"persona\" op: EQ "
        "        value: \"cto\" } } of { any { of { attr { name: \"seats\" op: GE value: \"5\" } "
        "        } } } } } to: \"x\" } default: \"x\" } } "
        "nodes { id: \"x\" exit {} }");
    EXPECT(&e, NULL, "entry: condition on unknown attribute 'budget' (declare it in attributes)");
    EXPECT(&e, NULL, "goal 'g': condition on unknown attribute 'churned'");
    EXPECT(&e, NULL, "goal 'empty': goal has no condition");
    EXPECT(&e, "a", "case 1: condition on unknown attribute 'seats' (declare it in attributes)");
    assert_false(has(&e, "a", "persona"));
    nt_verrs_fini(&e);
}

static void test_validate_updates_on_unknown_and_reserved_attributes(void **state)
{
    nt_verrs_t e = check(HEAD
        "nodes { id: \"a\" update { set { name: \"budget\" value: \"1\" } "
        "        set { name: \"score\" value: \"99\" } set { name: \"company\" value: \"X\" } "
        "        unset: \"stage\" unset: \"ghost\" unset: \"_internal\" next: \"x\" } } "
        "nodes { id: \"x\" exit {} }");
    EXPECT(&e, "a", "update sets unknown attribute 'budget' (declare it in attributes)");
    EXPECT(&e, "a", "update cannot set reserved attribute 'score'");
    EXPECT(&e, "a", "update cannot unset reserved attribute 'stage'");
    EXPECT(&e, "a", "update unsets unknown attribute 'ghost'");
    EXPECT(&e, "a", "update unsets invalid attribute name '_internal'");
    assert_false(has(&e, "a", "company"));
    nt_verrs_fini(&e);
}

static void test_validate_stage_and_score_ops(void **state)
{
    nt_verrs_t e = check(HEAD
        "entry { stage { op: IN stage: MQL } } "
        "goals { name: \"s\" when { score { op: CONTAINS value: 3 } } } "
        "nodes { id: \"a\" branch { cases { when { stage { op: GE } } to: \"x\" } default: \"x\" } }"
        "nodes { id: \"x\" exit {} }");
    EXPECT(&e, NULL, "entry: stage condition uses op IN");
    EXPECT(&e, NULL, "goal 's': score condition uses op CONTAINS");
    EXPECT(&e, "a", "case 1: stage condition has no valid stage");
    nt_verrs_fini(&e);
}

static void test_validate_reports_every_problem_at_once(void **state)
{
    nt_verrs_t e = check("id: \"BAD\" start: \"a\" "
        "nodes { id: \"a\" send { channel: \"nope\" next: \"b\" } } "
        "nodes { id: \"b\" wait { next: \"c\" } } "
        "nodes { id: \"c\" branch { cases { when { attr { name: \"zz\" op: EQ } } to: \"q\" } } }"
        "nodes { id: \"lost\" exit {} }");
    EXPECT(&e, NULL, "plan id 'BAD' is invalid");
    EXPECT(&e, "a", "unknown channel 'nope'");
    EXPECT(&e, "b", "wait has no duration, window or date");
    EXPECT(&e, "c", "condition on unknown attribute 'zz'");
    EXPECT(&e, "c", "edge 'case 1' points to missing node 'q'");
    EXPECT(&e, "c", "branch has no default node");
    EXPECT(&e, "lost", "not reachable");
    assert_true(e.n >= 7);
    nt_verrs_fini(&e);
}

/* ---------------------------------------------------------------- big and hostile plans */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A plan of n update nodes n0 -> n1 -> ... -> exit, or a ring of pass-through nodes. */
static Nt__Workflow *chain(size_t n, int ring)
{
    Nt__Workflow *wf = malloc(sizeof(*wf));
    nt__workflow__init(wf);
    wf->id = strdup("big");
    wf->start = strdup("n0");
    wf->n_nodes = n + 1;
    wf->nodes = calloc(n + 1, sizeof(*wf->nodes));
    for (size_t i = 0; i <= n; i++) {
        Nt__Node *node = malloc(sizeof(*node));
        nt__node__init(node);
        char id[32];
        snprintf(id, sizeof(id), i < n ? "n%zu" : "end", i);
        node->id = strdup(id);
        if (i < n) {
            Nt__Update *u = malloc(sizeof(*u));
            nt__update__init(u);
            u->add_score = 1;
            char next[32];
            if (ring && i == n - 1)
                snprintf(next, sizeof(next), "n0");
            else if (i == n - 1)
                snprintf(next, sizeof(next), "end");
            else
                snprintf(next, sizeof(next), "n%zu", i + 1);
            u->next = strdup(next);
            node->kind_case = NT__NODE__KIND_UPDATE;
            node->update = u;
        } else {
            Nt__Exit *x = malloc(sizeof(*x));
            nt__exit__init(x);
            node->kind_case = NT__NODE__KIND_EXIT;
            node->exit = x;
        }
        wf->nodes[i] = node;
    }
    return wf;
}

static void test_validate_ten_thousand_node_chain_is_fast(void **state)
{
    Nt__Workflow *wf = chain(10000, 0);
    nt_verrs_t e = {0};
    double t0 = now_s();
    nt_rc_t rc = nt_validate(wf, mods, &e);
    double dt = now_s() - t0;
    if (e.n)
        print_errs(&e);
    assert_int_equal(rc, NT_OK);
    assert_true(dt < 0.5);
    nt_verrs_fini(&e);
    nt__workflow__free_unpacked(wf, NULL); /* the default allocator frees malloc'd parts */
}

static void test_validate_ten_thousand_node_ring_is_one_cycle(void **state)
{
    Nt__Workflow *wf = chain(10000, 1);
    nt_verrs_t e = {0};
    double t0 = now_s();
    assert_int_equal(nt_validate(wf, mods, &e), NT_EINVAL);
    assert_true(now_s() - t0 < 0.5);
    EXPECT(&e, "n0", "and 9994 more");
    EXPECT(&e, "end", "not reachable");
    assert_int_equal(e.n, 2);
    nt_verrs_fini(&e);
    nt__workflow__free_unpacked(wf, NULL);
}

static void test_validate_hostile_deep_condition_nesting(void **state)
{
    /* 100,000 nested negations around an attribute condition, built by hand (protoc itself
     * refuses such depth). Validation stops at the limit and says so once. */
    size_t depth = 100000;
    Nt__Condition **chainv = calloc(depth, sizeof(*chainv));
    for (size_t i = 0; i < depth; i++) {
        chainv[i] = malloc(sizeof(Nt__Condition));
        nt__condition__init(chainv[i]);
        if (i > 0) {
            chainv[i - 1]->kind_case = NT__CONDITION__KIND_NEGATE;
            chainv[i - 1]->negate = chainv[i];
        }
    }
    Nt__AttrCmp attr = NT__ATTR_CMP__INIT;
    attr.name = "undeclared";
    chainv[depth - 1]->kind_case = NT__CONDITION__KIND_ATTR;
    chainv[depth - 1]->attr = &attr;

    Nt__Exit x = NT__EXIT__INIT;
    Nt__Node node = NT__NODE__INIT;
    node.id = "a";
    node.kind_case = NT__NODE__KIND_EXIT;
    node.exit = &x;
    Nt__Node *nodes[] = {&node};
    Nt__Workflow wf = NT__WORKFLOW__INIT;
    wf.id = "deep";
    wf.start = "a";
    wf.n_nodes = 1;
    wf.nodes = nodes;
    wf.entry = chainv[0];

    nt_verrs_t e = {0};
    assert_int_equal(nt_validate(&wf, mods, &e), NT_EINVAL);
    EXPECT(&e, NULL, "entry: condition is nested deeper than 32 levels");
    assert_int_equal(e.n, 1);
    nt_verrs_fini(&e);

    /* Exactly at the limit is fine: depth 32 with a declared attribute. */
    chainv[31]->kind_case = NT__CONDITION__KIND_ATTR;
    chainv[31]->attr = &attr;
    attr.name = "role";
    assert_int_equal(nt_validate(&wf, mods, &e), NT_OK);
    nt_verrs_fini(&e);
    for (size_t i = 0; i < depth; i++)
        free(chainv[i]);
    free(chainv);
}

static int setup(void **state)
{
    char *err = NULL;
    mods = nt_modules_load(NT_BINARY_DIR "/modules", &err);
    if (mods == NULL) {
        fprintf(stderr, "cannot load modules from %s: %s\n", NT_BINARY_DIR "/modules",
                err ? err : "?");
        free(err);
        return -1;
    }
    if (nt_modules_find(mods, "log") == NULL) {
        fprintf(stderr, "the log channel is not built in %s/modules\n", NT_BINARY_DIR);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    nt_modules_free(mods);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate_clean_plan_passes),
        cmocka_unit_test(test_validate_plan_id_missing_or_invalid),
        cmocka_unit_test(test_validate_no_nodes),
        cmocka_unit_test(test_validate_start_missing_or_unknown),
        cmocka_unit_test(test_validate_node_ids_duplicate_empty_invalid),
        cmocka_unit_test(test_validate_node_without_kind),
        cmocka_unit_test(test_validate_dangling_edges_name_edge_and_target),
        cmocka_unit_test(test_validate_unreachable_nodes),
        cmocka_unit_test(test_validate_cycle_without_resting_node),
        cmocka_unit_test(test_validate_waits),
        cmocka_unit_test(test_validate_missing_next_and_default),
        cmocka_unit_test(test_validate_split_arms_and_weights),
        cmocka_unit_test(test_validate_send_channel_checks),
        cmocka_unit_test(test_validate_send_channel_validate_hook_refuses),
        cmocka_unit_test(test_validate_send_outcome_edges_the_channel_reports),
        cmocka_unit_test(test_validate_wait_event_needs_filter_type),
        cmocka_unit_test(test_validate_conditions_on_unknown_attributes),
        cmocka_unit_test(test_validate_updates_on_unknown_and_reserved_attributes),
        cmocka_unit_test(test_validate_stage_and_score_ops),
        cmocka_unit_test(test_validate_reports_every_problem_at_once),
        cmocka_unit_test(test_validate_ten_thousand_node_chain_is_fast),
        cmocka_unit_test(test_validate_ten_thousand_node_ring_is_one_cycle),
        cmocka_unit_test(test_validate_hostile_deep_condition_nesting),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
