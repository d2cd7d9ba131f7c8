/* Layers that move values around without learning anything: Flatten, Reshape, Concat, Slice,
 * Split (inserted by the net where a blob feeds several layers), Eltwise and Silence. Tops are
 * distinct tensors, so data is copied forward and gradients copied (or summed) backward. */
#include <float.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "layers/layers.h"

/* Elementwise loops only pay for threads on large blobs. */
#define PARALLEL_MIN 32768

static void copy_values(float *dst, const float *src, int64_t n)
{
    if (dst != src && n > 0)
        memcpy(dst, src, (size_t)n * sizeof(float));
}

/* Caffe's CanonicalAxisIndex: -ndim <= axis < ndim, negative counting from the end; else an error. */
static mtl_status canonical_axis(const mtl_layer *l, const mtl_tensor *t, int64_t axis, const char *what, int *out,
                          mtl_error *err)
{
    if (axis < -t->ndim || axis >= t->ndim) {
        char buf[128];
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%s %lld is out of range for a bottom of shape %s (%d axes)",
                              what, (long long)axis, mtl_tensor_shape_str(t, buf, sizeof(buf)), t->ndim);
    }
    *out = (int)(axis < 0 ? axis + t->ndim : axis);
    return MTL_OK;
}

static void release_priv(mtl_layer *l)
{
    free(l->priv);
    l->priv = NULL;
}

static mtl_status alloc_priv(mtl_layer *l, size_t size, mtl_error *err)
{
    l->priv = mtl_calloc_or_fail(1, size, err, "layer state");
    return l->priv ? MTL_OK : MTL_ERR_NOMEM;
}

/* Flatten and Reshape: forward copies the data, backward copies the gradient. */
static mtl_status copy_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    copy_values(l->tops[0]->data, l->bottoms[0]->data, l->bottoms[0]->count);
    return MTL_OK;
}

static void copy_backward(mtl_layer *l)
{
    if (l->propagate_down[0])
        copy_values(l->bottoms[0]->grad, l->tops[0]->grad, l->bottoms[0]->count);
}

/* ---- Flatten -------------------------------------------------------------------------------- */

typedef struct flatten_priv {
    int64_t axis, end_axis;
} flatten_priv;

static mtl_status flatten_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "flatten_param", &p, err));
    MTL_TRY(alloc_priv(l, sizeof(flatten_priv), err));
    flatten_priv *f = l->priv;
    MTL_TRY(mtl_cfg_int_range(p, "axis", 1, INT_MIN, INT_MAX, &f->axis, err));
    MTL_TRY(mtl_cfg_int_range(p, "end_axis", -1, INT_MIN, INT_MAX, &f->end_axis, err));
    return MTL_OK;
}

static mtl_status flatten_reshape(mtl_layer *l, mtl_error *err)
{
    flatten_priv *f = l->priv;
    const mtl_tensor *b = l->bottoms[0];
    int start = 0, end = 0;
    MTL_TRY(canonical_axis(l, b, f->axis, "axis", &start, err));
    MTL_TRY(canonical_axis(l, b, f->end_axis, "end_axis", &end, err));
    if (end < start)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "end_axis %d comes before axis %d", end, start);
    int shape[MTL_MAX_AXES], n = 0;
    for (int i = 0; i < start; i++)
        shape[n++] = b->shape[i];
    int64_t flat = mtl_tensor_count_range(b, start, end + 1);
    if (flat > INT_MAX)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "flattened axis of %lld values is too large", (long long)flat);
    shape[n++] = (int)flat;
    for (int i = end + 1; i < b->ndim; i++)
        shape[n++] = b->shape[i];
    return mtl_tensor_reshape(l->tops[0], n, shape, err);
}

const mtl_layer_ops mtl_layer_flatten = {
    .type = "Flatten",
    .min_bottoms = 1,
    .max_bottoms = 1,
    .min_tops = 1,
    .max_tops = 1,
    .setup = flatten_setup,
    .reshape = flatten_reshape,
    .forward = copy_forward,
    .backward = copy_backward,
    .release = release_priv,
};

/* ---- Reshape -------------------------------------------------------------------------------- */

typedef struct reshape_priv {
    int n_dims;               /* axes of reshape_param.shape */
    int dims[MTL_MAX_AXES];   /* 0: copy the bottom's axis, -1: infer */
    int inferred;             /* index of the -1 in dims, or -1 */
    int64_t constant_count;   /* product of the explicit dims */
    int64_t axis, num_axes;
} reshape_priv;

