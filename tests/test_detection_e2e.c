/* End to end: a tiny Faster R-CNN (shared two-conv trunk, RPN, ProposalTarget, ROIAlign, a small
 * fc head, four losses) trained by the solver from a detection LMDB of synthetic images (filled
 * versus hollow squares) learns: the classification losses fall far below their start, the
 * regression losses far below what zero predictions would cost on the same samples, and a deploy
 * net sharing the trained weights (Proposal at TEST settings, DetectionOutput) finds the held-out
 * objects with the right class and few false alarms. Also: the same seed gives bit-identical losses.
 * About 2 s in the Release build and 20-30 s in the sanitizer build (2 threads). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "test_util.h"
#include "core/rng.h"
#include "core/solver.h"
#include "data/db.h"
#include "data/record.h"
#include "detection/boxes.h"

#define SIDE 48         /* images are SIDE x SIDE grey */
#define TRAIN_N 200
#define TEST_N 40
#define MAX_OBJECTS 2
#define MIN_SIZE 8      /* object sides in pixels, inclusive */
#define MAX_SIZE 20
#define TRAIN_ITERS 600
#define SCORE_MIN 0.5f  /* a detection below this score does not count as one */

static const char *const loss_names[4] = {"rpn_loss_cls", "rpn_loss_bbox", "loss_cls", "loss_bbox"};

/* The anchors of AnchorTarget and Proposal: stride 4, squares of 8, 12 and 18 pixels. */
#define ANCHORS "feat_stride: 4 base_size: 4 scales: 2 scales: 3 scales: 4.5 ratios: 1"

#define TRUNK_AND_RPN                                                                                              \
    "layer { name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1'\n"                                      \
    "  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: 'msra' } } }\n"              \
    "layer { name: 'relu1' type: 'ReLU' bottom: 'conv1' top: 'conv1' }\n"                                          \
    "layer { name: 'pool1' type: 'Pooling' bottom: 'conv1' top: 'pool1'\n"                                         \
    "  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"                                                   \
    "layer { name: 'conv2' type: 'Convolution' bottom: 'pool1' top: 'conv2'\n"                                     \
    "  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: 'msra' } } }\n"             \
    "layer { name: 'relu2' type: 'ReLU' bottom: 'conv2' top: 'conv2' }\n"                                          \
    "layer { name: 'pool2' type: 'Pooling' bottom: 'conv2' top: 'feat'\n"                                          \
    "  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"                                                   \
    "layer { name: 'rpn_conv' type: 'Convolution' bottom: 'feat' top: 'rpn_conv'\n"                                \
    "  convolution_param { num_output: 32 kernel_size: 3 pad: 1 weight_filler { type: 'msra' } } }\n"             \
    "layer { name: 'rpn_relu' type: 'ReLU' bottom: 'rpn_conv' top: 'rpn_conv' }\n"                                 \
    "layer { name: 'rpn_cls_score' type: 'Convolution' bottom: 'rpn_conv' top: 'rpn_cls_score'\n"                  \
    "  convolution_param { num_output: 6 kernel_size: 1 weight_filler { type: 'gaussian' std: 0.01 } } }\n"       \
    "layer { name: 'rpn_bbox_pred' type: 'Convolution' bottom: 'rpn_conv' top: 'rpn_bbox_pred'\n"                  \
    "  convolution_param { num_output: 12 kernel_size: 1 weight_filler { type: 'gaussian' std: 0.01 } } }\n"      \
    "layer { name: 'rpn_cls_score_reshape' type: 'Reshape' bottom: 'rpn_cls_score'\n"                              \
    "  top: 'rpn_cls_score_reshape' reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 0 } } }\n"                  \
    "layer { name: 'rpn_cls_prob' type: 'Softmax' bottom: 'rpn_cls_score_reshape' top: 'rpn_cls_prob' }\n"         \
    "layer { name: 'rpn_cls_prob_reshape' type: 'Reshape' bottom: 'rpn_cls_prob' top: 'rpn_cls_prob_reshape'\n"    \
    "  reshape_param { shape { dim: 0 dim: 6 dim: -1 dim: 0 } } }\n"                                               \
    "layer { name: 'proposal' type: 'Proposal' bottom: 'rpn_cls_prob_reshape' bottom: 'rpn_bbox_pred'\n"           \
    "  bottom: 'im_info' top: 'rpn_rois'\n"                                                                        \
    "  proposal_param { " ANCHORS "\n"                                                                             \
    "    train { pre_nms_top_n: 200 post_nms_top_n: 50 nms_thresh: 0.7 min_size: 4 }\n"                           \
    "    test { pre_nms_top_n: 200 post_nms_top_n: 20 nms_thresh: 0.7 min_size: 4 } } }\n"

