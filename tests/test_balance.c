/* Task balancing: each method's arithmetic against hand-computed answers; per-task gradients of
 * small nets against one-hot full backwards and the representation's gradient against finite
 * differences; each method's update wired through the net; tasks whose labels are all missing;
 * the solver's task_balance message, its errors, the display diagnostics, the JSON line and exact
 * resumption from snapshots. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "balance/balance.h"
#include "check.h"
#include "core/net_tasks.h"
#include "core/solver.h"
#include "gradcheck.h"

/* ================================================================== the methods' arithmetic */

static void test_min_norm(void)
{
    double gamma;
    /* orthogonal unit vectors: the midpoint, |(0.5, 0.5)|^2 = 0.5 */
    CHECK_NEAR(mtl_balance_min_norm_2(1, 0, 1, &gamma), 0.5, 1e-12);
    CHECK_NEAR(gamma, 0.5, 1e-12);
    /* v1 = (1, 0), v2 = (-1, 1): gamma = (v22 - v12) / |v1 - v2|^2 = (2 + 1) / 5 = 0.6, the point
     * 0.6 v1 + 0.4 v2 = (0.2, 0.4), squared norm 0.2 */
    CHECK_NEAR(mtl_balance_min_norm_2(1, -1, 2, &gamma), 0.2, 1e-12);
    CHECK_NEAR(gamma, 0.6, 1e-12);
    /* v2 = 2 v1: the shorter end, exactly (the official code would stop at 0.999) */
    CHECK_NEAR(mtl_balance_min_norm_2(1, 2, 4, &gamma), 1.0, 1e-12);
    CHECK_NEAR(gamma, 1.0, 1e-12);
    CHECK_NEAR(mtl_balance_min_norm_2(4, 2, 1, &gamma), 1.0, 1e-12);
    CHECK_NEAR(gamma, 0.0, 1e-12);
    /* the same vector twice */
    CHECK_NEAR(mtl_balance_min_norm_2(2, 2, 2, &gamma), 2.0, 1e-12);

    double sol[3];
    double gram2[4] = {1, -1, -1, 2};
    CHECK_NEAR(mtl_balance_min_norm(gram2, 2, sol), 0.2, 1e-12);
    CHECK_NEAR(sol[0], 0.6, 1e-12);
    CHECK_NEAR(sol[1], 0.4, 1e-12);
    double gram1[1] = {3};
    CHECK_NEAR(mtl_balance_min_norm(gram1, 1, sol), 3.0, 1e-12);
    CHECK_NEAR(sol[0], 1.0, 1e-12);
    /* three orthonormal vectors: (1/3, 1/3, 1/3), squared norm 1/3, by Frank-Wolfe */
    double gram3[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    double cost = mtl_balance_min_norm(gram3, 3, sol);
    CHECK_NEAR(cost, 1.0 / 3.0, 1e-3);
    CHECK_NEAR(sol[0] + sol[1] + sol[2], 1.0, 1e-9);
    for (int i = 0; i < 3; i++)
        CHECK_NEAR(sol[i], 1.0 / 3.0, 2e-2);
    /* g1 = (1, 0), g2 = (-1, 0), g3 = (0, 1): the first pair cancels exactly and stays */
    double gram_c[9] = {1, -1, 0, -1, 1, 0, 0, 0, 1};
    CHECK_NEAR(mtl_balance_min_norm(gram_c, 3, sol), 0.0, 1e-12);
    CHECK_NEAR(sol[0], 0.5, 1e-12);
    CHECK_NEAR(sol[1], 0.5, 1e-12);
    CHECK_NEAR(sol[2], 0.0, 1e-12);

    CHECK_NEAR(mtl_balance_mgda_normalizer(MTL_BALANCE_NORM_L2, 2.0, 3.0), 3.0, 0);
    CHECK_NEAR(mtl_balance_mgda_normalizer(MTL_BALANCE_NORM_LOSS, 2.0, 3.0), 2.0, 0);
    CHECK_NEAR(mtl_balance_mgda_normalizer(MTL_BALANCE_NORM_LOSS_PLUS, 2.0, 3.0), 6.0, 0);
    CHECK_NEAR(mtl_balance_mgda_normalizer(MTL_BALANCE_NORM_NONE, 2.0, 3.0), 1.0, 0);
    /* a zero loss (labels all missing) would divide by zero: no normalisation instead */
    CHECK_NEAR(mtl_balance_mgda_normalizer(MTL_BALANCE_NORM_LOSS, 0.0, 3.0), 1.0, 0);
    CHECK_NEAR(mtl_balance_mgda_normalizer(MTL_BALANCE_NORM_L2, 2.0, 0.0), 1.0, 0);
}

static void test_pcgrad(void)
{
    mtl_rng rng;
    mtl_rng_seed(&rng, 3);
    float work[3], out[3];
    /* g1 = (1, 0), g2 = (-1, 1) conflict (<g1, g2> = -1):
     * g1' = g1 - (-1 / |g2|^2) g2 = (1, 0) + 0.5 (-1, 1) = (0.5, 0.5)
     * g2' = g2 - (-1 / |g1|^2) g1 = (-1, 1) + (1, 0) = (0, 1); sum (0.5, 1.5) */
    float a[2] = {1, 0}, b[2] = {-1, 1};
    const float *g[3] = {a, b, NULL};
    mtl_balance_pcgrad(g, 2, 2, &rng, work, out);
    CHECK_NEAR(out[0], 0.5, 1e-7);
    CHECK_NEAR(out[1], 1.5, 1e-7);
    /* no conflict: the plain sum */
    float c[2] = {1, 1};
    g[1] = c;
    mtl_balance_pcgrad(g, 2, 2, &rng, work, out);
    CHECK_NEAR(out[0], 2.0, 1e-7);
    CHECK_NEAR(out[1], 1.0, 1e-7);
    /* a zero gradient (a task without labels) conflicts with nothing and divides nothing */
    float z[2] = {0, 0};
    g[1] = z;
    mtl_balance_pcgrad(g, 2, 2, &rng, work, out);
    CHECK_NEAR(out[0], 1.0, 0);
    CHECK_NEAR(out[1], 0.0, 0);
    /* three tasks, g3 orthogonal to both others: the same projections whatever the order:
     * (0.5, 0.5, 0) + (0, 1, 0) + (0, 0, 1) */
    float p[3] = {1, 0, 0}, q[3] = {-1, 1, 0}, r[3] = {0, 0, 1};
    const float *g3[3] = {p, q, r};
    for (int rep = 0; rep < 4; rep++) {
        mtl_balance_pcgrad(g3, 3, 3, &rng, work, out);
        CHECK_NEAR(out[0], 0.5, 1e-7);
        CHECK_NEAR(out[1], 1.5, 1e-7);
        CHECK_NEAR(out[2], 1.0, 1e-7);
    }
}

static void test_gradnorm_dwa_uncertainty(void)
{
    /* GradNorm, alpha 1, lr 0.1: w = (1, 1), g = (2, 1), L/L0 = (0.5, 1).
     * G = (2, 1), Gbar = 1.5; r = (0.5, 1) / 0.75 = (2/3, 4/3); targets 1.5 r = (1, 2).
     * G1 > 1: dw1 = +g1 = 2; G2 < 2: dw2 = -g2 = -1; w = (1 - 0.2, 1 + 0.1) = (0.8, 1.1), sum 1.9,
     * renormalised to sum 2: (1.6 / 1.9, 2.2 / 1.9) = (0.8421053, 1.1578947). */
    double w[3] = {1, 1, 1}, g[3] = {2, 1, 0}, ratio[3] = {0.5, 1.0, 1.0};
    uint8_t active[3] = {1, 1, 0};
    mtl_balance_gradnorm_step(2, w, g, ratio, active, 1.0, 0.1);
    CHECK_NEAR(w[0], 1.6 / 1.9, 1e-12);
    CHECK_NEAR(w[1], 2.2 / 1.9, 1e-12);
    /* alpha 1.5: targets 1.5 (2/3)^1.5 = 0.816 and 1.5 (4/3)^1.5 = 2.309: the same signs */
    w[0] = w[1] = 1;
    mtl_balance_gradnorm_step(2, w, g, ratio, active, 1.5, 0.1);
    CHECK_NEAR(w[0], 1.6 / 1.9, 1e-12);
    /* an inactive task (no labels) neither moves nor counts in the means: task 0 alone is on its
     * target, nothing changes */
    w[0] = w[1] = 1;
    active[1] = 0;
    active[0] = 1;
    mtl_balance_gradnorm_step(2, w, g, ratio, active, 1.5, 0.1);
    CHECK_NEAR(w[0], 1.0, 1e-12);
    CHECK_NEAR(w[1], 1.0, 1e-12);
    /* a weight pushed below zero stops at 1e-3 before renormalisation:
     * w = (1 - 10 * 2, 1 + 10 * 1) -> (0.001, 11), sum 11.001 */
    active[1] = 1;
    mtl_balance_gradnorm_step(2, w, g, ratio, active, 1.0, 10.0);
    CHECK_NEAR(w[0], 2 * 0.001 / 11.001, 1e-12);
    CHECK_NEAR(w[1], 2 * 11.0 / 11.001, 1e-12);

    /* DWA, T = 2: ratios (1 / 2, 0.5 / 0.5) = (0.5, 1); lambda = 2 exp(r / 2) / sum:
     * exp(0.25) = 1.2840254, exp(0.5) = 1.6487213 -> (0.8756470, 1.1243530) */
    double last[3] = {1.0, 0.5, 0.5}, before[3] = {2.0, 0.5, 0.5}, lambda[3];
    mtl_balance_dwa_weights(2, last, before, 2.0, lambda);
    CHECK_NEAR(lambda[0], 0.8756469982, 1e-9);
    CHECK_NEAR(lambda[1], 1.1243530018, 1e-9);
    /* three tasks, T = 1: ratios (0.8, 1.2, 1) -> (0.8079225, 1.2052787, 0.9867988) */
    double last3[3] = {0.8, 1.2, 0.5}, before3[3] = {1.0, 1.0, 0.5};
    mtl_balance_dwa_weights(3, last3, before3, 1.0, lambda);
    CHECK_NEAR(lambda[0], 0.8079224975, 1e-9);
    CHECK_NEAR(lambda[1], 1.2052787356, 1e-9);
    CHECK_NEAR(lambda[2], 0.9867987669, 1e-9);
    /* a window without labels for a task (mean 0) counts as ratio 1 */
    double last0[2] = {0.0, 1.0}, before0[2] = {1.0, 1.0};
    mtl_balance_dwa_weights(2, last0, before0, 2.0, lambda);
    CHECK_NEAR(lambda[0], 1.0, 1e-12);
    CHECK_NEAR(lambda[1], 1.0, 1e-12);

    /* uncertainty, classification exp(-s) L + s: s = 0, L = 2 -> value 2, weight 1, d/ds = 1 - 2 = -1;
     * s = ln 2 -> weight 0.5, d/ds = 1 - 0.5 * 2 = 0 (the optimum exp(s) = L), value 1 + ln 2 */
    double weight, ds;
    CHECK_NEAR(mtl_balance_uncertainty(0.0, 2.0, 0, &weight, &ds), 2.0, 1e-12);
    CHECK_NEAR(weight, 1.0, 1e-12);
    CHECK_NEAR(ds, -1.0, 1e-12);
    CHECK_NEAR(mtl_balance_uncertainty(log(2.0), 2.0, 0, &weight, &ds), 1.0 + log(2.0), 1e-12);
    CHECK_NEAR(weight, 0.5, 1e-12);
    CHECK_NEAR(ds, 0.0, 1e-12);
    /* regression 0.5 exp(-s) L + 0.5 s: s = 0, L = 2 -> value 1, weight 0.5, d/ds = 0.5 (1 - 2) */
    CHECK_NEAR(mtl_balance_uncertainty(0.0, 2.0, 1, &weight, &ds), 1.0, 1e-12);
    CHECK_NEAR(weight, 0.5, 1e-12);
    CHECK_NEAR(ds, -0.5, 1e-12);
}

/* ================================================================== configuration */

static mtl_status read_text(const char *text, mtl_balance_config *c, mtl_error *err)
{
    mtl_cfg_node *root = NULL;
    MTL_TRY(mtl_cfg_parse_string(text, "<balance>", &root, err));
    mtl_cfg_node *msg = NULL;
    mtl_status st = mtl_cfg_message(root, "task_balance", &msg, err);
    if (st == MTL_OK)
        st = mtl_balance_read_config(msg, c, err);
    mtl_cfg_free(root);
    return st;
}

static void test_config(void)
{
    mtl_balance_config c;
    mtl_error err = {0};
    CHECK_OK(read_text("", &c, &err), &err);
    CHECK_INT(c.method, MTL_BALANCE_FIXED);
    CHECK_INT(c.diagnostics, 1);
    CHECK_INT(c.normalization, MTL_BALANCE_NORM_LOSS_PLUS);
    CHECK_OK(read_text("task_balance { method: GRADNORM alpha: 0.5 lr: 0.01 }", &c, &err), &err);
    CHECK_INT(c.method, MTL_BALANCE_GRADNORM);
    CHECK_NEAR(c.alpha, 0.5, 0);
    CHECK_NEAR(c.lr, 0.01, 1e-12);
    CHECK_OK(read_text("task_balance { method: DWA temperature: 3 window: 50 diagnostics: false }", &c, &err), &err);
    CHECK_INT(c.method, MTL_BALANCE_DWA);
    CHECK_NEAR(c.temperature, 3, 0);
    CHECK_INT(c.window, 50);
    CHECK_INT(c.diagnostics, 0);
    CHECK_OK(read_text("task_balance { method: MGDA_UB normalization: L2 }", &c, &err), &err);
    CHECK_INT(c.normalization, MTL_BALANCE_NORM_L2);
    CHECK_OK(read_text("task_balance { method: UNCERTAINTY form: REGRESSION lr: 0 }", &c, &err), &err);
    CHECK_INT(c.form, MTL_BALANCE_FORM_REGRESSION);

    CHECK_FAILS(read_text("task_balance { method: GRADNROM }", &c, &err), &err, MTL_ERR_CONFIG, "GRADNORM");
    CHECK_FAILS(read_text("task_balance { method: DWA temprature: 2 }", &c, &err), &err, MTL_ERR_CONFIG,
                "did you mean 'temperature'");
    CHECK_FAILS(read_text("task_balance { method: DWA alpha: 2 }", &c, &err), &err, MTL_ERR_CONFIG,
                "alpha is used by method GRADNORM only, not DWA");
    CHECK_FAILS(read_text("task_balance { normalization: L2 }", &c, &err), &err, MTL_ERR_CONFIG,
                "normalization is used by method MGDA_UB only, not FIXED");
    CHECK_FAILS(read_text("task_balance { method: PCGRAD lr: 0.1 }", &c, &err), &err, MTL_ERR_CONFIG,
                "lr is used by method UNCERTAINTY or GRADNORM only");
    CHECK_FAILS(read_text("task_balance { method: DWA temperature: 0 }", &c, &err), &err, MTL_ERR_CONFIG,
                "temperature must be");
    CHECK_FAILS(read_text("task_balance { method: DWA window: 0 }", &c, &err), &err, MTL_ERR_CONFIG, "window");
    CHECK_FAILS(read_text("task_balance { method: GRADNORM alpha: -1 }", &c, &err), &err, MTL_ERR_CONFIG,
                "alpha must be");
    CHECK_FAILS(read_text("task_balance { method: GRADNORM lr: -0.1 }", &c, &err), &err, MTL_ERR_CONFIG,
                "lr must be");
    CHECK_FAILS(read_text("task_balance { method: MGDA_UB normalization: L1 }", &c, &err), &err, MTL_ERR_CONFIG,
                "LOSS_PLUS");
}

/* ================================================================== per-task gradients of small nets */

#define INPUTS                                                                                                     \
    "layer { name: 'in' type: 'Input' top: 'data' top: 'label' top: 'target'\n"                                     \
    "  input_param { shape { dim: 5 dim: 6 } shape { dim: 5 dim: 2 } shape { dim: 5 dim: 2 } } }\n"                 \
    "layer { name: 'slice' type: 'Slice' bottom: 'label' top: 'label_a' top: 'label_b'\n"                           \
    "  slice_param { axis: 1 slice_point: 1 } }\n"
#define FC(name, bottom, top, n)                                                                                   \
    "layer { name: '" name "' type: 'InnerProduct' bottom: '" bottom "' top: '" top "'\n"                           \
    "  inner_product_param { num_output: " #n " weight_filler { type: 'gaussian' std: 0.6 }\n"                     \
    "  bias_filler { type: 'gaussian' std: 0.2 } } }\n"
#define TANH(name, blob) "layer { name: '" name "' type: 'TanH' bottom: '" blob "' top: '" blob "' }\n"
#define SOFTMAX_LOSS(name, score, label, w)                                                                        \
    "layer { name: '" name "' type: 'SoftmaxWithLoss' bottom: '" score "' bottom: '" label "' top: '" name "'\n"    \
    "  loss_weight: " #w " }\n"

/* two tasks over a two-layer trunk; task b's head has two layers */
static const char *net_two = "name: 'two'\n" INPUTS FC("trunk1", "data", "h", 7) TANH("act1", "h")
    FC("trunk2", "h", "z", 5) TANH("act2", "z") FC("head_a", "z", "score_a", 3)
    SOFTMAX_LOSS("loss_a", "score_a", "label_a", 0.7) FC("head_b1", "z", "hb", 4) TANH("act_b", "hb")
    FC("head_b2", "hb", "score_b", 3) SOFTMAX_LOSS("loss_b", "score_b", "label_b", 0.3)
    "layer { name: 'silence' type: 'Silence' bottom: 'target' }\n";

/* three tasks branching at two depths: task c (regression) leaves after the first trunk layer, so
 * the representation is h (for c) and z (for a and b) */
static const char *net_three = "name: 'three'\n" INPUTS FC("trunk1", "data", "h", 7) TANH("act1", "h")
    FC("trunk2", "h", "z", 5) TANH("act2", "z") FC("head_a", "z", "score_a", 3)
    SOFTMAX_LOSS("loss_a", "score_a", "label_a", 0.5) FC("head_b", "z", "score_b", 3)
    SOFTMAX_LOSS("loss_b", "score_b", "label_b", 1.0) FC("head_c", "h", "pred_c", 2)
    "layer { name: 'loss_c' type: 'EuclideanLoss' bottom: 'pred_c' bottom: 'target' top: 'loss_c'\n"
    "  loss_weight: 2 }\n";

/* the trunk hands each task its own part of z through a Slice: no Split in between */
static const char *net_slice = "name: 'slice'\n" INPUTS FC("trunk1", "data", "z", 6) TANH("act1", "z")
    "layer { name: 'slice_z' type: 'Slice' bottom: 'z' top: 'z_a' top: 'z_b' slice_param { axis: 1 slice_point: 2 } }\n"
    FC("head_a", "z_a", "score_a", 3) SOFTMAX_LOSS("loss_a", "score_a", "label_a", 1)
    FC("head_b", "z_b", "score_b", 3) SOFTMAX_LOSS("loss_b", "score_b", "label_b", 1)
    "layer { name: 'silence' type: 'Silence' bottom: 'target' }\n";

typedef struct net_case {
    const char *name;
    int n_tasks, n_sources;
} net_case;

static const net_case net_cases[] = {
    {"two tasks", 2, 1},
    {"three tasks, two branch points", 3, 2},
    {"sliced representation", 2, 2},
};

static const char *case_text(int k) { return k == 0 ? net_two : k == 1 ? net_three : net_slice; }

static mtl_net *build_net(const char *text)
{
    mtl_error err = {0};
    mtl_net *net = NULL;
    mtl_net_options o = {.phase = MTL_PHASE_TRAIN, .seed = 11};
    CHECK_OK(mtl_net_from_string(text, &o, &net, &err), &err);
    return net;
}

/* Inputs for pass `seed`; the labels of task column `missing` (-1: none) are all NaN. */
static void fill_inputs(mtl_net *net, unsigned seed, int missing)
{
    gradcheck_fill(mtl_net_blob(net, "data"), -1.5f, 1.5f, seed);
    gradcheck_fill(mtl_net_blob(net, "target"), -1.0f, 1.0f, seed + 100);
    mtl_tensor *label = mtl_net_blob(net, "label");
    for (int i = 0; i < label->shape[0]; i++)
        for (int c = 0; c < 2; c++)
            label->data[2 * i + c] = c == missing ? NAN : (float)((i * 7 + c * 5 + (int)seed) % 3);
}

static int forward(mtl_net *net)
{
    mtl_error err = {0};
    mtl_status st = mtl_net_forward(net, NULL, &err);
    CHECK_OK(st, &err);
    return st == MTL_OK;
}

static int near_rel(double a, double b, double tol) { return fabs(a - b) <= tol * fmax(1.0, fmax(fabs(a), fabs(b))); }

/* The values of all slots (without the flat buffer's alignment gaps). */
static int64_t n_values(const mtl_net *net)
{
    int64_t n = 0;
    for (int s = 0; s < net->n_slots; s++)
        n += net->slots[s].count;
    return n;
}

/* Copies every slot's gradient into one vector (slot order). */
static float *all_grads(const mtl_net *net)
{
    int64_t n = n_values(net);
    float *v = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int s = 0, off = 0; v && s < net->n_slots; s++) {
        memcpy(v + off, net->slots[s].grad, (size_t)net->slots[s].count * sizeof(float));
        off += (int)net->slots[s].count;
    }
    return v;
}

