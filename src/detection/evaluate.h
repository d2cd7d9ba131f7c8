/* Detection metrics: per-class average precision in the PASCAL VOC way (IoU > 0.5, all-points
 * interpolation as VOC2010+) and the COCO way (101-point interpolated AP averaged over IoU
 * 0.50:0.05:0.95, matching as pycocotools' COCOeval does for boxes). Plain arrays in, numbers out,
 * no I/O: `mtl evaluate-detections` and the tests call these. Boxes follow detection/boxes.h
 * (x1 y1 x2 y2, continuous coordinates); images and classes are dense indices the caller maps
 * its own ids to. docs/detection.md describes both metrics step by step. */
#ifndef MTL_DETECTION_EVALUATE_H
#define MTL_DETECTION_EVALUATE_H

#include <stdint.h>

#include "core/error.h"

#define MTL_DET_VOC_IOU 0.5        /* a VOC match needs IoU strictly above this */
#define MTL_DET_COCO_N_IOUS 10     /* COCO thresholds 0.50, 0.55, ..., 0.95 (a match needs IoU >= t) */
#define MTL_DET_COCO_N_RECALLS 101 /* recall points 0, 0.01, ..., 1 */
#define MTL_DET_COCO_MAX_DETS 100  /* COCO keeps the best 100 detections per image and class */

/* One ground-truth object. */
typedef struct mtl_det_gt {
    int64_t image; /* in [0, n_images) */
    int class_id;  /* in [0, n_classes) */
    float box[4];  /* x1 y1 x2 y2 */
    /* A crowd region (COCO iscrowd) or a VOC "difficult" object: not an object a detector must
     * find (it counts in no recall) and a detection matched to it is neither right nor wrong.
     * COCO matches it by intersection over the detection's area and lets it take any number of
     * detections; VOC matches it like any box. */
    int crowd;
} mtl_det_gt;

/* One detection. */
typedef struct mtl_det_result {
    int64_t image;
    int class_id;
    float box[4];
    float score; /* higher: more confident; must be finite */
} mtl_det_result;

/* The metrics of one class. The APs are NaN when the class has no ground truth that counts
 * (n_gt == 0): such a class takes no part in the means. */
typedef struct mtl_det_class_eval {
    int64_t n_gt;      /* ground-truth boxes that are not crowd */
    int64_t n_crowd;   /* crowd / difficult ones */
    int64_t n_dets;    /* detections of the class (before COCO's per-image limit) */
    double voc_ap;     /* VOC AP at IoU 0.5 */
    double coco_ap;    /* mean of coco_ap_at */
    double coco_ap_at[MTL_DET_COCO_N_IOUS]; /* COCO 101-point AP at IoU 0.50 + 0.05 t */
} mtl_det_class_eval;

/* The means over the classes with ground truth; NaN when no class has any. */
typedef struct mtl_det_summary {
    int n_classes_with_gt;
    double voc_map;  /* mean voc_ap: "mAP@0.5" */
    double coco_map; /* mean coco_ap: "mAP@[.5:.95]", COCO's headline AP */
    double coco_map_at[MTL_DET_COCO_N_IOUS]; /* [0]: COCO's AP50, [5]: AP75 */
} mtl_det_summary;

/* Evaluates detections against ground truth on n_images images and n_classes classes. Every image
 * and class index must be in range, every coordinate and score finite (errors name the first
 * offender by its index in the array). per_class has n_classes entries; summary may be NULL. Ties
 * in score are broken by image index, then by position in `dets`, the same way on every machine
 * (for COCO this is pycocotools' order when images are numbered by increasing image id). */
mtl_status mtl_det_evaluate(const mtl_det_gt *gt, int64_t n_gt, const mtl_det_result *dets, int64_t n_dets,
                            int64_t n_images, int n_classes, mtl_det_class_eval *per_class, mtl_det_summary *summary,
                            mtl_error *err);

/* The two interpolations, exposed for the tests and for callers with their own matching. recall
 * and precision are the running values after each of n detections in score order (recall
 * non-decreasing). VOC2010+: the area under the precision envelope (precision made
 * non-increasing from the right), summed where recall changes. */
double mtl_det_ap_all_points(const double *recall, const double *precision, int64_t n);
/* COCO: the mean over recall points r = 0, 0.01, ..., 1 of the envelope's precision at the first
 * detection whose recall reaches r (0 where none does). */
double mtl_det_ap_101_points(const double *recall, const double *precision, int64_t n);

/* COCO's IoU threshold t (0 <= t < MTL_DET_COCO_N_IOUS), as numpy.linspace(0.5, 0.95, 10) gives it. */
double mtl_det_coco_iou(int t);

#endif
