/* Update rules, learning-rate policies, warmup, clipping and regularization against values worked
 * out by hand (two steps of every rule on three weights; the arithmetic is in the comments). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/update.h"

/* Every rule starts from w = [1, -2, 0.5], takes gradient g1 = [0.5, 1, -2], then g2 = [0.1, -0.2, 0.3]. */
static const float w0[3] = {1.0f, -2.0f, 0.5f};
static const float g1[3] = {0.5f, 1.0f, -2.0f};
static const float g2[3] = {0.1f, -0.2f, 0.3f};

/* Runs two steps of cfg and checks the weights after each. */
static void two_steps(const char *label, const mtl_update_config *cfg, float local_rate, float local_decay,
                      const double after1[3], const double after2[3], double tol)
{
    float w[3], g[3], hist[6] = {0};
    memcpy(w, w0, sizeof(w));
    memcpy(g, g1, sizeof(g));
    mtl_update_step(cfg, 0, local_rate, local_decay, w, g, hist, 3);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(fabs(w[i] - after1[i]) <= tol, "%s step 1 w[%d] = %.9g, expected %.9g", label, i, w[i], after1[i]);
    memcpy(g, g2, sizeof(g));
    mtl_update_step(cfg, 1, local_rate, local_decay, w, g, hist, 3);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(fabs(w[i] - after2[i]) <= tol, "%s step 2 w[%d] = %.9g, expected %.9g", label, i, w[i], after2[i]);
}

static void test_sgd(void)
{
    /* lr 0.1, momentum 0.9.
     * step 1: h = 0.1 g1 = [0.05, 0.1, -0.2]; w = [0.95, -2.1, 0.7]
     * step 2: h = 0.1 g2 + 0.9 h = [0.055, 0.07, -0.15]; w = [0.895, -2.17, 0.85] */
    mtl_update_config cfg = {.type = MTL_UPDATE_SGD, .momentum = 0.9f};
    two_steps("SGD", &cfg, 0.1f, 0.0f, (const double[]){0.95, -2.1, 0.7}, (const double[]){0.895, -2.17, 0.85},
              1e-6);

    /* without momentum the history is just the last step: the update value is lr * g */
    float w[2] = {1.0f, 2.0f}, g[2] = {0.5f, -1.0f}, h[2] = {0};
    mtl_update_config plain = {.type = MTL_UPDATE_SGD};
    mtl_update_step(&plain, 0, 0.5f, 0.0f, w, g, h, 2);
    CHECK_NEAR(w[0], 0.75, 1e-7);
    CHECK_NEAR(w[1], 2.5, 1e-7);
    CHECK_NEAR(g[0], 0.25, 1e-7); /* grad holds the value subtracted, like Caffe's diff */
}

static void test_nesterov(void)
{
    /* lr 0.1, momentum 0.9; update = 1.9 h_new - 0.9 h_old.
     * step 1: h = [0.05, 0.1, -0.2]; update = [0.095, 0.19, -0.38]; w = [0.905, -2.19, 0.88]
     * step 2: h = [0.055, 0.07, -0.15]; update = 1.9 h - 0.9 [0.05, 0.1, -0.2] = [0.0595, 0.043, -0.105];
     *         w = [0.8455, -2.233, 0.985] */
    mtl_update_config cfg = {.type = MTL_UPDATE_NESTEROV, .momentum = 0.9f};
    two_steps("Nesterov", &cfg, 0.1f, 0.0f, (const double[]){0.905, -2.19, 0.88},
              (const double[]){0.8455, -2.233, 0.985}, 1e-6);
}

