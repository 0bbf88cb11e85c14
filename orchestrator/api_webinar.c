/* POST /v1/webhooks/webinar: registrations, attendance and recording views posted by webinar
 * platforms, one record or batches of up to WEBINAR_MAX_RECORDS, signed like the email
 * provider's webhook (nt_api_webhook_signed, replays refused).
 *
 * A request goes through four steps, each one pipelined round for the whole batch:
 *
 *   1. the follow-up plan (request field `followup`, else channel.webinar.followup.<webinar>)
 *      is resolved before anything is written, then the signature is recorded (replays: 409);
 *   2. identity: per record the registrant index (nt:{q}:idx:reg, field "<webinar>|<registrant>",
 *      q the partition of that field), the email index (nt:{q}:idx:email, field the normalised
 *      address, q its partition; nt_api_email_index keeps it when leads are written, primary and
 *      secondary `emails`), and whether a lead whose id is the address (or "wb-<hash>" of it)
 *      exists, in that order of trust;
 *   3. people still unknown become leads (stage inquiry), through the bulk enrolment path into
 *      the follow-up plan when there is one (else created only), and are indexed;
 *   4. webinar_apply.lua per partition: once per (webinar, lead, kind) a marker (SET NX, a long
 *      TTL) and the event webinar.<kind> with attributes webinar, minutes, registrant.
 *
 * A record is thus applied once however often the platform sends it (a new signature each
 * time): the answer counts it as `already`. Contract: docs/api.md. */
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
#include "plans.h"

#define WEBINAR_MAX_RECORDS 10000
#define APPLY_PER_CALL 500                   /* records per webinar_apply.lua call */
#define MARK_TTL_S ((long long)400 * 86400) /* applied markers outlive any webinar follow-up */
#define EMAIL_MAX 254
#define REGISTRANT_MAX 200

typedef struct rec {
    const char *registrant; /* borrowed from the body; NULL when absent */
    const char *name;       /* borrowed; NULL when absent */
    const char *kind;       /* registered | attended | recording_viewed */
    char email[EMAIL_MAX + 1]; /* normalised, "" when absent */
    long long minutes;
    int has_minutes;
    char lead[129];   /* the resolved lead id, "" while unknown */
    int by_registrant; /* resolved through the registrant index */
    int created;       /* this record's person was created here */
    int slot[3];       /* lookup replies: registrant, email index, lead exists; -1 none */
    char cand[129];    /* the id a new lead of this email gets */
    char st;           /* 'o' applied, 'a' already, 'm' missing, 0 not applied */
} rec_t;

typedef struct wb_ctx {
    char webinar[65];
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
} wb_ctx_t;

static void wb_ctx_free(void *p)
{
    wb_ctx_t *c = p;

    nt_api_bulk_free(c->bulk);
    free(c->rec);
    free(c->newrec);
    free(c->order);
    free(c->call_first);
    free(c->call_count);
    free(c);
}

int nt_api_email_norm(const char *in, size_t len, char *out, size_t cap)
{
    size_t a = 0, b = len, o = 0;

    while (a < b && isspace((unsigned char)in[a]))
        a++;
    while (b > a && isspace((unsigned char)in[b - 1]))
        b--;
    if (b == a || b - a >= cap || b - a > EMAIL_MAX)
        return -1;
    for (size_t i = a; i < b; i++) {
        unsigned char ch = (unsigned char)in[i];

        if (ch < 0x21 || ch == 0x7f)
            return -1;
        out[o++] = (char)tolower(ch);
    }
    out[o] = '\0';
    return strchr(out, '@') != NULL && out[0] != '@' && out[o - 1] != '@' ? 0 : -1;
}

static void index_cb(nt_rc_t rc, redisReply *reply, void *arg)
{
    (void)arg;
    if (rc != NT_OK || (reply && reply->type == REDIS_REPLY_ERROR))
        nt_log_warn("http", "the email index was not updated: %s",
                    rc != NT_OK ? nt_strerror(rc) : reply->str);
}

