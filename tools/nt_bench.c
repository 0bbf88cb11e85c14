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
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
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
#define BENCH_TARGET_EMAILS 1000.0  /* messages/s to a local SMTP server */
#define BENCH_EMAILS 20000         /* messages of the email scenario after the core figures */
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
    size_t emails;             /* messages of the email scenario (0: none) */
    int email_only;            /* --email N: the email scenario alone */
    int email_inflight;        /* channel.email.max_inflight */
    const char *smtp_server;   /* aiosmtpd or sink */
} opt;

static volatile sig_atomic_t g_stop;
static pid_t g_nurtured = -1, g_redis = -1, g_smtp = -1, g_perf[2] = {-1, -1};
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
    stop_child(&g_smtp, SIGTERM, 5000);
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

/* Non-zero when something accepts connections on the loopback port. */
static int port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;
    struct sockaddr_in a = {0};
    if (fd < 0)
        return 0;
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
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
 * attributes each, and for the prefix "email" an address and a first name. Caller frees. */
static char *enrol_body(const char *prefix, size_t first, size_t count, size_t *len)
{
    static const char *const roles[] = {"tech", "exec", "ops"};
    int email = strcmp(prefix, "email") == 0;
    size_t cap = 64 + count * 192, n = 0;
    char *b = malloc(cap);
    if (!b)
        return NULL;
    n += (size_t)snprintf(b + n, cap - n, "{\"leads\":[");
    for (size_t i = first; i < first + count; i++) {
        n += (size_t)snprintf(b + n, cap - n,
                              "%s{\"id\":\"%s-%zu\",\"attributes\":{\"src\":\"bench\","
                              "\"role\":\"%s\",\"tier\":\"%c\"",
                              i == first ? "" : ",", prefix, i, roles[i % 3],
                              (char)('a' + (int)(i % 4)));
        if (email)
            n += (size_t)snprintf(b + n, cap - n,
                                  ",\"email\":\"lead%zu@bench.example\","
                                  "\"first_name\":\"Lead%zu\"",
                                  i, i);
        n += (size_t)snprintf(b + n, cap - n, "}}");
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

/* Enrol leads prefix-0 .. prefix-(n-1) into plan, BENCH_CHUNK per request (half as many with
 * the email attributes, which are longer than the API's max-body), opt.inflight
 * requests at a time (curl multi). Returns 0 when every lead was enrolled. */
static int enrol_all(http_t *h, const char *plan, const char *prefix, size_t n)
{
    char path[96];
    slot_t slots[8];
    int ns = opt.inflight, running = 0, rc = 0;
    size_t next = 0, enrolled = 0;
    size_t chunk = strcmp(prefix, "email") == 0 ? BENCH_CHUNK / 2 : BENCH_CHUNK;
    CURLM *m = curl_multi_init();
    memset(slots, 0, sizeof(slots));
    snprintf(path, sizeof(path), "/v1/plans/%s/enrol", plan);
    for (int i = 0; i < ns; i++)
        slots[i].e = curl_easy_init();
    for (;;) {
        for (int i = 0; i < ns && next < n && rc == 0; i++) {
            if (slots[i].busy)
                continue;
            size_t count = n - next < chunk ? n - next : chunk, len;
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

/* CPU of redis-server's forked children (AOF rewrites), counted once each has been reaped. */
static double redis_children_cpu_s(redisContext *c)
{
    return info_field(c, "cpu", "used_cpu_sys_children") +
           info_field(c, "cpu", "used_cpu_user_children");
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

/* ---- one fresh redis-server and nurtured ---- */

typedef struct stack {
    http_t h;                  /* requests to nurtured */
    redisContext *redis;       /* a synchronous connection to redis-server */
    char dlog[96];             /* nurtured's log */
} bench_stack_t;

/* Make the scale's directory (unless g_tmp names one already), start redis-server and nurtured (with extra arguments, a
 * NULL-terminated list) and wait until both answer. Returns 0, or -1 (stack_stop still
 * needed). */
static int stack_start(bench_stack_t *stk, char *const *extra)
{
    int rport = free_port(), hport = free_port();
    char rdir[96], ddir[96], rlog[96], raddr[32], portarg[16], rportarg[16];
    char token[64], hex[33], auth[128];
    http_t h;
    redisContext *rc_sync = NULL;
    char *dlog = stk->dlog;

    memset(stk, 0, sizeof(*stk));
    memset(&h, 0, sizeof(h));
    snprintf(dlog, sizeof(stk->dlog), "%s", "/dev/null");
    if (!g_tmp[0] && !mkdtemp(strcpy(g_tmp, "/tmp/nt-bench-XXXXXX"))) {
        g_tmp[0] = '\0';
        note("mkdtemp: %s", strerror(errno));
        return -1;
    }
    snprintf(rdir, sizeof(rdir), "%s/redis", g_tmp);
    snprintf(ddir, sizeof(ddir), "%s/data", g_tmp);
    snprintf(rlog, sizeof(rlog), "%s/redis.log", g_tmp);
    snprintf(dlog, sizeof(stk->dlog), "%s/nurtured.log", g_tmp);
    if (mkdir(rdir, 0700) != 0 || mkdir(ddir, 0700) != 0 || rport < 0 || hport < 0)
        goto fail;

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
        goto fail;
    }
    redisSetTimeout(rc_sync, (struct timeval){600, 0});

    /* nurtured */
    FILE *ur = fopen("/dev/urandom", "rb");
    unsigned char raw[16];
    if (!ur || fread(raw, 1, sizeof(raw), ur) != sizeof(raw)) {
        if (ur)
            fclose(ur);
        goto fail;
    }
    fclose(ur);
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    snprintf(token, sizeof(token), "ops:%s", hex);
    snprintf(raddr, sizeof(raddr), "127.0.0.1:%d", rport);
    snprintf(portarg, sizeof(portarg), "%d", hport);
    char *dargv[32] = {(char *)opt.nurtured, "--redis", raddr, "--port", portarg,
                       "--data-dir", ddir, "--token", token, "--log-level", "warn",
                       "--modules-dir", (char *)opt.modules_dir, "--log-file", dlog};
    size_t na = 0;
    while (dargv[na])
        na++;
    for (size_t i = 0; extra && extra[i] && na < 31; i++)
        dargv[na++] = extra[i];
    dargv[na] = NULL;
    g_nurtured = spawn(dargv, dlog);

    snprintf(h.base, sizeof(h.base), "http://127.0.0.1:%d", hport);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", hex);
    h.hdr = curl_slist_append(curl_slist_append(NULL, auth), "Content-Type: application/json");
    h.hdr_pb = curl_slist_append(curl_slist_append(NULL, auth),
                                 "Content-Type: application/x-protobuf");
    h.easy = curl_easy_init();
    if (!h.hdr || !h.hdr_pb || !h.easy)
        goto fail;
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
        goto fail;
    }
    stk->h = h;
    stk->redis = rc_sync;
    return 0;
fail:
    stk->h = h;
    stk->redis = rc_sync;
    return -1;
}

/* Free the stack's connections, stop every child and remove the directory. */
static void stack_stop(bench_stack_t *stk)
{
    redisFree(stk->redis);
    curl_easy_cleanup(stk->h.easy);
    curl_slist_free_all(stk->h.hdr);
    curl_slist_free_all(stk->h.hdr_pb);
    memset(&stk->h, 0, sizeof(stk->h));
    stk->redis = NULL;
    bench_cleanup();
}

typedef struct result {
    double tps, bytes, peak_rss;
} result_t;

static int run_scale(size_t n, result_t *res)
{
    int64_t wall0 = nt_mono_ms();
    int rc = -1;
    bench_stack_t stk;
    snap_t s0, s1;
    char *const extra[] = {"--channel.log.sink", "yes", NULL};

    if (stack_start(&stk, extra) != 0)
        goto out;
    http_t h = stk.h;
    redisContext *rc_sync = stk.redis;

    if (publish(&h, opt.plan_file, bench_plan_text, "bench") != 0 ||
        publish(&h, NULL, wait_plan_text, "bench_wait") != 0)
        goto out;

    /* throughput */
    note("%zu leads: throughput phase", n);
    if (take_snap(&h, &s0) != 0)
        goto out;
    diag_start(rc_sync);
    double ncpu0 = proc_cpu_s(g_nurtured), rcpu0 = redis_cpu_s(rc_sync);
    double ccpu0 = redis_children_cpu_s(rc_sync), forks0 = info_field(rc_sync, "stats",
                                                                       "total_forks");
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
    double ccpu1 = redis_children_cpu_s(rc_sync), forks1 = info_field(rc_sync, "stats",
                                                                       "total_forks");
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
    put("redis_forks", "%.0f", forks1 - forks0);
    put("redis_children_cpu_s", "%.2f", ccpu1 - ccpu0);
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
        show_log_tail(stk.dlog);
    }
    stack_stop(&stk);
    return rc;
}

/* ---- the email scenario: nurtured -> SMTP -> a local server ---- */

/* One send through the email channel, then exit. */
static const char email_plan_text[] =
    "id: \"bench_email\"\n"
    "name: \"Benchmark: one email per lead\"\n"
    "start: \"send\"\n"
    "nodes { id: \"send\" label: \"send\"\n"
    "  send { channel: \"email\" params { name: \"template\" value: \"tech_benchmark\" }\n"
    "         next: \"done\" } }\n"
    "nodes { id: \"done\" label: \"done\" exit { reason: \"done\" } }\n";

/* aiosmtpd (Debian's python3-aiosmtpd, run by /usr/bin/python3) with a handler that only
 * counts; the counts of messages and connections go to a file every 50 ms. */
static const char smtp_counter_py[] =
    "import asyncio, os, sys\n"
    "from aiosmtpd.smtp import SMTP\n"
    "port, path = int(sys.argv[1]), sys.argv[2]\n"
    "n = {'msgs': 0, 'conns': 0}\n"
    "class Handler:\n"
    "    async def handle_DATA(self, server, session, envelope):\n"
    "        n['msgs'] += 1\n"
    "        return '250 OK'\n"
    "class Counting(SMTP):\n"
    "    def connection_made(self, transport):\n"
    "        n['conns'] += 1\n"
    "        super().connection_made(transport)\n"
    "async def main():\n"
    "    loop = asyncio.get_running_loop()\n"
    "    await loop.create_server(lambda: Counting(Handler(), hostname='bench'),\n"
    "                             '127.0.0.1', port)\n"
    "    while True:\n"
    "        with open(path + '.tmp', 'w') as f:\n"
    "            f.write('%d %d\\n' % (n['msgs'], n['conns']))\n"
    "        os.replace(path + '.tmp', path)\n"
    "        await asyncio.sleep(0.05)\n"
    "asyncio.run(main())\n";

static char g_smtp_count_path[128];     /* aiosmtpd's counts */
static volatile uint64_t *g_sink_count; /* the C sink's counts: [0] messages, [1] connections */

/* ---- the C sink: just enough SMTP for libcurl, on libevent, counting what it accepts ---- */

typedef struct sink_conn {
    int data;                  /* inside DATA */
    int quit;                  /* close once the reply is written */
} sink_conn_t;

static void sink_close(struct bufferevent *bev, sink_conn_t *c)
{
    bufferevent_free(bev);
    free(c);
}

static void sink_on_write(struct bufferevent *bev, void *arg)
{
    sink_conn_t *c = arg;
    if (c->quit)
        sink_close(bev, c);
}

static void sink_on_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        sink_close(bev, arg);
}

static void sink_on_read(struct bufferevent *bev, void *arg)
{
    sink_conn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev), *out = bufferevent_get_output(bev);
    char *line;
    size_t n;
    while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) != NULL) {
        const char *reply = NULL;
        if (c->data) {
            if (n == 1 && line[0] == '.') {
                c->data = 0;
                g_sink_count[0]++;
                reply = "250 2.0.0 OK\r\n";
            }
        } else if (strncasecmp(line, "EHLO", 4) == 0) {
            reply = "250-sink\r\n250-8BITMIME\r\n250 SIZE 26214400\r\n";
        } else if (strncasecmp(line, "HELO", 4) == 0) {
            reply = "250 sink\r\n";
        } else if (strncasecmp(line, "MAIL", 4) == 0 || strncasecmp(line, "RCPT", 4) == 0 ||
                   strncasecmp(line, "RSET", 4) == 0 || strncasecmp(line, "NOOP", 4) == 0) {
            reply = "250 2.0.0 OK\r\n";
        } else if (strncasecmp(line, "DATA", 4) == 0) {
            c->data = 1;
            reply = "354 end with <CRLF>.<CRLF>\r\n";
        } else if (strncasecmp(line, "QUIT", 4) == 0) {
            c->quit = 1;
            reply = "221 2.0.0 bye\r\n";
        } else {
            reply = "502 5.5.2 not implemented\r\n";
        }
        free(line);
        if (reply)
            evbuffer_add(out, reply, strlen(reply));
        if (c->quit)
            break;
    }
}

