/* Conditions: attribute comparisons, score, stage, events seen, combinators, hostile depth. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cond.h"
#include "lead.h"

#define NOW 1700000000000LL

/* Every condition a test builds lives here and is freed after the test. */
static void *pool[256];
static size_t npool;

static void *take(void *p)
{
    assert_non_null(p);
    assert_true(npool < sizeof(pool) / sizeof(pool[0]));
    pool[npool++] = p;
    return p;
}

static int teardown(void **state)
{
    (void)state;
    while (npool > 0)
        free(pool[--npool]);
    return 0;
}

static Nt__Condition *cond_new(void)
{
    Nt__Condition *c = take(malloc(sizeof(*c)));

    nt__condition__init(c);
    return c;
}

static Nt__Condition *attr(const char *name, Nt__Op op, const char *value)
{
    Nt__AttrCmp *a = take(malloc(sizeof(*a)));
    Nt__Condition *c = cond_new();

    nt__attr_cmp__init(a);
    a->name = (char *)name;
    a->op = op;
    a->value = (char *)value;
    c->kind_case = NT__CONDITION__KIND_ATTR;
    c->attr = a;
    return c;
}

static Nt__Condition *always(int v)
{
    Nt__Condition *c = cond_new();

    c->kind_case = NT__CONDITION__KIND_ALWAYS;
    c->always = v;
    return c;
}

static Nt__Condition *group(int any, size_t n, Nt__Condition **of)
{
    Nt__Conditions *g = take(malloc(sizeof(*g)));
    Nt__Condition *c = cond_new();

    nt__conditions__init(g);
    g->n_of = n;
    g->of = of;
    c->kind_case = any ? NT__CONDITION__KIND_ANY : NT__CONDITION__KIND_ALL;
    c->all = g;
    return c;
}

static Nt__Condition *negate(Nt__Condition *inner)
{
    Nt__Condition *c = cond_new();

    c->kind_case = NT__CONDITION__KIND_NEGATE;
    c->negate = inner;
    return c;
}

static Nt__Condition *score(Nt__Op op, int64_t v)
{
    Nt__ScoreCmp *s = take(malloc(sizeof(*s)));
    Nt__Condition *c = cond_new();

    nt__score_cmp__init(s);
    s->op = op;
    s->value = v;
    c->kind_case = NT__CONDITION__KIND_SCORE;
    c->score = s;
    return c;
}

static Nt__Condition *stage(Nt__Op op, Nt__Stage st)
{
    Nt__StageCmp *s = take(malloc(sizeof(*s)));
    Nt__Condition *c = cond_new();

    nt__stage_cmp__init(s);
    s->op = op;
    s->stage = st;
    c->kind_case = NT__CONDITION__KIND_STAGE;
    c->stage = s;
    return c;
}

static Nt__Condition *seen(const char *type, uint32_t days, uint32_t hours)
{
    Nt__EventSeen *e = take(malloc(sizeof(*e)));
    Nt__Duration *d = take(malloc(sizeof(*d)));
    Nt__Condition *c = cond_new();

    nt__event_seen__init(e);
    nt__duration__init(d);
    d->days = days;
    d->hours = hours;
    e->type = (char *)type;
    e->within = d;
    c->kind_case = NT__CONDITION__KIND_EVENT_SEEN;
    c->event_seen = e;
    return c;
}

static void lead_with(nt_lead_t *l, ...)
{
    va_list ap;
    const char *k;

    assert_int_equal(nt_lead_init(l, "lead-1"), 0);
    va_start(ap, l);
    while ((k = va_arg(ap, const char *)) != NULL)
        assert_int_equal(nt_lead_set(l, k, va_arg(ap, const char *)), 0);
    va_end(ap);
}

