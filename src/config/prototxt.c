/* Protobuf text format (Caffe's prototxt) lexer and parser into the mtl_cfg_node tree, the typed
 * readers that double as the schema, and the unused-field check with "did you mean" hints.
 * Syntax errors are MTL_ERR_PARSE, readers' complaints MTL_ERR_CONFIG; all name file:line:col. */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"

/* Caffe nets nest four or five deep; the cap only keeps hostile input off the stack. */
#define CFG_MAX_DEPTH 200
#define CFG_MAX_FILE_BYTES ((long)64 << 20)
/* Names longer than this are never "plausible typos", which keeps the distance table on the stack. */
#define CFG_SUGGEST_MAX_LEN 128

/* ---------------------------------------------------------------- tree */

static void free_node(mtl_cfg_node *node)
{
    if (!node)
        return;
    for (int i = 0; i < node->n_fields; i++)
        free_node(node->fields[i]);
    free(node->fields);
    for (int i = 0; i < node->n_known; i++)
        free(node->known[i]);
    free(node->known);
    free(node->name);
    free(node->text);
    free(node->file_storage);
    free(node);
}

void mtl_cfg_free(mtl_cfg_node *root) { free_node(root); }

static char *dup_range(const char *s, size_t n)
{
    char *copy = malloc(n + 1);
    if (copy) {
        memcpy(copy, s, n);
        copy[n] = '\0';
    }
    return copy;
}

static int push_child(mtl_cfg_node *parent, mtl_cfg_node *child)
{
    if (parent->n_fields == parent->fields_cap) {
        int cap = parent->fields_cap ? parent->fields_cap * 2 : 8;
        mtl_cfg_node **grown = realloc(parent->fields, (size_t)cap * sizeof(*grown));
        if (!grown)
            return 0;
        parent->fields = grown;
        parent->fields_cap = cap;
    }
    parent->fields[parent->n_fields++] = child;
    return 1;
}

/* ---------------------------------------------------------------- lexer */

typedef enum tok_kind { TOK_EOF, TOK_IDENT, TOK_NUMBER, TOK_STRING, TOK_PUNCT } tok_kind;

typedef struct token {
    tok_kind kind;
    int line, col;
    const char *start; /* raw source text (strings include their quotes) */
    size_t len;
    char punct;
} token;

typedef struct parser {
    const char *pos, *end;
    int line, col;
    const char *file;
    token tok;
    char *sbuf; /* the current string token, unescaped */
    size_t slen, scap;
    mtl_error *err;
    int depth;
} parser;

static mtl_status parse_error(const parser *p, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static mtl_status parse_error(const parser *p, int line, int col, const char *fmt, ...)
{
    char msg[MTL_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return mtl_fail(p->err, MTL_ERR_PARSE, "%s:%d:%d: %s", p->file, line, col, msg);
}

static mtl_status parse_nomem(const parser *p)
{
    return mtl_fail(p->err, MTL_ERR_NOMEM, "%s: out of memory while parsing", p->file);
}

/* Describes a token for "found ..." in messages, clipped so one long token cannot fill them. */
static const char *describe_token(const token *t, char *buf, size_t size)
{
    switch (t->kind) {
    case TOK_EOF:
        snprintf(buf, size, "end of file");
        break;
    case TOK_PUNCT:
        snprintf(buf, size, "'%c'", t->punct);
        break;
    case TOK_STRING:
        snprintf(buf, size, "string %.*s%s", (int)(t->len > 40 ? 40 : t->len), t->start,
                 t->len > 40 ? "..." : "");
        break;
    default:
        snprintf(buf, size, "'%.*s%s'", (int)(t->len > 40 ? 40 : t->len), t->start,
                 t->len > 40 ? "..." : "");
        break;
    }
    return buf;
}

static void describe_char(unsigned char c, char *buf, size_t size)
{
    if (isprint(c))
        snprintf(buf, size, "'%c'", c);
    else
        snprintf(buf, size, "byte 0x%02X", c);
}

static void lex_step(parser *p)
{
    if (*p->pos == '\n') {
        p->line++;
        p->col = 1;
    } else {
        p->col++;
    }
    p->pos++;
}

static int is_ident_start(int c) { return isalpha(c) || c == '_'; }
static int is_ident_char(int c) { return isalnum(c) || c == '_'; }

static int str_ieq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen)
        return 0;
    for (size_t i = 0; i < alen; i++)
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
            return 0;
    return 1;
}

static int is_inf_nan(const char *s, size_t n)
{
    return str_ieq(s, n, "inf") || str_ieq(s, n, "infinity") || str_ieq(s, n, "nan");
}