static int slot_offset(const mtl_net *net, int slot)
{
    int off = 0;
    for (int s = 0; s < slot; s++)
        off += (int)net->slots[s].count;
    return off;
}

/* The per-task engine against full backwards with one-hot task weights. */
static void test_per_task_equals_one_hot(void)
{
    for (int k = 0; k < 3; k++) {
        const net_case *c = &net_cases[k];
        mtl_net *net = build_net(case_text(k));
        mtl_net_tasks *nt = NULL;
        mtl_error err = {0};
        if (!net)
            continue;
        CHECK_OK(mtl_net_tasks_create(net, &nt, &err), &err);
        if (!nt || !(fill_inputs(net, 1, -1), forward(net))) {
            mtl_net_tasks_free(nt);
            mtl_net_free(net);
            continue;
        }
        CHECK_MSG(nt->n_tasks == c->n_tasks && nt->n_sources == c->n_sources, "%s: %d tasks, %d sources", c->name,
                  nt->n_tasks, nt->n_sources);
        CHECK_MSG(nt->last_shared_layer >= 0 && nt->n_shared > 0, "%s: a trunk with parameters", c->name);
        CHECK_OK(mtl_net_tasks_begin(nt, &err), &err);
        /* the engine leaves accumulated gradients alone */
        for (int64_t i = 0; i < net->n_param_values; i++)
            net->param_grad[i] = (float)(i % 7) * 0.25f;
        float *before = all_grads(net);
        float **g = malloc((size_t)nt->n_tasks * sizeof(float *));
        for (int t = 0; t < nt->n_tasks; t++) {
            g[t] = calloc((size_t)nt->n_shared, sizeof(float));
            mtl_net_tasks_head_backward(nt, t);
        }
        mtl_net_tasks_shared_grads(nt, g, 0);
        float *after = all_grads(net);
        CHECK_MSG(memcmp(before, after, (size_t)n_values(net) * sizeof(float)) == 0,
                  "%s: gradients untouched", c->name);
        float *seed = calloc((size_t)nt->n_tasks, sizeof(float));
        int bad = 0;
        for (int t = 0; t < nt->n_tasks; t++) {
            memset(seed, 0, (size_t)nt->n_tasks * sizeof(float));
            seed[t] = 1.0f;
            mtl_net_zero_param_grad(net);
            mtl_net_backward_weighted(net, seed);
            for (int q = 0; q < nt->n_shared_slots; q++) {
                const mtl_param_slot *s = &net->slots[nt->shared_slots[q]];
                for (int64_t i = 0; i < s->count; i++)
                    bad += !near_rel(s->grad[i], g[t][nt->shared_offset[q] + i], 1e-6);
            }
            for (int u = 0; u < nt->n_tasks; u++) {
                const float *d = nt->head_delta[u];
                for (int q = 0; q < nt->n_head_slots[u]; q++) {
                    const mtl_param_slot *s = &net->slots[nt->head_slots[u][q]];
                    for (int64_t i = 0; i < s->count; i++, d++)
                        bad += !near_rel(s->grad[i], u == t ? *d : 0.0f, 1e-6);
                }
            }
        }
        CHECK_MSG(bad == 0, "%s: %d per-task gradient values differ from one-hot backwards", c->name, bad);

        /* the per-task way of a weighted backward equals the net's own */
        float w[3] = {0.3f, 1.7f, -0.4f};
        mtl_net_zero_param_grad(net);
        mtl_net_backward_weighted(net, w);
        float *full = all_grads(net);
        mtl_net_zero_param_grad(net);
        mtl_net_tasks_backward_weighted(nt, w);
        float *mine = all_grads(net);
        bad = 0;
        for (int64_t i = 0; i < n_values(net) && full && mine; i++)
            bad += !near_rel(full[i], mine[i], 1e-5);
        CHECK_MSG(bad == 0, "%s: %d values of the per-task weighted backward differ", c->name, bad);
        for (int t = 0; t < nt->n_tasks; t++)
            free(g[t]);
        free(g);
        free(seed);
        free(before);
        free(after);
        free(full);
        free(mine);
        mtl_net_tasks_free(nt);
        mtl_net_free(net);
    }
}

