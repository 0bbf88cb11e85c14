/* nt-bench: the benchmark behind tools/bench (README "Performance").
 *
 * For each scale s (default 1 and 10) it starts a fresh redis-server and a fresh nurtured, so
 * that memory and RSS figures of the scales are comparable, and measures:
 *
 *   throughput  s*N leads enrolled through POST /v1/plans/bench/enrol (10,000 per request, a
 *               few requests in flight) into a plan of send -> update -> send -> branch -> send
 *               -> exit with zero waits; the clock runs from the first enrol request to the
 *               stats poll that sees the last exit. Counters come from /metrics before and
 *               after; the enrol-to-exit latency from the daemon's histogram and, exactly, from
 *               every run's "er" (enrol, real ms) and "xt" (exit, plan ms, which is real ms at
 *               time scale 1) fields in Redis.
 *   memory      s*N more leads enrolled into update -> wait 30 days -> exit; once all of them
 *               rest at the wait, the growth of Redis' used_memory divided by their number.
 *   rss         the daemon's VmHWM at the end of the scale.
 *
 * Output is one key=value per line on stdout: a block per scale that starts with leads=<n>,
 * then a summary block (rss_growth_pct and the targets). Progress goes to stderr. Every child
 * process is stopped and every temporary directory removed on success, failure and SIGINT
 * (NT_BENCH_KEEP=1 in the environment keeps the directories, with both servers' logs). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <hiredis.h>
#include <jansson.h>

#include "clock.h"
#include "config.h"
#include "keys.h"
#include "lua_scripts.h"

#define BENCH_CHUNK 10000          /* leads per enrol request (the API's maximum) */
#define BENCH_POLL_MS 100          /* stats poll period */
#define BENCH_STALL_MS 120000      /* no progress for this long: give up */
#define BENCH_TARGET_TPS 40000.0
#define BENCH_TARGET_BYTES 800.0
#define BENCH_TARGET_RSS_PCT 20.0
#define LAT_BUCKETS 40             /* buckets /metrics shows: le = 2^1 .. 2^40 */

/* The throughput plan, used when workflows/bench.textpb is not in the tree. */
static const char bench_plan_text[] =
    "id: \"bench\"\n"
    "name: \"Benchmark: three sends, a score update and a branch, no waits\"\n"
    "start: \"send_1\"\n"
    "nodes { id: \"send_1\" label: \"send 1\"\n"
    "  send { channel: \"log\" params { name: \"message\" value: \"bench 1\" } next: \"score\" } }\n"
    "nodes { id: \"score\" label: \"+1\" update { add_score: 1 next: \"send_2\" } }\n"
    "nodes { id: \"send_2\" label: \"send 2\"\n"
    "  send { channel: \"log\" params { name: \"message\" value: \"bench 2\" } next: \"scored\" } }\n"
    "nodes { id: \"scored\" label: \"score >= 1?\"\n"
    "  branch { cases { when { score { op: GE value: 1 } } to: \"send_3\" } default: \"done\" } }\n"
    "nodes { id: \"send_3\" label: \"send 3\"\n"
    "  send { channel: \"log\" params { name: \"message\" value: \"bench 3\" } next: \"done\" } }\n"
    "nodes { id: \"done\" label: \"done\" exit { reason: \"done\" } }\n";

/* The memory plan: every run comes to rest at "rest" for 30 days. */
static const char wait_plan_text[] =
    "id: \"bench_wait\"\n"
    "name: \"Benchmark: runs resting at a 30-day wait\"\n"
    "start: \"score\"\n"
    "nodes { id: \"score\" label: \"+1\" update { add_score: 1 next: \"rest\" } }\n"
    "nodes { id: \"rest\" label: \"30 days\" wait { duration { days: 30 } next: \"done\" } }\n"
    "nodes { id: \"done\" label: \"done\" exit { reason: \"done\" } }\n";

/* ---- options and process-global state (cleaned up by bench_cleanup) ---- */

static struct {
    size_t leads;
    unsigned scales[16];
    size_t nscales;
    int inflight;
    const char *nurtured;
    const char *modules_dir;
    const char *redis_server;
    const char *plan_file;     /* workflows/bench.textpb when present */
    const char *perf_dir;      /* perf record both servers during the throughput phase */
} opt;

