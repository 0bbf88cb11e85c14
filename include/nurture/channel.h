/**
 * @file channel.h
 * @brief The channel plugin ABI.
 *
 * A channel plugin is a shared object in the modules directory named `nt_<name>.so`. It exports
 * one symbol, `nt_channel_entry`, returning a pointer to a constant nt_channel_ops_t. The host
 * reads `abi_version` first and refuses the plugin, with a log line saying both versions, when it
 * differs from NT_CHANNEL_ABI_VERSION; it reads only the fields that `size` says exist.
 *
 * Plugins run on the daemon's single event loop and must never block it: network work goes
 * through the loop (libevent), the host's curl multi handle and the host's Redis connection.
 * A plugin reaches the daemon only through nt_channel_host_t; it never links to daemon symbols.
 */
#ifndef NURTURE_CHANNEL_H
#define NURTURE_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "nurture/msgf.h" /* nt_msgf, for the hooks' errmsg and details */
#include "nurture/rc.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Bumped on any incompatible change of the structs below. */
#define NT_CHANNEL_ABI_VERSION 1

/** Name of the symbol every plugin exports. */
#define NT_CHANNEL_ENTRY_SYMBOL "nt_channel_entry"

/** Log levels for nt_channel_host_t.log. */
typedef enum nt_log_level {
    NT_LOG_DEBUG = 0,
    NT_LOG_INFO = 1,
    NT_LOG_WARN = 2,
    NT_LOG_ERROR = 3,
} nt_log_level_t;

/** A name/value pair; both NUL-terminated and borrowed. */
typedef struct nt_kv {
    const char *key;   /**< name */
    const char *value; /**< value */
} nt_kv_t;

/** One message handed to a channel. Everything is borrowed until `done` is called. */
typedef struct nt_message {
    const char *id;           /**< idempotency key: the same for every delivery attempt */
    const char *lead_id;      /**< the lead */
    const char *plan_id;      /**< the plan */
    uint32_t plan_version;    /**< the plan version the run is on */
    const char *node_id;      /**< the send node */
    uint32_t visit;           /**< the run's step counter when it entered the node */
    const nt_kv_t *params;    /**< the node's channel parameters */
    size_t nparams;           /**< number of params */
    const nt_kv_t *lead;      /**< the lead's attributes at commit time (score, stage included) */
    size_t nlead;             /**< number of lead attributes */
    int attempt;              /**< 1 for the first delivery attempt */
} nt_message_t;

/**
 * Completion of nt_channel_ops_t.dispatch, called exactly once per dispatch.
 * @param arg     the done_arg given to dispatch
 * @param rc      NT_OK: accepted; NT_EUNAVAIL/NT_ETIMEOUT: transient, retry later;
 *                NT_EPERMFAIL or any other error: permanent, the node leaves by "failed"
 * @param outcome on NT_OK the outcome to report ("sent" when NULL)
 * @param detail  human-readable detail for the timeline, or NULL
 */
typedef void nt_channel_done_fn(void *arg, nt_rc_t rc, const char *outcome, const char *detail);

