/* The email channel's message builder and templates: headers, MIME structure, RFC 2047, CRLF,
 * Message-ID determinism, {{}} substitution with defaults and escaping, hostile values, the
 * plain-text rendering of the Markdown and its tracked links. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "email_msg.h"
#include "email_tpl.h"
#include "email_track.h"
#include "harness.h"
#include "nurture/track.h"

/* ---- helpers: a tiny reader for what the builder writes ---- */

static const char *find_body(const char *msg)
{
    const char *p = strstr(msg, "\r\n\r\n");
    assert_non_null(p);
    return p + 4;
}

/* The unfolded value of header `name` (first occurrence in the header section), malloc'd, or
 * NULL. */
static char *header(const char *msg, const char *name)
{
    const char *end = strstr(msg, "\r\n\r\n");
    size_t nl = strlen(name);
    for (const char *p = msg; p != NULL && p < end;) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            char *out = calloc(1, (size_t)(end - v) + 1);
            size_t k = 0;
            for (const char *q = v; q < end; q++) {
                if (q[0] == '\r' && q[1] == '\n') {
                    if (q[2] != ' ' && q[2] != '\t')
                        break;
                    q++; /* unfold: drop CRLF, keep the blank */
                    continue;
                }
                out[k++] = *q;
            }
            return out;
        }
        p = strstr(p, "\r\n");
        if (p != NULL)
            p += 2;
    }
    return NULL;
}

static int b64val(char c)
{
    const char *set = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = strchr(set, c);
    return c != '\0' && p != NULL ? (int)(p - set) : -1;
}

/* Decode RFC 2047 B encoded-words in s (whitespace between adjacent words dropped). */
static char *decode_2047(const char *s)
{
    char *out = calloc(1, strlen(s) + 1);
    size_t k = 0;
    int last_was_word = 0;
    while (*s != '\0') {
        if (strncmp(s, "=?UTF-8?B?", 10) == 0) {
            const char *e = strstr(s + 10, "?=");
            assert_non_null(e);
            assert_true(e + 2 - s <= 75); /* RFC 2047: at most 75 characters */
            unsigned v = 0;
            int bits = 0;
            for (const char *q = s + 10; q < e; q++) {
                if (*q == '=')
                    break;
                int d = b64val(*q);
                assert_true(d >= 0);
                v = (v << 6) | (unsigned)d;
                bits += 6;
                if (bits >= 8) {
                    bits -= 8;
                    out[k++] = (char)((v >> bits) & 0xff);
                }
            }
            s = e + 2;
            last_was_word = 1;
            continue;
        }
        if (last_was_word && (*s == ' ' || *s == '\t')) {
            const char *q = s;
            while (*q == ' ' || *q == '\t')
                q++;
            if (strncmp(q, "=?", 2) == 0) {
                s = q;
                continue;
            }
        }
        last_was_word = 0;
        out[k++] = *s++;
    }
    return out;
}

/* Decode quoted-printable (CRLF hard breaks become "\n"). */
static char *decode_qp(const char *s, size_t n)
{
    char *out = calloc(1, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=' && i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n') {
            i += 2;
        } else if (s[i] == '=') {
            assert_true(i + 2 < n);
            char hx[3] = {s[i + 1], s[i + 2], 0};
            out[k++] = (char)strtol(hx, NULL, 16);
            i += 2;
        } else if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') {
            out[k++] = '\n';
            i++;
        } else {
            out[k++] = s[i];
        }
    }
    return out;
}

/* The decoded body of the part whose Content-Type starts with `type`. */
static char *part(const char *msg, const char *type)
{
    char *ct = header(msg, "Content-Type");
    assert_non_null(ct);
    const char *b = strstr(ct, "boundary=\"");
    assert_non_null(b);
    char boundary[128];
    snprintf(boundary, sizeof(boundary), "\r\n--%.*s", (int)(strchr(b + 10, '"') - b - 10),
             b + 10);
    free(ct);
    char want[128];
    snprintf(want, sizeof(want), "Content-Type: %s", type);
    for (const char *p = strstr(msg, boundary); p != NULL; p = strstr(p + 1, boundary)) {
        const char *h = p + strlen(boundary) + 2;
        if (strncmp(h, want, strlen(want)) != 0)
            continue;
        assert_non_null(strstr(h, "Content-Transfer-Encoding: quoted-printable\r\n"));
        const char *body = strstr(h, "\r\n\r\n") + 4;
        const char *end = strstr(body, boundary);
        assert_non_null(end);
        return decode_qp(body, (size_t)(end - body));
    }
    fail_msg("no %s part", type);
    return NULL;
}

static void assert_crlf_only(const char *msg, size_t len)
{
    assert_int_equal(strlen(msg), len);
    size_t col = 0;
    for (size_t i = 0; i < len; i++) {
        if (msg[i] == '\n') {
            assert_true(i > 0 && msg[i - 1] == '\r');
            col = 0;
            continue;
        }
        if (msg[i] == '\r')
            assert_true(msg[i + 1] == '\n');
        else
            assert_true(++col <= 998);
    }
}

static nt_email_msg_t base_msg(char *msgid)
{
    assert_int_equal(nt_email_message_id("lead-1|plan|node|3", "acme.example", msgid,
                                         NT_EMAIL_MSGID_MAX),
                     NT_OK);
    nt_email_msg_t m = {
        .from_addr = "news@acme.example",
        .from_name = "Acme Marketing",
        .reply_to = "team@acme.example",
        .to_addr = "ada@example.org",
        .to_name = "Ada Lovelace",
        .subject = "Five signs your pipeline is holding you back",
        .text = "Hello Ada,\nline two\n",
        .html = "<p>Hello Ada,</p>\n<p>line two</p>\n",
        .msgid = msgid,
        .unsub_url = "https://acme.example/u?m=abc",
        .unsub_mailto = "unsubscribe@acme.example",
        .date_ms = 1772536800000LL, /* 2026-03-03 11:20:00 UTC */
    };
    return m;
}

