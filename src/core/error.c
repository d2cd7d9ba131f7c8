/* Error values and the per-thread last-error message behind the public API. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_error[MTL_ERROR_MAX];

static const char *const status_names[] = {
    [MTL_OK] = "MTL_OK",
    [MTL_ERR_ARGUMENT] = "MTL_ERR_ARGUMENT",
    [MTL_ERR_PARSE] = "MTL_ERR_PARSE",
    [MTL_ERR_CONFIG] = "MTL_ERR_CONFIG",
    [MTL_ERR_SHAPE] = "MTL_ERR_SHAPE",
    [MTL_ERR_IO] = "MTL_ERR_IO",
    [MTL_ERR_CORRUPT] = "MTL_ERR_CORRUPT",
    [MTL_ERR_NOMEM] = "MTL_ERR_NOMEM",
    [MTL_ERR_NUMERIC] = "MTL_ERR_NUMERIC",
    [MTL_ERR_UNSUPPORTED] = "MTL_ERR_UNSUPPORTED",
    [MTL_ERR_NOT_FOUND] = "MTL_ERR_NOT_FOUND",
    [MTL_ERR_INTERRUPTED] = "MTL_ERR_INTERRUPTED",
};
_Static_assert(sizeof(status_names) / sizeof(status_names[0]) == MTL_STATUS_COUNT,
               "every status needs a name");

const char *mtl_status_name(mtl_status status)
{
    if ((int)status < 0 || status >= MTL_STATUS_COUNT)
        return "MTL_ERR_UNKNOWN";
    return status_names[status];
}

const char *mtl_last_error(void) { return last_error; }

mtl_status mtl_fail(mtl_error *err, mtl_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

mtl_status mtl_error_prefix(mtl_error *err, const char *fmt, ...)
{
    if (!err)
        return MTL_ERR_ARGUMENT;
    char prefix[MTL_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    /* keep the prefix whole and cut the old message if both do not fit */
    char joined[MTL_ERROR_MAX];
    size_t n = strlen(prefix);
    if (n >= sizeof(joined))
        n = sizeof(joined) - 1;
    memcpy(joined, prefix, n);
    size_t rest = strnlen(err->message, sizeof(err->message));
    if (rest > sizeof(joined) - 1 - n)
        rest = sizeof(joined) - 1 - n;
    memcpy(joined + n, err->message, rest);
    joined[n + rest] = '\0';
    memcpy(err->message, joined, sizeof(joined));
    return err->status;
}

mtl_status mtl_error_publish(const mtl_error *err)
{
    if (!err)
        return MTL_OK;
    snprintf(last_error, sizeof(last_error), "%s", err->message);
    return err->status;
}

void *mtl_calloc_or_fail(size_t n, size_t size, mtl_error *err, const char *what)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        mtl_fail(err, MTL_ERR_NOMEM, "out of memory allocating %zu x %zu bytes for %s", n, size, what);
    return p;
}

char *mtl_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}
