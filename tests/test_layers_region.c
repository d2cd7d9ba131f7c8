/* Tests for the region layers of Faster R-CNN (AnchorTarget, Proposal, ProposalTarget) on maps and
 * boxes small enough to work out by hand: which anchors are foreground, background or ignored,
 * the regression targets and weights, decoded / clipped / filtered / suppressed proposals, RoI
 * sampling with its class-specific targets, empty inputs and bad configs. The layers have no
 * backward, so there is no gradient check. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "detection/boxes.h"
#include "gradcheck.h"
#include "test_util.h"

static mtl_tensor *table(int rows, int cols, const float *values)
{
    return test_tensor_n(2, (const int[]){rows, cols}, values);
}

static mtl_tensor *map4(int n, int c, int h, int w, const float *values)
{
    return test_tensor_n(4, (const int[]){n, c, h, w}, values);
}

static void free_all(mtl_tensor **t, int n)
{
    for (int i = 0; i < n; i++)
        mtl_tensor_free(t[i]);
}

/* Builds the layer (TRAIN unless phase says otherwise) and runs one forward; NULL on failure. */
static mtl_layer *build_and_run(const char *text, mtl_phase phase, mtl_tensor **bottoms, int nb, mtl_tensor **tops,
                                int nt)
{
    mtl_error err = {0};
    mtl_layer *l = NULL;
    CHECK_OK(gradcheck_build(text, phase, bottoms, nb, tops, nt, &l, &err), &err);
    if (!l)
        return NULL;
    mtl_status st = test_forward(l, &err);
    CHECK_OK(st, &err);
    if (st != MTL_OK) {
        gradcheck_free_layer(l);
        return NULL;
    }
    return l;
}

static void check_build_fails(const char *text, mtl_tensor **bottoms, int nb, int nt, mtl_status status,
                              const char *needle)
{
    mtl_error err = {0};
    mtl_tensor *tops[5];
    for (int i = 0; i < 5; i++)
        tops[i] = mtl_tensor_create("top");
    mtl_layer *l = NULL;
    CHECK_FAILS(gradcheck_build(text, MTL_PHASE_TRAIN, bottoms, nb, tops, nt, &l, &err), &err, status, needle);
    gradcheck_free_layer(l);
    free_all(tops, 5);
}

static void check_forward_fails(const char *text, mtl_tensor **bottoms, int nb, int nt, mtl_status status,
                                const char *needle)
{
    mtl_error err = {0};
    mtl_tensor *tops[5];
    for (int i = 0; i < 5; i++)
        tops[i] = mtl_tensor_create("top");
    mtl_layer *l = NULL;
    CHECK_OK(gradcheck_build(text, MTL_PHASE_TRAIN, bottoms, nb, tops, nt, &l, &err), &err);
    if (l)
        CHECK_FAILS(test_forward(l, &err), &err, status, needle);
    gradcheck_free_layer(l);
    free_all(tops, 5);
}

static int count_equal(const float *v, int64_t n, float x)
{
    int c = 0;
    for (int64_t i = 0; i < n; i++)
        c += v[i] == x;
    return c;
}

/* ---- AnchorTarget --------------------------------------------------------------------------------
 * feat_stride 8, base_size 8, one scale (1) and one ratio (1): A = 1 and the anchor of cell (y, x)
 * is the cell itself, [8x, 8y, 8x + 8, 8y + 8]. On a 3 x 3 map over a 16 x 16 image, the anchors
 * of row 2 and column 2 end at 24 and cross the image by 8. */

#define AT_TINY "type: 'AnchorTarget' anchor_target_param { feat_stride: 8 scales: 1 ratios: 1 "

static mtl_tensor *tiny_bottoms[3];

/* Runs AnchorTarget over a 3 x 3 map, image 16 x 16, with the given gt rows; tops: labels,
 * targets, inside and outside weights (1 x 1 x 3 x 3, then 1 x 4 x 3 x 3). tiny_free frees the
 * layer and its bottoms; the tops stay with the caller. */
static mtl_layer *anchor_target_tiny(const char *text, const float *gt, int g, mtl_tensor **tops)
{
    tiny_bottoms[0] = map4(1, 2, 3, 3, NULL);
    tiny_bottoms[1] = table(g, 6, gt);
    tiny_bottoms[2] = table(1, 3, (const float[]){16, 16, 1});
    mtl_layer *l = build_and_run(text, MTL_PHASE_TRAIN, tiny_bottoms, 3, tops, 4);
    if (!l)
        free_all(tiny_bottoms, 3);
    return l;
}

static void tiny_free(mtl_layer *l)
{
    gradcheck_free_layer(l);
    free_all(tiny_bottoms, 3);
}

