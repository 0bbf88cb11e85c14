/* In-person events (trade shows, roadshows, dinners): check-ins and RSVPs.
 *
 *   POST     /v1/webhooks/event  check-ins posted by a badge scanner or `nurturectl events
 *                                import`, signed like every webhook (nt_api_webhook_signed,
 *                                replays refused), up to CHECKIN_MAX_RECORDS records
 *   GET|HEAD /t/r/<token>        the RSVP page of a signed invitation (channels/event): Yes / No
 *   POST     /t/r/<token>        answer=yes|no: the event event.rsvp (attributes event, answer)
 *
 * A check-in request goes the way of the webinar webhook (api_webinar.c), whose parts it uses:
 *
 *   1. the whole body is checked, and the follow-up plan (request field `followup`, else
 *      channel.event.followup.<event>) resolved, before anything is written; then the
 *      signature is recorded (replays: 409);
 *   2. identity: the email index (nt:{q}:idx:email, nt_api_email_norm), then a lead whose id
 *      is the address (or "wb-<hash>" of it, the webinar webhook's ids for new people);
 *   3. people still unknown become leads (stage inquiry; email, names, company, title, source
 *      "event", source_detail the event), enrolled in the follow-up plan through the bulk
 *      enrolment path (nt_api_enrol_many) when there is one, and indexed;
 *   4. event_checkin.lua per partition: once per (event, lead) a marker (SET NX, a long TTL)
 *      and event.checked_in with attributes event and checked_in_at.
 *
 * A check-in is thus applied once however often it is sent (the answer counts it as
 * `already`). Contract: docs/api.md. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/sha.h>

#include "api.h"
#include "clock.h"
#include "keys.h"
#include "log.h"
#include "nurture/track.h"
#include "plans.h"

#define CHECKIN_MAX_RECORDS 10000
#define APPLY_PER_CALL 500                   /* records per event_checkin.lua call */
#define MARK_TTL_S ((long long)400 * 86400) /* applied markers outlive any follow-up */
#define EMAIL_MAX 254
#define TEXT_MAX 200

typedef struct rec {
    const char *first, *last, *company, *title, *at; /* borrowed from the body; NULL absent */
    char email[EMAIL_MAX + 1];                       /* normalised */
    char cand[129]; /* the id a new lead of this email gets */
    char lead[129]; /* the resolved lead id, "" while unknown */
    int created;    /* this record's person was created here */
    int slot;       /* first of its two lookup replies */
    char st;        /* 'o' applied, 'a' already, 'm' missing, 0 not applied */
} rec_t;

typedef struct ev_ctx {
    char event[65];
    char followup[65]; /* "" none */
    char sig[65];
    const nt_plan_t *plan;
    rec_t *rec;
    size_t n;
    nt_api_bulk_t *bulk;
    size_t *newrec; /* per new lead: the first record naming it */
    size_t nnew;
    size_t enrolled;
    size_t *order; /* records grouped by partition for step 4 */
    size_t *call_first, *call_count;
    size_t ncalls;
} ev_ctx_t;

static void ev_ctx_free(void *p)
{
    ev_ctx_t *c = p;

    nt_api_bulk_free(c->bulk);
    free(c->rec);
    free(c->newrec);
    free(c->order);
    free(c->call_first);
    free(c->call_count);
    free(c);
}

/* The id a new lead of a normalised address gets, as the webinar webhook gives it (so that
 * either finds the other's leads by id as well as by the index): the address when it is a
 * valid lead id, else "wb-" and 32 hex digits of its SHA-256. */
static void new_lead_id(const char *email, char *out)
{
    unsigned char sha[SHA256_DIGEST_LENGTH];

    if (nt_lead_id_valid(email)) {
        snprintf(out, 129, "%s", email);
        return;
    }
    SHA256((const unsigned char *)email, strlen(email), sha);
    strcpy(out, "wb-");
    for (int i = 0; i < 16; i++)
        sprintf(out + 3 + 2 * i, "%02x", sha[i]);
}

