/* Configuration: defaults, redis.conf-style files, environment tokens and --key value flags.
 *
 * Every value passes through nt_config_set, so a key means the same in a file and as a flag and
 * is validated once. Numbers are parsed with strtol/strtod and must use the whole string. Files
 * are hostile input: lines longer than NT_CONFIG_MAX_LINE, NUL bytes and unterminated quotes are
 * errors naming file:line, never crashes or silent truncation. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "errmsg.h"
#include "log.h"
#include "tz.h"

#ifndef NT_REDIS_SERVER
#define NT_REDIS_SERVER "redis-server"
#endif
#ifndef NT_DEFAULT_MODULES_DIR
#define NT_DEFAULT_MODULES_DIR "./modules"
#endif

#define NT_CONFIG_MAX_LINE 65536  /* bytes per line, newline excluded */
#define NT_TOKEN_MIN_SECRET 16

/* ---- small helpers ---- */

/* A short printable rendering of a user value for error messages (caller frees). Long or
 * binary values are cut and escaped so that a hostile file cannot flood the terminal. */
static char *show(const char *v)
{
    size_t cap = 48;
    char *out = malloc(cap * 4 + 8);
    if (out == NULL)
        return NULL;
    size_t o = 0, i = 0;
    for (; v[i] != '\0' && i < cap; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)sprintf(out + o, "\\x%02x", c);
    }
    if (v[i] != '\0') {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

static char *bad_value(const char *key, const char *value, const char *expect)
{
    char *s = show(value);
    char *m = nt_msgf("%s: expected %s, got '%s'", key, expect, s != NULL ? s : "?");
    free(s);
    return m;
}

static int set_str(char **dst, const char *value)
{
    char *s = strdup(value);
    if (s == NULL)
        return -1;
    free(*dst);
    *dst = s;
    return 0;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    if (s[0] == '\0' || isspace((unsigned char)s[0]))
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Sizes in bytes with optional redis.conf units: k/m/g (1000s) and kb/mb/gb (1024s). */
static int parse_size(const char *s, unsigned long long lo, unsigned long long hi,
                      unsigned long long *out)
{
    if (s[0] == '\0' || !isdigit((unsigned char)s[0]))
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    unsigned long long mul = 1;
    if (*end != '\0') {
        static const struct { const char *unit; unsigned long long mul; } units[] = {
            {"k", 1000ULL}, {"kb", 1024ULL}, {"m", 1000000ULL}, {"mb", 1048576ULL},
            {"g", 1000000000ULL}, {"gb", 1073741824ULL},
        };
        size_t i;
        for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (strcasecmp(end, units[i].unit) == 0)
                break;
        }
        if (i == sizeof(units) / sizeof(units[0]))
            return -1;
        mul = units[i].mul;
    }
    if (v > ULLONG_MAX / mul)
        return -1;
    v *= mul;
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int valid_channel_name(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    }
    return 1;
}

/* ---- tokens ---- */

static int token_add(nt_config_t *cfg, const char *role, const char *secret, const char *name,
                     char **errmsg)
{
    if (strcmp(role, "ops") != 0 && strcmp(role, "rep") != 0 && strcmp(role, "webhook") != 0) {
        char *s = show(role);
        nt_errmsg_set(errmsg, nt_msgf("token: role must be ops, rep or webhook, got '%s'",
                                      s != NULL ? s : "?"));
        free(s);
        return -1;
    }
    /* Never echo a secret in an error message. */
    if (strlen(secret) < NT_TOKEN_MIN_SECRET) {
        nt_errmsg_set(errmsg, nt_msgf("token: the %s secret must be at least %d characters", role,
                                      NT_TOKEN_MIN_SECRET));
        return -1;
    }
    for (const char *p = secret; *p != '\0'; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f) {
            nt_errmsg_set(errmsg, nt_msgf("token: the %s secret contains a space or control "
                                          "character",
                                          role));
            return -1;
        }
    }
    if (name != NULL && name[0] == '\0')
        name = NULL;
    for (size_t i = 0; i < cfg->ntokens; i++) {
        if (strcmp(cfg->tokens[i].secret, secret) == 0) {
            nt_errmsg_set(errmsg, nt_msgf("token: the same secret is given twice (roles %s and %s)",
                                          cfg->tokens[i].role, role));
            return -1;
        }
    }
    nt_token_t *t = realloc(cfg->tokens, (cfg->ntokens + 1) * sizeof(*t));
    if (t == NULL)
        goto oom;
    cfg->tokens = t;
    t = &cfg->tokens[cfg->ntokens];
    t->role = strdup(role);
    t->secret = strdup(secret);
    t->name = strdup(name != NULL ? name : role);
    if (t->role == NULL || t->secret == NULL || t->name == NULL) {
        free(t->role);
        free(t->secret);
        free(t->name);
        goto oom;
    }
    cfg->ntokens++;
    return 0;
oom:
    nt_errmsg_set(errmsg, nt_msgf("token: out of memory"));
    return -1;
}

