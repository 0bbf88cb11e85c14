/* Logging: "2026-11-23T17:00:00.123Z INFO [subsys] message" lines to stderr or a file.
 *
 * One process, one thread, one log: the state is file-static. Every record is formatted into one
 * buffer and written with a single stdio call on a line-buffered stream, so records from
 * several processes appending to one file do not interleave mid-line. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static nt_log_level_t log_level = NT_LOG_INFO;
static FILE *log_file; /* NULL: stderr */

static const char *level_name(nt_log_level_t level)
{
    switch (level) {
    case NT_LOG_DEBUG: return "DEBUG";
    case NT_LOG_INFO: return "INFO";
    case NT_LOG_WARN: return "WARN";
    case NT_LOG_ERROR: return "ERROR";
    }
    return "?";
}

/* Open path for appending, line-buffered, or go back to stderr for NULL or "". Returns 0, or
 * -1 when the file cannot be opened (the previous output stays). */
int nt_log_init(nt_log_level_t level, const char *path)
{
    log_level = level;
    if (path == NULL || path[0] == '\0') {
        nt_log_fini();
        return 0;
    }
    FILE *f = fopen(path, "ae");
    if (f == NULL) {
        int err = errno;
        nt_log(NT_LOG_ERROR, "log", "cannot open log file %s: %s", path, strerror(err));
        return -1;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    nt_log_fini();
    log_file = f;
    return 0;
}

void nt_log_fini(void)
{
    if (log_file != NULL) {
        fclose(log_file);
        log_file = NULL;
    }
}

/* Parse a level name (case-insensitive; "warning" too). Returns the level or -1. */
int nt_log_level_parse(const char *s)
{
    if (s == NULL)
        return -1;
    if (strcasecmp(s, "debug") == 0)
        return NT_LOG_DEBUG;
    if (strcasecmp(s, "info") == 0)
        return NT_LOG_INFO;
    if (strcasecmp(s, "warn") == 0 || strcasecmp(s, "warning") == 0)
        return NT_LOG_WARN;
    if (strcasecmp(s, "error") == 0)
        return NT_LOG_ERROR;
    return -1;
}

static void log_va(nt_log_level_t level, const char *prefix, const char *subsys, const char *fmt,
                   va_list ap)
{
    if (level < log_level)
        return;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);

    char line[4096];
    size_t cap = sizeof(line) - 1; /* room for the newline */
    int n = snprintf(line, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000L, level_name(level), prefix,
                     subsys != NULL ? subsys : "-");
    size_t len = n < 0 ? 0 : ((size_t)n >= cap ? cap - 1 : (size_t)n);
    n = vsnprintf(line + len, cap - len, fmt, ap);
    if (n > 0)
        len += (size_t)n >= cap - len ? cap - len - 1 : (size_t)n;
    /* One record is one line: embedded newlines would forge records. */
    for (size_t i = 0; i < len; i++) {
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    }
    line[len++] = '\n';
    FILE *out = log_file != NULL ? log_file : stderr;
    fwrite(line, 1, len, out);
    fflush(out);
}

void nt_log(nt_log_level_t level, const char *subsys, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_va(level, "", subsys, fmt, ap);
    va_end(ap);
}

void nt_log_channel(nt_log_level_t level, const char *channel, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_va(level, "channel/", channel, fmt, ap);
    va_end(ap);
}
