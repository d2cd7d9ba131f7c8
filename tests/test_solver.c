/* The solver on small regression nets fed by hand: training lowers the loss, iter_size 2 with batch
 * b equals batch 2b, lr_mult / decay_mult per parameter, resuming from a snapshot continues bit for
 * bit (dropout included), stopping on request, NaN reports, display and JSON lines, and the
 * configuration errors (unknown fields and types, paths relative to the solver file). */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "test_util.h"
#include "core/solver.h"

static char tmp_dir[64];

static void make_tmp_dir(void)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/mtl_test_solver_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        exit(1);
    }
}

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 512, "%s/%s", tmp_dir, name);
    return p;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return;
    }
    fputs(text, f);
    fclose(f);
}

/* ---------------------------------------------------------------- data */

/* Sample j of a fixed regression problem: target = A x + b. */
static void sample(int64_t j, float *x, float *y)
{
    x[0] = (float)sin(0.7 * (double)j);
    x[1] = (float)cos(1.3 * (double)j);
    x[2] = (float)(j % 5) / 5.0f - 0.4f;
    y[0] = x[0] + 2.0f * x[1] - x[2] + 0.5f;
    y[1] = -x[0] + 0.3f * x[2];
}

typedef struct feeder {
    int iter_size;         /* passes per iteration of the train net */
    int64_t nan_iter;      /* put a NaN into the data at this iteration (-1: never) */
    int64_t stop_iter;     /* set *stop at this iteration (-1: never) */
    volatile sig_atomic_t *stop;
} feeder;

/* Fills 'data' and 'target': iteration i, pass p of the train net gets samples
 * i*B*iter_size + p*B ... + B-1 (B the batch), so batch 2b with iter_size 1 sees exactly what batch b
 * sees over two passes. Test nets get samples from 100000 on. */
static mtl_status feed(void *user, mtl_net *net, int test_net, int64_t iter, int64_t pass, mtl_error *err)
{
    feeder *f = user;
    mtl_tensor *data = mtl_net_blob(net, "data"), *target = mtl_net_blob(net, "target");
    if (!data || !target)
        return mtl_fail(err, MTL_ERR_NOT_FOUND, "feed: the net has no 'data' or 'target' blob");
    int b = data->shape[0];
    int64_t base = test_net >= 0 ? 100000 + pass * b : iter * b * f->iter_size + pass * b;
    for (int i = 0; i < b; i++)
        sample(base + i, data->data + 3 * i, target->data + 2 * i);
    if (test_net < 0 && iter == f->nan_iter)
        data->data[1] = NAN;
    if (test_net < 0 && iter == f->stop_iter && f->stop)
        *f->stop = 1;
    return MTL_OK;
}

#define INPUT_LAYER(b)                                                                                             \
    "layer { name: 'in' type: 'Input' top: 'data' top: 'target'\n"                                                  \
    "  input_param { shape { dim: " #b " dim: 3 } shape { dim: " #b " dim: 2 } } }\n"
#define LINEAR_LAYERS                                                                                              \
    "layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'out'\n"                                          \
    "  inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 0.3 } } }\n"                      \
    "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'out' bottom: 'target' top: 'loss' }\n"

static const char *linear_net_4 = "name: 'linear' " INPUT_LAYER(4) LINEAR_LAYERS;
static const char *linear_net_2 = "name: 'linear' " INPUT_LAYER(2) LINEAR_LAYERS;

/* Two layers with dropout between them, so resuming must restore the generator. */
static const char *dropout_net = "name: 'dropout' " INPUT_LAYER(4)
    "layer { name: 'ip1' type: 'InnerProduct' bottom: 'data' top: 'h'\n"
    "  inner_product_param { num_output: 8 weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    "layer { name: 'relu' type: 'ReLU' bottom: 'h' top: 'h' }\n"
    "layer { name: 'drop' type: 'Dropout' bottom: 'h' top: 'h' dropout_param { dropout_ratio: 0.3 } }\n"
    "layer { name: 'ip2' type: 'InnerProduct' bottom: 'h' top: 'out'\n"
    "  inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'out' bottom: 'target' top: 'loss' }\n";