/* "role secret [name]" (file style) or "role:secret[:name]" (flag style). */
static int token_parse(nt_config_t *cfg, const char *value, char **errmsg)
{
    char *copy = strdup(value);
    if (copy == NULL) {
        nt_errmsg_set(errmsg, nt_msgf("token: out of memory"));
        return -1;
    }
    char *parts[4] = {NULL, NULL, NULL, NULL};
    int n = 0;
    int ws = strpbrk(copy, " \t") != NULL;
    char *save = NULL;
    for (char *p = strtok_r(copy, ws ? " \t" : ":", &save); p != NULL;
         p = strtok_r(NULL, ws ? " \t" : ":", &save)) {
        if (n == 4) {
            n++;
            break;
        }
        parts[n++] = p;
    }
    int rc;
    if (n < 2 || n > 3) {
        nt_errmsg_set(errmsg,
                      nt_msgf("token: expected 'role secret [name]' or 'role:secret[:name]'"));
        rc = -1;
    } else {
        rc = token_add(cfg, parts[0], parts[1], parts[2], errmsg);
    }
    free(copy);
    return rc;
}

/* ---- channel.<name>.<key> ---- */

static int extra_set(nt_config_t *cfg, const char *key, const char *value, char **errmsg)
{
    const char *name = key + strlen("channel.");
    const char *dot = strchr(name, '.');
    if (dot == NULL || !valid_channel_name(name, (size_t)(dot - name)) || dot[1] == '\0') {
        char *s = show(key);
        nt_errmsg_set(errmsg, nt_msgf("%s: expected channel.<name>.<key> with a name of [a-z0-9_]",
                                      s != NULL ? s : "?"));
        free(s);
        return -1;
    }
    for (size_t i = 0; i < cfg->nextra; i++) {
        if (strcmp(cfg->extra[i].key, key) == 0) {
            char *v = strdup(value);
            if (v == NULL)
                goto oom;
            free((char *)cfg->extra[i].value);
            cfg->extra[i].value = v;
            return 0;
        }
    }
    nt_kv_t *kv = realloc(cfg->extra, (cfg->nextra + 1) * sizeof(*kv));
    if (kv == NULL)
        goto oom;
    cfg->extra = kv;
    char *k = strdup(key), *v = strdup(value);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        goto oom;
    }
    cfg->extra[cfg->nextra].key = k;
    cfg->extra[cfg->nextra].value = v;
    cfg->nextra++;
    return 0;
oom:
    nt_errmsg_set(errmsg, nt_msgf("%s: out of memory", key));
    return -1;
}

const char *nt_config_channel(const nt_config_t *cfg, const char *channel, const char *key,
                              const char *def)
{
    if (cfg == NULL || channel == NULL || key == NULL)
        return def;
    size_t cl = strlen(channel), kl = strlen(key);
    for (size_t i = 0; i < cfg->nextra; i++) {
        const char *k = cfg->extra[i].key + strlen("channel.");
        if (strncmp(k, channel, cl) == 0 && k[cl] == '.' && strncmp(k + cl + 1, key, kl) == 0 &&
            k[cl + 1 + kl] == '\0')
            return cfg->extra[i].value;
    }
    return def;
}