static volatile sig_atomic_t g_stop;
static pid_t g_nurtured = -1, g_redis = -1, g_perf[2] = {-1, -1};
static char g_tmp[64];
static unsigned g_partitions;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("nt-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Stop a child: sig, then SIGKILL after grace_ms. Sets *pid to -1. */
static void stop_child(pid_t *pid, int sig, int grace_ms)
{
    if (*pid <= 0)
        return;
    kill(*pid, sig);
    for (int waited = 0; waited < grace_ms; waited += 20) {
        if (waitpid(*pid, NULL, WNOHANG) == *pid) {
            *pid = -1;
            return;
        }
        sleep_ms(20);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = -1;
}

static void rmrf(const char *dir)
{
    if (strncmp(dir, "/tmp/nt-bench-", 14) != 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", dir, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

/* Stop everything this scale started and remove its directory. Safe to call twice. */
static void bench_cleanup(void)
{
    stop_child(&g_perf[0], SIGINT, 30000);
    stop_child(&g_perf[1], SIGINT, 30000);
    stop_child(&g_nurtured, SIGTERM, 10000);
    stop_child(&g_redis, SIGTERM, 10000);
    if (g_tmp[0]) {
        if (getenv("NT_BENCH_KEEP"))
            note("NT_BENCH_KEEP: leaving %s", g_tmp);
        else
            rmrf(g_tmp);
        g_tmp[0] = '\0';
    }
}

/* fork + exec argv with stdout/stderr to log_path; the child gets its own process group (a
 * terminal's ^C reaches only this driver, which stops the children in order) and dies with
 * us. Returns the pid or -1. */
static pid_t spawn(char *const argv[], const char *log_path)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    struct sockaddr_in a = {0};
    socklen_t len = sizeof(a);
    if (fd < 0)
        return -1;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int alive(pid_t pid)
{
    return pid > 0 && waitpid(pid, NULL, WNOHANG) == 0;
}

static void show_log_tail(const char *path)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "tail -n 20 '%s' >&2", path);
    if (system(cmd) != 0)
        note("(no log at %s)", path);
}

/* ---- HTTP ---- */

typedef struct membuf {
    char *p;
    size_t n;
} membuf_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    membuf_t *b = arg;
    size_t add = size * nmemb;
    char *p = realloc(b->p, b->n + add + 1);
    if (!p)
        return 0;
    memcpy(p + b->n, data, add);
    b->p = p;
    b->n += add;
    b->p[b->n] = '\0';
    return add;
}

typedef struct http {
    char base[64];             /* http://127.0.0.1:<port> */
    struct curl_slist *hdr;    /* Authorization, Content-Type: application/json */
    struct curl_slist *hdr_pb; /* Authorization, Content-Type: application/x-protobuf */
    CURL *easy;                /* for the sequential requests */
} http_t;

/* Set up an easy handle for METHOD base+path; the body (may be NULL) must outlive the
 * transfer. */
static void http_setup(http_t *h, CURL *e, const char *path, const char *body, size_t len,
                       int protobuf, membuf_t *out)
{
    char url[256];
    snprintf(url, sizeof(url), "%s%s", h->base, path);
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, protobuf ? h->hdr_pb : h->hdr);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 600L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
}

/* One request; returns the HTTP status (0 when the transfer failed) with the body in *out
 * (caller frees out->p). */
static long http_do(http_t *h, const char *path, const char *body, size_t len, int protobuf,
                    membuf_t *out)
{
    long status = 0;
    out->p = NULL;
    out->n = 0;
    http_setup(h, h->easy, path, body, len, protobuf, out);
    if (curl_easy_perform(h->easy) == CURLE_OK)
        curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

static json_t *http_json(http_t *h, const char *path)
{
    membuf_t b;
    json_t *j = NULL;
    long st = http_do(h, path, NULL, 0, 0, &b);
    if (st == 200 && b.p)
        j = json_loads(b.p, 0, NULL);
    else
        note("GET %s: status %ld %s", path, st, b.p ? b.p : "");
    free(b.p);
    return j;
}

/* ---- /metrics ---- */

typedef struct snap {
    double transitions, steps, roundtrips, commands, dispatched, committed;
    double lat[LAT_BUCKETS];   /* cumulative, le = 2^(i+1) ms */
    double lat_count;
    int64_t mono_ms;
} snap_t;

/* The value of the sample line "name value" (or name{...} value when name ends in '{'). */
static int metric(const char *text, const char *name, double *v)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (*p != '#' && strncmp(p, name, n) == 0 &&
            (p[n] == ' ' || name[n - 1] == '}')) {
            *v = strtod(p + n, NULL);
            return 0;
        }
    }
    return -1;
}

static int take_snap(http_t *h, snap_t *s)
{
    membuf_t b;
    long st = http_do(h, "/metrics", NULL, 0, 0, &b);
    int rc = -1;
    memset(s, 0, sizeof(*s));
    s->mono_ms = nt_mono_ms();
    if (st != 200 || !b.p) {
        note("GET /metrics: status %ld", st);
        goto out;
    }
    if (metric(b.p, "nurture_transitions_total", &s->transitions) ||
        metric(b.p, "nurture_steps_total", &s->steps) ||
        metric(b.p, "nurture_messages_dispatched_total", &s->dispatched) ||
        metric(b.p, "nurture_messages_committed_total", &s->committed) ||
        metric(b.p, "nurture_enrol_to_exit_ms_count", &s->lat_count)) {
        note("/metrics lacks a nurture_* counter the benchmark reads");
        goto out;
    }
    if (metric(b.p, "nt_redis_roundtrips_total", &s->roundtrips) ||
        metric(b.p, "nt_redis_commands_total", &s->commands)) {
        note("/metrics has no nt_redis_roundtrips_total / nt_redis_commands_total");
        goto out;
    }
    for (int i = 0; i < LAT_BUCKETS; i++) {
        char name[96];
        snprintf(name, sizeof(name), "nurture_enrol_to_exit_ms_bucket{le=\"%.0f\"}",
                 ldexp(1, i + 1));
        if (metric(b.p, name, &s->lat[i])) {
            note("/metrics lacks %s", name);
            goto out;
        }
    }
    rc = 0;
out:
    free(b.p);
    return rc;
}

