/* Tests for the embedding metrics (src/eval/verify.c) on small cases worked out by hand:
 * similarities, best thresholds and their tie rule, k-fold accuracy on constructed folds, AUC with
 * separable, reversed and tied scores, recall@k with ties and missing labels, and bad inputs. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "eval/verify.h"

static void test_similarity(void)
{
    const float a[2] = {1, 0}, b[2] = {0, 1}, c[2] = {2, 0}, z[2] = {0, 0}, p[2] = {3, 4};
    CHECK_NEAR(mtl_verify_similarity(MTL_SIMILARITY_COSINE, a, b, 2), 0.0, 1e-12);
    CHECK_NEAR(mtl_verify_similarity(MTL_SIMILARITY_COSINE, a, c, 2), 1.0, 1e-12);
    CHECK_NEAR(mtl_verify_similarity(MTL_SIMILARITY_COSINE, a, p, 2), 0.6, 1e-12);
    CHECK_NEAR(mtl_verify_similarity(MTL_SIMILARITY_COSINE, z, p, 2), 0.0, 0);
    CHECK_NEAR(mtl_verify_similarity(MTL_SIMILARITY_EUCLIDEAN, z, p, 2), -5.0, 1e-12);
    CHECK_NEAR(mtl_verify_similarity(MTL_SIMILARITY_EUCLIDEAN, p, p, 2), 0.0, 0);
    /* rows (1, 0) . (3, 4) and (0, 1) . (3, 4): 0.6 and 0.8 */
    const float rows_a[4] = {1, 0, 0, 1}, rows_b[4] = {3, 4, 3, 4};
    float scores[2];
    mtl_verify_pair_scores(MTL_SIMILARITY_COSINE, rows_a, rows_b, 2, 2, scores);
    CHECK_NEAR(scores[0], 0.6, 1e-7);
    CHECK_NEAR(scores[1], 0.8, 1e-7);
}

static void test_threshold(void)
{
    mtl_error err = {0};
    double t, acc;
    /* separable: different pairs at 0.1 0.2 0.3, same pairs at 0.7 0.8 0.9: the threshold halfway
     * between 0.3 and 0.7 decides all six right */
    const float sep[6] = {0.9f, 0.1f, 0.8f, 0.2f, 0.7f, 0.3f};
    const uint8_t sep_same[6] = {1, 0, 1, 0, 1, 0};
    CHECK_OK(mtl_verify_best_threshold(sep, sep_same, 6, &t, &acc, &err), &err);
    CHECK_NEAR(t, 0.5, 1e-7);
    CHECK_NEAR(acc, 1.0, 0);
    CHECK_NEAR(mtl_verify_accuracy_at(sep, sep_same, 6, 0.5), 1.0, 0);
    /* at 0.75 only the same pair at 0.7 is decided wrong */
    CHECK_NEAR(mtl_verify_accuracy_at(sep, sep_same, 6, 0.75), 5.0 / 6, 1e-12);

    /* scores 1 2 3 4 with kinds d s d s: "all same" gets 2 right; past 1: 3 (t 1.5); past 2: 2;
     * past 3: 3 (t 3.5); past 4: 2. Two thresholds tie at 3 of 4: the lower, 1.5, is chosen. */
    const float alt[4] = {1, 2, 3, 4};
    const uint8_t alt_same[4] = {0, 1, 0, 1};
    CHECK_OK(mtl_verify_best_threshold(alt, alt_same, 4, &t, &acc, &err), &err);
    CHECK_NEAR(t, 1.5, 0);
    CHECK_NEAR(acc, 0.75, 0);

    /* all pairs "same": the best is to call everything same, threshold -infinity */
    const uint8_t all_same[4] = {1, 1, 1, 1};
    CHECK_OK(mtl_verify_best_threshold(alt, all_same, 4, &t, &acc, &err), &err);
    CHECK(isinf(t) && t < 0);
    CHECK_NEAR(acc, 1.0, 0);
    /* all "different": the largest score, above which nothing lies */
    const uint8_t none_same[4] = {0, 0, 0, 0};
    CHECK_OK(mtl_verify_best_threshold(alt, none_same, 4, &t, &acc, &err), &err);
    CHECK_NEAR(t, 4.0, 0);
    CHECK_NEAR(acc, 1.0, 0);
    /* tied scores move together: 2 2 with kinds s d cannot be split */
    const float tied[3] = {2, 2, 5};
    const uint8_t tied_same[3] = {1, 0, 1};
    CHECK_OK(mtl_verify_best_threshold(tied, tied_same, 3, &t, &acc, &err), &err);
    CHECK_NEAR(acc, 2.0 / 3, 1e-12);

    const float bad[2] = {0.5f, NAN};
    CHECK_FAILS(mtl_verify_best_threshold(bad, sep_same, 2, &t, &acc, &err), &err, MTL_ERR_NUMERIC,
                "pair 1 has score nan");
    CHECK_FAILS(mtl_verify_best_threshold(sep, sep_same, 0, &t, &acc, &err), &err, MTL_ERR_ARGUMENT, "no pairs");
}

