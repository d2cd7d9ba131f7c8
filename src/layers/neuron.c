/* Elementwise neuron layers with Caffe's semantics: ReLU (leaky), PReLU (learned slopes), Sigmoid,
 * TanH and Dropout (plus an mtl extension: whole-channel dropout). All may run in place; the ones
 * whose backward needs the input (PReLU, ReLU with a negative slope) then keep a copy of it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers/layers.h"

/* below this many values a loop is not worth waking the thread team */
#define NEURON_PARALLEL_MIN 32768

static int in_place(const mtl_layer *l) { return l->tops[0] == l->bottoms[0]; }

static mtl_status neuron_reshape(mtl_layer *l, mtl_error *err)
{
    if (in_place(l))
        return MTL_OK;
    return mtl_tensor_reshape_like(l->tops[0], l->bottoms[0], err);
}

/* A float buffer that only grows (reshape is called before every forward). */
typedef struct scratch {
    float *data;
    int64_t capacity;
} scratch;

static mtl_status scratch_reserve(const mtl_layer *l, scratch *s, int64_t n, mtl_error *err)
{
    if (n <= s->capacity)
        return MTL_OK;
    float *p = mtl_aligned_alloc((size_t)n * sizeof(float));
    if (!p)
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %lld scratch values", (long long)n);
    mtl_aligned_free(s->data);
    s->data = p;
    s->capacity = n;
    return MTL_OK;
}

/* Sigmoid and TanH: their param message holds only `engine`. */
static mtl_status read_engine_only(mtl_layer *l, const char *message, mtl_error *err)
{
    mtl_cfg_node *p = NULL;
    MTL_TRY(mtl_layer_param_message(l, message, &p, err));
    mtl_cfg_accept(p, "engine"); /* CAFFE / CUDNN pick an implementation; mtl has one */
    return MTL_OK;
}

/* ---- ReLU: y = max(x, 0) + negative_slope * min(x, 0) ---- */

typedef struct relu_state {
    float slope;
    scratch input; /* in place with a negative slope: the sign of y no longer tells the sign of x */
} relu_state;

static mtl_status relu_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p = NULL;
    double slope;
    MTL_TRY(mtl_layer_param_message(l, "relu_param", &p, err));
    MTL_TRY(mtl_cfg_float(p, "negative_slope", 0.0, &slope, err));
    mtl_cfg_accept(p, "engine");
    relu_state *s = mtl_calloc_or_fail(1, sizeof(*s), err, "ReLU state");
    if (!s)
        return MTL_ERR_NOMEM;
    s->slope = (float)slope;
    l->priv = s;
    return MTL_OK;
}

static int relu_keeps_input(const mtl_layer *l)
{
    const relu_state *s = l->priv;
    return in_place(l) && s->slope < 0;
}

static mtl_status relu_reshape(mtl_layer *l, mtl_error *err)
{
    relu_state *s = l->priv;
    if (relu_keeps_input(l))
        MTL_TRY(scratch_reserve(l, &s->input, l->bottoms[0]->count, err));
    return neuron_reshape(l, err);
}

static mtl_status relu_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    relu_state *s = l->priv;
    const float *x = l->bottoms[0]->data; /* (count) */
    float *y = l->tops[0]->data;          /* (count), may be x */
    int64_t n = l->bottoms[0]->count;
    float slope = s->slope;
    if (relu_keeps_input(l))
        memcpy(s->input.data, x, (size_t)n * sizeof(float));
#pragma omp parallel for if (n >= NEURON_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0 ? x[i] : slope * x[i];
    return MTL_OK;
}

static void relu_backward(mtl_layer *l)
{
    if (!l->propagate_down[0])
        return;
    relu_state *s = l->priv;
    const float *x = l->bottoms[0]->data;
    if (relu_keeps_input(l))
        x = s->input.data;
    else if (in_place(l))
        x = l->tops[0]->data; /* slope >= 0: y > 0 exactly where x > 0, so y stands in for x */
    const float *dy = l->tops[0]->grad; /* (count) */
    float *dx = l->bottoms[0]->grad;    /* (count), may be dy */
    int64_t n = l->bottoms[0]->count;
    float slope = s->slope;
#pragma omp parallel for if (n >= NEURON_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        dx[i] = x[i] > 0 ? dy[i] : slope * dy[i];
}

static void relu_release(mtl_layer *l)
{
    relu_state *s = l->priv;
    if (s)
        mtl_aligned_free(s->input.data);
    free(s);
    l->priv = NULL;
}

/* ---- Sigmoid and TanH: backward from the output alone, so in place costs nothing ---- */