/* Quantile q of the latencies recorded between a and b. The daemon's histogram has log2
 * buckets ([2^i, 2^(i+1)) ms, bucket 0 also holds 0), so the figure is interpolated linearly
 * inside the bucket that holds the rank: at worst a factor of two off. */
static double hist_quantile(const snap_t *a, const snap_t *b, double q)
{
    double total = b->lat_count - a->lat_count, rank, seen = 0;
    if (total <= 0)
        return 0;
    rank = ceil(q * total);
    if (rank < 1)
        rank = 1;
    for (int i = 0; i < LAT_BUCKETS; i++) {
        double cum = b->lat[i] - a->lat[i];
        double n = cum - seen;
        if (cum >= rank && n > 0) {
            double lo = i == 0 ? 0 : ldexp(1, i), hi = ldexp(1, i + 1);
            return lo + (hi - lo) * (rank - seen) / n;
        }
        seen = cum;
    }
    return ldexp(1, LAT_BUCKETS); /* beyond the last finite bucket */
}

/* ---- plans ---- */

/* Compile text-format plan text with protoc into *out (malloc'd). Returns 0 or -1. */
static int compile_plan(const char *text_path, membuf_t *out)
{
    char bin_path[96];
    snprintf(bin_path, sizeof(bin_path), "%s/plan.pb", g_tmp);
    out->p = NULL;
    out->n = 0;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int in = open(text_path, O_RDONLY);
        int o = open(bin_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || o < 0)
            _exit(126);
        dup2(in, 0);
        dup2(o, 1);
        execl(NT_PROTOC, NT_PROTOC, "--encode=nt.Workflow", "-I", NT_PROTO_DIR,
              NT_PROTO_DIR "/workflow.proto", (char *)NULL);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        note("protoc --encode failed on %s", text_path);
        return -1;
    }
    FILE *f = fopen(bin_path, "rb");
    if (!f)
        return -1;
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        on_body(tmp, 1, n, out);
    fclose(f);
    return out->p ? 0 : -1;
}

/* Publish a plan from a text file, or from text (written to the scale's directory). */
static int publish(http_t *h, const char *file, const char *text, const char *name)
{
    char path[96];
    membuf_t bin, reply;
    if (!file) {
        snprintf(path, sizeof(path), "%s/%s.textpb", g_tmp, name);
        FILE *f = fopen(path, "w");
        if (!f || fputs(text, f) < 0 || fclose(f) != 0)
            return -1;
        file = path;
    }
    if (compile_plan(file, &bin) != 0)
        return -1;
    long st = http_do(h, "/v1/plans", bin.p, bin.n, 1, &reply);
    free(bin.p);
    if (st != 201) {
        note("publishing %s: status %ld %s", file, st, reply.p ? reply.p : "");
        free(reply.p);
        return -1;
    }
    free(reply.p);
    return 0;
}

/* ---- stats ---- */

/* From GET /v1/plans/<plan>/stats: the sum of the exits, and "current" of node (may be NULL).
 * Returns 0 or -1. */
static int plan_stats(http_t *h, const char *plan, const char *node, double *exits,
                      double *current)
{
    char path[96];
    snprintf(path, sizeof(path), "/v1/plans/%s/stats", plan);
    json_t *j = http_json(h, path);
    if (!j)
        return -1;
    const char *k;
    json_t *v;
    size_t i;
    *exits = 0;
    json_object_foreach(json_object_get(j, "exits"), k, v) *exits += (double)json_integer_value(v);
    if (current) {
        *current = 0;
        json_array_foreach(json_object_get(j, "nodes"), i, v) {
            const char *id = json_string_value(json_object_get(v, "id"));
            if (id && strcmp(id, node) == 0)
                *current += (double)json_integer_value(json_object_get(v, "current"));
        }
    }
    json_decref(j);
    return 0;
}

/* ---- enrolment ---- */

/* The JSON body for leads <prefix>-<first> .. <prefix>-<first+count-1>: three short
 * attributes each. Caller frees. */
static char *enrol_body(const char *prefix, size_t first, size_t count, size_t *len)
{
    static const char *const roles[] = {"tech", "exec", "ops"};
    size_t cap = 64 + count * 96, n = 0;
    char *b = malloc(cap);
    if (!b)
        return NULL;
    n += (size_t)snprintf(b + n, cap - n, "{\"leads\":[");
    for (size_t i = first; i < first + count; i++) {
        n += (size_t)snprintf(b + n, cap - n,
                              "%s{\"id\":\"%s-%zu\",\"attributes\":{\"src\":\"bench\","
                              "\"role\":\"%s\",\"tier\":\"%c\"}}",
                              i == first ? "" : ",", prefix, i, roles[i % 3],
                              (char)('a' + (int)(i % 4)));
    }
    n += (size_t)snprintf(b + n, cap - n, "]}");
    *len = n;
    return b;
}

typedef struct slot {
    CURL *e;
    char *body;
    membuf_t out;
    int busy;
} slot_t;

/* Enrol leads prefix-0 .. prefix-(n-1) into plan, BENCH_CHUNK per request, opt.inflight
 * requests at a time (curl multi). Returns 0 when every lead was enrolled. */
