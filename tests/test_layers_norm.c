/* Tests for the normalisation layers (BatchNorm, Scale, Bias, LRN): finite-difference gradients
 * for every bottom and learned blob over several shapes, forward values and BatchNorm's running
 * statistics computed by hand, and the errors bad configurations and shapes give. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "test_util.h"
#include "core/layer.h"
#include "gradcheck.h"

#ifdef MTL_OPENMP
#include <omp.h>
#endif

#define GC(label, ...)                                                                                                 \
    do {                                                                                                               \
        gradcheck_case c_ = {__VA_ARGS__};                                                                             \
        CHECK_MSG(gradcheck_run(label, &c_) == 0, "gradcheck %s", label);                                              \
    } while (0)

#define UNIFORM_FILLER "filler { type: 'uniform' min: -1.5 max: 1.5 }"

static void forward(mtl_layer *l)
{
    mtl_error err = {0};
    CHECK_OK(l->ops->reshape(l, &err), &err);
    CHECK_OK(l->ops->forward(l, &err), &err);
}

static void test_batch_norm_gradients(void)
{
    /* batch statistics (TRAIN default): 4D, 2D, 3D, odd sizes, in place */
    GC("bn train 4d", .layer = "type: 'BatchNorm'", .n_bottoms = 1, .shapes = {{3, 2, 3, 5}});
    GC("bn train 2d", .layer = "type: 'BatchNorm' batch_norm_param { eps: 1e-3 }", .n_bottoms = 1,
       .shapes = {{7, 3}});
    GC("bn train 3d in place", .layer = "type: 'BatchNorm' batch_norm_param { moving_average_fraction: 0.9 }",
       .n_bottoms = 1, .shapes = {{2, 4, 5}}, .in_place = 1);
    GC("bn train 4d in place", .layer = "type: 'BatchNorm'", .n_bottoms = 1, .shapes = {{2, 3, 3, 3}}, .in_place = 1);
    /* batch statistics asked for at TEST */
    GC("bn test batch stats", .layer = "type: 'BatchNorm' batch_norm_param { use_global_stats: false }",
       .n_bottoms = 1, .shapes = {{4, 3, 2, 3}}, .phase = MTL_PHASE_TEST);
    /* stored statistics (fresh blobs: mean 0, variance 0, so y = x / sqrt(eps)) at TEST and TRAIN */
    GC("bn test global", .layer = "type: 'BatchNorm' batch_norm_param { eps: 0.25 }", .n_bottoms = 1,
       .shapes = {{2, 3, 4, 5}}, .phase = MTL_PHASE_TEST);
    GC("bn train global in place", .layer = "type: 'BatchNorm' batch_norm_param { use_global_stats: true eps: 0.5 }",
       .n_bottoms = 1, .shapes = {{5, 3}}, .in_place = 1);
    /* scale_bias: learned gamma and beta (params 3 and 4) checked too */
    GC("bn scale_bias train",
       .layer = "type: 'BatchNorm' batch_norm_param { scale_bias: true "
                "scale_filler { type: 'uniform' min: 0.5 max: 2 } bias_filler { type: 'uniform' min: -1 max: 1 } }",
       .n_bottoms = 1, .shapes = {{3, 4, 2, 3}});
    GC("bn scale_bias train in place 2d",
       .layer = "type: 'BatchNorm' batch_norm_param { scale_filler { type: 'uniform' min: -2 max: 2 } }",
       .n_bottoms = 1, .shapes = {{6, 5}}, .in_place = 1);
    GC("bn scale_bias test global",
       .layer = "type: 'BatchNorm' batch_norm_param { scale_bias: true eps: 0.3 "
                "scale_filler { type: 'uniform' min: 0.5 max: 2 } bias_filler { type: 'constant' value: 0.2 } }",
       .n_bottoms = 1, .shapes = {{2, 3, 3, 2}}, .phase = MTL_PHASE_TEST);
}

/* N=2, C=2, 2 values per sample and channel:
 *   channel 0: {1, 3, 5, 7}: mean 4, variance (9 + 1 + 1 + 9) / 4 = 5
 *   channel 1: {2, 2, 0, 4}: mean 2, variance (0 + 0 + 4 + 4) / 4 = 2 */
