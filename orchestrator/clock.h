/* The daemon's clock. Plans run on "plan time", which is real time unless a time scale is set
 * (demo and tests: scale 86400 runs one day per second) or a start instant (the demo: plans for
 * events on fixed dates run the same whatever the day). Leases, timeouts and the expiry of
 * signed links use real time. */
#ifndef NT_CLOCK_H
#define NT_CLOCK_H

#include <stdint.h>

/* Start plan time now, at start_ms (milliseconds since the epoch; 0: the current real time),
 * running `scale` times faster (1: real time). */
void nt_clock_init(double scale, int64_t start_ms);

/* Milliseconds since the epoch on plan time. */
int64_t nt_now_ms(void);

/* Milliseconds since the epoch, real time. */
int64_t nt_real_ms(void);

/* Monotonic milliseconds, for measuring durations. */
int64_t nt_mono_ms(void);

/* Real milliseconds until plan time reaches plan_ms (0 when already there). */
int64_t nt_clock_real_delay_ms(int64_t plan_ms);

#endif
