/* modules: loading the built log plugin, refusing plugins of another ABI, and the log channel's
 * idempotent delivery (also across a reload from its file) and sink mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "log.h"
#include "modules.h"

#define MODULES_DIR NT_BINARY_DIR "/modules"
#define TEST_MODULES_DIR NT_BINARY_DIR "/testmodules"

static char *data_dir;
static const char *cfg_path; /* channel.log.path, or NULL */
static const char *cfg_sink; /* channel.log.sink, or NULL */

static const char *host_config(const char *channel, const char *key, const char *def)
{
    if (strcmp(channel, "log") == 0 && strcmp(key, "path") == 0 && cfg_path != NULL)
        return cfg_path;
    if (strcmp(channel, "log") == 0 && strcmp(key, "sink") == 0 && cfg_sink != NULL)
        return cfg_sink;
    return def;
}

static int64_t host_now(void)
{
    return 1795000000000LL;
}

static nt_channel_host_t host;

typedef struct result {
    int calls;
    nt_rc_t rc;
    char outcome[64];
    char detail[256];
} result_t;

static void on_done(void *arg, nt_rc_t rc, const char *outcome, const char *detail)
{
    result_t *r = arg;
    r->calls++;
    r->rc = rc;
    snprintf(r->outcome, sizeof(r->outcome), "%s", outcome != NULL ? outcome : "sent");
    snprintf(r->detail, sizeof(r->detail), "%s", detail != NULL ? detail : "");
}

static int setup(void **state)
{
    data_dir = nt_test_tmpdir("nt-modules");
    cfg_path = NULL;
    cfg_sink = NULL;
    host = (nt_channel_host_t){
        .abi_version = NT_CHANNEL_ABI_VERSION,
        .size = sizeof(nt_channel_host_t),
        .log = nt_log_channel,
        .config = host_config,
        .data_dir = data_dir,
        .now_ms = host_now,
    };
    return data_dir != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    nt_test_rmrf(data_dir);
    free(data_dir);
    return 0;
}

static char *log_file(void)
{
    char *p = NULL;
    if (asprintf(&p, "%s/log-channel.jsonl", data_dir) < 0)
        return NULL;
    return p;
}

static size_t count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = 0;
    int c;
    while ((c = getc(f)) != EOF) {
        if (c == '\n')
            n++;
    }
    fclose(f);
    return n;
}

static nt_rc_t send_one(const nt_module_t *m, const char *id, const nt_kv_t *params,
                        size_t nparams, result_t *r)
{
    nt_message_t msg = {
        .id = id,
        .lead_id = "lead-1",
        .plan_id = "welcome",
        .plan_version = 3,
        .node_id = "guide",
        .visit = 2,
        .params = params,
        .nparams = nparams,
        .attempt = 1,
    };
    memset(r, 0, sizeof(*r));
    return m->ops->dispatch(m->state, &msg, on_done, r);
}

static void test_modules_loads_the_log_plugin_by_name(void **state)
{
    char *err = NULL;
    nt_modules_t *mods = nt_modules_load(MODULES_DIR, &err);
    assert_non_null(mods);
    const nt_module_t *m = nt_modules_find(mods, "log");
    assert_non_null(m);
    assert_int_equal(m->ops->abi_version, NT_CHANNEL_ABI_VERSION);
    assert_string_equal(m->ops->name, "log");
    assert_non_null(strstr(m->path, "nt_log.so"));
    assert_null(nt_modules_find(mods, "nope"));
    assert_true(nt_modules_count(mods) >= 1);
    assert_non_null(nt_modules_at(mods, 0));
    assert_null(nt_modules_at(mods, nt_modules_count(mods)));
    assert_true(nt_module_has_outcome(m, "sent"));
    assert_true(nt_module_has_outcome(m, "failed"));
    assert_true(nt_module_has_outcome(m, "attended"));
    assert_true(nt_module_has_outcome(m, "meeting_booked"));
    assert_false(nt_module_has_outcome(m, "bounced"));
    assert_false(nt_module_has_outcome(m, NULL));

    /* validate: known outcomes pass, unknown ones are named. */
    nt_kv_t ok[] = {{"outcome", "no_show"}, {"message", "hi"}};
    assert_int_equal(m->ops->validate(ok, 2, &err), NT_OK);
    nt_kv_t bad[] = {{"outcome", "exploded"}};
    err = NULL;
    assert_int_equal(m->ops->validate(bad, 1, &err), NT_EINVAL);
    assert_non_null(strstr(err, "exploded"));
    free(err);
    nt_modules_free(mods);
    nt_modules_free(NULL);
}