/* Non-zero for a string of 1 to max bytes without control characters or NUL. */
static int text_ok(const json_t *v, size_t max)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);

    if (!s || n == 0 || n > max || strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

/* The event of the request: every record names the same one (or none, the top level's). */
static int set_event(nt_api_req_t *r, ev_ctx_t *c, const json_t *v, const char *where)
{
    if (!json_is_string(v) || !nt_track_event_ok(json_string_value(v))) {
        nt_api_error(r, 400, "bad_request",
                     "%sevent must be the event's id (1 to 64 of a-z 0-9 _ -)", where);
        return -1;
    }
    if (c->event[0] && strcmp(c->event, json_string_value(v)) != 0) {
        nt_api_error(r, 400, "bad_request",
                     "%sevent is %s, but the request is for %s: post one event per request",
                     where, json_string_value(v), c->event);
        return -1;
    }
    snprintf(c->event, sizeof(c->event), "%s", json_string_value(v));
    return 0;
}

/* Parse and check the whole body before anything is written. Returns 0, or -1 after replying. */
static int ev_parse(nt_api_req_t *r, ev_ctx_t *c, json_t **root)
{
    static const char *const top[] = {"event", "records", "followup", NULL};
    static const char *const fields[] = {"event",   "email", "first_name",    "last_name",
                                         "company", "title", "checked_in_at", NULL};
    static const char *const texts[] = {"first_name", "last_name", "company", "title"};
    const char *ct = nt_api_header_in(r, "Content-Type");
    json_error_t jerr;
    json_t *body, *records, *v;
    char err[256], prefix[48];

    if (ct && strncasecmp(ct, "application/json", 16) != 0) {
        nt_api_error(r, 415, "unsupported_media_type",
                     "the body must be JSON (Content-Type: application/json)");
        return -1;
    }
    body = json_loadb((const char *)r->raw, r->rawlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!body) {
        nt_api_error(r, 400, "bad_json", "malformed JSON at line %d column %d: %s", jerr.line,
                     jerr.column, jerr.text);
        return -1;
    }
    *root = body;
    if (!json_is_object(body)) {
        nt_api_error(r, 400, "bad_request", "the body must be a JSON object");
        return -1;
    }
    if (nt_api_only_fields(body, top, "", err, sizeof(err)) != 0) {
        nt_api_error(r, 400, "bad_request", "%s", err);
        return -1;
    }
    v = json_object_get(body, "event");
    if (v && set_event(r, c, v, "") != 0)
        return -1;
    v = json_object_get(body, "followup");
    if (v && (!json_is_string(v) || !nt_api_plan_id_valid(json_string_value(v)))) {
        nt_api_error(r, 400, "bad_request", "field 'followup' must be a plan id");
        return -1;
    }
    if (v)
        snprintf(c->followup, sizeof(c->followup), "%s", json_string_value(v));
    records = json_object_get(body, "records");
    if (!json_is_array(records)) {
        nt_api_error(r, 400, "bad_request", "field 'records' must be an array");
        return -1;
    }
    if (json_array_size(records) > CHECKIN_MAX_RECORDS) {
        nt_api_error(r, 413, "too_large", "field 'records' has %zu entries, more than %d",
                     json_array_size(records), CHECKIN_MAX_RECORDS);
        return -1;
    }
    c->n = json_array_size(records);
    c->rec = calloc(c->n ? c->n : 1, sizeof(*c->rec));
    if (!c->rec) {
        nt_api_error(r, 500, "internal", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < c->n; i++) {
        json_t *e = json_array_get(records, i), *x;
        rec_t *h = &c->rec[i];

        snprintf(prefix, sizeof(prefix), "records[%zu].", i);
        if (!json_is_object(e)) {
            nt_api_error(r, 400, "bad_request", "records[%zu] must be an object", i);
            return -1;
        }
        if (nt_api_only_fields(e, fields, prefix, err, sizeof(err)) != 0) {
            nt_api_error(r, 400, "bad_request", "%s", err);
            return -1;
        }
        x = json_object_get(e, "event");
        if (x && set_event(r, c, x, prefix) != 0)
            return -1;
        x = json_object_get(e, "email");
        if (!json_is_string(x) || nt_api_email_norm(json_string_value(x), json_string_length(x),
                                                    h->email, sizeof(h->email)) != 0) {
            nt_api_error(r, 400, "bad_request", "%semail must be an email address", prefix);
            return -1;
        }
        for (size_t k = 0; k < sizeof(texts) / sizeof(texts[0]); k++) {
            x = json_object_get(e, texts[k]);
            if (x && !text_ok(x, TEXT_MAX)) {
                nt_api_error(r, 400, "bad_request",
                             "%s%s must be a string of 1 to %d bytes without control characters",
                             prefix, texts[k], TEXT_MAX);
                return -1;
            }
        }
        h->first = json_string_value(json_object_get(e, "first_name"));
        h->last = json_string_value(json_object_get(e, "last_name"));
        h->company = json_string_value(json_object_get(e, "company"));
        h->title = json_string_value(json_object_get(e, "title"));
        x = json_object_get(e, "checked_in_at");
        if (x && !text_ok(x, 40)) {
            nt_api_error(r, 400, "bad_request",
                         "%schecked_in_at must be a time as text (e.g. 2026-11-05T10:30:00Z)",
                         prefix);
            return -1;
        }
        h->at = json_string_value(x);
        h->slot = -1;
        new_lead_id(h->email, h->cand);
    }
    if (!c->event[0]) {
        nt_api_error(r, 400, "bad_request", "field 'event' is required (top level or records)");
        return -1;
    }
    if (!c->followup[0]) {
        char key[96];
        const char *plan;

        snprintf(key, sizeof(key), "followup.%s", c->event);
        plan = nt_config_channel(r->d.cfg, "event", key, "");
        if (plan[0] && !nt_api_plan_id_valid(plan)) {
            nt_api_error(r, 500, "internal", "channel.event.%s is not a plan id", key);
            return -1;
        }
        snprintf(c->followup, sizeof(c->followup), "%s", plan);
    }
    return 0;
}

/* ---- step 4: apply -------------------------------------------------------------------- */

static void on_applied(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    ev_ctx_t *c = r->ctx;
    unsigned parts = r->d.cfg->partitions;
    unsigned char *woken;
    size_t applied = 0, already = 0, created = 0;
    json_t *unknown;

    (void)arg;
    if (rc != NT_OK) {
        /* Some calls may have applied: a retry is safe, the markers see to it. */
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    /* replies: the index writes first, then one per call */
    for (size_t call = 0; call < c->ncalls; call++) {
        const redisReply *x = rep[n - c->ncalls + call];
        const char *s = nt_api_script_reply_ok(x, 1, "event_checkin") ? x->element[0]->str : "";
        size_t len = strlen(s);

        for (size_t k = 0; k < c->call_count[call]; k++)
            c->rec[c->order[c->call_first[call] + k]].st = k < len ? s[k] : 0;
    }
    woken = calloc(parts ? parts : 1, 1);
    unknown = json_array();
    if (!woken || !unknown) {
        free(woken);
        json_decref(unknown);
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        rec_t *h = &c->rec[i];

        created += h->created;
        if (h->st == 'o') {
            applied++;
            woken[nt_partition(h->lead, parts)] = 1;
        } else if (h->st == 'a') {
            already++;
        } else {
            json_array_append_new(unknown,
                                  json_pack("{s:I,s:s,s:s}", "index", (json_int_t)i, "email",
                                            h->email, "error",
                                            h->st == 'm' ? "the lead does not exist"
                                                         : "not applied"));
        }
    }
    for (unsigned p = 0; p < parts; p++)
        if (woken[p] && r->d.worker)
            nt_worker_wake(r->d.worker, p);
    free(woken);
    nt_api_reply_json(r, 200,
                      json_pack("{s:s,s:s?,s:I,s:I,s:I,s:I,s:o}", "event", c->event, "followup",
                                c->followup[0] ? c->followup : NULL, "applied",
                                (json_int_t)applied, "already", (json_int_t)already, "created",
                                (json_int_t)created, "enrolled", (json_int_t)c->enrolled,
                                "unknown", unknown));
}

/* Index the new leads and apply every record, in one batch. */
static void ev_apply(nt_api_req_t *r, ev_ctx_t *c)
{
    unsigned parts = r->d.cfg->partitions;
    size_t nidx = 0, at = 0, *start = calloc((size_t)parts + 1, sizeof(*start));
    unsigned *part = malloc((c->n ? c->n : 1) * sizeof(*part));
    size_t maxcalls = c->n / APPLY_PER_CALL + parts + 1;
    nt_api_batch_t *b;
    char now[32], key[NT_KEY_MAX];
    int oom = 0;

    c->order = malloc((c->n ? c->n : 1) * sizeof(*c->order));
    c->call_first = malloc(maxcalls * sizeof(*c->call_first));
    c->call_count = malloc(maxcalls * sizeof(*c->call_count));
    if (!start || !part || !c->order || !c->call_first || !c->call_count) {
        free(start);
        free(part);
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    /* counting sort of the records by their lead's partition, request order kept */
    for (size_t i = 0; i < c->n; i++) {
        nidx += c->rec[i].created;
        part[i] = nt_partition(c->rec[i].lead, parts);
        start[part[i] + 1]++;
    }
    for (unsigned p = 0; p < parts; p++)
        start[p + 1] += start[p];
    for (size_t i = 0; i < c->n; i++)
        c->order[start[part[i]]++] = i;
    c->ncalls = 0;
    for (unsigned p = 0; p < parts; p++) {
        size_t end = start[p];

        while (at < end) {
            size_t k = end - at < APPLY_PER_CALL ? end - at : APPLY_PER_CALL;

            c->call_first[c->ncalls] = at;
            c->call_count[c->ncalls++] = k;
            at += k;
        }
    }
    b = nt_api_batch_new(r, nidx + c->ncalls, on_applied, NULL);
    if (!b) {
        free(start);
        free(part);
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    nidx = 0;
    for (size_t i = 0; i < c->n; i++) {
        rec_t *h = &c->rec[i];
        const char *argv[4];

        if (!h->created)
            continue;
        argv[0] = "HSET";
        argv[1] = nt_key_part(key, nt_partition(h->email, parts), "idx:email");
        argv[2] = h->email;
        argv[3] = h->lead;
        nt_api_batch_argv(b, nidx++, 4, argv, NULL);
    }
    snprintf(now, sizeof(now), "%" PRId64, nt_now_ms());
    for (size_t call = 0; call < c->ncalls && !oom; call++) {
        const size_t *idx = c->order + c->call_first[call];
        unsigned p = part[idx[0]];
        nt_api_argv_t a = {0};

        nt_api_argv_add(&a, nt_key_part(key, p, "events"));
        nt_api_argv_addf(&a, "nt:{%u}:", p);
        nt_api_argv_add(&a, now);
        nt_api_argv_addf(&a, "%lld", MARK_TTL_S);
        for (size_t k = 0; k < c->call_count[call]; k++) {
            const rec_t *h = &c->rec[idx[k]];

            nt_api_argv_add(&a, h->lead);
            nt_api_argv_add(&a, c->event);
            nt_api_argv_add(&a, h->at ? h->at : "");
        }
        if (nt_api_argv_failed(&a))
            oom = 1;
        else
            nt_api_batch_script(b, nidx + call, "event_checkin", 1, a.n, (const char **)a.v,
                                a.len);
        nt_api_argv_fini(&a);
    }
    free(start);
    free(part);
    if (oom)
        nt_api_error(r, 500, "internal", "out of memory");
    nt_api_batch_go(b);
}

/* ---- step 3: new people ------------------------------------------------------------------ */

static void on_enrolled(nt_api_req_t *r, const char *status, size_t n, void *arg)
{
    ev_ctx_t *c = r->ctx;

    (void)arg;
    for (size_t i = 0; i < n; i++) {
        if (status[i] == 'o')
            c->enrolled++;
        if (status[i] == 'f') {
            nt_api_error(r, 503, "unavailable",
                         "new leads could not be created; none of the check-ins was applied");
            return;
        }
    }
    ev_apply(r, c);
}

static void on_put(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    ev_ctx_t *c = r->ctx;

    (void)arg;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (!nt_api_script_reply_ok(rep[i], 3, "lead_put")) {
            nt_api_error(r, 500, "internal", "a new lead could not be created");
            return;
        }
    ev_apply(r, c);
}

/* A new lead object for record h: email, names, company, title, stage inquiry, source. */
static int new_lead(const ev_ctx_t *c, const rec_t *h, nt_api_lead_in_t *in)
{
    size_t k = 0;

    memset(in, 0, sizeof(*in));
    in->id = strdup(h->lead);
    in->attrs = calloc(7, sizeof(*in->attrs));
    if (!in->id || !in->attrs)
        return -1;
#define ADD(k_, v_)                                                                            \
    do {                                                                                       \
        in->attrs[k].key = strdup(k_);                                                         \
        in->attrs[k].value = strdup(v_);                                                       \
        in->nattrs = ++k;                                                                      \
        if (!in->attrs[k - 1].key || !in->attrs[k - 1].value)                                  \
            return -1;                                                                         \
    } while (0)
    ADD("email", h->email);
    if (h->first)
        ADD("first_name", h->first);
    if (h->last)
        ADD("last_name", h->last);
    if (h->company)
        ADD("company", h->company);
    if (h->title)
        ADD("title", h->title);
    ADD("source", "event");
    ADD("source_detail", c->event);
#undef ADD
    in->stage = nt_stage_parse("inquiry");
    return 0;
}

/* ---- step 2: identity -------------------------------------------------------------------- */

static void on_lookup(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    ev_ctx_t *c = r->ctx;
    json_t *seen;
    nt_api_lead_in_t *leads;

    (void)n;
    (void)arg;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    seen = json_object();
    c->newrec = malloc((c->n ? c->n : 1) * sizeof(*c->newrec));
    if (!seen || !c->newrec) {
        json_decref(seen);
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        rec_t *h = &c->rec[i];
        const redisReply *x = rep[h->slot];

        if (x && x->type == REDIS_REPLY_STRING && nt_lead_id_valid(x->str)) {
            snprintf(h->lead, sizeof(h->lead), "%s", x->str);
            continue;
        }
        snprintf(h->lead, sizeof(h->lead), "%s", h->cand);
        x = rep[h->slot + 1];
        if (x && x->type == REDIS_REPLY_INTEGER && x->integer == 1)
            continue; /* a lead with that id, written before the index existed */
        /* a new person: once per id, however many records name it */
        if (json_object_get(seen, h->lead))
            continue;
        h->created = 1;
        json_object_set_new(seen, h->lead, json_true());
        c->newrec[c->nnew++] = i;
    }
    json_decref(seen);
    if (c->nnew == 0) {
        ev_apply(r, c);
        return;
    }
    leads = calloc(c->nnew, sizeof(*leads));
    if (!leads) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t k = 0; k < c->nnew; k++)
        if (new_lead(c, &c->rec[c->newrec[k]], &leads[k]) != 0) {
            for (size_t j = 0; j <= k; j++)
                nt_api_lead_in_fini(&leads[j]);
            free(leads);
            nt_api_error(r, 500, "internal", "out of memory");
            return;
        }
    if (c->plan) {
        c->bulk = nt_api_enrol_many(r, c->plan, leads, c->nnew, on_enrolled, NULL);
        return;
    }
    {
        nt_api_batch_t *b = nt_api_batch_new(r, c->nnew, on_put, NULL);

        for (size_t k = 0; b && k < c->nnew; k++) {
            nt_api_argv_t a = {0};
            int nkeys = nt_api_lead_put_args(&r->d, leads[k].id, &leads[k], "upsert", &a);

            if (!nt_api_argv_failed(&a))
                nt_api_batch_script(b, k, "lead_put", nkeys, a.n, (const char **)a.v, a.len);
            nt_api_argv_fini(&a);
        }
        for (size_t k = 0; k < c->nnew; k++)
            nt_api_lead_in_fini(&leads[k]);
        free(leads);
        if (!b) {
            nt_api_error(r, 500, "internal", "out of memory");
            return;
        }
        nt_api_batch_go(b);
    }
}

static void on_fresh(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    ev_ctx_t *c = r->ctx;
    unsigned parts = r->d.cfg->partitions;
    nt_api_batch_t *b;

    (void)n;
    (void)arg;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    if (!rep[0] || rep[0]->type != REDIS_REPLY_STATUS) {
        nt_api_error(r, 409, "conflict", "this signature was used before (a replay)");
        return;
    }
    if (c->n == 0) {
        ev_apply(r, c);
        return;
    }
    b = nt_api_batch_new(r, 2 * c->n, on_lookup, NULL);
    if (!b) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        rec_t *h = &c->rec[i];
        char key[NT_KEY_MAX];
        const char *argv[3];

        h->slot = (int)(2 * i);
        argv[0] = "HGET";
        argv[1] = nt_key_part(key, nt_partition(h->email, parts), "idx:email");
        argv[2] = h->email;
        nt_api_batch_argv(b, 2 * i, 3, argv, NULL);
        argv[0] = "EXISTS";
        argv[1] = nt_key_lead(key, nt_partition(h->cand, parts), h->cand);
        nt_api_batch_argv(b, 2 * i + 1, 2, argv, NULL);
    }
    nt_api_batch_go(b);
}

static void on_plan(nt_rc_t rc, const nt_plan_t *plan, void *arg)
{
    nt_api_req_t *r = arg;
    ev_ctx_t *c = r->ctx;

    if (!r->finished) {
        if (rc == NT_ENOTFOUND) {
            nt_api_error(r, 404, "not_found",
                         "no follow-up plan %s (or it has no active version); nothing was written",
                         c->followup);
        } else if (rc != NT_OK) {
            nt_api_error_rc(r, rc, NULL);
        } else {
            c->plan = plan;
            nt_api_webhook_fresh(r, c->sig, on_fresh, NULL);
        }
    }
    nt_api_unref(r);
}

void nt_api_webhook_event(nt_api_req_t *r)
{
    char sig[65];
    ev_ctx_t *c;
    json_t *root = NULL;
    nt_rc_t rc;

    if (nt_api_webhook_signed(r, sig) != 0)
        return;
    c = nt_api_ctx_new(r, sizeof(*c), ev_ctx_free);
    if (!c)
        return;
    memcpy(c->sig, sig, sizeof(c->sig));
    if (ev_parse(r, c, &root) != 0) {
        json_decref(root);
        return;
    }
    /* The records point into the body: keep it for the request's life. */
    r->body = root;
    if (nt_api_need_redis(r))
        return;
    if (!c->followup[0]) {
        nt_api_webhook_fresh(r, c->sig, on_fresh, NULL);
        return;
    }
    nt_api_ref(r);
    rc = nt_plans_get(r->d.plans, c->followup, 0, on_plan, r);
    if (rc != NT_OK) {
        nt_api_unref(r);
        nt_api_error_rc(r, rc, NULL);
    }
}

/* ---- RSVP links: /t/r/<token> -------------------------------------------------------------- */

/* The RSVP page's form: Yes / No, posted to the link itself. */
static const char rsvp_fields[] =
    "<button type=\"submit\" name=\"answer\" value=\"yes\">Yes, I will come</button>\n"
    "<button type=\"submit\" name=\"answer\" value=\"no\">No, I cannot come</button>\n";

static void rsvp_error(nt_api_req_t *r, int status, const char *msg)
{
    char text[512];
    int n = snprintf(text, sizeof(text), "%s\n", msg);

    nt_api_reply_raw(r, status, "text/plain; charset=utf-8", text, (size_t)n);
}

/* Verify the RSVP token in the path (r->seg[2]). Returns 0, or -1 after replying (400
 * malformed or another kind, 403 forged or expired, 503 without a secret). */
static int rsvp_token(nt_api_req_t *r, nt_track_token_t *t)
{
    const char *secret = r->d.cfg->tracking_secret;
    int rc;

    if (!secret || !secret[0]) {
        rsvp_error(r, 503, "links are not configured (tracking-secret)");
        return -1;
    }
    rc = nt_track_verify(secret, strlen(secret), r->seg[2], nt_real_ms() / 1000, t);
    if (rc == NT_TRACK_OK && t->kind != NT_TRACK_RSVP)
        rc = NT_TRACK_EMALFORMED;
    switch (rc) {
    case NT_TRACK_OK:
        return 0;
    case NT_TRACK_EFORGED:
        rsvp_error(r, 403, "The link's signature does not match.");
        return -1;
    case NT_TRACK_EEXPIRED:
        rsvp_error(r, 403, "The link has expired.");
        return -1;
    default:
        rsvp_error(r, 400, "The link is not valid.");
        return -1;
    }
}

void nt_api_rsvp_page(nt_api_req_t *r)
{
    nt_track_token_t *t = malloc(sizeof(*t));
    char text[160];

    if (!t) {
        rsvp_error(r, 500, "out of memory");
        return;
    }
    if (rsvp_token(r, t) == 0) {
        /* A GET changes nothing: link scanners and previews fetch it too. The token is
         * base64url and '.', safe inside the attribute; the event id is [a-z0-9_-]. */
        snprintf(text, sizeof(text), "Will you come to %s?", t->event);
        nt_api_page(r, 200, "Your answer", text, r->seg[2], rsvp_fields);
    }
    free(t);
}

typedef struct rsvp_ctx {
    char lead[129];
    char yes;
} rsvp_ctx_t;

static void on_rsvp(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    rsvp_ctx_t *c = r->ctx;

    (void)n;
    (void)arg;
    if (rc != NT_OK) {
        rsvp_error(r, 503, "We could not record your answer just now. Please try again soon.");
        return;
    }
    if (!nt_api_script_reply_ok(rep[0], 1, "event_post")) {
        rsvp_error(r, 500, "Something went wrong; please try again later.");
        return;
    }
    if (strcmp(rep[0]->element[0]->str, "missing") == 0) {
        rsvp_error(r, 404, "This invitation is no longer valid.");
        return;
    }
    if (r->d.worker)
        nt_worker_wake(r->d.worker, nt_partition(c->lead, r->d.cfg->partitions));
    nt_api_page(r, 200, "Thank you",
                c->yes ? "We have noted that you will come. See you there!"
                       : "We have noted that you cannot come.",
                NULL, NULL);
}

/* The answer in a form body (answer=yes|no, URL-encoded) or the query string; 'y', 'n' or 0. */
static char rsvp_answer(const nt_api_req_t *r)
{
    char *q = nt_api_query(r, "answer");
    char a = 0;

    if (q) {
        a = strcmp(q, "yes") == 0 ? 'y' : strcmp(q, "no") == 0 ? 'n' : 0;
        free(q);
        return a;
    }
    for (size_t i = 0; i + 7 <= r->rawlen; i++) {
        if ((i == 0 || r->raw[i - 1] == '&') && memcmp(r->raw + i, "answer=", 7) == 0) {
            const char *v = (const char *)r->raw + i + 7;
            size_t len = 0;

            while (i + 7 + len < r->rawlen && v[len] != '&' && v[len] != '\r' && v[len] != '\n')
                len++;
            if (len == 3 && memcmp(v, "yes", 3) == 0)
                a = 'y';
            else if (len == 2 && memcmp(v, "no", 2) == 0)
                a = 'n';
            else
                a = 0;
            break;
        }
    }
    return a;
}

void nt_api_rsvp(nt_api_req_t *r)
{
    nt_track_token_t *t = malloc(sizeof(*t));
    rsvp_ctx_t *c;
    nt_api_argv_t a = {0};
    char k[NT_KEY_MAX], answer;
    unsigned p;

    if (!t) {
        rsvp_error(r, 500, "out of memory");
        return;
    }
    if (rsvp_token(r, t) != 0) {
        free(t);
        return;
    }
    answer = rsvp_answer(r);
    if (!answer) {
        free(t);
        rsvp_error(r, 400, "Please answer yes or no (answer=yes or answer=no).");
        return;
    }
    if (!nt_redis_up(r->d.redis)) {
        free(t);
        rsvp_error(r, 503, "We could not record your answer just now. Please try again soon.");
        return;
    }
    c = nt_api_ctx_new(r, sizeof(*c), free);
    if (!c) {
        free(t);
        return;
    }
    snprintf(c->lead, sizeof(c->lead), "%s", t->lead);
    c->yes = answer == 'y';
    p = nt_partition(t->lead, r->d.cfg->partitions);
    nt_api_argv_add(&a, nt_key_lead(k, p, t->lead));
    nt_api_argv_add(&a, nt_key_part(k, p, "events"));
    nt_api_argv_add(&a, t->lead);
    nt_api_argv_add(&a, "event.rsvp");
    nt_api_argv_add(&a, "0");
    nt_api_argv_addf(&a, "%" PRId64, nt_now_ms());
    nt_api_argv_add(&a, "event");
    nt_api_argv_add(&a, t->event);
    nt_api_argv_add(&a, "answer");
    nt_api_argv_add(&a, c->yes ? "yes" : "no");
    nt_api_argv_add(&a, "message");
    nt_api_argv_add(&a, t->msgid);
    free(t);
    nt_api_script(r, "event_post", 2, &a, on_rsvp, NULL);
}
