/* Convolution, Pooling and InnerProduct: finite-difference gradients over many shapes and
 * parameter combinations, hand-computed forwards, Caffe's output sizes, config errors, and the
 * multi-threaded paths against straightforward reference loops at MultiLeNet-like sizes. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef MTL_OPENMP
#include <omp.h>
#endif

#include <cblas.h>

#include "check.h"
#include "gradcheck.h"
#include "test_util.h"
#include "kernels/cpu/cpu_kernels.h"

#define SHAPE(...) {__VA_ARGS__, 0}

/* Weight and bias fillers that make every parameter non-zero, so all of them are checked. */
#define FILLERS "weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' std: 0.5 }"

/* ---- gradient checks ---- */

static void test_conv_gradients(void)
{
    static const struct {
        const char *label, *layer;
        int shape[MTL_MAX_AXES + 1];
        int n_bottoms;
    } cases[] = {
        {"conv 3x3", "type: 'Convolution' convolution_param { num_output: 3 kernel_size: 3 " FILLERS " }",
         SHAPE(2, 2, 5, 6), 1},
        {"conv stride 2 pad 1",
         "type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 stride: 2 pad: 1 " FILLERS " }",
         SHAPE(3, 3, 7, 5), 1},
        {"conv dilation 2",
         "type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 dilation: 2 pad: 1 " FILLERS " }",
         SHAPE(2, 2, 7, 6), 1},
        {"conv dilation per axis",
         "type: 'Convolution' convolution_param { num_output: 2 kernel_size: 2 dilation: 1 dilation: 3 " FILLERS
         " }",
         SHAPE(2, 1, 5, 7), 1},
        {"conv group 2",
         "type: 'Convolution' convolution_param { num_output: 4 kernel_size: 3 group: 2 pad: 1 " FILLERS " }",
         SHAPE(2, 4, 5, 5), 1},
        {"conv group 3 stride 2",
         "type: 'Convolution' convolution_param { num_output: 3 kernel_size: 2 group: 3 stride: 2 " FILLERS " }",
         SHAPE(3, 3, 5, 6), 1},
        {"conv _h/_w",
         "type: 'Convolution' convolution_param { num_output: 2 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 "
         "stride_h: 2 stride_w: 1 " FILLERS " }",
         SHAPE(2, 2, 7, 5), 1},
        {"conv per-axis repeated",
         "type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 kernel_size: 1 stride: 1 stride: 2 "
         "pad: 0 pad: 1 " FILLERS " }",
         SHAPE(2, 2, 5, 6), 1},
        {"conv no bias",
         "type: 'Convolution' convolution_param { num_output: 3 kernel_size: 2 bias_term: false " FILLERS " }",
         SHAPE(2, 3, 4, 5), 1},
        {"conv 1x1", "type: 'Convolution' convolution_param { num_output: 3 kernel_size: 1 " FILLERS " }",
         SHAPE(3, 4, 3, 5), 1},
        {"conv 1x1 group 2",
         "type: 'Convolution' convolution_param { num_output: 4 kernel_size: 1 group: 2 " FILLERS " }",
         SHAPE(2, 4, 3, 3), 1},
        {"conv 1x1 stride 2", "type: 'Convolution' convolution_param { num_output: 2 kernel_size: 1 stride: 2 " FILLERS
         " }",
         SHAPE(2, 3, 5, 5), 1},
        {"conv 1x1 pad 1", "type: 'Convolution' convolution_param { num_output: 2 kernel_size: 1 pad: 1 " FILLERS " }",
         SHAPE(2, 2, 3, 4), 1},
        {"conv stride 3 pad 2",
         "type: 'Convolution' convolution_param { num_output: 2 kernel_size: 4 stride: 3 pad: 2 " FILLERS " }",
         SHAPE(2, 2, 8, 7), 1},
        {"conv batch 5", "type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 " FILLERS " }",
         SHAPE(5, 2, 5, 5), 1},
        {"conv two bottoms", "type: 'Convolution' convolution_param { num_output: 2 kernel_size: 2 " FILLERS " }",
         SHAPE(3, 2, 4, 4), 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gradcheck_case c = {.layer = cases[i].layer, .n_bottoms = cases[i].n_bottoms, .n_tops = cases[i].n_bottoms};
        for (int b = 0; b < cases[i].n_bottoms; b++)
            memcpy(c.shapes[b], cases[i].shape, sizeof(cases[i].shape));
        CHECK_MSG(gradcheck_run(cases[i].label, &c) == 0, "gradcheck %s", cases[i].label);
    }
}

static void test_pool_gradients(void)
{
    static const struct {
        const char *label, *layer;
        int shape[MTL_MAX_AXES + 1];
        int n_tops;
    } cases[] = {
        {"max 2x2 s2", "type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 }", SHAPE(2, 3, 6, 4), 1},
        {"max 2x2 s2 ceil odd", "type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 }",
         SHAPE(2, 2, 7, 5), 1},
        {"max 3x3 s2", "type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 2 }", SHAPE(2, 2, 6, 7), 1},
        {"max 3x3 s2 pad 1", "type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }",
         SHAPE(2, 2, 7, 5), 1},
        {"max 3x3 s1 overlapping", "type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 1 }",
         SHAPE(1, 2, 5, 5), 1},
        {"max _h/_w",
         "type: 'Pooling' pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 "
         "pad_w: 1 }",
         SHAPE(2, 2, 6, 5), 1},
        {"max floor", "type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR }",
         SHAPE(2, 2, 7, 7), 1},
        {"max global", "type: 'Pooling' pooling_param { pool: MAX global_pooling: true }", SHAPE(2, 3, 4, 5), 1},
        {"max with mask top", "type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 }",
         SHAPE(2, 2, 4, 6), 2},
        {"ave 3x3 s2 pad 1", "type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }",
         SHAPE(2, 2, 7, 6), 1},
        {"ave 2x2 s2", "type: 'Pooling' pooling_param { pool: AVE kernel_size: 2 stride: 2 }", SHAPE(2, 2, 5, 4), 1},
        {"ave 3x3 s1 pad 2 _h/_w",
         "type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 pad_h: 2 pad_w: 1 }", SHAPE(1, 2, 4, 5), 1},
        {"ave floor", "type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 2 round_mode: FLOOR }",
         SHAPE(2, 2, 8, 6), 1},
        {"ave global", "type: 'Pooling' pooling_param { pool: AVE global_pooling: true }", SHAPE(2, 3, 5, 3), 1},
        {"ave batch 5", "type: 'Pooling' pooling_param { pool: AVE kernel_size: 2 stride: 2 }", SHAPE(5, 3, 6, 6), 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gradcheck_case c = {.layer = cases[i].layer, .n_bottoms = 1, .n_tops = cases[i].n_tops};
        memcpy(c.shapes[0], cases[i].shape, sizeof(cases[i].shape));
        CHECK_MSG(gradcheck_run(cases[i].label, &c) == 0, "gradcheck %s", cases[i].label);
    }
}

static void test_ip_gradients(void)
{
    static const struct {
        const char *label, *layer;
        int shape[MTL_MAX_AXES + 1];
    } cases[] = {
        {"ip", "type: 'InnerProduct' inner_product_param { num_output: 5 " FILLERS " }", SHAPE(3, 4)},
        {"ip 4d", "type: 'InnerProduct' inner_product_param { num_output: 3 " FILLERS " }", SHAPE(3, 2, 3, 2)},
        {"ip axis 2", "type: 'InnerProduct' inner_product_param { num_output: 3 axis: 2 " FILLERS " }",
         SHAPE(2, 3, 4)},
        {"ip axis -1", "type: 'InnerProduct' inner_product_param { num_output: 2 axis: -1 " FILLERS " }",
         SHAPE(2, 3, 5)},
        {"ip axis 0", "type: 'InnerProduct' inner_product_param { num_output: 2 axis: 0 " FILLERS " }", SHAPE(3, 2)},
        {"ip transpose", "type: 'InnerProduct' inner_product_param { num_output: 4 transpose: true " FILLERS " }",
         SHAPE(3, 5)},
        {"ip transpose axis 2",
         "type: 'InnerProduct' inner_product_param { num_output: 2 transpose: true axis: 2 " FILLERS " }",
         SHAPE(2, 2, 3)},
        {"ip no bias", "type: 'InnerProduct' inner_product_param { num_output: 3 bias_term: false " FILLERS " }",
         SHAPE(4, 3)},
        /* large enough (M N K >= 2^18) for the GEMMs to be split over the team */
        {"ip threaded", "type: 'InnerProduct' inner_product_param { num_output: 45 " FILLERS " }", SHAPE(130, 45)},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gradcheck_case c = {.layer = cases[i].layer, .n_bottoms = 1};
        memcpy(c.shapes[0], cases[i].shape, sizeof(cases[i].shape));
        if (strcmp(cases[i].label, "ip threaded") == 0)
            c.step = 2e-2f, c.tolerance = 2e-2f;
        CHECK_MSG(gradcheck_run(cases[i].label, &c) == 0, "gradcheck %s", cases[i].label);
    }
}

/* ---- standalone layers for value tests ---- */

typedef struct fixture {
    mtl_tensor *bottoms[2];
    mtl_tensor *tops[2];
    int n_bottoms, n_tops;
    mtl_layer *layer;
    mtl_error err;
} fixture;

/* Builds `text` over one bottom of the given shape holding `values` (or 1, 2, 3, ... if NULL). */
static mtl_status fixture_build(fixture *f, const char *text, int ndim, const int *shape, const float *values,
                                int n_tops)
{
    memset(f, 0, sizeof(*f));
    f->n_bottoms = 1;
    f->n_tops = n_tops;
    f->bottoms[0] = mtl_tensor_create("x");
    mtl_tensor_reshape(f->bottoms[0], ndim, shape, &f->err);
    for (int64_t i = 0; i < f->bottoms[0]->count; i++)
        f->bottoms[0]->data[i] = values ? values[i] : (float)(i + 1);
    for (int t = 0; t < n_tops; t++)
        f->tops[t] = mtl_tensor_create("y");
    return gradcheck_build(text, MTL_PHASE_TRAIN, f->bottoms, 1, f->tops, n_tops, &f->layer, &f->err);
}

static mtl_status fixture_forward(fixture *f)
{
    MTL_TRY(f->layer->ops->reshape(f->layer, &f->err));
    return f->layer->ops->forward(f->layer, &f->err);
}

static void fixture_free(fixture *f)
{
    gradcheck_free_layer(f->layer);
    for (int i = 0; i < 2; i++) {
        mtl_tensor_free(f->bottoms[i]);
        mtl_tensor_free(f->tops[i]);
    }
}

static void test_conv_values(void)
{
    fixture f;
    /* x = 1..9 (3x3); 2x2 kernel w = [[1, 2], [3, 4]], pad 1, stride 2, bias 0.5:
     *   (0,0): only w11 sees x00            -> 4*1               = 4
     *   (0,1): w10 x01 + w11 x02            -> 3*2 + 4*3         = 18
     *   (1,0): w01 x10 + w11 x20            -> 2*4 + 4*7         = 36
     *   (1,1): w00 x11 + w01 x12 + w10 x21 + w11 x22 -> 5+12+24+36 = 77 */
    int shape[4] = {1, 1, 3, 3};
    CHECK_OK(fixture_build(&f, "type: 'Convolution' convolution_param { num_output: 1 kernel_size: 2 pad: 1 "
                               "stride: 2 bias_filler { type: 'constant' value: 0.5 } }",
                           4, shape, NULL, 1),
             &f.err);
    if (f.layer) {
        const float w[4] = {1, 2, 3, 4};
        memcpy(f.layer->params[0]->data, w, sizeof(w));
        CHECK_OK(fixture_forward(&f), &f.err);
        CHECK_INT(f.tops[0]->ndim, 4);
        CHECK_INT(f.tops[0]->shape[2], 2);
        CHECK_INT(f.tops[0]->shape[3], 2);
        const float want[4] = {4.5f, 18.5f, 36.5f, 77.5f};
        test_check_values("conv", f.tops[0]->data, want, 4, 1e-5);
        /* backward with dy = 1: dx sums the weights that touched each input; dw sums the inputs
         * each weight touched: w00 saw x11 only, w11 saw x00 x02 x20 x22 */
        for (int i = 0; i < 4; i++)
            f.tops[0]->grad[i] = 1.0f;
        mtl_tensor_zero_grad(f.layer->params[0]);
        mtl_tensor_zero_grad(f.layer->params[1]);
        f.layer->ops->backward(f.layer);
        const float dw[4] = {5, 6 + 4, 8 + 2, 1 + 3 + 7 + 9};
        test_check_values("conv dw", f.layer->params[0]->grad, dw, 4, 1e-5);
        CHECK_NEAR(f.layer->params[1]->grad[0], 4.0, 1e-6);
        const float dx[9] = {4, 3, 4, 2, 1, 2, 4, 3, 4};
        test_check_values("conv dx", f.bottoms[0]->grad, dx, 9, 1e-5);
    }
    fixture_free(&f);

    /* group 2 with a 1x1 kernel: channel c is scaled by its own weight (3 and -2) */
    int gshape[4] = {1, 2, 1, 2};
    CHECK_OK(fixture_build(&f, "type: 'Convolution' convolution_param { num_output: 2 kernel_size: 1 group: 2 "
                               "bias_term: false }",
                           4, gshape, NULL, 1),
             &f.err);
    if (f.layer) {
        CHECK_INT(f.layer->params[0]->shape[1], 1);
        f.layer->params[0]->data[0] = 3;
        f.layer->params[0]->data[1] = -2;
        CHECK_OK(fixture_forward(&f), &f.err);
        const float want[4] = {3, 6, -6, -8};
        test_check_values("group conv", f.tops[0]->data, want, 4, 1e-6);
    }
    fixture_free(&f);

    /* dilation 2 on 1x5: a 1x2 kernel [1, -1] sees x[i] and x[i+2] -> 1-3, 2-4, 3-5 */
    int dshape[4] = {1, 1, 1, 5};
    CHECK_OK(fixture_build(&f, "type: 'Convolution' convolution_param { num_output: 1 kernel_h: 1 kernel_w: 2 "
                               "dilation: 2 bias_term: false }",
                           4, dshape, NULL, 1),
             &f.err);
    if (f.layer) {
        f.layer->params[0]->data[0] = 1;
        f.layer->params[0]->data[1] = -1;
        CHECK_OK(fixture_forward(&f), &f.err);
        CHECK_INT(f.tops[0]->shape[3], 3);
        const float want[3] = {-2, -2, -2};
        test_check_values("dilated conv", f.tops[0]->data, want, 3, 1e-6);
    }
    fixture_free(&f);
}

static void test_pool_values(void)
{
    fixture f;
    /* 4x4 MAX 2x2 stride 2, with the argmax as a second top */
    const float x[16] = {1, 5, 2, 0, 3, 4, 8, 8, -1, -2, 0, 0, -3, -4, 0, 7};
    int shape[4] = {1, 1, 4, 4};
    CHECK_OK(fixture_build(&f, "type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 }", 4, shape, x, 2),
             &f.err);
    if (f.layer) {
        CHECK_OK(fixture_forward(&f), &f.err);
        const float want[4] = {5, 8, -1, 7};
        test_check_values("max pool", f.tops[0]->data, want, 4, 0);
        /* ties (the two 8s, the zeros) go to the first in row-major order, as in Caffe */
        const float mask[4] = {1, 6, 8, 15};
        test_check_values("max mask", f.tops[1]->data, mask, 4, 0);
        const float dy[4] = {1, 2, 3, 4};
        memcpy(f.tops[0]->grad, dy, sizeof(dy));
        f.layer->ops->backward(f.layer);
        const float dx[16] = {0, 1, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 0, 0, 0, 4};
        test_check_values("max pool dx", f.bottoms[0]->grad, dx, 16, 0);
    }
    fixture_free(&f);

    /* 3x3 MAX 3x3 stride 2 pad 1 (generic path), the mask the same as Caffe's */
    const float y[9] = {0, 1, 2, 3, 9, 5, 6, 7, 8};
    int shape3[4] = {1, 1, 3, 3};
    CHECK_OK(fixture_build(&f, "type: 'Pooling' pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }", 4,
                           shape3, y, 2),
             &f.err);
    if (f.layer) {
        CHECK_OK(fixture_forward(&f), &f.err);
        const float want[4] = {9, 9, 9, 9};
        test_check_values("max pool pad", f.tops[0]->data, want, 4, 0);
        const float mask[4] = {4, 4, 4, 4};
        test_check_values("max mask pad", f.tops[1]->data, mask, 4, 0);
    }
    fixture_free(&f);

    /* 3x3 x = 1..9, AVE 2x2 stride 2 pad 1 -> 2x2 (ceil gives 3, then the last window would
     * start in the padding and is dropped); every window counts 4 including its padding:
     * x00/4, (x01+x02)/4, (x10+x20)/4, (x11+x12+x21+x22)/4 */
    CHECK_OK(fixture_build(&f, "type: 'Pooling' pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 }", 4,
                           shape3, NULL, 1),
             &f.err);
    if (f.layer) {
        CHECK_OK(fixture_forward(&f), &f.err);
        CHECK_INT(f.tops[0]->shape[2], 2);
        const float want[4] = {0.25f, 1.25f, 2.75f, 7.0f};
        test_check_values("ave pool", f.tops[0]->data, want, 4, 1e-6);
        const float dy[4] = {4, 8, 4, 8};
        memcpy(f.tops[0]->grad, dy, sizeof(dy));
        f.layer->ops->backward(f.layer);
        const float dx[9] = {1, 2, 2, 1, 2, 2, 1, 2, 2};
        test_check_values("ave pool dx", f.bottoms[0]->grad, dx, 9, 1e-6);
    }
    fixture_free(&f);

    /* 4x4 x = 1..16, AVE 3x3 stride 2 pad 1 -> 3x3; the corner window (2,2) covers rows and
     * columns 3..5 of which 3..4 lie in the padded plane: divisor 2*2 = 4, one value x33 = 16 */
    int shape4[4] = {1, 1, 4, 4};
    CHECK_OK(fixture_build(&f, "type: 'Pooling' pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }", 4,
                           shape4, NULL, 1),
             &f.err);
    if (f.layer) {
        CHECK_OK(fixture_forward(&f), &f.err);
        CHECK_INT(f.tops[0]->shape[2], 3);
        CHECK_NEAR(f.tops[0]->data[8], 16.0 / 4.0, 1e-6);
        /* (0,0): x00 x01 x10 x11 = 1 2 5 6 over 9 */
        CHECK_NEAR(f.tops[0]->data[0], 14.0 / 9.0, 1e-6);
        /* (0,2): rows -1..1, columns 3..5 -> x03 x13 = 4 + 8, divisor 3 * 2 */
        CHECK_NEAR(f.tops[0]->data[2], 12.0 / 6.0, 1e-6);
    }
    fixture_free(&f);

    /* global AVE and MAX */
    CHECK_OK(fixture_build(&f, "type: 'Pooling' pooling_param { pool: AVE global_pooling: true }", 4, shape4, NULL,
                           1),
             &f.err);
    if (f.layer) {
        CHECK_OK(fixture_forward(&f), &f.err);
        CHECK_INT(f.tops[0]->shape[2], 1);
        CHECK_INT(f.tops[0]->shape[3], 1);
        CHECK_NEAR(f.tops[0]->data[0], 8.5, 1e-6);
    }
    fixture_free(&f);
}

/* Caffe's pooled sizes for (input, kernel, stride, pad, round mode). */
static void test_pool_sizes(void)
{
    static const struct {
        int in, kernel, stride, pad, floor_mode, want;
    } cases[] = {
        {6, 3, 2, 0, 0, 3}, /* ceil(1.5) + 1 */
        {6, 3, 2, 0, 1, 2}, /* floor(1.5) + 1 */
        {7, 2, 2, 0, 0, 4}, {7, 2, 2, 0, 1, 3}, {24, 2, 2, 0, 0, 12}, {8, 2, 2, 0, 0, 4},
        {6, 3, 2, 1, 0, 4}, /* ceil(2.5) + 1, last window starts at 5 < 6 + 1 */
        {5, 2, 2, 1, 0, 3}, /* ceil(2.5) + 1 = 4, but window 3 would start at 6 = 5 + 1: clipped */
        {5, 2, 2, 1, 1, 3}, {3, 3, 1, 1, 0, 3}, {3, 3, 1, 0, 0, 1}, {13, 3, 2, 0, 0, 6},
        {13, 3, 2, 0, 1, 6}, {14, 3, 2, 0, 0, 7}, {14, 3, 2, 0, 1, 6},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text),
                 "type: 'Pooling' pooling_param { pool: MAX kernel_size: %d stride: %d pad: %d round_mode: %s }",
                 cases[i].kernel, cases[i].stride, cases[i].pad, cases[i].floor_mode ? "FLOOR" : "CEIL");
        fixture f;
        int shape[4] = {1, 1, cases[i].in, cases[i].in};
        CHECK_OK(fixture_build(&f, text, 4, shape, NULL, 1), &f.err);
        if (f.layer) {
            CHECK_MSG(f.tops[0]->shape[2] == cases[i].want && f.tops[0]->shape[3] == cases[i].want,
                      "%s on %dx%d: %dx%d, expected %d", text, cases[i].in, cases[i].in, f.tops[0]->shape[2],
                      f.tops[0]->shape[3], cases[i].want);
            CHECK_OK(fixture_forward(&f), &f.err); /* every window non-empty: no reads outside the plane */
        }
        fixture_free(&f);
    }
    /* rectangular: 6x9 with kernel_h 3 kernel_w 2, stride_h 3 stride_w 2 -> 2x5 (ceil), 2x4 (floor) */
    for (int floor_mode = 0; floor_mode < 2; floor_mode++) {
        char text[256];
        snprintf(text, sizeof(text),
                 "type: 'Pooling' pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 3 stride_w: 2 "
                 "round_mode: %s }",
                 floor_mode ? "FLOOR" : "CEIL");
        fixture f;
        int shape[4] = {2, 3, 6, 9};
        CHECK_OK(fixture_build(&f, text, 4, shape, NULL, 1), &f.err);
        if (f.layer) {
            CHECK_INT(f.tops[0]->shape[0], 2);
            CHECK_INT(f.tops[0]->shape[1], 3);
            CHECK_INT(f.tops[0]->shape[2], 2);
            CHECK_INT(f.tops[0]->shape[3], floor_mode ? 4 : 5);
        }
        fixture_free(&f);
    }
}

