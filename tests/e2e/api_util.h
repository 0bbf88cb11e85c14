/* Helpers shared by the API end-to-end tests (test_api_*.c): one external redis-server and one
 * nurtured per test program, requests, and checks of what Redis holds. */
#ifndef NT_TEST_API_UTIL_H
#define NT_TEST_API_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "harness.h"
#include "keys.h"

#define API_PARTITIONS 64
#define API_UNUSED static __attribute__((unused))

typedef struct api_env {
    nt_test_redis_t redis;
    nt_test_daemon_t daemon;
    redisContext *rc;
} api_env_t;

static api_env_t env;

/* Start redis and nurtured (with extra args) once for the whole program. */
API_UNUSED int api_setup(const char *const *extra)
{
    memset(&env, 0, sizeof(env));
    if (nt_test_redis_start(&env.redis) != 0)
        return -1;
    char *addr = nt_test_redis_addr(&env.redis);
    int rc = nt_test_daemon_start(&env.daemon, addr, extra);
    free(addr);
    if (rc != 0)
        return -1;
    env.rc = nt_test_redis_connect(&env.redis);
    return env.rc ? 0 : -1;
}

API_UNUSED int api_teardown(void **state)
{
    (void)state;
    if (env.rc)
        redisFree(env.rc);
    nt_test_daemon_stop(&env.daemon);
    nt_test_redis_stop(&env.redis);
    return 0;
}

/* A JSON request as ops (token NULL: none). Fails the test when no response arrived. */
API_UNUSED void call(const char *method, const char *path, const char *token, const char *body,
                     nt_test_resp_t *out)
{
    int rc = nt_test_json(&env.daemon, method, path, token, body, out);
    if (rc != 0)
        fail_msg("%s %s: no response", method, path);
}

/* A request with a raw body and content type. */
API_UNUSED void call_raw(const char *method, const char *path, const char *token, const char *ctype,
                         const void *body, size_t len, nt_test_resp_t *out)
{
    char url[4096];
    snprintf(url, sizeof(url), "%s%s", env.daemon.url, path);
    if (nt_test_http(method, url, token, ctype, body, len, out) != 0)
        fail_msg("%s %s: no response", method, path);
}

#define OPS (env.daemon.ops_token)
#define REP (env.daemon.rep_token)
#define WEBHOOK (env.daemon.webhook_token)

/* Assert the status and, for errors, the JSON error shape with this code. */
API_UNUSED void expect_status(const nt_test_resp_t *r, long status, const char *code)
{
    if (r->status != status)
        fail_msg("expected %ld, got %ld: %s", status, r->status, r->body);
    if (!code)
        return;
    if (!r->json)
        fail_msg("expected a JSON error body, got: %s", r->body);
    json_t *err = json_object_get(r->json, "error");
    const char *c = json_string_value(json_object_get(err, "code"));
    const char *m = json_string_value(json_object_get(err, "message"));
    if (!c || strcmp(c, code) != 0 || !m || !*m)
        fail_msg("expected error code %s with a message, got: %s", code, r->body);
}

/* The error message contains needle. */
API_UNUSED void expect_message(const nt_test_resp_t *r, const char *needle)
{
    const char *m =
        json_string_value(json_object_get(json_object_get(r->json, "error"), "message"));
    if (!m || !strstr(m, needle))
        fail_msg("expected the message to name '%s', got: %s", needle, r->body);
}

API_UNUSED long long redis_int(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *x = redisvCommand(env.rc, fmt, ap);
    va_end(ap);
    assert_non_null(x);
    long long v = x->type == REDIS_REPLY_INTEGER ? x->integer : -1;
    if (x->type == REDIS_REPLY_STRING)
        v = strtoll(x->str, NULL, 10);
    if (x->type == REDIS_REPLY_NIL)
        v = 0;
    freeReplyObject(x);
    return v;
}

/* HGET as a malloc'd string, NULL when absent. */
API_UNUSED char *redis_hget(const char *key, const char *field)
{
    redisReply *x = redisCommand(env.rc, "HGET %s %s", key, field);
    assert_non_null(x);
    char *s = x->type == REDIS_REPLY_STRING ? strdup(x->str) : NULL;
    freeReplyObject(x);
    return s;
}

API_UNUSED int key_exists(const char *key)
{
    return (int)redis_int("EXISTS %s", key);
}

API_UNUSED const char *lead_key(char *buf, const char *id)
{
    return nt_key_lead(buf, nt_partition(id, API_PARTITIONS), id);
}

API_UNUSED const char *run_key(char *buf, const char *id, const char *plan)
{
    return nt_key_run(buf, nt_partition(id, API_PARTITIONS), id, plan);
}

API_UNUSED const char *events_key(char *buf, const char *id)
{
    return nt_key_part(buf, nt_partition(id, API_PARTITIONS), "events");
}

/* Total number of keys: "nothing was written" checks compare it before and after. */
API_UNUSED long long dbsize(void)
{
    return redis_int("DBSIZE");
}

/* The number of entries in every partition's events stream. */
API_UNUSED long long events_total(void)
{
    long long n = 0;
    char key[NT_KEY_MAX];
    for (unsigned p = 0; p < API_PARTITIONS; p++)
        n += redis_int("XLEN %s", nt_key_part(key, p, "events"));
    return n;
}

