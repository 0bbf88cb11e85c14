/* End to end: the lead routes (create, update, get), enrolment (single and bulk) and events,
 * against nurtured on an external redis-server whose keys the tests inspect. */
#include <arpa/inet.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api_util.h"

/* The lead's timeline (GET /v1/leads/{id}) shows its enrolment in api_basic. */
static int timeline_has_enrolment(void *arg)
{
    char path[300];
    nt_test_resp_t r;
    int found = 0;

    snprintf(path, sizeof(path), "/v1/leads/%s", (const char *)arg);
    if (nt_test_json(&env.daemon, "GET", path, OPS, NULL, &r) != 0)
        return 0;
    json_t *tl = json_object_get(r.json, "timeline");
    for (size_t i = 0; i < json_array_size(tl); i++) {
        const char *text = json_string_value(json_object_get(json_array_get(tl, i), "text"));
        if (text && strstr(text, "enrolled in api_basic v1"))
            found = 1;
    }
    nt_test_resp_fini(&r);
    return found;
}

static int setup(void **state)
{
    (void)state;
    static const char *const extra[] = {"--partitions", "64", NULL};
    return api_setup(extra);
}

static void test_api_lead_create_update_get(void **state)
{
    (void)state;
    char key[NT_KEY_MAX];
    nt_test_resp_t r;

    call("POST", "/v1/leads", OPS,
         "{\"id\":\"ada@example.com\",\"attributes\":{\"first_name\":\"Ada\",\"company_size\":250,"
         "\"vip\":true},\"score\":5,\"stage\":\"mql\"}",
         &r);
    expect_status(&r, 201, NULL);
    assert_string_equal(json_string_value(json_object_get(r.json, "id")), "ada@example.com");
    json_t *attrs = json_object_get(r.json, "attributes");
    assert_string_equal(json_string_value(json_object_get(attrs, "first_name")), "Ada");
    assert_string_equal(json_string_value(json_object_get(attrs, "company_size")), "250");
    assert_string_equal(json_string_value(json_object_get(attrs, "vip")), "true");
    assert_int_equal(json_integer_value(json_object_get(r.json, "score")), 5);
    assert_string_equal(json_string_value(json_object_get(r.json, "stage")), "mql");
    nt_test_resp_fini(&r);

    lead_key(key, "ada@example.com");
    char *v = redis_hget(key, "first_name");
    assert_string_equal(v, "Ada");
    free(v);
    v = redis_hget(key, "_score");
    assert_string_equal(v, "5");
    free(v);
    v = redis_hget(key, "_stage");
    assert_string_equal(v, "mql");
    free(v);
    v = redis_hget(key, "_created");
    assert_non_null(v);
    free(v);

    /* POST again: an update (200), other attributes kept */
    call("POST", "/v1/leads", OPS,
         "{\"id\":\"ada@example.com\",\"attributes\":{\"title\":\"CTO\"}}", &r);
    expect_status(&r, 200, NULL);
    attrs = json_object_get(r.json, "attributes");
    assert_string_equal(json_string_value(json_object_get(attrs, "first_name")), "Ada");
    assert_string_equal(json_string_value(json_object_get(attrs, "title")), "CTO");
    nt_test_resp_fini(&r);

    /* PATCH */
    call("PATCH", "/v1/leads/ada@example.com", OPS, "{\"score\":12,\"stage\":\"sal\"}", &r);
    expect_status(&r, 200, NULL);
    assert_int_equal(json_integer_value(json_object_get(r.json, "score")), 12);
    assert_string_equal(json_string_value(json_object_get(r.json, "stage")), "sal");
    nt_test_resp_fini(&r);

    /* PATCH of an unknown lead: 404, nothing created */
    call("PATCH", "/v1/leads/nobody", OPS, "{\"score\":1}", &r);
    expect_status(&r, 404, "not_found");
    nt_test_resp_fini(&r);
    assert_int_equal(key_exists(lead_key(key, "nobody")), 0);

    /* GET, as ops and as a rep */
    call("GET", "/v1/leads/ada@example.com", REP, NULL, &r);
    expect_status(&r, 200, NULL);
    assert_int_equal(json_integer_value(json_object_get(r.json, "score")), 12);
    assert_true(json_is_array(json_object_get(r.json, "runs")));
    assert_true(json_is_array(json_object_get(r.json, "timeline")));
    nt_test_resp_fini(&r);

    call("GET", "/v1/leads/ghost", OPS, NULL, &r);
    expect_status(&r, 404, "not_found");
    nt_test_resp_fini(&r);
}

