/* Tests for DetectionOutput (Faster R-CNN's test-time post-processing) on hand-made RoIs: NMS within
 * a class, the score threshold, clipping to each image, max_per_image across classes, undoing the
 * target normalisation, class-agnostic deltas, several images, empty inputs, and config and shape
 * errors. The layer has no backward, so there is no gradient check. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gradcheck.h"
#include "test_util.h"

/* The four bottoms of one case: rois (R, 5), cls_prob (R, classes), bbox_pred (R, pred_cols),
 * im_info (N, 3). NULL values leave zeros. */
typedef struct det_case {
    int r, classes, pred_cols, images;
    const float *rois, *prob, *pred, *info;
} det_case;

static void make_bottoms(const det_case *c, mtl_tensor **b)
{
    /* An empty tensor has no storage to copy into. */
    b[0] = test_tensor_n(2, (const int[]){c->r, 5}, c->r ? c->rois : NULL);
    b[1] = test_tensor_n(2, (const int[]){c->r, c->classes}, c->r ? c->prob : NULL);
    b[2] = test_tensor_n(2, (const int[]){c->r, c->pred_cols}, c->r ? c->pred : NULL);
    b[3] = test_tensor_n(2, (const int[]){c->images, 3}, c->images ? c->info : NULL);
    if (!c->pred)
        mtl_tensor_zero_data(b[2]);
}

static void free_all(mtl_tensor **t, int n)
{
    for (int i = 0; i < n; i++)
        mtl_tensor_free(t[i]);
}

/* Builds the layer, runs reshape + forward and compares the top with `want` (n_want rows of 7). */
static void check_detections(const char *what, const char *text, const det_case *c, const float *want, int n_want)
{
    mtl_error err = {0};
    mtl_tensor *b[4], *top = mtl_tensor_create("detections");
    make_bottoms(c, b);
    mtl_layer *l = NULL;
    CHECK_OK(gradcheck_build(text, MTL_PHASE_TEST, b, 4, &top, 1, &l, &err), &err);
    if (l) {
        CHECK(l->ops->no_backward);
        mtl_status st = l->ops->reshape(l, &err);
        if (st == MTL_OK)
            st = l->ops->forward(l, &err);
        CHECK_MSG(st == MTL_OK, "%s: forward failed: %s", what, err.message);
        CHECK_MSG(top->ndim == 2 && top->shape[0] == n_want && top->shape[1] == 7, "%s: top is %dx%d, expected %dx7",
                  what, top->ndim > 0 ? top->shape[0] : -1, top->ndim > 1 ? top->shape[1] : -1, n_want);
        if (st == MTL_OK && top->ndim == 2 && top->shape[0] == n_want)
            for (int i = 0; i < 7 * n_want; i++)
                CHECK_MSG(fabsf(top->data[i] - want[i]) <= 1e-4f, "%s: row %d column %d is %g, expected %g", what,
                          i / 7, i % 7, top->data[i], want[i]);
    }
    gradcheck_free_layer(l);
    free_all(b, 4);
    mtl_tensor_free(top);
}

/* Three RoIs of one image (zero deltas, so the boxes are the RoIs): r0 and r1 overlap (IoU
 * 38 * 38 / (1600 + 1600 - 1444) = 0.822), r2 is apart; r3 is mostly background and r4's best
 * foreground score equals the threshold exactly: both are dropped. */
static const float three_rois[5 * 5] = {
    0, 10, 10, 50, 50,  /* r0 */
    0, 12, 12, 52, 52,  /* r1 */
    0, 100, 20, 140, 80, /* r2 */
    0, 60, 60, 90, 90,  /* r3 */
    0, 150, 0, 190, 40, /* r4 */
};
static const float three_prob[5 * 3] = {
    0.17f, 0.80f, 0.03f, /* r0 */
    0.36f, 0.60f, 0.04f, /* r1 */
    0.28f, 0.02f, 0.70f, /* r2 */
    0.96f, 0.04f, 0.00f, /* r3 */
    0.95f, 0.00f, 0.05f, /* r4 */
};

