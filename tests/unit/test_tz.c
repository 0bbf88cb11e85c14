/* Unit tests for orchestrator/tz.c: calendar arithmetic in the lead's zone through ICU.
 * Every expected instant was computed by hand and checked with `TZ=<zone> date -d ... +%s`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tz.h"

#define S(x) ((int64_t)(x) * 1000) /* seconds since the epoch -> ms */

#define MON_FRI 0x3Eu /* bits 1..5 */
#define SUNDAY 0x80u  /* bit 7 */

/* Saturday 2026-03-07 09:00 EST (America/New_York); DST starts Sunday 2026-03-08 02:00. */
#define NY_SAT_0900 S(1772892000)
/* Sunday 2026-03-08 09:00 EDT. */
#define NY_SUN_0900 S(1772974800)

static void test_tz_add_day_across_spring_forward_keeps_local_time(void **state)
{
    int64_t out = 0;

    assert_int_equal(nt_tz_add("America/New_York", NY_SAT_0900, 1, 0, 0, 0, &out), NT_OK);
    assert_int_equal(out, NY_SUN_0900);
    assert_int_equal(out - NY_SAT_0900, S(23 * 3600));
}

static void test_tz_add_day_across_fall_back_keeps_local_time(void **state)
{
    int64_t from = S(1792825200); /* Saturday 2026-10-24 09:00 CEST */
    int64_t out = 0;

    assert_int_equal(nt_tz_add("Europe/Berlin", from, 1, 0, 0, 0, &out), NT_OK);
    assert_int_equal(out, S(1792915200)); /* Sunday 2026-10-25 09:00 CET */
    assert_int_equal(out - from, S(25 * 3600));
}

static void test_tz_add_hours_is_elapsed_time_across_dst(void **state)
{
    int64_t out = 0;

    /* 24 hours after Saturday 09:00 EST is Sunday 10:00 EDT, not 09:00. */
    assert_int_equal(nt_tz_add("America/New_York", NY_SAT_0900, 0, 24, 0, 0, &out), NT_OK);
    assert_int_equal(out, NY_SAT_0900 + S(86400));
    assert_int_equal(nt_tz_add("America/New_York", NY_SAT_0900, 0, 0, 90, 30, &out), NT_OK);
    assert_int_equal(out, NY_SAT_0900 + S(90 * 60 + 30));
    /* Days first (calendar), then elapsed time: Sunday 09:00 EDT + 2 h. */
    assert_int_equal(nt_tz_add("America/New_York", NY_SAT_0900, 1, 2, 0, 0, &out), NT_OK);
    assert_int_equal(out, NY_SUN_0900 + S(7200));
}

static void test_tz_add_day_into_gap_moves_forward(void **state)
{
    int64_t out = 0;

    /* Saturday 2026-03-07 02:30 EST + 1 day: 02:30 does not exist on Sunday -> 03:30 EDT. */
    assert_int_equal(nt_tz_add("America/New_York", S(1772868600), 1, 0, 0, 0, &out), NT_OK);
    assert_int_equal(out, S(1772955000));
}

static void test_tz_add_day_into_overlap_takes_earlier(void **state)
{
    int64_t out = 0;

    /* Saturday 2026-10-31 01:30 EDT + 1 day: 01:30 happens twice on Sunday; EDT wins. */
    assert_int_equal(nt_tz_add("America/New_York", S(1793424600), 1, 0, 0, 0, &out), NT_OK);
    assert_int_equal(out, S(1793511000));
}

static void test_tz_add_across_month_and_year_end(void **state)
{
    int64_t out = 0;

    /* 2026-12-31 09:00 JST + 1 day = 2027-01-01 09:00 JST; + 60 days = 2027-03-01. */
    assert_int_equal(nt_tz_add("Asia/Tokyo", S(1798675200), 1, 0, 0, 0, &out), NT_OK);
    assert_int_equal(out, S(1798675200 + 86400));
    assert_int_equal(nt_tz_add("Asia/Tokyo", S(1798675200), 60, 0, 0, 0, &out), NT_OK);
    assert_int_equal(out, S(1798675200 + 60 * 86400));
}

