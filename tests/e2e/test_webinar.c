/* End to end: the webinar attendance webhook (POST /v1/webhooks/webinar) against nurtured run as
 * a process and a real redis-server: a batch of 10,000 records, replay with a new signature,
 * identity by registrant id, normalised and secondary emails, unknown attendees becoming leads
 * enrolled in the follow-up plan, and bad requests that write nothing. */
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/hmac.h>

#include "api_util.h"

#define WSECRET "webhook-secret-for-the-webinar-tests-0123"
#define NREC 10000

/* Leads that entered wait here for an attendance. */
static const char followup_plan[] =
    "id: \"wb_follow\"\n"
    "start: \"attended\"\n"
    "nodes { id: \"attended\" wait_event { filter { type: \"webinar.attended\" } "
    "timeout { days: 30 } on_match: \"thanks\" on_timeout: \"quiet\" } }\n"
    "nodes { id: \"thanks\" exit { reason: \"attended\" } }\n"
    "nodes { id: \"quiet\" exit { reason: \"quiet\" } }\n";

static int setup(void **state)
{
    static const char *extra[] = {"--webhook-secret", WSECRET, "--max-body", "4194304", NULL};

    (void)state;
    return api_setup(extra);
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

typedef struct resp {
    long status;
    char *body;
    size_t len;
    json_t *json;
} resp_t;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    resp_t *r = arg;
    size_t k = size * n;
    char *b = realloc(r->body, r->len + k + 1);

    if (!b)
        return 0;
    memcpy(b + r->len, p, k);
    r->len += k;
    b[r->len] = '\0';
    r->body = b;
    return k;
}

static void resp_fini(resp_t *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

/* POST body to the webhook with the signature header line sig (NULL: none). */
static void hook(const char *body, const char *sig, const char *token, resp_t *out)
{
    CURL *e = curl_easy_init();
    struct curl_slist *h = NULL;
    char url[256], auth[256];

    memset(out, 0, sizeof(*out));
    snprintf(url, sizeof(url), "%s/v1/webhooks/webinar", env.daemon.url);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
    h = curl_slist_append(h, auth);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    if (sig)
        h = curl_slist_append(h, sig);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 60L);
    if (curl_easy_perform(e) != CURLE_OK)
        fail_msg("POST /v1/webhooks/webinar: no response");
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    out->json = out->body ? json_loads(out->body, 0, NULL) : NULL;
}

static void signed_hook(const char *body, resp_t *out)
{
    char sig[256];

    sign_webhook(WSECRET, time(NULL), body, sig, sizeof(sig));
    hook(body, sig, WEBHOOK, out);
}

static long long num(const resp_t *r, const char *field)
{
    json_t *v = json_object_get(r->json, field);

    if (!json_is_integer(v))
        fail_msg("no %s in %ld %s", field, r->status, r->body ? r->body : "");
    return (long long)json_integer_value(v);
}

static void expect(const resp_t *r, long status)
{
    if (r->status != status)
        fail_msg("wanted %ld, got %ld %s", status, r->status, r->body ? r->body : "");
}

/* ---- plans and leads -------------------------------------------------------------------------- */