static int enrol_all(http_t *h, const char *plan, const char *prefix, size_t n)
{
    char path[96];
    slot_t slots[8];
    int ns = opt.inflight, running = 0, rc = 0;
    size_t next = 0, enrolled = 0;
    CURLM *m = curl_multi_init();
    memset(slots, 0, sizeof(slots));
    snprintf(path, sizeof(path), "/v1/plans/%s/enrol", plan);
    for (int i = 0; i < ns; i++)
        slots[i].e = curl_easy_init();
    for (;;) {
        for (int i = 0; i < ns && next < n && rc == 0; i++) {
            if (slots[i].busy)
                continue;
            size_t count = n - next < BENCH_CHUNK ? n - next : BENCH_CHUNK, len;
            slots[i].body = enrol_body(prefix, next, count, &len);
            if (!slots[i].body) {
                rc = -1;
                break;
            }
            slots[i].out.p = NULL;
            slots[i].out.n = 0;
            http_setup(h, slots[i].e, path, slots[i].body, len, 0, &slots[i].out);
            curl_multi_add_handle(m, slots[i].e);
            slots[i].busy = 1;
            next += count;
        }
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            slot_t *s = NULL;
            for (int i = 0; i < ns; i++)
                if (slots[i].e == msg->easy_handle)
                    s = &slots[i];
            long st = 0;
            curl_easy_getinfo(s->e, CURLINFO_RESPONSE_CODE, &st);
            json_t *j = st == 200 && s->out.p ? json_loads(s->out.p, 0, NULL) : NULL;
            json_t *sk = json_object_get(j, "skipped");
            if (!j || json_array_size(sk) > 0) {
                note("enrol: status %ld (%s) %.300s", st, curl_easy_strerror(msg->data.result),
                     s->out.p ? s->out.p : "");
                rc = -1;
            } else {
                enrolled += (size_t)json_integer_value(json_object_get(j, "enrolled"));
            }
            json_decref(j);
            curl_multi_remove_handle(m, s->e);
            free(s->body);
            free(s->out.p);
            s->body = NULL;
            s->out.p = NULL;
            s->busy = 0;
        }
        int busy = 0;
        for (int i = 0; i < ns; i++)
            busy |= slots[i].busy;
        if (!busy && (next >= n || rc != 0))
            break;
        if (g_stop) {
            rc = -1;
            break;
        }
        curl_multi_poll(m, NULL, 0, 200, NULL);
    }
    for (int i = 0; i < ns; i++) {
        if (slots[i].busy)
            curl_multi_remove_handle(m, slots[i].e);
        free(slots[i].body);
        free(slots[i].out.p);
        curl_easy_cleanup(slots[i].e);
    }
    curl_multi_cleanup(m);
    if (rc == 0 && enrolled != n) {
        note("enrol: %zu of %zu leads enrolled", enrolled, n);
        rc = -1;
    }
    return rc;
}

/* Poll plan stats every BENCH_POLL_MS until want exits (node NULL) or want runs at node.
 * Returns 0, or -1 on a stall, a dead daemon or a signal. */
static int wait_for(http_t *h, const char *plan, const char *node, double want)
{
    double last = -1, exits, cur;
    int64_t progress = nt_mono_ms();
    for (;;) {
        if (g_stop)
            return -1;
        if (!alive(g_nurtured) || !alive(g_redis)) {
            note("a server died");
            return -1;
        }
        if (plan_stats(h, plan, node, &exits, node ? &cur : NULL) != 0)
            return -1;
        double got = node ? cur : exits;
        if (got >= want)
            return 0;
        if (got != last) {
            last = got;
            progress = nt_mono_ms();
        } else if (nt_mono_ms() - progress > BENCH_STALL_MS) {
            note("%s: stuck at %.0f of %.0f for %d s", plan, got, want, BENCH_STALL_MS / 1000);
            return -1;
        }
        sleep_ms(BENCH_POLL_MS);
    }
}

/* ---- Redis and /proc ---- */

static double info_field(redisContext *c, const char *section, const char *field)
{
    redisReply *r = redisCommand(c, "INFO %s", section);
    double v = NAN;
    if (r && r->type == REDIS_REPLY_STRING) {
        char key[80];
        snprintf(key, sizeof(key), "\n%s:", field);
        const char *p = strstr(r->str, key);
        if (p)
            v = strtod(p + strlen(key), NULL);
    }
    freeReplyObject(r);
    return v;
}

static double redis_cpu_s(redisContext *c)
{
    return info_field(c, "cpu", "used_cpu_sys") + info_field(c, "cpu", "used_cpu_user");
}

static double mem_usage(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "MEMORY USAGE %s SAMPLES 0", key);
    double v = r && r->type == REDIS_REPLY_INTEGER ? (double)r->integer : NAN;
    freeReplyObject(r);
    return v;
}

