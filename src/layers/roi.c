/* Region-of-interest feature extraction for two-stage detectors: ROIPooling (Fast R-CNN: the max
 * over integer bins of each roi's rounded box) and ROIAlign (Mask R-CNN: the average of bilinear
 * samples in each bin, nothing rounded). Bottoms: features (N, C, H, W) and rois (R, 5), rows
 * [batch_index, x1, y1, x2, y2] in input pixels; top (R, C, pooled_h, pooled_w). Forward threads
 * take rois; backward threads take channels, so each feature gradient value has one writer and
 * sums in roi order whatever the thread count. The rois get no gradient (they come from layers
 * without backward: approximate joint training). */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_kernels.h"
#include "layers/layers.h"

/* below this many top values a parallel loop is not worth waking the thread team */
#define ROI_PARALLEL_MIN 4096
/* scaled roi corners are clamped to this before ROIPooling turns them into ints: far outside any
 * feature map, and sums of a few of them still fit an int */
#define ROI_COORD_LIMIT 268435456.0f

/* ROIAlign hands its threads blocks of this many channels (64 bytes: whole vectors, and
 * neighbouring threads seldom write the same cache line) */
#define ROI_TILE 16

/* a bound on pooled_h and pooled_w that keeps bin arithmetic in int and float exact */
#define ROI_MAX_POOLED 65536

typedef struct axis_tap {
    int32_t lo, hi;  /* the two neighbouring rows (columns); -1: the sample lies off the map */
    float wlo, whi;  /* their bilinear weights */
} axis_tap;

typedef struct roi_state {
    int pooled_h, pooled_w;
    float spatial_scale;
    int sampling_ratio;   /* ROIAlign: samples per bin and axis; 0: adaptive */
    int aligned;          /* ROIAlign: pixel centres at +0.5 (Detectron2 aligned=True) */
    int32_t *batch;       /* per roi: its image, checked by the last forward */
    int64_t batch_cap;
    int32_t *argmax;      /* ROIPooling: in-plane index of each top value's max, -1 for an empty bin */
    int64_t argmax_cap;
    /* ROIAlign: per roi its sampling grid (grid[2r] rows, grid[2r + 1] columns per bin) and where
     * its taps start in `taps`: pooled_h * rows taps along y, then pooled_w * columns along x. */
    int32_t *grid;
    int64_t *tap_start;
    int64_t roi_cap;
    axis_tap *taps;
    int64_t taps_cap;
    /* ROIAlign: the features channels-last (N, H, W, C), so that a tap reads (or, in backward,
     * adds to) all channels of a cell contiguously; backward keeps the feature gradient there
     * first. */
    float *hwc;
    int64_t hwc_cap;
    int threads;          /* ROIAlign: team size the per-thread scratch is sized for */
    float *work;          /* ROIAlign: threads x work_count */
    int64_t work_count, work_cap;
} roi_state;

/* Reads pooled_h, pooled_w and spatial_scale from `msg` (shared by both layers). */
static mtl_status roi_read_common(mtl_layer *l, mtl_cfg_node *p, const char *msg, roi_state *s, mtl_error *err)
{
    int64_t h, w;
    double scale;
    MTL_TRY(mtl_cfg_int_range(p, "pooled_h", 0, 1, INT64_MAX, &h, err));
    MTL_TRY(mtl_cfg_int_range(p, "pooled_w", 0, 1, INT64_MAX, &w, err));
    MTL_TRY(mtl_cfg_float(p, "spatial_scale", 1.0, &scale, err));
    if (h == 0 || w == 0)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%s needs pooled_h and pooled_w (the output size, >= 1)", msg);
    if (h > ROI_MAX_POOLED || w > ROI_MAX_POOLED)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%s pooled size %lldx%lld is too large (at most %d each way)",
                              msg, (long long)h, (long long)w, ROI_MAX_POOLED);
    if (!(scale > 0 && scale <= FLT_MAX))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "%s spatial_scale is %g: it must be positive and finite (1 / the feature stride)", msg,
                              scale);
    s->pooled_h = (int)h;
    s->pooled_w = (int)w;
    s->spatial_scale = (float)scale;
    return MTL_OK;
}

