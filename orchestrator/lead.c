/* A lead snapshot in memory: an array of owned name/value fields mirroring the lead's Redis
 * hash, with accessors over the reserved fields (_score, _stage, e:<type>, timezone). Leads
 * have a few dozen fields at most, so lookups are linear scans. */
#include "lead.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const nt_builtin_attrs[] = {
    "email",   "first_name", "last_name",    "company", "title",  "role",
    "phone",   "country",    "city",         "timezone", "industry", "company_size",
    "product", "source",     "owner",        "language", "website", NULL,
};

/* Indexed by Nt__Stage value. */
static const char *const stage_names[] = {
    NULL, "inquiry", "mql", "sal", "sql", "opportunity", "won", "lost", "disqualified",
};
#define NSTAGES (sizeof(stage_names) / sizeof(stage_names[0]))

/* Free one of the lead's strings, unless it lives in the lead's block (nt_lead_copy). */
static void str_release(const nt_lead_t *lead, const char *s)
{
    if (lead->block != NULL && s >= lead->block && s < lead->block + lead->blocklen)
        return;
    free((char *)s);
}

/* Fields own their strings; nt_kv_t declares them const for its borrowers. */
static void kv_release(const nt_lead_t *lead, nt_kv_t *kv)
{
    str_release(lead, kv->key);
    str_release(lead, kv->value);
    kv->key = NULL;
    kv->value = NULL;
}

static nt_kv_t *find(const nt_lead_t *lead, const char *name)
{
    size_t i;

    if (lead == NULL || name == NULL)
        return NULL;
    for (i = 0; i < lead->nfields; i++) {
        if (strcmp(lead->fields[i].key, name) == 0)
            return &lead->fields[i];
    }
    return NULL;
}

/* Parse a whole decimal int64; 0 on anything else. */
static int64_t parse_i64(const char *s)
{
    char *end;
    long long v;

    if (s == NULL || *s == '\0')
        return 0;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return 0;
    return (int64_t)v;
}

/* Set up an empty lead owning a copy of id. Returns 0, or -1 out of memory (lead is then
 * empty and safe to fini). */
int nt_lead_init(nt_lead_t *lead, const char *id)
{
    memset(lead, 0, sizeof(*lead));
    lead->id = strdup(id != NULL ? id : "");
    return lead->id != NULL ? 0 : -1;
}

/* Release every field and the id. Safe on a zeroed lead and twice. */
void nt_lead_fini(nt_lead_t *lead)
{
    size_t i;

    if (lead == NULL)
        return;
    for (i = 0; i < lead->nfields; i++)
        kv_release(lead, &lead->fields[i]);
    free(lead->fields);
    str_release(lead, lead->id);
    free(lead->block);
    memset(lead, 0, sizeof(*lead));
}

/* The value of field name, or NULL. Borrowed until the field changes. */
const char *nt_lead_get(const nt_lead_t *lead, const char *name)
{
    const nt_kv_t *kv = find(lead, name);

    return kv != NULL ? kv->value : NULL;
}

/* Set a copy of value, or remove the field when value is NULL. Field order is kept (removal
 * shifts the later fields down) so that snapshots print in a stable order. Returns 0, or -1
 * out of memory (the lead is unchanged). */
int nt_lead_set(nt_lead_t *lead, const char *name, const char *value)
{
    nt_kv_t *kv = find(lead, name);
    char *k, *v;

    if (lead == NULL || name == NULL)
        return -1;
    if (value == NULL) {
        if (kv != NULL) {
            size_t at = (size_t)(kv - lead->fields);

            kv_release(lead, kv);
            memmove(&lead->fields[at], &lead->fields[at + 1],
                    (lead->nfields - at - 1) * sizeof(nt_kv_t));
            lead->nfields--;
        }
        return 0;
    }
    v = strdup(value);
    if (v == NULL)
        return -1;
    if (kv != NULL) {
        str_release(lead, kv->value);
        kv->value = v;
        return 0;
    }
    if (lead->nfields == lead->cap) {
        size_t cap = lead->cap != 0 ? lead->cap * 2 : 16;
        nt_kv_t *f = realloc(lead->fields, cap * sizeof(nt_kv_t));

        if (f == NULL) {
            free(v);
            return -1;
        }
        lead->fields = f;
        lead->cap = cap;
    }
    k = strdup(name);
    if (k == NULL) {
        free(v);
        return -1;
    }
    lead->fields[lead->nfields].key = k;
    lead->fields[lead->nfields].value = v;
    lead->nfields++;
    return 0;
}