/* Publish tests/e2e/data/<name>.textpb; returns the response (caller finis). */
API_UNUSED void publish(const char *name, const char *query, nt_test_resp_t *out)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/tests/e2e/data/%s.textpb", NT_SOURCE_DIR, name);
    uint8_t *bin = NULL;
    size_t len = 0;
    if (nt_test_compile_plan(path, &bin, &len) != 0)
        fail_msg("cannot compile %s", path);
    char url[64];
    snprintf(url, sizeof(url), "/v1/plans%s", query ? query : "");
    call_raw("POST", url, OPS, "application/x-protobuf", bin, len, out);
    free(bin);
}

API_UNUSED void create_lead(const char *json)
{
    nt_test_resp_t r;
    call("POST", "/v1/leads", OPS, json, &r);
    if (r.status != 201 && r.status != 200)
        fail_msg("creating a lead: %ld %s", r.status, r.body);
    nt_test_resp_fini(&r);
}

/* Enrol lead in plan as ops; anything but 202 fails the test. */
API_UNUSED void enrol_lead(const char *lead, const char *plan)
{
    char path[300], body[160];
    nt_test_resp_t r;
    snprintf(path, sizeof(path), "/v1/leads/%s/enrol", lead);
    snprintf(body, sizeof(body), "{\"plan\":\"%s\"}", plan);
    call("POST", path, OPS, body, &r);
    expect_status(&r, 202, NULL);
    nt_test_resp_fini(&r);
}

/* Compile the plan textpb (protobuf text) and publish it as ops: 201, or also 409 (published
 * before) when republish is set; anything else fails the test. */
API_UNUSED void publish_textpb(const char *textpb, int republish)
{
    char path[] = "/tmp/nt-plan-XXXXXX";
    int fd = mkstemp(path);
    uint8_t *bin = NULL;
    size_t len = 0;
    nt_test_resp_t r;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, textpb, strlen(textpb)), (ssize_t)strlen(textpb));
    close(fd);
    assert_int_equal(nt_test_compile_plan(path, &bin, &len), 0);
    unlink(path);
    call_raw("POST", "/v1/plans", OPS, "application/x-protobuf", bin, len, &r);
    free(bin);
    if (r.status != 201 && !(republish && r.status == 409))
        fail_msg("publish: %ld %s", r.status, r.body);
    nt_test_resp_fini(&r);
}

/* GET /v1/leads/<id> as ops: the lead (a new reference), NULL when not 200. */
API_UNUSED json_t *lead_get(const char *id)
{
    char path[256];
    nt_test_resp_t r;
    json_t *j;

    snprintf(path, sizeof(path), "/v1/leads/%s", id);
    call("GET", path, OPS, NULL, &r);
    j = r.status == 200 ? json_incref(r.json) : NULL;
    nt_test_resp_fini(&r);
    return j;
}

/* A run wanted: the lead's run in plan at node (NULL: any) with status (NULL: any). */
typedef struct lead_run {
    const char *lead, *plan, *node, *status;
} lead_run_t;

/* For nt_test_wait_until: does the lead have the run arg (a lead_run_t) describes? */
API_UNUSED int lead_run_is(void *arg)
{
    const lead_run_t *w = arg;
    json_t *l = lead_get(w->lead), *run;
    size_t i;
    int ok = 0;

    json_array_foreach(json_object_get(l, "runs"), i, run)
    {
        const char *p = json_string_value(json_object_get(run, "plan"));
        const char *n = json_string_value(json_object_get(run, "node"));
        const char *s = json_string_value(json_object_get(run, "status"));

        if (p && strcmp(p, w->plan) == 0 && n && (!w->node || strcmp(n, w->node) == 0) &&
            (!w->status || (s && strcmp(s, w->status) == 0)))
            ok = 1;
    }
    json_decref(l);
    return ok;
}

/* Wait up to 30 s for lead id's run in plan to be at node (NULL: any) with status (NULL: any);
 * else fail, printing the lead and the daemon's log. */
API_UNUSED void wait_lead_run(const char *id, const char *plan, const char *node,
                              const char *status)
{
    lead_run_t w = {id, plan, node, status};

    if (nt_test_wait_until(lead_run_is, &w, 30000) != 0) {
        json_t *l = lead_get(id);
        char *s = l ? json_dumps(l, 0) : NULL;

        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("%s in %s: wanted node %s, have %s", id, plan, node ? node : "any",
                 s ? s : "no lead");
    }
}

/* The header "X-Nurture-Signature: t=<t>,v1=<hex HMAC-SHA256(secret, "<t>." body)>" into hdr,
 * computed here with OpenSSL (not with nurtured's code), to sign webhooks sent to nurtured
 * and to check the ones it sends. */
API_UNUSED void sign_webhook(const char *secret, long long t, const char *body, char *hdr,
                             size_t cap)
{
    char *msg = NULL;
    unsigned char mac[32];
    unsigned int len = 0;
    char hex[65];
    int n = asprintf(&msg, "%lld.%s", t, body);

    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, (size_t)n, mac, &len);
    free(msg);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    snprintf(hdr, cap, "X-Nurture-Signature: t=%lld,v1=%s", t, hex);
}

#endif
