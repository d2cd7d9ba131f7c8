/* Errors as values: library functions fill an mtl_error and return its status. Only the CLI
 * prints and exits. */
#ifndef MTL_CORE_ERROR_H
#define MTL_CORE_ERROR_H

#include <stddef.h>

#include "mtl/status.h"

#define MTL_ERROR_MAX 2048

typedef struct mtl_error {
    mtl_status status;
    char message[MTL_ERROR_MAX];
} mtl_error;

/* Fills err (may be NULL) and returns status, so callers can `return mtl_fail(...)`. */
mtl_status mtl_fail(mtl_error *err, mtl_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends context ("while loading x: ") to an error already set; returns its status. */
mtl_status mtl_error_prefix(mtl_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copies err into the thread's last-error slot read by mtl_last_error(); returns its status. */
mtl_status mtl_error_publish(const mtl_error *err);

/* Checked allocation helpers: NULL plus an MTL_ERR_NOMEM message on failure. */
void *mtl_calloc_or_fail(size_t n, size_t size, mtl_error *err, const char *what);
char *mtl_strdup(const char *s);

#define MTL_TRY(expr)                          \
    do {                                       \
        mtl_status mtl_try_status_ = (expr);   \
        if (mtl_try_status_ != MTL_OK)         \
            return mtl_try_status_;            \
    } while (0)

#endif