static mtl_status reshape_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p, *shape;
    MTL_TRY(mtl_layer_param_message(l, "reshape_param", &p, err));
    MTL_TRY(alloc_priv(l, sizeof(reshape_priv), err));
    reshape_priv *r = l->priv;
    MTL_TRY(mtl_cfg_message(p, "shape", &shape, err));
    MTL_TRY(mtl_cfg_int_range(p, "axis", 0, INT_MIN, INT_MAX, &r->axis, err));
    MTL_TRY(mtl_cfg_int_range(p, "num_axes", -1, -1, INT_MAX, &r->num_axes, err));
    r->n_dims = mtl_cfg_count(shape, "dim");
    if (r->n_dims > MTL_MAX_AXES)
        return mtl_layer_fail(l, err, MTL_ERR_UNSUPPORTED, "shape has %d dims, mtl supports at most %d", r->n_dims,
                              MTL_MAX_AXES);
    r->inferred = -1;
    r->constant_count = 1;
    for (int i = 0; i < r->n_dims; i++) {
        int64_t d;
        MTL_TRY(mtl_cfg_int_at(shape, "dim", i, &d, err));
        if (d < -1 || d > INT_MAX)
            return mtl_cfg_fail(mtl_cfg_field(shape, "dim", i), err, MTL_ERR_CONFIG,
                                "layer '%s': dim %lld: give a size, 0 to copy the bottom's axis or -1 to infer it",
                                l->name, (long long)d);
        if (d == -1) {
            if (r->inferred >= 0)
                return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                                      "new shape contains more than one -1: at most one dim can be inferred");
            r->inferred = i;
        } else if (d > 0) {
            r->constant_count *= d;
        }
        r->dims[i] = (int)d;
    }
    return MTL_OK;
}

static mtl_status reshape_reshape(mtl_layer *l, mtl_error *err)
{
    reshape_priv *r = l->priv;
    const mtl_tensor *b = l->bottoms[0];
    int64_t start = r->axis >= 0 ? r->axis : b->ndim + r->axis + 1;
    if (start < 0 || start > b->ndim)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "axis %lld is out of range for a %d-axis bottom",
                              (long long)r->axis, b->ndim);
    int64_t end = r->num_axes == -1 ? b->ndim : start + r->num_axes;
    if (end > b->ndim)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "axis + num_axes = %lld is out of range for a %d-axis bottom", (long long)end, b->ndim);
    int n_top = (int)(b->ndim - (end - start) + r->n_dims);
    if (n_top > MTL_MAX_AXES)
        return mtl_layer_fail(l, err, MTL_ERR_UNSUPPORTED, "top would have %d axes, mtl supports at most %d", n_top,
                              MTL_MAX_AXES);
    int shape[MTL_MAX_AXES], n = 0;
    for (int i = 0; i < start; i++)
        shape[n++] = b->shape[i];
    for (int i = 0; i < r->n_dims; i++) {
        int d = r->dims[i];
        if (d == 0) {
            if (start + i >= b->ndim)
                return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                                      "new shape has a 0 at dim %d, but the bottom has no axis %lld to copy", i,
                                      (long long)(start + i));
            d = b->shape[start + i];
        }
        shape[n++] = d;
    }
    for (int64_t i = end; i < b->ndim; i++)
        shape[n++] = b->shape[i];
    if (r->inferred >= 0) {
        int64_t known = r->constant_count * mtl_tensor_count_range(b, 0, (int)start) *
                        mtl_tensor_count_range(b, (int)end, b->ndim);
        for (int i = 0; i < r->n_dims; i++)
            if (r->dims[i] == 0)
                known *= shape[start + i];
        if (known == 0 || b->count % known != 0)
            return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                                  "cannot infer the -1 dim: bottom count (%lld) must be divisible by the product of "
                                  "the other dimensions (%lld)",
                                  (long long)b->count, (long long)known);
        shape[start + r->inferred] = (int)(b->count / known);
    }
    int64_t count = 1;
    for (int i = 0; i < n; i++)
        count *= shape[i];
    if (count != b->count) {
        char buf[128];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "output count %lld must match input count %lld (bottom %s)",
                              (long long)count, (long long)b->count, mtl_tensor_shape_str(b, buf, sizeof(buf)));
    }
    return mtl_tensor_reshape(l->tops[0], n, shape, err);
}

