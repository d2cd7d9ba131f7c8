/* Tensors: up to 8 axes of float32 data with a gradient of the same shape, 64-byte aligned.
 * A tensor either owns its storage (blobs between layers) or views someone else's (learnable
 * parameters view the net's flat parameter and gradient buffers). Layout is row-major, NCHW. */
#ifndef MTL_CORE_TENSOR_H
#define MTL_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define MTL_MAX_AXES 8
#define MTL_ALIGN 64

/* Where a tensor's memory lives; only the CPU exists today, CUDA comes with its backend. */
typedef enum mtl_device { MTL_DEVICE_CPU = 0, MTL_DEVICE_CUDA } mtl_device;

typedef struct mtl_tensor {
    char *name;
    int ndim;
    int shape[MTL_MAX_AXES];
    int64_t count;    /* product of shape; 1 for a scalar (ndim 0) */
    float *data;      /* count values */
    float *grad;      /* count values: d(objective)/d(data) */
    int64_t capacity; /* values allocated when owned */
    int owns_storage; /* 0: data/grad view memory owned elsewhere */
    mtl_device device;
} mtl_tensor;

void *mtl_aligned_alloc(size_t bytes);
void mtl_aligned_free(void *p);

/* A tensor with no shape and no storage; name may be NULL. */
mtl_tensor *mtl_tensor_create(const char *name);
void mtl_tensor_free(mtl_tensor *t);

/* Sets the shape; an owning tensor grows its storage (never shrinks, contents not kept when it
 * grows). A view may only be reshaped to at most its current count. */
mtl_status mtl_tensor_reshape(mtl_tensor *t, int ndim, const int *shape, mtl_error *err);
mtl_status mtl_tensor_reshape_like(mtl_tensor *t, const mtl_tensor *like, mtl_error *err);
/* Shorthand for up to 4 axes: pass -1 for the axes not used (mtl_tensor_reshape4(t, n, c, -1, -1)). */
mtl_status mtl_tensor_reshape4(mtl_tensor *t, int n, int c, int h, int w, mtl_error *err);

/* Makes t a view of external memory (releases owned storage). */
void mtl_tensor_set_view(mtl_tensor *t, float *data, float *grad);

/* Axis helpers: a negative axis counts from the end (-1 is the last); -1 is returned for an
 * axis out of range. count_range multiplies shape[start..end). */
int mtl_tensor_axis(const mtl_tensor *t, int axis);
int64_t mtl_tensor_count_range(const mtl_tensor *t, int start, int end);
int mtl_tensor_same_shape(const mtl_tensor *a, const mtl_tensor *b);

/* "256x1x28x28" into buf; returns buf. */
const char *mtl_tensor_shape_str(const mtl_tensor *t, char *buf, size_t size);

void mtl_tensor_zero_data(mtl_tensor *t);
void mtl_tensor_zero_grad(mtl_tensor *t);

#endif
