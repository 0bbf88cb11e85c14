/* The `email` channel: renders a template for the lead, builds an RFC 5322 message (see
 * email_msg.h, email_tpl.h) and delivers it over SMTP with the channel's own client on the
 * daemon's loop (email_smtp.h), through an HTTP provider (email_http.h), or, with neither
 * configured (the embedded default), writes it into a maildir under the data directory so that
 * a person can open what nurture sent.
 *
 * Params: template (required), from, from_name, reply_to. Config (channel.email.<key>):
 *   from, from_name, reply_to   defaults for the params (from: nurture@localhost)
 *   domain                      Message-ID domain (default: the From address's domain)
 *   templates                   template directory (default <data_dir>/templates when it
 *                               exists, else the source tree's workflows/templates)
 *   smtp_url                    smtp://host:port or smtps://host:port; empty: maildir
 *   http_url, http_auth, http_body   an HTTP JSON provider instead of SMTP (email_http.h)
 *   smtp_user, smtp_password    AUTH (or NT_SMTP_USER / NT_SMTP_PASSWORD in the environment)
 *   starttls                    try (default), yes (required), no
 *   tls_ca                      PEM file of the certificates that verify the SMTP server
 *                               (default: the system's)
 *   timeout_ms, connect_timeout_ms   per answer of the server, and to connect (30000, 10000)
 *   max_inflight                SMTP connections, each one message at a time (default 8),
 *                               kept open for the next messages; more messages wait in a queue
 *                               and are built only when a transaction can start
 *   maildir                     default <data_dir>/maildir
 *   unsubscribe_url             link in List-Unsubscribe (default https://<domain>/unsubscribe;
 *                               the message's id is appended as ?m=<hex>)
 *   unsubscribe_mailto          default unsubscribe@<domain>
 *   tracking                    yes (default) or no: signed links (email_track.h) when the
 *                               host gives tracking_secret and public_url; then the
 *                               unsubscribe link is <public_url>/t/u/<token>, links in the HTML
 *                               and plain-text parts are click links and an open pixel is
 *                               added
 *
 * Leads with the "unsubscribed" or "suppressed" field (the daemon's _unsub, _suppressed) are
 * not written to: the outcome is "suppressed" at once, nothing is built or sent.
 *
 * Outcomes: sent; bounced (NT_OK) when the server refuses the recipient with a 5xx at RCPT TO,
 * or the HTTP provider answers 4xx naming the recipient (email_http.h): a hard bounce, which the
 * daemon turns into suppression of the address (engine.c); suppressed for leads marked so. SMTP
 * 4xx, refused connections and timeouts are NT_EUNAVAIL (the host retries with backoff); other
 * SMTP 5xx and leads without a valid address are NT_EPERMFAIL (failed). A bounce the provider
 * reports later arrives through the provider webhook as an email.bounced event.
 *
 * Idempotency: the Message-ID is derived from the message's idempotency key, so a re-sent
 * message is the same message to the receiver; in the maildir an existing file for that
 * Message-ID means it was sent and nothing is written. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "email_buf.h"
#include "email_http.h"
#include "email_msg.h"
#include "email_smtp.h"
#include "email_tpl.h"
#include "email_track.h"
#include "nurture/channel.h"
#include "nurture/track.h"

#define EXPORT __attribute__((visibility("default")))

#ifndef NT_TEMPLATES_DIR
#define NT_TEMPLATES_DIR "workflows/templates"
#endif

static const char *const outcomes[] = {"bounced", "suppressed", NULL};

static const nt_channel_param_t params[] = {
    {"template", 1, "template name: <templates dir>/<template>.md"},
    {"from", 0, "sender address (default: channel.email.from)"},
    {"from_name", 0, "sender display name (default: channel.email.from_name)"},
    {"reply_to", 0, "Reply-To address (default: channel.email.reply_to, else none)"},
    {NULL, 0, NULL},
};

/* The template directory validation uses: the daemon's once init ran, else the environment's
 * NT_EMAIL_TEMPLATES (nurturectl), else the build's default. */
static char *g_templates_dir;

