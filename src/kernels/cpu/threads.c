/* Threading conventions of the CPU kernels: OpenBLAS kept single-threaded, team helpers that
 * also compile without OpenMP, a GEMM split over the team in row or column blocks, and a
 * cache-blocked transpose. */
#include <cblas.h>

#ifdef MTL_OPENMP
#include <omp.h>
#endif

#include "kernels/cpu/cpu_kernels.h"

/* Below this many multiply-adds a GEMM is not worth waking the team for. */
#define SGEMM_PARALLEL_MIN (1 << 18)
/* Blocks of rows (columns) handed to a thread are multiples of this (the sgemm micro-kernel's
 * width), so no thread gets a ragged edge it need not have. */
#define SGEMM_BLOCK_ALIGN 16

void mtl_cpu_init(void)
{
    static int done;
    if (done)
        return;
    openblas_set_num_threads(1);
    done = 1;
}

int mtl_cpu_max_threads(void)
{
#ifdef MTL_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int mtl_cpu_thread_id(void)
{
#ifdef MTL_OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int mtl_cpu_team_size(void)
{
#ifdef MTL_OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

static void sgemm_block(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                        const float *b, int ldb, float beta, float *c, int ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
                alpha, a, lda, b, ldb, beta, c, ldc);
}

void mtl_cpu_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                   const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
    int threads = mtl_cpu_max_threads();
    int by_rows = m >= n || m >= SGEMM_BLOCK_ALIGN * threads;
    int64_t units = ((by_rows ? m : n) + SGEMM_BLOCK_ALIGN - 1) / SGEMM_BLOCK_ALIGN;
    if (threads > units)
        threads = (int)units;
    if (threads <= 1 || (double)m * n * k < SGEMM_PARALLEL_MIN) {
        sgemm_block(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
MTL_OMP("omp parallel num_threads(threads)")
    {
        int64_t u0, u1;
        mtl_cpu_range(units, mtl_cpu_team_size(), mtl_cpu_thread_id(), &u0, &u1);
        int total = by_rows ? m : n;
        int lo = (int)(u0 * SGEMM_BLOCK_ALIGN), hi = (int)(u1 * SGEMM_BLOCK_ALIGN);
        if (hi > total)
            hi = total;
        if (lo < hi) {
            if (by_rows) /* rows lo..hi of C: rows of A, or columns when A is stored transposed */
                sgemm_block(trans_a, trans_b, hi - lo, n, k, alpha, trans_a ? a + lo : a + (int64_t)lo * lda, lda,
                            b, ldb, beta, c + (int64_t)lo * ldc, ldc);
            else
                sgemm_block(trans_a, trans_b, m, hi - lo, k, alpha, a, lda, trans_b ? b + (int64_t)lo * ldb : b + lo,
                            ldb, beta, c + lo, ldc);
        }
    }
}

/* Tiles of this many rows and columns keep both sides of the transpose in L1. */
#define TRANSPOSE_TILE 16

void mtl_cpu_transpose_strided(const float *restrict a, int64_t rows, int64_t cols, int64_t lda, float *restrict b,
                               int64_t ldb)
{
    for (int64_t i0 = 0; i0 < rows; i0 += TRANSPOSE_TILE) {
        int64_t i1 = i0 + TRANSPOSE_TILE < rows ? i0 + TRANSPOSE_TILE : rows;
        for (int64_t j0 = 0; j0 < cols; j0 += TRANSPOSE_TILE) {
            int64_t j1 = j0 + TRANSPOSE_TILE < cols ? j0 + TRANSPOSE_TILE : cols;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t i = i0; i < i1; i++)
                    b[j * ldb + i] = a[i * lda + j];
        }
    }
}

void mtl_cpu_transpose(const float *a, int rows, int cols, float *b)
{
    mtl_cpu_transpose_strided(a, rows, cols, cols, b, rows);
}
