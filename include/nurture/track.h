/**
 * @file track.h
 * @brief Signed tracking links: unsubscribe, click, open and RSVP tokens (header only).
 *
 * nurtured verifies these tokens (GET /t/c/<token>, /t/o/<token>, /t/u/<token>, /t/r/<token>)
 * and channel
 * plugins create them; both include this header, so a plugin signs links without linking to
 * any daemon symbol. It needs OpenSSL's libcrypto (HMAC-SHA256, CRYPTO_memcmp).
 *
 * A token is `base64url(payload) "." base64url(HMAC-SHA256(secret, payload))`, both without
 * padding. The payload is text:
 *
 *     1|<kind>|<message id>|<issued>|<expires>|<url>
 *
 * - `1`: the format version;
 * - kind: `u` unsubscribe, `c` click, `o` open, `r` RSVP to an event (a token of one kind never
 *   passes as another);
 * - message id: the message's idempotency key `<lead>:<plan>:<node>:<visit>`, which names the
 *   lead, the plan and the node too (none of them may contain ':' or '|');
 * - issued, expires: Unix seconds (real time); expires 0 means never (unsubscribe links);
 * - url: the click's target (http or https); for an RSVP the event id (1 to 64 of a-z, 0-9,
 *   '_', '-'); empty for the other kinds. It is last, so a URL may contain '|'.
 *
 * Base64url is decoded strictly (no padding, no stray bits), so that changing any character of
 * a token changes the bytes it stands for, and the MAC check fails.
 */
#ifndef NURTURE_TRACK_H
#define NURTURE_TRACK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NT_TRACK_UNSUBSCRIBE 'u' /**< kind: unsubscribe link */
#define NT_TRACK_CLICK 'c'       /**< kind: click redirect */
#define NT_TRACK_OPEN 'o'        /**< kind: open pixel */
#define NT_TRACK_RSVP 'r'        /**< kind: RSVP to an event (the event id in the url field) */

#define NT_TRACK_URL_MAX 2048    /**< longest click target */
#define NT_TRACK_MSGID_MAX 400   /**< longest message id (128 + 64 + 64 + 10 and separators) */
#define NT_TRACK_TOKEN_MAX 4096  /**< longest token nt_track_verify accepts */
#define NT_TRACK_MAC_LEN 32      /**< HMAC-SHA256 */
/** Clicks and opens expire after a year (in seconds). */
#define NT_TRACK_TTL_CLICK (366LL * 86400)

/** Results of nt_track_verify. */
#define NT_TRACK_OK 0
#define NT_TRACK_EMALFORMED (-1) /**< not a token: bad characters, length or payload */
#define NT_TRACK_EFORGED (-2)    /**< well-formed, but the signature does not match */
#define NT_TRACK_EEXPIRED (-3)   /**< signed by us, but past its expiry */

/** A verified token. */
typedef struct nt_track_token {
    char kind;                          /**< NT_TRACK_* */
    char msgid[NT_TRACK_MSGID_MAX + 1]; /**< the message's idempotency key */
    char lead[129];                     /**< the lead id (part of msgid before the first ':') */
    char plan[65];                      /**< the plan id */
    char node[65];                      /**< the node id */
    int64_t issued;                     /**< Unix seconds: when the message was built */
    int64_t expires;                    /**< Unix seconds, 0: never */
    char url[NT_TRACK_URL_MAX + 1];     /**< click target, "" for other kinds */
    char event[65];                     /**< RSVP: the event id, "" for other kinds */
} nt_track_token_t;

