/* mtl side of the MultiLeNet benchmark: one training iteration (zero gradients, forward,
 * backward, SGD with momentum) of bench/multilenet.prototxt, timed; with --layers also the
 * convolution, pooling and inner product layers alone at the net's shapes, forward + backward,
 * as bench/multilenet_torch.py --layers times them.
 *
 * Usage: multilenet_mtl [--model PATH] [--threads N] [--iters N] [--warmup N] [--layers]
 * Prints one line per measurement: "<name> <median ms> <min ms>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/layer.h"
#include "core/net.h"
#include "core/update.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, double *times, int n)
{
    qsort(times, (size_t)n, sizeof(double), cmp_double);
    double median = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
    printf("%s %.3f %.3f\n", name, median, times[0]);
    fflush(stdout);
}

static int die(const mtl_error *err)
{
    fprintf(stderr, "multilenet_mtl: %s\n", err->message);
    return 1;
}

/* ---- the whole net ---- */

static int bench_net(const char *model, int iters, int warmup)
{
    mtl_error err = {0};
    mtl_net *net = NULL;
    mtl_net_options opts = {.phase = MTL_PHASE_TRAIN, .seed = 1};
    if (mtl_net_from_file(model, &opts, &net, &err) != MTL_OK)
        return die(&err);
    mtl_tensor *data = mtl_net_blob(net, "data"), *label = mtl_net_blob(net, "label");
    if (!data || !label) {
        fprintf(stderr, "multilenet_mtl: %s has no 'data' or 'label' blob\n", model);
        mtl_net_free(net);
        return 1;
    }
    mtl_rng rng;
    mtl_rng_seed(&rng, 2);
    for (int64_t i = 0; i < data->count; i++)
        data->data[i] = mtl_rng_uniform(&rng);
    for (int64_t i = 0; i < label->count; i++)
        label->data[i] = (float)mtl_rng_below(&rng, 10);

    /* SGD with momentum 0.9, as torch.optim.SGD(lr=0.01, momentum=0.9) on the other side */
    mtl_update_config sgd = {.type = MTL_UPDATE_SGD, .momentum = 0.9f};
    float *hist = calloc((size_t)net->n_param_values + 1, sizeof(float));
    double *times = calloc((size_t)iters, sizeof(double));
    int rc = 0;
    for (int it = 0; it < warmup + iters && rc == 0; it++) {
        double t0 = now_ms(), loss;
        mtl_net_zero_param_grad(net);
        if (mtl_net_forward(net, &loss, &err) != MTL_OK) {
            rc = die(&err);
            break;
        }
        mtl_net_backward(net);
        for (int s = 0; s < net->n_slots; s++) {
            const mtl_param_slot *slot = &net->slots[s];
            if (!slot->needs_grad)
                continue;
            mtl_update_step(&sgd, it, 0.01f * slot->lr_mult, 0.0f, net->param_data + slot->offset,
                            net->param_grad + slot->offset, hist + slot->offset, slot->count);
        }
        if (it >= warmup)
            times[it - warmup] = now_ms() - t0;
    }
    if (rc == 0)
        report("iteration", times, iters);
    free(times);
    free(hist);
    mtl_net_free(net);
    return rc;
}

/* ---- single layers ---- */

/* Times forward + backward of one standalone layer over a random bottom of the given shape. */
static int bench_layer(const char *name, const char *text, const int *shape, int propagate_down, int iters,
                       int warmup)
{
    mtl_error err = {0};
    mtl_cfg_node *root = NULL;
    if (mtl_cfg_parse_string(text, name, &root, &err) != MTL_OK)
        return die(&err);
    mtl_tensor *bottom = mtl_tensor_create("bottom"), *top = mtl_tensor_create("top");
    mtl_rng rng;
    mtl_rng_seed(&rng, 3);
    mtl_layer *l = NULL;
    int rc = 0;
    if (mtl_tensor_reshape(bottom, 4, shape, &err) != MTL_OK ||
        mtl_layer_create(root, MTL_PHASE_TRAIN, &bottom, 1, &top, 1, &rng, &l, &err) != MTL_OK) {
        rc = die(&err);
    } else {
        for (int64_t i = 0; i < bottom->count; i++)
            bottom->data[i] = mtl_rng_range(&rng, -1, 1);
        l->propagate_down[0] = propagate_down;
        double *times = calloc((size_t)iters * 3, sizeof(double));
        double *fwd = times + iters, *bwd = times + 2 * iters;
        for (int it = 0; it < warmup + iters; it++) {
            double t0 = now_ms();
            if (l->ops->reshape(l, &err) != MTL_OK || l->ops->forward(l, &err) != MTL_OK) {
                rc = die(&err);
                break;
            }
            double t1 = now_ms();
            if (it == 0)
                for (int64_t i = 0; i < top->count; i++)
                    top->grad[i] = mtl_rng_range(&rng, -1, 1);
            for (int p = 0; p < l->n_params; p++)
                mtl_tensor_zero_grad(l->params[p]);
            l->ops->backward(l);
            double t2 = now_ms();
            if (it >= warmup) {
                times[it - warmup] = t2 - t0;
                fwd[it - warmup] = t1 - t0;
                bwd[it - warmup] = t2 - t1;
            }
        }
        if (rc == 0) {
            char label[64];
            report(name, times, iters);
            snprintf(label, sizeof(label), "%s.forward", name);
            report(label, fwd, iters);
            snprintf(label, sizeof(label), "%s.backward", name);
            report(label, bwd, iters);
        }
        free(times);
    }
    mtl_layer_free(l);
    mtl_cfg_free(root);
    mtl_tensor_free(bottom);
    mtl_tensor_free(top);
    return rc;
}

static int bench_layers(int iters, int warmup)
{
    static const struct {
        const char *name, *text;
        int shape[4], propagate_down;
    } layers[] = {
        /* conv1 sees the data: no bottom gradient, as in the net */
        {"conv1",
         "type: 'Convolution' convolution_param { num_output: 10 kernel_size: 5 weight_filler { type: 'xavier' } }",
         {256, 1, 28, 28}, 0},
        {"conv2",
         "type: 'Convolution' convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: 'xavier' } }",
         {256, 10, 12, 12}, 1},
        {"pool1", "type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 }", {256, 10, 24, 24}, 1},
        {"pool2", "type: 'Pooling' pooling_param { pool: MAX kernel_size: 2 stride: 2 }", {256, 20, 8, 8}, 1},
        {"fc", "type: 'InnerProduct' inner_product_param { num_output: 50 weight_filler { type: 'xavier' } }",
         {256, 320, 1, 1}, 1},
    };
    for (size_t i = 0; i < sizeof(layers) / sizeof(layers[0]); i++)
        if (bench_layer(layers[i].name, layers[i].text, layers[i].shape, layers[i].propagate_down, iters, warmup))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    const char *model = "bench/multilenet.prototxt";
    int threads = 1, iters = 50, warmup = 10, layers = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            model = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc)
            warmup = atoi(argv[++i]);
        else if (strcmp(argv[i], "--layers") == 0)
            layers = 1;
        else {
            fprintf(stderr, "usage: %s [--model PATH] [--threads N] [--iters N] [--warmup N] [--layers]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1 || iters < 1 || warmup < 0) {
        fprintf(stderr, "multilenet_mtl: --threads and --iters must be positive\n");
        return 2;
    }
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    int rc = bench_net(model, iters, warmup);
    if (rc == 0 && layers)
        rc = bench_layers(iters, warmup);
    return rc;
}
