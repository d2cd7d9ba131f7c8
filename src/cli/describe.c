/* mtl describe: each layer's output shape, parameters and FLOPs, and the task tree (shared trunk,
 * branch points, each task's head with its share of parameters and FLOPs). */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/net.h"

static const char describe_usage[] =
    "usage: mtl describe NET.prototxt [--phase TRAIN|TEST]\n"
    "\n"
    "Prints each layer's output shape, parameter count and forward FLOPs, then the multi-task\n"
    "structure computed from the graph: the shared trunk, where task branches leave it, and each\n"
    "task's head with its share of the parameters and FLOPs.\n";

static int64_t layer_flops(const mtl_layer *l)
{
    if (l->ops->flops)
        return l->ops->flops(l);
    int64_t n = 0;
    for (int t = 0; t < l->n_tops; t++)
        n += l->tops[t]->count;
    return n;
}

/* Parameters a layer owns (a shared parameter counts for the first layer that declares it). */
static int64_t layer_params(const mtl_net *net, int i)
{
    int64_t n = 0;
    for (int p = 0; p < net->layers[i]->n_params; p++) {
        const mtl_param_slot *s = &net->slots[net->layer_param_slot[i][p]];
        if (s->owner_layer == i && s->owner_index == p)
            n += s->count;
    }
    return n;
}

static void human(char *buf, size_t size, double v)
{
    if (v >= 1e9)
        snprintf(buf, size, "%.2fG", v / 1e9);
    else if (v >= 1e6)
        snprintf(buf, size, "%.2fM", v / 1e6);
    else if (v >= 1e4)
        snprintf(buf, size, "%.1fK", v / 1e3);
    else
        snprintf(buf, size, "%.0f", v);
}

static const char *role_name(const mtl_net *net, int i, char *buf, size_t size)
{
    int role = net->layer_role[i];
    if (role == MTL_ROLE_SHARED)
        return "shared";
    if (role == MTL_ROLE_NONE)
        return "-";
    snprintf(buf, size, "task %s", net->tasks[role].name);
    return buf;
}

static void print_group(const mtl_net *net, int role, int64_t total_params, int64_t total_flops,
                        const int64_t *params, const int64_t *flops)
{
    int64_t p = 0, f = 0;
    int printed = 0;
    printf("    layers:");
    for (int i = 0; i < net->n_layers; i++) {
        if (net->layer_role[i] != role || net->layer_is_auto_split[i])
            continue;
        printf("%s%s", printed++ ? ", " : " ", net->layers[i]->name);
        p += params[i];
        f += flops[i];
    }
    char pb[32], fb[32];
    human(pb, sizeof(pb), (double)p);
    human(fb, sizeof(fb), (double)f);
    printf("%s\n    parameters %s (%.1f%%), FLOPs %s (%.1f%%)\n", printed ? "" : " (none)", pb,
           total_params ? 100.0 * (double)p / (double)total_params : 0.0, fb,
           total_flops ? 100.0 * (double)f / (double)total_flops : 0.0);
}

static int run_describe(int argc, char **argv)
{
    cli_option options[] = {{"phase", 1, NULL}};
    const char *positional[1];
    int n_pos;
    int rc = cli_parse(&cli_describe, argc, argv, options, 1, positional, 1, &n_pos);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    if (n_pos != 1)
        return cli_usage_error(&cli_describe, "expected one NET.prototxt");
    const char *phase_text = cli_value(options, 1, "phase");
    mtl_phase phase = MTL_PHASE_TRAIN;
    if (phase_text && strcmp(phase_text, "TEST") == 0)
        phase = MTL_PHASE_TEST;
    else if (phase_text && strcmp(phase_text, "TRAIN") != 0)
        return cli_usage_error(&cli_describe, "--phase is TRAIN or TEST, not '%s'", phase_text);

    mtl_error err = {0};
    mtl_net *net;
    mtl_net_options opts = {.phase = phase, .seed = 1701};
    if (mtl_net_from_file(positional[0], &opts, &net, &err) != MTL_OK)
        return cli_fail(&err);

    int64_t *params = calloc((size_t)net->n_layers + 1, sizeof(int64_t));
    int64_t *flops = calloc((size_t)net->n_layers + 1, sizeof(int64_t));
    if (!params || !flops) {
        free(params);
        free(flops);
        mtl_net_free(net);
        fprintf(stderr, "mtl: error: out of memory\n");
        return CLI_FAILED;
    }
    int64_t total_params = 0, total_flops = 0;
    for (int i = 0; i < net->n_layers; i++) {
        params[i] = layer_params(net, i);
        flops[i] = layer_flops(net->layers[i]);
        total_params += params[i];
        total_flops += flops[i];
    }
    char pb[32], fb[32], role[256], shape[128];
    human(pb, sizeof(pb), (double)total_params);
    human(fb, sizeof(fb), (double)total_flops);
    printf("net '%s' (%s): %d layers, %s parameters, %s FLOPs per forward pass\n\n", net->name,
           phase == MTL_PHASE_TRAIN ? "TRAIN" : "TEST", net->n_layers, pb, fb);
    printf("%-24s %-24s %-20s %10s %10s  %s\n", "layer", "type", "output", "params", "FLOPs", "role");
    for (int i = 0; i < net->n_layers; i++) {
        mtl_layer *l = net->layers[i];
        human(pb, sizeof(pb), (double)params[i]);
        human(fb, sizeof(fb), (double)flops[i]);
        printf("%-24s %-24s %-20s %10s %10s  %s%s\n", l->name, l->ops->type,
               l->n_tops ? mtl_tensor_shape_str(l->tops[0], shape, sizeof(shape)) : "-", pb, fb,
               role_name(net, i, role, sizeof(role)), net->layer_is_auto_split[i] ? " (automatic split)" : "");
    }

    printf("\ntasks: %d\n", net->n_tasks);
    if (net->n_tasks > 0) {
        printf("  shared trunk\n");
        print_group(net, MTL_ROLE_SHARED, total_params, total_flops, params, flops);
        /* branch points: blobs written by the trunk and read by a task's own layers */
        printf("  branch points:");
        int any = 0;
        for (int i = 0; i < net->n_layers; i++) {
            if (net->layer_role[i] < 0)
                continue;
            for (int b = 0; b < net->layers[i]->n_bottoms; b++) {
                int producer = net->bottom_producer[i][b];
                if (producer < 0 || net->layer_role[producer] != MTL_ROLE_SHARED)
                    continue;
                const mtl_layer *p = net->layers[producer];
                const char *blob = net->layer_is_auto_split[producer] ? p->bottoms[0]->name
                                                                      : net->layers[i]->bottoms[b]->name;
                printf("%s'%s' -> %s (layer %s)", any++ ? ", " : " ", blob, net->tasks[net->layer_role[i]].name,
                       net->layers[i]->name);
            }
        }
        printf("%s\n", any ? "" : " (none: the tasks share no layers)");
        for (int t = 0; t < net->n_tasks; t++) {
            printf("  task %s (loss_weight %g)\n", net->tasks[t].name, net->tasks[t].weight);
            print_group(net, t, total_params, total_flops, params, flops);
        }
    }
    free(params);
    free(flops);
    mtl_net_free(net);
    return CLI_OK;
}

const cli_command cli_describe = {"describe", "layer shapes, parameters, FLOPs and the task tree of a net",
                                  describe_usage, run_describe};
