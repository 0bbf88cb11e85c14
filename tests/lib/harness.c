/* The test harness (see harness.h). Blocking calls are fine here: this is test code. */
#include "harness.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "log.h"
#include "redis.h"

#ifndef NT_REDIS_SERVER
#define NT_REDIS_SERVER "redis-server"
#endif
#ifndef NT_PROTOC
#define NT_PROTOC "protoc"
#endif

/* ---- time ---- */

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

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (p == NULL) {
        fprintf(stderr, "harness: out of memory\n");
        abort();
    }
    return p;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        fprintf(stderr, "harness: out of memory\n");
        abort();
    }
    return s;
}

/* ---- the registry of started processes and their directories ---- */

enum { PROC_REDIS, PROC_DAEMON, PROC_SMTP };

typedef struct proc {
    pid_t pid;
    pid_t owner;    /* the process that started it: a forked test child must not kill it */
    int kind;
    char *log_path; /* daemons: printed when left running at exit */
    char *dir;      /* removed at exit unless NT_TEST_KEEP */
} proc_t;

#define MAX_PROCS 64
static proc_t procs[MAX_PROCS];
static int atexit_done;

static void proc_register(pid_t pid, int kind, const char *log_path, const char *dir)
{
    if (!atexit_done) {
        atexit(nt_test_cleanup_all);
        atexit_done = 1;
    }
    for (int i = 0; i < MAX_PROCS; i++) {
        if (procs[i].pid == 0) {
            procs[i].pid = pid;
            procs[i].owner = getpid();
            procs[i].kind = kind;
            procs[i].log_path = log_path != NULL ? xstrdup(log_path) : NULL;
            procs[i].dir = dir != NULL ? xstrdup(dir) : NULL;
            return;
        }
    }
    fprintf(stderr, "harness: more than %d processes at once; pid %ld is not tracked\n",
            MAX_PROCS, (long)pid);
}

static void proc_forget(pid_t pid)
{
    for (int i = 0; i < MAX_PROCS; i++) {
        if (procs[i].pid == pid && pid != 0) {
            free(procs[i].log_path);
            free(procs[i].dir);
            memset(&procs[i], 0, sizeof(procs[i]));
        }
    }
}

static int keep_dirs(void)
{
    const char *k = getenv("NT_TEST_KEEP");
    return k != NULL && k[0] != '\0' && strcmp(k, "0") != 0;
}

static void dump_file_tail(const char *path, int lines)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        fprintf(stderr, "harness: no log at %s\n", path);
        return;
    }
    char **ring = calloc((size_t)lines, sizeof(*ring));
    char *line = NULL;
    size_t cap = 0;
    long n = 0;
    while (ring != NULL && getline(&line, &cap, f) >= 0) {
        free(ring[n % lines]);
        ring[n % lines] = xstrdup(line);
        n++;
    }
    free(line);
    fclose(f);
    fprintf(stderr, "---- last %ld lines of %s ----\n", n < lines ? n : (long)lines, path);
    for (long i = n < lines ? 0 : n - lines; ring != NULL && i < n; i++) {
        const char *l = ring[i % lines];
        fprintf(stderr, "%s%s", l, l[0] != '\0' && l[strlen(l) - 1] == '\n' ? "" : "\n");
    }
    fprintf(stderr, "---- end of %s ----\n", path);
    for (int i = 0; ring != NULL && i < lines; i++)
        free(ring[i]);
    free(ring);
}

/* Wait for pid up to limit_ms. Returns the wait status, or -1 on timeout (still running) and
 * -2 when it is not our child (already reaped). */
static int reap(pid_t pid, int limit_ms)
{
    int64_t until = mono_ms() + limit_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            return -2;
        if (mono_ms() >= until)
            return -1;
        sleep_ms(10);
    }
}

static int kill_and_reap(pid_t pid, int sig, int limit_ms)
{
    kill(pid, sig);
    int st = reap(pid, limit_ms);
    if (st == -1) {
        kill(pid, SIGKILL);
        st = reap(pid, 5000);
    }
    return st;
}

