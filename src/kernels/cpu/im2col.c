/* im2col and col2im for 2D convolution (Caffe's column layout). The in-image part of every
 * column row is found once per call (not per row), so the inner loops are plain copies or adds;
 * the horizontal stride 1 case, by far the most common, gets contiguous inner loops. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"

/* Kernel widths up to this keep their column ranges on the stack. */
#define RANGES_ON_STACK 32

/* Output columns [*lo, *hi) whose input column x0 + ox * stride lies inside [0, width). */
static void inside_range(int x0, int stride, int width, int out, int *lo, int *hi)
{
    int a = x0 >= 0 ? 0 : (-x0 + stride - 1) / stride;
    int b = x0 >= width ? 0 : (width - x0 + stride - 1) / stride;
    if (a > out)
        a = out;
    if (b > out)
        b = out;
    if (b < a)
        b = a;
    *lo = a;
    *hi = b;
}

/* Per kernel column kx: its input offset x0 and the output columns [lo, hi) that read the image.
 * ranges holds 3 ints per kernel column. */
static void column_ranges(const mtl_conv_geom *g, int *ranges)
{
    for (int kx = 0; kx < g->kernel_w; kx++) {
        int x0 = kx * g->dilation_w - g->pad_w;
        ranges[3 * kx] = x0;
        inside_range(x0, g->stride_w, g->width, g->out_w, &ranges[3 * kx + 1], &ranges[3 * kx + 2]);
    }
}

static void im2col_rows(const mtl_conv_geom *g, const int *ranges, const float *restrict im, float *restrict col,
                        int64_t ldcol)
{
    const int height = g->height, width = g->width, out_h = g->out_h, out_w = g->out_w;
    const int stride_h = g->stride_h, stride_w = g->stride_w;
    int64_t row = 0;
    for (int c = 0; c < g->channels; c++) {
        const float *plane = im + (int64_t)c * height * width; /* (height, width) */
        for (int ky = 0; ky < g->kernel_h; ky++) {
            const int y0 = ky * g->dilation_h - g->pad_h;
            for (int kx = 0; kx < g->kernel_w; kx++, row++) {
                const int x0 = ranges[3 * kx], lo = ranges[3 * kx + 1], hi = ranges[3 * kx + 2];
                float *dst = col + row * ldcol; /* (out_h, out_w) */
                for (int oy = 0; oy < out_h; oy++, dst += out_w) {
                    const int iy = y0 + oy * stride_h;
                    if (iy < 0 || iy >= height) {
                        memset(dst, 0, (size_t)out_w * sizeof(float));
                        continue;
                    }
                    const float *src = plane + (int64_t)iy * width + x0 + lo * stride_w; /* first in-image value */
                    for (int ox = 0; ox < lo; ox++)
                        dst[ox] = 0.0f;
                    if (stride_w == 1) {
                        float *d = dst + lo;
                        const int n = hi - lo;
                        for (int i = 0; i < n; i++)
                            d[i] = src[i];
                    } else {
                        for (int ox = lo; ox < hi; ox++)
                            dst[ox] = src[(ox - lo) * stride_w];
                    }
                    for (int ox = hi; ox < out_w; ox++)
                        dst[ox] = 0.0f;
                }
            }
        }
    }
}

static void col2im_rows(const mtl_conv_geom *g, const int *ranges, const float *restrict col, int64_t ldcol,
                        float *restrict im)
{
    const int height = g->height, width = g->width, out_h = g->out_h, out_w = g->out_w;
    const int stride_h = g->stride_h, stride_w = g->stride_w;
    memset(im, 0, (size_t)g->channels * height * width * sizeof(float));
    int64_t row = 0;
    for (int c = 0; c < g->channels; c++) {
        float *plane = im + (int64_t)c * height * width; /* (height, width) */
        for (int ky = 0; ky < g->kernel_h; ky++) {
            const int y0 = ky * g->dilation_h - g->pad_h;
            for (int kx = 0; kx < g->kernel_w; kx++, row++) {
                const int x0 = ranges[3 * kx], lo = ranges[3 * kx + 1], hi = ranges[3 * kx + 2];
                const float *src = col + row * ldcol; /* (out_h, out_w) */
                for (int oy = 0; oy < out_h; oy++, src += out_w) {
                    const int iy = y0 + oy * stride_h;
                    if (iy < 0 || iy >= height)
                        continue;
                    float *dst = plane + (int64_t)iy * width + x0 + lo * stride_w; /* first in-image value */
                    if (stride_w == 1) {
                        const float *s = src + lo;
                        const int n = hi - lo;
                        for (int i = 0; i < n; i++)
                            dst[i] += s[i];
                    } else {
                        for (int ox = lo; ox < hi; ox++)
                            dst[(ox - lo) * stride_w] += src[ox];
                    }
                }
            }
        }
    }
}

void mtl_cpu_im2col(const mtl_conv_geom *g, const float *im, float *col, int64_t ldcol)
{
    int stack[3 * RANGES_ON_STACK];
    int *ranges = g->kernel_w <= RANGES_ON_STACK ? stack : malloc(3 * (size_t)g->kernel_w * sizeof(int));
    if (!ranges) { /* no memory for a huge kernel's table: one range at a time */
        mtl_conv_geom one = *g;
        one.kernel_w = 1;
        int r[3];
        for (int c = 0; c < g->channels; c++)
            for (int ky = 0; ky < g->kernel_h; ky++)
                for (int kx = 0; kx < g->kernel_w; kx++) {
                    one.channels = 1;
                    one.kernel_h = 1;
                    one.pad_w = g->pad_w - kx * g->dilation_w;
                    one.pad_h = g->pad_h - ky * g->dilation_h;
                    column_ranges(&one, r);
                    int64_t row = ((int64_t)c * g->kernel_h + ky) * g->kernel_w + kx;
                    im2col_rows(&one, r, im + (int64_t)c * g->height * g->width, col + row * ldcol, ldcol);
                }
        return;
    }
    column_ranges(g, ranges);
    im2col_rows(g, ranges, im, col, ldcol);
    if (ranges != stack)
        free(ranges);
}

void mtl_cpu_col2im(const mtl_conv_geom *g, const float *col, int64_t ldcol, float *im)
{
    int stack[3 * RANGES_ON_STACK];
    int *ranges = g->kernel_w <= RANGES_ON_STACK ? stack : malloc(3 * (size_t)g->kernel_w * sizeof(int));
    if (!ranges) {
        ranges = stack;
        (void)ranges;
    }
    column_ranges(g, ranges);
    col2im_rows(g, ranges, col, ldcol, im);
    if (ranges != stack)
        free(ranges);
}