static void test_conv_sizes(void)
{
    static const struct {
        const char *param;
        int h, w, want_h, want_w;
    } cases[] = {
        {"kernel_size: 5", 28, 28, 24, 24},
        {"kernel_size: 5", 12, 12, 8, 8},
        {"kernel_size: 3 stride: 2", 7, 8, 3, 3},
        {"kernel_size: 3 stride: 2 pad: 1", 7, 8, 4, 4},
        {"kernel_size: 3 dilation: 2", 9, 7, 5, 3},   /* extent 5 */
        {"kernel_h: 3 kernel_w: 1 pad_h: 2 pad_w: 0 stride_h: 1 stride_w: 3", 5, 7, 7, 3},
        {"kernel_size: 11 stride: 4", 227, 227, 55, 55},
        {"kernel_size: 1", 3, 4, 3, 4},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "type: 'Convolution' convolution_param { num_output: 2 %s }", cases[i].param);
        fixture f;
        int shape[4] = {1, 1, cases[i].h, cases[i].w};
        CHECK_OK(fixture_build(&f, text, 4, shape, NULL, 1), &f.err);
        if (f.layer)
            CHECK_MSG(f.tops[0]->shape[2] == cases[i].want_h && f.tops[0]->shape[3] == cases[i].want_w,
                      "%s on %dx%d: %dx%d, expected %dx%d", cases[i].param, cases[i].h, cases[i].w,
                      f.tops[0]->shape[2], f.tops[0]->shape[3], cases[i].want_h, cases[i].want_w);
        fixture_free(&f);
    }
}