static void test_anchor_target_labels(void)
{
    mtl_tensor *tops[4] = {mtl_tensor_create("labels"), mtl_tensor_create("targets"), mtl_tensor_create("inside"),
                           mtl_tensor_create("outside")};

    /* gt [0, 0, 10, 8]: anchor (0,0) [0,0,8,8] IoU 64 / 80 = 0.8 (fg); anchor (0,1) [8,0,16,8]
     * IoU 16 / 128 = 0.125 (bg); (1,0) and (1,1) IoU 0 (bg); row and column 2 cross the image */
    mtl_layer *l = anchor_target_tiny(AT_TINY "}", (const float[]){0, 0, 0, 10, 8, 1}, 1, tops);
    if (l) {
        const float want[9] = {1, 0, -1, 0, 0, -1, -1, -1, -1};
        CHECK_INT(tops[0]->ndim, 4);
        CHECK_INT(tops[0]->shape[2], 3);
        CHECK_INT(tops[1]->shape[1], 4);
        for (int i = 0; i < 9; i++)
            CHECK_MSG(tops[0]->data[i] == want[i], "label %d = %g, expected %g", i, tops[0]->data[i], want[i]);
        /* target of anchor (0,0): centre (5, 4) vs (4, 4), width 10 vs 8 */
        float delta[4];
        mtl_box_encode((const float[]){0, 0, 8, 8}, (const float[]){0, 0, 10, 8}, NULL, NULL, delta);
        CHECK_NEAR(delta[0], 0.125, 1e-6);
        CHECK_NEAR(delta[2], log(10.0 / 8.0), 1e-6);
        for (int k = 0; k < 4; k++) {
            CHECK_NEAR(tops[1]->data[k * 9 + 0], delta[k], 1e-6);
            CHECK_NEAR(tops[2]->data[k * 9 + 0], 1.0, 0);
            /* 4 labelled anchors, uniform weights 1 / 4 */
            CHECK_NEAR(tops[3]->data[k * 9 + 0], 0.25, 1e-7);
            CHECK_NEAR(tops[3]->data[k * 9 + 1], 0.25, 1e-7);
            CHECK_NEAR(tops[3]->data[k * 9 + 4], 0.25, 1e-7);
            for (int i = 1; i < 9; i++) {
                CHECK_NEAR(tops[1]->data[k * 9 + i], 0.0, 0);
                CHECK_NEAR(tops[2]->data[k * 9 + i], 0.0, 0);
            }
            CHECK_NEAR(tops[3]->data[k * 9 + 2], 0.0, 0); /* ignored */
            CHECK_NEAR(tops[3]->data[k * 9 + 8], 0.0, 0);
        }
        tiny_free(l);
    }

    /* positive_weight 0.3: fg 0.3 / 1, bg 0.7 / 3 */
    l = anchor_target_tiny(AT_TINY "positive_weight: 0.3 }", (const float[]){0, 0, 0, 10, 8, 1}, 1, tops);
    if (l) {
        CHECK_NEAR(tops[3]->data[0], 0.3, 1e-6);
        CHECK_NEAR(tops[3]->data[1], 0.7 / 3, 1e-6);
        CHECK_NEAR(tops[3]->data[3 * 9 + 4], 0.7 / 3, 1e-6);
        CHECK_NEAR(tops[3]->data[2], 0.0, 0);
        tiny_free(l);
    }

    /* gt [2, 2, 10, 10]: IoU with (0,0) 36 / 92 = 0.391 (below 0.7, but the gt's best anchor: fg),
     * with (0,1) and (1,0) 12 / 116 = 0.103, with (1,1) 4 / 124 = 0.032. negative_overlap 0.1:
     * the 0.103 anchors are neither (ignored), (1,1) is background. */
    l = anchor_target_tiny(AT_TINY "negative_overlap: 0.1 }", (const float[]){0, 2, 2, 10, 10, 1}, 1, tops);
    if (l) {
        const float want[9] = {1, -1, -1, -1, 0, -1, -1, -1, -1};
        for (int i = 0; i < 9; i++)
            CHECK_MSG(tops[0]->data[i] == want[i], "argmax rule: label %d = %g, expected %g", i, tops[0]->data[i],
                      want[i]);
        for (int k = 0; k < 4; k++)
            CHECK_NEAR(tops[1]->data[k * 9], ((const float[]){0.25f, 0.25f, 0, 0})[k], 1e-6);
        /* 2 labelled: 1 / 2 each */
        CHECK_NEAR(tops[3]->data[0], 0.5, 1e-7);
        CHECK_NEAR(tops[3]->data[4], 0.5, 1e-7);
        tiny_free(l);
    }

    /* the same gt with negative_overlap 0.4: the best anchor (0.391) is below it; without
     * clobber_positives the argmax rule wins (fg), with it background wins */
    l = anchor_target_tiny(AT_TINY "negative_overlap: 0.4 }", (const float[]){0, 2, 2, 10, 10, 1}, 1, tops);
    if (l) {
        CHECK_NEAR(tops[0]->data[0], 1.0, 0);
        CHECK_NEAR(tops[0]->data[1], 0.0, 0);
        tiny_free(l);
    }
    l = anchor_target_tiny(AT_TINY "negative_overlap: 0.4 clobber_positives: true }",
                           (const float[]){0, 2, 2, 10, 10, 1}, 1, tops);
    if (l) {
        CHECK_NEAR(tops[0]->data[0], 0.0, 0);
        CHECK_INT(count_equal(tops[0]->data, 9, 1.0f), 0);
        CHECK_INT(count_equal(tops[0]->data, 9, 0.0f), 4);
        tiny_free(l);
    }

    /* ties: gt [4, 0, 12, 8] overlaps (0,0) and (0,1) by 32 / 96 = 1/3 each: both are its best */
    l = anchor_target_tiny(AT_TINY "}", (const float[]){0, 4, 0, 12, 8, 1}, 1, tops);
    if (l) {
        CHECK_NEAR(tops[0]->data[0], 1.0, 0);
        CHECK_NEAR(tops[0]->data[1], 1.0, 0);
        CHECK_NEAR(tops[0]->data[3], 0.0, 0);
        CHECK_NEAR(tops[0]->data[4], 0.0, 0);
        /* (0,1)'s target: centre 8 vs 12 over width 8 */
        CHECK_NEAR(tops[1]->data[1], -0.5, 1e-6);
        tiny_free(l);
    }

    /* allowed_border: 8 keeps the crossing anchors (x2 = 24 <= 16 + 8), 7 does not, -1 keeps all */
    const char *borders[3] = {AT_TINY "allowed_border: 8 }", AT_TINY "allowed_border: 7 }",
                              AT_TINY "allowed_border: -1 }"};
    const int kept[3] = {9, 4, 9};
    for (int b = 0; b < 3; b++) {
        l = anchor_target_tiny(borders[b], (const float[]){0, 0, 0, 10, 8, 1}, 1, tops);
        if (l) {
            CHECK_INT(count_equal(tops[0]->data, 9, -1.0f), 9 - kept[b]);
            CHECK_INT(count_equal(tops[0]->data, 9, 1.0f), 1);
            tiny_free(l);
        }
    }

    /* no gt: every kept anchor is background, weights 1 / 4 */
    l = anchor_target_tiny(AT_TINY "}", NULL, 0, tops);
    if (l) {
        const float want[9] = {0, 0, -1, 0, 0, -1, -1, -1, -1};
        for (int i = 0; i < 9; i++)
            CHECK_MSG(tops[0]->data[i] == want[i], "no gt: label %d = %g, expected %g", i, tops[0]->data[i], want[i]);
        CHECK_NEAR(tops[3]->data[0], 0.25, 1e-7);
        CHECK_INT(count_equal(tops[2]->data, tops[2]->count, 0.0f), 36);
        tiny_free(l);
    }
    free_all(tops, 4);
}

