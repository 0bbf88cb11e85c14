/* End to end: --time-start (with --time-scale) runs plan time from a fixed instant, so that a
 * plan with fixed dates behaves the same whatever day it is run (the demo's clock). */
#include "api_util.h"

#define START_MS 1795420800000LL /* 2026-11-23T08:00Z */
#define DAY_MS 86400000LL

/* A date 12 plan hours after the start: in the past by the real calendar once this test runs
 * after 2026-11-23, in the future on the daemon's clock. */
static const char plan_textpb[] =
    "id: \"ts_show\" name: \"time-start\" start: \"until\"\n"
    "nodes { id: \"until\" wait { date: \"2026-11-23T20:00Z\" next: \"done\" } }\n"
    "nodes { id: \"done\" exit { reason: \"after_the_date\" } }\n";

static int setup(void **state)
{
    (void)state;
    /* an hour of plan time per real second: 12 plan hours take 12 s */
    static const char *const extra[] = {"--time-start", "2026-11-23T08:00Z", "--time-scale",
                                        "3600", NULL};
    return api_setup(extra);
}

static void test_time_start_runs_plan_time_from_the_instant(void **state)
{
    json_t *l, *tl, *e;
    size_t i;

    (void)state;
    publish_textpb(plan_textpb, 0);
    create_lead("{\"id\":\"ts-1\",\"attributes\":{\"timezone\":\"Europe/Berlin\"}}");
    enrol_lead("ts-1", "ts_show");

    /* Waiting: by the daemon's clock the date is hours ahead (by the real one it is past, and
     * the run would have ended at once). */
    wait_lead_run("ts-1", "ts_show", "until", "active");
    sleep(1);
    wait_lead_run("ts-1", "ts_show", "until", "active");

    /* Every stamp on the timeline is plan time: 23 November 2026, not today. */
    l = lead_get("ts-1");
    assert_non_null(l);
    tl = json_object_get(l, "timeline");
    assert_true(json_array_size(tl) > 0);
    json_array_foreach(tl, i, e)
    {
        json_int_t at = json_integer_value(json_object_get(e, "at"));
        if (at < START_MS || at > START_MS + DAY_MS)
            fail_msg("timeline entry at %lld, not on 2026-11-23", (long long)at);
    }
    json_decref(l);

    /* 12 plan hours are 12 real seconds: then the date has come and the run ends. */
    {
        lead_run_t w = {"ts-1", "ts_show", NULL, "done"};
        if (nt_test_wait_until(lead_run_is, &w, 30000) != 0)
            fail_msg("the run did not end once plan time reached the date");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_start_runs_plan_time_from_the_instant),
    };
    return cmocka_run_group_tests(tests, setup, api_teardown);
}