void nt_test_cleanup_all(void)
{
    for (int i = 0; i < MAX_PROCS; i++) {
        if (procs[i].pid == 0 || procs[i].owner != getpid())
            continue;
        pid_t pid = procs[i].pid;
        if (procs[i].kind == PROC_DAEMON) {
            fprintf(stderr, "harness: nurtured pid %ld was left running (a failed test?)\n",
                    (long)pid);
            if (procs[i].log_path != NULL)
                dump_file_tail(procs[i].log_path, 50);
        }
        kill_and_reap(pid, SIGTERM, 5000);
        if (procs[i].dir != NULL && !keep_dirs())
            nt_test_rmrf(procs[i].dir);
        proc_forget(pid);
    }
}

/* fork + exec argv with stdin from /dev/null (or in_fd) and stdout to out_fd when >= 0; the
 * child gets SIGTERM when this process dies. Returns the pid or -1. */
static pid_t spawn(char *const *argv, int in_fd, int out_fd)
{
    pid_t parent = getpid();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        int in = in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY);
        if (in >= 0 && in != STDIN_FILENO)
            dup2(in, STDIN_FILENO);
        if (out_fd >= 0 && out_fd != STDOUT_FILENO)
            dup2(out_fd, STDOUT_FILENO);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        execv(argv[0], argv);
        fprintf(stderr, "harness: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

/* ---- ports and directories ---- */

int nt_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

char *nt_test_tmpdir(const char *prefix)
{
    char *p = xasprintf("/tmp/%s-XXXXXX", prefix != NULL && prefix[0] != '\0' ? prefix : "nt");
    if (mkdtemp(p) == NULL) {
        fprintf(stderr, "harness: mkdtemp %s: %s\n", p, strerror(errno));
        free(p);
        return NULL;
    }
    return p;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    if (remove(path) != 0 && errno != ENOENT)
        fprintf(stderr, "harness: remove %s: %s\n", path, strerror(errno));
    return 0;
}

void nt_test_rmrf(const char *dir)
{
    if (dir == NULL || strncmp(dir, "/tmp/", 5) != 0 || dir[5] == '\0' ||
        strstr(dir, "..") != NULL) {
        fprintf(stderr, "harness: refusing to remove %s\n", dir != NULL ? dir : "(null)");
        return;
    }
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- redis-server ---- */

static int redis_ping(int port, int timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    int ok = 0;
    if (c != NULL && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *r = redisCommand(c, "PING");
        ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
        if (r != NULL)
            freeReplyObject(r);
    }
    if (c != NULL)
        redisFree(c);
    return ok;
}

static int redis_up(int port)
{
    return redis_ping(port, 1000);
}

/* Wait up to 10 s for the registered process pid to serve port (up(port) non-zero). Returns 0;
 * -1 when it exited (e.g. the port was taken), -2 on timeout (killed); either way it is
 * forgotten. */
static int wait_serving(pid_t pid, int port, int (*up)(int port))
{
    int64_t until = mono_ms() + 10000;
    for (;;) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            proc_forget(pid);
            return -1;
        }
        if (up(port))
            return 0;
        if (mono_ms() > until) {
            kill_and_reap(pid, SIGKILL, 5000);
            proc_forget(pid);
            return -2;
        }
        sleep_ms(20);
    }
}

/* Start redis-server on r->port in r->dir and wait for PONG. Returns 0, -1 when it exited
 * (e.g. the port was taken), -2 on timeout (killed). */
static int redis_spawn(nt_test_redis_t *r)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", r->port);
    char *logfile = xasprintf("%s/redis.log", r->dir);
    char *argv[] = {
        (char *)NT_REDIS_SERVER, "--port", port, "--bind", "127.0.0.1", "--dir", r->dir,
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
        "--logfile", logfile, NULL,
    };
    pid_t pid = spawn(argv, -1, -1);
    free(logfile);
    if (pid < 0)
        return -1;
    proc_register(pid, PROC_REDIS, NULL, r->dir);
    int rc = wait_serving(pid, r->port, redis_up);
    if (rc == 0)
        r->pid = pid;
    return rc;
}

