/* apply.lua against a real redis-server, fed what the worker feeds it (applyarg.c builds the
 * run and lead fields, the timer and the funnel parts from decisions): the consent marks a
 * committed message carries, the funnel counters a batch adds up (and takes back out for a
 * decision whose state token no longer matches, which commits nothing), the lead fields and
 * timers it writes. A message marked "c" (its channel has NT_CHANNEL_CONSENT) gets the lead's
 * _unsub and _suppressed as they stand inside the transaction; a message not marked costs no
 * read. And which of the build's channels ask for consent: email does, log does not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "applyarg.h"
#include "harness.h"
#include "keys.h"
#include "lead.h"
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

/* A decision packed as the worker packs it (worker.c add_decision): the run's fields, the
 * timer, the lead's fields and score, the messages as {id, record, "c" | ""} triples, the
 * timeline line; and its funnel counters into f. */
static void pack(nt_mp_t *m, nt_funnel_t *f, const char *lead, const nt_run_t *run,
                 const nt_decision_t *d, const char *const *msgs, size_t nmsgs, const char *line)
{
    nt_mp_array(m, 13);
    nt_mp_cstr(m, lead);
    nt_mp_cstr(m, run->plan_id);
    nt_mp_int(m, (long long)run->token);
    nt_apply_run_fields(m, run, d, 1000);
    nt_apply_timer(m, run, d);
    nt_apply_lead_fields(m, run, d);
    nt_mp_int(m, d->score_delta);
    nt_apply_list(m, (uint32_t)(3 * nmsgs));
    for (size_t i = 0; i < 3 * nmsgs; i++)
        nt_mp_cstr(m, msgs[i]);
    nt_mp_cstr(m, line);
    assert_int_equal(nt_funnel_add(f, run, d), 0);
}

/* The run lead_with_run made: plan "p" v1 at node "start", token 5, no timer. */
static nt_run_t run_at(const char *plan, uint64_t token, int64_t due)
{
    nt_run_t r;

    memset(&r, 0, sizeof(r));
    r.plan_id = plan;
    r.version = 1;
    r.node = "start";
    r.token = token;
    r.visit = 1;
    r.due_ms = due;
    r.status = NT_RUN_ACTIVE;
    return r;
}

/* One decision moving the lead's run (expected at token `token`) from "start" to node "next"
 * with two messages: "<lead>-c" marked for consent, "<lead>-n" not. */
static void add_decision(nt_mp_t *m, nt_funnel_t *f, const char *lead, uint64_t token)
{
    char idc[64], idn[64];
    char *path[] = {"next"};
    nt_run_t run = run_at("p", token, 0);
    nt_decision_t d = {.changed = 1, .node = "next", .status = NT_RUN_ACTIVE, .visit = 2,
                       .path = path, .npath = 1, .left = "start"};

    snprintf(idc, sizeof(idc), "%s-c", lead);
    snprintf(idn, sizeof(idn), "%s-n", lead);
    const char *msgs[] = {idc, "record-c", "c", idn, "record-n", ""};
    pack(m, f, lead, &run, &d, msgs, 2, "1000|step|entered next\n");
}

/* The batch around n decisions in dec: no lead records, timer fixes or outbox ids. */
static void batch(nt_mp_t *m, const nt_mp_t *dec, uint32_t n, const nt_funnel_t *f)
{
    nt_mp_init(m);
    nt_mp_array(m, 6);
    nt_mp_array(m, n);
    nt_mp_raw(m, dec->buf, dec->len);
    nt_mp_array(m, 0);
    nt_mp_array(m, 0);
    nt_mp_array(m, 0);
    assert_int_equal(nt_funnel_pack(f, m), 0);
    assert_false(m->oom);
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
    assert_int_equal(r->elements, 3);
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

/* Each of the n (field, value) pairs of want is in the hash at key. */
static void assert_hash(const char *key, const char *const want[][2], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *v = hget(key, want[i][0]);

        if (!v)
            fail_msg("%s has no field %s", key, want[i][0]);
        assert_string_equal(v, want[i][1]);
        free(v);
    }
}

