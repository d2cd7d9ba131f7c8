/* DetectionOutput: Faster R-CNN's test-time post-processing as a layer, so a deployed net outputs
 * final detections. Per image and per foreground class: decode each RoI's deltas, clip to the
 * image, drop low scores, NMS; then keep the image's highest-scoring detections over all classes.
 * Boxes stay in the net's input coordinates (divide by im_info's scale for the original image). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "detection/boxes.h"
#include "layers/box_normalization.h"
#include "layers/layers.h"

typedef struct detout_priv {
    int num_classes;         /* including background (class 0) */
    float means[4], stds[4]; /* the normalisation the detection head's targets were trained with */
    float nms_threshold, score_threshold;
    int max_per_image;       /* 0: no limit */
    int class_specific;      /* bbox_pred has 4 deltas per class (else 4 shared by all classes) */

    /* Scratch sized by reshape (grown only): per class, the RoIs of one image that pass the score
     * threshold; per image, the candidates of all classes; for the batch, the output rows. */
    int64_t cap_rois, cap_cands;
    int *order, *keep;     /* cap_rois */
    float *scores, *boxes; /* cap_rois, cap_rois x 4 */
    float *cands;          /* cap_cands x 6: x1 y1 x2 y2 score class */
    float *cand_scores;    /* cap_cands */
    int *cand_order;       /* cap_cands */
    float *out;            /* cap_cands x 7 */
} detout_priv;

static void detout_release(mtl_layer *l)
{
    detout_priv *d = l->priv;
    if (!d)
        return;
    free(d->order);
    free(d->keep);
    free(d->scores);
    free(d->boxes);
    free(d->cands);
    free(d->cand_scores);
    free(d->cand_order);
    free(d->out);
    free(d);
    l->priv = NULL;
}

/* detection_output_param { num_classes bbox_normalize_means bbox_normalize_stds nms_threshold
 * score_threshold max_per_image } (an mtl layer). num_classes has no default: it must agree with
 * the classifier, and a guessed value would only move the error to the first forward. The deltas
 * are un-normalised here, so a net trained on normalised targets needs no weight surgery before
 * deployment (py-faster-rcnn folds them into bbox_pred's weights instead: such weights want
 * means 0 0 0 0 and stds 1 1 1 1). */
static mtl_status detout_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "detection_output_param", &p, err));
    detout_priv *d = mtl_calloc_or_fail(1, sizeof(*d), err, "DetectionOutput state");
    if (!d)
        return MTL_ERR_NOMEM;
    l->priv = d;
    int64_t classes, max_per_image;
    double nms, score;
    int given = mtl_cfg_count(p, "num_classes") > 0;
    MTL_TRY(mtl_cfg_int_range(p, "num_classes", 0, 2, 1 << 20, &classes, err));
    MTL_TRY(mtl_layer_read_box_normalization(l, p, d->means, d->stds, err));
    MTL_TRY(mtl_cfg_float(p, "nms_threshold", 0.3, &nms, err));
    MTL_TRY(mtl_cfg_float(p, "score_threshold", 0.05, &score, err));
    MTL_TRY(mtl_cfg_int_range(p, "max_per_image", 100, 0, 1 << 30, &max_per_image, err));
    if (!given)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "detection_output_param needs num_classes: the classifier's outputs including the "
                              "background (cls_prob's columns)");
    if (!(nms >= 0 && nms <= 1))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "nms_threshold must lie in [0, 1] (it is %g)", nms);
    if (!isfinite(score))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "score_threshold must be finite (it is %g)", score);
    d->num_classes = (int)classes;
    d->nms_threshold = (float)nms;
    d->score_threshold = (float)score;
    d->max_per_image = (int)max_per_image;
    return MTL_OK;
}

/* Values per row of a blob whose first axis counts rows (works for 0 rows too). */
static int64_t row_size(const mtl_tensor *t)
{
    return t->ndim >= 1 ? mtl_tensor_count_range(t, 1, t->ndim) : -1;
}

static int rows(const mtl_tensor *t)
{
    return t->ndim >= 1 ? t->shape[0] : -1;
}

/* A fresh array of n elements of `size` bytes in place of old (contents not kept); NULL if out of
 * memory. */
