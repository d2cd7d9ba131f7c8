/* Tests for the detection metrics (src/detection/evaluate.c) on cases worked out by hand in the
 * comments: perfect detections, a known precision/recall sequence, duplicates, IoU thresholds
 * between 0.5 and 0.95, VOC's and COCO's different matching, crowd regions, classes without ground
 * truth, images without detections, COCO's 100-detection limit, and bad inputs. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "detection/evaluate.h"

#define N_T MTL_DET_COCO_N_IOUS

static mtl_det_gt gt(int64_t image, int class_id, float x1, float y1, float x2, float y2, int crowd)
{
    return (mtl_det_gt){.image = image, .class_id = class_id, .box = {x1, y1, x2, y2}, .crowd = crowd};
}

static mtl_det_result det(int64_t image, int class_id, float x1, float y1, float x2, float y2, float score)
{
    return (mtl_det_result){.image = image, .class_id = class_id, .box = {x1, y1, x2, y2}, .score = score};
}

/* The same AP at every COCO threshold. */
static void check_coco_all(const mtl_det_class_eval *e, double ap, double tol)
{
    for (int t = 0; t < N_T; t++)
        CHECK_NEAR(e->coco_ap_at[t], ap, tol);
    CHECK_NEAR(e->coco_ap, ap, tol);
}

static void test_thresholds(void)
{
    CHECK_NEAR(mtl_det_coco_iou(0), 0.5, 0);
    CHECK_NEAR(mtl_det_coco_iou(5), 0.75, 1e-15);
    CHECK_NEAR(mtl_det_coco_iou(9), 0.95, 0);
}

static void test_interpolation(void)
{
    /* TP FP TP FP FP TP over 4 objects: recall .25 .25 .5 .5 .5 .75, precision 1 .5 2/3 .5 .4 .5.
     * Envelope from the right: 1 2/3 2/3 .5 .5 .5. VOC: .25 * 1 + .25 * 2/3 + .25 * .5 = 13/24.
     * COCO: recall points 0..0.25 (26 of them) reach detection 1 (precision 1), 0.26..0.5 (25)
     * detection 3 (2/3), 0.51..0.75 (25) detection 6 (.5), the rest (25) nothing (0):
     * (26 + 50/3 + 12.5) / 101. */
    const double recall[6] = {.25, .25, .5, .5, .5, .75};
    const double precision[6] = {1, .5, 2.0 / 3, .5, .4, .5};
    CHECK_NEAR(mtl_det_ap_all_points(recall, precision, 6), 13.0 / 24, 1e-12);
    CHECK_NEAR(mtl_det_ap_101_points(recall, precision, 6), (26 + 50.0 / 3 + 12.5) / 101, 1e-12);
    CHECK_NEAR(mtl_det_ap_all_points(recall, precision, 0), 0.0, 0);
    CHECK_NEAR(mtl_det_ap_101_points(recall, precision, 0), 0.0, 0);
    /* one detection at recall 1, precision 1: both give 1 */
    const double one = 1.0;
    CHECK_NEAR(mtl_det_ap_all_points(&one, &one, 1), 1.0, 1e-12);
    CHECK_NEAR(mtl_det_ap_101_points(&one, &one, 1), 1.0, 1e-12);
}

static void test_perfect(void)
{
    mtl_error err = {0};
    /* two images, two classes, every object found exactly (in any score order) */
    const mtl_det_gt g[5] = {gt(0, 0, 0, 0, 10, 10, 0), gt(0, 1, 20, 20, 40, 30, 0), gt(1, 0, 5, 5, 9, 9, 0),
                             gt(1, 0, 30, 0, 50, 20, 0), gt(1, 1, 0, 0, 100, 100, 0)};
    mtl_det_result d[5];
    for (int i = 0; i < 5; i++)
        d[i] = det(g[i].image, g[i].class_id, g[i].box[0], g[i].box[1], g[i].box[2], g[i].box[3], 0.2f + 0.1f * i);
    mtl_det_class_eval e[2];
    mtl_det_summary sum;
    CHECK_OK(mtl_det_evaluate(g, 5, d, 5, 2, 2, e, &sum, &err), &err);
    for (int c = 0; c < 2; c++) {
        CHECK_NEAR(e[c].voc_ap, 1.0, 1e-12);
        check_coco_all(&e[c], 1.0, 1e-12);
    }
    CHECK_INT(e[0].n_gt, 3);
    CHECK_INT(e[1].n_gt, 2);
    CHECK_INT(e[0].n_dets, 3);
    CHECK_INT(sum.n_classes_with_gt, 2);
    CHECK_NEAR(sum.voc_map, 1.0, 1e-12);
    CHECK_NEAR(sum.coco_map, 1.0, 1e-12);
}