static void test_cond_compare_every_op_on_strings(void **state)
{
    (void)state;
    assert_true(nt_cond_compare("Acme", NT__OP__EQ, "acme"));
    assert_false(nt_cond_compare("Acme", NT__OP__EQ, "acme inc"));
    assert_true(nt_cond_compare("Acme", NT__OP__NE, "Globex"));
    assert_false(nt_cond_compare("ACME", NT__OP__NE, "acme"));
    assert_true(nt_cond_compare("apple", NT__OP__LT, "Banana"));
    assert_true(nt_cond_compare("apple", NT__OP__LE, "APPLE"));
    assert_true(nt_cond_compare("cherry", NT__OP__GT, "Banana"));
    assert_true(nt_cond_compare("cherry", NT__OP__GE, "CHERRY"));
    assert_false(nt_cond_compare("apple", NT__OP__GT, "banana"));
}

static void test_cond_compare_numbers_as_numbers(void **state)
{
    (void)state;
    /* As strings "9" > "10"; as numbers it is the other way round. */
    assert_true(nt_cond_compare("9", NT__OP__LT, "10"));
    assert_true(nt_cond_compare("10", NT__OP__EQ, "10.0"));
    assert_true(nt_cond_compare("-2.5", NT__OP__LT, "1e1"));
    assert_true(nt_cond_compare("500", NT__OP__GE, "500"));
    assert_true(nt_cond_compare("1000", NT__OP__GT, "999"));
    /* One side not a number: compared as strings. */
    assert_true(nt_cond_compare("9", NT__OP__GT, "10x"));
    assert_false(nt_cond_compare("10", NT__OP__EQ, "ten"));
    assert_false(nt_cond_compare("0x10", NT__OP__EQ, "16"));
    /* inf and nan are words here, not numbers. */
    assert_false(nt_cond_compare("inf", NT__OP__EQ, "infinity"));
    assert_false(nt_cond_compare("nan", NT__OP__NE, "NaN"));
}

static void test_cond_contains_is_case_insensitive(void **state)
{
    (void)state;
    assert_true(nt_cond_compare("Head of Engineering", NT__OP__CONTAINS, "ENGINEER"));
    assert_false(nt_cond_compare("Head of Sales", NT__OP__CONTAINS, "engineer"));
    assert_false(nt_cond_compare(NULL, NT__OP__CONTAINS, "x"));
}

static void test_cond_present_absent(void **state)
{
    (void)state;
    assert_true(nt_cond_compare("x", NT__OP__PRESENT, NULL));
    assert_false(nt_cond_compare("", NT__OP__PRESENT, NULL));
    assert_false(nt_cond_compare(NULL, NT__OP__PRESENT, NULL));
    assert_true(nt_cond_compare(NULL, NT__OP__ABSENT, NULL));
    assert_true(nt_cond_compare("", NT__OP__ABSENT, NULL));
    assert_false(nt_cond_compare("x", NT__OP__ABSENT, NULL));
}

static void test_cond_absent_attribute_only_satisfies_ne(void **state)
{
    (void)state;
    assert_false(nt_cond_compare(NULL, NT__OP__EQ, ""));
    assert_true(nt_cond_compare(NULL, NT__OP__NE, "US"));
    assert_false(nt_cond_compare(NULL, NT__OP__LT, "5"));
    assert_false(nt_cond_compare(NULL, NT__OP__GE, "5"));
}

static void test_cond_attr_on_lead(void **state)
{
    nt_lead_t l;
    (void)state;

    lead_with(&l, "company_size", "250", "role", "Engineer", "country", "", NULL);
    assert_true(nt_cond_eval(attr("company_size", NT__OP__GE, "100"), &l, NOW));
    assert_false(nt_cond_eval(attr("company_size", NT__OP__LT, "100"), &l, NOW));
    assert_true(nt_cond_eval(attr("role", NT__OP__EQ, "engineer"), &l, NOW));
    assert_true(nt_cond_eval(attr("country", NT__OP__ABSENT, ""), &l, NOW));
    assert_true(nt_cond_eval(attr("city", NT__OP__ABSENT, ""), &l, NOW));
    assert_false(nt_cond_eval(attr("city", NT__OP__PRESENT, ""), &l, NOW));
    nt_lead_fini(&l);
}