static void test_nms_and_threshold(void)
{
    const float info[3] = {100, 200, 1};
    det_case c = {.r = 5, .classes = 3, .pred_cols = 12, .images = 1, .rois = three_rois, .prob = three_prob,
                  .info = info};
    const float want[2 * 7] = {
        0, 10, 10, 50, 50, 0.80f, 1,  /* r1 suppressed by r0 (IoU 0.822 > 0.3) */
        0, 100, 20, 140, 80, 0.70f, 2,
    };
    check_detections("overlap suppressed", "type: 'DetectionOutput' detection_output_param { num_classes: 3 }", &c,
                     want, 2);
    /* nms_threshold 0.9 keeps both overlapping boxes. */
    const float want_loose[3 * 7] = {
        0, 10, 10, 50, 50, 0.80f, 1,
        0, 100, 20, 140, 80, 0.70f, 2,
        0, 12, 12, 52, 52, 0.60f, 1,
    };
    check_detections("nms_threshold 0.9",
                     "type: 'DetectionOutput' detection_output_param { num_classes: 3 nms_threshold: 0.9 }", &c,
                     want_loose, 3);
    /* A lower score threshold lets the small scores in. Class 1: r0 0.8 (suppresses r1), r3 0.04,
     * r2 0.02; class 2: r2 0.7, r4 0.05, r1 0.04 (suppresses r0's 0.03). The tie at 0.04 goes to
     * the lower class. */
    const float want_low[6 * 7] = {
        0, 10, 10, 50, 50, 0.80f, 1,
        0, 100, 20, 140, 80, 0.70f, 2,
        0, 150, 0, 190, 40, 0.05f, 2,
        0, 60, 60, 90, 90, 0.04f, 1,
        0, 12, 12, 52, 52, 0.04f, 2,
        0, 100, 20, 140, 80, 0.02f, 1,
    };
    check_detections("score_threshold 0.01",
                     "type: 'DetectionOutput' detection_output_param { num_classes: 3 score_threshold: 0.01 }", &c,
                     want_low, 6);
}

static void test_normalisation(void)
{
    /* RoI w 10 h 20 centre (5, 10); the target box [2, 4, 22, 24] has raw deltas (0.7, 0.2, log 2, 0).
     * Class 0's deltas are garbage: the background is never decoded. */
    const float rois[5] = {0, 0, 0, 10, 20}, prob[2] = {0.1f, 0.9f}, info[3] = {100, 100, 1};
    const float l2 = logf(2.0f);
    const float pred_default[8] = {99, -99, 99, -99, 7, 2, l2 / 0.2f, 0};     /* stds 0.1 0.1 0.2 0.2 */
    const float pred_means[8] = {99, -99, 99, -99, 6, 2, l2 / 0.2f, 0};       /* means 0.1 0 0 0 */
    const float pred_raw[8] = {99, -99, 99, -99, 0.7f, 0.2f, l2, 0};          /* means 0, stds 1 */
    const float want[7] = {0, 2, 4, 22, 24, 0.9f, 1};
    det_case c = {.r = 1, .classes = 2, .pred_cols = 8, .images = 1, .rois = rois, .prob = prob,
                  .pred = pred_default, .info = info};
    check_detections("default stds", "type: 'DetectionOutput' detection_output_param { num_classes: 2 }", &c, want, 1);
    c.pred = pred_means;
    check_detections("means and stds",
                     "type: 'DetectionOutput' detection_output_param { num_classes: 2 bbox_normalize_means: 0.1 "
                     "bbox_normalize_means: 0 bbox_normalize_means: 0 bbox_normalize_means: 0 }",
                     &c, want, 1);
    c.pred = pred_raw;
    check_detections("unnormalised (py-faster-rcnn weights)",
                     "type: 'DetectionOutput' detection_output_param { num_classes: 2 "
                     "bbox_normalize_stds: 1 bbox_normalize_stds: 1 bbox_normalize_stds: 1 bbox_normalize_stds: 1 }",
                     &c, want, 1);
    /* Class-agnostic deltas: one set of 4 for every class. */
    c.pred = pred_default + 4;
    c.pred_cols = 4;
    check_detections("class-agnostic", "type: 'DetectionOutput' detection_output_param { num_classes: 2 }", &c, want,
                     1);
}

