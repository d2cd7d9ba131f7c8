/* Metric-learning losses and the normalisation that goes with them: ContrastiveLoss (Caffe's, plus
 * DeepID2's form), TripletLoss (given triplets, or triplets mined in a batch of embeddings and
 * labels), PairLoss (a contrastive loss over the pairs formed inside a batch from class labels, so
 * one batch feeds an identification and a verification signal) and L2Normalize. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers/labels.h"
#include "layers/layers.h"

/* below this many multiply-adds a loop is not worth waking the thread team */
#define METRIC_PARALLEL_MIN 32768

/* A buffer of doubles that only grows (reshape runs before every forward). */
typedef struct scratch {
    double *data;
    int64_t capacity;
} scratch;

static mtl_status scratch_reserve(const mtl_layer *l, scratch *s, int64_t n, mtl_error *err)
{
    if (n <= s->capacity)
        return MTL_OK;
    double *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!p)
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %lld scratch values", (long long)n);
    free(s->data);
    s->data = p;
    s->capacity = n;
    return MTL_OK;
}

static double squared_distance(const float *a, const float *b, int64_t dim)
{
    double sum = 0.0;
    for (int64_t k = 0; k < dim; k++) {
        double d = (double)a[k] - b[k];
        sum += d * d;
    }
    return sum;
}

/* Values per sample of a batch blob (its first axis is the batch). */
static int64_t per_sample(const mtl_tensor *t) { return t->shape[0] > 0 ? t->count / t->shape[0] : 0; }

/* Labels of a loss: one value per sample, bottom `index`, for a batch of n. */
static mtl_status check_labels(const mtl_layer *l, int index, int n, mtl_error *err)
{
    const mtl_tensor *y = l->bottoms[index];
    if (y->ndim < 1 || y->shape[0] != n || y->count != n) {
        char buf[128];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "labels (bottom %d, %s) must hold one value per sample: %d expected, %lld given", index,
                              mtl_tensor_shape_str(y, buf, sizeof(buf)), n, (long long)y->count);
    }
    return MTL_OK;
}

/* The gradient through pairwise terms: dx_i = scale * sum_j k[i][j] (x_i - x_j) for a symmetric
 * N x N matrix k of d loss / d (x_i - x_j) factors. One row per thread: deterministic. */
static void pairwise_backward(const float *x, int n, int64_t dim, const double *k, double scale, float *dx)
{
#pragma omp parallel for if ((int64_t)n * n * dim >= METRIC_PARALLEL_MIN) schedule(static)
    for (int i = 0; i < n; i++) {
        float *gi = dx + (int64_t)i * dim;
        const float *xi = x + (int64_t)i * dim;
        for (int64_t c = 0; c < dim; c++)
            gi[c] = 0.0f;
        for (int j = 0; j < n; j++) {
            double kij = k[(int64_t)i * n + j];
            if (kij == 0.0)
                continue;
            const float *xj = x + (int64_t)j * dim;
            float f = (float)(scale * kij);
            for (int64_t c = 0; c < dim; c++)
                gi[c] += f * (xi[c] - xj[c]);
        }
    }
}

/* ---- the contrastive term shared by ContrastiveLoss and PairLoss ----
 * For a pair (a, b) at distance d = ||a - b|| with margin m:
 *   CAFFE   (Caffe's default):      similar 1/2 d^2, dissimilar 1/2 max(m - d, 0)^2; mean over pairs
 *   LEGACY  (Caffe legacy_version): similar 1/2 d^2, dissimilar 1/2 max(m - d^2, 0); mean over pairs
 *   DEEPID2 (Sun et al. 2014, eq. 2): the same per-pair function as CAFFE, summed over pairs with
 *           no 1/N: each pair contributes exactly the paper's Verif(f_i, f_j, y_ij), as one of
 *           DeepID2's single-pair steps would, so loss_weight plays the paper's lambda at the
 *           paper's per-pair scale. ContrastiveLoss also takes the paper's label -1 for a
 *           dissimilar pair in this form.
 * Caffe's per-pair function and DeepID2's are the same; what the form changes is the reduction
 * (and, for ContrastiveLoss, the default loss_param normalization that implements it). Gradients
 * are exact: Caffe divides by d + 1e-4 for a dissimilar pair, mtl by d, with gradient 0 at d = 0
 * where the direction is undefined (the difference a - b is 0 there, so Caffe gives 0 as well). */

typedef enum contrastive_form { FORM_CAFFE, FORM_DEEPID2, FORM_LEGACY, FORM_COUNT } contrastive_form;
static const char *const form_names[] = {"CAFFE", "DEEPID2", "LEGACY"};
_Static_assert(sizeof(form_names) / sizeof(form_names[0]) == FORM_COUNT, "form names");

/* The loss of one pair at squared distance d2; *k is its gradient factor: d loss / d a = k (a - b). */
static double contrastive_term(contrastive_form form, double margin, int similar, double d2, double *k)
{
    if (similar) {
        *k = 1.0;
        return 0.5 * d2;
    }
    if (form == FORM_LEGACY) {
        double h = margin - d2;
        *k = h > 0.0 ? -1.0 : 0.0;
        return h > 0.0 ? 0.5 * h : 0.0;
    }
    double d = sqrt(d2), h = margin - d;
    if (h <= 0.0) {
        *k = 0.0;
        return 0.0;
    }
    *k = d > 0.0 ? -h / d : 0.0;
    return 0.5 * h * h;
}

