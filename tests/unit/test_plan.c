/* Plans: unpacking binary Workflows, node lookup by id, kind names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "plan.h"

/* Pack a Workflow with the given node ids (send, wait, exit, ... in turn) and load it. */
static nt_plan_t *load(const char *const *ids, size_t n, char **err)
{
    Nt__Workflow wf = NT__WORKFLOW__INIT;
    Nt__Node nodes[16], *ptrs[16];
    Nt__Send send = NT__SEND__INIT;
    Nt__Wait wait = NT__WAIT__INIT;
    Nt__Duration d = NT__DURATION__INIT;
    Nt__Exit ex = NT__EXIT__INIT;
    Nt__Branch br = NT__BRANCH__INIT;
    uint8_t *buf;
    nt_plan_t *plan;
    size_t i, len;

    assert_true(n <= 16);
    send.channel = "email";
    d.days = 1;
    wait.until_case = NT__WAIT__UNTIL_DURATION;
    wait.duration = &d;
    ex.reason = "done";
    for (i = 0; i < n; i++) {
        nt__node__init(&nodes[i]);
        nodes[i].id = (char *)ids[i];
        switch (i % 4) {
        case 0:
            nodes[i].kind_case = NT__NODE__KIND_SEND;
            nodes[i].send = &send;
            break;
        case 1:
            nodes[i].kind_case = NT__NODE__KIND_WAIT;
            nodes[i].wait = &wait;
            break;
        case 2:
            nodes[i].kind_case = NT__NODE__KIND_BRANCH;
            nodes[i].branch = &br;
            break;
        default:
            nodes[i].kind_case = NT__NODE__KIND_EXIT;
            nodes[i].exit = &ex;
            break;
        }
        ptrs[i] = &nodes[i];
    }
    wf.id = "welcome";
    wf.start = (char *)(n > 0 ? ids[0] : "");
    wf.n_nodes = n;
    wf.nodes = ptrs;
    len = nt__workflow__get_packed_size(&wf);
    buf = malloc(len + 1);
    assert_non_null(buf);
    assert_int_equal(nt__workflow__pack(&wf, buf), len);
    plan = nt_plan_new(buf, len, err);
    free(buf);
    return plan;
}

static void test_plan_unpacks_good_bytes(void **state)
{
    const char *ids[] = {"welcome", "wait_1", "route", "bye"};
    char *err = NULL;
    nt_plan_t *plan = load(ids, 4, &err);
    (void)state;

    assert_non_null(plan);
    assert_null(err);
    assert_string_equal(plan->wf->id, "welcome");
    assert_string_equal(plan->wf->start, "welcome");
    assert_int_equal(plan->nnodes, 4);
    assert_int_equal(plan->refs, 1);
    assert_string_equal(plan->wf->nodes[0]->send->channel, "email");
    assert_int_equal(plan->wf->nodes[1]->wait->duration->days, 1);
    nt_plan_free(plan);
    nt_plan_free(NULL);
}

static void test_plan_garbage_bytes_give_null_and_message(void **state)
{
    static const uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'x', 0x42, 0x99};
    char *err = NULL;
    (void)state;

    assert_null(nt_plan_new(garbage, sizeof(garbage), &err));
    assert_non_null(err);
    assert_true(strncmp(err, "invalid protobuf: ", 18) == 0);
    free(err);
    err = NULL;
    /* Truncated: a length-delimited field longer than the data. */
    assert_null(nt_plan_new((const uint8_t *)"\x4a\x10\x0a", 3, &err));
    assert_non_null(err);
    free(err);
    /* No message is also an error-free empty plan, not a crash. */
    err = NULL;
    {
        nt_plan_t *empty = nt_plan_new(NULL, 0, &err);

        assert_non_null(empty);
        assert_null(err);
        assert_int_equal(empty->nnodes, 0);
        assert_null(nt_plan_node(empty, "x"));
        nt_plan_free(empty);
    }
}

static void test_plan_lookup_by_id(void **state)
{
    const char *ids[] = {"zeta", "alpha", "mid", "beta", "omega", "a", "zz"};
    char *err = NULL;
    nt_plan_t *plan = load(ids, 7, &err);
    size_t i;
    (void)state;

    assert_non_null(plan);
    for (i = 0; i < 7; i++) {
        const Nt__Node *n = nt_plan_node(plan, ids[i]);

        assert_non_null(n);
        assert_string_equal(n->id, ids[i]);
        assert_ptr_equal(n, plan->wf->nodes[i]);
    }
    for (i = 1; i < plan->nnodes; i++)
        assert_true(strcmp(plan->sorted[i - 1]->id, plan->sorted[i]->id) <= 0);
    assert_null(nt_plan_node(plan, "missing"));
    assert_null(nt_plan_node(plan, ""));
    assert_null(nt_plan_node(plan, NULL));
    assert_null(nt_plan_node(NULL, "alpha"));
    nt_plan_free(plan);
}

/* Duplicate ids are a validation error, not a load error; lookup finds the first one. */
static void test_plan_duplicate_ids_still_load(void **state)
{
    const char *ids[] = {"x", "dup", "dup", "y", "dup"};
    char *err = NULL;
    nt_plan_t *plan = load(ids, 5, &err);
    (void)state;

    assert_non_null(plan);
    assert_int_equal(plan->nnodes, 5);
    assert_ptr_equal(nt_plan_node(plan, "dup"), plan->wf->nodes[1]);
    nt_plan_free(plan);
}

static void test_plan_kind_names(void **state)
{
    const char *ids[] = {"s", "w", "b", "e"};
    nt_plan_t *plan = load(ids, 4, NULL);
    Nt__Node n = NT__NODE__INIT;
    (void)state;

    assert_non_null(plan);
    assert_string_equal(nt_node_kind_name(nt_plan_node(plan, "s")), "send");
    assert_string_equal(nt_node_kind_name(nt_plan_node(plan, "w")), "wait");
    assert_string_equal(nt_node_kind_name(nt_plan_node(plan, "b")), "branch");
    assert_string_equal(nt_node_kind_name(nt_plan_node(plan, "e")), "exit");
    assert_string_equal(nt_node_kind_name(&n), "none");
    n.kind_case = NT__NODE__KIND_WAIT_EVENT;
    assert_string_equal(nt_node_kind_name(&n), "wait_event");
    n.kind_case = NT__NODE__KIND_SPLIT;
    assert_string_equal(nt_node_kind_name(&n), "split");
    n.kind_case = NT__NODE__KIND_UPDATE;
    assert_string_equal(nt_node_kind_name(&n), "update");
    assert_string_equal(nt_node_kind_name(NULL), "none");
    nt_plan_free(plan);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_unpacks_good_bytes),
        cmocka_unit_test(test_plan_garbage_bytes_give_null_and_message),
        cmocka_unit_test(test_plan_lookup_by_id),
        cmocka_unit_test(test_plan_duplicate_ids_still_load),
        cmocka_unit_test(test_plan_kind_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
