/* Email templates (see email_tpl.h). */
#include "email_tpl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmark.h>

#include "email_buf.h"
#include "email_msg.h"
#include "nurture/track.h"

const char *const nt_email_builtin_attrs[] = {
    "email",   "first_name", "last_name", "company",  "title",    "role",   "phone",
    "country", "city",       "timezone",  "industry", "company_size", "product", "source",
    "owner",   "language",   "website",   "score",    "stage",    NULL,
};

/* What stands for the i-th placeholder while Markdown is rendered: letters and digits only, so
 * that CommonMark leaves it alone in text, emphasis, code and link targets alike. */
#define MARK_PREFIX "NtPh"
#define MARK_LEN (sizeof(MARK_PREFIX) - 1 + 5) /* prefix, 4 digits, 'Z' */
#define MARKS_MAX 9999

static char *errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *errf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t l = s[i] != 0 ? nt_email_utf8_len(s + i, n - i) : 0;
        if (l == 0)
            return 0;
        i += l;
    }
    return 1;
}

int nt_email_tpl_name_valid(const char *name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* ---- placeholders ---- */

typedef struct ph {
    const char *start; /* the first '{' */
    size_t len;        /* through the last '}' */
    char name[65];
    const char *def;   /* default text, or NULL */
    size_t deflen;
} ph_t;

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-' || c == '.';
}

/* Find the next placeholder in s at or after *pos. Returns 1 with *ph set, 0 when there is none,
 * -1 on a malformed one (*errmsg says why, with line numbers counted from line0). */
static int next_ph(const char *tname, const char *s, size_t *pos, int line0, ph_t *ph,
                   char **errmsg)
{
    const char *open = strstr(s + *pos, "{{");
    if (open == NULL)
        return 0;
    int line = line0;
    for (const char *p = s; p < open; p++)
        line += *p == '\n';
    const char *close = strstr(open + 2, "}}");
    const char *nl = strchr(open, '\n');
    if (close == NULL || (nl != NULL && nl < close)) {
        *errmsg = errf("template '%s' line %d: '{{' without '}}' on the same line", tname, line);
        return -1;
    }
    const char *p = open + 2;
    while (p < close && *p == ' ')
        p++;
    const char *n0 = p;
    while (p < close && name_char(*p))
        p++;
    size_t nlen = (size_t)(p - n0);
    while (p < close && *p == ' ')
        p++;
    if (nlen == 0 || nlen > 64 || (p < close && *p != '|')) {
        *errmsg = errf("template '%s' line %d: '%.*s' is not a placeholder: expected "
                       "{{attribute}} or {{attribute|default}}",
                       tname, line, (int)(close + 2 - open > 80 ? 80 : close + 2 - open), open);
        return -1;
    }
    memcpy(ph->name, n0, nlen);
    ph->name[nlen] = '\0';
    ph->def = NULL;
    ph->deflen = 0;
    if (p < close) {
        const char *d = p + 1, *e = close;
        while (d < e && *d == ' ')
            d++;
        while (e > d && e[-1] == ' ')
            e--;
        if (memchr(d, '{', (size_t)(e - d)) != NULL) {
            *errmsg = errf("template '%s' line %d: a default must not contain '{'", tname, line);
            return -1;
        }
        ph->def = d;
        ph->deflen = (size_t)(e - d);
    }
    ph->start = open;
    ph->len = (size_t)(close + 2 - open);
    *pos = (size_t)(close + 2 - s);
    return 1;
}

/* Check every placeholder of s. Returns 0 or -1 with *errmsg. */
static int scan(const char *tname, const char *s, int line0, int check_known, char **errmsg)
{
    size_t pos = 0, count = 0;
    ph_t ph;
    int r;
    while ((r = next_ph(tname, s, &pos, line0, &ph, errmsg)) == 1) {
        if (++count > MARKS_MAX) {
            *errmsg = errf("template '%s': more than %d placeholders", tname, MARKS_MAX);
            return -1;
        }
        if (!check_known || ph.def != NULL)
            continue;
        int known = 0;
        for (size_t i = 0; nt_email_builtin_attrs[i] != NULL && !known; i++)
            known = strcmp(nt_email_builtin_attrs[i], ph.name) == 0;
        if (!known) {
            int line = line0;
            for (const char *p = s; p < ph.start; p++)
                line += *p == '\n';
            *errmsg = errf("template '%s' line %d: unknown attribute '%s' (not a built-in lead "
                           "attribute; give it a default: {{%s|...}})",
                           tname, line, ph.name, ph.name);
            return -1;
        }
    }
    return r < 0 ? -1 : 0;
}

/* ---- parse and load ---- */