int nt_test_redis_start(nt_test_redis_t *r)
{
    memset(r, 0, sizeof(*r));
    r->dir = nt_test_tmpdir("nt-redis");
    if (r->dir == NULL)
        return -1;
    /* The free port may be taken by someone else before redis binds it: try a few. */
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = nt_test_free_port();
        if (r->port < 0)
            break;
        int rc = redis_spawn(r);
        if (rc == 0)
            return 0;
        if (rc == -2)
            break;
    }
    fprintf(stderr, "harness: redis-server did not start\n");
    char *log = xasprintf("%s/redis.log", r->dir);
    dump_file_tail(log, 20);
    free(log);
    nt_test_rmrf(r->dir);
    free(r->dir);
    memset(r, 0, sizeof(*r));
    return -1;
}

int nt_test_redis_stop_only(nt_test_redis_t *r)
{
    if (r == NULL || r->pid <= 0)
        return 0;
    /* SHUTDOWN, like an operator would: Redis fsyncs the AOF and exits. */
    redisContext *c = nt_test_redis_connect(r);
    if (c != NULL) {
        redisReply *rep = redisCommand(c, "SHUTDOWN");
        if (rep != NULL)
            freeReplyObject(rep);
        redisFree(c);
    } else {
        kill(r->pid, SIGTERM);
    }
    int st = reap(r->pid, 10000);
    int rc = 0;
    if (st == -1) {
        fprintf(stderr, "harness: redis-server pid %ld did not stop: killing it\n",
                (long)r->pid);
        kill_and_reap(r->pid, SIGKILL, 5000);
        rc = -1;
    }
    proc_forget(r->pid);
    r->pid = 0;
    return rc;
}

int nt_test_redis_restart(nt_test_redis_t *r)
{
    if (r == NULL || r->dir == NULL)
        return -1;
    nt_test_redis_stop_only(r);
    /* The old socket may linger in TIME_WAIT; redis sets SO_REUSEADDR, so one try suffices,
     * but give a late-closing listener a moment. */
    for (int attempt = 0; attempt < 3; attempt++) {
        int rc = redis_spawn(r);
        if (rc == 0)
            return 0;
        if (rc == -2)
            break;
        sleep_ms(200);
    }
    fprintf(stderr, "harness: redis-server did not restart on port %d\n", r->port);
    return -1;
}

void nt_test_redis_stop(nt_test_redis_t *r)
{
    if (r == NULL)
        return;
    nt_test_redis_stop_only(r);
    if (r->dir != NULL) {
        if (!keep_dirs())
            nt_test_rmrf(r->dir);
        free(r->dir);
    }
    memset(r, 0, sizeof(*r));
}

