/* Plan time and real time.
 *
 * Plan time = start + (real_now - anchor) * scale, with the anchor (real time) taken at
 * nt_clock_init and start the plan time it shows then (the anchor itself unless a start instant
 * is given). At scale 1 without a start instant plan time is real time exactly (no floating point
 * on the way), so that a production daemon and the timers other daemons wrote into Redis agree to
 * the millisecond. The state is process-global and written only by nt_clock_init (single-threaded
 * daemon). */
#include "clock.h"

#include <math.h>
#include <stdint.h>
#include <time.h>

static double clock_scale = 1.0; /* plan milliseconds per real millisecond */
static int64_t clock_anchor;     /* real time (ms) at which plan time was clock_start */
static int64_t clock_start;      /* plan time (ms) at clock_anchor */
static int clock_real = 1;       /* plan time is real time */

static int64_t ts_ms(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* nt_clock_init: see clock.h. A scale that is not a finite positive number is taken as 1; a
 * negative start as 0. May be called again; plan time then restarts. */
void nt_clock_init(double scale, int64_t start_ms)
{
    clock_scale = (isfinite(scale) && scale > 0) ? scale : 1.0;
    clock_anchor = nt_real_ms();
    clock_start = start_ms > 0 ? start_ms : clock_anchor;
    clock_real = clock_scale == 1.0 && start_ms <= 0;
}

/* nt_now_ms: see clock.h. Before nt_clock_init, real time. */
int64_t nt_now_ms(void)
{
    int64_t real = nt_real_ms();

    if (clock_real)
        return real;
    return clock_start + (int64_t)floor((double)(real - clock_anchor) * clock_scale);
}

/* nt_real_ms: see clock.h (CLOCK_REALTIME). */
int64_t nt_real_ms(void)
{
    return ts_ms(CLOCK_REALTIME);
}

/* nt_mono_ms: see clock.h (CLOCK_MONOTONIC; meaningful only as a difference). */
int64_t nt_mono_ms(void)
{
    return ts_ms(CLOCK_MONOTONIC);
}

/* nt_clock_real_delay_ms: see clock.h. Rounds up, so that when a timer armed with the result
 * fires, nt_now_ms() >= plan_ms. Returns 0 when plan_ms is now or past; saturates at
 * INT64_MAX for instants too far away to matter. */
int64_t nt_clock_real_delay_ms(int64_t plan_ms)
{
    int64_t now = nt_now_ms();
    double real;

    if (plan_ms <= now)
        return 0;
    if (clock_scale == 1.0 && (now >= 0 || plan_ms <= INT64_MAX + now))
        return plan_ms - now;
    real = ceil(((double)plan_ms - (double)now) / clock_scale);
    if (real >= 9.2e18)
        return INT64_MAX;
    return real < 1 ? 1 : (int64_t)real;
}
