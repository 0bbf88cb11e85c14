/* The harness itself: free ports, temp dirs, redis-server start/restart/stop, HTTP, protoc. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static void test_harness_free_port_is_bindable(void **state)
{
    for (int i = 0; i < 10; i++) {
        int port = nt_test_free_port();
        assert_true(port > 0 && port < 65536);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        close(fd);
    }
}

static void test_harness_tmpdir_and_rmrf(void **state)
{
    char *d = nt_test_tmpdir("nt-harness");
    assert_non_null(d);
    assert_int_equal(strncmp(d, "/tmp/nt-harness-", 16), 0);
    char p[600];
    snprintf(p, sizeof(p), "%s/a/b", d);
    snprintf(p, sizeof(p), "%s/a", d);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/a/f", d);
    FILE *f = fopen(p, "w");
    fputs("x", f);
    fclose(f);
    nt_test_rmrf(d);
    struct stat st;
    assert_int_equal(stat(d, &st), -1);
    free(d);
    nt_test_rmrf("/"); /* refused, loudly */
    nt_test_rmrf("/tmp/../etc");
}

static void set_key(const nt_test_redis_t *r, const char *k, const char *v)
{
    redisContext *c = nt_test_redis_connect(r);
    assert_non_null(c);
    redisReply *rep = redisCommand(c, "SET %s %s", k, v);
    assert_non_null(rep);
    freeReplyObject(rep);
    redisFree(c);
}

static int key_is(const nt_test_redis_t *r, const char *k, const char *v)
{
    redisContext *c = nt_test_redis_connect(r);
    if (c == NULL)
        return 0;
    redisReply *rep = redisCommand(c, "GET %s", k);
    int ok = rep != NULL && rep->type == REDIS_REPLY_STRING && strcmp(rep->str, v) == 0;
    if (rep != NULL)
        freeReplyObject(rep);
    redisFree(c);
    return ok;
}

static void test_harness_redis_restart_keeps_data(void **state)
{
    nt_test_redis_t r;
    assert_int_equal(nt_test_redis_start(&r), 0);
    assert_true(r.pid > 0 && r.port > 0);
    char *addr = nt_test_redis_addr(&r);
    char want[32];
    snprintf(want, sizeof(want), "127.0.0.1:%d", r.port);
    assert_string_equal(addr, want);
    free(addr);

    set_key(&r, "nt:h", "v1");
    int port = r.port;
    pid_t old = r.pid;
    assert_int_equal(nt_test_redis_restart(&r), 0);
    assert_int_equal(r.port, port);
    assert_true(r.pid != old);
    assert_true(key_is(&r, "nt:h", "v1"));

    /* stop_only keeps the dir; start again by restart. */
    char *dir = strdup(r.dir);
    assert_int_equal(nt_test_redis_stop_only(&r), 0);
    assert_int_equal(r.pid, 0);
    assert_null(nt_test_redis_connect(&r));
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(nt_test_redis_restart(&r), 0);
    assert_true(key_is(&r, "nt:h", "v1"));

    nt_test_redis_stop(&r);
    nt_test_redis_stop(&r);
    assert_int_equal(stat(dir, &st), -1);
    free(dir);
}

static int counter_reaches(void *arg)
{
    int *n = arg;
    return ++*n >= 5;
}

static int never(void *arg)
{
    return 0;
}

static void test_harness_wait_until(void **state)
{
    int n = 0;
    assert_int_equal(nt_test_wait_until(counter_reaches, &n, 5000), 0);
    assert_int_equal(n, 5);
    assert_int_equal(nt_test_wait_until(never, NULL, 100), -1);
}

