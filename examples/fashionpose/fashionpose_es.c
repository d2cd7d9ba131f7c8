/* Task-wise early stopping from outside the solver, until the solver runs it itself: trains a
 * solver prototxt that has a `task_early_stopping { ... }` message (src/balance/early_stop.h) by
 * stepping the solver one test interval at a time, feeding each validation test to the early
 * stopping record and switching a stopped task's loss off. Once `mtl train` reads the message,
 * `mtl train --solver SOLVER` does the same and this program can go.
 *
 *   fashionpose_es SOLVER.prototxt [LOG.jsonl]
 *
 * Threads follow OMP_NUM_THREADS. A stopped task's weight goes to 0 through the solver's task
 * balancer (mtl_balancer_set_multipliers, the hook task balancing keeps for early stopping) from
 * the iteration after the test on (the solver trains the tested iteration before this program
 * sees the test; inside the solver the stop can apply to that iteration already). The early
 * stopping record is not in the snapshots: no resume here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance/balance.h"
#include "balance/early_stop.h"
#include "core/solver.h"

/* The whole file, or NULL. */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *text = NULL;
    size_t n = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size >= 0 && fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)size + 1))) {
            n = fread(text, 1, (size_t)size, f);
            text[n] = '\0';
        }
    }
    fclose(f);
    return text;
}

/* Blanks the message whose name starts at (line, column) (1-based) up to its closing brace,
 * keeping newlines, so the solver reader never sees it and its errors keep their line numbers. */
static int blank_message(char *text, int line, int column)
{
    char *p = text;
    for (int l = 1; l < line && *p; p++)
        l += *p == '\n';
    p += column - 1;
    int depth = 0, seen_open = 0;
    char quote = 0;
    for (char *q = p; *q; q++) {
        char c = *q;
        if (quote) {
            if (c == '\\' && q[1])
                *q++ = ' ';
            else if (c == quote)
                quote = 0;
        } else if (c == '"' || c == '\'') {
            quote = c;
        } else if (c == '#') {
            while (*q && *q != '\n')
                *q++ = ' ';
            if (!*q)
                return 0;
            continue;
        } else if (c == '{') {
            depth++;
            seen_open = 1;
        } else if (c == '}') {
            depth--;
        }
        if (*q != '\n')
            *q = ' ';
        if (seen_open && depth == 0)
            return 1;
    }
    return 0;
}