/* HSET nt:{q}:idx:email <email> <lead> for one raw address. */
static void index_one(const nt_http_deps_t *d, const char *lead_id, const char *raw, size_t len)
{
    char email[EMAIL_MAX + 1], key[NT_KEY_MAX];
    const char *argv[4];

    if (nt_api_email_norm(raw, len, email, sizeof(email)) != 0)
        return;
    argv[0] = "HSET";
    argv[1] = nt_key_part(key, nt_partition(email, d->cfg->partitions), "idx:email");
    argv[2] = email;
    argv[3] = lead_id;
    if (nt_redis_argv(d->redis, index_cb, NULL, 4, argv, NULL) != NT_OK)
        nt_log_warn("http", "the email index was not updated for lead %s", lead_id);
}

void nt_api_email_index(const nt_http_deps_t *d, const char *lead_id, const nt_kv_t *attrs,
                        size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *v = attrs[i].value;

        if (strcmp(attrs[i].key, "email") == 0) {
            index_one(d, lead_id, v, strlen(v));
        } else if (strcmp(attrs[i].key, "emails") == 0) {
            while (*v) {
                const char *comma = strchr(v, ',');
                size_t len = comma ? (size_t)(comma - v) : strlen(v);

                index_one(d, lead_id, v, len);
                v += len + (comma ? 1 : 0);
            }
        }
    }
}

/* The id a new lead of a normalised address gets: the address when it is a valid lead id,
 * else "wb-" and 32 hex digits of its SHA-256. */
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

static int printable(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max || strlen(s) != len)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == '|' || s[i] == 0x7f)
            return 0;
    return 1;
}

