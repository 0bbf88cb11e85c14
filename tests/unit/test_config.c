/* config: defaults, files, flags, environment tokens, and hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "harness.h"
#include "log.h"

static char *tmp_dir;

static int setup(void **state)
{
    tmp_dir = nt_test_tmpdir("nt-config");
    unsetenv("NURTURE_TOKEN_OPS");
    unsetenv("NURTURE_TOKEN_REP");
    unsetenv("NURTURE_TOKEN_WEBHOOK");
    return tmp_dir != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    nt_test_rmrf(tmp_dir);
    free(tmp_dir);
    return 0;
}

/* Write len bytes to <tmp>/name and return the path (static buffer). */
static const char *write_file(const char *name, const void *data, size_t len)
{
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s", tmp_dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    return path;
}

static const char *write_text(const char *name, const char *text)
{
    return write_file(name, text, strlen(text));
}

/* Load text as a file and expect an error containing want. */
static void expect_file_error(const char *text, const char *want)
{
    nt_config_t cfg;
    assert_int_equal(nt_config_defaults(&cfg), 0);
    const char *path = write_text("bad.conf", text);
    char *err = NULL;
    assert_int_equal(nt_config_load_file(&cfg, path, &err), -1);
    assert_non_null(err);
    if (strstr(err, want) == NULL)
        fail_msg("error '%s' does not contain '%s'", err, want);
    free(err);
    nt_config_fini(&cfg);
}

static void test_config_defaults_run_the_demo(void **state)
{
    nt_config_t cfg;
    assert_int_equal(nt_config_defaults(&cfg), 0);
    assert_string_equal(cfg.bind, "127.0.0.1");
    assert_int_equal(cfg.port, 7700);
    assert_string_equal(cfg.redis, "");
    assert_string_equal(cfg.redis_server, NT_REDIS_SERVER);
    assert_string_equal(cfg.data_dir, "./nurture-data");
    assert_string_equal(cfg.modules_dir, NT_DEFAULT_MODULES_DIR);
    assert_int_equal(cfg.partitions, 64);
    assert_true(cfg.time_scale == 1.0);
    assert_int_equal(cfg.time_start, 0);
    assert_int_equal(cfg.batch, 128);
    assert_int_equal(cfg.poll_ms, 10);
    assert_int_equal(cfg.lease_ms, 5000);
    assert_int_equal(cfg.redis_timeout_ms, 5000);
    char want[300], host[256];
    assert_int_equal(gethostname(host, sizeof(host)), 0);
    snprintf(want, sizeof(want), "%s:%ld", host, (long)getpid());
    assert_string_equal(cfg.worker_id, want);
    assert_int_equal(cfg.log_level, NT_LOG_INFO);
    assert_string_equal(cfg.log_file, "");
    assert_int_equal(cfg.max_body, 1048576);
    assert_int_equal(cfg.max_plan_body, 4194304);
    assert_int_equal(cfg.timeline_max, 20);
    assert_int_equal(cfg.dispatch_retries, 8);
    assert_int_equal(cfg.ntokens, 0);
    assert_int_equal(cfg.nextra, 0);
    nt_config_fini(&cfg);
}

