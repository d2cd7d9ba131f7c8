/* Siamese training end to end: two branches sharing their weights through `param { name }` train
 * with the solver for a few steps. The branches must hold one copy of the weights throughout, and
 * that copy must move exactly as the weights of one branch run on both inputs stacked into one
 * batch (Concat, then Slice before the loss) move: the shared weights receive both gradients. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "core/solver.h"

#define BATCH 8
#define SIDE 6
#define STEPS 6

#define INPUTS                                                                                                    \
    "layer { name: 'in' type: 'Input' top: 'a' top: 'b' top: 'sim'\n"                                             \
    "  input_param { shape { dim: 8 dim: 1 dim: 6 dim: 6 } shape { dim: 8 dim: 1 dim: 6 dim: 6 } shape { dim: 8 } } }\n"
#define CONV_PARAM                                                                                                \
    "convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: 'gaussian' std: 0.3 }\n"              \
    "  bias_filler { type: 'constant' value: 0.1 } }"
#define IP_PARAM "inner_product_param { num_output: 4 weight_filler { type: 'gaussian' std: 0.3 } }"
#define LOSS "layer { name: 'loss' type: 'ContrastiveLoss' bottom: 'fa' bottom: 'fb' bottom: 'sim' top: 'loss'\n" \
             "  contrastive_loss_param { margin: 2 } }\n"

/* Two branches, one set of weights (shared by name). */
static const char *siamese_net =
    INPUTS
    "layer { name: 'conv_a' type: 'Convolution' bottom: 'a' top: 'ca' param { name: 'cw' } param { name: 'cb' }\n"
    "  " CONV_PARAM " }\n"
    "layer { name: 'relu_a' type: 'ReLU' bottom: 'ca' top: 'ca' }\n"
    "layer { name: 'ip_a' type: 'InnerProduct' bottom: 'ca' top: 'fa' param { name: 'iw' } param { name: 'ib' }\n"
    "  " IP_PARAM " }\n"
    "layer { name: 'conv_b' type: 'Convolution' bottom: 'b' top: 'cb' param { name: 'cw' } param { name: 'cb' }\n"
    "  " CONV_PARAM " }\n"
    "layer { name: 'relu_b' type: 'ReLU' bottom: 'cb' top: 'cb' }\n"
    "layer { name: 'ip_b' type: 'InnerProduct' bottom: 'cb' top: 'fb' param { name: 'iw' } param { name: 'ib' }\n"
    "  " IP_PARAM " }\n" LOSS;

/* The same function with one branch over both inputs in one batch. */
static const char *stacked_net =
    INPUTS
    "layer { name: 'cat' type: 'Concat' bottom: 'a' bottom: 'b' top: 'ab' concat_param { axis: 0 } }\n"
    "layer { name: 'conv' type: 'Convolution' bottom: 'ab' top: 'c'\n"
    "  " CONV_PARAM " }\n"
    "layer { name: 'relu' type: 'ReLU' bottom: 'c' top: 'c' }\n"
    "layer { name: 'ip' type: 'InnerProduct' bottom: 'c' top: 'f'\n"
    "  " IP_PARAM " }\n"
    "layer { name: 'slice' type: 'Slice' bottom: 'f' top: 'fa' top: 'fb' slice_param { axis: 0 } }\n" LOSS;

/* Pairs for iteration `iter`: similar pairs are near copies, dissimilar ones independent. */
static mtl_status feed(void *user, mtl_net *net, int test_net, int64_t iter, int64_t pass, mtl_error *err)
{
    (void)user;
    (void)test_net;
    (void)pass;
    mtl_tensor *a = mtl_net_blob(net, "a"), *b = mtl_net_blob(net, "b"), *sim = mtl_net_blob(net, "sim");
    if (!a || !b || !sim)
        return mtl_fail(err, MTL_ERR_NOT_FOUND, "no a/b/sim blobs");
    mtl_rng rng;
    mtl_rng_seed(&rng, 1000 + (uint64_t)iter);
    for (int i = 0; i < BATCH; i++) {
        int similar = i % 2;
        sim->data[i] = (float)similar;
        for (int k = 0; k < SIDE * SIDE; k++) {
            float x = mtl_rng_gaussian(&rng, 0, 1);
            a->data[i * SIDE * SIDE + k] = x;
            b->data[i * SIDE * SIDE + k] = similar ? x + mtl_rng_gaussian(&rng, 0, 0.2f) : mtl_rng_gaussian(&rng, 0, 1);
        }
    }
    return MTL_OK;
}

