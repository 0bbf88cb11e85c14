/* Call tasks through the API (docs/api.md, "Call tasks"): a rep lists, claims, completes and
 * reassigns their own tasks (or claims from their team's queue); ops sees and changes all.
 * Completing posts the rep's outcome for the lead's run in the same script (task_complete.lua).
 * A task a caller may not see answers 404, as if it did not exist. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "clock.h"
#include "keys.h"
#include "log.h"
#include "tasks.h"

#define LIST_MAX 500
#define NOTE_MAX 2000

static const char *const call_outcomes[] = {
    "connected", "left_voicemail", "no_answer", "wrong_number", "meeting_booked",
    "not_interested", NULL,
};

static const char *const task_fields[] = {
    "lead", "plan", "node", "visit", "reason", "points", "priority", "due", "sla", "owner",
    "team", "status", "outcome", "note", "created", "claimed", "done", "done_by", "escalated",
    "reassigned", "expired", "expired_why", NULL,
};

static int is_number_field(const char *f)
{
    return strcmp(f, "due") == 0 || strcmp(f, "sla") == 0 || strcmp(f, "created") == 0 ||
           strcmp(f, "claimed") == 0 || strcmp(f, "done") == 0 || strcmp(f, "escalated") == 0 ||
           strcmp(f, "reassigned") == 0 || strcmp(f, "expired") == 0 ||
           strcmp(f, "visit") == 0;
}

/* The task as JSON from its HGETALL; numbers for times (null when unset), strings else. */
static json_t *task_json(const char *id, const redisReply *flat)
{
    json_t *j = json_object();

    if (!j)
        return NULL;
    json_object_set_new(j, "id", json_string(id));
    for (size_t i = 0; task_fields[i]; i++) {
        const char *v = nt_api_flat_str(flat, task_fields[i]);

        if (is_number_field(task_fields[i])) {
            long long x = v && v[0] ? strtoll(v, NULL, 10) : 0;

            json_object_set_new(j, task_fields[i], x ? json_integer(x) : json_null());
        } else {
            json_object_set_new(j, task_fields[i],
                                v && v[0] ? json_string(v) : json_null());
        }
    }
    return j;
}

static int prio_rank(const char *p)
{
    if (p && strcmp(p, "high") == 0)
        return 0;
    if (p && strcmp(p, "low") == 0)
        return 2;
    return 1;
}

/* By due time, then priority (high first), then id. */
static int task_cmp(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_int_t dx = json_integer_value(json_object_get(x, "due"));
    json_int_t dy = json_integer_value(json_object_get(y, "due"));
    int px = prio_rank(json_string_value(json_object_get(x, "priority")));
    int py = prio_rank(json_string_value(json_object_get(y, "priority")));

    if (dx != dy)
        return dx < dy ? -1 : 1;
    if (px != py)
        return px - py;
    return strcmp(json_string_value(json_object_get(x, "id")),
                  json_string_value(json_object_get(y, "id")));
}

/* A rep may see a task they hold, or one in the queue of a team they belong to; ops sees all. */
static int may_see(const nt_api_req_t *r, const redisReply *flat)
{
    const char *owner = nt_api_flat_str(flat, "owner");

    if (r->role & NT_API_ROLE_OPS)
        return 1;
    if (!r->who)
        return 0;
    if (owner && owner[0])
        return strcmp(owner, r->who) == 0;
    return nt_tasks_rep_in_team(r->d.tasks, r->who, nt_api_flat_str(flat, "team"));
}

static void on_counted(nt_rc_t rc, redisReply *reply, void *arg)
{
    (void)rc;
    (void)reply;
    (void)arg;
}

/* Move a rep's open-task count (advisory, for the cap; its own slot). */
static void count(nt_api_req_t *r, const char *rep, int delta)
{
    char k[NT_KEY_MAX];

    if (rep && rep[0])
        nt_redis_cmd(r->d.redis, on_counted, NULL, "HINCRBY %s open %d",
                     nt_tasks_key_rep(k, rep), delta);
}

static int need_tasks(nt_api_req_t *r)
{
    if (r->d.tasks)
        return 0;
    nt_api_error(r, 503, "unavailable", "the task store is not running");
    return 1;
}

/* --- GET /v1/tasks ---------------------------------------------------------------------- */

