/* End to end: what happens to call tasks with nobody looking. nurtured runs on a plan clock an
 * hour per second (--time-scale 3600) with channel.call.manager_webhook pointing at a recording
 * HTTP peer (tests/lib/http_peer.h). A task past its one-hour SLA goes back to its team queue
 * and the peer receives the manager's POST {"event":"task.escalated", ...}, signed
 * (X-Nurture-Signature, checked here with OpenSSL) and with the escalation id as its
 * Idempotency-Key. The notification is durable (nt:{p}:hook:<escalation id>, pending in
 * nt:{p}:tasks:hooks): answers 500 are retried until one is accepted, a 400 is not retried, a
 * peer that is down gets it once it is back, and so does one that comes back while nurtured is
 * killed (-9) and started again; two nurtured on one Redis send each attempt once. With the
 * peer down the escalation happens all the same and the failure is logged. A task whose lead's
 * run has left the call step expires by the daemon's periodic sweep, from the rep's list and
 * from the team queue alike, without anyone listing it: everything here is checked in Redis and
 * the peer, never through GET /v1/tasks (which would expire tasks on its own). */
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "api_util.h"
#include "http_peer.h"
#include "tasks.h"

#define HOOK_SECRET "manager-webhook-secret-for-the-tests-01"

static nt_test_peer_t *peer;
static int peer_port;
static char hook_url[128];

/* nurtured's arguments (a second nurtured on the same Redis gets them too). */
static const char *const extra[] = {"--poll-ms",
                                    "5",
                                    "--time-scale",
                                    "3600",
                                    "--channel.call.team.field",
                                    "rep1",
                                    "--channel.call.sla_check_ms",
                                    "50",
                                    "--channel.call.manager_webhook",
                                    hook_url,
                                    "--channel.call.manager_webhook_secret",
                                    HOOK_SECRET,
                                    "--channel.call.manager_webhook_retries",
                                    "60",
                                    "--channel.call.manager_webhook_backoff_ms",
                                    "100",
                                    "--channel.call.manager_webhook_backoff_max_ms",
                                    "400",
                                    "--channel.call.manager_webhook_timeout_ms",
                                    "2000",
                                    NULL};