static void test_sequence(void)
{
    mtl_error err = {0};
    /* four separate objects in one image; detections in score order TP FP TP FP FP TP (the false
     * ones far from everything): the sequence of test_interpolation, at every IoU threshold */
    const mtl_det_gt g[4] = {gt(0, 0, 0, 0, 10, 10, 0), gt(0, 0, 20, 0, 30, 10, 0), gt(0, 0, 40, 0, 50, 10, 0),
                             gt(0, 0, 60, 0, 70, 10, 0)};
    /* listed out of score order on purpose */
    const mtl_det_result d[6] = {det(0, 0, 100, 100, 110, 110, 0.8f), det(0, 0, 0, 0, 10, 10, 0.9f),
                                 det(0, 0, 40, 0, 50, 10, 0.4f), det(0, 0, 20, 0, 30, 10, 0.7f),
                                 det(0, 0, 200, 100, 210, 110, 0.6f), det(0, 0, 300, 100, 310, 110, 0.5f)};
    mtl_det_class_eval e;
    mtl_det_summary sum;
    CHECK_OK(mtl_det_evaluate(g, 4, d, 6, 1, 1, &e, &sum, &err), &err);
    CHECK_NEAR(e.voc_ap, 13.0 / 24, 1e-12);
    check_coco_all(&e, (26 + 50.0 / 3 + 12.5) / 101, 1e-12);
    CHECK_NEAR(sum.voc_map, 13.0 / 24, 1e-12);
}

static void test_duplicate(void)
{
    mtl_error err = {0};
    /* objects A and B; detections A (0.9), A again (0.8), B (0.7): TP FP TP, recall .5 .5 1,
     * precision 1 .5 2/3. VOC: .5 * 1 + .5 * 2/3 = 5/6. COCO: points 0..0.5 (51) give 1, the 50
     * above give 2/3: (51 + 100/3) / 101. */
    const mtl_det_gt g[2] = {gt(0, 0, 0, 0, 10, 10, 0), gt(0, 0, 50, 50, 60, 60, 0)};
    const mtl_det_result d[3] = {det(0, 0, 0, 0, 10, 10, 0.9f), det(0, 0, 0, 0, 10, 10, 0.8f),
                                 det(0, 0, 50, 50, 60, 60, 0.7f)};
    mtl_det_class_eval e;
    CHECK_OK(mtl_det_evaluate(g, 2, d, 3, 1, 1, &e, NULL, &err), &err);
    CHECK_NEAR(e.voc_ap, 5.0 / 6, 1e-12);
    check_coco_all(&e, (51 + 100.0 / 3) / 101, 1e-12);
}

