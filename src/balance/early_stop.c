/* Task-wise early stopping: the per-task record of validation losses (best value, when, tests since)
 * and the stop rule of early_stop.h. Plain bookkeeping with no knowledge of nets or solvers, so the
 * solver and tests drive it with numbers. */
#include "balance/early_stop.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct task_record {
    char *name;
    int auxiliary;
    int stopped;
    int bad;            /* tests in a row without improvement */
    double best;        /* NaN before the first value */
    int64_t best_iter;
    double last;        /* the last value seen */
    int64_t stopped_iter;
} task_record;

struct mtl_early_stop {
    mtl_early_stop_config cfg;
    int n_tasks;
    task_record *tasks;
};

static mtl_status config_fail(const mtl_early_stop_config *cfg, mtl_error *err, mtl_status st, const char *msg)
{
    if (cfg->where)
        return mtl_cfg_fail(cfg->where, err, st, "task_early_stopping: %s", msg);
    return mtl_fail(err, st, "task-wise early stopping: %s", msg);
}

mtl_status mtl_early_stop_read(mtl_cfg_node *solver, mtl_early_stop_config *cfg, int *present, mtl_error *err)
{
    mtl_cfg_node *m;
    *present = 0;
    MTL_TRY(mtl_cfg_message(solver, "task_early_stopping", &m, err));
    if (!m)
        return MTL_OK;
    mtl_early_stop_config c = {.where = m};
    int64_t patience;
    MTL_TRY(mtl_cfg_int_range(m, "patience", 1, 1, 1 << 20, &patience, err));
    MTL_TRY(mtl_cfg_float(m, "min_delta", 0.0, &c.min_delta, err));
    MTL_TRY(mtl_cfg_bool(m, "relative", 0, &c.relative, err));
    MTL_TRY(mtl_cfg_int_range(m, "min_iter", 0, 0, INT64_MAX, &c.min_iter, err));
    if (mtl_cfg_count(m, "patience") == 0)
        return mtl_cfg_fail(m, err, MTL_ERR_CONFIG,
                            "task_early_stopping needs patience: the tests without improvement before an auxiliary "
                            "task stops");
    if (!(c.min_delta >= 0 && isfinite(c.min_delta)) || (c.relative && c.min_delta >= 1))
        return mtl_cfg_fail(mtl_cfg_field(m, "min_delta", 0), err, MTL_ERR_CONFIG,
                            "min_delta must be >= 0%s (it is %g)", c.relative ? " and below 1 when relative" : "",
                            c.min_delta);
    c.patience = (int)patience;
    int n = mtl_cfg_count(m, "auxiliary");
    if (n == 0)
        return mtl_cfg_fail(m, err, MTL_ERR_CONFIG,
                            "task_early_stopping needs at least one auxiliary: the loss top of a task that may stop "
                            "(the main task is never stopped)");
    if (n > MTL_EARLY_STOP_MAX_AUXILIARY)
        return mtl_cfg_fail(mtl_cfg_field(m, "auxiliary", MTL_EARLY_STOP_MAX_AUXILIARY), err, MTL_ERR_UNSUPPORTED,
                            "more than %d auxiliary tasks", MTL_EARLY_STOP_MAX_AUXILIARY);
    for (int i = 0; i < n; i++)
        MTL_TRY(mtl_cfg_string_at(m, "auxiliary", i, &c.auxiliary[i], err));
    c.n_auxiliary = n;
    *cfg = c;
    *present = 1;
    return MTL_OK;
}

