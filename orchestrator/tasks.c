/* The call task store (tasks.h): routing, creation once per message id, SLA escalation. */
#include "tasks.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "clock.h"
#include "keys.h"
#include "lead.h"
#include "log.h"
#include "tz.h"
#include "webhook_sig.h"

#define DEFAULT_CAP 25
#define DEFAULT_TEAM "sales"
#define SLA_BATCH 20             /* overdue tasks looked at per partition and tick */
#define SWEEP_BATCH 100          /* open tasks looked at for expiry per partition and tick */
#define HOOK_BATCH 10            /* manager webhook notifications claimed per partition and tick */
#define HOOK_INFLIGHT_MAX 64     /* POSTs in flight at most; the rest wait in Redis */
#define HOOK_LEASE_SLACK_MS 5000 /* a claim's lease: the POST's timeout and this */
#define HOOK_KEEP_S (7 * 24 * 3600) /* a finished notification's record is kept a week */
#define HOOK_RETRIES 12             /* defaults of channel.call.manager_webhook_* */
#define HOOK_BACKOFF_MS 1000
#define HOOK_BACKOFF_MAX_MS 300000
#define HOOK_TIMEOUT_MS 10000

typedef struct rep {
    char *id;
    char *tz;      /* NULL: UTC */
    int start_min; /* working hours [start, end) local minutes; -1: any time */
    int end_min;
    unsigned days; /* bit 1 = Monday ... bit 7 = Sunday; 0: every day */
    int cap;       /* open tasks at most */
} rep_t;

typedef struct member {
    size_t rep; /* index into reps */
    int weight;
    int cur; /* smooth weighted round-robin state */
} member_t;

typedef struct team {
    char *name;
    member_t *m;
    size_t n;
} team_t;

typedef struct create_req create_req_t;

/* Shared by the SLA scans and escalations in flight, whose Redis replies may come after the
 * store is freed (at the connection's shutdown): they look at t, NULL once it is gone. */
typedef struct life {
    nt_tasks_t *t;
    int refs;
} life_t;

static void life_unref(life_t *l)
{
    if (--l->refs == 0)
        free(l);
}

struct nt_tasks {
    nt_tasks_deps_t d;
    rep_t *reps;
    size_t nreps;
    team_t *teams;
    size_t nteams;
    const char *default_team;
    const char *webhook;     /* channel.call.manager_webhook, or NULL */
    const char *hook_secret; /* channel.call.manager_webhook_secret, or NULL: unsigned */
    long hook_retries;       /* attempts after the first */
    long hook_backoff_ms, hook_backoff_max_ms, hook_timeout_ms;
    int hooks_inflight; /* POSTs on the multi */
    struct event *sla_ev;
    int sla_busy;       /* scripts and reads of the scan in flight */
    long long *sweep_at; /* per partition: the rank in tasks:open the expiry sweep goes on from */
    life_t *life;
    create_req_t *pending;
};

/* --- configuration ---------------------------------------------------------------------- */

int nt_tasks_rep_valid(const char *rep)
{
    size_t n = 0;

    if (!rep || !rep[0])
        return 0;
    for (; rep[n]; n++) {
        unsigned char c = (unsigned char)rep[n];

        if (n >= 64 || !(isalnum(c) || c == '.' || c == '_' || c == '@' || c == '+' || c == '-'))
            return 0;
    }
    return 1;
}

static rep_t *rep_find(const nt_tasks_t *t, const char *id)
{
    for (size_t i = 0; i < t->nreps; i++)
        if (strcmp(t->reps[i].id, id) == 0)
            return &t->reps[i];
    return NULL;
}

static const team_t *team_find(const nt_tasks_t *t, const char *name)
{
    for (size_t i = 0; i < t->nteams; i++)
        if (strcmp(t->teams[i].name, name) == 0)
            return &t->teams[i];
    return NULL;
}

/* The rep named id, added with defaults when new; NULL out of memory. */
static rep_t *rep_get(nt_tasks_t *t, const char *id, int def_cap)
{
    rep_t *r = rep_find(t, id), *v;

    if (r)
        return r;
    v = realloc(t->reps, (t->nreps + 1) * sizeof(*v));
    if (!v)
        return NULL;
    t->reps = v;
    r = &t->reps[t->nreps];
    memset(r, 0, sizeof(*r));
    r->id = strdup(id);
    if (!r->id)
        return NULL;
    r->start_min = -1;
    r->end_min = -1;
    r->cap = def_cap;
    t->nreps++;
    return r;
}

static int fail_cfg(char **errmsg, const char *key, const char *why)
{
    if (errmsg && asprintf(errmsg, "channel.call.%s: %s", key, why) < 0)
        *errmsg = NULL;
    return -1;
}

/* channel.call.rep.<id> "tz=<zone> hours=HH:MM-HH:MM days=12345 cap=N". */
static int parse_rep(nt_tasks_t *t, const char *key, const char *id, const char *value,
                     int def_cap, char **errmsg)
{
    rep_t *r;
    char *copy, *save = NULL, *tok;
    int rc = 0;

    if (!nt_tasks_rep_valid(id))
        return fail_cfg(errmsg, key, "a rep id is 1 to 64 of A-Z a-z 0-9 . _ @ + -");
    r = rep_get(t, id, def_cap);
    copy = strdup(value);
    if (!r || !copy) {
        free(copy);
        return fail_cfg(errmsg, key, "out of memory");
    }
    for (tok = strtok_r(copy, " \t", &save); tok && rc == 0; tok = strtok_r(NULL, " \t", &save)) {
        if (strncmp(tok, "tz=", 3) == 0) {
            if (!nt_tz_valid(tok + 3)) {
                rc = fail_cfg(errmsg, key, "unknown time zone");
                break;
            }
            free(r->tz);
            r->tz = strdup(tok + 3);
        } else if (strncmp(tok, "hours=", 6) == 0) {
            char *dash = strchr(tok + 6, '-');

            if (!dash) {
                rc = fail_cfg(errmsg, key, "hours= is HH:MM-HH:MM");
                break;
            }
            *dash = '\0';
            r->start_min = nt_tz_parse_hhmm(tok + 6);
            r->end_min = nt_tz_parse_hhmm(dash + 1);
            if (r->start_min < 0 || r->end_min < 0 || r->start_min >= r->end_min)
                rc = fail_cfg(errmsg, key, "hours= is HH:MM-HH:MM with start before end");
        } else if (strncmp(tok, "days=", 5) == 0) {
            r->days = 0;
            for (const char *p = tok + 5; *p; p++) {
                if (*p < '1' || *p > '7') {
                    rc = fail_cfg(errmsg, key, "days= is a list of 1 (Monday) to 7 (Sunday)");
                    break;
                }
                r->days |= 1u << (*p - '0');
            }
        } else if (strncmp(tok, "cap=", 4) == 0) {
            char *end;
            long v = strtol(tok + 4, &end, 10);

            if (*end || v < 1 || v > 100000)
                rc = fail_cfg(errmsg, key, "cap= is a number from 1 to 100000");
            else
                r->cap = (int)v;
        } else {
            rc = fail_cfg(errmsg, key, "expected tz=, hours=, days= or cap=");
        }
    }
    free(copy);
    return rc;
}

