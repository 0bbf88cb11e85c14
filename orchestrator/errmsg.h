/* Human-readable error messages for the `char **errmsg` out-parameters (STYLE.md, Errors). */
#ifndef NT_ERRMSG_H
#define NT_ERRMSG_H

/* A malloc'd message formatted like printf (caller frees), or NULL when out of memory. */
char *nt_errmsg_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Hand msg (owned, may be NULL) to the caller through errmsg, or free it when errmsg is NULL. */
void nt_errmsg_set(char **errmsg, char *msg);

#endif
