/* mtl verify: open-set verification from the embeddings `mtl embed` wrote: scores a pair list, reports
 * k-fold verification accuracy (the LFW protocol), ROC AUC and retrieval recall@k over the labelled
 * embeddings, as text or JSON. The metrics themselves are in eval/verify.h. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/file.h"
#include "eval/verify.h"

static const char verify_usage[] =
    "usage: mtl verify --embeddings FILE[,FILE...] --pairs PAIRS [--metric cosine|euclidean] [--folds K]\n"
    "                  [--recall K1,K2,...] [--json]\n"
    "\n"
    "Scores the image pairs of PAIRS with embeddings written by 'mtl embed' (several files are joined;\n"
    "their dimensions must agree and their names must differ) and reports:\n"
    "  verification accuracy  the mean and standard deviation over K folds (default 10) of each fold's\n"
    "                         accuracy at the threshold best on the other K-1 folds (LFW's protocol)\n"
    "  ROC AUC                over all pairs\n"
    "  recall@k               over every labelled embedding: the fraction whose k most similar other\n"
    "                         embeddings include one of its label (default k = 1,5)\n"
    "\n"
    "PAIRS has one pair per line: 'fold name1 name2 same' as 'mtl dataset fashionverify' writes its\n"
    "pairs.txt (fold 0..K-1; same 1 for one identity, 0 for two), or 'name1 name2 same' (folds are\n"
    "then K contiguous blocks in list order). Names are the image names in the embeddings (the paths\n"
    "as the list given to 'mtl embed' wrote them). Blank lines and lines starting with '#' are skipped.\n"
    "\n"
    "  --metric M   cosine (default) or euclidean (the score is minus the distance)\n"
    "  --json       print one JSON object instead of text (a threshold of minus infinity, every pair\n"
    "               called 'same', is null there)\n";

#define MAX_KS 16

/* Embeddings of one or more MTLEMB1 files, joined. */
typedef struct embedding_set {
    int64_t n, dim;
    float *values;    /* [n][dim] */
    float *labels;    /* [n], NaN: none */
    char **names;     /* [n] */
    int64_t *by_name; /* [n] indices sorted by name */
} embedding_set;

static void set_free(embedding_set *s)
{
    for (int64_t k = 0; s->names && k < s->n; k++)
        free(s->names[k]);
    free(s->names);
    free(s->values);
    free(s->labels);
    free(s->by_name);
}

static mtl_status read_file(const char *path, uint8_t **out, size_t *size, mtl_error *err)
{
    char *text;
    MTL_TRY(mtl_read_file(path, NULL, 0, &text, size, err));
    *out = (uint8_t *)text;
    return MTL_OK;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void get_floats(const uint8_t *p, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = get_u32(p + 4 * i);
        memcpy(&dst[i], &bits, sizeof(float));
    }
}

