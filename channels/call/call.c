/* The `call` channel: a send node becomes a phone-call task for a sales rep. The task itself
 * lives in the daemon's task store (host->create_task; plugins have no Redis handle), which
 * routes it to the lead's owner or a team's rep, creates it once per message id and later,
 * when the rep completes it through the API, posts the rep's outcome for the run.
 *
 * The dispatch reports "task_created": the send node keeps resting (a plan gives no edge to that
 * outcome) until the rep's outcome arrives: connected, left_voicemail, no_answer, wrong_number,
 * meeting_booked or not_interested.
 *
 * Params: reason (text; {{attribute}} is replaced by the lead's attribute, {{score}} and
 * {{stage}} included), points (talking points), priority (low|normal|high), due_in and sla
 * (durations: 30m, 4h, 1d, 2w), team. Config: channel.call.due_in (default 4h) and
 * channel.call.sla (default 1d) for nodes that give none; routing settings are the daemon's
 * (docs/architecture.md, "Call tasks"). */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nurture/channel.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_TEXT 4000

static const char *const outcomes[] = {
    "task_created", "connected", "left_voicemail", "no_answer", "wrong_number",
    "meeting_booked", "not_interested", NULL,
};

static const nt_channel_param_t params[] = {
    {"reason", 1, "why to call, in words; {{attribute}} is replaced by the lead's value"},
    {"points", 0, "talking points for the rep"},
    {"priority", 0, "low, normal (default) or high"},
    {"due_in", 0, "how soon the call is due: 30m, 4h (default), 1d, 2w"},
    {"sla", 0, "escalate to the team queue when not done within: 1d (default)"},
    {"team", 0, "the team whose reps take the task when the lead has no owner"},
    {NULL, 0, NULL},
};

typedef struct call_state {
    const nt_channel_host_t *host;
    int64_t due_in_ms;
    int64_t sla_ms;
} call_state_t;

static const char *param(const nt_kv_t *kv, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (kv[i].key != NULL && strcmp(kv[i].key, name) == 0)
            return kv[i].value;
    return NULL;
}

/* "<n><unit>" with unit s, m, h, d or w, up to a year, in ms; -1 when malformed. */
static int64_t duration_ms(const char *s)
{
    char *end;
    long long n;
    int64_t unit;

    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    n = strtoll(s, &end, 10);
    switch (*end) {
    case 's':
        unit = 1000;
        break;
    case 'm':
        unit = 60000;
        break;
    case 'h':
        unit = 3600000;
        break;
    case 'd':
        unit = 86400000;
        break;
    case 'w':
        unit = 7 * 86400000LL;
        break;
    default:
        return -1;
    }
    if (end[1] != '\0' || n < 0 || n * unit > 366 * 86400000LL)
        return -1;
    return n * unit;
}

static int team_valid(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++) {
        char c = s[n];

        if (n >= 64 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '@' ||
                         c == '+' || c == '-'))
            return 0;
    }
    return n > 0;
}

/* Placeholders are {{name}} with a name of [a-z0-9_]; 0 when every one is well formed. */
static int placeholders_ok(const char *s)
{
    for (const char *p = strstr(s, "{{"); p != NULL; p = strstr(p, "{{")) {
        const char *q = p + 2;

        while ((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '_')
            q++;
        if (q == p + 2 || strncmp(q, "}}", 2) != 0)
            return -1;
        p = q + 2;
    }
    return 0;
}

static nt_rc_t call_validate(const nt_kv_t *kv, size_t n, char **errmsg)
{
    const char *v;

    v = param(kv, n, "reason");
    if (v != NULL && (v[0] == '\0' || strlen(v) > MAX_TEXT)) {
        *errmsg = nt_msgf("call: reason must be 1 to %d bytes of text", MAX_TEXT);
        return NT_EINVAL;
    }
    if (v != NULL && placeholders_ok(v) != 0) {
        *errmsg = nt_msgf("call: reason has a malformed placeholder; use {{attribute}} with a name "
                          "of a-z 0-9 _");
        return NT_EINVAL;
    }
    v = param(kv, n, "points");
    if (v != NULL && strlen(v) > MAX_TEXT) {
        *errmsg = nt_msgf("call: points must be at most %d bytes", MAX_TEXT);
        return NT_EINVAL;
    }
    v = param(kv, n, "priority");
    if (v != NULL && strcmp(v, "low") != 0 && strcmp(v, "normal") != 0 &&
        strcmp(v, "high") != 0) {
        *errmsg = nt_msgf("call: priority must be low, normal or high");
        return NT_EINVAL;
    }
    v = param(kv, n, "due_in");
    if (v != NULL && duration_ms(v) < 0) {
        *errmsg = nt_msgf("call: due_in must be a duration such as 30m, 4h, 1d or 2w");
        return NT_EINVAL;
    }
    v = param(kv, n, "sla");
    if (v != NULL && duration_ms(v) <= 0) {
        *errmsg = nt_msgf("call: sla must be a positive duration such as 4h, 1d or 2w");
        return NT_EINVAL;
    }
    v = param(kv, n, "team");
    if (v != NULL && !team_valid(v)) {
        *errmsg = nt_msgf("call: team must be 1 to 64 of A-Z a-z 0-9 . _ @ + -");
        return NT_EINVAL;
    }
    return NT_OK;
}

static nt_rc_t call_init(const nt_channel_host_t *host, void **state, char **errmsg)
{
    call_state_t *st;
    const char *due, *sla;

    if (host == NULL || host->size < offsetof(nt_channel_host_t, create_task) + sizeof(void *) ||
        host->create_task == NULL) {
        *errmsg = nt_msgf("call: the host has no task store (create_task); a newer nurtured is "
                          "needed");
        return NT_EABI;
    }
    due = host->config("call", "due_in", "4h");
    sla = host->config("call", "sla", "1d");
    if (duration_ms(due) < 0 || duration_ms(sla) <= 0) {
        *errmsg = nt_msgf("call: channel.call.due_in and channel.call.sla are durations such as "
                          "4h or 1d");
        return NT_EINVAL;
    }
    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        *errmsg = nt_msgf("call: out of memory");
        return NT_ENOMEM;
    }
    st->host = host;
    st->due_in_ms = duration_ms(due);
    st->sla_ms = duration_ms(sla);
    *state = st;
    return NT_OK;
}