static void test_iou_thresholds(void)
{
    mtl_error err = {0};
    /* object [0,0,10,10]; the detection [0,0,10,6] covers 60 of the union's 100: IoU 0.6. VOC
     * (IoU > 0.5) finds it: AP 1. COCO matches at 0.50, 0.55 and 0.60 (IoU >= t, exactly 0.6
     * included as pycocotools does) and misses at 0.65 ... 0.95: AP 1, 1, 1, then seven 0s; the
     * mean is 0.3. A second image with [0,0,10,6.5] (IoU 0.65) adds a match at 0.65 there. */
    const mtl_det_gt g[1] = {gt(0, 0, 0, 0, 10, 10, 0)};
    const mtl_det_result d[1] = {det(0, 0, 0, 0, 10, 6, 0.9f)};
    mtl_det_class_eval e;
    CHECK_OK(mtl_det_evaluate(g, 1, d, 1, 1, 1, &e, NULL, &err), &err);
    CHECK_NEAR(e.voc_ap, 1.0, 1e-12);
    for (int t = 0; t < N_T; t++)
        CHECK_NEAR(e.coco_ap_at[t], t <= 2 ? 1.0 : 0.0, 1e-12);
    CHECK_NEAR(e.coco_ap, 0.3, 1e-12);
    CHECK_NEAR(e.coco_ap_at[0], 1.0, 1e-12); /* counts at 0.5 */
    CHECK_NEAR(e.coco_ap_at[5], 0.0, 0);     /* not at 0.75 */

    /* two images: IoU 0.6 in image 0 (score 0.9), IoU 0.65 in image 1 (score 0.8). At t <= 0.6
     * both match: AP 1. At 0.65 only the second: FP then TP, recall 0 .5, precision 0 .5:
     * envelope .5 for points 0..0.5 (51 of them): 25.5 / 101. Above: 0. COCO AP =
     * (3 + 25.5 / 101) / 10. VOC: both above 0.5: 1. */
    const mtl_det_gt g2[2] = {gt(0, 0, 0, 0, 10, 10, 0), gt(1, 0, 0, 0, 10, 10, 0)};
    const mtl_det_result d2[2] = {det(0, 0, 0, 0, 10, 6, 0.9f), det(1, 0, 0, 0, 10, 6.5f, 0.8f)};
    CHECK_OK(mtl_det_evaluate(g2, 2, d2, 2, 2, 1, &e, NULL, &err), &err);
    CHECK_NEAR(e.voc_ap, 1.0, 1e-12);
    CHECK_NEAR(e.coco_ap_at[2], 1.0, 1e-12);
    CHECK_NEAR(e.coco_ap_at[3], 25.5 / 101, 1e-12);
    CHECK_NEAR(e.coco_ap_at[4], 0.0, 0);
    CHECK_NEAR(e.coco_ap, (3 + 25.5 / 101) / 10, 1e-12);

    /* IoU exactly 0.5 (the detection [0,0,10,5] covers half of [0,0,10,10]): VOC needs more than
     * 0.5, COCO at least 0.5 */
    const mtl_det_result half[1] = {det(0, 0, 0, 0, 10, 5, 0.9f)};
    CHECK_OK(mtl_det_evaluate(g, 1, half, 1, 1, 1, &e, NULL, &err), &err);
    CHECK_NEAR(e.voc_ap, 0.0, 0);
    CHECK_NEAR(e.coco_ap_at[0], 1.0, 1e-12);
    CHECK_NEAR(e.coco_ap, 0.1, 1e-12);
}

static void test_matching_rules(void)
{
    mtl_error err = {0};
    /* A [0,0,10,10] and B [5,0,15,10]; d1 = A (0.9), d2 = [2,0,12,10] (0.8) overlaps A by 80/120
     * = 2/3 and B by 70/130 = 0.538. VOC takes the best overlap, A, already found: d2 is a false
     * positive: TP FP, AP 0.5. COCO takes the best object not yet matched: B, at t = 0.5 (AP 1);
     * from 0.55 on B is too far: TP FP, AP 51/101. Mean (1 + 9 * 51/101) / 10. */
    const mtl_det_gt g[2] = {gt(0, 0, 0, 0, 10, 10, 0), gt(0, 0, 5, 0, 15, 10, 0)};
    const mtl_det_result d[2] = {det(0, 0, 0, 0, 10, 10, 0.9f), det(0, 0, 2, 0, 12, 10, 0.8f)};
    mtl_det_class_eval e;
    CHECK_OK(mtl_det_evaluate(g, 2, d, 2, 1, 1, &e, NULL, &err), &err);
    CHECK_NEAR(e.voc_ap, 0.5, 1e-12);
    CHECK_NEAR(e.coco_ap_at[0], 1.0, 1e-12);
    CHECK_NEAR(e.coco_ap_at[1], 51.0 / 101, 1e-12);
    CHECK_NEAR(e.coco_ap, (1 + 9 * 51.0 / 101) / 10, 1e-12);

    /* ties in score: a detection of the wrong image first or second changes precision; ties are
     * ranked by image index, so the true positive (image 0) comes first: TP FP, AP 0.5 */
    const mtl_det_gt g1[2] = {gt(0, 0, 0, 0, 10, 10, 0), gt(0, 0, 50, 50, 60, 60, 0)};
    const mtl_det_result tie[2] = {det(1, 0, 0, 0, 10, 10, 0.5f), det(0, 0, 0, 0, 10, 10, 0.5f)};
    CHECK_OK(mtl_det_evaluate(g1, 2, tie, 2, 2, 1, &e, NULL, &err), &err);
    CHECK_NEAR(e.voc_ap, 0.5, 1e-12);
    check_coco_all(&e, 51.0 / 101, 1e-12);
}

