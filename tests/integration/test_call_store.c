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
    nt_log_init(NT_LOG_WARN, NULL);
    nt_clock_init(1);
    if (nt_test_redis_start(&srv) != 0)
        return -1;
    sync_rc = nt_test_redis_connect(&srv);
    base = event_base_new();
    redis = nt_test_redis_async(base, &srv);
    if (!redis)
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
    nt_redis_free(redis);
    event_base_free(base);
    nt_config_fini(&cfg);
    if (sync_rc)
        redisFree(sync_rc);
    nt_test_redis_stop(&srv);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_store_second_dispatch_of_a_message_creates_no_second_task),
        cmocka_unit_test(test_call_store_team_is_weighted_round_robin_skipping_out_of_office),
        cmocka_unit_test(test_call_store_queues_when_no_rep_has_capacity),
        cmocka_unit_test(test_call_store_owner_due_time_in_working_hours),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
