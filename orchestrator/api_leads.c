/* Lead routes: POST /v1/leads, PATCH and GET /v1/leads/{id}, POST /v1/leads/{id}/enrol, the
 * bulk enrolment POST /v1/plans/{id}/enrol, and the lead and enrolment helpers they share. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "clock.h"
#include "cond.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"

#define MAX_ATTRS 1000
#define MAX_VALUE 65536

/* --- Lead objects ----------------------------------------------------------------------------- */

void nt_api_lead_in_fini(nt_api_lead_in_t *in)
{
    free(in->id);
    for (size_t i = 0; i < in->nattrs; i++) {
        free((char *)in->attrs[i].key);
        free((char *)in->attrs[i].value);
    }
    free(in->attrs);
    memset(in, 0, sizeof(*in));
}

int nt_api_lead_parse(json_t *obj, int id_mode, const char *prefix, nt_api_lead_in_t *out,
                      char *err, size_t errlen)
{
    static const char *const allowed[] = {"id", "attributes", "score", "stage", NULL};
    memset(out, 0, sizeof(*out));
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "'%s' must be a lead object", prefix[0] ? prefix : "body");
        return -1;
    }
    if (nt_api_only_fields(obj, allowed, prefix, err, errlen) != 0)
        return -1;
    json_t *id = json_object_get(obj, "id");
    if (id_mode == NT_API_ID_FORBIDDEN && id) {
        snprintf(err, errlen, "field '%sid' is not allowed here: the id is in the path", prefix);
        return -1;
    }
    if (id_mode == NT_API_ID_REQUIRED) {
        if (!id) {
            snprintf(err, errlen, "missing field '%sid'", prefix);
            return -1;
        }
        if (!json_is_string(id)) {
            snprintf(err, errlen, "field '%sid' must be a string", prefix);
            return -1;
        }
        if (!nt_lead_id_valid(json_string_value(id)) ||
            strlen(json_string_value(id)) != json_string_length(id)) {
            snprintf(err, errlen,
                     "field '%sid' is not a valid lead id (1 to 128 of A-Z a-z 0-9 . _ @ + -)",
                     prefix);
            return -1;
        }
        out->id = strdup(json_string_value(id));
        if (!out->id)
            goto oom;
    }
    json_t *score = json_object_get(obj, "score");
    if (score) {
        if (!json_is_integer(score)) {
            snprintf(err, errlen, "field '%sscore' must be an integer", prefix);
            goto fail;
        }
        out->has_score = 1;
        out->score = json_integer_value(score);
    }
    json_t *stage = json_object_get(obj, "stage");
    if (stage) {
        if (!json_is_string(stage) || !(out->stage = nt_stage_parse(json_string_value(stage)))) {
            snprintf(err, errlen,
                     "field '%sstage' must be one of inquiry, mql, sal, sql, opportunity, won, "
                     "lost, disqualified",
                     prefix);
            goto fail;
        }
    }
    json_t *attrs = json_object_get(obj, "attributes");
    if (attrs) {
        if (!json_is_object(attrs)) {
            snprintf(err, errlen, "field '%sattributes' must be an object", prefix);
            goto fail;
        }
        size_t n = json_object_size(attrs);
        if (n > MAX_ATTRS) {
            snprintf(err, errlen, "field '%sattributes' has more than %d attributes", prefix,
                     MAX_ATTRS);
            goto fail;
        }
        out->attrs = calloc(n ? n : 1, sizeof(*out->attrs));
        if (!out->attrs)
            goto oom;
        const char *key;
        json_t *v;
        json_object_foreach(attrs, key, v)
        {
            if (!nt_attr_name_valid(key)) {
                snprintf(err, errlen,
                         "attribute name in '%sattributes' is not valid (1 to 64 of a-z 0-9 _, "
                         "not starting with _)",
                         prefix);
                goto fail;
            }
            char *s = nt_api_value_string(v);
            if (!s) {
                if (json_is_object(v) || json_is_array(v) || json_is_null(v)) {
                    snprintf(err, errlen,
                             "field '%sattributes.%s' must be a string, number or boolean", prefix,
                             key);
                    goto fail;
                }
                goto oom;
            }
            if (strlen(s) > MAX_VALUE) {
                free(s);
                snprintf(err, errlen, "field '%sattributes.%s' is longer than %d bytes", prefix,
                         key, MAX_VALUE);
                goto fail;
            }
            char *k = strdup(key);
            if (!k) {
                free(s);
                goto oom;
            }
            out->attrs[out->nattrs].key = k;
            out->attrs[out->nattrs].value = s;
            out->nattrs++;
        }
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    nt_api_lead_in_fini(out);
    return -1;
}

/* Append the field-value pairs a lead object writes: its attributes, then _score and _stage
 * when given. */
static void lead_fields_args(const nt_api_lead_in_t *in, nt_api_argv_t *a)
{
    for (size_t i = 0; i < in->nattrs; i++) {
        nt_api_argv_add(a, in->attrs[i].key);
        nt_api_argv_add(a, in->attrs[i].value);
    }
    if (in->has_score) {
        nt_api_argv_add(a, "_score");
        nt_api_argv_addf(a, "%" PRId64, in->score);
    }
    if (in->stage) {
        nt_api_argv_add(a, "_stage");
        nt_api_argv_add(a, nt_stage_name(in->stage));
    }
}

int nt_api_lead_put_args(const nt_http_deps_t *d, const char *id, const nt_api_lead_in_t *in,
                         const char *mode, nt_api_argv_t *a)
{
    char key[NT_KEY_MAX];
    unsigned p = nt_partition(id, d->cfg->partitions);
    nt_api_argv_add(a, nt_key_lead(key, p, id));
    nt_api_argv_add(a, nt_key_part(key, p, "events"));
    nt_api_argv_add(a, mode);
    nt_api_argv_add(a, id);
    nt_api_argv_addf(a, "%" PRId64, nt_now_ms());
    lead_fields_args(in, a);
    return 2;
}

