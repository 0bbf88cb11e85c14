/* apply.lua against a real redis-server: the consent marks a committed message carries, and
 * the funnel counters a batch adds up, the lead fields and timers it writes. A
 * message marked "c" (its channel has NT_CHANNEL_CONSENT) gets the lead's _unsub and
 * _suppressed as they stand inside the transaction; a message not marked gets "" and costs no
 * read; a decision whose state token no longer matches commits nothing. And which of the
 * build's channels ask for consent: email does, log does not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "harness.h"
#include "keys.h"
#include "lua_scripts.h"
#include "modules.h"
#include "msgpack.h"

#define MODULES_DIR NT_BINARY_DIR "/modules"
#define P 3u

static nt_test_redis_t srv;
static redisContext *rc;

static int setup(void **state)
{
    (void)state;
    if (nt_test_redis_start(&srv) != 0)
        return -1;
    rc = nt_test_redis_connect(&srv);
    return rc ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (rc)
        redisFree(rc);
    nt_test_redis_stop(&srv);
    return 0;
}

static const char *apply_source(void)
{
    for (size_t i = 0; i < nt_lua_nscripts; i++)
        if (strcmp(nt_lua_scripts[i].name, "apply") == 0)
            return nt_lua_scripts[i].source;
    fail_msg("apply.lua is not embedded");
    return NULL;
}

static void cmd_ok(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
}

/* A run of plan "p" at node "start", state token 5, and its lead with the given marks. */
static void lead_with_run(const char *lead, const char *unsub, const char *suppressed)
{
    char key[NT_KEY_MAX];

    cmd_ok("DEL %s", nt_key_lead(key, P, lead));
    cmd_ok("HSET %s name %s", key, lead);
    if (unsub)
        cmd_ok("HSET %s _unsub %s", key, unsub);
    if (suppressed)
        cmd_ok("HSET %s _suppressed %s", key, suppressed);
    cmd_ok("HSET %s v 1 n start t 5 vi 1 ne 0 d 0 s a", nt_key_run(key, P, lead, "p"));
}

/* One decision moving the lead's run from token `token` to node "next" with two messages:
 * "<lead>-c" marked for consent, "<lead>-n" not. */
static void add_decision(nt_mp_t *m, const char *lead, const char *token)
{
    char id[64];

    nt_mp_array(m, 15);
    nt_mp_cstr(m, lead);
    nt_mp_cstr(m, "p");
    nt_mp_cstr(m, "1");
    nt_mp_cstr(m, token);
    nt_mp_cstr(m, "next");
    nt_mp_cstr(m, "a");
    nt_mp_cstr(m, "");
    nt_mp_cstr(m, "0");
    nt_mp_cstr(m, "1");
    nt_mp_array(m, 0);
    nt_mp_cstr(m, "0");
    nt_mp_cstr(m, "");
    nt_mp_array(m, 2);
    nt_mp_array(m, 3);
    snprintf(id, sizeof(id), "%s-c", lead);
    nt_mp_cstr(m, id);
    nt_mp_cstr(m, "record-c");
    nt_mp_cstr(m, "c");
    nt_mp_array(m, 3);
    snprintf(id, sizeof(id), "%s-n", lead);
    nt_mp_cstr(m, id);
    nt_mp_cstr(m, "record-n");
    nt_mp_cstr(m, "");
    nt_mp_cstr(m, "1000|step|entered next\n");
    nt_mp_array(m, 6);
    nt_mp_cstr(m, "1:start:cur");
    nt_mp_cstr(m, "-1");
    nt_mp_cstr(m, "1:next:in");
    nt_mp_cstr(m, "1");
    nt_mp_cstr(m, "1:next:cur");
    nt_mp_cstr(m, "1");
}

static redisReply *apply(const nt_mp_t *batch)
{
    char lease[NT_KEY_MAX], timers[NT_KEY_MAX], events[NT_KEY_MAX], outbox[NT_KEY_MAX];
    char pre[NT_KEY_MAX];
    const char *argv[] = {"EVAL", apply_source(), "4",
                          nt_key_part(lease, P, "lease"), nt_key_part(timers, P, "timers"),
                          nt_key_part(events, P, "events"), nt_key_part(outbox, P, "outbox"),
                          "w1", "7", "1000", pre, "20", (const char *)batch->buf};
    size_t len[13];

    snprintf(pre, sizeof(pre), "nt:{%u}:", P);
    for (size_t i = 0; i < 12; i++)
        len[i] = strlen(argv[i]);
    len[12] = batch->len;
    cmd_ok("HSET %s owner w1 token 7", lease);
    redisReply *r = redisCommandArgv(rc, 13, argv, len);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("apply.lua: %s", r->str);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 4);
    assert_string_equal(r->element[0]->str, "OK");
    return r;
}

