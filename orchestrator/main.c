/* nurtured: the nurture daemon. Wires configuration, the embedded or external Redis, the plan
 * cache, channel plugins, the worker and the HTTP API onto one libevent loop. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/rand.h>

#include "clock.h"
#include "config.h"
#include "curlm.h"
#include "http.h"
#include "keys.h"
#include "log.h"
#include "modules.h"
#include "plans.h"
#include "redis.h"
#include "redis_child.h"
#include "tasks.h"
#include "worker.h"

static struct {
    nt_config_t cfg;
    struct event_base *base;
    nt_redis_child_t child;
    nt_redis_t *redis;
    nt_curlm_t *curlm;
    nt_plans_t *plans;
    nt_modules_t *mods;
    nt_worker_t *worker;
    nt_tasks_t *tasks;
    nt_http_t *http;
    nt_http_deps_t hd; /* what the HTTP API and host.update_lead write leads with */
    int stopping;
} d;

/* ---- the plugin host ---------------------------------------------------------------------- */

/* channel.<name>.<key>; tracking_secret and public_url default to the daemon's own, so that
 * plugins sign links (include/nurture/track.h) that nurtured verifies. */
static const char *host_config(const char *channel, const char *key, const char *def)
{
    const char *v = nt_config_channel(&d.cfg, channel, key, NULL);

    if (v)
        return v;
    if (key && strcmp(key, "tracking_secret") == 0 && d.cfg.tracking_secret)
        return d.cfg.tracking_secret;
    if (key && strcmp(key, "public_url") == 0 && d.cfg.public_url)
        return d.cfg.public_url;
    return def;
}

static nt_rc_t host_post_event(const char *lead_id, const char *type, const nt_kv_t *attrs,
                               size_t nattrs)
{
    return d.worker ? nt_worker_post_event(d.worker, lead_id, type, attrs, nattrs)
                    : NT_EUNAVAIL;
}

/* A transfer a plugin started through host.curl_add. Once the plugins are shut down (their
 * code may be unmapped) a late completion only cleans the handle up. */
typedef struct host_xfer {
    void (*done)(void *easy, int curl_code, void *arg);
    void *arg;
} host_xfer_t;

static int host_plugins_down;

static void host_curl_done(CURL *easy, CURLcode result, void *arg)
{
    host_xfer_t *x = arg;

    if (host_plugins_down)
        curl_easy_cleanup(easy);
    else
        x->done(easy, (int)result, x->arg);
    free(x);
}

static int host_curl_add(void *easy, void (*done)(void *easy, int curl_code, void *arg),
                         void *arg)
{
    host_xfer_t *x;

    if (!d.curlm || !easy || !done || host_plugins_down)
        return -1;
    x = malloc(sizeof(*x));
    if (!x)
        return -1;
    x->done = done;
    x->arg = arg;
    if (nt_curlm_add(d.curlm, easy, host_curl_done, x) != 0) {
        free(x);
        return -1;
    }
    return 0;
}

/* The call channel's tasks live in the daemon (tasks.c): plugins have no Redis handle. */
static nt_rc_t host_create_task(const nt_message_t *msg, const nt_kv_t *fields, size_t nfields,
                                nt_channel_done_fn *done, void *done_arg)
{
    return d.tasks ? nt_tasks_create(d.tasks, msg, fields, nfields, done, done_arg)
                   : NT_EUNAVAIL;
}

/* A lead write a plugin asked for through host.update_lead. Once the plugins are shut down
 * (their code may be unmapped; they completed what waited on the write) a late completion is
 * dropped. */
typedef struct host_upd {
    void (*done)(void *arg, nt_rc_t rc);
    void *arg;
} host_upd_t;

static void host_lead_done(void *arg, nt_rc_t rc)
{
    host_upd_t *u = arg;

    if (!host_plugins_down)
        u->done(u->arg, rc);
    free(u);
}

