/* End to end: runs move through plans on real triggers. Events a plan waits for, events made by
 * machines (which must not move anyone), timeouts on the plan clock, goals checked on every
 * change of the lead, and immutable plan versions (a running lead stays on its version). */
#include <unistd.h>

#include "api_util.h"

#define SCALE "86400" /* a plan day per real second */

static int setup(void **state)
{
    static const char *const extra[] = {"--time-scale",   SCALE, "--poll-ms", "5",
                                        "--timeline-max", "6",   NULL};

    (void)state;
    return api_setup(extra);
}

/* Compile a text-format plan and publish it; returns the version. */
static long publish_plan(const char *textpb, const char *query)
{
    char path[] = "/tmp/nt-flow-XXXXXX";
    int fd = mkstemp(path);
    uint8_t *bin = NULL;
    size_t len = 0;
    nt_test_resp_t r;
    char url[128];
    long version;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, textpb, strlen(textpb)), (ssize_t)strlen(textpb));
    close(fd);
    assert_int_equal(nt_test_compile_plan(path, &bin, &len), 0);
    unlink(path);
    snprintf(url, sizeof(url), "/v1/plans%s", query ? query : "");
    call_raw("POST", url, OPS, "application/x-protobuf", bin, len, &r);
    free(bin);
    expect_status(&r, 201, NULL);
    version = (long)json_integer_value(json_object_get(r.json, "version"));
    nt_test_resp_fini(&r);
    return version;
}

static void lead(const char *id, const char *attrs_json)
{
    char body[1024];
    nt_test_resp_t r;

    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"attributes\":%s}", id, attrs_json);
    call("POST", "/v1/leads", OPS, body, &r);
    assert_true(r.status == 201 || r.status == 200);
    nt_test_resp_fini(&r);
}

static void event(const char *id, const char *type, int machine)
{
    char body[512];
    nt_test_resp_t r;

    snprintf(body, sizeof(body), "{\"lead\":\"%s\",\"type\":\"%s\",\"machine\":%s}", id, type,
             machine ? "true" : "false");
    call("POST", "/v1/events", WEBHOOK, body, &r);
    expect_status(&r, 202, NULL);
    nt_test_resp_fini(&r);
}

/* The run of lead in plan as the API shows it; a new reference, or NULL. */
static json_t *run_of(const char *id, const char *plan)
{
    char path[256];
    nt_test_resp_t r;
    json_t *found = NULL, *runs, *run;
    size_t i;

    snprintf(path, sizeof(path), "/v1/leads/%s", id);
    call("GET", path, OPS, NULL, &r);
    expect_status(&r, 200, NULL);
    runs = json_object_get(r.json, "runs");
    json_array_foreach(runs, i, run)
    {
        if (strcmp(json_string_value(json_object_get(run, "plan")), plan) == 0)
            found = json_incref(run);
    }
    nt_test_resp_fini(&r);
    return found;
}

typedef struct want {
    const char *lead, *plan, *node, *status;
} want_t;

static int field_is(json_t *run, const char *name, const char *want)
{
    const char *have = json_string_value(json_object_get(run, name));

    return !want || (have && strcmp(have, want) == 0);
}

static int run_is(void *arg)
{
    want_t *w = arg;
    json_t *run = run_of(w->lead, w->plan);
    int ok = run && field_is(run, "node", w->node) && field_is(run, "status", w->status);

    json_decref(run);
    return ok;
}

static void wait_run(const char *id, const char *plan, const char *node, const char *status)
{
    want_t w = {id, plan, node, status};

    if (nt_test_wait_until(run_is, &w, 20000) != 0) {
        json_t *run = run_of(id, plan);
        char *s = run ? json_dumps(run, 0) : NULL;

        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("%s in %s: wanted node %s status %s, have %s", id, plan, node ? node : "*",
                 status ? status : "*", s ? s : "no run");
    }
}

static const char *exit_reason(const char *id, const char *plan)
{
    static char buf[128];
    json_t *run = run_of(id, plan);

    assert_non_null(run);
    snprintf(buf, sizeof(buf), "%s",
             json_string_value(json_object_get(run, "exit_reason"))
                 ? json_string_value(json_object_get(run, "exit_reason"))
                 : "(none)");
    json_decref(run);
    return buf;
}

