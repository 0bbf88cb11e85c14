/* Email templates (see email_tpl.h). */
#include "email_tpl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
        *errmsg = nt_msgf("template '%s' line %d: '{{' without '}}' on the same line", tname, line);
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
        *errmsg = nt_msgf("template '%s' line %d: '%.*s' is not a placeholder: expected "
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
            *errmsg = nt_msgf("template '%s' line %d: a default must not contain '{'", tname, line);
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
            *errmsg = nt_msgf("template '%s': more than %d placeholders", tname, MARKS_MAX);
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
            *errmsg = nt_msgf("template '%s' line %d: unknown attribute '%s' (not a built-in lead "
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
    free(t->text_marks);
    free(t->text_links);
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

static char *text_render(const char *md, nt_email_span_t **links, size_t *nlinks);

/* The body rendered once, a mark in place of each placeholder: rendering for a lead then only
 * replaces the marks. Sets t->html_marks and t->text_marks, or leaves them NULL when the body
 * does not render (render says why, each time). */
static void render_with_marks(nt_email_tpl_t *t)
{
    char **marks = NULL, *err = NULL;
    size_t nmarks = 0;
    char *md = substitute(t->name, t->body, NULL, 0, &marks, &nmarks, &err);
    if (md != NULL) {
        t->html_marks = cmark_markdown_to_html(md, strlen(md), CMARK_OPT_SAFE);
        t->text_marks = text_render(md, &t->text_links, &t->ntext_links);
    }
    free(md);
    free(err);
    marks_free(marks, nmarks);
}

nt_rc_t nt_email_tpl_parse(const char *name, const char *src, size_t len, nt_email_tpl_t **out,
                           char **errmsg)
{
    *out = NULL;
    if (len > NT_EMAIL_TPL_MAX) {
        *errmsg = nt_msgf("template '%s' is larger than %d bytes", name, NT_EMAIL_TPL_MAX);
        return NT_ETOOBIG;
    }
    if (!utf8_valid((const unsigned char *)src, len)) {
        *errmsg = nt_msgf("template '%s' is not valid UTF-8 text", name);
        return NT_EINVAL;
    }
    if (len < 8 || strncmp(src, "Subject:", 8) != 0) {
        *errmsg = nt_msgf("template '%s' line 1: must be 'Subject: ...'", name);
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
        *errmsg = nt_msgf("template '%s' line 1: the subject is empty", name);
        return NT_EINVAL;
    }
    const char *body = eol < end ? eol + 1 : end;
    if (body < end && *body == '\r')
        body++;
    if (body < end && *body != '\n') {
        *errmsg = nt_msgf("template '%s' line 2: must be empty (it separates the subject from the "
                          "body)",
                          name);
        return NT_EINVAL;
    }
    if (body < end)
        body++;
    if (strstr(src, MARK_PREFIX) != NULL) {
        *errmsg = nt_msgf("template '%s' contains '%s', which nurture reserves", name, MARK_PREFIX);
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
        *errmsg = nt_msgf("template '%s' has no body", name);
        nt_email_tpl_free(t);
        return NT_EINVAL;
    }
    render_with_marks(t);
    *out = t;
    return NT_OK;
oom:
    nt_email_tpl_free(t);
    *errmsg = nt_msgf("template '%s': out of memory", name);
    return NT_ENOMEM;
}

nt_rc_t nt_email_tpl_load(const char *dir, const char *name, nt_email_tpl_t **out,
                          char **errmsg)
{
    *out = NULL;
    if (!nt_email_tpl_name_valid(name)) {
        *errmsg = nt_msgf("template name '%.80s' is not valid: use 1 to 64 letters, digits, '_' "
                          "and '-'",
                          name != NULL ? name : "");
        return NT_EINVAL;
    }
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s.md", dir, name) >= sizeof(path)) {
        *errmsg = nt_msgf("template directory path too long");
        return NT_EINVAL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) {
            *errmsg = nt_msgf("template '%s' not found in %s", name, dir);
            return NT_ENOTFOUND;
        }
        *errmsg = nt_msgf("template '%s': cannot open %s: %s", name, path, strerror(e));
        return NT_EINVAL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        *errmsg = nt_msgf("template '%s': %s is not a regular file", name, path);
        return NT_EINVAL;
    }
    if (sb.st_size > NT_EMAIL_TPL_MAX) {
        close(fd);
        *errmsg = nt_msgf("template '%s' is larger than %d bytes", name, NT_EMAIL_TPL_MAX);
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
        *errmsg = nt_msgf("template '%s': out of memory", name);
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

/* The value for ph: the lead's, else the default, else "", cleaned: control characters become
 * spaces, invalid UTF-8 U+FFFD, and it is cut to NT_EMAIL_VALUE_MAX bytes on a character
 * boundary. Malloc'd, or NULL. */
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
    nt_email_buf_t b = {0};
    const unsigned char *p = (const unsigned char *)v;
    for (size_t i = 0; i < vlen;) {
        size_t l = nt_email_utf8_len(p + i, vlen - i);
        const char *c = (const char *)p + i;
        size_t clen = l;
        if (l == 0) {
            c = "\xef\xbf\xbd";
            clen = 3;
            l = 1;
        } else if (p[i] < 0x20 || p[i] == 0x7f) {
            c = " ";
        }
        if (b.len + clen > NT_EMAIL_VALUE_MAX)
            break;
        nt_email_buf_add(&b, c, clen);
        i += l;
    }
    return nt_email_buf_take(&b);
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
        *errmsg = nt_msgf("template '%s': out of memory", tname);
    return out;
}

/* The index of the mark at p ("NtPh" 4 digits "Z"), or MARKS_MAX when there is none. */
static size_t mark_at(const char *p)
{
    const size_t plen = sizeof(MARK_PREFIX) - 1;
    if (strncmp(p, MARK_PREFIX, plen) != 0)
        return MARKS_MAX;
    size_t i = 0;
    for (size_t k = plen; k < plen + 4; k++) {
        if (p[k] < '0' || p[k] > '9')
            return MARKS_MAX;
        i = i * 10 + (size_t)(p[k] - '0');
    }
    return p[plen + 4] == 'Z' ? i : MARKS_MAX;
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
    for (const char *p = html; *p != '\0';) {
        if (*p == '<')
            in_tag = 1;
        else if (*p == '>')
            in_tag = 0;
        size_t i = mark_at(p);
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
        nt_email_buf_ch(&b, *p);
        p++;
    }
    return nt_email_buf_take(&b);
}

/* ---- plain text ---- */

/* Stands for the underline of the heading on the line before, '=' or '-' and 'Z' after it: its
 * width in characters is known only once the marks in the heading are filled in. */
#define UNDERLINE_MARK MARK_PREFIX "U"
/* Containers nested deeper than this add no prefix to the lines (so that a template of 100 000
 * '>' cannot make every line 200 KB long). */
#define TEXT_DEPTH 32
#define THEMATIC_BREAK "----------------------------------------"

typedef struct text_ctx {
    nt_email_buf_t b;
    struct {
        char kind;       /* 'q' block quote, 'l' list, 'i' list item */
        char marker[24]; /* item: "- " or "<n>. "; continuation lines get as many spaces */
        int marked;      /* item: its marker is written */
        long next;       /* list: the next item's number (ordered lists) */
    } st[TEXT_DEPTH];
    int depth;          /* containers open, TEXT_DEPTH and more */
    int bol;            /* at the beginning of a line: the prefix comes first */
    int blank;          /* a blank line goes before the next block */
    int in_heading;     /* line breaks are spaces: a heading is one line */
    int in_image;       /* alt text: a link in it is its text only */
    size_t link_start;  /* where the text of the link being written starts */
    nt_email_span_t *links;
    size_t nlinks, caplinks;
} text_ctx_t;

/* The line's prefix: "> " per block quote, an item's marker on its first line and as many
 * spaces on the others. */
static void text_prefix(text_ctx_t *c)
{
    int n = c->depth < TEXT_DEPTH ? c->depth : TEXT_DEPTH;
    c->bol = 0;
    for (int i = 0; i < n; i++) {
        if (c->st[i].kind == 'q') {
            nt_email_buf_str(&c->b, "> ");
        } else if (c->st[i].kind == 'i' && c->st[i].marked) {
            nt_email_buf_printf(&c->b, "%*s", (int)strlen(c->st[i].marker), "");
        } else if (c->st[i].kind == 'i') {
            nt_email_buf_str(&c->b, c->st[i].marker);
            c->st[i].marked = 1;
        }
    }
}

static void text_add(text_ctx_t *c, const char *s)
{
    if (s == NULL || s[0] == '\0')
        return;
    if (c->bol)
        text_prefix(c);
    nt_email_buf_str(&c->b, s);
}

/* End the line (trailing blanks go when the marks are filled in). */
static void text_nl(text_ctx_t *c)
{
    if (c->bol)
        text_prefix(c);
    nt_email_buf_ch(&c->b, '\n');
    c->bol = 1;
}

static void text_push(text_ctx_t *c, char kind)
{
    if (c->depth < TEXT_DEPTH) {
        memset(&c->st[c->depth], 0, sizeof(c->st[0]));
        c->st[c->depth].kind = kind;
    }
    c->depth++;
}

/* A block starts: one blank line after the block before, unless they belong together. */
static void text_block(text_ctx_t *c)
{
    if (c->blank && c->b.len > 0)
        text_nl(c);
    c->blank = 0;
}

/* The block n ended: the next one comes after a blank line, except in a tight list. */
static void text_block_end(text_ctx_t *c, cmark_node *n)
{
    cmark_node *p = cmark_node_parent(n);
    int tight = (cmark_node_get_type(n) == CMARK_NODE_ITEM && cmark_node_get_list_tight(p)) ||
                (p != NULL && cmark_node_get_type(p) == CMARK_NODE_ITEM &&
                 cmark_node_get_list_tight(cmark_node_parent(p)));
    c->blank = !tight;
}

/* Non-zero for the link targets cmark's safe mode drops from the HTML. */
static int url_dangerous(const char *u)
{
    if (strncasecmp(u, "data:image/", 11) == 0)
        return !(strncasecmp(u + 11, "png", 3) == 0 || strncasecmp(u + 11, "gif", 3) == 0 ||
                 strncasecmp(u + 11, "jpeg", 4) == 0 || strncasecmp(u + 11, "webp", 4) == 0);
    return strncasecmp(u, "javascript:", 11) == 0 || strncasecmp(u, "vbscript:", 9) == 0 ||
           strncasecmp(u, "file:", 5) == 0 || strncasecmp(u, "data:", 5) == 0;
}

/* url as cmark writes it into an href, HTML entities decoded: bytes outside its safe set
 * percent-encoded. The marks are letters and digits, so they stay. */
static void href_add(nt_email_buf_t *b, const char *url)
{
    static const char hex[] = "0123456789ABCDEF";
    static const char safe[] = "!#$%&'()*+,-./:;=?@_~";
    for (const unsigned char *p = (const unsigned char *)url; *p != '\0'; p++) {
        unsigned char c = *p;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr(safe, c) != NULL) {
            nt_email_buf_ch(b, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            nt_email_buf_add(b, e, 3);
        }
    }
}

/* The link n ends: `text (url)`, or `url` when the text is the URL, or the text alone when
 * the HTML has no target either. */
static void text_link_end(text_ctx_t *c, cmark_node *n)
{
    const char *url = cmark_node_get_url(n);
    size_t tlen = c->b.len - c->link_start;
    const char *text = c->b.p != NULL ? c->b.p + c->link_start : "";
    if (url == NULL || url[0] == '\0' || url_dangerous(url))
        return;
    if (strncasecmp(url, "mailto:", 7) == 0 && strlen(url + 7) == tlen &&
        memcmp(url + 7, text, tlen) == 0)
        return; /* an e-mail autolink: the address says it */
    int same = strlen(url) == tlen && memcmp(url, text, tlen) == 0;
    if (same) {
        c->b.len = c->link_start; /* written again, encoded as the href is */
        if (c->b.p != NULL)
            c->b.p[c->b.len] = '\0';
    } else if (tlen > 0) {
        text_add(c, " (");
    }
    if (c->bol)
        text_prefix(c);
    if (c->nlinks == c->caplinks) {
        size_t cap = c->caplinks != 0 ? 2 * c->caplinks : 8;
        nt_email_span_t *grown = realloc(c->links, cap * sizeof(*grown));
        if (grown == NULL) {
            c->b.oom = 1;
            return;
        }
        c->links = grown;
        c->caplinks = cap;
    }
    size_t off = c->b.len;
    href_add(&c->b, url);
    c->links[c->nlinks++] = (nt_email_span_t){off, c->b.len - off};
    if (!same && tlen > 0)
        nt_email_buf_ch(&c->b, ')');
}

static void text_node(text_ctx_t *c, cmark_node *n, cmark_event_type ev)
{
    int enter = ev == CMARK_EVENT_ENTER;
    switch (cmark_node_get_type(n)) {
    case CMARK_NODE_BLOCK_QUOTE:
        if (enter) {
            text_block(c);
            text_push(c, 'q');
        } else {
            c->depth--;
            text_block_end(c, n);
        }
        break;
    case CMARK_NODE_LIST:
        if (enter) {
            text_block(c);
            text_push(c, 'l');
            if (c->depth <= TEXT_DEPTH)
                c->st[c->depth - 1].next = cmark_node_get_list_type(n) == CMARK_ORDERED_LIST
                                               ? cmark_node_get_list_start(n)
                                               : -1;
        } else {
            c->depth--;
            text_block_end(c, n);
        }
        break;
    case CMARK_NODE_ITEM:
        if (enter) {
            text_block(c);
            long num = c->depth >= 1 && c->depth <= TEXT_DEPTH ? c->st[c->depth - 1].next : -1;
            if (num >= 0)
                c->st[c->depth - 1].next++;
            text_push(c, 'i');
            if (c->depth <= TEXT_DEPTH) {
                if (num >= 0)
                    snprintf(c->st[c->depth - 1].marker, sizeof(c->st[0].marker), "%ld. ", num);
                else
                    snprintf(c->st[c->depth - 1].marker, sizeof(c->st[0].marker), "- ");
            }
        } else {
            if (c->depth <= TEXT_DEPTH && !c->st[c->depth - 1].marked)
                text_nl(c); /* an empty item: its marker alone */
            c->depth--;
            text_block_end(c, n);
        }
        break;
    case CMARK_NODE_PARAGRAPH:
        if (enter) {
            text_block(c);
        } else {
            text_nl(c);
            text_block_end(c, n);
        }
        break;
    case CMARK_NODE_HEADING:
        if (enter) {
            text_block(c);
            c->in_heading = 1;
        } else {
            text_nl(c);
            text_add(c, cmark_node_get_heading_level(n) == 1 ? UNDERLINE_MARK "=Z"
                                                             : UNDERLINE_MARK "-Z");
            text_nl(c);
            c->in_heading = 0;
            text_block_end(c, n);
        }
        break;
    case CMARK_NODE_CODE_BLOCK: {
        const char *s = cmark_node_get_literal(n);
        text_block(c);
        while (s != NULL && *s != '\0') {
            size_t l = strcspn(s, "\n");
            if (c->bol)
                text_prefix(c);
            nt_email_buf_str(&c->b, "    ");
            nt_email_buf_add(&c->b, s, l);
            text_nl(c);
            s += l + (s[l] == '\n');
        }
        text_block_end(c, n);
        break;
    }
    case CMARK_NODE_THEMATIC_BREAK:
        text_block(c);
        text_add(c, THEMATIC_BREAK);
        text_nl(c);
        text_block_end(c, n);
        break;
    case CMARK_NODE_TEXT:
    case CMARK_NODE_CODE:
        text_add(c, cmark_node_get_literal(n));
        break;
    case CMARK_NODE_SOFTBREAK:
    case CMARK_NODE_LINEBREAK:
        if (c->in_heading)
            text_add(c, " ");
        else
            text_nl(c);
        break;
    case CMARK_NODE_LINK:
        if (c->in_image) {
            break;
        } else if (enter) {
            if (c->bol)
                text_prefix(c);
            c->link_start = c->b.len;
        } else {
            text_link_end(c, n);
        }
        break;
    case CMARK_NODE_IMAGE:
        c->in_image += enter ? 1 : -1;
        break;
    default: /* the document, emphasis, strong; raw HTML is dropped */
        break;
    }
}

/* The plain text of md (Markdown with marks): marks and underline marks still in it, *links
 * (malloc'd, *nlinks of them) where it holds link targets. Malloc'd, or NULL. */
static char *text_render(const char *md, nt_email_span_t **links, size_t *nlinks)
{
    text_ctx_t c = {.bol = 1};
    *links = NULL;
    *nlinks = 0;
    cmark_node *doc = cmark_parse_document(md, strlen(md), CMARK_OPT_DEFAULT);
    cmark_iter *it = doc != NULL ? cmark_iter_new(doc) : NULL;
    if (it == NULL) {
        cmark_node_free(doc);
        return NULL;
    }
    cmark_event_type ev;
    while ((ev = cmark_iter_next(it)) != CMARK_EVENT_DONE)
        text_node(&c, cmark_iter_get_node(it), ev);
    cmark_iter_free(it);
    cmark_node_free(doc);
    char *text = nt_email_buf_take(&c.b);
    if (text == NULL) {
        free(c.links);
        return NULL;
    }
    *links = c.links;
    *nlinks = c.nlinks;
    return text;
}

/* The marked text with the values in: plain, except in a link target (links), where a value
 * is percent-encoded unless it starts the target and is an http(s) URL (nt_track_url_ok), as
 * in the HTML. Underline marks become as many '=' or '-' as the line before has characters
 * after the prefix; blanks at the ends of lines and blank lines at the end go, and the text
 * ends in one newline (or is empty). *out_links (malloc'd, *nout) are the link targets in the
 * result. Malloc'd, or NULL. */
static char *unmark_text(const char *text, const nt_email_span_t *links, size_t nlinks,
                         char **marks, size_t nmarks, nt_email_span_t **out_links, size_t *nout)
{
    const size_t ulen = sizeof(UNDERLINE_MARK) - 1;
    nt_email_buf_t b = {0};
    nt_email_span_t *ol = nlinks > 0 ? calloc(nlinks, sizeof(*ol)) : NULL;
    size_t k = 0, line = 0, prev = 0, floor = 0;
    int in_url = 0;
    *out_links = NULL;
    *nout = 0;
    if (nlinks > 0 && ol == NULL)
        return NULL;
    for (size_t i = 0;;) {
        if (k < nlinks && !in_url && i == links[k].off) {
            in_url = 1;
            ol[k].off = b.len;
        }
        if (k < nlinks && in_url && i == links[k].off + links[k].len) {
            in_url = 0;
            ol[k].len = b.len - ol[k].off;
            floor = b.len; /* trimming never reaches into a link */
            k++;
            continue;
        }
        if (text[i] == '\0')
            break;
        size_t m = mark_at(text + i);
        if (m < nmarks) {
            if (in_url && !(b.len == ol[k].off && nt_track_url_ok(marks[m])))
                add_pct(&b, marks[m]);
            else
                nt_email_buf_str(&b, marks[m]);
            i += MARK_LEN;
            continue;
        }
        if (strncmp(text + i, UNDERLINE_MARK, ulen) == 0 &&
            (text[i + ulen] == '=' || text[i + ulen] == '-') && text[i + ulen + 1] == 'Z') {
            size_t width = 0;
            for (size_t j = prev + (b.len - line); line > 0 && j + 1 < line; j++)
                width += ((unsigned char)b.p[j] & 0xc0) != 0x80;
            for (size_t j = 0; j < width; j++)
                nt_email_buf_ch(&b, text[i + ulen]);
            i += ulen + 2;
            continue;
        }
        if (text[i] == '\n') {
            while (b.len > line && b.len > floor &&
                   (b.p[b.len - 1] == ' ' || b.p[b.len - 1] == '\t'))
                b.p[--b.len] = '\0';
            nt_email_buf_ch(&b, '\n');
            prev = line;
            line = b.len;
            i++;
            continue;
        }
        nt_email_buf_ch(&b, text[i]);
        i++;
    }
    while (b.len > floor && strchr(" \t\n", b.p[b.len - 1]) != NULL)
        b.p[--b.len] = '\0';
    if (b.len > 0)
        nt_email_buf_ch(&b, '\n');
    char *out = nt_email_buf_take(&b);
    if (out == NULL || k < nlinks) {
        free(out);
        free(ol);
        return NULL;
    }
    *out_links = ol;
    *nout = nlinks;
    return out;
}

void nt_email_rendered_fini(nt_email_rendered_t *r)
{
    free(r->subject);
    free(r->text);
    free(r->links);
    free(r->html);
    memset(r, 0, sizeof(*r));
}

nt_rc_t nt_email_tpl_render(const nt_email_tpl_t *t, const nt_kv_t *lead, size_t nlead,
                            nt_email_rendered_t *out, char **errmsg)
{
    memset(out, 0, sizeof(*out));
    char **marks = NULL;
    size_t nmarks = 0, nlinks = t->ntext_links;
    char *md = NULL, *html = NULL, *text = NULL;
    nt_email_span_t *links = t->text_links;
    *errmsg = NULL;
    out->subject = substitute(t->name, t->subject, lead, nlead, NULL, NULL, errmsg);
    if (out->subject == NULL)
        goto fail;
    md = substitute(t->name, t->body, lead, nlead, &marks, &nmarks, errmsg);
    if (md == NULL)
        goto fail;
    html = t->html_marks != NULL ? t->html_marks
                                 : cmark_markdown_to_html(md, strlen(md), CMARK_OPT_SAFE);
    text = t->text_marks != NULL ? t->text_marks : text_render(md, &links, &nlinks);
    if (html == NULL || text == NULL) {
        *errmsg = nt_msgf("template '%s' does not render", t->name);
        goto fail;
    }
    out->html = unmark(html, marks, nmarks);
    out->text = unmark_text(text, links, nlinks, marks, nmarks, &out->links, &out->nlinks);
    if (out->html == NULL || out->text == NULL)
        goto fail;
    if (html != t->html_marks)
        free(html);
    if (text != t->text_marks) {
        free(text);
        free(links);
    }
    free(md);
    marks_free(marks, nmarks);
    return NT_OK;
fail:
    if (html != t->html_marks)
        free(html);
    if (text != t->text_marks) {
        free(text);
        free(links);
    }
    free(md);
    marks_free(marks, nmarks);
    nt_email_rendered_fini(out);
    if (*errmsg == NULL)
        *errmsg = nt_msgf("template '%s': out of memory", t->name);
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
    int empty_text = r.text[0] == '\0';
    nt_email_rendered_fini(&r);
    if (empty) {
        *errmsg = nt_msgf("template '%s' renders to an empty body", t->name);
        return NT_EINVAL;
    }
    if (empty_text) {
        *errmsg = nt_msgf("template '%s' renders to an empty plain-text body (only raw HTML or "
                          "images without alt text?)",
                          t->name);
        return NT_EINVAL;
    }
    return NT_OK;
}
