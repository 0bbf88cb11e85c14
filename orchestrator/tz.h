/* Time-zone arithmetic for waits, in the lead's own IANA time zone, through ICU's ucal API.
 * All instants are milliseconds since the epoch (UTC). A zone ICU does not know is treated as
 * UTC and reported through the return value so that callers can note it on the timeline. */
#ifndef NT_TZ_H
#define NT_TZ_H

#include <stdint.h>

#include "nurture/rc.h"

/* Add a span to `from`: `days` calendar days in zone tz (the local wall-clock time is kept
 * across DST changes; a time that does not exist that day moves forward by the gap), then
 * hours/minutes/seconds of elapsed time. *out receives the instant.
 * Returns NT_OK, or NT_ENOTFOUND when tz is unknown (UTC was used; *out is still set). */
nt_rc_t nt_tz_add(const char *tz, int64_t from, uint32_t days, uint32_t hours, uint32_t minutes,
                  uint32_t seconds, int64_t *out);

/* The first instant >= from whose local time in tz is inside the window [start_min, end_min)
 * (minutes after local midnight, 0..1440, start < end) on a weekday whose bit is set in
 * weekdays (bit 1 = Monday ... bit 7 = Sunday; 0 means every day). When `from` is inside the
 * window, *out = from. Returns NT_OK, NT_ENOTFOUND (unknown tz; UTC used) or NT_EINVAL
 * (bad window). */
nt_rc_t nt_tz_next_window(const char *tz, int64_t from, int start_min, int end_min,
                          unsigned weekdays, int64_t *out);

/* The instant of local date-time "YYYY-MM-DDTHH:MM" in tz, or of "YYYY-MM-DDTHH:MMZ" in UTC.
 * A local time inside a DST gap moves forward by the gap; in an overlap the earlier instant
 * wins. Returns NT_OK, NT_EINVAL (malformed), NT_ENOTFOUND (unknown tz; UTC used). */
nt_rc_t nt_tz_local_to_utc(const char *tz, const char *datetime, int64_t *out);

/* Parse "HH:MM" (00:00..24:00) into minutes after midnight; -1 when malformed. */
int nt_tz_parse_hhmm(const char *s);

/* Non-zero when ICU knows tz as a canonical or alias IANA zone id. */
int nt_tz_valid(const char *tz);

/* Close the calendars cached per zone (at exit, or in tests); later calls reopen them. */
void nt_tz_cleanup(void);

#endif
