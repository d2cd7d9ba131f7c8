/* Update rules, learning-rate policies and gradient clipping on flat vectors. Element-wise loops
 * run on OpenMP threads (each element's arithmetic is the same on any thread, so results do not
 * depend on the thread count); reductions sum fixed blocks in a fixed order for the same reason. */
#include "core/update.h"

#include <math.h>
#include <stddef.h>

/* Below this many values a loop is not worth waking threads for. */
#define UPDATE_PARALLEL_MIN 32768
/* Block size of deterministic reductions, and how many block sums are kept at once. */
#define SUMSQ_BLOCK 16384
#define SUMSQ_GROUP 64
#define UPDATE_PI 3.14159265358979323846

static const char *const update_type_names[] = {
    [MTL_UPDATE_SGD] = "SGD",         [MTL_UPDATE_NESTEROV] = "Nesterov", [MTL_UPDATE_ADAM] = "Adam",
    [MTL_UPDATE_ADAMW] = "AdamW",     [MTL_UPDATE_RMSPROP] = "RMSProp",   [MTL_UPDATE_ADAGRAD] = "AdaGrad",
};
_Static_assert(sizeof(update_type_names) / sizeof(update_type_names[0]) == MTL_UPDATE_COUNT,
               "every update type needs a name");

static const char *const lr_policy_names[] = {
    [MTL_LR_FIXED] = "fixed", [MTL_LR_STEP] = "step", [MTL_LR_MULTISTEP] = "multistep",
    [MTL_LR_EXP] = "exp",     [MTL_LR_INV] = "inv",   [MTL_LR_POLY] = "poly",
    [MTL_LR_SIGMOID] = "sigmoid", [MTL_LR_COSINE] = "cosine",
};
_Static_assert(sizeof(lr_policy_names) / sizeof(lr_policy_names[0]) == MTL_LR_POLICY_COUNT,
               "every lr policy needs a name");

const char *mtl_update_type_name(mtl_update_type type)
{
    return (int)type >= 0 && type < MTL_UPDATE_COUNT ? update_type_names[type] : "?";
}

int mtl_update_history_count(mtl_update_type type)
{
    return type == MTL_UPDATE_ADAM || type == MTL_UPDATE_ADAMW ? 2 : 1;
}

const char *mtl_lr_policy_name(mtl_lr_policy_kind kind)
{
    return (int)kind >= 0 && kind < MTL_LR_POLICY_COUNT ? lr_policy_names[kind] : "?";
}

/* ------------------------------------------------------------------ regularization */

void mtl_update_regularize(mtl_regularization type, float local_decay, const float *data, float *grad, int64_t n)
{
    if (local_decay == 0.0f) /* Caffe skips the term entirely, which also keeps -0 gradients as they are */
        return;
    if (type == MTL_REGULARIZATION_L1) {
#pragma omp parallel for schedule(static) if (n > UPDATE_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            float sign = (float)((0.0f < data[i]) - (data[i] < 0.0f));
            grad[i] += local_decay * sign;
        }
    } else {
#pragma omp parallel for schedule(static) if (n > UPDATE_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++)
            grad[i] += local_decay * data[i];
    }
}

/* ------------------------------------------------------------------ update values */

static void compute_sgd(float momentum, float local_rate, float *g, float *h, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > UPDATE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        h[i] = local_rate * g[i] + momentum * h[i];
        g[i] = h[i];
    }
}

static void compute_nesterov(float momentum, float local_rate, float *g, float *h, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > UPDATE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float previous = h[i];
        h[i] = local_rate * g[i] + momentum * h[i];
        /* step back to where the previous look-ahead was, then over-step */
        g[i] = (1.0f + momentum) * h[i] + (-momentum) * previous;
    }
}

static void compute_adam(const mtl_update_config *cfg, int64_t iter, float local_rate, float *g, float *m, float *v,
                         int64_t n)
{
    const float beta1 = cfg->momentum, beta2 = cfg->momentum2, eps_hat = cfg->delta;
    const double t = (double)(iter + 1);
    /* Caffe folds both bias corrections into the step: sqrt(1 - beta2^t) / (1 - beta1^t). */
    const float correction = (float)(sqrt(1.0 - pow(beta2, t)) / (1.0 - pow(beta1, t)));
    const float step = local_rate * correction;
#pragma omp parallel for schedule(static) if (n > UPDATE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        m[i] = (1.0f - beta1) * g[i] + beta1 * m[i];
        v[i] = (1.0f - beta2) * (g[i] * g[i]) + beta2 * v[i];
        g[i] = step * (m[i] / (sqrtf(v[i]) + eps_hat));
    }
}

static void compute_rmsprop(float rms_decay, float delta, float local_rate, float *g, float *h, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > UPDATE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        h[i] = (1.0f - rms_decay) * (g[i] * g[i]) + rms_decay * h[i];
        g[i] = local_rate * (g[i] / (sqrtf(h[i]) + delta));
    }
}

static void compute_adagrad(float delta, float local_rate, float *g, float *h, int64_t n)
{
#pragma omp parallel for schedule(static) if (n > UPDATE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        h[i] = g[i] * g[i] + h[i];
        g[i] = local_rate * (g[i] / (sqrtf(h[i]) + delta));
    }
}

void mtl_update_compute(const mtl_update_config *cfg, int64_t iter, float local_rate, float *grad, float *hist,
                        int64_t n)
{
    switch (cfg->type) {
    case MTL_UPDATE_SGD:
        compute_sgd(cfg->momentum, local_rate, grad, hist, n);
        break;
    case MTL_UPDATE_NESTEROV:
        compute_nesterov(cfg->momentum, local_rate, grad, hist, n);
        break;
    case MTL_UPDATE_ADAM:
    case MTL_UPDATE_ADAMW:
        compute_adam(cfg, iter, local_rate, grad, hist, hist + n, n);
        break;
    case MTL_UPDATE_RMSPROP:
        compute_rmsprop(cfg->rms_decay, cfg->delta, local_rate, grad, hist, n);
        break;
    case MTL_UPDATE_ADAGRAD:
        compute_adagrad(cfg->delta, local_rate, grad, hist, n);
        break;
    case MTL_UPDATE_COUNT:
        break;
    }
}

