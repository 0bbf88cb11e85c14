/* End to end over SMTP: nurtured sends through Debian's aiosmtpd (started by the harness on a
 * free port), the tests take the received messages apart (MIME parts, quoted-printable or
 * base64 as the channel encodes them), follow the click link and the List-Unsubscribe one-click
 * POST over HTTP to nurtured, and check what moved a lead, what only reached its timeline and
 * what was refused; the text part is the Markdown as plain text with the same click links as the
 * HTML part, and one of its links is followed. Also bounces: aiosmtpd answers 550 at RCPT TO
 * for reject* addresses (the send leaves by bounced and the address is suppressed), and a
 * provider's later bounce is an email.bounced event a plan waits on. The maildir twin of these tests: test_tracking.c. */
#include "api_util.h"
#include "track_util.h"

/* One send that routes a refusal by its bounced edge, then waits for a later bounce. */
static const char bounce_plan[] =
    "id: \"bounce\"\n"
    "start: \"mail\"\n"
    "nodes { id: \"mail\" send { channel: \"email\" params { name: \"template\" value: "
    "\"hello\" } on { outcome: \"bounced\" to: \"gone\" } next: \"watch\" } }\n"
    "nodes { id: \"watch\" wait_event { filter { type: \"email.bounced\" } timeout { days: 30 } "
    "on_match: \"later\" on_timeout: \"quiet\" } }\n"
    "nodes { id: \"gone\" exit { reason: \"bounced_at_once\" } }\n"
    "nodes { id: \"later\" exit { reason: \"bounced_later\" } }\n"
    "nodes { id: \"quiet\" exit { reason: \"quiet\" } }\n";

#define PUBLIC_URL "https://links.example.test"

static char *tpl_dir;
static nt_test_smtp_t smtp;

static int setup(void **state)
{
    static const char *extra[] = {"--tracking-secret", SECRET, "--webhook-secret", WSECRET,
                                  "--channel.email.min_click_delay", "2",
                                  "--channel.email.templates", NULL,
                                  "--channel.email.smtp_url", NULL,
                                  "--channel.email.starttls", "no",
                                  /* as behind a TLS proxy: RFC 8058 one-click wants https */
                                  "--public-url", PUBLIC_URL, NULL};

    (void)state;
    tpl_dir = track_templates();
    if (!tpl_dir || nt_test_smtp_start(&smtp) != 0)
        return -1;
    extra[7] = tpl_dir;
    extra[9] = smtp.url;
    snprintf(track_msg_dir, sizeof(track_msg_dir), "%s", smtp.msgs);
    return api_setup(extra);
}

static int teardown(void **state)
{
    api_teardown(state);
    nt_test_smtp_stop(&smtp);
    nt_test_rmrf(tpl_dir);
    free(tpl_dir);
    return 0;
}

/* The k-th click link's path "/t/c/<token>" in s (a decoded message part). */
static void nth_click(const char *s, int k, char *out, size_t cap)
{
    if (nt_test_nth_link(s, 'c', k, out, cap) != 0)
        fail_msg("no click link %d in:\n%s", k, s);
}

/* The one message received for id, raw (caller frees). */
static char *the_message(const char *id)
{
    count_want_t w = {id, 1};
    char **v, *m;
    int n;

    assert_int_equal(nt_test_wait_until(has_messages, &w, 20000), 0);
    v = messages_of(id, &n);
    assert_int_equal(n, 1);
    m = v[0];
    free(v);
    return m;
}