static const char nt_track_b64_[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** Base64url of n bytes into out (room for 4 * ceil(n / 3) + 1); NUL-terminated, no padding.
 * Returns the length written. */
static inline size_t nt_track_b64url_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = nt_track_b64_[(v >> 18) & 63];
        out[o++] = nt_track_b64_[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = nt_track_b64_[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = nt_track_b64_[v & 63];
    }
    out[o] = '\0';
    return o;
}

static inline int nt_track_b64_val_(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/** Strict base64url decode of n characters into out (cap bytes). Returns the number of bytes,
 * or -1 for a character outside the alphabet, an impossible length, unused bits that are not
 * zero, or too little room. */
static inline long nt_track_b64url_decode(const char *in, size_t n, unsigned char *out,
                                          size_t cap)
{
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = nt_track_b64_val_((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -1;
    return (long)o;
}

/** Non-zero when s (n bytes) is an id part of a message id: no ':', '|', space or control. */
static inline int nt_track_id_ok_(const char *s, size_t n, size_t max)
{
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == ':' || c == '|')
            return 0;
    }
    return 1;
}

/** Non-zero when url is an http(s) URL of printable ASCII, at most NT_TRACK_URL_MAX bytes. */
static inline int nt_track_url_ok(const char *url)
{
    size_t n = url != NULL ? strlen(url) : 0;
    if (n == 0 || n > NT_TRACK_URL_MAX)
        return 0;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0 &&
        strncmp(url, "HTTP://", 7) != 0 && strncmp(url, "HTTPS://", 8) != 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '<' || c == '>' || c == '\\')
            return 0;
    }
    return 1;
}