static mtl_status sigmoid_setup(mtl_layer *l, mtl_error *err) { return read_engine_only(l, "sigmoid_param", err); }

static mtl_status sigmoid_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    const float *x = l->bottoms[0]->data;
    float *y = l->tops[0]->data;
    int64_t n = l->bottoms[0]->count;
    /* Caffe's form: finite for every x, where 1 / (1 + exp(-x)) overflows exp for x << 0 */
#pragma omp parallel for if (n >= NEURON_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = 0.5f * tanhf(0.5f * x[i]) + 0.5f;
    return MTL_OK;
}

static void sigmoid_backward(mtl_layer *l)
{
    if (!l->propagate_down[0])
        return;
    const float *y = l->tops[0]->data, *dy = l->tops[0]->grad;
    float *dx = l->bottoms[0]->grad;
    int64_t n = l->bottoms[0]->count;
#pragma omp parallel for if (n >= NEURON_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

static mtl_status tanh_setup(mtl_layer *l, mtl_error *err) { return read_engine_only(l, "tanh_param", err); }

static mtl_status tanh_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    const float *x = l->bottoms[0]->data;
    float *y = l->tops[0]->data;
    int64_t n = l->bottoms[0]->count;
#pragma omp parallel for if (n >= NEURON_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        y[i] = tanhf(x[i]);
    return MTL_OK;
}

static void tanh_backward(mtl_layer *l)
{
    if (!l->propagate_down[0])
        return;
    const float *y = l->tops[0]->data, *dy = l->tops[0]->grad;
    float *dx = l->bottoms[0]->grad;
    int64_t n = l->bottoms[0]->count;
#pragma omp parallel for if (n >= NEURON_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

/* ---- PReLU: y = max(x, 0) + a_c * min(x, 0), one learned slope per channel (or one shared) ---- */

typedef struct prelu_state {
    int channel_shared;
    mtl_cfg_node *default_filler; /* parsed "constant 0.25" when the prototxt gives none */
    scratch input;                /* in place: x, needed by both gradients */
    double *channel_sums;         /* (C) slope gradient partial sums */
    int64_t sums_capacity;
    int64_t outer, channels, inner;
} prelu_state;

static mtl_status prelu_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p = NULL, *filler = NULL;
    int shared;
    MTL_TRY(mtl_layer_param_message(l, "prelu_param", &p, err));
    MTL_TRY(mtl_cfg_message(p, "filler", &filler, err));
    MTL_TRY(mtl_cfg_bool(p, "channel_shared", 0, &shared, err));
    const mtl_tensor *x = l->bottoms[0];
    if (x->ndim < 2) {
        char buf[64];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "needs a bottom with at least 2 axes (N x C x ...), got %s",
                              mtl_tensor_shape_str(x, buf, sizeof(buf)));
    }
    prelu_state *s = mtl_calloc_or_fail(1, sizeof(*s), err, "PReLU state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    s->channel_shared = shared;
    if (!filler) {
        MTL_TRY(mtl_cfg_parse_string("type: \"constant\" value: 0.25", "<PReLU default filler>",
                                     &s->default_filler, err));
        filler = s->default_filler;
    }
    int channels = x->shape[1];
    /* shared: a blob with no axes, as Caffe declares it, so Caffe weights load unchanged */
    return mtl_layer_add_param(l, shared ? 0 : 1, &channels, filler, err);
}

static mtl_status prelu_reshape(mtl_layer *l, mtl_error *err)
{
    prelu_state *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    if (x->ndim < 2 || (!s->channel_shared && x->shape[1] != l->params[0]->count)) {
        char buf[64];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bottom %s does not fit the %lld slopes it was set up for",
                              mtl_tensor_shape_str(x, buf, sizeof(buf)), (long long)l->params[0]->count);
    }
    s->outer = x->shape[0];
    s->channels = x->shape[1];
    s->inner = mtl_tensor_count_range(x, 2, x->ndim);
    if (in_place(l))
        MTL_TRY(scratch_reserve(l, &s->input, x->count, err));
    if (s->channels > s->sums_capacity) {
        double *sums = malloc((size_t)s->channels * sizeof(double));
        if (!sums)
            return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory");
        free(s->channel_sums);
        s->channel_sums = sums;
        s->sums_capacity = s->channels;
    }
    return neuron_reshape(l, err);
}

static mtl_status prelu_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    prelu_state *s = l->priv;
    const float *x = l->bottoms[0]->data; /* (N, C, inner) */
    float *y = l->tops[0]->data;          /* (N, C, inner), may be x */
    const float *a = l->params[0]->data;  /* (C) or (1) */
    int64_t planes = s->outer * s->channels, inner = s->inner, n = l->bottoms[0]->count;
    if (in_place(l))
        memcpy(s->input.data, x, (size_t)n * sizeof(float));
