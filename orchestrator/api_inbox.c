/* GET /inbox: the rep's inbox page (orchestrator/inbox.html, embedded at build time). The page
 * needs no token: the rep enters theirs in the page, which keeps it in session storage and sends
 * it as a bearer token with each API call (/v1/tasks, /v1/leads). It is self-contained (inline
 * CSS and script, no external fetches); its one script runs under a per-response nonce, so the
 * Content-Security-Policy allows no other script. Contract: docs/api.md, "Rep inbox". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "api.h"

extern const char nt_inbox_html[];
extern const size_t nt_inbox_html_len;

#define NONCE_MARK "{{nonce}}"
#define NONCE_BYTES 18 /* 24 base64 characters, no padding */

/* The page with every NONCE_MARK replaced by nonce (malloc'd, NUL-terminated), or NULL. */
static char *page_with_nonce(const char *nonce, size_t *len)
{
    const char *src = nt_inbox_html, *end = nt_inbox_html + nt_inbox_html_len, *p;
    size_t mark = strlen(NONCE_MARK), nlen = strlen(nonce), n = 0, cap;
    char *out, *o;

    for (p = src; (p = strstr(p, NONCE_MARK)) != NULL; p += mark)
        n++;
    cap = nt_inbox_html_len + n * nlen + 1;
    out = malloc(cap);
    if (!out)
        return NULL;
    o = out;
    while (src < end) {
        const char *m = strstr(src, NONCE_MARK);

        if (!m) {
            memcpy(o, src, (size_t)(end - src));
            o += end - src;
            break;
        }
        memcpy(o, src, (size_t)(m - src));
        o += m - src;
        memcpy(o, nonce, nlen);
        o += nlen;
        src = m + mark;
    }
    *o = '\0';
    *len = (size_t)(o - out);
    return out;
}

void nt_api_inbox(nt_api_req_t *r)
{
    unsigned char raw[NONCE_BYTES];
    char nonce[4 * NONCE_BYTES / 3 + 1], csp[256];
    char *html;
    size_t len = 0;

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        nt_api_error(r, 500, "internal", "no random bytes for the page's nonce");
        return;
    }
    EVP_EncodeBlock((unsigned char *)nonce, raw, sizeof(raw));
    html = page_with_nonce(nonce, &len);
    if (!html) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }
    snprintf(csp, sizeof(csp),
             "default-src 'self'; script-src 'nonce-%s'; style-src 'unsafe-inline'; "
             "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
             nonce);
    nt_api_header_out(r, "Content-Security-Policy", csp);
    nt_api_header_out(r, "X-Frame-Options", "DENY");
    nt_api_header_out(r, "X-Content-Type-Options", "nosniff");
    nt_api_header_out(r, "Referrer-Policy", "no-referrer");
    nt_api_header_out(r, "Cache-Control", "no-store");
    nt_api_reply_raw(r, 200, "text/html; charset=utf-8", html, len);
    free(html);
}