/* Reads `form`, `margin` and `legacy_version` (ContrastiveLoss only) from a param message. */
static mtl_status read_form(mtl_layer *l, mtl_cfg_node *p, int has_legacy, contrastive_form *form, double *margin,
                            mtl_error *err)
{
    int f, legacy = 0;
    int form_given = mtl_cfg_count(p, "form") > 0;
    MTL_TRY(mtl_cfg_float(p, "margin", 1.0, margin, err));
    if (has_legacy)
        MTL_TRY(mtl_cfg_bool(p, "legacy_version", 0, &legacy, err));
    MTL_TRY(mtl_cfg_enum(p, "form", form_names, FORM_COUNT, legacy ? FORM_LEGACY : FORM_CAFFE, &f, err));
    if (!(*margin >= 0.0 && isfinite(*margin)))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "margin must be a finite value >= 0, got %g", *margin);
    if (legacy && form_given && f != FORM_LEGACY)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "legacy_version: true asks for form LEGACY, but form %s is given: keep one of them",
                              form_names[f]);
    *form = (contrastive_form)f;
    return MTL_OK;
}

/* Reads loss_param's ignore_label for a loss whose normalization is fixed by its own definition. */
static mtl_status read_ignore_label(mtl_layer *l, const char *why, int *has_ignore, int *ignore_label,
                                    mtl_error *err)
{
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "loss_param", &p, err));
    if (mtl_cfg_count(p, "normalization") > 0 || mtl_cfg_count(p, "normalize") > 0)
        return mtl_layer_fail(l, err, MTL_ERR_UNSUPPORTED, "loss_param normalization is not supported here: %s", why);
    int64_t v;
    *has_ignore = mtl_cfg_count(p, "ignore_label") > 0;
    MTL_TRY(mtl_cfg_int_range(p, "ignore_label", 0, INT_MIN, INT_MAX, &v, err));
    *ignore_label = (int)v;
    return MTL_OK;
}

/* ---- ContrastiveLoss -------------------------------------------------------------------------
 * Bottoms a, b (N x C, or N x C x 1 x 1: any shape with N first, both the same) and y (N: 1
 * similar, 0 dissimilar; -1 also dissimilar in form DEEPID2). loss = sum_i term_i / normalizer
 * with term_i from contrastive_term. The normalizer is loss_param's normalization, by default
 * VALID for CAFFE and LEGACY (the pairs whose label is not ignored: Caffe's 1/N when none is) and
 * NONE for DEEPID2. Labels that are NaN (missing) or ignore_label add nothing. Caffe reads any
 * nonzero label as similar; mtl rejects labels other than 0 and 1 so a mislabelled file is
 * noticed. */

typedef struct contrastive_priv {
    contrastive_form form;
    double margin;
    mtl_loss_config loss;
    double normalizer;
    scratch k; /* per pair: gradient factor of the last forward, 0 for ignored pairs */
} contrastive_priv;

static mtl_status contrastive_setup(mtl_layer *l, mtl_error *err)
{
    contrastive_priv *s = mtl_calloc_or_fail(1, sizeof(*s), err, "ContrastiveLoss state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "contrastive_loss_param", &p, err));
    MTL_TRY(read_form(l, p, 1, &s->form, &s->margin, err));
    return mtl_loss_read_param(l, s->form == FORM_DEEPID2 ? MTL_LOSS_NORM_NONE : MTL_LOSS_NORM_VALID, &s->loss,
                               err);
}

static mtl_status contrastive_reshape(mtl_layer *l, mtl_error *err)
{
    contrastive_priv *s = l->priv;
    const mtl_tensor *a = l->bottoms[0], *b = l->bottoms[1];
    if (a->ndim < 1)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bottom 0 is a scalar; losses need a batch axis");
    if (!mtl_tensor_same_shape(a, b)) {
        char as[128], bs[128];
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "the two features of a pair must have the same shape: bottom 0 is "
                              "%s, bottom 1 is %s",
                              mtl_tensor_shape_str(a, as, sizeof(as)), mtl_tensor_shape_str(b, bs, sizeof(bs)));
    }
    MTL_TRY(check_labels(l, 2, a->shape[0], err));
    MTL_TRY(scratch_reserve(l, &s->k, a->shape[0], err));
    return mtl_tensor_reshape(l->tops[0], 0, NULL, err);
}

static mtl_status contrastive_forward(mtl_layer *l, mtl_error *err)
{
    contrastive_priv *s = l->priv;
    const float *a = l->bottoms[0]->data, *b = l->bottoms[1]->data, *y = l->bottoms[2]->data;
    int n = l->bottoms[0]->shape[0];
    int64_t dim = per_sample(l->bottoms[0]);
    double loss = 0.0;
    int64_t valid = 0;
    for (int i = 0; i < n; i++) {
        s->k.data[i] = 0.0;
        if (mtl_label_is_ignored(y[i], s->loss.has_ignore_label, s->loss.ignore_label))
            continue;
        int similar;
        if (y[i] == 1.0f)
            similar = 1;
        else if (y[i] == 0.0f || (y[i] == -1.0f && s->form == FORM_DEEPID2))
            similar = 0;
        else
            return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT, "pair %d has label %g; labels are 1 (similar) or 0 "
                                  "(dissimilar)%s",
                                  i, (double)y[i], s->form == FORM_DEEPID2 ? " or -1 (dissimilar)" : "");
        double d2 = squared_distance(a + (int64_t)i * dim, b + (int64_t)i * dim, dim);
        loss += contrastive_term(s->form, s->margin, similar, d2, &s->k.data[i]);
        valid++;
    }
    s->normalizer = mtl_loss_normalizer(s->loss.normalization, n, 1, valid);
    l->tops[0]->data[0] = (float)(loss / s->normalizer);
    return MTL_OK;
}

