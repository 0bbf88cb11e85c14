/* The worker: partition leases, the fetch -> decide -> apply loop, and dispatch.
 *
 * Per owned partition at most one batch is in flight at a time (fetch, then decide in C, then
 * one apply script), so a batch never races with itself; another worker is kept out by the
 * lease's fencing token, which every script checks.
 *
 * Messages are committed to the partition's outbox by the apply script and, once it has
 * answered, handed to their channels straight from memory. A channel's outcome is kept in
 * memory too and fed to the partition's next batch, whose apply both moves the run and deletes
 * the outbox entry, atomically. Nothing of this needs the outbox to be read while the worker
 * lives: only a worker that takes a partition over (or whose apply got no answer) reads it,
 * and delivers again what was committed but not yet consumed, with the same idempotency key,
 * which the channel honours. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "applyarg.h"
#include "clock.h"
#include "engine.h"
#include "keys.h"
#include "lead.h"
#include "log.h"
#include "metrics.h"
#include "msgpack.h"
#include "worker.h"

typedef struct part part_t;
typedef struct dmsg dmsg_t;
typedef struct breaker breaker_t;

/* A channel's circuit breaker. After NT_BREAKER_THRESHOLD transient failures in a row the
 * channel counts as down: further messages are held (committed in the outbox and in memory,
 * neither failed nor retried), and after a cool-down one message probes; its success closes
 * the breaker and releases the held ones, its failure doubles the cool-down (at most 60 s). */
#define NT_BREAKER_THRESHOLD 5

enum { NT_BRK_CLOSED = 0, NT_BRK_OPEN = 1, NT_BRK_PROBING = 2 };

struct breaker {
    nt_worker_t *w;
    const nt_module_t *mod;
    int state;
    unsigned fails;         /* transient failures in a row */
    int64_t cooldown_ms;
    int64_t open_until;     /* real ms */
    size_t held;
    struct event *ev;       /* the probe timer */
};

/* A message handed to a channel, owned by the worker until its outcome is applied. */
struct dmsg {
    part_t *pt;
    char *entry;            /* outbox field: the message id, once committed */
    char **strs;            /* every string below points into this array (owned) */
    size_t nstrs;
    size_t cstrs;
    nt_message_t msg;
    nt_kv_t *params;
    nt_kv_t *lead;
    const nt_module_t *mod;
    int attempt;
    int in_plugin;          /* dispatch called, done not yet */
    int parked;             /* held while its channel's circuit breaker is open */
    struct event *retry_ev;
    char *outcome;          /* once done */
    char *detail;
    /* The lead and run as this worker committed them, so that the outcome can be decided
     * without reading them back (has_snap 0: read them, e.g. after a take-over). */
    int has_snap;
    nt_lead_t snap_lead;
    nt_run_t snap_run;      /* plan_id and node point into msg */
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
    int queued;             /* wants a batch while the worker has its most in flight */
    int obusy;              /* outbox read in flight */
    int orecover;           /* the outbox must be read (taken over, or an apply unanswered) */
    char ocursor[24];       /* where the outbox scan goes on ("" or "0": from the start) */
    int orestart;           /* start the scan again once the read under way answers */
    dmsg_t *msgs;           /* in a channel, or parked for a retry */
    size_t nmsgs;
    dmsg_t *done;           /* delivered; outcome waiting for the next batch */
    size_t ndone;
    dmsg_t **taken;         /* outcomes handed to the fetch in flight */
    size_t ntaken;
    struct event *poll_ev;
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
    unsigned active;        /* partitions with a batch in flight */
    breaker_t *brk;         /* one per channel plugin */
    size_t nbrk;
    unsigned next_queued;   /* where the search for a queued partition starts */
    struct event *slot_ev;  /* zero-delay: a batch slot came free */
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
static void fetch(part_t *pt);

/* Batches in flight at once, over all partitions of this worker. */
#define NT_WORKER_MAX_ACTIVE 4

static void busy(part_t *pt)
{
    pt->busy = 1;
    pt->w->active++;
}

/* A batch ended: give its slot to a partition that is waiting for one. */
static void unbusy(part_t *pt)
{
    if (!pt->busy)
        return;
    pt->busy = 0;
    pt->w->active--;
    event_active(pt->w->slot_ev, EV_TIMEOUT, 0);
}

static void on_slot(evutil_socket_t fd, short what, void *arg)
{
    nt_worker_t *w = arg;

    (void)fd;
    (void)what;
    for (unsigned n = 0; n < w->nparts && w->active < NT_WORKER_MAX_ACTIVE; n++) {
        part_t *pt = &w->parts[w->next_queued];

        w->next_queued = (w->next_queued + 1) % w->nparts;
        if (pt->queued && !pt->busy)
            fetch(pt);
    }
}

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
    run->enrol_real_ms = strtoll((s = field(arr, "er")) ? s : "0", NULL, 10);
    s = field(arr, "s");
    run->status = (s && strcmp(s, "a") == 0) ? NT_RUN_ACTIVE : NT_RUN_DONE;
}

static int is_fenced(const redisReply *reply)
{
    return reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
           strcmp(rstr(reply->element[0]), "FENCED") == 0;
}

static void list_remove(dmsg_t **head, dmsg_t *m);
static void dmsg_free(dmsg_t *m);

static void lose_partition(part_t *pt, const char *why)
{
    dmsg_t *m;

    if (!pt->owned)
        return;
    nt_log_warn("worker", "partition %u lost: %s", pt->p, why);
    pt->owned = 0;
    pt->w->owned--;
    nt_metrics.fenced++;
    /* Delivered messages whose outcome is not applied stay in the outbox for the next owner,
     * which delivers them again under the same idempotency key. */
    while ((m = pt->done)) {
        list_remove(&pt->done, m);
        pt->ndone--;
        dmsg_free(m);
    }
}

/* ---- messages in memory ------------------------------------------------------------------- */

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
    if (m->has_snap)
        nt_lead_fini(&m->snap_lead);
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

/* A message record with room for nstr owned strings. */
static dmsg_t *dmsg_alloc(part_t *pt, size_t nstr, size_t nparams, size_t nlead)
{
    dmsg_t *m = calloc(1, sizeof(*m));

    if (!m)
        return NULL;
    m->pt = pt;
    m->attempt = 1;
    m->cstrs = nstr + 4;
    m->strs = calloc(m->cstrs, sizeof(char *));
    m->params = calloc(nparams + 1, sizeof(nt_kv_t));
    m->lead = calloc(nlead + 3, sizeof(nt_kv_t)); /* + the marks set_mark may add */
    if (!m->strs || !m->params || !m->lead) {
        dmsg_free(m);
        return NULL;
    }
    return m;
}

/* A delivered message waits for its partition's next batch with only what that batch needs:
 * its ids, its outcome and the snapshot. The copy of the lead and the parameters the channel
 * saw go (with 64 partitions and 4 batches at a time, up to partitions x batch messages wait,
 * and these copies were most of their memory). */
