/* Plan routes: publish (POST /v1/plans), list, get, activate and stats. Bulk enrolment
 * (POST /v1/plans/{id}/enrol) lives in api_leads.c. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "clock.h"
#include "keys.h"
#include "log.h"
#include "validate.h"

#define PUBLISH_ATTEMPTS 8

static void invalid_plan(nt_api_req_t *r, json_t *problems, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 422 invalid_plan with problems (stolen). */
static void invalid_plan(nt_api_req_t *r, json_t *problems, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    nt_api_error_json(r, 422,
                      json_pack("{s:{s:s,s:s,s:o}}", "error", "code", "invalid_plan", "message",
                                msg, "problems", problems ? problems : json_array()));
}

static json_t *one_problem(const char *node, const char *msg)
{
    json_t *a = json_array();
    json_array_append_new(
        a, json_pack("{s:o,s:s}", "node", node ? json_string(node) : json_null(), "message", msg));
    return a;
}

static int cmp_int(const void *a, const void *b)
{
    json_int_t x = json_integer_value(*(json_t *const *)a);
    json_int_t y = json_integer_value(*(json_t *const *)b);
    return (x > y) - (x < y);
}

/* The published versions of a plan index hash, sorted. */
static json_t *versions_json(const redisReply *flat)
{
    json_t *tmp[1024];
    size_t n = 0;
    for (size_t i = 0; flat && i + 1 < flat->elements && n < 1024; i += 2)
        if (flat->element[i]->type == REDIS_REPLY_STRING &&
            strncmp(flat->element[i]->str, "published:", 10) == 0)
            tmp[n++] = json_integer(strtoll(flat->element[i]->str + 10, NULL, 10));
    qsort(tmp, n, sizeof(tmp[0]), cmp_int);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, tmp[i]);
    return a;
}

static json_t *nodes_json(const nt_plan_t *plan)
{
    json_t *a = json_array();
    for (size_t i = 0; plan && i < plan->wf->n_nodes; i++) {
        const Nt__Node *nd = plan->wf->nodes[i];
        json_array_append_new(a, json_pack("{s:s,s:s,s:s}", "id", nd->id ? nd->id : "", "kind",
                                           nt_node_kind_name(nd), "label",
                                           nd->label ? nd->label : ""));
    }
    return a;
}

/* --- POST /v1/plans -------------------------------------------------------------------------- */

typedef struct pub_ctx {
    nt_plan_t *plan; /* owned until handed to the cache */
    uint8_t *packed;
    size_t len;
    int activate;
    int attempts;
    uint32_t expected; /* latest version before ours */
} pub_ctx_t;

static void pub_ctx_free(void *p)
{
    pub_ctx_t *c = p;
    nt_plan_free(c->plan);
    free(c->packed);
    free(c);
}

static void publish_try(nt_api_req_t *r);

static void on_published(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    pub_ctx_t *c = r->ctx;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    redisReply *x = rep[0];
    if (!nt_api_script_reply_ok(x, 2, "publish")) {
        nt_api_error(r, 500, "internal", "the plan could not be stored");
        return;
    }
    if (strcmp(x->element[0]->str, "retry") == 0) {
        if (++c->attempts >= PUBLISH_ATTEMPTS) {
            nt_api_error(r, 409, "conflict", "plan %s is being published concurrently; retry",
                         c->plan->wf->id);
            return;
        }
        c->expected = (uint32_t)strtoul(x->element[1]->str ? x->element[1]->str : "0", NULL, 10);
        publish_try(r);
        return;
    }
    int active = x->elements > 2 && x->element[2]->str && strcmp(x->element[2]->str, "1") == 0;
    char *id = strdup(c->plan->wf->id);
    uint32_t ver = c->plan->wf->version;
    nt_plans_put(r->d.plans, c->plan);
    c->plan = NULL;
    nt_log_info("http", "plan %s v%u published%s", id ? id : "?", ver, active ? ", active" : "");
    nt_api_reply_json(r, 201,
                      json_pack("{s:s,s:I,s:b}", "id", id ? id : "", "version", (json_int_t)ver,
                                "active", active));
    free(id);
}

