/* Normalisation layers with Caffe's semantics: BatchNorm (running statistics in three
 * non-learned blobs, optionally a learned scale and bias as later Caffe forks have), Scale and Bias
 * (a learned or given factor / offset broadcast over a range of axes) and LRN (across or within
 * channels). Per-channel reductions run one channel per thread in a fixed order: deterministic. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers/layers.h"

/* below this many values a loop is not worth waking the thread team */
#define NORM_PARALLEL_MIN 32768

static int in_place(const mtl_layer *l) { return l->tops[0] == l->bottoms[0]; }

/* A float buffer that only grows (reshape is called before every forward). */
typedef struct scratch {
    float *data;
    int64_t capacity;
} scratch;

static mtl_status scratch_reserve(const mtl_layer *l, scratch *s, int64_t n, mtl_error *err)
{
    if (n <= s->capacity)
        return MTL_OK;
    float *p = mtl_aligned_alloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p)
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %lld scratch values", (long long)n);
    mtl_aligned_free(s->data);
    s->data = p;
    s->capacity = n;
    return MTL_OK;
}

/* A filler message parsed from text, for defaults Caffe gives in code rather than in its schema. */
static mtl_status default_filler(const char *text, mtl_cfg_node **out, mtl_error *err)
{
    return mtl_cfg_parse_string(text, "<default filler>", out, err);
}

/* ---- BatchNorm ----
 * y = (x - mean_c) / sqrt(var_c + eps) over N x C x (any spatial axes). At TRAIN without global
 * statistics, mean and variance come from the batch and the three blobs accumulate Caffe's running
 * sums: factor = factor * f + 1, mean_sum = mean + f * mean_sum, var_sum = m/(m-1) var + f * var_sum
 * (f = moving_average_fraction, m = values per channel); with global statistics the layer uses
 * mean_sum / factor and var_sum / factor. The blobs are not learned (lr_mult 0, no gradient).
 * scale_bias (NVIDIA Caffe): y = gamma_c * xhat + beta_c with gamma, beta as learned blobs 3 and 4. */

typedef struct batch_norm_state {
    int use_global_stats, scale_bias;
    float fraction, eps;
    mtl_cfg_node *scale_filler_default;
    int64_t num, channels, spatial;
    scratch x_norm;  /* (N, C, spatial): xhat, kept for backward */
    scratch inv_std; /* (C): 1 / sqrt(var + eps) of the last forward */
} batch_norm_state;

enum { BN_MEAN, BN_VAR, BN_FACTOR, BN_SCALE, BN_BIAS };

static mtl_status batch_norm_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p = NULL, *scale_filler = NULL, *bias_filler = NULL;
    int use_global, scale_bias;
    double fraction, eps;
    MTL_TRY(mtl_layer_param_message(l, "batch_norm_param", &p, err));
    MTL_TRY(mtl_cfg_bool(p, "use_global_stats", l->phase == MTL_PHASE_TEST, &use_global, err));
    MTL_TRY(mtl_cfg_float(p, "moving_average_fraction", 0.999, &fraction, err));
    MTL_TRY(mtl_cfg_float(p, "eps", 1e-5, &eps, err));
    MTL_TRY(mtl_cfg_bool(p, "scale_bias", 0, &scale_bias, err));
    MTL_TRY(mtl_cfg_message(p, "scale_filler", &scale_filler, err));
    MTL_TRY(mtl_cfg_message(p, "bias_filler", &bias_filler, err));
    mtl_cfg_accept(p, "engine");
    /* as in NVIDIA Caffe, giving either filler asks for the scale and bias */
    scale_bias = scale_bias || scale_filler || bias_filler;
    if (!(fraction >= 0.0 && fraction <= 1.0))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "moving_average_fraction must be in [0, 1], got %g", fraction);
    if (!(eps >= 0.0))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "eps must be >= 0, got %g", eps);
    const mtl_tensor *x = l->bottoms[0];
    if (x->ndim < 1)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "needs a bottom of N x C x ..., got a scalar");

    /* Caffe refuses to learn the statistics: any param spec given for them must say lr_mult 0 */
    int n_specs = mtl_cfg_count(l->cfg, "param");
    for (int i = 0; i < n_specs && i < 3; i++) {
        double lr;
        MTL_TRY(mtl_cfg_float(mtl_cfg_field(l->cfg, "param", i), "lr_mult", 1.0, &lr, err));
        if (lr != 0.0)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                                  "param %d has lr_mult %g: the batch statistics (params 0-2) are not learned, "
                                  "give lr_mult: 0 or leave the param out", i, lr);
    }

    batch_norm_state *s = mtl_calloc_or_fail(1, sizeof(*s), err, "BatchNorm state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    s->use_global_stats = use_global;
    s->scale_bias = scale_bias;
    s->fraction = (float)fraction;
    s->eps = (float)eps;
    s->channels = x->ndim == 1 ? 1 : x->shape[1];
    int channels = (int)s->channels, one = 1;
    MTL_TRY(mtl_layer_add_param(l, 1, &channels, NULL, err)); /* running mean sum */
    MTL_TRY(mtl_layer_add_param(l, 1, &channels, NULL, err)); /* running variance sum */
    MTL_TRY(mtl_layer_add_param(l, 1, &one, NULL, err));      /* running normaliser */
    for (int i = 0; i < 3; i++) {
        l->param_needs_grad[i] = 0;
        l->param_specs[i].lr_mult = 0.0f;
        l->param_specs[i].decay_mult = 0.0f;
    }
    if (scale_bias) {
        if (!scale_filler) {
            MTL_TRY(default_filler("type: \"constant\" value: 1", &s->scale_filler_default, err));
            scale_filler = s->scale_filler_default;
        }
        MTL_TRY(mtl_layer_add_param(l, 1, &channels, scale_filler, err));
        MTL_TRY(mtl_layer_add_param(l, 1, &channels, bias_filler, err));
    }
    return MTL_OK;
}

