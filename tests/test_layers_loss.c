/* Tests for Softmax, the losses (SoftmaxWithLoss, SigmoidCrossEntropyLoss, EuclideanLoss) and
 * Accuracy: finite-difference gradients, every loss against values worked out by hand (each
 * normalization mode, ignore_label, NaN as mtl's missing-label marker), and bad labels and shapes. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "test_util.h"
#include "gradcheck.h"
#include "layers/labels.h"

#define LN2 0.69314718055994531
#define LN3 1.09861228866810969

/* Builds the layer over bottoms, runs forward and returns top 0's first value (NAN on failure). */
static float loss_of(const char *text, mtl_tensor **bottoms, int n_bottoms)
{
    mtl_error err;
    mtl_tensor *top = mtl_tensor_create("loss");
    mtl_layer *l = NULL;
    float v = NAN;
    CHECK_OK(gradcheck_build(text, MTL_PHASE_TRAIN, bottoms, n_bottoms, &top, 1, &l, &err), &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        CHECK_MSG(top->ndim == 0 && top->count == 1, "%s: loss top has %d axes", text, top->ndim);
        v = top->data[0];
    }
    gradcheck_free_layer(l);
    mtl_tensor_free(top);
    return v;
}

/* ---- gradient checks ------------------------------------------------------------------------ */

