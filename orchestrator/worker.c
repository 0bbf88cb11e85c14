/* The worker: partition leases, the fetch -> decide -> apply loop, and dispatch.
 *
 * Per owned partition at most one batch is in flight at a time (fetch, then decide in C, then
 * one apply script), so a batch never races with itself; another worker is kept out by the
 * lease's fencing token, which every script checks. Dispatch reads the outbox in batches, hands
 * each message to its channel plugin, and records the outcomes with one script call that
 * acknowledges the outbox entries and posts the outcomes as events, atomically. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "clock.h"
#include "engine.h"
#include "keys.h"
#include "lead.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

typedef struct part part_t;
typedef struct dmsg dmsg_t;

/* A message handed to a channel, owned by the worker until its outcome is recorded. */
struct dmsg {
    part_t *pt;
    char *entry;            /* outbox stream id */
    char **strs;            /* every string below points into this array (owned) */
    size_t nstrs;
    nt_message_t msg;
    nt_kv_t *params;
    nt_kv_t *lead;
    const nt_module_t *mod;
    int attempt;
    int in_plugin;          /* dispatch called, done not yet */
    struct event *retry_ev;
    char *outcome;          /* once done */
    char *detail;
    dmsg_t *prev, *next;
};

struct part {
    nt_worker_t *w;
    unsigned p;
    char prefix[32];
    char k_lease[48], k_timers[48], k_events[48], k_outbox[48];
    int owned;
    char tok[24];           /* fencing token, decimal */
    int leasing;            /* a lease script in flight */
    int busy;               /* fetch/decide/apply in flight */
    int again;              /* woken while busy */
    int waiting_plans;      /* plans being loaded for the current batch */
    int obusy;              /* outbox fetch in flight */
    int orecover;           /* next outbox fetch includes our own pending entries */
    int flushing;           /* dispatched script in flight */
    dmsg_t *msgs;           /* in flight or parked for retry */
    size_t nmsgs;
    dmsg_t *done;           /* outcomes waiting to be recorded */
    size_t ndone;
    struct event *poll_ev;
    struct event *flush_ev;
};

struct nt_worker {
    struct event_base *base;
    const nt_config_t *cfg;
    nt_redis_t *redis;
    nt_plans_t *plans;
    nt_modules_t *mods;
    char *id;
    unsigned nparts;
    part_t *parts;
    unsigned owned;
    char **live;            /* ids of the live workers at the last heartbeat, sorted */
    size_t nlive;
    int meta_ok;
    struct event *lease_ev;
    int stopping;
    int releasing;
    void (*stop_done)(void *);
    void *stop_arg;
    struct event *stop_ev;
    int64_t stop_deadline;
};

static void part_poll(part_t *pt, int64_t delay_ms);
static void part_idle(part_t *pt, int64_t next_due);
static void check_stopped(nt_worker_t *w);
static void outbox_fetch(part_t *pt);

/* ---- small helpers ------------------------------------------------------------------------ */

static const char *rstr(const redisReply *r)
{
    return (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)) ? r->str : "";
}

static long long rint_(const redisReply *r)
{
    if (!r)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtoll(r->str, NULL, 10);
    return 0;
}

/* Field value in a flat HGETALL-style array reply, or NULL. */
static const char *field(const redisReply *arr, const char *name)
{
    if (!arr || arr->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < arr->elements; i += 2)
        if (strcmp(rstr(arr->element[i]), name) == 0)
            return rstr(arr->element[i + 1]);
    return NULL;
}

static int lead_from_reply(nt_lead_t *lead, const char *id, const redisReply *arr)
{
    if (nt_lead_init(lead, id) != 0)
        return -1;
    if (arr && arr->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < arr->elements; i += 2)
            if (nt_lead_set(lead, rstr(arr->element[i]), rstr(arr->element[i + 1])) != 0)
                return -1;
    return 0;
}

static void run_from_reply(nt_run_t *run, const char *plan, const redisReply *arr)
{
    const char *s;

    memset(run, 0, sizeof(*run));
    run->plan_id = plan;
    run->version = (uint32_t)strtoul((s = field(arr, "v")) ? s : "0", NULL, 10);
    run->node = (s = field(arr, "n")) ? s : "";
    run->token = strtoull((s = field(arr, "t")) ? s : "0", NULL, 10);
    run->visit = (uint32_t)strtoul((s = field(arr, "vi")) ? s : "0", NULL, 10);
    run->entered_ms = strtoll((s = field(arr, "e")) ? s : "0", NULL, 10);
    run->node_ms = strtoll((s = field(arr, "ne")) ? s : "0", NULL, 10);
    run->due_ms = strtoll((s = field(arr, "d")) ? s : "0", NULL, 10);
    s = field(arr, "s");
    run->status = (s && strcmp(s, "a") == 0) ? NT_RUN_ACTIVE : NT_RUN_DONE;
}

static int is_fenced(const redisReply *reply)
{
    return reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
           strcmp(rstr(reply->element[0]), "FENCED") == 0;
}

static void lose_partition(part_t *pt, const char *why)
{
    if (!pt->owned)
        return;
    nt_log_warn("worker", "partition %u lost: %s", pt->p, why);
    pt->owned = 0;
    pt->w->owned--;
    nt_metrics.fenced++;
}

/* ---- decide and apply --------------------------------------------------------------------- */

typedef struct batch {
    part_t *pt;
    json_t *decisions;      /* array */
    json_t *leads;          /* array of lead records */
    json_t *fixes;          /* array of timer fixes */
    size_t nmsgs;
    size_t ntimers, nevents;
    int64_t next_due;
    size_t steps;
} batch_t;

static json_t *kv_pairs(const nt_kv_t *kv, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; i < n; i++) {
        json_t *pair = json_array();

        json_array_append_new(pair, json_string(kv[i].key));
        json_array_append_new(pair, kv[i].value ? json_string(kv[i].value) : json_null());
        json_array_append_new(a, pair);
    }
    return a;
}

