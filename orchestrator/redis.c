/* The daemon's Redis connection: hiredis async on libevent, with command timeouts, reconnection
 * with backoff and the embedded scripts. See redis.h for the callback contract.
 *
 * hiredis 0.14 has no timeout for async commands. Replies on one connection come back in the
 * order the commands were sent, so one periodic check of the oldest pending command is enough:
 * when it is older than the timeout, the connection is treated as broken and dropped, which
 * fails every pending command (NT_ETIMEOUT for the ones past their time, NT_EUNAVAIL for the
 * others) and starts a reconnect. The context is only ever freed from a libevent callback of
 * our own, never from inside a hiredis callback (its libevent adapter frees badly then). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/sha.h>

#include "clock.h"
#include "log.h"
#include "lua_scripts.h"
#include "redis.h"

typedef struct nt_req nt_req_t;

struct nt_req {
    nt_redis_t *r;
    nt_redis_cb *cb;
    void *arg;
    int64_t sent_ms;      /* monotonic */
    int done;             /* cb already fired (timeout or failure) */
    int script;           /* index into nt_lua_scripts, or -1 */
    int argc;             /* kept only for scripts, to re-send as EVAL on NOSCRIPT */
    char **argv;
    size_t *lens;
    nt_req_t *prev, *next;
};

struct nt_redis {
    struct event_base *base;
    char *host;              /* TCP host, or NULL for unix */
    int port;
    char *path;              /* unix socket path */
    int timeout_ms;
    redisAsyncContext *ac;
    int connected;           /* TCP/unix connection established */
    int up;                  /* connected and scripts loaded */
    int loading;             /* script loads outstanding */
    int64_t connect_ms;      /* when the current connect started */
    int backoff_ms;
    struct event *reconnect_ev;
    struct event *check_ev;  /* periodic timeout check */
    struct event *drop_ev;   /* zero-delay: drop the connection outside hiredis callbacks */
    struct event *rt_ev;     /* zero-delay: end of the current round trip */
    int rt_open;
    uint64_t commands, roundtrips;
    nt_req_t *head, *tail;   /* pending, in send order */
    char (*sha)[41];
    nt_redis_state_cb *state_cb;
    void *state_arg;
    int freeing;
};

static void start_connect(nt_redis_t *r);

static void req_unlink(nt_redis_t *r, nt_req_t *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        r->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        r->tail = q->prev;
    q->prev = q->next = NULL;
}

static void req_free(nt_req_t *q)
{
    if (q->argv) {
        for (int i = 0; i < q->argc; i++)
            free(q->argv[i]);
        free(q->argv);
        free(q->lens);
    }
    free(q);
}

