/* Box-regression targets are normalised, (delta - mean) / std, by ProposalTarget for training and
 * un-normalised by DetectionOutput at deployment. Both read the same two fields with the same
 * defaults, here, so a trained net and its deploy net cannot disagree by a default. */
#ifndef MTL_LAYERS_BOX_NORMALIZATION_H
#define MTL_LAYERS_BOX_NORMALIZATION_H

#include "core/layer.h"

/* Reads `bbox_normalize_means` (4 finite values, default 0 0 0 0) and `bbox_normalize_stds` (4
 * positive values, default 0.1 0.1 0.2 0.2) from the param message p (may be NULL). */
mtl_status mtl_layer_read_box_normalization(mtl_layer *l, mtl_cfg_node *p, float *means /* 4 */,
                                            float *stds /* 4 */, mtl_error *err);

#endif
