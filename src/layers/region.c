/* The region layers of Faster R-CNN, as py-faster-rcnn defines them: AnchorTarget (labels and
 * regression targets of the RPN's anchors), Proposal (decoded, clipped, suppressed RPN boxes) and
 * ProposalTarget (sampled, labelled RoIs and class-specific targets for the detection head). They
 * produce targets and boxes, not functions of their inputs to learn through: no backward. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "detection/boxes.h"
#include "layers/box_normalization.h"
#include "layers/layers.h"

#define REGION_MAX_ANCHOR_SHAPES 16 /* ratios or scales: more is a typo, not a design */
#define REGION_MAX_IMAGES (1 << 24)  /* batch indices are floats: whole numbers are exact below 2^24 */

/* Scratch that only grows (reshape runs before every forward). */
typedef struct buffer {
    void *data;
    size_t capacity; /* bytes */
} buffer;

static mtl_status buffer_reserve(const mtl_layer *l, buffer *b, int64_t n, size_t elem, mtl_error *err)
{
    size_t bytes = (size_t)(n > 0 ? n : 1) * elem;
    if (bytes <= b->capacity)
        return MTL_OK;
    void *p = malloc(bytes);
    if (!p)
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %lld scratch values", (long long)n);
    free(b->data);
    b->data = p;
    b->capacity = bytes;
    return MTL_OK;
}

/* Keeps k of the n values of idx, chosen uniformly without replacement (a partial Fisher-Yates
 * shuffle moves them to idx[0..k)). */
static void sample_without_replacement(mtl_rng *rng, int *idx, int n, int k)
{
    for (int i = 0; i < k && i < n - 1; i++) {
        int j = i + (int)mtl_rng_below(rng, (uint32_t)(n - i));
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

/* A value that must be a whole number in [0, limit): batch indices and classes stored as floats. */
static int is_index(float v, int limit) { return v >= 0.0f && v < (float)limit && v == floorf(v); }

/* ---- anchors shared by AnchorTarget and Proposal ----------------------------------------------
 * feat_stride base_size scales ratios as py-faster-rcnn's generate_anchors: A = ratios x scales
 * boxes per cell (ratios outer, scales inner), shifted to every cell's centre. */

typedef struct anchor_set {
    int stride;
    float base_size;
    int n_ratios, n_scales, count; /* count = A */
    float ratios[REGION_MAX_ANCHOR_SHAPES], scales[REGION_MAX_ANCHOR_SHAPES];
    float cell[REGION_MAX_ANCHOR_SHAPES * REGION_MAX_ANCHOR_SHAPES * 4]; /* A x 4, centred at (0, 0) */
    int height, width; /* the map the boxes below were made for */
    buffer boxes;      /* A x height x width x 4 floats: anchor a of cell (y, x) at (a * height + y) * width + x */
} anchor_set;

static mtl_status read_positive_floats(mtl_layer *l, mtl_cfg_node *p, const char *name, const float *defaults,
                                       int n_defaults, float *out, int *n, mtl_error *err)
{
    int given = mtl_cfg_count(p, name);
    if (given > REGION_MAX_ANCHOR_SHAPES)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%d %s given; at most %d are supported", given, name,
                              REGION_MAX_ANCHOR_SHAPES);
    *n = given ? given : n_defaults;
    for (int i = 0; i < *n; i++) {
        double v = defaults[i < n_defaults ? i : 0];
        if (given)
            MTL_TRY(mtl_cfg_float_at(p, name, i, &v, err));
        if (!(v > 0.0 && isfinite(v)))
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%s must be positive and finite; value %d is %g", name, i, v);
        out[i] = (float)v;
    }
    return MTL_OK;
}

static mtl_status anchor_set_read(mtl_layer *l, mtl_cfg_node *p, anchor_set *s, mtl_error *err)
{
    static const float default_scales[] = {8, 16, 32}, default_ratios[] = {0.5f, 1, 2};
    int64_t stride;
    double base;
    MTL_TRY(mtl_cfg_int_range(p, "feat_stride", 16, 1, 1 << 16, &stride, err));
    MTL_TRY(mtl_cfg_float(p, "base_size", (double)stride, &base, err));
    if (!(base > 0.0 && isfinite(base)))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "base_size must be positive and finite, got %g", base);
    MTL_TRY(read_positive_floats(l, p, "scales", default_scales, 3, s->scales, &s->n_scales, err));
    MTL_TRY(read_positive_floats(l, p, "ratios", default_ratios, 3, s->ratios, &s->n_ratios, err));
    s->stride = (int)stride;
    s->base_size = (float)base;
    s->count = s->n_ratios * s->n_scales;
    mtl_box_anchors(s->base_size, s->ratios, s->n_ratios, s->scales, s->n_scales, s->cell);
    return MTL_OK;
}

/* Checks that bottom `index` is (N, per_anchor * A, H, W) like the score map of bottom 0. */
static mtl_status anchor_set_check_map(const mtl_layer *l, const anchor_set *s, int index, int per_anchor,
                                       const char *what, mtl_error *err)
{
    const mtl_tensor *t = l->bottoms[index], *ref = l->bottoms[0];
    char buf[128];
    if (t->ndim != 4)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "%s (bottom %d, %s) must be N x %dA x H x W", what, index,
                              mtl_tensor_shape_str(t, buf, sizeof(buf)), per_anchor);
    if (t->shape[1] != per_anchor * s->count)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "%s (bottom %d, %s) has %d channels; %d x A = %d expected for A = %d ratios x %d "
                              "scales = %d anchors per cell",
                              what, index, mtl_tensor_shape_str(t, buf, sizeof(buf)), t->shape[1], per_anchor,
                              per_anchor * s->count, s->n_ratios, s->n_scales, s->count);
    if (index != 0 && (t->shape[0] != ref->shape[0] || t->shape[2] != ref->shape[2] || t->shape[3] != ref->shape[3])) {
        char rbuf[128];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "%s (bottom %d, %s) must match bottom 0 (%s) in N, H and W", what,
                              index, mtl_tensor_shape_str(t, buf, sizeof(buf)),
                              mtl_tensor_shape_str(ref, rbuf, sizeof(rbuf)));
    }
    return MTL_OK;
}