/* ---- defaults, set, fini ---- */

int nt_config_defaults(nt_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    char host[256];
    if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
        strcpy(host, "localhost");
    host[sizeof(host) - 1] = '\0';
    cfg->bind = strdup("127.0.0.1");
    cfg->port = 7700;
    cfg->redis = strdup("");
    cfg->redis_server = strdup(NT_REDIS_SERVER);
    cfg->data_dir = strdup("./nurture-data");
    cfg->modules_dir = strdup(NT_DEFAULT_MODULES_DIR);
    cfg->partitions = 64;
    cfg->time_scale = 1.0;
    cfg->batch = 128;
    cfg->poll_ms = 10;
    cfg->lease_ms = 5000;
    cfg->redis_timeout_ms = 5000;
    cfg->worker_id = nt_msgf("%s:%ld", host, (long)getpid());
    cfg->log_level = NT_LOG_INFO;
    cfg->log_file = strdup("");
    cfg->max_body = 1048576;
    cfg->max_plan_body = 4194304;
    cfg->timeline_max = 20;
    cfg->dispatch_retries = 8;
    if (cfg->bind == NULL || cfg->redis == NULL || cfg->redis_server == NULL ||
        cfg->data_dir == NULL || cfg->modules_dir == NULL || cfg->worker_id == NULL ||
        cfg->log_file == NULL) {
        nt_config_fini(cfg);
        return -1;
    }
    return 0;
}

void nt_config_fini(nt_config_t *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->bind);
    free(cfg->redis);
    free(cfg->redis_server);
    free(cfg->data_dir);
    free(cfg->modules_dir);
    free(cfg->worker_id);
    free(cfg->log_file);
    free(cfg->public_url);
    free(cfg->tracking_secret);
    free(cfg->webhook_secret);
    for (size_t i = 0; i < cfg->ntokens; i++) {
        free(cfg->tokens[i].role);
        free(cfg->tokens[i].secret);
        free(cfg->tokens[i].name);
    }
    free(cfg->tokens);
    for (size_t i = 0; i < cfg->nextra; i++) {
        free((char *)cfg->extra[i].key);
        free((char *)cfg->extra[i].value);
    }
    free(cfg->extra);
    memset(cfg, 0, sizeof(*cfg));
}

enum key_kind { K_STR, K_STR_EMPTY_OK, K_INT, K_UINT, K_DOUBLE, K_SIZE, K_LEVEL, K_REDIS, K_SECRET,
                K_URL, K_INSTANT };

/* The table drives nt_config_set and nt_config_usage: one row per key. */
typedef struct key_def {
    const char *key;
    enum key_kind kind;
    size_t off;
    long long lo, hi;
    const char *def; /* shown by usage */
    const char *help;
} key_def_t;

#define OFF(f) offsetof(nt_config_t, f)

