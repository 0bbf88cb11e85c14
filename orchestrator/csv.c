/* RFC 4180 CSV reading (see csv.h).
 *
 * A byte-at-a-time state machine over the FILE. Rules beyond the RFC:
 * - a UTF-8 byte order mark at the start is skipped (spreadsheet exports);
 * - lines with no characters at all are skipped, so a trailing blank line is no row;
 * - LF, CRLF and a lone CR all end a row outside quotes; inside quotes they are kept verbatim;
 * - a NUL byte, a quote inside an unquoted field, a character after a closing quote, a field
 *   longer than max_field and a row of more than max_fields fields make the row malformed:
 *   the error names the line and reading resumes after the end of that physical line;
 * - a quoted field still open at end of input is reported at the line where it began, and
 *   the text after that line is read again as rows, so that one stray quote costs one row
 *   rather than the rest of the file. Re-reading is capped (NT_CSV_REPLAY_MAX in total) so
 *   that hostile input cannot make it quadratic.
 */
#include "csv.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NT_CSV_REPLAY_MAX (64u << 20) /* bytes re-read after unterminated quotes, in total */

typedef struct buf {
    char *p;
    size_t n;
    size_t cap;
} buf_t;

struct nt_csv {
    FILE *f;              /* borrowed */
    size_t max_field;
    size_t max_fields;
    size_t line;          /* current physical line (1-based) */
    int started;          /* BOM check done */
    int eof;
    buf_t text;           /* the row's field bytes, NUL-separated */
    size_t *offs;         /* start of each field in text */
    size_t noffs;
    size_t offs_cap;
    char **fields;        /* handed out: pointers into text */
    size_t fields_cap;
    buf_t raw;            /* raw bytes consumed since the row's first line ended */
    int raw_on;           /* recording raw */
    char *replay;         /* bytes to read before the FILE again */
    size_t replay_n;
    size_t replay_pos;
    size_t replayed;      /* total bytes ever queued for re-reading */
};

static int buf_put(buf_t *b, char c)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    b->p[b->n++] = c;
    return 0;
}

nt_csv_t *nt_csv_new(FILE *f, size_t max_field, size_t max_fields)
{
    nt_csv_t *csv = calloc(1, sizeof(*csv));
    if (csv == NULL)
        return NULL;
    csv->f = f;
    csv->max_field = max_field ? max_field : SIZE_MAX / 4;
    csv->max_fields = max_fields ? max_fields : SIZE_MAX / 4;
    csv->line = 1;
    return csv;
}

void nt_csv_free(nt_csv_t *csv)
{
    if (csv == NULL)
        return;
    free(csv->text.p);
    free(csv->offs);
    free(csv->fields);
    free(csv->raw.p);
    free(csv->replay);
    free(csv);
}

/* Next byte, or EOF. Raw bytes are recorded while a row may need re-reading. */
static int get(nt_csv_t *csv)
{
    int c;
    if (csv->replay != NULL && csv->replay_pos < csv->replay_n) {
        c = (unsigned char)csv->replay[csv->replay_pos++];
    } else {
        if (csv->replay != NULL) {
            free(csv->replay);
            csv->replay = NULL;
            csv->replay_n = csv->replay_pos = 0;
        }
        if (csv->eof)
            return EOF;
        c = getc_unlocked(csv->f);
        if (c == EOF) {
            csv->eof = 1;
            return EOF;
        }
    }
    if (csv->raw_on && buf_put(&csv->raw, (char)c) < 0)
        csv->raw_on = 0; /* out of memory: give up on re-reading, not on reading */
    return c;
}

/* Non-zero when the next byte is LF; consumes nothing (only used for CR LF). */
static int peek_lf(nt_csv_t *csv)
{
    if (csv->replay != NULL && csv->replay_pos < csv->replay_n)
        return csv->replay[csv->replay_pos] == '\n';
    if (csv->replay != NULL) {
        free(csv->replay);
        csv->replay = NULL;
        csv->replay_n = csv->replay_pos = 0;
    }
    if (csv->eof)
        return 0;
    int c = getc_unlocked(csv->f);
    if (c == EOF) {
        csv->eof = 1;
        return 0;
    }
    ungetc(c, csv->f);
    return c == '\n';
}

