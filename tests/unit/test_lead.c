/* Unit: the in-memory lead (lead.c), in particular nt_lead_copy's packed copy, which the worker
 * keeps per message and the engine then changes like any lead (run under the sanitizers, a
 * string freed from inside the block would be an invalid free). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lead.h"

static void fill(nt_lead_t *l)
{
    assert_int_equal(nt_lead_init(l, "lead-1"), 0);
    assert_int_equal(nt_lead_set(l, "email", "ana@example.com"), 0);
    assert_int_equal(nt_lead_set(l, "_score", "40"), 0);
    assert_int_equal(nt_lead_set(l, "_stage", "mql"), 0);
    assert_int_equal(nt_lead_set(l, "e:email.opened", "1795000000000"), 0);
    assert_int_equal(nt_lead_set(l, "timezone", "Europe/Berlin"), 0);
    assert_int_equal(nt_lead_set(l, "empty", ""), 0);
}

static void test_lead_copy_is_equal_and_independent(void **state)
{
    nt_lead_t a, b;

    (void)state;
    fill(&a);
    assert_int_equal(nt_lead_copy(&b, &a), 0);
    assert_string_equal(b.id, "lead-1");
    assert_int_equal(b.nfields, a.nfields);
    for (size_t i = 0; i < a.nfields; i++) {
        assert_string_equal(b.fields[i].key, a.fields[i].key);
        assert_string_equal(b.fields[i].value, a.fields[i].value);
        assert_ptr_not_equal(b.fields[i].value, a.fields[i].value);
    }
    assert_int_equal(nt_lead_score(&b), 40);
    assert_int_equal(nt_lead_seen_ms(&b, "email.opened"), 1795000000000LL);
    assert_string_equal(nt_lead_tz(&b), "Europe/Berlin");
    assert_string_equal(nt_lead_get(&b, "empty"), "");

    /* the original goes first: the copy owns everything it points to */
    nt_lead_fini(&a);
    assert_string_equal(nt_lead_get(&b, "email"), "ana@example.com");
    nt_lead_fini(&b);
}

static void test_lead_copy_changes_like_any_lead(void **state)
{
    nt_lead_t a, b;
    char name[32], value[32];

    (void)state;
    fill(&a);
    assert_int_equal(nt_lead_copy(&b, &a), 0);
    nt_lead_fini(&a);

    /* replace a value in the block, remove a field in the block, then a field set later */
    assert_int_equal(nt_lead_set(&b, "_score", "55"), 0);
    assert_int_equal(nt_lead_score(&b), 55);
    assert_int_equal(nt_lead_set(&b, "_score", "60"), 0); /* a heap value replaced */
    assert_int_equal(nt_lead_score(&b), 60);
    assert_int_equal(nt_lead_set(&b, "email", NULL), 0);
    assert_null(nt_lead_get(&b, "email"));
    assert_int_equal(b.nfields, 5);
    /* grow past the copy's exact capacity */
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "attr_%d", i);
        snprintf(value, sizeof(value), "value %d", i);
        assert_int_equal(nt_lead_set(&b, name, value), 0);
    }
    assert_int_equal(b.nfields, 45);
    assert_string_equal(nt_lead_get(&b, "attr_39"), "value 39");
    assert_string_equal(nt_lead_get(&b, "_stage"), "mql");
    assert_int_equal(nt_lead_set(&b, "attr_0", NULL), 0);
    assert_int_equal(nt_lead_set(&b, "timezone", NULL), 0);
    assert_string_equal(nt_lead_tz(&b), "UTC");
    nt_lead_fini(&b);
    nt_lead_fini(&b); /* twice is safe */
}

static void test_lead_copy_of_an_empty_lead(void **state)
{
    nt_lead_t a, b;

    (void)state;
    assert_int_equal(nt_lead_init(&a, ""), 0);
    assert_int_equal(nt_lead_copy(&b, &a), 0);
    assert_string_equal(b.id, "");
    assert_int_equal(b.nfields, 0);
    assert_int_equal(nt_lead_set(&b, "role", "cto"), 0);
    assert_string_equal(nt_lead_get(&b, "role"), "cto");
    nt_lead_fini(&a);
    nt_lead_fini(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lead_copy_is_equal_and_independent),
        cmocka_unit_test(test_lead_copy_changes_like_any_lead),
        cmocka_unit_test(test_lead_copy_of_an_empty_lead),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
