/* Tests for the box arithmetic of src/detection/boxes.c on hand-made boxes: areas and IoU (disjoint,
 * touching, contained, partial, identical, empty), the R-CNN encoding against hand-computed deltas
 * and its inverse, clamping, clipping, greedy NMS, the deterministic score sort and anchors. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "detection/boxes.h"

static void check_box(const float *got, float x1, float y1, float x2, float y2, float tol, const char *what)
{
    CHECK_MSG(fabsf(got[0] - x1) <= tol && fabsf(got[1] - y1) <= tol && fabsf(got[2] - x2) <= tol &&
                  fabsf(got[3] - y2) <= tol,
              "%s: got [%g %g %g %g], expected [%g %g %g %g]", what, got[0], got[1], got[2], got[3], x1, y1, x2, y2);
}

static void test_area_iou(void)
{
    const float a[4] = {0, 0, 4, 4}, inner[4] = {1, 1, 3, 3}, part[4] = {2, 1, 6, 5};
    const float far[4] = {10, 10, 12, 12}, touch[4] = {4, 0, 8, 4};
    const float flat[4] = {1, 1, 1, 3}, inverted[4] = {3, 3, 1, 1};
    CHECK_NEAR(mtl_box_area(a), 16.0, 0);
    CHECK_NEAR(mtl_box_area((const float[]){1, 2, 4, 6}), 12.0, 0);
    CHECK_NEAR(mtl_box_area(flat), 0.0, 0);
    CHECK_NEAR(mtl_box_area(inverted), 0.0, 0);

    CHECK_NEAR(mtl_box_iou(a, far), 0.0, 0);
    CHECK_NEAR(mtl_box_iou(a, touch), 0.0, 0); /* shares an edge only: no area in common */
    CHECK_NEAR(mtl_box_iou(a, inner), 4.0 / 16.0, 1e-7);
    CHECK_NEAR(mtl_box_iou(inner, a), 4.0 / 16.0, 1e-7);
    /* x overlap [2, 4] = 2, y overlap [1, 4] = 3: 6 / (16 + 16 - 6) */
    CHECK_NEAR(mtl_box_iou(a, part), 6.0 / 26.0, 1e-7);
    CHECK_NEAR(mtl_box_iou(part, a), 6.0 / 26.0, 1e-7);
    CHECK_NEAR(mtl_box_iou(a, a), 1.0, 0);
    CHECK_NEAR(mtl_box_iou(flat, flat), 0.0, 0);
    CHECK_NEAR(mtl_box_iou(flat, a), 0.0, 0);
    CHECK_NEAR(mtl_box_iou(inverted, a), 0.0, 0);
    CHECK_NEAR(mtl_box_iou(inverted, inverted), 0.0, 0);
    /* Fractional coordinates: [0.5, 0.5, 2.5, 1.5] (area 2) against [1, 0, 2, 2] (area 2): 1 x 1. */
    CHECK_NEAR(mtl_box_iou((const float[]){0.5f, 0.5f, 2.5f, 1.5f}, (const float[]){1, 0, 2, 2}), 1.0 / 3.0, 1e-7);
}

