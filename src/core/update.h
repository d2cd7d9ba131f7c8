/* Update rules, learning-rate policies and gradient clipping as pure functions on flat float
 * vectors, so the solver, task balancing and tests share one implementation. The formulas are
 * Caffe's (sgd_solver.cpp, nesterov/adam/rmsprop/adagrad_solver.cpp) unless marked as mtl's own. */
#ifndef MTL_CORE_UPDATE_H
#define MTL_CORE_UPDATE_H

#include <stdint.h>

typedef enum mtl_update_type {
    MTL_UPDATE_SGD,      /* h = lr*g + momentum*h; w -= h */
    MTL_UPDATE_NESTEROV, /* h' = lr*g + momentum*h; w -= (1+momentum)*h' - momentum*h */
    MTL_UPDATE_ADAM,     /* Caffe's Adam: bias correction folded into the step size */
    MTL_UPDATE_ADAMW,    /* Adam with decoupled weight decay (mtl addition) */
    MTL_UPDATE_RMSPROP,  /* v = d*v + (1-d)*g^2; w -= lr*g/(sqrt(v)+delta) */
    MTL_UPDATE_ADAGRAD,  /* h += g^2; w -= lr*g/(sqrt(h)+delta) */
    MTL_UPDATE_COUNT
} mtl_update_type;

typedef enum mtl_regularization { MTL_REGULARIZATION_L2, MTL_REGULARIZATION_L1 } mtl_regularization;

/* The solver-wide constants of an update rule (SolverParameter fields of the same names). */
typedef struct mtl_update_config {
    mtl_update_type type;
    float momentum;      /* SGD, Nesterov; beta1 for Adam(W) */
    float momentum2;     /* beta2 for Adam(W) */
    float delta;         /* epsilon for Adam(W), RMSProp, AdaGrad */
    float rms_decay;     /* RMSProp */
    float weight_decay;  /* multiplied by each slot's decay_mult */
    mtl_regularization regularization;
} mtl_update_config;

/* Solver type names as the prototxt's `type` field spells them ("SGD", "AdamW", ...). */
const char *mtl_update_type_name(mtl_update_type type);
/* How many history vectors (each as long as the parameter) a rule keeps: 2 for Adam(W), else 1. */
int mtl_update_history_count(mtl_update_type type);

/* One step for one learnable vector of n values, in Caffe's order: regularize (or, for AdamW, decay
 * the weights directly), compute the update value into grad, then data -= grad. `iter` is the
 * iteration being applied (0 for the first; Adam's bias correction uses t = iter + 1).
 * local_rate = rate * lr_mult, local_decay = weight_decay * decay_mult. hist holds
 * mtl_update_history_count(type) vectors of n values back to back (zero before the first step).
 * On return grad holds the value that was subtracted. Deterministic for any thread count. */
void mtl_update_step(const mtl_update_config *cfg, int64_t iter, float local_rate, float local_decay, float *data,
                     float *grad, float *hist, int64_t n);

/* The pieces of mtl_update_step, for callers that want them apart. */
/* grad += local_decay * data (L2) or local_decay * sign(data) (L1). */
void mtl_update_regularize(mtl_regularization type, float local_decay, const float *data, float *grad, int64_t n);
/* grad becomes the update value; hist as above. */
void mtl_update_compute(const mtl_update_config *cfg, int64_t iter, float local_rate, float *grad, float *hist,
                        int64_t n);

/* Sum of squares in double, summed in fixed-size blocks so the result does not depend on the thread
 * count. */
double mtl_update_sumsq(const float *x, int64_t n);
void mtl_update_scale(float *x, int64_t n, float factor);
/* Caffe's ClipGradients for one vector: if threshold >= 0 and the L2 norm of x exceeds it, scales
 * x by threshold / norm. Returns the factor applied (1 when nothing was scaled). For gradients
 * spread over several vectors, sum mtl_update_sumsq over them and use mtl_update_clip_factor. */
float mtl_update_clip(float *x, int64_t n, float threshold, double *norm_out);
/* threshold / sqrt(sumsq) when that norm exceeds threshold (>= 0), else 1. */
float mtl_update_clip_factor(double sumsq, float threshold);

/* Learning-rate policies. */
typedef enum mtl_lr_policy_kind {
    MTL_LR_FIXED,     /* base_lr */
    MTL_LR_STEP,      /* base_lr * gamma ^ floor(iter / stepsize) */
    MTL_LR_MULTISTEP, /* base_lr * gamma ^ (number of stepvalues <= iter) */
    MTL_LR_EXP,       /* base_lr * gamma ^ iter */
    MTL_LR_INV,       /* base_lr * (1 + gamma * iter) ^ -power */
    MTL_LR_POLY,      /* base_lr * (1 - iter / max_iter) ^ power  (0 from max_iter on) */
    MTL_LR_SIGMOID,   /* base_lr / (1 + exp(-gamma * (iter - stepsize))) */
    MTL_LR_COSINE,    /* mtl: min_lr + (base_lr - min_lr) * (1 + cos(pi * iter / max_iter)) / 2, min_lr after */
    MTL_LR_POLICY_COUNT
} mtl_lr_policy_kind;

typedef struct mtl_lr_policy {
    mtl_lr_policy_kind kind;
    double base_lr, gamma, power, min_lr;
    int64_t stepsize, max_iter;
    const int64_t *stepvalues; /* strictly increasing; borrowed */
    int n_stepvalues;
    /* mtl: linear warmup for any policy. For iter < warmup_iter the rate is
     * warmup_start_lr + (policy(iter) - warmup_start_lr) * iter / warmup_iter. */
    int64_t warmup_iter;
    double warmup_start_lr;
} mtl_lr_policy;

/* The policy names of the prototxt's `lr_policy` field ("fixed", "step", ...), indexed by kind. */
const char *mtl_lr_policy_name(mtl_lr_policy_kind kind);
/* The learning rate for iteration iter (>= 0). */
double mtl_lr_at(const mtl_lr_policy *p, int64_t iter);

#endif