static void test_tracking_smtp_received_message_a_scanner_click_does_not_move_a_person_does(
    void **state)
{
    char link[4096];
    char *msg, *text, *html, *h;
    resp_t r;

    (void)state;
    publish_textpb(track_plan, 0);
    publish_textpb(once_plan, 0);
    publish_textpb(bounce_plan, 0);
    lead_in("sm-a", "track");
    wait_lead_run("sm-a", "track", "await", "active");

    /* what the server received: the envelope, RFC 8058 headers, both parts decoded */
    msg = the_message("sm-a");
    assert_non_null(strstr(msg, "X-Test-Rcpt-To: sm-a@example.com\r\n"));
    h = header_value(msg, "List-Unsubscribe-Post");
    assert_non_null(h);
    assert_string_equal(h, "List-Unsubscribe=One-Click");
    free(h);
    h = header_value(msg, "Subject");
    assert_string_equal(h, "Hello Ada");
    free(h);
    text = mime_part(msg, "text/plain");
    html = mime_part(msg, "text/html");
    assert_non_null(strstr(html, "/t/o/"));
    assert_null(strstr(html, "href=\"https://example.com/guide")); /* every link is tracked */
    /* the text part is the Markdown rendered as text, with the HTML part's click links */
    char c0[4096], c1[4096], *want;
    nth_click(html, 0, c0, sizeof(c0));
    nth_click(html, 1, c1, sizeof(c1));
    assert_true(asprintf(&want,
                         "Hello Ada, read the guide (" PUBLIC_URL "%s) and\r\n"
                         "the docs (" PUBLIC_URL "%s).\r\n\r\n"
                         "-- \r\nNot useful any more? Unsubscribe: " PUBLIC_URL "/t/u/",
                         c0, c1) > 0);
    if (strncmp(text, want, strlen(want)) != 0)
        fail_msg("text part:\n%s\nwanted it to start with:\n%s", text, want);
    free(want);
    nth_click(text, 0, link, sizeof(link));
    assert_string_equal(link, c0);
    free(text);
    free(html);
    free(msg);

    /* the text part's link: a click within the first seconds, then a scanner's: recorded,
     * nothing moves */
    req("GET", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    assert_string_equal(r.location, "https://example.com/guide?a=1&b=2");
    sleep(MIN_DELAY_S + 1);
    req("GET", link, "Mozilla/5.0 (compatible; Mimecast URL Protect)", NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    wait_timeline("sm-a", "email.clicked (machine)", 2);
    usleep(200 * 1000);
    wait_lead_run("sm-a", "track", "await", "active");

    /* a person: the run moves on and the second message goes out over SMTP */
    req("GET", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    wait_lead_run("sm-a", "track", "await2", "active");
    count_want_t two = {"sm-a", 2};
    assert_int_equal(nt_test_wait_until(has_messages, &two, 20000), 0);
    assert_int_equal(count_messages("sm-a"), 2);
}

static void test_tracking_smtp_one_click_post_from_the_header_suppresses_the_next_email(
    void **state)
{
    char url[4096], click[4096], key[NT_KEY_MAX];
    char *msg, *h, *u, *unsub;
    const char *lt, *gt;
    resp_t r;

    (void)state;
    lead_in("sm-b", "track");
    wait_lead_run("sm-b", "track", "await", "active");
    msg = the_message("sm-b");
    h = header_value(msg, "List-Unsubscribe");
    assert_non_null(h);
    /* <https://links.example.test/t/u/<token>>, <mailto:...>; the proxy hands the path on */
    lt = strstr(h, "<" PUBLIC_URL "/t/u/");
    assert_non_null(lt);
    lt += 1 + strlen(PUBLIC_URL);
    gt = strchr(lt, '>');
    assert_non_null(gt);
    snprintf(url, sizeof(url), "%.*s", (int)(gt - lt), lt);
    assert_non_null(strstr(h, ", <mailto:unsubscribe@"));
    free(h);
    free(msg);
    link_of("sm-b", 'c', 0, click, sizeof(click));

    /* what a mail client does for RFC 8058: POST the header's URL, no page */
    req("POST", url, "Mozilla/5.0 (compatible; GoogleOneClick)", NULL,
        "application/x-www-form-urlencoded", "List-Unsubscribe=One-Click", 26, &r);
    assert_int_equal(r.status, 200);
    unsub = redis_hget(lead_key(key, "sm-b"), "_unsub");
    assert_non_null(unsub);
    free(unsub);
    wait_timeline("sm-b", "event email.unsubscribed", 1);

    /* the next email step leaves by suppressed: nothing more reaches the server */
    sleep(MIN_DELAY_S + 1);
    req("GET", click, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    wait_lead_run("sm-b", "track", "supp2", "done");
    u = redis_hget(lead_key(key, "sm-b"), "_unsub");
    assert_non_null(u);
    free(u);
    assert_int_equal(count_messages("sm-b"), 1);
}

static void test_tracking_smtp_tampered_tokens_get_4xx_and_change_nothing(void **state)
{
    char link[4096], unsub[4096], bad[4096], key[NT_KEY_MAX], *before, *after;
    resp_t r;

    (void)state;
    lead_in("sm-c", "track");
    wait_lead_run("sm-c", "track", "await", "active");
    link_of("sm-c", 'c', 0, link, sizeof(link));
    link_of("sm-c", 'u', 0, unsub, sizeof(unsub));
    sleep(MIN_DELAY_S + 1);
    before = fingerprint("sm-c");

    /* a payload character of the click link changed */
    snprintf(bad, sizeof(bad), "%s", link);
    bad[12] = bad[12] == 'A' ? 'B' : 'A';
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_true(r.status == 400 || r.status == 403);
    assert_string_equal(r.location, "");
    /* the unsubscribe link's signature changed */
    snprintf(bad, sizeof(bad), "%s", unsub);
    bad[strlen(bad) - 2] = bad[strlen(bad) - 2] == 'A' ? 'B' : 'A';
    req("POST", bad, BROWSER, NULL, "application/x-www-form-urlencoded",
        "List-Unsubscribe=One-Click", 26, &r);
    assert_true(r.status == 400 || r.status == 403);

    usleep(300 * 1000);
    after = fingerprint("sm-c");
    assert_string_equal(before, after);
    free(before);
    free(after);
    assert_null(redis_hget(lead_key(key, "sm-c"), "_unsub"));
    wait_lead_run("sm-c", "track", "await", "active");
}

static void test_tracking_smtp_550_at_rcpt_leaves_by_bounced_and_suppresses_the_address(
    void **state)
{
    char key[NT_KEY_MAX], *s;

    (void)state;
    /* lead_in gives <id>@example.com: aiosmtpd refuses reject* recipients with 550 */
    lead_in("reject-d", "bounce");
    wait_lead_run("reject-d", "bounce", "gone", "done");
    s = redis_hget(lead_key(key, "reject-d"), "_suppressed");
    assert_non_null(s);
    assert_true(strncmp(s, "hard_bounce", 11) == 0);
    assert_non_null(strstr(s, "550"));
    free(s);
    wait_timeline("reject-d", "address suppressed (hard bounce)", 1);
    assert_int_equal(count_messages("reject-d"), 0);
    /* every other plan's email step now leaves by suppressed, without trying */
    enrol_lead("reject-d", "once");
    wait_lead_run("reject-d", "once", "supp", "done");
    assert_int_equal(count_messages("reject-d"), 0);
}

static void test_tracking_smtp_provider_bounce_later_is_an_event_the_plan_waits_on(
    void **state)
{
    char sig[256], key[NT_KEY_MAX], *s;
    const char *body = "{\"events\":[{\"type\":\"bounced\",\"bounce\":\"hard\","
                       "\"message\":\"sm-e:bounce:mail:1\","
                       "\"reason\":\"550 5.1.1 mailbox gone\"}]}";
    resp_t r;

    (void)state;
    lead_in("sm-e", "bounce");
    wait_lead_run("sm-e", "bounce", "watch", "active");
    assert_int_equal(count_messages("sm-e"), 1);
    assert_null(redis_hget(lead_key(key, "sm-e"), "_suppressed"));

    sign_webhook(WSECRET, time(NULL), body, sig, sizeof(sig));
    hook(body, sig, &r);
    if (r.status != 200)
        fail_msg("webhook: %ld %s", r.status, r.body);
    wait_lead_run("sm-e", "bounce", "later", "done");
    s = redis_hget(lead_key(key, "sm-e"), "_suppressed");
    assert_non_null(s);
    assert_non_null(strstr(s, "mailbox gone"));
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_tracking_smtp_received_message_a_scanner_click_does_not_move_a_person_does),
        cmocka_unit_test(
            test_tracking_smtp_one_click_post_from_the_header_suppresses_the_next_email),
        cmocka_unit_test(test_tracking_smtp_tampered_tokens_get_4xx_and_change_nothing),
        cmocka_unit_test(
            test_tracking_smtp_550_at_rcpt_leaves_by_bounced_and_suppresses_the_address),
        cmocka_unit_test(test_tracking_smtp_provider_bounce_later_is_an_event_the_plan_waits_on),
    };

    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests(tests, setup, teardown);
}