static mtl_status batch_norm_reshape(mtl_layer *l, mtl_error *err)
{
    batch_norm_state *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    int64_t channels = x->ndim == 1 ? 1 : (x->ndim > 1 ? x->shape[1] : 0);
    if (channels != s->channels) {
        char buf[64];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bottom %s has %lld channels, the layer was set up for %lld",
                              mtl_tensor_shape_str(x, buf, sizeof(buf)), (long long)channels,
                              (long long)s->channels);
    }
    s->num = x->shape[0];
    s->spatial = s->num * channels > 0 ? x->count / (s->num * channels) : 0;
    MTL_TRY(scratch_reserve(l, &s->x_norm, x->count, err));
    MTL_TRY(scratch_reserve(l, &s->inv_std, channels, err));
    if (in_place(l))
        return MTL_OK;
    return mtl_tensor_reshape_like(l->tops[0], x, err);
}

static mtl_status batch_norm_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    batch_norm_state *s = l->priv;
    const float *x = l->bottoms[0]->data; /* (N, C, S) */
    float *y = l->tops[0]->data;          /* (N, C, S), may be x */
    float *xn = s->x_norm.data;           /* (N, C, S) */
    float *inv_std = s->inv_std.data;     /* (C) */
    float *mean_sum = l->params[BN_MEAN]->data, *var_sum = l->params[BN_VAR]->data;
    float *factor = l->params[BN_FACTOR]->data;
    const float *gamma = s->scale_bias ? l->params[BN_SCALE]->data : NULL;
    const float *beta = s->scale_bias ? l->params[BN_BIAS]->data : NULL;
    int64_t num = s->num, channels = s->channels, spatial = s->spatial;
    int64_t m = num * spatial, count = l->bottoms[0]->count;
    /* the moving averages follow TRAIN batches only: a TEST net shares these blobs with TRAIN */
    int update = !s->use_global_stats && l->phase == MTL_PHASE_TRAIN;
    float stored_scale = factor[0] == 0.0f ? 0.0f : 1.0f / factor[0];
    float correction = m > 1 ? (float)m / (float)(m - 1) : 1.0f;
    if (update)
        factor[0] = factor[0] * s->fraction + 1.0f;

