/* kill -9 of nurtured at random moments while thousands of leads run (DESIGN.md, "Guarantees":
 * kill -9 at any moment loses no run and no event). After the restarts every run has ended
 * exactly once, every update was applied once, and the log channel wrote each message once. */
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
#define LEADS 3000
#define ROUNDS 5

static const char plan_text[] =
    "id: \"crash\"\n"
    "name: \"Crash\"\n"
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

static int owns_all(void *arg)
{
    if (ft_owned(arg, NULL) == PARTS)
        return 1;
    ft_sleep_ms(50);
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

static void test_crash_kill9_at_random_moments_every_run_ends_once(void **state)
{
    (void)state;
    unsigned seed = ft_seed("test_crash");
    srandom(seed);

    assert_int_equal(nt_test_redis_start(&redis), 0);
    work_dir = nt_test_tmpdir("nt-crash");
    assert_non_null(work_dir);
    char log_path[512];
    snprintf(log_path, sizeof(log_path), "%s/log-channel.jsonl", work_dir);
    char *addr = nt_test_redis_addr(&redis);
    const char *extra[] = {"--time-scale", "3600", "--lease-ms", "2000", "--partitions", "64",
                           "--channel.log.path", log_path, NULL};
    int rc = nt_test_daemon_start(&daemon_, addr, extra);
    free(addr);
    assert_int_equal(rc, 0);
    assert_int_equal(ft_publish_plan(&daemon_, work_dir, "crash", plan_text), 0);

    /* Enrol a fifth of the leads per round, so that at each kill some leads are just starting,
     * some wait and some are being dispatched. */
    for (int round = 0; round < ROUNDS; round++) {
        int from = round * LEADS / ROUNDS, to = (round + 1) * LEADS / ROUNDS;
        assert_int_equal(ft_enrol(&daemon_, "crash", "c", from, to), to - from);
        /* A restarted worker has a new id: it takes the partitions over once the dead one's
         * leases expired and it left the heartbeat set. Kill it only once it works on all. */
        int64_t t0 = ft_mono_ms();
        if (nt_test_wait_until(owns_all, &daemon_, 30000) != 0) {
            nt_test_daemon_dump_log(&daemon_);
            fail_msg("round %d: the daemon did not own all %d partitions within 30 s", round,
                     PARTS);
        }
        int ms = 100 + (int)(random() % 601);
        ft_sleep_ms(ms);
        printf("round %d: enrolled %d..%d, owned all partitions after %lld ms, SIGKILL %d ms "
               "later with %ld lines in the log channel's file\n",
               round, from, to - 1, (long long)(ft_mono_ms() - t0 - ms), ms,
               count_lines(log_path));
        fflush(stdout);
        nt_test_daemon_signal(&daemon_, SIGKILL);
        assert_int_equal(nt_test_daemon_wait(&daemon_, 10000), 128 + SIGKILL);
        assert_int_equal(nt_test_daemon_start_again(&daemon_), 0);
    }

    long left;
    ft_expect_runs_ended(&daemon_, &redis, PARTS, "crash", "c", "finished", LEADS, 120000, seed,
                         &left);
    printf("pending 0; %ld entries left in the events streams\n", left);

    /* Stop (status 0 expected) so that the log file is complete and quiet. */
    nt_test_daemon_stop(&daemon_);
    ft_log_t lg;
    const char *paths[] = {log_path};
    assert_int_equal(ft_check_log(paths, 1, "c", LEADS, 3, &lg), 0);
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
        cmocka_unit_test_teardown(test_crash_kill9_at_random_moments_every_run_ends_once,
                                  teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
