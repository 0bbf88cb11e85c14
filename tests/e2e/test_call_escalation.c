/* End to end: what happens to call tasks with nobody looking. nurtured runs on a plan clock an
 * hour per second (--time-scale 3600) with channel.call.manager_webhook pointing at a recording
 * HTTP peer (tests/lib/http_peer.h). A task past its one-hour SLA goes back to its team queue
 * and the peer receives the manager's POST {"event":"task.escalated", ...}; with the peer down
 * the escalation happens all the same and the failure is logged. A task whose lead's run has
 * left the call step expires by the daemon's periodic sweep, from the rep's list and from the
 * team queue alike, without anyone listing it: everything here is checked in Redis and the
 * peer, never through GET /v1/tasks (which would expire tasks on its own). */
#include <unistd.h>

#include "api_util.h"
#include "http_peer.h"
#include "tasks.h"

static nt_test_peer_t *peer;
static char hook_url[128];

static int setup(void **state)
{
    const char *extra[] = {"--poll-ms", "5",
                           "--time-scale", "3600",
                           "--channel.call.team.field", "rep1",
                           "--channel.call.sla_check_ms", "50",
                           "--channel.call.manager_webhook", hook_url,
                           NULL};
    nt_test_resp_t r;

    (void)state;
    peer = nt_test_peer_start(200, "{\"ok\":true}");
    if (peer == NULL)
        return -1;
    snprintf(hook_url, sizeof(hook_url), "%s/hooks/escalated", nt_test_peer_url(peer));
    if (api_setup(extra) != 0)
        return -1;
    publish("call_sla", NULL, &r);
    expect_status(&r, 201, NULL);
    nt_test_resp_fini(&r);
    publish("call_long", NULL, &r);
    expect_status(&r, 201, NULL);
    nt_test_resp_fini(&r);
    return 0;
}

static int teardown(void **state)
{
    api_teardown(state);
    nt_test_peer_stop(peer);
    return 0;
}

static void enrol(const char *lead, int score, const char *plan)
{
    char body[256];

    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"attributes\":{\"first_name\":\"Ada\"},"
                                 "\"score\":%d}", lead, score);
    create_lead(body);
    enrol_lead(lead, plan);
}

/* The CRM drops the lead: the plan's goal ends the run, the task's call step is over. */
static void drop(const char *lead)
{
    char body[256];
    nt_test_resp_t r;

    snprintf(body, sizeof(body), "{\"lead\":\"%s\",\"type\":\"crm.dropped\"}", lead);
    call("POST", "/v1/events", OPS, body, &r);
    expect_status(&r, 202, NULL);
    nt_test_resp_fini(&r);
}

/* A field of the task's hash in Redis (malloc'd), NULL when absent. */
static char *task_field(const char *id, const char *lead, const char *field)
{
    char key[NT_KEY_MAX];

    return redis_hget(nt_tasks_key_task(key, nt_partition(lead, API_PARTITIONS), id), field);
}

/* Is id in the task set what/name of its lead's partition? */
static int in_set(const char *lead, const char *what, const char *name, const char *id)
{
    char key[NT_KEY_MAX];
    redisReply *x;
    int in;

    nt_tasks_key_set(key, nt_partition(lead, API_PARTITIONS), what, name);
    x = redisCommand(env.rc, "ZSCORE %s %s", key, id);
    assert_non_null(x);
    in = x->type != REDIS_REPLY_NIL;
    freeReplyObject(x);
    return in;
}

static long long rep_open(const char *rep)
{
    char key[NT_KEY_MAX];

    return redis_int("HGET %s open", nt_tasks_key_rep(key, rep));
}

/* The rep's open count is moved by a command after each script: wait for it to settle. */
typedef struct open_want {
    const char *rep;
    long long n;
} open_want_t;

static int rep_open_is(void *arg)
{
    const open_want_t *w = arg;

    return rep_open(w->rep) == w->n;
}

static void wait_rep_open(const char *rep, long long n)
{
    open_want_t w = {rep, n};

    if (nt_test_wait_until(rep_open_is, &w, 20000) != 0)
        fail_msg("%s's open count is %lld, not %lld", rep, rep_open(rep), n);
}

