/* The call task store (orchestrator/tasks.c) against a real redis-server: a task is created once
 * per message id however often it is dispatched; team routing is weighted round-robin, skips
 * reps out of office or at their cap, and queues the task when nobody can take it; the lead's
 * owner wins over the team; due times land in the owner's working hours. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "clock.h"
#include "config.h"
#include "harness.h"
#include "keys.h"
#include "log.h"
#include "lua_scripts.h"
#include "redis.h"
#include "tasks.h"
#include "tz.h"

static nt_test_redis_t srv;
static redisContext *sync_rc;
static struct event_base *base;
static nt_redis_t *redis;
static nt_config_t cfg;
static nt_tasks_t *tasks;

typedef struct done_rec {
    int calls;
    nt_rc_t rc;
    char outcome[64];
    char detail[256];
} done_rec_t;

static void on_done(void *arg, nt_rc_t rc, const char *outcome, const char *detail)
{
    done_rec_t *d = arg;

    d->calls++;
    d->rc = rc;
    snprintf(d->outcome, sizeof(d->outcome), "%s", outcome ? outcome : "");
    snprintf(d->detail, sizeof(d->detail), "%s", detail ? detail : "");
}

static void run_until(int *flag, int want)
{
    int64_t until = nt_mono_ms() + 10000;

    while (*flag < want && nt_mono_ms() < until)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_true(*flag >= want);
}

static void set(const char *key, const char *value)
{
    char *err = NULL;

    if (nt_config_set(&cfg, key, value, &err) != 0)
        fail_msg("%s: %s", key, err ? err : "?");
}

static int setup(void **state)
{
    char *err = NULL;

    (void)state;
    if (nt_test_loop_start(&srv, &sync_rc, &base, &redis) != 0)
        return -1;
    nt_config_defaults(&cfg);
    set("channel.call.team.sales", "ann:2 bob:1 cy:1");
    set("channel.call.team.tiny", "dee");
    set("channel.call.rep.dee", "cap=1");
    set("channel.call.rep.ann", "tz=America/New_York hours=09:00-17:00 days=12345");
    set("channel.call.sla_check_ms", "3600000");
    {
        nt_tasks_deps_t d = {base, &cfg, redis, NULL};

        tasks = nt_tasks_new(&d, &err);
    }
    if (!tasks) {
        fprintf(stderr, "tasks: %s\n", err ? err : "?");
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nt_tasks_free(tasks);
    nt_config_fini(&cfg);
    nt_test_loop_stop(&srv, sync_rc, base, redis);
    return 0;
}

/* Create the task of message <lead>:p:call:<visit> for a lead with the given owner (or none);
 * returns the owner Redis recorded ("" for the queue), malloc'd. */
static char *create(const char *lead, unsigned visit, const char *owner, const char *team,
                    done_rec_t *d)
{
    char id[128], k[NT_KEY_MAX];
    nt_kv_t lead_kv[2] = {{"score", "72"}, {"owner", owner}};
    nt_kv_t f[4] = {{"reason", "why"}, {"due_in_ms", "3600000"}, {"sla_ms", "86400000"},
                    {"team", team}};
    nt_message_t m = {0};
    redisReply *x;
    char *out;
    int want = d->calls + 1;

    snprintf(id, sizeof(id), "%s:p:call:%u", lead, visit);
    m.id = id;
    m.lead_id = lead;
    m.plan_id = "p";
    m.node_id = "call";
    m.visit = visit;
    m.lead = lead_kv;
    m.nlead = owner ? 2 : 1;
    assert_int_equal(nt_tasks_create(tasks, &m, f, 4, on_done, d), NT_AGAIN);
    run_until(&d->calls, want);
    assert_int_equal(d->rc, NT_OK);
    assert_string_equal(d->outcome, "task_created");
    x = redisCommand(sync_rc, "HGET %s owner",
                     nt_tasks_key_task(k, nt_tasks_partition(tasks, id), id));
    assert_non_null(x);
    out = strdup(x->type == REDIS_REPLY_STRING ? x->str : "?");
    freeReplyObject(x);
    return out;
}

static long long rep_open(const char *rep)
{
    char k[NT_KEY_MAX];
    redisReply *x = redisCommand(sync_rc, "HGET %s open", nt_tasks_key_rep(k, rep));
    long long v = x && x->type == REDIS_REPLY_STRING ? atoll(x->str) : 0;

    freeReplyObject(x);
    return v;
}