static void test_modules_refuses_other_abi_and_small_struct(void **state)
{
    char *err = NULL;
    nt_modules_t *mods = nt_modules_load(TEST_MODULES_DIR, &err);
    assert_non_null(mods);
    assert_int_equal(nt_modules_count(mods), 0);
    assert_null(nt_modules_find(mods, "badabi"));
    assert_null(nt_modules_find(mods, "smallsize"));
    assert_int_equal(nt_modules_start(mods, &host), NT_OK);
    nt_modules_free(mods);

    nt_channel_ops_t ops = {.abi_version = 999, .size = sizeof(ops), .name = "x"};
    assert_int_equal(nt_modules_check(&ops, &err), NT_EABI);
    assert_string_equal(err, "channel ABI 999, nurtured speaks 1");
    free(err);
    ops.abi_version = NT_CHANNEL_ABI_VERSION;
    ops.size = 16;
    assert_int_equal(nt_modules_check(&ops, &err), NT_EABI);
    free(err);
    ops.size = sizeof(ops);
    ops.name = "Bad-Name";
    assert_int_equal(nt_modules_check(&ops, &err), NT_EINVAL);
    free(err);
    ops.name = "good";
    assert_int_equal(nt_modules_check(&ops, &err), NT_EINVAL); /* no dispatch */
    free(err);

    assert_null(nt_modules_load("/nonexistent/modules", &err));
    assert_non_null(strstr(err, "/nonexistent/modules"));
    free(err);
}

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (in == NULL || out == NULL) {
        if (in != NULL)
            fclose(in);
        if (out != NULL)
            fclose(out);
        return -1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    return 0;
}

static void test_modules_refuses_a_duplicate_name(void **state)
{
    char a[600], b[600], junk[600];
    snprintf(a, sizeof(a), "%s/nt_log.so", data_dir);
    snprintf(b, sizeof(b), "%s/nt_log_copy.so", data_dir);
    snprintf(junk, sizeof(junk), "%s/nt_junk.so", data_dir);
    assert_int_equal(copy_file(MODULES_DIR "/nt_log.so", a), 0);
    assert_int_equal(copy_file(MODULES_DIR "/nt_log.so", b), 0);
    FILE *f = fopen(junk, "w");
    fputs("not an ELF file\n", f);
    fclose(f);
    char *err = NULL;
    nt_modules_t *mods = nt_modules_load(data_dir, &err);
    assert_non_null(mods);
    assert_int_equal(nt_modules_count(mods), 1);
    assert_string_equal(nt_modules_at(mods, 0)->path, a);
    nt_modules_free(mods);
    unlink(a);
    unlink(b);
    unlink(junk);
}

static void test_modules_log_dispatch_is_idempotent_across_reload(void **state)
{
    char *err = NULL;
    nt_modules_t *mods = nt_modules_load(MODULES_DIR, &err);
    assert_non_null(mods);
    assert_int_equal(nt_modules_start(mods, &host), NT_OK);
    const nt_module_t *m = nt_modules_find(mods, "log");
    assert_non_null(m);
    assert_true(m->started);
    char *path = log_file();

    nt_kv_t params[] = {{"message", "hello \"world\"\t\x01 caf\xc3\xa9 \xff"}, {"topic", "t"}};
    result_t r;
    assert_int_equal(send_one(m, "msg:1", params, 2, &r), NT_OK);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, NT_OK);
    assert_string_equal(r.outcome, "sent");
    assert_int_equal(count_lines(path), 1);

    /* The line is JSON with every field. */
    FILE *f = fopen(path, "r");
    char line[4096];
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    json_error_t jerr;
    json_t *j = json_loads(line, 0, &jerr);
    if (j == NULL)
        fail_msg("not JSON: %s: %s", jerr.text, line);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "msg:1");
    assert_string_equal(json_string_value(json_object_get(j, "lead")), "lead-1");
    assert_string_equal(json_string_value(json_object_get(j, "plan")), "welcome");
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 3);
    assert_string_equal(json_string_value(json_object_get(j, "node")), "guide");
    assert_int_equal(json_integer_value(json_object_get(j, "visit")), 2);
    assert_string_equal(json_string_value(json_object_get(j, "channel")), "log");
    assert_int_equal(json_integer_value(json_object_get(j, "at")), 1795000000000LL);
    json_t *p = json_object_get(j, "params");
    assert_string_equal(json_string_value(json_object_get(p, "message")),
                        "hello \"world\"\t\x01 caf\xc3\xa9 \xef\xbf\xbd");
    assert_string_equal(json_string_value(json_object_get(p, "topic")), "t");
    json_decref(j);

    /* The same id again: reported, not written. */
    assert_int_equal(send_one(m, "msg:1", params, 2, &r), NT_OK);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.rc, NT_OK);
    assert_string_equal(r.outcome, "sent");
    assert_int_equal(count_lines(path), 1);

    /* Another id, with an outcome and an id that needs escaping. */
    nt_kv_t attended[] = {{"outcome", "attended"}};
    assert_int_equal(send_one(m, "msg:\"2\"\\", attended, 1, &r), NT_OK);
    assert_string_equal(r.outcome, "attended");
    assert_int_equal(count_lines(path), 2);
    nt_kv_t failed[] = {{"outcome", "failed"}};
    assert_int_equal(send_one(m, "msg:3", failed, 1, &r), NT_OK);
    assert_int_equal(r.rc, NT_EPERMFAIL);
    assert_int_equal(count_lines(path), 2);
    nt_modules_free(mods);

    /* A torn last line (a crash mid-write) must not swallow the next record. */
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(write(fd, "{\"id\":\"torn", 11) == 11);
    close(fd);

    /* Reload: the ids come back from the file. */
    mods = nt_modules_load(MODULES_DIR, &err);
    assert_int_equal(nt_modules_start(mods, &host), NT_OK);
    m = nt_modules_find(mods, "log");
    assert_true(m->started);
    assert_int_equal(send_one(m, "msg:1", params, 2, &r), NT_OK);
    assert_int_equal(r.rc, NT_OK);
    assert_int_equal(send_one(m, "msg:\"2\"\\", attended, 1, &r), NT_OK);
    assert_string_equal(r.outcome, "attended");
    assert_int_equal(count_lines(path), 3); /* 2 + the terminated torn line */
    assert_int_equal(send_one(m, "msg:4", NULL, 0, &r), NT_OK);
    assert_int_equal(r.rc, NT_OK);
    assert_int_equal(count_lines(path), 4);
    nt_modules_free(mods);

    /* Every line but the torn one is JSON. */
    f = fopen(path, "r");
    int good = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        j = json_loads(line, 0, NULL);
        if (j != NULL) {
            good++;
            json_decref(j);
        }
    }
    fclose(f);
    assert_int_equal(good, 3);
    free(path);
}