/* channel.call.team.<name> "<rep>[:weight] ...". */
static int parse_team(nt_tasks_t *t, const char *key, const char *name, const char *value,
                      int def_cap, char **errmsg)
{
    team_t *v, *tm;
    char *copy, *save = NULL, *tok;

    if (!nt_tasks_rep_valid(name))
        return fail_cfg(errmsg, key, "a team name is 1 to 64 of A-Z a-z 0-9 . _ @ + -");
    v = realloc(t->teams, (t->nteams + 1) * sizeof(*v));
    if (!v)
        return fail_cfg(errmsg, key, "out of memory");
    t->teams = v;
    tm = &t->teams[t->nteams];
    memset(tm, 0, sizeof(*tm));
    tm->name = strdup(name);
    copy = strdup(value);
    if (!tm->name || !copy) {
        free(tm->name);
        free(copy);
        return fail_cfg(errmsg, key, "out of memory");
    }
    t->nteams++;
    for (tok = strtok_r(copy, " \t,", &save); tok; tok = strtok_r(NULL, " \t,", &save)) {
        char *colon = strchr(tok, ':');
        long w = 1;
        member_t *m;
        rep_t *r;

        if (colon) {
            char *end;

            *colon = '\0';
            w = strtol(colon + 1, &end, 10);
            if (*end || w < 1 || w > 1000) {
                free(copy);
                return fail_cfg(errmsg, key, "a weight is a number from 1 to 1000");
            }
        }
        if (!nt_tasks_rep_valid(tok)) {
            free(copy);
            return fail_cfg(errmsg, key, "a rep id is 1 to 64 of A-Z a-z 0-9 . _ @ + -");
        }
        r = rep_get(t, tok, def_cap);
        m = realloc(tm->m, (tm->n + 1) * sizeof(*m));
        if (!r || !m) {
            free(copy);
            if (m)
                tm->m = m;
            return fail_cfg(errmsg, key, "out of memory");
        }
        tm->m = m;
        tm->m[tm->n].rep = (size_t)(r - t->reps);
        tm->m[tm->n].weight = (int)w;
        tm->m[tm->n].cur = 0;
        tm->n++;
    }
    free(copy);
    if (tm->n == 0)
        return fail_cfg(errmsg, key, "a team needs at least one rep");
    return 0;
}

/* channel.call.<key>: a number from lo to hi into *out, def when unset. Returns 0 or -1. */
static int cfg_long(const nt_config_t *cfg, const char *key, long def, long lo, long hi, long *out,
                    char **errmsg)
{
    const char *v = nt_config_channel(cfg, "call", key, NULL);
    char *end, why[64];
    long x;

    *out = def;
    if (!v)
        return 0;
    x = strtol(v, &end, 10);
    if (end == v || *end || x < lo || x > hi) {
        snprintf(why, sizeof(why), "a number from %ld to %ld", lo, hi);
        return fail_cfg(errmsg, key, why);
    }
    *out = x;
    return 0;
}

static int load_config(nt_tasks_t *t, char **errmsg)
{
    const nt_config_t *cfg = t->d.cfg;
    const char *capv = nt_config_channel(cfg, "call", "cap", NULL);
    int def_cap = DEFAULT_CAP;

    if (capv) {
        char *end;
        long v = strtol(capv, &end, 10);

        if (*end || v < 1 || v > 100000)
            return fail_cfg(errmsg, "cap", "a number from 1 to 100000");
        def_cap = (int)v;
    }
    t->default_team = nt_config_channel(cfg, "call", "team", DEFAULT_TEAM);
    t->webhook = nt_config_channel(cfg, "call", "manager_webhook", NULL);
    if (t->webhook && !t->webhook[0])
        t->webhook = NULL;
    t->hook_secret = nt_config_channel(cfg, "call", "manager_webhook_secret", NULL);
    if (t->hook_secret && !t->hook_secret[0])
        t->hook_secret = NULL;
    if (t->hook_secret && strlen(t->hook_secret) < 16)
        return fail_cfg(errmsg, "manager_webhook_secret", "at least 16 characters");
    if (cfg_long(cfg, "manager_webhook_retries", HOOK_RETRIES, 0, 100, &t->hook_retries, errmsg) !=
            0 ||
        cfg_long(cfg, "manager_webhook_backoff_ms", HOOK_BACKOFF_MS, 10, 3600000,
                 &t->hook_backoff_ms, errmsg) != 0 ||
        cfg_long(cfg, "manager_webhook_backoff_max_ms", HOOK_BACKOFF_MAX_MS, 10, 86400000,
                 &t->hook_backoff_max_ms, errmsg) != 0 ||
        cfg_long(cfg, "manager_webhook_timeout_ms", HOOK_TIMEOUT_MS, 100, 300000,
                 &t->hook_timeout_ms, errmsg) != 0)
        return -1;
    if (t->hook_backoff_max_ms < t->hook_backoff_ms)
        return fail_cfg(errmsg, "manager_webhook_backoff_max_ms",
                        "at least manager_webhook_backoff_ms");
    if (t->webhook && !t->hook_secret)
        nt_log_warn("tasks", "channel.call.manager_webhook_secret is not set: the manager "
                             "webhook's POSTs go out unsigned");
    /* Teams first (they name the reps), then the reps' own settings. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < cfg->nextra; i++) {
            const char *k = cfg->extra[i].key;
            const char *pre = pass == 0 ? "channel.call.team." : "channel.call.rep.";

            if (strncmp(k, pre, strlen(pre)) != 0)
                continue;
            if ((pass == 0 ? parse_team(t, k + 13, k + strlen(pre), cfg->extra[i].value,
                                        def_cap, errmsg)
                           : parse_rep(t, k + 13, k + strlen(pre), cfg->extra[i].value, def_cap,
                                       errmsg)) != 0)
                return -1;
        }
    }
    /* Rep tokens are reps too: a task can be reassigned to them. */
    for (size_t i = 0; i < cfg->ntokens; i++) {
        const nt_token_t *tk = &cfg->tokens[i];

        if (tk->role && strcmp(tk->role, "rep") == 0 && tk->name && nt_tasks_rep_valid(tk->name) &&
            !rep_get(t, tk->name, def_cap))
            return fail_cfg(errmsg, "rep", "out of memory");
    }
    return 0;
}

