/* Convolution with Caffe's semantics (2D, NCHW, groups, dilation; as many tops as bottoms, all
 * sharing the weights). The batch is cut into a fixed number of chunks of images that threads
 * take as they come free; each image is im2col plus one single-threaded sgemm per group. Weight
 * gradients are summed per chunk and the chunks added in order, so results do not depend on the
 * thread count or on which thread ran which chunk (unless a huge layer caps the chunk count). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "core/filler.h"
#include "kernels/cpu/cpu_kernels.h"
#include "layers/layers.h"

typedef struct conv_state {
    int num_output, bias_term, group;
    int kernel[2], pad[2], stride[2], dilation[2]; /* (height, width) */
    int channels;
    int axis;             /* as given; only the channel axis (1) is supported */
    mtl_conv_geom geom;   /* of one group of one image; set by reshape */
    int m, k, p;          /* per group: outputs, column rows (C/group x kh x kw), output positions */
    int direct;           /* 1x1 kernel, stride 1, no padding: the image is its own column matrix */
    int ones_row;         /* bias as one more column row of ones (so the GEMMs carry it); not direct */
    int dw_transposed;    /* weight gradients as col * dy^T (see choose_dw_form) */
    int threads;          /* team size the column scratch is sized for */
    int chunks;           /* pieces of the batch, each with its own weight-gradient sums */
    int64_t col_count;    /* per thread: the column matrix (k rows, + ones), then dy^T when dw_transposed */
    float *col;           /* threads x col_count */
    int64_t col_capacity;
    float *wext;          /* ones_row: (num_output, k + 1) weights with the bias as last column */
    int64_t wext_capacity;
    float *partial;       /* chunks x groups x m x (k + bias): per-chunk parameter gradients */
    int64_t partial_capacity;
} conv_state;

/* A 2D size given as `name` (once, or once per spatial axis) or as name_h and name_w. */
static mtl_status read_spatial(mtl_layer *l, mtl_cfg_node *p, const char *name, const char *name_h,
                               const char *name_w, int def, int min, int out[2], int *given, mtl_error *err)
{
    int n = mtl_cfg_count(p, name);
    int has_h = name_h && mtl_cfg_count(p, name_h) > 0;
    int has_w = name_w && mtl_cfg_count(p, name_w) > 0;
    *given = n > 0 || has_h || has_w;
    out[0] = out[1] = def;
    if (has_h || has_w) {
        if (n > 0)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "give either %s or %s and %s, not both", name, name_h,
                                  name_w);
        if (!has_h || !has_w)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%s and %s must be given together", name_h, name_w);
        int64_t h, w;
        MTL_TRY(mtl_cfg_int_range(p, name_h, def, min, INT_MAX, &h, err));
        MTL_TRY(mtl_cfg_int_range(p, name_w, def, min, INT_MAX, &w, err));
        out[0] = (int)h;
        out[1] = (int)w;
        return MTL_OK;
    }
    if (n > 2)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "%s is given %d times: give it once, or once per spatial axis (height, width)", name, n);
    for (int i = 0; i < n; i++) {
        int64_t v;
        MTL_TRY(mtl_cfg_int_at(p, name, i, &v, err));
        if (v < min || v > INT_MAX)
            return mtl_cfg_fail(mtl_cfg_field(p, name, i), err, MTL_ERR_CONFIG, "%s %lld is out of range (at least %d)",
                                name, (long long)v, min);
        out[i] = (int)v;
        if (n == 1)
            out[1] = (int)v;
    }
    return MTL_OK;
}

