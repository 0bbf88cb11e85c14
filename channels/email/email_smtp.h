/* The email channel's SMTP client: a few connections kept open to one server (smtp://host[:port]
 * or smtps://host[:port]), each carrying one transaction at a time (MAIL, RCPT, DATA, the
 * dot-stuffed message, then the next message on the same connection), all on the daemon's
 * libevent loop: bufferevents, evdns for host names, OpenSSL for smtps:// and STARTTLS
 * (certificate and host name verified), AUTH PLAIN or LOGIN.
 *
 * Why not libcurl: libcurl (7.88, Debian 12) waits for the server's answer to the end of the
 * message data in a blocking poll inside curl_multi_socket_action, which stalls the whole loop
 * for one server round trip per message (architecture.md, "Email over SMTP").
 *
 * Results (done fires exactly once, on the loop, never inside nt_email_smtp_send):
 *   NT_OK "sent"        the server accepted the message (250 after the data)
 *   NT_OK "bounced"     a 5xx answer to RCPT TO: the server refuses the recipient for good
 *   NT_EPERMFAIL        another 5xx about this message (MAIL FROM, DATA, after the data)
 *   NT_EUNAVAIL         4xx answers, no connection, a timeout, TLS or AUTH failures (ops fix
 *                       those: the host retries with backoff and its circuit breaker)
 *   NT_ECANCELED        nt_email_smtp_free while it was in flight
 * The detail names the message id, the step and the server's answer. */
#ifndef NT_EMAIL_SMTP_H
#define NT_EMAIL_SMTP_H

#include <stddef.h>

#include "nurture/channel.h"

typedef struct nt_email_smtp nt_email_smtp_t;

typedef enum nt_email_tls {
    NT_EMAIL_TLS_TRY = 0, /* STARTTLS when the server offers it */
    NT_EMAIL_TLS_YES = 1, /* STARTTLS required (smtps:// is TLS from the start either way) */
    NT_EMAIL_TLS_NO = 2,  /* never STARTTLS */
} nt_email_tls_t;

typedef struct nt_email_smtp_cfg {
    const char *url;             /* smtp://host[:port] (25) or smtps://host[:port] (465) */
    const char *user, *password; /* AUTH when user is set */
    const char *ca_file;         /* PEM certificates to verify the server with; NULL: the
                                  * system's */
    nt_email_tls_t tls;
    long timeout_ms;             /* for each answer of the server */
    long connect_timeout_ms;     /* to connect, greet, TLS and AUTH */
    int max_conns;               /* connections (and so transactions) at once */
} nt_email_smtp_cfg_t;

/* A client for cfg on the host's loop (strings are copied). Returns it, or NULL with *errmsg
 * (malloc'd, caller frees) when the URL is malformed or out of memory. */
nt_email_smtp_t *nt_email_smtp_new(const nt_channel_host_t *host, const nt_email_smtp_cfg_t *cfg,
                                   char **errmsg);

/* Non-zero when a transaction can start now (fewer than max_conns in flight). */
int nt_email_smtp_ready(const nt_email_smtp_t *s);

/* Send data (len bytes, CRLF lines, borrowed until done) from envelope sender `from` to `to`
 * (plain addresses). msgid names the message in details. Returns 0 (done fires later), or -1
 * when nothing can start now (no free slot, out of memory): done never fires. */
int nt_email_smtp_send(nt_email_smtp_t *s, const char *msgid, const char *from, const char *to,
                       const char *data, size_t len, nt_channel_done_fn *done, void *done_arg);

/* Close every connection; transactions in flight complete with NT_ECANCELED. NULL does
 * nothing. */
void nt_email_smtp_free(nt_email_smtp_t *s);

#endif