static void test_api_enrol_then_conflict_and_entry_filter(void **state)
{
    (void)state;
    char key[NT_KEY_MAX];
    nt_test_resp_t r;

    publish("api_basic", NULL, &r);
    expect_status(&r, 201, NULL);
    nt_test_resp_fini(&r);

    create_lead("{\"id\":\"eng-1\",\"attributes\":{\"role\":\"engineer\"}}");
    create_lead("{\"id\":\"sales-1\",\"attributes\":{\"role\":\"sales\"}}");

    call("POST", "/v1/leads/eng-1/enrol", OPS, "{\"plan\":\"api_basic\"}", &r);
    expect_status(&r, 202, NULL);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "enrolled");
    assert_string_equal(json_string_value(json_object_get(r.json, "plan")), "api_basic");
    assert_int_equal(json_integer_value(json_object_get(r.json, "version")), 1);
    nt_test_resp_fini(&r);

    run_key(key, "eng-1", "api_basic");
    char *s = redis_hget(key, "s");
    assert_string_equal(s, "a");
    free(s);
    s = redis_hget(key, "v");
    assert_string_equal(s, "1");
    free(s);
    s = redis_hget(lead_key(key, "eng-1"), "r:api_basic");
    assert_string_equal(s, "a");
    free(s);

    /* twice: 409, the run untouched */
    run_key(key, "eng-1", "api_basic");
    char *t_before = redis_hget(key, "t");
    call("POST", "/v1/leads/eng-1/enrol", OPS, "{\"plan\":\"api_basic\"}", &r);
    expect_status(&r, 409, "conflict");
    nt_test_resp_fini(&r);
    char *t_after = redis_hget(key, "t");
    assert_string_equal(t_before, t_after);
    free(t_before);
    free(t_after);

    /* entry filter: 422 not_eligible, no run */
    call("POST", "/v1/leads/sales-1/enrol", OPS, "{\"plan\":\"api_basic\"}", &r);
    expect_status(&r, 422, "not_eligible");
    expect_message(&r, "entry filter");
    nt_test_resp_fini(&r);
    assert_int_equal(key_exists(run_key(key, "sales-1", "api_basic")), 0);

    /* unknown lead, unknown plan */
    call("POST", "/v1/leads/ghost/enrol", OPS, "{\"plan\":\"api_basic\"}", &r);
    expect_status(&r, 404, "not_found");
    nt_test_resp_fini(&r);
    assert_int_equal(key_exists(lead_key(key, "ghost")), 0);
    call("POST", "/v1/leads/eng-1/enrol", OPS, "{\"plan\":\"no_such_plan\"}", &r);
    expect_status(&r, 404, "not_found");
    nt_test_resp_fini(&r);
    assert_int_equal(key_exists(run_key(key, "eng-1", "no_such_plan")), 0);

    /* the lead shows its run and, once the run has taken its first step (which writes it),
     * the enrolment on its timeline */
    assert_int_equal(nt_test_wait_until(timeline_has_enrolment, "eng-1", 10000), 0);
    call("GET", "/v1/leads/eng-1", OPS, NULL, &r);
    expect_status(&r, 200, NULL);
    json_t *runs = json_object_get(r.json, "runs");
    assert_int_equal(json_array_size(runs), 1);
    json_t *run = json_array_get(runs, 0);
    assert_string_equal(json_string_value(json_object_get(run, "plan")), "api_basic");
    assert_string_equal(json_string_value(json_object_get(run, "status")), "active");
    assert_int_equal(json_integer_value(json_object_get(run, "version")), 1);
    json_t *tl = json_object_get(r.json, "timeline");
    int found = 0;
    for (size_t i = 0; i < json_array_size(tl); i++) {
        const char *text = json_string_value(json_object_get(json_array_get(tl, i), "text"));
        if (text && strstr(text, "enrolled in api_basic v1"))
            found = 1;
    }
    assert_true(found);
    nt_test_resp_fini(&r);
}