static const key_def_t keys[] = {
    {"bind", K_STR, OFF(bind), 0, 0, "127.0.0.1", "address the HTTP API listens on"},
    {"port", K_INT, OFF(port), 0, 65535, "7700", "HTTP API port"},
    {"redis", K_REDIS, OFF(redis), 0, 0, "\"\"",
     "Redis address: host:port or unix:/path; empty starts an embedded redis-server"},
    {"redis-server", K_STR, OFF(redis_server), 0, 0, NT_REDIS_SERVER,
     "redis-server binary for the embedded Redis"},
    {"data-dir", K_STR, OFF(data_dir), 0, 0, "./nurture-data",
     "data directory (embedded Redis, channel files)"},
    {"modules-dir", K_STR, OFF(modules_dir), 0, 0, NT_DEFAULT_MODULES_DIR,
     "directory of channel plugins (nt_*.so)"},
    {"partitions", K_UINT, OFF(partitions), 1, 16384, "64",
     "lead partitions; fixed when the deployment is created"},
    {"time-scale", K_DOUBLE, OFF(time_scale), 0, 10000000, "1",
     "clock speed-up for demos and tests (>0, up to 1e7)"},
    {"time-start", K_INSTANT, OFF(time_start), 0, 0, "\"\"",
     "plan time starts at this UTC instant, YYYY-MM-DDTHH:MMZ (demos of plans with fixed "
     "dates; one process per Redis); empty: now"},
    {"batch", K_UINT, OFF(batch), 1, 10000, "128", "runs per fetch/apply round"},
    {"poll-ms", K_INT, OFF(poll_ms), 1, 60000, "10",
     "shortest pause between looks at a partition; an idle one is looked at when its next "
     "timer is due, at the latest every 50 x poll-ms (at least 500 ms)"},
    {"lease-ms", K_INT, OFF(lease_ms), 500, 3600000, "5000", "partition lease period (>= 500)"},
    {"redis-timeout-ms", K_INT, OFF(redis_timeout_ms), 1, 3600000, "5000",
     "a Redis request batch slower than this counts as a broken connection"},
    {"worker-id", K_STR, OFF(worker_id), 0, 0, "<hostname>:<pid>",
     "this worker's name in partition leases"},
    {"log-level", K_LEVEL, OFF(log_level), 0, 0, "info", "debug, info, warn or error"},
    {"log-file", K_STR_EMPTY_OK, OFF(log_file), 0, 0, "\"\"", "log file; empty for stderr"},
    {"max-body", K_SIZE, OFF(max_body), 1, 1073741824, "1048576",
     "largest JSON request body in bytes (units k, kb, m, mb, g, gb)"},
    {"max-plan-body", K_SIZE, OFF(max_plan_body), 1, 1073741824, "4194304",
     "largest plan upload in bytes"},
    {"timeline-max", K_INT, OFF(timeline_max), 1, 1000000, "20",
     "timeline entries kept per lead"},
    {"dispatch-retries", K_INT, OFF(dispatch_retries), 0, 1000, "8",
     "transient delivery attempts before a send leaves by \"failed\""},
    {"public-url", K_URL, OFF(public_url), 0, 0, "http://<bind>:<port>",
     "base URL of signed links in messages (unsubscribe, clicks, opens)"},
    {"tracking-secret", K_SECRET, OFF(tracking_secret), 0, 0, "<data-dir>/tracking.key",
     "HMAC key of signed links (at least 16 characters); generated when unset"},
    {"webhook-secret", K_SECRET, OFF(webhook_secret), 0, 0, "<data-dir>/webhook.key",
     "HMAC key of provider webhooks (X-Nurture-Signature); generated when unset"},
};

static int valid_redis_addr(const char *v)
{
    if (v[0] == '\0')
        return 1;
    if (strncmp(v, "unix:", 5) == 0)
        return v[5] != '\0';
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon == v)
        return 0;
    long port;
    return parse_long(colon + 1, 1, 65535, &port) == 0;
}

