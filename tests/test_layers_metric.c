/* Tests for the metric-learning layers (ContrastiveLoss, TripletLoss, PairLoss, L2Normalize):
 * finite-difference gradients for every form and mining mode, every loss against values worked
 * out by hand on tiny batches, missing labels and ignore_label, and bad configs and shapes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "test_util.h"
#include "gradcheck.h"
#include "layers/labels.h"

static void free_all(mtl_tensor **t, int n)
{
    for (int i = 0; i < n; i++)
        mtl_tensor_free(t[i]);
}

/* Builds the layer over bottoms with n_tops tops, runs forward and returns top 0's value (NAN on
 * failure); top 1's value goes to *second when asked for. */
static float loss2_of(const char *text, mtl_tensor **bottoms, int n_bottoms, int n_tops, float *second)
{
    mtl_error err;
    mtl_tensor *tops[2] = {mtl_tensor_create("loss"), mtl_tensor_create("aux")};
    mtl_layer *l = NULL;
    float v = NAN;
    CHECK_OK(gradcheck_build(text, MTL_PHASE_TRAIN, bottoms, n_bottoms, tops, n_tops, &l, &err), &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        CHECK_MSG(tops[0]->ndim == 0 && tops[0]->count == 1, "%s: loss top has %d axes", text, tops[0]->ndim);
        v = tops[0]->data[0];
        if (second)
            *second = n_tops > 1 ? tops[1]->data[0] : NAN;
    }
    gradcheck_free_layer(l);
    free_all(tops, 2);
    return v;
}

static float loss_of(const char *text, mtl_tensor **bottoms, int n_bottoms)
{
    return loss2_of(text, bottoms, n_bottoms, 1, NULL);
}

/* Runs forward and backward with loss weight w, all bottoms propagating; copies bottom b's gradient
 * into grad (count values). Returns the loss. */
static float loss_and_grad(const char *text, mtl_tensor **bottoms, int n_bottoms, float w, int b, float *grad)
{
    mtl_error err;
    mtl_tensor *top = mtl_tensor_create("loss");
    mtl_layer *l = NULL;
    float v = NAN;
    CHECK_OK(gradcheck_build(text, MTL_PHASE_TRAIN, bottoms, n_bottoms, &top, 1, &l, &err), &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        v = top->data[0];
        top->grad[0] = w;
        l->ops->backward(l);
        memcpy(grad, bottoms[b]->grad, (size_t)bottoms[b]->count * sizeof(float));
    }
    gradcheck_free_layer(l);
    mtl_tensor_free(top);
    return v;
}

/* Builds the layer and expects it to fail with `status` and a message containing `needle`. */
static void check_build_fails(const char *text, mtl_tensor **bottoms, int n_bottoms, int n_tops, mtl_status status,
                              const char *needle)
{
    mtl_error err = {0};
    mtl_tensor *tops[3] = {mtl_tensor_create("loss"), mtl_tensor_create("aux"), mtl_tensor_create("extra")};
    mtl_layer *l = NULL;
    CHECK_FAILS(gradcheck_build(text, MTL_PHASE_TRAIN, bottoms, n_bottoms, tops, n_tops, &l, &err), &err, status,
                needle);
    gradcheck_free_layer(l);
    free_all(tops, 3);
}

/* ---- gradient checks ------------------------------------------------------------------------ */