/* Pack with version expected+1 and run publish.lua. */
static void publish_try(nt_api_req_t *r)
{
    pub_ctx_t *c = r->ctx;
    Nt__Workflow *wf = c->plan->wf;
    wf->version = c->expected + 1;
    free(c->packed);
    c->len = nt__workflow__get_packed_size(wf);
    c->packed = malloc(c->len ? c->len : 1);
    if (!c->packed) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    nt__workflow__pack(wf, c->packed);
    char k1[NT_KEY_MAX], k2[NT_KEY_MAX], exp[16], ver[16], now[24];
    snprintf(exp, sizeof(exp), "%u", c->expected);
    snprintf(ver, sizeof(ver), "%u", wf->version);
    snprintf(now, sizeof(now), "%" PRId64, nt_real_ms());
    const char *argv[] = {nt_key_plan_index(k1, wf->id),
                          nt_key_plan(k2, wf->id, wf->version),
                          wf->id,
                          exp,
                          ver,
                          (const char *)c->packed,
                          wf->name ? wf->name : "",
                          now,
                          c->activate ? "1" : "0"};
    size_t lens[9];
    for (int i = 0; i < 9; i++)
        lens[i] = i == 5 ? c->len : strlen(argv[i]);
    /* The plan's own keys share the hash tag {<id>} (one cluster slot, one script); the set of
     * plan ids lives elsewhere and is added to separately; listing skips ids with no plan. */
    const char *sadd[] = {"SADD", NT_KEY_PLANS, wf->id};
    nt_api_batch_t *b = nt_api_batch_new(r, 2, on_published, NULL);
    if (!b) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    nt_api_batch_script(b, 0, "publish", 2, 9, argv, lens);
    nt_api_batch_argv(b, 1, 3, sadd, NULL);
    nt_api_batch_go(b);
}

static void on_latest(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    pub_ctx_t *c = r->ctx;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    c->expected = 0;
    if (rep[0] && rep[0]->type == REDIS_REPLY_STRING)
        c->expected = (uint32_t)strtoul(rep[0]->str, NULL, 10);
    publish_try(r);
}

void nt_api_plans_publish(nt_api_req_t *r)
{
    char *err = NULL;
    nt_plan_t *plan = nt_plan_new(r->raw, r->rawlen, &err);
    if (!plan) {
        char msg[300];
        snprintf(msg, sizeof(msg), "the body is not a binary nt.Workflow: %s",
                 err ? err : "invalid protobuf");
        free(err);
        invalid_plan(r, one_problem(NULL, msg), "%s", msg);
        return;
    }
    pub_ctx_t *c = nt_api_ctx_new(r, sizeof(*c), pub_ctx_free);
    if (!c) {
        nt_plan_free(plan);
        return;
    }
    c->plan = plan;
    const Nt__Workflow *wf = plan->wf;

    nt_verrs_t errs;
    memset(&errs, 0, sizeof(errs));
    nt_rc_t vrc = nt_validate(wf, r->d.mods, &errs);
    if (vrc == NT_ENOMEM) {
        nt_verrs_fini(&errs);
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    if (!wf->id || !nt_api_plan_id_valid(wf->id)) {
        if (errs.n == 0) {
            nt_verrs_fini(&errs);
            invalid_plan(r, one_problem(NULL, "the plan id must be 1 to 64 of a-z 0-9 _ -"),
                         "the plan has 1 problem");
            return;
        }
        vrc = NT_EINVAL;
    }
    if (vrc != NT_OK || errs.n > 0) {
        json_t *problems = json_array();
        for (size_t i = 0; i < errs.n; i++)
            json_array_append_new(
                problems, json_pack("{s:o,s:s}", "node",
                                    errs.v[i].node ? json_string(errs.v[i].node) : json_null(),
                                    "message", errs.v[i].msg ? errs.v[i].msg : "?"));
        size_t np = errs.n;
        nt_verrs_fini(&errs);
        invalid_plan(r, problems, "the plan has %zu problem%s", np, np == 1 ? "" : "s");
        return;
    }
    nt_verrs_fini(&errs);

    char *act = nt_api_query(r, "activate");
    c->activate = act && (strcmp(act, "1") == 0 || strcmp(act, "true") == 0);
    free(act);
    if (nt_api_need_redis(r))
        return;
    char key[NT_KEY_MAX];
    const char *argv[] = {"HGET", nt_key_plan_index(key, wf->id), "latest"};
    nt_api_command(r, 3, argv, on_latest, NULL);
}

/* --- GET /v1/plans --------------------------------------------------------------------------- */

typedef struct list_ctx {
    char **ids;
    size_t n;
} list_ctx_t;

static void list_ctx_free(void *p)
{
    list_ctx_t *c = p;
    for (size_t i = 0; i < c->n; i++)
        free(c->ids[i]);
    free(c->ids);
    free(c);
}

static void on_list_hashes(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    list_ctx_t *c = r->ctx;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    json_t *plans = json_array();
    for (size_t i = 0; i < n && i < c->n; i++) {
        const redisReply *h = rep[i];
        if (!h || h->type != REDIS_REPLY_ARRAY || h->elements == 0)
            continue;
        const char *name = nt_api_flat_str(h, "name");
        json_array_append_new(
            plans,
            json_pack("{s:s,s:s,s:I,s:I,s:o}", "id", c->ids[i], "name", name ? name : "", "active",
                      (json_int_t)nt_api_flat_int(h, "active", 0), "latest",
                      (json_int_t)nt_api_flat_int(h, "latest", 0), "versions", versions_json(h)));
    }
    nt_api_reply_json(r, 200, json_pack("{s:o}", "plans", plans));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void on_list_ids(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    list_ctx_t *c = r->ctx;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    const redisReply *x = rep[0];
    if (!x || x->type != REDIS_REPLY_ARRAY) {
        nt_api_error(r, 500, "internal", "unexpected reply from Redis");
        return;
    }
    c->ids = calloc(x->elements ? x->elements : 1, sizeof(*c->ids));
    if (!c->ids) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < x->elements; i++)
        if (x->element[i]->type == REDIS_REPLY_STRING && x->element[i]->str)
            c->ids[c->n++] = strdup(x->element[i]->str);
    for (size_t i = 0; i < c->n; i++)
        if (!c->ids[i]) {
            nt_api_error(r, 500, "internal", "out of memory");
            return;
        }
    qsort(c->ids, c->n, sizeof(*c->ids), cmp_str);
    if (c->n == 0) {
        nt_api_reply_json(r, 200, json_pack("{s:[]}", "plans"));
        return;
    }
    nt_api_batch_t *b = nt_api_batch_new(r, c->n, on_list_hashes, NULL);
    if (!b) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        char key[NT_KEY_MAX];
        const char *argv[] = {"HGETALL", nt_key_plan_index(key, c->ids[i])};
        nt_api_batch_argv(b, i, 2, argv, NULL);
    }
    nt_api_batch_go(b);
}