static mtl_status roi_pooling_setup(mtl_layer *l, mtl_error *err)
{
    roi_state *s = mtl_calloc_or_fail(1, sizeof(*s), err, "ROIPooling state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "roi_pooling_param", &p, err));
    return roi_read_common(l, p, "roi_pooling_param", s, err);
}

static mtl_status roi_align_setup(mtl_layer *l, mtl_error *err)
{
    roi_state *s = mtl_calloc_or_fail(1, sizeof(*s), err, "ROIAlign state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    mtl_cfg_node *p;
    int64_t ratio;
    MTL_TRY(mtl_layer_param_message(l, "roi_align_param", &p, err));
    MTL_TRY(roi_read_common(l, p, "roi_align_param", s, err));
    MTL_TRY(mtl_cfg_int_range(p, "sampling_ratio", 2, 0, 1024, &ratio, err));
    MTL_TRY(mtl_cfg_bool(p, "aligned", 1, &s->aligned, err));
    s->sampling_ratio = (int)ratio;
    return MTL_OK;
}

/* Grows a buffer of `size`-byte elements to hold n; contents are not kept. */
static int roi_grow(void **buf, int64_t *cap, int64_t n, size_t size)
{
    if (n <= *cap)
        return 1;
    void *p = malloc((size_t)n * size);
    if (!p)
        return 0;
    free(*buf);
    *buf = p;
    *cap = n;
    return 1;
}

/* Shared by both layers: features (N, C, H, W) and rois (R, 5) (or (R, 5, 1, 1)) give the top
 * (R, C, pooled_h, pooled_w). */
static mtl_status roi_reshape(mtl_layer *l, mtl_error *err)
{
    roi_state *s = l->priv;
    const mtl_tensor *x = l->bottoms[0], *rois = l->bottoms[1];
    char have[128];
    if (x->ndim != 4)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "the features (bottom 0) have shape %s: 4 axes (N, C, H, W) wanted",
                              mtl_tensor_shape_str(x, have, sizeof(have)));
    if (x->shape[2] < 1 || x->shape[3] < 1 || (int64_t)x->shape[2] * x->shape[3] > INT32_MAX)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "the feature planes are %dx%d: they must be non-empty and below "
                              "2^31 values", x->shape[2], x->shape[3]);
    if (rois->ndim < 2 || mtl_tensor_count_range(rois, 1, rois->ndim) != 5)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "the rois (bottom 1) have shape %s: (R, 5) wanted, rows [batch_index, x1, y1, x2, y2]",
                              mtl_tensor_shape_str(rois, have, sizeof(have)));
    int n_rois = rois->shape[0];
    MTL_TRY(mtl_tensor_reshape4(l->tops[0], n_rois, x->shape[1], s->pooled_h, s->pooled_w, err));
    if (!roi_grow((void **)&s->batch, &s->batch_cap, n_rois, sizeof(int32_t)))
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %d rois", n_rois);
    return MTL_OK;
}

/* Checks every roi (an image of the batch, finite corners) and keeps its image index. */
static mtl_status roi_check(mtl_layer *l, mtl_error *err)
{
    roi_state *s = l->priv;
    const float *rois = l->bottoms[1]->data; /* (R, 5) */
    int n_rois = l->bottoms[1]->shape[0], n_images = l->bottoms[0]->shape[0];
    for (int r = 0; r < n_rois; r++) {
        const float *roi = rois + (int64_t)r * 5;
        if (!(roi[0] >= 0 && roi[0] < (float)n_images && roi[0] == floorf(roi[0])))
            return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT,
                                  "roi %d has batch index %g: it must be an integer in [0, %d), the images of the "
                                  "features (bottom 0)",
                                  r, (double)roi[0], n_images);
        for (int k = 1; k < 5; k++)
            if (!isfinite(roi[k]))
                return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT, "roi %d has corner coordinate %g (value %d of its row)",
                                      r, (double)roi[k], k);
        s->batch[r] = (int32_t)roi[0];
    }
    return MTL_OK;
}