static int sbuf_put(parser *p, char c)
{
    if (p->slen + 1 >= p->scap) {
        size_t cap = p->scap ? p->scap * 2 : 64;
        char *grown = realloc(p->sbuf, cap);
        if (!grown)
            return 0;
        p->sbuf = grown;
        p->scap = cap;
    }
    p->sbuf[p->slen++] = c;
    p->sbuf[p->slen] = '\0';
    return 1;
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static mtl_status lex_string(parser *p)
{
    char quote = *p->pos;
    const char *start = p->pos;
    int line = p->line, col = p->col;
    p->slen = 0;
    if (!sbuf_put(p, 'x')) /* makes sbuf non-NULL even for "" */
        return parse_nomem(p);
    p->slen = 0;
    p->sbuf[0] = '\0';
    lex_step(p);
    for (;;) {
        if (p->pos == p->end || *p->pos == '\n')
            return parse_error(p, line, col, "unterminated string: no closing %c before the end of the %s",
                               quote, p->pos == p->end ? "file" : "line");
        char c = *p->pos;
        if (c == quote) {
            lex_step(p);
            break;
        }
        if (c != '\\') {
            if (!sbuf_put(p, c))
                return parse_nomem(p);
            lex_step(p);
            continue;
        }
        int eline = p->line, ecol = p->col;
        lex_step(p);
        if (p->pos == p->end || *p->pos == '\n')
            return parse_error(p, line, col, "unterminated string: no closing %c before the end of the %s",
                               quote, p->pos == p->end ? "file" : "line");
        unsigned char e = (unsigned char)*p->pos;
        unsigned value;
        static const char from[] = "ntrabfv\\'\"?";
        static const char to[] = "\n\t\r\a\b\f\v\\'\"?";
        const char *simple = e != '\0' ? strchr(from, e) : NULL;
        if (simple) {
            value = (unsigned char)to[simple - from];
            lex_step(p);
        } else if (e == 'x' || e == 'X') {
            lex_step(p);
            int digits = 0;
            value = 0;
            while (digits < 2 && p->pos < p->end && hex_value((unsigned char)*p->pos) >= 0) {
                value = value * 16 + (unsigned)hex_value((unsigned char)*p->pos);
                lex_step(p);
                digits++;
            }
            if (!digits)
                return parse_error(p, eline, ecol, "invalid escape '\\%c' in string: expected hex digits", e);
        } else if (e >= '0' && e <= '7') {
            int digits = 0;
            value = 0;
            while (digits < 3 && p->pos < p->end && *p->pos >= '0' && *p->pos <= '7') {
                value = value * 8 + (unsigned)(*p->pos - '0');
                lex_step(p);
                digits++;
            }
            if (value > 255)
                return parse_error(p, eline, ecol, "invalid escape in string: octal value %o is over \\377",
                                   value);
        } else {
            char what[16];
            describe_char(e, what, sizeof(what));
            return parse_error(p, eline, ecol, "invalid escape '\\' followed by %s in string "
                               "(valid: \\n \\t \\r \\\\ \\\" \\' \\xHH \\ooo)", what);
        }
        /* Node text is a C string, so an embedded NUL would silently cut it short. */
        if (value == 0)
            return parse_error(p, eline, ecol, "a string may not contain a NUL character (\\0)");
        if (!sbuf_put(p, (char)value))
            return parse_nomem(p);
    }
    p->tok.kind = TOK_STRING;
    p->tok.line = line;
    p->tok.col = col;
    p->tok.start = start;
    p->tok.len = (size_t)(p->pos - start);
    return MTL_OK;
}

/* Decimal (digits, '.', exponent, optional f suffix) or 0x hex; the sign is handled by the caller. */
static int valid_number(const char *s, size_t n, size_t *keep)
{
    *keep = n;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        for (size_t i = 2; i < n; i++)
            if (hex_value((unsigned char)s[i]) < 0)
                return 0;
        return 1;
    }
    size_t i = 0, mant = 0;
    while (i < n && isdigit((unsigned char)s[i]))
        i++, mant++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && isdigit((unsigned char)s[i]))
            i++, mant++;
    }
    if (!mant)
        return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t exp = 0;
        while (i < n && isdigit((unsigned char)s[i]))
            i++, exp++;
        if (!exp)
            return 0;
    }
    if (i + 1 == n && (s[i] == 'f' || s[i] == 'F')) {
        *keep = i; /* protobuf accepts a C-style float suffix; the value ignores it */
        return 1;
    }
    return i == n;
}

static mtl_status lex_number(parser *p)
{
    const char *start = p->pos;
    int line = p->line, col = p->col;
    int negative = *p->pos == '-';
    if (negative) {
        lex_step(p);
        if (p->pos < p->end && is_ident_start((unsigned char)*p->pos)) {
            const char *word = p->pos;
            while (p->pos < p->end && is_ident_char((unsigned char)*p->pos))
                lex_step(p);
            if (!is_inf_nan(word, (size_t)(p->pos - word)))
                return parse_error(p, line, col, "expected a number after '-', found '%.*s'",
                                   (int)(p->pos - word), word);
            p->tok = (token){TOK_NUMBER, line, col, start, (size_t)(p->pos - start), 0};
            return MTL_OK;
        }
        if (p->pos == p->end || !(isdigit((unsigned char)*p->pos) || *p->pos == '.')) {
            char what[16];
            if (p->pos == p->end)
                snprintf(what, sizeof(what), "end of file");
            else
                describe_char((unsigned char)*p->pos, what, sizeof(what));
            return parse_error(p, line, col, "expected a number after '-', found %s", what);
        }
    }
    const char *digits = p->pos;
    /* Take the whole run of number-ish characters so "12abc" is one bad number, not two tokens. */
    while (p->pos < p->end) {
        char c = *p->pos;
        if (is_ident_char((unsigned char)c) || c == '.') {
            lex_step(p);
        } else if ((c == '+' || c == '-') && p->pos > digits && (p->pos[-1] == 'e' || p->pos[-1] == 'E') &&
                   !(p->pos - digits > 1 && (digits[1] == 'x' || digits[1] == 'X'))) {
            lex_step(p);
        } else {
            break;
        }
    }
    size_t keep;
    if (!valid_number(digits, (size_t)(p->pos - digits), &keep))
        return parse_error(p, line, col, "invalid number '%.*s'", (int)(p->pos - start), start);
    p->tok = (token){TOK_NUMBER, line, col, start, (size_t)(digits - start) + keep, 0};
    return MTL_OK;
}