void nt_api_plans_list(nt_api_req_t *r)
{
    if (nt_api_need_redis(r))
        return;
    if (!nt_api_ctx_new(r, sizeof(list_ctx_t), list_ctx_free))
        return;
    const char *argv[] = {"SMEMBERS", NT_KEY_PLANS};
    nt_api_command(r, 2, argv, on_list_ids, NULL);
}

/* --- GET /v1/plans/{id} ---------------------------------------------------------------------- */

typedef struct show_ctx {
    json_t *summary;
} show_ctx_t;

static void show_ctx_free(void *p)
{
    show_ctx_t *c = p;
    json_decref(c->summary);
    free(c);
}

static void on_show_plan(nt_rc_t rc, const nt_plan_t *plan, void *arg)
{
    nt_api_req_t *r = arg;
    show_ctx_t *c = r->ctx;
    if (!r->finished) {
        if (rc == NT_ENOTFOUND) {
            nt_api_error(r, 404, "not_found", "plan %s has no active version", r->seg[2]);
        } else if (rc != NT_OK) {
            nt_api_error_rc(r, rc, NULL);
        } else {
            const Nt__Workflow *wf = plan->wf;
            json_object_set_new(c->summary, "description",
                                json_string(wf->description ? wf->description : ""));
            json_object_set_new(c->summary, "start", json_string(wf->start ? wf->start : ""));
            json_object_set_new(c->summary, "nodes", nodes_json(plan));
            json_t *s = c->summary;
            c->summary = NULL;
            nt_api_reply_json(r, 200, s);
        }
    }
    nt_api_unref(r);
}