static void shed_payload(dmsg_t *m)
{
    size_t k = 0;

    for (size_t i = 0; i < m->nstrs; i++) {
        const char *s = m->strs[i];

        if (s == m->msg.id || s == m->msg.lead_id || s == m->msg.plan_id ||
            s == m->msg.node_id || s == m->snap_run.node)
            m->strs[k++] = m->strs[i];
        else
            free(m->strs[i]);
    }
    m->nstrs = k;
    if (k > 0) {
        char **strs = realloc(m->strs, k * sizeof(char *));

        if (strs != NULL) {
            m->strs = strs;
            m->cstrs = k;
        }
    }
    free(m->params);
    free(m->lead);
    m->params = NULL;
    m->lead = NULL;
    m->msg.params = NULL;
    m->msg.nparams = 0;
    m->msg.lead = NULL;
    m->msg.nlead = 0;
}

static const char *keep(dmsg_t *m, const char *s)
{
    char *c;

    if (m->nstrs == m->cstrs || !(c = strdup(s ? s : "")))
        return "";
    m->strs[m->nstrs++] = c;
    return c;
}

/* Lead fields a channel sees: attributes, with _score, _stage, _unsub and _suppressed as score,
 * stage, unsubscribed and suppressed. */
static int lead_field_for_channel(const char *k, const char **name)
{
    if (strncmp(k, "r:", 2) == 0 || strncmp(k, "e:", 2) == 0 || strcmp(k, "_created") == 0)
        return 0;
    /* "unsubscribed" and "suppressed" are the daemon's marks (set by the tracking routes and
     * the provider webhook): an attribute of the same name never passes for one. */
    if (strcmp(k, "unsubscribed") == 0 || strcmp(k, "suppressed") == 0)
        return 0;
    *name = strcmp(k, "_score") == 0    ? "score"
            : strcmp(k, "_stage") == 0  ? "stage"
            : strcmp(k, "_unsub") == 0  ? "unsubscribed"
            : strcmp(k, "_suppressed") == 0 ? "suppressed"
                                            : k;
    return 1;
}

/* Set a daemon mark ("unsubscribed", "suppressed") on the lead as the channel sees it. */
static void set_mark(dmsg_t *m, const char *name, const char *value)
{
    for (size_t i = 0; i < m->msg.nlead; i++)
        if (strcmp(m->lead[i].key, name) == 0)
            return;
    m->lead[m->msg.nlead].key = keep(m, name);
    m->lead[m->msg.nlead].value = keep(m, value);
    m->msg.nlead++;
}

/* A message as decided: the lead as it stands after the decision. */
static dmsg_t *dmsg_from_decision(part_t *pt, const nt_lead_t *lead, const nt_run_t *run,
                                  const nt_decision_t *d, const nt_outmsg_t *o)
{
    dmsg_t *m = dmsg_alloc(pt, 9 + 2 * o->nparams + 2 * lead->nfields, o->nparams,
                           lead->nfields);
    size_t nl = 0;

    if (!m)
        return NULL;
    m->msg.id = keep(m, o->id);
    m->msg.lead_id = keep(m, lead->id);
    m->msg.plan_id = keep(m, run->plan_id);
    m->msg.plan_version = run->version;
    m->msg.node_id = keep(m, o->node);
    m->msg.visit = o->visit;
    for (size_t i = 0; i < o->nparams; i++) {
        m->params[i].key = keep(m, o->params[i].key);
        m->params[i].value = keep(m, o->params[i].value);
    }
    m->msg.params = m->params;
    m->msg.nparams = o->nparams;
    for (size_t i = 0; i < lead->nfields; i++) {
        const char *name;

        if (!lead_field_for_channel(lead->fields[i].key, &name))
            continue;
        m->lead[nl].key = keep(m, name);
        m->lead[nl].value = keep(m, lead->fields[i].value);
        nl++;
    }
    m->msg.lead = m->lead;
    m->msg.nlead = nl;
    m->mod = nt_modules_find(pt->w->mods, o->channel);
    /* What apply.lua will have made of the run once it commits this decision. */
    if (d->status == NT_RUN_ACTIVE && nt_lead_copy(&m->snap_lead, lead) == 0) {
        m->has_snap = 1;
        m->snap_run = *run;
        m->snap_run.plan_id = m->msg.plan_id;
        m->snap_run.node = keep(m, d->node ? d->node : "");
        m->snap_run.token = run->token + 1;
        m->snap_run.visit = d->visit;
        m->snap_run.due_ms = d->due_ms;
        m->snap_run.status = NT_RUN_ACTIVE;
    }
    return m;
}

/* A message read back from the outbox (taking a partition over): {id, fields, leadfields}. */
static dmsg_t *dmsg_from_reply(part_t *pt, const redisReply *e)
{
    const redisReply *f = e->element[1], *lf = e->element[2];
    size_t np = f->elements > 14 ? (f->elements - 14) / 2 : 0, nl = 0;
    dmsg_t *m = dmsg_alloc(pt, 8 + f->elements + lf->elements, np, lf->elements / 2);
    const char *s;

    if (!m)
        return NULL;
    m->entry = strdup(rstr(e->element[0]));
    if (!m->entry) {
        dmsg_free(m);
        return NULL;
    }
    m->msg.id = keep(m, field(f, "id"));
    m->msg.lead_id = keep(m, field(f, "l"));
    m->msg.plan_id = keep(m, field(f, "p"));
    m->msg.plan_version = (uint32_t)strtoul((s = field(f, "v")) ? s : "0", NULL, 10);
    m->msg.node_id = keep(m, field(f, "n"));
    m->msg.visit = (uint32_t)strtoul((s = field(f, "vi")) ? s : "0", NULL, 10);
    for (size_t i = 14; i + 1 < f->elements; i += 2) {
        m->params[m->msg.nparams].key = keep(m, rstr(f->element[i]));
        m->params[m->msg.nparams].value = keep(m, rstr(f->element[i + 1]));
        m->msg.nparams++;
    }
    m->msg.params = m->params;
    for (size_t i = 0; i + 1 < lf->elements; i += 2) {
        const char *name;

        if (!lead_field_for_channel(rstr(lf->element[i]), &name))
            continue;
        m->lead[nl].key = keep(m, name);
        m->lead[nl].value = keep(m, rstr(lf->element[i + 1]));
        nl++;
    }
    m->msg.lead = m->lead;
    m->msg.nlead = nl;
    m->mod = nt_modules_find(pt->w->mods, (s = field(f, "c")) ? s : "");
    return m;
}

/* Have the next batch pick the outcomes up (also while shutting down: a delivered message's
 * outcome is worth recording before the partition is let go). */
static void kick(part_t *pt)
{
    if (pt->w->stopping) {
        if (!pt->busy && pt->ndone)
            fetch(pt);
        check_stopped(pt->w);
    } else if (pt->busy) {
        pt->again = 1;
    } else {
        part_poll(pt, 0);
    }
}

/* ---- dispatch ----------------------------------------------------------------------------- */

static void dispatch_one(dmsg_t *m);
static void plugin_dispatch(dmsg_t *m);

