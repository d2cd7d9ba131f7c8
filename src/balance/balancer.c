/* The balancer the solver drives: each pass's backward done the way the chosen method needs (one
 * weighted backward, or each head once plus the trunk once or once per task), the methods' state
 * from iteration to iteration, the diagnostics measured at display and the state snapshots keep. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "balance/balance.h"

#define MAX_PCGRAD_TASKS 64

static void *zalloc(size_t n, size_t size) { return calloc(n ? n : 1, size); }

static float **alloc_rows(int rows, int64_t cols)
{
    float **r = zalloc((size_t)rows, sizeof(float *));
    if (!r)
        return NULL;
    for (int i = 0; i < rows; i++)
        if (!(r[i] = zalloc((size_t)cols, sizeof(float)))) {
            for (int k = 0; k < i; k++)
                free(r[k]);
            free(r);
            return NULL;
        }
    return r;
}

static void free_rows(float **r, int rows)
{
    if (!r)
        return;
    for (int i = 0; i < rows; i++)
        free(r[i]);
    free(r);
}

void mtl_balancer_free(mtl_balancer *b)
{
    if (!b)
        return;
    mtl_net_tasks_free(b->nt);
    free(b->nt_error);
    free(b->base);
    free(b->multiplier);
    free(b->weights);
    free(b->pass_weights);
    free(b->weight_sum);
    free(b->regression);
    free(b->log_var);
    free(b->gn_weight);
    free(b->initial_loss);
    free(b->win_sum);
    free(b->win_count);
    free(b->win_last);
    free(b->win_before);
    free(b->lambda);
    free(b->loss_sum);
    free_rows(b->g, b->n_tasks);
    free_rows(b->g_sum, b->n_tasks);
    free_rows(b->gw_sum, b->n_tasks);
    free(b->work);
    free(b->out);
    free(b->gram);
    free(b->sol);
    free(b->rep_norm);
    free(b->active);
    free(b->order);
    free(b->scale);
    free(b->report.weights);
    free(b->report.grad_norm);
    free(b->report.cosine);
    free(b->report.log_var);
    free(b);
}

/* The loss layer behind task t (a weight moved onto an automatic Split sits one layer later). */
static const mtl_layer *task_loss_layer(const mtl_net *net, int t)
{
    int i = net->tasks[t].layer;
    if (net->layer_is_auto_split[i] && net->bottom_producer[i][0] >= 0)
        i = net->bottom_producer[i][0];
    return net->layers[i];
}

static mtl_status check_method(mtl_balancer *b, mtl_error *err)
{
    const char *name = mtl_balance_method_name(b->cfg.method);
    if (b->cfg.method == MTL_BALANCE_FIXED)
        return MTL_OK;
    if (b->n_tasks < 2)
        return mtl_fail(err, MTL_ERR_CONFIG,
                        "method %s balances two or more tasks (losses with a non-zero loss_weight); the train net "
                        "has %d",
                        name, b->n_tasks);
    if (b->cfg.method == MTL_BALANCE_UNCERTAINTY || b->cfg.method == MTL_BALANCE_DWA)
        return MTL_OK;
    if (!b->nt)
        return mtl_fail(err, MTL_ERR_UNSUPPORTED, "method %s: %s", name, b->nt_error);
    if (b->cfg.method == MTL_BALANCE_PCGRAD && b->nt->n_shared == 0)
        return mtl_fail(err, MTL_ERR_CONFIG, "method PCGRAD projects gradients on shared parameters, and the tasks "
                        "share no learnable parameter");
    if (b->cfg.method == MTL_BALANCE_PCGRAD && b->n_tasks > MAX_PCGRAD_TASKS)
        return mtl_fail(err, MTL_ERR_UNSUPPORTED, "method PCGRAD handles at most %d tasks, the net has %d",
                        MAX_PCGRAD_TASKS, b->n_tasks);
    if (b->cfg.method == MTL_BALANCE_GRADNORM && b->nt->last_shared_slot < 0)
        return mtl_fail(err, MTL_ERR_CONFIG, "method GRADNORM measures gradients on the last shared layer's weights, "
                        "and the shared trunk has no learnable parameter");
    if (b->cfg.method == MTL_BALANCE_MGDA_UB && b->nt->n_sources == 0)
        return mtl_fail(err, MTL_ERR_CONFIG, "method MGDA_UB needs a shared representation: no task's layers read a "
                        "blob that the shared trunk computes (with a gradient)");
    return MTL_OK;
}

