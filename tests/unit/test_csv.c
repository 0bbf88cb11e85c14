/* CSV reading: RFC 4180 quoting, line endings, malformed rows with line numbers, hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "csv.h"

/* Every row of data (len bytes) rendered as "line:[a|b|c]" or "line:ERR:<message>", one per
 * line, into a malloc'd string. */
static char *dump(const char *data, size_t len, size_t max_field, size_t max_fields)
{
    FILE *in = fmemopen((void *)data, len, "r");
    assert_non_null(in);
    nt_csv_t *csv = nt_csv_new(in, max_field, max_fields);
    assert_non_null(csv);
    char *out = NULL;
    size_t outlen = 0;
    FILE *o = open_memstream(&out, &outlen);
    assert_non_null(o);
    for (int guard = 0; guard < 100000; guard++) {
        char **f;
        size_t n, line = 0;
        char *err = NULL;
        int r = nt_csv_next(csv, &f, &n, &line, &err);
        if (r == 0)
            break;
        if (r < 0) {
            assert_non_null(err);
            fprintf(o, "ERR:%s\n", err);
            free(err);
            continue;
        }
        assert_null(err);
        fprintf(o, "%zu:[", line);
        for (size_t i = 0; i < n; i++)
            fprintf(o, "%s%s", i ? "|" : "", f[i]);
        fprintf(o, "]\n");
    }
    fclose(o);
    nt_csv_free(csv);
    fclose(in);
    return out;
}

static void expect(const char *data, const char *want)
{
    char *got = dump(data, strlen(data), 1024, 64);
    assert_string_equal(got, want);
    free(got);
}

static void test_csv_plain_rows_and_line_numbers(void **state)
{
    expect("id,email\nlead-1,a@x.io\nlead-2,b@x.io\n",
           "1:[id|email]\n2:[lead-1|a@x.io]\n3:[lead-2|b@x.io]\n");
    expect("a,b", "1:[a|b]\n"); /* no final newline */
    expect("a,,c,\n", "1:[a||c|]\n");
}

static void test_csv_quotes_and_doubled_quotes(void **state)
{
    expect("\"Acme, Inc.\",\"say \"\"hi\"\"\",\"\"\n", "1:[Acme, Inc.|say \"hi\"|]\n");
}

static void test_csv_crlf_and_lone_cr(void **state)
{
    expect("a,b\r\nc,d\r\n", "1:[a|b]\n2:[c|d]\n");
    expect("a,b\rc,d\r", "1:[a|b]\n2:[c|d]\n");
    expect("\"x\r\ny\",z\r\nnext,1\r\n", "1:[x\r\ny|z]\n3:[next|1]\n");
}

static void test_csv_embedded_newline_counts_lines(void **state)
{
    expect("h1,h2\n\"multi\nline\",v\nafter,w\n", "1:[h1|h2]\n2:[multi\nline|v]\n4:[after|w]\n");
}

static void test_csv_blank_lines_and_bom_are_skipped(void **state)
{
    expect("\xEF\xBB\xBFid,name\n\n\nx,J\xC3\xBCrgen\n\n", "1:[id|name]\n4:[x|J\xC3\xBCrgen]\n");
    expect("\xEFx,y\n", "1:[\xEFx|y]\n"); /* not a BOM: kept */
}

static void test_csv_malformed_rows_report_line_and_continue(void **state)
{
    expect("id,name\nl1,bad\"quote\nl2,ok\n\"closed\"junk,x\nl3,fine\n",
           "1:[id|name]\n"
           "ERR:line 2: quote inside unquoted field 2 (quote the whole field and double the "
           "quote)\n"
           "3:[l2|ok]\n"
           "ERR:line 4: unexpected character after the closing quote of field 1\n"
           "5:[l3|fine]\n");
}

static void test_csv_unterminated_quote_at_eof_costs_one_row(void **state)
{
    expect("id,name\nl1,\"never closed\nl2,ok\nl3,ok\n",
           "1:[id|name]\n"
           "ERR:line 2: unterminated quoted field 2\n"
           "3:[l2|ok]\n4:[l3|ok]\n");
    expect("\"", "ERR:line 1: unterminated quoted field 1\n");
}

