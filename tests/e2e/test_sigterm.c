/* SIGTERM while leads are moving: nurtured finishes the work in flight and exits 0 within 10 s;
 * started again, it carries on, and every run ends exactly once with no message logged twice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault_util.h"

#define PARTS 64
#define LEADS 1000

static const char plan_text[] =
    "id: \"term\"\n"
    "name: \"SIGTERM\"\n"
    "start: \"s1\"\n"
    "nodes { id: \"s1\" send { channel: \"log\" params { name: \"message\" value: \"one\" }"
    " next: \"w1\" } }\n"
    "nodes { id: \"w1\" wait { duration { hours: 1 } next: \"s2\" } }\n"
    "nodes { id: \"s2\" send { channel: \"log\" params { name: \"message\" value: \"two\" }"
    " next: \"u1\" } }\n"
    "nodes { id: \"u1\" update { add_score: 1 next: \"s3\" } }\n"
    "nodes { id: \"s3\" send { channel: \"log\" params { name: \"message\" value: \"three\" }"
    " next: \"done\" } }\n"
    "nodes { id: \"done\" exit { reason: \"finished\" } }\n";

static nt_test_redis_t redis;
static nt_test_daemon_t daemon_;
static char *work_dir;

static int teardown(void **state)
{
    (void)state;
    nt_test_daemon_stop(&daemon_);
    nt_test_redis_stop(&redis);
    if (work_dir != NULL) {
        const char *keep = getenv("NT_TEST_KEEP");
        if (keep != NULL && keep[0] != '\0' && strcmp(keep, "0") != 0)
            fprintf(stderr, "kept %s\n", work_dir);
        else
            nt_test_rmrf(work_dir);
        free(work_dir);
        work_dir = NULL;
    }
    nt_test_cleanup_all();
    return 0;
}

static long count_lines(const char *path)
{
    FILE *f = fopen(path, "re");
    long n = 0;
    int ch;
    if (f == NULL)
        return 0;
    while ((ch = getc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

typedef struct lines_arg {
    const char *path;
    long want;
} lines_arg_t;

static int lines_reached(void *arg)
{
    lines_arg_t *l = arg;
    if (count_lines(l->path) >= l->want)
        return 1;
    ft_sleep_ms(20);
    return 0;
}

static void test_sigterm_while_leads_move_exits_0_and_restart_finishes_each_run_once(
    void **state)
{
    (void)state;
    unsigned seed = ft_seed("test_sigterm");
    srandom(seed);

    assert_int_equal(nt_test_redis_start(&redis), 0);
    work_dir = nt_test_tmpdir("nt-term");
    assert_non_null(work_dir);
    char log_path[512];
    snprintf(log_path, sizeof(log_path), "%s/log-channel.jsonl", work_dir);
    char *addr = nt_test_redis_addr(&redis);
    const char *extra[] = {"--time-scale", "3600", "--lease-ms", "2000", "--partitions", "64",
                           "--channel.log.path", log_path, NULL};
    int rc = nt_test_daemon_start(&daemon_, addr, extra);
    free(addr);
    assert_int_equal(rc, 0);
    assert_int_equal(ft_publish_plan(&daemon_, work_dir, "term", plan_text), 0);
    assert_int_equal(ft_enrol(&daemon_, "term", "s", 0, LEADS), LEADS);

    /* Twice: once among the first messages, once among the later ones. */
    long at[2] = {200 + random() % 700, 1200 + random() % 1500};
    for (int round = 0; round < 2; round++) {
        lines_arg_t la = {log_path, at[round]};
        if (nt_test_wait_until(lines_reached, &la, 60000) != 0) {
            nt_test_daemon_dump_log(&daemon_);
            fail_msg("round %d: %ld messages were not logged within 60 s (%ld lines); seed %u",
                     round, at[round], count_lines(log_path), seed);
        }
        nt_test_daemon_signal(&daemon_, SIGTERM);
        int64_t t0 = ft_mono_ms();
        int st = nt_test_daemon_wait(&daemon_, 10000);
        int64_t took = ft_mono_ms() - t0;
        printf("round %d: SIGTERM once %ld messages were logged: exit status %d after %lld ms, "
               "%ld lines logged\n",
               round, at[round], st, (long long)took, count_lines(log_path));
        fflush(stdout);
        if (st != 0) {
            nt_test_daemon_dump_log(&daemon_);
            fail_msg("round %d: nurtured did not exit with status 0 within 10 s of SIGTERM "
                     "(status %d, -1: still running); seed %u",
                     round, st, seed);
        }
        assert_int_equal(nt_test_daemon_start_again(&daemon_), 0);
    }

    ft_expect_runs_ended(&daemon_, &redis, PARTS, "term", "s", "finished", LEADS, 90000, seed,
                         NULL);

    nt_test_daemon_stop(&daemon_);
    ft_log_t lg;
    const char *paths[] = {log_path};
    assert_int_equal(ft_check_log(paths, 1, "s", LEADS, 3, &lg), 0);
    printf("log: %ld lines, %ld duplicate ids, %d leads without exactly 3 messages\n", lg.lines,
           lg.dup_same_file, lg.leads_wrong);
    if (lg.lines != 3L * LEADS || lg.dup_same_file != 0 || lg.leads_wrong != 0 ||
        lg.bad_lines != 0 || lg.foreign != 0)
        fail_msg("log channel: %ld lines (expected %d), %ld duplicates, %d leads wrong, %ld bad "
                 "lines, %ld foreign; first: %s; seed %u",
                 lg.lines, 3 * LEADS, lg.dup_same_file, lg.leads_wrong, lg.bad_lines,
                 lg.foreign, lg.first_bad, seed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_sigterm_while_leads_move_exits_0_and_restart_finishes_each_run_once, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
