/* The lead write behind the plugin host's update_lead (nt_api_lead_update, api_leads.c) against
 * a real redis-server: it writes attributes of an existing lead through lead_put.lua exactly as
 * PATCH /v1/leads/{id} does (lead.updated posted for a lead with an active run, none without),
 * never creates a lead, and refuses what the API refuses (bad lead ids, reserved or malformed
 * names, invalid UTF-8, oversized values, too many pairs) before anything is written, and
 * answers at once while Redis is down. */
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
#include "http.h"
#include "keys.h"
#include "log.h"
#include "redis.h"

static nt_test_redis_t srv;
static redisContext *sync_rc;
static struct event_base *base;
static nt_redis_t *redis;
static nt_config_t cfg;
static nt_http_deps_t deps;

typedef struct rec {
    int calls;
    nt_rc_t rc;
} rec_t;

static void on_done(void *arg, nt_rc_t rc)
{
    rec_t *r = arg;
    r->calls++;
    r->rc = rc;
}

static void run_until_done(rec_t *r)
{
    int64_t until = nt_mono_ms() + 10000;
    while (r->calls == 0 && nt_mono_ms() < until)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(r->calls, 1);
}

static int setup(void **state)
{
    (void)state;
    if (nt_test_loop_start(&srv, &sync_rc, &base, &redis) != 0)
        return -1;
    nt_config_defaults(&cfg);
    deps = (nt_http_deps_t){.base = base, .cfg = &cfg, .redis = redis};
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nt_config_fini(&cfg);
    nt_test_loop_stop(&srv, sync_rc, base, redis);
    return 0;
}

static const char *lead_key(const char *id)
{
    static char key[NT_KEY_MAX];
    return nt_key_lead(key, nt_partition(id, cfg.partitions), id);
}

static long long events_len(const char *id)
{
    char key[NT_KEY_MAX];
    redisReply *x = redisCommand(sync_rc, "XLEN %s",
                                 nt_key_part(key, nt_partition(id, cfg.partitions), "events"));
    long long n = x != NULL && x->type == REDIS_REPLY_INTEGER ? x->integer : -1;
    freeReplyObject(x);
    return n;
}

/* HGET of the lead hash, malloc'd, or NULL. */
static char *hget(const char *id, const char *field)
{
    redisReply *x = redisCommand(sync_rc, "HGET %s %s", lead_key(id), field);
    char *v = x != NULL && x->type == REDIS_REPLY_STRING ? strdup(x->str) : NULL;
    freeReplyObject(x);
    return v;
}

static long long key_count(void)
{
    redisReply *x = redisCommand(sync_rc, "DBSIZE");
    long long n = x != NULL && x->type == REDIS_REPLY_INTEGER ? x->integer : -1;
    freeReplyObject(x);
    return n;
}

static void make_lead(const char *id, int active)
{
    redisReply *x =
        redisCommand(sync_rc, "HSET %s email %s@example.org _created 1 %s %s", lead_key(id), id,
                     active ? "r:webinar_invite" : "x_run", active ? "a" : "none");
    assert_non_null(x);
    freeReplyObject(x);
}

static void test_lead_update_writes_attributes_and_wakes_active_runs(void **state)
{
    const nt_kv_t attrs[] = {{"webinar_id", "product-2026-12-10"},
                             {"webinar_join_link", "https://platform.example/j/1?tk=a%2Fb"}};
    char err[256];
    rec_t r = {0};

    make_lead("lu-1", 1);
    long long before = events_len("lu-1");
    assert_int_equal(nt_api_lead_update(&deps, "lu-1", attrs, 2, on_done, &r, err, sizeof(err)),
                     NT_AGAIN);
    assert_int_equal(r.calls, 0); /* never from inside the call */
    run_until_done(&r);
    assert_int_equal(r.rc, NT_OK);
    char *v = hget("lu-1", "webinar_join_link");
    assert_string_equal(v, "https://platform.example/j/1?tk=a%2Fb");
    free(v);
    v = hget("lu-1", "webinar_id");
    assert_string_equal(v, "product-2026-12-10");
    free(v);
    v = hget("lu-1", "email");
    assert_string_equal(v, "lu-1@example.org"); /* the rest stays */
    free(v);
    /* The lead has an active run: lead.updated, as the API posts it. */
    assert_int_equal(events_len("lu-1"), before + 1);

    /* An empty value is a value (a template's default then applies). */
    const nt_kv_t empty[] = {{"webinar_join_link", ""}};
    memset(&r, 0, sizeof(r));
    make_lead("lu-2", 0);
    before = events_len("lu-2");
    assert_int_equal(nt_api_lead_update(&deps, "lu-2", empty, 1, on_done, &r, err, sizeof(err)),
                     NT_AGAIN);
    run_until_done(&r);
    assert_int_equal(r.rc, NT_OK);
    v = hget("lu-2", "webinar_join_link");
    assert_string_equal(v, "");
    free(v);
    assert_int_equal(events_len("lu-2"), before); /* no active run: no event */
}