static void test_harness_compile_plan(void **state)
{
    char *d = nt_test_tmpdir("nt-harness");
    char p[600];
    snprintf(p, sizeof(p), "%s/plan.textpb", d);
    FILE *f = fopen(p, "w");
    fputs("id: \"welcome\"\nname: \"Welcome\"\nstart: \"a\"\n", f);
    fclose(f);
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(nt_test_compile_plan(p, &out, &len), 0);
    /* field 1 (id), length-delimited: 0x0a, 7, "welcome" */
    assert_true(len > 9);
    assert_int_equal(out[0], 0x0a);
    assert_int_equal(out[1], 7);
    assert_memory_equal(out + 2, "welcome", 7);
    free(out);

    f = fopen(p, "w");
    fputs("no_such_field: 1\n", f);
    fclose(f);
    assert_int_equal(nt_test_compile_plan(p, &out, &len), -1);
    assert_null(out);
    assert_int_equal(nt_test_compile_plan("/nonexistent.textpb", &out, &len), -1);
    nt_test_rmrf(d);
    free(d);
}

static void test_harness_http_without_a_server_fails_cleanly(void **state)
{
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", nt_test_free_port());
    nt_test_resp_t resp;
    assert_int_equal(nt_test_http("GET", url, NULL, NULL, NULL, 0, &resp), -1);
    assert_int_equal(resp.status, 0);
    assert_null(resp.body);
    nt_test_resp_fini(&resp);
}

/* nurtured end to end, when its main() exists: start, /health, restart, stop. */
static void test_harness_daemon_start_and_restart(void **state)
{
    nt_test_redis_t r;
    assert_int_equal(nt_test_redis_start(&r), 0);
    char *addr = nt_test_redis_addr(&r);
    nt_test_daemon_t d;
    assert_int_equal(nt_test_daemon_start(&d, addr, NULL), 0);
    assert_true(d.pid > 0);
    assert_int_equal(strlen(d.ops_token), 32);
    nt_test_resp_t resp;
    assert_int_equal(nt_test_json(&d, "GET", "/health", NULL, NULL, &resp), 0);
    assert_int_equal(resp.status, 200);
    nt_test_resp_fini(&resp);

    /* Any answer counts: the harness reports a response, whatever its status. */
    assert_int_equal(nt_test_json(&d, "POST", "/v1/no-such-thing", d.ops_token, "{\"a\":1}",
                                  &resp), 0);
    assert_true(resp.status >= 400);
    assert_non_null(resp.body);
    nt_test_resp_fini(&resp);

    nt_test_daemon_signal(&d, SIGKILL);
    assert_int_equal(nt_test_daemon_wait(&d, 5000), 128 + SIGKILL);
    assert_int_equal(nt_test_daemon_start_again(&d), 0);
    assert_int_equal(nt_test_json(&d, "GET", "/health", NULL, NULL, &resp), 0);
    assert_int_equal(resp.status, 200);
    nt_test_resp_fini(&resp);

    nt_test_daemon_signal(&d, SIGTERM);
    assert_int_equal(nt_test_daemon_wait(&d, 15000), 0);
    nt_test_daemon_stop(&d);
    free(addr);
    nt_test_redis_stop(&r);
}

/* A test program that dies without stopping its redis-server leaves nothing running. */
static void test_harness_exit_kills_what_it_started(void **state)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        nt_test_redis_t r;
        if (nt_test_redis_start(&r) != 0)
            _exit(2);
        if (write(p[1], &r.pid, sizeof(r.pid)) != sizeof(r.pid))
            _exit(2);
        exit(1); /* like a failed test: no stop, atexit cleans up */
    }
    close(p[1]);
    pid_t redis = 0;
    assert_int_equal(read(p[0], &redis, sizeof(redis)), sizeof(redis));
    close(p[0]);
    int st;
    assert_int_equal(waitpid(child, &st, 0), child);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    assert_int_equal(kill(redis, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_harness_free_port_is_bindable),
        cmocka_unit_test(test_harness_tmpdir_and_rmrf),
        cmocka_unit_test(test_harness_redis_restart_keeps_data),
        cmocka_unit_test(test_harness_wait_until),
        cmocka_unit_test(test_harness_compile_plan),
        cmocka_unit_test(test_harness_http_without_a_server_fails_cleanly),
        cmocka_unit_test(test_harness_daemon_start_and_restart),
        cmocka_unit_test(test_harness_exit_kills_what_it_started),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
