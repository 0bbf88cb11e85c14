/* End to end: call tasks. A run reaches a send on the call channel, a task appears in the rep's
 * list with the reason filled in, the rep completes it and the run follows that outcome's edge;
 * tasks are created once per message; a rep sees and changes only their own tasks; bad bodies
 * change nothing; tasks wait in the team queue when no rep has capacity; a task past its SLA goes
 * back to the team queue. */
#include <sys/wait.h>
#include <unistd.h>

#include "api_util.h"
#include "tasks.h"

#define REP2 "rep2secretrep2secretrep2secret00"
#define REP3 "rep3secretrep3secretrep3secret00"

static int setup(void **state)
{
    static const char *const extra[] = {
        "--poll-ms", "5",
        "--token", "rep:" REP2 ":rep2",
        "--token", "rep:" REP3 ":rep3",
        "--channel.call.team.sales", "rep1:2 rep2:1",
        "--channel.call.team.tiny", "rep3",
        "--channel.call.rep.rep3", "cap=1 tz=Europe/Berlin",
        "--channel.call.sla_check_ms", "50",
        NULL};

    (void)state;
    return api_setup(extra);
}

/* A plan "<id>" whose start is a call to team with an SLA, booked/missed exits. */
static void call_plan(const char *id, const char *team, const char *sla)
{
    char text[2048];

    snprintf(text, sizeof(text),
             "id: \"%s\"\nstart: \"call\"\n"
             "nodes { id: \"call\" send { channel: \"call\"\n"
             "  params { name: \"reason\" value: \"attended the pricing webinar, score "
             "{{score}}\" }\n"
             "  params { name: \"points\" value: \"ask about the budget\" }\n"
             "  params { name: \"priority\" value: \"high\" }\n"
             "  params { name: \"team\" value: \"%s\" }\n"
             "  params { name: \"sla\" value: \"%s\" }\n"
             "  on { outcome: \"meeting_booked\" to: \"booked\" }\n"
             "  on { outcome: \"no_answer\" to: \"missed\" } } }\n"
             "nodes { id: \"booked\" update { stage: SQL next: \"end\" } }\n"
             "nodes { id: \"end\" exit { reason: \"meeting_booked\" } }\n"
             "nodes { id: \"missed\" exit { reason: \"no_answer\" } }\n",
             id, team, sla);
    publish_textpb(text, 0);
}

static void lead(const char *id, const char *attrs_json, int score)
{
    char body[1024];
    nt_test_resp_t r;

    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"attributes\":%s,\"score\":%d}", id,
             attrs_json, score);
    call("POST", "/v1/leads", OPS, body, &r);
    assert_true(r.status == 201 || r.status == 200);
    nt_test_resp_fini(&r);
}


/* The task of lead in plan at node call, visit 1 (the id is the message id). */
static const char *task_id(char *buf, size_t n, const char *lead, const char *plan)
{
    snprintf(buf, n, "%s:%s:call:1", lead, plan);
    return buf;
}

typedef struct task_want {
    const char *token, *query, *id;
    json_t *found; /* new reference */
} task_want_t;

static int task_listed(void *arg)
{
    task_want_t *w = arg;
    nt_test_resp_t r;
    char path[256];
    size_t i;
    json_t *t;

    snprintf(path, sizeof(path), "/v1/tasks%s", w->query ? w->query : "");
    call("GET", path, w->token, NULL, &r);
    json_array_foreach(json_object_get(r.json, "tasks"), i, t)
    {
        if (strcmp(json_string_value(json_object_get(t, "id")), w->id) == 0) {
            json_decref(w->found);
            w->found = json_incref(t);
        }
    }
    nt_test_resp_fini(&r);
    return w->found != NULL;
}

/* Wait until the task is listed for token with query; returns it (new reference). */
static json_t *wait_task(const char *token, const char *query, const char *id)
{
    task_want_t w = {token, query, id, NULL};

    if (nt_test_wait_until(task_listed, &w, 20000) != 0) {
        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("task %s never listed for /v1/tasks%s", id, query ? query : "");
    }
    return w.found;
}

static int listed_now(const char *token, const char *query, const char *id)
{
    task_want_t w = {token, query, id, NULL};
    int found = task_listed(&w);

    json_decref(w.found);
    return found;
}

