/* A growable byte string for the email channel's builders. An allocation failure sets `oom`
 * and turns every later call into a no-op, so builders check once at the end. */
#ifndef NT_EMAIL_BUF_H
#define NT_EMAIL_BUF_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct nt_email_buf {
    char *p;    /* NUL-terminated when not NULL */
    size_t len; /* bytes used, without the NUL */
    size_t cap; /* bytes allocated */
    int oom;    /* an allocation failed */
} nt_email_buf_t;

static inline void nt_email_buf_add(nt_email_buf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap != 0 ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static inline void nt_email_buf_str(nt_email_buf_t *b, const char *s)
{
    nt_email_buf_add(b, s, strlen(s));
}

static inline void nt_email_buf_ch(nt_email_buf_t *b, char c)
{
    nt_email_buf_add(b, &c, 1);
}

static inline void nt_email_buf_printf(nt_email_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline void nt_email_buf_printf(nt_email_buf_t *b, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    nt_email_buf_add(b, s, (size_t)n);
    free(s);
}

/* The string (caller frees), or NULL when an allocation failed; the buffer is emptied. */
static inline char *nt_email_buf_take(nt_email_buf_t *b)
{
    char *p = b->p;
    if (b->oom) {
        free(p);
        p = NULL;
    } else if (p == NULL) {
        p = calloc(1, 1);
    }
    memset(b, 0, sizeof(*b));
    return p;
}

static inline void nt_email_buf_fini(nt_email_buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

#endif
