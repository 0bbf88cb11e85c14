/* The email channel's HTTP provider transport against a real HTTP server: Python's
 * http.server (ThreadingHTTPServer, HTTP/1.1 keep-alive) run by /usr/bin/python3 on a free port
 * with a small handler that saves every request (path, headers, body) and answers by path:
 * /ok 200, /busy 503 to the first request of each Idempotency-Key and 200 after, /bad 400 with
 * a long JSON answer, /norcpt 400 refusing the recipient, /limited 429, /slow after 3 s. The
 * plugin is loaded from the build's modules directory and driven by a libevent loop with the
 * daemon's curl multi (nt_curlm). */
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
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>

#include "curlm.h"
#include "email_msg.h"
#include "harness.h"
#include "log.h"
#include "modules.h"

#define MODULES_DIR NT_BINARY_DIR "/modules"

static const char server_py[] =
    "import os, sys, threading, time\n"
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
    "        if self.path == '/busy' and tries == 1:\n"
    "            return self.answer(503, '{\"message\": \"try later\"}')\n"
    "        if self.path == '/bad':\n"
    "            return self.answer(400, '{\"message\": \"invalid \\'to\\'\",\\n\"pad\": \"%s\"}'\n"
    "                               % ('x' * 2000))\n"
    "        if self.path == '/norcpt':\n"
    "            return self.answer(400, '{\"message\": \"to parameter is not a valid address\"}')\n"
    "        if self.path == '/limited':\n"
    "            return self.answer(429, '{\"message\": \"slow down\"}')\n"
    "        if self.path == '/slow':\n"
    "            time.sleep(3)\n"
    "        self.answer(200, '{\"id\": \"msg-%d\"}' % n)\n"
    "\n"
    "ThreadingHTTPServer.daemon_threads = True\n"
    "ThreadingHTTPServer(('127.0.0.1', port), Handler).serve_forever()\n";

/* A subject with quotes and non-ASCII, a body with quotes, a backslash and line breaks. */
static const char template_md[] =
    "Subject: \"Grüße\", {{first_name|there}}: 5 signs\n"
    "\n"
    "Hello {{first_name|there}},\n"
    "\n"
    "Teams like **{{company|yours}}** say \"the same\" thing \\ every time.\n";

static char *tmp;      /* everything of this test */
static char *tpl_dir;  /* templates */
static char *srv_dir;  /* requests the server received */
static pid_t srv_pid = -1;
static int srv_port;
static char base_url[64];
static char cfg_url[128];
static const char *cfg_body;
static const char *cfg_max_inflight;
static const char *cfg_timeout_ms;

static struct event_base *base;
static nt_curlm_t *curlm;
static nt_modules_t *mods;
static const nt_channel_ops_t *ops;
static void *plugin;
static int plugin_down;
static nt_channel_host_t host;

/* ---- the host ---- */

static const char *host_config(const char *channel, const char *key, const char *def)
{
    if (strcmp(channel, "email") != 0)
        return def;
    if (strcmp(key, "templates") == 0)
        return tpl_dir;
    if (strcmp(key, "http_url") == 0)
        return cfg_url;
    if (strcmp(key, "http_auth") == 0)
        return "Authorization: Bearer s3cr3t-key";
    if (strcmp(key, "http_body") == 0 && cfg_body != NULL)
        return cfg_body;
    if (strcmp(key, "max_inflight") == 0 && cfg_max_inflight != NULL)
        return cfg_max_inflight;
    if (strcmp(key, "timeout_ms") == 0)
        return cfg_timeout_ms != NULL ? cfg_timeout_ms : "5000";
    if (strcmp(key, "from") == 0)
        return "news@acme.example";
    if (strcmp(key, "from_name") == 0)
        return "Acme \"Ünited\"";
    return def;
}

