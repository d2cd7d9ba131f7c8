/* The mtl command line: dispatches subcommands. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fprintf(argc < 2 ? stderr : stdout, "usage: mtl <command> [options]\n");
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "mtl: unknown command '%s'\n", argv[1]);
    return 2;
}