#pragma omp parallel for if (count >= NORM_PARALLEL_MIN) schedule(static)
    for (int64_t c = 0; c < channels; c++) {
        float mean, var;
        if (s->use_global_stats) {
            mean = stored_scale * mean_sum[c];
            var = stored_scale * var_sum[c];
        } else {
            double sum = 0, sq = 0;
            for (int64_t n = 0; n < num; n++)
                for (int64_t i = (n * channels + c) * spatial, e = i + spatial; i < e; i++)
                    sum += x[i];
            mean = m > 0 ? (float)(sum / (double)m) : 0.0f;
            for (int64_t n = 0; n < num; n++)
                for (int64_t i = (n * channels + c) * spatial, e = i + spatial; i < e; i++) {
                    double d = (double)x[i] - mean;
                    sq += d * d;
                }
            var = m > 0 ? (float)(sq / (double)m) : 0.0f;
            if (update) {
                mean_sum[c] = mean + s->fraction * mean_sum[c];
                var_sum[c] = correction * var + s->fraction * var_sum[c];
            }
        }
        float is = 1.0f / sqrtf(var + s->eps);
        inv_std[c] = is;
        float g = gamma ? gamma[c] : 1.0f, b = beta ? beta[c] : 0.0f;
        for (int64_t n = 0; n < num; n++)
            for (int64_t i = (n * channels + c) * spatial, e = i + spatial; i < e; i++) {
                xn[i] = (x[i] - mean) * is;
                y[i] = g * xn[i] + b;
            }
    }
    return MTL_OK;
}

static void batch_norm_backward(mtl_layer *l)
{
    batch_norm_state *s = l->priv;
    const float *dy = l->tops[0]->grad;  /* (N, C, S) */
    float *dx = l->bottoms[0]->grad;     /* (N, C, S), may be dy */
    const float *xn = s->x_norm.data;    /* (N, C, S) */
    const float *inv_std = s->inv_std.data;
    const float *gamma = s->scale_bias ? l->params[BN_SCALE]->data : NULL;
    float *dgamma = s->scale_bias && mtl_layer_param_needs_grad(l, BN_SCALE) ? l->params[BN_SCALE]->grad : NULL;
    float *dbeta = s->scale_bias && mtl_layer_param_needs_grad(l, BN_BIAS) ? l->params[BN_BIAS]->grad : NULL;
    int64_t num = s->num, channels = s->channels, spatial = s->spatial, m = num * spatial;
    int64_t count = l->bottoms[0]->count;
    int propagate = l->propagate_down[0];

#pragma omp parallel for if (count >= NORM_PARALLEL_MIN) schedule(static)
    for (int64_t c = 0; c < channels; c++) {
        /* every sum over dy happens before dx (maybe the same memory) is written */
        double sum_dy = 0, sum_dy_xn = 0;
        for (int64_t n = 0; n < num; n++)
            for (int64_t i = (n * channels + c) * spatial, e = i + spatial; i < e; i++) {
                sum_dy += dy[i];
                sum_dy_xn += (double)dy[i] * xn[i];
            }
        if (dgamma)
            dgamma[c] += (float)sum_dy_xn;
        if (dbeta)
            dbeta[c] += (float)sum_dy;
        if (!propagate)
            continue;
        float g = gamma ? gamma[c] : 1.0f, is = inv_std[c];
        if (s->use_global_stats) {
            /* mean and variance are constants here: the map is affine */
            for (int64_t n = 0; n < num; n++)
                for (int64_t i = (n * channels + c) * spatial, e = i + spatial; i < e; i++)
                    dx[i] = dy[i] * g * is;
            continue;
        }
        /* dx = (dxhat - mean(dxhat) - mean(dxhat .* xhat) .* xhat) / sqrt(var + eps), dxhat = g dy */
        float mean_d = m > 0 ? (float)(g * sum_dy / (double)m) : 0.0f;
        float mean_dx = m > 0 ? (float)(g * sum_dy_xn / (double)m) : 0.0f;
        for (int64_t n = 0; n < num; n++)
            for (int64_t i = (n * channels + c) * spatial, e = i + spatial; i < e; i++)
                dx[i] = (g * dy[i] - mean_d - mean_dx * xn[i]) * is;
    }
}

static void batch_norm_release(mtl_layer *l)
{
    batch_norm_state *s = l->priv;
    if (s) {
        mtl_aligned_free(s->x_norm.data);
        mtl_aligned_free(s->inv_std.data);
        mtl_cfg_free(s->scale_filler_default);
    }
    free(s);
    l->priv = NULL;
}

/* ---- Scale and Bias: y = x * s or y = x + b, where s / b covers axes [axis, axis + k) of x ----
 * One bottom: s / b is a learned blob over num_axes axes (-1: to the end). Two bottoms: bottom 1
 * is s / b and gets the gradient; a scalar bottom 1 (no axes) applies everywhere. Scale with
 * bias_term adds a learned bias of the same shape (param 1, or param 0 with two bottoms). */

