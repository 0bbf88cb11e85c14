/* The email channel's link rewriting (see email_track.h). */
#include "email_track.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "email_buf.h"
#include "nurture/track.h"

char *nt_email_track_link(const nt_email_track_t *t, char kind, const char *url)
{
    int64_t expires = kind == NT_TRACK_UNSUBSCRIBE ? 0 : t->issued + NT_TRACK_TTL_CLICK;
    char *tok = nt_track_sign(t->secret, t->secretlen, kind, t->msgid, t->issued, expires, url);
    char *link = NULL;
    if (tok == NULL)
        return NULL;
    if (asprintf(&link, "%s/t/%c/%s", t->base, kind, tok) < 0)
        link = NULL;
    free(tok);
    return link;
}

/* The attribute value as HTML text decodes it (the entities libcmark writes in an href).
 * Malloc'd, or NULL. */
static char *html_unescape(const char *s, size_t n)
{
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&quot;", '"'}, {"&#39;", '\''}, {"&#x27;", '\''},
                {"&lt;", '<'},  {"&gt;", '>'}};
    char *out = malloc(n + 1);
    size_t o = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < sizeof(ents) / sizeof(ents[0]); k++) {
            size_t l = strlen(ents[k].ent);
            if (i + l <= n && strncasecmp(s + i, ents[k].ent, l) == 0) {
                out[o++] = ents[k].c;
                i += l;
                break;
            }
        }
        if (k == sizeof(ents) / sizeof(ents[0]))
            out[o++] = s[i++];
    }
    out[o] = '\0';
    return out;
}

/* In the tag whose name ends before p ("<a"), the quoted href value: *vs its first byte, *vn
 * its length. Returns non-zero when found before the tag's end. */
static int find_href(const char *p, const char **vs, size_t *vn)
{
    while (*p != '\0' && *p != '>') {
        if ((p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n') && strncasecmp(p, "href", 4) == 0) {
            const char *e = p + 4;
            while (*e == ' ')
                e++;
            if (*e == '=') {
                e++;
                while (*e == ' ')
                    e++;
                if (*e == '"' || *e == '\'') {
                    const char *close = strchr(e + 1, *e);
                    if (close == NULL)
                        return 0;
                    *vs = e + 1;
                    *vn = (size_t)(close - e - 1);
                    return 1;
                }
                return 0;
            }
        }
        if (*p == '"' || *p == '\'') {
            const char *close = strchr(p + 1, *p);
            if (close == NULL)
                return 0;
            p = close;
        }
        p++;
    }
    return 0;
}

char *nt_email_track_html(const nt_email_track_t *t, const char *html)
{
    nt_email_buf_t b = {0};
    const char *p = html;
    for (;;) {
        const char *a = p;
        while ((a = strchr(a, '<')) != NULL) {
            if ((a[1] == 'a' || a[1] == 'A') &&
                (a[2] == ' ' || a[2] == '\t' || a[2] == '\n'))
                break;
            a++;
        }
        const char *vs = NULL;
        size_t vn = 0;
        if (a == NULL || !find_href(a + 2, &vs, &vn)) {
            if (a == NULL) {
                nt_email_buf_str(&b, p);
                break;
            }
            nt_email_buf_add(&b, p, (size_t)(a + 2 - p));
            p = a + 2;
            continue;
        }
        char *url = html_unescape(vs, vn);
        char *link = url != NULL && nt_track_url_ok(url)
                         ? nt_email_track_link(t, NT_TRACK_CLICK, url)
                         : NULL;
        nt_email_buf_add(&b, p, (size_t)(vs - p));
        if (link != NULL)
            nt_email_buf_str(&b, link); /* base64url and a checked base: nothing to escape */
        else
            nt_email_buf_add(&b, vs, vn);
        free(url);
        free(link);
        p = vs + vn;
    }
    char *pixel = nt_email_track_link(t, NT_TRACK_OPEN, NULL);
    if (pixel != NULL)
        nt_email_buf_printf(&b,
                            "<img src=\"%s\" width=\"1\" height=\"1\" alt=\"\" "
                            "style=\"display:block;border:0;width:1px;height:1px\">\n",
                            pixel);
    free(pixel);
    return nt_email_buf_take(&b);
}

char *nt_email_track_text(const nt_email_track_t *t, const char *text,
                          const nt_email_span_t *links, size_t nlinks)
{
    nt_email_buf_t b = {0};
    size_t at = 0, n = strlen(text);
    for (size_t i = 0; i < nlinks; i++) {
        const nt_email_span_t *s = &links[i];
        if (s->off < at || s->len > n - s->off)
            continue; /* not a span of this text */
        char *url = strndup(text + s->off, s->len);
        char *link = url != NULL && nt_track_url_ok(url)
                         ? nt_email_track_link(t, NT_TRACK_CLICK, url)
                         : NULL;
        if (url == NULL)
            b.oom = 1;
        if (link != NULL) {
            nt_email_buf_add(&b, text + at, s->off - at);
            nt_email_buf_str(&b, link);
            at = s->off + s->len;
        }
        free(url);
        free(link);
    }
    nt_email_buf_str(&b, text + at);
    return nt_email_buf_take(&b);
}
