/* A minimal MessagePack writer (see msgpack.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msgpack.h"

void nt_mp_init(nt_mp_t *m)
{
    memset(m, 0, sizeof(*m));
}

void nt_mp_fini(nt_mp_t *m)
{
    free(m->buf);
    memset(m, 0, sizeof(*m));
}

void nt_mp_reset(nt_mp_t *m)
{
    m->len = 0;
    m->oom = 0;
}

static int room(nt_mp_t *m, size_t n)
{
    if (m->oom)
        return 0;
    if (m->len + n > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4096;
        char *b;

        while (cap < m->len + n)
            cap *= 2;
        b = realloc(m->buf, cap);
        if (!b) {
            m->oom = 1;
            return 0;
        }
        m->buf = b;
        m->cap = cap;
    }
    return 1;
}

static void put_be(nt_mp_t *m, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        m->buf[m->len++] = (char)((v >> (8 * i)) & 0xff);
}

void nt_mp_array(nt_mp_t *m, uint32_t n)
{
    if (!room(m, 5))
        return;
    if (n < 16) {
        m->buf[m->len++] = (char)(0x90 | n);
    } else if (n <= 0xffff) {
        m->buf[m->len++] = (char)0xdc;
        put_be(m, n, 2);
    } else {
        m->buf[m->len++] = (char)0xdd;
        put_be(m, n, 4);
    }
}

size_t nt_mp_array_open(nt_mp_t *m)
{
    size_t at = m->len;

    if (!room(m, 5))
        return at;
    m->buf[m->len++] = (char)0xdd;
    put_be(m, 0, 4);
    return at;
}

void nt_mp_array_fix(nt_mp_t *m, size_t at, uint32_t n)
{
    size_t len = m->len;

    if (m->oom)
        return;
    m->len = at + 1;
    put_be(m, n, 4);
    m->len = len;
}

void nt_mp_str_head(nt_mp_t *m, size_t len)
{
    if (!room(m, 5))
        return;
    if (len < 32) {
        m->buf[m->len++] = (char)(0xa0 | len);
    } else if (len <= 0xff) {
        m->buf[m->len++] = (char)0xd9;
        put_be(m, len, 1);
    } else if (len <= 0xffff) {
        m->buf[m->len++] = (char)0xda;
        put_be(m, len, 2);
    } else {
        m->buf[m->len++] = (char)0xdb;
        put_be(m, len, 4);
    }
}

void nt_mp_str(nt_mp_t *m, const char *s, size_t len)
{
    if (!room(m, len + 5))
        return;
    nt_mp_str_head(m, len);
    memcpy(m->buf + m->len, s, len);
    m->len += len;
}

void nt_mp_cstr(nt_mp_t *m, const char *s)
{
    if (s)
        nt_mp_str(m, s, strlen(s));
    else
        nt_mp_nil(m);
}

void nt_mp_int(nt_mp_t *m, long long v)
{
    char b[24];
    int n = snprintf(b, sizeof(b), "%lld", v);

    nt_mp_str(m, b, (size_t)n);
}

void nt_mp_nil(nt_mp_t *m)
{
    if (room(m, 1))
        m->buf[m->len++] = (char)0xc0;
}

void nt_mp_bool(nt_mp_t *m, int v)
{
    if (room(m, 1))
        m->buf[m->len++] = (char)(v ? 0xc3 : 0xc2);
}

void nt_mp_raw(nt_mp_t *m, const char *bytes, size_t len)
{
    if (len == 0 || !room(m, len))
        return;
    memcpy(m->buf + m->len, bytes, len);
    m->len += len;
}
