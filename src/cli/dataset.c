/* mtl dataset: not written yet. */
#include "cli.h"

static const char dataset_usage[] = "usage: mtl dataset ...\n";

static int run_dataset(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "mtl dataset: not implemented yet\n");
    return CLI_FAILED;
}

const cli_command cli_dataset = {"dataset", "build the example data sets from Fashion-MNIST", dataset_usage, run_dataset};
