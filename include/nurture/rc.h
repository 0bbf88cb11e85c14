/**
 * @file rc.h
 * @brief nurture's return codes. Append only: values are never renumbered or reused.
 */
#ifndef NURTURE_RC_H
#define NURTURE_RC_H

#ifdef __cplusplus
extern "C" {
#endif

/** Every fallible nurture function returns one of these. */
typedef enum nt_rc {
    NT_OK = 0,           /**< done */
    NT_AGAIN = 1,        /**< in progress: the completion comes by callback */
    NT_ERR = -1,         /**< unspecified failure (see the error message) */
    NT_ENOMEM = -2,      /**< out of memory */
    NT_EINVAL = -3,      /**< invalid argument or input */
    NT_ENOTFOUND = -4,   /**< no such lead, plan, node or key */
    NT_ECONFLICT = -5,   /**< state changed underneath (state token or fencing token mismatch) */
    NT_EUNAVAIL = -6,    /**< a dependency (Redis, a provider) is unavailable: retry later */
    NT_ETIMEOUT = -7,    /**< no answer in time */
    NT_ECANCELED = -8,   /**< shutting down: the request will not complete */
    NT_EABI = -9,        /**< plugin ABI mismatch */
    NT_EEXIST = -10,     /**< already exists */
    NT_ETOOBIG = -11,    /**< input larger than allowed */
    NT_EPERM = -12,      /**< not allowed (role, consent, policy) */
    NT_EPERMFAIL = -13,  /**< permanent delivery failure: do not retry */
} nt_rc_t;

/** A static, human-readable name for rc. Never NULL. */
const char *nt_strerror(nt_rc_t rc);

#ifdef __cplusplus
}
#endif

#endif
