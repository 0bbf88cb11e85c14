/* End to end: an event invitation whose email carries the lead's own RSVP link. nurtured runs
 * as a process with a real redis-server and sends over SMTP to aiosmtpd (the harness's); the
 * plan's event step signs the link and stores it on the lead (event_rsvp_link, event_id), the
 * next step sends workflows/templates/event_invitation.md, and the test takes the received
 * message apart: the text part holds the link itself, the HTML part its click-tracked form,
 * whose redirect lands on the RSVP page. Tampered RSVP and click links get 4xx and write
 * nothing; a "yes" to another event is recorded but does not move the run (the wait filters
 * on the event id); a "yes" through the mailed link moves the waiting run on. */
#include "api_util.h"
#include "track_util.h"
#include "nurture/track.h"

#define EVENT "pipeline-summit-2026"
#define PUBLIC_URL "https://links.example.test"

/* The invitation (event channel), the email with the real template, the wait for a yes. */
static const char rsvp_plan[] =
    "id: \"ev_mail\"\n"
    "start: \"invite\"\n"
    "nodes { id: \"invite\" send { channel: \"event\" params { name: \"event\" value: \"" EVENT
    "\" } params { name: \"kind\" value: \"invite\" } next: \"invite_email\" } }\n"
    "nodes { id: \"invite_email\" send { channel: \"email\" params { name: \"template\" value: "
    "\"event_invitation\" } on { outcome: \"suppressed\" to: \"gone\" } next: \"rsvp\" } }\n"
    "nodes { id: \"rsvp\" wait_event { filter { type: \"event.rsvp\" attrs { name: \"event\" "
    "value: \"" EVENT "\" } attrs { name: \"answer\" value: \"yes\" } } timeout { days: 10 } "
    "on_match: \"registered\" on_timeout: \"silent\" } }\n"
    "nodes { id: \"registered\" wait { duration { days: 30 } next: \"done\" } }\n"
    "nodes { id: \"done\" exit { reason: \"registered\" } }\n"
    "nodes { id: \"silent\" exit { reason: \"silent\" } }\n"
    "nodes { id: \"gone\" exit { reason: \"suppressed\" } }\n";

static nt_test_smtp_t smtp;

static int setup(void **state)
{
    static const char *extra[] = {"--tracking-secret", SECRET,
                                  "--channel.email.min_click_delay", "2",
                                  "--channel.email.templates", NT_SOURCE_DIR "/workflows/templates",
                                  "--channel.email.smtp_url", NULL,
                                  "--channel.email.starttls", "no",
                                  "--public-url", PUBLIC_URL, NULL};

    (void)state;
    if (nt_test_smtp_start(&smtp) != 0)
        return -1;
    extra[7] = smtp.url;
    snprintf(track_msg_dir, sizeof(track_msg_dir), "%s", smtp.msgs);
    return api_setup(extra);
}

static int teardown(void **state)
{
    api_teardown(state);
    nt_test_smtp_stop(&smtp);
    return 0;
}

/* The lead's attribute name, malloc'd, or NULL. */
static char *lead_attr(const char *id, const char *name)
{
    json_t *l = lead_get(id);
    const char *v = json_string_value(json_object_get(json_object_get(l, "attributes"), name));
    char *s = v ? strdup(v) : NULL;

    json_decref(l);
    return s;
}

/* url with PUBLIC_URL replaced by nothing: the path to ask the daemon. */
static const char *path_of(const char *url)
{
    if (strncmp(url, PUBLIC_URL "/", strlen(PUBLIC_URL) + 1) != 0)
        fail_msg("not under the public URL: %s", url);
    return url + strlen(PUBLIC_URL);
}

/* The targets of the HTML part's href="..." links that contain needle, in order; *n of them. */
static char **hrefs(const char *html, const char *needle, int *n)
{
    char **v = calloc(16, sizeof(*v));

    *n = 0;
    for (const char *p = html; (p = strstr(p, "href=\"")) != NULL && *n < 16;) {
        const char *q = strchr(p + 6, '"');

        assert_non_null(q);
        char *h = strndup(p + 6, (size_t)(q - p - 6));
        if (strstr(h, needle))
            v[(*n)++] = h;
        else
            free(h);
        p = q;
    }
    return v;
}