static void test_ip_values(void)
{
    fixture f;
    /* x = [[1,2,3],[4,5,6]], W = [[1,0,-1],[2,1,0]], b = [0.5,-1]:
     * y = [[1-3+0.5, 2+2-1], [4-6+0.5, 8+5-1]] = [[-1.5, 3], [-1.5, 12]] */
    const float w[6] = {1, 0, -1, 2, 1, 0};
    const float wt[6] = {1, 2, 0, 1, -1, 0}; /* the same weights stored K x N */
    const float want[4] = {-1.5f, 3, -1.5f, 12};
    int shape[2] = {2, 3};
    for (int transpose = 0; transpose < 2; transpose++) {
        CHECK_OK(fixture_build(&f,
                               transpose ? "type: 'InnerProduct' inner_product_param { num_output: 2 transpose: true }"
                                         : "type: 'InnerProduct' inner_product_param { num_output: 2 }",
                               2, shape, NULL, 1),
                 &f.err);
        if (f.layer) {
            CHECK_INT(f.layer->params[0]->shape[0], transpose ? 3 : 2);
            memcpy(f.layer->params[0]->data, transpose ? wt : w, sizeof(w));
            f.layer->params[1]->data[0] = 0.5f;
            f.layer->params[1]->data[1] = -1.0f;
            CHECK_OK(fixture_forward(&f), &f.err);
            test_check_values(transpose ? "ip transposed" : "ip", f.tops[0]->data, want, 4, 1e-6);
            /* dy = [[1,0],[0,1]]: dx = rows of W; dW (N x K) = dy^T x = x; db = [1, 1] */
            const float dy[4] = {1, 0, 0, 1};
            memcpy(f.tops[0]->grad, dy, sizeof(dy));
            mtl_tensor_zero_grad(f.layer->params[0]);
            mtl_tensor_zero_grad(f.layer->params[1]);
            f.layer->ops->backward(f.layer);
            test_check_values("ip dx", f.bottoms[0]->grad, w, 6, 1e-6);
            const float dw[6] = {1, 2, 3, 4, 5, 6}, dwt[6] = {1, 4, 2, 5, 3, 6};
            test_check_values("ip dw", f.layer->params[0]->grad, transpose ? dwt : dw, 6, 1e-6);
            CHECK_NEAR(f.layer->params[1]->grad[0], 1.0, 1e-6);
            CHECK_NEAR(f.layer->params[1]->grad[1], 1.0, 1e-6);
        }
        fixture_free(&f);
    }
    /* axis 2 keeps the first two axes: 2x3x4 -> 2x3x5 */
    int shape3[3] = {2, 3, 4};
    CHECK_OK(fixture_build(&f, "type: 'InnerProduct' inner_product_param { num_output: 5 axis: 2 }", 3, shape3, NULL,
                           1),
             &f.err);
    if (f.layer) {
        CHECK_INT(f.tops[0]->ndim, 3);
        CHECK_INT(f.tops[0]->shape[1], 3);
        CHECK_INT(f.tops[0]->shape[2], 5);
        CHECK_INT(f.layer->params[0]->shape[1], 4);
        /* a different per-sample size at reshape is an error */
        int other[3] = {2, 3, 5};
        mtl_tensor_reshape(f.bottoms[0], 3, other, &f.err);
        CHECK_FAILS(f.layer->ops->reshape(f.layer, &f.err), &f.err, MTL_ERR_SHAPE, "the weights take 4");
        /* more samples is fine */
        int more[3] = {4, 7, 4};
        mtl_tensor_reshape(f.bottoms[0], 3, more, &f.err);
        CHECK_OK(f.layer->ops->reshape(f.layer, &f.err), &f.err);
        CHECK_INT(f.tops[0]->shape[1], 7);
    }
    fixture_free(&f);
}