/* Appends the embeddings of one MTLEMB1 file (layout: 'mtl embed --help') to s. */
static mtl_status load_embeddings(embedding_set *s, const char *path, const char *first_path, mtl_error *err)
{
    uint8_t *b = NULL;
    size_t size = 0;
    MTL_TRY(read_file(path, &b, &size, err));
    mtl_status st = MTL_OK;
    uint64_t n = 0, dim = 0;
    if (size < 16 || memcmp(b, "MTLEMB1", 8) != 0)
        st = mtl_fail(err, MTL_ERR_CORRUPT, "'%s' is not an embeddings file of 'mtl embed' (no MTLEMB1 header)", path);
    if (st == MTL_OK) {
        n = get_u32(b + 8);
        dim = get_u32(b + 12);
        if (n == 0 || dim == 0)
            st = mtl_fail(err, MTL_ERR_ARGUMENT, "'%s' is empty: %llu embeddings of %llu values", path,
                          (unsigned long long)n, (unsigned long long)dim);
        else if (s->n > 0 && (int64_t)dim != s->dim)
            st = mtl_fail(err, MTL_ERR_SHAPE, "'%s' holds embeddings of %llu values but '%s' of %lld: files joined "
                          "by --embeddings must come from the same feature", path, (unsigned long long)dim,
                          first_path, (long long)s->dim);
        else if (16 + 4 * (n * dim + n) > size)
            st = mtl_fail(err, MTL_ERR_CORRUPT, "'%s' is truncated: %llu embeddings of %llu values need %llu bytes, "
                          "the file has %zu", path, (unsigned long long)n, (unsigned long long)dim,
                          (unsigned long long)(16 + 4 * (n * dim + n)), size);
    }
    int64_t total = s->n + (int64_t)n;
    if (st == MTL_OK) {
        float *values = realloc(s->values, (size_t)total * (size_t)dim * sizeof(float));
        if (values)
            s->values = values;
        float *labels = realloc(s->labels, (size_t)total * sizeof(float));
        if (labels)
            s->labels = labels;
        char **names = realloc(s->names, (size_t)total * sizeof(char *));
        if (names)
            s->names = names;
        if (!values || !labels || !names)
            st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", path);
    }
    if (st == MTL_OK) {
        s->dim = (int64_t)dim;
        get_floats(b + 16, s->values + s->n * s->dim, (size_t)(n * dim));
        get_floats(b + 16 + 4 * n * dim, s->labels + s->n, (size_t)n);
        size_t at = 16 + 4 * (n * dim + n);
        for (uint64_t k = 0; k < n; k++) {
            uint32_t len = at + 4 <= size ? get_u32(b + at) : 0;
            if (at + 4 > size || len > size - at - 4) {
                st = mtl_fail(err, MTL_ERR_CORRUPT, "'%s' is truncated in the name of embedding %llu", path,
                              (unsigned long long)k);
                break;
            }
            char *name = malloc(len + 1);
            if (!name) {
                st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", path);
                break;
            }
            memcpy(name, b + at + 4, len);
            name[len] = '\0';
            s->names[s->n++] = name;
            at += 4 + len;
        }
        if (st == MTL_OK && at != size)
            st = mtl_fail(err, MTL_ERR_CORRUPT, "'%s' has %zu bytes after its last name", path, size - at);
    }
    free(b);
    return st;
}

static const embedding_set *sort_set; /* qsort has no context argument in C11 */

static int compare_names(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    int c = strcmp(sort_set->names[x], sort_set->names[y]);
    return c ? c : (x > y) - (x < y);
}

/* Sorts the names for lookup; a name given twice would make pairs ambiguous. */
static mtl_status index_names(embedding_set *s, mtl_error *err)
{
    if (!(s->by_name = malloc((size_t)s->n * sizeof(int64_t))))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int64_t k = 0; k < s->n; k++)
        s->by_name[k] = k;
    sort_set = s;
    qsort(s->by_name, (size_t)s->n, sizeof(int64_t), compare_names);
    for (int64_t k = 1; k < s->n; k++)
        if (strcmp(s->names[s->by_name[k - 1]], s->names[s->by_name[k]]) == 0)
            return mtl_fail(err, MTL_ERR_ARGUMENT, "image '%s' has two embeddings (numbers %lld and %lld of the "
                            "joined files): pairs naming it would be ambiguous", s->names[s->by_name[k]],
                            (long long)s->by_name[k - 1], (long long)s->by_name[k]);
    return MTL_OK;
}

static int64_t find_name(const embedding_set *s, const char *name)
{
    int64_t lo = 0, hi = s->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->names[s->by_name[mid]], name);
        if (c == 0)
            return s->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* The pairs of a pair list, as embedding indices. */
typedef struct pair_list {
    int64_t n;
    int64_t *a, *b;
    uint8_t *same;
    int *fold;       /* NULL: the list has no fold column */
} pair_list;

static void pairs_free(pair_list *p)
{
    free(p->a);
    free(p->b);
    free(p->same);
    free(p->fold);
}