typedef struct list_ctx {
    size_t limit;
} list_ctx_t;

/* One task_list.lua reply per partition: {{id, {field, value, ...}}, ...} and the holders of
 * the tasks it expired (each one's open count to lower). */
static void on_list_tasks(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    list_ctx_t *c = r->ctx;
    json_t **v = NULL, *arr;
    size_t k = 0, total = 0;

    (void)arg;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (!rep[i] || rep[i]->type != REDIS_REPLY_ARRAY || rep[i]->elements != 2 ||
            rep[i]->element[0]->type != REDIS_REPLY_ARRAY) {
            if (rep[i] && rep[i]->type == REDIS_REPLY_ERROR)
                nt_log_error("api", "task_list: %s", rep[i]->str);
            nt_api_error(r, 500, "internal", "the task list could not be read");
            return;
        }
        total += rep[i]->element[0]->elements;
    }
    v = calloc(total ? total : 1, sizeof(*v));
    arr = json_array();
    if (!v || !arr) {
        free(v);
        json_decref(arr);
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const redisReply *live = rep[i]->element[0], *gone = rep[i]->element[1];

        for (size_t j = 0; j < live->elements; j++) {
            const redisReply *x = live->element[j];

            if (x->type != REDIS_REPLY_ARRAY || x->elements != 2 ||
                x->element[0]->type != REDIS_REPLY_STRING ||
                x->element[1]->type != REDIS_REPLY_ARRAY)
                continue;
            v[k] = task_json(x->element[0]->str, x->element[1]);
            if (v[k])
                k++;
        }
        for (size_t j = 0; gone->type == REDIS_REPLY_ARRAY && j < gone->elements; j++)
            if (gone->element[j]->type == REDIS_REPLY_STRING)
                count(r, gone->element[j]->str, -1);
    }
    qsort(v, k, sizeof(*v), task_cmp);
    for (size_t i = 0; i < k; i++) {
        if (i < c->limit)
            json_array_append(arr, v[i]);
        json_decref(v[i]);
    }
    free(v);
    nt_api_reply_json(r, 200, json_pack("{s:o}", "tasks", arr));
}

void nt_api_tasks_list(nt_api_req_t *r)
{
    char *mine = nt_api_query(r, "mine"), *rep = nt_api_query(r, "rep");
    char *team = nt_api_query(r, "team"), *limit = nt_api_query(r, "limit");
    const char *what = "open", *name = NULL;
    list_ctx_t *c;
    nt_api_batch_t *b;
    unsigned parts;
    long lim = 100;
    char lims[24], nows[24];

    if (need_tasks(r))
        goto out;
    if (limit) {
        char *end;

        lim = strtol(limit, &end, 10);
        if (*end || lim < 1 || lim > LIST_MAX) {
            nt_api_error(r, 400, "bad_request", "limit must be a number from 1 to %d", LIST_MAX);
            goto out;
        }
    }
    if (mine && strcmp(mine, "1") != 0 && strcmp(mine, "0") != 0 &&
        strcmp(mine, "true") != 0 && strcmp(mine, "false") != 0) {
        nt_api_error(r, 400, "bad_request", "mine must be 1 or 0");
        goto out;
    }
    if ((rep && !nt_tasks_rep_valid(rep)) || (team && !nt_tasks_rep_valid(team))) {
        nt_api_error(r, 400, "bad_request",
                     "rep and team are 1 to 64 of A-Z a-z 0-9 . _ @ + -");
        goto out;
    }
    if (rep && team) {
        nt_api_error(r, 400, "bad_request", "give rep or team, not both");
        goto out;
    }
    if (team) {
        if (!(r->role & NT_API_ROLE_OPS) && !nt_tasks_rep_in_team(r->d.tasks, r->who, team)) {
            nt_api_error(r, 403, "forbidden", "%s is not a member of team %s", r->who, team);
            goto out;
        }
        what = "team";
        name = team;
    } else if (rep) {
        if (!(r->role & NT_API_ROLE_OPS) && (!r->who || strcmp(rep, r->who) != 0)) {
            nt_api_error(r, 403, "forbidden", "a rep sees only their own tasks");
            goto out;
        }
        what = "rep";
        name = rep;
    } else if (!(r->role & NT_API_ROLE_OPS) || (mine && (mine[0] == '1' || mine[0] == 't'))) {
        if (!r->who || !nt_tasks_rep_valid(r->who)) {
            nt_api_reply_json(r, 200, json_pack("{s:[]}", "tasks"));
            goto out;
        }
        what = "rep";
        name = r->who;
    }
    if (nt_api_need_redis(r))
        goto out;
    c = nt_api_ctx_new(r, sizeof(*c), free);
    if (!c)
        goto out;
    c->limit = (size_t)lim;
    parts = r->d.cfg->partitions;
    b = nt_api_batch_new(r, parts, on_list_tasks, NULL);
    if (!b) {
        nt_api_error(r, 500, "internal", "out of memory");
        goto out;
    }
    snprintf(lims, sizeof(lims), "%ld", lim);
    snprintf(nows, sizeof(nows), "%" PRId64, nt_now_ms());
    for (unsigned p = 0; p < parts; p++) {
        char k[NT_KEY_MAX];
        const char *argv[3] = {nt_tasks_key_set(k, p, what, name), lims, nows};

        nt_api_batch_script(b, p, "task_list", 1, 3, argv, NULL);
    }
    nt_api_batch_go(b);
out:
    free(mine);
    free(rep);
    free(team);
    free(limit);
}