static void test_crowd(void)
{
    mtl_error err = {0};
    /* object A [0,0,10,10] and a crowd region C [20,0,60,40]. Detections: C itself (0.95), two
     * boxes inside C (0.9, 0.8), A (0.7). COCO: a detection inside a crowd region overlaps it
     * fully (intersection over the detection's area), and a region takes any number: the three
     * are ignored, A is found: AP 1. VOC matches C like any box: the exact one is ignored, the
     * small ones (IoU 100/1600) are false positives: FP FP TP, recall 0 0 1, precision 0 0 1/3:
     * AP 1/3. C counts in no recall: n_gt 1. */
    const mtl_det_gt g[2] = {gt(0, 0, 0, 0, 10, 10, 0), gt(0, 0, 20, 0, 60, 40, 1)};
    const mtl_det_result d[4] = {det(0, 0, 20, 0, 60, 40, 0.95f), det(0, 0, 25, 5, 35, 15, 0.9f),
                                 det(0, 0, 40, 10, 50, 20, 0.8f), det(0, 0, 0, 0, 10, 10, 0.7f)};
    mtl_det_class_eval e;
    CHECK_OK(mtl_det_evaluate(g, 2, d, 4, 1, 1, &e, NULL, &err), &err);
    CHECK_INT(e.n_gt, 1);
    CHECK_INT(e.n_crowd, 1);
    check_coco_all(&e, 1.0, 1e-12);
    CHECK_NEAR(e.voc_ap, 1.0 / 3, 1e-12);

    /* a detection overlapping both A (IoU 0.7) and the crowd region goes to A: a real object wins */
    const mtl_det_gt g2[2] = {gt(0, 0, 0, 0, 10, 10, 0), gt(0, 0, 0, 0, 40, 40, 1)};
    const mtl_det_result d2[1] = {det(0, 0, 0, 0, 10, 7, 0.9f)};
    CHECK_OK(mtl_det_evaluate(g2, 2, d2, 1, 1, 1, &e, NULL, &err), &err);
    CHECK_NEAR(e.coco_ap_at[0], 1.0, 1e-12);
    CHECK_NEAR(e.coco_ap_at[4], 1.0, 1e-12); /* 0.70: still A */
    CHECK_NEAR(e.coco_ap_at[5], 0.0, 0);     /* 0.75: too far from A, ignored on the crowd region */
    CHECK_NEAR(e.voc_ap, 1.0, 1e-12);

    /* only crowd regions: the class has no ground truth that counts */
    const mtl_det_gt g3[1] = {gt(0, 0, 0, 0, 40, 40, 1)};
    CHECK_OK(mtl_det_evaluate(g3, 1, d2, 1, 1, 1, &e, NULL, &err), &err);
    CHECK_INT(e.n_gt, 0);
    CHECK(isnan(e.voc_ap) && isnan(e.coco_ap));
}

static void test_classes_and_images(void)
{
    mtl_error err = {0};
    /* class 0: objects in images 0 and 1, only image 0's found: recall .5 at precision 1:
     * VOC .5, COCO 51/101. Class 1: no ground truth, one detection: NaN, left out of the means.
     * Class 2: found exactly: 1. Image 2 has nothing at all. Means over classes 0 and 2. */
    const mtl_det_gt g[3] = {gt(0, 0, 0, 0, 10, 10, 0), gt(1, 0, 0, 0, 10, 10, 0), gt(1, 2, 5, 5, 25, 25, 0)};
    const mtl_det_result d[3] = {det(0, 0, 0, 0, 10, 10, 0.9f), det(0, 1, 0, 0, 10, 10, 0.9f),
                                 det(1, 2, 5, 5, 25, 25, 0.3f)};
    mtl_det_class_eval e[3];
    mtl_det_summary sum;
    CHECK_OK(mtl_det_evaluate(g, 3, d, 3, 3, 3, e, &sum, &err), &err);
    CHECK_NEAR(e[0].voc_ap, 0.5, 1e-12);
    check_coco_all(&e[0], 51.0 / 101, 1e-12);
    CHECK_INT(e[1].n_gt, 0);
    CHECK_INT(e[1].n_dets, 1);
    CHECK(isnan(e[1].voc_ap) && isnan(e[1].coco_ap) && isnan(e[1].coco_ap_at[0]));
    CHECK_NEAR(e[2].voc_ap, 1.0, 1e-12);
    CHECK_INT(sum.n_classes_with_gt, 2);
    CHECK_NEAR(sum.voc_map, 0.75, 1e-12);
    CHECK_NEAR(sum.coco_map, (51.0 / 101 + 1) / 2, 1e-12);
    CHECK_NEAR(sum.coco_map_at[0], (51.0 / 101 + 1) / 2, 1e-12);

    /* no detections at all: every AP 0; no ground truth at all: NaN means */
    CHECK_OK(mtl_det_evaluate(g, 3, NULL, 0, 3, 3, e, &sum, &err), &err);
    CHECK_NEAR(e[0].voc_ap, 0.0, 0);
    CHECK_NEAR(e[0].coco_ap, 0.0, 0);
    CHECK_NEAR(sum.voc_map, 0.0, 0);
    CHECK_OK(mtl_det_evaluate(NULL, 0, d, 3, 3, 3, e, &sum, &err), &err);
    CHECK_INT(sum.n_classes_with_gt, 0);
    CHECK(isnan(sum.voc_map) && isnan(sum.coco_map));
    CHECK_OK(mtl_det_evaluate(NULL, 0, NULL, 0, 0, 0, NULL, &sum, &err), &err);
}

