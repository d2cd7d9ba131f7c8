/* How losses and metrics read labels: mtl's missing-label marker, Caffe's ignore_label and Caffe's
 * loss normalization (LossParameter). Shared by SoftmaxWithLoss, SigmoidCrossEntropyLoss,
 * EuclideanLoss and Accuracy so that every one of them treats a missing label the same way. */
#ifndef MTL_LAYERS_LABELS_H
#define MTL_LAYERS_LABELS_H

#include <math.h>
#include <stdint.h>

#include "core/layer.h"

/* mtl's missing-label marker. A multi-task sample rarely has labels for every task; the data
 * pipeline writes NaN where a label is missing, and every loss and metric counts such a value as
 * ignored: it adds nothing to the loss or the gradient and is not part of the VALID count (like
 * Caffe's ignore_label, which keeps working alongside it). */
#define MTL_LABEL_MISSING NAN

static inline int mtl_label_is_missing(float v) { return isnan(v); }

/* Caffe's LossParameter.NormalizationMode, in Caffe's order. */
typedef enum mtl_loss_norm {
    MTL_LOSS_NORM_FULL,       /* by the number of label positions, ignored ones included */
    MTL_LOSS_NORM_VALID,      /* by the number of label positions not ignored */
    MTL_LOSS_NORM_BATCH_SIZE, /* by the outer (batch) size */
    MTL_LOSS_NORM_NONE,       /* not at all */
} mtl_loss_norm;

typedef struct mtl_loss_config {
    int has_ignore_label;
    int ignore_label;
    mtl_loss_norm normalization;
} mtl_loss_config;

/* Reads `loss_param { ignore_label normalization normalize }` as Caffe does: `normalization` when
 * given, else the legacy `normalize` (true: VALID, false: BATCH_SIZE), else `def` (Caffe's
 * SoftmaxWithLoss defaults to VALID, SigmoidCrossEntropyLoss to BATCH_SIZE). Defined in loss.c. */
mtl_status mtl_loss_read_param(mtl_layer *l, mtl_loss_norm def, mtl_loss_config *out, mtl_error *err);

/* Caffe's normalizer for `outer` x `inner` label positions of which `valid` are not ignored. The
 * max(1, .) keeps a batch whose labels are all ignored (a task switched off for it) at loss 0
 * instead of NaN. */
static inline double mtl_loss_normalizer(mtl_loss_norm norm, int64_t outer, int64_t inner, int64_t valid)
{
    double n = 1.0;
    switch (norm) {
    case MTL_LOSS_NORM_FULL:
        n = (double)(outer * inner);
        break;
    case MTL_LOSS_NORM_VALID:
        n = (double)valid;
        break;
    case MTL_LOSS_NORM_BATCH_SIZE:
        n = (double)outer;
        break;
    case MTL_LOSS_NORM_NONE:
        n = 1.0;
        break;
    }
    return n < 1.0 ? 1.0 : n;
}

/* A label value is ignored when it is the missing marker or, with an ignore_label, when it
 * truncates to it (Caffe compares static_cast<int>(label) with ignore_label). */
static inline int mtl_label_is_ignored(float v, int has_ignore_label, int ignore_label)
{
    if (mtl_label_is_missing(v))
        return 1;
    /* outside int's range it cannot equal ignore_label (and the cast would be undefined) */
    if (!has_ignore_label || !(v > -2147483648.0f && v < 2147483648.0f))
        return 0;
    return (int)v == ignore_label;
}

/* Decodes a class label that is not ignored: the class index (truncated like Caffe's cast), or -1
 * when it is not a class in [0, n_classes). */
static inline int mtl_label_class(float v, int n_classes)
{
    if (!(v > -1.0f && v < (float)n_classes))
        return -1;
    int c = (int)v;
    return c < n_classes ? c : -1;
}

/* Caffe's LossLayer check: both bottoms have a first axis and it has the same size. */
static inline mtl_status mtl_loss_check_batch(const mtl_layer *l, mtl_error *err)
{
    const mtl_tensor *a = l->bottoms[0], *b = l->bottoms[1];
    if (a->ndim < 1 || b->ndim < 1)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bottom %d is a scalar; losses need a batch axis",
                              a->ndim < 1 ? 0 : 1);
    if (a->shape[0] != b->shape[0])
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "the data and label should have the same first dimension: bottom 0 has %d, "
                              "bottom 1 has %d",
                              a->shape[0], b->shape[0]);
    return MTL_OK;
}

#endif