int nt_tasks_rep_known(const nt_tasks_t *t, const char *rep)
{
    return t && rep && rep_find(t, rep) != NULL;
}

int nt_tasks_rep_in_team(const nt_tasks_t *t, const char *rep, const char *team)
{
    const team_t *tm = t && team ? team_find(t, team) : NULL;

    if (!tm || !rep)
        return 0;
    for (size_t i = 0; i < tm->n; i++)
        if (strcmp(t->reps[tm->m[i].rep].id, rep) == 0)
            return 1;
    return 0;
}

/* --- keys ------------------------------------------------------------------------------- */

int nt_tasks_id_valid(const char *id)
{
    const char *colon;
    char lead[160];
    size_t n;

    if (!id)
        return 0;
    n = strlen(id);
    if (n == 0 || n > 280)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isgraph((unsigned char)id[i]) || id[i] == '/')
            return 0;
    colon = strchr(id, ':');
    if (!colon || (size_t)(colon - id) >= sizeof(lead))
        return 0;
    memcpy(lead, id, (size_t)(colon - id));
    lead[colon - id] = '\0';
    return nt_lead_id_valid(lead);
}

unsigned nt_tasks_partition(const nt_tasks_t *t, const char *id)
{
    const char *colon = strchr(id, ':');
    size_t n = colon ? (size_t)(colon - id) : strlen(id);

    return nt_crc16(id, n) % t->d.cfg->partitions;
}

char *nt_tasks_key_task(char *buf, unsigned p, const char *id)
{
    snprintf(buf, NT_KEY_MAX, "nt:{%u}:task:%s", p, id);
    return buf;
}

char *nt_tasks_key_set(char *buf, unsigned p, const char *what, const char *name)
{
    if (name)
        snprintf(buf, NT_KEY_MAX, "nt:{%u}:tasks:%s:%s", p, what, name);
    else
        snprintf(buf, NT_KEY_MAX, "nt:{%u}:tasks:%s", p, what);
    return buf;
}

char *nt_tasks_key_hook(char *buf, unsigned p, const char *esc_id)
{
    snprintf(buf, NT_KEY_MAX, "nt:{%u}:hook:%s", p, esc_id);
    return buf;
}

char *nt_tasks_key_rep(char *buf, const char *rep)
{
    snprintf(buf, NT_KEY_MAX, "nt:rep:{%s}", rep);
    return buf;
}

char *nt_tasks_key_holder(char *buf, unsigned p, const char *owner, const char *team)
{
    if (owner && owner[0])
        return nt_tasks_key_set(buf, p, "rep", owner);
    return nt_tasks_key_set(buf, p, "team", team && team[0] ? team : DEFAULT_TEAM);
}

/* --- creation --------------------------------------------------------------------------- */

struct create_req {
    nt_tasks_t *t; /* NULL once cancelled: the late replies only free the request */
    create_req_t *next, *prev;
    int outstanding; /* Redis replies still to come */
    nt_channel_done_fn *done;
    void *done_arg;
    char *id, *lead, *owner, *team;
    const team_t *tm;
    int *ooo, *open; /* per team member */
    int64_t due_in, sla;
    nt_kv_t *f; /* fields: owned copies */
    size_t nf;
};

static void req_unlink(create_req_t *q)
{
    if (!q->t)
        return;
    if (q->prev)
        q->prev->next = q->next;
    else
        q->t->pending = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->next = q->prev = NULL;
}

static void req_free(create_req_t *q)
{
    for (size_t i = 0; i < q->nf; i++) {
        free((char *)q->f[i].key);
        free((char *)q->f[i].value);
    }
    free(q->f);
    free(q->id);
    free(q->lead);
    free(q->owner);
    free(q->team);
    free(q->ooo);
    free(q->open);
    free(q);
}

/* Complete the creation (once) and leave the pending list. */
static void req_finish(create_req_t *q, nt_rc_t rc, const char *outcome, const char *detail)
{
    nt_channel_done_fn *done = q->done;

    req_unlink(q);
    q->t = NULL;
    q->done = NULL;
    if (done)
        done(q->done_arg, rc, outcome, detail);
}

static const char *field(const nt_kv_t *f, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (f[i].key && strcmp(f[i].key, name) == 0)
            return f[i].value;
    return NULL;
}

static int64_t field_ms(const nt_kv_t *f, size_t n, const char *name, int64_t def)
{
    const char *v = field(f, n, name);
    char *end;
    long long x;

    if (!v || !v[0])
        return def;
    x = strtoll(v, &end, 10);
    return *end || x < 0 ? def : (int64_t)x;
}

static void on_counted(nt_rc_t rc, redisReply *reply, void *arg)
{
    (void)rc;
    (void)reply;
    (void)arg;
}

static void on_created(nt_rc_t rc, redisReply *reply, void *arg)
{
    create_req_t *q = arg;
    nt_tasks_t *t = q->t;
    char detail[256];

    if (!t) {
        req_free(q);
        return;
    }
    if (rc != NT_OK || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
        if (rc == NT_OK && reply && reply->type == REDIS_REPLY_ERROR)
            nt_log_error("tasks", "task_create: %s", reply->str);
        req_finish(q, rc == NT_OK ? NT_EUNAVAIL : rc, NULL, "call: the task store failed");
        req_free(q);
        return;
    }
    if (strcmp(reply->element[0]->str, "exists") == 0) {
        const char *o = reply->elements > 1 && reply->element[1]->str ? reply->element[1]->str
                                                                        : "";
        snprintf(detail, sizeof(detail), "task already created (%s%.64s)",
                 o[0] ? "for " : "queued", o);
    } else {
        if (q->owner) {
            char k[NT_KEY_MAX];

            nt_redis_cmd(t->d.redis, on_counted, NULL, "HINCRBY %s open 1",
                         nt_tasks_key_rep(k, q->owner));
            snprintf(detail, sizeof(detail), "task for %.64s", q->owner);
        } else {
            snprintf(detail, sizeof(detail), "task queued for team %.64s", q->team);
        }
        nt_log_info("tasks", "%s: %s", q->id, detail);
    }
    req_finish(q, NT_OK, "task_created", detail);
    req_free(q);
}