/* Re-runs the task heads (and the Splits in front of them) only, so a perturbed representation
 * value reaches the losses with the trunk held fixed. */
static void run_heads(mtl_net *net, const mtl_net_tasks *nt)
{
    mtl_error err = {0};
    for (int i = 0; i < net->n_layers; i++) {
        mtl_layer *l = net->layers[i];
        int run = net->layer_role[i] >= 0;
        for (int s = 0; s < nt->n_sources && !run; s++)
            run = net->layer_is_auto_split[i] && l->bottoms[0] == nt->sources[s];
        if (!run)
            continue;
        if (l->ops->reshape)
            l->ops->reshape(l, &err);
        l->ops->forward(l, &err);
    }
}

/* The gradient at the representation against central differences of each task's loss. */
static void test_representation_finite_differences(void)
{
    for (int k = 0; k < 3; k++) {
        const net_case *c = &net_cases[k];
        mtl_net *net = build_net(case_text(k));
        mtl_net_tasks *nt = NULL;
        mtl_error err = {0};
        if (!net)
            continue;
        CHECK_OK(mtl_net_tasks_create(net, &nt, &err), &err);
        if (!nt || !(fill_inputs(net, 2, -1), forward(net))) {
            mtl_net_tasks_free(nt);
            mtl_net_free(net);
            continue;
        }
        CHECK_OK(mtl_net_tasks_begin(nt, &err), &err);
        for (int t = 0; t < nt->n_tasks; t++)
            mtl_net_tasks_head_backward(nt, t);
        int bad = 0, checked = 0, nonzero = 0;
        const float h = 1e-2f;
        for (int s = 0; s < nt->n_sources; s++) {
            mtl_tensor *src = nt->sources[s];
            for (int64_t i = 0; i < src->count; i++) {
                float orig = src->data[i];
                double lp[3], lm[3];
                src->data[i] = orig + h;
                run_heads(net, nt);
                for (int t = 0; t < nt->n_tasks; t++)
                    lp[t] = mtl_net_task_loss(net, t);
                src->data[i] = orig - h;
                run_heads(net, nt);
                for (int t = 0; t < nt->n_tasks; t++)
                    lm[t] = mtl_net_task_loss(net, t);
                src->data[i] = orig;
                for (int t = 0; t < nt->n_tasks; t++) {
                    double fd = (lp[t] - lm[t]) / (2.0 * h);
                    double an = nt->rep_grad[t][nt->source_offset[s] + i];
                    checked++;
                    nonzero += an != 0.0;
                    if (fabs(fd - an) > 2e-3 * fmax(1.0, fabs(fd))) {
                        if (bad++ < 5)
                            printf("  %s: task %d source '%s'[%lld]: analytic %.6g, numeric %.6g\n", c->name, t,
                                   src->name, (long long)i, an, fd);
                    }
                }
            }
        }
        run_heads(net, nt);
        CHECK_MSG(bad == 0, "%s: %d of %d representation gradients off", c->name, bad, checked);
        CHECK_MSG(nonzero > checked / 3, "%s: only %d of %d gradients non-zero", c->name, nonzero, checked);
        mtl_net_tasks_free(nt);
        mtl_net_free(net);
    }
}