static const char *kv_get(const nt_kv_t *kv, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (kv[i].key != NULL && strcmp(kv[i].key, name) == 0)
            return kv[i].value;
    }
    return NULL;
}

static const char *templates_dir_for_validation(void)
{
    if (g_templates_dir != NULL)
        return g_templates_dir;
    const char *env = getenv("NT_EMAIL_TEMPLATES");
    return env != NULL && env[0] != '\0' ? env : NT_TEMPLATES_DIR;
}

static nt_rc_t email_validate(const nt_kv_t *kv, size_t n, char **errmsg)
{
    const char *from = kv_get(kv, n, "from");
    const char *reply_to = kv_get(kv, n, "reply_to");
    const char *from_name = kv_get(kv, n, "from_name");
    if (from != NULL && !nt_email_addr_valid(from)) {
        *errmsg = nt_msgf("email: from '%.80s' is not a plain address (local@domain)", from);
        return NT_EINVAL;
    }
    if (reply_to != NULL && !nt_email_addr_valid(reply_to)) {
        *errmsg =
            nt_msgf("email: reply_to '%.80s' is not a plain address (local@domain)", reply_to);
        return NT_EINVAL;
    }
    if (from_name != NULL && (strpbrk(from_name, "\r\n") != NULL || strlen(from_name) > 128)) {
        *errmsg = nt_msgf("email: from_name must be one line of at most 128 bytes");
        return NT_EINVAL;
    }
    const char *name = kv_get(kv, n, "template");
    if (name == NULL) {
        *errmsg = nt_msgf("email: no template");
        return NT_EINVAL;
    }
    nt_email_tpl_t *t = NULL;
    char *err = NULL;
    nt_rc_t rc = nt_email_tpl_load(templates_dir_for_validation(), name, &t, &err);
    if (rc == NT_OK)
        rc = nt_email_tpl_check(t, &err);
    nt_email_tpl_free(t);
    if (rc != NT_OK) {
        *errmsg = nt_msgf("email: %s", err != NULL ? err : "template refused");
        free(err);
        return rc == NT_ENOMEM ? NT_ENOMEM : NT_EINVAL;
    }
    return NT_OK;
}

/* ---- state ---- */

typedef struct tpl_entry tpl_entry_t;
struct tpl_entry {
    nt_email_tpl_t *tpl;
    struct timespec mtime;
    off_t size;
    tpl_entry_t *next;
};

typedef struct email_state email_state_t;

/* One message on its way over SMTP. It is built only when a transaction can start, so that a
 * batch of dispatches costs no more than queueing them and the building of messages is spread
 * between the SMTP conversations instead of holding them all up. */
typedef struct job job_t;
struct job {
    email_state_t *st;
    const nt_message_t *msg;   /* borrowed until done is called (channel.h) */
    nt_channel_done_fn *done;
    void *done_arg;
    char msgid[NT_EMAIL_MSGID_MAX];
    char *data;                /* the message, NULL until built */
    size_t len;
    const char *from, *to;     /* envelope addresses, borrowed from msg or the state */
    job_t *next;
};

struct email_state {
    const nt_channel_host_t *host;
    char *from, *from_name, *reply_to, *domain;
    char *unsub_url, *unsub_mailto;
    char *track_secret, *track_base; /* signed links when both are set */
    char *templates;
    char *maildir;              /* maildir mode when smtp and http are NULL */
    nt_email_smtp_t *smtp;      /* the SMTP client, when smtp_url is set */
    nt_email_http_t *http;      /* the HTTP provider transport, when http_url is set */
    job_t *qhead, *qtail;       /* waiting for an SMTP transaction to start */
    int stopping;               /* shutdown: completions start nothing new */
    tpl_entry_t *tpls;          /* templates loaded so far */
    unsigned long long sent, duplicates, bounced;
};

