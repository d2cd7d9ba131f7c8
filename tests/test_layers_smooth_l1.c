/* SmoothL1Loss (Fast / Faster R-CNN box regression): hand-computed losses and gradients on both
 * sides of the knee for sigma 1 and 3, inside and outside weights, the loss weight, every
 * normalization with a missing (NaN) target, finite-difference gradients for predictions and
 * targets, and bad configurations and shapes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gradcheck.h"
#include "layers/labels.h"
#include "test_util.h"

/* Builds the layer, runs forward and checks the loss; with `grad` (the prediction gradient for
 * loss weight `weight`) also runs backward for predictions and targets and checks both (the
 * targets' is the negative). Returns the loss (NAN if the layer failed). */
static float run_case(const char *text, mtl_tensor **bottoms, int n_bottoms, double want_loss, float weight,
                      const float *grad)
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
        CHECK_MSG(fabs(v - want_loss) <= 1e-5 * fmax(1.0, fabs(want_loss)), "%s: loss %.7g, expected %.7g", text, v,
                  want_loss);
        if (grad) {
            int n = (int)bottoms[0]->count;
            for (int b = 0; b < n_bottoms; b++) {
                for (int64_t i = 0; i < bottoms[b]->count; i++)
                    bottoms[b]->grad[i] = 123.0f; /* backward must overwrite, not accumulate */
                l->propagate_down[b] = 1;
            }
            top->grad[0] = weight;
            l->ops->backward(l);
            float *neg = malloc((size_t)n * sizeof(float));
            for (int i = 0; i < n; i++)
                neg[i] = -grad[i];
            test_check_values("prediction gradient", bottoms[0]->grad, grad, n, 1e-6);
            test_check_values("target gradient", bottoms[1]->grad, neg, n, 1e-6);
            for (int b = 2; b < n_bottoms; b++) {
                float *zero = calloc((size_t)n, sizeof(float));
                test_check_values("weight gradient (constants: zeros)", bottoms[b]->grad, zero, n, 0);
                free(zero);
            }
            free(neg);
        }
    }
    gradcheck_free_layer(l);
    mtl_tensor_free(top);
    return v;
}

static void free_all(mtl_tensor **t, int n)
{
    for (int i = 0; i < n; i++)
        mtl_tensor_free(t[i]);
}

/* sigma 1 (knee at |d| = 1), N = 2:
 *   pred   [0.5 2  -3  0.2 | 1    0  0    0]
 *   target [0   0   0  0   | 1.5  0 -0.9  0]
 *   d      [0.5 2  -3  0.2 | -0.5 0  0.9  0]
 *   f      [.125 1.5 2.5 .02 | .125 0 .405 0]  (0.5 d^2 inside, |d| - 0.5 outside)
 * loss = 4.675 / 2 = 2.3375; d pred = f'(d) / N = [.25 .5 -.5 .1 | -.25 0 .45 0]. */
static void test_sigma1(void)
{
    mtl_tensor *bs[2] = {test_tensor((int[]){2, 4, 0}, (float[]){0.5f, 2, -3, 0.2f, 1, 0, 0, 0}),
                         test_tensor((int[]){2, 4, 0}, (float[]){0, 0, 0, 0, 1.5f, 0, -0.9f, 0})};
    run_case("type: 'SmoothL1Loss'", bs, 2, 2.3375, 1.0f,
             (float[]){0.25f, 0.5f, -0.5f, 0.1f, -0.25f, 0, 0.45f, 0});
    run_case("type: 'SmoothL1Loss' smooth_l1_loss_param { sigma: 1 }", bs, 2, 2.3375, 0.5f,
             (float[]){0.125f, 0.25f, -0.25f, 0.05f, -0.125f, 0, 0.225f, 0});
    free_all(bs, 2);
}

/* sigma 3 (knee at 1/9), N = 1, targets 0: d = [0.1 -0.05 0.5 -2]
 *   f = [4.5 * 0.01, 4.5 * 0.0025, 0.5 - 1/18, 2 - 1/18] = [.045 .01125 .4444444 1.9444444], sum 2.4451389
 *   f' = [9 * 0.1, 9 * -0.05, 1, -1] = [.9 -.45 1 -1]
 * The same values as a (1, 2, 2) blob: N is still the first axis. */
static void test_sigma3(void)
{
    mtl_tensor *bs[2] = {test_tensor((int[]){1, 4, 0}, (float[]){0.1f, -0.05f, 0.5f, -2}),
                         test_tensor((int[]){1, 4, 0}, (float[]){0, 0, 0, 0})};
    run_case("type: 'SmoothL1Loss' smooth_l1_loss_param { sigma: 3 }", bs, 2, 2.4451389, 1.0f,
             (float[]){0.9f, -0.45f, 1, -1});
    free_all(bs, 2);
    mtl_tensor *cs[2] = {test_tensor((int[]){1, 2, 2, 0}, (float[]){1.1f, 0.95f, 1.5f, -1}),
                         test_tensor((int[]){1, 2, 2, 0}, (float[]){1, 1, 1, 1})};
    run_case("type: 'SmoothL1Loss' smooth_l1_loss_param { sigma: 3 }", cs, 2, 2.4451389, 1.0f,
             (float[]){0.9f, -0.45f, 1, -1});
    free_all(cs, 2);
}

