/* Tracking in the email channel: signed links (include/nurture/track.h) put into a message.
 * Every http(s) link of the HTML part becomes a click link `<base>/t/c/<token>`, a 1x1 open
 * pixel `<base>/t/o/<token>` goes at its end, and the unsubscribe link is `<base>/t/u/<token>`.
 *
 * Pure functions: no I/O, no clock (the issue time is an argument), so unit tests can check
 * the output. */
#ifndef NT_EMAIL_TRACK_H
#define NT_EMAIL_TRACK_H

#include <stddef.h>
#include <stdint.h>

/* What signing needs; strings borrowed. */
typedef struct nt_email_track {
    const char *base;   /* public URL of nurtured, without a trailing '/' */
    const void *secret; /* HMAC key */
    size_t secretlen;
    const char *msgid;  /* the message's idempotency key */
    int64_t issued;     /* Unix seconds: the message's delivery time */
} nt_email_track_t;

/* "<base>/t/<kind>/<token>" for kind NT_TRACK_* (url only for clicks). Malloc'd, or NULL when
 * the link cannot be signed (bad message id or URL) or out of memory. */
char *nt_email_track_link(const nt_email_track_t *t, char kind, const char *url);

/* The HTML fragment with the href of every <a> tag that points to an http(s) URL replaced by
 * its click link (links that cannot be signed, mailto: and the like stay as they are), and the
 * open pixel appended. Malloc'd, or NULL when out of memory. */
char *nt_email_track_html(const nt_email_track_t *t, const char *html);

#endif
