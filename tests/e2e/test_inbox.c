/* End to end: the rep's inbox page (GET /inbox) in headless Chromium, driven through
 * chromedriver's W3C WebDriver HTTP API with libcurl. A run reaches a call step and rep1 gets a
 * task; the test opens the page, enters rep1's token, picks the task, sees the lead's context
 * (score, stage, attributes rendered as text, not markup), claims it and presses "Meeting
 * booked" with a note; then the API and Redis show the task done and the run gone along the
 * meeting_booked edge. Chromium and chromedriver are Debian packages (tools/deps): when they
 * are missing the test fails. A screenshot of the page lands in the test's temp dir
 * (/tmp/nt-inbox-XXXXXX/inbox.png, kept with NT_TEST_KEEP=1). */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "api_util.h"

#define CHROMIUM "/usr/bin/chromium"
#define CHROMEDRIVER "/usr/bin/chromedriver"
#define ELEMENT_KEY "element-6066-11e4-a52e-4f735466cecf"
#define NOTE "Tuesday 10:00 with the CFO"

static struct {
    pid_t pid; /* chromedriver, leader of its own process group */
    int port;
    char *tmp;
    char session[128];
} wd;

/* --- chromedriver ---------------------------------------------------------------------------- */

static void wd_kill(void)
{
    if (wd.pid > 0) {
        kill(-wd.pid, SIGKILL);
        waitpid(wd.pid, NULL, 0);
        wd.pid = 0;
    }
}

/* A WebDriver request; body JSON or NULL. Returns the response (caller finis) after checking
 * the status is 200; the command's result is r->json["value"]. */
static void wd_call(const char *method, const char *path, const char *body, nt_test_resp_t *r)
{
    char url[512];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", wd.port, path);
    if (nt_test_http(method, url, NULL, body ? "application/json" : NULL, body,
                     body ? strlen(body) : 0, r) != 0)
        fail_msg("chromedriver: %s %s: no response", method, path);
    if (r->status != 200)
        fail_msg("chromedriver: %s %s: %ld %s", method, path, r->status, r->body);
}

/* The same on the current session: path is appended to /session/<id>. */
static void wd_session(const char *method, const char *path, const char *body, nt_test_resp_t *r)
{
    char full[512];

    snprintf(full, sizeof(full), "/session/%s%s", wd.session, path);
    wd_call(method, full, body, r);
}

static int wd_ready(void *arg)
{
    char url[128];
    nt_test_resp_t r;
    int ok;

    (void)arg;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/status", wd.port);
    if (nt_test_http("GET", url, NULL, NULL, NULL, 0, &r) != 0)
        return 0;
    ok = r.status == 200 &&
         json_is_true(json_object_get(json_object_get(r.json, "value"), "ready"));
    nt_test_resp_fini(&r);
    return ok;
}

/* json_dumps of a new value, which is released. */
static char *dump_new(json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;

    json_decref(v);
    return s;
}

