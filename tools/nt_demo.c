/* nt-demo: the outside world for `tools/demo`, and a narrator for a person at a terminal.
 *
 * nurtured runs the published plans on a fast plan clock (--time-scale). This program plays
 * everybody else through the same public HTTP API a real system would use: leads who open,
 * click and download (and privacy proxies and link scanners that open and click for them,
 * posted with "machine": true, which must move nobody), the webinar system's registrations,
 * attendance and recording views, people answering an event invitation through its signed RSVP
 * link, the badge scanner at the show (the day's scans imported as a CSV with `nurturectl
 * events import`, including people nurture did not know and a row the scanner garbled),
 * unsubscribes, and the CRM that enrols a lead in the hand-off plan once marketing has
 * qualified it. Whether and when a lead does something is decided by
 * a seeded PRNG per lead, plan, node and visit, weighted by a per-lead propensity (engaged
 * technical buyers click more, executives download business cases, webinar-sourced leads
 * register more), so that a run is repeatable and every branch of a wait_event is taken by
 * some leads and not by others.
 *
 * It learns what the plans wait for from the compiled plans (binary nt.Workflow, as written by
 * `nurturectl compile`), polls GET /v1/leads/{id} for every lead of the CSV every ~300 ms over
 * one keep-alive connection and prints each move, prints a per-node funnel of every plan from
 * GET /v1/plans/{id}/stats every few seconds, and at the end a final funnel and a summary.
 *
 * Exit status: 0 done, 1 nurtured unreachable or bad input, 2 usage, 130 interrupted. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include <curl/curl.h>
#include <jansson.h>

#include "csv.h"
#include "nurture/track.h"
#include "plan.h"

#define DEMO_MAX_PLANS 16
#define DEMO_DAY_MS 86400000LL
#define DEMO_TICK_MS 40          /* how often due world events are posted */
#define DEMO_LABEL_MAX 46        /* widest "Name (role, zone)" column */

/* ---------------------------------------------------------------- small helpers */

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s != NULL ? s : "");
    if (d == NULL) {
        fprintf(stderr, "nt-demo: out of memory\n");
        exit(1);
    }
    return d;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        fprintf(stderr, "nt-demo: out of memory\n");
        exit(1);
    }
    return q;
}

static int64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    h ^= 0xff; /* separator, so that ("ab","c") and ("a","bc") differ */
    h *= 1099511628211ULL;
    return h;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A uniform number in [0, 1) from the generator. */
static double unif(uint64_t *s)
{
    return (double)(splitmix(s) >> 11) / 9007199254740992.0;
}

/* Terminal columns that s takes (UTF-8; wide characters count two). */
static int text_width(const char *s)
{
    mbstate_t st;
    memset(&st, 0, sizeof(st));
    int w = 0;
    size_t left = strlen(s);
    while (left > 0) {
        wchar_t wc;
        size_t n = mbrtowc(&wc, s, left, &st);
        if (n == (size_t)-1 || n == (size_t)-2) {
            memset(&st, 0, sizeof(st));
            n = 1;
            wc = L'?';
        } else if (n == 0) {
            break;
        }
        int cw = wcwidth(wc);
        w += cw > 0 ? cw : 0;
        s += n;
        left -= n;
    }
    return w;
}

/* Print s padded with spaces to width columns (never cut). */
static void put_padded(FILE *f, const char *s, int width)
{
    fputs(s, f);
    for (int w = text_width(s); w < width; w++)
        fputc(' ', f);
}

static int64_t duration_ms(const Nt__Duration *d)
{
    if (d == NULL)
        return 0;
    return (int64_t)d->days * DEMO_DAY_MS + (int64_t)d->hours * 3600000 +
           (int64_t)d->minutes * 60000 + (int64_t)d->seconds * 1000;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static int64_t jint(const json_t *o, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(o, key));
}

/* ---------------------------------------------------------------- HTTP, one connection */

typedef struct membuf {
    char *p;
    size_t n;
} membuf_t;

typedef struct http {
    CURL *h;
    const char *base;
    struct curl_slist *hdr;
    membuf_t body;
    long requests;
    long failures;
} http_t;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    membuf_t *b = arg;
    size_t n = size * nmemb;
    b->p = xrealloc(b->p, b->n + n + 1);
    memcpy(b->p + b->n, ptr, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

static int http_init(http_t *c, const char *base, const char *token)
{
    memset(c, 0, sizeof(*c));
    c->base = base;
    c->h = curl_easy_init();
    if (c->h == NULL)
        return -1;
    char *auth = NULL;
    /* No token: a person following a signed link, whose token is the link itself. */
    if (token != NULL && asprintf(&auth, "Authorization: Bearer %s", token) < 0)
        return -1;
    if (auth != NULL)
        c->hdr = curl_slist_append(c->hdr, auth);
    free(auth);
    c->hdr = curl_slist_append(c->hdr, "Content-Type: application/json");
    c->hdr = curl_slist_append(c->hdr, "Expect:");
    curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, c->hdr);
    curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->h, CURLOPT_WRITEDATA, &c->body);
    curl_easy_setopt(c->h, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(c->h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->h, CURLOPT_TCP_NODELAY, 1L);
    return 0;
}

static void http_fini(http_t *c)
{
    curl_slist_free_all(c->hdr);
    curl_easy_cleanup(c->h);
    free(c->body.p);
}

/* One request on the kept-alive handle. Returns the status (the answer in c->body.p, always
 * NUL-terminated), or -1 when nothing came back. */
static long http_do(http_t *c, const char *method, const char *path, const char *body)
{
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", c->base, path);
    c->body.n = 0;
    c->body.p = xrealloc(c->body.p, 1);
    c->body.p[0] = '\0';
    curl_easy_setopt(c->h, CURLOPT_URL, url);
    if (body != NULL) {
        curl_easy_setopt(c->h, CURLOPT_POST, 1L);
        curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        curl_easy_setopt(c->h, CURLOPT_CUSTOMREQUEST, method);
    } else {
        curl_easy_setopt(c->h, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c->h, CURLOPT_CUSTOMREQUEST, NULL);
    }
    c->requests++;
    CURLcode rc = curl_easy_perform(c->h);
    if (rc != CURLE_OK) {
        c->failures++;
        return -1;
    }
    long st = 0;
    curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &st);
    return st;
}

/* GET path as JSON; NULL on any failure. */
static json_t *http_get_json(http_t *c, const char *path)
{
    if (http_do(c, "GET", path, NULL) != 200)
        return NULL;
    return json_loads(c->body.p, 0, NULL);
}

/* ---------------------------------------------------------------- model */

typedef struct plan_ref {
    nt_plan_t *plan;
    const char *id;
} plan_ref_t;

/* What we decided for one visit of a lead at a wait_event node. */
typedef struct visit {
    char *plan;
    char *node;
    unsigned visit;
    const char *type;       /* what the node waits for (borrowed from the plan) */
    int64_t span;           /* its timeout, plan ms */
    int human;              /* a person's matching event is scheduled */
    int machine;            /* a machine event of the awaited type was posted */
    int human_posted;
    int result;             /* 0 open, 1 matched, 2 timed out */
} visit_t;

typedef struct run {
    char *plan;
    char *node;
    char *status;
    char *exit_reason;
    unsigned visit;
    int64_t due;
} run_t;

typedef struct lead {
    char *id;
    char *label;            /* "Ada Lovelace (technical, Europe/London)" */
    int known;              /* answered at least once */
    double engage;          /* propensity 0..1 */
    const char *role;       /* "technical", "executive" or "other" */
    char *source;
    int64_t score;
    char *stage;
    int max_stage;          /* furthest stage seen, in funnel order */
    run_t *runs;
    size_t nruns;
    visit_t *visits;
    size_t nvisits;
    char *tl_top;           /* newest timeline entry seen: "at|kind|text" */
    int64_t unsub_at;       /* plan ms at which this lead unsubscribes; 0 never */
    int unsub_done;
    int handoff_tried;
    json_t *attrs;          /* the lead's attributes as last read */
    char rsvp;              /* the answer given through the RSVP link: 'y', 'n' or 0 */
    int from_scan;          /* created by the badge scanner's import */
} lead_t;

enum { PEND_MATCH, PEND_NOISE, PEND_UNSUB, PEND_RSVP };

typedef struct pend {
    size_t lead;
    int kind;
    char *plan;             /* PEND_MATCH/NOISE: the visit it belongs to */
    char *node;
    unsigned visit;
    char *type;
    json_t *attrs;          /* owned */
    int machine;
    const char *why;        /* shown for machine events */
    int64_t fire_real;
} pend_t;

/* A sales rep played by the demo, on their own connection with their own rep token. */
typedef struct demo_rep {
    char *name;
    http_t http;
    int in_team;            /* may read the team queue (no 403 seen) */
    long calls;             /* completed */
} demo_rep_t;

enum { CALL_PLANNED, CALL_DONE, CALL_EXPIRED, CALL_GONE };

/* A call task a rep has seen, and what the rep will do about it. */
typedef struct call {
    char *id;               /* the task id: <lead>:<plan>:<node>:<visit> */
    size_t lead;
    size_t rep;
    char *plan;
    char *node;
    unsigned visit;
    int64_t call_real;      /* when the rep gets to it (real ms) */
    const char *outcome;    /* drawn for this lead and task */
    int state;
} call_t;

typedef struct demo {
    const char *url;
    const char *data_dir;
    const char *leads_csv;
    const char *handoff;    /* plan a qualified lead is enrolled in by "the CRM" */
    double scale;
    double seconds;
    double funnel_every;
    uint64_t seed;
    int64_t start_real;     /* real ms when nurtured's plan clock started */
    int64_t start_plan;     /* plan ms it showed then (its time-start, else start_real) */
    int64_t skew;           /* plan ms added after seeing the daemon ahead of our estimate */
    int64_t day0;           /* plan ms of "day 0": when the leads were enrolled */
    plan_ref_t plans[DEMO_MAX_PLANS];
    size_t nplans;
    lead_t *leads;
    size_t nleads;
    pend_t *pend;
    size_t npend;
    http_t http;
    int wid_id, wid_label, wid_plan;
    long posted_human, posted_machine, late_dropped;
    long lines;
    long handoffs;
    const char *team;       /* the reps' team, whose queue they also work */
    demo_rep_t *reps;
    size_t nreps;
    size_t queue_turn;      /* which rep looks at the team queue next */
    call_t *calls;
    size_t ncalls;
    /* The in-person event: found in the plans (a send on the event channel). */
    const char *nurturectl; /* the binary that imports the badge scans */
    const char *event;      /* the event's id */
    const char *event_plan; /* the plan that invites to it and follows up */
    http_t person;          /* no token: people following their signed links */
    int64_t scan_at;        /* real ms of the badge scanner's import; 0 not yet known */
    int scan_done;
    size_t *scans;          /* leads whose badge is scanned (indexes) */
    size_t nscans;
    long rsvp_yes, rsvp_no, rsvp_failed;
    char *scan_summary;     /* nurturectl's summary line */
    long scan_bad;          /* malformed rows it reported */
} demo_t;