static void say_line(FILE *log, const char *line)
{
    fprintf(log, "%s\n", line);
    fflush(log);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || strcmp(argv[1], "--help") == 0) {
        fprintf(argc < 2 ? stderr : stdout, "usage: fashionpose_es SOLVER.prototxt [LOG.jsonl]\n");
        return argc < 2 || argc > 3 ? 2 : 0;
    }
    const char *path = argv[1];
    mtl_error err = {0};
    mtl_cfg_node *root = NULL;
    char *text = read_text(path);
    if (!text) {
        fprintf(stderr, "fashionpose_es: cannot read '%s'\n", path);
        return 1;
    }
    mtl_early_stop_config cfg;
    int present = 0;
    mtl_status st = mtl_cfg_parse_file(path, &root, &err);
    if (st == MTL_OK)
        st = mtl_early_stop_read(root, &cfg, &present, &err);
    if (st == MTL_OK && !present)
        st = mtl_fail(&err, MTL_ERR_CONFIG, "'%s' has no task_early_stopping message", path);
    if (st == MTL_OK && !blank_message(text, cfg.where->line, cfg.where->column))
        st = mtl_fail(&err, MTL_ERR_CONFIG, "'%s': cannot find the end of task_early_stopping", path);

    char dir[4096] = ".";
    const char *slash = strrchr(path, '/');
    if (slash)
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    FILE *json = NULL;
    if (st == MTL_OK && argc > 2 && !(json = fopen(argv[2], "w")))
        st = mtl_fail(&err, MTL_ERR_IO, "cannot write '%s'", argv[2]);
    mtl_solver_options opts = {.log = stdout, .json = json};
    mtl_solver *s = NULL;
    if (st == MTL_OK)
        st = mtl_solver_from_string(text, dir, &opts, &s, &err);

    mtl_early_stop *es = NULL;
    mtl_net *net = s ? s->train_net : NULL;
    const char **names = net ? calloc((size_t)net->n_tasks + 1, sizeof(char *)) : NULL;
    double *values = net ? calloc((size_t)net->n_tasks + 1, sizeof(double)) : NULL;
    int *stopped = net ? calloc((size_t)net->n_tasks + 1, sizeof(int)) : NULL;
    if (st == MTL_OK && (!names || !values || !stopped))
        st = mtl_fail(&err, MTL_ERR_NOMEM, "out of memory");
    for (int t = 0; st == MTL_OK && t < net->n_tasks; t++)
        names[t] = net->tasks[t].name;
    if (st == MTL_OK)
        st = mtl_early_stop_create(&cfg, net->n_tasks, names, &es, &err);
    if (st == MTL_OK && (s->cfg.test_interval <= 0 || s->n_test_nets == 0))
        st = mtl_fail(&err, MTL_ERR_CONFIG, "task-wise early stopping needs tests: give test_interval and a test net");
    if (st == MTL_OK && !s->balancer)
        st = mtl_fail(&err, MTL_ERR_CONFIG, "the solver has no task balancer (it makes one for two or more tasks)");
    float *multipliers = net ? calloc((size_t)net->n_tasks + 1, sizeof(float)) : NULL;
    if (st == MTL_OK && !multipliers)
        st = mtl_fail(&err, MTL_ERR_NOMEM, "out of memory");

    const int64_t interval = st == MTL_OK ? s->cfg.test_interval : 0;
    while (st == MTL_OK && s->iter < s->cfg.max_iter) {
        /* the solver tests at the start of a step when iter is a multiple of test_interval: run
         * that one iteration, then look at the test before the rest of the interval */
        int64_t at = s->iter;
        int tested = at % interval == 0 && (at > 0 || s->cfg.test_initialization);
        int64_t n = tested ? 1 : interval - at % interval;
        if (n > s->cfg.max_iter - at)
            n = s->cfg.max_iter - at;
        if ((st = mtl_solver_step(s, n, &err)) != MTL_OK || !tested)
            continue;
        for (int t = 0; t < net->n_tasks; t++)
            values[t] = mtl_solver_test_value(s, 0, names[t]);
        if (mtl_early_stop_update(es, at, values, stopped) == 0)
            continue;
        for (int t = 0; t < net->n_tasks; t++) {
            if (!stopped[t])
                continue;
            char line[1024];
            mtl_early_stop_describe(es, t, line, sizeof(line));
            say_line(stdout, line);
            if (json) {
                fprintf(json, "{\"iter\":%lld,\"event\":\"task_stopped\",\"task\":\"%s\"}\n", (long long)at,
                        names[t]);
                fflush(json);
            }
        }
        mtl_early_stop_multipliers(es, multipliers);
        mtl_balancer_set_multipliers(s->balancer, multipliers);
    }
    if (st == MTL_OK)
        st = mtl_solver_solve(s, &err); /* at max_iter: the final snapshot and test */
    if (st == MTL_OK) {
        say_line(stdout, "task-wise early stopping at the end of training:");
        for (int t = 0; t < net->n_tasks; t++) {
            char line[1024];
            mtl_early_stop_describe(es, t, line, sizeof(line));
            fprintf(stdout, "    %s\n", line);
        }
    }
    mtl_early_stop_free(es);
    free(names);
    free(values);
    free(stopped);
    free(multipliers);
    mtl_solver_free(s);
    mtl_cfg_free(root);
    free(text);
    if (json)
        fclose(json);
    if (st != MTL_OK) {
        fprintf(stderr, "fashionpose_es: %s\n", err.message);
        return 1;
    }
    return 0;
}