static json_t *run_of(const char *id, const char *plan)
{
    char path[256];
    nt_test_resp_t r;
    json_t *found = NULL, *run;
    size_t i;

    snprintf(path, sizeof(path), "/v1/leads/%s", id);
    call("GET", path, OPS, NULL, &r);
    expect_status(&r, 200, NULL);
    json_array_foreach(json_object_get(r.json, "runs"), i, run)
    {
        if (strcmp(json_string_value(json_object_get(run, "plan")), plan) == 0)
            found = json_incref(run);
    }
    nt_test_resp_fini(&r);
    return found;
}

typedef struct run_want {
    const char *lead, *plan, *reason;
} run_want_t;

static int run_done(void *arg)
{
    run_want_t *w = arg;
    json_t *run = run_of(w->lead, w->plan);
    const char *st = run ? json_string_value(json_object_get(run, "status")) : NULL;
    const char *x = run ? json_string_value(json_object_get(run, "exit_reason")) : NULL;
    int ok = st && strcmp(st, "done") == 0 && x && strcmp(x, w->reason) == 0;

    json_decref(run);
    return ok;
}

static void wait_exit(const char *lead, const char *plan, const char *reason)
{
    run_want_t w = {lead, plan, reason};

    if (nt_test_wait_until(run_done, &w, 20000) != 0) {
        json_t *run = run_of(lead, plan);
        char *s = run ? json_dumps(run, 0) : NULL;

        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("%s in %s: wanted exit %s, have %s", lead, plan, reason, s ? s : "no run");
    }
}

static void post(const char *path, const char *token, const char *body, long status,
                 const char *code)
{
    nt_test_resp_t r;

    call("POST", path, token, body, &r);
    expect_status(&r, status, code);
    nt_test_resp_fini(&r);
}

static void test_call_task_listed_for_owner_and_completion_moves_the_run(void **state)
{
    char id[128], path[256], key[NT_KEY_MAX];
    json_t *t;
    char *stage;

    (void)state;
    call_plan("calls", "sales", "1d");
    lead("call-a", "{\"first_name\":\"Ada\",\"owner\":\"rep1\"}", 72);
    enrol_lead("call-a", "calls");
    task_id(id, sizeof(id), "call-a", "calls");
    t = wait_task(REP, "?mine=1", id);
    assert_string_equal(json_string_value(json_object_get(t, "reason")),
                        "attended the pricing webinar, score 72");
    assert_string_equal(json_string_value(json_object_get(t, "points")), "ask about the budget");
    assert_string_equal(json_string_value(json_object_get(t, "priority")), "high");
    assert_string_equal(json_string_value(json_object_get(t, "owner")), "rep1");
    assert_string_equal(json_string_value(json_object_get(t, "status")), "open");
    assert_string_equal(json_string_value(json_object_get(t, "lead")), "call-a");
    assert_true(json_integer_value(json_object_get(t, "due")) > 0);
    json_decref(t);

    /* The run rests at the call until the rep says how it went. */
    usleep(200 * 1000);
    t = run_of("call-a", "calls");
    assert_string_equal(json_string_value(json_object_get(t, "node")), "call");
    assert_string_equal(json_string_value(json_object_get(t, "status")), "active");
    json_decref(t);

    snprintf(path, sizeof(path), "/v1/tasks/%s/claim", id);
    post(path, REP, NULL, 200, NULL);
    snprintf(path, sizeof(path), "/v1/tasks/%s/complete", id);
    post(path, REP, "{\"outcome\":\"meeting_booked\",\"note\":\"Tuesday 10:00\"}", 200, NULL);
    wait_exit("call-a", "calls", "meeting_booked");
    stage = redis_hget(lead_key(key, "call-a"), "_stage");
    assert_string_equal(stage, "sql");
    free(stage);

    /* Done: off the list; a second completion is a conflict and posts nothing. */
    assert_false(listed_now(REP, "?mine=1", id));
    post(path, REP, "{\"outcome\":\"no_answer\"}", 409, "conflict");
}