/* An 8 x 8 map over two 64 x 64 images: image 0 has 10 gt boxes, each exactly one cell (IoU 1 with
 * one anchor, 0 with the rest), image 1 has none. */
static void test_anchor_target_sampling(void)
{
    float gt[10 * 6];
    int gt_cells[10];
    for (int j = 0; j < 10; j++) {
        int cell = (j * 7 + 3) % 64, y = cell / 8, x = cell % 8;
        gt_cells[j] = cell;
        const float row[6] = {0, 8.0f * x, 8.0f * y, 8.0f * x + 8, 8.0f * y + 8, 1 + j % 3};
        memcpy(gt + 6 * j, row, sizeof(row));
    }
    mtl_tensor *bottoms[3] = {map4(2, 2, 8, 8, NULL), table(10, 6, gt),
                              table(2, 3, (const float[]){64, 64, 1, 64, 64, 1})};
    mtl_tensor *tops[4] = {mtl_tensor_create("labels"), mtl_tensor_create("targets"), mtl_tensor_create("inside"),
                           mtl_tensor_create("outside")};
    static const struct {
        const char *text;
        int fg0, bg0, bg1;
    } cases[] = {
        {AT_TINY "batch_size: 8 }", 4, 4, 8},                    /* fg budget 4 of 10, bg 8 - 4 */
        {AT_TINY "batch_size: 40 }", 10, 30, 40},                /* all 10 fg, bg 40 - 10 of 54 */
        {AT_TINY "batch_size: 10 fg_fraction: 0.25 }", 2, 8, 10}, /* int(2.5) = 2 */
        {AT_TINY "}", 10, 54, 64},                               /* 256: everything is kept */
    };
    for (int c = 0; c < 4; c++) {
        mtl_layer *l = build_and_run(cases[c].text, MTL_PHASE_TRAIN, bottoms, 3, tops, 4);
        if (!l)
            continue;
        const float *lab = tops[0]->data;
        CHECK_INT(tops[0]->count, 128);
        CHECK_INT(count_equal(lab, 64, 1.0f), cases[c].fg0);
        CHECK_INT(count_equal(lab, 64, 0.0f), cases[c].bg0);
        CHECK_INT(count_equal(lab, 64, -1.0f), 64 - cases[c].fg0 - cases[c].bg0);
        CHECK_INT(count_equal(lab + 64, 64, 1.0f), 0);
        CHECK_INT(count_equal(lab + 64, 64, 0.0f), cases[c].bg1);
        int stray = 0;
        for (int i = 0; i < 64; i++) {
            int is_gt = 0;
            for (int j = 0; j < 10; j++)
                is_gt |= gt_cells[j] == i;
            stray += lab[i] == 1.0f && !is_gt;
            stray += lab[i] == 0.0f && is_gt;
            /* outside weights: 1 / labelled for labelled anchors of image 0, 0 elsewhere */
            float w = lab[i] >= 0 ? 1.0f / (float)(cases[c].fg0 + cases[c].bg0) : 0.0f;
            stray += fabsf(tops[3]->data[2 * 64 + i] - w) > 1e-7f;
            /* targets of one-cell gts on their own cell are 0; inside weights mark fg */
            stray += tops[1]->data[i] != 0.0f;
            stray += tops[2]->data[i] != (lab[i] == 1.0f ? 1.0f : 0.0f);
        }
        CHECK_MSG(stray == 0, "%s: %d anchors with the wrong label or weights", cases[c].text, stray);
        gradcheck_free_layer(l);
    }

    /* fg sampled from the generator: two runs with different draws give different subsets, each of
     * the budget's size (the generator is reset per build, so rerun forward on one layer) */
    mtl_layer *l = build_and_run(cases[0].text, MTL_PHASE_TRAIN, bottoms, 3, tops, 4);
    if (l) {
        float first[64];
        memcpy(first, tops[0]->data, sizeof(first));
        int differs = 0;
        mtl_error err;
        for (int rep = 0; rep < 5 && !differs; rep++) {
            CHECK_OK(test_forward(l, &err), &err);
            CHECK_INT(count_equal(tops[0]->data, 64, 1.0f), 4);
            differs = memcmp(first, tops[0]->data, sizeof(first)) != 0;
        }
        CHECK_MSG(differs, "sampling never changed over 5 forwards");
        gradcheck_free_layer(l);
    }
    free_all(bottoms, 3);
    free_all(tops, 4);
}

