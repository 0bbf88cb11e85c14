/* The event channel (channels/event) against a real redis-server: the plugin is loaded from the
 * build's modules directory (nt_modules_load) and driven by a libevent loop whose host
 * update_lead is the daemon's own lead write (nt_api_lead_update, as main.c wires it, a late
 * completion dropped once the plugin is shut down). A dispatch stores the signed RSVP link on
 * the lead hash (event_rsvp_link, event_id) before it reports, and the link verifies as an
 * RSVP token of that message and event under /t/r/; a reminder replaces it, a duplicate id
 * writes nothing. Without a tracking secret no attribute is written. Hostile event ids, kinds,
 * messages and message ids are refused by validate and by dispatch, with nothing written. A
 * lead that does not exist fails permanently, a write that fails is transient and its retry
 * writes one line, a shutdown cancels a dispatch waiting for its write, a host older than
 * update_lead only gets the line, and Redis down is unavailable at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "clock.h"
#include "config.h"
#include "harness.h"
#include "http.h"
#include "keys.h"
#include "log.h"
#include "modules.h"
#include "nurture/track.h"

#define MODULES_DIR NT_BINARY_DIR "/modules"
#define SECRET "tracking-secret-for-the-event-channel-0123"
#define BASE "https://links.example.test/nt"

static nt_test_redis_t srv;
static redisContext *sync_rc;
static struct event_base *base;
static nt_redis_t *redis;
static nt_config_t cfg;
static nt_http_deps_t deps;

static char *tmp; /* the plugin's data directory */
static nt_modules_t *mods;
static const nt_channel_ops_t *ops;
static void *plugin;
static int plugin_down;
static nt_channel_host_t host;
static const char *cfg_secret = SECRET;
static nt_rc_t upd_fail; /* NT_OK: write; else complete every write with it, writing nothing */

/* Events the plugin posted. */
typedef struct posted {
    char lead[64], type[64], event[80], url[1024];
} posted_t;

static posted_t posts[16];
static size_t nposts;

/* ---- the host ---- */

static const char *host_config(const char *channel, const char *key, const char *def)
{
    if (strcmp(channel, "event") != 0)
        return def;
    if (strcmp(key, "tracking_secret") == 0)
        return cfg_secret;
    if (strcmp(key, "public_url") == 0)
        return cfg_secret != NULL ? BASE "/" : NULL; /* a trailing '/' is dropped */
    return def;
}

static int64_t host_now(void)
{
    return 1795000000000LL;
}

static nt_rc_t host_post_event(const char *lead_id, const char *type, const nt_kv_t *attrs,
                               size_t nattrs)
{
    assert_true(nposts < sizeof(posts) / sizeof(posts[0]));
    posted_t *p = &posts[nposts++];
    memset(p, 0, sizeof(*p));
    snprintf(p->lead, sizeof(p->lead), "%s", lead_id);
    snprintf(p->type, sizeof(p->type), "%s", type);
    for (size_t i = 0; i < nattrs; i++) {
        if (strcmp(attrs[i].key, "event") == 0)
            snprintf(p->event, sizeof(p->event), "%s", attrs[i].value);
        else if (strcmp(attrs[i].key, "rsvp_url") == 0)
            snprintf(p->url, sizeof(p->url), "%s", attrs[i].value);
    }
    return NT_OK;
}

/* A write the plugin asked for; its completion is dropped once the plugin is down. */
typedef struct upd {
    void (*done)(void *arg, nt_rc_t rc);
    void *arg;
} upd_t;

static void upd_done(void *arg, nt_rc_t rc)
{
    upd_t *u = arg;
    if (!plugin_down)
        u->done(u->arg, rc);
    free(u);
}

static void upd_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    upd_done(arg, upd_fail);
}

static nt_rc_t host_update_lead(const char *lead_id, const nt_kv_t *attrs, size_t nattrs,
                                void (*done)(void *arg, nt_rc_t rc), void *arg)
{
    upd_t *u = malloc(sizeof(*u));
    char err[256];
    nt_rc_t rc;

    assert_non_null(u);
    u->done = done;
    u->arg = arg;
    if (upd_fail != NT_OK) {
        struct timeval now = {0, 0};
        assert_int_equal(event_base_once(base, -1, EV_TIMEOUT, upd_fire, u, &now), 0);
        return NT_AGAIN;
    }
    rc = nt_api_lead_update(&deps, lead_id, attrs, nattrs, upd_done, u, err, sizeof(err));
    if (rc != NT_AGAIN)
        free(u);
    return rc;
}