/* ---- configuration errors ---- */

static void expect_fail(const char *text, int ndim, const int *shape, int n_tops, mtl_status status, const char *needle)
{
    fixture f;
    mtl_status st = fixture_build(&f, text, ndim, shape, NULL, n_tops);
    CHECK_MSG(st == status && strstr(f.err.message, needle) != NULL, "%s: got %s '%s', expected %s containing '%s'",
              text, mtl_status_name(st), st == MTL_OK ? "" : f.err.message, mtl_status_name(status), needle);
    fixture_free(&f);
}

static void test_errors(void)
{
    int s4[4] = {2, 3, 5, 5}, s5[5] = {2, 3, 4, 4, 4}, s2[2] = {2, 3};
    /* Convolution */
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 7 }", 4, s4, 1, MTL_ERR_SHAPE,
                "larger than the padded input");
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 4 dilation: 2 }", 4, s4, 1,
                MTL_ERR_SHAPE, "larger than the padded input");
    expect_fail("type: 'Convolution' convolution_param { kernel_size: 3 }", 4, s4, 1, MTL_ERR_CONFIG,
                "num_output } is required");
    expect_fail("type: 'Convolution'", 4, s4, 1, MTL_ERR_CONFIG, "kernel_size (or kernel_h and kernel_w) is required");
    expect_fail("type: 'Convolution' convolution_param { num_output: 4 kernel_size: 3 group: 2 }", 4, s4, 1,
                MTL_ERR_CONFIG, "group 2 does not divide the 3 input channels");
    expect_fail("type: 'Convolution' convolution_param { num_output: 4 kernel_size: 1 group: 3 }", 4, s4, 1,
                MTL_ERR_CONFIG, "group 3 does not divide num_output 4");
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3 }", 4, s4,
                1, MTL_ERR_CONFIG, "give either kernel_size or kernel_h and kernel_w, not both");
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_h: 3 }", 4, s4, 1, MTL_ERR_CONFIG,
                "kernel_h and kernel_w must be given together");
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 stride: 1 stride_h: 2 "
                "stride_w: 2 }",
                4, s4, 1, MTL_ERR_CONFIG, "give either stride or stride_h and stride_w");
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 kernel_size: 3 kernel_size: 3 }",
                4, s4, 1, MTL_ERR_CONFIG, "once per spatial axis");
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 stride: 0 }", 4, s4, 1,
                MTL_ERR_CONFIG, "stride");
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 0 }", 4, s4, 1, MTL_ERR_CONFIG,
                "kernel_size");
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 axis: 2 }", 4, s4, 1,
                MTL_ERR_UNSUPPORTED, "only channels at axis 1");
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 axis: 7 }", 4, s4, 1,
                MTL_ERR_CONFIG, "out of range");
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 }", 5, s5, 1,
                MTL_ERR_UNSUPPORTED, "only 2D convolution");
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 strid: 2 }", 4, s4, 1,
                MTL_ERR_CONFIG, "stride");
    expect_fail("type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 }", 4, s4, 2, MTL_ERR_CONFIG,
                "as many tops as bottoms");
    /* engine and force_nd_im2col are accepted */
    fixture f;
    CHECK_OK(fixture_build(&f, "type: 'Convolution' convolution_param { num_output: 2 kernel_size: 3 engine: CAFFE "
                               "force_nd_im2col: true axis: -3 }",
                           4, s4, NULL, 1),
             &f.err);
    fixture_free(&f);

    /* Pooling */
    expect_fail("type: 'Pooling' pooling_param { pool: STOCHASTIC kernel_size: 2 }", 4, s4, 1, MTL_ERR_UNSUPPORTED,
                "STOCHASTIC");
    expect_fail("type: 'Pooling' pooling_param { pool: AVE kernel_size: 2 }", 4, s4, 2, MTL_ERR_CONFIG,
                "only MAX pooling has a second top");
    expect_fail("type: 'Pooling' pooling_param { pool: MAX kernel_size: 7 }", 4, s4, 1, MTL_ERR_SHAPE,
                "larger than the padded input");
    expect_fail("type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 pad: 2 }", 4, s4, 1, MTL_ERR_CONFIG,
                "must be smaller than the kernel");
    expect_fail("type: 'Pooling' pooling_param { pool: MAX global_pooling: true kernel_size: 2 }", 4, s4, 1,
                MTL_ERR_CONFIG, "global_pooling takes the whole plane");
    expect_fail("type: 'Pooling' pooling_param { pool: MAX global_pooling: true stride: 2 }", 4, s4, 1,
                MTL_ERR_CONFIG, "only pad 0 and stride 1");
    expect_fail("type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 kernel_h: 2 kernel_w: 2 }", 4, s4, 1,
                MTL_ERR_CONFIG, "give either kernel_size or kernel_h and kernel_w");
    expect_fail("type: 'Pooling' pooling_param { pool: MAX kernel_w: 2 }", 4, s4, 1, MTL_ERR_CONFIG,
                "kernel_h and kernel_w must be given together");
    expect_fail("type: 'Pooling' pooling_param { pool: MAX }", 4, s4, 1, MTL_ERR_CONFIG, "kernel_size");
    expect_fail("type: 'Pooling' pooling_param { pool: MIN kernel_size: 2 }", 4, s4, 1, MTL_ERR_CONFIG, "MAX");
    expect_fail("type: 'Pooling' pooling_param { kernel_size: 2 round_mode: UP }", 4, s4, 1, MTL_ERR_CONFIG, "CEIL");
    expect_fail("type: 'Pooling' pooling_param { kernel_size: 2 }", 2, s2, 1, MTL_ERR_SHAPE, "4 axes");
    CHECK_OK(fixture_build(&f, "type: 'Pooling' pooling_param { kernel_size: 2 engine: CAFFE }", 4, s4, NULL, 1),
             &f.err);
    fixture_free(&f);

    /* InnerProduct */
    expect_fail("type: 'InnerProduct'", 2, s2, 1, MTL_ERR_CONFIG, "num_output } is required");
    expect_fail("type: 'InnerProduct' inner_product_param { num_output: 2 axis: 3 }", 2, s2, 1, MTL_ERR_CONFIG,
                "axis 3 is out of range");
    expect_fail("type: 'InnerProduct' inner_product_param { num_output: 2 transpose: maybe }", 2, s2, 1,
                MTL_ERR_CONFIG, "transpose");
}