/* --- one task: GET, claim, complete, reassign ------------------------------------------- */

enum { OP_GET, OP_CLAIM, OP_COMPLETE, OP_REASSIGN };

typedef struct task_ctx {
    int op;
    char *id;
    unsigned p;
    char *outcome, *note, *rep; /* complete; reassign */
    char *owner, *team;         /* as read */
} task_ctx_t;

static void task_ctx_free(void *p)
{
    task_ctx_t *c = p;

    free(c->id);
    free(c->outcome);
    free(c->note);
    free(c->rep);
    free(c->owner);
    free(c->team);
    free(c);
}

/* 409 for a task whose run left its send before the call was logged (task_list.lua). */
static void expired_error(nt_api_req_t *r, const char *id, const char *why)
{
    nt_api_error(r, 409, "conflict",
                 "task %s has expired: %s before the call was logged, so an outcome would be "
                 "for a step that is over; nothing was posted",
                 id, why);
}

static void on_reread(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    task_ctx_t *c = r->ctx;

    (void)n;
    (void)arg;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    if (!rep[0] || rep[0]->type != REDIS_REPLY_ARRAY || rep[0]->elements == 0) {
        nt_api_error(r, 404, "not_found", "no task %s", c->id);
        return;
    }
    nt_api_reply_json(r, 200, task_json(c->id, rep[0]));
}

/* Answer with the task as it is now. */
static void reply_task(nt_api_req_t *r)
{
    task_ctx_t *c = r->ctx;
    char k[NT_KEY_MAX];
    const char *argv[2] = {"HGETALL", nt_tasks_key_task(k, c->p, c->id)};

    nt_api_command(r, 2, argv, on_reread, NULL);
}

static void on_moved(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    task_ctx_t *c = r->ctx;
    const redisReply *x;
    const char *s;

    (void)n;
    (void)arg;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    x = rep[0];
    if (!nt_api_script_reply_ok(x, 1, c->op == OP_COMPLETE ? "task_complete" : "task_move")) {
        nt_api_error(r, 500, "internal", "the task could not be changed");
        return;
    }
    s = x->element[0]->str;
    if (strcmp(s, "missing") == 0) {
        nt_api_error(r, 404, "not_found", "no task %s", c->id);
        return;
    }
    if (strcmp(s, "done") == 0) {
        nt_api_error(r, 409, "conflict", "task %s is already done", c->id);
        return;
    }
    if (strcmp(s, "moved") == 0) {
        nt_api_error(r, 409, "conflict", "task %s changed hands meanwhile; read it again",
                     c->id);
        return;
    }
    if (strcmp(s, "expired") == 0) {
        const char *why = x->elements > 2 && x->element[2]->type == REDIS_REPLY_STRING
                              ? x->element[2]->str
                              : "the lead's run left the call step";

        if (x->elements > 1 && x->element[1]->type == REDIS_REPLY_STRING)
            count(r, x->element[1]->str, -1);
        expired_error(r, c->id, why);
        return;
    }
    if (strcmp(s, "ok") != 0) {
        nt_api_error(r, 500, "internal", "the task could not be changed");
        return;
    }
    switch (c->op) {
    case OP_COMPLETE:
        count(r, c->owner, -1);
        if (r->d.worker)
            nt_worker_wake(r->d.worker, c->p);
        break;
    case OP_CLAIM:
        if (!c->owner[0])
            count(r, r->who, 1);
        break;
    case OP_REASSIGN:
        if (strcmp(c->owner, c->rep) != 0) {
            count(r, c->owner, -1);
            count(r, c->rep, 1);
        }
        break;
    }
    reply_task(r);
}