/* d/da_i = w k_i (a_i - b_i) / normalizer, d/db_i the negative; labels get zeros. */
static void contrastive_backward(mtl_layer *l)
{
    contrastive_priv *s = l->priv;
    if (l->propagate_down[2])
        mtl_tensor_zero_grad(l->bottoms[2]);
    const float *a = l->bottoms[0]->data, *b = l->bottoms[1]->data;
    int n = l->bottoms[0]->shape[0];
    int64_t dim = per_sample(l->bottoms[0]);
    for (int side = 0; side < 2; side++) {
        if (!l->propagate_down[side])
            continue;
        double scale = (side == 0 ? 1.0 : -1.0) * l->tops[0]->grad[0] / s->normalizer;
        float *dx = l->bottoms[side]->grad;
        for (int i = 0; i < n; i++) {
            float f = (float)(scale * s->k.data[i]);
            for (int64_t c = 0; c < dim; c++)
                dx[(int64_t)i * dim + c] = f * (a[(int64_t)i * dim + c] - b[(int64_t)i * dim + c]);
        }
    }
}

static void contrastive_release(mtl_layer *l)
{
    contrastive_priv *s = l->priv;
    if (s)
        free(s->k.data);
    free(s);
    l->priv = NULL;
}

static int64_t contrastive_flops(const mtl_layer *l) { return 2 * l->bottoms[0]->count; }

const mtl_layer_ops mtl_layer_contrastive_loss = {
    .type = "ContrastiveLoss",
    .min_bottoms = 3,
    .max_bottoms = 3,
    .min_tops = 1,
    .max_tops = 1,
    .setup = contrastive_setup,
    .reshape = contrastive_reshape,
    .forward = contrastive_forward,
    .backward = contrastive_backward,
    .release = contrastive_release,
    .flops = contrastive_flops,
};

/* ---- TripletLoss -----------------------------------------------------------------------------
 * triplet_loss_param { margin (0.2), mining, distance (SQUARED_EUCLIDEAN: d = ||x - y||^2, as
 * FaceNet; EUCLIDEAN: d = ||x - y||, as Hermans et al.) }. A triplet's loss is
 * max(0, d(a, p) - d(a, n) + margin); a triplet is active when that is > 0.
 *   NONE: bottoms anchor, positive, negative (N x D each, the same shape): the mean over the N
 *     given triplets.
 *   With bottoms embeddings (N x D) and labels (N), triplets are formed inside the batch: a
 *   positive shares the anchor's label (and is not the anchor), a negative does not:
 *   ALL ("batch all", Hermans et al. 2017, BA != 0): every valid triplet; the loss is the sum
 *     over active triplets divided by their number (0 when none is active).
 *   BATCH_HARD (Hermans et al. 2017): per anchor with a positive and a negative, the farthest
 *     positive and the nearest negative (ties: the lowest index); the mean over those anchors.
 *   SEMI_HARD (FaceNet, Schroff et al. 2015): per anchor-positive pair (for anchors with a
 *     negative), the nearest negative with d(a, p) < d(a, n) < d(a, p) + margin; when there is
 *     none, the nearest negative of all (it is then either a hard negative, d(a, n) <= d(a, p),
 *     or no negative is within the margin and the pair adds 0). TensorFlow's
 *     triplet_semihard_loss falls back to the farthest negative instead. The mean over pairs.
 * Samples whose label is NaN (missing) or ignore_label take part in no triplet. Gradients are
 * subgradients through the selection, which the forward fixes; a EUCLIDEAN distance of 0 has
 * gradient 0. ALL's divisor and SEMI_HARD's choice change in steps, so those losses jump where a
 * triplet turns active or a negative crosses d(a, p) or d(a, p) + margin (the gradient holds both
 * fixed). An optional second top gives the fraction of active triplets among those counted
 * (mined: valid triplets, anchors or anchor-positive pairs). */

typedef enum triplet_mining {
    MINING_NONE,
    MINING_ALL,
    MINING_BATCH_HARD,
    MINING_SEMI_HARD,
    MINING_COUNT
} triplet_mining;
static const char *const mining_names[] = {"NONE", "ALL", "BATCH_HARD", "SEMI_HARD"};
_Static_assert(sizeof(mining_names) / sizeof(mining_names[0]) == MINING_COUNT, "mining names");
typedef enum triplet_distance { DISTANCE_SQUARED, DISTANCE_EUCLIDEAN, DISTANCE_COUNT } triplet_distance;
static const char *const distance_names[] = {"SQUARED_EUCLIDEAN", "EUCLIDEAN"};
_Static_assert(sizeof(distance_names) / sizeof(distance_names[0]) == DISTANCE_COUNT, "distance names");