static void logf_(const email_state_t *st, nt_log_level_t lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(const email_state_t *st, nt_log_level_t lvl, const char *fmt, ...)
{
    if (st->host == NULL || st->host->log == NULL)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    st->host->log(lvl, "email", "%s", line);
}

static const char *cfg(const email_state_t *st, const char *key, const char *def)
{
    const char *v = st->host->config != NULL ? st->host->config("email", key, def) : def;
    return v != NULL && v[0] != '\0' ? v : def;
}

static long cfg_long(const email_state_t *st, const char *key, long def, long lo, long hi)
{
    const char *v = cfg(st, key, NULL);
    if (v == NULL)
        return def;
    char *end;
    long n = strtol(v, &end, 10);
    return *end == '\0' && n >= lo && n <= hi ? n : -1;
}

static int mkdir_p(const char *dir)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp))
        return -1;
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static void state_free(email_state_t *st)
{
    if (st == NULL)
        return;
    while (st->tpls != NULL) {
        tpl_entry_t *e = st->tpls;
        st->tpls = e->next;
        nt_email_tpl_free(e->tpl);
        free(e);
    }
    free(st->from);
    free(st->from_name);
    free(st->reply_to);
    free(st->domain);
    free(st->unsub_url);
    free(st->unsub_mailto);
    free(st->track_secret);
    free(st->track_base);
    free(st->templates);
    free(st->maildir);
    nt_email_smtp_free(st->smtp);
    nt_email_http_free(st->http);
    free(st);
}

/* Signed links: the host answers tracking_secret and public_url (nurtured's tracking-secret
 * and public-url) unless channel.email.tracking is no. */
static nt_rc_t track_init(email_state_t *st, char **errmsg)
{
    const char *on = cfg(st, "tracking", "yes");
    const char *secret = cfg(st, "tracking_secret", NULL);
    const char *base = cfg(st, "public_url", NULL);
    if (strcmp(on, "yes") != 0 && strcmp(on, "no") != 0) {
        *errmsg = nt_msgf("email: channel.email.tracking must be yes or no");
        return NT_EINVAL;
    }
    if (strcmp(on, "no") == 0 || secret == NULL || base == NULL) {
        logf_(st, NT_LOG_INFO, "no tracking: links are not signed, no open pixel");
        return NT_OK;
    }
    st->track_secret = strdup(secret);
    st->track_base = strdup(base);
    if (st->track_secret == NULL || st->track_base == NULL) {
        *errmsg = nt_msgf("email: out of memory");
        return NT_ENOMEM;
    }
    size_t n = strlen(st->track_base);
    while (n > 0 && st->track_base[n - 1] == '/')
        st->track_base[--n] = '\0';
    if (!nt_track_url_ok(st->track_base) || strpbrk(st->track_base, "?#") != NULL) {
        *errmsg = nt_msgf("email: public_url must be an http(s) URL without a query");
        return NT_EINVAL;
    }
    return NT_OK;
}

/* Non-zero when the lead may not be written to: unsubscribed, bounced hard or complained. */
static int lead_suppressed(const nt_message_t *msg)
{
    const char *u = kv_get(msg->lead, msg->nlead, "unsubscribed");
    const char *s = kv_get(msg->lead, msg->nlead, "suppressed");
    return (u != NULL && u[0] != '\0') || (s != NULL && s[0] != '\0');
}

