/* Unit tests for orchestrator/clock.c: plan time versus real time. Bounds are loose on purpose
 * (a loaded CI machine may oversleep by a lot); they check direction and order of magnitude. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "clock.h"

#define DAY_MS 86400000LL

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void test_clock_before_init_is_real_time(void **state)
{
    int64_t real = nt_real_ms();
    int64_t plan = nt_now_ms();

    assert_true(plan >= real);
    assert_true(plan - real < 1000);
    assert_int_equal(nt_clock_real_delay_ms(plan + 5000) > 4000, 1);
}

static void test_clock_scale_1_tracks_real_time(void **state)
{
    int64_t diff;

    nt_clock_init(1, 0);
    diff = nt_now_ms() - nt_real_ms();
    assert_true(diff >= -1000 && diff <= 1000);
    /* 2026 or later, in milliseconds. */
    assert_true(nt_now_ms() > 1767225600000LL);
    sleep_ms(20);
    diff = nt_now_ms() - nt_real_ms();
    assert_true(diff >= -1000 && diff <= 1000);
}

static void test_clock_scale_86400_runs_a_day_per_second(void **state)
{
    int64_t plan0, plan1, mono0, mono1, real_elapsed, plan_elapsed;

    nt_clock_init(86400, 0);
    mono0 = nt_mono_ms();
    plan0 = nt_now_ms();
    sleep_ms(50);
    plan1 = nt_now_ms();
    mono1 = nt_mono_ms();
    real_elapsed = mono1 - mono0;
    plan_elapsed = plan1 - plan0;
    assert_true(real_elapsed >= 50);
    /* 50 ms of real time is 72 minutes of plan time; allow for oversleeping up to 10 s and
     * for the two clocks being read a few milliseconds apart. */
    assert_true(plan_elapsed >= 49 * 86400LL);
    assert_true(plan_elapsed <= (real_elapsed + 10) * 86400LL);
    assert_true(plan_elapsed < 10000 * 86400LL);
    /* Plan time started at real time, so it is ahead of real time now, by under a day. */
    assert_true(plan1 > nt_real_ms());
    assert_true(plan1 - nt_real_ms() < DAY_MS);
    nt_clock_init(1, 0);
}

/* A start instant: plan time begins there (the demo's plans have fixed dates), runs at the
 * scale, and timer delays follow it; real time is untouched. */
static void test_clock_start_instant(void **state)
{
    const int64_t start = 1795420800000LL; /* 2026-11-23T08:00Z */
    int64_t plan, d;

    nt_clock_init(86400, start);
    plan = nt_now_ms();
    assert_true(plan >= start && plan < start + DAY_MS);
    assert_true(llabs(nt_real_ms() - (int64_t)time(NULL) * 1000) < 2000);
    sleep_ms(20);
    assert_true(nt_now_ms() >= start + 19 * 86400LL);
    d = nt_clock_real_delay_ms(nt_now_ms() + DAY_MS);
    assert_true(d > 500 && d <= 1000);

    /* At scale 1 plan time runs at real speed from the start instant. */
    nt_clock_init(1, start);
    plan = nt_now_ms();
    assert_true(plan >= start && plan - start < 1000);
    d = nt_clock_real_delay_ms(plan + 60000);
    assert_true(d > 59000 && d <= 60000);

    nt_clock_init(1, -5); /* nonsense start: now */
    assert_true(llabs(nt_now_ms() - nt_real_ms()) <= 1000);
    nt_clock_init(1, 0);
}

static void test_clock_real_delay_ms(void **state)
{
    int64_t now, d;

    nt_clock_init(1, 0);
    now = nt_now_ms();
    assert_int_equal(nt_clock_real_delay_ms(now - 1000), 0);
    assert_int_equal(nt_clock_real_delay_ms(INT64_MIN), 0);
    d = nt_clock_real_delay_ms(now + 60000);
    assert_true(d > 59000 && d <= 60000);
    assert_true(nt_clock_real_delay_ms(INT64_MAX) > 0);

    nt_clock_init(86400, 0);
    now = nt_now_ms();
    assert_int_equal(nt_clock_real_delay_ms(now - DAY_MS), 0);
    /* One plan day ahead is about one real second (less the time since `now` was read). */
    d = nt_clock_real_delay_ms(now + DAY_MS);
    assert_true(d > 0 && d <= 1000);
    assert_true(d > 500);
    /* Rounds up: 1,000,000 plan ms are 11.57 real ms, so 12 (or less, as plan time moves on). */
    d = nt_clock_real_delay_ms(nt_now_ms() + 1000000);
    assert_true(d >= 1 && d <= 12);
    assert_true(nt_clock_real_delay_ms(INT64_MAX) > 0);

    /* A timer armed with the delay fires when plan time has reached its instant. */
    now = nt_now_ms() + 3 * 86400;
    sleep_ms((long)nt_clock_real_delay_ms(now));
    assert_true(nt_now_ms() >= now);

    nt_clock_init(0.5, 0); /* slower than real time: 1 plan second takes 2 real seconds */
    now = nt_now_ms();
    d = nt_clock_real_delay_ms(now + 1000);
    assert_true(d > 1900 && d <= 2000);

    nt_clock_init(-3, 0); /* nonsense scale: real time */
    now = nt_now_ms();
    assert_true(now - nt_real_ms() <= 1000 && nt_real_ms() - now <= 1000);
    nt_clock_init(1, 0);
}

static void test_clock_mono_is_monotonic(void **state)
{
    int64_t a = nt_mono_ms();

    sleep_ms(5);
    assert_true(nt_mono_ms() >= a + 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock_before_init_is_real_time),
        cmocka_unit_test(test_clock_scale_1_tracks_real_time),
        cmocka_unit_test(test_clock_scale_86400_runs_a_day_per_second),
        cmocka_unit_test(test_clock_real_delay_ms),
        cmocka_unit_test(test_clock_start_instant),
        cmocka_unit_test(test_clock_mono_is_monotonic),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