static void test_encode_decode(void)
{
    /* ref: w 10, h 20, centre (5, 10); gt: w 20, h 20, centre (12, 14). */
    const float ref[4] = {0, 0, 10, 20}, gt[4] = {2, 4, 22, 24};
    float d[4], back[4];
    mtl_box_encode(ref, gt, NULL, NULL, d);
    CHECK_NEAR(d[0], 0.7, 1e-6);          /* (12 - 5) / 10 */
    CHECK_NEAR(d[1], 0.2, 1e-6);          /* (14 - 10) / 20 */
    CHECK_NEAR(d[2], log(2.0), 1e-6);     /* log(20 / 10) */
    CHECK_NEAR(d[3], 0.0, 1e-6);          /* log(20 / 20) */
    mtl_box_decode(ref, d, NULL, NULL, back);
    check_box(back, 2, 4, 22, 24, 1e-4f, "round trip, no normalisation");

    const float means[4] = {0.1f, 0, 0, 0}, stds[4] = {0.1f, 0.1f, 0.2f, 0.2f};
    mtl_box_encode(ref, gt, means, stds, d);
    CHECK_NEAR(d[0], 6.0, 1e-5);          /* (0.7 - 0.1) / 0.1 */
    CHECK_NEAR(d[1], 2.0, 1e-5);          /* 0.2 / 0.1 */
    CHECK_NEAR(d[2], log(2.0) / 0.2, 1e-5);
    CHECK_NEAR(d[3], 0.0, 1e-6);
    mtl_box_decode(ref, d, means, stds, back);
    check_box(back, 2, 4, 22, 24, 1e-4f, "round trip, means and stds");
    /* stds alone (means NULL) */
    mtl_box_encode(ref, gt, NULL, stds, d);
    CHECK_NEAR(d[0], 7.0, 1e-5);
    mtl_box_decode(ref, d, NULL, stds, back);
    check_box(back, 2, 4, 22, 24, 1e-4f, "round trip, stds only");

    /* Decode by hand: centre (5, 10) moves by (1 * 10, -0.5 * 20) to (15, 0); w stays 10, h halves. */
    mtl_box_decode(ref, (const float[]){1.0f, -0.5f, 0.0f, logf(0.5f)}, NULL, NULL, back);
    check_box(back, 10, -5, 20, 5, 1e-5f, "hand decode");

    /* Round trips over a grid of fractional boxes. */
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            float r[4] = {1.5f * i, 0.75f * j, 1.5f * i + 3.0f + j, 0.75f * j + 2.0f + 0.5f * i};
            float g[4] = {0.3f * j, 2.0f * i, 0.3f * j + 1.0f + 2.0f * i, 2.0f * i + 4.0f + j};
            mtl_box_encode(r, g, means, stds, d);
            mtl_box_decode(r, d, means, stds, back);
            check_box(back, g[0], g[1], g[2], g[3], 1e-4f, "grid round trip");
        }
}

static void test_decode_clamp(void)
{
    /* A 16 x 16 box at centre (8, 8): dw = 10 is clamped to log(1000 / 16), giving width 1000. */
    const float ref[4] = {0, 0, 16, 16};
    float out[4];
    mtl_box_decode(ref, (const float[]){0, 0, 10, 0}, NULL, NULL, out);
    check_box(out, -492, 0, 508, 16, 1e-2f, "dw clamped");
    /* The clamp applies after un-normalising: 100 * 0.2 = 20 > 4.135 for dh. */
    const float stds[4] = {0.1f, 0.1f, 0.2f, 0.2f};
    mtl_box_decode(ref, (const float[]){0, 0, 0, 100}, NULL, stds, out);
    check_box(out, 0, -492, 16, 508, 1e-2f, "dh clamped after stds");
    /* Shrinking is not clamped: a very negative dw leaves a finite, tiny box at the centre. */
    mtl_box_decode(ref, (const float[]){0, 0, -50, 0}, NULL, NULL, out);
    CHECK(isfinite(out[0]) && isfinite(out[2]) && out[2] - out[0] < 1e-6f && fabsf(out[0] - 8) < 1e-5f);
    /* Just under the clamp is used as given. */
    mtl_box_decode(ref, (const float[]){0, 0, logf(2.0f), 0}, NULL, NULL, out);
    check_box(out, -8, 0, 24, 16, 1e-4f, "dw below the clamp");
}

static void test_clip(void)
{
    float b[4] = {-5, 3, 12, 20};
    mtl_box_clip(b, 10, 15);
    check_box(b, 0, 3, 10, 15, 0, "clip");
    float out[4] = {12, -4, 15, -1};
    mtl_box_clip(out, 10, 15);
    check_box(out, 10, 0, 10, 0, 0, "clip outside");
    float in[4] = {1.5f, 2.5f, 9.5f, 14.5f};
    mtl_box_clip(in, 10, 15);
    check_box(in, 1.5f, 2.5f, 9.5f, 14.5f, 0, "clip inside");
}

static void check_keep(const int *keep, int n, const int *want, int n_want, const char *what)
{
    int ok = n == n_want;
    for (int i = 0; ok && i < n; i++)
        ok = keep[i] == want[i];
    CHECK_MSG(ok, "%s: kept %d boxes (first %d), expected %d (first %d)", what, n, n > 0 ? keep[0] : -1, n_want,
              n_want > 0 ? want[0] : -1);
}