/* Inside and outside weights, sigma 1, N = 2:
 *   pred [1 -1 | 0.5 3], target [0.5 1 | 0 1], w_in [1 0.2 | 0.5 2], w_out [0.5 1 | 2 0.25]
 *   d = w_in (pred - target) = [0.5 -0.4 | 0.25 4]
 *   f = [.125 .08 | .03125 3.5]; w_out f = [.0625 .08 | .0625 .875], sum 1.08, loss 0.54
 *   d pred = w_out w_in f'(d) / N = [.5 .2 | 1 .5] .* [.5 -.4 | .25 1] / 2 = [.125 -.04 | .125 .25],
 *   times the loss weight 2: [.25 -.08 | .25 .5]. */
static void test_weights(void)
{
    mtl_tensor *bs[4] = {test_tensor((int[]){2, 2, 0}, (float[]){1, -1, 0.5f, 3}),
                         test_tensor((int[]){2, 2, 0}, (float[]){0.5f, 1, 0, 1}),
                         test_tensor((int[]){2, 2, 0}, (float[]){1, 0.2f, 0.5f, 2}),
                         test_tensor((int[]){2, 2, 0}, (float[]){0.5f, 1, 2, 0.25f})};
    run_case("type: 'SmoothL1Loss'", bs, 4, 0.54, 2.0f, (float[]){0.25f, -0.08f, 0.25f, 0.5f});
    /* the weights may have another shape with the same count (Caffe checks C, H, W; mtl counts) */
    mtl_tensor *flat_in = test_tensor((int[]){4, 0}, (float[]){1, 0.2f, 0.5f, 2});
    mtl_tensor *other[4] = {bs[0], bs[1], flat_in, bs[3]};
    run_case("type: 'SmoothL1Loss'", other, 4, 0.54, 1.0f, NULL);
    mtl_tensor_free(flat_in);
    free_all(bs, 4);
}

/* A missing target (NaN) adds nothing; the normalizations divide 6.5 differently:
 *   pred [1 2 | 3 4], target [0 NaN | 0 0], sigma 1: f = [0.5 - | 2.5 3.5], sum 6.5
 *   BATCH_SIZE (default) 6.5 / 2, VALID 6.5 / 3, FULL 6.5 / 4, NONE 6.5. */
static void test_normalization(void)
{
    mtl_tensor *bs[2] = {test_tensor((int[]){2, 2, 0}, (float[]){1, 2, 3, 4}),
                         test_tensor((int[]){2, 2, 0}, (float[]){0, MTL_LABEL_MISSING, 0, 0})};
    run_case("type: 'SmoothL1Loss'", bs, 2, 3.25, 1.0f, (float[]){0.5f, 0, 0.5f, 0.5f});
    run_case("type: 'SmoothL1Loss' loss_param { normalization: BATCH_SIZE }", bs, 2, 3.25, 1.0f, NULL);
    run_case("type: 'SmoothL1Loss' loss_param { normalization: VALID }", bs, 2, 6.5 / 3, 1.0f,
             (float[]){1.0f / 3, 0, 1.0f / 3, 1.0f / 3});
    run_case("type: 'SmoothL1Loss' loss_param { normalization: FULL }", bs, 2, 1.625, 1.0f, NULL);
    run_case("type: 'SmoothL1Loss' loss_param { normalization: NONE }", bs, 2, 6.5, 1.0f, (float[]){1, 0, 1, 1});
    run_case("type: 'SmoothL1Loss' loss_param { normalize: false }", bs, 2, 3.25, 1.0f, NULL);
    free_all(bs, 2);

    /* an empty batch (ProposalTarget may sample nothing) is a loss of 0, not NaN */
    mtl_tensor *empty[2] = {test_tensor_n(2, (int[]){0, 8}, NULL), test_tensor_n(2, (int[]){0, 8}, NULL)};
    run_case("type: 'SmoothL1Loss'", empty, 2, 0.0, 1.0f, (float[]){0});
    free_all(empty, 2);
}