int nt_config_set(nt_config_t *cfg, const char *key, const char *value, char **errmsg)
{
    if (errmsg != NULL)
        *errmsg = NULL;
    if (key == NULL || value == NULL) {
        nt_errmsg_set(errmsg, nt_msgf("missing key or value"));
        return -1;
    }
    if (strcmp(key, "token") == 0)
        return token_parse(cfg, value, errmsg);
    if (strncmp(key, "channel.", 8) == 0)
        return extra_set(cfg, key, value, errmsg);

    const key_def_t *k = NULL;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (strcmp(keys[i].key, key) == 0) {
            k = &keys[i];
            break;
        }
    }
    if (k == NULL) {
        char *s = show(key);
        nt_errmsg_set(errmsg, nt_msgf("unknown key '%s'", s != NULL ? s : "?"));
        free(s);
        return -1;
    }
    char *field = (char *)cfg + k->off;
    char expect[96];
    switch (k->kind) {
    case K_STR:
    case K_STR_EMPTY_OK:
    case K_REDIS:
        if (k->kind == K_STR && value[0] == '\0') {
            nt_errmsg_set(errmsg, bad_value(key, value, "a non-empty value"));
            return -1;
        }
        if (k->kind == K_REDIS && !valid_redis_addr(value)) {
            nt_errmsg_set(errmsg, bad_value(key, value, "\"\", host:port or unix:/path"));
            return -1;
        }
        if (set_str((char **)(void *)field, value) != 0) {
            nt_errmsg_set(errmsg, nt_msgf("%s: out of memory", key));
            return -1;
        }
        return 0;
    case K_SECRET:
        /* Never echo a secret in an error message. */
        if (value[0] != '\0' && strlen(value) < NT_TOKEN_MIN_SECRET) {
            nt_errmsg_set(errmsg,
                          nt_msgf("%s: must be at least %d characters", key, NT_TOKEN_MIN_SECRET));
            return -1;
        }
        for (const char *p = value; *p != '\0'; p++) {
            if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f) {
                nt_errmsg_set(errmsg, nt_msgf("%s: contains a space or control character", key));
                return -1;
            }
        }
        if (set_str((char **)(void *)field, value) != 0) {
            nt_errmsg_set(errmsg, nt_msgf("%s: out of memory", key));
            return -1;
        }
        return 0;
    case K_URL: {
        int ok = value[0] == '\0' || strncmp(value, "http://", 7) == 0 ||
                 strncmp(value, "https://", 8) == 0;
        for (const char *p = value; ok && *p != '\0'; p++)
            ok = (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f && *p != '"' &&
                 *p != '<' && *p != '>' && *p != '\\' && *p != '?' && *p != '#';
        if (!ok) {
            nt_errmsg_set(errmsg, bad_value(key, value, "an http:// or https:// URL without a "
                                                        "query"));
            return -1;
        }
        if (set_str((char **)(void *)field, value) != 0) {
            nt_errmsg_set(errmsg, nt_msgf("%s: out of memory", key));
            return -1;
        }
        size_t n = strlen(*(char **)(void *)field);
        while (n > 0 && (*(char **)(void *)field)[n - 1] == '/')
            (*(char **)(void *)field)[--n] = '\0';
        return 0;
    }
    case K_INT:
    case K_UINT: {
        long v;
        if (parse_long(value, (long)k->lo, (long)k->hi, &v) != 0) {
            snprintf(expect, sizeof(expect), "an integer in %lld..%lld", k->lo, k->hi);
            nt_errmsg_set(errmsg, bad_value(key, value, expect));
            return -1;
        }
        if (k->kind == K_INT)
            *(int *)(void *)field = (int)v;
        else
            *(unsigned *)(void *)field = (unsigned)v;
        return 0;
    }
    case K_DOUBLE: {
        char *end = NULL;
        double v = NAN;
        errno = 0;
        if (value[0] != '\0' && !isspace((unsigned char)value[0]))
            v = strtod(value, &end);
        if (end == NULL || isnan(v) || errno != 0 || *end != '\0' || !isfinite(v) ||
            v <= (double)k->lo || v > (double)k->hi) {
            snprintf(expect, sizeof(expect), "a number > %lld and <= %lld", k->lo, k->hi);
            nt_errmsg_set(errmsg, bad_value(key, value, expect));
            return -1;
        }
        *(double *)(void *)field = v;
        return 0;
    }
    case K_SIZE: {
        unsigned long long v;
        if (parse_size(value, (unsigned long long)k->lo, (unsigned long long)k->hi, &v) != 0) {
            snprintf(expect, sizeof(expect), "a size in bytes in %lld..%lld (units k, kb, m, mb)",
                     k->lo, k->hi);
            nt_errmsg_set(errmsg, bad_value(key, value, expect));
            return -1;
        }
        *(size_t *)(void *)field = (size_t)v;
        return 0;
    }
    case K_INSTANT: {
        int64_t ms = 0;
        if (value[0] != '\0' &&
            (strnlen(value, 18) != 17 || nt_tz_local_to_utc(NULL, value, &ms) != NT_OK ||
             ms <= 0)) {
            nt_errmsg_set(errmsg, bad_value(key, value, "\"\" or a UTC instant "
                                                        "YYYY-MM-DDTHH:MMZ after 1970"));
            return -1;
        }
        *(int64_t *)(void *)field = ms;
        return 0;
    }
    case K_LEVEL: {
        int lv = nt_log_level_parse(value);
        if (lv < 0) {
            nt_errmsg_set(errmsg, bad_value(key, value, "debug, info, warn or error"));
            return -1;
        }
        *(int *)(void *)field = lv;
        return 0;
    }
    }
    return -1;
}