/* Parse and check the whole body before anything is written. Returns 0, or -1 after replying. */
static int wb_parse(nt_api_req_t *r, wb_ctx_t *c, json_t **root)
{
    static const char *const top[] = {"webinar", "records", "followup", NULL};
    static const char *const fields[] = {"registrant", "email", "name", "kind", "minutes", NULL};
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
    v = json_object_get(body, "webinar");
    if (!json_is_string(v) || !nt_api_plan_id_valid(json_string_value(v))) {
        nt_api_error(r, 400, "bad_request",
                     "field 'webinar' must be the webinar's id (1 to 64 of a-z 0-9 _ -)");
        return -1;
    }
    snprintf(c->webinar, sizeof(c->webinar), "%s", json_string_value(v));
    v = json_object_get(body, "followup");
    if (v && (!json_is_string(v) || !nt_api_plan_id_valid(json_string_value(v)))) {
        nt_api_error(r, 400, "bad_request", "field 'followup' must be a plan id");
        return -1;
    }
    if (v) {
        snprintf(c->followup, sizeof(c->followup), "%s", json_string_value(v));
    } else {
        char key[96];
        const char *plan;

        snprintf(key, sizeof(key), "followup.%s", c->webinar);
        plan = nt_config_channel(r->d.cfg, "webinar", key, "");
        if (plan[0] && !nt_api_plan_id_valid(plan)) {
            nt_api_error(r, 500, "internal", "channel.webinar.%s is not a plan id", key);
            return -1;
        }
        snprintf(c->followup, sizeof(c->followup), "%s", plan);
    }
    records = json_object_get(body, "records");
    if (!json_is_array(records)) {
        nt_api_error(r, 400, "bad_request", "field 'records' must be an array");
        return -1;
    }
    if (json_array_size(records) > WEBINAR_MAX_RECORDS) {
        nt_api_error(r, 413, "too_large", "field 'records' has %zu entries, more than %d",
                     json_array_size(records), WEBINAR_MAX_RECORDS);
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
        h->slot[0] = h->slot[1] = h->slot[2] = -1;
        if (!json_is_object(e)) {
            nt_api_error(r, 400, "bad_request", "records[%zu] must be an object", i);
            return -1;
        }
        if (nt_api_only_fields(e, fields, prefix, err, sizeof(err)) != 0) {
            nt_api_error(r, 400, "bad_request", "%s", err);
            return -1;
        }
        h->kind = json_string_value(json_object_get(e, "kind"));
        if (!h->kind || (strcmp(h->kind, "registered") != 0 && strcmp(h->kind, "attended") != 0 &&
                         strcmp(h->kind, "recording_viewed") != 0)) {
            nt_api_error(r, 400, "bad_request",
                         "%skind must be registered, attended or recording_viewed", prefix);
            return -1;
        }
        x = json_object_get(e, "registrant");
        if (x && (!json_is_string(x) ||
                  !printable(json_string_value(x), json_string_length(x), REGISTRANT_MAX))) {
            nt_api_error(r, 400, "bad_request",
                         "%sregistrant must be a string of 1 to %d printable bytes without '|'",
                         prefix, REGISTRANT_MAX);
            return -1;
        }
        h->registrant = json_string_value(x);
        x = json_object_get(e, "email");
        if (x && (!json_is_string(x) ||
                  nt_api_email_norm(json_string_value(x), json_string_length(x), h->email,
                                    sizeof(h->email)) != 0)) {
            nt_api_error(r, 400, "bad_request", "%semail must be an email address", prefix);
            return -1;
        }
        if (!h->registrant && !h->email[0]) {
            nt_api_error(r, 400, "bad_request", "%s: a registrant or an email is required",
                         prefix);
            return -1;
        }
        x = json_object_get(e, "name");
        if (x && (!json_is_string(x) || !printable(json_string_value(x), json_string_length(x),
                                                   REGISTRANT_MAX))) {
            nt_api_error(r, 400, "bad_request", "%sname must be a string of 1 to %d bytes",
                         prefix, REGISTRANT_MAX);
            return -1;
        }
        h->name = json_string_value(x);
        x = json_object_get(e, "minutes");
        if (x && (!json_is_integer(x) || json_integer_value(x) < 0 ||
                  json_integer_value(x) > 100000)) {
            nt_api_error(r, 400, "bad_request", "%sminutes must be an integer from 0 to 100000",
                         prefix);
            return -1;
        }
        h->has_minutes = x != NULL;
        h->minutes = x ? (long long)json_integer_value(x) : 0;
        if (h->email[0])
            new_lead_id(h->email, h->cand);
    }
    return 0;
}

/* ---- step 4: apply -------------------------------------------------------------------- */

static void on_applied(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    wb_ctx_t *c = r->ctx;
    unsigned parts = r->d.cfg->partitions;
    unsigned char *woken;
    size_t applied = 0, already = 0, created = 0;
    json_t *unknown;

    (void)arg;
    if (rc != NT_OK) {
        /* Some calls may have applied: the platform retries, and markers make that safe. */
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    /* replies: the index writes first, then one per call */
    for (size_t call = 0; call < c->ncalls; call++) {
        const redisReply *x = rep[n - c->ncalls + call];
        const char *s = nt_api_script_reply_ok(x, 1, "webinar_apply") ? x->element[0]->str : "";
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
            json_array_append_new(
                unknown, json_pack("{s:I,s:s}", "index", (json_int_t)i, "error",
                                   !h->lead[0]  ? "unknown registrant and no email"
                                   : h->st == 'm' ? "the lead does not exist"
                                                  : "not applied"));
        }
    }
    for (unsigned p = 0; p < parts; p++)
        if (woken[p] && r->d.worker)
            nt_worker_wake(r->d.worker, p);
    free(woken);
    nt_api_reply_json(r, 200,
                      json_pack("{s:s,s:I,s:I,s:I,s:I,s:o}", "webinar", c->webinar, "applied",
                                (json_int_t)applied, "already", (json_int_t)already, "created",
                                (json_int_t)created, "enrolled", (json_int_t)c->enrolled,
                                "unknown", unknown));
}