/* utime + stime of pid, in seconds. */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NAN;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return NAN;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A "VmXXX:" line of /proc/<pid>/status, in MiB. */
static double proc_mem_mb(pid_t pid, const char *field)
{
    char path[64], line[256];
    double v = NAN;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NAN;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, strlen(field)) == 0)
            v = strtod(line + strlen(field), NULL) / 1024.0;
    fclose(f);
    return v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Exact enrol-to-exit latencies of runs prefix-i:plan from their "er" and "xt" fields,
 * pipelined 1,000 at a time. Returns 0 with p50, p99 and max, or -1. */
static int exact_latency(redisContext *c, const char *prefix, const char *plan, size_t n,
                         double *p50, double *p99, double *max)
{
    double *lat = malloc((n ? n : 1) * sizeof(*lat));
    size_t got = 0;
    if (!lat)
        return -1;
    for (size_t i = 0; i < n; i += 1000) {
        size_t k = n - i < 1000 ? n - i : 1000;
        for (size_t j = 0; j < k; j++) {
            char id[64], key[NT_KEY_MAX];
            snprintf(id, sizeof(id), "%s-%zu", prefix, i + j);
            nt_key_run(key, nt_partition(id, g_partitions), id, plan);
            redisAppendCommand(c, "HMGET %s er xt", key);
        }
        for (size_t j = 0; j < k; j++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK) {
                free(lat);
                return -1;
            }
            if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->str &&
                r->element[1]->str)
                lat[got++] = strtod(r->element[1]->str, NULL) - strtod(r->element[0]->str, NULL);
            freeReplyObject(r);
        }
    }
    if (got != n) {
        note("exact latency: %zu of %zu runs have er and xt", got, n);
        free(lat);
        return -1;
    }
    qsort(lat, got, sizeof(*lat), cmp_double);
    /* nearest rank */
    *p50 = lat[(size_t)ceil(0.50 * (double)got) - 1];
    *p99 = lat[(size_t)ceil(0.99 * (double)got) - 1];
    *max = lat[got - 1];
    free(lat);
    return 0;
}

/* ---- Redis diagnostics (stderr): where Redis spent the throughput phase ---- */

static void redis_cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    freeReplyObject(r);
}

/* Reset command statistics and log scripts slower than 2 ms. */
static void diag_start(redisContext *c)
{
    redis_cmd(c, "CONFIG RESETSTAT");
    redis_cmd(c, "CONFIG SET slowlog-log-slower-than 2000");
    redis_cmd(c, "CONFIG SET slowlog-max-len 10000");
    redis_cmd(c, "SLOWLOG RESET");
}

typedef struct cmdstat {
    char name[48];
    double calls, usec;
    size_t slow;       /* slowlog entries (scripts: by name) */
    double slow_max;
} cmdstat_t;

static int cmp_usec(const void *a, const void *b)
{
    const cmdstat_t *x = a, *y = b;
    return x->usec < y->usec ? 1 : x->usec > y->usec ? -1 : 0;
}

static int cmp_slow(const void *a, const void *b)
{
    const cmdstat_t *x = a, *y = b;
    return x->slow < y->slow ? 1 : x->slow > y->slow ? -1 : 0;
}

/* Print the commands that took most of Redis' time (commands run inside scripts count on
 * their own as well as in evalsha), and the scripts in the slow log, by name. */
static void diag_report(redisContext *c, double secs)
{
    cmdstat_t st[128];
    size_t n = 0;
    redisReply *r = redisCommand(c, "INFO commandstats");
    for (const char *p = r && r->type == REDIS_REPLY_STRING ? r->str : NULL; p && n < 128;
         p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        char name[48];
        double calls, usec;
        if (sscanf(p, "cmdstat_%47[^:]:calls=%lf,usec=%lf", name, &calls, &usec) == 3) {
            memset(&st[n], 0, sizeof(st[n]));
            snprintf(st[n].name, sizeof(st[n].name), "%s", name);
            st[n].calls = calls;
            st[n++].usec = usec;
        }
    }
    freeReplyObject(r);
    qsort(st, n, sizeof(*st), cmp_usec);
    note("redis commandstats over %.1f s (busy = usec / wall; script-internal commands are "
         "also inside evalsha):", secs);
    for (size_t i = 0; i < n && i < 12; i++)
        note("  %-14s calls=%-9.0f usec/call=%-8.1f busy=%.1f%%", st[i].name, st[i].calls,
             st[i].usec / st[i].calls, st[i].usec / (secs * 1e4));

    /* name the scripts in the slow log by their sha */
    char sha[32][41];
    const char *names[32];
    size_t ns = 0;
    for (size_t i = 0; i < nt_lua_nscripts && ns < 32; i++) {
        r = redisCommand(c, "SCRIPT LOAD %s", nt_lua_scripts[i].source);
        if (r && r->type == REDIS_REPLY_STRING && r->len == 40) {
            memcpy(sha[ns], r->str, 41);
            names[ns++] = nt_lua_scripts[i].name;
        }
        freeReplyObject(r);
    }
    cmdstat_t sl[33];
    memset(sl, 0, sizeof(sl));
    r = redisCommand(c, "SLOWLOG GET 10000");
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 4)
            continue;
        const redisReply *args = e->element[3];
        size_t k = ns; /* "other" */
        for (size_t j = 0; j < ns && args->elements > 1 && args->element[1]->str; j++)
            if (strcmp(args->element[1]->str, sha[j]) == 0)
                k = j;
        snprintf(sl[k].name, sizeof(sl[k].name), "%s",
                 k < ns ? names[k]
                        : (args->elements > 0 && args->element[0]->str ? args->element[0]->str
                                                                       : "?"));
        sl[k].slow++;
        sl[k].slow_max = fmax(sl[k].slow_max, (double)e->element[2]->integer);
    }
    freeReplyObject(r);
    qsort(sl, ns + 1, sizeof(*sl), cmp_slow);
    note("redis slowlog (calls over 2 ms; at most 10,000 kept):");
    for (size_t i = 0; i <= ns && sl[i].slow > 0; i++)
        note("  %-14s slow_calls=%-6zu max_ms=%.1f", sl[i].name, sl[i].slow, sl[i].slow_max / 1e3);
}

