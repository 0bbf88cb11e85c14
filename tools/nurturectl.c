/* nurturectl: the ops command line. Validates, compiles and publishes plans, renders them as
 * Graphviz, enrols leads from CSV, posts events and shows leads, plans and funnels.
 *
 * Plans are compiled by protoc (text format -> binary nt.Workflow) and checked by the same
 * nt_validate that nurtured runs at publish time, with the same channel plugins, so that a plan
 * that passes here is accepted there. Talking to nurtured is plain blocking libcurl: this is a
 * CLI, not the event loop.
 *
 * Exit codes: 0 success, 1 a problem (invalid plan, server error, unreachable server),
 * 2 usage error. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "csv.h"
#include "lead.h"
#include "log.h"
#include "modules.h"
#include "plan.h"
#include "validate.h"

#define CTL_ENROL_CHUNK 1000            /* leads per enrol request */
#define CTL_CSV_MAX_FIELD (1u << 20)    /* longest CSV field */
#define CTL_CSV_MAX_FIELDS 1024         /* most CSV columns */
#define CTL_PROTOC_MAX_OUT (64u << 20)  /* largest compiled plan accepted from protoc */
#define CTL_EVENTS_CHUNK 1000           /* check-ins per webhook request (the server takes 10,000) */
#define CTL_EVENTS_CHUNK_BYTES (512u << 10) /* and at most about this much JSON (max-body 1 MiB) */

typedef struct ctl {
    const char *url;
    const char *token;
    const char *data_dir;
    const char *modules_dir;
    const char *out;        /* compile -o */
    int activate;           /* publish --activate */
    int machine;            /* event --machine */
    char *token_buf;        /* token read from the tokens file */
    const char *followup;   /* events import --followup */
    const char *webhook_token;  /* events import: --webhook-token, else the tokens file */
    const char *webhook_secret; /* events import: --webhook-secret, else DATA-DIR/webhook.key */
    const char *extra_header;   /* one more request header (the webhook signature) */
    nt_modules_t *mods;     /* loaded on first use */
} ctl_t;

typedef struct membuf {
    char *p;
    size_t n;
} membuf_t;

static void usage(FILE *f)
{
    fputs(
        "usage: nurturectl [options] <command> [arguments]\n"
        "\n"
        "plans:\n"
        "  validate FILE.textpb...          check plans; every problem as FILE: node ID: text\n"
        "  compile FILE.textpb [-o OUT.bin] validate, then write the binary plan\n"
        "  publish FILE.textpb... [--activate]  validate, compile and POST to nurtured\n"
        "  dot FILE.textpb                  the plan as a Graphviz digraph on stdout\n"
        "  plans                            list published plans\n"
        "  stats PLAN                       per-node funnel: current and entered leads\n"
        "leads:\n"
        "  enrol PLAN LEADS.csv             create/update the CSV's leads and enrol them\n"
        "  lead ID                          attributes, score, stage, runs and timeline\n"
        "  event LEAD TYPE [k=v...] [--machine]  post an event for a lead\n"
        "call tasks:\n"
        "  tasks list [REP|team:TEAM]       open tasks by due time (a rep token: its own)\n"
        "  tasks complete ID OUTCOME [NOTE...]  log a call's outcome (connected, left_voicemail,\n"
        "                                   no_answer, wrong_number, meeting_booked,\n"
        "                                   not_interested); the lead's run moves on\n"
        "events:\n"
        "  events import EVENT BADGES.csv [--followup PLAN]  post the badge scans' check-ins\n"
        "                                   (columns email, first_name, last_name, company,\n"
        "                                   title, checked_in_at) to /v1/webhooks/event; bad rows\n"
        "                                   are reported by line and the rest imported; unknown\n"
        "                                   people become leads enrolled in PLAN (default:\n"
        "                                   channel.event.followup.EVENT)\n"
        "  help                             this text\n"
        "\n"
        "options:\n"
        "  --url URL          nurtured's address (NURTURE_URL, default http://127.0.0.1:7700)\n"
        "  --token TOKEN      ops token (NURTURE_TOKEN, else the ops line of DATA-DIR/tokens)\n"
        "  --data-dir DIR     nurtured's data directory (default ./nurture-data)\n"
        "  --modules-dir DIR  channel plugins (NURTURE_MODULES_DIR, default the build's)\n"
        "  --webhook-token T  events import: a webhook token (NURTURE_WEBHOOK_TOKEN, else the\n"
        "                     webhook line of DATA-DIR/tokens)\n"
        "  --webhook-secret S events import: nurtured's webhook-secret (NURTURE_WEBHOOK_SECRET,\n"
        "                     else DATA-DIR/webhook.key)\n"
        "\n"
        "exit status: 0 ok, 1 a problem was found or the server refused, 2 usage error\n",
        f);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "nurturectl: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---------------------------------------------------------------- compiling plans */

/* Run protoc --encode on the text plan at path. On success returns 0 with *out (malloc'd).
 * On failure prints the reasons prefixed with the file name and returns -1. */
static int protoc_encode(const char *path, membuf_t *out)
{
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        fprintf(stderr, "%s: cannot read: %s\n", path, strerror(errno));
        return -1;
    }
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) {
        fprintf(stderr, "%s: pipe: %s\n", path, strerror(errno));
        close(in);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "%s: fork: %s\n", path, strerror(errno));
        close(in);
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(in, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        execl(NT_PROTOC, NT_PROTOC, "--encode=nt.Workflow", "-I", NT_PROTO_DIR,
              "workflow.proto", (char *)NULL);
        fprintf(stderr, "cannot run %s: %s\n", NT_PROTOC, strerror(errno));
        _exit(127);
    }
    close(in);
    close(po[1]);
    close(pe[1]);

    membuf_t bo = {0}, be = {0};
    size_t capo = 0, cape = 0;
    struct pollfd fds[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    int open_fds = 2, too_big = 0;
    while (open_fds > 0) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int k = 0; k < 2; k++) {
            if (fds[k].fd < 0 || fds[k].revents == 0)
                continue;
            membuf_t *b = k == 0 ? &bo : &be;
            size_t *cap = k == 0 ? &capo : &cape;
            if (*cap - b->n < 65536) {
                *cap = *cap ? *cap * 2 : 65536;
                b->p = realloc(b->p, *cap + 1);
                if (b->p == NULL) {
                    fprintf(stderr, "nurturectl: out of memory\n");
                    exit(1);
                }
            }
            ssize_t r = read(fds[k].fd, b->p + b->n, *cap - b->n);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                close(fds[k].fd);
                fds[k].fd = -1;
                open_fds--;
                continue;
            }
            b->n += (size_t)r;
            if (bo.n > CTL_PROTOC_MAX_OUT && !too_big) {
                too_big = 1;
                kill(pid, SIGKILL);
            }
        }
    }
    for (int k = 0; k < 2; k++)
        if (fds[k].fd >= 0)
            close(fds[k].fd);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (be.p != NULL)
        be.p[be.n] = '\0';
    if (too_big || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        int said = 0;
        for (char *line = be.p, *nl; line != NULL && *line; line = nl ? nl + 1 : NULL) {
            nl = strchr(line, '\n');
            if (nl != NULL)
                *nl = '\0';
            if (*line == '\0' || strcmp(line, "Failed to parse input.") == 0)
                continue;
            if (strncmp(line, "input:", 6) == 0)
                fprintf(stderr, "%s:%s\n", path, line + 6);
            else
                fprintf(stderr, "%s: %s\n", path, line);
            said = 1;
        }
        if (too_big)
            fprintf(stderr, "%s: the compiled plan is larger than %u bytes\n", path,
                    CTL_PROTOC_MAX_OUT);
        else if (!said)
            fprintf(stderr, "%s: protoc failed (%s %d)\n", path,
                    WIFEXITED(status) ? "exit status" : "signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        free(bo.p);
        free(be.p);
        return -1;
    }
    free(be.p);
    if (bo.p == NULL)
        bo.p = xmalloc(1);
    *out = bo;
    return 0;
}

