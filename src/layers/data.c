/* Data, ImageData, MemoryData: not implemented yet. */
#include "layers/layers.h"

static mtl_status stub_setup(mtl_layer *l, mtl_error *err)
{
    return mtl_layer_fail(l, err, MTL_ERR_UNSUPPORTED, "not implemented yet");
}

const mtl_layer_ops mtl_layer_data = {.type = "Data", .max_bottoms = -1, .max_tops = -1, .setup = stub_setup};
const mtl_layer_ops mtl_layer_image_data = {.type = "ImageData", .max_bottoms = -1, .max_tops = -1, .setup = stub_setup};
const mtl_layer_ops mtl_layer_memory_data = {.type = "MemoryData", .max_bottoms = -1, .max_tops = -1, .setup = stub_setup};