static void test_gradients(void)
{
    static const gradcheck_case cases[] = {
        {.layer = "type: 'Softmax'", .n_bottoms = 1, .shapes = {{2, 4}}},
        {.layer = "type: 'Softmax'", .n_bottoms = 1, .shapes = {{2, 3, 2, 2}}},
        {.layer = "type: 'Softmax' softmax_param { axis: 2 }", .n_bottoms = 1, .shapes = {{2, 3, 5}}},
        {.layer = "type: 'Softmax' softmax_param { axis: -1 engine: CAFFE }", .n_bottoms = 1, .shapes = {{2, 3, 4}}},
        {.layer = "type: 'Softmax' softmax_param { axis: 0 }", .n_bottoms = 1, .shapes = {{3, 2}}},
        {.layer = "type: 'Softmax'", .n_bottoms = 1, .shapes = {{3, 4}}, .in_place = 1},
        {.layer = "type: 'Softmax'", .n_bottoms = 1, .shapes = {{2, 5, 3}}, .in_place = 1, .lo = -4, .hi = 4},
        {.layer = "type: 'SoftmaxWithLoss'", .n_bottoms = 2, .shapes = {{3, 4}, {3}}, .label_classes = {0, 4}},
        {.layer = "type: 'SoftmaxWithLoss' loss_param { ignore_label: 1 }",
         .n_bottoms = 2,
         .shapes = {{2, 3, 2, 3}, {2, 1, 2, 3}},
         .label_classes = {0, 3}},
        {.layer = "type: 'SoftmaxWithLoss' softmax_param { axis: 2 }",
         .n_bottoms = 2,
         .shapes = {{2, 3, 4}, {2, 3}},
         .label_classes = {0, 4}},
        {.layer = "type: 'SoftmaxWithLoss' loss_param { ignore_label: 0 normalization: FULL }",
         .n_bottoms = 2,
         .shapes = {{2, 3, 4}, {2, 4}},
         .label_classes = {0, 3}},
        {.layer = "type: 'SoftmaxWithLoss' loss_param { normalization: BATCH_SIZE }",
         .n_bottoms = 2,
         .shapes = {{2, 3, 4}, {2, 4}},
         .label_classes = {0, 3}},
        {.layer = "type: 'SoftmaxWithLoss' loss_param { normalization: NONE ignore_label: 2 }",
         .n_bottoms = 2,
         .shapes = {{2, 3, 3}, {2, 3}},
         .label_classes = {0, 3}},
        {.layer = "type: 'SoftmaxWithLoss' loss_param { normalize: false }",
         .n_bottoms = 2,
         .shapes = {{4, 5}, {4, 1}},
         .label_classes = {0, 5}},
        {.layer = "type: 'SigmoidCrossEntropyLoss'",
         .n_bottoms = 2,
         .shapes = {{3, 4}, {3, 4}},
         .label_classes = {0, 2},
         .lo = -3,
         .hi = 3},
        {.layer = "type: 'SigmoidCrossEntropyLoss' loss_param { ignore_label: 1 normalization: VALID }",
         .n_bottoms = 2,
         .shapes = {{2, 3, 2}, {2, 6}},
         .label_classes = {0, 3}},
        {.layer = "type: 'SigmoidCrossEntropyLoss' loss_param { normalization: FULL }",
         .n_bottoms = 2,
         .shapes = {{2, 5}, {2, 5}},
         .no_check = {0, 1},
         .lo = 0,
         .hi = 1},
        {.layer = "type: 'SigmoidCrossEntropyLoss' loss_param { normalization: NONE }",
         .n_bottoms = 2,
         .shapes = {{3, 2}, {3, 2}},
         .no_check = {0, 1}},
        {.layer = "type: 'EuclideanLoss'", .n_bottoms = 2, .shapes = {{2, 3}, {2, 3}}},
        {.layer = "type: 'EuclideanLoss'", .n_bottoms = 2, .shapes = {{3, 2, 2}, {3, 4}}, .lo = -3, .hi = 3},
        {.layer = "type: 'EuclideanLoss'", .n_bottoms = 2, .shapes = {{4, 1}, {4, 1}}, .no_check = {0, 1}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char label[256];
        snprintf(label, sizeof(label), "%s (case %zu)", cases[i].layer, i);
        CHECK_MSG(gradcheck_run(label, &cases[i]) == 0, "gradient check failed: %s", label);
    }
}

/* ---- Softmax -------------------------------------------------------------------------------- */

static void test_softmax(void)
{
    mtl_error err;
    mtl_layer *l = NULL;
    /* [1 2 3] -> [e^-2, e^-1, 1] / (e^-2 + e^-1 + 1); [1000 1000 -1000] must not overflow */
    mtl_tensor *x = test_tensor((int[]){2, 3, 0}, (float[]){1, 2, 3, 1000, 1000, -1000});
    mtl_tensor *y = mtl_tensor_create("y");
    CHECK_OK(gradcheck_build("type: 'Softmax'", MTL_PHASE_TRAIN, &x, 1, &y, 1, &l, &err), &err);
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    test_check_values("softmax", y->data, (float[]){0.09003057f, 0.24472847f, 0.66524096f, 0.5f, 0.5f, 0.0f}, 6, 1e-6);
    gradcheck_free_layer(l);

    /* over axis 0: each column [1, 1000], [2, 1000], [3, -1000] */
    CHECK_OK(gradcheck_build("type: 'Softmax' softmax_param { axis: 0 }", MTL_PHASE_TRAIN, &x, 1, &y, 1, &l, &err),
             &err);
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    test_check_values("softmax axis 0", y->data, (float[]){0, 0, 1, 1, 1, 0}, 6, 1e-6);
    gradcheck_free_layer(l);

    /* in place: top is the bottom */
    CHECK_OK(gradcheck_build("type: 'Softmax'", MTL_PHASE_TRAIN, &x, 1, &x, 1, &l, &err), &err);
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    test_check_values("softmax in place", x->data, (float[]){0.09003057f, 0.24472847f, 0.66524096f, 0.5f, 0.5f, 0.0f}, 6,
                 1e-6);
    gradcheck_free_layer(l);

    /* a blob big enough for threads: every position sums to 1 and matches the plain formula */
    mtl_tensor *big = test_tensor((int[]){64, 10, 31, 0}, NULL), *big_y = mtl_tensor_create("y");
    gradcheck_fill(big, -5, 5, 9);
    CHECK_OK(gradcheck_build("type: 'Softmax'", MTL_PHASE_TRAIN, &big, 1, &big_y, 1, &l, &err), &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        int bad = 0;
        for (int n = 0; n < 64; n++)
            for (int j = 0; j < 31; j++) {
                double z = 0, total = 0;
                for (int c = 0; c < 10; c++)
                    z += exp(big->data[(n * 10 + c) * 31 + j]);
                for (int c = 0; c < 10; c++) {
                    int i = (n * 10 + c) * 31 + j;
                    total += big_y->data[i];
                    bad += fabs(big_y->data[i] - exp(big->data[i]) / z) > 1e-6;
                }
                bad += fabs(total - 1.0) > 1e-5;
            }
        CHECK_INT(bad, 0);
    }
    gradcheck_free_layer(l);
    mtl_tensor_free(big);
    mtl_tensor_free(big_y);

    CHECK_FAILS(gradcheck_build("type: 'Softmax' softmax_param { axis: 2 }", MTL_PHASE_TRAIN, &x, 1, &y, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "axis 2 is out of range");
    /* Caffe's engine choice is accepted and means nothing here */
    CHECK_OK(gradcheck_build("type: 'Softmax' softmax_param { engine: CUDNN }", MTL_PHASE_TRAIN, &x, 1, &y, 1, &l,
                             &err),
             &err);
    gradcheck_free_layer(l);
    mtl_tensor_free(x);
    mtl_tensor_free(y);
}

/* ---- SoftmaxWithLoss ------------------------------------------------------------------------ */

/* Scores 2 x 3 classes x 2 positions (logits as ln of unnormalised probabilities):
 *   sample 0, position 0: [0, 0, 0]       p = [1/3 1/3 1/3], label 0: loss ln 3
 *   sample 0, position 1: [0, ln2, 0]     p = [1/4 1/2 1/4], label 1: loss ln 2
 *   sample 1, position 0: [ln2, 0, 0]     p = [1/2 1/4 1/4], label 0: loss ln 2
 *   sample 1, position 1: [0, 0, 0]       label ignored (-1 with ignore_label, or NaN)
 * Sum ln 12 over 3 valid of 4 positions, batch 2. Laid out n, c, position. */
static const float spatial_scores[12] = {0, 0, 0, (float)LN2, 0, 0, (float)LN2, 0, 0, 0, 0, 0};

static void test_softmax_loss_values(void)
{
    const double ln12 = LN3 + 2 * LN2;
    mtl_tensor *bs[2] = {test_tensor((int[]){2, 3, 2, 0}, spatial_scores),
                         test_tensor((int[]){2, 1, 2, 0}, (float[]){0, 1, 0, -1})};
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss' loss_param { ignore_label: -1 }", bs, 2), ln12 / 3, 1e-6);
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss' loss_param { ignore_label: -1 normalization: VALID }", bs, 2),
               ln12 / 3, 1e-6);
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss' loss_param { ignore_label: -1 normalization: FULL }", bs, 2),
               ln12 / 4, 1e-6);
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss' loss_param { ignore_label: -1 normalization: BATCH_SIZE }", bs, 2),
               ln12 / 2, 1e-6);
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss' loss_param { ignore_label: -1 normalization: NONE }", bs, 2), ln12,
               1e-5);
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss' loss_param { ignore_label: -1 normalize: false }", bs, 2), ln12 / 2,
               1e-6);
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss' loss_param { ignore_label: -1 normalize: true }", bs, 2), ln12 / 3,
               1e-6);
    /* normalization wins over the legacy normalize */
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss' loss_param { ignore_label: -1 normalize: true normalization: NONE }",
                       bs, 2),
               ln12, 1e-5);

    /* the missing-label marker is ignored without any ignore_label */
    CHECK(mtl_label_is_missing(MTL_LABEL_MISSING) && !mtl_label_is_missing(0.0f));
    bs[1]->data[3] = MTL_LABEL_MISSING;
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss'", bs, 2), ln12 / 3, 1e-6);
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss' loss_param { normalization: FULL }", bs, 2), ln12 / 4, 1e-6);

    /* every label missing: VALID's normalizer is max(1, 0), so the loss is 0, not NaN */
    for (int i = 0; i < 4; i++)
        bs[1]->data[i] = MTL_LABEL_MISSING;
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss'", bs, 2), 0.0, 0);

    /* all valid, labels as N x positions: ln3 + ln2 + ln2 + ln3 (label 2 at [0 0 0]) over 4 */
    mtl_tensor *flat_labels = test_tensor((int[]){2, 2, 0}, (float[]){0, 1, 0, 2});
    mtl_tensor *bs2[2] = {bs[0], flat_labels};
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss'", bs2, 2), (2 * LN3 + 2 * LN2) / 4, 1e-6);
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss' loss_param { normalization: BATCH_SIZE }", bs2, 2),
               (2 * LN3 + 2 * LN2) / 2, 1e-6);
    mtl_tensor_free(flat_labels);

    /* a hopeless prediction: p(label) underflows to 0 and Caffe's floor FLT_MIN keeps the loss finite */
    mtl_tensor *hard[2] = {test_tensor((int[]){1, 3, 0}, (float[]){1000, 0, -1000}),
                           test_tensor((int[]){1, 0}, (float[]){2})};
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss'", hard, 2), -log((double)FLT_MIN), 1e-3);
    hard[1]->data[0] = 0;
    CHECK_NEAR(loss_of("type: 'SoftmaxWithLoss'", hard, 2), 0.0, 1e-6);
    mtl_tensor_free(hard[0]);
    mtl_tensor_free(hard[1]);
    mtl_tensor_free(bs[0]);
    mtl_tensor_free(bs[1]);
}