static void test_tz_add_rejects_absurd_input(void **state)
{
    int64_t out = 0;

    assert_int_equal(nt_tz_add("UTC", NY_SAT_0900, 0xFFFFFFFFu, 0, 0, 0, &out), NT_EINVAL);
    assert_int_equal(nt_tz_add("UTC", INT64_MAX, 1, 0, 0, 0, &out), NT_EINVAL);
    assert_int_equal(nt_tz_add("UTC", INT64_MIN, 1, 0, 0, 0, &out), NT_EINVAL);
    assert_int_equal(nt_tz_add("UTC", NY_SAT_0900, 1, 0, 0, 0, NULL), NT_EINVAL);
}

static void test_tz_window_inside_returns_now(void **state)
{
    int64_t from = S(1773064800); /* Monday 2026-03-09 10:00 EDT */
    int64_t out = 0;

    assert_int_equal(nt_tz_next_window("America/New_York", from, 9 * 60, 17 * 60, MON_FRI, &out),
                     NT_OK);
    assert_int_equal(out, from);
    /* 0 means every day. */
    assert_int_equal(nt_tz_next_window("America/New_York", from, 9 * 60, 17 * 60, 0, &out), NT_OK);
    assert_int_equal(out, from);
    /* The start is inside, the end is not. */
    assert_int_equal(nt_tz_next_window("America/New_York", S(1773061200), 9 * 60, 17 * 60,
                                       MON_FRI, &out),
                     NT_OK);
    assert_int_equal(out, S(1773061200));
    /* An end of 24:00 takes in the day's last minute. */
    assert_int_equal(nt_tz_next_window("UTC", S(1777939140) /* Mon 2026-05-04 23:59 */, 22 * 60,
                                       1440, 0, &out),
                     NT_OK);
    assert_int_equal(out, S(1777939140));
}

static void test_tz_window_later_today(void **state)
{
    int64_t out = 0;

    /* Monday 2026-03-09 07:00 EDT -> 09:00 EDT the same day. */
    assert_int_equal(nt_tz_next_window("America/New_York", S(1773054000), 9 * 60, 17 * 60,
                                       MON_FRI, &out),
                     NT_OK);
    assert_int_equal(out, S(1773061200));
}

static void test_tz_window_after_end_is_tomorrow(void **state)
{
    int64_t out = 0;

    /* Monday 2026-05-04 17:00 UTC: the window [09:00, 17:00) has closed; Tuesday 09:00. */
    assert_int_equal(nt_tz_next_window("UTC", S(1777885200 + 8 * 3600), 9 * 60, 17 * 60,
                                       MON_FRI, &out),
                     NT_OK);
    assert_int_equal(out, S(1777885200 + 86400));
}

static void test_tz_window_next_weekday_skips_weekend(void **state)
{
    int64_t out = 0;

    /* Friday 2026-03-13 18:00 JST -> Monday 2026-03-16 09:00 JST. */
    assert_int_equal(nt_tz_next_window("Asia/Tokyo", S(1773392400), 9 * 60, 17 * 60, MON_FRI,
                                       &out),
                     NT_OK);
    assert_int_equal(out, S(1773619200));
    /* Friday 2026-03-06 18:00 PST -> Monday 2026-03-09 09:00 PDT, across the DST weekend. */
    assert_int_equal(nt_tz_next_window("America/Los_Angeles", S(1772848800), 9 * 60, 17 * 60,
                                       MON_FRI, &out),
                     NT_OK);
    assert_int_equal(out, S(1773072000));
}

static void test_tz_window_start_in_dst_gap(void **state)
{
    int64_t out = 0;

    /* On Sunday 2026-03-08 New York jumps from 02:00 EST to 03:00 EDT. A window starting at
     * 02:30 opens at 03:00 EDT: the first instant whose local time is inside [02:30, 05:00). */
    assert_int_equal(nt_tz_next_window("America/New_York", S(1772946000) /* 00:00 EST */, 150,
                                       300, 0, &out),
                     NT_OK);
    assert_int_equal(out, S(1772953200));
    /* Already inside after the jump. */
    assert_int_equal(nt_tz_next_window("America/New_York", S(1772953800) /* 03:10 EDT */, 150,
                                       300, 0, &out),
                     NT_OK);
    assert_int_equal(out, S(1772953800));
    /* A Sunday-only window that lies wholly inside the gap does not exist that Sunday: the
     * next one is a week later (from Sunday 2026-03-01 04:00 EST to 2026-03-15 02:00 EDT). */
    assert_int_equal(nt_tz_next_window("America/New_York", S(1772355600), 120, 165, SUNDAY,
                                       &out),
                     NT_OK);
    assert_int_equal(out, S(1773554400));
}

