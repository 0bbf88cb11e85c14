/* The email channel's message builder (see email_msg.h). */
#include "email_msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "email_buf.h"
#include "nurture/msgf.h"

/* Longest header value we keep (RFC 5322's line limit; encoded words fold it anyway). */
#define HEADER_MAX 998
/* Longest display name we keep. */
#define NAME_MAX_BYTES 128

size_t nt_email_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* ---- addresses ---- */

int nt_email_domain_valid(const char *d)
{
    size_t n = d != NULL ? strlen(d) : 0;
    if (n == 0 || n > 253)
        return 0;
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = d[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || d[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 (c == '-' && label > 0);
        if (!ok)
            return 0;
        label++;
    }
    return 1;
}

int nt_email_addr_valid(const char *a)
{
    if (a == NULL)
        return 0;
    const char *at = strrchr(a, '@');
    size_t n = strlen(a);
    if (at == NULL || at == a || n > 254 || (size_t)(at - a) > 64)
        return 0;
    static const char atext[] = "!#$%&'*+-/=?^_`{|}~";
    for (const char *p = a; p < at; p++) {
        char c = *p;
        if (c == '.') {
            if (p == a || p + 1 == at || p[1] == '.')
                return 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c != '\0' && strchr(atext, c) != NULL)))
            return 0;
    }
    return nt_email_domain_valid(at + 1);
}

/* Non-zero when s is a Message-ID as nt_email_message_id writes it: <printable@printable>. */
static int msgid_valid(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n < 5 || n >= NT_EMAIL_MSGID_MAX || s[0] != '<' || s[n - 1] != '>')
        return 0;
    const char *at = strchr(s, '@');
    if (at == NULL || at == s + 1 || at == s + n - 2)
        return 0;
    for (size_t i = 1; i + 1 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

/* Non-zero when u is an http(s) URL we can put between angle brackets in a header. */
static int url_valid(const char *u)
{
    size_t n = u != NULL ? strlen(u) : 0;
    if (n > 900 || (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u[i];
        if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '"')
            return 0;
    }
    return 1;
}

nt_rc_t nt_email_message_id(const char *key, const char *domain, char *buf, size_t size)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (buf == NULL || size < NT_EMAIL_MSGID_MAX || key == NULL ||
        !nt_email_domain_valid(domain))
        return NT_EINVAL;
    if (EVP_Digest(key, strlen(key), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 16)
        return NT_ERR;
    char hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(buf, size, "<%s@%s>", hex, domain);
    return NT_OK;
}

/* ---- header text ---- */

char *nt_email_header_clean(const char *s)
{
    nt_email_buf_t b = {0};
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    size_t n = strlen((const char *)p);
    int blank = 1; /* drop leading blanks and collapse runs */
    for (size_t i = 0; i < n && b.len < HEADER_MAX;) {
        unsigned char c = p[i];
        if (c < 0x20 || c == 0x7f || c == ' ') {
            if (!blank)
                nt_email_buf_ch(&b, ' ');
            blank = 1;
            i++;
            continue;
        }
        size_t l = nt_email_utf8_len(p + i, n - i);
        if (b.len + (l != 0 ? l : 3) > HEADER_MAX)
            break;
        if (l == 0) {
            nt_email_buf_add(&b, "\xef\xbf\xbd", 3);
            i++;
        } else {
            nt_email_buf_add(&b, (const char *)p + i, l);
            i += l;
        }
        blank = 0;
    }
    while (b.len > 0 && b.p[b.len - 1] == ' ')
        b.p[--b.len] = '\0';
    return nt_email_buf_take(&b);
}

/* Cut s (NUL-terminated, valid UTF-8) to at most max bytes on a character boundary. */
static void utf8_truncate(char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return;
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
        max--;
    s[max] = '\0';
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64(nt_email_buf_t *b, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        char out[4] = {b64chars[(v >> 18) & 63], b64chars[(v >> 12) & 63],
                       i + 1 < n ? b64chars[(v >> 6) & 63] : '=',
                       i + 2 < n ? b64chars[v & 63] : '='};
        nt_email_buf_add(b, out, 4);
    }
}

char *nt_email_rfc2047(const char *s, size_t used)
{
    nt_email_buf_t b = {0};
    size_t n = strlen(s);
    int plain = strstr(s, "=?") == NULL;
    for (size_t i = 0; i < n && plain; i++)
        plain = s[i] >= 0x20 && s[i] < 0x7f;
    if (plain) {
        /* Fold at spaces so that lines stay within 78 columns where words allow. */
        size_t col = used, start = 0;
        while (n - start + col > 78) {
            size_t cut = 0;
            for (size_t i = start + 1; i < n && i - start + col <= 78; i++)
                if (s[i] == ' ' && s[i - 1] != ' ')
                    cut = i;
            if (cut == 0)
                break;
            nt_email_buf_add(&b, s + start, cut - start);
            nt_email_buf_add(&b, "\r\n", 2);
            start = cut; /* the space starts the continuation line */
            col = 0;
        }
        nt_email_buf_add(&b, s + start, n - start);
        return nt_email_buf_take(&b);
    }
    /* Lines of at most 76 characters: "=?UTF-8?B?" and "?=" take 12, the rest is base64 of
     * whole characters (at most 45 bytes: 60 characters on a continuation line). */
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t room = i == 0 ? (used < 40 ? used : 40) : 1;
        size_t max = (76 - room - 12) / 4 * 3;
        size_t chunk = 0;
        while (i + chunk < n) {
            size_t l = nt_email_utf8_len(p + i + chunk, n - i - chunk);
            if (l == 0)
                l = 1; /* cleaned input has none; keep going rather than loop */
            if (chunk + l > max && chunk > 0)
                break;
            chunk += l;
        }
        if (i > 0)
            nt_email_buf_add(&b, "\r\n ", 3);
        nt_email_buf_add(&b, "=?UTF-8?B?", 10);
        b64(&b, p + i, chunk);
        nt_email_buf_add(&b, "?=", 2);
        i += chunk;
    }
    return nt_email_buf_take(&b);
}