static mtl_status conv_setup(mtl_layer *l, mtl_error *err)
{
    if (l->n_tops != l->n_bottoms)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "takes as many tops as bottoms (%d bottoms, %d tops)",
                              l->n_bottoms, l->n_tops);
    mtl_cfg_node *p = NULL;
    MTL_TRY(mtl_layer_param_message(l, "convolution_param", &p, err));
    conv_state *s = mtl_calloc_or_fail(1, sizeof(*s), err, "Convolution state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;

    int64_t num_output, group, axis;
    int given;
    MTL_TRY(mtl_cfg_int_range(p, "num_output", 0, 0, INT_MAX, &num_output, err));
    MTL_TRY(mtl_cfg_bool(p, "bias_term", 1, &s->bias_term, err));
    MTL_TRY(read_spatial(l, p, "kernel_size", "kernel_h", "kernel_w", 0, 1, s->kernel, &given, err));
    if (!given)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "kernel_size (or kernel_h and kernel_w) is required");
    MTL_TRY(read_spatial(l, p, "pad", "pad_h", "pad_w", 0, 0, s->pad, &given, err));
    MTL_TRY(read_spatial(l, p, "stride", "stride_h", "stride_w", 1, 1, s->stride, &given, err));
    MTL_TRY(read_spatial(l, p, "dilation", NULL, NULL, 1, 1, s->dilation, &given, err));
    MTL_TRY(mtl_cfg_int_range(p, "group", 1, 1, INT_MAX, &group, err));
    MTL_TRY(mtl_cfg_int(p, "axis", 1, &axis, err));
    int force_nd;
    MTL_TRY(mtl_cfg_bool(p, "force_nd_im2col", 0, &force_nd, err)); /* one im2col serves every case */
    mtl_cfg_accept(p, "engine");                                     /* CAFFE / CUDNN: mtl has one engine */
    mtl_cfg_node *weight_filler = NULL, *bias_filler = NULL;
    MTL_TRY(mtl_cfg_message(p, "weight_filler", &weight_filler, err));
    MTL_TRY(mtl_cfg_message(p, "bias_filler", &bias_filler, err));
    if (num_output == 0)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "convolution_param { num_output } is required (a positive number of filters)");

    const mtl_tensor *x = l->bottoms[0];
    if (axis < INT_MIN || axis > INT_MAX || mtl_tensor_axis(x, (int)axis) < 0)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "axis %lld is out of range for a bottom with %d axes",
                              (long long)axis, x->ndim);
    if (mtl_tensor_axis(x, (int)axis) != 1)
        return mtl_layer_fail(l, err, MTL_ERR_UNSUPPORTED,
                              "axis %lld: only channels at axis 1 (N, C, H, W) are supported", (long long)axis);
    if (x->ndim != 4)
        return mtl_layer_fail(l, err, MTL_ERR_UNSUPPORTED,
                              "only 2D convolution is supported: the bottom has %d spatial axes (N, C, H, W wanted)",
                              x->ndim - 2);
    s->num_output = (int)num_output;
    s->group = (int)group;
    s->axis = (int)axis;
    s->channels = x->shape[1];
    if (s->channels % s->group != 0)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "group %d does not divide the %d input channels", s->group,
                              s->channels);
    if (s->num_output % s->group != 0)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "group %d does not divide num_output %d", s->group,
                              s->num_output);

    int wshape[4] = {s->num_output, s->channels / s->group, s->kernel[0], s->kernel[1]};
    MTL_TRY(mtl_layer_add_param(l, 4, wshape, weight_filler, err));
    if (s->bias_term)
        MTL_TRY(mtl_layer_add_param(l, 1, &s->num_output, bias_filler, err));
    else
        MTL_TRY(mtl_filler_check(bias_filler, err));
    mtl_cpu_init();
    return MTL_OK;
}

static mtl_status reserve(const mtl_layer *l, float **buf, int64_t *capacity, int64_t n, mtl_error *err)
{
    if (n <= *capacity)
        return MTL_OK;
    float *p = mtl_aligned_alloc((size_t)n * sizeof(float));
    if (!p)
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %lld scratch values", (long long)n);
    mtl_aligned_free(*buf);
    *buf = p;
    *capacity = n;
    return MTL_OK;
}

