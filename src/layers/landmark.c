/* NME: the landmark metric of face alignment (normalised mean error) and the failure rate at a
 * threshold. Per sample, the mean distance between predicted and target points divided by the
 * distance between two reference target points (the inter-ocular distance for faces, the box
 * diagonal for FashionPose); missing targets (NaN) are skipped. A metric: no backward. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "layers/labels.h"
#include "layers/layers.h"

typedef struct nme_priv {
    int norm_from, norm_to; /* the reference points */
    double threshold;       /* a sample fails when its NME exceeds it */
    int points;             /* per sample, from the shapes */
} nme_priv;

/* nme_param { norm_from norm_to failure_threshold } (an mtl layer). Both reference points must be
 * given: a default pair would be right for one landmark layout and silently wrong for the rest. */
static mtl_status nme_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "nme_param", &p, err));
    nme_priv *m = mtl_calloc_or_fail(1, sizeof(*m), err, "NME state");
    if (!m)
        return MTL_ERR_NOMEM;
    l->priv = m;
    int64_t from, to;
    int given = mtl_cfg_count(p, "norm_from") > 0 && mtl_cfg_count(p, "norm_to") > 0;
    MTL_TRY(mtl_cfg_int_range(p, "norm_from", 0, 0, INT_MAX / 2, &from, err));
    MTL_TRY(mtl_cfg_int_range(p, "norm_to", 0, 0, INT_MAX / 2, &to, err));
    MTL_TRY(mtl_cfg_float(p, "failure_threshold", 0.1, &m->threshold, err));
    if (!given)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "nme_param needs norm_from and norm_to: the two target landmarks whose distance "
                              "normalises the error (FashionPose: 0 and 2, the box diagonal)");
    if (from == to)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "norm_from and norm_to are both %lld; give two landmarks",
                              (long long)from);
    if (!(m->threshold >= 0))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "failure_threshold must be >= 0 (it is %g)", m->threshold);
    m->norm_from = (int)from;
    m->norm_to = (int)to;
    return MTL_OK;
}

static mtl_status nme_reshape(mtl_layer *l, mtl_error *err)
{
    nme_priv *m = l->priv;
    const mtl_tensor *pred = l->bottoms[0], *target = l->bottoms[1];
    char ps[128], ts[128];
    MTL_TRY(mtl_loss_check_batch(l, err));
    if (pred->count != target->count)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "predictions (bottom 0, %s) and targets (bottom 1, %s) must have the same count",
                              mtl_tensor_shape_str(pred, ps, sizeof(ps)), mtl_tensor_shape_str(target, ts, sizeof(ts)));
    int64_t n = pred->shape[0], per = n > 0 ? pred->count / n : 0;
    if (per % 2 != 0)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "%lld values per sample (bottom 0, %s) are not (x, y) pairs: landmarks are N x 2P",
                              (long long)per, mtl_tensor_shape_str(pred, ps, sizeof(ps)));
    m->points = (int)(per / 2);
    int hi = m->norm_from > m->norm_to ? m->norm_from : m->norm_to;
    if (n > 0 && hi >= m->points)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "reference landmark %d is not among the %d points per sample",
                              hi, m->points);
    MTL_TRY(mtl_tensor_reshape(l->tops[0], 0, NULL, err));
    if (l->n_tops > 1)
        MTL_TRY(mtl_tensor_reshape(l->tops[1], 0, NULL, err));
    return MTL_OK;
}

/* A sample counts when its reference distance is known and positive and at least one of its
 * target points is present; a batch with none counts as NME 0 and failure rate 0 (as Accuracy
 * reports 0 when every label is ignored). */
static mtl_status nme_forward(mtl_layer *l, mtl_error *err)
{
    (void)err;
    nme_priv *m = l->priv;
    const float *pred = l->bottoms[0]->data, *target = l->bottoms[1]->data;
    const int64_t n = l->bottoms[0]->shape[0];
    const int per = 2 * m->points;
    double sum = 0.0;
    int64_t counted = 0, failed = 0;
    for (int64_t s = 0; s < n; s++) {
        const float *p = pred + s * per, *t = target + s * per;
        double rx = (double)t[2 * m->norm_to] - t[2 * m->norm_from];
        double ry = (double)t[2 * m->norm_to + 1] - t[2 * m->norm_from + 1];
        double ref = sqrt(rx * rx + ry * ry);
        if (!(ref > 0)) /* NaN (a reference point missing) or 0 */
            continue;
        double dist = 0.0;
        int present = 0;
        for (int k = 0; k < m->points; k++) {
            if (mtl_label_is_missing(t[2 * k]) || mtl_label_is_missing(t[2 * k + 1]))
                continue;
            double dx = (double)p[2 * k] - t[2 * k], dy = (double)p[2 * k + 1] - t[2 * k + 1];
            dist += sqrt(dx * dx + dy * dy);
            present++;
        }
        if (!present)
            continue;
        double e = dist / present / ref;
        sum += e;
        failed += e > m->threshold;
        counted++;
    }
    l->tops[0]->data[0] = counted ? (float)(sum / (double)counted) : 0.0f;
    if (l->n_tops > 1)
        l->tops[1]->data[0] = counted ? (float)((double)failed / (double)counted) : 0.0f;
    return MTL_OK;
}

static void nme_release(mtl_layer *l)
{
    free(l->priv);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_nme = {
    .type = "NME",
    .min_bottoms = 2,
    .max_bottoms = 2,
    .min_tops = 1,
    .max_tops = 2,
    .no_backward = 1,
    .setup = nme_setup,
    .reshape = nme_reshape,
    .forward = nme_forward,
    .backward = NULL,
    .release = nme_release,
};
