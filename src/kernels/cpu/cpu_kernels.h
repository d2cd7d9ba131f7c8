/* CPU kernels shared by the dense layers (Convolution, Pooling, InnerProduct): im2col/col2im,
 * pooling planes, a GEMM split over the OpenMP team, and the threading conventions they share.
 * Kernels work on one image or plane; the layers parallelise over the batch around them. */
#ifndef MTL_KERNELS_CPU_CPU_KERNELS_H
#define MTL_KERNELS_CPU_CPU_KERNELS_H

#include <stdint.h>

/* ---- threads ----
 * mtl threads with OpenMP and calls OpenBLAS from inside its parallel regions, one GEMM per
 * thread, so OpenBLAS itself must run single-threaded (otherwise every call would wake its own
 * pool on top of ours). mtl_cpu_init() sets that once per process; OPENBLAS_NUM_THREADS=1 in the
 * environment says the same. Results never depend on which thread did what: work is cut into
 * pieces by mtl_cpu_range(), each output value is computed by one piece, and partial sums kept
 * per piece are added in piece order. */

/* An OpenMP directive that vanishes in builds without OpenMP (MTL_OPENMP off), where a bare
 * #pragma omp would trip -Werror=unknown-pragmas: MTL_OMP("omp parallel for"). */
#ifdef MTL_OPENMP
#define MTL_OMP(directive) _Pragma(directive)
#else
#define MTL_OMP(directive)
#endif

/* Makes OpenBLAS single-threaded (idempotent, cheap after the first call; not thread-safe
 * against concurrent BLAS calls, so call it from setup code). */
void mtl_cpu_init(void);
/* Threads a parallel region would get (omp_get_max_threads(), 1 without OpenMP). */
int mtl_cpu_max_threads(void);
/* Inside a parallel region: this thread's index and the team size (0 and 1 outside). */
int mtl_cpu_thread_id(void);
int mtl_cpu_team_size(void);

/* The part-th of `parts` contiguous pieces of [0, n). */
static inline void mtl_cpu_range(int64_t n, int parts, int part, int64_t *begin, int64_t *end)
{
    *begin = n * part / parts;
    *end = n * (part + 1) / parts;
}

/* Row-major C (M x N) = alpha * op(A) * op(B) + beta * C, op(A) M x K, op(B) K x N, split over
 * the OpenMP team by blocks of rows of C (or of columns when M is small), each block one
 * single-threaded sgemm. Small products run on the calling thread. Must not be called from
 * inside a parallel region. */
void mtl_cpu_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                   const float *b, int ldb, float beta, float *c, int ldc);

/* b (cols x rows) = a^T for a (rows x cols). */
void mtl_cpu_transpose(const float *a, int rows, int cols, float *b);
/* The same inside larger matrices: b[j * ldb + i] = a[i * lda + j] for i < rows, j < cols, in tiles
 * that keep both sides in L1. */
void mtl_cpu_transpose_strided(const float *restrict a, int64_t rows, int64_t cols, int64_t lda, float *restrict b,
                               int64_t ldb);

/* ---- convolution ---- */

typedef struct mtl_conv_geom {
    int channels, height, width;        /* of one input image (per group: channels / group) */
    int kernel_h, kernel_w;
    int pad_h, pad_w;
    int stride_h, stride_w;
    int dilation_h, dilation_w;
    int out_h, out_w;
} mtl_conv_geom;

/* col ((channels*kernel_h*kernel_w) x (out_h*out_w), rows ldcol apart) from im (channels x
 * height x width); zero where the kernel reads padding. Caffe's layout: row (c, ky, kx). */
void mtl_cpu_im2col(const mtl_conv_geom *g, const float *im, float *col, int64_t ldcol);
/* The adjoint: im = sum over the kernel positions of col (im is overwritten, not added to). */
void mtl_cpu_col2im(const mtl_conv_geom *g, const float *col, int64_t ldcol, float *im);

/* ---- pooling (one plane of height x width) ---- */

typedef struct mtl_pool_geom {
    int height, width;
    int kernel_h, kernel_w;
    int pad_h, pad_w;
    int stride_h, stride_w;
    int out_h, out_w;
} mtl_pool_geom;

/* Max over each window clipped to the plane; the first maximum in row-major order wins (as in
 * Caffe). mask (out_h x out_w) gets the index y * width + x of the winner; top_mask, when not
 * NULL, the same index as a float (Caffe's second top). */
void mtl_cpu_maxpool_forward(const mtl_pool_geom *g, const float *in, float *out, int32_t *mask, float *top_mask);
/* din (height x width) = dout scattered to the winners (overwritten). */
void mtl_cpu_maxpool_backward(const mtl_pool_geom *g, const float *dout, const int32_t *mask, float *din);
/* Average over each window clipped to the plane, divided by the window size clipped only to
 * the padded plane (Caffe's AVE: padding counts, the part beyond the padding does not). */
void mtl_cpu_avepool_forward(const mtl_pool_geom *g, const float *in, float *out);
void mtl_cpu_avepool_backward(const mtl_pool_geom *g, const float *dout, float *din);

#endif
