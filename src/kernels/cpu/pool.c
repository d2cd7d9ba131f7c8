/* Max and average pooling over one plane, with Caffe's window clipping, plus a branch-free path
 * (four windows per SSE4.1 step where the target has it) for the common 2x2 stride-2 max pooling
 * whose windows all lie inside the plane. */
#include <string.h>

#ifdef __SSE4_1__
#include <smmintrin.h>
#endif

#include "kernels/cpu/cpu_kernels.h"

/* Window rows (or columns) [*lo, *hi) of output position o, clipped to [0, size). */
static inline void window(int o, int stride, int pad, int kernel, int size, int *lo, int *hi)
{
    int start = o * stride - pad;
    int end = start + kernel;
    *lo = start < 0 ? 0 : start;
    *hi = end > size ? size : end;
}

/* 2x2 windows at stride 2, all inside the plane: the first maximum of (a, b) and of (c, d), then
 * the second pair only if strictly larger, which is the row-major first maximum of all four. */
static void maxpool_2x2(const mtl_pool_geom *g, const float *in, float *out, int32_t *mask)
{
    const int width = g->width, out_w = g->out_w;
    for (int oy = 0; oy < g->out_h; oy++) {
        const float *r0 = in + (int64_t)(2 * oy) * width; /* (width) */
        const float *r1 = r0 + width;
        float *o = out + (int64_t)oy * out_w;
        int32_t *m = mask + (int64_t)oy * out_w;
        const int32_t base = 2 * oy * width;
        int ox = 0;
#ifdef __SSE4_1__
        /* four windows at a time: even and odd columns split by shuffles, the same comparisons */
        const __m128i step = _mm_setr_epi32(0, 2, 4, 6);
        for (; ox + 4 <= out_w; ox += 4) {
            __m128 u0 = _mm_loadu_ps(r0 + 2 * ox), u1 = _mm_loadu_ps(r0 + 2 * ox + 4);
            __m128 v0 = _mm_loadu_ps(r1 + 2 * ox), v1 = _mm_loadu_ps(r1 + 2 * ox + 4);
            __m128 a = _mm_shuffle_ps(u0, u1, _MM_SHUFFLE(2, 0, 2, 0));
            __m128 b = _mm_shuffle_ps(u0, u1, _MM_SHUFFLE(3, 1, 3, 1));
            __m128 c = _mm_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0));
            __m128 d = _mm_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1));
            __m128i ia = _mm_add_epi32(_mm_set1_epi32(base + 2 * ox), step);
            __m128i ic = _mm_add_epi32(ia, _mm_set1_epi32(width));
            __m128 b_gt = _mm_cmpgt_ps(b, a), d_gt = _mm_cmpgt_ps(d, c);
            __m128 top = _mm_blendv_ps(a, b, b_gt), bottom = _mm_blendv_ps(c, d, d_gt);
            __m128i itop = _mm_sub_epi32(ia, _mm_castps_si128(b_gt)); /* true lanes are -1: +1 */
            __m128i ibottom = _mm_sub_epi32(ic, _mm_castps_si128(d_gt));
            __m128 bottom_gt = _mm_cmpgt_ps(bottom, top);
            _mm_storeu_ps(o + ox, _mm_blendv_ps(top, bottom, bottom_gt));
            _mm_storeu_si128((__m128i *)(m + ox), _mm_castps_si128(_mm_blendv_ps(
                                                      _mm_castsi128_ps(itop), _mm_castsi128_ps(ibottom), bottom_gt)));
        }
#endif
        for (; ox < out_w; ox++) {
            float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
            int32_t ia = base + 2 * ox;
            float top = b > a ? b : a;
            int32_t itop = b > a ? ia + 1 : ia;
            float bottom = d > c ? d : c;
            int32_t ibottom = d > c ? ia + width + 1 : ia + width;
            o[ox] = bottom > top ? bottom : top;
            m[ox] = bottom > top ? ibottom : itop;
        }
    }
}