static void add_decision(batch_t *b, const char *lead_id, const nt_run_t *run,
                         const nt_decision_t *d)
{
    json_t *o = json_object(), *msgs, *path;
    char *h = NULL;
    size_t hl = 0;
    FILE *hf;

    json_object_set_new(o, "l", json_string(lead_id));
    json_object_set_new(o, "p", json_string(run->plan_id));
    json_object_set_new(o, "v", json_integer(run->version));
    json_object_set_new(o, "t", json_integer((json_int_t)run->token));
    json_object_set_new(o, "n", json_string(d->node ? d->node : ""));
    json_object_set_new(o, "s", json_string(d->status == NT_RUN_DONE ? "d" : "a"));
    if (d->status == NT_RUN_DONE)
        json_object_set_new(o, "x", json_string(d->exit_reason ? d->exit_reason : ""));
    json_object_set_new(o, "d", json_integer(d->status == NT_RUN_DONE ? 0 : d->due_ms));
    json_object_set_new(o, "vi", json_integer(d->visit));
    if (d->nset)
        json_object_set_new(o, "set", kv_pairs(d->set, d->nset));
    if (d->score_delta)
        json_object_set_new(o, "sc", json_integer(d->score_delta));
    if (d->stage)
        json_object_set_new(o, "st", json_string(nt_stage_name(d->stage)));
    msgs = json_array();
    for (size_t i = 0; i < d->nmsgs; i++) {
        const nt_outmsg_t *m = &d->msgs[i];
        json_t *mo = json_object(), *pr = json_array();

        json_object_set_new(mo, "id", json_string(m->id));
        json_object_set_new(mo, "c", json_string(m->channel));
        json_object_set_new(mo, "n", json_string(m->node));
        json_object_set_new(mo, "vi", json_integer(m->visit));
        for (size_t j = 0; j < m->nparams; j++) {
            json_array_append_new(pr, json_string(m->params[j].key));
            json_array_append_new(pr, json_string(m->params[j].value ? m->params[j].value : ""));
        }
        json_object_set_new(mo, "pr", pr);
        json_array_append_new(msgs, mo);
    }
    b->nmsgs += d->nmsgs;
    json_object_set_new(o, "msg", msgs);
    path = json_array();
    for (size_t i = 0; i < d->npath; i++)
        json_array_append_new(path, json_string(d->path[i]));
    b->steps += d->npath;
    json_object_set_new(o, "path", path);
    json_object_set_new(o, "left", json_string(d->left ? d->left : ""));
    hf = open_memstream(&h, &hl);
    if (hf) {
        for (size_t i = 0; i < d->nnotes; i++)
            fprintf(hf, "%s%s", i ? "; " : "", d->notes[i]);
        if (d->status == NT_RUN_DONE)
            fprintf(hf, "%sleft plan %s: %s", d->nnotes ? "; " : "", run->plan_id,
                    d->exit_reason ? d->exit_reason : "");
        fclose(hf);
        json_object_set_new(o, "h", json_string(h ? h : ""));
        free(h);
    }
    json_array_append_new(b->decisions, o);
}

static void add_fix(batch_t *b, const char *lead_id, const nt_run_t *run, int64_t due)
{
    json_t *f = json_array();

    json_array_append_new(f, json_string(lead_id));
    json_array_append_new(f, json_string(run->plan_id));
    json_array_append_new(f, json_integer((json_int_t)run->token));
    json_array_append_new(f, json_integer(due));
    json_array_append_new(b->fixes, f);
}

/* Decide one run; returns 1 when a decision was added. */
static int decide_run(batch_t *b, nt_lead_t *lead, const nt_run_t *run, const nt_trigger_t *trig,
                      int64_t now)
{
    const nt_plan_t *plan = nt_plans_cached(b->pt->w->plans, run->plan_id, run->version);
    nt_decision_t d;
    nt_rc_t rc;
    int added = 0;

    if (!plan || run->status != NT_RUN_ACTIVE)
        return 0;
    rc = nt_engine_decide(plan, lead, run, trig, now, &d);
    if ((rc == NT_OK || rc == NT_ENOTFOUND) && d.changed) {
        add_decision(b, lead->id, run, &d);
        added = 1;
    } else if (rc != NT_OK && rc != NT_ENOTFOUND) {
        nt_log_error("worker", "decide %s in %s: %s", lead->id, run->plan_id, nt_strerror(rc));
    }
    nt_decision_fini(&d);
    return added;
}

/* The plans of this batch that are not cached yet; asks for them. Returns how many. */
static void on_plan_loaded(nt_rc_t rc, const nt_plan_t *plan, void *arg)
{
    part_t *pt = arg;

    (void)plan;
    if (rc != NT_OK)
        nt_log_warn("worker", "partition %u: loading a plan failed: %s", pt->p, nt_strerror(rc));
    if (--pt->waiting_plans == 0) {
        pt->busy = 0;
        part_poll(pt, rc == NT_OK ? 0 : 1000);
    }
}

static int need_plan(part_t *pt, const char *plan, const redisReply *runf)
{
    const char *v = field(runf, "v");
    uint32_t ver = (uint32_t)strtoul(v ? v : "0", NULL, 10);

    if (!v || nt_plans_cached(pt->w->plans, plan, ver))
        return 0;
    pt->waiting_plans++;
    if (nt_plans_get(pt->w->plans, plan, ver, on_plan_loaded, pt) != NT_OK) {
        pt->waiting_plans--;
        return 0;
    }
    return 1;
}

static int load_missing_plans(part_t *pt, const redisReply *timers, const redisReply *events)
{
    pt->waiting_plans = 1; /* hold until all requests are out */
    for (size_t i = 0; i < timers->elements; i++) {
        const redisReply *it = timers->element[i];

        if (it->type == REDIS_REPLY_ARRAY && it->elements == 4)
            need_plan(pt, rstr(it->element[1]), it->element[3]);
    }
    for (size_t i = 0; i < events->elements; i++) {
        const redisReply *it = events->element[i], *runs;

        if (it->type != REDIS_REPLY_ARRAY || it->elements != 5)
            continue;
        runs = it->element[4];
        for (size_t j = 0; j + 1 < runs->elements; j += 2)
            need_plan(pt, rstr(runs->element[j]), runs->element[j + 1]);
    }
    if (pt->waiting_plans == 1) {
        pt->waiting_plans = 0;
        return 0;
    }
    pt->waiting_plans--;
    return 1;
}