static void test_apply_reads_consent_only_for_messages_that_ask(void **state)
{
    nt_mp_t dec, m;
    nt_funnel_t f;
    char key[NT_KEY_MAX];

    (void)state;
    lead_with_run("gone", "1764489600000", NULL);
    lead_with_run("bounced", NULL, "hard bounce");
    lead_with_run("both", "1", "complaint");
    lead_with_run("fine", NULL, NULL);
    lead_with_run("stale", "1", NULL);

    nt_mp_init(&dec);
    nt_funnel_init(&f);
    add_decision(&dec, &f, "gone", 5);
    add_decision(&dec, &f, "bounced", 5);
    add_decision(&dec, &f, "both", 5);
    add_decision(&dec, &f, "fine", 5);
    add_decision(&dec, &f, "stale", 4); /* the run has moved on since */
    batch(&m, &dec, 5, &f);

    redisReply *r = apply(&m);
    const redisReply *res = r->element[1], *marks = r->element[2];
    /* message index (1-based over the batch) and mark, only for suppressed "c" messages */
    static const char *const want_marks[] = {"1", "u", "3", "s", "5", "us"};

    assert_int_equal(res->elements, 5);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(res->element[i]->integer, 1);
    assert_int_equal(res->element[4]->integer, 0);
    assert_int_equal(marks->elements, 6);
    for (size_t i = 0; i < 6; i += 2) {
        assert_int_equal(marks->element[i]->integer, atoi(want_marks[i]));
        assert_string_equal(marks->element[i + 1]->str, want_marks[i + 1]);
    }
    freeReplyObject(r);

    /* both messages of an applied decision are in the outbox, none of the stale one */
    char *v = hget(nt_key_part(key, P, "outbox"), "gone-n");
    assert_non_null(v);
    assert_string_equal(v, "record-n");
    free(v);
    assert_null(hget(key, "stale-c"));
    assert_null(hget(key, "stale-n"));
    nt_key_run(key, P, "gone", "p");
    static const char *const run_want[][2] = {{"n", "next"}, {"t", "6"}, {"vi", "2"},
                                              {"ne", "1000"}, {"d", "0"}, {"s", "a"}};
    assert_hash(key, run_want, 6);
    v = hget(nt_key_run(key, P, "stale", "p"), "n");
    assert_string_equal(v, "start");
    free(v);
    v = hget(key, "t");
    assert_string_equal(v, "5");
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
    assert_hash(key, fields, 3);
    nt_mp_fini(&m);
    nt_mp_fini(&dec);
    nt_funnel_fini(&f);
}

/* Two decisions of plan "q" whose counters of node "next" cancel out in the batch's sums: one
 * enters it, the other, stale, would leave it. The stale one's share is taken back out, so the
 * sum of zero must have travelled. */
static void test_apply_takes_a_stale_decisions_counters_back(void **state)
{
    nt_mp_t dec, m;
    nt_funnel_t f;
    char key[NT_KEY_MAX];
    char *in_next[] = {"next"}, *in_third[] = {"third"};
    nt_run_t a = run_at("q", 5, 0), b = run_at("q", 4, 0);
    nt_decision_t da = {.changed = 1, .node = "next", .status = NT_RUN_ACTIVE, .visit = 2,
                        .path = in_next, .npath = 1, .left = "start"};
    nt_decision_t db = {.changed = 1, .node = "third", .status = NT_RUN_ACTIVE, .visit = 3,
                        .path = in_third, .npath = 1, .left = "next"};

    (void)state;
    lead_with_run("qa", NULL, NULL);
    lead_with_run("qb", NULL, NULL);
    cmd_ok("HSET %s v 1 n start t 5 vi 1 ne 0 d 0 s a", nt_key_run(key, P, "qa", "q"));
    cmd_ok("HSET %s v 1 n next t 5 vi 2 ne 0 d 0 s a", nt_key_run(key, P, "qb", "q"));
    b.node = "next";

    nt_mp_init(&dec);
    nt_funnel_init(&f);
    pack(&dec, &f, "qa", &a, &da, NULL, 0, "");
    pack(&dec, &f, "qb", &b, &db, NULL, 0, "");
    batch(&m, &dec, 2, &f);
    redisReply *r = apply(&m);
    assert_int_equal(r->element[1]->element[0]->integer, 1);
    assert_int_equal(r->element[1]->element[1]->integer, 0);
    freeReplyObject(r);

    nt_key_part(key, P, "stats:q");
    static const char *const fields[][2] = {
        {"1:start:cur", "-1"}, {"1:next:in", "1"}, {"1:next:cur", "1"}};
    assert_hash(key, fields, 3);
    assert_null(hget(key, "1:third:in"));
    assert_null(hget(key, "1:third:cur"));
    nt_mp_fini(&m);
    nt_mp_fini(&dec);
    nt_funnel_fini(&f);
}

