/* The Redis scripts of orchestrator/lua, embedded at build time (tools/cmake/embed_lua.cmake). */
#ifndef NT_LUA_SCRIPTS_H
#define NT_LUA_SCRIPTS_H

#include <stddef.h>

typedef struct nt_lua_script {
    const char *name;   /* file name without .lua */
    const char *source; /* the script */
} nt_lua_script_t;

extern const nt_lua_script_t nt_lua_scripts[];
extern const size_t nt_lua_nscripts;

#endif