static nt_modules_t *modules(ctl_t *c)
{
    if (c->mods != NULL)
        return c->mods;
    const char *dir = c->modules_dir;
    if (dir == NULL)
        dir = getenv("NURTURE_MODULES_DIR");
    if (dir == NULL || *dir == '\0')
        dir = NT_DEFAULT_MODULES_DIR;
    char *err = NULL;
    c->mods = nt_modules_load(dir, &err);
    if (c->mods == NULL) {
        fprintf(stderr, "nurturectl: cannot load channel plugins from %s: %s\n", dir,
                err != NULL ? err : "unknown error");
        free(err);
        exit(1);
    }
    return c->mods;
}

/* Compile and validate one plan file, printing every problem. Returns the plan (and with
 * bin non-NULL its binary form) when it is clean, else NULL. */
static nt_plan_t *load_plan(ctl_t *c, const char *path, membuf_t *bin, int quiet_ok)
{
    membuf_t b;
    if (protoc_encode(path, &b) < 0)
        return NULL;
    char *err = NULL;
    nt_plan_t *plan = nt_plan_new((const uint8_t *)b.p, b.n, &err);
    if (plan == NULL) {
        fprintf(stderr, "%s: %s\n", path, err != NULL ? err : "cannot read the compiled plan");
        free(err);
        free(b.p);
        return NULL;
    }
    nt_verrs_t errs = {0};
    nt_rc_t rc = nt_validate(plan->wf, modules(c), &errs);
    for (size_t i = 0; i < errs.n; i++) {
        if (errs.v[i].node != NULL)
            fprintf(stdout, "%s: node %s: %s\n", path, errs.v[i].node, errs.v[i].msg);
        else
            fprintf(stdout, "%s: plan: %s\n", path, errs.v[i].msg);
    }
    if (rc == NT_ENOMEM)
        fprintf(stdout, "%s: plan: out of memory while validating\n", path);
    nt_verrs_fini(&errs);
    if (rc != NT_OK) {
        nt_plan_free(plan);
        free(b.p);
        return NULL;
    }
    if (!quiet_ok)
        fprintf(stdout, "%s: ok (%zu nodes)\n", path, plan->wf->n_nodes);
    if (bin != NULL)
        *bin = b;
    else
        free(b.p);
    return plan;
}

static int cmd_validate(ctl_t *c, int argc, char **argv)
{
    if (argc < 1) {
        fprintf(stderr, "usage: nurturectl validate FILE.textpb...\n");
        return 2;
    }
    int bad = 0;
    for (int i = 0; i < argc; i++) {
        nt_plan_t *p = load_plan(c, argv[i], NULL, 0);
        if (p == NULL)
            bad = 1;
        nt_plan_free(p);
    }
    return bad;
}

static int cmd_compile(ctl_t *c, int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "usage: nurturectl compile FILE.textpb [-o OUT.bin]\n");
        return 2;
    }
    const char *path = argv[0];
    char *outpath = NULL;
    if (c->out != NULL) {
        outpath = strdup(c->out);
    } else {
        const char *dot = strrchr(path, '.');
        const char *slash = strrchr(path, '/');
        size_t stem = dot != NULL && (slash == NULL || dot > slash) ? (size_t)(dot - path)
                                                                     : strlen(path);
        if (asprintf(&outpath, "%.*s.bin", (int)stem, path) < 0)
            outpath = NULL;
    }
    if (outpath == NULL) {
        fprintf(stderr, "nurturectl: out of memory\n");
        return 1;
    }
    membuf_t bin;
    nt_plan_t *p = load_plan(c, path, &bin, 1);
    if (p == NULL) {
        fprintf(stderr, "%s: not compiled: fix the problems above\n", path);
        free(outpath);
        return 1;
    }
    int rc = 0;
    FILE *f = strcmp(outpath, "-") == 0 ? stdout : fopen(outpath, "wb");
    if (f == NULL || fwrite(bin.p, 1, bin.n, f) != bin.n || (f != stdout && fclose(f) != 0)) {
        fprintf(stderr, "nurturectl: cannot write %s: %s\n", outpath, strerror(errno));
        rc = 1;
    } else if (f != stdout) {
        fprintf(stderr, "%s: compiled to %s (%zu bytes, %zu nodes)\n", path, outpath, bin.n,
                p->wf->n_nodes);
    }
    free(bin.p);
    free(outpath);
    nt_plan_free(p);
    return rc;
}

/* ---------------------------------------------------------------- Graphviz */

static void dot_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s != NULL && *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static void dot_edge(FILE *f, const char *from, const char *to, const char *label, int dashed)
{
    if (to == NULL || *to == '\0')
        return;
    fputs("  ", f);
    dot_str(f, from);
    fputs(" -> ", f);
    dot_str(f, to);
    if (label != NULL || dashed) {
        fputs(" [", f);
        if (label != NULL) {
            fputs("label=", f);
            dot_str(f, label);
        }
        if (dashed)
            fputs(label != NULL ? ", style=dashed" : "style=dashed", f);
        fputs("]", f);
    }
    fputs(";\n", f);
}

static void dot_duration(char *buf, size_t n, const Nt__Duration *d)
{
    buf[0] = '\0';
    if (d == NULL)
        return;
    size_t o = 0;
    if (d->days)
        o += (size_t)snprintf(buf + o, n - o, "%ud", d->days);
    if (d->hours && o < n)
        o += (size_t)snprintf(buf + o, n - o, "%uh", d->hours);
    if (d->minutes && o < n)
        o += (size_t)snprintf(buf + o, n - o, "%um", d->minutes);
    if (d->seconds && o < n)
        o += (size_t)snprintf(buf + o, n - o, "%us", d->seconds);
    if (o == 0)
        snprintf(buf, n, "0");
}