static mtl_solver *make_solver(const char *net, mtl_error *err)
{
    char text[8192];
    snprintf(text, sizeof(text),
             "net_param { %s }\n"
             "base_lr: 0.05 momentum: 0.9 weight_decay: 0.001 lr_policy: 'fixed'\n"
             "max_iter: %d display: 0 snapshot_after_train: false random_seed: 3\n",
             net, STEPS);
    mtl_solver_options opts = {.feed = feed};
    mtl_solver *s = NULL;
    CHECK_OK(mtl_solver_from_string(text, "/tmp", &opts, &s, err), err);
    return s;
}

static float max_abs_diff(const float *x, const float *y, int64_t n)
{
    float m = 0.0f;
    for (int64_t k = 0; k < n; k++)
        m = fmaxf(m, fabsf(x[k] - y[k]));
    return m;
}

int main(void)
{
    mtl_error err = {0};
    mtl_solver *siamese = make_solver(siamese_net, &err), *stacked = make_solver(stacked_net, &err);
    if (!siamese || !stacked) {
        mtl_solver_free(siamese);
        mtl_solver_free(stacked);
        return check_finish();
    }
    mtl_net *sn = siamese->train_net, *tn = stacked->train_net;
    CHECK_INT(sn->n_slots, 4);
    CHECK_INT(tn->n_slots, 4);
    for (int k = 0; k < sn->n_slots; k++)
        CHECK_MSG(sn->slots[k].n_users == 2, "slot %s has %d users, expected 2", sn->slots[k].name,
                  sn->slots[k].n_users);
    const char *pairs[2][2] = {{"conv_a", "conv_b"}, {"ip_a", "ip_b"}};
    int64_t n_values = sn->n_param_values;
    CHECK_INT(n_values, tn->n_param_values);
    float *initial = malloc((size_t)n_values * sizeof(float));
    if (!initial || n_values != tn->n_param_values) {
        free(initial);
        mtl_solver_free(siamese);
        mtl_solver_free(stacked);
        return check_finish();
    }
    /* the same starting point for both nets (their fillers draw in different orders) */
    for (int k = 0; k < sn->n_slots && k < tn->n_slots; k++) {
        CHECK_INT(sn->slots[k].count, tn->slots[k].count);
        memcpy(tn->slots[k].data, sn->slots[k].data, (size_t)sn->slots[k].count * sizeof(float));
    }
    memcpy(initial, sn->param_data, (size_t)n_values * sizeof(float));

    for (int step = 0; step < STEPS; step++) {
        CHECK_OK(mtl_solver_step(siamese, 1, &err), &err);
        CHECK_OK(mtl_solver_step(stacked, 1, &err), &err);
        CHECK_NEAR(siamese->loss, stacked->loss, 1e-5 * fmax(1.0, fabs(stacked->loss)));
        /* one copy of the weights: both branches' parameter tensors view the same values */
        for (int p = 0; p < 2; p++) {
            const mtl_layer *a = sn->layers[mtl_net_layer_index(sn, pairs[p][0])];
            const mtl_layer *b = sn->layers[mtl_net_layer_index(sn, pairs[p][1])];
            for (int j = 0; j < 2; j++) {
                CHECK(a->params[j]->data == b->params[j]->data);
                CHECK_INT(a->params[j]->count, b->params[j]->count);
                CHECK(max_abs_diff(a->params[j]->data, b->params[j]->data, a->params[j]->count) == 0.0f);
            }
        }
        /* and that copy moves as one branch over both inputs does: it gets the sum of both gradients */
        for (int k = 0; k < sn->n_slots; k++) {
            float d = max_abs_diff(sn->slots[k].data, tn->slots[k].data, sn->slots[k].count);
            CHECK_MSG(d < 1e-5f, "step %d: slot %s differs from the stacked net's by %g", step, sn->slots[k].name, d);
        }
    }
    CHECK_INT(siamese->iter, STEPS);
    float moved = max_abs_diff(initial, sn->param_data, n_values);
    CHECK_MSG(moved > 1e-3f, "the shared weights moved by only %g in %d steps", moved, STEPS);
    printf("siamese vs. stacked after %d steps: loss %.6f vs. %.6f; weights moved by up to %.4f\n", STEPS,
           siamese->loss, stacked->loss, moved);
    free(initial);
    mtl_solver_free(siamese);
    mtl_solver_free(stacked);
    return check_finish();
}