mtl_status mtl_balancer_create(const mtl_balance_config *cfg, mtl_net *net, uint64_t seed, int64_t display,
                               mtl_balancer **out, mtl_error *err)
{
    *out = NULL;
    mtl_balancer *b = calloc(1, sizeof(*b));
    if (!b)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    b->cfg = *cfg;
    b->net = net;
    int T = b->n_tasks = net->n_tasks;
    mtl_error nt_err = {0};
    if (mtl_net_tasks_create(net, &b->nt, &nt_err) != MTL_OK)
        b->nt_error = mtl_strdup(nt_err.message);
    mtl_status st = check_method(b, err);
    if (st != MTL_OK) {
        mtl_balancer_free(b);
        return st;
    }
    b->base = zalloc((size_t)T, sizeof(float));
    b->multiplier = zalloc((size_t)T, sizeof(float));
    b->weights = zalloc((size_t)T, sizeof(float));
    b->pass_weights = zalloc((size_t)T, sizeof(float));
    b->weight_sum = zalloc((size_t)T, sizeof(double));
    b->regression = zalloc((size_t)T, 1);
    b->log_var = zalloc((size_t)T, sizeof(double));
    b->gn_weight = zalloc((size_t)T, sizeof(double));
    b->initial_loss = zalloc((size_t)T, sizeof(double));
    b->win_sum = zalloc((size_t)T, sizeof(double));
    b->win_count = zalloc((size_t)T, sizeof(double));
    b->win_last = zalloc((size_t)T, sizeof(double));
    b->win_before = zalloc((size_t)T, sizeof(double));
    b->lambda = zalloc((size_t)T, sizeof(double));
    b->loss_sum = zalloc((size_t)T, sizeof(double));
    b->gram = zalloc((size_t)T * (size_t)T, sizeof(double));
    b->sol = zalloc((size_t)T, sizeof(double));
    b->rep_norm = zalloc((size_t)T, sizeof(double));
    b->active = zalloc((size_t)T, 1);
    b->order = zalloc((size_t)T, sizeof(int));
    b->scale = zalloc((size_t)T, sizeof(double));
    b->report.weights = zalloc((size_t)T, sizeof(float));
    b->report.grad_norm = zalloc((size_t)T, sizeof(double));
    b->report.cosine = zalloc((size_t)(T * (T - 1) / 2), sizeof(double));
    b->report.log_var = zalloc((size_t)T, sizeof(double));
    int ok = b->base && b->multiplier && b->weights && b->pass_weights && b->weight_sum && b->regression &&
             b->log_var && b->gn_weight && b->initial_loss && b->win_sum && b->win_count && b->win_last &&
             b->win_before && b->lambda && b->loss_sum && b->gram && b->sol && b->rep_norm && b->active &&
             b->order && b->scale && b->report.weights && b->report.grad_norm && b->report.cosine &&
             b->report.log_var;
    if (ok && b->nt) {
        int64_t n = b->nt->n_shared;
        b->g = alloc_rows(T, n);
        b->g_sum = alloc_rows(T, n);
        b->gw_sum = alloc_rows(T, b->nt->last_shared_count);
        b->work = zalloc((size_t)n, sizeof(float));
        b->out = zalloc((size_t)n, sizeof(float));
        ok = b->g && b->g_sum && b->gw_sum && b->work && b->out;
    }
    if (!ok) {
        mtl_balancer_free(b);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory for task balancing");
    }
    for (int t = 0; t < T; t++) {
        b->base[t] = net->tasks[t].weight;
        b->multiplier[t] = 1.0f;
        b->gn_weight[t] = 1.0;
        b->lambda[t] = 1.0;
        mtl_balance_form form = cfg->form;
        if (form == MTL_BALANCE_FORM_AUTO)
            form = strcmp(task_loss_layer(net, t)->ops->type, "EuclideanLoss") == 0 ? MTL_BALANCE_FORM_REGRESSION
                                                                                   : MTL_BALANCE_FORM_CLASSIFICATION;
        b->regression[t] = form == MTL_BALANCE_FORM_REGRESSION;
    }
    b->window = cfg->window > 0 ? cfg->window : display > 0 ? display : 100;
    mtl_rng_seed(&b->rng, seed ^ 0x9e3779b97f4a7c15ull);
    *out = b;
    return MTL_OK;
}

void mtl_balancer_set_multipliers(mtl_balancer *b, const float *multipliers)
{
    memcpy(b->multiplier, multipliers, (size_t)b->n_tasks * sizeof(float));
}