#define HEAD(rois)                                                                                                 \
    "layer { name: 'roi_pool' type: 'ROIAlign' bottom: 'feat' bottom: '" rois "' top: 'roi_pool'\n"                \
    "  roi_align_param { pooled_h: 5 pooled_w: 5 spatial_scale: 0.25 sampling_ratio: 2 } }\n"                      \
    "layer { name: 'fc6' type: 'InnerProduct' bottom: 'roi_pool' top: 'fc6'\n"                                     \
    "  inner_product_param { num_output: 64 weight_filler { type: 'msra' } } }\n"                                  \
    "layer { name: 'relu6' type: 'ReLU' bottom: 'fc6' top: 'fc6' }\n"                                              \
    "layer { name: 'cls_score' type: 'InnerProduct' bottom: 'fc6' top: 'cls_score'\n"                              \
    "  inner_product_param { num_output: 3 weight_filler { type: 'gaussian' std: 0.01 } } }\n"                     \
    "layer { name: 'bbox_pred' type: 'InnerProduct' bottom: 'fc6' top: 'bbox_pred'\n"                              \
    "  inner_product_param { num_output: 12 weight_filler { type: 'gaussian' std: 0.001 } } }\n"

/* The training net; %s is the train LMDB. */
static const char *train_net_fmt =
    "name: 'tiny_det'\n"
    "layer { name: 'data' type: 'Data' top: 'data' top: 'gt_boxes' top: 'im_info'\n"
    "  transform_param { scale: 0.00390625 mirror: true }\n"
    "  data_param { source: '%s' batch_size: 4 backend: LMDB shuffle: true } }\n" TRUNK_AND_RPN
    "layer { name: 'rpn_data' type: 'AnchorTarget' bottom: 'rpn_cls_score' bottom: 'gt_boxes' bottom: 'im_info'\n"
    "  top: 'rpn_labels' top: 'rpn_bbox_targets' top: 'rpn_bbox_inside_weights' top: 'rpn_bbox_outside_weights'\n"
    "  anchor_target_param { " ANCHORS " batch_size: 64 allowed_border: -1 } }\n"
    "layer { name: 'rpn_loss_cls' type: 'SoftmaxWithLoss' bottom: 'rpn_cls_score_reshape' bottom: 'rpn_labels'\n"
    "  top: 'rpn_loss_cls' loss_weight: 1 loss_param { ignore_label: -1 normalization: VALID } }\n"
    "layer { name: 'rpn_loss_bbox' type: 'SmoothL1Loss' bottom: 'rpn_bbox_pred' bottom: 'rpn_bbox_targets'\n"
    "  bottom: 'rpn_bbox_inside_weights' bottom: 'rpn_bbox_outside_weights' top: 'rpn_loss_bbox' loss_weight: 1\n"
    "  smooth_l1_loss_param { sigma: 3 } }\n"
    "layer { name: 'roi_data' type: 'ProposalTarget' bottom: 'rpn_rois' bottom: 'gt_boxes'\n"
    "  top: 'rois' top: 'labels' top: 'bbox_targets' top: 'bbox_inside_weights' top: 'bbox_outside_weights'\n"
    "  proposal_target_param { num_classes: 3 batch_size: 32 fg_fraction: 0.25 } }\n" HEAD("rois")
    "layer { name: 'loss_cls' type: 'SoftmaxWithLoss' bottom: 'cls_score' bottom: 'labels' top: 'loss_cls'\n"
    "  loss_weight: 1 }\n"
    "layer { name: 'loss_bbox' type: 'SmoothL1Loss' bottom: 'bbox_pred' bottom: 'bbox_targets'\n"
    "  bottom: 'bbox_inside_weights' bottom: 'bbox_outside_weights' top: 'loss_bbox' loss_weight: 1 }\n";