static int parse_long(const char *text, long *out)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static mtl_status load_pairs(pair_list *p, const char *path, const embedding_set *s, int n_folds, mtl_error *err)
{
    uint8_t *bytes = NULL;
    size_t size = 0;
    MTL_TRY(read_file(path, &bytes, &size, err));
    char *text = realloc(bytes, size + 1);
    if (!text) {
        free(bytes);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", path);
    }
    text[size] = '\0';
    int64_t cap = 1;
    for (size_t i = 0; i < size; i++)
        cap += text[i] == '\n';
    p->a = malloc((size_t)cap * sizeof(int64_t));
    p->b = malloc((size_t)cap * sizeof(int64_t));
    p->same = malloc((size_t)cap);
    p->fold = malloc((size_t)cap * sizeof(int));
    mtl_status st = p->a && p->b && p->same && p->fold ? MTL_OK : mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    int columns = 0, first_line = 0;
    char *line = text;
    for (int line_no = 1; st == MTL_OK && line; line_no++) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *tokens[5], *save = NULL;
        int n = 0;
        for (char *t = strtok_r(line, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save))
            if (n < 5)
                tokens[n++] = t;
            else
                n++;
        line = next;
        if (n == 0 || tokens[0][0] == '#')
            continue;
        if (n != 3 && n != 4) {
            st = mtl_fail(err, MTL_ERR_PARSE, "%s:%d: %d fields; a pair is 'fold name1 name2 same' or 'name1 name2 "
                          "same'", path, line_no, n);
            break;
        }
        if (!columns) {
            columns = n;
            first_line = line_no;
        } else if (n != columns) {
            st = mtl_fail(err, MTL_ERR_PARSE, "%s:%d: %d fields, but line %d has %d: give every pair a fold or none",
                          path, line_no, n, first_line, columns);
            break;
        }
        char **f = n == 4 ? tokens + 1 : tokens;
        long fold = 0, same;
        if (n == 4 && (parse_long(tokens[0], &fold) != 0 || fold < 0 || fold >= n_folds)) {
            st = mtl_fail(err, MTL_ERR_PARSE, "%s:%d: fold '%s' is not a number in 0..%d (--folds %d)", path, line_no,
                          tokens[0], n_folds - 1, n_folds);
            break;
        }
        if (parse_long(f[2], &same) != 0 || (same != 0 && same != 1)) {
            st = mtl_fail(err, MTL_ERR_PARSE, "%s:%d: '%s' is not 1 (same identity) or 0 (different)", path, line_no,
                          f[2]);
            break;
        }
        int64_t a = find_name(s, f[0]), b = a >= 0 ? find_name(s, f[1]) : -1;
        if (a < 0 || b < 0) {
            st = mtl_fail(err, MTL_ERR_NOT_FOUND, "%s:%d: image '%s' has no embedding (the embeddings name %lld "
                          "images, for example '%s'; names must match the paths of the list given to 'mtl embed')",
                          path, line_no, a < 0 ? f[0] : f[1], (long long)s->n, s->names[0]);
            break;
        }
        p->a[p->n] = a;
        p->b[p->n] = b;
        p->same[p->n] = (uint8_t)same;
        p->fold[p->n] = (int)fold;
        p->n++;
    }
    free(text);
    if (st == MTL_OK && p->n == 0)
        st = mtl_fail(err, MTL_ERR_ARGUMENT, "'%s' lists no pairs", path);
    if (st == MTL_OK && columns == 3) {
        free(p->fold);
        p->fold = NULL;
    }
    return st;
}

static mtl_status parse_ks(const char *text, int *ks, int *n_ks)
{
    *n_ks = 0;
    const char *c = text;
    while (*c) {
        char *end;
        long k = strtol(c, &end, 10);
        if (end == c || k < 1 || k > 1000000 || *n_ks == MAX_KS || (*end != ',' && *end != '\0'))
            return MTL_ERR_ARGUMENT;
        ks[(*n_ks)++] = (int)k;
        c = *end == ',' ? end + 1 : end;
        if (*end == ',' && *c == '\0')
            return MTL_ERR_ARGUMENT;
    }
    return *n_ks > 0 ? MTL_OK : MTL_ERR_ARGUMENT;
}

static void print_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

