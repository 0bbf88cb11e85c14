/* Partitions and Redis key names. */
#include <stdio.h>
#include <string.h>

#include "keys.h"

/* CRC16/XMODEM (poly 0x1021, init 0), bitwise: keys are short and this is not a hot loop
 * compared with the Redis round trip that follows. Matches Redis Cluster's key slot hash. */
uint16_t nt_crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

/* The partition of a lead. partitions must be > 0. */
unsigned nt_partition(const char *lead_id, unsigned partitions)
{
    return nt_crc16(lead_id, strlen(lead_id)) % partitions;
}

char *nt_key_lead(char *buf, unsigned p, const char *lead_id)
{
    snprintf(buf, NT_KEY_MAX, "nt:{%u}:lead:%s", p, lead_id);
    return buf;
}

char *nt_key_run(char *buf, unsigned p, const char *lead_id, const char *plan_id)
{
    snprintf(buf, NT_KEY_MAX, "nt:{%u}:run:%s:%s", p, lead_id, plan_id);
    return buf;
}

char *nt_key_hist(char *buf, unsigned p, const char *lead_id)
{
    snprintf(buf, NT_KEY_MAX, "nt:{%u}:hist:%s", p, lead_id);
    return buf;
}

char *nt_key_part(char *buf, unsigned p, const char *what)
{
    snprintf(buf, NT_KEY_MAX, "nt:{%u}:%s", p, what);
    return buf;
}

char *nt_key_plan(char *buf, const char *plan_id, uint32_t version)
{
    snprintf(buf, NT_KEY_MAX, "nt:plan:{%s}:%u", plan_id, version);
    return buf;
}

char *nt_key_plan_index(char *buf, const char *plan_id)
{
    snprintf(buf, NT_KEY_MAX, "nt:plan:{%s}", plan_id);
    return buf;
}