static char *build(const nt_email_msg_t *m, size_t *len)
{
    char *out = NULL, *err = NULL;
    nt_rc_t rc = nt_email_msg_build(m, &out, len, &err);
    if (rc != NT_OK)
        fail_msg("build: %s", err != NULL ? err : "?");
    assert_null(err);
    return out;
}

/* ---- the message ---- */

static void test_email_message_has_rfc5322_headers_and_rfc8058_unsubscribe(void **state)
{
    char msgid[NT_EMAIL_MSGID_MAX];
    nt_email_msg_t m = base_msg(msgid);
    size_t len;
    char *msg = build(&m, &len);
    assert_crlf_only(msg, len);
    assert_true(strncmp(msg, "Date: Tue, 03 Mar 2026 11:20:00 +0000\r\n", 39) == 0);
    char *h = header(msg, "From");
    assert_string_equal(h, "\"Acme Marketing\" <news@acme.example>");
    free(h);
    h = header(msg, "Reply-To");
    assert_string_equal(h, "team@acme.example");
    free(h);
    h = header(msg, "To");
    assert_string_equal(h, "\"Ada Lovelace\" <ada@example.org>");
    free(h);
    h = header(msg, "Subject");
    assert_string_equal(h, "Five signs your pipeline is holding you back");
    free(h);
    h = header(msg, "Message-ID");
    assert_string_equal(h, msgid);
    free(h);
    h = header(msg, "MIME-Version");
    assert_string_equal(h, "1.0");
    free(h);
    h = header(msg, "List-Unsubscribe");
    assert_string_equal(h, "<https://acme.example/u?m=abc>, "
                           "<mailto:unsubscribe@acme.example?subject=unsubscribe>");
    free(h);
    h = header(msg, "List-Unsubscribe-Post");
    assert_string_equal(h, "List-Unsubscribe=One-Click");
    free(h);
    free(msg);

    /* No https link: no one-click header (RFC 8058 needs one); no Reply-To when not given. */
    m.unsub_url = NULL;
    m.reply_to = NULL;
    msg = build(&m, &len);
    assert_null(header(msg, "List-Unsubscribe-Post"));
    assert_null(header(msg, "Reply-To"));
    h = header(msg, "List-Unsubscribe");
    assert_string_equal(h, "<mailto:unsubscribe@acme.example?subject=unsubscribe>");
    free(h);
    free(msg);
}

static void test_email_message_is_multipart_alternative_text_then_html(void **state)
{
    char msgid[NT_EMAIL_MSGID_MAX];
    nt_email_msg_t m = base_msg(msgid);
    size_t len;
    char *msg = build(&m, &len);
    char *ct = header(msg, "Content-Type");
    assert_true(strncmp(ct, "multipart/alternative; boundary=\"=_nt_", 38) == 0);
    free(ct);
    const char *tp = strstr(msg, "Content-Type: text/plain; charset=UTF-8");
    const char *hp = strstr(msg, "Content-Type: text/html; charset=UTF-8");
    assert_non_null(tp);
    assert_non_null(hp);
    assert_true(tp < hp); /* the preferred (richer) part last */
    char *text = part(msg, "text/plain");
    assert_string_equal(text, "Hello Ada,\nline two\n");
    char *html = part(msg, "text/html");
    assert_string_equal(html, "<p>Hello Ada,</p>\n<p>line two</p>\n");
    free(text);
    free(html);
    /* The closing delimiter ends the message. */
    assert_non_null(strstr(msg, "--\r\n"));
    assert_true(len > 4 && strcmp(msg + len - 4, "--\r\n") == 0);
    free(msg);
}

static void test_email_rfc2047_encodes_non_ascii_names_and_subjects(void **state)
{
    char msgid[NT_EMAIL_MSGID_MAX];
    nt_email_msg_t m = base_msg(msgid);
    m.from_name = "Zoë Müller – Acme";
    m.to_name = "Łukasz Żółć";
    m.subject = "Grüße aus Köln: 你好, 世界 — a subject long enough to need several encoded words "
                "and folding, with emoji 🚀🚀🚀";
    size_t len;
    char *msg = build(&m, &len);
    assert_crlf_only(msg, len);
    /* Headers are 7-bit. */
    for (const char *p = msg; p < find_body(msg); p++)
        assert_true((unsigned char)*p < 0x80);
    char *h = header(msg, "Subject");
    char *d = decode_2047(h);
    assert_string_equal(d, m.subject);
    free(h);
    free(d);
    h = header(msg, "From");
    d = decode_2047(h);
    assert_string_equal(d, "Zoë Müller – Acme <news@acme.example>");
    free(h);
    free(d);
    h = header(msg, "To");
    d = decode_2047(h);
    assert_string_equal(d, "Łukasz Żółć <ada@example.org>");
    free(h);
    free(d);
    /* Folded lines stay short. */
    const char *end = find_body(msg);
    for (const char *p = msg; p < end;) {
        const char *e = strstr(p, "\r\n");
        assert_true(e - p <= 78);
        if (strstr(p, "=?") != NULL && strstr(p, "=?") < e)
            assert_true(e - p <= 76); /* RFC 2047 section 2 */
        p = e + 2;
    }
    free(msg);

    /* ASCII that looks like an encoded word is encoded, so it cannot be misread. */
    char *enc = nt_email_rfc2047("=?UTF-8?B?SGk=?=", 9);
    assert_true(strncmp(enc, "=?UTF-8?B?", 10) == 0);
    d = decode_2047(enc);
    assert_string_equal(d, "=?UTF-8?B?SGk=?=");
    free(enc);
    free(d);
}

