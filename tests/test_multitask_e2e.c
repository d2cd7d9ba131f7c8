/* End to end: a two-task net whose two-column label is split by a Slice layer learns a small
 * synthetic data set; both tasks' test accuracies must rise from chance to well above it. Also
 * task-wise early stopping through the solver: when it stops a task, and its configuration and
 * resume errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/rng.h"
#include "core/solver.h"

#define DIM 8
#define CLASSES 3
#define BATCH 32
#define TRAIN_N 1024
#define TEST_N 256

static const char *net_text =
    "name: 'two_tasks'\n"
    "layer { name: 'in' type: 'Input' top: 'data' top: 'label'\n"
    "  input_param { shape { dim: 32 dim: 8 } shape { dim: 32 dim: 2 } } }\n"
    "layer { name: 'slice' type: 'Slice' bottom: 'label' top: 'label_a' top: 'label_b'\n"
    "  slice_param { axis: 1 slice_point: 1 } }\n"
    "layer { name: 'trunk' type: 'InnerProduct' bottom: 'data' top: 'feat'\n"
    "  inner_product_param { num_output: 32 weight_filler { type: 'xavier' } } }\n"
    "layer { name: 'relu' type: 'ReLU' bottom: 'feat' top: 'feat' }\n"
    "layer { name: 'head_a' type: 'InnerProduct' bottom: 'feat' top: 'score_a'\n"
    "  inner_product_param { num_output: 3 weight_filler { type: 'xavier' } } }\n"
    "layer { name: 'head_b' type: 'InnerProduct' bottom: 'feat' top: 'score_b'\n"
    "  inner_product_param { num_output: 3 weight_filler { type: 'xavier' } } }\n"
    "layer { name: 'loss_a' type: 'SoftmaxWithLoss' bottom: 'score_a' bottom: 'label_a' top: 'loss_a'\n"
    "  loss_weight: 0.5 }\n"
    "layer { name: 'loss_b' type: 'SoftmaxWithLoss' bottom: 'score_b' bottom: 'label_b' top: 'loss_b'\n"
    "  loss_weight: 0.5 }\n"
    "layer { name: 'acc_a' type: 'Accuracy' bottom: 'score_a' bottom: 'label_a' top: 'acc_a'\n"
    "  include { phase: TEST } }\n"
    "layer { name: 'acc_b' type: 'Accuracy' bottom: 'score_b' bottom: 'label_b' top: 'acc_b'\n"
    "  include { phase: TEST } }\n";

typedef struct dataset {
    float x[TRAIN_N + TEST_N][DIM];
    float y[TRAIN_N + TEST_N][2];
} dataset;

/* Task a: which of three directions x points to most; task b: a band of a different projection. */
static void make_data(dataset *d)
{
    mtl_rng rng;
    mtl_rng_seed(&rng, 99);
    for (int i = 0; i < TRAIN_N + TEST_N; i++) {
        for (int k = 0; k < DIM; k++)
            d->x[i][k] = mtl_rng_gaussian(&rng, 0, 1);
        float a0 = d->x[i][0] + d->x[i][1], a1 = d->x[i][2] - d->x[i][3], a2 = d->x[i][4];
        d->y[i][0] = (float)(a0 > a1 ? (a0 > a2 ? 0 : 2) : (a1 > a2 ? 1 : 2));
        float p = d->x[i][5] - d->x[i][6] + 0.5f * d->x[i][7];
        d->y[i][1] = (float)(p < -0.5f ? 0 : p < 0.5f ? 1 : 2);
    }
}

static mtl_status feed(void *user, mtl_net *net, int test_net, int64_t iter, int64_t pass, mtl_error *err)
{
    dataset *d = user;
    mtl_tensor *data = mtl_net_blob(net, "data"), *label = mtl_net_blob(net, "label");
    if (!data || !label)
        return mtl_fail(err, MTL_ERR_NOT_FOUND, "no data/label blobs");
    int64_t start = test_net < 0 ? (iter * BATCH) % TRAIN_N : TRAIN_N + (pass * BATCH) % TEST_N;
    for (int b = 0; b < BATCH; b++) {
        memcpy(data->data + b * DIM, d->x[start + b], sizeof(d->x[0]));
        memcpy(label->data + b * 2, d->y[start + b], sizeof(d->y[0]));
    }
    return MTL_OK;
}

/* Task-wise early stopping: an auxiliary task whose validation loss stops improving (here: never by
 * the required 10) is switched off at the test after `patience` bad tests; the main task is not. */