static const float bn_batch1[8] = {1, 3, 2, 2, 5, 7, 0, 4};
/*   channel 0: {0, 0, 2, 2}: mean 1, variance 1;  channel 1: {1, 1, 1, 1}: mean 1, variance 0 */
static const float bn_batch2[8] = {0, 0, 1, 1, 2, 2, 1, 1};

static void test_batch_norm_values(void)
{
    mtl_error err = {0};
    int shape[3] = {2, 2, 2};
    mtl_tensor *x = test_tensor_n(3, shape, bn_batch1), *y = mtl_tensor_create("top");
    mtl_layer *l = NULL;
    CHECK_OK(gradcheck_build("name: 'bn' type: 'BatchNorm' batch_norm_param { moving_average_fraction: 0.5 eps: 0 }",
                             MTL_PHASE_TRAIN, &x, 1, &y, 1, &l, &err),
             &err);
    if (!l)
        return;
    /* three statistics blobs, never learned */
    CHECK_INT(l->n_params, 3);
    CHECK_INT(l->params[0]->count, 2);
    CHECK_INT(l->params[1]->count, 2);
    CHECK_INT(l->params[2]->count, 1);
    for (int i = 0; i < 3; i++) {
        CHECK_INT(l->param_needs_grad[i], 0);
        CHECK_NEAR(l->param_specs[i].lr_mult, 0, 0);
    }
    forward(l);
    const float s5 = sqrtf(5.0f), s2 = sqrtf(2.0f);
    const float want[8] = {-3 / s5, -1 / s5, 0, 0, 1 / s5, 3 / s5, -2 / s2, 2 / s2};
    for (int i = 0; i < 8; i++)
        CHECK_NEAR(y->data[i], want[i], 1e-6);
    /* first update: factor 0 * 0.5 + 1 = 1; mean = batch mean; variance sum = m/(m-1) var = 4/3 var */
    CHECK_NEAR(l->params[2]->data[0], 1.0, 1e-7);
    CHECK_NEAR(l->params[0]->data[0], 4.0, 1e-6);
    CHECK_NEAR(l->params[0]->data[1], 2.0, 1e-6);
    CHECK_NEAR(l->params[1]->data[0], 20.0 / 3.0, 1e-5);
    CHECK_NEAR(l->params[1]->data[1], 8.0 / 3.0, 1e-5);

    /* backward at TRAIN: dy = 1 everywhere gives 0 (the batch mean absorbs it) */
    for (int i = 0; i < 8; i++)
        y->grad[i] = 1.0f;
    l->ops->backward(l);
    for (int i = 0; i < 8; i++)
        CHECK_NEAR(x->grad[i], 0.0, 1e-6);

    /* second batch: factor 1 * 0.5 + 1 = 1.5; mean sum = [1 + 0.5 * 4, 1 + 0.5 * 2] = [3, 2];
     * variance sum = [4/3 * 1 + 0.5 * 20/3, 4/3 * 0 + 0.5 * 8/3] = [14/3, 4/3] */
    memcpy(x->data, bn_batch2, sizeof(bn_batch2));
    forward(l);
    CHECK_NEAR(l->params[2]->data[0], 1.5, 1e-7);
    CHECK_NEAR(l->params[0]->data[0], 3.0, 1e-6);
    CHECK_NEAR(l->params[0]->data[1], 2.0, 1e-6);
    CHECK_NEAR(l->params[1]->data[0], 14.0 / 3.0, 1e-5);
    CHECK_NEAR(l->params[1]->data[1], 4.0 / 3.0, 1e-5);

    /* a TEST layer over these statistics: mean = [3, 2] / 1.5 = [2, 4/3], var = [14/4.5, 4/4.5] */
    mtl_tensor *x2 = test_tensor_n(3, shape, bn_batch1), *y2 = mtl_tensor_create("top");
    mtl_layer *t = NULL;
    CHECK_OK(gradcheck_build("name: 'bn' type: 'BatchNorm' batch_norm_param { eps: 0.1 }", MTL_PHASE_TEST, &x2, 1,
                             &y2, 1, &t, &err),
             &err);
    if (t) {
        for (int p = 0; p < 3; p++)
            memcpy(t->params[p]->data, l->params[p]->data, (size_t)l->params[p]->count * sizeof(float));
        forward(t);
        double mean[2] = {2.0, 4.0 / 3.0}, var[2] = {14.0 / 4.5, 4.0 / 4.5};
        for (int i = 0; i < 8; i++) {
            int c = (i / 2) % 2;
            CHECK_NEAR(y2->data[i], (bn_batch1[i] - mean[c]) / sqrt(var[c] + 0.1), 1e-5);
            y2->grad[i] = (float)(i + 1);
        }
        /* the statistics stay fixed at TEST */
        CHECK_NEAR(t->params[2]->data[0], 1.5, 0);
        CHECK_NEAR(t->params[0]->data[0], 3.0, 1e-6);
        /* global statistics: backward is dy / sqrt(var + eps) */
        t->ops->backward(t);
        for (int i = 0; i < 8; i++) {
            int c = (i / 2) % 2;
            CHECK_NEAR(x2->grad[i], (i + 1) / sqrt(var[c] + 0.1), 1e-5);
        }
        gradcheck_free_layer(t);
    }
    mtl_tensor_free(x2);
    mtl_tensor_free(y2);
    gradcheck_free_layer(l);

    /* 2D input N x C; param specs with lr_mult 0 are accepted */
    const float xs2[6] = {1, 10, 2, 20, 3, 60};
    int s2d[2] = {3, 2};
    memcpy(x->data, xs2, sizeof(xs2));
    CHECK_OK(mtl_tensor_reshape(x, 2, s2d, &err), &err);
    CHECK_OK(gradcheck_build("name: 'bn' type: 'BatchNorm' param { lr_mult: 0 } param { lr_mult: 0 decay_mult: 0 } "
                             "param { lr_mult: 0 } batch_norm_param { eps: 0 }",
                             MTL_PHASE_TRAIN, &x, 1, &y, 1, &l, &err),
             &err);
    if (l) {
        forward(l);
        /* channel 0: {1, 2, 3}: mean 2, variance 2/3; channel 1: {10, 20, 60}: mean 30, variance 1400/3 */
        CHECK_NEAR(y->data[0], -1.0 / sqrt(2.0 / 3.0), 1e-5);
        CHECK_NEAR(y->data[5], 30.0 / sqrt(1400.0 / 3.0), 1e-5);
        CHECK_NEAR(l->params[1]->data[1], 1400.0 / 3.0 * 1.5, 1e-2); /* m/(m-1) = 3/2 */
        gradcheck_free_layer(l);
    }
    mtl_tensor_free(x);
    mtl_tensor_free(y);
}

