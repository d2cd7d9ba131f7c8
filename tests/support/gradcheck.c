/* Finite-difference gradient checker for standalone layers (see gradcheck.h). */
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mtl_status gradcheck_build(const char *layer_text, mtl_phase phase, mtl_tensor **bottoms, int n_bottoms,
                           mtl_tensor **tops, int n_tops, mtl_layer **out, mtl_error *err)
{
    static mtl_rng shared_rng; /* standalone layers in tests draw from one fixed generator */
    mtl_rng_seed(&shared_rng, 1234);
    mtl_cfg_node *root = NULL;
    *out = NULL;
    MTL_TRY(mtl_cfg_parse_string(layer_text, "<layer>", &root, err));
    mtl_status st = mtl_layer_create(root, phase, bottoms, n_bottoms, tops, n_tops, &shared_rng, out, err);
    if (st != MTL_OK)
        mtl_cfg_free(root);
    return st;
}

void gradcheck_free_layer(mtl_layer *l)
{
    if (!l)
        return;
    mtl_cfg_node *root = l->cfg;
    mtl_layer_free(l);
    mtl_cfg_free(root);
}

void gradcheck_fill(mtl_tensor *t, float lo, float hi, unsigned seed)
{
    mtl_rng rng;
    mtl_rng_seed(&rng, seed);
    for (int64_t i = 0; i < t->count; i++)
        t->data[i] = mtl_rng_range(&rng, lo, hi);
}

typedef struct checker {
    mtl_layer *layer;
    mtl_rng rng_start;
    mtl_tensor **tops;
    int n_tops;
    float **weights;      /* per top: objective weights */
    float *in_place_input; /* bottom[0] values, restored before each forward when in place */
} checker;

static double objective(checker *ck, mtl_error *err, int *failed)
{
    mtl_layer *l = ck->layer;
    *l->rng = ck->rng_start;
    if (ck->in_place_input)
        memcpy(l->bottoms[0]->data, ck->in_place_input, (size_t)l->bottoms[0]->count * sizeof(float));
    mtl_status st = l->ops->reshape ? l->ops->reshape(l, err) : MTL_OK;
    if (st == MTL_OK)
        st = l->ops->forward(l, err);
    if (st != MTL_OK) {
        *failed = 1;
        return 0;
    }
    double sum = 0;
    for (int t = 0; t < ck->n_tops; t++)
        for (int64_t i = 0; ck->weights[t] && i < ck->tops[t]->count; i++)
            sum += (double)ck->weights[t][i] * ck->tops[t]->data[i];
    return sum;
}

/* Compares analytic gradients of `values` (count n) with central differences. */
static int check_values(checker *ck, const char *label, const char *what, float *values, const float *analytic,
                        int64_t n, const gradcheck_case *c, int *kinks)
{
    int mismatches = 0;
    mtl_error err;
    int failed = 0;
    float h = c->step > 0 ? c->step : 1e-2f;
    float tol = c->tolerance > 0 ? c->tolerance : 1e-2f;
    for (int64_t i = 0; i < n; i++) {
        float x = values[i];
        values[i] = x + h;
        double fp = objective(ck, &err, &failed);
        values[i] = x - h;
        double fm = objective(ck, &err, &failed);
        values[i] = x;
        double numeric = (fp - fm) / (2.0 * h);
        double a = analytic[i];
        double scale = fmax(fmax(fabs(a), fabs(numeric)), 1.0);
        if (fabs(a - numeric) / scale <= tol)
            continue;
        /* a kink between x-h and x+h makes the difference depend on h: skip such points */
        values[i] = x + h / 2;
        double fp2 = objective(ck, &err, &failed);
        values[i] = x - h / 2;
        double fm2 = objective(ck, &err, &failed);
        values[i] = x;
        double numeric2 = (fp2 - fm2) / (double)h;
        if (fabs(numeric2 - numeric) / fmax(fmax(fabs(numeric), fabs(numeric2)), 1.0) > tol / 2) {
            (*kinks)++;
            continue;
        }
        if (mismatches < 5)
            fprintf(stderr, "gradcheck %s: %s[%lld]: analytic %.6g, numeric %.6g (x = %.6g)\n", label, what,
                    (long long)i, a, numeric, x);
        mismatches++;
    }
    if (failed) {
        fprintf(stderr, "gradcheck %s: forward failed during perturbation: %s\n", label, err.message);
        mismatches++;
    }
    return mismatches;
}