static const char *click_plan =
    "id: \"clicks\"\n"
    "start: \"hello\"\n"
    "goals { name: \"sql\" when { stage { op: GE stage: SQL } } reason: \"became_sql\" }\n"
    "nodes { id: \"hello\" send { channel: \"log\" params { name: \"message\" value: \"hi\" } "
    "next: \"await\" } }\n"
    "nodes { id: \"await\" wait_event { filter { type: \"email.clicked\" } "
    "timeout { days: 3 } on_match: \"reward\" on_timeout: \"quiet\" } }\n"
    "nodes { id: \"reward\" update { add_score: 10 next: \"done\" } }\n"
    "nodes { id: \"done\" exit { reason: \"clicked\" } }\n"
    "nodes { id: \"quiet\" exit { reason: \"no_click\" } }\n";

static void test_flow_event_moves_waiting_lead_and_machine_event_does_not(void **state)
{
    char *score;
    char key[NT_KEY_MAX];

    (void)state;
    publish_plan(click_plan, NULL);
    lead("flow-a", "{\"first_name\":\"Ada\",\"timezone\":\"Europe/Berlin\"}");
    enrol_lead("flow-a", "clicks");
    wait_run("flow-a", "clicks", "await", "active");

    /* a link scanner's click: recorded, but the lead keeps waiting */
    event("flow-a", "email.clicked", 1);
    usleep(300 * 1000); /* a third of a plan day: well inside the 3-day timeout */
    wait_run("flow-a", "clicks", "await", "active");

    event("flow-a", "email.clicked", 0);
    wait_run("flow-a", "clicks", "done", "done");
    assert_string_equal(exit_reason("flow-a", "clicks"), "clicked");
    lead_key(key, "flow-a");
    score = redis_hget(key, "_score");
    assert_string_equal(score, "10");
    free(score);
}

static void test_flow_wait_event_times_out_on_plan_clock(void **state)
{
    (void)state;
    lead("flow-b", "{\"first_name\":\"Bo\",\"timezone\":\"Asia/Tokyo\"}");
    enrol_lead("flow-b", "clicks");
    /* three plan days are three real seconds at this scale */
    wait_run("flow-b", "clicks", "quiet", "done");
    assert_string_equal(exit_reason("flow-b", "clicks"), "no_click");
}

static void test_flow_goal_ends_run_when_lead_becomes_sql(void **state)
{
    nt_test_resp_t r;

    (void)state;
    lead("flow-c", "{\"first_name\":\"Cy\"}");
    enrol_lead("flow-c", "clicks");
    wait_run("flow-c", "clicks", "await", "active");
    call("PATCH", "/v1/leads/flow-c", OPS, "{\"stage\":\"sql\"}", &r);
    expect_status(&r, 200, NULL);
    nt_test_resp_fini(&r);
    wait_run("flow-c", "clicks", NULL, "done");
    assert_string_equal(exit_reason("flow-c", "clicks"), "became_sql");
}

static void test_flow_running_lead_stays_on_its_plan_version(void **state)
{
    static const char *v1 = "id: \"versions\"\n"
                            "start: \"w\"\n"
                            "nodes { id: \"w\" wait { duration { days: 2 } next: \"x\" } }\n"
                            "nodes { id: \"x\" exit { reason: \"old_path\" } }\n";
    static const char *v2 = "id: \"versions\"\n"
                            "start: \"w\"\n"
                            "nodes { id: \"w\" wait { duration { days: 2 } next: \"y\" } }\n"
                            "nodes { id: \"y\" exit { reason: \"new_path\" } }\n";
    json_t *run;

    (void)state;
    assert_int_equal(publish_plan(v1, NULL), 1);
    lead("flow-d", "{\"first_name\":\"Di\"}");
    enrol_lead("flow-d", "versions");
    wait_run("flow-d", "versions", "w", "active");
    assert_int_equal(publish_plan(v2, "?activate=1"), 2);
    lead("flow-e", "{\"first_name\":\"Ed\"}");
    enrol_lead("flow-e", "versions");
    wait_run("flow-d", "versions", NULL, "done");
    wait_run("flow-e", "versions", NULL, "done");
    assert_string_equal(exit_reason("flow-d", "versions"), "old_path");
    assert_string_equal(exit_reason("flow-e", "versions"), "new_path");
    run = run_of("flow-e", "versions");
    assert_int_equal(json_integer_value(json_object_get(run, "version")), 2);
    json_decref(run);
}