/* Two tasks on one trunk, weighted 0.5 and 2. */
static const char *two_task_net = "name: 'two' " INPUT_LAYER(4)
    "layer { name: 'trunk' type: 'InnerProduct' bottom: 'data' top: 'feat'\n"
    "  inner_product_param { num_output: 4 weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    "layer { name: 'slice' type: 'Slice' bottom: 'target' top: 't_left' top: 't_right' slice_param { axis: 1 } }\n"
    "layer { name: 'left' type: 'InnerProduct' bottom: 'feat' top: 'o_left'\n"
    "  inner_product_param { num_output: 1 weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    "layer { name: 'right' type: 'InnerProduct' bottom: 'feat' top: 'o_right'\n"
    "  inner_product_param { num_output: 1 weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    "layer { name: 'l_left' type: 'EuclideanLoss' bottom: 'o_left' bottom: 't_left' top: 'loss_left'\n"
    "  loss_weight: 0.5 }\n"
    "layer { name: 'l_right' type: 'EuclideanLoss' bottom: 'o_right' bottom: 't_right' top: 'loss_right'\n"
    "  loss_weight: 2 }\n";

/* A solver with the net inline (net_param) and the given settings; snapshots go to tmp_dir. */
static mtl_status make_solver(const char *net, const char *settings, mtl_solver_options *opts, mtl_solver **s,
                              mtl_error *err)
{
    size_t n = strlen(net) + strlen(settings) + 64;
    char *text = malloc(n);
    snprintf(text, n, "net_param { %s }\n%s", net, settings);
    mtl_status st = mtl_solver_from_string(text, tmp_dir, opts, s, err);
    free(text);
    return st;
}

/* ---------------------------------------------------------------- tests */

static void test_training_reduces_loss(void)
{
    static const char *types[] = {"SGD", "Nesterov", "Adam", "AdamW", "RMSProp", "AdaGrad"};
    static const char *extra[] = {"momentum: 0.9 base_lr: 0.05", "momentum: 0.9 base_lr: 0.05",
                                  "momentum: 0.9 momentum2: 0.999 base_lr: 0.05",
                                  "momentum: 0.9 base_lr: 0.05 weight_decay: 0.001",
                                  "rms_decay: 0.9 base_lr: 0.01", "base_lr: 0.2"};
    for (int t = 0; t < 6; t++) {
        mtl_error err = {0};
        feeder f = {.iter_size = 1, .nan_iter = -1, .stop_iter = -1};
        mtl_solver_options o = {.feed = feed, .feed_user = &f};
        mtl_solver *s = NULL;
        char settings[512];
        snprintf(settings, sizeof(settings),
                 "type: '%s' %s lr_policy: 'fixed' max_iter: 200 average_loss: 10 snapshot_after_train: false",
                 types[t], extra[t]);
        CHECK_OK(make_solver(linear_net_4, settings, &o, &s, &err), &err);
        if (!s)
            continue;
        CHECK_OK(mtl_solver_step(s, 10, &err), &err);
        double early = s->train_out.loss;
        CHECK_OK(mtl_solver_solve(s, &err), &err);
        CHECK_INT(s->iter, 200);
        CHECK_MSG(s->train_out.loss < 0.2 * early, "%s: smoothed loss %g after 200 iterations, %g after 10",
                  types[t], s->train_out.loss, early);
        mtl_solver_free(s);
    }
}

static void test_iter_size_equivalence(void)
{
    /* batch 4 with iter_size 1 against batch 2 with iter_size 2 on the same samples: the same
     * averaged gradient, so the same weights (up to float summation order), with momentum, decay and
     * an active gradient clip (clipping after averaging makes that hold) */
    const char *settings = "base_lr: 0.1 lr_policy: 'fixed' momentum: 0.9 weight_decay: 0.01 "
                           "clip_gradients: 0.5 max_iter: 5 snapshot_after_train: false";
    char settings2[512];
    snprintf(settings2, sizeof(settings2), "%s iter_size: 2", settings);
    mtl_error err = {0};
    feeder f1 = {.iter_size = 1, .nan_iter = -1, .stop_iter = -1};
    feeder f2 = {.iter_size = 2, .nan_iter = -1, .stop_iter = -1};
    mtl_solver_options o1 = {.feed = feed, .feed_user = &f1}, o2 = {.feed = feed, .feed_user = &f2};
    mtl_solver *a = NULL, *b = NULL;
    CHECK_OK(make_solver(linear_net_4, settings, &o1, &a, &err), &err);
    CHECK_OK(make_solver(linear_net_2, settings2, &o2, &b, &err), &err);
    if (!a || !b)
        goto done;
    CHECK_INT(a->train_net->n_param_values, b->train_net->n_param_values);
    CHECK(memcmp(a->train_net->param_data, b->train_net->param_data,
                 (size_t)a->train_net->n_param_values * sizeof(float)) == 0);
    for (int i = 0; i < 5; i++) {
        CHECK_OK(mtl_solver_step(a, 1, &err), &err);
        CHECK_OK(mtl_solver_step(b, 1, &err), &err);
        CHECK_NEAR(a->loss, b->loss, 1e-5 * fmax(1.0, fabs(a->loss)));
    }
    for (int64_t k = 0; k < a->train_net->n_param_values; k++)
        CHECK_NEAR(a->train_net->param_data[k], b->train_net->param_data[k], 1e-5);
done:
    mtl_solver_free(a);
    mtl_solver_free(b);
}

static void test_lr_and_decay_mult(void)
{
    /* weights frozen (lr_mult 0), bias at twice the rate without decay; one plain SGD step must give
     * w - 0.1 * lr_mult * (g + 0.1 * decay_mult * w) with g from a separate forward/backward */
    const char *net = "name: 'mult' " INPUT_LAYER(4)
        "layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'out'\n"
        "  param { lr_mult: 0 } param { lr_mult: 2 decay_mult: 0 }\n"
        "  inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 0.3 }\n"
        "    bias_filler { type: 'constant' value: 0.25 } } }\n"
        "layer { name: 'ip2' type: 'InnerProduct' bottom: 'data' top: 'out2'\n"
        "  param { lr_mult: 1 decay_mult: 3 } param { lr_mult: 1 }\n"
        "  inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 0.3 } } }\n"
        "layer { name: 'sum' type: 'Eltwise' bottom: 'out' bottom: 'out2' top: 'y' }\n"
        "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'y' bottom: 'target' top: 'loss' }\n";
    mtl_error err = {0};
    feeder f = {.iter_size = 1, .nan_iter = -1, .stop_iter = -1};
    mtl_solver_options o = {.feed = feed, .feed_user = &f};
    mtl_solver *s = NULL;
    CHECK_OK(make_solver(net, "base_lr: 0.1 lr_policy: 'fixed' weight_decay: 0.1 max_iter: 1 "
                              "snapshot_after_train: false",
                         &o, &s, &err),
             &err);
    if (!s)
        return;
    mtl_net *n = s->train_net;
    mtl_layer *ip = n->layers[mtl_net_layer_index(n, "ip")], *ip2 = n->layers[mtl_net_layer_index(n, "ip2")];
    /* the gradient at the starting point, computed through the net directly */
    CHECK_OK(feed(&f, n, -1, 0, 0, &err), &err);
    mtl_net_zero_param_grad(n);
    CHECK_OK(mtl_net_forward(n, NULL, &err), &err);
    mtl_net_backward(n);
    float w[6], g_b[2], b[2], w2[6], g_w2[6];
    memcpy(w, ip->params[0]->data, sizeof(w));
    memcpy(b, ip->params[1]->data, sizeof(b));
    memcpy(g_b, ip->params[1]->grad, sizeof(g_b));
    memcpy(w2, ip2->params[0]->data, sizeof(w2));
    memcpy(g_w2, ip2->params[0]->grad, sizeof(g_w2));
    CHECK_OK(mtl_solver_step(s, 1, &err), &err);
    CHECK(memcmp(w, ip->params[0]->data, sizeof(w)) == 0); /* frozen */
    for (int i = 0; i < 2; i++)
        CHECK_NEAR(ip->params[1]->data[i], b[i] - 0.1f * 2.0f * g_b[i], 1e-6);
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(ip2->params[0]->data[i], w2[i] - 0.1f * (g_w2[i] + 0.1f * 3.0f * w2[i]), 1e-6);
    mtl_solver_free(s);
}

/* Runs `iters` single steps and records each iteration's loss. */
static void run_steps(mtl_solver *s, int iters, double *losses, mtl_error *err)
{
    for (int i = 0; i < iters; i++) {
        CHECK_OK(mtl_solver_step(s, 1, err), err);
        losses[i] = s->loss;
    }
}

static void test_resume_exact(void)
{
    const char *settings = "type: 'Adam' base_lr: 0.01 momentum: 0.9 lr_policy: 'step' gamma: 0.5 stepsize: 3 "
                           "max_iter: 10 average_loss: 3 display: 2 snapshot_after_train: false";
    mtl_error err = {0};
    feeder f = {.iter_size = 1, .nan_iter = -1, .stop_iter = -1};
    mtl_solver_options o = {.feed = feed, .feed_user = &f};
    mtl_solver *a = NULL, *b = NULL, *c = NULL;
    double straight[10], resumed[10];
    CHECK_OK(make_solver(dropout_net, settings, &o, &a, &err), &err);
    CHECK_OK(make_solver(dropout_net, settings, &o, &b, &err), &err);
    if (!a || !b)
        goto done;
    run_steps(a, 10, straight, &err);
    run_steps(b, 5, resumed, &err);
    const char *path = tmp_path("resume.mtlsnap");
    CHECK_OK(mtl_solver_snapshot(b, path, &err), &err);
    mtl_solver_free(b);
    b = NULL;

    /* a new solver: fresh weights, then the snapshot */
    CHECK_OK(make_solver(dropout_net, settings, &o, &c, &err), &err);
    if (!c)
        goto done;
    CHECK_OK(mtl_solver_restore(c, path, &err), &err);
    CHECK_INT(c->iter, 5);
    run_steps(c, 5, resumed + 5, &err);
    for (int i = 0; i < 10; i++)
        CHECK_MSG(straight[i] == resumed[i], "iteration %d: loss %.17g straight, %.17g resumed", i, straight[i],
                  resumed[i]);
    CHECK(a->train_out.loss == c->train_out.loss); /* the smoothing window came back too */
    CHECK(memcmp(a->train_net->param_data, c->train_net->param_data,
                 (size_t)a->train_net->n_param_values * sizeof(float)) == 0);
    int last = a->train_net->n_slots - 1;
    size_t n_history = (size_t)(a->history_offset[last] + 2 * a->train_net->slots[last].count);
    CHECK(memcmp(a->history, c->history, n_history * sizeof(float)) == 0);
    CHECK(memcmp(&a->train_net->rng, &c->train_net->rng, sizeof(mtl_rng)) == 0);

    /* the dropout mask really depends on the generator: without restoring it the losses differ */
    mtl_solver *d = NULL;
    CHECK_OK(make_solver(dropout_net, settings, &o, &d, &err), &err);
    if (d) {
        CHECK_OK(mtl_solver_restore(d, path, &err), &err);
        mtl_rng_seed(&d->train_net->rng, 999);
        CHECK_OK(mtl_solver_step(d, 1, &err), &err);
        CHECK(d->loss != straight[5]);
        mtl_solver_free(d);
    }

    /* a snapshot of another solver type is refused */
    mtl_solver *e = NULL;
    CHECK_OK(make_solver(dropout_net,
                         "type: 'SGD' base_lr: 0.01 lr_policy: 'fixed' max_iter: 10 snapshot_after_train: false", &o,
                         &e, &err),
             &err);
    if (e) {
        CHECK_FAILS(mtl_solver_restore(e, path, &err), &err, MTL_ERR_CONFIG, "written by a Adam solver");
        mtl_solver_free(e);
    }
done:
    mtl_solver_free(a);
    mtl_solver_free(b);
    mtl_solver_free(c);
}

static void test_solve_snapshots_and_stop(void)
{
    /* solve with snapshot: 4 writes <prefix>_iter_4 and _iter_8, and the final one at 10 */
    const char *settings = "type: 'Nesterov' base_lr: 0.02 momentum: 0.9 lr_policy: 'fixed' max_iter: 10 "
                           "snapshot: 4 snapshot_prefix: 'snap/run'";
    char snap_dir[512];
    snprintf(snap_dir, sizeof(snap_dir), "%s/snap", tmp_dir);
    mkdir(snap_dir, 0700);
    mtl_error err = {0};
    feeder f = {.iter_size = 1, .nan_iter = -1, .stop_iter = -1};
    mtl_solver_options o = {.feed = feed, .feed_user = &f};
    mtl_solver *a = NULL, *b = NULL;
    CHECK_OK(make_solver(dropout_net, settings, &o, &a, &err), &err);
    if (!a)
        return;
    CHECK_OK(mtl_solver_solve(a, &err), &err);
    CHECK(access(tmp_path("snap/run_iter_4.mtlsnap"), F_OK) == 0);
    CHECK(access(tmp_path("snap/run_iter_8.mtlsnap"), F_OK) == 0);
    CHECK(access(tmp_path("snap/run_iter_10.mtlsnap"), F_OK) == 0);
    CHECK(access(tmp_path("snap/run_iter_10.mtlsnap.tmp"), F_OK) != 0);

    /* stop requested during iteration 6: the iteration finishes, a snapshot at 7, INTERRUPTED */
    volatile sig_atomic_t stop = 0;
    feeder fs = {.iter_size = 1, .nan_iter = -1, .stop_iter = 6, .stop = &stop};
    mtl_solver_options os = {.feed = feed, .feed_user = &fs, .stop_flag = &stop};
    CHECK_OK(make_solver(dropout_net, settings, &os, &b, &err), &err);
    if (!b)
        goto done;
    CHECK_FAILS(mtl_solver_solve(b, &err), &err, MTL_ERR_INTERRUPTED, "run_iter_7.mtlsnap");
    CHECK_INT(b->iter, 7);
    CHECK(access(tmp_path("snap/run_iter_7.mtlsnap"), F_OK) == 0);
    mtl_solver_free(b);
    b = NULL;

    /* resume from it and finish: the same final weights as the run that was never stopped */
    CHECK_OK(make_solver(dropout_net, settings, &o, &b, &err), &err);
    if (!b)
        goto done;
    CHECK_OK(mtl_solver_restore(b, tmp_path("snap/run_iter_7.mtlsnap"), &err), &err);
    CHECK_OK(mtl_solver_solve(b, &err), &err);
    CHECK_INT(b->iter, 10);
    CHECK(memcmp(a->train_net->param_data, b->train_net->param_data,
                 (size_t)a->train_net->n_param_values * sizeof(float)) == 0);
done:
    mtl_solver_free(a);
    mtl_solver_free(b);
}

static void test_nan_report(void)
{
    mtl_error err = {0};
    /* a NaN in the input at iteration 2 */
    feeder f = {.iter_size = 1, .nan_iter = 2, .stop_iter = -1};
    mtl_solver_options o = {.feed = feed, .feed_user = &f};
    mtl_solver *s = NULL;
    CHECK_OK(make_solver(linear_net_4, "base_lr: 0.01 lr_policy: 'fixed' max_iter: 5 snapshot_after_train: false",
                         &o, &s, &err),
             &err);
    if (s) {
        CHECK_FAILS(mtl_solver_solve(s, &err), &err, MTL_ERR_NUMERIC, "iteration 2: ");
        CHECK_MSG(strstr(err.message, "loss is nan") && strstr(err.message, "'data'"), "message: %s", err.message);
        mtl_solver_free(s);
    }
    /* a learning rate that blows the weights up: the loss layer overflows at iteration 1 */
    feeder g = {.iter_size = 1, .nan_iter = -1, .stop_iter = -1};
    mtl_solver_options og = {.feed = feed, .feed_user = &g};
    CHECK_OK(make_solver(linear_net_4, "base_lr: 1e25 lr_policy: 'fixed' max_iter: 5 snapshot_after_train: false",
                         &og, &s, &err),
             &err);
    if (s) {
        CHECK_FAILS(mtl_solver_solve(s, &err), &err, MTL_ERR_NUMERIC, "iteration 1: ");
        CHECK_MSG(strstr(err.message, "loss is inf") && strstr(err.message, "layer 'loss'"), "message: %s",
                  err.message);
        mtl_solver_free(s);
    }
}

static void test_display_and_json(void)
{
    char *log = NULL, *json = NULL;
    size_t log_size = 0, json_size = 0;
    FILE *lf = open_memstream(&log, &log_size), *jf = open_memstream(&json, &json_size);
    mtl_error err = {0};
    feeder f = {.iter_size = 1, .nan_iter = -1, .stop_iter = -1};
    mtl_solver_options o = {.feed = feed, .feed_user = &f, .log = lf, .json = jf};
    mtl_solver *s = NULL;
    CHECK_OK(make_solver(two_task_net,
                         "base_lr: 0.1 lr_policy: 'fixed' max_iter: 2 display: 1 test_iter: 3 test_interval: 2 "
                         "snapshot_after_train: false",
                         &o, &s, &err),
             &err);
    if (!s) {
        fclose(lf);
        fclose(jf);
        free(log);
        free(json);
        return;
    }
    CHECK_INT(s->n_test_nets, 1);
    CHECK_OK(mtl_solver_solve(s, &err), &err);
    fflush(lf);
    fflush(jf);
    CHECK_MSG(strstr(log, "Iteration 0 (") && strstr(log, "iter/s), loss = "), "log:\n%s", log);
    CHECK_MSG(strstr(log, "    Train net output #0: loss_left = "), "log:\n%s", log);
    CHECK_MSG(strstr(log, " (* 0.5 = "), "log:\n%s", log);
    CHECK_MSG(strstr(log, "    Train net output #1: loss_right = ") && strstr(log, " (* 2 = "), "log:\n%s", log);
    CHECK_MSG(strstr(log, "Iteration 1, lr = 0.1"), "log:\n%s", log);
    CHECK_MSG(strstr(log, "Iteration 0, Testing net (#0)"), "log:\n%s", log);
    CHECK_MSG(strstr(log, "Iteration 2, Testing net (#0)"), "log:\n%s", log);
    CHECK_MSG(strstr(log, "    Test net output #0: loss_left = "), "log:\n%s", log);
    CHECK_MSG(strstr(log, "Optimization Done."), "log:\n%s", log);

    /* every JSON line is one object; train lines carry lr, loss and weighted outputs */
    int lines = 0, train = 0, test = 0;
    for (char *line = json; line && *line;) {
        char *end = strchr(line, '\n');
        if (!end)
            break;
        *end = '\0';
        lines++;
        CHECK_MSG(line[0] == '{' && end[-1] == '}', "json line: %s", line);
        if (strstr(line, "\"phase\":\"train\"") && strstr(line, "\"lr\":0.1,")) {
            train++;
            CHECK_MSG(strstr(line, "\"outputs\":{\"loss_left\":{\"value\":") && strstr(line, "\"weight\":0.5}") &&
                          strstr(line, "\"loss_right\":{\"value\":") && strstr(line, "\"iter_per_s\":"),
                      "json line: %s", line);
        }
        if (strstr(line, "\"phase\":\"test\"")) {
            test++;
            CHECK_MSG(strstr(line, "\"net\":0") && strstr(line, "\"loss_left\":{\"value\":"), "json line: %s", line);
        }
        line = end + 1;
    }
    CHECK_INT(train, 2);
    CHECK_INT(test, 2);

    /* the test value is the mean over test_iter passes of the TEST net */
    mtl_net *tn = s->test_nets[0];
    double sum = 0;
    for (int pass = 0; pass < 3; pass++) {
        CHECK_OK(feed(&f, tn, 0, s->iter, pass, &err), &err);
        CHECK_OK(mtl_net_forward(tn, NULL, &err), &err);
        sum += mtl_net_blob(tn, "loss_right")->data[0];
    }
    CHECK_NEAR(mtl_solver_test_value(s, 0, "loss_right"), sum / 3.0, 1e-6);
    CHECK(isnan(mtl_solver_test_value(s, 0, "no_such_blob")));
    CHECK(tn->param_data == NULL || tn->shares_params); /* the test net views the train weights */

    mtl_solver_free(s);
    fclose(lf);
    fclose(jf);
    free(log);
    free(json);
}

static void config_fails(const char *settings, mtl_status status, const char *needle, int line)
{
    mtl_error err = {0};
    mtl_solver *s = (mtl_solver *)1;
    mtl_status st = make_solver(linear_net_4, settings, NULL, &s, &err);
    check_report(st == status && strstr(err.message, needle) != NULL && s == NULL, __FILE__, line,
                 "solver '%s': got %s '%s', expected %s containing '%s'", settings, mtl_status_name(st), err.message,
                 mtl_status_name(status), needle);
    if (st == MTL_OK)
        mtl_solver_free(s);
}
#define CONFIG_FAILS(settings, status, needle) config_fails(settings, status, needle, __LINE__)

#define BASE "base_lr: 0.1 lr_policy: 'fixed' max_iter: 1 snapshot_after_train: false "

static void test_config_errors(void)
{
    CONFIG_FAILS(BASE "base_lrr: 0.1", MTL_ERR_CONFIG, "unknown field 'base_lrr' at top level; did you mean 'base_lr'");
    CONFIG_FAILS(BASE "momentun: 0.9", MTL_ERR_CONFIG, "did you mean 'momentum'");
    CONFIG_FAILS(BASE "type: 'Adamm'", MTL_ERR_CONFIG, "unknown solver type 'Adamm'; did you mean Adam");
    CONFIG_FAILS(BASE "type: 'LBFGS'", MTL_ERR_CONFIG, "the types are SGD, Nesterov, Adam, AdamW, RMSProp");
    CONFIG_FAILS(BASE "type: 'AdaDelta'", MTL_ERR_UNSUPPORTED, "'AdaDelta' is not supported");
    CONFIG_FAILS(BASE "solver_type: ADADELTA", MTL_ERR_UNSUPPORTED, "ADADELTA is not supported");
    CONFIG_FAILS(BASE "type: 'SGD' solver_type: SGD", MTL_ERR_CONFIG, "both 'type' and the deprecated");
    CONFIG_FAILS(BASE "solver_mode: GPU", MTL_ERR_UNSUPPORTED, "solver_mode GPU is not supported");
    CONFIG_FAILS("base_lr: 0.1 max_iter: 1", MTL_ERR_CONFIG, "lr_policy is required");
    CONFIG_FAILS("lr_policy: 'fixed' max_iter: 1", MTL_ERR_CONFIG, "base_lr is required");
    CONFIG_FAILS("base_lr: 0.1 lr_policy: 'stpe' max_iter: 1", MTL_ERR_CONFIG, "did you mean step");
    CONFIG_FAILS("base_lr: 0.1 lr_policy: 'step' gamma: 0.1 max_iter: 1", MTL_ERR_CONFIG, "needs stepsize > 0");
    CONFIG_FAILS("base_lr: 0.1 lr_policy: 'step' stepsize: 3 max_iter: 1", MTL_ERR_CONFIG, "needs gamma");
    CONFIG_FAILS("base_lr: 0.1 lr_policy: 'multistep' gamma: 0.1 stepvalue: 10 stepvalue: 5 max_iter: 1",
                 MTL_ERR_CONFIG, "strictly increasing");
    CONFIG_FAILS("base_lr: 0.1 lr_policy: 'poly' power: 1", MTL_ERR_CONFIG, "needs max_iter > 0");
    CONFIG_FAILS(BASE "regularization_type: 'L3'", MTL_ERR_CONFIG, "unknown regularization_type 'L3'");
    CONFIG_FAILS(BASE "type: 'RMSProp' momentum: 0.9", MTL_ERR_CONFIG, "momentum cannot be used with RMSProp");
    CONFIG_FAILS(BASE "iter_size: 0", MTL_ERR_CONFIG, "iter_size");
    CONFIG_FAILS(BASE "test_iter: 5 test_net: 'a.prototxt' test_net: 'b.prototxt'", MTL_ERR_CONFIG,
                 "test_iter must be given once for each test net");
    CONFIG_FAILS(BASE "train_net: 'x.prototxt'", MTL_ERR_CONFIG, "more than one train net");
    CONFIG_FAILS(BASE "snapshot_prefix: 'no/such/dir/run' snapshot: 10", MTL_ERR_CONFIG, "is not writable");
    CONFIG_FAILS(BASE "min_lr: 0.1", MTL_ERR_CONFIG, "min_lr is only used by lr_policy 'cosine'");
    CONFIG_FAILS(BASE "net_param { layer { name: 'x' } }", MTL_ERR_CONFIG, "given twice");

    mtl_error err = {0};
    mtl_solver *s = NULL;
    CHECK_FAILS(mtl_solver_from_string(BASE, tmp_dir, NULL, &s, &err), &err, MTL_ERR_CONFIG, "no train net");
    /* an error inside the net is reported with the solver and which net */
    CHECK_FAILS(make_solver("layer { name: 'r' type: 'ReLUU' bottom: 'x' top: 'y' }", BASE, NULL, &s, &err), &err,
                MTL_ERR_UNSUPPORTED, "<solver>: train net: ");

    /* accepted Caffe fields and the defaults */
    CHECK_OK(make_solver(linear_net_4,
                         BASE "solver_mode: CPU device_id: 0 debug_info: false snapshot_format: HDF5 "
                              "snapshot_diff: false test_compute_loss: false layer_wise_reduce: true solver_type: "
                              "NESTEROV momentum: 0.5",
                         NULL, &s, &err),
             &err);
    if (s) {
        CHECK_INT(s->cfg.update.type, MTL_UPDATE_NESTEROV);
        CHECK_INT(s->cfg.seed, MTL_SOLVER_DEFAULT_SEED);
        CHECK_INT(s->cfg.test_initialization, 1);
        CHECK_NEAR(s->cfg.update.momentum2, 0.999, 1e-7);
        CHECK_NEAR(s->cfg.update.delta, 1e-8, 1e-15);
        CHECK_NEAR(s->cfg.update.rms_decay, 0.99, 1e-7);
        CHECK_NEAR(s->cfg.clip_gradients, -1, 0);
        mtl_solver_free(s);
    }
    /* the max_iter override and warmup / cosine fields */
    mtl_solver_options o = {.max_iter = 7};
    CHECK_OK(make_solver(linear_net_4,
                         "base_lr: 0.1 lr_policy: 'cosine' min_lr: 0.01 max_iter: 100 warmup_iter: 2 "
                         "warmup_start_lr: 0.001 random_seed: 5 snapshot_after_train: false",
                         &o, &s, &err),
             &err);
    if (s) {
        CHECK_INT(s->cfg.max_iter, 7);
        CHECK_INT(s->cfg.seed, 5);
        CHECK_NEAR(mtl_solver_lr_at(s, 0), 0.001, 1e-12);
        CHECK_NEAR(mtl_solver_lr_at(s, 7), 0.01, 1e-12);
        mtl_solver_free(s);
    }
}

static void test_net_states(void)
{
    /* test_state stages pick layers for the test net only; train_state for the train net */
    const char *net = "name: 'staged' " INPUT_LAYER(4) LINEAR_LAYERS
        "layer { name: 'extra' type: 'EuclideanLoss' bottom: 'out' bottom: 'target' top: 'extra'\n"
        "  include { phase: TEST stage: 'extra' } }\n"
        "layer { name: 'deep' type: 'EuclideanLoss' bottom: 'out' bottom: 'target' top: 'deep'\n"
        "  include { phase: TRAIN min_level: 2 } }\n";
    mtl_error err = {0};
    mtl_solver *s = NULL;
    CHECK_OK(make_solver(net,
                         BASE "test_iter: 1 test_iter: 1 test_state { stage: 'extra' } test_state { } "
                                       "train_state { level: 3 }",
                         NULL, &s, &err),
             &err);
    if (!s)
        return;
    CHECK_INT(s->n_test_nets, 2);
    CHECK(mtl_net_layer_index(s->test_nets[0], "extra") >= 0);
    CHECK(mtl_net_layer_index(s->test_nets[1], "extra") < 0);
    CHECK(mtl_net_layer_index(s->train_net, "extra") < 0);
    CHECK(mtl_net_layer_index(s->train_net, "deep") >= 0);
    CHECK_INT(s->test_nets[0]->phase, MTL_PHASE_TEST);
    mtl_solver_free(s);
    CONFIG_FAILS(BASE "test_iter: 1 test_state { stage: 'a' } test_state { stage: 'b' }", MTL_ERR_CONFIG,
                 "test_state must be given once for each test net");
    CONFIG_FAILS(BASE "train_state { stag: 'a' }", MTL_ERR_CONFIG, "did you mean 'stage'");
}

static void test_paths(void)
{
    /* net, test_net and snapshot_prefix are relative to the solver file, not the working directory */
    char sub[512], path[600];
    snprintf(sub, sizeof(sub), "%s/exp", tmp_dir);
    mkdir(sub, 0700);
    snprintf(path, sizeof(path), "%s/snaps", sub);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/net.prototxt", sub);
    write_text(path, linear_net_4);
    snprintf(path, sizeof(path), "%s/solver.prototxt", sub);
    write_text(path, "net: 'net.prototxt'\n"
                     "test_iter: 2 test_interval: 5\n"
                     "base_lr: 0.1 lr_policy: 'fixed' max_iter: 3\n"
                     "snapshot_prefix: 'snaps/run'\n");
    mtl_error err = {0};
    mtl_solver *s = NULL;
    CHECK_OK(mtl_solver_from_file(path, NULL, &s, &err), &err);
    if (s) {
        char expect[600];
        snprintf(expect, sizeof(expect), "%s/snaps/run", sub);
        CHECK_MSG(strcmp(s->cfg.snapshot_prefix, expect) == 0, "prefix %s", s->cfg.snapshot_prefix);
        CHECK_INT(s->n_test_nets, 1);
        CHECK_INT(s->train_net->phase, MTL_PHASE_TRAIN);
        CHECK_INT(s->test_nets[0]->phase, MTL_PHASE_TEST);
        mtl_solver_free(s);
    }
    /* the default prefix is the solver file without its extension */
    snprintf(path, sizeof(path), "%s/other.prototxt", sub);
    write_text(path, "train_net: 'net.prototxt' base_lr: 0.1 lr_policy: 'fixed' max_iter: 3\n");
    CHECK_OK(mtl_solver_from_file(path, NULL, &s, &err), &err);
    if (s) {
        char expect[600];
        snprintf(expect, sizeof(expect), "%s/other", sub);
        CHECK_MSG(strcmp(s->cfg.snapshot_prefix, expect) == 0, "prefix %s", s->cfg.snapshot_prefix);
        CHECK_INT(s->n_test_nets, 0);
        mtl_solver_free(s);
    }
    /* a missing net file names the resolved path */
    snprintf(path, sizeof(path), "%s/broken.prototxt", sub);
    write_text(path, "net: 'missing.prototxt' base_lr: 0.1 lr_policy: 'fixed' snapshot_after_train: false\n");
    char expect[600];
    snprintf(expect, sizeof(expect), "%s/missing.prototxt", sub);
    CHECK_FAILS(mtl_solver_from_file(path, NULL, &s, &err), &err, MTL_ERR_NOT_FOUND, expect);
    /* an unknown field in the file names its line */
    snprintf(path, sizeof(path), "%s/typo.prototxt", sub);
    write_text(path, "net: 'net.prototxt'\nbase_lr: 0.1\nlr_polcy: 'fixed'\n");
    CHECK_FAILS(mtl_solver_from_file(path, NULL, &s, &err), &err, MTL_ERR_CONFIG, "typo.prototxt:3:1");
    CHECK(strstr(err.message, "did you mean 'lr_policy'"));
    /* --weights from a snapshot of a solver in the same directory */
    snprintf(path, sizeof(path), "%s/solver.prototxt", sub);
    CHECK_OK(mtl_solver_from_file(path, NULL, &s, &err), &err);
    if (s) {
        char snap[600];
        snprintf(snap, sizeof(snap), "%s/w.mtlsnap", sub);
        CHECK_OK(mtl_solver_snapshot(s, snap, &err), &err);
        mtl_solver *t = NULL;
        mtl_solver_options o = {0};
        CHECK_OK(mtl_solver_from_string("net: 'net.prototxt' base_lr: 0.1 lr_policy: 'fixed' random_seed: 77 "
                                        "snapshot_after_train: false",
                                        sub, &o, &t, &err),
                 &err);
        if (t) {
            CHECK(memcmp(s->train_net->param_data, t->train_net->param_data,
                         (size_t)s->train_net->n_param_values * sizeof(float)) != 0);
            CHECK_OK(mtl_solver_load_weights(t, snap, NULL, &err), &err);
            CHECK(memcmp(s->train_net->param_data, t->train_net->param_data,
                         (size_t)s->train_net->n_param_values * sizeof(float)) == 0);
            CHECK_INT(t->iter, 0); /* weights only: the iteration does not move */
            mtl_solver_free(t);
        }
        /* the same through the solver's own `weights` field, relative to its directory */
        CHECK_OK(mtl_solver_from_string("net: 'net.prototxt' base_lr: 0.1 lr_policy: 'fixed' random_seed: 77 "
                                        "weights: 'w.mtlsnap' snapshot_after_train: false",
                                        sub, &o, &t, &err),
                 &err);
        if (t) {
            CHECK(memcmp(s->train_net->param_data, t->train_net->param_data,
                         (size_t)s->train_net->n_param_values * sizeof(float)) == 0);
            mtl_solver_free(t);
        }
        mtl_solver_free(s);
    }
}

int main(void)
{
    make_tmp_dir();
    test_config_errors();
    test_paths();
    test_net_states();
    test_training_reduces_loss();
    test_iter_size_equivalence();
    test_lr_and_decay_mult();
    test_resume_exact();
    test_solve_snapshots_and_stop();
    test_nan_report();
    test_display_and_json();
    test_remove_tree(tmp_dir);
    return check_finish();
}