redisContext *nt_test_redis_connect(const nt_test_redis_t *r)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (c == NULL)
        return NULL;
    if (c->err) {
        fprintf(stderr, "harness: connect to redis :%d: %s\n", r->port, c->errstr);
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

char *nt_test_redis_addr(const nt_test_redis_t *r)
{
    return xasprintf("127.0.0.1:%d", r->port);
}

/* ---- an SMTP server ---- */

static const char smtp_py[] =
    "import asyncio, os, re, sys\n"
    "from aiosmtpd.smtp import SMTP\n"
    "\n"
    "class Handler:\n"
    "    def __init__(self, outdir):\n"
    "        self.outdir = outdir\n"
    "        self.tempfailed = set()\n"
    "        self.n = len(os.listdir(outdir))  # a restarted server goes on numbering\n"
    "\n"
    "    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):\n"
    "        if address.startswith('reject'):\n"
    "            return '550 5.1.1 no such user here'\n"
    "        envelope.rcpt_tos.append(address)\n"
    "        return '250 OK'\n"
    "\n"
    "    async def handle_DATA(self, server, session, envelope):\n"
    "        raw = envelope.original_content\n"
    "        m = re.search(rb'Message-ID: (<[^>]*>)', raw)\n"
    "        mid = m.group(1) if m else b''\n"
    "        if any(r.startswith('tempfail') for r in envelope.rcpt_tos) and \\\n"
    "                mid not in self.tempfailed:\n"
    "            self.tempfailed.add(mid)\n"
    "            return '451 4.3.0 try later'\n"
    "        self.n += 1\n"
    "        tmp = os.path.join(self.outdir, '.%d.tmp' % self.n)\n"
    "        with open(tmp, 'wb') as f:\n"
    "            f.write(b'X-Test-Mail-From: ' + envelope.mail_from.encode() + b'\\r\\n')\n"
    "            f.write(b'X-Test-Rcpt-To: ' + ','.join(envelope.rcpt_tos).encode() + "
    "b'\\r\\n')\n"
    "            f.write(raw)\n"
    "        os.rename(tmp, os.path.join(self.outdir, '%04d.eml' % self.n))\n"
    "        return '250 OK: queued'\n"
    "\n"
    "async def main(port, outdir, tls):\n"
    "    handler = Handler(outdir)\n"
    "    kw = {}\n"
    "    if tls:\n"
    "        import ssl\n"
    "        from aiosmtpd.smtp import AuthResult, LoginPassword\n"
    "        cert, key, user, password = tls\n"
    "        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)\n"
    "        ctx.load_cert_chain(cert, key)\n"
    "        def check(server, session, envelope, mechanism, data):\n"
    "            ok = isinstance(data, LoginPassword) and data.login == user.encode() \\\n"
    "                and data.password == password.encode()\n"
    "            return AuthResult(success=ok, handled=False)\n"
    "        kw = dict(tls_context=ctx, require_starttls=True, authenticator=check,\n"
    "                  auth_required=True, auth_require_tls=True)\n"
    "    loop = asyncio.get_running_loop()\n"
    "    srv = await loop.create_server(lambda: SMTP(handler, hostname='nt-test', **kw),\n"
    "                                   '127.0.0.1', port)\n"
    "    await srv.serve_forever()\n"
    "\n"
    "asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3:7]))\n";

static int port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

int nt_test_smtp_start(nt_test_smtp_t *s)
{
    return nt_test_smtp_start_tls(s, NULL, NULL, NULL, NULL);
}

/* Run the server script in s->dir on s->port (TLS and AUTH when cert is set) and wait until it
 * accepts connections. Returns 0 with s->pid set, or -1. */
static int smtp_spawn(nt_test_smtp_t *s, const char *cert, const char *key, const char *user,
                      const char *password)
{
    char port[16];
    char *py = xasprintf("%s/nt_test_smtp.py", s->dir);
    char *log = xasprintf("%s/smtp.log", s->dir);
    snprintf(port, sizeof(port), "%d", s->port);
    /* Debian's interpreter, which has python3-aiosmtpd, whatever is first on the PATH. */
    char *argv[] = {"/usr/bin/python3", py, port, s->msgs, (char *)cert, (char *)key,
                    (char *)user, (char *)password, NULL};
    if (cert == NULL)
        argv[4] = NULL;
    int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_t pid = spawn(argv, -1, out);
    if (out >= 0)
        close(out);
    free(py);
    free(log);
    if (pid < 0)
        return -1;
    proc_register(pid, PROC_SMTP, NULL, s->dir);
    if (wait_serving(pid, s->port, port_open) != 0)
        return -1;
    s->pid = pid;
    return 0;
}

int nt_test_smtp_start_tls(nt_test_smtp_t *s, const char *cert, const char *key,
                           const char *user, const char *password)
{
    memset(s, 0, sizeof(*s));
    s->dir = nt_test_tmpdir("nt-smtp");
    if (s->dir == NULL)
        return -1;
    s->msgs = xasprintf("%s/received", s->dir);
    char *py = xasprintf("%s/nt_test_smtp.py", s->dir);
    FILE *f = fopen(py, "w");
    int ok = f != NULL && fputs(smtp_py, f) >= 0;
    if (f != NULL && fclose(f) != 0)
        ok = 0;
    free(py);
    if (!ok || mkdir(s->msgs, 0755) != 0)
        goto fail;
    /* The free port may be taken before the server binds it: try a few. */
    for (int attempt = 0; attempt < 5 && s->pid <= 0; attempt++) {
        s->port = nt_test_free_port();
        if (smtp_spawn(s, cert, key, user, password) != 0 && s->port < 0)
            break;
    }
    if (s->pid <= 0)
        goto fail;
    snprintf(s->url, sizeof(s->url), "smtp://127.0.0.1:%d", s->port);
    return 0;
fail:
    fprintf(stderr, "harness: aiosmtpd did not start\n");
    if (s->dir != NULL) {
        char *log = xasprintf("%s/smtp.log", s->dir);
        dump_file_tail(log, 20);
        free(log);
    }
    nt_test_smtp_stop(s);
    return -1;
}

void nt_test_smtp_down(nt_test_smtp_t *s)
{
    if (s->pid > 0) {
        kill_and_reap(s->pid, SIGKILL, 5000);
        proc_forget(s->pid);
    }
    s->pid = 0;
}

int nt_test_smtp_up(nt_test_smtp_t *s)
{
    /* the port was ours a moment ago; a few tries in case the kernel is slow to let it go */
    for (int attempt = 0; attempt < 5 && s->pid <= 0; attempt++)
        if (smtp_spawn(s, NULL, NULL, NULL, NULL) != 0)
            sleep_ms(200);
    return s->pid > 0 ? 0 : -1;
}

void nt_test_smtp_stop(nt_test_smtp_t *s)
{
    if (s == NULL)
        return;
    if (s->pid > 0) {
        kill_and_reap(s->pid, SIGTERM, 5000);
        proc_forget(s->pid);
    }
    if (s->dir != NULL && !keep_dirs())
        nt_test_rmrf(s->dir);
    free(s->dir);
    free(s->msgs);
    memset(s, 0, sizeof(*s));
}

/* ---- HTTP ---- */

static void curl_once(void)
{
    static int done;
    if (!done) {
        curl_global_init(CURL_GLOBAL_ALL);
        done = 1;
    }
}

typedef struct sink {
    char *p;
    size_t len, cap;
} sink_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    sink_t *s = arg;
    size_t n = size * nmemb;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap != 0 ? s->cap : 4096;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *p = realloc(s->p, cap);
        if (p == NULL)
            return 0;
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, data, n);
    s->len += n;
    s->p[s->len] = '\0';
    return n;
}

