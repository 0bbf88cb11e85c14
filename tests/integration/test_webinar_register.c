/* The webinar channel's registration against a real HTTP peer: Python's http.server
 * (ThreadingHTTPServer, HTTP/1.1 keep-alive) run by /usr/bin/python3 on a free port, with a
 * handler that saves every request (path, headers, body) and answers by path: /reg/<webinar>
 * 201 with a join link, /nested/<webinar> 200 with the link deeper down, /evil/<webinar>/<kind>
 * 200 with a hostile join link or none, /busy 503 to the first request of
 * each Idempotency-Key and 200 after, /bad 400 with a long JSON answer, /down 503 always, /slow
 * after 3 s. The plugin is loaded from the build's modules directory (nt_modules_load) and
 * driven by a libevent loop with the daemon's curl multi (nt_curlm); the host's post_event and
 * update_lead record what the plugin posts and writes (the write completes on the loop with a
 * code the test chooses). The last test runs nurtured itself (embedded Redis) against the same
 * server: a plan's registration step leaves by "registered" with the join link on the lead
 * and in the email of the next step, by "failed" at once on a 400, and by "failed" after the
 * worker's retries while the platform answers 503; a hostile link reaches neither. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>

#include "curlm.h"
#include "harness.h"
#include "log.h"
#include "modules.h"

#define MODULES_DIR NT_BINARY_DIR "/modules"

static const char server_py[] =
    "import json, os, sys, threading, time\n"
    "from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler\n"
    "\n"
    "port, outdir = int(sys.argv[1]), sys.argv[2]\n"
    "lock = threading.Lock()\n"
    "seen = {}\n"
    "count = [0]\n"
    "\n"
    "class Handler(BaseHTTPRequestHandler):\n"
    "    protocol_version = 'HTTP/1.1'\n"
    "\n"
    "    def log_message(self, *args):\n"
    "        pass\n"
    "\n"
    "    def answer(self, status, body):\n"
    "        body = body.encode()\n"
    "        self.send_response(status)\n"
    "        self.send_header('Content-Type', 'application/json')\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "\n"
    "    def do_POST(self):\n"
    "        body = self.rfile.read(int(self.headers.get('Content-Length', '0')))\n"
    "        key = self.headers.get('Idempotency-Key', '')\n"
    "        with lock:\n"
    "            count[0] += 1\n"
    "            n = count[0]\n"
    "            seen[key] = seen.get(key, 0) + 1\n"
    "            tries = seen[key]\n"
    "        head = 'Path: %s\\n' % self.path\n"
    "        for k, v in self.headers.items():\n"
    "            head += '%s: %s\\n' % (k, v)\n"
    "        tmp = os.path.join(outdir, '.%d.tmp' % n)\n"
    "        with open(tmp, 'wb') as f:\n"
    "            f.write(head.encode() + b'\\n' + body)\n"
    "        os.rename(tmp, os.path.join(outdir, '%04d.req' % n))\n"
    "        part = self.path.split('/')\n"
    "        web = part[2] if len(part) > 2 else 'none'\n"
    "        link = 'https://platform.example/j/%s/%d?tk=a%%2Fb' % (web, n)\n"
    "        if part[1] == 'reg':\n"
    "            return self.answer(201, json.dumps({'registrant_id': 'r-%d' % n,\n"
    "                                                'join_url': link}))\n"
    "        if part[1] == 'nested':\n"
    "            return self.answer(200, json.dumps({'data': {'links': {'join': link}},\n"
    "                                                'pad': 'x' * 5000}))\n"
    "        if part[1] == 'evil':\n"
    "            kind = part[3] if len(part) > 3 else 'w'\n"
    "            bad = {'crlf': 'https://platform.example/j\\r\\nBcc: victim@evil.example',\n"
    "                   'huge': 'https://platform.example/' + 'a' * 100000,\n"
    "                   'long': 'https://platform.example/' + 'b' * 1100,\n"
    "                   'text': 'See you there!',\n"
    "                   'js': 'javascript:alert(document.cookie)',\n"
    "                   'quote': 'https://platform.example/\" onmouseover=\"alert(1)',\n"
    "                   'bare': 'https://',\n"
    "                   'number': 42,\n"
    "                   'w': 'javascript:alert(1)\\r\\nBcc: victim@evil.example'}\n"
    "            return self.answer(200, json.dumps({'join_url': bad.get(kind)}))\n"
    "        if part[1] == 'busy':\n"
    "            if tries == 1:\n"
    "                return self.answer(503, '{\"message\": \"maintenance\"}')\n"
    "            return self.answer(200, json.dumps({'join_url': link}))\n"
    "        if part[1] == 'bad':\n"
    "            body = '{\"message\": \"invalid \\'email\\'\",\\n\"pad\": \"%s\"}'\n"
    "            return self.answer(400, body % ('x' * 2000))\n"
    "        if part[1] == 'down':\n"
    "            return self.answer(503, '{\"message\": \"down\"}')\n"
    "        if part[1] == 'slow':\n"
    "            time.sleep(3)\n"
    "        self.answer(404, '{}')\n"
    "\n"
    "ThreadingHTTPServer.daemon_threads = True\n"
    "ThreadingHTTPServer(('127.0.0.1', port), Handler).serve_forever()\n";

static char *tmp;     /* everything of this test */
static char *srv_dir; /* requests the server received */
static pid_t srv_pid = -1;
static int srv_port;
static char base_url[64];
static char cfg_url[160];
static const char *cfg_auth;
static const char *cfg_body;
static const char *cfg_join_field;
static const char *cfg_max_inflight;

static struct event_base *base;
static nt_curlm_t *curlm;
static nt_modules_t *mods;
static const nt_channel_ops_t *ops;
static void *plugin;
static int plugin_down;
static nt_channel_host_t host;

/* Events the plugin posted. */
typedef struct posted {
    char lead[64];
    char type[64];
    char webinar[80];
    char url[512];
    size_t nattrs;
} posted_t;

static posted_t posts[64];
static size_t nposts;

/* Lead writes the plugin asked for (host update_lead). */
typedef struct upd {
    char lead[64];
    char webinar_id[80];
    char link[2048];
    int has_link; /* webinar_join_link was among the attributes */
    size_t nattrs;
    int pending_at_write; /* dispatches not yet done when the write was asked for */
    void (*done)(void *arg, nt_rc_t rc);
    void *arg;
} upd_t;

static upd_t upds[64];
static size_t nupds;
static nt_rc_t upd_ret = NT_AGAIN; /* what update_lead returns: NT_AGAIN, or a refusal */
static nt_rc_t upd_rc;             /* what a write completes with */
static int upd_hold;               /* leave writes pending */
static int host_old;               /* a host built before update_lead */

