/* The `event` channel: invitations and reminders to an in-person event (trade show, roadshow,
 * dinner). Delivering the invitation's text is the email channel's job; this channel keeps the
 * event's bookkeeping: each dispatch signs an RSVP link (include/nurture/track.h, kind 'r' with
 * the event id) that nurtured serves at <public_url>/t/r/<token> (a Yes / No page; the answer
 * posts event.rsvp), writes one JSON line, and posts event.invited (attributes event, kind,
 * rsvp_url) so that the link is on the lead's timeline. The link is in the outcome's detail too.
 *
 * Params: event (the event id: 1 to 64 of a-z 0-9 _ -), kind (invite, the default, or
 * reminder), message (a line of text). Config: channel.event.path (default
 * <data_dir>/event-channel.jsonl), channel.event.rsvp_days (how long links are valid, default
 * 366); the signing key and base URL are nurtured's tracking-secret and public-url.
 *
 * Dedup: the ids already in the file are loaded at init; a message whose id is there is
 * reported again without a second line or event. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
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

static const char *const outcomes[] = {NULL};

static const nt_channel_param_t params[] = {
    {"event", 1, "the event's id (1 to 64 of a-z 0-9 _ -), named in the RSVP link"},
    {"kind", 0, "invite (default) or reminder"},
    {"message", 0, "a line of text for the bookkeeping line"},
    {NULL, 0, NULL},
};

typedef struct ev_state {
    const nt_channel_host_t *host;
    int fd;
    char *path;
    char *secret, *base; /* NULL: no RSVP links */
    int64_t ttl_s;
    char **ids; /* ids already written: open addressing */
    size_t cap, n;
} ev_state_t;

static const char *param(const nt_kv_t *kv, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (kv[i].key != NULL && strcmp(kv[i].key, name) == 0)
            return kv[i].value;
    return NULL;
}

