/* Every layer type mtl has, in one explicit table (no start-up registration). Adding a type:
 * write its ops in the family's file, add its enum value and its table entry. */
#ifndef MTL_LAYERS_LAYERS_H
#define MTL_LAYERS_LAYERS_H

#include "core/layer.h"

typedef enum mtl_layer_type {
    MTL_LAYER_INPUT,
    MTL_LAYER_DUMMY_DATA,
    MTL_LAYER_CONVOLUTION,
    MTL_LAYER_POOLING,
    MTL_LAYER_INNER_PRODUCT,
    MTL_LAYER_RELU,
    MTL_LAYER_PRELU,
    MTL_LAYER_SIGMOID,
    MTL_LAYER_TANH,
    MTL_LAYER_DROPOUT,
    MTL_LAYER_BATCH_NORM,
    MTL_LAYER_SCALE,
    MTL_LAYER_BIAS,
    MTL_LAYER_LRN,
    MTL_LAYER_FLATTEN,
    MTL_LAYER_RESHAPE,
    MTL_LAYER_CONCAT,
    MTL_LAYER_SLICE,
    MTL_LAYER_SPLIT,
    MTL_LAYER_ELTWISE,
    MTL_LAYER_SILENCE,
    MTL_LAYER_SOFTMAX,
    MTL_LAYER_SOFTMAX_WITH_LOSS,
    MTL_LAYER_SIGMOID_CROSS_ENTROPY_LOSS,
    MTL_LAYER_EUCLIDEAN_LOSS,
    MTL_LAYER_ACCURACY,
    MTL_LAYER_DATA,
    MTL_LAYER_IMAGE_DATA,
    MTL_LAYER_MEMORY_DATA,
    MTL_LAYER_CONTRASTIVE_LOSS,
    MTL_LAYER_TRIPLET_LOSS,
    MTL_LAYER_PAIR_LOSS,
    MTL_LAYER_L2_NORMALIZE,
    MTL_LAYER_NME,
    MTL_LAYER_SMOOTH_L1_LOSS,
    MTL_LAYER_ROI_POOLING,
    MTL_LAYER_ROI_ALIGN,
    MTL_LAYER_ANCHOR_TARGET,
    MTL_LAYER_PROPOSAL,
    MTL_LAYER_PROPOSAL_TARGET,
    MTL_LAYER_DETECTION_OUTPUT,
    MTL_LAYER_TYPE_COUNT
} mtl_layer_type;

extern const mtl_layer_ops mtl_layer_input;
extern const mtl_layer_ops mtl_layer_dummy_data;
extern const mtl_layer_ops mtl_layer_convolution;
extern const mtl_layer_ops mtl_layer_pooling;
extern const mtl_layer_ops mtl_layer_inner_product;
extern const mtl_layer_ops mtl_layer_relu;
extern const mtl_layer_ops mtl_layer_prelu;
extern const mtl_layer_ops mtl_layer_sigmoid;
extern const mtl_layer_ops mtl_layer_tanh;
extern const mtl_layer_ops mtl_layer_dropout;
extern const mtl_layer_ops mtl_layer_batch_norm;
extern const mtl_layer_ops mtl_layer_scale;
extern const mtl_layer_ops mtl_layer_bias;
extern const mtl_layer_ops mtl_layer_lrn;
extern const mtl_layer_ops mtl_layer_flatten;
extern const mtl_layer_ops mtl_layer_reshape;
extern const mtl_layer_ops mtl_layer_concat;
extern const mtl_layer_ops mtl_layer_slice;
extern const mtl_layer_ops mtl_layer_split;
extern const mtl_layer_ops mtl_layer_eltwise;
extern const mtl_layer_ops mtl_layer_silence;
extern const mtl_layer_ops mtl_layer_softmax;
extern const mtl_layer_ops mtl_layer_softmax_with_loss;
extern const mtl_layer_ops mtl_layer_sigmoid_cross_entropy_loss;
extern const mtl_layer_ops mtl_layer_euclidean_loss;
extern const mtl_layer_ops mtl_layer_accuracy;
extern const mtl_layer_ops mtl_layer_data;
extern const mtl_layer_ops mtl_layer_image_data;
extern const mtl_layer_ops mtl_layer_memory_data;
extern const mtl_layer_ops mtl_layer_contrastive_loss;
extern const mtl_layer_ops mtl_layer_triplet_loss;
extern const mtl_layer_ops mtl_layer_pair_loss;
extern const mtl_layer_ops mtl_layer_l2_normalize;
extern const mtl_layer_ops mtl_layer_nme;
extern const mtl_layer_ops mtl_layer_smooth_l1_loss;
extern const mtl_layer_ops mtl_layer_roi_pooling;
extern const mtl_layer_ops mtl_layer_roi_align;
extern const mtl_layer_ops mtl_layer_anchor_target;
extern const mtl_layer_ops mtl_layer_proposal;
extern const mtl_layer_ops mtl_layer_proposal_target;
extern const mtl_layer_ops mtl_layer_detection_output;

extern const mtl_layer_ops *const mtl_layer_table[MTL_LAYER_TYPE_COUNT];

#endif