static void test_api_update_of_enrolled_lead_posts_event(void **state)
{
    (void)state;
    char key[NT_KEY_MAX];
    nt_test_resp_t r;
    create_lead("{\"id\":\"eng-2\",\"attributes\":{\"role\":\"engineer\"}}");
    call("POST", "/v1/leads/eng-2/enrol", OPS, "{\"plan\":\"api_basic\"}", &r);
    expect_status(&r, 202, NULL);
    nt_test_resp_fini(&r);

    /* The worker consumes and trims events, so look for ours with a consumer-independent
     * XRANGE right after the write, or accept that the worker already consumed it. */
    events_key(key, "eng-2");
    redisReply *x = redisCommand(env.rc, "XREVRANGE %s + - COUNT 1", key);
    assert_non_null(x);
    char last[64] = "0-0";
    if (x->type == REDIS_REPLY_ARRAY && x->elements == 1)
        snprintf(last, sizeof(last), "%s", x->element[0]->element[0]->str);
    freeReplyObject(x);

    call("PATCH", "/v1/leads/eng-2", OPS, "{\"attributes\":{\"title\":\"Lead dev\"}}", &r);
    expect_status(&r, 200, NULL);
    nt_test_resp_fini(&r);
    x = redisCommand(env.rc, "XRANGE %s (%s +", key, last);
    assert_non_null(x);
    int found = 0;
    for (size_t i = 0; x->type == REDIS_REPLY_ARRAY && i < x->elements; i++) {
        redisReply *f = x->element[i]->element[1];
        if (f->elements >= 8 && strcmp(f->element[1]->str, "eng-2") == 0 &&
            strcmp(f->element[3]->str, "lead.updated") == 0)
            found = 1;
    }
    freeReplyObject(x);
    /* Either still in the stream, or consumed: then the worker saw it (events_applied). */
    if (!found) {
        nt_test_resp_t m;
        call("GET", "/metrics", OPS, NULL, &m);
        expect_status(&m, 200, NULL);
        assert_non_null(strstr(m.body, "events_applied"));
        nt_test_resp_fini(&m);
    }
}

static void test_api_events_accepted_and_unknown_lead(void **state)
{
    (void)state;
    char key[NT_KEY_MAX];
    nt_test_resp_t r;
    create_lead("{\"id\":\"ev-1\"}");

    call("POST", "/v1/events", WEBHOOK,
         "{\"lead\":\"ev-1\",\"type\":\"webinar.registered\",\"attributes\":{\"webinar\":\"w1\"},"
         "\"machine\":false}",
         &r);
    expect_status(&r, 202, NULL);
    const char *id = json_string_value(json_object_get(r.json, "id"));
    assert_non_null(id);
    assert_non_null(strchr(id, '-'));
    nt_test_resp_fini(&r);

    /* a lead with no active run: the worker leaves its partition's stream alone long enough to
     * see the entry, or has trimmed it; the reply's stream id is the proof either way */
    call("POST", "/v1/events", REP, "{\"lead\":\"ev-1\",\"type\":\"call.logged\"}", &r);
    expect_status(&r, 202, NULL);
    nt_test_resp_fini(&r);

    long long before = events_total();
    call("POST", "/v1/events", OPS, "{\"lead\":\"ghost-2\",\"type\":\"email.opened\"}", &r);
    expect_status(&r, 404, "not_found");
    nt_test_resp_fini(&r);
    assert_true(events_total() <= before);
    assert_int_equal(key_exists(lead_key(key, "ghost-2")), 0);
}