typedef struct want {
    const char *id, *lead, *field, *value; /* value NULL: any non-empty value */
} want_t;

static int task_has(void *arg)
{
    const want_t *w = arg;
    char *v = task_field(w->id, w->lead, w->field);
    int ok = v && (w->value ? strcmp(v, w->value) == 0 : v[0] != '\0');

    free(v);
    return ok;
}

static void wait_task_field(const char *id, const char *lead, const char *field,
                            const char *value)
{
    want_t w = {id, lead, field, value};

    if (nt_test_wait_until(task_has, &w, 20000) != 0) {
        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("task %s: %s never became %s", id, field, value ? value : "set");
    }
}

static int log_says(void *arg)
{
    FILE *f = fopen(env.daemon.log_path, "r");
    char line[2048];
    int found = 0;

    if (!f)
        return 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, (const char *)arg) != NULL;
    fclose(f);
    return found;
}

static void test_task_past_sla_posts_the_manager_webhook_and_goes_to_the_team_queue(void **st)
{
    const char *id = "esc-1:call_sla:call:1";
    nt_test_peer_req_t req;
    long long open0 = rep_open("rep1");
    json_t *j;
    char *sla;

    (void)st;
    enrol("esc-1", 61, "call_sla");
    /* Routed to rep1 (the only member of "field"); the webhook's "from" says so below. */
    wait_task_field(id, "esc-1", "lead", "esc-1");

    /* One plan hour later (a real second) the SLA has passed. */
    if (nt_test_peer_wait(peer, 1, 20000) != 0) {
        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("the manager webhook was never called");
    }
    assert_int_equal(nt_test_peer_request(peer, 0, &req), 0);
    assert_string_equal(req.method, "POST");
    assert_string_equal(req.path, "/hooks/escalated");
    assert_string_equal(req.content_type, "application/json");
    j = json_loads(req.body, 0, NULL);
    if (!j)
        fail_msg("the webhook body is not JSON: %s", req.body);
    assert_string_equal(json_string_value(json_object_get(j, "event")), "task.escalated");
    assert_string_equal(json_string_value(json_object_get(j, "task")), id);
    assert_string_equal(json_string_value(json_object_get(j, "lead")), "esc-1");
    assert_string_equal(json_string_value(json_object_get(j, "plan")), "call_sla");
    assert_string_equal(json_string_value(json_object_get(j, "node")), "call");
    assert_string_equal(json_string_value(json_object_get(j, "from")), "rep1");
    assert_string_equal(json_string_value(json_object_get(j, "team")), "field");
    assert_string_equal(json_string_value(json_object_get(j, "reason")),
                        "met at the booth, score 61");
    sla = task_field(id, "esc-1", "sla");
    assert_non_null(sla);
    assert_true(json_is_integer(json_object_get(j, "sla")));
    assert_int_equal(json_integer_value(json_object_get(j, "sla")), strtoll(sla, NULL, 10));
    free(sla);
    json_decref(j);
    nt_test_peer_req_fini(&req);

    /* The task moved to the team queue in the same step: nobody holds it, the rep's count is
     * back, and it is escalated once only. */
    wait_task_field(id, "esc-1", "escalated", NULL);
    {
        char *owner = task_field(id, "esc-1", "owner"), *status = task_field(id, "esc-1",
                                                                             "status");
        assert_string_equal(owner, "");
        assert_string_equal(status, "open");
        free(owner);
        free(status);
    }
    assert_true(in_set("esc-1", "team", "field", id));
    assert_false(in_set("esc-1", "rep", "rep1", id));
    assert_false(in_set("esc-1", "sla", NULL, id));
    assert_true(in_set("esc-1", "open", NULL, id));
    wait_rep_open("rep1", open0);
    usleep(300 * 1000); /* six more SLA checks */
    assert_int_equal(nt_test_peer_count(peer), 1);

    /* The lead's run ends (a goal): the sweep expires the task in the team queue, unlisted. */
    drop("esc-1");
    wait_task_field(id, "esc-1", "status", "expired");
    {
        char *why = task_field(id, "esc-1", "expired_why");
        assert_non_null(strstr(why, "ended (dropped)"));
        free(why);
    }
    assert_false(in_set("esc-1", "team", "field", id));
    assert_false(in_set("esc-1", "open", NULL, id));
    assert_int_equal(nt_test_peer_count(peer), 1);
}

