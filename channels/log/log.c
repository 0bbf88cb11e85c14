/* The `log` channel: appends every message as one JSON line to a file, honouring the idempotency
 * key, so that plans can be run and tested end to end without any external peer.
 *
 * Params: "message" (a line of text), "topic", and "outcome": the outcome to report instead of
 * "sent" (one of the declared outcomes; "failed" reports a permanent failure). Config:
 * channel.log.path (default <data_dir>/log-channel.jsonl) and channel.log.sink ("yes": accept
 * and count, write nothing; for benchmarks).
 *
 * Dedup: at init every "id" already in the file is loaded into a hash set; a message whose id is
 * there is reported again without a second line. Ids are kept in their escaped JSON form, which
 * is how they appear in the file, so the file is never unescaped. The plugin is dependency-free
 * (no jansson): it writes its JSON with a small escaping builder. */
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

#define EXPORT __attribute__((visibility("default")))

static const char *const outcomes[] = {
    "opened", "clicked", "replied", "attended", "no_show", "watched_recording", "connected",
    "meeting_booked", "no_answer", "not_interested", NULL,
};

static const nt_channel_param_t params[] = {
    {"message", 0, "a line of text to log"},
    {"topic", 0, "a topic for the line"},
    {"outcome", 0, "outcome to report instead of \"sent\" (for tests and example plans)"},
    {NULL, 0, NULL},
};

/* ---- a growable string with JSON escaping ---- */

typedef struct buf {
    char *p;
    size_t len, cap;
    int oom;
} buf_t;

static void buf_reserve(buf_t *b, size_t more)
{
    if (b->oom || b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap != 0 ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void buf_add(buf_t *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void buf_printf(buf_t *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        buf_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Append s as a JSON string literal; invalid UTF-8 becomes U+FFFD so the line stays JSON. */
static void buf_json_str(buf_t *b, const char *str)
{
    const unsigned char *s = (const unsigned char *)(str != NULL ? str : "");
    size_t n = strlen((const char *)s);
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_add(b, e, 2);
            i++;
        } else if (c == '\n') {
            buf_add(b, "\\n", 2);
            i++;
        } else if (c == '\r') {
            buf_add(b, "\\r", 2);
            i++;
        } else if (c == '\t') {
            buf_add(b, "\\t", 2);
            i++;
        } else if (c < 0x20) {
            buf_printf(b, "\\u%04x", c);
            i++;
        } else {
            size_t l = utf8_len(s + i, n - i);
            if (l == 0) {
                buf_add(b, "\\ufffd", 6);
                i++;
            } else {
                buf_add(b, (const char *)s + i, l);
                i += l;
            }
        }
    }
    buf_add(b, "\"", 1);
}

/* ---- a set of strings: open addressing, linear probing, grows at 70 % ---- */

typedef struct idset {
    char **slots;
    size_t cap, n;
} idset_t;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int idset_has(const idset_t *set, const char *s)
{
    if (set->cap == 0)
        return 0;
    for (size_t i = hash_str(s) & (set->cap - 1);; i = (i + 1) & (set->cap - 1)) {
        if (set->slots[i] == NULL)
            return 0;
        if (strcmp(set->slots[i], s) == 0)
            return 1;
    }
}

static void idset_put_owned(idset_t *set, char *s)
{
    size_t i = hash_str(s) & (set->cap - 1);
    while (set->slots[i] != NULL)
        i = (i + 1) & (set->cap - 1);
    set->slots[i] = s;
    set->n++;
}

/* Add a copy of s (n bytes). Returns 0, or -1 out of memory. */
static int idset_add(idset_t *set, const char *s, size_t n)
{
    if ((set->n + 1) * 10 > set->cap * 7) {
        size_t cap = set->cap != 0 ? set->cap * 2 : 1024;
        char **slots = calloc(cap, sizeof(*slots));
        if (slots == NULL)
            return -1;
        idset_t grown = {slots, cap, 0};
        for (size_t i = 0; i < set->cap; i++) {
            if (set->slots[i] != NULL)
                idset_put_owned(&grown, set->slots[i]);
        }
        free(set->slots);
        *set = grown;
    }
    char *copy = strndup(s, n);
    if (copy == NULL)
        return -1;
    if (idset_has(set, copy)) {
        free(copy);
        return 0;
    }
    idset_put_owned(set, copy);
    return 0;
}

static void idset_fini(idset_t *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->slots[i]);
    free(set->slots);
    memset(set, 0, sizeof(*set));
}

/* ---- the plugin ---- */

typedef struct log_state {
    const nt_channel_host_t *host;
    int fd;          /* O_APPEND; -1 in sink mode */
    int sink;
    char *path;
    idset_t ids;     /* escaped ids already in the file */
    uint64_t count;  /* messages accepted */
} log_state_t;

static const char *param(const nt_kv_t *kv, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (kv[i].key != NULL && strcmp(kv[i].key, name) == 0)
            return kv[i].value;
    }
    return NULL;
}

