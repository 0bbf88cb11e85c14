/* The embedded redis-server: a child process on a private unix socket under the data directory.
 *
 * Start-up blocks (the loop is not running yet): poll the socket with hiredis sync PINGs. The
 * child dies with its parent (PR_SET_PDEATHSIG), and runs in its own process group so that a
 * Ctrl-C on the terminal reaches only nurtured, which then stops Redis after its own shutdown. */
#include "redis_child.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

#include "errmsg.h"
#include "log.h"

#define START_LIMIT_MS 10000
#define STOP_LIMIT_MS 10000
#define POLL_MS 20

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int mkdir_p(const char *path, mode_t mode)
{
    char *p = strdup(path);
    if (p == NULL)
        return -1;
    for (char *s = p + 1; *s != '\0'; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, mode) != 0 && errno != EEXIST) {
                free(p);
                return -1;
            }
            *s = '/';
        }
    }
    int rc = mkdir(p, mode) != 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

/* PING over the socket. Returns 1 for PONG, 0 for an answer that is not PONG yet (e.g.
 * LOADING), -1 when nothing answers. */
static int ping(const char *sock)
{
    struct timeval tv = {1, 0};
    redisContext *rc = redisConnectUnixWithTimeout(sock, tv);
    if (rc == NULL)
        return -1;
    if (rc->err) {
        redisFree(rc);
        return -1;
    }
    redisSetTimeout(rc, tv);
    redisReply *r = redisCommand(rc, "PING");
    int res = -1;
    if (r != NULL) {
        res = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0 ? 1 : 0;
        freeReplyObject(r);
    }
    redisFree(rc);
    return res;
}

/* A server left on our socket by a crashed nurtured (its child outlived it): ask it to shut
 * down, which flushes the AOF, and wait until the socket is gone. A socket file with no server
 * behind it is removed. Returns 0, or -1 with *errmsg. */
static int clear_stale(const char *sock, char **errmsg)
{
    struct stat st;
    if (lstat(sock, &st) != 0)
        return 0;
    if (ping(sock) < 0) {
        unlink(sock);
        return 0;
    }
    nt_log_warn("redis", "a redis-server from an earlier run still answers on %s: shutting it "
                "down", sock);
    struct timeval tv = {5, 0};
    redisContext *rc = redisConnectUnixWithTimeout(sock, tv);
    if (rc != NULL && !rc->err) {
        redisSetTimeout(rc, tv);
        redisReply *r = redisCommand(rc, "SHUTDOWN");
        if (r != NULL) {
            /* A reply means it refused (e.g. it could not write the AOF). */
            nt_log_error("redis", "stale server refused SHUTDOWN: %s",
                         r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            freeReplyObject(r);
        }
    }
    if (rc != NULL)
        redisFree(rc);
    int64_t until = mono_ms() + STOP_LIMIT_MS;
    while (lstat(sock, &st) == 0) {
        if (mono_ms() > until) {
            nt_errmsg_set(errmsg,
                          nt_msgf("a redis-server on %s from an earlier run did not shut down "
                                  "within %d s",
                                  sock, STOP_LIMIT_MS / 1000));
            return -1;
        }
        sleep_ms(POLL_MS);
    }
    return 0;
}

static void reap(pid_t pid, int limit_ms)
{
    int64_t until = mono_ms() + limit_ms;
    for (;;) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return;
        if (mono_ms() > until)
            break;
        sleep_ms(POLL_MS);
    }
    nt_log_warn("redis", "redis-server pid %ld did not stop within %d s: killing it", (long)pid,
                limit_ms / 1000);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

static void child_exec(const char *bin, const char *dir, const char *sock, pid_t parent)
{
    /* Die with nurtured; the parent may already be gone before prctl took effect. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(1);
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    int fd = open("/dev/null", O_RDONLY);
    if (fd >= 0 && fd != STDIN_FILENO) {
        dup2(fd, STDIN_FILENO);
        close(fd);
    }
    long maxfd = sysconf(_SC_OPEN_MAX);
    if (maxfd < 0 || maxfd > 65536)
        maxfd = 65536;
    for (int i = 3; i < maxfd; i++)
        close(i);

    char logfile[4200];
    snprintf(logfile, sizeof(logfile), "%s/redis.log", dir);
    const char *argv[] = {
        bin, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--dir", dir,
        "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction",
        "--save", "", "--daemonize", "no", "--logfile", logfile, NULL,
    };
    execv(bin, (char *const *)argv);
    fprintf(stderr, "nurtured: cannot run %s: %s\n", bin, strerror(errno));
    _exit(127);
}

nt_rc_t nt_redis_child_start(nt_redis_child_t *c, const char *bin, const char *data_dir,
                             char **errmsg)
{
    if (errmsg != NULL)
        *errmsg = NULL;
    memset(c, 0, sizeof(*c));
    c->dir = nt_msgf("%s/redis", data_dir);
    c->sock = nt_msgf("%s/redis/redis.sock", data_dir);
    if (c->dir == NULL || c->sock == NULL) {
        nt_errmsg_set(errmsg, nt_msgf("out of memory"));
        goto fail;
    }
    if (strlen(c->sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        nt_errmsg_set(errmsg, nt_msgf("the socket path %s is too long for a unix socket; use a "
                                      "shorter data-dir",
                                      c->sock));
        goto fail;
    }
    if (mkdir_p(c->dir, 0700) != 0) {
        nt_errmsg_set(errmsg, nt_msgf("cannot create %s: %s", c->dir, strerror(errno)));
        goto fail;
    }
    if (access(bin, X_OK) != 0) {
        nt_errmsg_set(errmsg, nt_msgf("cannot run %s: %s", bin, strerror(errno)));
        goto fail;
    }
    if (clear_stale(c->sock, errmsg) != 0)
        goto fail;

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        nt_errmsg_set(errmsg, nt_msgf("fork: %s", strerror(errno)));
        goto fail;
    }
    if (pid == 0)
        child_exec(bin, c->dir, c->sock, parent);
    c->pid = pid;

    int64_t until = mono_ms() + START_LIMIT_MS;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            c->pid = 0;
            nt_errmsg_set(errmsg,
                          nt_msgf("redis-server exited at start-up (%s %d); see %s/redis.log",
                                  WIFEXITED(status) ? "status" : "signal",
                                  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                                  c->dir));
            goto fail;
        }
        if (ping(c->sock) == 1)
            break;
        if (mono_ms() > until) {
            nt_errmsg_set(errmsg, nt_msgf("redis-server did not answer PING on %s within %d s; see "
                                          "%s/redis.log",
                                          c->sock, START_LIMIT_MS / 1000, c->dir));
            goto fail;
        }
        sleep_ms(POLL_MS);
    }
    nt_log_info("redis", "embedded redis-server pid %ld on %s", (long)pid, c->sock);
    return NT_OK;

fail:
    nt_redis_child_stop(c);
    return NT_ERR;
}

void nt_redis_child_stop(nt_redis_child_t *c)
{
    if (c == NULL)
        return;
    if (c->pid > 0) {
        if (kill(c->pid, SIGTERM) == 0)
            reap(c->pid, STOP_LIMIT_MS);
        else
            waitpid(c->pid, NULL, WNOHANG);
        nt_log_info("redis", "embedded redis-server pid %ld stopped", (long)c->pid);
        c->pid = 0;
    }
    free(c->sock);
    free(c->dir);
    c->sock = NULL;
    c->dir = NULL;
}
