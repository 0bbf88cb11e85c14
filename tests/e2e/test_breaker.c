/* End to end: a channel whose provider is down. The email channel points at an SMTP port where
 * nothing listens; its circuit breaker opens, the messages are held (no run leaves by "failed"
 * although every message would have used up its attempts), /health shows the breaker; once a
 * real SMTP server (Debian's aiosmtpd) answers on that port, the breaker closes by itself and
 * every message is delivered once. */
#include <dirent.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api_util.h"

#define LEADS 10

static int smtp_port;
static pid_t smtp_pid = -1;
static char *smtp_dir;

static int setup(void **state)
{
    static char url[64];
    static const char *extra[] = {"--channel.email.smtp_url", url, "--dispatch-retries", "3",
                                  "--poll-ms", "5", NULL};

    (void)state;
    smtp_port = nt_test_free_port();
    snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", smtp_port);
    return api_setup(extra);
}

static int teardown(void **state)
{
    if (smtp_pid > 0) {
        kill(smtp_pid, SIGTERM);
        waitpid(smtp_pid, NULL, 0);
    }
    if (smtp_dir)
        nt_test_rmrf(smtp_dir);
    free(smtp_dir);
    return api_teardown(state);
}

/* aiosmtpd with its Mailbox handler: every accepted message becomes a file in a maildir. */
static void start_smtp(void)
{
    char listen[64], mbox[600];

    smtp_dir = nt_test_tmpdir("nt-smtp");
    assert_non_null(smtp_dir);
    snprintf(mbox, sizeof(mbox), "%s/mail", smtp_dir);
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", smtp_port);
    smtp_pid = fork();
    assert_true(smtp_pid >= 0);
    if (smtp_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* Debian's interpreter, which has python3-aiosmtpd, whatever is first on the PATH. */
        execl("/usr/bin/python3", "python3", "-m", "aiosmtpd", "-n", "-l", listen, "-c",
              "aiosmtpd.handlers.Mailbox", mbox, (char *)NULL);
        _exit(127);
    }
}

static size_t delivered(void)
{
    char dir[700];
    DIR *d;
    struct dirent *e;
    size_t n = 0;

    snprintf(dir, sizeof(dir), "%s/mail/new", smtp_dir);
    d = opendir(dir);
    if (!d)
        return 0;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The email breaker's state in /health. */
static char breaker[16];
static long held;

static void read_breaker(void)
{
    nt_test_resp_t r;
    json_t *ch;

    call("GET", "/health", NULL, NULL, &r);
    ch = json_object_get(json_object_get(json_object_get(r.json, "worker"), "channels"), "email");
    snprintf(breaker, sizeof(breaker), "%s",
             json_string_value(json_object_get(ch, "breaker")) ? json_string_value(
                                                                     json_object_get(ch, "breaker"))
                                                               : "?");
    held = (long)json_integer_value(json_object_get(ch, "held"));
    nt_test_resp_fini(&r);
}

static int breaker_open(void *arg)
{
    (void)arg;
    read_breaker();
    return strcmp(breaker, "open") == 0 && held > 0;
}

static long stat_of(const char *what)
{
    nt_test_resp_t r;
    long v;

    call("GET", "/v1/plans/mail_once/stats", OPS, NULL, &r);
    if (strcmp(what, "active") == 0)
        v = (long)json_integer_value(json_object_get(r.json, "active"));
    else
        v = (long)json_integer_value(json_object_get(json_object_get(r.json, "exits"), what));
    nt_test_resp_fini(&r);
    return v;
}

static int all_sent(void *arg)
{
    (void)arg;
    return stat_of("sent") == LEADS && delivered() == LEADS;
}

static void test_breaker_holds_messages_while_smtp_is_down_and_delivers_once_back(void **state)
{
    static const char plan[] =
        "id: \"mail_once\"\n"
        "start: \"mail\"\n"
        "nodes { id: \"mail\" send { channel: \"email\" "
        "params { name: \"template\" value: \"tech_benchmark\" } "
        "on { outcome: \"failed\" to: \"failed\" } next: \"sent\" } }\n"
        "nodes { id: \"sent\" exit { reason: \"sent\" } }\n"
        "nodes { id: \"failed\" exit { reason: \"failed\" } }\n";
    char path[] = "/tmp/nt-breaker-XXXXXX", body[8192];
    int fd = mkstemp(path);
    uint8_t *bin = NULL;
    size_t len = 0, off = 0;
    nt_test_resp_t r;

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, plan, sizeof(plan) - 1), (ssize_t)sizeof(plan) - 1);
    close(fd);
    assert_int_equal(nt_test_compile_plan(path, &bin, &len), 0);
    unlink(path);
    call_raw("POST", "/v1/plans", OPS, "application/x-protobuf", bin, len, &r);
    free(bin);
    expect_status(&r, 201, NULL);
    nt_test_resp_fini(&r);

    off += (size_t)snprintf(body + off, sizeof(body) - off, "{\"leads\":[");
    for (int i = 0; i < LEADS; i++)
        off += (size_t)snprintf(body + off, sizeof(body) - off,
                                "%s{\"id\":\"brk-%d\",\"attributes\":{\"email\":"
                                "\"lead%d@example.com\",\"first_name\":\"Lea\"}}",
                                i ? "," : "", i, i);
    snprintf(body + off, sizeof(body) - off, "]}");
    call("POST", "/v1/plans/mail_once/enrol", OPS, body, &r);
    expect_status(&r, 200, NULL);
    assert_int_equal(json_integer_value(json_object_get(r.json, "enrolled")), LEADS);
    nt_test_resp_fini(&r);

    /* Nothing listens: the breaker opens and holds the messages. */
    assert_int_equal(nt_test_wait_until(breaker_open, NULL, 20000), 0);
    /* Long enough for three attempts each with backoff, had they been retried one by one. */
    sleep(4);
    assert_int_equal(stat_of("failed"), 0);
    assert_int_equal(stat_of("active"), LEADS);

    start_smtp();
    if (nt_test_wait_until(all_sent, NULL, 90000) != 0) {
        nt_test_daemon_dump_log(&env.daemon);
        fail_msg("after the SMTP server came back: %ld sent, %zu delivered", stat_of("sent"),
                 delivered());
    }
    read_breaker();
    assert_string_equal(breaker, "closed");
    assert_int_equal(held, 0);
    assert_int_equal(stat_of("failed"), 0);
    assert_int_equal(delivered(), LEADS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_breaker_holds_messages_while_smtp_is_down_and_delivers_once_back),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
