/* Tests for the neuron layers (ReLU, PReLU, Sigmoid, TanH, Dropout): finite-difference gradients
 * over several shapes and in place, forward values computed by hand, dropout mask statistics, and
 * the errors bad configurations give. */
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

static void test_gradients(void)
{
    /* ReLU: plain, leaky, negative slope; 4D, 2D, odd sizes; in place */
    GC("relu 4d", .layer = "type: 'ReLU'", .n_bottoms = 1, .shapes = {{2, 3, 4, 5}});
    GC("relu leaky 2d", .layer = "type: 'ReLU' relu_param { negative_slope: 0.1 engine: CAFFE }", .n_bottoms = 1,
       .shapes = {{3, 7}});
    GC("relu negative slope odd", .layer = "type: 'ReLU' relu_param { negative_slope: -0.3 }", .n_bottoms = 1,
       .shapes = {{1, 3, 5, 3}});
    GC("relu in place", .layer = "type: 'ReLU'", .n_bottoms = 1, .shapes = {{2, 3, 3, 3}}, .in_place = 1);
    GC("relu leaky in place", .layer = "type: 'ReLU' relu_param { negative_slope: 0.2 }", .n_bottoms = 1,
       .shapes = {{5, 9}}, .in_place = 1);
    GC("relu negative slope in place", .layer = "type: 'ReLU' relu_param { negative_slope: -0.5 }", .n_bottoms = 1,
       .shapes = {{2, 5, 3}}, .in_place = 1);

    /* PReLU: per channel and shared slopes (param checked), random slopes, in place */
    GC("prelu 4d", .layer = "type: 'PReLU' prelu_param { filler { type: 'uniform' min: -0.5 max: 0.5 } }",
       .n_bottoms = 1, .shapes = {{2, 3, 4, 5}});
    GC("prelu default filler 2d", .layer = "type: 'PReLU'", .n_bottoms = 1, .shapes = {{4, 7}});
    GC("prelu shared 3d", .layer = "type: 'PReLU' prelu_param { channel_shared: true }", .n_bottoms = 1,
       .shapes = {{3, 5, 7}});
    GC("prelu in place", .layer = "type: 'PReLU' prelu_param { filler { type: 'uniform' min: 0 max: 1 } }",
       .n_bottoms = 1, .shapes = {{2, 4, 3, 3}}, .in_place = 1);
    GC("prelu shared in place", .layer = "type: 'PReLU' prelu_param { channel_shared: true }", .n_bottoms = 1,
       .shapes = {{3, 2, 5}}, .in_place = 1);

    /* Sigmoid and TanH */
    GC("sigmoid 4d", .layer = "type: 'Sigmoid'", .n_bottoms = 1, .shapes = {{2, 3, 4, 5}}, .lo = -4, .hi = 4);
    GC("sigmoid 2d in place", .layer = "type: 'Sigmoid' sigmoid_param { engine: CAFFE }", .n_bottoms = 1,
       .shapes = {{3, 7}}, .in_place = 1, .lo = -3, .hi = 3);
    GC("tanh 4d", .layer = "type: 'TanH'", .n_bottoms = 1, .shapes = {{1, 3, 5, 3}}, .lo = -2, .hi = 2);
    GC("tanh 2d in place", .layer = "type: 'TanH' tanh_param { engine: DEFAULT }", .n_bottoms = 1,
       .shapes = {{5, 3}}, .in_place = 1, .lo = -2, .hi = 2);

    /* Dropout: TRAIN (the harness replays the same mask), TEST, both scale_train modes, channel-wise */
    GC("dropout train", .layer = "type: 'Dropout' dropout_param { dropout_ratio: 0.3 }", .n_bottoms = 1,
       .shapes = {{2, 3, 4, 5}});
    GC("dropout train 2d unscaled", .layer = "type: 'Dropout' dropout_param { scale_train: false }", .n_bottoms = 1,
       .shapes = {{7, 3}});
    GC("dropout train in place", .layer = "type: 'Dropout'", .n_bottoms = 1, .shapes = {{3, 5, 3}}, .in_place = 1);
    GC("dropout channel train", .layer = "type: 'Dropout' dropout_param { channel_wise: true dropout_ratio: 0.4 }",
       .n_bottoms = 1, .shapes = {{3, 4, 3, 5}});
    GC("dropout channel in place", .layer = "type: 'Dropout' dropout_param { channel_wise: true }", .n_bottoms = 1,
       .shapes = {{2, 5, 7}}, .in_place = 1);
    GC("dropout test", .layer = "type: 'Dropout'", .n_bottoms = 1, .shapes = {{2, 3, 4, 5}},
       .phase = MTL_PHASE_TEST);
    GC("dropout test unscaled in place", .layer = "type: 'Dropout' dropout_param { scale_train: false }",
       .n_bottoms = 1, .shapes = {{3, 7}}, .phase = MTL_PHASE_TEST, .in_place = 1);
}