static void test_tz_window_reopens_in_fall_back_overlap(void **state)
{
    int64_t out = 0;

    /* Sunday 2026-11-01 01:45 EDT, window [01:00, 01:30): at 02:00 EDT the clock goes back to
     * 01:00 EST, which is inside the window again. */
    assert_int_equal(nt_tz_next_window("America/New_York", S(1793511900), 60, 90, 0, &out),
                     NT_OK);
    assert_int_equal(out, S(1793512800));
}

static void test_tz_window_bad_window_is_einval(void **state)
{
    int64_t out = 0;
    const char *ny = "America/New_York";

    assert_int_equal(nt_tz_next_window(ny, NY_SAT_0900, 600, 600, 0, &out), NT_EINVAL);
    assert_int_equal(nt_tz_next_window(ny, NY_SAT_0900, 700, 600, 0, &out), NT_EINVAL);
    assert_int_equal(nt_tz_next_window(ny, NY_SAT_0900, -1, 600, 0, &out), NT_EINVAL);
    assert_int_equal(nt_tz_next_window(ny, NY_SAT_0900, 0, 1441, 0, &out), NT_EINVAL);
    assert_int_equal(nt_tz_next_window(ny, NY_SAT_0900, 0, 600, 0x01u, &out), NT_EINVAL);
    assert_int_equal(nt_tz_next_window(ny, NY_SAT_0900, 0, 600, 0x100u, &out), NT_EINVAL);
    assert_int_equal(nt_tz_next_window(ny, NY_SAT_0900, 0, 600, 0, NULL), NT_EINVAL);
    assert_int_equal(nt_tz_next_window(ny, INT64_MAX, 0, 600, 0, &out), NT_EINVAL);
    /* The widest window is fine. */
    assert_int_equal(nt_tz_next_window(ny, NY_SAT_0900, 0, 1440, 0xFEu, &out), NT_OK);
    assert_int_equal(out, NY_SAT_0900);
}

static void test_tz_local_to_utc_plain(void **state)
{
    int64_t out = 0;

    assert_int_equal(nt_tz_local_to_utc("America/New_York", "2026-03-07T09:00", &out), NT_OK);
    assert_int_equal(out, NY_SAT_0900);
    assert_int_equal(nt_tz_local_to_utc("Asia/Tokyo", "2026-03-16T09:00", &out), NT_OK);
    assert_int_equal(out, S(1773619200));
    assert_int_equal(nt_tz_local_to_utc("Asia/Tokyo", "2028-02-29T00:00", &out), NT_OK);
    assert_int_equal(out, S(1835362800)); /* 2028-02-28T15:00Z */
}

static void test_tz_local_to_utc_z_suffix(void **state)
{
    int64_t out = 0;

    assert_int_equal(nt_tz_local_to_utc("America/New_York", "2026-05-04T09:00Z", &out), NT_OK);
    assert_int_equal(out, S(1777885200));
    /* The zone is not consulted at all. */
    assert_int_equal(nt_tz_local_to_utc("Not/A_Zone", "2026-05-04T09:00Z", &out), NT_OK);
    assert_int_equal(out, S(1777885200));
    assert_int_equal(nt_tz_local_to_utc(NULL, "1970-01-01T00:00Z", &out), NT_OK);
    assert_int_equal(out, 0);
    assert_int_equal(nt_tz_local_to_utc(NULL, "2000-03-01T00:00Z", &out), NT_OK);
    assert_int_equal(out, S(951868800));
}

static void test_tz_local_to_utc_in_gap_moves_forward(void **state)
{
    int64_t out = 0;

    assert_int_equal(nt_tz_local_to_utc("America/New_York", "2026-03-08T02:30", &out), NT_OK);
    assert_int_equal(out, S(1772955000)); /* 03:30 EDT */
    assert_int_equal(nt_tz_local_to_utc("Europe/Berlin", "2026-03-29T02:30", &out), NT_OK);
    assert_int_equal(out, S(1774747800)); /* 03:30 CEST */
}

