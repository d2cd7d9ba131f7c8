/* mtl dataset: builds the example data sets (MultiFashion, FashionDet, FashionPose, FashionVerify)
 * from Fashion-MNIST with the library's builders, showing progress and a summary. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "data/builders.h"
#include "data/fashion.h"

static const char dataset_usage[] =
    "usage: mtl dataset multifashion|fashiondet|fashionpose|fashionverify --out DIR [--seed N] [--source DIR]\n"
    "                   [--limit N]\n"
    "\n"
    "Builds a multi-task data set from Fashion-MNIST as PNG images plus list files, reproducibly from\n"
    "the seed (docs/datasets.md describes each set and its files):\n"
    "  multifashion   two overlapping items, labels left and right: DIR/{train,test}.txt\n"
    "  fashiondet     1-5 scaled items on a noisy 128x128 canvas: COCO JSON DIR/{train,test}.json\n"
    "  fashionpose    one rotated, scaled, mirrored item: 5 landmarks and 5 attributes per line\n"
    "  fashionverify  classes 0-5 for training, 6-9 unseen, 6000 test pairs in 10 folds: DIR/pairs.txt\n"
    "\n"
    "options:\n"
    "  --out DIR      output directory (created; list files of an earlier build are replaced)\n"
    "  --seed N       random seed, a non-negative integer (default 1)\n"
    "  --source DIR   Fashion-MNIST IDX files (default " MTL_FASHION_DEFAULT_DIR ",\n"
    "                 from Debian's dataset-fashion-mnist)\n"
    "  --limit N      at most N items per split, for quick runs (the first N of the full build)\n";

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct progress_state {
    int tty;
    double split_start;
    const char *split;
} progress_state;

static int show_progress(void *user, const char *split, int64_t done, int64_t total)
{
    progress_state *p = user;
    double now = now_seconds();
    if (done == 0 || !p->split || strcmp(p->split, split) != 0) {
        p->split = split;
        p->split_start = now;
    }
    double rate = now > p->split_start ? (double)done / (now - p->split_start) : 0.0;
    if (p->tty) {
        fprintf(stderr, "\r  %-5s %lld/%lld images (%.0f/s, ETA %.0f s)   ", split, (long long)done, (long long)total,
                rate, rate > 0 ? (double)(total - done) / rate : 0.0);
        if (done == total)
            fputc('\n', stderr);
    } else if (done == total) {
        fprintf(stderr, "  %-5s %lld images (%.0f/s)\n", split, (long long)total, rate);
    }
    fflush(stderr);
    return 0;
}

static void print_classes(const int64_t *per_class)
{
    printf("    classes:");
    for (int c = 0; c < MTL_FASHION_CLASSES; c++)
        printf(" %d:%lld", c, (long long)per_class[c]);
    printf("\n");
}

static void print_summary(mtl_dataset_kind kind, const char *out, uint64_t seed, const mtl_dataset_summary *s,
                          double seconds)
{
    static const char *const splits[2] = {"train", "test"};
    printf("%s: built in %s (seed %llu, %.1f s)\n", mtl_dataset_name(kind), out, (unsigned long long)seed, seconds);
    for (int k = 0; k < 2; k++) {
        switch (kind) {
        case MTL_DATASET_FASHIONDET:
            printf("  %-5s %lld images, %lld boxes (%.2f per image), %lld items dropped; "
                   "%s/%s.json\n",
                   splits[k], (long long)s->images[k], (long long)s->objects[k],
                   s->images[k] ? (double)s->objects[k] / (double)s->images[k] : 0.0, (long long)s->dropped[k], out,
                   splits[k]);
            break;
        default:
            printf("  %-5s %lld images; %s/%s.txt\n", splits[k], (long long)s->images[k], out, splits[k]);
            break;
        }
        print_classes(s->per_class[k]);
    }
    if (kind == MTL_DATASET_FASHIONVERIFY)
        printf("  pairs %lld (%lld same class, %lld different) in 10 folds; %s/pairs.txt\n", (long long)s->pairs,
               (long long)s->same_pairs, (long long)(s->pairs - s->same_pairs), out);
}

static int parse_seed(const char *text, uint64_t *seed)
{
    if (!text)
        return 0;
    char *end;
    if (*text < '0' || *text > '9')
        return cli_usage_error(&cli_dataset, "--seed needs a non-negative integer, not '%s'", text);
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (*end != '\0' || errno == ERANGE)
        return cli_usage_error(&cli_dataset, "--seed needs a non-negative integer, not '%s'", text);
    *seed = v;
    return 0;
}

static int run_dataset(int argc, char **argv)
{
    cli_option options[] = {{"out", 1, NULL}, {"seed", 1, NULL}, {"source", 1, NULL}, {"limit", 1, NULL}};
    const int n_opts = 4;
    const char *positional[1];
    int n_pos;
    int rc = cli_parse(&cli_dataset, argc, argv, options, n_opts, positional, 1, &n_pos);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    mtl_dataset_kind kind;
    if (n_pos != 1)
        return cli_usage_error(&cli_dataset, "name the data set: multifashion, fashiondet, fashionpose or "
                                             "fashionverify");
    if (mtl_dataset_from_name(positional[0], &kind) != 0)
        return cli_usage_error(&cli_dataset, "unknown data set '%s' (multifashion, fashiondet, fashionpose, "
                                             "fashionverify)", positional[0]);
    mtl_dataset_options opts = {.seed = 1, .stop_flag = &stop_requested};
    opts.out = cli_value(options, n_opts, "out");
    opts.source = cli_value(options, n_opts, "source");
    if (!opts.out || !*opts.out)
        return cli_usage_error(&cli_dataset, "--out DIR is required");
    if (parse_seed(cli_value(options, n_opts, "seed"), &opts.seed))
        return CLI_USAGE;
    const char *limit = cli_value(options, n_opts, "limit");
    if (limit && (opts.limit = cli_positive(&cli_dataset, "limit", limit)) < 0)
        return CLI_USAGE;

    progress_state progress = {.tty = isatty(STDERR_FILENO)};
    opts.progress = show_progress;
    opts.progress_user = &progress;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char limit_text[48] = "";
    if (opts.limit)
        snprintf(limit_text, sizeof(limit_text), ", at most %lld per split", (long long)opts.limit);
    fprintf(stderr, "mtl dataset %s: from %s into %s (seed %llu%s)\n", mtl_dataset_name(kind),
            opts.source ? opts.source : MTL_FASHION_DEFAULT_DIR, opts.out, (unsigned long long)opts.seed, limit_text);
    double start = now_seconds();
    mtl_error err = {0};
    mtl_dataset_summary summary;
    mtl_status st = mtl_dataset_build(kind, &opts, &summary, &err);
    if (progress.tty && st != MTL_OK)
        fputc('\n', stderr);
    if (st == MTL_ERR_INTERRUPTED) {
        fprintf(stderr, "mtl: %s\n", err.message);
        return CLI_INTERRUPTED;
    }
    if (st != MTL_OK)
        return cli_fail(&err);
    print_summary(kind, opts.out, opts.seed, &summary, now_seconds() - start);
    return CLI_OK;
}

const cli_command cli_dataset = {"dataset", "build the example data sets from Fashion-MNIST", dataset_usage,
                                 run_dataset};