/* Anchors with three ratios and two scales; targets of a fg anchor are mtl_box_encode's. */
static void test_anchor_target_shapes(void)
{
    /* 2 x 3 map, stride 16, base 16: A = 3 x 2 = 6 anchors per cell */
    const float gt[6] = {0, 10, 6, 42, 38, 2};
    mtl_tensor *bottoms[3] = {map4(1, 12, 2, 3, NULL), table(1, 6, gt), table(1, 3, (const float[]){32, 48, 1})};
    mtl_tensor *tops[4] = {mtl_tensor_create("labels"), mtl_tensor_create("targets"), mtl_tensor_create("inside"),
                           mtl_tensor_create("outside")};
    mtl_layer *l = build_and_run("type: 'AnchorTarget' anchor_target_param { scales: 1 scales: 2 allowed_border: -1 }",
                                 MTL_PHASE_TRAIN, bottoms, 3, tops, 4);
    if (l) {
        CHECK_INT(tops[0]->shape[0], 1);
        CHECK_INT(tops[0]->shape[1], 1);
        CHECK_INT(tops[0]->shape[2], 12);
        CHECK_INT(tops[0]->shape[3], 3);
        CHECK_INT(tops[1]->shape[1], 24);
        float cell[6 * 4];
        mtl_box_anchors(16, (const float[]){0.5f, 1, 2}, 3, (const float[]){1, 2}, 2, cell);
        int fg = 0, bad = 0;
        for (int a = 0; a < 6; a++)
            for (int y = 0; y < 2; y++)
                for (int x = 0; x < 3; x++) {
                    float label = tops[0]->data[(a * 2 + y) * 3 + x];
                    if (label != 1.0f)
                        continue;
                    fg++;
                    float anchor[4], delta[4];
                    mtl_box_anchor_at(cell, a, y, x, 16, anchor);
                    mtl_box_encode(anchor, gt + 1, NULL, NULL, delta);
                    for (int k = 0; k < 4; k++) {
                        bad += fabsf(tops[1]->data[((4 * a + k) * 2 + y) * 3 + x] - delta[k]) > 1e-6f;
                        bad += tops[2]->data[((4 * a + k) * 2 + y) * 3 + x] != 1.0f;
                    }
                }
        CHECK_MSG(fg >= 1, "no foreground anchor");
        CHECK_INT(bad, 0);
        gradcheck_free_layer(l);
    }

    free_all(bottoms, 3);

    /* the default A = 9, one top only, and py-faster-rcnn's fourth bottom (the image, unread) */
    mtl_tensor *nine[4] = {map4(1, 18, 2, 3, NULL), table(1, 6, gt), table(1, 3, (const float[]){32, 48, 1}),
                           map4(1, 3, 32, 48, NULL)};
    l = build_and_run("type: 'AnchorTarget'", MTL_PHASE_TRAIN, nine, 4, tops, 1);
    if (l) {
        CHECK_INT(tops[0]->shape[2], 18);
        gradcheck_free_layer(l);
    }
    free_all(nine, 4);
    free_all(tops, 4);
}

static void test_anchor_target_errors(void)
{
    mtl_tensor *bottoms[3] = {map4(1, 4, 3, 3, NULL), table(1, 6, (const float[]){0, 0, 0, 8, 8, 1}),
                              table(1, 3, (const float[]){16, 16, 1})};
    check_build_fails(AT_TINY "}", bottoms, 3, 4, MTL_ERR_SHAPE, "has 4 channels; 2 x A = 2 expected");
    check_build_fails("type: 'AnchorTarget'", bottoms, 3, 1, MTL_ERR_SHAPE, "A = 3 ratios x 3 scales = 9");
    check_build_fails(AT_TINY "positive_overlap: 0 }", bottoms, 3, 1, MTL_ERR_CONFIG, "positive_overlap");
    check_build_fails(AT_TINY "fg_fraction: 1.5 }", bottoms, 3, 1, MTL_ERR_CONFIG, "fg_fraction");
    check_build_fails(AT_TINY "ratios: -1 }", bottoms, 3, 1, MTL_ERR_CONFIG, "ratios must be positive");
    check_build_fails(AT_TINY "batchsize: 3 }", bottoms, 3, 1, MTL_ERR_CONFIG, "batch_size");
    mtl_tensor *ok = map4(1, 2, 3, 3, NULL), *info2 = table(2, 3, NULL);
    mtl_tensor *bad_info[3] = {ok, bottoms[1], info2};
    check_build_fails(AT_TINY "}", bad_info, 3, 1, MTL_ERR_SHAPE, "im_info (bottom 2, 2x3) must be 1 x 3");
    mtl_tensor *gt5 = table(1, 5, NULL);
    mtl_tensor *bad_gt[3] = {ok, gt5, bottoms[2]};
    check_build_fails(AT_TINY "}", bad_gt, 3, 1, MTL_ERR_SHAPE, "gt_boxes (bottom 1, 1x5)");
    mtl_tensor *gt_img1 = table(1, 6, (const float[]){1, 0, 0, 8, 8, 1});
    mtl_tensor *bad_index[3] = {ok, gt_img1, bottoms[2]};
    check_forward_fails(AT_TINY "}", bad_index, 3, 1, MTL_ERR_ARGUMENT, "batch index 1; a whole number in [0, 1)");
    free_all(bottoms, 3);
    mtl_tensor_free(ok);
    mtl_tensor_free(info2);
    mtl_tensor_free(gt5);
    mtl_tensor_free(gt_img1);
}

/* ---- Proposal ------------------------------------------------------------------------------------
 * The same anchors (cells of stride 8) on a 2 x 2 map over a 16 x 16 image:
 *   cell (0,0) [0,0,8,8]   score 0.9,  delta (0.25, 0, 0, 0)       -> [2, 0, 10, 8]
 *   cell (0,1) [8,0,16,8]  score 0.8,  delta (0, 0, log 2, 0)      -> [4, 0, 20, 8], clipped [4, 0, 16, 8]
 *   cell (1,0) [0,8,8,16]  score 0.7,  delta (0.125, -1, 0, 0)     -> [1, 0, 9, 8]: IoU 56/72 = 0.78 with
 *                                                                      the first, suppressed at 0.7
 *   cell (1,1) [8,8,16,16] score 0.95, delta (0, 0, log 0.25, 0)   -> [11, 8, 13, 16]: 2 wide */

