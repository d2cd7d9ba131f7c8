/* Embedding metrics (see verify.h): thresholds are swept over sorted scores, AUC comes from rank
 * sums with tied scores sharing their average rank, and recall@k ranks each query's neighbours
 * with a fixed tie order, so every number is exact and deterministic. */
#include "eval/verify.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct scored_pair {
    float score;
    uint8_t same;
} scored_pair;

static int scored_pair_cmp(const void *pa, const void *pb)
{
    float a = ((const scored_pair *)pa)->score, b = ((const scored_pair *)pb)->score;
    return (a > b) - (a < b);
}

double mtl_verify_similarity(mtl_similarity kind, const float *a, const float *b, int64_t dim)
{
    if (kind == MTL_SIMILARITY_EUCLIDEAN) {
        double sum = 0.0;
        for (int64_t k = 0; k < dim; k++) {
            double d = (double)a[k] - b[k];
            sum += d * d;
        }
        return -sqrt(sum);
    }
    double dot = 0.0, na = 0.0, nb = 0.0;
    for (int64_t k = 0; k < dim; k++) {
        dot += (double)a[k] * b[k];
        na += (double)a[k] * a[k];
        nb += (double)b[k] * b[k];
    }
    return na > 0.0 && nb > 0.0 ? dot / (sqrt(na) * sqrt(nb)) : 0.0;
}

void mtl_verify_pair_scores(mtl_similarity kind, const float *a, const float *b, int64_t n, int64_t dim,
                            float *scores)
{
    for (int64_t i = 0; i < n; i++)
        scores[i] = (float)mtl_verify_similarity(kind, a + i * dim, b + i * dim, dim);
}

double mtl_verify_accuracy_at(const float *scores, const uint8_t *same, int64_t n, double threshold)
{
    if (n <= 0)
        return 0.0;
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++)
        correct += ((double)scores[i] > threshold) == (same[i] != 0);
    return (double)correct / (double)n;
}

static mtl_status check_scores(const float *scores, int64_t n, mtl_error *err)
{
    if (n <= 0)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "no pairs to score");
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(scores[i]))
            return mtl_fail(err, MTL_ERR_NUMERIC, "pair %lld has score %g; scores must be finite", (long long)i,
                            (double)scores[i]);
    return MTL_OK;
}

/* The sweep behind mtl_verify_best_threshold over pairs already sorted by score: starting from
 * "everything same", passing each group of equal scores turns its pairs into "different". */
static void sweep_sorted(const scored_pair *p, int64_t n, double *threshold, double *accuracy)
{
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++)
        correct += p[i].same != 0;
    int64_t best = correct;
    double best_t = -INFINITY;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        float v = p[i].score;
        for (; j < n && p[j].score == v; j++)
            correct += p[j].same ? -1 : 1;
        double t = j < n ? 0.5 * ((double)v + (double)p[j].score) : (double)v;
        if (correct > best) {
            best = correct;
            best_t = t;
        }
        i = j;
    }
    *threshold = best_t;
    *accuracy = n > 0 ? (double)best / (double)n : 0.0;
}

mtl_status mtl_verify_best_threshold(const float *scores, const uint8_t *same, int64_t n, double *threshold,
                                     double *accuracy, mtl_error *err)
{
    MTL_TRY(check_scores(scores, n, err));
    scored_pair *p = mtl_calloc_or_fail((size_t)n, sizeof(*p), err, "scored pairs");
    if (!p)
        return MTL_ERR_NOMEM;
    for (int64_t i = 0; i < n; i++)
        p[i] = (scored_pair){scores[i], same[i] != 0};
    qsort(p, (size_t)n, sizeof(*p), scored_pair_cmp);
    sweep_sorted(p, n, threshold, accuracy);
    free(p);
    return MTL_OK;
}

mtl_status mtl_verify_kfold(const float *scores, const uint8_t *same, int64_t n, int n_folds, const int *fold,
                            mtl_verify_folds *out, mtl_error *err)
{
    memset(out, 0, sizeof(*out));
    if (n_folds < 2 || n_folds > MTL_VERIFY_MAX_FOLDS)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "%d folds: k-fold selection needs 2 to %d folds", n_folds,
                        MTL_VERIFY_MAX_FOLDS);
    MTL_TRY(check_scores(scores, n, err));
    int64_t sizes[MTL_VERIFY_MAX_FOLDS] = {0};
    for (int64_t i = 0; i < n; i++) {
        int f = fold ? fold[i] : (int)(i * n_folds / n);
        if (f < 0 || f >= n_folds)
            return mtl_fail(err, MTL_ERR_ARGUMENT, "pair %lld is in fold %d, outside [0, %d)", (long long)i, f,
                            n_folds);
        sizes[f]++;
    }
    for (int f = 0; f < n_folds; f++)
        if (sizes[f] == 0)
            return mtl_fail(err, MTL_ERR_ARGUMENT, "fold %d holds no pair (%lld pairs in %d folds)", f, (long long)n,
                            n_folds);

    scored_pair *train = mtl_calloc_or_fail((size_t)n, sizeof(*train), err, "scored pairs");
    if (!train)
        return MTL_ERR_NOMEM;
    out->n_folds = n_folds;
    double sum = 0.0;
    for (int f = 0; f < n_folds; f++) {
        int64_t m = 0, test = 0, correct = 0;
        double train_accuracy;
        for (int64_t i = 0; i < n; i++)
            if ((fold ? fold[i] : (int)(i * n_folds / n)) != f)
                train[m++] = (scored_pair){scores[i], same[i] != 0};
        qsort(train, (size_t)m, sizeof(*train), scored_pair_cmp);
        sweep_sorted(train, m, &out->threshold[f], &train_accuracy);
        for (int64_t i = 0; i < n; i++)
            if ((fold ? fold[i] : (int)(i * n_folds / n)) == f) {
                test++;
                correct += ((double)scores[i] > out->threshold[f]) == (same[i] != 0);
            }
        out->accuracy[f] = (double)correct / (double)test;
        sum += out->accuracy[f];
    }
    free(train);
    out->mean = sum / n_folds;
    double var = 0.0;
    for (int f = 0; f < n_folds; f++)
        var += (out->accuracy[f] - out->mean) * (out->accuracy[f] - out->mean);
    out->std = sqrt(var / n_folds);
    return MTL_OK;
}