/* Six pairs in three folds of two (contiguous): scores 0.9 0.2 | 0.8 0.4 | 0.65 0.5, kinds s d | s d | d s.
 *   fold 0 held out: train 0.4d 0.5s 0.65d 0.8s: all-same 2 right, past 0.4: 3 (t 0.45), past 0.5:
 *     2, past 0.65: 3, past 0.8: 2 -> t 0.45 (lowest of the tie); test 0.9 same, 0.2 different: 1
 *   fold 1: train 0.2d 0.5s 0.65d 0.9s -> t 0.35; test 0.8 same (right), 0.4 > 0.35 same (wrong): 0.5
 *   fold 2: train 0.2d 0.4d 0.8s 0.9s -> past 0.4: 4 right, t 0.6; test 0.65 same (wrong), 0.5
 *     different (wrong): 0
 * mean 0.5, population std sqrt((0.25 + 0 + 0.25) / 3) = 0.4082483. */
static void test_kfold(void)
{
    mtl_error err = {0};
    mtl_verify_folds f;
    const float scores[6] = {0.9f, 0.2f, 0.8f, 0.4f, 0.65f, 0.5f};
    const uint8_t same[6] = {1, 0, 1, 0, 0, 1};
    CHECK_OK(mtl_verify_kfold(scores, same, 6, 3, NULL, &f, &err), &err);
    CHECK_INT(f.n_folds, 3);
    CHECK_NEAR(f.accuracy[0], 1.0, 0);
    CHECK_NEAR(f.accuracy[1], 0.5, 0);
    CHECK_NEAR(f.accuracy[2], 0.0, 0);
    CHECK_NEAR(f.threshold[0], 0.45, 1e-7);
    CHECK_NEAR(f.threshold[1], 0.35, 1e-7);
    CHECK_NEAR(f.threshold[2], 0.6, 1e-7);
    CHECK_NEAR(f.mean, 0.5, 1e-12);
    CHECK_NEAR(f.std, sqrt(1.0 / 6), 1e-12);

    /* the same folds given explicitly, numbered the other way round */
    const int fold[6] = {2, 2, 1, 1, 0, 0};
    CHECK_OK(mtl_verify_kfold(scores, same, 6, 3, fold, &f, &err), &err);
    CHECK_NEAR(f.accuracy[0], 0.0, 0);
    CHECK_NEAR(f.accuracy[1], 0.5, 0);
    CHECK_NEAR(f.accuracy[2], 1.0, 0);
    CHECK_NEAR(f.threshold[0], 0.6, 1e-7);

    /* LFW-sized folds on separable scores: ten folds of 4, every fold decided right */
    float sep[40];
    uint8_t sep_same[40];
    for (int i = 0; i < 40; i++) {
        sep_same[i] = (uint8_t)(i % 2);
        sep[i] = sep_same[i] ? 0.6f + 0.01f * (float)i : -0.5f + 0.01f * (float)i;
    }
    CHECK_OK(mtl_verify_kfold(sep, sep_same, 40, 10, NULL, &f, &err), &err);
    CHECK_NEAR(f.mean, 1.0, 0);
    CHECK_NEAR(f.std, 0.0, 0);

    CHECK_FAILS(mtl_verify_kfold(scores, same, 6, 1, NULL, &f, &err), &err, MTL_ERR_ARGUMENT, "1 folds");
    CHECK_FAILS(mtl_verify_kfold(scores, same, 6, 10, NULL, &f, &err), &err, MTL_ERR_ARGUMENT, "holds no pair");
    const int out_of_range[6] = {0, 0, 1, 1, 3, 2};
    CHECK_FAILS(mtl_verify_kfold(scores, same, 6, 3, out_of_range, &f, &err), &err, MTL_ERR_ARGUMENT,
                "pair 4 is in fold 3");
    const int missing_fold[6] = {0, 0, 0, 2, 2, 2};
    CHECK_FAILS(mtl_verify_kfold(scores, same, 6, 3, missing_fold, &f, &err), &err, MTL_ERR_ARGUMENT,
                "fold 1 holds no pair");
}

