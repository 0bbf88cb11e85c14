/* Time-zone arithmetic through ICU's C calendar API (ucal).
 *
 * Every function works on one UCalendar per zone, opened once and kept in a small static cache:
 * ucal_open parses zone rules and is far too slow to call per lead. The process is
 * single-threaded, so the cache needs no lock. A calendar is always used as
 *   set fields or millis -> read millis or fields
 * within one call, so no state leaks from one call to the next except the attributes, which
 * are fixed at open (lenient, repeated wall time = first, skipped wall time = last) and
 * restored by whoever changes them.
 *
 * Local date-times are resolved with ICU's wall-time options:
 *   - UCAL_SKIPPED_WALL_TIME = UCAL_WALLTIME_LAST: a wall time inside a spring-forward gap is
 *     read with the offset in force before the gap, i.e. it moves forward by the gap
 *     (02:30 in New York on the spring-forward day is 03:30 EDT);
 *   - UCAL_REPEATED_WALL_TIME = UCAL_WALLTIME_FIRST: a wall time that occurs twice in a
 *     fall-back overlap is the earlier instant.
 * Dates are built with ucal_clear + ucal_setDateTime on a lenient calendar, so that
 * "day 31 + 3 days" or "hour 24" normalise instead of failing.
 *
 * ICU's Gregorian calendar switches to the Julian calendar before 1582 and counts eras; to
 * stay away from both, instants are accepted from 1900-01-01 to 9999-12-31 (UTC) only. */
#include "tz.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <unicode/ucal.h>
#include <unicode/ustring.h>
#include <unicode/utypes.h>

#define TZ_ID_MAX 64        /* longest zone id we accept, NUL included; IANA ids are < 40 */
#define TZ_CACHE_SIZE 512   /* distinct known zones kept open; ICU knows about 600 ids */
#define TZ_MIN_MS (-2208988800000LL)  /* 1900-01-01T00:00:00Z */
#define TZ_MAX_MS 253402300799999LL   /* 9999-12-31T23:59:59.999Z */
#define TZ_MAX_DAYS 3660000u          /* about 10,000 years: more is a caller's bug */
#define TZ_WINDOW_DAYS 15   /* local dates searched by nt_tz_next_window: two weeks and a day */
#define TZ_MAX_TRANSITIONS 16 /* zone transitions looked at within that span */
#define MS_PER_MIN 60000LL
#define MS_PER_DAY 86400000LL

typedef struct tz_entry {
    char id[TZ_ID_MAX]; /* zone id as the caller spelled it */
    UCalendar *cal;     /* opened calendar for that zone; NULL when the slot is free */
} tz_entry_t;

typedef struct tz_local {
    int year;    /* e.g. 2026 */
    int month0;  /* 0 = January (ICU's UCAL_MONTH) */
    int day;     /* 1..31 */
    int hour;    /* 0..23 */
    int minute;  /* 0..59 */
    int second;  /* 0..59 */
    int ms;      /* 0..999 */
    int weekday; /* 1 = Monday ... 7 = Sunday (our numbering, not ICU's) */
} tz_local_t;

static tz_entry_t tz_cache[TZ_CACHE_SIZE];
static size_t tz_cache_used;   /* slots filled so far */
static size_t tz_cache_evict;  /* next slot to reuse once full (round robin) */
static const char tz_utc_id[] = "UTC";

/* Non-zero when tz is a plausible zone id: 1..TZ_ID_MAX-1 characters from the set IANA ids
 * use. Keeps hostile strings (and non-invariant characters, which u_uastrcpy cannot convert)
 * away from ICU. */
static int id_plausible(const char *tz)
{
    size_t n;

    if (tz == NULL)
        return 0;
    n = strnlen(tz, TZ_ID_MAX);
    if (n == 0 || n >= TZ_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = tz[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '/' || c == '_' || c == '+' || c == '-'))
            return 0;
    }
    return 1;
}