static void test_clipping(void)
{
    /* RoI w 20 h 20 centre (30, 20) in a 40 wide, 30 high image; raw deltas (0.5, -0.5, 0, log 2)
     * give centre (40, 10), w 20, h 40: [30, -10, 50, 30], clipped to [30, 0, 40, 30]. */
    const float rois[5] = {0, 20, 10, 40, 30}, prob[2] = {0.4f, 0.6f}, info[3] = {30, 40, 1};
    const float pred[8] = {0, 0, 0, 0, 5, -5, 0, logf(2.0f) / 0.2f};
    const float want[7] = {0, 30, 0, 40, 30, 0.6f, 1};
    det_case c = {.r = 1, .classes = 2, .pred_cols = 8, .images = 1, .rois = rois, .prob = prob, .pred = pred,
                  .info = info};
    check_detections("clip", "type: 'DetectionOutput' detection_output_param { num_classes: 2 }", &c, want, 1);
}

static void test_max_per_image(void)
{
    /* Three disjoint RoIs, two classes: candidates r1c1 .7, r2c2 .6, r0c1 .5, r0c2 .4, then the tie at
     * 0.1 (r2c1 and r1c2) ordered by class. */
    const float rois[3 * 5] = {0, 0, 0, 10, 10, 0, 20, 0, 30, 10, 0, 40, 0, 50, 10};
    const float prob[3 * 3] = {0.1f, 0.5f, 0.4f, 0.2f, 0.7f, 0.1f, 0.3f, 0.1f, 0.6f};
    const float info[3] = {10, 50, 1};
    det_case c = {.r = 3, .classes = 3, .pred_cols = 12, .images = 1, .rois = rois, .prob = prob, .info = info};
    const float want[6 * 7] = {
        0, 20, 0, 30, 10, 0.7f, 1,
        0, 40, 0, 50, 10, 0.6f, 2,
        0, 0, 0, 10, 10, 0.5f, 1,
        0, 0, 0, 10, 10, 0.4f, 2,
        0, 40, 0, 50, 10, 0.1f, 1,
        0, 20, 0, 30, 10, 0.1f, 2,
    };
    check_detections("max_per_image 3",
                     "type: 'DetectionOutput' detection_output_param { num_classes: 3 max_per_image: 3 }", &c, want,
                     3);
    check_detections("max_per_image 0 (no limit)",
                     "type: 'DetectionOutput' detection_output_param { num_classes: 3 max_per_image: 0 }", &c, want,
                     6);
    check_detections("max_per_image 1",
                     "type: 'DetectionOutput' detection_output_param { num_classes: 3 max_per_image: 1 }", &c, want,
                     1);
}

