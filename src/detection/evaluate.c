/* VOC and COCO average precision of detections (see evaluate.h). Everything is grouped once by
 * (class, image) with two sorts; each class is then matched image by image. The matching rules and
 * the interpolations follow py-faster-rcnn's voc_eval.py and pycocotools' COCOeval step for step, so
 * numbers agree with theirs (docs/detection.md lists the few deliberate differences). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "detection/boxes.h"
#include "detection/evaluate.h"

/* Sort keys: ground truth by (class, image, position); detections by (class, image, score
 * descending, position), which is each (image, class) list in pycocotools' stable score order. */
typedef struct gt_key {
    int class_id;
    int64_t image, index;
} gt_key;

typedef struct det_key {
    int class_id;
    float score;
    int64_t image, index;
} det_key;

/* A detection in a class-wide ranking: its score and its place in the (image, score) order, which
 * breaks ties so the ranking is a stable sort. */
typedef struct ranked {
    float score;
    int64_t pos;
} ranked;

static int compare_gt(const void *pa, const void *pb)
{
    const gt_key *a = pa, *b = pb;
    if (a->class_id != b->class_id)
        return a->class_id < b->class_id ? -1 : 1;
    if (a->image != b->image)
        return a->image < b->image ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

static int compare_det(const void *pa, const void *pb)
{
    const det_key *a = pa, *b = pb;
    if (a->class_id != b->class_id)
        return a->class_id < b->class_id ? -1 : 1;
    if (a->image != b->image)
        return a->image < b->image ? -1 : 1;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

static int compare_ranked(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return (a->pos > b->pos) - (a->pos < b->pos);
}

double mtl_det_coco_iou(int t)
{
    /* numpy.linspace(0.5, 0.95, 10): start + t * step, the last one exactly the stop value */
    return t >= MTL_DET_COCO_N_IOUS - 1 ? 0.95 : 0.5 + t * ((0.95 - 0.5) / (MTL_DET_COCO_N_IOUS - 1));
}

double mtl_det_ap_all_points(const double *recall, const double *precision, int64_t n)
{
    /* voc_ap(): recall framed by 0 and 1, precision by 0 and 0, the envelope taken from the right;
     * the last frame step (up to recall 1) always meets envelope 0, so it adds nothing */
    double ap = 0.0, envelope = 0.0;
    for (int64_t i = n - 1; i >= 0; i--) {
        envelope = fmax(envelope, precision[i]);
        ap += (recall[i] - (i > 0 ? recall[i - 1] : 0.0)) * envelope;
    }
    return ap;
}

double mtl_det_ap_101_points(const double *recall, const double *precision, int64_t n)
{
    /* Recall points from the top down: the first detection reaching each (numpy.searchsorted,
     * side 'left') only moves left, so the envelope (the maximum precision from there on) grows
     * as a running maximum. */
    double sum = 0.0, envelope = 0.0;
    int64_t first = n, seen = n; /* envelope = max(precision[seen..n-1]) */
    for (int r = MTL_DET_COCO_N_RECALLS - 1; r >= 0; r--) {
        double point = r == MTL_DET_COCO_N_RECALLS - 1 ? 1.0 : r * 0.01; /* numpy.linspace(0, 1, 101) */
        while (first > 0 && recall[first - 1] >= point)
            first--;
        if (first == n)
            continue; /* no detection reaches this recall: precision 0 */
        while (seen > first)
            envelope = fmax(envelope, precision[--seen]);
        sum += envelope;
    }
    return sum / MTL_DET_COCO_N_RECALLS;
}

/* COCO's overlap with a crowd region: the intersection over the detection's own area. */
static float crowd_overlap(const float *det, const float *crowd)
{
    float iw = fminf(det[2], crowd[2]) - fmaxf(det[0], crowd[0]);
    float ih = fminf(det[3], crowd[3]) - fmaxf(det[1], crowd[1]);
    float area = mtl_box_area(det);
    return iw > 0 && ih > 0 && area > 0 ? iw * ih / area : 0.0f;
}

static int finite_box(const float *b)
{
    return isfinite(b[0]) && isfinite(b[1]) && isfinite(b[2]) && isfinite(b[3]);
}

static mtl_status check_inputs(const mtl_det_gt *gt, int64_t n_gt, const mtl_det_result *dets, int64_t n_dets,
                               int64_t n_images, int n_classes, mtl_error *err)
{
    if (n_gt < 0 || n_dets < 0 || n_images < 0 || n_classes < 0 || (n_gt > 0 && !gt) || (n_dets > 0 && !dets))
        return mtl_fail(err, MTL_ERR_ARGUMENT, "detection evaluation needs non-negative counts and arrays for them");
    for (int64_t i = 0; i < n_gt; i++) {
        const mtl_det_gt *g = &gt[i];
        if (g->image < 0 || g->image >= n_images)
            return mtl_fail(err, MTL_ERR_ARGUMENT, "ground truth %lld: image %lld is not in [0, %lld)", (long long)i,
                            (long long)g->image, (long long)n_images);
        if (g->class_id < 0 || g->class_id >= n_classes)
            return mtl_fail(err, MTL_ERR_ARGUMENT, "ground truth %lld: class %d is not in [0, %d)", (long long)i,
                            g->class_id, n_classes);
        if (!finite_box(g->box))
            return mtl_fail(err, MTL_ERR_ARGUMENT, "ground truth %lld: a box coordinate is not finite", (long long)i);
    }
    for (int64_t i = 0; i < n_dets; i++) {
        const mtl_det_result *d = &dets[i];
        if (d->image < 0 || d->image >= n_images)
            return mtl_fail(err, MTL_ERR_ARGUMENT, "detection %lld: image %lld is not in [0, %lld)", (long long)i,
                            (long long)d->image, (long long)n_images);
        if (d->class_id < 0 || d->class_id >= n_classes)
            return mtl_fail(err, MTL_ERR_ARGUMENT, "detection %lld: class %d is not in [0, %d)", (long long)i,
                            d->class_id, n_classes);
        if (!finite_box(d->box) || !isfinite(d->score))
            return mtl_fail(err, MTL_ERR_ARGUMENT, "detection %lld: a box coordinate or the score is not finite",
                            (long long)i);
    }
    return MTL_OK;
}

/* One class's ground truth and detections: gt[gs..ge) and det[ds..de) of the sorted keys. */
typedef struct class_view {
    const mtl_det_gt *gt;
    const mtl_det_result *dets;
    const gt_key *gk;
    const det_key *dk;
    int64_t gs, ge, ds, de;
} class_view;

/* Scratch shared by the classes, sized for the largest. */
typedef struct scratch {
    ranked *rank;
    int64_t *lo, *hi;      /* per detection of the class: its image's ground truth, [lo, hi) of the keys */
    uint8_t *taken;        /* per ground truth of the class */
    uint8_t *flags;        /* COCO: per kept detection and threshold, FLAG_* */
    double *recall, *precision;
    int64_t *gt_order;     /* COCO: one image's ground truth, crowd last */
    float *ious;           /* COCO: one image's detections x ground truth */
    uint8_t *gt_matched;   /* COCO: one image's ground truth x thresholds */
} scratch;

enum { FLAG_MATCHED = 1, FLAG_IGNORED = 2 };

static void scratch_free(scratch *s)
{
    free(s->rank);
    free(s->lo);
    free(s->hi);
    free(s->taken);
    free(s->flags);
    free(s->recall);
    free(s->precision);
    free(s->gt_order);
    free(s->ious);
    free(s->gt_matched);
}

static mtl_status scratch_alloc(scratch *s, int64_t n_dets, int64_t n_gt, int64_t n_pairs, mtl_error *err)
{
    /* never empty, so qsort and memset always get real buffers */
    size_t nd = (size_t)(n_dets > 0 ? n_dets : 1), ng = (size_t)(n_gt > 0 ? n_gt : 1);
    size_t np = (size_t)(n_pairs > 0 ? n_pairs : 1);
    s->rank = malloc(nd * sizeof(*s->rank));
    s->lo = malloc(nd * sizeof(*s->lo));
    s->hi = malloc(nd * sizeof(*s->hi));
    s->flags = malloc(nd * MTL_DET_COCO_N_IOUS * sizeof(*s->flags));
    s->recall = malloc(nd * sizeof(*s->recall));
    s->precision = malloc(nd * sizeof(*s->precision));
    s->taken = malloc(ng * sizeof(*s->taken));
    s->gt_order = malloc(ng * sizeof(*s->gt_order));
    s->gt_matched = malloc(ng * MTL_DET_COCO_N_IOUS * sizeof(*s->gt_matched));
    s->ious = malloc(np * sizeof(*s->ious));
    if (!s->rank || !s->lo || !s->hi || !s->flags || !s->recall || !s->precision || !s->taken || !s->gt_order ||
        !s->gt_matched || !s->ious)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory evaluating %lld detections and %lld boxes of a class",
                        (long long)n_dets, (long long)n_gt);
    return MTL_OK;
}

/* voc_eval(): detections of the class in decreasing score; each takes the ground truth of its image
 * it overlaps most (the first of equals); above the threshold that is a true positive the first
 * time, a duplicate (false positive) after; a match on a difficult object counts neither way. */
static double voc_class_ap(const class_view *v, scratch *s)
{
    const int64_t nd = v->de - v->ds, ng = v->ge - v->gs;
    if (ng == 0)
        return NAN;
    int64_t npos = 0;
    for (int64_t g = v->gs; g < v->ge; g++)
        npos += !v->gt[v->gk[g].index].crowd;
    if (npos == 0)
        return NAN;
    memset(s->taken, 0, (size_t)ng);
    for (int64_t p = 0, g = v->gs; p < nd; p++) {
        int64_t image = v->dk[v->ds + p].image;
        while (g < v->ge && v->gk[g].image < image)
            g++;
        s->lo[p] = g;
        int64_t h = g;
        while (h < v->ge && v->gk[h].image == image)
            h++;
        s->hi[p] = h;
        s->rank[p] = (ranked){v->dk[v->ds + p].score, p};
    }
    qsort(s->rank, (size_t)nd, sizeof(ranked), compare_ranked);
    int64_t tp = 0, fp = 0, n = 0;
    for (int64_t r = 0; r < nd; r++) {
        int64_t p = s->rank[r].pos;
        const float *box = v->dets[v->dk[v->ds + p].index].box;
        float best = -1.0f;
        int64_t match = -1;
        for (int64_t g = s->lo[p]; g < s->hi[p]; g++) {
            float iou = mtl_box_iou(box, v->gt[v->gk[g].index].box);
            if (iou > best) {
                best = iou;
                match = g;
            }
        }
        if (match >= 0 && best > (float)MTL_DET_VOC_IOU) {
            if (v->gt[v->gk[match].index].crowd)
                continue;
            if (s->taken[match - v->gs])
                fp++;
            else {
                s->taken[match - v->gs] = 1;
                tp++;
            }
        } else {
            fp++;
        }
        s->recall[n] = (double)tp / (double)npos;
        s->precision[n] = (double)tp / fmax((double)(tp + fp), DBL_EPSILON);
        n++;
    }
    return mtl_det_ap_all_points(s->recall, s->precision, n);
}

/* COCOeval.evaluateImg() for one image of the class: its detections [d0, d1) of the keys (already
 * in score order, cut to the limit) against its ground truth [g0, g1). Writes each detection's
 * flags per threshold at s->flags + kept * MTL_DET_COCO_N_IOUS. */
static void coco_match_image(const class_view *v, int64_t d0, int64_t d1, int64_t g0, int64_t g1, int64_t kept,
                             scratch *s)
{
    const int64_t nd = d1 - d0, ng = g1 - g0;
    /* ground truth with crowd regions last, otherwise in order (a stable sort on the flag) */
    int64_t k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int64_t g = g0; g < g1; g++)
            if (!!v->gt[v->gk[g].index].crowd == pass)
                s->gt_order[k++] = v->gk[g].index;
    for (int64_t d = 0; d < nd; d++) {
        const float *box = v->dets[v->dk[d0 + d].index].box;
        for (int64_t g = 0; g < ng; g++) {
            const mtl_det_gt *gt = &v->gt[s->gt_order[g]];
            s->ious[d * ng + g] = gt->crowd ? crowd_overlap(box, gt->box) : mtl_box_iou(box, gt->box);
        }
    }
    memset(s->gt_matched, 0, (size_t)(ng * MTL_DET_COCO_N_IOUS));
    for (int t = 0; t < MTL_DET_COCO_N_IOUS; t++) {
        uint8_t *gm = s->gt_matched + (size_t)t * (size_t)ng;
        /* compared in float, as the IoUs are: an overlap that is exactly the threshold matches */
        const float thresh = (float)fmin(mtl_det_coco_iou(t), 1.0 - 1e-10);
        for (int64_t d = 0; d < nd; d++) {
            float best = thresh;
            int64_t m = -1;
            for (int64_t g = 0; g < ng; g++) {
                int crowd = v->gt[s->gt_order[g]].crowd != 0;
                if (gm[g] && !crowd)
                    continue;
                /* matched to a real object already: crowd regions (sorted last) cannot do better */
                if (m > -1 && !v->gt[s->gt_order[m]].crowd && crowd)
                    break;
                float iou = s->ious[d * ng + g];
                if (iou < best)
                    continue;
                best = iou;
                m = g;
            }
            uint8_t flags = 0;
            if (m > -1) {
                gm[m] = 1;
                flags = FLAG_MATCHED | (v->gt[s->gt_order[m]].crowd ? FLAG_IGNORED : 0);
            }
            s->flags[(kept + d) * MTL_DET_COCO_N_IOUS + t] = flags;
        }
    }
}