static void set_state(nt_redis_t *r, int up)
{
    if (r->up == up)
        return;
    r->up = up;
    if (r->state_cb && !r->freeing)
        r->state_cb(up, r->state_arg);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* A command was handed to hiredis: queue q as pending and count it. */
static void track(nt_redis_t *r, nt_req_t *q)
{
    q->sent_ms = nt_mono_ms();
    if (!q->prev && r->head != q) { /* not yet linked */
        q->prev = r->tail;
        if (r->tail)
            r->tail->next = q;
        else
            r->head = q;
        r->tail = q;
    }
    r->commands++;
    if (!r->rt_open) {
        r->rt_open = 1;
        r->roundtrips++;
        event_active(r->rt_ev, EV_TIMEOUT, 0);
    }
}

static int send_argv(nt_redis_t *r, nt_req_t *q, int argc, const char **argv, const size_t *lens)
{
    if (redisAsyncCommandArgv(r->ac, on_reply, q, argc, argv, lens) != REDIS_OK)
        return -1;
    track(r, q);
    return 0;
}

/* Re-send a script as EVAL after NOSCRIPT. Returns 0 when re-sent. */
static int resend_as_eval(nt_redis_t *r, nt_req_t *q)
{
    const char **argv;
    size_t *lens;
    int rc;

    if (!r->connected || q->script < 0)
        return -1;
    argv = malloc(sizeof(*argv) * (size_t)q->argc);
    lens = malloc(sizeof(*lens) * (size_t)q->argc);
    if (!argv || !lens) {
        free(argv);
        free(lens);
        return -1;
    }
    for (int i = 0; i < q->argc; i++) {
        argv[i] = q->argv[i];
        lens[i] = q->lens[i];
    }
    argv[0] = "EVAL";
    lens[0] = 4;
    argv[1] = nt_lua_scripts[q->script].source;
    lens[1] = strlen(argv[1]);
    req_unlink(r, q);
    rc = send_argv(r, q, q->argc, argv, lens);
    free(argv);
    free(lens);
    q->script = -1; /* once */
    return rc;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    nt_req_t *q = privdata;
    nt_redis_t *r = q->r;
    redisReply *rep = reply;

    (void)ac;
    if (rep && rep->type == REDIS_REPLY_ERROR && q->script >= 0 && !q->done &&
        strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        if (resend_as_eval(r, q) == 0)
            return;
    }
    req_unlink(r, q);
    if (!q->done) {
        q->done = 1;
        q->cb(rep ? NT_OK : (r->freeing ? NT_ECANCELED : NT_EUNAVAIL), rep, q->arg);
    }
    req_free(q);
}

static void on_rt_end(evutil_socket_t fd, short what, void *arg)
{
    nt_redis_t *r = arg;

    (void)fd;
    (void)what;
    r->rt_open = 0;
}

/* Fail everything pending: hiredis calls each pending callback with a NULL reply when the
 * context is freed, which on_reply turns into NT_EUNAVAIL (or NT_ECANCELED when freeing). */
static void drop_connection(nt_redis_t *r, const char *why)
{
    redisAsyncContext *ac = r->ac;

    if (!ac)
        return;
    if (!r->freeing)
        nt_log_warn("redis", "connection dropped: %s", why);
    r->ac = NULL;
    r->connected = 0;
    r->loading = 0;
    set_state(r, 0);
    ac->data = NULL;
    redisAsyncFree(ac);
    /* Requests that hiredis had not accepted are not in its queue; nothing else is pending. */
    if (!r->freeing) {
        struct timeval tv = {r->backoff_ms / 1000, (r->backoff_ms % 1000) * 1000};

        evtimer_add(r->reconnect_ev, &tv);
        r->backoff_ms = r->backoff_ms * 2 > 5000 ? 5000 : r->backoff_ms * 2;
    }
}

static void on_drop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    drop_connection(arg, "protocol error or timeout");
}

static void on_check(evutil_socket_t fd, short what, void *arg)
{
    nt_redis_t *r = arg;
    int64_t now = nt_mono_ms();

    (void)fd;
    (void)what;
    if (r->ac && !r->connected && now - r->connect_ms > r->timeout_ms) {
        drop_connection(r, "connect timed out");
        return;
    }
    if (r->head && now - r->head->sent_ms > r->timeout_ms) {
        /* Tell the overdue ones first, then drop: the rest fail with NT_EUNAVAIL. */
        for (nt_req_t *q = r->head; q; q = q->next) {
            if (q->done || now - q->sent_ms <= r->timeout_ms)
                continue;
            q->done = 1;
            q->cb(NT_ETIMEOUT, NULL, q->arg);
        }
        drop_connection(r, "command timed out");
    }
}