static void on_show_index(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    show_ctx_t *c = r->ctx;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    const redisReply *h = rep[0];
    if (!h || h->type != REDIS_REPLY_ARRAY || h->elements == 0) {
        nt_api_error(r, 404, "not_found", "no plan %s", r->seg[2]);
        return;
    }
    int64_t active = nt_api_flat_int(h, "active", 0);
    const char *name = nt_api_flat_str(h, "name");
    c->summary =
        json_pack("{s:s,s:s,s:I,s:I,s:o}", "id", r->seg[2], "name", name ? name : "", "active",
                  (json_int_t)active, "latest", (json_int_t)nt_api_flat_int(h, "latest", 0),
                  "versions", versions_json(h));
    if (!c->summary || active <= 0) {
        nt_api_error(r, 500, "internal", "plan %s has no usable active version", r->seg[2]);
        return;
    }
    nt_api_ref(r);
    nt_rc_t grc = nt_plans_get(r->d.plans, r->seg[2], (uint32_t)active, on_show_plan, r);
    if (grc != NT_OK) {
        nt_api_unref(r);
        nt_api_error_rc(r, grc, NULL);
    }
}

void nt_api_plans_get(nt_api_req_t *r)
{
    if (nt_api_path_plan_id(r) || nt_api_need_redis(r))
        return;
    if (!nt_api_ctx_new(r, sizeof(show_ctx_t), show_ctx_free))
        return;
    char key[NT_KEY_MAX];
    const char *argv[] = {"HGETALL", nt_key_plan_index(key, r->seg[2])};
    nt_api_command(r, 2, argv, on_show_index, NULL);
}

/* --- POST /v1/plans/{id}/activate ----------------------------------------------------------- */

static void on_activated(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    json_int_t ver = (json_int_t)(intptr_t)arg;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    const redisReply *x = rep[0];
    if (!x || x->type != REDIS_REPLY_ARRAY || x->elements < 1 ||
        x->element[0]->type != REDIS_REPLY_STRING) {
        nt_api_error(r, 500, "internal", "the activation failed");
        return;
    }
    if (strcmp(x->element[0]->str, "missing") == 0) {
        nt_api_error(r, 404, "not_found", "plan %s has no version %" JSON_INTEGER_FORMAT, r->seg[2],
                     ver);
        return;
    }
    nt_log_info("http", "plan %s v%" JSON_INTEGER_FORMAT " activated", r->seg[2], ver);
    nt_api_reply_json(r, 200,
                      json_pack("{s:s,s:I,s:b}", "id", r->seg[2], "version", ver, "active", 1));
}

void nt_api_plans_activate(nt_api_req_t *r)
{
    static const char *const allowed[] = {"version", NULL};
    char err[256];
    if (nt_api_path_plan_id(r))
        return;
    if (nt_api_only_fields(r->body, allowed, "", err, sizeof(err)) != 0) {
        nt_api_error(r, 400, "bad_request", "%s", err);
        return;
    }
    json_t *v = json_object_get(r->body, "version");
    if (!v) {
        nt_api_error(r, 400, "bad_request", "missing field 'version'");
        return;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > (json_int_t)UINT32_MAX) {
        nt_api_error(r, 400, "bad_request", "field 'version' must be a positive integer");
        return;
    }
    if (nt_api_need_redis(r))
        return;
    json_int_t ver = json_integer_value(v);
    nt_api_batch_t *b = nt_api_batch_new(r, 1, on_activated, (void *)(intptr_t)ver);
    if (!b) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    char k1[NT_KEY_MAX], k2[NT_KEY_MAX], vs[16];
    snprintf(vs, sizeof(vs), "%u", (unsigned)ver);
    const char *argv[] = {nt_key_plan_index(k1, r->seg[2]),
                          nt_key_plan(k2, r->seg[2], (uint32_t)ver), vs};
    nt_api_batch_script(b, 0, "api_activate", 2, 3, argv, NULL);
    nt_api_batch_go(b);
}

/* --- GET /v1/plans/{id}/stats ---------------------------------------------------------------- */

typedef struct stats_ctx {
    const nt_plan_t *plan;
} stats_ctx_t;

static void add_count(json_t *obj, const char *key, const char *field, json_int_t v)
{
    json_t *o = json_object_get(obj, key);
    if (!o) {
        o = json_pack("{s:I,s:I}", "current", (json_int_t)0, "entered", (json_int_t)0);
        json_object_set_new(obj, key, o);
    }
    json_t *x = json_object_get(o, field);
    json_object_set_new(o, field, json_integer(json_integer_value(x) + v));
}