/** Non-zero when id is an event id: 1 to 64 of a-z, 0-9, '_' and '-'. */
static inline int nt_track_event_ok(const char *id)
{
    size_t n = id != NULL ? strlen(id) : 0;
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/** Split msgid `<lead>:<plan>:<node>:<visit>` into t's lead, plan and node. Returns 0 or -1. */
static inline int nt_track_msgid_split(const char *msgid, nt_track_token_t *t)
{
    const char *a = strchr(msgid, ':');
    const char *b = a != NULL ? strchr(a + 1, ':') : NULL;
    const char *c = b != NULL ? strchr(b + 1, ':') : NULL;
    if (c == NULL || strchr(c + 1, ':') != NULL || c[1] == '\0' ||
        !nt_track_id_ok_(msgid, (size_t)(a - msgid), 128) ||
        !nt_track_id_ok_(a + 1, (size_t)(b - a - 1), 64) ||
        !nt_track_id_ok_(b + 1, (size_t)(c - b - 1), 64))
        return -1;
    for (const char *p = c + 1; *p != '\0'; p++)
        if (*p < '0' || *p > '9')
            return -1;
    memcpy(t->lead, msgid, (size_t)(a - msgid));
    t->lead[a - msgid] = '\0';
    memcpy(t->plan, a + 1, (size_t)(b - a - 1));
    t->plan[b - a - 1] = '\0';
    memcpy(t->node, b + 1, (size_t)(c - b - 1));
    t->node[c - b - 1] = '\0';
    return 0;
}

/**
 * Sign a token. kind is NT_TRACK_*; msgid the message's idempotency key; issued and expires
 * Unix seconds (expires 0: never); url the click target, or the event id of an RSVP (NULL or
 * "" for other kinds).
 * @return the token (malloc'd, caller frees), or NULL when an argument is not valid (a message
 *         id that is not `<lead>:<plan>:<node>:<visit>`, a click without an http(s) URL) or
 *         out of memory.
 */
static inline char *nt_track_sign(const void *secret, size_t secretlen, char kind,
                                  const char *msgid, int64_t issued, int64_t expires,
                                  const char *url)
{
    nt_track_token_t check;
    if (secret == NULL || secretlen == 0 || msgid == NULL ||
        strlen(msgid) > NT_TRACK_MSGID_MAX || nt_track_msgid_split(msgid, &check) != 0)
        return NULL;
    if (kind == NT_TRACK_CLICK) {
        if (!nt_track_url_ok(url))
            return NULL;
    } else if (kind == NT_TRACK_RSVP) {
        if (!nt_track_event_ok(url))
            return NULL;
    } else if (kind == NT_TRACK_UNSUBSCRIBE || kind == NT_TRACK_OPEN) {
        url = "";
    } else {
        return NULL;
    }
    char *payload = NULL;
    int plen = asprintf(&payload, "1|%c|%s|%lld|%lld|%s", kind, msgid, (long long)issued,
                        (long long)expires, url);
    if (plen < 0)
        return NULL;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (HMAC(EVP_sha256(), secret, (int)secretlen, (const unsigned char *)payload,
             (size_t)plen, mac, &maclen) == NULL ||
        maclen != NT_TRACK_MAC_LEN) {
        free(payload);
        return NULL;
    }
    char *tok = malloc(((size_t)plen + 2) / 3 * 4 + 1 + (NT_TRACK_MAC_LEN + 2) / 3 * 4 + 1);
    if (tok != NULL) {
        size_t o = nt_track_b64url_encode((const unsigned char *)payload, (size_t)plen, tok);
        tok[o++] = '.';
        nt_track_b64url_encode(mac, maclen, tok + o);
    }
    free(payload);
    return tok;
}

/**
 * Verify token against secret at time now (Unix seconds) and fill *out.
 * @return NT_TRACK_OK; NT_TRACK_EMALFORMED (not a token of ours in shape), NT_TRACK_EFORGED
 *         (the MAC does not match: tampered, truncated, or another secret), NT_TRACK_EEXPIRED.
 *         The MAC is checked (in constant time) before anything of the payload is believed.
 */
static inline int nt_track_verify(const void *secret, size_t secretlen, const char *token,
                                  int64_t now, nt_track_token_t *out)
{
    size_t n = token != NULL ? strlen(token) : 0;
    const char *dot = n > 0 ? memchr(token, '.', n) : NULL;
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (dot == NULL || n > NT_TRACK_TOKEN_MAX || secret == NULL || secretlen == 0 || !out)
        return NT_TRACK_EMALFORMED;
    unsigned char payload[NT_TRACK_TOKEN_MAX], mac[NT_TRACK_MAC_LEN + 3];
    long plen = nt_track_b64url_decode(token, (size_t)(dot - token), payload,
                                       sizeof(payload) - 1);
    long mlen = nt_track_b64url_decode(dot + 1, n - (size_t)(dot - token) - 1, mac,
                                       sizeof(mac));
    if (plen <= 0 || mlen < 0)
        return NT_TRACK_EMALFORMED;
    unsigned char want[EVP_MAX_MD_SIZE];
    unsigned int wantlen = 0;
    if (HMAC(EVP_sha256(), secret, (int)secretlen, payload, (size_t)plen, want, &wantlen) ==
            NULL ||
        wantlen != NT_TRACK_MAC_LEN)
        return NT_TRACK_EMALFORMED;
    if (mlen != NT_TRACK_MAC_LEN || CRYPTO_memcmp(mac, want, NT_TRACK_MAC_LEN) != 0)
        return NT_TRACK_EFORGED;
    payload[plen] = '\0';
    if (memchr(payload, '\0', (size_t)plen) != NULL)
        return NT_TRACK_EMALFORMED;
    /* Signed by us from here on; still parse defensively. */
    const char *p = (const char *)payload;
    if (strncmp(p, "1|", 2) != 0 || p[2] == '\0' || p[3] != '|')
        return NT_TRACK_EMALFORMED;
    out->kind = p[2];
    if (out->kind != NT_TRACK_UNSUBSCRIBE && out->kind != NT_TRACK_CLICK &&
        out->kind != NT_TRACK_OPEN && out->kind != NT_TRACK_RSVP)
        return NT_TRACK_EMALFORMED;
    p += 4;
    const char *bar = strchr(p, '|');
    if (bar == NULL || (size_t)(bar - p) > NT_TRACK_MSGID_MAX)
        return NT_TRACK_EMALFORMED;
    memcpy(out->msgid, p, (size_t)(bar - p));
    out->msgid[bar - p] = '\0';
    if (nt_track_msgid_split(out->msgid, out) != 0)
        return NT_TRACK_EMALFORMED;
    char *end = NULL;
    out->issued = strtoll(bar + 1, &end, 10);
    if (end == bar + 1 || *end != '|')
        return NT_TRACK_EMALFORMED;
    const char *e = end + 1;
    out->expires = strtoll(e, &end, 10);
    if (end == e || *end != '|')
        return NT_TRACK_EMALFORMED;
    const char *url = end + 1;
    if (out->kind == NT_TRACK_CLICK) {
        if (!nt_track_url_ok(url))
            return NT_TRACK_EMALFORMED;
        snprintf(out->url, sizeof(out->url), "%s", url);
    } else if (out->kind == NT_TRACK_RSVP) {
        if (!nt_track_event_ok(url))
            return NT_TRACK_EMALFORMED;
        snprintf(out->event, sizeof(out->event), "%s", url);
    } else if (url[0] != '\0') {
        return NT_TRACK_EMALFORMED;
    }
    if (out->expires != 0 && now > out->expires)
        return NT_TRACK_EEXPIRED;
    return NT_TRACK_OK;
}

#ifdef __cplusplus
}
#endif

#endif