static void test_tz_local_to_utc_in_overlap_takes_earlier(void **state)
{
    int64_t out = 0;

    assert_int_equal(nt_tz_local_to_utc("America/New_York", "2026-11-01T01:30", &out), NT_OK);
    assert_int_equal(out, S(1793511000)); /* 01:30 EDT, not 01:30 EST (1793514600) */
}

static void test_tz_local_to_utc_malformed(void **state)
{
    static const char *bad[] = {
        "",
        "2026-13-01T09:00",
        "2026-00-01T09:00",
        "2026-02-30T09:00",
        "2026-02-29T09:00", /* 2026 is not a leap year */
        "2100-02-29T09:00",
        "2026-04-31T09:00",
        "2026-01-00T09:00",
        "2026-01-01T24:00",
        "2026-01-01T09:60",
        "2026-01-01 09:00",
        "2026-01-01T09:00:00",
        "2026-01-01T09:00+01:00",
        "2026-01-01T09:00z",
        "2026-01-01T09:00ZZ",
        "2026-1-01T09:00",
        "2026-01-01T9:00",
        " 2026-01-01T09:00",
        "2026-01-01T09:00 ",
        "-026-01-01T09:00",
        "+2026-01-01T09:00",
        "2026-01-01T-9:00",
        "0000-01-01T00:00",
        "1899-12-31T23:59",
        "abcd-ef-ghTij:kl",
        "garbage",
        "2026-01-01",
        "T",
        "2026-01-01T09:00\n",
        "2026-01-01T09:0\xff",
        "2026-01-01T09:00Zxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    };
    char overlong[4096];
    int64_t out = 12345;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (nt_tz_local_to_utc("America/New_York", bad[i], &out) != NT_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    memset(overlong, '9', sizeof overlong - 1);
    overlong[sizeof overlong - 1] = '\0';
    assert_int_equal(nt_tz_local_to_utc("America/New_York", overlong, &out), NT_EINVAL);
    assert_int_equal(nt_tz_local_to_utc("America/New_York", NULL, &out), NT_EINVAL);
    assert_int_equal(nt_tz_local_to_utc("America/New_York", "2026-01-01T09:00", NULL), NT_EINVAL);
    assert_int_equal(out, 12345);
}

static void test_tz_unknown_zone_falls_back_to_utc_and_says_so(void **state)
{
    static const char *unknown[] = {"Mars/Olympus_Mons", "", "Etc/Unknown", "GMT+05:00",
                                    "America/New York", "../../etc/passwd", NULL};
    int64_t from = S(1777885200); /* Monday 2026-05-04 09:00Z */
    int64_t out;

    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        out = 0;
        assert_int_equal(nt_tz_add(unknown[i], from, 1, 1, 0, 0, &out), NT_ENOTFOUND);
        assert_int_equal(out, from + S(86400 + 3600));
        out = 0;
        assert_int_equal(nt_tz_local_to_utc(unknown[i], "2026-05-04T09:00", &out), NT_ENOTFOUND);
        assert_int_equal(out, from);
        out = 0;
        /* 07:00Z on Monday: a 09:00-17:00 window opens at 09:00Z. */
        assert_int_equal(
            nt_tz_next_window(unknown[i], from - S(7200), 9 * 60, 17 * 60, MON_FRI, &out),
            NT_ENOTFOUND);
        assert_int_equal(out, from);
    }
    /* A bad window is still reported as such. */
    assert_int_equal(nt_tz_next_window("Mars/Olympus_Mons", from, 9, 9, 0, &out), NT_EINVAL);
    /* A known zone after an unknown one is not confused with it. */
    assert_int_equal(nt_tz_local_to_utc("America/New_York", "2026-03-07T09:00", &out), NT_OK);
    assert_int_equal(out, NY_SAT_0900);
}

static void test_tz_valid(void **state)
{
    char overlong[300];

    assert_true(nt_tz_valid("America/New_York"));
    assert_true(nt_tz_valid("Europe/Berlin"));
    assert_true(nt_tz_valid("Asia/Kolkata"));
    assert_true(nt_tz_valid("Asia/Calcutta")); /* alias */
    assert_true(nt_tz_valid("US/Eastern"));    /* alias */
    assert_true(nt_tz_valid("UTC"));
    assert_true(nt_tz_valid("Etc/GMT+5"));
    assert_true(nt_tz_valid("America/Argentina/Buenos_Aires"));
    assert_false(nt_tz_valid(NULL));
    assert_false(nt_tz_valid(""));
    assert_false(nt_tz_valid("Mars/Olympus_Mons"));
    assert_false(nt_tz_valid("Etc/Unknown"));
    assert_false(nt_tz_valid("GMT+05:00"));
    assert_false(nt_tz_valid("America/New York"));
    assert_false(nt_tz_valid("Europe/Berlin\n"));
    assert_false(nt_tz_valid("\xc3\xa9"));
    memset(overlong, 'A', sizeof overlong - 1);
    overlong[sizeof overlong - 1] = '\0';
    assert_false(nt_tz_valid(overlong));
}

static void test_tz_parse_hhmm(void **state)
{
    static const char *bad[] = {"9:00",  "24:01", "12:60", "ab:cd", "",      "09:00 ", " 09:00",
                                "0900",  "09-00", "25:00", "-1:00", "09:0",  "09:000", "+9:00",
                                "09:+1", "1:2:3", ":",     "99:99", "09:00\n"};

    assert_int_equal(nt_tz_parse_hhmm("00:00"), 0);
    assert_int_equal(nt_tz_parse_hhmm("09:00"), 540);
    assert_int_equal(nt_tz_parse_hhmm("09:30"), 570);
    assert_int_equal(nt_tz_parse_hhmm("17:45"), 1065);
    assert_int_equal(nt_tz_parse_hhmm("23:59"), 1439);
    assert_int_equal(nt_tz_parse_hhmm("24:00"), 1440);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (nt_tz_parse_hhmm(bad[i]) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(nt_tz_parse_hhmm(NULL), -1);
}

static void test_tz_cache_survives_many_zones_and_cleanup(void **state)
{
    static const char *zones[] = {"America/New_York", "Europe/Berlin", "Asia/Tokyo",
                                  "America/Los_Angeles", "UTC", "Australia/Sydney"};
    int64_t out = 0;

    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++)
            assert_int_equal(nt_tz_add(zones[i], NY_SAT_0900, 1, 0, 0, 0, &out), NT_OK);
        nt_tz_cleanup();
    }
    assert_int_equal(nt_tz_add("America/New_York", NY_SAT_0900, 1, 0, 0, 0, &out), NT_OK);
    assert_int_equal(out, NY_SUN_0900);
}

