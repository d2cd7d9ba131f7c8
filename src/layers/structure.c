/* Flatten, Reshape, Concat, Slice, Split, Eltwise, Silence: not implemented yet. */
#include "layers/layers.h"

static mtl_status stub_setup(mtl_layer *l, mtl_error *err)
{
    return mtl_layer_fail(l, err, MTL_ERR_UNSUPPORTED, "not implemented yet");
}

const mtl_layer_ops mtl_layer_flatten = {.type = "Flatten", .min_bottoms = 0, .max_bottoms = -1, .min_tops = 0, .max_tops = -1, .setup = stub_setup};
const mtl_layer_ops mtl_layer_reshape = {.type = "Reshape", .min_bottoms = 0, .max_bottoms = -1, .min_tops = 0, .max_tops = -1, .setup = stub_setup};
const mtl_layer_ops mtl_layer_concat = {.type = "Concat", .min_bottoms = 0, .max_bottoms = -1, .min_tops = 0, .max_tops = -1, .setup = stub_setup};
const mtl_layer_ops mtl_layer_slice = {.type = "Slice", .min_bottoms = 0, .max_bottoms = -1, .min_tops = 0, .max_tops = -1, .setup = stub_setup};
const mtl_layer_ops mtl_layer_split = {.type = "Split", .min_bottoms = 0, .max_bottoms = -1, .min_tops = 0, .max_tops = -1, .setup = stub_setup};
const mtl_layer_ops mtl_layer_eltwise = {.type = "Eltwise", .min_bottoms = 0, .max_bottoms = -1, .min_tops = 0, .max_tops = -1, .setup = stub_setup};
const mtl_layer_ops mtl_layer_silence = {.type = "Silence", .min_bottoms = 0, .max_bottoms = -1, .min_tops = 0, .max_tops = -1, .setup = stub_setup};