static int setup(void **state)
{
    nt_test_resp_t r;

    (void)state;
    peer = nt_test_peer_start(200, "{\"ok\":true}");
    if (peer == NULL)
        return -1;
    peer_port = nt_test_peer_port(peer);
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

    snprintf(body, sizeof(body),
             "{\"id\":\"%s\",\"attributes\":{\"first_name\":\"Ada\"},"
             "\"score\":%d}",
             lead, score);
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

/* A field of a hash of task id (the task's, or its escalation's notification), malloc'd. */
typedef char *field_fn(const char *id, const char *lead, const char *field);

typedef struct want {
    field_fn *get;
    const char *id, *lead, *field, *value; /* value NULL: any non-empty value */
} want_t;

static int field_has(void *arg)
{
    const want_t *w = arg;
    char *v = w->get(w->id, w->lead, w->field);
    int ok = v && (w->value ? strcmp(v, w->value) == 0 : v[0] != '\0');

    free(v);
    return ok;
}

/* Wait until get's field is value (NULL: set); else fail, saying what it is. */
static void wait_field(field_fn *get, const char *id, const char *lead, const char *field,
                       const char *value)
{
    want_t w = {get, id, lead, field, value};

    if (nt_test_wait_until(field_has, &w, 20000) != 0) {
        char *v = get(id, lead, field);

        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("%s of %s is %s, never %s", field, id, v ? v : "(none)", value ? value : "set");
    }
}

static void wait_task_field(const char *id, const char *lead, const char *field, const char *value)
{
    wait_field(task_field, id, lead, field, value);
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

/* Wait for a line of the daemon's log holding text; else fail. */
static void wait_log(const char *text)
{
    if (nt_test_wait_until(log_says, (void *)text, 20000) != 0) {
        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("no log line '%s'", text);
    }
}

/* ---- the manager webhook's notifications ---- */

/* A field of the notification of task id's escalation (nt:{p}:hook:<id>:esc), malloc'd. */
static char *hook_field(const char *id, const char *lead, const char *field)
{
    char key[NT_KEY_MAX], esc[320];

    snprintf(esc, sizeof(esc), "%s:esc", id);
    return redis_hget(nt_tasks_key_hook(key, nt_partition(lead, API_PARTITIONS), esc), field);
}

static void wait_hook_field(const char *id, const char *lead, const char *field, const char *value)
{
    wait_field(hook_field, id, lead, field, value);
}

static long long hook_int(const char *id, const char *lead, const char *field)
{
    char *v = hook_field(id, lead, field);
    long long n = v ? strtoll(v, NULL, 10) : -1;

    free(v);
    return n;
}

/* Is the notification of task id's escalation still pending in nt:{p}:tasks:hooks? */
static int hook_queued(const char *id, const char *lead)
{
    char esc[320];

    snprintf(esc, sizeof(esc), "%s:esc", id);
    return in_set(lead, "hooks", NULL, esc);
}

/* The requests of the peer whose Idempotency-Key is "<id>:esc", checked on the way: each a POST
 * with a valid X-Nurture-Signature over its body and the same body as the first. Returns how
 * many; *accepted how many of them the peer answered 2xx. */
static size_t hook_requests(const char *id, size_t *accepted)
{
    char esc[320];
    char *first = NULL;
    size_t n = 0, total = nt_test_peer_count(peer);

    snprintf(esc, sizeof(esc), "%s:esc", id);
    *accepted = 0;
    for (size_t i = 0; i < total; i++) {
        nt_test_peer_req_t req;
        char *key, *sig, want[160];
        long long t;

        assert_int_equal(nt_test_peer_request(peer, i, &req), 0);
        key = nt_test_peer_header(&req, "Idempotency-Key");
        if (!key || strcmp(key, esc) != 0) {
            free(key);
            nt_test_peer_req_fini(&req);
            continue;
        }
        n++;
        assert_string_equal(req.method, "POST");
        assert_string_equal(req.content_type, "application/json");
        sig = nt_test_peer_header(&req, "X-Nurture-Signature");
        if (!sig || sscanf(sig, "t=%lld,", &t) != 1)
            fail_msg("request %zu for %s: X-Nurture-Signature is %s", i, esc, sig ? sig : "absent");
        assert_true(llabs(t - (long long)time(NULL)) < 60);
        sign_webhook(HOOK_SECRET, t, req.body, want, sizeof(want));
        if (strcmp(want + strlen("X-Nurture-Signature: "), sig) != 0)
            fail_msg("request %zu for %s: signature %s, computed %s", i, esc, sig, want);
        if (!first)
            first = strdup(req.body);
        else
            assert_string_equal(req.body, first);
        if (req.status >= 200 && req.status <= 299)
            (*accepted)++;
        free(sig);
        free(key);
        nt_test_peer_req_fini(&req);
    }
    free(first);
    return n;
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
    assert_string_equal(json_string_value(json_object_get(j, "escalation")),
                        "esc-1:call_sla:call:1:esc");
    free(sla);
    json_decref(j);
    nt_test_peer_req_fini(&req);
    {
        size_t accepted;

        /* Signed, keyed by the escalation id (hook_requests checks), and recorded delivered. */
        assert_int_equal(hook_requests(id, &accepted), 1);
        assert_int_equal(accepted, 1);
        wait_hook_field(id, "esc-1", "status", "delivered");
        assert_int_equal(hook_int(id, "esc-1", "attempts"), 1);
        assert_int_equal(hook_int(id, "esc-1", "http"), 200);
        assert_false(hook_queued(id, "esc-1"));
        sla = task_field(id, "esc-1", "escalation");
        assert_string_equal(sla, "esc-1:call_sla:call:1:esc");
        free(sla);
    }

    /* The task moved to the team queue in the same step: nobody holds it, the rep's count is
     * back, and it is escalated once only. */
    wait_task_field(id, "esc-1", "escalated", NULL);
    {
        char *owner = task_field(id, "esc-1", "owner"), *status = task_field(id, "esc-1", "status");
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

static void test_webhook_answered_500_twice_is_retried_until_accepted_once(void **st)
{
    const char *id = "esc-4:call_sla:call:1";
    const int answers[] = {500, 500};
    size_t accepted;

    (void)st;
    assert_int_equal(nt_test_peer_answer(peer, answers, 2), 0);
    enrol("esc-4", 70, "call_sla");
    wait_hook_field(id, "esc-4", "status", "delivered");
    /* Three POSTs: two answered 500, the third accepted; the same key, body and a valid
     * signature on each (hook_requests). */
    assert_int_equal(hook_requests(id, &accepted), 3);
    assert_int_equal(accepted, 1);
    assert_int_equal(hook_int(id, "esc-4", "attempts"), 3);
    assert_int_equal(hook_int(id, "esc-4", "http"), 200);
    assert_false(hook_queued(id, "esc-4"));
    wait_log("manager webhook for task esc-4:call_sla:call:1 failed: refused (HTTP 500), "
             "attempt 2 of 61");
    /* Delivered means done: more SLA checks and backoff periods send nothing more. */
    usleep(600 * 1000);
    assert_int_equal(hook_requests(id, &accepted), 3);
    assert_int_equal(accepted, 1);
}

static void test_webhook_answered_400_is_not_retried(void **st)
{
    const char *id = "esc-5:call_sla:call:1";
    const int answers[] = {400};
    size_t accepted;
    char *err;

    (void)st;
    assert_int_equal(nt_test_peer_answer(peer, answers, 1), 0);
    enrol("esc-5", 70, "call_sla");
    wait_hook_field(id, "esc-5", "status", "dropped");
    assert_int_equal(hook_int(id, "esc-5", "attempts"), 1);
    assert_int_equal(hook_int(id, "esc-5", "http"), 400);
    err = hook_field(id, "esc-5", "error");
    assert_string_equal(err, "refused");
    free(err);
    assert_false(hook_queued(id, "esc-5"));
    wait_log("manager webhook for task esc-5:call_sla:call:1 refused (HTTP 400): not retried");
    usleep(600 * 1000); /* longer than the longest backoff */
    assert_int_equal(hook_requests(id, &accepted), 1);
    assert_int_equal(accepted, 0);
    /* The escalation itself stands. */
    assert_true(in_set("esc-5", "team", "field", id));
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

static void
test_task_past_sla_with_the_webhook_down_is_escalated_and_delivered_once_it_is_back(void **st)
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
    wait_log(msg);
    /* Pending, its failed attempts recorded; once the endpoint is back (same URL) it gets it. */
    wait_hook_field(id, "esc-3", "error", NULL);
    {
        char *st_ = hook_field(id, "esc-3", "status");

        assert_string_equal(st_, "pending");
        free(st_);
    }
    assert_true(hook_queued(id, "esc-3"));
    assert_true(hook_int(id, "esc-3", "attempts") >= 1);
    assert_int_equal(hook_int(id, "esc-3", "http"), 0);
    peer = nt_test_peer_start_on(peer_port, 200, "{\"ok\":true}");
    assert_non_null(peer);
    wait_hook_field(id, "esc-3", "status", "delivered");
    {
        size_t accepted;

        assert_int_equal(hook_requests(id, &accepted), 1);
        assert_int_equal(accepted, 1);
    }
    assert_false(hook_queued(id, "esc-3"));
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

static void test_webhook_pending_when_nurtured_is_killed_is_delivered_after_the_restart(void **st)
{
    const char *id = "esc-6:call_sla:call:1";
    size_t accepted;

    (void)st;
    nt_test_peer_stop(peer); /* down: the notification stays pending */
    peer = NULL;
    enrol("esc-6", 58, "call_sla");
    wait_hook_field(id, "esc-6", "error", NULL);
    assert_true(hook_queued(id, "esc-6"));
    nt_test_daemon_signal(&env.daemon, SIGKILL);
    assert_int_equal(nt_test_daemon_wait(&env.daemon, 10000), 128 + SIGKILL);
    {
        char *st_ = hook_field(id, "esc-6", "status");

        assert_string_equal(st_, "pending");
        free(st_);
    }
    peer = nt_test_peer_start_on(peer_port, 200, "{\"ok\":true}");
    assert_non_null(peer);
    assert_int_equal(nt_test_peer_count(peer), 0);
    assert_int_equal(nt_test_daemon_start_again(&env.daemon), 0);
    wait_hook_field(id, "esc-6", "status", "delivered");
    assert_int_equal(hook_requests(id, &accepted), 1);
    assert_int_equal(accepted, 1);
    assert_true(hook_int(id, "esc-6", "attempts") >= 2);
    assert_false(hook_queued(id, "esc-6"));
}

static void test_two_nurtured_on_one_redis_post_each_attempt_once(void **st)
{
    const char *id = "esc-7:call_sla:call:1";
    const int answers[] = {500};
    nt_test_daemon_t second;
    char *addr = nt_test_redis_addr(&env.redis);
    size_t accepted;

    (void)st;
    memset(&second, 0, sizeof(second));
    assert_int_equal(nt_test_daemon_start(&second, addr, extra), 0);
    free(addr);
    /* Both check SLAs and claim notifications every 50 ms: one escalates, one sends each
     * attempt (the first answered 500, so the retry is up for grabs too), and neither sends it
     * again while a POST is in flight (the peer answers after 300 ms: six ticks of each). */
    assert_int_equal(nt_test_peer_answer(peer, answers, 1), 0);
    nt_test_peer_delay(peer, 300);
    enrol("esc-7", 64, "call_sla");
    wait_hook_field(id, "esc-7", "status", "delivered");
    usleep(600 * 1000);
    assert_int_equal(hook_requests(id, &accepted), 2);
    assert_int_equal(accepted, 1);
    assert_int_equal(hook_int(id, "esc-7", "attempts"), 2);
    nt_test_peer_delay(peer, 0);
    nt_test_daemon_stop(&second);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_past_sla_posts_the_manager_webhook_and_goes_to_the_team_queue),
        cmocka_unit_test(test_webhook_answered_500_twice_is_retried_until_accepted_once),
        cmocka_unit_test(test_webhook_answered_400_is_not_retried),
        cmocka_unit_test(test_task_of_a_run_that_moved_on_leaves_the_reps_list_unlisted),
        cmocka_unit_test(
            test_task_past_sla_with_the_webhook_down_is_escalated_and_delivered_once_it_is_back),
        cmocka_unit_test(
            test_webhook_pending_when_nurtured_is_killed_is_delivered_after_the_restart),
        cmocka_unit_test(test_two_nurtured_on_one_redis_post_each_attempt_once),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
