/* Redis goes away and comes back (DESIGN.md, "Guarantees": Redis down: writes answer 503,
 * nurtured reconnects with backoff and resumes with nothing lost). The harness's redis-server
 * keeps its data in an append-only file, which SHUTDOWN flushes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault_util.h"

#define PARTS 64
#define LEADS 500

/* One hour at time scale 900: four seconds of waiting. */
static const char plan_fmt[] =
    "id: \"%s\"\n"
    "name: \"Redis restart\"\n"
    "start: \"s1\"\n"
    "nodes { id: \"s1\" send { channel: \"log\" params { name: \"message\" value: \"one\" }"
    " next: \"w1\" } }\n"
    "nodes { id: \"w1\" wait { duration { hours: 1 } next: \"s2\" } }\n"
    "nodes { id: \"s2\" send { channel: \"log\" params { name: \"message\" value: \"two\" }"
    " next: \"u1\" } }\n"
    "nodes { id: \"u1\" update { add_score: 1 next: \"done\" } }\n"
    "nodes { id: \"done\" exit { reason: \"finished\" } }\n";

static nt_test_redis_t redis;
static nt_test_daemon_t daemon_;
static char *work_dir;
static char log_path[512];

static int setup(void **state)
{
    (void)state;
    if (nt_test_redis_start(&redis) != 0)
        return -1;
    work_dir = nt_test_tmpdir("nt-rr");
    if (work_dir == NULL)
        return -1;
    snprintf(log_path, sizeof(log_path), "%s/log-channel.jsonl", work_dir);
    char *addr = nt_test_redis_addr(&redis);
    const char *extra[] = {"--time-scale", "900", "--lease-ms", "2000", "--partitions", "64",
                           "--channel.log.path", log_path, NULL};
    int rc = nt_test_daemon_start(&daemon_, addr, extra);
    free(addr);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    nt_test_daemon_stop(&daemon_);
    nt_test_redis_stop(&redis);
    if (work_dir != NULL) {
        const char *keep = getenv("NT_TEST_KEEP");
        if (keep != NULL && keep[0] != '\0' && strcmp(keep, "0") != 0)
            fprintf(stderr, "kept %s\n", work_dir);
        else
            nt_test_rmrf(work_dir);
        free(work_dir);
        work_dir = NULL;
    }
    nt_test_cleanup_all();
    return 0;
}

static int publish(const char *id)
{
    char text[2048];
    snprintf(text, sizeof(text), plan_fmt, id);
    return ft_publish_plan(&daemon_, work_dir, id, text);
}

/* GET /health status: 200, 503, or 0 without an answer. */
static long health_status(const char **redis_state, nt_test_resp_t *keep)
{
    nt_test_resp_t r;
    char url[128];
    snprintf(url, sizeof(url), "%s/health", daemon_.url);
    if (nt_test_http("GET", url, NULL, NULL, NULL, 0, &r) != 0)
        return 0;
    long st = r.status;
    if (keep != NULL) {
        *keep = r;
        if (redis_state != NULL)
            *redis_state = json_string_value(json_object_get(r.json, "redis"));
    } else {
        nt_test_resp_fini(&r);
    }
    return st;
}

static int health_is(void *arg)
{
    if (health_status(NULL, NULL) == *(long *)arg)
        return 1;
    ft_sleep_ms(50);
    return 0;
}

typedef struct run_arg {
    redisContext *c;
    char key[NT_KEY_MAX];
    const char *field;
    const char *want;
} run_arg_t;

/* (Re)connects as needed, since Redis itself is restarted under the test. */
static int run_field_is(void *arg)
{
    run_arg_t *a = arg;
    if (a->c == NULL)
        a->c = nt_test_redis_connect(&redis);
    if (a->c == NULL) {
        ft_sleep_ms(100);
        return 0;
    }
    redisReply *r = redisCommand(a->c, "HGET %s %s", a->key, a->field);
    if (r == NULL) {
        redisFree(a->c);
        a->c = NULL;
        return 0;
    }
    int ok = r->type == REDIS_REPLY_STRING && strcmp(r->str, a->want) == 0;
    freeReplyObject(r);
    if (!ok)
        ft_sleep_ms(50);
    return ok;
}