static void on_applied(nt_rc_t rc, redisReply *reply, void *arg)
{
    batch_t *b = arg;
    part_t *pt = b->pt;
    int full = b->ntimers + b->nevents >= pt->w->cfg->batch;

    pt->busy = 0;
    if (rc != NT_OK || reply->type != REDIS_REPLY_ARRAY) {
        nt_log_warn("worker", "partition %u: apply failed: %s", pt->p,
                    rc != NT_OK ? nt_strerror(rc) : (reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply"));
        part_poll(pt, 200);
    } else if (is_fenced(reply)) {
        lose_partition(pt, "fencing token changed");
    } else {
        size_t k = 1;
        size_t nd = json_array_size(b->decisions);

        for (size_t i = 0; i < nd && k < reply->elements; i++, k++) {
            long long v = rint_(reply->element[k]);
            json_t *d = json_array_get(b->decisions, i);

            if (v == 0) {
                nt_metrics.conflicts++;
                continue;
            }
            nt_metrics.transitions++;
            nt_metrics.steps += json_array_size(json_object_get(d, "path"));
            nt_metrics.messages_committed += json_array_size(json_object_get(d, "msg"));
            if (strcmp(json_string_value(json_object_get(d, "s")), "d") == 0) {
                nt_metrics.runs_exited++;
                if (v > 1)
                    nt_metrics_latency(nt_real_ms() - v);
            }
        }
        nt_metrics.events_applied += b->nevents;
        if (b->nmsgs && !pt->obusy)
            outbox_fetch(pt);
        if (full || pt->again)
            part_poll(pt, 0);
        else
            part_idle(pt, b->next_due);
    }
    pt->again = 0;
    json_decref(b->decisions);
    json_decref(b->leads);
    json_decref(b->fixes);
    free(b);
    check_stopped(pt->w);
}

static void decide_batch(part_t *pt, const redisReply *timers, const redisReply *events,
                         int64_t next_due)
{
    nt_worker_t *w = pt->w;
    int64_t now = nt_now_ms();
    batch_t *b = calloc(1, sizeof(*b));
    json_t *all;
    char *json;
    char hmax[16];
    const char *argv[10];
    nt_rc_t rc;

    if (!b)
        goto retry;
    b->pt = pt;
    b->decisions = json_array();
    b->leads = json_array();
    b->fixes = json_array();
    b->next_due = next_due;
    b->ntimers = timers->elements;
    b->nevents = events->elements;

    for (size_t i = 0; i < timers->elements; i++) {
        const redisReply *it = timers->element[i];
        const char *lead_id = rstr(it->element[0]);
        nt_lead_t lead;
        nt_run_t run;
        nt_trigger_t trig = {0};

        run_from_reply(&run, rstr(it->element[1]), it->element[3]);
        if (lead_from_reply(&lead, lead_id, it->element[2]) != 0) {
            nt_lead_fini(&lead);
            continue;
        }
        trig.kind = run.node[0] == '\0' ? NT_TRIG_START : NT_TRIG_TIMER;
        if (run.due_ms && run.due_ms <= now) {
            int64_t lag = now - run.due_ms;

            nt_metrics.timers_fired++;
            nt_metrics.timer_lag_ms_sum += (uint64_t)lag;
            if (lag > nt_metrics.timer_lag_ms_max)
                nt_metrics.timer_lag_ms_max = lag;
        }
        if (!decide_run(b, &lead, &run, &trig, now))
            add_fix(b, lead_id, &run,
                    run.status == NT_RUN_ACTIVE && run.due_ms > now ? run.due_ms : 0);
        nt_lead_fini(&lead);
    }

    for (size_t i = 0; i < events->elements; i++) {
        const redisReply *it = events->element[i];
        const char *eid = rstr(it->element[0]), *lead_id = rstr(it->element[1]);
        const redisReply *ef = it->element[2], *lf = it->element[3], *runs = it->element[4];
        const char *type = field(ef, "t"), *m = field(ef, "m"), *at = field(ef, "at");
        nt_kv_t *attrs = NULL;
        size_t nattrs = 0;
        nt_trigger_t trig = {0};
        nt_lead_t lead;
        json_t *rec = json_object(), *ack = json_array();
        char hist[200];

        json_array_append_new(ack, json_string(eid));
        json_object_set_new(rec, "l", json_string(lead_id));
        json_object_set_new(rec, "ack", ack);
        json_array_append_new(b->leads, rec);
        if (!type || lf->elements == 0)
            continue; /* unknown lead: acknowledged and dropped */
        if (ef->elements > 8) {
            attrs = calloc((ef->elements - 8) / 2, sizeof(*attrs));
            for (size_t j = 8; attrs && j + 1 < ef->elements; j += 2, nattrs++) {
                attrs[nattrs].key = rstr(ef->element[j]);
                attrs[nattrs].value = rstr(ef->element[j + 1]);
            }
        }
        trig.kind = NT_TRIG_EVENT;
        trig.type = type;
        trig.attrs = attrs;
        trig.nattrs = nattrs;
        trig.machine = m && strcmp(m, "1") == 0;
        if (lead_from_reply(&lead, lead_id, lf) != 0) {
            nt_lead_fini(&lead);
            free(attrs);
            continue;
        }
        if (strcmp(type, NT_EVENT_OUTCOME) == 0) {
            const char *node = NULL, *outc = NULL;

            for (size_t j = 0; j < nattrs; j++) {
                if (strcmp(attrs[j].key, "node") == 0)
                    node = attrs[j].value;
                else if (strcmp(attrs[j].key, "outcome") == 0)
                    outc = attrs[j].value;
            }
            snprintf(hist, sizeof(hist), "%.60s: %.60s", node ? node : "?", outc ? outc : "?");
        } else {
            snprintf(hist, sizeof(hist), "event %.64s%s", type, trig.machine ? " (machine)" : "");
            if (!trig.machine) {
                char key[80], val[24];
                json_t *seen = json_array(), *pair = json_array();

                snprintf(key, sizeof(key), "e:%.70s", type);
                snprintf(val, sizeof(val), "%s", at ? at : "0");
                nt_lead_set(&lead, key, val);
                json_array_append_new(pair, json_string(type));
                json_array_append_new(pair, json_string(val));
                json_array_append_new(seen, pair);
                json_object_set_new(rec, "seen", seen);
            }
        }
        json_object_set_new(rec, "h", json_string(hist));
        for (size_t j = 0; j + 1 < runs->elements; j += 2) {
            nt_run_t run;

            run_from_reply(&run, rstr(runs->element[j]), runs->element[j + 1]);
            decide_run(b, &lead, &run, &trig, now);
        }
        nt_lead_fini(&lead);
        free(attrs);
    }

    if (json_array_size(b->decisions) == 0 && json_array_size(b->leads) == 0 &&
        json_array_size(b->fixes) == 0) {
        int full = b->ntimers + b->nevents >= w->cfg->batch;

        json_decref(b->decisions);
        json_decref(b->leads);
        json_decref(b->fixes);
        free(b);
        pt->busy = 0;
        if (full || pt->again)
            part_poll(pt, 0);
        else
            part_idle(pt, next_due);
        pt->again = 0;
        check_stopped(w);
        return;
    }
    all = json_object();
    json_object_set(all, "d", b->decisions);
    json_object_set(all, "e", b->leads);
    json_object_set(all, "tz", b->fixes);
    json = json_dumps(all, JSON_COMPACT);
    json_decref(all);
    snprintf(hmax, sizeof(hmax), "%d", w->cfg->timeline_max);
    {
        char now_s[24];

        snprintf(now_s, sizeof(now_s), "%lld", (long long)now);
        argv[0] = pt->k_lease;
        argv[1] = pt->k_timers;
        argv[2] = pt->k_events;
        argv[3] = pt->k_outbox;
        argv[4] = w->id;
        argv[5] = pt->tok;
        argv[6] = now_s;
        argv[7] = pt->prefix;
        argv[8] = hmax;
        argv[9] = json ? json : "{}";
        rc = nt_redis_script(w->redis, "apply", on_applied, b, 4, 10, argv, NULL);
    }
    free(json);
    if (rc == NT_OK)
        return;
    json_decref(b->decisions);
    json_decref(b->leads);
    json_decref(b->fixes);
    free(b);
retry:
    pt->busy = 0;
    part_poll(pt, 200);
}

static void on_fetched(nt_rc_t rc, redisReply *reply, void *arg)
{
    part_t *pt = arg;

    if (rc != NT_OK || reply->type != REDIS_REPLY_ARRAY) {
        if (rc == NT_OK && reply->type == REDIS_REPLY_ERROR)
            nt_log_error("worker", "partition %u: fetch: %s", pt->p, reply->str);
        pt->busy = 0;
        part_poll(pt, 200);
    } else if (is_fenced(reply)) {
        pt->busy = 0;
        lose_partition(pt, "fencing token changed");
    } else if (reply->elements != 4) {
        pt->busy = 0;
        part_poll(pt, 200);
    } else if (load_missing_plans(pt, reply->element[2], reply->element[3])) {
        return; /* busy until the plans are in; then fetched again */
    } else {
        decide_batch(pt, reply->element[2], reply->element[3], rint_(reply->element[1]));
        return;
    }
    check_stopped(pt->w);
}

static void fetch(part_t *pt)
{
    nt_worker_t *w = pt->w;
    char now_s[24], n_s[16], idle_s[16];
    const char *argv[9];

    if (pt->busy || !pt->owned || w->stopping) {
        pt->again = pt->busy;
        return;
    }
    snprintf(now_s, sizeof(now_s), "%lld", (long long)nt_now_ms());
    snprintf(n_s, sizeof(n_s), "%u", w->cfg->batch);
    snprintf(idle_s, sizeof(idle_s), "%d", w->cfg->lease_ms);
    argv[0] = pt->k_lease;
    argv[1] = pt->k_timers;
    argv[2] = pt->k_events;
    argv[3] = w->id;
    argv[4] = pt->tok;
    argv[5] = now_s;
    argv[6] = n_s;
    argv[7] = pt->prefix;
    argv[8] = idle_s;
    pt->busy = 1;
    if (nt_redis_script(w->redis, "fetch", on_fetched, pt, 3, 9, argv, NULL) != NT_OK) {
        pt->busy = 0;
        part_poll(pt, 500);
    }
}

/* ---- dispatch ----------------------------------------------------------------------------- */

static void dmsg_free(dmsg_t *m)
{
    if (!m)
        return;
    if (m->retry_ev)
        event_free(m->retry_ev);
    for (size_t i = 0; i < m->nstrs; i++)
        free(m->strs[i]);
    free(m->strs);
    free(m->params);
    free(m->lead);
    free(m->entry);
    free(m->outcome);
    free(m->detail);
    free(m);
}

static void list_remove(dmsg_t **head, dmsg_t *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        *head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    m->prev = m->next = NULL;
}

static void list_push(dmsg_t **head, dmsg_t *m)
{
    m->prev = NULL;
    m->next = *head;
    if (*head)
        (*head)->prev = m;
    *head = m;
}

static void on_flushed(nt_rc_t rc, redisReply *reply, void *arg)
{
    part_t *pt = arg;
    dmsg_t *m;

    pt->flushing = 0;
    if (rc != NT_OK || reply->type != REDIS_REPLY_ARRAY) {
        /* Outcomes stay queued and are recorded on the next try; the entries stay pending. */
        struct timeval tv = {0, 200 * 1000};

        nt_log_warn("worker", "partition %u: recording outcomes failed: %s", pt->p,
                    rc != NT_OK ? nt_strerror(rc) : rstr(reply));
        evtimer_add(pt->flush_ev, &tv);
        check_stopped(pt->w);
        return;
    }
    if (is_fenced(reply))
        lose_partition(pt, "fencing token changed");
    /* Recorded, or fenced (the new owner re-dispatches; the channel drops the twin). */
    while ((m = pt->done)) {
        list_remove(&pt->done, m);
        pt->ndone--;
        dmsg_free(m);
    }
    if (!is_fenced(reply)) {
        part_poll(pt, 0);
        outbox_fetch(pt);
    }
    check_stopped(pt->w);
}

static void flush_done(evutil_socket_t fd, short what, void *arg)
{
    part_t *pt = arg;
    nt_worker_t *w = pt->w;
    size_t n = pt->ndone, k = 0;
    const char **argv;
    char now_s[24];
    char (*visits)[16];
    dmsg_t *m;

    (void)fd;
    (void)what;
    if (pt->flushing || n == 0)
        return;
    argv = malloc(sizeof(*argv) * (6 + 7 * n));
    visits = malloc(sizeof(*visits) * n);
    if (!argv || !visits) {
        free(argv);
        free(visits);
        return;
    }
    snprintf(now_s, sizeof(now_s), "%lld", (long long)nt_now_ms());
    argv[k++] = pt->k_lease;
    argv[k++] = pt->k_outbox;
    argv[k++] = pt->k_events;
    argv[k++] = w->id;
    argv[k++] = pt->tok;
    argv[k++] = now_s;
    n = 0;
    for (m = pt->done; m; m = m->next, n++) {
        snprintf(visits[n], sizeof(visits[n]), "%u", m->msg.visit);
        argv[k++] = m->entry;
        argv[k++] = m->msg.lead_id;
        argv[k++] = m->msg.plan_id;
        argv[k++] = m->msg.node_id;
        argv[k++] = visits[n];
        argv[k++] = m->outcome ? m->outcome : "sent";
        argv[k++] = m->detail ? m->detail : "";
    }
    pt->flushing = 1;
    if (nt_redis_script(w->redis, "dispatched", on_flushed, pt, 3, (int)k, argv, NULL) != NT_OK) {
        struct timeval tv = {0, 500 * 1000};

        pt->flushing = 0;
        evtimer_add(pt->flush_ev, &tv);
    }
    free(argv);
    free(visits);
}

static void dispatch_one(dmsg_t *m);

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    dispatch_one(arg);
}

static void on_channel_done(void *arg, nt_rc_t rc, const char *outcome, const char *detail)
{
    dmsg_t *m = arg;
    part_t *pt = m->pt;
    nt_worker_t *w = pt->w;

    m->in_plugin = 0;
    if (rc == NT_ECANCELED || w->stopping) {
        /* Left pending in the outbox: whoever owns the partition next delivers it. */
        list_remove(&pt->msgs, m);
        pt->nmsgs--;
        dmsg_free(m);
        check_stopped(w);
        return;
    }
    if ((rc == NT_EUNAVAIL || rc == NT_ETIMEOUT) && m->attempt < w->cfg->dispatch_retries) {
        /* Exponential backoff with jitter: 200 ms, 400 ms, ... capped at 60 s. */
        int64_t ms = 200LL << (m->attempt - 1 > 8 ? 8 : m->attempt - 1);
        struct timeval tv;

        if (ms > 60000)
            ms = 60000;
        ms = ms / 2 + (int64_t)(random() % (ms / 2 + 1));
        tv.tv_sec = ms / 1000;
        tv.tv_usec = (ms % 1000) * 1000;
        nt_metrics.messages_retried++;
        nt_log_info("dispatch", "%s: %s, retry %d in %lld ms", m->msg.id, detail ? detail : nt_strerror(rc),
                    m->attempt, (long long)ms);
        m->attempt++;
        if (!m->retry_ev)
            m->retry_ev = evtimer_new(w->base, on_retry, m);
        if (m->retry_ev)
            evtimer_add(m->retry_ev, &tv);
        return;
    }
    if (rc == NT_OK) {
        m->outcome = strdup(outcome ? outcome : "sent");
        nt_metrics.messages_dispatched++;
    } else {
        m->outcome = strdup("failed");
        nt_metrics.messages_failed++;
    }
    m->detail = strdup(detail ? detail : (rc == NT_OK ? "" : nt_strerror(rc)));
    list_remove(&pt->msgs, m);
    pt->nmsgs--;
    list_push(&pt->done, m);
    pt->ndone++;
    if (!evtimer_pending(pt->flush_ev, NULL)) {
        struct timeval zero = {0, 0};

        evtimer_add(pt->flush_ev, &zero);
    }
}

static void dispatch_one(dmsg_t *m)
{
    nt_rc_t rc;

    if (!m->mod || !m->mod->started) {
        /* No such channel running here: keep it, try again later. */
        on_channel_done(m, NT_EUNAVAIL, NULL, "channel not running");
        return;
    }
    m->msg.attempt = m->attempt;
    m->in_plugin = 1;
    rc = m->mod->ops->dispatch(m->mod->state, &m->msg, on_channel_done, m);
    if (rc != NT_OK && rc != NT_AGAIN && m->in_plugin)
        on_channel_done(m, rc, NULL, "dispatch refused");
}

static char *keep(dmsg_t *m, const char *s)
{
    char *c = strdup(s ? s : "");

    if (c)
        m->strs[m->nstrs++] = c;
    return c;
}

static dmsg_t *dmsg_new(part_t *pt, const redisReply *e)
{
    const redisReply *f = e->element[1], *lf = e->element[2];
    dmsg_t *m = calloc(1, sizeof(*m));
    size_t np = f->elements > 14 ? (f->elements - 14) / 2 : 0, nl = 0;

    if (!m)
        return NULL;
    m->pt = pt;
    m->attempt = 1;
    m->strs = calloc(16 + f->elements + lf->elements, sizeof(char *));
    m->params = calloc(np + 1, sizeof(nt_kv_t));
    m->lead = calloc(lf->elements / 2 + 1, sizeof(nt_kv_t));
    m->entry = strdup(rstr(e->element[0]));
    if (!m->strs || !m->params || !m->lead || !m->entry) {
        dmsg_free(m);
        return NULL;
    }
    m->msg.id = keep(m, field(f, "id"));
    m->msg.lead_id = keep(m, field(f, "l"));
    m->msg.plan_id = keep(m, field(f, "p"));
    m->msg.plan_version = (uint32_t)strtoul(field(f, "v") ? field(f, "v") : "0", NULL, 10);
    m->msg.node_id = keep(m, field(f, "n"));
    m->msg.visit = (uint32_t)strtoul(field(f, "vi") ? field(f, "vi") : "0", NULL, 10);
    for (size_t i = 14; i + 1 < f->elements; i += 2) {
        m->params[m->msg.nparams].key = keep(m, rstr(f->element[i]));
        m->params[m->msg.nparams].value = keep(m, rstr(f->element[i + 1]));
        m->msg.nparams++;
    }
    m->msg.params = m->params;
    for (size_t i = 0; i + 1 < lf->elements; i += 2) {
        const char *k = rstr(lf->element[i]);

        if (strncmp(k, "r:", 2) == 0 || strncmp(k, "e:", 2) == 0 || strcmp(k, "_created") == 0)
            continue;
        m->lead[nl].key = keep(m, strcmp(k, "_score") == 0   ? "score"
                                  : strcmp(k, "_stage") == 0 ? "stage"
                                                             : k);
        m->lead[nl].value = keep(m, rstr(lf->element[i + 1]));
        nl++;
    }
    m->msg.lead = m->lead;
    m->msg.nlead = nl;
    m->mod = nt_modules_find(pt->w->mods, field(f, "c") ? field(f, "c") : "");
    return m;
}

static int in_flight(const part_t *pt, const char *entry)
{
    for (const dmsg_t *m = pt->msgs; m; m = m->next)
        if (strcmp(m->entry, entry) == 0)
            return 1;
    for (const dmsg_t *m = pt->done; m; m = m->next)
        if (strcmp(m->entry, entry) == 0)
            return 1;
    return 0;
}

static void on_outbox(nt_rc_t rc, redisReply *reply, void *arg)
{
    part_t *pt = arg;
    size_t took = 0;

    pt->obusy = 0;
    if (rc != NT_OK || reply->type != REDIS_REPLY_ARRAY) {
        check_stopped(pt->w);
        return;
    }
    if (is_fenced(reply)) {
        lose_partition(pt, "fencing token changed");
        check_stopped(pt->w);
        return;
    }
    pt->orecover = 0;
    for (size_t i = 1; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        dmsg_t *m;

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 3 ||
            e->element[1]->type != REDIS_REPLY_ARRAY || in_flight(pt, rstr(e->element[0])))
            continue;
        m = dmsg_new(pt, e);
        if (!m) {
            pt->orecover = 1;
            continue;
        }
        list_push(&pt->msgs, m);
        pt->nmsgs++;
        took++;
        dispatch_one(m);
    }
    if (took >= pt->w->cfg->batch)
        outbox_fetch(pt);
    check_stopped(pt->w);
}