/* Non-zero when ICU knows tz as a system (IANA) zone id, canonical or alias. Custom ids such
 * as "GMT+05:00" and ICU's own "Etc/Unknown" are not zones a lead lives in. */
static int id_known(const char *tz)
{
    UChar id[TZ_ID_MAX];
    UChar canon[TZ_ID_MAX * 2];
    UChar unknown[16];
    UBool system = 0;
    UErrorCode st = U_ZERO_ERROR;
    int32_t n;

    if (!id_plausible(tz))
        return 0;
    u_uastrcpy(id, tz);
    n = ucal_getCanonicalTimeZoneID(id, -1, canon, (int32_t)(sizeof canon / sizeof canon[0]),
                                    &system, &st);
    if (U_FAILURE(st) || !system || n <= 0)
        return 0;
    u_uastrcpy(unknown, "Etc/Unknown");
    if (u_strcmp(canon, unknown) == 0)
        return 0;
    return 1;
}

/* Open a calendar for a zone ICU knows, with nurture's attributes; NULL on failure. */
static UCalendar *cal_open(const char *tz)
{
    UChar id[TZ_ID_MAX];
    UErrorCode st = U_ZERO_ERROR;
    UCalendar *cal;

    u_uastrcpy(id, tz);
    cal = ucal_open(id, -1, "en_US_POSIX", UCAL_GREGORIAN, &st);
    if (U_FAILURE(st) || cal == NULL) {
        if (cal != NULL)
            ucal_close(cal);
        return NULL;
    }
    ucal_setAttribute(cal, UCAL_LENIENT, 1);
    ucal_setAttribute(cal, UCAL_REPEATED_WALL_TIME, UCAL_WALLTIME_FIRST);
    ucal_setAttribute(cal, UCAL_SKIPPED_WALL_TIME, UCAL_WALLTIME_LAST);
    return cal;
}

/* The cached calendar for a known zone id, opening it on first use; NULL when ICU fails. */
static UCalendar *cache_get(const char *tz)
{
    tz_entry_t *e;
    UCalendar *cal;

    for (size_t i = 0; i < tz_cache_used; i++) {
        if (strcmp(tz_cache[i].id, tz) == 0)
            return tz_cache[i].cal;
    }
    cal = cal_open(tz);
    if (cal == NULL)
        return NULL;
    if (tz_cache_used < TZ_CACHE_SIZE) {
        e = &tz_cache[tz_cache_used++];
    } else {
        e = &tz_cache[tz_cache_evict];
        tz_cache_evict = (tz_cache_evict + 1) % TZ_CACHE_SIZE;
        ucal_close(e->cal);
    }
    memcpy(e->id, tz, strlen(tz) + 1);
    e->cal = cal;
    return cal;
}

/* The calendar to compute in for tz: tz's own, or UTC's when ICU does not know tz (then
 * *known = 0). NULL only when ICU cannot open even UTC. Unknown ids are not cached, so that
 * junk from leads cannot fill the table. */
static UCalendar *zone_cal(const char *tz, int *known)
{
    if (tz != NULL) {
        for (size_t i = 0; i < tz_cache_used; i++) {
            if (strcmp(tz_cache[i].id, tz) == 0) {
                *known = 1;
                return tz_cache[i].cal;
            }
        }
    }
    *known = id_known(tz);
    return cache_get(*known ? tz : tz_utc_id);
}

/* Local fields of instant t in cal's zone. Returns 0, or -1 when ICU fails. */
static int local_fields(UCalendar *cal, int64_t t, tz_local_t *lt)
{
    UErrorCode st = U_ZERO_ERROR;
    int icu_wd;

    ucal_setMillis(cal, (UDate)t, &st);
    lt->year = ucal_get(cal, UCAL_YEAR, &st);
    lt->month0 = ucal_get(cal, UCAL_MONTH, &st);
    lt->day = ucal_get(cal, UCAL_DATE, &st);
    lt->hour = ucal_get(cal, UCAL_HOUR_OF_DAY, &st);
    lt->minute = ucal_get(cal, UCAL_MINUTE, &st);
    lt->second = ucal_get(cal, UCAL_SECOND, &st);
    lt->ms = ucal_get(cal, UCAL_MILLISECOND, &st);
    icu_wd = ucal_get(cal, UCAL_DAY_OF_WEEK, &st);
    if (U_FAILURE(st))
        return -1;
    /* ICU: UCAL_SUNDAY = 1 ... UCAL_SATURDAY = 7; ours: Monday = 1 ... Sunday = 7. */
    lt->weekday = (icu_wd + 5) % 7 + 1;
    return 0;
}