static int cmd_dot(ctl_t *c, int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "usage: nurturectl dot FILE.textpb\n");
        return 2;
    }
    nt_plan_t *p = load_plan(c, argv[0], NULL, 1);
    if (p == NULL)
        return 1;
    const Nt__Workflow *wf = p->wf;
    FILE *f = stdout;
    fputs("digraph ", f);
    dot_str(f, wf->id);
    fputs(" {\n  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];\n"
          "  edge [fontname=\"Helvetica\", fontsize=9];\n", f);
    if (wf->name != NULL && *wf->name) {
        fputs("  label=", f);
        dot_str(f, wf->name);
        fputs(";\n  labelloc=t;\n", f);
    }
    fputs("  \"__start\" [shape=point];\n  \"__start\" -> ", f);
    dot_str(f, wf->start);
    fputs(";\n", f);
    for (size_t i = 0; i < wf->n_nodes; i++) {
        const Nt__Node *n = wf->nodes[i];
        const char *shape = "box", *extra = "";
        char detail[256] = "";
        char d[64];
        switch (n->kind_case) {
        case NT__NODE__KIND_SEND:
            shape = "box";
            extra = ", style=\"rounded,filled\", fillcolor=\"#dbeafe\"";
            snprintf(detail, sizeof(detail), "send %s", n->send->channel);
            break;
        case NT__NODE__KIND_WAIT:
            shape = "ellipse";
            if (n->wait->until_case == NT__WAIT__UNTIL_DURATION) {
                dot_duration(d, sizeof(d), n->wait->duration);
                snprintf(detail, sizeof(detail), "wait %s", d);
            } else if (n->wait->until_case == NT__WAIT__UNTIL_WINDOW) {
                snprintf(detail, sizeof(detail), "wait until %s-%s", n->wait->window->start,
                         n->wait->window->end);
            } else if (n->wait->until_case == NT__WAIT__UNTIL_DATE) {
                snprintf(detail, sizeof(detail), "wait until %s", n->wait->date);
            } else {
                snprintf(detail, sizeof(detail), "wait");
            }
            break;
        case NT__NODE__KIND_WAIT_EVENT:
            shape = "ellipse";
            extra = ", style=filled, fillcolor=\"#fef3c7\"";
            snprintf(detail, sizeof(detail), "wait for %s",
                     n->wait_event->filter ? n->wait_event->filter->type : "?");
            break;
        case NT__NODE__KIND_BRANCH:
            shape = "diamond";
            snprintf(detail, sizeof(detail), "branch");
            break;
        case NT__NODE__KIND_SPLIT:
            shape = "trapezium";
            snprintf(detail, sizeof(detail), "split");
            break;
        case NT__NODE__KIND_UPDATE:
            shape = "note";
            snprintf(detail, sizeof(detail), "update");
            break;
        case NT__NODE__KIND_EXIT:
            shape = "doublecircle";
            snprintf(detail, sizeof(detail), "exit %s", n->exit->reason);
            break;
        default:
            break;
        }
        char *label = NULL;
        if (asprintf(&label, "%s\n%s", n->label != NULL && *n->label ? n->label : n->id,
                     detail) < 0)
            label = NULL;
        fputs("  ", f);
        dot_str(f, n->id);
        fprintf(f, " [shape=%s%s, label=", shape, extra);
        dot_str(f, label != NULL ? label : n->id);
        fputs("];\n", f);
        free(label);
    }
    for (size_t i = 0; i < wf->n_nodes; i++) {
        const Nt__Node *n = wf->nodes[i];
        char lab[128], d[64];
        switch (n->kind_case) {
        case NT__NODE__KIND_SEND:
            for (size_t e = 0; e < n->send->n_on; e++)
                dot_edge(f, n->id, n->send->on[e]->to, n->send->on[e]->outcome, 0);
            dot_edge(f, n->id, n->send->next, n->send->n_on ? "other" : NULL, 0);
            dot_duration(d, sizeof(d), n->send->timeout);
            snprintf(lab, sizeof(lab), "timeout %s", d);
            dot_edge(f, n->id, n->send->on_timeout, lab, 1);
            break;
        case NT__NODE__KIND_WAIT:
            dot_edge(f, n->id, n->wait->next, NULL, 0);
            break;
        case NT__NODE__KIND_WAIT_EVENT:
            dot_edge(f, n->id, n->wait_event->on_match,
                     n->wait_event->filter ? n->wait_event->filter->type : "match", 0);
            dot_duration(d, sizeof(d), n->wait_event->timeout);
            snprintf(lab, sizeof(lab), "timeout %s", d);
            dot_edge(f, n->id, n->wait_event->on_timeout, lab, 1);
            break;
        case NT__NODE__KIND_BRANCH:
            for (size_t k = 0; k < n->branch->n_cases; k++) {
                snprintf(lab, sizeof(lab), "case %zu", k + 1);
                dot_edge(f, n->id, n->branch->cases[k]->to, lab, 0);
            }
            dot_edge(f, n->id, n->branch->default_, "default", 1);
            break;
        case NT__NODE__KIND_SPLIT:
            for (size_t k = 0; k < n->split->n_arms; k++) {
                snprintf(lab, sizeof(lab), "%s (%u)", n->split->arms[k]->name,
                         n->split->arms[k]->weight);
                dot_edge(f, n->id, n->split->arms[k]->to, lab, 0);
            }
            break;
        case NT__NODE__KIND_UPDATE:
            dot_edge(f, n->id, n->update->next, NULL, 0);
            break;
        default:
            break;
        }
    }
    fputs("}\n", f);
    nt_plan_free(p);
    return 0;
}

/* ---------------------------------------------------------------- HTTP */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    membuf_t *b = arg;
    size_t n = size * nmemb;
    char *p = realloc(b->p, b->n + n + 1);
    if (p == NULL)
        return 0;
    memcpy(p + b->n, ptr, n);
    b->p = p;
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

static const char *token(ctl_t *c)
{
    if (c->token != NULL)
        return c->token;
    const char *env = getenv("NURTURE_TOKEN");
    if (env != NULL && *env) {
        c->token = env;
        return env;
    }
    char *path = NULL;
    if (asprintf(&path, "%s/tokens", c->data_dir) < 0)
        return NULL;
    FILE *f = fopen(path, "r");
    free(path);
    if (f == NULL)
        return NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        if (strncmp(line, "ops ", 4) == 0) {
            const char *s = line + 4;
            while (*s == ' ')
                s++;
            const char *e = s;
            while (*e && *e != ' ')
                e++;
            c->token_buf = strndup(s, (size_t)(e - s));
            c->token = c->token_buf;
            break;
        }
    }
    free(line);
    fclose(f);
    return c->token;
}

/* One request. path is appended to the base URL. Returns the HTTP status with *resp (the
 * body, malloc'd, NUL-terminated), or -1 after printing why nothing was received. */
static long http(ctl_t *c, const char *method, const char *path, const char *ctype,
                 const void *body, size_t len, membuf_t *resp)
{
    resp->p = NULL;
    resp->n = 0;
    CURL *h = curl_easy_init();
    if (h == NULL) {
        fprintf(stderr, "nurturectl: cannot initialise libcurl\n");
        return -1;
    }
    char *url = NULL;
    size_t ul = strlen(c->url);
    while (ul > 0 && c->url[ul - 1] == '/')
        ul--;
    if (asprintf(&url, "%.*s%s", (int)ul, c->url, path) < 0) {
        curl_easy_cleanup(h);
        return -1;
    }
    struct curl_slist *hdr = NULL;
    const char *tok = token(c);
    char *auth = NULL;
    if (tok != NULL && asprintf(&auth, "Authorization: Bearer %s", tok) > 0)
        hdr = curl_slist_append(hdr, auth);
    char *ct = NULL;
    if (ctype != NULL && asprintf(&ct, "Content-Type: %s", ctype) > 0)
        hdr = curl_slist_append(hdr, ct);
    if (c->extra_header != NULL)
        hdr = curl_slist_append(hdr, c->extra_header);
    hdr = curl_slist_append(hdr, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 300L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (body != NULL) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    long status = -1;
    CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
        fprintf(stderr, "nurturectl: %s %s: %s\n", method, url, curl_easy_strerror(rc));
        if (rc == CURLE_COULDNT_CONNECT)
            fprintf(stderr, "nurturectl: is nurtured running? (set --url or NURTURE_URL)\n");
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (resp->p == NULL) {
            resp->p = xmalloc(1);
            resp->p[0] = '\0';
        }
        if (status == 401 && tok == NULL)
            fprintf(stderr, "nurturectl: no token: use --token, NURTURE_TOKEN or "
                    "%s/tokens\n", c->data_dir);
    }
    curl_slist_free_all(hdr);
    free(auth);
    free(ct);
    free(url);
    curl_easy_cleanup(h);
    return status;
}

/* Print a server error: the JSON's code and message (and any plan problems), or the body. */
static void print_error(const char *what, long status, const membuf_t *resp)
{
    json_error_t jerr;
    json_t *j = resp->p != NULL ? json_loads(resp->p, 0, &jerr) : NULL;
    json_t *e = json_object_get(j, "error");
    if (json_is_object(e)) {
        fprintf(stderr, "%s: %ld %s: %s\n", what, status,
                json_string_value(json_object_get(e, "code")) ?: "error",
                json_string_value(json_object_get(e, "message")) ?: "");
        json_t *probs = json_object_get(e, "problems");
        size_t i;
        json_t *pr;
        json_array_foreach(probs, i, pr) {
            const char *node = json_string_value(json_object_get(pr, "node"));
            const char *msg = json_string_value(json_object_get(pr, "message"));
            if (node != NULL)
                fprintf(stderr, "%s: node %s: %s\n", what, node, msg ? msg : "");
            else
                fprintf(stderr, "%s: plan: %s\n", what, msg ? msg : "");
        }
    } else {
        fprintf(stderr, "%s: HTTP %ld: %s\n", what, status,
                resp->p != NULL && *resp->p ? resp->p : "(empty answer)");
    }
    json_decref(j);
}