static void test_softmax_loss_backward(void)
{
    mtl_error err;
    mtl_layer *l = NULL;
    mtl_tensor *bs[2] = {test_tensor((int[]){2, 3, 2, 0}, spatial_scores),
                         test_tensor((int[]){2, 1, 2, 0}, (float[]){0, 1, 0, MTL_LABEL_MISSING})};
    mtl_tensor *tops[2] = {mtl_tensor_create("loss"), mtl_tensor_create("prob")};
    CHECK_OK(gradcheck_build("type: 'SoftmaxWithLoss'", MTL_PHASE_TRAIN, bs, 2, tops, 2, &l, &err), &err);
    if (!l)
        goto done;
    CHECK_OK(test_forward(l, &err), &err);
    CHECK(tops[1]->ndim == 3 && tops[1]->count == 12);
    /* second top: the probabilities, laid out like the scores */
    test_check_values("prob", tops[1]->data,
                 (float[]){1 / 3.f, 1 / 4.f, 1 / 3.f, 1 / 2.f, 1 / 3.f, 1 / 4.f, 1 / 2.f, 1 / 3.f, 1 / 4.f, 1 / 3.f,
                           1 / 4.f, 1 / 3.f},
                 12, 1e-6);
    /* loss weight 3 over VALID's 3: gradient is p - onehot(label), zero at the missing label */
    tops[0]->grad[0] = 3.0f;
    bs[1]->grad[0] = 123.0f;
    l->ops->backward(l);
    test_check_values("softmax loss grad", bs[0]->grad,
                 (float[]){-2 / 3.f, 1 / 4.f, 1 / 3.f, -1 / 2.f, 1 / 3.f, 1 / 4.f, -1 / 2.f, 0, 1 / 4.f, 0, 1 / 4.f, 0},
                 12, 1e-6);
    CHECK_NEAR(bs[1]->grad[0], 0.0f, 0); /* labels get a zero gradient */
    /* BATCH_SIZE would divide by 2 instead: check the scale follows the mode and the weight */
    gradcheck_free_layer(l);
    CHECK_OK(gradcheck_build("type: 'SoftmaxWithLoss' loss_param { normalization: NONE }", MTL_PHASE_TRAIN, bs, 2,
                             tops, 1, &l, &err),
             &err);
    if (!l)
        goto done;
    CHECK_OK(test_forward(l, &err), &err);
    tops[0]->grad[0] = 0.5f;
    l->propagate_down[1] = 0;
    l->ops->backward(l);
    test_check_values("softmax loss grad NONE", bs[0]->grad,
                 (float[]){-1 / 3.f, 1 / 8.f, 1 / 6.f, -1 / 4.f, 1 / 6.f, 1 / 8.f, -1 / 4.f, 0, 1 / 8.f, 0, 1 / 8.f, 0},
                 12, 1e-6);
done:
    gradcheck_free_layer(l);
    for (int i = 0; i < 2; i++) {
        mtl_tensor_free(bs[i]);
        mtl_tensor_free(tops[i]);
    }
}

