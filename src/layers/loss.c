/* SigmoidCrossEntropyLoss (independent binary targets per value), EuclideanLoss (regression,
 * with mtl's per-coordinate weights for landmark vectors) and SmoothL1Loss (Fast R-CNN's box
 * regression, with inside and outside weights), plus the loss_param reader every loss shares.
 * Targets that are mtl's missing-label marker (NaN) add nothing to a loss or its gradient. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers/labels.h"
#include "layers/layers.h"

static const char *const loss_norm_names[] = {"FULL", "VALID", "BATCH_SIZE", "NONE"};
_Static_assert(sizeof(loss_norm_names) / sizeof(loss_norm_names[0]) == MTL_LOSS_NORM_NONE + 1, "normalization names");

mtl_status mtl_loss_read_param(mtl_layer *l, mtl_loss_norm def, mtl_loss_config *out, mtl_error *err)
{
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "loss_param", &p, err));
    int64_t ignore;
    int normalize, norm;
    out->has_ignore_label = mtl_cfg_count(p, "ignore_label") > 0;
    MTL_TRY(mtl_cfg_int_range(p, "ignore_label", 0, INT_MIN, INT_MAX, &ignore, err));
    out->ignore_label = (int)ignore;
    int has_normalization = mtl_cfg_count(p, "normalization") > 0;
    int has_normalize = mtl_cfg_count(p, "normalize") > 0;
    MTL_TRY(mtl_cfg_enum(p, "normalization", loss_norm_names, MTL_LOSS_NORM_NONE + 1, MTL_LOSS_NORM_VALID, &norm, err));
    MTL_TRY(mtl_cfg_bool(p, "normalize", 1, &normalize, err));
    if (has_normalization)
        out->normalization = (mtl_loss_norm)norm;
    else if (has_normalize)
        out->normalization = normalize ? MTL_LOSS_NORM_VALID : MTL_LOSS_NORM_BATCH_SIZE;
    else
        out->normalization = def;
    return MTL_OK;
}

/* ---- SigmoidCrossEntropyLoss ---------------------------------------------------------------- */

typedef struct sigmoid_ce_priv {
    mtl_loss_config loss;
    double normalizer; /* from the last forward, for backward (as Caffe keeps it) */
} sigmoid_ce_priv;

static mtl_status sigmoid_ce_setup(mtl_layer *l, mtl_error *err)
{
    sigmoid_ce_priv *s = mtl_calloc_or_fail(1, sizeof(*s), err, "SigmoidCrossEntropyLoss state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    /* Caffe kept BATCH_SIZE as this layer's default when it added normalization */
    return mtl_loss_read_param(l, MTL_LOSS_NORM_BATCH_SIZE, &s->loss, err);
}

static mtl_status sigmoid_ce_reshape(mtl_layer *l, mtl_error *err)
{
    MTL_TRY(mtl_loss_check_batch(l, err));
    if (l->bottoms[0]->count != l->bottoms[1]->count) {
        char a[128], b[128];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "logits (bottom 0, %s) and targets (bottom 1, %s) must have the "
                              "same count",
                              mtl_tensor_shape_str(l->bottoms[0], a, sizeof(a)),
                              mtl_tensor_shape_str(l->bottoms[1], b, sizeof(b)));
    }
    return mtl_tensor_reshape(l->tops[0], 0, NULL, err);
}

static int sigmoid_ce_ignored(const sigmoid_ce_priv *s, float t)
{
    return mtl_label_is_ignored(t, s->loss.has_ignore_label, s->loss.ignore_label);
}

/* loss = -sum [t log p + (1 - t) log(1 - p)], p = sigmoid(x), written so exp never overflows:
 * -(x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0]))). */
static mtl_status sigmoid_ce_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    sigmoid_ce_priv *s = l->priv;
    const float *x = l->bottoms[0]->data, *t = l->bottoms[1]->data;
    int64_t count = l->bottoms[0]->count;
    double loss = 0.0;
    int64_t valid = 0;
    for (int64_t i = 0; i < count; i++) {
        if (sigmoid_ce_ignored(s, t[i]))
            continue;
        double xi = x[i], pos = xi >= 0 ? 1.0 : 0.0;
        loss -= xi * (t[i] - pos) - log1p(exp(xi - 2.0 * xi * pos));
        valid++;
    }
    int64_t outer = l->bottoms[0]->shape[0];
    s->normalizer = mtl_loss_normalizer(s->loss.normalization, outer, outer ? count / outer : 0, valid);
    l->tops[0]->data[0] = (float)(loss / s->normalizer);
    return MTL_OK;
}