static void test_auc(void)
{
    mtl_error err = {0};
    double auc;
    const float sep[6] = {0.9f, 0.1f, 0.8f, 0.2f, 0.7f, 0.3f};
    const uint8_t same[6] = {1, 0, 1, 0, 1, 0}, reversed[6] = {0, 1, 0, 1, 0, 1};
    CHECK_OK(mtl_verify_auc(sep, same, 6, &auc, &err), &err);
    CHECK_NEAR(auc, 1.0, 1e-12);
    CHECK_OK(mtl_verify_auc(sep, reversed, 6, &auc, &err), &err);
    CHECK_NEAR(auc, 0.0, 1e-12);
    /* every score equal: each (same, different) comparison is a tie worth 1/2 */
    const float flat[6] = {3, 3, 3, 3, 3, 3};
    CHECK_OK(mtl_verify_auc(flat, same, 6, &auc, &err), &err);
    CHECK_NEAR(auc, 0.5, 1e-12);
    /* same at 0.5 0.9, different at 0.5 0.1: of the 4 comparisons, (0.5, 0.5) ties (1/2) and the
     * other three are won: 3.5 / 4 */
    const float mixed[4] = {0.5f, 0.9f, 0.5f, 0.1f};
    const uint8_t mixed_same[4] = {1, 1, 0, 0};
    CHECK_OK(mtl_verify_auc(mixed, mixed_same, 4, &auc, &err), &err);
    CHECK_NEAR(auc, 0.875, 1e-12);
    /* same at 0.2 0.6, different at 0.4 0.8: 0.2 beats none, 0.6 beats 0.4: 1 / 4 */
    const float part[4] = {0.2f, 0.6f, 0.4f, 0.8f};
    CHECK_OK(mtl_verify_auc(part, mixed_same, 4, &auc, &err), &err);
    CHECK_NEAR(auc, 0.25, 1e-12);

    const uint8_t all_same[4] = {1, 1, 1, 1};
    CHECK_FAILS(mtl_verify_auc(part, all_same, 4, &auc, &err), &err, MTL_ERR_ARGUMENT, "pairs of both kinds");
    const float inf[2] = {INFINITY, 0};
    CHECK_FAILS(mtl_verify_auc(inf, mixed_same + 1, 2, &auc, &err), &err, MTL_ERR_NUMERIC, "pair 0");
}