/* The due time: now + due_in, moved into the owner's working hours in the owner's zone. */
static int64_t due_at(const nt_tasks_t *t, const char *owner, int64_t now, int64_t due_in)
{
    const rep_t *r = owner ? rep_find(t, owner) : NULL;
    int64_t due = now + due_in, out;

    if (!r || r->start_min < 0)
        return due;
    if (nt_tz_next_window(r->tz ? r->tz : "UTC", due, r->start_min, r->end_min, r->days, &out) ==
        NT_EINVAL)
        return due;
    return out;
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

static void issue_create(create_req_t *q)
{
    nt_tasks_t *t = q->t;
    unsigned p = nt_tasks_partition(t, q->id);
    int64_t now = nt_now_ms(), due = due_at(t, q->owner, now, q->due_in);
    int64_t sla = q->sla > 0 ? now + q->sla : 0;
    char k1[NT_KEY_MAX], k2[NT_KEY_MAX], k3[NT_KEY_MAX], k4[NT_KEY_MAX], dues[24], slas[24],
        nows[24];
    const char *argv[64];
    int argc = 0;
    nt_rc_t rc;

    snprintf(dues, sizeof(dues), "%" PRId64, due);
    snprintf(slas, sizeof(slas), "%" PRId64, sla);
    snprintf(nows, sizeof(nows), "%" PRId64, now);
    argv[argc++] = nt_tasks_key_task(k1, p, q->id);
    argv[argc++] = nt_tasks_key_set(k2, p, "open", NULL);
    argv[argc++] = nt_tasks_key_holder(k3, p, q->owner, q->team);
    argv[argc++] = nt_tasks_key_set(k4, p, "sla", NULL);
    argv[argc++] = q->id;
    argv[argc++] = dues;
    argv[argc++] = slas;
#define F(k, v)                                                                                  \
    do {                                                                                         \
        argv[argc++] = (k);                                                                      \
        argv[argc++] = nz(v);                                                                    \
    } while (0)
    F("lead", q->lead);
    F("plan", field(q->f, q->nf, "plan"));
    F("node", field(q->f, q->nf, "node"));
    F("visit", field(q->f, q->nf, "visit"));
    F("reason", field(q->f, q->nf, "reason"));
    F("points", field(q->f, q->nf, "points"));
    F("priority", field(q->f, q->nf, "priority") ? field(q->f, q->nf, "priority") : "normal");
    F("due", dues);
    F("sla", slas);
    F("owner", q->owner);
    F("team", q->team);
    F("status", "open");
    F("created", nows);
#undef F
    rc = nt_redis_script(t->d.redis, "task_create", on_created, q, 4, argc, argv, NULL);
    if (rc != NT_OK) {
        req_finish(q, rc == NT_ENOMEM ? NT_EUNAVAIL : rc, NULL, "call: Redis is unavailable");
        req_free(q);
    }
}

/* Smooth weighted round-robin (nginx) over the members that are in and under their cap. */
static void route_team(create_req_t *q)
{
    nt_tasks_t *t = q->t;
    const team_t *tm = q->tm;
    member_t *best = NULL;
    int total = 0;

    for (size_t i = 0; i < tm->n; i++) {
        member_t *m = &tm->m[i];
        const rep_t *r = &t->reps[m->rep];

        if (q->ooo[i] || q->open[i] >= r->cap)
            continue;
        m->cur += m->weight;
        total += m->weight;
        if (!best || m->cur > best->cur)
            best = m;
    }
    if (best) {
        best->cur -= total;
        q->owner = strdup(t->reps[best->rep].id);
        if (!q->owner) {
            req_finish(q, NT_EUNAVAIL, NULL, "call: out of memory");
            req_free(q);
            return;
        }
    }
    issue_create(q);
}

typedef struct state_slot {
    create_req_t *q;
    size_t i;
} state_slot_t;

static void on_rep_state(nt_rc_t rc, redisReply *reply, void *arg)
{
    state_slot_t *s = arg;
    create_req_t *q = s->q;
    size_t i = s->i;

    free(s);
    if (q->t && rc == NT_OK && reply && reply->type == REDIS_REPLY_ARRAY &&
        reply->elements == 2) {
        const redisReply *o = reply->element[0], *n = reply->element[1];

        q->ooo[i] = o->type == REDIS_REPLY_STRING && strcmp(o->str, "1") == 0;
        q->open[i] = n->type == REDIS_REPLY_STRING ? atoi(n->str) : 0;
    } else if (q->t) {
        q->ooo[i] = 1; /* unknown state: do not route to this rep */
    }
    if (--q->outstanding > 0)
        return;
    if (!q->t) {
        req_free(q);
        return;
    }
    route_team(q);
}

nt_rc_t nt_tasks_create(nt_tasks_t *t, const nt_message_t *msg, const nt_kv_t *fields,
                        size_t nfields, nt_channel_done_fn *done, void *done_arg)
{
    create_req_t *q;
    const char *owner = NULL, *team;
    char visit[16];

    if (!t || !msg || !done || !msg->id || !nt_tasks_id_valid(msg->id) || !msg->lead_id)
        return NT_EINVAL;
    if (!nt_redis_up(t->d.redis))
        return NT_EUNAVAIL;
    for (size_t i = 0; i < msg->nlead; i++)
        if (msg->lead[i].key && strcmp(msg->lead[i].key, "owner") == 0 && msg->lead[i].value &&
            nt_tasks_rep_valid(msg->lead[i].value))
            owner = msg->lead[i].value;
    team = field(fields, nfields, "team");
    if (!team || !nt_tasks_rep_valid(team))
        team = t->default_team;
    q = calloc(1, sizeof(*q));
    if (!q)
        return NT_ENOMEM;
    q->t = t;
    q->done = done;
    q->done_arg = done_arg;
    q->id = strdup(msg->id);
    q->lead = strdup(msg->lead_id);
    q->team = strdup(team);
    q->owner = owner ? strdup(owner) : NULL;
    q->due_in = field_ms(fields, nfields, "due_in_ms", 0);
    q->sla = field_ms(fields, nfields, "sla_ms", 0);
    q->f = calloc(nfields + 3, sizeof(*q->f));
    if (!q->id || !q->lead || !q->team || (owner && !q->owner) || !q->f)
        goto oom;
    snprintf(visit, sizeof(visit), "%u", msg->visit);
    {
        const char *extra[3][2] = {
            {"plan", msg->plan_id}, {"node", msg->node_id}, {"visit", visit}};

        for (size_t i = 0; i < 3; i++) {
            q->f[q->nf].key = strdup(extra[i][0]);
            q->f[q->nf].value = strdup(extra[i][1] ? extra[i][1] : "");
            q->nf++;
            if (!q->f[q->nf - 1].key || !q->f[q->nf - 1].value)
                goto oom;
        }
    }
    for (size_t i = 0; i < nfields; i++) {
        if (!fields[i].key || !fields[i].value)
            continue;
        q->f[q->nf].key = strdup(fields[i].key);
        q->f[q->nf].value = strdup(fields[i].value);
        q->nf++;
        if (!q->f[q->nf - 1].key || !q->f[q->nf - 1].value)
            goto oom;
    }
    q->next = t->pending;
    if (q->next)
        q->next->prev = q;
    t->pending = q;
    q->tm = owner ? NULL : team_find(t, team);
    if (!q->tm || q->tm->n == 0) {
        issue_create(q); /* the owner's, or a team without reps: its queue */
        return NT_AGAIN;
    }
    q->ooo = calloc(q->tm->n, sizeof(*q->ooo));
    q->open = calloc(q->tm->n, sizeof(*q->open));
    if (!q->ooo || !q->open) {
        req_finish(q, NT_EUNAVAIL, NULL, "call: out of memory");
        req_free(q);
        return NT_AGAIN;
    }
    q->outstanding = 1;
    for (size_t i = 0; i < q->tm->n; i++) {
        state_slot_t *s = malloc(sizeof(*s));
        char k[NT_KEY_MAX];

        if (!s) {
            q->ooo[i] = 1;
            continue;
        }
        s->q = q;
        s->i = i;
        if (nt_redis_cmd(t->d.redis, on_rep_state, s, "HMGET %s ooo open",
                         nt_tasks_key_rep(k, t->reps[q->tm->m[i].rep].id)) == NT_OK) {
            q->outstanding++;
        } else {
            free(s);
            q->ooo[i] = 1;
        }
    }
    if (--q->outstanding == 0)
        route_team(q);
    return NT_AGAIN;
oom:
    req_free(q);
    return NT_ENOMEM;
}

/* --- SLA escalation --------------------------------------------------------------------- */

typedef struct esc {
    life_t *life;
    char *id;
    char *owner, *team, *lead, *plan, *node, *reason;
    int64_t sla;
    int hooked; /* the escalation recorded a manager webhook notification */
} esc_t;

static void esc_free(esc_t *e)
{
    if (!e)
        return;
    life_unref(e->life);
    free(e->id);
    free(e->owner);
    free(e->team);
    free(e->lead);
    free(e->plan);
    free(e->node);
    free(e->reason);
    free(e);
}

/* --- the manager webhook: durable, retried, signed ------------------------------------- */

/* One partition's scan, claim or sweep in flight. */
typedef struct scan {
    life_t *life;
    unsigned p;
} scan_t;

/* One POST of a notification claimed by hook_claim.lua. */
typedef struct hook {
    life_t *life;
    unsigned p;
    long attempt; /* as claimed: hook_done.lua ignores the answer once another was claimed */
    char *id;     /* the escalation id, sent as Idempotency-Key */
    char *task;   /* for the log lines */
    char *body;
    struct curl_slist *hdrs;
    long status;     /* HTTP status of the answer, 0: none */
    const char *why; /* what went wrong ("" when delivered); static or curl's */
} hook_t;

static void hook_free(hook_t *h)
{
    if (!h)
        return;
    life_unref(h->life);
    curl_slist_free_all(h->hdrs);
    free(h->id);
    free(h->task);
    free(h->body);
    free(h);
}

/* The task's id in an escalation id "<task id>:esc", into buf. */
static const char *esc_task(char *buf, size_t cap, const char *id)
{
    size_t n = strlen(id);

    if (n > 4 && strcmp(id + n - 4, ":esc") == 0)
        n -= 4;
    snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), id);
    return buf;
}