typedef struct broadcast {
    int64_t outer, dim, inner; /* x is (outer, dim, inner) around the operand's dim values */
} broadcast;

/* Shape of the learned operand: bottom 0's axes [axis, axis + num_axes). */
static mtl_status operand_shape(mtl_layer *l, int64_t axis_param, int64_t num_axes, int *ndim, int *shape,
                                mtl_error *err)
{
    const mtl_tensor *x = l->bottoms[0];
    int axis = mtl_tensor_axis(x, (int)axis_param);
    if (axis < 0 || axis_param < -MTL_MAX_AXES || axis_param > MTL_MAX_AXES)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "axis %lld is out of range for bottom 0 with %d axes",
                              (long long)axis_param, x->ndim);
    if (num_axes < -1)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "num_axes must be >= 0, or -1 to extend to the end of bottom 0; got %lld",
                              (long long)num_axes);
    if (num_axes >= 0 && axis + num_axes > x->ndim)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "num_axes %lld from axis %d extends past bottom 0's %d axes", (long long)num_axes,
                              axis, x->ndim);
    *ndim = num_axes < 0 ? x->ndim - axis : (int)num_axes;
    for (int i = 0; i < *ndim; i++)
        shape[i] = x->shape[axis + i];
    return MTL_OK;
}

/* Where operand s lies in x (Caffe: a scalar operand always works, with axis 0). */
static mtl_status broadcast_geometry(const mtl_layer *l, const mtl_tensor *s, int64_t axis_param, const char *what,
                                     broadcast *g, mtl_error *err)
{
    const mtl_tensor *x = l->bottoms[0];
    char xs[64], ss[64];
    int axis = 0;
    if (s->ndim > 0) {
        axis = mtl_tensor_axis(x, (int)axis_param);
        if (axis < 0 || axis_param < -MTL_MAX_AXES || axis_param > MTL_MAX_AXES)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "axis %lld is out of range for bottom 0 with %d axes",
                                  (long long)axis_param, x->ndim);
    }
    int fits = axis + s->ndim <= x->ndim;
    for (int i = 0; fits && i < s->ndim; i++)
        fits = x->shape[axis + i] == s->shape[i];
    if (!fits)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "%s has shape %s, which does not match bottom 0 (%s) from axis %d",
                              what, mtl_tensor_shape_str(s, ss, sizeof(ss)), mtl_tensor_shape_str(x, xs, sizeof(xs)),
                              axis);
    g->outer = mtl_tensor_count_range(x, 0, axis);
    g->dim = s->count;
    g->inner = mtl_tensor_count_range(x, axis + s->ndim, x->ndim);
    return MTL_OK;
}

/* out[j] (+)= sum over outer and inner of a * b (b NULL: of a), a and b of shape (outer, dim, inner). */
static void broadcast_reduce(const broadcast *g, const float *a, const float *b, float *out, int accumulate)
{
    int64_t outer = g->outer, dim = g->dim, inner = g->inner;
#pragma omp parallel for if (outer * dim * inner >= NORM_PARALLEL_MIN && dim > 1) schedule(static)
    for (int64_t j = 0; j < dim; j++) {
        double sum = 0;
        for (int64_t o = 0; o < outer; o++) {
            int64_t base = (o * dim + j) * inner;
            if (b)
                for (int64_t i = base; i < base + inner; i++)
                    sum += (double)a[i] * b[i];
            else
                for (int64_t i = base; i < base + inner; i++)
                    sum += a[i];
        }
        out[j] = accumulate ? out[j] + (float)sum : (float)sum;
    }
}

typedef struct scale_state {
    int64_t axis;
    int bias_term;
    int scale_param, bias_param;  /* param indices, -1 if none */
    mtl_cfg_node *filler_default; /* constant 1 when the prototxt gives no filler */
    broadcast g;
    scratch input; /* in place: x, for the gradient of the scale */
} scale_state;

