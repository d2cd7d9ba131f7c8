/* Time per training iteration of several solvers (one per task-balancing method) in one process,
 * taking turns: each round runs `chunk` iterations of every solver in order, so that load changes on
 * a shared machine hit all of them alike. The first round warms up (data, caches) and is not
 * counted. Used by bench/balance.sh.
 *
 * Usage: balance_time [--threads N] [--rounds N] [--chunk N] SOLVER.prototxt...
 * Prints one line per solver: "<solver file> <median ms per iteration> <min ms per iteration>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/solver.h"
#include "mtl/mtl.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int threads = 0, rounds = 12, chunk = 10, first = 1;
    for (; first < argc && strncmp(argv[first], "--", 2) == 0; first += 2) {
        if (first + 1 >= argc) {
            fprintf(stderr, "balance_time: %s needs a value\n", argv[first]);
            return 2;
        }
        int v = atoi(argv[first + 1]);
        if (strcmp(argv[first], "--threads") == 0)
            threads = v;
        else if (strcmp(argv[first], "--rounds") == 0)
            rounds = v;
        else if (strcmp(argv[first], "--chunk") == 0)
            chunk = v;
        else {
            fprintf(stderr, "balance_time: unknown option %s\n", argv[first]);
            return 2;
        }
    }
    int n = argc - first;
    if (n <= 0 || rounds < 2 || chunk < 1) {
        fprintf(stderr, "usage: balance_time [--threads N] [--rounds N >= 2] [--chunk N] SOLVER.prototxt...\n");
        return 2;
    }
    if (threads > 0)
        mtl_set_num_threads(threads);
    mtl_solver **solvers = calloc((size_t)n, sizeof(*solvers));
    double *times = calloc((size_t)(n * rounds), sizeof(double));
    int rc = solvers && times ? 0 : 1;
    mtl_error err = {0};
    mtl_solver_options opts = {.max_iter = (int64_t)rounds * chunk};
    for (int i = 0; i < n && rc == 0; i++)
        if (mtl_solver_from_file(argv[first + i], &opts, &solvers[i], &err) != MTL_OK) {
            fprintf(stderr, "balance_time: %s\n", err.message);
            rc = 1;
        }
    for (int r = 0; r < rounds && rc == 0; r++)
        for (int i = 0; i < n && rc == 0; i++) {
            double t0 = now_ms();
            if (mtl_solver_step(solvers[i], chunk, &err) != MTL_OK) {
                fprintf(stderr, "balance_time: %s: %s\n", argv[first + i], err.message);
                rc = 1;
            }
            times[i * rounds + r] = (now_ms() - t0) / chunk;
        }
    for (int i = 0; i < n && rc == 0; i++) {
        double *t = times + i * rounds + 1; /* round 0 warms up */
        int m = rounds - 1;
        qsort(t, (size_t)m, sizeof(double), cmp_double);
        double median = m % 2 ? t[m / 2] : 0.5 * (t[m / 2 - 1] + t[m / 2]);
        printf("%s %.2f %.2f\n", argv[first + i], median, t[0]);
    }
    for (int i = 0; i < n && solvers; i++)
        mtl_solver_free(solvers[i]);
    free(solvers);
    free(times);
    return rc;
}