static void test_config_file_with_comments_and_quotes(void **state)
{
    const char *path = write_text(
        "good.conf",
        "# nurture.conf\n"
        "\n"
        "   bind 0.0.0.0   \n"
        "port 8080 # trailing comment\n"
        "data-dir \"/var/lib/nurture data\"\n"
        "log-file ''\n"
        "redis unix:/run/redis.sock\r\n"
        "partitions 256\n"
        "time-scale 3600.5\n"
        "time-start 2026-11-23T08:00Z\n"
        "batch 10000\n"
        "poll-ms 5\n"
        "lease-ms 500\n"
        "redis-timeout-ms 250\n"
        "worker-id \"w\\x41 1\"\n"
        "log-level debug\n"
        "max-body 2mb\n"
        "max-plan-body 8388608\n"
        "timeline-max 50\n"
        "dispatch-retries 0\n"
        "\ttoken ops 0123456789abcdef0123\n"
        "token rep 'fedcba9876543210fedc' alice\n"
        "channel.email.from \"Nurture <n@example.com>\"\n"
        "channel.log.sink yes\n"
        "channel.log.sink no\n");
    nt_config_t cfg;
    assert_int_equal(nt_config_defaults(&cfg), 0);
    char *err = NULL;
    int rc = nt_config_load_file(&cfg, path, &err);
    if (rc != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg.bind, "0.0.0.0");
    assert_int_equal(cfg.port, 8080);
    assert_string_equal(cfg.data_dir, "/var/lib/nurture data");
    assert_string_equal(cfg.log_file, "");
    assert_string_equal(cfg.redis, "unix:/run/redis.sock");
    assert_int_equal(cfg.partitions, 256);
    assert_true(cfg.time_scale == 3600.5);
    assert_int_equal(cfg.time_start, 1795420800000LL); /* 2026-11-23T08:00:00Z */
    assert_int_equal(cfg.batch, 10000);
    assert_int_equal(cfg.poll_ms, 5);
    assert_int_equal(cfg.lease_ms, 500);
    assert_int_equal(cfg.redis_timeout_ms, 250);
    assert_string_equal(cfg.worker_id, "wA 1");
    assert_int_equal(cfg.log_level, NT_LOG_DEBUG);
    assert_int_equal(cfg.max_body, 2 * 1048576);
    assert_int_equal(cfg.max_plan_body, 8388608);
    assert_int_equal(cfg.timeline_max, 50);
    assert_int_equal(cfg.dispatch_retries, 0);
    assert_int_equal(cfg.ntokens, 2);
    assert_string_equal(cfg.tokens[0].role, "ops");
    assert_string_equal(cfg.tokens[0].secret, "0123456789abcdef0123");
    assert_string_equal(cfg.tokens[0].name, "ops");
    assert_string_equal(cfg.tokens[1].role, "rep");
    assert_string_equal(cfg.tokens[1].name, "alice");
    assert_string_equal(nt_config_channel(&cfg, "email", "from", NULL),
                        "Nurture <n@example.com>");
    assert_string_equal(nt_config_channel(&cfg, "log", "sink", NULL), "no");
    assert_int_equal(cfg.nextra, 2);
    assert_string_equal(nt_config_channel(&cfg, "log", "path", "dflt"), "dflt");
    assert_string_equal(nt_config_channel(&cfg, "lo", "sink", "dflt"), "dflt");
    assert_string_equal(nt_config_channel(&cfg, "log", "sin", "dflt"), "dflt");
    nt_config_fini(&cfg);
}

static void test_config_every_bad_value_names_key_and_line(void **state)
{
    static const struct { const char *line; const char *key; } bad[] = {
        {"port 70000", "port"},
        {"port -1", "port"},
        {"port 80x", "port"},
        {"port ''", "port"},
        {"port ' 80'", "port"},
        {"port 99999999999999999999999", "port"},
        {"bind ''", "bind"},
        {"redis localhost", "redis"},
        {"redis localhost:0", "redis"},
        {"redis unix:", "redis"},
        {"redis-server ''", "redis-server"},
        {"data-dir ''", "data-dir"},
        {"modules-dir ''", "modules-dir"},
        {"partitions 0", "partitions"},
        {"partitions 16385", "partitions"},
        {"time-scale 0", "time-scale"},
        {"time-scale -2", "time-scale"},
        {"time-scale 1e8", "time-scale"},
        {"time-scale nan", "time-scale"},
        {"time-scale inf", "time-scale"},
        {"time-scale 2x", "time-scale"},
        {"time-start 2026-11-23T08:00", "time-start"},   /* local: no zone to read it in */
        {"time-start 2026-11-23T08:00+01", "time-start"},
        {"time-start 2026-02-30T08:00Z", "time-start"},
        {"time-start 2026-11-23T24:00Z", "time-start"},
        {"time-start 1900-01-01T00:00Z", "time-start"},  /* before 1970 */
        {"time-start tomorrow", "time-start"},
        {"time-start ' 2026-11-23T08:00Z'", "time-start"},
        {"batch 0", "batch"},
        {"batch 10001", "batch"},
        {"poll-ms 0", "poll-ms"},
        {"lease-ms 499", "lease-ms"},
        {"redis-timeout-ms 0", "redis-timeout-ms"},
        {"worker-id ''", "worker-id"},
        {"log-level loud", "log-level"},
        {"max-body 0", "max-body"},
        {"max-body 1tb", "max-body"},
        {"max-body -5", "max-body"},
        {"max-plan-body x", "max-plan-body"},
        {"timeline-max 0", "timeline-max"},
        {"dispatch-retries -1", "dispatch-retries"},
        {"token boss 0123456789abcdef0123", "token"},
        {"token ops short", "token"},
        {"token ops", "token"},
        {"channel.Bad.key x", "channel.Bad.key"},
        {"channel.log x", "channel.log"},
        {"channel.log. x", "channel.log."},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[256], want[128];
        /* The bad line is line 3, after a comment and a good line. */
        snprintf(text, sizeof(text), "# header\nport 7701\n%s\n", bad[i].line);
        snprintf(want, sizeof(want), "bad.conf:3: %s", bad[i].key);
        expect_file_error(text, want);
    }
}