void mtl_balancer_begin_iteration(mtl_balancer *b, int diagnose)
{
    b->diagnose = diagnose && b->cfg.diagnostics && b->nt && b->n_tasks >= 2;
    b->passes = 0;
    for (int t = 0; t < b->n_tasks; t++) {
        double factor = 1.0, ds;
        switch (b->cfg.method) {
        case MTL_BALANCE_UNCERTAINTY:
            mtl_balance_uncertainty(b->log_var[t], 0.0, b->regression[t], &factor, &ds);
            break;
        case MTL_BALANCE_GRADNORM: factor = b->gn_weight[t]; break;
        case MTL_BALANCE_DWA: factor = b->lambda[t]; break;
        default: break;
        }
        b->weights[t] = (float)(b->base[t] * b->multiplier[t] * factor);
        b->loss_sum[t] = 0.0;
        b->weight_sum[t] = 0.0;
    }
    if (b->nt) {
        for (int t = 0; t < b->n_tasks; t++) {
            memset(b->g_sum[t], 0, (size_t)b->nt->n_shared * sizeof(float));
            memset(b->gw_sum[t], 0, (size_t)b->nt->last_shared_count * sizeof(float));
        }
    }
}

/* MGDA-UB: the min-norm combination of the (normalised) task gradients at the representation.
 * Tasks whose gradient is zero (every label of the batch missing) take no part and get weight 0:
 * otherwise the zero vector would be the min-norm point and nothing would train. */
static void mgda_weights(mtl_balancer *b)
{
    mtl_net_tasks *nt = b->nt;
    int T = b->n_tasks, m = 0;
    int *idx = b->order;
    double *gn = b->scale;
    for (int t = 0; t < T; t++) {
        const float *g = nt->rep_grad[t];
        double sq = 0.0;
        for (int64_t i = 0; i < nt->n_rep; i++)
            sq += (double)g[i] * g[i];
        b->rep_norm[t] = sqrt(sq);
        b->pass_weights[t] = 0.0f;
        if (b->rep_norm[t] > 0 && isfinite(b->rep_norm[t]) && b->multiplier[t] != 0.0f) {
            idx[m] = t;
            gn[m] = mtl_balance_mgda_normalizer(b->cfg.normalization, mtl_net_task_loss(b->net, t), b->rep_norm[t]);
            m++;
        }
    }
    for (int i = 0; i < m; i++)
        for (int j = i; j < m; j++) {
            const float *gi = nt->rep_grad[idx[i]], *gj = nt->rep_grad[idx[j]];
            double d = 0.0;
            for (int64_t k = 0; k < nt->n_rep; k++)
                d += (double)gi[k] * gj[k];
            b->gram[i * m + j] = b->gram[j * m + i] = d / (gn[i] * gn[j]);
        }
    mtl_balance_min_norm(b->gram, m, b->sol);
    for (int i = 0; i < m; i++)
        b->pass_weights[idx[i]] = (float)b->sol[i];
}