/* ================================================================== each method through a net */

static mtl_balancer *make_balancer(mtl_net *net, const char *text)
{
    mtl_balance_config cfg;
    mtl_error err = {0};
    mtl_balancer *b = NULL;
    CHECK_OK(read_text(text, &cfg, &err), &err);
    CHECK_OK(mtl_balancer_create(&cfg, net, 5, 10, &b, &err), &err);
    return b;
}

/* One iteration (one pass): zero, begin, backward, end. */
static void run_iteration(mtl_balancer *b, double rate, int diagnose)
{
    mtl_error err = {0};
    mtl_net_zero_param_grad(b->net);
    mtl_balancer_begin_iteration(b, diagnose);
    CHECK_OK(mtl_balancer_backward(b, &err), &err);
    mtl_balancer_end_iteration(b, rate);
}

static double dotf(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* MGDA-UB on the two-task net: gamma from the representation gradients by the two-task formula,
 * then the update must be the backward of gamma L_a + (1 - gamma) L_b. */
static void test_mgda_net(void)
{
    const char *configs[] = {"task_balance { method: MGDA_UB normalization: NONE }",
                             "task_balance { method: MGDA_UB normalization: LOSS_PLUS }"};
    for (int k = 0; k < 2; k++) {
        mtl_net *net = build_net(net_two);
        mtl_balancer *b = net ? make_balancer(net, configs[k]) : NULL;
        if (!b || !(fill_inputs(net, 3, -1), forward(net))) {
            mtl_balancer_free(b);
            mtl_net_free(net);
            continue;
        }
        run_iteration(b, 0.1, 1);
        float *got = all_grads(net);
        const mtl_net_tasks *nt = b->nt;
        double n0 = 1, n1 = 1;
        if (k == 1) { /* loss * |g| */
            n0 = mtl_net_task_loss(net, 0) * sqrt(dotf(nt->rep_grad[0], nt->rep_grad[0], nt->n_rep));
            n1 = mtl_net_task_loss(net, 1) * sqrt(dotf(nt->rep_grad[1], nt->rep_grad[1], nt->n_rep));
        }
        double v11 = dotf(nt->rep_grad[0], nt->rep_grad[0], nt->n_rep) / (n0 * n0);
        double v12 = dotf(nt->rep_grad[0], nt->rep_grad[1], nt->n_rep) / (n0 * n1);
        double v22 = dotf(nt->rep_grad[1], nt->rep_grad[1], nt->n_rep) / (n1 * n1);
        double gamma = (v22 - v12) / (v11 + v22 - 2 * v12);
        CHECK_MSG(gamma > 0 && gamma < 1, "MGDA-UB test case inside the segment: gamma %g", gamma);
        gamma = gamma < 0 ? 0 : gamma > 1 ? 1 : gamma;
        CHECK_NEAR(b->report.weights[0], gamma, 1e-6);
        CHECK_NEAR(b->report.weights[1], 1 - gamma, 1e-6);
        float w[2] = {(float)gamma, (float)(1 - gamma)};
        mtl_net_zero_param_grad(net);
        mtl_net_backward_weighted(net, w);
        float *want = all_grads(net);
        int bad = 0;
        for (int64_t i = 0; i < n_values(net); i++)
            bad += !near_rel(got[i], want[i], 1e-5);
        CHECK_MSG(bad == 0, "MGDA-UB (%s): %d gradient values differ", configs[k], bad);
        CHECK(b->report.valid);
        free(got);
        free(want);
        mtl_balancer_free(b);
        mtl_net_free(net);
    }
}

/* PCGrad on the two-task net: shared gradients projected by the two-task formula, head gradients
 * at loss_weight. Task b's weight negated makes the two gradients conflict. */
static void test_pcgrad_net(float weight_b)
{
    char text[4096];
    const char *at = strstr(net_two, "loss_weight: 0.3");
    snprintf(text, sizeof(text), "%.*sloss_weight: %g%s", (int)(at - net_two), net_two, weight_b,
             at + strlen("loss_weight: 0.3"));
    mtl_net *net = build_net(text);
    mtl_balancer *b = net ? make_balancer(net, "task_balance { method: PCGRAD }") : NULL;
    if (!b || !(fill_inputs(net, 4, -1), forward(net))) {
        mtl_balancer_free(b);
        mtl_net_free(net);
        return;
    }
    run_iteration(b, 0.1, 0);
    float *got = all_grads(net);
    mtl_net_tasks *nt = b->nt;
    int64_t n = nt->n_shared;
    float *g0 = calloc((size_t)n, sizeof(float)), *g1 = calloc((size_t)n, sizeof(float));
    float *gs[2] = {g0, g1};
    mtl_net_tasks_shared_grads(nt, gs, 0);
    for (int64_t i = 0; i < n; i++) {
        g0[i] *= 0.7f;
        g1[i] *= weight_b;
    }
    double d = dotf(g0, g1, n), s0 = dotf(g0, g0, n), s1 = dotf(g1, g1, n);
    int bad = 0;
    for (int q = 0; q < nt->n_shared_slots; q++) {
        const mtl_param_slot *s = &net->slots[nt->shared_slots[q]];
        int off = slot_offset(net, nt->shared_slots[q]);
        for (int64_t i = 0; i < s->count; i++) {
            int64_t j = nt->shared_offset[q] + i;
            double want = g0[j] + g1[j];
            if (d < 0)
                want -= d / s1 * g1[j] + d / s0 * g0[j];
            bad += !near_rel(got[off + i], want, 1e-5);
        }
    }
    for (int t = 0; t < 2; t++) {
        const float *delta = nt->head_delta[t];
        for (int q = 0; q < nt->n_head_slots[t]; q++) {
            const mtl_param_slot *s = &net->slots[nt->head_slots[t][q]];
            int off = slot_offset(net, nt->head_slots[t][q]);
            for (int64_t i = 0; i < s->count; i++, delta++)
                bad += !near_rel(got[off + i], (t ? weight_b : 0.7f) * *delta, 1e-5);
        }
    }
    CHECK_MSG(weight_b > 0 ? d > 0 : d < 0, "PCGrad: the case meant to %s has cosine %g",
              weight_b > 0 ? "agree" : "conflict", d / sqrt(s0 * s1));
    CHECK_MSG(bad == 0, "PCGrad (task b weight %g): %d gradient values differ", weight_b, bad);
    free(got);
    free(g0);
    free(g1);
    mtl_balancer_free(b);
    mtl_net_free(net);
}

/* A task whose multiplier is 0 (stopped by task-wise early stopping) drops out of every method. */
static void test_multipliers(void)
{
    const char *configs[] = {"", "task_balance { method: PCGRAD }", "task_balance { method: MGDA_UB }",
                             "task_balance { method: GRADNORM }", "task_balance { method: UNCERTAINTY }"};
    for (int k = 0; k < 5; k++) {
        mtl_net *net = build_net(net_two);
        mtl_balancer *b = net ? make_balancer(net, configs[k]) : NULL;
        if (!b || !(fill_inputs(net, 8, -1), forward(net))) {
            mtl_balancer_free(b);
            mtl_net_free(net);
            continue;
        }
        const float stop_b[2] = {1.0f, 0.0f};
        mtl_balancer_set_multipliers(b, stop_b);
        run_iteration(b, 0.1, 1);
        float *got = all_grads(net);
        float w[2] = {b->cfg.method == MTL_BALANCE_MGDA_UB ? 1.0f : 0.7f, 0.0f};
        CHECK_NEAR(b->report.weights[0], w[0], 1e-7);
        CHECK_NEAR(b->report.weights[1], 0.0, 0);
        CHECK_NEAR(b->log_var[1], 0.0, 0);
        CHECK_NEAR(b->gn_weight[1] + b->gn_weight[0], 2.0, 1e-12);
        mtl_net_zero_param_grad(net);
        mtl_net_backward_weighted(net, w);
        float *want = all_grads(net);
        int bad = 0;
        for (int64_t i = 0; i < n_values(net); i++)
            bad += !near_rel(got[i], want[i], 1e-5);
        CHECK_MSG(bad == 0, "'%s' with task b stopped: %d gradient values differ", configs[k], bad);
        free(got);
        free(want);
        mtl_balancer_free(b);
        mtl_net_free(net);
    }
}

/* GradNorm, uncertainty and DWA: the weights after one or two iterations, by hand from the losses
 * and gradients the net reports. */
static void test_weighting_nets(void)
{
    mtl_net *net = build_net(net_two);
    if (!net)
        return;
    /* GradNorm: at the first iteration L(0) = L, so r = 1 and each target is the mean G */
    mtl_balancer *b = make_balancer(net, "task_balance { method: GRADNORM alpha: 1.5 lr: 0.05 }");
    if (b && (fill_inputs(net, 5, -1), forward(net))) {
        run_iteration(b, 0.1, 0);
        mtl_net_tasks *nt = b->nt;
        float *g0 = calloc((size_t)nt->n_shared, sizeof(float)), *g1 = calloc((size_t)nt->n_shared, sizeof(float));
        float *gs[2] = {g0, g1};
        mtl_net_tasks_shared_grads(nt, gs, 0);
        double n0 = 0.7 * sqrt(dotf(g0 + nt->last_shared_offset, g0 + nt->last_shared_offset, nt->last_shared_count));
        double n1 = 0.3 * sqrt(dotf(g1 + nt->last_shared_offset, g1 + nt->last_shared_offset, nt->last_shared_count));
        double mean = (n0 + n1) / 2;
        double w0 = 1 - 0.05 * (n0 > mean ? n0 : -n0), w1 = 1 - 0.05 * (n1 > mean ? n1 : -n1);
        CHECK_NEAR(b->gn_weight[0], 2 * w0 / (w0 + w1), 1e-9);
        CHECK_NEAR(b->gn_weight[1], 2 * w1 / (w0 + w1), 1e-9);
        CHECK_NEAR(b->initial_loss[0], mtl_net_task_loss(net, 0), 1e-7);
        /* the net's last shared layer is trunk2 (its weights) */
        CHECK_INT(nt->last_shared_layer, mtl_net_layer_index(net, "trunk2"));
        /* the next iteration uses loss_weight * w */
        mtl_balancer_begin_iteration(b, 0);
        CHECK_NEAR(b->weights[0], 0.7 * b->gn_weight[0], 1e-6);
        free(g0);
        free(g1);
    }
    mtl_balancer_free(b);

    /* uncertainty at lr 0.1: s = 0 - 0.1 (1 - w0 L) for each (classification) task */
    b = make_balancer(net, "task_balance { method: UNCERTAINTY lr: 0.1 }");
    if (b && (fill_inputs(net, 6, -1), forward(net))) {
        double la = mtl_net_task_loss(net, 0), lb = mtl_net_task_loss(net, 1);
        run_iteration(b, 1.0, 0);
        CHECK_NEAR(b->log_var[0], -0.1 * (1 - 0.7 * la), 1e-7);
        CHECK_NEAR(b->log_var[1], -0.1 * (1 - 0.3 * lb), 1e-7);
        mtl_balancer_begin_iteration(b, 0);
        CHECK_NEAR(b->weights[0], 0.7 * exp(-b->log_var[0]), 1e-6);
        CHECK_NEAR(b->weights[1], 0.3 * exp(-b->log_var[1]), 1e-6);
        /* and the update is the backward at those weights */
        mtl_error err = {0};
        CHECK_OK(mtl_net_forward(net, NULL, &err), &err);
        mtl_net_zero_param_grad(net);
        CHECK_OK(mtl_balancer_backward(b, &err), &err);
        float *got = all_grads(net);
        mtl_net_zero_param_grad(net);
        mtl_net_backward_weighted(net, b->weights);
        float *want = all_grads(net);
        CHECK(got && want && memcmp(got, want, (size_t)n_values(net) * sizeof(float)) == 0);
        mtl_balancer_end_iteration(b, 1.0);
        free(got);
        free(want);
    }
    mtl_balancer_free(b);

    /* DWA with windows of one iteration: weight 1 for the first two windows, then from the ratio */
    b = make_balancer(net, "task_balance { method: DWA temperature: 2 window: 1 }");
    double l[3][2];
    for (int it = 0; b && it < 3; it++) {
        fill_inputs(net, 10 + (unsigned)it, -1);
        if (!forward(net))
            break;
        l[it][0] = mtl_net_task_loss(net, 0);
        l[it][1] = mtl_net_task_loss(net, 1);
        run_iteration(b, 0.1, 0);
        if (it == 0)
            CHECK(b->lambda[0] == 1.0 && b->lambda[1] == 1.0);
    }
    if (b) {
        double e0 = exp(l[2][0] / l[1][0] / 2), e1 = exp(l[2][1] / l[1][1] / 2);
        CHECK_NEAR(b->lambda[0], 2 * e0 / (e0 + e1), 1e-9);
        CHECK_NEAR(b->lambda[1], 2 * e1 / (e0 + e1), 1e-9);
    }
    mtl_balancer_free(b);
    mtl_net_free(net);
}

static int all_finite(const float *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

/* Every method on a batch where task b has no label at all: zero loss, zero gradient, no NaN. */
static void test_missing_labels(void)
{
    const char *configs[] = {"", "task_balance { method: UNCERTAINTY }",
                             "task_balance { method: GRADNORM }", "task_balance { method: DWA window: 1 }",
                             "task_balance { method: PCGRAD }", "task_balance { method: MGDA_UB normalization: LOSS }",
                             "task_balance { method: MGDA_UB normalization: LOSS_PLUS }",
                             "task_balance { method: MGDA_UB normalization: L2 }"};
    for (int k = 0; k < (int)(sizeof(configs) / sizeof(configs[0])); k++) {
        mtl_net *net = build_net(net_two);
        mtl_balancer *b = net ? make_balancer(net, configs[k]) : NULL;
        for (int it = 0; b && it < 3; it++) {
            fill_inputs(net, 20 + (unsigned)it, it == 1 ? -1 : 1); /* iterations 0 and 2: task b all missing */
            if (!forward(net))
                break;
            if (it != 1)
                CHECK_NEAR(mtl_net_task_loss(net, 1), 0.0, 0);
            run_iteration(b, 0.1, 1);
            CHECK_MSG(all_finite(net->param_grad, net->n_param_values), "%s: finite gradients", configs[k]);
            for (int t = 0; t < 2; t++) {
                CHECK_MSG(isfinite(b->report.weights[t]) && isfinite(b->report.grad_norm[t]),
                          "%s: finite weights and norms", configs[k]);
                CHECK_MSG(isfinite(b->log_var[t]) && isfinite(b->gn_weight[t]) && isfinite(b->lambda[t]),
                          "%s: finite state", configs[k]);
            }
            if (it != 1) {
                /* no gradient for b: its norm is 0 and the cosine is undefined */
                CHECK_NEAR(b->report.grad_norm[1], 0.0, 0);
                CHECK_MSG(isnan(b->report.cosine[0]), "%s: cosine NaN, got %g", configs[k], b->report.cosine[0]);
                CHECK_MSG(b->report.grad_norm[0] > 0, "%s: task a still learns", configs[k]);
                if (b->cfg.method == MTL_BALANCE_MGDA_UB) {
                    CHECK_NEAR(b->report.weights[0], 1.0, 0);
                    CHECK_NEAR(b->report.weights[1], 0.0, 0);
                }
                mtl_net_tasks *nt = b->nt;
                CHECK_NEAR(dotf(nt->rep_grad[1], nt->rep_grad[1], nt->n_rep), 0.0, 0);
            } else {
                CHECK_MSG(isfinite(b->report.cosine[0]), "%s: cosine with both tasks labelled", configs[k]);
            }
        }
        if (b && b->cfg.method == MTL_BALANCE_UNCERTAINTY)
            CHECK_MSG(b->log_var[1] != 0.0 && b->log_var[1] == b->log_var[1], "uncertainty moved b once");
        if (b && b->cfg.method == MTL_BALANCE_GRADNORM)
            CHECK_MSG(b->initial_loss[1] > 0, "GradNorm took L_b(0) at its first labelled batch");
        mtl_balancer_free(b);
        mtl_net_free(net);
    }
}

/* ================================================================== through the solver */

static char tmp_dir[64];

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[1024];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        remove(path);
    }
    closedir(d);
    rmdir(dir);
}

