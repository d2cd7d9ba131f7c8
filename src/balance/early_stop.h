/* Task-wise early stopping (TCDCN, Zhang et al., ECCV 2014): an auxiliary task stops contributing
 * to training once its validation loss has not improved for `patience` consecutive tests; the
 * main tasks (every task not named auxiliary) never stop. The module keeps the per-task record
 * and answers, after each test, which tasks stop now and what each task's loss weight is
 * multiplied by (1 while it runs, 0 once stopped). The solver owns the schedule: it reads the
 * config, feeds each test's losses and applies the multipliers (docs/landmarks.md shows how).
 *
 * In a solver prototxt (an mtl extension):
 *   task_early_stopping {
 *     patience: 3           # tests without improvement before an auxiliary task stops (>= 1)
 *     min_delta: 0          # an improvement must lower the best loss by more than this (>= 0)
 *     relative: false       # true: min_delta is a fraction of the best loss (0.02: 2%; losses > 0)
 *     min_iter: 0           # no task stops before this iteration
 *     auxiliary: "loss_pose" auxiliary: "loss_size"   # loss top names of the auxiliary tasks
 *   } */
#ifndef MTL_BALANCE_EARLY_STOP_H
#define MTL_BALANCE_EARLY_STOP_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/error.h"

#define MTL_EARLY_STOP_MAX_AUXILIARY 64

typedef struct mtl_early_stop_config {
    int patience;               /* >= 1 */
    double min_delta;           /* >= 0 */
    int relative;               /* min_delta is a fraction of the best loss */
    int64_t min_iter;           /* >= 0 */
    int n_auxiliary;            /* >= 1 */
    const char *auxiliary[MTL_EARLY_STOP_MAX_AUXILIARY]; /* borrowed: the parse tree's or the caller's */
    const mtl_cfg_node *where;  /* the task_early_stopping message, for errors; may be NULL */
} mtl_early_stop_config;

/* Reads `task_early_stopping { ... }` from a solver message (NULL: absent). *present is 0 when the
 * message is absent (cfg is then untouched) and 1 when it was read; every field is marked known.
 * The names stay owned by the tree. */
mtl_status mtl_early_stop_read(mtl_cfg_node *solver, mtl_early_stop_config *cfg, int *present, mtl_error *err);

typedef struct mtl_early_stop mtl_early_stop;

/* The tracker for a net's tasks, in the net's order (task_names[t]: the loss top of task t, as in
 * mtl_net.tasks[t].name). Every auxiliary name must be a task, and at least one task must be
 * main; errors point at the config when it came from a prototxt. */
mtl_status mtl_early_stop_create(const mtl_early_stop_config *cfg, int n_tasks, const char *const *task_names,
                                 mtl_early_stop **out, mtl_error *err);
void mtl_early_stop_free(mtl_early_stop *es);

/* One test's validation losses at iteration iter: val_loss[t] for task t (unweighted; NaN: no value
 * this time, which neither improves nor counts against the task). A running auxiliary task whose
 * loss is not below its best minus min_delta (relative: best times 1 - min_delta) collects a bad
 * test (its best stays); at `patience` bad tests in a row
 * (and iter >= min_iter) it stops. stopped_now[t] (may be NULL) is set to 1 for each task that
 * stops at this test, 0 otherwise; returns how many stopped. */
int mtl_early_stop_update(mtl_early_stop *es, int64_t iter, const double *val_loss, int *stopped_now);

/* The factor for task t's loss weight: 1 while it runs, 0 once it has stopped. */
float mtl_early_stop_multiplier(const mtl_early_stop *es, int task);
/* All of them: out[n_tasks]. */
void mtl_early_stop_multipliers(const mtl_early_stop *es, float *out);

int mtl_early_stop_is_auxiliary(const mtl_early_stop *es, int task);
/* The iteration at which task t stopped, or -1 while it runs. */
int64_t mtl_early_stop_stopped_at(const mtl_early_stop *es, int task);

/* The log line for a task that has stopped: "task-wise early stopping: auxiliary task 'loss_pose'
 * stops at iteration 1200: validation loss 0.53 has not improved on 0.51 (iteration 600) for 3
 * tests (patience 3)". Returns the length snprintf would write. */
int mtl_early_stop_describe(const mtl_early_stop *es, int task, char *buf, size_t size);

/* State for snapshots (an exact resume continues the same record): state_size bytes. Loading
 * checks that the state is for as many tasks. */
size_t mtl_early_stop_state_size(const mtl_early_stop *es);
void mtl_early_stop_state_save(const mtl_early_stop *es, uint8_t *buf);
mtl_status mtl_early_stop_state_load(mtl_early_stop *es, const uint8_t *buf, size_t size, mtl_error *err);

#endif