/* ---- the host ---- */

static const char *host_config(const char *channel, const char *key, const char *def)
{
    if (strcmp(channel, "webinar") != 0)
        return def;
    if (strcmp(key, "url") == 0)
        return cfg_url[0] != '\0' ? cfg_url : def;
    if (strcmp(key, "auth") == 0)
        return cfg_auth != NULL ? cfg_auth : def;
    if (strcmp(key, "body") == 0 && cfg_body != NULL)
        return cfg_body;
    if (strcmp(key, "join_field") == 0 && cfg_join_field != NULL)
        return cfg_join_field;
    if (strcmp(key, "max_inflight") == 0 && cfg_max_inflight != NULL)
        return cfg_max_inflight;
    if (strcmp(key, "timeout_ms") == 0)
        return "1000";
    return def;
}

static int64_t host_now(void)
{
    return 1795000000000LL;
}

static nt_rc_t host_post_event(const char *lead_id, const char *type, const nt_kv_t *attrs,
                               size_t nattrs)
{
    assert_true(nposts < sizeof(posts) / sizeof(posts[0]));
    posted_t *p = &posts[nposts++];
    memset(p, 0, sizeof(*p));
    snprintf(p->lead, sizeof(p->lead), "%s", lead_id);
    snprintf(p->type, sizeof(p->type), "%s", type);
    p->nattrs = nattrs;
    for (size_t i = 0; i < nattrs; i++) {
        if (strcmp(attrs[i].key, "webinar") == 0)
            snprintf(p->webinar, sizeof(p->webinar), "%s", attrs[i].value);
        else if (strcmp(attrs[i].key, "url") == 0)
            snprintf(p->url, sizeof(p->url), "%s", attrs[i].value);
    }
    return NT_OK;
}

static int pending;

static void upd_fire(evutil_socket_t fd, short what, void *arg)
{
    upd_t *u = arg;
    if (!plugin_down)
        u->done(u->arg, upd_rc);
}

/* Record the write and complete it on the loop with upd_rc (never from inside the call). */
static nt_rc_t host_update_lead(const char *lead_id, const nt_kv_t *attrs, size_t nattrs,
                                void (*done)(void *arg, nt_rc_t rc), void *arg)
{
    if (upd_ret != NT_AGAIN)
        return upd_ret;
    assert_true(nupds < sizeof(upds) / sizeof(upds[0]));
    upd_t *u = &upds[nupds++];
    memset(u, 0, sizeof(*u));
    snprintf(u->lead, sizeof(u->lead), "%s", lead_id);
    u->nattrs = nattrs;
    for (size_t i = 0; i < nattrs; i++) {
        if (strcmp(attrs[i].key, "webinar_id") == 0) {
            snprintf(u->webinar_id, sizeof(u->webinar_id), "%s", attrs[i].value);
        } else if (strcmp(attrs[i].key, "webinar_join_link") == 0) {
            snprintf(u->link, sizeof(u->link), "%s", attrs[i].value);
            u->has_link = 1;
        }
    }
    u->pending_at_write = pending;
    u->done = done;
    u->arg = arg;
    if (!upd_hold) {
        struct timeval now = {0, 0};
        assert_int_equal(event_base_once(base, -1, EV_TIMEOUT, upd_fire, u, &now), 0);
    }
    return NT_AGAIN;
}

typedef struct xfer {
    void (*done)(void *easy, int curl_code, void *arg);
    void *arg;
} xfer_t;

static void host_curl_done(CURL *easy, CURLcode result, void *arg)
{
    xfer_t *x = arg;
    if (plugin_down)
        curl_easy_cleanup(easy);
    else
        x->done(easy, (int)result, x->arg);
    free(x);
}

static int host_curl_add(void *easy, void (*done)(void *, int, void *), void *arg)
{
    xfer_t *x = malloc(sizeof(*x));
    if (x == NULL)
        return -1;
    x->done = done;
    x->arg = arg;
    if (nt_curlm_add(curlm, easy, host_curl_done, x) != 0) {
        free(x);
        return -1;
    }
    return 0;
}

/* ---- results ---- */

typedef struct result {
    int calls;
    nt_rc_t rc;
    char outcome[64];
    char detail[1024];
} result_t;

static void on_done(void *arg, nt_rc_t rc, const char *outcome, const char *detail)
{
    result_t *r = arg;
    r->calls++;
    r->rc = rc;
    snprintf(r->outcome, sizeof(r->outcome), "%s", outcome != NULL ? outcome : "");
    snprintf(r->detail, sizeof(r->detail), "%s", detail != NULL ? detail : "");
    if (--pending == 0 && base != NULL)
        event_base_loopbreak(base);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(base);
}

/* Run the loop until every dispatch counted in `pending` is done, or 20 s. */
static void run_loop(void)
{
    struct event *t = evtimer_new(base, on_deadline, NULL);
    struct timeval tv = {20, 0};
    evtimer_add(t, &tv);
    if (pending > 0)
        event_base_dispatch(base);
    event_free(t);
    assert_int_equal(pending, 0);
}

/* Dispatch a registration of `lead_id` for `webinar` with idempotency key `id`; `reg` and
 * `invite` are the node's params when not NULL. */
static nt_rc_t dispatch(const char *id, const char *lead_id, const char *webinar, const char *reg,
                        const char *invite, result_t *r)
{
    nt_kv_t params[3] = {{"webinar", webinar}};
    size_t np = 1;
    if (reg != NULL)
        params[np++] = (nt_kv_t){"register", reg};
    if (invite != NULL)
        params[np++] = (nt_kv_t){"invite", invite};
    /* Names with quotes, a backslash, a line break, non-ASCII; a company with invalid UTF-8. */
    const nt_kv_t lead[] = {{"email", "zoe.oneil@example.org"},
                            {"first_name", "Zoë \"Z\""},
                            {"last_name", "O'Neil\\Ng\nJr"},
                            {"company", "Büro <Kraft> & Co \xff"},
                            {"score", "20"}};
    nt_message_t msg = {
        .id = id,
        .lead_id = lead_id,
        .plan_id = "webinar_invite",
        .plan_version = 1,
        .node_id = "register",
        .visit = 3,
        .params = params,
        .nparams = np,
        .lead = lead,
        .nlead = 5,
        .attempt = 1,
    };
    pending++;
    nt_rc_t rc = ops->dispatch(plugin, &msg, on_done, r);
    if (rc != NT_AGAIN)
        assert_int_equal(rc, NT_OK); /* done was called already */
    return rc;
}

/* ---- the HTTP server ---- */

static int port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static void write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