static void test_max_dets(void)
{
    mtl_error err = {0};
    /* one object and 101 detections in its image: 100 false ones scored above the right one. COCO
     * keeps the best 100 per image and class: the right one is cut, AP 0. VOC keeps all: TP at
     * position 101, recall 1 at precision 1/101: AP 1/101. Another image's detections do not count
     * against the limit. */
    enum { N = 103 };
    static mtl_det_result d[N];
    for (int i = 0; i < 100; i++)
        d[i] = det(0, 0, 100.0f + 20 * i, 0, 110.0f + 20 * i, 10, 0.9f - 0.001f * i);
    d[100] = det(0, 0, 0, 0, 10, 10, 0.05f);
    const mtl_det_gt g[2] = {gt(0, 0, 0, 0, 10, 10, 0), gt(1, 0, 0, 0, 10, 10, 0)};
    mtl_det_class_eval e;
    CHECK_OK(mtl_det_evaluate(g, 1, d, 101, 1, 1, &e, NULL, &err), &err);
    CHECK_NEAR(e.voc_ap, 1.0 / 101, 1e-12);
    check_coco_all(&e, 0.0, 0);
    /* image 1's object found with the lowest score of all, after image 0's 100 kept false ones:
     * COCO TP at rank 101 of recall 0.5: precision 1/101 for points 0..0.5 */
    d[101] = det(1, 0, 0, 0, 10, 10, 0.01f);
    CHECK_OK(mtl_det_evaluate(g, 2, d, 102, 2, 1, &e, NULL, &err), &err);
    check_coco_all(&e, 51.0 / 101 / 101, 1e-12);
}

static void test_errors(void)
{
    mtl_error err = {0};
    mtl_det_class_eval e[2];
    const mtl_det_gt g[1] = {gt(0, 0, 0, 0, 10, 10, 0)};
    const mtl_det_gt bad_gt[1] = {gt(0, 2, 0, 0, 10, 10, 0)};
    const mtl_det_result d_image[1] = {det(3, 0, 0, 0, 10, 10, 0.5f)};
    const mtl_det_result d_class[1] = {det(0, -1, 0, 0, 10, 10, 0.5f)};
    const mtl_det_result d_nan[1] = {det(0, 0, 0, 0, 10, 10, NAN)};
    const mtl_det_result d_inf[1] = {det(0, 0, 0, INFINITY, 10, 10, 0.5f)};
    CHECK_FAILS(mtl_det_evaluate(g, 1, d_image, 1, 2, 2, e, NULL, &err), &err, MTL_ERR_ARGUMENT,
                "detection 0: image 3 is not in [0, 2)");
    CHECK_FAILS(mtl_det_evaluate(g, 1, d_class, 1, 2, 2, e, NULL, &err), &err, MTL_ERR_ARGUMENT,
                "detection 0: class -1 is not in [0, 2)");
    CHECK_FAILS(mtl_det_evaluate(g, 1, d_nan, 1, 2, 2, e, NULL, &err), &err, MTL_ERR_ARGUMENT, "not finite");
    CHECK_FAILS(mtl_det_evaluate(g, 1, d_inf, 1, 2, 2, e, NULL, &err), &err, MTL_ERR_ARGUMENT, "not finite");
    CHECK_FAILS(mtl_det_evaluate(bad_gt, 1, NULL, 0, 2, 2, e, NULL, &err), &err, MTL_ERR_ARGUMENT,
                "ground truth 0: class 2 is not in [0, 2)");
    CHECK_FAILS(mtl_det_evaluate(NULL, 1, NULL, 0, 2, 2, e, NULL, &err), &err, MTL_ERR_ARGUMENT, "non-negative");
}

int main(void)
{
    test_thresholds();
    test_interpolation();
    test_perfect();
    test_sequence();
    test_duplicate();
    test_iou_thresholds();
    test_matching_rules();
    test_crowd();
    test_classes_and_images();
    test_max_dets();
    test_errors();
    return check_finish();
}