/* Makes the anchor boxes of an H x W map (only when the map size changed). */
static mtl_status anchor_set_place(const mtl_layer *l, anchor_set *s, int height, int width, mtl_error *err)
{
    if (s->boxes.data && s->height == height && s->width == width)
        return MTL_OK;
    MTL_TRY(buffer_reserve(l, &s->boxes, (int64_t)s->count * height * width * 4, sizeof(float), err));
    float *box = s->boxes.data;
    for (int a = 0; a < s->count; a++)
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++, box += 4)
                mtl_box_anchor_at(s->cell, a, y, x, (float)s->stride, box);
    s->height = height;
    s->width = width;
    return MTL_OK;
}

/* Checks a (rows, cols) bottom; rows may be 0. */
static mtl_status check_table(const mtl_layer *l, int index, int cols, const char *what, mtl_error *err)
{
    const mtl_tensor *t = l->bottoms[index];
    if (t->ndim != 2 || t->shape[1] != cols) {
        char buf[128];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "%s (bottom %d, %s) must be a table of rows of %d values", what,
                              index, mtl_tensor_shape_str(t, buf, sizeof(buf)), cols);
    }
    return MTL_OK;
}

/* im_info: (N, 3) rows [height, width, scale] with positive sizes. */
static mtl_status check_im_info(const mtl_layer *l, int index, int n_images, int check_values, mtl_error *err)
{
    const mtl_tensor *t = l->bottoms[index];
    if (t->ndim != 2 || t->shape[0] != n_images || t->shape[1] != 3) {
        char buf[128];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "im_info (bottom %d, %s) must be %d x 3: [height, width, scale] "
                              "per image", index, mtl_tensor_shape_str(t, buf, sizeof(buf)), n_images);
    }
    for (int n = 0; check_values && n < n_images; n++) {
        const float *r = t->data + 3 * n;
        if (!(r[0] > 0.0f && r[1] > 0.0f && isfinite(r[0]) && isfinite(r[1]) && r[2] > 0.0f && isfinite(r[2])))
            return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT,
                                  "im_info row %d is [%g, %g, %g]; height, width and scale must be positive", n,
                                  r[0], r[1], r[2]);
    }
    return MTL_OK;
}

/* gt_boxes rows [batch_index, x1, y1, x2, y2, class]: batch indices whole numbers below n_images
 * (n_images 0: any) and, when num_classes > 0, classes in 1 .. num_classes - 1. */
static mtl_status check_gt_values(const mtl_layer *l, int index, int n_images, int num_classes, mtl_error *err)
{
    const mtl_tensor *t = l->bottoms[index];
    for (int g = 0; g < t->shape[0]; g++) {
        const float *r = t->data + 6 * g;
        if (!is_index(r[0], n_images > 0 ? n_images : REGION_MAX_IMAGES))
            return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT, "gt_boxes row %d has batch index %g; a whole number in "
                                  "[0, %d) expected", g, r[0], n_images > 0 ? n_images : REGION_MAX_IMAGES);
        if (num_classes > 0 && !(is_index(r[5], num_classes) && r[5] >= 1.0f))
            return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT,
                                  "gt_boxes row %d has class %g; classes must be 1 .. %d (0 is background; "
                                  "num_classes %d counts it)", g, r[5], num_classes - 1, num_classes);
    }
    return MTL_OK;
}

/* ---- AnchorTarget ------------------------------------------------------------------------------
 * Bottoms: rpn_cls_score (N, 2A, H, W) (its shape only), gt_boxes (G, 6), im_info (N, 3), and
 * optionally the image blob, unread (py-faster-rcnn's prototxts pass `data` for debugging).
 * Tops: rpn_labels (N, 1, A*H, W) (1 fg, 0 bg, -1 ignored; anchor a of cell (y, x) at
 * [n, 0, a*H + y, x]), then optionally rpn_bbox_targets, rpn_bbox_inside_weights and
 * rpn_bbox_outside_weights, each (N, 4A, H, W) with channel 4a + k.
 * Per image, as py-faster-rcnn's AnchorTargetLayer: anchors crossing the image by more than
 * allowed_border are ignored (border continuous: x1 >= -b, y1 >= -b, x2 <= width + b,
 * y2 <= height + b); the rest are labelled from their IoU with that image's gt boxes, sampled to
 * batch_size with at most fg_fraction foreground, and foreground anchors get the unnormalised
 * encoding of their best gt box. */

typedef struct anchor_target_priv {
    anchor_set anchors;
    int allowed_border; /* < 0: keep every anchor */
    float positive_overlap, negative_overlap, positive_weight;
    double fg_fraction; /* double, so the budget truncates as py-faster-rcnn's int(0.3 * 10) = 3 does */
    int clobber_positives, batch_size;
    buffer labels;  /* per anchor: -2 outside the image, -1 ignored, 0 bg, 1 fg */
    buffer best;    /* per anchor: image gt index of its highest IoU */
    buffer max_iou; /* per anchor */
    buffer idx;     /* per anchor: sampling list */
    buffer gt_rows; /* per gt row: the image's gt rows */
    buffer gt_max;  /* per gt row: its highest IoU with a kept anchor */
} anchor_target_priv;