static void test_api_bulk_enrol_reports_skipped(void **state)
{
    (void)state;
    char key[NT_KEY_MAX];
    nt_test_resp_t r;
    call("POST", "/v1/plans/api_basic/enrol", OPS,
         "{\"leads\":[{\"id\":\"bulk-1\",\"attributes\":{\"role\":\"engineer\"}},"
         "{\"id\":\"bulk-2\",\"attributes\":{\"role\":\"marketing\"}},"
         "{\"id\":\"bulk-3\",\"attributes\":{\"role\":\"engineer\"},\"score\":3},"
         "{\"id\":\"eng-1\"}]}",
         &r);
    expect_status(&r, 200, NULL);
    assert_int_equal(json_integer_value(json_object_get(r.json, "enrolled")), 2);
    json_t *sk = json_object_get(r.json, "skipped");
    assert_int_equal(json_array_size(sk), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(sk, 0), "id")), "bulk-2");
    assert_string_equal(json_string_value(json_object_get(json_array_get(sk, 1), "id")), "eng-1");
    nt_test_resp_fini(&r);
    /* every lead was created or updated; only the eligible ones have runs */
    assert_int_equal(key_exists(lead_key(key, "bulk-2")), 1);
    assert_int_equal(key_exists(run_key(key, "bulk-1", "api_basic")), 1);
    assert_int_equal(key_exists(run_key(key, "bulk-2", "api_basic")), 0);
    char *s = redis_hget(lead_key(key, "bulk-3"), "_score");
    assert_string_equal(s, "3");
    free(s);

    /* a bad lead object anywhere: 400 naming it, nothing written */
    call("POST", "/v1/plans/api_basic/enrol", OPS,
         "{\"leads\":[{\"id\":\"bulk-4\"},{\"id\":\"bulk-5\",\"score\":\"high\"}]}", &r);
    expect_status(&r, 400, "bad_request");
    expect_message(&r, "leads[1].score");
    nt_test_resp_fini(&r);
    assert_int_equal(key_exists(lead_key(key, "bulk-4")), 0);

    call("POST", "/v1/plans/no_plan/enrol", OPS, "{\"leads\":[{\"id\":\"bulk-6\"}]}", &r);
    expect_status(&r, 404, "not_found");
    nt_test_resp_fini(&r);
    assert_int_equal(key_exists(lead_key(key, "bulk-6")), 0);
}

/* The sum over all partitions of a field of the plan's stats hashes. */
static long long stats_sum(const char *plan, const char *field)
{
    char key[NT_KEY_MAX], what[NT_KEY_MAX];
    snprintf(what, sizeof(what), "stats:%s", plan);
    long long n = 0;
    for (unsigned p = 0; p < API_PARTITIONS; p++)
        n += redis_int("HGET %s %s", nt_key_part(key, p, what), field);
    return n;
}

