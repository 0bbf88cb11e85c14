/* Configuration: `key value` lines in the style of redis.conf, every key also a flag
 * (--key value). The defaults run the demo with no file at all. */
#ifndef NT_CONFIG_H
#define NT_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nurture/channel.h"

typedef struct nt_token {
    char *role;    /* ops, rep or webhook */
    char *secret;
    char *name;    /* who: a rep's id for rep tokens, else the role */
} nt_token_t;

typedef struct nt_config {
    char *bind;             /* bind 127.0.0.1 */
    int port;               /* port 7700 */
    char *redis;            /* redis "" (embedded), host:port, or unix:/path */
    char *redis_server;     /* redis-server binary for the embedded one */
    char *data_dir;         /* data-dir ./nurture-data */
    char *modules_dir;      /* modules-dir (build tree's modules) */
    unsigned partitions;    /* partitions 64; fixed when the deployment is created */
    double time_scale;      /* time-scale 1 */
    int64_t time_start;     /* time-start "": plan time's start (ms since the epoch); 0 = now */
    unsigned batch;         /* batch 128: runs per fetch/apply round */
    int poll_ms;            /* poll-ms 10: shortest pause between looks at a partition */
    int lease_ms;           /* lease-ms 5000: partition lease period */
    int redis_timeout_ms;   /* redis-timeout-ms 5000 */
    char *worker_id;        /* worker-id <hostname>:<pid> */
    int log_level;          /* log-level info */
    char *log_file;         /* log-file "" (stderr) */
    size_t max_body;        /* max-body 1048576 bytes for JSON bodies */
    size_t max_plan_body;   /* max-plan-body 4194304 bytes for plan bodies */
    int timeline_max;       /* timeline-max 20 entries kept per lead */
    int dispatch_retries;   /* dispatch-retries 8 transient attempts before "failed" */
    char *public_url;       /* public-url "": http://<bind>:<port>; base of signed links */
    char *tracking_secret;  /* tracking-secret "": generated into <data-dir>/tracking.key */
    char *webhook_secret;   /* webhook-secret "": generated into <data-dir>/webhook.key */
    nt_token_t *tokens;     /* token <role> <secret> [name]; repeatable */
    size_t ntokens;
    nt_kv_t *extra;         /* channel.<name>.<key> <value> */
    size_t nextra;
} nt_config_t;

/* Fill cfg with the defaults. Returns 0, or -1 out of memory. */
int nt_config_defaults(nt_config_t *cfg);

/* Apply one key/value. Unknown keys and bad values are errors naming the key and the line.
 * Returns 0, or -1 with *errmsg set (malloc'd). */
int nt_config_set(nt_config_t *cfg, const char *key, const char *value, char **errmsg);

/* Read a file of `key value` lines (# comments, blank lines, values may be "quoted").
 * Returns 0, or -1 with *errmsg = "nurture.conf:12: unknown key 'prot'". */
int nt_config_load_file(nt_config_t *cfg, const char *path, char **errmsg);

/* Defaults, then --config FILE, then NURTURE_TOKEN_OPS/_REP/_WEBHOOK, NURTURE_TRACKING_SECRET and
 * NURTURE_WEBHOOK_SECRET from the environment,
 * then every other --key value flag in order. --help and --version are left to the caller
 * (returns 1 when seen). Returns 0, 1, or -1 with *errmsg set. */
int nt_config_from_args(nt_config_t *cfg, int argc, char **argv, char **errmsg);

/* channel.<channel>.<key>, or def. */
const char *nt_config_channel(const nt_config_t *cfg, const char *channel, const char *key,
                              const char *def);

void nt_config_fini(nt_config_t *cfg);

/* Print every key with its default and a line of help. */
void nt_config_usage(FILE *out);

#endif
