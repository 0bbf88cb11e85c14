/* redis_child: the embedded redis-server in a data directory, its AOF, restart, and replacing
 * a stale server left behind by a crashed nurtured. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis.h>

#include "harness.h"
#include "redis_child.h"

static char *data_dir;

static int setup(void **state)
{
    data_dir = nt_test_tmpdir("nt-rchild");
    return data_dir != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    nt_test_rmrf(data_dir);
    free(data_dir);
    return 0;
}

static redisReply *cmd(const char *sock, const char *fmt, const char *a, const char *b)
{
    redisContext *c = redisConnectUnix(sock);
    assert_non_null(c);
    if (c->err)
        fail_msg("connect %s: %s", sock, c->errstr);
    redisReply *r = redisCommand(c, fmt, a, b);
    redisFree(c);
    return r;
}

static int has_aof(const char *redis_dir)
{
    char p[1200];
    struct stat st;
    snprintf(p, sizeof(p), "%s/appendonlydir", redis_dir); /* Redis 7 */
    if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
        DIR *d = opendir(p);
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strstr(de->d_name, ".aof") != NULL)
                n++;
        }
        closedir(d);
        return n > 0;
    }
    snprintf(p, sizeof(p), "%s/appendonly.aof", redis_dir); /* older */
    return stat(p, &st) == 0;
}

static void test_redis_child_starts_persists_and_restarts(void **state)
{
    nt_redis_child_t c;
    char *err = NULL;
    nt_rc_t rc = nt_redis_child_start(&c, NT_REDIS_SERVER, data_dir, &err);
    if (rc != NT_OK)
        fail_msg("start: %s", err);
    assert_true(c.pid > 0);
    char want[600];
    snprintf(want, sizeof(want), "%s/redis/redis.sock", data_dir);
    assert_string_equal(c.sock, want);
    struct stat st;
    assert_int_equal(stat(c.sock, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    redisReply *r = cmd(c.sock, "PING", NULL, NULL);
    assert_non_null(r);
    assert_string_equal(r->str, "PONG");
    freeReplyObject(r);
    r = cmd(c.sock, "SET %s %s", "nt:test", "kept");
    assert_non_null(r);
    freeReplyObject(r);
    /* The safety settings are in force. */
    r = cmd(c.sock, "CONFIG GET %s", "maxmemory-policy", NULL);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_string_equal(r->element[1]->str, "noeviction");
    freeReplyObject(r);
    r = cmd(c.sock, "CONFIG GET %s", "appendfsync", NULL);
    assert_string_equal(r->element[1]->str, "everysec");
    freeReplyObject(r);
    r = cmd(c.sock, "CONFIG GET %s", "save", NULL);
    assert_string_equal(r->element[1]->str, "");
    freeReplyObject(r);

    char redis_dir[600];
    snprintf(redis_dir, sizeof(redis_dir), "%s", c.dir);
    nt_redis_child_stop(&c);
    nt_redis_child_stop(&c); /* twice is fine */
    assert_int_equal(c.pid, 0);
    assert_true(has_aof(redis_dir));
    assert_int_equal(stat(want, &st), -1); /* the socket is gone */

    rc = nt_redis_child_start(&c, NT_REDIS_SERVER, data_dir, &err);
    if (rc != NT_OK)
        fail_msg("restart: %s", err);
    r = cmd(c.sock, "GET %s", "nt:test", NULL);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "kept");
    freeReplyObject(r);
    nt_redis_child_stop(&c);
}

/* A redis-server started by hand on our socket plays the child of a crashed nurtured. */
static pid_t start_stale(const char *redis_dir, const char *sock)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", 0);
        dup2(fd, 1);
        execl(NT_REDIS_SERVER, NT_REDIS_SERVER, "--port", "0", "--unixsocket", sock,
              "--dir", redis_dir, "--appendonly", "yes", "--save", "", NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        redisContext *c = redisConnectUnix(sock);
        if (c != NULL && !c->err) {
            redisReply *r = redisCommand(c, "SET %s %s", "nt:stale", "flushed");
            redisFree(c);
            if (r != NULL) {
                freeReplyObject(r);
                return pid;
            }
        }
        if (c != NULL)
            redisFree(c);
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fail_msg("stale redis-server did not start");
    return -1;
}

static void test_redis_child_replaces_a_stale_server(void **state)
{
    char redis_dir[600], sock[700];
    snprintf(redis_dir, sizeof(redis_dir), "%s/redis", data_dir);
    snprintf(sock, sizeof(sock), "%s/redis.sock", redis_dir);
    assert_int_equal(mkdir(redis_dir, 0700), 0);
    pid_t stale = start_stale(redis_dir, sock);

    nt_redis_child_t c;
    char *err = NULL;
    nt_rc_t rc = nt_redis_child_start(&c, NT_REDIS_SERVER, data_dir, &err);
    /* The stale server exited through SHUTDOWN (status 0), after flushing its AOF. */
    int st = -1;
    assert_int_equal(waitpid(stale, &st, 0), stale);
    if (rc != NT_OK)
        fail_msg("start: %s", err);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(c.pid != stale);
    redisReply *r = cmd(c.sock, "GET %s", "nt:stale", NULL);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str, "flushed");
    freeReplyObject(r);
    nt_redis_child_stop(&c);
}