/* The deploy net: the test images in, detections (D, 7) [image, x1, y1, x2, y2, score, class] out. */
static const char *deploy_net =
    "name: 'tiny_det'\n"
    "layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 40 dim: 1 dim: 48 dim: 48 } } }\n"
    "layer { name: 'im_info' type: 'Input' top: 'im_info' input_param { shape { dim: 40 dim: 3 } } }\n"
    TRUNK_AND_RPN HEAD("rpn_rois")
    "layer { name: 'cls_prob' type: 'Softmax' bottom: 'cls_score' top: 'cls_prob' }\n"
    "layer { name: 'detections' type: 'DetectionOutput' bottom: 'rpn_rois' bottom: 'cls_prob'\n"
    "  bottom: 'bbox_pred' bottom: 'im_info' top: 'detections'\n"
    "  detection_output_param { num_classes: 3 nms_threshold: 0.3 score_threshold: 0.05 max_per_image: 20 } }\n";

/* One synthetic image: dark noisy background, 1-2 non-touching squares, class 1 filled and class 2
 * hollow (a 2-pixel frame). */
typedef struct image {
    uint8_t pixels[SIDE * SIDE];
    int n_boxes;
    float boxes[MAX_OBJECTS * 5]; /* class, x, y, w, h (the record's COCO-style rows) */
} image;

static int overlaps(const image *im, int x, int y, int s)
{
    const int gap = 2;
    for (int k = 0; k < im->n_boxes; k++) {
        const float *b = im->boxes + 5 * k;
        if (x < b[1] + b[3] + gap && b[1] < x + s + gap && y < b[2] + b[4] + gap && b[2] < y + s + gap)
            return 1;
    }
    return 0;
}

static void make_image(mtl_rng *rng, image *im)
{
    for (int i = 0; i < SIDE * SIDE; i++)
        im->pixels[i] = (uint8_t)(20 + mtl_rng_below(rng, 40));
    im->n_boxes = 0;
    int want = mtl_rng_below(rng, 10) == 0 ? 0 : 1 + (int)mtl_rng_below(rng, MAX_OBJECTS);
    for (int tries = 0; im->n_boxes < want && tries < 100; tries++) {
        int s = MIN_SIZE + (int)mtl_rng_below(rng, MAX_SIZE - MIN_SIZE + 1);
        int x = (int)mtl_rng_below(rng, SIDE - s + 1), y = (int)mtl_rng_below(rng, SIDE - s + 1);
        int cls = 1 + (int)mtl_rng_below(rng, 2);
        if (overlaps(im, x, y, s))
            continue;
        for (int r = y; r < y + s; r++)
            for (int c = x; c < x + s; c++) {
                int frame = r < y + 2 || r >= y + s - 2 || c < x + 2 || c >= x + s - 2;
                if (cls == 1 || frame)
                    im->pixels[r * SIDE + c] = (uint8_t)(180 + mtl_rng_below(rng, 60));
            }
        float *b = im->boxes + 5 * im->n_boxes++;
        b[0] = (float)cls;
        b[1] = (float)x;
        b[2] = (float)y;
        b[3] = (float)s;
        b[4] = (float)s;
    }
}

static int write_db(const char *path, const image *images, int n)
{
    mtl_error err = {0};
    mtl_db_writer *w = NULL;
    CHECK_OK(mtl_db_writer_open(path, &w, &err), &err);
    if (!w)
        return 0;
    for (int i = 0; i < n; i++) {
        mtl_record r = {.channels = 1, .height = SIDE, .width = SIDE, .n_boxes = images[i].n_boxes,
                        .boxes = images[i].boxes, .n_bytes = SIDE * SIDE, .data = images[i].pixels};
        mtl_status st = mtl_db_writer_put(w, i, &r, &err);
        CHECK_OK(st, &err);
        if (st != MTL_OK) {
            mtl_db_writer_abort(w);
            return 0;
        }
    }
    char *names[] = {"filled", "hollow", NULL};
    int ids[] = {1, 2};
    mtl_db_meta meta = {.count = n, .channels = 1, .height = SIDE, .width = SIDE, .has_boxes = 1,
                        .label_names = names, .category_ids = ids};
    mtl_status st = mtl_db_writer_finish(w, &meta, &err);
    CHECK_OK(st, &err);
    return st == MTL_OK;
}

