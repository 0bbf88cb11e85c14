/* The example plans and sample leads in workflows/: every plan compiles with protoc and passes
 * nt_validate with the built channel plugins (the directory is globbed, so new plans are
 * covered), leads.csv parses, and `nurturectl validate` reports broken plans line by line. */
#include <glob.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "csv.h"
#include "lead.h"
#include "modules.h"
#include "plan.h"
#include "validate.h"

#define MODULES_DIR NT_BINARY_DIR "/modules"

static nt_modules_t *mods;

/* protoc --encode the file into a malloc'd buffer; NULL when protoc refuses it. */
static uint8_t *encode(const char *path, size_t *len)
{
    char out[] = "/tmp/nt_test_workflows_XXXXXX";
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
    char *cmd = NULL;
    assert_true(asprintf(&cmd, "'%s' --encode=nt.Workflow -I '%s' workflow.proto <'%s' >'%s'",
                         NT_PROTOC, NT_PROTO_DIR, path, out) > 0);
    int rc = system(cmd);
    free(cmd);
    uint8_t *buf = NULL;
    if (rc == 0) {
        FILE *f = fopen(out, "rb");
        assert_non_null(f);
        buf = malloc(16 << 20);
        *len = fread(buf, 1, 16 << 20, f);
        fclose(f);
    }
    unlink(out);
    return buf;
}

/* Run a shell command, capturing stdout and stderr together. Returns the exit status. */
static int run(const char *cmd, char **output)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char *out = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
        fwrite(buf, 1, n, m);
    fclose(m);
    int st = pclose(p);
    *output = out;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_workflows_every_plan_compiles_and_validates(void **state)
{
    glob_t g;
    assert_int_equal(glob(NT_SOURCE_DIR "/workflows/*.textpb", 0, NULL, &g), 0);
    assert_true(g.gl_pathc >= 5);
    const char *required[] = {"education_track", "webinar_invite", "tradeshow_followup",
                              "mql_handoff", "bench", NULL};
    int seen[5] = {0};
    for (size_t i = 0; i < g.gl_pathc; i++) {
        const char *path = g.gl_pathv[i];
        size_t len = 0;
        uint8_t *bin = encode(path, &len);
        if (bin == NULL)
            fail_msg("%s: protoc refused it", path);
        char *err = NULL;
        nt_plan_t *plan = nt_plan_new(bin, len, &err);
        if (plan == NULL)
            fail_msg("%s: %s", path, err);
        nt_verrs_t errs = {0};
        nt_rc_t rc = nt_validate(plan->wf, mods, &errs);
        for (size_t k = 0; k < errs.n; k++)
            fprintf(stderr, "%s: node %s: %s\n", path, errs.v[k].node ? errs.v[k].node : "-",
                    errs.v[k].msg);
        if (rc != NT_OK)
            fail_msg("%s: %zu problems", path, errs.n);
        /* The plan id is the file name. */
        const char *base = strrchr(path, '/') + 1;
        size_t stem = strlen(base) - strlen(".textpb");
        if (strlen(plan->wf->id) != stem || strncmp(plan->wf->id, base, stem) != 0)
            fail_msg("%s: plan id '%s' differs from the file name", path, plan->wf->id);
        for (int r = 0; required[r] != NULL; r++)
            if (strcmp(plan->wf->id, required[r]) == 0)
                seen[r] = 1;
        nt_verrs_fini(&errs);
        nt_plan_free(plan);
        free(bin);
    }
    for (int r = 0; required[r] != NULL; r++)
        if (!seen[r])
            fail_msg("workflows/%s.textpb is missing", required[r]);
    globfree(&g);
}

static void test_workflows_sample_leads_parse(void **state)
{
    FILE *f = fopen(NT_SOURCE_DIR "/workflows/leads.csv", "r");
    assert_non_null(f);
    nt_csv_t *csv = nt_csv_new(f, 4096, 64);
    char **fields;
    size_t nf, line, ncols = 0;
    char *err = NULL;
    assert_int_equal(nt_csv_next(csv, &fields, &nf, &line, &err), 1);
    ncols = nf;
    assert_string_equal(fields[0], "id");
    for (size_t i = 0; i < nf; i++)
        if (strcmp(fields[i], "score") != 0 && strcmp(fields[i], "stage") != 0 &&
            strcmp(fields[i], "id") != 0 && !nt_attr_name_valid(fields[i]))
            fail_msg("column '%s' is not an attribute name", fields[i]);
    int rows = 0, r, comma = 0, utf8 = 0;
    while ((r = nt_csv_next(csv, &fields, &nf, &line, &err)) != 0) {
        if (r < 0)
            fail_msg("leads.csv: %s", err);
        assert_int_equal(nf, ncols);
        assert_true(nt_lead_id_valid(fields[0]));
        for (size_t i = 0; i < nf; i++) {
            comma |= strchr(fields[i], ',') != NULL;
            for (const char *p = fields[i]; *p; p++)
                utf8 |= (unsigned char)*p >= 0x80;
        }
        rows++;
    }
    assert_true(rows >= 50);
    assert_true(comma);
    assert_true(utf8);
    nt_csv_free(csv);
    fclose(f);
}