void mtl_cpu_maxpool_forward(const mtl_pool_geom *g, const float *in, float *out, int32_t *mask, float *top_mask)
{
    const int width = g->width, out_w = g->out_w;
    if (g->kernel_h == 2 && g->kernel_w == 2 && g->stride_h == 2 && g->stride_w == 2 && g->pad_h == 0 &&
        g->pad_w == 0 && 2 * g->out_h <= g->height && 2 * g->out_w <= g->width) {
        maxpool_2x2(g, in, out, mask);
    } else {
        for (int oy = 0; oy < g->out_h; oy++) {
            int y0, y1;
            window(oy, g->stride_h, g->pad_h, g->kernel_h, g->height, &y0, &y1);
            for (int ox = 0; ox < out_w; ox++) {
                int x0, x1;
                window(ox, g->stride_w, g->pad_w, g->kernel_w, width, &x0, &x1);
                /* starting from the first value (not -FLT_MAX as Caffe) keeps NaN windows NaN
                 * and the mask always valid; finite inputs pick the same winner */
                int32_t best_i = y0 * width + x0;
                float best = in[best_i];
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++)
                        if (in[y * width + x] > best) {
                            best = in[y * width + x];
                            best_i = y * width + x;
                        }
                out[oy * out_w + ox] = best;
                mask[oy * out_w + ox] = best_i;
            }
        }
    }
    if (top_mask) {
        int n = g->out_h * out_w;
        for (int i = 0; i < n; i++)
            top_mask[i] = (float)mask[i];
    }
}

void mtl_cpu_maxpool_backward(const mtl_pool_geom *g, const float *dout, const int32_t *mask, float *din)
{
    memset(din, 0, (size_t)g->height * g->width * sizeof(float));
    int n = g->out_h * g->out_w;
    for (int i = 0; i < n; i++)
        din[mask[i]] += dout[i];
}

/* Caffe's divisor: the window clipped to the padded plane (so padding counts), not to the plane. */
static inline int ave_divisor(int oy, int ox, const mtl_pool_geom *g)
{
    int ys = oy * g->stride_h - g->pad_h, xs = ox * g->stride_w - g->pad_w;
    int ye = ys + g->kernel_h, xe = xs + g->kernel_w;
    if (ye > g->height + g->pad_h)
        ye = g->height + g->pad_h;
    if (xe > g->width + g->pad_w)
        xe = g->width + g->pad_w;
    return (ye - ys) * (xe - xs);
}

void mtl_cpu_avepool_forward(const mtl_pool_geom *g, const float *in, float *out)
{
    const int width = g->width;
    for (int oy = 0; oy < g->out_h; oy++) {
        int y0, y1;
        window(oy, g->stride_h, g->pad_h, g->kernel_h, g->height, &y0, &y1);
        for (int ox = 0; ox < g->out_w; ox++) {
            int x0, x1;
            window(ox, g->stride_w, g->pad_w, g->kernel_w, width, &x0, &x1);
            float sum = 0.0f;
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++)
                    sum += in[y * width + x];
            out[oy * g->out_w + ox] = sum / (float)ave_divisor(oy, ox, g);
        }
    }
}

void mtl_cpu_avepool_backward(const mtl_pool_geom *g, const float *dout, float *din)
{
    const int width = g->width;
    memset(din, 0, (size_t)g->height * width * sizeof(float));
    for (int oy = 0; oy < g->out_h; oy++) {
        int y0, y1;
        window(oy, g->stride_h, g->pad_h, g->kernel_h, g->height, &y0, &y1);
        for (int ox = 0; ox < g->out_w; ox++) {
            int x0, x1;
            window(ox, g->stride_w, g->pad_w, g->kernel_w, width, &x0, &x1);
            float share = dout[oy * g->out_w + ox] / (float)ave_divisor(oy, ox, g);
            for (int y = y0; y < y1; y++)
                for (int x = x0; x < x1; x++)
                    din[y * width + x] += share;
        }
    }
}