static void test_api_bulk_enrol_2000_leads_over_all_partitions(void **state)
{
    (void)state;
    enum { N = 2000 };
    char key[NT_KEY_MAX], id[64];
    nt_test_resp_t r;
    /* existing leads: one already active in the plan, one whose stored role fails the entry
     * filter, one whose stored role fails it but the request's passes */
    create_lead("{\"id\":\"many-active\",\"attributes\":{\"role\":\"engineer\"}}");
    call("POST", "/v1/leads/many-active/enrol", OPS, "{\"plan\":\"api_basic\"}", &r);
    expect_status(&r, 202, NULL);
    nt_test_resp_fini(&r);
    create_lead("{\"id\":\"many-sales\",\"attributes\":{\"role\":\"sales\"},\"score\":4}");
    create_lead("{\"id\":\"many-convert\",\"attributes\":{\"role\":\"sales\",\"city\":\"Oslo\"}}");
    char *t_active = redis_hget(run_key(key, "many-active", "api_basic"), "t");
    long long enrolled0 = stats_sum("api_basic", "1:enrolled");
    long long active0 = stats_sum("api_basic", "1:active");

    /* leads 0..N-1: many-active, many-sales, many-convert, many-7 twice, the rest new */
    json_t *leads = json_array();
    unsigned char seen[API_PARTITIONS] = {0};
    for (int i = 0; i < N; i++) {
        json_t *o;
        if (i == 0) {
            o = json_pack("{s:s,s:{s:s}}", "id", "many-active", "attributes", "title", "CTO");
        } else if (i == 1) {
            o = json_pack("{s:s,s:{s:s},s:s}", "id", "many-sales", "attributes", "tier", "b",
                          "stage", "mql");
        } else if (i == 2) {
            o = json_pack("{s:s,s:{s:s}}", "id", "many-convert", "attributes", "role", "engineer");
        } else if (i == 1500) {
            o = json_pack("{s:s,s:{s:s}}", "id", "many-7", "attributes", "role", "engineer");
        } else {
            snprintf(id, sizeof(id), "many-%d", i);
            o = json_pack("{s:s,s:{s:s,s:i},s:i}", "id", id, "attributes", "role", "engineer", "n",
                          i, "score", i % 10);
        }
        seen[nt_partition(json_string_value(json_object_get(o, "id")), API_PARTITIONS)] = 1;
        json_array_append_new(leads, o);
    }
    for (unsigned p = 0; p < API_PARTITIONS; p++)
        assert_true(seen[p]); /* the request spans every partition */
    json_t *body = json_pack("{s:o}", "leads", leads);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    call("POST", "/v1/plans/api_basic/enrol", OPS, text, &r);
    free(text);
    expect_status(&r, 200, NULL);

    /* enrolled: all but many-active (conflict), many-sales (not_eligible) and the second many-7
     * (conflict with the first, earlier in the same request) */
    assert_int_equal(json_integer_value(json_object_get(r.json, "enrolled")), N - 3);
    json_t *sk = json_object_get(r.json, "skipped");
    assert_int_equal(json_array_size(sk), 3);
    const char *want[][2] = {
        {"many-active", "conflict"}, {"many-sales", "not_eligible"}, {"many-7", "conflict"}};
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(sk, i);
        assert_string_equal(json_string_value(json_object_get(e, "id")), want[i][0]);
        assert_string_equal(json_string_value(json_object_get(e, "reason")), want[i][1]);
        assert_non_null(json_string_value(json_object_get(e, "message")));
    }
    nt_test_resp_fini(&r);

    /* the funnel counters, summed once per script call */
    assert_int_equal(stats_sum("api_basic", "1:enrolled") - enrolled0, N - 3);
    assert_int_equal(stats_sum("api_basic", "1:active") - active0, N - 3);

    /* the conflicting run is untouched, its lead updated */
    char *v = redis_hget(run_key(key, "many-active", "api_basic"), "t");
    assert_string_equal(v, t_active);
    free(v);
    free(t_active);
    v = redis_hget(lead_key(key, "many-active"), "title");
    assert_string_equal(v, "CTO");
    free(v);

    /* not eligible: upserted, no run, no mark */
    v = redis_hget(lead_key(key, "many-sales"), "tier");
    assert_string_equal(v, "b");
    free(v);
    v = redis_hget(lead_key(key, "many-sales"), "_stage");
    assert_string_equal(v, "mql");
    free(v);
    v = redis_hget(lead_key(key, "many-sales"), "_score");
    assert_string_equal(v, "4");
    free(v);
    assert_int_equal(key_exists(run_key(key, "many-sales", "api_basic")), 0);
    assert_null(redis_hget(lead_key(key, "many-sales"), "r:api_basic"));

    /* eligible through the request's attributes, stored ones kept */
    v = redis_hget(lead_key(key, "many-convert"), "city");
    assert_string_equal(v, "Oslo");
    free(v);
    v = redis_hget(run_key(key, "many-convert", "api_basic"), "s");
    assert_string_equal(v, "a");
    free(v);

    /* a few new leads: the lead hash, the run hash, the timer and the timeline */
    static const int sample[] = {3, 999, 1999};
    for (size_t i = 0; i < sizeof(sample) / sizeof(sample[0]); i++) {
        snprintf(id, sizeof(id), "many-%d", sample[i]);
        char num[16];
        snprintf(num, sizeof(num), "%d", sample[i]);
        lead_key(key, id);
        v = redis_hget(key, "n");
        assert_string_equal(v, num);
        free(v);
        v = redis_hget(key, "role");
        assert_string_equal(v, "engineer");
        free(v);
        snprintf(num, sizeof(num), "%d", sample[i] % 10);
        v = redis_hget(key, "_score");
        assert_string_equal(v, num);
        free(v);
        v = redis_hget(key, "r:api_basic");
        assert_string_equal(v, "a");
        free(v);
        v = redis_hget(key, "_created");
        assert_non_null(v);
        free(v);

        run_key(key, id, "api_basic");
        /* the worker may already have moved the run on to its wait: t, n, ne and d with it */
        static const char *const fields[] = {"e", "er", "ne", "d", "t", "vi", "n"};
        for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
            v = redis_hget(key, fields[f]);
            assert_non_null(v);
            free(v);
        }
        v = redis_hget(key, "v");
        assert_string_equal(v, "1");
        free(v);
        v = redis_hget(key, "s");
        assert_string_equal(v, "a");
        free(v);

        unsigned p = nt_partition(id, API_PARTITIONS);
        redisReply *x =
            redisCommand(env.rc, "ZSCORE %s %s|api_basic", nt_key_part(key, p, "timers"), id);
        assert_non_null(x);
        assert_int_equal(x->type, REDIS_REPLY_STRING);
        freeReplyObject(x);

        assert_int_equal(nt_test_wait_until(timeline_has_enrolment, (void *)id, 10000), 0);
        x = redisCommand(env.rc, "GET %s", nt_key_hist(key, p, id));
        assert_non_null(x);
        assert_int_equal(x->type, REDIS_REPLY_STRING);
        assert_non_null(strstr(x->str, "|step|enrolled in api_basic v1"));
        freeReplyObject(x);
    }
}