/* Consume the end of a line after a CR: a following LF belongs to it. */
static void eat_lf_after_cr(nt_csv_t *csv)
{
    if (peek_lf(csv))
        get(csv);
}

/* Skip to just after the end of the current physical line. */
static void skip_line(nt_csv_t *csv)
{
    for (;;) {
        int c = get(csv);
        if (c == EOF)
            return;
        if (c == '\n') {
            csv->line++;
            return;
        }
        if (c == '\r') {
            eat_lf_after_cr(csv);
            csv->line++;
            return;
        }
    }
}

static int fail(nt_csv_t *csv, char **errmsg, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Set *errmsg to "line N: ..." and return -1. */
static int fail(nt_csv_t *csv, char **errmsg, size_t line, const char *fmt, ...)
{
    char *what = NULL;
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&what, fmt, ap);
    va_end(ap);
    csv->raw_on = 0;
    csv->raw.n = 0;
    if (errmsg == NULL) {
        if (r >= 0)
            free(what);
        return -1;
    }
    *errmsg = NULL;
    if (r < 0)
        return -1;
    if (asprintf(errmsg, "line %zu: %s", line, what) < 0)
        *errmsg = NULL;
    free(what);
    return -1;
}

/* Close the current field: NUL-terminate it and start the next one. */
static int end_field(nt_csv_t *csv)
{
    if (buf_put(&csv->text, '\0') < 0)
        return -1;
    if (csv->noffs == csv->offs_cap) {
        size_t cap = csv->offs_cap ? csv->offs_cap * 2 : 32;
        size_t *o = realloc(csv->offs, cap * sizeof(*o));
        if (o == NULL)
            return -1;
        csv->offs = o;
        csv->offs_cap = cap;
    }
    csv->offs[csv->noffs++] = csv->text.n;
    return 0;
}

/* Queue bytes to be read before the rest of the FILE. Takes ownership of p. */
static void push_replay(nt_csv_t *csv, char *p, size_t n)
{
    free(csv->replay);
    csv->replay = p;
    csv->replay_n = n;
    csv->replay_pos = 0;
}

/* Skip a UTF-8 byte order mark; anything else is pushed back. Returns -1 out of memory. */
static int skip_bom(nt_csv_t *csv)
{
    static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
    char got[3];
    size_t n = 0;
    while (n < 3) {
        int c = get(csv);
        if (c == EOF)
            break;
        got[n++] = (char)c;
        if ((unsigned char)c != bom[n - 1])
            break;
    }
    if (n == 3 && memcmp(got, bom, 3) == 0)
        return 0;
    if (n == 0)
        return 0;
    char *p = malloc(n);
    if (p == NULL)
        return -1;
    memcpy(p, got, n);
    push_replay(csv, p, n);
    return 0;
}

