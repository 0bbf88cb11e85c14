/* RFC 4180 CSV reading (quoted fields, doubled quotes, CRLF or LF, embedded newlines), with
 * line numbers for error reports. Used by `nurturectl enrol` and imports. */
#ifndef NT_CSV_H
#define NT_CSV_H

#include <stddef.h>
#include <stdio.h>

typedef struct nt_csv nt_csv_t;

/* Read from f (borrowed). Fields longer than max_field bytes or rows of more than max_fields
 * fields are errors. Returns NULL out of memory. */
nt_csv_t *nt_csv_new(FILE *f, size_t max_field, size_t max_fields);
void nt_csv_free(nt_csv_t *csv);

/* Next row. Returns 1 with *fields and *nfields (borrowed until the next call) and *line (the
 * line the row starts on), 0 at end of input, or -1 for a malformed row (*errmsg, malloc'd:
 * "line 7: unterminated quoted field"); after -1 reading resumes at the next line. */
int nt_csv_next(nt_csv_t *csv, char ***fields, size_t *nfields, size_t *line, char **errmsg);

#endif