int gradcheck_run(const char *label, const gradcheck_case *c)
{
    mtl_error err = {0};
    mtl_tensor *bottoms[GRADCHECK_MAX_BOTTOMS] = {0};
    mtl_tensor *tops[8] = {0};
    int n_tops = c->n_tops > 0 ? c->n_tops : 1;
    int failures = 0;
    float lo = c->lo, hi = c->hi;
    if (lo == 0 && hi == 0) {
        lo = -1;
        hi = 1;
    }
    mtl_rng rng;
    mtl_rng_seed(&rng, c->seed ? c->seed : 7);
    for (int b = 0; b < c->n_bottoms; b++) {
        int ndim = 0;
        while (ndim < MTL_MAX_AXES && c->shapes[b][ndim] > 0)
            ndim++;
        bottoms[b] = mtl_tensor_create("bottom");
        if (mtl_tensor_reshape(bottoms[b], ndim, c->shapes[b], &err) != MTL_OK) {
            fprintf(stderr, "gradcheck %s: %s\n", label, err.message);
            failures = 1;
            goto done;
        }
        for (int64_t i = 0; i < bottoms[b]->count; i++)
            bottoms[b]->data[i] = c->label_classes[b] > 0 ? (float)mtl_rng_below(&rng, (uint32_t)c->label_classes[b])
                                                          : mtl_rng_range(&rng, lo, hi);
    }
    for (int t = 0; t < n_tops; t++)
        tops[t] = (t == 0 && c->in_place) ? bottoms[0] : mtl_tensor_create("top");

    mtl_layer *l = NULL;
    if (gradcheck_build(c->layer, c->phase, bottoms, c->n_bottoms, tops, n_tops, &l, &err) != MTL_OK) {
        fprintf(stderr, "gradcheck %s: cannot build layer: %s\n", label, err.message);
        failures = 1;
        goto done;
    }
    checker ck = {.layer = l, .rng_start = *l->rng, .tops = tops, .n_tops = n_tops};
    float *weights[8] = {0};
    ck.weights = weights;
    if (c->in_place) {
        ck.in_place_input = malloc((size_t)bottoms[0]->count * sizeof(float));
        memcpy(ck.in_place_input, bottoms[0]->data, (size_t)bottoms[0]->count * sizeof(float));
    }
    int failed = 0;
    objective(&ck, &err, &failed); /* shapes the tops */
    if (failed) {
        fprintf(stderr, "gradcheck %s: forward failed: %s\n", label, err.message);
        failures = 1;
        goto cleanup;
    }
    for (int t = 0; t < n_tops; t++) {
        weights[t] = malloc((size_t)(tops[t]->count ? tops[t]->count : 1) * sizeof(float));
        for (int64_t i = 0; i < tops[t]->count; i++)
            weights[t][i] = mtl_rng_range(&rng, -1.0f, 1.0f);
    }

    /* analytic gradients */
    objective(&ck, &err, &failed);
    for (int t = 0; t < n_tops; t++)
        memcpy(tops[t]->grad, weights[t], (size_t)tops[t]->count * sizeof(float));
    for (int b = 0; b < c->n_bottoms; b++)
        if (!(c->in_place && b == 0))
            mtl_tensor_zero_grad(bottoms[b]);
    for (int p = 0; p < l->n_params; p++)
        mtl_tensor_zero_grad(l->params[p]);
    for (int b = 0; b < c->n_bottoms; b++)
        l->propagate_down[b] = !(c->label_classes[b] > 0 || c->no_check[b]);
    l->ops->backward(l);

    float *bottom_grads[GRADCHECK_MAX_BOTTOMS] = {0};
    for (int b = 0; b < c->n_bottoms; b++) {
        bottom_grads[b] = malloc((size_t)bottoms[b]->count * sizeof(float));
        memcpy(bottom_grads[b], bottoms[b]->grad, (size_t)bottoms[b]->count * sizeof(float));
    }
    float *param_grads[16] = {0};
    for (int p = 0; p < l->n_params && p < 16; p++) {
        param_grads[p] = malloc((size_t)(l->params[p]->count ? l->params[p]->count : 1) * sizeof(float));
        memcpy(param_grads[p], l->params[p]->grad, (size_t)l->params[p]->count * sizeof(float));
    }

    int kinks = 0;
    int64_t checked = 0;
    for (int b = 0; b < c->n_bottoms; b++) {
        if (!l->propagate_down[b])
            continue;
        char what[32];
        snprintf(what, sizeof(what), "bottom%d", b);
        float *values = (c->in_place && b == 0) ? ck.in_place_input : bottoms[b]->data;
        failures += check_values(&ck, label, what, values, bottom_grads[b], bottoms[b]->count, c, &kinks);
        checked += bottoms[b]->count;
    }
    for (int p = 0; p < l->n_params && p < 16; p++) {
        if (!l->param_needs_grad[p])
            continue;
        char what[32];
        snprintf(what, sizeof(what), "param%d", p);
        failures += check_values(&ck, label, what, l->params[p]->data, param_grads[p], l->params[p]->count, c, &kinks);
        checked += l->params[p]->count;
    }
    if (checked > 0 && kinks > checked / 5) {
        fprintf(stderr, "gradcheck %s: %d of %lld points skipped as kinks: too many to trust\n", label, kinks,
                (long long)checked);
        failures++;
    }
    if (checked == 0) {
        fprintf(stderr, "gradcheck %s: nothing to check\n", label);
        failures++;
    }
    for (int b = 0; b < c->n_bottoms; b++)
        free(bottom_grads[b]);
    for (int p = 0; p < 16; p++)
        free(param_grads[p]);
cleanup:
    for (int t = 0; t < 8; t++)
        free(weights[t]);
    free(ck.in_place_input);
    gradcheck_free_layer(l);
done:
    for (int t = 0; t < n_tops; t++)
        if (!(t == 0 && c->in_place))
            mtl_tensor_free(tops[t]);
    for (int b = 0; b < c->n_bottoms; b++)
        mtl_tensor_free(bottoms[b]);
    return failures;
}
