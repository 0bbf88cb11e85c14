/* libcurl multi on libevent, after curl's docs/examples/hiperfifo.c. */
#include <stdlib.h>

#include <event2/event.h>

#include "curlm.h"
#include "log.h"

typedef struct xfer xfer_t;
struct xfer {
    CURL *easy;
    nt_curlm_done_fn *done;
    void *arg;
    xfer_t *prev, *next;
};

typedef struct sock {
    struct event *ev;
    nt_curlm_t *m;
} sock_t;

struct nt_curlm {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    int running;
    xfer_t *xfers;           /* in flight */
};

static void xfer_unlink(nt_curlm_t *m, xfer_t *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        m->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
}

static void drain(nt_curlm_t *m)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(m->multi, &left))) {
        CURL *easy;
        xfer_t *x = NULL;
        CURLcode res;

        if (msg->msg != CURLMSG_DONE)
            continue;
        easy = msg->easy_handle;
        res = msg->data.result;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        curl_multi_remove_handle(m->multi, easy);
        if (x) {
            xfer_unlink(m, x);
            x->done(easy, res, x->arg);
            free(x);
        }
    }
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    sock_t *s = arg;
    /* curl_multi_socket_action may free s (CURL_POLL_REMOVE): only m is used after it. */
    nt_curlm_t *m = s->m;
    int flags = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);

    curl_multi_socket_action(m->multi, fd, flags, &m->running);
    drain(m);
    if (m->running <= 0 && evtimer_pending(m->timer, NULL))
        evtimer_del(m->timer);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    nt_curlm_t *m = userp;
    sock_t *s = socketp;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            event_free(s->ev);
            free(s);
            curl_multi_assign(m->multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        s->m = m;
        curl_multi_assign(m->multi, fd, s);
    } else {
        event_free(s->ev);
    }
    s->ev = event_new(m->base, fd,
                      (short)((what & CURL_POLL_IN ? EV_READ : 0) |
                              (what & CURL_POLL_OUT ? EV_WRITE : 0) | EV_PERSIST),
                      on_socket_event, s);
    if (s->ev)
        event_add(s->ev, NULL);
    return 0;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    nt_curlm_t *m = arg;

    (void)fd;
    (void)what;
    curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &m->running);
    drain(m);
}

/* curl's timer callback must not call back into curl: a 0 ms timeout becomes a zero-delay
 * event, never a direct curl_multi_socket_action. */
static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    nt_curlm_t *m = userp;
    struct timeval tv;

    (void)multi;
    if (timeout_ms < 0) {
        evtimer_del(m->timer);
        return 0;
    }
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    evtimer_add(m->timer, &tv);
    return 0;
}

nt_curlm_t *nt_curlm_new(struct event_base *base)
{
    nt_curlm_t *m = calloc(1, sizeof(*m));

    if (!m)
        return NULL;
    m->base = base;
    m->multi = curl_multi_init();
    m->timer = evtimer_new(base, on_timeout, m);
    if (!m->multi || !m->timer) {
        nt_curlm_free(m);
        return NULL;
    }
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
    return m;
}

void nt_curlm_free(nt_curlm_t *m)
{
    if (!m)
        return;
    if (m->multi) {
        xfer_t *x;

        while ((x = m->xfers)) {
            xfer_unlink(m, x);
            curl_multi_remove_handle(m->multi, x->easy);
            x->done(x->easy, CURLE_ABORTED_BY_CALLBACK, x->arg);
            free(x);
        }
        curl_multi_cleanup(m->multi);
    }
    if (m->timer)
        event_free(m->timer);
    free(m);
}

CURLM *nt_curlm_handle(nt_curlm_t *m)
{
    return m->multi;
}

int nt_curlm_add(nt_curlm_t *m, CURL *easy, nt_curlm_done_fn *done, void *arg)
{
    xfer_t *x = calloc(1, sizeof(*x));

    if (!x)
        return -1;
    x->easy = easy;
    x->done = done;
    x->arg = arg;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
    if (curl_multi_add_handle(m->multi, easy) != CURLM_OK) {
        free(x);
        return -1;
    }
    x->next = m->xfers;
    if (m->xfers)
        m->xfers->prev = x;
    m->xfers = x;
    return 0;
}