static void test_event_invitation_email_carries_the_rsvp_link_and_yes_moves_the_run(void **state)
{
    count_want_t one = {"ev-mail", 1};
    char **v, **clicks, *html, *text, *link, *evid, *before, *after, *other, *bad;
    const char *rsvp_path = NULL;
    int n, nclicks;
    resp_t r;

    (void)state;
    publish_textpb(rsvp_plan, 0);
    lead_in("ev-mail", "ev_mail");
    wait_lead_run("ev-mail", "ev_mail", "rsvp", "active");

    /* The link on the lead: a verifiable RSVP token of the event step for this event. */
    link = lead_attr("ev-mail", "event_rsvp_link");
    evid = lead_attr("ev-mail", "event_id");
    assert_non_null(link);
    assert_string_equal(evid, EVENT);
    {
        const char *tok = path_of(link);
        nt_track_token_t t;

        assert_int_equal(strncmp(tok, "/t/r/", 5), 0);
        assert_int_equal(nt_track_verify(SECRET, strlen(SECRET), tok + 5, time(NULL), &t),
                         NT_TRACK_OK);
        assert_int_equal(t.kind, NT_TRACK_RSVP);
        assert_string_equal(t.event, EVENT);
        assert_string_equal(t.lead, "ev-mail");
        assert_string_equal(t.node, "invite");
    }

    /* The message aiosmtpd received: both parts hold the same click link to it (checked
     * below), and neither the template's fallback. */
    assert_int_equal(nt_test_wait_until(has_messages, &one, 20000), 0);
    v = messages_of("ev-mail", &n);
    assert_int_equal(n, 1);
    text = mime_part(v[0], "text/plain");
    html = mime_part(v[0], "text/html");
    assert_null(strstr(text, "{{"));
    assert_null(strstr(text, "/t/r/")); /* every link of the text part is tracked too */
    assert_non_null(strstr(html, "Reply yes or no"));
    assert_null(strstr(html, "href=\"https://nurture.example/events/pipeline-summit-2026\""));
    assert_null(strstr(html, "/t/r/")); /* every link of the HTML part is tracked */

    /* The click link behind "Reply yes or no" redirects to the RSVP link. */
    clicks = hrefs(html, "/t/c/", &nclicks);
    assert_true(nclicks >= 2); /* the RSVP link and the agenda */
    for (int i = 0; i < nclicks && !rsvp_path; i++) {
        req("GET", path_of(clicks[i]), BROWSER, NULL, NULL, NULL, 0, &r);
        assert_int_equal(r.status, 302);
        if (strcmp(r.location, link) == 0) {
            rsvp_path = path_of(link);
            if (!strstr(text, clicks[i]))
                fail_msg("the text part lacks the RSVP click link %s:\n%s", clicks[i], text);
        }
    }
    if (!rsvp_path)
        fail_msg("no click link of the message redirects to %s:\n%s", link, html);

    /* The page behind it: Yes / No, posting to the same link. */
    req("GET", rsvp_path, BROWSER, NULL, NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.ctype, "text/html"));
    assert_non_null(strstr(r.body, "Will you come to " EVENT "?"));
    assert_non_null(strstr(r.body, "value=\"yes\""));
    assert_non_null(strstr(r.body, "value=\"no\""));
    {
        char action[4200];
        /* relative: the token, so that it posts back to the link behind any path prefix */
        snprintf(action, sizeof(action), "action=\"%s\"", rsvp_path + 5);
        assert_non_null(strstr(r.body, action));
    }

    /* Tampered: the RSVP token, the click token, a click token's target: 4xx, nothing
     * written (key count, events, the lead hash, its timeline). */
    usleep(300 * 1000); /* let the clicks above settle on the timeline */
    before = fingerprint("ev-mail");
    bad = strdup(rsvp_path);
    bad[8] = bad[8] == 'A' ? 'B' : 'A';
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    if (r.status < 400 || r.status > 499)
        fail_msg("tampered page: %ld %s", r.status, r.body);
    req("POST", bad, BROWSER, NULL, "application/x-www-form-urlencoded", "answer=yes", 10, &r);
    if (r.status < 400 || r.status > 499)
        fail_msg("tampered answer: %ld %s", r.status, r.body);
    free(bad);
    bad = strdup(path_of(clicks[0]));
    bad[strlen(bad) - 3] = bad[strlen(bad) - 3] == 'A' ? 'B' : 'A';
    req("GET", bad, BROWSER, NULL, NULL, NULL, 0, &r);
    if (r.status < 400 || r.status > 499)
        fail_msg("tampered click: %ld %s", r.status, r.body);
    free(bad);
    /* the RSVP link cut short, and with a byte too many */
    bad = strndup(rsvp_path, strlen(rsvp_path) - 1);
    req("POST", bad, BROWSER, NULL, "application/x-www-form-urlencoded", "answer=yes", 10, &r);
    if (r.status < 400 || r.status > 499)
        fail_msg("truncated answer: %ld %s", r.status, r.body);
    free(bad);
    assert_true(asprintf(&bad, "%sA", rsvp_path) > 0);
    req("POST", bad, BROWSER, NULL, "application/x-www-form-urlencoded", "answer=yes", 10, &r);
    if (r.status < 400 || r.status > 499)
        fail_msg("lengthened answer: %ld %s", r.status, r.body);
    free(bad);
    after = fingerprint("ev-mail");
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* A yes to another event, through a link signed for it: recorded, the run stays. */
    other = nt_track_sign(SECRET, strlen(SECRET), NT_TRACK_RSVP, "ev-mail:ev_mail:invite:1",
                          time(NULL), time(NULL) + 3600, "another-show-2026");
    assert_non_null(other);
    assert_true(asprintf(&bad, "/t/r/%s", other) > 0);
    req("POST", bad, BROWSER, NULL, "application/x-www-form-urlencoded", "answer=yes", 10, &r);
    assert_int_equal(r.status, 200);
    wait_timeline("ev-mail", "event.rsvp", 1);
    usleep(500 * 1000);
    wait_lead_run("ev-mail", "ev_mail", "rsvp", "active");
    free(bad);
    free(other);

    /* Yes through the mailed link: the run moves to registered. */
    req("POST", rsvp_path, BROWSER, NULL, "application/x-www-form-urlencoded", "answer=yes", 10,
        &r);
    assert_int_equal(r.status, 200);
    wait_lead_run("ev-mail", "ev_mail", "registered", "active");
    wait_timeline("ev-mail", "event.rsvp", 2);

    for (int i = 0; i < nclicks; i++)
        free(clicks[i]);
    free(clicks);
    free(text);
    free(html);
    messages_free(v, n);
    free(link);
    free(evid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_event_invitation_email_carries_the_rsvp_link_and_yes_moves_the_run),
    };

    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests(tests, setup, teardown);
}