static char *hget(const char *key, const char *field)
{
    redisReply *r = redisCommand(rc, "HGET %s %s", key, field);
    char *v = r && r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
    freeReplyObject(r);
    return v;
}

static void test_apply_reads_consent_only_for_messages_that_ask(void **state)
{
    nt_mp_t m;
    char key[NT_KEY_MAX];

    (void)state;
    lead_with_run("gone", "1764489600000", NULL);
    lead_with_run("bounced", NULL, "hard bounce");
    lead_with_run("both", "1", "complaint");
    lead_with_run("fine", NULL, NULL);
    lead_with_run("stale", "1", NULL);

    nt_mp_init(&m);
    nt_mp_array(&m, 4);
    nt_mp_array(&m, 5);
    add_decision(&m, "gone", "5");
    add_decision(&m, "bounced", "5");
    add_decision(&m, "both", "5");
    add_decision(&m, "fine", "5");
    add_decision(&m, "stale", "4"); /* the run has moved on since */
    nt_mp_array(&m, 0);
    nt_mp_array(&m, 0);
    nt_mp_array(&m, 0);
    assert_false(m.oom);

    redisReply *r = apply(&m);
    const redisReply *res = r->element[1], *ids = r->element[2], *marks = r->element[3];
    static const char *const want_ids[] = {"gone-c", "gone-n", "bounced-c", "bounced-n",
                                           "both-c", "both-n", "fine-c", "fine-n", "", ""};
    static const char *const want_marks[] = {"u", "", "s", "", "us", "", "", "", "", ""};

    assert_int_equal(res->elements, 5);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(res->element[i]->integer, 1);
    assert_int_equal(res->element[4]->integer, 0);
    assert_int_equal(ids->elements, 10);
    assert_int_equal(marks->elements, 10);
    for (size_t i = 0; i < 10; i++) {
        assert_string_equal(ids->element[i]->str, want_ids[i]);
        assert_string_equal(marks->element[i]->str, want_marks[i]);
    }
    freeReplyObject(r);

    /* both messages of an applied decision are in the outbox, none of the stale one */
    char *v = hget(nt_key_part(key, P, "outbox"), "gone-n");
    assert_non_null(v);
    assert_string_equal(v, "record-n");
    free(v);
    assert_null(hget(key, "stale-c"));
    v = hget(nt_key_run(key, P, "gone", "p"), "n");
    assert_string_equal(v, "next");
    free(v);
    v = hget(nt_key_run(key, P, "stale", "p"), "n");
    assert_string_equal(v, "start");
    free(v);

    /* the timeline line, as the worker sent it; none for the stale decision */
    redisReply *h = redisCommand(rc, "GET %s", nt_key_hist(key, P, "gone"));
    assert_int_equal(h->type, REDIS_REPLY_STRING);
    assert_string_equal(h->str, "1000|step|entered next\n");
    freeReplyObject(h);
    h = redisCommand(rc, "EXISTS %s", nt_key_hist(key, P, "stale"));
    assert_int_equal(h->integer, 0);
    freeReplyObject(h);

    /* the funnel counters of the four applied decisions, summed; the stale one adds nothing */
    nt_key_part(key, P, "stats:p");
    static const char *const fields[][2] = {
        {"1:start:cur", "-4"}, {"1:next:in", "4"}, {"1:next:cur", "4"}};
    for (size_t i = 0; i < 3; i++) {
        v = hget(key, fields[i][0]);
        assert_non_null(v);
        assert_string_equal(v, fields[i][1]);
        free(v);
    }
    nt_mp_fini(&m);
}

/* A decision without messages: status "a" with a due time, or "d" (exit "bye"); attribute
 * changes as name, value pairs (value NULL removes). */
static void add_plain_decision(nt_mp_t *m, const char *lead, const char *status, const char *due,
                               const char *const *set, size_t nset, const char *stage)
{
    int done = strcmp(status, "d") == 0;

    nt_mp_array(m, 15);
    nt_mp_cstr(m, lead);
    nt_mp_cstr(m, "p");
    nt_mp_cstr(m, "1");
    nt_mp_cstr(m, "5");
    nt_mp_cstr(m, done ? "" : "later");
    nt_mp_cstr(m, status);
    nt_mp_cstr(m, done ? "bye" : "");
    nt_mp_cstr(m, due);
    nt_mp_cstr(m, "1");
    nt_mp_array(m, (uint32_t)(2 * nset));
    for (size_t i = 0; i < nset; i++) {
        nt_mp_cstr(m, set[2 * i]);
        if (set[2 * i + 1])
            nt_mp_cstr(m, set[2 * i + 1]);
        else
            nt_mp_bool(m, 0);
    }
    nt_mp_cstr(m, "3");
    nt_mp_cstr(m, stage);
    nt_mp_array(m, 0);
    nt_mp_cstr(m, "");
    nt_mp_array(m, 2);
    nt_mp_cstr(m, done ? "1:exit:bye" : "1:later:cur");
    nt_mp_cstr(m, "1");
}