/* The rois are constants: a requested gradient for them is zeros. */
static void roi_zero_rois_grad(mtl_layer *l)
{
    if (l->propagate_down[1])
        mtl_tensor_zero_grad(l->bottoms[1]);
}

static void roi_release(mtl_layer *l)
{
    roi_state *s = l->priv;
    if (s) {
        free(s->batch);
        free(s->argmax);
        free(s->grid);
        free(s->tap_start);
        free(s->taps);
        free(s->hwc);
        free(s->work);
    }
    free(s);
    l->priv = NULL;
}

/* ---- ROIPooling ------------------------------------------------------------------------------
 * Fast R-CNN's layer as its Caffe implements it: corners round(x1 * scale) .. round(x2 * scale),
 * both included (Caffe's boxes count x2 as a pixel), at least one cell each way; bin (ph, pw)
 * covers rows floor(ph * bin_h) .. ceil((ph + 1) * bin_h) of it, clipped to the map; the top is
 * the bin's max (the first one in row order on ties) or 0 for an empty bin. */

static int roi_round_coord(float v)
{
    v = roundf(v);
    return (int)fminf(fmaxf(v, -ROI_COORD_LIMIT), ROI_COORD_LIMIT);
}

static int clamp_int(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* One roi over its image's features x (C, H, W): y and argmax are its (C, pooled_h, pooled_w). */
static void roi_pool_one(const roi_state *s, const float *roi /* 5 */, const float *x, int channels, int height,
                         int width, float *y, int32_t *argmax)
{
    int start_w = roi_round_coord(roi[1] * s->spatial_scale), start_h = roi_round_coord(roi[2] * s->spatial_scale);
    int end_w = roi_round_coord(roi[3] * s->spatial_scale), end_h = roi_round_coord(roi[4] * s->spatial_scale);
    int roi_h = end_h - start_h + 1 > 1 ? end_h - start_h + 1 : 1;
    int roi_w = end_w - start_w + 1 > 1 ? end_w - start_w + 1 : 1;
    /* float as in Caffe, so bin edges round the same way */
    float bin_h = (float)roi_h / (float)s->pooled_h, bin_w = (float)roi_w / (float)s->pooled_w;
    const int64_t plane = (int64_t)height * width, out_plane = (int64_t)s->pooled_h * s->pooled_w;
    for (int c = 0; c < channels; c++) {
        const float *xc = x + c * plane;
        for (int ph = 0; ph < s->pooled_h; ph++) {
            int hstart = clamp_int((int)floorf((float)ph * bin_h) + start_h, 0, height);
            int hend = clamp_int((int)ceilf((float)(ph + 1) * bin_h) + start_h, 0, height);
            for (int pw = 0; pw < s->pooled_w; pw++) {
                int wstart = clamp_int((int)floorf((float)pw * bin_w) + start_w, 0, width);
                int wend = clamp_int((int)ceilf((float)(pw + 1) * bin_w) + start_w, 0, width);
                int64_t o = c * out_plane + (int64_t)ph * s->pooled_w + pw;
                if (hend <= hstart || wend <= wstart) {
                    y[o] = 0.0f;
                    argmax[o] = -1;
                    continue;
                }
                float best = -FLT_MAX;
                int32_t at = -1;
                for (int h = hstart; h < hend; h++)
                    for (int w = wstart; w < wend; w++)
                        if (xc[(int64_t)h * width + w] > best) {
                            best = xc[(int64_t)h * width + w];
                            at = h * width + w;
                        }
                y[o] = best;
                argmax[o] = at;
            }
        }
    }
}

static mtl_status roi_pooling_reshape(mtl_layer *l, mtl_error *err)
{
    roi_state *s = l->priv;
    MTL_TRY(roi_reshape(l, err));
    if (!roi_grow((void **)&s->argmax, &s->argmax_cap, l->tops[0]->count, sizeof(int32_t)))
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for a %lld-value argmax",
                              (long long)l->tops[0]->count);
    return MTL_OK;
}

