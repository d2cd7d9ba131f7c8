/* mtl's snapshot files (.mtlsnap): a versioned, little-endian, checksummed binary format holding a
 * net's parameters by name and, for resuming, the solver's whole state. docs/snapshot-format.md
 * describes the bytes. Files are written to "<path>.tmp", synced, then renamed, so a crash never
 * leaves a half-written snapshot under the real name; reading refuses truncated or corrupt files
 * with the path and what is wrong. */
#ifndef MTL_CORE_SNAPSHOT_H
#define MTL_CORE_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"
#include "core/net.h"
#include "core/rng.h"

#define MTL_SNAPSHOT_VERSION 1
#define MTL_SNAPSHOT_EXTENSION ".mtlsnap"

/* A named float array. When writing, `data` points at the values (borrowed). In a snapshot that
 * was read, `data` is NULL and the values are copied out with mtl_snapshot_copy. */
typedef struct mtl_snapshot_array {
    char *name;
    int ndim;
    int shape[MTL_MAX_AXES];
    int64_t count;        /* product of shape */
    const float *data;
    size_t file_offset;   /* read: where the values start in the file */
} mtl_snapshot_array;

/* State a layer keeps beyond its parameters (a data layer's read position), as bytes. */
typedef struct mtl_snapshot_layer_state {
    char *name;             /* the layer's name */
    uint64_t size;
    const uint8_t *bytes;   /* written: owned by the snapshot; read: points into the file */
} mtl_snapshot_layer_state;

/* What a solver needs to continue exactly where it stopped. */
typedef struct mtl_snapshot_state {
    int64_t iter;                 /* iterations completed */
    char solver_type[32];         /* "SGD", "Adam", ... */
    int n_history;                /* history vectors per learnable slot */
    int n_slots;
    mtl_snapshot_array *history;  /* per slot: name = slot name, shape [n_history, slot count] */
    int n_rngs;
    mtl_rng *rngs;                /* the train net's generator first, then each test net's */
    /* The loss-smoothing window (average_loss entries of `width` values each, a ring). */
    int64_t window_size, window_fill, window_pos;
    int window_width;
    mtl_snapshot_array window;    /* shape [window_size, window_width] */
    int n_layer_states;
    mtl_snapshot_layer_state *layer_states; /* train net layers with state hooks, net order */
} mtl_snapshot_state;

typedef struct mtl_snapshot {
    int n_params;
    mtl_snapshot_array *params;   /* "<layer name>/<param index>", net order */
    int has_state;
    mtl_snapshot_state state;
    /* read snapshots only */
    char *path;
    unsigned char *bytes;
    size_t size;
    uint32_t version;
} mtl_snapshot;

/* Writes snap to path atomically (path.tmp, fsync, rename). */
mtl_status mtl_snapshot_write(const char *path, const mtl_snapshot *snap, mtl_error *err);
/* Reads and checks a whole snapshot (magic, version, length, checksum, every section's sizes). */
mtl_status mtl_snapshot_read(const char *path, mtl_snapshot **out, mtl_error *err);
/* Frees a snapshot: one from mtl_snapshot_read, or one a writer built with malloc'd names and
 * arrays (the values its arrays point at are borrowed and stay). NULL is a no-op. */
void mtl_snapshot_free(mtl_snapshot *snap);

/* Copies a's count values out of a snapshot that was read (or from a->data when writing). */
void mtl_snapshot_copy(const mtl_snapshot *snap, const mtl_snapshot_array *a, float *dst);
/* The parameter array called name, or NULL. */
const mtl_snapshot_array *mtl_snapshot_find_param(const mtl_snapshot *snap, const char *name);

/* Describes every layer parameter of net ("<layer>/<index>", shape, data) in snap->params; the
 * arrays borrow the net's values. */
mtl_status mtl_snapshot_add_net_params(mtl_snapshot *snap, const mtl_net *net, mtl_error *err);

/* Restores every parameter of net from snap, which must hold exactly the net's parameters with the
 * same shapes (resuming the same net); anything else is an error naming the first difference. */
mtl_status mtl_snapshot_restore_params(const mtl_snapshot *snap, mtl_net *net, mtl_error *err);

/* Counts of a by-name weight load. */
typedef struct mtl_snapshot_match {
    int copied;      /* net parameters found in the file with the same shape */
    int missing;     /* net parameters the file lacks (they keep their values) */
    int mismatched;  /* found with another shape (they keep their values) */
    int unused;      /* file arrays no net parameter asked for */
} mtl_snapshot_match;

/* Copies parameters into net by layer name and parameter index, for fine-tuning into a net whose
 * heads differ. Shapes equal up to leading axes of size 1 count as equal. Writes one line per
 * parameter and a summary to report (may be NULL); counts go to match (may be NULL). Not finding
 * a single matching parameter is an error (almost always the wrong file). */
mtl_status mtl_snapshot_load_weights(const mtl_snapshot *snap, mtl_net *net, FILE *report,
                                     mtl_snapshot_match *match, mtl_error *err);

#endif
