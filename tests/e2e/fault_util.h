/* Helpers shared by the fault tests (test_crash, test_two_workers, test_redis_restart,
 * test_sigterm): publishing a plan written as text, bulk enrolment of numbered leads, the plan's
 * stats, and the end-of-test checks of what Redis and the log channel's files hold.
 *
 * Leads are named <prefix><5 digits>. Every check reads Redis directly (pipelined, sync hiredis),
 * so it does not depend on the daemon that is being hurt. */
#ifndef NT_TEST_FAULT_UTIL_H
#define NT_TEST_FAULT_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "keys.h"

#define FT_UNUSED static __attribute__((unused))

FT_UNUSED int64_t ft_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

FT_UNUSED void ft_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The random seed: NT_TEST_SEED when set, else the time; printed so a run can be repeated. */
FT_UNUSED unsigned ft_seed(const char *test)
{
    const char *s = getenv("NT_TEST_SEED");
    unsigned seed = s != NULL && s[0] != '\0' ? (unsigned)strtoul(s, NULL, 10)
                                               : (unsigned)time(NULL) ^ (unsigned)getpid();
    printf("%s: seed %u (repeat with NT_TEST_SEED=%u)\n", test, seed, seed);
    fflush(stdout);
    return seed;
}

FT_UNUSED void ft_lead_id(char *buf, size_t len, const char *prefix, int i)
{
    snprintf(buf, len, "%s%05d", prefix, i);
}

/* Write text to <dir>/<id>.textpb, compile it and POST /v1/plans. Returns 0, or -1 (printed). */
FT_UNUSED int ft_publish_plan(nt_test_daemon_t *d, const char *dir, const char *id,
                              const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.textpb", dir, id);
    FILE *f = fopen(path, "we");
    if (f == NULL || fputs(text, f) < 0) {
        if (f != NULL)
            fclose(f);
        fprintf(stderr, "fault: cannot write %s\n", path);
        return -1;
    }
    fclose(f);
    uint8_t *bin = NULL;
    size_t len = 0;
    if (nt_test_compile_plan(path, &bin, &len) != 0)
        return -1;
    char url[128];
    snprintf(url, sizeof(url), "%s/v1/plans", d->url);
    nt_test_resp_t r;
    int rc = nt_test_http("POST", url, d->ops_token, "application/x-protobuf", bin, len, &r);
    free(bin);
    if (rc != 0)
        return -1;
    if (r.status != 201) {
        fprintf(stderr, "fault: publishing %s: %ld %s\n", id, r.status, r.body);
        rc = -1;
    }
    nt_test_resp_fini(&r);
    return rc;
}

/* Enrol leads <prefix>[from, to) in plan with POST /v1/plans/{plan}/enrol, at most 1,000 per
 * request. Every lead gets the attribute "n" (its number). Returns how many were enrolled, or
 * -1 when a request got no answer or an error status (printed). */
FT_UNUSED int ft_enrol(nt_test_daemon_t *d, const char *plan, const char *prefix, int from,
                       int to)
{
    int total = 0;
    char path[160];
    snprintf(path, sizeof(path), "/v1/plans/%s/enrol", plan);
    for (int at = from; at < to; at += 1000) {
        int end = at + 1000 < to ? at + 1000 : to;
        json_t *leads = json_array();
        for (int i = at; i < end; i++) {
            char id[64], n[16];
            ft_lead_id(id, sizeof(id), prefix, i);
            snprintf(n, sizeof(n), "%d", i);
            json_array_append_new(leads, json_pack("{s:s,s:{s:s}}", "id", id, "attributes",
                                                   "n", n));
        }
        json_t *body = json_pack("{s:o}", "leads", leads);
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        nt_test_resp_t r;
        int rc = nt_test_json(d, "POST", path, d->ops_token, text, &r);
        free(text);
        if (rc != 0)
            return -1;
        if (r.status != 200 || r.json == NULL) {
            fprintf(stderr, "fault: enrol: %ld %s\n", r.status, r.body);
            nt_test_resp_fini(&r);
            return -1;
        }
        json_t *skipped = json_object_get(r.json, "skipped");
        if (json_array_size(skipped) > 0) {
            char *s = json_dumps(json_array_get(skipped, 0), JSON_COMPACT);
            fprintf(stderr, "fault: enrol skipped %zu leads, first: %s\n",
                    json_array_size(skipped), s != NULL ? s : "?");
            free(s);
        }
        total += (int)json_integer_value(json_object_get(r.json, "enrolled"));
        nt_test_resp_fini(&r);
    }
    return total;
}