static void test_several_images(void)
{
    /* RoIs of two images interleaved; image 1 is 25 wide and 5 high, so its boxes are clipped to it. */
    const float rois[4 * 5] = {1, 0, 0, 10, 10, 0, 0, 0, 10, 10, 1, 20, 0, 30, 10, 0, 20, 0, 30, 10};
    const float prob[4 * 2] = {0.1f, 0.9f, 0.5f, 0.5f, 0.3f, 0.7f, 0.2f, 0.8f};
    const float info[2 * 3] = {50, 50, 1, 5, 25, 1};
    det_case c = {.r = 4, .classes = 2, .pred_cols = 8, .images = 2, .rois = rois, .prob = prob, .info = info};
    const float want[4 * 7] = {
        0, 20, 0, 30, 10, 0.8f, 1,
        0, 0, 0, 10, 10, 0.5f, 1,
        1, 0, 0, 10, 5, 0.9f, 1,
        1, 20, 0, 25, 5, 0.7f, 1,
    };
    check_detections("two images", "type: 'DetectionOutput' detection_output_param { num_classes: 2 }", &c, want, 4);
    const float want_one[2 * 7] = {
        0, 20, 0, 30, 10, 0.8f, 1,
        1, 0, 0, 10, 5, 0.9f, 1,
    };
    check_detections("two images, one each",
                     "type: 'DetectionOutput' detection_output_param { num_classes: 2 max_per_image: 1 }", &c,
                     want_one, 2);
    /* An image without RoIs gives no rows. */
    c.images = 3;
    const float info3[3 * 3] = {50, 50, 1, 5, 25, 1, 8, 8, 1};
    c.info = info3;
    check_detections("an image without RoIs", "type: 'DetectionOutput' detection_output_param { num_classes: 2 }", &c,
                     want, 4);
}

static void test_empty(void)
{
    const float info[3] = {100, 100, 1};
    det_case c = {.r = 0, .classes = 3, .pred_cols = 12, .images = 1, .info = info};
    check_detections("no RoIs", "type: 'DetectionOutput' detection_output_param { num_classes: 3 }", &c, NULL, 0);
    c.images = 0;
    c.pred_cols = 4;
    check_detections("no images", "type: 'DetectionOutput' detection_output_param { num_classes: 3 }", &c, NULL, 0);
    /* Every RoI below the threshold. */
    const float rois[5] = {0, 1, 1, 5, 5}, prob[3] = {0.9f, 0.05f, 0.05f};
    det_case low = {.r = 1, .classes = 3, .pred_cols = 12, .images = 1, .rois = rois, .prob = prob, .info = info};
    check_detections("all below threshold", "type: 'DetectionOutput' detection_output_param { num_classes: 3 }", &low,
                     NULL, 0);
}

/* One layer over changing batch sizes (scratch grows, the top follows): 5 RoIs, then none, then 5. */
static void test_reuse(void)
{
    mtl_error err = {0};
    const float info[3] = {100, 200, 1};
    det_case c = {.r = 5, .classes = 3, .pred_cols = 12, .images = 1, .rois = three_rois, .prob = three_prob,
                  .info = info};
    mtl_tensor *b[4], *top = mtl_tensor_create("detections");
    make_bottoms(&c, b);
    mtl_layer *l = NULL;
    CHECK_OK(gradcheck_build("type: 'DetectionOutput' detection_output_param { num_classes: 3 }", MTL_PHASE_TEST, b,
                             4, &top, 1, &l, &err),
             &err);
    if (l) {
        const int sizes[3] = {5, 0, 5};
        for (int k = 0; k < 3; k++) {
            for (int i = 0; i < 3; i++) {
                int cols = i == 0 ? 5 : i == 1 ? 3 : 12;
                CHECK_OK(mtl_tensor_reshape(b[i], 2, (const int[]){sizes[k], cols}, &err), &err);
            }
            memcpy(b[0]->data, three_rois, (size_t)b[0]->count * sizeof(float));
            memcpy(b[1]->data, three_prob, (size_t)b[1]->count * sizeof(float));
            mtl_tensor_zero_data(b[2]);
            CHECK_OK(l->ops->reshape(l, &err), &err);
            CHECK_OK(l->ops->forward(l, &err), &err);
            CHECK_INT(top->shape[0], sizes[k] ? 2 : 0);
            CHECK_INT(top->shape[1], 7);
        }
        CHECK_NEAR(top->data[5], 0.8, 1e-6);
        CHECK_NEAR(top->data[7 + 5], 0.7, 1e-6);
    }
    gradcheck_free_layer(l);
    free_all(b, 4);
    mtl_tensor_free(top);
}