#define PROP_TINY "type: 'Proposal' proposal_param { feat_stride: 8 scales: 1 ratios: 1 "

static void fill_proposal_image(float *prob, float *pred)
{
    const float fg[4] = {0.9f, 0.8f, 0.7f, 0.95f};
    const float deltas[4][4] = {{0.25f, 0, 0, 0}, {0, 0, logf(2), 0}, {0.125f, -1, 0, 0}, {0, 0, logf(0.25f), 0}};
    for (int cell = 0; cell < 4; cell++) {
        prob[cell] = 1 - fg[cell];
        prob[4 + cell] = fg[cell];
        for (int k = 0; k < 4; k++)
            pred[k * 4 + cell] = deltas[cell][k];
    }
}

static void check_rois(const mtl_tensor *rois, const float *want, int rows, const char *what)
{
    CHECK_MSG(rois->ndim == 2 && rois->shape[0] == rows && rois->shape[1] == 5, "%s: rois are %dx%d, expected %dx5",
              what, rois->shape[0], rois->shape[1], rows);
    if (rois->shape[0] != rows)
        return;
    for (int i = 0; i < 5 * rows; i++)
        CHECK_MSG(fabsf(rois->data[i] - want[i]) < 1e-4f, "%s: roi %d value %d = %g, expected %g", what, i / 5, i % 5,
                  rois->data[i], want[i]);
}

static void test_proposal(void)
{
    float prob[2 * 8], pred[2 * 16];
    fill_proposal_image(prob, pred);
    fill_proposal_image(prob + 8, pred + 16);
    mtl_tensor *bottoms[3] = {map4(1, 2, 2, 2, prob), map4(1, 4, 2, 2, pred), table(1, 3, (const float[]){16, 16, 1})};
    mtl_tensor *tops[2] = {mtl_tensor_create("rois"), mtl_tensor_create("scores")};
    const char *text = PROP_TINY "train { min_size: 4 } test { min_size: 1 post_nms_top_n: 1 } }";

    /* TRAIN: (1,1) is too narrow, (1,0) is suppressed */
    mtl_layer *l = build_and_run(text, MTL_PHASE_TRAIN, bottoms, 3, tops, 2);
    if (l) {
        check_rois(tops[0], (const float[]){0, 2, 0, 10, 8, 0, 4, 0, 16, 8}, 2, "train");
        CHECK_INT(tops[1]->shape[0], 2);
        CHECK_INT(tops[1]->shape[1], 1);
        CHECK_NEAR(tops[1]->data[0], 0.9, 1e-6);
        CHECK_NEAR(tops[1]->data[1], 0.8, 1e-6);
        gradcheck_free_layer(l);
    }
    /* TEST: min_size 1 keeps (1,1), the best score, and post_nms_top_n 1 keeps only it */
    l = build_and_run(text, MTL_PHASE_TEST, bottoms, 3, tops, 2);
    if (l) {
        check_rois(tops[0], (const float[]){0, 11, 8, 13, 16}, 1, "test");
        CHECK_NEAR(tops[1]->data[0], 0.95, 1e-6);
        gradcheck_free_layer(l);
    }
    /* min_size is inclusive: 8 keeps the 8 x 8 boxes */
    l = build_and_run(PROP_TINY "train { min_size: 8 } }", MTL_PHASE_TRAIN, bottoms, 3, tops, 1);
    if (l) {
        check_rois(tops[0], (const float[]){0, 2, 0, 10, 8, 0, 4, 0, 16, 8}, 2, "min_size 8");
        gradcheck_free_layer(l);
    }
    /* a looser NMS keeps the near duplicate; pre_nms_top_n 1 only looks at the best box */
    l = build_and_run(PROP_TINY "train { min_size: 4 nms_thresh: 0.8 } }", MTL_PHASE_TRAIN, bottoms, 3, tops, 1);
    if (l) {
        check_rois(tops[0], (const float[]){0, 2, 0, 10, 8, 0, 4, 0, 16, 8, 0, 1, 0, 9, 8}, 3, "nms 0.8");
        gradcheck_free_layer(l);
    }
    l = build_and_run(PROP_TINY "train { min_size: 4 pre_nms_top_n: 1 } }", MTL_PHASE_TRAIN, bottoms, 3, tops, 1);
    if (l) {
        check_rois(tops[0], (const float[]){0, 2, 0, 10, 8}, 1, "pre_nms_top_n 1");
        gradcheck_free_layer(l);
    }
    /* default TRAIN min_size 16 drops all four boxes: the whole image stands in */
    l = build_and_run(PROP_TINY "}", MTL_PHASE_TRAIN, bottoms, 3, tops, 2);
    if (l) {
        check_rois(tops[0], (const float[]){0, 0, 0, 16, 16}, 1, "fallback");
        CHECK_NEAR(tops[1]->data[0], 0.0, 0);
        gradcheck_free_layer(l);
    }
    free_all(bottoms, 3);

    /* two images: image 1 has the same maps but scale 100, so min_size 4 becomes 400 and only its
     * whole-image box (20 wide, 12 high) remains; rows are image 0's then image 1's */
    mtl_tensor *two[3] = {map4(2, 2, 2, 2, prob), map4(2, 4, 2, 2, pred),
                          table(2, 3, (const float[]){16, 16, 1, 12, 20, 100})};
    l = build_and_run(text, MTL_PHASE_TRAIN, two, 3, tops, 2);
    if (l) {
        check_rois(tops[0], (const float[]){0, 2, 0, 10, 8, 0, 4, 0, 16, 8, 1, 0, 0, 20, 12}, 3, "two images");
        gradcheck_free_layer(l);
    }
    free_all(two, 3);

    /* the default anchors on a real-sized map: every roi inside its image, at most post_nms_top_n */
    mtl_tensor *big[3] = {map4(1, 18, 6, 8, NULL), map4(1, 36, 6, 8, NULL), table(1, 3, (const float[]){96, 128, 1})};
    gradcheck_fill(big[0], 0, 1, 5);
    gradcheck_fill(big[1], -0.5f, 0.5f, 6);
    l = build_and_run("type: 'Proposal' proposal_param { test { post_nms_top_n: 20 } }", MTL_PHASE_TEST, big, 3, tops,
                      2);
    if (l) {
        int rows = tops[0]->shape[0], bad = 0;
        CHECK_MSG(rows >= 1 && rows <= 20, "%d rois", rows);
        for (int r = 0; r < rows; r++) {
            const float *b = tops[0]->data + 5 * r;
            bad += b[0] != 0 || b[1] < 0 || b[2] < 0 || b[3] > 128 || b[4] > 96;
            bad += b[3] - b[1] < 16 || b[4] - b[2] < 16;
            bad += r > 0 && tops[1]->data[r] > tops[1]->data[r - 1];
            for (int q = 0; q < r; q++)
                bad += mtl_box_iou(b + 1, tops[0]->data + 5 * q + 1) > 0.7f;
        }
        CHECK_INT(bad, 0);
        gradcheck_free_layer(l);
    }
    free_all(big, 3);

    /* errors */
    mtl_tensor *bad_pred[3] = {map4(1, 2, 2, 2, prob), map4(1, 8, 2, 2, NULL), table(1, 3, (const float[]){16, 16, 1})};
    check_build_fails(PROP_TINY "}", bad_pred, 3, 1, MTL_ERR_SHAPE,
                      "rpn_bbox_pred (bottom 1, 1x8x2x2) has 8 channels; 4 x A = 4 expected");
    check_build_fails(PROP_TINY "train { nms_thresh: 2 } }", bad_pred, 3, 1, MTL_ERR_CONFIG, "nms_thresh");
    check_build_fails(PROP_TINY "train { min_sz: 2 } }", bad_pred, 3, 1, MTL_ERR_CONFIG, "min_sz");
    free_all(bad_pred, 3);
    mtl_tensor *bad_size[3] = {map4(1, 2, 2, 2, prob), map4(1, 4, 2, 3, NULL), table(1, 3, (const float[]){16, 16, 1})};
    check_build_fails(PROP_TINY "}", bad_size, 3, 1, MTL_ERR_SHAPE, "must match bottom 0 (1x2x2x2) in N, H and W");
    free_all(bad_size, 3);
    mtl_tensor *bad_info[3] = {map4(1, 2, 2, 2, prob), map4(1, 4, 2, 2, pred), table(1, 3, (const float[]){16, 0, 1})};
    check_forward_fails(PROP_TINY "}", bad_info, 3, 1, MTL_ERR_ARGUMENT, "im_info row 0 is [16, 0, 1]");
    free_all(bad_info, 3);
    free_all(tops, 2);
}

