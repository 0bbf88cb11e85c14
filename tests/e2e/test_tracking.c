/* End to end: signed links in real messages and the provider webhook, over real HTTP against
 * nurtured run as a process. The email channel writes into the daemon's maildir; the tests read
 * the links out of the .eml files (the HTML part, decoded), click them with chosen user agents
 * and methods, and check what moved a lead and what only reached its timeline. The same over
 * SMTP: test_tracking_smtp.c. */
#include "api_util.h"
#include "nurture/track.h"
#include "track_util.h"

static char *tpl_dir;

static int setup(void **state)
{
    static const char *extra[] = {"--tracking-secret", SECRET, "--webhook-secret", WSECRET,
                                  "--channel.email.min_click_delay", "2",
                                  "--channel.email.templates", NULL, "--max-body", "200000",
                                  NULL};

    (void)state;
    tpl_dir = track_templates();
    if (!tpl_dir)
        return -1;
    extra[7] = tpl_dir;
    if (api_setup(extra) != 0)
        return -1;
    snprintf(track_msg_dir, sizeof(track_msg_dir), "%s/maildir/new", env.daemon.data_dir);
    return 0;
}

static int teardown(void **state)
{
    api_teardown(state);
    nt_test_rmrf(tpl_dir);
    free(tpl_dir);
    return 0;
}

/* ---- the tests ---------------------------------------------------------------------------- */