static int start_server(void)
{
    char py[512], log[512], port[16];
    snprintf(py, sizeof(py), "%s/nt_test_webinar.py", tmp);
    write_file(py, server_py);
    snprintf(log, sizeof(log), "%s/http.log", tmp);
    srv_port = nt_test_free_port();
    snprintf(port, sizeof(port), "%d", srv_port);
    snprintf(base_url, sizeof(base_url), "http://127.0.0.1:%d", srv_port);
    srv_pid = fork();
    if (srv_pid < 0)
        return -1;
    if (srv_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        /* Debian's interpreter, whatever is first on the PATH. */
        execl("/usr/bin/python3", "python3", py, port, srv_dir, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        if (port_open(srv_port))
            return 0;
        int st;
        if (waitpid(srv_pid, &st, WNOHANG) == srv_pid) {
            srv_pid = -1;
            break;
        }
        usleep(50 * 1000);
    }
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "cat %s >&2", log);
    (void)!system(cmd);
    return -1;
}

/* Requests the server saved, sorted, as a NULL-terminated malloc'd array of paths. */
static size_t list_req(char ***out)
{
    struct dirent **ents = NULL;
    int n = scandir(srv_dir, &ents, NULL, alphasort);
    size_t k = 0;
    char **paths = calloc((size_t)(n > 0 ? n : 0) + 1, sizeof(*paths));
    for (int i = 0; i < n; i++) {
        size_t l = strlen(ents[i]->d_name);
        if (l > 4 && strcmp(ents[i]->d_name + l - 4, ".req") == 0)
            assert_true(asprintf(&paths[k++], "%s/%s", srv_dir, ents[i]->d_name) > 0);
        free(ents[i]);
    }
    free(ents);
    if (out != NULL) {
        *out = paths;
    } else {
        for (size_t i = 0; i < k; i++)
            free(paths[i]);
        free(paths);
    }
    return k;
}

static void free_list(char **paths)
{
    for (size_t i = 0; paths != NULL && paths[i] != NULL; i++)
        free(paths[i]);
    free(paths);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(m);
    fclose(f);
    return buf;
}

/* The one request the server got since the last clear (malloc'd). */
static char *only_request(void)
{
    char **paths;
    assert_int_equal(list_req(&paths), 1);
    char *req = slurp(paths[0]);
    free_list(paths);
    return req;
}

/* The value of header `name` in a saved request (a static buffer), or NULL. */
static const char *req_header(const char *req, const char *name)
{
    static char val[512];
    size_t n = strlen(name);
    for (const char *p = req; *p != '\0' && *p != '\n'; p = strchr(p, '\n') + 1) {
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 2, *e = strchr(v, '\n');
            snprintf(val, sizeof(val), "%.*s", (int)(e - v), v);
            return val;
        }
        if (strchr(p, '\n') == NULL)
            break;
    }
    return NULL;
}

/* The body of a saved request (after the blank line). */
static const char *req_body(const char *req)
{
    const char *p = strstr(req, "\n\n");
    assert_non_null(p);
    return p + 2;
}

static void clear_requests(void)
{
    char **paths;
    list_req(&paths);
    for (size_t i = 0; paths[i] != NULL; i++)
        unlink(paths[i]);
    free_list(paths);
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
    tmp = nt_test_tmpdir("nt-webinar-reg");
    if (tmp == NULL)
        return -1;
    assert_true(asprintf(&srv_dir, "%s/received", tmp) > 0);
    mkdir(srv_dir, 0755);
    if (start_server() != 0)
        return -1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    ops = nt_test_channel_load(MODULES_DIR, "webinar", &mods);
    if (ops == NULL)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    nt_modules_free(mods);
    if (srv_pid > 0) {
        kill(srv_pid, SIGTERM);
        waitpid(srv_pid, NULL, 0);
    }
    if (tmp != NULL && getenv("NT_TEST_KEEP") == NULL)
        nt_test_rmrf(tmp);
    free(tmp);
    free(srv_dir);
    curl_global_cleanup();
    return 0;
}

/* A fresh loop and multi, and the plugin's init for url = base_url + path (a full URL as is;
 * NULL: no URL, local registration). Returns init's code (errmsg in *err when not NULL). */
static nt_rc_t try_start(const char *path, char **err)
{
    if (path == NULL)
        cfg_url[0] = '\0';
    else
        snprintf(cfg_url, sizeof(cfg_url), "%s%s", path[0] == '/' ? base_url : "", path);
    base = event_base_new();
    assert_non_null(base);
    curlm = nt_curlm_new(base);
    assert_non_null(curlm);
    host = (nt_channel_host_t){
        .abi_version = NT_CHANNEL_ABI_VERSION,
        .size = sizeof(nt_channel_host_t),
        .log = nt_log_channel,
        .config = host_config,
        .event_base = base,
        .curl_multi = nt_curlm_handle(curlm),
        .data_dir = tmp,
        .now_ms = host_now,
        .post_event = host_post_event,
        .curl_add = host_curl_add,
        .update_lead = host_update_lead,
    };
    if (host_old)
        host.size = (uint32_t)offsetof(nt_channel_host_t, update_lead);
    plugin_down = 0;
    pending = 0;
    nposts = 0;
    nupds = 0;
    clear_requests();
    char *e = NULL;
    nt_rc_t rc = ops->init(&host, &plugin, &e);
    if (rc != NT_OK)
        plugin = NULL;
    if (err != NULL)
        *err = e;
    else
        free(e);
    return rc;
}

static void start_plugin(const char *path)
{
    char *err = NULL;
    if (try_start(path, &err) != NT_OK)
        fail_msg("init: %s", err);
}

static int stop_plugin(void **state)
{
    if (plugin != NULL)
        ops->shutdown(plugin);
    plugin = NULL;
    plugin_down = 1;
    nt_curlm_free(curlm);
    curlm = NULL;
    if (base != NULL)
        event_base_free(base);
    base = NULL;
    cfg_auth = NULL;
    cfg_body = NULL;
    cfg_join_field = NULL;
    cfg_max_inflight = NULL;
    unsetenv("NT_WEBINAR_AUTH");
    upd_ret = NT_AGAIN;
    upd_rc = NT_OK;
    upd_hold = 0;
    host_old = 0;
    return 0;
}

static const char *jstr(json_t *root, const char *key)
{
    const char *s = json_string_value(json_object_get(root, key));
    if (s == NULL)
        fail_msg("no string at %s", key);
    return s;
}

/* ---- tests ---- */