static breaker_t *breaker_of(nt_worker_t *w, const nt_module_t *mod)
{
    for (size_t i = 0; mod && i < w->nbrk; i++)
        if (w->brk[i].mod == mod)
            return &w->brk[i];
    return NULL;
}

static void hold(breaker_t *b, dmsg_t *m)
{
    if (!m->parked) {
        m->parked = 1;
        b->held++;
    }
}

/* A held message of b's channel, released from hold; NULL when none. */
static dmsg_t *unhold_one(breaker_t *b)
{
    nt_worker_t *w = b->w;

    for (unsigned i = 0; b->held && i < w->nparts; i++)
        for (dmsg_t *m = w->parts[i].msgs; m; m = m->next)
            if (m->parked && m->mod == b->mod) {
                m->parked = 0;
                b->held--;
                return m;
            }
    return NULL;
}

/* The breaker's timer: release what was held once the breaker has closed (never from inside
 * the plugin's own completion, which is where a breaker closes), or probe once the cool-down
 * is over. */
static void on_probe(evutil_socket_t fd, short what, void *arg)
{
    breaker_t *b = arg;
    dmsg_t *m;

    (void)fd;
    (void)what;
    if (b->state == NT_BRK_CLOSED) {
        while ((m = unhold_one(b)))
            plugin_dispatch(m);
        return;
    }
    if (b->state != NT_BRK_OPEN || b->w->stopping)
        return;
    m = unhold_one(b);
    if (m) {
        b->state = NT_BRK_PROBING;
        nt_log_info("dispatch", "channel %s: probing with %s", b->mod->ops->name, m->msg.id);
        plugin_dispatch(m);
    }
}

static void breaker_open(breaker_t *b, const char *why)
{
    struct timeval tv;

    b->cooldown_ms = b->cooldown_ms ? b->cooldown_ms * 2 : 1000;
    if (b->cooldown_ms > 60000)
        b->cooldown_ms = 60000;
    b->open_until = nt_real_ms() + b->cooldown_ms;
    if (b->state == NT_BRK_CLOSED)
        nt_log_warn("dispatch", "channel %s looks down (%s): holding its messages, probing in %lld ms",
                    b->mod->ops->name, why, (long long)b->cooldown_ms);
    b->state = NT_BRK_OPEN;
    tv.tv_sec = b->cooldown_ms / 1000;
    tv.tv_usec = (b->cooldown_ms % 1000) * 1000;
    if (b->ev)
        evtimer_add(b->ev, &tv);
}

/* The channel answered (delivered, or refused for good): it is up. */
static void breaker_ok(breaker_t *b)
{
    b->fails = 0;
    if (b->state == NT_BRK_CLOSED)
        return;
    nt_log_info("dispatch", "channel %s is back: releasing %zu held messages", b->mod->ops->name,
                b->held);
    b->state = NT_BRK_CLOSED;
    b->cooldown_ms = 0;
    if (b->ev) {
        evtimer_del(b->ev);
        event_active(b->ev, EV_TIMEOUT, 0);
    }
}

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

    breaker_t *b = breaker_of(w, m->mod);

    m->in_plugin = 0;
    if (rc == NT_ECANCELED || !pt->owned) {
        /* Left in the outbox: whoever owns the partition next delivers it. */
        if (b && b->state == NT_BRK_PROBING)
            breaker_open(b, "probe canceled");
        list_remove(&pt->msgs, m);
        pt->nmsgs--;
        dmsg_free(m);
        check_stopped(w);
        return;
    }
    if (b && (rc == NT_EUNAVAIL || rc == NT_ETIMEOUT) && !w->stopping &&
        (b->state == NT_BRK_PROBING || ++b->fails >= NT_BREAKER_THRESHOLD)) {
        /* An outage, not this message's fault: it is held without using up an attempt. */
        breaker_open(b, detail ? detail : nt_strerror(rc));
        hold(b, m);
        return;
    }
    if (b && rc != NT_EUNAVAIL && rc != NT_ETIMEOUT)
        breaker_ok(b);
    if ((rc == NT_EUNAVAIL || rc == NT_ETIMEOUT) && m->attempt < w->cfg->dispatch_retries &&
        !w->stopping) {
        /* Exponential backoff with jitter: about 200 ms, 400 ms, ... at most 60 s. */
        int64_t ms = 200LL << (m->attempt - 1 > 8 ? 8 : m->attempt - 1);
        struct timeval tv;

        if (ms > 60000)
            ms = 60000;
        ms = ms / 2 + (int64_t)(random() % (ms / 2 + 1));
        tv.tv_sec = ms / 1000;
        tv.tv_usec = (ms % 1000) * 1000;
        nt_metrics.messages_retried++;
        nt_log_info("dispatch", "%s: %s, retry %d in %lld ms", m->msg.id,
                    detail ? detail : nt_strerror(rc), m->attempt, (long long)ms);
        m->attempt++;
        if (!m->retry_ev)
            m->retry_ev = evtimer_new(w->base, on_retry, m);
        if (m->retry_ev)
            evtimer_add(m->retry_ev, &tv);
        return;
    }
    if ((rc == NT_EUNAVAIL || rc == NT_ETIMEOUT) && w->stopping) {
        list_remove(&pt->msgs, m);
        pt->nmsgs--;
        dmsg_free(m);
        check_stopped(w);
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
    shed_payload(m);
    list_remove(&pt->msgs, m);
    pt->nmsgs--;
    list_push(&pt->done, m);
    pt->ndone++;
    kick(pt);
}

static void dispatch_one(dmsg_t *m)
{
    breaker_t *b;

    if (!m->mod || !m->mod->started) {
        /* No such channel running here: keep it, try again later. */
        on_channel_done(m, NT_EUNAVAIL, NULL, "channel not running");
        return;
    }
    b = breaker_of(m->pt->w, m->mod);
    if (b && b->state != NT_BRK_CLOSED) {
        if (b->state == NT_BRK_OPEN && nt_real_ms() >= b->open_until) {
            b->state = NT_BRK_PROBING;
            if (b->ev)
                evtimer_del(b->ev);
        } else {
            hold(b, m);
            return;
        }
    }
    plugin_dispatch(m);
}

/* Hand m to its plugin now. */
static void plugin_dispatch(dmsg_t *m)
{
    nt_rc_t rc;

    m->msg.attempt = m->attempt;
    m->in_plugin = 1;
    rc = m->mod->ops->dispatch(m->mod->state, &m->msg, on_channel_done, m);
    if (rc != NT_OK && rc != NT_AGAIN && m->in_plugin)
        on_channel_done(m, rc, NULL, "dispatch refused");
}

/* Hand a committed message to its channel. */
static void dispatch_new(part_t *pt, dmsg_t *m)
{
    list_push(&pt->msgs, m);
    pt->nmsgs++;
    dispatch_one(m);
}

