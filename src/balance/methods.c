/* Task balancing's configuration and each method's arithmetic: MGDA-UB's min-norm solver and
 * gradient normalisers, PCGrad's projection, GradNorm's weight step, DWA's weights and
 * uncertainty weighting. Plain functions of numbers: the balancer (balancer.c) feeds them. */
#include <math.h>
#include <string.h>

#include "balance/balance.h"

static const char *const method_names[] = {"FIXED", "UNCERTAINTY", "GRADNORM", "DWA", "PCGRAD", "MGDA_UB"};
static const char *const norm_names[] = {"L2", "LOSS", "LOSS_PLUS", "NONE"};
static const char *const form_names[] = {"AUTO", "CLASSIFICATION", "REGRESSION"};
_Static_assert(sizeof(method_names) / sizeof(method_names[0]) == MTL_BALANCE_METHOD_COUNT, "method names");
_Static_assert(sizeof(norm_names) / sizeof(norm_names[0]) == MTL_BALANCE_NORM_COUNT, "normalization names");
_Static_assert(sizeof(form_names) / sizeof(form_names[0]) == MTL_BALANCE_FORM_COUNT, "form names");

const char *mtl_balance_method_name(mtl_balance_method method)
{
    return (unsigned)method < MTL_BALANCE_METHOD_COUNT ? method_names[method] : "?";
}

const char *mtl_balance_norm_name(mtl_balance_norm norm)
{
    return (unsigned)norm < MTL_BALANCE_NORM_COUNT ? norm_names[norm] : "?";
}

void mtl_balance_config_init(mtl_balance_config *c)
{
    memset(c, 0, sizeof(*c));
    c->method = MTL_BALANCE_FIXED;
    c->alpha = 1.5;
    c->temperature = 2.0;
    c->window = 0;
    c->normalization = MTL_BALANCE_NORM_LOSS_PLUS;
    c->lr = -1.0;
    c->form = MTL_BALANCE_FORM_AUTO;
    c->diagnostics = 1;
}

/* A field given for a method that does not use it is a mistake worth reporting. */
static mtl_status only_for(mtl_cfg_node *msg, const char *field, mtl_balance_method method, int used,
                           const char *users, mtl_error *err)
{
    if (used || mtl_cfg_count(msg, field) == 0)
        return MTL_OK;
    return mtl_cfg_fail(mtl_cfg_field(msg, field, 0), err, MTL_ERR_CONFIG, "%s is used by method %s only, not %s",
                        field, users, method_names[method]);
}