static void test_api_hostile_long_id_writes_nothing(void **state)
{
    (void)state;
    size_t n = 10 * 1024;
    char *body = malloc(n + 64);
    int k = snprintf(body, n + 64, "{\"id\":\"");
    memset(body + k, 'a', n);
    snprintf(body + k + n, 64, "\",\"attributes\":{\"role\":\"x\"}}");
    nt_test_resp_t r;
    call("POST", "/v1/leads", OPS, body, &r);
    expect_status(&r, 400, "bad_request");
    expect_message(&r, "'id'");
    assert_true(r.len < 1024); /* the id is not echoed back */
    nt_test_resp_fini(&r);
    free(body);
    /* No key names the hostile id. (Counting all keys would race with the worker, which is
     * still taking the first steps of the runs enrolled by the tests before.) */
    redisReply *x = redisCommand(env.rc, "KEYS *aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa*");
    assert_non_null(x);
    assert_int_equal(x->type, REDIS_REPLY_ARRAY);
    assert_int_equal(x->elements, 0);
    freeReplyObject(x);
}

/* A bulk body of n leads prefix-0 .. prefix-(n-1), each with a 100-byte note so that the body
 * is well past the server's big-body size (256 KB); broken: the JSON is cut short. */
static char *big_body(const char *prefix, int n, int broken)
{
    char note[101];
    memset(note, 'x', 100);
    note[100] = '\0';
    json_t *leads = json_array();
    for (int i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof(id), "%s-%d", prefix, i);
        json_array_append_new(leads, json_pack("{s:s,s:{s:s,s:s}}", "id", id, "attributes", "role",
                                               "engineer", "note", note));
    }
    json_t *body = json_pack("{s:o}", "leads", leads);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (broken)
        text[strlen(text) - 2] = '\0';
    return text;
}

/* Open a connection to nurtured and write a whole POST of body to path on it. */
static int post_raw(const char *path, const char *body)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)env.daemon.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char head[512];
    size_t blen = strlen(body);
    int hl = snprintf(head, sizeof(head),
                      "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      path, OPS, blen);
    assert_int_equal(write(fd, head, (size_t)hl), hl);
    for (size_t off = 0; off < blen;) {
        ssize_t w = write(fd, body + off, blen - off);
        assert_true(w > 0);
        off += (size_t)w;
    }
    return fd;
}

/* Read the whole response on fd (the server closes it) and return its status; the body
 * (after the blank line) in *json. */
static int read_raw(int fd, json_t **json)
{
    char *buf = NULL;
    size_t len = 0;
    char chunk[4096];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
        buf = realloc(buf, len + (size_t)n + 1);
        assert_non_null(buf);
        memcpy(buf + len, chunk, (size_t)n);
        len += (size_t)n;
        buf[len] = '\0';
    }
    close(fd);
    int status = 0;
    assert_non_null(buf);
    assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &status), 1);
    char *b = strstr(buf, "\r\n\r\n");
    *json = b ? json_loads(b + 4, 0, NULL) : NULL;
    free(buf);
    return status;
}

/* nurtured's /metrics shows n big bodies waiting (it answers without Redis). */
static int big_waiting_is(long n)
{
    nt_test_resp_t r;
    char line[64];
    int ok = 0;
    snprintf(line, sizeof(line), "\nnt_http_big_bodies_waiting %ld\n", n);
    if (nt_test_json(&env.daemon, "GET", "/metrics", OPS, NULL, &r) == 0 && r.status == 200)
        ok = r.body && strstr(r.body, line) != NULL;
    nt_test_resp_fini(&r);
    return ok;
}