/* d loss / d x = (sigmoid(x) - t) * weight / normalizer, zero for ignored targets. Targets are
 * treated as constants (Caffe refuses to backpropagate to them): a requested target gradient is
 * written as zeros. */
static void sigmoid_ce_backward(mtl_layer *l)
{
    sigmoid_ce_priv *s = l->priv;
    if (l->propagate_down[1])
        mtl_tensor_zero_grad(l->bottoms[1]);
    if (!l->propagate_down[0])
        return;
    const float *x = l->bottoms[0]->data, *t = l->bottoms[1]->data;
    float *dx = l->bottoms[0]->grad;
    int64_t count = l->bottoms[0]->count;
    float scale = (float)(l->tops[0]->grad[0] / s->normalizer);
    for (int64_t i = 0; i < count; i++) {
        if (sigmoid_ce_ignored(s, t[i])) {
            dx[i] = 0.0f;
            continue;
        }
        float e = expf(-fabsf(x[i]));
        float p = x[i] >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
        dx[i] = (p - t[i]) * scale;
    }
}

static void sigmoid_ce_release(mtl_layer *l)
{
    free(l->priv);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_sigmoid_cross_entropy_loss = {
    .type = "SigmoidCrossEntropyLoss",
    .min_bottoms = 2,
    .max_bottoms = 2,
    .min_tops = 1,
    .max_tops = 1,
    .setup = sigmoid_ce_setup,
    .reshape = sigmoid_ce_reshape,
    .forward = sigmoid_ce_forward,
    .backward = sigmoid_ce_backward,
    .release = sigmoid_ce_release,
};

/* ---- EuclideanLoss -------------------------------------------------------------------------- */

/* loss = sum_i w_i (a_i - b_i)^2 / (2 Z). Caffe's layer has w = 1 and Z = N (the first axis). mtl
 * adds, for landmark vectors (docs/landmarks.md):
 *   euclidean_loss_param { coord_weight: w0 coord_weight: w1 ... }  weights by position within a
 *       sample, repeated: value i of a sample takes coord_weight[i % n], n dividing the values per
 *       sample (two weights: one for every x, one for every y);
 *   a third bottom of a's shape: per-value weights (visibility, per-sample weights), multiplied in;
 *   euclidean_loss_param { normalize_present: true }  Z = (target values present) / (values per
 *       sample), which is N when nothing is missing: samples with missing landmarks then do not
 *       dilute the loss of the others (by default a missing target only drops its own term).
 * Missing targets (NaN) add nothing. loss_param is refused: Caffe's EuclideanLoss ignores it. */
typedef struct euclidean_priv {
    float *wdiff;        /* w (a - b), 0 where the target is missing */
    float *diff;         /* a - b, 0 where the target is missing (for the weights' gradient) */
    int64_t cap;
    int n_coord_weights; /* 0: none */
    float *coord_weights;
    int normalize_present;
    double normalizer;   /* Z of the last forward */
} euclidean_priv;

static mtl_status euclidean_setup(mtl_layer *l, mtl_error *err)
{
    euclidean_priv *e = mtl_calloc_or_fail(1, sizeof(euclidean_priv), err, "EuclideanLoss state");
    if (!e)
        return MTL_ERR_NOMEM;
    l->priv = e;
    e->normalizer = 1.0;
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "euclidean_loss_param", &p, err));
    MTL_TRY(mtl_cfg_bool(p, "normalize_present", 0, &e->normalize_present, err));
    int n = mtl_cfg_count(p, "coord_weight");
    if (n > 0) {
        if (!(e->coord_weights = mtl_calloc_or_fail((size_t)n, sizeof(float), err, "coordinate weights")))
            return MTL_ERR_NOMEM;
        for (int i = 0; i < n; i++) {
            double w;
            MTL_TRY(mtl_cfg_float_at(p, "coord_weight", i, &w, err));
            if (!(w >= 0 && isfinite(w)))
                return mtl_cfg_fail(mtl_cfg_field(p, "coord_weight", i), err, MTL_ERR_CONFIG,
                                    "coord_weight %d is %g; weights must be finite and >= 0", i, w);
            e->coord_weights[i] = (float)w;
        }
        e->n_coord_weights = n;
    }
    return MTL_OK;
}