static void test_early_stopping(dataset *d, const char *net)
{
    char solver_text[4096];
    snprintf(solver_text, sizeof(solver_text),
             "net_param { %s }\n"
             "base_lr: 0.1 momentum: 0.9 lr_policy: 'fixed'\n"
             "max_iter: 250 test_iter: 2 test_interval: 100 display: 0 snapshot_after_train: false\n"
             "task_early_stopping { patience: 1 min_delta: 10 auxiliary: 'loss_b' }\n",
             net);
    mtl_error err = {0};
    mtl_solver_options opts = {.feed = feed, .feed_user = d};
    mtl_solver *s = NULL;
    CHECK_OK(mtl_solver_from_string(solver_text, "/tmp", &opts, &s, &err), &err);
    if (!s)
        return;
    CHECK_OK(mtl_solver_solve(s, &err), &err);
    CHECK(s->early_stop != NULL);
    if (s->early_stop) {
        CHECK_INT(mtl_early_stop_stopped_at(s->early_stop, 1), 100);
        CHECK_INT(mtl_early_stop_stopped_at(s->early_stop, 0), -1);
        CHECK_NEAR(mtl_early_stop_multiplier(s->early_stop, 1), 0.0, 0);
        CHECK_NEAR(mtl_early_stop_multiplier(s->early_stop, 0), 1.0, 0);
    }
    mtl_solver_free(s);

    /* an auxiliary name that is not a task is an error at the config */
    snprintf(solver_text, sizeof(solver_text),
             "net_param { %s }\nbase_lr: 0.1 lr_policy: 'fixed' max_iter: 10 test_iter: 1 test_interval: 5\n"
             "task_early_stopping { patience: 1 auxiliary: 'loss_c' }\n",
             net);
    CHECK_FAILS(mtl_solver_from_string(solver_text, "/tmp", &opts, &s, &err), &err, MTL_ERR_CONFIG, "loss_c");
    mtl_solver_free(s);

    /* early stopping watches validation losses: without tests it has nothing to watch */
    snprintf(solver_text, sizeof(solver_text),
             "net_param { %s }\nbase_lr: 0.1 lr_policy: 'fixed' max_iter: 10\n"
             "task_early_stopping { patience: 1 auxiliary: 'loss_b' }\n",
             net);
    CHECK_FAILS(mtl_solver_from_string(solver_text, "/tmp", &opts, &s, &err), &err, MTL_ERR_CONFIG,
                "task_early_stopping needs a test net, test_interval > 0");
    mtl_solver_free(s);

    /* a run with early stopping cannot resume exactly from a snapshot without its record */
    char snap_dir[] = "/tmp/mtl_e2e_XXXXXX", snap_path[128];
    if (!mkdtemp(snap_dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    snprintf(snap_path, sizeof(snap_path), "%s/plain.mtlsnap", snap_dir);
    snprintf(solver_text, sizeof(solver_text),
             "net_param { %s }\nbase_lr: 0.1 lr_policy: 'fixed' max_iter: 10 test_iter: 1 test_interval: 5\n"
             "snapshot_after_train: false\n",
             net);
    CHECK_OK(mtl_solver_from_string(solver_text, snap_dir, &opts, &s, &err), &err);
    if (s) {
        CHECK_OK(mtl_solver_step(s, 2, &err), &err);
        CHECK_OK(mtl_solver_snapshot(s, snap_path, &err), &err);
        mtl_solver_free(s);
    }
    snprintf(solver_text, sizeof(solver_text),
             "net_param { %s }\nbase_lr: 0.1 lr_policy: 'fixed' max_iter: 10 test_iter: 1 test_interval: 5\n"
             "snapshot_after_train: false task_early_stopping { patience: 1 auxiliary: 'loss_b' }\n",
             net);
    CHECK_OK(mtl_solver_from_string(solver_text, snap_dir, &opts, &s, &err), &err);
    if (s) {
        CHECK_FAILS(mtl_solver_restore(s, snap_path, &err), &err, MTL_ERR_CONFIG,
                    "has no task-wise early stopping record");
        mtl_solver_free(s);
    }
    remove(snap_path);
    rmdir(snap_dir);
}

int main(void)
{
    dataset *d = malloc(sizeof(*d));
    if (!d)
        return 1;
    make_data(d);
    char solver_text[4096];
    /* the net is given inline: net_param { ... } */
    snprintf(solver_text, sizeof(solver_text),
             "net_param { %s }\n"
             "base_lr: 0.1 momentum: 0.9 lr_policy: 'fixed' weight_decay: 0.0001\n"
             "max_iter: 600 test_iter: 8 test_interval: 600 test_initialization: true\n"
             "display: 0 snapshot_after_train: false random_seed: 5\n",
             net_text);
    mtl_error err = {0};
    mtl_solver_options opts = {.feed = feed, .feed_user = d};
    mtl_solver *s = NULL;
    CHECK_OK(mtl_solver_from_string(solver_text, "/tmp", &opts, &s, &err), &err);
    if (s) {
        CHECK_OK(mtl_solver_test(s, &err), &err);
        double before_a = mtl_solver_test_value(s, 0, "acc_a"), before_b = mtl_solver_test_value(s, 0, "acc_b");
        CHECK_OK(mtl_solver_solve(s, &err), &err);
        double after_a = mtl_solver_test_value(s, 0, "acc_a"), after_b = mtl_solver_test_value(s, 0, "acc_b");
        printf("accuracy task a: %.3f -> %.3f, task b: %.3f -> %.3f\n", before_a, after_a, before_b, after_b);
        CHECK(before_a < 0.6);
        CHECK(before_b < 0.6);
        CHECK(after_a > 0.85);
        CHECK(after_b > 0.85);
        mtl_solver_free(s);
    }
    test_early_stopping(d, net_text);
    free(d);
    return check_finish();
}