static void test_config_unknown_key_and_shapes(void **state)
{
    expect_file_error("port 1\nprot 7700\n", "bad.conf:2: unknown key 'prot'");
    expect_file_error("port\n", "bad.conf:1: port: expected exactly one value, got none");
    expect_file_error("port 1 2\n", "bad.conf:1: port: expected exactly one value");
    expect_file_error("bind \"127.0.0.1\n", "bad.conf:1: unterminated quote");
    expect_file_error("bind '127.0.0.1\n", "bad.conf:1: unterminated quote");
    expect_file_error("bind \"a\"b\n", "bad.conf:1: closing quote");
    expect_file_error("bind \"a\\x00b\"\n", "bad.conf:1: NUL byte");
    expect_file_error("token ops 0123456789abcdef0123 a b\n", "bad.conf:1:");
    expect_file_error("token ops 0123456789abcdef0123\ntoken rep 0123456789abcdef0123\n",
                      "bad.conf:2: token: the same secret");

    nt_config_t cfg;
    assert_int_equal(nt_config_defaults(&cfg), 0);
    char *err = NULL;
    assert_int_equal(nt_config_load_file(&cfg, "/nonexistent/nurture.conf", &err), -1);
    assert_non_null(strstr(err, "/nonexistent/nurture.conf"));
    free(err);
    err = NULL;
    assert_int_equal(nt_config_set(&cfg, "port", "abc", &err), -1);
    assert_string_equal(err, "port: expected an integer in 0..65535, got 'abc'");
    free(err);
    /* A token secret never appears in an error. */
    err = NULL;
    assert_int_equal(nt_config_set(&cfg, "token", "ops:sekrit", &err), -1);
    assert_null(strstr(err, "sekrit"));
    free(err);
    nt_config_fini(&cfg);
}

static void test_config_overlong_line_is_an_error(void **state)
{
    size_t n = 100 * 1024;
    char *big = malloc(n + 32);
    memcpy(big, "port 1\nbind ", 12);
    memset(big + 12, 'a', n);
    memcpy(big + 12 + n, "\nport 2\n", 9);
    const char *path = write_file("long.conf", big, 12 + n + 8);
    nt_config_t cfg;
    assert_int_equal(nt_config_defaults(&cfg), 0);
    char *err = NULL;
    assert_int_equal(nt_config_load_file(&cfg, path, &err), -1);
    assert_non_null(strstr(err, "long.conf:2: line longer than 65536 bytes"));
    free(err);
    nt_config_fini(&cfg);

    /* A value just under the limit is fine. */
    memcpy(big, "bind ", 5);
    memset(big + 5, 'b', 65000);
    big[65005] = '\n';
    path = write_file("long2.conf", big, 65006);
    assert_int_equal(nt_config_defaults(&cfg), 0);
    err = NULL;
    assert_int_equal(nt_config_load_file(&cfg, path, &err), 0);
    assert_int_equal(strlen(cfg.bind), 65000);
    nt_config_fini(&cfg);

    /* No newline at all, 1 MB of garbage. */
    size_t m = 1024 * 1024;
    char *huge = malloc(m);
    memset(huge, 'x', m);
    path = write_file("huge.conf", huge, m);
    assert_int_equal(nt_config_defaults(&cfg), 0);
    err = NULL;
    assert_int_equal(nt_config_load_file(&cfg, path, &err), -1);
    assert_non_null(strstr(err, "huge.conf:1: line longer"));
    free(err);
    nt_config_fini(&cfg);
    free(huge);
    free(big);
}