static int known_outcome(const char *o)
{
    if (strcmp(o, "sent") == 0 || strcmp(o, "failed") == 0)
        return 1;
    for (size_t i = 0; outcomes[i] != NULL; i++) {
        if (strcmp(outcomes[i], o) == 0)
            return 1;
    }
    return 0;
}

static nt_rc_t log_validate(const nt_kv_t *kv, size_t n, char **errmsg)
{
    const char *o = param(kv, n, "outcome");
    if (o != NULL && !known_outcome(o)) {
        buf_t b = {0};
        buf_json_str(&b, o);
        *errmsg = nt_msgf("log: unknown outcome %s; expected sent, failed, opened, clicked, "
                          "replied, attended, no_show, watched_recording, connected, "
                          "meeting_booked, no_answer or not_interested",
                          b.p != NULL ? b.p : "?");
        free(b.p);
        return NT_EINVAL;
    }
    const char *m = param(kv, n, "message");
    if (m != NULL && strpbrk(m, "\r\n") != NULL) {
        *errmsg = nt_msgf("log: message must be a single line of text");
        return NT_EINVAL;
    }
    return NT_OK;
}

/* Load the escaped value of every line's leading {"id":"..." into the set. */
static int load_ids(log_state_t *st, char **errmsg)
{
    FILE *f = fopen(st->path, "re");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        *errmsg = nt_msgf("log: cannot read %s: %s", st->path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    static const char prefix[] = "{\"id\":\"";
    int rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        if ((size_t)len < sizeof(prefix) || memcmp(line, prefix, sizeof(prefix) - 1) != 0)
            continue;
        const char *s = line + sizeof(prefix) - 1;
        const char *p = s;
        while (p < line + len && *p != '"') {
            if (*p == '\\')
                p++;
            p++;
        }
        if (p >= line + len)
            continue; /* a torn line */
        if (idset_add(&st->ids, s, (size_t)(p - s)) != 0) {
            *errmsg = nt_msgf("log: out of memory loading ids from %s", st->path);
            rc = -1;
            break;
        }
    }
    free(line);
    fclose(f);
    return rc;
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

static nt_rc_t log_init(const nt_channel_host_t *host, void **state, char **errmsg)
{
    log_state_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        *errmsg = nt_msgf("log: out of memory");
        return NT_ENOMEM;
    }
    st->host = host;
    st->fd = -1;
    const char *sink = host->config != NULL ? host->config("log", "sink", "no") : "no";
    st->sink = sink != NULL && strcmp(sink, "yes") == 0;
    const char *path = host->config != NULL ? host->config("log", "path", NULL) : NULL;
    if (path != NULL && path[0] != '\0')
        st->path = strdup(path);
    else
        st->path = nt_msgf("%s/log-channel.jsonl", host->data_dir != NULL ? host->data_dir : ".");
    if (st->path == NULL) {
        *errmsg = nt_msgf("log: out of memory");
        free(st);
        return NT_ENOMEM;
    }
    if (!st->sink) {
        if (load_ids(st, errmsg) != 0)
            goto fail;
        st->fd = open(st->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (st->fd < 0) {
            *errmsg = nt_msgf("log: cannot open %s: %s", st->path, strerror(errno));
            goto fail;
        }
        /* A line torn by a crash would swallow the next one: end it first. */
        struct stat sb;
        char last;
        if (fstat(st->fd, &sb) == 0 && sb.st_size > 0 &&
            pread(st->fd, &last, 1, sb.st_size - 1) == 1 && last != '\n')
            (void)!write(st->fd, "\n", 1);
    }
    if (host->log != NULL)
        host->log(NT_LOG_INFO, "log", "%s %s (%zu ids known)", st->sink ? "sink mode, counting"
                  : "writing to", st->sink ? "only" : st->path, st->ids.n);
    *state = st;
    return NT_OK;
fail:
    if (st->fd >= 0)
        close(st->fd);
    idset_fini(&st->ids);
    free(st->path);
    free(st);
    return NT_ERR;
}

static int64_t now_ms(const log_state_t *st)
{
    if (st->host != NULL && st->host->now_ms != NULL)
        return st->host->now_ms();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static nt_rc_t log_dispatch(void *state, const nt_message_t *msg, nt_channel_done_fn *done,
                            void *done_arg)
{
    log_state_t *st = state;
    const char *outcome = param(msg->params, msg->nparams, "outcome");
    if (outcome == NULL)
        outcome = "sent";
    if (!known_outcome(outcome)) {
        done(done_arg, NT_EPERMFAIL, NULL, "log: unknown outcome");
        return NT_OK;
    }
    if (strcmp(outcome, "failed") == 0) {
        done(done_arg, NT_EPERMFAIL, NULL, "log: the outcome parameter asks for a failure");
        return NT_OK;
    }
    if (msg->id == NULL || msg->id[0] == '\0') {
        done(done_arg, NT_EPERMFAIL, NULL, "log: message without an id");
        return NT_OK;
    }
    if (st->sink) {
        st->count++;
        done(done_arg, NT_OK, outcome, NULL);
        return NT_OK;
    }

    /* The id in its escaped form, as the file holds it: "<escaped>" without the quotes. */
    buf_t idb = {0};
    buf_json_str(&idb, msg->id);
    if (idb.oom) {
        free(idb.p);
        done(done_arg, NT_EUNAVAIL, NULL, "log: out of memory");
        return NT_OK;
    }
    idb.p[idb.len - 1] = '\0';
    const char *eid = idb.p + 1;
    if (idset_has(&st->ids, eid)) {
        free(idb.p);
        done(done_arg, NT_OK, outcome, "duplicate id: already logged");
        return NT_OK;
    }

    buf_t b = {0};
    buf_add(&b, "{\"id\":\"", 7);
    buf_add(&b, eid, strlen(eid));
    buf_add(&b, "\"", 1);
    buf_add(&b, ",\"lead\":", 8);
    buf_json_str(&b, msg->lead_id);
    buf_add(&b, ",\"plan\":", 8);
    buf_json_str(&b, msg->plan_id);
    buf_printf(&b, ",\"version\":%u,\"node\":", (unsigned)msg->plan_version);
    buf_json_str(&b, msg->node_id);
    buf_printf(&b, ",\"visit\":%u,\"channel\":\"log\",\"params\":{", (unsigned)msg->visit);
    for (size_t i = 0; i < msg->nparams; i++) {
        if (i > 0)
            buf_add(&b, ",", 1);
        buf_json_str(&b, msg->params[i].key);
        buf_add(&b, ":", 1);
        buf_json_str(&b, msg->params[i].value);
    }
    buf_printf(&b, "},\"at\":%lld}\n", (long long)now_ms(st));
    if (b.oom) {
        free(b.p);
        free(idb.p);
        done(done_arg, NT_EUNAVAIL, NULL, "log: out of memory");
        return NT_OK;
    }
    if (write_all(st->fd, b.p, b.len) != 0) {
        char detail[256];
        snprintf(detail, sizeof(detail), "log: write %s: %s", st->path, strerror(errno));
        free(b.p);
        free(idb.p);
        done(done_arg, NT_EUNAVAIL, NULL, detail);
        return NT_OK;
    }
    if (idset_add(&st->ids, eid, strlen(eid)) != 0 && st->host != NULL &&
        st->host->log != NULL)
        st->host->log(NT_LOG_WARN, "log", "out of memory remembering an id");
    st->count++;
    free(b.p);
    free(idb.p);
    done(done_arg, NT_OK, outcome, NULL);
    return NT_OK;
}

static void log_shutdown(void *state)
{
    log_state_t *st = state;
    if (st == NULL)
        return;
    if (st->host != NULL && st->host->log != NULL)
        st->host->log(NT_LOG_INFO, "log", "%llu messages accepted", (unsigned long long)st->count);
    if (st->fd >= 0)
        close(st->fd);
    idset_fini(&st->ids);
    free(st->path);
    free(st);
}

static const nt_channel_ops_t log_ops = {
    .abi_version = NT_CHANNEL_ABI_VERSION,
    .size = sizeof(nt_channel_ops_t),
    .name = "log",
    .description = "writes each message as a JSON line to a file (tests, demos, audits)",
    .params = params,
    .outcomes = outcomes,
    .validate = log_validate,
    .init = log_init,
    .dispatch = log_dispatch,
    .shutdown = log_shutdown,
};

EXPORT const nt_channel_ops_t *nt_channel_entry(void)
{
    return &log_ops;
}