static int64_t host_now(void)
{
    return 1795000000000LL;
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

static int pending;

static void on_done(void *arg, nt_rc_t rc, const char *outcome, const char *detail)
{
    result_t *r = arg;
    r->calls++;
    r->rc = rc;
    snprintf(r->outcome, sizeof(r->outcome), "%s", outcome != NULL ? outcome : "");
    snprintf(r->detail, sizeof(r->detail), "%s", detail != NULL ? detail : "");
    if (--pending == 0)
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

/* Dispatch one message for lead `email` with idempotency key `id`. */
static nt_rc_t send_one(const char *id, const char *email, result_t *r)
{
    const nt_kv_t params[] = {{"template", "signs"}, {"reply_to", "team@acme.example"}};
    const nt_kv_t lead[] = {{"email", email},
                            {"first_name", "Zoë \"Z\""},
                            {"last_name", "O'Neil\\Ng"},
                            {"company", "Büro <Kraft> & Co"},
                            {"score", "20"}};
    nt_message_t msg = {
        .id = id,
        .lead_id = "lead-1",
        .plan_id = "education_track",
        .plan_version = 1,
        .node_id = "tech_1_send",
        .visit = 3,
        .params = params,
        .nparams = 2,
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
    snprintf(py, sizeof(py), "%s/nt_test_http.py", tmp);
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
    tmp = nt_test_tmpdir("nt-email-http");
    if (tmp == NULL)
        return -1;
    assert_true(asprintf(&tpl_dir, "%s/templates", tmp) > 0);
    assert_true(asprintf(&srv_dir, "%s/received", tmp) > 0);
    mkdir(tpl_dir, 0755);
    mkdir(srv_dir, 0755);
    char path[512];
    snprintf(path, sizeof(path), "%s/signs.md", tpl_dir);
    write_file(path, template_md);
    if (start_server() != 0)
        return -1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    ops = nt_test_channel_load(MODULES_DIR, "email", &mods);
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
    free(tpl_dir);
    free(srv_dir);
    curl_global_cleanup();
    return 0;
}

/* A fresh loop and multi, and the plugin's init for http_url = base_url + path. Returns
 * init's code (errmsg in *err when not NULL). */
static nt_rc_t try_start(const char *path, char **err)
{
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
        .curl_add = host_curl_add,
    };
    plugin_down = 0;
    pending = 0;
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
    cfg_body = NULL;
    cfg_max_inflight = NULL;
    cfg_timeout_ms = NULL;
    return 0;
}

static const char *jstr(json_t *root, const char *path)
{
    const char *s = NULL;
    /* path: "a" or "a.b" or "a.0.b" (an array index) */
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *v = root;
    for (char *save = NULL, *t = strtok_r(buf, ".", &save); t != NULL && v != NULL;
         t = strtok_r(NULL, ".", &save))
        v = json_is_array(v) ? json_array_get(v, (size_t)atoi(t)) : json_object_get(v, t);
    s = json_string_value(v);
    if (s == NULL)
        fail_msg("no string at %s", path);
    return s;
}

/* ---- tests ---- */

static void test_email_http_posts_escaped_json_with_the_idempotency_key(void **state)
{
    const char *key = "lead-1|education_track|tech_1_send|3";
    start_plugin("/ok");
    result_t r = {0};
    assert_int_equal(send_one(key, "ada@example.org", &r), NT_AGAIN);
    run_loop();
    assert_int_equal(r.calls, 1);
    if (r.rc != NT_OK)
        fail_msg("dispatch: %s", r.detail);
    assert_string_equal(r.outcome, "sent");

    char **paths;
    assert_int_equal(list_req(&paths), 1);
    char *req = slurp(paths[0]);
    free_list(paths);
    assert_string_equal(req_header(req, "Path"), "/ok");
    assert_string_equal(req_header(req, "Idempotency-Key"), key);
    assert_string_equal(req_header(req, "Authorization"), "Bearer s3cr3t-key");
    assert_string_equal(req_header(req, "Content-Type"), "application/json");
    assert_null(req_header(req, "Expect"));
    const char *body = req_body(req);
    /* Raw: quotes and backslashes escaped, line breaks as \n, UTF-8 as is. */
    assert_non_null(strstr(body, "\"subject\":\"\\\"Gr\xc3\xbc\xc3\x9f" "e\\\", Zo\xc3\xab "
                                 "\\\"Z\\\": 5 signs\""));
    assert_non_null(strstr(body, "\"name\":\"Acme \\\"\xc3\x9cnited\\\"\""));
    assert_non_null(strstr(body, "O'Neil\\\\Ng"));
    assert_non_null(strstr(body, "\\n\\nTeams like"));
    assert_null(strchr(body, '\n'));

    json_error_t jerr;
    json_t *j = json_loads(body, 0, &jerr);
    if (j == NULL)
        fail_msg("not JSON: %s: %s", jerr.text, body);
    assert_string_equal(jstr(j, "subject"), "\"Grüße\", Zoë \"Z\": 5 signs");
    assert_string_equal(jstr(j, "from.email"), "news@acme.example");
    assert_string_equal(jstr(j, "from.name"), "Acme \"Ünited\"");
    assert_string_equal(jstr(j, "to.0.email"), "ada@example.org");
    assert_string_equal(jstr(j, "to.0.name"), "Zoë \"Z\" O'Neil\\Ng");
    assert_string_equal(jstr(j, "reply_to.email"), "team@acme.example");
    assert_string_equal(jstr(j, "idempotency_key"), key);
    char mid[NT_EMAIL_MSGID_MAX];
    assert_int_equal(nt_email_message_id(key, "acme.example", mid, sizeof(mid)), NT_OK);
    assert_string_equal(jstr(j, "headers.Message-ID"), mid);
    assert_string_equal(jstr(j, "headers.List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
    assert_true(strncmp(jstr(j, "headers.List-Unsubscribe"),
                        "<https://acme.example/unsubscribe?m=", 36) == 0);
    const char *text = jstr(j, "text");
    assert_non_null(strstr(text, "Hello Zoë \"Z\",\n\nTeams like Büro <Kraft> & Co say "
                                 "\"the same\" thing \\ every time.\n\n-- \n"));
    const char *html = jstr(j, "html");
    assert_non_null(strstr(html, "<strong>Büro &lt;Kraft&gt; &amp; Co</strong>"));
    assert_non_null(strstr(html, "<title>&quot;Grüße&quot;, Zoë &quot;Z&quot;: 5 signs"));
    json_decref(j);
    free(req);
    stop_plugin(state);
}

static void test_email_http_body_template_is_configurable_and_checked(void **state)
{
    cfg_body = "{\"personalizations\":[{\"to\":[{\"email\":\"{{to}}\"}]}],"
               "\"from\":\"{{from_name}} <{{from}}>\",\"subject\":\"{{subject}}\","
               "\"content\":[{\"type\":\"text/plain\",\"value\":\"{{text}}\"}],"
               "\"custom_args\":{\"key\":\"{{idempotency_key}}\",\"mid\":\"{{message_id}}\"}}";
    start_plugin("/ok");
    result_t r = {0};
    send_one("k-2", "bob@example.org", &r);
    run_loop();
    if (r.rc != NT_OK)
        fail_msg("dispatch: %s", r.detail);
    char **paths;
    assert_int_equal(list_req(&paths), 1);
    char *req = slurp(paths[0]);
    free_list(paths);
    json_t *j = json_loads(req_body(req), 0, NULL);
    assert_non_null(j);
    assert_string_equal(jstr(j, "personalizations.0.to.0.email"), "bob@example.org");
    assert_string_equal(jstr(j, "from"), "Acme \"Ünited\" <news@acme.example>");
    assert_string_equal(jstr(j, "custom_args.key"), "k-2");
    assert_true(strncmp(jstr(j, "content.0.value"), "Hello Zoë", 10) == 0);
    assert_int_equal(json_object_size(j), 5);
    json_decref(j);
    free(req);
    stop_plugin(state);

    /* An unknown placeholder, a placeholder outside a string and a bad URL refuse to start. */
    char *err = NULL;
    cfg_body = "{\"to\":\"{{to}}\",\"x\":\"{{shoe_size}}\"}";
    assert_int_not_equal(try_start("/ok", &err), NT_OK);
    assert_non_null(strstr(err, "unknown placeholder '{{shoe_size}}'"));
    free(err);
    stop_plugin(state);
    cfg_body = "{\"to\":{{to}}}";
    assert_int_not_equal(try_start("/ok", &err), NT_OK);
    assert_non_null(strstr(err, "http_body is not JSON"));
    free(err);
    stop_plugin(state);
    assert_int_not_equal(try_start("ftp://127.0.0.1/x", &err), NT_OK);
    assert_non_null(strstr(err, "http_url"));
    free(err);
}

static void test_email_http_503_is_retried_with_the_same_key_then_sent(void **state)
{
    start_plugin("/busy");
    result_t r = {0};
    send_one("lead-2|plan|node|1", "ada@example.org", &r);
    run_loop();
    assert_int_equal(r.rc, NT_EUNAVAIL);
    assert_non_null(strstr(r.detail, "status 503"));
    assert_non_null(strstr(r.detail, "try later"));
    /* The host retries with the same id: now 200. */
    memset(&r, 0, sizeof(r));
    send_one("lead-2|plan|node|1", "ada@example.org", &r);
    run_loop();
    if (r.rc != NT_OK)
        fail_msg("retry: %s", r.detail);
    char **paths;
    assert_int_equal(list_req(&paths), 2);
    char *a = slurp(paths[0]), *b = slurp(paths[1]);
    free_list(paths);
    char key_a[512];
    snprintf(key_a, sizeof(key_a), "%s", req_header(a, "Idempotency-Key"));
    assert_string_equal(key_a, "lead-2|plan|node|1");
    assert_string_equal(req_header(b, "Idempotency-Key"), key_a);
    assert_string_equal(req_body(a), req_body(b));
    free(a);
    free(b);
    stop_plugin(state);
}

static void test_email_http_400_fails_permanently_with_the_answer(void **state)
{
    start_plugin("/bad");
    result_t r = {0};
    send_one("lead-3|plan|node|1", "ada@example.org", &r);
    run_loop();
    assert_int_equal(r.rc, NT_EPERMFAIL);
    assert_non_null(strstr(r.detail, "status 400: {\"message\": \"invalid 'to'\", \"pad\""));
    assert_null(strchr(r.detail, '\n'));
    assert_true(strlen(r.detail) < 450); /* the 2 kB answer is cut */
    stop_plugin(state);
}

static void test_email_http_400_refusing_the_recipient_is_a_hard_bounce(void **state)
{
    start_plugin("/norcpt");
    result_t r = {0};
    send_one("lead-3|plan|node|2", "ada@example.org", &r);
    run_loop();
    assert_int_equal(r.rc, NT_OK);
    assert_string_equal(r.outcome, "bounced");
    assert_non_null(strstr(r.detail, "status 400: {\"message\": \"to parameter is not a valid"));
    stop_plugin(state);
}

static void test_email_http_429_timeout_and_refused_are_transient(void **state)
{
    start_plugin("/limited");
    result_t r = {0};
    send_one("lead-4|plan|node|1", "ada@example.org", &r);
    run_loop();
    assert_int_equal(r.rc, NT_EUNAVAIL);
    assert_non_null(strstr(r.detail, "status 429"));
    stop_plugin(state);

    cfg_timeout_ms = "500";
    start_plugin("/slow");
    memset(&r, 0, sizeof(r));
    send_one("lead-4|plan|node|2", "ada@example.org", &r);
    run_loop();
    assert_int_equal(r.rc, NT_EUNAVAIL);
    assert_non_null(strstr(r.detail, "Timeout"));
    stop_plugin(state);

    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", nt_test_free_port());
    start_plugin(url);
    memset(&r, 0, sizeof(r));
    send_one("lead-4|plan|node|3", "ada@example.org", &r);
    run_loop();
    assert_int_equal(r.rc, NT_EUNAVAIL);
    stop_plugin(state);
}

static void test_email_http_many_in_flight_beyond_the_limit_queue(void **state)
{
    cfg_max_inflight = "3";
    start_plugin("/ok");
    enum { N = 40 };
    result_t r[N];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < N; i++) {
        char id[64], to[64];
        snprintf(id, sizeof(id), "lead-%d|plan|node|1", 100 + i);
        snprintf(to, sizeof(to), "lead%d@example.org", i);
        assert_int_equal(send_one(id, to, &r[i]), NT_AGAIN);
    }
    run_loop();
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        if (r[i].rc != NT_OK)
            fail_msg("message %d: %s", i, r[i].detail);
    }
    assert_int_equal(list_req(NULL), N);
    stop_plugin(state);
}

static void test_email_http_shutdown_cancels_what_is_in_flight(void **state)
{
    start_plugin("/slow");
    result_t r[2];
    memset(r, 0, sizeof(r));
    send_one("lead-5|plan|node|1", "ada@example.org", &r[0]);
    send_one("lead-5|plan|node|2", "ada@example.org", &r[1]);
    ops->shutdown(plugin);
    plugin = NULL;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].rc, NT_ECANCELED);
    }
    stop_plugin(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_email_http_posts_escaped_json_with_the_idempotency_key,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_email_http_body_template_is_configurable_and_checked,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_email_http_503_is_retried_with_the_same_key_then_sent,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_email_http_400_refusing_the_recipient_is_a_hard_bounce,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_email_http_400_fails_permanently_with_the_answer,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_email_http_429_timeout_and_refused_are_transient,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_email_http_many_in_flight_beyond_the_limit_queue,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_email_http_shutdown_cancels_what_is_in_flight,
                                  stop_plugin),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