static void test_scale_bias_gradients(void)
{
    /* Scale with a learned factor: default axis 1 / num_axes 1, two axes, to the end, a scalar */
    GC("scale learned 4d", .layer = "type: 'Scale' scale_param { " UNIFORM_FILLER " }", .n_bottoms = 1,
       .shapes = {{2, 3, 4, 5}});
    GC("scale learned 2d default filler", .layer = "type: 'Scale'", .n_bottoms = 1, .shapes = {{5, 3}});
    GC("scale learned axis 0 two axes", .layer = "type: 'Scale' scale_param { axis: 0 num_axes: 2 " UNIFORM_FILLER " }",
       .n_bottoms = 1, .shapes = {{3, 2, 5}});
    GC("scale learned to the end", .layer = "type: 'Scale' scale_param { axis: -2 num_axes: -1 " UNIFORM_FILLER " }",
       .n_bottoms = 1, .shapes = {{2, 3, 3, 2}});
    GC("scale learned scalar", .layer = "type: 'Scale' scale_param { num_axes: 0 " UNIFORM_FILLER " }", .n_bottoms = 1,
       .shapes = {{2, 3, 5}});
    GC("scale learned bias", .layer = "type: 'Scale' scale_param { bias_term: true " UNIFORM_FILLER
                                      " bias_filler { type: 'uniform' min: -1 max: 1 } }",
       .n_bottoms = 1, .shapes = {{3, 4, 3, 3}});
    GC("scale learned bias in place", .layer = "type: 'Scale' scale_param { bias_term: true " UNIFORM_FILLER " }",
       .n_bottoms = 1, .shapes = {{2, 5, 3}}, .in_place = 1);
    GC("scale learned in place 2d", .layer = "type: 'Scale' scale_param { " UNIFORM_FILLER " }", .n_bottoms = 1,
       .shapes = {{7, 3}}, .in_place = 1);
    /* Scale with the factor as bottom 1 (its gradient checked) */
    GC("scale bottom 4d", .layer = "type: 'Scale'", .n_bottoms = 2, .shapes = {{2, 3, 4, 5}, {3}});
    GC("scale bottom two axes", .layer = "type: 'Scale'", .n_bottoms = 2, .shapes = {{2, 3, 4, 5}, {3, 4}});
    GC("scale bottom axis 0", .layer = "type: 'Scale' scale_param { axis: 0 }", .n_bottoms = 2,
       .shapes = {{3, 5}, {3}});
    GC("scale bottom last axis", .layer = "type: 'Scale' scale_param { axis: -1 }", .n_bottoms = 2,
       .shapes = {{2, 3, 5}, {5}});
    GC("scale bottom scalar", .layer = "type: 'Scale' scale_param { axis: 2 }", .n_bottoms = 2,
       .shapes = {{2, 3, 5}, {0}});
    GC("scale bottom bias", .layer = "type: 'Scale' scale_param { bias_term: true "
                                     "bias_filler { type: 'uniform' min: -1 max: 1 } }",
       .n_bottoms = 2, .shapes = {{3, 4, 3}, {4, 3}});
    GC("scale bottom in place", .layer = "type: 'Scale' scale_param { bias_term: true }", .n_bottoms = 2,
       .shapes = {{2, 3, 5}, {3}}, .in_place = 1);
    /* Bias */
    GC("bias learned 4d", .layer = "type: 'Bias' bias_param { " UNIFORM_FILLER " }", .n_bottoms = 1,
       .shapes = {{2, 3, 4, 5}});
    GC("bias learned 2d", .layer = "type: 'Bias'", .n_bottoms = 1, .shapes = {{5, 3}});
    GC("bias learned two axes", .layer = "type: 'Bias' bias_param { axis: 1 num_axes: 2 }", .n_bottoms = 1,
       .shapes = {{2, 3, 5, 2}});
    GC("bias learned scalar in place", .layer = "type: 'Bias' bias_param { num_axes: 0 }", .n_bottoms = 1,
       .shapes = {{3, 5}}, .in_place = 1);
    GC("bias bottom", .layer = "type: 'Bias'", .n_bottoms = 2, .shapes = {{2, 3, 4, 5}, {3, 4}});
    GC("bias bottom axis 0", .layer = "type: 'Bias' bias_param { axis: 0 }", .n_bottoms = 2,
       .shapes = {{3, 5, 2}, {3}});
    GC("bias bottom scalar in place", .layer = "type: 'Bias'", .n_bottoms = 2, .shapes = {{3, 5, 2}, {0}},
       .in_place = 1);
    GC("bias bottom in place", .layer = "type: 'Bias' bias_param { axis: -1 }", .n_bottoms = 2,
       .shapes = {{3, 7}, {7}}, .in_place = 1);
}