static void test_adam(void)
{
    /* lr 0.01, beta1 0.9, beta2 0.999, eps 1e-8; Caffe's step: lr * sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps).
     * step 1 (t=1): m = 0.1 g1, v = 0.001 g1^2, correction = sqrt(0.001)/0.1 = 0.316228, so the step is
     *   0.01 * sign(g1) (less a hair for eps): w = [0.99, -2.01, 0.51]
     * step 2 (t=2): m = [0.055, 0.07, -0.15], v = [2.5975e-4, 1.039e-3, 4.086e-3],
     *   correction = sqrt(0.001999)/0.19 = 0.235316: w = [0.9819696, -2.0151103, 0.5155220] */
    mtl_update_config cfg = {.type = MTL_UPDATE_ADAM, .momentum = 0.9f, .momentum2 = 0.999f, .delta = 1e-8f};
    two_steps("Adam", &cfg, 0.01f, 0.0f, (const double[]){0.99, -2.01, 0.51},
              (const double[]){0.9819696015, -2.0151102560, 0.5155219781}, 2e-6);

    /* AdamW, decay 0.1: each step first shrinks w by lr * decay = 0.001 of itself.
     * step 1: w = 0.999 w0 - 0.01 sign(g1) = [0.989, -2.008, 0.5095]
     * step 2: w = 0.999 w - Adam step 2 = [0.9799806, -2.0111023, 0.5145125] */
    cfg.type = MTL_UPDATE_ADAMW;
    two_steps("AdamW", &cfg, 0.01f, 0.1f, (const double[]){0.989, -2.008, 0.5095},
              (const double[]){0.9799806015, -2.0111022560, 0.5145124781}, 2e-6);

    /* AdamW's decay leaves the gradient (and so the moments) alone: same step as Adam plus shrink */
    float w[1] = {2.0f}, g[1] = {0.0f}, h[2] = {0};
    mtl_update_step(&cfg, 0, 0.5f, 0.1f, w, g, h, 1);
    CHECK_NEAR(w[0], 2.0 - 0.5 * 0.1 * 2.0, 1e-6);
    CHECK_NEAR(h[0], 0.0, 0);
    CHECK_NEAR(h[1], 0.0, 0);
}

static void test_rmsprop(void)
{
    /* lr 0.01, rms_decay 0.9, delta 1e-8.
     * step 1: v = 0.1 g1^2 = [0.025, 0.1, 0.4]; step = 0.01 g/sqrt(v) = 0.01 * 3.1622777 sign(g1):
     *   w = [0.9683772, -2.0316228, 0.5316228]
     * step 2: v = 0.9 v + 0.1 g2^2 = [0.0235, 0.094, 0.369]; step = 0.01 * [0.652328, -0.652328, 0.493865]:
     *   w = [0.9618539, -2.0250995, 0.5266841] */
    mtl_update_config cfg = {.type = MTL_UPDATE_RMSPROP, .rms_decay = 0.9f, .delta = 1e-8f};
    two_steps("RMSProp", &cfg, 0.01f, 0.0f, (const double[]){0.9683772254, -2.0316227756, 0.5316227761},
              (const double[]){0.9618539451, -2.0250994951, 0.5266841282}, 2e-6);
}

static void test_adagrad(void)
{
    /* lr 0.1, delta 1e-8.
     * step 1: h = g1^2 = [0.25, 1, 4]; step = 0.1 g/sqrt(h) = 0.1 sign(g1): w = [0.9, -2.1, 0.6]
     * step 2: h = [0.26, 1.04, 4.09]; step = 0.1 * [0.1/0.509902, -0.2/1.019804, 0.3/2.022375]
     *   = [0.0196116, -0.0196116, 0.0148340]: w = [0.8803884, -2.0803884, 0.5851660] */
    mtl_update_config cfg = {.type = MTL_UPDATE_ADAGRAD, .delta = 1e-8f};
    two_steps("AdaGrad", &cfg, 0.1f, 0.0f, (const double[]){0.9, -2.1, 0.6},
              (const double[]){0.8803883889, -2.0803883857, 0.5851659543}, 2e-6);
}