/* GET path and parse JSON. Returns the document or NULL after printing why. */
static json_t *get_json(ctl_t *c, const char *path, const char *what)
{
    membuf_t r;
    long st = http(c, "GET", path, NULL, NULL, 0, &r);
    if (st < 0)
        return NULL;
    if (st != 200) {
        print_error(what, st, &r);
        free(r.p);
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loads(r.p, 0, &jerr);
    if (j == NULL)
        fprintf(stderr, "%s: the server's answer is not JSON: %s\n", what, jerr.text);
    free(r.p);
    return j;
}

static char *escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if (e == NULL) {
        fprintf(stderr, "nurturectl: out of memory\n");
        exit(1);
    }
    char *r = strdup(e);
    curl_free(e);
    return r;
}

/* prefix, the URL-escaped id and suffix as one path (caller frees); exits when out of memory. */
static char *id_path(const char *prefix, const char *id, const char *suffix)
{
    char *e = escape(id);
    char *path = NULL;
    if (asprintf(&path, "%s%s%s", prefix, e, suffix) < 0)
        exit(1);
    free(e);
    return path;
}

/* ---------------------------------------------------------------- plan commands */

static int cmd_publish(ctl_t *c, int argc, char **argv)
{
    if (argc < 1) {
        fprintf(stderr, "usage: nurturectl publish FILE.textpb... [--activate]\n");
        return 2;
    }
    int bad = 0;
    for (int i = 0; i < argc; i++) {
        membuf_t bin;
        nt_plan_t *p = load_plan(c, argv[i], &bin, 1);
        if (p == NULL) {
            fprintf(stderr, "%s: not published: fix the problems above\n", argv[i]);
            bad = 1;
            continue;
        }
        membuf_t r;
        long st = http(c, "POST", c->activate ? "/v1/plans?activate=1" : "/v1/plans",
                       "application/x-protobuf", bin.p, bin.n, &r);
        if (st == 200 || st == 201) {
            json_error_t jerr;
            json_t *j = json_loads(r.p, 0, &jerr);
            json_t *act = json_object_get(j, "active");
            printf("%s: published %s version %lld%s\n", argv[i],
                   json_string_value(json_object_get(j, "id")) ?: p->wf->id,
                   (long long)json_integer_value(json_object_get(j, "version")),
                   json_is_true(act) ? " (active)" : "");
            json_decref(j);
        } else {
            if (st >= 0)
                print_error(argv[i], st, &r);
            bad = 1;
        }
        free(r.p);
        free(bin.p);
        nt_plan_free(p);
    }
    return bad;
}

static int cmd_plans(ctl_t *c, int argc, char **argv)
{
    if (argc != 0) {
        fprintf(stderr, "usage: nurturectl plans\n");
        return 2;
    }
    json_t *j = get_json(c, "/v1/plans", "plans");
    if (j == NULL)
        return 1;
    json_t *plans = json_object_get(j, "plans");
    printf("%-32s %-8s %-8s %-12s %s\n", "PLAN", "ACTIVE", "LATEST", "VERSIONS", "NAME");
    size_t i;
    json_t *p;
    json_array_foreach(plans, i, p) {
        char vers[256] = "";
        size_t o = 0, k;
        json_t *v;
        json_array_foreach(json_object_get(p, "versions"), k, v) {
            if (o < sizeof(vers))
                o += (size_t)snprintf(vers + o, sizeof(vers) - o, "%s%lld", k ? "," : "",
                                      (long long)json_integer_value(v));
        }
        json_t *act = json_object_get(p, "active");
        char actbuf[32];
        if (json_is_integer(act))
            snprintf(actbuf, sizeof(actbuf), "%lld", (long long)json_integer_value(act));
        else
            snprintf(actbuf, sizeof(actbuf), "%s", json_is_true(act) ? "yes" : "-");
        printf("%-32s %-8s %-8lld %-12s %s\n", json_string_value(json_object_get(p, "id")) ?: "?",
               actbuf, (long long)json_integer_value(json_object_get(p, "latest")), vers,
               json_string_value(json_object_get(p, "name")) ?: "");
    }
    if (json_array_size(plans) == 0)
        printf("(no plans published)\n");
    json_decref(j);
    return 0;
}

static int cmd_stats(ctl_t *c, int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "usage: nurturectl stats PLAN\n");
        return 2;
    }
    char *path = id_path("/v1/plans/", argv[0], "/stats");
    json_t *j = get_json(c, path, argv[0]);
    free(path);
    if (j == NULL)
        return 1;
    printf("plan %s: %lld enrolled, %lld active\n\n", argv[0],
           (long long)json_integer_value(json_object_get(j, "enrolled")),
           (long long)json_integer_value(json_object_get(j, "active")));
    printf("%-32s %-11s %10s %10s  %s\n", "NODE", "KIND", "CURRENT", "ENTERED", "LABEL");
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(j, "nodes"), i, n) {
        printf("%-32s %-11s %10lld %10lld  %s\n",
               json_string_value(json_object_get(n, "id")) ?: "?",
               json_string_value(json_object_get(n, "kind")) ?: "?",
               (long long)json_integer_value(json_object_get(n, "current")),
               (long long)json_integer_value(json_object_get(n, "entered")),
               json_string_value(json_object_get(n, "label")) ?: "");
    }
    json_t *exits = json_object_get(j, "exits");
    if (json_object_size(exits) > 0) {
        printf("\n%-32s %10s\n", "EXIT REASON", "LEADS");
        const char *k;
        json_t *v;
        json_object_foreach(exits, k, v) {
            printf("%-32s %10lld\n", k, (long long)json_integer_value(v));
        }
    }
    json_decref(j);
    return 0;
}

/* ---------------------------------------------------------------- lead commands */

static void print_scalar(const json_t *v)
{
    if (json_is_string(v))
        printf("%s", json_string_value(v));
    else if (json_is_integer(v))
        printf("%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        printf("%g", json_real_value(v));
    else if (json_is_true(v))
        printf("true");
    else if (json_is_false(v))
        printf("false");
    else
        printf("-");
}

static int cmd_lead(ctl_t *c, int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "usage: nurturectl lead ID\n");
        return 2;
    }
    char *path = id_path("/v1/leads/", argv[0], "");
    json_t *j = get_json(c, path, argv[0]);
    free(path);
    if (j == NULL)
        return 1;
    printf("lead   %s\nscore  ", json_string_value(json_object_get(j, "id")) ?: argv[0]);
    print_scalar(json_object_get(j, "score"));
    printf("\nstage  ");
    print_scalar(json_object_get(j, "stage"));
    printf("\n\nattributes:\n");
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(j, "attributes"), k, v) {
        printf("  %-20s ", k);
        print_scalar(v);
        printf("\n");
    }
    json_t *runs = json_object_get(j, "runs");
    printf("\nruns:\n");
    if (json_array_size(runs) == 0)
        printf("  (none)\n");
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r) {
        printf("  %s v", json_string_value(json_object_get(r, "plan")) ?: "?");
        print_scalar(json_object_get(r, "version"));
        printf("  %-8s node ", json_string_value(json_object_get(r, "status")) ?: "?");
        print_scalar(json_object_get(r, "node"));
        printf("  visit ");
        print_scalar(json_object_get(r, "visit"));
        const char *why = json_string_value(json_object_get(r, "exit_reason"));
        if (why != NULL && *why)
            printf("  exit %s", why);
        json_t *due = json_object_get(r, "due_at");
        if (due != NULL && !json_is_null(due)) {
            printf("  due ");
            print_scalar(due);
        }
        printf("\n");
    }
    json_t *tl = json_object_get(j, "timeline");
    printf("\ntimeline (newest first):\n");
    if (json_array_size(tl) == 0)
        printf("  (empty)\n");
    json_array_foreach(tl, i, r) {
        printf("  ");
        print_scalar(json_object_get(r, "at"));
        printf("  %-14s %s\n", json_string_value(json_object_get(r, "kind")) ?: "",
               json_string_value(json_object_get(r, "text")) ?: "");
    }
    json_decref(j);
    return 0;
}