static void test_call_store_second_dispatch_of_a_message_creates_no_second_task(void **state)
{
    done_rec_t d = {0};
    char *o1, *o2, k[NT_KEY_MAX];
    redisReply *x;

    (void)state;
    o1 = create("twice", 1, "zed", "sales", &d);
    o2 = create("twice", 1, "zed", "sales", &d);
    assert_string_equal(o1, "zed");
    assert_string_equal(o2, "zed");
    assert_non_null(strstr(d.detail, "already"));
    assert_int_equal(rep_open("zed"), 1);
    x = redisCommand(sync_rc, "ZCARD %s",
                     nt_tasks_key_set(k, nt_partition("twice", cfg.partitions), "rep", "zed"));
    assert_int_equal(x->integer, 1);
    freeReplyObject(x);
    free(o1);
    free(o2);
}

static void test_call_store_team_is_weighted_round_robin_skipping_out_of_office(void **state)
{
    done_rec_t d = {0};
    int ann = 0, bob = 0, cy = 0;
    char name[32];

    (void)state;
    for (unsigned i = 0; i < 8; i++) {
        char *o;

        snprintf(name, sizeof(name), "rr-%u", i);
        o = create(name, 1, NULL, "sales", &d);
        ann += strcmp(o, "ann") == 0;
        bob += strcmp(o, "bob") == 0;
        cy += strcmp(o, "cy") == 0;
        free(o);
    }
    assert_int_equal(ann, 4);
    assert_int_equal(bob, 2);
    assert_int_equal(cy, 2);

    freeReplyObject(redisCommand(sync_rc, "HSET nt:rep:{ann} ooo 1"));
    for (unsigned i = 0; i < 4; i++) {
        char *o;

        snprintf(name, sizeof(name), "ooo-%u", i);
        o = create(name, 1, NULL, "sales", &d);
        assert_string_not_equal(o, "ann");
        free(o);
    }
    freeReplyObject(redisCommand(sync_rc, "HSET nt:rep:{ann} ooo 0"));
}

static void test_call_store_queues_when_no_rep_has_capacity(void **state)
{
    done_rec_t d = {0};
    char *o1, *o2, k[NT_KEY_MAX];
    redisReply *x;

    (void)state;
    o1 = create("cap-1", 1, NULL, "tiny", &d);
    o2 = create("cap-2", 1, NULL, "tiny", &d);
    assert_string_equal(o1, "dee");
    assert_string_equal(o2, "");
    assert_non_null(strstr(d.detail, "queued"));
    x = redisCommand(sync_rc, "ZSCORE %s cap-2:p:call:1",
                     nt_tasks_key_set(k, nt_partition("cap-2", cfg.partitions), "team", "tiny"));
    assert_int_equal(x->type, REDIS_REPLY_STRING);
    freeReplyObject(x);
    free(o1);
    free(o2);
}

static void test_call_store_owner_due_time_in_working_hours(void **state)
{
    done_rec_t d = {0};
    char *o, k[NT_KEY_MAX];
    const char *id = "hours:p:call:1";
    redisReply *x;
    int64_t due, in;

    (void)state;
    o = create("hours", 1, "ann", "sales", &d);
    assert_string_equal(o, "ann");
    free(o);
    x = redisCommand(sync_rc, "HGET %s due",
                     nt_tasks_key_task(k, nt_tasks_partition(tasks, id), id));
    due = atoll(x->str);
    freeReplyObject(x);
    /* At least the hour asked for, and inside 09:00-17:00 Monday to Friday in New York. */
    assert_true(due >= nt_now_ms() + 3600000 - 60000);
    assert_int_equal(nt_tz_next_window("America/New_York", due, 9 * 60, 17 * 60, 0x3e, &in),
                     NT_OK);
    assert_int_equal(in, due);
}

/* ---- the manager webhook's notifications (hook_claim.lua, hook_done.lua) ---- */

#define HOOKS "nt:{5}:tasks:hooks"

/* Run script name (orchestrator/lua) with EVAL: as a second process would. */
static redisReply *eval(const char *name, int nkeys, const char *const *args, int nargs)
{
    const char *argv[16];
    char nk[8];
    const char *src = NULL;
    redisReply *x;

    for (size_t i = 0; i < nt_lua_nscripts; i++)
        if (strcmp(nt_lua_scripts[i].name, name) == 0)
            src = nt_lua_scripts[i].source;
    assert_non_null(src);
    assert_true(nargs + 3 <= 16);
    snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[0] = "EVAL";
    argv[1] = src;
    argv[2] = nk;
    for (int i = 0; i < nargs; i++)
        argv[3 + i] = args[i];
    x = redisCommandArgv(sync_rc, nargs + 3, argv, NULL);
    assert_non_null(x);
    if (x->type == REDIS_REPLY_ERROR)
        fail_msg("%s: %s", name, x->str);
    return x;
}