mtl_status mtl_balancer_backward(mtl_balancer *b, mtl_error *err)
{
    mtl_net *net = b->net;
    mtl_net_tasks *nt = b->nt;
    const int T = b->n_tasks;
    const mtl_balance_method method = b->cfg.method;
    for (int t = 0; t < T; t++)
        b->loss_sum[t] += mtl_net_task_loss(net, t);
    b->passes++;
    int per_task = method == MTL_BALANCE_GRADNORM || method == MTL_BALANCE_PCGRAD || method == MTL_BALANCE_MGDA_UB;
    /* FIXED's weights are the loss weights (times any multipliers): the net's own backward bits */
    if (!per_task && !b->diagnose) {
        mtl_net_backward_weighted(net, b->weights);
        return MTL_OK;
    }
    MTL_TRY(mtl_net_tasks_begin(nt, err));
    for (int t = 0; t < T; t++)
        mtl_net_tasks_head_backward(nt, t);
    if (b->diagnose || method == MTL_BALANCE_PCGRAD)
        mtl_net_tasks_shared_grads(nt, b->g, 0);
    else if (method == MTL_BALANCE_GRADNORM) /* only the last shared layer is needed */
        mtl_net_tasks_shared_grads(nt, b->g, nt->last_shared_layer);
    if (b->diagnose)
        for (int t = 0; t < T; t++)
            for (int64_t i = 0; i < nt->n_shared; i++)
                b->g_sum[t][i] += b->g[t][i];
    if (method == MTL_BALANCE_GRADNORM)
        for (int t = 0; t < T; t++)
            for (int64_t i = 0; i < nt->last_shared_count; i++)
                b->gw_sum[t][i] += b->g[t][nt->last_shared_offset + i];

    switch (method) {
    case MTL_BALANCE_FIXED:
    case MTL_BALANCE_UNCERTAINTY:
    case MTL_BALANCE_DWA:
        /* the ordinary backward, so that display iterations compute the same bits as the others */
        mtl_net_backward_weighted(net, b->weights);
        break;
    case MTL_BALANCE_GRADNORM:
        mtl_net_tasks_add_head_grads(nt, b->weights);
        mtl_net_tasks_combine(nt, b->weights, nt->rep_scratch);
        mtl_net_tasks_trunk_backward(nt, nt->rep_scratch, 0);
        break;
    case MTL_BALANCE_PCGRAD:
        for (int t = 0; t < T; t++)
            for (int64_t i = 0; i < nt->n_shared; i++)
                b->g[t][i] *= b->weights[t];
        mtl_balance_pcgrad((const float *const *)b->g, T, nt->n_shared, &b->rng, b->work, b->out);
        mtl_net_tasks_add_shared(nt, b->out);
        mtl_net_tasks_add_head_grads(nt, b->weights);
        break;
    case MTL_BALANCE_MGDA_UB:
        mgda_weights(b);
        for (int t = 0; t < T; t++)
            b->weight_sum[t] += b->pass_weights[t];
        mtl_net_tasks_add_head_grads(nt, b->pass_weights);
        mtl_net_tasks_combine(nt, b->pass_weights, nt->rep_scratch);
        mtl_net_tasks_trunk_backward(nt, nt->rep_scratch, 0);
        break;
    default: break;
    }
    return MTL_OK;
}

static double norm_of(const float *v, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    return sqrt(s);
}

static void make_report(mtl_balancer *b, int passes)
{
    mtl_balance_report *r = &b->report;
    int T = b->n_tasks;
    for (int t = 0; t < T; t++) {
        r->weights[t] = b->cfg.method == MTL_BALANCE_MGDA_UB ? (float)(b->weight_sum[t] / passes) : b->weights[t];
        r->log_var[t] = b->log_var[t];
    }
    r->valid = b->diagnose;
    if (!b->diagnose)
        return;
    int64_t n = b->nt->n_shared;
    for (int t = 0; t < T; t++)
        r->grad_norm[t] = fabs((double)r->weights[t]) * norm_of(b->g_sum[t], n) / passes;
    int k = 0;
    for (int i = 0; i < T; i++)
        for (int j = i + 1; j < T; j++, k++) {
            double ni = norm_of(b->g_sum[i], n), nj = norm_of(b->g_sum[j], n), d = 0.0;
            for (int64_t v = 0; v < n; v++)
                d += (double)b->g_sum[i][v] * b->g_sum[j][v];
            r->cosine[k] = ni > 0 && nj > 0 ? d / (ni * nj) : NAN;
        }
}

void mtl_balancer_end_iteration(mtl_balancer *b, double rate)
{
    const int T = b->n_tasks;
    int passes = b->passes > 0 ? b->passes : 1;
    make_report(b, passes);
    double lr = b->cfg.lr >= 0 ? b->cfg.lr : rate;
    /* a task whose loss is exactly 0 had no labelled sample in the batch: it moves no state */
    switch (b->cfg.method) {
    case MTL_BALANCE_UNCERTAINTY:
        for (int t = 0; t < T; t++) {
            double loss = b->loss_sum[t] / passes, weight, ds;
            if (loss == 0.0 || !isfinite(loss) || b->multiplier[t] == 0.0f)
                continue;
            mtl_balance_uncertainty(b->log_var[t], b->base[t] * loss, b->regression[t], &weight, &ds);
            b->log_var[t] -= lr * ds;
        }
        break;
    case MTL_BALANCE_GRADNORM: {
        double *g = b->scale, *ratio = b->rep_norm;
        for (int t = 0; t < T; t++) {
            double loss = b->loss_sum[t] / passes;
            b->active[t] = loss > 0 && isfinite(loss) && b->multiplier[t] != 0.0f;
            if (b->active[t] && b->initial_loss[t] == 0.0)
                b->initial_loss[t] = loss;
            ratio[t] = b->active[t] ? loss / b->initial_loss[t] : 1.0;
            g[t] = fabs((double)b->base[t] * b->multiplier[t]) * norm_of(b->gw_sum[t], b->nt->last_shared_count) /
                   passes;
            b->active[t] = b->active[t] && g[t] > 0;
        }
        mtl_balance_gradnorm_step(T, b->gn_weight, g, ratio, b->active, b->cfg.alpha, lr);
        break;
    }
    case MTL_BALANCE_DWA:
        for (int t = 0; t < T; t++) {
            double loss = b->loss_sum[t] / passes;
            if (loss == 0.0 || !isfinite(loss))
                continue;
            b->win_sum[t] += loss;
            b->win_count[t] += 1.0;
        }
        if (++b->win_fill >= b->window) {
            for (int t = 0; t < T; t++) {
                b->win_before[t] = b->win_last[t];
                b->win_last[t] = b->win_count[t] > 0 ? b->win_sum[t] / b->win_count[t] : 0.0;
                b->win_sum[t] = b->win_count[t] = 0.0;
            }
            b->win_fill = 0;
            /* the first two windows train with weight 1, as the paper's first two epochs */
            if (++b->n_windows >= 2)
                mtl_balance_dwa_weights(T, b->win_last, b->win_before, b->cfg.temperature, b->lambda);
        }
        break;
    default: break;
    }
}