static mtl_status anchor_target_setup(mtl_layer *l, mtl_error *err)
{
    anchor_target_priv *s = mtl_calloc_or_fail(1, sizeof(*s), err, "AnchorTarget state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    mtl_cfg_node *p;
    int64_t border, batch;
    double pos, neg, frac, weight;
    MTL_TRY(mtl_layer_param_message(l, "anchor_target_param", &p, err));
    MTL_TRY(anchor_set_read(l, p, &s->anchors, err));
    MTL_TRY(mtl_cfg_int_range(p, "allowed_border", 0, INT_MIN / 2, INT_MAX / 2, &border, err));
    MTL_TRY(mtl_cfg_float(p, "positive_overlap", 0.7, &pos, err));
    MTL_TRY(mtl_cfg_float(p, "negative_overlap", 0.3, &neg, err));
    MTL_TRY(mtl_cfg_bool(p, "clobber_positives", 0, &s->clobber_positives, err));
    MTL_TRY(mtl_cfg_int_range(p, "batch_size", 256, 1, INT_MAX / 2, &batch, err));
    MTL_TRY(mtl_cfg_float(p, "fg_fraction", 0.5, &frac, err));
    MTL_TRY(mtl_cfg_float(p, "positive_weight", -1.0, &weight, err));
    /* an IoU of 0 as foreground would ask for the encoding of a box that does not overlap */
    if (!(pos > 0.0 && pos <= 1.0))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "positive_overlap must be in (0, 1], got %g", pos);
    if (!(neg >= 0.0 && neg <= 1.0))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "negative_overlap must be in [0, 1], got %g", neg);
    if (!(frac >= 0.0 && frac <= 1.0))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "fg_fraction must be in [0, 1], got %g", frac);
    if (!(weight <= 1.0)) /* negative: uniform; NaN fails */
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "positive_weight must be in [0, 1] (or negative for uniform weights), got %g", weight);
    s->allowed_border = (int)border;
    s->positive_overlap = (float)pos;
    s->negative_overlap = (float)neg;
    s->batch_size = (int)batch;
    s->fg_fraction = frac;
    s->positive_weight = (float)weight;
    return MTL_OK;
}

static mtl_status anchor_target_reshape(mtl_layer *l, mtl_error *err)
{
    anchor_target_priv *s = l->priv;
    const mtl_tensor *score = l->bottoms[0];
    MTL_TRY(anchor_set_check_map(l, &s->anchors, 0, 2, "rpn_cls_score", err));
    MTL_TRY(check_table(l, 1, 6, "gt_boxes", err));
    int n = score->shape[0], a = s->anchors.count, h = score->shape[2], w = score->shape[3];
    MTL_TRY(check_im_info(l, 2, n, 0, err));
    MTL_TRY(anchor_set_place(l, &s->anchors, h, w, err));
    int64_t per = (int64_t)a * h * w, g = l->bottoms[1]->shape[0];
    MTL_TRY(buffer_reserve(l, &s->labels, per, sizeof(int), err));
    MTL_TRY(buffer_reserve(l, &s->best, per, sizeof(int), err));
    MTL_TRY(buffer_reserve(l, &s->max_iou, per, sizeof(float), err));
    MTL_TRY(buffer_reserve(l, &s->idx, per, sizeof(int), err));
    MTL_TRY(buffer_reserve(l, &s->gt_rows, g, sizeof(int), err));
    MTL_TRY(buffer_reserve(l, &s->gt_max, g, sizeof(float), err));
    MTL_TRY(mtl_tensor_reshape4(l->tops[0], n, 1, a * h, w, err));
    for (int t = 1; t < l->n_tops; t++)
        MTL_TRY(mtl_tensor_reshape4(l->tops[t], n, 4 * a, h, w, err));
    return MTL_OK;
}

/* Labels the kept anchors of image n from their IoU with its g gt boxes (py-faster-rcnn's order:
 * background below negative_overlap, then each gt's best anchors and anchors at or above
 * positive_overlap as foreground; clobber_positives applies background last). */
static void anchor_target_label(anchor_target_priv *s, const float *gt, int g, int64_t per)
{
    const float *boxes = s->anchors.boxes.data;
    int *labels = s->labels.data, *best = s->best.data, *gt_rows = s->gt_rows.data;
    float *max_iou = s->max_iou.data, *gt_max = s->gt_max.data;
    for (int j = 0; j < g; j++)
        gt_max[j] = 0.0f;
    for (int64_t i = 0; i < per; i++) {
        max_iou[i] = 0.0f;
        best[i] = 0;
        if (labels[i] == -2)
            continue;
        for (int j = 0; j < g; j++) {
            float iou = mtl_box_iou(boxes + 4 * i, gt + 6 * gt_rows[j] + 1);
            if (iou > max_iou[i]) {
                max_iou[i] = iou;
                best[i] = j;
            }
            if (iou > gt_max[j])
                gt_max[j] = iou;
        }
    }
    if (g == 0) { /* an image without objects: every anchor on it is background */
        for (int64_t i = 0; i < per; i++)
            if (labels[i] == -1)
                labels[i] = 0;
        return;
    }
    if (!s->clobber_positives)
        for (int64_t i = 0; i < per; i++)
            if (labels[i] == -1 && max_iou[i] < s->negative_overlap)
                labels[i] = 0;
    /* each gt's best anchors (ties included) are foreground even below positive_overlap, so every
     * object has an anchor; a gt that touches no anchor has none (py-faster-rcnn would mark every
     * anchor with IoU 0 then) */
    for (int64_t i = 0; i < per; i++) {
        if (labels[i] == -2)
            continue;
        for (int j = 0; j < g; j++)
            if (gt_max[j] > 0.0f && mtl_box_iou(boxes + 4 * i, gt + 6 * gt_rows[j] + 1) == gt_max[j]) {
                labels[i] = 1;
                break;
            }
        if (max_iou[i] >= s->positive_overlap)
            labels[i] = 1;
    }
    if (s->clobber_positives)
        for (int64_t i = 0; i < per; i++)
            if (labels[i] != -2 && max_iou[i] < s->negative_overlap)
                labels[i] = 0;
}