/* The next attempt after `attempt` failed: base * 2^(attempt-1), at most max, half of it
 * jittered so that processes and notifications that failed together do not retry together. */
static int64_t hook_backoff(const nt_tasks_t *t, long attempt)
{
    int64_t ms = t->hook_backoff_ms;

    for (long i = 1; i < attempt && ms < t->hook_backoff_max_ms; i++)
        ms *= 2;
    if (ms > t->hook_backoff_max_ms)
        ms = t->hook_backoff_max_ms;
    return ms / 2 + (int64_t)(random() % (ms / 2 + 1));
}

static void on_hook_recorded(nt_rc_t rc, redisReply *reply, void *arg)
{
    hook_t *h = arg;
    const char *st;

    if (rc != NT_OK || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
        if (rc == NT_OK && reply && reply->type == REDIS_REPLY_ERROR)
            nt_log_error("tasks", "hook_done: %s", reply->str);
        else
            nt_log_warn("tasks",
                        "manager webhook for task %s: attempt %ld's answer was not "
                        "recorded (%s); it is tried again when its lease is over",
                        h->task, h->attempt, nt_strerror(rc == NT_OK ? NT_EUNAVAIL : rc));
        hook_free(h);
        return;
    }
    st = reply->elements > 1 && reply->element[1]->type == REDIS_REPLY_STRING
             ? reply->element[1]->str
             : "stale";
    if (strcmp(st, "delivered") == 0)
        nt_log_info("tasks", "manager webhook for task %s delivered (attempt %ld, HTTP %ld)",
                    h->task, h->attempt, h->status);
    else if (strcmp(st, "failed") == 0)
        nt_log_error("tasks",
                     "manager webhook for task %s failed: %s (HTTP %ld); given up "
                     "after %ld attempts",
                     h->task, h->why, h->status, h->attempt);
    else if (strcmp(st, "stale") == 0)
        nt_log_info("tasks",
                    "manager webhook for task %s: attempt %ld answered after its "
                    "lease (another attempt took over)",
                    h->task, h->attempt);
    hook_free(h);
}

/* Classify the answer (2xx delivered; 4xx but 408 and 429 permanent; anything else, and no
 * answer, retried) and record it with hook_done.lua. The escalation stands either way. */