/* hook_claim.lua with a lease of lease_ms and 3 attempts at most: how many it claimed; the
 * first one's id and attempt into id (cap 64) and *attempt. */
static size_t claim(const char *lease_ms, char *id, long long *attempt)
{
    const char *a[] = {HOOKS, "10", lease_ms, "3", "100"};
    redisReply *x = eval("hook_claim", 1, a, 5);
    size_t n = x->elements;

    assert_int_equal(x->type, REDIS_REPLY_ARRAY);
    if (n > 0) {
        assert_int_equal(x->element[0]->elements, 3);
        snprintf(id, 64, "%s", x->element[0]->element[0]->str);
        assert_string_equal(x->element[0]->element[1]->str, "{\"event\":\"task.escalated\"}");
        *attempt = x->element[0]->element[2]->integer;
    }
    freeReplyObject(x);
    return n;
}

/* hook_done.lua for attempt of id with outcome: the status it returns ("stale" for {'stale'}). */
static char *answer(const char *id, const char *attempt, const char *outcome)
{
    char key[NT_KEY_MAX];
    const char *a[] = {
        HOOKS, nt_tasks_key_hook(key, 5, id), id, attempt, outcome, "0", "500", "refused", "3",
        "100"};
    redisReply *x = eval("hook_done", 2, a, 10);
    char *st = strdup(x->elements > 1 ? x->element[1]->str : x->element[0]->str);

    freeReplyObject(x);
    return st;
}

static void expect_answer(const char *id, const char *attempt, const char *outcome,
                          const char *want)
{
    char *st = answer(id, attempt, outcome);

    assert_string_equal(st, want);
    free(st);
}

/* A pending notification id, due now, as task_move.lua records it. */
static void pending(const char *id, const char *attempts)
{
    char key[NT_KEY_MAX];

    freeReplyObject(redisCommand(sync_rc, "HSET %s task t body %s status pending attempts %s",
                                 nt_tasks_key_hook(key, 5, id), "{\"event\":\"task.escalated\"}",
                                 attempts));
    freeReplyObject(redisCommand(sync_rc, "ZADD %s 0 %s", HOOKS, id));
}

static char *hook_status(const char *id)
{
    char key[NT_KEY_MAX];
    redisReply *x = redisCommand(sync_rc, "HGET %s status", nt_tasks_key_hook(key, 5, id));
    char *v = strdup(x && x->type == REDIS_REPLY_STRING ? x->str : "(none)");

    freeReplyObject(x);
    return v;
}

static int queued(const char *id)
{
    redisReply *x = redisCommand(sync_rc, "ZSCORE %s %s", HOOKS, id);
    int in = x && x->type != REDIS_REPLY_NIL;

    freeReplyObject(x);
    return in;
}

static void test_call_store_hook_claimed_by_one_process_retried_then_failed(void **state)
{
    char id[64];
    long long att = 0;
    char *st;

    (void)state;
    pending("a:esc", "0");
    assert_int_equal(claim("60000", id, &att), 1);
    assert_string_equal(id, "a:esc");
    assert_int_equal(att, 1);
    /* A second process finds nothing: the first holds it for the lease. */
    assert_int_equal(claim("60000", id, &att), 0);
    /* An answer for another attempt than the one claimed changes nothing. */
    expect_answer("a:esc", "2", "delivered", "stale");
    expect_answer("a:esc", "1", "retry", "pending"); /* due again after 0 ms */
    assert_int_equal(claim("60000", id, &att), 1);
    assert_int_equal(att, 2);
    expect_answer("a:esc", "2", "retry", "pending");
    assert_int_equal(claim("60000", id, &att), 1);
    assert_int_equal(att, 3);
    /* The third of 3 attempts fails: given up, out of the queue, the record kept a while. */
    expect_answer("a:esc", "3", "retry", "failed");
    assert_false(queued("a:esc"));
    assert_int_equal(claim("60000", id, &att), 0);
    st = hook_status("a:esc");
    assert_string_equal(st, "failed");
    free(st);
    {
        char key[NT_KEY_MAX];
        redisReply *x = redisCommand(sync_rc, "TTL %s", nt_tasks_key_hook(key, 5, "a:esc"));

        assert_true(x->integer > 0 && x->integer <= 100);
        freeReplyObject(x);
    }
}

