/* mtl plot: not written yet. */
#include "cli.h"

static const char plot_usage[] = "usage: mtl plot ...\n";

static int run_plot(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "mtl plot: not implemented yet\n");
    return CLI_FAILED;
}

const cli_command cli_plot = {"plot", "draw per-task curves from a JSON-lines training log", plot_usage, run_plot};