static mtl_status scale_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p = NULL, *filler = NULL, *bias_filler = NULL;
    int64_t axis, num_axes;
    int bias_term;
    MTL_TRY(mtl_layer_param_message(l, "scale_param", &p, err));
    MTL_TRY(mtl_cfg_int(p, "axis", 1, &axis, err));
    MTL_TRY(mtl_cfg_int(p, "num_axes", 1, &num_axes, err));
    MTL_TRY(mtl_cfg_message(p, "filler", &filler, err));
    MTL_TRY(mtl_cfg_bool(p, "bias_term", 0, &bias_term, err));
    MTL_TRY(mtl_cfg_message(p, "bias_filler", &bias_filler, err));
    scale_state *s = mtl_calloc_or_fail(1, sizeof(*s), err, "Scale state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    s->axis = axis;
    s->bias_term = bias_term;
    s->scale_param = s->bias_param = -1;
    int ndim, shape[MTL_MAX_AXES];
    if (l->n_bottoms == 1) {
        MTL_TRY(operand_shape(l, axis, num_axes, &ndim, shape, err));
        if (!filler) {
            MTL_TRY(default_filler("type: \"constant\" value: 1", &s->filler_default, err));
            filler = s->filler_default;
        }
        s->scale_param = l->n_params;
        MTL_TRY(mtl_layer_add_param(l, ndim, shape, filler, err));
    } else {
        /* num_axes and filler do not apply: bottom 1 is the scale (checked in reshape) */
        const mtl_tensor *scale = l->bottoms[1];
        ndim = scale->ndim;
        memcpy(shape, scale->shape, sizeof(shape));
    }
    if (bias_term) {
        s->bias_param = l->n_params;
        MTL_TRY(mtl_layer_add_param(l, ndim, shape, bias_filler, err));
    }
    return MTL_OK;
}

static const mtl_tensor *scale_operand(const mtl_layer *l)
{
    const scale_state *s = l->priv;
    return l->n_bottoms > 1 ? l->bottoms[1] : l->params[s->scale_param];
}

static mtl_status scale_reshape(mtl_layer *l, mtl_error *err)
{
    scale_state *s = l->priv;
    const mtl_tensor *scale = scale_operand(l);
    MTL_TRY(broadcast_geometry(l, scale, s->axis, l->n_bottoms > 1 ? "bottom 1 (the scale)" : "the scale", &s->g, err));
    if (s->bias_term && l->params[s->bias_param]->count != s->g.dim) {
        char buf[64];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bottom 1 has shape %s, but the bias was set up for %lld values",
                              mtl_tensor_shape_str(scale, buf, sizeof(buf)),
                              (long long)l->params[s->bias_param]->count);
    }
    if (in_place(l))
        return scratch_reserve(l, &s->input, l->bottoms[0]->count, err);
    return mtl_tensor_reshape_like(l->tops[0], l->bottoms[0], err);
}

static mtl_status scale_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    scale_state *s = l->priv;
    const float *x = l->bottoms[0]->data;    /* (outer, dim, inner) */
    float *y = l->tops[0]->data;             /* (outer, dim, inner), may be x */
    const float *a = scale_operand(l)->data; /* (dim) */
    const float *b = s->bias_term ? l->params[s->bias_param]->data : NULL;
    int64_t dim = s->g.dim, inner = s->g.inner, blocks = s->g.outer * dim, count = l->bottoms[0]->count;
    if (in_place(l))
        memcpy(s->input.data, x, (size_t)count * sizeof(float));
#pragma omp parallel for if (count >= NORM_PARALLEL_MIN) schedule(static)
    for (int64_t k = 0; k < blocks; k++) {
        float f = a[k % dim], o = b ? b[k % dim] : 0.0f;
        for (int64_t i = k * inner; i < (k + 1) * inner; i++)
            y[i] = x[i] * f + o;
    }
    return MTL_OK;
}

static void scale_backward(mtl_layer *l)
{
    scale_state *s = l->priv;
    const float *dy = l->tops[0]->grad;                                 /* (outer, dim, inner) */
    const float *x = in_place(l) ? s->input.data : l->bottoms[0]->data; /* (outer, dim, inner) */
    float *dx = l->bottoms[0]->grad;                                    /* may be dy */
    const mtl_tensor *scale = scale_operand(l);
    /* the operand gradients read dy, so they come before dx overwrites it in place */
    if (s->bias_term && mtl_layer_param_needs_grad(l, s->bias_param))
        broadcast_reduce(&s->g, dy, NULL, l->params[s->bias_param]->grad, 1);
    if (l->n_bottoms > 1 && l->propagate_down[1])
        broadcast_reduce(&s->g, dy, x, l->bottoms[1]->grad, 0);
    else if (l->n_bottoms == 1 && mtl_layer_param_needs_grad(l, s->scale_param))
        broadcast_reduce(&s->g, dy, x, l->params[s->scale_param]->grad, 1);
    if (!l->propagate_down[0])
        return;
    const float *a = scale->data;
    int64_t dim = s->g.dim, inner = s->g.inner, blocks = s->g.outer * dim, count = l->bottoms[0]->count;
#pragma omp parallel for if (count >= NORM_PARALLEL_MIN) schedule(static)
    for (int64_t k = 0; k < blocks; k++) {
        float f = a[k % dim];
        for (int64_t i = k * inner; i < (k + 1) * inner; i++)
            dx[i] = dy[i] * f;
    }
}

