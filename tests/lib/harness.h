/* The test harness: free ports, temporary directories, a real redis-server, nurtured as a
 * process, HTTP through libcurl, plan compilation with protoc.
 *
 * Every process the harness starts is registered and killed from an atexit handler, and gets a
 * parent-death signal, so a failing assertion (cmocka jumps out of the test) or a killed test
 * program leaves nothing running. NT_TEST_KEEP=1 in the environment keeps data directories. */
#ifndef NT_TEST_HARNESS_H
#define NT_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <hiredis.h>
#include <jansson.h>

#include "modules.h"

/* A free TCP port on 127.0.0.1 (bound to port 0, read back, closed), or -1. */
int nt_test_free_port(void);

/* A new directory /tmp/<prefix>-XXXXXX (malloc'd; caller frees), or NULL. */
char *nt_test_tmpdir(const char *prefix);

/* Remove dir and everything under it. Refuses paths outside /tmp/. */
void nt_test_rmrf(const char *dir);

/* ---- redis-server ---- */

typedef struct nt_test_redis {
    pid_t pid;
    int port;
    char *dir;
} nt_test_redis_t;

/* Start redis-server on 127.0.0.1:<free port> in a new tmp dir with appendonly yes, appendfsync
 * everysec and no RDB snapshots; waits for PING up to 10 s. Returns 0 or -1. */
int nt_test_redis_start(nt_test_redis_t *r);

/* SHUTDOWN (flushes the AOF), then start again on the same port and dir. Returns 0 or -1. */
int nt_test_redis_restart(nt_test_redis_t *r);

/* Stop the server (SHUTDOWN, then SIGKILL after 10 s) and keep the dir. Returns 0 when it
 * stopped cleanly, -1 otherwise. */
int nt_test_redis_stop_only(nt_test_redis_t *r);

/* Stop the server, remove its dir, free. Safe to call twice. */
void nt_test_redis_stop(nt_test_redis_t *r);

/* A sync connection (5 s timeouts), or NULL. Caller redisFree()s. */
redisContext *nt_test_redis_connect(const nt_test_redis_t *r);

/* "127.0.0.1:<port>" (malloc'd; caller frees). */
char *nt_test_redis_addr(const nt_test_redis_t *r);

/* The daemon's own async connection (orchestrator/redis.c) to r on base, returned once it is
 * connected and has loaded the scripts (the loop is run up to 10 s), else NULL. */
struct event_base;
struct nt_redis;
struct nt_redis *nt_test_redis_async(struct event_base *base, const nt_test_redis_t *r);

/* The start of an integration test of daemon code on a loop of its own: log warnings only, run
 * the clock at real time, start a redis-server into srv, connect *sync to it and attach *redis
 * (nt_test_redis_async) to a new *base. Returns 0, or -1 (nt_test_loop_stop frees what was
 * made). */
int nt_test_loop_start(nt_test_redis_t *srv, redisContext **sync, struct event_base **base,
                       struct nt_redis **redis);

/* Free what nt_test_loop_start made (NULLs skipped) and stop the server. */
void nt_test_loop_stop(nt_test_redis_t *srv, redisContext *sync, struct event_base *base,
                       struct nt_redis *redis);

/* ---- an SMTP server ---- */

typedef struct nt_test_smtp {
    pid_t pid;
    int port;
    char *dir;           /* the server's tmp dir */
    char *msgs;          /* <dir>/received: one NNNN.eml per accepted message */
    char url[64];        /* smtp://127.0.0.1:<port> */
} nt_test_smtp_t;

/* Start Debian's aiosmtpd (/usr/bin/python3, whatever python3 is first on the PATH) on a free
 * port with the tests' handler: every accepted message is saved as <msgs>/NNNN.eml (raw, CRLF
 * as received) after two lines X-Test-Mail-From and X-Test-Rcpt-To; RCPT TO an address
 * starting with "reject" is answered 550 5.1.1; the first DATA of each Message-ID for a
 * recipient starting with "tempfail" is answered 451 4.3.0. Waits until it accepts connections
 * (10 s). Returns 0, or -1. */
int nt_test_smtp_start(nt_test_smtp_t *s);

/* The same server with STARTTLS required (cert and key: PEM files) and AUTH (PLAIN or LOGIN)
 * with user and password required after it. Returns 0, or -1. */
int nt_test_smtp_start_tls(nt_test_smtp_t *s, const char *cert, const char *key,
                           const char *user, const char *password);

/* Kill the server (SIGKILL: connections drop as in a crash), keeping its port, dir and the
 * messages it saved. */
void nt_test_smtp_down(nt_test_smtp_t *s);