/* Reads the next token into p->tok, skipping whitespace and # comments. */
static mtl_status advance(parser *p)
{
    for (;;) {
        while (p->pos < p->end && (*p->pos == ' ' || *p->pos == '\t' || *p->pos == '\n' ||
                                   *p->pos == '\r' || *p->pos == '\f' || *p->pos == '\v'))
            lex_step(p);
        if (p->pos < p->end && *p->pos == '#') {
            while (p->pos < p->end && *p->pos != '\n')
                lex_step(p);
            continue;
        }
        break;
    }
    if (p->pos == p->end) {
        p->tok = (token){TOK_EOF, p->line, p->col, p->pos, 0, 0};
        return MTL_OK;
    }
    unsigned char c = (unsigned char)*p->pos;
    if (is_ident_start(c)) {
        token t = {TOK_IDENT, p->line, p->col, p->pos, 0, 0};
        while (p->pos < p->end && is_ident_char((unsigned char)*p->pos))
            lex_step(p);
        t.len = (size_t)(p->pos - t.start);
        p->tok = t;
        return MTL_OK;
    }
    if (isdigit(c) || c == '-' || (c == '.' && p->pos + 1 < p->end && isdigit((unsigned char)p->pos[1])))
        return lex_number(p);
    if (c == '"' || c == '\'')
        return lex_string(p);
    if (strchr("{}<>:[],;", c) && c != '\0') {
        p->tok = (token){TOK_PUNCT, p->line, p->col, p->pos, 1, (char)c};
        lex_step(p);
        return MTL_OK;
    }
    char what[16];
    describe_char(c, what, sizeof(what));
    return parse_error(p, p->line, p->col, "unexpected character %s", what);
}

/* ---------------------------------------------------------------- parser */

typedef struct field_name {
    const char *start;
    size_t len;
    int line, col;
} field_name;

static mtl_status new_node(parser *p, mtl_cfg_node *parent, const field_name *fn, mtl_cfg_node **out)
{
    mtl_cfg_node *node = calloc(1, sizeof(*node));
    if (!node)
        return parse_nomem(p);
    node->name = dup_range(fn->start, fn->len);
    if (!node->name || !push_child(parent, node)) {
        free_node(node);
        return parse_nomem(p);
    }
    node->file = p->file;
    node->line = fn->line;
    node->column = fn->col;
    *out = node;
    return MTL_OK;
}

static mtl_status parse_fields(parser *p, mtl_cfg_node *msg, char close, int open_line, int open_col);

static int is_punct(const token *t, char c) { return t->kind == TOK_PUNCT && t->punct == c; }

/* The current token is '{' or '<'. */
static mtl_status parse_message_value(parser *p, mtl_cfg_node *parent, const field_name *fn)
{
    if (p->depth >= CFG_MAX_DEPTH)
        return parse_error(p, p->tok.line, p->tok.col, "messages nested more than %d deep", CFG_MAX_DEPTH);
    mtl_cfg_node *node;
    MTL_TRY(new_node(p, parent, fn, &node));
    node->kind = MTL_CFG_MESSAGE;
    node->value_line = p->tok.line;
    node->value_column = p->tok.col;
    char close = p->tok.punct == '{' ? '}' : '>';
    MTL_TRY(advance(p));
    p->depth++;
    mtl_status st = parse_fields(p, node, close, node->value_line, node->value_column);
    p->depth--;
    return st;
}

/* The current token is a number, identifier or string. */
static mtl_status parse_scalar_value(parser *p, mtl_cfg_node *parent, const field_name *fn)
{
    mtl_cfg_node *node;
    MTL_TRY(new_node(p, parent, fn, &node));
    node->value_line = p->tok.line;
    node->value_column = p->tok.col;
    if (p->tok.kind == TOK_STRING) {
        node->kind = MTL_CFG_STRING;
        node->text = dup_range(p->sbuf, p->slen);
        if (!node->text)
            return parse_nomem(p);
        MTL_TRY(advance(p));
        /* "abc" "def" is one string, as in C and protobuf. */
        while (p->tok.kind == TOK_STRING) {
            size_t have = strlen(node->text);
            char *joined = realloc(node->text, have + p->slen + 1);
            if (!joined)
                return parse_nomem(p);
            memcpy(joined + have, p->sbuf, p->slen + 1);
            node->text = joined;
            MTL_TRY(advance(p));
        }
        return MTL_OK;
    }
    int ident = p->tok.kind == TOK_IDENT;
    node->kind = p->tok.kind == TOK_NUMBER || is_inf_nan(p->tok.start, p->tok.len) ? MTL_CFG_NUMBER
                                                                                    : MTL_CFG_IDENT;
    node->text = dup_range(p->tok.start, p->tok.len);
    if (!node->text)
        return parse_nomem(p);
    MTL_TRY(advance(p));
    /* "a: \n b: 1" reads b as a's value; the stray ':' shows the value was really missing. */
    if (ident && is_punct(&p->tok, ':'))
        return parse_error(p, node->value_line, node->value_column,
                           "expected a value after '%s:', found field name '%s'", node->name, node->text);
    return MTL_OK;
}

