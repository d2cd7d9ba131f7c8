/* Softmax over one axis, and SoftmaxWithLoss: softmax followed by the multinomial logistic loss
 * against integer labels, with Caffe's ignore_label and normalization modes and mtl's missing-label
 * marker. Both view the input as outer x channels x inner, the softmax running over channels. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers/labels.h"
#include "layers/layers.h"

/* Per-position scratch (max, then sum) of outer * inner floats, grown when needed. */
typedef struct softmax_geom {
    int axis;
    int64_t outer, inner;
    int channels;
    float *scale;
    int64_t scale_cap;
} softmax_geom;

static mtl_status geom_reshape(mtl_layer *l, softmax_geom *g, int64_t axis_param, mtl_error *err)
{
    const mtl_tensor *x = l->bottoms[0];
    if (axis_param < -x->ndim || axis_param >= x->ndim) {
        char buf[128];
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "axis %lld is out of range for a bottom of shape %s",
                              (long long)axis_param, mtl_tensor_shape_str(x, buf, sizeof(buf)));
    }
    g->axis = (int)(axis_param < 0 ? axis_param + x->ndim : axis_param);
    g->outer = mtl_tensor_count_range(x, 0, g->axis);
    g->inner = mtl_tensor_count_range(x, g->axis + 1, x->ndim);
    g->channels = x->shape[g->axis];
    int64_t need = g->outer * g->inner;
    if (need > g->scale_cap) {
        free(g->scale);
        g->scale_cap = 0;
        if (!(g->scale = malloc((size_t)need * sizeof(float))))
            return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %lld softmax sums", (long long)need);
        g->scale_cap = need;
    }
    return MTL_OK;
}

/* y = softmax(x) over channels, max subtracted for stability; y may be x. */
static void softmax_forward_values(const softmax_geom *g, const float *x, float *y)
{
    int64_t inner = g->inner, block = (int64_t)g->channels * inner;
    int channels = g->channels;
#pragma omp parallel for if (g->outer * block > 16384)
    for (int64_t n = 0; n < g->outer; n++) {
        const float *xn = x + n * block;
        float *yn = y + n * block, *s = g->scale + n * inner;
        for (int64_t j = 0; j < inner; j++)
            s[j] = xn[j];
        for (int c = 1; c < channels; c++)
            for (int64_t j = 0; j < inner; j++)
                s[j] = fmaxf(s[j], xn[c * inner + j]);
        for (int c = 0; c < channels; c++)
            for (int64_t j = 0; j < inner; j++)
                yn[c * inner + j] = expf(xn[c * inner + j] - s[j]);
        for (int64_t j = 0; j < inner; j++)
            s[j] = 0.0f;
        for (int c = 0; c < channels; c++)
            for (int64_t j = 0; j < inner; j++)
                s[j] += yn[c * inner + j];
        for (int c = 0; c < channels; c++)
            for (int64_t j = 0; j < inner; j++)
                yn[c * inner + j] /= s[j];
    }
}

/* ---- Softmax -------------------------------------------------------------------------------- */

typedef struct softmax_priv {
    int64_t axis;
    softmax_geom g;
} softmax_priv;

/* softmax_param { axis engine }: the engine choice is Caffe's (CAFFE/CUDNN) and means nothing here. */
static mtl_status read_softmax_param(mtl_layer *l, int64_t *axis, mtl_error *err)
{
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "softmax_param", &p, err));
    mtl_cfg_accept(p, "engine");
    return mtl_cfg_int_range(p, "axis", 1, INT_MIN, INT_MAX, axis, err);
}

static mtl_status softmax_setup(mtl_layer *l, mtl_error *err)
{
    softmax_priv *s = mtl_calloc_or_fail(1, sizeof(*s), err, "Softmax state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    return read_softmax_param(l, &s->axis, err);
}

static mtl_status softmax_reshape(mtl_layer *l, mtl_error *err)
{
    softmax_priv *s = l->priv;
    MTL_TRY(geom_reshape(l, &s->g, s->axis, err));
    return mtl_tensor_reshape_like(l->tops[0], l->bottoms[0], err);
}

static mtl_status softmax_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    softmax_priv *s = l->priv;
    softmax_forward_values(&s->g, l->bottoms[0]->data, l->tops[0]->data);
    return MTL_OK;
}