/* ---- files ---- */

/* Split a line into arguments like redis.conf: whitespace separated, "double quoted" with
 * backslash escapes (\n \r \t \" \\ \xHH) or 'single quoted' (only \' escaped). A closing quote
 * must be followed by a space or the end. Returns the count, or -1 with *why set (static). The
 * arguments point into buf, which is modified in place. */
static int split_args(char *line, char **argv, int max, const char **why)
{
    int argc = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\f' || *p == '\v')
            p++;
        if (*p == '\0' || *p == '#')
            return argc;
        if (argc == max) {
            *why = "too many values";
            return -1;
        }
        char *out = p;
        argv[argc++] = out;
        if (*p == '"' || *p == '\'') {
            char q = *p++;
            for (;;) {
                if (*p == '\0') {
                    *why = "unterminated quote";
                    return -1;
                }
                if (*p == q) {
                    p++;
                    break;
                }
                if (*p == '\\' && q == '"' && p[1] != '\0') {
                    p++;
                    char c = *p;
                    if (c == 'n')
                        c = '\n';
                    else if (c == 'r')
                        c = '\r';
                    else if (c == 't')
                        c = '\t';
                    else if (c == 'x' && isxdigit((unsigned char)p[1]) &&
                             isxdigit((unsigned char)p[2])) {
                        char hex[3] = {p[1], p[2], '\0'};
                        c = (char)strtol(hex, NULL, 16);
                        p += 2;
                        if (c == '\0') {
                            /* It would cut the value silently. */
                            *why = "NUL byte in a quoted value";
                            return -1;
                        }
                    }
                    *out++ = c;
                    p++;
                } else if (*p == '\\' && q == '\'' && p[1] == '\'') {
                    *out++ = '\'';
                    p += 2;
                } else {
                    *out++ = *p++;
                }
            }
            if (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\r') {
                *why = "closing quote must be followed by a space";
                return -1;
            }
            if (*p != '\0')
                p++;
            *out = '\0';
        } else {
            while (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\f' &&
                   *p != '\v')
                p++;
            if (*p != '\0')
                *p++ = '\0';
        }
    }
}

