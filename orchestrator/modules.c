/* Channel plugins: dlopen every nt_*.so in the modules directory, check its ops struct the way
 * nginx checks a module (version first, then size, then contents), start and stop them. */
#include "modules.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"
#include "log.h"

struct nt_modules {
    nt_module_t *v;
    size_t n;
};

static int valid_name(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 64)
        return 0;
    for (; *s != '\0'; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    }
    return 1;
}

/* The ABI version is read before anything else: a plugin of another version may lay out every
 * other field differently. */
nt_rc_t nt_modules_check(const nt_channel_ops_t *ops, char **errmsg)
{
    if (errmsg != NULL)
        *errmsg = NULL;
    char *msg = NULL;
    nt_rc_t rc = NT_EINVAL;
    if (ops == NULL) {
        msg = nt_msgf("entry returned no ops");
    } else if (ops->abi_version != NT_CHANNEL_ABI_VERSION) {
        msg = nt_msgf("channel ABI %u, nurtured speaks %u", (unsigned)ops->abi_version,
                      (unsigned)NT_CHANNEL_ABI_VERSION);
        rc = NT_EABI;
    } else if (ops->size < offsetof(nt_channel_ops_t, flags)) {
        msg = nt_msgf("ops struct of %u bytes, at least %zu needed", (unsigned)ops->size,
                      offsetof(nt_channel_ops_t, flags));
        rc = NT_EABI;
    } else if (!valid_name(ops->name)) {
        msg = nt_msgf("channel name must be [a-z0-9_]+ (at most 64)");
    } else if (ops->dispatch == NULL) {
        msg = nt_msgf("channel '%s' has no dispatch hook", ops->name);
    } else {
        return NT_OK;
    }
    if (errmsg != NULL)
        *errmsg = msg;
    else
        free(msg);
    return rc;
}

static int is_plugin_file(const char *name)
{
    size_t n = strlen(name);
    return n > 6 && strncmp(name, "nt_", 3) == 0 && strcmp(name + n - 3, ".so") == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Load one file into mods (on success) or log why not. */
static void load_one(nt_modules_t *mods, const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        const char *e = dlerror();
        nt_log_error("modules", "refusing %s: %s", path, e != NULL ? e : "dlopen failed");
        return;
    }
    dlerror();
    void *sym = dlsym(h, NT_CHANNEL_ENTRY_SYMBOL);
    if (sym == NULL) {
        nt_log_error("modules", "refusing %s: no %s symbol", path, NT_CHANNEL_ENTRY_SYMBOL);
        dlclose(h);
        return;
    }
    nt_channel_entry_fn *entry;
    /* POSIX dlsym returns an object pointer; the function pointer crosses via memcpy. */
    memcpy(&entry, &sym, sizeof(entry));
    const nt_channel_ops_t *ops = entry();
    char *err = NULL;
    if (nt_modules_check(ops, &err) != NT_OK) {
        nt_log_error("modules", "refusing %s: %s", path, err != NULL ? err : "invalid");
        free(err);
        dlclose(h);
        return;
    }
    if (nt_modules_find(mods, ops->name) != NULL) {
        nt_log_error("modules", "refusing %s: channel '%s' is already loaded from %s", path,
                     ops->name, nt_modules_find(mods, ops->name)->path);
        dlclose(h);
        return;
    }
    nt_module_t *v = realloc(mods->v, (mods->n + 1) * sizeof(*v));
    char *p = strdup(path);
    if (v == NULL || p == NULL) {
        if (v != NULL)
            mods->v = v;
        free(p);
        nt_log_error("modules", "refusing %s: out of memory", path);
        dlclose(h);
        return;
    }
    mods->v = v;
    mods->v[mods->n] = (nt_module_t){.ops = ops, .handle = h, .state = NULL, .started = 0,
                                     .path = p};
    mods->n++;
    nt_log_info("modules", "loaded channel '%s' from %s", ops->name, path);
}