static int is_scalar_token(const token *t)
{
    return t->kind == TOK_NUMBER || t->kind == TOK_IDENT || t->kind == TOK_STRING;
}

/* The current token is '['. "dim: [1, 3]" becomes two fields named dim. */
static mtl_status parse_list(parser *p, mtl_cfg_node *parent, const field_name *fn)
{
    int open_line = p->tok.line, open_col = p->tok.col;
    char found[64];
    MTL_TRY(advance(p));
    if (is_punct(&p->tok, ']'))
        return advance(p);
    for (;;) {
        if (is_scalar_token(&p->tok)) {
            MTL_TRY(parse_scalar_value(p, parent, fn));
        } else if (is_punct(&p->tok, '{') || is_punct(&p->tok, '<')) {
            MTL_TRY(parse_message_value(p, parent, fn));
        } else {
            return parse_error(p, p->tok.line, p->tok.col, "expected a value in the list for '%.*s', found %s",
                               (int)fn->len, fn->start, describe_token(&p->tok, found, sizeof(found)));
        }
        if (is_punct(&p->tok, ']'))
            return advance(p);
        if (!is_punct(&p->tok, ','))
            return parse_error(p, p->tok.line, p->tok.col,
                               "expected ',' or ']' in the list for '%.*s' opened at line %d, column %d, "
                               "found %s",
                               (int)fn->len, fn->start, open_line, open_col,
                               describe_token(&p->tok, found, sizeof(found)));
        MTL_TRY(advance(p));
    }
}

/* The current token is the field name. */
static mtl_status parse_field(parser *p, mtl_cfg_node *msg)
{
    field_name fn = {p->tok.start, p->tok.len, p->tok.line, p->tok.col};
    char found[64];
    MTL_TRY(advance(p));
    int colon = is_punct(&p->tok, ':');
    if (colon)
        MTL_TRY(advance(p));
    if (is_punct(&p->tok, '{') || is_punct(&p->tok, '<')) {
        MTL_TRY(parse_message_value(p, msg, &fn));
    } else if (colon && is_punct(&p->tok, '[')) {
        MTL_TRY(parse_list(p, msg, &fn));
    } else if (colon && is_scalar_token(&p->tok)) {
        MTL_TRY(parse_scalar_value(p, msg, &fn));
    } else if (colon) {
        return parse_error(p, p->tok.line, p->tok.col, "expected a value after '%.*s:', found %s", (int)fn.len,
                           fn.start, describe_token(&p->tok, found, sizeof(found)));
    } else {
        return parse_error(p, p->tok.line, p->tok.col, "expected ':' or '{' after field name '%.*s', found %s",
                           (int)fn.len, fn.start, describe_token(&p->tok, found, sizeof(found)));
    }
    if (is_punct(&p->tok, ',') || is_punct(&p->tok, ';'))
        MTL_TRY(advance(p));
    return MTL_OK;
}

/* Fields up to `close` ('}' or '>'), or to the end of file for the root (close == 0). */
static mtl_status parse_fields(parser *p, mtl_cfg_node *msg, char close, int open_line, int open_col)
{
    char found[64];
    for (;;) {
        const token *t = &p->tok;
        if (t->kind == TOK_EOF) {
            if (!close)
                return MTL_OK;
            return parse_error(p, t->line, t->col, "expected '%c' to close '%s' opened at line %d, column %d, "
                               "found end of file", close, msg->name, open_line, open_col);
        }
        if (is_punct(t, '}') || is_punct(t, '>')) {
            if (t->punct == close)
                return advance(p);
            if (!close)
                return parse_error(p, t->line, t->col, "unexpected '%c': no message is open here", t->punct);
            return parse_error(p, t->line, t->col, "expected '%c' to close '%s' opened at line %d, column %d, "
                               "found '%c'", close, msg->name, open_line, open_col, t->punct);
        }
        if (t->kind != TOK_IDENT)
            return parse_error(p, t->line, t->col, "expected a field name, found %s",
                               describe_token(t, found, sizeof(found)));
        MTL_TRY(parse_field(p, msg));
    }
}

static mtl_status parse_buffer(const char *text, size_t len, const char *display_name, mtl_cfg_node **root,
                               mtl_error *err)
{
    mtl_cfg_node *r = calloc(1, sizeof(*r));
    if (!r)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory parsing %s", display_name);
    r->file_storage = mtl_strdup(display_name);
    if (!r->file_storage) {
        free(r);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory parsing %s", display_name);
    }
    r->file = r->file_storage;
    r->kind = MTL_CFG_MESSAGE;
    r->used = 1;
    parser p = {.pos = text, .end = text + len, .line = 1, .col = 1, .file = r->file, .err = err};
    mtl_status st = advance(&p);
    if (st == MTL_OK)
        st = parse_fields(&p, r, 0, 0, 0);
    free(p.sbuf);
    if (st != MTL_OK) {
        free_node(r);
        return st;
    }
    *root = r;
    return MTL_OK;
}

mtl_status mtl_cfg_parse_string(const char *text, const char *display_name, mtl_cfg_node **root, mtl_error *err)
{
    if (!root)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_cfg_parse_string: root is NULL");
    *root = NULL;
    if (!text)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_cfg_parse_string: text is NULL");
    return parse_buffer(text, strlen(text), display_name ? display_name : "<string>", root, err);
}

