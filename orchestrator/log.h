/* Logging: one line per record, "time level [subsystem] message", to stderr or a file. */
#ifndef NT_LOG_H
#define NT_LOG_H

#include "nurture/channel.h" /* nt_log_level_t */

/* Set the minimum level and the output (NULL or "" for stderr). Returns 0, or -1 when the
 * file cannot be opened (logging stays on stderr). */
int nt_log_init(nt_log_level_t level, const char *path);

/* Parse "debug", "info", "warn", "error"; returns -1 for anything else. */
int nt_log_level_parse(const char *s);

void nt_log(nt_log_level_t level, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The plugin host's log hook (nt_channel_host_t.log): a record under the subsystem
 * "channel/<channel>". */
void nt_log_channel(nt_log_level_t level, const char *channel, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Close the log file (if any) and return to stderr. */
void nt_log_fini(void);

#define nt_log_debug(s, ...) nt_log(NT_LOG_DEBUG, s, __VA_ARGS__)
#define nt_log_info(s, ...) nt_log(NT_LOG_INFO, s, __VA_ARGS__)
#define nt_log_warn(s, ...) nt_log(NT_LOG_WARN, s, __VA_ARGS__)
#define nt_log_error(s, ...) nt_log(NT_LOG_ERROR, s, __VA_ARGS__)

#endif