/* Keeps at most `budget` anchors labelled `label`, chosen at random; the rest become ignored.
 * Returns how many keep the label. */
static int anchor_target_subsample(anchor_target_priv *s, mtl_rng *rng, int label, int budget, int64_t per)
{
    int *labels = s->labels.data, *idx = s->idx.data, n = 0;
    for (int64_t i = 0; i < per; i++)
        if (labels[i] == label)
            idx[n++] = (int)i;
    if (n <= budget)
        return n;
    sample_without_replacement(rng, idx, n, budget);
    for (int k = budget; k < n; k++)
        labels[idx[k]] = -1;
    return budget;
}

static mtl_status anchor_target_forward(mtl_layer *l, mtl_error *err)
{
    anchor_target_priv *s = l->priv;
    const mtl_tensor *gt_t = l->bottoms[1];
    const float *gt = gt_t->data, *info = l->bottoms[2]->data, *boxes = s->anchors.boxes.data;
    const int n_images = l->bottoms[0]->shape[0], a_count = s->anchors.count;
    const int64_t hw = (int64_t)s->anchors.height * s->anchors.width, per = a_count * hw;
    int *labels = s->labels.data, *best = s->best.data, *gt_rows = s->gt_rows.data;
    MTL_TRY(check_im_info(l, 2, n_images, 1, err));
    MTL_TRY(check_gt_values(l, 1, n_images, 0, err));
    for (int t = 1; t < l->n_tops; t++)
        mtl_tensor_zero_data(l->tops[t]);
    for (int n = 0; n < n_images; n++) {
        const float height = info[3 * n], width = info[3 * n + 1], b = (float)s->allowed_border;
        int g = 0;
        for (int j = 0; j < gt_t->shape[0]; j++)
            if ((int)gt[6 * j] == n)
                gt_rows[g++] = j;
        for (int64_t i = 0; i < per; i++) {
            const float *a = boxes + 4 * i;
            int inside = s->allowed_border < 0 ||
                         (a[0] >= -b && a[1] >= -b && a[2] <= width + b && a[3] <= height + b);
            labels[i] = inside ? -1 : -2;
        }
        anchor_target_label(s, gt, g, per);
        int fg = anchor_target_subsample(s, l->rng, 1, (int)(s->fg_fraction * s->batch_size), per);
        int bg = anchor_target_subsample(s, l->rng, 0, s->batch_size - fg, per);
        float w_fg, w_bg;
        if (s->positive_weight < 0.0f) {
            w_fg = w_bg = fg + bg > 0 ? 1.0f / (float)(fg + bg) : 0.0f;
        } else {
            w_fg = fg > 0 ? s->positive_weight / (float)fg : 0.0f;
            w_bg = bg > 0 ? (1.0f - s->positive_weight) / (float)bg : 0.0f;
        }
        float *out_labels = l->tops[0]->data + n * per;
        for (int64_t i = 0; i < per; i++) {
            int label = labels[i] < -1 ? -1 : labels[i];
            out_labels[i] = (float)label;
            if (label < 0)
                continue;
            /* anchor i = a * hw + cell; its coordinate k lives at channel 4a + k */
            int64_t a = i / hw, cell = i - a * hw, base = (int64_t)n * 4 * per + 4 * a * hw + cell;
            if (l->n_tops > 1 && label == 1) {
                float delta[4];
                mtl_box_encode(boxes + 4 * i, gt + 6 * gt_rows[best[i]] + 1, NULL, NULL, delta);
                for (int k = 0; k < 4; k++)
                    l->tops[1]->data[base + k * hw] = delta[k];
            }
            for (int k = 0; k < 4; k++) {
                if (l->n_tops > 2)
                    l->tops[2]->data[base + k * hw] = label == 1 ? 1.0f : 0.0f;
                if (l->n_tops > 3)
                    l->tops[3]->data[base + k * hw] = label == 1 ? w_fg : w_bg;
            }
        }
    }
    return MTL_OK;
}

