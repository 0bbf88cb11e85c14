/* SMTP on the daemon's loop (email_smtp.h): RFC 5321 without PIPELINING, one transaction per
 * connection at a time, connections kept for the next message. */
#include <arpa/inet.h>
#include <ctype.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "email_buf.h"
#include "email_smtp.h"

#define REPLY_LINE_MAX 4096 /* longer answer lines are a protocol error */
#define DETAIL_TEXT_MAX 200 /* of the server's answer in a detail */

typedef enum cstate {
    C_CONNECT,   /* TCP (and TLS for smtps://) */
    C_GREET,     /* waiting for 220 */
    C_EHLO,
    C_HELO,      /* EHLO refused: the old greeting */
    C_STARTTLS,
    C_TLS,       /* STARTTLS handshake */
    C_AUTH_PLAIN,
    C_AUTH_USER, /* AUTH LOGIN: 334 for the user name */
    C_AUTH_PASS, /* 334 for the password */
    C_AUTH_DONE, /* 235 */
    C_IDLE,
    C_MAIL,
    C_RCPT,
    C_DATA,
    C_DOT,       /* the message was sent, waiting for its 250 */
    C_RSET,
} cstate_t;

typedef struct xact xact_t;
struct xact {
    const char *msgid, *from, *to, *data; /* borrowed until done */
    size_t len;
    nt_channel_done_fn *done;
    void *done_arg;
    xact_t *next;
};

typedef struct conn conn_t;
struct conn {
    nt_email_smtp_t *s;
    struct bufferevent *bev;
    cstate_t state;
    int tls;                 /* TLS is on */
    int ext_starttls, ext_plain, ext_login;
    int code;                /* of the answer being read (multi-line) */
    char text[DETAIL_TEXT_MAX + 1]; /* its last line, control characters blanked */
    xact_t *x;               /* the transaction on this connection, or NULL */
    int reused;              /* a transaction finished on it before */
    conn_t *prev, *next;
};

struct nt_email_smtp {
    const nt_channel_host_t *host;
    struct event_base *base;
    struct evdns_base *dns;
    SSL_CTX *ssl;            /* smtps:// and STARTTLS; NULL until first needed */
    char *hostname;
    int port;
    int smtps;
    char *user, *password;
    char *ca_file;
    nt_email_tls_t tls;
    struct timeval timeout, connect_timeout;
    int max_conns;
    char ehlo[256];          /* our name in EHLO */
    conn_t *conns;
    int nconns;
    xact_t *whead, *wtail;   /* waiting for a connection */
    int ntx;                 /* transactions not done yet */
};

static void ms_tv(struct timeval *tv, long ms)
{
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
}

static void pump(nt_email_smtp_t *s);

/* Complete x with rc/outcome and a detail "email: smtp <msgid>: <what>". */
static void xact_done(nt_email_smtp_t *s, xact_t *x, nt_rc_t rc, const char *outcome,
                      const char *what)
{
    char *detail = what != NULL ? nt_msgf("email: smtp %s: %s", x->msgid, what) : NULL;
    nt_channel_done_fn *done = x->done;
    void *arg = x->done_arg;
    free(x);
    s->ntx--;
    done(arg, rc, rc == NT_OK ? outcome : NULL, detail);
    free(detail);
}

static void conn_unlink(conn_t *c)
{
    nt_email_smtp_t *s = c->s;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    s->nconns--;
}

/* Close c; its transaction, if any, completes with rc and `why`, unless the server closed a
 * kept connection before answering its first command: then the transaction waits for another
 * connection (servers close idle connections when they like). Then start what waits. */
static void conn_close(conn_t *c, nt_rc_t rc, const char *why)
{
    nt_email_smtp_t *s = c->s;
    xact_t *x = c->x;
    int again = x != NULL && c->reused && c->state == C_MAIL && c->code == 0;
    conn_unlink(c);
    if (c->bev != NULL)
        bufferevent_free(c->bev);
    free(c);
    if (again) {
        x->next = s->whead;
        s->whead = x;
        if (s->wtail == NULL)
            s->wtail = x;
    } else if (x != NULL) {
        xact_done(s, x, rc, NULL, why);
    }
    pump(s);
}