static void outbox_fetch(part_t *pt)
{
    nt_worker_t *w = pt->w;
    char n_s[16], idle_s[16];
    const char *argv[8];

    if (pt->obusy || !pt->owned || w->stopping || pt->nmsgs >= w->cfg->batch)
        return;
    snprintf(n_s, sizeof(n_s), "%u", w->cfg->batch);
    snprintf(idle_s, sizeof(idle_s), "%d", w->cfg->lease_ms);
    argv[0] = pt->k_lease;
    argv[1] = pt->k_outbox;
    argv[2] = w->id;
    argv[3] = pt->tok;
    argv[4] = n_s;
    argv[5] = pt->prefix;
    argv[6] = idle_s;
    argv[7] = pt->orecover ? "1" : "0";
    pt->obusy = 1;
    if (nt_redis_script(w->redis, "outbox", on_outbox, pt, 2, 8, argv, NULL) != NT_OK)
        pt->obusy = 0;
}

/* ---- polling ------------------------------------------------------------------------------ */

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    part_t *pt = arg;

    (void)fd;
    (void)what;
    if (!pt->owned || pt->w->stopping)
        return;
    fetch(pt);
    outbox_fetch(pt);
    if (!pt->busy)
        part_idle(pt, -1); /* a finishing batch schedules its own */
}