static void test_email_body_lines_end_in_crlf_whatever_the_input(void **state)
{
    char msgid[NT_EMAIL_MSGID_MAX];
    nt_email_msg_t m = base_msg(msgid);
    m.text = "unix\nmac\rwindows\r\n.leading dot\nFrom the start\ntrailing space \n"
             "a long line that goes on and on and on and on and on and on and on and on and "
             "on and on and on, past seventy-six columns = with an equals sign";
    size_t len;
    char *msg = build(&m, &len);
    assert_crlf_only(msg, len);
    /* No quoted-printable line is longer than 76. */
    const char *body = find_body(msg);
    for (const char *p = body; *p != '\0';) {
        const char *e = strstr(p, "\r\n");
        if (e == NULL)
            break;
        assert_true(e - p <= 76);
        assert_true(*p != '.' || e == p + 1 || strncmp(p, "..", 2) != 0);
        p = e + 2;
    }
    assert_null(strstr(msg, "\r\n.leading"));
    assert_null(strstr(msg, "\r\nFrom the"));
    char *text = part(msg, "text/plain");
    assert_string_equal(text, "unix\nmac\nwindows\n.leading dot\nFrom the start\ntrailing space \n"
                              "a long line that goes on and on and on and on and on and on and "
                              "on and on and on and on and on, past seventy-six columns = with "
                              "an equals sign");
    free(text);
    free(msg);
}