int nt_api_lead_from_reply(nt_lead_t *lead, const redisReply *flat)
{
    if (!flat || flat->type != REDIS_REPLY_ARRAY)
        return -1;
    for (size_t i = 0; i + 1 < flat->elements; i += 2) {
        const redisReply *k = flat->element[i], *v = flat->element[i + 1];
        if (!k || !v || k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (nt_lead_set(lead, k->str, v->str) != 0)
            return -1;
    }
    return 0;
}

json_t *nt_api_lead_json(const nt_lead_t *lead)
{
    json_t *attrs = json_object();
    for (size_t i = 0; attrs && i < lead->nfields; i++)
        if (nt_attr_name_valid(lead->fields[i].key))
            json_object_set_new(attrs, lead->fields[i].key, json_string(lead->fields[i].value));
    const char *stage = nt_stage_name(nt_lead_stage(lead));
    const char *created = nt_lead_get(lead, "_created");
    return json_pack("{s:s,s:o,s:I,s:o,s:o}", "id", lead->id, "attributes",
                     attrs ? attrs : json_null(), "score", (json_int_t)nt_lead_score(lead), "stage",
                     stage ? json_string(stage) : json_null(), "created",
                     created ? json_integer(strtoll(created, NULL, 10)) : json_null());
}

/* --- Enrolment -------------------------------------------------------------------------------- */

static int64_t duration_ms(const Nt__Duration *d)
{
    if (!d)
        return 0;
    return (int64_t)d->days * 86400000 + (int64_t)d->hours * 3600000 + (int64_t)d->minutes * 60000 +
           (int64_t)d->seconds * 1000;
}

/* Append the plan arguments enrol.lua and api_enrol_many.lua share: id, version, now (engine
 * and real clocks), the re-entry policy after_exit and its cooldown, and the timeline cap. */
static void plan_args(const nt_api_req_t *r, const Nt__Workflow *wf, int64_t now, int64_t now_real,
                      nt_api_argv_t *a)
{
    nt_api_argv_add(a, wf->id);
    nt_api_argv_addf(a, "%u", wf->version);
    nt_api_argv_addf(a, "%" PRId64, now);
    nt_api_argv_addf(a, "%" PRId64, now_real);
    int after_exit = wf->reentry && wf->reentry->policy == NT__RE_ENTRY__POLICY__AFTER_EXIT;
    nt_api_argv_add(a, after_exit ? "1" : "0");
    nt_api_argv_addf(a, "%" PRId64, after_exit ? duration_ms(wf->reentry->cooldown) : 0);
    nt_api_argv_addf(a, "%d", r->d.cfg->timeline_max > 0 ? r->d.cfg->timeline_max : 20);
}

/* Append the partition's key of the plan's stats hash. */
static void stats_key_arg(unsigned p, const Nt__Workflow *wf, nt_api_argv_t *a)
{
    char key[NT_KEY_MAX], what[NT_KEY_MAX];
    snprintf(what, sizeof(what), "stats:%s", wf->id);
    nt_api_argv_add(a, nt_key_part(key, p, what));
}

int nt_api_enrol_args(const nt_api_req_t *r, const char *lead_id, const nt_plan_t *plan,
                      nt_api_argv_t *a)
{
    const Nt__Workflow *wf = plan->wf;
    char key[NT_KEY_MAX];
    unsigned p = nt_partition(lead_id, r->d.cfg->partitions);
    nt_api_argv_add(a, nt_key_lead(key, p, lead_id));
    nt_api_argv_add(a, nt_key_run(key, p, lead_id, wf->id));
    nt_api_argv_add(a, nt_key_part(key, p, "timers"));
    stats_key_arg(p, wf, a);
    nt_api_argv_add(a, nt_key_hist(key, p, lead_id));
    nt_api_argv_add(a, lead_id);
    int64_t now = nt_now_ms();
    plan_args(r, wf, now, nt_real_ms(), a);
    return 5;
}

int nt_api_enrol_result(const redisReply *reply, const char *lead_id, const nt_plan_t *plan,
                        int *status, const char **code, char *err, size_t errlen)
{
    const char *pid = plan->wf->id;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
        nt_log_error("http", "enrol script: %s",
                     reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply");
        *status = 500;
        *code = "internal";
        snprintf(err, errlen, "the enrolment script failed");
        return -1;
    }
    const char *s = reply->element[0]->str;
    if (strcmp(s, "ok") == 0)
        return 0;
    if (strcmp(s, "conflict") == 0) {
        *status = 409;
        *code = "conflict";
        snprintf(err, errlen, "lead %s is already active in plan %s", lead_id, pid);
    } else if (strcmp(s, "never") == 0) {
        *status = 422;
        *code = "not_eligible";
        snprintf(err, errlen,
                 "lead %s already went through plan %s and its re-entry policy is never", lead_id,
                 pid);
    } else if (strcmp(s, "cooldown") == 0) {
        *status = 422;
        *code = "not_eligible";
        snprintf(err, errlen,
                 "lead %s left plan %s less than the re-entry cooldown ago (%s ms to go)", lead_id,
                 pid, reply->elements > 1 && reply->element[1]->str ? reply->element[1]->str : "?");
    } else if (strcmp(s, "missing") == 0) {
        *status = 404;
        *code = "not_found";
        snprintf(err, errlen, "no lead %s", lead_id);
    } else {
        *status = 500;
        *code = "internal";
        snprintf(err, errlen, "the enrolment script answered '%s'", s);
    }
    return -1;
}

/* --- POST /v1/leads, PATCH /v1/leads/{id} ---------------------------------------------------- */

typedef struct put_ctx {
    nt_api_lead_in_t in;
    char *id;
    int create; /* POST: upsert */
} put_ctx_t;

static void put_ctx_free(void *p)
{
    put_ctx_t *c = p;
    nt_api_lead_in_fini(&c->in);
    free(c->id);
    free(c);
}

/* What follows a lead_put.lua reply x for lead id written from in, for the API and the plugin
 * host alike: wake the worker when the script posted lead.updated, have the worker decide the
 * outcomes of the lead's messages in flight on the lead as written (not on its snapshot from
 * before), keep the email index. Returns NT_OK (x is {"created"|"updated", fields, posted}),
 * NT_ENOTFOUND ({"missing"}: an update of an unknown lead), or NT_ERR (an unexpected reply,
 * logged). */
static nt_rc_t put_applied(const nt_http_deps_t *d, const char *id, const nt_api_lead_in_t *in,
                           const redisReply *x)
{
    if (x && x->type == REDIS_REPLY_ARRAY && x->elements >= 1 &&
        x->element[0]->type == REDIS_REPLY_STRING && strcmp(x->element[0]->str, "missing") == 0)
        return NT_ENOTFOUND;
    if (!nt_api_script_reply_ok(x, 3, "lead_put"))
        return NT_ERR;
    if (d->worker) {
        if (x->element[2]->type == REDIS_REPLY_INTEGER && x->element[2]->integer == 1)
            nt_worker_wake(d->worker, nt_partition(id, d->cfg->partitions));
        nt_worker_lead_changed(d->worker, id);
    }
    nt_api_email_index(d, id, in->attrs, in->nattrs);
    return NT_OK;
}

static void on_put(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    put_ctx_t *c = r->ctx;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    redisReply *x = rep[0];
    rc = put_applied(&r->d, c->id, &c->in, x);
    if (rc == NT_ENOTFOUND) {
        nt_api_error(r, 404, "not_found", "no lead %s", c->id);
        return;
    }
    if (rc != NT_OK) {
        nt_api_error(r, 500, "internal", "the lead update failed");
        return;
    }
    const char *st = x->element[0]->str;
    nt_lead_t lead;
    if (nt_lead_init(&lead, c->id) != 0 || nt_api_lead_from_reply(&lead, x->element[1]) != 0) {
        nt_lead_fini(&lead);
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    nt_api_reply_json(r, strcmp(st, "created") == 0 ? 201 : 200, nt_api_lead_json(&lead));
    nt_lead_fini(&lead);
}

static void lead_put(nt_api_req_t *r, int create)
{
    char err[512];
    put_ctx_t *c = nt_api_ctx_new(r, sizeof(*c), put_ctx_free);
    if (!c)
        return;
    c->create = create;
    if (create) {
        if (nt_api_lead_parse(r->body, NT_API_ID_REQUIRED, "", &c->in, err, sizeof(err)) != 0) {
            nt_api_error(r, 400, "bad_request", "%s", err);
            return;
        }
        c->id = strdup(c->in.id);
    } else {
        if (nt_api_path_lead_id(r))
            return;
        if (nt_api_lead_parse(r->body, NT_API_ID_FORBIDDEN, "", &c->in, err, sizeof(err)) != 0) {
            nt_api_error(r, 400, "bad_request", "%s", err);
            return;
        }
        c->id = strdup(r->seg[2]);
    }
    if (!c->id) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    if (nt_api_need_redis(r))
        return;
    nt_api_argv_t a = {0};
    int nkeys = nt_api_lead_put_args(&r->d, c->id, &c->in, create ? "upsert" : "update", &a);
    nt_api_script(r, "lead_put", nkeys, &a, on_put, NULL);
}

void nt_api_leads_post(nt_api_req_t *r)
{
    lead_put(r, 1);
}

void nt_api_leads_patch(nt_api_req_t *r)
{
    lead_put(r, 0);
}

/* --- The same update without a request: the plugin host's update_lead ------------------------ */

typedef struct upd {
    nt_http_deps_t d; /* copied: the update may outlive the HTTP server */
    char *id;
    nt_api_lead_in_t in;
    nt_api_lead_done_fn *done;
    void *arg;
} upd_t;

static void upd_free(upd_t *u)
{
    free(u->id);
    nt_api_lead_in_fini(&u->in);
    free(u);
}

static void on_updated(nt_rc_t rc, redisReply *reply, void *arg)
{
    upd_t *u = arg;

    /* Canceled: the daemon is going down and the worker may be gone; touch nothing. */
    if (rc == NT_OK) {
        rc = put_applied(&u->d, u->id, &u->in, reply);
        if (rc == NT_ERR)
            rc = NT_EUNAVAIL; /* an error reply (logged): worth a retry, bounded by the caller */
    }
    u->done(u->arg, rc);
    upd_free(u);
}

nt_rc_t nt_api_lead_update(const nt_http_deps_t *d, const char *lead_id, const nt_kv_t *attrs,
                           size_t nattrs, nt_api_lead_done_fn *done, void *arg, char *err,
                           size_t errlen)
{
    json_t *body = json_object(), *obj = json_object();
    nt_api_argv_t a = {0};
    upd_t *u = NULL;
    nt_rc_t rc = NT_ENOMEM;

    snprintf(err, errlen, "out of memory");
    if (!lead_id || !nt_lead_id_valid(lead_id) || !done || (nattrs && !attrs)) {
        snprintf(err, errlen, "%s",
                 !done || (nattrs && !attrs) ? "no attributes or no callback"
                                             : "not a valid lead id");
        rc = NT_EINVAL;
        goto out;
    }
    if (!body || !obj || json_object_set(body, "attributes", obj) != 0)
        goto out;
    /* As a PATCH body, so that exactly the API's checks apply (names, UTF-8, sizes, count). */
    for (size_t i = 0; i < nattrs; i++) {
        json_t *v = attrs[i].value ? json_string(attrs[i].value) : NULL;

        if (!attrs[i].key || !v) {
            snprintf(err, errlen, "attribute '%.64s' has no value or one that is not UTF-8",
                     attrs[i].key ? attrs[i].key : "");
            rc = NT_EINVAL;
            goto out;
        }
        if (json_object_set_new(obj, attrs[i].key, v) != 0)
            goto out;
    }
    u = calloc(1, sizeof(*u));
    if (!u || !(u->id = strdup(lead_id)))
        goto out;
    if (nt_api_lead_parse(body, NT_API_ID_FORBIDDEN, "", &u->in, err, errlen) != 0) {
        rc = strcmp(err, "out of memory") == 0 ? NT_ENOMEM : NT_EINVAL;
        goto out;
    }
    if (!nt_redis_up(d->redis)) {
        snprintf(err, errlen, "Redis is unavailable");
        rc = NT_EUNAVAIL;
        goto out;
    }
    u->d = *d;
    u->done = done;
    u->arg = arg;
    int nkeys = nt_api_lead_put_args(d, u->id, &u->in, "update", &a);
    if (nt_api_argv_failed(&a))
        goto out;
    rc =
        nt_redis_script(d->redis, "lead_put", on_updated, u, nkeys, a.n, (const char **)a.v, a.len);
    if (rc == NT_OK) {
        u = NULL; /* on_updated's */
        rc = NT_AGAIN;
    } else {
        snprintf(err, errlen, "Redis is unavailable");
        rc = rc == NT_ENOMEM ? NT_ENOMEM : NT_EUNAVAIL;
    }
out:
    nt_api_argv_fini(&a);
    json_decref(obj);
    json_decref(body);
    if (u)
        upd_free(u);
    return rc;
}

/* --- GET /v1/leads/{id} ----------------------------------------------------------------------- */

typedef struct get_ctx {
    nt_lead_t lead;
    json_t *timeline;
    char **plans;
    size_t nplans;
} get_ctx_t;

static void get_ctx_free(void *p)
{
    get_ctx_t *c = p;
    nt_lead_fini(&c->lead);
    json_decref(c->timeline);
    for (size_t i = 0; i < c->nplans; i++)
        free(c->plans[i]);
    free(c->plans);
    free(c);
}

static json_t *int_or_null(const char *s)
{
    if (!s || !*s)
        return json_null();
    long long v = strtoll(s, NULL, 10);
    return v ? json_integer(v) : json_null();
}

static void reply_lead(nt_api_req_t *r, redisReply **runs, size_t nruns)
{
    get_ctx_t *c = r->ctx;
    json_t *body = nt_api_lead_json(&c->lead);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < nruns && i < c->nplans; i++) {
        const redisReply *h = runs[i];
        if (!h || h->type != REDIS_REPLY_ARRAY || h->elements == 0)
            continue;
        const char *node = nt_api_flat_str(h, "n");
        const char *s = nt_api_flat_str(h, "s");
        const char *x = nt_api_flat_str(h, "x");
        const char *vi = nt_api_flat_str(h, "vi");
        const char *v = nt_api_flat_str(h, "v");
        json_array_append_new(arr,
                              json_pack("{s:s,s:I,s:o,s:s,s:I,s:o,s:o,s:o}", "plan", c->plans[i],
                                        "version", (json_int_t)(v ? strtoll(v, NULL, 10) : 0),
                                        "node", node && *node ? json_string(node) : json_null(),
                                        "status", s && strcmp(s, "a") == 0 ? "active" : "done",
                                        "visit", (json_int_t)(vi ? strtoll(vi, NULL, 10) : 0),
                                        "exit_reason", x && *x ? json_string(x) : json_null(),
                                        "entered_at", int_or_null(nt_api_flat_str(h, "e")),
                                        "due_at", int_or_null(nt_api_flat_str(h, "d"))));
    }
    if (!body || !arr) {
        json_decref(body);
        json_decref(arr);
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    json_object_set_new(body, "runs", arr);
    json_object_set(body, "timeline", c->timeline ? c->timeline : json_array());
    nt_api_reply_json(r, 200, body);
}

static void on_get_runs(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    reply_lead(r, rep, n);
}

/* The timeline is one string of lines "<at ms>|<kind>|<text>\n", oldest first (apply.lua); the
 * answer holds its newest `max` entries, newest first. */
static json_t *timeline_json(const redisReply *x, int max)
{
    json_t *arr = json_array();
    if (!arr || !x || x->type != REDIS_REPLY_STRING || max <= 0)
        return arr;
    const char *begin = x->str, *e = x->str + x->len;
    while ((int)json_array_size(arr) < max && e > begin) {
        if (e[-1] == '\n')
            e--;
        const char *p = e;
        while (p > begin && p[-1] != '\n')
            p--;
        const char *k = memchr(p, '|', (size_t)(e - p));
        const char *m = k ? memchr(k + 1, '|', (size_t)(e - k - 1)) : NULL;
        if (k && m) {
            json_t *text = json_stringn(m + 1, (size_t)(e - m - 1));
            json_array_append_new(
                arr, json_pack("{s:I,s:s%,s:o}", "at", (json_int_t)strtoll(p, NULL, 10), "kind",
                               k + 1, (size_t)(m - k - 1), "text", text ? text : json_string("")));
        }
        e = p;
    }
    return arr;
}

static void on_get_lead(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    get_ctx_t *c = r->ctx;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    if (!rep[0] || rep[0]->type != REDIS_REPLY_ARRAY) {
        nt_api_error(r, 500, "internal", "unexpected reply from Redis");
        return;
    }
    if (rep[0]->elements == 0) {
        nt_api_error(r, 404, "not_found", "no lead %s", c->lead.id);
        return;
    }
    if (nt_api_lead_from_reply(&c->lead, rep[0]) != 0) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    c->timeline = timeline_json(rep[1], r->d.cfg->timeline_max);
    c->plans = calloc(c->lead.nfields ? c->lead.nfields : 1, sizeof(*c->plans));
    if (!c->plans) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < c->lead.nfields; i++)
        if (strncmp(c->lead.fields[i].key, "r:", 2) == 0 && c->lead.fields[i].key[2]) {
            c->plans[c->nplans] = strdup(c->lead.fields[i].key + 2);
            if (!c->plans[c->nplans]) {
                nt_api_error(r, 500, "internal", "out of memory");
                return;
            }
            c->nplans++;
        }
    if (c->nplans == 0) {
        reply_lead(r, NULL, 0);
        return;
    }
    nt_api_batch_t *b = nt_api_batch_new(r, c->nplans, on_get_runs, NULL);
    if (!b) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    unsigned p = nt_partition(c->lead.id, r->d.cfg->partitions);
    for (size_t i = 0; i < c->nplans; i++) {
        char key[NT_KEY_MAX];
        const char *argv[] = {"HGETALL", nt_key_run(key, p, c->lead.id, c->plans[i])};
        nt_api_batch_argv(b, i, 2, argv, NULL);
    }
    nt_api_batch_go(b);
}

void nt_api_leads_get(nt_api_req_t *r)
{
    const char *id = r->seg[2];
    if (nt_api_path_lead_id(r) || nt_api_need_redis(r))
        return;
    get_ctx_t *c = nt_api_ctx_new(r, sizeof(*c), get_ctx_free);
    if (!c)
        return;
    if (nt_lead_init(&c->lead, id) != 0) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    nt_api_batch_t *b = nt_api_batch_new(r, 2, on_get_lead, NULL);
    if (!b) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    unsigned p = nt_partition(id, r->d.cfg->partitions);
    char key[NT_KEY_MAX];
    const char *a1[] = {"HGETALL", nt_key_lead(key, p, id)};
    nt_api_batch_argv(b, 0, 2, a1, NULL);
    const char *a2[] = {"GET", nt_key_hist(key, p, id)};
    nt_api_batch_argv(b, 1, 2, a2, NULL);
    nt_api_batch_go(b);
}

/* --- POST /v1/leads/{id}/enrol --------------------------------------------------------------- */

typedef struct enrol_ctx {
    char *lead_id;
    char *plan_id;
    int waiting; /* lead read and plan lookup still out */
    nt_rc_t lead_rc;
    nt_lead_t lead;
    int lead_found;
    nt_rc_t plan_rc;
    const nt_plan_t *plan;
} enrol_ctx_t;

static void enrol_ctx_free(void *p)
{
    enrol_ctx_t *c = p;
    free(c->lead_id);
    free(c->plan_id);
    nt_lead_fini(&c->lead);
    free(c);
}

static void on_enrolled(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    enrol_ctx_t *c = r->ctx;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    int status;
    const char *code;
    char err[512];
    if (nt_api_enrol_result(rep[0], c->lead_id, c->plan, &status, &code, err, sizeof(err)) != 0) {
        nt_api_error(r, status, code, "%s", err);
        return;
    }
    nt_metrics.runs_enrolled++;
    if (r->d.worker)
        nt_worker_wake(r->d.worker, nt_partition(c->lead_id, r->d.cfg->partitions));
    nt_api_reply_json(r, 202,
                      json_pack("{s:s,s:s,s:I,s:s}", "lead", c->lead_id, "plan", c->plan_id,
                                "version", (json_int_t)c->plan->wf->version, "status", "enrolled"));
}

/* Both the lead and the plan are in: check, then enrol. */
static void enrol_continue(nt_api_req_t *r)
{
    enrol_ctx_t *c = r->ctx;
    if (r->finished)
        return;
    if (c->lead_rc != NT_OK) {
        nt_api_error_rc(r, c->lead_rc, NULL);
        return;
    }
    if (!c->lead_found) {
        nt_api_error(r, 404, "not_found", "no lead %s", c->lead_id);
        return;
    }
    if (c->plan_rc == NT_ENOTFOUND) {
        nt_api_error(r, 404, "not_found", "no plan %s (or it has no active version)", c->plan_id);
        return;
    }
    if (c->plan_rc == NT_EINVAL) {
        nt_api_error(r, 500, "internal", "the active version of plan %s does not unpack",
                     c->plan_id);
        return;
    }
    if (c->plan_rc != NT_OK) {
        nt_api_error_rc(r, c->plan_rc, NULL);
        return;
    }
    if (!nt_cond_eval(c->plan->wf->entry, &c->lead, nt_now_ms())) {
        nt_api_error(r, 422, "not_eligible", "lead %s does not match the entry filter of plan %s",
                     c->lead_id, c->plan_id);
        return;
    }
    nt_api_argv_t a = {0};
    int nkeys = nt_api_enrol_args(r, c->lead_id, c->plan, &a);
    nt_api_script(r, "enrol", nkeys, &a, on_enrolled, NULL);
}

static void on_enrol_lead(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    enrol_ctx_t *c = r->ctx;
    c->lead_rc = rc;
    if (rc == NT_OK) {
        if (!rep[0] || rep[0]->type != REDIS_REPLY_ARRAY)
            c->lead_rc = NT_ERR;
        else if (rep[0]->elements > 0) {
            c->lead_found = 1;
            if (nt_api_lead_from_reply(&c->lead, rep[0]) != 0)
                c->lead_rc = NT_ENOMEM;
        }
    }
    if (--c->waiting == 0)
        enrol_continue(r);
}

static void on_enrol_plan(nt_rc_t rc, const nt_plan_t *plan, void *arg)
{
    nt_api_req_t *r = arg;
    enrol_ctx_t *c = r->ctx;
    c->plan_rc = rc;
    c->plan = plan;
    if (--c->waiting == 0)
        enrol_continue(r);
    nt_api_unref(r);
}

void nt_api_leads_enrol(nt_api_req_t *r)
{
    static const char *const allowed[] = {"plan", NULL};
    char err[256];
    const char *id = r->seg[2];
    if (nt_api_path_lead_id(r))
        return;
    if (nt_api_only_fields(r->body, allowed, "", err, sizeof(err)) != 0) {
        nt_api_error(r, 400, "bad_request", "%s", err);
        return;
    }
    json_t *plan = json_object_get(r->body, "plan");
    if (!plan) {
        nt_api_error(r, 400, "bad_request", "missing field 'plan'");
        return;
    }
    if (!json_is_string(plan) || !nt_api_plan_id_valid(json_string_value(plan))) {
        nt_api_error(r, 400, "bad_request",
                     "field 'plan' must be a plan id (1 to 64 of a-z 0-9 _ -)");
        return;
    }
    if (nt_api_need_redis(r))
        return;
    enrol_ctx_t *c = nt_api_ctx_new(r, sizeof(*c), enrol_ctx_free);
    if (!c)
        return;
    c->lead_id = strdup(id);
    c->plan_id = strdup(json_string_value(plan));
    if (nt_lead_init(&c->lead, id) != 0 || !c->lead_id || !c->plan_id) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    c->waiting = 2;
    nt_api_ref(r); /* held across both lookups */
    nt_api_batch_t *b = nt_api_batch_new(r, 1, on_enrol_lead, NULL);
    if (!b) {
        c->lead_rc = NT_ENOMEM;
        c->waiting--;
    } else {
        char key[NT_KEY_MAX];
        const char *argv[] = {"HGETALL",
                              nt_key_lead(key, nt_partition(id, r->d.cfg->partitions), id)};
        nt_api_batch_argv(b, 0, 2, argv, NULL);
        nt_api_batch_go(b);
    }
    nt_api_ref(r);
    nt_rc_t rc = nt_plans_get(r->d.plans, c->plan_id, 0, on_enrol_plan, r);
    if (rc != NT_OK) {
        c->plan_rc = rc;
        if (--c->waiting == 0)
            enrol_continue(r);
        nt_api_unref(r);
    }
    nt_api_unref(r);
}

/* --- POST /v1/plans/{id}/enrol ---------------------------------------------------------------- */

/* Bulk enrolment costs one script call (api_enrol_many.lua) per partition and BULK_PER_CALL
 * leads, all of a request pipelined at once, instead of two calls per lead: the per-call cost
 * in Redis (Lua entry, argument objects, the MULTI/EXEC of its propagation) dominated. When
 * the plan has an entry filter, the leads' stored hashes are read first in one pipelined
 * round, and the filter runs here on the stored fields merged with the request's. */

#define BULK_MAX 10000
#define BULK_PER_CALL 500 /* leads per script call: bounds how long one call blocks Redis */

/* Per-lead outcome letters, as api_enrol_many.lua answers them (plus the caller's own). */
#define BULK_PENDING 0
#define BULK_OK 'o'
#define BULK_UPSERTED 'u' /* the entry filter said no */
#define BULK_CONFLICT 'c'
#define BULK_NEVER 'n'
#define BULK_COOLDOWN 'w'
#define BULK_FAILED 'f' /* the script call failed */

typedef struct bulk_ctx {
    nt_api_req_t *r;          /* the request it works for */
    nt_api_enrolled_fn *done; /* NULL: POST /v1/plans/{id}/enrol replies itself */
    void *done_arg;
    nt_api_lead_in_t *leads; /* parsed, in request order */
    size_t n;
    const nt_plan_t *plan;
    unsigned char *eligible; /* per lead: the entry filter holds */
    char *status;            /* per lead: BULK_* */
    int64_t *wait_ms;        /* per lead: cooldown left (BULK_COOLDOWN) */
    size_t *order;           /* lead indices grouped by partition, request order within */
    size_t *call_first;      /* per script call: first position in order[] */
    size_t *call_count;      /* per script call: leads */
    size_t ncalls;
} bulk_ctx_t;

static void bulk_ctx_free(void *p)
{
    bulk_ctx_t *c = p;
    for (size_t i = 0; i < c->n; i++)
        nt_api_lead_in_fini(&c->leads[i]);
    free(c->leads);
    free(c->eligible);
    free(c->status);
    free(c->wait_ms);
    free(c->order);
    free(c->call_first);
    free(c->call_count);
    free(c);
}

static void bulk_reply(nt_api_req_t *r, bulk_ctx_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->status[i] != BULK_FAILED && c->status[i] != BULK_PENDING)
            nt_api_email_index(&r->d, c->leads[i].id, c->leads[i].attrs, c->leads[i].nattrs);
    if (c->done) {
        unsigned parts = r->d.cfg->partitions;
        size_t enrolled = 0;
        for (size_t i = 0; i < c->n; i++)
            if (c->status[i] == BULK_OK) {
                enrolled++;
                if (r->d.worker)
                    nt_worker_wake(r->d.worker, nt_partition(c->leads[i].id, parts));
            }
        nt_metrics.runs_enrolled += enrolled;
        c->done(r, c->status, c->n, c->done_arg);
        return;
    }
    const char *pid = c->plan->wf->id;
    unsigned parts = r->d.cfg->partitions;
    unsigned char *woken = calloc(parts ? parts : 1, 1);
    json_t *skipped = json_array();
    size_t enrolled = 0;
    if (!woken || !skipped) {
        free(woken);
        json_decref(skipped);
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        const char *id = c->leads[i].id;
        char msg[512];
        const char *reason = "not_eligible";
        switch (c->status[i]) {
        case BULK_OK:
            enrolled++;
            woken[nt_partition(id, parts)] = 1;
            continue;
        case BULK_UPSERTED:
            snprintf(msg, sizeof(msg), "lead %s does not match the entry filter of plan %s", id,
                     pid);
            break;
        case BULK_CONFLICT:
            reason = "conflict";
            snprintf(msg, sizeof(msg), "lead %s is already active in plan %s", id, pid);
            break;
        case BULK_NEVER:
            snprintf(msg, sizeof(msg),
                     "lead %s already went through plan %s and its re-entry policy is never", id,
                     pid);
            break;
        case BULK_COOLDOWN:
            snprintf(msg, sizeof(msg),
                     "lead %s left plan %s less than the re-entry cooldown ago (%" PRId64
                     " ms to go)",
                     id, pid, c->wait_ms[i]);
            break;
        default:
            reason = "internal";
            snprintf(msg, sizeof(msg), "the enrolment of lead %s failed", id);
            break;
        }
        json_array_append_new(
            skipped, json_pack("{s:s,s:s,s:s}", "id", id, "reason", reason, "message", msg));
    }
    nt_metrics.runs_enrolled += enrolled;
    for (unsigned p = 0; p < parts; p++)
        if (woken[p] && r->d.worker)
            nt_worker_wake(r->d.worker, p);
    free(woken);
    nt_api_reply_json(r, 200,
                      json_pack("{s:I,s:o}", "enrolled", (json_int_t)enrolled, "skipped", skipped));
}