typedef struct verify_report {
    const char *metric;
    int64_t same, labelled;
    mtl_verify_folds folds;
    double auc;
    int n_ks, has_recall;
    int ks[MAX_KS];
    double recall[MAX_KS];
} verify_report;

static void print_report(const verify_report *r, const embedding_set *s, const pair_list *p, int json)
{
    if (json) {
        printf("{\"embeddings\":%lld,\"dim\":%lld,\"labelled\":%lld,\"metric\":", (long long)s->n, (long long)s->dim,
               (long long)r->labelled);
        print_json_string(r->metric);
        printf(",\"pairs\":%lld,\"same\":%lld,\"different\":%lld,\"folds\":%d,", (long long)p->n, (long long)r->same,
               (long long)(p->n - r->same), r->folds.n_folds);
        printf("\"accuracy\":{\"mean\":%.6f,\"std\":%.6f,\"per_fold\":[", r->folds.mean, r->folds.std);
        for (int f = 0; f < r->folds.n_folds; f++)
            printf("%s%.6f", f ? "," : "", r->folds.accuracy[f]);
        printf("],\"thresholds\":[");
        for (int f = 0; f < r->folds.n_folds; f++) /* -infinity (every pair "same") has no JSON number */
            if (isfinite(r->folds.threshold[f]))
                printf("%s%.9g", f ? "," : "", r->folds.threshold[f]);
            else
                printf("%snull", f ? "," : "");
        printf("]},\"auc\":%.6f,\"recall\":", r->auc);
        if (!r->has_recall) {
            printf("null}\n");
            return;
        }
        putchar('{');
        for (int i = 0; i < r->n_ks; i++)
            printf("%s\"%d\":%.6f", i ? "," : "", r->ks[i], r->recall[i]);
        printf("}}\n");
        return;
    }
    printf("%lld embeddings of %lld values (%lld labelled); %lld pairs (%lld same, %lld different) in %d folds; "
           "metric %s\n", (long long)s->n, (long long)s->dim, (long long)r->labelled, (long long)p->n,
           (long long)r->same, (long long)(p->n - r->same), r->folds.n_folds, r->metric);
    printf("verification accuracy  %.4f +/- %.4f  (per fold, threshold chosen on the other %d folds)\n",
           r->folds.mean, r->folds.std, r->folds.n_folds - 1);
    printf("ROC AUC                %.4f\n", r->auc);
    if (!r->has_recall) {
        printf("recall@k               none: no embedding has a label\n");
        return;
    }
    for (int i = 0; i < r->n_ks; i++) {
        char name[32];
        snprintf(name, sizeof(name), "recall@%d", r->ks[i]);
        printf("%-22s %.4f%s\n", name, r->recall[i], i == 0 ? "  (every labelled embedding queries the others)" : "");
    }
}