/* Start a server killed by nt_test_smtp_down again on the same port (the plain handler, without
 * TLS or AUTH). Returns 0, or -1. */
int nt_test_smtp_up(nt_test_smtp_t *s);

/* Stop the server, remove its dir (unless NT_TEST_KEEP), free. Safe to call twice. */
void nt_test_smtp_stop(nt_test_smtp_t *s);

/* ---- nurtured ---- */

typedef struct nt_test_daemon {
    pid_t pid;
    int port;
    char *data_dir;
    char *log_path;
    char url[64];        /* http://127.0.0.1:<port> */
    char *ops_token;
    char *rep_token;     /* name rep1 */
    char *webhook_token;
    char **argv;         /* the command line, kept for start_again (harness-owned) */
} nt_test_daemon_t;

/* Run NT_NURTURED_BIN with --port <free> --data-dir <tmp> --log-file <data_dir>/nurtured.log
 * --modules-dir <build>/modules, three random tokens (ops, rep named rep1, webhook), --redis
 * redis_addr when non-NULL (else the daemon embeds its own Redis) and extra_args (a
 * NULL-terminated list, may be NULL). Waits up to 15 s for GET /health to answer 200.
 * Returns 0, or -1 (the daemon log is printed). */
int nt_test_daemon_start(nt_test_daemon_t *d, const char *redis_addr,
                         const char *const *extra_args);

/* Start again with the same port, data dir, tokens and args (after a crash or a stop with
 * nt_test_daemon_wait). A still running daemon is an error. Returns 0 or -1. */
int nt_test_daemon_start_again(nt_test_daemon_t *d);

/* Send sig to the daemon (when running). */
void nt_test_daemon_signal(nt_test_daemon_t *d, int sig);

/* Wait for the daemon to exit. Returns its exit status (128 + signal when killed by one), or -1
 * after timeout_ms. */
int nt_test_daemon_wait(nt_test_daemon_t *d, int timeout_ms);

/* SIGTERM, wait (SIGKILL after 15 s), print the log when it did not exit with status 0, free,
 * remove the data dir unless NT_TEST_KEEP is set. Safe to call twice. */
void nt_test_daemon_stop(nt_test_daemon_t *d);

/* Print the last 50 lines of the daemon log to stderr. */
void nt_test_daemon_dump_log(const nt_test_daemon_t *d);

/* Kill everything the harness started and still runs (printing the logs of daemons, which were
 * left running by a failed test). For cmocka teardowns; also runs at exit. */
void nt_test_cleanup_all(void);

/* ---- HTTP ---- */

typedef struct nt_test_resp {
    long status;
    char *body;          /* NUL-terminated, "" when empty */
    size_t len;
    json_t *json;        /* when the body is JSON, else NULL */
    char *content_type;  /* or NULL */
} nt_test_resp_t;

/* One request (30 s timeout). token: "Authorization: Bearer <token>" when non-NULL. Returns 0
 * when a response arrived (out filled; nt_test_resp_fini it), -1 otherwise (out zeroed). */
int nt_test_http(const char *method, const char *url, const char *token,
                 const char *content_type, const void *body, size_t len, nt_test_resp_t *out);

void nt_test_resp_fini(nt_test_resp_t *r);

/* nt_test_http against d->url + path with a JSON body (or NULL). */
int nt_test_json(nt_test_daemon_t *d, const char *method, const char *path, const char *token,
                 const char *json_body, nt_test_resp_t *out);

/* ---- plans, waiting ---- */

/* protoc --encode=nt.Workflow on a text-format plan. *out is malloc'd. Returns 0 or -1. */
int nt_test_compile_plan(const char *textpb_path, uint8_t **out, size_t *len);

/* Quoted-printable (a message as the email channel writes it) decoded in place: soft line
 * breaks removed, =XX as the byte. */
void nt_test_qp_decode(char *s);

/* The path "/t/<kind>/<token>" of the k-th (from 0) signed link of that kind in s into out
 * (cap bytes). Returns 0, or -1 when s has fewer such links (or out is too small). */
int nt_test_nth_link(const char *s, char kind, int k, char *out, size_t cap);

/* Load the channel plugins of dir and find channel: its ops, with *mods to nt_modules_free.
 * NULL, after saying why on stderr, when they do not load or the channel is not among them. */
const nt_channel_ops_t *nt_test_channel_load(const char *dir, const char *channel,
                                             nt_modules_t **mods);

/* Call pred(arg) every 20 ms until it returns non-zero. Returns 0, or -1 after timeout_ms. */
int nt_test_wait_until(int (*pred)(void *), void *arg, int timeout_ms);

#endif
