/* Pooling with Caffe's semantics: MAX (optionally with the argmax as a second top) and AVE,
 * global pooling, padding, and Caffe's CEIL/FLOOR output sizes including its clip of a last
 * window that would start in the padding. Threads take the N x C planes a few at a time. */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels/cpu/cpu_kernels.h"
#include "layers/layers.h"

/* below this many input values a parallel loop is not worth waking the thread team */
#define POOL_PARALLEL_MIN 16384
/* planes a thread takes at a time: results do not depend on who pools which plane, so threads
 * take work as they come free */
#define POOL_PLANES_PER_TASK 32

enum { POOL_MAX, POOL_AVE, POOL_STOCHASTIC };
static const char *const pool_methods[] = {"MAX", "AVE", "STOCHASTIC"};
enum { ROUND_CEIL, ROUND_FLOOR };
static const char *const round_modes[] = {"CEIL", "FLOOR"};

typedef struct pool_state {
    int method, round_mode, global;
    int kernel[2], pad[2], stride[2]; /* (height, width); kernel set by reshape when global */
    mtl_pool_geom geom;
    int32_t *mask;                    /* MAX: argmax per top value */
    int64_t mask_capacity;
} pool_state;

/* A size given as `name` or as name_h and name_w (Caffe: one form or the other, the pair whole). */
static mtl_status read_pair(mtl_layer *l, mtl_cfg_node *p, const char *name, const char *name_h,
                            const char *name_w, int def, int min, int out[2], int *given, mtl_error *err)
{
    int has = mtl_cfg_count(p, name) > 0;
    int has_h = mtl_cfg_count(p, name_h) > 0, has_w = mtl_cfg_count(p, name_w) > 0;
    *given = has || has_h || has_w;
    if (has && (has_h || has_w))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "give either %s or %s and %s, not both", name, name_h, name_w);
    if (has_h != has_w)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%s and %s must be given together", name_h, name_w);
    int64_t v, h, w;
    MTL_TRY(mtl_cfg_int_range(p, name, def, min, INT_MAX, &v, err));
    MTL_TRY(mtl_cfg_int_range(p, name_h, v, min, INT_MAX, &h, err));
    MTL_TRY(mtl_cfg_int_range(p, name_w, v, min, INT_MAX, &w, err));
    out[0] = (int)h;
    out[1] = (int)w;
    return MTL_OK;
}

static mtl_status pool_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p = NULL;
    MTL_TRY(mtl_layer_param_message(l, "pooling_param", &p, err));
    pool_state *s = mtl_calloc_or_fail(1, sizeof(*s), err, "Pooling state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;

    int kernel_given, given;
    MTL_TRY(mtl_cfg_enum(p, "pool", pool_methods, 3, POOL_MAX, &s->method, err));
    MTL_TRY(mtl_cfg_bool(p, "global_pooling", 0, &s->global, err));
    MTL_TRY(mtl_cfg_enum(p, "round_mode", round_modes, 2, ROUND_CEIL, &s->round_mode, err));
    MTL_TRY(read_pair(l, p, "kernel_size", "kernel_h", "kernel_w", 0, 1, s->kernel, &kernel_given, err));
    MTL_TRY(read_pair(l, p, "pad", "pad_h", "pad_w", 0, 0, s->pad, &given, err));
    MTL_TRY(read_pair(l, p, "stride", "stride_h", "stride_w", 1, 1, s->stride, &given, err));
    mtl_cfg_accept(p, "engine"); /* CAFFE / CUDNN: mtl has one engine */

    if (s->method == POOL_STOCHASTIC)
        return mtl_layer_fail(l, err, MTL_ERR_UNSUPPORTED, "STOCHASTIC pooling is not supported (MAX or AVE are)");
    if (s->global) {
        if (kernel_given)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                                  "global_pooling takes the whole plane: kernel_size, kernel_h and kernel_w must not "
                                  "be given");
        if (s->pad[0] || s->pad[1] || s->stride[0] != 1 || s->stride[1] != 1)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "global_pooling allows only pad 0 and stride 1");
    } else {
        if (!kernel_given)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                                  "kernel_size (or kernel_h and kernel_w, or global_pooling) is required");
        if (s->pad[0] >= s->kernel[0] || s->pad[1] >= s->kernel[1])
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "pad %dx%d must be smaller than the kernel %dx%d", s->pad[0],
                                  s->pad[1], s->kernel[0], s->kernel[1]);
    }
    if (l->n_tops > 1 && s->method != POOL_MAX)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "only MAX pooling has a second top (the argmax mask)");
    return MTL_OK;
}

/* Caffe's pooled size: CEIL or FLOOR of (in + 2 pad - kernel) / stride, plus one, minus one more
 * if the last window would start in the padding (Caffe checks that only with padding; without
 * it, it can only happen when the stride exceeds the kernel, where Caffe reads outside the
 * plane). -1 when the kernel does not fit the padded input. */
static int pooled_size(int in, int kernel, int pad, int stride, int round_mode)
{
    int64_t room = (int64_t)in + 2 * (int64_t)pad - kernel;
    if (room < 0)
        return -1;
    int64_t out = (round_mode == ROUND_CEIL ? (room + stride - 1) / stride : room / stride) + 1;
    if ((out - 1) * stride >= (int64_t)in + pad)
        out--;
    return (int)out;
}

