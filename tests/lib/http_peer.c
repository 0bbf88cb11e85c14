/* The recording HTTP peer (http_peer.h). */
#include "http_peer.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>

struct nt_test_peer {
    struct event_base *base;
    struct evhttp *http;
    struct event *stop; /* activated by nt_test_peer_stop: breaks the loop in its thread */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int status;
    int *queued; /* statuses for the next requests (nt_test_peer_answer) */
    size_t nqueued;
    int delay_ms; /* nt_test_peer_delay */
    char *answer;
    int port;
    char url[64];
    nt_test_peer_req_t *reqs;
    size_t n, cap;
};

static char *dup_or_empty(const char *s)
{
    return strdup(s != NULL ? s : "");
}

static const char *method_name(enum evhttp_cmd_type c)
{
    switch (c) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "OTHER";
    }
}

static void on_request(struct evhttp_request *req, void *arg)
{
    nt_test_peer_t *p = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req), *out;
    size_t len = evbuffer_get_length(in);
    nt_test_peer_req_t r = {0};
    struct evkeyval *h;
    size_t hlen = 1;
    int status, delay;

    r.method = strdup(method_name(evhttp_request_get_command(req)));
    r.path = dup_or_empty(evhttp_request_get_uri(req));
    r.content_type =
        dup_or_empty(evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type"));
    r.body = malloc(len + 1);
    if (r.body != NULL) {
        evbuffer_copyout(in, r.body, len);
        r.body[len] = '\0';
        r.len = len;
    }
    TAILQ_FOREACH(h, evhttp_request_get_input_headers(req), next)
    {
        hlen += strlen(h->key) + strlen(h->value) + 3;
    }
    r.headers = malloc(hlen);
    if (r.headers != NULL) {
        r.headers[0] = '\0';
        TAILQ_FOREACH(h, evhttp_request_get_input_headers(req), next)
        {
            strcat(r.headers, h->key);
            strcat(r.headers, ": ");
            strcat(r.headers, h->value);
            strcat(r.headers, "\n");
        }
    }
    pthread_mutex_lock(&p->mu);
    status = p->status;
    if (p->nqueued > 0) {
        status = p->queued[0];
        memmove(p->queued, p->queued + 1, --p->nqueued * sizeof(*p->queued));
    }
    r.status = status;
    delay = p->delay_ms;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        nt_test_peer_req_t *v = realloc(p->reqs, cap * sizeof(*v));

        if (v != NULL) {
            p->reqs = v;
            p->cap = cap;
        }
    }
    if (p->n < p->cap && r.method && r.path && r.content_type && r.headers && r.body) {
        p->reqs[p->n++] = r;
        pthread_cond_broadcast(&p->cv);
    } else {
        nt_test_peer_req_fini(&r);
    }
    pthread_mutex_unlock(&p->mu);
    if (delay > 0)
        usleep((useconds_t)delay * 1000);
    out = evbuffer_new();
    if (out != NULL)
        evbuffer_add(out, p->answer, strlen(p->answer));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, status < 300 ? "OK" : "Error", out);
    if (out != NULL)
        evbuffer_free(out);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

static void *run(void *arg)
{
    nt_test_peer_t *p = arg;

    event_base_dispatch(p->base);
    return NULL;
}

nt_test_peer_t *nt_test_peer_start(int status, const char *body)
{
    return nt_test_peer_start_on(0, status, body);
}

nt_test_peer_t *nt_test_peer_start_on(int port, int status, const char *body)
{
    nt_test_peer_t *p = calloc(1, sizeof(*p));
    struct evhttp_bound_socket *sock;

    if (p == NULL)
        return NULL;
    /* The stop event is activated from the test's thread: the base must be lockable. */
    evthread_use_pthreads();
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->status = status;
    p->answer = strdup(body != NULL ? body : "{}");
    p->base = event_base_new();
    p->http = p->base != NULL ? evhttp_new(p->base) : NULL;
    p->stop = p->base != NULL ? event_new(p->base, -1, 0, on_stop, p->base) : NULL;
    if (p->answer == NULL || p->http == NULL || p->stop == NULL)
        goto fail;
    sock = evhttp_bind_socket_with_handle(p->http, "127.0.0.1", (ev_uint16_t)port);
    if (sock == NULL)
        goto fail;
    {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        evutil_socket_t fd = evhttp_bound_socket_get_fd(sock);

        if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 || ss.ss_family != AF_INET)
            goto fail;
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    p->port = port;
    snprintf(p->url, sizeof(p->url), "http://127.0.0.1:%d", port);
    evhttp_set_gencb(p->http, on_request, p);
    if (pthread_create(&p->thread, NULL, run, p) != 0)
        goto fail;
    return p;
fail:
    if (p->stop != NULL)
        event_free(p->stop);
    if (p->http != NULL)
        evhttp_free(p->http);
    if (p->base != NULL)
        event_base_free(p->base);
    free(p->answer);
    free(p);
    return NULL;
}

