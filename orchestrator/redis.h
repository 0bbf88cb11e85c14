/* The daemon's Redis connection: hiredis async on the libevent loop, with what hiredis 0.14
 * lacks: a timeout on every command, reconnection with backoff, the embedded Lua scripts loaded
 * on every (re)connect and EVALSHA falling back to EVAL on NOSCRIPT.
 *
 * Every callback fires exactly once for each command accepted (NT_OK returned): with the reply
 * (borrowed, valid only inside the callback) and NT_OK, or with reply NULL and NT_ETIMEOUT,
 * NT_EUNAVAIL (connection lost) or NT_ECANCELED (shutting down). A Redis error reply
 * (REDIS_REPLY_ERROR) is delivered as NT_OK with the reply: the caller reads the message. */
#ifndef NT_REDIS_H
#define NT_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "nurture/rc.h"

struct event_base;
typedef struct nt_redis nt_redis_t;

typedef void nt_redis_cb(nt_rc_t rc, redisReply *reply, void *arg);
typedef void nt_redis_state_cb(int up, void *arg);

/* addr: "host:port" or "unix:/path". Connects asynchronously; returns NULL with *errmsg only
 * for a malformed address or out of memory. */
nt_redis_t *nt_redis_new(struct event_base *base, const char *addr, int timeout_ms,
                         char **errmsg);

/* Pending callbacks fire with NT_ECANCELED. NULL is a no-op. */
void nt_redis_free(nt_redis_t *r);

/* Called with up=1 after each connect (scripts loaded), up=0 on each loss. */
void nt_redis_on_state(nt_redis_t *r, nt_redis_state_cb *cb, void *arg);

/* Non-zero while connected and the scripts are loaded. */
int nt_redis_up(const nt_redis_t *r);

/* Send a command. Returns NT_OK (cb will fire once) or NT_EUNAVAIL when not connected, or
 * NT_ENOMEM (cb will not fire). */
nt_rc_t nt_redis_cmd(nt_redis_t *r, nt_redis_cb *cb, void *arg, const char *fmt, ...);
nt_rc_t nt_redis_argv(nt_redis_t *r, nt_redis_cb *cb, void *arg, int argc, const char **argv,
                      const size_t *lens);

/* Run the embedded script orchestrator/lua/<name>.lua: argv holds nkeys keys then the
 * arguments (lens may be NULL for NUL-terminated strings). EVALSHA, and on NOSCRIPT the same
 * call again as EVAL, transparently. Returns like nt_redis_argv, or NT_ENOTFOUND for an
 * unknown script name. */
nt_rc_t nt_redis_script(nt_redis_t *r, const char *name, nt_redis_cb *cb, void *arg, int nkeys,
                        int argc, const char **argv, const size_t *lens);

/* Counters for metrics and the bench: commands sent, and round trips (commands issued in the
 * same loop iteration travel together and count once). */
uint64_t nt_redis_commands(const nt_redis_t *r);
uint64_t nt_redis_roundtrips(const nt_redis_t *r);

/* The underlying redisAsyncContext (for plugins), NULL while disconnected. */
void *nt_redis_context(nt_redis_t *r);

#endif