const mtl_layer_ops mtl_layer_reshape = {
    .type = "Reshape",
    .min_bottoms = 1,
    .max_bottoms = 1,
    .min_tops = 1,
    .max_tops = 1,
    .setup = reshape_setup,
    .reshape = reshape_reshape,
    .forward = copy_forward,
    .backward = copy_backward,
    .release = release_priv,
};

/* ---- Concat and Slice ----------------------------------------------------------------------- */

/* Both move blocks along one axis: the big blob is outer x (sum of parts' axis sizes) x inner, and
 * each part is outer x its axis size x inner. */
typedef struct axis_priv {
    int64_t axis;       /* `axis` (may be negative) */
    int legacy;         /* concat_dim / slice_dim given: a non-negative axis */
    int n_points;       /* Slice: slice_point values */
    int *points;
    int resolved;       /* axis after canonicalisation (reshape) */
} axis_priv;

static mtl_status axis_read(mtl_layer *l, const char *msg_name, const char *legacy_name, mtl_cfg_node **p,
                            mtl_error *err)
{
    MTL_TRY(mtl_layer_param_message(l, msg_name, p, err));
    MTL_TRY(alloc_priv(l, sizeof(axis_priv), err));
    axis_priv *a = l->priv;
    int has_axis = mtl_cfg_count(*p, "axis") > 0;
    a->legacy = mtl_cfg_count(*p, legacy_name) > 0;
    if (has_axis && a->legacy)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "give either axis or %s, not both", legacy_name);
    if (a->legacy)
        MTL_TRY(mtl_cfg_int_range(*p, legacy_name, 1, 0, UINT32_MAX, &a->axis, err));
    else
        MTL_TRY(mtl_cfg_int_range(*p, "axis", 1, INT_MIN, INT_MAX, &a->axis, err));
    return MTL_OK;
}

static mtl_status axis_resolve(mtl_layer *l, const mtl_tensor *t, const char *legacy_name, mtl_error *err)
{
    axis_priv *a = l->priv;
    if (a->legacy) {
        if (a->axis >= t->ndim)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%s %lld is out of range for a %d-axis bottom",
                                  legacy_name, (long long)a->axis, t->ndim);
        a->resolved = (int)a->axis;
        return MTL_OK;
    }
    return canonical_axis(l, t, a->axis, "axis", &a->resolved, err);
}

static void axis_release(mtl_layer *l)
{
    axis_priv *a = l->priv;
    if (a)
        free(a->points);
    release_priv(l);
}

/* Copies between the big blob and its parts; to_big: parts -> big (Concat forward, Slice backward).
 * active[i] says whether part i takes part; NULL: all do. */
static void axis_move(float *big, mtl_tensor **parts, const int *active, int n_parts, int axis, int to_big,
                      int use_grad)
{
    const mtl_tensor *ref = parts[0];
    int64_t outer = mtl_tensor_count_range(ref, 0, axis);
    int64_t inner = mtl_tensor_count_range(ref, axis + 1, ref->ndim);
    int64_t big_axis = 0;
    for (int i = 0; i < n_parts; i++)
        big_axis += parts[i]->shape[axis];
    int64_t offset = 0;
    for (int i = 0; i < n_parts; i++) {
        int64_t block = parts[i]->shape[axis] * inner;
        if (!active || active[i]) {
            float *part = use_grad ? parts[i]->grad : parts[i]->data;
#pragma omp parallel for if (outer * block > PARALLEL_MIN)
            for (int64_t n = 0; n < outer; n++) {
                float *b = big + n * big_axis * inner + offset;
                float *q = part + n * block;
                if (to_big)
                    copy_values(b, q, block);
                else
                    copy_values(q, b, block);
            }
        }
        offset += block;
    }
}

static mtl_status concat_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p;
    return axis_read(l, "concat_param", "concat_dim", &p, err);
}

static mtl_status concat_reshape(mtl_layer *l, mtl_error *err)
{
    axis_priv *a = l->priv;
    const mtl_tensor *b0 = l->bottoms[0];
    MTL_TRY(axis_resolve(l, b0, "concat_dim", err));
    int shape[MTL_MAX_AXES];
    memcpy(shape, b0->shape, sizeof(shape));
    int64_t total = b0->shape[a->resolved];
    for (int i = 1; i < l->n_bottoms; i++) {
        const mtl_tensor *b = l->bottoms[i];
        int ok = b->ndim == b0->ndim;
        for (int j = 0; ok && j < b0->ndim; j++)
            ok = j == a->resolved || b->shape[j] == b0->shape[j];
        if (!ok) {
            char s0[128], si[128];
            return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                                  "bottom %d has shape %s, bottom 0 has %s: all axes but the concat axis %d must "
                                  "match",
                                  i, mtl_tensor_shape_str(b, si, sizeof(si)), mtl_tensor_shape_str(b0, s0, sizeof(s0)),
                                  a->resolved);
        }
        total += b->shape[a->resolved];
    }
    if (total > INT_MAX)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "concatenated axis of %lld is too large", (long long)total);
    shape[a->resolved] = (int)total;
    return mtl_tensor_reshape(l->tops[0], b0->ndim, shape, err);
}