static mtl_status euclidean_reshape(mtl_layer *l, mtl_error *err)
{
    euclidean_priv *e = l->priv;
    const mtl_tensor *a = l->bottoms[0], *b = l->bottoms[1];
    MTL_TRY(mtl_loss_check_batch(l, err));
    if (a->count != b->count) {
        char as[128], bs[128];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "bottoms must have the same dimension: bottom 0 is %s, bottom 1 is %s",
                              mtl_tensor_shape_str(a, as, sizeof(as)), mtl_tensor_shape_str(b, bs, sizeof(bs)));
    }
    if (l->n_bottoms > 2 && l->bottoms[2]->count != a->count) {
        char as[128], ws[128];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "the weights (bottom 2, %s) need one value per prediction (bottom 0, %s)",
                              mtl_tensor_shape_str(l->bottoms[2], ws, sizeof(ws)),
                              mtl_tensor_shape_str(a, as, sizeof(as)));
    }
    int64_t per = a->shape[0] > 0 ? a->count / a->shape[0] : 0;
    if (e->n_coord_weights && per % e->n_coord_weights != 0)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "%d coord_weight values do not divide the %lld values per sample: give one per value, "
                              "or a pattern that repeats (2: x and y)",
                              e->n_coord_weights, (long long)per);
    if (a->count > e->cap) {
        free(e->wdiff);
        free(e->diff);
        e->diff = NULL;
        e->cap = 0;
        e->wdiff = malloc((size_t)a->count * sizeof(float));
        e->diff = malloc((size_t)a->count * sizeof(float));
        if (!e->wdiff || !e->diff)
            return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %lld differences", (long long)a->count);
        e->cap = a->count;
    }
    return mtl_tensor_reshape(l->tops[0], 0, NULL, err);
}

static mtl_status euclidean_forward(mtl_layer *l, mtl_error *err)
{
    euclidean_priv *e = l->priv;
    const float *a = l->bottoms[0]->data, *b = l->bottoms[1]->data;
    const float *w = l->n_bottoms > 2 ? l->bottoms[2]->data : NULL;
    int64_t count = l->bottoms[0]->count, present = 0;
    int n = l->bottoms[0]->shape[0];
    int64_t per = n > 0 ? count / n : 1;
    double sum = 0.0;
    for (int64_t i = 0; i < count; i++) {
        float weight = e->n_coord_weights ? e->coord_weights[(i % per) % e->n_coord_weights] : 1.0f;
        if (w) {
            if (!(w[i] >= 0 && isfinite(w[i])))
                return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT,
                                      "weight %g (bottom 2, sample %lld, value %lld) is negative or not finite",
                                      (double)w[i], (long long)(i / per), (long long)(i % per));
            weight *= w[i];
        }
        float d = 0.0f;
        if (!mtl_label_is_missing(b[i])) {
            d = a[i] - b[i];
            present++;
        }
        e->diff[i] = d;
        e->wdiff[i] = weight * d;
        sum += (double)d * e->wdiff[i];
    }
    double z = n;
    if (e->normalize_present)
        z = (double)present / (double)per;
    e->normalizer = z > 0 ? z : 1.0;
    l->tops[0]->data[0] = (float)(sum / e->normalizer / 2.0);
    return MTL_OK;
}

/* d/da = weight w (a - b) / Z, d/db = -weight w (a - b) / Z, d/dw = weight c (a - b)^2 / (2 Z) with
 * c the coordinate weight. */