static int http_do(const char *method, const char *url, const char *token,
                   const char *content_type, const void *body, size_t len, long timeout_ms,
                   int quiet, nt_test_resp_t *out)
{
    memset(out, 0, sizeof(*out));
    curl_once();
    CURL *c = curl_easy_init();
    if (c == NULL)
        return -1;
    struct curl_slist *h = NULL;
    char *auth = NULL, *ct = NULL;
    if (token != NULL) {
        auth = xasprintf("Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (content_type != NULL) {
        ct = xasprintf("Content-Type: %s", content_type);
        h = curl_slist_append(h, ct);
    }
    h = curl_slist_append(h, "Expect:");
    sink_t s = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    int has_body = body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                   strcmp(method, "PATCH") == 0;
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (has_body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body != NULL ? len : 0));
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body != NULL ? (const char *)body : "");
    }
    /* POSTFIELDS makes a POST: any other method (also a GET with a body) is named. */
    if (strcmp(method, "POST") != 0 && strcmp(method, "HEAD") != 0 &&
        (has_body || strcmp(method, "GET") != 0))
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    CURLcode rc = curl_easy_perform(c);
    int result = -1;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
        char *type = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &type);
        out->content_type = type != NULL ? xstrdup(type) : NULL;
        out->body = s.p != NULL ? s.p : xstrdup("");
        out->len = s.len;
        s.p = NULL;
        const char *b = out->body;
        while (*b == ' ' || *b == '\t' || *b == '\r' || *b == '\n')
            b++;
        if ((out->content_type != NULL && strstr(out->content_type, "json") != NULL) ||
            *b == '{' || *b == '[')
            out->json = json_loadb(out->body, out->len, 0, NULL);
        result = 0;
    } else if (!quiet) {
        fprintf(stderr, "harness: %s %s: %s\n", method, url, curl_easy_strerror(rc));
    }
    free(s.p);
    free(auth);
    free(ct);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return result;
}