static mtl_status roi_pooling_forward(mtl_layer *l, mtl_error *err)
{
    roi_state *s = l->priv;
    MTL_TRY(roi_check(l, err));
    const mtl_tensor *x = l->bottoms[0];
    const int channels = x->shape[1], height = x->shape[2], width = x->shape[3];
    const int n_rois = l->bottoms[1]->shape[0];
    const int64_t image = (int64_t)channels * height * width, per_roi = (int64_t)channels * s->pooled_h * s->pooled_w;
    const float *rois = l->bottoms[1]->data; /* (R, 5) */
    float *y = l->tops[0]->data;             /* (R, C, pooled_h, pooled_w) */
MTL_OMP("omp parallel for schedule(dynamic, 1) if (n_rois * per_roi >= ROI_PARALLEL_MIN)")
    for (int r = 0; r < n_rois; r++)
        roi_pool_one(s, rois + (int64_t)r * 5, x->data + s->batch[r] * image, channels, height, width,
                     y + r * per_roi, s->argmax + r * per_roi);
    return MTL_OK;
}

static void roi_pooling_backward(mtl_layer *l)
{
    roi_zero_rois_grad(l);
    if (!l->propagate_down[0])
        return;
    roi_state *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    const int n_images = x->shape[0], channels = x->shape[1];
    const int64_t plane = (int64_t)x->shape[2] * x->shape[3], out_plane = (int64_t)s->pooled_h * s->pooled_w;
    const int n_rois = l->bottoms[1]->shape[0];
    const float *dy = l->tops[0]->grad; /* (R, C, pooled_h, pooled_w) */
    float *dx = x->grad;                /* (N, C, H, W) */
MTL_OMP("omp parallel for schedule(static) if (x->count + l->tops[0]->count >= ROI_PARALLEL_MIN)")
    for (int c = 0; c < channels; c++) {
        for (int n = 0; n < n_images; n++)
            memset(dx + ((int64_t)n * channels + c) * plane, 0, (size_t)plane * sizeof(float));
        for (int r = 0; r < n_rois; r++) {
            float *dxc = dx + ((int64_t)s->batch[r] * channels + c) * plane;
            const int64_t o = ((int64_t)r * channels + c) * out_plane;
            for (int64_t i = 0; i < out_plane; i++)
                if (s->argmax[o + i] >= 0)
                    dxc[s->argmax[o + i]] += dy[o + i];
        }
    }
}

const mtl_layer_ops mtl_layer_roi_pooling = {
    .type = "ROIPooling",
    .min_bottoms = 2,
    .max_bottoms = 2,
    .min_tops = 1,
    .max_tops = 1,
    .setup = roi_pooling_setup,
    .reshape = roi_pooling_reshape,
    .forward = roi_pooling_forward,
    .backward = roi_pooling_backward,
    .release = roi_release,
};