/* Forward of a one-bottom layer on given values; returns the built layer (tops[0] = *top). */
static mtl_layer *build1(const char *text, mtl_phase phase, mtl_tensor *x, mtl_tensor **top, int in_place_)
{
    mtl_error err = {0};
    mtl_layer *l = NULL;
    *top = in_place_ ? x : mtl_tensor_create("top");
    CHECK_OK(gradcheck_build(text, phase, &x, 1, top, 1, &l, &err), &err);
    return l;
}

static void forward(mtl_layer *l)
{
    mtl_error err = {0};
    CHECK_OK(l->ops->reshape(l, &err), &err);
    CHECK_OK(l->ops->forward(l, &err), &err);
}

static void test_relu_values(void)
{
    const float xs[6] = {-2.0f, -0.5f, 0.0f, 1.0f, 3.0f, -10.0f};
    mtl_tensor *x = test_tensor_n(2, (int[]){2, 3}, xs), *y;
    mtl_layer *l = build1("name: 'r' type: 'ReLU' relu_param { negative_slope: 0.1 }", MTL_PHASE_TRAIN, x, &y, 0);
    if (!l)
        return;
    forward(l);
    /* max(x, 0) + 0.1 min(x, 0) */
    const float want[6] = {-0.2f, -0.05f, 0.0f, 1.0f, 3.0f, -1.0f};
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(y->data[i], want[i], 1e-6);
    for (int i = 0; i < 6; i++)
        y->grad[i] = 2.0f;
    l->ops->backward(l);
    /* slope where x <= 0 (Caffe: x = 0 takes the slope) */
    const float dwant[6] = {0.2f, 0.2f, 0.2f, 2.0f, 2.0f, 0.2f};
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(x->grad[i], dwant[i], 1e-6);
    gradcheck_free_layer(l);
    mtl_tensor_free(y);

    /* plain ReLU in place keeps the right gradient mask after overwriting x */
    memcpy(x->data, xs, sizeof(xs));
    l = build1("name: 'r' type: 'ReLU'", MTL_PHASE_TRAIN, x, &y, 1);
    forward(l);
    const float want0[6] = {0, 0, 0, 1, 3, 0};
    for (int i = 0; i < 6; i++) {
        CHECK_NEAR(x->data[i], want0[i], 0);
        x->grad[i] = 1.0f + (float)i;
    }
    l->ops->backward(l);
    const float dwant0[6] = {0, 0, 0, 4, 5, 0};
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(x->grad[i], dwant0[i], 0);
    gradcheck_free_layer(l);
    mtl_tensor_free(x);
}