#pragma omp parallel for if (n >= NEURON_PARALLEL_MIN) schedule(static)
    for (int64_t p = 0; p < planes; p++) {
        float slope = a[s->channel_shared ? 0 : p % s->channels];
        for (int64_t i = p * inner; i < (p + 1) * inner; i++)
            y[i] = x[i] > 0 ? x[i] : slope * x[i];
    }
    return MTL_OK;
}

static void prelu_backward(mtl_layer *l)
{
    prelu_state *s = l->priv;
    const float *x = in_place(l) ? s->input.data : l->bottoms[0]->data; /* (N, C, inner) */
    const float *dy = l->tops[0]->grad;                                  /* (N, C, inner) */
    float *dx = l->bottoms[0]->grad;                                     /* (N, C, inner), may be dy */
    const float *a = l->params[0]->data;
    int64_t outer = s->outer, channels = s->channels, inner = s->inner, n = l->bottoms[0]->count;

    /* slope gradients first: in place, dx overwrites dy */
    if (mtl_layer_param_needs_grad(l, 0)) {
        float *da = l->params[0]->grad;
        double *sums = s->channel_sums;
        /* each channel summed in a fixed order, then the channels in order: the same bits for any
         * thread count */
#pragma omp parallel for if (n >= NEURON_PARALLEL_MIN) schedule(static)
        for (int64_t c = 0; c < channels; c++) {
            double sum = 0;
            for (int64_t o = 0; o < outer; o++) {
                int64_t base = (o * channels + c) * inner;
                for (int64_t i = base; i < base + inner; i++)
                    if (x[i] <= 0)
                        sum += (double)dy[i] * x[i];
            }
            sums[c] = sum;
        }
        if (s->channel_shared) {
            double total = 0;
            for (int64_t c = 0; c < channels; c++)
                total += sums[c];
            da[0] += (float)total;
        } else {
            for (int64_t c = 0; c < channels; c++)
                da[c] += (float)sums[c];
        }
    }
    if (l->propagate_down[0]) {
#pragma omp parallel for if (n >= NEURON_PARALLEL_MIN) schedule(static)
        for (int64_t p = 0; p < outer * channels; p++) {
            float slope = a[s->channel_shared ? 0 : p % channels];
            for (int64_t i = p * inner; i < (p + 1) * inner; i++)
                dx[i] = x[i] > 0 ? dy[i] : slope * dy[i];
        }
    }
}

static void prelu_release(mtl_layer *l)
{
    prelu_state *s = l->priv;
    if (s) {
        mtl_aligned_free(s->input.data);
        free(s->channel_sums);
        mtl_cfg_free(s->default_filler);
    }
    free(s);
    l->priv = NULL;
}

/* ---- Dropout ----
 * TRAIN: each value (or, with the mtl extension `channel_wise: true`, each whole N x C channel, as
 * PyTorch's Dropout2d) is kept with probability 1 - dropout_ratio. scale_train true (the default)
 * scales kept values by 1 / (1 - ratio) at TRAIN and is the identity at TEST; scale_train false
 * leaves TRAIN unscaled and multiplies by 1 - ratio at TEST, as Caffe does. The mask comes from
 * l->rng drawn serially, so a seed gives the same masks whatever the thread count. */

typedef struct dropout_state {
    float ratio;
    int scale_train, channel_wise;
    uint8_t *mask; /* TRAIN: 1 kept, 0 dropped; per value, or per (n, c) when channel_wise */
    int64_t mask_capacity, mask_count, inner;
} dropout_state;

static mtl_status dropout_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p = NULL;
    double ratio;
    int scale_train, channel_wise;
    MTL_TRY(mtl_layer_param_message(l, "dropout_param", &p, err));
    MTL_TRY(mtl_cfg_float(p, "dropout_ratio", 0.5, &ratio, err));
    MTL_TRY(mtl_cfg_bool(p, "scale_train", 1, &scale_train, err));
    MTL_TRY(mtl_cfg_bool(p, "channel_wise", 0, &channel_wise, err)); /* mtl extension, see above */
    if (!(ratio >= 0.0 && ratio < 1.0))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "dropout_ratio must be in [0, 1), got %g", ratio);
    if (channel_wise && l->bottoms[0]->ndim < 2)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "channel_wise dropout needs a bottom of N x C x ..., got %d axes",
                              l->bottoms[0]->ndim);
    if (l->phase == MTL_PHASE_TRAIN && !l->rng)
        return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT, "needs a random generator at TRAIN");
    dropout_state *s = mtl_calloc_or_fail(1, sizeof(*s), err, "Dropout state");
    if (!s)
        return MTL_ERR_NOMEM;
    s->ratio = (float)ratio;
    s->scale_train = scale_train;
    s->channel_wise = channel_wise;
    l->priv = s;
    return MTL_OK;
}

