/* Fillers initialise parameters: constant, uniform, gaussian, xavier, msra (Caffe's definitions:
 * fan_in = count / shape[0], fan_out = count / shape[1]). */
#ifndef MTL_CORE_FILLER_H
#define MTL_CORE_FILLER_H

#include "config/config.h"
#include "core/rng.h"
#include "core/tensor.h"

/* Fills t->data as the filler message says; NULL filler means constant 0. */
mtl_status mtl_filler_fill(mtl_cfg_node *filler, mtl_tensor *t, mtl_rng *rng, mtl_error *err);
/* Checks a filler message without filling (parameters that view another's values). */
mtl_status mtl_filler_check(mtl_cfg_node *filler, mtl_error *err);

#endif