static void test_email_message_id_is_deterministic_per_key(void **state)
{
    char a[NT_EMAIL_MSGID_MAX], b[NT_EMAIL_MSGID_MAX], c[NT_EMAIL_MSGID_MAX];
    assert_int_equal(nt_email_message_id("k1", "acme.example", a, sizeof(a)), NT_OK);
    assert_int_equal(nt_email_message_id("k1", "acme.example", b, sizeof(b)), NT_OK);
    assert_int_equal(nt_email_message_id("k2", "acme.example", c, sizeof(c)), NT_OK);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_int_equal(strlen(a), 1 + 32 + 1 + strlen("acme.example") + 1);
    assert_true(a[0] == '<' && a[33] == '@');
    /* SHA-256("k1") starts with 6ab9f1eb...; the id is its first 128 bits in hex. */
    assert_true(strncmp(a + 1, "6ab9f1eb8f7d3388f4f9d586f66e99fd@", 33) == 0);
    assert_int_equal(nt_email_message_id("k1", "bad domain\r\n", a, sizeof(a)), NT_EINVAL);
    assert_int_equal(nt_email_message_id("k1", "", a, sizeof(a)), NT_EINVAL);

    /* The same message twice is the same bytes. */
    char msgid[NT_EMAIL_MSGID_MAX];
    nt_email_msg_t m = base_msg(msgid);
    size_t l1, l2;
    char *m1 = build(&m, &l1), *m2 = build(&m, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(m1, m2, l1);
    free(m1);
    free(m2);
}

static void test_email_addresses_are_checked(void **state)
{
    assert_true(nt_email_addr_valid("ada@example.org"));
    assert_true(nt_email_addr_valid("a.b+tag@sub.example.co.uk"));
    assert_true(nt_email_addr_valid("nurture@localhost"));
    assert_false(nt_email_addr_valid(""));
    assert_false(nt_email_addr_valid("no-at-sign"));
    assert_false(nt_email_addr_valid("@example.org"));
    assert_false(nt_email_addr_valid("ada@"));
    assert_false(nt_email_addr_valid("ada@example..org"));
    assert_false(nt_email_addr_valid(".ada@example.org"));
    assert_false(nt_email_addr_valid("ada lovelace@example.org"));
    assert_false(nt_email_addr_valid("ada@example.org\r\nBcc: x@evil.example"));
    assert_false(nt_email_addr_valid("ada@example.org>, <x@evil.example"));
    assert_false(nt_email_addr_valid("\"quoted\"@example.org"));
    assert_false(nt_email_addr_valid("ada@-example.org"));
}

/* ---- hostile values ---- */

static void test_email_crlf_in_values_never_makes_a_header(void **state)
{
    char msgid[NT_EMAIL_MSGID_MAX];
    nt_email_msg_t m = base_msg(msgid);
    m.subject = "Hello\r\nBcc: victim@evil.example\r\n\r\n<script>alert(1)</script>";
    m.to_name = "Ada\nBcc: victim2@evil.example";
    m.from_name = "Acme\r\nX-Injected: yes";
    size_t len;
    char *msg = build(&m, &len);
    assert_crlf_only(msg, len);
    const char *body = find_body(msg);
    char *headers = strndup(msg, (size_t)(body - msg));
    assert_null(strstr(headers, "\r\nBcc:"));
    assert_null(strstr(headers, "\r\nX-Injected"));
    assert_null(header(msg, "Bcc"));
    char *h = header(msg, "Subject");
    assert_string_equal(h, "Hello Bcc: victim@evil.example <script>alert(1)</script>");
    free(h);
    h = header(msg, "To");
    assert_string_equal(h, "\"Ada Bcc: victim2@evil.example\" <ada@example.org>");
    free(h);
    free(headers);
    free(msg);

    /* Where a value cannot be cleaned (an address, a link), the message is refused. */
    char *out = NULL, *err = NULL;
    m = base_msg(msgid);
    m.to_addr = "ada@example.org\r\nBcc: victim@evil.example";
    assert_int_equal(nt_email_msg_build(&m, &out, &len, &err), NT_EINVAL);
    assert_null(out);
    assert_non_null(strstr(err, "lead's address"));
    free(err);
    err = NULL;
    m = base_msg(msgid);
    m.unsub_url = "https://acme.example/u\r\nBcc: x@evil.example";
    assert_int_equal(nt_email_msg_build(&m, &out, &len, &err), NT_EINVAL);
    free(err);
    err = NULL;
    m = base_msg(msgid);
    m.reply_to = "a@b.example\nBcc: c@d.example";
    assert_int_equal(nt_email_msg_build(&m, &out, &len, &err), NT_EINVAL);
    free(err);
    err = NULL;
    m = base_msg(msgid);
    m.msgid = "<x@y>\r\nBcc: z@evil.example";
    assert_int_equal(nt_email_msg_build(&m, &out, &len, &err), NT_EINVAL);
    free(err);
}

static void test_email_100kb_values_stay_within_line_limits(void **state)
{
    size_t n = 100 * 1024;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = "aé\r\n "[i % 5]; /* ASCII, 2-byte UTF-8, CR, LF, space */
    big[n] = '\0';
    char msgid[NT_EMAIL_MSGID_MAX];
    nt_email_msg_t m = base_msg(msgid);
    m.subject = big;
    m.to_name = big;
    m.text = big;
    size_t len;
    char *msg = build(&m, &len);
    assert_crlf_only(msg, len);
    const char *body = find_body(msg);
    assert_true(body - msg < 8 * 1024); /* headers are capped, not 100 KB */
    char *text = part(msg, "text/plain");
    assert_true(strlen(text) > 75 * 1024); /* bodies are not cut (CRLF counted as one) */
    free(text);
    free(msg);
    free(big);
}

/* ---- templates ---- */

static nt_email_tpl_t *parse(const char *src)
{
    nt_email_tpl_t *t = NULL;
    char *err = NULL;
    nt_rc_t rc = nt_email_tpl_parse("t", src, strlen(src), &t, &err);
    if (rc != NT_OK)
        fail_msg("parse: %s", err);
    return t;
}

/* The body is rendered once per template; each lead's render only fills the marks in, and
 * gives what rendering the whole Markdown for that lead gives. */
static void test_email_template_rendered_once_gives_what_rendering_each_time_gives(void **state)
{
    (void)state;
    nt_email_tpl_t *t = parse("Subject: Hi {{first_name|there}}\n\n"
                              "# Hello {{first_name|there}}\n\n"
                              "*Teams like {{company|yours}}* read [the guide]"
                              "(https://example.com/g?c={{company}}).\n\n- {{role|you}}\n"
                              "  1. [{{company}}]({{website|https://acme.example}})\n\n"
                              "> ## {{company}} {{role}}\n");
    assert_non_null(t->html_marks);
    assert_non_null(t->text_marks);
    assert_int_equal(t->ntext_links, 2);
    const nt_kv_t leads[][2] = {
        {{"first_name", "Zoë"}, {"company", "Büro <Kraft> & \"Co\" **bold** [x](y)"}},
        {{"first_name", ""}, {"role", "<script>alert(1)</script>"}},
    };
    for (size_t i = 0; i < 2; i++) {
        nt_email_rendered_t once, each;
        char *err = NULL;
        assert_int_equal(nt_email_tpl_render(t, leads[i], 2, &once, &err), NT_OK);
        char *cached = t->html_marks;
        t->html_marks = NULL;
        assert_int_equal(nt_email_tpl_render(t, leads[i], 2, &each, &err), NT_OK);
        t->html_marks = cached;
        assert_string_equal(once.html, each.html);
        assert_string_equal(once.text, each.text);
        assert_int_equal(once.nlinks, each.nlinks);
        for (size_t k = 0; k < once.nlinks; k++) {
            assert_int_equal(once.links[k].off, each.links[k].off);
            assert_int_equal(once.links[k].len, each.links[k].len);
        }
        assert_null(strstr(once.html, "<script>"));
        assert_null(strstr(once.html, "<strong>bold"));
        nt_email_rendered_fini(&once);
        nt_email_rendered_fini(&each);
    }
    nt_email_tpl_free(t);
}

static char *parse_error(const char *src)
{
    nt_email_tpl_t *t = NULL;
    char *err = NULL;
    assert_int_not_equal(nt_email_tpl_parse("t", src, strlen(src), &t, &err), NT_OK);
    assert_null(t);
    assert_non_null(err);
    return err;
}

static void test_email_template_substitutes_attributes_with_defaults(void **state)
{
    nt_email_tpl_t *t = parse("Subject: Hi {{first_name|there}}, about {{company}}\n\n"
                              "Hello {{ first_name | there }},\n\n"
                              "*{{company|your team}}* in {{city}}{{country|}}.\n");
    const nt_kv_t lead[] = {{"first_name", "Ada"}, {"company", ""}, {"city", "London"}};
    nt_email_rendered_t r;
    char *err = NULL;
    assert_int_equal(nt_email_tpl_render(t, lead, 3, &r, &err), NT_OK);
    assert_string_equal(r.subject, "Hi Ada, about ");
    assert_string_equal(r.text, "Hello Ada,\n\nyour team in London.\n");
    assert_string_equal(r.html, "<p>Hello Ada,</p>\n<p><em>your team</em> in London.</p>\n");
    nt_email_rendered_fini(&r);
    /* No attributes at all: defaults, and nothing where there is none. */
    assert_int_equal(nt_email_tpl_render(t, NULL, 0, &r, &err), NT_OK);
    assert_string_equal(r.subject, "Hi there, about ");
    assert_string_equal(r.text, "Hello there,\n\nyour team in .\n");
    nt_email_rendered_fini(&r);
    nt_email_tpl_free(t);
}

static void test_email_template_values_are_escaped_in_html_and_never_markup(void **state)
{
    nt_email_tpl_t *t = parse("Subject: For {{company}}\n\n"
                              "Dear {{first_name}},\n\n"
                              "[Your page](https://acme.example/p?c={{company}})\n\n"
                              "`{{title}}`\n");
    const nt_kv_t lead[] = {
        {"first_name", "<script>alert('x')</script> & \"friends\""},
        {"company", "[click](javascript:alert(1)) **bold** <b>x</b>"},
        {"title", "a&b"},
    };
    nt_email_rendered_t r;
    char *err = NULL;
    assert_int_equal(nt_email_tpl_render(t, lead, 3, &r, &err), NT_OK);
    assert_null(strstr(r.html, "<script"));
    assert_null(strstr(r.html, "<b>"));
    assert_null(strstr(r.html, "<strong>"));
    assert_null(strstr(r.html, "href=\"javascript"));
    assert_non_null(strstr(r.html, "Dear &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; "
                                   "&quot;friends&quot;,"));
    /* Inside the link target the value is percent-encoded. */
    assert_non_null(strstr(r.html, "href=\"https://acme.example/p?c=%5Bclick%5D%28javascript"
                                   "%3Aalert%281%29%29%20%2A%2Abold"));
    assert_non_null(strstr(r.html, "<code>a&amp;b</code>"));
    /* The text part carries values as they are. */
    assert_non_null(strstr(r.text, "Dear <script>alert('x')</script> & \"friends\","));
    nt_email_rendered_fini(&r);
    nt_email_tpl_free(t);

    /* Raw HTML and javascript: links in a template are dropped by cmark's safe mode. */
    t = parse("Subject: x\n\n<script>alert(1)</script>\n\n[a](javascript:alert(1))\n");
    assert_int_equal(nt_email_tpl_render(t, NULL, 0, &r, &err), NT_OK);
    assert_null(strstr(r.html, "<script"));
    assert_null(strstr(r.html, "javascript:"));
    nt_email_rendered_fini(&r);
    nt_email_tpl_free(t);
}

static void test_email_template_a_stored_link_starts_a_link_target_only_as_a_plain_url(void **state)
{
    nt_email_tpl_t *t = parse("Subject: Your seat {{webinar_join_link|}}\n\n"
                              "[Join]({{webinar_join_link|https://webinars.example/w}})\n\n"
                              "[Page](https://acme.example/p?u={{webinar_join_link}})\n");
    nt_email_rendered_t r;
    char *err = NULL;

    /* A plain http(s) URL starting the target is the link, HTML-escaped; later in a target it
     * is still percent-encoded. */
    const nt_kv_t good[] = {{"webinar_join_link", "https://platform.example/j/w/1?tk=a%2Fb&x='1'"}};
    assert_int_equal(nt_email_tpl_render(t, good, 1, &r, &err), NT_OK);
    assert_non_null(strstr(r.html,
                           "<a href=\"https://platform.example/j/w/1?tk=a%2Fb&amp;x=&#39;1&#39;"
                           "\">Join</a>"));
    assert_non_null(strstr(r.html, "href=\"https://acme.example/p?u=https%3A%2F%2Fplatform"));
    assert_string_equal(r.text, "Join (https://platform.example/j/w/1?tk=a%2Fb&x='1')\n\n"
                                "Page (https://acme.example/p?u=https%3A%2F%2Fplatform.example%2Fj"
                                "%2Fw%2F1%3Ftk%3Da%252Fb%26x%3D%271%27)\n");
    assert_int_equal(r.nlinks, 2);
    assert_int_equal(strncmp(r.text + r.links[0].off, "https://platform.example/", 25), 0);
    assert_int_equal(r.links[0].len, strlen("https://platform.example/j/w/1?tk=a%2Fb&x='1'"));
    nt_email_rendered_fini(&r);

    /* None, or an empty one: the template's default. */
    const nt_kv_t empty[] = {{"webinar_join_link", ""}};
    assert_int_equal(nt_email_tpl_render(t, empty, 1, &r, &err), NT_OK);
    assert_non_null(strstr(r.html, "<a href=\"https://webinars.example/w\">Join</a>"));
    nt_email_rendered_fini(&r);

    /* Anything else is percent-encoded: no scheme of its own, no way out of the attribute, no
     * line break in the subject. */
    const char *hostile[] = {
        "javascript:alert(document.cookie)",  "https://x.example/\" onmouseover=\"alert(1)",
        "https://x.example/<script>",         "https://x.example/a\r\nBcc: victim@evil.example",
        "data:text/html;base64,PHNjcmlwdD4=", " https://x.example/",
    };
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        const nt_kv_t lead[] = {{"webinar_join_link", hostile[i]}};
        assert_int_equal(nt_email_tpl_render(t, lead, 1, &r, &err), NT_OK);
        assert_null(strstr(r.html, "javascript:"));
        assert_null(strstr(r.html, "data:"));
        assert_null(strstr(r.html, "onmouseover=\""));
        assert_null(strstr(r.html, "<script"));
        assert_null(strstr(r.html, "href=\"http://"));
        assert_null(strstr(r.html, "href=\"https://x.example"));
        assert_null(strpbrk(r.subject, "\r\n"));
        assert_non_null(strstr(r.html, "<a href=\"")); /* the link is there, made harmless */
        /* In the text the same: percent-encoded, one line. */
        assert_true(strncmp(r.text, "Join (", 6) == 0);
        assert_null(strstr(r.text, "javascript:"));
        assert_null(strstr(r.text, "(https://x.example"));
        assert_null(strstr(r.text, "<script"));
        assert_int_equal(r.nlinks, 2);
        assert_null(memchr(r.text + r.links[0].off, '\n', r.links[0].len));
        nt_email_rendered_fini(&r);
    }
    nt_email_tpl_free(t);
}