int nt_test_http(const char *method, const char *url, const char *token,
                 const char *content_type, const void *body, size_t len, nt_test_resp_t *out)
{
    return http_do(method, url, token, content_type, body, len, 30000, 0, out);
}

void nt_test_resp_fini(nt_test_resp_t *r)
{
    if (r == NULL)
        return;
    free(r->body);
    free(r->content_type);
    if (r->json != NULL)
        json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

int nt_test_json(nt_test_daemon_t *d, const char *method, const char *path, const char *token,
                 const char *json_body, nt_test_resp_t *out)
{
    char *url = xasprintf("%s%s", d->url, path);
    int rc = nt_test_http(method, url, token, json_body != NULL ? "application/json" : NULL,
                          json_body, json_body != NULL ? strlen(json_body) : 0, out);
    free(url);
    return rc;
}

/* ---- nurtured ---- */

static char *random_hex(void)
{
    unsigned char raw[16];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno != EINTR)
            abort();
        if (n > 0)
            got += (size_t)n;
    }
    char *s = malloc(33);
    if (s == NULL)
        abort();
    for (size_t i = 0; i < sizeof(raw); i++)
        sprintf(s + 2 * i, "%02x", raw[i]);
    return s;
}

static void free_argv(char **argv)
{
    for (size_t i = 0; argv != NULL && argv[i] != NULL; i++)
        free(argv[i]);
    free(argv);
}

static int daemon_spawn(nt_test_daemon_t *d)
{
    pid_t pid = spawn(d->argv, -1, -1);
    if (pid < 0) {
        fprintf(stderr, "harness: fork: %s\n", strerror(errno));
        return -1;
    }
    d->pid = pid;
    proc_register(pid, PROC_DAEMON, d->log_path, d->data_dir);
    char *url = xasprintf("%s/health", d->url);
    int64_t until = mono_ms() + 15000;
    int rc = -1;
    for (;;) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "harness: nurtured exited at start-up (%s %d)\n",
                    WIFEXITED(st) ? "status" : "signal",
                    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            proc_forget(pid);
            d->pid = 0;
            break;
        }
        nt_test_resp_t resp;
        if (http_do("GET", url, NULL, NULL, NULL, 0, 1000, 1, &resp) == 0) {
            long status = resp.status;
            nt_test_resp_fini(&resp);
            if (status == 200) {
                rc = 0;
                break;
            }
        }
        if (mono_ms() > until) {
            fprintf(stderr, "harness: nurtured did not answer GET /health with 200 in 15 s\n");
            kill_and_reap(pid, SIGKILL, 5000);
            proc_forget(pid);
            d->pid = 0;
            break;
        }
        sleep_ms(50);
    }
    free(url);
    if (rc != 0)
        nt_test_daemon_dump_log(d);
    return rc;
}

int nt_test_daemon_start(nt_test_daemon_t *d, const char *redis_addr,
                         const char *const *extra_args)
{
    memset(d, 0, sizeof(*d));
    d->port = nt_test_free_port();
    d->data_dir = nt_test_tmpdir("nt-daemon");
    if (d->port < 0 || d->data_dir == NULL) {
        free(d->data_dir);
        memset(d, 0, sizeof(*d));
        return -1;
    }
    d->log_path = xasprintf("%s/nurtured.log", d->data_dir);
    snprintf(d->url, sizeof(d->url), "http://127.0.0.1:%d", d->port);
    d->ops_token = random_hex();
    d->rep_token = random_hex();
    d->webhook_token = random_hex();

    size_t nextra = 0;
    while (extra_args != NULL && extra_args[nextra] != NULL)
        nextra++;
    d->argv = calloc(24 + nextra, sizeof(char *));
    if (d->argv == NULL)
        abort();
    size_t n = 0;
    d->argv[n++] = xstrdup(NT_NURTURED_BIN);
    d->argv[n++] = xstrdup("--port");
    d->argv[n++] = xasprintf("%d", d->port);
    d->argv[n++] = xstrdup("--data-dir");
    d->argv[n++] = xstrdup(d->data_dir);
    d->argv[n++] = xstrdup("--log-file");
    d->argv[n++] = xstrdup(d->log_path);
    d->argv[n++] = xstrdup("--modules-dir");
    d->argv[n++] = xstrdup(NT_BINARY_DIR "/modules");
    d->argv[n++] = xstrdup("--token");
    d->argv[n++] = xasprintf("ops:%s", d->ops_token);
    d->argv[n++] = xstrdup("--token");
    d->argv[n++] = xasprintf("rep:%s:rep1", d->rep_token);
    d->argv[n++] = xstrdup("--token");
    d->argv[n++] = xasprintf("webhook:%s", d->webhook_token);
    if (redis_addr != NULL) {
        d->argv[n++] = xstrdup("--redis");
        d->argv[n++] = xstrdup(redis_addr);
    }
    for (size_t i = 0; i < nextra; i++)
        d->argv[n++] = xstrdup(extra_args[i]);
    d->argv[n] = NULL;

    if (daemon_spawn(d) != 0) {
        nt_test_daemon_stop(d);
        return -1;
    }
    return 0;
}