static mtl_status feed(void *user, mtl_net *net, int test_net, int64_t iter, int64_t pass, mtl_error *err)
{
    (void)user;
    (void)err;
    fill_inputs(net, (unsigned)(test_net < 0 ? 1000 + iter * 4 + pass : 50000 + pass), -1);
    return MTL_OK;
}

static mtl_status make_solver(const char *net_text, const char *settings, FILE *log, FILE *json, mtl_solver **out,
                              mtl_error *err)
{
    char text[8192];
    snprintf(text, sizeof(text), "net_param { %s }\nbase_lr: 0.05 momentum: 0.9 lr_policy: 'fixed' "
             "snapshot_after_train: false random_seed: 3\n%s\n", net_text, settings);
    mtl_solver_options o = {.feed = feed, .log = log, .json = json};
    return mtl_solver_from_string(text, tmp_dir, &o, out, err);
}

static const char *const method_configs[] = {
    "", "task_balance { method: FIXED }", "task_balance { method: UNCERTAINTY }",
    "task_balance { method: GRADNORM alpha: 1.5 }", "task_balance { method: DWA temperature: 2 window: 3 }",
    "task_balance { method: PCGRAD }", "task_balance { method: MGDA_UB normalization: L2 }",
    "task_balance { method: MGDA_UB }"};