/* ---- ROIAlign --------------------------------------------------------------------------------
 * Detectron2's ROIAlign: the box scaled to the map (minus half a cell when aligned, so that cell
 * (i, j) is centred at (j + 0.5, i + 0.5) as in mtl's continuous box convention; otherwise at
 * least one cell each way, as in the original Mask R-CNN), cut into pooled_h x pooled_w bins;
 * each bin averages grid_h x grid_w bilinear samples at the centres of a regular sub-grid
 * (sampling_ratio each way, or ceil(bin size) when 0). A sample more than one cell off the map
 * counts as 0; one within a cell of it reads the border. Bilinear weights factor into a y part
 * and an x part, so each roi keeps pooled_h * grid_h row taps and pooled_w * grid_w column taps
 * (from forward, for backward) instead of four per sample.
 * Taps depend on the roi, not the channel, so both passes work on a channels-last copy of the
 * features (or of their gradient): each tap is then one contiguous, vectorised run over the
 * channels, and the tap table is walked once per roi (per channel block in backward) rather than
 * once per channel. Every value is still the same sum, in the same order, as the per-channel loop
 * of Detectron2, so the results do not depend on the layout (nor on the thread count). */

/* The taps of coordinate v along an axis of `size` cells (Detectron2's bilinear_interpolate). */
static axis_tap roi_align_tap(float v, int size)
{
    axis_tap t = {-1, -1, 0.0f, 0.0f};
    if (!(v >= -1.0f && v <= (float)size))
        return t;
    if (v <= 0)
        v = 0;
    int lo = (int)v;
    if (lo >= size - 1) {
        t.lo = t.hi = size - 1;
        t.wlo = 1.0f;
        return t;
    }
    float frac = v - (float)lo;
    t.lo = lo;
    t.hi = lo + 1;
    t.wlo = 1.0f - frac;
    t.whi = frac;
    return t;
}

/* The roi's start and size along one axis, in map cells. */
static void roi_align_span(const roi_state *s, float a, float b, float *start, float *size)
{
    float offset = s->aligned ? 0.5f : 0.0f;
    *start = a * s->spatial_scale - offset;
    *size = b * s->spatial_scale - offset - *start;
    if (!s->aligned && *size < 1.0f)
        *size = 1.0f;
}

/* Samples per bin along an axis: sampling_ratio, or ceil(bin size) (0 for an empty or inverted
 * roi, which then pools to 0 as in Detectron2), capped at the map size + 2: only a roi larger
 * than the band where samples can land reaches the cap, which keeps a wild box from costing
 * unbounded time. */
static int roi_align_grid(const roi_state *s, float size, int pooled, int map_size)
{
    if (s->sampling_ratio > 0)
        return s->sampling_ratio;
    double g = ceil((double)size / pooled);
    if (!(g >= 0))
        return 0;
    return g > map_size + 2 ? map_size + 2 : (int)g;
}

/* Taps along one axis for every bin and sample: out[p * grid + i]. */
static void roi_align_axis_taps(float start, float size, int pooled, int grid, int map_size, axis_tap *out)
{
    float bin = size / (float)pooled;
    for (int p = 0; p < pooled; p++)
        for (int i = 0; i < grid; i++)
            out[p * grid + i] = roi_align_tap(start + (float)p * bin + ((float)i + 0.5f) * bin / (float)grid, map_size);
}


/* Asks for the n floats at p ahead of their use: the next roi's block of the top gradient, which
 * is too large to stay cached from the layer above and is read in a transposing order. */
static void roi_prefetch(const float *p, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16)
        __builtin_prefetch(p + i, 0, 2);
}

/* acc[c] += channel c's bilinear sample from the cells x00 x01 (upper row) x10 x11 (lower row),
 * each n channels long: Detectron2's sum, term for term, vectorised across channels. */
static inline void roi_align_gather(float *restrict acc, const float *restrict x00, const float *restrict x01,
                                    const float *restrict x10, const float *restrict x11, axis_tap a, axis_tap b, int n)
{
    for (int c = 0; c < n; c++)
        acc[c] += a.wlo * (b.wlo * x00[c] + b.whi * x01[c]) + a.whi * (b.wlo * x10[c] + b.whi * x11[c]);
}

/* dx[c] += g[c] * w for the n channels of one cell. */
static inline void roi_align_scatter(float *restrict dx, const float *restrict g, float w, int n)
{
    for (int c = 0; c < n; c++)
        dx[c] += g[c] * w;
}

