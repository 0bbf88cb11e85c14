/* Email templates: a file `<dir>/<name>.md` whose first line is `Subject: ...`, then a blank
 * line, then a CommonMark body. `{{attribute}}` and `{{attribute|default}}` anywhere in the
 * subject or body are replaced by the lead's attribute (the default when the lead has none or
 * an empty one; nothing when there is no default either).
 *
 * The body becomes HTML through libcmark in its safe mode (raw HTML and javascript: links from
 * templates are dropped), and plain text as the Markdown source itself. Values are substituted
 * after Markdown rendering, so a lead's value can never add markup or links: in HTML text it is
 * HTML-escaped, inside a tag (a link target) it is percent-encoded, except that a placeholder
 * starting a link target whose value is a whole http(s) URL of printable ASCII
 * (nt_track_url_ok) becomes that URL: `[Join]({{webinar_join_link|https://...}})`. Values are
 * single lines (control characters become spaces) of at most NT_EMAIL_VALUE_MAX bytes. */
#ifndef NT_EMAIL_TPL_H
#define NT_EMAIL_TPL_H

#include <stddef.h>

#include "nurture/channel.h"

/* Largest template file. */
#define NT_EMAIL_TPL_MAX (256 * 1024)
/* Longest substituted value, in bytes (cut on a UTF-8 character boundary). */
#define NT_EMAIL_VALUE_MAX 1024

typedef struct nt_email_tpl {
    char *name;    /* template name (file name without .md) */
    char *subject; /* subject line with {{}} */
    char *body;    /* Markdown with {{}} */
    char *html_marks; /* cmark's HTML of the body with a mark for each placeholder, made once
                       * when parsed (the marks do not depend on the lead); NULL: rendered
                       * with each message */
} nt_email_tpl_t;

/* A rendered template; every field malloc'd. */
typedef struct nt_email_rendered {
    char *subject; /* substituted subject (not yet header-safe: the message builder cleans it) */
    char *text;    /* plain text body */
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
 * default, and the template renders (for a lead without attributes) to a non-empty subject and
 * body. Returns NT_OK or NT_EINVAL with *errmsg. */
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