/* dx = y .* (dy - sum_c dy .* y); in place dx is dy and y is x, which this order allows. */
static void softmax_backward(mtl_layer *l)
{
    if (!l->propagate_down[0])
        return;
    softmax_priv *s = l->priv;
    const softmax_geom *g = &s->g;
    const float *y = l->tops[0]->data, *dy = l->tops[0]->grad;
    float *dx = l->bottoms[0]->grad;
    int64_t inner = g->inner, block = (int64_t)g->channels * inner;
    int channels = g->channels;
#pragma omp parallel for if (g->outer * block > 16384)
    for (int64_t n = 0; n < g->outer; n++) {
        const float *yn = y + n * block, *dyn = dy + n * block;
        float *dxn = dx + n * block, *dot = g->scale + n * inner;
        for (int64_t j = 0; j < inner; j++)
            dot[j] = 0.0f;
        for (int c = 0; c < channels; c++)
            for (int64_t j = 0; j < inner; j++)
                dot[j] += dyn[c * inner + j] * yn[c * inner + j];
        for (int c = 0; c < channels; c++)
            for (int64_t j = 0; j < inner; j++)
                dxn[c * inner + j] = (dyn[c * inner + j] - dot[j]) * yn[c * inner + j];
    }
}

static void softmax_release(mtl_layer *l)
{
    softmax_priv *s = l->priv;
    if (s)
        free(s->g.scale);
    free(s);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_softmax = {
    .type = "Softmax",
    .min_bottoms = 1,
    .max_bottoms = 1,
    .min_tops = 1,
    .max_tops = 1,
    .allows_in_place = 1,
    .setup = softmax_setup,
    .reshape = softmax_reshape,
    .forward = softmax_forward,
    .backward = softmax_backward,
    .release = softmax_release,
};

/* ---- SoftmaxWithLoss ------------------------------------------------------------------------ */

typedef struct softmax_loss_priv {
    int64_t axis;
    mtl_loss_config loss;
    softmax_geom g;
    float *prob;        /* the softmax, kept for backward */
    int64_t prob_cap;
} softmax_loss_priv;

static mtl_status softmax_loss_setup(mtl_layer *l, mtl_error *err)
{
    softmax_loss_priv *s = mtl_calloc_or_fail(1, sizeof(*s), err, "SoftmaxWithLoss state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    MTL_TRY(read_softmax_param(l, &s->axis, err));
    return mtl_loss_read_param(l, MTL_LOSS_NORM_VALID, &s->loss, err);
}

static mtl_status softmax_loss_reshape(mtl_layer *l, mtl_error *err)
{
    softmax_loss_priv *s = l->priv;
    const mtl_tensor *x = l->bottoms[0], *label = l->bottoms[1];
    MTL_TRY(mtl_loss_check_batch(l, err));
    MTL_TRY(geom_reshape(l, &s->g, s->axis, err));
    if (s->g.outer * s->g.inner != label->count) {
        char xs[128], ls[128];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "%lld labels (bottom 1, %s) for %lld predictions (bottom 0, %s, softmax axis %d): "
                              "with scores N x C x H x W and axis 1 give N*H*W labels in {0, ..., C-1}",
                              (long long)label->count, mtl_tensor_shape_str(label, ls, sizeof(ls)),
                              (long long)(s->g.outer * s->g.inner), mtl_tensor_shape_str(x, xs, sizeof(xs)),
                              s->g.axis);
    }
    if (x->count > s->prob_cap) {
        free(s->prob);
        s->prob_cap = 0;
        if (!(s->prob = malloc((size_t)x->count * sizeof(float))))
            return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %lld probabilities", (long long)x->count);
        s->prob_cap = x->count;
    }
    MTL_TRY(mtl_tensor_reshape(l->tops[0], 0, NULL, err));
    if (l->n_tops > 1)
        MTL_TRY(mtl_tensor_reshape_like(l->tops[1], x, err));
    return MTL_OK;
}

static mtl_status softmax_loss_forward(mtl_layer *l, mtl_error *err)
{
    softmax_loss_priv *s = l->priv;
    const softmax_geom *g = &s->g;
    softmax_forward_values(g, l->bottoms[0]->data, s->prob);
    const float *label = l->bottoms[1]->data;
    int64_t inner = g->inner, block = (int64_t)g->channels * inner;
    double loss = 0.0;
    int64_t valid = 0;
    for (int64_t n = 0; n < g->outer; n++)
        for (int64_t j = 0; j < inner; j++) {
            float v = label[n * inner + j];
            if (mtl_label_is_ignored(v, s->loss.has_ignore_label, s->loss.ignore_label))
                continue;
            int c = mtl_label_class(v, g->channels);
            if (c < 0) {
                if (inner == 1)
                    return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT,
                                          "label %g of sample %lld is not a class in [0, %d) nor the ignore_label",
                                          (double)v, (long long)n, g->channels);
                return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT,
                                      "label %g of sample %lld (position %lld) is not a class in [0, %d) nor the "
                                      "ignore_label",
                                      (double)v, (long long)n, (long long)j, g->channels);
            }
            /* Caffe's floor on the probability: the loss of a hopeless prediction stays finite */
            loss -= log(fmax((double)s->prob[n * block + c * inner + j], (double)FLT_MIN));
            valid++;
        }
    l->tops[0]->data[0] = (float)(loss / mtl_loss_normalizer(s->loss.normalization, g->outer, inner, valid));
    if (l->n_tops > 1)
        memcpy(l->tops[1]->data, s->prob, (size_t)l->bottoms[0]->count * sizeof(float));
    return MTL_OK;
}

