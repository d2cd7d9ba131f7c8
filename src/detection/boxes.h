/* Box arithmetic shared by the region layers, the detection output and the evaluation: IoU,
 * non-maximum suppression, the R-CNN box encoding, clipping and anchor generation.
 * Convention everywhere in mtl: a box is 4 floats x1 y1 x2 y2 in continuous pixel coordinates
 * (the image covers [0, width] x [0, height]; pixel (i, j) covers [j, j + 1) x [i, i + 1)), so
 * a box's width is x2 - x1, with no "+ 1" (COCO's [x, y, w, h] is x1 = x, x2 = x + w). */
#ifndef MTL_DETECTION_BOXES_H
#define MTL_DETECTION_BOXES_H

#include <stdint.h>

/* Largest log-scale change a decoded delta may apply (log(1000 / 16), as in Faster R-CNN): keeps
 * exp() finite for wild early-training predictions. */
#define MTL_BOX_MAX_LOG_SCALE 4.135166556742356f

/* Area of a box (0 for an empty or inverted one). */
float mtl_box_area(const float *box /* 4 */);

/* Intersection over union of two boxes; 0 when both are empty. */
float mtl_box_iou(const float *a /* 4 */, const float *b /* 4 */);

/* R-CNN regression target of box `gt` relative to `ref` (an anchor or a proposal):
 *   dx = (gx - rx) / rw, dy = (gy - ry) / rh, dw = log(gw / rw), dh = log(gh / rh)
 * over centres and sizes, each then divided by stds[k] after subtracting means[k] (means / stds
 * may be NULL for 0 / 1). ref must have positive width and height; gt too. */
void mtl_box_encode(const float *ref /* 4 */, const float *gt /* 4 */, const float *means /* 4 */,
                    const float *stds /* 4 */, float *delta /* 4 */);

/* The inverse: delta (un-normalised with means / stds, either may be NULL) applied to ref; dw and
 * dh are clamped to MTL_BOX_MAX_LOG_SCALE. out may alias neither input. */
void mtl_box_decode(const float *ref /* 4 */, const float *delta /* 4 */, const float *means /* 4 */,
                    const float *stds /* 4 */, float *out /* 4 */);

/* Clips a box into [0, width] x [0, height]. */
void mtl_box_clip(float *box /* 4 */, float width, float height);

/* Greedy non-maximum suppression. boxes: n boxes, `stride` floats apart (the first 4 of each are
 * x1 y1 x2 y2); order: the n indices sorted by decreasing score (the caller sorts, so ties are
 * its choice). Keeps a box unless it overlaps an already kept one by IoU > thresh; stops after
 * max_keep (<= 0: no limit). Writes the kept indices (in score order) to keep and returns how
 * many. Scratch-free: O(n * kept). */
int mtl_box_nms(const float *boxes, int stride, const int *order, int n, float thresh, int max_keep, int *keep);

/* Indices 0..n-1 sorted by decreasing score, ties by increasing index (a stable order, so the
 * result is the same on every machine). */
void mtl_box_sort_by_score(const float *scores, int n, int *order);

/* Anchors of one feature-map cell, centred at (0, 0): for each ratio r (height / width), for
 * each scale s, a box of area (base_size * s)^2 with h / w = r (Faster R-CNN's order: ratios
 * outer, scales inner). Writes n_ratios * n_scales boxes of 4 floats. */
void mtl_box_anchors(float base_size, const float *ratios, int n_ratios, const float *scales, int n_scales,
                     float *anchors /* n_ratios * n_scales * 4 */);

/* The anchor a of the cell (y, x) on a feature map of the given stride: the cell anchor shifted
 * to the cell's centre ((x + 0.5) stride, (y + 0.5) stride). */
void mtl_box_anchor_at(const float *cell_anchors, int a, int y, int x, float stride, float *out /* 4 */);

#endif