/* Five one-dimensional embeddings x = (0, 1, 3, 3.5, 10), labels (0, 0, 1, 2, 2), Euclidean:
 *   query 0: nearest is 1 (label 0): hit at 1
 *   query 1: nearest is 0 (label 0): hit at 1
 *   query 2: alone in class 1: a miss for every k
 *   query 3: by distance 2 (0.5, label 1), 1 (2.5), 0 (3.5), 4 (6.5, label 2): first hit at rank 4
 *   query 4: nearest is 3 (label 2): hit at 1
 * recall@1 = recall@3 = 3/5, recall@4 = recall@5 = 4/5. */
static void test_recall(void)
{
    mtl_error err = {0};
    double r[4];
    const int ks[4] = {1, 3, 4, 5};
    /* a sixth embedding at 0.1 with a missing label: neither query nor candidate */
    const float x[6] = {0, 1, 3, 3.5f, 10, 0.1f};
    const float y[6] = {0, 0, 1, 2, 2, NAN};
    CHECK_OK(mtl_verify_recall_at_k(MTL_SIMILARITY_EUCLIDEAN, x, y, 6, 1, ks, 4, r, &err), &err);
    CHECK_NEAR(r[0], 0.6, 1e-12);
    CHECK_NEAR(r[1], 0.6, 1e-12);
    CHECK_NEAR(r[2], 0.8, 1e-12);
    CHECK_NEAR(r[3], 0.8, 1e-12);

    /* cosine ignores length: e0 (1, 0) and e1 (5, 1) are class 0, e2 (1, 0.1) and e3 (0, 1) class 1.
     * cos(e0, e1) 0.981, cos(e0, e2) 0.995, cos(e1, e2) 0.995, cos(e1, e3) 0.196, cos(e2, e3) 0.0995,
     * cos(e0, e3) 0. q0: e2 (wrong) then e1: rank 2; q1: e2 (wrong) then e0: rank 2; q2: e1, e0
     * (wrong) then e3: rank 3; q3: e1 (wrong) then e2: rank 2. recall@1 0, @2 3/4, @3 1. */
    const float e[8] = {1, 0, 5, 1, 1, 0.1f, 0, 1};
    const float ey[4] = {0, 0, 1, 1};
    const int k3[3] = {1, 2, 3};
    CHECK_OK(mtl_verify_recall_at_k(MTL_SIMILARITY_COSINE, e, ey, 4, 2, k3, 3, r, &err), &err);
    CHECK_NEAR(r[0], 0.0, 0);
    CHECK_NEAR(r[1], 0.75, 1e-12);
    CHECK_NEAR(r[2], 1.0, 1e-12);

    /* ties go to the lower index: x = (0, -1, 1), labels (0, 1, 0). Query 0 has 1 (wrong) and 2
     * (right) both at distance 1: 1 comes first, a miss at 1, a hit at 2. Query 1 is alone in its
     * class; query 2's nearest is 0 (right). recall@1 1/3, @2 2/3. */
    const float t[3] = {0, -1, 1};
    const float ty[3] = {0, 1, 0};
    CHECK_OK(mtl_verify_recall_at_k(MTL_SIMILARITY_EUCLIDEAN, t, ty, 3, 1, k3, 2, r, &err), &err);
    CHECK_NEAR(r[0], 1.0 / 3, 1e-12);
    CHECK_NEAR(r[1], 2.0 / 3, 1e-12);

    const int k0 = 0;
    CHECK_FAILS(mtl_verify_recall_at_k(MTL_SIMILARITY_EUCLIDEAN, x, y, 6, 1, &k0, 1, r, &err), &err,
                MTL_ERR_ARGUMENT, "k must be at least 1");
    const float none[2] = {NAN, NAN};
    CHECK_FAILS(mtl_verify_recall_at_k(MTL_SIMILARITY_EUCLIDEAN, x, none, 2, 1, ks, 1, r, &err), &err,
                MTL_ERR_ARGUMENT, "all 2 labels are missing");
}

int main(void)
{
    test_similarity();
    test_threshold();
    test_kfold();
    test_auc();
    test_recall();
    return check_finish();
}