static void test_email_template_hostile_values_are_single_lines_and_capped(void **state)
{
    nt_email_tpl_t *t = parse("Subject: Hi {{first_name}}\n\n{{first_name}}\n");
    size_t n = 100 * 1024;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = "x\r\n"[i % 3];
    big[n] = '\0';
    const nt_kv_t lead[] = {{"first_name", big}};
    nt_email_rendered_t r;
    char *err = NULL;
    assert_int_equal(nt_email_tpl_render(t, lead, 1, &r, &err), NT_OK);
    assert_null(strpbrk(r.subject, "\r\n"));
    assert_true(strlen(r.subject) <= 3 + NT_EMAIL_VALUE_MAX);
    assert_true(strlen(r.text) <= NT_EMAIL_VALUE_MAX + 1);
    nt_email_rendered_fini(&r);
    free(big);

    const nt_kv_t inj[] = {{"first_name", "Ada\r\nBcc: victim@evil.example"}};
    assert_int_equal(nt_email_tpl_render(t, inj, 1, &r, &err), NT_OK);
    assert_string_equal(r.subject, "Hi Ada  Bcc: victim@evil.example");
    nt_email_rendered_fini(&r);
    nt_email_tpl_free(t);
}

static void test_email_template_layout_errors_name_the_line(void **state)
{
    char *e = parse_error("Hello\n\nbody\n");
    assert_non_null(strstr(e, "template 't' line 1: must be 'Subject: ...'"));
    free(e);
    e = parse_error("Subject: x\nbody right away\n");
    assert_non_null(strstr(e, "line 2: must be empty"));
    free(e);
    e = parse_error("Subject:   \n\nbody\n");
    assert_non_null(strstr(e, "subject is empty"));
    free(e);
    e = parse_error("Subject: x\n\nline 3\nHi {{first_name\n");
    assert_non_null(strstr(e, "line 4: '{{' without '}}'"));
    free(e);
    e = parse_error("Subject: x\n\n{{not valid!}}\n");
    assert_non_null(strstr(e, "line 3"));
    assert_non_null(strstr(e, "is not a placeholder"));
    free(e);
    e = parse_error("Subject: x\n\n");
    assert_non_null(strstr(e, "no body"));
    free(e);
    e = parse_error("Subject: \xff\xfe\n\nbody\n");
    assert_non_null(strstr(e, "UTF-8"));
    free(e);
    /* CRLF files are fine. */
    nt_email_tpl_t *t = parse("Subject: x\r\n\r\nbody\r\nmore\r\n");
    assert_string_equal(t->subject, "x");
    assert_string_equal(t->body, "body\nmore\n");
    nt_email_tpl_free(t);
}

