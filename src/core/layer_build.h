/* Building layers: the part of layer construction that owners (the net, standalone layers) share.
 * Not for layer implementations. */
#ifndef MTL_CORE_LAYER_BUILD_H
#define MTL_CORE_LAYER_BUILD_H

#include "core/layer.h"

/* Creates the layer, checks blob counts, reads loss_weight / propagate_down, runs the type's
 * setup and reads the `param` specs. Parameters are declared but have no storage yet. On failure
 * *out may hold a partly built layer that the caller frees. */
mtl_status mtl_layer_begin(mtl_cfg_node *cfg, const mtl_layer_ops *ops, const char *name, mtl_phase phase,
                           mtl_tensor **bottoms, int n_bottoms, mtl_tensor **tops, int n_tops, mtl_rng *rng,
                           mtl_layer **out, mtl_error *err);
/* Gives each parameter storage of its own and runs its filler. */
mtl_status mtl_layer_bind_own_params(mtl_layer *l, mtl_error *err);
/* The ops for `type`, or an error at cfg's type field suggesting close names. */
mtl_status mtl_layer_find_type(mtl_cfg_node *cfg, const char *type, const mtl_layer_ops **ops, mtl_error *err);

#endif