/* d loss / d x = (prob - onehot(label)) * weight / normalizer, zero at ignored positions. Only
 * tops[0] carries a gradient (as in Caffe, the probability top is an output, not differentiated);
 * labels get none: a requested label gradient is written as zeros. */
static void softmax_loss_backward(mtl_layer *l)
{
    softmax_loss_priv *s = l->priv;
    const softmax_geom *g = &s->g;
    if (l->n_bottoms > 1 && l->propagate_down[1])
        mtl_tensor_zero_grad(l->bottoms[1]);
    if (!l->propagate_down[0])
        return;
    float *dx = l->bottoms[0]->grad;
    const float *label = l->bottoms[1]->data;
    int64_t inner = g->inner, block = (int64_t)g->channels * inner;
    memcpy(dx, s->prob, (size_t)l->bottoms[0]->count * sizeof(float));
    int64_t valid = 0;
    for (int64_t n = 0; n < g->outer; n++)
        for (int64_t j = 0; j < inner; j++) {
            float v = label[n * inner + j];
            /* forward rejected labels out of range, so -1 here can only mean ignored */
            int c = mtl_label_is_ignored(v, s->loss.has_ignore_label, s->loss.ignore_label)
                        ? -1
                        : mtl_label_class(v, g->channels);
            if (c < 0) {
                for (int k = 0; k < g->channels; k++)
                    dx[n * block + k * inner + j] = 0.0f;
            } else {
                dx[n * block + c * inner + j] -= 1.0f;
                valid++;
            }
        }
    float scale =
        (float)(l->tops[0]->grad[0] / mtl_loss_normalizer(s->loss.normalization, g->outer, inner, valid));
    int64_t count = l->bottoms[0]->count;
    for (int64_t i = 0; i < count; i++)
        dx[i] *= scale;
}

static void softmax_loss_release(mtl_layer *l)
{
    softmax_loss_priv *s = l->priv;
    if (s) {
        free(s->g.scale);
        free(s->prob);
    }
    free(s);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_softmax_with_loss = {
    .type = "SoftmaxWithLoss",
    .min_bottoms = 2,
    .max_bottoms = 2,
    .min_tops = 1,
    .max_tops = 2,
    .setup = softmax_loss_setup,
    .reshape = softmax_loss_reshape,
    .forward = softmax_loss_forward,
    .backward = softmax_loss_backward,
    .release = softmax_loss_release,
};