static const char *const stages[] = {"inquiry", "mql", "sal", "sql", "opportunity", "won",
                                     "lost", "disqualified", NULL};

static int stage_rank(const char *s)
{
    for (int i = 0; s != NULL && stages[i]; i++)
        if (strcmp(stages[i], s) == 0)
            return i + 1;
    return 0;
}

/* Plan time now, by the daemon's clock: it showed start_plan at start_real and runs scale
 * times faster. */
static int64_t plan_now(const demo_t *d)
{
    int64_t r = real_ms();
    return d->start_plan + (int64_t)((double)(r - d->start_real) * d->scale) + d->skew;
}

/* The real moment at which the plan clock shows plan_ms. */
static int64_t real_at(const demo_t *d, int64_t plan_ms)
{
    return d->start_real + (int64_t)((double)(plan_ms - d->skew - d->start_plan) / d->scale);
}

/* The daemon stamped something at plan time t: our estimate must not be behind it. */
static void clock_saw(demo_t *d, int64_t t)
{
    int64_t now = plan_now(d);
    if (t > now)
        d->skew += t - now;
}

static int plan_day(const demo_t *d)
{
    return (int)((plan_now(d) - d->day0) / DEMO_DAY_MS);
}

static const plan_ref_t *plan_find(const demo_t *d, const char *id)
{
    for (size_t i = 0; i < d->nplans; i++)
        if (strcmp(d->plans[i].id, id) == 0)
            return &d->plans[i];
    return NULL;
}

static const Nt__Node *node_find(const demo_t *d, const char *plan, const char *node)
{
    const plan_ref_t *p = plan_find(d, plan);
    return p != NULL && node != NULL ? nt_plan_node(p->plan, node) : NULL;
}

/* ---------------------------------------------------------------- output */

static void line_start(demo_t *d, const lead_t *l)
{
    printf("day %2d  ", plan_day(d));
    put_padded(stdout, l->id, d->wid_id);
    fputs("  ", stdout);
    put_padded(stdout, l->label, d->wid_label);
    fputs("  ", stdout);
    d->lines++;
}

static void say(demo_t *d, const lead_t *l, const char *plan, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void say(demo_t *d, const lead_t *l, const char *plan, const char *fmt, ...)
{
    line_start(d, l);
    put_padded(stdout, plan, d->wid_plan);
    fputs("  ", stdout);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
}

static void rule(const char *title)
{
    int n = printf("\n── %s ", title);
    for (int i = n; i < 100; i++)
        fputs("─", stdout);
    fputc('\n', stdout);
}

/* ---------------------------------------------------------------- leads from the CSV */

static int load_leads(demo_t *d)
{
    FILE *f = fopen(d->leads_csv, "r");
    if (f == NULL) {
        fprintf(stderr, "nt-demo: cannot read %s: %s\n", d->leads_csv, strerror(errno));
        return -1;
    }
    nt_csv_t *csv = nt_csv_new(f, 1 << 16, 256);
    char **fields, *err = NULL;
    size_t nf, line;
    long idcol = -1;
    int r;
    size_t cap = 0;
    while ((r = nt_csv_next(csv, &fields, &nf, &line, &err)) != 0) {
        if (r < 0) {
            free(err);
            err = NULL;
            continue;
        }
        if (idcol < 0) {
            for (size_t i = 0; i < nf; i++)
                if (strcasecmp(fields[i], "id") == 0)
                    idcol = (long)i;
            if (idcol < 0) {
                fprintf(stderr, "nt-demo: %s: no 'id' column\n", d->leads_csv);
                break;
            }
            continue;
        }
        if ((size_t)idcol >= nf || fields[idcol][0] == '\0')
            continue;
        if (d->nleads == cap) {
            cap = cap ? cap * 2 : 64;
            d->leads = xrealloc(d->leads, cap * sizeof(*d->leads));
        }
        lead_t *l = &d->leads[d->nleads++];
        memset(l, 0, sizeof(*l));
        l->id = xstrdup(fields[idcol]);
        l->label = xstrdup(l->id);
        l->stage = xstrdup("");
        l->source = xstrdup("");
        l->role = "other";
    }
    nt_csv_free(csv);
    fclose(f);
    if (d->nleads == 0) {
        fprintf(stderr, "nt-demo: %s: no leads\n", d->leads_csv);
        return -1;
    }
    return 0;
}

/* The lead's propensity to engage and the moment it unsubscribes (if ever), from its
 * attributes and its id: the same lead behaves the same way in every run of the demo. */
static void lead_profile(demo_t *d, lead_t *l, const json_t *attrs)
{
    const char *role = jstr(attrs, "role");
    const char *title = jstr(attrs, "title");
    const char *src = jstr(attrs, "source");
    uint64_t s = fnv(d->seed, l->id);
    double e = 0.05 + 0.45 * unif(&s);

    if (role != NULL && strcmp(role, "technical") == 0)
        l->role = "technical";
    else if (role != NULL && strcmp(role, "executive") == 0)
        l->role = "executive";
    else if (title != NULL && (strcasestr(title, "engineer") || strcasestr(title, "developer")))
        l->role = "technical";
    free(l->source);
    l->source = xstrdup(src);
    if (src != NULL && (strcmp(src, "webinar") == 0 || strcmp(src, "referral") == 0 ||
                        strcmp(src, "content_download") == 0 || strcmp(src, "tradeshow") == 0 ||
                        strcmp(src, "event") == 0))
        e += 0.12;
    e += (double)(l->score > 60 ? 60 : l->score) / 400.0;
    l->engage = e < 0.05 ? 0.05 : e > 0.95 ? 0.95 : e;
    /* A few of the least engaged have had enough at some point. */
    double u = unif(&s);
    int64_t from = l->from_scan ? plan_now(d) : d->day0; /* a scanned stranger: from now on */
    if (u < 0.06)
        l->unsub_at = from + (int64_t)((3.0 + 20.0 * unif(&s)) * (double)DEMO_DAY_MS);
}

static void lead_label(lead_t *l, const json_t *attrs)
{
    const char *fn = jstr(attrs, "first_name"), *ln = jstr(attrs, "last_name");
    const char *tz = jstr(attrs, "timezone");
    char name[160];
    if (fn != NULL || ln != NULL)
        snprintf(name, sizeof(name), "%s%s%s", fn ? fn : "", fn && ln ? " " : "", ln ? ln : "");
    else
        snprintf(name, sizeof(name), "%s", jstr(attrs, "email") ?: l->id);
    free(l->label);
    if (asprintf(&l->label, "%s (%s, %s)", name, l->role, tz ? tz : "UTC") < 0)
        l->label = xstrdup(name);
    if (tz != NULL && strrchr(tz, '/') != NULL && text_width(l->label) > DEMO_LABEL_MAX) {
        free(l->label);
        if (asprintf(&l->label, "%s (%s, %s)", name, l->role, strrchr(tz, '/') + 1) < 0)
            l->label = xstrdup(name);
    }
}

/* ---------------------------------------------------------------- the world */

/* How likely this lead does what a plan waits for. */
static double propensity(const lead_t *l, const char *type)
{
    double e = l->engage;
    int tech = strcmp(l->role, "technical") == 0, exec = strcmp(l->role, "executive") == 0;
    int web = l->source != NULL && strcmp(l->source, "webinar") == 0;

    if (strcmp(type, "email.clicked") == 0)
        return 0.04 + 0.36 * e + (tech ? 0.10 : 0);
    if (strcmp(type, "content.downloaded") == 0)
        return 0.03 + 0.30 * e + (exec ? 0.10 : 0);
    if (strcmp(type, "email.opened") == 0)
        return 0.30 + 0.50 * e;
    if (strcmp(type, "webinar.registered") == 0)
        return 0.05 + 0.30 * e + (web ? 0.25 : 0) + (tech ? 0.05 : 0);
    if (strcmp(type, "webinar.attended") == 0)
        return 0.40 + 0.35 * e;
    if (strcmp(type, "webinar.recording_viewed") == 0)
        return 0.20 + 0.35 * e;
    return 0.15 + 0.40 * e;
}

static void pend_add(demo_t *d, size_t lead, int kind, const char *plan, const char *node,
                     unsigned visit, const char *type, json_t *attrs, int machine,
                     const char *why, int64_t fire_real)
{
    d->pend = xrealloc(d->pend, (d->npend + 1) * sizeof(*d->pend));
    pend_t *p = &d->pend[d->npend++];
    p->lead = lead;
    p->kind = kind;
    p->plan = xstrdup(plan);
    p->node = xstrdup(node);
    p->visit = visit;
    p->type = xstrdup(type);
    p->attrs = attrs != NULL ? attrs : json_object();
    p->machine = machine;
    p->why = why;
    p->fire_real = fire_real;
}

static visit_t *visit_find(lead_t *l, const char *plan, const char *node, unsigned v)
{
    for (size_t i = 0; i < l->nvisits; i++)
        if (l->visits[i].visit == v && strcmp(l->visits[i].plan, plan) == 0 &&
            strcmp(l->visits[i].node, node) == 0)
            return &l->visits[i];
    return NULL;
}

/* ---------------------------------------------------------------- the in-person event */

static size_t lead_index(const demo_t *d, const char *id);

/* An invitation's RSVP wait: the person answers through the signed link of their invitation,
 * yes, no, or not at all. */
static void rsvp_visit(demo_t *d, size_t li, const run_t *r, visit_t *v, int64_t entered,
                       int64_t span, uint64_t *s)
{
    lead_t *l = &d->leads[li];
    double yes = 0.20 + 0.45 * l->engage, no = 0.10, u = unif(s);
    char answer = u < yes ? 'y' : u < yes + no ? 'n' : 0;

    if (answer == 0 || l->rsvp != 0)
        return;
    v->human = answer == 'y';
    pend_add(d, li, PEND_RSVP, r->plan, r->node, r->visit, "event.rsvp",
             json_pack("{s:s}", "answer", answer == 'y' ? "yes" : "no"), 0, NULL,
             real_at(d, entered + (int64_t)((0.05 + 0.6 * unif(s)) * (double)span)));
}

static int lead_registered(const lead_t *l)
{
    const char *tc = jstr(l->attrs, "tradeshow_contact");
    return l->rsvp == 'y' || (tc != NULL && strcmp(tc, "registered") == 0);
}

/* The show: whoever waits for their check-in is scanned at the entrance, or does not come (most
 * registrants come, a few others walk in). The scanner's export of the first day is imported
 * once, in the evening of that day. */
static void show_visit(demo_t *d, size_t li, visit_t *v, int64_t entered, int64_t span,
                       uint64_t *s)
{
    lead_t *l = &d->leads[li];
    double p = !lead_registered(l)                   ? 0.05 + 0.20 * l->engage
               : jstr(l->attrs, "rep_notes") != NULL ? 0.85
                                                     : 0.40 + 0.35 * l->engage;

    if (d->scan_at == 0)
        d->scan_at = real_at(d, entered + (int64_t)(0.35 * (double)span));
    if (d->scan_done || unif(s) >= p)
        return;
    v->human = 1;
    d->scans = xrealloc(d->scans, (d->nscans + 1) * sizeof(*d->scans));
    d->scans[d->nscans++] = li;
}

/* Call fn for each line of the event channel's file (<data-dir>/event-channel.jsonl: one JSON
 * object per invitation or reminder, with its RSVP link) about this demo's event. */
static void event_lines(const demo_t *d, void (*fn)(const json_t *line, void *arg), void *arg)
{
    char *path = NULL, *line = NULL;
    size_t cap = 0;
    if (asprintf(&path, "%s/event-channel.jsonl", d->data_dir) < 0)
        return;
    FILE *f = fopen(path, "r");
    free(path);
    if (f == NULL)
        return;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        const char *e = jstr(j, "event");
        if (e != NULL && strcmp(e, d->event) == 0)
            fn(j, arg);
        json_decref(j);
    }
    free(line);
    fclose(f);
}

