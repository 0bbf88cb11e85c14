/* Signed tracking tokens (include/nurture/track.h) and the email channel's link rewriting
 * (channels/email/email_track.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "email_track.h"
#include "nurture/track.h"

#define KEY "a-secret-of-enough-length"
#define NOW 1795000000LL

static void test_track_token_round_trip_each_kind(void **state)
{
    nt_track_token_t t;
    char *c = nt_track_sign(KEY, strlen(KEY), NT_TRACK_CLICK, "ada@x.io:plan-1:send.1:7", NOW,
                            NOW + 100, "https://example.com/a?b=1|2");
    char *u = nt_track_sign(KEY, strlen(KEY), NT_TRACK_UNSUBSCRIBE, "ada@x.io:plan-1:send.1:7",
                            NOW, 0, NULL);

    (void)state;
    assert_non_null(c);
    assert_non_null(u);
    assert_int_equal(nt_track_verify(KEY, strlen(KEY), c, NOW + 50, &t), NT_TRACK_OK);
    assert_int_equal(t.kind, 'c');
    assert_string_equal(t.lead, "ada@x.io");
    assert_string_equal(t.plan, "plan-1");
    assert_string_equal(t.node, "send.1");
    assert_string_equal(t.msgid, "ada@x.io:plan-1:send.1:7");
    assert_string_equal(t.url, "https://example.com/a?b=1|2");
    assert_int_equal(t.issued, NOW);
    assert_int_equal(nt_track_verify(KEY, strlen(KEY), c, NOW + 101, &t), NT_TRACK_EEXPIRED);
    assert_int_equal(nt_track_verify(KEY, strlen(KEY), u, NOW + 100000000, &t), NT_TRACK_OK);
    assert_int_equal(t.kind, 'u');
    assert_string_equal(t.url, "");
    assert_int_equal(nt_track_verify("another-secret-value", 20, u, NOW, &t), NT_TRACK_EFORGED);
    free(c);
    free(u);
}

static void test_track_every_changed_character_or_cut_is_refused(void **state)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=";
    nt_track_token_t t;
    char *tok = nt_track_sign(KEY, strlen(KEY), NT_TRACK_OPEN, "l:p:n:1", NOW, NOW + 10, NULL);
    size_t n = strlen(tok);

    (void)state;
    for (size_t i = 0; i < n; i++) {
        char saved = tok[i];

        for (const char *a = alphabet; *a; a++) {
            if (*a == saved)
                continue;
            tok[i] = *a;
            assert_int_not_equal(nt_track_verify(KEY, strlen(KEY), tok, NOW, &t), NT_TRACK_OK);
        }
        tok[i] = saved;
        tok[i] = '\0';
        assert_int_not_equal(nt_track_verify(KEY, strlen(KEY), tok, NOW, &t), NT_TRACK_OK);
        tok[i] = saved;
    }
    assert_int_equal(nt_track_verify(KEY, strlen(KEY), tok, NOW, &t), NT_TRACK_OK);
    free(tok);
}

static void test_track_sign_refuses_bad_ids_and_urls(void **state)
{
    (void)state;
    assert_null(nt_track_sign(KEY, strlen(KEY), NT_TRACK_OPEN, "no-colons", NOW, 0, NULL));
    assert_null(nt_track_sign(KEY, strlen(KEY), NT_TRACK_OPEN, "a:b:c:x", NOW, 0, NULL));
    assert_null(nt_track_sign(KEY, strlen(KEY), NT_TRACK_CLICK, "a:b:c:1", NOW, 0,
                              "javascript:alert(1)"));
    assert_null(nt_track_sign(KEY, strlen(KEY), NT_TRACK_CLICK, "a:b:c:1", NOW, 0,
                              "https://x.io/\r\nSet-Cookie: a"));
    assert_null(nt_track_sign(KEY, strlen(KEY), 'x', "a:b:c:1", NOW, 0, NULL));
}

static void test_track_html_links_become_click_links_and_a_pixel_is_added(void **state)
{
    nt_email_track_t t = {"https://n.example", KEY, strlen(KEY), "l:p:n:1", NOW};
    const char *html = "<p>Read <a href=\"https://example.com/g?a=1&amp;b=2\">the guide</a>, "
                       "<a href=\"mailto:x@y.io\">mail</a> or <a title=\"x\" "
                       "href='http://e.io/d'>docs</a>.</p>\n";
    char *out = nt_email_track_html(&t, html);
    nt_track_token_t tok;
    const char *p;
    char buf[4096];

    (void)state;
    assert_non_null(out);
    assert_null(strstr(out, "https://example.com/g"));
    assert_non_null(strstr(out, "href=\"mailto:x@y.io\""));
    assert_null(strstr(out, "http://e.io/d"));
    p = strstr(out, "href=\"https://n.example/t/c/");
    assert_non_null(p);
    p += strlen("href=\"https://n.example/t/c/");
    snprintf(buf, sizeof(buf), "%.*s", (int)strcspn(p, "\""), p);
    assert_int_equal(nt_track_verify(KEY, strlen(KEY), buf, NOW, &tok), NT_TRACK_OK);
    assert_string_equal(tok.url, "https://example.com/g?a=1&b=2");
    assert_non_null(strstr(out, "<img src=\"https://n.example/t/o/"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_track_token_round_trip_each_kind),
        cmocka_unit_test(test_track_every_changed_character_or_cut_is_refused),
        cmocka_unit_test(test_track_sign_refuses_bad_ids_and_urls),
        cmocka_unit_test(test_track_html_links_become_click_links_and_a_pixel_is_added),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