mtl_status mtl_cfg_parse_file(const char *path, mtl_cfg_node **root, mtl_error *err)
{
    if (!root)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_cfg_parse_file: root is NULL");
    *root = NULL;
    if (!path)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_cfg_parse_file: path is NULL");
    char *buf;
    size_t len;
    MTL_TRY(mtl_read_file(path, NULL, (size_t)CFG_MAX_FILE_BYTES, &buf, &len, err));
    mtl_status st = parse_buffer(buf, len, path, root, err);
    free(buf);
    return st;
}

/* ---------------------------------------------------------------- readers */

mtl_status mtl_cfg_fail(const mtl_cfg_node *node, mtl_error *err, mtl_status status, const char *fmt, ...)
{
    char msg[MTL_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!node)
        return mtl_fail(err, status, "%s", msg);
    if (node->line <= 0) /* the root has no position of its own */
        return mtl_fail(err, status, "%s: %s", node->file ? node->file : "<config>", msg);
    return mtl_fail(err, status, "%s:%d:%d: %s", node->file ? node->file : "<config>", node->line, node->column,
                    msg);
}

/* Remembers that a reader asked msg for `name`, so check_unused can suggest it. Returns 0 only
 * when out of memory; the name then just goes missing from suggestions. */
static int note_known(mtl_cfg_node *msg, const char *name)
{
    if (!msg || !name)
        return 1;
    for (int i = 0; i < msg->n_known; i++)
        if (strcmp(msg->known[i], name) == 0)
            return 1;
    if (msg->n_known == msg->known_cap) {
        int cap = msg->known_cap ? msg->known_cap * 2 : 8;
        char **grown = realloc(msg->known, (size_t)cap * sizeof(*grown));
        if (!grown)
            return 0;
        msg->known = grown;
        msg->known_cap = cap;
    }
    char *copy = mtl_strdup(name);
    if (!copy)
        return 0;
    msg->known[msg->n_known++] = copy;
    return 1;
}

static int name_is(const mtl_cfg_node *node, const char *name)
{
    return node->name && name && strcmp(node->name, name) == 0;
}

int mtl_cfg_count(mtl_cfg_node *msg, const char *name)
{
    if (!msg)
        return 0;
    note_known(msg, name);
    int n = 0;
    for (int i = 0; i < msg->n_fields; i++)
        n += name_is(msg->fields[i], name);
    return n;
}

mtl_cfg_node *mtl_cfg_field(mtl_cfg_node *msg, const char *name, int index)
{
    if (!msg)
        return NULL;
    note_known(msg, name);
    for (int i = 0; i < msg->n_fields; i++) {
        if (name_is(msg->fields[i], name) && index-- == 0) {
            msg->fields[i]->used = 1;
            return msg->fields[i];
        }
    }
    return NULL;
}

static void mark_used_tree(mtl_cfg_node *node)
{
    node->used = 1;
    for (int i = 0; i < node->n_fields; i++)
        mark_used_tree(node->fields[i]);
}

void mtl_cfg_accept(mtl_cfg_node *msg, const char *name)
{
    if (!msg)
        return;
    note_known(msg, name);
    /* An accepted message is ignored whole, so its insides must not count as unknown either. */
    for (int i = 0; i < msg->n_fields; i++)
        if (name_is(msg->fields[i], name))
            mark_used_tree(msg->fields[i]);
}

/* The single occurrence of a singular field, or NULL; a second occurrence is an error. */
static mtl_status find_single(mtl_cfg_node *msg, const char *name, mtl_cfg_node **out, mtl_error *err)
{
    *out = NULL;
    if (!msg)
        return MTL_OK;
    if (!note_known(msg, name))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading field '%s'", name);
    for (int i = 0; i < msg->n_fields; i++) {
        mtl_cfg_node *f = msg->fields[i];
        if (!name_is(f, name))
            continue;
        f->used = 1;
        if (*out)
            return mtl_cfg_fail(f, err, MTL_ERR_CONFIG, "field '%s' given twice (first at line %d)", name,
                                (*out)->line);
        *out = f;
    }
    return MTL_OK;
}

/* The index-th occurrence of a repeated field; asking past the end is a caller bug. */
static mtl_status find_at(mtl_cfg_node *msg, const char *name, int index, mtl_cfg_node **out, mtl_error *err)
{
    if (!msg)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "reading '%s'[%d] from a missing message", name, index);
    if (!note_known(msg, name))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading field '%s'", name);
    *out = mtl_cfg_field(msg, name, index);
    if (!*out)
        return mtl_cfg_fail(msg, err, MTL_ERR_ARGUMENT, "field '%s' has no occurrence %d", name, index);
    return MTL_OK;
}

static const char *field_label(const mtl_cfg_node *node) { return node->name ? node->name : "(top level)"; }