static void test_prelu_values(void)
{
    /* N=1, C=2, 2 values per channel; default slopes 0.25 */
    const float xs[4] = {-4.0f, 2.0f, 1.0f, -8.0f};
    mtl_tensor *x = test_tensor_n(3, (int[]){1, 2, 2}, xs), *y;
    mtl_layer *l = build1("name: 'p' type: 'PReLU'", MTL_PHASE_TRAIN, x, &y, 0);
    if (!l)
        return;
    CHECK_INT(l->n_params, 1);
    CHECK_INT(l->params[0]->ndim, 1);
    CHECK_INT(l->params[0]->count, 2);
    CHECK_NEAR(l->params[0]->data[0], 0.25, 0);
    l->params[0]->data[1] = 0.5f;
    forward(l);
    const float want[4] = {-1.0f, 2.0f, 1.0f, -4.0f};
    for (int i = 0; i < 4; i++)
        CHECK_NEAR(y->data[i], want[i], 1e-6);
    for (int i = 0; i < 4; i++)
        y->grad[i] = 1.0f;
    l->params[0]->grad[0] = 10.0f; /* accumulated into */
    l->params[0]->grad[1] = 0.0f;
    l->ops->backward(l);
    /* d slope_c = sum over x <= 0 of dy * x */
    CHECK_NEAR(l->params[0]->grad[0], 10.0f - 4.0f, 1e-6);
    CHECK_NEAR(l->params[0]->grad[1], -8.0f, 1e-6);
    const float dwant[4] = {0.25f, 1.0f, 1.0f, 0.5f};
    for (int i = 0; i < 4; i++)
        CHECK_NEAR(x->grad[i], dwant[i], 1e-6);
    gradcheck_free_layer(l);
    mtl_tensor_free(y);

    /* channel_shared: a scalar parameter (no axes), as Caffe stores it */
    l = build1("name: 'p' type: 'PReLU' prelu_param { channel_shared: true filler { type: 'constant' value: 0.5 } }",
               MTL_PHASE_TRAIN, x, &y, 1);
    if (!l)
        return;
    CHECK_INT(l->params[0]->ndim, 0);
    CHECK_INT(l->params[0]->count, 1);
    forward(l);
    const float want2[4] = {-2.0f, 2.0f, 1.0f, -4.0f};
    for (int i = 0; i < 4; i++) {
        CHECK_NEAR(x->data[i], want2[i], 1e-6);
        x->grad[i] = 1.0f;
    }
    l->params[0]->grad[0] = 0.0f;
    l->ops->backward(l);
    CHECK_NEAR(l->params[0]->grad[0], -12.0f, 1e-6); /* from the saved input, not the overwritten one */
    gradcheck_free_layer(l);
    mtl_tensor_free(x);
}

static void test_sigmoid_tanh_values(void)
{
    const float xs[3] = {0.0f, 2.0f, -1.0f};
    mtl_tensor *x = test_tensor_n(1, (int[]){3}, xs), *y;
    mtl_layer *l = build1("name: 's' type: 'Sigmoid'", MTL_PHASE_TRAIN, x, &y, 0);
    if (!l)
        return;
    forward(l);
    CHECK_NEAR(y->data[0], 0.5, 1e-7);
    CHECK_NEAR(y->data[1], 1.0 / (1.0 + exp(-2.0)), 1e-6); /* 0.880797 */
    CHECK_NEAR(y->data[2], 1.0 / (1.0 + exp(1.0)), 1e-6);  /* 0.268941 */
    for (int i = 0; i < 3; i++)
        y->grad[i] = 1.0f;
    l->ops->backward(l);
    CHECK_NEAR(x->grad[0], 0.25, 1e-6);
    gradcheck_free_layer(l);
    mtl_tensor_free(y);

    l = build1("name: 't' type: 'TanH'", MTL_PHASE_TRAIN, x, &y, 0);
    forward(l);
    CHECK_NEAR(y->data[0], 0.0, 1e-7);
    CHECK_NEAR(y->data[1], 0.96402758, 1e-6);
    CHECK_NEAR(y->data[2], -0.76159416, 1e-6);
    for (int i = 0; i < 3; i++)
        y->grad[i] = 1.0f;
    l->ops->backward(l);
    CHECK_NEAR(x->grad[0], 1.0, 1e-6);
    CHECK_NEAR(x->grad[2], 1.0 - 0.76159416 * 0.76159416, 1e-6);
    gradcheck_free_layer(l);
    mtl_tensor_free(y);
    mtl_tensor_free(x);
}

