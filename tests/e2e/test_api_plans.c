/* End to end: publishing plans (versions, activation, invalid plans), listing, showing, stats. */
#include "api_util.h"

#include "plan.h"

static int setup(void **state)
{
    (void)state;
    static const char *const extra[] = {"--partitions", "64", NULL};
    return api_setup(extra);
}

static void test_api_publish_versions_and_activation(void **state)
{
    (void)state;
    nt_test_resp_t r;

    publish("api_basic", NULL, &r);
    expect_status(&r, 201, NULL);
    assert_string_equal(json_string_value(json_object_get(r.json, "id")), "api_basic");
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 1);
    assert_true(json_is_true(json_object_get(r.json, "active")));
    nt_test_resp_fini(&r);

    /* again: version 2, not active */
    publish("api_basic", NULL, &r);
    expect_status(&r, 201, NULL);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 2);
    assert_true(json_is_false(json_object_get(r.json, "active")));
    nt_test_resp_fini(&r);
    char *a = redis_hget("nt:plan:{api_basic}", "active");
    assert_string_equal(a, "1");
    free(a);

    /* ?activate=1: version 3, active */
    publish("api_basic", "?activate=1", &r);
    expect_status(&r, 201, NULL);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 3);
    assert_true(json_is_true(json_object_get(r.json, "active")));
    nt_test_resp_fini(&r);
    a = redis_hget("nt:plan:{api_basic}", "active");
    assert_string_equal(a, "3");
    free(a);

    /* the stored bytes are the plan with its version set */
    redisReply *x = redisCommand(env.rc, "GET nt:plan:{api_basic}:2");
    assert_non_null(x);
    assert_int_equal(x->type, REDIS_REPLY_STRING);
    char *err = NULL;
    nt_plan_t *plan = nt_plan_new((const uint8_t *)x->str, x->len, &err);
    freeReplyObject(x);
    assert_non_null(plan);
    assert_int_equal(plan->wf->version, 2);
    assert_string_equal(plan->wf->id, "api_basic");
    nt_plan_free(plan);
    assert_int_equal(redis_int("SISMEMBER nt:plans api_basic"), 1);
}

static void test_api_plans_list_show_activate(void **state)
{
    (void)state;
    nt_test_resp_t r;

    call("GET", "/v1/plans", OPS, NULL, &r);
    expect_status(&r, 200, NULL);
    json_t *plans = json_object_get(r.json, "plans");
    assert_int_equal(json_array_size(plans), 1);
    json_t *p = json_array_get(plans, 0);
    assert_string_equal(json_string_value(json_object_get(p, "id")), "api_basic");
    assert_string_equal(json_string_value(json_object_get(p, "name")), "API basic");
    assert_int_equal(json_integer_value(json_object_get(p, "active")), 3);
    assert_int_equal(json_integer_value(json_object_get(p, "latest")), 3);
    json_t *vs = json_object_get(p, "versions");
    assert_int_equal(json_array_size(vs), 3);
    assert_int_equal(json_integer_value(json_array_get(vs, 0)), 1);
    assert_int_equal(json_integer_value(json_array_get(vs, 2)), 3);
    nt_test_resp_fini(&r);

    call("GET", "/v1/plans/api_basic", OPS, NULL, &r);
    expect_status(&r, 200, NULL);
    json_t *nodes = json_object_get(r.json, "nodes");
    assert_int_equal(json_array_size(nodes), 2);
    json_t *n0 = json_array_get(nodes, 0);
    assert_string_equal(json_string_value(json_object_get(n0, "id")), "pause");
    assert_string_equal(json_string_value(json_object_get(n0, "kind")), "wait");
    assert_string_equal(json_string_value(json_object_get(n0, "label")), "Three days");
    nt_test_resp_fini(&r);

    call("POST", "/v1/plans/api_basic/activate", OPS, "{\"version\":1}", &r);
    expect_status(&r, 200, NULL);
    nt_test_resp_fini(&r);
    char *a = redis_hget("nt:plan:{api_basic}", "active");
    assert_string_equal(a, "1");
    free(a);

    call("POST", "/v1/plans/api_basic/activate", OPS, "{\"version\":42}", &r);
    expect_status(&r, 404, "not_found");
    nt_test_resp_fini(&r);
    a = redis_hget("nt:plan:{api_basic}", "active");
    assert_string_equal(a, "1");
    free(a);

    call("POST", "/v1/plans/nope/activate", OPS, "{\"version\":1}", &r);
    expect_status(&r, 404, "not_found");
    nt_test_resp_fini(&r);
    assert_int_equal(key_exists("nt:plan:{nope}"), 0);

    call("GET", "/v1/plans/nope", OPS, NULL, &r);
    expect_status(&r, 404, "not_found");
    nt_test_resp_fini(&r);
    call("GET", "/v1/plans/nope/stats", OPS, NULL, &r);
    expect_status(&r, 404, "not_found");
    nt_test_resp_fini(&r);
}

