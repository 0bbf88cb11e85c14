/* Evaluation of plan conditions (nt.Condition) against a lead snapshot. Pure: no I/O. */
#ifndef NT_COND_H
#define NT_COND_H

#include <stdint.h>

#include "lead.h"
#include "workflow.pb-c.h"

/* 1 when cond holds for lead at plan time now_ms, else 0. A NULL condition, or one with no
 * kind set, holds. Events of machines (bots, scanners) never count: only e:<type> fields,
 * which record events made by people, are consulted. */
int nt_cond_eval(const Nt__Condition *cond, const nt_lead_t *lead, int64_t now_ms);

/* Compare two attribute values with op: as numbers when both parse completely as numbers,
 * otherwise as case-insensitive strings. NULL a means the attribute is absent. */
int nt_cond_compare(const char *a, Nt__Op op, const char *b);

#endif