static void send_line(conn_t *c, cstate_t next, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void send_line(conn_t *c, cstate_t next, const char *fmt, ...)
{
    va_list ap;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
    c->state = next;
    c->code = 0;
    int setup = next < C_IDLE;
    bufferevent_set_timeouts(c->bev, setup ? &c->s->connect_timeout : &c->s->timeout,
                             setup ? &c->s->connect_timeout : &c->s->timeout);
}

/* The message, dot-stuffed, and the end of data. */
static void send_data(conn_t *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const char *p = c->x->data, *end = p + c->x->len;
    if (p < end && *p == '.')
        evbuffer_add(out, ".", 1);
    while (p < end) {
        const char *nl = memmem(p, (size_t)(end - p), "\r\n.", 3);
        if (nl == NULL) {
            evbuffer_add(out, p, (size_t)(end - p));
            break;
        }
        evbuffer_add(out, p, (size_t)(nl - p) + 3);
        evbuffer_add(out, ".", 1);
        p = nl + 3;
    }
    if (c->x->len < 2 || memcmp(end - 2, "\r\n", 2) != 0)
        evbuffer_add(out, "\r\n", 2);
    evbuffer_add(out, ".\r\n", 3);
    c->state = C_DOT;
    c->code = 0;
    bufferevent_set_timeouts(c->bev, &c->s->timeout, &c->s->timeout);
}

/* Start x on the idle connection c. */
static void xact_start(conn_t *c, xact_t *x)
{
    c->x = x;
    send_line(c, C_MAIL, "MAIL FROM:<%s>", x->from);
}

/* c is set up or finished a transaction: take the next waiting one, or rest (no timeout, but
 * still reading, so that a server closing an idle connection is noticed). */
static void conn_idle(conn_t *c)
{
    nt_email_smtp_t *s = c->s;
    c->reused = c->state == C_DOT || c->state == C_RSET || c->reused;
    c->state = C_IDLE;
    c->x = NULL;
    if (s->whead != NULL) {
        xact_t *x = s->whead;
        s->whead = x->next;
        if (s->whead == NULL)
            s->wtail = NULL;
        x->next = NULL;
        xact_start(c, x);
        return;
    }
    bufferevent_set_timeouts(c->bev, NULL, NULL);
}

/* c is set up: start the transaction it was opened for, or rest. */
static void conn_ready(conn_t *c)
{
    if (c->x != NULL)
        xact_start(c, c->x);
    else
        conn_idle(c);
}

static void b64(const char *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)n);
}

/* After EHLO (or HELO): STARTTLS, AUTH, or ready. Returns 0, or -1 when c was closed. */
static int after_ehlo(conn_t *c)
{
    nt_email_smtp_t *s = c->s;
    if (!c->tls && s->tls != NT_EMAIL_TLS_NO && c->ext_starttls) {
        send_line(c, C_STARTTLS, "STARTTLS");
        return 0;
    }
    if (!c->tls && s->tls == NT_EMAIL_TLS_YES) {
        conn_close(c, NT_EUNAVAIL, "the server offers no STARTTLS (channel.email.starttls yes)");
        return -1;
    }
    if (s->user == NULL) {
        conn_ready(c);
        return 0;
    }
    if (c->ext_plain) {
        size_t nu = strlen(s->user), np = strlen(s->password != NULL ? s->password : "");
        char *raw = malloc(nu + np + 3), *enc = malloc(4 * ((nu + np + 4) / 3) + 1);
        if (raw == NULL || enc == NULL) {
            free(raw);
            free(enc);
            conn_close(c, NT_EUNAVAIL, "out of memory");
            return -1;
        }
        raw[0] = '\0';
        memcpy(raw + 1, s->user, nu);
        raw[nu + 1] = '\0';
        memcpy(raw + nu + 2, s->password != NULL ? s->password : "", np);
        b64(raw, nu + np + 2, enc);
        send_line(c, C_AUTH_PLAIN, "AUTH PLAIN %s", enc);
        OPENSSL_cleanse(raw, nu + np + 2);
        free(raw);
        free(enc);
        return 0;
    }
    if (c->ext_login) {
        send_line(c, C_AUTH_USER, "AUTH LOGIN");
        return 0;
    }
    conn_close(c, NT_EUNAVAIL, "the server offers no AUTH PLAIN or LOGIN");
    return -1;
}

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