static void test_modules_log_many_ids_grow_the_set(void **state)
{
    char *err = NULL;
    nt_modules_t *mods = nt_modules_load(MODULES_DIR, &err);
    assert_int_equal(nt_modules_start(mods, &host), NT_OK);
    const nt_module_t *m = nt_modules_find(mods, "log");
    result_t r;
    char id[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "id-%d", i);
        send_one(m, id, NULL, 0, &r);
        assert_int_equal(r.rc, NT_OK);
    }
    nt_modules_free(mods);
    mods = nt_modules_load(MODULES_DIR, &err);
    assert_int_equal(nt_modules_start(mods, &host), NT_OK);
    m = nt_modules_find(mods, "log");
    for (int i = 0; i < 5000; i += 7) {
        snprintf(id, sizeof(id), "id-%d", i);
        send_one(m, id, NULL, 0, &r);
        assert_int_equal(r.rc, NT_OK);
    }
    nt_modules_free(mods);
    char *path = log_file();
    assert_int_equal(count_lines(path), 5000);
    unlink(path);
    free(path);
}

static void test_modules_log_sink_writes_nothing(void **state)
{
    char custom[600];
    snprintf(custom, sizeof(custom), "%s/custom.jsonl", data_dir);
    cfg_path = custom;
    cfg_sink = "yes";
    char *err = NULL;
    nt_modules_t *mods = nt_modules_load(MODULES_DIR, &err);
    assert_int_equal(nt_modules_start(mods, &host), NT_OK);
    const nt_module_t *m = nt_modules_find(mods, "log");
    assert_true(m->started);
    result_t r;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(send_one(m, "same", NULL, 0, &r), NT_OK);
        assert_int_equal(r.rc, NT_OK);
    }
    nt_modules_free(mods);
    struct stat st;
    assert_int_equal(stat(custom, &st), -1);

    /* Not a sink: the configured path is used. */
    cfg_sink = NULL;
    mods = nt_modules_load(MODULES_DIR, &err);
    assert_int_equal(nt_modules_start(mods, &host), NT_OK);
    m = nt_modules_find(mods, "log");
    assert_int_equal(send_one(m, "x", NULL, 0, &r), NT_OK);
    nt_modules_free(mods);
    assert_int_equal(count_lines(custom), 1);
    cfg_path = NULL;
}

static void test_modules_log_init_failure_leaves_it_unstarted(void **state)
{
    cfg_path = "/nonexistent/dir/log.jsonl";
    char *err = NULL;
    nt_modules_t *mods = nt_modules_load(MODULES_DIR, &err);
    assert_int_equal(nt_modules_start(mods, &host), NT_OK);
    const nt_module_t *m = nt_modules_find(mods, "log");
    assert_non_null(m);
    assert_false(m->started);
    nt_modules_free(mods);
    cfg_path = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_modules_loads_the_log_plugin_by_name, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_modules_refuses_other_abi_and_small_struct, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_modules_refuses_a_duplicate_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modules_log_dispatch_is_idempotent_across_reload,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_modules_log_many_ids_grow_the_set, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modules_log_sink_writes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modules_log_init_failure_leaves_it_unstarted, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