static mtl_status concat_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    axis_priv *a = l->priv;
    axis_move(l->tops[0]->data, l->bottoms, NULL, l->n_bottoms, a->resolved, 1, 0);
    return MTL_OK;
}

static void concat_backward(mtl_layer *l)
{
    axis_priv *a = l->priv;
    axis_move(l->tops[0]->grad, l->bottoms, l->propagate_down, l->n_bottoms, a->resolved, 0, 1);
}

const mtl_layer_ops mtl_layer_concat = {
    .type = "Concat",
    .min_bottoms = 1,
    .max_bottoms = -1,
    .min_tops = 1,
    .max_tops = 1,
    .setup = concat_setup,
    .reshape = concat_reshape,
    .forward = concat_forward,
    .backward = concat_backward,
    .release = axis_release,
};

static mtl_status slice_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p;
    MTL_TRY(axis_read(l, "slice_param", "slice_dim", &p, err));
    axis_priv *a = l->priv;
    a->n_points = mtl_cfg_count(p, "slice_point");
    if (a->n_points == 0)
        return MTL_OK;
    if (a->n_points != l->n_tops - 1)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%d slice_point values for %d tops: give one fewer than tops",
                              a->n_points, l->n_tops);
    if (!(a->points = mtl_calloc_or_fail((size_t)a->n_points, sizeof(int), err, "slice points")))
        return MTL_ERR_NOMEM;
    int64_t prev = 0;
    for (int i = 0; i < a->n_points; i++) {
        int64_t v;
        MTL_TRY(mtl_cfg_int_at(p, "slice_point", i, &v, err));
        if (v <= prev || v > INT_MAX)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                                  "slice_point %lld (number %d) must be greater than the previous one (%lld)",
                                  (long long)v, i, (long long)prev);
        a->points[i] = (int)v;
        prev = v;
    }
    return MTL_OK;
}

static mtl_status slice_reshape(mtl_layer *l, mtl_error *err)
{
    axis_priv *a = l->priv;
    const mtl_tensor *b = l->bottoms[0];
    MTL_TRY(axis_resolve(l, b, "slice_dim", err));
    int size = b->shape[a->resolved];
    int shape[MTL_MAX_AXES];
    memcpy(shape, b->shape, sizeof(shape));
    if (a->n_points == 0 && size % l->n_tops != 0)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "%d tops do not evenly divide the slice axis %d of size %d: give slice_point values",
                              l->n_tops, a->resolved, size);
    if (a->n_points > 0 && a->points[a->n_points - 1] >= size)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "slice_point %d is out of range for slice axis %d of size %d (each part needs at least "
                              "one value)",
                              a->points[a->n_points - 1], a->resolved, size);
    for (int i = 0; i < l->n_tops; i++) {
        if (a->n_points == 0)
            shape[a->resolved] = size / l->n_tops;
        else
            shape[a->resolved] = (i < a->n_points ? a->points[i] : size) - (i > 0 ? a->points[i - 1] : 0);
        MTL_TRY(mtl_tensor_reshape(l->tops[i], b->ndim, shape, err));
    }
    return MTL_OK;
}

static mtl_status slice_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    axis_priv *a = l->priv;
    axis_move(l->bottoms[0]->data, l->tops, NULL, l->n_tops, a->resolved, 0, 0);
    return MTL_OK;
}

static void slice_backward(mtl_layer *l)
{
    axis_priv *a = l->priv;
    if (l->propagate_down[0])
        axis_move(l->bottoms[0]->grad, l->tops, NULL, l->n_tops, a->resolved, 1, 1);
}

const mtl_layer_ops mtl_layer_slice = {
    .type = "Slice",
    .min_bottoms = 1,
    .max_bottoms = 1,
    .min_tops = 1,
    .max_tops = -1,
    .setup = slice_setup,
    .reshape = slice_reshape,
    .forward = slice_forward,
    .backward = slice_backward,
    .release = axis_release,
};

/* ---- Split ---------------------------------------------------------------------------------- */