static void test_regularization(void)
{
    /* weight_decay 0.01 times decay_mult 2 = 0.02; lr 0.5 times lr_mult 2 = 1; plain SGD.
     * L2: g = [0.5, 1, -2] + 0.02 [1, -2, 0] = [0.52, 0.96, -2]; w = [0.48, -2.96, 2]
     * L1: g = [0.5, 1, -2] + 0.02 sign([1, -2, 0]) = [0.52, 0.98, -2]; w = [0.48, -2.98, 2] */
    const float weight_decay = 0.01f, decay_mult = 2.0f, base_lr = 0.5f, lr_mult = 2.0f;
    mtl_update_config cfg = {.type = MTL_UPDATE_SGD, .weight_decay = weight_decay};
    float w[3] = {1.0f, -2.0f, 0.0f}, g[3] = {0.5f, 1.0f, -2.0f}, h[3] = {0};
    mtl_update_step(&cfg, 0, base_lr * lr_mult, weight_decay * decay_mult, w, g, h, 3);
    CHECK_NEAR(w[0], 0.48, 1e-6);
    CHECK_NEAR(w[1], -2.96, 1e-6);
    CHECK_NEAR(w[2], 2.0, 1e-6);

    cfg.regularization = MTL_REGULARIZATION_L1;
    float w1[3] = {1.0f, -2.0f, 0.0f}, gl[3] = {0.5f, 1.0f, -2.0f}, h1[3] = {0};
    mtl_update_step(&cfg, 0, base_lr * lr_mult, weight_decay * decay_mult, w1, gl, h1, 3);
    CHECK_NEAR(w1[0], 0.48, 1e-6);
    CHECK_NEAR(w1[1], -2.98, 1e-6);
    CHECK_NEAR(w1[2], 2.0, 1e-6);

    /* decay_mult 0: no decay at all; regularize alone adds to the gradient */
    float g3[2] = {1.0f, 1.0f};
    const float d3[2] = {3.0f, -3.0f};
    mtl_update_regularize(MTL_REGULARIZATION_L2, 0.0f, d3, g3, 2);
    CHECK_NEAR(g3[0], 1.0, 0);
    mtl_update_regularize(MTL_REGULARIZATION_L2, 0.1f, d3, g3, 2);
    CHECK_NEAR(g3[0], 1.3, 1e-6);
    CHECK_NEAR(g3[1], 0.7, 1e-6);

    /* lr_mult 0 freezes a parameter even with momentum history and weight decay */
    mtl_update_config mom = {.type = MTL_UPDATE_SGD, .momentum = 0.9f};
    float wf[1] = {1.0f}, gf[1] = {0.3f}, hf[1] = {0};
    mtl_update_step(&mom, 0, base_lr * 0.0f, 0.02f, wf, gf, hf, 1);
    CHECK_NEAR(wf[0], 1.0, 0);
}

static void test_clipping(void)
{
    /* [3, 4] has norm 5: threshold 1 scales by 0.2 */
    float x[2] = {3.0f, 4.0f};
    double norm = 0;
    float f = mtl_update_clip(x, 2, 1.0f, &norm);
    CHECK_NEAR(norm, 5.0, 1e-12);
    CHECK_NEAR(f, 0.2, 1e-7);
    CHECK_NEAR(x[0], 0.6, 1e-6);
    CHECK_NEAR(x[1], 0.8, 1e-6);
    /* under the threshold, or with clipping off (< 0): untouched */
    float y[2] = {3.0f, 4.0f};
    CHECK_NEAR(mtl_update_clip(y, 2, 10.0f, NULL), 1.0, 0);
    CHECK_NEAR(mtl_update_clip(y, 2, -1.0f, NULL), 1.0, 0);
    CHECK_NEAR(mtl_update_clip(y, 2, 5.0f, NULL), 1.0, 0); /* equal is not above */
    CHECK_NEAR(y[0], 3.0, 0);
    /* global norm over several vectors: [3] and [4] together are norm 5 */
    float a[1] = {3.0f}, b[1] = {4.0f};
    double sumsq = mtl_update_sumsq(a, 1) + mtl_update_sumsq(b, 1);
    CHECK_NEAR(mtl_update_clip_factor(sumsq, 2.5f), 0.5, 1e-7);
    /* the blocked sum is exact for large vectors and the same every time */
    int64_t n = 100003;
    float *ones = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        ones[i] = 1.0f;
    CHECK_NEAR(mtl_update_sumsq(ones, n), (double)n, 0);
    for (int64_t i = 0; i < n; i++)
        ones[i] = (float)((i * 7919) % 1000) / 1000.0f;
    double s1 = mtl_update_sumsq(ones, n), s2 = mtl_update_sumsq(ones, n);
    CHECK(s1 == s2);
    free(ones);
}