static int teardown_group(void **state)
{
    nt_tz_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tz_add_day_across_spring_forward_keeps_local_time),
        cmocka_unit_test(test_tz_add_day_across_fall_back_keeps_local_time),
        cmocka_unit_test(test_tz_add_hours_is_elapsed_time_across_dst),
        cmocka_unit_test(test_tz_add_day_into_gap_moves_forward),
        cmocka_unit_test(test_tz_add_day_into_overlap_takes_earlier),
        cmocka_unit_test(test_tz_add_across_month_and_year_end),
        cmocka_unit_test(test_tz_add_rejects_absurd_input),
        cmocka_unit_test(test_tz_window_inside_returns_now),
        cmocka_unit_test(test_tz_window_later_today),
        cmocka_unit_test(test_tz_window_after_end_is_tomorrow),
        cmocka_unit_test(test_tz_window_next_weekday_skips_weekend),
        cmocka_unit_test(test_tz_window_start_in_dst_gap),
        cmocka_unit_test(test_tz_window_reopens_in_fall_back_overlap),
        cmocka_unit_test(test_tz_window_bad_window_is_einval),
        cmocka_unit_test(test_tz_local_to_utc_plain),
        cmocka_unit_test(test_tz_local_to_utc_z_suffix),
        cmocka_unit_test(test_tz_local_to_utc_in_gap_moves_forward),
        cmocka_unit_test(test_tz_local_to_utc_in_overlap_takes_earlier),
        cmocka_unit_test(test_tz_local_to_utc_malformed),
        cmocka_unit_test(test_tz_unknown_zone_falls_back_to_utc_and_says_so),
        cmocka_unit_test(test_tz_valid),
        cmocka_unit_test(test_tz_parse_hhmm),
        cmocka_unit_test(test_tz_cache_survives_many_zones_and_cleanup),
    };

    return cmocka_run_group_tests(tests, NULL, teardown_group);
}