nt_modules_t *nt_modules_load(const char *dir, char **errmsg)
{
    if (errmsg != NULL)
        *errmsg = NULL;
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errmsg != NULL)
            *errmsg = nt_msgf("cannot read modules directory %s: %m", dir);
        return NULL;
    }
    nt_modules_t *mods = calloc(1, sizeof(*mods));
    char **names = NULL;
    size_t nnames = 0;
    struct dirent *de;
    int oom = mods == NULL;
    while (!oom && (de = readdir(d)) != NULL) {
        if (!is_plugin_file(de->d_name))
            continue;
        char **nn = realloc(names, (nnames + 1) * sizeof(*nn));
        if (nn == NULL) {
            oom = 1;
            break;
        }
        names = nn;
        names[nnames] = nt_msgf("%s/%s", dir, de->d_name);
        if (names[nnames] == NULL) {
            oom = 1;
            break;
        }
        nnames++;
    }
    closedir(d);
    if (!oom) {
        /* Sorted, so that which of two duplicates wins does not depend on readdir order. */
        if (nnames > 1)
            qsort(names, nnames, sizeof(*names), cmp_str);
        for (size_t i = 0; i < nnames; i++)
            load_one(mods, names[i]);
    }
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    if (oom) {
        nt_modules_free(mods);
        if (errmsg != NULL)
            *errmsg = nt_msgf("out of memory loading %s", dir);
        return NULL;
    }
    return mods;
}

const nt_module_t *nt_modules_find(const nt_modules_t *mods, const char *name)
{
    if (mods == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < mods->n; i++) {
        if (strcmp(mods->v[i].ops->name, name) == 0)
            return &mods->v[i];
    }
    return NULL;
}

size_t nt_modules_count(const nt_modules_t *mods)
{
    return mods != NULL ? mods->n : 0;
}

const nt_module_t *nt_modules_at(const nt_modules_t *mods, size_t i)
{
    return mods != NULL && i < mods->n ? &mods->v[i] : NULL;
}

nt_rc_t nt_modules_start(nt_modules_t *mods, const nt_channel_host_t *host)
{
    if (mods == NULL)
        return NT_OK;
    for (size_t i = 0; i < mods->n; i++) {
        nt_module_t *m = &mods->v[i];
        if (m->started)
            continue;
        if (m->ops->init == NULL) {
            m->started = 1;
            continue;
        }
        void *state = NULL;
        char *err = NULL;
        nt_rc_t rc = m->ops->init(host, &state, &err);
        if (rc != NT_OK) {
            nt_log_error("modules", "channel '%s' did not start (%s): %s", m->ops->name,
                         nt_strerror(rc), err != NULL ? err : "no detail");
            free(err);
            continue;
        }
        m->state = state;
        m->started = 1;
        nt_log_info("modules", "channel '%s' started", m->ops->name);
    }
    return NT_OK;
}

void nt_modules_free(nt_modules_t *mods)
{
    if (mods == NULL)
        return;
    for (size_t i = 0; i < mods->n; i++) {
        nt_module_t *m = &mods->v[i];
        if (m->started && m->ops->shutdown != NULL)
            m->ops->shutdown(m->state);
        m->started = 0;
        m->state = NULL;
    }
    /* Close only after every shutdown: one plugin's shutdown may still run code that another
     * plugin handed to the loop. */
    for (size_t i = 0; i < mods->n; i++) {
        dlclose(mods->v[i].handle);
        free(mods->v[i].path);
    }
    free(mods->v);
    free(mods);
}

int nt_module_has_outcome(const nt_module_t *m, const char *outcome)
{
    if (outcome == NULL)
        return 0;
    if (strcmp(outcome, "sent") == 0 || strcmp(outcome, "failed") == 0)
        return 1;
    if (m == NULL || m->ops->outcomes == NULL)
        return 0;
    for (const char *const *o = m->ops->outcomes; *o != NULL; o++) {
        if (strcmp(*o, outcome) == 0)
            return 1;
    }
    return 0;
}

uint32_t nt_module_flags(const nt_module_t *m)
{
    const nt_channel_ops_t *ops = m->ops;

    if (ops->size < offsetof(nt_channel_ops_t, flags) + sizeof(ops->flags))
        return 0;
    return ops->flags;
}