static void test_flow_send_follows_channel_outcome_edge(void **state)
{
    static const char *plan =
        "id: \"outcomes\"\n"
        "start: \"call\"\n"
        "nodes { id: \"call\" send { channel: \"log\" params { name: \"outcome\" value: "
        "\"meeting_booked\" } on { outcome: \"meeting_booked\" to: \"booked\" } "
        "on { outcome: \"no_answer\" to: \"retry\" } } }\n"
        "nodes { id: \"booked\" update { stage: SAL next: \"end\" } }\n"
        "nodes { id: \"retry\" exit { reason: \"no_answer\" } }\n"
        "nodes { id: \"end\" exit { reason: \"meeting\" } }\n";
    char key[NT_KEY_MAX], *stage;

    (void)state;
    publish_plan(plan, NULL);
    lead("flow-f", "{\"first_name\":\"Fi\"}");
    enrol_lead("flow-f", "outcomes");
    wait_run("flow-f", "outcomes", "end", "done");
    assert_string_equal(exit_reason("flow-f", "outcomes"), "meeting");
    lead_key(key, "flow-f");
    stage = redis_hget(key, "_stage");
    assert_string_equal(stage, "sal");
    free(stage);
}

/* The timeline keeps a lead's newest timeline-max entries (6 here) and shows them newest first,
 * however many steps the lead took: twenty sends write some forty lines. */
static void test_flow_timeline_keeps_newest_entries(void **state)
{
    char plan[8192], key[NT_KEY_MAX], path[64];
    size_t len = 0, i;
    nt_test_resp_t r;
    json_t *tl, *e;
    long long prev = -1;

    (void)state;
    len += (size_t)snprintf(plan + len, sizeof(plan) - len, "id: \"long\"\nstart: \"s1\"\n");
    for (i = 1; i <= 20; i++)
        len += (size_t)snprintf(plan + len, sizeof(plan) - len,
                                "nodes { id: \"s%zu\" send { channel: \"log\" params { name: "
                                "\"message\" value: \"touch %zu\" } next: \"%s%zu\" } }\n",
                                i, i, i < 20 ? "s" : "end", i < 20 ? i + 1 : (size_t)0);
    snprintf(plan + len, sizeof(plan) - len,
             "nodes { id: \"end0\" exit { reason: \"all_sent\" } }\n");
    publish_plan(plan, NULL);
    lead("flow-t", "{\"first_name\":\"Tim\"}");
    enrol_lead("flow-t", "long");
    wait_run("flow-t", "long", "end0", "done");

    snprintf(path, sizeof(path), "/v1/leads/flow-t");
    call("GET", path, OPS, NULL, &r);
    expect_status(&r, 200, NULL);
    tl = json_object_get(r.json, "timeline");
    assert_int_equal(json_array_size(tl), 6);
    json_array_foreach(tl, i, e)
    {
        long long at = json_integer_value(json_object_get(e, "at"));
        const char *text = json_string_value(json_object_get(e, "text"));

        assert_non_null(text);
        assert_null(strchr(text, '\n'));
        if (prev >= 0)
            assert_true(at <= prev); /* newest first */
        prev = at;
    }
    /* the newest entry is the last step: the twentieth send and the exit */
    assert_non_null(
        strstr(json_string_value(json_object_get(json_array_get(tl, 0), "text")), "all_sent"));
    nt_test_resp_fini(&r);

    /* In Redis: oldest first, one line each, cut back once it outgrew 6 lines of 160 bytes. */
    unsigned p = nt_partition("flow-t", API_PARTITIONS);
    nt_key_hist(key, p, "flow-t");
    redisReply *x = redisCommand(env.rc, "GET %s", key);
    assert_non_null(x);
    assert_int_equal(x->type, REDIS_REPLY_STRING);
    assert_true(x->len > 0 && x->str[x->len - 1] == '\n');
    size_t lines = 0;
    for (i = 0; i < x->len; i++)
        lines += x->str[i] == '\n';
    assert_true(x->len <= 6 * 160 || lines <= 6);
    assert_true(lines >= 6);
    assert_null(strstr(x->str, "at s1;")); /* the first send is long gone */
    freeReplyObject(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flow_event_moves_waiting_lead_and_machine_event_does_not),
        cmocka_unit_test(test_flow_wait_event_times_out_on_plan_clock),
        cmocka_unit_test(test_flow_goal_ends_run_when_lead_becomes_sql),
        cmocka_unit_test(test_flow_running_lead_stays_on_its_plan_version),
        cmocka_unit_test(test_flow_send_follows_channel_outcome_edge),
        cmocka_unit_test(test_flow_timeline_keeps_newest_entries),
    };

    return cmocka_run_group_tests(tests, setup, api_teardown);
}