const char *nt_test_peer_url(const nt_test_peer_t *p)
{
    return p->url;
}

int nt_test_peer_port(const nt_test_peer_t *p)
{
    return p->port;
}

void nt_test_peer_delay(nt_test_peer_t *p, int ms)
{
    pthread_mutex_lock(&p->mu);
    p->delay_ms = ms;
    pthread_mutex_unlock(&p->mu);
}

int nt_test_peer_answer(nt_test_peer_t *p, const int *statuses, size_t n)
{
    int rc = -1;
    int *v;

    pthread_mutex_lock(&p->mu);
    v = realloc(p->queued, (p->nqueued + n + 1) * sizeof(*v));
    if (v != NULL) {
        p->queued = v;
        memcpy(v + p->nqueued, statuses, n * sizeof(*v));
        p->nqueued += n;
        rc = 0;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

size_t nt_test_peer_count(nt_test_peer_t *p)
{
    size_t n;

    pthread_mutex_lock(&p->mu);
    n = p->n;
    pthread_mutex_unlock(&p->mu);
    return n;
}

int nt_test_peer_wait(nt_test_peer_t *p, size_t n, int timeout_ms)
{
    struct timespec until;
    int rc = 0;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mu);
    while (p->n < n && rc == 0)
        rc = pthread_cond_timedwait(&p->cv, &p->mu, &until);
    rc = p->n >= n ? 0 : -1;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int nt_test_peer_request(nt_test_peer_t *p, size_t i, nt_test_peer_req_t *out)
{
    int rc = -1;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&p->mu);
    if (i < p->n) {
        const nt_test_peer_req_t *r = &p->reqs[i];

        out->method = strdup(r->method);
        out->path = strdup(r->path);
        out->content_type = strdup(r->content_type);
        out->headers = strdup(r->headers);
        out->status = r->status;
        out->body = malloc(r->len + 1);
        if (out->body != NULL) {
            memcpy(out->body, r->body, r->len + 1);
            out->len = r->len;
        }
        rc = out->method && out->path && out->content_type && out->headers && out->body ? 0 : -1;
    }
    pthread_mutex_unlock(&p->mu);
    if (rc != 0)
        nt_test_peer_req_fini(out);
    return rc;
}

char *nt_test_peer_header(const nt_test_peer_req_t *r, const char *name)
{
    size_t n = strlen(name);

    for (const char *l = r->headers; l != NULL && *l; l = strchr(l, '\n') + 1) {
        const char *end = strchr(l, '\n');

        if (end == NULL)
            break;
        if (strncasecmp(l, name, n) == 0 && l[n] == ':' && l[n + 1] == ' ')
            return strndup(l + n + 2, (size_t)(end - (l + n + 2)));
    }
    return NULL;
}

void nt_test_peer_req_fini(nt_test_peer_req_t *r)
{
    free(r->method);
    free(r->path);
    free(r->content_type);
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

void nt_test_peer_stop(nt_test_peer_t *p)
{
    if (p == NULL)
        return;
    /* An activation waits for the loop even when it has not started yet. */
    event_active(p->stop, EV_READ, 0);
    pthread_join(p->thread, NULL);
    event_free(p->stop);
    evhttp_free(p->http);
    event_base_free(p->base);
    for (size_t i = 0; i < p->n; i++)
        nt_test_peer_req_fini(&p->reqs[i]);
    free(p->reqs);
    free(p->queued);
    free(p->answer);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