static void test_api_plan_stats_count_enrolments(void **state)
{
    (void)state;
    nt_test_resp_t r;
    create_lead("{\"id\":\"st-1\",\"attributes\":{\"role\":\"engineer\"}}");
    create_lead("{\"id\":\"st-2\",\"attributes\":{\"role\":\"engineer\"}}");
    call("POST", "/v1/leads/st-1/enrol", OPS, "{\"plan\":\"api_basic\"}", &r);
    expect_status(&r, 202, NULL);
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 1);
    nt_test_resp_fini(&r);
    call("POST", "/v1/leads/st-2/enrol", OPS, "{\"plan\":\"api_basic\"}", &r);
    expect_status(&r, 202, NULL);
    nt_test_resp_fini(&r);

    call("GET", "/v1/plans/api_basic/stats", OPS, NULL, &r);
    expect_status(&r, 200, NULL);
    assert_string_equal(json_string_value(json_object_get(r.json, "plan")), "api_basic");
    assert_int_equal(json_integer_value(json_object_get(r.json, "enrolled")), 2);
    assert_int_equal(json_integer_value(json_object_get(r.json, "active")), 2);
    assert_true(json_is_object(json_object_get(r.json, "exits")));
    json_t *nodes = json_object_get(r.json, "nodes");
    assert_int_equal(json_array_size(nodes), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(nodes, 0), "id")),
                        "pause");
    assert_true(json_is_integer(json_object_get(json_array_get(nodes, 0), "current")));
    assert_true(json_is_integer(json_object_get(json_array_get(nodes, 0), "entered")));
    nt_test_resp_fini(&r);
}

static void test_api_invalid_plans_write_nothing(void **state)
{
    (void)state;
    nt_test_resp_t r;
    long long n = redis_int("SCARD nt:plans");

    publish("api_problems", NULL, &r);
    expect_status(&r, 422, "invalid_plan");
    json_t *problems = json_object_get(json_object_get(r.json, "error"), "problems");
    assert_true(json_array_size(problems) >= 3);
    int missing_start = 0, missing_edge = 0, channel = 0;
    for (size_t i = 0; i < json_array_size(problems); i++) {
        json_t *p = json_array_get(problems, i);
        const char *m = json_string_value(json_object_get(p, "message"));
        assert_non_null(m);
        assert_non_null(json_object_get(p, "node")); /* a string or null, always present */
        missing_start |= strstr(m, "nowhere") != NULL;
        missing_edge |= strstr(m, "missing_node") != NULL;
        channel |= strstr(m, "carrier_pigeon") != NULL;
    }
    assert_true(missing_start && missing_edge && channel);
    nt_test_resp_fini(&r);
    assert_int_equal(key_exists("nt:plan:{api_problems}"), 0);
    assert_int_equal(key_exists("nt:plan:{api_problems}:1"), 0);

    /* not protobuf at all */
    static const char junk[] = "\xff\xff\xff\xff this is not a plan";
    call_raw("POST", "/v1/plans", OPS, "application/x-protobuf", junk, sizeof(junk) - 1, &r);
    if (r.status != 422 && r.status != 400)
        fail_msg("invalid protobuf: expected 422 or 400, got %ld %s", r.status, r.body);
    expect_status(&r, r.status, r.status == 422 ? "invalid_plan" : "bad_request");
    nt_test_resp_fini(&r);

    /* an empty body is an empty Workflow: no id, no start */
    call_raw("POST", "/v1/plans", OPS, "application/x-protobuf", "", 0, &r);
    expect_status(&r, 422, "invalid_plan");
    nt_test_resp_fini(&r);

    /* JSON where protobuf is expected */
    call_raw("POST", "/v1/plans", OPS, "application/json", "{}", 2, &r);
    expect_status(&r, 415, "unsupported_media_type");
    nt_test_resp_fini(&r);

    assert_int_equal(redis_int("SCARD nt:plans"), n);
}

static void test_api_rep_and_webhook_cannot_publish(void **state)
{
    (void)state;
    nt_test_resp_t r;
    char path[512];
    snprintf(path, sizeof(path), "%s/tests/e2e/data/api_basic.textpb", NT_SOURCE_DIR);
    uint8_t *bin = NULL;
    size_t len = 0;
    assert_int_equal(nt_test_compile_plan(path, &bin, &len), 0);
    char *latest = redis_hget("nt:plan:{api_basic}", "latest");

    call_raw("POST", "/v1/plans", REP, "application/x-protobuf", bin, len, &r);
    expect_status(&r, 403, "forbidden");
    nt_test_resp_fini(&r);
    call_raw("POST", "/v1/plans", WEBHOOK, "application/x-protobuf", bin, len, &r);
    expect_status(&r, 403, "forbidden");
    nt_test_resp_fini(&r);
    call_raw("POST", "/v1/plans", NULL, "application/x-protobuf", bin, len, &r);
    expect_status(&r, 401, "unauthorized");
    nt_test_resp_fini(&r);
    free(bin);

    char *after = redis_hget("nt:plan:{api_basic}", "latest");
    assert_string_equal(latest, after);
    free(latest);
    free(after);

    call("GET", "/v1/plans", REP, NULL, &r);
    expect_status(&r, 403, "forbidden");
    nt_test_resp_fini(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_publish_versions_and_activation),
        cmocka_unit_test(test_api_plans_list_show_activate),
        cmocka_unit_test(test_api_plan_stats_count_enrolments),
        cmocka_unit_test(test_api_invalid_plans_write_nothing),
        cmocka_unit_test(test_api_rep_and_webhook_cannot_publish),
    };
    return cmocka_run_group_tests(tests, setup, api_teardown);
}
