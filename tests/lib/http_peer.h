/* A recording HTTP peer for tests: an evhttp server on 127.0.0.1:<free port>, run by a thread of
 * its own with its own event_base, that keeps every request it receives (method, path,
 * Content-Type, headers, body and the status it answered) and answers each with a fixed status
 * and JSON body, or with the statuses queued by nt_test_peer_answer first. For webhooks that
 * nurtured or a plugin calls (a manager's escalation webhook, a provider): the test starts the
 * peer, points the configuration at nt_test_peer_url(), and asserts on what arrived. */
#ifndef NT_TEST_HTTP_PEER_H
#define NT_TEST_HTTP_PEER_H

#include <stddef.h>

typedef struct nt_test_peer nt_test_peer_t;

/* One request as received (copies; nt_test_peer_req_fini frees them). */
typedef struct nt_test_peer_req {
    char *method;       /* "POST", "GET", ... */
    char *path;         /* the URI as sent, with its query */
    char *content_type; /* "" when none */
    char *headers;      /* every header as "Name: value\n", in the order received */
    char *body;         /* NUL-terminated */
    size_t len;
    int status; /* what the peer answered */
} nt_test_peer_req_t;

/* Start the peer; every request is answered with status and body (a JSON text, "{}" when
 * NULL). Returns NULL when it cannot listen. */
nt_test_peer_t *nt_test_peer_start(int status, const char *body);

/* The same on 127.0.0.1:port (0: a free one), e.g. to bring a stopped peer back on its URL.
 * Returns NULL when it cannot listen there. */
nt_test_peer_t *nt_test_peer_start_on(int port, int status, const char *body);

/* The port the peer listens on. */
int nt_test_peer_port(const nt_test_peer_t *p);

/* Answer the next n requests with statuses[0..n-1] (in order), then with the fixed status
 * again. Returns 0, or -1 out of memory. */
int nt_test_peer_answer(nt_test_peer_t *p, const int *statuses, size_t n);

/* "http://127.0.0.1:<port>" (owned by the peer). */
const char *nt_test_peer_url(const nt_test_peer_t *p);

/* How many requests arrived so far. */
size_t nt_test_peer_count(nt_test_peer_t *p);

/* Wait until at least n requests arrived. Returns 0, or -1 after timeout_ms. */
int nt_test_peer_wait(nt_test_peer_t *p, size_t n, int timeout_ms);

/* Copy the i-th request (from 0) into out. Returns 0, or -1 when there is none. */
int nt_test_peer_request(nt_test_peer_t *p, size_t i, nt_test_peer_req_t *out);

/* Answer each request only ms milliseconds after it arrived (0: at once), to keep a client's
 * request in flight. The peer's thread sleeps meanwhile: requests are answered one by one. */
void nt_test_peer_delay(nt_test_peer_t *p, int ms);

/* The value of header name (case-insensitive) in r, malloc'd; NULL when absent. */
char *nt_test_peer_header(const nt_test_peer_req_t *r, const char *name);

void nt_test_peer_req_fini(nt_test_peer_req_t *r);

/* Stop the server (its port is closed on return) and free everything. NULL is a no-op. */
void nt_test_peer_stop(nt_test_peer_t *p);

#endif