static double timer_of(const char *lead)
{
    char key[NT_KEY_MAX], member[64];

    snprintf(member, sizeof(member), "%s|p", lead);
    redisReply *r = redisCommand(rc, "ZSCORE %s %s", nt_key_part(key, P, "timers"), member);
    double v = r && r->type == REDIS_REPLY_STRING ? strtod(r->str, NULL) : -1;
    freeReplyObject(r);
    return v;
}

static void test_apply_writes_lead_fields_in_order_and_batches_timers(void **state)
{
    char key[NT_KEY_MAX];
    nt_mp_t m;
    static const char *const set[] = {"a", "1", "b", "2", "a", NULL, "c", "x", "c", "y"};
    static const char *const unset[] = {"b", NULL};

    (void)state;
    lead_with_run("moves", NULL, NULL);
    lead_with_run("ends", NULL, NULL);
    lead_with_run("rests", NULL, NULL);
    cmd_ok("HSET %s a 0 b 0", nt_key_lead(key, P, "ends"));
    /* the two runs that had a timer */
    cmd_ok("HSET %s d 900", nt_key_run(key, P, "ends", "p"));
    cmd_ok("HSET %s d 900", nt_key_run(key, P, "rests", "p"));
    cmd_ok("ZADD %s 900 ends|p 900 rests|p", nt_key_part(key, P, "timers"));

    nt_mp_init(&m);
    nt_mp_array(&m, 4);
    nt_mp_array(&m, 3);
    add_plain_decision(&m, "moves", "a", "5000", set, 5, "mql");
    add_plain_decision(&m, "ends", "d", "0", unset, 1, "");
    add_plain_decision(&m, "rests", "a", "0", NULL, 0, "");
    nt_mp_array(&m, 0);
    nt_mp_array(&m, 0);
    nt_mp_array(&m, 0);
    assert_false(m.oom);
    freeReplyObject(apply(&m));
    nt_mp_fini(&m);

    /* set then removed: gone; set twice: the last value; the stage; the score */
    nt_key_lead(key, P, "moves");
    assert_null(hget(key, "a"));
    static const char *const want[][2] = {{"b", "2"}, {"c", "y"}, {"_stage", "mql"},
                                          {"_score", "3"}, {"r:p", NULL}};
    for (size_t i = 0; i < 5; i++) {
        char *v = hget(key, want[i][0]);
        if (!want[i][1]) {
            assert_null(v);
            continue;
        }
        assert_non_null(v);
        assert_string_equal(v, want[i][1]);
        free(v);
    }
    assert_true(timer_of("moves") == 5000);

    /* the run that ended: its mark, its removal, its timer gone */
    nt_key_lead(key, P, "ends");
    char *v = hget(key, "r:p");
    assert_string_equal(v, "d");
    free(v);
    assert_null(hget(key, "b"));
    v = hget(key, "a");
    assert_string_equal(v, "0");
    free(v);
    assert_true(timer_of("ends") < 0);
    v = hget(nt_key_run(key, P, "ends", "p"), "x");
    assert_string_equal(v, "bye");
    free(v);

    /* a run that rests without a due time loses its old timer */
    assert_true(timer_of("rests") < 0);
    v = hget(nt_key_run(key, P, "rests", "p"), "n");
    assert_string_equal(v, "later");
    free(v);
}

static void test_email_asks_for_consent_and_log_does_not(void **state)
{
    nt_modules_t *mods = NULL;
    const nt_channel_ops_t *ops;

    (void)state;
    ops = nt_test_channel_load(MODULES_DIR, "email", &mods);
    assert_non_null(ops);
    assert_true(nt_module_flags(nt_modules_find(mods, "email")) & NT_CHANNEL_CONSENT);
    assert_false(nt_module_flags(nt_modules_find(mods, "log")) & NT_CHANNEL_CONSENT);
    assert_false(nt_module_flags(nt_modules_find(mods, "call")) & NT_CHANNEL_CONSENT);
    nt_modules_free(mods);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apply_reads_consent_only_for_messages_that_ask),
        cmocka_unit_test(test_apply_writes_lead_fields_in_order_and_batches_timers),
        cmocka_unit_test(test_email_asks_for_consent_and_log_does_not),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