void nt_email_tpl_free(nt_email_tpl_t *t)
{
    if (t == NULL)
        return;
    free(t->name);
    free(t->subject);
    free(t->body);
    free(t->html_marks);
    free(t);
}

static char *substitute(const char *tname, const char *s, const nt_kv_t *lead, size_t nlead,
                        char ***marks, size_t *nmarks, char **errmsg);

static void marks_free(char **marks, size_t nmarks)
{
    for (size_t i = 0; i < nmarks; i++)
        free(marks[i]);
    free(marks);
}

/* The body rendered once, a mark in place of each placeholder: rendering for a lead then only
 * replaces the marks. NULL when it does not render (render says why, each time). */
static char *html_with_marks(const nt_email_tpl_t *t)
{
    char **marks = NULL, *err = NULL, *html = NULL;
    size_t nmarks = 0;
    char *md = substitute(t->name, t->body, NULL, 0, &marks, &nmarks, &err);
    if (md != NULL)
        html = cmark_markdown_to_html(md, strlen(md), CMARK_OPT_SAFE);
    free(md);
    free(err);
    marks_free(marks, nmarks);
    return html;
}

nt_rc_t nt_email_tpl_parse(const char *name, const char *src, size_t len, nt_email_tpl_t **out,
                           char **errmsg)
{
    *out = NULL;
    if (len > NT_EMAIL_TPL_MAX) {
        *errmsg = errf("template '%s' is larger than %d bytes", name, NT_EMAIL_TPL_MAX);
        return NT_ETOOBIG;
    }
    if (!utf8_valid((const unsigned char *)src, len)) {
        *errmsg = errf("template '%s' is not valid UTF-8 text", name);
        return NT_EINVAL;
    }
    if (len < 8 || strncmp(src, "Subject:", 8) != 0) {
        *errmsg = errf("template '%s' line 1: must be 'Subject: ...'", name);
        return NT_EINVAL;
    }
    const char *end = src + len;
    const char *eol = memchr(src, '\n', len);
    if (eol == NULL)
        eol = end;
    const char *s0 = src + 8, *s1 = eol;
    while (s0 < s1 && (*s0 == ' ' || *s0 == '\t'))
        s0++;
    while (s1 > s0 && (s1[-1] == ' ' || s1[-1] == '\t' || s1[-1] == '\r'))
        s1--;
    if (s0 == s1) {
        *errmsg = errf("template '%s' line 1: the subject is empty", name);
        return NT_EINVAL;
    }
    const char *body = eol < end ? eol + 1 : end;
    if (body < end && *body == '\r')
        body++;
    if (body < end && *body != '\n') {
        *errmsg = errf("template '%s' line 2: must be empty (it separates the subject from the "
                       "body)",
                       name);
        return NT_EINVAL;
    }
    if (body < end)
        body++;
    if (strstr(src, MARK_PREFIX) != NULL) {
        *errmsg = errf("template '%s' contains '%s', which nurture reserves", name, MARK_PREFIX);
        return NT_EINVAL;
    }
    nt_email_tpl_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        goto oom;
    t->name = strdup(name);
    t->subject = strndup(s0, (size_t)(s1 - s0));
    /* CRLF files: the body keeps LF only; the message builder writes CRLF. */
    nt_email_buf_t b = {0};
    for (const char *p = body; p < end; p++)
        if (*p != '\r')
            nt_email_buf_ch(&b, *p);
    t->body = nt_email_buf_take(&b);
    if (t->name == NULL || t->subject == NULL || t->body == NULL)
        goto oom;
    if (scan(name, t->subject, 1, 0, errmsg) != 0 || scan(name, t->body, 3, 0, errmsg) != 0) {
        nt_email_tpl_free(t);
        return NT_EINVAL;
    }
    if (t->body[strspn(t->body, " \t\n")] == '\0') {
        *errmsg = errf("template '%s' has no body", name);
        nt_email_tpl_free(t);
        return NT_EINVAL;
    }
    t->html_marks = html_with_marks(t);
    *out = t;
    return NT_OK;
oom:
    nt_email_tpl_free(t);
    *errmsg = errf("template '%s': out of memory", name);
    return NT_ENOMEM;
}