static void test_config_nul_bytes_and_binary_are_errors(void **state)
{
    static const char withnul[] = "port 1\nport 7\0\0 8\nbind x\n";
    const char *path = write_file("nul.conf", withnul, sizeof(withnul) - 1);
    nt_config_t cfg;
    assert_int_equal(nt_config_defaults(&cfg), 0);
    char *err = NULL;
    assert_int_equal(nt_config_load_file(&cfg, path, &err), -1);
    assert_non_null(strstr(err, "nul.conf:2: NUL byte"));
    free(err);
    nt_config_fini(&cfg);

    /* Random bytes: any error, no crash, and the message stays printable. */
    unsigned char junk[4096];
    srand(42);
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sizeof(junk); i++)
            junk[i] = (unsigned char)rand();
        path = write_file("junk.conf", junk, sizeof(junk));
        assert_int_equal(nt_config_defaults(&cfg), 0);
        err = NULL;
        if (nt_config_load_file(&cfg, path, &err) != 0) {
            assert_non_null(err);
            for (const char *p = err; *p != '\0'; p++)
                assert_true((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
            free(err);
        }
        nt_config_fini(&cfg);
    }
    /* An empty file and a file of only comments are fine. */
    path = write_text("empty.conf", "");
    assert_int_equal(nt_config_defaults(&cfg), 0);
    assert_int_equal(nt_config_load_file(&cfg, path, NULL), 0);
    nt_config_fini(&cfg);
    path = write_text("comments.conf", "# a\n   # b\n\n\n");
    assert_int_equal(nt_config_defaults(&cfg), 0);
    assert_int_equal(nt_config_load_file(&cfg, path, NULL), 0);
    nt_config_fini(&cfg);
}

static void test_config_flags_override_file_and_env_adds_tokens(void **state)
{
    const char *path = write_text("f.conf", "port 8000\nbind 10.0.0.1\n"
                                            "channel.log.path /tmp/a.jsonl\n");
    setenv("NURTURE_TOKEN_OPS", "envopssecret0123456", 1);
    setenv("NURTURE_TOKEN_REP", "envrepsecret0123456:bob,envrepsecret6543210:carol", 1);
    char *argv[] = {"nurtured",
                    "--port", "9000",
                    "--config", (char *)path,
                    "--token", "webhook:whsecret0123456789",
                    "--token=rep:repsecret0123456789:dave",
                    "--channel.log.sink", "yes",
                    "--time-scale=60",
                    "--redis", "",
                    NULL};
    int argc = (int)(sizeof(argv) / sizeof(argv[0])) - 1;
    nt_config_t cfg;
    char *err = NULL;
    int rc = nt_config_from_args(&cfg, argc, argv, &err);
    if (rc != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg.port, 9000); /* the flag wins although it comes before --config */
    assert_string_equal(cfg.bind, "10.0.0.1");
    assert_true(cfg.time_scale == 60.0);
    assert_string_equal(cfg.redis, "");
    assert_string_equal(nt_config_channel(&cfg, "log", "path", NULL), "/tmp/a.jsonl");
    assert_string_equal(nt_config_channel(&cfg, "log", "sink", NULL), "yes");
    assert_int_equal(cfg.ntokens, 5);
    assert_string_equal(cfg.tokens[0].role, "ops");
    assert_string_equal(cfg.tokens[0].secret, "envopssecret0123456");
    assert_string_equal(cfg.tokens[1].name, "bob");
    assert_string_equal(cfg.tokens[2].name, "carol");
    assert_string_equal(cfg.tokens[3].role, "webhook");
    assert_string_equal(cfg.tokens[3].secret, "whsecret0123456789");
    assert_string_equal(cfg.tokens[4].role, "rep");
    assert_string_equal(cfg.tokens[4].secret, "repsecret0123456789");
    assert_string_equal(cfg.tokens[4].name, "dave");
    nt_config_fini(&cfg);

    setenv("NURTURE_TOKEN_WEBHOOK", "short", 1);
    char *argv2[] = {"nurtured", NULL};
    err = NULL;
    assert_int_equal(nt_config_from_args(&cfg, 1, argv2, &err), -1);
    assert_non_null(strstr(err, "NURTURE_TOKEN_WEBHOOK"));
    free(err);
    nt_config_fini(&cfg);
    unsetenv("NURTURE_TOKEN_OPS");
    unsetenv("NURTURE_TOKEN_REP");
    unsetenv("NURTURE_TOKEN_WEBHOOK");
}