static void test_softmax_loss_errors(void)
{
    mtl_error err;
    mtl_layer *l = NULL;
    mtl_tensor *top = mtl_tensor_create("loss");
    mtl_tensor *scores = test_tensor((int[]){2, 3, 2, 0}, spatial_scores);
    mtl_tensor *labels = test_tensor((int[]){2, 3, 0}, NULL);
    mtl_tensor *bs[2] = {scores, labels};
    CHECK_FAILS(gradcheck_build("type: 'SoftmaxWithLoss'", MTL_PHASE_TRAIN, bs, 2, &top, 1, &l, &err), &err,
                MTL_ERR_SHAPE, "6 labels (bottom 1, 2x3) for 4 predictions (bottom 0, 2x3x2, softmax axis 1)");
    mtl_tensor *other_batch = test_tensor((int[]){4, 0}, NULL);
    bs[1] = other_batch;
    CHECK_FAILS(gradcheck_build("type: 'SoftmaxWithLoss'", MTL_PHASE_TRAIN, bs, 2, &top, 1, &l, &err), &err,
                MTL_ERR_SHAPE, "same first dimension");
    mtl_tensor_free(other_batch);

    /* labels are checked at forward: out of [0, C), and not ignored */
    mtl_tensor *spatial = test_tensor((int[]){2, 1, 2, 0}, (float[]){0, 1, 2, -1});
    bs[1] = spatial;
    CHECK_OK(gradcheck_build("type: 'SoftmaxWithLoss'", MTL_PHASE_TRAIN, bs, 2, &top, 1, &l, &err), &err);
    if (l) {
        CHECK_FAILS(test_forward(l, &err), &err, MTL_ERR_ARGUMENT,
                    "label -1 of sample 1 (position 1) is not a class in [0, 3)");
        spatial->data[3] = 0;
        spatial->data[1] = 3;
        CHECK_FAILS(test_forward(l, &err), &err, MTL_ERR_ARGUMENT, "label 3 of sample 0 (position 1)");
        spatial->data[1] = 2.5f; /* truncated to 2, as Caffe's cast does */
        CHECK_OK(test_forward(l, &err), &err);
    }
    gradcheck_free_layer(l);
    mtl_tensor *flat_scores = test_tensor((int[]){2, 3, 0}, NULL);
    mtl_tensor *flat_labels = test_tensor((int[]){2, 0}, (float[]){1, 7});
    mtl_tensor *fb[2] = {flat_scores, flat_labels};
    CHECK_OK(gradcheck_build("type: 'SoftmaxWithLoss' loss_param { ignore_label: 255 }", MTL_PHASE_TRAIN, fb, 2, &top,
                             1, &l, &err),
             &err);
    if (l) {
        CHECK_FAILS(test_forward(l, &err), &err, MTL_ERR_ARGUMENT, "label 7 of sample 1 is not a class in [0, 3)");
        flat_labels->data[1] = 255;
        CHECK_OK(test_forward(l, &err), &err);
        flat_labels->data[1] = 1e20f;
        CHECK_FAILS(test_forward(l, &err), &err, MTL_ERR_ARGUMENT, "label 1e+20 of sample 1");
    }
    gradcheck_free_layer(l);
    CHECK_FAILS(gradcheck_build("type: 'SoftmaxWithLoss' loss_param { normalization: MEAN }", MTL_PHASE_TRAIN, fb, 2,
                                &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "FULL, VALID, BATCH_SIZE, NONE");
    CHECK_FAILS(gradcheck_build("type: 'SoftmaxWithLoss' loss_param { ignore_lable: 1 }", MTL_PHASE_TRAIN, fb, 2,
                                &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "ignore_label");
    mtl_tensor_free(flat_scores);
    mtl_tensor_free(flat_labels);
    mtl_tensor_free(spatial);
    mtl_tensor_free(scores);
    mtl_tensor_free(labels);
    mtl_tensor_free(top);
}

/* ---- SigmoidCrossEntropyLoss ---------------------------------------------------------------- */

/* Logits 2 x 2 [0, ln3 | -ln3, 2], targets [1, 0 | 0, missing]:
 *   x = 0,    t = 1: p = 1/2, loss ln 2
 *   x = ln3,  t = 0: p = 3/4, loss -ln(1/4) = ln 4
 *   x = -ln3, t = 0: p = 1/4, loss -ln(3/4) = ln 4/3
 * Sum ln(32/3) over 3 valid of 4 values, batch 2. Gradient p - t: [-1/2, 3/4, 1/4, 0]. */
static void test_sigmoid_ce(void)
{
    const double sum = log(32.0 / 3.0);
    mtl_tensor *bs[2] = {test_tensor((int[]){2, 2, 0}, (float[]){0, (float)LN3, (float)-LN3, 2}),
                         test_tensor((int[]){2, 2, 0}, (float[]){1, 0, 0, MTL_LABEL_MISSING})};
    CHECK_NEAR(loss_of("type: 'SigmoidCrossEntropyLoss'", bs, 2), sum / 2, 1e-6); /* BATCH_SIZE by default */
    CHECK_NEAR(loss_of("type: 'SigmoidCrossEntropyLoss' loss_param { normalization: VALID }", bs, 2), sum / 3, 1e-6);
    CHECK_NEAR(loss_of("type: 'SigmoidCrossEntropyLoss' loss_param { normalization: FULL }", bs, 2), sum / 4, 1e-6);
    CHECK_NEAR(loss_of("type: 'SigmoidCrossEntropyLoss' loss_param { normalization: BATCH_SIZE }", bs, 2), sum / 2,
               1e-6);
    CHECK_NEAR(loss_of("type: 'SigmoidCrossEntropyLoss' loss_param { normalization: NONE }", bs, 2), sum, 1e-6);
    CHECK_NEAR(loss_of("type: 'SigmoidCrossEntropyLoss' loss_param { normalize: true }", bs, 2), sum / 3, 1e-6);
    CHECK_NEAR(loss_of("type: 'SigmoidCrossEntropyLoss' loss_param { normalize: false }", bs, 2), sum / 2, 1e-6);
    /* ignore_label -1 in place of the marker gives the same; ignore_label 1 also drops the first value */
    bs[1]->data[3] = -1;
    CHECK_NEAR(loss_of("type: 'SigmoidCrossEntropyLoss' loss_param { ignore_label: -1 normalization: VALID }", bs, 2),
               sum / 3, 1e-6);
    bs[1]->data[3] = MTL_LABEL_MISSING;
    CHECK_NEAR(loss_of("type: 'SigmoidCrossEntropyLoss' loss_param { ignore_label: 1 normalization: VALID }", bs, 2),
               log(16.0 / 3.0) / 2, 1e-6);

    /* backward: (p - t) * weight / normalizer; weight 2 over BATCH_SIZE 2 */
    mtl_error err;
    mtl_layer *l = NULL;
    mtl_tensor *top = mtl_tensor_create("loss");
    CHECK_OK(gradcheck_build("type: 'SigmoidCrossEntropyLoss'", MTL_PHASE_TRAIN, bs, 2, &top, 1, &l, &err), &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        top->grad[0] = 2.0f;
        bs[1]->grad[1] = 5.0f;
        l->ops->backward(l);
        test_check_values("sigmoid ce grad", bs[0]->grad, (float[]){-0.5f, 0.75f, 0.25f, 0}, 4, 1e-6);
        CHECK_NEAR(bs[1]->grad[1], 0.0f, 0);
    }
    gradcheck_free_layer(l);

    /* large logits stay finite: x = 100, t = 0 and x = -100, t = 1 each cost 100 */
    mtl_tensor *big[2] = {test_tensor((int[]){2, 1, 0}, (float[]){100, -100}),
                          test_tensor((int[]){2, 1, 0}, (float[]){0, 1})};
    CHECK_NEAR(loss_of("type: 'SigmoidCrossEntropyLoss'", big, 2), 100.0, 1e-3);

    mtl_tensor *odd = test_tensor((int[]){2, 3, 0}, NULL);
    mtl_tensor *mismatch[2] = {bs[0], odd};
    CHECK_FAILS(gradcheck_build("type: 'SigmoidCrossEntropyLoss'", MTL_PHASE_TRAIN, mismatch, 2, &top, 1, &l, &err),
                &err, MTL_ERR_SHAPE, "must have the same count");
    mtl_tensor_free(odd);
    mtl_tensor_free(big[0]);
    mtl_tensor_free(big[1]);
    mtl_tensor_free(top);
    mtl_tensor_free(bs[0]);
    mtl_tensor_free(bs[1]);
}

/* ---- EuclideanLoss -------------------------------------------------------------------------- */

/* a = [1 2 | 3 4], b = [0 2 | 5 missing]: differences [1 0 | -2 0], sum of squares 5, over 2 N = 4:
 * 1.25. Gradients: a gets (a - b) / N = [0.5 0 -1 0], b the negative. */
static void test_euclidean(void)
{
    mtl_tensor *bs[2] = {test_tensor((int[]){2, 2, 0}, (float[]){1, 2, 3, 4}),
                         test_tensor((int[]){2, 2, 0}, (float[]){0, 2, 5, MTL_LABEL_MISSING})};
    CHECK_NEAR(loss_of("type: 'EuclideanLoss'", bs, 2), 1.25, 1e-6);
    mtl_error err;
    mtl_layer *l = NULL;
    mtl_tensor *top = mtl_tensor_create("loss");
    CHECK_OK(gradcheck_build("type: 'EuclideanLoss'", MTL_PHASE_TRAIN, bs, 2, &top, 1, &l, &err), &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        top->grad[0] = 1.0f;
        l->ops->backward(l);
        test_check_values("euclidean grad a", bs[0]->grad, (float[]){0.5f, 0, -1, 0}, 4, 1e-6);
        test_check_values("euclidean grad b", bs[1]->grad, (float[]){-0.5f, 0, 1, 0}, 4, 1e-6);
    }
    gradcheck_free_layer(l);
    mtl_tensor *odd = test_tensor((int[]){2, 3, 0}, NULL);
    mtl_tensor *mismatch[2] = {bs[0], odd};
    CHECK_FAILS(gradcheck_build("type: 'EuclideanLoss'", MTL_PHASE_TRAIN, mismatch, 2, &top, 1, &l, &err), &err,
                MTL_ERR_SHAPE, "same dimension");
    CHECK_FAILS(gradcheck_build("type: 'EuclideanLoss' loss_param { normalization: FULL }", MTL_PHASE_TRAIN, bs, 2,
                                &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "loss_param");
    mtl_tensor_free(odd);
    mtl_tensor_free(top);
    mtl_tensor_free(bs[0]);
    mtl_tensor_free(bs[1]);
}

/* ---- Accuracy ------------------------------------------------------------------------------- */

/* 4 samples x 4 classes:
 *   s0 [.1 .5 .3 .1] label 1: best                                   -> top-1 hit
 *   s1 [.4 .2 .4  0] label 2: ties class 0, and ties count against   -> top-1 miss, top-2 hit
 *   s2 [.1 .2 .3 .4] label 1: two classes above                      -> top-2 miss, top-3 hit
 *   s3 [.9  0  0  0] label 0                                         -> top-1 hit */
static const float acc_scores[16] = {.1f, .5f, .3f, .1f, .4f, .2f, .4f, 0, .1f, .2f, .3f, .4f, .9f, 0, 0, 0};

static void test_accuracy(void)
{
    mtl_error err;
    mtl_layer *l = NULL;
    mtl_tensor *bs[2] = {test_tensor((int[]){4, 4, 0}, acc_scores), test_tensor((int[]){4, 0}, (float[]){1, 2, 1, 0})};
    mtl_tensor *tops[2] = {mtl_tensor_create("acc"), mtl_tensor_create("per_class")};
    CHECK_NEAR(loss_of("type: 'Accuracy'", bs, 2), 0.5, 1e-7);
    CHECK_NEAR(loss_of("type: 'Accuracy' accuracy_param { top_k: 2 }", bs, 2), 0.75, 1e-7);
    CHECK_NEAR(loss_of("type: 'Accuracy' accuracy_param { top_k: 3 }", bs, 2), 1.0, 1e-7);
    CHECK_NEAR(loss_of("type: 'Accuracy' accuracy_param { ignore_label: 2 }", bs, 2), 2.0 / 3.0, 1e-7);
    bs[1]->data[3] = MTL_LABEL_MISSING;
    CHECK_NEAR(loss_of("type: 'Accuracy'", bs, 2), 1.0 / 3.0, 1e-7);
    bs[1]->data[3] = 0;

    /* per class, top-1: class 0 1/1, class 1 1/2, class 2 0/1, class 3 never seen: 0 */
    CHECK_OK(gradcheck_build("type: 'Accuracy'", MTL_PHASE_TEST, bs, 2, tops, 2, &l, &err), &err);
    if (l) {
        CHECK(l->ops->no_backward);
        CHECK_OK(test_forward(l, &err), &err);
        CHECK_NEAR(tops[0]->data[0], 0.5, 1e-7);
        CHECK(tops[1]->ndim == 1 && tops[1]->shape[0] == 4);
        test_check_values("per class top-1", tops[1]->data, (float[]){1, 0.5f, 0, 0}, 4, 1e-7);
    }
    gradcheck_free_layer(l);
    CHECK_OK(gradcheck_build("type: 'Accuracy' accuracy_param { top_k: 2 }", MTL_PHASE_TEST, bs, 2, tops, 2, &l, &err),
             &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        test_check_values("per class top-2", tops[1]->data, (float[]){1, 0.5f, 1, 0}, 4, 1e-7);
        bs[1]->data[1] = 4;
        CHECK_FAILS(test_forward(l, &err), &err, MTL_ERR_ARGUMENT, "label 4 of sample 1 is not a class in [0, 4)");
        bs[1]->data[1] = 2;
    }
    gradcheck_free_layer(l);

    /* over positions: scores 1 x 3 classes x 2 positions, c0 [1 0], c1 [0 0], c2 [0 1] */
    mtl_tensor *sp[2] = {test_tensor((int[]){1, 3, 2, 0}, (float[]){1, 0, 0, 0, 0, 1}),
                         test_tensor((int[]){1, 2, 0}, (float[]){0, 2})};
    CHECK_NEAR(loss_of("type: 'Accuracy'", sp, 2), 1.0, 1e-7);
    sp[1]->data[1] = 1; /* true class 1 scores 0 at position 1: c0 ties it, c2 beats it */
    CHECK_NEAR(loss_of("type: 'Accuracy'", sp, 2), 0.5, 1e-7);
    CHECK_NEAR(loss_of("type: 'Accuracy' accuracy_param { top_k: 2 }", sp, 2), 0.5, 1e-7);
    CHECK_NEAR(loss_of("type: 'Accuracy' accuracy_param { top_k: 3 }", sp, 2), 1.0, 1e-7);

    CHECK_FAILS(gradcheck_build("type: 'Accuracy' accuracy_param { top_k: 5 }", MTL_PHASE_TEST, bs, 2, tops, 1, &l,
                                &err),
                &err, MTL_ERR_CONFIG, "top_k 5 is more than the 4 classes");
    CHECK_FAILS(gradcheck_build("type: 'Accuracy' accuracy_param { top_k: 0 }", MTL_PHASE_TEST, bs, 2, tops, 1, &l,
                                &err),
                &err, MTL_ERR_CONFIG, "top_k");
    mtl_tensor *wrong = test_tensor((int[]){3, 0}, NULL);
    mtl_tensor *mismatch[2] = {bs[0], wrong};
    CHECK_FAILS(gradcheck_build("type: 'Accuracy'", MTL_PHASE_TEST, mismatch, 2, tops, 1, &l, &err), &err,
                MTL_ERR_SHAPE, "3 labels (bottom 1, 3) for 4 predictions");
    mtl_tensor_free(wrong);
    for (int i = 0; i < 2; i++) {
        mtl_tensor_free(bs[i]);
        mtl_tensor_free(tops[i]);
        mtl_tensor_free(sp[i]);
    }
}

int main(void)
{
    test_gradients();
    test_softmax();
    test_softmax_loss_values();
    test_softmax_loss_backward();
    test_softmax_loss_errors();
    test_sigmoid_ce();
    test_euclidean();
    test_accuracy();
    return check_finish();
}
