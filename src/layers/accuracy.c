/* Accuracy: the share of labelled positions whose true class is among the top_k scores, with
 * Caffe's tie rule, ignore_label and optional per-class accuracy; missing labels (NaN) are skipped
 * like ignored ones. A metric: no backward. */
#include <limits.h>
#include <stdlib.h>

#include "layers/labels.h"
#include "layers/layers.h"

typedef struct accuracy_priv {
    int64_t top_k, axis;
    int has_ignore_label, ignore_label;
    int label_axis, classes;
    int64_t outer, inner;
    int64_t *per_class; /* 2 x classes: labelled positions, then hits, for the per-class top */
    int64_t cap;
} accuracy_priv;

static mtl_status accuracy_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "accuracy_param", &p, err));
    accuracy_priv *a = mtl_calloc_or_fail(1, sizeof(*a), err, "Accuracy state");
    if (!a)
        return MTL_ERR_NOMEM;
    l->priv = a;
    int64_t ignore;
    MTL_TRY(mtl_cfg_int_range(p, "top_k", 1, 1, INT_MAX, &a->top_k, err));
    MTL_TRY(mtl_cfg_int_range(p, "axis", 1, INT_MIN, INT_MAX, &a->axis, err));
    a->has_ignore_label = mtl_cfg_count(p, "ignore_label") > 0;
    MTL_TRY(mtl_cfg_int_range(p, "ignore_label", 0, INT_MIN, INT_MAX, &ignore, err));
    a->ignore_label = (int)ignore;
    return MTL_OK;
}

static mtl_status accuracy_reshape(mtl_layer *l, mtl_error *err)
{
    accuracy_priv *a = l->priv;
    const mtl_tensor *x = l->bottoms[0], *label = l->bottoms[1];
    char xs[128], ls[128];
    if (a->axis < -x->ndim || a->axis >= x->ndim)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "axis %lld is out of range for a bottom of shape %s",
                              (long long)a->axis, mtl_tensor_shape_str(x, xs, sizeof(xs)));
    a->label_axis = (int)(a->axis < 0 ? a->axis + x->ndim : a->axis);
    a->classes = x->shape[a->label_axis];
    a->outer = mtl_tensor_count_range(x, 0, a->label_axis);
    a->inner = mtl_tensor_count_range(x, a->label_axis + 1, x->ndim);
    if (a->outer * a->inner != label->count)
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                              "%lld labels (bottom 1, %s) for %lld predictions (bottom 0, %s, label axis %d): with "
                              "scores N x C x H x W and axis 1 give N*H*W labels in {0, ..., C-1}",
                              (long long)label->count, mtl_tensor_shape_str(label, ls, sizeof(ls)),
                              (long long)(a->outer * a->inner), mtl_tensor_shape_str(x, xs, sizeof(xs)),
                              a->label_axis);
    if (a->top_k > a->classes)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "top_k %lld is more than the %d classes", (long long)a->top_k,
                              a->classes);
    MTL_TRY(mtl_tensor_reshape(l->tops[0], 0, NULL, err));
    if (l->n_tops > 1) {
        int shape[1] = {a->classes};
        MTL_TRY(mtl_tensor_reshape(l->tops[1], 1, shape, err));
        if (a->classes > a->cap) {
            free(a->per_class);
            a->cap = 0;
            if (!(a->per_class = mtl_calloc_or_fail(2 * (size_t)a->classes, sizeof(int64_t), err, "class counts")))
                return MTL_ERR_NOMEM;
            a->cap = a->classes;
        }
    }
    return MTL_OK;
}

/* A label is a hit when fewer than top_k other classes score at least as high as it: Caffe's rule,
 * so ties count against the true class. */
static mtl_status accuracy_forward(mtl_layer *l, mtl_error *err)
{
    accuracy_priv *a = l->priv;
    const float *x = l->bottoms[0]->data, *label = l->bottoms[1]->data;
    int64_t inner = a->inner, block = (int64_t)a->classes * inner;
    int per_class = l->n_tops > 1;
    int64_t *totals = a->per_class, *class_hits = a->per_class + (per_class ? a->classes : 0);
    if (per_class)
        for (int c = 0; c < a->classes; c++)
            totals[c] = class_hits[c] = 0;
    int64_t hits = 0, counted = 0;
    for (int64_t n = 0; n < a->outer; n++)
        for (int64_t j = 0; j < inner; j++) {
            float v = label[n * inner + j];
            if (mtl_label_is_ignored(v, a->has_ignore_label, a->ignore_label))
                continue;
            int c = mtl_label_class(v, a->classes);
            if (c < 0) {
                if (inner == 1)
                    return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT,
                                          "label %g of sample %lld is not a class in [0, %d) nor the ignore_label",
                                          (double)v, (long long)n, a->classes);
                return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT,
                                      "label %g of sample %lld (position %lld) is not a class in [0, %d) nor the "
                                      "ignore_label",
                                      (double)v, (long long)n, (long long)j, a->classes);
            }
            const float *xs = x + n * block + j;
            float truth = xs[c * inner];
            int64_t better = -1; /* the true class scores at least as high as itself */
            for (int k = 0; k < a->classes && better < a->top_k; k++)
                better += xs[k * inner] >= truth;
            int hit = better < a->top_k;
            hits += hit;
            counted++;
            if (per_class) {
                totals[c]++;
                class_hits[c] += hit;
            }
        }
    l->tops[0]->data[0] = counted ? (float)((double)hits / (double)counted) : 0.0f;
    if (per_class)
        for (int c = 0; c < a->classes; c++)
            l->tops[1]->data[c] = totals[c] ? (float)((double)class_hits[c] / (double)totals[c]) : 0.0f;
    return MTL_OK;
}

static void accuracy_release(mtl_layer *l)
{
    accuracy_priv *a = l->priv;
    if (a)
        free(a->per_class);
    free(a);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_accuracy = {
    .type = "Accuracy",
    .min_bottoms = 2,
    .max_bottoms = 2,
    .min_tops = 1,
    .max_tops = 2,
    .no_backward = 1,
    .setup = accuracy_setup,
    .reshape = accuracy_reshape,
    .forward = accuracy_forward,
    .backward = NULL,
    .release = accuracy_release,
};