static void test_dropout_values(void)
{
    enum { N = 100000 };
    mtl_tensor *x = test_tensor_n(2, (int[]){N / 10, 10}, NULL), *y;
    for (int i = 0; i < N; i++)
        x->data[i] = 1.0f + (float)(i % 7);

    /* TRAIN, scale_train: about 70% kept, each kept value scaled by 1 / 0.7 */
    mtl_layer *l = build1("name: 'd' type: 'Dropout' dropout_param { dropout_ratio: 0.3 }", MTL_PHASE_TRAIN, x, &y, 0);
    if (!l)
        return;
    forward(l);
    int kept = 0, scaled_ok = 1;
    for (int i = 0; i < N; i++) {
        if (y->data[i] != 0.0f) {
            kept++;
            scaled_ok &= fabsf(y->data[i] - x->data[i] / 0.7f) <= 1e-5f * x->data[i];
        }
    }
    /* binomial: sd = sqrt(N 0.3 0.7) = 145, so 5 sd is 725 */
    CHECK_MSG(abs(kept - 70000) < 725, "kept %d of %d, expected about 70000", kept, N);
    CHECK(scaled_ok);
    float first[1000];
    memcpy(first, y->data, sizeof(first));
    /* backward: the same mask and scale on the gradient */
    for (int i = 0; i < N; i++)
        y->grad[i] = 1.0f;
    l->ops->backward(l);
    int grad_ok = 1;
    for (int i = 0; i < N; i++)
        grad_ok &= y->data[i] != 0.0f ? fabsf(x->grad[i] - 1.0f / 0.7f) < 1e-6f : x->grad[i] == 0.0f;
    CHECK(grad_ok);
    /* a second forward draws a new mask */
    forward(l);
    CHECK(memcmp(first, y->data, sizeof(first)) != 0);
    gradcheck_free_layer(l);
    mtl_tensor_free(y);

    /* the same seed gives the same mask (gradcheck_build reseeds its generator) */
    l = build1("name: 'd' type: 'Dropout' dropout_param { dropout_ratio: 0.3 }", MTL_PHASE_TRAIN, x, &y, 0);
    forward(l);
    CHECK(memcmp(first, y->data, sizeof(first)) == 0);
    gradcheck_free_layer(l);
    mtl_tensor_free(y);

    /* scale_train false: kept values unchanged at TRAIN, scaled by 1 - ratio at TEST */
    l = build1("name: 'd' type: 'Dropout' dropout_param { dropout_ratio: 0.25 scale_train: false }", MTL_PHASE_TRAIN,
               x, &y, 0);
    forward(l);
    kept = 0;
    int same = 1;
    for (int i = 0; i < N; i++)
        if (y->data[i] != 0.0f) {
            kept++;
            same &= y->data[i] == x->data[i];
        }
    CHECK_MSG(abs(kept - 75000) < 700, "kept %d of %d, expected about 75000", kept, N);
    CHECK(same);
    gradcheck_free_layer(l);
    mtl_tensor_free(y);
    l = build1("name: 'd' type: 'Dropout' dropout_param { dropout_ratio: 0.25 scale_train: false }", MTL_PHASE_TEST,
               x, &y, 0);
    forward(l);
    int scaled = 1;
    for (int i = 0; i < N; i++)
        scaled &= fabsf(y->data[i] - 0.75f * x->data[i]) < 1e-6f;
    CHECK(scaled);
    gradcheck_free_layer(l);
    mtl_tensor_free(y);

    /* TEST with scale_train: the identity, in place too */
    l = build1("name: 'd' type: 'Dropout'", MTL_PHASE_TEST, x, &y, 0);
    forward(l);
    CHECK(memcmp(x->data, y->data, (size_t)N * sizeof(float)) == 0);
    gradcheck_free_layer(l);
    mtl_tensor_free(y);
    float keep0 = x->data[0];
    l = build1("name: 'd' type: 'Dropout'", MTL_PHASE_TEST, x, &y, 1);
    forward(l);
    CHECK_NEAR(x->data[0], keep0, 0);
    gradcheck_free_layer(l);
    mtl_tensor_free(x);

    /* channel_wise: whole N x C channels kept or dropped together */
    enum { CN = 50, CC = 40, CS = 9 };
    x = test_tensor_n(4, (int[]){CN, CC, 3, 3}, NULL);
    for (int i = 0; i < CN * CC * CS; i++)
        x->data[i] = 1.0f;
    l = build1("name: 'd' type: 'Dropout' dropout_param { channel_wise: true dropout_ratio: 0.5 }", MTL_PHASE_TRAIN,
               x, &y, 0);
    if (!l)
        return;
    forward(l);
    int channels_kept = 0, uniform = 1;
    for (int p = 0; p < CN * CC; p++) {
        float v = y->data[p * CS];
        for (int i = 1; i < CS; i++)
            uniform &= y->data[p * CS + i] == v;
        uniform &= v == 0.0f || v == 2.0f;
        channels_kept += v != 0.0f;
    }
    CHECK(uniform);
    /* sd = sqrt(2000 / 4) = 22 */
    CHECK_MSG(abs(channels_kept - 1000) < 112, "kept %d of 2000 channels", channels_kept);
    gradcheck_free_layer(l);
    mtl_tensor_free(y);
    mtl_tensor_free(x);
}