int nt_test_daemon_start_again(nt_test_daemon_t *d)
{
    if (d == NULL || d->argv == NULL)
        return -1;
    if (d->pid > 0) {
        int st = reap(d->pid, 0);
        if (st == -1) {
            fprintf(stderr, "harness: start_again: nurtured pid %ld still runs\n",
                    (long)d->pid);
            return -1;
        }
        proc_forget(d->pid);
        d->pid = 0;
    }
    return daemon_spawn(d);
}

void nt_test_daemon_signal(nt_test_daemon_t *d, int sig)
{
    if (d != NULL && d->pid > 0)
        kill(d->pid, sig);
}

static int exit_code(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -1;
}

int nt_test_daemon_wait(nt_test_daemon_t *d, int timeout_ms)
{
    if (d == NULL || d->pid <= 0)
        return -1;
    int st = reap(d->pid, timeout_ms);
    if (st == -1)
        return -1;
    proc_forget(d->pid);
    d->pid = 0;
    return st == -2 ? -1 : exit_code(st);
}

void nt_test_daemon_dump_log(const nt_test_daemon_t *d)
{
    if (d != NULL && d->log_path != NULL)
        dump_file_tail(d->log_path, 50);
}

void nt_test_daemon_stop(nt_test_daemon_t *d)
{
    if (d == NULL)
        return;
    if (d->pid > 0) {
        kill(d->pid, SIGTERM);
        int st = reap(d->pid, 15000);
        if (st == -1) {
            fprintf(stderr, "harness: nurtured pid %ld ignored SIGTERM for 15 s: killing it\n",
                    (long)d->pid);
            nt_test_daemon_dump_log(d);
            kill_and_reap(d->pid, SIGKILL, 5000);
        } else if (st >= 0 && exit_code(st) != 0) {
            fprintf(stderr, "harness: nurtured pid %ld exited with %d\n", (long)d->pid,
                    exit_code(st));
            nt_test_daemon_dump_log(d);
        }
        proc_forget(d->pid);
        d->pid = 0;
    }
    if (d->data_dir != NULL) {
        if (keep_dirs())
            fprintf(stderr, "harness: kept %s\n", d->data_dir);
        else
            nt_test_rmrf(d->data_dir);
    }
    free(d->data_dir);
    free(d->log_path);
    free(d->ops_token);
    free(d->rep_token);
    free(d->webhook_token);
    free_argv(d->argv);
    memset(d, 0, sizeof(*d));
}

/* ---- plans, waiting ---- */

