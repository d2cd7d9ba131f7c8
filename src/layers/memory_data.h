/* The in-memory input for programs that use the C API: a MemoryData layer
 * (memory_data_param { batch_size channels height width }) serves batches from arrays handed to it
 * here instead of reading a database. */
#ifndef MTL_LAYERS_MEMORY_DATA_H
#define MTL_LAYERS_MEMORY_DATA_H

#include "core/layer.h"

/* Gives a MemoryData layer its samples: data holds n samples of channels x height x width floats
 * (the sizes its memory_data_param names), labels n x k values (NULL when k is 0; a layer with a
 * label top needs k >= 1). Both are copied. Each forward then serves the next batch_size samples,
 * cycling through the n (a batch that runs past the end continues from the start), and the label
 * top is batch (k == 1) or batch x k. Setting new data starts again from sample 0. */
mtl_status mtl_memory_data_set(mtl_layer *l, const float *data, const float *labels, int n, int k, mtl_error *err);

#endif