static void test_scale_bias_values(void)
{
    mtl_error err = {0};
    /* x (2 x 3) * s (3) + b (3) */
    const float xs[6] = {1, 2, 3, 4, 5, 6}, ss[3] = {2, -1, 0.5f};
    mtl_tensor *bottoms[2] = {test_tensor_n(2, (int[]){2, 3}, xs), test_tensor_n(1, (int[]){3}, ss)};
    mtl_tensor *y = mtl_tensor_create("top");
    mtl_layer *l = NULL;
    CHECK_OK(gradcheck_build("name: 's' type: 'Scale' scale_param { bias_term: true bias_filler { type: 'constant' "
                             "value: 10 } }",
                             MTL_PHASE_TRAIN, bottoms, 2, &y, 1, &l, &err),
             &err);
    if (l) {
        CHECK_INT(l->n_params, 1); /* with two bottoms the bias is param 0, as in Caffe */
        forward(l);
        const float want[6] = {12, 8, 11.5f, 18, 5, 13};
        for (int i = 0; i < 6; i++) {
            CHECK_NEAR(y->data[i], want[i], 1e-6);
            y->grad[i] = 1.0f;
        }
        l->params[0]->grad[0] = 1.0f; /* param gradients accumulate */
        l->ops->backward(l);
        CHECK_NEAR(bottoms[1]->grad[0], 5.0, 1e-6); /* 1 + 4 */
        CHECK_NEAR(bottoms[1]->grad[1], 7.0, 1e-6);
        CHECK_NEAR(bottoms[1]->grad[2], 9.0, 1e-6);
        CHECK_NEAR(l->params[0]->grad[0], 3.0, 1e-6);
        CHECK_NEAR(bottoms[0]->grad[4], -1.0, 1e-6);
        gradcheck_free_layer(l);
    }
    mtl_tensor_free(y);

    /* Bias with the offset as bottom 1, in place */
    CHECK_OK(gradcheck_build("name: 'b' type: 'Bias'", MTL_PHASE_TRAIN, bottoms, 2, bottoms, 1, &l, &err), &err);
    if (l) {
        forward(l);
        const float want[6] = {3, 1, 3.5f, 6, 4, 6.5f};
        for (int i = 0; i < 6; i++)
            CHECK_NEAR(bottoms[0]->data[i], want[i], 1e-6);
        gradcheck_free_layer(l);
    }

    /* Scale with a learned factor defaults to 1 */
    y = mtl_tensor_create("top");
    CHECK_OK(gradcheck_build("name: 's' type: 'Scale'", MTL_PHASE_TRAIN, bottoms, 1, &y, 1, &l, &err), &err);
    if (l) {
        CHECK_INT(l->n_params, 1);
        CHECK_INT(l->params[0]->count, 3);
        CHECK_NEAR(l->params[0]->data[2], 1.0, 0);
        gradcheck_free_layer(l);
    }
    mtl_tensor_free(y);
    mtl_tensor_free(bottoms[0]);
    mtl_tensor_free(bottoms[1]);
}