static void scale_release(mtl_layer *l)
{
    scale_state *s = l->priv;
    if (s) {
        mtl_aligned_free(s->input.data);
        mtl_cfg_free(s->filler_default);
    }
    free(s);
    l->priv = NULL;
}

typedef struct bias_state {
    int64_t axis;
    broadcast g;
} bias_state;

static mtl_status bias_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p = NULL, *filler = NULL;
    int64_t axis, num_axes;
    MTL_TRY(mtl_layer_param_message(l, "bias_param", &p, err));
    MTL_TRY(mtl_cfg_int(p, "axis", 1, &axis, err));
    MTL_TRY(mtl_cfg_int(p, "num_axes", 1, &num_axes, err));
    MTL_TRY(mtl_cfg_message(p, "filler", &filler, err)); /* absent: constant 0, the identity */
    bias_state *s = mtl_calloc_or_fail(1, sizeof(*s), err, "Bias state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    s->axis = axis;
    if (l->n_bottoms > 1)
        return MTL_OK; /* bottom 1 is the bias; num_axes and filler do not apply */
    int ndim, shape[MTL_MAX_AXES];
    MTL_TRY(operand_shape(l, axis, num_axes, &ndim, shape, err));
    return mtl_layer_add_param(l, ndim, shape, filler, err);
}

static const mtl_tensor *bias_operand(const mtl_layer *l) { return l->n_bottoms > 1 ? l->bottoms[1] : l->params[0]; }

static mtl_status bias_reshape(mtl_layer *l, mtl_error *err)
{
    bias_state *s = l->priv;
    MTL_TRY(broadcast_geometry(l, bias_operand(l), s->axis, l->n_bottoms > 1 ? "bottom 1 (the bias)" : "the bias",
                               &s->g, err));
    if (in_place(l))
        return MTL_OK;
    return mtl_tensor_reshape_like(l->tops[0], l->bottoms[0], err);
}

static mtl_status bias_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    bias_state *s = l->priv;
    const float *x = l->bottoms[0]->data;   /* (outer, dim, inner) */
    float *y = l->tops[0]->data;            /* (outer, dim, inner), may be x */
    const float *b = bias_operand(l)->data; /* (dim) */
    int64_t dim = s->g.dim, inner = s->g.inner, blocks = s->g.outer * dim, count = l->bottoms[0]->count;
#pragma omp parallel for if (count >= NORM_PARALLEL_MIN) schedule(static)
    for (int64_t k = 0; k < blocks; k++) {
        float o = b[k % dim];
        for (int64_t i = k * inner; i < (k + 1) * inner; i++)
            y[i] = x[i] + o;
    }
    return MTL_OK;
}

static void bias_backward(mtl_layer *l)
{
    bias_state *s = l->priv;
    const float *dy = l->tops[0]->grad;
    if (l->n_bottoms > 1 && l->propagate_down[1])
        broadcast_reduce(&s->g, dy, NULL, l->bottoms[1]->grad, 0);
    else if (l->n_bottoms == 1 && mtl_layer_param_needs_grad(l, 0))
        broadcast_reduce(&s->g, dy, NULL, l->params[0]->grad, 1);
    if (l->propagate_down[0] && !in_place(l))
        memcpy(l->bottoms[0]->grad, dy, (size_t)l->bottoms[0]->count * sizeof(float));
}

static void bias_release(mtl_layer *l)
{
    free(l->priv);
    l->priv = NULL;
}

/* ---- LRN (Caffe's formulas) ----
 * ACROSS_CHANNELS: y = x * (k + alpha/n * sum of x^2 over the n channels centred on this one)^-beta,
 * channels beyond the edges counting as 0.
 * WITHIN_CHANNEL: Caffe builds it from square, average pooling (n x n, pad (n-1)/2, stride 1),
 * power and product layers; its average pooling divides by n*n even where the window hangs over
 * the edge, and its power layer adds 1, not k. So y = x * (1 + alpha/n^2 * sum of x^2 over the
 * n x n window inside the image)^-beta, and k does not apply, exactly as in Caffe. */