/* Schedule the next look at a partition in delay_ms (the earlier of this and one already
 * scheduled wins). */
static void part_poll(part_t *pt, int64_t delay_ms)
{
    struct timeval tv;

    if (!pt->owned || pt->w->stopping)
        return;
    if (evtimer_pending(pt->poll_ev, &tv)) {
        struct timeval now, left;

        event_base_gettimeofday_cached(pt->w->base, &now);
        evutil_timersub(&tv, &now, &left);
        if (left.tv_sec * 1000 + left.tv_usec / 1000 <= delay_ms)
            return;
    }
    tv.tv_sec = delay_ms / 1000;
    tv.tv_usec = (delay_ms % 1000) * 1000;
    evtimer_add(pt->poll_ev, &tv);
}

/* Nothing to do now: look again when the next timer is due (next_due, plan ms; -1 when there is
 * none), and at the latest after the idle period, for events posted through other processes
 * and outbox entries left by dead workers. */
static void part_idle(part_t *pt, int64_t next_due)
{
    const nt_config_t *cfg = pt->w->cfg;
    int64_t delay = cfg->poll_ms * 50 > 500 ? cfg->poll_ms * 50 : 500;

    if (next_due > 0) {
        int64_t d = nt_clock_real_delay_ms(next_due);

        if (d < delay)
            delay = d < cfg->poll_ms ? cfg->poll_ms : d;
    }
    part_poll(pt, delay);
}