static void test_lrn_gradients(void)
{
    GC("lrn across 5", .layer = "type: 'LRN'", .n_bottoms = 1, .shapes = {{2, 7, 3, 3}});
    GC("lrn across 3 odd", .layer = "type: 'LRN' lrn_param { local_size: 3 alpha: 2 beta: 0.6 k: 2 }",
       .n_bottoms = 1, .shapes = {{1, 4, 3, 5}});
    GC("lrn across wide", .layer = "type: 'LRN' lrn_param { local_size: 7 alpha: 3 engine: CAFFE }", .n_bottoms = 1,
       .shapes = {{2, 3, 2, 2}});
    GC("lrn within 3", .layer = "type: 'LRN' lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 4 }",
       .n_bottoms = 1, .shapes = {{2, 2, 5, 4}});
    GC("lrn within 5", .layer = "type: 'LRN' lrn_param { norm_region: WITHIN_CHANNEL alpha: 10 beta: 1 }",
       .n_bottoms = 1, .shapes = {{1, 3, 3, 7}});
}

static void test_lrn_values(void)
{
    mtl_error err = {0};
    const float xs[3] = {1, 2, 3};
    /* ACROSS_CHANNELS, n = 3, alpha = 3 (alpha / n = 1), beta = 1, k = 1, x = [1, 2, 3] over channels:
     * base = [1 + 1 + 4, 1 + 1 + 4 + 9, 1 + 4 + 9] = [6, 15, 14], y = [1/6, 2/15, 3/14] */
    mtl_tensor *x = test_tensor_n(4, (int[]){1, 3, 1, 1}, xs), *y = mtl_tensor_create("top");
    mtl_layer *l = NULL;
    CHECK_OK(gradcheck_build("name: 'n' type: 'LRN' lrn_param { local_size: 3 alpha: 3 beta: 1 }", MTL_PHASE_TRAIN,
                             &x, 1, &y, 1, &l, &err),
             &err);
    if (l) {
        forward(l);
        CHECK_NEAR(y->data[0], 1.0 / 6.0, 1e-6);
        CHECK_NEAR(y->data[1], 2.0 / 15.0, 1e-6);
        CHECK_NEAR(y->data[2], 3.0 / 14.0, 1e-6);
        gradcheck_free_layer(l);
    }
    /* k = 2, beta = 0.5: base = [7, 16, 15] */
    CHECK_OK(gradcheck_build("name: 'n' type: 'LRN' lrn_param { local_size: 3 alpha: 3 beta: 0.5 k: 2 }",
                             MTL_PHASE_TRAIN, &x, 1, &y, 1, &l, &err),
             &err);
    if (l) {
        forward(l);
        CHECK_NEAR(y->data[0], 1.0 / sqrt(7.0), 1e-6);
        CHECK_NEAR(y->data[1], 2.0 / 4.0, 1e-6);
        CHECK_NEAR(y->data[2], 3.0 / sqrt(15.0), 1e-6);
        gradcheck_free_layer(l);
    }
    mtl_tensor_free(x);
    /* WITHIN_CHANNEL, n = 3, alpha = 9 (alpha / n^2 = 1), beta = 1, over a row [1, 2, 3]: the 3 x 3
     * windows hold {1, 2}, {1, 2, 3}, {2, 3}: base = 1 + [5, 14, 13] (Caffe adds 1, not k) */
    x = test_tensor_n(4, (int[]){1, 1, 1, 3}, xs);
    CHECK_OK(gradcheck_build("name: 'n' type: 'LRN' lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 9 "
                             "beta: 1 k: 5 }",
                             MTL_PHASE_TRAIN, &x, 1, &y, 1, &l, &err),
             &err);
    if (l) {
        forward(l);
        CHECK_NEAR(y->data[0], 1.0 / 6.0, 1e-6);
        CHECK_NEAR(y->data[1], 2.0 / 15.0, 1e-6);
        CHECK_NEAR(y->data[2], 3.0 / 14.0, 1e-6);
        gradcheck_free_layer(l);
    }
    mtl_tensor_free(x);
    /* WITHIN_CHANNEL on 2 x 2 with a 3 x 3 window: every window holds all four values (sum of squares
     * 30), still divided by 9: base = 1 + 9/9 * 30 = 31 */
    const float sq[4] = {1, 2, 3, 4};
    x = test_tensor_n(4, (int[]){1, 1, 2, 2}, sq);
    CHECK_OK(gradcheck_build("name: 'n' type: 'LRN' lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 9 "
                             "beta: 1 }",
                             MTL_PHASE_TRAIN, &x, 1, &y, 1, &l, &err),
             &err);
    if (l) {
        forward(l);
        for (int i = 0; i < 4; i++)
            CHECK_NEAR(y->data[i], sq[i] / 31.0, 1e-6);
        gradcheck_free_layer(l);
    }
    mtl_tensor_free(x);
    mtl_tensor_free(y);
}