static void on_hook_done(CURL *easy, CURLcode result, void *arg)
{
    hook_t *h = arg;
    nt_tasks_t *t = h->life->t;
    const char *outcome = "retry";
    char k1[NT_KEY_MAX], k2[NT_KEY_MAX], att[24], delay[24], status[24], max[24], keep[24];
    const char *argv[10];
    int64_t ms = 0;

    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &h->status);
    curl_easy_cleanup(easy);
    if (t)
        t->hooks_inflight--;
    if (!t || result == CURLE_ABORTED_BY_CALLBACK) {
        /* Shutting down: the claim's lease runs out and a later process sends it. */
        hook_free(h);
        return;
    }
    if (result != CURLE_OK) {
        h->status = 0;
        h->why = curl_easy_strerror(result);
    } else if (h->status >= 200 && h->status <= 299) {
        outcome = "delivered";
        h->why = "";
    } else if (h->status >= 400 && h->status <= 499 && h->status != 408 && h->status != 429) {
        outcome = "drop";
        h->why = "refused";
        nt_log_warn("tasks",
                    "manager webhook for task %s refused (HTTP %ld): not retried, "
                    "a 4xx other than 408 and 429 is permanent",
                    h->task, h->status);
    } else {
        h->why = "refused";
    }
    if (strcmp(outcome, "retry") == 0) {
        ms = hook_backoff(t, h->attempt);
        if (h->attempt <= t->hook_retries)
            nt_log_warn("tasks",
                        "manager webhook for task %s failed: %s (HTTP %ld), attempt "
                        "%ld of %ld, again in %" PRId64 " ms; the task is escalated to its "
                        "team queue all the same",
                        h->task, h->why, h->status, h->attempt, t->hook_retries + 1, ms);
    }
    snprintf(att, sizeof(att), "%ld", h->attempt);
    snprintf(delay, sizeof(delay), "%" PRId64, ms);
    snprintf(status, sizeof(status), "%ld", h->status);
    snprintf(max, sizeof(max), "%ld", t->hook_retries + 1);
    snprintf(keep, sizeof(keep), "%d", HOOK_KEEP_S);
    argv[0] = nt_tasks_key_set(k1, h->p, "hooks", NULL);
    argv[1] = nt_tasks_key_hook(k2, h->p, h->id);
    argv[2] = h->id;
    argv[3] = att;
    argv[4] = outcome;
    argv[5] = delay;
    argv[6] = status;
    argv[7] = h->why;
    argv[8] = max;
    argv[9] = keep;
    if (nt_redis_script(t->d.redis, "hook_done", on_hook_recorded, h, 2, 10, argv, NULL) != NT_OK)
        hook_free(h);
}

/* POST one claimed notification to channel.call.manager_webhook on the loop's multi, with
 * Idempotency-Key: <escalation id> and, with a secret, X-Nurture-Signature. Takes body. */
static void hook_post(nt_tasks_t *t, unsigned p, const char *id, char *body, long attempt)
{
    hook_t *h = calloc(1, sizeof(*h));
    CURL *easy = curl_easy_init();
    char task[300], line[400], sig[NT_WEBHOOK_SIG_MAX];

    if (!h || !easy)
        goto oom;
    h->life = t->life; /* hook_free drops it */
    t->life->refs++;
    h->p = p;
    h->attempt = attempt;
    h->body = body;
    body = NULL;
    if (!(h->id = strdup(id)) || !(h->task = strdup(esc_task(task, sizeof(task), id))))
        goto oom;
    snprintf(line, sizeof(line), "Idempotency-Key: %s", id);
    if (!(h->hdrs = curl_slist_append(NULL, "Content-Type: application/json")) ||
        !curl_slist_append(h->hdrs, line))
        goto oom;
    if (t->hook_secret) {
        if (nt_webhook_sig_value(t->hook_secret, nt_real_ms() / 1000, h->body, strlen(h->body),
                                 sig) != 0)
            goto oom;
        snprintf(line, sizeof(line), NT_WEBHOOK_SIG_HEADER ": %s", sig);
        if (!curl_slist_append(h->hdrs, line))
            goto oom;
    }
    curl_easy_setopt(easy, CURLOPT_URL, t->webhook);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, h->body);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h->hdrs);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, t->hook_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    if (nt_curlm_add(t->d.curlm, easy, on_hook_done, h) != 0) {
        nt_log_warn("tasks",
                    "manager webhook for task %s: the transfer could not start; it is "
                    "tried again when its lease is over",
                    h->task);
        curl_easy_cleanup(easy);
        hook_free(h);
        return;
    }
    t->hooks_inflight++;
    return;
oom:
    nt_log_warn("tasks",
                "manager webhook %s: out of memory; it is tried again when its lease "
                "is over",
                id);
    if (easy)
        curl_easy_cleanup(easy);
    free(body);
    hook_free(h);
}

/* hook_claim.lua's reply: {{id, body, attempt}, ...}, each claimed for this process. */
static void on_hooks_claimed(nt_rc_t rc, redisReply *reply, void *arg)
{
    scan_t *s = arg;
    nt_tasks_t *t = s->life->t;

    if (t && rc == NT_OK && reply && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *x = reply->element[i];
            char *body;

            if (x->type != REDIS_REPLY_ARRAY || x->elements != 3 ||
                x->element[0]->type != REDIS_REPLY_STRING ||
                x->element[1]->type != REDIS_REPLY_STRING ||
                x->element[2]->type != REDIS_REPLY_INTEGER)
                continue;
            body = strdup(x->element[1]->str);
            if (!body)
                continue;
            hook_post(t, s->p, x->element[0]->str, body, (long)x->element[2]->integer);
        }
    } else if (t && rc == NT_OK && reply && reply->type == REDIS_REPLY_ERROR) {
        nt_log_error("tasks", "hook_claim: %s", reply->str);
    }
    if (t && --t->sla_busy < 0)
        t->sla_busy = 0;
    life_unref(s->life);
    free(s);
}

/* Claim partition p's due notifications (none while HOOK_INFLIGHT_MAX POSTs are in flight:
 * they wait in Redis). */