/* ---- ProposalTarget ------------------------------------------------------------------------------
 * One gt box [0, 0, 10, 10] of class 2 (num_classes 3) and five rois of image 0:
 *   r0 [0, 0, 10, 10]   IoU 1      fg
 *   r1 [0, 0, 10, 5]    IoU 0.5    fg (>= fg_threshold)
 *   r2 [0, 0, 10, 4]    IoU 0.4    bg
 *   r3 [20, 20, 30, 30] IoU 0      bg (>= bg_threshold_lo 0)
 *   r4 [5, 0, 15, 10]   IoU 1/3    bg
 * plus, with use_gt, the gt box itself (fg). */

static const float pt_rois[5 * 5] = {
    0, 0, 0, 10, 10, 0, 0, 0, 10, 5, 0, 0, 0, 10, 4, 0, 20, 20, 30, 30, 0, 5, 0, 15, 10,
};
static const float pt_gt[6] = {0, 0, 0, 10, 10, 2};

/* Index of the candidate box of a sampled row: 0..4 the rois, 5 the gt; -1 none. */
static int candidate_of(const float *row)
{
    for (int r = 0; r < 5; r++)
        if (memcmp(row, pt_rois + 5 * r, 5 * sizeof(float)) == 0)
            return r;
    return row[0] == 0 && row[1] == 0 && row[2] == 0 && row[3] == 10 && row[4] == 10 ? 5 : -1;
}