/* ---- the RSVP link in the invitation email ----
 *
 * The event channel stores each lead's signed RSVP link on the lead, and the plan's next step
 * emails it ({{event_rsvp_link}}). With no SMTP server configured the email channel writes each
 * message as an .eml file into <data-dir>/maildir/new: a person answers by following the link
 * of the newest message to their address that has one. Every link of an email is click-tracked
 * (/t/c/<token>, a redirect); the person follows the one that leads to the RSVP page. Which one
 * that is, the demo reads from the click token's payload (base64url, "...|<target url>"), as a
 * mail client shows where a link goes; the click itself goes through nurtured's redirect. */

/* Quoted-printable decoded in place: soft line breaks dropped, =XX as its byte. */
static void qp_decode(char *s)
{
    char *o = s;
    for (char *p = s; *p != '\0';) {
        if (p[0] == '=' && p[1] == '\r' && p[2] == '\n') {
            p += 3;
        } else if (p[0] == '=' && p[1] == '\n') {
            p += 2;
        } else if (p[0] == '=' && isxdigit((unsigned char)p[1]) &&
                   isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], '\0'};
            *o++ = (char)strtol(hex, NULL, 16);
            p += 3;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
}

/* The file at path, of size bytes, NUL-terminated, malloc'd; NULL when it cannot be read. */
static char *read_small_file(const char *path, size_t size)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char *s = xrealloc(NULL, size + 1);
    size_t n = fread(s, 1, size, f);
    fclose(f);
    s[n] = '\0';
    return s;
}

/* Non-zero when the click token tok (n characters, "<payload>.<signature>") redirects to an
 * RSVP link. */
static int click_goes_to_rsvp(const char *tok, size_t n)
{
    unsigned char buf[4096];
    const char *dot = memchr(tok, '.', n);
    long len = dot ? nt_track_b64url_decode(tok, (size_t)(dot - tok), buf, sizeof(buf) - 1) : -1;

    if (len < 0)
        return 0;
    buf[len] = '\0';
    return strstr((const char *)buf, "/t/r/") != NULL;
}

/* The path "/t/c/<token>" of the click link to the RSVP page in message msg (raw, decoded here)
 * when its header names <addr>; malloc'd, or NULL. */