static nt_rc_t email_init(const nt_channel_host_t *host, void **state, char **errmsg)
{
    email_state_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        *errmsg = nt_msgf("email: out of memory");
        return NT_ENOMEM;
    }
    st->host = host;
    const char *data_dir = host->data_dir != NULL ? host->data_dir : ".";

    st->from = strdup(cfg(st, "from", "nurture@localhost"));
    st->from_name = strdup(cfg(st, "from_name", "nurture"));
    const char *rt = cfg(st, "reply_to", NULL);
    st->reply_to = rt != NULL ? strdup(rt) : NULL;
    if (st->from == NULL || st->from_name == NULL || (rt != NULL && st->reply_to == NULL))
        goto oom;
    if (!nt_email_addr_valid(st->from)) {
        *errmsg = nt_msgf("email: channel.email.from '%.80s' is not a plain address", st->from);
        goto fail;
    }
    if (st->reply_to != NULL && !nt_email_addr_valid(st->reply_to)) {
        *errmsg = nt_msgf("email: channel.email.reply_to is not a plain address");
        goto fail;
    }
    if (strpbrk(st->from_name, "\r\n") != NULL) {
        *errmsg = nt_msgf("email: channel.email.from_name must be one line");
        goto fail;
    }
    st->domain = strdup(cfg(st, "domain", strrchr(st->from, '@') + 1));
    if (st->domain == NULL)
        goto oom;
    if (!nt_email_domain_valid(st->domain)) {
        *errmsg = nt_msgf("email: channel.email.domain '%.80s' is not a host name", st->domain);
        goto fail;
    }
    const char *uu = cfg(st, "unsubscribe_url", NULL);
    st->unsub_url = uu != NULL ? strdup(uu) : nt_msgf("https://%s/unsubscribe", st->domain);
    const char *um = cfg(st, "unsubscribe_mailto", NULL);
    st->unsub_mailto = um != NULL ? strdup(um) : nt_msgf("unsubscribe@%s", st->domain);
    if (st->unsub_url == NULL || st->unsub_mailto == NULL)
        goto oom;
    int http = strncmp(st->unsub_url, "https://", 8) == 0 ||
               strncmp(st->unsub_url, "http://", 7) == 0;
    if (!http || strpbrk(st->unsub_url, " \t\r\n<>\"?#") != NULL ||
        !nt_email_addr_valid(st->unsub_mailto)) {
        *errmsg = nt_msgf("email: channel.email.unsubscribe_url must be an http(s) URL without a "
                          "query, and unsubscribe_mailto a plain address");
        goto fail;
    }

    if (track_init(st, errmsg) != NT_OK)
        goto fail;

    const char *tdir = cfg(st, "templates", NULL);
    if (tdir != NULL) {
        st->templates = strdup(tdir);
    } else {
        char *own = nt_msgf("%s/templates", data_dir);
        struct stat sb;
        if (own != NULL && stat(own, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            st->templates = own;
        } else {
            free(own);
            st->templates = strdup(NT_TEMPLATES_DIR);
        }
    }
    if (st->templates == NULL)
        goto oom;

    const char *url = cfg(st, "smtp_url", NULL);
    const char *http_url = cfg(st, "http_url", NULL);
    if (http_url != NULL) {
        if (url != NULL)
            logf_(st, NT_LOG_WARN, "channel.email.http_url is set: smtp_url is not used");
        st->http = nt_email_http_new(host, http_url, errmsg);
        if (st->http == NULL)
            goto fail;
    } else if (url != NULL) {
        nt_email_smtp_cfg_t sc = {
            .url = url,
            .user = cfg(st, "smtp_user", getenv("NT_SMTP_USER")),
            .password = cfg(st, "smtp_password", getenv("NT_SMTP_PASSWORD")),
            .ca_file = cfg(st, "tls_ca", NULL),
            .timeout_ms = cfg_long(st, "timeout_ms", 30000, 100, 3600000),
            .connect_timeout_ms = cfg_long(st, "connect_timeout_ms", 10000, 100, 600000),
            .max_conns = (int)cfg_long(st, "max_inflight", 8, 1, 1024),
        };
        const char *tls = cfg(st, "starttls", "try");
        if (strcmp(tls, "try") == 0) {
            sc.tls = NT_EMAIL_TLS_TRY;
        } else if (strcmp(tls, "yes") == 0) {
            sc.tls = NT_EMAIL_TLS_YES;
        } else if (strcmp(tls, "no") == 0) {
            sc.tls = NT_EMAIL_TLS_NO;
        } else {
            *errmsg = nt_msgf("email: channel.email.starttls must be try, yes or no");
            goto fail;
        }
        if (sc.timeout_ms < 0 || sc.connect_timeout_ms < 0 || sc.max_conns < 0) {
            *errmsg = nt_msgf("email: timeout_ms (100..3600000), connect_timeout_ms (100..600000) "
                              "and max_inflight (1..1024) must be numbers in range");
            goto fail;
        }
        if (host->event_base == NULL) {
            *errmsg = nt_msgf("email: SMTP needs the host's event loop");
            goto fail;
        }
        st->smtp = nt_email_smtp_new(host, &sc, errmsg);
        if (st->smtp == NULL)
            goto fail;
        if (sc.user != NULL && sc.tls != NT_EMAIL_TLS_YES && strncmp(url, "smtps://", 8) != 0)
            logf_(st, NT_LOG_WARN, "AUTH without required TLS: set channel.email.starttls yes "
                                   "or use smtps://");
        logf_(st, NT_LOG_INFO, "SMTP via %s, at most %d connections, templates in %s", url,
              sc.max_conns, st->templates);
    } else {
        const char *md = cfg(st, "maildir", NULL);
        st->maildir = md != NULL ? strdup(md) : nt_msgf("%s/maildir", data_dir);
        if (st->maildir == NULL)
            goto oom;
        static const char *const subs[] = {"tmp", "new", "cur"};
        for (size_t i = 0; i < 3; i++) {
            char dir[4096];
            snprintf(dir, sizeof(dir), "%s/%s", st->maildir, subs[i]);
            if (mkdir_p(dir) != 0) {
                *errmsg = nt_msgf("email: cannot create %s: %s", dir, strerror(errno));
                goto fail;
            }
        }
        logf_(st, NT_LOG_INFO, "no SMTP server configured: writing messages to %s/new, "
                               "templates in %s",
              st->maildir, st->templates);
    }
    free(g_templates_dir);
    g_templates_dir = strdup(st->templates);
    *state = st;
    return NT_OK;
oom:
    *errmsg = nt_msgf("email: out of memory");
fail:
    state_free(st);
    return NT_ERR;
}