typedef struct ft_stats {
    long long enrolled;
    long long active;
    long long exits;     /* with the reason asked for */
    long long exits_all; /* any reason */
} ft_stats_t;

/* GET /v1/plans/{plan}/stats. Returns 0, or -1 when there was no 200 answer. */
FT_UNUSED int ft_get_stats(nt_test_daemon_t *d, const char *plan, const char *reason,
                           ft_stats_t *out)
{
    char path[160];
    snprintf(path, sizeof(path), "/v1/plans/%s/stats", plan);
    memset(out, 0, sizeof(*out));
    nt_test_resp_t r;
    if (nt_test_json(d, "GET", path, d->ops_token, NULL, &r) != 0)
        return -1;
    if (r.status != 200 || r.json == NULL) {
        nt_test_resp_fini(&r);
        return -1;
    }
    out->enrolled = json_integer_value(json_object_get(r.json, "enrolled"));
    out->active = json_integer_value(json_object_get(r.json, "active"));
    json_t *exits = json_object_get(r.json, "exits");
    const char *k;
    json_t *v;
    json_object_foreach(exits, k, v) {
        out->exits_all += json_integer_value(v);
        if (strcmp(k, reason) == 0)
            out->exits += json_integer_value(v);
    }
    nt_test_resp_fini(&r);
    return 0;
}

typedef struct ft_wait_exits {
    nt_test_daemon_t *d;
    const char *plan;
    const char *reason;
    long long want;
    ft_stats_t last;
    int64_t next_print;
} ft_wait_exits_t;

static int ft_exits_reached(void *arg)
{
    ft_wait_exits_t *w = arg;
    ft_stats_t s;
    if (ft_get_stats(w->d, w->plan, w->reason, &s) == 0)
        w->last = s;
    if (ft_mono_ms() >= w->next_print) {
        printf("  stats of %s: enrolled %lld, active %lld, exits %lld (%s: %lld)\n", w->plan,
               w->last.enrolled, w->last.active, w->last.exits_all, w->reason, w->last.exits);
        fflush(stdout);
        w->next_print = ft_mono_ms() + 5000;
    }
    ft_sleep_ms(200);
    return w->last.exits_all >= w->want;
}

/* Wait until the plan's stats count want exits (any reason; the caller checks the reason), up
 * to timeout_ms, printing progress every 5 s. Returns 0 or -1; *last holds the last stats. */
FT_UNUSED int ft_wait_exits(nt_test_daemon_t *d, const char *plan, const char *reason,
                            long long want, int timeout_ms, ft_stats_t *last)
{
    ft_wait_exits_t w = {d, plan, reason, want, {0}, 0};
    int rc = nt_test_wait_until(ft_exits_reached, &w, timeout_ms);
    *last = w.last;
    return rc;
}

/* ---- what Redis holds ---- */

typedef struct ft_runs {
    int done;          /* s=d with the right exit reason */
    int active;        /* s=a */
    int missing;       /* no run hash */
    int wrong_reason;  /* s=d, another reason */
    int bad_score;     /* _score differs from the expected one */
    char first_bad[512];
} ft_runs_t;

static void ft_note_bad(ft_runs_t *o, const char *fmt, const char *lead, const char *a,
                        const char *b)
{
    if (o->first_bad[0] == '\0')
        snprintf(o->first_bad, sizeof(o->first_bad), fmt, lead, a != NULL ? a : "(nil)",
                 b != NULL ? b : "(nil)");
}