static void on_task_read(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    task_ctx_t *c = r->ctx;
    const redisReply *flat;
    const char *status, *owner, *team;
    char k1[NT_KEY_MAX], k2[NT_KEY_MAX], k3[NT_KEY_MAX], k4[NT_KEY_MAX], k5[NT_KEY_MAX];
    nt_api_argv_t a = {0};

    (void)n;
    (void)arg;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    flat = rep[0];
    if (!flat || flat->type != REDIS_REPLY_ARRAY || flat->elements == 0 || !may_see(r, flat)) {
        nt_api_error(r, 404, "not_found", "no task %s", c->id);
        return;
    }
    if (c->op == OP_GET) {
        nt_api_reply_json(r, 200, task_json(c->id, flat));
        return;
    }
    status = nt_api_flat_str(flat, "status");
    owner = nt_api_flat_str(flat, "owner");
    team = nt_api_flat_str(flat, "team");
    c->owner = strdup(owner ? owner : "");
    c->team = strdup(team ? team : "");
    if (!c->owner || !c->team) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    if (status && strcmp(status, "done") == 0) {
        const char *o = nt_api_flat_str(flat, "outcome");

        nt_api_error(r, 409, "conflict", "task %s is already done (outcome %s)", c->id,
                     o ? o : "?");
        return;
    }
    if (status && strcmp(status, "expired") == 0) {
        const char *why = nt_api_flat_str(flat, "expired_why");

        expired_error(r, c->id, why && why[0] ? why : "the lead's run left the call step");
        return;
    }
    if (c->op == OP_REASSIGN && !(r->role & NT_API_ROLE_OPS) && strcmp(c->owner, r->who) != 0) {
        nt_api_error(r, 403, "forbidden", "only the rep holding task %s or ops may reassign it",
                     c->id);
        return;
    }
    nt_api_argv_add(&a, nt_tasks_key_task(k1, c->p, c->id));
    if (c->op == OP_COMPLETE) {
        nt_api_argv_add(&a, nt_tasks_key_set(k2, c->p, "open", NULL));
        nt_api_argv_add(&a, nt_tasks_key_holder(k3, c->p, c->owner, c->team));
        nt_api_argv_add(&a, nt_tasks_key_set(k4, c->p, "sla", NULL));
        nt_api_argv_add(&a, nt_key_part(k5, c->p, "events"));
        nt_api_argv_add(&a, c->id);
        nt_api_argv_add(&a, c->owner);
        nt_api_argv_add(&a, c->outcome);
        nt_api_argv_add(&a, c->note ? c->note : "");
        nt_api_argv_addf(&a, "%" PRId64, nt_now_ms());
        nt_api_argv_add(&a, r->who ? r->who : "ops");
        nt_api_script(r, "task_complete", 5, &a, on_moved, NULL);
        return;
    }
    {
        /* claim: the caller takes it (ops claims it for whoever holds it, or stays queued
         * when nobody does); reassign: to c->rep. */
        const char *to = c->op == OP_REASSIGN ? c->rep
                         : (r->role & NT_API_ROLE_OPS) && !(r->role & NT_API_ROLE_REP)
                             ? c->owner
                             : r->who;

        if (c->op == OP_CLAIM && c->owner[0] && strcmp(c->owner, to) != 0) {
            nt_api_error(r, 409, "conflict", "task %s is held by %s", c->id, c->owner);
            nt_api_argv_fini(&a);
            return;
        }
        nt_api_argv_add(&a, nt_tasks_key_holder(k2, c->p, c->owner, c->team));
        nt_api_argv_add(&a, nt_tasks_key_holder(k3, c->p, to, c->team));
        nt_api_argv_add(&a, nt_tasks_key_set(k4, c->p, "sla", NULL));
        nt_api_argv_add(&a, c->id);
        nt_api_argv_add(&a, c->op == OP_CLAIM ? "claim" : "reassign");
        nt_api_argv_add(&a, c->owner);
        nt_api_argv_add(&a, to);
        nt_api_argv_addf(&a, "%" PRId64, nt_now_ms());
        nt_api_script(r, "task_move", 4, &a, on_moved, NULL);
    }
}