static char *write_tmp(const char *text)
{
    char *path = strdup("/tmp/nt_test_broken_XXXXXX.textpb");
    int fd = mkstemps(path, 7);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_workflows_nurturectl_validate_reports_each_problem(void **state)
{
    char *path = write_tmp(
        "id: \"Broken Plan\"\n"
        "start: \"hello\"\n"
        "nodes { id: \"hello\" send { channel: \"log\" params { name: \"message\" value: \"hi\" }\n"
        "        on { outcome: \"bounced\" to: \"nowhere\" } } }\n"
        "nodes { id: \"pause\" wait { next: \"hello\" } }\n");
    char *cmd = NULL, *out = NULL;
    assert_true(asprintf(&cmd, "'%s' --modules-dir '%s' validate '%s' 2>&1", NT_NURTURECTL_BIN,
                         MODULES_DIR, path) > 0);
    int rc = run(cmd, &out);
    fprintf(stderr, "%s", out);
    assert_int_equal(rc, 1);
    char want[512];
    const char *lines[] = {
        "plan: plan id 'Broken Plan' is invalid",
        "node hello: channel 'log' never reports outcome 'bounced'",
        "node hello: edge 'bounced' points to missing node 'nowhere'",
        "node pause: wait has no duration, window or date",
        "node pause: node is not reachable from start node 'hello'",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        snprintf(want, sizeof(want), "%s: %s", path, lines[i]);
        if (strstr(out, want) == NULL)
            fail_msg("missing line \"%s\"", want);
    }
    free(cmd);
    free(out);

    /* A text-format error names the file and the line. */
    FILE *f = fopen(path, "w");
    fputs("id: \"x\"\nnodes { idd: \"a\" }\n", f);
    fclose(f);
    assert_true(asprintf(&cmd, "'%s' --modules-dir '%s' validate '%s' 2>&1", NT_NURTURECTL_BIN,
                         MODULES_DIR, path) > 0);
    rc = run(cmd, &out);
    assert_int_equal(rc, 1);
    snprintf(want, sizeof(want), "%s:2:", path);
    assert_non_null(strstr(out, want));
    free(cmd);
    free(out);
    unlink(path);
    free(path);
}

static void test_workflows_nurturectl_validate_ok_and_usage(void **state)
{
    char *cmd = NULL, *out = NULL;
    assert_true(asprintf(&cmd, "'%s' --modules-dir '%s' validate '%s' 2>&1", NT_NURTURECTL_BIN,
                         MODULES_DIR, NT_SOURCE_DIR "/workflows/bench.textpb") > 0);
    assert_int_equal(run(cmd, &out), 0);
    assert_non_null(strstr(out, "bench.textpb: ok (7 nodes)"));
    free(cmd);
    free(out);
    assert_true(asprintf(&cmd, "'%s' validate 2>&1", NT_NURTURECTL_BIN) > 0);
    assert_int_equal(run(cmd, &out), 2);
    free(cmd);
    free(out);
    assert_true(asprintf(&cmd, "'%s' frobnicate 2>&1", NT_NURTURECTL_BIN) > 0);
    assert_int_equal(run(cmd, &out), 2);
    assert_non_null(strstr(out, "unknown command 'frobnicate'"));
    free(cmd);
    free(out);
}

static void test_workflows_nurturectl_dot_and_compile(void **state)
{
    char *cmd = NULL, *out = NULL;
    assert_true(asprintf(&cmd, "'%s' --modules-dir '%s' dot '%s' 2>&1", NT_NURTURECTL_BIN,
                         MODULES_DIR, NT_SOURCE_DIR "/workflows/mql_handoff.textpb") > 0);
    assert_int_equal(run(cmd, &out), 0);
    assert_non_null(strstr(out, "digraph \"mql_handoff\""));
    assert_non_null(strstr(out, "\"call_1\" -> \"booked\" [label=\"meeting_booked\"]"));
    free(cmd);
    free(out);

    char bin[] = "/tmp/nt_test_compile_XXXXXX";
    int fd = mkstemp(bin);
    close(fd);
    assert_true(asprintf(&cmd, "'%s' --modules-dir '%s' compile '%s' -o '%s' 2>&1",
                         NT_NURTURECTL_BIN, MODULES_DIR,
                         NT_SOURCE_DIR "/workflows/webinar_invite.textpb", bin) > 0);
    assert_int_equal(run(cmd, &out), 0);
    FILE *f = fopen(bin, "rb");
    uint8_t buf[65536];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    char *err = NULL;
    nt_plan_t *plan = nt_plan_new(buf, n, &err);
    assert_non_null(plan);
    assert_string_equal(plan->wf->id, "webinar_invite");
    nt_plan_free(plan);
    unlink(bin);
    free(cmd);
    free(out);
}

static int setup(void **state)
{
    char *err = NULL;
    mods = nt_modules_load(MODULES_DIR, &err);
    if (mods == NULL || nt_modules_find(mods, "log") == NULL) {
        fprintf(stderr, "the log channel is not built in %s: %s\n", MODULES_DIR,
                err ? err : "not found");
        free(err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    nt_modules_free(mods);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workflows_every_plan_compiles_and_validates),
        cmocka_unit_test(test_workflows_sample_leads_parse),
        cmocka_unit_test(test_workflows_nurturectl_validate_reports_each_problem),
        cmocka_unit_test(test_workflows_nurturectl_validate_ok_and_usage),
        cmocka_unit_test(test_workflows_nurturectl_dot_and_compile),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