mtl_status mtl_early_stop_create(const mtl_early_stop_config *cfg, int n_tasks, const char *const *task_names,
                                 mtl_early_stop **out, mtl_error *err)
{
    *out = NULL;
    char msg[1024];
    if (cfg->patience < 1 || !(cfg->min_delta >= 0) || (cfg->relative && cfg->min_delta >= 1) || cfg->min_iter < 0 ||
        cfg->n_auxiliary < 1 ||
        cfg->n_auxiliary > MTL_EARLY_STOP_MAX_AUXILIARY) {
        snprintf(msg, sizeof(msg),
                 "needs patience >= 1, min_delta >= 0 (below 1 when relative), min_iter >= 0 and 1 to %d auxiliary "
                 "tasks",
                 MTL_EARLY_STOP_MAX_AUXILIARY);
        return config_fail(cfg, err, MTL_ERR_CONFIG, msg);
    }
    mtl_early_stop *es = mtl_calloc_or_fail(1, sizeof(*es), err, "early stopping state");
    if (!es)
        return MTL_ERR_NOMEM;
    es->cfg = *cfg;
    es->n_tasks = n_tasks;
    if (n_tasks > 0 && !(es->tasks = mtl_calloc_or_fail((size_t)n_tasks, sizeof(task_record), err, "task records"))) {
        free(es);
        return MTL_ERR_NOMEM;
    }
    mtl_status st = MTL_OK;
    for (int t = 0; t < n_tasks && st == MTL_OK; t++) {
        task_record *r = &es->tasks[t];
        r->best = r->last = NAN;
        r->best_iter = r->stopped_iter = -1;
        if (!(r->name = mtl_strdup(task_names[t] ? task_names[t] : "")))
            st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    }
    int n_main = n_tasks;
    for (int i = 0; i < cfg->n_auxiliary && st == MTL_OK; i++) {
        int found = -1;
        for (int t = 0; t < n_tasks && found < 0; t++)
            if (strcmp(es->tasks[t].name, cfg->auxiliary[i]) == 0)
                found = t;
        if (found < 0) {
            char near[256] = "";
            int k = mtl_cfg_suggest(cfg->auxiliary[i], task_names, n_tasks, 2, near, sizeof(near));
            int len = snprintf(msg, sizeof(msg), "auxiliary '%s' is not a task of the net; ", cfg->auxiliary[i]);
            if (k > 0) {
                snprintf(msg + len, sizeof(msg) - (size_t)len, "did you mean %s?", near);
            } else {
                len += snprintf(msg + len, sizeof(msg) - (size_t)len, "the tasks (loss tops) are");
                for (int t = 0; t < n_tasks && len < (int)sizeof(msg); t++)
                    len += snprintf(msg + len, sizeof(msg) - (size_t)len, " '%s'", es->tasks[t].name);
            }
            st = config_fail(cfg, err, MTL_ERR_CONFIG, msg);
        } else if (es->tasks[found].auxiliary) {
            snprintf(msg, sizeof(msg), "auxiliary '%s' is given twice", cfg->auxiliary[i]);
            st = config_fail(cfg, err, MTL_ERR_CONFIG, msg);
        } else {
            es->tasks[found].auxiliary = 1;
            n_main--;
        }
    }
    if (st == MTL_OK && n_main == 0)
        st = config_fail(cfg, err, MTL_ERR_CONFIG,
                         "every task is auxiliary, but the main task never stops: leave it out of auxiliary");
    /* the names are copied: the config may outlive neither the tree nor the caller's strings */
    for (int i = 0; i < MTL_EARLY_STOP_MAX_AUXILIARY; i++)
        es->cfg.auxiliary[i] = NULL;
    es->cfg.n_auxiliary = 0;
    es->cfg.where = NULL;
    if (st != MTL_OK) {
        mtl_early_stop_free(es);
        return st;
    }
    *out = es;
    return MTL_OK;
}

void mtl_early_stop_free(mtl_early_stop *es)
{
    if (!es)
        return;
    for (int t = 0; t < es->n_tasks; t++)
        free(es->tasks[t].name);
    free(es->tasks);
    free(es);
}

int mtl_early_stop_update(mtl_early_stop *es, int64_t iter, const double *val_loss, int *stopped_now)
{
    int n = 0;
    for (int t = 0; t < es->n_tasks; t++) {
        task_record *r = &es->tasks[t];
        if (stopped_now)
            stopped_now[t] = 0;
        double v = val_loss[t];
        if (r->stopped || isnan(v))
            continue;
        r->last = v;
        double bar = es->cfg.relative ? r->best * (1.0 - es->cfg.min_delta) : r->best - es->cfg.min_delta;
        if (isnan(r->best) || v < bar) {
            r->best = v;
            r->best_iter = iter;
            r->bad = 0;
            continue;
        }
        r->bad++;
        if (r->auxiliary && r->bad >= es->cfg.patience && iter >= es->cfg.min_iter) {
            r->stopped = 1;
            r->stopped_iter = iter;
            if (stopped_now)
                stopped_now[t] = 1;
            n++;
        }
    }
    return n;
}