static mtl_status roi_align_reshape(mtl_layer *l, mtl_error *err)
{
    roi_state *s = l->priv;
    MTL_TRY(roi_reshape(l, err));
    const mtl_tensor *x = l->bottoms[0];
    int n_rois = l->bottoms[1]->shape[0];
    if (n_rois > s->roi_cap) {
        int32_t *grid = malloc((size_t)n_rois * 2 * sizeof(int32_t));
        int64_t *start = malloc((size_t)n_rois * sizeof(int64_t));
        if (!grid || !start) {
            free(grid);
            free(start);
            return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %d rois", n_rois);
        }
        free(s->grid);
        free(s->tap_start);
        s->grid = grid;
        s->tap_start = start;
        s->roi_cap = n_rois;
    }
    if (!roi_grow((void **)&s->hwc, &s->hwc_cap, x->count, sizeof(float)))
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for a channels-last copy of %lld feature values",
                              (long long)x->count);
    /* per thread: one roi's top channels last (forward), or a block of its channels and two
     * rows of weighted gradients (backward) */
    s->threads = mtl_cpu_max_threads();
    s->work_count = n_rois > 0 ? ((int64_t)s->pooled_h * s->pooled_w + 2) * x->shape[1] : 0;
    if (!roi_grow((void **)&s->work, &s->work_cap, s->threads * s->work_count, sizeof(float)))
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %d x %lld values of scratch", s->threads,
                              (long long)s->work_count);
    return MTL_OK;
}