/* The slope gradient of a shared PReLU sums over every value: the same bits for any thread count. */
static void test_determinism(void)
{
#ifdef MTL_OPENMP
    int shape[4] = {8, 16, 33, 31};
    mtl_tensor *x = test_tensor_n(4, shape, NULL), *y;
    gradcheck_fill(x, -1, 1, 5);
    float grads[2];
    float sample[2];
    int threads[2] = {1, 4};
    int saved = omp_get_max_threads();
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(threads[run]);
        mtl_layer *l =
            build1("name: 'p' type: 'PReLU' prelu_param { channel_shared: true }", MTL_PHASE_TRAIN, x, &y, 0);
        if (!l)
            return;
        forward(l);
        gradcheck_fill(y, -1, 1, 6);
        memcpy(y->grad, y->data, (size_t)y->count * sizeof(float));
        l->params[0]->grad[0] = 0.0f;
        l->ops->backward(l);
        grads[run] = l->params[0]->grad[0];
        sample[run] = x->grad[12345];
        gradcheck_free_layer(l);
        mtl_tensor_free(y);
    }
    omp_set_num_threads(saved);
    CHECK(memcmp(&grads[0], &grads[1], sizeof(float)) == 0);
    CHECK(memcmp(&sample[0], &sample[1], sizeof(float)) == 0);
    mtl_tensor_free(x);
#endif
}

static void expect_build_error(const char *text, int ndim, const int *shape, mtl_status status, const char *needle)
{
    mtl_error err = {0};
    mtl_tensor *x = test_tensor_n(ndim, shape, NULL), *y = mtl_tensor_create("top");
    mtl_layer *l = NULL;
    CHECK_FAILS(gradcheck_build(text, MTL_PHASE_TRAIN, &x, 1, &y, 1, &l, &err), &err, status, needle);
    gradcheck_free_layer(l);
    mtl_tensor_free(x);
    mtl_tensor_free(y);
}

static void test_errors(void)
{
    int s4[4] = {2, 3, 4, 5}, s1[1] = {6};
    expect_build_error("name: 'd' type: 'Dropout' dropout_param { dropout_ratio: 1.5 }", 4, s4, MTL_ERR_CONFIG,
                       "dropout_ratio must be in [0, 1), got 1.5");
    expect_build_error("name: 'd' type: 'Dropout' dropout_param { dropout_ratio: 1 }", 4, s4, MTL_ERR_CONFIG,
                       "dropout_ratio must be in [0, 1)");
    expect_build_error("name: 'd' type: 'Dropout' dropout_param { dropout_ratio: -0.1 }", 4, s4, MTL_ERR_CONFIG,
                       "dropout_ratio");
    expect_build_error("name: 'd' type: 'Dropout' dropout_param { channel_wise: true }", 1, s1, MTL_ERR_SHAPE,
                       "channel_wise dropout needs");
    expect_build_error("name: 'p' type: 'PReLU'", 1, s1, MTL_ERR_SHAPE, "at least 2 axes");
    expect_build_error("name: 'r' type: 'ReLU' relu_param { negative_slope: 'x' }", 4, s4, MTL_ERR_CONFIG,
                       "negative_slope");
    expect_build_error("name: 'r' type: 'ReLU' relu_param { negative_slop: 0.1 }", 4, s4, MTL_ERR_CONFIG,
                       "negative_slope");
    expect_build_error("name: 'p' type: 'PReLU' prelu_param { channel_shared: 3 }", 4, s4, MTL_ERR_CONFIG,
                       "channel_shared");
    expect_build_error("name: 's' type: 'Sigmoid' sigmoid_param { engin: CAFFE }", 4, s4, MTL_ERR_CONFIG, "engin");
}

int main(void)
{
    test_gradients();
    test_relu_values();
    test_prelu_values();
    test_sigmoid_tanh_values();
    test_dropout_values();
    test_determinism();
    test_errors();
    return check_finish();
}