static mtl_status verify(const char *files, const char *pairs_path, mtl_similarity kind, verify_report *r, int json,
                         mtl_error *err)
{
    embedding_set s = {0};
    pair_list p = {0};
    float *scores = NULL, *a = NULL, *b = NULL;
    mtl_status st = MTL_OK;
    char *list = mtl_strdup(files), *save = NULL, *first = NULL;
    if (!list)
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (char *f = list ? strtok_r(list, ",", &save) : NULL; st == MTL_OK && f; f = strtok_r(NULL, ",", &save)) {
        st = load_embeddings(&s, f, first ? first : f, err);
        first = first ? first : f;
    }
    if (st == MTL_OK && s.n == 0)
        st = mtl_fail(err, MTL_ERR_ARGUMENT, "--embeddings names no file");
    if (st == MTL_OK)
        st = index_names(&s, err);
    if (st == MTL_OK)
        st = load_pairs(&p, pairs_path, &s, r->folds.n_folds, err);
    if (st == MTL_OK) {
        scores = malloc((size_t)p.n * sizeof(float));
        a = malloc((size_t)p.n * (size_t)s.dim * sizeof(float));
        b = malloc((size_t)p.n * (size_t)s.dim * sizeof(float));
        if (!scores || !a || !b)
            st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory for %lld pairs", (long long)p.n);
    }
    if (st == MTL_OK) {
        for (int64_t i = 0; i < p.n; i++) {
            memcpy(a + i * s.dim, s.values + p.a[i] * s.dim, (size_t)s.dim * sizeof(float));
            memcpy(b + i * s.dim, s.values + p.b[i] * s.dim, (size_t)s.dim * sizeof(float));
            r->same += p.same[i];
        }
        mtl_verify_pair_scores(kind, a, b, p.n, s.dim, scores);
        st = mtl_verify_kfold(scores, p.same, p.n, r->folds.n_folds, p.fold, &r->folds, err);
        if (st != MTL_OK)
            mtl_error_prefix(err, "'%s': ", pairs_path);
    }
    if (st == MTL_OK && (st = mtl_verify_auc(scores, p.same, p.n, &r->auc, err)) != MTL_OK)
        mtl_error_prefix(err, "'%s': ", pairs_path);
    for (int64_t k = 0; st == MTL_OK && k < s.n; k++)
        r->labelled += !isnan(s.labels[k]);
    if (st == MTL_OK && r->labelled > 0) {
        st = mtl_verify_recall_at_k(kind, s.values, s.labels, s.n, s.dim, r->ks, r->n_ks, r->recall, err);
        r->has_recall = st == MTL_OK;
    }
    if (st == MTL_OK)
        print_report(r, &s, &p, json);
    free(list);
    free(scores);
    free(a);
    free(b);
    pairs_free(&p);
    set_free(&s);
    return st;
}

static int run_verify(int argc, char **argv)
{
    cli_option options[] = {{"embeddings", 1, NULL}, {"pairs", 1, NULL},  {"metric", 1, NULL},
                            {"folds", 1, NULL},      {"recall", 1, NULL}, {"json", 0, NULL}};
    const int n_opts = (int)(sizeof(options) / sizeof(options[0]));
    const char *positional[1];
    int n_pos;
    int rc = cli_parse(&cli_verify, argc, argv, options, n_opts, positional, 0, &n_pos);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    const char *files = cli_value(options, n_opts, "embeddings"), *pairs = cli_value(options, n_opts, "pairs");
    const char *metric = cli_value(options, n_opts, "metric"), *text;
    if (!files || !pairs)
        return cli_usage_error(&cli_verify, "--embeddings and --pairs are required");
    verify_report r = {.metric = metric ? metric : "cosine", .folds = {.n_folds = 10}, .n_ks = 2, .ks = {1, 5}};
    mtl_similarity kind;
    if (strcmp(r.metric, "cosine") == 0)
        kind = MTL_SIMILARITY_COSINE;
    else if (strcmp(r.metric, "euclidean") == 0)
        kind = MTL_SIMILARITY_EUCLIDEAN;
    else
        return cli_usage_error(&cli_verify, "--metric is cosine or euclidean, not '%s'", r.metric);
    if ((text = cli_value(options, n_opts, "folds"))) {
        long folds = cli_positive(&cli_verify, "folds", text);
        if (folds < 0)
            return CLI_USAGE;
        if (folds < 2 || folds > MTL_VERIFY_MAX_FOLDS)
            return cli_usage_error(&cli_verify, "--folds is 2 to %d, not %ld", MTL_VERIFY_MAX_FOLDS, folds);
        r.folds.n_folds = (int)folds;
    }
    if ((text = cli_value(options, n_opts, "recall")) && parse_ks(text, r.ks, &r.n_ks) != MTL_OK)
        return cli_usage_error(&cli_verify, "--recall takes up to %d positive integers separated by commas, not '%s'",
                               MAX_KS, text);
    mtl_error err = {0};
    int json = cli_value(options, n_opts, "json") != NULL;
    return verify(files, pairs, kind, &r, json, &err) == MTL_OK ? CLI_OK : cli_fail(&err);
}

const cli_command cli_verify = {"verify", "verification accuracy, ROC AUC and recall@k of embeddings on a pair list",
                                verify_usage, run_verify};