/* A decision without messages from "start" (token 5, due `had_due`): resting at "later" with
 * due time `due`, or ended (exit "bye"); attribute changes as name, value pairs (value NULL
 * removes), a stage and score delta 3. */
static void add_plain_decision(nt_mp_t *m, nt_funnel_t *f, const char *lead, int done,
                               int64_t due, int64_t had_due, nt_kv_t *set, size_t nset,
                               int stage)
{
    char *path[] = {"later"};
    nt_run_t run = run_at("p", 5, had_due);
    nt_decision_t d = {.changed = 1, .node = done ? "" : "later",
                       .status = done ? NT_RUN_DONE : NT_RUN_ACTIVE,
                       .exit_reason = done ? "bye" : NULL, .due_ms = due, .visit = 2,
                       .set = set, .nset = nset, .score_delta = 3, .stage = stage,
                       .path = done ? NULL : path, .npath = done ? 0 : 1, .left = "start"};

    pack(m, f, lead, &run, &d, NULL, 0, "");
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
    nt_mp_t dec, m;
    nt_funnel_t f;
    nt_kv_t set[] = {{"a", "1"}, {"b", "2"}, {"a", NULL}, {"c", "x"}, {"c", "y"}};
    nt_kv_t unset[] = {{"b", NULL}};

    (void)state;
    lead_with_run("moves", NULL, NULL);
    lead_with_run("ends", NULL, NULL);
    lead_with_run("rests", NULL, NULL);
    cmd_ok("HSET %s a 0 b 0", nt_key_lead(key, P, "ends"));
    /* the two runs that had a timer */
    cmd_ok("HSET %s d 900", nt_key_run(key, P, "ends", "p"));
    cmd_ok("HSET %s d 900", nt_key_run(key, P, "rests", "p"));
    cmd_ok("ZADD %s 900 ends|p 900 rests|p", nt_key_part(key, P, "timers"));

    nt_mp_init(&dec);
    nt_funnel_init(&f);
    add_plain_decision(&dec, &f, "moves", 0, 5000, 0, set, 5, nt_stage_parse("mql"));
    add_plain_decision(&dec, &f, "ends", 1, 0, 900, unset, 1, 0);
    add_plain_decision(&dec, &f, "rests", 0, 0, 900, NULL, 0, 0);
    batch(&m, &dec, 3, &f);
    freeReplyObject(apply(&m));
    nt_mp_fini(&m);
    nt_mp_fini(&dec);
    nt_funnel_fini(&f);

    /* set then removed: gone; set twice: the last value; the stage; the score */
    nt_key_lead(key, P, "moves");
    assert_null(hget(key, "a"));
    static const char *const want[][2] = {{"b", "2"}, {"c", "y"}, {"_stage", "mql"},
                                          {"_score", "3"}};
    assert_hash(key, want, 4);
    assert_null(hget(key, "r:p")); /* the run goes on */
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
    nt_key_run(key, P, "ends", "p");
    static const char *const end_want[][2] = {{"s", "d"}, {"x", "bye"}, {"xt", "1000"},
                                              {"d", "0"}, {"t", "6"}};
    assert_hash(key, end_want, 5);
    v = hget(nt_key_part(key, P, "stats:p"), "1:exit:bye");
    assert_string_equal(v, "1");
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
        cmocka_unit_test(test_apply_takes_a_stale_decisions_counters_back),
        cmocka_unit_test(test_apply_writes_lead_fields_in_order_and_batches_timers),
        cmocka_unit_test(test_email_asks_for_consent_and_log_does_not),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