static void euclidean_backward(mtl_layer *l)
{
    euclidean_priv *e = l->priv;
    int64_t count = l->bottoms[0]->count;
    int n = l->bottoms[0]->shape[0];
    int64_t per = n > 0 ? count / n : 1;
    const float scale = (float)(l->tops[0]->grad[0] / e->normalizer);
    for (int i = 0; i < 2; i++) {
        if (!l->propagate_down[i])
            continue;
        float alpha = i == 0 ? scale : -scale;
        float *dx = l->bottoms[i]->grad;
        for (int64_t k = 0; k < count; k++)
            dx[k] = alpha * e->wdiff[k];
    }
    if (l->n_bottoms > 2 && l->propagate_down[2]) {
        float *dw = l->bottoms[2]->grad;
        for (int64_t k = 0; k < count; k++) {
            float c = e->n_coord_weights ? e->coord_weights[(k % per) % e->n_coord_weights] : 1.0f;
            dw[k] = 0.5f * scale * c * e->diff[k] * e->diff[k];
        }
    }
}

static void euclidean_release(mtl_layer *l)
{
    euclidean_priv *e = l->priv;
    if (e) {
        free(e->wdiff);
        free(e->diff);
        free(e->coord_weights);
    }
    free(e);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_euclidean_loss = {
    .type = "EuclideanLoss",
    .min_bottoms = 2,
    .max_bottoms = 3,
    .min_tops = 1,
    .max_tops = 1,
    .setup = euclidean_setup,
    .reshape = euclidean_reshape,
    .forward = euclidean_forward,
    .backward = euclidean_backward,
    .release = euclidean_release,
};

/* ---- SmoothL1Loss ---------------------------------------------------------------------------
 * Fast / Faster R-CNN's box regression loss. Bottoms: predictions, targets and optionally inside
 * and outside weights (all four or neither), every one with the same number of values.
 *   d = w_in (pred - target),  f(d) = 0.5 (sigma d)^2 if |d| < 1 / sigma^2, else |d| - 0.5 / sigma^2,
 *   loss = sum w_out f(d) / Z
 * smooth_l1_loss_param { sigma (1) }. Z is loss_param's normalization, by default BATCH_SIZE (the
 * first axis of the predictions: what the fast-rcnn layer divides by); VALID counts the targets
 * present and FULL all of them. Missing targets (NaN) add nothing, as in the other losses. The
 * weights are constants (AnchorTarget / ProposalTarget outputs): Caffe gives them no gradient, and
 * a requested one is zeros; the targets get the predictions' gradient negated. */
typedef struct smooth_l1_priv {
    mtl_loss_config loss;
    float sigma2;
    float *diff;        /* d, 0 where the target is missing */
    int64_t cap;
    double normalizer;  /* Z of the last forward */
} smooth_l1_priv;

static mtl_status smooth_l1_setup(mtl_layer *l, mtl_error *err)
{
    smooth_l1_priv *s = mtl_calloc_or_fail(1, sizeof(*s), err, "SmoothL1Loss state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    s->normalizer = 1.0;
    if (l->n_bottoms == 3)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "3 bottoms: give predictions and targets, plus both inside and outside weights if any");
    mtl_cfg_node *p;
    double sigma;
    MTL_TRY(mtl_layer_param_message(l, "smooth_l1_loss_param", &p, err));
    MTL_TRY(mtl_cfg_float(p, "sigma", 1.0, &sigma, err));
    if (!(sigma >= 1e-15 && sigma <= 1e15)) /* sigma^2 and 1 / sigma^2 must fit a float */
        return mtl_cfg_fail(mtl_cfg_field(p, "sigma", 0), err, MTL_ERR_CONFIG,
                            "sigma is %g: it must be positive and finite (at most 1e15, at least 1e-15)", sigma);
    s->sigma2 = (float)(sigma * sigma);
    MTL_TRY(mtl_loss_read_param(l, MTL_LOSS_NORM_BATCH_SIZE, &s->loss, err));
    if (s->loss.has_ignore_label)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "loss_param ignore_label does not apply to regression targets (a missing target is NaN)");
    return MTL_OK;
}