static void on_stats(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    stats_ctx_t *c = r->ctx;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    json_int_t enrolled = 0, active = 0;
    json_t *exits = json_object();
    json_t *counts = json_object(); /* node id -> {current, entered} */
    for (size_t i = 0; i < n; i++) {
        const redisReply *h = rep[i];
        for (size_t j = 0; h && h->type == REDIS_REPLY_ARRAY && j + 1 < h->elements; j += 2) {
            const char *f = h->element[j]->str;
            const char *vs = h->element[j + 1]->str;
            if (!f || !vs)
                continue;
            json_int_t v = strtoll(vs, NULL, 10);
            const char *rest = strchr(f, ':');
            if (!rest)
                continue;
            rest++;
            if (strcmp(rest, "enrolled") == 0) {
                enrolled += v;
                continue;
            }
            if (strcmp(rest, "active") == 0) {
                active += v;
                continue;
            }
            const char *last = strrchr(rest, ':');
            int node_count = last && (strcmp(last, ":cur") == 0 || strcmp(last, ":in") == 0);
            if (strncmp(rest, "exit:", 5) == 0 &&
                !(node_count && last == rest + 4 && nt_plan_node(c->plan, "exit"))) {
                json_t *x = json_object_get(exits, rest + 5);
                json_object_set_new(exits, rest + 5, json_integer(json_integer_value(x) + v));
                continue;
            }
            if (!node_count)
                continue;
            char *node = strndup(rest, (size_t)(last - rest));
            if (!node)
                continue;
            add_count(counts, node, strcmp(last, ":cur") == 0 ? "current" : "entered", v);
            free(node);
        }
    }
    json_t *nodes = json_array();
    const Nt__Workflow *wf = c->plan->wf;
    for (size_t i = 0; i < wf->n_nodes; i++) {
        const Nt__Node *nd = wf->nodes[i];
        json_t *o = json_object_get(counts, nd->id);
        json_array_append_new(
            nodes, json_pack("{s:s,s:s,s:s,s:I,s:I}", "id", nd->id, "kind", nt_node_kind_name(nd),
                             "label", nd->label ? nd->label : "", "current",
                             json_integer_value(json_object_get(o, "current")), "entered",
                             json_integer_value(json_object_get(o, "entered"))));
        json_object_del(counts, nd->id);
    }
    const char *key;
    json_t *o;
    json_object_foreach(counts, key, o)
    { /* nodes of older versions only */
        json_array_append_new(
            nodes, json_pack("{s:s,s:n,s:n,s:I,s:I}", "id", key, "kind", "label", "current",
                             json_integer_value(json_object_get(o, "current")), "entered",
                             json_integer_value(json_object_get(o, "entered"))));
    }
    json_decref(counts);
    nt_api_reply_json(r, 200,
                      json_pack("{s:s,s:I,s:o,s:I,s:I,s:o}", "plan", wf->id, "version",
                                (json_int_t)wf->version, "nodes", nodes, "enrolled", enrolled,
                                "active", active, "exits", exits));
}

static void on_stats_plan(nt_rc_t rc, const nt_plan_t *plan, void *arg)
{
    nt_api_req_t *r = arg;
    stats_ctx_t *c = r->ctx;
    if (r->finished) {
        nt_api_unref(r);
        return;
    }
    if (rc == NT_ENOTFOUND) {
        nt_api_error(r, 404, "not_found", "no plan %s", r->seg[2]);
    } else if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
    } else {
        c->plan = plan;
        unsigned parts = r->d.cfg->partitions;
        nt_api_batch_t *b = nt_api_batch_new(r, parts, on_stats, NULL);
        if (!b) {
            nt_api_error(r, 500, "internal", "out of memory");
        } else {
            char what[NT_KEY_MAX];
            snprintf(what, sizeof(what), "stats:%s", r->seg[2]);
            for (unsigned p = 0; p < parts; p++) {
                char key[NT_KEY_MAX];
                const char *argv[] = {"HGETALL", nt_key_part(key, p, what)};
                nt_api_batch_argv(b, p, 2, argv, NULL);
            }
            nt_api_batch_go(b);
        }
    }
    nt_api_unref(r);
}

void nt_api_plans_stats(nt_api_req_t *r)
{
    if (nt_api_path_plan_id(r) || nt_api_need_redis(r))
        return;
    if (!nt_api_ctx_new(r, sizeof(stats_ctx_t), free))
        return;
    nt_api_ref(r);
    nt_rc_t rc = nt_plans_get(r->d.plans, r->seg[2], 0, on_stats_plan, r);
    if (rc != NT_OK) {
        nt_api_unref(r);
        nt_api_error_rc(r, rc, NULL);
    }
}