static SSL *ssl_for(nt_email_smtp_t *s)
{
    if (s->ssl == NULL) {
        /* libevent_openssl makes its BIO method once per process and keeps it: pin the library
         * so that unloading this plugin does not orphan it (a leak for LeakSanitizer). */
        Dl_info di;
        if (dladdr((void *)bufferevent_openssl_filter_new, &di) != 0 && di.dli_fname != NULL)
            (void)dlopen(di.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
        s->ssl = SSL_CTX_new(TLS_client_method());
        if (s->ssl == NULL)
            return NULL;
        SSL_CTX_set_min_proto_version(s->ssl, TLS1_2_VERSION);
        if (s->ca_file != NULL)
            SSL_CTX_load_verify_locations(s->ssl, s->ca_file, NULL);
        else
            SSL_CTX_set_default_verify_paths(s->ssl);
        SSL_CTX_set_verify(s->ssl, SSL_VERIFY_PEER, NULL);
    }
    SSL *ssl = SSL_new(s->ssl);
    if (ssl == NULL)
        return NULL;
    unsigned char addr[16];
    if (inet_pton(AF_INET, s->hostname, addr) == 1 || inet_pton(AF_INET6, s->hostname, addr) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), s->hostname);
    } else {
        SSL_set_tlsext_host_name(ssl, s->hostname);
        SSL_set1_host(ssl, s->hostname);
    }
    return ssl;
}

/* STARTTLS accepted: the rest of the connection goes through TLS. Returns 0 or -1 (closed). */
static int start_tls(conn_t *c)
{
    SSL *ssl = ssl_for(c->s);
    struct bufferevent *f =
        ssl != NULL ? bufferevent_openssl_filter_new(c->s->base, c->bev, ssl,
                                                     BUFFEREVENT_SSL_CONNECTING,
                                                     BEV_OPT_CLOSE_ON_FREE)
                    : NULL;
    if (f == NULL) {
        if (ssl != NULL)
            SSL_free(ssl);
        conn_close(c, NT_EUNAVAIL, "cannot start TLS");
        return -1;
    }
    c->bev = f;
    c->state = C_TLS;
    bufferevent_setcb(f, on_read, NULL, on_event, c);
    bufferevent_set_timeouts(f, &c->s->connect_timeout, &c->s->connect_timeout);
    bufferevent_enable(f, EV_READ | EV_WRITE);
    return 0;
}

/* "<step>: <code> <text>" for a detail. */
static char *answer(const conn_t *c, const char *step)
{
    return nt_msgf("%s: %d %s", step, c->code, c->text);
}

/* The transaction on c failed at step with the answer in c: complete it and reset the
 * connection. Returns 0. */
static int xact_refused(conn_t *c, const char *step, nt_rc_t rc, const char *outcome)
{
    char *why = answer(c, step);
    xact_t *x = c->x;
    c->x = NULL;
    send_line(c, C_RSET, "RSET");
    xact_done(c->s, x, rc, outcome, why != NULL ? why : step);
    free(why);
    return 0;
}