/* nt_msgf (nurture/msgf.h, through channel.h) under the name this file uses. */
#define msgf nt_msgf

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
        *errmsg = msgf("event: the event id must be 1 to 64 of a-z, 0-9, '_' and '-'");
        return NT_EINVAL;
    }
    if (kind != NULL && strcmp(kind, "invite") != 0 && strcmp(kind, "reminder") != 0) {
        *errmsg = msgf("event: kind must be invite or reminder");
        return NT_EINVAL;
    }
    if (m != NULL && (strpbrk(m, "\r\n") != NULL || strlen(m) > MESSAGE_MAX)) {
        *errmsg = msgf("event: message must be a single line of at most %d bytes", MESSAGE_MAX);
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
        *errmsg = msgf("event: cannot read %s: %s", st->path, strerror(errno));
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
            *errmsg = msgf("event: out of memory loading ids from %s", st->path);
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
        *errmsg = msgf("event: out of memory");
        return NT_ENOMEM;
    }
    st->host = host;
    st->fd = -1;
    path = cfg(st, "path", NULL);
    st->path = path != NULL && path[0] ? strdup(path)
                                       : msgf("%s/event-channel.jsonl",
                                              host->data_dir != NULL ? host->data_dir : ".");
    days = cfg(st, "rsvp_days", "366");
    d = strtol(days, &end, 10);
    if (end == days || *end != '\0' || d < 1 || d > 3660) {
        *errmsg = msgf("event: channel.event.rsvp_days must be a number of days from 1 to 3660");
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
            *errmsg = msgf("event: out of memory");
            ev_free(st);
            return NT_ENOMEM;
        }
        n = strlen(st->base);
        while (n > 0 && st->base[n - 1] == '/')
            st->base[--n] = '\0';
        if (!nt_track_url_ok(st->base) || strpbrk(st->base, "?#") != NULL) {
            *errmsg = msgf("event: public_url must be an http(s) URL without a query");
            ev_free(st);
            return NT_EINVAL;
        }
    } else if (host->log != NULL) {
        host->log(NT_LOG_WARN, "event", "no tracking-secret or public-url: no RSVP links");
    }
    if (st->path == NULL || load_ids(st, errmsg) != 0) {
        if (st->path == NULL)
            *errmsg = msgf("event: out of memory");
        ev_free(st);
        return NT_ERR;
    }
    st->fd = open(st->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (st->fd < 0) {
        *errmsg = msgf("event: cannot open %s: %s", st->path, strerror(errno));
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

static nt_rc_t ev_dispatch(void *state, const nt_message_t *msg, nt_channel_done_fn *done,
                           void *done_arg)
{
    ev_state_t *st = state;
    const char *event = param(msg->params, msg->nparams, "event");
    const char *kind = param(msg->params, msg->nparams, "kind");
    const char *message = param(msg->params, msg->nparams, "message");
    char *url = NULL, *line = NULL, *detail = NULL;
    size_t len = 0, cap = 0;
    int oom = 0;

    if (kind == NULL)
        kind = "invite";
    if (event == NULL || !nt_track_event_ok(event) || msg->id == NULL || !msg->id[0] ||
        strpbrk(msg->id, "\"\\") != NULL) {
        done(done_arg, NT_EPERMFAIL, NULL, "event: no valid event id or message id");
        return NT_OK;
    }
    if (ids_has(st, msg->id)) {
        done(done_arg, NT_OK, NULL, "duplicate id: already invited");
        return NT_OK;
    }
    if (st->secret != NULL) {
        int64_t now = (int64_t)time(NULL);
        char *tok = nt_track_sign(st->secret, strlen(st->secret), NT_TRACK_RSVP, msg->id, now,
                                  now + st->ttl_s, event);

        if (tok == NULL) {
            done(done_arg, NT_EPERMFAIL, NULL,
                 "event: cannot sign an RSVP link for this message id");
            return NT_OK;
        }
        url = msgf("%s/t/r/%s", st->base, tok);
        free(tok);
        if (url == NULL) {
            done(done_arg, NT_EUNAVAIL, NULL, "event: out of memory");
            return NT_OK;
        }
    }
    oom |= add_raw(&line, &len, &cap, "{\"id\":");
    oom |= json_str(&line, &len, &cap, msg->id);
    oom |= add_raw(&line, &len, &cap, ",\"lead\":");
    oom |= json_str(&line, &len, &cap, msg->lead_id);
    oom |= add_raw(&line, &len, &cap, ",\"plan\":");
    oom |= json_str(&line, &len, &cap, msg->plan_id);
    oom |= add_raw(&line, &len, &cap, ",\"node\":");
    oom |= json_str(&line, &len, &cap, msg->node_id);
    oom |= add_raw(&line, &len, &cap, ",\"channel\":\"event\",\"event\":");
    oom |= json_str(&line, &len, &cap, event);
    oom |= add_raw(&line, &len, &cap, ",\"kind\":");
    oom |= json_str(&line, &len, &cap, kind);
    oom |= add_raw(&line, &len, &cap, ",\"message\":");
    oom |= json_str(&line, &len, &cap, message != NULL ? message : "");
    oom |= add_raw(&line, &len, &cap, ",\"rsvp_url\":");
    oom |= json_str(&line, &len, &cap, url != NULL ? url : "");
    {
        char at[48];

        snprintf(at, sizeof(at), ",\"at\":%lld}\n",
                 (long long)(st->host->now_ms != NULL ? st->host->now_ms() : 0));
        oom |= add_raw(&line, &len, &cap, at);
    }
    if (oom) {
        free(line);
        free(url);
        done(done_arg, NT_EUNAVAIL, NULL, "event: out of memory");
        return NT_OK;
    }
    if (write_all(st->fd, line, len) != 0) {
        char d[256];

        snprintf(d, sizeof(d), "event: write %s: %s", st->path, strerror(errno));
        free(line);
        free(url);
        done(done_arg, NT_EUNAVAIL, NULL, d);
        return NT_OK;
    }
    free(line);
    if (ids_add(st, msg->id) != 0 && st->host->log != NULL)
        st->host->log(NT_LOG_WARN, "event", "out of memory remembering an id");
    if (st->host->post_event != NULL) {
        nt_kv_t attrs[4] = {{"event", event}, {"kind", kind}, {"message", msg->id},
                            {"rsvp_url", url != NULL ? url : ""}};
        nt_rc_t rc = st->host->post_event(msg->lead_id, "event.invited", attrs, 4);

        if (rc != NT_OK && st->host->log != NULL)
            st->host->log(NT_LOG_WARN, "event", "event.invited for %s was not posted: %d",
                          msg->lead_id, (int)rc);
    }
    detail = url != NULL ? msgf("%s to %s: RSVP %s", kind, event, url)
                         : msgf("%s to %s (no RSVP link)", kind, event);
    done(done_arg, NT_OK, NULL, detail);
    free(detail);
    free(url);
    return NT_OK;
}

static void ev_shutdown(void *state)
{
    if (state != NULL)
        ev_free(state);
}

static const nt_channel_ops_t event_ops = {
    .abi_version = NT_CHANNEL_ABI_VERSION,
    .size = sizeof(nt_channel_ops_t),
    .name = "event",
    .description = "invitations and reminders to in-person events with signed RSVP links",
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