/* The instant of a local date-time in cal's zone; fields may overflow (lenient: day 32, hour
 * 24 ...). Gaps and overlaps resolve by the calendar's wall-time attributes. Returns 0, or -1
 * when ICU fails. */
static int local_to_ms(UCalendar *cal, int year, int month0, int day, int hour, int minute,
                       int second, int ms, int64_t *out)
{
    UErrorCode st = U_ZERO_ERROR;
    UDate t;

    ucal_clear(cal);
    ucal_setDateTime(cal, year, month0, day, hour, minute, second, &st);
    ucal_set(cal, UCAL_MILLISECOND, ms);
    t = ucal_getMillis(cal, &st);
    if (U_FAILURE(st))
        return -1;
    *out = (int64_t)t;
    return 0;
}

static int in_range(int64_t t)
{
    return t >= TZ_MIN_MS && t <= TZ_MAX_MS;
}

/* nt_tz_add: see tz.h. Calendar days are added to the local date with the local wall-clock
 * time kept (resolved like nt_tz_local_to_utc when it falls in a gap or an overlap), then the
 * hours, minutes and seconds as elapsed time. Returns NT_OK; NT_ENOTFOUND when tz is unknown
 * (computed in UTC, *out set); NT_EINVAL when `from` lies outside years 1900..9999, days is
 * absurd (more than about 10,000 years) or out is NULL. */
nt_rc_t nt_tz_add(const char *tz, int64_t from, uint32_t days, uint32_t hours, uint32_t minutes,
                  uint32_t seconds, int64_t *out)
{
    UCalendar *cal;
    tz_local_t lt;
    int known;
    int64_t t = from;

    if (out == NULL || !in_range(from) || days > TZ_MAX_DAYS)
        return NT_EINVAL;
    cal = zone_cal(tz, &known);
    if (cal == NULL)
        return NT_ERR;
    if (days > 0) {
        if (local_fields(cal, from, &lt) != 0)
            return NT_EINVAL;
        if (local_to_ms(cal, lt.year, lt.month0, lt.day + (int)days, lt.hour, lt.minute,
                        lt.second, lt.ms, &t) != 0)
            return NT_EINVAL;
    }
    t += (int64_t)hours * 3600000LL + (int64_t)minutes * MS_PER_MIN + (int64_t)seconds * 1000LL;
    *out = t;
    return known ? NT_OK : NT_ENOTFOUND;
}

/* Non-zero when instant t is inside the window in cal's zone (weekdays already normalised so
 * that 0 is not "every day"). */
static int in_window(UCalendar *cal, int64_t t, int start_min, int end_min, unsigned weekdays)
{
    tz_local_t lt;
    int64_t msod;

    if (local_fields(cal, t, &lt) != 0)
        return 0;
    if (!(weekdays & (1u << lt.weekday)))
        return 0;
    msod = ((int64_t)lt.hour * 60 + lt.minute) * MS_PER_MIN + (int64_t)lt.second * 1000 + lt.ms;
    return msod >= (int64_t)start_min * MS_PER_MIN && msod < (int64_t)end_min * MS_PER_MIN;
}

/* Keep the smallest candidate >= from that is inside the window. */
static void consider(UCalendar *cal, int64_t cand, int64_t from, int start_min, int end_min,
                     unsigned weekdays, bool *found, int64_t *best)
{
    if (cand < from || (*found && cand >= *best))
        return;
    if (!in_window(cal, cand, start_min, end_min, weekdays))
        return;
    *found = true;
    *best = cand;
}