/* Index the new leads and the registrants, and apply every resolved record, in one batch. */
static void wb_apply(nt_api_req_t *r, wb_ctx_t *c)
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
    /* counting sort of the resolved records by their lead's partition, request order kept */
    for (size_t i = 0; i < c->n; i++) {
        rec_t *h = &c->rec[i];

        if (h->created && h->email[0])
            nidx++;
        if (h->registrant && h->lead[0] && !h->by_registrant)
            nidx++;
        if (!h->lead[0])
            continue;
        part[i] = nt_partition(h->lead, parts);
        start[part[i] + 1]++;
    }
    for (unsigned p = 0; p < parts; p++)
        start[p + 1] += start[p];
    for (size_t i = 0; i < c->n; i++)
        if (c->rec[i].lead[0])
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
        char field[65 + REGISTRANT_MAX + 2];

        if (h->created && h->email[0]) {
            argv[0] = "HSET";
            argv[1] = nt_key_part(key, nt_partition(h->email, parts), "idx:email");
            argv[2] = h->email;
            argv[3] = h->lead;
            nt_api_batch_argv(b, nidx++, 4, argv, NULL);
        }
        if (h->registrant && h->lead[0] && !h->by_registrant) {
            snprintf(field, sizeof(field), "%s|%s", c->webinar, h->registrant);
            argv[0] = "HSET";
            argv[1] = nt_key_part(key, nt_partition(field, parts), "idx:reg");
            argv[2] = field;
            argv[3] = h->lead;
            nt_api_batch_argv(b, nidx++, 4, argv, NULL);
        }
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
            nt_api_argv_add(&a, c->webinar);
            nt_api_argv_add(&a, h->kind);
            if (h->has_minutes)
                nt_api_argv_addf(&a, "%lld", h->minutes);
            else
                nt_api_argv_add(&a, "");
            nt_api_argv_add(&a, h->registrant ? h->registrant : "");
        }
        if (nt_api_argv_failed(&a))
            oom = 1;
        else
            nt_api_batch_script(b, nidx + call, "webinar_apply", 1, a.n, (const char **)a.v,
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
    wb_ctx_t *c = r->ctx;

    (void)arg;
    for (size_t i = 0; i < n; i++) {
        if (status[i] == 'o')
            c->enrolled++;
        if (status[i] == 'f') {
            nt_api_error(r, 503, "unavailable",
                         "new leads could not be created; nothing of them was applied");
            return;
        }
    }
    wb_apply(r, c);
}

static void on_put(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    wb_ctx_t *c = r->ctx;

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
    wb_apply(r, c);
}

/* A new lead object for record h: email, names, stage inquiry, source. */
static int new_lead(const wb_ctx_t *c, const rec_t *h, nt_api_lead_in_t *in)
{
    const char *sp = h->name ? strchr(h->name, ' ') : NULL;
    size_t k = 0;

    memset(in, 0, sizeof(*in));
    in->id = strdup(h->lead);
    in->attrs = calloc(5, sizeof(*in->attrs));
    if (!in->id || !in->attrs)
        return -1;
#define ADD(k_, v_)                                                                            \
    do {                                                                                       \
        in->attrs[k].key = strdup(k_);                                                         \
        in->attrs[k].value = (v_);                                                             \
        in->nattrs = ++k;                                                                      \
        if (!in->attrs[k - 1].key || !in->attrs[k - 1].value)                                  \
            return -1;                                                                         \
    } while (0)
    ADD("email", strdup(h->email));
    if (h->name)
        ADD("first_name", sp ? strndup(h->name, (size_t)(sp - h->name)) : strdup(h->name));
    if (sp && sp[1])
        ADD("last_name", strdup(sp + 1));
    ADD("source", strdup("webinar"));
    ADD("source_detail", strdup(c->webinar));
#undef ADD
    in->stage = nt_stage_parse("inquiry");
    return 0;
}