typedef struct triplet_priv {
    double margin;
    triplet_mining mining;
    triplet_distance distance;
    int has_ignore, ignore_label;
    double normalizer;
    /* NONE: per triplet the factors g_ap, g_an of d d / d (x - y) (0 when inactive).
     * mined: dist (N x N) distances; coef (N x N) first d loss / d dist[a][j] summed per anchor
     * row, then the symmetric factors for pairwise_backward; per-anchor sums (3 x N). */
    scratch g_ap, g_an, dist, coef, anchor_sums;
} triplet_priv;

static mtl_status triplet_setup(mtl_layer *l, mtl_error *err)
{
    triplet_priv *s = mtl_calloc_or_fail(1, sizeof(*s), err, "TripletLoss state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    mtl_cfg_node *p;
    int mining, distance;
    MTL_TRY(mtl_layer_param_message(l, "triplet_loss_param", &p, err));
    MTL_TRY(mtl_cfg_float(p, "margin", 0.2, &s->margin, err));
    MTL_TRY(mtl_cfg_enum(p, "mining", mining_names, MINING_COUNT, MINING_NONE, &mining, err));
    MTL_TRY(mtl_cfg_enum(p, "distance", distance_names, DISTANCE_COUNT, DISTANCE_SQUARED, &distance, err));
    s->mining = (triplet_mining)mining;
    s->distance = (triplet_distance)distance;
    if (!(s->margin >= 0.0 && isfinite(s->margin)))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "margin must be a finite value >= 0, got %g", s->margin);
    MTL_TRY(read_ignore_label(l, "TripletLoss divides by the number of triplets its mining mode counts", &s->has_ignore,
                              &s->ignore_label, err));
    if (l->n_bottoms == 3 && s->mining != MINING_NONE)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "three bottoms are given triplets (anchor, positive, negative) and take mining NONE; "
                              "mining %s needs two bottoms: embeddings and labels",
                              mining_names[s->mining]);
    if (l->n_bottoms == 2 && s->mining == MINING_NONE)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "two bottoms (embeddings, labels) need a mining mode to form triplets: ALL, BATCH_HARD "
                              "or SEMI_HARD (mining NONE takes anchor, positive and negative bottoms)");
    if (l->n_bottoms == 3 && s->has_ignore)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "ignore_label needs labels: given triplets (three bottoms) have "
                              "none");
    return MTL_OK;
}

static mtl_status triplet_reshape(mtl_layer *l, mtl_error *err)
{
    triplet_priv *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    if (x->ndim < 1)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bottom 0 is a scalar; losses need a batch axis");
    int n = x->shape[0];
    if (s->mining == MINING_NONE) {
        const mtl_tensor *p = l->bottoms[1], *q = l->bottoms[2];
        if (!mtl_tensor_same_shape(x, p) || !mtl_tensor_same_shape(x, q)) {
            char as[128], ps[128], ns[128];
            return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                                  "anchor (bottom 0, %s), positive (bottom 1, %s) and negative (bottom 2, %s) must "
                                  "have the same shape",
                                  mtl_tensor_shape_str(x, as, sizeof(as)), mtl_tensor_shape_str(p, ps, sizeof(ps)),
                                  mtl_tensor_shape_str(q, ns, sizeof(ns)));
        }
        MTL_TRY(scratch_reserve(l, &s->g_ap, n, err));
        MTL_TRY(scratch_reserve(l, &s->g_an, n, err));
    } else {
        MTL_TRY(check_labels(l, 1, n, err));
        MTL_TRY(scratch_reserve(l, &s->dist, (int64_t)n * n, err));
        MTL_TRY(scratch_reserve(l, &s->coef, (int64_t)n * n, err));
        MTL_TRY(scratch_reserve(l, &s->anchor_sums, 3 * (int64_t)n, err));
    }
    for (int t = 0; t < l->n_tops; t++)
        MTL_TRY(mtl_tensor_reshape(l->tops[t], 0, NULL, err));
    return MTL_OK;
}

/* The distance and its gradient factor g: d d(x, y) / d x = g (x - y). */
static double triplet_distance_of(triplet_distance kind, const float *x, const float *y, int64_t dim, double *g)
{
    double d2 = squared_distance(x, y, dim);
    if (kind == DISTANCE_SQUARED) {
        *g = 2.0;
        return d2;
    }
    double d = sqrt(d2);
    *g = d > 0.0 ? 1.0 / d : 0.0;
    return d;
}

static void triplet_finish(mtl_layer *l, double loss, double normalizer, int64_t active, int64_t counted)
{
    triplet_priv *s = l->priv;
    s->normalizer = normalizer < 1.0 ? 1.0 : normalizer;
    l->tops[0]->data[0] = (float)(loss / s->normalizer);
    if (l->n_tops > 1)
        l->tops[1]->data[0] = counted > 0 ? (float)((double)active / (double)counted) : 0.0f;
}

static void triplet_forward_given(mtl_layer *l)
{
    triplet_priv *s = l->priv;
    const float *a = l->bottoms[0]->data, *p = l->bottoms[1]->data, *q = l->bottoms[2]->data;
    int n = l->bottoms[0]->shape[0];
    int64_t dim = per_sample(l->bottoms[0]), active = 0;
    double loss = 0.0;
    for (int i = 0; i < n; i++) {
        int64_t o = (int64_t)i * dim;
        double g_ap, g_an;
        double t = triplet_distance_of(s->distance, a + o, p + o, dim, &g_ap) -
                   triplet_distance_of(s->distance, a + o, q + o, dim, &g_an) + s->margin;
        int on = t > 0.0;
        s->g_ap.data[i] = on ? g_ap : 0.0;
        s->g_an.data[i] = on ? g_an : 0.0;
        if (on) {
            loss += t;
            active++;
        }
    }
    triplet_finish(l, loss, n, active, n);
}

