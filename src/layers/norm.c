/* BatchNorm, Scale, Bias, LRN: not implemented yet. */
#include "layers/layers.h"

static mtl_status stub_setup(mtl_layer *l, mtl_error *err)
{
    return mtl_layer_fail(l, err, MTL_ERR_UNSUPPORTED, "not implemented yet");
}

const mtl_layer_ops mtl_layer_batch_norm = {.type = "BatchNorm", .min_bottoms = 0, .max_bottoms = -1, .min_tops = 0, .max_tops = -1, .setup = stub_setup};
const mtl_layer_ops mtl_layer_scale = {.type = "Scale", .min_bottoms = 0, .max_bottoms = -1, .min_tops = 0, .max_tops = -1, .setup = stub_setup};
const mtl_layer_ops mtl_layer_bias = {.type = "Bias", .min_bottoms = 0, .max_bottoms = -1, .min_tops = 0, .max_tops = -1, .setup = stub_setup};
const mtl_layer_ops mtl_layer_lrn = {.type = "LRN", .min_bottoms = 0, .max_bottoms = -1, .min_tops = 0, .max_tops = -1, .setup = stub_setup};