static void test_webinar_registers_with_escaped_json_and_reports_the_join_link(void **state)
{
    const char *key = "lead-1:webinar_invite:register:3";
    cfg_auth = "Authorization: Bearer w3b-s3cr3t";
    start_plugin("/reg/{{webinar}}");
    result_t r = {0};
    assert_int_equal(dispatch(key, "lead-1", "pricing-2026.12", NULL, "platform", &r), NT_AGAIN);
    run_loop();
    assert_int_equal(r.calls, 1);
    if (r.rc != NT_OK)
        fail_msg("dispatch: %s", r.detail);
    assert_string_equal(r.outcome, "registered");
    const char *link = "https://platform.example/j/pricing-2026.12/1?tk=a%2Fb";
    assert_true(strncmp(r.detail, link, strlen(link)) == 0);
    assert_non_null(strstr(r.detail, "invitation by the platform"));

    /* The link is written on the lead, and only then is the registration reported. */
    assert_int_equal(nupds, 1);
    assert_string_equal(upds[0].lead, "lead-1");
    assert_string_equal(upds[0].webinar_id, "pricing-2026.12");
    assert_string_equal(upds[0].link, link);
    assert_int_equal(upds[0].nattrs, 2);
    assert_int_equal(upds[0].pending_at_write, 1);

    /* It is also posted for the lead's timeline. */
    assert_int_equal(nposts, 1);
    assert_string_equal(posts[0].lead, "lead-1");
    assert_string_equal(posts[0].type, "webinar.join_link");
    assert_string_equal(posts[0].webinar, "pricing-2026.12");
    assert_string_equal(posts[0].url, link);
    assert_int_equal(posts[0].nattrs, 2);

    char *req = only_request();
    assert_string_equal(req_header(req, "Path"), "/reg/pricing-2026.12");
    assert_string_equal(req_header(req, "Idempotency-Key"), key);
    assert_string_equal(req_header(req, "Authorization"), "Bearer w3b-s3cr3t");
    assert_string_equal(req_header(req, "Content-Type"), "application/json");
    assert_null(req_header(req, "Expect"));
    const char *body = req_body(req);
    /* Raw: quotes and backslashes escaped, the line break as \n, UTF-8 as is, the invalid
     * byte as U+FFFD. */
    assert_non_null(strstr(body, "\"first_name\":\"Zo\xc3\xab \\\"Z\\\"\""));
    assert_non_null(strstr(body, "\"last_name\":\"O'Neil\\\\Ng\\nJr\""));
    assert_non_null(strstr(body, "\\ufffd"));
    assert_null(strchr(body, '\n'));

    json_error_t jerr;
    json_t *j = json_loads(body, 0, &jerr);
    if (j == NULL)
        fail_msg("not JSON: %s: %s", jerr.text, body);
    assert_string_equal(jstr(j, "webinar"), "pricing-2026.12");
    assert_string_equal(jstr(j, "email"), "zoe.oneil@example.org");
    assert_string_equal(jstr(j, "first_name"), "Zoë \"Z\"");
    assert_string_equal(jstr(j, "last_name"), "O'Neil\\Ng\nJr");
    assert_string_equal(jstr(j, "company"), "Büro <Kraft> & Co \xef\xbf\xbd");
    assert_string_equal(jstr(j, "invite"), "platform");
    assert_string_equal(jstr(j, "idempotency_key"), key);
    assert_int_equal(json_object_size(j), 7);
    json_decref(j);
    free(req);
}

static void test_webinar_body_join_field_and_auth_are_configurable_and_checked(void **state)
{
    /* A platform that wants another shape and answers with the link further down. */
    cfg_body = "{\"registrant\":{\"mail\":\"{{email}}\",\"name\":\"{{first_name}} "
               "{{last_name}}\",\"org\":\"{{company}}\"},\"event\":\"{{webinar}}\","
               "\"ref\":\"{{idempotency_key}}\"}";
    cfg_join_field = "data.links.join";
    setenv("NT_WEBINAR_AUTH", "X-Api-Key: from-the-env", 1);
    start_plugin("/nested/{{webinar}}");
    result_t r = {0};
    dispatch("lead-2:p:n:1", "lead-2", "w1", NULL, NULL, &r);
    run_loop();
    if (r.rc != NT_OK)
        fail_msg("dispatch: %s", r.detail);
    assert_string_equal(r.outcome, "registered");
    assert_true(strncmp(r.detail, "https://platform.example/j/w1/", 30) == 0);
    assert_non_null(strstr(r.detail, "invitation by email"));
    assert_int_equal(nposts, 1);
    assert_true(strncmp(posts[0].url, "https://platform.example/j/w1/", 30) == 0);
    char *req = only_request();
    assert_string_equal(req_header(req, "X-Api-Key"), "from-the-env");
    assert_null(req_header(req, "Authorization"));
    json_t *j = json_loads(req_body(req), 0, NULL);
    assert_non_null(j);
    json_t *reg = json_object_get(j, "registrant");
    assert_string_equal(jstr(reg, "name"), "Zoë \"Z\" O'Neil\\Ng\nJr");
    assert_string_equal(jstr(reg, "mail"), "zoe.oneil@example.org");
    assert_string_equal(jstr(j, "event"), "w1");
    assert_string_equal(jstr(j, "ref"), "lead-2:p:n:1");
    json_decref(j);
    free(req);
    stop_plugin(state);

    /* Bad settings refuse to start, saying which. */
    char *err = NULL;
    cfg_body = "{\"mail\":\"{{email}}\",\"x\":\"{{shoe_size}}\"}";
    assert_int_not_equal(try_start("/reg/x", &err), NT_OK);
    assert_non_null(strstr(err, "unknown placeholder '{{shoe_size}}'"));
    free(err);
    stop_plugin(state);
    cfg_body = "{\"mail\":{{email}}}";
    assert_int_not_equal(try_start("/reg/x", &err), NT_OK);
    assert_non_null(strstr(err, "body is not JSON"));
    free(err);
    stop_plugin(state);
    assert_int_not_equal(try_start("ftp://127.0.0.1/x", &err), NT_OK);
    assert_non_null(strstr(err, "channel.webinar.url"));
    free(err);
    stop_plugin(state);
    assert_int_not_equal(try_start("/reg/{{lead}}", &err), NT_OK);
    assert_non_null(strstr(err, "{{webinar}}"));
    free(err);
    stop_plugin(state);
    cfg_auth = "Authorization Bearer no-colon-s3cr3t";
    assert_int_not_equal(try_start("/reg/x", &err), NT_OK);
    assert_non_null(strstr(err, "auth"));
    assert_null(strstr(err, "s3cr3t")); /* never echoed */
    free(err);
}