static void test_lead_update_never_creates_a_lead(void **state)
{
    const nt_kv_t attrs[] = {{"webinar_join_link", "https://platform.example/j/2"}};
    char err[256];
    rec_t r = {0};
    long long keys = key_count();

    assert_int_equal(
        nt_api_lead_update(&deps, "lu-nobody", attrs, 1, on_done, &r, err, sizeof(err)), NT_AGAIN);
    run_until_done(&r);
    assert_int_equal(r.rc, NT_ENOTFOUND);
    redisReply *x = redisCommand(sync_rc, "EXISTS %s", lead_key("lu-nobody"));
    assert_int_equal(x->integer, 0);
    freeReplyObject(x);
    assert_int_equal(key_count(), keys);
}

static void test_lead_update_refuses_what_the_api_refuses_and_writes_nothing(void **state)
{
    size_t big = 65537;
    char *huge = malloc(big + 1);
    memset(huge, 'x', big);
    huge[big] = '\0';
    nt_kv_t *many = calloc(1001, sizeof(*many));
    char(*names)[16] = calloc(1001, sizeof(*names));
    for (size_t i = 0; i < 1001; i++) {
        snprintf(names[i], sizeof(names[i]), "a%zu", i);
        many[i] = (nt_kv_t){names[i], "v"};
    }
    struct {
        const char *lead;
        nt_kv_t kv;
        const nt_kv_t *list;
        size_t n;
        const char *says;
    } bad[] = {
        {"bad id", {"a", "v"}, NULL, 1, "lead id"},
        {"", {"a", "v"}, NULL, 1, "lead id"},
        {"lu-3\r\nX", {"a", "v"}, NULL, 1, "lead id"},
        {"lu-3", {"_score", "1000"}, NULL, 1, "not valid"},
        {"lu-3", {"r:webinar_invite", "d"}, NULL, 1, "not valid"},
        {"lu-3", {"Webinar", "v"}, NULL, 1, "not valid"},
        {"lu-3", {"", "v"}, NULL, 1, "not valid"},
        {"lu-3", {"a\r\nb", "v"}, NULL, 1, "not valid"},
        {"lu-3", {"webinar_join_link", "https://x.example/\xff\xfe"}, NULL, 1, "UTF-8"},
        {"lu-3", {"webinar_join_link", NULL}, NULL, 1, "no value"},
        {"lu-3", {"webinar_join_link", huge}, NULL, 1, "longer than"},
        {"lu-3", {NULL, NULL}, many, 1001, "more than 1000"},
    };
    make_lead("lu-3", 1);
    redisReply *x = redisCommand(sync_rc, "DUMP %s", lead_key("lu-3"));
    assert_non_null(x);
    long long events = events_len("lu-3");

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[256] = "";
        rec_t r = {0};
        const nt_kv_t *list = bad[i].list != NULL ? bad[i].list : &bad[i].kv;
        nt_rc_t rc =
            nt_api_lead_update(&deps, bad[i].lead, list, bad[i].n, on_done, &r, err, sizeof(err));
        if (rc != NT_EINVAL)
            fail_msg("case %zu: rc %d, not EINVAL", i, (int)rc);
        if (strstr(err, bad[i].says) == NULL)
            fail_msg("case %zu: '%s' does not say '%s'", i, err, bad[i].says);
        /* done never fires for a refusal */
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        assert_int_equal(r.calls, 0);
    }
    redisReply *y = redisCommand(sync_rc, "DUMP %s", lead_key("lu-3"));
    assert_int_equal(x->len, y->len);
    assert_memory_equal(x->str, y->str, x->len);
    freeReplyObject(x);
    freeReplyObject(y);
    assert_int_equal(events_len("lu-3"), events);
    free(huge);
    free(many);
    free(names);
}

static void test_lead_update_with_redis_down_is_unavailable_at_once(void **state)
{
    const nt_kv_t attrs[] = {{"webinar_join_link", "https://platform.example/j/4"}};
    char err[256];
    rec_t r = {0};
    int64_t until = nt_mono_ms() + 10000;

    nt_test_redis_stop_only(&srv);
    while (nt_redis_up(redis) && nt_mono_ms() < until)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_false(nt_redis_up(redis));
    assert_int_equal(nt_api_lead_update(&deps, "lu-1", attrs, 1, on_done, &r, err, sizeof(err)),
                     NT_EUNAVAIL);
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(r.calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lead_update_writes_attributes_and_wakes_active_runs),
        cmocka_unit_test(test_lead_update_never_creates_a_lead),
        cmocka_unit_test(test_lead_update_refuses_what_the_api_refuses_and_writes_nothing),
        cmocka_unit_test(test_lead_update_with_redis_down_is_unavailable_at_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