static void test_gradients(void)
{
    static const gradcheck_case cases[] = {
        /* |d| < 0.4: all inside the knee */
        {.layer = "type: 'SmoothL1Loss'", .n_bottoms = 2, .shapes = {{3, 4}, {3, 4}}, .lo = -0.2f, .hi = 0.2f},
        /* knee at 1/9: nearly all outside; the few points near it are skipped as kinks */
        {.layer = "type: 'SmoothL1Loss' smooth_l1_loss_param { sigma: 3 }",
         .n_bottoms = 2,
         .shapes = {{2, 3, 2, 2}, {2, 3, 2, 2}},
         .seed = 3},
        {.layer = "type: 'SmoothL1Loss' smooth_l1_loss_param { sigma: 3 }",
         .n_bottoms = 4,
         .shapes = {{2, 5}, {2, 5}, {2, 5}, {2, 5}},
         .no_check = {0, 0, 1, 1},
         .lo = -1.5f,
         .hi = 1.5f,
         .seed = 11},
        {.layer = "type: 'SmoothL1Loss' smooth_l1_loss_param { sigma: 0.5 }",
         .n_bottoms = 4,
         .shapes = {{3, 4, 1, 1}, {3, 4, 1, 1}, {3, 4, 1, 1}, {3, 4, 1, 1}},
         .no_check = {0, 0, 1, 1},
         .lo = -2.0f,
         .hi = 2.0f,
         .seed = 5},
        {.layer = "type: 'SmoothL1Loss' smooth_l1_loss_param { sigma: 2 } loss_param { normalization: FULL }",
         .n_bottoms = 2,
         .shapes = {{2, 7}, {2, 7}},
         .seed = 9},
        {.layer = "type: 'SmoothL1Loss' loss_param { normalization: NONE }",
         .n_bottoms = 2,
         .shapes = {{1, 9}, {1, 9}},
         .lo = -0.4f,
         .hi = 0.4f},
        /* only the predictions asked for */
        {.layer = "type: 'SmoothL1Loss'", .n_bottoms = 2, .shapes = {{2, 3}, {2, 3}}, .no_check = {0, 1}, .seed = 4},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char label[160];
        snprintf(label, sizeof(label), "case %zu: %s", i, cases[i].layer);
        CHECK_MSG(gradcheck_run(label, &cases[i]) == 0, "gradcheck %s", label);
    }
}

static void test_errors(void)
{
    mtl_error err;
    mtl_layer *l = NULL;
    mtl_tensor *top = mtl_tensor_create("loss");
    mtl_tensor *a = test_tensor((int[]){2, 4, 0}, NULL), *b = test_tensor((int[]){2, 4, 0}, NULL);
    mtl_tensor *odd = test_tensor((int[]){2, 3, 0}, NULL), *other_batch = test_tensor((int[]){4, 2, 0}, NULL);

    mtl_tensor *count_mismatch[2] = {a, odd};
    CHECK_FAILS(gradcheck_build("type: 'SmoothL1Loss'", MTL_PHASE_TRAIN, count_mismatch, 2, &top, 1, &l, &err), &err,
                MTL_ERR_SHAPE, "the targets (bottom 1, 2x3) need one value per prediction (bottom 0, 2x4)");
    mtl_tensor *weight_mismatch[4] = {a, b, a, odd};
    CHECK_FAILS(gradcheck_build("type: 'SmoothL1Loss'", MTL_PHASE_TRAIN, weight_mismatch, 4, &top, 1, &l, &err), &err,
                MTL_ERR_SHAPE, "the outside weights (bottom 3");
    mtl_tensor *inside_mismatch[4] = {a, b, odd, b};
    CHECK_FAILS(gradcheck_build("type: 'SmoothL1Loss'", MTL_PHASE_TRAIN, inside_mismatch, 4, &top, 1, &l, &err), &err,
                MTL_ERR_SHAPE, "the inside weights (bottom 2");
    mtl_tensor *batch_mismatch[2] = {a, other_batch};
    CHECK_FAILS(gradcheck_build("type: 'SmoothL1Loss'", MTL_PHASE_TRAIN, batch_mismatch, 2, &top, 1, &l, &err), &err,
                MTL_ERR_SHAPE, "same first dimension");
    mtl_tensor *three[3] = {a, b, a};
    CHECK_FAILS(gradcheck_build("type: 'SmoothL1Loss'", MTL_PHASE_TRAIN, three, 3, &top, 1, &l, &err), &err,
                MTL_ERR_CONFIG, "both inside and outside weights");
    mtl_tensor *two[2] = {a, b};
    CHECK_FAILS(gradcheck_build("type: 'SmoothL1Loss' smooth_l1_loss_param { sigma: 0 }", MTL_PHASE_TRAIN, two, 2,
                                &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "sigma is 0");
    CHECK_FAILS(gradcheck_build("type: 'SmoothL1Loss' smooth_l1_loss_param { sigma: -1 }", MTL_PHASE_TRAIN, two, 2,
                                &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "must be positive");
    CHECK_FAILS(gradcheck_build("type: 'SmoothL1Loss' loss_param { ignore_label: -1 }", MTL_PHASE_TRAIN, two, 2, &top,
                                1, &l, &err),
                &err, MTL_ERR_CONFIG, "ignore_label does not apply");
    CHECK_FAILS(gradcheck_build("type: 'SmoothL1Loss' smooth_l1_loss_param { sgima: 3 }", MTL_PHASE_TRAIN, two, 2,
                                &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "sgima");

    mtl_tensor_free(top);
    mtl_tensor_free(a);
    mtl_tensor_free(b);
    mtl_tensor_free(odd);
    mtl_tensor_free(other_batch);
}

int main(void)
{
    test_sigma1();
    test_sigma3();
    test_weights();
    test_normalization();
    test_gradients();
    test_errors();
    return check_finish();
}