/* ---- fast paths against straightforward loops ---- */

typedef struct conv_spec {
    int n, c, h, w, m, group, kh, kw, ph, pw, sh, sw, dh, dw;
} conv_spec;

static int ref_out(int in, int k, int p, int s, int d) { return (in + 2 * p - (d * (k - 1) + 1)) / s + 1; }

/* y = conv(x, w) + b; and, from dy, dx, dw, db; all in double over the plain definition. */
static void ref_conv(const conv_spec *s, const float *x, const float *w, const float *b, const float *dy, double *y,
                     double *dx, double *dw, double *db)
{
    int oh = ref_out(s->h, s->kh, s->ph, s->sh, s->dh), ow = ref_out(s->w, s->kw, s->pw, s->sw, s->dw);
    int cg = s->c / s->group, mg = s->m / s->group;
    memset(dx, 0, sizeof(double) * s->n * s->c * s->h * s->w);
    memset(dw, 0, sizeof(double) * s->m * cg * s->kh * s->kw);
    memset(db, 0, sizeof(double) * s->m);
    for (int n = 0; n < s->n; n++)
        for (int m = 0; m < s->m; m++) {
            int g = m / mg;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    int64_t yi = (((int64_t)n * s->m + m) * oh + oy) * ow + ox;
                    double sum = b[m];
                    db[m] += dy[yi];
                    for (int c = 0; c < cg; c++)
                        for (int ky = 0; ky < s->kh; ky++)
                            for (int kx = 0; kx < s->kw; kx++) {
                                int iy = oy * s->sh - s->ph + ky * s->dh, ix = ox * s->sw - s->pw + kx * s->dw;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w)
                                    continue;
                                int64_t xi = (((int64_t)n * s->c + g * cg + c) * s->h + iy) * s->w + ix;
                                int64_t wi = (((int64_t)m * cg + c) * s->kh + ky) * s->kw + kx;
                                sum += (double)w[wi] * x[xi];
                                dx[xi] += (double)w[wi] * dy[yi];
                                dw[wi] += (double)x[xi] * dy[yi];
                            }
                    y[yi] = sum;
                }
        }
}