/* ---- bodies ---- */

char *nt_email_qp(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    /* Sized once for the worst case (every byte encoded, a soft break every 24 bytes of input),
     * so the loop writes without a capacity check per byte. */
    char *out = malloc(3 * n + 3 * (n / 24 + 1) + 1);
    if (out == NULL)
        return NULL;
    char *o = out;
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r' || c == '\n') {
            if (c == '\r' && i + 1 < n && s[i + 1] == '\n')
                i++;
            *o++ = '\r';
            *o++ = '\n';
            col = 0;
            continue;
        }
        int at_eol = i + 1 == n || s[i + 1] == '\r' || s[i + 1] == '\n';
        int encode = c == '=' || c > 0x7e || (c < 0x20 && c != '\t') ||
                     ((c == ' ' || c == '\t') && at_eol);
        int at_start = encode || c == '.' || (c == 'F' && strncmp(s + i, "From ", 5) == 0);
        if (col == 0)
            encode = at_start;
        if (col + (encode ? 3 : 1) > 75) {
            *o++ = '=';
            *o++ = '\r';
            *o++ = '\n';
            col = 0;
            encode = at_start;
        }
        if (encode) {
            *o++ = '=';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
            col += 3;
        } else {
            *o++ = (char)c;
            col++;
        }
    }
    *o = '\0';
    return out;
}

/* ---- the message ---- */

/* `Name: value` where value is an address with an optional display name. */
static int add_address_header(nt_email_buf_t *b, const char *field, const char *name,
                              const char *addr)
{
    nt_email_buf_printf(b, "%s: ", field);
    char *clean = name != NULL ? nt_email_header_clean(name) : NULL;
    if (name != NULL && clean == NULL)
        return -1;
    if (clean != NULL) {
        utf8_truncate(clean, NAME_MAX_BYTES);
        size_t l = strlen(clean);
        while (l > 0 && clean[l - 1] == ' ')
            clean[--l] = '\0';
    }
    if (clean != NULL && clean[0] != '\0') {
        int ascii = strstr(clean, "=?") == NULL;
        for (const char *p = clean; *p != '\0' && ascii; p++)
            ascii = (unsigned char)*p < 0x7f;
        if (ascii) {
            /* A quoted-string: any ASCII phrase, specials included, with " and \ escaped. */
            nt_email_buf_ch(b, '"');
            for (const char *p = clean; *p != '\0'; p++) {
                if (*p == '"' || *p == '\\')
                    nt_email_buf_ch(b, '\\');
                nt_email_buf_ch(b, *p);
            }
            nt_email_buf_ch(b, '"');
        } else {
            char *enc = nt_email_rfc2047(clean, strlen(field) + 2);
            if (enc == NULL) {
                free(clean);
                return -1;
            }
            nt_email_buf_str(b, enc);
            free(enc);
        }
        /* Fold before the address when it would not fit on the name's last line. */
        size_t start = 0;
        for (size_t i = 0; i + 1 < b->len; i++)
            if (b->p[i] == '\r' && b->p[i + 1] == '\n')
                start = i + 2;
        size_t col = b->len - start;
        nt_email_buf_printf(b, "%s<%s>\r\n", col + strlen(addr) + 3 > 78 ? "\r\n " : " ", addr);
    } else {
        nt_email_buf_printf(b, "%s\r\n", addr);
    }
    free(clean);
    return 0;
}

