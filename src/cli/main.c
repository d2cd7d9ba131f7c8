/* The mtl command line: a table of subcommands, each in its own file. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const cli_command *const commands[] = {
    &cli_train,
    &cli_test,
    &cli_describe,
    &cli_time,
    &cli_convert,
    &cli_dataset,
    &cli_predict,
    &cli_plot,
    &cli_embed,
    &cli_verify,
    &cli_detect,
    &cli_evaluate_detections,
};

static void print_help(FILE *out)
{
    fprintf(out, "mtl: multi-task deep learning\n\nusage: mtl <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-20s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(out, "\n'mtl <command> --help' describes a command.\n");
}

const char *cli_value(const cli_option *options, int n_options, const char *name)
{
    for (int i = 0; i < n_options; i++)
        if (strcmp(options[i].name, name) == 0)
            return options[i].value;
    return NULL;
}

int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mtl %s: ", cmd->name);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\n%s", cmd->usage);
    return CLI_USAGE;
}

int cli_parse(const cli_command *cmd, int argc, char **argv, cli_option *options, int n_options,
              const char **positional, int max_positional, int *n_positional)
{
    *n_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(cmd->usage, stdout);
            return -1;
        }
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (*n_positional >= max_positional)
                return cli_usage_error(cmd, "unexpected argument '%s'", arg);
            positional[(*n_positional)++] = arg;
            continue;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        cli_option *opt = NULL;
        for (int k = 0; k < n_options; k++)
            if (strlen(options[k].name) == len && strncmp(options[k].name, name, len) == 0)
                opt = &options[k];
        if (!opt)
            return cli_usage_error(cmd, "unknown option '--%.*s'", (int)len, name);
        if (!opt->takes_value) {
            if (eq)
                return cli_usage_error(cmd, "option '--%s' takes no value", opt->name);
            opt->value = "1";
        } else if (eq) {
            opt->value = eq + 1;
        } else if (i + 1 < argc) {
            opt->value = argv[++i];
        } else {
            return cli_usage_error(cmd, "option '--%s' needs a value", opt->name);
        }
    }
    return 0;
}

long cli_positive(const cli_command *cmd, const char *name, const char *text)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v <= 0) {
        cli_usage_error(cmd, "--%s needs a positive integer, not '%s'", name, text);
        return -1;
    }
    return v;
}

int cli_fail(const mtl_error *err)
{
    fprintf(stderr, "mtl: error: %s\n", err->message);
    return CLI_FAILED;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_help(stderr);
        return CLI_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        print_help(stdout);
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i]->name) == 0)
            return commands[i]->run(argc - 1, argv + 1);
    fprintf(stderr, "mtl: unknown command '%s'\n\n", argv[1]);
    print_help(stderr);
    return CLI_USAGE;
}