static mtl_status roi_align_forward(mtl_layer *l, mtl_error *err)
{
    roi_state *s = l->priv;
    MTL_TRY(roi_check(l, err));
    const mtl_tensor *x = l->bottoms[0];
    const int n_images = x->shape[0], channels = x->shape[1], height = x->shape[2], width = x->shape[3];
    const int pooled_h = s->pooled_h, pooled_w = s->pooled_w;
    const int n_rois = l->bottoms[1]->shape[0];
    const float *rois = l->bottoms[1]->data; /* (R, 5) */

    /* grids first (they size the tap table), then taps and values in parallel */
    int64_t n_taps = 0;
    for (int r = 0; r < n_rois; r++) {
        const float *roi = rois + (int64_t)r * 5;
        float y0, h, x0, w;
        roi_align_span(s, roi[2], roi[4], &y0, &h);
        roi_align_span(s, roi[1], roi[3], &x0, &w);
        s->grid[2 * r] = roi_align_grid(s, h, pooled_h, height);
        s->grid[2 * r + 1] = roi_align_grid(s, w, pooled_w, width);
        s->tap_start[r] = n_taps;
        n_taps += (int64_t)pooled_h * s->grid[2 * r] + (int64_t)pooled_w * s->grid[2 * r + 1];
    }
    if (!roi_grow((void **)&s->taps, &s->taps_cap, n_taps, sizeof(axis_tap)))
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %lld sampling taps", (long long)n_taps);
    if (n_rois == 0 || channels == 0)
        return MTL_OK;

    const int64_t plane = (int64_t)height * width, image = channels * plane, row = (int64_t)width * channels;
    const int64_t out_plane = (int64_t)pooled_h * pooled_w, per_roi = channels * out_plane;
    const int blocks = (channels + ROI_TILE - 1) / ROI_TILE;
    float *hwc = s->hwc; /* (N, H, W, C) */
    float *y = l->tops[0]->data; /* (R, C, pooled_h, pooled_w) */
MTL_OMP("omp parallel for num_threads(s->threads) schedule(static) if (x->count >= ROI_PARALLEL_MIN)")
    for (int64_t k = 0; k < (int64_t)n_images * blocks; k++) {
        const int64_t n = k / blocks, c0 = k % blocks * ROI_TILE;
        const int64_t c1 = c0 + ROI_TILE < channels ? c0 + ROI_TILE : channels;
        mtl_cpu_transpose_strided(x->data + n * image + c0 * plane, c1 - c0, plane, plane, hwc + n * image + c0, channels);
    }
MTL_OMP("omp parallel num_threads(s->threads) if (n_rois * per_roi >= ROI_PARALLEL_MIN)")
    {
        float *acc = s->work + mtl_cpu_thread_id() * s->work_count; /* (pooled_h * pooled_w, C) */
MTL_OMP("omp for schedule(dynamic, 1)")
        for (int r = 0; r < n_rois; r++) {
            const float *roi = rois + (int64_t)r * 5;
            const int gh = s->grid[2 * r], gw = s->grid[2 * r + 1];
            axis_tap *ty = s->taps + s->tap_start[r], *tx = ty + (int64_t)pooled_h * gh;
            float y0, h, x0, w;
            roi_align_span(s, roi[2], roi[4], &y0, &h);
            roi_align_span(s, roi[1], roi[3], &x0, &w);
            roi_align_axis_taps(y0, h, pooled_h, gh, height, ty);
            roi_align_axis_taps(x0, w, pooled_w, gw, width, tx);
            const float inv_count = 1.0f / (float)(gh * gw > 1 ? gh * gw : 1);
            const float *xb = hwc + s->batch[r] * image;
            for (int ph = 0; ph < pooled_h; ph++)
                for (int pw = 0; pw < pooled_w; pw++) {
                    float *accb = acc + ((int64_t)ph * pooled_w + pw) * channels;
                    memset(accb, 0, (size_t)channels * sizeof(float));
                    for (int iy = 0; iy < gh; iy++) {
                        const axis_tap a = ty[ph * gh + iy];
                        if (a.lo < 0)
                            continue;
                        const float *row_lo = xb + a.lo * row, *row_hi = xb + a.hi * row;
                        for (int ix = 0; ix < gw; ix++) {
                            const axis_tap b = tx[pw * gw + ix];
                            if (b.lo < 0)
                                continue;
                            roi_align_gather(accb, row_lo + (int64_t)b.lo * channels, row_lo + (int64_t)b.hi * channels,
                                             row_hi + (int64_t)b.lo * channels, row_hi + (int64_t)b.hi * channels, a, b,
                                             channels);
                        }
                    }
                    for (int c = 0; c < channels; c++)
                        accb[c] *= inv_count;
                }
            mtl_cpu_transpose_strided(acc, out_plane, channels, channels, y + r * per_roi, out_plane);
        }
    }
    return MTL_OK;
}

/* Scatters each top gradient back through the bilinear weights of its bin's samples, into the
 * channels-last copy, then turns that into the feature gradient. */