/* Keys matching pattern (SCAN). */
static long long count_keys(const char *pattern)
{
    long long n = 0;
    char cursor[32] = "0";

    do {
        redisReply *x = redisCommand(env.rc, "SCAN %s MATCH %s COUNT 5000", cursor, pattern);

        assert_non_null(x);
        assert_int_equal(x->type, REDIS_REPLY_ARRAY);
        snprintf(cursor, sizeof(cursor), "%s", x->element[0]->str);
        n += (long long)x->element[1]->elements;
        freeReplyObject(x);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

/* Everything a request could have written, whatever the worker consumes meanwhile: leads,
 * applied markers, index entries, and the last id added to each events stream. */
static char *fingerprint(void)
{
    char *s = NULL, key[NT_KEY_MAX];
    long long idx = 0;
    size_t cap = 64 * 48 + 128, len = 0;
    char *ids = calloc(1, cap);

    assert_non_null(ids);
    for (unsigned p = 0; p < API_PARTITIONS; p++) {
        redisReply *x;

        idx += redis_int("HLEN %s", nt_key_part(key, p, "idx:email"));
        idx += redis_int("HLEN %s", nt_key_part(key, p, "idx:reg"));
        x = redisCommand(env.rc, "XINFO STREAM %s", nt_key_part(key, p, "events"));
        assert_non_null(x);
        for (size_t i = 0; x->type == REDIS_REPLY_ARRAY && i + 1 < x->elements; i += 2)
            if (strcmp(x->element[i]->str, "last-generated-id") == 0)
                len += (size_t)snprintf(ids + len, cap - len, "%s,", x->element[i + 1]->str);
        freeReplyObject(x);
    }
    assert_true(asprintf(&s, "%lld|%lld|%lld|%s", count_keys("nt:*:lead:*"),
                         count_keys("nt:*:wb:*"), idx, ids) > 0);
    free(ids);
    return s;
}

/* ---- the tests ------------------------------------------------------------------------------ */

static void test_webinar_batch_of_10000_applied_once_identity_by_index_unknowns_enrolled(
    void **state)
{
    char *body, *p, *before, *after;
    size_t cap = (size_t)NREC * 96 + 512;
    resp_t r;
    json_t *l;

    (void)state;
    publish_textpb(followup_plan, 1);
    /* known people: by primary email (stored with capitals and spaces), by a secondary one */
    create_lead("{\"id\":\"wb-known-1\",\"attributes\":{\"email\":\" Known.One@Example.COM \"}}");
    create_lead("{\"id\":\"wb-known-2\",\"attributes\":{\"email\":\"two@work.example\","
                "\"emails\":\"old@home.example, Second@Home.Example\"}}");
    enrol_lead("wb-known-1", "wb_follow");
    wait_lead_run("wb-known-1", "wb_follow", "attended", "active");

    body = malloc(cap);
    assert_non_null(body);
    p = body + sprintf(body, "{\"webinar\":\"launch-2026\",\"followup\":\"wb_follow\",\"records\":[");
    p += sprintf(p, "{\"email\":\"known.one@example.com\",\"kind\":\"attended\",\"minutes\":55},");
    p += sprintf(p, "{\"email\":\"second@home.example\",\"kind\":\"attended\",\"minutes\":12,"
                    "\"registrant\":\"reg-2\"},");
    for (int i = 2; i < NREC; i++)
        p += sprintf(p, "%s{\"email\":\"Person%d@Example.net\",\"name\":\"Per Son%d\","
                        "\"kind\":\"attended\",\"minutes\":%d}",
                     i > 2 ? "," : "", i, i, i % 60);
    strcpy(p, "]}");

    signed_hook(body, &r);
    expect(&r, 200);
    assert_int_equal(num(&r, "applied"), NREC);
    assert_int_equal(num(&r, "already"), 0);
    assert_int_equal(num(&r, "created"), NREC - 2);
    assert_int_equal(num(&r, "enrolled"), NREC - 2);
    assert_int_equal(json_array_size(json_object_get(r.json, "unknown")), 0);
    resp_fini(&r);

    /* the known lead waiting for an attendance moved on; the secondary address found its lead */
    wait_lead_run("wb-known-1", "wb_follow", "thanks", "done");
    l = lead_get("wb-known-2");
    assert_non_null(l);
    json_decref(l);
    /* an unknown attendee is a new lead (inquiry) in the follow-up plan */
    l = lead_get("person77@example.net");
    assert_non_null(l);
    assert_string_equal(json_string_value(json_object_get(l, "stage")), "inquiry");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(l, "attributes"), "first_name")), "Per");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(l, "attributes"), "email")),
        "person77@example.net");
    json_decref(l);
    /* enrolled; whether its own attendance (posted in the same request) also moves it depends
     * on whether the run's first step comes before the event is read */
    wait_lead_run("person77@example.net", "wb_follow", NULL, NULL);

    /* the same records again, newly signed: nothing applied twice, nothing written */
    sleep(1);
    before = fingerprint();
    signed_hook(body, &r);
    expect(&r, 200);
    assert_int_equal(num(&r, "applied"), 0);
    assert_int_equal(num(&r, "already"), NREC);
    assert_int_equal(num(&r, "created"), 0);
    resp_fini(&r);
    after = fingerprint();
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* the registrant id now names wb-known-2: a record with the id alone finds it */
    signed_hook("{\"webinar\":\"launch-2026\",\"records\":[{\"registrant\":\"reg-2\","
                "\"kind\":\"recording_viewed\"}]}",
                &r);
    expect(&r, 200);
    assert_int_equal(num(&r, "applied"), 1);
    resp_fini(&r);
    {
        char key[NT_KEY_MAX];

        snprintf(key, sizeof(key), "nt:{%u}:wb:launch-2026:wb-known-2:recording_viewed",
                 nt_partition("wb-known-2", API_PARTITIONS));
        assert_true(key_exists(key));
    }
    free(body);
}

