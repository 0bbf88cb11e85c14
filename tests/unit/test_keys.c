/* Partitioning and key names: every key of one lead's transition shares one cluster slot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "keys.h"

/* The cluster slot of a key: crc16 of the hash tag between the first { and the next }. */
static unsigned slot(const char *key)
{
    const char *o = strchr(key, '{'), *c = o ? strchr(o + 1, '}') : NULL;

    if (o && c && c > o + 1)
        return nt_crc16(o + 1, (size_t)(c - o - 1)) % 16384;
    return nt_crc16(key, strlen(key)) % 16384;
}

static void test_crc16_matches_redis_cluster_reference(void **state)
{
    (void)state;
    /* The reference value from the Redis Cluster specification. */
    assert_int_equal(nt_crc16("123456789", 9), 0x31C3);
    assert_int_equal(nt_crc16("", 0), 0);
}

static void test_partition_is_stable_and_in_range(void **state)
{
    char id[32];

    (void)state;
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof(id), "lead-%d", i);
        unsigned p = nt_partition(id, 256);

        assert_true(p < 256);
        assert_int_equal(p, nt_partition(id, 256));
    }
    assert_int_equal(nt_partition("anything", 1), 0);
}

static void test_partitions_spread_leads_evenly(void **state)
{
    unsigned count[64] = {0};
    char id[32];

    (void)state;
    for (int i = 0; i < 64000; i++) {
        snprintf(id, sizeof(id), "lead-%06d", i);
        count[nt_partition(id, 64)]++;
    }
    for (int p = 0; p < 64; p++) {
        assert_true(count[p] > 700);  /* expected 1000 each */
        assert_true(count[p] < 1300);
    }
}

static void test_keys_of_one_transition_share_a_slot(void **state)
{
    char a[NT_KEY_MAX], b[NT_KEY_MAX], c[NT_KEY_MAX], t[NT_KEY_MAX], e[NT_KEY_MAX],
        o[NT_KEY_MAX], l[NT_KEY_MAX];
    unsigned p = nt_partition("ada@example.com", 256);

    (void)state;
    nt_key_lead(a, p, "ada@example.com");
    nt_key_run(b, p, "ada@example.com", "education_track");
    nt_key_hist(c, p, "ada@example.com");
    nt_key_part(t, p, "timers");
    nt_key_part(e, p, "events");
    nt_key_part(o, p, "outbox");
    nt_key_part(l, p, "lease");
    assert_int_equal(slot(a), slot(b));
    assert_int_equal(slot(a), slot(c));
    assert_int_equal(slot(a), slot(t));
    assert_int_equal(slot(a), slot(e));
    assert_int_equal(slot(a), slot(o));
    assert_int_equal(slot(a), slot(l));
}

static void test_key_layout_matches_design(void **state)
{
    char k[NT_KEY_MAX];

    (void)state;
    assert_string_equal(nt_key_lead(k, 7, "x"), "nt:{7}:lead:x");
    assert_string_equal(nt_key_run(k, 7, "x", "p"), "nt:{7}:run:x:p");
    assert_string_equal(nt_key_hist(k, 7, "x"), "nt:{7}:hist:x");
    assert_string_equal(nt_key_part(k, 7, "timers"), "nt:{7}:timers");
    assert_string_equal(nt_key_plan(k, "p", 3), "nt:plan:{p}:3");
    assert_string_equal(nt_key_plan_index(k, "p"), "nt:plan:{p}");
}

static void test_overlong_ids_are_truncated_not_overflowed(void **state)
{
    char id[1000], k[NT_KEY_MAX];

    (void)state;
    memset(id, 'a', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    nt_key_run(k, 1, id, id);
    assert_int_equal(strlen(k), NT_KEY_MAX - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_matches_redis_cluster_reference),
        cmocka_unit_test(test_partition_is_stable_and_in_range),
        cmocka_unit_test(test_partitions_spread_leads_evenly),
        cmocka_unit_test(test_keys_of_one_transition_share_a_slot),
        cmocka_unit_test(test_key_layout_matches_design),
        cmocka_unit_test(test_overlong_ids_are_truncated_not_overflowed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