static void test_call_store_hook_delivered_or_dropped_is_finished(void **state)
{
    char id[64];
    long long att = 0;

    (void)state;
    pending("b:esc", "0");
    assert_int_equal(claim("0", id, &att), 1); /* a lease of 0: due again at once */
    expect_answer("b:esc", "1", "delivered", "delivered");
    assert_false(queued("b:esc"));
    /* A late answer of the same attempt (a second process whose lease ran out) is stale. */
    expect_answer("b:esc", "1", "retry", "stale");
    assert_int_equal(claim("0", id, &att), 0);

    pending("c:esc", "0");
    assert_int_equal(claim("0", id, &att), 1);
    expect_answer("c:esc", "1", "drop", "dropped");
    assert_false(queued("c:esc"));
    assert_int_equal(claim("0", id, &att), 0);
}

static void test_call_store_hook_claim_copes_with_odd_records(void **state)
{
    char id[64], key[NT_KEY_MAX];
    long long att = 0;
    char *st;

    (void)state;
    /* Claimed 3 times by processes that all died before answering: failed, not sent a 4th. */
    pending("d:esc", "3");
    /* Queued without a record, or with one that is not pending: left out and unqueued. */
    freeReplyObject(redisCommand(sync_rc, "ZADD %s 0 gone:esc", HOOKS));
    pending("e:esc", "0");
    freeReplyObject(
        redisCommand(sync_rc, "HSET %s status delivered", nt_tasks_key_hook(key, 5, "e:esc")));
    assert_int_equal(claim("60000", id, &att), 0);
    st = hook_status("d:esc");
    assert_string_equal(st, "failed");
    free(st);
    assert_false(queued("d:esc"));
    assert_false(queued("gone:esc"));
    assert_false(queued("e:esc"));
    /* Not due yet: not claimed. */
    pending("f:esc", "0");
    freeReplyObject(redisCommand(sync_rc, "ZADD %s 99999999999999 f:esc", HOOKS));
    assert_int_equal(claim("60000", id, &att), 0);
    assert_true(queued("f:esc"));
}

/* nt_tasks_new refuses a bad manager webhook setting, naming it. */
static void test_call_store_bad_manager_webhook_settings_are_refused(void **state)
{
    static const char *const bad[][2] = {
        {"manager_webhook_retries", "-1"},
        {"manager_webhook_retries", "101"},
        {"manager_webhook_retries", "three"},
        {"manager_webhook_retries", ""},
        {"manager_webhook_retries", "99999999999999999999999999"},
        {"manager_webhook_retries", "5 "},
        {"manager_webhook_backoff_ms", "9"},
        {"manager_webhook_backoff_ms", "0x10"},
        {"manager_webhook_backoff_max_ms", "86400001"},
        {"manager_webhook_timeout_ms", "99"},
        {"manager_webhook_timeout_ms", "300001"},
        {"manager_webhook_secret", "too-short"},
        {"manager_webhook_backoff_max_ms", "50"}, /* below the default backoff_ms, 1000 */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        nt_config_t c;
        char key[96], *err = NULL;
        nt_tasks_deps_t d = {NULL, &c, redis, NULL};
        nt_tasks_t *t;

        nt_config_defaults(&c);
        snprintf(key, sizeof(key), "channel.call.%s", bad[i][0]);
        assert_int_equal(nt_config_set(&c, key, bad[i][1], &err), 0);
        t = nt_tasks_new(&d, &err);
        if (t != NULL)
            fail_msg("%s \"%s\" was accepted", key, bad[i][1]);
        assert_non_null(err);
        if (!strstr(err, bad[i][0]))
            fail_msg("%s \"%s\": the error does not name it: %s", key, bad[i][1], err);
        free(err);
        nt_config_fini(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_store_second_dispatch_of_a_message_creates_no_second_task),
        cmocka_unit_test(test_call_store_team_is_weighted_round_robin_skipping_out_of_office),
        cmocka_unit_test(test_call_store_queues_when_no_rep_has_capacity),
        cmocka_unit_test(test_call_store_owner_due_time_in_working_hours),
        cmocka_unit_test(test_call_store_hook_claimed_by_one_process_retried_then_failed),
        cmocka_unit_test(test_call_store_hook_delivered_or_dropped_is_finished),
        cmocka_unit_test(test_call_store_hook_claim_copes_with_odd_records),
        cmocka_unit_test(test_call_store_bad_manager_webhook_settings_are_refused),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