static void test_webinar_unsigned_replayed_malformed_get_4xx_and_write_nothing(void **state)
{
    const char *body = "{\"webinar\":\"w2\",\"records\":[{\"email\":\"new-x@example.org\","
                       "\"kind\":\"registered\"}]}";
    char sig[256], *before, *after;
    resp_t r;

    (void)state;
    before = fingerprint();
    hook(body, NULL, WEBHOOK, &r); /* unsigned */
    expect(&r, 401);
    resp_fini(&r);
    sign_webhook("another-secret-0123456789", time(NULL), body, sig, sizeof(sig));
    hook(body, sig, WEBHOOK, &r);
    expect(&r, 401);
    resp_fini(&r);
    sign_webhook(WSECRET, time(NULL) - 900, body, sig, sizeof(sig)); /* too old */
    hook(body, sig, WEBHOOK, &r);
    expect(&r, 401);
    resp_fini(&r);
    sign_webhook(WSECRET, time(NULL), body, sig, sizeof(sig)); /* a rep may not post it */
    hook(body, sig, REP, &r);
    expect(&r, 403);
    resp_fini(&r);
    {
        static const char *const bad[] = {
            "{\"webinar\":\"w2\",\"records\":[",
            "{\"webinar\":\"W 2\",\"records\":[]}",
            "{\"webinar\":\"w2\",\"records\":[{\"email\":\"x@y.z\",\"kind\":\"slept\"}]}",
            "{\"webinar\":\"w2\",\"records\":[{\"email\":\"not-an-address\",\"kind\":\"attended\"}]}",
            "{\"webinar\":\"w2\",\"records\":[{\"kind\":\"attended\"}]}",
            "{\"webinar\":\"w2\",\"records\":[{\"email\":\"x@y.z\",\"kind\":\"attended\","
            "\"minutes\":-3}]}",
            "{\"webinar\":\"w2\",\"records\":[{\"email\":\"x@y.z\",\"kind\":\"attended\","
            "\"colour\":\"red\"}]}",
            "{\"webinar\":\"w2\",\"followup\":\"no_such_plan\",\"records\":[{\"email\":"
            "\"x@y.z\",\"kind\":\"attended\"}]}",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            signed_hook(bad[i], &r);
            if (r.status != 400 && r.status != 404)
                fail_msg("bad[%zu]: %ld %s", i, r.status, r.body);
            resp_fini(&r);
        }
    }
    after = fingerprint();
    assert_string_equal(before, after);
    free(after);

    /* signed once: applied; the same signature again: 409 and nothing more */
    sign_webhook(WSECRET, time(NULL), body, sig, sizeof(sig));
    hook(body, sig, WEBHOOK, &r);
    expect(&r, 200);
    assert_int_equal(num(&r, "applied"), 1);
    assert_int_equal(num(&r, "created"), 1);
    resp_fini(&r);
    free(before);
    before = fingerprint();
    hook(body, sig, WEBHOOK, &r);
    expect(&r, 409);
    resp_fini(&r);
    after = fingerprint();
    assert_string_equal(before, after);
    free(before);
    free(after);
}

/* A no-show waiting on the recording branch (a wait_event for recording_viewed that also
 * matches webinar.attended, as workflows/webinar_invite.textpb has it) is moved by a late
 * attendance to the attendee's branch. */
static void test_webinar_late_attendance_moves_a_lead_waiting_for_the_recording(void **state)
{
    static const char late_plan[] =
        "id: \"wb_late\"\n"
        "start: \"watched\"\n"
        "nodes { id: \"watched\" wait_event { filter { type: \"webinar.recording_viewed\" "
        "or_types: \"webinar.attended\" } timeout { days: 5 } on_match: \"which\" "
        "on_timeout: \"no_show\" } }\n"
        "nodes { id: \"which\" branch { cases { when { event_seen { type: \"webinar.attended\" "
        "within { days: 8 } } } to: \"attended\" } default: \"viewer\" } }\n"
        "nodes { id: \"attended\" exit { reason: \"attended_late\" } }\n"
        "nodes { id: \"viewer\" exit { reason: \"viewer\" } }\n"
        "nodes { id: \"no_show\" exit { reason: \"no_show\" } }\n";
    resp_t r;

    (void)state;
    publish_textpb(late_plan, 1);
    create_lead("{\"id\":\"wb-late\",\"attributes\":{\"email\":\"late@example.org\"}}");
    enrol_lead("wb-late", "wb_late");
    wait_lead_run("wb-late", "wb_late", "watched", "active");
    signed_hook("{\"webinar\":\"w3\",\"records\":[{\"email\":\"LATE@example.org\","
                "\"kind\":\"attended\",\"minutes\":30}]}",
                &r);
    expect(&r, 200);
    assert_int_equal(num(&r, "applied"), 1);
    assert_int_equal(num(&r, "created"), 0);
    resp_fini(&r);
    wait_lead_run("wb-late", "wb_late", "attended", "done");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_webinar_batch_of_10000_applied_once_identity_by_index_unknowns_enrolled),
        cmocka_unit_test(test_webinar_unsigned_replayed_malformed_get_4xx_and_write_nothing),
        cmocka_unit_test(test_webinar_late_attendance_moves_a_lead_waiting_for_the_recording),
    };

    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests(tests, setup, api_teardown);
}