static void *regrow(void *old, int64_t n, size_t size)
{
    free(old);
    return malloc((size_t)(n > 0 ? n : 1) * size);
}

static mtl_status detout_reshape(mtl_layer *l, mtl_error *err)
{
    detout_priv *d = l->priv;
    const mtl_tensor *rois = l->bottoms[0], *prob = l->bottoms[1], *pred = l->bottoms[2], *info = l->bottoms[3];
    char s0[128], s1[128];
    if (row_size(rois) != 5)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "rois (bottom 0) are %s; expected (R, 5) rows "
                              "[batch_index, x1, y1, x2, y2]", mtl_tensor_shape_str(rois, s0, sizeof(s0)));
    const int r = rois->shape[0];
    if (rows(prob) != r)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "cls_prob (bottom 1, %s) must have one row per RoI (rois: %s)",
                              mtl_tensor_shape_str(prob, s1, sizeof(s1)), mtl_tensor_shape_str(rois, s0, sizeof(s0)));
    if (row_size(prob) != d->num_classes)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "cls_prob (bottom 1, %s) has %lld columns but num_classes is %d (classes including "
                              "the background)", mtl_tensor_shape_str(prob, s1, sizeof(s1)),
                              (long long)row_size(prob), d->num_classes);
    if (rows(pred) != r)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bbox_pred (bottom 2, %s) must have one row per RoI (rois: %s)",
                              mtl_tensor_shape_str(pred, s1, sizeof(s1)), mtl_tensor_shape_str(rois, s0, sizeof(s0)));
    if (row_size(pred) != 4 && row_size(pred) != 4 * (int64_t)d->num_classes)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "bbox_pred (bottom 2, %s) has %lld columns; expected 4 * num_classes = %d "
                              "(class-specific deltas) or 4 (class-agnostic)",
                              mtl_tensor_shape_str(pred, s1, sizeof(s1)), (long long)row_size(pred),
                              4 * d->num_classes);
    if (row_size(info) != 3)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "im_info (bottom 3) is %s; expected (N, 3) rows "
                              "[height, width, scale]", mtl_tensor_shape_str(info, s1, sizeof(s1)));
    d->class_specific = row_size(pred) != 4;

    /* Every RoI may give one candidate per foreground class. */
    int64_t cands = (int64_t)r * (d->num_classes - 1);
    if (r > d->cap_rois) {
        d->order = regrow(d->order, r, sizeof(int));
        d->keep = regrow(d->keep, r, sizeof(int));
        d->scores = regrow(d->scores, r, sizeof(float));
        d->boxes = regrow(d->boxes, 4 * (int64_t)r, sizeof(float));
        if (!d->order || !d->keep || !d->scores || !d->boxes) {
            d->cap_rois = 0; /* some arrays are gone: grow them all again next time */
            return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %d RoIs", r);
        }
        d->cap_rois = r;
    }
    if (cands > d->cap_cands) {
        d->cands = regrow(d->cands, 6 * cands, sizeof(float));
        d->cand_scores = regrow(d->cand_scores, cands, sizeof(float));
        d->cand_order = regrow(d->cand_order, cands, sizeof(int));
        d->out = regrow(d->out, 7 * cands, sizeof(float));
        if (!d->cands || !d->cand_scores || !d->cand_order || !d->out) {
            d->cap_cands = 0;
            return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %lld candidate detections",
                                  (long long)cands);
        }
        d->cap_cands = cands;
    }
    /* The detection count is known only after forward, which reshapes the top again. */
    int shape[2] = {0, 7};
    return mtl_tensor_reshape(l->tops[0], 2, shape, err);
}

/* Checks the RoIs' batch indices and the image sizes before any work. */
static mtl_status detout_check_inputs(mtl_layer *l, mtl_error *err)
{
    const mtl_tensor *rois = l->bottoms[0], *info = l->bottoms[3];
    const int n_images = info->shape[0];
    for (int i = 0; i < n_images; i++) {
        float h = info->data[3 * i], w = info->data[3 * i + 1];
        if (!(h > 0 && w > 0 && isfinite(h) && isfinite(w)))
            return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "im_info row %d gives image height %g and width %g; both "
                                  "must be positive", i, (double)h, (double)w);
    }
    for (int i = 0; i < rois->shape[0]; i++) {
        float b = rois->data[5 * i];
        if (!(b >= 0 && b < (float)n_images && b == floorf(b)))
            return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "RoI %d has batch index %g, but im_info (bottom 3) "
                                  "describes %d image%s (indices 0..%d)", i, (double)b, n_images,
                                  n_images == 1 ? "" : "s", n_images - 1);
    }
    return MTL_OK;
}