/* Mined triplets. Row a of coef collects d loss / d dist[a][j] (+1 for the chosen positive, -1
 * for the chosen negative, per active triplet); anchor_sums holds per anchor its summed loss, its
 * active count and its counted triplets, added in anchor order afterwards (deterministic). */
static void triplet_forward_mined(mtl_layer *l)
{
    triplet_priv *s = l->priv;
    const float *x = l->bottoms[0]->data, *y = l->bottoms[1]->data;
    int n = l->bottoms[0]->shape[0];
    int64_t dim = per_sample(l->bottoms[0]);
    double *dist = s->dist.data, *coef = s->coef.data;
    double *a_loss = s->anchor_sums.data, *a_active = a_loss + n, *a_count = a_active + n;
    double margin = s->margin;

#pragma omp parallel for if ((int64_t)n * n * dim >= METRIC_PARALLEL_MIN) schedule(static)
    for (int i = 0; i < n; i++) {
        int vi = !mtl_label_is_ignored(y[i], s->has_ignore, s->ignore_label);
        for (int j = 0; j < n; j++) {
            int vj = !mtl_label_is_ignored(y[j], s->has_ignore, s->ignore_label);
            double g;
            dist[(int64_t)i * n + j] = vi && vj && i != j
                                           ? triplet_distance_of(s->distance, x + (int64_t)i * dim,
                                                                 x + (int64_t)j * dim, dim, &g)
                                           : 0.0;
            coef[(int64_t)i * n + j] = 0.0;
        }
    }

#pragma omp parallel for if ((int64_t)n * n * dim >= METRIC_PARALLEL_MIN) schedule(dynamic, 4)
    for (int a = 0; a < n; a++) {
        a_loss[a] = a_active[a] = a_count[a] = 0.0;
        if (mtl_label_is_ignored(y[a], s->has_ignore, s->ignore_label))
            continue;
        const double *da = dist + (int64_t)a * n;
        double *ca = coef + (int64_t)a * n;
        /* the anchor's positives and negatives; the nearest negative for the hard and semi-hard modes */
        int has_pos = 0, nearest_neg = -1, farthest_pos = -1;
        for (int j = 0; j < n; j++) {
            if (j == a || mtl_label_is_ignored(y[j], s->has_ignore, s->ignore_label))
                continue;
            if (y[j] == y[a]) {
                has_pos = 1;
                if (farthest_pos < 0 || da[j] > da[farthest_pos])
                    farthest_pos = j;
            } else if (nearest_neg < 0 || da[j] < da[nearest_neg]) {
                nearest_neg = j;
            }
        }
        if (!has_pos || nearest_neg < 0)
            continue;
        if (s->mining == MINING_BATCH_HARD) {
            double t = da[farthest_pos] - da[nearest_neg] + margin;
            a_count[a] = 1.0;
            if (t > 0.0) {
                a_loss[a] = t;
                a_active[a] = 1.0;
                ca[farthest_pos] += 1.0;
                ca[nearest_neg] -= 1.0;
            }
            continue;
        }
        for (int p = 0; p < n; p++) {
            if (p == a || mtl_label_is_ignored(y[p], s->has_ignore, s->ignore_label) || y[p] != y[a])
                continue;
            if (s->mining == MINING_ALL) {
                for (int q = 0; q < n; q++) {
                    if (mtl_label_is_ignored(y[q], s->has_ignore, s->ignore_label) || y[q] == y[a])
                        continue;
                    double t = da[p] - da[q] + margin;
                    a_count[a] += 1.0;
                    if (t > 0.0) {
                        a_loss[a] += t;
                        a_active[a] += 1.0;
                        ca[p] += 1.0;
                        ca[q] -= 1.0;
                    }
                }
                continue;
            }
            /* SEMI_HARD */
            int chosen = -1;
            for (int q = 0; q < n; q++) {
                if (mtl_label_is_ignored(y[q], s->has_ignore, s->ignore_label) || y[q] == y[a])
                    continue;
                if (da[q] > da[p] && da[q] < da[p] + margin && (chosen < 0 || da[q] < da[chosen]))
                    chosen = q;
            }
            if (chosen < 0)
                chosen = nearest_neg;
            double t = da[p] - da[chosen] + margin;
            a_count[a] += 1.0;
            if (t > 0.0) {
                a_loss[a] += t;
                a_active[a] += 1.0;
                ca[p] += 1.0;
                ca[chosen] -= 1.0;
            }
        }
    }

    double loss = 0.0, active = 0.0, counted = 0.0;
    for (int a = 0; a < n; a++) {
        loss += a_loss[a];
        active += a_active[a];
        counted += a_count[a];
    }
    double normalizer = s->mining == MINING_ALL ? active : counted;
    triplet_finish(l, loss, normalizer, (int64_t)active, (int64_t)counted);

    /* d loss / d x_i = sum_j (coef[i][j] + coef[j][i]) d dist(i, j) / d x_i with d dist / d x_i =
     * g_ij (x_i - x_j): fold coef into the symmetric factors pairwise_backward takes, here rather
     * than in backward so that several backward passes over one forward see the same factors */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double c = coef[(int64_t)i * n + j] + coef[(int64_t)j * n + i];
            double d = dist[(int64_t)i * n + j];
            double g = s->distance == DISTANCE_SQUARED ? 2.0 : (d > 0.0 ? 1.0 / d : 0.0);
            coef[(int64_t)i * n + j] = coef[(int64_t)j * n + i] = c * g;
        }
}

