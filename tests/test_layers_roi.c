/* ROIPooling and ROIAlign: finite-difference gradients w.r.t. the features for hand-placed rois
 * (several images, different sizes, partly and wholly off the map, inverted, odd pooled sizes),
 * forwards and backwards worked out by hand on a 4x4 map, empty roi sets, bad configurations and
 * rois, the threaded loops against one thread, and ROIAlign against Detectron2's per-channel loops
 * written out directly. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef MTL_OPENMP
#include <omp.h>
#endif

#include "check.h"
#include "core/rng.h"
#include "gradcheck.h"
#include "test_util.h"

/* ---- gradient checks -------------------------------------------------------------------------
 * gradcheck_run fills every bottom at random, which suits the features but not rois, so most
 * cases here place the rois by hand and difference the features themselves with the same rule
 * (central differences, |a - n| / max(|a|, |n|, 1)). ROIAlign is linear in the features, so the
 * differences are exact up to rounding; for ROIPooling the features are a shuffle of values 0.05
 * apart and the step is 1e-3, so no perturbation changes a bin's argmax (no ties, no kinks). */

typedef struct roi_grad_case {
    const char *label, *layer;
    int n, c, h, w;
    int n_rois;
    float rois[8][5];
    int distinct; /* features well separated (ROIPooling) */
} roi_grad_case;

static double weighted_top(mtl_layer *l, const float *weights, mtl_error *err, int *failed)
{
    if (test_forward(l, err) != MTL_OK) {
        *failed = 1;
        return 0;
    }
    double sum = 0;
    for (int64_t i = 0; i < l->tops[0]->count; i++)
        sum += (double)weights[i] * l->tops[0]->data[i];
    return sum;
}

static void check_roi_gradients(const roi_grad_case *c)
{
    mtl_error err;
    mtl_tensor *x = test_tensor((int[]){c->n, c->c, c->h, c->w, 0}, NULL);
    mtl_tensor *rois = test_tensor((int[]){c->n_rois, 5, 0}, &c->rois[0][0]);
    mtl_tensor *top = mtl_tensor_create("top");
    mtl_rng rng;
    mtl_rng_seed(&rng, 42);
    if (c->distinct) {
        /* values 0.05 k for a random permutation of k */
        for (int64_t i = 0; i < x->count; i++)
            x->data[i] = 0.05f * (float)i - 1.0f;
        for (int64_t i = x->count - 1; i > 0; i--) {
            int64_t j = mtl_rng_below(&rng, (uint32_t)(i + 1));
            float t = x->data[i];
            x->data[i] = x->data[j];
            x->data[j] = t;
        }
    } else {
        gradcheck_fill(x, -1.0f, 1.0f, 17);
    }
    mtl_tensor *bottoms[2] = {x, rois};
    mtl_layer *l = NULL;
    CHECK_OK(gradcheck_build(c->layer, MTL_PHASE_TRAIN, bottoms, 2, &top, 1, &l, &err), &err);
    if (!l)
        goto done;
    int failed = 0;
    CHECK_OK(test_forward(l, &err), &err); /* shapes the top */
    float *weights = malloc((size_t)(top->count ? top->count : 1) * sizeof(float));
    for (int64_t i = 0; i < top->count; i++)
        weights[i] = mtl_rng_range(&rng, -1.0f, 1.0f);
    weighted_top(l, weights, &err, &failed);
    memcpy(top->grad, weights, (size_t)top->count * sizeof(float));
    for (int64_t i = 0; i < x->count; i++)
        x->grad[i] = 1e3f; /* backward writes, never accumulates */
    for (int64_t i = 0; i < rois->count; i++)
        rois->grad[i] = 1e3f;
    l->propagate_down[0] = l->propagate_down[1] = 1;
    l->ops->backward(l);
    for (int64_t i = 0; i < rois->count; i++)
        CHECK_MSG(rois->grad[i] == 0.0f, "%s: roi gradient [%lld] is %g, expected 0", c->label, (long long)i,
                  rois->grad[i]);
    float *analytic = malloc((size_t)x->count * sizeof(float));
    memcpy(analytic, x->grad, (size_t)x->count * sizeof(float));
    const float h = c->distinct ? 1e-3f : 1e-2f;
    int mismatches = 0, nonzero = 0;
    for (int64_t i = 0; i < x->count; i++) {
        float v = x->data[i];
        x->data[i] = v + h;
        double fp = weighted_top(l, weights, &err, &failed);
        x->data[i] = v - h;
        double fm = weighted_top(l, weights, &err, &failed);
        x->data[i] = v;
        double numeric = (fp - fm) / (2.0 * h), a = analytic[i];
        nonzero += a != 0;
        if (fabs(a - numeric) / fmax(fmax(fabs(a), fabs(numeric)), 1.0) > 2e-3) {
            if (mismatches++ < 5)
                CHECK_MSG(0, "%s: feature[%lld]: analytic %.6g, numeric %.6g", c->label, (long long)i, a, numeric);
        }
    }
    CHECK_MSG(!failed, "%s: forward failed: %s", c->label, err.message);
    CHECK_MSG(mismatches == 0, "%s: %d gradient mismatches", c->label, mismatches);
    CHECK_MSG(nonzero > 0, "%s: every feature gradient is 0: nothing checked", c->label);
    free(analytic);
    free(weights);
done:
    gradcheck_free_layer(l);
    mtl_tensor_free(top);
    mtl_tensor_free(x);
    mtl_tensor_free(rois);
}