static void sink_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                           int len, void *arg)
{
    (void)sa;
    (void)len;
    (void)arg;
    struct event_base *base = evconnlistener_get_base(l);
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    sink_conn_t *c = calloc(1, sizeof(*c));
    if (!bev || !c) {
        if (bev)
            bufferevent_free(bev);
        else
            close(fd);
        free(c);
        return;
    }
    g_sink_count[1]++;
    bufferevent_setcb(bev, sink_on_read, sink_on_write, sink_on_event, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    evbuffer_add(bufferevent_get_output(bev), "220 sink ESMTP\r\n", 16);
}

/* The sink's process: serve port until killed. */
static void sink_main(int port)
{
    struct event_base *base = event_base_new();
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct evconnlistener *l =
        base ? evconnlistener_new_bind(base, sink_on_accept, NULL,
                                       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128,
                                       (struct sockaddr *)&a, sizeof(a))
             : NULL;
    if (!l)
        _exit(1);
    event_base_dispatch(base);
    _exit(0);
}

/* Messages and connections the server accepted so far. Returns 0 or -1. */
static int smtp_counts(uint64_t *msgs, uint64_t *conns)
{
    if (g_sink_count) {
        *msgs = g_sink_count[0];
        *conns = g_sink_count[1];
        return 0;
    }
    FILE *f = fopen(g_smtp_count_path, "r");
    unsigned long long m = 0, c = 0;
    int ok = f && fscanf(f, "%llu %llu", &m, &c) == 2;
    if (f)
        fclose(f);
    *msgs = m;
    *conns = c;
    return ok ? 0 : -1;
}

/* Start the SMTP server (opt.smtp_server: aiosmtpd or sink) on a free port in g_tmp. Returns
 * the port, or -1. */
static int smtp_start(void)
{
    int port = free_port();
    char log[128], portarg[16];
    if (port < 0)
        return -1;
    snprintf(portarg, sizeof(portarg), "%d", port);
    snprintf(log, sizeof(log), "%s/smtp.log", g_tmp);
    if (strcmp(opt.smtp_server, "sink") == 0) {
        g_sink_count = mmap(NULL, 2 * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (g_sink_count == MAP_FAILED) {
            g_sink_count = NULL;
            return -1;
        }
        g_sink_count[0] = g_sink_count[1] = 0;
        pid_t parent = getpid();
        g_smtp = fork();
        if (g_smtp < 0)
            return -1;
        if (g_smtp == 0) {
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(127);
            sink_main(port);
        }
    } else {
        char py[128];
        snprintf(py, sizeof(py), "%s/smtp_counter.py", g_tmp);
        snprintf(g_smtp_count_path, sizeof(g_smtp_count_path), "%s/smtp.count", g_tmp);
        FILE *f = fopen(py, "w");
        if (!f || fputs(smtp_counter_py, f) < 0 || fclose(f) != 0)
            return -1;
        /* Debian's interpreter, which has python3-aiosmtpd, whatever is first on the PATH. */
        char *argv[] = {"/usr/bin/python3", py, portarg, g_smtp_count_path, NULL};
        g_smtp = spawn(argv, log);
    }
    for (int i = 0; i < 200 && !g_stop && alive(g_smtp); i++) {
        uint64_t m, c;
        if ((g_sink_count || smtp_counts(&m, &c) == 0) && port_open(port))
            return port;
        sleep_ms(50);
    }
    note("the SMTP server (%s) did not start on port %d", opt.smtp_server, port);
    show_log_tail(log);
    return -1;
}

static void smtp_stop(void)
{
    stop_child(&g_smtp, SIGTERM, 5000);
    if (g_sink_count)
        munmap((void *)g_sink_count, 2 * sizeof(uint64_t));
    g_sink_count = NULL;
}

typedef struct email_result {
    double per_s, nurtured_cpu, server_cpu;
} email_result_t;

/* n leads through the one-send email plan to a local SMTP server; prints the email block. */
static int run_email(size_t n, email_result_t *res)
{
    int rc = -1, port = -1;
    bench_stack_t stk;
    char url[64], inflight[16];
    memset(&stk, 0, sizeof(stk));

    if (!mkdtemp(strcpy(g_tmp, "/tmp/nt-bench-XXXXXX"))) {
        g_tmp[0] = '\0';
        return -1;
    }
    port = smtp_start();
    if (port < 0)
        goto out;
    snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", port);
    snprintf(inflight, sizeof(inflight), "%d", opt.email_inflight);
    char *const extra[] = {"--channel.email.smtp_url", url, "--channel.email.max_inflight",
                           inflight, "--channel.email.starttls", "no", NULL};
    if (stack_start(&stk, extra) != 0)
        goto out;
    if (publish(&stk.h, NULL, email_plan_text, "bench_email") != 0)
        goto out;

    note("%zu emails through %s (%s, %d in flight)", n, url, opt.smtp_server,
         opt.email_inflight);
    uint64_t m0, c0, m1 = 0, c1 = 0;
    smtp_counts(&m0, &c0);
    double ncpu0 = proc_cpu_s(g_nurtured), scpu0 = proc_cpu_s(g_smtp);
    double rcpu0 = redis_cpu_s(stk.redis);
    int64_t t0 = nt_mono_ms(), progress = t0, t1;
    if (enrol_all(&stk.h, "bench_email", "email", n) != 0)
        goto out;
    int64_t t_enrolled = nt_mono_ms();
    uint64_t last = m0;
    for (;;) {
        smtp_counts(&m1, &c1);
        t1 = nt_mono_ms();
        if (m1 - m0 >= n)
            break;
        if (g_stop || !alive(g_nurtured) || !alive(g_smtp)) {
            note("email: a server died or the run was stopped");
            goto out;
        }
        if (m1 != last) {
            last = m1;
            progress = t1;
        } else if (t1 - progress > 30000) {
            note("email: stuck at %llu of %zu messages for 30 s",
                 (unsigned long long)(m1 - m0), n);
            goto out;
        }
        sleep_ms(20);
    }
    double ncpu1 = proc_cpu_s(g_nurtured), scpu1 = proc_cpu_s(g_smtp);
    double rcpu1 = redis_cpu_s(stk.redis);
    double secs = (double)(t1 - t0) / 1000.0;
    double exits = 0;
    for (int i = 0; i < 100 && exits < (double)n; i++) {
        if (plan_stats(&stk.h, "bench_email", NULL, &exits, NULL) != 0)
            break;
        if (exits < (double)n)
            sleep_ms(100);
    }
    res->per_s = (double)n / secs;
    res->nurtured_cpu = ncpu1 - ncpu0;
    res->server_cpu = scpu1 - scpu0;
    put("emails", "%zu", n);
    put("smtp_server", "%s", opt.smtp_server);
    put("email_max_inflight", "%d", opt.email_inflight);
    put("email_enrol_s", "%.2f", (double)(t_enrolled - t0) / 1000.0);
    put("email_s", "%.2f", secs);
    put("emails_per_s", "%.0f", res->per_s);
    put("emails_accepted", "%llu", (unsigned long long)(m1 - m0));
    put("email_runs_exited", "%.0f", exits);
    put("smtp_connections", "%llu", (unsigned long long)(c1 - c0));
    put("nurtured_cpu_s_email", "%.2f", res->nurtured_cpu);
    put("smtp_server_cpu_s", "%.2f", res->server_cpu);
    put("redis_cpu_s_email", "%.2f", rcpu1 - rcpu0);
    rc = 0;
out:
    if (rc != 0 && g_tmp[0]) {
        note("email scenario failed; nurtured log tail:");
        show_log_tail(stk.dlog);
    }
    smtp_stop();
    stack_stop(&stk);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: nt-bench --nurtured PATH --modules-dir DIR [--leads N] [--scales 1,10]\n"
               "                [--inflight K] [--plan FILE.textpb] [--redis-server PATH]\n"
               "                [--perf DIR] [--email N | --email-after N]\n"
               "                [--smtp-server aiosmtpd|sink] [--email-inflight K]\n"
               "Prints key=value lines: a block per scale (starting with leads=), then an\n"
               "email block (starting with emails=), then a summary. --perf records nurtured\n"
               "and redis-server with perf during each throughput phase into\n"
               "DIR/{nurtured,redis}-<leads>.data. The email scenario sends one message per\n"
               "lead through the email channel to a local SMTP server (aiosmtpd run by\n"
               "/usr/bin/python3, or sink: a counting SMTP server in C); it runs after the\n"
               "scales with --email-after N messages (default 20000, 0: not at all), or alone\n"
               "with --email N. --email-inflight sets channel.email.max_inflight (default 8).\n");
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
    opt.emails = BENCH_EMAILS;
    opt.email_inflight = 8;
    opt.smtp_server = "aiosmtpd";
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
        } else if (strcmp(a, "--email") == 0 || strcmp(a, "--email-after") == 0) {
            char *end;
            opt.emails = strtoull(v, &end, 10);
            opt.email_only = strcmp(a, "--email") == 0;
            if (*end || (opt.email_only && opt.emails == 0)) {
                note("%s wants a number of messages", a);
                return 2;
            }
        } else if (strcmp(a, "--email-inflight") == 0) {
            opt.email_inflight = atoi(v);
            if (opt.email_inflight < 1 || opt.email_inflight > 1024) {
                note("--email-inflight wants 1 to 1024");
                return 2;
            }
        } else if (strcmp(a, "--smtp-server") == 0) {
            if (strcmp(v, "aiosmtpd") != 0 && strcmp(v, "sink") != 0) {
                note("--smtp-server wants aiosmtpd or sink");
                return 2;
            }
            opt.smtp_server = v;
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
    email_result_t er = {0};
    int rc = 0;
    size_t nscales = opt.email_only ? 0 : opt.nscales;
    for (size_t i = 0; i < nscales && rc == 0; i++) {
        size_t n = opt.leads * opt.scales[i];
        if (run_scale(n, &res[i]) != 0)
            rc = 1;
        if (g_stop)
            rc = 1;
    }
    if (rc == 0 && opt.emails > 0 && run_email(opt.emails, &er) != 0)
        rc = 1;
    if (g_stop)
        rc = 1;
    bench_cleanup();
    if (rc == 0) {
        char failed[160] = "";
        if (nscales > 0) {
            double tps_min = res[0].tps, bytes_max = res[0].bytes, growth = 0;
            for (size_t i = 1; i < nscales; i++) {
                tps_min = fmin(tps_min, res[i].tps);
                bytes_max = fmax(bytes_max, res[i].bytes);
                growth = fmax(growth, (res[i].peak_rss / res[0].peak_rss - 1) * 100);
            }
            if (tps_min < BENCH_TARGET_TPS)
                strcat(failed, ",transitions_per_s");
            if (bytes_max > BENCH_TARGET_BYTES)
                strcat(failed, ",redis_bytes_per_waiting_run");
            if (growth > BENCH_TARGET_RSS_PCT)
                strcat(failed, ",rss_growth_pct");
            put("rss_growth_pct", "%.1f", growth);
            put("transitions_per_s_min", "%.0f", tps_min);
            put("redis_bytes_per_waiting_run_max", "%.0f", bytes_max);
        }
        if (opt.emails > 0) {
            if (er.per_s < BENCH_TARGET_EMAILS)
                strcat(failed, ",emails_per_s");
            /* nurtured's CPU below the server's: meaningful against a real server only */
            if (strcmp(opt.smtp_server, "aiosmtpd") == 0 && er.nurtured_cpu >= er.server_cpu)
                strcat(failed, ",nurtured_cpu_s_email");
        }
        put("targets_met", "%s", failed[0] ? "no" : "yes");
        put("targets_missed", "%s", failed[0] ? failed + 1 : "none");
    }
    curl_global_cleanup();
    return rc;
}