enum { LRN_ACROSS_CHANNELS, LRN_WITHIN_CHANNEL };

typedef struct lrn_state {
    int size, region;
    float alpha, beta, k;
    int64_t num, channels, height, width;
    scratch scale; /* (N, C, H, W): the base raised to -beta, from forward */
    scratch ratio; /* (N, C, H, W): dy * y / base, in backward */
} lrn_state;

static mtl_status lrn_setup(mtl_layer *l, mtl_error *err)
{
    static const char *const regions[] = {"ACROSS_CHANNELS", "WITHIN_CHANNEL"};
    mtl_cfg_node *p = NULL;
    int64_t size;
    double alpha, beta, k;
    int region;
    MTL_TRY(mtl_layer_param_message(l, "lrn_param", &p, err));
    MTL_TRY(mtl_cfg_int(p, "local_size", 5, &size, err));
    MTL_TRY(mtl_cfg_float(p, "alpha", 1.0, &alpha, err));
    MTL_TRY(mtl_cfg_float(p, "beta", 0.75, &beta, err));
    MTL_TRY(mtl_cfg_enum(p, "norm_region", regions, 2, LRN_ACROSS_CHANNELS, &region, err));
    MTL_TRY(mtl_cfg_float(p, "k", 1.0, &k, err));
    mtl_cfg_accept(p, "engine");
    if (size < 1 || size % 2 == 0 || size > INT32_MAX)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "local_size must be a positive odd number, got %lld",
                              (long long)size);
    if (l->bottoms[0]->ndim != 4) {
        char buf[64];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "needs a 4-axis bottom (N x C x H x W), got %s",
                              mtl_tensor_shape_str(l->bottoms[0], buf, sizeof(buf)));
    }
    lrn_state *s = mtl_calloc_or_fail(1, sizeof(*s), err, "LRN state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    s->size = (int)size;
    s->region = region;
    s->alpha = (float)alpha;
    s->beta = (float)beta;
    s->k = (float)k;
    return MTL_OK;
}

static mtl_status lrn_reshape(mtl_layer *l, mtl_error *err)
{
    lrn_state *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    if (x->ndim != 4) {
        char buf[64];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "needs a 4-axis bottom (N x C x H x W), got %s",
                              mtl_tensor_shape_str(x, buf, sizeof(buf)));
    }
    s->num = x->shape[0];
    s->channels = x->shape[1];
    s->height = x->shape[2];
    s->width = x->shape[3];
    MTL_TRY(scratch_reserve(l, &s->scale, x->count, err));
    MTL_TRY(scratch_reserve(l, &s->ratio, x->count, err));
    return mtl_tensor_reshape_like(l->tops[0], x, err);
}

/* out[n,c,h,w] = sum of v over the window around (n,c,h,w): channels c +- (size-1)/2 across, or the
 * size x size square within; v is (N, C, H, W), windows clipped at the edges. */
static void lrn_window_sums(const lrn_state *s, const float *v, float *out, int square)
{
    int64_t channels = s->channels, height = s->height, width = s->width, plane = height * width;
    int64_t half = (s->size - 1) / 2, planes = s->num * channels;
#pragma omp parallel for if (planes * plane >= NORM_PARALLEL_MIN) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        int64_t n = p / channels, c = p % channels;
        float *o = out + p * plane;
        if (s->region == LRN_ACROSS_CHANNELS) {
            int64_t c0 = c - half < 0 ? 0 : c - half, c1 = c + half >= channels ? channels - 1 : c + half;
            for (int64_t i = 0; i < plane; i++) {
                double sum = 0;
                for (int64_t cc = c0; cc <= c1; cc++) {
                    float e = v[(n * channels + cc) * plane + i];
                    sum += square ? (double)e * e : e;
                }
                o[i] = (float)sum;
            }
        } else {
            const float *vp = v + p * plane;
            for (int64_t h = 0; h < height; h++)
                for (int64_t w = 0; w < width; w++) {
                    int64_t h0 = h - half < 0 ? 0 : h - half, h1 = h + half >= height ? height - 1 : h + half;
                    int64_t w0 = w - half < 0 ? 0 : w - half, w1 = w + half >= width ? width - 1 : w + half;
                    double sum = 0;
                    for (int64_t hh = h0; hh <= h1; hh++)
                        for (int64_t ww = w0; ww <= w1; ww++) {
                            float e = vp[hh * width + ww];
                            sum += square ? (double)e * e : e;
                        }
                    o[h * width + w] = (float)sum;
                }
        }
    }
}

