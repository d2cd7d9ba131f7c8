/* im2col and col2im for 2D convolution (Caffe's column layout). Rows of the column matrix are
 * short (out_w values), so per-row overhead decides the speed: the in-image part of each kernel
 * row and column is computed once per call, and stride-1 rows that lie wholly inside the image
 * are copied as blocks whose row length, when small, is a compile-time constant (a switch picks
 * the instance), which lets the compiler emit straight vector moves. */
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"

/* Kernels up to this size keep their ranges in a table on the stack; larger ones recompute. */
#define RANGE_TABLE_MAX 64

/* For one kernel offset along an axis: the input coordinate read by output 0, and the outputs
 * [lo, hi) whose input coordinate lies inside the image. */
typedef struct kernel_range {
    int start, lo, hi;
} kernel_range;

static kernel_range range_of(int k, int dilation, int pad, int stride, int size, int out)
{
    kernel_range r;
    r.start = k * dilation - pad;
    int lo = r.start >= 0 ? 0 : (-r.start + stride - 1) / stride;
    int hi = r.start >= size ? 0 : (size - r.start + stride - 1) / stride;
    r.lo = lo < out ? lo : out;
    r.hi = hi < out ? hi : out;
    if (r.hi < r.lo)
        r.hi = r.lo;
    return r;
}

static kernel_range row_range(const mtl_conv_geom *g, const kernel_range *table, int ky)
{
    return table ? table[ky] : range_of(ky, g->dilation_h, g->pad_h, g->stride_h, g->height, g->out_h);
}

static kernel_range col_range(const mtl_conv_geom *g, const kernel_range *table, int kx)
{
    return table ? table[kx] : range_of(kx, g->dilation_w, g->pad_w, g->stride_w, g->width, g->out_w);
}

/* Fills the tables (rows then columns) and returns 1, or 0 when the kernel is too large. */
static int fill_tables(const mtl_conv_geom *g, kernel_range *rows, kernel_range *cols)
{
    if (g->kernel_h > RANGE_TABLE_MAX || g->kernel_w > RANGE_TABLE_MAX)
        return 0;
    for (int ky = 0; ky < g->kernel_h; ky++)
        rows[ky] = range_of(ky, g->dilation_h, g->pad_h, g->stride_h, g->height, g->out_h);
    for (int kx = 0; kx < g->kernel_w; kx++)
        cols[kx] = range_of(kx, g->dilation_w, g->pad_w, g->stride_w, g->width, g->out_w);
    return 1;
}

/* ---- contiguous row copies and adds ---- */

/* Fixed-size memcpy pieces become plain vector moves; a plain element loop would be turned back
 * into a call to memcpy per row by the compiler, which costs more than the copy. */
static inline __attribute__((always_inline)) void copy_row(float *restrict dst, const float *restrict src, int n)
{
    int i = 0;
    for (; i + 4 <= n; i += 4)
        memcpy(dst + i, src + i, 4 * sizeof(float));
    if (n - i >= 2) {
        memcpy(dst + i, src + i, 2 * sizeof(float));
        i += 2;
    }
    if (i < n)
        dst[i] = src[i];
}

static inline __attribute__((always_inline)) void add_row(float *restrict dst, const float *restrict src, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] += src[i];
}

/* dst (rows x n, packed) = src (rows x n, rows `pitch` apart); for a constant n the loops unroll
 * into vector moves (here the element loop compiles better than copy_row's pieces). */
static inline __attribute__((always_inline)) void copy_block(float *restrict dst, const float *restrict src, int rows,
                                                             int n, int64_t pitch)
{
    for (int r = 0; r < rows; r++, dst += n, src += pitch)
        for (int i = 0; i < n; i++)
            dst[i] = src[i];
}

/* dst (rows x n, rows `pitch` apart) += src (rows x n, packed). */
static inline __attribute__((always_inline)) void add_block(float *restrict dst, const float *restrict src, int rows,
                                                            int n, int64_t pitch)
{
    for (int r = 0; r < rows; r++, dst += pitch, src += n)
        add_row(dst, src, n);
}

/* "Valid" convolutions (no padding, horizontal stride and all dilations 1, the common case)
 * read every kernel position as one out_h x out_w block: the whole image is one loop nest over
 * (c, ky, kx) with no per-row decisions. Instantiated for the usual small out_w as constants. */
static inline __attribute__((always_inline)) void valid_im2col(const mtl_conv_geom *g, const float *restrict im,
                                                               float *restrict col, int64_t ldcol, int out_w)
{
    const int64_t pitch = (int64_t)g->stride_h * g->width, plane = (int64_t)g->height * g->width;
    int64_t row = 0;
    for (int c = 0; c < g->channels; c++)
        for (int ky = 0; ky < g->kernel_h; ky++)
            for (int kx = 0; kx < g->kernel_w; kx++, row++)
                copy_block(col + row * ldcol, im + c * plane + (int64_t)ky * g->width + kx, g->out_h, out_w, pitch);
}

static inline __attribute__((always_inline)) void valid_col2im(const mtl_conv_geom *g, const float *restrict col,
                                                               int64_t ldcol, float *restrict im, int out_w)
{
    const int64_t pitch = (int64_t)g->stride_h * g->width, plane = (int64_t)g->height * g->width;
    /* kx outside ky: consecutive blocks then add at the same column alignment, so each load meets
     * its row's previous store whole (a store half-overlapped by the next load cannot be
     * forwarded and stalls the loop) */
    for (int c = 0; c < g->channels; c++)
        for (int kx = 0; kx < g->kernel_w; kx++)
            for (int ky = 0; ky < g->kernel_h; ky++) {
                int64_t row = ((int64_t)c * g->kernel_h + ky) * g->kernel_w + kx;
                add_block(im + c * plane + (int64_t)ky * g->width + kx, col + row * ldcol, g->out_h, out_w, pitch);
            }
}