/* Reads a detection LMDB back (the deploy net gets what the database holds, as `mtl detect` would). */
static int read_db(const char *path, image *images, int n)
{
    mtl_error err = {0};
    mtl_db *db = NULL;
    CHECK_OK(mtl_db_open(path, &db, &err), &err);
    if (!db)
        return 0;
    int ok = mtl_db_meta_of(db)->count == n && mtl_db_meta_of(db)->has_boxes;
    for (int i = 0; ok && i < n; i++) {
        mtl_record r;
        mtl_status st = mtl_db_get(db, i, &r, &err);
        CHECK_OK(st, &err);
        ok = st == MTL_OK && r.n_bytes == SIDE * SIDE && r.n_boxes <= MAX_OBJECTS;
        if (!ok)
            break;
        memcpy(images[i].pixels, r.data, SIDE * SIDE);
        images[i].n_boxes = r.n_boxes;
        for (int k = 0; k < 5 * r.n_boxes; k++)
            images[i].boxes[k] = mtl_record_box(&r, k);
    }
    CHECK_MSG(ok, "%s does not read back as written", path);
    mtl_db_close(db);
    return ok;
}

static mtl_status make_solver(const char *db, int seed, mtl_solver **s, mtl_error *err)
{
    char net[8192], text[12288];
    snprintf(net, sizeof(net), train_net_fmt, db);
    snprintf(text, sizeof(text),
             "net_param { %s }\n"
             "type: 'SGD' base_lr: 0.02 momentum: 0.9 weight_decay: 0.0005\n"
             "lr_policy: 'step' gamma: 0.1 stepsize: %d max_iter: %d\n"
             "display: 0 snapshot_after_train: false random_seed: %d\n",
             net, TRAIN_ITERS * 5 / 6, TRAIN_ITERS, seed);
    return mtl_solver_from_string(text, NULL, NULL, s, err);
}

/* The four loss values of the train net's last forward. */
static int read_losses(const mtl_solver *s, float *out)
{
    for (int k = 0; k < 4; k++) {
        const mtl_tensor *t = mtl_net_blob(s->train_net, loss_names[k]);
        if (!t || t->count != 1)
            return 0;
        out[k] = t->data[0];
    }
    return 1;
}

/* Same seed, same losses, bit for bit (data order, sampling in AnchorTarget and ProposalTarget,
 * OpenMP reductions); another seed gives other losses, so the comparison is not vacuous. */
static void test_determinism(const char *db)
{
    enum { ITERS = 4 };
    float losses[3][ITERS][4];
    const int seeds[3] = {11, 11, 12};
    for (int run = 0; run < 3; run++) {
        mtl_error err = {0};
        mtl_solver *s = NULL;
        CHECK_OK(make_solver(db, seeds[run], &s, &err), &err);
        if (!s)
            return;
        for (int i = 0; i < ITERS; i++) {
            mtl_status st = mtl_solver_step(s, 1, &err);
            CHECK_OK(st, &err);
            if (st != MTL_OK || !read_losses(s, losses[run][i])) {
                CHECK_MSG(0, "determinism run %d stopped at iteration %d", run, i);
                mtl_solver_free(s);
                return;
            }
        }
        mtl_solver_free(s);
    }
    CHECK_MSG(memcmp(losses[0], losses[1], sizeof(losses[0])) == 0, "two runs with seed 11 differ: %.9g vs %.9g",
              (double)losses[0][ITERS - 1][0], (double)losses[1][ITERS - 1][0]);
    CHECK_MSG(memcmp(losses[0], losses[2], sizeof(losses[0])) != 0, "seeds 11 and 12 give identical losses");
}

