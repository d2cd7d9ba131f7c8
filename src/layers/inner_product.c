/* InnerProduct (fully connected) with Caffe's semantics: axes from `axis` on are flattened into
 * K inputs, weights are num_output x K (K x num_output with transpose). Every product is one GEMM
 * split over the thread team in blocks of output rows, so no sums depend on the thread count. */
#include <limits.h>
#include <stdlib.h>

#include "core/filler.h"
#include "kernels/cpu/cpu_kernels.h"
#include "layers/layers.h"

typedef struct ip_state {
    int num_output, bias_term, transpose;
    int axis;   /* as given; made non-negative against the bottom in reshape */
    int64_t k;  /* inputs per sample */
    int64_t m;  /* samples: product of the axes before `axis` */
} ip_state;

static mtl_status ip_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p = NULL;
    MTL_TRY(mtl_layer_param_message(l, "inner_product_param", &p, err));
    ip_state *s = mtl_calloc_or_fail(1, sizeof(*s), err, "InnerProduct state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;

    int64_t num_output, axis;
    MTL_TRY(mtl_cfg_int_range(p, "num_output", 0, 0, INT_MAX, &num_output, err));
    MTL_TRY(mtl_cfg_bool(p, "bias_term", 1, &s->bias_term, err));
    MTL_TRY(mtl_cfg_int(p, "axis", 1, &axis, err));
    MTL_TRY(mtl_cfg_bool(p, "transpose", 0, &s->transpose, err));
    mtl_cfg_node *weight_filler = NULL, *bias_filler = NULL;
    MTL_TRY(mtl_cfg_message(p, "weight_filler", &weight_filler, err));
    MTL_TRY(mtl_cfg_message(p, "bias_filler", &bias_filler, err));
    if (num_output == 0)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "inner_product_param { num_output } is required (a positive number of outputs)");
    s->num_output = (int)num_output;

    const mtl_tensor *x = l->bottoms[0];
    int ax = axis < INT_MIN || axis > INT_MAX ? -1 : mtl_tensor_axis(x, (int)axis);
    if (ax < 0)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "axis %lld is out of range for a bottom with %d axes",
                              (long long)axis, x->ndim);
    s->axis = (int)axis;
    s->k = mtl_tensor_count_range(x, ax, x->ndim);
    if (s->k <= 0 || s->k > INT_MAX)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "%lld inputs per sample (from axis %d on): need 1 to %d",
                              (long long)s->k, ax, INT_MAX);
    int wshape[2] = {s->num_output, (int)s->k};
    if (s->transpose) {
        wshape[0] = (int)s->k;
        wshape[1] = s->num_output;
    }
    MTL_TRY(mtl_layer_add_param(l, 2, wshape, weight_filler, err));
    if (s->bias_term)
        MTL_TRY(mtl_layer_add_param(l, 1, &s->num_output, bias_filler, err));
    else
        MTL_TRY(mtl_filler_check(bias_filler, err));
    mtl_cpu_init();
    return MTL_OK;
}

static mtl_status ip_reshape(mtl_layer *l, mtl_error *err)
{
    ip_state *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    char have[64];
    int ax = mtl_tensor_axis(x, s->axis);
    if (ax < 0)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "axis %d is out of range for the bottom's shape %s", s->axis,
                              mtl_tensor_shape_str(x, have, sizeof(have)));
    int64_t k = mtl_tensor_count_range(x, ax, x->ndim);
    if (k != s->k)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "bottom %s has %lld values per sample from axis %d on, the weights take %lld",
                              mtl_tensor_shape_str(x, have, sizeof(have)), (long long)k, ax, (long long)s->k);
    s->m = mtl_tensor_count_range(x, 0, ax);
    if (s->m > INT_MAX)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "%lld samples: at most %d", (long long)s->m, INT_MAX);
    int shape[MTL_MAX_AXES];
    for (int i = 0; i < ax; i++)
        shape[i] = x->shape[i];
    shape[ax] = s->num_output;
    return mtl_tensor_reshape(l->tops[0], ax + 1, shape, err);
}

static mtl_status ip_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    const ip_state *s = l->priv;
    const int m = (int)s->m, n = s->num_output, k = (int)s->k;
    const float *x = l->bottoms[0]->data; /* (M, K) */
    const float *w = l->params[0]->data;  /* (N, K), or (K, N) transposed */
    float *y = l->tops[0]->data;          /* (M, N) */
    float beta = 0.0f;
    if (s->bias_term) {
        const float *bias = l->params[1]->data;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                y[(int64_t)i * n + j] = bias[j];
        beta = 1.0f;
    }
    mtl_cpu_sgemm(0, !s->transpose, m, n, k, 1.0f, x, k, w, s->transpose ? n : k, beta, y, n);
    return MTL_OK;
}

static void ip_backward(mtl_layer *l)
{
    const ip_state *s = l->priv;
    const int m = (int)s->m, n = s->num_output, k = (int)s->k;
    const float *x = l->bottoms[0]->data; /* (M, K) */
    const float *dy = l->tops[0]->grad;   /* (M, N) */
    const float *w = l->params[0]->data;
    if (mtl_layer_param_needs_grad(l, 0)) {
        float *dw = l->params[0]->grad;
        if (s->transpose) /* dw (K, N) += x^T dy */
            mtl_cpu_sgemm(1, 0, k, n, m, 1.0f, x, k, dy, n, 1.0f, dw, n);
        else              /* dw (N, K) += dy^T x */
            mtl_cpu_sgemm(1, 0, n, k, m, 1.0f, dy, n, x, k, 1.0f, dw, k);
    }
    if (s->bias_term && mtl_layer_param_needs_grad(l, 1)) {
        float *db = l->params[1]->grad; /* (N) += column sums of dy */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                db[j] += dy[(int64_t)i * n + j];
    }
    if (l->propagate_down[0]) /* dx (M, K) = dy w, or dy w^T transposed */
        mtl_cpu_sgemm(0, s->transpose, m, k, n, 1.0f, dy, n, w, s->transpose ? n : k, 0.0f, l->bottoms[0]->grad, k);
}

static void ip_release(mtl_layer *l)
{
    free(l->priv);
    l->priv = NULL;
}

static int64_t ip_flops(const mtl_layer *l)
{
    const ip_state *s = l->priv;
    return 2 * s->m * s->k * s->num_output;
}

const mtl_layer_ops mtl_layer_inner_product = {
    .type = "InnerProduct",
    .min_bottoms = 1,
    .max_bottoms = 1,
    .min_tops = 1,
    .max_tops = 1,
    .setup = ip_setup,
    .reshape = ip_reshape,
    .forward = ip_forward,
    .backward = ip_backward,
    .release = ip_release,
    .flops = ip_flops,
};