/* ---- step 2: identity -------------------------------------------------------------------- */

static void on_lookup(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    wb_ctx_t *c = r->ctx;
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
        const redisReply *x;
        json_t *first;

        x = h->slot[0] >= 0 ? rep[h->slot[0]] : NULL;
        if (x && x->type == REDIS_REPLY_STRING && nt_lead_id_valid(x->str)) {
            snprintf(h->lead, sizeof(h->lead), "%s", x->str);
            h->by_registrant = 1;
            continue;
        }
        x = h->slot[1] >= 0 ? rep[h->slot[1]] : NULL;
        if (x && x->type == REDIS_REPLY_STRING && nt_lead_id_valid(x->str)) {
            snprintf(h->lead, sizeof(h->lead), "%s", x->str);
            continue;
        }
        if (!h->email[0])
            continue; /* an unknown registrant without an address: reported */
        snprintf(h->lead, sizeof(h->lead), "%s", h->cand);
        x = h->slot[2] >= 0 ? rep[h->slot[2]] : NULL;
        if (x && x->type == REDIS_REPLY_INTEGER && x->integer == 1)
            continue; /* a lead with that id, written before the index existed */
        /* a new person: once per id, however many records name it */
        first = json_object_get(seen, h->lead);
        if (first) {
            h->created = 0;
            continue;
        }
        h->created = 1;
        json_object_set_new(seen, h->lead, json_integer((json_int_t)i));
        c->newrec[c->nnew++] = i;
    }
    json_decref(seen);
    if (c->nnew == 0) {
        wb_apply(r, c);
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
    wb_ctx_t *c = r->ctx;
    unsigned parts = r->d.cfg->partitions;
    size_t nslots = 0;
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
    for (size_t i = 0; i < c->n; i++) {
        rec_t *h = &c->rec[i];

        if (h->registrant)
            h->slot[0] = (int)nslots++;
        if (h->email[0]) {
            h->slot[1] = (int)nslots++;
            h->slot[2] = (int)nslots++;
        }
    }
    b = nt_api_batch_new(r, nslots, on_lookup, NULL);
    if (!b) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        rec_t *h = &c->rec[i];
        char key[NT_KEY_MAX], field[65 + REGISTRANT_MAX + 2];
        const char *argv[3];

        if (h->registrant) {
            snprintf(field, sizeof(field), "%s|%s", c->webinar, h->registrant);
            argv[0] = "HGET";
            argv[1] = nt_key_part(key, nt_partition(field, parts), "idx:reg");
            argv[2] = field;
            nt_api_batch_argv(b, (size_t)h->slot[0], 3, argv, NULL);
        }
        if (h->email[0]) {
            argv[0] = "HGET";
            argv[1] = nt_key_part(key, nt_partition(h->email, parts), "idx:email");
            argv[2] = h->email;
            nt_api_batch_argv(b, (size_t)h->slot[1], 3, argv, NULL);
            argv[0] = "EXISTS";
            argv[1] = nt_key_lead(key, nt_partition(h->cand, parts), h->cand);
            nt_api_batch_argv(b, (size_t)h->slot[2], 2, argv, NULL);
        }
    }
    nt_api_batch_go(b);
}

static void on_plan(nt_rc_t rc, const nt_plan_t *plan, void *arg)
{
    nt_api_req_t *r = arg;
    wb_ctx_t *c = r->ctx;

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

void nt_api_webhook_webinar(nt_api_req_t *r)
{
    char sig[65];
    wb_ctx_t *c;
    json_t *root = NULL;
    nt_rc_t rc;

    if (nt_api_webhook_signed(r, sig) != 0)
        return;
    c = nt_api_ctx_new(r, sizeof(*c), wb_ctx_free);
    if (!c)
        return;
    memcpy(c->sig, sig, sizeof(c->sig));
    if (wb_parse(r, c, &root) != 0) {
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