/* Parse the path's task id and start by reading the task. */
static void task_start(nt_api_req_t *r, task_ctx_t *c)
{
    char k[NT_KEY_MAX];
    const char *argv[2];

    if (nt_api_need_redis(r))
        return;
    c->id = strdup(r->seg[2]);
    if (!c->id) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    c->p = nt_tasks_partition(r->d.tasks, c->id);
    argv[0] = "HGETALL";
    argv[1] = nt_tasks_key_task(k, c->p, c->id);
    nt_api_command(r, 2, argv, on_task_read, NULL);
}

static task_ctx_t *task_begin(nt_api_req_t *r, int op)
{
    task_ctx_t *c;

    if (need_tasks(r))
        return NULL;
    if (!nt_tasks_id_valid(r->seg[2])) {
        nt_api_error(r, 400, "bad_request",
                     "the task id in the path is not valid (<lead>:<plan>:<node>:<visit>)");
        return NULL;
    }
    c = nt_api_ctx_new(r, sizeof(*c), task_ctx_free);
    if (c)
        c->op = op;
    return c;
}

void nt_api_tasks_get(nt_api_req_t *r)
{
    task_ctx_t *c = task_begin(r, OP_GET);

    if (c)
        task_start(r, c);
}

void nt_api_tasks_claim(nt_api_req_t *r)
{
    task_ctx_t *c = task_begin(r, OP_CLAIM);

    if (c)
        task_start(r, c);
}

void nt_api_tasks_complete(nt_api_req_t *r)
{
    static const char *const allowed[] = {"outcome", "note", NULL};
    json_t *o = json_object_get(r->body, "outcome"), *note = json_object_get(r->body, "note");
    char err[256];
    task_ctx_t *c;
    int known = 0;

    if (nt_api_only_fields(r->body, allowed, "", err, sizeof(err)) != 0) {
        nt_api_error(r, 400, "bad_request", "%s", err);
        return;
    }
    if (!o) {
        nt_api_error(r, 400, "bad_request", "missing field 'outcome'");
        return;
    }
    for (size_t i = 0; json_is_string(o) && call_outcomes[i]; i++)
        if (strcmp(json_string_value(o), call_outcomes[i]) == 0 &&
            json_string_length(o) == strlen(call_outcomes[i]))
            known = 1;
    if (!known) {
        nt_api_error(r, 400, "bad_request",
                     "field 'outcome' must be one of connected, left_voicemail, no_answer, "
                     "wrong_number, meeting_booked, not_interested");
        return;
    }
    if (note && !json_is_string(note) && !json_is_null(note)) {
        nt_api_error(r, 400, "bad_request", "field 'note' must be a string");
        return;
    }
    if (json_is_string(note) &&
        (json_string_length(note) > NOTE_MAX ||
         strlen(json_string_value(note)) != json_string_length(note))) {
        nt_api_error(r, 400, "bad_request",
                     "field 'note' must be at most %d bytes of text (no NUL)", NOTE_MAX);
        return;
    }
    c = task_begin(r, OP_COMPLETE);
    if (!c)
        return;
    c->outcome = strdup(json_string_value(o));
    c->note = strdup(json_is_string(note) ? json_string_value(note) : "");
    if (!c->outcome || !c->note) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    task_start(r, c);
}