static void hook_claim(nt_tasks_t *t, unsigned p)
{
    char k[NT_KEY_MAX], n[16], lease[24], max[24], keep[24];
    const char *argv[5];
    scan_t *s;

    if (!t->webhook || !t->d.curlm || t->hooks_inflight >= HOOK_INFLIGHT_MAX)
        return;
    s = malloc(sizeof(*s));
    if (!s)
        return;
    s->life = t->life;
    s->p = p;
    snprintf(n, sizeof(n), "%d", HOOK_BATCH);
    /* Longer than a POST may take, so that nobody else claims what is still being sent. */
    snprintf(lease, sizeof(lease), "%ld", t->hook_timeout_ms + HOOK_LEASE_SLACK_MS);
    snprintf(max, sizeof(max), "%ld", t->hook_retries + 1);
    snprintf(keep, sizeof(keep), "%d", HOOK_KEEP_S);
    argv[0] = nt_tasks_key_set(k, p, "hooks", NULL);
    argv[1] = n;
    argv[2] = lease;
    argv[3] = max;
    argv[4] = keep;
    if (nt_redis_script(t->d.redis, "hook_claim", on_hooks_claimed, s, 1, 5, argv, NULL) == NT_OK) {
        t->sla_busy++;
        t->life->refs++;
    } else {
        free(s);
    }
}

/* The webhook's body: {"event":"task.escalated","escalation",...}, malloc'd; NULL out of
 * memory. */
static char *hook_body(const esc_t *e, const char *esc_id)
{
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "event", "task.escalated",
                          "escalation", esc_id, "task", e->id, "lead", e->lead, "plan", e->plan,
                          "node", e->node, "from", e->owner, "team", e->team, "reason", e->reason,
                          "sla", (json_int_t)e->sla);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    return body;
}

static void on_escalated(nt_rc_t rc, redisReply *reply, void *arg)
{
    esc_t *e = arg;

    if (e->life->t && rc == NT_OK && reply && reply->type == REDIS_REPLY_ARRAY &&
        reply->elements >= 2 && reply->element[0]->str &&
        strcmp(reply->element[0]->str, "expired") == 0) {
        /* Nobody called before the run left the send: nothing to escalate any more. */
        char k[NT_KEY_MAX];
        const redisReply *o = reply->element[1];

        nt_log_info("tasks", "%s: past its SLA, but expired: %s", e->id,
                    reply->elements > 2 && reply->element[2]->str ? reply->element[2]->str
                                                                  : "the run moved on");
        if (o->type == REDIS_REPLY_STRING && o->str[0])
            nt_redis_cmd(e->life->t->d.redis, on_counted, NULL, "HINCRBY %s open -1",
                         nt_tasks_key_rep(k, o->str));
    } else if (e->life->t && rc == NT_OK && reply && reply->type == REDIS_REPLY_ARRAY &&
               reply->elements >= 1 && reply->element[0]->str &&
               strcmp(reply->element[0]->str, "ok") == 0) {
        char k[NT_KEY_MAX];

        nt_log_info("tasks", "%s: past its SLA, from %s to the %s queue", e->id,
                    e->owner && e->owner[0] ? e->owner : "(queue)", e->team);
        if (e->owner && e->owner[0])
            nt_redis_cmd(e->life->t->d.redis, on_counted, NULL, "HINCRBY %s open -1",
                         nt_tasks_key_rep(k, e->owner));
        if (e->hooked)
            hook_claim(e->life->t, nt_tasks_partition(e->life->t, e->id));
    }
    esc_free(e);
}

static char *dup_field(const redisReply *flat, const char *name)
{
    for (size_t i = 0; i + 1 < flat->elements; i += 2)
        if (flat->element[i]->str && strcmp(flat->element[i]->str, name) == 0)
            return strdup(flat->element[i + 1]->str ? flat->element[i + 1]->str : "");
    return strdup("");
}

static void on_esc_read(nt_rc_t rc, redisReply *reply, void *arg)
{
    esc_t *e = arg;
    nt_tasks_t *t = e->life->t;
    char k1[NT_KEY_MAX], k2[NT_KEY_MAX], k3[NT_KEY_MAX], k4[NT_KEY_MAX], k5[NT_KEY_MAX],
        k6[NT_KEY_MAX], nows[24], esc_id[300];
    const char *argv[13];
    char *body = NULL;
    int n = 0, nkeys;
    unsigned p;

    if (!t || rc != NT_OK || !reply || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements == 0) {
        esc_free(e);
        return;
    }
    e->owner = dup_field(reply, "owner");
    e->team = dup_field(reply, "team");
    e->lead = dup_field(reply, "lead");
    e->plan = dup_field(reply, "plan");
    e->node = dup_field(reply, "node");
    e->reason = dup_field(reply, "reason");
    if (!e->owner || !e->team || !e->lead || !e->plan || !e->node || !e->reason) {
        esc_free(e);
        return;
    }
    {
        char *s = dup_field(reply, "sla");

        e->sla = s ? strtoll(s, NULL, 10) : 0;
        free(s);
    }
    p = nt_tasks_partition(t, e->id);
    snprintf(nows, sizeof(nows), "%" PRId64, nt_now_ms());
    argv[n++] = nt_tasks_key_task(k1, p, e->id);
    argv[n++] = nt_tasks_key_holder(k2, p, e->owner, e->team);
    argv[n++] = nt_tasks_key_holder(k3, p, NULL, e->team);
    argv[n++] = nt_tasks_key_set(k4, p, "sla", NULL);
    if (t->webhook && t->d.curlm) {
        /* The notification is recorded by the escalation itself (task_move.lua). */
        snprintf(esc_id, sizeof(esc_id), "%s:esc", e->id);
        body = hook_body(e, esc_id);
        if (!body) {
            esc_free(e);
            return;
        }
        e->hooked = 1;
        argv[n++] = nt_tasks_key_hook(k5, p, esc_id);
        argv[n++] = nt_tasks_key_set(k6, p, "hooks", NULL);
    }
    nkeys = n;
    argv[n++] = e->id;
    argv[n++] = "escalate";
    argv[n++] = e->owner;
    argv[n++] = "";
    argv[n++] = nows;
    if (body) {
        argv[n++] = esc_id;
        argv[n++] = body;
    }
    if (nt_redis_script(t->d.redis, "task_move", on_escalated, e, nkeys, n, argv, NULL) != NT_OK)
        esc_free(e);
    free(body);
}

static void on_overdue(nt_rc_t rc, redisReply *reply, void *arg)
{
    scan_t *s = arg;
    nt_tasks_t *t = s->life->t;

    if (t && rc == NT_OK && reply && reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *x = reply->element[i];
            esc_t *e;
            char k[NT_KEY_MAX];

            if (x->type != REDIS_REPLY_STRING || !nt_tasks_id_valid(x->str))
                continue;
            e = calloc(1, sizeof(*e));
            if (!e || !(e->id = strdup(x->str))) {
                free(e);
                continue;
            }
            e->life = t->life;
            t->life->refs++;
            if (nt_redis_cmd(t->d.redis, on_esc_read, e, "HGETALL %s",
                             nt_tasks_key_task(k, s->p, e->id)) != NT_OK)
                esc_free(e);
        }
    }
    if (t && --t->sla_busy < 0)
        t->sla_busy = 0;
    life_unref(s->life);
    free(s);
}