static mtl_status pool_reshape(mtl_layer *l, mtl_error *err)
{
    pool_state *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    char have[64];
    if (x->ndim != 4)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bottom has shape %s: 4 axes (N, C, H, W) wanted",
                              mtl_tensor_shape_str(x, have, sizeof(have)));
    int height = x->shape[2], width = x->shape[3];
    if ((int64_t)height * width > INT32_MAX) /* the argmax mask holds in-plane indices */
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "planes of %dx%d values are too large", height, width);
    if (s->global) {
        s->kernel[0] = height;
        s->kernel[1] = width;
    }
    int out_h = pooled_size(height, s->kernel[0], s->pad[0], s->stride[0], s->round_mode);
    int out_w = pooled_size(width, s->kernel[1], s->pad[1], s->stride[1], s->round_mode);
    if (out_h <= 0 || out_w <= 0)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "kernel %dx%d is larger than the padded input %dx%d (%dx%d plus pad %dx%d)", s->kernel[0],
                              s->kernel[1], height + 2 * s->pad[0], width + 2 * s->pad[1], height, width, s->pad[0],
                              s->pad[1]);
    s->geom = (mtl_pool_geom){.height = height,
                              .width = width,
                              .kernel_h = s->kernel[0],
                              .kernel_w = s->kernel[1],
                              .pad_h = s->pad[0],
                              .pad_w = s->pad[1],
                              .stride_h = s->stride[0],
                              .stride_w = s->stride[1],
                              .out_h = out_h,
                              .out_w = out_w};
    for (int i = 0; i < l->n_tops; i++)
        MTL_TRY(mtl_tensor_reshape4(l->tops[i], x->shape[0], x->shape[1], out_h, out_w, err));
    if (s->method == POOL_MAX) {
        int64_t need = l->tops[0]->count;
        if (need > s->mask_capacity) {
            int32_t *mask = malloc((size_t)(need ? need : 1) * sizeof(int32_t));
            if (!mask)
                return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for a %lld-value mask", (long long)need);
            free(s->mask);
            s->mask = mask;
            s->mask_capacity = need;
        }
    }
    return MTL_OK;
}

static mtl_status pool_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    pool_state *s = l->priv;
    const mtl_pool_geom *g = &s->geom;
    const int64_t planes = mtl_tensor_count_range(l->bottoms[0], 0, 2);
    const int64_t in_plane = (int64_t)g->height * g->width, out_plane = (int64_t)g->out_h * g->out_w;
    const float *x = l->bottoms[0]->data; /* (N, C, H, W) */
    float *y = l->tops[0]->data;          /* (N, C, out_h, out_w) */
    float *top_mask = l->n_tops > 1 ? l->tops[1]->data : NULL;
    int32_t *mask = s->mask;
    const int method = s->method;
MTL_OMP("omp parallel for schedule(dynamic, POOL_PLANES_PER_TASK) if (planes * in_plane >= POOL_PARALLEL_MIN)")
    for (int64_t i = 0; i < planes; i++) {
        if (method == POOL_MAX)
            mtl_cpu_maxpool_forward(g, x + i * in_plane, y + i * out_plane, mask + i * out_plane,
                                    top_mask ? top_mask + i * out_plane : NULL);
        else
            mtl_cpu_avepool_forward(g, x + i * in_plane, y + i * out_plane);
    }
    return MTL_OK;
}

static void pool_backward(mtl_layer *l)
{
    if (!l->propagate_down[0])
        return;
    pool_state *s = l->priv;
    const mtl_pool_geom *g = &s->geom;
    const int64_t planes = mtl_tensor_count_range(l->bottoms[0], 0, 2);
    const int64_t in_plane = (int64_t)g->height * g->width, out_plane = (int64_t)g->out_h * g->out_w;
    const float *dy = l->tops[0]->grad; /* (N, C, out_h, out_w) */
    float *dx = l->bottoms[0]->grad;    /* (N, C, H, W) */
    const int32_t *mask = s->mask;
    const int method = s->method;
MTL_OMP("omp parallel for schedule(dynamic, POOL_PLANES_PER_TASK) if (planes * in_plane >= POOL_PARALLEL_MIN)")
    for (int64_t i = 0; i < planes; i++) {
        if (method == POOL_MAX)
            mtl_cpu_maxpool_backward(g, dy + i * out_plane, mask + i * out_plane, dx + i * in_plane);
        else
            mtl_cpu_avepool_backward(g, dy + i * out_plane, dx + i * in_plane);
    }
}

static void pool_release(mtl_layer *l)
{
    pool_state *s = l->priv;
    if (s)
        free(s->mask);
    free(s);
    l->priv = NULL;
}

static int64_t pool_flops(const mtl_layer *l)
{
    const pool_state *s = l->priv;
    return l->tops[0]->count * s->kernel[0] * s->kernel[1];
}

const mtl_layer_ops mtl_layer_pooling = {
    .type = "Pooling",
    .min_bottoms = 1,
    .max_bottoms = 1,
    .min_tops = 1,
    .max_tops = 2,
    .setup = pool_setup,
    .reshape = pool_reshape,
    .forward = pool_forward,
    .backward = pool_backward,
    .release = pool_release,
    .flops = pool_flops,
};