int nt_config_load_file(nt_config_t *cfg, const char *path, char **errmsg)
{
    if (errmsg != NULL)
        *errmsg = NULL;
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        int err = errno;
        nt_errmsg_set(errmsg, nt_msgf("%s: %s", path, strerror(err)));
        return -1;
    }
    char *line = malloc(NT_CONFIG_MAX_LINE + 1);
    if (line == NULL) {
        fclose(f);
        nt_errmsg_set(errmsg, nt_msgf("%s: out of memory", path));
        return -1;
    }
    int rc = 0;
    unsigned long lineno = 0;
    int eof = 0;
    while (!eof && rc == 0) {
        size_t len = 0;
        int nul = 0, toolong = 0, c;
        lineno++;
        for (;;) {
            c = getc(f);
            if (c == EOF) {
                eof = 1;
                break;
            }
            if (c == '\n')
                break;
            if (c == '\0')
                nul = 1;
            if (len < NT_CONFIG_MAX_LINE)
                line[len++] = (char)c;
            else
                toolong = 1;
        }
        if (eof && ferror(f)) {
            int err = errno;
            nt_errmsg_set(errmsg, nt_msgf("%s:%lu: read error: %s", path, lineno, strerror(err)));
            rc = -1;
            break;
        }
        if (eof && len == 0 && !toolong)
            break;
        line[len] = '\0';
        if (toolong) {
            nt_errmsg_set(errmsg, nt_msgf("%s:%lu: line longer than %d bytes", path, lineno,
                                          NT_CONFIG_MAX_LINE));
            rc = -1;
            break;
        }
        if (nul) {
            nt_errmsg_set(errmsg, nt_msgf("%s:%lu: NUL byte in line", path, lineno));
            rc = -1;
            break;
        }
        char *argv[5];
        const char *why = NULL;
        int argc = split_args(line, argv, 5, &why);
        if (argc < 0) {
            nt_errmsg_set(errmsg, nt_msgf("%s:%lu: %s", path, lineno, why));
            rc = -1;
            break;
        }
        if (argc == 0)
            continue;
        char *err = NULL;
        if (strcmp(argv[0], "token") == 0) {
            if (argc < 3 || argc > 4) {
                nt_errmsg_set(errmsg,
                              nt_msgf("%s:%lu: token: expected 'token <role> <secret> [name]'",
                                      path, lineno));
                rc = -1;
                break;
            }
            rc = token_add(cfg, argv[1], argv[2], argc == 4 ? argv[3] : NULL, &err);
        } else if (argc != 2) {
            char *s = show(argv[0]);
            err = nt_msgf("%s: expected exactly one value%s", s != NULL ? s : "?",
                          argc == 1 ? ", got none" : " (quote values with spaces)");
            free(s);
            rc = -1;
        } else {
            rc = nt_config_set(cfg, argv[0], argv[1], &err);
        }
        if (rc != 0) {
            nt_errmsg_set(errmsg, nt_msgf("%s:%lu: %s", path, lineno, err != NULL ? err : "error"));
            free(err);
        }
    }
    free(line);
    fclose(f);
    return rc;
}

/* ---- command line and environment ---- */