#define WIDTH_CASES(X)                                                                                              \
    X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) X(20) X(24) X(28) X(32)

static void valid_im2col_any(const mtl_conv_geom *g, const float *restrict im, float *restrict col, int64_t ldcol)
{
#define IM2COL_CASE(N)                                                                                              \
    case N:                                                                                                         \
        valid_im2col(g, im, col, ldcol, N);                                                                         \
        return;
    switch (g->out_w) {
        WIDTH_CASES(IM2COL_CASE)
    default:
        valid_im2col(g, im, col, ldcol, g->out_w);
    }
#undef IM2COL_CASE
}

static void valid_col2im_any(const mtl_conv_geom *g, const float *restrict col, int64_t ldcol, float *restrict im)
{
#define COL2IM_CASE(N)                                                                                              \
    case N:                                                                                                         \
        valid_col2im(g, col, ldcol, im, N);                                                                         \
        return;
    switch (g->out_w) {
        WIDTH_CASES(COL2IM_CASE)
    default:
        valid_col2im(g, col, ldcol, im, g->out_w);
    }
#undef COL2IM_CASE
}

static int is_valid_conv(const mtl_conv_geom *g)
{
    return g->pad_h == 0 && g->pad_w == 0 && g->stride_w == 1 && g->dilation_h == 1 && g->dilation_w == 1;
}

/* ---- im2col / col2im ---- */

void mtl_cpu_im2col(const mtl_conv_geom *g, const float *restrict im, float *restrict col, int64_t ldcol)
{
    if (is_valid_conv(g)) {
        valid_im2col_any(g, im, col, ldcol);
        return;
    }
    const int height = g->height, width = g->width, out_h = g->out_h, out_w = g->out_w;
    const int stride_h = g->stride_h, stride_w = g->stride_w;
    kernel_range rows_table[RANGE_TABLE_MAX], cols_table[RANGE_TABLE_MAX];
    const int tables = fill_tables(g, rows_table, cols_table);
    int64_t row = 0;
    for (int c = 0; c < g->channels; c++) {
        const float *plane = im + (int64_t)c * height * width; /* (height, width) */
        for (int ky = 0; ky < g->kernel_h; ky++) {
            const kernel_range ry = row_range(g, tables ? rows_table : NULL, ky);
            for (int kx = 0; kx < g->kernel_w; kx++, row++) {
                const kernel_range rx = col_range(g, tables ? cols_table : NULL, kx);
                float *dst = col + row * ldcol; /* (out_h, out_w) */
                if (ry.lo > 0) /* rows in the padding */
                    memset(dst, 0, (size_t)ry.lo * out_w * sizeof(float));
                if (ry.hi < out_h)
                    memset(dst + (int64_t)ry.hi * out_w, 0, (size_t)(out_h - ry.hi) * out_w * sizeof(float));
                if (ry.hi <= ry.lo)
                    continue;
                /* the first in-image value of the first in-image row */
                const float *src = plane + (int64_t)(ry.start + ry.lo * stride_h) * width + rx.start + rx.lo * stride_w;
                const int64_t pitch = (int64_t)stride_h * width;
                for (int oy = ry.lo; oy < ry.hi; oy++, src += pitch) {
                    float *d = dst + (int64_t)oy * out_w;
                    for (int ox = 0; ox < rx.lo; ox++)
                        d[ox] = 0.0f;
                    if (stride_w == 1)
                        copy_row(d + rx.lo, src, rx.hi - rx.lo);
                    else
                        for (int ox = rx.lo; ox < rx.hi; ox++)
                            d[ox] = src[(ox - rx.lo) * stride_w];
                    for (int ox = rx.hi; ox < out_w; ox++)
                        d[ox] = 0.0f;
                }
            }
        }
    }
}

void mtl_cpu_col2im(const mtl_conv_geom *g, const float *restrict col, int64_t ldcol, float *restrict im)
{
    const int height = g->height, width = g->width, out_w = g->out_w;
    const int stride_h = g->stride_h, stride_w = g->stride_w;
    kernel_range rows_table[RANGE_TABLE_MAX], cols_table[RANGE_TABLE_MAX];
    const int tables = fill_tables(g, rows_table, cols_table);
    memset(im, 0, (size_t)g->channels * height * width * sizeof(float));
    if (is_valid_conv(g)) {
        valid_col2im_any(g, col, ldcol, im);
        return;
    }
    int64_t row = 0;
    for (int c = 0; c < g->channels; c++) {
        float *plane = im + (int64_t)c * height * width; /* (height, width) */
        for (int ky = 0; ky < g->kernel_h; ky++) {
            const kernel_range ry = row_range(g, tables ? rows_table : NULL, ky);
            for (int kx = 0; kx < g->kernel_w; kx++, row++) {
                const kernel_range rx = col_range(g, tables ? cols_table : NULL, kx);
                if (ry.hi <= ry.lo || rx.hi <= rx.lo)
                    continue;
                const float *src = col + row * ldcol + (int64_t)ry.lo * out_w; /* (out_h, out_w) from row ry.lo */
                float *dst = plane + (int64_t)(ry.start + ry.lo * stride_h) * width + rx.start + rx.lo * stride_w;
                const int64_t pitch = (int64_t)stride_h * width;
                for (int oy = ry.lo; oy < ry.hi; oy++, src += out_w, dst += pitch) {
                    if (stride_w == 1)
                        add_row(dst, src + rx.lo, rx.hi - rx.lo);
                    else
                        for (int ox = rx.lo; ox < rx.hi; ox++)
                            dst[(ox - rx.lo) * stride_w] += src[ox];
                }
            }
        }
    }
}