static void test_proposal_target(void)
{
    mtl_tensor *bottoms[2] = {table(5, 5, pt_rois), table(1, 6, pt_gt)};
    mtl_tensor *tops[5] = {mtl_tensor_create("rois"), mtl_tensor_create("labels"), mtl_tensor_create("targets"),
                           mtl_tensor_create("inside"), mtl_tensor_create("outside")};

    /* room for everything: fg r0, r1 and the gt (r0 and the gt are the same box, so candidate_of
     * cannot tell them apart: count them together), then bg r2, r3, r4 */
    mtl_layer *l = build_and_run("type: 'ProposalTarget' proposal_target_param { num_classes: 3 batch_size: 64 "
                                 "fg_fraction: 0.5 }",
                                 MTL_PHASE_TRAIN, bottoms, 2, tops, 5);
    if (l) {
        CHECK_INT(tops[0]->shape[0], 6);
        CHECK_INT(tops[1]->ndim, 1);
        CHECK_INT(tops[1]->shape[0], 6);
        CHECK_INT(tops[2]->shape[1], 12);
        int seen[6] = {0};
        for (int i = 0; i < 6; i++) {
            int c = candidate_of(tops[0]->data + 5 * i);
            CHECK_MSG(c >= 0, "row %d is not a candidate", i);
            if (c < 0)
                continue;
            seen[c == 5 ? 0 : c]++;
            int fg = c == 0 || c == 1 || c == 5;
            CHECK_MSG(fg == (i < 3), "row %d (candidate %d): foreground rows come first", i, c);
            CHECK_NEAR(tops[1]->data[i], fg ? 2 : 0, 0);
            for (int k = 0; k < 12; k++) {
                int here = fg && k >= 8;
                float target = 0;
                if (here && c == 1) /* dy = (5 - 2.5) / 5 = 0.5, dh = log 2: over stds 0.1, 0.2 */
                    target = ((const float[]){0, 5.0f, 0, logf(2) / 0.2f})[k - 8];
                CHECK_NEAR(tops[2]->data[12 * i + k], target, 1e-5);
                CHECK_NEAR(tops[3]->data[12 * i + k], here ? 1 : 0, 0);
                CHECK_NEAR(tops[4]->data[12 * i + k], here ? 1 : 0, 0);
            }
        }
        CHECK_INT(seen[0], 2);
        CHECK_INT(seen[1] + seen[2] + seen[3] + seen[4], 4);
        gradcheck_free_layer(l);
    }

    /* custom normalisation: (encode - mean) / std for r1: dy (0.5 - 0.1) / 2, dh log 2 / 4 */
    l = build_and_run("type: 'ProposalTarget' proposal_target_param { num_classes: 3 use_gt: false "
                      "bbox_normalize_means: 0 bbox_normalize_means: 0.1 "
                      "bbox_normalize_means: 0 bbox_normalize_means: 0 "
                      "bbox_normalize_stds: 1 bbox_normalize_stds: 2 bbox_normalize_stds: 3 bbox_normalize_stds: 4 }",
                      MTL_PHASE_TRAIN, bottoms, 2, tops, 3);
    if (l) {
        CHECK_INT(tops[0]->shape[0], 5); /* no gt candidate: r0, r1 then r2, r3, r4 */
        for (int i = 0; i < 2; i++) {
            int c = candidate_of(tops[0]->data + 5 * i);
            CHECK_MSG(c == 0 || c == 1, "row %d is candidate %d, expected r0 or r1", i, c);
            const float want[4] = {0, c == 1 ? 0.2f : -0.05f, 0, c == 1 ? logf(2) / 4 : 0};
            for (int k = 0; k < 4; k++)
                CHECK_NEAR(tops[2]->data[12 * i + 8 + k], want[k], 1e-6);
        }
        gradcheck_free_layer(l);
    }

    /* counts: batch_size 4, fg_fraction 0.5 -> 2 of the 3 fg, 2 of the 3 bg; fg_fraction 0.25
     * -> 1 fg, then all 3 bg; bg_threshold_lo 0.2 drops r3 from the background */
    static const struct {
        const char *params;
        int fg, bg;
    } counts[] = {
        {"num_classes: 3 batch_size: 4 fg_fraction: 0.5", 2, 2},
        {"num_classes: 3 batch_size: 4 fg_fraction: 0.25", 1, 3},
        {"num_classes: 3 batch_size: 64 bg_threshold_lo: 0.2", 3, 2},
        {"num_classes: 3 batch_size: 64 fg_threshold: 0.6 bg_threshold_hi: 0.45", 2, 3},
        {"num_classes: 3 batch_size: 2 fg_fraction: 0", 0, 2},
        {"num_classes: 3 batch_size: 6 fg_fraction: 0.25", 2, 3},  /* round(1.5) = 2 */
        {"num_classes: 3 batch_size: 10 fg_fraction: 0.25", 2, 3}, /* round(2.5) = 2, numpy's half to even */
    };
    for (int c = 0; c < 7; c++) {
        char text[256];
        snprintf(text, sizeof(text), "type: 'ProposalTarget' proposal_target_param { %s }", counts[c].params);
        l = build_and_run(text, MTL_PHASE_TRAIN, bottoms, 2, tops, 5);
        if (!l)
            continue;
        int rows = tops[0]->shape[0];
        CHECK_MSG(rows == counts[c].fg + counts[c].bg, "%s: %d rows, expected %d", text, rows,
                  counts[c].fg + counts[c].bg);
        CHECK_INT(count_equal(tops[1]->data, rows, 2.0f), counts[c].fg);
        CHECK_INT(count_equal(tops[1]->data, rows, 0.0f), counts[c].bg);
        for (int i = 0; i < rows && i < counts[c].fg; i++)
            CHECK_NEAR(tops[1]->data[i], 2, 0);
        int r3 = 0;
        for (int i = 0; i < rows; i++)
            r3 += candidate_of(tops[0]->data + 5 * i) == 3;
        if (c == 2)
            CHECK_INT(r3, 0);
        gradcheck_free_layer(l);
    }
    free_all(bottoms, 2);

    /* two images: image 1 has two rois and no gt (all background), image 2 only a gt (with
     * use_gt: false it has no candidates and is skipped); rows come image by image */
    const float rois2[] = {1, 0, 0, 4, 4, 0, 0, 0, 10, 10, 1, 2, 2, 6, 6};
    const float gt2[] = {2, 0, 0, 5, 5, 1, 0, 0, 0, 10, 10, 2};
    mtl_tensor *multi[2] = {table(3, 5, rois2), table(2, 6, gt2)};
    l = build_and_run("type: 'ProposalTarget' proposal_target_param { num_classes: 3 use_gt: false }",
                      MTL_PHASE_TRAIN, multi, 2, tops, 5);
    if (l) {
        CHECK_INT(tops[0]->shape[0], 3);
        const float want_image[3] = {0, 1, 1}, want_label[3] = {2, 0, 0};
        for (int i = 0; i < 3 && tops[0]->shape[0] == 3; i++) {
            CHECK_NEAR(tops[0]->data[5 * i], want_image[i], 0);
            CHECK_NEAR(tops[1]->data[i], want_label[i], 0);
        }
        gradcheck_free_layer(l);
    }
    /* with use_gt, image 2's gt is its own foreground candidate (class 1: columns 4 .. 7) */
    l = build_and_run("type: 'ProposalTarget' proposal_target_param { num_classes: 3 }", MTL_PHASE_TRAIN, multi, 2,
                      tops, 5);
    if (l) {
        CHECK_INT(tops[0]->shape[0], 5);
        if (tops[0]->shape[0] == 5) {
            CHECK_NEAR(tops[0]->data[5 * 4], 2, 0);
            CHECK_NEAR(tops[1]->data[4], 1, 0);
            CHECK_NEAR(tops[3]->data[12 * 4 + 4], 1, 0);
            CHECK_NEAR(tops[3]->data[12 * 4 + 8], 0, 0);
        }
        gradcheck_free_layer(l);
    }
    free_all(multi, 2);

    /* empty inputs: no rois and no gt give no samples; no gt gives only background */
    mtl_tensor *empty[2] = {table(0, 5, NULL), table(0, 6, NULL)};
    l = build_and_run("type: 'ProposalTarget' proposal_target_param { num_classes: 3 }", MTL_PHASE_TRAIN, empty, 2,
                      tops, 5);
    if (l) {
        CHECK_INT(tops[0]->ndim, 2);
        CHECK_INT(tops[0]->shape[0], 0);
        CHECK_INT(tops[0]->shape[1], 5);
        CHECK_INT(tops[1]->shape[0], 0);
        CHECK_INT(tops[4]->shape[1], 12);
        gradcheck_free_layer(l);
    }
    mtl_tensor *no_gt[2] = {table(5, 5, pt_rois), empty[1]};
    l = build_and_run("type: 'ProposalTarget' proposal_target_param { num_classes: 3 }", MTL_PHASE_TRAIN, no_gt, 2,
                      tops, 2);
    if (l) {
        CHECK_INT(tops[0]->shape[0], 5);
        CHECK_INT(count_equal(tops[1]->data, 5, 0.0f), 5);
        gradcheck_free_layer(l);
    }
    mtl_tensor_free(no_gt[0]);
    free_all(empty, 2);
    free_all(tops, 5);
}