static char *message_rsvp_path(char *msg, const char *addr)
{
    char *end = strstr(msg, "\r\n\r\n"), *want = NULL, *path = NULL;
    if (end == NULL || asprintf(&want, "<%s>", addr) < 0)
        return NULL;
    *end = '\0';
    int mine = strcasestr(msg, want) != NULL;
    free(want);
    if (!mine)
        return NULL;
    char *body = end + 4;
    qp_decode(body);
    for (const char *t = strstr(body, "/t/c/"); t != NULL && path == NULL;
         t = strstr(t + 5, "/t/c/")) {
        size_t n = strspn(t + 5, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789-_.");
        if (n > 0 && click_goes_to_rsvp(t + 5, n))
            path = strndup(t, 5 + n);
    }
    return path;
}

/* The path of the click link to the RSVP page in the newest email to lead l in the maildir,
 * malloc'd, or NULL. */
static char *rsvp_path(const demo_t *d, const lead_t *l)
{
    const char *addr = jstr(l->attrs, "email");
    char *dir_path = NULL, *best = NULL;
    struct timespec best_at = {0, 0};
    if (addr == NULL || asprintf(&dir_path, "%s/maildir/new", d->data_dir) < 0)
        return NULL;
    DIR *dir = opendir(dir_path);
    for (struct dirent *e = dir ? readdir(dir) : NULL; e != NULL; e = readdir(dir)) {
        char *file = NULL, *msg, *path;
        struct stat sb;
        if (strstr(e->d_name, ".eml") == NULL ||
            asprintf(&file, "%s/%s", dir_path, e->d_name) < 0)
            continue;
        if (stat(file, &sb) != 0 || sb.st_size > (1 << 20) ||
            sb.st_mtim.tv_sec < best_at.tv_sec ||
            (sb.st_mtim.tv_sec == best_at.tv_sec && sb.st_mtim.tv_nsec < best_at.tv_nsec) ||
            (msg = read_small_file(file, (size_t)sb.st_size)) == NULL) {
            free(file);
            continue;
        }
        free(file);
        path = message_rsvp_path(msg, addr);
        free(msg);
        if (path != NULL) {
            free(best);
            best = path;
            best_at = sb.st_mtim;
        }
    }
    if (dir != NULL)
        closedir(dir);
    free(dir_path);
    return best;
}

/* The person opens the RSVP link of their invitation email (the Yes / No page) and answers. */
static void rsvp_answer(demo_t *d, pend_t *p)
{
    lead_t *l = &d->leads[p->lead];
    const char *answer = jstr(p->attrs, "answer");
    char *click = rsvp_path(d, l), *link = NULL, *path = NULL;
    long st = -1;

    if (click != NULL) {
        /* the click link redirects to the RSVP page: /t/r/<token> at nurtured */
        const char *to = NULL, *r;
        st = http_do(&d->person, "GET", click, NULL);
        if (st == 302 && curl_easy_getinfo(d->person.h, CURLINFO_REDIRECT_URL, &to) == CURLE_OK &&
            to != NULL && (r = strstr(to, "/t/r/")) != NULL)
            link = xstrdup(r);
        else
            st = 0;
    }
    if (link != NULL && asprintf(&path, "%s?answer=%s", link, answer) >= 0) {
        st = http_do(&d->person, "GET", link, NULL);
        if (st == 200 && strstr(d->person.body.p, "value=\"yes\"") == NULL)
            st = 0; /* not the page that asks */
        if (st == 200)
            st = http_do(&d->person, "POST", path, "");
    }
    free(click);
    free(link);
    free(path);
    if (st != 200) {
        d->rsvp_failed++;
        say(d, l, "", "<- could not answer the invitation: %s",
            st < 0 ? "no RSVP link found in their email" : "the link was refused");
        return;
    }
    l->rsvp = answer[0];
    if (l->rsvp == 'y')
        d->rsvp_yes++;
    else
        d->rsvp_no++;
    visit_t *v = visit_find(l, p->plan, p->node, p->visit);
    if (v != NULL && l->rsvp == 'y')
        v->human_posted = 1;
    say(d, l, "", "<- RSVP %s, through the link in the invitation email", answer);
}

/* A lead that exists only from now on (a badge scan nurture did not know). */
static void lead_add(demo_t *d, const char *id)
{
    d->leads = xrealloc(d->leads, (d->nleads + 1) * sizeof(*d->leads));
    lead_t *l = &d->leads[d->nleads++];
    memset(l, 0, sizeof(*l));
    l->id = xstrdup(id);
    l->label = xstrdup(id);
    l->stage = xstrdup("");
    l->source = xstrdup("");
    l->role = "other";
    l->from_scan = 1;
}

/* Write s as a quoted CSV field. */
static void csv_field(FILE *f, const char *s, int last)
{
    fputc('"', f);
    for (; s != NULL && *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputs(last ? "\"\n" : "\",", f);
}

/* Run argv (argv[0] a path), its output and errors in *out (malloc'd). Returns the exit status,
 * or -1 when it could not run. */
static int run_capture(char *const argv[], char **out)
{
    int fds[2];
    *out = NULL;
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    membuf_t b = {0};
    char chunk[4096];
    ssize_t n;
    while ((n = read(fds[0], chunk, sizeof(chunk))) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        b.p = xrealloc(b.p, b.n + (size_t)n + 1);
        memcpy(b.p + b.n, chunk, (size_t)n);
        b.n += (size_t)n;
        b.p[b.n] = '\0';
    }
    close(fds[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    *out = b.p != NULL ? b.p : xstrdup("");
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* People at the booth whom nurture has never heard of: they become leads at the import. */
static const char *const strangers[][5] = {
    {"katarzyna.nowak@vistula-logistics.example", "Katarzyna", "Nowak", "Vistula Logistics",
     "VP Revenue Operations"},
    {"pieter.devries@grachten.example", "Pieter", "de Vries", "Grachten Software B.V.",
     "Marketing Operations Manager"},
    {"ingrid.solberg@aurora-energy.example", "Ingrid", "Solberg", "Aurora Energi AS",
     "Data Engineer"},
};

/* The badge scanner's export of the first day, imported as ops would: a CSV with the scans of
 * the people who came, three strangers and one row the scanner garbled, through `nurturectl
 * events import EVENT FILE --followup PLAN` (signed check-ins to POST /v1/webhooks/event). */
static void badge_scan(demo_t *d)
{
    char *csv = NULL, at[32];
    d->scan_done = 1;
    if (asprintf(&csv, "%s/badges-%s-day1.csv", d->data_dir, d->event) < 0)
        return;
    FILE *f = fopen(csv, "w");
    if (f == NULL) {
        fprintf(stderr, "nt-demo: cannot write %s: %s\n", csv, strerror(errno));
        free(csv);
        return;
    }
    time_t t = (time_t)(plan_now(d) / 1000);
    strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    fputs("email,first_name,last_name,company,title,checked_in_at\n", f);
    size_t n = d->nscans + 4, k = 0, bad_at = d->nscans / 2;
    long walk_ins = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == bad_at) {
            /* The scanner read a badge with its address garbled. */
            fputs("\"jan.devries(at)brabant-machines.example\",\"Jan\",\"de Vries\","
                  "\"Brabant Machines\",\"Plant Manager\",", f);
            csv_field(f, at, 1);
        } else if (k < d->nscans) {
            const lead_t *l = &d->leads[d->scans[k++]];
            walk_ins += !lead_registered(l);
            csv_field(f, jstr(l->attrs, "email"), 0);
            csv_field(f, jstr(l->attrs, "first_name"), 0);
            csv_field(f, jstr(l->attrs, "last_name"), 0);
            csv_field(f, jstr(l->attrs, "company"), 0);
            csv_field(f, jstr(l->attrs, "title"), 0);
            csv_field(f, at, 1);
        } else {
            const char *const *p = strangers[i - d->nscans - (bad_at < i ? 1 : 0)];
            for (int c = 0; c < 5; c++)
                csv_field(f, p[c], 0);
            csv_field(f, at, 1);
        }
    }
    fclose(f);

    char title[160];
    snprintf(title, sizeof(title), "%s: the badge scanner, plan day %d", d->event, plan_day(d));
    rule(title);
    printf("  the first day's scans at the entrance and the booth: %zu of our leads (%ld of them "
           "walked in\n  without registering), 3 people we have never heard of, and 1 badge the "
           "scanner read garbled,\n  in %s\n", d->nscans, walk_ins, csv);
    printf("  $ nurturectl events import %s %s --followup %s\n", d->event, strrchr(csv, '/') + 1,
           d->event_plan);
    char *out = NULL;
    char *argv[] = {(char *)d->nurturectl, "--url", (char *)d->url, "--data-dir",
                    (char *)d->data_dir, "events", "import", (char *)d->event, csv,
                    "--followup", (char *)d->event_plan, NULL};
    int st = run_capture(argv, &out);
    for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        printf("    %s\n", line);
        if (strstr(line, " is not an email address") || strstr(line, " fields, the header has"))
            d->scan_bad++;
        if (strncmp(line, d->event, strlen(d->event)) == 0 && line[strlen(d->event)] == ':') {
            free(d->scan_summary);
            d->scan_summary = xstrdup(line + strlen(d->event) + 2);
        }
    }
    if (st != 0)
        printf("    (nurturectl exited with status %d)\n", st);
    free(out);
    printf("\n");
    /* The strangers are leads now: follow them like everybody else. */
    for (size_t i = 0; i < sizeof(strangers) / sizeof(strangers[0]); i++) {
        if (lead_index(d, strangers[i][0]) != (size_t)-1)
            continue;
        lead_add(d, strangers[i][0]);
    }
    free(csv);
}

/* A lead has just been seen resting at a wait_event node: decide, once per visit, whether the
 * person does what the node waits for and when, and what machines do in the meantime. */
static void world_visit(demo_t *d, size_t li, const run_t *r, const Nt__WaitEvent *we)
{
    lead_t *l = &d->leads[li];
    if (we->filter == NULL || we->filter->type == NULL || visit_find(l, r->plan, r->node, r->visit))
        return;
    l->visits = xrealloc(l->visits, (l->nvisits + 1) * sizeof(*l->visits));
    visit_t *v = &l->visits[l->nvisits++];
    memset(v, 0, sizeof(*v));
    v->plan = xstrdup(r->plan);
    v->node = xstrdup(r->node);
    v->visit = r->visit;

    const char *type = we->filter->type;
    int64_t span = duration_ms(we->timeout);
    if (span <= 0)
        span = 3 * DEMO_DAY_MS;
    v->type = type;
    v->span = span;
    /* The node was entered when its timeout started; when unknown, now. */
    int64_t entered = r->due > 0 ? r->due - span : plan_now(d);
    int64_t now = plan_now(d);
    if (entered > now)
        entered = now;
    char vis[16];
    snprintf(vis, sizeof(vis), "%u", r->visit);
    uint64_t s = fnv(fnv(fnv(fnv(d->seed, l->id), r->plan), r->node), vis);
    int is_email = strncmp(type, "email.", 6) == 0 || strncmp(type, "content.", 8) == 0;

    if (d->event != NULL && strcmp(type, "event.rsvp") == 0) {
        rsvp_visit(d, li, r, v, entered, span, &s);
        return;
    }
    if (d->event != NULL && strcmp(type, "event.checked_in") == 0) {
        show_visit(d, li, v, entered, span, &s);
        return;
    }

    json_t *attrs = json_object();
    for (size_t i = 0; i < we->filter->n_attrs; i++)
        if (we->filter->attrs[i] != NULL && we->filter->attrs[i]->name != NULL)
            json_object_set_new(attrs, we->filter->attrs[i]->name,
                                json_string(we->filter->attrs[i]->value ?: ""));

    /* Privacy proxies open every mail they fetch, at once; link scanners follow links. */
    if (is_email && unif(&s) < 0.30)
        pend_add(d, li, PEND_NOISE, r->plan, r->node, r->visit, "email.opened", NULL, 1,
                 "privacy proxy", real_at(d, entered + (int64_t)(0.002 * (double)span)));
    int scanner = strcmp(type, "email.clicked") == 0 ? unif(&s) < 0.28
                  : strcmp(type, "content.downloaded") == 0 ? unif(&s) < 0.15 : 0;
    if (scanner) {
        v->machine = 1;
        pend_add(d, li, PEND_MATCH, r->plan, r->node, r->visit, type, json_deep_copy(attrs), 1,
                 "link scanner", real_at(d, entered + (int64_t)(0.004 * (double)span)));
    }
    double p = propensity(l, type);
    if (unif(&s) < p) {
        double u = unif(&s);
        double frac = 0.04 + 0.80 * u * u; /* most people react soon, some late */
        v->human = 1;
        if (is_email && strcmp(type, "email.opened") != 0)
            pend_add(d, li, PEND_NOISE, r->plan, r->node, r->visit, "email.opened", NULL, 0,
                     NULL, real_at(d, entered + (int64_t)(frac * 0.7 * (double)span)));
        pend_add(d, li, PEND_MATCH, r->plan, r->node, r->visit, type, json_incref(attrs), 0,
                 NULL, real_at(d, entered + (int64_t)(frac * (double)span)));
    } else if (is_email && unif(&s) < p) {
        /* Read it, did not act on it. */
        pend_add(d, li, PEND_NOISE, r->plan, r->node, r->visit, "email.opened", NULL, 0, NULL,
                 real_at(d, entered + (int64_t)(0.3 * unif(&s) * (double)span)));
    }
    json_decref(attrs);
}

static const run_t *run_of(const lead_t *l, const char *plan)
{
    for (size_t i = 0; i < l->nruns; i++)
        if (strcmp(l->runs[i].plan, plan) == 0)
            return &l->runs[i];
    return NULL;
}

static void post_event(demo_t *d, pend_t *p)
{
    lead_t *l = &d->leads[p->lead];
    json_t *b = json_pack("{s:s, s:s, s:O, s:b}", "lead", l->id, "type", p->type, "attributes",
                          p->attrs, "machine", p->machine);
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    long st = http_do(&d->http, "POST", "/v1/events", s);
    free(s);
    if (st != 202) {
        say(d, l, "", "<- %s could not be posted (HTTP %ld)", p->type, st);
        return;
    }
    if (p->machine)
        d->posted_machine++;
    else
        d->posted_human++;
    visit_t *v = p->kind == PEND_MATCH ? visit_find(l, p->plan, p->node, p->visit) : NULL;
    if (v != NULL && !p->machine)
        v->human_posted = 1;
    /* Opens move nothing in these plans: counted, not shown. */
    if (strcmp(p->type, "email.opened") == 0)
        return;
    if (p->machine)
        say(d, l, "", "<- %-22s (machine: %s)", p->type, p->why);
    else
        say(d, l, "", "<- %s", p->type);
}

/* Post every world event that is due. Events for a visit the lead has already left are
 * dropped: the person came too late, and must not match a later node by accident. */
static void world_tick(demo_t *d)
{
    int64_t now = real_ms();
    size_t k = 0;
    for (size_t i = 0; i < d->npend; i++) {
        pend_t *p = &d->pend[i];
        if (p->fire_real > now || stop_requested) {
            d->pend[k++] = *p;
            continue;
        }
        const run_t *r = p->kind == PEND_UNSUB ? NULL : run_of(&d->leads[p->lead], p->plan);
        if (p->kind != PEND_UNSUB &&
            (r == NULL || strcmp(r->node, p->node) != 0 || r->visit != p->visit ||
             strcmp(r->status, "active") != 0)) {
            if (p->kind == PEND_MATCH && !p->machine)
                d->late_dropped++;
        } else if (p->kind == PEND_RSVP) {
            rsvp_answer(d, p);
        } else {
            post_event(d, p);
        }
        free(p->plan);
        free(p->node);
        free(p->type);
        json_decref(p->attrs);
    }
    d->npend = k;
    /* Unsubscribes come from the person, whenever they have had enough. */
    int64_t pn = plan_now(d);
    for (size_t i = 0; i < d->nleads && !stop_requested; i++) {
        lead_t *l = &d->leads[i];
        if (l->unsub_at == 0 || l->unsub_done || pn < l->unsub_at)
            continue;
        l->unsub_done = 1;
        int active = 0;
        for (size_t j = 0; j < l->nruns; j++)
            active |= strcmp(l->runs[j].status, "active") == 0;
        if (!active)
            continue;
        pend_t p = {.lead = i, .kind = PEND_UNSUB, .type = "email.unsubscribed",
                    .attrs = json_object()};
        post_event(d, &p);
        json_decref(p.attrs);
    }
}

/* ---------------------------------------------------------------- the sales reps */

static const char *const call_outcomes[] = {"connected",      "left_voicemail", "no_answer",
                                            "meeting_booked", "not_interested", "wrong_number",
                                            NULL};

static size_t lead_index(const demo_t *d, const char *id)
{
    for (size_t i = 0; i < d->nleads; i++)
        if (strcmp(d->leads[i].id, id) == 0)
            return i;
    return (size_t)-1;
}

static call_t *call_find(demo_t *d, const char *id)
{
    for (size_t i = 0; i < d->ncalls; i++)
        if (strcmp(d->calls[i].id, id) == 0)
            return &d->calls[i];
    return NULL;
}

/* "meeting_booked" -> "meeting booked" (a static buffer). */
static const char *words(const char *s)
{
    static char buf[64];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *p = buf; *p; p++)
        if (*p == '_')
            *p = ' ';
    return buf;
}

/* What the call brings, for this lead: engaged, high-scoring leads pick up and book more often;
 * the rest mostly get the voicemail. Seeded per task, so a run is repeatable. */
static const char *draw_outcome(const demo_t *d, const lead_t *l, uint64_t *s)
{
    double e = l->engage, sc = (double)(l->score > 100 ? 100 : l->score < 0 ? 0 : l->score);
    if (unif(s) < 0.30 + 0.45 * e) {
        double w_meet = 0.10 + 0.60 * e + sc / 300.0, w_conn = 0.45, w_not = 0.35 * (1.0 - e);
        double u = unif(s) * (w_meet + w_conn + w_not);
        (void)d;
        return u < w_meet ? "meeting_booked" : u < w_meet + w_conn ? "connected"
                                                                   : "not_interested";
    }
    double u = unif(s);
    return u < 0.55 ? "left_voicemail" : u < 0.95 ? "no_answer" : "wrong_number";
}

static const char *call_note_text(const char *outcome, uint64_t *s)
{
    static const char *const meet[] = {"Discovery call booked for Tuesday 10:00",
                                       "Booked a 30-minute demo with their team lead",
                                       "Meeting Thursday; they will bring their architect"};
    static const char *const conn[] = {"Good chat; budget is set after Q3 planning",
                                       "Interested, wants the case study first",
                                       "Talked briefly; call back next month"};
    static const char *const vm[] = {"Left a voicemail pointing to the booking link",
                                     "Voicemail: mentioned the guide they downloaded"};
    static const char *const na[] = {"No answer", "Rang out; no voicemail box"};
    static const char *const ni[] = {"Not a priority this year",
                                     "Happy with their current vendor"};
    const char *const *v;
    size_t n;
    if (strcmp(outcome, "meeting_booked") == 0)
        v = meet, n = 3;
    else if (strcmp(outcome, "connected") == 0)
        v = conn, n = 3;
    else if (strcmp(outcome, "left_voicemail") == 0)
        v = vm, n = 2;
    else if (strcmp(outcome, "no_answer") == 0)
        v = na, n = 2;
    else if (strcmp(outcome, "not_interested") == 0)
        v = ni, n = 2;
    else
        return "The number belongs to someone else";
    return v[(size_t)(unif(s) * (double)n) % n];
}

/* A task the reps have not seen before: decide when the rep gets to it and how it goes. */
static void call_plan(demo_t *d, size_t ri, const json_t *t)
{
    const char *id = jstr(t, "id"), *lid = jstr(t, "lead");
    size_t li = lid != NULL ? lead_index(d, lid) : (size_t)-1;
    if (id == NULL || li == (size_t)-1 || call_find(d, id) != NULL)
        return;
    lead_t *l = &d->leads[li];
    d->calls = xrealloc(d->calls, (d->ncalls + 1) * sizeof(*d->calls));
    call_t *c = &d->calls[d->ncalls++];
    memset(c, 0, sizeof(*c));
    c->id = xstrdup(id);
    c->lead = li;
    c->rep = ri;
    c->plan = xstrdup(jstr(t, "plan"));
    c->node = xstrdup(jstr(t, "node"));
    c->visit = (unsigned)jint(t, "visit");
    uint64_t s = fnv(fnv(d->seed, "call"), id);
    /* Most calls happen within the working day; a swamped rep sometimes gets to one only after
     * the plan has given up on it (its timeout), and the task has expired by then. */
    double hours = unif(&s) < 0.08 ? 50.0 + 20.0 * unif(&s) : 0.5 + 7.5 * unif(&s);
    c->call_real = real_ms() + (int64_t)(hours * 3600000.0 / d->scale);
    c->outcome = draw_outcome(d, l, &s);
    c->state = CALL_PLANNED;

    char reason[64];
    const char *r = jstr(t, "reason") ?: "";
    snprintf(reason, sizeof(reason), "%s", r);
    if (strlen(r) >= sizeof(reason))
        memcpy(reason + sizeof(reason) - 4, "...", 4);
    char who[80];
    snprintf(who, sizeof(who), "rep %s", d->reps[ri].name);
    say(d, l, who, "call task %s%s: \"%s\"", c->node,
        jstr(t, "priority") && strcmp(jstr(t, "priority"), "high") == 0 ? " (high)" : "",
        reason);
}

/* The message of an error answer, or the body. */
static const char *err_message(const http_t *h)
{
    static char buf[400];
    json_t *j = json_loads(h->body.p, 0, NULL);
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    snprintf(buf, sizeof(buf), "%s", m ? m : h->body.p);
    json_decref(j);
    return buf;
}

/* Every ~300 ms: each rep lists their open tasks, and one of them the team queue. */
static void reps_look(demo_t *d)
{
    for (size_t ri = 0; ri < d->nreps && !stop_requested; ri++) {
        json_t *j = http_get_json(&d->reps[ri].http, "/v1/tasks?mine=1");
        size_t i;
        const json_t *t;
        json_array_foreach(json_object_get(j, "tasks"), i, t)
            call_plan(d, ri, t);
        json_decref(j);
    }
    if (d->nreps == 0 || d->team == NULL)
        return;
    for (size_t k = 0; k < d->nreps; k++) {
        size_t ri = (d->queue_turn + k) % d->nreps;
        if (!d->reps[ri].in_team)
            continue;
        d->queue_turn = ri + 1;
        char path[160];
        snprintf(path, sizeof(path), "/v1/tasks?team=%s", d->team);
        long st = http_do(&d->reps[ri].http, "GET", path, NULL);
        if (st == 403) {
            d->reps[ri].in_team = 0;
            continue;
        }
        json_t *j = st == 200 ? json_loads(d->reps[ri].http.body.p, 0, NULL) : NULL;
        size_t i;
        const json_t *t;
        json_array_foreach(json_object_get(j, "tasks"), i, t)
            call_plan(d, ri, t);
        json_decref(j);
        break;
    }
}

/* The calls that are due: the rep claims the task, calls, and logs the outcome with a note. */
static void reps_call(demo_t *d)
{
    int64_t now = real_ms();
    for (size_t i = 0; i < d->ncalls && !stop_requested; i++) {
        call_t *c = &d->calls[i];
        if (c->state != CALL_PLANNED || c->call_real > now)
            continue;
        demo_rep_t *rep = &d->reps[c->rep];
        lead_t *l = &d->leads[c->lead];
        char who[80], path[600], body[600];
        snprintf(who, sizeof(who), "rep %s", rep->name);
        char *e = curl_easy_escape(rep->http.h, c->id, 0);
        snprintf(path, sizeof(path), "/v1/tasks/%s/claim", e);
        long st = http_do(&rep->http, "POST", path, "");
        if (st == 200) {
            uint64_t s = fnv(fnv(d->seed, "note"), c->id);
            json_t *b = json_pack("{s:s, s:s}", "outcome", c->outcome, "note",
                                  call_note_text(c->outcome, &s));
            char *js = json_dumps(b, JSON_COMPACT);
            json_decref(b);
            snprintf(path, sizeof(path), "/v1/tasks/%s/complete", e);
            snprintf(body, sizeof(body), "%s", js);
            free(js);
            st = http_do(&rep->http, "POST", path, body);
        }
        curl_free(e);
        if (st == 200) {
            c->state = CALL_DONE;
            rep->calls++;
            uint64_t s = fnv(fnv(d->seed, "note"), c->id);
            say(d, l, who, "call completed: %s  \"%s\"", words(c->outcome),
                call_note_text(c->outcome, &s));
        } else if (st == 409 && strstr(rep->http.body.p, "expired") != NULL) {
            /* "... has expired: <why> before the call was logged, ...": show the why. */
            const char *m = err_message(&rep->http), *a = strstr(m, "has expired: ");
            const char *z = a != NULL ? strstr(a, " before the call was logged") : NULL;
            c->state = CALL_EXPIRED;
            if (a != NULL && z != NULL)
                say(d, l, who, "too late (409, task expired): %.*s", (int)(z - a - 13), a + 13);
            else
                say(d, l, who, "too late (409): %s", m);
        } else if (st == 409 || st == 404) {
            c->state = CALL_GONE;
            say(d, l, who, "could not log the call (HTTP %ld): %s", st, err_message(&rep->http));
        } else if (st < 0 || st >= 500) {
            c->call_real = now + 500; /* nurtured busy or away: try again shortly */
        } else {
            c->state = CALL_GONE;
            say(d, l, who, "could not log the call (HTTP %ld): %s", st, err_message(&rep->http));
        }
    }
}

/* Why a lead left a call step: "(rep ana: meeting booked)", or "(no call logged in 2 days)". */
static const char *call_note(const demo_t *d, const lead_t *l, const run_t *old,
                             const Nt__Node *n)
{
    static char buf[160];
    buf[0] = '\0';
    if (n == NULL || n->kind_case != NT__NODE__KIND_SEND || n->send->channel == NULL ||
        strcmp(n->send->channel, "call") != 0)
        return buf;
    for (size_t i = 0; i < d->ncalls; i++) {
        const call_t *c = &d->calls[i];
        if (&d->leads[c->lead] != l || c->visit != old->visit || strcmp(c->plan, old->plan) != 0 ||
            strcmp(c->node, old->node) != 0)
            continue;
        if (c->state == CALL_DONE) {
            snprintf(buf, sizeof(buf), "  (rep %s: %s)", d->reps[c->rep].name,
                     words(c->outcome));
            return buf;
        }
    }
    int64_t span = duration_ms(n->send->timeout);
    if (span > 0 && span % DEMO_DAY_MS == 0)
        snprintf(buf, sizeof(buf), "  (no call logged in %d day%s)", (int)(span / DEMO_DAY_MS),
                 span == DEMO_DAY_MS ? "" : "s");
    else if (span > 0)
        snprintf(buf, sizeof(buf), "  (no call logged in %d hours)", (int)(span / 3600000));
    return buf;
}

/* ---------------------------------------------------------------- following the leads */

/* Text of the newest timeline entries we have not processed yet, oldest first, passed to fn. */
static void timeline_new(demo_t *d, lead_t *l, const json_t *tl,
                         void (*fn)(demo_t *, lead_t *, const char *text, int64_t at))
{
    size_t n = json_array_size(tl), stop = n;
    char key[1200];
    for (size_t i = 0; i < n && l->tl_top != NULL; i++) {
        const json_t *e = json_array_get(tl, i);
        snprintf(key, sizeof(key), "%" PRId64 "|%s|%s", jint(e, "at"), jstr(e, "kind") ?: "",
                 jstr(e, "text") ?: "");
        if (strcmp(key, l->tl_top) == 0) {
            stop = i;
            break;
        }
    }
    for (size_t i = stop; i-- > 0;) {
        const json_t *e = json_array_get(tl, i);
        clock_saw(d, jint(e, "at"));
        if (fn != NULL)
            fn(d, l, jstr(e, "text") ?: "", jint(e, "at"));
    }
    if (n > 0) {
        const json_t *e = json_array_get(tl, 0);
        snprintf(key, sizeof(key), "%" PRId64 "|%s|%s", jint(e, "at"), jstr(e, "kind") ?: "",
                 jstr(e, "text") ?: "");
        free(l->tl_top);
        l->tl_top = xstrdup(key);
    }
}

/* Does text say "<what> at <node>" with node ending at ';' or the end? */
static int says_at(const char *text, const char *what, const char *node)
{
    size_t wl = strlen(what), nl = strlen(node);
    for (const char *p = strstr(text, what); p != NULL; p = strstr(p + 1, what)) {
        const char *q = p + wl;
        if (strncmp(q, " at ", 4) == 0 && strncmp(q + 4, node, nl) == 0 &&
            (q[4 + nl] == ';' || q[4 + nl] == '\0' || q[4 + nl] == ' '))
            return 1;
    }
    return 0;
}

/* Settle open wait_event visits from the steps the daemon wrote into the timeline. */
static void on_step(demo_t *d, lead_t *l, const char *text, int64_t at)
{
    for (size_t i = 0; i < l->nvisits; i++) {
        visit_t *v = &l->visits[i];
        if (v->result != 0)
            continue;
        if (says_at(text, "matched", v->node))
            v->result = 1;
        else if (says_at(text, "no matching event", v->node))
            v->result = 2;
    }
}

/* A short reason for leaving a wait_event node, from the daemon's timeline: "(email.clicked)"
 * or "(no email.clicked in 3 days)". Returns a static buffer. */
static const char *leave_note(const lead_t *l, const run_t *old, const Nt__Node *n)
{
    static char buf[160];
    buf[0] = '\0';
    if (n == NULL || n->kind_case != NT__NODE__KIND_WAIT_EVENT)
        return buf;
    for (size_t i = 0; i < l->nvisits; i++) {
        const visit_t *v = &l->visits[i];
        if (v->visit != old->visit || strcmp(v->plan, old->plan) != 0 ||
            strcmp(v->node, old->node) != 0)
            continue;
        if (v->result == 1) {
            snprintf(buf, sizeof(buf), "  (%s)", v->type);
        } else if (v->result == 2) {
            if (v->span % DEMO_DAY_MS == 0)
                snprintf(buf, sizeof(buf), "  (no %s in %d day%s)", v->type,
                         (int)(v->span / DEMO_DAY_MS), v->span == DEMO_DAY_MS ? "" : "s");
            else
                snprintf(buf, sizeof(buf), "  (no %s in %d hours)", v->type,
                         (int)(v->span / 3600000));
        }
    }
    return buf;
}

static void run_set(run_t *r, const json_t *j)
{
    free(r->node);
    free(r->status);
    free(r->exit_reason);
    r->node = xstrdup(jstr(j, "node"));
    r->status = xstrdup(jstr(j, "status"));
    r->exit_reason = xstrdup(jstr(j, "exit_reason"));
    r->visit = (unsigned)jint(j, "visit");
    r->due = jint(j, "due_at");
}

/* "The CRM": a lead that marketing has qualified is enrolled in the hand-off plan. */
static void maybe_handoff(demo_t *d, lead_t *l)
{
    if (d->handoff == NULL || l->handoff_tried || plan_find(d, d->handoff) == NULL)
        return;
    if (l->stage == NULL || strcmp(l->stage, "mql") != 0 || run_of(l, d->handoff) != NULL)
        return;
    l->handoff_tried = 1;
    char path[512], body[256];
    char *e = curl_easy_escape(d->http.h, l->id, 0);
    snprintf(path, sizeof(path), "/v1/leads/%s/enrol", e);
    curl_free(e);
    snprintf(body, sizeof(body), "{\"plan\":\"%s\"}", d->handoff);
    long st = http_do(&d->http, "POST", path, body);
    if (st == 202) {
        d->handoffs++;
        say(d, l, "crm", "qualified: enrolled in %s", d->handoff);
    }
}

/* Read one lead and print what changed. Returns 0, or -1 when nurtured did not answer. */
static int poll_lead(demo_t *d, size_t li, int quiet)
{
    lead_t *l = &d->leads[li];
    char path[400];
    char *e = curl_easy_escape(d->http.h, l->id, 0);
    snprintf(path, sizeof(path), "/v1/leads/%s", e);
    curl_free(e);
    long st = http_do(&d->http, "GET", path, NULL);
    if (st == 404)
        return 0;
    if (st != 200)
        return -1;
    json_t *j = json_loads(d->http.body.p, 0, NULL);
    if (j == NULL)
        return -1;
    const json_t *attrs = json_object_get(j, "attributes");
    json_decref(l->attrs);
    l->attrs = json_deep_copy(attrs);
    int64_t score = jint(j, "score");
    const char *stage = jstr(j, "stage") ?: "";
    if (!l->known) {
        l->known = 1;
        l->score = score;
        free(l->stage);
        l->stage = xstrdup(stage);
        l->max_stage = stage_rank(stage);
        lead_profile(d, l, attrs);
        lead_label(l, attrs);
    }
    timeline_new(d, l, json_object_get(j, "timeline"), on_step);

    /* Score and stage changes ride on the first move printed for this lead, if any. */
    char extra[160] = "";
    if (score != l->score)
        snprintf(extra, sizeof(extra), "  score %" PRId64 " -> %" PRId64, l->score, score);
    if (strcmp(stage, l->stage) != 0)
        snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra), "  stage %s -> %s",
                 l->stage[0] ? l->stage : "none", stage);

    size_t i;
    const json_t *rj;
    json_array_foreach(json_object_get(j, "runs"), i, rj) {
        const char *plan = jstr(rj, "plan");
        if (plan == NULL)
            continue;
        clock_saw(d, jint(rj, "entered_at"));
        run_t *r = NULL;
        for (size_t k = 0; k < l->nruns; k++)
            if (strcmp(l->runs[k].plan, plan) == 0)
                r = &l->runs[k];
        if (r == NULL) {
            l->runs = xrealloc(l->runs, (l->nruns + 1) * sizeof(*l->runs));
            r = &l->runs[l->nruns++];
            memset(r, 0, sizeof(*r));
            r->plan = xstrdup(plan);
            run_set(r, rj);
            if (!quiet) {
                say(d, l, plan, "enrolled -> %s%s", r->node, extra);
                extra[0] = '\0';
            }
        } else if (strcmp(r->node, jstr(rj, "node") ?: "") != 0 || r->visit != jint(rj, "visit") ||
                   strcmp(r->status, jstr(rj, "status") ?: "") != 0) {
            run_t old = {.plan = r->plan, .node = xstrdup(r->node), .visit = r->visit};
            int was_active = strcmp(r->status, "active") == 0;
            const Nt__Node *left = node_find(d, plan, old.node);
            const char *note = leave_note(l, &old, left);
            if (note[0] == '\0')
                note = call_note(d, l, &old, left);
            run_set(r, rj);
            if (!quiet && strcmp(r->status, "active") != 0 && was_active) {
                const char *why = r->exit_reason[0] ? r->exit_reason : r->status;
                if (strcmp(old.node, r->node) == 0)
                    say(d, l, plan, "%s  [ended: %s]%s", r->node, why, extra);
                else
                    say(d, l, plan, "%s -> %s%s  [ended: %s]%s", old.node, r->node, note, why,
                        extra);
                extra[0] = '\0';
            } else if (!quiet && strcmp(old.node, r->node) != 0) {
                say(d, l, plan, "%s -> %s%s%s", old.node, r->node, note, extra);
                extra[0] = '\0';
            }
            free(old.node);
        }
        if (strcmp(r->status, "active") == 0) {
            const Nt__Node *n = node_find(d, plan, r->node);
            if (n != NULL && n->kind_case == NT__NODE__KIND_WAIT_EVENT)
                world_visit(d, li, r, n->wait_event);
        }
    }
    if (!quiet && extra[0] != '\0')
        say(d, l, "", "%s", extra + 2);
    l->score = score;
    if (strcmp(stage, l->stage) != 0) {
        free(l->stage);
        l->stage = xstrdup(stage);
        if (stage_rank(stage) > l->max_stage && stage_rank(stage) <= stage_rank("won"))
            l->max_stage = stage_rank(stage);
    }
    json_decref(j);
    maybe_handoff(d, l);
    return 0;
}