/* ---- one scale ---- */

static void put(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(const char *key, const char *fmt, ...)
{
    va_list ap;
    printf("%s=", key);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static pid_t perf_record(pid_t target, const char *what, size_t n)
{
    char out[512], pidarg[16];
    snprintf(out, sizeof(out), "%s/%s-%zu.data", opt.perf_dir, what, n);
    snprintf(pidarg, sizeof(pidarg), "%d", (int)target);
    char *argv[] = {"perf", "record", "-F", "499", "--call-graph", "dwarf,16384", "-o", out,
                    "-p", pidarg, NULL};
    return spawn(argv, NULL);
}

typedef struct result {
    double tps, bytes, peak_rss;
} result_t;

static int run_scale(size_t n, result_t *res)
{
    int64_t wall0 = nt_mono_ms();
    int rc = -1, rport = free_port(), hport = free_port();
    char rdir[96], ddir[96], rlog[96], dlog[96], raddr[32], portarg[16], rportarg[16];
    char token[64], hex[33], auth[128];
    http_t h;
    redisContext *rc_sync = NULL;
    snap_t s0, s1;

    memset(&h, 0, sizeof(h));
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/nt-bench-XXXXXX");
    if (!mkdtemp(g_tmp)) {
        g_tmp[0] = '\0';
        note("mkdtemp: %s", strerror(errno));
        return -1;
    }
    snprintf(rdir, sizeof(rdir), "%s/redis", g_tmp);
    snprintf(ddir, sizeof(ddir), "%s/data", g_tmp);
    snprintf(rlog, sizeof(rlog), "%s/redis.log", g_tmp);
    snprintf(dlog, sizeof(dlog), "%s/nurtured.log", g_tmp);
    if (mkdir(rdir, 0700) != 0 || mkdir(ddir, 0700) != 0 || rport < 0 || hport < 0)
        goto out;

    /* redis-server with the embedded one's settings, on loopback TCP */
    snprintf(rportarg, sizeof(rportarg), "%d", rport);
    char *rargv[] = {(char *)opt.redis_server, "--port", rportarg, "--bind", "127.0.0.1",
                     "--dir", rdir, "--appendonly", "yes", "--appendfsync", "everysec",
                     "--maxmemory-policy", "noeviction", "--save", "", "--daemonize", "no",
                     "--logfile", rlog, NULL};
    g_redis = spawn(rargv, rlog);
    struct timeval tv = {5, 0};
    for (int i = 0; i < 200 && !rc_sync && !g_stop; i++) {
        redisContext *c = redisConnectWithTimeout("127.0.0.1", rport, tv);
        redisReply *r = c && !c->err ? redisCommand(c, "PING") : NULL;
        if (r && r->type == REDIS_REPLY_STATUS)
            rc_sync = c;
        else
            redisFree(c);
        freeReplyObject(r);
        if (!rc_sync)
            sleep_ms(50);
    }
    if (!rc_sync) {
        note("redis-server did not answer PING on port %d", rport);
        show_log_tail(rlog);
        goto out;
    }
    redisSetTimeout(rc_sync, (struct timeval){600, 0});

    /* nurtured */
    FILE *ur = fopen("/dev/urandom", "rb");
    unsigned char raw[16];
    if (!ur || fread(raw, 1, sizeof(raw), ur) != sizeof(raw)) {
        if (ur)
            fclose(ur);
        goto out;
    }
    fclose(ur);
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    snprintf(token, sizeof(token), "ops:%s", hex);
    snprintf(raddr, sizeof(raddr), "127.0.0.1:%d", rport);
    snprintf(portarg, sizeof(portarg), "%d", hport);
    char *dargv[] = {(char *)opt.nurtured, "--redis", raddr, "--port", portarg,
                     "--data-dir", ddir, "--token", token, "--channel.log.sink", "yes",
                     "--log-level", "warn", "--modules-dir", (char *)opt.modules_dir,
                     "--log-file", dlog, NULL};
    g_nurtured = spawn(dargv, dlog);

    snprintf(h.base, sizeof(h.base), "http://127.0.0.1:%d", hport);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", hex);
    h.hdr = curl_slist_append(curl_slist_append(NULL, auth), "Content-Type: application/json");
    h.hdr_pb = curl_slist_append(curl_slist_append(NULL, auth),
                                 "Content-Type: application/x-protobuf");
    h.easy = curl_easy_init();
    if (!h.hdr || !h.hdr_pb || !h.easy)
        goto out;
    int up = 0;
    for (int i = 0; i < 300 && !up && !g_stop && alive(g_nurtured); i++) {
        membuf_t b;
        up = http_do(&h, "/health", NULL, 0, 0, &b) == 200;
        free(b.p);
        if (!up)
            sleep_ms(50);
    }
    if (!up) {
        note("nurtured did not become healthy on port %d", hport);
        show_log_tail(dlog);
        goto out;
    }
    if (publish(&h, opt.plan_file, bench_plan_text, "bench") != 0 ||
        publish(&h, NULL, wait_plan_text, "bench_wait") != 0)
        goto out;

    /* throughput */
    note("%zu leads: throughput phase", n);
    if (take_snap(&h, &s0) != 0)
        goto out;
    diag_start(rc_sync);
    double ncpu0 = proc_cpu_s(g_nurtured), rcpu0 = redis_cpu_s(rc_sync);
    if (opt.perf_dir) {
        g_perf[0] = perf_record(g_nurtured, "nurtured", n);
        g_perf[1] = perf_record(g_redis, "redis", n);
        sleep_ms(500);
    }
    int64_t t0 = nt_mono_ms();
    if (enrol_all(&h, "bench", "bench", n) != 0)
        goto out;
    int64_t t_enrolled = nt_mono_ms();
    if (wait_for(&h, "bench", NULL, (double)n) != 0)
        goto out;
    int64_t t1 = nt_mono_ms();
    double ncpu1 = proc_cpu_s(g_nurtured), rcpu1 = redis_cpu_s(rc_sync);
    stop_child(&g_perf[0], SIGINT, 60000);
    stop_child(&g_perf[1], SIGINT, 60000);
    if (take_snap(&h, &s1) != 0)
        goto out;
    double secs = (double)(t1 - t0) / 1000.0;
    double tr = s1.transitions - s0.transitions;
    diag_report(rc_sync, secs);

    /* let dispatch finish the last outcomes, so the memory baseline is quiet */
    for (int i = 0; i < 100 && s1.dispatched < s1.committed; i++) {
        sleep_ms(100);
        if (take_snap(&h, &s1) != 0)
            goto out;
    }
    sleep_ms(1000);

    /* memory */
    note("%zu leads: memory phase", n);
    double mem0 = info_field(rc_sync, "memory", "used_memory");
    int64_t w0 = nt_mono_ms();
    if (enrol_all(&h, "bench_wait", "wait", n) != 0 || wait_for(&h, "bench_wait", "rest",
                                                               (double)n) != 0)
        goto out;
    int64_t w1 = nt_mono_ms();
    double mem1 = info_field(rc_sync, "memory", "used_memory");
    char key[NT_KEY_MAX];
    unsigned p0 = nt_partition("wait-0", g_partitions);
    double lead_b = mem_usage(rc_sync, nt_key_lead(key, p0, "wait-0"));
    double run_b = mem_usage(rc_sync, nt_key_run(key, p0, "wait-0", "bench_wait"));
    double hist_b = mem_usage(rc_sync, nt_key_hist(key, p0, "wait-0"));

    double ex50 = NAN, ex99 = NAN, exmax = NAN;
    if (exact_latency(rc_sync, "bench", "bench", n, &ex50, &ex99, &exmax) != 0)
        note("no exact latencies (see above); the histogram figures stand alone");

    res->tps = tr / secs;
    res->bytes = (mem1 - mem0) / (double)n;
    res->peak_rss = proc_mem_mb(g_nurtured, "VmHWM:");
    put("leads", "%zu", n);
    put("enrol_s", "%.2f", (double)(t_enrolled - t0) / 1000.0);
    put("enrol_leads_per_s", "%.0f", (double)n / ((double)(t_enrolled - t0) / 1000.0));
    put("throughput_s", "%.2f", secs);
    put("transitions", "%.0f", tr);
    put("steps", "%.0f", s1.steps - s0.steps);
    put("transitions_per_s", "%.0f", res->tps);
    put("steps_per_s", "%.0f", (s1.steps - s0.steps) / secs);
    put("redis_roundtrips", "%.0f", s1.roundtrips - s0.roundtrips);
    put("redis_roundtrips_per_transition", "%.4f", (s1.roundtrips - s0.roundtrips) / tr);
    put("redis_commands_per_transition", "%.4f", (s1.commands - s0.commands) / tr);
    put("enrol_to_exit_p50_ms", "%.0f", hist_quantile(&s0, &s1, 0.50));
    put("enrol_to_exit_p99_ms", "%.0f", hist_quantile(&s0, &s1, 0.99));
    put("enrol_to_exit_exact_p50_ms", "%.0f", ex50);
    put("enrol_to_exit_exact_p99_ms", "%.0f", ex99);
    put("enrol_to_exit_exact_max_ms", "%.0f", exmax);
    put("nurtured_cpu_s", "%.2f", ncpu1 - ncpu0);
    put("redis_cpu_s", "%.2f", rcpu1 - rcpu0);
    put("wait_phase_s", "%.2f", (double)(w1 - w0) / 1000.0);
    put("redis_used_memory_mb", "%.1f", mem1 / 1048576.0);
    put("redis_bytes_per_waiting_run", "%.0f", res->bytes);
    put("redis_sample_lead_hash_bytes", "%.0f", lead_b);
    put("redis_sample_run_hash_bytes", "%.0f", run_b);
    put("redis_sample_timeline_stream_bytes", "%.0f", hist_b);
    put("nurtured_rss_mb", "%.1f", proc_mem_mb(g_nurtured, "VmRSS:"));
    put("nurtured_peak_rss_mb", "%.1f", res->peak_rss);
    put("wall_s", "%.1f", (double)(nt_mono_ms() - wall0) / 1000.0);
    rc = 0;
out:
    if (rc != 0 && g_tmp[0]) {
        note("scale of %zu leads failed; nurtured log tail:", n);
        show_log_tail(dlog);
    }
    redisFree(rc_sync);
    curl_easy_cleanup(h.easy);
    curl_slist_free_all(h.hdr);
    curl_slist_free_all(h.hdr_pb);
    bench_cleanup();
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: nt-bench --nurtured PATH --modules-dir DIR [--leads N] [--scales 1,10]\n"
               "                [--inflight K] [--plan FILE.textpb] [--redis-server PATH]\n"
               "                [--perf DIR]\n"
               "Prints key=value lines: a block per scale (starting with leads=), then a\n"
               "summary. --perf records nurtured and redis-server with perf during each\n"
               "throughput phase into DIR/{nurtured,redis}-<leads>.data.\n");
}

static int parse_scales(const char *s)
{
    char *copy = strdup(s), *save = NULL;
    opt.nscales = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        unsigned long v = strtoul(t, &end, 10);
        if (*end || v == 0 || opt.nscales == 16) {
            free(copy);
            return -1;
        }
        opt.scales[opt.nscales++] = (unsigned)v;
    }
    free(copy);
    return opt.nscales ? 0 : -1;
}

