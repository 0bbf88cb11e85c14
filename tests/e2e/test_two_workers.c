/* Two nurtured processes on one Redis split the partitions; kill -9 of one mid-way: the survivor
 * takes every partition over within a lease period (plus slack) and every run ends exactly once
 * (DESIGN.md, "Guarantees": a surviving worker resumes from Redis). */
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
#define LEADS 2000
#define LEASE_MS 2000

/* Two waits of an hour at time scale 720: about ten seconds per run. */
static const char plan_text[] =
    "id: \"pair\"\n"
    "name: \"Two workers\"\n"
    "start: \"s1\"\n"
    "nodes { id: \"s1\" send { channel: \"log\" params { name: \"message\" value: \"one\" }"
    " next: \"w1\" } }\n"
    "nodes { id: \"w1\" wait { duration { hours: 1 } next: \"s2\" } }\n"
    "nodes { id: \"s2\" send { channel: \"log\" params { name: \"message\" value: \"two\" }"
    " next: \"w2\" } }\n"
    "nodes { id: \"w2\" wait { duration { hours: 1 } next: \"u1\" } }\n"
    "nodes { id: \"u1\" update { add_score: 1 next: \"s3\" } }\n"
    "nodes { id: \"s3\" send { channel: \"log\" params { name: \"message\" value: \"three\" }"
    " next: \"done\" } }\n"
    "nodes { id: \"done\" exit { reason: \"finished\" } }\n";

static nt_test_redis_t redis;
static nt_test_daemon_t d1, d2;
static char *work_dir;