static void on_script_loaded(nt_rc_t rc, redisReply *reply, void *arg)
{
    nt_redis_t *r = arg;

    if (rc != NT_OK)
        return; /* connection gone; reconnect restarts loading */
    if (reply->type == REDIS_REPLY_ERROR) {
        nt_log_error("redis", "SCRIPT LOAD failed: %s", reply->str);
        event_active(r->drop_ev, EV_TIMEOUT, 0);
        return;
    }
    if (--r->loading == 0) {
        r->backoff_ms = 100;
        nt_log_info("redis", "connected, %zu scripts loaded", nt_lua_nscripts);
        set_state(r, 1);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    nt_redis_t *r = ac->data;

    if (!r)
        return;
    if (status != REDIS_OK) {
        nt_log_warn("redis", "connect failed: %s", ac->errstr);
        /* hiredis frees the context itself after a failed connect. */
        r->ac = NULL;
        r->connected = 0;
        struct timeval tv = {r->backoff_ms / 1000, (r->backoff_ms % 1000) * 1000};
        evtimer_add(r->reconnect_ev, &tv);
        r->backoff_ms = r->backoff_ms * 2 > 5000 ? 5000 : r->backoff_ms * 2;
        return;
    }
    r->connected = 1;
    r->loading = (int)nt_lua_nscripts;
    for (size_t i = 0; i < nt_lua_nscripts; i++) {
        nt_req_t *q = calloc(1, sizeof(*q));
        const char *argv[3] = {"SCRIPT", "LOAD", nt_lua_scripts[i].source};
        size_t lens[3] = {6, 4, strlen(nt_lua_scripts[i].source)};

        if (!q || (q->r = r, q->cb = on_script_loaded, q->arg = r, q->script = -1,
                   send_argv(r, q, 3, argv, lens) != 0)) {
            free(q);
            event_active(r->drop_ev, EV_TIMEOUT, 0);
            return;
        }
    }
    if (nt_lua_nscripts == 0)
        set_state(r, 1);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    nt_redis_t *r = ac->data;

    if (!r)
        return; /* we freed it ourselves */
    nt_log_warn("redis", "disconnected%s%s", status == REDIS_OK ? "" : ": ",
                status == REDIS_OK ? "" : ac->errstr);
    r->ac = NULL;
    r->connected = 0;
    r->loading = 0;
    set_state(r, 0);
    if (!r->freeing) {
        struct timeval tv = {r->backoff_ms / 1000, (r->backoff_ms % 1000) * 1000};

        evtimer_add(r->reconnect_ev, &tv);
        r->backoff_ms = r->backoff_ms * 2 > 5000 ? 5000 : r->backoff_ms * 2;
    }
}

static void start_connect(nt_redis_t *r)
{
    redisAsyncContext *ac;

    ac = r->path ? redisAsyncConnectUnix(r->path) : redisAsyncConnect(r->host, r->port);
    if (!ac || ac->err) {
        struct timeval tv = {r->backoff_ms / 1000, (r->backoff_ms % 1000) * 1000};

        nt_log_warn("redis", "connect failed: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        evtimer_add(r->reconnect_ev, &tv);
        r->backoff_ms = r->backoff_ms * 2 > 5000 ? 5000 : r->backoff_ms * 2;
        return;
    }
    ac->data = r;
    r->ac = ac;
    r->connect_ms = nt_mono_ms();
    redisLibeventAttach(ac, r->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_connect(arg);
}

nt_redis_t *nt_redis_new(struct event_base *base, const char *addr, int timeout_ms,
                         char **errmsg)
{
    nt_redis_t *r = calloc(1, sizeof(*r));
    struct timeval tick = {0, 100 * 1000};

    *errmsg = NULL;
    if (!r)
        goto nomem;
    r->base = base;
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    r->backoff_ms = 100;
    if (strncmp(addr, "unix:", 5) == 0) {
        if (!addr[5]) {
            *errmsg = strdup("redis address 'unix:' names no socket path");
            goto fail;
        }
        r->path = strdup(addr + 5);
    } else {
        const char *colon = strrchr(addr, ':');
        char *end;
        long port;

        if (!colon || colon == addr) {
            if (asprintf(errmsg, "redis address '%s' is neither host:port nor unix:/path",
                         addr) < 0)
                *errmsg = NULL;
            goto fail;
        }
        port = strtol(colon + 1, &end, 10);
        if (*end || port <= 0 || port > 65535) {
            if (asprintf(errmsg, "redis address '%s' has a bad port", addr) < 0)
                *errmsg = NULL;
            goto fail;
        }
        r->host = strndup(addr, (size_t)(colon - addr));
        r->port = (int)port;
    }
    r->sha = calloc(nt_lua_nscripts ? nt_lua_nscripts : 1, sizeof(*r->sha));
    r->reconnect_ev = evtimer_new(base, on_reconnect, r);
    r->check_ev = event_new(base, -1, EV_PERSIST, on_check, r);
    r->drop_ev = evtimer_new(base, on_drop, r);
    r->rt_ev = evtimer_new(base, on_rt_end, r);
    if ((!r->host && !r->path) || !r->sha || !r->reconnect_ev || !r->check_ev || !r->drop_ev ||
        !r->rt_ev)
        goto nomem;
    for (size_t i = 0; i < nt_lua_nscripts; i++) {
        unsigned char md[SHA_DIGEST_LENGTH];

        SHA1((const unsigned char *)nt_lua_scripts[i].source, strlen(nt_lua_scripts[i].source),
             md);
        for (int b = 0; b < SHA_DIGEST_LENGTH; b++)
            snprintf(r->sha[i] + 2 * b, 3, "%02x", md[b]);
    }
    evtimer_add(r->check_ev, &tick);
    start_connect(r);
    return r;

nomem:
    if (!*errmsg)
        *errmsg = strdup("out of memory");
fail:
    nt_redis_free(r);
    return NULL;
}

void nt_redis_free(nt_redis_t *r)
{
    if (!r)
        return;
    r->freeing = 1;
    if (r->ac)
        drop_connection(r, "shutting down");
    if (r->reconnect_ev)
        event_free(r->reconnect_ev);
    if (r->check_ev)
        event_free(r->check_ev);
    if (r->drop_ev)
        event_free(r->drop_ev);
    if (r->rt_ev)
        event_free(r->rt_ev);
    free(r->sha);
    free(r->host);
    free(r->path);
    free(r);
}

void nt_redis_on_state(nt_redis_t *r, nt_redis_state_cb *cb, void *arg)
{
    r->state_cb = cb;
    r->state_arg = arg;
}

int nt_redis_up(const nt_redis_t *r)
{
    return r && r->up;
}

nt_rc_t nt_redis_argv(nt_redis_t *r, nt_redis_cb *cb, void *arg, int argc, const char **argv,
                      const size_t *lens)
{
    nt_req_t *q;

    if (!r->up || !r->ac)
        return NT_EUNAVAIL;
    q = calloc(1, sizeof(*q));
    if (!q)
        return NT_ENOMEM;
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->script = -1;
    if (send_argv(r, q, argc, argv, lens) != 0) {
        free(q);
        return NT_ENOMEM;
    }
    return NT_OK;
}

nt_rc_t nt_redis_cmd(nt_redis_t *r, nt_redis_cb *cb, void *arg, const char *fmt, ...)
{
    nt_req_t *q;
    va_list ap;
    int rc;

    if (!r->up || !r->ac)
        return NT_EUNAVAIL;
    q = calloc(1, sizeof(*q));
    if (!q)
        return NT_ENOMEM;
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->script = -1;
    va_start(ap, fmt);
    rc = redisvAsyncCommand(r->ac, on_reply, q, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        free(q);
        return NT_ENOMEM;
    }
    track(r, q);
    return NT_OK;
}

nt_rc_t nt_redis_script(nt_redis_t *r, const char *name, nt_redis_cb *cb, void *arg, int nkeys,
                        int argc, const char **argv, const size_t *lens)
{
    size_t idx;
    nt_req_t *q;
    const char **av;
    size_t *al;
    char nk[16];
    int n = argc + 3;

    for (idx = 0; idx < nt_lua_nscripts; idx++)
        if (strcmp(nt_lua_scripts[idx].name, name) == 0)
            break;
    if (idx == nt_lua_nscripts)
        return NT_ENOTFOUND;
    if (!r->up || !r->ac)
        return NT_EUNAVAIL;
    q = calloc(1, sizeof(*q));
    av = malloc(sizeof(*av) * (size_t)n);
    al = malloc(sizeof(*al) * (size_t)n);
    if (!q || !av || !al)
        goto nomem;
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->script = (int)idx;
    snprintf(nk, sizeof(nk), "%d", nkeys);
    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = r->sha[idx];
    al[1] = 40;
    av[2] = nk;
    al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    /* Keep a copy to re-send as EVAL on NOSCRIPT (after a Redis restart or failover). */
    q->argc = n;
    q->argv = calloc((size_t)n, sizeof(*q->argv));
    q->lens = malloc(sizeof(*q->lens) * (size_t)n);
    if (!q->argv || !q->lens)
        goto nomem;
    for (int i = 0; i < n; i++) {
        q->argv[i] = malloc(al[i] + 1);
        if (!q->argv[i])
            goto nomem;
        memcpy(q->argv[i], av[i], al[i]);
        q->argv[i][al[i]] = '\0';
        q->lens[i] = al[i];
    }
    if (send_argv(r, q, n, av, al) != 0)
        goto nomem;
    free(av);
    free(al);
    return NT_OK;

nomem:
    free(av);
    free(al);
    if (q)
        req_free(q);
    return NT_ENOMEM;
}

uint64_t nt_redis_commands(const nt_redis_t *r)
{
    return r->commands;
}

uint64_t nt_redis_roundtrips(const nt_redis_t *r)
{
    return r->roundtrips;
}

void *nt_redis_context(nt_redis_t *r)
{
    return r->up ? r->ac : NULL;
}