static void anchor_target_release(mtl_layer *l)
{
    anchor_target_priv *s = l->priv;
    if (!s)
        return;
    free(s->anchors.boxes.data);
    free(s->labels.data);
    free(s->best.data);
    free(s->max_iou.data);
    free(s->idx.data);
    free(s->gt_rows.data);
    free(s->gt_max.data);
    free(s);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_anchor_target = {
    .type = "AnchorTarget",
    .min_bottoms = 3,
    .max_bottoms = 4,
    .min_tops = 1,
    .max_tops = 4,
    .no_backward = 1,
    .setup = anchor_target_setup,
    .reshape = anchor_target_reshape,
    .forward = anchor_target_forward,
    .release = anchor_target_release,
};

/* ---- Proposal ----------------------------------------------------------------------------------
 * Bottoms: rpn_cls_prob (N, 2A, H, W) (foreground probabilities in channels A .. 2A-1),
 * rpn_bbox_pred (N, 4A, H, W), im_info (N, 3). Tops: rois (R, 5) [batch_index, x1, y1, x2, y2]
 * and optionally their scores (R, 1), shaped in forward. Per image, as py-faster-rcnn's
 * ProposalLayer: decode every anchor's deltas, clip to the image, drop boxes narrower or shorter
 * than min_size * scale, take the pre_nms_top_n best, NMS, keep post_nms_top_n (<= 0: no limit).
 * Anchors are enumerated cell by cell (y, x, then a), which decides ties in score. An image
 * left with no box gets one covering the whole image (score 0), so every image has a RoI. */

typedef struct proposal_settings {
    int pre_nms_top_n, post_nms_top_n;
    float nms_thresh, min_size;
} proposal_settings;

typedef struct proposal_priv {
    anchor_set anchors;
    proposal_settings settings[2]; /* by phase */
    int rows;                      /* R of the last forward (tops keep it until the next) */
    buffer boxes, scores, order, keep; /* per anchor of one image */
    buffer out;                        /* per output row: 5 values and a score */
} proposal_priv;

static mtl_status proposal_read_settings(mtl_layer *l, mtl_cfg_node *p, const char *name,
                                         const proposal_settings *def, proposal_settings *out, mtl_error *err)
{
    mtl_cfg_node *m;
    int64_t pre, post;
    double thresh, min_size;
    MTL_TRY(mtl_cfg_message(p, name, &m, err));
    MTL_TRY(mtl_cfg_int_range(m, "pre_nms_top_n", def->pre_nms_top_n, INT_MIN, INT_MAX, &pre, err));
    MTL_TRY(mtl_cfg_int_range(m, "post_nms_top_n", def->post_nms_top_n, INT_MIN, INT_MAX, &post, err));
    MTL_TRY(mtl_cfg_float(m, "nms_thresh", def->nms_thresh, &thresh, err));
    MTL_TRY(mtl_cfg_float(m, "min_size", def->min_size, &min_size, err));
    if (!(thresh >= 0.0 && thresh <= 1.0))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%s nms_thresh must be in [0, 1], got %g", name, thresh);
    if (!(min_size >= 0.0 && isfinite(min_size)))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%s min_size must be >= 0, got %g", name, min_size);
    out->pre_nms_top_n = (int)pre;
    out->post_nms_top_n = (int)post;
    out->nms_thresh = (float)thresh;
    out->min_size = (float)min_size;
    return MTL_OK;
}

static mtl_status proposal_setup(mtl_layer *l, mtl_error *err)
{
    static const proposal_settings train = {12000, 2000, 0.7f, 16.0f}, test = {6000, 300, 0.7f, 16.0f};
    proposal_priv *s = mtl_calloc_or_fail(1, sizeof(*s), err, "Proposal state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "proposal_param", &p, err));
    MTL_TRY(anchor_set_read(l, p, &s->anchors, err));
    MTL_TRY(proposal_read_settings(l, p, "train", &train, &s->settings[MTL_PHASE_TRAIN], err));
    MTL_TRY(proposal_read_settings(l, p, "test", &test, &s->settings[MTL_PHASE_TEST], err));
    s->rows = -1;
    return MTL_OK;
}

static mtl_status proposal_reshape_tops(mtl_layer *l, int rows, mtl_error *err)
{
    MTL_TRY(mtl_tensor_reshape4(l->tops[0], rows, 5, -1, -1, err));
    if (l->n_tops > 1)
        MTL_TRY(mtl_tensor_reshape4(l->tops[1], rows, 1, -1, -1, err));
    return MTL_OK;
}

static mtl_status proposal_reshape(mtl_layer *l, mtl_error *err)
{
    proposal_priv *s = l->priv;
    const mtl_tensor *prob = l->bottoms[0];
    MTL_TRY(anchor_set_check_map(l, &s->anchors, 0, 2, "rpn_cls_prob", err));
    MTL_TRY(anchor_set_check_map(l, &s->anchors, 1, 4, "rpn_bbox_pred", err));
    int n = prob->shape[0], h = prob->shape[2], w = prob->shape[3];
    MTL_TRY(check_im_info(l, 2, n, 0, err));
    MTL_TRY(anchor_set_place(l, &s->anchors, h, w, err));
    const proposal_settings *c = &s->settings[l->phase == MTL_PHASE_TEST];
    int64_t per = (int64_t)s->anchors.count * h * w;
    int64_t bound = c->post_nms_top_n > 0 && c->post_nms_top_n < per ? c->post_nms_top_n : per;
    MTL_TRY(buffer_reserve(l, &s->boxes, 4 * per, sizeof(float), err));
    MTL_TRY(buffer_reserve(l, &s->scores, per, sizeof(float), err));
    MTL_TRY(buffer_reserve(l, &s->order, per, sizeof(int), err));
    MTL_TRY(buffer_reserve(l, &s->keep, per, sizeof(int), err));
    MTL_TRY(buffer_reserve(l, &s->out, 6 * n * (bound > 1 ? bound : 1), sizeof(float), err));
    /* until the first forward, one RoI per image stands in for the count forward will find */
    return proposal_reshape_tops(l, s->rows >= 0 ? s->rows : n, err);
}

/* The proposals of image n appended to out (6 floats a row); returns how many. */
static int proposal_image(mtl_layer *l, int n, float *out)
{
    proposal_priv *s = l->priv;
    const proposal_settings *c = &s->settings[l->phase == MTL_PHASE_TEST];
    const int a_count = s->anchors.count, h = s->anchors.height, w = s->anchors.width;
    const int64_t hw = (int64_t)h * w;
    const float *prob = l->bottoms[0]->data + (int64_t)n * 2 * a_count * hw;
    const float *pred = l->bottoms[1]->data + (int64_t)n * 4 * a_count * hw;
    const float *info = l->bottoms[2]->data + 3 * n, *anchors = s->anchors.boxes.data;
    const float height = info[0], width = info[1], min_size = c->min_size * info[2];
    float *boxes = s->boxes.data, *scores = s->scores.data;
    int *order = s->order.data, *keep = s->keep.data;
    int m = 0;
    for (int64_t cell = 0; cell < hw; cell++)
        for (int a = 0; a < a_count; a++) {
            float delta[4], *box = boxes + 4 * m;
            for (int k = 0; k < 4; k++)
                delta[k] = pred[(4 * a + k) * hw + cell];
            mtl_box_decode(anchors + 4 * (a * hw + cell), delta, NULL, NULL, box);
            mtl_box_clip(box, width, height);
            if (box[2] - box[0] < min_size || box[3] - box[1] < min_size)
                continue;
            scores[m++] = prob[(a_count + a) * hw + cell];
        }
    mtl_box_sort_by_score(scores, m, order);
    int candidates = c->pre_nms_top_n > 0 && c->pre_nms_top_n < m ? c->pre_nms_top_n : m;
    int kept = mtl_box_nms(boxes, 4, order, candidates, c->nms_thresh, c->post_nms_top_n, keep);
    for (int r = 0; r < kept; r++, out += 6) {
        out[0] = (float)n;
        memcpy(out + 1, boxes + 4 * keep[r], 4 * sizeof(float));
        out[5] = scores[keep[r]];
    }
    if (kept > 0)
        return kept;
    const float whole[6] = {(float)n, 0.0f, 0.0f, width, height, 0.0f};
    memcpy(out, whole, sizeof(whole));
    return 1;
}

static mtl_status proposal_forward(mtl_layer *l, mtl_error *err)
{
    proposal_priv *s = l->priv;
    const int n_images = l->bottoms[0]->shape[0];
    MTL_TRY(check_im_info(l, 2, n_images, 1, err));
    float *out = s->out.data;
    int rows = 0;
    for (int n = 0; n < n_images; n++)
        rows += proposal_image(l, n, out + 6 * rows);
    MTL_TRY(proposal_reshape_tops(l, rows, err));
    s->rows = rows;
    for (int r = 0; r < rows; r++) {
        memcpy(l->tops[0]->data + 5 * r, out + 6 * r, 5 * sizeof(float));
        if (l->n_tops > 1)
            l->tops[1]->data[r] = out[6 * r + 5];
    }
    return MTL_OK;
}

static void proposal_release(mtl_layer *l)
{
    proposal_priv *s = l->priv;
    if (!s)
        return;
    free(s->anchors.boxes.data);
    free(s->boxes.data);
    free(s->scores.data);
    free(s->order.data);
    free(s->keep.data);
    free(s->out.data);
    free(s);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_proposal = {
    .type = "Proposal",
    .min_bottoms = 3,
    .max_bottoms = 3,
    .min_tops = 1,
    .max_tops = 2,
    .no_backward = 1,
    .setup = proposal_setup,
    .reshape = proposal_reshape,
    .forward = proposal_forward,
    .release = proposal_release,
};

/* ---- ProposalTarget ----------------------------------------------------------------------------
 * Bottoms: rois (R, 5), gt_boxes (G, 6). Tops, shaped in forward: rois (S, 5), labels (S),
 * then optionally bbox_targets, bbox_inside_weights and bbox_outside_weights, each (S, 4K) for
 * K = num_classes (background included). Per image (the batch indices present in rois or
 * gt_boxes, in increasing order), as py-faster-rcnn's _sample_rois: the candidates are the
 * image's rois plus (use_gt) its gt boxes; foreground = max IoU >= fg_threshold, at most
 * round(fg_fraction * batch_size) of them at random; background = max IoU in [bg_threshold_lo,
 * bg_threshold_hi), filling up to batch_size from those there are (no replacement, so S may be
 * less than images x batch_size). Rows: each image's foreground, then its background. A
 * foreground row has the class of its best gt box and, in columns 4c .. 4c+3, the encoding of that
 * box normalised as (encode - mean) / std, with inside and outside weights 1 there. */

typedef struct roi_key {
    int image, row; /* row < R: a roi; R + j: gt row j */
} roi_key;

typedef struct roi_sample {
    int row; /* as roi_key.row */
    int gt;  /* gt row of a foreground sample, -1 for background */
} roi_sample;

typedef struct proposal_target_priv {
    int num_classes, batch_size, use_gt;
    double fg_fraction; /* double: the budget rounds as numpy's round(0.25 * 128) does */
    float fg_threshold, bg_hi, bg_lo;
    float means[4], stds[4];
    int rows; /* S of the last forward */
    buffer keys, best, idx, samples, max_iou; /* per candidate (R + G) */
} proposal_target_priv;

/* One repeated float field of exactly 4 values, or none for the defaults. */
static mtl_status read_four(mtl_layer *l, mtl_cfg_node *p, const char *name, const float *defaults, int positive,
                            float *out, mtl_error *err)
{
    int n = mtl_cfg_count(p, name);
    if (n != 0 && n != 4)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "%s has %d values; give 4 (one per delta dx dy dw dh) or none for the defaults", name, n);
    for (int k = 0; k < 4; k++) {
        double v = defaults[k];
        if (n)
            MTL_TRY(mtl_cfg_float_at(p, name, k, &v, err));
        if (!isfinite(v) || (positive && !(v > 0.0)))
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%s value %d is %g; it must be %s", name, k, v,
                                  positive ? "> 0" : "finite");
        out[k] = (float)v;
    }
    return MTL_OK;
}

mtl_status mtl_layer_read_box_normalization(mtl_layer *l, mtl_cfg_node *p, float *means, float *stds, mtl_error *err)
{
    static const float default_means[4] = {0, 0, 0, 0}, default_stds[4] = {0.1f, 0.1f, 0.2f, 0.2f};
    MTL_TRY(read_four(l, p, "bbox_normalize_means", default_means, 0, means, err));
    return read_four(l, p, "bbox_normalize_stds", default_stds, 1, stds, err);
}

static mtl_status proposal_target_setup(mtl_layer *l, mtl_error *err)
{
    proposal_target_priv *s = mtl_calloc_or_fail(1, sizeof(*s), err, "ProposalTarget state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    s->rows = -1;
    mtl_cfg_node *p;
    int64_t classes, batch;
    double frac, fg, hi, lo;
    MTL_TRY(mtl_layer_param_message(l, "proposal_target_param", &p, err));
    int has_classes = mtl_cfg_count(p, "num_classes") > 0;
    MTL_TRY(mtl_cfg_int(p, "num_classes", 0, &classes, err));
    MTL_TRY(mtl_cfg_int_range(p, "batch_size", 128, 1, INT_MAX / 2, &batch, err));
    MTL_TRY(mtl_cfg_float(p, "fg_fraction", 0.25, &frac, err));
    MTL_TRY(mtl_cfg_float(p, "fg_threshold", 0.5, &fg, err));
    MTL_TRY(mtl_cfg_float(p, "bg_threshold_hi", 0.5, &hi, err));
    MTL_TRY(mtl_cfg_float(p, "bg_threshold_lo", 0.0, &lo, err));
    MTL_TRY(mtl_layer_read_box_normalization(l, p, s->means, s->stds, err));
    MTL_TRY(mtl_cfg_bool(p, "use_gt", 1, &s->use_gt, err));
    if (!has_classes)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "proposal_target_param needs num_classes: the object classes plus background");
    if (classes < 2 || classes > (1 << 20))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "num_classes is %lld; it counts background too, so at least 2 are needed",
                              (long long)classes);
    if (!(frac >= 0.0 && frac <= 1.0))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "fg_fraction must be in [0, 1], got %g", frac);
    /* foreground at IoU 0 would ask for the encoding of a box that does not overlap its gt */
    if (!(fg > 0.0 && fg <= 1.0))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "fg_threshold must be in (0, 1], got %g", fg);
    if (!(lo >= 0.0 && lo <= hi && hi <= 1.0))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "background IoU range [bg_threshold_lo, bg_threshold_hi) = [%g, %g) must lie in [0, 1]",
                              lo, hi);
    s->num_classes = (int)classes;
    s->batch_size = (int)batch;
    s->fg_fraction = frac;
    s->fg_threshold = (float)fg;
    s->bg_hi = (float)hi;
    s->bg_lo = (float)lo;
    return MTL_OK;
}

