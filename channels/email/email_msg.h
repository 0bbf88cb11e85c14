/* Building one RFC 5322 message: headers (RFC 2047 for non-ASCII text), a multipart/alternative
 * body with a text/plain and a text/html part (UTF-8, quoted-printable), CRLF line endings, a
 * Message-ID derived from the idempotency key, and the RFC 8058 unsubscribe headers.
 *
 * Pure functions: no I/O, no clock, no globals, so that unit tests can check every byte. Values
 * may come from leads and templates: a CR or LF (or any other control character) in a header
 * value never reaches the header; addresses are checked and refused when malformed. */
#ifndef NT_EMAIL_MSG_H
#define NT_EMAIL_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "nurture/rc.h"

/* "<" 32 hex digits "@" domain ">" plus NUL, for any domain nt_email_domain_valid accepts. */
#define NT_EMAIL_MSGID_MAX 300

/* Everything one message needs; strings are borrowed and NUL-terminated. */
typedef struct nt_email_msg {
    const char *from_addr;    /* envelope and header sender: local@domain */
    const char *from_name;    /* display name (UTF-8), or NULL */
    const char *reply_to;     /* address, or NULL */
    const char *to_addr;      /* the lead's address */
    const char *to_name;      /* display name (UTF-8), or NULL */
    const char *subject;      /* UTF-8 */
    const char *text;         /* text/plain body (UTF-8, LF or CRLF lines) */
    const char *html;         /* text/html body (UTF-8) */
    const char *msgid;        /* from nt_email_message_id, with the angle brackets */
    const char *unsub_url;    /* https (or http) unsubscribe link, or NULL */
    const char *unsub_mailto; /* unsubscribe address, or NULL */
    int64_t date_ms;          /* the Date header, Unix ms (UTC) */
} nt_email_msg_t;

/* Non-zero when addr is a plain addr-spec we are willing to put in a header and an SMTP
 * envelope: local@domain, dot-atom local part of RFC 5322 atext characters, a domain of
 * letters, digits, '-' and '.', at most 254 bytes. No quoted local parts, no comments. */
int nt_email_addr_valid(const char *addr);

/* Non-zero when domain is a host name: labels of letters, digits and '-', 1..253 bytes. */
int nt_email_domain_valid(const char *domain);

/* The Message-ID for idempotency key `key`: "<" first 32 hex digits of SHA-256(key) "@" domain
 * ">", written to buf (at least NT_EMAIL_MSGID_MAX bytes). The same key always gives the same
 * id. Returns NT_OK, or NT_EINVAL when the domain is not valid. */
nt_rc_t nt_email_message_id(const char *key, const char *domain, char *buf, size_t size);

/* Build the whole message into *out (malloc'd, NUL-terminated, *len bytes; caller frees).
 * Returns NT_OK; NT_EINVAL with *errmsg (malloc'd, caller frees) when an address, the
 * Message-ID or the unsubscribe link is malformed; NT_ENOMEM. *out is NULL on failure. */
nt_rc_t nt_email_msg_build(const nt_email_msg_t *m, char **out, size_t *len, char **errmsg);

/* Length of the valid UTF-8 sequence at s (at most n bytes, n > 0): 1 to 4, or 0 when it is
 * not one (a stray byte, an overlong form, a surrogate, beyond U+10FFFF). */
size_t nt_email_utf8_len(const unsigned char *s, size_t n);

/* One header value made safe: control characters (CR and LF included) become spaces, invalid
 * UTF-8 becomes U+FFFD, runs of blanks collapse to one, ends are trimmed. Malloc'd, or NULL. */
char *nt_email_header_clean(const char *s);

/* RFC 2047: s (UTF-8, already cleaned) as it goes into a header after `used` columns: unchanged
 * when it is printable ASCII and needs no encoding, else base64 encoded-words of at most 75
 * characters, never splitting a UTF-8 sequence, folded with CRLF SP. Malloc'd, or NULL. */
char *nt_email_rfc2047(const char *s, size_t used);

/* Quoted-printable (RFC 2045) of s with every line break (LF, CRLF or CR) as CRLF, lines of at
 * most 76 characters, '.' and "From " at a line start encoded. Malloc'd, or NULL. */
char *nt_email_qp(const char *s);

#endif