nt_rc_t nt_email_tpl_load(const char *dir, const char *name, nt_email_tpl_t **out,
                          char **errmsg)
{
    *out = NULL;
    if (!nt_email_tpl_name_valid(name)) {
        *errmsg = errf("template name '%.80s' is not valid: use 1 to 64 letters, digits, '_' "
                       "and '-'",
                       name != NULL ? name : "");
        return NT_EINVAL;
    }
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s.md", dir, name) >= sizeof(path)) {
        *errmsg = errf("template directory path too long");
        return NT_EINVAL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) {
            *errmsg = errf("template '%s' not found in %s", name, dir);
            return NT_ENOTFOUND;
        }
        *errmsg = errf("template '%s': cannot open %s: %s", name, path, strerror(e));
        return NT_EINVAL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        *errmsg = errf("template '%s': %s is not a regular file", name, path);
        return NT_EINVAL;
    }
    if (sb.st_size > NT_EMAIL_TPL_MAX) {
        close(fd);
        *errmsg = errf("template '%s' is larger than %d bytes", name, NT_EMAIL_TPL_MAX);
        return NT_ETOOBIG;
    }
    char *src = malloc((size_t)sb.st_size + 1);
    size_t got = 0;
    while (src != NULL && got < (size_t)sb.st_size) {
        ssize_t r = read(fd, src + got, (size_t)sb.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (src == NULL) {
        *errmsg = errf("template '%s': out of memory", name);
        return NT_ENOMEM;
    }
    src[got] = '\0';
    nt_rc_t rc = nt_email_tpl_parse(name, src, got, out, errmsg);
    free(src);
    return rc;
}

/* ---- rendering ---- */

char *nt_email_html_escape(const char *s)
{
    nt_email_buf_t b = {0};
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '&':
            nt_email_buf_str(&b, "&amp;");
            break;
        case '<':
            nt_email_buf_str(&b, "&lt;");
            break;
        case '>':
            nt_email_buf_str(&b, "&gt;");
            break;
        case '"':
            nt_email_buf_str(&b, "&quot;");
            break;
        case '\'':
            nt_email_buf_str(&b, "&#39;");
            break;
        default:
            nt_email_buf_ch(&b, *s);
        }
    }
    return nt_email_buf_take(&b);
}

static void add_pct(nt_email_buf_t *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        unsigned char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            nt_email_buf_ch(b, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            nt_email_buf_add(b, e, 3);
        }
    }
}