static int all_done(const demo_t *d)
{
    if (d->npend > 0)
        return 0;
    int seen = 0;
    for (size_t i = 0; i < d->nleads; i++)
        for (size_t k = 0; k < d->leads[i].nruns; k++) {
            seen = 1;
            if (strcmp(d->leads[i].runs[k].status, "active") == 0)
                return 0;
        }
    return seen;
}

/* ---------------------------------------------------------------- funnel */

static void exits_line(const json_t *exits)
{
    const char *k;
    const json_t *v;
    int first = 1;
    printf(" exits:");
    json_object_foreach((json_t *)exits, k, v) {
        printf("%s %s %" JSON_INTEGER_FORMAT, first ? "" : ",", k, json_integer_value(v));
        first = 0;
    }
    printf("%s\n", first ? " none yet" : "");
}

/* The per-node funnel of one plan. full: every node a lead entered, with labels, and the
 * nodes nobody entered; else only the nodes where leads are now. */
static void funnel_plan(demo_t *d, const char *plan, int full)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/plans/%s/stats", plan);
    json_t *j = http_get_json(&d->http, path);
    if (j == NULL) {
        printf("  %s: no stats (nurtured did not answer)\n", plan);
        return;
    }
    const json_t *nodes = json_object_get(j, "nodes");
    int64_t active = jint(j, "active");
    printf("  %-22s enrolled %3" PRId64 ", active %3" PRId64, plan, jint(j, "enrolled"), active);
    if (!full && active == 0) {
        printf(" ");
        exits_line(json_object_get(j, "exits"));
        json_decref(j);
        return;
    }
    printf("\n");
    if (full)
        printf("    %-22s %-10s %-34s %6s %8s\n", "node", "kind", "label", "now at", "entered");
    else
        printf("    %-22s %-10s %6s %8s\n", "node", "kind", "now at", "entered");
    size_t i;
    const json_t *n;
    json_array_foreach(nodes, i, n) {
        int64_t cur = jint(n, "current"), ent = jint(n, "entered");
        if (full ? ent == 0 : cur == 0)
            continue;
        printf("    %-22s %-10s ", jstr(n, "id") ?: "?", jstr(n, "kind") ?: "?");
        if (full) {
            char label[64];
            snprintf(label, sizeof(label), "%s", jstr(n, "label") ?: "");
            if (text_width(label) > 34)
                snprintf(label + 30, sizeof(label) - 30, "...");
            put_padded(stdout, label, 34);
            fputc(' ', stdout);
        }
        if (cur > 0)
            printf("%6" PRId64 " %8" PRId64 "\n", cur, ent);
        else
            printf("%6s %8" PRId64 "\n", "", ent);
    }
    printf("   ");
    exits_line(json_object_get(j, "exits"));
    if (full) {
        int col = 0, none = 1;
        json_array_foreach(nodes, i, n) {
            if (jint(n, "entered") != 0)
                continue;
            const char *id = jstr(n, "id") ?: "?";
            if (none)
                col = printf("    never entered:");
            else if (col + (int)strlen(id) + 2 > 100)
                col = printf(",\n                 ") - 1;
            else
                col += printf(",");
            col += printf(" %s", id);
            none = 0;
        }
        if (!none)
            printf("\n");
        printf("\n");
    }
    json_decref(j);
}