static void test_call_task_rep_sees_and_changes_only_their_own(void **state)
{
    char id[128], path[256];
    json_t *t;
    nt_test_resp_t r;

    (void)state;
    call_plan("calls2", "sales", "1d");
    lead("call-b", "{\"owner\":\"rep2\"}", 10);
    enrol_lead("call-b", "calls2");
    task_id(id, sizeof(id), "call-b", "calls2");
    t = wait_task(REP2, "?mine=1", id);
    json_decref(t);
    /* rep1 neither lists, reads, claims, completes nor reassigns it. */
    assert_false(listed_now(REP, "?mine=1", id));
    call("GET", "/v1/tasks?rep=rep2", REP, NULL, &r);
    expect_status(&r, 403, "forbidden");
    nt_test_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/tasks/%s", id);
    call("GET", path, REP, NULL, &r);
    expect_status(&r, 404, "not_found");
    nt_test_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/tasks/%s/claim", id);
    post(path, REP, NULL, 404, "not_found");
    snprintf(path, sizeof(path), "/v1/tasks/%s/complete", id);
    post(path, REP, "{\"outcome\":\"meeting_booked\"}", 404, "not_found");
    snprintf(path, sizeof(path), "/v1/tasks/%s/reassign", id);
    post(path, REP, "{\"rep\":\"rep1\"}", 404, "not_found");
    /* ops sees it; rep2 hands it to rep3, who then has it. */
    snprintf(path, sizeof(path), "/v1/tasks/%s", id);
    call("GET", path, OPS, NULL, &r);
    expect_status(&r, 200, NULL);
    nt_test_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/tasks/%s/reassign", id);
    post(path, REP2, "{\"rep\":\"rep3\"}", 200, NULL);
    assert_false(listed_now(REP2, "?mine=1", id));
    t = wait_task(REP3, "", id);
    assert_string_equal(json_string_value(json_object_get(t, "owner")), "rep3");
    json_decref(t);
    /* rep3 completes it with no_answer: the run follows that edge. */
    snprintf(path, sizeof(path), "/v1/tasks/%s/complete", id);
    post(path, REP3, "{\"outcome\":\"no_answer\"}", 200, NULL);
    wait_exit("call-b", "calls2", "no_answer");
}

static void test_call_task_bad_bodies_write_nothing(void **state)
{
    static const char *const bad[] = {
        "{}",
        "{\"outcome\":\"sent\"}",
        "{\"outcome\":\"meeting_booked \"}",
        "{\"outcome\":7}",
        "{\"outcome\":[\"meeting_booked\"]}",
        "{\"outcome\":\"meeting_booked\",\"note\":5}",
        "{\"outcome\":\"meeting_booked\",\"extra\":1}",
        NULL};
    char id[128], path[256], note[2100];
    long long before;
    nt_test_resp_t r;
    json_t *t;

    (void)state;
    call_plan("calls3", "sales", "1d");
    lead("call-c", "{\"owner\":\"rep1\"}", 5);
    enrol_lead("call-c", "calls3");
    task_id(id, sizeof(id), "call-c", "calls3");
    t = wait_task(REP, "?mine=1", id);
    json_decref(t);
    usleep(100 * 1000);
    before = dbsize();
    snprintf(path, sizeof(path), "/v1/tasks/%s/complete", id);
    for (size_t i = 0; bad[i]; i++)
        post(path, REP, bad[i], 400, "bad_request");
    post(path, REP, "{\"outcome\":", 400, "bad_json");
    post(path, REP, "{\"outcome\":\"connected\",\"note\":\"a\\u0000b\"}", 400, "bad_json");
    post(path, REP, "[1,2]", 400, "bad_request");
    memset(note, 'x', sizeof(note) - 1);
    note[sizeof(note) - 1] = '\0';
    {
        char body[2300];

        snprintf(body, sizeof(body), "{\"outcome\":\"connected\",\"note\":\"%s\"}", note);
        post(path, REP, body, 400, "bad_request");
    }
    call_raw("POST", path, REP, "text/plain", "x", 1, &r);
    expect_status(&r, 415, "unsupported_media_type");
    nt_test_resp_fini(&r);
    post("/v1/tasks/..%2F..%2Fetc/complete", REP, "{\"outcome\":\"connected\"}", 400,
         "bad_request");
    post("/v1/tasks/nolead/complete", REP, "{\"outcome\":\"connected\"}", 400, "bad_request");
    post("/v1/tasks/ghost:calls3:call:1/complete", REP, "{\"outcome\":\"connected\"}", 404,
         "not_found");
    snprintf(path, sizeof(path), "/v1/tasks/%s/reassign", id);
    post(path, REP, "{\"rep\":\"nobody\"}", 400, "bad_request");
    post(path, REP, "{\"rep\":\"bad rep\"}", 400, "bad_request");
    post(path, REP, "{\"rep\":true}", 400, "bad_request");
    snprintf(path, sizeof(path), "/v1/tasks/%s/claim", id);
    post(path, REP, "{\"x\":1}", 400, "bad_request");
    call("GET", "/v1/tasks?limit=0", REP, NULL, &r);
    expect_status(&r, 400, "bad_request");
    nt_test_resp_fini(&r);
    call("PATCH", "/v1/reps/rep1", REP, "{\"out_of_office\":\"yes\"}", &r);
    expect_status(&r, 400, "bad_request");
    nt_test_resp_fini(&r);
    call("PATCH", "/v1/reps/rep2", REP, "{\"out_of_office\":true}", &r);
    expect_status(&r, 403, "forbidden");
    nt_test_resp_fini(&r);
    call("GET", "/v1/tasks", WEBHOOK, NULL, &r);
    expect_status(&r, 403, "forbidden");
    nt_test_resp_fini(&r);
    assert_int_equal(dbsize(), before);
    t = wait_task(REP, "?mine=1", id);
    assert_string_equal(json_string_value(json_object_get(t, "status")), "open");
    json_decref(t);
}