/* COCOeval.accumulate() for one class: every image's kept detections ranked by score (ties: image,
 * then rank within it), running precision and recall per threshold, 101-point AP each. */
static void coco_class_ap(const class_view *v, scratch *s, double *ap_at)
{
    int64_t npig = 0;
    for (int64_t g = v->gs; g < v->ge; g++)
        npig += !v->gt[v->gk[g].index].crowd;
    for (int t = 0; t < MTL_DET_COCO_N_IOUS; t++)
        ap_at[t] = NAN;
    if (npig == 0)
        return;
    int64_t kept = 0;
    int64_t d = v->ds, g = v->gs;
    while (d < v->de) {
        int64_t image = v->dk[d].image, d1 = d;
        while (d1 < v->de && v->dk[d1].image == image)
            d1++;
        while (g < v->ge && v->gk[g].image < image)
            g++;
        int64_t g1 = g;
        while (g1 < v->ge && v->gk[g1].image == image)
            g1++;
        int64_t nd = d1 - d < MTL_DET_COCO_MAX_DETS ? d1 - d : MTL_DET_COCO_MAX_DETS;
        coco_match_image(v, d, d + nd, g, g1, kept, s);
        for (int64_t k = 0; k < nd; k++)
            s->rank[kept + k] = (ranked){v->dk[d + k].score, kept + k};
        kept += nd;
        d = d1;
    }
    qsort(s->rank, (size_t)kept, sizeof(ranked), compare_ranked);
    for (int t = 0; t < MTL_DET_COCO_N_IOUS; t++) {
        int64_t tp = 0, fp = 0, n = 0;
        for (int64_t r = 0; r < kept; r++) {
            uint8_t flags = s->flags[s->rank[r].pos * MTL_DET_COCO_N_IOUS + t];
            if (flags & FLAG_IGNORED)
                continue; /* on a crowd region: no point of the curve (pycocotools' repeats change nothing) */
            if (flags & FLAG_MATCHED)
                tp++;
            else
                fp++;
            s->recall[n] = (double)tp / (double)npig;
            s->precision[n] = (double)tp / ((double)(tp + fp) + DBL_EPSILON);
            n++;
        }
        ap_at[t] = mtl_det_ap_101_points(s->recall, s->precision, n);
    }
}