static void funnel(demo_t *d, int full)
{
    char title[64];
    snprintf(title, sizeof(title), "%s, plan day %d",
             full ? "final funnel" : "where the leads are", plan_day(d));
    rule(title);
    for (size_t i = 0; i < d->nplans; i++)
        funnel_plan(d, d->plans[i].id, full);
    if (!full)
        printf("\n");
}

/* ---------------------------------------------------------------- summary */

static long count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long n = 0;
    int c;
    while ((c = getc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* Count the leads pick() selects and list their ids, unless they are the same leads as the
 * previous list's (prev may be NULL). */
static void list_leads(demo_t *d, const char *title, int (*pick)(const demo_t *, const lead_t *),
                       int (*prev)(const demo_t *, const lead_t *))
{
    int n = 0, same = prev != NULL;
    for (size_t i = 0; i < d->nleads; i++) {
        n += pick(d, &d->leads[i]);
        if (prev != NULL && !pick(d, &d->leads[i]) != !prev(d, &d->leads[i]))
            same = 0;
    }
    printf("  %-34s %3d", title, n);
    if (same || n == 0) {
        printf("%s\n", same && n > 0 ? " (the same leads)" : "");
        return;
    }
    int col = 100;
    for (size_t i = 0; i < d->nleads; i++) {
        if (!pick(d, &d->leads[i]))
            continue;
        const char *id = d->leads[i].id;
        if (col + (int)strlen(id) + 1 > 96)
            col = printf("\n      ") - 1;
        col += printf(" %s", id);
    }
    printf("\n");
}

static int ended_with(const lead_t *l, const char *reason)
{
    for (size_t k = 0; k < l->nruns; k++)
        if (strcmp(l->runs[k].exit_reason, reason) == 0)
            return 1;
    return 0;
}

static int pick_mql(const demo_t *d, const lead_t *l)
{
    return l->max_stage >= stage_rank("mql");
}

static int pick_sales(const demo_t *d, const lead_t *l)
{
    return ended_with(l, "handed_to_sales") || ended_with(l, "attended_mql") ||
           (d->handoff != NULL && run_of(l, d->handoff) != NULL);
}

static int pick_sql(const demo_t *d, const lead_t *l)
{
    return l->max_stage >= stage_rank("sql");
}

static int pick_booked(const demo_t *d, const lead_t *l)
{
    for (size_t i = 0; i < d->ncalls; i++)
        if (&d->leads[d->calls[i].lead] == l && d->calls[i].state == CALL_DONE &&
            strcmp(d->calls[i].outcome, "meeting_booked") == 0)
            return 1;
    return 0;
}

/* Call tasks: how many the reps saw, how the calls went, what expired, who booked meetings. */
static void calls_summary(demo_t *d)
{
    long done = 0, expired = 0, open = 0, gone = 0, by[8] = {0};
    for (size_t i = 0; i < d->ncalls; i++) {
        const call_t *c = &d->calls[i];
        if (c->state == CALL_DONE) {
            done++;
            for (int k = 0; call_outcomes[k]; k++)
                by[k] += strcmp(call_outcomes[k], c->outcome) == 0;
        }
        expired += c->state == CALL_EXPIRED;
        open += c->state == CALL_PLANNED;
        gone += c->state == CALL_GONE;
    }
    printf("  %-34s %zu created, %ld completed, %ld expired before the call (the run had moved "
           "on)%s",
           "call tasks", d->ncalls, done, expired, open || gone ? "," : "\n");
    if (open)
        printf(" %ld still open%s", open, gone ? "," : "\n");
    if (gone)
        printf(" %ld not logged (taken or gone)\n", gone);
    printf("  %-34s", "  completed by outcome");
    for (int k = 0, first = 1; call_outcomes[k]; k++)
        if (by[k] > 0) {
            printf("%s %s %ld", first ? "" : ",", words(call_outcomes[k]), by[k]);
            first = 0;
        }
    printf("%s\n", done ? "" : " none");
    printf("  %-34s", "  calls by rep");
    for (size_t r = 0; r < d->nreps; r++)
        printf("%s %s %ld", r ? "," : "", d->reps[r].name, d->reps[r].calls);
    printf("\n");
    list_leads(d, "meetings booked by a rep's call", pick_booked, pick_sql);
}

static void count_kinds(const json_t *j, void *arg)
{
    long *n = arg; /* invitations, reminders */
    const char *k = jstr(j, "kind");
    n[0] += k != NULL && strcmp(k, "invite") == 0;
    n[1] += k != NULL && strcmp(k, "reminder") == 0;
}

static int status_is(const lead_t *l, const char *status)
{
    const char *s = jstr(l->attrs, "event_status");
    return s != NULL && strcmp(s, status) == 0;
}

/* The event: invitations, answers, the scanner's import and the three follow-up branches, as
 * the plan recorded them on each lead (event_status). */
static void event_summary(demo_t *d)
{
    long attended = 0, walked_in = 0, new_leads = 0, absent = 0, not_registered = 0, said_no = 0,
         waiting = 0, left = 0;
    for (size_t i = 0; i < d->nleads; i++) {
        const lead_t *l = &d->leads[i];
        if (status_is(l, "attended")) {
            attended++;
            new_leads += l->from_scan;
            walked_in += !l->from_scan && !lead_registered(l);
        } else if (status_is(l, "absent")) {
            absent++;
        } else if (status_is(l, "not_registered")) {
            not_registered++;
            said_no += l->rsvp == 'n';
        } else if (run_of(l, d->event_plan) != NULL) {
            if (strcmp(run_of(l, d->event_plan)->status, "active") == 0)
                waiting++;
            else
                left++;
        }
    }
    printf("  %s (plan %s)\n", d->event, d->event_plan);
    long kinds[2] = {0, 0};
    event_lines(d, count_kinds, kinds);
    printf("  %-34s %ld invitations, %ld reminders with signed RSVP links (event channel)\n",
           "  sent", kinds[0], kinds[1]);
    printf("  %-34s yes %ld, no %ld", "  answers through the RSVP links", d->rsvp_yes,
           d->rsvp_no);
    if (d->rsvp_failed)
        printf(", %ld could not be given", d->rsvp_failed);
    printf("\n");
    if (d->scan_done)
        printf("  %-34s %s\n", "  badge scanner import", d->scan_summary ? d->scan_summary
                                                                        : "failed (see above)");
    else
        printf("  %-34s not reached yet\n", "  badge scanner import");
    printf("  %-34s %ld (%ld walked in without registering, %ld new leads from the scan)\n",
           "  attended", attended, walked_in, new_leads);
    printf("  %-34s %ld\n", "  registered but absent", absent);
    printf("  %-34s %ld (%ld of them said no)\n", "  not registered", not_registered, said_no);
    if (left)
        printf("  %-34s %ld (sales took them over, or they unsubscribed)\n",
               "  left the plan before the show", left);
    if (waiting)
        printf("  %-34s %ld (the show is not over for them yet)\n", "  not decided yet", waiting);
}

static void summary(demo_t *d, double elapsed)
{
    char title[96];
    snprintf(title, sizeof(title), "summary after %.0f s: %d plan days", elapsed, plan_day(d));
    rule(title);
    int enrolled = 0;
    for (size_t i = 0; i < d->nleads; i++)
        enrolled += d->leads[i].nruns > 0;
    printf("  %-34s %3zu (%d of them in at least one plan)\n", "leads", d->nleads, enrolled);
    list_leads(d, "reached MQL", pick_mql, NULL);
    list_leads(d, "handed to sales", pick_sales, pick_mql);
    list_leads(d, "sales qualified (meeting booked)", pick_sql, pick_sales);

    printf("  exits by reason\n");
    for (size_t p = 0; p < d->nplans; p++) {
        /* reasons in first-seen order, counted over leads */
        const char *reasons[64];
        int counts[64], nr = 0, active = 0;
        for (size_t i = 0; i < d->nleads; i++) {
            const run_t *r = run_of(&d->leads[i], d->plans[p].id);
            if (r == NULL)
                continue;
            if (strcmp(r->status, "active") == 0) {
                active++;
                continue;
            }
            const char *why = r->exit_reason[0] ? r->exit_reason : r->status;
            int k;
            for (k = 0; k < nr && strcmp(reasons[k], why) != 0; k++)
                ;
            if (k == nr && nr < 64) {
                reasons[nr] = why;
                counts[nr++] = 0;
            }
            if (k < 64)
                counts[k]++;
        }
        printf("      %-20s", d->plans[p].id);
        for (int k = 0; k < nr; k++)
            printf("%s %s %d", k ? "," : "", reasons[k], counts[k]);
        if (active)
            printf("%s still active %d", nr ? "," : "", active);
        if (nr == 0 && active == 0)
            printf(" nobody entered");
        printf("\n");
    }

    long checked = 0, moved = 0;
    for (size_t i = 0; i < d->nleads; i++)
        for (size_t k = 0; k < d->leads[i].nvisits; k++) {
            const visit_t *v = &d->leads[i].visits[k];
            if (!v->machine || v->human || v->result == 0)
                continue;
            checked++;
            if (v->result == 1) {
                moved++;
                printf("  !! %s moved at %s/%s by a machine event\n", d->leads[i].id, v->plan,
                       v->node);
            }
        }
    printf("  %-34s %ld by people, %ld by machines (privacy proxies, link scanners)\n",
           "world events posted", d->posted_human, d->posted_machine);
    printf("  %-34s %ld of %ld waits that only a machine answered\n",
           "leads moved by machine events", moved, checked);
    if (d->handoffs > 0)
        printf("  %-34s %ld (the CRM enrolled them in %s)\n", "hand-offs", d->handoffs,
               d->handoff);
    if (d->nreps > 0)
        calls_summary(d);
    if (d->event != NULL)
        event_summary(d);

    char *log = NULL, *abs = NULL;
    if (asprintf(&log, "%s/log-channel.jsonl", d->data_dir) < 0)
        return;
    abs = realpath(log, NULL);
    long msgs = count_lines(log);
    printf("  %-34s %ld, one JSON line each, in\n      %s\n", "messages sent (log channel)",
           msgs < 0 ? 0 : msgs, abs ? abs : log);
    printf("  %-34s jq -r '[.lead, .plan, .node, .params.topic] | @tsv' %s | less\n",
           "look at them:", abs ? abs : log);
    free(abs);
    abs = NULL;
    char *mail = NULL;
    if (asprintf(&mail, "%s/maildir/new", d->data_dir) >= 0) {
        DIR *dir = opendir(mail);
        long n = 0;
        for (struct dirent *e = dir ? readdir(dir) : NULL; e != NULL; e = readdir(dir))
            n += strstr(e->d_name, ".eml") != NULL;
        if (dir != NULL)
            closedir(dir);
        abs = realpath(mail, NULL);
        printf("  %-34s %ld, one .eml file each (no SMTP server configured), in\n      %s\n",
               "emails sent (email channel)", n, abs ? abs : mail);
        free(mail);
    }
    long rq = 0, rf = 0;
    for (size_t r = 0; r < d->nreps; r++) {
        rq += d->reps[r].http.requests;
        rf += d->reps[r].http.failures;
    }
    printf("  %-34s %ld requests to nurtured on one kept-alive connection, %ld failed\n",
           "api", d->http.requests, d->http.failures);
    if (d->nreps > 0)
        printf("  %-34s %ld requests with rep tokens (one connection per rep), %ld failed\n", "",
               rq, rf);
    free(log);
    free(abs);
}

/* ---------------------------------------------------------------- main */

static char *read_token(const char *data_dir)
{
    const char *env = getenv("NURTURE_TOKEN");
    if (env != NULL && *env)
        return xstrdup(env);
    char *path = NULL;
    if (asprintf(&path, "%s/tokens", data_dir) < 0)
        return NULL;
    FILE *f = fopen(path, "r");
    free(path);
    if (f == NULL)
        return NULL;
    char line[512], *tok = NULL;
    while (tok == NULL && fgets(line, sizeof(line), f) != NULL) {
        char role[32], secret[400];
        if (sscanf(line, "%31s %399s", role, secret) == 2 && strcmp(role, "ops") == 0)
            tok = xstrdup(secret);
    }
    fclose(f);
    return tok;
}

/* The named rep tokens of <data-dir>/tokens ("rep <secret> <name>"): the reps the demo plays. */
static int load_reps(demo_t *d)
{
    char *path = NULL;
    if (asprintf(&path, "%s/tokens", d->data_dir) < 0)
        return -1;
    FILE *f = fopen(path, "r");
    free(path);
    if (f == NULL)
        return 0;
    char line[512];
    size_t cap = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        cap++;
    rewind(f);
    /* Allocated once: each rep's curl handle writes into its own struct. */
    d->reps = xrealloc(NULL, (cap ? cap : 1) * sizeof(*d->reps));
    while (d->nreps < cap && fgets(line, sizeof(line), f) != NULL) {
        char role[32], secret[400], name[80];
        if (sscanf(line, "%31s %399s %79s", role, secret, name) != 3 || strcmp(role, "rep") != 0)
            continue;
        demo_rep_t *r = &d->reps[d->nreps];
        memset(r, 0, sizeof(*r));
        if (http_init(&r->http, d->url, secret) != 0)
            break;
        r->name = xstrdup(name);
        r->in_team = 1;
        d->nreps++;
    }
    fclose(f);
    return 0;
}

static int load_plan(demo_t *d, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "nt-demo: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    membuf_t b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        b.p = xrealloc(b.p, b.n + n);
        memcpy(b.p + b.n, chunk, n);
        b.n += n;
    }
    fclose(f);
    char *err = NULL;
    nt_plan_t *p = nt_plan_new((const uint8_t *)b.p, b.n, &err);
    free(b.p);
    if (p == NULL) {
        fprintf(stderr, "nt-demo: %s: %s\n", path, err ? err : "not a plan");
        free(err);
        return -1;
    }
    if (d->nplans == DEMO_MAX_PLANS) {
        nt_plan_free(p);
        return 0;
    }
    d->plans[d->nplans].plan = p;
    d->plans[d->nplans].id = p->wf->id;
    d->nplans++;
    return 0;
}

/* The in-person event of the plans: the first send on the event channel names it. */
static void find_event(demo_t *d)
{
    for (size_t i = 0; i < d->nplans && d->event == NULL; i++) {
        const Nt__Workflow *wf = d->plans[i].plan->wf;
        for (size_t k = 0; k < wf->n_nodes && d->event == NULL; k++) {
            const Nt__Node *n = wf->nodes[k];
            if (n->kind_case != NT__NODE__KIND_SEND || n->send->channel == NULL ||
                strcmp(n->send->channel, "event") != 0)
                continue;
            for (size_t j = 0; j < n->send->n_params; j++)
                if (strcmp(n->send->params[j]->name, "event") == 0) {
                    d->event = n->send->params[j]->value;
                    d->event_plan = d->plans[i].id;
                }
        }
    }
}

static void usage(FILE *f)
{
    fputs("usage: nt-demo --url URL --data-dir DIR --leads LEADS.csv --time-scale X\n"
          "               --started-ms MS [--time-start-ms MS] [--day0-ms MS] [--seconds S]\n"
          "               [--funnel-every S]"
          " [--seed N]"
          " [--handoff PLAN] [--team TEAM] [--nurturectl PATH] PLAN.bin...\n"
          "  plays leads, webinar system and CRM against nurtured and narrates the runs;\n"
          "  PLAN.bin are the published plans as compiled by `nurturectl compile`;\n"
          "  --started-ms is the real time (ms) at which nurtured's plan clock started;\n"
          "  --time-start-ms the plan time it started at (nurtured's time-start; default the\n"
          "  same as --started-ms);\n"
          "  --day0-ms the real time at which the leads were enrolled (day 0);\n"
          "  the named rep tokens of DIR/tokens are the sales reps it plays: they work their\n"
          "  call tasks and TEAM's queue (default sales);\n"
          "  a plan that invites to an in-person event (a send on the event channel) gets its\n"
          "  RSVPs through the signed links and, with --nurturectl, the badge scanner's CSV.\n",
          f);
}

int main(int argc, char **argv)
{
    demo_t d = {.url = "http://127.0.0.1:7700", .data_dir = "./nurture-data", .scale = 1,
                .seconds = 45, .funnel_every = 5, .seed = 7, .handoff = "mql_handoff",
                .team = "sales"};
    setlocale(LC_CTYPE, "");
    if (strcmp(setlocale(LC_CTYPE, NULL), "C") == 0 || MB_CUR_MAX == 1)
        setlocale(LC_CTYPE, "C.UTF-8");
    setvbuf(stdout, NULL, _IOLBF, 0);
    int64_t day0_real = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (load_plan(&d, a) != 0)
                return 1;
            continue;
        }
        if (v == NULL) {
            usage(stderr);
            return 2;
        }
        i++;
        if (strcmp(a, "--url") == 0)
            d.url = v;
        else if (strcmp(a, "--data-dir") == 0)
            d.data_dir = v;
        else if (strcmp(a, "--leads") == 0)
            d.leads_csv = v;
        else if (strcmp(a, "--time-scale") == 0)
            d.scale = atof(v);
        else if (strcmp(a, "--started-ms") == 0)
            d.start_real = strtoll(v, NULL, 10);
        else if (strcmp(a, "--time-start-ms") == 0)
            d.start_plan = strtoll(v, NULL, 10);
        else if (strcmp(a, "--day0-ms") == 0)
            day0_real = strtoll(v, NULL, 10);
        else if (strcmp(a, "--seconds") == 0)
            d.seconds = atof(v);
        else if (strcmp(a, "--funnel-every") == 0)
            d.funnel_every = atof(v);
        else if (strcmp(a, "--seed") == 0)
            d.seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--handoff") == 0)
            d.handoff = *v ? v : NULL;
        else if (strcmp(a, "--team") == 0)
            d.team = *v ? v : NULL;
        else if (strcmp(a, "--nurturectl") == 0)
            d.nurturectl = v;
        else {
            fprintf(stderr, "nt-demo: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (d.leads_csv == NULL || d.nplans == 0 || d.scale <= 0) {
        usage(stderr);
        return 2;
    }
    if (d.start_real == 0)
        d.start_real = real_ms();
    if (day0_real == 0)
        day0_real = real_ms();
    if (d.start_plan == 0)
        d.start_plan = d.start_real;
    d.day0 = d.start_plan + (int64_t)((double)(day0_real - d.start_real) * d.scale);
    d.seed = fnv(1469598103934665603ULL ^ d.seed, "nt-demo");
    if (load_leads(&d) != 0)
        return 1;
    char *tok = read_token(d.data_dir);
    if (tok == NULL) {
        fprintf(stderr, "nt-demo: no ops token (NURTURE_TOKEN or %s/tokens)\n", d.data_dir);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (http_init(&d.http, d.url, tok) != 0) {
        fprintf(stderr, "nt-demo: cannot initialise libcurl\n");
        return 1;
    }
    free(tok);
    if (http_init(&d.person, d.url, NULL) != 0) {
        fprintf(stderr, "nt-demo: cannot initialise libcurl\n");
        return 1;
    }
    find_event(&d);
    if (load_reps(&d) != 0) {
        fprintf(stderr, "nt-demo: cannot read the rep tokens\n");
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* First look: who is who, and where everybody starts. */
    for (size_t i = 0; i < d.nleads; i++)
        if (poll_lead(&d, i, 1) != 0) {
            fprintf(stderr, "nt-demo: nurtured at %s does not answer\n", d.url);
            return 1;
        }
    d.wid_id = d.wid_label = 0;
    for (size_t i = 0; i < d.nleads; i++) {
        int w = text_width(d.leads[i].id);
        d.wid_id = w > d.wid_id ? w : d.wid_id;
        w = text_width(d.leads[i].label);
        d.wid_label = w > d.wid_label ? w : d.wid_label;
    }
    if (d.wid_label > DEMO_LABEL_MAX)
        d.wid_label = DEMO_LABEL_MAX;
    d.wid_plan = 5;
    for (size_t i = 0; i < d.nplans; i++)
        if ((int)strlen(d.plans[i].id) > d.wid_plan)
            d.wid_plan = (int)strlen(d.plans[i].id);
    for (size_t i = 0; i < d.nreps; i++)
        if (4 + text_width(d.reps[i].name) > d.wid_plan)
            d.wid_plan = 4 + text_width(d.reps[i].name);

    funnel(&d, 0);
    rule("the plans at work");
    printf("  one line per move of a lead in a plan: node -> node (why), score and stage changes;\n"
           "  '<- type' lines are what the leads (or machines acting for them) did");
    if (d.nreps > 0) {
        printf(";\n  'rep <name>' lines are the sales reps (");
        for (size_t i = 0; i < d.nreps; i++)
            printf("%s%s", i ? ", " : "", d.reps[i].name);
        printf(") working their call tasks through the API");
    }
    printf("\n\n");

    if (d.event != NULL)
        printf("  '%s' is an in-person event (plan %s): people answer the\n"
               "  invitations through their signed RSVP links; at the show the badge scanner's CSV"
               "\n  is imported%s\n\n",
               d.event, d.event_plan, d.nurturectl ? "" : " (not here: no --nurturectl)");

    int64_t t0 = real_ms(), next_poll = t0, next_funnel = t0 + (int64_t)(d.funnel_every * 1000);
    int64_t end = t0 + (int64_t)(d.seconds * 1000);
    int down = 0;
    while (!stop_requested && real_ms() < end) {
        world_tick(&d);
        reps_call(&d);
        int64_t now = real_ms();
        if (d.scan_at != 0 && !d.scan_done && now >= d.scan_at && d.nurturectl != NULL) {
            size_t before = d.nleads;
            badge_scan(&d);
            for (size_t i = before; i < d.nleads; i++)
                poll_lead(&d, i, 0);
        }
        if (now >= next_poll) {
            next_poll = now + 300;
            int failed = 0;
            for (size_t i = 0; i < d.nleads && !stop_requested; i++)
                failed |= poll_lead(&d, i, 0) != 0;
            down = failed ? down + 1 : 0;
            if (down >= 10) {
                fprintf(stderr, "nt-demo: nurtured stopped answering\n");
                return 1;
            }
            reps_look(&d);
            if (all_done(&d))
                break;
        }
        if (now >= next_funnel) {
            funnel(&d, 0);
            next_funnel = real_ms() + (int64_t)(d.funnel_every * 1000);
        }
        sleep_ms(DEMO_TICK_MS);
    }
    if (stop_requested) {
        printf("\nnt-demo: interrupted\n");
        http_fini(&d.http);
        return 130;
    }
    /* A last look so that the funnel and the summary agree. */
    for (size_t i = 0; i < d.nleads; i++)
        poll_lead(&d, i, 0);
    funnel(&d, 1);
    summary(&d, (double)(real_ms() - t0) / 1000.0);
    http_fini(&d.http);
    http_fini(&d.person);
    for (size_t i = 0; i < d.nreps; i++)
        http_fini(&d.reps[i].http);
    curl_global_cleanup();
    return 0;
}
