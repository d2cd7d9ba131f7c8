/* The solver: reads a Caffe SolverParameter prototxt, builds the TRAIN net and its TEST nets, and
 * trains: forward/backward (accumulated over iter_size), gradient clipping, regularization and the
 * update rule from core/update.h, with Caffe's display, test and snapshot schedule. Progress goes
 * to a human-readable log and, optionally, to a JSON-lines log. The library never installs signal
 * handlers: the caller's handler sets *stop_flag and the solver snapshots and stops.
 *
 * Task balancing (balance/balance.h): the optional `task_balance { method: ... }` message picks how
 * the tasks' losses and gradients combine; with two or more tasks the display also reports each
 * task's effective weight, its gradient norm on the shared trunk and the pairwise cosines of the
 * task gradients (docs/task-balancing.md). */
#ifndef MTL_CORE_SOLVER_H
#define MTL_CORE_SOLVER_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "balance/balance.h"
#include "balance/early_stop.h"
#include "core/net.h"
#include "core/update.h"

/* With random_seed absent or negative (Caffe's -1 default) the solver seeds with this, so runs are reproducible by default
 * (Caffe would use the clock). */
#define MTL_SOLVER_DEFAULT_SEED 1701

/* Receives each human-readable log line, without its newline. */
typedef void (*mtl_solver_log_fn)(void *user, const char *line);
/* Called before every forward pass, to fill a net's Input blobs. For the train net (test_net -1),
 * iter is the iteration and pass the micro-batch (0..iter_size-1); for test net k (test_net k),
 * iter is the iteration being tested and pass the test pass (0..test_iter-1). A non-OK status
 * stops the solver with that error. */
typedef mtl_status (*mtl_solver_feed_fn)(void *user, mtl_net *net, int test_net, int64_t iter, int64_t pass,
                                         mtl_error *err);

typedef struct mtl_solver_options {
    FILE *log;                          /* human-readable lines; NULL: none (unless log_fn) */
    mtl_solver_log_fn log_fn;           /* instead of `log` when set */
    void *log_user;
    FILE *json;                         /* one JSON object per line (--log); NULL: none */
    volatile sig_atomic_t *stop_flag;   /* polled every iteration and test pass; may be NULL */
    int64_t max_iter;                   /* > 0: replaces the file's max_iter (poly and cosine use it too) */
    mtl_solver_feed_fn feed;            /* may be NULL */
    void *feed_user;
} mtl_solver_options;

/* The parsed SolverParameter (paths already resolved against the solver file's directory). */
typedef struct mtl_solver_config {
    char *path;                 /* the solver file ("<solver>" for mtl_solver_from_string) */
    char *dir;                  /* its directory: relative paths are resolved against it */
    mtl_update_config update;
    mtl_lr_policy lr;
    int64_t *stepvalues;        /* owned; lr.stepvalues points here */
    float clip_gradients;       /* < 0: off */
    int64_t max_iter, iter_size, display, average_loss;
    int64_t test_interval;
    int test_initialization, test_compute_loss;
    int n_test_iter;
    int64_t *test_iter;         /* per test net */
    int64_t snapshot;           /* interval; 0: only at the end */
    char *snapshot_prefix;      /* resolved */
    int snapshot_after_train, snapshot_diff, debug_info;
    uint64_t seed;              /* random_seed, or MTL_SOLVER_DEFAULT_SEED */
    int has_balance;            /* a task_balance message was given */
    mtl_balance_config balance; /* its fields (defaults: FIXED with diagnostics) */
    int has_early_stop;         /* a task_early_stopping message was given */
    mtl_early_stop_config early_stop; /* its fields (names borrowed from the parse tree) */
} mtl_solver_config;

/* What a net reports: every value of every output blob (blobs no layer reads) and of every loss
 * top, in net order. */
typedef struct mtl_solver_outputs {
    int n;                      /* values */
    int *blob;                  /* [n]: index into the net's blobs */
    int *index;                 /* [n]: value within the blob */
    float *weight;              /* [n]: the blob's loss weight (0: not a loss) */
    double *value;              /* [n]: train: smoothed over average_loss; test: mean over test_iter */
    double loss;                /* train: smoothed loss; test: mean loss (test_compute_loss) */
} mtl_solver_outputs;