/* The largest number of detections and ground-truth boxes of one class, and of one (image, class)
 * pair, to size the scratch. */
static void class_sizes(const gt_key *gk, int64_t n_gt, const det_key *dk, int64_t n_dets, int64_t *max_class_dets,
                        int64_t *max_class_gt, int64_t *max_pairs)
{
    *max_class_dets = *max_class_gt = *max_pairs = 0;
    for (int64_t i = 0, j; i < n_dets; i = j) {
        for (j = i; j < n_dets && dk[j].class_id == dk[i].class_id; j++)
            ;
        if (j - i > *max_class_dets)
            *max_class_dets = j - i;
    }
    for (int64_t i = 0, j; i < n_gt; i = j) {
        for (j = i; j < n_gt && gk[j].class_id == gk[i].class_id; j++)
            ;
        if (j - i > *max_class_gt)
            *max_class_gt = j - i;
    }
    /* per (class, image): kept detections x ground truth */
    for (int64_t i = 0, j, g = 0; i < n_dets; i = j) {
        for (j = i; j < n_dets && dk[j].class_id == dk[i].class_id && dk[j].image == dk[i].image; j++)
            ;
        while (g < n_gt && (gk[g].class_id < dk[i].class_id ||
                            (gk[g].class_id == dk[i].class_id && gk[g].image < dk[i].image)))
            g++;
        int64_t h = g;
        while (h < n_gt && gk[h].class_id == dk[i].class_id && gk[h].image == dk[i].image)
            h++;
        int64_t nd = j - i < MTL_DET_COCO_MAX_DETS ? j - i : MTL_DET_COCO_MAX_DETS;
        if (nd * (h - g) > *max_pairs)
            *max_pairs = nd * (h - g);
    }
}