/* nt_tz_next_window: see tz.h.
 * Local time enters the window either by running into its start or by jumping into it at a
 * zone transition (the end of a spring-forward gap that swallowed the start, or a fall-back
 * that repeats the window's hours). So the answer is the earliest of: each day's start (both
 * instants when the start is repeated), and each transition, that lands inside the window.
 * A window whose start lies in a gap therefore opens when the gap ends (02:30 on New York's
 * spring-forward day: 03:00 EDT, the first instant whose local time is >= 02:30).
 * The search covers TZ_WINDOW_DAYS local dates, enough for a one-weekday window whose next
 * occurrence is swallowed by a gap (or, as in Samoa in 2011, a skipped day).
 * Returns NT_OK; NT_ENOTFOUND when tz is unknown (computed in UTC, *out set); NT_EINVAL for a
 * bad window (not 0 <= start < end <= 1440, weekday bits outside 1..7), out NULL or from
 * outside years 1900..9999; NT_ERR when no opening was found in the span (a window that only
 * ever falls into gaps). */
nt_rc_t nt_tz_next_window(const char *tz, int64_t from, int start_min, int end_min,
                          unsigned weekdays, int64_t *out)
{
    UCalendar *cal;
    tz_local_t lt;
    int known;
    bool found = false;
    int64_t best = 0;
    int64_t limit;
    UErrorCode st = U_ZERO_ERROR;

    if (out == NULL || start_min < 0 || end_min > 1440 || start_min >= end_min ||
        (weekdays & ~0xFEu) != 0 || !in_range(from))
        return NT_EINVAL;
    if (weekdays == 0)
        weekdays = 0xFEu;
    cal = zone_cal(tz, &known);
    if (cal == NULL)
        return NT_ERR;

    if (in_window(cal, from, start_min, end_min, weekdays)) {
        *out = from;
        return known ? NT_OK : NT_ENOTFOUND;
    }
    if (local_fields(cal, from, &lt) != 0)
        return NT_EINVAL;

    for (int i = 0; i < TZ_WINDOW_DAYS; i++) {
        int64_t cand;
        int wd = (lt.weekday - 1 + i) % 7 + 1;

        if (!(weekdays & (1u << wd)))
            continue;
        /* The earlier instant of a repeated start, and (below) the later one. */
        if (local_to_ms(cal, lt.year, lt.month0, lt.day + i, start_min / 60, start_min % 60, 0, 0,
                        &cand) == 0)
            consider(cal, cand, from, start_min, end_min, weekdays, &found, &best);
        ucal_setAttribute(cal, UCAL_REPEATED_WALL_TIME, UCAL_WALLTIME_LAST);
        if (local_to_ms(cal, lt.year, lt.month0, lt.day + i, start_min / 60, start_min % 60, 0, 0,
                        &cand) == 0)
            consider(cal, cand, from, start_min, end_min, weekdays, &found, &best);
        ucal_setAttribute(cal, UCAL_REPEATED_WALL_TIME, UCAL_WALLTIME_FIRST);
        if (found)
            break; /* later days start later; only transitions before it can still win */
    }

    limit = found ? best : from + (int64_t)(TZ_WINDOW_DAYS + 1) * MS_PER_DAY;
    ucal_setMillis(cal, (UDate)from, &st);
    for (int i = 0; i < TZ_MAX_TRANSITIONS && U_SUCCESS(st); i++) {
        UDate tr = 0;

        if (!ucal_getTimeZoneTransitionDate(cal, UCAL_TZ_TRANSITION_NEXT, &tr, &st) ||
            U_FAILURE(st) || (int64_t)tr > limit)
            break;
        consider(cal, (int64_t)tr, from, start_min, end_min, weekdays, &found, &best);
        ucal_setMillis(cal, tr, &st); /* in_window moved the calendar; step from tr */
    }

    if (!found)
        return NT_ERR;
    *out = best;
    return known ? NT_OK : NT_ENOTFOUND;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Two decimal digits at s, or -1. */
static int two_digits(const char *s)
{
    if (!is_digit(s[0]) || !is_digit(s[1]))
        return -1;
    return (s[0] - '0') * 10 + (s[1] - '0');
}

static int days_in_month(int year, int month)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

    return month == 2 && leap ? 29 : mdays[month - 1];
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant's
 * days_from_civil), for "Z" date-times that need no zone at all. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* nt_tz_local_to_utc: see tz.h. Accepts exactly "YYYY-MM-DDTHH:MM" (years 1900..9999, a real
 * calendar date, hours 00..23) with an optional trailing "Z"; nothing else, no seconds, no
 * offsets, no surrounding space. With "Z" the zone is not consulted and the result is NT_OK
 * whatever tz is. Returns NT_OK; NT_EINVAL when malformed or out is NULL; NT_ENOTFOUND when
 * tz is unknown (computed in UTC, *out set). */