static int four_waiting(void *arg)
{
    (void)arg;
    return big_waiting_is(4);
}

/* Bulk bodies past 256 KB are parsed and served one at a time, in arrival order, so a few
 * clients at once cannot multiply nurtured's memory: with Redis held still, one is served and
 * four wait (shown at /metrics); then all succeed, one whose client left while it waited is
 * served without harm, a malformed one in the queue gets its 400 and writes nothing. */
static void test_api_bulk_enrol_big_bodies_in_turn(void **state)
{
    (void)state;
    enum { N = 3000 };
    char key[NT_KEY_MAX], id[64];
    char *a = big_body("turn-a", N, 0), *gone = big_body("turn-gone", N, 0);
    char *b = big_body("turn-b", N, 0), *bad = big_body("turn-bad", N, 1);
    char *c = big_body("turn-c", N, 0);
    assert_true(strlen(a) > 256 * 1024 && strlen(a) < 1048576);

    /* Redis stopped: a is parsed and its scripts wait in nurtured; the others must queue. */
    kill(env.redis.pid, SIGSTOP);
    int fa = post_raw("/v1/plans/api_basic/enrol", a);
    int fgone = post_raw("/v1/plans/api_basic/enrol", gone);
    int fb = post_raw("/v1/plans/api_basic/enrol", b);
    int fbad = post_raw("/v1/plans/api_basic/enrol", bad);
    int fc = post_raw("/v1/plans/api_basic/enrol", c);
    assert_int_equal(nt_test_wait_until(four_waiting, NULL, 10000), 0);
    /* This client leaves while its request waits behind a's. Its request is whole, so it is
     * still served in its turn, as one already being worked on would be. */
    close(fgone);
    kill(env.redis.pid, SIGCONT);

    const char *prefix[] = {"turn-a", "turn-b", "turn-c"};
    int fds[] = {fa, fb, fc};
    for (int k = 0; k < 3; k++) {
        json_t *j = NULL;
        assert_int_equal(read_raw(fds[k], &j), 200);
        assert_int_equal(json_integer_value(json_object_get(j, "enrolled")), N);
        json_decref(j);
        snprintf(id, sizeof(id), "%s-%d", prefix[k], 0);
        assert_int_equal(key_exists(run_key(key, id, "api_basic")), 1);
        snprintf(id, sizeof(id), "%s-%d", prefix[k], N - 1);
        assert_int_equal(key_exists(run_key(key, id, "api_basic")), 1);
    }
    json_t *j = NULL;
    assert_int_equal(read_raw(fbad, &j), 400);
    const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    assert_non_null(code);
    assert_string_equal(code, "bad_json");
    json_decref(j);
    assert_int_equal(key_exists(lead_key(key, "turn-bad-0")), 0);

    assert_int_equal(key_exists(run_key(key, "turn-gone-0", "api_basic")), 1);
    assert_true(big_waiting_is(0));

    /* the server is still whole and serves the next big body at once: sent again, every lead
     * of the request whose client left is a conflict */
    nt_test_resp_t r;
    call("POST", "/v1/plans/api_basic/enrol", OPS, gone, &r);
    expect_status(&r, 200, NULL);
    assert_int_equal(json_integer_value(json_object_get(r.json, "enrolled")), 0);
    assert_int_equal(json_array_size(json_object_get(r.json, "skipped")), N);
    nt_test_resp_fini(&r);
    free(a);
    free(gone);
    free(b);
    free(bad);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_lead_create_update_get),
        cmocka_unit_test(test_api_enrol_then_conflict_and_entry_filter),
        cmocka_unit_test(test_api_update_of_enrolled_lead_posts_event),
        cmocka_unit_test(test_api_events_accepted_and_unknown_lead),
        cmocka_unit_test(test_api_bulk_enrol_reports_skipped),
        cmocka_unit_test(test_api_bulk_enrol_2000_leads_over_all_partitions),
        cmocka_unit_test(test_api_bulk_enrol_big_bodies_in_turn),
        cmocka_unit_test(test_api_hostile_long_id_writes_nothing),
    };
    return cmocka_run_group_tests(tests, setup, api_teardown);
}