static void test_gradients(void)
{
    static const gradcheck_case cases[] = {
        /* ContrastiveLoss: values in [-1, 1) over 3 dims put pairs on both sides of margin 1 */
        {.layer = "type: 'ContrastiveLoss'",
         .n_bottoms = 3,
         .shapes = {{6, 3}, {6, 3}, {6}},
         .label_classes = {0, 0, 2}},
        {.layer = "type: 'ContrastiveLoss' contrastive_loss_param { margin: 2 }",
         .n_bottoms = 3,
         .shapes = {{5, 2, 1, 1}, {5, 2, 1, 1}, {5, 1, 1, 1}},
         .label_classes = {0, 0, 2}},
        {.layer = "type: 'ContrastiveLoss' contrastive_loss_param { legacy_version: true margin: 1.5 }",
         .n_bottoms = 3,
         .shapes = {{7, 3}, {7, 3}, {7}},
         .label_classes = {0, 0, 2}},
        {.layer = "type: 'ContrastiveLoss' contrastive_loss_param { form: LEGACY }",
         .n_bottoms = 3,
         .shapes = {{4, 2}, {4, 2}, {4}},
         .label_classes = {0, 0, 2},
         .seed = 3},
        {.layer = "type: 'ContrastiveLoss' contrastive_loss_param { form: DEEPID2 margin: 1.2 }",
         .n_bottoms = 3,
         .shapes = {{6, 4}, {6, 4}, {6}},
         .label_classes = {0, 0, 2}},
        {.layer = "type: 'ContrastiveLoss' loss_param { ignore_label: 1 normalization: BATCH_SIZE }",
         .n_bottoms = 3,
         .shapes = {{6, 3}, {6, 3}, {6}},
         .label_classes = {0, 0, 2}},
        {.layer = "type: 'ContrastiveLoss' loss_param { ignore_label: 0 }",
         .n_bottoms = 3,
         .shapes = {{5, 5}, {5, 5}, {5}},
         .label_classes = {0, 0, 2},
         .no_check = {0, 1}},
        /* TripletLoss with given triplets */
        {.layer = "type: 'TripletLoss'", .n_bottoms = 3, .shapes = {{5, 3}, {5, 3}, {5, 3}}},
        {.layer = "type: 'TripletLoss' triplet_loss_param { margin: 1 distance: EUCLIDEAN }",
         .n_bottoms = 3,
         .shapes = {{6, 2, 1, 2}, {6, 2, 1, 2}, {6, 2, 1, 2}},
         .n_tops = 2},
        {.layer = "type: 'TripletLoss' triplet_loss_param { margin: 0.5 mining: NONE }",
         .n_bottoms = 3,
         .shapes = {{7, 1}, {7, 1}, {7, 1}},
         .no_check = {0, 1, 0},
         .seed = 11},
        /* mined triplets: values spread over [-3, 3) keep the selections apart at the step size */
        {.layer = "type: 'TripletLoss' triplet_loss_param { mining: ALL }",
         .n_bottoms = 2,
         .shapes = {{8, 3}, {8}},
         .label_classes = {0, 3},
         .lo = -3,
         .hi = 3,
         .n_tops = 2},
        {.layer = "type: 'TripletLoss' triplet_loss_param { mining: ALL distance: EUCLIDEAN margin: 1 }",
         .n_bottoms = 2,
         .shapes = {{9, 2, 1, 1}, {9}},
         .label_classes = {0, 3},
         .lo = -3,
         .hi = 3},
        {.layer = "type: 'TripletLoss' triplet_loss_param { mining: BATCH_HARD margin: 1 }",
         .n_bottoms = 2,
         .shapes = {{8, 3}, {8}},
         .label_classes = {0, 3},
         .lo = -3,
         .hi = 3},
        {.layer = "type: 'TripletLoss' triplet_loss_param { mining: BATCH_HARD distance: EUCLIDEAN margin: 2 }",
         .n_bottoms = 2,
         .shapes = {{10, 4}, {10, 1}},
         .label_classes = {0, 4},
         .lo = -3,
         .hi = 3,
         .n_tops = 2},
        /* semi-hard selection jumps where a negative crosses d(a, p) or d(a, p) + margin (the loss is
         * discontinuous there, not just kinked): a smaller step crosses fewer of those edges */
        {.layer = "type: 'TripletLoss' triplet_loss_param { mining: SEMI_HARD margin: 2 }",
         .n_bottoms = 2,
         .shapes = {{8, 3}, {8}},
         .label_classes = {0, 2},
         .lo = -3,
         .hi = 3,
         .step = 2e-3f,
         .seed = 6},
        {.layer = "type: 'TripletLoss' triplet_loss_param { mining: SEMI_HARD distance: EUCLIDEAN margin: 1 }",
         .n_bottoms = 2,
         .shapes = {{9, 2}, {9}},
         .label_classes = {0, 3},
         .lo = -3,
         .hi = 3,
         .seed = 5},
        {.layer = "type: 'TripletLoss' triplet_loss_param { mining: BATCH_HARD } loss_param { ignore_label: 0 }",
         .n_bottoms = 2,
         .shapes = {{9, 3}, {9}},
         .label_classes = {0, 3},
         .lo = -3,
         .hi = 3, .seed = 6},
        /* PairLoss */
        {.layer = "type: 'PairLoss'", .n_bottoms = 2, .shapes = {{6, 3}, {6}}, .label_classes = {0, 3}},
        {.layer = "type: 'PairLoss' pair_loss_param { form: LEGACY margin: 2 }",
         .n_bottoms = 2,
         .shapes = {{7, 2, 1, 1}, {7}},
         .label_classes = {0, 2}},
        {.layer = "type: 'PairLoss' pair_loss_param { form: DEEPID2 margin: 1.5 }",
         .n_bottoms = 2,
         .shapes = {{5, 3}, {5}},
         .label_classes = {0, 2},
         .n_tops = 2},
        {.layer = "type: 'PairLoss' pair_loss_param { balance: true }",
         .n_bottoms = 2,
         .shapes = {{8, 2}, {8}},
         .label_classes = {0, 3}},
        {.layer = "type: 'PairLoss' pair_loss_param { max_pairs: 7 balance: true margin: 1.5 }",
         .n_bottoms = 2,
         .shapes = {{8, 3}, {8}},
         .label_classes = {0, 2}},
        {.layer = "type: 'PairLoss' pair_loss_param { max_pairs: 4 } loss_param { ignore_label: 2 }",
         .n_bottoms = 2,
         .shapes = {{6, 4}, {6}},
         .label_classes = {0, 3}},
        /* batches big enough for the threaded paths (N x N x D >= 32768) */
        {.layer = "type: 'TripletLoss' triplet_loss_param { mining: BATCH_HARD margin: 1 }",
         .n_bottoms = 2,
         .shapes = {{48, 16}, {48}},
         .label_classes = {0, 6},
         .lo = -3,
         .hi = 3},
        {.layer = "type: 'PairLoss' pair_loss_param { balance: true margin: 4 }",
         .n_bottoms = 2,
         .shapes = {{48, 16}, {48}},
         .label_classes = {0, 5}},
        /* L2Normalize */
        {.layer = "type: 'L2Normalize'", .n_bottoms = 1, .shapes = {{3, 4}}},
        {.layer = "type: 'L2Normalize'", .n_bottoms = 1, .shapes = {{2, 3, 2, 2}}},
        {.layer = "type: 'L2Normalize' l2_normalize_param { eps: 1 }", .n_bottoms = 1, .shapes = {{4, 1}}},
        {.layer = "type: 'L2Normalize'", .n_bottoms = 1, .shapes = {{3, 5}}, .in_place = 1},
        {.layer = "type: 'L2Normalize' l2_normalize_param { eps: 0.5 }",
         .n_bottoms = 1,
         .shapes = {{2, 2, 3}},
         .in_place = 1,
         .lo = -2,
         .hi = 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char label[256];
        snprintf(label, sizeof(label), "%s (case %zu)", cases[i].layer, i);
        CHECK_MSG(gradcheck_run(label, &cases[i]) == 0, "gradient check failed: %s", label);
    }
}

/* ---- ContrastiveLoss ------------------------------------------------------------------------ */

/* Three pairs with a = 0 and b at distance 0.5, 0.5 and 5 (b = (0.3, 0.4), (0.3, 0.4), (3, 4)):
 *   CAFFE, margin 1, labels (1, 0, 0): similar 1/2 0.5^2 = 0.125; dissimilar 1/2 (1 - 0.5)^2 =
 *     0.125; dissimilar beyond the margin 0: (0.125 + 0.125 + 0) / 3 = 0.0833333
 *   margin 2: 0.125 + 1/2 1.5^2 = 1.125, + 0: 1.25 / 3 = 0.4166667
 *   LEGACY: the dissimilar pair at d^2 = 0.25: 1/2 max(1 - 0.25, 0) = 0.375; (0.125 + 0.375) / 3
 *   DEEPID2: the sum 0.25 (no 1/N) */
static void test_contrastive(void)
{
    mtl_tensor *a = test_tensor((int[]){3, 2, 0}, (float[]){0, 0, 0, 0, 0, 0});
    mtl_tensor *b = test_tensor((int[]){3, 2, 0}, (float[]){0.3f, 0.4f, 0.3f, 0.4f, 3, 4});
    mtl_tensor *y = test_tensor((int[]){3, 0}, (float[]){1, 0, 0});
    mtl_tensor *bs[3] = {a, b, y};
    CHECK_NEAR(loss_of("type: 'ContrastiveLoss'", bs, 3), 0.25 / 3, 1e-6);
    CHECK_NEAR(loss_of("type: 'ContrastiveLoss' contrastive_loss_param { margin: 1 form: CAFFE }", bs, 3), 0.25 / 3,
               1e-6);
    CHECK_NEAR(loss_of("type: 'ContrastiveLoss' contrastive_loss_param { margin: 2 }", bs, 3), 1.25 / 3, 1e-6);
    CHECK_NEAR(loss_of("type: 'ContrastiveLoss' contrastive_loss_param { legacy_version: true }", bs, 3), 0.5 / 3,
               1e-6);
    CHECK_NEAR(loss_of("type: 'ContrastiveLoss' contrastive_loss_param { form: LEGACY legacy_version: true }", bs, 3),
               0.5 / 3, 1e-6);
    CHECK_NEAR(loss_of("type: 'ContrastiveLoss' contrastive_loss_param { form: DEEPID2 }", bs, 3), 0.25, 1e-6);
    /* DEEPID2 with a normalization asked for: the mean over the 3 valid pairs */
    CHECK_NEAR(loss_of("type: 'ContrastiveLoss' contrastive_loss_param { form: DEEPID2 } "
                       "loss_param { normalization: VALID }",
                       bs, 3),
               0.25 / 3, 1e-6);
    /* the paper's label -1 is dissimilar in form DEEPID2: the same pairs, the same sum */
    y->data[1] = -1;
    CHECK_NEAR(loss_of("type: 'ContrastiveLoss' contrastive_loss_param { form: DEEPID2 }", bs, 3), 0.25, 1e-6);

    /* gradients by hand, CAFFE, margin 1, weight 2: the similar pair: d/da = 2 (a - b) / 3 =
     * (-0.2, -0.2667); the dissimilar pair inside the margin: k = -(m - d) / d = -1, d/da =
     * 2 (-1) (a - b) / 3 = (0.2, 0.2667); the pair beyond the margin: 0. d/db is the negative. */
    y->data[1] = 0;
    float grad[6];
    loss_and_grad("type: 'ContrastiveLoss'", bs, 3, 2.0f, 0, grad);
    static const float want_a[6] = {-0.2f, -0.8f / 3, 0.2f, 0.8f / 3, 0, 0};
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(grad[i], want_a[i], 1e-6);
    loss_and_grad("type: 'ContrastiveLoss'", bs, 3, 2.0f, 1, grad);
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(grad[i], -want_a[i], 1e-6);
    /* LEGACY: the dissimilar pair's factor is -1 too (d^2 < m): the same gradients */
    loss_and_grad("type: 'ContrastiveLoss' contrastive_loss_param { form: LEGACY }", bs, 3, 2.0f, 0, grad);
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(grad[i], want_a[i], 1e-6);

    /* missing and ignored labels: pair 1 drops out; VALID divides by the 2 left: 0.125 / 2 */
    y->data[1] = MTL_LABEL_MISSING;
    CHECK_NEAR(loss_of("type: 'ContrastiveLoss'", bs, 3), 0.0625, 1e-6);
    loss_and_grad("type: 'ContrastiveLoss'", bs, 3, 1.0f, 0, grad);
    CHECK(grad[2] == 0.0f && grad[3] == 0.0f);
    CHECK_NEAR(loss_of("type: 'ContrastiveLoss' loss_param { normalization: BATCH_SIZE }", bs, 3), 0.125 / 3, 1e-6);
    y->data[1] = 7;
    CHECK_NEAR(loss_of("type: 'ContrastiveLoss' loss_param { ignore_label: 7 }", bs, 3), 0.0625, 1e-6);
    /* every label missing: loss 0, not NaN */
    for (int i = 0; i < 3; i++)
        y->data[i] = MTL_LABEL_MISSING;
    CHECK_NEAR(loss_of("type: 'ContrastiveLoss'", bs, 3), 0.0, 0);

    /* a label that is neither 0 nor 1 is an error, not Caffe's "nonzero is similar" */
    mtl_error err = {0};
    mtl_tensor *top = mtl_tensor_create("loss");
    mtl_layer *l = NULL;
    y->data[0] = 1;
    y->data[1] = 2;
    y->data[2] = 0;
    CHECK_OK(gradcheck_build("type: 'ContrastiveLoss'", MTL_PHASE_TRAIN, bs, 3, &top, 1, &l, &err), &err);
    if (l)
        CHECK_FAILS(test_forward(l, &err), &err, MTL_ERR_ARGUMENT, "pair 1 has label 2");
    gradcheck_free_layer(l);
    y->data[1] = -1;
    CHECK_OK(gradcheck_build("type: 'ContrastiveLoss'", MTL_PHASE_TRAIN, bs, 3, &top, 1, &l, &err), &err);
    if (l)
        CHECK_FAILS(test_forward(l, &err), &err, MTL_ERR_ARGUMENT, "pair 1 has label -1");
    gradcheck_free_layer(l);
    mtl_tensor_free(top);

    /* config and shape errors */
    y->data[1] = 0;
    check_build_fails("type: 'ContrastiveLoss' contrastive_loss_param { legacy_version: true form: DEEPID2 }", bs, 3,
                      1, MTL_ERR_CONFIG, "legacy_version: true asks for form LEGACY");
    check_build_fails("type: 'ContrastiveLoss' contrastive_loss_param { margin: -1 }", bs, 3, 1, MTL_ERR_CONFIG,
                      "margin must be a finite value >= 0");
    check_build_fails("type: 'ContrastiveLoss' contrastive_loss_param { form: HADSELL }", bs, 3, 1, MTL_ERR_CONFIG,
                      "CAFFE");
    check_build_fails("type: 'ContrastiveLoss' contrastive_loss_param { margn: 1 }", bs, 3, 1, MTL_ERR_CONFIG,
                      "margn");
    check_build_fails("type: 'ContrastiveLoss'", bs, 2, 1, MTL_ERR_CONFIG, "takes 3 bottom blob(s), 2 given");
    mtl_tensor *y2 = test_tensor((int[]){2, 0}, (float[]){1, 0});
    mtl_tensor *bad_labels[3] = {a, b, y2};
    check_build_fails("type: 'ContrastiveLoss'", bad_labels, 3, 1, MTL_ERR_SHAPE,
                      "must hold one value per sample: 3 expected, 2 given");
    mtl_tensor *b3 = test_tensor((int[]){3, 3, 0}, NULL);
    mtl_tensor *bad_b[3] = {a, b3, y};
    check_build_fails("type: 'ContrastiveLoss'", bad_b, 3, 1, MTL_ERR_SHAPE,
                      "the two features of a pair must have the same shape: bottom 0 is 3x2, bottom 1 is 3x3");
    mtl_tensor *b4 = test_tensor((int[]){4, 2, 0}, NULL);
    mtl_tensor *bad_n[3] = {a, b4, y};
    check_build_fails("type: 'ContrastiveLoss'", bad_n, 3, 1, MTL_ERR_SHAPE, "bottom 0 is 3x2, bottom 1 is 4x2");
    mtl_tensor *all[] = {a, b, y, y2, b3, b4};
    free_all(all, 6);
}

/* ---- TripletLoss, given triplets ------------------------------------------------------------- */

/* Three triplets (anchor, positive, negative), margin 0.2:
 *   t0: a (0, 0), p (1, 0), n (0, 1):     squared 1 - 1 + 0.2 = 0.2;      Euclidean 1 - 1 + 0.2 = 0.2
 *   t1: a (0, 0), p (0, 0.1), n (0, 3):   squared 0.01 - 9 + 0.2 < 0: 0;  Euclidean 0.1 - 3 + 0.2 < 0: 0
 *   t2: a (1, 1), p (1.5, 1), n (1.6, 1): squared 0.25 - 0.36 + 0.2 = 0.09; Euclidean 0.5 - 0.6 + 0.2 = 0.1
 * squared: 0.29 / 3, Euclidean 0.3 / 3; two of three active. Gradients by hand (squared, weight
 * 1, / 3): t0 d/da = 2 (n - p) / 3 = (-2/3, 2/3), d/dp = -2 (a - p) / 3 = (2/3, 0), d/dn =
 * 2 (a - n) / 3 = (0, -2/3); t1 inactive: 0. */
static void test_triplet_given(void)
{
    mtl_tensor *a = test_tensor((int[]){3, 2, 0}, (float[]){0, 0, 0, 0, 1, 1});
    mtl_tensor *p = test_tensor((int[]){3, 2, 0}, (float[]){1, 0, 0, 0.1f, 1.5f, 1});
    mtl_tensor *n = test_tensor((int[]){3, 2, 0}, (float[]){0, 1, 0, 3, 1.6f, 1});
    mtl_tensor *bs[3] = {a, p, n};
    float frac = NAN;
    CHECK_NEAR(loss2_of("type: 'TripletLoss'", bs, 3, 2, &frac), 0.29 / 3, 1e-6);
    CHECK_NEAR(frac, 2.0 / 3, 1e-6);
    CHECK_NEAR(loss2_of("type: 'TripletLoss' triplet_loss_param { distance: EUCLIDEAN }", bs, 3, 2, &frac), 0.1, 1e-6);
    CHECK_NEAR(frac, 2.0 / 3, 1e-6);
    /* margin 0: t0 sits on the hinge (0, inactive), t2 gives -0.1: nothing is active */
    CHECK_NEAR(loss2_of("type: 'TripletLoss' triplet_loss_param { margin: 0 }", bs, 3, 2, &frac), 0.0, 1e-7);
    CHECK_NEAR(frac, 0.0, 0);

    float grad[6];
    loss_and_grad("type: 'TripletLoss'", bs, 3, 1.0f, 0, grad);
    CHECK_NEAR(grad[0], -2.0 / 3, 1e-6);
    CHECK_NEAR(grad[1], 2.0 / 3, 1e-6);
    CHECK_NEAR(grad[2], 0, 0);
    CHECK_NEAR(grad[3], 0, 0);
    loss_and_grad("type: 'TripletLoss'", bs, 3, 1.0f, 1, grad);
    CHECK_NEAR(grad[0], 2.0 / 3, 1e-6);
    CHECK_NEAR(grad[1], 0, 1e-7);
    loss_and_grad("type: 'TripletLoss'", bs, 3, 1.0f, 2, grad);
    CHECK_NEAR(grad[0], 0, 1e-7);
    CHECK_NEAR(grad[1], -2.0 / 3, 1e-6);

    /* errors */
    mtl_tensor *n3 = test_tensor((int[]){3, 3, 0}, NULL);
    mtl_tensor *bad[3] = {a, p, n3};
    check_build_fails("type: 'TripletLoss'", bad, 3, 1, MTL_ERR_SHAPE,
                      "anchor (bottom 0, 3x2), positive (bottom 1, 3x2) and negative (bottom 2, 3x3) must have the "
                      "same shape");
    check_build_fails("type: 'TripletLoss' triplet_loss_param { mining: BATCH_HARD }", bs, 3, 1, MTL_ERR_CONFIG,
                      "three bottoms are given triplets");
    check_build_fails("type: 'TripletLoss' loss_param { ignore_label: 1 }", bs, 3, 1, MTL_ERR_CONFIG,
                      "ignore_label needs labels");
    check_build_fails("type: 'TripletLoss' triplet_loss_param { margin: -0.1 }", bs, 3, 1, MTL_ERR_CONFIG,
                      "margin must be a finite value >= 0");
    check_build_fails("type: 'TripletLoss' triplet_loss_param { distance: COSINE }", bs, 3, 1, MTL_ERR_CONFIG,
                      "SQUARED_EUCLIDEAN");
    check_build_fails("type: 'TripletLoss'", bs, 1, 1, MTL_ERR_CONFIG, "bottom blobs, 1 given");
    mtl_tensor *all[] = {a, p, n, n3};
    free_all(all, 4);
}

/* ---- TripletLoss, mined in a batch ----------------------------------------------------------- */

/* One-dimensional embeddings x = (0, 0.5, 0.6, 3, 0.05, 7), labels (0, 0, 1, 1, 1, 2), margin 0.5,
 * EUCLIDEAN distance |x_i - x_j|:
 *   d01 0.5  d02 0.6  d03 3    d04 0.05  d05 7
 *   d12 0.1  d13 2.5  d14 0.45 d15 6.5
 *   d23 2.4  d24 0.55 d25 6.4
 *   d34 2.95 d35 4
 *   d45 6.95
 * Sample 5 is alone in class 2: it is never an anchor (no positive), only a (far) negative.
 * ALL, loss d_ap - d_an + 0.5 for each (anchor, positive, negative), active when > 0:
 *   a0 p1: n2 0.4, n3 -, n4 0.95, n5 -               a1 p0: n2 0.9, n3 -, n4 0.55, n5 -
 *   a2 p3: n0 2.3, n1 2.8, n5 -;  p4: n0 0.45, n1 0.95, n5 -
 *   a3 p2: n0 -0.1 -, n1 0.4, n5 -;  p4: n0 0.45, n1 0.95, n5 -
 *   a4 p2: n0 1.0, n1 0.6, n5 -;  p3: n0 3.4, n1 3.0, n5 -
 *   26 valid triplets, 15 active summing to 19.1: loss 19.1 / 15 = 1.2733333, fraction 15/26.
 * BATCH_HARD (farthest positive, nearest negative): a0 p1 n4 0.95; a1 p0 n2 0.9; a2 p3 n1 2.8;
 *   a3 p4 n1 0.95; a4 p3 n0 3.4: 9.0 / 5 anchors = 1.8.
 * SEMI_HARD (nearest negative with d_ap < d_an < d_ap + 0.5, else the nearest negative):
 *   a0 p1 (0.5): n2 (0.6) semi-hard: 0.4      a1 p0 (0.5): none in (0.5, 1): nearest n2: 0.9
 *   a2 p3 (2.4): none in (2.4, 2.9): n1: 2.8   a2 p4 (0.55): n0 (0.6) semi-hard: 0.45
 *   a3 p2 (2.4): n1 (2.5) semi-hard: 0.4       a3 p4 (2.95): n0 (3) semi-hard: 0.45
 *   a4 p2 (0.55): none in (0.55, 1.05): n0 (0.05): 1.0   a4 p3 (2.95): none: n0: 3.4
 *   9.8 / 8 pairs = 1.225.
 * BATCH_HARD with SQUARED_EUCLIDEAN: a0 0.25 - 0.0025 + 0.5 = 0.7475; a1 0.25 - 0.01 + 0.5 = 0.74;
 *   a2 5.76 - 0.01 + 0.5 = 6.25; a3 8.7025 - 6.25 + 0.5 = 2.9525; a4 8.7025 - 0.0025 + 0.5 = 9.2:
 *   19.89 / 5 = 3.978. */
static void test_triplet_mined(void)
{
    /* a seventh sample at 0.52 whose label is missing: it would be the nearest of many, but takes no part */
    mtl_tensor *x = test_tensor((int[]){7, 1, 0}, (float[]){0, 0.5f, 0.6f, 3, 0.05f, 7, 0.52f});
    mtl_tensor *y = test_tensor((int[]){7, 0}, (float[]){0, 0, 1, 1, 1, 2, MTL_LABEL_MISSING});
    mtl_tensor *bs[2] = {x, y};
    float frac = NAN;
    CHECK_NEAR(loss2_of("type: 'TripletLoss' triplet_loss_param { mining: ALL distance: EUCLIDEAN margin: 0.5 }", bs,
                        2, 2, &frac),
               19.1 / 15, 1e-5);
    CHECK_NEAR(frac, 15.0 / 26, 1e-6);
    CHECK_NEAR(loss2_of("type: 'TripletLoss' triplet_loss_param { mining: BATCH_HARD distance: EUCLIDEAN margin: 0.5 }",
                        bs, 2, 2, &frac),
               1.8, 1e-5);
    CHECK_NEAR(frac, 1.0, 0);
    CHECK_NEAR(loss2_of("type: 'TripletLoss' triplet_loss_param { mining: SEMI_HARD distance: EUCLIDEAN margin: 0.5 }",
                        bs, 2, 2, &frac),
               1.225, 1e-5);
    CHECK_NEAR(frac, 1.0, 0);
    CHECK_NEAR(loss_of("type: 'TripletLoss' triplet_loss_param { mining: BATCH_HARD margin: 0.5 }", bs, 2), 3.978,
               1e-5);

    /* ignore_label works like the missing marker */
    y->data[6] = 9;
    CHECK_NEAR(loss_of("type: 'TripletLoss' triplet_loss_param { mining: BATCH_HARD distance: EUCLIDEAN margin: 0.5 } "
                       "loss_param { ignore_label: 9 }",
                       bs, 2),
               1.8, 1e-5);
    /* without it, label 9 is one more class: sample 6 (0.52) becomes everybody's nearest negative */
    CHECK(fabs(loss_of("type: 'TripletLoss' triplet_loss_param { mining: BATCH_HARD distance: EUCLIDEAN margin: 0.5 }",
                       bs, 2) -
               1.8) > 0.01);

    /* gradients by hand (BATCH_HARD, Euclidean, weight 1, / 5 anchors); a triplet (a, p, n) adds
     * sign(x_a - x_p) - sign(x_a - x_n) to dx_a, sign(x_p - x_a) to dx_p and sign(x_a - x_n) to dx_n:
     *   a0 (p1, n4): dx0 += -1 + 1 = 0, dx1 += 1, dx4 += -1
     *   a1 (p0, n2): dx1 += 1 + 1 = 2, dx0 += -1, dx2 += -1
     *   a2 (p3, n1): dx2 += -1 - 1 = -2, dx3 += 1, dx1 += 1
     *   a3 (p4, n1): dx3 += 1 - 1 = 0, dx4 += -1, dx1 += 1
     *   a4 (p3, n0): dx4 += -1 - 1 = -2, dx3 += 1, dx0 += 1
     * dx = (0, 5, -3, 2, -4, 0) / 5; the ignored sample 6 gets 0. */
    float grad[7];
    loss_and_grad("type: 'TripletLoss' triplet_loss_param { mining: BATCH_HARD distance: EUCLIDEAN margin: 0.5 } "
                  "loss_param { ignore_label: 9 }",
                  bs, 2, 1.0f, 0, grad);
    static const float want[7] = {0.0f, 1.0f, -0.6f, 0.4f, -0.8f, 0.0f, 0.0f};
    for (int i = 0; i < 7; i++)
        CHECK_MSG(fabsf(grad[i] - want[i]) < 1e-6f, "batch-hard grad[%d] = %g, expected %g", i, grad[i], want[i]);

    /* a batch without any positive pair: no triplet, loss 0 and fraction 0 */
    mtl_tensor *y_distinct = test_tensor((int[]){7, 0}, (float[]){0, 1, 2, 3, 4, 5, 6});
    mtl_tensor *bd[2] = {x, y_distinct};
    CHECK_NEAR(loss2_of("type: 'TripletLoss' triplet_loss_param { mining: ALL }", bd, 2, 2, &frac), 0.0, 0);
    CHECK_NEAR(frac, 0.0, 0);

    /* errors */
    check_build_fails("type: 'TripletLoss'", bs, 2, 1, MTL_ERR_CONFIG,
                      "two bottoms (embeddings, labels) need a mining");
    check_build_fails("type: 'TripletLoss' triplet_loss_param { mining: HARDEST }", bs, 2, 1, MTL_ERR_CONFIG,
                      "BATCH_HARD");
    check_build_fails("type: 'TripletLoss' triplet_loss_param { mining: ALL } loss_param { normalization: VALID }", bs,
                      2, 1, MTL_ERR_UNSUPPORTED, "loss_param normalization is not supported");
    check_build_fails("type: 'TripletLoss' triplet_loss_param { mining: ALL }", bs, 2, 3, MTL_ERR_CONFIG,
                      "produces 1 to 2 top blobs, 3 given");
    mtl_tensor *y_short = test_tensor((int[]){6, 0}, NULL);
    mtl_tensor *bad[2] = {x, y_short};
    check_build_fails("type: 'TripletLoss' triplet_loss_param { mining: ALL }", bad, 2, 1, MTL_ERR_SHAPE,
                      "labels (bottom 1, 6) must hold one value per sample: 7 expected, 6 given");
    mtl_tensor *all[] = {x, y, y_distinct, y_short};
    free_all(all, 4);
}

/* ---- PairLoss ------------------------------------------------------------------------------- */

/* x = (0, 0.5, 0.6, 3), labels (0, 0, 1, 1), margin 1; the six pairs:
 *   (0,1) similar d 0.5: 1/2 0.25 = 0.125       (2,3) similar d 2.4: 1/2 5.76 = 2.88
 *   (0,2) dissimilar d 0.6: 1/2 0.4^2 = 0.08     (1,2) dissimilar d 0.1: 1/2 0.9^2 = 0.405
 *   (0,3), (1,3) dissimilar beyond the margin: 0
 * CAFFE: 3.49 / 6 = 0.5816667; balanced: 1/2 (3.005 / 2) + 1/2 (0.485 / 4) = 0.811875;
 * DEEPID2: 3.49; LEGACY: dissimilar 1/2 max(1 - d^2, 0): (0,2) 0.32, (1,2) 0.495: 3.82 / 6. */
static void test_pair(void)
{
    mtl_tensor *x = test_tensor((int[]){5, 1, 0}, (float[]){0, 0.5f, 0.6f, 3, 0.55f});
    mtl_tensor *y = test_tensor((int[]){5, 0}, (float[]){0, 0, 1, 1, MTL_LABEL_MISSING});
    mtl_tensor *bs[2] = {x, y};
    float used = NAN;
    CHECK_NEAR(loss2_of("type: 'PairLoss'", bs, 2, 2, &used), 3.49 / 6, 1e-6);
    CHECK_NEAR(used, 6, 0);
    CHECK_NEAR(loss_of("type: 'PairLoss' pair_loss_param { balance: true }", bs, 2), 0.811875, 1e-6);
    CHECK_NEAR(loss_of("type: 'PairLoss' pair_loss_param { form: DEEPID2 }", bs, 2), 3.49, 1e-5);
    CHECK_NEAR(loss_of("type: 'PairLoss' pair_loss_param { form: LEGACY margin: 1 }", bs, 2), 3.82 / 6, 1e-6);
    /* max_pairs at or above the pair count uses them all */
    CHECK_NEAR(loss_of("type: 'PairLoss' pair_loss_param { max_pairs: 6 }", bs, 2), 3.49 / 6, 1e-6);
    y->data[4] = 3;
    CHECK_NEAR(loss_of("type: 'PairLoss' loss_param { ignore_label: 3 }", bs, 2), 3.49 / 6, 1e-6);

    /* one kind of pair only (all labels equal): balance takes that kind's mean,
     * 1/2 (0.25 + 0.36 + 9 + 0.01 + 6.25 + 5.76) / 6 = 1.8025 */
    for (int i = 0; i < 4; i++)
        y->data[i] = 5;
    CHECK_NEAR(loss_of("type: 'PairLoss' pair_loss_param { balance: true } loss_param { ignore_label: 3 }", bs, 2),
               1.8025, 1e-5);
    CHECK_NEAR(loss_of("type: 'PairLoss' loss_param { ignore_label: 3 }", bs, 2), 1.8025, 1e-5);

    /* a random subset of 3 of the 6 pairs: the mean of some 3 pair terms, the same for the same seed */
    static const float labels[5] = {0, 0, 1, 1, MTL_LABEL_MISSING};
    memcpy(y->data, labels, sizeof(labels));
    float first = loss2_of("type: 'PairLoss' pair_loss_param { max_pairs: 3 }", bs, 2, 2, &used);
    CHECK_NEAR(used, 3, 0);
    CHECK(first == loss_of("type: 'PairLoss' pair_loss_param { max_pairs: 3 }", bs, 2));
    static const double terms[6] = {0.125, 0.08, 0, 0.405, 0, 2.88};
    int matches = 0;
    for (int i = 0; i < 6; i++)
        for (int j = i + 1; j < 6; j++)
            for (int k = j + 1; k < 6; k++)
                matches += fabs(first - (terms[i] + terms[j] + terms[k]) / 3) < 1e-6;
    CHECK_MSG(matches > 0, "max_pairs 3 gave %g, not the mean of any 3 pair terms", first);

    /* gradients by hand, CAFFE, weight 1, / 6: x0: pair (0,1) similar (x0 - x1) = -0.5; pair (0,2)
     * dissimilar k = -(1 - 0.6) / 0.6, times (x0 - x2) = -0.6: +0.4; total (-0.5 + 0.4) / 6.
     * x3: pair (2,3) similar (x3 - x2) = 2.4: 2.4 / 6. The missing sample: 0. */
    float grad[5];
    loss_and_grad("type: 'PairLoss'", bs, 2, 1.0f, 0, grad);
    CHECK_NEAR(grad[0], -0.1 / 6, 1e-6);
    CHECK_NEAR(grad[3], 2.4 / 6, 1e-6);
    CHECK_NEAR(grad[4], 0, 0);

    /* errors */
    check_build_fails("type: 'PairLoss' pair_loss_param { form: DEEPID2 balance: true }", bs, 2, 1, MTL_ERR_CONFIG,
                      "balance averages");
    check_build_fails("type: 'PairLoss' pair_loss_param { max_pairs: -1 }", bs, 2, 1, MTL_ERR_CONFIG, "max_pairs");
    check_build_fails("type: 'PairLoss' pair_loss_param { legacy_version: true }", bs, 2, 1, MTL_ERR_CONFIG,
                      "legacy_version");
    check_build_fails("type: 'PairLoss' loss_param { normalize: true }", bs, 2, 1, MTL_ERR_UNSUPPORTED,
                      "PairLoss averages over the pairs it uses");
    mtl_tensor *y2 = test_tensor((int[]){5, 2, 0}, NULL);
    mtl_tensor *bad[2] = {x, y2};
    check_build_fails("type: 'PairLoss'", bad, 2, 1, MTL_ERR_SHAPE, "5 expected, 10 given");
    mtl_tensor *all[] = {x, y, y2};
    free_all(all, 3);
}

/* ---- L2Normalize ---------------------------------------------------------------------------- */

static void test_l2_normalize(void)
{
    mtl_error err;
    mtl_layer *l = NULL;
    /* (3, 4) / 5; a zero sample stays zero (eps keeps it finite); (1, 2, 2) over 3 axes / 3 */
    mtl_tensor *x = test_tensor((int[]){3, 1, 3, 0}, (float[]){3, 4, 0, 0, 0, 0, 1, 2, 2});
    mtl_tensor *y = mtl_tensor_create("y");
    static const float want[9] = {0.6f, 0.8f, 0, 0, 0, 0, 1.0f / 3, 2.0f / 3, 2.0f / 3};
    CHECK_OK(gradcheck_build("type: 'L2Normalize'", MTL_PHASE_TRAIN, &x, 1, &y, 1, &l, &err), &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        for (int i = 0; i < 9; i++)
            CHECK_NEAR(y->data[i], want[i], 1e-6);
        /* backward by hand for (3, 4) -> (0.6, 0.8) with dy = (1, 0): dx = (dy - y (y . dy)) / 5 =
         * ((1 - 0.36), -0.48) / 5 = (0.128, -0.096) */
        memset(y->grad, 0, 9 * sizeof(float));
        y->grad[0] = 1;
        l->ops->backward(l);
        CHECK_NEAR(x->grad[0], 0.128, 1e-6);
        CHECK_NEAR(x->grad[1], -0.096, 1e-6);
    }
    gradcheck_free_layer(l);
    /* eps 11: (3, 4) / sqrt(25 + 11) = (0.5, 0.6667) */
    CHECK_OK(gradcheck_build("type: 'L2Normalize' l2_normalize_param { eps: 11 }", MTL_PHASE_TRAIN, &x, 1, &y, 1, &l,
                             &err),
             &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        CHECK_NEAR(y->data[0], 0.5, 1e-6);
        CHECK_NEAR(y->data[1], 4.0 / 6, 1e-6);
    }
    gradcheck_free_layer(l);
    /* in place */
    CHECK_OK(gradcheck_build("type: 'L2Normalize'", MTL_PHASE_TRAIN, &x, 1, &x, 1, &l, &err), &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        for (int i = 0; i < 9; i++)
            CHECK_NEAR(x->data[i], want[i], 1e-6);
    }
    gradcheck_free_layer(l);
    /* a blob big enough for threads: each row matches the plain formulas forward and backward */
    mtl_tensor *big = test_tensor((int[]){64, 600, 0}, NULL), *big_y = mtl_tensor_create("y");
    gradcheck_fill(big, -2, 2, 17);
    CHECK_OK(gradcheck_build("type: 'L2Normalize'", MTL_PHASE_TRAIN, &big, 1, &big_y, 1, &l, &err), &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        gradcheck_fill(big_y, -1, 1, 18);
        memcpy(big_y->grad, big_y->data, 64 * 600 * sizeof(float));
        CHECK_OK(test_forward(l, &err), &err);
        l->ops->backward(l);
        int bad = 0;
        for (int n = 0; n < 64; n++) {
            const float *xr = big->data + n * 600, *yr = big_y->data + n * 600, *dy = big_y->grad + n * 600;
            double ss = 1e-10, dot = 0;
            for (int c = 0; c < 600; c++)
                ss += (double)xr[c] * xr[c];
            double norm = sqrt(ss);
            for (int c = 0; c < 600; c++)
                dot += xr[c] / norm * dy[c];
            for (int c = 0; c < 600; c++) {
                bad += fabs(yr[c] - xr[c] / norm) > 1e-6;
                bad += fabs(big->grad[n * 600 + c] - (dy[c] - xr[c] / norm * dot) / norm) > 1e-6;
            }
        }
        CHECK_INT(bad, 0);
    }
    gradcheck_free_layer(l);
    mtl_tensor_free(big);
    mtl_tensor_free(big_y);

    check_build_fails("type: 'L2Normalize' l2_normalize_param { eps: 0 }", &x, 1, 1, MTL_ERR_CONFIG,
                      "eps must be a finite value > 0");
    check_build_fails("type: 'L2Normalize' l2_normalize_param { across_spatial: false }", &x, 1, 1, MTL_ERR_CONFIG,
                      "across_spatial");
    mtl_tensor_free(x);
    mtl_tensor_free(y);
}

int main(void)
{
    test_gradients();
    test_contrastive();
    test_triplet_given();
    test_triplet_mined();
    test_pair();
    test_l2_normalize();
    return check_finish();
}