static mtl_status triplet_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    if (((triplet_priv *)l->priv)->mining == MINING_NONE)
        triplet_forward_given(l);
    else
        triplet_forward_mined(l);
    return MTL_OK;
}

static void triplet_backward_given(mtl_layer *l, double scale)
{
    triplet_priv *s = l->priv;
    const float *a = l->bottoms[0]->data, *p = l->bottoms[1]->data, *q = l->bottoms[2]->data;
    int n = l->bottoms[0]->shape[0];
    int64_t dim = per_sample(l->bottoms[0]);
    float *da = l->propagate_down[0] ? l->bottoms[0]->grad : NULL;
    float *dp = l->propagate_down[1] ? l->bottoms[1]->grad : NULL;
    float *dq = l->propagate_down[2] ? l->bottoms[2]->grad : NULL;
    for (int i = 0; i < n; i++) {
        float fp = (float)(scale * s->g_ap.data[i]), fq = (float)(scale * s->g_an.data[i]);
        for (int64_t c = (int64_t)i * dim; c < (int64_t)(i + 1) * dim; c++) {
            float ap = a[c] - p[c], aq = a[c] - q[c];
            if (da)
                da[c] = fp * ap - fq * aq;
            if (dp)
                dp[c] = -fp * ap;
            if (dq)
                dq[c] = fq * aq;
        }
    }
}

static void triplet_backward_mined(mtl_layer *l, double scale)
{
    triplet_priv *s = l->priv;
    pairwise_backward(l->bottoms[0]->data, l->bottoms[0]->shape[0], per_sample(l->bottoms[0]), s->coef.data, scale,
                      l->bottoms[0]->grad);
}

static void triplet_backward(mtl_layer *l)
{
    triplet_priv *s = l->priv;
    double scale = l->tops[0]->grad[0] / s->normalizer;
    if (s->mining == MINING_NONE) {
        triplet_backward_given(l, scale);
        return;
    }
    if (l->propagate_down[1])
        mtl_tensor_zero_grad(l->bottoms[1]);
    if (l->propagate_down[0])
        triplet_backward_mined(l, scale);
}

static void triplet_release(mtl_layer *l)
{
    triplet_priv *s = l->priv;
    if (s) {
        free(s->g_ap.data);
        free(s->g_an.data);
        free(s->dist.data);
        free(s->coef.data);
        free(s->anchor_sums.data);
    }
    free(s);
    l->priv = NULL;
}

static int64_t triplet_flops(const mtl_layer *l)
{
    const mtl_tensor *x = l->bottoms[0];
    if (l->n_bottoms == 3)
        return 4 * x->count;
    return 2 * (int64_t)x->shape[0] * x->count; /* N x N distances of D values each */
}

const mtl_layer_ops mtl_layer_triplet_loss = {
    .type = "TripletLoss",
    .min_bottoms = 2,
    .max_bottoms = 3,
    .min_tops = 1,
    .max_tops = 2,
    .setup = triplet_setup,
    .reshape = triplet_reshape,
    .forward = triplet_forward,
    .backward = triplet_backward,
    .release = triplet_release,
    .flops = triplet_flops,
};

/* ---- PairLoss --------------------------------------------------------------------------------
 * DeepID2's verification signal drawn from the mini-batch itself: bottoms embeddings (N x D) and
 * labels (N); every pair i < j whose labels are both present is a pair, similar when the labels
 * are equal. pair_loss_param { margin (1), form (CAFFE | DEEPID2 | LEGACY, the per-pair terms of
 * ContrastiveLoss), max_pairs (0: all pairs; else at most that many, drawn without replacement
 * from the layer's generator at each forward), balance (false) }.
 *   CAFFE, LEGACY: the mean of the pair terms over the pairs used;
 *     with balance: 1/2 the mean over similar pairs + 1/2 the mean over dissimilar pairs (a batch
 *     holding pairs of one kind only takes that kind's mean);
 *   DEEPID2: the sum of the pair terms, each at the paper's per-pair scale (no balance).
 * An empty set of pairs gives loss 0. The second top, if any, is the number of pairs used. */

typedef struct pair_priv {
    contrastive_form form;
    double margin;
    int64_t max_pairs;
    int balance, has_ignore, ignore_label;
    double scale_similar, scale_dissimilar; /* per-pair weight of each kind in the last forward */
    int64_t *pairs;                          /* i * N + j of the pairs (first `used` are used) */
    int64_t pairs_cap;
    scratch term, k, kmat; /* per used pair: its loss and gradient factor; N x N factors */
} pair_priv;

static mtl_status pair_setup(mtl_layer *l, mtl_error *err)
{
    pair_priv *s = mtl_calloc_or_fail(1, sizeof(*s), err, "PairLoss state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "pair_loss_param", &p, err));
    MTL_TRY(read_form(l, p, 0, &s->form, &s->margin, err));
    MTL_TRY(mtl_cfg_int_range(p, "max_pairs", 0, 0, INT64_MAX, &s->max_pairs, err));
    MTL_TRY(mtl_cfg_bool(p, "balance", 0, &s->balance, err));
    if (s->balance && s->form == FORM_DEEPID2)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "balance averages similar and dissimilar pairs, but form DEEPID2 "
                              "sums the pair terms unnormalised: use form CAFFE with balance, or no balance");
    return read_ignore_label(l, "PairLoss averages over the pairs it uses (form DEEPID2: sums them)", &s->has_ignore,
                             &s->ignore_label, err);
}

