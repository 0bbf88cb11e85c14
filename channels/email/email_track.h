/* Tracking in the email channel: signed links (include/nurture/track.h) put into a message.
 * Every http(s) link of the HTML part and of the plain-text part becomes a click link
 * `<base>/t/c/<token>` (the same URL gives the same link in both parts: the token signs the
 * URL, the message id and the issue time), a 1x1 open pixel `<base>/t/o/<token>` goes at the
 * end of the HTML, and the unsubscribe link is `<base>/t/u/<token>`.
 *
 * Pure functions: no I/O, no clock (the issue time is an argument), so unit tests can check
 * the output. */
#ifndef NT_EMAIL_TRACK_H
#define NT_EMAIL_TRACK_H

#include <stddef.h>
#include <stdint.h>

#include "email_tpl.h"

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

/* The plain text with each of its link targets (links, in order, as nt_email_tpl_render
 * gives them) that is an http(s) URL replaced by its click link; the others stay. Malloc'd, or
 * NULL when out of memory. */
char *nt_email_track_text(const nt_email_track_t *t, const char *text,
                          const nt_email_span_t *links, size_t nlinks);

#endif