/* Chunks of the batch: enough that threads stay busy when one of them is held up, few enough that
 * their weight-gradient sums stay small. */
#define CONV_MAX_CHUNKS 16
#define CONV_PARTIAL_BUDGET (4 << 20) /* floats of per-chunk weight-gradient sums */

/* The weight gradient of one image and group is dy (m x p) times col^T (p x k), an inner-product
 * shaped GEMM. OpenBLAS's small-matrix kernels (used up to m * k * p = 100^3) do not take that
 * shape once m * k exceeds 1200 (sgemm_small_kernel_permit for this CPU family), and the packed
 * path is a third slower at MultiLeNet's sizes; dw^T = col * (dy^T) is a plain product they do
 * take. The transpose of dy costs p * m moves, worth it when k (the GEMM's depth per dy value)
 * is large. Larger products take the packed path either way. */
static int choose_dw_form(int m, int64_t k, int p)
{
    return (int64_t)m * k > 1200 && k >= 64 && (double)m * (double)k * p <= 1e6;
}

/* Output extent along one axis, or -1 when the dilated kernel does not fit the padded input. */
static int out_size(int in, int kernel, int pad, int stride, int dilation)
{
    int64_t extent = (int64_t)dilation * (kernel - 1) + 1;
    int64_t room = (int64_t)in + 2 * (int64_t)pad - extent;
    return room < 0 ? -1 : (int)(room / stride + 1);
}

static mtl_status conv_reshape(mtl_layer *l, mtl_error *err)
{
    conv_state *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    char have[64], want[64];
    for (int i = 0; i < l->n_bottoms; i++) {
        const mtl_tensor *b = l->bottoms[i];
        if (b->ndim != 4)
            return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bottom %d has shape %s: 4 axes (N, C, H, W) wanted", i,
                                  mtl_tensor_shape_str(b, have, sizeof(have)));
        if (!mtl_tensor_same_shape(b, x))
            return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bottom %d has shape %s, bottom 0 %s: all must match", i,
                                  mtl_tensor_shape_str(b, have, sizeof(have)),
                                  mtl_tensor_shape_str(x, want, sizeof(want)));
    }
    if (x->shape[1] != s->channels)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bottom has %d channels, the weights were made for %d",
                              x->shape[1], s->channels);
    int n = x->shape[0], height = x->shape[2], width = x->shape[3];
    int out_h = out_size(height, s->kernel[0], s->pad[0], s->stride[0], s->dilation[0]);
    int out_w = out_size(width, s->kernel[1], s->pad[1], s->stride[1], s->dilation[1]);
    if (out_h < 0 || out_w < 0)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "kernel %dx%d (dilation %dx%d) is larger than the padded input %dx%d "
                              "(%dx%d plus pad %dx%d)",
                              s->kernel[0], s->kernel[1], s->dilation[0], s->dilation[1], height + 2 * s->pad[0],
                              width + 2 * s->pad[1], height, width, s->pad[0], s->pad[1]);
    const int64_t k = (int64_t)(s->channels / s->group) * s->kernel[0] * s->kernel[1];
    if ((int64_t)out_h * out_w > INT_MAX || k > INT_MAX)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "output %dx%d or kernel volume %lld is too large for a GEMM",
                              out_h, out_w, (long long)k);
    s->geom = (mtl_conv_geom){.channels = s->channels / s->group,
                              .height = height,
                              .width = width,
                              .kernel_h = s->kernel[0],
                              .kernel_w = s->kernel[1],
                              .pad_h = s->pad[0],
                              .pad_w = s->pad[1],
                              .stride_h = s->stride[0],
                              .stride_w = s->stride[1],
                              .dilation_h = s->dilation[0],
                              .dilation_w = s->dilation[1],
                              .out_h = out_h,
                              .out_w = out_w};
    s->direct = s->kernel[0] == 1 && s->kernel[1] == 1 && s->stride[0] == 1 && s->stride[1] == 1 &&
                s->pad[0] == 0 && s->pad[1] == 0;
    for (int i = 0; i < l->n_tops; i++)
        MTL_TRY(mtl_tensor_reshape4(l->tops[i], n, s->num_output, out_h, out_w, err));

    int threads = mtl_cpu_max_threads();
    if (threads > n)
        threads = n > 0 ? n : 1;
    s->threads = threads;
    s->m = s->num_output / s->group;
    s->k = (int)k;
    s->p = out_h * out_w;
    s->ones_row = s->bias_term && !s->direct;
    s->dw_transposed = choose_dw_form(s->m, s->k, s->p);
    const int64_t kp = s->k + s->bias_term;
    s->col_count = (s->direct ? 0 : (s->k + s->ones_row) * (int64_t)s->p) +
                   (s->dw_transposed ? (int64_t)s->p * s->m : 0);
    MTL_TRY(reserve(l, &s->col, &s->col_capacity, threads * s->col_count, err));
    MTL_TRY(reserve(l, &s->wext, &s->wext_capacity, s->ones_row ? s->num_output * kp : 0, err));
    /* the chunk count depends only on shapes (so results do not depend on the thread count), unless
     * the gradient sums of a huge layer would not fit the budget: then one chunk per thread */
    int chunks = n < CONV_MAX_CHUNKS ? (n > 0 ? n : 1) : CONV_MAX_CHUNKS;
    if ((int64_t)chunks * s->num_output * kp > CONV_PARTIAL_BUDGET && chunks > threads)
        chunks = threads;
    s->chunks = chunks;
    MTL_TRY(reserve(l, &s->partial, &s->partial_capacity, chunks * s->num_output * kp, err));
    return MTL_OK;
}