static int teardown(void **state)
{
    (void)state;
    nt_test_daemon_stop(&d1);
    nt_test_daemon_stop(&d2);
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

static int split_evenly(void *arg)
{
    (void)arg;
    int a = ft_owned(&d1, NULL), b = ft_owned(&d2, NULL);
    if (a > 0 && b > 0 && a + b == PARTS)
        return 1;
    ft_sleep_ms(100);
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
    const char *a, *b;
    long want;
} lines_arg_t;

static int lines_reached(void *arg)
{
    lines_arg_t *l = arg;
    if (count_lines(l->a) + count_lines(l->b) >= l->want)
        return 1;
    ft_sleep_ms(50);
    return 0;
}

static void test_two_workers_kill9_of_one_survivor_takes_over_and_runs_end_once(void **state)
{
    (void)state;
    unsigned seed = ft_seed("test_two_workers");
    srandom(seed);

    assert_int_equal(nt_test_redis_start(&redis), 0);
    work_dir = nt_test_tmpdir("nt-two");
    assert_non_null(work_dir);
    char log1[512], log2[512], lease[16];
    snprintf(log1, sizeof(log1), "%s/log-w1.jsonl", work_dir);
    snprintf(log2, sizeof(log2), "%s/log-w2.jsonl", work_dir);
    snprintf(lease, sizeof(lease), "%d", LEASE_MS);
    char *addr = nt_test_redis_addr(&redis);
    const char *extra1[] = {"--worker-id", "w1", "--time-scale", "720", "--lease-ms", lease,
                            "--partitions", "64", "--channel.log.path", log1, NULL};
    const char *extra2[] = {"--worker-id", "w2", "--time-scale", "720", "--lease-ms", lease,
                            "--partitions", "64", "--channel.log.path", log2, NULL};
    int rc1 = nt_test_daemon_start(&d1, addr, extra1);
    int rc2 = rc1 == 0 ? nt_test_daemon_start(&d2, addr, extra2) : -1;
    free(addr);
    assert_int_equal(rc1, 0);
    assert_int_equal(rc2, 0);

    /* Problems that do not stop the test are collected and reported at the end, so that one
     * run tells about every guarantee. */
    char problems[2048] = "";
    size_t plen = 0;
    if (nt_test_wait_until(split_evenly, NULL, 20000) != 0) {
        plen += (size_t)snprintf(problems + plen, sizeof(problems) - plen,
                                 "the workers did not split the %d partitions within 20 s: w1 "
                                 "owns %d, w2 owns %d, the rest nobody; ",
                                 PARTS, ft_owned(&d1, NULL), ft_owned(&d2, NULL));
        printf("PROBLEM: %s\n", problems);
    }
    printf("split: w1 owns %d, w2 owns %d\n", ft_owned(&d1, NULL), ft_owned(&d2, NULL));

    assert_int_equal(ft_publish_plan(&d1, work_dir, "pair", plan_text), 0);
    assert_int_equal(ft_enrol(&d1, "pair", "t", 0, LEADS), LEADS);

    /* Mid-way, while the second messages are being dispatched: after a random number of
     * them were logged. */
    long at = LEADS + 100 + random() % (LEADS - 200);
    lines_arg_t la = {log1, log2, at};
    if (nt_test_wait_until(lines_reached, &la, 60000) != 0)
        fail_msg("%ld messages were not logged within 60 s (%ld lines)", at,
                 count_lines(log1) + count_lines(log2));
    int dead_owned = ft_owned(&d2, NULL);
    nt_test_daemon_signal(&d2, SIGKILL);
    int64_t killed = ft_mono_ms();
    ft_stats_t st;
    ft_get_stats(&d1, "pair", "finished", &st);
    printf("SIGKILL w2 (owning %d partitions) once %ld messages were logged; then %lld runs "
           "ended, %ld lines logged\n",
           dead_owned, at, st.exits_all, count_lines(log1) + count_lines(log2));
    fflush(stdout);
    assert_int_equal(nt_test_daemon_wait(&d2, 10000), 128 + SIGKILL);

    /* Takeover: poll the survivor every 100 ms. */
    int64_t took = -1;
    while (ft_mono_ms() - killed < 30000) {
        if (ft_owned(&d1, NULL) == PARTS) {
            took = ft_mono_ms() - killed;
            break;
        }
        ft_sleep_ms(100);
    }
    printf("takeover: w1 owned all %d partitions %lld ms after the kill (limit %d ms)\n", PARTS,
           (long long)took, LEASE_MS + 1000);
    fflush(stdout);

    ft_expect_runs_ended(&d1, &redis, PARTS, "pair", "t", "finished", LEADS, 90000, seed, NULL);

    nt_test_daemon_stop(&d1);
    ft_log_t lg;
    const char *paths[] = {log1, log2};
    assert_int_equal(ft_check_log(paths, 2, "t", LEADS, 3, &lg), 0);
    printf("log: %ld lines over both files, %ld ids in both files (in flight at the kill), "
           "%ld twice in one file, %d leads without exactly 3 distinct messages\n",
           lg.lines, lg.dup_cross_file, lg.dup_same_file, lg.leads_wrong);
    if (lg.dup_same_file != 0 || lg.leads_wrong != 0 || lg.bad_lines != 0 || lg.foreign != 0)
        fail_msg("log channel: %ld lines, %ld duplicates within a file, %d leads wrong, %ld bad "
                 "lines, %ld foreign; first: %s; seed %u",
                 lg.lines, lg.dup_same_file, lg.leads_wrong, lg.bad_lines, lg.foreign,
                 lg.first_bad, seed);
    /* A message is logged twice only when it was handed to the channel but not recorded as
     * dispatched when w2 died: at most a batch per partition it owned. */
    assert_true(lg.dup_cross_file <= (long)dead_owned * 256);

    if (took < 0 || took > LEASE_MS + 1000)
        plen += (size_t)snprintf(problems + plen, sizeof(problems) - plen,
                                 "the survivor owned all %d partitions only %lld ms after the "
                                 "kill (-1: not in 30 s); the limit is the lease period plus "
                                 "1 s, %d ms; ",
                                 PARTS, (long long)took, LEASE_MS + 1000);
    if (plen > 0)
        fail_msg("%sseed %u", problems, seed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_two_workers_kill9_of_one_survivor_takes_over_and_runs_end_once, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