int nt_csv_next(nt_csv_t *csv, char ***fields, size_t *nfields, size_t *line, char **errmsg)
{
    enum { FIELD_START, UNQUOTED, QUOTED, QUOTE_IN_QUOTED } st = FIELD_START;
    size_t field_len = 0, field_line = 0, l;
    int c;

    if (errmsg != NULL)
        *errmsg = NULL;
    *fields = NULL;
    *nfields = 0;
    if (!csv->started) {
        csv->started = 1;
        if (skip_bom(csv) < 0)
            return fail(csv, errmsg, csv->line, "out of memory");
    }

    /* Skip empty lines. */
    for (;;) {
        c = get(csv);
        if (c == '\n') {
            csv->line++;
            continue;
        }
        if (c == '\r') {
            eat_lf_after_cr(csv);
            csv->line++;
            continue;
        }
        break;
    }
    if (c == EOF)
        return 0;

    size_t row_line = csv->line;
    *line = row_line;
    csv->text.n = 0;
    csv->noffs = 0;
    csv->raw.n = 0;
    csv->raw_on = 0;
    if (csv->offs_cap == 0) {
        csv->offs = malloc(32 * sizeof(*csv->offs));
        if (csv->offs == NULL)
            return fail(csv, errmsg, row_line, "out of memory");
        csv->offs_cap = 32;
    }
    csv->offs[csv->noffs++] = 0;

    for (;; c = get(csv)) {
        if (c == 0) {
            l = csv->line;
            skip_line(csv);
            return fail(csv, errmsg, l, "NUL byte in field %zu", csv->noffs);
        }
        switch (st) {
        case FIELD_START:
            if (c == '"') {
                st = QUOTED;
                field_line = csv->line;
                continue;
            }
            st = UNQUOTED;
            /* fall through */
        case UNQUOTED:
            if (c == ',' || c == '\n' || c == '\r' || c == EOF)
                break;
            if (c == '"') {
                l = csv->line;
                skip_line(csv);
                return fail(csv, errmsg, l, "quote inside unquoted field %zu (quote the whole "
                            "field and double the quote)", csv->noffs);
            }
            if (++field_len > csv->max_field)
                goto too_long;
            if (buf_put(&csv->text, (char)c) < 0)
                return fail(csv, errmsg, row_line, "out of memory");
            continue;
        case QUOTED:
            if (c == EOF) {
                /* Re-read what followed the line the quote opened on: one stray quote
                 * should cost one row, not the rest of the file. */
                if (csv->raw_on && csv->replayed + csv->raw.n <= NT_CSV_REPLAY_MAX) {
                    char *p = malloc(csv->raw.n ? csv->raw.n : 1);
                    if (p != NULL) {
                        memcpy(p, csv->raw.p, csv->raw.n);
                        push_replay(csv, p, csv->raw.n);
                        csv->replayed += csv->raw.n;
                        csv->line = field_line + 1;
                    }
                }
                return fail(csv, errmsg, field_line, "unterminated quoted field %zu",
                            csv->noffs);
            }
            if (c == '"') {
                st = QUOTE_IN_QUOTED;
                continue;
            }
            if (c == '\n' || (c == '\r' && !peek_lf(csv))) {
                csv->line++;
                if (csv->line == field_line + 1) {
                    /* Record from the start of the next line, for the re-read above. */
                    csv->raw_on = 1;
                    csv->raw.n = 0;
                }
            }
            if (++field_len > csv->max_field)
                goto too_long;
            if (buf_put(&csv->text, (char)c) < 0)
                return fail(csv, errmsg, row_line, "out of memory");
            continue;
        case QUOTE_IN_QUOTED:
            if (c == '"') {
                st = QUOTED;
                if (++field_len > csv->max_field)
                    goto too_long;
                if (buf_put(&csv->text, '"') < 0)
                    return fail(csv, errmsg, row_line, "out of memory");
                continue;
            }
            if (c == ',' || c == '\n' || c == '\r' || c == EOF) {
                csv->raw_on = 0;
                csv->raw.n = 0;
                break;
            }
            l = csv->line;
            skip_line(csv);
            return fail(csv, errmsg, l, "unexpected character after the closing quote of "
                        "field %zu", csv->noffs);
        }

        /* A separator, a line end or the end of input closes the field. */
        if (c == ',') {
            if (csv->noffs >= csv->max_fields) {
                l = csv->line;
                skip_line(csv);
                return fail(csv, errmsg, l, "more than %zu fields", csv->max_fields);
            }
            if (end_field(csv) < 0)
                return fail(csv, errmsg, row_line, "out of memory");
            st = FIELD_START;
            field_len = 0;
            continue;
        }
        if (c == '\r')
            eat_lf_after_cr(csv);
        if (c != EOF)
            csv->line++;
        break;
    }

    if (buf_put(&csv->text, '\0') < 0)
        return fail(csv, errmsg, row_line, "out of memory");
    size_t n = csv->noffs;
    if (csv->fields_cap < n) {
        char **fl = realloc(csv->fields, n * sizeof(*fl));
        if (fl == NULL)
            return fail(csv, errmsg, row_line, "out of memory");
        csv->fields = fl;
        csv->fields_cap = n;
    }
    for (size_t i = 0; i < n; i++)
        csv->fields[i] = csv->text.p + csv->offs[i];
    *fields = csv->fields;
    *nfields = n;
    return 1;

too_long:
    l = csv->line;
    skip_line(csv);
    return fail(csv, errmsg, l, "field %zu is longer than %zu bytes", csv->noffs,
                csv->max_field);
}