static int cmd_event(ctl_t *c, int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: nurturectl event LEAD TYPE [key=value...] [--machine]\n");
        return 2;
    }
    json_t *attrs = json_object();
    for (int i = 2; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (eq == NULL || eq == argv[i]) {
            fprintf(stderr, "nurturectl event: '%s' is not key=value\n", argv[i]);
            json_decref(attrs);
            return 2;
        }
        char *key = strndup(argv[i], (size_t)(eq - argv[i]));
        json_object_set_new(attrs, key, json_string(eq + 1));
        free(key);
    }
    json_t *body = json_pack("{s:s, s:s, s:o, s:b}", "lead", argv[0], "type", argv[1],
                             "attributes", attrs, "machine", c->machine);
    char *s = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (s == NULL) {
        fprintf(stderr, "nurturectl event: lead, type and attributes must be UTF-8\n");
        return 2;
    }
    membuf_t r;
    long st = http(c, "POST", "/v1/events", "application/json", s, strlen(s), &r);
    free(s);
    int rc = 0;
    if (st == 200 || st == 201 || st == 202) {
        json_error_t jerr;
        json_t *j = json_loads(r.p, 0, &jerr);
        printf("event %s for %s posted (%s)\n", argv[1], argv[0],
               json_string_value(json_object_get(j, "id")) ?: "queued");
        json_decref(j);
    } else {
        if (st >= 0)
            print_error("event", st, &r);
        rc = 1;
    }
    free(r.p);
    return rc;
}

/* ---------------------------------------------------------------- tasks */

static int tasks_list(ctl_t *c, int argc, char **argv)
{
    char *q = NULL, *path;
    json_t *j;
    size_t i;
    json_t *t;

    if (argc > 1) {
        fprintf(stderr, "usage: nurturectl tasks list [REP|team:TEAM]\n");
        return 2;
    }
    if (argc == 1 && strncmp(argv[0], "team:", 5) == 0)
        q = id_path("?team=", argv[0] + 5, "");
    else if (argc == 1)
        q = id_path("?rep=", argv[0], "");
    path = xmalloc(strlen("/v1/tasks") + (q ? strlen(q) : 0) + 1);
    sprintf(path, "/v1/tasks%s", q ? q : "");
    free(q);
    j = get_json(c, path, "tasks");
    free(path);
    if (j == NULL)
        return 1;
    if (json_array_size(json_object_get(j, "tasks")) == 0)
        printf("no open tasks\n");
    json_array_foreach(json_object_get(j, "tasks"), i, t) {
        printf("%s\n  due ", json_string_value(json_object_get(t, "id")) ?: "?");
        print_scalar(json_object_get(t, "due"));
        printf("  %-6s %-8s owner %s team %s\n",
               json_string_value(json_object_get(t, "priority")) ?: "normal",
               json_string_value(json_object_get(t, "status")) ?: "?",
               json_string_value(json_object_get(t, "owner")) ?: "(queue)",
               json_string_value(json_object_get(t, "team")) ?: "?");
        printf("  lead %s: %s\n", json_string_value(json_object_get(t, "lead")) ?: "?",
               json_string_value(json_object_get(t, "reason")) ?: "");
        if (json_string_value(json_object_get(t, "points")))
            printf("  points: %s\n", json_string_value(json_object_get(t, "points")));
    }
    json_decref(j);
    return 0;
}

static int tasks_complete(ctl_t *c, int argc, char **argv)
{
    json_t *body;
    char *s, *path, note[4096] = "";
    membuf_t r;
    long st;
    int rc = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: nurturectl tasks complete ID OUTCOME [NOTE...]\n");
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (i > 2)
            strncat(note, " ", sizeof(note) - strlen(note) - 1);
        strncat(note, argv[i], sizeof(note) - strlen(note) - 1);
    }
    body = json_pack("{s:s, s:s}", "outcome", argv[1], "note", note);
    s = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (s == NULL) {
        fprintf(stderr, "nurturectl tasks complete: outcome and note must be UTF-8\n");
        return 2;
    }
    path = id_path("/v1/tasks/", argv[0], "/complete");
    st = http(c, "POST", path, "application/json", s, strlen(s), &r);
    free(path);
    free(s);
    if (st == 200) {
        printf("task %s done: %s\n", argv[0], argv[1]);
    } else {
        if (st >= 0)
            print_error("tasks complete", st, &r);
        rc = 1;
    }
    free(r.p);
    return rc;
}

static int cmd_tasks(ctl_t *c, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "list") == 0)
        return tasks_list(c, argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "complete") == 0)
        return tasks_complete(c, argc - 1, argv + 1);
    fprintf(stderr, "usage: nurturectl tasks list [REP|team:TEAM]\n"
                    "       nurturectl tasks complete ID OUTCOME [NOTE...]\n");
    return 2;
}

/* ---------------------------------------------------------------- enrol */

typedef struct enrol {
    ctl_t *c;
    const char *plan;
    char *path;          /* /v1/plans/<plan>/enrol */
    json_t *batch;       /* array of lead objects */
    long enrolled;
    long skipped;
    int failed;          /* a request failed: stop */
} enrol_t;

static void enrol_flush(enrol_t *e)
{
    if (json_array_size(e->batch) == 0 || e->failed)
        return;
    json_t *body = json_pack("{s:O}", "leads", e->batch);
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    size_t sent = json_array_size(e->batch);
    json_array_clear(e->batch);
    if (s == NULL) {
        fprintf(stderr, "enrol: cannot encode %zu leads (not UTF-8?)\n", sent);
        e->skipped += (long)sent;
        return;
    }
    membuf_t r;
    long st = http(e->c, "POST", e->path, "application/json", s, strlen(s), &r);
    free(s);
    if (st == 200) {
        json_error_t jerr;
        json_t *j = json_loads(r.p, 0, &jerr);
        e->enrolled += (long)json_integer_value(json_object_get(j, "enrolled"));
        size_t i;
        json_t *sk;
        json_array_foreach(json_object_get(j, "skipped"), i, sk) {
            const char *why = json_string_value(json_object_get(sk, "message"));

            fprintf(stderr, "lead %s: skipped: %s\n",
                    json_string_value(json_object_get(sk, "id")) ?: "?",
                    why ? why : json_string_value(json_object_get(sk, "reason")) ?: "");
            e->skipped++;
        }
        json_decref(j);
    } else {
        if (st >= 0)
            print_error("enrol", st, &r);
        e->failed = 1;
        e->skipped += (long)sent;
    }
    free(r.p);
}