/* ---------------------------------------------------------------- state in snapshots */

#define STATE_MAGIC 0x424c544du /* "MTLB" */
#define STATE_ARRAYS 8

static size_t state_size_for(int n_tasks) { return 16 + (size_t)STATE_ARRAYS * 8 * (size_t)n_tasks + 16 + 16; }

size_t mtl_balancer_state_size(const mtl_balancer *b) { return state_size_for(b->n_tasks); }

static void put_u32(uint8_t **p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        *(*p)++ = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t **p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *(*p)++ = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t **p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)*(*p)++ << (8 * i);
    return v;
}

static uint64_t get_u64(const uint8_t **p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)*(*p)++ << (8 * i);
    return v;
}

static double *state_array(const mtl_balancer *b, int k)
{
    double *arrays[STATE_ARRAYS] = {b->log_var,   b->gn_weight,  b->initial_loss, b->win_sum,
                                    b->win_count, b->win_last,   b->win_before,   b->lambda};
    return arrays[k];
}

void mtl_balancer_state_save(const mtl_balancer *b, uint8_t *buf)
{
    uint8_t *p = buf;
    put_u32(&p, STATE_MAGIC);
    put_u32(&p, 1);
    put_u32(&p, (uint32_t)b->cfg.method);
    put_u32(&p, (uint32_t)b->n_tasks);
    for (int k = 0; k < STATE_ARRAYS; k++)
        for (int t = 0; t < b->n_tasks; t++) {
            uint64_t bits;
            memcpy(&bits, &state_array(b, k)[t], sizeof(bits));
            put_u64(&p, bits);
        }
    put_u64(&p, (uint64_t)b->win_fill);
    put_u64(&p, (uint64_t)b->n_windows);
    for (int i = 0; i < 4; i++)
        put_u32(&p, b->rng.s[i]);
}

mtl_status mtl_balancer_state_load(mtl_balancer *b, const uint8_t *buf, size_t size, mtl_error *err)
{
    const uint8_t *p = buf;
    if (size < 16 || get_u32(&p) != STATE_MAGIC || get_u32(&p) != 1)
        return mtl_fail(err, MTL_ERR_CORRUPT, "the task balancing state is not in a format this mtl reads");
    uint32_t method = get_u32(&p), n_tasks = get_u32(&p);
    if (method != (uint32_t)b->cfg.method || n_tasks != (uint32_t)b->n_tasks || size != state_size_for(b->n_tasks))
        return mtl_fail(err, MTL_ERR_CONFIG, "the task balancing state is for method %s with %u tasks; this solver "
                        "uses %s with %d",
                        mtl_balance_method_name((mtl_balance_method)method), n_tasks,
                        mtl_balance_method_name(b->cfg.method), b->n_tasks);
    for (int k = 0; k < STATE_ARRAYS; k++)
        for (int t = 0; t < b->n_tasks; t++) {
            uint64_t bits = get_u64(&p);
            memcpy(&state_array(b, k)[t], &bits, sizeof(bits));
        }
    b->win_fill = (int64_t)get_u64(&p);
    b->n_windows = (int64_t)get_u64(&p);
    for (int i = 0; i < 4; i++)
        b->rng.s[i] = get_u32(&p);
    return MTL_OK;
}
