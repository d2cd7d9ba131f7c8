/* The layer contract. A layer type is data: a const mtl_layer_ops table (src/layers/layers.c
 * collects them all in one array). The net checks blob counts, shapes between layers, phases and
 * which gradients are needed; a layer file holds only its own math.
 *
 * Life of a layer: setup (bottoms already shaped: read config, check bottom shapes, declare
 * parameters) -> the owner binds parameter storage and runs fillers -> reshape (set top shapes
 * from bottom shapes; called again before every forward, so it must be cheap when nothing
 * changed) -> forward / backward, many times -> release.
 *
 * Gradients: backward WRITES bottom gradients (only where propagate_down[i]; in-place layers
 * read and overwrite the shared gradient) and ACCUMULATES parameter gradients (only where
 * mtl_layer_param_needs_grad), so iter_size accumulation and shared weights just work. The net
 * inserts Split layers where a blob feeds several layers, which is where bottom gradients add up.
 *
 * Loss layers: the net writes each top's loss weight into top->grad[0] before backward (Caffe's
 * convention), so a loss's backward scales its gradient by tops[0]->grad[0]. A per-task backward
 * is then just a different set of weights. */
#ifndef MTL_CORE_LAYER_H
#define MTL_CORE_LAYER_H

#include <stdint.h>

#include "config/config.h"
#include "mtl/mtl.h"
#include "core/rng.h"
#include "core/tensor.h"


typedef struct mtl_layer mtl_layer;

typedef struct mtl_layer_ops {
    const char *type;           /* prototxt type name: "Convolution" */
    int min_bottoms, max_bottoms; /* max -1: any number */
    int min_tops, max_tops;       /* max -1: any number */
    int allows_in_place;        /* top[0] may be the same blob as bottom[0] */
    int no_backward;            /* has no backward at all (data, metrics): never asked for one */
    mtl_status (*setup)(mtl_layer *l, mtl_error *err);
    mtl_status (*reshape)(mtl_layer *l, mtl_error *err);
    mtl_status (*forward)(mtl_layer *l, mtl_error *err);
    void (*backward)(mtl_layer *l);
    void (*release)(mtl_layer *l);           /* frees l->priv; may be NULL */
    int64_t (*flops)(const mtl_layer *l);    /* forward multiply-adds x2; NULL: one per top value */
    /* Optional: one line of statistics for the training log (a data layer: time spent waiting for
     * data since the last call); returns the length written, 0 for nothing to say. */
    int (*stats)(mtl_layer *l, char *buf, size_t size);
    /* Optional: state beyond parameters that a snapshot keeps for an exact resume (a data layer's
     * read position); save writes state_size() bytes, load restores them. */
    size_t (*state_size)(const mtl_layer *l);
    void (*state_save)(const mtl_layer *l, uint8_t *buf);
    mtl_status (*state_load)(mtl_layer *l, const uint8_t *buf, size_t size, mtl_error *err);
} mtl_layer_ops;

typedef struct mtl_param_spec {
    char *share_name;       /* param { name } or NULL */
    float lr_mult, decay_mult;
    mtl_cfg_node *filler;   /* filler message (NULL: constant 0) */
} mtl_param_spec;

struct mtl_layer {
    const mtl_layer_ops *ops;
    char *name;
    const char *file;           /* prototxt the layer came from (errors) */
    int line;                   /* line of the layer's opening */
    mtl_cfg_node *cfg;          /* the layer message: layers read their *_param from it */
    mtl_phase phase;

    int n_bottoms, n_tops;
    mtl_tensor **bottoms;       /* borrowed from the net */
    mtl_tensor **tops;          /* borrowed from the net */
    int *propagate_down;        /* per bottom: backward must write bottom grad */
    float *loss_weights;        /* per top; 0 for non-loss tops */

    int n_params;
    mtl_tensor **params;        /* owned tensor headers, storage bound by the owner */
    mtl_param_spec *param_specs;
    int *param_needs_grad;      /* per param: set by the owner (lr_mult != 0 and backward needed) */

    mtl_rng *rng;               /* the owner's generator (dropout, fillers) */
    void *priv;                 /* the layer type's own state */
};

/* Layer-side helpers. */

/* Declares the next learnable parameter (index = call order) with its shape and filler; only in
 * setup. The owner reads `param { lr_mult decay_mult name }` per index. */
mtl_status mtl_layer_add_param(mtl_layer *l, int ndim, const int *shape, mtl_cfg_node *filler,
                               mtl_error *err);
static inline int mtl_layer_param_needs_grad(const mtl_layer *l, int i) { return l->param_needs_grad[i]; }

/* "layer 'conv1' (Convolution, file:12): " + message. */
mtl_status mtl_layer_fail(const mtl_layer *l, mtl_error *err, mtl_status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The layer's `<name>` param message, or NULL if absent (errors if given twice). */
mtl_status mtl_layer_param_message(mtl_layer *l, const char *name, mtl_cfg_node **out, mtl_error *err);

/* Standalone layers (tests, tools): a layer built from its prototxt message over given bottoms and
 * tops, with parameters in storage of its own, filled by the declared fillers. The net builds
 * its layers with the same calls but binds parameters to its flat buffers. */
mtl_status mtl_layer_create(mtl_cfg_node *layer_cfg, mtl_phase phase, mtl_tensor **bottoms,
                            int n_bottoms, mtl_tensor **tops, int n_tops, mtl_rng *rng, mtl_layer **out,
                            mtl_error *err);
void mtl_layer_free(mtl_layer *l);

/* Finds a layer type by its prototxt name; NULL if mtl has none. */
const mtl_layer_ops *mtl_layer_ops_find(const char *type);
/* All layer type names (for suggestions and --help). */
int mtl_layer_type_names(const char *const **names);

#endif