void nt_worker_wake(nt_worker_t *w, unsigned p)
{
    if (!w || p >= w->nparts || !w->parts[p].owned)
        return;
    if (w->parts[p].busy)
        w->parts[p].again = 1;
    else
        part_poll(&w->parts[p], 0);
}

/* ---- leases ------------------------------------------------------------------------------- */

static void on_lease(nt_rc_t rc, redisReply *reply, void *arg)
{
    part_t *pt = arg;
    nt_worker_t *w = pt->w;

    pt->leasing = 0;
    if (rc != NT_OK || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
        check_stopped(w);
        return;
    }
    if (rint_(reply->element[0]) == 1) {
        char tok[24];

        snprintf(tok, sizeof(tok), "%lld", rint_(reply->element[1]));
        if (!pt->owned || strcmp(tok, pt->tok) != 0) {
            if (pt->owned)
                lose_partition(pt, "token moved on");
            memcpy(pt->tok, tok, sizeof(tok));
            pt->owned = 1;
            pt->orecover = 1;
            w->owned++;
            nt_log_debug("worker", "partition %u acquired, token %s", pt->p, pt->tok);
            if (!w->stopping)
                part_poll(pt, 0);
        }
    } else if (pt->owned) {
        lose_partition(pt, "lease expired");
    }
    check_stopped(w);
}

