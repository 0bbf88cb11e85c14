/* Partitions and Redis key names (DESIGN.md, "State in Redis"). Every key one transition touches
 * carries the partition hash tag {p}, so they share one cluster slot. */
#ifndef NT_KEYS_H
#define NT_KEYS_H

#include <stddef.h>
#include <stdint.h>

#define NT_KEY_MAX 320

/* CRC16/XMODEM as Redis Cluster uses it. */
uint16_t nt_crc16(const char *buf, size_t len);

/* The partition of a lead: crc16(lead_id) mod partitions. */
unsigned nt_partition(const char *lead_id, unsigned partitions);

/* Key builders: write into buf (NT_KEY_MAX bytes), return buf. */
char *nt_key_lead(char *buf, unsigned p, const char *lead_id);
char *nt_key_run(char *buf, unsigned p, const char *lead_id, const char *plan_id);
char *nt_key_hist(char *buf, unsigned p, const char *lead_id);
char *nt_key_part(char *buf, unsigned p, const char *what); /* nt:{p}:timers, events, outbox, lease, stats:<plan> */
char *nt_key_plan(char *buf, const char *plan_id, uint32_t version); /* nt:plan:{<id>}:<ver> */
char *nt_key_plan_index(char *buf, const char *plan_id);            /* nt:plan:{<id>} */

#define NT_KEY_PLANS "nt:plans"   /* set of plan ids */
#define NT_KEY_META "nt:meta"     /* hash: partitions, created */
#define NT_KEY_WORKERS "nt:workers" /* zset: worker id -> last heartbeat (real ms) */

#endif