int nt_test_compile_plan(const char *textpb_path, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int in = open(textpb_path, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        fprintf(stderr, "harness: %s: %s\n", textpb_path, strerror(errno));
        return -1;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        close(in);
        return -1;
    }
    char *argv[] = {(char *)NT_PROTOC, "--encode=nt.Workflow", "-I", NT_SOURCE_DIR "/proto",
                    NT_SOURCE_DIR "/proto/workflow.proto", NULL};
    pid_t pid = spawn(argv, in, p[1]);
    close(in);
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        return -1;
    }
    sink_t s = {0};
    char chunk[65536];
    for (;;) {
        ssize_t n = read(p[0], chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (on_body(chunk, 1, (size_t)n, &s) != (size_t)n)
            break;
    }
    close(p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "harness: protoc --encode failed on %s\n", textpb_path);
        free(s.p);
        return -1;
    }
    *out = s.p != NULL ? (uint8_t *)s.p : calloc(1, 1);
    *len = s.len;
    return *out != NULL ? 0 : -1;
}

struct nt_redis *nt_test_redis_async(struct event_base *base, const nt_test_redis_t *r)
{
    char *addr = nt_test_redis_addr(r), *err = NULL;
    nt_redis_t *redis = addr != NULL ? nt_redis_new(base, addr, 5000, &err) : NULL;
    int64_t until = mono_ms() + 10000;

    free(addr);
    free(err);
    while (redis != NULL && !nt_redis_up(redis) && mono_ms() < until)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    if (redis != NULL && !nt_redis_up(redis)) {
        nt_redis_free(redis);
        redis = NULL;
    }
    return redis;
}

int nt_test_loop_start(nt_test_redis_t *srv, redisContext **sync, struct event_base **base,
                       struct nt_redis **redis)
{
    nt_log_init(NT_LOG_WARN, NULL);
    nt_clock_init(1, 0);
    *sync = NULL;
    *base = NULL;
    *redis = NULL;
    if (nt_test_redis_start(srv) != 0)
        return -1;
    *sync = nt_test_redis_connect(srv);
    *base = event_base_new();
    *redis = *base != NULL ? nt_test_redis_async(*base, srv) : NULL;
    return *sync != NULL && *redis != NULL ? 0 : -1;
}

void nt_test_loop_stop(nt_test_redis_t *srv, redisContext *sync, struct event_base *base,
                       struct nt_redis *redis)
{
    nt_redis_free(redis);
    if (base != NULL)
        event_base_free(base);
    if (sync != NULL)
        redisFree(sync);
    nt_test_redis_stop(srv);
}

void nt_test_qp_decode(char *s)
{
    char *o = s;

    for (char *p = s; *p;) {
        if (p[0] == '=' && p[1] == '\r' && p[2] == '\n') {
            p += 3;
        } else if (p[0] == '=' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], 0};

            *o++ = (char)strtol(hex, NULL, 16);
            p += 3;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
}

int nt_test_wait_until(int (*pred)(void *), void *arg, int timeout_ms)
{
    int64_t until = mono_ms() + timeout_ms;
    for (;;) {
        if (pred(arg))
            return 0;
        if (mono_ms() >= until)
            return pred(arg) ? 0 : -1;
        sleep_ms(20);
    }
}

const nt_channel_ops_t *nt_test_channel_load(const char *dir, const char *channel,
                                             nt_modules_t **mods)
{
    char *err = NULL;
    const nt_module_t *m;

    *mods = nt_modules_load(dir, &err);
    if (*mods == NULL) {
        fprintf(stderr, "modules: %s\n", err ? err : "out of memory");
        free(err);
        return NULL;
    }
    m = nt_modules_find(*mods, channel);
    if (m == NULL) {
        fprintf(stderr, "no %s plugin in %s\n", channel, dir);
        nt_modules_free(*mods);
        *mods = NULL;
        return NULL;
    }
    return m->ops;
}

int nt_test_nth_link(const char *s, char kind, int k, char *out, size_t cap)
{
    char pat[8];
    const char *p = s;
    size_t len;

    snprintf(pat, sizeof(pat), "/t/%c/", kind);
    for (int i = 0; i <= k; i++) {
        p = p ? strstr(p, pat) : NULL;
        if (p == NULL)
            return -1;
        if (i < k)
            p += 5;
    }
    len = 5 + strspn(p + 5, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                            "0123456789-_.");
    if (len >= cap)
        return -1;
    memcpy(out, p, len);
    out[len] = '\0';
    return 0;
}