static void test_call_task_waits_in_team_queue_when_no_rep_has_capacity(void **state)
{
    char id1[128], id2[128], path[256];
    json_t *t;
    nt_test_resp_t r;

    (void)state;
    call_plan("tiny", "tiny", "1d");
    lead("call-d1", "{}", 1);
    lead("call-d2", "{}", 1);
    enrol_lead("call-d1", "tiny");
    task_id(id1, sizeof(id1), "call-d1", "tiny");
    t = wait_task(REP3, "?mine=1", id1); /* rep3's cap is 1 */
    json_decref(t);
    enrol_lead("call-d2", "tiny");
    task_id(id2, sizeof(id2), "call-d2", "tiny");
    t = wait_task(OPS, "?team=tiny", id2);
    assert_true(json_is_null(json_object_get(t, "owner")));
    json_decref(t);
    assert_false(listed_now(REP3, "?mine=1", id2));
    /* rep3, a member, sees the queue and claims it from there. */
    t = wait_task(REP3, "?team=tiny", id2);
    json_decref(t);
    call("GET", "/v1/tasks?team=tiny", REP, NULL, &r);
    expect_status(&r, 403, "forbidden");
    nt_test_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/tasks/%s/claim", id2);
    post(path, REP3, NULL, 200, NULL);
    t = wait_task(REP3, "?mine=1", id2);
    assert_string_equal(json_string_value(json_object_get(t, "status")), "claimed");
    json_decref(t);
    call("GET", "/v1/reps/rep3", REP3, NULL, &r);
    expect_status(&r, 200, NULL);
    assert_int_equal(json_integer_value(json_object_get(r.json, "open")), 2);
    nt_test_resp_fini(&r);
}

static void test_call_task_out_of_office_rep_is_skipped(void **state)
{
    char id[128];
    json_t *t;
    nt_test_resp_t r;

    (void)state;
    call("PATCH", "/v1/reps/rep1", REP, "{\"out_of_office\":true}", &r);
    expect_status(&r, 200, NULL);
    assert_true(json_is_true(json_object_get(r.json, "out_of_office")));
    nt_test_resp_fini(&r);
    call_plan("calls4", "sales", "1d");
    for (int i = 0; i < 3; i++) {
        char lid[32];

        snprintf(lid, sizeof(lid), "call-e%d", i);
        lead(lid, "{}", 1);
        enrol_lead(lid, "calls4");
        task_id(id, sizeof(id), lid, "calls4");
        t = wait_task(REP2, "?mine=1", id);
        json_decref(t);
    }
    call("PATCH", "/v1/reps/rep1", OPS, "{\"out_of_office\":false}", &r);
    expect_status(&r, 200, NULL);
    nt_test_resp_fini(&r);
}

