/* mtl predict: not written yet. */
#include "cli.h"

static const char predict_usage[] = "usage: mtl predict ...\n";

static int run_predict(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "mtl predict: not implemented yet\n");
    return CLI_FAILED;
}

const cli_command cli_predict = {"predict", "run a trained multi-task net on image files", predict_usage, run_predict};