static void test_email_template_check_refuses_unknown_attributes_without_default(void **state)
{
    nt_email_tpl_t *t = parse("Subject: x\n\nHi {{first_name}} ({{score}}, {{stage}})\n");
    char *err = NULL;
    assert_int_equal(nt_email_tpl_check(t, &err), NT_OK);
    nt_email_tpl_free(t);
    t = parse("Subject: x\n\nline 3\nHi {{favourite_colour}}\n");
    assert_int_equal(nt_email_tpl_check(t, &err), NT_EINVAL);
    assert_non_null(strstr(err, "line 4: unknown attribute 'favourite_colour'"));
    free(err);
    nt_email_tpl_free(t);
    t = parse("Subject: x\n\nHi {{favourite_colour|blue}}\n");
    assert_int_equal(nt_email_tpl_check(t, &err), NT_OK);
    nt_email_tpl_free(t);

    /* Loading: a name with a path in it, and a missing file. */
    assert_int_equal(nt_email_tpl_load("/tmp", "../etc/passwd", &t, &err), NT_EINVAL);
    free(err);
    assert_int_equal(nt_email_tpl_load("/nonexistent-dir", "welcome", &t, &err), NT_ENOTFOUND);
    assert_string_equal(err, "template 'welcome' not found in /nonexistent-dir");
    free(err);
}

/* Every construct of the plain-text rendering, with the exact text it gives. */
static void test_email_template_text_renders_every_construct(void **state)
{
    (void)state;
    nt_email_tpl_t *t = parse(
        "Subject: All of it\n\n"
        "# Grüße, {{first_name|you}}!\n\n"
        "## Second *level* `x`\n\n"
        "Some *emphasis*, __strong__, `inline code`, a [link](https://example.com/p?a=1&b='2' "
        "\"title\") and\n"
        "<https://example.com/auto>, <ada@example.com> and [x](javascript:alert(1)).  \n"
        "After a hard break: ![the logo](https://example.com/l.png) and <b>raw</b> inline.\n\n"
        "<div>\nraw block\n</div>\n\n"
        "- one\n- two\n  continued\n  - nested a\n  - nested b\n- three\n\n"
        "7. seven\n8. eight\n   - inner\n9. nine\n10. ten\n    continued\n\n"
        "> quoted *line*\n> second line\n>\n> 1. in a quote\n\n"
        "    indented code\n      keeps its indent\n\n"
        "```sh\nfenced   \n\nafter a blank line\n```\n\n"
        "* loose one\n\n* loose two\n\n  second paragraph\n\n"
        "***\n\n"
        "[Join]({{webinar_join_link|https://w.example/j}}) [Ä](<https://ex.example/ä b|{}>)\n"
        "[https://example.com/same](https://example.com/same)\n");
    const nt_kv_t lead[] = {{"first_name", "Zoë"}};
    nt_email_rendered_t r;
    char *err = NULL;
    assert_int_equal(nt_email_tpl_render(t, lead, 1, &r, &err), NT_OK);
    assert_string_equal(r.text,
                        "Grüße, Zoë!\n"
                        "===========\n"
                        "\n"
                        "Second level x\n"
                        "--------------\n"
                        "\n"
                        "Some emphasis, strong, inline code, a link "
                        "(https://example.com/p?a=1&b='2') and\n"
                        "https://example.com/auto, ada@example.com and x.\n"
                        "After a hard break: the logo and raw inline.\n"
                        "\n"
                        "- one\n"
                        "- two\n"
                        "  continued\n"
                        "  - nested a\n"
                        "  - nested b\n"
                        "- three\n"
                        "\n"
                        "7. seven\n"
                        "8. eight\n"
                        "   - inner\n"
                        "9. nine\n"
                        "10. ten\n"
                        "    continued\n"
                        "\n"
                        "> quoted line\n"
                        "> second line\n"
                        ">\n"
                        "> 1. in a quote\n"
                        "\n"
                        "    indented code\n"
                        "      keeps its indent\n"
                        "\n"
                        "    fenced\n"
                        "\n"
                        "    after a blank line\n"
                        "\n"
                        "- loose one\n"
                        "\n"
                        "- loose two\n"
                        "\n"
                        "  second paragraph\n"
                        "\n"
                        "----------------------------------------\n"
                        "\n"
                        "Join (https://w.example/j) Ä (https://ex.example/%C3%A4%20b%7C%7B%7D)\n"
                        "https://example.com/same\n");
    /* The link targets, as the HTML's hrefs have them. */
    static const char *const want[] = {
        "https://example.com/p?a=1&b='2'", "https://example.com/auto", "https://w.example/j",
        "https://ex.example/%C3%A4%20b%7C%7B%7D", "https://example.com/same"};
    assert_int_equal(r.nlinks, 5);
    for (size_t i = 0; i < r.nlinks; i++) {
        assert_int_equal(r.links[i].len, strlen(want[i]));
        assert_memory_equal(r.text + r.links[i].off, want[i], r.links[i].len);
    }
    assert_non_null(strstr(r.html, "href=\"https://ex.example/%C3%A4%20b%7C%7B%7D\""));
    nt_email_rendered_fini(&r);
    nt_email_tpl_free(t);

    /* A heading underlined to its width in characters once its value is in, in a list. */
    t = parse("Subject: x\n\n- ## {{company}} ✓\n\n  text\n");
    const nt_kv_t co[] = {{"company", "日本語の会社"}};
    assert_int_equal(nt_email_tpl_render(t, co, 1, &r, &err), NT_OK);
    assert_string_equal(r.text, "- 日本語の会社 ✓\n  --------\n\n  text\n");
    nt_email_rendered_fini(&r);
    nt_email_tpl_free(t);
}