static void test_nms(void)
{
    /* Rows x1 y1 x2 y2 score (stride 5). IoUs worked out by hand:
     * b0-b1: 81 / 119 = 0.681, b0-b3: 50 / 100 = 0.5, b1-b3: 36 / 114 = 0.316, b2-b4: 90 / 110 = 0.818,
     * every other pair 0. */
    const float boxes[5 * 5] = {
        0, 0, 10, 10, 0.9f,   /* b0 */
        1, 1, 11, 11, 0.8f,   /* b1 */
        20, 20, 30, 30, 0.7f, /* b2 */
        0, 0, 10, 5, 0.95f,   /* b3 */
        21, 20, 31, 30, 0.6f, /* b4 */
    };
    float scores[5];
    for (int i = 0; i < 5; i++)
        scores[i] = boxes[5 * i + 4];
    int order[5], keep[5];
    mtl_box_sort_by_score(scores, 5, order);
    check_keep(order, 5, (const int[]){3, 0, 1, 2, 4}, 5, "score order");

    int n = mtl_box_nms(boxes, 5, order, 5, 0.5f, 0, keep);
    check_keep(keep, n, (const int[]){3, 0, 2}, 3, "nms 0.5 (IoU exactly 0.5 is kept)");
    n = mtl_box_nms(boxes, 5, order, 5, 0.4f, 0, keep);
    check_keep(keep, n, (const int[]){3, 1, 2}, 3, "nms 0.4");
    n = mtl_box_nms(boxes, 5, order, 5, 0.7f, 0, keep);
    check_keep(keep, n, (const int[]){3, 0, 1, 2}, 4, "nms 0.7");
    n = mtl_box_nms(boxes, 5, order, 5, 1.0f, 0, keep);
    check_keep(keep, n, (const int[]){3, 0, 1, 2, 4}, 5, "nms 1.0 keeps all");
    n = mtl_box_nms(boxes, 5, order, 5, 0.0f, 0, keep);
    check_keep(keep, n, (const int[]){3, 2}, 2, "nms 0 keeps disjoint only");
    n = mtl_box_nms(boxes, 5, order, 5, 0.5f, 2, keep);
    check_keep(keep, n, (const int[]){3, 0}, 2, "max_keep 2");
    n = mtl_box_nms(boxes, 5, order, 5, 0.5f, 1, keep);
    check_keep(keep, n, (const int[]){3}, 1, "max_keep 1");
    n = mtl_box_nms(boxes, 5, order, 5, 0.5f, 10, keep);
    check_keep(keep, n, (const int[]){3, 0, 2}, 3, "max_keep above the count");
    n = mtl_box_nms(boxes, 5, order, 0, 0.5f, 0, keep);
    CHECK_INT(n, 0);
    /* A subset order: only b1 and b0 considered (caller's order), b1 first suppresses b0. */
    n = mtl_box_nms(boxes, 5, (const int[]){1, 0}, 2, 0.5f, 0, keep);
    check_keep(keep, n, (const int[]){1}, 1, "caller's order");

    /* Ties: two identical boxes with the same score; the sort puts the lower index first, so it
     * is the one kept. */
    const float twins[3 * 4] = {5, 5, 9, 9, 0, 0, 2, 2, 5, 5, 9, 9};
    const float tie_scores[3] = {0.5f, 0.1f, 0.5f};
    mtl_box_sort_by_score(tie_scores, 3, order);
    check_keep(order, 3, (const int[]){0, 2, 1}, 3, "tie order");
    n = mtl_box_nms(twins, 4, order, 3, 0.3f, 0, keep);
    check_keep(keep, n, (const int[]){0, 1}, 2, "tie keeps the lower index");
}

