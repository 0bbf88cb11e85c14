/* Human-readable error messages for the `char **errmsg` out-parameters (STYLE.md, Errors). */
#ifndef NT_ERRMSG_H
#define NT_ERRMSG_H

#include "nurture/msgf.h" /* nt_msgf: a message formatted like printf */

/* Hand msg (owned, may be NULL) to the caller through errmsg, or free it when errmsg is NULL. */
void nt_errmsg_set(char **errmsg, char *msg);

#endif