static int in_memory(const part_t *pt, const char *entry)
{
    for (const dmsg_t *m = pt->msgs; m; m = m->next)
        if (m->entry && strcmp(m->entry, entry) == 0)
            return 1;
    for (const dmsg_t *m = pt->done; m; m = m->next)
        if (m->entry && strcmp(m->entry, entry) == 0)
            return 1;
    for (size_t i = 0; i < pt->ntaken; i++)
        if (pt->taken[i]->entry && strcmp(pt->taken[i]->entry, entry) == 0)
            return 1;
    return 0;
}

/* Have the whole outbox read again, from the start of its scan: a scan already under way
 * may miss what was committed after it began. */
static void outbox_restart(part_t *pt)
{
    pt->orecover = 1;
    memcpy(pt->ocursor, "0", 2);
    if (pt->obusy)
        pt->orestart = 1;
}

static void on_outbox(nt_rc_t rc, redisReply *reply, void *arg)
{
    part_t *pt = arg;

    pt->obusy = 0;
    if (rc != NT_OK || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
        if (pt->orestart)
            memcpy(pt->ocursor, "0", 2);
        pt->orestart = 0;
        check_stopped(pt->w);
        return;
    }
    if (is_fenced(reply)) {
        lose_partition(pt, "fencing token changed");
        check_stopped(pt->w);
        return;
    }
    for (size_t i = 2; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        dmsg_t *m;

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 3 ||
            e->element[1]->type != REDIS_REPLY_ARRAY || in_memory(pt, rstr(e->element[0])))
            continue;
        m = dmsg_from_reply(pt, e);
        if (!m)
            continue;
        dispatch_new(pt, m);
    }
    /* Go on until the scan has come round (cursor "0"), or from the start when asked to
     * while this read was under way. */
    snprintf(pt->ocursor, sizeof(pt->ocursor), "%s", pt->orestart ? "0" : rstr(reply->element[1]));
    pt->orecover = pt->orestart || strcmp(pt->ocursor, "0") != 0;
    pt->orestart = 0;
    if (pt->orecover)
        outbox_fetch(pt);
    check_stopped(pt->w);
}

/* Read what the outbox holds that is not in memory (after a take-over, or an apply whose answer
 * never came), a slice of the hash scan at a time. */
static void outbox_fetch(part_t *pt)
{
    nt_worker_t *w = pt->w;
    char n_s[16];
    const char *argv[7];

    /* Never while a batch is in flight: its apply may have committed messages whose ids have
     * not come back yet, which a read would deliver a second time. Commands run in order, so a
     * read sent now sees only what earlier applies committed. */
    if (pt->obusy || pt->busy || !pt->owned || w->stopping || !pt->orecover ||
        pt->nmsgs >= w->cfg->batch)
        return;
    snprintf(n_s, sizeof(n_s), "%u", w->cfg->batch);
    argv[0] = pt->k_lease;
    argv[1] = pt->k_outbox;
    argv[2] = w->id;
    argv[3] = pt->tok;
    argv[4] = n_s;
    argv[5] = pt->prefix;
    argv[6] = pt->ocursor[0] ? pt->ocursor : "0";
    pt->obusy = 1;
    if (nt_redis_script(w->redis, "outbox", on_outbox, pt, 2, 7, argv, NULL) != NT_OK)
        pt->obusy = 0;
}

/* ---- decide and apply --------------------------------------------------------------------- */

typedef struct dinfo {
    char done;              /* the decision ends its run */
    uint32_t npath;
    uint32_t nmsgs;         /* its messages, in batch_t.msgs after those of the ones before */
    int64_t enrol_real_ms;  /* the run's, for the enrol-to-exit latency */
} dinfo_t;

typedef struct batch {
    part_t *pt;
    nt_mp_t dec, leads, fixes, oids; /* the first four parts of the apply argument */
    nt_mp_t rec;            /* scratch: one message's outbox record */
    uint32_t ndec, nleads, nfixes, noids;
    dinfo_t *info;          /* per decision */
    dmsg_t **msgs;          /* per committed message, in decision order */
    size_t nmsgs, cmsgs;
    dmsg_t **outs;          /* outcomes this batch consumes */
    size_t nouts;
    size_t nitems;
    nt_funnel_t funnel;     /* the decisions' funnel counters */
    int64_t next_due;
    int64_t now;            /* plan ms the batch is decided and applied at */
} batch_t;

static void batch_free(batch_t *b)
{
    if (!b)
        return;
    nt_mp_fini(&b->dec);
    nt_mp_fini(&b->leads);
    nt_mp_fini(&b->fixes);
    nt_mp_fini(&b->oids);
    nt_mp_fini(&b->rec);
    nt_funnel_fini(&b->funnel);
    for (size_t i = 0; i < b->nmsgs; i++)
        dmsg_free(b->msgs[i]);
    free(b->msgs);
    free(b->outs);
    free(b->info);
    free(b);
}

/* Give outcomes back to the partition for a later batch. */
static void give_back(part_t *pt, dmsg_t **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!v[i])
            continue;
        list_push(&pt->done, v[i]);
        pt->ndone++;
        v[i] = NULL;
    }
}

/* A timeline line as apply.lua appends it, "<at>|<kind>|<text>\n"; "" when there is no text. */
static void mp_line(nt_mp_t *m, int64_t at, const char *kind, const char *text, size_t len)
{
    char head[48];
    int n;

    if (!text || len == 0) {
        nt_mp_str(m, "", 0);
        return;
    }
    n = snprintf(head, sizeof(head), "%lld|%s|", (long long)at, kind);
    nt_mp_str_head(m, (size_t)n + len + 1);
    nt_mp_raw(m, head, (size_t)n);
    nt_mp_raw(m, text, len);
    nt_mp_raw(m, "\n", 1);
}