/* Check the run hash (s, x) and the lead's _score of leads <prefix>[0, n) in plan. */
FT_UNUSED int ft_check_runs(redisContext *c, unsigned parts, const char *plan,
                            const char *prefix, int n, const char *reason, long long score,
                            ft_runs_t *out)
{
    memset(out, 0, sizeof(*out));
    for (int at = 0; at < n; at += 500) {
        int end = at + 500 < n ? at + 500 : n;
        for (int i = at; i < end; i++) {
            char id[64], rk[NT_KEY_MAX], lk[NT_KEY_MAX];
            ft_lead_id(id, sizeof(id), prefix, i);
            unsigned p = nt_partition(id, parts);
            redisAppendCommand(c, "HMGET %s s x", nt_key_run(rk, p, id, plan));
            redisAppendCommand(c, "HGET %s _score", nt_key_lead(lk, p, id));
        }
        for (int i = at; i < end; i++) {
            char id[64];
            redisReply *run = NULL, *sc = NULL;
            ft_lead_id(id, sizeof(id), prefix, i);
            if (redisGetReply(c, (void **)&run) != REDIS_OK ||
                redisGetReply(c, (void **)&sc) != REDIS_OK) {
                fprintf(stderr, "fault: redis: %s\n", c->errstr);
                return -1;
            }
            const char *s = run->type == REDIS_REPLY_ARRAY && run->elements == 2 &&
                                    run->element[0]->type == REDIS_REPLY_STRING
                                ? run->element[0]->str
                                : NULL;
            const char *x = s != NULL && run->element[1]->type == REDIS_REPLY_STRING
                                ? run->element[1]->str
                                : NULL;
            if (s == NULL) {
                out->missing++;
                ft_note_bad(out, "%s: no run (%s %s)", id, s, x);
            } else if (strcmp(s, "a") == 0) {
                out->active++;
                ft_note_bad(out, "%s: still active (s=%s x=%s)", id, s, x);
            } else if (x == NULL || strcmp(x, reason) != 0) {
                out->wrong_reason++;
                ft_note_bad(out, "%s: ended with another reason (s=%s x=%s)", id, s, x);
            } else {
                out->done++;
            }
            long long got = sc->type == REDIS_REPLY_STRING ? strtoll(sc->str, NULL, 10) : 0;
            if (got != score) {
                out->bad_score++;
                ft_note_bad(out, "%s: _score %s, expected %s", id,
                            sc->type == REDIS_REPLY_STRING ? sc->str : "(nil)",
                            score == 1 ? "1" : "other");
            }
            freeReplyObject(run);
            freeReplyObject(sc);
        }
    }
    return 0;
}

/* What is still pending: entries of every partition's events stream not acknowledged by group w
 * (XPENDING summary) plus messages left in its outbox hash (committed, outcome never recorded);
 * a key or group that does not exist counts 0. *len_out: the events streams' total XLEN. */
FT_UNUSED long ft_pending(redisContext *c, unsigned parts, long *len_out)
{
    long pending = 0, len = 0;
    for (unsigned p = 0; p < parts; p++) {
        char ev[NT_KEY_MAX], ob[NT_KEY_MAX];
        nt_key_part(ev, p, "events");
        nt_key_part(ob, p, "outbox");
        redisAppendCommand(c, "XPENDING %s w", ev);
        redisAppendCommand(c, "HLEN %s", ob);
        redisAppendCommand(c, "XLEN %s", ev);
    }
    for (unsigned p = 0; p < parts * 3; p++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK)
            return -1;
        if (p % 3 == 0 && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
            r->element[0]->type == REDIS_REPLY_INTEGER)
            pending += (long)r->element[0]->integer;
        else if (p % 3 == 1 && r->type == REDIS_REPLY_INTEGER)
            pending += (long)r->integer;
        else if (p % 3 == 2 && r->type == REDIS_REPLY_INTEGER)
            len += (long)r->integer;
        freeReplyObject(r);
    }
    if (len_out != NULL)
        *len_out = len;
    return pending;
}