/* The ones row under the column matrix of this thread (im2col and dcol never touch it). */
static void set_ones_row(const conv_state *s, float *col)
{
    float *ones = col + (int64_t)s->k * s->p;
    for (int j = 0; j < s->p; j++)
        ones[j] = 1.0f;
}

/* One image: y (num_output x P) = W * im2col(x) + bias, per group; with ones_row, w is the
 * extended (num_output, k + 1) matrix and the bias comes out of the GEMM. */
static void forward_image(const conv_state *s, const float *w, const float *bias, const float *x, float *y,
                          float *col)
{
    const mtl_conv_geom *g = &s->geom;
    const int m = s->m, k = s->k, p = s->p, kb = k + s->ones_row; /* weight columns, bias included */
    for (int grp = 0; grp < s->group; grp++) {
        const float *xg = x + (int64_t)grp * g->channels * g->height * g->width; /* (C/group, H, W) */
        float *yg = y + (int64_t)grp * m * p;                                   /* (M/group, P) */
        const float *cols = xg;
        if (!s->direct) {
            mtl_cpu_im2col(g, xg, col, p);
            cols = col;
        }
        float beta = 0.0f;
        if (bias && !s->ones_row) {
            for (int i = 0; i < m; i++) {
                float b = bias[grp * m + i];
                for (int j = 0; j < p; j++)
                    yg[(int64_t)i * p + j] = b;
            }
            beta = 1.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, p, kb, 1.0f, w + (int64_t)grp * m * kb, kb, cols, p,
                    beta, yg, p);
    }
}