static void roi_align_backward(mtl_layer *l)
{
    roi_zero_rois_grad(l);
    if (!l->propagate_down[0])
        return;
    roi_state *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    const int n_images = x->shape[0], channels = x->shape[1], width = x->shape[3];
    const int pooled_h = s->pooled_h, pooled_w = s->pooled_w;
    const int64_t plane = (int64_t)x->shape[2] * width, image = channels * plane, row = (int64_t)width * channels;
    const int64_t out_plane = (int64_t)pooled_h * pooled_w;
    const int n_rois = l->bottoms[1]->shape[0];
    const int blocks = (channels + ROI_TILE - 1) / ROI_TILE;
    const float *dy = l->tops[0]->grad; /* (R, C, pooled_h, pooled_w) */
    float *dx = x->grad;                /* (N, C, H, W) */
    float *hwc = s->hwc;                /* (N, H, W, C) */
MTL_OMP("omp parallel num_threads(s->threads) if (x->count + l->tops[0]->count >= ROI_PARALLEL_MIN)")
    {
        int64_t b0, b1;
        mtl_cpu_range(blocks, mtl_cpu_team_size(), mtl_cpu_thread_id(), &b0, &b1);
        const int c0 = (int)(b0 * ROI_TILE), c1 = b1 * ROI_TILE < channels ? (int)(b1 * ROI_TILE) : channels;
        const int cw = c1 - c0;
        for (int64_t i = 0; cw > 0 && i < n_images * plane; i++)
            memset(hwc + i * channels + c0, 0, (size_t)cw * sizeof(float));
        for (int r = 0; cw > 0 && r < n_rois; r++) {
            const int gh = s->grid[2 * r], gw = s->grid[2 * r + 1];
            const axis_tap *ty = s->taps + s->tap_start[r], *tx = ty + (int64_t)pooled_h * gh;
            const float inv_count = 1.0f / (float)(gh * gw > 1 ? gh * gw : 1);
            float *g = s->work + mtl_cpu_thread_id() * s->work_count; /* (pooled_h * pooled_w, cw) */
            float *g_lo = g + out_plane * cw, *g_hi = g_lo + cw;
            float *db = hwc + s->batch[r] * image + c0;
            if (r + 1 < n_rois)
                roi_prefetch(dy + ((int64_t)(r + 1) * channels + c0) * out_plane, cw * out_plane);
            mtl_cpu_transpose_strided(dy + ((int64_t)r * channels + c0) * out_plane, cw, out_plane, out_plane, g, cw);
            for (int ph = 0; ph < pooled_h; ph++)
                for (int pw = 0; pw < pooled_w; pw++) {
                    float *gb = g + ((int64_t)ph * pooled_w + pw) * cw;
                    for (int c = 0; c < cw; c++)
                        gb[c] *= inv_count;
                    for (int iy = 0; iy < gh; iy++) {
                        const axis_tap a = ty[ph * gh + iy];
                        if (a.lo < 0)
                            continue;
                        for (int c = 0; c < cw; c++) {
                            g_lo[c] = gb[c] * a.wlo;
                            g_hi[c] = gb[c] * a.whi;
                        }
                        float *row_lo = db + a.lo * row, *row_hi = db + a.hi * row;
                        for (int ix = 0; ix < gw; ix++) {
                            const axis_tap b = tx[pw * gw + ix];
                            if (b.lo < 0)
                                continue;
                            /* one cell after the other: at the border two taps may be the same cell */
                            roi_align_scatter(row_lo + (int64_t)b.lo * channels, g_lo, b.wlo, cw);
                            roi_align_scatter(row_lo + (int64_t)b.hi * channels, g_lo, b.whi, cw);
                            roi_align_scatter(row_hi + (int64_t)b.lo * channels, g_hi, b.wlo, cw);
                            roi_align_scatter(row_hi + (int64_t)b.hi * channels, g_hi, b.whi, cw);
                        }
                    }
                }
        }
        for (int n = 0; cw > 0 && n < n_images; n++)
            mtl_cpu_transpose_strided(hwc + n * image + c0, plane, cw, channels, dx + n * image + c0 * plane, plane);
    }
}

/* Four multiply-adds per sample; an adaptive grid is counted as 2 x 2 (it depends on the rois). */
static int64_t roi_align_flops(const mtl_layer *l)
{
    const roi_state *s = l->priv;
    int64_t samples = s->sampling_ratio > 0 ? (int64_t)s->sampling_ratio * s->sampling_ratio : 4;
    return l->tops[0]->count * samples * 8;
}

const mtl_layer_ops mtl_layer_roi_align = {
    .type = "ROIAlign",
    .min_bottoms = 2,
    .max_bottoms = 2,
    .min_tops = 1,
    .max_tops = 1,
    .setup = roi_align_setup,
    .reshape = roi_align_reshape,
    .forward = roi_align_forward,
    .backward = roi_align_backward,
    .release = roi_release,
    .flops = roi_align_flops,
};