/* ---- the log channel's files ---- */

typedef struct ft_log {
    long lines;          /* lines with an id */
    long bad_lines;      /* not JSON or without an id */
    long dup_same_file;  /* an id a second time in the same file (never allowed) */
    long dup_cross_file; /* an id in more than one file (counted once per extra file) */
    int leads_wrong;     /* leads whose distinct ids are not per_lead */
    long foreign;        /* ids of other leads (prefix does not match) */
    char first_bad[512];
} ft_log_t;

typedef struct ft_line {
    char *id;
    int file;
} ft_line_t;

static int ft_line_cmp(const void *a, const void *b)
{
    const ft_line_t *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c != 0 ? c : x->file - y->file;
}

/* Read every line of the files, and check: each id at most once per file, and leads
 * <prefix>[0, n) have exactly per_lead distinct ids ("<lead>:<plan>:<node>:<visit>") over all
 * files. Returns 0, or -1 when a file cannot be read. */
FT_UNUSED int ft_check_log(const char *const *paths, int npaths, const char *prefix, int n,
                           int per_lead, ft_log_t *out)
{
    memset(out, 0, sizeof(*out));
    size_t cap = 1024, len = 0;
    ft_line_t *all = malloc(cap * sizeof(*all));
    int *counts = calloc((size_t)n + 1, sizeof(int));
    if (all == NULL || counts == NULL)
        abort();
    for (int f = 0; f < npaths; f++) {
        FILE *fp = fopen(paths[f], "re");
        if (fp == NULL) {
            if (errno == ENOENT)
                continue;
            fprintf(stderr, "fault: %s: %s\n", paths[f], strerror(errno));
            free(all);
            free(counts);
            return -1;
        }
        char *line = NULL;
        size_t lcap = 0;
        ssize_t got;
        while ((got = getline(&line, &lcap, fp)) >= 0) {
            if (got == 0 || (got == 1 && line[0] == '\n'))
                continue;
            json_t *j = json_loads(line, 0, NULL);
            const char *id = json_string_value(json_object_get(j, "id"));
            if (id == NULL) {
                out->bad_lines++;
                if (out->first_bad[0] == '\0')
                    snprintf(out->first_bad, sizeof(out->first_bad), "bad line in %s: %.200s",
                             paths[f], line);
            } else {
                if (len == cap) {
                    cap *= 2;
                    all = realloc(all, cap * sizeof(*all));
                    if (all == NULL)
                        abort();
                }
                all[len].id = strdup(id);
                all[len].file = f;
                len++;
                out->lines++;
            }
            json_decref(j);
        }
        free(line);
        fclose(fp);
    }
    qsort(all, len, sizeof(*all), ft_line_cmp);
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < len;) {
        size_t j = i + 1;
        while (j < len && strcmp(all[j].id, all[i].id) == 0) {
            if (all[j].file == all[j - 1].file) {
                out->dup_same_file++;
                if (out->first_bad[0] == '\0')
                    snprintf(out->first_bad, sizeof(out->first_bad), "id %s twice in %s",
                             all[j].id, paths[all[j].file]);
            } else {
                out->dup_cross_file++;
            }
            j++;
        }
        const char *id = all[i].id;
        char *end = NULL;
        long k = strncmp(id, prefix, plen) == 0 ? strtol(id + plen, &end, 10) : -1;
        if (k < 0 || k >= n || end == NULL || *end != ':')
            out->foreign++;
        else
            counts[k]++;
        i = j;
    }
    for (int k = 0; k < n; k++) {
        if (counts[k] != per_lead) {
            out->leads_wrong++;
            if (out->first_bad[0] == '\0')
                snprintf(out->first_bad, sizeof(out->first_bad),
                         "lead %s%05d has %d distinct messages, expected %d", prefix, k,
                         counts[k], per_lead);
        }
    }
    for (size_t i = 0; i < len; i++)
        free(all[i].id);
    free(all);
    free(counts);
    return 0;
}