static void test_webinar_503_is_unavailable_then_the_retry_registers(void **state)
{
    const char *key = "lead-3:webinar_invite:register:1";
    start_plugin("/busy/{{webinar}}");
    result_t r = {0};
    dispatch(key, "lead-3", "w2", NULL, NULL, &r);
    run_loop();
    assert_int_equal(r.rc, NT_EUNAVAIL);
    assert_non_null(strstr(r.detail, "status 503"));
    assert_non_null(strstr(r.detail, "maintenance"));
    assert_int_equal(nposts, 0);
    /* The host retries with the same id: now 200. */
    memset(&r, 0, sizeof(r));
    dispatch(key, "lead-3", "w2", NULL, NULL, &r);
    run_loop();
    if (r.rc != NT_OK)
        fail_msg("retry: %s", r.detail);
    assert_string_equal(r.outcome, "registered");
    assert_int_equal(nposts, 1);
    assert_string_equal(posts[0].lead, "lead-3");
    char **paths;
    assert_int_equal(list_req(&paths), 2);
    char *a = slurp(paths[0]), *b = slurp(paths[1]);
    free_list(paths);
    assert_string_equal(req_header(a, "Idempotency-Key"), key);
    assert_string_equal(req_header(b, "Idempotency-Key"), key);
    assert_string_equal(req_body(a), req_body(b));
    free(a);
    free(b);
}

static void test_webinar_400_fails_permanently_with_the_answer(void **state)
{
    start_plugin("/bad/{{webinar}}");
    result_t r = {0};
    dispatch("lead-4:p:n:1", "lead-4", "w3", NULL, NULL, &r);
    run_loop();
    assert_int_equal(r.rc, NT_EPERMFAIL);
    assert_non_null(strstr(r.detail, "status 400: {\"message\": \"invalid 'email'\", \"pad\""));
    assert_null(strchr(r.detail, '\n'));
    assert_true(strlen(r.detail) < 450); /* the 2 kB answer is cut */
    assert_int_equal(nposts, 0);
}

static void test_webinar_platform_down_or_slow_is_unavailable(void **state)
{
    /* Nothing listens on the port. */
    char url[96];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/reg/{{webinar}}", nt_test_free_port());
    start_plugin(url);
    result_t r = {0};
    dispatch("lead-5:p:n:1", "lead-5", "w4", NULL, NULL, &r);
    run_loop();
    assert_int_equal(r.rc, NT_EUNAVAIL);
    assert_non_null(strstr(r.detail, "w4 lead-5:p:n:1"));
    assert_int_equal(nposts, 0);
    stop_plugin(state);

    /* Past timeout_ms (1 s here). */
    start_plugin("/slow");
    memset(&r, 0, sizeof(r));
    dispatch("lead-5:p:n:2", "lead-5", "w4", NULL, NULL, &r);
    run_loop();
    assert_int_equal(r.rc, NT_EUNAVAIL);
    assert_non_null(strstr(r.detail, "Timeout"));
}

static void test_webinar_without_a_url_registers_locally(void **state)
{
    start_plugin(NULL);
    result_t r[3];
    memset(r, 0, sizeof(r));
    /* Completed once the link is written. */
    assert_int_equal(dispatch("lead-6:p:n:1", "lead-6", "demo-w", NULL, NULL, &r[0]), NT_AGAIN);
    assert_int_equal(dispatch("lead-6:p:n:9", "lead-6", "demo-w", NULL, NULL, &r[1]), NT_AGAIN);
    assert_int_equal(dispatch("lead-7:p:n:1", "lead-7", "demo-w", NULL, NULL, &r[2]), NT_AGAIN);
    assert_int_equal(r[0].calls, 0);
    run_loop();
    assert_int_equal(nupds, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].rc, NT_OK);
        assert_string_equal(r[i].outcome, "registered");
    }
    /* https://webinars.example/<webinar>/<16 hex>, the same for the same lead and webinar. */
    const char *pre = "https://webinars.example/demo-w/";
    assert_int_equal(nposts, 3);
    assert_true(strncmp(posts[0].url, pre, strlen(pre)) == 0);
    assert_int_equal(strlen(posts[0].url), strlen(pre) + 16);
    assert_int_equal(strspn(posts[0].url + strlen(pre), "0123456789abcdef"), 16);
    assert_string_equal(posts[0].url, posts[1].url);
    assert_string_not_equal(posts[0].url, posts[2].url);
    assert_true(strncmp(r[0].detail, posts[0].url, strlen(posts[0].url)) == 0);
    for (int i = 0; i < 3; i++)
        assert_string_equal(upds[i].link, posts[i].url);
    assert_string_equal(upds[2].lead, "lead-7");
    assert_int_equal(list_req(NULL), 0);
}

static void test_webinar_params_register_no_and_a_lead_without_email(void **state)
{
    char *err = NULL;
    const nt_kv_t good[] = {{"webinar", "w_1.a-b"}, {"register", "no"}, {"invite", "platform"}};
    assert_int_equal(ops->validate(good, 3, &err), NT_OK);
    const nt_kv_t bad_id[] = {{"webinar", "w 1/../x"}};
    assert_int_equal(ops->validate(bad_id, 1, &err), NT_EINVAL);
    assert_non_null(strstr(err, "webinar must be"));
    free(err);
    const nt_kv_t bad_reg[] = {{"webinar", "w"}, {"register", "maybe"}};
    assert_int_equal(ops->validate(bad_reg, 2, &err), NT_EINVAL);
    assert_non_null(strstr(err, "register must be yes or no"));
    free(err);
    const nt_kv_t bad_inv[] = {{"webinar", "w"}, {"invite", "sms"}};
    assert_int_equal(ops->validate(bad_inv, 2, &err), NT_EINVAL);
    assert_non_null(strstr(err, "invite must be"));
    free(err);
    int has_registered = 0;
    for (const char *const *o = ops->outcomes; *o != NULL; o++)
        has_registered |= strcmp(*o, "registered") == 0;
    assert_true(has_registered);

    /* register: no calls nobody and reports sent. */
    start_plugin("/reg/{{webinar}}");
    result_t r = {0};
    assert_int_equal(dispatch("lead-8:p:n:1", "lead-8", "w5", "no", NULL, &r), NT_OK);
    assert_int_equal(r.rc, NT_OK);
    assert_string_equal(r.outcome, "sent");
    assert_non_null(strstr(r.detail, "not registered"));
    assert_int_equal(nposts, 0);
    assert_int_equal(nupds, 0);

    /* A lead without an email address cannot be registered. */
    const nt_kv_t params[] = {{"webinar", "w5"}};
    const nt_kv_t lead[] = {{"first_name", "Nobody"}};
    nt_message_t msg = {.id = "lead-9:p:n:1",
                        .lead_id = "lead-9",
                        .plan_id = "p",
                        .node_id = "n",
                        .visit = 1,
                        .params = params,
                        .nparams = 1,
                        .lead = lead,
                        .nlead = 1,
                        .attempt = 1};
    memset(&r, 0, sizeof(r));
    pending++;
    assert_int_equal(ops->dispatch(plugin, &msg, on_done, &r), NT_OK);
    assert_int_equal(r.rc, NT_EPERMFAIL);
    assert_non_null(strstr(r.detail, "no email"));
    assert_int_equal(list_req(NULL), 0);
}

