/* Convolution: not implemented yet. */
#include "layers/layers.h"

static mtl_status stub_setup(mtl_layer *l, mtl_error *err)
{
    return mtl_layer_fail(l, err, MTL_ERR_UNSUPPORTED, "not implemented yet");
}

const mtl_layer_ops mtl_layer_convolution = {.type = "Convolution", .min_bottoms = 0, .max_bottoms = -1, .min_tops = 0, .max_tops = -1, .setup = stub_setup};