/* The value for ph: the lead's (cleaned, capped), else the default, else "". Malloc'd. */
static char *resolve(const ph_t *ph, const nt_kv_t *lead, size_t nlead)
{
    const char *v = NULL;
    size_t vlen = 0;
    for (size_t i = 0; i < nlead; i++) {
        if (lead[i].key != NULL && lead[i].value != NULL && strcmp(lead[i].key, ph->name) == 0) {
            v = lead[i].value;
            vlen = strlen(v);
            break;
        }
    }
    if (vlen == 0 && ph->def != NULL) {
        v = ph->def;
        vlen = ph->deflen;
    }
    if (v == NULL)
        v = "";
    if (vlen > NT_EMAIL_VALUE_MAX) {
        vlen = NT_EMAIL_VALUE_MAX;
        while (vlen > 0 && ((unsigned char)v[vlen] & 0xc0) == 0x80)
            vlen--;
    }
    char *out = strndup(v, vlen);
    if (out == NULL)
        return NULL;
    for (char *p = out; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    return out;
}

/* s with every placeholder replaced: by its plain value (marks == NULL), or by its mark, the
 * value being appended to *marks. Returns the string (malloc'd) or NULL on failure. */
static char *substitute(const char *tname, const char *s, const nt_kv_t *lead, size_t nlead,
                        char ***marks, size_t *nmarks, char **errmsg)
{
    nt_email_buf_t b = {0};
    size_t pos = 0, last = 0;
    ph_t ph;
    int r;
    while ((r = next_ph(tname, s, &pos, 1, &ph, errmsg)) == 1) {
        nt_email_buf_add(&b, s + last, (size_t)(ph.start - (s + last)));
        last = pos;
        char *v = resolve(&ph, lead, nlead);
        if (v == NULL) {
            b.oom = 1;
            break;
        }
        if (marks == NULL) {
            nt_email_buf_str(&b, v);
            free(v);
            continue;
        }
        char **grown = *nmarks < MARKS_MAX ? realloc(*marks, (*nmarks + 1) * sizeof(**marks))
                                            : NULL;
        if (grown == NULL) {
            free(v);
            b.oom = 1;
            break;
        }
        *marks = grown;
        (*marks)[*nmarks] = v;
        nt_email_buf_printf(&b, MARK_PREFIX "%04zuZ", *nmarks);
        (*nmarks)++;
    }
    if (r < 0) {
        nt_email_buf_fini(&b);
        return NULL;
    }
    nt_email_buf_str(&b, s + last);
    char *out = nt_email_buf_take(&b);
    if (out == NULL)
        *errmsg = errf("template '%s': out of memory", tname);
    return out;
}

/* Non-zero when b ends in the opening of a link target as cmark writes it. */
static int at_href_start(const nt_email_buf_t *b)
{
    static const char open[] = "<a href=\"";
    const size_t n = sizeof(open) - 1;
    return b->len >= n && memcmp(b->p + b->len - n, open, n) == 0;
}

/* Replace the marks in cmark's HTML: escaped in text, percent-encoded inside a tag. cmark
 * escapes '<' in text, so every '<' in its output opens a tag. One exception makes a stored
 * link usable ([Join]({{webinar_join_link|...}})): a value that starts a link target and is
 * a whole http(s) URL of printable ASCII without quotes or angle brackets (nt_track_url_ok)
 * goes in as the URL, HTML-escaped. It brings no scheme but http(s) and cannot leave the
 * attribute; any other value there (javascript:..., text) is percent-encoded like the rest. */
static char *unmark(const char *html, char **marks, size_t nmarks)
{
    nt_email_buf_t b = {0};
    int in_tag = 0;
    const size_t plen = sizeof(MARK_PREFIX) - 1;
    for (const char *p = html; *p != '\0';) {
        if (*p == '<')
            in_tag = 1;
        else if (*p == '>')
            in_tag = 0;
        if (strncmp(p, MARK_PREFIX, plen) == 0 && p[plen] >= '0' && p[plen] <= '9' &&
            p[plen + 1] >= '0' && p[plen + 1] <= '9' && p[plen + 2] >= '0' &&
            p[plen + 2] <= '9' && p[plen + 3] >= '0' && p[plen + 3] <= '9' && p[plen + 4] == 'Z') {
            size_t i = (size_t)(p[plen] - '0') * 1000 + (size_t)(p[plen + 1] - '0') * 100 +
                       (size_t)(p[plen + 2] - '0') * 10 + (size_t)(p[plen + 3] - '0');
            if (i < nmarks) {
                if (in_tag && !(at_href_start(&b) && nt_track_url_ok(marks[i]))) {
                    add_pct(&b, marks[i]);
                } else {
                    char *e = nt_email_html_escape(marks[i]);
                    if (e == NULL)
                        b.oom = 1;
                    else
                        nt_email_buf_str(&b, e);
                    free(e);
                }
                p += MARK_LEN;
                continue;
            }
        }
        nt_email_buf_ch(&b, *p);
        p++;
    }
    return nt_email_buf_take(&b);
}

void nt_email_rendered_fini(nt_email_rendered_t *r)
{
    free(r->subject);
    free(r->text);
    free(r->html);
    memset(r, 0, sizeof(*r));
}

nt_rc_t nt_email_tpl_render(const nt_email_tpl_t *t, const nt_kv_t *lead, size_t nlead,
                            nt_email_rendered_t *out, char **errmsg)
{
    memset(out, 0, sizeof(*out));
    char **marks = NULL;
    size_t nmarks = 0;
    char *md = NULL, *html = NULL;
    *errmsg = NULL;
    out->subject = substitute(t->name, t->subject, lead, nlead, NULL, NULL, errmsg);
    if (out->subject == NULL)
        goto fail;
    out->text = substitute(t->name, t->body, lead, nlead, NULL, NULL, errmsg);
    if (out->text == NULL)
        goto fail;
    md = substitute(t->name, t->body, lead, nlead, &marks, &nmarks, errmsg);
    if (md == NULL)
        goto fail;
    html = t->html_marks != NULL ? t->html_marks
                                 : cmark_markdown_to_html(md, strlen(md), CMARK_OPT_SAFE);
    if (html == NULL) {
        *errmsg = errf("template '%s' does not render", t->name);
        goto fail;
    }
    out->html = unmark(html, marks, nmarks);
    if (out->html == NULL)
        goto fail;
    if (html != t->html_marks)
        free(html);
    free(md);
    marks_free(marks, nmarks);
    return NT_OK;
fail:
    if (html != t->html_marks)
        free(html);
    free(md);
    marks_free(marks, nmarks);
    nt_email_rendered_fini(out);
    if (*errmsg == NULL)
        *errmsg = errf("template '%s': out of memory", t->name);
    return NT_ERR;
}

nt_rc_t nt_email_tpl_check(const nt_email_tpl_t *t, char **errmsg)
{
    if (scan(t->name, t->subject, 1, 1, errmsg) != 0 || scan(t->name, t->body, 3, 1, errmsg) != 0)
        return NT_EINVAL;
    nt_email_rendered_t r;
    if (nt_email_tpl_render(t, NULL, 0, &r, errmsg) != NT_OK)
        return NT_EINVAL;
    int empty = r.html[strspn(r.html, " \t\n")] == '\0';
    nt_email_rendered_fini(&r);
    if (empty) {
        *errmsg = errf("template '%s' renders to an empty body", t->name);
        return NT_EINVAL;
    }
    return NT_OK;
}