static void test_webinar_many_beyond_max_inflight_queue_and_shutdown_cancels(void **state)
{
    cfg_max_inflight = "2";
    start_plugin("/reg/{{webinar}}");
    enum { N = 12 };
    result_t r[N];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < N; i++) {
        char id[64], lead[32];
        snprintf(id, sizeof(id), "lead-%d:p:n:1", 100 + i);
        snprintf(lead, sizeof(lead), "lead-%d", 100 + i);
        assert_int_equal(dispatch(id, lead, "w6", NULL, NULL, &r[i]), NT_AGAIN);
    }
    run_loop();
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        if (r[i].rc != NT_OK)
            fail_msg("registration %d: %s", i, r[i].detail);
    }
    assert_int_equal(list_req(NULL), N);
    assert_int_equal(nposts, N);
    assert_int_equal(nupds, N);
    stop_plugin(state);

    /* Shutdown: what is in flight or queued completes as canceled, at once. */
    cfg_max_inflight = "1";
    start_plugin("/slow");
    memset(r, 0, sizeof(r));
    dispatch("lead-10:p:n:1", "lead-10", "w7", NULL, NULL, &r[0]);
    dispatch("lead-10:p:n:2", "lead-10", "w7", NULL, NULL, &r[1]);
    ops->shutdown(plugin);
    plugin = NULL;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].rc, NT_ECANCELED);
    }
}

static void test_webinar_a_failed_write_of_the_link_is_transient(void **state)
{
    /* What the host does with the write (update_lead's return, then the write's result) and
     * what the send reports. The platform registers every time, under one key per message. */
    static const struct {
        nt_rc_t ret, result;
        const char *lead, *id, *says;
        nt_rc_t want;
    } cases[] = {
        /* Redis unavailable, or slow: retried by the host under the same key. */
        {NT_AGAIN, NT_EUNAVAIL, "lead-11", "lead-11:p:n:1", "not stored on the lead", NT_EUNAVAIL},
        {NT_AGAIN, NT_ETIMEOUT, "lead-11", "lead-11:p:n:1", "not stored on the lead", NT_ETIMEOUT},
        {NT_EUNAVAIL, NT_OK, "lead-11", "lead-11:p:n:1", "cannot be stored", NT_EUNAVAIL},
        /* The retry that gets through is registered. */
        {NT_AGAIN, NT_OK, "lead-11", "lead-11:p:n:1", "https://platform.example/j/w8/", NT_OK},
        /* A lead that is gone fails for good, as does a write the host refuses. */
        {NT_AGAIN, NT_ENOTFOUND, "lead-12", "lead-12:p:n:1", "no longer exists", NT_EPERMFAIL},
        {NT_EINVAL, NT_OK, "lead-12", "lead-12:p:n:2", "cannot be stored", NT_EPERMFAIL},
    };
    start_plugin("/reg/{{webinar}}");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        result_t r = {0};
        size_t writes = nupds, posted = nposts;
        upd_ret = cases[i].ret;
        upd_rc = cases[i].result;
        dispatch(cases[i].id, cases[i].lead, "w8", NULL, NULL, &r);
        run_loop();
        assert_int_equal(r.calls, 1);
        if (r.rc != cases[i].want || strstr(r.detail, cases[i].says) == NULL)
            fail_msg("case %zu: rc %d, detail '%s'", i, (int)r.rc, r.detail);
        assert_int_equal(nupds, writes + (cases[i].ret == NT_AGAIN));
        /* The link is posted only once it is written. */
        assert_int_equal(nposts, posted + (cases[i].want == NT_OK));
        if (cases[i].want == NT_OK)
            assert_string_equal(r.outcome, "registered");
    }
}

static void test_webinar_hostile_join_links_are_never_stored_or_posted(void **state)
{
    /* Kinds of bad "join_url" the test platform answers with (server_py, /evil); "none": the
     * answer has no link at all (null). */
    static const char *const kinds[] = {"none", "crlf",  "huge", "long",  "text",
                                        "js",   "quote", "bare", "number"};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        char path[64], id[64];
        result_t r = {0};
        snprintf(path, sizeof(path), "/evil/{{webinar}}/%s", kinds[i]);
        snprintf(id, sizeof(id), "lead-13:p:n:%zu", i + 1);
        start_plugin(path);
        dispatch(id, "lead-13", "w9", NULL, NULL, &r);
        run_loop();
        if (r.rc != NT_OK)
            fail_msg("%s: %s", kinds[i], r.detail);
        /* Registered: the platform has the person; the link is just not usable, so the lead's
         * link is emptied (no older webinar's link lingers) and nothing is posted or quoted. */
        assert_string_equal(r.outcome, "registered");
        assert_non_null(strstr(r.detail, "without a join link"));
        assert_null(strpbrk(r.detail, "\r\n"));
        assert_null(strstr(r.detail, "javascript"));
        assert_null(strstr(r.detail, "onmouseover"));
        assert_null(strstr(r.detail, "Bcc"));
        assert_true(strlen(r.detail) < 300);
        assert_int_equal(nposts, 0);
        assert_int_equal(nupds, 1);
        assert_true(upds[0].has_link);
        assert_string_equal(upds[0].link, "");
        assert_string_equal(upds[0].webinar_id, "w9");
        stop_plugin(state);
    }
}

static void test_webinar_shutdown_cancels_a_registration_waiting_for_its_write(void **state)
{
    upd_hold = 1;
    start_plugin(NULL);
    result_t r = {0};
    assert_int_equal(dispatch("lead-14:p:n:1", "lead-14", "w10", NULL, NULL, &r), NT_AGAIN);
    assert_int_equal(nupds, 1);
    assert_int_equal(r.calls, 0);
    ops->shutdown(plugin);
    plugin = NULL;
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, NT_ECANCELED);
    assert_int_equal(nposts, 0);
}

static void test_webinar_with_a_host_before_update_lead_only_posts_the_link(void **state)
{
    host_old = 1;
    start_plugin("/reg/{{webinar}}");
    result_t r = {0};
    dispatch("lead-15:p:n:1", "lead-15", "w11", NULL, NULL, &r);
    run_loop();
    assert_int_equal(r.rc, NT_OK);
    assert_string_equal(r.outcome, "registered");
    assert_int_equal(nupds, 0);
    assert_int_equal(nposts, 1);
    assert_true(strncmp(posts[0].url, "https://platform.example/j/w11/", 31) == 0);
}

