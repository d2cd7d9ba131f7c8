/* A device-style program on the public API only: load a multi-task net (and weights when given),
 * feed one input, run it, and print each task head's output.
 *
 *   mtl_api_example NET.prototxt [WEIGHTS.mtlsnap] [OUTPUT_BLOB...]
 *
 * Without weights the net keeps its initial (filler) values, which is enough to check that a
 * deploy file loads and runs. The input is a fixed test pattern in every input blob. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtl/mtl.h"

static int fail(const char *what)
{
    fprintf(stderr, "mtl_api_example: %s: %s\n", what, mtl_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fprintf(argc < 2 ? stderr : stdout, "usage: mtl_api_example NET.prototxt [WEIGHTS.mtlsnap] [OUTPUT_BLOB...]\n");
        return argc < 2 ? 2 : 0;
    }
    mtl_net *net = NULL;
    if (mtl_net_open(argv[1], MTL_PHASE_TEST, &net) != MTL_OK)
        return fail("loading the net");
    int first_output = 2;
    if (argc > 2 && strstr(argv[2], ".mtlsnap")) {
        if (mtl_net_load_weights(net, argv[2]) != MTL_OK) {
            mtl_net_close(net);
            return fail("loading weights");
        }
        first_output = 3;
    }
    /* a test pattern in the input blob "data" */
    const float *current;
    int ndim, shape[8];
    if (mtl_net_get_output(net, "data", &current, &ndim, shape) != MTL_OK) {
        mtl_net_close(net);
        return fail("finding the input blob 'data'");
    }
    size_t count = 1;
    for (int i = 0; i < ndim; i++)
        count *= (size_t)shape[i];
    float *pattern = malloc(count * sizeof(float));
    if (!pattern) {
        mtl_net_close(net);
        fprintf(stderr, "mtl_api_example: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < count; i++)
        pattern[i] = (float)((i * 7919) % 256) / 255.0f;
    mtl_status st = mtl_net_set_input(net, "data", pattern, ndim, shape);
    free(pattern);
    if (st != MTL_OK || mtl_net_predict(net, NULL) != MTL_OK) {
        mtl_net_close(net);
        return fail("running the net");
    }
    printf("tasks in the graph: %d\n", mtl_net_num_tasks(net));
    for (int a = first_output; a < argc; a++) {
        const float *out;
        if (mtl_net_get_output(net, argv[a], &out, &ndim, shape) != MTL_OK) {
            mtl_net_close(net);
            return fail("reading an output");
        }
        int per_sample = 1;
        for (int i = 1; i < ndim; i++)
            per_sample *= shape[i];
        printf("%s (first sample):", argv[a]);
        for (int i = 0; i < per_sample && i < 16; i++)
            printf(" %.4f", out[i]);
        printf("\n");
    }
    mtl_net_close(net);
    return 0;
}
