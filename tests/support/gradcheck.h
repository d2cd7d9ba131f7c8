/* Finite-difference gradient checks for one layer. The layer is built standalone from its
 * prototxt text over random bottoms; the objective is sum(w .* top) for random weights w (for a
 * loss, w[0] is its loss weight), and every checked bottom value and every learnable parameter
 * value is compared with central differences: |analytic - numeric| / max(|a|, |n|, 1) <= tol.
 * Points where the function has a kink (the difference at step h and at h/2 disagree) are skipped
 * and counted. The generator is reset before each forward, so dropout masks stay fixed. */
#ifndef MTL_TESTS_GRADCHECK_H
#define MTL_TESTS_GRADCHECK_H

#include "core/layer.h"

#define GRADCHECK_MAX_BOTTOMS 6

typedef struct gradcheck_case {
    const char *layer;   /* layer message body: "type: \"ReLU\" relu_param { negative_slope: 0.1 }" */
    int n_bottoms;
    int shapes[GRADCHECK_MAX_BOTTOMS][MTL_MAX_AXES + 1]; /* per bottom: axis sizes ended by 0 */
    int label_classes[GRADCHECK_MAX_BOTTOMS]; /* > 0: bottom holds integers in [0, classes), not checked */
    int no_check[GRADCHECK_MAX_BOTTOMS];      /* 1: do not check this bottom's gradient */
    int n_tops;          /* default 1 */
    float lo, hi;        /* bottom values uniform in [lo, hi); default [-1, 1) */
    float step;          /* default 1e-2 */
    float tolerance;     /* default 1e-2 */
    mtl_phase phase;     /* default TRAIN */
    int in_place;        /* top[0] is bottom[0] */
    unsigned seed;
} gradcheck_case;

/* Runs the check; returns 0 when it passes, else prints where it failed and returns the number of
 * mismatches (a case whose layer fails to build counts as one). `label` names the case. */
int gradcheck_run(const char *label, const gradcheck_case *c);

/* Builds a standalone layer over the given bottoms (tops created, n_tops of them); for value
 * tests. Frees with gradcheck_free_layer. */
mtl_status gradcheck_build(const char *layer_text, mtl_phase phase, mtl_tensor **bottoms, int n_bottoms,
                           mtl_tensor **tops, int n_tops, mtl_layer **out, mtl_error *err);
/* Frees a layer from gradcheck_build and the parse tree it was built from. */
void gradcheck_free_layer(mtl_layer *l);

/* Fills t (already shaped) with uniform values in [lo, hi) from a fixed-seed generator. */
void gradcheck_fill(mtl_tensor *t, float lo, float hi, unsigned seed);

#endif