static void test_sort(void)
{
    const float s[6] = {0.5f, 0.9f, 0.5f, 0.1f, 0.9f, 0.5f};
    int order[6];
    mtl_box_sort_by_score(s, 6, order);
    check_keep(order, 6, (const int[]){1, 4, 0, 2, 5, 3}, 6, "sort with ties");
    mtl_box_sort_by_score(s, 1, order);
    CHECK_INT(order[0], 0);
    mtl_box_sort_by_score(s, 0, order); /* nothing to do, must not touch memory */
    /* NaN ranks as -inf (ties with it by index), so the order stays total. */
    const float odd[4] = {NAN, 1.0f, -INFINITY, INFINITY};
    mtl_box_sort_by_score(odd, 4, order);
    check_keep(order, 4, (const int[]){3, 1, 0, 2}, 4, "sort with NaN and infinities");

    /* A larger set with many ties: decreasing score, increasing index within a score. */
    enum { N = 1001 };
    float *big = malloc(N * sizeof(float));
    int *ord = malloc(N * sizeof(int)), *seen = calloc(N, sizeof(int));
    if (!big || !ord || !seen) {
        CHECK_MSG(0, "out of memory");
        free(big), free(ord), free(seen);
        return;
    }
    for (int i = 0; i < N; i++)
        big[i] = (float)((i * 37) % 10);
    mtl_box_sort_by_score(big, N, ord);
    int ok = 1;
    for (int i = 0; i < N; i++) {
        ok &= ord[i] >= 0 && ord[i] < N && !seen[ord[i]];
        if (ord[i] >= 0 && ord[i] < N)
            seen[ord[i]] = 1;
        if (i > 0)
            ok &= big[ord[i - 1]] > big[ord[i]] || (big[ord[i - 1]] == big[ord[i]] && ord[i - 1] < ord[i]);
    }
    CHECK_MSG(ok, "sort of %d values with ties is not a stable decreasing permutation", N);
    free(big), free(ord), free(seen);
}

static void test_anchors(void)
{
    const float ratios[3] = {0.5f, 1, 2}, scales[2] = {1, 2};
    float a[6 * 4];
    mtl_box_anchors(16, ratios, 3, scales, 2, a);
    /* ratio 0.5: w = 16 / sqrt(0.5) = 22.627, h = 16 * sqrt(0.5) = 11.314 (scale 2 doubles both);
     * ratio 1: 16 x 16 and 32 x 32; ratio 2: 11.314 x 22.627 and 22.627 x 45.255. */
    const float half_r = 11.3137085f, quarter_r = 5.65685425f;
    check_box(a + 0, -half_r, -quarter_r, half_r, quarter_r, 1e-4f, "ratio 0.5 scale 1");
    check_box(a + 4, -2 * half_r, -2 * quarter_r, 2 * half_r, 2 * quarter_r, 1e-4f, "ratio 0.5 scale 2");
    check_box(a + 8, -8, -8, 8, 8, 1e-5f, "ratio 1 scale 1");
    check_box(a + 12, -16, -16, 16, 16, 1e-5f, "ratio 1 scale 2");
    check_box(a + 16, -quarter_r, -half_r, quarter_r, half_r, 1e-4f, "ratio 2 scale 1");
    check_box(a + 20, -half_r, -2 * half_r, half_r, 2 * half_r, 1e-4f, "ratio 2 scale 2");
    for (int r = 0; r < 3; r++)
        for (int s = 0; s < 2; s++) {
            const float *b = a + 4 * (r * 2 + s);
            float side = 16 * scales[s];
            CHECK_NEAR(mtl_box_area(b), side * side, 1e-2);
            CHECK_NEAR((b[3] - b[1]) / (b[2] - b[0]), ratios[r], 1e-5);
            CHECK_NEAR(b[0] + b[2], 0.0, 1e-5);
            CHECK_NEAR(b[1] + b[3], 0.0, 1e-5);
        }

    /* Anchor 3 (32 x 32) at cell (y 2, x 1), stride 16: centre (24, 40). */
    float out[4];
    mtl_box_anchor_at(a, 3, 2, 1, 16, out);
    check_box(out, 8, 24, 40, 56, 1e-5f, "anchor_at");
    mtl_box_anchor_at(a, 0, 0, 0, 16, out);
    check_box(out, 8 - half_r, 8 - quarter_r, 8 + half_r, 8 + quarter_r, 1e-4f, "anchor_at origin");
    mtl_box_anchor_at(a, 5, 3, 7, 8, out);
    check_box(out, 60 - half_r, 28 - 2 * half_r, 60 + half_r, 28 + 2 * half_r, 1e-4f, "anchor_at stride 8");
}

int main(void)
{
    test_area_iou();
    test_encode_decode();
    test_decode_clamp();
    test_clip();
    test_nms();
    test_sort();
    test_anchors();
    return check_finish();
}