/* Runs the deploy net on the test images and scores its detections against their boxes. */
static void check_detections(mtl_solver *s, const image *test)
{
    mtl_error err = {0};
    mtl_net *net = NULL;
    mtl_net_options o = {.phase = MTL_PHASE_TEST, .share = s->train_net};
    CHECK_OK(mtl_net_from_string(deploy_net, &o, &net, &err), &err);
    if (!net)
        return;
    mtl_tensor *data = mtl_net_blob(net, "data"), *info = mtl_net_blob(net, "im_info");
    for (int i = 0; i < TEST_N; i++) {
        for (int p = 0; p < SIDE * SIDE; p++)
            data->data[(int64_t)i * SIDE * SIDE + p] = (float)test[i].pixels[p] * 0.00390625f;
        info->data[3 * i] = SIDE;
        info->data[3 * i + 1] = SIDE;
        info->data[3 * i + 2] = 1;
    }
    CHECK_OK(mtl_net_forward(net, NULL, &err), &err);
    /* Proposal at its TEST settings: at most 20 RoIs an image */
    const mtl_tensor *rois = mtl_net_blob(net, "rpn_rois");
    CHECK(rois && rois->shape[0] >= TEST_N && rois->shape[0] <= 20 * TEST_N);
    const mtl_tensor *det = mtl_net_blob(net, "detections");
    CHECK(det && det->ndim == 2 && det->shape[1] == 7);
    if (!det || det->ndim != 2 || det->shape[1] != 7) {
        mtl_net_free(net);
        return;
    }
    int n_gt = 0, found = 0, confident = 0, false_pos = 0, n_det = det->shape[0], bad_rows = 0;
    double iou_sum = 0;
    for (int d = 0; d < n_det; d++) {
        const float *row = det->data + 7 * d;
        bad_rows += !(row[0] >= 0 && row[0] < TEST_N && row[0] == floorf(row[0]) && row[1] >= 0 && row[1] <= row[3] &&
                      row[3] <= SIDE && row[2] >= 0 && row[2] <= row[4] && row[4] <= SIDE && row[5] > 0.05f &&
                      row[5] <= 1 && (row[6] == 1 || row[6] == 2));
    }
    CHECK_MSG(bad_rows == 0, "%d detection rows are not [image, x1, y1, x2, y2, score, class] in range", bad_rows);
    if (bad_rows) {
        mtl_net_free(net);
        return;
    }
    for (int i = 0; i < TEST_N; i++)
        for (int k = 0; k < test[i].n_boxes; k++) {
            const float *b = test[i].boxes + 5 * k;
            const float gt[4] = {b[1], b[2], b[1] + b[3], b[2] + b[4]};
            float best = 0;
            for (int d = 0; d < n_det; d++) {
                const float *row = det->data + 7 * d;
                if ((int)row[0] == i && row[6] == b[0] && row[5] >= SCORE_MIN)
                    best = fmaxf(best, mtl_box_iou(row + 1, gt));
            }
            n_gt++;
            found += best >= 0.5f;
            iou_sum += best;
        }
    /* a confident detection that matches no object of its class is a false positive */
    for (int d = 0; d < n_det; d++) {
        const float *row = det->data + 7 * d;
        if (row[5] < SCORE_MIN)
            continue;
        confident++;
        const image *im = &test[(int)row[0]];
        int matched = 0;
        for (int k = 0; k < im->n_boxes; k++) {
            const float *b = im->boxes + 5 * k;
            const float gt[4] = {b[1], b[2], b[1] + b[3], b[2] + b[4]};
            matched |= b[0] == row[6] && mtl_box_iou(row + 1, gt) >= 0.5f;
        }
        false_pos += !matched;
    }
    printf("test set: %d of %d objects found (IoU >= 0.5, right class, score >= %.1f), mean best IoU %.3f; "
           "%d confident detections, %d false positives\n",
           found, n_gt, (double)SCORE_MIN, iou_sum / (n_gt ? n_gt : 1), confident, false_pos);
    CHECK_MSG(found >= 0.9 * n_gt, "only %d of %d test objects found", found, n_gt);
    CHECK_MSG(false_pos <= 0.1 * n_gt, "%d false positives for %d objects", false_pos, n_gt);
    mtl_net_free(net);
}

/* The loss a SmoothL1Loss layer would give for predictions of zero on its current targets and
 * weights (what the untrained regressors, filled with near-zero weights, predict): the yardstick
 * for the regression losses, whose samples change as the RPN learns (early on the head's foreground
 * is mostly the gt boxes themselves, whose targets are 0, so the raw loss rises as proposals improve). */
