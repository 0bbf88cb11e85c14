/* POST /v1/events: an event for a lead joins its partition's stream (event_post.lua), and the
 * worker owning the partition is woken. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "clock.h"
#include "keys.h"
#include "metrics.h"

#define MAX_EVENT_ATTRS 256

typedef struct event_ctx {
    char *lead;
} event_ctx_t;

static void event_ctx_free(void *p)
{
    event_ctx_t *c = p;
    free(c->lead);
    free(c);
}

static void on_posted(nt_api_req_t *r, nt_rc_t rc, redisReply **rep, size_t n, void *arg)
{
    event_ctx_t *c = r->ctx;
    if (rc != NT_OK) {
        nt_api_error_rc(r, rc, NULL);
        return;
    }
    redisReply *x = rep[0];
    if (!nt_api_script_reply_ok(x, 1, "event_post")) {
        nt_api_error(r, 500, "internal", "the event could not be stored");
        return;
    }
    if (strcmp(x->element[0]->str, "missing") == 0) {
        nt_api_error(r, 404, "not_found", "no lead %s", c->lead);
        return;
    }
    if (x->elements < 2 || x->element[1]->type != REDIS_REPLY_STRING) {
        nt_api_error(r, 500, "internal", "the event could not be stored");
        return;
    }
    nt_metrics.events_in++;
    if (r->d.worker)
        nt_worker_wake(r->d.worker, nt_partition(c->lead, r->d.cfg->partitions));
    nt_api_reply_json(r, 202, json_pack("{s:s}", "id", x->element[1]->str));
}

void nt_api_events_post(nt_api_req_t *r)
{
    static const char *const allowed[] = {"lead", "type", "attributes", "machine", NULL};
    char err[256];
    json_t *body = r->body;
    if (nt_api_only_fields(body, allowed, "", err, sizeof(err)) != 0) {
        nt_api_error(r, 400, "bad_request", "%s", err);
        return;
    }
    json_t *lead = json_object_get(body, "lead");
    json_t *type = json_object_get(body, "type");
    json_t *attrs = json_object_get(body, "attributes");
    json_t *machine = json_object_get(body, "machine");
    if (!lead) {
        nt_api_error(r, 400, "bad_request", "missing field 'lead'");
        return;
    }
    if (!json_is_string(lead) || !nt_lead_id_valid(json_string_value(lead)) ||
        strlen(json_string_value(lead)) != json_string_length(lead)) {
        nt_api_error(r, 400, "bad_request",
                     "field 'lead' must be a lead id (1 to 128 of A-Z a-z 0-9 . _ @ + -)");
        return;
    }
    if (!type) {
        nt_api_error(r, 400, "bad_request", "missing field 'type'");
        return;
    }
    if (!json_is_string(type) || !nt_api_event_type_valid(json_string_value(type))) {
        nt_api_error(r, 400, "bad_request",
                     "field 'type' must be an event type (1 to 64 of a-z 0-9 _ . -)");
        return;
    }
    if (machine && !json_is_boolean(machine)) {
        nt_api_error(r, 400, "bad_request", "field 'machine' must be a boolean");
        return;
    }
    if (attrs && !json_is_object(attrs)) {
        nt_api_error(r, 400, "bad_request", "field 'attributes' must be an object");
        return;
    }
    if (attrs && json_object_size(attrs) > MAX_EVENT_ATTRS) {
        nt_api_error(r, 400, "bad_request", "field 'attributes' has more than %d entries",
                     MAX_EVENT_ATTRS);
        return;
    }
    const char *key;
    json_t *v;
    json_object_foreach(attrs, key, v)
    {
        if (!nt_attr_name_valid(key)) {
            nt_api_error(r, 400, "bad_request",
                         "an attribute name in 'attributes' is not valid (1 to 64 of a-z 0-9 _)");
            return;
        }
        if (!json_is_string(v)) {
            nt_api_error(r, 400, "bad_request", "field 'attributes.%s' must be a string", key);
            return;
        }
    }
    if (nt_api_need_redis(r))
        return;
    event_ctx_t *c = nt_api_ctx_new(r, sizeof(*c), event_ctx_free);
    if (!c)
        return;
    c->lead = strdup(json_string_value(lead));
    if (!c->lead) {
        nt_api_error(r, 500, "internal", "out of memory");
        return;
    }

    nt_api_argv_t a = {0};
    char k[NT_KEY_MAX];
    unsigned p = nt_partition(c->lead, r->d.cfg->partitions);
    nt_api_argv_add(&a, nt_key_lead(k, p, c->lead));
    nt_api_argv_add(&a, nt_key_part(k, p, "events"));
    nt_api_argv_add(&a, c->lead);
    nt_api_argv_add(&a, json_string_value(type));
    nt_api_argv_add(&a, json_is_true(machine) ? "1" : "0");
    nt_api_argv_addf(&a, "%" PRId64, nt_now_ms());
    json_object_foreach(attrs, key, v)
    {
        nt_api_argv_add(&a, key);
        nt_api_argv_addb(&a, json_string_value(v), json_string_length(v));
    }
    nt_api_script(r, "event_post", 2, &a, on_posted, NULL);
}