/* ---- dispatch ---- */

typedef struct result {
    int calls;
    nt_rc_t rc;
    char outcome[64];
    char detail[2048];
    char link_at_done[1024]; /* event_rsvp_link on the lead when done was called */
    const char *lead;
} result_t;

static const char *lead_key(const char *id)
{
    static char key[NT_KEY_MAX];
    return nt_key_lead(key, nt_partition(id, cfg.partitions), id);
}

/* HGET of the lead hash, malloc'd, or NULL. */
static char *hget(const char *id, const char *field)
{
    redisReply *x = redisCommand(sync_rc, "HGET %s %s", lead_key(id), field);
    char *v = x != NULL && x->type == REDIS_REPLY_STRING ? strdup(x->str) : NULL;
    freeReplyObject(x);
    return v;
}

static void on_done(void *arg, nt_rc_t rc, const char *outcome, const char *detail)
{
    result_t *r = arg;
    char *link = hget(r->lead, "event_rsvp_link");

    r->calls++;
    r->rc = rc;
    snprintf(r->outcome, sizeof(r->outcome), "%s", outcome != NULL ? outcome : "");
    snprintf(r->detail, sizeof(r->detail), "%s", detail != NULL ? detail : "");
    snprintf(r->link_at_done, sizeof(r->link_at_done), "%s", link != NULL ? link : "");
    free(link);
}

/* Dispatch to lead_id with idempotency key id and the params (name, value pairs, NULL-ended),
 * then run the loop until done (10 s at most). */
static void dispatch(const char *id, const char *lead_id, result_t *r, ...)
{
    nt_kv_t params[8];
    size_t np = 0;
    va_list ap;
    const char *k;

    memset(r, 0, sizeof(*r));
    r->lead = lead_id;
    va_start(ap, r);
    while ((k = va_arg(ap, const char *)) != NULL && np < 8) {
        params[np].key = k;
        params[np].value = va_arg(ap, const char *);
        np++;
    }
    va_end(ap);
    const nt_kv_t lead[] = {{"email", "guest@example.org"}};
    nt_message_t msg = {
        .id = id,
        .lead_id = lead_id,
        .plan_id = "tradeshow_followup",
        .plan_version = 1,
        .node_id = "invite",
        .visit = 3,
        .params = params,
        .nparams = np,
        .lead = lead,
        .nlead = 1,
        .attempt = 1,
    };
    nt_rc_t rc = ops->dispatch(plugin, &msg, on_done, r);
    if (rc == NT_OK)
        assert_int_equal(r->calls, 1); /* done was called already */
    else
        assert_int_equal(rc, NT_AGAIN);
    int64_t until = nt_mono_ms() + 10000;
    while (r->calls == 0 && nt_mono_ms() < until)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(r->calls, 1);
}

/* ---- what was written ---- */

static void make_lead(const char *id)
{
    redisReply *x = redisCommand(sync_rc, "HSET %s email %s@example.org _created 1",
                                 lead_key(id), id);
    assert_non_null(x);
    freeReplyObject(x);
}

/* The lead hash as one string ("field=value\n" sorted by Redis' order), malloc'd. */
static char *lead_dump(const char *id)
{
    redisReply *x = redisCommand(sync_rc, "HGETALL %s", lead_key(id));
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);

    assert_non_null(x);
    for (size_t i = 0; i + 1 < x->elements; i += 2)
        fprintf(f, "%s=%s\n", x->element[i]->str, x->element[i + 1]->str);
    fclose(f);
    freeReplyObject(x);
    return s;
}

static char *channel_file(void)
{
    char *path = NULL, *text = NULL;
    size_t cap = 0;
    FILE *f;

    assert_true(asprintf(&path, "%s/event-channel.jsonl", tmp) > 0);
    f = fopen(path, "r");
    free(path);
    if (f == NULL)
        return strdup("");
    if (getdelim(&text, &cap, '\0', f) < 0) {
        free(text);
        text = strdup("");
    }
    fclose(f);
    return text;
}

/* The lines of the channel's file with "id":"<id>". */
static int lines_of(const char *id)
{
    char *text = channel_file(), *needle = NULL;
    int n = 0;

    assert_true(asprintf(&needle, "{\"id\":\"%s\",", id) > 0);
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    free(needle);
    free(text);
    return n;
}