static void test_cond_in_over_values(void **state)
{
    char *values[] = {"DE", "at", "CH"};
    Nt__Condition *c = attr("country", NT__OP__IN, "");
    nt_lead_t l;
    (void)state;

    c->attr->n_values = 3;
    c->attr->values = values;
    lead_with(&l, "country", "AT", NULL);
    assert_true(nt_cond_eval(c, &l, NOW));
    assert_int_equal(nt_lead_set(&l, "country", "US"), 0);
    assert_false(nt_cond_eval(c, &l, NOW));
    assert_int_equal(nt_lead_set(&l, "country", NULL), 0);
    assert_false(nt_cond_eval(c, &l, NOW));
    c->attr->n_values = 0;
    assert_int_equal(nt_lead_set(&l, "country", "DE"), 0);
    assert_false(nt_cond_eval(c, &l, NOW));
    nt_lead_fini(&l);
}

static void test_cond_all_any_empty_and_negate(void **state)
{
    nt_lead_t l;
    Nt__Condition *tf[2];
    (void)state;

    lead_with(&l, NULL);
    assert_true(nt_cond_eval(group(0, 0, NULL), &l, NOW));
    assert_false(nt_cond_eval(group(1, 0, NULL), &l, NOW));
    tf[0] = always(1);
    tf[1] = always(0);
    assert_false(nt_cond_eval(group(0, 2, tf), &l, NOW));
    assert_true(nt_cond_eval(group(1, 2, tf), &l, NOW));
    assert_true(nt_cond_eval(negate(always(0)), &l, NOW));
    assert_false(nt_cond_eval(negate(always(1)), &l, NOW));
    assert_true(nt_cond_eval(negate(negate(always(1))), &l, NOW));
    assert_true(nt_cond_eval(NULL, &l, NOW));
    assert_true(nt_cond_eval(cond_new(), &l, NOW));
    nt_lead_fini(&l);
}

static void test_cond_score(void **state)
{
    nt_lead_t l;
    (void)state;

    lead_with(&l, "_score", "42", NULL);
    assert_true(nt_cond_eval(score(NT__OP__GE, 42), &l, NOW));
    assert_true(nt_cond_eval(score(NT__OP__GT, 41), &l, NOW));
    assert_false(nt_cond_eval(score(NT__OP__LT, 42), &l, NOW));
    assert_true(nt_cond_eval(score(NT__OP__EQ, 42), &l, NOW));
    assert_true(nt_cond_eval(score(NT__OP__NE, 0), &l, NOW));
    assert_false(nt_cond_eval(score(NT__OP__CONTAINS, 4), &l, NOW));
    assert_int_equal(nt_lead_set(&l, "_score", NULL), 0);
    assert_true(nt_cond_eval(score(NT__OP__EQ, 0), &l, NOW));
    nt_lead_fini(&l);
}

static void test_cond_stage_in_funnel_order(void **state)
{
    nt_lead_t l;
    (void)state;

    lead_with(&l, "_stage", "sal", NULL);
    assert_int_equal(nt_lead_stage(&l), NT__STAGE__SAL);
    assert_true(nt_cond_eval(stage(NT__OP__GE, NT__STAGE__MQL), &l, NOW));
    assert_true(nt_cond_eval(stage(NT__OP__LT, NT__STAGE__SQL), &l, NOW));
    assert_false(nt_cond_eval(stage(NT__OP__GE, NT__STAGE__SQL), &l, NOW));
    assert_true(nt_cond_eval(stage(NT__OP__EQ, NT__STAGE__SAL), &l, NOW));
    assert_true(nt_cond_eval(stage(NT__OP__NE, NT__STAGE__WON), &l, NOW));
    /* No stage yet: before inquiry. */
    assert_int_equal(nt_lead_set(&l, "_stage", NULL), 0);
    assert_false(nt_cond_eval(stage(NT__OP__GE, NT__STAGE__INQUIRY), &l, NOW));
    assert_true(nt_cond_eval(stage(NT__OP__LT, NT__STAGE__INQUIRY), &l, NOW));
    nt_lead_fini(&l);
}