static int cmd_enrol(ctl_t *c, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: nurturectl enrol PLAN LEADS.csv\n");
        return 2;
    }
    const char *file = argv[1];
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    if (f == NULL) {
        fprintf(stderr, "nurturectl: cannot read %s: %s\n", file, strerror(errno));
        return 1;
    }
    nt_csv_t *csv = nt_csv_new(f, CTL_CSV_MAX_FIELD, CTL_CSV_MAX_FIELDS);
    if (csv == NULL) {
        fprintf(stderr, "nurturectl: out of memory\n");
        return 1;
    }
    char **fields;
    size_t nf, line;
    char *err = NULL;
    int r, rc = 0;
    /* The header row: malformed rows before it are reported and skipped. */
    while ((r = nt_csv_next(csv, &fields, &nf, &line, &err)) < 0) {
        fprintf(stderr, "%s: %s\n", file, err != NULL ? err : "malformed row");
        free(err);
        err = NULL;
    }
    if (r == 0) {
        fprintf(stderr, "%s: no header row\n", file);
        nt_csv_free(csv);
        if (f != stdin)
            fclose(f);
        return 1;
    }
    size_t ncols = nf;
    char **cols = xmalloc(ncols * sizeof(*cols));
    long id_col = -1, email_col = -1;
    for (size_t i = 0; i < ncols; i++) {
        char *name = strdup(fields[i]);
        char *s = name, *e = name + strlen(name);
        while (*s == ' ' || *s == '\t')
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        memmove(name, s, strlen(s) + 1);
        for (char *p = name; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        cols[i] = name;
        if (strcmp(name, "id") == 0)
            id_col = (long)i;
        else if (strcmp(name, "email") == 0)
            email_col = (long)i;
        else if (strcmp(name, "score") != 0 && strcmp(name, "stage") != 0 &&
                 !nt_attr_name_valid(name)) {
            fprintf(stderr, "%s: line %zu: column '%s' is not a valid attribute name (use 1 to "
                    "64 of a-z, 0-9 and '_')\n", file, line, fields[i]);
            rc = 1;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(cols[k], name) == 0) {
                fprintf(stderr, "%s: line %zu: column '%s' appears twice\n", file, line, name);
                rc = 1;
            }
    }
    if (id_col < 0)
        id_col = email_col;
    if (id_col < 0) {
        fprintf(stderr, "%s: line %zu: no 'id' column (or 'email' to use as the id)\n", file,
                line);
        rc = 1;
    }
    if (rc != 0) {
        fprintf(stderr, "%s: nothing enrolled\n", file);
        goto out;
    }

    enrol_t e = {.c = c, .plan = argv[0], .batch = json_array()};
    e.path = id_path("/v1/plans/", argv[0], "/enrol");
    long bad_rows = 0;
    while ((r = nt_csv_next(csv, &fields, &nf, &line, &err)) != 0 && !e.failed) {
        if (r < 0) {
            fprintf(stderr, "%s: %s\n", file, err != NULL ? err : "malformed row");
            free(err);
            err = NULL;
            bad_rows++;
            continue;
        }
        if (nf != ncols) {
            fprintf(stderr, "%s: line %zu: %zu fields, the header has %zu\n", file, line, nf,
                    ncols);
            bad_rows++;
            continue;
        }
        const char *id = fields[id_col];
        if (!nt_lead_id_valid(id)) {
            fprintf(stderr, "%s: line %zu: lead id '%.80s' is invalid (1 to 128 of A-Z, a-z, "
                    "0-9, '.', '_', '@', '+', '-')\n", file, line, id);
            bad_rows++;
            continue;
        }
        json_t *lead = json_object();
        json_t *attrs = json_object();
        int ok = 1;
        json_object_set_new(lead, "id", json_string(id));
        for (size_t i = 0; i < ncols && ok; i++) {
            const char *v = fields[i];
            if ((long)i == id_col && strcmp(cols[i], "id") == 0)
                continue;
            if (*v == '\0')
                continue;
            if (strcmp(cols[i], "score") == 0) {
                char *end;
                errno = 0;
                long long sc = strtoll(v, &end, 10);
                if (errno != 0 || *end != '\0') {
                    fprintf(stderr, "%s: line %zu: score '%.40s' is not a whole number\n",
                            file, line, v);
                    ok = 0;
                } else {
                    json_object_set_new(lead, "score", json_integer(sc));
                }
            } else if (strcmp(cols[i], "stage") == 0) {
                char low[32];
                size_t k;
                for (k = 0; v[k] && k < sizeof(low) - 1; k++)
                    low[k] = (char)tolower((unsigned char)v[k]);
                low[k] = '\0';
                if (nt_stage_parse(low) == 0) {
                    fprintf(stderr, "%s: line %zu: stage '%.40s' is not one of inquiry, mql, "
                            "sal, sql, opportunity, won, lost, disqualified\n", file, line, v);
                    ok = 0;
                } else {
                    json_object_set_new(lead, "stage", json_string(low));
                }
            } else {
                json_t *s = json_string(v);
                if (s == NULL) {
                    fprintf(stderr, "%s: line %zu: column '%s' is not valid UTF-8\n", file,
                            line, cols[i]);
                    ok = 0;
                } else {
                    json_object_set_new(attrs, cols[i], s);
                }
            }
        }
        if (!ok) {
            json_decref(lead);
            json_decref(attrs);
            bad_rows++;
            continue;
        }
        json_object_set_new(lead, "attributes", attrs);
        json_array_append_new(e.batch, lead);
        if (json_array_size(e.batch) >= CTL_ENROL_CHUNK)
            enrol_flush(&e);
    }
    enrol_flush(&e);
    printf("%s: %ld enrolled, %ld skipped by the server, %ld malformed rows skipped\n",
           argv[0], e.enrolled, e.skipped, bad_rows);
    if (e.failed) {
        fprintf(stderr, "enrol: stopped after a failed request; later rows were not sent\n");
        rc = 1;
    }
    json_decref(e.batch);
    free(e.path);
out:
    for (size_t i = 0; i < ncols; i++)
        free(cols[i]);
    free(cols);
    nt_csv_free(csv);
    if (f != stdin)
        fclose(f);
    return rc;
}

/* ---------------------------------------------------------------- events import */

/* The first word after "<role> " on a line of DATA-DIR/tokens, malloc'd, or NULL. */
static char *tokens_file_role(const ctl_t *c, const char *role)
{
    char *path = NULL, *line = NULL, *found = NULL;
    size_t cap = 0, rl = strlen(role);
    ssize_t n;
    if (asprintf(&path, "%s/tokens", c->data_dir) < 0)
        return NULL;
    FILE *f = fopen(path, "r");
    free(path);
    if (f == NULL)
        return NULL;
    while (found == NULL && (n = getline(&line, &cap, f)) > 0) {
        if (strncmp(line, role, rl) != 0 || line[rl] != ' ')
            continue;
        const char *s = line + rl;
        while (*s == ' ')
            s++;
        const char *e = s;
        while (*e && *e != ' ' && *e != '\n' && *e != '\r')
            e++;
        if (e > s)
            found = strndup(s, (size_t)(e - s));
    }
    free(line);
    fclose(f);
    return found;
}

/* The whole of DATA-DIR/webhook.key without its line end, malloc'd, or NULL. */
static char *webhook_key_file(const ctl_t *c)
{
    char *path = NULL, *line = NULL;
    size_t cap = 0;
    ssize_t n;
    if (asprintf(&path, "%s/webhook.key", c->data_dir) < 0)
        return NULL;
    FILE *f = fopen(path, "r");
    free(path);
    if (f == NULL)
        return NULL;
    n = getline(&line, &cap, f);
    fclose(f);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
        line[--n] = '\0';
    if (n <= 0) {
        free(line);
        return NULL;
    }
    return line;
}

/* An email address as nurtured normalises it (trimmed, lowercase, an '@' inside, no space or
 * control character, at most 254 bytes) into out; -1 when it is not one. */
static int event_email(const char *in, char *out, size_t cap)
{
    size_t a = 0, b = strlen(in), o = 0;
    while (a < b && isspace((unsigned char)in[a]))
        a++;
    while (b > a && isspace((unsigned char)in[b - 1]))
        b--;
    if (b == a || b - a >= cap || b - a > 254)
        return -1;
    for (size_t i = a; i < b; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch < 0x21 || ch == 0x7f)
            return -1;
        out[o++] = (char)tolower(ch);
    }
    out[o] = '\0';
    return strchr(out, '@') != NULL && out[0] != '@' && out[o - 1] != '@' ? 0 : -1;
}