static mtl_status conv_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    conv_state *s = l->priv;
    const float *w = l->params[0]->data; /* (num_output, k) */
    const float *bias = s->bias_term ? l->params[1]->data : NULL;
    if (s->ones_row) {
        for (int o = 0; o < s->num_output; o++) {
            memcpy(s->wext + (int64_t)o * (s->k + 1), w + (int64_t)o * s->k, (size_t)s->k * sizeof(float));
            s->wext[(int64_t)o * (s->k + 1) + s->k] = bias[o];
        }
        w = s->wext;
    }
    const int64_t in_count = mtl_tensor_count_range(l->bottoms[0], 1, 4);
    const int64_t out_count = mtl_tensor_count_range(l->tops[0], 1, 4);
    const int n = l->bottoms[0]->shape[0];
    for (int b = 0; b < l->n_bottoms; b++) {
        const float *x = l->bottoms[b]->data; /* (N, C, H, W) */
        float *y = l->tops[b]->data;          /* (N, num_output, out_h, out_w) */
MTL_OMP("omp parallel num_threads(s->threads)")
        {
            float *col = s->col + mtl_cpu_thread_id() * s->col_count;
            if (s->ones_row)
                set_ones_row(s, col);
MTL_OMP("omp for schedule(dynamic, 1)")
            for (int c = 0; c < s->chunks; c++) {
                int64_t i0, i1;
                mtl_cpu_range(n, s->chunks, c, &i0, &i1);
                for (int64_t i = i0; i < i1; i++)
                    forward_image(s, w, bias, x + i * in_count, y + i * out_count, col);
            }
        }
    }
    return MTL_OK;
}

/* Sum of n values in eight interleaved partial sums (one vector's worth, so the loop vectorises
 * without reordering anything: the same bits every time). */