static double zero_prediction_loss(const mtl_net *net, const char *layer_name, double sigma)
{
    int li = mtl_net_layer_index(net, layer_name);
    if (li < 0)
        return NAN;
    const mtl_layer *l = net->layers[li];
    const float *t = l->bottoms[1]->data, *w_in = l->bottoms[2]->data, *w_out = l->bottoms[3]->data;
    const double s2 = sigma * sigma;
    double sum = 0;
    if (l->bottoms[0]->shape[0] == 0)
        return 0;
    for (int64_t i = 0; i < l->bottoms[0]->count; i++) {
        double d = fabs((double)w_in[i] * t[i]);
        sum += w_out[i] * (d < 1 / s2 ? 0.5 * s2 * d * d : d - 0.5 / s2);
    }
    return sum / l->bottoms[0]->shape[0];
}

static void test_training(const char *db, const image *test)
{
    mtl_error err = {0};
    mtl_solver *s = NULL;
    CHECK_OK(make_solver(db, 7, &s, &err), &err);
    if (!s)
        return;
    enum { WINDOW = 20 };
    float start[4] = {0};
    double last[4] = {0}, zero_rpn = 0, zero_head = 0;
    for (int i = 0; i < TRAIN_ITERS; i++) {
        float v[4];
        mtl_status st = mtl_solver_step(s, 1, &err);
        CHECK_OK(st, &err);
        if (st != MTL_OK || !read_losses(s, v)) {
            CHECK_MSG(0, "training stopped at iteration %d", i);
            mtl_solver_free(s);
            return;
        }
        if (i == 0)
            memcpy(start, v, sizeof(start));
        if (i < TRAIN_ITERS - WINDOW)
            continue;
        for (int k = 0; k < 4; k++)
            last[k] += v[k] / WINDOW;
        zero_rpn += zero_prediction_loss(s->train_net, "rpn_loss_bbox", 3) / WINDOW;
        zero_head += zero_prediction_loss(s->train_net, "loss_bbox", 1) / WINDOW;
    }
    for (int k = 0; k < 4; k++)
        printf("%-13s at the start %.4f, mean of the last %d iterations %.4f\n", loss_names[k], (double)start[k],
               WINDOW, last[k]);
    printf("zero-prediction losses of the last %d iterations: rpn %.4f, head %.4f\n", WINDOW, zero_rpn, zero_head);
    CHECK_MSG(last[0] < 0.1 * start[0], "rpn_loss_cls %g -> %g", (double)start[0], last[0]);
    CHECK_MSG(last[1] < 0.5 * start[1], "rpn_loss_bbox %g -> %g", (double)start[1], last[1]);
    CHECK_MSG(last[1] < 0.4 * zero_rpn, "rpn_loss_bbox %g, %g for zero predictions", last[1], zero_rpn);
    CHECK_MSG(last[2] < 0.2 * start[2], "loss_cls %g -> %g", (double)start[2], last[2]);
    CHECK_MSG(last[3] < 0.3 * zero_head, "loss_bbox %g, %g for zero predictions", last[3], zero_head);
    check_detections(s, test);
    mtl_solver_free(s);
}

int main(void)
{
    char dir[512], train_db[600], test_db[600];
    snprintf(dir, sizeof(dir), "%s/mtl_det_e2e_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(train_db, sizeof(train_db), "%s/train_lmdb", dir);
    snprintf(test_db, sizeof(test_db), "%s/test_lmdb", dir);
    image *images = calloc(TRAIN_N + TEST_N, sizeof(*images));
    if (!images)
        return 1;
    mtl_rng rng;
    mtl_rng_seed(&rng, 2015);
    for (int i = 0; i < TRAIN_N + TEST_N; i++)
        make_image(&rng, &images[i]);
    image *test = calloc(TEST_N, sizeof(*test));
    if (test && write_db(train_db, images, TRAIN_N) && write_db(test_db, images + TRAIN_N, TEST_N) &&
        read_db(test_db, test, TEST_N)) {
        CHECK(memcmp(test, images + TRAIN_N, TEST_N * sizeof(*test)) == 0);
        test_determinism(train_db);
        test_training(train_db, test);
    }
    free(test);
    free(images);
    test_remove_tree(dir);
    return check_finish();
}
