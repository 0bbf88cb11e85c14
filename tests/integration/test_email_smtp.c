/* The email channel against a real SMTP server: Debian's aiosmtpd, run by /usr/bin/python3 on a
 * free port with the harness's handler (nt_test_smtp_start) that saves every message it accepts
 * (raw, CRLF as received), answers 451 to the first DATA of a message for tempfail@..., and 550
 * to RCPT reject@...; and a second one that requires STARTTLS and AUTH.
 * The plugin is loaded from the build's modules directory and driven by a libevent loop with
 * the daemon's curl multi (nt_curlm), as nurtured does. Also: the maildir fallback. */
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
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "curlm.h"
#include "email_msg.h"
#include "harness.h"
#include "log.h"
#include "modules.h"

#define MODULES_DIR NT_BINARY_DIR "/modules"

static const char template_md[] =
    "Subject: Grüße, {{first_name|there}}: five signs for {{company|your team}}\n"
    "\n"
    "Hello {{first_name|there}},\n"
    "\n"
    "Teams like **{{company|yours}}** tell us the same *five* things.\n"
    "\n"
    "- one\n"
    "- two\n";

static char *tmp;          /* everything of this test */
static char *tpl_dir;      /* templates */
static char *data_dir;     /* the plugin's data dir (maildir) */
static nt_test_smtp_t srv; /* aiosmtpd; srv.msgs: the messages it accepted */
static const char *cfg_smtp_url;
static const char *cfg_max_inflight;
static const char *cfg_starttls, *cfg_user, *cfg_password, *cfg_ca; /* NULL: not set */

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
    if (strcmp(key, "smtp_url") == 0 && cfg_smtp_url != NULL)
        return cfg_smtp_url;
    if (strcmp(key, "max_inflight") == 0 && cfg_max_inflight != NULL)
        return cfg_max_inflight;
    if (strcmp(key, "starttls") == 0 && cfg_starttls != NULL)
        return cfg_starttls;
    if (strcmp(key, "smtp_user") == 0 && cfg_user != NULL)
        return cfg_user;
    if (strcmp(key, "smtp_password") == 0 && cfg_password != NULL)
        return cfg_password;
    if (strcmp(key, "tls_ca") == 0 && cfg_ca != NULL)
        return cfg_ca;
    if (strcmp(key, "from") == 0)
        return "news@acme.example";
    if (strcmp(key, "from_name") == 0)
        return "Acme Ünited";
    if (strcmp(key, "timeout_ms") == 0)
        return "5000";
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
    char detail[512];
    /* the message, which the channel borrows until done (channel.h) */
    nt_message_t msg;
    nt_kv_t params[2], lead[5];
    char id[64], email[128];
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

/* Dispatch one message for lead `email` with idempotency key `id`; r holds the message until
 * its done. */
static nt_rc_t send_one(const char *id, const char *email, result_t *r)
{
    snprintf(r->id, sizeof(r->id), "%s", id);
    snprintf(r->email, sizeof(r->email), "%s", email != NULL ? email : "");
    r->params[0] = (nt_kv_t){"template", "signs"};
    r->params[1] = (nt_kv_t){"reply_to", "team@acme.example"};
    r->lead[0] = (nt_kv_t){"email", r->email};
    r->lead[1] = (nt_kv_t){"first_name", "Zoë"};
    r->lead[2] = (nt_kv_t){"last_name", "Ng"};
    r->lead[3] = (nt_kv_t){"company", "Büro <Kraft> & Co"};
    r->lead[4] = (nt_kv_t){"score", "20"};
    const nt_kv_t *params = r->params, *lead = r->lead;
    r->msg = (nt_message_t){
        .id = r->id,
        .lead_id = "lead-1",
        .plan_id = "education_track",
        .plan_version = 1,
        .node_id = "tech_1_send",
        .visit = 3,
        .params = params,
        .nparams = email != NULL ? 2 : 2,
        .lead = email != NULL ? lead : lead + 1,
        .nlead = email != NULL ? 5 : 4,
        .attempt = 1,
    };
    pending++;
    nt_rc_t rc = ops->dispatch(plugin, &r->msg, on_done, r);
    if (rc != NT_AGAIN)
        assert_int_equal(rc, NT_OK); /* done was called already */
    return rc;
}