/** Services the host lends to a plugin; valid from init to shutdown. */
typedef struct nt_channel_host {
    uint32_t abi_version; /**< NT_CHANNEL_ABI_VERSION of the host */
    uint32_t size;        /**< sizeof(nt_channel_host_t) of the host */
    /** Log a line under the plugin's name. */
    void (*log)(nt_log_level_t level, const char *channel, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
    /** Configuration value `channel.<name>.<key>`, or def when unset. Borrowed. */
    const char *(*config)(const char *channel, const char *key, const char *def);
    void *event_base;     /**< the loop's struct event_base * */
    void *curl_multi;     /**< the loop's CURLM * (socket API driven by the loop) */
    void *redis;          /**< the loop's redisAsyncContext * (may be NULL while disconnected) */
    const char *data_dir; /**< the daemon's data directory */
    /** Current time in ms on the daemon's (possibly scaled) clock. */
    int64_t (*now_ms)(void);
    /**
     * Post an event for a lead as if it came through the events API (outcomes arriving later,
     * such as a call completed or an attendance). Asynchronous; returns NT_OK when queued.
     */
    nt_rc_t (*post_event)(const char *lead_id, const char *type, const nt_kv_t *attrs,
                          size_t nattrs);
    /**
     * Start a libcurl transfer on the loop's multi handle. Appended after post_event: read it
     * only when `size` covers it (`size >= offsetof(nt_channel_host_t, curl_add) +
     * sizeof(void *)`) and it is not NULL.
     *
     * `easy` is a CURL * the plugin created and configured; it must not set CURLOPT_PRIVATE,
     * which the host uses for its own record. Returns 0 when the transfer started, after which
     * `done` fires exactly once on the loop with curl's CURLcode (CURLE_OK = 0) and `arg`; the
     * plugin then owns `easy` again (curl_easy_getinfo works, curl_easy_cleanup is its job).
     * Returns -1 when the transfer could not start (done never fires).
     *
     * Shutdown: transfers still in flight when the plugin's shutdown hook runs are the host's.
     * The plugin must not clean up such an easy handle (nor call done's work); it may call
     * curl_multi_remove_handle(curl_multi, easy) to stop it and free what the handle points to.
     * The host cleans those handles up later and never calls a done of an unloaded plugin.
     */
    int (*curl_add)(void *easy, void (*done)(void *easy, int curl_code, void *arg), void *arg);
    /**
     * Create a call task for msg in the daemon's task store (plugins have no Redis handle).
     * Appended after curl_add: read it only when `size >= offsetof(nt_channel_host_t,
     * create_task) + sizeof(void *)` and it is not NULL.
     *
     * `fields` describe the task (all optional, borrowed for the call only): "reason" (the
     * reason in words, placeholders already filled), "points" (talking points), "priority"
     * (low|normal|high), "due_in_ms" and "sla_ms" (decimal milliseconds on the daemon's clock),
     * "team". The store routes the task (the lead's `owner`, else the team's reps by weighted
     * round-robin, else the team queue) and creates it at most once per msg->id.
     *
     * Returns NT_AGAIN, after which `done(done_arg, rc, outcome, detail)` fires exactly once on
     * the loop: NT_OK with outcome "task_created" (also when the task already existed), a
     * transient error (NT_EUNAVAIL, NT_ETIMEOUT) to be retried, NT_ECANCELED at shutdown, or
     * NT_EPERMFAIL for a message that can never become a task. Any other return: done never
     * fires. `done` may be the worker's own completion passed through: the host calls it even
     * after the plugin is shut down, never plugin code.
     */
    nt_rc_t (*create_task)(const nt_message_t *msg, const nt_kv_t *fields, size_t nfields,
                           nt_channel_done_fn *done, void *done_arg);
    /**
     * Set attributes on an existing lead (plugins have no Redis handle), validated and written
     * exactly as `PATCH /v1/leads/{id}` writes them (docs/api.md): names 1 to 64 of a-z 0-9 _
     * not starting with '_', values valid UTF-8 of at most 65,536 bytes, at most 1,000 pairs.
     * One atomic script writes them and posts `lead.updated` for the lead's active runs. A
     * message of that lead still in a channel (the one being dispatched) has its outcome
     * decided on the lead as written: a plugin that calls its dispatch's done only after this
     * write completed lets the run's next step see the attributes (an email template's
     * {{attribute}}). Appended after create_task: read it only when `size >=
     * offsetof(nt_channel_host_t, update_lead) + sizeof(void *)` and it is not NULL.
     *
     * `lead_id` and `attrs` are borrowed for the call only. Returns NT_AGAIN, after which
     * `done(arg, rc)` fires exactly once on the loop: NT_OK once written, NT_ENOTFOUND when
     * the lead does not exist (nothing is created), a transient error (NT_EUNAVAIL,
     * NT_ETIMEOUT) to be retried, or NT_ECANCELED at shutdown. Any other return: done never
     * fires (NT_EINVAL: a name, value or lead id the API would refuse, nothing written;
     * NT_EUNAVAIL: Redis is down). Once the plugin's shutdown hook has run the host never calls
     * done: the plugin completes, in shutdown, what still waits for a write.
     */
    nt_rc_t (*update_lead)(const char *lead_id, const nt_kv_t *attrs, size_t nattrs,
                           void (*done)(void *arg, nt_rc_t rc), void *arg);
} nt_channel_host_t;

/** Describes one channel parameter, for validation before a plan is published. */
typedef struct nt_channel_param {
    const char *name;        /**< parameter name */
    int required;            /**< non-zero: must be present */
    const char *description; /**< one line for `nurturectl validate` and docs */
} nt_channel_param_t;

/**
 * ops->flags: the channel writes to the person, so it must see their consent as it stands.
 * Each of its messages carries the lead's "unsubscribed" and "suppressed" fields as they were
 * when the message was committed (read in the same transaction). A channel without the flag
 * gets them from the snapshot the step was decided on, which may predate an unsubscribe, and
 * saves that read on every message.
 */
#define NT_CHANNEL_CONSENT 0x1u

/** The plugin: one constant struct. New fields are appended; readers check `size`. */
typedef struct nt_channel_ops {
    uint32_t abi_version;   /**< NT_CHANNEL_ABI_VERSION the plugin was built with */
    uint32_t size;          /**< sizeof(nt_channel_ops_t) the plugin was built with */
    const char *name;       /**< channel name as used in plans: [a-z0-9_]+ */
    const char *description;/**< one line */
    const nt_channel_param_t *params; /**< parameters, terminated by a {NULL} entry */
    const char *const *outcomes;      /**< outcomes it reports besides "sent" and "failed"; NULL-terminated */

    /**
     * Validate a send node's parameters (beyond required/unknown names, which the host checks).
     * May be NULL. Runs without init (also inside nurturectl). Returns NT_OK, or an error with
     * *errmsg set to a malloc'd sentence the caller frees.
     */
    nt_rc_t (*validate)(const nt_kv_t *params, size_t nparams, char **errmsg);

    /**
     * Start the plugin in the daemon. May be NULL. *state is passed to the other hooks.
     * On failure returns an error and sets *errmsg (malloc'd, caller frees).
     */
    nt_rc_t (*init)(const nt_channel_host_t *host, void **state, char **errmsg);

    /**
     * Deliver msg. Returns NT_AGAIN when `done` will be called later, or calls `done` before
     * returning and returns NT_OK. Must not block. Must honour msg->id: a second dispatch of
     * the same id must not deliver twice.
     */
    nt_rc_t (*dispatch)(void *state, const nt_message_t *msg, nt_channel_done_fn *done,
                        void *done_arg);

    /** Cancel what is in flight (each pending done fires with NT_ECANCELED) and free state. */
    void (*shutdown)(void *state);

    uint32_t flags;         /**< NT_CHANNEL_* bits, zero for none */
    void *reserved[7];      /**< zero; room for growth */
} nt_channel_ops_t;

/** The type of the entry symbol. */
typedef const nt_channel_ops_t *nt_channel_entry_fn(void);

#ifdef __cplusplus
}
#endif

#endif
