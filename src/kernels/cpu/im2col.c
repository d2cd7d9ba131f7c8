/* im2col and col2im for 2D convolution (Caffe's column layout), with a contiguous inner loop
 * when the horizontal stride is 1. Each output row is split once into its padding part and its
 * in-image part, so the inner loops carry no bounds checks. */
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"

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

void mtl_cpu_im2col(const mtl_conv_geom *g, const float *im, float *col, int64_t ldcol)
{
    const int height = g->height, width = g->width, out_h = g->out_h, out_w = g->out_w;
    const int stride_h = g->stride_h, stride_w = g->stride_w;
    int64_t row = 0;
    for (int c = 0; c < g->channels; c++) {
        const float *plane = im + (int64_t)c * height * width; /* (height, width) */
        for (int ky = 0; ky < g->kernel_h; ky++) {
            for (int kx = 0; kx < g->kernel_w; kx++, row++) {
                float *dst = col + row * ldcol; /* (out_h, out_w) */
                const int x0 = kx * g->dilation_w - g->pad_w;
                const int y0 = ky * g->dilation_h - g->pad_h;
                int lo, hi;
                inside_range(x0, stride_w, width, out_w, &lo, &hi);
                for (int oy = 0; oy < out_h; oy++, dst += out_w) {
                    const int iy = y0 + oy * stride_h;
                    if (iy < 0 || iy >= height) {
                        memset(dst, 0, (size_t)out_w * sizeof(float));
                        continue;
                    }
                    const float *src = plane + (int64_t)iy * width; /* (width) */
                    for (int ox = 0; ox < lo; ox++)
                        dst[ox] = 0.0f;
                    if (stride_w == 1) {
                        for (int ox = lo; ox < hi; ox++)
                            dst[ox] = src[x0 + ox];
                    } else {
                        for (int ox = lo; ox < hi; ox++)
                            dst[ox] = src[x0 + ox * stride_w];
                    }
                    for (int ox = hi; ox < out_w; ox++)
                        dst[ox] = 0.0f;
                }
            }
        }
    }
}

void mtl_cpu_col2im(const mtl_conv_geom *g, const float *col, int64_t ldcol, float *im)
{
    const int height = g->height, width = g->width, out_h = g->out_h, out_w = g->out_w;
    const int stride_h = g->stride_h, stride_w = g->stride_w;
    memset(im, 0, (size_t)g->channels * height * width * sizeof(float));
    int64_t row = 0;
    for (int c = 0; c < g->channels; c++) {
        float *plane = im + (int64_t)c * height * width; /* (height, width) */
        for (int ky = 0; ky < g->kernel_h; ky++) {
            for (int kx = 0; kx < g->kernel_w; kx++, row++) {
                const float *src = col + row * ldcol; /* (out_h, out_w) */
                const int x0 = kx * g->dilation_w - g->pad_w;
                const int y0 = ky * g->dilation_h - g->pad_h;
                int lo, hi;
                inside_range(x0, stride_w, width, out_w, &lo, &hi);
                for (int oy = 0; oy < out_h; oy++, src += out_w) {
                    const int iy = y0 + oy * stride_h;
                    if (iy < 0 || iy >= height)
                        continue;
                    float *dst = plane + (int64_t)iy * width; /* (width) */
                    if (stride_w == 1) {
                        for (int ox = lo; ox < hi; ox++)
                            dst[x0 + ox] += src[ox];
                    } else {
                        for (int ox = lo; ox < hi; ox++)
                            dst[x0 + ox * stride_w] += src[ox];
                    }
                }
            }
        }
    }
}