static void test_redis_child_removes_a_dead_socket_file(void **state)
{
    char redis_dir[600], sock[700];
    snprintf(redis_dir, sizeof(redis_dir), "%s/redis", data_dir);
    snprintf(sock, sizeof(sock), "%s/redis.sock", redis_dir);
    assert_int_equal(mkdir(redis_dir, 0700), 0);
    FILE *f = fopen(sock, "w");
    fclose(f);
    nt_redis_child_t c;
    char *err = NULL;
    if (nt_redis_child_start(&c, NT_REDIS_SERVER, data_dir, &err) != NT_OK)
        fail_msg("start: %s", err);
    nt_redis_child_stop(&c);
}

static void test_redis_child_reports_a_bad_binary(void **state)
{
    nt_redis_child_t c;
    char *err = NULL;
    assert_int_not_equal(nt_redis_child_start(&c, "/nonexistent/redis-server", data_dir, &err),
                         NT_OK);
    assert_non_null(strstr(err, "/nonexistent/redis-server"));
    free(err);
    assert_int_equal(c.pid, 0);
    nt_redis_child_stop(&c);

    /* A binary that exits at once. */
    err = NULL;
    assert_int_not_equal(nt_redis_child_start(&c, "/bin/false", data_dir, &err), NT_OK);
    assert_non_null(strstr(err, "exited"));
    free(err);
}

static void test_redis_child_dies_with_its_parent(void **state)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t mid = fork();
    assert_true(mid >= 0);
    if (mid == 0) {
        nt_redis_child_t c;
        char *err = NULL;
        if (nt_redis_child_start(&c, NT_REDIS_SERVER, data_dir, &err) != NT_OK)
            _exit(1);
        if (write(p[1], &c.pid, sizeof(c.pid)) != sizeof(c.pid))
            _exit(1);
        pause();
        _exit(0);
    }
    close(p[1]);
    pid_t child = 0;
    assert_int_equal(read(p[0], &child, sizeof(child)), sizeof(child));
    close(p[0]);
    assert_int_equal(kill(child, 0), 0);
    kill(mid, SIGKILL);
    waitpid(mid, NULL, 0);
    int gone = 0;
    for (int i = 0; i < 500 && !gone; i++) {
        /* The grandchild is reparented; once it exits kill() fails (or it is a zombie of
         * init, reaped quickly). */
        if (kill(child, 0) != 0)
            gone = 1;
        else
            usleep(20000);
    }
    assert_true(gone);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_redis_child_starts_persists_and_restarts, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_redis_child_replaces_a_stale_server, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_redis_child_removes_a_dead_socket_file, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_redis_child_reports_a_bad_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_child_dies_with_its_parent, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