static double max_rel_diff(const float *got, const double *want, int64_t n)
{
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]) / fmax(fabs(want[i]), 1.0);
        if (!(d <= worst))
            worst = d;
    }
    return worst;
}

static void set_threads(int n)
{
#ifdef MTL_OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* Runs a conv spec forward and backward with `threads`; returns copies of y, dx, dw, db. */
static int run_conv(const conv_spec *s, int threads, float **out)
{
    char text[512];
    snprintf(text, sizeof(text),
             "type: 'Convolution' convolution_param { num_output: %d group: %d kernel_h: %d kernel_w: %d pad_h: %d "
             "pad_w: %d stride_h: %d stride_w: %d dilation: %d dilation: %d " FILLERS " }",
             s->m, s->group, s->kh, s->kw, s->ph, s->pw, s->sh, s->sw, s->dh, s->dw);
    set_threads(threads);
    fixture f;
    int shape[4] = {s->n, s->c, s->h, s->w};
    mtl_status st = fixture_build(&f, text, 4, shape, NULL, 1);
    CHECK_OK(st, &f.err);
    if (st != MTL_OK) {
        fixture_free(&f);
        set_threads(2);
        return 0;
    }
    gradcheck_fill(f.bottoms[0], -1, 1, 11);
    CHECK_OK(fixture_forward(&f), &f.err);
    gradcheck_fill(f.tops[0], -1, 1, 12);
    memcpy(f.tops[0]->grad, f.tops[0]->data, (size_t)f.tops[0]->count * sizeof(float));
    CHECK_OK(fixture_forward(&f), &f.err);
    mtl_tensor_zero_grad(f.layer->params[0]);
    mtl_tensor_zero_grad(f.layer->params[1]);
    f.layer->ops->backward(f.layer);
    const mtl_tensor *parts[4] = {f.tops[0], f.bottoms[0], f.layer->params[0], f.layer->params[1]};
    for (int i = 0; i < 4; i++) {
        out[i] = malloc((size_t)parts[i]->count * sizeof(float));
        memcpy(out[i], i == 0 ? parts[i]->data : parts[i]->grad, (size_t)parts[i]->count * sizeof(float));
    }
    /* inputs for the reference */
    out[4] = malloc((size_t)f.bottoms[0]->count * sizeof(float));
    memcpy(out[4], f.bottoms[0]->data, (size_t)f.bottoms[0]->count * sizeof(float));
    out[5] = malloc((size_t)f.layer->params[0]->count * sizeof(float));
    memcpy(out[5], f.layer->params[0]->data, (size_t)f.layer->params[0]->count * sizeof(float));
    out[6] = malloc((size_t)s->m * sizeof(float));
    memcpy(out[6], f.layer->params[1]->data, (size_t)s->m * sizeof(float));
    out[7] = malloc((size_t)f.tops[0]->count * sizeof(float));
    memcpy(out[7], f.tops[0]->grad, (size_t)f.tops[0]->count * sizeof(float));
    fixture_free(&f);
    set_threads(2);
    return 1;
}

static void test_conv_reference(void)
{
    static const conv_spec specs[] = {
        {37, 1, 28, 28, 10, 1, 5, 5, 0, 0, 1, 1, 1, 1}, /* MultiLeNet conv1, more images than chunks */
        {9, 10, 12, 12, 20, 1, 5, 5, 0, 0, 1, 1, 1, 1}, /* MultiLeNet conv2 */
        {5, 6, 11, 9, 4, 2, 3, 2, 1, 0, 2, 1, 1, 2},
        {3, 4, 9, 10, 6, 1, 1, 1, 0, 0, 1, 1, 1, 1},
        {4, 3, 10, 7, 5, 1, 3, 3, 2, 1, 3, 2, 2, 1},
    };
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        const conv_spec *s = &specs[i];
        float *two[8] = {0}, *one[8] = {0}, *again[8] = {0};
        if (!run_conv(s, 2, two) || !run_conv(s, 1, one) || !run_conv(s, 2, again))
            continue;
        int oh = ref_out(s->h, s->kh, s->ph, s->sh, s->dh), ow = ref_out(s->w, s->kw, s->pw, s->sw, s->dw);
        int64_t ny = (int64_t)s->n * s->m * oh * ow, nx = (int64_t)s->n * s->c * s->h * s->w;
        int64_t nw = (int64_t)s->m * (s->c / s->group) * s->kh * s->kw;
        double *y = malloc(sizeof(double) * ny), *dx = malloc(sizeof(double) * nx);
        double *dw = malloc(sizeof(double) * nw), *db = malloc(sizeof(double) * s->m);
        ref_conv(s, two[4], two[5], two[6], two[7], y, dx, dw, db);
        CHECK_MSG(max_rel_diff(two[0], y, ny) < 1e-5, "spec %zu: y differs from the reference by %g", i,
                  max_rel_diff(two[0], y, ny));
        CHECK_MSG(max_rel_diff(two[1], dx, nx) < 1e-5, "spec %zu: dx differs from the reference by %g", i,
                  max_rel_diff(two[1], dx, nx));
        CHECK_MSG(max_rel_diff(two[2], dw, nw) < 1e-4, "spec %zu: dw differs from the reference by %g", i,
                  max_rel_diff(two[2], dw, nw));
        CHECK_MSG(max_rel_diff(two[3], db, s->m) < 1e-4, "spec %zu: db differs from the reference by %g", i,
                  max_rel_diff(two[3], db, s->m));
        /* per-image results and the chunked gradient sums do not depend on the thread count */
        CHECK_MSG(memcmp(two[0], one[0], sizeof(float) * ny) == 0, "spec %zu: y differs between 1 and 2 threads", i);
        CHECK_MSG(memcmp(two[1], one[1], sizeof(float) * nx) == 0, "spec %zu: dx differs between 1 and 2 threads", i);
        CHECK_MSG(memcmp(two[2], one[2], sizeof(float) * nw) == 0 && memcmp(two[3], one[3], sizeof(float) * s->m) == 0,
                  "spec %zu: dw or db differs between 1 and 2 threads", i);
        CHECK_MSG(memcmp(two[2], again[2], sizeof(float) * nw) == 0 &&
                      memcmp(two[3], again[3], sizeof(float) * s->m) == 0,
                  "spec %zu: two runs with 2 threads differ", i);
        free(y);
        free(dx);
        free(dw);
        free(db);
        for (int j = 0; j < 8; j++) {
            free(two[j]);
            free(one[j]);
            free(again[j]);
        }
    }
}

