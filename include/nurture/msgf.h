/**
 * @file msgf.h
 * @brief nt_msgf: printf into a malloc'd string (header only).
 *
 * The one definition of the helper that builds `char **errmsg` messages, details for a
 * completion and other short strings. Header only, like track.h, so that nurtured and the
 * channel plugins (loaded with dlopen, never linked to daemon symbols) share it. Needs
 * vasprintf: compile with _GNU_SOURCE (the build defines it).
 */
#ifndef NURTURE_MSGF_H
#define NURTURE_MSGF_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The string fmt formats (malloc'd, caller frees), or NULL when out of memory. */
static inline char *nt_msgf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static inline char *nt_msgf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

#ifdef __cplusplus
}
#endif

#endif