/* Rois shared by the cases over 2 images of 6x7 cells: ordinary ones in either image, one partly
 * above / left of the map, one partly below / right, one wholly off it, one inverted, one tiny. */
#define ROIS_6x7                                                                                              \
    .n_rois = 7, .rois = {                                                                                    \
        {0, 0.3f, 1.2f, 4.1f, 5.0f},                                                                          \
        {1, 2.5f, 0.2f, 6.9f, 3.3f},                                                                          \
        {1, -2.2f, -1.6f, 3.1f, 2.3f},                                                                        \
        {0, 4.6f, 3.7f, 9.2f, 8.4f},                                                                          \
        {0, -9.0f, 2.0f, -4.0f, 4.0f},                                                                        \
        {1, 5.1f, 4.4f, 2.2f, 1.3f},                                                                          \
        {0, 3.3f, 2.1f, 3.6f, 2.45f},                                                                         \
    }

static void test_gradients(void)
{
    static const roi_grad_case cases[] = {
        {"pool 3x2", "type: 'ROIPooling' roi_pooling_param { pooled_h: 3 pooled_w: 2 }", 2, 3, 6, 7, ROIS_6x7, 1},
        {"pool 2x3 scale 0.5",
         "type: 'ROIPooling' roi_pooling_param { pooled_h: 2 pooled_w: 3 spatial_scale: 0.5 }",
         2, 2, 6, 7, .n_rois = 4,
         .rois = {{0, 1, 2, 9, 11}, {1, -3, 4, 8.9f, 13}, {1, 3, 3, 5, 5}, {0, 10, 10, 20, 20}}, .distinct = 1},
        {"pool 1x1", "type: 'ROIPooling' roi_pooling_param { pooled_h: 1 pooled_w: 1 }", 3, 2, 5, 4, .n_rois = 3,
         .rois = {{2, 0, 0, 3, 4}, {0, 1, 1, 2, 2}, {1, 2.6f, 0.4f, 3.4f, 4.6f}}, .distinct = 1},
        {"pool 5x3 over small rois", "type: 'ROIPooling' roi_pooling_param { pooled_h: 5 pooled_w: 3 }", 2, 2, 6, 7,
         ROIS_6x7, 1},
        {"align 3x2", "type: 'ROIAlign' roi_align_param { pooled_h: 3 pooled_w: 2 }", 2, 3, 6, 7, ROIS_6x7, 0},
        {"align 2x3 adaptive not aligned",
         "type: 'ROIAlign' roi_align_param { pooled_h: 2 pooled_w: 3 sampling_ratio: 0 aligned: false }", 2, 2, 6, 7,
         ROIS_6x7, 0},
        {"align 2x3 adaptive aligned",
         "type: 'ROIAlign' roi_align_param { pooled_h: 2 pooled_w: 3 sampling_ratio: 0 }", 2, 2, 6, 7, ROIS_6x7, 0},
        {"align 1x1 ratio 3 scale 0.5",
         "type: 'ROIAlign' roi_align_param { pooled_h: 1 pooled_w: 1 sampling_ratio: 3 spatial_scale: 0.5 }", 3, 2,
         5, 4, .n_rois = 3, .rois = {{2, 0, 0, 7, 9}, {0, 1, 1, 2, 2}, {1, 2.6f, 0.4f, 10.4f, 4.6f}}},
        {"align 5x3 ratio 1", "type: 'ROIAlign' roi_align_param { pooled_h: 5 pooled_w: 3 sampling_ratio: 1 }", 2,
         2, 6, 7, ROIS_6x7, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_roi_gradients(&cases[i]);

    /* and through the shared harness: rois drawn as integers in [0, 3), which makes every batch
     * index valid (3 images) and the corners 0..2 (times spatial_scale 2); the rois bottom is
     * not checked */
    static const gradcheck_case harness[] = {
        {.layer = "type: 'ROIAlign' roi_align_param { pooled_h: 2 pooled_w: 3 spatial_scale: 2 }",
         .n_bottoms = 2,
         .shapes = {{3, 2, 5, 6}, {6, 5}},
         .label_classes = {0, 3}},
        {.layer = "type: 'ROIAlign' roi_align_param { pooled_h: 3 pooled_w: 3 spatial_scale: 2 sampling_ratio: 0 "
                  "aligned: false }",
         .n_bottoms = 2,
         .shapes = {{3, 3, 4, 5}, {5, 5}},
         .label_classes = {0, 3},
         .seed = 5},
        {.layer = "type: 'ROIPooling' roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 2 }",
         .n_bottoms = 2,
         .shapes = {{3, 2, 5, 6}, {6, 5}},
         .label_classes = {0, 3},
         .step = 1e-3f},
    };
    for (size_t i = 0; i < sizeof(harness) / sizeof(harness[0]); i++)
        CHECK_MSG(gradcheck_run(harness[i].layer, &harness[i]) == 0, "gradcheck %s", harness[i].layer);
}

/* ---- values worked out by hand ----------------------------------------------------------------
 * The 4x4 map (row h, column w; in-plane index 4 h + w):
 *    3  9  1  4
 *    7  2  8  6
 *    5 12 10 11
 *   16 13 14 15 */
static const float map4[16] = {3, 9, 1, 4, 7, 2, 8, 6, 5, 12, 10, 11, 16, 13, 14, 15};

/* Builds `text` over (features, rois), runs forward, checks the top, then backward with top
 * gradient `dy` (NULL: skip) and checks the feature gradient against `dx`. */
static void check_layer(const char *text, mtl_tensor *x, const float *rois, int n_rois, const float *want, int n_want,
                        const float *dy, const float *dx, double tol)
{
    mtl_error err;
    mtl_tensor *r = test_tensor_n(2, (int[]){n_rois, 5}, rois);
    mtl_tensor *top = mtl_tensor_create("top");
    mtl_tensor *bottoms[2] = {x, r};
    mtl_layer *l = NULL;
    CHECK_OK(gradcheck_build(text, MTL_PHASE_TRAIN, bottoms, 2, &top, 1, &l, &err), &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        CHECK_MSG(top->count == n_want, "%s: top has %lld values, expected %d", text, (long long)top->count, n_want);
        if (top->count == n_want)
            test_check_values(text, top->data, want, n_want, tol);
        if (dy && top->count == n_want) {
            memcpy(top->grad, dy, (size_t)n_want * sizeof(float));
            l->propagate_down[0] = 1;
            l->ops->backward(l);
            test_check_values(text, x->grad, dx, (int)x->count, tol);
        }
    }
    gradcheck_free_layer(l);
    mtl_tensor_free(top);
    mtl_tensor_free(r);
}

static void test_roi_pooling_values(void)
{
    mtl_tensor *x = test_tensor((int[]){1, 1, 4, 4, 0}, map4);

    /* the whole map [0, 3] (Caffe: both ends included), 2x2 bins of 2x2 cells:
     * max(3 9 7 2) = 9 at 1, max(1 4 8 6) = 8 at 6, max(5 12 16 13) = 16 at 12, max(10 11 14 15) = 15 at 15 */
    check_layer("type: 'ROIPooling' roi_pooling_param { pooled_h: 2 pooled_w: 2 }", x, (float[]){0, 0, 0, 3, 3}, 1,
                (float[]){9, 8, 16, 15}, 4, (float[]){1, 2, 3, 4},
                (float[]){0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 3, 0, 0, 4}, 0);

    /* pooled 3x3: bins of 4/3 cells cover rows (and columns) {0 1} {1 2} {2 3}, overlapping:
     *   9 9 8 / 12 12 11 / 16 14 15; with all top gradients 1, value 9 (index 1) and 12 (index 9)
     *   collect two each */
    check_layer("type: 'ROIPooling' roi_pooling_param { pooled_h: 3 pooled_w: 3 }", x, (float[]){0, 0, 0, 3, 3}, 1,
                (float[]){9, 9, 8, 12, 12, 11, 16, 14, 15}, 9, (float[]){1, 1, 1, 1, 1, 1, 1, 1, 1},
                (float[]){0, 2, 0, 0, 0, 0, 1, 0, 0, 2, 0, 1, 1, 0, 1, 1}, 0);

    /* spatial_scale 0.5 rounds the corners: round(0.5) = 1 (half away from zero), round(2.45) = 2,
     * so cells 1..2 both ways, one cell per bin: 2 8 / 12 10 */
    check_layer("type: 'ROIPooling' roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.5 }", x,
                (float[]){0, 1, 1, 4.9f, 4.9f}, 1, (float[]){2, 8, 12, 10}, 4, NULL, NULL, 0);

    /* a roi from -3 to 0: bins of 2 cells over rows / columns -3..-2 and -1..0; only the last bin
     * touches the map (cell 0, 0 = 3), the others are empty: 0, and get no gradient */
    check_layer("type: 'ROIPooling' roi_pooling_param { pooled_h: 2 pooled_w: 2 }", x, (float[]){0, -3, -3, 0.4f, 0.4f},
                1, (float[]){0, 0, 0, 3}, 4, (float[]){5, 6, 7, 8},
                (float[]){8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0);
    mtl_tensor_free(x);

    /* two images (the second is the first plus 100) and two channels (the second negated): a
     * roi of the second image reads its values; negative maxima stay negative (no clamp at 0);
     * the gradient lands in the second image only */
    float two[64];
    for (int i = 0; i < 16; i++) {
        two[i] = map4[i];
        two[16 + i] = -map4[i];
        two[32 + i] = map4[i] + 100;
        two[48 + i] = -map4[i] - 100;
    }
    mtl_tensor *x2 = test_tensor((int[]){2, 2, 4, 4, 0}, two);
    float dx2[64] = {0};
    dx2[32 + 12] = 1; /* 116 */
    dx2[48 + 2] = 2;  /* -101 */
    check_layer("type: 'ROIPooling' roi_pooling_param { pooled_h: 1 pooled_w: 1 }", x2, (float[]){1, 0, 0, 3, 3}, 1,
                (float[]){116, -101}, 2, (float[]){1, 2}, dx2, 0);
    mtl_tensor_free(x2);
}

static void test_roi_align_values(void)
{
    mtl_tensor *x = test_tensor((int[]){1, 1, 4, 4, 0}, map4);

    /* aligned, one sample: roi x 1.2..2.0, y 1.5..2.5 -> starts 0.7 / 1.0, sizes 0.8 / 1, sample at
     * (y 1.5, x 1.1): 0.5 (0.9 * 2 + 0.1 * 8) + 0.5 (0.9 * 12 + 0.1 * 10) = 1.3 + 5.9 = 7.2; the
     * gradient spreads 0.45 0.05 / 0.45 0.05 over cells (1, 1) (1, 2) (2, 1) (2, 2) */
    check_layer("type: 'ROIAlign' roi_align_param { pooled_h: 1 pooled_w: 1 sampling_ratio: 1 }", x,
                (float[]){0, 1.2f, 1.5f, 2.0f, 2.5f}, 1, (float[]){7.2f}, 1, (float[]){1},
                (float[]){0, 0, 0, 0, 0, 0.45f, 0.05f, 0, 0, 0.45f, 0.05f, 0, 0, 0, 0, 0}, 1e-5);

    /* not aligned: no half-cell shift and the width grows to 1 cell: sample at (y 2.0, x 1.7),
     * row 2 only: 0.3 * 12 + 0.7 * 10 = 10.6 */
    check_layer("type: 'ROIAlign' roi_align_param { pooled_h: 1 pooled_w: 1 sampling_ratio: 1 aligned: false }", x,
                (float[]){0, 1.2f, 1.5f, 2.0f, 2.5f}, 1, (float[]){10.6f}, 1, (float[]){2},
                (float[]){0, 0, 0, 0, 0, 0, 0, 0, 0, 0.6f, 1.4f, 0, 0, 0, 0, 0}, 1e-5);

    /* near the border: a sample at (y -0.5, x 3.5) is within one cell of the map and reads the
     * border cell (0, 3) = 4; one at y -1.5 is off the map: 0, no gradient */
    check_layer("type: 'ROIAlign' roi_align_param { pooled_h: 1 pooled_w: 1 sampling_ratio: 1 }", x,
                (float[]){0, 3.5f, -0.5f, 4.5f, 0.5f, 0, 3.5f, -1.5f, 4.5f, -0.5f}, 2, (float[]){4, 0}, 2,
                (float[]){3, 5}, (float[]){0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1e-6);
    mtl_tensor_free(x);

    /* a linear map v = 4 h + w is reproduced exactly by bilinear sampling, so each bin is the value
     * at its centre: roi 1..3 aligned spans cells 0.5..2.5, bins of 1 centred at 1 and 2:
     * 4 + 1 = 5, 6 / 9, 10; each bin's 4 samples give each of their 4 neighbours a share */
    float lin[16];
    for (int i = 0; i < 16; i++)
        lin[i] = (float)i;
    mtl_tensor *xl = test_tensor((int[]){1, 1, 4, 4, 0}, lin);
    check_layer("type: 'ROIAlign' roi_align_param { pooled_h: 2 pooled_w: 2 }", xl, (float[]){0, 1, 1, 3, 3}, 1,
                (float[]){5, 6, 9, 10}, 4, NULL, NULL, 1e-5);
    mtl_tensor_free(xl);

    /* the sampling grid: v = w^2 along each row, roi 0.5..3.5 aligned = cells 0..3, one bin.
     * Adaptive (sampling_ratio 0): ceil(3) = 3 samples at x 0.5 1.5 2.5, interpolating w^2 to
     * 0.5 2.5 6.5: mean 9.5 / 3. Two samples at 0.75 and 2.25: 0.75 and 5.25, mean 3. */
    float sq[16];
    for (int i = 0; i < 16; i++)
        sq[i] = (float)((i % 4) * (i % 4));
    mtl_tensor *xs = test_tensor((int[]){1, 1, 4, 4, 0}, sq);
    check_layer("type: 'ROIAlign' roi_align_param { pooled_h: 1 pooled_w: 1 sampling_ratio: 0 }", xs,
                (float[]){0, 0.5f, 0.5f, 3.5f, 3.5f}, 1, (float[]){9.5f / 3}, 1, NULL, NULL, 1e-5);
    check_layer("type: 'ROIAlign' roi_align_param { pooled_h: 1 pooled_w: 1 }", xs,
                (float[]){0, 0.5f, 0.5f, 3.5f, 3.5f}, 1, (float[]){3}, 1, NULL, NULL, 1e-5);
    /* adaptive over an empty box (x1 = x2): no samples, 0 (Detectron2) */
    check_layer("type: 'ROIAlign' roi_align_param { pooled_h: 1 pooled_w: 1 sampling_ratio: 0 }", xs,
                (float[]){0, 2, 0.5f, 2, 3.5f}, 1, (float[]){0}, 1, NULL, NULL, 0);
    mtl_tensor_free(xs);
}

/* No rois at all (shape (0, 5)): an empty top, and a backward that zeroes the feature gradient. */
static void test_empty(void)
{
    static const char *const layers[] = {
        "type: 'ROIPooling' roi_pooling_param { pooled_h: 2 pooled_w: 2 }",
        "type: 'ROIAlign' roi_align_param { pooled_h: 2 pooled_w: 3 sampling_ratio: 0 }",
    };
    for (int k = 0; k < 2; k++) {
        mtl_error err;
        mtl_tensor *x = test_tensor((int[]){2, 3, 4, 5, 0}, NULL);
        mtl_tensor *rois = test_tensor_n(2, (int[]){0, 5}, NULL);
        mtl_tensor *top = mtl_tensor_create("top");
        mtl_tensor *bottoms[2] = {x, rois};
        mtl_layer *l = NULL;
        gradcheck_fill(x, -1, 1, 3);
        CHECK_OK(gradcheck_build(layers[k], MTL_PHASE_TRAIN, bottoms, 2, &top, 1, &l, &err), &err);
        if (l) {
            CHECK_OK(test_forward(l, &err), &err);
            CHECK_INT(top->count, 0);
            CHECK_INT(top->ndim, 4);
            CHECK_INT(top->shape[0], 0);
            CHECK_INT(top->shape[1], 3);
            for (int64_t i = 0; i < x->count; i++)
                x->grad[i] = 1;
            l->propagate_down[0] = l->propagate_down[1] = 1;
            l->ops->backward(l);
            int zero = 1;
            for (int64_t i = 0; i < x->count; i++)
                zero &= x->grad[i] == 0;
            CHECK_MSG(zero, "%s: the feature gradient is not zeroed without rois", layers[k]);
            /* then some rois again: the buffers grow */
            CHECK_OK(mtl_tensor_reshape(rois, 2, (int[]){2, 5}, &err), &err);
            memcpy(rois->data, (float[]){1, 0, 0, 4, 3, 0, 1, 1, 2, 2}, sizeof(float) * 10);
            CHECK_OK(test_forward(l, &err), &err);
            CHECK_INT(top->count, 2 * 3 * l->tops[0]->shape[2] * l->tops[0]->shape[3]);
        }
        gradcheck_free_layer(l);
        mtl_tensor_free(top);
        mtl_tensor_free(rois);
        mtl_tensor_free(x);
    }
}

static void test_errors(void)
{
    static const char *const layers[] = {
        "type: 'ROIPooling' roi_pooling_param { pooled_h: 2 pooled_w: 2 }",
        "type: 'ROIAlign' roi_align_param { pooled_h: 2 pooled_w: 2 }",
    };
    mtl_error err;
    mtl_layer *l = NULL;
    mtl_tensor *top = mtl_tensor_create("top");
    mtl_tensor *x = test_tensor((int[]){2, 1, 4, 4, 0}, NULL);
    mtl_tensor *x3 = test_tensor((int[]){1, 4, 4, 0}, NULL);
    mtl_tensor *rois = test_tensor((int[]){1, 5, 0}, (float[]){0, 0, 0, 2, 2});
    mtl_tensor *rois4 = test_tensor((int[]){3, 4, 0}, NULL);
    mtl_tensor *rois5111 = test_tensor((int[]){1, 5, 1, 1, 0}, (float[]){1, 0, 0, 2, 2});
    mtl_tensor *bottoms[2] = {x, rois};
    for (int k = 0; k < 2; k++) {
        mtl_tensor *bad_rois[2] = {x, rois4};
        CHECK_FAILS(gradcheck_build(layers[k], MTL_PHASE_TRAIN, bad_rois, 2, &top, 1, &l, &err), &err, MTL_ERR_SHAPE,
                    "the rois (bottom 1) have shape 3x4: (R, 5) wanted");
        mtl_tensor *bad_x[2] = {x3, rois};
        CHECK_FAILS(gradcheck_build(layers[k], MTL_PHASE_TRAIN, bad_x, 2, &top, 1, &l, &err), &err, MTL_ERR_SHAPE,
                    "4 axes (N, C, H, W)");
        /* Caffe-style (R, 5, 1, 1) rois are fine */
        mtl_tensor *caffe_rois[2] = {x, rois5111};
        CHECK_OK(gradcheck_build(layers[k], MTL_PHASE_TRAIN, caffe_rois, 2, &top, 1, &l, &err), &err);
        if (l)
            CHECK_OK(test_forward(l, &err), &err);
        gradcheck_free_layer(l);

        CHECK_OK(gradcheck_build(layers[k], MTL_PHASE_TRAIN, bottoms, 2, &top, 1, &l, &err), &err);
        if (l) {
            rois->data[0] = 2;
            CHECK_FAILS(test_forward(l, &err), &err, MTL_ERR_ARGUMENT,
                        "roi 0 has batch index 2: it must be an integer in [0, 2)");
            rois->data[0] = -1;
            CHECK_FAILS(test_forward(l, &err), &err, MTL_ERR_ARGUMENT, "roi 0 has batch index -1");
            rois->data[0] = 0.5f;
            CHECK_FAILS(test_forward(l, &err), &err, MTL_ERR_ARGUMENT, "roi 0 has batch index 0.5");
            rois->data[0] = NAN;
            CHECK_FAILS(test_forward(l, &err), &err, MTL_ERR_ARGUMENT, "roi 0 has batch index nan");
            rois->data[0] = 1;
            rois->data[3] = INFINITY;
            CHECK_FAILS(test_forward(l, &err), &err, MTL_ERR_ARGUMENT, "roi 0 has corner coordinate inf");
            rois->data[3] = 2;
            CHECK_OK(test_forward(l, &err), &err);
            rois->data[0] = 0;
        }
        gradcheck_free_layer(l);
    }
    CHECK_FAILS(gradcheck_build("type: 'ROIPooling' roi_pooling_param { pooled_h: 0 pooled_w: 2 }", MTL_PHASE_TRAIN,
                                bottoms, 2, &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "field 'pooled_h' must be at least 1, found 0");
    CHECK_FAILS(gradcheck_build("type: 'ROIAlign' roi_align_param { pooled_h: 2 pooled_w: 0 }", MTL_PHASE_TRAIN,
                                bottoms, 2, &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "field 'pooled_w' must be at least 1, found 0");
    CHECK_FAILS(gradcheck_build("type: 'ROIPooling' roi_pooling_param { pooled_h: 2 }", MTL_PHASE_TRAIN, bottoms, 2,
                                &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "roi_pooling_param needs pooled_h and pooled_w");
    CHECK_FAILS(gradcheck_build("type: 'ROIAlign'", MTL_PHASE_TRAIN, bottoms, 2, &top, 1, &l, &err), &err,
                MTL_ERR_CONFIG, "roi_align_param needs pooled_h and pooled_w");
    CHECK_FAILS(gradcheck_build("type: 'ROIPooling' roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0 }",
                                MTL_PHASE_TRAIN, bottoms, 2, &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "spatial_scale is 0");
    CHECK_FAILS(gradcheck_build("type: 'ROIAlign' roi_align_param { pooled_h: 100000 pooled_w: 2 }", MTL_PHASE_TRAIN,
                                bottoms, 2, &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "pooled size 100000x2 is too large");
    CHECK_FAILS(gradcheck_build("type: 'ROIAlign' roi_align_param { pooled_h: 2 pooled_w: 2 sampling_ratio: -1 }",
                                MTL_PHASE_TRAIN, bottoms, 2, &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "sampling_ratio");
    CHECK_FAILS(gradcheck_build("type: 'ROIPooling' roi_pooling_param { pooled_h: 2 pooled_w: 2 sampling_ratio: 2 }",
                                MTL_PHASE_TRAIN, bottoms, 2, &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "sampling_ratio");
    mtl_tensor *one[1] = {x};
    CHECK_FAILS(gradcheck_build(layers[0], MTL_PHASE_TRAIN, one, 1, &top, 1, &l, &err), &err, MTL_ERR_CONFIG, "bottom");
    mtl_tensor_free(top);
    mtl_tensor_free(x);
    mtl_tensor_free(x3);
    mtl_tensor_free(rois);
    mtl_tensor_free(rois4);
    mtl_tensor_free(rois5111);
}

/* ---- threads ----------------------------------------------------------------------------------
 * At Fast R-CNN-like sizes (64 rois over 2 images of 16 x 20 x 24) the threaded forward and
 * backward must give exactly what one thread gives: forward threads own rois, backward threads own
 * channels, so no value depends on the thread count. */
static void set_threads(int n)
{
#ifdef MTL_OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static void test_threads(void)
{
    static const char *const layers[] = {
        "type: 'ROIPooling' roi_pooling_param { pooled_h: 7 pooled_w: 7 spatial_scale: 0.0625 }",
        "type: 'ROIAlign' roi_align_param { pooled_h: 7 pooled_w: 7 spatial_scale: 0.0625 sampling_ratio: 0 }",
    };
    enum { N_ROIS = 64 };
    mtl_rng rng;
    mtl_rng_seed(&rng, 99);
    float roi_values[N_ROIS * 5];
    for (int r = 0; r < N_ROIS; r++) {
        float x1 = mtl_rng_range(&rng, -40, 380), y1 = mtl_rng_range(&rng, -40, 320);
        float *row = roi_values + r * 5;
        row[0] = (float)(r % 2);
        row[1] = x1;
        row[2] = y1;
        row[3] = x1 + mtl_rng_range(&rng, 0, 200);
        row[4] = y1 + mtl_rng_range(&rng, 0, 200);
    }
    for (int k = 0; k < 2; k++) {
        mtl_error err;
        mtl_tensor *x = test_tensor((int[]){2, 16, 20, 24, 0}, NULL);
        mtl_tensor *rois = test_tensor((int[]){N_ROIS, 5, 0}, roi_values);
        mtl_tensor *top = mtl_tensor_create("top");
        mtl_tensor *bottoms[2] = {x, rois};
        mtl_layer *l = NULL;
        gradcheck_fill(x, -1, 1, 8);
        CHECK_OK(gradcheck_build(layers[k], MTL_PHASE_TRAIN, bottoms, 2, &top, 1, &l, &err), &err);
        if (!l)
            continue;
        float *y_ref = NULL, *dx_ref = NULL;
        for (int threads = 1; threads <= 4; threads *= 2) {
            set_threads(threads);
            CHECK_OK(test_forward(l, &err), &err);
            gradcheck_fill(top, -1, 1, 9); /* fills data: copy it to the gradient */
            memcpy(top->grad, top->data, (size_t)top->count * sizeof(float));
            CHECK_OK(test_forward(l, &err), &err);
            l->propagate_down[0] = 1;
            l->ops->backward(l);
            if (!y_ref) {
                y_ref = malloc((size_t)top->count * sizeof(float));
                dx_ref = malloc((size_t)x->count * sizeof(float));
                memcpy(y_ref, top->data, (size_t)top->count * sizeof(float));
                memcpy(dx_ref, x->grad, (size_t)x->count * sizeof(float));
                continue;
            }
            CHECK_MSG(memcmp(y_ref, top->data, (size_t)top->count * sizeof(float)) == 0,
                      "%s: forward with %d threads differs from one thread", layers[k], threads);
            CHECK_MSG(memcmp(dx_ref, x->grad, (size_t)x->count * sizeof(float)) == 0,
                      "%s: backward with %d threads differs from one thread", layers[k], threads);
        }
        set_threads(2);
        free(y_ref);
        free(dx_ref);
        gradcheck_free_layer(l);
        mtl_tensor_free(top);
        mtl_tensor_free(rois);
        mtl_tensor_free(x);
    }
}

/* ---- ROIAlign against a direct implementation --------------------------------------------------
 * The layer samples a channels-last copy of the features and splits channels among threads in
 * blocks of 16; here 37 channels (two whole blocks and a ragged one) and 1, 2 and 3 threads are
 * compared with Detectron2's per-channel loops written out plainly (four weights per sample:
 * equal up to rounding), and the thread counts with each other bit for bit. */

/* Detectron2's bilinear_interpolate as taps: 0 for a sample more than a cell off the map, else
 * four in-plane indices and weights. */
static int ref_align_taps(int height, int width, float y, float x, int idx[4], float w[4])
{
    if (y < -1.0f || y > (float)height || x < -1.0f || x > (float)width)
        return 0;
    y = y <= 0 ? 0 : y;
    x = x <= 0 ? 0 : x;
    int y0 = (int)y, x0 = (int)x, y1 = y0 + 1, x1 = x0 + 1;
    if (y0 >= height - 1) {
        y0 = y1 = height - 1;
        y = (float)y0;
    }
    if (x0 >= width - 1) {
        x0 = x1 = width - 1;
        x = (float)x0;
    }
    float ly = y - (float)y0, lx = x - (float)x0, hy = 1 - ly, hx = 1 - lx;
    idx[0] = y0 * width + x0;
    idx[1] = y0 * width + x1;
    idx[2] = y1 * width + x0;
    idx[3] = y1 * width + x1;
    w[0] = hy * hx;
    w[1] = hy * lx;
    w[2] = ly * hx;
    w[3] = ly * lx;
    return 4;
}

/* y (R, C, ph, pw) from x (N, C, H, W), and dx from dy (dy NULL: forward only). */
static void ref_align(const float *x, const int xs[4], const float *rois, int n_rois, int pooled_h, int pooled_w,
                      float scale, int ratio, int aligned, float *y, const float *dy, float *dx)
{
    const int channels = xs[1], height = xs[2], width = xs[3], plane = height * width;
    if (dx)
        memset(dx, 0, sizeof(float) * (size_t)(xs[0] * channels * plane));
    for (int r = 0; r < n_rois; r++) {
        const float *roi = rois + r * 5;
        float off = aligned ? 0.5f : 0.0f;
        float x0 = roi[1] * scale - off, y0 = roi[2] * scale - off;
        float rw = roi[3] * scale - off - x0, rh = roi[4] * scale - off - y0;
        if (!aligned) {
            rw = rw < 1 ? 1 : rw;
            rh = rh < 1 ? 1 : rh;
        }
        float bin_h = rh / (float)pooled_h, bin_w = rw / (float)pooled_w;
        int gh = ratio > 0 ? ratio : (int)ceil((double)rh / pooled_h);
        int gw = ratio > 0 ? ratio : (int)ceil((double)rw / pooled_w);
        float count = gh * gw > 1 ? (float)(gh * gw) : 1.0f;
        for (int c = 0; c < channels; c++) {
            const float *xc = x + ((int)roi[0] * channels + c) * plane;
            for (int ph = 0; ph < pooled_h; ph++)
                for (int pw = 0; pw < pooled_w; pw++) {
                    int o = ((r * channels + c) * pooled_h + ph) * pooled_w + pw;
                    float sum = 0;
                    for (int iy = 0; iy < gh; iy++)
                        for (int ix = 0; ix < gw; ix++) {
                            float sy = y0 + (float)ph * bin_h + ((float)iy + 0.5f) * bin_h / (float)gh;
                            float sx = x0 + (float)pw * bin_w + ((float)ix + 0.5f) * bin_w / (float)gw;
                            int idx[4];
                            float w[4];
                            int n_taps = ref_align_taps(height, width, sy, sx, idx, w);
                            for (int k = 0; k < n_taps; k++) {
                                sum += w[k] * xc[idx[k]];
                                if (dx)
                                    dx[((int)roi[0] * channels + c) * plane + idx[k]] += w[k] * dy[o] / count;
                            }
                        }
                    y[o] = sum / count;
                }
        }
    }
}

static void test_roi_align_reference(void)
{
    static const struct {
        const char *layer;
        int pooled_h, pooled_w, ratio, aligned;
        float scale;
    } cases[] = {
        {"type: 'ROIAlign' roi_align_param { pooled_h: 3 pooled_w: 4 spatial_scale: 0.5 }", 3, 4, 2, 1, 0.5f},
        {"type: 'ROIAlign' roi_align_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.5 sampling_ratio: 0 "
         "aligned: false }",
         3, 2, 0, 0, 0.5f},
    };
    enum { N_ROIS = 30 };
    const int xs[4] = {2, 37, 9, 11};
    mtl_rng rng;
    mtl_rng_seed(&rng, 17);
    float roi_values[N_ROIS * 5];
    for (int r = 0; r < N_ROIS; r++) {
        /* in image pixels (twice the map), some partly off the map and some inverted */
        float x1 = mtl_rng_range(&rng, -6, 22), y1 = mtl_rng_range(&rng, -6, 18);
        float *row = roi_values + r * 5;
        row[0] = (float)(r % 2);
        row[1] = x1;
        row[2] = y1;
        row[3] = x1 + mtl_rng_range(&rng, -3, 16);
        row[4] = y1 + mtl_rng_range(&rng, -3, 16);
    }
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        mtl_error err;
        mtl_tensor *x = test_tensor((int[]){xs[0], xs[1], xs[2], xs[3], 0}, NULL);
        mtl_tensor *rois = test_tensor((int[]){N_ROIS, 5, 0}, roi_values);
        mtl_tensor *top = mtl_tensor_create("top");
        mtl_tensor *bottoms[2] = {x, rois};
        mtl_layer *l = NULL;
        gradcheck_fill(x, -1, 1, 21);
        CHECK_OK(gradcheck_build(cases[k].layer, MTL_PHASE_TRAIN, bottoms, 2, &top, 1, &l, &err), &err);
        if (!l)
            continue;
        const int top_count = N_ROIS * xs[1] * cases[k].pooled_h * cases[k].pooled_w;
        const int x_count = xs[0] * xs[1] * xs[2] * xs[3];
        float *dy = malloc(sizeof(float) * (size_t)top_count), *y_ref = malloc(sizeof(float) * (size_t)top_count);
        float *dx_ref = malloc(sizeof(float) * (size_t)x_count), *y_one = malloc(sizeof(float) * (size_t)top_count);
        float *dx_one = malloc(sizeof(float) * (size_t)x_count);
        mtl_rng_seed(&rng, 23);
        for (int i = 0; i < top_count; i++)
            dy[i] = mtl_rng_range(&rng, -1, 1);
        ref_align(x->data, xs, roi_values, N_ROIS, cases[k].pooled_h, cases[k].pooled_w, cases[k].scale,
                  cases[k].ratio, cases[k].aligned, y_ref, dy, dx_ref);
        for (int threads = 1; threads <= 3; threads++) {
            set_threads(threads);
            CHECK_OK(test_forward(l, &err), &err);
            CHECK_INT(top->count, top_count);
            if (top->count != top_count)
                break;
            memcpy(top->grad, dy, sizeof(float) * (size_t)top_count);
            l->propagate_down[0] = 1;
            l->ops->backward(l);
            test_check_values(cases[k].layer, top->data, y_ref, top_count, 1e-5);
            test_check_values(cases[k].layer, x->grad, dx_ref, x_count, 1e-5);
            if (threads == 1) {
                memcpy(y_one, top->data, sizeof(float) * (size_t)top_count);
                memcpy(dx_one, x->grad, sizeof(float) * (size_t)x_count);
                continue;
            }
            CHECK_MSG(memcmp(y_one, top->data, sizeof(float) * (size_t)top_count) == 0,
                      "%s: forward with %d threads differs from one thread", cases[k].layer, threads);
            CHECK_MSG(memcmp(dx_one, x->grad, sizeof(float) * (size_t)x_count) == 0,
                      "%s: backward with %d threads differs from one thread", cases[k].layer, threads);
        }
        set_threads(2);
        free(dy);
        free(y_ref);
        free(dx_ref);
        free(y_one);
        free(dx_one);
        gradcheck_free_layer(l);
        mtl_tensor_free(top);
        mtl_tensor_free(rois);
        mtl_tensor_free(x);
    }
}

int main(void)
{
    test_gradients();
    test_roi_pooling_values();
    test_roi_align_values();
    test_empty();
    test_errors();
    test_threads();
    test_roi_align_reference();
    return check_finish();
}