static void test_csv_nul_bytes_are_malformed(void **state)
{
    static const char data[] = "a,b\nc,d\0e\nf,g\n";
    char *got = dump(data, sizeof(data) - 1, 1024, 64);
    assert_string_equal(got, "1:[a|b]\nERR:line 2: NUL byte in field 2\n3:[f|g]\n");
    free(got);
}

static void test_csv_limits_on_field_size_and_count(void **state)
{
    char *got = dump("abcdef,x\nok,1\n", 14, 4, 8);
    assert_string_equal(got, "ERR:line 1: field 1 is longer than 4 bytes\n2:[ok|1]\n");
    free(got);
    got = dump("a,b,c,d\nok,1\n", 13, 16, 3);
    assert_string_equal(got, "ERR:line 1: more than 3 fields\n2:[ok|1]\n");
    free(got);
}

static void test_csv_hostile_one_megabyte_line(void **state)
{
    size_t n = 1u << 20;
    char *big = malloc(n + 64);
    assert_non_null(big);
    memset(big, 'x', n);
    strcpy(big + n, "\nnext,row\n");
    /* Within the limit: one row with one 1 MB field. */
    FILE *in = fmemopen(big, strlen(big), "r");
    nt_csv_t *csv = nt_csv_new(in, 2u << 20, 16);
    char **f;
    size_t nf, line;
    char *err = NULL;
    assert_int_equal(nt_csv_next(csv, &f, &nf, &line, &err), 1);
    assert_int_equal(nf, 1);
    assert_int_equal(strlen(f[0]), n);
    assert_int_equal(nt_csv_next(csv, &f, &nf, &line, &err), 1);
    assert_int_equal(line, 2);
    assert_string_equal(f[1], "row");
    assert_int_equal(nt_csv_next(csv, &f, &nf, &line, &err), 0);
    nt_csv_free(csv);
    fclose(in);
    /* Over the limit: an error, then the next row. */
    char *got = dump(big, strlen(big), 65536, 16);
    assert_string_equal(got, "ERR:line 1: field 1 is longer than 65536 bytes\n2:[next|row]\n");
    free(got);
    free(big);
}

static void test_csv_hostile_many_stray_quotes_stay_fast(void **state)
{
    /* 200,000 lines each opening a quote that never closes: re-reading is capped, so this
     * ends quickly instead of going quadratic. */
    size_t lines = 200000;
    char *data = malloc(lines * 3 + 1);
    assert_non_null(data);
    for (size_t i = 0; i < lines; i++)
        memcpy(data + i * 3, "\"a\n", 3);
    data[lines * 3] = '\0';
    FILE *in = fmemopen(data, lines * 3, "r");
    nt_csv_t *csv = nt_csv_new(in, 1 << 16, 16);
    char **f;
    size_t nf, line;
    char *err = NULL;
    int r, errors = 0;
    while ((r = nt_csv_next(csv, &f, &nf, &line, &err)) != 0) {
        assert_int_equal(r, -1);
        free(err);
        err = NULL;
        errors++;
        assert_true(errors <= (int)lines);
    }
    assert_true(errors >= 1);
    nt_csv_free(csv);
    fclose(in);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_plain_rows_and_line_numbers),
        cmocka_unit_test(test_csv_quotes_and_doubled_quotes),
        cmocka_unit_test(test_csv_crlf_and_lone_cr),
        cmocka_unit_test(test_csv_embedded_newline_counts_lines),
        cmocka_unit_test(test_csv_blank_lines_and_bom_are_skipped),
        cmocka_unit_test(test_csv_malformed_rows_report_line_and_continue),
        cmocka_unit_test(test_csv_unterminated_quote_at_eof_costs_one_row),
        cmocka_unit_test(test_csv_nul_bytes_are_malformed),
        cmocka_unit_test(test_csv_limits_on_field_size_and_count),
        cmocka_unit_test(test_csv_hostile_one_megabyte_line),
        cmocka_unit_test(test_csv_hostile_many_stray_quotes_stay_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
