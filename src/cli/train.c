/* mtl train and mtl test: training from a solver prototxt (with resume, fine-tuning and a JSON log)
 * and testing a trained net, averaging every output per task. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/snapshot.h"
#include "core/solver.h"
#include "mtl/mtl.h"

static const char train_usage[] =
    "usage: mtl train --solver SOLVER.prototxt [--resume SNAPSHOT | --weights SNAPSHOT]\n"
    "                 [--log LOG.jsonl] [--threads T] [--max-iter N]\n"
    "\n"
    "Trains the net of a solver prototxt. Displays the iteration, learning rate, total loss and\n"
    "each task's loss with its weight; tests at test_interval; snapshots at `snapshot` intervals,\n"
    "at the end, and on Ctrl-C (then exits 130).\n"
    "  --resume F   continue exactly from a snapshot (weights and solver state)\n"
    "  --weights F  initialise from a snapshot by layer name (fine-tuning); reports what matched\n"
    "  --log F      write every reported number as JSON lines to F\n"
    "  --threads T  threads for the layers (default: all cores)\n"
    "  --max-iter N stop at iteration N instead of the solver's max_iter\n";

static const char test_usage[] =
    "usage: mtl test --model NET.prototxt --weights SNAPSHOT [--iterations N] [--threads T]\n"
    "\n"
    "Runs N forward passes (default 50) of the TEST phase of a net with trained weights and prints\n"
    "the mean of every output: each task's loss (with its weight) and each metric.\n";

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int set_threads(const cli_command *cmd, const char *text)
{
    if (!text)
        return 0;
    long threads = cli_positive(cmd, "threads", text);
    if (threads < 0)
        return -1;
    mtl_set_num_threads((int)threads);
    return 0;
}

static int run_train(int argc, char **argv)
{
    cli_option options[] = {{"solver", 1, NULL}, {"resume", 1, NULL}, {"weights", 1, NULL},
                            {"log", 1, NULL},    {"threads", 1, NULL}, {"max-iter", 1, NULL}};
    const int n_opts = 6;
    const char *positional[1];
    int n_pos;
    int rc = cli_parse(&cli_train, argc, argv, options, n_opts, positional, 0, &n_pos);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    const char *solver_path = cli_value(options, n_opts, "solver");
    const char *resume = cli_value(options, n_opts, "resume"), *weights = cli_value(options, n_opts, "weights");
    const char *log_path = cli_value(options, n_opts, "log"), *max_iter = cli_value(options, n_opts, "max-iter");
    if (!solver_path)
        return cli_usage_error(&cli_train, "--solver is required");
    if (resume && weights)
        return cli_usage_error(&cli_train, "give --resume or --weights, not both");
    if (set_threads(&cli_train, cli_value(options, n_opts, "threads")) < 0)
        return CLI_USAGE;
    long max_iter_value = 0;
    if (max_iter && (max_iter_value = cli_positive(&cli_train, "max-iter", max_iter)) < 0)
        return CLI_USAGE;

    mtl_error err = {0};
    FILE *json = NULL;
    if (log_path && !(json = fopen(log_path, "w"))) {
        mtl_fail(&err, MTL_ERR_IO, "cannot write the log '%s'", log_path);
        return cli_fail(&err);
    }
    mtl_solver_options opts = {.log = stdout, .json = json, .stop_flag = &stop_requested,
                               .max_iter = max_iter_value};
    mtl_solver *solver = NULL;
    mtl_status st = mtl_solver_from_file(solver_path, &opts, &solver, &err);
    if (st == MTL_OK && resume)
        st = mtl_solver_restore(solver, resume, &err);
    if (st == MTL_OK && weights)
        st = mtl_solver_load_weights(solver, weights, stdout, &err);
    if (st == MTL_OK) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        st = mtl_solver_solve(solver, &err);
    }
    mtl_solver_free(solver);
    if (json)
        fclose(json);
    if (st == MTL_ERR_INTERRUPTED) {
        fprintf(stderr, "mtl: %s\n", err.message);
        return CLI_INTERRUPTED;
    }
    return st == MTL_OK ? CLI_OK : cli_fail(&err);
}

static int run_test(int argc, char **argv)
{
    cli_option options[] = {{"model", 1, NULL}, {"weights", 1, NULL}, {"iterations", 1, NULL}, {"threads", 1, NULL}};
    const int n_opts = 4;
    const char *positional[1];
    int n_pos;
    int rc = cli_parse(&cli_test, argc, argv, options, n_opts, positional, 0, &n_pos);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    const char *model = cli_value(options, n_opts, "model"), *weights = cli_value(options, n_opts, "weights");
    if (!model || !weights)
        return cli_usage_error(&cli_test, "--model and --weights are required");
    long iterations = 50;
    const char *it = cli_value(options, n_opts, "iterations");
    if (it && (iterations = cli_positive(&cli_test, "iterations", it)) < 0)
        return CLI_USAGE;
    if (set_threads(&cli_test, cli_value(options, n_opts, "threads")) < 0)
        return CLI_USAGE;

    mtl_error err = {0};
    mtl_net *net = NULL;
    mtl_snapshot *snap = NULL;
    mtl_net_options opts = {.phase = MTL_PHASE_TEST, .seed = MTL_SOLVER_DEFAULT_SEED};
    mtl_status st = mtl_net_from_file(model, &opts, &net, &err);
    if (st == MTL_OK)
        st = mtl_snapshot_read(weights, &snap, &err);
    if (st == MTL_OK)
        st = mtl_snapshot_load_weights(snap, net, NULL, NULL, &err);
    mtl_snapshot_free(snap);
    /* the mean of every value of every output blob and loss top */
    int64_t n_values = 0;
    for (int k = 0; st == MTL_OK && k < net->n_outputs; k++)
        n_values += net->blobs[net->output_blobs[k]]->count;
    double *sums = st == MTL_OK ? calloc((size_t)n_values + 1, sizeof(double)) : NULL;
    if (st == MTL_OK && !sums)
        st = mtl_fail(&err, MTL_ERR_NOMEM, "out of memory");
    double loss_sum = 0;
    for (long i = 0; st == MTL_OK && i < iterations; i++) {
        double loss;
        st = mtl_net_forward(net, &loss, &err);
        if (st != MTL_OK)
            mtl_error_prefix(&err, "test iteration %ld: ", i);
        loss_sum += loss;
        int64_t v = 0;
        for (int k = 0; st == MTL_OK && k < net->n_outputs; k++) {
            mtl_tensor *t = net->blobs[net->output_blobs[k]];
            for (int64_t j = 0; j < t->count; j++)
                sums[v++] += t->data[j];
        }
    }
    if (st == MTL_OK) {
        int64_t v = 0;
        for (int k = 0; k < net->n_outputs; k++) {
            mtl_tensor *t = net->blobs[net->output_blobs[k]];
            float weight = 0;
            for (int task = 0; task < net->n_tasks; task++)
                if (strcmp(net->tasks[task].name, t->name) == 0)
                    weight = net->tasks[task].weight;
            for (int64_t j = 0; j < t->count; j++, v++) {
                double mean = sums[v] / (double)iterations;
                if (weight != 0.0f)
                    printf("%s = %.6g (* %g = %.6g loss)\n", t->name, mean, weight, mean * weight);
                else if (t->count == 1)
                    printf("%s = %.6g\n", t->name, mean);
                else
                    printf("%s[%lld] = %.6g\n", t->name, (long long)j, mean);
            }
        }
        printf("loss = %.6g\n", loss_sum / (double)iterations);
    }
    free(sums);
    mtl_net_free(net);
    return st == MTL_OK ? CLI_OK : cli_fail(&err);
}

const cli_command cli_train = {"train", "train a net from a solver prototxt", train_usage, run_train};
const cli_command cli_test = {"test", "average a trained net's outputs over N passes", test_usage, run_test};
