/* libcurl's multi interface driven by the daemon's libevent loop (the hiperfifo pattern):
 * curl's socket callback maps to persistent libevent events, its timer callback to one
 * libevent timer, and finished transfers are handed to each easy handle's completion. */
#ifndef NT_CURLM_H
#define NT_CURLM_H

#include <curl/curl.h>

struct event_base;
typedef struct nt_curlm nt_curlm_t;

/* Called once per transfer added with nt_curlm_add, when it ends (result is curl's code). */
typedef void nt_curlm_done_fn(CURL *easy, CURLcode result, void *arg);

nt_curlm_t *nt_curlm_new(struct event_base *base);

/* Aborts transfers in flight (their completions fire with CURLE_ABORTED_BY_CALLBACK). */
void nt_curlm_free(nt_curlm_t *m);

/* The CURLM handle, for plugins that manage their own easy handles' completion through
 * CURLOPT_PRIVATE = a nt_curlm_done_fn-compatible record: use nt_curlm_add instead. */
CURLM *nt_curlm_handle(nt_curlm_t *m);

/* Start easy (configured by the caller); done fires once when it ends. Returns 0 or -1. */
int nt_curlm_add(nt_curlm_t *m, CURL *easy, nt_curlm_done_fn *done, void *arg);

#endif