static void test_cond_event_seen_within_and_ever(void **state)
{
    char ts[32];
    nt_lead_t l;
    (void)state;

    snprintf(ts, sizeof(ts), "%lld", (long long)(NOW - 2 * 86400000LL));
    lead_with(&l, "e:webinar_attended", ts, NULL);
    assert_int_equal(nt_lead_seen_ms(&l, "webinar_attended"), NOW - 2 * 86400000LL);
    assert_true(nt_cond_eval(seen("webinar_attended", 0, 0), &l, NOW));
    assert_true(nt_cond_eval(seen("webinar_attended", 3, 0), &l, NOW));
    assert_true(nt_cond_eval(seen("webinar_attended", 2, 0), &l, NOW));
    assert_false(nt_cond_eval(seen("webinar_attended", 1, 23), &l, NOW));
    assert_false(nt_cond_eval(seen("email_clicked", 0, 0), &l, NOW));
    nt_lead_fini(&l);
}

/* Intake records only people's events as e:<type>; a machine's open leaves no trace, so a
 * condition on it does not hold however recent the machine event was. */
static void test_cond_event_seen_ignores_machine_events(void **state)
{
    nt_lead_t l;
    (void)state;

    lead_with(&l, "email", "a@example.com", NULL);
    assert_false(nt_cond_eval(seen("email_opened", 0, 0), &l, NOW));
    assert_false(nt_cond_eval(seen("email_opened", 30, 0), &l, NOW));
    nt_lead_fini(&l);
}

static void test_cond_depth_limit_allows_32_levels(void **state)
{
    Nt__Condition *c = always(1);
    nt_lead_t l;
    int i;
    (void)state;

    lead_with(&l, NULL);
    for (i = 0; i < 30; i++)
        c = negate(c);
    assert_true(nt_cond_eval(c, &l, NOW)); /* 31 levels, even negations */
    for (i = 0; i < 10; i++)
        c = negate(c);
    assert_false(nt_cond_eval(c, &l, NOW)); /* 41 levels: too deep, even negations */
    c = negate(c);
    assert_false(nt_cond_eval(c, &l, NOW)); /* odd negations: still false */
    nt_lead_fini(&l);
}

#define HOSTILE_DEPTH 10000

/* A hostile plan nests 10,000 levels of not/all/any: evaluation stops at the limit, says
 * "false", and never recurses deep enough to hurt the stack. */
static void test_cond_depth_limit_hostile_nesting(void **state)
{
    Nt__Condition *chain = calloc(HOSTILE_DEPTH + 1, sizeof(*chain));
    Nt__Conditions *groups = calloc(HOSTILE_DEPTH, sizeof(*groups));
    Nt__Condition **ptrs = calloc(HOSTILE_DEPTH, sizeof(*ptrs));
    nt_lead_t l;
    int i;
    (void)state;

    assert_non_null(chain);
    assert_non_null(groups);
    assert_non_null(ptrs);
    lead_with(&l, NULL);
    for (i = 0; i <= HOSTILE_DEPTH; i++)
        nt__condition__init(&chain[i]);
    chain[HOSTILE_DEPTH].kind_case = NT__CONDITION__KIND_ALWAYS;
    chain[HOSTILE_DEPTH].always = 1;
    for (i = 0; i < HOSTILE_DEPTH; i++) {
        nt__conditions__init(&groups[i]);
        ptrs[i] = &chain[i + 1];
        groups[i].n_of = 1;
        groups[i].of = &ptrs[i];
        switch (i % 3) {
        case 0:
            chain[i].kind_case = NT__CONDITION__KIND_NEGATE;
            chain[i].negate = &chain[i + 1];
            break;
        case 1:
            chain[i].kind_case = NT__CONDITION__KIND_ALL;
            chain[i].all = &groups[i];
            break;
        default:
            chain[i].kind_case = NT__CONDITION__KIND_ANY;
            chain[i].any = &groups[i];
            break;
        }
    }
    assert_false(nt_cond_eval(&chain[0], &l, NOW));
    for (i = 0; i < HOSTILE_DEPTH; i++) {
        chain[i].kind_case = NT__CONDITION__KIND_NEGATE;
        chain[i].negate = &chain[i + 1];
    }
    assert_false(nt_cond_eval(&chain[0], &l, NOW));
    assert_false(nt_cond_eval(&chain[1], &l, NOW));
    nt_lead_fini(&l);
    free(ptrs);
    free(groups);
    free(chain);
}