void nt_api_tasks_reassign(nt_api_req_t *r)
{
    static const char *const allowed[] = {"rep", NULL};
    json_t *rep = json_object_get(r->body, "rep");
    char err[256];
    task_ctx_t *c;

    if (nt_api_only_fields(r->body, allowed, "", err, sizeof(err)) != 0) {
        nt_api_error(r, 400, "bad_request", "%s", err);
        return;
    }
    if (!rep) {
        nt_api_error(r, 400, "bad_request", "missing field 'rep'");
        return;
    }
    if (!json_is_string(rep) || !nt_tasks_rep_valid(json_string_value(rep)) ||
        strlen(json_string_value(rep)) != json_string_length(rep)) {
        nt_api_error(r, 400, "bad_request",
                     "field 'rep' must be a rep id (1 to 64 of A-Z a-z 0-9 . _ @ + -)");
        return;
    }
    if (r->d.tasks && !nt_tasks_rep_known(r->d.tasks, json_string_value(rep))) {
        nt_api_error(r, 400, "bad_request", "field 'rep': no rep %s is configured",
                     json_string_value(rep));
        return;
    }
    c = task_begin(r, OP_REASSIGN);
    if (!c)
        return;
    c->rep = strdup(json_string_value(rep));
    if (!c->rep) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    task_start(r, c);
}

/* --- reps ------------------------------------------------------------------------------- */

typedef struct rep_ctx {
    char *rep;
    int ooo; /* -1: GET */
} rep_ctx_t;

static void rep_ctx_free(void *p)
{
    rep_ctx_t *c = p;

    free(c->rep);
    free(c);
}

static void on_rep(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    rep_ctx_t *c = r->ctx;
    const redisReply *x = rep[n - 1];

    (void)arg;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    if (!x || x->type != REDIS_REPLY_ARRAY || x->elements != 2) {
        nt_api_error(r, 500, "internal", "the rep could not be read");
        return;
    }
    nt_api_reply_json(
        r, 200,
        json_pack("{s:s,s:b,s:I}", "rep", c->rep,
                  "out_of_office",
                  x->element[0]->type == REDIS_REPLY_STRING && strcmp(x->element[0]->str, "1") == 0,
                  "open",
                  (json_int_t)(x->element[1]->type == REDIS_REPLY_STRING
                                   ? strtoll(x->element[1]->str, NULL, 10)
                                   : 0)));
}

static void rep_route(nt_api_req_t *r, int ooo)
{
    rep_ctx_t *c;
    nt_api_batch_t *b;
    char k[NT_KEY_MAX];
    const char *rep = r->seg[2];

    if (need_tasks(r))
        return;
    if (!nt_tasks_rep_valid(rep)) {
        nt_api_error(r, 400, "bad_request",
                     "the rep id in the path is not valid (1 to 64 of A-Z a-z 0-9 . _ @ + -)");
        return;
    }
    if (!(r->role & NT_API_ROLE_OPS) && (!r->who || strcmp(r->who, rep) != 0)) {
        nt_api_error(r, 403, "forbidden", "a rep may see and change only themselves");
        return;
    }
    if (!nt_tasks_rep_known(r->d.tasks, rep)) {
        nt_api_error(r, 404, "not_found", "no rep %s is configured", rep);
        return;
    }
    if (nt_api_need_redis(r))
        return;
    c = nt_api_ctx_new(r, sizeof(*c), rep_ctx_free);
    if (!c)
        return;
    c->rep = strdup(rep);
    c->ooo = ooo;
    b = c->rep ? nt_api_batch_new(r, ooo >= 0 ? 2 : 1, on_rep, NULL) : NULL;
    if (!b) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    nt_tasks_key_rep(k, rep);
    if (ooo >= 0) {
        const char *argv[4] = {"HSET", k, "ooo", ooo ? "1" : "0"};

        nt_api_batch_argv(b, 0, 4, argv, NULL);
    }
    {
        const char *argv[4] = {"HMGET", k, "ooo", "open"};

        nt_api_batch_argv(b, ooo >= 0 ? 1 : 0, 4, argv, NULL);
    }
    nt_api_batch_go(b);
}

void nt_api_reps_get(nt_api_req_t *r)
{
    rep_route(r, -1);
}

void nt_api_reps_patch(nt_api_req_t *r)
{
    static const char *const allowed[] = {"out_of_office", NULL};
    json_t *o = json_object_get(r->body, "out_of_office");
    char err[256];

    if (nt_api_only_fields(r->body, allowed, "", err, sizeof(err)) != 0) {
        nt_api_error(r, 400, "bad_request", "%s", err);
        return;
    }
    if (!o || !json_is_boolean(o)) {
        nt_api_error(r, 400, "bad_request", "field 'out_of_office' must be true or false");
        return;
    }
    rep_route(r, json_is_true(o));
}