static mtl_status proposal_target_reshape_tops(mtl_layer *l, int rows, mtl_error *err)
{
    proposal_target_priv *s = l->priv;
    MTL_TRY(mtl_tensor_reshape4(l->tops[0], rows, 5, -1, -1, err));
    MTL_TRY(mtl_tensor_reshape4(l->tops[1], rows, -1, -1, -1, err));
    for (int t = 2; t < l->n_tops; t++)
        MTL_TRY(mtl_tensor_reshape4(l->tops[t], rows, 4 * s->num_classes, -1, -1, err));
    return MTL_OK;
}

static mtl_status proposal_target_reshape(mtl_layer *l, mtl_error *err)
{
    proposal_target_priv *s = l->priv;
    MTL_TRY(check_table(l, 0, 5, "rois", err));
    MTL_TRY(check_table(l, 1, 6, "gt_boxes", err));
    int64_t cand = (int64_t)l->bottoms[0]->shape[0] + l->bottoms[1]->shape[0];
    MTL_TRY(buffer_reserve(l, &s->keys, cand, sizeof(roi_key), err));
    MTL_TRY(buffer_reserve(l, &s->best, cand, sizeof(int), err));
    MTL_TRY(buffer_reserve(l, &s->idx, cand, sizeof(int), err));
    MTL_TRY(buffer_reserve(l, &s->samples, cand, sizeof(roi_sample), err));
    MTL_TRY(buffer_reserve(l, &s->max_iou, cand, sizeof(float), err));
    /* until the first forward, one row stands in for the count forward will sample */
    return proposal_target_reshape_tops(l, s->rows >= 0 ? s->rows : 1, err);
}