static void add_date(nt_email_buf_t *b, int64_t ms)
{
    static const char *days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    nt_email_buf_printf(b, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday],
                        tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                        tm.tm_sec);
}

nt_rc_t nt_email_msg_build(const nt_email_msg_t *m, char **out, size_t *len, char **errmsg)
{
    *out = NULL;
    *len = 0;
    if (!nt_email_addr_valid(m->from_addr)) {
        *errmsg = nt_msgf("email: the From address is not a valid address");
        return NT_EINVAL;
    }
    if (!nt_email_addr_valid(m->to_addr)) {
        *errmsg = nt_msgf("email: the lead's address is not a valid address");
        return NT_EINVAL;
    }
    if (m->reply_to != NULL && !nt_email_addr_valid(m->reply_to)) {
        *errmsg = nt_msgf("email: the Reply-To address is not a valid address");
        return NT_EINVAL;
    }
    if (!msgid_valid(m->msgid)) {
        *errmsg = nt_msgf("email: malformed Message-ID");
        return NT_EINVAL;
    }
    if (m->unsub_url != NULL && !url_valid(m->unsub_url)) {
        *errmsg = nt_msgf("email: the unsubscribe link is not an http(s) URL fit for a header");
        return NT_EINVAL;
    }
    if (m->unsub_mailto != NULL && !nt_email_addr_valid(m->unsub_mailto)) {
        *errmsg = nt_msgf("email: the unsubscribe address is not a valid address");
        return NT_EINVAL;
    }

    nt_email_buf_t b = {0};
    char *subject = NULL, *subj_enc = NULL, *text = NULL, *html = NULL;
    add_date(&b, m->date_ms);
    if (add_address_header(&b, "From", m->from_name, m->from_addr) != 0)
        goto oom;
    if (m->reply_to != NULL)
        nt_email_buf_printf(&b, "Reply-To: %s\r\n", m->reply_to);
    if (add_address_header(&b, "To", m->to_name, m->to_addr) != 0)
        goto oom;
    subject = nt_email_header_clean(m->subject);
    if (subject == NULL)
        goto oom;
    subj_enc = nt_email_rfc2047(subject, strlen("Subject: "));
    if (subj_enc == NULL)
        goto oom;
    nt_email_buf_printf(&b, "Subject: %s\r\n", subj_enc);
    nt_email_buf_printf(&b, "Message-ID: %s\r\n", m->msgid);
    nt_email_buf_str(&b, "MIME-Version: 1.0\r\n");
    if (m->unsub_url != NULL || m->unsub_mailto != NULL) {
        nt_email_buf_str(&b, "List-Unsubscribe: ");
        if (m->unsub_url != NULL)
            nt_email_buf_printf(&b, "<%s>", m->unsub_url);
        if (m->unsub_mailto != NULL)
            nt_email_buf_printf(&b, "%s<mailto:%s?subject=unsubscribe>",
                                m->unsub_url != NULL ? ",\r\n " : "", m->unsub_mailto);
        nt_email_buf_str(&b, "\r\n");
        /* RFC 8058: one-click only with an HTTPS link to POST to. */
        if (m->unsub_url != NULL && strncmp(m->unsub_url, "https://", 8) == 0)
            nt_email_buf_str(&b, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
    }
    /* The boundary starts with "=_", which quoted-printable output never contains. */
    char boundary[64];
    const char *at = strchr(m->msgid, '@');
    snprintf(boundary, sizeof(boundary), "=_nt_%.*s", (int)(at - m->msgid - 1), m->msgid + 1);
    nt_email_buf_printf(&b, "Content-Type: multipart/alternative;\r\n boundary=\"%s\"\r\n",
                        boundary);
    nt_email_buf_str(&b, "\r\nThis is a multi-part message in MIME format.\r\n");

    text = nt_email_qp(m->text != NULL ? m->text : "");
    html = nt_email_qp(m->html != NULL ? m->html : "");
    if (text == NULL || html == NULL)
        goto oom;
    nt_email_buf_printf(&b, "\r\n--%s\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                            "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                        boundary);
    nt_email_buf_str(&b, text);
    nt_email_buf_printf(&b, "\r\n--%s\r\nContent-Type: text/html; charset=UTF-8\r\n"
                            "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                        boundary);
    nt_email_buf_str(&b, html);
    nt_email_buf_printf(&b, "\r\n--%s--\r\n", boundary);
    if (b.oom)
        goto oom;
    free(subject);
    free(subj_enc);
    free(text);
    free(html);
    *len = b.len;
    *out = nt_email_buf_take(&b);
    return NT_OK;

oom:
    free(subject);
    free(subj_enc);
    free(text);
    free(html);
    nt_email_buf_fini(&b);
    *errmsg = nt_msgf("email: out of memory building the message");
    return NT_ENOMEM;
}