static void test_call_task_past_sla_goes_to_team_queue(void **state)
{
    char id[128];
    json_t *t;

    (void)state;
    call_plan("slow", "sales", "1s");
    lead("call-f", "{\"owner\":\"rep2\"}", 1);
    enrol_lead("call-f", "slow");
    task_id(id, sizeof(id), "call-f", "slow");
    t = wait_task(OPS, "?team=sales", id);
    assert_true(json_is_null(json_object_get(t, "owner")));
    assert_true(json_integer_value(json_object_get(t, "escalated")) > 0);
    json_decref(t);
    assert_false(listed_now(REP2, "?mine=1", id));
}

/* A call step that times out before anyone calls: the run moves on and the task expires. It
 * leaves the rep's list when listed (the rep's open count with it) or is refused when completed
 * (409, nothing posted); claiming it is refused too. */
static int run_at(void *arg)
{
    run_want_t *w = arg;
    json_t *run = run_of(w->lead, w->plan);
    const char *node = run ? json_string_value(json_object_get(run, "node")) : NULL;
    int ok = node && strcmp(node, w->reason) == 0;

    json_decref(run);
    return ok;
}

static long long rep_open(const char *token, const char *rep)
{
    char path[128];
    nt_test_resp_t r;
    long long n;

    snprintf(path, sizeof(path), "/v1/reps/%s", rep);
    call("GET", path, token, NULL, &r);
    expect_status(&r, 200, NULL);
    n = (long long)json_integer_value(json_object_get(r.json, "open"));
    nt_test_resp_fini(&r);
    return n;
}

static void test_call_task_expires_when_its_run_timed_out(void **state)
{
    static const char plan[] =
        "id: \"calls_to\"\nstart: \"call\"\n"
        "nodes { id: \"call\" send { channel: \"call\"\n"
        "  params { name: \"reason\" value: \"quick call, score {{score}}\" }\n"
        "  on { outcome: \"meeting_booked\" to: \"booked\" }\n"
        "  timeout { seconds: 1 } on_timeout: \"later\" } }\n"
        "nodes { id: \"later\" wait { duration { hours: 1 } next: \"end\" } }\n"
        "nodes { id: \"booked\" exit { reason: \"meeting_booked\" } }\n"
        "nodes { id: \"end\" exit { reason: \"timed_out\" } }\n";
    char id1[128], id2[128], path[256], key[NT_KEY_MAX];
    run_want_t at_later1 = {"call-x1", "calls_to", "later"};
    run_want_t at_later2 = {"call-x2", "calls_to", "later"};
    long long open0;
    nt_test_resp_t r;
    json_t *t;
    char *v;

    (void)state;
    publish_textpb(plan, 0);
    lead("call-x1", "{\"owner\":\"rep2\"}", 40);
    lead("call-x2", "{\"owner\":\"rep2\"}", 41);
    open0 = rep_open(REP2, "rep2");
    enrol_lead("call-x1", "calls_to");
    enrol_lead("call-x2", "calls_to");
    task_id(id1, sizeof(id1), "call-x1", "calls_to");
    task_id(id2, sizeof(id2), "call-x2", "calls_to");
    t = wait_task(REP2, "?mine=1", id1);
    json_decref(t);
    t = wait_task(REP2, "?mine=1", id2);
    json_decref(t);
    assert_int_equal(rep_open(REP2, "rep2"), open0 + 2);

    /* Nobody calls within the second: both runs move on to "later". */
    assert_int_equal(nt_test_wait_until(run_at, &at_later1, 20000), 0);
    assert_int_equal(nt_test_wait_until(run_at, &at_later2, 20000), 0);

    /* Completing the first before anyone lists it: refused, nothing posted. */
    snprintf(path, sizeof(path), "/v1/tasks/%s/complete", id1);
    call("POST", path, REP2, "{\"outcome\":\"meeting_booked\",\"note\":\"too late\"}", &r);
    expect_status(&r, 409, "conflict");
    expect_message(&r, "has expired");
    expect_message(&r, "moved on from call to later");
    nt_test_resp_fini(&r);
    v = redis_hget(nt_tasks_key_task(key, nt_partition("call-x1", API_PARTITIONS), id1),
                   "status");
    assert_string_equal(v, "expired");
    free(v);
    /* Again: still refused, the count lowered once only. */
    call("POST", path, REP2, "{\"outcome\":\"connected\"}", &r);
    expect_status(&r, 409, "conflict");
    expect_message(&r, "has expired");
    nt_test_resp_fini(&r);

    /* The second leaves the rep's list when listed; claiming it is refused. */
    assert_false(listed_now(REP2, "?mine=1", id2));
    assert_false(listed_now(OPS, "", id2));
    snprintf(path, sizeof(path), "/v1/tasks/%s", id2);
    call("GET", path, OPS, NULL, &r);
    expect_status(&r, 200, NULL);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "expired");
    assert_true(json_integer_value(json_object_get(r.json, "expired")) > 0);
    nt_test_resp_fini(&r);
    snprintf(path, sizeof(path), "/v1/tasks/%s/claim", id2);
    call("POST", path, REP2, NULL, &r);
    expect_status(&r, 409, "conflict");
    expect_message(&r, "has expired");
    nt_test_resp_fini(&r);
    assert_int_equal(rep_open(REP2, "rep2"), open0);

    /* No outcome reached either run: both still wait at "later". */
    usleep(200 * 1000);
    assert_int_equal(run_at(&at_later1), 1);
    assert_int_equal(run_at(&at_later2), 1);
    nt_tasks_key_set(key, nt_partition("call-x1", API_PARTITIONS), "rep", "rep2");
    assert_int_equal(redis_int("ZSCORE %s %s", key, id1), 0); /* nil */
    nt_tasks_key_set(key, nt_partition("call-x1", API_PARTITIONS), "open", NULL);
    assert_int_equal(redis_int("ZSCORE %s %s", key, id1), 0); /* nil */
    v = redis_hget(lead_key(key, "call-x1"), "e:call.completed");
    assert_null(v);
}