static void check_lr(const mtl_lr_policy *p, int64_t iter, double expected, int line)
{
    double got = mtl_lr_at(p, iter);
    check_report(fabs(got - expected) <= 1e-9 * fmax(1.0, fabs(expected)), __FILE__, line,
                 "lr_policy %s at iter %lld = %.12g, expected %.12g", mtl_lr_policy_name(p->kind), (long long)iter,
                 got, expected);
}
#define CHECK_LR(p, iter, expected) check_lr(p, iter, expected, __LINE__)

static void test_lr_policies(void)
{
    mtl_lr_policy p = {.kind = MTL_LR_FIXED, .base_lr = 0.1};
    CHECK_LR(&p, 0, 0.1);
    CHECK_LR(&p, 123456, 0.1);

    /* step: 0.1 * 0.5^floor(iter/10) */
    p = (mtl_lr_policy){.kind = MTL_LR_STEP, .base_lr = 0.1, .gamma = 0.5, .stepsize = 10};
    CHECK_LR(&p, 0, 0.1);
    CHECK_LR(&p, 9, 0.1);
    CHECK_LR(&p, 10, 0.05);
    CHECK_LR(&p, 25, 0.025);

    /* multistep at 5 and 20 */
    static const int64_t steps[] = {5, 20};
    p = (mtl_lr_policy){.kind = MTL_LR_MULTISTEP, .base_lr = 0.1, .gamma = 0.5, .stepvalues = steps, .n_stepvalues = 2};
    CHECK_LR(&p, 4, 0.1);
    CHECK_LR(&p, 5, 0.05);
    CHECK_LR(&p, 19, 0.05);
    CHECK_LR(&p, 20, 0.025);
    CHECK_LR(&p, 1000, 0.025);

    /* exp: 0.1 * 0.99^10 = 0.0904382075 */
    p = (mtl_lr_policy){.kind = MTL_LR_EXP, .base_lr = 0.1, .gamma = 0.99};
    CHECK_LR(&p, 0, 0.1);
    CHECK_LR(&p, 10, 0.0904382075008804);

    /* inv: 0.1 * (1 + 0.0001 * 100)^-0.75 = 0.1 * 1.01^-0.75 = 0.0992565029 */
    p = (mtl_lr_policy){.kind = MTL_LR_INV, .base_lr = 0.1, .gamma = 0.0001, .power = 0.75};
    CHECK_LR(&p, 0, 0.1);
    CHECK_LR(&p, 100, 0.0992565029024080);

    /* poly: 0.1 * (1 - iter/100)^2; held at 0 past max_iter */
    p = (mtl_lr_policy){.kind = MTL_LR_POLY, .base_lr = 0.1, .power = 2, .max_iter = 100};
    CHECK_LR(&p, 0, 0.1);
    CHECK_LR(&p, 50, 0.025);
    CHECK_LR(&p, 90, 0.001);
    CHECK_LR(&p, 100, 0.0);
    CHECK_LR(&p, 150, 0.0);

    /* sigmoid: 0.1 / (1 + exp(-0.1 (iter - 50))) */
    p = (mtl_lr_policy){.kind = MTL_LR_SIGMOID, .base_lr = 0.1, .gamma = 0.1, .stepsize = 50};
    CHECK_LR(&p, 50, 0.05);
    CHECK_LR(&p, 60, 0.0731058578630005);
    CHECK_LR(&p, 40, 0.0268941421369995);

    /* cosine from 0.1 to 0.001 over 100: at 25, 0.001 + 0.0495 (1 + cos(pi/4)) = 0.0855017857 */
    p = (mtl_lr_policy){.kind = MTL_LR_COSINE, .base_lr = 0.1, .min_lr = 0.001, .max_iter = 100};
    CHECK_LR(&p, 0, 0.1);
    CHECK_LR(&p, 25, 0.0855017856687341);
    CHECK_LR(&p, 50, 0.0505);
    CHECK_LR(&p, 100, 0.001);
    CHECK_LR(&p, 200, 0.001);
}