mtl_status mtl_balance_read_config(mtl_cfg_node *msg, mtl_balance_config *c, mtl_error *err)
{
    mtl_balance_config_init(c);
    if (!msg)
        return MTL_OK;
    int method, norm, form;
    MTL_TRY(mtl_cfg_enum(msg, "method", method_names, MTL_BALANCE_METHOD_COUNT, MTL_BALANCE_FIXED, &method, err));
    MTL_TRY(mtl_cfg_float(msg, "alpha", c->alpha, &c->alpha, err));
    MTL_TRY(mtl_cfg_float(msg, "temperature", c->temperature, &c->temperature, err));
    MTL_TRY(mtl_cfg_int_range(msg, "window", 0, 1, INT32_MAX, &c->window, err));
    MTL_TRY(mtl_cfg_enum(msg, "normalization", norm_names, MTL_BALANCE_NORM_COUNT, MTL_BALANCE_NORM_LOSS_PLUS, &norm,
                         err));
    MTL_TRY(mtl_cfg_float(msg, "lr", c->lr, &c->lr, err));
    MTL_TRY(mtl_cfg_enum(msg, "form", form_names, MTL_BALANCE_FORM_COUNT, MTL_BALANCE_FORM_AUTO, &form, err));
    MTL_TRY(mtl_cfg_bool(msg, "diagnostics", 1, &c->diagnostics, err));
    /* a misspelt field is reported before any complaint about the others */
    MTL_TRY(mtl_cfg_check_unused(msg, err));
    c->method = (mtl_balance_method)method;
    c->normalization = (mtl_balance_norm)norm;
    c->form = (mtl_balance_form)form;
    mtl_balance_method m = c->method;
    MTL_TRY(only_for(msg, "alpha", m, m == MTL_BALANCE_GRADNORM, "GRADNORM", err));
    MTL_TRY(only_for(msg, "temperature", m, m == MTL_BALANCE_DWA, "DWA", err));
    MTL_TRY(only_for(msg, "window", m, m == MTL_BALANCE_DWA, "DWA", err));
    MTL_TRY(only_for(msg, "normalization", m, m == MTL_BALANCE_MGDA_UB, "MGDA_UB", err));
    MTL_TRY(only_for(msg, "lr", m, m == MTL_BALANCE_UNCERTAINTY || m == MTL_BALANCE_GRADNORM,
                     "UNCERTAINTY or GRADNORM", err));
    MTL_TRY(only_for(msg, "form", m, m == MTL_BALANCE_UNCERTAINTY, "UNCERTAINTY", err));
    if (!isfinite(c->alpha) || c->alpha < 0)
        return mtl_cfg_fail(mtl_cfg_field(msg, "alpha", 0), err, MTL_ERR_CONFIG, "alpha must be a finite number >= 0");
    if (!isfinite(c->temperature) || c->temperature <= 0)
        return mtl_cfg_fail(mtl_cfg_field(msg, "temperature", 0), err, MTL_ERR_CONFIG,
                            "temperature must be a finite number > 0");
    if (mtl_cfg_count(msg, "lr") > 0 && (!isfinite(c->lr) || c->lr < 0))
        return mtl_cfg_fail(mtl_cfg_field(msg, "lr", 0), err, MTL_ERR_CONFIG,
                            "lr must be a finite number >= 0 (leave it out to follow the solver's rate)");
    return MTL_OK;
}

/* ---------------------------------------------------------------- MGDA-UB */

double mtl_balance_min_norm_2(double v11, double v12, double v22, double *gamma)
{
    double denom = v11 + v22 - 2.0 * v12; /* |v1 - v2|^2 */
    double g;
    if (!(denom > 0))
        g = 0.5; /* the same vector twice: any point will do */
    else
        g = (v22 - v12) / denom;
    g = g < 0 ? 0 : g > 1 ? 1 : g;
    *gamma = g;
    return g * g * v11 + 2.0 * g * (1.0 - g) * v12 + (1.0 - g) * (1.0 - g) * v22;
}

double mtl_balance_min_norm(const double *gram, int n, double *sol)
{
    if (n <= 0)
        return 0.0;
    for (int i = 0; i < n; i++)
        sol[i] = 0.0;
    if (n == 1) {
        sol[0] = 1.0;
        return gram[0];
    }
    /* the best pair first (the official _min_norm_2d) */
    int bi = 0, bj = 1;
    double best = INFINITY, best_gamma = 0.5;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double gamma, cost = mtl_balance_min_norm_2(gram[i * n + i], gram[i * n + j], gram[j * n + j], &gamma);
            if (cost < best) {
                best = cost;
                best_gamma = gamma;
                bi = i;
                bj = j;
            }
        }
    sol[bi] = best_gamma;
    sol[bj] = 1.0 - best_gamma;
    if (n == 2)
        return best;
    /* Frank-Wolfe: move towards the vertex with the smallest <g_t, current point> */
    double cost = best;
    for (int iter = 0; iter < 250; iter++) {
        int t = 0;
        double v1v1 = 0.0, min_dot = INFINITY;
        for (int i = 0; i < n; i++) {
            double dot = 0.0;
            for (int j = 0; j < n; j++)
                dot += gram[i * n + j] * sol[j];
            v1v1 += sol[i] * dot;
            if (dot < min_dot) {
                min_dot = dot;
                t = i;
            }
        }
        double v1v2 = min_dot, v2v2 = gram[t * n + t], nc;
        cost = mtl_balance_min_norm_2(v1v1, v1v2, v2v2, &nc);
        double change = 0.0;
        for (int i = 0; i < n; i++) {
            double next = nc * sol[i] + (i == t ? 1.0 - nc : 0.0);
            change += fabs(next - sol[i]);
            sol[i] = next;
        }
        if (change < 1e-5)
            break;
    }
    return cost;
}