static int roi_key_compare(const void *pa, const void *pb)
{
    const roi_key *a = pa, *b = pb;
    if (a->image != b->image)
        return a->image < b->image ? -1 : 1;
    return (a->row > b->row) - (a->row < b->row);
}

/* Samples one image's candidates keys[0..n) (its rois, then its gt rows, which are also its
 * candidates when use_gt) into samples; returns how many it took. */
static int proposal_target_image(mtl_layer *l, const roi_key *keys, int n, roi_sample *samples)
{
    proposal_target_priv *s = l->priv;
    const int r_count = l->bottoms[0]->shape[0];
    const float *rois = l->bottoms[0]->data, *gt = l->bottoms[1]->data;
    int *best = s->best.data, *idx = s->idx.data;
    float *max_iou = s->max_iou.data;
    int first_gt = 0;
    while (first_gt < n && keys[first_gt].row < r_count)
        first_gt++;
    const int candidates = s->use_gt ? n : first_gt;
    for (int i = 0; i < candidates; i++) {
        int row = keys[i].row;
        const float *box = row < r_count ? rois + 5 * row + 1 : gt + 6 * (row - r_count) + 1;
        max_iou[i] = 0.0f;
        best[i] = -1;
        for (int j = first_gt; j < n; j++) {
            int g = keys[j].row - r_count;
            float iou = mtl_box_iou(box, gt + 6 * g + 1);
            if (best[i] < 0 || iou > max_iou[i]) {
                max_iou[i] = iou;
                best[i] = g;
            }
        }
    }
    int fg = 0, bg = 0, taken = 0;
    for (int i = 0; i < candidates; i++)
        if (max_iou[i] >= s->fg_threshold)
            idx[fg++] = i;
    int fg_budget = (int)rint(s->fg_fraction * s->batch_size); /* halves to even, as numpy rounds */
    int fg_take = fg < fg_budget ? fg : fg_budget;
    sample_without_replacement(l->rng, idx, fg, fg_take);
    for (int k = 0; k < fg_take; k++)
        samples[taken++] = (roi_sample){keys[idx[k]].row, best[idx[k]]};
    for (int i = 0; i < candidates; i++)
        if (max_iou[i] < s->bg_hi && max_iou[i] >= s->bg_lo)
            idx[bg++] = i;
    int bg_budget = s->batch_size - fg_take;
    int bg_take = bg < bg_budget ? bg : bg_budget;
    sample_without_replacement(l->rng, idx, bg, bg_take);
    for (int k = 0; k < bg_take; k++)
        samples[taken++] = (roi_sample){keys[idx[k]].row, -1};
    return taken;
}