/* "a message", "identifier 'MAX'", "string \"abc\"", "'12'" for "found ..." in reader errors. */
static const char *describe_value(const mtl_cfg_node *node, char *buf, size_t size)
{
    const char *text = node->text ? node->text : "";
    int clip = strlen(text) > 40;
    switch (node->kind) {
    case MTL_CFG_MESSAGE:
        snprintf(buf, size, "a message");
        break;
    case MTL_CFG_IDENT:
        snprintf(buf, size, "identifier '%.40s%s'", text, clip ? "..." : "");
        break;
    case MTL_CFG_STRING:
        snprintf(buf, size, "string \"%.40s%s\"", text, clip ? "..." : "");
        break;
    default:
        snprintf(buf, size, "'%.40s%s'", text, clip ? "..." : "");
        break;
    }
    return buf;
}

static mtl_status wrong_kind(const mtl_cfg_node *node, mtl_error *err, const char *expected)
{
    char found[80];
    return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "field '%s': expected %s, found %s", field_label(node),
                        expected, describe_value(node, found, sizeof(found)));
}

static int is_hex_text(const char *s) { return s[0] == '0' && (s[1] == 'x' || s[1] == 'X'); }

mtl_status mtl_cfg_node_int(const mtl_cfg_node *node, int64_t *out, mtl_error *err)
{
    if (!node)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_cfg_node_int: node is NULL");
    if (node->kind != MTL_CFG_NUMBER)
        return wrong_kind(node, err, "an integer");
    const char *text = node->text;
    const char *digits = text[0] == '-' ? text + 1 : text;
    char found[80];
    if (is_inf_nan(digits, strlen(digits)))
        return wrong_kind(node, err, "an integer");
    errno = 0;
    char *end;
    if (is_hex_text(digits)) {
        unsigned long long u = strtoull(digits + 2, &end, 16);
        unsigned long long limit = text[0] == '-' ? (unsigned long long)INT64_MAX + 1 : (unsigned long long)INT64_MAX;
        if (errno == ERANGE || u > limit)
            return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "field '%s': %s is out of range for a 64-bit integer",
                                field_label(node), node->text);
        if (text[0] == '-')
            *out = u == limit ? INT64_MIN : -(int64_t)u;
        else
            *out = (int64_t)u;
        return MTL_OK;
    }
    if (strpbrk(digits, ".eE") == NULL) {
        long long v = strtoll(text, &end, 10);
        if (errno == ERANGE)
            return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "field '%s': %s is out of range for a 64-bit integer",
                                field_label(node), node->text);
        *out = (int64_t)v;
        return MTL_OK;
    }
    /* 1e3 and 2.0 are whole numbers, so accept them; 2.5 is not. */
    double d = strtod(text, &end);
    if (d != floor(d))
        return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "field '%s': expected an integer, found %s (it has a "
                            "fractional part)", field_label(node), describe_value(node, found, sizeof(found)));
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
        return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "field '%s': %s is out of range for a 64-bit integer",
                            field_label(node), node->text);
    *out = (int64_t)d;
    return MTL_OK;
}

mtl_status mtl_cfg_node_float(const mtl_cfg_node *node, double *out, mtl_error *err)
{
    if (!node)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_cfg_node_float: node is NULL");
    const char *text = node->text;
    int inf_nan = text && is_inf_nan(text[0] == '-' ? text + 1 : text, strlen(text[0] == '-' ? text + 1 : text));
    if (node->kind != MTL_CFG_NUMBER && !(node->kind == MTL_CFG_IDENT && inf_nan))
        return wrong_kind(node, err, "a number");
    if (inf_nan) {
        const char *word = text[0] == '-' ? text + 1 : text;
        double v = tolower((unsigned char)word[0]) == 'n' ? NAN : INFINITY;
        *out = text[0] == '-' ? -v : v;
        return MTL_OK;
    }
    char *end;
    double v;
    const char *digits = text[0] == '-' ? text + 1 : text;
    if (is_hex_text(digits)) {
        /* strtod would read 0x1.8p1 forms too; the lexer only lets hex integers through. */
        int64_t i;
        MTL_TRY(mtl_cfg_node_int(node, &i, err));
        v = (double)i;
    } else {
        v = strtod(text, &end);
        if (isinf(v))
            return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "field '%s': %s is out of range for a double",
                                field_label(node), text);
    }
    *out = v;
    return MTL_OK;
}

mtl_status mtl_cfg_int(mtl_cfg_node *msg, const char *name, int64_t def, int64_t *out, mtl_error *err)
{
    mtl_cfg_node *f;
    MTL_TRY(find_single(msg, name, &f, err));
    if (!f) {
        *out = def;
        return MTL_OK;
    }
    return mtl_cfg_node_int(f, out, err);
}

mtl_status mtl_cfg_int_range(mtl_cfg_node *msg, const char *name, int64_t def, int64_t min, int64_t max,
                             int64_t *out, mtl_error *err)
{
    mtl_cfg_node *f;
    MTL_TRY(find_single(msg, name, &f, err));
    if (!f) {
        *out = def;
        return MTL_OK;
    }
    int64_t v;
    MTL_TRY(mtl_cfg_node_int(f, &v, err));
    if (v < min || v > max) {
        if (max == INT64_MAX)
            return mtl_cfg_fail(f, err, MTL_ERR_CONFIG, "field '%s' must be at least %lld, found %lld", name,
                                (long long)min, (long long)v);
        if (min == INT64_MIN)
            return mtl_cfg_fail(f, err, MTL_ERR_CONFIG, "field '%s' must be at most %lld, found %lld", name,
                                (long long)max, (long long)v);
        return mtl_cfg_fail(f, err, MTL_ERR_CONFIG, "field '%s' must be between %lld and %lld, found %lld", name,
                            (long long)min, (long long)max, (long long)v);
    }
    *out = v;
    return MTL_OK;
}