static mtl_status pair_reshape(mtl_layer *l, mtl_error *err)
{
    pair_priv *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    if (x->ndim < 1)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "bottom 0 is a scalar; losses need a batch axis");
    int n = x->shape[0];
    MTL_TRY(check_labels(l, 1, n, err));
    int64_t all = (int64_t)n * (n - 1) / 2;
    if (all > s->pairs_cap) {
        int64_t *p = malloc((size_t)all * sizeof(*p));
        if (!p)
            return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for %lld pairs", (long long)all);
        free(s->pairs);
        s->pairs = p;
        s->pairs_cap = all;
    }
    MTL_TRY(scratch_reserve(l, &s->term, all, err));
    MTL_TRY(scratch_reserve(l, &s->k, all, err));
    MTL_TRY(scratch_reserve(l, &s->kmat, (int64_t)n * n, err));
    for (int t = 0; t < l->n_tops; t++)
        MTL_TRY(mtl_tensor_reshape(l->tops[t], 0, NULL, err));
    return MTL_OK;
}

static mtl_status pair_forward(mtl_layer *l, mtl_error *err)
{
    pair_priv *s = l->priv;
    const float *x = l->bottoms[0]->data, *y = l->bottoms[1]->data;
    int n = l->bottoms[0]->shape[0];
    int64_t dim = per_sample(l->bottoms[0]);

    int64_t used = 0;
    for (int i = 0; i < n; i++) {
        if (mtl_label_is_ignored(y[i], s->has_ignore, s->ignore_label))
            continue;
        for (int j = i + 1; j < n; j++)
            if (!mtl_label_is_ignored(y[j], s->has_ignore, s->ignore_label))
                s->pairs[used++] = (int64_t)i * n + j;
    }
    if (s->max_pairs > 0 && used > s->max_pairs) {
        if (!l->rng)
            return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT, "max_pairs draws pairs at random, but the layer has no "
                                  "random generator");
        /* the first max_pairs steps of a Fisher-Yates shuffle: a uniform subset without replacement */
        for (int64_t t = 0; t < s->max_pairs; t++) {
            int64_t r = t + (int64_t)mtl_rng_below(l->rng, (uint32_t)(used - t));
            int64_t swap = s->pairs[t];
            s->pairs[t] = s->pairs[r];
            s->pairs[r] = swap;
        }
        used = s->max_pairs;
    }

#pragma omp parallel for if (used * dim >= METRIC_PARALLEL_MIN) schedule(static)
    for (int64_t t = 0; t < used; t++) {
        int i = (int)(s->pairs[t] / n), j = (int)(s->pairs[t] % n);
        double d2 = squared_distance(x + (int64_t)i * dim, x + (int64_t)j * dim, dim);
        s->term.data[t] = contrastive_term(s->form, s->margin, y[i] == y[j], d2, &s->k.data[t]);
    }

    double sum_similar = 0.0, sum_dissimilar = 0.0;
    int64_t n_similar = 0, n_dissimilar = 0;
    for (int64_t t = 0; t < used; t++) {
        int i = (int)(s->pairs[t] / n), j = (int)(s->pairs[t] % n);
        if (y[i] == y[j]) {
            sum_similar += s->term.data[t];
            n_similar++;
        } else {
            sum_dissimilar += s->term.data[t];
            n_dissimilar++;
        }
    }
    if (s->form == FORM_DEEPID2) {
        s->scale_similar = s->scale_dissimilar = 1.0;
    } else if (s->balance) {
        int kinds = (n_similar > 0) + (n_dissimilar > 0);
        s->scale_similar = n_similar > 0 ? 1.0 / ((double)kinds * (double)n_similar) : 0.0;
        s->scale_dissimilar = n_dissimilar > 0 ? 1.0 / ((double)kinds * (double)n_dissimilar) : 0.0;
    } else {
        s->scale_similar = s->scale_dissimilar = used > 0 ? 1.0 / (double)used : 0.0;
    }
    l->tops[0]->data[0] = (float)(s->scale_similar * sum_similar + s->scale_dissimilar * sum_dissimilar);
    if (l->n_tops > 1)
        l->tops[1]->data[0] = (float)used;

    /* the N x N factors for backward, built here so that repeated backward passes agree */
    double *kmat = s->kmat.data;
    if (n > 0)
        memset(kmat, 0, (size_t)n * (size_t)n * sizeof(double));
    for (int64_t t = 0; t < used; t++) {
        int i = (int)(s->pairs[t] / n), j = (int)(s->pairs[t] % n);
        double w = y[i] == y[j] ? s->scale_similar : s->scale_dissimilar;
        kmat[(int64_t)i * n + j] = kmat[(int64_t)j * n + i] = w * s->k.data[t];
    }
    return MTL_OK;
}

static void pair_backward(mtl_layer *l)
{
    pair_priv *s = l->priv;
    if (l->propagate_down[1])
        mtl_tensor_zero_grad(l->bottoms[1]);
    if (l->propagate_down[0])
        pairwise_backward(l->bottoms[0]->data, l->bottoms[0]->shape[0], per_sample(l->bottoms[0]), s->kmat.data,
                          l->tops[0]->grad[0], l->bottoms[0]->grad);
}