/* base = shift + coef * window sum of x^2, as the two regions define them */
static void lrn_coefficients(const lrn_state *s, float *shift, float *coef)
{
    if (s->region == LRN_ACROSS_CHANNELS) {
        *shift = s->k;
        *coef = s->alpha / (float)s->size;
    } else {
        *shift = 1.0f;
        *coef = s->alpha / ((float)s->size * (float)s->size);
    }
}

static mtl_status lrn_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    lrn_state *s = l->priv;
    const float *x = l->bottoms[0]->data; /* (N, C, H, W) */
    float *y = l->tops[0]->data;          /* (N, C, H, W) */
    float *base = s->scale.data;          /* (N, C, H, W) */
    int64_t count = l->bottoms[0]->count;
    float shift, coef;
    lrn_coefficients(s, &shift, &coef);
    lrn_window_sums(s, x, base, 1);
#pragma omp parallel for if (count >= NORM_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < count; i++) {
        base[i] = shift + coef * base[i];
        y[i] = x[i] * powf(base[i], -s->beta);
    }
    return MTL_OK;
}

/* With b_i = shift + coef * sum_{j in W(i)} x_j^2 and y_i = x_i b_i^-beta (windows symmetric):
 * dx_j = dy_j b_j^-beta - 2 coef beta x_j sum_{i in W(j)} dy_i y_i / b_i. */
static void lrn_backward(mtl_layer *l)
{
    if (!l->propagate_down[0])
        return;
    lrn_state *s = l->priv;
    const float *x = l->bottoms[0]->data, *y = l->tops[0]->data, *dy = l->tops[0]->grad;
    const float *base = s->scale.data;
    float *ratio = s->ratio.data, *dx = l->bottoms[0]->grad;
    int64_t count = l->bottoms[0]->count;
    float shift, coef;
    lrn_coefficients(s, &shift, &coef);
    (void)shift;
#pragma omp parallel for if (count >= NORM_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < count; i++)
        ratio[i] = dy[i] * y[i] / base[i];
    /* window sums of the ratio land in dx, then each value is finished in place */
    lrn_window_sums(s, ratio, dx, 0);
    float factor = 2.0f * coef * s->beta;
#pragma omp parallel for if (count >= NORM_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < count; i++)
        dx[i] = dy[i] * powf(base[i], -s->beta) - factor * x[i] * dx[i];
}

static int64_t lrn_flops(const mtl_layer *l)
{
    const lrn_state *s = l->priv;
    int64_t window = s->region == LRN_ACROSS_CHANNELS ? s->size : (int64_t)s->size * s->size;
    return l->tops[0]->count * (2 * window + 4);
}

static void lrn_release(mtl_layer *l)
{
    lrn_state *s = l->priv;
    if (s) {
        mtl_aligned_free(s->scale.data);
        mtl_aligned_free(s->ratio.data);
    }
    free(s);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_batch_norm = {
    .type = "BatchNorm", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1, .allows_in_place = 1,
    .setup = batch_norm_setup, .reshape = batch_norm_reshape, .forward = batch_norm_forward,
    .backward = batch_norm_backward, .release = batch_norm_release,
};
const mtl_layer_ops mtl_layer_scale = {
    .type = "Scale", .min_bottoms = 1, .max_bottoms = 2, .min_tops = 1, .max_tops = 1, .allows_in_place = 1,
    .setup = scale_setup, .reshape = scale_reshape, .forward = scale_forward, .backward = scale_backward,
    .release = scale_release,
};
const mtl_layer_ops mtl_layer_bias = {
    .type = "Bias", .min_bottoms = 1, .max_bottoms = 2, .min_tops = 1, .max_tops = 1, .allows_in_place = 1,
    .setup = bias_setup, .reshape = bias_reshape, .forward = bias_forward, .backward = bias_backward,
    .release = bias_release,
};
const mtl_layer_ops mtl_layer_lrn = {
    .type = "LRN", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1,
    .setup = lrn_setup, .reshape = lrn_reshape, .forward = lrn_forward, .backward = lrn_backward,
    .flops = lrn_flops, .release = lrn_release,
};