/* Detections of class c in image `image` after the score threshold and NMS, appended to the
 * image's candidates; returns the new candidate count. */
static int64_t detout_class(mtl_layer *l, int image, int c, int64_t n_cands)
{
    detout_priv *d = l->priv;
    const mtl_tensor *rois = l->bottoms[0];
    const float *prob = l->bottoms[1]->data, *pred = l->bottoms[2]->data, *info = l->bottoms[3]->data;
    const int columns = d->num_classes, pred_columns = d->class_specific ? 4 * d->num_classes : 4;
    const float height = info[3 * image], width = info[3 * image + 1];
    int n = 0;
    for (int i = 0; i < rois->shape[0]; i++) {
        const float *roi = rois->data + 5 * (int64_t)i;
        float score = prob[(int64_t)i * columns + c];
        if ((int)roi[0] != image || !(score > d->score_threshold))
            continue;
        const float *delta = pred + (int64_t)i * pred_columns + (d->class_specific ? 4 * c : 0);
        float *box = d->boxes + 4 * (int64_t)n;
        mtl_box_decode(roi + 1, delta, d->means, d->stds, box);
        mtl_box_clip(box, width, height);
        d->scores[n] = score;
        n++;
    }
    mtl_box_sort_by_score(d->scores, n, d->order);
    /* No class can contribute more than max_per_image, and NMS keeps a prefix of its own result
     * when stopped early, so the cap can apply here already. */
    int kept = mtl_box_nms(d->boxes, 4, d->order, n, d->nms_threshold, d->max_per_image, d->keep);
    for (int k = 0; k < kept; k++) {
        float *cand = d->cands + 6 * n_cands;
        memcpy(cand, d->boxes + 4 * (int64_t)d->keep[k], 4 * sizeof(float));
        cand[4] = d->scores[d->keep[k]];
        cand[5] = (float)c;
        d->cand_scores[n_cands] = cand[4];
        n_cands++;
    }
    return n_cands;
}

static mtl_status detout_forward(mtl_layer *l, mtl_error *err)
{
    detout_priv *d = l->priv;
    MTL_TRY(detout_check_inputs(l, err));
    const int n_images = l->bottoms[3]->shape[0];
    int64_t n_out = 0;
    for (int image = 0; image < n_images; image++) {
        int64_t n_cands = 0;
        for (int c = 1; c < d->num_classes; c++)
            n_cands = detout_class(l, image, c, n_cands);
        /* Ties across classes go to the lower class, then to the lower RoI (candidate order). */
        mtl_box_sort_by_score(d->cand_scores, (int)n_cands, d->cand_order);
        int64_t take = d->max_per_image > 0 && n_cands > d->max_per_image ? d->max_per_image : n_cands;
        for (int64_t k = 0; k < take; k++) {
            const float *cand = d->cands + 6 * (int64_t)d->cand_order[k];
            float *row = d->out + 7 * n_out++;
            row[0] = (float)image;
            memcpy(row + 1, cand, 6 * sizeof(float));
        }
    }
    if (n_out > (1 << 30))
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "%lld detections are too many for one blob", (long long)n_out);
    int shape[2] = {(int)n_out, 7};
    MTL_TRY(mtl_tensor_reshape(l->tops[0], 2, shape, err));
    if (n_out > 0)
        memcpy(l->tops[0]->data, d->out, (size_t)(7 * n_out) * sizeof(float));
    return MTL_OK;
}

const mtl_layer_ops mtl_layer_detection_output = {
    .type = "DetectionOutput",
    .min_bottoms = 4,
    .max_bottoms = 4,
    .min_tops = 1,
    .max_tops = 1,
    .no_backward = 1,
    .setup = detout_setup,
    .reshape = detout_reshape,
    .forward = detout_forward,
    .backward = NULL,
    .release = detout_release,
};