static mtl_status smooth_l1_reshape(mtl_layer *l, mtl_error *err)
{
    smooth_l1_priv *s = l->priv;
    const mtl_tensor *a = l->bottoms[0];
    MTL_TRY(mtl_loss_check_batch(l, err));
    static const char *const roles[] = {"predictions", "targets", "inside weights", "outside weights"};
    for (int i = 1; i < l->n_bottoms; i++)
        if (l->bottoms[i]->count != a->count) {
            char as[128], bs[128];
            return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                                  "the %s (bottom %d, %s) need one value per prediction (bottom 0, %s)", roles[i], i,
                                  mtl_tensor_shape_str(l->bottoms[i], bs, sizeof(bs)),
                                  mtl_tensor_shape_str(a, as, sizeof(as)));
        }
    if (a->count > s->cap) {
        float *d = malloc((size_t)a->count * sizeof(float));
        if (!d)
            return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %lld differences", (long long)a->count);
        free(s->diff);
        s->diff = d;
        s->cap = a->count;
    }
    return mtl_tensor_reshape(l->tops[0], 0, NULL, err);
}

static mtl_status smooth_l1_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    smooth_l1_priv *s = l->priv;
    const float *a = l->bottoms[0]->data, *b = l->bottoms[1]->data;
    const float *w_in = l->n_bottoms > 2 ? l->bottoms[2]->data : NULL;
    const float *w_out = l->n_bottoms > 3 ? l->bottoms[3]->data : NULL;
    const int64_t count = l->bottoms[0]->count;
    const float sigma2 = s->sigma2, knee = 1.0f / s->sigma2;
    double sum = 0.0;
    int64_t present = 0;
    for (int64_t i = 0; i < count; i++) {
        if (mtl_label_is_missing(b[i])) {
            s->diff[i] = 0.0f;
            continue;
        }
        present++;
        float d = a[i] - b[i];
        if (w_in)
            d *= w_in[i];
        s->diff[i] = d;
        float ad = fabsf(d);
        float f = ad < knee ? 0.5f * d * d * sigma2 : ad - 0.5f * knee;
        sum += w_out ? (double)w_out[i] * f : (double)f;
    }
    int64_t outer = l->bottoms[0]->shape[0];
    s->normalizer = mtl_loss_normalizer(s->loss.normalization, outer, outer ? count / outer : 0, present);
    l->tops[0]->data[0] = (float)(sum / s->normalizer);
    return MTL_OK;
}

/* d loss / d pred = w_out w_in f'(d) / Z, f'(d) = sigma^2 d inside the knee, sign(d) outside; the
 * targets get its negative. */
static void smooth_l1_backward(mtl_layer *l)
{
    smooth_l1_priv *s = l->priv;
    for (int i = 2; i < l->n_bottoms; i++)
        if (l->propagate_down[i])
            mtl_tensor_zero_grad(l->bottoms[i]);
    const float *w_in = l->n_bottoms > 2 ? l->bottoms[2]->data : NULL;
    const float *w_out = l->n_bottoms > 3 ? l->bottoms[3]->data : NULL;
    const int64_t count = l->bottoms[0]->count;
    const float sigma2 = s->sigma2, knee = 1.0f / s->sigma2;
    const float scale = (float)(l->tops[0]->grad[0] / s->normalizer);
    for (int i = 0; i < 2; i++) {
        if (!l->propagate_down[i])
            continue;
        const float alpha = i == 0 ? scale : -scale;
        float *dx = l->bottoms[i]->grad;
        for (int64_t k = 0; k < count; k++) {
            float d = s->diff[k];
            float g = fabsf(d) < knee ? sigma2 * d : (d > 0 ? 1.0f : -1.0f);
            if (w_in)
                g *= w_in[k] * w_out[k];
            dx[k] = alpha * g;
        }
    }
}

static void smooth_l1_release(mtl_layer *l)
{
    smooth_l1_priv *s = l->priv;
    if (s)
        free(s->diff);
    free(s);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_smooth_l1_loss = {
    .type = "SmoothL1Loss",
    .min_bottoms = 2,
    .max_bottoms = 4,
    .min_tops = 1,
    .max_tops = 1,
    .setup = smooth_l1_setup,
    .reshape = smooth_l1_reshape,
    .forward = smooth_l1_forward,
    .backward = smooth_l1_backward,
    .release = smooth_l1_release,
};