static float row_sum(const float *x, int n)
{
    float part[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            part[k] += x[i + k];
    float sum = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
    for (; i < n; i++)
        sum += x[i];
    return sum;
}

/* One image's share of the gradients. part (per group an m x kp block, or kp x m when
 * dw_transposed, kp = k + bias) accumulates dy * im2col(x)^T, whose extra column against the ones
 * row is the bias gradient (row sums of dy when there is no ones row); dx = col2im(W^T * dy). */
static void backward_image(const conv_state *s, const float *w, const float *x, const float *dy, float *part,
                           int need_w, int need_b, float *dx, float *col)
{
    const mtl_conv_geom *g = &s->geom;
    const int m = s->m, k = s->k, p = s->p, kp = k + s->bias_term;
    const int rows = k + (s->ones_row && need_b); /* column rows the weight GEMM uses */
    float *dyt = col + (s->direct ? 0 : (int64_t)(k + s->ones_row) * p); /* (P, m) when dw_transposed */
    const int64_t in_group = (int64_t)g->channels * g->height * g->width;
    for (int grp = 0; grp < s->group; grp++) {
        const float *dyg = dy + (int64_t)grp * m * p; /* (m, P) */
        float *pg = part + (int64_t)grp * m * kp;
        if (need_w) {
            const float *xg = x + grp * in_group;
            const float *cols = xg;
            if (!s->direct) {
                mtl_cpu_im2col(g, xg, col, p);
                cols = col;
            }
            if (s->dw_transposed) { /* pg (kp, m) += cols (rows, P) * dy^T (P, m) */
                mtl_cpu_transpose(dyg, m, p, dyt);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, m, p, 1.0f, cols, p, dyt, m, 1.0f, pg, m);
            } else { /* pg (m, kp) += dy (m, P) * cols^T (P, rows) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, rows, p, 1.0f, dyg, p, cols, p, 1.0f, pg, kp);
            }
        }
        if (need_b && (!need_w || !s->ones_row))
            for (int i = 0; i < m; i++)
                pg[s->dw_transposed ? (int64_t)k * m + i : (int64_t)i * kp + k] += row_sum(dyg + (int64_t)i * p, p);
        if (dx) {
            float *dxg = dx + grp * in_group;
            float *dcols = s->direct ? dxg : col;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, p, m, 1.0f, w + (int64_t)grp * m * k, k, dyg, p,
                        0.0f, dcols, p);
            if (!s->direct)
                mtl_cpu_col2im(g, col, p, dxg);
        }
    }
}

static void conv_backward(mtl_layer *l)
{
    conv_state *s = l->priv;
    const int need_w = mtl_layer_param_needs_grad(l, 0);
    const int need_b = s->bias_term && mtl_layer_param_needs_grad(l, 1);
    const float *w = l->params[0]->data;
    const int m = s->m, k = s->k, kp = k + s->bias_term;
    const int64_t part_count = (int64_t)s->num_output * kp;
    const int64_t in_count = mtl_tensor_count_range(l->bottoms[0], 1, 4);
    const int64_t out_count = mtl_tensor_count_range(l->tops[0], 1, 4);
    const int n = l->bottoms[0]->shape[0];
    if (need_w || need_b)
        memset(s->partial, 0, (size_t)(s->chunks * part_count) * sizeof(float));
    for (int b = 0; b < l->n_bottoms; b++) {
        const int need_x = l->propagate_down[b];
        if (!need_w && !need_b && !need_x)
            continue;
        const float *x = l->bottoms[b]->data; /* (N, C, H, W) */
        const float *dy = l->tops[b]->grad;   /* (N, num_output, out_h, out_w) */
        float *dx = need_x ? l->bottoms[b]->grad : NULL;
MTL_OMP("omp parallel num_threads(s->threads)")
        {
            float *col = s->col + mtl_cpu_thread_id() * s->col_count;
            if (s->ones_row && need_w && need_b)
                set_ones_row(s, col);
MTL_OMP("omp for schedule(dynamic, 1)")
            for (int c = 0; c < s->chunks; c++) {
                int64_t i0, i1;
                mtl_cpu_range(n, s->chunks, c, &i0, &i1);
                for (int64_t i = i0; i < i1; i++)
                    backward_image(s, w, x + i * in_count, dy + i * out_count, s->partial + c * part_count, need_w,
                                   need_b, dx ? dx + i * in_count : NULL, col);
            }
        }
    }
    /* chunk sums added in chunk order: the same bits whichever thread ran which chunk */
    float *dw = need_w ? l->params[0]->grad : NULL; /* (num_output, C/group, kh, kw) */
    float *db = need_b ? l->params[1]->grad : NULL; /* (num_output) */
    for (int c = 0; c < s->chunks && (dw || db); c++)
        for (int grp = 0; grp < s->group; grp++) {
            const float *pg = s->partial + c * part_count + (int64_t)grp * m * kp;
            for (int i = 0; i < m; i++) {
                float *row = dw ? dw + ((int64_t)grp * m + i) * k : NULL;
                if (s->dw_transposed) { /* pg (kp, m) */
                    for (int j = 0; row && j < k; j++)
                        row[j] += pg[(int64_t)j * m + i];
                    if (db)
                        db[grp * m + i] += pg[(int64_t)k * m + i];
                } else { /* pg (m, kp) */
                    for (int j = 0; row && j < k; j++)
                        row[j] += pg[(int64_t)i * kp + j];
                    if (db)
                        db[grp * m + i] += pg[(int64_t)i * kp + k];
                }
            }
        }
}

static void conv_release(mtl_layer *l)
{
    conv_state *s = l->priv;
    if (s) {
        mtl_aligned_free(s->col);
        mtl_aligned_free(s->wext);
        mtl_aligned_free(s->partial);
    }
    free(s);
    l->priv = NULL;
}

static int64_t conv_flops(const mtl_layer *l)
{
    const conv_state *s = l->priv;
    int64_t per_output = (int64_t)s->geom.channels * s->kernel[0] * s->kernel[1];
    return 2 * per_output * l->tops[0]->count * l->n_tops;
}

const mtl_layer_ops mtl_layer_convolution = {
    .type = "Convolution",
    .min_bottoms = 1,
    .max_bottoms = -1,
    .min_tops = 1,
    .max_tops = -1,
    .setup = conv_setup,
    .reshape = conv_reshape,
    .forward = conv_forward,
    .backward = conv_backward,
    .release = conv_release,
    .flops = conv_flops,
};