static void pair_release(mtl_layer *l)
{
    pair_priv *s = l->priv;
    if (s) {
        free(s->pairs);
        free(s->term.data);
        free(s->k.data);
        free(s->kmat.data);
    }
    free(s);
    l->priv = NULL;
}

static int64_t pair_flops(const mtl_layer *l)
{
    const pair_priv *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    int64_t n = x->shape[0], pairs = n * (n - 1) / 2;
    if (s && s->max_pairs > 0 && s->max_pairs < pairs)
        pairs = s->max_pairs;
    return 2 * pairs * per_sample(x);
}

const mtl_layer_ops mtl_layer_pair_loss = {
    .type = "PairLoss",
    .min_bottoms = 2,
    .max_bottoms = 2,
    .min_tops = 1,
    .max_tops = 2,
    .setup = pair_setup,
    .reshape = pair_reshape,
    .forward = pair_forward,
    .backward = pair_backward,
    .release = pair_release,
    .flops = pair_flops,
};

/* ---- L2Normalize -----------------------------------------------------------------------------
 * y = x / sqrt(sum x^2 + eps) per sample over all the axes after the first (Caffe's SSD
 * "Normalize" with across_spatial, without its learned scale); l2_normalize_param { eps (1e-10) }.
 * Backward is exact with eps: dx = (dy - y (y . dy)) / sqrt(sum x^2 + eps). In place works: the
 * backward needs only y, dy and the per-sample norm it keeps. */

typedef struct l2_normalize_priv {
    double eps;
    scratch norm; /* per sample: sqrt(sum x^2 + eps) of the last forward */
} l2_normalize_priv;

static mtl_status l2_normalize_setup(mtl_layer *l, mtl_error *err)
{
    l2_normalize_priv *s = mtl_calloc_or_fail(1, sizeof(*s), err, "L2Normalize state");
    if (!s)
        return MTL_ERR_NOMEM;
    l->priv = s;
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "l2_normalize_param", &p, err));
    MTL_TRY(mtl_cfg_float(p, "eps", 1e-10, &s->eps, err));
    if (!(s->eps > 0.0 && isfinite(s->eps)))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "eps must be a finite value > 0 (a zero sample would divide by "
                              "zero), got %g", s->eps);
    return MTL_OK;
}

static mtl_status l2_normalize_reshape(mtl_layer *l, mtl_error *err)
{
    l2_normalize_priv *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    if (x->ndim < 1)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "needs a bottom of N x ..., got a scalar");
    MTL_TRY(scratch_reserve(l, &s->norm, x->shape[0], err));
    if (l->tops[0] == x)
        return MTL_OK;
    return mtl_tensor_reshape_like(l->tops[0], x, err);
}

static mtl_status l2_normalize_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    l2_normalize_priv *s = l->priv;
    const mtl_tensor *x = l->bottoms[0];
    int n = x->shape[0];
    int64_t dim = per_sample(x);
    float *out = l->tops[0]->data;
#pragma omp parallel for if (x->count >= METRIC_PARALLEL_MIN) schedule(static)
    for (int i = 0; i < n; i++) {
        const float *xi = x->data + (int64_t)i * dim;
        double sum = 0.0;
        for (int64_t c = 0; c < dim; c++)
            sum += (double)xi[c] * xi[c];
        double norm = sqrt(sum + s->eps);
        s->norm.data[i] = norm;
        float inv = (float)(1.0 / norm);
        float *yi = out + (int64_t)i * dim;
        for (int64_t c = 0; c < dim; c++)
            yi[c] = xi[c] * inv;
    }
    return MTL_OK;
}

static void l2_normalize_backward(mtl_layer *l)
{
    if (!l->propagate_down[0])
        return;
    l2_normalize_priv *s = l->priv;
    const mtl_tensor *top = l->tops[0];
    int n = top->shape[0];
    int64_t dim = per_sample(top);
    float *dx = l->bottoms[0]->grad;
#pragma omp parallel for if (top->count >= METRIC_PARALLEL_MIN) schedule(static)
    for (int i = 0; i < n; i++) {
        const float *yi = top->data + (int64_t)i * dim, *dyi = top->grad + (int64_t)i * dim;
        double dot = 0.0;
        for (int64_t c = 0; c < dim; c++)
            dot += (double)yi[c] * dyi[c];
        /* dyi and dxi may be the same memory (in place): each value is read before it is written */
        float *dxi = dx + (int64_t)i * dim;
        float inv = (float)(1.0 / s->norm.data[i]), fdot = (float)dot;
        for (int64_t c = 0; c < dim; c++)
            dxi[c] = (dyi[c] - yi[c] * fdot) * inv;
    }
}

static void l2_normalize_release(mtl_layer *l)
{
    l2_normalize_priv *s = l->priv;
    if (s)
        free(s->norm.data);
    free(s);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_l2_normalize = {
    .type = "L2Normalize",
    .min_bottoms = 1,
    .max_bottoms = 1,
    .min_tops = 1,
    .max_tops = 1,
    .allows_in_place = 1,
    .setup = l2_normalize_setup,
    .reshape = l2_normalize_reshape,
    .forward = l2_normalize_forward,
    .backward = l2_normalize_backward,
    .release = l2_normalize_release,
};
