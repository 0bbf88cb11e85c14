/* A minimal MessagePack writer for the batches nurtured hands to its Redis scripts, which read
 * them with cmsgpack.unpack (part of Redis's Lua). Only what the scripts need: arrays, strings,
 * nil and booleans; numbers travel as decimal strings, so no float formatting on either side. */
#ifndef NT_MSGPACK_H
#define NT_MSGPACK_H

#include <stddef.h>
#include <stdint.h>

typedef struct nt_mp {
    char *buf;   /* owned; not NUL-terminated */
    size_t len;
    size_t cap;
    int oom;     /* set when a write failed; the buffer is then unusable */
} nt_mp_t;

void nt_mp_init(nt_mp_t *m);
void nt_mp_fini(nt_mp_t *m);
void nt_mp_reset(nt_mp_t *m);

void nt_mp_array(nt_mp_t *m, uint32_t n);
void nt_mp_str(nt_mp_t *m, const char *s, size_t len);
void nt_mp_cstr(nt_mp_t *m, const char *s);     /* NULL writes nil */
void nt_mp_int(nt_mp_t *m, long long v);        /* as a decimal string */
void nt_mp_nil(nt_mp_t *m);
void nt_mp_bool(nt_mp_t *m, int v);

/* The header of a string of len bytes, which the caller writes next with nt_mp_raw. */
void nt_mp_str_head(nt_mp_t *m, size_t len);

/* Append bytes already in MessagePack form (another writer's buffer), or a string's bytes
 * after nt_mp_str_head. */
void nt_mp_raw(nt_mp_t *m, const char *bytes, size_t len);

/* Reserve the header of an array whose length is known later: returns its offset for
 * nt_mp_array_fix. Always written as array32. */
size_t nt_mp_array_open(nt_mp_t *m);
void nt_mp_array_fix(nt_mp_t *m, size_t at, uint32_t n);

#endif