/* ---- the SMTP server ---- */

static void write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

/* Files in dir ending in .eml, sorted, as a NULL-terminated malloc'd array of paths. */
static size_t list_eml(const char *dir, char ***out)
{
    struct dirent **ents = NULL;
    int n = scandir(dir, &ents, NULL, alphasort);
    size_t k = 0;
    char **paths = calloc((size_t)(n > 0 ? n : 0) + 1, sizeof(*paths));
    for (int i = 0; i < n; i++) {
        size_t l = strlen(ents[i]->d_name);
        if (l > 4 && strcmp(ents[i]->d_name + l - 4, ".eml") == 0 && ents[i]->d_name[0] != '.')
            assert_true(asprintf(&paths[k++], "%s/%s", dir, ents[i]->d_name) > 0);
        free(ents[i]);
    }
    free(ents);
    if (out != NULL)
        *out = paths;
    else {
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

static void clear_dir(const char *dir)
{
    char **paths;
    list_eml(dir, &paths);
    for (size_t i = 0; paths[i] != NULL; i++)
        unlink(paths[i]);
    free_list(paths);
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
    tmp = nt_test_tmpdir("nt-email");
    if (tmp == NULL)
        return -1;
    assert_true(asprintf(&tpl_dir, "%s/templates", tmp) > 0);
    assert_true(asprintf(&data_dir, "%s/data", tmp) > 0);
    mkdir(tpl_dir, 0755);
    mkdir(data_dir, 0755);
    char path[512];
    snprintf(path, sizeof(path), "%s/signs.md", tpl_dir);
    write_file(path, template_md);
    if (nt_test_smtp_start(&srv) != 0)
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
    nt_test_smtp_stop(&srv);
    if (tmp != NULL && getenv("NT_TEST_KEEP") == NULL)
        nt_test_rmrf(tmp);
    free(tmp);
    free(tpl_dir);
    free(data_dir);
    curl_global_cleanup();
    return 0;
}

/* A fresh loop, multi and plugin; smtp_url NULL means the maildir. */
static void start_plugin(const char *url, const char *max_inflight)
{
    cfg_smtp_url = url;
    cfg_max_inflight = max_inflight;
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
        .data_dir = data_dir,
        .now_ms = host_now,
        .curl_add = host_curl_add,
    };
    plugin_down = 0;
    pending = 0;
    char *err = NULL;
    nt_rc_t rc = ops->init(&host, &plugin, &err);
    if (rc != NT_OK)
        fail_msg("init: %s", err);
    clear_dir(srv.msgs);
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
    return 0;
}

/* ---- tests ---- */

static void test_email_smtp_delivers_headers_and_mime_parts(void **state)
{
    start_plugin(srv.url, NULL);
    result_t r = {0};
    assert_int_equal(send_one("lead-1|education_track|tech_1_send|3", "ada@example.org", &r),
                     NT_AGAIN);
    run_loop();
    assert_int_equal(r.calls, 1);
    if (r.rc != NT_OK)
        fail_msg("dispatch: %s", r.detail);
    assert_string_equal(r.outcome, "sent");

    char **paths;
    assert_int_equal(list_eml(srv.msgs, &paths), 1);
    char *msg = slurp(paths[0]);
    free_list(paths);
    /* Envelope: MAIL FROM set explicitly, one recipient. */
    assert_true(strncmp(msg, "X-Test-Mail-From: news@acme.example\r\n"
                             "X-Test-Rcpt-To: ada@example.org\r\n", 70) == 0);
    /* Every line ends in CRLF as received. */
    for (const char *p = strchr(msg, '\n'); p != NULL; p = strchr(p + 1, '\n'))
        assert_true(p[-1] == '\r');
    char mid[NT_EMAIL_MSGID_MAX], want[NT_EMAIL_MSGID_MAX + 16];
    assert_int_equal(nt_email_message_id("lead-1|education_track|tech_1_send|3", "acme.example",
                                         mid, sizeof(mid)),
                     NT_OK);
    snprintf(want, sizeof(want), "\r\nMessage-ID: %s\r\n", mid);
    assert_non_null(strstr(msg, want));
    /* "Acme Ünited", "Zoë Ng" and the subject are non-ASCII: RFC 2047 words. */
    assert_non_null(strstr(msg, "\r\nFrom: =?UTF-8?B?QWNtZSDDnG5pdGVk?= <news@acme.example>\r\n"));
    assert_non_null(strstr(msg, "\r\nTo: =?UTF-8?B?Wm/DqyBOZw==?= <ada@example.org>\r\n"));
    assert_non_null(strstr(msg, "\r\nSubject: =?UTF-8?B?"));
    assert_non_null(strstr(msg, "\r\nReply-To: team@acme.example\r\n"));
    assert_non_null(strstr(msg, "\r\nMIME-Version: 1.0\r\n"));
    assert_non_null(strstr(msg, "\r\nList-Unsubscribe: <https://acme.example/unsubscribe?m="));
    assert_non_null(strstr(msg, "<mailto:unsubscribe@acme.example?subject=unsubscribe>\r\n"));
    assert_non_null(strstr(msg, "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
    assert_non_null(strstr(msg, "\r\nContent-Type: multipart/alternative;\r\n boundary=\"=_nt_"));
    const char *text = strstr(msg, "Content-Type: text/plain; charset=UTF-8\r\n"
                                   "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    const char *html = strstr(msg, "Content-Type: text/html; charset=UTF-8\r\n"
                                   "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    assert_non_null(text);
    assert_non_null(html);
    assert_true(text < html);
    /* Substituted and escaped: "Zoë" is =C3=AB in quoted-printable; the company is HTML-escaped
     * in the HTML part and plain in the text part, which is the Markdown rendered as text. */
    assert_non_null(strstr(text, "Hello Zo=C3=AB,"));
    const char *tbody = strstr(text, "\r\n\r\n") + 4;
    char *plain = strndup(tbody, (size_t)(strstr(tbody, "\r\n--=_nt_") - tbody));
    nt_test_qp_decode(plain);
    char *want_text = NULL;
    assert_true(asprintf(&want_text,
                         "Hello Zoë,\r\n\r\nTeams like Büro <Kraft> & Co tell us the same five "
                         "things.\r\n\r\n- one\r\n- two\r\n\r\n-- \r\nNot useful any more? "
                         "Unsubscribe: https://acme.example/unsubscribe?m=%.32s\r\n",
                         mid + 1) > 0);
    assert_string_equal(plain, want_text);
    free(plain);
    free(want_text);
    assert_non_null(strstr(html, "<strong>B=C3=BCro &lt;Kraft&gt; &amp; Co</strong>"));
    assert_non_null(strstr(html, "<li>one</li>"));
    assert_null(strstr(html, "<Kraft>"));
    free(msg);
    stop_plugin(state);
}

static void test_email_smtp_451_is_retried_then_sent_once(void **state)
{
    start_plugin(srv.url, NULL);
    result_t r = {0};
    send_one("lead-2|plan|node|1", "tempfail@example.org", &r);
    run_loop();
    assert_int_equal(r.rc, NT_EUNAVAIL);
    assert_non_null(strstr(r.detail, "451"));
    assert_int_equal(list_eml(srv.msgs, NULL), 0);
    /* The host retries with the same id: the server now says 250. */
    memset(&r, 0, sizeof(r));
    send_one("lead-2|plan|node|1", "tempfail@example.org", &r);
    run_loop();
    if (r.rc != NT_OK)
        fail_msg("retry: %s", r.detail);
    assert_int_equal(list_eml(srv.msgs, NULL), 1);
    stop_plugin(state);
}

static void test_email_smtp_550_at_rcpt_is_a_hard_bounce(void **state)
{
    start_plugin(srv.url, NULL);
    result_t r = {0};
    send_one("lead-3|plan|node|1", "reject@example.org", &r);
    run_loop();
    /* delivered as far as it goes: the outcome is "bounced", not a failure to retry */
    assert_int_equal(r.rc, NT_OK);
    assert_string_equal(r.outcome, "bounced");
    assert_non_null(strstr(r.detail, "550"));
    assert_int_equal(list_eml(srv.msgs, NULL), 0);
    stop_plugin(state);
}

static void test_email_smtp_server_down_is_transient(void **state)
{
    char url[64];
    snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", nt_test_free_port());
    start_plugin(url, NULL);
    result_t r = {0};
    send_one("lead-4|plan|node|1", "ada@example.org", &r);
    run_loop();
    assert_int_equal(r.rc, NT_EUNAVAIL);
    stop_plugin(state);
}

/* The server dies with a kept connection open. Back at once on the same port: the next message
 * goes through on a new connection, not failed for the dead one. Still down: the message fails
 * as transient, and its retry goes through once the server is back. */
static void test_email_smtp_server_down_and_back_with_kept_connections(void **state)
{
    nt_test_smtp_t dsrv;
    assert_int_equal(nt_test_smtp_start(&dsrv), 0);
    start_plugin(dsrv.url, "1");
    result_t r = {0};
    send_one("lead-8|plan|node|1", "ada@example.org", &r);
    run_loop();
    assert_int_equal(r.rc, NT_OK);

    nt_test_smtp_down(&dsrv);
    assert_int_equal(nt_test_smtp_up(&dsrv), 0);
    memset(&r, 0, sizeof(r));
    send_one("lead-8|plan|node|2", "ada@example.org", &r);
    run_loop();
    if (r.rc != NT_OK)
        fail_msg("after the server was restarted: %s", r.detail);

    nt_test_smtp_down(&dsrv);
    memset(&r, 0, sizeof(r));
    send_one("lead-8|plan|node|3", "ada@example.org", &r);
    run_loop();
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, NT_EUNAVAIL);
    assert_int_equal(nt_test_smtp_up(&dsrv), 0);
    memset(&r, 0, sizeof(r));
    send_one("lead-8|plan|node|3", "ada@example.org", &r); /* the host's retry */
    run_loop();
    if (r.rc != NT_OK)
        fail_msg("after the server came back: %s", r.detail);
    assert_int_equal(list_eml(dsrv.msgs, NULL), 3);
    stop_plugin(state);
    nt_test_smtp_stop(&dsrv);
}

/* A server that requires STARTTLS, then AUTH: a certificate made for 127.0.0.1, trusted through
 * channel.email.tls_ca. */
static void test_email_smtp_starttls_and_auth_required_by_the_server(void **state)
{
    nt_test_smtp_t tsrv;
    char cmd[2048], cert[512], key[512];
    snprintf(cert, sizeof(cert), "%s/cert.pem", tmp);
    snprintf(key, sizeof(key), "%s/key.pem", tmp);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s 2>/dev/null",
             key, cert);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(nt_test_smtp_start_tls(&tsrv, cert, key, "nurture", "s3cret pass"), 0);

    cfg_starttls = "yes";
    cfg_user = "nurture";
    cfg_password = "s3cret pass";
    cfg_ca = cert;
    start_plugin(tsrv.url, NULL);
    result_t r = {0};
    send_one("lead-7|plan|node|1", "ada@example.org", &r);
    run_loop();
    if (r.rc != NT_OK)
        fail_msg("over TLS with AUTH: %s", r.detail);
    assert_string_equal(r.outcome, "sent");
    char **paths;
    assert_int_equal(list_eml(tsrv.msgs, &paths), 1);
    char *msg = slurp(paths[0]);
    assert_non_null(strstr(msg, "X-Test-Rcpt-To: ada@example.org\r\n"));
    free(msg);
    free_list(paths);
    stop_plugin(state);

    /* a wrong password: the server's 535, transient (ops fix credentials) */
    cfg_password = "wrong";
    start_plugin(tsrv.url, NULL);
    memset(&r, 0, sizeof(r));
    send_one("lead-7|plan|node|2", "ada@example.org", &r);
    run_loop();
    assert_int_equal(r.rc, NT_EUNAVAIL);
    if (strstr(r.detail, "535") == NULL)
        fail_msg("wrong password: %s", r.detail);
    stop_plugin(state);

    /* a certificate nobody vouches for (the system's CAs only): refused */
    cfg_password = "s3cret pass";
    cfg_ca = NULL;
    start_plugin(tsrv.url, NULL);
    memset(&r, 0, sizeof(r));
    send_one("lead-7|plan|node|3", "ada@example.org", &r);
    run_loop();
    assert_int_equal(r.rc, NT_EUNAVAIL);
    assert_non_null(strstr(r.detail, "TLS"));
    stop_plugin(state);
    assert_int_equal(list_eml(tsrv.msgs, NULL), 1);

    /* TLS required, and the plain server offers none */
    cfg_user = cfg_password = NULL;
    start_plugin(srv.url, NULL);
    memset(&r, 0, sizeof(r));
    send_one("lead-7|plan|node|4", "ada@example.org", &r);
    run_loop();
    assert_int_equal(r.rc, NT_EUNAVAIL);
    assert_non_null(strstr(r.detail, "STARTTLS"));
    stop_plugin(state);
    assert_int_equal(list_eml(srv.msgs, NULL), 0);
    cfg_starttls = NULL;
    nt_test_smtp_stop(&tsrv);
}

static void test_email_smtp_many_in_flight_beyond_the_limit_queue(void **state)
{
    start_plugin(srv.url, "3");
    enum { N = 25 };
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
    assert_int_equal(list_eml(srv.msgs, NULL), N);
    stop_plugin(state);
}

static void test_email_maildir_writes_one_file_per_id(void **state)
{
    start_plugin(NULL, NULL);
    char newdir[512];
    snprintf(newdir, sizeof(newdir), "%s/maildir/new", data_dir);
    clear_dir(newdir);
    result_t r = {0};
    assert_int_equal(send_one("lead-5|plan|node|1", "ada@example.org", &r), NT_OK);
    assert_int_equal(r.rc, NT_OK);
    assert_string_equal(r.outcome, "sent");
    char **paths;
    assert_int_equal(list_eml(newdir, &paths), 1);
    char mid[NT_EMAIL_MSGID_MAX], name[NT_EMAIL_MSGID_MAX + 8];
    nt_email_message_id("lead-5|plan|node|1", "acme.example", mid, sizeof(mid));
    snprintf(name, sizeof(name), "/%.*s.eml", (int)strlen(mid) - 2, mid + 1);
    assert_non_null(strstr(paths[0], name));
    char *msg = slurp(paths[0]);
    assert_true(strncmp(msg, "Date: ", 6) == 0);
    assert_non_null(strstr(msg, mid));
    free(msg);
    free_list(paths);

    /* The same id again: accepted, nothing written. */
    memset(&r, 0, sizeof(r));
    send_one("lead-5|plan|node|1", "ada@example.org", &r);
    assert_int_equal(r.rc, NT_OK);
    assert_non_null(strstr(r.detail, "duplicate"));
    assert_int_equal(list_eml(newdir, NULL), 1);
    /* Another id: another file. */
    send_one("lead-5|plan|node|2", "ada@example.org", &r);
    assert_int_equal(list_eml(newdir, NULL), 2);
    /* Nothing is left in tmp/. */
    char tmpdir[512];
    snprintf(tmpdir, sizeof(tmpdir), "%s/maildir/tmp", data_dir);
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        assert_true(e->d_name[0] == '.');
    closedir(d);
    stop_plugin(state);
}

static void test_email_lead_without_valid_address_fails_permanently(void **state)
{
    start_plugin(NULL, NULL);
    result_t r = {0};
    send_one("lead-6|plan|node|1", NULL, &r);
    assert_int_equal(r.rc, NT_EPERMFAIL);
    assert_non_null(strstr(r.detail, "no email address"));
    send_one("lead-6|plan|node|2", "ada@example.org\r\nBcc: x@evil.example", &r);
    assert_int_equal(r.rc, NT_EPERMFAIL);
    assert_non_null(strstr(r.detail, "malformed"));
    send_one("lead-6|plan|node|3", "not an address", &r);
    assert_int_equal(r.rc, NT_EPERMFAIL);
    stop_plugin(state);
}

static void test_email_validate_names_missing_and_broken_templates(void **state)
{
    char *err = NULL;
    start_plugin(NULL, NULL); /* validation uses the configured template directory */
    const nt_kv_t ok[] = {{"template", "signs"}};
    assert_int_equal(ops->validate(ok, 1, &err), NT_OK);
    const nt_kv_t missing[] = {{"template", "nope"}};
    assert_int_equal(ops->validate(missing, 1, &err), NT_EINVAL);
    char want[600];
    snprintf(want, sizeof(want), "template 'nope' not found in %s", tpl_dir);
    assert_non_null(strstr(err, want));
    free(err);
    char path[600];
    snprintf(path, sizeof(path), "%s/broken.md", tpl_dir);
    write_file(path, "Subject: hi\n\nHello {{first_name\n");
    const nt_kv_t broken[] = {{"template", "broken"}};
    assert_int_equal(ops->validate(broken, 1, &err), NT_EINVAL);
    assert_non_null(strstr(err, "line 3"));
    free(err);
    snprintf(path, sizeof(path), "%s/unknown.md", tpl_dir);
    write_file(path, "Subject: hi\n\nHello {{shoe_size}}\n");
    const nt_kv_t unknown[] = {{"template", "unknown"}};
    assert_int_equal(ops->validate(unknown, 1, &err), NT_EINVAL);
    assert_non_null(strstr(err, "unknown attribute 'shoe_size'"));
    free(err);
    const nt_kv_t bad_from[] = {{"template", "signs"}, {"from", "a@b.example\r\nBcc: c@d"}};
    assert_int_equal(ops->validate(bad_from, 2, &err), NT_EINVAL);
    free(err);
    stop_plugin(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_email_smtp_delivers_headers_and_mime_parts, stop_plugin),
        cmocka_unit_test_teardown(test_email_smtp_451_is_retried_then_sent_once, stop_plugin),
        cmocka_unit_test_teardown(test_email_smtp_550_at_rcpt_is_a_hard_bounce, stop_plugin),
        cmocka_unit_test_teardown(test_email_smtp_server_down_is_transient, stop_plugin),
        cmocka_unit_test_teardown(test_email_smtp_server_down_and_back_with_kept_connections,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_email_smtp_starttls_and_auth_required_by_the_server,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_email_smtp_many_in_flight_beyond_the_limit_queue,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_email_maildir_writes_one_file_per_id, stop_plugin),
        cmocka_unit_test_teardown(test_email_lead_without_valid_address_fails_permanently,
                                  stop_plugin),
        cmocka_unit_test_teardown(test_email_validate_names_missing_and_broken_templates,
                                  stop_plugin),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