static mtl_status dropout_reshape(mtl_layer *l, mtl_error *err)
{
    dropout_state *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    if (s->channel_wise && x->ndim < 2)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "channel_wise dropout needs a bottom of N x C x ..., got %d axes",
                              x->ndim);
    s->inner = s->channel_wise ? mtl_tensor_count_range(x, 2, x->ndim) : 1;
    s->mask_count = s->channel_wise ? (int64_t)x->shape[0] * x->shape[1] : x->count;
    if (l->phase == MTL_PHASE_TRAIN && s->mask_count > s->mask_capacity) {
        uint8_t *m = malloc((size_t)s->mask_count);
        if (!m)
            return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for the dropout mask");
        free(s->mask);
        s->mask = m;
        s->mask_capacity = s->mask_count;
    }
    return neuron_reshape(l, err);
}

/* The factor kept values get: TRAIN 1/(1-p) or 1; TEST 1 or 1-p (see above). */
static float dropout_factor(const mtl_layer *l)
{
    const dropout_state *s = l->priv;
    if (l->phase == MTL_PHASE_TRAIN)
        return s->scale_train ? 1.0f / (1.0f - s->ratio) : 1.0f;
    return s->scale_train ? 1.0f : 1.0f - s->ratio;
}

/* out = in * factor * mask (mask NULL at TEST): forward on data, backward on gradients. */
static void dropout_apply(const mtl_layer *l, const float *in, float *out)
{
    const dropout_state *s = l->priv;
    const uint8_t *mask = l->phase == MTL_PHASE_TRAIN ? s->mask : NULL;
    float factor = dropout_factor(l);
    int64_t n = l->bottoms[0]->count, inner = s->inner;
    if (!mask) {
        if (factor == 1.0f) {
            if (in != out)
                memcpy(out, in, (size_t)n * sizeof(float));
            return;
        }
#pragma omp parallel for if (n >= NEURON_PARALLEL_MIN) schedule(static)
        for (int64_t i = 0; i < n; i++)
            out[i] = in[i] * factor;
        return;
    }
#pragma omp parallel for if (n >= NEURON_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++)
        out[i] = mask[i / inner] ? in[i] * factor : 0.0f;
}

static mtl_status dropout_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    dropout_state *s = l->priv;
    if (l->phase == MTL_PHASE_TRAIN)
        for (int64_t i = 0; i < s->mask_count; i++)
            s->mask[i] = mtl_rng_uniform(l->rng) >= s->ratio;
    dropout_apply(l, l->bottoms[0]->data, l->tops[0]->data);
    return MTL_OK;
}

static void dropout_backward(mtl_layer *l)
{
    if (l->propagate_down[0])
        dropout_apply(l, l->tops[0]->grad, l->bottoms[0]->grad);
}

static void dropout_release(mtl_layer *l)
{
    dropout_state *s = l->priv;
    if (s)
        free(s->mask);
    free(s);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_relu = {
    .type = "ReLU", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1, .allows_in_place = 1,
    .setup = relu_setup, .reshape = relu_reshape, .forward = relu_forward, .backward = relu_backward,
    .release = relu_release,
};
const mtl_layer_ops mtl_layer_prelu = {
    .type = "PReLU", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1, .allows_in_place = 1,
    .setup = prelu_setup, .reshape = prelu_reshape, .forward = prelu_forward, .backward = prelu_backward,
    .release = prelu_release,
};
const mtl_layer_ops mtl_layer_sigmoid = {
    .type = "Sigmoid", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1, .allows_in_place = 1,
    .setup = sigmoid_setup, .reshape = neuron_reshape, .forward = sigmoid_forward, .backward = sigmoid_backward,
};
const mtl_layer_ops mtl_layer_tanh = {
    .type = "TanH", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1, .allows_in_place = 1,
    .setup = tanh_setup, .reshape = neuron_reshape, .forward = tanh_forward, .backward = tanh_backward,
};
const mtl_layer_ops mtl_layer_dropout = {
    .type = "Dropout", .min_bottoms = 1, .max_bottoms = 1, .min_tops = 1, .max_tops = 1, .allows_in_place = 1,
    .setup = dropout_setup, .reshape = dropout_reshape, .forward = dropout_forward, .backward = dropout_backward,
    .release = dropout_release,
};
