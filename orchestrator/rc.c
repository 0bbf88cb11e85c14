/* nt_strerror: names for nt_rc_t. */
#include "nurture/rc.h"

const char *nt_strerror(nt_rc_t rc)
{
    switch (rc) {
    case NT_OK: return "ok";
    case NT_AGAIN: return "in progress";
    case NT_ERR: return "error";
    case NT_ENOMEM: return "out of memory";
    case NT_EINVAL: return "invalid input";
    case NT_ENOTFOUND: return "not found";
    case NT_ECONFLICT: return "conflict";
    case NT_EUNAVAIL: return "unavailable";
    case NT_ETIMEOUT: return "timed out";
    case NT_ECANCELED: return "canceled";
    case NT_EABI: return "ABI mismatch";
    case NT_EEXIST: return "already exists";
    case NT_ETOOBIG: return "too large";
    case NT_EPERM: return "not allowed";
    case NT_EPERMFAIL: return "permanent failure";
    }
    return "unknown error";
}