static void test_solver_logs(void)
{
    for (int k = 0; k < (int)(sizeof(method_configs) / sizeof(method_configs[0])); k++) {
        char *log = NULL, *json = NULL;
        size_t log_size = 0, json_size = 0;
        FILE *lf = open_memstream(&log, &log_size), *jf = open_memstream(&json, &json_size);
        mtl_error err = {0};
        mtl_solver *s = NULL;
        char settings[512];
        snprintf(settings, sizeof(settings), "max_iter: 12 display: 4 iter_size: %d %s", k == 7 ? 2 : 1,
                 method_configs[k]);
        CHECK_OK(make_solver(net_three, settings, lf, jf, &s, &err), &err);
        if (s) {
            CHECK_OK(mtl_solver_solve(s, &err), &err);
            CHECK_MSG(all_finite(s->train_net->param_data, s->train_net->n_param_values), "%s: finite weights",
                      settings);
        }
        fflush(lf);
        fflush(jf);
        const char *method = s ? mtl_balance_method_name(s->cfg.balance.method) : "?";
        char want[128];
        snprintf(want, sizeof(want), "    Task weights (%s): loss_a = ", method);
        CHECK_MSG(log && strstr(log, want), "%s: log:\n%s", settings, log);
        CHECK_MSG(log && strstr(log, "    Task gradient norms on the shared trunk: loss_a = "), "%s: log:\n%s",
                  settings, log);
        CHECK_MSG(log && strstr(log, "    Task gradient cosines: loss_a|loss_b = ") &&
                      strstr(log, ", loss_b|loss_c = "),
                  "%s: log:\n%s", settings, log);
        int train = 0;
        for (char *line = json; line && *line;) {
            char *end = strchr(line, '\n');
            if (!end)
                break;
            *end = '\0';
            if (strstr(line, "\"phase\":\"train\"") && !strstr(line, "\"final\"")) {
                train++;
                CHECK_MSG(strstr(line, ",\"balance\":{\"weights\":{\"loss_a\":") &&
                              strstr(line, "},\"grad_norm\":{\"loss_a\":") &&
                              strstr(line, "},\"cosine\":{\"loss_a|loss_b\":") && strstr(line, "\"loss_a|loss_c\":") &&
                              strstr(line, "}},\"iter_per_s\":"),
                          "%s: json line: %s", settings, line);
                if (s && s->cfg.balance.method == MTL_BALANCE_UNCERTAINTY)
                    CHECK_MSG(strstr(line, ",\"log_var\":{\"loss_a\":"), "json line: %s", line);
            }
            line = end + 1;
        }
        CHECK_MSG(train == 3, "%s: %d train lines", settings, train);
        mtl_solver_free(s);
        fclose(lf);
        fclose(jf);
        free(log);
        free(json);
    }
}

