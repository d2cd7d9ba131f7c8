/* Box arithmetic for detection (see boxes.h for the coordinate convention): IoU, greedy NMS, the
 * R-CNN delta encoding and its inverse, clipping, a deterministic score sort and anchors. All in
 * continuous coordinates, width = x2 - x1, so no "+ 1" anywhere. */
#include <math.h>

#include "detection/boxes.h"

float mtl_box_area(const float *box /* 4 */)
{
    float w = box[2] - box[0], h = box[3] - box[1];
    return w > 0 && h > 0 ? w * h : 0.0f;
}

float mtl_box_iou(const float *a /* 4 */, const float *b /* 4 */)
{
    float iw = fminf(a[2], b[2]) - fmaxf(a[0], b[0]);
    float ih = fminf(a[3], b[3]) - fmaxf(a[1], b[1]);
    if (!(iw > 0 && ih > 0))
        return 0.0f;
    float inter = iw * ih;
    float uni = mtl_box_area(a) + mtl_box_area(b) - inter;
    return uni > 0 ? inter / uni : 0.0f;
}

void mtl_box_encode(const float *ref /* 4 */, const float *gt /* 4 */, const float *means /* 4 */,
                    const float *stds /* 4 */, float *delta /* 4 */)
{
    float rw = ref[2] - ref[0], rh = ref[3] - ref[1];
    float rx = ref[0] + 0.5f * rw, ry = ref[1] + 0.5f * rh;
    float gw = gt[2] - gt[0], gh = gt[3] - gt[1];
    float gx = gt[0] + 0.5f * gw, gy = gt[1] + 0.5f * gh;
    float d[4] = {(gx - rx) / rw, (gy - ry) / rh, logf(gw / rw), logf(gh / rh)};
    for (int k = 0; k < 4; k++) {
        float v = d[k] - (means ? means[k] : 0.0f);
        delta[k] = stds ? v / stds[k] : v;
    }
}

void mtl_box_decode(const float *ref /* 4 */, const float *delta /* 4 */, const float *means /* 4 */,
                    const float *stds /* 4 */, float *out /* 4 */)
{
    float d[4];
    for (int k = 0; k < 4; k++)
        d[k] = delta[k] * (stds ? stds[k] : 1.0f) + (means ? means[k] : 0.0f);
    /* Only growth is clamped (as Faster R-CNN does): a very negative log-scale just gives a
     * tiny box, while a large positive one would overflow exp(). */
    d[2] = fminf(d[2], MTL_BOX_MAX_LOG_SCALE);
    d[3] = fminf(d[3], MTL_BOX_MAX_LOG_SCALE);
    float rw = ref[2] - ref[0], rh = ref[3] - ref[1];
    float cx = ref[0] + 0.5f * rw + d[0] * rw, cy = ref[1] + 0.5f * rh + d[1] * rh;
    float w = expf(d[2]) * rw, h = expf(d[3]) * rh;
    out[0] = cx - 0.5f * w;
    out[1] = cy - 0.5f * h;
    out[2] = cx + 0.5f * w;
    out[3] = cy + 0.5f * h;
}

static float clampf(float v, float hi)
{
    return v < 0 ? 0.0f : v > hi ? hi : v;
}

void mtl_box_clip(float *box /* 4 */, float width, float height)
{
    box[0] = clampf(box[0], width);
    box[1] = clampf(box[1], height);
    box[2] = clampf(box[2], width);
    box[3] = clampf(box[3], height);
}

int mtl_box_nms(const float *boxes, int stride, const int *order, int n, float thresh, int max_keep, int *keep)
{
    int kept = 0;
    for (int i = 0; i < n; i++) {
        if (max_keep > 0 && kept >= max_keep)
            break;
        const float *b = boxes + (int64_t)order[i] * stride;
        int suppressed = 0;
        for (int j = 0; j < kept && !suppressed; j++)
            suppressed = mtl_box_iou(b, boxes + (int64_t)keep[j] * stride) > thresh;
        if (!suppressed)
            keep[kept++] = order[i];
    }
    return kept;
}

/* 1 when index i sorts after index j: lower score, or the same score and a higher index. NaN
 * scores rank as -inf, so the order stays total (and the sort deterministic) whatever comes in. */
static int sorts_after(const float *scores, int i, int j)
{
    float si = isnan(scores[i]) ? -INFINITY : scores[i];
    float sj = isnan(scores[j]) ? -INFINITY : scores[j];
    return si < sj || (si == sj && i > j);
}

static void sift_down(const float *scores, int *order, int root, int n)
{
    for (;;) {
        int child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && sorts_after(scores, order[child + 1], order[child]))
            child++;
        if (!sorts_after(scores, order[child], order[root]))
            return;
        int t = order[root];
        order[root] = order[child];
        order[child] = t;
        root = child;
    }
}

/* Heapsort over a total order (score, then index): in place, O(n log n), no scratch, and the
 * result is unique, so it does not matter that heapsort itself is not stable. */
void mtl_box_sort_by_score(const float *scores, int n, int *order)
{
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = n / 2 - 1; i >= 0; i--)
        sift_down(scores, order, i, n);
    for (int end = n - 1; end > 0; end--) {
        int t = order[0];
        order[0] = order[end];
        order[end] = t;
        sift_down(scores, order, 0, end);
    }
}

void mtl_box_anchors(float base_size, const float *ratios, int n_ratios, const float *scales, int n_scales,
                     float *anchors /* n_ratios * n_scales * 4 */)
{
    for (int r = 0; r < n_ratios; r++) {
        float root = sqrtf(ratios[r]);
        for (int s = 0; s < n_scales; s++) {
            float side = base_size * scales[s];
            float w = side / root, h = side * root; /* w * h = side^2, h / w = ratio */
            float *a = anchors + 4 * (r * n_scales + s);
            a[0] = -0.5f * w;
            a[1] = -0.5f * h;
            a[2] = 0.5f * w;
            a[3] = 0.5f * h;
        }
    }
}

void mtl_box_anchor_at(const float *cell_anchors, int a, int y, int x, float stride, float *out /* 4 */)
{
    float cx = ((float)x + 0.5f) * stride, cy = ((float)y + 0.5f) * stride;
    const float *c = cell_anchors + 4 * a;
    out[0] = c[0] + cx;
    out[1] = c[1] + cy;
    out[2] = c[2] + cx;
    out[3] = c[3] + cy;
}