static mtl_status split_reshape(mtl_layer *l, mtl_error *err)
{
    for (int i = 0; i < l->n_tops; i++)
        MTL_TRY(mtl_tensor_reshape_like(l->tops[i], l->bottoms[0], err));
    return MTL_OK;
}

static mtl_status split_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    for (int i = 0; i < l->n_tops; i++)
        copy_values(l->tops[i]->data, l->bottoms[0]->data, l->bottoms[0]->count);
    return MTL_OK;
}

/* Where one blob feeds several layers, its gradient is the sum of theirs. */
static void split_backward(mtl_layer *l)
{
    if (!l->propagate_down[0])
        return;
    float *dx = l->bottoms[0]->grad;
    int64_t n = l->bottoms[0]->count;
    copy_values(dx, l->tops[0]->grad, n);
    for (int t = 1; t < l->n_tops; t++) {
        const float *dy = l->tops[t]->grad;
#pragma omp parallel for if (n > PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++)
            dx[i] += dy[i];
    }
}

const mtl_layer_ops mtl_layer_split = {
    .type = "Split",
    .min_bottoms = 1,
    .max_bottoms = 1,
    .min_tops = 1,
    .max_tops = -1,
    .reshape = split_reshape,
    .forward = split_forward,
    .backward = split_backward,
};

/* ---- Eltwise -------------------------------------------------------------------------------- */

enum { ELTWISE_PROD, ELTWISE_SUM, ELTWISE_MAX, ELTWISE_OP_COUNT };
static const char *const eltwise_ops[] = {"PROD", "SUM", "MAX"};
_Static_assert(sizeof(eltwise_ops) / sizeof(eltwise_ops[0]) == ELTWISE_OP_COUNT, "eltwise op names");

typedef struct eltwise_priv {
    int op;
    int stable_prod_grad;
    float *coeffs;   /* n_bottoms, 1 unless given */
    int *argmax;     /* MAX: which bottom won each value */
    int64_t argmax_cap;
} eltwise_priv;

static mtl_status eltwise_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "eltwise_param", &p, err));
    MTL_TRY(alloc_priv(l, sizeof(eltwise_priv), err));
    eltwise_priv *e = l->priv;
    MTL_TRY(mtl_cfg_enum(p, "operation", eltwise_ops, ELTWISE_OP_COUNT, ELTWISE_SUM, &e->op, err));
    MTL_TRY(mtl_cfg_bool(p, "stable_prod_grad", 1, &e->stable_prod_grad, err));
    int n_coeffs = mtl_cfg_count(p, "coeff");
    if (n_coeffs != 0 && n_coeffs != l->n_bottoms)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%d coeff values for %d bottoms: give one per bottom, or none",
                              n_coeffs, l->n_bottoms);
    if (n_coeffs && e->op == ELTWISE_PROD)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "coeff is only for operation SUM, not PROD");
    if (!(e->coeffs = mtl_calloc_or_fail((size_t)l->n_bottoms, sizeof(float), err, "eltwise coefficients")))
        return MTL_ERR_NOMEM;
    for (int i = 0; i < l->n_bottoms; i++) {
        double c = 1.0;
        if (n_coeffs)
            MTL_TRY(mtl_cfg_float_at(p, "coeff", i, &c, err));
        e->coeffs[i] = (float)c;
    }
    return MTL_OK;
}

static mtl_status eltwise_reshape(mtl_layer *l, mtl_error *err)
{
    eltwise_priv *e = l->priv;
    const mtl_tensor *b0 = l->bottoms[0];
    for (int i = 1; i < l->n_bottoms; i++)
        if (!mtl_tensor_same_shape(l->bottoms[i], b0)) {
            char s0[128], si[128];
            return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bottom %d has shape %s, bottom 0 has %s: they must match", i,
                                  mtl_tensor_shape_str(l->bottoms[i], si, sizeof(si)),
                                  mtl_tensor_shape_str(b0, s0, sizeof(s0)));
        }
    if (e->op == ELTWISE_MAX && b0->count > e->argmax_cap) {
        free(e->argmax);
        e->argmax_cap = 0;
        if (!(e->argmax = mtl_calloc_or_fail((size_t)b0->count, sizeof(int), err, "eltwise argmax")))
            return MTL_ERR_NOMEM;
        e->argmax_cap = b0->count;
    }
    return mtl_tensor_reshape_like(l->tops[0], b0, err);
}

