/* Small helpers the C tests share: tensors from literals, value checks, running a standalone
 * layer and scratch-directory cleanup. */
#ifndef MTL_TESTS_TEST_UTIL_H
#define MTL_TESTS_TEST_UTIL_H

#include "core/layer.h"
#include "core/tensor.h"

/* A tensor shaped by `shape` (axis sizes ended by 0), holding `values` when not NULL. Exits the
 * test on failure: a test that cannot build its inputs has nothing to check. */
mtl_tensor *test_tensor(const int *shape, const float *values);
/* The same with an explicit axis count. */
mtl_tensor *test_tensor_n(int ndim, const int *shape, const float *values);
/* Checks got[i] against want[i] within tol for i < n (a NaN wants a NaN); failures name what[i]. */
void test_check_values(const char *what, const float *got, const float *want, int n, double tol);
/* One forward of a standalone layer: its reshape (when it has one), then its forward. */
mtl_status test_forward(mtl_layer *l, mtl_error *err);
/* Removes a directory and everything below it (symbolic links are removed, not followed). */
void test_remove_tree(const char *path);

#endif