static mtl_status proposal_target_forward(mtl_layer *l, mtl_error *err)
{
    proposal_target_priv *s = l->priv;
    const mtl_tensor *rois_t = l->bottoms[0], *gt_t = l->bottoms[1];
    const int r_count = rois_t->shape[0], g_count = gt_t->shape[0], cols = 4 * s->num_classes;
    const float *rois = rois_t->data, *gt = gt_t->data;
    roi_key *keys = s->keys.data;
    roi_sample *samples = s->samples.data;
    MTL_TRY(check_gt_values(l, 1, 0, s->num_classes, err));
    for (int r = 0; r < r_count; r++) {
        if (!is_index(rois[5 * r], REGION_MAX_IMAGES))
            return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT,
                                  "rois row %d has batch index %g; a whole number in [0, %d) expected", r, rois[5 * r],
                                  REGION_MAX_IMAGES);
        keys[r] = (roi_key){(int)rois[5 * r], r};
    }
    for (int j = 0; j < g_count; j++)
        keys[r_count + j] = (roi_key){(int)gt[6 * j], r_count + j};
    int n_keys = r_count + g_count, rows = 0;
    if (n_keys > 0)
        qsort(keys, (size_t)n_keys, sizeof(*keys), roi_key_compare);
    for (int start = 0, end; start < n_keys; start = end) {
        for (end = start + 1; end < n_keys && keys[end].image == keys[start].image; end++) {
        }
        rows += proposal_target_image(l, keys + start, end - start, samples + rows);
    }
    MTL_TRY(proposal_target_reshape_tops(l, rows, err));
    s->rows = rows;
    for (int t = 2; t < l->n_tops; t++)
        mtl_tensor_zero_data(l->tops[t]);
    for (int i = 0; i < rows; i++) {
        const roi_sample *m = &samples[i];
        const float *box = m->row < r_count ? rois + 5 * m->row + 1 : gt + 6 * (m->row - r_count) + 1;
        const float image = m->row < r_count ? rois[5 * m->row] : gt[6 * (m->row - r_count)];
        float *out = l->tops[0]->data + 5 * i;
        out[0] = image;
        memcpy(out + 1, box, 4 * sizeof(float));
        if (m->gt < 0) {
            l->tops[1]->data[i] = 0.0f;
            continue;
        }
        const float *g = gt + 6 * m->gt;
        int c = (int)g[5];
        l->tops[1]->data[i] = (float)c;
        float delta[4];
        mtl_box_encode(box, g + 1, s->means, s->stds, delta);
        for (int k = 0; k < 4; k++) {
            int64_t at = (int64_t)i * cols + 4 * c + k;
            if (l->n_tops > 2)
                l->tops[2]->data[at] = delta[k];
            if (l->n_tops > 3)
                l->tops[3]->data[at] = 1.0f;
            if (l->n_tops > 4)
                l->tops[4]->data[at] = 1.0f;
        }
    }
    return MTL_OK;
}

static void proposal_target_release(mtl_layer *l)
{
    proposal_target_priv *s = l->priv;
    if (!s)
        return;
    free(s->keys.data);
    free(s->best.data);
    free(s->idx.data);
    free(s->samples.data);
    free(s->max_iou.data);
    free(s);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_proposal_target = {
    .type = "ProposalTarget",
    .min_bottoms = 2,
    .max_bottoms = 2,
    .min_tops = 2,
    .max_tops = 5,
    .no_backward = 1,
    .setup = proposal_target_setup,
    .reshape = proposal_target_reshape,
    .forward = proposal_target_forward,
    .release = proposal_target_release,
};