mtl_status mtl_det_evaluate(const mtl_det_gt *gt, int64_t n_gt, const mtl_det_result *dets, int64_t n_dets,
                            int64_t n_images, int n_classes, mtl_det_class_eval *per_class, mtl_det_summary *summary,
                            mtl_error *err)
{
    MTL_TRY(check_inputs(gt, n_gt, dets, n_dets, n_images, n_classes, err));
    if (n_classes > 0 && !per_class)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "detection evaluation needs room for %d classes", n_classes);
    gt_key *gk = malloc((size_t)(n_gt > 0 ? n_gt : 1) * sizeof(gt_key));
    det_key *dk = malloc((size_t)(n_dets > 0 ? n_dets : 1) * sizeof(det_key));
    scratch s = {0};
    mtl_status st = MTL_OK;
    if (!gk || !dk) {
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory evaluating %lld detections", (long long)n_dets);
        goto done;
    }
    for (int64_t i = 0; i < n_gt; i++)
        gk[i] = (gt_key){gt[i].class_id, gt[i].image, i};
    for (int64_t i = 0; i < n_dets; i++)
        dk[i] = (det_key){dets[i].class_id, dets[i].score, dets[i].image, i};
    qsort(gk, (size_t)n_gt, sizeof(gt_key), compare_gt);
    qsort(dk, (size_t)n_dets, sizeof(det_key), compare_det);

    int64_t max_dets, max_gt, max_pairs;
    class_sizes(gk, n_gt, dk, n_dets, &max_dets, &max_gt, &max_pairs);
    if ((st = scratch_alloc(&s, max_dets, max_gt, max_pairs, err)) != MTL_OK)
        goto done;

    double voc_sum = 0.0, coco_sum = 0.0, coco_sum_at[MTL_DET_COCO_N_IOUS] = {0};
    int with_gt = 0;
    int64_t gi = 0, di = 0;
    for (int c = 0; c < n_classes; c++) {
        class_view v = {.gt = gt, .dets = dets, .gk = gk, .dk = dk, .gs = gi, .ds = di};
        while (gi < n_gt && gk[gi].class_id == c)
            gi++;
        while (di < n_dets && dk[di].class_id == c)
            di++;
        v.ge = gi;
        v.de = di;
        mtl_det_class_eval *e = &per_class[c];
        memset(e, 0, sizeof(*e));
        for (int64_t g = v.gs; g < v.ge; g++)
            e->n_crowd += gt[gk[g].index].crowd != 0;
        e->n_gt = v.ge - v.gs - e->n_crowd;
        e->n_dets = v.de - v.ds;
        e->voc_ap = voc_class_ap(&v, &s);
        coco_class_ap(&v, &s, e->coco_ap_at);
        e->coco_ap = 0.0;
        for (int t = 0; t < MTL_DET_COCO_N_IOUS; t++)
            e->coco_ap += e->coco_ap_at[t] / MTL_DET_COCO_N_IOUS;
        if (e->n_gt > 0) {
            with_gt++;
            voc_sum += e->voc_ap;
            coco_sum += e->coco_ap;
            for (int t = 0; t < MTL_DET_COCO_N_IOUS; t++)
                coco_sum_at[t] += e->coco_ap_at[t];
        }
    }
    if (summary) {
        summary->n_classes_with_gt = with_gt;
        summary->voc_map = with_gt ? voc_sum / with_gt : NAN;
        summary->coco_map = with_gt ? coco_sum / with_gt : NAN;
        for (int t = 0; t < MTL_DET_COCO_N_IOUS; t++)
            summary->coco_map_at[t] = with_gt ? coco_sum_at[t] / with_gt : NAN;
    }
done:
    free(gk);
    free(dk);
    scratch_free(&s);
    return st;
}