/* Frozen weights or frozen bias (lr_mult 0) take other paths through the backward pass (bias from
 * row sums, weights without the bias row): their gradients must match the unfrozen ones. */
static void test_conv_frozen(void)
{
    static const char *const geometries[] = {"kernel_size: 3 pad: 1", "kernel_size: 1", "kernel_size: 2 stride: 2",
                                             "kernel_size: 7"}; /* the last: dw_transposed */
    static const char *const params[] = {"", "param { lr_mult: 0 } param { lr_mult: 1 }",
                                         "param { lr_mult: 1 } param { lr_mult: 0 }"};
    for (size_t gi = 0; gi < sizeof(geometries) / sizeof(geometries[0]); gi++) {
        float *grads[3][2] = {{0}};
        for (int pi = 0; pi < 3; pi++) {
            char text[512];
            snprintf(text, sizeof(text),
                     "type: 'Convolution' %s convolution_param { num_output: %d group: 2 %s " FILLERS " }", params[pi],
                     gi == 3 ? 40 : 4, geometries[gi]);
            fixture f;
            int shape[4] = {5, 4, 12, 12};
            CHECK_OK(fixture_build(&f, text, 4, shape, NULL, 1), &f.err);
            if (f.layer) {
                gradcheck_fill(f.bottoms[0], -1, 1, 3);
                CHECK_OK(fixture_forward(&f), &f.err);
                gradcheck_fill(f.tops[0], -1, 1, 4);
                memcpy(f.tops[0]->grad, f.tops[0]->data, (size_t)f.tops[0]->count * sizeof(float));
                CHECK_OK(fixture_forward(&f), &f.err);
                for (int q = 0; q < 2; q++) {
                    gradcheck_fill(f.layer->params[q], 0, 0.5f, 9); /* backward adds to what is there */
                    memcpy(f.layer->params[q]->grad, f.layer->params[q]->data,
                           (size_t)f.layer->params[q]->count * sizeof(float));
                }
                f.layer->ops->backward(f.layer);
                for (int q = 0; q < 2; q++) {
                    grads[pi][q] = malloc((size_t)f.layer->params[q]->count * sizeof(float));
                    memcpy(grads[pi][q], f.layer->params[q]->grad, (size_t)f.layer->params[q]->count * sizeof(float));
                    if (pi == 0)
                        continue;
                    int frozen = (pi == 1) == (q == 0);
                    int64_t n = f.layer->params[q]->count, bad = 0;
                    for (int64_t i = 0; i < n; i++) {
                        float want = frozen ? f.layer->params[q]->data[i] : grads[0][q][i];
                        bad += fabs(grads[pi][q][i] - want) > 1e-4 * fmax(1.0, fabs(want));
                    }
                    CHECK_MSG(bad == 0, "%s %s: %lld of %lld param%d gradients differ", geometries[gi], params[pi],
                              (long long)bad, (long long)n, q);
                }
            }
            fixture_free(&f);
        }
        for (int pi = 0; pi < 3; pi++)
            for (int q = 0; q < 2; q++)
                free(grads[pi][q]);
    }
}