typedef struct events_imp {
    ctl_t *c;
    const char *event;
    const char *secret;
    json_t *batch;    /* array of records */
    size_t bytes;     /* about how much JSON the batch is */
    size_t *lines;    /* the CSV line of each record of the batch */
    size_t nlines, cap_lines;
    long applied, already, created, enrolled, unknown;
    int failed;       /* a request failed: stop */
} events_imp_t;

static void events_flush(events_imp_t *e)
{
    if (json_array_size(e->batch) == 0 || e->failed)
        return;
    json_t *body = json_pack("{s:s,s:O}", "event", e->event, "records", e->batch);
    if (e->c->followup != NULL)
        json_object_set_new(body, "followup", json_string(e->c->followup));
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    size_t sent = json_array_size(e->batch);
    if (s == NULL) {
        fprintf(stderr, "events import: cannot encode %zu records\n", sent);
        e->failed = 1;
        return;
    }
    /* X-Nurture-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." body)> */
    long long t = (long long)time(NULL);
    char prefix[32], hex[65], hdr[160];
    int pl = snprintf(prefix, sizeof(prefix), "%lld.", t);
    size_t sl = strlen(s);
    unsigned char *msg = xmalloc((size_t)pl + sl), mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    memcpy(msg, prefix, (size_t)pl);
    memcpy(msg + pl, s, sl);
    if (HMAC(EVP_sha256(), e->secret, (int)strlen(e->secret), msg, (size_t)pl + sl, mac,
             &maclen) == NULL || maclen != 32) {
        free(msg);
        free(s);
        fprintf(stderr, "events import: cannot sign the request\n");
        e->failed = 1;
        return;
    }
    free(msg);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    snprintf(hdr, sizeof(hdr), "X-Nurture-Signature: t=%lld,v1=%s", t, hex);
    e->c->extra_header = hdr;
    membuf_t r;
    long st = http(e->c, "POST", "/v1/webhooks/event", "application/json", s, sl, &r);
    e->c->extra_header = NULL;
    free(s);
    if (st == 200) {
        json_error_t jerr;
        json_t *j = json_loads(r.p, 0, &jerr);
        size_t i;
        json_t *u;
        e->applied += (long)json_integer_value(json_object_get(j, "applied"));
        e->already += (long)json_integer_value(json_object_get(j, "already"));
        e->created += (long)json_integer_value(json_object_get(j, "created"));
        e->enrolled += (long)json_integer_value(json_object_get(j, "enrolled"));
        json_array_foreach(json_object_get(j, "unknown"), i, u) {
            json_int_t k = json_integer_value(json_object_get(u, "index"));
            fprintf(stderr, "line %zu: not applied: %s\n",
                    k >= 0 && (size_t)k < e->nlines ? e->lines[k] : 0,
                    json_string_value(json_object_get(u, "error")) ?: "?");
            e->unknown++;
        }
        json_decref(j);
    } else {
        if (st >= 0)
            print_error("events import", st, &r);
        e->failed = 1;
    }
    free(r.p);
    json_array_clear(e->batch);
    e->bytes = 0;
    e->nlines = 0;
}

static int events_import(ctl_t *c, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: nurturectl events import EVENT BADGES.csv [--followup PLAN]\n");
        return 2;
    }
    const char *event = argv[0], *file = argv[1];
    size_t el = strlen(event);
    int ok_event = el > 0 && el <= 64;
    for (size_t i = 0; i < el; i++)
        if (!(islower((unsigned char)event[i]) || isdigit((unsigned char)event[i]) ||
              event[i] == '_' || event[i] == '-'))
            ok_event = 0;
    if (!ok_event) {
        fprintf(stderr, "nurturectl: the event id must be 1 to 64 of a-z, 0-9, '_' and '-'\n");
        return 2;
    }
    char *tok_buf = NULL, *secret_buf = NULL;
    const char *tok = c->webhook_token ? c->webhook_token : getenv("NURTURE_WEBHOOK_TOKEN");
    const char *secret = c->webhook_secret ? c->webhook_secret : getenv("NURTURE_WEBHOOK_SECRET");
    if (tok == NULL || *tok == '\0')
        tok = tok_buf = tokens_file_role(c, "webhook");
    if (secret == NULL || *secret == '\0')
        secret = secret_buf = webhook_key_file(c);
    if (tok == NULL || secret == NULL) {
        fprintf(stderr, "nurturectl: events import needs %s%s%s (flags, NURTURE_WEBHOOK_TOKEN / "
                "NURTURE_WEBHOOK_SECRET, or %s/tokens and webhook.key)\n",
                tok == NULL ? "a webhook token" : "", tok == NULL && secret == NULL ? " and " : "",
                secret == NULL ? "the webhook secret" : "", c->data_dir);
        free(tok_buf);
        free(secret_buf);
        return 1;
    }
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    if (f == NULL) {
        fprintf(stderr, "nurturectl: cannot read %s: %s\n", file, strerror(errno));
        free(tok_buf);
        free(secret_buf);
        return 1;
    }
    nt_csv_t *csv = nt_csv_new(f, CTL_CSV_MAX_FIELD, CTL_CSV_MAX_FIELDS);
    if (csv == NULL) {
        fprintf(stderr, "nurturectl: out of memory\n");
        exit(1);
    }
    /* columns: the record fields they fill (-1: ignored) */
    static const char *const names[] = {"email", "first_name", "last_name", "company", "title",
                                        "checked_in_at"};
    enum { NNAMES = sizeof(names) / sizeof(names[0]) };
    long col[NNAMES];
    char **fields, *err = NULL;
    size_t nf, line, ncols = 0;
    int r, rc = 0;
    for (size_t k = 0; k < NNAMES; k++)
        col[k] = -1;
    while ((r = nt_csv_next(csv, &fields, &nf, &line, &err)) < 0) {
        fprintf(stderr, "%s: %s\n", file, err != NULL ? err : "malformed row");
        free(err);
        err = NULL;
    }
    if (r == 0) {
        fprintf(stderr, "%s: no header row\n", file);
        rc = 1;
        goto out;
    }
    ncols = nf;
    for (size_t i = 0; i < ncols; i++) {
        char name[72];
        const char *s = fields[i];
        size_t k = 0;
        while (*s == ' ' || *s == '\t')
            s++;
        for (; *s && k < sizeof(name) - 1; s++)
            name[k++] = (char)tolower((unsigned char)*s);
        while (k > 0 && (name[k - 1] == ' ' || name[k - 1] == '\t'))
            k--;
        name[k] = '\0';
        for (k = 0; k < NNAMES && strcmp(names[k], name) != 0; k++)
            ;
        if (k == NNAMES) {
            fprintf(stderr, "%s: line %zu: column '%.64s' is not used (ignored)\n", file, line,
                    fields[i]);
        } else if (col[k] >= 0) {
            fprintf(stderr, "%s: line %zu: column '%s' appears twice\n", file, line, name);
            rc = 1;
        } else {
            col[k] = (long)i;
        }
    }
    if (col[0] < 0) {
        fprintf(stderr, "%s: line %zu: no 'email' column\n", file, line);
        rc = 1;
    }
    if (rc != 0) {
        fprintf(stderr, "%s: nothing imported\n", file);
        goto out;
    }

    events_imp_t e = {.c = c, .event = event, .secret = secret, .batch = json_array()};
    long bad_rows = 0, rows = 0;
    const char *ops_token = c->token;
    c->token = tok;
    while ((r = nt_csv_next(csv, &fields, &nf, &line, &err)) != 0 && !e.failed) {
        if (r < 0) {
            fprintf(stderr, "%s: %s\n", file, err != NULL ? err : "malformed row");
            free(err);
            err = NULL;
            bad_rows++;
            continue;
        }
        if (nf == 1 && fields[0][0] == '\0')
            continue; /* a blank line */
        if (nf != ncols) {
            fprintf(stderr, "%s: line %zu: %zu fields, the header has %zu\n", file, line, nf,
                    ncols);
            bad_rows++;
            continue;
        }
        char email[256];
        if (event_email(fields[col[0]], email, sizeof(email)) != 0) {
            fprintf(stderr, "%s: line %zu: '%.80s' is not an email address\n", file, line,
                    fields[col[0]]);
            bad_rows++;
            continue;
        }
        json_t *rec = json_object();
        int ok = 1;
        size_t bytes = 16;
        json_object_set_new(rec, "email", json_string(email));
        for (size_t k = 1; k < NNAMES && ok; k++) {
            const char *v = col[k] >= 0 ? fields[col[k]] : "";
            size_t vl = strlen(v), max = k == NNAMES - 1 ? 40 : 200;
            if (vl == 0)
                continue;
            for (size_t i = 0; i < vl && ok; i++)
                if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
                    ok = 0;
            json_t *js = ok && vl <= max ? json_string(v) : NULL;
            if (js == NULL) {
                fprintf(stderr, "%s: line %zu: %s must be 1 to %zu bytes of UTF-8 text without "
                        "control characters\n", file, line, names[k], max);
                ok = 0;
                break;
            }
            json_object_set_new(rec, names[k], js);
            bytes += vl + 16;
        }
        if (!ok) {
            json_decref(rec);
            bad_rows++;
            continue;
        }
        if (e.nlines == e.cap_lines) {
            e.cap_lines = e.cap_lines ? 2 * e.cap_lines : CTL_EVENTS_CHUNK;
            e.lines = realloc(e.lines, e.cap_lines * sizeof(*e.lines));
            if (e.lines == NULL) {
                fprintf(stderr, "nurturectl: out of memory\n");
                exit(1);
            }
        }
        e.lines[e.nlines++] = line;
        json_array_append_new(e.batch, rec);
        e.bytes += bytes + strlen(email);
        rows++;
        if (json_array_size(e.batch) >= CTL_EVENTS_CHUNK || e.bytes >= CTL_EVENTS_CHUNK_BYTES)
            events_flush(&e);
    }
    events_flush(&e);
    c->token = ops_token;
    printf("%s: %ld rows: %ld checked in, %ld already, %ld new leads (%ld enrolled), "
           "%ld not applied, %ld malformed rows skipped\n",
           event, rows, e.applied, e.already, e.created, e.enrolled, e.unknown, bad_rows);
    if (e.failed) {
        fprintf(stderr, "events import: stopped after a failed request; later rows were not "
                "sent\n");
        rc = 1;
    }
    json_decref(e.batch);
    free(e.lines);