/* ---- through nurtured ---- */

/* A registration step for each answer of the server: /reg, /evil, /bad and /down (webinar
 * ids). Registered leads get the real plan's invitation email (workflows/templates). */
#define REG_SEND(node, webinar)                                                                    \
    "nodes { id: \"" node "\" send { channel: \"webinar\"\n"                                       \
    "  params { name: \"webinar\" value: \"" webinar "\" }\n"                                      \
    "  on { outcome: \"registered\" to: \"registered\" }\n"                                        \
    "  on { outcome: \"failed\" to: \"failed\" } } }\n"

// clang-format off
static const char reg_plan[] =
    "id: \"wb_reg\"\n"
    "start: \"which\"\n"
    "attributes { name: \"mode\" description: \"which answer the test platform gives\" }\n"
    "nodes { id: \"which\" branch {\n"
    "  cases { when { attr { name: \"mode\" op: EQ value: \"bad\" } } to: \"reg_bad\" }\n"
    "  cases { when { attr { name: \"mode\" op: EQ value: \"down\" } } to: \"reg_down\" }\n"
    "  cases { when { attr { name: \"mode\" op: EQ value: \"evil\" } } to: \"reg_evil\" }\n"
    "  default: \"reg_ok\" } }\n"
    REG_SEND("reg_ok", "reg")
    REG_SEND("reg_evil", "evil")
    REG_SEND("reg_bad", "bad")
    REG_SEND("reg_down", "down")
    "nodes { id: \"registered\" send { channel: \"email\"\n"
    "  params { name: \"template\" value: \"webinar_invitation\" } next: \"invited\" } }\n"
    "nodes { id: \"invited\" exit { reason: \"registered\" } }\n"
    "nodes { id: \"failed\" exit { reason: \"failed\" } }\n";
// clang-format on

static nt_test_daemon_t daemon_;

/* The lead's JSON (GET /v1/leads/<id>), or NULL. */
static json_t *lead_json(const char *id)
{
    char path[128];
    nt_test_resp_t r;
    snprintf(path, sizeof(path), "/v1/leads/%s", id);
    if (nt_test_json(&daemon_, "GET", path, daemon_.ops_token, NULL, &r) != 0)
        return NULL;
    json_t *j = r.status == 200 ? json_incref(r.json) : NULL;
    nt_test_resp_fini(&r);
    return j;
}

/* The exit reason of the lead's finished run ("" while it runs). A static buffer. */
static const char *exit_reason(const char *id)
{
    static char reason[64];
    json_t *l = lead_json(id), *run;
    size_t i;
    reason[0] = '\0';
    json_array_foreach(json_object_get(l, "runs"), i, run)
    {
        const char *st = json_string_value(json_object_get(run, "status"));
        const char *x = json_string_value(json_object_get(run, "exit_reason"));
        if (st != NULL && strcmp(st, "done") == 0 && x != NULL)
            snprintf(reason, sizeof(reason), "%s", x);
    }
    json_decref(l);
    return reason;
}

static int all_done(void *arg)
{
    const char *const *ids = arg;
    for (size_t i = 0; ids[i] != NULL; i++)
        if (exit_reason(ids[i])[0] == '\0')
            return 0;
    return 1;
}

/* Whether the lead's timeline has a line containing text. */
static int timeline_has(const char *id, const char *text)
{
    json_t *l = lead_json(id), *line;
    size_t i;
    int found = 0;
    json_array_foreach(json_object_get(l, "timeline"), i, line)
    {
        const char *t = json_string_value(json_object_get(line, "text"));
        found |= t != NULL && strstr(t, text) != NULL;
    }
    json_decref(l);
    return found;
}

static int link_on_timeline(void *arg)
{
    return timeline_has(arg, "event webinar.join_link");
}

/* Requests the server got for path; all carry one Idempotency-Key, which names the lead. */
static size_t requests_to(const char *path, const char *lead)
{
    char **paths, key[512] = "";
    size_t n = 0;
    list_req(&paths);
    for (size_t i = 0; paths[i] != NULL; i++) {
        char *req = slurp(paths[i]);
        if (strcmp(req_header(req, "Path"), path) == 0) {
            const char *k = req_header(req, "Idempotency-Key");
            assert_non_null(k);
            if (n++ == 0)
                snprintf(key, sizeof(key), "%s", k);
            assert_string_equal(k, key);
            assert_non_null(strstr(k, lead));
        }
        free(req);
    }
    free_list(paths);
    return n;
}

/* The message the daemon's email channel wrote for address, quoted-printable decoded
 * (malloc'd), or NULL. */
static char *message_to(const char *address)
{
    char dir[4096];
    struct dirent **ents = NULL;
    char *found = NULL;
    snprintf(dir, sizeof(dir), "%s/maildir/new", daemon_.data_dir);
    int n = scandir(dir, &ents, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        char path[8192];
        snprintf(path, sizeof(path), "%s/%s", dir, ents[i]->d_name);
        if (found == NULL && ents[i]->d_name[0] != '.') {
            char *m = slurp(path);
            nt_test_qp_decode(m);
            /* "To: <address>" or "To: "Name" <<address>>" */
            const char *h = strstr(m, "\nTo: ");
            const char *eol = h != NULL ? strstr(h + 1, "\r\n") : NULL;
            size_t alen = strlen(address);
            if (eol != NULL && (size_t)(eol - h) >= alen + 5 &&
                strncmp(eol - alen - (eol[-1] == '>'), address, alen) == 0)
                found = m;
            else
                free(m);
        }
        free(ents[i]);
    }
    free(ents);
    return found;
}

/* The lead's attribute (a static buffer), or NULL when it has none. */
static const char *lead_attr(const char *id, const char *name)
{
    static char val[4096];
    json_t *l = lead_json(id);
    const char *v = json_string_value(json_object_get(json_object_get(l, "attributes"), name));
    if (v != NULL)
        snprintf(val, sizeof(val), "%s", v);
    json_decref(l);
    return v != NULL ? val : NULL;
}

/* No header line of the message (up to the blank line) starts with name. */
static int no_header(const char *msg, const char *name)
{
    const char *end = strstr(msg, "\r\n\r\n");
    size_t n = strlen(name);
    for (const char *p = msg; p != NULL && (end == NULL || p < end); p = strchr(p, '\n')) {
        p += *p == '\n';
        if (strncasecmp(p, name, n) == 0)
            return 0;
    }
    return 1;
}

