/* Automatic task balancing: how the tasks' losses and gradients become one update. The solver
 * prototxt's `task_balance { method: ... }` message picks a method (docs/task-balancing.md); the
 * solver hands each pass's backward to a balancer, which also measures the task-conflict
 * diagnostics shown at display. Each method's arithmetic is a plain function here, so tests can
 * check it against hand-computed answers.
 *
 * Weights: every method starts from the prototxt's loss_weight w0_t. The effective weight of task
 * t is w0_t times a factor: exp(-s_t) (uncertainty, 0.5 exp(-s_t) in the regression form), the
 * GradNorm weight w_t (sum T), the DWA weight lambda_t (sum T), 1 for FIXED and PCGRAD; MGDA-UB's
 * weights are the min-norm coefficients alpha_t (sum 1) and do not use loss_weight. */
#ifndef MTL_BALANCE_BALANCE_H
#define MTL_BALANCE_BALANCE_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/net.h"
#include "core/net_tasks.h"
#include "core/rng.h"

typedef enum mtl_balance_method {
    MTL_BALANCE_FIXED,       /* loss_weight (the default) */
    MTL_BALANCE_UNCERTAINTY, /* Kendall, Gal and Cipolla 2018: learned log-variances */
    MTL_BALANCE_GRADNORM,    /* Chen et al. 2018: weights that equalise gradient norms */
    MTL_BALANCE_DWA,         /* Liu, Johns and Davison 2019: dynamic weight average */
    MTL_BALANCE_PCGRAD,      /* Yu et al. 2020: projecting conflicting gradients */
    MTL_BALANCE_MGDA_UB,     /* Sener and Koltun 2018: min-norm point at the representation */
    MTL_BALANCE_METHOD_COUNT
} mtl_balance_method;

/* MGDA-UB's gradient normalisation, as the official code's 'l2', 'loss', 'loss+' and 'none'. */
typedef enum mtl_balance_norm {
    MTL_BALANCE_NORM_L2,
    MTL_BALANCE_NORM_LOSS,
    MTL_BALANCE_NORM_LOSS_PLUS,
    MTL_BALANCE_NORM_NONE,
    MTL_BALANCE_NORM_COUNT
} mtl_balance_norm;

/* Uncertainty weighting's form: AUTO takes REGRESSION for EuclideanLoss tasks and CLASSIFICATION
 * for the others. */
typedef enum mtl_balance_form {
    MTL_BALANCE_FORM_AUTO,
    MTL_BALANCE_FORM_CLASSIFICATION,
    MTL_BALANCE_FORM_REGRESSION,
    MTL_BALANCE_FORM_COUNT
} mtl_balance_form;

typedef struct mtl_balance_config {
    mtl_balance_method method;
    double alpha;                   /* GRADNORM: strength of the restoring force (1.5) */
    double temperature;             /* DWA: softmax temperature (2) */
    int64_t window;                 /* DWA: iterations per loss-averaging window; 0: the solver's display
                                       interval (100 without one) */
    mtl_balance_norm normalization; /* MGDA_UB (LOSS_PLUS, the official sample configuration's) */
    double lr;                      /* UNCERTAINTY's log-variances, GRADNORM's weights: their plain SGD
                                       rate; < 0: the solver's learning rate of each iteration */
    mtl_balance_form form;          /* UNCERTAINTY */
    int diagnostics;                /* measure weights, gradient norms and cosines at display (true) */
} mtl_balance_config;

void mtl_balance_config_init(mtl_balance_config *c);
/* Reads a `task_balance` message (msg NULL: the defaults). A field that the chosen method does not
 * use is an error, as is a value out of range. */
mtl_status mtl_balance_read_config(mtl_cfg_node *msg, mtl_balance_config *c, mtl_error *err);
const char *mtl_balance_method_name(mtl_balance_method method);
const char *mtl_balance_norm_name(mtl_balance_norm norm);

/* ---------------------------------------------------------------- each method's arithmetic */