static void test_warmup(void)
{
    /* fixed 0.1 with 10 warmup iterations from 0.01: linear 0.01 -> 0.1 */
    mtl_lr_policy p = {.kind = MTL_LR_FIXED, .base_lr = 0.1, .warmup_iter = 10, .warmup_start_lr = 0.01};
    CHECK_LR(&p, 0, 0.01);
    CHECK_LR(&p, 5, 0.055);
    CHECK_LR(&p, 9, 0.091);
    CHECK_LR(&p, 10, 0.1);
    /* from 0 (the default start) */
    p.warmup_start_lr = 0;
    CHECK_LR(&p, 0, 0.0);
    CHECK_LR(&p, 2, 0.02);
    /* warmup ramps towards the policy's own value: step halves at 4, inside the warmup
     * iter 6: target 0.05, 6/10 of the way from 0 */
    p = (mtl_lr_policy){.kind = MTL_LR_STEP, .base_lr = 0.1, .gamma = 0.5, .stepsize = 4, .warmup_iter = 10};
    CHECK_LR(&p, 2, 0.02);
    CHECK_LR(&p, 6, 0.03);
    CHECK_LR(&p, 10, 0.1 * 0.25);
}

static void test_names(void)
{
    CHECK(strcmp(mtl_update_type_name(MTL_UPDATE_ADAMW), "AdamW") == 0);
    CHECK(strcmp(mtl_update_type_name(MTL_UPDATE_RMSPROP), "RMSProp") == 0);
    CHECK(strcmp(mtl_lr_policy_name(MTL_LR_COSINE), "cosine") == 0);
    CHECK_INT(mtl_update_history_count(MTL_UPDATE_ADAM), 2);
    CHECK_INT(mtl_update_history_count(MTL_UPDATE_SGD), 1);
}

static void test_large_vector_deterministic(void)
{
    /* a vector large enough for the threaded path gives the same result as element-by-element */
    int64_t n = 200001;
    float *w = malloc((size_t)n * sizeof(float)), *g = malloc((size_t)n * sizeof(float));
    float *h = calloc((size_t)(2 * n), sizeof(float));
    mtl_update_config cfg = {.type = MTL_UPDATE_ADAM, .momentum = 0.9f, .momentum2 = 0.999f, .delta = 1e-8f,
                             .weight_decay = 0.0f};
    for (int64_t i = 0; i < n; i++) {
        w[i] = (float)(i % 17) * 0.1f - 0.8f;
        g[i] = (float)(i % 13) * 0.05f - 0.3f;
    }
    float w_small[1], g_small[1], h_small[2] = {0};
    int64_t probe = 123457;
    w_small[0] = w[probe];
    g_small[0] = g[probe];
    mtl_update_step(&cfg, 0, 0.01f, 0.0f, w, g, h, n);
    mtl_update_step(&cfg, 0, 0.01f, 0.0f, w_small, g_small, h_small, 1);
    CHECK(w[probe] == w_small[0]);
    CHECK(h[probe] == h_small[0]);
    CHECK(h[n + probe] == h_small[1]);
    free(w);
    free(g);
    free(h);
}

int main(void)
{
    test_sgd();
    test_nesterov();
    test_adam();
    test_rmsprop();
    test_adagrad();
    test_regularization();
    test_clipping();
    test_lr_policies();
    test_warmup();
    test_names();
    test_large_vector_deterministic();
    return check_finish();
}