static void test_tracking_scanner_head_and_early_clicks_do_not_move_a_lead_a_person_does(
    void **state)
{
    char link[4096];
    resp_t r;
    char key[NT_KEY_MAX];

    (void)state;
    publish_textpb(track_plan, 0);
    publish_textpb(once_plan, 0);
    lead_in("tr-a", "track");
    wait_lead_run("tr-a", "track", "await", "active");
    link_of("tr-a", 'c', 0, link, sizeof(link));

    /* within the first seconds after delivery, even with a browser's user agent: a scanner */
    req("GET", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    assert_string_equal(r.location, "https://example.com/guide?a=1&b=2");
    sleep(MIN_DELAY_S + 1);
    /* HEAD, and known scanners or proxies, whenever they come */
    req("HEAD", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    req("GET", link, "Mozilla/5.0 (compatible; Mimecast URL Protect)", NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    req("GET", link, "Mozilla/5.0 (Windows NT 10.0) Microsoft Office/16.0 SafeLinks", NULL, NULL,
        NULL, 0, &r);
    assert_int_equal(r.status, 302);
    req("GET", link, NULL, NULL, NULL, NULL, 0, &r); /* no user agent at all */
    assert_int_equal(r.status, 302);
    wait_timeline("tr-a", "email.clicked (machine)", 5);
    usleep(200 * 1000);
    wait_lead_run("tr-a", "track", "await", "active");
    assert_null(redis_hget(lead_key(key, "tr-a"), "e:email.clicked"));

    /* a person, after the delay */
    req("GET", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    assert_string_equal(r.location, "https://example.com/guide?a=1&b=2");
    wait_lead_run("tr-a", "track", "await2", "active");
    assert_int_equal(timeline_count("tr-a", "email.clicked (machine)"), 5);
}

static void test_tracking_open_pixel_apple_proxy_is_a_machine_a_reader_is_not(void **state)
{
    char link[4096];
    resp_t r;
    count_want_t two = {"tr-a", 2};

    (void)state;
    /* tr-a got its second message after the click of the previous test */
    assert_int_equal(nt_test_wait_until(has_messages, &two, 20000), 0);
    assert_int_equal(count_messages("tr-a"), 2);
    /* the pixel of either message will do: an open is the lead's */
    link_of("tr-a", 'o', 0, link, sizeof(link));
    req("GET", link, "Mozilla/5.0", NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "image/gif");
    assert_int_equal(r.len, 43);
    req("GET", link, "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via "
                     "ggpht.com GoogleImageProxy)", NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    wait_timeline("tr-a", "email.opened (machine)", 2);
    wait_lead_run("tr-a", "track", "await2", "active");
    req("GET", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    wait_lead_run("tr-a", "track", "opened", "done");
}

static void test_tracking_many_links_at_once_is_a_scanner(void **state)
{
    char l0[4096], l1[4096];
    resp_t r;

    (void)state;
    lead_in("tr-b", "track");
    wait_lead_run("tr-b", "track", "await", "active");
    link_of("tr-b", 'c', 0, l0, sizeof(l0));
    link_of("tr-b", 'c', 1, l1, sizeof(l1));
    assert_string_not_equal(l0, l1);
    sleep(MIN_DELAY_S + 1);
    /* a second link of the same message clicked within 2 s of the first: a scanner following
     * every link (the first click cannot be taken back, the second is recorded as a machine's) */
    req("GET", l1, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    assert_string_equal(r.location, "https://example.com/docs");
    req("GET", l0, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    wait_timeline("tr-b", "email.clicked (machine)", 1);
    wait_lead_run("tr-b", "track", "await2", "active");
}

static void test_tracking_tampered_truncated_foreign_and_expired_tokens_get_4xx_and_write_nothing(
    void **state)
{
    char link[4096], bad[4096], *before, *after, *tok;
    resp_t r;
    nt_track_token_t t;

    (void)state;
    link_of("tr-b", 'c', 0, link, sizeof(link));
    assert_int_equal(nt_track_verify(SECRET, strlen(SECRET), link + 5, time(NULL), &t),
                     NT_TRACK_OK);
    before = fingerprint("tr-b");

    /* one character of the payload changed */
    snprintf(bad, sizeof(bad), "%s", link);
    bad[12] = bad[12] == 'A' ? 'B' : 'A';
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_true(r.status == 400 || r.status == 403);
    assert_true(strstr(r.body, "\"error\"") != NULL);
    /* the signature's last character changed (its unused bits too) */
    snprintf(bad, sizeof(bad), "%s", link);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'A' ? 'B' : 'A';
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_true(r.status == 400 || r.status == 403);
    /* truncated */
    snprintf(bad, sizeof(bad), "%s", link);
    bad[strlen(bad) - 3] = '\0';
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_true(r.status == 400 || r.status == 403);
    snprintf(bad, sizeof(bad), "%.*s", (int)(strchr(link, '.') - link), link);
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 400);
    /* another secret */
    tok = nt_track_sign("some-other-secret-0123456789", 28, NT_TRACK_CLICK, t.msgid, t.issued,
                        t.expires, "https://evil.example/");
    snprintf(bad, sizeof(bad), "/t/c/%s", tok);
    free(tok);
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 403);
    assert_string_equal(r.location, "");
    /* expired */
    tok = nt_track_sign(SECRET, strlen(SECRET), NT_TRACK_CLICK, t.msgid, time(NULL) - 800000,
                        time(NULL) - 10, "https://example.com/guide");
    snprintf(bad, sizeof(bad), "/t/c/%s", tok);
    free(tok);
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 403);
    assert_true(strstr(r.body, "expired") != NULL);
    /* a click token on the unsubscribe route: refused, and the page errors are plain text */
    snprintf(bad, sizeof(bad), "/t/u/%s", link + 5);
    req("POST", bad, BROWSER, NULL, "application/x-www-form-urlencoded",
        "List-Unsubscribe=One-Click", 26, &r);
    assert_int_equal(r.status, 400);
    assert_true(strncmp(r.ctype, "text/plain", 10) == 0);

    usleep(300 * 1000);
    after = fingerprint("tr-b");
    assert_string_equal(before, after);
    free(before);
    free(after);
}

static void test_tracking_unsubscribe_page_then_post_is_idempotent_and_suppresses_next_email(
    void **state)
{
    char link[4096], click[4096], key[NT_KEY_MAX], *before, *after, *u1, *u2;
    resp_t r;

    (void)state;
    lead_in("tr-c", "track");
    wait_lead_run("tr-c", "track", "await", "active");
    link_of("tr-c", 'u', 0, link, sizeof(link));
    link_of("tr-c", 'c', 0, click, sizeof(click));

    /* the List-Unsubscribe header carries the signed link and a mailto */
    {
        char **v;
        int n;

        v = messages_of("tr-c", &n);
        assert_int_equal(n, 1);
        assert_non_null(strstr(v[0], "List-Unsubscribe: <http://127.0.0.1:"));
        assert_non_null(strstr(v[0], "<mailto:unsubscribe@"));
        messages_free(v, n);
    }

    /* the page asks, and writes nothing */
    before = fingerprint("tr-c");
    req("GET", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "<form method=\"post\""));
    {
        /* the form posts to the link itself, relative (its token), behind any path prefix */
        char action[2048];
        snprintf(action, sizeof(action), "action=\"%s\"", strrchr(link, '/') + 1);
        assert_non_null(strstr(r.body, action));
    }
    req("HEAD", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    usleep(200 * 1000);
    after = fingerprint("tr-c");
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* the button */
    req("POST", link, BROWSER, NULL, "application/x-www-form-urlencoded",
        "List-Unsubscribe=One-Click", 26, &r);
    assert_int_equal(r.status, 200);
    u1 = redis_hget(lead_key(key, "tr-c"), "_unsub");
    assert_non_null(u1);
    req("POST", link, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    u2 = redis_hget(lead_key(key, "tr-c"), "_unsub");
    assert_string_equal(u1, u2);
    free(u1);
    free(u2);
    wait_timeline("tr-c", "event email.unsubscribed", 1);
    usleep(200 * 1000);
    assert_int_equal(timeline_count("tr-c", "event email.unsubscribed"), 1);

    /* the next email step leaves by "suppressed", and nothing is written for it */
    sleep(MIN_DELAY_S + 1);
    req("GET", click, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 302);
    wait_lead_run("tr-c", "track", "supp2", "done");
    assert_int_equal(count_messages("tr-c"), 1);
}

static void test_tracking_one_click_post_unsubscribes_at_once_in_every_plan(void **state)
{
    char link[4096], key[NT_KEY_MAX];
    resp_t r;

    (void)state;
    lead_in("tr-d", "track");
    wait_lead_run("tr-d", "track", "await", "active");
    link_of("tr-d", 'u', 0, link, sizeof(link));
    /* RFC 8058: the mail client POSTs at once, no page */
    req("POST", link, "Mozilla/5.0 (compatible; GoogleOneClick)", NULL,
        "application/x-www-form-urlencoded", "List-Unsubscribe=One-Click", 26, &r);
    assert_int_equal(r.status, 200);
    req("POST", link, NULL, NULL, "application/x-www-form-urlencoded",
        "List-Unsubscribe=One-Click", 26, &r);
    assert_int_equal(r.status, 200);
    char *unsub = redis_hget(lead_key(key, "tr-d"), "_unsub");
    assert_non_null(unsub);
    free(unsub);
    enrol_lead("tr-d", "once");
    wait_lead_run("tr-d", "once", "supp", "done");
    assert_int_equal(count_messages("tr-d"), 1);
}

/* ---- the provider webhook ------------------------------------------------------------------ */


static void test_tracking_webhook_signed_applies_refuses_bad_old_and_replayed(void **state)
{
    char sig[256], key[NT_KEY_MAX], *before, *after, *s;
    const char *body = "{\"events\":["
                       "{\"type\":\"delivered\",\"message\":\"tr-e:track:mail1:1\"},"
                       "{\"type\":\"bounced\",\"bounce\":\"hard\",\"message\":\"tr-f:track:mail1:1\","
                       "\"reason\":\"550 5.1.1 no such user\"},"
                       "{\"type\":\"complaint\",\"message\":\"nobody:track:mail1:1\"}]}";
    resp_t r;

    (void)state;
    lead_in("tr-e", "track");
    lead_in("tr-f", "track");
    wait_lead_run("tr-e", "track", "await", "active");
    wait_lead_run("tr-f", "track", "await", "active");

    before = fingerprint("tr-f");
    /* no signature, a wrong one, an old one: 401 and nothing written */
    hook(body, NULL, &r);
    assert_int_equal(r.status, 401);
    sign_webhook("another-secret-0123456789", time(NULL), body, sig, sizeof(sig));
    hook(body, sig, &r);
    assert_int_equal(r.status, 401);
    sign_webhook(WSECRET, time(NULL) - 600, body, sig, sizeof(sig));
    hook(body, sig, &r);
    assert_int_equal(r.status, 401);
    /* signed over another body */
    sign_webhook(WSECRET, time(NULL), "{\"events\":[]}", sig, sizeof(sig));
    hook(body, sig, &r);
    assert_int_equal(r.status, 401);
    /* signed, but malformed or too big */
    sign_webhook(WSECRET, time(NULL), "{\"events\":[", sig, sizeof(sig));
    hook("{\"events\":[", sig, &r);
    assert_int_equal(r.status, 400);
    sign_webhook(WSECRET, time(NULL), "{\"events\":[{\"type\":\"opened\",\"message\":\"a:b:c:1\"}]}",
                 sig, sizeof(sig));
    hook("{\"events\":[{\"type\":\"opened\",\"message\":\"a:b:c:1\"}]}", sig, &r);
    assert_int_equal(r.status, 400);
    {
        size_t cap = 1001 * 60 + 32, o = 0;
        char *big = malloc(cap);

        o += (size_t)snprintf(big + o, cap - o, "{\"events\":[");
        for (int i = 0; i < 1001; i++)
            o += (size_t)snprintf(big + o, cap - o, "%s{\"type\":\"delivered\",\"message\":\"x:y:z:%d\"}",
                                  i ? "," : "", i);
        snprintf(big + o, cap - o, "]}");
        sign_webhook(WSECRET, time(NULL), big, sig, sizeof(sig));
        hook(big, sig, &r);
        assert_int_equal(r.status, 413);
        free(big);
        big = calloc(1, 250000);
        memset(big, ' ', 249999);
        big[0] = '{';
        big[249997] = '}';
        sign_webhook(WSECRET, time(NULL), big, sig, sizeof(sig));
        hook(big, sig, &r);
        assert_int_equal(r.status, 413);
        free(big);
    }
    usleep(200 * 1000);
    after = fingerprint("tr-f");
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* good: applied, the unknown message reported */
    sign_webhook(WSECRET, time(NULL), body, sig, sizeof(sig));
    hook(body, sig, &r);
    if (r.status != 200)
        fail_msg("webhook: %ld %s", r.status, r.body);
    assert_non_null(strstr(r.body, "\"applied\":2"));
    assert_non_null(strstr(r.body, "\"index\":2"));
    s = redis_hget(lead_key(key, "tr-f"), "_suppressed");
    assert_non_null(s);
    assert_non_null(strstr(s, "hard_bounce"));
    free(s);
    assert_null(redis_hget(lead_key(key, "tr-e"), "_suppressed"));
    wait_timeline("tr-e", "event email.delivered", 1);
    wait_timeline("tr-f", "event email.bounced", 1);

    /* the same request again: a replay */
    before = fingerprint("tr-f");
    hook(body, sig, &r);
    assert_int_equal(r.status, 409);
    usleep(200 * 1000);
    after = fingerprint("tr-f");
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* a hard bounce suppresses the address in every plan */
    enrol_lead("tr-f", "once");
    wait_lead_run("tr-f", "once", "supp", "done");
    assert_int_equal(count_messages("tr-f"), 1);
    enrol_lead("tr-e", "once");
    wait_lead_run("tr-e", "once", "sent", "done");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_tracking_scanner_head_and_early_clicks_do_not_move_a_lead_a_person_does),
        cmocka_unit_test(test_tracking_open_pixel_apple_proxy_is_a_machine_a_reader_is_not),
        cmocka_unit_test(test_tracking_many_links_at_once_is_a_scanner),
        cmocka_unit_test(
            test_tracking_tampered_truncated_foreign_and_expired_tokens_get_4xx_and_write_nothing),
        cmocka_unit_test(
            test_tracking_unsubscribe_page_then_post_is_idempotent_and_suppresses_next_email),
        cmocka_unit_test(test_tracking_one_click_post_unsubscribes_at_once_in_every_plan),
        cmocka_unit_test(test_tracking_webhook_signed_applies_refuses_bad_old_and_replayed),
    };

    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests(tests, setup, teardown);
}