/* One complete answer (c->code, c->text). Returns 0, or -1 when c was closed. */
static int on_answer(conn_t *c)
{
    int code = c->code, ok = code >= 200 && code <= 399;
    nt_rc_t perm = code >= 500 ? NT_EPERMFAIL : NT_EUNAVAIL;
    char *why;
    switch (c->state) {
    case C_GREET:
        if (code == 220) {
            send_line(c, C_EHLO, "EHLO %s", c->s->ehlo);
            return 0;
        }
        break;
    case C_EHLO:
        if (code == 250)
            return after_ehlo(c);
        send_line(c, C_HELO, "HELO %s", c->s->ehlo);
        return 0;
    case C_HELO:
        if (code == 250)
            return after_ehlo(c);
        break;
    case C_STARTTLS:
        if (code == 220)
            return start_tls(c);
        if (c->s->tls == NT_EMAIL_TLS_YES)
            break;
        c->ext_starttls = 0; /* try: go on without TLS */
        return after_ehlo(c);
    case C_AUTH_USER:
    case C_AUTH_PASS:
        if (code == 334) {
            const char *v = c->state == C_AUTH_USER ? c->s->user : c->s->password;
            v = v != NULL ? v : "";
            char *enc = malloc(4 * ((strlen(v) + 2) / 3) + 1);
            if (enc == NULL)
                break;
            b64(v, strlen(v), enc);
            send_line(c, c->state == C_AUTH_USER ? C_AUTH_PASS : C_AUTH_DONE, "%s", enc);
            free(enc);
            return 0;
        }
        break;
    case C_AUTH_PLAIN:
    case C_AUTH_DONE:
        if (code == 235) {
            conn_ready(c);
            return 0;
        }
        break;
    case C_MAIL:
        if (code == 250) {
            send_line(c, C_RCPT, "RCPT TO:<%s>", c->x->to);
            return 0;
        }
        return xact_refused(c, "MAIL FROM", perm, NULL);
    case C_RCPT:
        if (code == 250 || code == 251) {
            send_line(c, C_DATA, "DATA");
            return 0;
        }
        /* 5xx: the server refuses the recipient for good, a hard bounce */
        if (code >= 500)
            return xact_refused(c, "RCPT TO", NT_OK, "bounced");
        return xact_refused(c, "RCPT TO", NT_EUNAVAIL, NULL);
    case C_DATA:
        if (code == 354) {
            send_data(c);
            return 0;
        }
        return xact_refused(c, "DATA", perm, NULL);
    case C_DOT: {
        xact_t *x = c->x;
        why = code == 250 ? NULL : answer(c, "after the data");
        conn_idle(c); /* may start the next waiting transaction on c */
        if (c->x == x)
            c->x = NULL;
        xact_done(c->s, x, code == 250 ? NT_OK : perm, "sent",
                  code == 250 ? NULL : why != NULL ? why : "after the data");
        free(why);
        return 0;
    }
    case C_RSET:
        if (ok) {
            conn_idle(c);
            return 0;
        }
        break;
    case C_IDLE:
        return 0; /* e.g. 421 before the server closes: the EOF follows */
    default:
        break;
    }
    why = answer(c, c->state < C_IDLE ? "connecting" : "answer");
    conn_close(c, NT_EUNAVAIL, why != NULL ? why : "unexpected answer");
    free(why);
    return -1;
}