double mtl_balance_mgda_normalizer(mtl_balance_norm norm, double loss, double grad_norm)
{
    double v = 1.0;
    switch (norm) {
    case MTL_BALANCE_NORM_L2: v = grad_norm; break;
    case MTL_BALANCE_NORM_LOSS: v = loss; break;
    case MTL_BALANCE_NORM_LOSS_PLUS: v = loss * grad_norm; break;
    default: v = 1.0; break;
    }
    return v > 0 && isfinite(v) ? v : 1.0;
}

/* ---------------------------------------------------------------- PCGrad */

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

void mtl_balance_pcgrad(const float *const *g, int n_tasks, int64_t n, mtl_rng *rng, float *work, float *out)
{
    int order[64];
    double sq[64];
    memset(out, 0, (size_t)n * sizeof(float));
    for (int j = 0; j < n_tasks && j < 64; j++)
        sq[j] = dot(g[j], g[j], n);
    for (int i = 0; i < n_tasks; i++) {
        memcpy(work, g[i], (size_t)n * sizeof(float));
        int m = 0;
        for (int j = 0; j < n_tasks && m < 64; j++)
            if (j != i)
                order[m++] = j;
        for (int k = m - 1; k > 0; k--) { /* Fisher-Yates */
            int r = (int)mtl_rng_below(rng, (uint32_t)k + 1);
            int tmp = order[k];
            order[k] = order[r];
            order[r] = tmp;
        }
        for (int k = 0; k < m; k++) {
            int j = order[k];
            double d = dot(work, g[j], n);
            if (d < 0.0 && sq[j] > 0.0) {
                float c = (float)(d / sq[j]);
                for (int64_t v = 0; v < n; v++)
                    work[v] -= c * g[j][v];
            }
        }
        for (int64_t v = 0; v < n; v++)
            out[v] += work[v];
    }
}

/* ---------------------------------------------------------------- GradNorm, DWA, uncertainty */

void mtl_balance_gradnorm_step(int n, double *w, const double *g, const double *ratio, const uint8_t *active,
                               double alpha, double lr)
{
    int m = 0;
    double mean_ratio = 0.0, mean_g = 0.0;
    for (int i = 0; i < n; i++)
        if (active[i]) {
            m++;
            mean_ratio += ratio[i];
            mean_g += w[i] * g[i];
        }
    if (m == 0 || !(mean_ratio > 0))
        return;
    mean_ratio /= m;
    mean_g /= m;
    for (int i = 0; i < n; i++) {
        if (!active[i])
            continue;
        double target = mean_g * pow(ratio[i] / mean_ratio, alpha);
        double diff = w[i] * g[i] - target;
        double grad = diff > 0 ? g[i] : diff < 0 ? -g[i] : 0.0;
        w[i] -= lr * grad;
        if (!(w[i] >= 1e-3))
            w[i] = 1e-3;
    }
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += w[i];
    for (int i = 0; i < n; i++)
        w[i] *= n / sum;
}

void mtl_balance_dwa_weights(int n, const double *last, const double *before, double temperature, double *lambda)
{
    double top = -INFINITY, sum = 0.0;
    for (int k = 0; k < n; k++) {
        lambda[k] = last[k] > 0 && before[k] > 0 ? last[k] / before[k] / temperature : 1.0 / temperature;
        top = fmax(top, lambda[k]);
    }
    for (int k = 0; k < n; k++) {
        lambda[k] = exp(lambda[k] - top); /* the largest term is 1: no overflow */
        sum += lambda[k];
    }
    for (int k = 0; k < n; k++)
        lambda[k] *= n / sum;
}

double mtl_balance_uncertainty(double s, double loss, int regression, double *weight, double *ds)
{
    double c = regression ? 0.5 : 1.0, e = exp(-s);
    *weight = c * e;
    *ds = c * (1.0 - e * loss);
    return c * (e * loss + s);
}