/* Per-channel sums give the same bits whatever the thread count. */
static void test_determinism(void)
{
#ifdef MTL_OPENMP
    int shape[4] = {8, 5, 41, 37};
    mtl_tensor *x = test_tensor_n(4, shape, NULL);
    float out[2][3];
    int threads[2] = {1, 3}, saved = omp_get_max_threads();
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(threads[run]);
        gradcheck_fill(x, -2, 3, 11);
        mtl_tensor *y = mtl_tensor_create("top");
        mtl_layer *l = NULL;
        mtl_error err = {0};
        CHECK_OK(gradcheck_build("name: 'bn' type: 'BatchNorm' batch_norm_param { scale_bias: true }", MTL_PHASE_TRAIN,
                                 &x, 1, &y, 1, &l, &err),
                 &err);
        if (!l)
            return;
        forward(l);
        gradcheck_fill(y, -1, 1, 12);
        memcpy(y->grad, y->data, (size_t)y->count * sizeof(float));
        l->ops->backward(l);
        out[run][0] = l->params[1]->data[3];
        out[run][1] = l->params[3]->grad[2];
        out[run][2] = x->grad[4321];
        gradcheck_free_layer(l);
        mtl_tensor_free(y);
    }
    omp_set_num_threads(saved);
    CHECK(memcmp(out[0], out[1], sizeof(out[0])) == 0);
    mtl_tensor_free(x);
#endif
}