/* The min-norm point of the segment between v1 and v2 given by their dot products:
 * gamma v1 + (1 - gamma) v2 with gamma in [0, 1] exactly (the official code stops at 0.999 and
 * 0.001 at the ends). Returns the squared norm of the point. */
double mtl_balance_min_norm_2(double v11, double v12, double v22, double *gamma);
/* The min-norm point of the convex hull of n vectors given by their Gram matrix (gram[i * n + j] =
 * <g_i, g_j>, row-major): sol[0..n) >= 0 summing to 1. One or two vectors exactly; more by
 * Frank-Wolfe from the best pair (Sener and Koltun's Algorithm 2: at most 250 steps, stopping when
 * the weights move by less than 1e-5 in sum). Returns the squared norm of the point. */
double mtl_balance_min_norm(const double *gram, int n, double *sol);
/* MGDA-UB's normaliser of a task's gradient: L2 |g|, LOSS the loss, LOSS_PLUS loss * |g|, NONE 1.
 * A value that is not positive and finite gives 1 (no normalisation) instead of a division by 0. */
double mtl_balance_mgda_normalizer(mtl_balance_norm norm, double loss, double grad_norm);

/* PCGrad: for each task i, a copy of g[i] is projected, against the other tasks j in a random order
 * drawn from rng, onto the normal plane of g[j] whenever they conflict (<g_i, g_j> < 0), always
 * against the original g[j]; out (n values) is the sum of the projected copies. A zero g[j] never
 * conflicts. work holds n values. */
void mtl_balance_pcgrad(const float *const *g, int n_tasks, int64_t n, mtl_rng *rng, float *work, float *out);

/* One GradNorm step on the weights w (n tasks, summing to n): g[i] is |d(w0_i L_i) / dW| (without
 * w_i), ratio[i] = L_i(t) / L_i(0). Over the active tasks: G_i = w_i g_i, Gbar their mean,
 * r_i = ratio_i / mean(ratio), and dL_grad/dw_i = sign(G_i - Gbar r_i^alpha) g_i with the target
 * held constant; w_i -= lr times that, at least 1e-3, then all weights are rescaled to sum to n.
 * Inactive tasks (all labels missing) keep their weight until the rescaling. */
void mtl_balance_gradnorm_step(int n, double *w, const double *g, const double *ratio, const uint8_t *active,
                               double alpha, double lr);

/* DWA: lambda_k = n exp(r_k / T) / sum_i exp(r_i / T) with r_k = last_k / before_k (the mean losses of
 * the last two windows); r_k = 1 where either mean is not positive. */
void mtl_balance_dwa_weights(int n, const double *last, const double *before, double temperature, double *lambda);

/* Uncertainty weighting of one task with log-variance s and loss L: classification
 * exp(-s) L + s, regression 0.5 exp(-s) L + 0.5 s. Sets *weight (the factor on L) and *ds (the
 * derivative in s) and returns the term's value. */
double mtl_balance_uncertainty(double s, double loss, int regression, double *weight, double *ds);

/* ---------------------------------------------------------------- the balancer the solver drives */

typedef struct mtl_balance_report {
    int valid;          /* gradient diagnostics were measured in the last iteration */
    float *weights;     /* [n_tasks]: effective loss weights of the last iteration (MGDA: mean over passes) */
    double *grad_norm;  /* [n_tasks]: |d(weight_t L_t) / d shared parameters| */
    double *cosine;     /* [n_tasks (n_tasks - 1) / 2]: pairs (0,1), (0,2), ..., (1,2), ...; NaN where a
                           gradient is zero */
    double *log_var;    /* [n_tasks]: UNCERTAINTY's s_t of the last iteration (0 for other methods) */
} mtl_balance_report;