static nt_rc_t host_update_lead(const char *lead_id, const nt_kv_t *attrs, size_t nattrs,
                                void (*done)(void *arg, nt_rc_t rc), void *arg)
{
    host_upd_t *u;
    char err[256];
    nt_rc_t rc;

    /* d.hd, not d.http: writes go on while the worker finishes after a SIGTERM. */
    if (!d.hd.redis || !done || host_plugins_down)
        return NT_EUNAVAIL;
    u = malloc(sizeof(*u));
    if (!u)
        return NT_ENOMEM;
    u->done = done;
    u->arg = arg;
    rc = nt_api_lead_update(&d.hd, lead_id, attrs, nattrs, host_lead_done, u, err, sizeof(err));
    if (rc != NT_AGAIN) {
        free(u);
        if (rc == NT_EINVAL) /* err names the field; the lead id may be what is wrong */
            nt_log_warn("main", "a plugin's lead update was refused: %s", err);
    }
    return rc;
}

static nt_channel_host_t host = {
    .abi_version = NT_CHANNEL_ABI_VERSION,
    .size = sizeof(nt_channel_host_t),
    .log = nt_log_channel,
    .config = host_config,
    .now_ms = nt_now_ms,
    .post_event = host_post_event,
    .curl_add = host_curl_add,
    .create_task = host_create_task,
    .update_lead = host_update_lead,
};

/* ---- tokens ------------------------------------------------------------------------------- */

/* With no token configured, use <data-dir>/tokens, creating it with fresh random secrets:
 * the API is never open, and nurturectl on the same machine finds the ops token there. */
static int load_or_make_tokens(void)
{
    static const char *roles[] = {"ops", "rep", "webhook"};
    char path[4096], line[512];
    FILE *f;
    int n = 0;

    snprintf(path, sizeof(path), "%s/tokens", d.cfg.data_dir);
    f = fopen(path, "r");
    if (!f) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);

        if (fd < 0 || !(f = fdopen(fd, "w"))) {
            nt_log_error("main", "cannot create %s: %s", path, strerror(errno));
            return -1;
        }
        for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
            unsigned char raw[24];

            if (RAND_bytes(raw, sizeof(raw)) != 1) {
                fclose(f);
                return -1;
            }
            fprintf(f, "%s ", roles[i]);
            for (size_t b = 0; b < sizeof(raw); b++)
                fprintf(f, "%02x", raw[b]);
            fprintf(f, "%s\n", strcmp(roles[i], "rep") == 0 ? " rep1" : "");
        }
        fclose(f);
        nt_log_info("main", "no API token configured: generated %s", path);
        f = fopen(path, "r");
        if (!f)
            return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        char *errmsg = NULL;

        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        if (nt_config_set(&d.cfg, "token", line, &errmsg) != 0) {
            nt_log_error("main", "%s: %s", path, errmsg ? errmsg : "bad token line");
            free(errmsg);
            fclose(f);
            return -1;
        }
        n++;
    }
    fclose(f);
    return n > 0 ? 0 : -1;
}

/* A secret left unset: <data-dir>/<file> (mode 0600), created with 32 random bytes in hex at the
 * first start, so that links and webhook signatures stay valid across restarts. */
static int load_or_make_secret(char **secret, const char *file)
{
    char path[4096], line[512];
    FILE *f;
    char *err = NULL;

    if (*secret && (*secret)[0])
        return 0;
    snprintf(path, sizeof(path), "%s/%s", d.cfg.data_dir, file);
    f = fopen(path, "r");
    if (!f) {
        unsigned char raw[32];
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);

        if (fd < 0 || !(f = fdopen(fd, "w"))) {
            nt_log_error("main", "cannot create %s: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        if (RAND_bytes(raw, sizeof(raw)) != 1) {
            fclose(f);
            return -1;
        }
        for (size_t b = 0; b < sizeof(raw); b++)
            fprintf(f, "%02x", raw[b]);
        fprintf(f, "\n");
        if (fclose(f) != 0)
            return -1;
        nt_log_info("main", "generated %s", path);
        f = fopen(path, "r");
        if (!f)
            return -1;
    }
    if (!fgets(line, sizeof(line), f))
        line[0] = '\0';
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (nt_config_set(&d.cfg, strcmp(file, "webhook.key") == 0 ? "webhook-secret"
                                                               : "tracking-secret",
                      line, &err) != 0 ||
        !line[0]) {
        nt_log_error("main", "%s: %s", path, err ? err : "empty");
        free(err);
        return -1;
    }
    return 0;
}

/* ---- life cycle --------------------------------------------------------------------------- */