nt_rc_t nt_tz_local_to_utc(const char *tz, const char *datetime, int64_t *out)
{
    UCalendar *cal;
    size_t n;
    int year, month, day, hour, minute, known;
    int64_t t;

    if (out == NULL || datetime == NULL)
        return NT_EINVAL;
    n = strnlen(datetime, 18);
    if (n != 16 && !(n == 17 && datetime[16] == 'Z'))
        return NT_EINVAL;
    if (datetime[4] != '-' || datetime[7] != '-' || datetime[10] != 'T' || datetime[13] != ':')
        return NT_EINVAL;
    if (two_digits(datetime) < 0 || two_digits(datetime + 2) < 0)
        return NT_EINVAL;
    year = two_digits(datetime) * 100 + two_digits(datetime + 2);
    month = two_digits(datetime + 5);
    day = two_digits(datetime + 8);
    hour = two_digits(datetime + 11);
    minute = two_digits(datetime + 14);
    if (year < 1900 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 ||
        minute < 0 || minute > 59 || day > days_in_month(year, month))
        return NT_EINVAL;

    if (n == 17) {
        *out = (days_from_civil(year, month, day) * 24 + hour) * 3600000LL + minute * MS_PER_MIN;
        return NT_OK;
    }
    cal = zone_cal(tz, &known);
    if (cal == NULL)
        return NT_ERR;
    if (local_to_ms(cal, year, month - 1, day, hour, minute, 0, 0, &t) != 0)
        return NT_EINVAL;
    *out = t;
    return known ? NT_OK : NT_ENOTFOUND;
}

/* nt_tz_parse_hhmm: see tz.h. Exactly five characters "HH:MM", 00 <= HH <= 24,
 * 00 <= MM <= 59, and 24 only as "24:00" (= 1440, the end of the day). Returns the minutes
 * after midnight, or -1 when malformed (NULL included). */
int nt_tz_parse_hhmm(const char *s)
{
    int h, m;

    if (s == NULL || strnlen(s, 6) != 5 || s[2] != ':')
        return -1;
    h = two_digits(s);
    m = two_digits(s + 3);
    if (h < 0 || m < 0 || h > 24 || m > 59 || (h == 24 && m != 0))
        return -1;
    return h * 60 + m;
}

/* nt_tz_valid: see tz.h. Non-zero for ids ICU knows as system (IANA) zones, canonical or
 * alias ("America/New_York", "US/Eastern", "UTC"); zero for NULL, custom offsets
 * ("GMT+05:00"), "Etc/Unknown" and anything else. */
int nt_tz_valid(const char *tz)
{
    return id_known(tz);
}

/* nt_tz_cleanup: see tz.h. Closes every cached calendar; later calls reopen what they need. */
void nt_tz_cleanup(void)
{
    for (size_t i = 0; i < tz_cache_used; i++) {
        ucal_close(tz_cache[i].cal);
        tz_cache[i].cal = NULL;
        tz_cache[i].id[0] = '\0';
    }
    tz_cache_used = 0;
    tz_cache_evict = 0;
}