static int add_decision(batch_t *b, const nt_lead_t *lead, const nt_run_t *run,
                        const nt_decision_t *d, const char *prefix)
{
    nt_mp_t *m = &b->dec;
    char *h = NULL;
    size_t hl = 0;
    FILE *hf;
    dinfo_t *info;
    int done = d->status == NT_RUN_DONE;

    info = realloc(b->info, sizeof(*b->info) * (b->ndec + 1));
    if (!info)
        return -1;
    b->info = info;
    info[b->ndec].done = (char)done;
    info[b->ndec].npath = (uint32_t)d->npath;
    info[b->ndec].nmsgs = (uint32_t)d->nmsgs;
    info[b->ndec].enrol_real_ms = run->enrol_real_ms;
    if (b->nmsgs + d->nmsgs > b->cmsgs) {
        size_t c = (b->cmsgs ? b->cmsgs * 2 : 64) + d->nmsgs;
        dmsg_t **v = realloc(b->msgs, sizeof(*v) * c);

        if (!v)
            return -1;
        b->msgs = v;
        b->cmsgs = c;
    }
    hf = open_memstream(&h, &hl);
    if (!hf)
        return -1;
    if (prefix)
        fprintf(hf, "%s", prefix);
    for (size_t i = 0; i < d->nnotes; i++)
        fprintf(hf, "%s%s", i || prefix ? "; " : "", d->notes[i]);
    if (done)
        fprintf(hf, "%sleft plan %s: %s", d->nnotes || prefix ? "; " : "", run->plan_id,
                d->exit_reason ? d->exit_reason : "");
    fclose(hf);
    /* One timeline entry is one line: attribute values quoted in notes may hold newlines. */
    for (char *c = h; c && *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ' ';

    nt_mp_array(m, 13);
    nt_mp_cstr(m, lead->id);
    nt_mp_cstr(m, run->plan_id);
    nt_mp_int(m, (long long)run->token);
    nt_apply_run_fields(m, run, d, b->now);
    nt_apply_timer(m, run, d);
    nt_apply_lead_fields(m, run, d);
    nt_mp_int(m, d->score_delta);
    nt_apply_list(m, (uint32_t)(3 * d->nmsgs));
    for (size_t i = 0; i < d->nmsgs; i++) {
        const nt_outmsg_t *o = &d->msgs[i];

        nt_mp_t *r = &b->rec;

        /* The outbox record, stored as it is (apply.lua, outbox.lua). */
        nt_mp_reset(r);
        nt_mp_array(r, 7);
        nt_mp_cstr(r, lead->id);
        nt_mp_cstr(r, run->plan_id);
        nt_mp_int(r, run->version);
        nt_mp_cstr(r, o->node);
        nt_mp_int(r, o->visit);
        nt_mp_cstr(r, o->channel);
        nt_mp_array(r, (uint32_t)(2 * o->nparams));
        for (size_t j = 0; j < o->nparams; j++) {
            nt_mp_cstr(r, o->params[j].key);
            nt_mp_cstr(r, o->params[j].value ? o->params[j].value : "");
        }
        if (r->oom) {
            free(h);
            return -1;
        }
        dmsg_t *dm = dmsg_from_decision(b->pt, lead, run, d, o);

        /* Consent is read at commit only for channels that write to the person (and for one
         * that is not loaded, whose flags are unknown). */
        nt_mp_cstr(m, o->id);
        nt_mp_str(m, r->buf, r->len);
        nt_mp_cstr(m, !dm || !dm->mod || (nt_module_flags(dm->mod) & NT_CHANNEL_CONSENT)
                          ? "c" : "");
        b->msgs[b->nmsgs++] = dm;
    }
    mp_line(m, b->now, "step", h, h ? hl : 0);
    free(h);
    if (nt_funnel_add(&b->funnel, run, d) != 0)
        return -1;
    b->ndec++;
    return m->oom ? -1 : 0;
}

static void add_fix(batch_t *b, const char *lead_id, const nt_run_t *run, int64_t due)
{
    nt_mp_array(&b->fixes, 4);
    nt_mp_cstr(&b->fixes, lead_id);
    nt_mp_cstr(&b->fixes, run->plan_id);
    nt_mp_int(&b->fixes, (long long)run->token);
    nt_mp_int(&b->fixes, due);
    b->nfixes++;
}

/* A lead record: events seen (type, ms), a timeline line, event ids to acknowledge. */
static void add_lead_record(batch_t *b, const char *lead_id, const char *seen_type,
                            const char *seen_ms, const char *hist, const char *event_id)
{
    nt_mp_array(&b->leads, 4);
    nt_mp_cstr(&b->leads, lead_id);
    nt_mp_array(&b->leads, seen_type ? 2 : 0);
    if (seen_type) {
        nt_mp_cstr(&b->leads, seen_type);
        nt_mp_cstr(&b->leads, seen_ms);
    }
    mp_line(&b->leads, b->now, "event", hist, hist ? strlen(hist) : 0);
    nt_mp_array(&b->leads, event_id ? 1 : 0);
    if (event_id)
        nt_mp_cstr(&b->leads, event_id);
    b->nleads++;
}

/* Decide one run; returns 1 when a decision was added. prefix, when not NULL, opens the
 * decision's timeline line (what triggered it). */
static int decide_run(batch_t *b, nt_lead_t *lead, const nt_run_t *run, const nt_trigger_t *trig,
                      int64_t now, const char *prefix)
{
    const nt_plan_t *plan = nt_plans_cached(b->pt->w->plans, run->plan_id, run->version);
    nt_decision_t d;
    nt_rc_t rc;
    int added = 0;

    if (!plan || run->status != NT_RUN_ACTIVE)
        return 0;
    rc = nt_engine_decide(plan, lead, run, trig, now, &d);
    if ((rc == NT_OK || rc == NT_ENOTFOUND) && d.changed) {
        if (add_decision(b, lead, run, &d, prefix) == 0)
            added = 1;
        else
            b->dec.oom = 1; /* half written: the batch is given up and tried again */
    } else if (rc != NT_OK && rc != NT_ENOTFOUND) {
        nt_log_error("worker", "decide %s in %s: %s", lead->id, run->plan_id, nt_strerror(rc));
    }
    nt_decision_fini(&d);
    return added;
}

static void on_plan_loaded(nt_rc_t rc, const nt_plan_t *plan, void *arg)
{
    part_t *pt = arg;

    (void)plan;
    if (rc != NT_OK)
        nt_log_warn("worker", "partition %u: loading a plan failed: %s", pt->p, nt_strerror(rc));
    if (--pt->waiting_plans == 0) {
        unbusy(pt);
        if (pt->w->stopping)
            kick(pt);
        else
            part_poll(pt, rc == NT_OK ? 0 : 1000);
    }
}

static void need_plan(part_t *pt, const char *plan, const redisReply *runf)
{
    const char *v = field(runf, "v");
    uint32_t ver = (uint32_t)strtoul(v ? v : "0", NULL, 10);

    if (!v || nt_plans_cached(pt->w->plans, plan, ver))
        return;
    pt->waiting_plans++;
    if (nt_plans_get(pt->w->plans, plan, ver, on_plan_loaded, pt) != NT_OK)
        pt->waiting_plans--;
}

/* Ask for the plans of this batch that are not cached yet. Returns 1 when some are coming (the
 * batch is fetched again once they are in), 0 when all are there. */
static int load_missing_plans(part_t *pt, const redisReply *reply)
{
    const redisReply *timers = reply->element[2], *events = reply->element[3],
                     *outcomes = reply->element[4];

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
    for (size_t i = 0; i < outcomes->elements; i++) {
        const redisReply *it = outcomes->element[i];
        long long k = it->type == REDIS_REPLY_ARRAY && it->elements == 3
                          ? rint_(it->element[0]) : -1;

        /* (snapshot outcomes, a bare index, were decided on a plan this worker has) */
        if (k >= 0 && (size_t)k < pt->ntaken)
            need_plan(pt, pt->taken[k]->msg.plan_id, it->element[2]);
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
    nt_worker_t *w = pt->w;
    int full = b->nitems >= w->cfg->batch;

    unbusy(pt);
    if (rc != NT_OK || reply->type != REDIS_REPLY_ARRAY) {
        /* It may have run without its answer reaching us: read the outbox back before anything
         * committed there is lost from sight; outcomes are tried again. */
        nt_log_warn("worker", "partition %u: apply failed: %s", pt->p,
                    rc != NT_OK ? nt_strerror(rc)
                                : (reply->type == REDIS_REPLY_ERROR ? reply->str : "bad reply"));
        give_back(pt, b->outs, b->nouts);
        outbox_restart(pt);
        part_poll(pt, 200);
    } else if (is_fenced(reply)) {
        lose_partition(pt, "fencing token changed");
        for (size_t i = 0; i < b->nouts; i++)
            dmsg_free(b->outs[i]);
    } else if (reply->elements == 3 && reply->element[1]->type == REDIS_REPLY_ARRAY &&
               reply->element[2]->type == REDIS_REPLY_ARRAY) {
        const redisReply *res = reply->element[1], *marks = reply->element[2];
        size_t mi = 0;

        /* The lead's suppression as it stood when a message was committed: a snapshot carried
         * over from an earlier step may predate an unsubscribe. */
        for (size_t i = 0; i + 1 < marks->elements; i += 2) {
            long long k = rint_(marks->element[i]);
            const char *mk = rstr(marks->element[i + 1]);

            if (k < 1 || (size_t)k > b->nmsgs || !b->msgs[k - 1])
                continue;
            if (strchr(mk, 'u'))
                set_mark(b->msgs[k - 1], "unsubscribed", "1");
            if (strchr(mk, 's'))
                set_mark(b->msgs[k - 1], "suppressed", "1");
        }
        for (size_t i = 0; i < b->ndec; i++) {
            int applied = i < res->elements && rint_(res->element[i]) == 1;

            if (!applied) {
                nt_metrics.conflicts++;
            } else {
                nt_metrics.transitions++;
                nt_metrics.steps += b->info[i].npath;
                if (b->info[i].done) {
                    nt_metrics.runs_exited++;
                    if (b->info[i].enrol_real_ms > 0)
                        nt_metrics_latency(nt_real_ms() - b->info[i].enrol_real_ms);
                }
            }
            for (uint32_t j = 0; j < b->info[i].nmsgs && mi < b->nmsgs; j++, mi++) {
                dmsg_t *m = b->msgs[mi];

                b->msgs[mi] = NULL;
                if (!m || !applied || w->stopping) {
                    /* Not committed, or left for whoever owns the partition next. */
                    if (m && applied)
                        nt_metrics.messages_committed++;
                    dmsg_free(m);
                    continue;
                }
                nt_metrics.messages_committed++;
                m->entry = strdup(m->msg.id);
                if (!m->entry) {
                    dmsg_free(m);
                    outbox_restart(pt);
                    continue;
                }
                dispatch_new(pt, m);
            }
        }
        for (size_t i = 0; i < b->nouts; i++)
            dmsg_free(b->outs[i]);
        nt_metrics.events_applied += b->nleads;
        if (pt->orecover)
            outbox_fetch(pt);
        if (w->stopping)
            kick(pt);
        else if (full || pt->again || pt->ndone)
            part_poll(pt, 0);
        else
            part_idle(pt, b->next_due);
    } else {
        nt_log_error("worker", "partition %u: apply answered oddly", pt->p);
        give_back(pt, b->outs, b->nouts);
        part_poll(pt, 200);
    }
    b->nouts = 0;
    pt->again = 0;
    batch_free(b);
    check_stopped(w);
}

static void decide_batch(part_t *pt, const redisReply *reply)
{
    nt_worker_t *w = pt->w;
    const redisReply *timers = reply->element[2], *events = reply->element[3],
                     *outcomes = reply->element[4];
    int64_t now = nt_now_ms();
    batch_t *b = calloc(1, sizeof(*b));
    char now_s[24], hmax[16];
    const char *argv[10];
    size_t lens[10];
    nt_mp_t all;
    nt_rc_t rc;

    if (!b) {
        give_back(pt, pt->taken, pt->ntaken);
        pt->ntaken = 0;
        unbusy(pt);
        part_poll(pt, 200);
        return;
    }
    b->pt = pt;
    nt_funnel_init(&b->funnel);
    b->next_due = rint_(reply->element[1]);
    b->now = now;
    b->nitems = timers->elements + events->elements + outcomes->elements;
    b->outs = calloc(pt->ntaken + 1, sizeof(*b->outs));

    /* Outcomes of messages delivered from memory. */
    for (size_t i = 0; b->outs && i < outcomes->elements; i++) {
        const redisReply *it = outcomes->element[i];
        int own = it->type == REDIS_REPLY_INTEGER;
        long long k = own ? it->integer
                          : it->type == REDIS_REPLY_ARRAY && it->elements == 3
                                ? rint_(it->element[0]) : -1;
        dmsg_t *m;
        nt_kv_t attrs[5];
        char visit[16], hist[200];
        nt_trigger_t trig = {0};
        nt_lead_t lead;
        nt_run_t run;

        if (k < 0 || (size_t)k >= pt->ntaken || !pt->taken[k])
            continue;
        m = pt->taken[k];
        pt->taken[k] = NULL;
        b->outs[b->nouts++] = m;
        nt_mp_cstr(&b->oids, m->entry);
        b->noids++;
        snprintf(visit, sizeof(visit), "%u", m->msg.visit);
        attrs[0] = (nt_kv_t){"plan", m->msg.plan_id};
        attrs[1] = (nt_kv_t){"node", m->msg.node_id};
        attrs[2] = (nt_kv_t){"visit", visit};
        attrs[3] = (nt_kv_t){"outcome", m->outcome ? m->outcome : "sent"};
        attrs[4] = (nt_kv_t){"detail", m->detail ? m->detail : ""};
        trig.kind = NT_TRIG_EVENT;
        trig.type = NT_EVENT_OUTCOME;
        trig.attrs = attrs;
        trig.nattrs = 5;
        snprintf(hist, sizeof(hist), "%.60s: %.60s", m->msg.node_id, attrs[3].value);
        if (own) {
            /* Decided on the snapshot this worker committed; the state token still guards. */
            if (!decide_run(b, &m->snap_lead, &m->snap_run, &trig, now, NULL))
                add_lead_record(b, m->msg.lead_id, NULL, NULL, hist, NULL);
            continue;
        }
        if (it->element[1]->elements == 0)
            continue; /* the lead is gone: the entry is deleted all the same */
        if (lead_from_reply(&lead, m->msg.lead_id, it->element[1]) != 0) {
            nt_lead_fini(&lead);
            continue;
        }
        run_from_reply(&run, m->msg.plan_id, it->element[2]);
        /* The decision's own line says which outcome moved the run. */
        if (!decide_run(b, &lead, &run, &trig, now, NULL))
            add_lead_record(b, m->msg.lead_id, NULL, NULL, hist, NULL);
        nt_lead_fini(&lead);
    }
    /* Outcomes the fetch left for later (a lead already in this batch). */
    give_back(pt, pt->taken, pt->ntaken);
    pt->ntaken = 0;

    for (size_t i = 0; i < timers->elements; i++) {
        const redisReply *it = timers->element[i];
        const char *lead_id;
        nt_lead_t lead;
        nt_run_t run;
        nt_trigger_t trig = {0};
        char start[96];

        if (it->type != REDIS_REPLY_ARRAY || it->elements != 4)
            continue;
        lead_id = rstr(it->element[0]);
        run_from_reply(&run, rstr(it->element[1]), it->element[3]);
        if (lead_from_reply(&lead, lead_id, it->element[2]) != 0) {
            nt_lead_fini(&lead);
            continue;
        }
        trig.kind = run.node[0] == '\0' ? NT_TRIG_START : NT_TRIG_TIMER;
        if (trig.kind == NT_TRIG_START)
            snprintf(start, sizeof(start), "enrolled in %.64s v%u", run.plan_id, run.version);
        if (run.due_ms && run.due_ms <= now) {
            int64_t lag = now - run.due_ms;

            nt_metrics.timers_fired++;
            nt_metrics.timer_lag_ms_sum += (uint64_t)lag;
            if (lag > nt_metrics.timer_lag_ms_max)
                nt_metrics.timer_lag_ms_max = lag;
        }
        if (!decide_run(b, &lead, &run, &trig, now, trig.kind == NT_TRIG_START ? start : NULL))
            add_fix(b, lead_id, &run,
                    run.status == NT_RUN_ACTIVE && run.due_ms > now ? run.due_ms : 0);
        nt_lead_fini(&lead);
    }

    for (size_t i = 0; i < events->elements; i++) {
        const redisReply *it = events->element[i], *ef, *lf, *runs;
        const char *eid, *lead_id, *type, *mach, *at;
        nt_kv_t *attrs = NULL;
        size_t nattrs = 0;
        nt_trigger_t trig = {0};
        nt_lead_t lead;
        char hist[200];

        if (it->type != REDIS_REPLY_ARRAY || it->elements != 5)
            continue;
        eid = rstr(it->element[0]);
        lead_id = rstr(it->element[1]);
        ef = it->element[2];
        lf = it->element[3];
        runs = it->element[4];
        type = field(ef, "t");
        mach = field(ef, "m");
        at = field(ef, "at");
        if (!type || lf->elements == 0) {
            add_lead_record(b, lead_id, NULL, NULL, NULL, eid); /* unknown lead: dropped */
            continue;
        }
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
        trig.machine = mach && strcmp(mach, "1") == 0;
        if (lead_from_reply(&lead, lead_id, lf) != 0) {
            nt_lead_fini(&lead);
            free(attrs);
            add_lead_record(b, lead_id, NULL, NULL, NULL, eid);
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
            add_lead_record(b, lead_id, NULL, NULL, hist, eid);
        } else {
            snprintf(hist, sizeof(hist), "event %.64s%s", type, trig.machine ? " (machine)" : "");
            if (!trig.machine) {
                char key[80];

                snprintf(key, sizeof(key), "e:%.70s", type);
                nt_lead_set(&lead, key, at ? at : "0");
            }
            add_lead_record(b, lead_id, trig.machine ? NULL : type, at ? at : "0", hist, eid);
        }
        for (size_t j = 0; j + 1 < runs->elements; j += 2) {
            nt_run_t run;

            run_from_reply(&run, rstr(runs->element[j]), runs->element[j + 1]);
            decide_run(b, &lead, &run, &trig, now, NULL);
        }
        nt_lead_fini(&lead);
        free(attrs);
    }

    if (b->ndec == 0 && b->nleads == 0 && b->nfixes == 0 && b->noids == 0) {
        int full = b->nitems >= w->cfg->batch;
        int64_t next_due = b->next_due;

        batch_free(b);
        unbusy(pt);
        outbox_fetch(pt);
        if (w->stopping)
            kick(pt);
        else if (full || pt->again || pt->ndone)
            part_poll(pt, 0);
        else
            part_idle(pt, next_due);
        pt->again = 0;
        check_stopped(w);
        return;
    }
    {
        nt_mp_t *sect[4] = {&b->dec, &b->leads, &b->fixes, &b->oids};
        uint32_t cnt[4] = {b->ndec, b->nleads, b->nfixes, b->noids};

        nt_mp_init(&all);
        nt_mp_array(&all, 6);
        for (int s = 0; s < 4; s++) {
            nt_mp_array(&all, cnt[s]);
            nt_mp_raw(&all, sect[s]->buf, sect[s]->len);
        }
        if (nt_funnel_pack(&b->funnel, &all) != 0)
            all.oom = 1;
    }
    if (all.oom || b->dec.oom || b->leads.oom || b->fixes.oom || b->oids.oom) {
        nt_mp_fini(&all);
        give_back(pt, b->outs, b->nouts);
        b->nouts = 0;
        batch_free(b);
        unbusy(pt);
        part_poll(pt, 200);
        return;
    }
    snprintf(now_s, sizeof(now_s), "%lld", (long long)now);
    snprintf(hmax, sizeof(hmax), "%d", w->cfg->timeline_max > 0 ? w->cfg->timeline_max : 1);
    argv[0] = pt->k_lease;
    argv[1] = pt->k_timers;
    argv[2] = pt->k_events;
    argv[3] = pt->k_outbox;
    argv[4] = w->id;
    argv[5] = pt->tok;
    argv[6] = now_s;
    argv[7] = pt->prefix;
    argv[8] = hmax;
    argv[9] = all.buf;
    for (int i = 0; i < 9; i++)
        lens[i] = strlen(argv[i]);
    lens[9] = all.len;
    rc = nt_redis_script(w->redis, "apply", on_applied, b, 4, 10, argv, lens);
    nt_mp_fini(&all);
    if (rc == NT_OK)
        return;
    give_back(pt, b->outs, b->nouts);
    b->nouts = 0;
    batch_free(b);
    unbusy(pt);
    part_poll(pt, 200);
}

static void on_fetched(nt_rc_t rc, redisReply *reply, void *arg)
{
    part_t *pt = arg;

    if (rc != NT_OK || reply->type != REDIS_REPLY_ARRAY || is_fenced(reply) ||
        reply->elements != 5) {
        if (rc == NT_OK && reply->type == REDIS_REPLY_ERROR)
            nt_log_error("worker", "partition %u: fetch: %s", pt->p, reply->str);
        if (rc == NT_OK && is_fenced(reply)) {
            lose_partition(pt, "fencing token changed");
            for (size_t i = 0; i < pt->ntaken; i++)
                dmsg_free(pt->taken[i]);
        } else {
            give_back(pt, pt->taken, pt->ntaken);
            part_poll(pt, 200);
        }
        pt->ntaken = 0;
        unbusy(pt);
    } else if (load_missing_plans(pt, reply)) {
        give_back(pt, pt->taken, pt->ntaken);
        pt->ntaken = 0;
        return; /* busy until the plans are in; then fetched again */
    } else {
        decide_batch(pt, reply);
        return;
    }
    check_stopped(pt->w);
}

static void fetch(part_t *pt)
{
    nt_worker_t *w = pt->w;
    char now_s[24], n_s[16], idle_s[16];
    const char **argv;
    size_t k = 0, n;
    dmsg_t *m;

    if (pt->busy || !pt->owned || (w->stopping && pt->ndone == 0)) {
        pt->again = pt->busy;
        return;
    }
    if (w->active >= NT_WORKER_MAX_ACTIVE) {
        /* Redis runs one script at a time: more batches in flight only queue up behind each
         * other and age towards the command timeout. Wait for a slot. */
        pt->queued = 1;
        return;
    }
    pt->queued = 0;
    n = pt->ndone < w->cfg->batch ? pt->ndone : w->cfg->batch;
    argv = malloc(sizeof(*argv) * (10 + 2 * n));
    pt->taken = realloc(pt->taken, sizeof(*pt->taken) * (n + 1));
    if (!argv || !pt->taken) {
        free(argv);
        part_poll(pt, 500);
        return;
    }
    snprintf(now_s, sizeof(now_s), "%lld", (long long)nt_now_ms());
    /* Runs in flight come first: outcomes take their share of the batch and only the rest is
     * filled with new timers and events. Without this a backlog of due timers starts new runs
     * faster than their messages' outcomes are recorded, and those pile up in memory. */
    snprintf(n_s, sizeof(n_s), "%zu", (size_t)w->cfg->batch - n);
    snprintf(idle_s, sizeof(idle_s), "%d", w->cfg->lease_ms);
    argv[k++] = pt->k_lease;
    argv[k++] = pt->k_timers;
    argv[k++] = pt->k_events;
    argv[k++] = w->id;
    argv[k++] = pt->tok;
    argv[k++] = now_s;
    argv[k++] = n_s;
    argv[k++] = pt->prefix;
    argv[k++] = idle_s;
    argv[k++] = w->stopping ? "1" : "0";
    pt->ntaken = 0;
    while (pt->ntaken < n && (m = pt->done)) {
        list_remove(&pt->done, m);
        pt->ndone--;
        pt->taken[pt->ntaken++] = m;
        argv[k++] = m->msg.lead_id;
        /* "": decided from the snapshot in memory; the fetch only keeps the lead's other
         * timers and events out of this batch. */
        argv[k++] = m->has_snap ? "" : m->msg.plan_id;
    }
    busy(pt);
    if (nt_redis_script(w->redis, "fetch", on_fetched, pt, 3, (int)k, argv, NULL) != NT_OK) {
        give_back(pt, pt->taken, pt->ntaken);
        pt->ntaken = 0;
        unbusy(pt);
        part_poll(pt, 500);
    }
    free(argv);
}

/* ---- polling ------------------------------------------------------------------------------ */

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    part_t *pt = arg;

    (void)fd;
    (void)what;
    if (!pt->owned || pt->w->stopping)
        return;
    /* The outbox first: a read sent before the batch sees only what earlier applies committed
     * (one connection, commands in order), and a partition with no other work reads it too. */
    outbox_fetch(pt);
    fetch(pt);
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
            outbox_restart(pt);
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
    w->slot_ev = event_new(w->base, -1, 0, on_slot, w);
    if (!w->id || !w->parts || !w->lease_ev || !w->slot_ev)
        goto nomem;
    w->nbrk = nt_modules_count(w->mods);
    w->brk = calloc(w->nbrk + 1, sizeof(*w->brk));
    if (!w->brk)
        goto nomem;
    for (size_t i = 0; i < w->nbrk; i++) {
        w->brk[i].w = w;
        w->brk[i].mod = nt_modules_at(w->mods, i);
        w->brk[i].ev = evtimer_new(w->base, on_probe, &w->brk[i]);
        if (!w->brk[i].ev)
            goto nomem;
    }
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
        if (!pt->poll_ev)
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

        if (pt->busy || pt->obusy || pt->leasing || pt->ndone ||
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
        /* Outcomes of delivered messages are recorded before the partitions are let go; the
         * poll timers are off, so this periodic check is what gets them fetched. */
        for (unsigned i = 0; i < w->nparts; i++)
            if (w->parts[i].ndone && !w->parts[i].busy)
                fetch(&w->parts[i]);
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
        if (!all_quiet(w)) {
            for (unsigned i = 0; i < w->nparts; i++) {
                const part_t *pt = &w->parts[i];

                if (pt->busy || pt->obusy || pt->leasing || pt->ndone || pt->waiting_plans ||
                    pt->nmsgs)
                    nt_log_warn("worker",
                                "stopping: partition %u still busy=%d obusy=%d leasing=%d "
                                "done=%zu plans=%d msgs=%zu owned=%d",
                                i, pt->busy, pt->obusy, pt->leasing, pt->ndone,
                                pt->waiting_plans, pt->nmsgs, pt->owned);
            }
        }
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
            free(pt->taken);
        }
        free(w->parts);
    }
    if (w->lease_ev)
        event_free(w->lease_ev);
    if (w->slot_ev)
        event_free(w->slot_ev);
    for (size_t i = 0; w->brk && i < w->nbrk; i++)
        if (w->brk[i].ev)
            event_free(w->brk[i].ev);
    free(w->brk);
    if (w->stop_ev)
        event_free(w->stop_ev);
    free_live(w);
    free(w->id);
    free(w);
}