/* The template `name`, loaded (again when its file changed). Borrowed from st. */
static nt_rc_t get_template(email_state_t *st, const char *name, const nt_email_tpl_t **out,
                            char **errmsg)
{
    *out = NULL;
    if (!nt_email_tpl_name_valid(name)) {
        *errmsg = nt_msgf("template name '%.80s' is not valid", name);
        return NT_EINVAL;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.md", st->templates, name);
    struct stat sb;
    tpl_entry_t **pp = &st->tpls;
    for (; *pp != NULL; pp = &(*pp)->next)
        if (strcmp((*pp)->tpl->name, name) == 0)
            break;
    if (*pp != NULL && stat(path, &sb) == 0 && sb.st_size == (*pp)->size &&
        sb.st_mtim.tv_sec == (*pp)->mtime.tv_sec && sb.st_mtim.tv_nsec == (*pp)->mtime.tv_nsec) {
        *out = (*pp)->tpl;
        return NT_OK;
    }
    nt_email_tpl_t *t = NULL;
    nt_rc_t rc = nt_email_tpl_load(st->templates, name, &t, errmsg);
    if (rc != NT_OK)
        return rc;
    tpl_entry_t *e = *pp;
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL) {
            nt_email_tpl_free(t);
            *errmsg = nt_msgf("out of memory");
            return NT_ENOMEM;
        }
        *pp = e;
    } else {
        nt_email_tpl_free(e->tpl);
    }
    e->tpl = t;
    if (stat(path, &sb) == 0) {
        e->mtime = sb.st_mtim;
        e->size = sb.st_size;
    }
    *out = t;
    return NT_OK;
}

/* The HTML document around the rendered fragment, with the unsubscribe footer. */
static char *html_document(const char *subject, const char *fragment, const char *unsub)
{
    char *clean = nt_email_header_clean(subject);
    char *title = clean != NULL ? nt_email_html_escape(clean) : NULL;
    char *link = nt_email_html_escape(unsub);
    char *doc = NULL;
    if (title != NULL && link != NULL)
        doc =
            nt_msgf("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
                    "<meta name=\"viewport\" content=\"width=device-width\">\n"
                    "<title>%s</title>\n</head>\n"
                    "<body style=\"font-family: Arial, Helvetica, sans-serif; line-height: 1.5; "
                    "color: #222222; max-width: 600px; margin: 0 auto; padding: 16px;\">\n"
                    "%s"
                    "<hr style=\"border: none; border-top: 1px solid #dddddd; margin: 24px 0;\">\n"
                    "<p style=\"font-size: 12px; color: #666666;\">Not useful any more? "
                    "<a href=\"%s\">Unsubscribe</a> with one click.</p>\n"
                    "</body>\n</html>\n",
                    title, fragment, link);
    free(clean);
    free(title);
    free(link);
    return doc;
}