static void on_worker_stopped(void *arg)
{
    (void)arg;
    event_base_loopexit(d.base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    (void)arg;
    if (d.stopping) {
        nt_log_warn("main", "second signal: exiting now");
        event_base_loopbreak(d.base);
        return;
    }
    d.stopping = 1;
    nt_log_info("main", "signal %d: finishing work in flight", (int)sig);
    nt_http_free(d.http);
    d.http = NULL;
    nt_worker_stop(d.worker, on_worker_stopped, NULL);
}

/* An external Redis must never evict nurture's data and should persist it (DESIGN.md,
 * pitfalls): say so when it is configured otherwise. */
static void on_redis_config(nt_rc_t rc, redisReply *reply, void *arg)
{
    (void)arg;
    if (rc != NT_OK || reply->type != REDIS_REPLY_ARRAY) {
        if (rc == NT_OK && reply->type == REDIS_REPLY_ERROR)
            nt_log_info("main", "cannot read the Redis configuration (%s): not checked",
                        reply->str);
        return;
    }
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const char *k = reply->element[i]->str, *v = reply->element[i + 1]->str;

        if (!k || !v)
            continue;
        if (strcmp(k, "maxmemory-policy") == 0 && strcmp(v, "noeviction") != 0)
            nt_log_warn("main", "redis maxmemory-policy is %s: Redis may evict runs and "
                                "timers; set it to noeviction", v);
        if (strcmp(k, "appendonly") == 0 && strcmp(v, "yes") != 0)
            nt_log_warn("main", "redis appendonly is %s: a Redis restart may lose runs and "
                                "events; set appendonly yes (appendfsync everysec)", v);
    }
}

static void on_redis_state(int up, void *arg)
{
    (void)arg;
    nt_log_info("main", "redis %s", up ? "up" : "down: writes answer 503 until it is back");
    if (up)
        nt_redis_cmd(d.redis, on_redis_config, NULL, "CONFIG GET maxmemory-policy appendonly");
}