mtl_status mtl_cfg_float(mtl_cfg_node *msg, const char *name, double def, double *out, mtl_error *err)
{
    mtl_cfg_node *f;
    MTL_TRY(find_single(msg, name, &f, err));
    if (!f) {
        *out = def;
        return MTL_OK;
    }
    return mtl_cfg_node_float(f, out, err);
}

mtl_status mtl_cfg_bool(mtl_cfg_node *msg, const char *name, int def, int *out, mtl_error *err)
{
    mtl_cfg_node *f;
    MTL_TRY(find_single(msg, name, &f, err));
    if (!f) {
        *out = def;
        return MTL_OK;
    }
    /* The spellings protobuf's own text parser accepts. */
    static const char *const yes[] = {"true", "True", "t", "1"};
    static const char *const no[] = {"false", "False", "f", "0"};
    if (f->kind == MTL_CFG_IDENT || f->kind == MTL_CFG_NUMBER) {
        for (int i = 0; i < 4; i++) {
            if (strcmp(f->text, yes[i]) == 0) {
                *out = 1;
                return MTL_OK;
            }
            if (strcmp(f->text, no[i]) == 0) {
                *out = 0;
                return MTL_OK;
            }
        }
    }
    return wrong_kind(f, err, "true or false");
}

mtl_status mtl_cfg_string(mtl_cfg_node *msg, const char *name, const char *def, const char **out, mtl_error *err)
{
    mtl_cfg_node *f;
    MTL_TRY(find_single(msg, name, &f, err));
    if (!f) {
        *out = def;
        return MTL_OK;
    }
    if (f->kind != MTL_CFG_STRING)
        return wrong_kind(f, err, "a quoted string");
    *out = f->text;
    return MTL_OK;
}

static int suggest_impl(const char *word, const char *const *candidates, int n, int max, char *buf, int size,
                        int quote);