float mtl_early_stop_multiplier(const mtl_early_stop *es, int task)
{
    return task >= 0 && task < es->n_tasks && es->tasks[task].stopped ? 0.0f : 1.0f;
}

void mtl_early_stop_multipliers(const mtl_early_stop *es, float *out)
{
    for (int t = 0; t < es->n_tasks; t++)
        out[t] = mtl_early_stop_multiplier(es, t);
}

int mtl_early_stop_is_auxiliary(const mtl_early_stop *es, int task)
{
    return task >= 0 && task < es->n_tasks && es->tasks[task].auxiliary;
}

int64_t mtl_early_stop_stopped_at(const mtl_early_stop *es, int task)
{
    return task >= 0 && task < es->n_tasks && es->tasks[task].stopped ? es->tasks[task].stopped_iter : -1;
}

int mtl_early_stop_describe(const mtl_early_stop *es, int task, char *buf, size_t size)
{
    if (task < 0 || task >= es->n_tasks)
        return snprintf(buf, size, "task-wise early stopping: no task %d", task);
    const task_record *r = &es->tasks[task];
    if (!r->stopped)
        return snprintf(buf, size, "task-wise early stopping: %s task '%s' runs (best validation loss %g at "
                        "iteration %lld, %d test%s without improvement)",
                        r->auxiliary ? "auxiliary" : "main", r->name, r->best, (long long)r->best_iter, r->bad,
                        r->bad == 1 ? "" : "s");
    return snprintf(buf, size,
                    "task-wise early stopping: auxiliary task '%s' stops at iteration %lld: validation loss %g has "
                    "not improved on %g (iteration %lld) for %d test%s (patience %d)",
                    r->name, (long long)r->stopped_iter, r->last, r->best, (long long)r->best_iter, r->bad,
                    r->bad == 1 ? "" : "s", es->cfg.patience);
}

/* ---- state ----------------------------------------------------------------------------------- */

/* Per task: stopped (1), bad (4), best, best_iter, last, stopped_iter (8 each); little-endian,
 * after the task count (4). */
enum { RECORD_BYTES = 1 + 4 + 4 * 8 };

static void put_u64(uint8_t *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *b)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    return v;
}

static void put_u32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t bits_of(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

static double double_of(uint64_t u)
{
    double d;
    memcpy(&d, &u, 8);
    return d;
}

size_t mtl_early_stop_state_size(const mtl_early_stop *es) { return 4 + (size_t)es->n_tasks * RECORD_BYTES; }

void mtl_early_stop_state_save(const mtl_early_stop *es, uint8_t *buf)
{
    put_u32(buf, (uint32_t)es->n_tasks);
    uint8_t *b = buf + 4;
    for (int t = 0; t < es->n_tasks; t++, b += RECORD_BYTES) {
        const task_record *r = &es->tasks[t];
        b[0] = (uint8_t)r->stopped;
        put_u32(b + 1, (uint32_t)r->bad);
        put_u64(b + 5, bits_of(r->best));
        put_u64(b + 13, (uint64_t)r->best_iter);
        put_u64(b + 21, bits_of(r->last));
        put_u64(b + 29, (uint64_t)r->stopped_iter);
    }
}

mtl_status mtl_early_stop_state_load(mtl_early_stop *es, const uint8_t *buf, size_t size, mtl_error *err)
{
    if (size < 4 || get_u32(buf) != (uint32_t)es->n_tasks || size != mtl_early_stop_state_size(es))
        return mtl_fail(err, MTL_ERR_CORRUPT,
                        "the saved task-wise early stopping state (%zu bytes) is not for this net's %d tasks", size,
                        es->n_tasks);
    const uint8_t *b = buf + 4;
    for (int t = 0; t < es->n_tasks; t++, b += RECORD_BYTES) {
        task_record *r = &es->tasks[t];
        if (b[0] > 1 || (b[0] && !r->auxiliary) || get_u32(b + 1) > (1u << 30))
            return mtl_fail(err, MTL_ERR_CORRUPT, "the saved early stopping record of task '%s' is corrupt", r->name);
        r->stopped = b[0];
        r->bad = (int)get_u32(b + 1);
        r->best = double_of(get_u64(b + 5));
        r->best_iter = (int64_t)get_u64(b + 13);
        r->last = double_of(get_u64(b + 21));
        r->stopped_iter = (int64_t)get_u64(b + 29);
    }
    return MTL_OK;
}
