/* Channel plugins: loading from the modules directory, lookup by name, start and stop. */
#ifndef NT_MODULES_H
#define NT_MODULES_H

#include <stddef.h>
#include <stdint.h>

#include "nurture/channel.h"

typedef struct nt_module {
    const nt_channel_ops_t *ops; /* the plugin's ops (checked ABI) */
    void *handle;                /* dlopen handle */
    void *state;                 /* from ops->init, once started */
    int started;
    char *path;
} nt_module_t;

typedef struct nt_modules nt_modules_t;

/* dlopen(RTLD_NOW|RTLD_LOCAL) every nt_*.so in dir and check its entry symbol. A plugin with
 * another ABI version, a too small ops struct, no entry symbol or a duplicate name is refused
 * with a log line naming the file and the versions, and skipped. Returns the set (possibly
 * empty), or NULL with *errmsg set when dir cannot be read. */
nt_modules_t *nt_modules_load(const char *dir, char **errmsg);

/* Check one loaded ops struct as the loader does. Returns NT_OK or NT_EABI/NT_EINVAL with
 * *errmsg set (malloc'd). Exposed for tests. */
nt_rc_t nt_modules_check(const nt_channel_ops_t *ops, char **errmsg);

const nt_module_t *nt_modules_find(const nt_modules_t *mods, const char *name);
size_t nt_modules_count(const nt_modules_t *mods);
const nt_module_t *nt_modules_at(const nt_modules_t *mods, size_t i);

/* Call init on every plugin. A plugin whose init fails is logged and left unstarted (its sends
 * stay in the outbox). Returns NT_OK. */
nt_rc_t nt_modules_start(nt_modules_t *mods, const nt_channel_host_t *host);

/* Shutdown every started plugin, dlclose all, free. NULL is a no-op. */
void nt_modules_free(nt_modules_t *mods);

/* The plugin's NT_CHANNEL_* flags (zero from a plugin whose ops struct predates them). */
uint32_t nt_module_flags(const nt_module_t *m);

/* Non-zero when outcome is "sent", "failed" or one of the channel's outcomes. */
int nt_module_has_outcome(const nt_module_t *m, const char *outcome);

#endif