/* FIXED: the diagnostics at display cost time, never bits. */
static void test_fixed_unchanged_by_diagnostics(void)
{
    mtl_error err = {0};
    mtl_solver *a = NULL, *b = NULL;
    CHECK_OK(make_solver(net_two, "max_iter: 9 display: 1", NULL, NULL, &a, &err), &err);
    CHECK_OK(make_solver(net_two, "max_iter: 9 display: 1 task_balance { diagnostics: false }", NULL, NULL, &b, &err),
             &err);
    if (a && b) {
        CHECK_OK(mtl_solver_solve(a, &err), &err);
        CHECK_OK(mtl_solver_solve(b, &err), &err);
        CHECK(a->balancer->report.valid && !b->balancer->report.valid);
        CHECK(memcmp(a->train_net->param_data, b->train_net->param_data,
                     (size_t)a->train_net->n_param_values * sizeof(float)) == 0);
    }
    mtl_solver_free(a);
    mtl_solver_free(b);
}

/* Stopping, snapshotting and resuming gives the same weights and balancing state as one run. */
static void test_resume(void)
{
    const char *configs[] = {"task_balance { method: UNCERTAINTY }", "task_balance { method: GRADNORM lr: 0.02 }",
                             "task_balance { method: DWA window: 2 }", "task_balance { method: PCGRAD }"};
    for (int k = 0; k < 4; k++) {
        char settings[256], path[256];
        snprintf(settings, sizeof(settings), "max_iter: 10 display: 3 %s", configs[k]);
        snprintf(path, sizeof(path), "%s/resume_%d.mtlsnap", tmp_dir, k);
        mtl_error err = {0};
        mtl_solver *whole = NULL, *first = NULL, *second = NULL;
        CHECK_OK(make_solver(net_three, settings, NULL, NULL, &whole, &err), &err);
        CHECK_OK(make_solver(net_three, settings, NULL, NULL, &first, &err), &err);
        CHECK_OK(make_solver(net_three, settings, NULL, NULL, &second, &err), &err);
        if (whole && first && second) {
            CHECK_OK(mtl_solver_step(whole, 10, &err), &err);
            CHECK_OK(mtl_solver_step(first, 5, &err), &err);
            CHECK_OK(mtl_solver_snapshot(first, path, &err), &err);
            CHECK_OK(mtl_solver_restore(second, path, &err), &err);
            CHECK_OK(mtl_solver_step(second, 5, &err), &err);
            const mtl_net *x = whole->train_net, *y = second->train_net;
            CHECK_MSG(memcmp(x->param_data, y->param_data, (size_t)x->n_param_values * sizeof(float)) == 0,
                      "%s: resumed weights differ", configs[k]);
            const mtl_balancer *p = whole->balancer, *q = second->balancer;
            size_t n = (size_t)p->n_tasks * sizeof(double);
            CHECK_MSG(memcmp(p->log_var, q->log_var, n) == 0 && memcmp(p->gn_weight, q->gn_weight, n) == 0 &&
                          memcmp(p->lambda, q->lambda, n) == 0 && memcmp(p->initial_loss, q->initial_loss, n) == 0 &&
                          memcmp(&p->rng, &q->rng, sizeof(p->rng)) == 0,
                      "%s: resumed balancing state differs", configs[k]);
            CHECK_MSG(p->lambda[0] != 1.0 || p->log_var[0] != 0.0 || p->gn_weight[0] != 1.0 ||
                          p->cfg.method == MTL_BALANCE_PCGRAD,
                      "%s: the state moved", configs[k]);
        }
        mtl_solver_free(whole);
        mtl_solver_free(first);
        mtl_solver_free(second);
    }
}