static void test_pool_reference(void)
{
    static const struct {
        const char *param;
        int n, c, h, w, k, s, p, ave;
    } cases[] = {
        {"pool: MAX kernel_size: 2 stride: 2", 11, 10, 24, 24, 2, 2, 0, 0},
        {"pool: MAX kernel_size: 2 stride: 2", 3, 7, 10, 22, 2, 2, 0, 0}, /* vector and scalar columns */
        {"pool: MAX kernel_size: 3 stride: 2 pad: 1", 5, 3, 13, 12, 3, 2, 1, 0},
        {"pool: AVE kernel_size: 3 stride: 2 pad: 1", 5, 3, 13, 12, 3, 2, 1, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "type: 'Pooling' pooling_param { %s }", cases[i].param);
        fixture f;
        int shape[4] = {cases[i].n, cases[i].c, cases[i].h, cases[i].w};
        CHECK_OK(fixture_build(&f, text, 4, shape, NULL, 1), &f.err);
        if (!f.layer) {
            fixture_free(&f);
            continue;
        }
        gradcheck_fill(f.bottoms[0], -1, 1, 5);
        CHECK_OK(fixture_forward(&f), &f.err);
        gradcheck_fill(f.tops[0], -1, 1, 6);
        memcpy(f.tops[0]->grad, f.tops[0]->data, (size_t)f.tops[0]->count * sizeof(float));
        CHECK_OK(fixture_forward(&f), &f.err);
        f.layer->ops->backward(f.layer);
        int oh = f.tops[0]->shape[2], ow = f.tops[0]->shape[3], h = cases[i].h, w = cases[i].w;
        int k = cases[i].k, st = cases[i].s, pad = cases[i].p;
        double *dx = calloc((size_t)f.bottoms[0]->count, sizeof(double));
        int bad_y = 0;
        for (int plane = 0; plane < cases[i].n * cases[i].c; plane++) {
            const float *x = f.bottoms[0]->data + (int64_t)plane * h * w;
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    int64_t yi = ((int64_t)plane * oh + oy) * ow + ox;
                    double best = -DBL_MAX, sum = 0;
                    int best_i = -1, count = 0;
                    for (int y = oy * st - pad; y < oy * st - pad + k; y++)
                        for (int xx = ox * st - pad; xx < ox * st - pad + k; xx++) {
                            if (y < h + pad && xx < w + pad)
                                count++;
                            if (y < 0 || y >= h || xx < 0 || xx >= w)
                                continue;
                            sum += x[y * w + xx];
                            if (x[y * w + xx] > best) {
                                best = x[y * w + xx];
                                best_i = y * w + xx;
                            }
                        }
                    double want = cases[i].ave ? sum / count : best;
                    bad_y += fabs(f.tops[0]->data[yi] - want) > 1e-5;
                    double g = f.tops[0]->grad[yi];
                    if (!cases[i].ave) {
                        dx[(int64_t)plane * h * w + best_i] += g;
                        continue;
                    }
                    for (int y = oy * st - pad; y < oy * st - pad + k; y++)
                        for (int xx = ox * st - pad; xx < ox * st - pad + k; xx++)
                            if (y >= 0 && y < h && xx >= 0 && xx < w)
                                dx[(int64_t)plane * h * w + y * w + xx] += g / count;
                }
        }
        CHECK_MSG(bad_y == 0, "%s: %d outputs differ from the reference", cases[i].param, bad_y);
        CHECK_MSG(max_rel_diff(f.bottoms[0]->grad, dx, f.bottoms[0]->count) < 1e-5, "%s: dx differs by %g",
                  cases[i].param, max_rel_diff(f.bottoms[0]->grad, dx, f.bottoms[0]->count));
        free(dx);
        fixture_free(&f);
    }
}

/* The team-split GEMM against a plain triple loop, for every transpose combination and shapes
 * split by rows and by columns. */
static void test_sgemm_split(void)
{
    static const int dims[][3] = {{300, 70, 40}, {20, 700, 50}, {257, 33, 129}, {5, 3, 2}};
    for (size_t d = 0; d < sizeof(dims) / sizeof(dims[0]); d++) {
        int m = dims[d][0], n = dims[d][1], k = dims[d][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
                float *c = malloc(sizeof(float) * m * n);
                double *want = malloc(sizeof(double) * m * n);
                for (int i = 0; i < m * k; i++)
                    a[i] = (float)(((unsigned)i * 7919u) % 13u) / 6.0f - 1.0f;
                for (int i = 0; i < k * n; i++)
                    b[i] = (float)(((unsigned)i * 104729u) % 17u) / 8.0f - 1.0f;
                for (int i = 0; i < m * n; i++)
                    c[i] = (float)(i % 5);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        double s = 0.5 * c[i * n + j];
                        for (int p = 0; p < k; p++)
                            s += 2.0 * (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
                        want[i * n + j] = s;
                    }
                mtl_cpu_sgemm(ta, tb, m, n, k, 2.0f, a, ta ? m : k, b, tb ? k : n, 0.5f, c, n);
                CHECK_MSG(max_rel_diff(c, want, (int64_t)m * n) < 1e-5, "sgemm %dx%dx%d ta %d tb %d differs by %g", m,
                          n, k, ta, tb, max_rel_diff(c, want, (int64_t)m * n));
                free(a);
                free(b);
                free(c);
                free(want);
            }
    }
}

/* The layers call OpenBLAS from several OpenMP threads at once. Each thread multiplies its own
 * matrices, large enough for OpenBLAS's packed path (which takes buffers from a shared pool),
 * many times; every result must equal the one computed alone. */
static void test_concurrent_sgemm(void)
{
    enum { DIM = 160, ROUNDS = 12, SLOTS = 4 };
    float *a = malloc(sizeof(float) * SLOTS * DIM * DIM), *b = malloc(sizeof(float) * SLOTS * DIM * DIM);
    float *alone = malloc(sizeof(float) * SLOTS * DIM * DIM), *together = malloc(sizeof(float) * SLOTS * DIM * DIM);
    for (int i = 0; i < SLOTS * DIM * DIM; i++) {
        a[i] = (float)(((unsigned)i * 2654435761u) >> 24) / 128.0f - 1.0f;
        b[i] = (float)(((unsigned)i * 40503u + 7u) % 251u) / 125.0f - 1.0f;
    }
    for (int sl = 0; sl < SLOTS; sl++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, sl % 2 ? CblasTrans : CblasNoTrans, DIM, DIM, DIM, 1.0f,
                    a + sl * DIM * DIM, DIM, b + sl * DIM * DIM, DIM, 0.0f, alone + sl * DIM * DIM, DIM);
    int mismatches = 0;
    for (int round = 0; round < ROUNDS; round++) {
        memset(together, 0, sizeof(float) * SLOTS * DIM * DIM);
        MTL_OMP("omp parallel for schedule(static, 1) num_threads(SLOTS)")
        for (int sl = 0; sl < SLOTS; sl++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, sl % 2 ? CblasTrans : CblasNoTrans, DIM, DIM, DIM, 1.0f,
                        a + sl * DIM * DIM, DIM, b + sl * DIM * DIM, DIM, 0.0f, together + sl * DIM * DIM, DIM);
        mismatches += memcmp(alone, together, sizeof(float) * SLOTS * DIM * DIM) != 0;
    }
    CHECK_MSG(mismatches == 0, "%d of %d rounds of concurrent sgemm differ from sgemm alone", mismatches, ROUNDS);
    free(a);
    free(b);
    free(alone);
    free(together);
}

int main(void)
{
    set_threads(2);
    test_conv_gradients();
    test_pool_gradients();
    test_ip_gradients();
    test_conv_values();
    test_pool_values();
    test_pool_sizes();
    test_conv_sizes();
    test_ip_values();
    test_errors();
    test_conv_reference();
    test_conv_frozen();
    test_pool_reference();
    test_sgemm_split();
    test_concurrent_sgemm();
    return check_finish();
}