static void lease(part_t *pt, const char *mode)
{
    nt_worker_t *w = pt->w;
    char ttl[16];
    const char *argv[6];

    if (pt->leasing)
        return;
    /* Leases last 4/5 of the period and are renewed every 1/5: a dead worker's partitions are
     * taken over within one lease period. */
    snprintf(ttl, sizeof(ttl), "%d", w->cfg->lease_ms * 4 / 5);
    argv[0] = pt->k_lease;
    argv[1] = pt->k_events;
    argv[2] = pt->k_outbox;
    argv[3] = w->id;
    argv[4] = mode;
    argv[5] = ttl;
    pt->leasing = 1;
    if (nt_redis_script(w->redis, "lease", on_lease, pt, 3, 6, argv, NULL) != NT_OK)
        pt->leasing = 0;
    if (strcmp(mode, "release") == 0 && pt->owned) {
        pt->owned = 0;
        w->owned--;
    }
}

static void on_ignore(nt_rc_t rc, redisReply *reply, void *arg)
{
    (void)rc;
    (void)reply;
    (void)arg;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_live(nt_worker_t *w)
{
    for (size_t i = 0; i < w->nlive; i++)
        free(w->live[i]);
    free(w->live);
    w->live = NULL;
    w->nlive = 0;
}

static void lease_all(nt_worker_t *w);

static void on_heartbeat(nt_rc_t rc, redisReply *reply, void *arg)
{
    nt_worker_t *w = arg;
    char **ids;
    size_t n = 0;

    if (rc != NT_OK || reply->type != REDIS_REPLY_ARRAY)
        return;
    ids = calloc(reply->elements + 1, sizeof(*ids));
    if (!ids)
        return;
    for (size_t i = 0; i < reply->elements; i++)
        if ((ids[n] = strdup(rstr(reply->element[i]))))
            n++;
    if (n > 1)
        qsort(ids, n, sizeof(*ids), cmp_id);
    free_live(w);
    w->live = ids;
    w->nlive = n;
    if (!w->stopping)
        lease_all(w);
}

/* The worker a partition belongs to when all is well: partitions are dealt round-robin over
 * the live workers sorted by id, so every worker computes the same assignment. NULL when this
 * worker has not seen the live list yet. */
static const char *preferred(const nt_worker_t *w, unsigned p)
{
    return w->nlive ? w->live[p % w->nlive] : NULL;
}

static void on_meta(nt_rc_t rc, redisReply *reply, void *arg)
{
    nt_worker_t *w = arg;

    if (rc != NT_OK || reply->type != REDIS_REPLY_STRING)
        return;
    if ((unsigned)strtoul(reply->str, NULL, 10) != w->nparts) {
        nt_log_error("worker",
                     "this deployment was created with %s partitions, configured: %u; refusing "
                     "to take partitions (set partitions %s)",
                     reply->str, w->nparts, reply->str);
        return;
    }
    w->meta_ok = 1;
    event_active(w->lease_ev, EV_TIMEOUT, 0);
}

/* Renew, hand over and take partitions by the live list just read. */
static void lease_all(nt_worker_t *w)
{
    for (unsigned i = 0; i < w->nparts; i++) {
        part_t *pt = &w->parts[i];
        const char *pref = preferred(w, i);
        int mine = !pref || strcmp(pref, w->id) == 0;

        if (pt->owned) {
            if (!mine && !pt->busy && !pt->obusy && pt->nmsgs == 0 && pt->ndone == 0)
                lease(pt, "release");
            else
                lease(pt, "renew");
        } else if (mine) {
            /* The script takes it only once it is free (released, or its holder's lease ran
             * out). A dead worker's partitions become someone's when it leaves the live list. */
            lease(pt, "acquire");
        }
    }
}

/* Every lease/5: heartbeat (which returns the live workers), renew what this worker holds,
 * hand partitions that belong to another live worker over to it, and take the ones that belong
 * to this worker as soon as they are free. A worker that stops
 * heart-beating drops out of the live list after 4/5 of a lease, when its leases have expired
 * too, so its partitions are taken over within one lease period. */
static void on_lease_tick(evutil_socket_t fd, short what, void *arg)
{
    nt_worker_t *w = arg;
    char parts_s[16], stale_s[16];
    const char *hb[4];

    (void)fd;
    (void)what;
    if (!nt_redis_up(w->redis) || w->stopping)
        return;
    if (!w->meta_ok) {
        snprintf(parts_s, sizeof(parts_s), "%u", w->nparts);
        nt_redis_cmd(w->redis, on_ignore, w, "HSETNX %s partitions %s",
                     NT_KEY_META, parts_s);
        nt_redis_cmd(w->redis, on_meta, w, "HGET %s partitions", NT_KEY_META);
        return;
    }
    snprintf(stale_s, sizeof(stale_s), "%d", w->cfg->lease_ms * 4 / 5);
    hb[0] = NT_KEY_WORKERS;
    hb[1] = w->id;
    hb[2] = stale_s;
    hb[3] = "";
    nt_redis_script(w->redis, "heartbeat", on_heartbeat, w, 1, 4, hb, NULL);
}

/* ---- life cycle --------------------------------------------------------------------------- */

nt_worker_t *nt_worker_new(const nt_worker_deps_t *deps, char **errmsg)
{
    nt_worker_t *w = calloc(1, sizeof(*w));
    struct timeval tick;

    *errmsg = NULL;
    if (!w)
        goto nomem;
    w->base = deps->base;
    w->cfg = deps->cfg;
    w->redis = deps->redis;
    w->plans = deps->plans;
    w->mods = deps->mods;
    w->id = strdup(deps->cfg->worker_id);
    w->nparts = deps->cfg->partitions;
    w->parts = calloc(w->nparts, sizeof(*w->parts));
    w->lease_ev = event_new(w->base, -1, EV_PERSIST, on_lease_tick, w);
    if (!w->id || !w->parts || !w->lease_ev)
        goto nomem;
    for (unsigned i = 0; i < w->nparts; i++) {
        part_t *pt = &w->parts[i];

        pt->w = w;
        pt->p = i;
        nt_key_part(pt->prefix, i, "");
        nt_key_part(pt->k_lease, i, "lease");
        nt_key_part(pt->k_timers, i, "timers");
        nt_key_part(pt->k_events, i, "events");
        nt_key_part(pt->k_outbox, i, "outbox");
        pt->poll_ev = evtimer_new(w->base, on_poll, pt);
        pt->flush_ev = evtimer_new(w->base, flush_done, pt);
        if (!pt->poll_ev || !pt->flush_ev)
            goto nomem;
    }
    tick.tv_sec = w->cfg->lease_ms / 5 / 1000;
    tick.tv_usec = (w->cfg->lease_ms / 5 % 1000) * 1000;
    event_add(w->lease_ev, &tick);
    return w;

nomem:
    *errmsg = strdup("out of memory");
    nt_worker_free(w);
    return NULL;
}

static int all_quiet(const nt_worker_t *w)
{
    for (unsigned i = 0; i < w->nparts; i++) {
        const part_t *pt = &w->parts[i];

        if (pt->busy || pt->obusy || pt->flushing || pt->leasing || pt->ndone ||
            pt->waiting_plans)
            return 0;
        for (const dmsg_t *m = pt->msgs; m; m = m->next)
            if (m->in_plugin)
                return 0;
    }
    return 1;
}

static void finish_stop(evutil_socket_t fd, short what, void *arg)
{
    nt_worker_t *w = arg;
    void (*done)(void *) = w->stop_done;

    (void)fd;
    (void)what;
    if (!done)
        return;
    if (!w->releasing) {
        /* Parked retries stay pending in the outbox for the next owner. */
        for (unsigned i = 0; i < w->nparts; i++) {
            part_t *pt = &w->parts[i];
            dmsg_t *m, *next;

            for (m = pt->msgs; m; m = next) {
                next = m->next;
                if (!m->in_plugin) {
                    list_remove(&pt->msgs, m);
                    pt->nmsgs--;
                    dmsg_free(m);
                }
            }
        }
        if (!all_quiet(w) && nt_real_ms() < w->stop_deadline)
            return;
        w->releasing = 1;
        for (unsigned i = 0; i < w->nparts; i++)
            if (w->parts[i].owned && nt_redis_up(w->redis))
                lease(&w->parts[i], "release");
        if (nt_redis_up(w->redis)) {
            const char *hb[4] = {NT_KEY_WORKERS, w->id, "1", "leave"};

            nt_redis_script(w->redis, "heartbeat", on_ignore, w, 1, 4, hb, NULL);
        }
        return;
    }
    if (!all_quiet(w) && nt_real_ms() < w->stop_deadline)
        return;
    w->stop_done = NULL;
    event_del(w->stop_ev);
    nt_log_info("worker", "stopped");
    done(w->stop_arg);
}

static void check_stopped(nt_worker_t *w)
{
    if (w->stopping && w->stop_ev)
        event_active(w->stop_ev, EV_TIMEOUT, 0);
}

void nt_worker_stop(nt_worker_t *w, void (*done)(void *arg), void *arg)
{
    struct timeval tick = {0, 50 * 1000};

    w->stopping = 1;
    w->stop_done = done;
    w->stop_arg = arg;
    w->stop_deadline = nt_real_ms() + 10000;
    event_del(w->lease_ev);
    for (unsigned i = 0; i < w->nparts; i++) {
        event_del(w->parts[i].poll_ev);
        for (dmsg_t *m = w->parts[i].msgs; m; m = m->next)
            if (m->retry_ev)
                event_del(m->retry_ev);
    }
    w->stop_ev = event_new(w->base, -1, EV_PERSIST, finish_stop, w);
    if (!w->stop_ev) {
        done(arg);
        return;
    }
    event_add(w->stop_ev, &tick);
    event_active(w->stop_ev, EV_TIMEOUT, 0);
}

void nt_worker_free(nt_worker_t *w)
{
    if (!w)
        return;
    if (w->parts) {
        for (unsigned i = 0; i < w->nparts; i++) {
            part_t *pt = &w->parts[i];
            dmsg_t *m;

            while ((m = pt->msgs)) {
                list_remove(&pt->msgs, m);
                dmsg_free(m);
            }
            while ((m = pt->done)) {
                list_remove(&pt->done, m);
                dmsg_free(m);
            }
            if (pt->poll_ev)
                event_free(pt->poll_ev);
            if (pt->flush_ev)
                event_free(pt->flush_ev);
        }
        free(w->parts);
    }
    if (w->lease_ev)
        event_free(w->lease_ev);
    if (w->stop_ev)
        event_free(w->stop_ev);
    free_live(w);
    free(w->id);
    free(w);
}

json_t *nt_worker_health(const nt_worker_t *w)
{
    size_t inflight = 0;

    for (unsigned i = 0; i < w->nparts; i++)
        inflight += w->parts[i].nmsgs;
    return json_pack("{s:s, s:i, s:i, s:i, s:b}", "id", w->id, "partitions", (int)w->nparts,
                     "partitions_owned", (int)w->owned, "messages_in_flight", (int)inflight,
                     "stopping", w->stopping);
}

static void on_posted(nt_rc_t rc, redisReply *reply, void *arg)
{
    (void)arg;
    if (rc != NT_OK || reply->type == REDIS_REPLY_ERROR)
        nt_log_warn("worker", "posting an event failed: %s",
                    rc != NT_OK ? nt_strerror(rc) : reply->str);
}

nt_rc_t nt_worker_post_event(nt_worker_t *w, const char *lead_id, const char *type,
                             const nt_kv_t *attrs, size_t nattrs)
{
    unsigned p = nt_partition(lead_id, w->nparts);
    char key[NT_KEY_MAX], at[24];
    size_t argc = 11 + 2 * nattrs, k = 0;
    const char **argv = malloc(sizeof(*argv) * argc);
    nt_rc_t rc;

    if (!argv)
        return NT_ENOMEM;
    snprintf(at, sizeof(at), "%lld", (long long)nt_now_ms());
    argv[k++] = "XADD";
    argv[k++] = nt_key_part(key, p, "events");
    argv[k++] = "*";
    argv[k++] = "l";
    argv[k++] = lead_id;
    argv[k++] = "t";
    argv[k++] = type;
    argv[k++] = "m";
    argv[k++] = "0";
    argv[k++] = "at";
    argv[k++] = at;
    for (size_t i = 0; i < nattrs; i++) {
        argv[k++] = attrs[i].key;
        argv[k++] = attrs[i].value ? attrs[i].value : "";
    }
    rc = nt_redis_argv(w->redis, on_posted, NULL, (int)k, argv, NULL);
    free(argv);
    if (rc == NT_OK)
        nt_worker_wake(w, p);
    return rc;
}
