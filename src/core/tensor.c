/* Tensor storage and shape bookkeeping. */
#include "core/tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *mtl_aligned_alloc(size_t bytes)
{
    size_t rounded = (bytes + MTL_ALIGN - 1) / MTL_ALIGN * MTL_ALIGN;
    return aligned_alloc(MTL_ALIGN, rounded ? rounded : MTL_ALIGN);
}

void mtl_aligned_free(void *p) { free(p); }

mtl_tensor *mtl_tensor_create(const char *name)
{
    mtl_tensor *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    if (name && !(t->name = mtl_strdup(name))) {
        free(t);
        return NULL;
    }
    t->count = 0;
    return t;
}

static void release_storage(mtl_tensor *t)
{
    if (t->owns_storage) {
        mtl_aligned_free(t->data);
        mtl_aligned_free(t->grad);
    }
    t->data = t->grad = NULL;
    t->capacity = 0;
    t->owns_storage = 0;
}

void mtl_tensor_free(mtl_tensor *t)
{
    if (!t)
        return;
    release_storage(t);
    free(t->name);
    free(t);
}

mtl_status mtl_tensor_reshape(mtl_tensor *t, int ndim, const int *shape, mtl_error *err)
{
    if (ndim < 0 || ndim > MTL_MAX_AXES)
        return mtl_fail(err, MTL_ERR_SHAPE, "tensor '%s': %d axes requested, at most %d are supported",
                        t->name ? t->name : "?", ndim, MTL_MAX_AXES);
    int64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return mtl_fail(err, MTL_ERR_SHAPE, "tensor '%s': axis %d has negative size %d",
                            t->name ? t->name : "?", i, shape[i]);
        count *= shape[i];
        if (count > ((int64_t)1 << 40))
            return mtl_fail(err, MTL_ERR_SHAPE, "tensor '%s': shape too large", t->name ? t->name : "?");
    }
    if (!t->owns_storage && t->data && count > t->capacity)
        return mtl_fail(err, MTL_ERR_SHAPE, "tensor '%s': a view of %lld values cannot hold %lld",
                        t->name ? t->name : "?", (long long)t->capacity, (long long)count);
    if ((t->owns_storage || !t->data) && count > t->capacity) {
        float *data = mtl_aligned_alloc((size_t)count * sizeof(float));
        float *grad = mtl_aligned_alloc((size_t)count * sizeof(float));
        if (!data || !grad) {
            mtl_aligned_free(data);
            mtl_aligned_free(grad);
            return mtl_fail(err, MTL_ERR_NOMEM, "tensor '%s': out of memory for %lld values",
                            t->name ? t->name : "?", (long long)count);
        }
        release_storage(t);
        memset(data, 0, (size_t)count * sizeof(float));
        memset(grad, 0, (size_t)count * sizeof(float));
        t->data = data;
        t->grad = grad;
        t->capacity = count;
        t->owns_storage = 1;
    }
    t->ndim = ndim;
    for (int i = 0; i < MTL_MAX_AXES; i++)
        t->shape[i] = i < ndim ? shape[i] : 0;
    t->count = count;
    return MTL_OK;
}

mtl_status mtl_tensor_reshape_like(mtl_tensor *t, const mtl_tensor *like, mtl_error *err)
{
    return mtl_tensor_reshape(t, like->ndim, like->shape, err);
}

mtl_status mtl_tensor_reshape4(mtl_tensor *t, int n, int c, int h, int w, mtl_error *err)
{
    int shape[4] = {n, c, h, w};
    int ndim = 0;
    while (ndim < 4 && shape[ndim] >= 0)
        ndim++;
    return mtl_tensor_reshape(t, ndim, shape, err);
}

void mtl_tensor_set_view(mtl_tensor *t, float *data, float *grad)
{
    release_storage(t);
    t->data = data;
    t->grad = grad;
    t->capacity = t->count;
}

int mtl_tensor_axis(const mtl_tensor *t, int axis)
{
    int a = axis < 0 ? axis + t->ndim : axis;
    return (a < 0 || a >= t->ndim) ? -1 : a;
}

int64_t mtl_tensor_count_range(const mtl_tensor *t, int start, int end)
{
    int64_t n = 1;
    for (int i = start; i < end && i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

int mtl_tensor_same_shape(const mtl_tensor *a, const mtl_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    return 1;
}

const char *mtl_tensor_shape_str(const mtl_tensor *t, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    if (t->ndim == 0) {
        snprintf(buf, size, "scalar");
        return buf;
    }
    for (int i = 0; i < t->ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i ? "x%d" : "%d", t->shape[i]);
    return buf;
}

void mtl_tensor_zero_data(mtl_tensor *t)
{
    if (t->data && t->count)
        memset(t->data, 0, (size_t)t->count * sizeof(float));
}

void mtl_tensor_zero_grad(mtl_tensor *t)
{
    if (t->grad && t->count)
        memset(t->grad, 0, (size_t)t->count * sizeof(float));
}
