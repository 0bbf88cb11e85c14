/* The embedded redis-server: started by nurtured when no Redis address is configured, on a
 * private unix socket with an append-only file under the data directory, stopped on exit. */
#ifndef NT_REDIS_CHILD_H
#define NT_REDIS_CHILD_H

#include <sys/types.h>

#include "nurture/rc.h"

typedef struct nt_redis_child {
    pid_t pid;
    char *sock;   /* unix socket path */
    char *dir;    /* working directory (AOF, logs) */
} nt_redis_child_t;

/* Start bin with: unixsocket <data_dir>/redis/redis.sock (perm 700), port 0, dir
 * <data_dir>/redis, appendonly yes, appendfsync everysec, maxmemory-policy noeviction, no RDB
 * snapshots, and a parent-death signal so it never outlives a killed nurtured. Blocks (at
 * start-up, before the loop runs) until it answers PING, at most 10 s. A stale server left on
 * the socket by an earlier crash is shut down first. Returns NT_OK or an error with *errmsg. */
nt_rc_t nt_redis_child_start(nt_redis_child_t *c, const char *bin, const char *data_dir,
                             char **errmsg);

/* SIGTERM (Redis flushes the AOF), wait for it, free. Safe to call twice. */
void nt_redis_child_stop(nt_redis_child_t *c);

#endif