static void test_lead_fields_and_reserved_accessors(void **state)
{
    nt_lead_t l;
    (void)state;

    lead_with(&l, "timezone", "Europe/Berlin", "_score", "7", "_stage", "MQL", NULL);
    assert_string_equal(nt_lead_tz(&l), "Europe/Berlin");
    assert_int_equal(nt_lead_score(&l), 7);
    assert_int_equal(nt_lead_stage(&l), NT__STAGE__MQL);
    assert_int_equal(nt_lead_set(&l, "timezone", NULL), 0);
    assert_null(nt_lead_get(&l, "timezone"));
    assert_string_equal(nt_lead_tz(&l), "UTC");
    assert_int_equal(l.nfields, 2);
    assert_string_equal(nt_stage_name(NT__STAGE__DISQUALIFIED), "disqualified");
    assert_null(nt_stage_name(0));
    assert_null(nt_stage_name(9));
    assert_int_equal(nt_stage_parse("opportunity"), NT__STAGE__OPPORTUNITY);
    assert_int_equal(nt_stage_parse("nope"), 0);
    assert_true(nt_attr_name_valid("company_size"));
    assert_false(nt_attr_name_valid("_score"));
    assert_false(nt_attr_name_valid("Company"));
    assert_false(nt_attr_name_valid("e:open"));
    assert_true(nt_lead_id_valid("ana.lopez+1@example.com"));
    assert_false(nt_lead_id_valid("a b"));
    assert_false(nt_lead_id_valid(""));
    assert_string_equal(nt_builtin_attrs[0], "email");
    nt_lead_fini(&l);
    nt_lead_fini(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_cond_compare_every_op_on_strings, teardown),
        cmocka_unit_test_teardown(test_cond_compare_numbers_as_numbers, teardown),
        cmocka_unit_test_teardown(test_cond_contains_is_case_insensitive, teardown),
        cmocka_unit_test_teardown(test_cond_present_absent, teardown),
        cmocka_unit_test_teardown(test_cond_absent_attribute_only_satisfies_ne, teardown),
        cmocka_unit_test_teardown(test_cond_attr_on_lead, teardown),
        cmocka_unit_test_teardown(test_cond_in_over_values, teardown),
        cmocka_unit_test_teardown(test_cond_all_any_empty_and_negate, teardown),
        cmocka_unit_test_teardown(test_cond_score, teardown),
        cmocka_unit_test_teardown(test_cond_stage_in_funnel_order, teardown),
        cmocka_unit_test_teardown(test_cond_event_seen_within_and_ever, teardown),
        cmocka_unit_test_teardown(test_cond_event_seen_ignores_machine_events, teardown),
        cmocka_unit_test_teardown(test_cond_depth_limit_allows_32_levels, teardown),
        cmocka_unit_test_teardown(test_cond_depth_limit_hostile_nesting, teardown),
        cmocka_unit_test_teardown(test_lead_fields_and_reserved_accessors, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