static void test_config_bad_flags(void **state)
{
    static const struct { const char *a, *b, *want; } cases[] = {
        {"--port", "x", "--port: expected an integer"},
        {"--nope", "1", "--nope: unknown key 'nope'"},
        {"--lease-ms", "10", "--lease-ms: expected an integer in 500.."},
        {"--token", "ops:tooshort", "--token: the ops secret must be at least 16"},
        {"--token", "ops", "--token: expected"},
        {"stray", NULL, "unexpected argument 'stray'"},
        {"--port", NULL, "--port: missing value"},
        {"--config", "/nonexistent.conf", "/nonexistent.conf"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[] = {"nurtured", (char *)cases[i].a, (char *)cases[i].b, NULL};
        int argc = cases[i].b != NULL ? 3 : 2;
        nt_config_t cfg;
        char *err = NULL;
        assert_int_equal(nt_config_from_args(&cfg, argc, argv, &err), -1);
        assert_non_null(err);
        if (strstr(err, cases[i].want) == NULL)
            fail_msg("'%s' does not contain '%s'", err, cases[i].want);
        free(err);
        nt_config_fini(&cfg);
    }
    char *help[] = {"nurtured", "--port", "1", "--help", NULL};
    nt_config_t cfg;
    assert_int_equal(nt_config_from_args(&cfg, 4, help, NULL), 1);
    nt_config_fini(&cfg);
    char *version[] = {"nurtured", "--version", NULL};
    assert_int_equal(nt_config_from_args(&cfg, 2, version, NULL), 1);
    nt_config_fini(&cfg);
}

static void test_config_usage_lists_every_key(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    nt_config_usage(f);
    fclose(f);
    static const char *keys[] = {
        "bind", "port", "redis", "redis-server", "data-dir", "modules-dir", "partitions",
        "time-scale", "batch", "poll-ms", "lease-ms", "redis-timeout-ms", "worker-id",
        "log-level", "log-file", "max-body", "max-plan-body", "timeline-max",
        "dispatch-retries", "token", "channel.<name>.<key>", "7700", "127.0.0.1",
        "./nurture-data", "4194304", "NURTURE_TOKEN_OPS",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strstr(buf, keys[i]) == NULL)
            fail_msg("usage lacks '%s'", keys[i]);
    }
    free(buf);
}

static void test_config_log_levels(void **state)
{
    assert_int_equal(nt_log_level_parse("debug"), NT_LOG_DEBUG);
    assert_int_equal(nt_log_level_parse("INFO"), NT_LOG_INFO);
    assert_int_equal(nt_log_level_parse("warn"), NT_LOG_WARN);
    assert_int_equal(nt_log_level_parse("error"), NT_LOG_ERROR);
    assert_int_equal(nt_log_level_parse("loud"), -1);
    assert_int_equal(nt_log_level_parse(NULL), -1);

    char path[512];
    snprintf(path, sizeof(path), "%s/test.log", tmp_dir);
    assert_int_equal(nt_log_init(NT_LOG_INFO, path), 0);
    nt_log_debug("cfg", "hidden %d", 1);
    nt_log_info("cfg", "shown %d\nforged line", 2);
    nt_log_channel(NT_LOG_WARN, "log", "from a plugin");
    assert_int_equal(nt_log_init(NT_LOG_INFO, NULL), 0);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    assert_non_null(fgets(line, sizeof(line), f));
    /* 2026-11-23T17:00:00.123Z INFO [cfg] shown 2 forged line */
    assert_int_equal(line[4], '-');
    assert_int_equal(line[10], 'T');
    assert_int_equal(line[23], 'Z');
    assert_non_null(strstr(line, "Z INFO [cfg] shown 2 forged line\n"));
    assert_non_null(fgets(line, sizeof(line), f));
    assert_non_null(strstr(line, "Z WARN [channel/log] from a plugin\n"));
    assert_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_int_equal(nt_log_init(NT_LOG_INFO, "/nonexistent/dir/x.log"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_run_the_demo),
        cmocka_unit_test(test_config_file_with_comments_and_quotes),
        cmocka_unit_test(test_config_every_bad_value_names_key_and_line),
        cmocka_unit_test(test_config_unknown_key_and_shapes),
        cmocka_unit_test(test_config_overlong_line_is_an_error),
        cmocka_unit_test(test_config_nul_bytes_and_binary_are_errors),
        cmocka_unit_test(test_config_flags_override_file_and_env_adds_tokens),
        cmocka_unit_test(test_config_bad_flags),
        cmocka_unit_test(test_config_usage_lists_every_key),
        cmocka_unit_test(test_config_log_levels),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
