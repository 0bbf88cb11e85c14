/* The `event` channel: invitations and reminders to an in-person event (trade show, roadshow,
 * dinner). Delivering the invitation's text is the email channel's job; this channel keeps the
 * event's bookkeeping: each dispatch signs an RSVP link (include/nurture/track.h, kind 'r' with
 * the event id) that nurtured serves at <public_url>/t/r/<token> (a Yes / No page; the answer
 * posts event.rsvp with attributes event and answer), stores it on the lead (attributes
 * event_rsvp_link and event_id, through the host's update_lead), and only once that write is
 * done writes one JSON line (for the event platform's mailer), posts event.invited (attributes
 * event, kind, message, rsvp_url) for the lead's timeline and reports "sent": the run's next
 * step, an email whose template writes [Reply]({{event_rsvp_link|https://...}}), renders the
 * lead's own link. The link is in the outcome's detail too. Each dispatch (a reminder as well)
 * signs a new link, which replaces the one on the lead; the earlier ones stay valid.
 *
 * Without a tracking secret and public URL there is no link: nothing is written on the lead
 * (templates fall back to their default), the line's rsvp_url is empty. A failed write is
 * transient (NT_EUNAVAIL, the host retries the send: nothing was written to the file yet), a
 * lead that no longer exists or an id the host refuses is permanent. With a host older than
 * update_lead the link is only in the line and the event.
 *
 * Params: event (the event id: 1 to 64 of a-z 0-9 _ -), kind (invite, the default, or
 * reminder), message (a line of text). Config: channel.event.path (default
 * <data_dir>/event-channel.jsonl), channel.event.rsvp_days (how long links are valid, default
 * 366); the signing key and base URL are nurtured's tracking-secret and public-url.
 *
 * Dedup: the ids already in the file are loaded at init; a message whose id is there is
 * reported again without a second line, event or write. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nurture/channel.h"
#include "nurture/track.h"

#define EXPORT __attribute__((visibility("default")))
#define MESSAGE_MAX 2000
#define ATTR_LINK "event_rsvp_link" /* the lead's newest signed RSVP link */
#define ATTR_ID "event_id"          /* the event that link answers */

static const char *const outcomes[] = {NULL};

static const nt_channel_param_t params[] = {
    {"event", 1, "the event's id (1 to 64 of a-z 0-9 _ -), named in the RSVP link"},
    {"kind", 0, "invite (default) or reminder"},
    {"message", 0, "a line of text for the bookkeeping line"},
    {NULL, 0, NULL},
};

typedef struct ev_job ev_job_t;

typedef struct ev_state {
    const nt_channel_host_t *host;
    int fd;
    char *path;
    char *secret, *base; /* NULL: no RSVP links */
    int64_t ttl_s;
    char **ids; /* ids already written: open addressing */
    size_t cap, n;
    ev_job_t *writing; /* dispatches whose link is being written to the lead */
} ev_state_t;

/* One dispatch from its line's making to its report; every string malloc'd. */
struct ev_job {
    ev_state_t *st;
    nt_channel_done_fn *done;
    void *done_arg;
    char *id, *lead, *event, *kind;
    char *url;  /* the RSVP link, or NULL */
    char *line; /* the JSON line, ending in a newline */
    size_t len;
    ev_job_t *prev, *next;
};

static const char *param(const nt_kv_t *kv, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (kv[i].key != NULL && strcmp(kv[i].key, name) == 0)
            return kv[i].value;
    return NULL;
}

/* ---- a set of ids ---- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int ids_has(const ev_state_t *st, const char *s)
{
    if (st->cap == 0)
        return 0;
    for (size_t i = hash_str(s) & (st->cap - 1);; i = (i + 1) & (st->cap - 1)) {
        if (st->ids[i] == NULL)
            return 0;
        if (strcmp(st->ids[i], s) == 0)
            return 1;
    }
}

static void ids_put(char **slots, size_t cap, char *s)
{
    size_t i = hash_str(s) & (cap - 1);

    while (slots[i] != NULL)
        i = (i + 1) & (cap - 1);
    slots[i] = s;
}

static int ids_add(ev_state_t *st, const char *s)
{
    char *copy;

    if (ids_has(st, s))
        return 0;
    if ((st->n + 1) * 10 > st->cap * 7) {
        size_t cap = st->cap ? st->cap * 2 : 256;
        char **slots = calloc(cap, sizeof(*slots));

        if (slots == NULL)
            return -1;
        for (size_t i = 0; i < st->cap; i++)
            if (st->ids[i] != NULL)
                ids_put(slots, cap, st->ids[i]);
        free(st->ids);
        st->ids = slots;
        st->cap = cap;
    }
    copy = strdup(s);
    if (copy == NULL)
        return -1;
    ids_put(st->ids, st->cap, copy);
    st->n++;
    return 0;
}

/* ---- JSON text ---- */