/* The worker section of GET /health: partitions_owned, or -1 without a 200 answer. */
FT_UNUSED int ft_owned(nt_test_daemon_t *d, long *status)
{
    nt_test_resp_t r;
    char url[128];
    snprintf(url, sizeof(url), "%s/health", d->url);
    if (nt_test_http("GET", url, NULL, NULL, NULL, 0, &r) != 0) {
        if (status != NULL)
            *status = 0;
        return -1;
    }
    if (status != NULL)
        *status = r.status;
    int owned = -1;
    if (r.json != NULL)
        owned = (int)json_integer_value(
            json_object_get(json_object_get(r.json, "worker"), "partitions_owned"));
    nt_test_resp_fini(&r);
    return owned;
}

typedef struct ft_pend_arg {
    redisContext *c;
    unsigned parts;
    long pending, len;
} ft_pend_arg_t;

/* nt_test_wait_until condition: nothing pending in the events group or the outbox (ft_pending). */
FT_UNUSED int ft_nothing_pending(void *arg)
{
    ft_pend_arg_t *a = arg;
    a->pending = ft_pending(a->c, a->parts, &a->len);
    if (a->pending != 0)
        ft_sleep_ms(200);
    return a->pending == 0;
}

/* The common end of a fault test: wait up to timeout_ms until the n runs of plan (leads
 * <prefix>00000...) ended with reason, give anything that would wrongly count twice 1.5 s, then
 * check that the plan's stats, every run, the events consumer group and the outbox (nothing
 * pending within 15 s) say each run ended exactly once. Fails the test, naming seed, otherwise.
 * *left (may be NULL) gets the entries left in the events streams. Needs cmocka. */
FT_UNUSED void ft_expect_runs_ended(nt_test_daemon_t *d, nt_test_redis_t *redis, unsigned parts,
                                    const char *plan, const char *prefix, const char *reason,
                                    int n, int timeout_ms, unsigned seed, long *left)
{
    ft_stats_t st;
    if (ft_wait_exits(d, plan, reason, n, timeout_ms, &st) != 0) {
        nt_test_daemon_dump_log(d);
        fail_msg("only %lld of %d runs ended in %d s (active %lld); seed %u", st.exits_all, n,
                 timeout_ms / 1000, st.active, seed);
    }
    /* A moment for anything that would wrongly count twice. */
    ft_sleep_ms(1500);
    assert_int_equal(ft_get_stats(d, plan, reason, &st), 0);
    printf("stats: enrolled %lld, active %lld, exits %lld (%s %lld)\n", st.enrolled, st.active,
           st.exits_all, reason, st.exits);
    assert_int_equal(st.enrolled, n);
    assert_int_equal(st.exits, n);
    assert_int_equal(st.exits_all, n);
    assert_int_equal(st.active, 0);

    redisContext *c = nt_test_redis_connect(redis);
    assert_non_null(c);
    ft_runs_t runs;
    assert_int_equal(ft_check_runs(c, parts, plan, prefix, n, reason, 1, &runs), 0);
    if (runs.done != n || runs.bad_score != 0)
        fail_msg("runs: %d done, %d active, %d missing, %d wrong reason, %d bad scores; first: "
                 "%s; seed %u",
                 runs.done, runs.active, runs.missing, runs.wrong_reason, runs.bad_score,
                 runs.first_bad, seed);
    ft_pend_arg_t pa = {c, parts, -1, -1};
    if (nt_test_wait_until(ft_nothing_pending, &pa, 15000) != 0)
        fail_msg("%ld entries still pending in the events group or the outbox; seed %u",
                 pa.pending, seed);
    redisFree(c);
    if (left)
        *left = pa.len;
}

#endif