static int64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Render and build the message for msg. Returns NT_OK with *data (malloc'd) or an error with a
 * detail for the timeline in *detail (malloc'd). */
static nt_rc_t compose(email_state_t *st, const nt_message_t *msg, char *msgid, char **data,
                       size_t *len, const char **to_out, const char **from_out, char **detail)
{
    *data = NULL;
    const char *to = kv_get(msg->lead, msg->nlead, "email");
    if (to == NULL || to[0] == '\0') {
        *detail = nt_msgf("email: the lead has no email address");
        return NT_EPERMFAIL;
    }
    if (!nt_email_addr_valid(to)) {
        *detail = nt_msgf("email: the lead's email address is malformed");
        return NT_EPERMFAIL;
    }
    const char *from = kv_get(msg->params, msg->nparams, "from");
    const char *from_name = kv_get(msg->params, msg->nparams, "from_name");
    const char *reply_to = kv_get(msg->params, msg->nparams, "reply_to");
    from = from != NULL ? from : st->from;
    from_name = from_name != NULL ? from_name : st->from_name;
    reply_to = reply_to != NULL ? reply_to : st->reply_to;
    if (!nt_email_addr_valid(from) || (reply_to != NULL && !nt_email_addr_valid(reply_to))) {
        *detail = nt_msgf("email: the node's from or reply_to is not a plain address");
        return NT_EPERMFAIL;
    }
    if (msg->id == NULL || msg->id[0] == '\0' ||
        nt_email_message_id(msg->id, st->domain, msgid, NT_EMAIL_MSGID_MAX) != NT_OK) {
        *detail = nt_msgf("email: message without an idempotency key");
        return NT_EPERMFAIL;
    }

    const char *tname = kv_get(msg->params, msg->nparams, "template");
    const nt_email_tpl_t *tpl = NULL;
    char *err = NULL;
    nt_rc_t rc = get_template(st, tname != NULL ? tname : "", &tpl, &err);
    if (rc != NT_OK) {
        /* A template deleted or broken after publishing: ops can fix it, so retry. */
        *detail = nt_msgf("email: %s", err != NULL ? err : "template");
        free(err);
        return NT_EUNAVAIL;
    }
    nt_email_rendered_t r;
    if (nt_email_tpl_render(tpl, msg->lead, msg->nlead, &r, &err) != NT_OK) {
        *detail = nt_msgf("email: %s", err != NULL ? err : "render");
        free(err);
        return NT_EUNAVAIL;
    }

    const char *at = strchr(msgid, '@');
    char *unsub = NULL, *fragment = NULL, *tracked = NULL;
    if (st->track_secret != NULL) {
        /* One issue time for both parts: a URL gets the same click link in each. */
        nt_email_track_t t = {st->track_base, st->track_secret, strlen(st->track_secret),
                              msg->id, real_ms() / 1000};
        unsub = nt_email_track_link(&t, NT_TRACK_UNSUBSCRIBE, NULL);
        fragment = nt_email_track_html(&t, r.html);
        tracked = nt_email_track_text(&t, r.text, r.links, r.nlinks);
    }
    if (unsub == NULL) /* no tracking, or an id that is not <lead>:<plan>:<node>:<visit> */
        unsub = nt_msgf("%s?m=%.*s", st->unsub_url, (int)(at - msgid - 1), msgid + 1);
    const char *frag = fragment != NULL ? fragment : r.html;
    char *html = unsub != NULL ? html_document(r.subject, frag, unsub) : NULL;
    /* r.text ends in a newline: one blank line, then the signature separator "-- ". */
    char *text = unsub != NULL ? nt_msgf("%s\n-- \nNot useful any more? Unsubscribe: %s\n",
                                         tracked != NULL ? tracked : r.text, unsub)
                               : NULL;
    const char *first = kv_get(msg->lead, msg->nlead, "first_name");
    const char *last = kv_get(msg->lead, msg->nlead, "last_name");
    char *to_name = nt_msgf("%s%s%s", first != NULL ? first : "",
                            first != NULL && last != NULL ? " " : "", last != NULL ? last : "");
    if (html == NULL || text == NULL || to_name == NULL) {
        rc = NT_EUNAVAIL;
        *detail = nt_msgf("email: out of memory");
    } else {
        nt_email_msg_t m = {
            .from_addr = from,
            .from_name = from_name,
            .reply_to = reply_to,
            .to_addr = to,
            .to_name = to_name,
            .subject = r.subject,
            .text = text,
            .html = html,
            .msgid = msgid,
            .unsub_url = unsub,
            .unsub_mailto = st->unsub_mailto,
            .date_ms = real_ms(),
        };
        rc = st->http != NULL ? nt_email_http_body(st->http, &m, msg->id, data, len)
                              : nt_email_msg_build(&m, data, len, &err);
        if (rc != NT_OK) {
            *detail = err;
            err = NULL;
            rc = rc == NT_ENOMEM ? NT_EUNAVAIL : NT_EPERMFAIL;
        }
    }
    free(err);
    free(to_name);
    free(text);
    free(html);
    free(unsub);
    free(fragment);
    free(tracked);
    nt_email_rendered_fini(&r);
    *to_out = to;
    *from_out = from;
    return rc;
}

/* ---- maildir ---- */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Non-zero when the maildir already holds the message named `base` (new/, or cur/ as a mail
 * client leaves it: unflagged or seen). */
static int maildir_has(const email_state_t *st, const char *base)
{
    static const char *const forms[] = {"new/%s", "cur/%s", "cur/%s:2,", "cur/%s:2,S"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        char rel[512], path[4096];
        snprintf(rel, sizeof(rel), forms[i], base);
        snprintf(path, sizeof(path), "%s/%s", st->maildir, rel);
        if (access(path, F_OK) == 0)
            return 1;
    }
    return 0;
}

/* Deliver into the maildir: tmp/ then link into new/ (which never replaces a file). Returns
 * NT_OK (also when it was there already: *dup set) or NT_EUNAVAIL with *detail. */
static nt_rc_t maildir_deliver(email_state_t *st, const char *msgid, const char *data,
                               size_t len, int *dup, char **detail)
{
    char base[NT_EMAIL_MSGID_MAX + 8], tmp[4096], dst[4096];
    *dup = 0;
    snprintf(base, sizeof(base), "%.*s.eml", (int)strlen(msgid) - 2, msgid + 1);
    if (maildir_has(st, base)) {
        *dup = 1;
        return NT_OK;
    }
    snprintf(tmp, sizeof(tmp), "%s/tmp/%s.%ld", st->maildir, base, (long)getpid());
    snprintf(dst, sizeof(dst), "%s/new/%s", st->maildir, base);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        *detail = nt_msgf("email: maildir: %s: %s", tmp, strerror(errno));
        return NT_EUNAVAIL;
    }
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        *detail = nt_msgf("email: maildir: write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return NT_EUNAVAIL;
    }
    close(fd);
    if (link(tmp, dst) != 0) {
        int e = errno;
        unlink(tmp);
        if (e == EEXIST) {
            *dup = 1;
            return NT_OK;
        }
        *detail = nt_msgf("email: maildir: %s: %s", dst, strerror(e));
        return NT_EUNAVAIL;
    }
    unlink(tmp);
    return NT_OK;
}

/* ---- SMTP ---- */

static void job_free(job_t *j)
{
    if (j == NULL)
        return;
    free(j->data);
    free(j);
}

static void start_queued(email_state_t *st);

static void on_smtp_done(void *arg, nt_rc_t rc, const char *outcome, const char *detail)
{
    job_t *j = arg;
    email_state_t *st = j->st;
    if (rc == NT_OK && outcome != NULL && strcmp(outcome, "bounced") == 0)
        st->bounced++;
    else if (rc == NT_OK)
        st->sent++;
    nt_channel_done_fn *done = j->done;
    void *done_arg = j->done_arg;
    job_free(j);
    done(done_arg, rc, outcome, detail);
    if (!st->stopping)
        start_queued(st);
}

/* Fill free transactions from the queue, building each message as it starts. A job that
 * cannot be built or started completes at once. */
static void start_queued(email_state_t *st)
{
    while (st->qhead != NULL && nt_email_smtp_ready(st->smtp)) {
        job_t *j = st->qhead;
        st->qhead = j->next;
        if (st->qhead == NULL)
            st->qtail = NULL;
        j->next = NULL;
        char *detail = NULL;
        nt_rc_t rc = compose(st, j->msg, j->msgid, &j->data, &j->len, &j->to, &j->from, &detail);
        if (rc == NT_OK && nt_email_smtp_send(st->smtp, j->msgid, j->from, j->to, j->data,
                                              j->len, on_smtp_done, j) != 0) {
            rc = NT_EUNAVAIL;
            detail = nt_msgf("email: cannot start an SMTP transaction");
        }
        if (rc != NT_OK) {
            nt_channel_done_fn *done = j->done;
            void *done_arg = j->done_arg;
            job_free(j);
            done(done_arg, rc, NULL, detail != NULL ? detail : "email: cannot build the message");
            free(detail);
        }
    }
}

static nt_rc_t email_dispatch(void *state, const nt_message_t *msg, nt_channel_done_fn *done,
                              void *done_arg)
{
    email_state_t *st = state;
    char msgid[NT_EMAIL_MSGID_MAX];
    char *data = NULL, *detail = NULL;
    if (lead_suppressed(msg)) {
        done(done_arg, NT_OK, "suppressed", "email: the lead unsubscribed or is suppressed");
        return NT_OK;
    }
    if (st->smtp != NULL) {
        job_t *j = calloc(1, sizeof(*j));
        if (j == NULL) {
            done(done_arg, NT_EUNAVAIL, NULL, "email: out of memory");
            return NT_OK;
        }
        j->st = st;
        j->msg = msg;
        j->done = done;
        j->done_arg = done_arg;
        if (st->qtail != NULL)
            st->qtail->next = j;
        else
            st->qhead = j;
        st->qtail = j;
        start_queued(st);
        return NT_AGAIN;
    }
    size_t len = 0;
    const char *to = NULL, *from = NULL;
    nt_rc_t rc = compose(st, msg, msgid, &data, &len, &to, &from, &detail);
    if (rc != NT_OK) {
        done(done_arg, rc, NULL, detail != NULL ? detail : "email: cannot build the message");
        free(detail);
        return NT_OK;
    }
    if (st->http != NULL)
        return nt_email_http_send(st->http, msgid, msg->id, data, len, done, done_arg);
    int dup = 0;
    rc = maildir_deliver(st, msgid, data, len, &dup, &detail);
    free(data);
    if (rc == NT_OK && dup)
        st->duplicates++;
    else if (rc == NT_OK)
        st->sent++;
    done(done_arg, rc, rc == NT_OK ? "sent" : NULL,
         dup ? "duplicate id: already in the maildir" : detail);
    free(detail);
    return NT_OK;
}

static void email_shutdown(void *state)
{
    email_state_t *st = state;
    if (st == NULL)
        return;
    st->stopping = 1;
    nt_email_smtp_free(st->smtp); /* transactions in flight complete with NT_ECANCELED */
    st->smtp = NULL;
    while (st->qhead != NULL) {
        job_t *j = st->qhead;
        st->qhead = j->next;
        nt_channel_done_fn *done = j->done;
        void *done_arg = j->done_arg;
        job_free(j);
        done(done_arg, NT_ECANCELED, NULL, "email: shutting down");
    }
    st->qtail = NULL;
    logf_(st, NT_LOG_INFO, "%llu messages sent, %llu duplicates skipped, %llu recipients refused",
          st->sent, st->duplicates, st->bounced);
    free(g_templates_dir);
    g_templates_dir = NULL;
    state_free(st);
}

static const nt_channel_ops_t email_ops = {
    .abi_version = NT_CHANNEL_ABI_VERSION,
    .size = sizeof(nt_channel_ops_t),
    .name = "email",
    .description = "renders a Markdown template and sends it over SMTP (or into a maildir)",
    .params = params,
    .outcomes = outcomes,
    .validate = email_validate,
    .init = email_init,
    .dispatch = email_dispatch,
    .shutdown = email_shutdown,
    .flags = NT_CHANNEL_CONSENT,
};

EXPORT const nt_channel_ops_t *nt_channel_entry(void)
{
    return &email_ops;
}