/* The sweep's task_list.lua reply: {{}, {holder, ...}, next rank}. Each holder of a task
 * expired here has one open task less. */
static void on_swept(nt_rc_t rc, redisReply *reply, void *arg)
{
    scan_t *s = arg;
    nt_tasks_t *t = s->life->t;

    if (t && rc == NT_OK && reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
        reply->element[1]->type == REDIS_REPLY_ARRAY &&
        reply->element[2]->type == REDIS_REPLY_INTEGER) {
        const redisReply *gone = reply->element[1];
        char k[NT_KEY_MAX];

        t->sweep_at[s->p] = reply->element[2]->integer;
        for (size_t i = 0; i < gone->elements; i++)
            if (gone->element[i]->type == REDIS_REPLY_STRING && gone->element[i]->str[0])
                nt_redis_cmd(t->d.redis, on_counted, NULL, "HINCRBY %s open -1",
                             nt_tasks_key_rep(k, gone->element[i]->str));
        if (gone->elements > 0)
            nt_log_info("tasks", "partition %u: %zu task%s expired (the lead's run left the "
                        "call step)", s->p, gone->elements, gone->elements == 1 ? "" : "s");
    } else if (t && rc == NT_OK && reply && reply->type == REDIS_REPLY_ERROR) {
        nt_log_error("tasks", "task_list (sweep): %s", reply->str);
    }
    if (t && --t->sla_busy < 0)
        t->sla_busy = 0;
    life_unref(s->life);
    free(s);
}

/* Every sla_check_ms: escalate the tasks past their SLA and, so that nobody has to list a
 * task for it to go, expire open tasks whose lead's run has left the call step (task_list.lua
 * in sweep mode, SWEEP_BATCH tasks per partition and tick, going round). */
static void on_sla_tick(evutil_socket_t fd, short what, void *arg)
{
    nt_tasks_t *t = arg;
    char k[NT_KEY_MAX], now[24], batch[16], at[24];

    (void)fd;
    (void)what;
    if (t->sla_busy > 0 || !nt_redis_up(t->d.redis))
        return;
    snprintf(now, sizeof(now), "%" PRId64, nt_now_ms());
    snprintf(batch, sizeof(batch), "%d", SWEEP_BATCH);
    for (unsigned p = 0; p < t->d.cfg->partitions; p++) {
        scan_t *s = malloc(sizeof(*s)), *w = malloc(sizeof(*w));
        const char *argv[4];

        if (!s || !w) {
            free(s);
            free(w);
            break;
        }
        s->life = w->life = t->life;
        s->p = w->p = p;
        if (nt_redis_cmd(t->d.redis, on_overdue, s, "ZRANGEBYSCORE %s -inf %s LIMIT 0 %d",
                         nt_tasks_key_set(k, p, "sla", NULL), now, SLA_BATCH) == NT_OK) {
            t->sla_busy++;
            t->life->refs++;
        } else {
            free(s);
        }
        snprintf(at, sizeof(at), "%lld", t->sweep_at[p]);
        argv[0] = nt_tasks_key_set(k, p, "open", NULL);
        argv[1] = batch;
        argv[2] = now;
        argv[3] = at;
        if (nt_redis_script(t->d.redis, "task_list", on_swept, w, 1, 4, argv, NULL) == NT_OK) {
            t->sla_busy++;
            t->life->refs++;
        } else {
            free(w);
        }
        hook_claim(t, p);
    }
}

/* --- life cycle ------------------------------------------------------------------------- */

nt_tasks_t *nt_tasks_new(const nt_tasks_deps_t *deps, char **errmsg)
{
    nt_tasks_t *t = calloc(1, sizeof(*t));
    const char *ms;
    long period = 1000;

    if (errmsg)
        *errmsg = NULL;
    if (!t) {
        if (errmsg)
            *errmsg = strdup("out of memory");
        return NULL;
    }
    t->d = *deps;
    t->life = calloc(1, sizeof(*t->life));
    if (!t->life) {
        if (errmsg)
            *errmsg = strdup("out of memory");
        goto fail;
    }
    t->life->t = t;
    t->life->refs = 1;
    if (load_config(t, errmsg) != 0)
        goto fail;
    t->sweep_at = calloc(deps->cfg->partitions ? deps->cfg->partitions : 1, sizeof(*t->sweep_at));
    if (!t->sweep_at) {
        if (errmsg)
            *errmsg = strdup("out of memory");
        goto fail;
    }
    ms = nt_config_channel(deps->cfg, "call", "sla_check_ms", NULL);
    if (ms) {
        char *end;

        period = strtol(ms, &end, 10);
        if (*end || period < 10 || period > 3600000) {
            fail_cfg(errmsg, "sla_check_ms", "a number of ms from 10 to 3600000");
            goto fail;
        }
    }
    if (deps->base) {
        struct timeval tv = {period / 1000, (period % 1000) * 1000};

        t->sla_ev = event_new(deps->base, -1, EV_PERSIST, on_sla_tick, t);
        if (!t->sla_ev || event_add(t->sla_ev, &tv) != 0) {
            if (errmsg && !*errmsg)
                *errmsg = strdup("cannot start the SLA timer");
            goto fail;
        }
    }
    return t;
fail:
    nt_tasks_free(t);
    return NULL;
}

void nt_tasks_free(nt_tasks_t *t)
{
    if (!t)
        return;
    if (t->sla_ev)
        event_free(t->sla_ev);
    if (t->life) {
        t->life->t = NULL;
        life_unref(t->life);
    }
    while (t->pending) {
        create_req_t *q = t->pending;

        /* The Redis replies still come (and free q); the channel hears now. */
        req_finish(q, NT_ECANCELED, NULL, "call: shutting down");
    }
    for (size_t i = 0; i < t->nreps; i++) {
        free(t->reps[i].id);
        free(t->reps[i].tz);
    }
    free(t->reps);
    for (size_t i = 0; i < t->nteams; i++) {
        free(t->teams[i].name);
        free(t->teams[i].m);
    }
    free(t->teams);
    free(t->sweep_at);
    free(t);
}