static int mkdir_p(const char *dir)
{
    char tmp[4096];

    snprintf(tmp, sizeof(tmp), "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

int main(int argc, char **argv)
{
    char *errmsg = NULL, addr[4200];
    struct event *sigterm = NULL, *sigint = NULL;
    int rc, status = 1;

    rc = nt_config_from_args(&d.cfg, argc, argv, &errmsg);
    if (rc < 0) {
        fprintf(stderr, "nurtured: %s\n", errmsg ? errmsg : "bad configuration");
        free(errmsg);
        return 2;
    }
    if (rc == 1) {
        printf("usage: nurtured [--config FILE] [--KEY VALUE]...\n\nKeys (file or flag):\n");
        nt_config_usage(stdout);
        nt_config_fini(&d.cfg);
        return 0;
    }
    nt_log_init(d.cfg.log_level, d.cfg.log_file);
    /* Large, short-lived buffers (bulk request bodies, big Redis replies) go to mmap and back
     * to the system when freed. glibc would otherwise raise its mmap threshold after the first
     * such free and serve them from the heap, whose fragments keep RSS growing with load. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
    nt_clock_init(d.cfg.time_scale, d.cfg.time_start);
    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned)(nt_real_ms() ^ getpid()));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (mkdir_p(d.cfg.data_dir) != 0) {
        nt_log_error("main", "cannot create data directory %s: %s", d.cfg.data_dir,
                     strerror(errno));
        goto out;
    }
    {
        /* Absolute from here on: redis-server changes into its directory before it opens
         * the files named relative to it. */
        char *abs = realpath(d.cfg.data_dir, NULL);

        if (!abs) {
            nt_log_error("main", "data directory %s: %s", d.cfg.data_dir, strerror(errno));
            goto out;
        }
        free(d.cfg.data_dir);
        d.cfg.data_dir = abs;
    }
    if (d.cfg.ntokens == 0 && load_or_make_tokens() != 0)
        goto out;
    if (load_or_make_secret(&d.cfg.tracking_secret, "tracking.key") != 0 ||
        load_or_make_secret(&d.cfg.webhook_secret, "webhook.key") != 0)
        goto out;
    if (!d.cfg.public_url || !d.cfg.public_url[0]) {
        char url[512];

        snprintf(url, sizeof(url), "http://%s:%d", d.cfg.bind, d.cfg.port);
        if (nt_config_set(&d.cfg, "public-url", url, &errmsg) != 0) {
            nt_log_error("main", "public-url: %s", errmsg ? errmsg : "bad");
            goto out;
        }
    }

    if (!d.cfg.redis || !d.cfg.redis[0]) {
        if (nt_redis_child_start(&d.child, d.cfg.redis_server, d.cfg.data_dir, &errmsg) !=
            NT_OK) {
            nt_log_error("main", "embedded redis: %s", errmsg ? errmsg : "failed");
            goto out;
        }
        snprintf(addr, sizeof(addr), "unix:%s", d.child.sock);
        nt_log_info("main", "embedded redis-server on %s (append-only file in %s)", d.child.sock,
                    d.child.dir);
    } else {
        snprintf(addr, sizeof(addr), "%s", d.cfg.redis);
    }

    d.base = event_base_new();
    if (!d.base)
        goto out;
    d.redis = nt_redis_new(d.base, addr, d.cfg.redis_timeout_ms, &errmsg);
    if (!d.redis) {
        nt_log_error("main", "%s", errmsg ? errmsg : "redis");
        goto out;
    }
    nt_redis_on_state(d.redis, on_redis_state, NULL);
    d.curlm = nt_curlm_new(d.base);
    d.plans = nt_plans_new(d.redis);
    d.mods = nt_modules_load(d.cfg.modules_dir, &errmsg);
    if (!d.curlm || !d.plans || !d.mods) {
        nt_log_error("main", "start-up: %s", errmsg ? errmsg : "out of memory");
        goto out;
    }
    {
        nt_tasks_deps_t td = {d.base, &d.cfg, d.redis, d.curlm};

        d.tasks = nt_tasks_new(&td, &errmsg);
        if (!d.tasks) {
            nt_log_error("main", "call tasks: %s", errmsg ? errmsg : "out of memory");
            goto out;
        }
    }
    host.event_base = d.base;
    host.curl_multi = nt_curlm_handle(d.curlm);
    host.redis = NULL; /* plugins that need Redis get it through post_event for now */
    host.data_dir = d.cfg.data_dir;
    nt_modules_start(d.mods, &host);
    {
        nt_worker_deps_t wd = {d.base, &d.cfg, d.redis, d.plans, d.mods};

        d.worker = nt_worker_new(&wd, &errmsg);
    }
    if (!d.worker) {
        nt_log_error("main", "worker: %s", errmsg ? errmsg : "out of memory");
        goto out;
    }
    d.hd = (nt_http_deps_t){d.base, &d.cfg, d.redis, d.plans, d.mods, d.worker, d.tasks};
    d.http = nt_http_new(&d.hd, &errmsg);
    if (!d.http) {
        nt_log_error("main", "http: %s", errmsg ? errmsg : "cannot listen");
        goto out;
    }
    sigterm = evsignal_new(d.base, SIGTERM, on_signal, NULL);
    sigint = evsignal_new(d.base, SIGINT, on_signal, NULL);
    if (!sigterm || !sigint)
        goto out;
    evsignal_add(sigterm, NULL);
    evsignal_add(sigint, NULL);
    nt_log_info("main", "nurtured %s listening on http://%s:%d (worker %s, %u partitions, "
                        "%zu channels, time scale %g%s)",
                NT_VERSION, d.cfg.bind, d.cfg.port, d.cfg.worker_id, d.cfg.partitions,
                nt_modules_count(d.mods), d.cfg.time_scale,
                d.cfg.time_start > 0 ? ", plan time from time-start" : "");
    event_base_dispatch(d.base);
    status = 0;

out:
    free(errmsg);
    nt_http_free(d.http);
    /* Task creations still waiting for Redis complete (canceled) into the live worker. */
    nt_tasks_free(d.tasks);
    d.tasks = NULL;
    /* Plugins first: their shutdown completes what is still in flight (NT_ECANCELED, e.g. an
     * SMTP transfer past the worker's stop deadline) into the worker, which must still exist. */
    nt_modules_free(d.mods);
    host_plugins_down = 1;
    nt_worker_free(d.worker);
    nt_plans_free(d.plans);
    nt_curlm_free(d.curlm);
    nt_redis_free(d.redis);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (d.base)
        event_base_free(d.base);
    nt_redis_child_stop(&d.child);
    curl_global_cleanup();
    nt_log_info("main", "exit %d", status);
    nt_config_fini(&d.cfg);
    return status;
}
