/* mtl convert: not written yet. */
#include "cli.h"

static const char convert_usage[] = "usage: mtl convert ...\n";

static int run_convert(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "mtl convert: not implemented yet\n");
    return CLI_FAILED;
}

const cli_command cli_convert = {"convert", "pack an image list with several labels per line into an LMDB", convert_usage, run_convert};