static void solver_fails(const char *net_text, const char *settings, mtl_status status, const char *needle, int line)
{
    mtl_error err = {0};
    mtl_solver *s = NULL;
    mtl_status st = make_solver(net_text, settings, NULL, NULL, &s, &err);
    check_report(st == status && strstr(err.message, needle) != NULL, __FILE__, line,
                 "'%s': got %s '%s', expected %s containing '%s'", settings, mtl_status_name(st), err.message,
                 mtl_status_name(status), needle);
    mtl_solver_free(s);
}

/* two tasks with nothing learnable in common */
static const char *net_apart = "name: 'apart'\n" INPUTS FC("ip_a", "data", "score_a", 3)
    SOFTMAX_LOSS("loss_a", "score_a", "label_a", 1) FC("ip_b", "data", "score_b", 3)
    SOFTMAX_LOSS("loss_b", "score_b", "label_b", 1) "layer { name: 'silence' type: 'Silence' bottom: 'target' }\n";

/* the heads share one weight (param name 'tied') */
static const char *net_tied = "name: 'tied'\n" INPUTS FC("trunk1", "data", "z", 5)
    "layer { name: 'head_a' type: 'InnerProduct' bottom: 'z' top: 'score_a' param { name: 'tied' }\n"
    "  inner_product_param { num_output: 3 bias_term: false weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    SOFTMAX_LOSS("loss_a", "score_a", "label_a", 1)
    "layer { name: 'head_b' type: 'InnerProduct' bottom: 'z' top: 'score_b' param { name: 'tied' }\n"
    "  inner_product_param { num_output: 3 bias_term: false weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    SOFTMAX_LOSS("loss_b", "score_b", "label_b", 1) "layer { name: 'silence' type: 'Silence' bottom: 'target' }\n";

static const char *net_single = "name: 'single'\n" INPUTS FC("ip", "data", "score_a", 3)
    SOFTMAX_LOSS("loss_a", "score_a", "label_a", 1) "layer { name: 'silence' type: 'Silence' bottom: 'label_b' }\n"
    "layer { name: 'silence_t' type: 'Silence' bottom: 'target' }\n";

static void test_solver_errors(void)
{
    solver_fails(net_single, "max_iter: 1 task_balance { method: GRADNORM }", MTL_ERR_CONFIG,
                 "task_balance: method GRADNORM balances two or more tasks", __LINE__);
    solver_fails(net_two, "max_iter: 1 task_balance { method: DWA alpha: 1 }", MTL_ERR_CONFIG,
                 "alpha is used by method GRADNORM only", __LINE__);
    solver_fails(net_two, "max_iter: 1 task_balance { method: PCGARD }", MTL_ERR_CONFIG, "PCGRAD", __LINE__);
    solver_fails(net_two, "max_iter: 1 task_balance { method: MGDA_UB normalisation: L2 }", MTL_ERR_CONFIG,
                 "did you mean 'normalization'", __LINE__);
    solver_fails(net_apart, "max_iter: 1 task_balance { method: MGDA_UB }", MTL_ERR_CONFIG,
                 "needs a shared representation", __LINE__);
    solver_fails(net_apart, "max_iter: 1 task_balance { method: PCGRAD }", MTL_ERR_CONFIG,
                 "share no learnable parameter", __LINE__);
    solver_fails(net_apart, "max_iter: 1 task_balance { method: GRADNORM }", MTL_ERR_CONFIG,
                 "no learnable parameter", __LINE__);
    solver_fails(net_tied, "max_iter: 1 task_balance { method: PCGRAD }", MTL_ERR_UNSUPPORTED,
                 "parameter 'tied' is used by loss_a and by loss_b", __LINE__);
    /* FIXED and the loss-weighting methods still train there, without gradient diagnostics */
    const char *fine[] = {"max_iter: 3 display: 1", "max_iter: 3 display: 1 task_balance { method: UNCERTAINTY }"};
    for (int k = 0; k < 2; k++) {
        char *log = NULL;
        size_t size = 0;
        FILE *lf = open_memstream(&log, &size);
        mtl_error err = {0};
        mtl_solver *s = NULL;
        CHECK_OK(make_solver(net_tied, fine[k], lf, NULL, &s, &err), &err);
        if (s)
            CHECK_OK(mtl_solver_solve(s, &err), &err);
        fflush(lf);
        CHECK_MSG(log && strstr(log, "Note: no task gradient diagnostics for this net: parameter 'tied'") &&
                      strstr(log, "    Task weights (") && !strstr(log, "Task gradient cosines"),
                  "log:\n%s", log);
        mtl_solver_free(s);
        fclose(lf);
        free(log);
    }
    /* one task and no task_balance: no balancer at all */
    mtl_error err = {0};
    mtl_solver *s = NULL;
    CHECK_OK(make_solver(net_single, "max_iter: 1", NULL, NULL, &s, &err), &err);
    CHECK(s && s->balancer == NULL);
    mtl_solver_free(s);
}

int main(void)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/mtl_test_balance_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_min_norm();
    test_pcgrad();
    test_gradnorm_dwa_uncertainty();
    test_config();
    test_per_task_equals_one_hot();
    test_representation_finite_differences();
    test_mgda_net();
    test_pcgrad_net(0.3f);
    test_pcgrad_net(-0.3f);
    test_weighting_nets();
    test_multipliers();
    test_missing_labels();
    test_solver_logs();
    test_fixed_unchanged_by_diagnostics();
    test_resume();
    test_solver_errors();
    remove_tree(tmp_dir);
    return check_finish();
}