/* Values in the text are plain single lines: nothing in them is Markdown, a link or a mark. */
static void test_email_template_text_hostile_values_stay_plain_text(void **state)
{
    (void)state;
    nt_email_tpl_t *t = parse("Subject: x\n\n# Hi {{first_name}}\n\n"
                              "*{{company}}* at [the page](https://acme.example/p?c={{company}})\n"
                              "and [yours]({{website}}).\n");
    char big[5001];
    memset(big, 'v', 5000);
    big[5000] = '\0';
    big[1023] = '\xc3'; /* a 2-byte character across the 1024-byte cap: cut before it */
    big[1024] = '\xa9';
    const nt_kv_t lead[] = {
        {"first_name", "Ada\r\nBcc: x@evil.example\t<script>alert(1)</script>"},
        {"company", "](javascript:alert(1)) {{first_name}} NtPh0000Z **b** \xff\xfe ok"},
        {"website", big},
    };
    nt_email_rendered_t r;
    char *err = NULL;
    assert_int_equal(nt_email_tpl_render(t, lead, 3, &r, &err), NT_OK);
    const char *hi = "Hi Ada  Bcc: x@evil.example <script>alert(1)</script>";
    const char *co =
        "](javascript:alert(1)) {{first_name}} NtPh0000Z **b** \xef\xbf\xbd\xef\xbf\xbd ok";
    char *want = NULL;
    assert_true(asprintf(&want,
                         "%s\n%.*s\n\n%s at the page (https://acme.example/p?c="
                         "%%5D%%28javascript%%3Aalert%%281%%29%%29%%20"
                         "%%7B%%7Bfirst_name%%7D%%7D%%20NtPh0000Z%%20%%2A%%2Ab%%2A%%2A%%20%%EF%%BF%%BD%%EF%%BF%%BD%%20ok)\n"
                         "and yours (%.1023s).\n",
                         hi, (int)strlen(hi),
                         "====================================================================", co,
                         big) > 0);
    assert_string_equal(r.text, want);
    free(want);
    assert_int_equal(r.nlinks, 2);
    /* A 5,000-byte value is cut to NT_EMAIL_VALUE_MAX on a character boundary (1,023 bytes
     * here), and a value that is not a URL does not become one. */
    assert_int_equal(r.links[1].len, 1023);
    nt_email_rendered_fini(&r);
    nt_email_tpl_free(t);
}

/* Only raw HTML, or an image without alt text: HTML, but no text; validation says so. */
static void test_email_template_check_refuses_an_empty_text(void **state)
{
    (void)state;
    static const char *const empty[] = {
        "Subject: x\n\n<div><b>only raw HTML</b></div>\n",
        "Subject: x\n\n![](https://example.com/banner.png)\n",
        "Subject: x\n\n<!-- a comment -->\n\n   \n",
    };
    for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
        nt_email_tpl_t *t = parse(empty[i]);
        nt_email_rendered_t r;
        char *err = NULL;
        assert_int_equal(nt_email_tpl_render(t, NULL, 0, &r, &err), NT_OK);
        assert_string_equal(r.text, "");
        nt_email_rendered_fini(&r);
        assert_int_equal(nt_email_tpl_check(t, &err), NT_EINVAL);
        assert_non_null(strstr(err, "renders to an empty plain-text body"));
        free(err);
        nt_email_tpl_free(t);
    }
    /* Almost empty is fine: one character, with blank lines around it. */
    nt_email_tpl_t *t = parse("Subject: x\n\n\n\n.\n\n\n");
    char *err = NULL;
    assert_int_equal(nt_email_tpl_check(t, &err), NT_OK);
    nt_email_rendered_t r;
    assert_int_equal(nt_email_tpl_render(t, NULL, 0, &r, &err), NT_OK);
    assert_string_equal(r.text, ".\n");
    nt_email_rendered_fini(&r);
    nt_email_tpl_free(t);
}