static void test_webinar_through_nurtured_registered_or_failed_after_retries(void **state)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/{{webinar}}/w", base_url);
    /* No click tracking: the HTML keeps the join link itself as the href. */
    // clang-format off
    const char *extra[] = {"--channel.webinar.url", url, "--dispatch-retries", "3",
                           "--poll-ms", "5", "--channel.email.tracking", "no", NULL};
    // clang-format on
    clear_requests();
    if (nt_test_daemon_start(&daemon_, NULL, extra) != 0)
        fail_msg("nurtured did not start");

    char path[] = "/tmp/nt-wbreg-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, reg_plan, strlen(reg_plan)), (ssize_t)strlen(reg_plan));
    close(fd);
    uint8_t *bin = NULL;
    size_t len = 0;
    assert_int_equal(nt_test_compile_plan(path, &bin, &len), 0);
    unlink(path);
    char purl[128];
    snprintf(purl, sizeof(purl), "%s/v1/plans", daemon_.url);
    nt_test_resp_t r;
    int rc = nt_test_http("POST", purl, daemon_.ops_token, "application/x-protobuf", bin, len, &r);
    free(bin);
    assert_int_equal(rc, 0);
    if (r.status != 201)
        fail_msg("publish: %ld %s", r.status, r.body);
    nt_test_resp_fini(&r);

    const char *body = "{\"leads\":["
                       "{\"id\":\"wr-ok\",\"attributes\":{\"email\":\"ok@example.org\"}},"
                       "{\"id\":\"wr-bad\",\"attributes\":{\"email\":\"bad@example.org\","
                       "\"mode\":\"bad\"}},"
                       "{\"id\":\"wr-down\",\"attributes\":{\"email\":\"down@example.org\","
                       "\"mode\":\"down\"}},"
                       "{\"id\":\"wr-evil\",\"attributes\":{\"email\":\"evil@example.org\","
                       "\"first_name\":\"Eve\",\"mode\":\"evil\"}}]}";
    assert_int_equal(
        nt_test_json(&daemon_, "POST", "/v1/plans/wb_reg/enrol", daemon_.ops_token, body, &r), 0);
    if (r.status != 200)
        fail_msg("enrol: %ld %s", r.status, r.body);
    nt_test_resp_fini(&r);

    const char *ids[] = {"wr-ok", "wr-bad", "wr-down", "wr-evil", NULL};
    if (nt_test_wait_until(all_done, ids, 30000) != 0) {
        nt_test_daemon_dump_log(&daemon_);
        fail_msg("runs not done");
    }
    assert_string_equal(exit_reason("wr-ok"), "registered");
    assert_string_equal(exit_reason("wr-bad"), "failed");
    assert_string_equal(exit_reason("wr-down"), "failed");
    assert_string_equal(exit_reason("wr-evil"), "registered");

    /* The platform's join link is on the lead (GET /v1/leads/<id>) ... */
    const char *got = lead_attr("wr-ok", "webinar_join_link");
    if (got == NULL)
        fail_msg("wr-ok has no webinar_join_link");
    char link[512];
    snprintf(link, sizeof(link), "%s", got);
    assert_true(strncmp(link, "https://platform.example/j/w/", 29) == 0); /* /reg/w */
    assert_non_null(strstr(link, "?tk=a%2Fb"));
    assert_string_equal(lead_attr("wr-ok", "webinar_id"), "reg");
    /* ... and in the invitation the next step sent: the HTML link and the text part. */
    char *msg = message_to("ok@example.org");
    if (msg == NULL)
        fail_msg("no invitation for ok@example.org in %s/maildir/new", daemon_.data_dir);
    char want[600];
    snprintf(want, sizeof(want), "<a href=\"%s\">Confirm my seat</a>", link);
    if (strstr(msg, want) == NULL)
        fail_msg("no '%s' in:\n%s", want, msg);
    snprintf(want, sizeof(want), "Confirm my seat (%s)", link);
    assert_non_null(strstr(msg, want));
    free(msg);

    /* A hostile link reaches neither the lead nor the message: the public page instead. */
    assert_string_equal(lead_attr("wr-evil", "webinar_join_link"), "");
    msg = message_to("evil@example.org");
    if (msg == NULL)
        fail_msg("no invitation for evil@example.org");
    assert_non_null(
        strstr(msg, "<a href=\"https://webinars.example/product-2026-12-10\">Confirm my seat</a>"));
    assert_null(strstr(msg, "javascript"));
    assert_null(strstr(msg, "victim@evil.example"));
    assert_true(no_header(msg, "Bcc:"));
    free(msg);
    /* Leads that were never registered have no link. */
    assert_null(lead_attr("wr-down", "webinar_join_link"));
    assert_null(lead_attr("wr-bad", "webinar_join_link"));
    assert_null(message_to("down@example.org"));
    /* The join link event reaches the registered lead's timeline, and only that lead's. */
    if (nt_test_wait_until(link_on_timeline, (void *)"wr-ok", 10000) != 0)
        fail_msg("no webinar.join_link event on wr-ok's timeline");
    assert_false(timeline_has("wr-down", "webinar.join_link"));
    assert_false(timeline_has("wr-bad", "webinar.join_link"));
    assert_false(timeline_has("wr-evil", "webinar.join_link"));
    /* 201 and 400: one request each; 503: the worker's three attempts, under one key. */
    assert_int_equal(requests_to("/reg/w", "wr-ok"), 1);
    assert_int_equal(requests_to("/bad/w", "wr-bad"), 1);
    assert_int_equal(requests_to("/evil/w", "wr-evil"), 1);
    assert_int_equal(requests_to("/down/w", "wr-down"), 3);
}

static int stop_daemon(void **state)
{
    nt_test_daemon_stop(&daemon_);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_webinar_registers_with_escaped_json_and_reports_the_join_link, stop_plugin),
        cmocka_unit_test_teardown(
            test_webinar_body_join_field_and_auth_are_configurable_and_checked, stop_plugin),
        cmocka_unit_test_teardown(test_webinar_503_is_unavailable_then_the_retry_registers,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_webinar_400_fails_permanently_with_the_answer, stop_plugin),
        cmocka_unit_test_teardown(test_webinar_platform_down_or_slow_is_unavailable, stop_plugin),
        cmocka_unit_test_teardown(test_webinar_without_a_url_registers_locally, stop_plugin),
        cmocka_unit_test_teardown(test_webinar_params_register_no_and_a_lead_without_email,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_webinar_many_beyond_max_inflight_queue_and_shutdown_cancels,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_webinar_a_failed_write_of_the_link_is_transient,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_webinar_hostile_join_links_are_never_stored_or_posted,
                                  stop_plugin),
        cmocka_unit_test_teardown(
            test_webinar_shutdown_cancels_a_registration_waiting_for_its_write, stop_plugin),
        cmocka_unit_test_teardown(test_webinar_with_a_host_before_update_lead_only_posts_the_link,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_webinar_through_nurtured_registered_or_failed_after_retries,
                                  stop_daemon),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