/* The rsvp_url of the line of id (the last one), malloc'd. */
static char *line_url(const char *id)
{
    char *text = channel_file(), *url = NULL;
    char *save = NULL;

    for (char *l = strtok_r(text, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        json_t *j = json_loads(l, 0, NULL);
        const char *i = json_string_value(json_object_get(j, "id"));
        if (i != NULL && strcmp(i, id) == 0) {
            free(url);
            url = strdup(json_string_value(json_object_get(j, "rsvp_url")));
        }
        json_decref(j);
    }
    free(text);
    assert_non_null(url);
    return url;
}

/* url is BASE/t/r/<token>, the token an RSVP of msgid and event signed with SECRET. */
static void assert_rsvp_link(const char *url, const char *msgid, const char *lead,
                             const char *event)
{
    nt_track_token_t t;
    const char *prefix = BASE "/t/r/";

    assert_non_null(url);
    if (strncmp(url, prefix, strlen(prefix)) != 0)
        fail_msg("not an RSVP link under %s: %s", prefix, url);
    assert_int_equal(
        nt_track_verify(SECRET, strlen(SECRET), url + strlen(prefix), time(NULL), &t),
        NT_TRACK_OK);
    assert_int_equal(t.kind, NT_TRACK_RSVP);
    assert_string_equal(t.msgid, msgid);
    assert_string_equal(t.lead, lead);
    assert_string_equal(t.event, event);
    assert_true(t.expires > time(NULL) + 300 * 86400); /* rsvp_days, 366 by default */
    /* Another key does not verify it. */
    assert_int_equal(nt_track_verify("another-secret-0123456789", 25, url + strlen(prefix),
                                     time(NULL), &t),
                     NT_TRACK_EFORGED);
}

/* ---- fixtures ---- */

static int group_setup(void **state)
{
    (void)state;
    if (nt_test_loop_start(&srv, &sync_rc, &base, &redis) != 0)
        return -1;
    nt_config_defaults(&cfg);
    deps = (nt_http_deps_t){.base = base, .cfg = &cfg, .redis = redis};
    ops = nt_test_channel_load(MODULES_DIR, "event", &mods);
    if (ops == NULL)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    nt_modules_free(mods);
    nt_config_fini(&cfg);
    nt_test_loop_stop(&srv, sync_rc, base, redis);
    return 0;
}

/* A fresh data directory and the plugin's init; old_host: a host without update_lead. */
static void start_plugin(int old_host)
{
    char *err = NULL;

    tmp = nt_test_tmpdir("nt-event-channel");
    assert_non_null(tmp);
    host = (nt_channel_host_t){
        .abi_version = NT_CHANNEL_ABI_VERSION,
        .size = sizeof(nt_channel_host_t),
        .log = nt_log_channel,
        .config = host_config,
        .event_base = base,
        .data_dir = tmp,
        .now_ms = host_now,
        .post_event = host_post_event,
        .update_lead = host_update_lead,
    };
    if (old_host)
        host.size = (uint32_t)offsetof(nt_channel_host_t, update_lead);
    plugin_down = 0;
    nposts = 0;
    if (ops->init(&host, &plugin, &err) != NT_OK)
        fail_msg("init: %s", err);
}

static int stop_plugin(void **state)
{
    (void)state;
    if (plugin != NULL)
        ops->shutdown(plugin);
    plugin = NULL;
    plugin_down = 1;
    /* Late completions of the host's writes run now and are dropped. */
    for (int i = 0; i < 50; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    if (tmp != NULL && getenv("NT_TEST_KEEP") == NULL)
        nt_test_rmrf(tmp);
    free(tmp);
    tmp = NULL;
    cfg_secret = SECRET;
    upd_fail = NT_OK;
    return 0;
}

/* ---- tests ---- */

static void test_event_channel_stores_a_verifiable_rsvp_link_on_the_lead_before_reporting(
    void **state)
{
    result_t r;
    char *link, *id, *url, *before;

    (void)state;
    start_plugin(0);
    make_lead("ec-1");
    dispatch("ec-1:tradeshow_followup:invite:3", "ec-1", &r, "event", "pipeline-summit-2026",
             "kind", "invite", "message", "Free expo pass", NULL);
    assert_int_equal(r.rc, NT_OK);
    assert_string_equal(r.outcome, "");
    link = hget("ec-1", "event_rsvp_link");
    id = hget("ec-1", "event_id");
    assert_rsvp_link(link, "ec-1:tradeshow_followup:invite:3", "ec-1", "pipeline-summit-2026");
    assert_string_equal(id, "pipeline-summit-2026");
    /* Written before the report: the next step renders it. */
    assert_string_equal(r.link_at_done, link);
    /* The same link in the outcome's detail, the line and the event. */
    assert_non_null(strstr(r.detail, link));
    url = line_url("ec-1:tradeshow_followup:invite:3");
    assert_string_equal(url, link);
    free(url);
    assert_int_equal(nposts, 1);
    assert_string_equal(posts[0].type, "event.invited");
    assert_string_equal(posts[0].lead, "ec-1");
    assert_string_equal(posts[0].event, "pipeline-summit-2026");
    assert_string_equal(posts[0].url, link);
    {
        char *email = hget("ec-1", "email"); /* the rest of the lead stays */
        assert_string_equal(email, "ec-1@example.org");
        free(email);
    }

    /* A reminder signs a new link, which replaces the first on the lead. */
    dispatch("ec-1:tradeshow_followup:reminder:9", "ec-1", &r, "event", "pipeline-summit-2026",
             "kind", "reminder", NULL);
    assert_int_equal(r.rc, NT_OK);
    free(link);
    link = hget("ec-1", "event_rsvp_link");
    assert_rsvp_link(link, "ec-1:tradeshow_followup:reminder:9", "ec-1",
                     "pipeline-summit-2026");
    assert_int_equal(nposts, 2);

    /* The first id again: reported, nothing written or posted. */
    before = lead_dump("ec-1");
    dispatch("ec-1:tradeshow_followup:invite:3", "ec-1", &r, "event", "pipeline-summit-2026",
             NULL);
    assert_int_equal(r.rc, NT_OK);
    assert_non_null(strstr(r.detail, "duplicate"));
    {
        char *after = lead_dump("ec-1");
        assert_string_equal(before, after);
        free(after);
    }
    assert_int_equal(lines_of("ec-1:tradeshow_followup:invite:3"), 1);
    assert_int_equal(nposts, 2);
    free(before);
    free(link);
    free(id);
}

static void test_event_channel_without_a_tracking_secret_writes_no_attribute(void **state)
{
    result_t r;
    char *before, *after, *url;

    (void)state;
    cfg_secret = NULL;
    start_plugin(0);
    make_lead("ec-2");
    before = lead_dump("ec-2");
    dispatch("ec-2:tradeshow_followup:invite:3", "ec-2", &r, "event", "pipeline-summit-2026",
             NULL);
    assert_int_equal(r.rc, NT_OK);
    assert_non_null(strstr(r.detail, "no RSVP link"));
    after = lead_dump("ec-2");
    assert_string_equal(before, after); /* neither event_rsvp_link nor event_id */
    url = line_url("ec-2:tradeshow_followup:invite:3");
    assert_string_equal(url, "");
    assert_int_equal(nposts, 1);
    assert_string_equal(posts[0].url, "");
    free(url);
    free(before);
    free(after);
}

static void test_event_channel_refuses_hostile_params_and_ids_writing_nothing(void **state)
{
    static const char *const bad_events[] = {
        "",        "Pipeline", "../../etc/passwd", "ev id",   "ev\r\nX-Injected: 1",
        "ev\"}",   "ev|x",     "ev:x",             "summit/2026", "\xc3\xa9v\xc3\xa9nement",
        "ev\\x",   "ev%0a",
    };
    char big[80];
    result_t r;
    char *before, *after, *err = NULL;

    (void)state;
    start_plugin(0);
    make_lead("ec-3");
    memset(big, 'a', 65);
    big[65] = '\0';
    before = lead_dump("ec-3");
    for (size_t i = 0; i <= sizeof(bad_events) / sizeof(bad_events[0]); i++) {
        const char *ev = i < sizeof(bad_events) / sizeof(bad_events[0]) ? bad_events[i] : big;
        const nt_kv_t p[] = {{"event", ev}};

        err = NULL;
        assert_int_equal(ops->validate(p, 1, &err), NT_EINVAL);
        assert_non_null(err);
        assert_non_null(strstr(err, "event id"));
        free(err);
        dispatch("ec-3:tradeshow_followup:invite:3", "ec-3", &r, "event", ev, NULL);
        assert_int_equal(r.rc, NT_EPERMFAIL);
    }
    /* The longest id that is one. */
    big[64] = '\0';
    {
        const nt_kv_t p[] = {{"event", big}, {"kind", "reminder"}, {"message", "Hi"}};
        err = NULL;
        assert_int_equal(ops->validate(p, 3, &err), NT_OK);
        assert_null(err);
    }
    {
        char *huge = malloc(2002);
        const nt_kv_t kinds[] = {{"event", "e"}, {"kind", "invitation"}};
        const nt_kv_t lines[] = {{"event", "e"}, {"message", "one\r\nBcc: x@evil.example"}};
        nt_kv_t longmsg[] = {{"event", "e"}, {"message", huge}};

        assert_non_null(huge);
        memset(huge, 'm', 2001);
        huge[2001] = '\0';
        assert_int_equal(ops->validate(kinds, 2, &err), NT_EINVAL);
        free(err);
        assert_int_equal(ops->validate(lines, 2, &err), NT_EINVAL);
        free(err);
        assert_int_equal(ops->validate(longmsg, 2, &err), NT_EINVAL);
        free(err);
        free(huge);
    }
    /* Message ids that cannot be signed or written. */
    dispatch("ec-3:tradeshow\"_followup:invite:3", "ec-3", &r, "event", "e", NULL);
    assert_int_equal(r.rc, NT_EPERMFAIL);
    dispatch("ec-3\\:tradeshow_followup:invite:3", "ec-3", &r, "event", "e", NULL);
    assert_int_equal(r.rc, NT_EPERMFAIL);
    dispatch("not-a-message-id", "ec-3", &r, "event", "e", NULL);
    assert_int_equal(r.rc, NT_EPERMFAIL);
    dispatch("", "ec-3", &r, "event", "e", NULL);
    assert_int_equal(r.rc, NT_EPERMFAIL);
    dispatch("ec-3:tradeshow_followup:invite:3", "ec-3", &r, NULL); /* no event at all */
    assert_int_equal(r.rc, NT_EPERMFAIL);

    after = lead_dump("ec-3");
    assert_string_equal(before, after);
    {
        char *text = channel_file();
        assert_string_equal(text, "");
        free(text);
    }
    assert_int_equal(nposts, 0);
    free(before);
    free(after);
}

static void test_event_channel_a_lead_that_does_not_exist_fails_and_writes_nothing(void **state)
{
    result_t r;
    long long keys;
    redisReply *x;

    (void)state;
    start_plugin(0);
    x = redisCommand(sync_rc, "DBSIZE");
    keys = x->integer;
    freeReplyObject(x);
    dispatch("ec-nobody:tradeshow_followup:invite:3", "ec-nobody", &r, "event",
             "pipeline-summit-2026", NULL);
    assert_int_equal(r.rc, NT_EPERMFAIL);
    assert_non_null(strstr(r.detail, "no longer exists"));
    x = redisCommand(sync_rc, "DBSIZE");
    assert_int_equal(x->integer, keys); /* no lead created */
    freeReplyObject(x);
    assert_int_equal(lines_of("ec-nobody:tradeshow_followup:invite:3"), 0);
    assert_int_equal(nposts, 0);

    /* A lead id a link can name but the host refuses: permanent, nothing written. */
    dispatch("ec/7:tradeshow_followup:invite:3", "ec/7", &r, "event", "pipeline-summit-2026",
             NULL);
    assert_int_equal(r.rc, NT_EPERMFAIL);
    assert_non_null(strstr(r.detail, "refused"));
    assert_int_equal(lines_of("ec/7:tradeshow_followup:invite:3"), 0);
    assert_int_equal(nposts, 0);
}

static void test_event_channel_a_failed_write_is_transient_and_the_retry_writes_once(
    void **state)
{
    result_t r;
    char *link;

    (void)state;
    start_plugin(0);
    make_lead("ec-4");
    upd_fail = NT_ETIMEOUT;
    dispatch("ec-4:tradeshow_followup:invite:3", "ec-4", &r, "event", "pipeline-summit-2026",
             NULL);
    assert_int_equal(r.rc, NT_ETIMEOUT);
    upd_fail = NT_EUNAVAIL;
    dispatch("ec-4:tradeshow_followup:invite:3", "ec-4", &r, "event", "pipeline-summit-2026",
             NULL);
    assert_int_equal(r.rc, NT_EUNAVAIL);
    assert_int_equal(lines_of("ec-4:tradeshow_followup:invite:3"), 0);
    assert_int_equal(nposts, 0);
    link = hget("ec-4", "event_rsvp_link");
    assert_null(link);

    /* The host retries the same id: it goes through, once. */
    upd_fail = NT_OK;
    dispatch("ec-4:tradeshow_followup:invite:3", "ec-4", &r, "event", "pipeline-summit-2026",
             NULL);
    assert_int_equal(r.rc, NT_OK);
    link = hget("ec-4", "event_rsvp_link");
    assert_rsvp_link(link, "ec-4:tradeshow_followup:invite:3", "ec-4", "pipeline-summit-2026");
    assert_int_equal(lines_of("ec-4:tradeshow_followup:invite:3"), 1);
    assert_int_equal(nposts, 1);
    free(link);
}

static void test_event_channel_shutdown_cancels_a_dispatch_waiting_for_its_write(void **state)
{
    result_t r = {.lead = "ec-5"};
    nt_kv_t params[] = {{"event", "pipeline-summit-2026"}};
    nt_message_t msg = {.id = "ec-5:tradeshow_followup:invite:3",
                        .lead_id = "ec-5",
                        .plan_id = "tradeshow_followup",
                        .node_id = "invite",
                        .params = params,
                        .nparams = 1,
                        .attempt = 1};

    (void)state;
    start_plugin(0);
    make_lead("ec-5");
    assert_int_equal(ops->dispatch(plugin, &msg, on_done, &r), NT_AGAIN);
    assert_int_equal(r.calls, 0);
    ops->shutdown(plugin);
    plugin = NULL;
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, NT_ECANCELED);
    stop_plugin(NULL); /* the write completes now: dropped, done not called again */
    assert_int_equal(r.calls, 1);
}

static void test_event_channel_with_a_host_before_update_lead_only_writes_the_line(void **state)
{
    result_t r;
    char *before, *after, *url;

    (void)state;
    start_plugin(1);
    make_lead("ec-6");
    before = lead_dump("ec-6");
    dispatch("ec-6:tradeshow_followup:invite:3", "ec-6", &r, "event", "pipeline-summit-2026",
             NULL);
    assert_int_equal(r.rc, NT_OK);
    after = lead_dump("ec-6");
    assert_string_equal(before, after);
    url = line_url("ec-6:tradeshow_followup:invite:3");
    assert_rsvp_link(url, "ec-6:tradeshow_followup:invite:3", "ec-6", "pipeline-summit-2026");
    free(url);
    free(before);
    free(after);
}

/* Last: the server stays down. */
static void test_event_channel_with_redis_down_is_unavailable_at_once(void **state)
{
    result_t r;
    int64_t until = nt_mono_ms() + 10000;

    (void)state;
    start_plugin(0);
    nt_test_redis_stop_only(&srv);
    while (nt_redis_up(redis) && nt_mono_ms() < until)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_false(nt_redis_up(redis));
    r.lead = "ec-7";
    dispatch("ec-7:tradeshow_followup:invite:3", "ec-7", &r, "event", "pipeline-summit-2026",
             NULL);
    assert_int_equal(r.rc, NT_EUNAVAIL);
    assert_int_equal(lines_of("ec-7:tradeshow_followup:invite:3"), 0);
    assert_int_equal(nposts, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_event_channel_stores_a_verifiable_rsvp_link_on_the_lead_before_reporting,
            stop_plugin),
        cmocka_unit_test_teardown(
            test_event_channel_without_a_tracking_secret_writes_no_attribute, stop_plugin),
        cmocka_unit_test_teardown(
            test_event_channel_refuses_hostile_params_and_ids_writing_nothing, stop_plugin),
        cmocka_unit_test_teardown(
            test_event_channel_a_lead_that_does_not_exist_fails_and_writes_nothing, stop_plugin),
        cmocka_unit_test_teardown(
            test_event_channel_a_failed_write_is_transient_and_the_retry_writes_once,
            stop_plugin),
        cmocka_unit_test_teardown(
            test_event_channel_shutdown_cancels_a_dispatch_waiting_for_its_write, stop_plugin),
        cmocka_unit_test_teardown(
            test_event_channel_with_a_host_before_update_lead_only_writes_the_line, stop_plugin),
        cmocka_unit_test_teardown(test_event_channel_with_redis_down_is_unavailable_at_once,
                                  stop_plugin),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