/* Tracking gives a URL the same click link in the text as in the HTML, whatever cmark
 * percent-encodes or entity-escapes in the href; mailto: and unsafe links stay. The message
 * built from them has no line longer than 998 bytes, with 2 KB URLs and 1 KB values. */
static void test_email_template_text_links_are_tracked_as_in_the_html(void **state)
{
    (void)state;
    char *src = NULL, longpath[1801];
    memset(longpath, 'p', 1800);
    longpath[1800] = '\0';
    assert_true(asprintf(&src,
                         "Subject: x\n\n"
                         "Read [the guide](https://example.com/g?a=1&b='2'&c=\"3\"&d=[4]|ä) or\n"
                         "<https://example.com/auto?x=&amp;y>, [mail](mailto:a@example.com),\n"
                         "[join]({{webinar_join_link}}), [by company](https://example.com/c/"
                         "{{company}}) and [long](https://example.com/%s).\n\n"
                         "Once more: [the guide](https://example.com/g?a=1&b='2'&c=\"3\"&d=[4]|ä)"
                         "\n",
                         longpath) > 0);
    nt_email_tpl_t *t = parse(src);
    free(src);
    char company[NT_EMAIL_VALUE_MAX + 1];
    memset(company, 'c', NT_EMAIL_VALUE_MAX);
    company[NT_EMAIL_VALUE_MAX] = '\0';
    company[10] = ' ';
    const nt_kv_t lead[] = {{"webinar_join_link", "https://platform.example/j?t=a&u='b'"},
                            {"company", company}};
    nt_email_rendered_t r;
    char *err = NULL;
    assert_int_equal(nt_email_tpl_render(t, lead, 2, &r, &err), NT_OK);
    nt_email_track_t tr = {"https://links.example", "secret", 6, "lead-1:plan:node:1", 1770000000};
    char *html = nt_email_track_html(&tr, r.html);
    char *text = nt_email_track_text(&tr, r.text, r.links, r.nlinks);
    assert_non_null(html);
    assert_non_null(text);
    /* Six http(s) links in both, the same ones in the same order. */
    char a[8192], b[8192];
    for (int i = 0; i < 6; i++) {
        assert_int_equal(nt_test_nth_link(html, 'c', i, a, sizeof(a)), 0);
        assert_int_equal(nt_test_nth_link(text, 'c', i, b, sizeof(b)), 0);
        assert_string_equal(a, b);
        nt_track_token_t tok;
        assert_int_equal(nt_track_verify("secret", 6, a + 5, 1770000001, &tok), NT_TRACK_OK);
        if (i == 0 || i == 5)
            assert_string_equal(tok.url, "https://example.com/g?a=1&b='2'&c=%223%22&d=%5B4%5D%7C"
                                         "%C3%A4");
        if (i == 2)
            assert_string_equal(tok.url, "https://platform.example/j?t=a&u='b'");
    }
    assert_int_equal(nt_test_nth_link(html, 'c', 6, a, sizeof(a)), -1);
    assert_int_equal(nt_test_nth_link(text, 'c', 6, b, sizeof(b)), -1);
    assert_non_null(strstr(text, "mail (mailto:a@example.com)"));
    assert_true(strncmp(text, "Read the guide (https://links.example/t/c/", 42) == 0);

    /* Built into a message: quoted-printable keeps every line within 76 characters. */
    char msgid[NT_EMAIL_MSGID_MAX];
    nt_email_msg_t m = base_msg(msgid);
    m.text = text;
    m.html = html;
    size_t len;
    char *msg = build(&m, &len);
    assert_crlf_only(msg, len);
    size_t longest = 0, col = 0;
    for (size_t i = 0; i < len; i++) {
        col = msg[i] == '\n' ? 0 : col + 1;
        longest = col > longest ? col : longest;
    }
    assert_true(longest <= 77); /* 76 and the CR */
    char *plain = part(msg, "text/plain");
    assert_string_equal(plain, text);
    free(plain);
    free(msg);
    free(html);
    free(text);
    nt_email_rendered_fini(&r);
    nt_email_tpl_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email_message_has_rfc5322_headers_and_rfc8058_unsubscribe),
        cmocka_unit_test(test_email_message_is_multipart_alternative_text_then_html),
        cmocka_unit_test(test_email_rfc2047_encodes_non_ascii_names_and_subjects),
        cmocka_unit_test(test_email_body_lines_end_in_crlf_whatever_the_input),
        cmocka_unit_test(test_email_message_id_is_deterministic_per_key),
        cmocka_unit_test(test_email_addresses_are_checked),
        cmocka_unit_test(test_email_crlf_in_values_never_makes_a_header),
        cmocka_unit_test(test_email_100kb_values_stay_within_line_limits),
        cmocka_unit_test(test_email_template_substitutes_attributes_with_defaults),
        cmocka_unit_test(test_email_template_values_are_escaped_in_html_and_never_markup),
        cmocka_unit_test(
            test_email_template_a_stored_link_starts_a_link_target_only_as_a_plain_url),
        cmocka_unit_test(test_email_template_hostile_values_are_single_lines_and_capped),
        cmocka_unit_test(test_email_template_layout_errors_name_the_line),
        cmocka_unit_test(test_email_template_rendered_once_gives_what_rendering_each_time_gives),
        cmocka_unit_test(test_email_template_check_refuses_unknown_attributes_without_default),
        cmocka_unit_test(test_email_template_text_renders_every_construct),
        cmocka_unit_test(test_email_template_text_hostile_values_stay_plain_text),
        cmocka_unit_test(test_email_template_check_refuses_an_empty_text),
        cmocka_unit_test(test_email_template_text_links_are_tracked_as_in_the_html),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