static void expect_error(const char *text, int n_bottoms, const int (*shapes)[4], const int *ndims, mtl_status status,
                         const char *needle)
{
    mtl_error err = {0};
    mtl_tensor *b[2] = {0}, *y = mtl_tensor_create("top");
    for (int i = 0; i < n_bottoms; i++)
        b[i] = test_tensor_n(ndims[i], shapes[i], NULL);
    mtl_layer *l = NULL;
    CHECK_FAILS(gradcheck_build(text, MTL_PHASE_TRAIN, b, n_bottoms, &y, 1, &l, &err), &err, status, needle);
    gradcheck_free_layer(l);
    for (int i = 0; i < n_bottoms; i++)
        mtl_tensor_free(b[i]);
    mtl_tensor_free(y);
}

static void test_errors(void)
{
    const int s4[][4] = {{2, 3, 4, 5}}, d4[] = {4};
    const int s2[][4] = {{2, 3}}, d2[] = {2};
    expect_error("name: 'n' type: 'LRN' lrn_param { local_size: 4 }", 1, s4, d4, MTL_ERR_CONFIG,
                 "local_size must be a positive odd number, got 4");
    expect_error("name: 'n' type: 'LRN' lrn_param { local_size: 0 }", 1, s4, d4, MTL_ERR_CONFIG, "local_size");
    expect_error("name: 'n' type: 'LRN'", 1, s2, d2, MTL_ERR_SHAPE, "4-axis bottom");
    expect_error("name: 'n' type: 'LRN' lrn_param { norm_region: ACROSS }", 1, s4, d4, MTL_ERR_CONFIG,
                 "ACROSS_CHANNELS");

    const int mismatch[][4] = {{2, 3, 4, 5}, {4}}, dm[] = {4, 1};
    expect_error("name: 's' type: 'Scale'", 2, mismatch, dm, MTL_ERR_SHAPE,
                 "bottom 1 (the scale) has shape 4, which does not match bottom 0 (2x3x4x5) from axis 1");
    const int too_long[][4] = {{2, 3}, {3, 4}}, dl[] = {2, 2};
    expect_error("name: 's' type: 'Scale'", 2, too_long, dl, MTL_ERR_SHAPE, "does not match bottom 0");
    expect_error("name: 'b' type: 'Bias'", 2, mismatch, dm, MTL_ERR_SHAPE, "bottom 1 (the bias) has shape 4");
    expect_error("name: 's' type: 'Scale' scale_param { num_axes: -2 }", 1, s4, d4, MTL_ERR_CONFIG,
                 "num_axes must be >= 0, or -1");
    expect_error("name: 's' type: 'Scale' scale_param { axis: 2 num_axes: 3 }", 1, s4, d4, MTL_ERR_CONFIG,
                 "extends past bottom 0");
    expect_error("name: 'b' type: 'Bias' bias_param { axis: 4 }", 1, s4, d4, MTL_ERR_CONFIG,
                 "axis 4 is out of range");

    expect_error("name: 'bn' type: 'BatchNorm' param { lr_mult: 1 }", 1, s4, d4, MTL_ERR_CONFIG,
                 "param 0 has lr_mult 1: the batch statistics");
    expect_error("name: 'bn' type: 'BatchNorm' param { lr_mult: 0 } param { decay_mult: 0 }", 1, s4, d4,
                 MTL_ERR_CONFIG, "param 1 has lr_mult 1");
    expect_error("name: 'bn' type: 'BatchNorm' batch_norm_param { moving_average_fraction: 1.5 }", 1, s4, d4,
                 MTL_ERR_CONFIG, "moving_average_fraction must be in [0, 1]");
    expect_error("name: 'bn' type: 'BatchNorm' batch_norm_param { eps: -1 }", 1, s4, d4, MTL_ERR_CONFIG,
                 "eps must be >= 0");
    expect_error("name: 'bn' type: 'BatchNorm' batch_norm_param { use_global_stat: true }", 1, s4, d4,
                 MTL_ERR_CONFIG, "use_global_stats");
}

int main(void)
{
    test_batch_norm_gradients();
    test_batch_norm_values();
    test_scale_bias_gradients();
    test_scale_bias_values();
    test_lrn_gradients();
    test_lrn_values();
    test_determinism();
    test_errors();
    return check_finish();
}
