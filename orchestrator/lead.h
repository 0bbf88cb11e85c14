/* A lead snapshot: the fields of its Redis hash nt:{p}:lead:<id>, in memory.
 *
 * Field names in the hash:
 *   <attr>        a lead attribute (first_name, company, role, timezone, ...): [a-z0-9_]+
 *   _score        integer score
 *   _stage        lifecycle stage name (inquiry, mql, sal, sql, opportunity, won, lost,
 *                 disqualified), absent when unknown
 *   _created      creation time, ms
 *   e:<type>      last time (ms, plan clock) an event of <type> made by a person was seen
 *   r:<plan>      the lead's run in <plan>: "a" active, "d" done
 */
#ifndef NT_LEAD_H
#define NT_LEAD_H

#include <stddef.h>
#include <stdint.h>

#include "nurture/channel.h" /* nt_kv_t */

typedef struct nt_lead {
    char *id;        /* owned */
    nt_kv_t *fields; /* owned; keys and values malloc'd, or inside block */
    size_t nfields;
    size_t cap;
    char *block;     /* nt_lead_copy's strings, freed as one; NULL for other leads */
    size_t blocklen;
} nt_lead_t;

/* Initialise an empty lead with a copy of id. Returns 0, or -1 out of memory. */
int nt_lead_init(nt_lead_t *lead, const char *id);
void nt_lead_fini(nt_lead_t *lead);

/* The value of field `name`, or NULL. Borrowed until the field changes. */
const char *nt_lead_get(const nt_lead_t *lead, const char *name);

/* Set (copying) or, with value NULL, remove a field. Returns 0, or -1 out of memory. */
int nt_lead_set(nt_lead_t *lead, const char *name, const char *value);

/* dst = a copy of src in two allocations (the fields and one block for every string), as the
 * worker keeps one per message waiting for its outcome. dst is later changed and freed like any
 * lead. Returns 0, or -1 out of memory (dst is then empty and safe to fini). */
int nt_lead_copy(nt_lead_t *dst, const nt_lead_t *src);

/* Attribute accessors over the reserved fields above. */
int64_t nt_lead_score(const nt_lead_t *lead);
int nt_lead_stage(const nt_lead_t *lead);          /* Nt__Stage value; 0 when unknown */
int64_t nt_lead_seen_ms(const nt_lead_t *lead, const char *event_type); /* 0: never */
const char *nt_lead_tz(const nt_lead_t *lead);     /* the timezone attribute or "UTC" */

/* Stage names <-> Nt__Stage values ("mql" <-> NT__STAGE__MQL). Unknown: 0 / NULL. */
int nt_stage_parse(const char *name);
const char *nt_stage_name(int stage);

/* Non-zero when name may be a plain attribute: 1..64 of [a-z0-9_], not starting with '_'. */
int nt_attr_name_valid(const char *name);

/* Non-zero when id may be a lead id: 1..128 bytes of [A-Za-z0-9._@+-]. */
int nt_lead_id_valid(const char *id);

/* The built-in attribute names every plan may use; NULL-terminated. */
extern const char *const nt_builtin_attrs[];

#endif