static void test_task_of_a_run_that_moved_on_leaves_the_reps_list_unlisted(void **st)
{
    const char *id = "esc-2:call_long:call:1";
    long long open0 = rep_open("rep1");
    char *v;

    (void)st;
    enrol("esc-2", 40, "call_long");
    wait_task_field(id, "esc-2", "owner", "rep1");
    assert_true(in_set("esc-2", "rep", "rep1", id));
    wait_rep_open("rep1", open0 + 1);

    drop("esc-2");
    wait_task_field(id, "esc-2", "status", "expired");
    v = task_field(id, "esc-2", "expired");
    assert_true(v && strtoll(v, NULL, 10) > 0);
    free(v);
    assert_false(in_set("esc-2", "rep", "rep1", id));
    assert_false(in_set("esc-2", "open", NULL, id));
    assert_false(in_set("esc-2", "sla", NULL, id));
    wait_rep_open("rep1", open0);
    /* Not escalated, no webhook for it; completing it now is refused. */
    v = task_field(id, "esc-2", "escalated");
    assert_true(v == NULL || v[0] == '\0');
    free(v);
    {
        nt_test_resp_t r;
        char path[128];

        snprintf(path, sizeof(path), "/v1/tasks/%s/complete", id);
        call("POST", path, REP, "{\"outcome\":\"connected\"}", &r);
        expect_status(&r, 409, "conflict");
        expect_message(&r, "has expired");
        nt_test_resp_fini(&r);
    }
    assert_int_equal(rep_open("rep1"), open0);
}

static int run_booked(void *lead)
{
    char key[NT_KEY_MAX];
    char *x = redis_hget(run_key(key, lead, "call_sla"), "x");
    int ok = x && strcmp(x, "meeting_booked") == 0;

    free(x);
    return ok;
}

static void test_task_past_sla_with_the_webhook_down_is_escalated_and_logged(void **st)
{
    const char *id = "esc-3:call_sla:call:1";
    const char *msg = "manager webhook for task esc-3:call_sla:call:1 failed";

    (void)st;
    nt_test_peer_stop(peer); /* its port is closed: connections are refused */
    peer = NULL;
    enrol("esc-3", 55, "call_sla");
    wait_task_field(id, "esc-3", "escalated", NULL);
    assert_true(in_set("esc-3", "team", "field", id));
    assert_false(in_set("esc-3", "rep", "rep1", id));
    {
        char *owner = task_field(id, "esc-3", "owner");
        assert_string_equal(owner, "");
        free(owner);
    }
    if (nt_test_wait_until(log_says, (void *)msg, 20000) != 0) {
        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("no log line '%s'", msg);
    }
    /* The task waits in the queue for a rep of the team: claim and complete it. */
    {
        nt_test_resp_t r;
        char path[128];

        snprintf(path, sizeof(path), "/v1/tasks/%s/claim", id);
        call("POST", path, REP, NULL, &r);
        expect_status(&r, 200, NULL);
        nt_test_resp_fini(&r);
        snprintf(path, sizeof(path), "/v1/tasks/%s/complete", id);
        call("POST", path, REP, "{\"outcome\":\"meeting_booked\",\"note\":\"Tuesday\"}", &r);
        expect_status(&r, 200, NULL);
        nt_test_resp_fini(&r);
    }
    if (nt_test_wait_until(run_booked, "esc-3", 20000) != 0) {
        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("esc-3's run did not follow the meeting_booked edge");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_past_sla_posts_the_manager_webhook_and_goes_to_the_team_queue),
        cmocka_unit_test(test_task_of_a_run_that_moved_on_leaves_the_reps_list_unlisted),
        cmocka_unit_test(test_task_past_sla_with_the_webhook_down_is_escalated_and_logged),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
