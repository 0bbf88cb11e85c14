/* Email templates: a file `<dir>/<name>.md` whose first line is `Subject: ...`, then a blank
 * line, then a CommonMark body. `{{attribute}}` and `{{attribute|default}}` anywhere in the
 * subject or body are replaced by the lead's attribute (the default when the lead has none or
 * an empty one; nothing when there is no default either).
 *
 * libcmark parses the body once; it becomes HTML in cmark's safe mode (raw HTML and javascript:
 * links from templates are dropped) and plain text by our walk of the same document:
 * paragraphs and blocks apart by one blank line, the author's line breaks kept; headings
 * underlined with '=' (level 1) or '-' to their width in characters; emphasis and code as their
 * text; links as `text (url)`, or `url` when the text is the URL (autolinks); images as their
 * alt text; lists as `- ` and `1. ` (from the list's start), nested and continued lines
 * indented by the marker's width; block quotes with `> ` on every line; code blocks indented by
 * four spaces; a thematic break as a line of dashes; raw HTML dropped. No line ends in a blank
 * and the text ends in one newline. A link target in the text is written as cmark writes the
 * HTML link's href (percent-encoded the same way), so that tracking finds the same URL in both
 * parts (nt_email_rendered_t.links).
 *
 * Values are substituted after Markdown rendering, so a lead's value can never add markup or
 * links: in HTML text it is HTML-escaped, inside a tag (a link target) it is percent-encoded, in
 * plain text it goes as it is and in a plain-text link target it is percent-encoded, except
 * that a placeholder starting a link target whose value is a whole http(s) URL of printable
 * ASCII (nt_track_url_ok) becomes that URL in both parts:
 * `[Join]({{webinar_join_link|https://...}})`. Values are single lines (control characters
 * become spaces, invalid UTF-8 U+FFFD) of at most NT_EMAIL_VALUE_MAX bytes. */
#ifndef NT_EMAIL_TPL_H
#define NT_EMAIL_TPL_H

#include <stddef.h>

#include "nurture/channel.h"

/* Largest template file. */
#define NT_EMAIL_TPL_MAX (256 * 1024)
/* Longest substituted value, in bytes (cut on a UTF-8 character boundary). */
#define NT_EMAIL_VALUE_MAX 1024

/* Bytes off to off + len of a string. */
typedef struct nt_email_span {
    size_t off;
    size_t len;
} nt_email_span_t;

typedef struct nt_email_tpl {
    char *name;    /* template name (file name without .md) */
    char *subject; /* subject line with {{}} */
    char *body;    /* Markdown with {{}} */
    char *html_marks; /* cmark's HTML of the body with a mark for each placeholder, made once
                       * when parsed (the marks do not depend on the lead); NULL: rendered
                       * with each message */
    char *text_marks; /* the plain text of the body with the same marks, made once when
                       * parsed; NULL: rendered with each message */
    nt_email_span_t *text_links; /* where text_marks holds a link target, in order */
    size_t ntext_links;
} nt_email_tpl_t;

/* A rendered template; every field malloc'd. */
typedef struct nt_email_rendered {
    char *subject; /* substituted subject (not yet header-safe: the message builder cleans it) */
    char *text;    /* plain text body: "" or lines ending in one newline */
    nt_email_span_t *links; /* each link target in text (a URL, or what stands for one), in
                             * order, for tracking (nt_email_track_text); NULL when none */
    size_t nlinks;
    char *html;    /* HTML fragment */
} nt_email_rendered_t;

/* Lead attributes every lead may have (nurture's built-in ones, score and stage). */
extern const char *const nt_email_builtin_attrs[];

/* Non-zero when name is a template name: 1..64 of [A-Za-z0-9_-]. */
int nt_email_tpl_name_valid(const char *name);

/* Parse template text (len bytes). Returns NT_OK with *out (free with nt_email_tpl_free), or
 * NT_EINVAL/NT_ETOOBIG/NT_ENOMEM with *errmsg (malloc'd, caller frees) naming the template and
 * the line, and *out NULL. Checks the layout, UTF-8, and that every {{ is a well-formed
 * placeholder. */
nt_rc_t nt_email_tpl_parse(const char *name, const char *src, size_t len, nt_email_tpl_t **out,
                           char **errmsg);

/* Read and parse <dir>/<name>.md. NT_ENOTFOUND: "template 'x' not found in <dir>". Otherwise as
 * nt_email_tpl_parse. */
nt_rc_t nt_email_tpl_load(const char *dir, const char *name, nt_email_tpl_t **out,
                          char **errmsg);

/* What validation adds to parsing: every attribute a placeholder names is built in or has a
 * default, and the template renders (for a lead without attributes) to a non-empty HTML and
 * plain-text body. Returns NT_OK or NT_EINVAL with *errmsg. */
nt_rc_t nt_email_tpl_check(const nt_email_tpl_t *t, char **errmsg);

/* Render t for a lead. Returns NT_OK with *out filled (nt_email_rendered_fini it), or an error
 * with *errmsg and *out zeroed. */
nt_rc_t nt_email_tpl_render(const nt_email_tpl_t *t, const nt_kv_t *lead, size_t nlead,
                            nt_email_rendered_t *out, char **errmsg);

void nt_email_rendered_fini(nt_email_rendered_t *r);

/* NULL does nothing. */
void nt_email_tpl_free(nt_email_tpl_t *t);

/* s with & < > " ' escaped for HTML text and attribute values. Malloc'd, or NULL. */
char *nt_email_html_escape(const char *s);

#endif
