/* mtl time: forward and backward time per layer and in total, as `caffe time` prints. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/net.h"
#include "mtl/mtl.h"

static const char time_usage[] =
    "usage: mtl time --model NET.prototxt [--iterations N] [--phase TRAIN|TEST] [--threads T]\n"
    "\n"
    "Runs N forward-backward passes (default 50) after one warm-up pass and prints the average\n"
    "forward and backward time of every layer and of the whole net. Input blobs hold zeros.\n";

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int run_time(int argc, char **argv)
{
    cli_option options[] = {{"model", 1, NULL}, {"iterations", 1, NULL}, {"phase", 1, NULL}, {"threads", 1, NULL}};
    const int n_opts = 4;
    const char *positional[1];
    int n_pos;
    int rc = cli_parse(&cli_time, argc, argv, options, n_opts, positional, 0, &n_pos);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    const char *model = cli_value(options, n_opts, "model");
    if (!model)
        return cli_usage_error(&cli_time, "--model is required");
    long iterations = 50;
    const char *it = cli_value(options, n_opts, "iterations"), *th = cli_value(options, n_opts, "threads");
    if (it && (iterations = cli_positive(&cli_time, "iterations", it)) < 0)
        return CLI_USAGE;
    if (th) {
        long threads = cli_positive(&cli_time, "threads", th);
        if (threads < 0)
            return CLI_USAGE;
        mtl_set_num_threads((int)threads);
    }
    const char *phase_text = cli_value(options, n_opts, "phase");
    mtl_phase phase = MTL_PHASE_TRAIN;
    if (phase_text && strcmp(phase_text, "TEST") == 0)
        phase = MTL_PHASE_TEST;
    else if (phase_text && strcmp(phase_text, "TRAIN") != 0)
        return cli_usage_error(&cli_time, "--phase is TRAIN or TEST, not '%s'", phase_text);

    mtl_error err = {0};
    mtl_net *net;
    mtl_net_options opts = {.phase = phase, .seed = 1701};
    if (mtl_net_from_file(model, &opts, &net, &err) != MTL_OK)
        return cli_fail(&err);
    double *fwd = calloc((size_t)net->n_layers + 1, sizeof(double));
    double *bwd = calloc((size_t)net->n_layers + 1, sizeof(double));
    if (!fwd || !bwd) {
        free(fwd);
        free(bwd);
        mtl_net_free(net);
        fprintf(stderr, "mtl: error: out of memory\n");
        return CLI_FAILED;
    }
    double loss;
    /* warm-up: allocations and first-touch happen here, not in the timings */
    if (mtl_net_forward(net, &loss, &err) != MTL_OK) {
        free(fwd);
        free(bwd);
        mtl_net_free(net);
        return cli_fail(&err);
    }
    mtl_net_backward(net);
    double total_fwd = 0, total_bwd = 0, start_all = now_ms();
    for (long k = 0; k < iterations; k++) {
        double t0 = now_ms();
        for (int i = 0; i < net->n_layers; i++) {
            mtl_layer *l = net->layers[i];
            double s = now_ms();
            if ((l->ops->reshape && l->ops->reshape(l, &err) != MTL_OK) || l->ops->forward(l, &err) != MTL_OK) {
                free(fwd);
                free(bwd);
                mtl_net_free(net);
                return cli_fail(&err);
            }
            fwd[i] += now_ms() - s;
        }
        double t1 = now_ms();
        mtl_net_seed_loss_grads(net, NULL);
        for (int i = net->n_layers - 1; i >= 0; i--) {
            if (!net->layer_needs_backward[i])
                continue;
            double s = now_ms();
            net->layers[i]->ops->backward(net->layers[i]);
            bwd[i] += now_ms() - s;
        }
        double t2 = now_ms();
        total_fwd += t1 - t0;
        total_bwd += t2 - t1;
    }
    double total_all = now_ms() - start_all;
    printf("Average time per layer (%ld iterations):\n", iterations);
    for (int i = 0; i < net->n_layers; i++) {
        printf("%24s   forward: %9.4f ms.\n", net->layers[i]->name, fwd[i] / (double)iterations);
        printf("%24s  backward: %9.4f ms.\n", net->layers[i]->name, bwd[i] / (double)iterations);
    }
    printf("Average Forward pass: %.4f ms.\n", total_fwd / (double)iterations);
    printf("Average Backward pass: %.4f ms.\n", total_bwd / (double)iterations);
    printf("Average Forward-Backward: %.4f ms.\n", total_all / (double)iterations);
    printf("Total Time: %.4f ms.\n", total_all);
    free(fwd);
    free(bwd);
    mtl_net_free(net);
    return CLI_OK;
}

const cli_command cli_time = {"time", "forward and backward time per layer", time_usage, run_time};