/* nt_lead_copy: see lead.h. */
int nt_lead_copy(nt_lead_t *dst, const nt_lead_t *src)
{
    size_t len = strlen(src->id) + 1, at;
    char *b;

    memset(dst, 0, sizeof(*dst));
    for (size_t i = 0; i < src->nfields; i++)
        len += strlen(src->fields[i].key) + strlen(src->fields[i].value) + 2;
    dst->block = b = malloc(len);
    dst->fields = src->nfields ? malloc(src->nfields * sizeof(nt_kv_t)) : NULL;
    if (b == NULL || (src->nfields && dst->fields == NULL)) {
        free(dst->block);
        free(dst->fields);
        memset(dst, 0, sizeof(*dst));
        return -1;
    }
    dst->blocklen = len;
    at = strlen(src->id) + 1;
    memcpy(b, src->id, at);
    dst->id = b;
    for (size_t i = 0; i < src->nfields; i++) {
        size_t kl = strlen(src->fields[i].key) + 1, vl = strlen(src->fields[i].value) + 1;

        memcpy(b + at, src->fields[i].key, kl);
        dst->fields[i].key = b + at;
        at += kl;
        memcpy(b + at, src->fields[i].value, vl);
        dst->fields[i].value = b + at;
        at += vl;
    }
    dst->nfields = dst->cap = src->nfields;
    return 0;
}

/* The _score field; 0 when absent or not an integer. */
int64_t nt_lead_score(const nt_lead_t *lead)
{
    return parse_i64(nt_lead_get(lead, "_score"));
}

/* The _stage field as an Nt__Stage value; 0 when absent or unknown. */
int nt_lead_stage(const nt_lead_t *lead)
{
    return nt_stage_parse(nt_lead_get(lead, "_stage"));
}

/* When a person last made an event of this type (the e:<type> field, ms); 0: never. */
int64_t nt_lead_seen_ms(const nt_lead_t *lead, const char *event_type)
{
    char name[256];
    int n;

    if (event_type == NULL || *event_type == '\0')
        return 0;
    n = snprintf(name, sizeof(name), "e:%s", event_type);
    if (n < 0 || (size_t)n >= sizeof(name))
        return 0;
    return parse_i64(nt_lead_get(lead, name));
}

/* The timezone attribute, or "UTC" when it is absent or empty. Borrowed. */
const char *nt_lead_tz(const nt_lead_t *lead)
{
    const char *tz = nt_lead_get(lead, "timezone");

    return tz != NULL && *tz != '\0' ? tz : "UTC";
}

/* Stage name (case-insensitive) -> Nt__Stage value; 0 when unknown or NULL. */
int nt_stage_parse(const char *name)
{
    size_t i;

    if (name == NULL)
        return 0;
    for (i = 1; i < NSTAGES; i++) {
        if (strcasecmp(name, stage_names[i]) == 0)
            return (int)i;
    }
    return 0;
}

/* Nt__Stage value -> static lower-case name; NULL for 0 and unknown values. */
const char *nt_stage_name(int stage)
{
    if (stage <= 0 || (size_t)stage >= NSTAGES)
        return NULL;
    return stage_names[stage];
}

/* Non-zero when name is 1..64 of [a-z0-9_] and does not start with '_' (reserved fields). */
int nt_attr_name_valid(const char *name)
{
    size_t n;

    if (name == NULL || name[0] == '\0' || name[0] == '_')
        return 0;
    for (n = 0; name[n] != '\0'; n++) {
        unsigned char c = (unsigned char)name[n];

        if (n >= 64)
            return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

/* Non-zero when id is 1..128 bytes of [A-Za-z0-9._@+-]. */
int nt_lead_id_valid(const char *id)
{
    size_t n;

    if (id == NULL || id[0] == '\0')
        return 0;
    for (n = 0; id[n] != '\0'; n++) {
        unsigned char c = (unsigned char)id[n];

        if (n >= 128)
            return 0;
        if (!(isascii(c) && isalnum(c)) && c != '.' && c != '_' && c != '@' && c != '+' &&
            c != '-')
            return 0;
    }
    return 1;
}