/* An EHLO line: note the extensions we use. */
static void ehlo_line(conn_t *c, const char *ext)
{
    if (strncasecmp(ext, "STARTTLS", 8) == 0 && (ext[8] == '\0' || ext[8] == ' '))
        c->ext_starttls = 1;
    if (strncasecmp(ext, "AUTH", 4) == 0 && (ext[4] == ' ' || ext[4] == '=')) {
        for (const char *p = ext + 5; *p != '\0';) {
            size_t n = strcspn(p, " ");
            if (n == 5 && strncasecmp(p, "PLAIN", 5) == 0)
                c->ext_plain = 1;
            if (n == 5 && strncasecmp(p, "LOGIN", 5) == 0)
                c->ext_login = 1;
            p += n + (p[n] == ' ');
        }
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    conn_t *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    char *line;
    size_t n;
    while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) != NULL) {
        int bad = n < 3 || !isdigit((unsigned char)line[0]) ||
                  !isdigit((unsigned char)line[1]) || !isdigit((unsigned char)line[2]) ||
                  (n > 3 && line[3] != ' ' && line[3] != '-');
        int code = bad ? 0 : atoi(line);
        int last = !bad && (n == 3 || line[3] == ' ');
        if (!bad && c->code != 0 && code != c->code)
            bad = 1;
        if (bad) {
            free(line);
            conn_close(c, NT_EUNAVAIL, "the server's answer is not SMTP");
            return;
        }
        c->code = code;
        const char *t = n > 4 ? line + 4 : "";
        snprintf(c->text, sizeof(c->text), "%s", t);
        for (char *p = c->text; *p != '\0'; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = ' ';
        if (c->state == C_EHLO && code == 250)
            ehlo_line(c, t);
        free(line);
        if (last && on_answer(c) != 0)
            return;
    }
    if (evbuffer_get_length(in) > REPLY_LINE_MAX)
        conn_close(c, NT_EUNAVAIL, "the server's answer line is too long");
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    conn_t *c = arg;
    char why[256];
    if (what & BEV_EVENT_CONNECTED) {
        if (c->state == C_TLS) {
            /* STARTTLS done: forget what was offered in the clear and ask again */
            c->tls = 1;
            c->ext_starttls = c->ext_plain = c->ext_login = 0;
            send_line(c, C_EHLO, "EHLO %s", c->s->ehlo);
        } else {
            c->tls = c->s->smtps;
            c->state = C_GREET;
        }
        return;
    }
    unsigned long e = bufferevent_get_openssl_error(bev);
    if (e != 0) {
        snprintf(why, sizeof(why), "TLS: %s", ERR_reason_error_string(e));
        ERR_clear_error(); /* what the handshake left on this thread's queue */
    } else if (what & BEV_EVENT_TIMEOUT) {
        snprintf(why, sizeof(why), "no answer within %ld ms%s",
                 (long)(c->state < C_IDLE ? c->s->connect_timeout.tv_sec * 1000 +
                                                c->s->connect_timeout.tv_usec / 1000
                                          : c->s->timeout.tv_sec * 1000 +
                                                c->s->timeout.tv_usec / 1000),
                 c->state < C_IDLE ? " while connecting" : "");
    } else if (c->state == C_CONNECT && (what & BEV_EVENT_ERROR) &&
               bufferevent_socket_get_dns_error(bev) != 0) {
        snprintf(why, sizeof(why), "cannot resolve %s: %s", c->s->hostname,
                 evutil_gai_strerror(bufferevent_socket_get_dns_error(bev)));
    } else if (c->state == C_CONNECT) {
        snprintf(why, sizeof(why), "cannot connect to %s:%d: %s", c->s->hostname, c->s->port,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    } else {
        snprintf(why, sizeof(why), "the server closed the connection");
    }
    conn_close(c, NT_EUNAVAIL, why);
}

/* A new connection, with x (may be NULL) to start once it is set up. Returns 0 or -1. */
static int conn_open(nt_email_smtp_t *s, xact_t *x)
{
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    c->s = s;
    c->x = x;
    c->state = C_CONNECT;
    if (s->smtps) {
        SSL *ssl = ssl_for(s);
        c->bev = ssl != NULL ? bufferevent_openssl_socket_new(s->base, -1, ssl,
                                                              BUFFEREVENT_SSL_CONNECTING,
                                                              BEV_OPT_CLOSE_ON_FREE)
                             : NULL;
        if (c->bev == NULL && ssl != NULL)
            SSL_free(ssl);
    } else {
        c->bev = bufferevent_socket_new(s->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (c->bev == NULL) {
        free(c);
        return -1;
    }
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_set_timeouts(c->bev, &s->connect_timeout, &s->connect_timeout);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    if (bufferevent_socket_connect_hostname(c->bev, s->dns, AF_UNSPEC, s->hostname, s->port) !=
        0) {
        /* The error event may have closed c already (and completed x): then x is done. */
        for (conn_t *k = s->conns; k != NULL; k = k->next) {
            if (k == c) {
                c->x = NULL;
                conn_unlink(c);
                bufferevent_free(c->bev);
                free(c);
                return -1;
            }
        }
    }
    return 0;
}

/* Hand waiting transactions to idle connections, or open connections for them. */
static void pump(nt_email_smtp_t *s)
{
    while (s->whead != NULL) {
        conn_t *idle = NULL;
        for (conn_t *c = s->conns; c != NULL && idle == NULL; c = c->next)
            if (c->state == C_IDLE && c->x == NULL)
                idle = c;
        if (idle == NULL && s->nconns >= s->max_conns)
            return;
        xact_t *x = s->whead;
        s->whead = x->next;
        if (s->whead == NULL)
            s->wtail = NULL;
        x->next = NULL;
        if (idle != NULL) {
            xact_start(idle, x);
        } else if (conn_open(s, x) != 0) {
            xact_done(s, x, NT_EUNAVAIL, NULL, "cannot open a connection");
        }
    }
}

int nt_email_smtp_ready(const nt_email_smtp_t *s)
{
    return s->ntx < s->max_conns;
}

int nt_email_smtp_send(nt_email_smtp_t *s, const char *msgid, const char *from, const char *to,
                       const char *data, size_t len, nt_channel_done_fn *done, void *done_arg)
{
    if (s->ntx >= s->max_conns)
        return -1;
    xact_t *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return -1;
    *x = (xact_t){msgid, from, to, data, len, done, done_arg, NULL};
    s->ntx++;
    for (conn_t *c = s->conns; c != NULL; c = c->next) {
        if (c->state == C_IDLE && c->x == NULL) {
            xact_start(c, x);
            return 0;
        }
    }
    if (s->nconns < s->max_conns) {
        if (conn_open(s, x) != 0) {
            s->ntx--;
            free(x);
            return -1;
        }
        return 0;
    }
    /* every connection is busy (or resetting): the first to be free takes it */
    if (s->wtail != NULL)
        s->wtail->next = x;
    else
        s->whead = x;
    s->wtail = x;
    return 0;
}

nt_email_smtp_t *nt_email_smtp_new(const nt_channel_host_t *host, const nt_email_smtp_cfg_t *cfg,
                                   char **errmsg)
{
    nt_email_smtp_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto oom;
    s->host = host;
    s->base = host->event_base;
    s->smtps = strncmp(cfg->url, "smtps://", 8) == 0;
    if (!s->smtps && strncmp(cfg->url, "smtp://", 7) != 0) {
        *errmsg = nt_msgf("email: channel.email.smtp_url must start with smtp:// or "
                          "smtps://");
        goto fail;
    }
    const char *h = cfg->url + (s->smtps ? 8 : 7);
    const char *end = h + strcspn(h, "/?#");
    const char *colon = NULL;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (rb == NULL)
            goto bad_url;
        s->hostname = strndup(h + 1, (size_t)(rb - h - 1));
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        s->hostname = strndup(h, (size_t)((colon != NULL ? colon : end) - h));
    }
    if (s->hostname == NULL)
        goto oom;
    s->port = s->smtps ? 465 : 25;
    if (colon != NULL) {
        char *e;
        long p = strtol(colon + 1, &e, 10);
        if (e != end || p < 1 || p > 65535)
            goto bad_url;
        s->port = (int)p;
    }
    if (s->hostname[0] == '\0' || strpbrk(s->hostname, " @\r\n\t") != NULL)
        goto bad_url;
    s->user = cfg->user != NULL ? strdup(cfg->user) : NULL;
    s->password = cfg->password != NULL ? strdup(cfg->password) : NULL;
    s->ca_file = cfg->ca_file != NULL ? strdup(cfg->ca_file) : NULL;
    if ((cfg->user != NULL && s->user == NULL) ||
        (cfg->password != NULL && s->password == NULL) ||
        (cfg->ca_file != NULL && s->ca_file == NULL))
        goto oom;
    if (s->user != NULL && strpbrk(s->user, "\r\n") != NULL) {
        *errmsg = nt_msgf("email: channel.email.smtp_user must be one line");
        goto fail;
    }
    s->tls = cfg->tls;
    ms_tv(&s->timeout, cfg->timeout_ms);
    ms_tv(&s->connect_timeout, cfg->connect_timeout_ms);
    s->max_conns = cfg->max_conns > 0 ? cfg->max_conns : 1;
    if (gethostname(s->ehlo, sizeof(s->ehlo)) != 0 || s->ehlo[0] == '\0' ||
        strpbrk(s->ehlo, " \r\n") != NULL)
        snprintf(s->ehlo, sizeof(s->ehlo), "localhost");
    s->ehlo[sizeof(s->ehlo) - 1] = '\0';
    s->dns = evdns_base_new(s->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                         EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (s->dns == NULL)
        s->dns = evdns_base_new(s->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (s->dns == NULL)
        goto oom;
    return s;
bad_url:
    *errmsg =
        nt_msgf("email: channel.email.smtp_url '%.120s' is not smtp[s]://host[:port]", cfg->url);
    goto fail;
oom:
    *errmsg = nt_msgf("email: out of memory");
fail:
    nt_email_smtp_free(s);
    return NULL;
}

void nt_email_smtp_free(nt_email_smtp_t *s)
{
    if (s == NULL)
        return;
    while (s->whead != NULL) {
        xact_t *x = s->whead;
        s->whead = x->next;
        xact_done(s, x, NT_ECANCELED, NULL, "shutting down");
    }
    s->wtail = NULL;
    while (s->conns != NULL) {
        conn_t *c = s->conns;
        xact_t *x = c->x;
        conn_unlink(c);
        bufferevent_free(c->bev);
        free(c);
        if (x != NULL)
            xact_done(s, x, NT_ECANCELED, NULL, "shutting down");
    }
    if (s->dns != NULL)
        evdns_base_free(s->dns, 1);
    if (s->ssl != NULL)
        SSL_CTX_free(s->ssl);
    free(s->hostname);
    free(s->ca_file);
    free(s->user);
    if (s->password != NULL)
        OPENSSL_cleanse(s->password, strlen(s->password));
    free(s->password);
    free(s);
}