/* Append s as a JSON string to *b (malloc'd, grown); control characters escaped, bytes >= 0x80
 * copied (the message and ids come from validated plans and lead ids). Returns 0 or -1. */
static int json_str(char **b, size_t *len, size_t *cap, const char *s)
{
    size_t need = *len + 6 * strlen(s) + 3;

    if (need > *cap) {
        size_t c = *cap ? *cap : 256;
        char *p;

        while (c < need)
            c *= 2;
        p = realloc(*b, c);
        if (p == NULL)
            return -1;
        *b = p;
        *cap = c;
    }
    (*b)[(*len)++] = '"';
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\') {
            (*b)[(*len)++] = '\\';
            (*b)[(*len)++] = (char)ch;
        } else if (ch < 0x20) {
            *len += (size_t)snprintf(*b + *len, 7, "\\u%04x", ch);
        } else {
            (*b)[(*len)++] = (char)ch;
        }
    }
    (*b)[(*len)++] = '"';
    (*b)[*len] = '\0';
    return 0;
}

static int add_raw(char **b, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);

    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        char *p;

        while (c < *len + n + 1)
            c *= 2;
        p = realloc(*b, c);
        if (p == NULL)
            return -1;
        *b = p;
        *cap = c;
    }
    memcpy(*b + *len, s, n + 1);
    *len += n;
    return 0;
}

/* ---- the plugin ---- */

static nt_rc_t ev_validate(const nt_kv_t *kv, size_t n, char **errmsg)
{
    const char *ev = param(kv, n, "event");
    const char *kind = param(kv, n, "kind");
    const char *m = param(kv, n, "message");

    if (ev != NULL && !nt_track_event_ok(ev)) {
        *errmsg = nt_msgf("event: the event id must be 1 to 64 of a-z, 0-9, '_' and '-'");
        return NT_EINVAL;
    }
    if (kind != NULL && strcmp(kind, "invite") != 0 && strcmp(kind, "reminder") != 0) {
        *errmsg = nt_msgf("event: kind must be invite or reminder");
        return NT_EINVAL;
    }
    if (m != NULL && (strpbrk(m, "\r\n") != NULL || strlen(m) > MESSAGE_MAX)) {
        *errmsg = nt_msgf("event: message must be a single line of at most %d bytes", MESSAGE_MAX);
        return NT_EINVAL;
    }
    return NT_OK;
}

/* Load the id of every line ({"id":"...", ids have no quote or backslash) into the set. */
static int load_ids(ev_state_t *st, char **errmsg)
{
    static const char prefix[] = "{\"id\":\"";
    FILE *f = fopen(st->path, "re");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;

    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        *errmsg = nt_msgf("event: cannot read %s: %s", st->path, strerror(errno));
        return -1;
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        char *end;

        if ((size_t)len < sizeof(prefix) || memcmp(line, prefix, sizeof(prefix) - 1) != 0)
            continue;
        end = strchr(line + sizeof(prefix) - 1, '"');
        if (end == NULL)
            continue; /* a torn line */
        *end = '\0';
        if (ids_add(st, line + sizeof(prefix) - 1) != 0) {
            *errmsg = nt_msgf("event: out of memory loading ids from %s", st->path);
            rc = -1;
            break;
        }
    }
    free(line);
    fclose(f);
    return rc;
}

static void ev_free(ev_state_t *st)
{
    if (st->fd >= 0)
        close(st->fd);
    for (size_t i = 0; i < st->cap; i++)
        free(st->ids[i]);
    free(st->ids);
    free(st->path);
    free(st->secret);
    free(st->base);
    free(st);
}