mtl_status mtl_cfg_enum(mtl_cfg_node *msg, const char *name, const char *const *names, int n, int def, int *out,
                        mtl_error *err)
{
    mtl_cfg_node *f;
    MTL_TRY(find_single(msg, name, &f, err));
    if (!f) {
        *out = def;
        return MTL_OK;
    }
    char choices[1024];
    size_t used = 0;
    choices[0] = '\0';
    for (int i = 0; i < n && used < sizeof(choices); i++) {
        int w = snprintf(choices + used, sizeof(choices) - used, "%s%s", i ? ", " : "", names[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    if (f->kind == MTL_CFG_IDENT) {
        for (int i = 0; i < n; i++) {
            if (strcmp(f->text, names[i]) == 0) {
                *out = i;
                return MTL_OK;
            }
        }
    }
    char found[80];
    describe_value(f, found, sizeof(found));
    if (f->kind == MTL_CFG_MESSAGE || f->kind == MTL_CFG_STRING || f->kind == MTL_CFG_NUMBER) {
        const char *hint = f->kind == MTL_CFG_STRING ? " (enum values are written without quotes)" : "";
        return mtl_cfg_fail(f, err, MTL_ERR_CONFIG, "field '%s': expected one of %s, found %s%s", name, choices,
                            found, hint);
    }
    char near[256];
    if (suggest_impl(f->text, names, n, 3, near, sizeof(near), 1) > 0)
        return mtl_cfg_fail(f, err, MTL_ERR_CONFIG, "field '%s': expected one of %s, found '%s'; did you mean %s?",
                            name, choices, f->text, near);
    return mtl_cfg_fail(f, err, MTL_ERR_CONFIG, "field '%s': expected one of %s, found '%s'", name, choices,
                        f->text);
}

mtl_status mtl_cfg_message(mtl_cfg_node *msg, const char *name, mtl_cfg_node **out, mtl_error *err)
{
    mtl_cfg_node *f;
    *out = NULL;
    MTL_TRY(find_single(msg, name, &f, err));
    if (!f)
        return MTL_OK;
    if (f->kind != MTL_CFG_MESSAGE)
        return wrong_kind(f, err, "a message { ... }");
    *out = f;
    return MTL_OK;
}

mtl_status mtl_cfg_int_at(mtl_cfg_node *msg, const char *name, int index, int64_t *out, mtl_error *err)
{
    mtl_cfg_node *f;
    MTL_TRY(find_at(msg, name, index, &f, err));
    return mtl_cfg_node_int(f, out, err);
}

mtl_status mtl_cfg_float_at(mtl_cfg_node *msg, const char *name, int index, double *out, mtl_error *err)
{
    mtl_cfg_node *f;
    MTL_TRY(find_at(msg, name, index, &f, err));
    return mtl_cfg_node_float(f, out, err);
}

mtl_status mtl_cfg_string_at(mtl_cfg_node *msg, const char *name, int index, const char **out, mtl_error *err)
{
    mtl_cfg_node *f;
    MTL_TRY(find_at(msg, name, index, &f, err));
    if (f->kind != MTL_CFG_STRING)
        return wrong_kind(f, err, "a quoted string");
    *out = f->text;
    return MTL_OK;
}

/* ---------------------------------------------------------------- suggestions */

/* Optimal-string-alignment (Damerau) distance, ignoring case; -1 when a name is too long to be
 * worth comparing. */
static int edit_distance(const char *a, const char *b)
{
    size_t m = strlen(a), n = strlen(b);
    if (m > CFG_SUGGEST_MAX_LEN || n > CFG_SUGGEST_MAX_LEN)
        return -1;
    int rows[3][CFG_SUGGEST_MAX_LEN + 1];
    int *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= n; j++)
        prev[j] = (int)j;
    for (size_t i = 1; i <= m; i++) {
        cur[0] = (int)i;
        int ca = tolower((unsigned char)a[i - 1]);
        for (size_t j = 1; j <= n; j++) {
            int cb = tolower((unsigned char)b[j - 1]);
            int best = prev[j - 1] + (ca != cb);
            if (prev[j] + 1 < best)
                best = prev[j] + 1;
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && prev2[j - 2] + 1 < best)
                best = prev2[j - 2] + 1;
            cur[j] = best;
        }
        int *t = prev2;
        prev2 = prev;
        prev = cur;
        cur = t;
    }
    return prev[n];
}

static int is_prefix_ci(const char *a, const char *b)
{
    size_t m = strlen(a), n = strlen(b);
    size_t k = m < n ? m : n;
    if (k < 2) /* "a" is a prefix of half the names; it says nothing */
        return 0;
    for (size_t i = 0; i < k; i++)
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
            return 0;
    return 1;
}

static int suggest_impl(const char *word, const char *const *candidates, int n, int max, char *buf, int size,
                        int quote)
{
    if (buf && size > 0)
        buf[0] = '\0';
    if (!word || !candidates || n <= 0 || max <= 0)
        return 0;
    enum { SLOTS = 16 };
    if (max > SLOTS)
        max = SLOTS;
    int pick[SLOTS], dist[SLOTS], found = 0;
    size_t wlen = strlen(word);
    int limit = (int)(wlen / 3) > 1 ? (int)(wlen / 3) : 1;
    for (int i = 0; i < n; i++) {
        if (!candidates[i])
            continue;
        int dup = 0;
        for (int k = 0; k < found; k++)
            dup |= strcmp(candidates[pick[k]], candidates[i]) == 0;
        if (dup)
            continue;
        int d = edit_distance(word, candidates[i]);
        if (d < 0 || (d > limit && !is_prefix_ci(word, candidates[i])))
            continue;
        /* Insertion into the best-first list; ties keep candidate order. */
        int at = found;
        while (at > 0 && dist[at - 1] > d)
            at--;
        if (at >= max)
            continue;
        int last = found < max ? found : max - 1;
        for (int k = last; k > at; k--) {
            pick[k] = pick[k - 1];
            dist[k] = dist[k - 1];
        }
        pick[at] = i;
        dist[at] = d;
        if (found < max)
            found++;
    }
    if (buf && size > 0) {
        size_t used = 0;
        for (int k = 0; k < found && used < (size_t)size; k++) {
            const char *sep = k == 0 ? "" : k == found - 1 ? " or " : ", ";
            int w = snprintf(buf + used, (size_t)size - used, quote ? "%s'%s'" : "%s%s", sep, candidates[pick[k]]);
            if (w < 0)
                break;
            used += (size_t)w;
        }
    }
    return found;
}

int mtl_cfg_suggest(const char *word, const char *const *candidates, int n, int max, char *buf, int size)
{
    return suggest_impl(word, candidates, n, max, buf, size, 0);
}

/* ---------------------------------------------------------------- unused fields */

static mtl_status report_unused(const mtl_cfg_node *msg, const mtl_cfg_node *f, mtl_error *err)
{
    char where[160];
    if (msg->name)
        snprintf(where, sizeof(where), "in %s", msg->name);
    else
        snprintf(where, sizeof(where), "at top level");
    const char *const *known = (const char *const *)msg->known;
    for (int i = 0; i < msg->n_known; i++)
        if (strcmp(known[i], f->name) == 0) /* counted but never taken: a reader bug, say so plainly */
            return mtl_cfg_fail(f, err, MTL_ERR_CONFIG, "field '%s' %s was not used", f->name, where);
    if (msg->n_known == 0)
        return mtl_cfg_fail(f, err, MTL_ERR_CONFIG, "unknown field '%s' %s; nothing reads any field %s", f->name,
                            where, where);
    char near[512];
    if (suggest_impl(f->name, known, msg->n_known, 3, near, sizeof(near), 1) > 0)
        return mtl_cfg_fail(f, err, MTL_ERR_CONFIG, "unknown field '%s' %s; did you mean %s?", f->name, where,
                            near);
    char list[1024];
    size_t used = 0;
    list[0] = '\0';
    for (int i = 0; i < msg->n_known && used < sizeof(list); i++) {
        int w = snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", known[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return mtl_cfg_fail(f, err, MTL_ERR_CONFIG, "unknown field '%s' %s; valid fields here: %s", f->name, where,
                        list);
}

mtl_status mtl_cfg_check_unused(const mtl_cfg_node *msg, mtl_error *err)
{
    if (!msg)
        return MTL_OK;
    for (int i = 0; i < msg->n_fields; i++) {
        const mtl_cfg_node *f = msg->fields[i];
        if (!f->used)
            return report_unused(msg, f, err);
        if (f->kind == MTL_CFG_MESSAGE)
            MTL_TRY(mtl_cfg_check_unused(f, err));
    }
    return MTL_OK;
}
