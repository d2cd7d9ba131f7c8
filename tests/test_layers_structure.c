/* Tests for the blob-producing and structural layers: Input, DummyData, Flatten, Reshape, Concat,
 * Slice, Split, Eltwise and Silence. Finite-difference gradients for every layer with a backward,
 * hand-computed values, and the error messages of bad configurations. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "test_util.h"
#include "gradcheck.h"

/* A tensor of the given shape (axis sizes ended by 0) with values (NULL: zeros). */
static int shape_is(const mtl_tensor *t, int ndim, ...)
{
    va_list ap;
    va_start(ap, ndim);
    int ok = t->ndim == ndim;
    for (int i = 0; i < ndim; i++) {
        int d = va_arg(ap, int);
        ok = ok && t->shape[i] == d;
    }
    va_end(ap);
    return ok;
}

static void free_tensors(mtl_tensor **t, int n)
{
    for (int i = 0; i < n; i++)
        mtl_tensor_free(t[i]);
}

/* ---- gradient checks ------------------------------------------------------------------------ */

static void test_gradients(void)
{
    static const gradcheck_case cases[] = {
        {.layer = "type: 'Flatten'", .n_bottoms = 1, .shapes = {{2, 3, 4, 5}}},
        {.layer = "type: 'Flatten' flatten_param { axis: 2 }", .n_bottoms = 1, .shapes = {{2, 3, 4, 5}}},
        {.layer = "type: 'Flatten' flatten_param { axis: 1 end_axis: -2 }", .n_bottoms = 1, .shapes = {{3, 2, 5, 3}}},
        {.layer = "type: 'Flatten'", .n_bottoms = 1, .shapes = {{3, 5}}},
        {.layer = "type: 'Reshape' reshape_param { shape { dim: 0 dim: -1 } }", .n_bottoms = 1, .shapes = {{2, 3, 4}}},
        {.layer = "type: 'Reshape' reshape_param { shape { dim: -1 dim: 6 } }", .n_bottoms = 1, .shapes = {{4, 3, 2}}},
        {.layer = "type: 'Reshape' reshape_param { axis: 1 num_axes: 1 shape { dim: 2 dim: -1 } }",
         .n_bottoms = 1,
         .shapes = {{2, 6, 5}}},
        {.layer = "type: 'Concat' concat_param { axis: 0 }", .n_bottoms = 2, .shapes = {{2, 3, 4}, {3, 3, 4}}},
        {.layer = "type: 'Concat'", .n_bottoms = 3, .shapes = {{2, 3, 4}, {2, 5, 4}, {2, 1, 4}}},
        {.layer = "type: 'Concat' concat_param { axis: -1 }", .n_bottoms = 2, .shapes = {{2, 3, 1}, {2, 3, 2}}},
        {.layer = "type: 'Concat' concat_param { concat_dim: 2 }", .n_bottoms = 2, .shapes = {{2, 1, 3}, {2, 1, 2}}},
        {.layer = "type: 'Concat'", .n_bottoms = 1, .shapes = {{2, 3}}},
        {.layer = "type: 'Concat'", .n_bottoms = 2, .shapes = {{2, 3}, {2, 2}}, .no_check = {0, 1}},
        {.layer = "type: 'Slice' slice_param { slice_point: 1 slice_point: 3 }",
         .n_bottoms = 1,
         .shapes = {{2, 5, 3}},
         .n_tops = 3},
        {.layer = "type: 'Slice'", .n_bottoms = 1, .shapes = {{2, 6, 3}}, .n_tops = 3},
        {.layer = "type: 'Slice' slice_param { axis: 0 slice_point: 2 }",
         .n_bottoms = 1,
         .shapes = {{5, 3}},
         .n_tops = 2},
        {.layer = "type: 'Slice' slice_param { slice_dim: 2 }", .n_bottoms = 1, .shapes = {{2, 3, 4}}, .n_tops = 2},
        {.layer = "type: 'Slice' slice_param { axis: -1 }", .n_bottoms = 1, .shapes = {{3, 1, 3}}, .n_tops = 1},
        {.layer = "type: 'Split'", .n_bottoms = 1, .shapes = {{2, 3, 2}}, .n_tops = 3},
        {.layer = "type: 'Split'", .n_bottoms = 1, .shapes = {{5}}, .n_tops = 1},
        {.layer = "type: 'Eltwise'", .n_bottoms = 2, .shapes = {{2, 3, 2}, {2, 3, 2}}},
        {.layer = "type: 'Eltwise' eltwise_param { operation: SUM coeff: 1 coeff: -2 coeff: 0.5 }",
         .n_bottoms = 3,
         .shapes = {{2, 3}, {2, 3}, {2, 3}}},
        {.layer = "type: 'Eltwise' eltwise_param { operation: PROD }", .n_bottoms = 2, .shapes = {{3, 4}, {3, 4}}},
        {.layer = "type: 'Eltwise' eltwise_param { operation: PROD }",
         .n_bottoms = 3,
         .shapes = {{2, 2, 3}, {2, 2, 3}, {2, 2, 3}}},
        {.layer = "type: 'Eltwise' eltwise_param { operation: PROD stable_prod_grad: false }",
         .n_bottoms = 3,
         .shapes = {{2, 5}, {2, 5}, {2, 5}},
         .lo = 0.5f,
         .hi = 2.0f},
        {.layer = "type: 'Eltwise' eltwise_param { operation: MAX }", .n_bottoms = 2, .shapes = {{3, 5}, {3, 5}}},
        {.layer = "type: 'Eltwise' eltwise_param { operation: MAX }",
         .n_bottoms = 3,
         .shapes = {{2, 3, 3}, {2, 3, 3}, {2, 3, 3}},
         .seed = 11},
        {.layer = "type: 'Eltwise' eltwise_param { operation: SUM coeff: 3 coeff: -1 }",
         .n_bottoms = 2,
         .shapes = {{4}, {4}},
         .no_check = {1, 0}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char label[256];
        snprintf(label, sizeof(label), "%s (case %zu)", cases[i].layer, i);
        CHECK_MSG(gradcheck_run(label, &cases[i]) == 0, "gradient check failed: %s", label);
    }
}

/* ---- Input and DummyData -------------------------------------------------------------------- */

static void test_input(void)
{
    mtl_error err;
    mtl_tensor *tops[3] = {mtl_tensor_create("a"), mtl_tensor_create("b"), mtl_tensor_create("c")};
    mtl_layer *l = NULL;
    CHECK_OK(gradcheck_build("name: 'in' type: 'Input' input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } }",
                             MTL_PHASE_TRAIN, NULL, 0, tops, 2, &l, &err),
             &err);
    CHECK(l && l->ops->no_backward);
    CHECK(shape_is(tops[0], 4, 2, 3, 4, 5) && shape_is(tops[1], 4, 2, 3, 4, 5));
    /* data comes from outside; forward leaves it alone, and reshape keeps an outside reshape */
    int batch[4] = {7, 3, 4, 5};
    CHECK_OK(mtl_tensor_reshape(tops[0], 4, batch, &err), &err);
    tops[0]->data[7] = 42.0f;
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    CHECK_NEAR(tops[0]->data[7], 42.0f, 0);
    CHECK(shape_is(tops[0], 4, 7, 3, 4, 5));
    gradcheck_free_layer(l);

    CHECK_OK(gradcheck_build("type: 'Input' input_param { shape { dim: 10 dim: 1 dim: 28 dim: 28 } "
                             "shape { dim: 10 } shape { dim: 10 dim: 4 } }",
                             MTL_PHASE_TEST, NULL, 0, tops, 3, &l, &err),
             &err);
    CHECK(shape_is(tops[0], 4, 10, 1, 28, 28) && shape_is(tops[1], 1, 10) && shape_is(tops[2], 2, 10, 4));
    gradcheck_free_layer(l);

    CHECK_FAILS(gradcheck_build("type: 'Input' input_param { shape { dim: 1 } shape { dim: 2 } }", MTL_PHASE_TRAIN,
                                NULL, 0, tops, 3, &l, &err),
                &err, MTL_ERR_CONFIG, "3 tops vs. 2 shapes");
    CHECK_FAILS(gradcheck_build("type: 'Input' input_param { shape { dim: -3 } }", MTL_PHASE_TRAIN, NULL, 0, tops, 1,
                                &l, &err),
                &err, MTL_ERR_CONFIG, "dim -3");
    CHECK_FAILS(gradcheck_build("type: 'Input' input_param { shape { dims: 3 } }", MTL_PHASE_TRAIN, NULL, 0, tops, 1,
                                &l, &err),
                &err, MTL_ERR_CONFIG, "dims");
    free_tensors(tops, 3);
}

static void test_dummy_data(void)
{
    mtl_error err;
    mtl_tensor *tops[2] = {mtl_tensor_create("a"), mtl_tensor_create("b")};
    mtl_layer *l = NULL;

    /* one constant filler for both tops, filled at setup and never again */
    CHECK_OK(gradcheck_build("type: 'DummyData' dummy_data_param { data_filler { type: 'constant' value: 3.5 } "
                             "shape { dim: 2 dim: 3 } shape { dim: 4 } }",
                             MTL_PHASE_TRAIN, NULL, 0, tops, 2, &l, &err),
             &err);
    CHECK(l && l->ops->no_backward);
    CHECK(shape_is(tops[0], 2, 2, 3) && shape_is(tops[1], 1, 4));
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(tops[0]->data[i], 3.5f, 0);
    for (int i = 0; i < 4; i++)
        CHECK_NEAR(tops[1]->data[i], 3.5f, 0);
    tops[1]->data[0] = -1.0f;
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    CHECK_NEAR(tops[1]->data[0], -1.0f, 0); /* constant: not refilled */
    gradcheck_free_layer(l);

    /* no filler: zeros; legacy num/channels/height/width given once for both tops */
    CHECK_OK(gradcheck_build("type: 'DummyData' dummy_data_param { num: 2 channels: 3 height: 1 width: 2 }",
                             MTL_PHASE_TRAIN, NULL, 0, tops, 2, &l, &err),
             &err);
    CHECK(shape_is(tops[0], 4, 2, 3, 1, 2) && shape_is(tops[1], 4, 2, 3, 1, 2));
    for (int i = 0; i < 12; i++)
        CHECK(tops[0]->data[i] == 0.0f && tops[1]->data[i] == 0.0f);
    gradcheck_free_layer(l);

    /* per-top fillers: a uniform one is refilled every forward, the constant one is not */
    CHECK_OK(gradcheck_build("type: 'DummyData' dummy_data_param { "
                             "data_filler { type: 'uniform' min: 2 max: 3 } data_filler { value: 7 } "
                             "num: 4 num: 1 channels: 5 channels: 1 height: 1 width: 1 }",
                             MTL_PHASE_TRAIN, NULL, 0, tops, 2, &l, &err),
             &err);
    CHECK(shape_is(tops[0], 4, 4, 5, 1, 1) && shape_is(tops[1], 4, 1, 1, 1, 1));
    CHECK_NEAR(tops[1]->data[0], 7.0f, 0);
    float first[20];
    memcpy(first, tops[0]->data, sizeof(first));
    int in_range = 1, changed = 0;
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    for (int i = 0; i < 20; i++) {
        in_range = in_range && tops[0]->data[i] >= 2.0f && tops[0]->data[i] < 3.0f && first[i] >= 2.0f;
        changed += tops[0]->data[i] != first[i];
    }
    CHECK(in_range);
    CHECK(changed > 0);
    CHECK_NEAR(tops[1]->data[0], 7.0f, 0);
    gradcheck_free_layer(l);

    CHECK_FAILS(gradcheck_build("type: 'DummyData' dummy_data_param { data_filler { } data_filler { } "
                                "data_filler { } shape { dim: 1 } }",
                                MTL_PHASE_TRAIN, NULL, 0, tops, 2, &l, &err),
                &err, MTL_ERR_CONFIG, "data_filler");
    CHECK_FAILS(gradcheck_build("type: 'DummyData' dummy_data_param { num: 1 shape { dim: 1 } }", MTL_PHASE_TRAIN,
                                NULL, 0, tops, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "not both");
    CHECK_FAILS(gradcheck_build("type: 'DummyData' dummy_data_param { num: 1 channels: 2 height: 3 }",
                                MTL_PHASE_TRAIN, NULL, 0, tops, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "'width'");
    CHECK_FAILS(gradcheck_build("type: 'DummyData'", MTL_PHASE_TRAIN, NULL, 0, tops, 1, &l, &err), &err,
                MTL_ERR_CONFIG, "'shape'");
    CHECK_FAILS(gradcheck_build("type: 'DummyData' dummy_data_param { data_filler { type: 'gausian' } "
                                "shape { dim: 2 } }",
                                MTL_PHASE_TRAIN, NULL, 0, tops, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "gaussian");
    free_tensors(tops, 2);
}

/* ---- Flatten and Reshape -------------------------------------------------------------------- */

static void test_flatten_reshape(void)
{
    mtl_error err;
    float v[24];
    for (int i = 0; i < 24; i++)
        v[i] = (float)i;
    mtl_tensor *b = test_tensor((int[]){2, 3, 4, 0}, v);
    mtl_tensor *top = mtl_tensor_create("top");
    mtl_layer *l = NULL;

    CHECK_OK(gradcheck_build("type: 'Flatten'", MTL_PHASE_TRAIN, &b, 1, &top, 1, &l, &err), &err);
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    CHECK(shape_is(top, 2, 2, 12));
    test_check_values("flatten", top->data, v, 24, 0);
    gradcheck_free_layer(l);

    CHECK_OK(gradcheck_build("type: 'Flatten' flatten_param { axis: 0 end_axis: 1 }", MTL_PHASE_TRAIN, &b, 1, &top,
                             1, &l, &err),
             &err);
    CHECK(shape_is(top, 2, 6, 4));
    gradcheck_free_layer(l);
    CHECK_FAILS(gradcheck_build("type: 'Flatten' flatten_param { axis: 3 }", MTL_PHASE_TRAIN, &b, 1, &top, 1, &l,
                                &err),
                &err, MTL_ERR_CONFIG, "axis 3 is out of range");
    CHECK_FAILS(gradcheck_build("type: 'Flatten' flatten_param { axis: 2 end_axis: 1 }", MTL_PHASE_TRAIN, &b, 1,
                                &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "end_axis");

    /* Reshape: 0 copies the bottom's axis, -1 takes what is left: 2x3x4 -> 2x3x2x2 and 2x12 */
    CHECK_OK(gradcheck_build("type: 'Reshape' reshape_param { shape { dim: 0 dim: 0 dim: 2 dim: -1 } }",
                             MTL_PHASE_TRAIN, &b, 1, &top, 1, &l, &err),
             &err);
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    CHECK(shape_is(top, 4, 2, 3, 2, 2));
    test_check_values("reshape", top->data, v, 24, 0);
    /* backward copies the gradient */
    for (int i = 0; i < 24; i++)
        top->grad[i] = (float)(100 + i);
    if (l)
        l->ops->backward(l);
    for (int i = 0; i < 24; i++)
        CHECK_NEAR(b->grad[i], 100 + i, 0);
    gradcheck_free_layer(l);

    CHECK_OK(gradcheck_build("type: 'Reshape' reshape_param { shape { dim: -1 dim: 12 } }", MTL_PHASE_TRAIN, &b, 1,
                             &top, 1, &l, &err),
             &err);
    CHECK(shape_is(top, 2, 2, 12));
    gradcheck_free_layer(l);
    /* axis 1, num_axes 1 replaces only the 3: 2x3x4 -> 2x3x1x4 */
    CHECK_OK(gradcheck_build("type: 'Reshape' reshape_param { axis: 1 num_axes: 1 shape { dim: -1 dim: 1 } }",
                             MTL_PHASE_TRAIN, &b, 1, &top, 1, &l, &err),
             &err);
    CHECK(shape_is(top, 4, 2, 3, 1, 4));
    gradcheck_free_layer(l);
    /* axis -1 inserts at the end: 2x3x4 -> 2x3x4x1 */
    CHECK_OK(gradcheck_build("type: 'Reshape' reshape_param { axis: -1 num_axes: 0 shape { dim: 1 } }",
                             MTL_PHASE_TRAIN, &b, 1, &top, 1, &l, &err),
             &err);
    CHECK(shape_is(top, 4, 2, 3, 4, 1));
    gradcheck_free_layer(l);

    CHECK_FAILS(gradcheck_build("type: 'Reshape' reshape_param { shape { dim: 5 dim: -1 } }", MTL_PHASE_TRAIN, &b, 1,
                                &top, 1, &l, &err),
                &err, MTL_ERR_SHAPE, "bottom count (24) must be divisible by the product of the other dimensions (5)");
    CHECK_FAILS(gradcheck_build("type: 'Reshape' reshape_param { shape { dim: -1 dim: -1 } }", MTL_PHASE_TRAIN, &b,
                                1, &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "more than one -1");
    CHECK_FAILS(gradcheck_build("type: 'Reshape' reshape_param { shape { dim: 5 dim: 5 } }", MTL_PHASE_TRAIN, &b, 1,
                                &top, 1, &l, &err),
                &err, MTL_ERR_SHAPE, "output count 25 must match input count 24");
    CHECK_FAILS(gradcheck_build("type: 'Reshape' reshape_param { shape { dim: 0 dim: 0 dim: 0 dim: 0 } }",
                                MTL_PHASE_TRAIN, &b, 1, &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "no axis 3 to copy");
    CHECK_FAILS(gradcheck_build("type: 'Reshape' reshape_param { shape { dim: -2 } }", MTL_PHASE_TRAIN, &b, 1, &top,
                                1, &l, &err),
                &err, MTL_ERR_CONFIG, "dim -2");
    CHECK_FAILS(gradcheck_build("type: 'Reshape' reshape_param { axis: 1 num_axes: 3 shape { dim: -1 } }",
                                MTL_PHASE_TRAIN, &b, 1, &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "out of range");
    mtl_tensor_free(b);
    mtl_tensor_free(top);
}

/* ---- Concat, Slice, Split ------------------------------------------------------------------- */

static void test_concat_slice_split(void)
{
    mtl_error err;
    mtl_layer *l = NULL;
    /* a: 2x1x2 = [[ [0 1] ], [ [2 3] ]], b: 2x2x2 = [[ [10 11] [12 13] ], [ [14 15] [16 17] ]] */
    mtl_tensor *bs[2] = {test_tensor((int[]){2, 1, 2, 0}, (float[]){0, 1, 2, 3}),
                         test_tensor((int[]){2, 2, 2, 0}, (float[]){10, 11, 12, 13, 14, 15, 16, 17})};
    mtl_tensor *top = mtl_tensor_create("top");
    CHECK_OK(gradcheck_build("type: 'Concat'", MTL_PHASE_TRAIN, bs, 2, &top, 1, &l, &err), &err);
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    CHECK(shape_is(top, 3, 2, 3, 2));
    test_check_values("concat axis 1", top->data, (float[]){0, 1, 10, 11, 12, 13, 2, 3, 14, 15, 16, 17}, 12, 0);
    for (int i = 0; i < 12; i++)
        top->grad[i] = top->data[i] + 0.5f;
    if (l)
        l->ops->backward(l);
    test_check_values("concat grad a", bs[0]->grad, (float[]){0.5f, 1.5f, 2.5f, 3.5f}, 4, 0);
    test_check_values("concat grad b", bs[1]->grad, (float[]){10.5f, 11.5f, 12.5f, 13.5f, 14.5f, 15.5f, 16.5f, 17.5f}, 8,
                 0);
    gradcheck_free_layer(l);

    CHECK_FAILS(gradcheck_build("type: 'Concat' concat_param { axis: 0 }", MTL_PHASE_TRAIN, bs, 2, &top, 1, &l, &err),
                &err, MTL_ERR_SHAPE, "bottom 1 has shape 2x2x2, bottom 0 has 2x1x2");
    CHECK_FAILS(gradcheck_build("type: 'Concat' concat_param { axis: 1 concat_dim: 1 }", MTL_PHASE_TRAIN, bs, 2, &top,
                                1, &l, &err),
                &err, MTL_ERR_CONFIG, "not both");
    CHECK_FAILS(gradcheck_build("type: 'Concat' concat_param { concat_dim: 3 }", MTL_PHASE_TRAIN, bs, 2, &top, 1, &l,
                                &err),
                &err, MTL_ERR_CONFIG, "concat_dim 3 is out of range");
    mtl_tensor *flat = test_tensor((int[]){2, 2, 0}, NULL);
    mtl_tensor *mixed[2] = {bs[0], flat};
    CHECK_FAILS(gradcheck_build("type: 'Concat'", MTL_PHASE_TRAIN, mixed, 2, &top, 1, &l, &err), &err, MTL_ERR_SHAPE,
                "bottom 1 has shape 2x2");
    mtl_tensor_free(flat);

    /* Slice b (2x2x2) back apart along axis 2 with a slice point, and along axis 1 equally */
    mtl_tensor *tops[3] = {mtl_tensor_create("t0"), mtl_tensor_create("t1"), mtl_tensor_create("t2")};
    CHECK_OK(gradcheck_build("type: 'Slice' slice_param { axis: 2 slice_point: 1 }", MTL_PHASE_TRAIN, &bs[1], 1, tops,
                             2, &l, &err),
             &err);
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    CHECK(shape_is(tops[0], 3, 2, 2, 1) && shape_is(tops[1], 3, 2, 2, 1));
    test_check_values("slice 0", tops[0]->data, (float[]){10, 12, 14, 16}, 4, 0);
    test_check_values("slice 1", tops[1]->data, (float[]){11, 13, 15, 17}, 4, 0);
    gradcheck_free_layer(l);
    CHECK_OK(gradcheck_build("type: 'Slice'", MTL_PHASE_TRAIN, &bs[1], 1, tops, 2, &l, &err), &err);
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    test_check_values("equal slice 0", tops[0]->data, (float[]){10, 11, 14, 15}, 4, 0);
    test_check_values("equal slice 1", tops[1]->data, (float[]){12, 13, 16, 17}, 4, 0);
    for (int i = 0; i < 4; i++) {
        tops[0]->grad[i] = (float)i;
        tops[1]->grad[i] = (float)(10 + i);
    }
    if (l)
        l->ops->backward(l);
    test_check_values("slice grad", bs[1]->grad, (float[]){0, 1, 10, 11, 2, 3, 12, 13}, 8, 0);
    gradcheck_free_layer(l);

    mtl_tensor *wide = test_tensor((int[]){2, 5, 0}, NULL);
    CHECK_FAILS(gradcheck_build("type: 'Slice' slice_param { slice_point: 3 slice_point: 2 }", MTL_PHASE_TRAIN, &wide,
                                1, tops, 3, &l, &err),
                &err, MTL_ERR_CONFIG, "slice_point 2 (number 1) must be greater than the previous one (3)");
    CHECK_FAILS(gradcheck_build("type: 'Slice' slice_param { slice_point: 0 }", MTL_PHASE_TRAIN, &wide, 1, tops, 2,
                                &l, &err),
                &err, MTL_ERR_CONFIG, "slice_point 0 (number 0) must be greater");
    CHECK_FAILS(gradcheck_build("type: 'Slice' slice_param { slice_point: 2 slice_point: 5 }", MTL_PHASE_TRAIN, &wide,
                                1, tops, 3, &l, &err),
                &err, MTL_ERR_CONFIG, "slice_point 5 is out of range for slice axis 1 of size 5");
    CHECK_FAILS(gradcheck_build("type: 'Slice' slice_param { slice_point: 2 }", MTL_PHASE_TRAIN, &wide, 1, tops, 3,
                                &l, &err),
                &err, MTL_ERR_CONFIG, "1 slice_point values for 3 tops");
    CHECK_FAILS(gradcheck_build("type: 'Slice'", MTL_PHASE_TRAIN, &wide, 1, tops, 2, &l, &err), &err, MTL_ERR_SHAPE,
                "2 tops do not evenly divide the slice axis 1 of size 5");
    CHECK_FAILS(gradcheck_build("type: 'Slice' slice_param { axis: 0 slice_dim: 0 }", MTL_PHASE_TRAIN, &wide, 1, tops,
                                1, &l, &err),
                &err, MTL_ERR_CONFIG, "not both");
    mtl_tensor_free(wide);

    /* Split: every top a copy; the bottom's gradient is the sum of the tops' */
    CHECK_OK(gradcheck_build("type: 'Split'", MTL_PHASE_TRAIN, bs, 1, tops, 3, &l, &err), &err);
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    for (int t = 0; t < 3; t++) {
        CHECK(shape_is(tops[t], 3, 2, 1, 2));
        test_check_values("split", tops[t]->data, bs[0]->data, 4, 0);
        for (int i = 0; i < 4; i++)
            tops[t]->grad[i] = (float)((t + 1) * (i + 1));
    }
    if (l)
        l->ops->backward(l);
    test_check_values("split grad", bs[0]->grad, (float[]){6, 12, 18, 24}, 4, 0);
    gradcheck_free_layer(l);

    free_tensors(tops, 3);
    free_tensors(bs, 2);
    mtl_tensor_free(top);
}

/* ---- Eltwise and Silence -------------------------------------------------------------------- */

static void test_eltwise_silence(void)
{
    mtl_error err;
    mtl_layer *l = NULL;
    mtl_tensor *bs[3] = {test_tensor((int[]){4, 0}, (float[]){1, -2, 3, 0}),
                         test_tensor((int[]){4, 0}, (float[]){2, 5, 3, -1}),
                         test_tensor((int[]){4, 0}, (float[]){0.5f, 5, -4, 2})};
    mtl_tensor *top = mtl_tensor_create("top");

    /* SUM with coeffs 1, -1, 2: [1-2+1, -2-5+10, 3-3-8, 0+1+4] */
    CHECK_OK(gradcheck_build("type: 'Eltwise' eltwise_param { coeff: 1 coeff: -1 coeff: 2 }", MTL_PHASE_TRAIN, bs, 3,
                             &top, 1, &l, &err),
             &err);
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    test_check_values("sum", top->data, (float[]){0, 3, -8, 5}, 4, 1e-6);
    gradcheck_free_layer(l);

    /* PROD: [1*2*0.5, -2*5*5, 3*3*-4, 0]; d/d bottom 0 = product of the others (stable) */
    CHECK_OK(gradcheck_build("type: 'Eltwise' eltwise_param { operation: PROD }", MTL_PHASE_TRAIN, bs, 3, &top, 1, &l,
                             &err),
             &err);
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    test_check_values("prod", top->data, (float[]){1, -50, -36, 0}, 4, 1e-6);
    for (int i = 0; i < 4; i++)
        top->grad[i] = 1.0f;
    if (l)
        l->ops->backward(l);
    test_check_values("prod grad with a zero", bs[0]->grad, (float[]){1, 25, -12, -2}, 4, 1e-6);
    gradcheck_free_layer(l);

    /* MAX: [2 (b1), 5 (b1 wins the tie with b2: later bottoms must be strictly greater), 3 (tie b0/b1: b1), 2 (b2)] */
    CHECK_OK(gradcheck_build("type: 'Eltwise' eltwise_param { operation: MAX }", MTL_PHASE_TRAIN, bs, 3, &top, 1, &l,
                             &err),
             &err);
    if (l)
        CHECK_OK(test_forward(l, &err), &err);
    test_check_values("max", top->data, (float[]){2, 5, 3, 2}, 4, 0);
    for (int i = 0; i < 4; i++)
        top->grad[i] = (float)(i + 1);
    if (l)
        l->ops->backward(l);
    test_check_values("max grad 0", bs[0]->grad, (float[]){0, 0, 0, 0}, 4, 0);
    test_check_values("max grad 1", bs[1]->grad, (float[]){1, 2, 3, 0}, 4, 0);
    test_check_values("max grad 2", bs[2]->grad, (float[]){0, 0, 0, 4}, 4, 0);
    gradcheck_free_layer(l);

    CHECK_FAILS(gradcheck_build("type: 'Eltwise' eltwise_param { coeff: 1 coeff: 2 }", MTL_PHASE_TRAIN, bs, 3, &top,
                                1, &l, &err),
                &err, MTL_ERR_CONFIG, "2 coeff values for 3 bottoms");
    CHECK_FAILS(gradcheck_build("type: 'Eltwise' eltwise_param { operation: PROD coeff: 1 coeff: 2 coeff: 3 }",
                                MTL_PHASE_TRAIN, bs, 3, &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "only for operation SUM");
    CHECK_FAILS(gradcheck_build("type: 'Eltwise' eltwise_param { operation: AVG }", MTL_PHASE_TRAIN, bs, 3, &top, 1,
                                &l, &err),
                &err, MTL_ERR_CONFIG, "PROD, SUM, MAX");
    mtl_tensor *other = test_tensor((int[]){2, 2, 0}, NULL);
    mtl_tensor *mixed[2] = {bs[0], other};
    CHECK_FAILS(gradcheck_build("type: 'Eltwise'", MTL_PHASE_TRAIN, mixed, 2, &top, 1, &l, &err), &err, MTL_ERR_SHAPE,
                "bottom 1 has shape 2x2, bottom 0 has 4");
    mtl_tensor_free(other);

    /* Silence: no tops, zero gradients */
    CHECK_OK(gradcheck_build("type: 'Silence'", MTL_PHASE_TRAIN, bs, 2, NULL, 0, &l, &err), &err);
    for (int i = 0; i < 4; i++)
        bs[0]->grad[i] = bs[1]->grad[i] = 9.0f;
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        l->propagate_down[1] = 0;
        l->ops->backward(l);
    }
    test_check_values("silence grad", bs[0]->grad, (float[]){0, 0, 0, 0}, 4, 0);
    test_check_values("silence skipped grad", bs[1]->grad, (float[]){9, 9, 9, 9}, 4, 0);
    gradcheck_free_layer(l);
    CHECK_FAILS(gradcheck_build("type: 'Silence'", MTL_PHASE_TRAIN, bs, 1, &top, 1, &l, &err), &err, MTL_ERR_CONFIG,
                "top");

    free_tensors(bs, 3);
    mtl_tensor_free(top);
}

/* Blobs big enough that the elementwise loops run on threads: same results as the plain formulas. */
static void test_large(void)
{
    mtl_error err;
    mtl_layer *l = NULL;
    enum { N = 2, C = 20011 };
    mtl_tensor *bs[2] = {test_tensor((int[]){N, C, 0}, NULL), test_tensor((int[]){N, C, 0}, NULL)};
    gradcheck_fill(bs[0], -1, 1, 3);
    gradcheck_fill(bs[1], -1, 1, 4);
    mtl_tensor *tops[2] = {mtl_tensor_create("t0"), mtl_tensor_create("t1")};
    int bad = 0;

    CHECK_OK(gradcheck_build("type: 'Eltwise' eltwise_param { operation: MAX }", MTL_PHASE_TRAIN, bs, 2, tops, 1, &l,
                             &err),
             &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        for (int i = 0; i < N * C; i++) {
            tops[0]->grad[i] = (float)i;
            bad += tops[0]->data[i] != fmaxf(bs[0]->data[i], bs[1]->data[i]);
        }
        l->ops->backward(l);
        for (int i = 0; i < N * C; i++) {
            int first = bs[0]->data[i] > bs[1]->data[i];
            bad += bs[0]->grad[i] != (first ? (float)i : 0.0f) || bs[1]->grad[i] != (first ? 0.0f : (float)i);
        }
    }
    gradcheck_free_layer(l);
    CHECK_INT(bad, 0);

    CHECK_OK(gradcheck_build("type: 'Concat'", MTL_PHASE_TRAIN, bs, 2, tops, 1, &l, &err), &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        CHECK(tops[0]->ndim == 2 && tops[0]->shape[1] == 2 * C);
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++)
                bad += tops[0]->data[n * 2 * C + c] != bs[0]->data[n * C + c] ||
                       tops[0]->data[n * 2 * C + C + c] != bs[1]->data[n * C + c];
    }
    gradcheck_free_layer(l);
    CHECK_INT(bad, 0);

    CHECK_OK(gradcheck_build("type: 'Split'", MTL_PHASE_TRAIN, bs, 1, tops, 2, &l, &err), &err);
    if (l) {
        CHECK_OK(test_forward(l, &err), &err);
        for (int i = 0; i < N * C; i++) {
            tops[0]->grad[i] = (float)i;
            tops[1]->grad[i] = 0.5f;
        }
        l->ops->backward(l);
        for (int i = 0; i < N * C; i++)
            bad += bs[0]->grad[i] != (float)i + 0.5f || tops[1]->data[i] != bs[0]->data[i];
    }
    gradcheck_free_layer(l);
    CHECK_INT(bad, 0);
    free_tensors(tops, 2);
    free_tensors(bs, 2);
}

int main(void)
{
    test_gradients();
    test_input();
    test_dummy_data();
    test_flatten_reshape();
    test_concat_slice_split();
    test_eltwise_silence();
    test_large();
    return check_finish();
}