static void test_redis_restart_writes_503_while_down_then_waiting_run_finishes(void **state)
{
    (void)state;
    const char *ops = daemon_.ops_token;
    nt_test_resp_t r;
    assert_int_equal(publish("rr"), 0);

    assert_int_equal(nt_test_json(&daemon_, "POST", "/v1/leads", ops,
                                  "{\"id\":\"keep-1\",\"attributes\":{\"first_name\":\"Ada\","
                                  "\"company\":\"Acme\"},\"stage\":\"mql\"}",
                                  &r),
                     0);
    assert_int_equal(r.status, 201);
    nt_test_resp_fini(&r);
    assert_int_equal(
        nt_test_json(&daemon_, "POST", "/v1/leads/keep-1/enrol", ops, "{\"plan\":\"rr\"}", &r),
        0);
    assert_int_equal(r.status, 202);
    nt_test_resp_fini(&r);

    /* The run rests in the wait. */
    run_arg_t ra = {NULL, "", "n", "w1"};
    nt_key_run(ra.key, nt_partition("keep-1", PARTS), "keep-1", "rr");
    assert_int_equal(nt_test_wait_until(run_field_is, &ra, 15000), 0);
    if (ra.c != NULL)
        redisFree(ra.c);
    ra.c = NULL;

    /* Down. */
    assert_int_equal(nt_test_redis_stop_only(&redis), 0);
    long want = 503;
    if (nt_test_wait_until(health_is, &want, 15000) != 0)
        fail_msg("GET /health did not answer 503 within 15 s of Redis going away");
    const char *rs = NULL;
    nt_test_resp_t h;
    assert_int_equal(health_status(&rs, &h), 503);
    assert_non_null(rs);
    assert_string_equal(rs, "down");
    nt_test_resp_fini(&h);
    assert_int_equal(nt_test_json(&daemon_, "POST", "/v1/leads", ops,
                                  "{\"id\":\"new-1\",\"attributes\":{\"first_name\":\"Bo\"}}", &r),
                     0);
    printf("while Redis is down: POST /v1/leads -> %ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 503);
    assert_non_null(r.json);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.json, "error"), "code")),
        "unavailable");
    nt_test_resp_fini(&r);
    ft_sleep_ms(1000); /* stay down a moment: reconnects back off */

    /* Back. */
    assert_int_equal(nt_test_redis_restart(&redis), 0);
    want = 200;
    int64_t t0 = ft_mono_ms();
    if (nt_test_wait_until(health_is, &want, 30000) != 0)
        fail_msg("GET /health did not answer 200 within 30 s of Redis coming back");
    printf("GET /health answered 200 %lld ms after Redis came back\n",
           (long long)(ft_mono_ms() - t0));

    /* The refused write wrote nothing; now writes succeed. */
    assert_int_equal(nt_test_json(&daemon_, "GET", "/v1/leads/new-1", ops, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    nt_test_resp_fini(&r);
    assert_int_equal(nt_test_json(&daemon_, "POST", "/v1/leads", ops,
                                  "{\"id\":\"new-1\",\"attributes\":{\"first_name\":\"Bo\"}}", &r),
                     0);
    assert_int_equal(r.status, 201);
    nt_test_resp_fini(&r);

    /* The waiting run went on and ended. */
    run_arg_t done = {NULL, "", "s", "d"};
    memcpy(done.key, ra.key, sizeof(done.key));
    if (nt_test_wait_until(run_field_is, &done, 30000) != 0) {
        nt_test_daemon_dump_log(&daemon_);
        fail_msg("the run of keep-1 did not end within 30 s after Redis came back");
    }
    if (done.c != NULL)
        redisFree(done.c);

    assert_int_equal(nt_test_json(&daemon_, "GET", "/v1/leads/keep-1", ops, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *attrs = json_object_get(r.json, "attributes");
    assert_string_equal(json_string_value(json_object_get(attrs, "first_name")), "Ada");
    assert_string_equal(json_string_value(json_object_get(attrs, "company")), "Acme");
    assert_string_equal(json_string_value(json_object_get(r.json, "stage")), "mql");
    assert_int_equal(json_integer_value(json_object_get(r.json, "score")), 1);
    json_t *runs = json_object_get(r.json, "runs");
    assert_int_equal(json_array_size(runs), 1);
    json_t *run = json_array_get(runs, 0);
    assert_string_equal(json_string_value(json_object_get(run, "plan")), "rr");
    assert_string_equal(json_string_value(json_object_get(run, "status")), "done");
    assert_string_equal(json_string_value(json_object_get(run, "exit_reason")), "finished");
    nt_test_resp_fini(&r);

    ft_stats_t st;
    assert_int_equal(ft_get_stats(&daemon_, "rr", "finished", &st), 0);
    assert_int_equal(st.enrolled, 1);
    assert_int_equal(st.exits, 1);
    assert_int_equal(st.exits_all, 1);
    assert_int_equal(st.active, 0);

    nt_test_daemon_stop(&daemon_);
    ft_log_t lg;
    const char *paths[] = {log_path};
    assert_int_equal(ft_check_log(paths, 1, "keep-", 0, 0, &lg), 0);
    assert_int_equal(lg.lines, 2);
    assert_int_equal(lg.dup_same_file, 0);
}

static long count_lines(const char *path)
{
    FILE *f = fopen(path, "re");
    long n = 0;
    int ch;
    if (f == NULL)
        return 0;
    while ((ch = getc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

typedef struct lines_arg {
    const char *path;
    long want;
} lines_arg_t;

static int lines_reached(void *arg)
{
    lines_arg_t *l = arg;
    if (count_lines(l->path) >= l->want)
        return 1;
    ft_sleep_ms(20);
    return 0;
}

static void test_redis_restart_while_leads_in_flight_every_run_ends_once(void **state)
{
    (void)state;
    unsigned seed = ft_seed("test_redis_restart");
    srandom(seed);
    assert_int_equal(publish("flight"), 0);
    assert_int_equal(ft_enrol(&daemon_, "flight", "f", 0, LEADS), LEADS);

    /* Restart while the first messages are being dispatched, and again among the second. */
    long at[2] = {50 + random() % 400, LEADS + 50 + random() % 400};
    for (int round = 0; round < 2; round++) {
        lines_arg_t la = {log_path, at[round]};
        if (nt_test_wait_until(lines_reached, &la, 60000) != 0) {
            nt_test_daemon_dump_log(&daemon_);
            fail_msg("round %d: %ld messages were not logged within 60 s (%ld); seed %u", round,
                     at[round], count_lines(log_path), seed);
        }
        assert_int_equal(nt_test_redis_restart(&redis), 0);
        long want = 200;
        int64_t t0 = ft_mono_ms();
        if (nt_test_wait_until(health_is, &want, 30000) != 0)
            fail_msg("round %d: GET /health did not answer 200 within 30 s of Redis coming "
                     "back; seed %u",
                     round, seed);
        printf("round %d: Redis restarted once %ld messages were logged; /health 200 after "
               "%lld ms\n",
               round, at[round], (long long)(ft_mono_ms() - t0));
        fflush(stdout);
    }

    ft_expect_runs_ended(&daemon_, &redis, PARTS, "flight", "f", "finished", LEADS, 90000, seed,
                         NULL);

    nt_test_daemon_stop(&daemon_);
    ft_log_t lg;
    const char *paths[] = {log_path};
    assert_int_equal(ft_check_log(paths, 1, "f", LEADS, 2, &lg), 0);
    printf("log: %ld lines, %ld duplicate ids, %d leads without exactly 2 messages\n", lg.lines,
           lg.dup_same_file, lg.leads_wrong);
    if (lg.lines != 2L * LEADS || lg.dup_same_file != 0 || lg.leads_wrong != 0 ||
        lg.bad_lines != 0 || lg.foreign != 0)
        fail_msg("log channel: %ld lines (expected %d), %ld duplicates, %d leads wrong, %ld bad "
                 "lines, %ld foreign; first: %s; seed %u",
                 lg.lines, 2 * LEADS, lg.dup_same_file, lg.leads_wrong, lg.bad_lines,
                 lg.foreign, lg.first_bad, seed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_redis_restart_writes_503_while_down_then_waiting_run_finishes, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_redis_restart_while_leads_in_flight_every_run_ends_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