/* Read the statuses of one script call into c->status of its leads. Returns 0, or -1 when the
 * reply is not what api_enrol_many.lua answers. */
static int bulk_statuses(bulk_ctx_t *c, size_t call, const redisReply *x, int *posted)
{
    if (!nt_api_script_reply_ok(x, 2, "api_enrol_many"))
        return -1;
    *posted = x->element[1]->type == REDIS_REPLY_INTEGER && x->element[1]->integer > 0;
    const char *s = x->element[0]->str;
    const size_t *idx = c->order + c->call_first[call];
    for (size_t k = 0; k < c->call_count[call]; k++) {
        while (*s == ' ')
            s++;
        if (!*s)
            return -1;
        char st = *s;
        if (st == BULK_COOLDOWN)
            c->wait_ms[idx[k]] = strtoll(s + 1, NULL, 10);
        if (st != BULK_OK && st != BULK_UPSERTED && st != BULK_CONFLICT && st != BULK_NEVER &&
            st != BULK_COOLDOWN)
            return -1;
        c->status[idx[k]] = st;
        while (*s && *s != ' ')
            s++;
    }
    return 0;
}

static void on_bulk_written(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    bulk_ctx_t *c = arg;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    for (size_t call = 0; call < n; call++) {
        int posted = 0;
        if (bulk_statuses(c, call, rep[call], &posted) != 0) {
            for (size_t k = 0; k < c->call_count[call]; k++) {
                size_t i = c->order[c->call_first[call] + k];
                if (c->status[i] == BULK_PENDING)
                    c->status[i] = BULK_FAILED;
            }
            continue;
        }
        /* a lead.updated event for a lead whose runs all live in other plans still needs its
         * partition's worker to look */
        if (posted && r->d.worker)
            nt_worker_wake(r->d.worker, nt_partition(c->leads[c->order[c->call_first[call]]].id,
                                                     r->d.cfg->partitions));
    }
    bulk_reply(r, c);
}