static int env_tokens(nt_config_t *cfg, char **errmsg)
{
    static const struct { const char *env, *role; } envs[] = {
        {"NURTURE_TOKEN_OPS", "ops"},
        {"NURTURE_TOKEN_REP", "rep"},
        {"NURTURE_TOKEN_WEBHOOK", "webhook"},
    };
    for (size_t i = 0; i < sizeof(envs) / sizeof(envs[0]); i++) {
        const char *v = getenv(envs[i].env);
        if (v == NULL || v[0] == '\0')
            continue;
        /* A comma-separated list of secret[:name]. */
        char *copy = strdup(v);
        if (copy == NULL) {
            nt_errmsg_set(errmsg, nt_msgf("%s: out of memory", envs[i].env));
            return -1;
        }
        char *save = NULL;
        int rc = 0;
        for (char *item = strtok_r(copy, ",", &save); item != NULL && rc == 0;
             item = strtok_r(NULL, ",", &save)) {
            char *name = strchr(item, ':');
            if (name != NULL)
                *name++ = '\0';
            char *err = NULL;
            rc = token_add(cfg, envs[i].role, item, name, &err);
            if (rc != 0) {
                nt_errmsg_set(errmsg, nt_msgf("%s: %s", envs[i].env, err != NULL ? err : "error"));
                free(err);
            }
        }
        free(copy);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* Split argv[i] into key and value ("--key value" or "--key=value"). Returns the number of
 * argv entries used (1 or 2), 0 for a missing value, -1 for a non-flag. */
static int flag_at(int argc, char **argv, int i, char *key, size_t keycap, const char **value)
{
    const char *a = argv[i];
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0')
        return -1;
    a += 2;
    const char *eq = strchr(a, '=');
    size_t kl = eq != NULL ? (size_t)(eq - a) : strlen(a);
    if (kl >= keycap)
        kl = keycap - 1;
    memcpy(key, a, kl);
    key[kl] = '\0';
    if (eq != NULL) {
        *value = eq + 1;
        return 1;
    }
    if (i + 1 >= argc)
        return 0;
    *value = argv[i + 1];
    return 2;
}

int nt_config_from_args(nt_config_t *cfg, int argc, char **argv, char **errmsg)
{
    if (errmsg != NULL)
        *errmsg = NULL;
    if (nt_config_defaults(cfg) != 0) {
        nt_errmsg_set(errmsg, nt_msgf("out of memory"));
        return -1;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 ||
            strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0)
            return 1;
    }
    char key[128];
    const char *value;
    /* Pass 1: the file, so that flags override it wherever they appear. */
    for (int i = 1; i < argc; i++) {
        int used = flag_at(argc, argv, i, key, sizeof(key), &value);
        if (used == -1) {
            char *s = show(argv[i]);
            nt_errmsg_set(errmsg, nt_msgf("unexpected argument '%s' (flags are --key value)",
                                          s != NULL ? s : "?"));
            free(s);
            return -1;
        }
        if (used == 0) {
            char *s = show(key);
            nt_errmsg_set(errmsg, nt_msgf("--%s: missing value", s != NULL ? s : "?"));
            free(s);
            return -1;
        }
        if (strcmp(key, "config") == 0 && nt_config_load_file(cfg, value, errmsg) != 0)
            return -1;
        i += used - 1;
    }
    if (env_tokens(cfg, errmsg) != 0)
        return -1;
    static const struct { const char *env, *key; } secrets[] = {
        {"NURTURE_TRACKING_SECRET", "tracking-secret"},
        {"NURTURE_WEBHOOK_SECRET", "webhook-secret"},
    };
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        const char *v = getenv(secrets[i].env);
        char *err = NULL;
        if (v != NULL && v[0] != '\0' && nt_config_set(cfg, secrets[i].key, v, &err) != 0) {
            nt_errmsg_set(errmsg, nt_msgf("%s: %s", secrets[i].env, err != NULL ? err : "error"));
            free(err);
            return -1;
        }
    }
    for (int i = 1; i < argc; i++) {
        int used = flag_at(argc, argv, i, key, sizeof(key), &value);
        if (strcmp(key, "config") != 0) {
            char *err = NULL;
            if (nt_config_set(cfg, key, value, &err) != 0) {
                /* Most messages already start with "<key>:". */
                size_t kl = strlen(key);
                if (err != NULL && strncmp(err, key, kl) == 0 && err[kl] == ':')
                    nt_errmsg_set(errmsg, nt_msgf("--%s", err));
                else
                    nt_errmsg_set(errmsg, nt_msgf("--%s: %s", key, err != NULL ? err : "error"));
                free(err);
                return -1;
            }
        }
        i += used - 1;
    }
    return 0;
}

void nt_config_usage(FILE *out)
{
    fprintf(out, "Configuration: `key value` lines in a file (--config FILE), or --key value flags"
                 " (flags win).\n\n");
    fprintf(out, "  %-20s %-28s %s\n", "key", "default", "");
    fprintf(out, "  %-20s %-28s %s\n", "config", "(none)", "read this file first");
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        fprintf(out, "  %-20s %-28s %s\n", keys[i].key, keys[i].def, keys[i].help);
    fprintf(out, "  %-20s %-28s %s\n", "token", "(none)",
            "token <role> <secret> [name]; flag --token role:secret[:name]; repeatable;");
    fprintf(out, "  %-20s %-28s %s\n", "", "",
            "role ops, rep or webhook; secret of at least 16 characters");
    fprintf(out, "  %-20s %-28s %s\n", "channel.<name>.<key>", "(per channel)",
            "a channel plugin setting, e.g. channel.log.path");
    fprintf(out, "\nEnvironment: NURTURE_TOKEN_OPS, NURTURE_TOKEN_REP, NURTURE_TOKEN_WEBHOOK add"
                 " tokens (comma-separated secret[:name]); NURTURE_TRACKING_SECRET and"
                 " NURTURE_WEBHOOK_SECRET set tracking-secret and webhook-secret.\n");
}
