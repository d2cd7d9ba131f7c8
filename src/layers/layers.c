/* The table of layer types, indexed by mtl_layer_type. */
#include "layers/layers.h"

#include <string.h>

const mtl_layer_ops *const mtl_layer_table[MTL_LAYER_TYPE_COUNT] = {
    [MTL_LAYER_INPUT] = &mtl_layer_input,
    [MTL_LAYER_DUMMY_DATA] = &mtl_layer_dummy_data,
    [MTL_LAYER_CONVOLUTION] = &mtl_layer_convolution,
    [MTL_LAYER_POOLING] = &mtl_layer_pooling,
    [MTL_LAYER_INNER_PRODUCT] = &mtl_layer_inner_product,
    [MTL_LAYER_RELU] = &mtl_layer_relu,
    [MTL_LAYER_PRELU] = &mtl_layer_prelu,
    [MTL_LAYER_SIGMOID] = &mtl_layer_sigmoid,
    [MTL_LAYER_TANH] = &mtl_layer_tanh,
    [MTL_LAYER_DROPOUT] = &mtl_layer_dropout,
    [MTL_LAYER_BATCH_NORM] = &mtl_layer_batch_norm,
    [MTL_LAYER_SCALE] = &mtl_layer_scale,
    [MTL_LAYER_BIAS] = &mtl_layer_bias,
    [MTL_LAYER_LRN] = &mtl_layer_lrn,
    [MTL_LAYER_FLATTEN] = &mtl_layer_flatten,
    [MTL_LAYER_RESHAPE] = &mtl_layer_reshape,
    [MTL_LAYER_CONCAT] = &mtl_layer_concat,
    [MTL_LAYER_SLICE] = &mtl_layer_slice,
    [MTL_LAYER_SPLIT] = &mtl_layer_split,
    [MTL_LAYER_ELTWISE] = &mtl_layer_eltwise,
    [MTL_LAYER_SILENCE] = &mtl_layer_silence,
    [MTL_LAYER_SOFTMAX] = &mtl_layer_softmax,
    [MTL_LAYER_SOFTMAX_WITH_LOSS] = &mtl_layer_softmax_with_loss,
    [MTL_LAYER_SIGMOID_CROSS_ENTROPY_LOSS] = &mtl_layer_sigmoid_cross_entropy_loss,
    [MTL_LAYER_EUCLIDEAN_LOSS] = &mtl_layer_euclidean_loss,
    [MTL_LAYER_ACCURACY] = &mtl_layer_accuracy,
    [MTL_LAYER_DATA] = &mtl_layer_data,
    [MTL_LAYER_IMAGE_DATA] = &mtl_layer_image_data,
    [MTL_LAYER_MEMORY_DATA] = &mtl_layer_memory_data,
    [MTL_LAYER_CONTRASTIVE_LOSS] = &mtl_layer_contrastive_loss,
    [MTL_LAYER_TRIPLET_LOSS] = &mtl_layer_triplet_loss,
    [MTL_LAYER_PAIR_LOSS] = &mtl_layer_pair_loss,
    [MTL_LAYER_L2_NORMALIZE] = &mtl_layer_l2_normalize,
    [MTL_LAYER_NME] = &mtl_layer_nme,
    [MTL_LAYER_SMOOTH_L1_LOSS] = &mtl_layer_smooth_l1_loss,
    [MTL_LAYER_ROI_POOLING] = &mtl_layer_roi_pooling,
    [MTL_LAYER_ROI_ALIGN] = &mtl_layer_roi_align,
    [MTL_LAYER_ANCHOR_TARGET] = &mtl_layer_anchor_target,
    [MTL_LAYER_PROPOSAL] = &mtl_layer_proposal,
    [MTL_LAYER_PROPOSAL_TARGET] = &mtl_layer_proposal_target,
    [MTL_LAYER_DETECTION_OUTPUT] = &mtl_layer_detection_output,
};

static const char *layer_type_names[MTL_LAYER_TYPE_COUNT];

const mtl_layer_ops *mtl_layer_ops_find(const char *type)
{
    for (int i = 0; i < MTL_LAYER_TYPE_COUNT; i++)
        if (strcmp(mtl_layer_table[i]->type, type) == 0)
            return mtl_layer_table[i];
    return NULL;
}

int mtl_layer_type_names(const char *const **names)
{
    /* filled on every call: cheap, and keeps the table the single source */
    for (int i = 0; i < MTL_LAYER_TYPE_COUNT; i++)
        layer_type_names[i] = mtl_layer_table[i]->type;
    *names = layer_type_names;
    return MTL_LAYER_TYPE_COUNT;
}