mtl_status mtl_verify_auc(const float *scores, const uint8_t *same, int64_t n, double *auc, mtl_error *err)
{
    *auc = NAN;
    MTL_TRY(check_scores(scores, n, err));
    int64_t n_pos = 0;
    for (int64_t i = 0; i < n; i++)
        n_pos += same[i] != 0;
    if (n_pos == 0 || n_pos == n)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "AUC needs pairs of both kinds: %lld same, %lld different",
                        (long long)n_pos, (long long)(n - n_pos));
    scored_pair *p = mtl_calloc_or_fail((size_t)n, sizeof(*p), err, "scored pairs");
    if (!p)
        return MTL_ERR_NOMEM;
    for (int64_t i = 0; i < n; i++)
        p[i] = (scored_pair){scores[i], same[i] != 0};
    qsort(p, (size_t)n, sizeof(*p), scored_pair_cmp);
    /* Mann-Whitney: the positives' rank sum (1-based, ties at their average rank) less its minimum */
    double rank_sum = 0.0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i, pos = 0;
        for (; j < n && p[j].score == p[i].score; j++)
            pos += p[j].same;
        rank_sum += (double)pos * 0.5 * (double)(i + 1 + j);
        i = j;
    }
    free(p);
    double n_neg = (double)(n - n_pos);
    *auc = (rank_sum - 0.5 * (double)n_pos * (double)(n_pos + 1)) / ((double)n_pos * n_neg);
    return MTL_OK;
}

mtl_status mtl_verify_recall_at_k(mtl_similarity kind, const float *embeddings, const float *labels, int64_t n,
                                  int64_t dim, const int *ks, int n_ks, double *recall, mtl_error *err)
{
    if (n <= 0 || dim <= 0)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "recall@k needs embeddings: %lld of %lld values given", (long long)n,
                        (long long)dim);
    for (int i = 0; i < n_ks; i++)
        if (ks[i] < 1)
            return mtl_fail(err, MTL_ERR_ARGUMENT, "recall@%d: k must be at least 1", ks[i]);
    int64_t queries = 0;
    for (int64_t i = 0; i < n; i++)
        queries += !isnan(labels[i]);
    if (queries == 0)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "recall@k needs labelled embeddings: all %lld labels are missing",
                        (long long)n);

    /* rank[i]: how many others come before query i's first same-label neighbour in the order
     * (similarity descending, index ascending); -1 when it has none */
    int64_t *rank = mtl_calloc_or_fail((size_t)n, sizeof(*rank), err, "neighbour ranks");
    if (!rank)
        return MTL_ERR_NOMEM;
    int failed = 0;
#pragma omp parallel
    {
        double *sim = malloc((size_t)n * sizeof(*sim));
        if (!sim) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 8)
        for (int64_t i = 0; i < n; i++) {
            rank[i] = -1;
            if (!sim || isnan(labels[i]))
                continue;
            const float *q = embeddings + i * dim;
            int64_t first = -1;
            for (int64_t j = 0; j < n; j++) {
                if (j == i || isnan(labels[j]))
                    continue;
                sim[j] = mtl_verify_similarity(kind, q, embeddings + j * dim, dim);
                if (labels[j] == labels[i] && (first < 0 || sim[j] > sim[first]))
                    first = j;
            }
            if (first < 0)
                continue;
            int64_t ahead = 0;
            for (int64_t j = 0; j < n; j++)
                if (j != i && !isnan(labels[j]) && labels[j] != labels[i] &&
                    (sim[j] > sim[first] || (sim[j] == sim[first] && j < first)))
                    ahead++;
            rank[i] = ahead;
        }
        free(sim);
    }
    if (failed) {
        free(rank);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory for %lld similarities per thread", (long long)n);
    }
    for (int k = 0; k < n_ks; k++) {
        int64_t hits = 0;
        for (int64_t i = 0; i < n; i++)
            hits += rank[i] >= 0 && rank[i] < ks[k];
        recall[k] = (double)hits / (double)queries;
    }
    free(rank);
    return MTL_OK;
}
