/* The protobuf text format as Caffe nets and solvers use it, read into a generic tree of fields.
 * There is no schema file: the readers below are the schema. Every reader call records the field
 * name it asked for on the message, and mtl_cfg_check_unused() then reports any field nobody
 * asked for ("did you mean num_output?"), so a typo is an error, never silently ignored. */
#ifndef MTL_CONFIG_CONFIG_H
#define MTL_CONFIG_CONFIG_H

#include <stddef.h> /* core/error.h uses size_t without including it */
#include <stdint.h>

#include "core/error.h"

typedef enum mtl_cfg_kind {
    MTL_CFG_MESSAGE, /* name { ... }  or  name: { ... } */
    MTL_CFG_NUMBER,  /* 12, -3.5e-4, inf, -inf, nan */
    MTL_CFG_IDENT,   /* MAX, TRAIN, true */
    MTL_CFG_STRING,  /* "text" with C escapes, already unescaped */
} mtl_cfg_kind;

typedef struct mtl_cfg_node mtl_cfg_node;
struct mtl_cfg_node {
    const char *file;      /* shown in errors; owned by the root */
    char *name;            /* field name; NULL for the root */
    int line, column;      /* 1-based position of the field name */
    mtl_cfg_kind kind;
    char *text;            /* scalar value text (unescaped for strings); NULL for messages */
    int value_line, value_column;
    mtl_cfg_node **fields; /* children of a message, in file order */
    int n_fields, fields_cap;
    int used;              /* set when a reader took this field */
    char **known;          /* names readers asked this message for */
    int n_known, known_cap;
    char *file_storage;    /* root only: owns `file` */
};

/* Parses a whole file or string into a root message. Errors name file:line:column and what was
 * expected. display_name is what errors call the string (for example "<string>"). */
mtl_status mtl_cfg_parse_file(const char *path, mtl_cfg_node **root, mtl_error *err);
mtl_status mtl_cfg_parse_string(const char *text, const char *display_name, mtl_cfg_node **root,
                                mtl_error *err);
void mtl_cfg_free(mtl_cfg_node *root);

/* Formats "file:line:column: message" for a node (the field name's position). */
mtl_status mtl_cfg_fail(const mtl_cfg_node *node, mtl_error *err, mtl_status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* How many times field `name` occurs in msg (0 if msg is NULL); records name as known. */
int mtl_cfg_count(mtl_cfg_node *msg, const char *name);
/* The index-th occurrence of `name` (NULL if absent), marked used; records name as known. */
mtl_cfg_node *mtl_cfg_field(mtl_cfg_node *msg, const char *name, int index);
/* Records name as a known field without reading it (for fields accepted and ignored, such as
 * Caffe's `engine`); occurrences are marked used. */
void mtl_cfg_accept(mtl_cfg_node *msg, const char *name);

/* Singular readers: an absent field (or a NULL msg) gives the default; a field given twice, or
 * a value of the wrong kind or out of range, is an error at its position. */
mtl_status mtl_cfg_int(mtl_cfg_node *msg, const char *name, int64_t def, int64_t *out, mtl_error *err);
/* Like mtl_cfg_int, and the value must lie in [min, max]. */
mtl_status mtl_cfg_int_range(mtl_cfg_node *msg, const char *name, int64_t def, int64_t min, int64_t max,
                             int64_t *out, mtl_error *err);
mtl_status mtl_cfg_float(mtl_cfg_node *msg, const char *name, double def, double *out, mtl_error *err);
mtl_status mtl_cfg_bool(mtl_cfg_node *msg, const char *name, int def, int *out, mtl_error *err);
/* The string stays owned by the tree. */
mtl_status mtl_cfg_string(mtl_cfg_node *msg, const char *name, const char *def, const char **out,
                          mtl_error *err);
/* An identifier from names[0..n); the error lists the choices. *out is the index. */
mtl_status mtl_cfg_enum(mtl_cfg_node *msg, const char *name, const char *const *names, int n, int def,
                        int *out, mtl_error *err);
/* A nested message, or *out = NULL if absent. */
mtl_status mtl_cfg_message(mtl_cfg_node *msg, const char *name, mtl_cfg_node **out, mtl_error *err);

/* Repeated scalars: the index-th occurrence (index < mtl_cfg_count). */
mtl_status mtl_cfg_int_at(mtl_cfg_node *msg, const char *name, int index, int64_t *out, mtl_error *err);
mtl_status mtl_cfg_float_at(mtl_cfg_node *msg, const char *name, int index, double *out, mtl_error *err);
mtl_status mtl_cfg_string_at(mtl_cfg_node *msg, const char *name, int index, const char **out,
                             mtl_error *err);

/* Scalar conversion of a single node (for callers that walk fields themselves). */
mtl_status mtl_cfg_node_int(const mtl_cfg_node *node, int64_t *out, mtl_error *err);
mtl_status mtl_cfg_node_float(const mtl_cfg_node *node, double *out, mtl_error *err);

/* Fails on the first field under msg (recursively, in file order) that no reader took, naming it,
 * its position, and the closest known names ("did you mean num_output?") or the known list. */
mtl_status mtl_cfg_check_unused(const mtl_cfg_node *msg, mtl_error *err);

/* Up to max names from candidates[0..n) closest to word by edit distance (close enough to be a
 * plausible typo), best first, written as "a, b or c" into buf; returns the number found. */
int mtl_cfg_suggest(const char *word, const char *const *candidates, int n, int max, char *buf, int size);

#endif