/* Group the leads by partition, BULK_PER_CALL per call, and issue every call at once. */
static void bulk_write(nt_api_req_t *r, bulk_ctx_t *c)
{
    const Nt__Workflow *wf = c->plan->wf;
    unsigned parts = r->d.cfg->partitions;
    size_t *start = calloc((size_t)parts + 1, sizeof(*start));
    unsigned *part = malloc((c->n ? c->n : 1) * sizeof(*part));
    c->order = malloc((c->n ? c->n : 1) * sizeof(*c->order));
    /* at most one partial call per partition */
    size_t maxcalls = c->n / BULK_PER_CALL + parts + 1;
    c->call_first = malloc(maxcalls * sizeof(*c->call_first));
    c->call_count = malloc(maxcalls * sizeof(*c->call_count));
    if (!start || !part || !c->order || !c->call_first || !c->call_count) {
        free(start);
        free(part);
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    /* counting sort by partition, stable: leads of one partition keep the request's order,
     * which is the order the script applies them in (a lead twice: the second sees the first) */
    for (size_t i = 0; i < c->n; i++) {
        part[i] = nt_partition(c->leads[i].id, parts);
        start[part[i] + 1]++;
    }
    for (unsigned p = 0; p < parts; p++)
        start[p + 1] += start[p];
    for (size_t i = 0; i < c->n; i++)
        c->order[start[part[i]]++] = i;
    size_t at = 0;
    c->ncalls = 0;
    for (unsigned p = 0; p < parts; p++) {
        size_t end = start[p]; /* advanced to the end of p by the fill above */
        while (at < end) {
            size_t k = end - at < BULK_PER_CALL ? end - at : BULK_PER_CALL;
            c->call_first[c->ncalls] = at;
            c->call_count[c->ncalls] = k;
            c->ncalls++;
            at += k;
        }
    }
    if (c->ncalls == 0) {
        free(start);
        free(part);
        bulk_reply(r, c);
        return;
    }
    nt_api_batch_t *b = nt_api_batch_new(r, c->ncalls, on_bulk_written, c);
    if (!b) {
        free(start);
        free(part);
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    int64_t now = nt_now_ms(), now_real = nt_real_ms();
    int oom = 0;
    for (size_t call = 0; call < c->ncalls; call++) {
        const size_t *idx = c->order + c->call_first[call];
        unsigned p = part[idx[0]];
        char key[NT_KEY_MAX];
        nt_api_argv_t a = {0};
        nt_api_argv_add(&a, nt_key_part(key, p, "timers"));
        stats_key_arg(p, wf, &a);
        nt_api_argv_add(&a, nt_key_part(key, p, "events"));
        nt_api_argv_addf(&a, "nt:{%u}:", p);
        plan_args(r, wf, now, now_real, &a);
        for (size_t k = 0; k < c->call_count[call]; k++) {
            const nt_api_lead_in_t *in = &c->leads[idx[k]];
            size_t pairs = in->nattrs + (in->has_score ? 1 : 0) + (in->stage ? 1 : 0);
            nt_api_argv_add(&a, in->id);
            nt_api_argv_addf(&a, "%zu", 2 * pairs + (c->eligible[idx[k]] ? 1 : 0));
            lead_fields_args(in, &a);
        }
        if (nt_api_argv_failed(&a))
            oom = 1;
        else
            nt_api_batch_script(b, call, "api_enrol_many", 3, a.n, (const char **)a.v, a.len);
        nt_api_argv_fini(&a);
        if (oom)
            break;
    }
    free(start);
    free(part);
    if (oom)
        nt_api_error(r, 500, "internal", "out of memory");
    nt_api_batch_go(b);
}

/* The entry filter on the stored fields of each lead (rep[i], HGETALL) with the request's
 * written over them, as they will be after the upsert. */
static void on_bulk_read(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    bulk_ctx_t *c = arg;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    int64_t now = nt_now_ms();
    char num[32];
    for (size_t i = 0; i < n && i < c->n; i++) {
        const nt_api_lead_in_t *in = &c->leads[i];
        nt_lead_t lead;
        int bad = nt_lead_init(&lead, in->id) != 0 || nt_api_lead_from_reply(&lead, rep[i]) != 0;
        if (!bad && lead.nfields == 0) {
            snprintf(num, sizeof(num), "%" PRId64, now);
            bad = nt_lead_set(&lead, "_created", num) != 0;
        }
        for (size_t j = 0; !bad && j < in->nattrs; j++)
            bad = nt_lead_set(&lead, in->attrs[j].key, in->attrs[j].value) != 0;
        if (!bad && in->has_score) {
            snprintf(num, sizeof(num), "%" PRId64, in->score);
            bad = nt_lead_set(&lead, "_score", num) != 0;
        }
        if (!bad && in->stage)
            bad = nt_lead_set(&lead, "_stage", nt_stage_name(in->stage)) != 0;
        if (bad) {
            nt_lead_fini(&lead);
            nt_api_error(r, 500, "internal", "out of memory");
            return;
        }
        c->eligible[i] = (unsigned char)nt_cond_eval(c->plan->wf->entry, &lead, now);
        nt_lead_fini(&lead);
    }
    bulk_write(r, c);
}

/* With c->plan set: read the stored leads when the plan has an entry filter, then write. */
static void bulk_start(nt_api_req_t *r, bulk_ctx_t *c)
{
    const Nt__Condition *entry = c->plan->wf->entry;
    if (!entry || entry->kind_case == NT__CONDITION__KIND__NOT_SET || c->n == 0) {
        memset(c->eligible, 1, c->n);
        bulk_write(r, c);
        return;
    }
    nt_api_batch_t *b = nt_api_batch_new(r, c->n, on_bulk_read, c);
    if (!b) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    unsigned parts = r->d.cfg->partitions;
    for (size_t i = 0; i < c->n; i++) {
        char key[NT_KEY_MAX];
        const char *id = c->leads[i].id;
        const char *argv[] = {"HGETALL", nt_key_lead(key, nt_partition(id, parts), id)};
        nt_api_batch_argv(b, i, 2, argv, NULL);
    }
    nt_api_batch_go(b);
}

static void on_bulk_plan(nt_rc_t rc, const nt_plan_t *plan, void *arg)
{
    bulk_ctx_t *c = arg;
    nt_api_req_t *r = c->r;
    if (r->finished) {
        nt_api_unref(r);
        return;
    }
    if (rc == NT_ENOTFOUND) {
        nt_api_error(r, 404, "not_found", "no plan %s (or it has no active version)", r->seg[2]);
    } else if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
    } else {
        c->plan = plan;
        bulk_start(r, c);
    }
    nt_api_unref(r);
}

void nt_api_bulk_enrol(nt_api_req_t *r)
{
    static const char *const allowed[] = {"leads", NULL};
    char err[512];
    if (nt_api_path_plan_id(r))
        return;
    if (nt_api_only_fields(r->body, allowed, "", err, sizeof(err)) != 0) {
        nt_api_error(r, 400, "bad_request", "%s", err);
        return;
    }
    json_t *leads = json_object_get(r->body, "leads");
    if (!leads) {
        nt_api_error(r, 400, "bad_request", "missing field 'leads'");
        return;
    }
    if (!json_is_array(leads)) {
        nt_api_error(r, 400, "bad_request", "field 'leads' must be an array of lead objects");
        return;
    }
    size_t n = json_array_size(leads);
    if (n > BULK_MAX) {
        nt_api_error(r, 400, "bad_request", "field 'leads' has %zu entries, more than %d", n,
                     BULK_MAX);
        return;
    }
    bulk_ctx_t *c = nt_api_ctx_new(r, sizeof(*c), bulk_ctx_free);
    if (!c)
        return;
    c->r = r;
    c->leads = calloc(n ? n : 1, sizeof(*c->leads));
    c->eligible = calloc(n ? n : 1, 1);
    c->status = calloc(n ? n : 1, 1);
    c->wait_ms = calloc(n ? n : 1, sizeof(*c->wait_ms));
    if (!c->leads || !c->eligible || !c->status || !c->wait_ms) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "leads[%zu].", i);
        if (nt_api_lead_parse(json_array_get(leads, i), NT_API_ID_REQUIRED, prefix, &c->leads[i],
                              err, sizeof(err)) != 0) {
            nt_api_error(r, 400, "bad_request", "%s", err);
            return;
        }
        c->n = i + 1;
    }
    nt_api_body_done(r); /* the leads are in c now */
    if (nt_api_need_redis(r))
        return;
    nt_api_ref(r);
    nt_rc_t rc = nt_plans_get(r->d.plans, r->seg[2], 0, on_bulk_plan, c);
    if (rc != NT_OK) {
        nt_api_unref(r);
        nt_api_error_rc(r, rc, NULL);
    }
}

void nt_api_bulk_free(nt_api_bulk_t *b)
{
    if (b)
        bulk_ctx_free(b);
}

nt_api_bulk_t *nt_api_enrol_many(nt_api_req_t *r, const nt_plan_t *plan, nt_api_lead_in_t *leads,
                                 size_t n, nt_api_enrolled_fn *done, void *arg)
{
    bulk_ctx_t *c = calloc(1, sizeof(*c));
    if (!c) {
        for (size_t i = 0; i < n; i++)
            nt_api_lead_in_fini(&leads[i]);
        free(leads);
        nt_api_error(r, 500, "internal", "out of memory");
        return NULL;
    }
    c->r = r;
    c->done = done;
    c->done_arg = arg;
    c->leads = leads;
    c->n = n;
    c->plan = plan;
    c->eligible = calloc(n ? n : 1, 1);
    c->status = calloc(n ? n : 1, 1);
    c->wait_ms = calloc(n ? n : 1, sizeof(*c->wait_ms));
    if (!c->eligible || !c->status || !c->wait_ms) {
        nt_api_error(r, 500, "internal", "out of memory");
        return c;
    }
    bulk_start(r, c);
    return c;
}