/* Run nurturectl with token against the daemon; returns its exit status and output in out. */
static int ctl(const char *token, const char *args, char *out, size_t cap)
{
    char cmd[1024];
    FILE *f;
    size_t n;

    snprintf(cmd, sizeof(cmd), "NURTURE_TOKEN='%s' '%s' --url '%s' %s 2>&1", token,
             NT_NURTURECTL_BIN, env.daemon.url, args);
    f = popen(cmd, "r");
    assert_non_null(f);
    n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    return WEXITSTATUS(pclose(f));
}

static void test_call_task_nurturectl_lists_and_completes(void **state)
{
    char id[128], out[8192], args[512];
    json_t *t;

    (void)state;
    call_plan("calls5", "sales", "1d");
    lead("call-g", "{\"owner\":\"rep1\"}", 64);
    enrol_lead("call-g", "calls5");
    task_id(id, sizeof(id), "call-g", "calls5");
    t = wait_task(REP, "?mine=1", id);
    json_decref(t);
    assert_int_equal(ctl(REP, "tasks list", out, sizeof(out)), 0);
    assert_non_null(strstr(out, id));
    assert_non_null(strstr(out, "attended the pricing webinar, score 64"));
    assert_int_equal(ctl(OPS, "tasks list rep1", out, sizeof(out)), 0);
    assert_non_null(strstr(out, id));
    snprintf(args, sizeof(args), "tasks complete '%s' busy_signal", id);
    assert_int_equal(ctl(REP, args, out, sizeof(out)), 1);
    snprintf(args, sizeof(args), "tasks complete '%s' meeting_booked Thursday at two", id);
    assert_int_equal(ctl(REP, args, out, sizeof(out)), 0);
    wait_exit("call-g", "calls5", "meeting_booked");
    assert_int_equal(ctl(REP, "tasks frob", out, sizeof(out)), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_task_listed_for_owner_and_completion_moves_the_run),
        cmocka_unit_test(test_call_task_rep_sees_and_changes_only_their_own),
        cmocka_unit_test(test_call_task_bad_bodies_write_nothing),
        cmocka_unit_test(test_call_task_waits_in_team_queue_when_no_rep_has_capacity),
        cmocka_unit_test(test_call_task_out_of_office_rep_is_skipped),
        cmocka_unit_test(test_call_task_past_sla_goes_to_team_queue),
        cmocka_unit_test(test_call_task_expires_when_its_run_timed_out),
        cmocka_unit_test(test_call_task_nurturectl_lists_and_completes),
    };

    return cmocka_run_group_tests(tests, setup, api_teardown);
}