json_t *nt_worker_health(const nt_worker_t *w)
{
    static const char *states[] = {"closed", "open", "probing"};
    size_t inflight = 0;
    json_t *channels = json_object();
    int64_t now = nt_real_ms();

    for (unsigned i = 0; i < w->nparts; i++)
        inflight += w->parts[i].nmsgs;
    for (size_t i = 0; i < w->nbrk; i++) {
        const breaker_t *b = &w->brk[i];

        json_object_set_new(
            channels, b->mod->ops->name,
            json_pack("{s:s, s:b, s:i, s:i, s:I}", "breaker", states[b->state], "started",
                      b->mod->started, "consecutive_failures", (int)b->fails, "held",
                      (int)b->held,
                      "probe_in_ms",
                      (json_int_t)(b->state == NT_BRK_OPEN && b->open_until > now
                                       ? b->open_until - now
                                       : 0)));
    }
    return json_pack("{s:s, s:i, s:i, s:i, s:b, s:o}", "id", w->id, "partitions",
                     (int)w->nparts, "partitions_owned", (int)w->owned, "messages_in_flight",
                     (int)inflight, "stopping", w->stopping, "channels", channels);
}

void nt_worker_lead_changed(nt_worker_t *w, const char *lead_id)
{
    part_t *pt;

    if (!w || !lead_id || w->nparts == 0)
        return;
    pt = &w->parts[nt_partition(lead_id, w->nparts)];
    for (int k = 0; k < 2; k++)
        for (dmsg_t *m = k == 0 ? pt->msgs : pt->done; m; m = m->next)
            if (m->has_snap && strcmp(m->msg.lead_id, lead_id) == 0) {
                nt_lead_fini(&m->snap_lead);
                m->has_snap = 0;
            }
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