typedef struct mtl_balancer {
    mtl_balance_config cfg;
    mtl_net *net;                /* borrowed: the train net */
    mtl_net_tasks *nt;           /* NULL when the net could not be analysed (FIXED only) */
    char *nt_error;              /* why nt is NULL */
    int n_tasks;
    float *base;                 /* [n_tasks]: loss_weight */
    float *multiplier;           /* [n_tasks]: from mtl_balancer_set_multipliers (1) */
    float *weights;              /* [n_tasks]: effective weights of the current iteration */
    float *pass_weights;         /* [n_tasks]: MGDA-UB's weights of the current pass */
    double *weight_sum;          /* [n_tasks]: MGDA-UB's weights summed over passes */
    uint8_t *regression;         /* [n_tasks]: uncertainty's form */

    /* state carried from iteration to iteration (and in snapshots) */
    double *log_var;             /* UNCERTAINTY: s_t */
    double *gn_weight;           /* GRADNORM: w_t */
    double *initial_loss;        /* GRADNORM: L_t(0), 0 until a batch had labels */
    double *win_sum, *win_count; /* DWA: the open window's summed losses and their count */
    double *win_last, *win_before; /* DWA: the last two windows' mean losses */
    double *lambda;              /* DWA: current weights */
    int64_t window, win_fill, n_windows;
    mtl_rng rng;                 /* PCGRAD's task order */

    /* the iteration under way */
    int diagnose, passes;
    double *loss_sum;            /* [n_tasks]: raw losses summed over passes */
    float **g;                   /* [n_tasks][n_shared]: per-task shared gradients of the pass */
    float **g_sum;               /* [n_tasks][n_shared]: ... summed over passes (diagnostics) */
    float **gw_sum;              /* [n_tasks][W count]: GradNorm's last-shared-layer gradients, summed */
    float *work, *out;           /* [n_shared]: PCGrad */
    double *gram, *sol, *rep_norm; /* MGDA-UB: [n_tasks^2], [n_tasks], [n_tasks] */
    double *scale;               /* [n_tasks] scratch */
    int *order;                  /* [n_tasks] scratch */
    uint8_t *active;
    mtl_balance_report report;
} mtl_balancer;

/* A balancer for the train net. display is the solver's display interval (DWA's default window),
 * seed the solver's random seed (PCGrad's order). Methods other than FIXED need two or more tasks
 * and, by method, shared parameters (PCGRAD), a shared layer with parameters (GRADNORM) or a
 * shared representation (MGDA_UB); FIXED on a net that cannot be analysed runs without gradient
 * diagnostics (nt_error says why). */
mtl_status mtl_balancer_create(const mtl_balance_config *cfg, mtl_net *net, uint64_t seed, int64_t display,
                               mtl_balancer **out, mtl_error *err);
void mtl_balancer_free(mtl_balancer *b);

/* Multiplies each task's loss_weight by multipliers[t] from the next iteration on; task-wise early
 * stopping sets 0 for a task that has stopped. A task at 0 takes no part in any method (no weight,
 * left out of MGDA-UB's min-norm problem, inactive for GradNorm, its log-variance frozen). */
void mtl_balancer_set_multipliers(mtl_balancer *b, const float *multipliers);

/* Before an iteration's first pass: fixes this iteration's weights; diagnose asks for the
 * gradient diagnostics (display iterations; honoured when cfg.diagnostics and the net allow). */
void mtl_balancer_begin_iteration(mtl_balancer *b, int diagnose);
/* After each forward pass, in place of mtl_net_backward: accumulates the pass's balanced gradient
 * into the net's parameter gradients. */
mtl_status mtl_balancer_backward(mtl_balancer *b, mtl_error *err);
/* After the iteration's last pass: the report, then the methods' own updates (log-variances,
 * GradNorm weights, DWA windows) at `rate`, the solver's learning rate for the iteration. */
void mtl_balancer_end_iteration(mtl_balancer *b, double rate);

/* The state a snapshot keeps so that a resumed run balances exactly as the first would have. */
size_t mtl_balancer_state_size(const mtl_balancer *b);
void mtl_balancer_state_save(const mtl_balancer *b, uint8_t *buf);
/* Fails (MTL_ERR_CONFIG) when the bytes come from another method or number of tasks. */
mtl_status mtl_balancer_state_load(mtl_balancer *b, const uint8_t *buf, size_t size, mtl_error *err);

#endif