/* AdamW (Loshchilov & Hutter): the decay shrinks the weights directly, scaled by the learning rate
 * like PyTorch's AdamW (w -= lr * decay * w), instead of entering the adaptive moments. */
static void decay_decoupled(mtl_regularization type, float local_rate, float local_decay, float *data, int64_t n)
{
    const float shrink = local_rate * local_decay;
    if (shrink == 0.0f)
        return;
    if (type == MTL_REGULARIZATION_L1) {
#pragma omp parallel for schedule(static) if (n > UPDATE_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++)
            data[i] -= shrink * (float)((0.0f < data[i]) - (data[i] < 0.0f));
    } else {
#pragma omp parallel for schedule(static) if (n > UPDATE_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++)
            data[i] -= shrink * data[i];
    }
}

void mtl_update_step(const mtl_update_config *cfg, int64_t iter, float local_rate, float local_decay, float *data,
                     float *grad, float *hist, int64_t n)
{
    if (cfg->type == MTL_UPDATE_ADAMW)
        decay_decoupled(cfg->regularization, local_rate, local_decay, data, n);
    else
        mtl_update_regularize(cfg->regularization, local_decay, data, grad, n);
    mtl_update_compute(cfg, iter, local_rate, grad, hist, n);
#pragma omp parallel for schedule(static) if (n > UPDATE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        data[i] -= grad[i];
}

/* ------------------------------------------------------------------ clipping */

double mtl_update_sumsq(const float *x, int64_t n)
{
    double total = 0.0;
    int64_t n_blocks = (n + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
    for (int64_t first = 0; first < n_blocks; first += SUMSQ_GROUP) {
        double partial[SUMSQ_GROUP];
        int group = (int)(n_blocks - first < SUMSQ_GROUP ? n_blocks - first : SUMSQ_GROUP);
#pragma omp parallel for schedule(static) if (group > 1)
        for (int b = 0; b < group; b++) {
            int64_t start = (first + b) * SUMSQ_BLOCK;
            int64_t end = start + SUMSQ_BLOCK < n ? start + SUMSQ_BLOCK : n;
            double s = 0.0;
            for (int64_t i = start; i < end; i++)
                s += (double)x[i] * (double)x[i];
            partial[b] = s;
        }
        for (int b = 0; b < group; b++)
            total += partial[b];
    }
    return total;
}

void mtl_update_scale(float *x, int64_t n, float factor)
{
#pragma omp parallel for schedule(static) if (n > UPDATE_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        x[i] *= factor;
}

float mtl_update_clip_factor(double sumsq, float threshold)
{
    if (threshold < 0.0f)
        return 1.0f;
    double norm = sqrt(sumsq);
    return norm > (double)threshold ? (float)((double)threshold / norm) : 1.0f;
}

float mtl_update_clip(float *x, int64_t n, float threshold, double *norm_out)
{
    double sumsq = mtl_update_sumsq(x, n);
    if (norm_out)
        *norm_out = sqrt(sumsq);
    float factor = mtl_update_clip_factor(sumsq, threshold);
    if (factor != 1.0f)
        mtl_update_scale(x, n, factor);
    return factor;
}

/* ------------------------------------------------------------------ learning rate */

static double lr_policy_value(const mtl_lr_policy *p, int64_t iter)
{
    const double it = (double)iter;
    switch (p->kind) {
    case MTL_LR_FIXED:
        return p->base_lr;
    case MTL_LR_STEP:
        return p->stepsize > 0 ? p->base_lr * pow(p->gamma, (double)(iter / p->stepsize)) : p->base_lr;
    case MTL_LR_MULTISTEP: {
        /* Caffe advances current_step by at most one per iteration; with strictly increasing step
         * values, visited one iteration at a time, that is the count of values already reached. */
        int step = 0;
        while (step < p->n_stepvalues && iter >= p->stepvalues[step])
            step++;
        return p->base_lr * pow(p->gamma, step);
    }
    case MTL_LR_EXP:
        return p->base_lr * pow(p->gamma, it);
    case MTL_LR_INV:
        return p->base_lr * pow(1.0 + p->gamma * it, -p->power);
    case MTL_LR_POLY: {
        /* past max_iter the base would go negative: hold the end value */
        double end = p->max_iter > 0 ? (double)p->max_iter : 1.0;
        return p->base_lr * pow(1.0 - (it < end ? it : end) / end, p->power);
    }
    case MTL_LR_SIGMOID:
        return p->base_lr * (1.0 / (1.0 + exp(-p->gamma * (it - (double)p->stepsize))));
    case MTL_LR_COSINE: {
        double end = p->max_iter > 0 ? (double)p->max_iter : 1.0;
        return p->min_lr + 0.5 * (p->base_lr - p->min_lr) * (1.0 + cos(UPDATE_PI * (it < end ? it : end) / end));
    }
    case MTL_LR_POLICY_COUNT:
        break;
    }
    return p->base_lr;
}

double mtl_lr_at(const mtl_lr_policy *p, int64_t iter)
{
    double rate = lr_policy_value(p, iter);
    if (p->warmup_iter > 0 && iter < p->warmup_iter)
        rate = p->warmup_start_lr + (rate - p->warmup_start_lr) * (double)iter / (double)p->warmup_iter;
    return rate;
}
