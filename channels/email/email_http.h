/* The email channel's HTTP provider transport: one JSON POST per message to an email-service
 * API (channel.email.http_url), through libcurl on the daemon's multi (host.curl_add), with an
 * auth header line, an Idempotency-Key header and a JSON body made from a template whose
 * {{placeholders}} are replaced by the message's parts, JSON-escaped.
 *
 * Config (channel.email.<key>):
 *   http_url                    http(s)://... ; when set it is used instead of smtp_url
 *   http_auth                   one header line, e.g. "Authorization: Bearer <key>" (default:
 *                               $NT_EMAIL_HTTP_AUTH; none when both are unset)
 *   http_body                   the JSON body template (default: NT_EMAIL_HTTP_DEFAULT_BODY)
 *   timeout_ms, connect_timeout_ms, max_inflight   as for SMTP (30000, 10000, 8)
 *   http_bounce                 phrases, separated by '|', that mark a 4xx answer as the
 *                               provider refusing the recipient (default
 *                               NT_EMAIL_HTTP_DEFAULT_BOUNCE, matched ignoring case)
 *
 * Placeholders, each replaced by its value JSON-escaped (without quotes: they go inside a JSON
 * string of the template): to, to_name, from, from_name, reply_to (the From address when the
 * message has none), subject, html, text, message_id (with its angle brackets),
 * idempotency_key, unsubscribe_url, list_unsubscribe (the List-Unsubscribe header value).
 *
 * Outcomes: 2xx is sent. 408, 429, 5xx, 401 (our credentials: fixed by ops, as SMTP's AUTH
 * failures), any status other than 2xx and 4xx, and transport errors (refused, timeout, TLS)
 * are NT_EUNAVAIL, for the host to retry with the same Idempotency-Key. Other 4xx are
 * NT_EPERMFAIL with the provider's answer (one line, truncated) as the detail, unless the answer
 * contains an http_bounce phrase: then the outcome is "bounced" (NT_OK), a hard bounce. */
#ifndef NT_EMAIL_HTTP_H
#define NT_EMAIL_HTTP_H

#include <stddef.h>

#include "email_msg.h"
#include "nurture/channel.h"

#define NT_EMAIL_HTTP_DEFAULT_BODY                                                              \
    "{\"from\":{\"email\":\"{{from}}\",\"name\":\"{{from_name}}\"},"                            \
    "\"to\":[{\"email\":\"{{to}}\",\"name\":\"{{to_name}}\"}],"                                 \
    "\"reply_to\":{\"email\":\"{{reply_to}}\"},"                                                \
    "\"subject\":\"{{subject}}\",\"text\":\"{{text}}\",\"html\":\"{{html}}\","                  \
    "\"headers\":{\"Message-ID\":\"{{message_id}}\","                                           \
    "\"List-Unsubscribe\":\"{{list_unsubscribe}}\","                                            \
    "\"List-Unsubscribe-Post\":\"List-Unsubscribe=One-Click\"},"                                \
    "\"idempotency_key\":\"{{idempotency_key}}\"}"

/* Phrases of providers' answers refusing a recipient (Postmark: recipients "marked as
 * inactive", Mailgun: "not a valid address", SendGrid: "does not contain a valid address"). */
#define NT_EMAIL_HTTP_DEFAULT_BOUNCE                                                            \
    "invalid recipient|marked as inactive|not a valid address|does not contain a valid address|" \
    "no such user|unknown recipient|recipient rejected|recipient address rejected"

typedef struct nt_email_http nt_email_http_t;

/* The transport for `url`, configured through host->config (keys above). Returns it (free
 * with nt_email_http_free), or NULL with *errmsg (malloc'd, caller frees) when a key is
 * malformed, the body template is not JSON or names an unknown placeholder, or the host has no
 * curl_add. */
nt_email_http_t *nt_email_http_new(const nt_channel_host_t *host, const char *url,
                                   char **errmsg);

/* The JSON body for message m with idempotency key `key`: malloc'd into *out (*len bytes,
 * NUL-terminated; caller frees). Invalid UTF-8 becomes U+FFFD, so the body is always valid
 * JSON when the template is. Returns NT_OK, or NT_ENOMEM with *out NULL. */
nt_rc_t nt_email_http_body(const nt_email_http_t *h, const nt_email_msg_t *m, const char *key,
                           char **out, size_t *len);

/* POST body (ownership taken, malloc'd) for the message `msgid` with idempotency key `key`.
 * Returns NT_AGAIN: done fires later, exactly once; or calls done (NT_EUNAVAIL, out of memory)
 * and returns NT_OK. */
nt_rc_t nt_email_http_send(nt_email_http_t *h, const char *msgid, const char *key, char *body,
                           size_t len, nt_channel_done_fn *done, void *done_arg);

/* Cancel everything in flight or queued (each done fires with NT_ECANCELED), log the totals
 * and free h. NULL does nothing. */
void nt_email_http_free(nt_email_http_t *h);

#endif