/* Start chromedriver on a free port and open a session of headless Chromium. */
static void wd_start(void)
{
    char port_arg[32], log_arg[512], profile[512], *caps;
    nt_test_resp_t r;
    json_t *args;
    const char *sid;

    if (access(CHROMIUM, X_OK) != 0 || access(CHROMEDRIVER, X_OK) != 0)
        fail_msg("%s or %s is missing: run tools/deps (Debian packages chromium, "
                 "chromium-driver)",
                 CHROMIUM, CHROMEDRIVER);
    wd.port = nt_test_free_port();
    assert_true(wd.port > 0);
    snprintf(port_arg, sizeof(port_arg), "--port=%d", wd.port);
    snprintf(log_arg, sizeof(log_arg), "--log-path=%s/chromedriver.log", wd.tmp);
    wd.pid = fork();
    assert_true(wd.pid >= 0);
    if (wd.pid == 0) {
        int null = open("/dev/null", O_RDWR);

        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execl(CHROMEDRIVER, CHROMEDRIVER, port_arg, log_arg, (char *)NULL);
        _exit(127);
    }
    setpgid(wd.pid, wd.pid);
    if (nt_test_wait_until(wd_ready, NULL, 20000) != 0)
        fail_msg("chromedriver did not become ready on port %d (log: %s/chromedriver.log)",
                 wd.port, wd.tmp);

    /* The flags known to work here (no sandbox as root, no network but loopback). */
    snprintf(profile, sizeof(profile), "--user-data-dir=%s/profile", wd.tmp);
    args = json_pack("[s,s,s,s,s,s,s,s,s,s]", "--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                     profile);
    caps = dump_new(json_pack("{s:{s:{s:s,s:{s:s,s:o}}}}", "capabilities", "alwaysMatch",
                              "browserName", "chrome", "goog:chromeOptions", "binary", CHROMIUM,
                              "args", args));
    assert_non_null(caps);
    wd_call("POST", "/session", caps, &r);
    free(caps);
    sid = json_string_value(json_object_get(json_object_get(r.json, "value"), "sessionId"));
    assert_non_null(sid);
    snprintf(wd.session, sizeof(wd.session), "%s", sid);
    nt_test_resp_fini(&r);
    /* Finding an element waits up to 10 s for it to appear. */
    wd_session("POST", "/timeouts", "{\"implicit\":10000,\"pageLoad\":20000,\"script\":10000}",
               &r);
    nt_test_resp_fini(&r);
}

static void wd_stop(void)
{
    if (wd.session[0] && wd.pid > 0) {
        char url[256];
        nt_test_resp_t r;

        snprintf(url, sizeof(url), "http://127.0.0.1:%d/session/%s", wd.port, wd.session);
        if (nt_test_http("DELETE", url, NULL, NULL, NULL, 0, &r) == 0)
            nt_test_resp_fini(&r);
        wd.session[0] = '\0';
    }
    wd_kill();
}

/* The element matching a CSS selector (waits up to the implicit timeout); id into out. */
static void wd_find(const char *css, char *out, size_t n)
{
    char *body = dump_new(json_pack("{s:s,s:s}", "using", "css selector", "value", css));
    nt_test_resp_t r;
    const char *id;

    wd_session("POST", "/element", body, &r);
    free(body);
    id = json_string_value(json_object_get(json_object_get(r.json, "value"), ELEMENT_KEY));
    if (!id)
        fail_msg("no element %s: %s", css, r.body);
    snprintf(out, n, "%s", id);
    nt_test_resp_fini(&r);
}

/* The number of elements matching css now (no waiting for them). */
static size_t wd_count(const char *css)
{
    char *body;
    nt_test_resp_t r;
    size_t n;

    wd_session("POST", "/timeouts", "{\"implicit\":0}", &r);
    nt_test_resp_fini(&r);
    body = dump_new(json_pack("{s:s,s:s}", "using", "css selector", "value", css));
    wd_session("POST", "/elements", body, &r);
    free(body);
    n = json_array_size(json_object_get(r.json, "value"));
    nt_test_resp_fini(&r);
    wd_session("POST", "/timeouts", "{\"implicit\":10000}", &r);
    nt_test_resp_fini(&r);
    return n;
}

static void wd_click(const char *css)
{
    char id[128], path[256];
    nt_test_resp_t r;

    wd_find(css, id, sizeof(id));
    snprintf(path, sizeof(path), "/element/%s/click", id);
    wd_session("POST", path, "{}", &r);
    nt_test_resp_fini(&r);
}

static void wd_type(const char *css, const char *text)
{
    char id[128], path[256], *body;
    nt_test_resp_t r;

    wd_find(css, id, sizeof(id));
    snprintf(path, sizeof(path), "/element/%s/value", id);
    body = dump_new(json_pack("{s:s}", "text", text));
    wd_session("POST", path, body, &r);
    free(body);
    nt_test_resp_fini(&r);
}

/* The text of the element matching css, as in the DOM (textContent, before CSS changes its
 * case), malloc'd. */
static char *wd_text(const char *css)
{
    char id[128], path[256], *s;
    nt_test_resp_t r;

    wd_find(css, id, sizeof(id));
    snprintf(path, sizeof(path), "/element/%s/property/textContent", id);
    wd_session("GET", path, NULL, &r);
    s = json_string_value(json_object_get(r.json, "value"))
            ? strdup(json_string_value(json_object_get(r.json, "value")))
            : strdup("");
    nt_test_resp_fini(&r);
    return s;
}

typedef struct text_want {
    const char *css, *needle;
} text_want_t;

static int text_has(void *arg)
{
    text_want_t *w = arg;
    char *s = wd_text(w->css);
    int ok = strstr(s, w->needle) != NULL;

    free(s);
    return ok;
}

/* Wait until the element's text contains needle. */
static void wd_wait_text(const char *css, const char *needle)
{
    text_want_t w = {css, needle};

    if (nt_test_wait_until(text_has, &w, 15000) != 0) {
        char *s = wd_text(css), *st = wd_text("#status");

        fail_msg("%s never showed '%s'; it shows '%s' (status line: '%s')", css, needle, s, st);
    }
}

/* Save the page as a PNG at path. */
static void wd_screenshot(const char *path)
{
    nt_test_resp_t r;
    const char *b64;
    unsigned char *png;
    size_t len;
    int n;
    FILE *f;

    wd_session("GET", "/screenshot", NULL, &r);
    b64 = json_string_value(json_object_get(r.json, "value"));
    assert_non_null(b64);
    len = strlen(b64);
    png = malloc(len / 4 * 3 + 3);
    assert_non_null(png);
    n = EVP_DecodeBlock(png, (const unsigned char *)b64, (int)len);
    assert_true(n > 8);
    while (len > 0 && b64[len - 1] == '=') { /* DecodeBlock counts the padding as zero bytes */
        n--;
        len--;
    }
    assert_memory_equal(png, "\x89PNG", 4);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(png, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    free(png);
    nt_test_resp_fini(&r);
    fprintf(stderr, "test_inbox: screenshot %s\n", path);
}

/* --- the daemon side -------------------------------------------------------------------------- */

static int setup(void **state)
{
    static const char *const extra[] = {"--poll-ms", "5", "--channel.call.team.sales", "rep1",
                                        NULL};

    (void)state;
    wd.tmp = nt_test_tmpdir("nt-inbox");
    if (!wd.tmp)
        return -1;
    return api_setup(extra);
}

static int teardown(void **state)
{
    wd_stop();
    if (wd.tmp) {
        char profile[512];

        snprintf(profile, sizeof(profile), "%s/profile", wd.tmp);
        nt_test_rmrf(profile);
        if (!getenv("NT_TEST_KEEP"))
            nt_test_rmrf(wd.tmp);
        free(wd.tmp);
        wd.tmp = NULL;
    }
    return api_teardown(state);
}

typedef struct task_want {
    const char *id;
} task_want_t;

static int task_listed(void *arg)
{
    task_want_t *w = arg;
    nt_test_resp_t r;
    size_t i;
    json_t *t;
    int found = 0;

    call("GET", "/v1/tasks?mine=1", REP, NULL, &r);
    json_array_foreach(json_object_get(r.json, "tasks"), i, t)
    {
        if (strcmp(json_string_value(json_object_get(t, "id")), w->id) == 0)
            found = 1;
    }
    nt_test_resp_fini(&r);
    return found;
}

static json_t *run_of(const char *id, const char *plan)
{
    char path[256];
    nt_test_resp_t r;
    json_t *found = NULL, *run;
    size_t i;

    snprintf(path, sizeof(path), "/v1/leads/%s", id);
    call("GET", path, OPS, NULL, &r);
    expect_status(&r, 200, NULL);
    json_array_foreach(json_object_get(r.json, "runs"), i, run)
    {
        if (strcmp(json_string_value(json_object_get(run, "plan")), plan) == 0)
            found = json_incref(run);
    }
    nt_test_resp_fini(&r);
    return found;
}

static int run_booked(void *arg)
{
    json_t *run = run_of(arg, "inbox");
    const char *st = run ? json_string_value(json_object_get(run, "status")) : NULL;
    const char *x = run ? json_string_value(json_object_get(run, "exit_reason")) : NULL;
    int ok = st && strcmp(st, "done") == 0 && x && strcmp(x, "meeting_booked") == 0;

    json_decref(run);
    return ok;
}

/* Response headers of one request, concatenated. */
static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    char **acc = arg;
    size_t have = *acc ? strlen(*acc) : 0, add = size * n;
    char *s = realloc(*acc, have + add + 1);

    if (!s)
        return 0;
    memcpy(s + have, p, add);
    s[have + add] = '\0';
    *acc = s;
    return add;
}

/* The page answers without a token, with its security headers, and names the API it uses. */
static void test_inbox_page_is_served_without_a_token(void **state)
{
    char url[128];
    char *headers = NULL;
    nt_test_resp_t r;
    CURL *c = curl_easy_init();

    (void)state;
    snprintf(url, sizeof(url), "%s/inbox", env.daemon.url);
    call("GET", "/inbox", NULL, NULL, &r);
    expect_status(&r, 200, NULL);
    assert_non_null(strstr(r.content_type, "text/html"));
    assert_non_null(strstr(r.body, "/v1/tasks?mine=1"));
    assert_non_null(strstr(r.body, "data-outcome=\"meeting_booked\""));
    assert_null(strstr(r.body, "{{nonce}}"));
    assert_null(strstr(r.body, "http://")); /* no external fetches */
    assert_null(strstr(r.body, "https://"));
    nt_test_resp_fini(&r);

    assert_non_null(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &headers);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_cleanup(c);
    assert_non_null(headers);
    assert_non_null(strstr(headers, "Content-Security-Policy: default-src 'self'; script-src "
                                    "'nonce-"));
    assert_non_null(strstr(headers, "style-src 'unsafe-inline'"));
    assert_non_null(strstr(headers, "X-Frame-Options: DENY"));
    assert_non_null(strstr(headers, "X-Content-Type-Options: nosniff"));
    free(headers);

    /* Only GET and HEAD. */
    call("POST", "/inbox", NULL, "{}", &r);
    assert_int_equal(r.status, 405);
    nt_test_resp_fini(&r);
}

static void test_rep_logs_meeting_booked_in_the_page_and_the_lead_moves(void **state)
{
    const char *id = "inbox-a:inbox:call:1";
    char url[256], css[256], key[NT_KEY_MAX], png[512], *s;
    task_want_t w = {id};
    nt_test_resp_t r;
    json_t *t;
    size_t i;
    int saw_outcome = 0;

    (void)state;
    publish_textpb("id: \"inbox\"\nstart: \"call\"\n"
                 "nodes { id: \"call\" send { channel: \"call\"\n"
                 "  params { name: \"reason\" value: \"attended the pricing webinar, score "
                 "{{score}}\" }\n"
                 "  params { name: \"points\" value: \"ask about the budget\" }\n"
                 "  params { name: \"priority\" value: \"high\" }\n"
                 "  params { name: \"team\" value: \"sales\" }\n"
                 "  params { name: \"sla\" value: \"1d\" }\n"
                 "  on { outcome: \"meeting_booked\" to: \"booked\" }\n"
                 "  on { outcome: \"no_answer\" to: \"missed\" } } }\n"
                 "nodes { id: \"booked\" update { stage: SQL next: \"end\" } }\n"
                 "nodes { id: \"end\" exit { reason: \"meeting_booked\" } }\n"
                 "nodes { id: \"missed\" exit { reason: \"no_answer\" } }\n", 0);
    /* Markup in an attribute must come out as text. */
    create_lead("{\"id\":\"inbox-a\",\"score\":72,\"stage\":\"mql\",\"attributes\":{"
                "\"first_name\":\"<img id=pwn src=x onerror=alert(1)>Ada\","
                "\"company\":\"Analytical Engines\",\"owner\":\"rep1\"}}");
    call("POST", "/v1/leads/inbox-a/enrol", OPS, "{\"plan\":\"inbox\"}", &r);
    expect_status(&r, 202, NULL);
    nt_test_resp_fini(&r);
    if (nt_test_wait_until(task_listed, &w, 20000) != 0) {
        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("task %s never listed for rep1", id);
    }

    wd_start();
    snprintf(url, sizeof(url), "{\"url\":\"%s/inbox\"}", env.daemon.url);
    wd_session("POST", "/url", url, &r);
    nt_test_resp_fini(&r);

    /* No token yet: the page asks for it. */
    wd_type("#token", REP);
    wd_click("#save-token");

    /* The task, then the lead's context. */
    snprintf(css, sizeof(css), "button.task[data-id=\"%s\"]", id);
    wd_wait_text(css, "attended the pricing webinar, score 72");
    wd_click(css);
    wd_wait_text("#t-reason", "attended the pricing webinar, score 72");
    wd_wait_text("#t-points", "ask about the budget");
    wd_wait_text("#l-score", "72");
    wd_wait_text("#l-stage", "mql");
    wd_wait_text("#l-attrs", "<img id=pwn src=x onerror=alert(1)>Ada");
    wd_wait_text("#l-timeline", "call: task_created");
    assert_int_equal(wd_count("#pwn"), 0);
    assert_int_equal(wd_count("#l-attrs img"), 0);
    wd_wait_text("#who", "signed in as rep1");
    snprintf(png, sizeof(png), "%s/inbox-task.png", wd.tmp);
    wd_screenshot(png);

    wd_click("#claim");
    wd_wait_text("#t-status", "claimed");
    wd_wait_text("#status", "Claimed");
    wd_type("#note", NOTE);
    wd_click("#outcomes button[data-outcome=\"meeting_booked\"]");
    wd_wait_text("#status", "Logged \"meeting booked\" for inbox-a.");
    wd_wait_text("#t-status", "done: meeting booked");
    wd_wait_text("#count", "0");

    /* Through the API: the task is done with the page's outcome and note, by rep1. */
    snprintf(url, sizeof(url), "/v1/tasks/%s", id);
    call("GET", url, REP, NULL, &r);
    expect_status(&r, 200, NULL);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "done");
    assert_string_equal(json_string_value(json_object_get(r.json, "outcome")), "meeting_booked");
    assert_string_equal(json_string_value(json_object_get(r.json, "note")), NOTE);
    assert_string_equal(json_string_value(json_object_get(r.json, "done_by")), "rep1");
    nt_test_resp_fini(&r);

    /* The run followed the meeting_booked edge: booked (stage SQL), then the exit. */
    if (nt_test_wait_until(run_booked, (void *)"inbox-a", 20000) != 0) {
        t = run_of("inbox-a", "inbox");
        s = t ? json_dumps(t, 0) : NULL;
        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("inbox-a: wanted the meeting_booked exit, have %s", s ? s : "no run");
    }
    s = redis_hget(lead_key(key, "inbox-a"), "_stage");
    assert_non_null(s);
    assert_string_equal(s, "sql");
    free(s);
    call("GET", "/v1/leads/inbox-a", OPS, NULL, &r);
    json_array_foreach(json_object_get(r.json, "timeline"), i, t)
    {
        if (strcmp(json_string_value(json_object_get(t, "text")), "call: meeting_booked") == 0)
            saw_outcome = 1;
    }
    if (!saw_outcome)
        fail_msg("the call's outcome is not in the timeline: %s", r.body);
    nt_test_resp_fini(&r);

    /* The page shows the lead moved (it reloads the lead after logging; Refresh does too). */
    wd_click("#refresh");
    wd_wait_text("#l-stage", "sql");
    wd_wait_text("#l-timeline", "call: meeting_booked");
    wd_wait_text("#l-runs", "done (meeting_booked)");
    snprintf(png, sizeof(png), "%s/inbox.png", wd.tmp);
    wd_screenshot(png);
    wd_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inbox_page_is_served_without_a_token),
        cmocka_unit_test(test_rep_logs_meeting_booked_in_the_page_and_the_lead_moves),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