static mtl_status eltwise_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    eltwise_priv *e = l->priv;
    int64_t n = l->tops[0]->count;
    float *y = l->tops[0]->data;
    int nb = l->n_bottoms;
    mtl_tensor **bs = l->bottoms;
    switch (e->op) {
    case ELTWISE_PROD:
#pragma omp parallel for if (n > PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            float v = bs[0]->data[i];
            for (int b = 1; b < nb; b++)
                v *= bs[b]->data[i];
            y[i] = v;
        }
        break;
    case ELTWISE_SUM:
#pragma omp parallel for if (n > PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            float v = 0.0f;
            for (int b = 0; b < nb; b++)
                v += e->coeffs[b] * bs[b]->data[i];
            y[i] = v;
        }
        break;
    case ELTWISE_MAX:
        /* Caffe's ties: between the first two the second wins, later bottoms must be strictly greater */
#pragma omp parallel for if (n > PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            float v = -FLT_MAX;
            int k = -1;
            if (nb == 1) {
                v = bs[0]->data[i];
                k = 0;
            } else if (bs[0]->data[i] > bs[1]->data[i]) {
                v = bs[0]->data[i];
                k = 0;
            } else {
                v = bs[1]->data[i];
                k = 1;
            }
            for (int b = 2; b < nb; b++)
                if (bs[b]->data[i] > v) {
                    v = bs[b]->data[i];
                    k = b;
                }
            y[i] = v;
            e->argmax[i] = k;
        }
        break;
    default:
        break;
    }
    return MTL_OK;
}

static void eltwise_backward(mtl_layer *l)
{
    eltwise_priv *e = l->priv;
    int64_t n = l->tops[0]->count;
    const float *y = l->tops[0]->data, *dy = l->tops[0]->grad;
    int nb = l->n_bottoms;
    mtl_tensor **bs = l->bottoms;
    for (int b = 0; b < nb; b++) {
        if (!l->propagate_down[b])
            continue;
        float *dx = bs[b]->grad;
        const float *x = bs[b]->data;
        switch (e->op) {
        case ELTWISE_PROD:
            if (e->stable_prod_grad) {
                /* the product of the other bottoms: no division, so zeros are fine */
#pragma omp parallel for if (n > PARALLEL_MIN)
                for (int64_t i = 0; i < n; i++) {
                    float v = 1.0f;
                    for (int o = 0; o < nb; o++)
                        if (o != b)
                            v *= bs[o]->data[i];
                    dx[i] = v * dy[i];
                }
            } else {
#pragma omp parallel for if (n > PARALLEL_MIN)
                for (int64_t i = 0; i < n; i++)
                    dx[i] = y[i] / x[i] * dy[i];
            }
            break;
        case ELTWISE_SUM: {
            float c = e->coeffs[b];
#pragma omp parallel for if (n > PARALLEL_MIN)
            for (int64_t i = 0; i < n; i++)
                dx[i] = c * dy[i];
            break;
        }
        case ELTWISE_MAX:
#pragma omp parallel for if (n > PARALLEL_MIN)
            for (int64_t i = 0; i < n; i++)
                dx[i] = e->argmax[i] == b ? dy[i] : 0.0f;
            break;
        default:
            break;
        }
    }
}

static void eltwise_release(mtl_layer *l)
{
    eltwise_priv *e = l->priv;
    if (e) {
        free(e->coeffs);
        free(e->argmax);
    }
    release_priv(l);
}

const mtl_layer_ops mtl_layer_eltwise = {
    .type = "Eltwise",
    .min_bottoms = 2,
    .max_bottoms = -1,
    .min_tops = 1,
    .max_tops = 1,
    .setup = eltwise_setup,
    .reshape = eltwise_reshape,
    .forward = eltwise_forward,
    .backward = eltwise_backward,
    .release = eltwise_release,
};

/* ---- Silence -------------------------------------------------------------------------------- */

/* Consumes blobs nobody else uses so the net does not report them; passes back zero gradients. */
static mtl_status silence_forward(mtl_layer *l, mtl_error *err)
{
    (void)l;
    (void)err;
    return MTL_OK;
}

static void silence_backward(mtl_layer *l)
{
    for (int i = 0; i < l->n_bottoms; i++)
        if (l->propagate_down[i])
            mtl_tensor_zero_grad(l->bottoms[i]);
}

const mtl_layer_ops mtl_layer_silence = {
    .type = "Silence",
    .min_bottoms = 1,
    .max_bottoms = -1,
    .min_tops = 0,
    .max_tops = 0,
    .forward = silence_forward,
    .backward = silence_backward,
};