/* The reason with each {{name}} replaced by the lead's value ("" when it has none). Malloc'd. */
static char *fill(const char *tpl, const nt_message_t *msg)
{
    size_t cap = strlen(tpl) + 1, len = 0;
    char *out = malloc(cap);

    if (out == NULL)
        return NULL;
    for (const char *p = tpl; *p;) {
        const char *val = NULL, *end = NULL;
        size_t vlen, nlen;

        if (p[0] == '{' && p[1] == '{' && (end = strstr(p + 2, "}}")) != NULL) {
            nlen = (size_t)(end - p - 2);
            val = "";
            for (size_t i = 0; i < msg->nlead; i++)
                if (msg->lead[i].key && strlen(msg->lead[i].key) == nlen &&
                    memcmp(msg->lead[i].key, p + 2, nlen) == 0 && msg->lead[i].value)
                    val = msg->lead[i].value;
        }
        if (val == NULL) {
            val = p;
            vlen = 1;
        } else {
            vlen = strlen(val);
        }
        if (len + vlen + 1 > cap) {
            char *n;

            cap = (len + vlen + 1) * 2;
            n = realloc(out, cap);
            if (n == NULL) {
                free(out);
                return NULL;
            }
            out = n;
        }
        memcpy(out + len, val, vlen);
        len += vlen;
        p = end ? end + 2 : p + 1;
    }
    out[len] = '\0';
    return out;
}

static nt_rc_t call_dispatch(void *state, const nt_message_t *msg, nt_channel_done_fn *done,
                             void *done_arg)
{
    call_state_t *st = state;
    const char *reason = param(msg->params, msg->nparams, "reason");
    const char *due = param(msg->params, msg->nparams, "due_in");
    const char *sla = param(msg->params, msg->nparams, "sla");
    char *text, dues[24], slas[24];
    nt_kv_t f[6];
    size_t n = 0;
    nt_rc_t rc;

    if (msg->id == NULL || msg->id[0] == '\0') {
        done(done_arg, NT_EPERMFAIL, NULL, "call: message without an id");
        return NT_OK;
    }
    text = fill(reason ? reason : "", msg);
    if (text == NULL) {
        done(done_arg, NT_EUNAVAIL, NULL, "call: out of memory");
        return NT_OK;
    }
    snprintf(dues, sizeof(dues), "%lld",
             (long long)(due && duration_ms(due) >= 0 ? duration_ms(due) : st->due_in_ms));
    snprintf(slas, sizeof(slas), "%lld",
             (long long)(sla && duration_ms(sla) > 0 ? duration_ms(sla) : st->sla_ms));
    f[n++] = (nt_kv_t){"reason", text};
    f[n++] = (nt_kv_t){"due_in_ms", dues};
    f[n++] = (nt_kv_t){"sla_ms", slas};
    if (param(msg->params, msg->nparams, "points"))
        f[n++] = (nt_kv_t){"points", param(msg->params, msg->nparams, "points")};
    if (param(msg->params, msg->nparams, "priority"))
        f[n++] = (nt_kv_t){"priority", param(msg->params, msg->nparams, "priority")};
    if (param(msg->params, msg->nparams, "team"))
        f[n++] = (nt_kv_t){"team", param(msg->params, msg->nparams, "team")};
    /* The worker's completion goes straight to the store: nothing of ours is pending. */
    rc = st->host->create_task(msg, f, n, done, done_arg);
    free(text);
    if (rc == NT_AGAIN)
        return NT_AGAIN;
    done(done_arg, rc == NT_EINVAL ? NT_EPERMFAIL : NT_EUNAVAIL, NULL,
         rc == NT_EINVAL ? "call: the message cannot become a task"
                         : "call: the task store is unavailable");
    return NT_OK;
}

static void call_shutdown(void *state)
{
    free(state);
}

static const nt_channel_ops_t call_ops = {
    .abi_version = NT_CHANNEL_ABI_VERSION,
    .size = sizeof(nt_channel_ops_t),
    .name = "call",
    .description = "a phone-call task for a sales rep; the rep's logged outcome moves the lead",
    .params = params,
    .outcomes = outcomes,
    .validate = call_validate,
    .init = call_init,
    .dispatch = call_dispatch,
    .shutdown = call_shutdown,
};

EXPORT const nt_channel_ops_t *nt_channel_entry(void)
{
    return &call_ops;
}
