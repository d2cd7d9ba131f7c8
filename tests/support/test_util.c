/* Shared test helpers (see test_util.h). */
#define _DEFAULT_SOURCE
#include "test_util.h"

#include "check.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void test_check_values(const char *what, const float *got, const float *want, int n, double tol)
{
    for (int i = 0; i < n; i++) {
        int ok = isnan(want[i]) ? isnan(got[i]) : fabs(got[i] - want[i]) <= tol;
        CHECK_MSG(ok, "%s[%d] = %.7g, expected %.7g", what, i, got[i], want[i]);
    }
}

mtl_status test_forward(mtl_layer *l, mtl_error *err)
{
    if (l->ops->reshape)
        MTL_TRY(l->ops->reshape(l, err));
    return l->ops->forward(l, err);
}

mtl_tensor *test_tensor_n(int ndim, const int *shape, const float *values)
{
    mtl_error err;
    mtl_tensor *t = mtl_tensor_create("t");
    if (!t || mtl_tensor_reshape(t, ndim, shape, &err) != MTL_OK) {
        fprintf(stderr, "test_tensor: %s\n", t ? err.message : "out of memory");
        exit(1);
    }
    if (values && t->count > 0)
        memcpy(t->data, values, (size_t)t->count * sizeof(float));
    return t;
}

mtl_tensor *test_tensor(const int *shape, const float *values)
{
    int ndim = 0;
    while (shape[ndim] > 0)
        ndim++;
    return test_tensor_n(ndim, shape, values);
}

void test_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        char child[4096];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
            test_remove_tree(child);
        }
        closedir(d);
    }
    rmdir(path);
}