static void test_proposal_target_errors(void)
{
    mtl_tensor *bottoms[2] = {table(5, 5, pt_rois), table(1, 6, pt_gt)};
    check_build_fails("type: 'ProposalTarget'", bottoms, 2, 2, MTL_ERR_CONFIG, "needs num_classes");
    check_build_fails("type: 'ProposalTarget' proposal_target_param { num_classes: 1 }", bottoms, 2, 2,
                      MTL_ERR_CONFIG, "at least 2");
    check_build_fails("type: 'ProposalTarget' proposal_target_param { num_classes: 3 bbox_normalize_stds: 1 }",
                      bottoms, 2, 2, MTL_ERR_CONFIG, "bbox_normalize_stds has 1 values");
    check_build_fails("type: 'ProposalTarget' proposal_target_param { num_classes: 3 bg_threshold_lo: 0.6 }",
                      bottoms, 2, 2, MTL_ERR_CONFIG, "background IoU range");
    check_build_fails("type: 'ProposalTarget' proposal_target_param { num_classes: 3 fg_threshold: 0 }", bottoms, 2,
                      2, MTL_ERR_CONFIG, "fg_threshold");
    check_build_fails("type: 'ProposalTarget' proposal_target_param { num_classes: 3 }", bottoms, 1, 2,
                      MTL_ERR_CONFIG, "bottom");
    check_forward_fails("type: 'ProposalTarget' proposal_target_param { num_classes: 2 }", bottoms, 2, 2,
                        MTL_ERR_ARGUMENT, "gt_boxes row 0 has class 2; classes must be 1 .. 1");
    mtl_tensor *gt0 = table(1, 6, (const float[]){0, 0, 0, 10, 10, 0});
    mtl_tensor *bg_class[2] = {bottoms[0], gt0};
    check_forward_fails("type: 'ProposalTarget' proposal_target_param { num_classes: 3 }", bg_class, 2, 2,
                        MTL_ERR_ARGUMENT, "has class 0");
    mtl_tensor *neg = table(1, 5, (const float[]){-1, 0, 0, 4, 4});
    mtl_tensor *bad_index[2] = {neg, bottoms[1]};
    check_forward_fails("type: 'ProposalTarget' proposal_target_param { num_classes: 3 }", bad_index, 2, 2,
                        MTL_ERR_ARGUMENT, "rois row 0 has batch index -1");
    mtl_tensor *rois4 = table(2, 4, NULL);
    mtl_tensor *bad_shape[2] = {rois4, bottoms[1]};
    check_build_fails("type: 'ProposalTarget' proposal_target_param { num_classes: 3 }", bad_shape, 2, 2,
                      MTL_ERR_SHAPE, "rois (bottom 0, 2x4) must be a table of rows of 5 values");
    mtl_tensor_free(gt0);
    mtl_tensor_free(neg);
    mtl_tensor_free(rois4);
    free_all(bottoms, 2);
}

int main(void)
{
    test_anchor_target_labels();
    test_anchor_target_sampling();
    test_anchor_target_shapes();
    test_anchor_target_errors();
    test_proposal();
    test_proposal_target();
    test_proposal_target_errors();
    return check_finish();
}
