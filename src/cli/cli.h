/* Shared pieces of the mtl command line: the command table entry, option parsing, exit codes.
 * Only the CLI prints and exits; it reaches the engine through the library. */
#ifndef MTL_CLI_CLI_H
#define MTL_CLI_CLI_H

#include <stdio.h>

#include "core/error.h"

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2, CLI_INTERRUPTED = 130 };

typedef struct cli_command {
    const char *name;
    const char *summary;
    const char *usage; /* full usage text, printed by --help and on bad arguments */
    int (*run)(int argc, char **argv);
} cli_command;

/* Options: "--name value" or "--name=value"; flags take no value. */
typedef struct cli_option {
    const char *name;  /* without dashes */
    int takes_value;
    const char *value; /* set when given (flags: "1") */
} cli_option;

/* Parses argv[1..] into options and positional arguments. Returns 0, or prints the problem and
 * the usage to stderr and returns CLI_USAGE; --help prints usage to stdout and returns -1. */
int cli_parse(const cli_command *cmd, int argc, char **argv, cli_option *options, int n_options,
              const char **positional, int max_positional, int *n_positional);
/* The value of an option, or NULL. */
const char *cli_value(const cli_option *options, int n_options, const char *name);
/* Parses a positive integer option; prints an error and returns -1 when invalid. */
long cli_positive(const cli_command *cmd, const char *name, const char *text);

int cli_fail(const mtl_error *err);   /* prints "mtl: error: ..." and returns CLI_FAILED */
int cli_usage_error(const cli_command *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

extern const cli_command cli_train, cli_test, cli_describe, cli_time, cli_convert, cli_dataset, cli_predict, cli_plot;
extern const cli_command cli_embed, cli_verify, cli_detect, cli_evaluate_detections;

#endif