typedef struct mtl_solver {
    mtl_solver_config cfg;
    mtl_solver_options opts;
    mtl_net *train_net;
    int n_test_nets;
    mtl_net **test_nets;        /* TEST phase, sharing the train net's parameters */

    int64_t iter;               /* iterations completed */
    double loss;                /* the last iteration's loss, averaged over iter_size */
    double lr;                  /* the rate the last update used */
    int n_history;              /* history vectors per slot (2 for Adam) */
    float *history;             /* all slots' history */
    int64_t *history_offset;    /* [train_net->n_slots]: where slot s's n_history vectors start */

    mtl_solver_outputs train_out; /* smoothed over the last average_loss iterations */
    double *iter_values;        /* [train_out.n]: the last iteration's values (averaged over iter_size) */
    mtl_solver_outputs *test_out; /* [n_test_nets]: the last test */
    int64_t window_size, window_fill, window_pos;
    int window_width;           /* 1 + train_out.n: the loss, then the outputs */
    float *window;              /* [window_size][window_width], a ring */

    double timer_start;         /* for iter/s between displays */
    int64_t timer_iter;
    int64_t last_snapshot_iter; /* -1: none */
    char *last_snapshot_path;
    mtl_balancer *balancer;     /* with task_balance or two or more tasks; NULL otherwise */
    mtl_early_stop *early_stop; /* with task_early_stopping; NULL otherwise */
} mtl_solver;

/* Reads a solver prototxt and builds its nets. Paths in it (net, train_net, test_net,
 * snapshot_prefix, weights) are relative to the file's directory unless absolute. opts may be
 * NULL (no logs). */
mtl_status mtl_solver_from_file(const char *path, const mtl_solver_options *opts, mtl_solver **out,
                                mtl_error *err);
/* The same from text; relative paths resolve against dir (NULL: the current directory) and a
 * missing snapshot_prefix defaults to "<dir>/solver". */
mtl_status mtl_solver_from_string(const char *text, const char *dir, const mtl_solver_options *opts,
                                  mtl_solver **out, mtl_error *err);
void mtl_solver_free(mtl_solver *s);

/* Runs n_iters more iterations (whatever max_iter says), with tests, displays and snapshots at
 * their intervals, as Caffe's Solver::Step. When *stop_flag is set it finishes the iteration under
 * way, snapshots and returns MTL_ERR_INTERRUPTED (the message names the snapshot). A non-finite loss
 * fails with MTL_ERR_NUMERIC naming the iteration, the loss and the first layer whose output went
 * non-finite. */
mtl_status mtl_solver_step(mtl_solver *s, int64_t n_iters, mtl_error *err);
/* Trains from the current iteration to max_iter, then snapshots (snapshot_after_train) and shows
 * the final loss and test results, like Caffe's Solver::Solve. */
mtl_status mtl_solver_solve(mtl_solver *s, mtl_error *err);
/* Runs test_iter forward passes of every TEST net and reports the mean of each output value. */
mtl_status mtl_solver_test(mtl_solver *s, mtl_error *err);
/* The mean of test net `test_net`'s output blob `blob` (its first value) from the last test;
 * NAN if there is none. */
double mtl_solver_test_value(const mtl_solver *s, int test_net, const char *blob);

/* Writes the parameters and the whole solver state to path, or to
 * "<snapshot_prefix>_iter_<iter>.mtlsnap" when path is NULL. */
mtl_status mtl_solver_snapshot(mtl_solver *s, const char *path, mtl_error *err);
/* Restores parameters and state from a snapshot of the same net and solver type (--resume), so
 * training continues exactly as if it had not stopped. */
mtl_status mtl_solver_restore(mtl_solver *s, const char *path, mtl_error *err);
/* Copies parameters by layer name and index from a snapshot (--weights: fine-tuning), writing
 * matched, missing, shape-mismatched and unused parameters to report (may be NULL). */
mtl_status mtl_solver_load_weights(mtl_solver *s, const char *path, FILE *report, mtl_error *err);

/* The learning rate the solver uses at iteration iter. */
double mtl_solver_lr_at(const mtl_solver *s, int64_t iter);

#endif