static const char *cfg(const ev_state_t *st, const char *key, const char *def)
{
    return st->host->config != NULL ? st->host->config("event", key, def) : def;
}

static nt_rc_t ev_init(const nt_channel_host_t *host, void **state, char **errmsg)
{
    ev_state_t *st = calloc(1, sizeof(*st));
    const char *path, *secret, *base, *days;
    char *end = NULL;
    long d;

    if (st == NULL) {
        *errmsg = nt_msgf("event: out of memory");
        return NT_ENOMEM;
    }
    st->host = host;
    st->fd = -1;
    path = cfg(st, "path", NULL);
    st->path = path != NULL && path[0] ? strdup(path)
                                       : nt_msgf("%s/event-channel.jsonl",
                                                 host->data_dir != NULL ? host->data_dir : ".");
    days = cfg(st, "rsvp_days", "366");
    d = strtol(days, &end, 10);
    if (end == days || *end != '\0' || d < 1 || d > 3660) {
        *errmsg = nt_msgf("event: channel.event.rsvp_days must be a number of days from 1 to 3660");
        ev_free(st);
        return NT_EINVAL;
    }
    st->ttl_s = (int64_t)d * 86400;
    secret = cfg(st, "tracking_secret", NULL);
    base = cfg(st, "public_url", NULL);
    if (secret != NULL && secret[0] && base != NULL && base[0]) {
        size_t n;

        st->secret = strdup(secret);
        st->base = strdup(base);
        if (st->secret == NULL || st->base == NULL) {
            *errmsg = nt_msgf("event: out of memory");
            ev_free(st);
            return NT_ENOMEM;
        }
        n = strlen(st->base);
        while (n > 0 && st->base[n - 1] == '/')
            st->base[--n] = '\0';
        if (!nt_track_url_ok(st->base) || strpbrk(st->base, "?#") != NULL) {
            *errmsg = nt_msgf("event: public_url must be an http(s) URL without a query");
            ev_free(st);
            return NT_EINVAL;
        }
    } else if (host->log != NULL) {
        host->log(NT_LOG_WARN, "event", "no tracking-secret or public-url: no RSVP links");
    }
    if (st->path == NULL || load_ids(st, errmsg) != 0) {
        if (st->path == NULL)
            *errmsg = nt_msgf("event: out of memory");
        ev_free(st);
        return NT_ERR;
    }
    st->fd = open(st->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (st->fd < 0) {
        *errmsg = nt_msgf("event: cannot open %s: %s", st->path, strerror(errno));
        ev_free(st);
        return NT_ERR;
    }
    {
        /* A line torn by a crash would swallow the next one: end it first. */
        struct stat sb;
        char last;

        if (fstat(st->fd, &sb) == 0 && sb.st_size > 0 &&
            pread(st->fd, &last, 1, sb.st_size - 1) == 1 && last != '\n')
            (void)!write(st->fd, "\n", 1);
    }
    *state = st;
    return NT_OK;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- dispatch ---- */

static void job_free(ev_job_t *j)
{
    if (j == NULL)
        return;
    free(j->id);
    free(j->lead);
    free(j->event);
    free(j->kind);
    free(j->url);
    free(j->line);
    free(j);
}

static void writing_add(ev_state_t *st, ev_job_t *j)
{
    j->prev = NULL;
    j->next = st->writing;
    if (st->writing != NULL)
        st->writing->prev = j;
    st->writing = j;
}

static void writing_del(ev_state_t *st, ev_job_t *j)
{
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        st->writing = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    j->prev = j->next = NULL;
}

/* Report j (in no list) with rc and detail, and free it. */
static void job_finish(ev_job_t *j, nt_rc_t rc, const char *detail)
{
    j->done(j->done_arg, rc, NULL, detail);
    job_free(j);
}

/* The link is on the lead (or there is none to store): write the line, remember the id, post
 * event.invited and report "sent". Completes and frees j (in no list). */
static void job_commit(ev_job_t *j)
{
    ev_state_t *st = j->st;
    char *detail;

    if (write_all(st->fd, j->line, j->len) != 0) {
        char d[256];

        snprintf(d, sizeof(d), "event: write %s: %s", st->path, strerror(errno));
        job_finish(j, NT_EUNAVAIL, d);
        return;
    }
    if (ids_add(st, j->id) != 0 && st->host->log != NULL)
        st->host->log(NT_LOG_WARN, "event", "out of memory remembering an id");
    if (st->host->post_event != NULL) {
        nt_kv_t attrs[4] = {{"event", j->event},
                            {"kind", j->kind},
                            {"message", j->id},
                            {"rsvp_url", j->url != NULL ? j->url : ""}};
        nt_rc_t rc = st->host->post_event(j->lead, "event.invited", attrs, 4);

        if (rc != NT_OK && st->host->log != NULL)
            st->host->log(NT_LOG_WARN, "event", "event.invited for %s was not posted: %d", j->lead,
                          (int)rc);
    }
    detail = j->url != NULL ? nt_msgf("%s to %s: RSVP %s", j->kind, j->event, j->url)
                            : nt_msgf("%s to %s (no RSVP link)", j->kind, j->event);
    job_finish(j, NT_OK, detail);
    free(detail);
}

/* The host's answer to the write of the link on the lead. */
static void on_written(void *arg, nt_rc_t rc)
{
    ev_job_t *j = arg;
    char *detail;

    writing_del(j->st, j);
    if (rc == NT_OK) {
        job_commit(j);
        return;
    }
    if (rc == NT_ECANCELED) {
        job_finish(j, rc, "event: shutting down");
        return;
    }
    if (rc == NT_ENOTFOUND) {
        detail = nt_msgf("event: %s to %s: the lead no longer exists", j->kind, j->event);
        rc = NT_EPERMFAIL;
    } else {
        /* Transient: nothing is in the file yet, the retry signs and writes again. */
        detail = nt_msgf("event: %s to %s: the RSVP link was not stored on the lead (%s)", j->kind,
                         j->event, rc == NT_ETIMEOUT ? "timeout" : "unavailable");
        rc = rc == NT_ETIMEOUT ? NT_ETIMEOUT : NT_EUNAVAIL;
    }
    job_finish(j, rc, detail != NULL ? detail : "event: out of memory");
    free(detail);
}

/* Store j's link on the lead (event_rsvp_link, event_id), then commit; without a link or with
 * a host older than update_lead commit at once. Returns NT_AGAIN when the report comes later,
 * NT_OK when j is completed. */
static nt_rc_t job_store(ev_job_t *j)
{
    const nt_channel_host_t *h = j->st->host;
    nt_rc_t rc;

    if (j->url == NULL ||
        h->size < offsetof(nt_channel_host_t, update_lead) + sizeof(h->update_lead) ||
        h->update_lead == NULL) {
        job_commit(j);
        return NT_OK;
    }
    const nt_kv_t attrs[] = {{ATTR_LINK, j->url}, {ATTR_ID, j->event}};
    writing_add(j->st, j);
    rc = h->update_lead(j->lead, attrs, 2, on_written, j);
    if (rc == NT_AGAIN)
        return NT_AGAIN; /* j is on_written's */
    writing_del(j->st, j);
    job_finish(j, rc == NT_EINVAL ? NT_EPERMFAIL : NT_EUNAVAIL,
               rc == NT_EINVAL ? "event: the RSVP link cannot be stored on the lead (refused)"
                               : "event: the RSVP link cannot be stored on the lead "
                                 "(unavailable)");
    return NT_OK;
}

/* The bookkeeping line of j (its id, lead, event, kind, url set) for msg. Returns 0 or -1. */
static int job_line(ev_job_t *j, const nt_message_t *msg, const char *message)
{
    char *line = NULL;
    size_t len = 0, cap = 0;
    char at[48];
    int oom = 0;

    oom |= add_raw(&line, &len, &cap, "{\"id\":");
    oom |= json_str(&line, &len, &cap, j->id);
    oom |= add_raw(&line, &len, &cap, ",\"lead\":");
    oom |= json_str(&line, &len, &cap, j->lead);
    oom |= add_raw(&line, &len, &cap, ",\"plan\":");
    oom |= json_str(&line, &len, &cap, msg->plan_id != NULL ? msg->plan_id : "");
    oom |= add_raw(&line, &len, &cap, ",\"node\":");
    oom |= json_str(&line, &len, &cap, msg->node_id != NULL ? msg->node_id : "");
    oom |= add_raw(&line, &len, &cap, ",\"channel\":\"event\",\"event\":");
    oom |= json_str(&line, &len, &cap, j->event);
    oom |= add_raw(&line, &len, &cap, ",\"kind\":");
    oom |= json_str(&line, &len, &cap, j->kind);
    oom |= add_raw(&line, &len, &cap, ",\"message\":");
    oom |= json_str(&line, &len, &cap, message != NULL ? message : "");
    oom |= add_raw(&line, &len, &cap, ",\"rsvp_url\":");
    oom |= json_str(&line, &len, &cap, j->url != NULL ? j->url : "");
    snprintf(at, sizeof(at), ",\"at\":%lld}\n",
             (long long)(j->st->host->now_ms != NULL ? j->st->host->now_ms() : 0));
    oom |= add_raw(&line, &len, &cap, at);
    if (oom) {
        free(line);
        return -1;
    }
    j->line = line;
    j->len = len;
    return 0;
}

static nt_rc_t ev_dispatch(void *state, const nt_message_t *msg, nt_channel_done_fn *done,
                           void *done_arg)
{
    ev_state_t *st = state;
    const char *event = param(msg->params, msg->nparams, "event");
    const char *kind = param(msg->params, msg->nparams, "kind");
    const char *message = param(msg->params, msg->nparams, "message");
    ev_job_t *j;

    if (kind == NULL)
        kind = "invite";
    if (event == NULL || !nt_track_event_ok(event) || msg->id == NULL || !msg->id[0] ||
        strpbrk(msg->id, "\"\\") != NULL || msg->lead_id == NULL) {
        done(done_arg, NT_EPERMFAIL, NULL, "event: no valid event id or message id");
        return NT_OK;
    }
    if (ids_has(st, msg->id)) {
        done(done_arg, NT_OK, NULL, "duplicate id: already invited");
        return NT_OK;
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL) {
        done(done_arg, NT_EUNAVAIL, NULL, "event: out of memory");
        return NT_OK;
    }
    j->st = st;
    j->done = done;
    j->done_arg = done_arg;
    j->id = strdup(msg->id);
    j->lead = strdup(msg->lead_id);
    j->event = strdup(event);
    j->kind = strdup(kind);
    if (j->id == NULL || j->lead == NULL || j->event == NULL || j->kind == NULL) {
        job_finish(j, NT_EUNAVAIL, "event: out of memory");
        return NT_OK;
    }
    if (st->secret != NULL) {
        int64_t now = (int64_t)time(NULL);
        char *tok = nt_track_sign(st->secret, strlen(st->secret), NT_TRACK_RSVP, msg->id, now,
                                  now + st->ttl_s, event);

        if (tok == NULL) {
            job_finish(j, NT_EPERMFAIL, "event: cannot sign an RSVP link for this message id");
            return NT_OK;
        }
        j->url = nt_msgf("%s/t/r/%s", st->base, tok);
        free(tok);
        if (j->url == NULL) {
            job_finish(j, NT_EUNAVAIL, "event: out of memory");
            return NT_OK;
        }
    }
    if (job_line(j, msg, message) != 0) {
        job_finish(j, NT_EUNAVAIL, "event: out of memory");
        return NT_OK;
    }
    return job_store(j);
}

static void ev_shutdown(void *state)
{
    ev_state_t *st = state;

    if (st == NULL)
        return;
    /* Writes still waiting: the host never calls on_written after this hook (channel.h). */
    while (st->writing != NULL) {
        ev_job_t *j = st->writing;

        writing_del(st, j);
        job_finish(j, NT_ECANCELED, "event: shutting down");
    }
    ev_free(st);
}

static const nt_channel_ops_t event_ops = {
    .abi_version = NT_CHANNEL_ABI_VERSION,
    .size = sizeof(nt_channel_ops_t),
    .name = "event",
    .description = "invitations and reminders to in-person events with signed RSVP links, the "
                   "link stored on the lead (event_rsvp_link)",
    .params = params,
    .outcomes = outcomes,
    .validate = ev_validate,
    .init = ev_init,
    .dispatch = ev_dispatch,
    .shutdown = ev_shutdown,
};

EXPORT const nt_channel_ops_t *nt_channel_entry(void)
{
    return &event_ops;
}