out:
    nt_csv_free(csv);
    if (f != stdin)
        fclose(f);
    free(tok_buf);
    free(secret_buf);
    return rc;
}

static int cmd_events(ctl_t *c, int argc, char **argv)
{
    if (argc >= 1 && strcmp(argv[0], "import") == 0)
        return events_import(c, argc - 1, argv + 1);
    fprintf(stderr, "usage: nurturectl events import EVENT BADGES.csv [--followup PLAN]\n");
    return 2;
}

/* ---------------------------------------------------------------- main */

typedef struct command {
    const char *name;
    int (*fn)(ctl_t *c, int argc, char **argv);
    int remote;    /* talks to nurtured */
} command_t;

static const command_t commands[] = {
    {"validate", cmd_validate, 0}, {"compile", cmd_compile, 0}, {"publish", cmd_publish, 1},
    {"dot", cmd_dot, 0},           {"enrol", cmd_enrol, 1},     {"enroll", cmd_enrol, 1},
    {"lead", cmd_lead, 1},         {"event", cmd_event, 1},     {"plans", cmd_plans, 1},
    {"stats", cmd_stats, 1},       {"tasks", cmd_tasks, 1},     {"events", cmd_events, 1},
};

int main(int argc, char **argv)
{
    ctl_t c = {0};
    c.url = getenv("NURTURE_URL");
    if (c.url == NULL || *c.url == '\0')
        c.url = "http://127.0.0.1:7700";
    c.data_dir = "./nurture-data";

    char **pos = xmalloc((size_t)argc * sizeof(*pos));
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (strcmp(a, "--url") == 0)
            slot = &c.url;
        else if (strcmp(a, "--token") == 0)
            slot = &c.token;
        else if (strcmp(a, "--data-dir") == 0)
            slot = &c.data_dir;
        else if (strcmp(a, "--modules-dir") == 0)
            slot = &c.modules_dir;
        else if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0)
            slot = &c.out;
        else if (strcmp(a, "--followup") == 0)
            slot = &c.followup;
        else if (strcmp(a, "--webhook-token") == 0)
            slot = &c.webhook_token;
        else if (strcmp(a, "--webhook-secret") == 0)
            slot = &c.webhook_secret;
        if (slot != NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "nurturectl: %s needs a value\n", a);
                free(pos);
                return 2;
            }
            *slot = argv[++i];
            continue;
        }
        if (strncmp(a, "--", 2) == 0 && strchr(a, '=') != NULL) {
            /* --key=value */
            const char *eq = strchr(a, '=');
            size_t kl = (size_t)(eq - a);
            if (kl == 5 && strncmp(a, "--url", 5) == 0)
                c.url = eq + 1;
            else if (kl == 7 && strncmp(a, "--token", 7) == 0)
                c.token = eq + 1;
            else if (kl == 10 && strncmp(a, "--data-dir", 10) == 0)
                c.data_dir = eq + 1;
            else if (kl == 13 && strncmp(a, "--modules-dir", 13) == 0)
                c.modules_dir = eq + 1;
            else if (kl == 10 && strncmp(a, "--followup", 10) == 0)
                c.followup = eq + 1;
            else if (kl == 15 && strncmp(a, "--webhook-token", 15) == 0)
                c.webhook_token = eq + 1;
            else if (kl == 16 && strncmp(a, "--webhook-secret", 16) == 0)
                c.webhook_secret = eq + 1;
            else {
                fprintf(stderr, "nurturectl: unknown option %s (see nurturectl help)\n", a);
                free(pos);
                return 2;
            }
            continue;
        }
        if (strcmp(a, "--activate") == 0) {
            c.activate = 1;
            continue;
        }
        if (strcmp(a, "--machine") == 0) {
            c.machine = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            free(pos);
            return 0;
        }
        if (strcmp(a, "--") == 0) {
            while (++i < argc)
                pos[npos++] = argv[i];
            break;
        }
        if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "nurturectl: unknown option %s (see nurturectl help)\n", a);
            free(pos);
            return 2;
        }
        pos[npos++] = argv[i];
    }
    if (npos == 0) {
        usage(stderr);
        free(pos);
        return 2;
    }
    if (strcmp(pos[0], "help") == 0) {
        usage(stdout);
        free(pos);
        return 0;
    }
    const command_t *cmd = NULL;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, pos[0]) == 0)
            cmd = &commands[i];
    if (cmd == NULL) {
        fprintf(stderr, "nurturectl: unknown command '%s' (see nurturectl help)\n", pos[0]);
        free(pos);
        return 2;
    }
    if (c.activate && cmd->fn != cmd_publish) {
        fprintf(stderr, "nurturectl: --activate only applies to publish\n");
        free(pos);
        return 2;
    }
    if (c.out != NULL && cmd->fn != cmd_compile) {
        fprintf(stderr, "nurturectl: -o only applies to compile\n");
        free(pos);
        return 2;
    }
    if (c.followup != NULL && cmd->fn != cmd_events) {
        fprintf(stderr, "nurturectl: --followup only applies to events import\n");
        free(pos);
        return 2;
    }
    nt_log_init(NT_LOG_WARN, NULL);
    if (cmd->remote)
        curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmd->fn(&c, npos - 1, pos + 1);
    if (cmd->remote)
        curl_global_cleanup();
    nt_modules_free(c.mods);
    free(c.token_buf);
    free(pos);
    nt_log_fini();
    return rc;
}
