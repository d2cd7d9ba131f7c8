/* Metrics for learned embeddings: similarity of two embeddings, face-verification accuracy with
 * k-fold threshold selection (the LFW protocol), ROC AUC, and retrieval recall@k. Plain arrays in,
 * numbers out, no I/O: `mtl verify` and the tests call these. Scores follow one convention: higher
 * means "more likely the same identity" (so Euclidean distance enters as its negative). */
#ifndef MTL_EVAL_VERIFY_H
#define MTL_EVAL_VERIFY_H

#include <stdint.h>

#include "core/error.h"

typedef enum mtl_similarity {
    MTL_SIMILARITY_COSINE,    /* a . b / (|a| |b|); 0 when either vector is all zeros */
    MTL_SIMILARITY_EUCLIDEAN, /* -|a - b| */
} mtl_similarity;

/* The similarity of two embeddings of dim values each. */
double mtl_verify_similarity(mtl_similarity kind, const float *a, const float *b, int64_t dim);

/* scores[i] = similarity of a[i] and b[i]; a, b are (n, dim), scores (n). */
void mtl_verify_pair_scores(mtl_similarity kind, const float *a, const float *b, int64_t n, int64_t dim,
                            float *scores);

/* Fraction of the n pairs decided right when "same" is predicted for score > threshold; same[i]
 * is 1 for a pair of one identity, 0 otherwise. 0 for n = 0. */
double mtl_verify_accuracy_at(const float *scores, const uint8_t *same, int64_t n, double threshold);

/* The threshold with the highest accuracy on the n pairs (score > threshold predicts "same").
 * Candidates: -infinity (everything "same"), the midpoints between consecutive distinct scores,
 * and the largest score (everything "different"); ties go to the lowest threshold. NaN or
 * infinite scores and n = 0 are errors. */
mtl_status mtl_verify_best_threshold(const float *scores, const uint8_t *same, int64_t n, double *threshold,
                                     double *accuracy, mtl_error *err);

#define MTL_VERIFY_MAX_FOLDS 100

typedef struct mtl_verify_folds {
    int n_folds;
    double accuracy[MTL_VERIFY_MAX_FOLDS];  /* on each held-out fold */
    double threshold[MTL_VERIFY_MAX_FOLDS]; /* chosen on the other folds */
    double mean, std;                        /* over folds; std is the population one (divides by n_folds) */
} mtl_verify_folds;

/* k-fold verification accuracy (LFW: k = 10): for each fold, the best threshold on the other
 * folds (mtl_verify_best_threshold) decides that fold's pairs. fold[i] in [0, n_folds) assigns
 * pair i; fold NULL takes contiguous blocks in list order (pair i in fold i * n_folds / n), as
 * LFW's pairs.txt lists its ten sets one after another. Every fold must hold a pair. */
mtl_status mtl_verify_kfold(const float *scores, const uint8_t *same, int64_t n, int n_folds, const int *fold,
                            mtl_verify_folds *out, mtl_error *err);

/* Area under the ROC curve: the probability that a same-identity pair scores higher than a
 * different-identity pair, ties counting 1/2 (exact, from ranks after sorting). Needs at least one
 * pair of each kind. */
mtl_status mtl_verify_auc(const float *scores, const uint8_t *same, int64_t n, double *auc, mtl_error *err);

/* Retrieval recall@k over a labelled set of n embeddings (n, dim): for each query with a label,
 * whether any of its k most similar other embeddings (the query itself excluded; ties broken
 * toward the lower index) shares its label. Embeddings whose label is NaN (missing) are neither
 * queries nor candidates; labels are compared as values. A query whose class has no other member
 * counts as a miss. recall[i] is the fraction for ks[i] (each >= 1). */
mtl_status mtl_verify_recall_at_k(mtl_similarity kind, const float *embeddings, const float *labels, int64_t n,
                                  int64_t dim, const int *ks, int n_ks, double *recall, mtl_error *err);

#endif