int main(int argc, char **argv)
{
    nt_config_t defaults;
    opt.leads = 100000;
    opt.scales[0] = 1;
    opt.scales[1] = 10;
    opt.nscales = 2;
    opt.inflight = 3;
    opt.redis_server = NT_REDIS_SERVER;
    opt.modules_dir = NT_DEFAULT_MODULES_DIR;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            usage(stderr);
            return 2;
        }
        i++;
        if (strcmp(a, "--leads") == 0) {
            char *end;
            opt.leads = strtoull(v, &end, 10);
            if (*end || opt.leads == 0) {
                note("--leads wants a positive number");
                return 2;
            }
        } else if (strcmp(a, "--scales") == 0) {
            if (parse_scales(v) != 0) {
                note("--scales wants positive numbers separated by commas, e.g. 1,10");
                return 2;
            }
        } else if (strcmp(a, "--inflight") == 0) {
            opt.inflight = atoi(v);
            if (opt.inflight < 1 || opt.inflight > 8) {
                note("--inflight wants 1 to 8");
                return 2;
            }
        } else if (strcmp(a, "--nurtured") == 0) {
            opt.nurtured = v;
        } else if (strcmp(a, "--modules-dir") == 0) {
            opt.modules_dir = v;
        } else if (strcmp(a, "--redis-server") == 0) {
            opt.redis_server = v;
        } else if (strcmp(a, "--plan") == 0) {
            opt.plan_file = access(v, R_OK) == 0 ? v : NULL;
        } else if (strcmp(a, "--perf") == 0) {
            opt.perf_dir = v;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!opt.nurtured) {
        usage(stderr);
        return 2;
    }
    if (nt_config_defaults(&defaults) != 0)
        return 1;
    g_partitions = defaults.partitions;
    nt_config_fini(&defaults);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    note("plan: %s", opt.plan_file ? opt.plan_file : "embedded bench plan");

    result_t res[16];
    int rc = 0;
    for (size_t i = 0; i < opt.nscales && rc == 0; i++) {
        size_t n = opt.leads * opt.scales[i];
        if (run_scale(n, &res[i]) != 0)
            rc = 1;
        if (g_stop)
            rc = 1;
    }
    bench_cleanup();
    if (rc == 0) {
        double tps_min = res[0].tps, bytes_max = res[0].bytes, growth = 0;
        for (size_t i = 1; i < opt.nscales; i++) {
            tps_min = fmin(tps_min, res[i].tps);
            bytes_max = fmax(bytes_max, res[i].bytes);
            growth = fmax(growth, (res[i].peak_rss / res[0].peak_rss - 1) * 100);
        }
        char failed[128] = "";
        if (tps_min < BENCH_TARGET_TPS)
            strcat(failed, ",transitions_per_s");
        if (bytes_max > BENCH_TARGET_BYTES)
            strcat(failed, ",redis_bytes_per_waiting_run");
        if (growth > BENCH_TARGET_RSS_PCT)
            strcat(failed, ",rss_growth_pct");
        put("rss_growth_pct", "%.1f", growth);
        put("transitions_per_s_min", "%.0f", tps_min);
        put("redis_bytes_per_waiting_run_max", "%.0f", bytes_max);
        put("targets_met", "%s", failed[0] ? "no" : "yes");
        put("targets_missed", "%s", failed[0] ? failed + 1 : "none");
    }
    curl_global_cleanup();
    return rc;
}