/* Building the layer over c's bottoms must fail with `status` and a message containing needle. */
static void check_build_fails(const char *text, const det_case *c, mtl_status status, const char *needle)
{
    mtl_error err = {0};
    mtl_tensor *b[4], *top = mtl_tensor_create("detections");
    make_bottoms(c, b);
    mtl_layer *l = NULL;
    CHECK_FAILS(gradcheck_build(text, MTL_PHASE_TEST, b, 4, &top, 1, &l, &err), &err, status, needle);
    gradcheck_free_layer(l);
    free_all(b, 4);
    mtl_tensor_free(top);
}

/* The layer builds, and forward fails with status and needle. */
static void check_forward_fails(const char *text, const det_case *c, mtl_status status, const char *needle)
{
    mtl_error err = {0};
    mtl_tensor *b[4], *top = mtl_tensor_create("detections");
    make_bottoms(c, b);
    mtl_layer *l = NULL;
    CHECK_OK(gradcheck_build(text, MTL_PHASE_TEST, b, 4, &top, 1, &l, &err), &err);
    if (l)
        CHECK_FAILS(l->ops->forward(l, &err), &err, status, needle);
    gradcheck_free_layer(l);
    free_all(b, 4);
    mtl_tensor_free(top);
}

static void test_errors(void)
{
    const char *ok = "type: 'DetectionOutput' detection_output_param { num_classes: 3 }";
    const float info[3] = {100, 100, 1};
    det_case c = {.r = 2, .classes = 3, .pred_cols = 12, .images = 1, .info = info};

    /* config */
    check_build_fails("type: 'DetectionOutput'", &c, MTL_ERR_CONFIG, "needs num_classes");
    check_build_fails("type: 'DetectionOutput' detection_output_param { num_classes: 1 }", &c, MTL_ERR_CONFIG,
                      "num_classes");
    check_build_fails("type: 'DetectionOutput' detection_output_param { num_classes: 3 bbox_normalize_stds: 0.1 "
                      "bbox_normalize_stds: 0.1 bbox_normalize_stds: 0.2 }",
                      &c, MTL_ERR_CONFIG, "bbox_normalize_stds has 3 values");
    check_build_fails("type: 'DetectionOutput' detection_output_param { num_classes: 3 bbox_normalize_stds: 0.1 "
                      "bbox_normalize_stds: 0 bbox_normalize_stds: 0.2 bbox_normalize_stds: 0.2 }",
                      &c, MTL_ERR_CONFIG, "must be > 0");
    check_build_fails("type: 'DetectionOutput' detection_output_param { num_classes: 3 bbox_normalize_means: 1 }", &c,
                      MTL_ERR_CONFIG, "bbox_normalize_means has 1 values");
    check_build_fails("type: 'DetectionOutput' detection_output_param { num_classes: 3 nms_threshold: 1.5 }", &c,
                      MTL_ERR_CONFIG, "nms_threshold");
    check_build_fails("type: 'DetectionOutput' detection_output_param { num_classes: 3 max_per_image: -1 }", &c,
                      MTL_ERR_CONFIG, "max_per_image");
    check_build_fails("type: 'DetectionOutput' detection_output_param { num_classes: 3 nms_thresh: 0.3 }", &c,
                      MTL_ERR_CONFIG, "nms_thresh");

    /* shapes */
    check_build_fails("type: 'DetectionOutput' detection_output_param { num_classes: 4 }", &c, MTL_ERR_SHAPE,
                      "num_classes is 4");
    det_case bad = c;
    bad.pred_cols = 8;
    check_build_fails(ok, &bad, MTL_ERR_SHAPE, "bbox_pred (bottom 2, 2x8) has 8 columns");
    bad = c;
    bad.images = 0;
    check_forward_fails(ok, &bad, MTL_ERR_SHAPE, "RoI 0 has batch index 0, but im_info (bottom 3) describes 0 images");
    {
        mtl_error err = {0};
        mtl_tensor *b[4], *top = mtl_tensor_create("detections");
        make_bottoms(&c, b);
        mtl_layer *l = NULL;
        /* rois with 4 columns */
        CHECK_OK(mtl_tensor_reshape(b[0], 2, (const int[]){2, 4}, &err), &err);
        CHECK_FAILS(gradcheck_build(ok, MTL_PHASE_TEST, b, 4, &top, 1, &l, &err), &err, MTL_ERR_SHAPE,
                    "rois (bottom 0) are 2x4");
        gradcheck_free_layer(l);
        l = NULL;
        /* cls_prob with a different row count */
        CHECK_OK(mtl_tensor_reshape(b[0], 2, (const int[]){2, 5}, &err), &err);
        CHECK_OK(mtl_tensor_reshape(b[1], 2, (const int[]){3, 3}, &err), &err);
        CHECK_FAILS(gradcheck_build(ok, MTL_PHASE_TEST, b, 4, &top, 1, &l, &err), &err, MTL_ERR_SHAPE,
                    "cls_prob (bottom 1, 3x3) must have one row per RoI");
        gradcheck_free_layer(l);
        l = NULL;
        /* bbox_pred with a different row count */
        CHECK_OK(mtl_tensor_reshape(b[1], 2, (const int[]){2, 3}, &err), &err);
        CHECK_OK(mtl_tensor_reshape(b[2], 2, (const int[]){1, 12}, &err), &err);
        CHECK_FAILS(gradcheck_build(ok, MTL_PHASE_TEST, b, 4, &top, 1, &l, &err), &err, MTL_ERR_SHAPE,
                    "bbox_pred (bottom 2, 1x12) must have one row per RoI");
        gradcheck_free_layer(l);
        l = NULL;
        /* im_info with 2 columns */
        CHECK_OK(mtl_tensor_reshape(b[2], 2, (const int[]){2, 12}, &err), &err);
        CHECK_OK(mtl_tensor_reshape(b[3], 2, (const int[]){1, 2}, &err), &err);
        CHECK_FAILS(gradcheck_build(ok, MTL_PHASE_TEST, b, 4, &top, 1, &l, &err), &err, MTL_ERR_SHAPE,
                    "im_info (bottom 3) is 1x2");
        gradcheck_free_layer(l);
        free_all(b, 4);
        mtl_tensor_free(top);
    }

    /* data: batch indices out of range or fractional, image sizes that are not positive */
    const float rois_far[2 * 5] = {0, 1, 1, 5, 5, 1, 1, 1, 5, 5};
    det_case far = {.r = 2, .classes = 3, .pred_cols = 12, .images = 1, .rois = rois_far, .info = info};
    check_forward_fails(ok, &far, MTL_ERR_SHAPE, "RoI 1 has batch index 1, but im_info (bottom 3) describes 1 image");
    const float rois_frac[5] = {0.5f, 1, 1, 5, 5};
    det_case frac = {.r = 1, .classes = 3, .pred_cols = 12, .images = 1, .rois = rois_frac, .info = info};
    check_forward_fails(ok, &frac, MTL_ERR_SHAPE, "batch index 0.5");
    const float rois_neg[5] = {-1, 1, 1, 5, 5};
    frac.rois = rois_neg;
    check_forward_fails(ok, &frac, MTL_ERR_SHAPE, "batch index -1");
    const float info_zero[3] = {0, 100, 1};
    det_case zero = {.r = 1, .classes = 3, .pred_cols = 12, .images = 1, .rois = rois_far, .info = info_zero};
    check_forward_fails(ok, &zero, MTL_ERR_SHAPE, "im_info row 0 gives image height 0");
}

int main(void)
{
    test_nms_and_threshold();
    test_normalisation();
    test_clipping();
    test_max_per_image();
    test_several_images();
    test_empty();
    test_reuse();
    test_errors();
    return check_finish();
}
