/* Whole-file reading with errors that name the file. */
#include "core/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mtl_status mtl_read_file(const char *path, const char *what, size_t max_bytes, char **out, size_t *size,
                         mtl_error *err)
{
    const char *kind = what ? what : "", *space = what ? " " : "";
    *out = NULL;
    if (size)
        *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return mtl_fail(err, errno == ENOENT ? MTL_ERR_NOT_FOUND : MTL_ERR_IO, "cannot open %s%s'%s': %s", kind,
                        space, path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    mtl_status st = buf ? MTL_OK : mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading %s%s'%s'", kind, space, path);
    while (st == MTL_OK) {
        if (len + 1 >= cap) { /* keep room for the NUL */
            if (max_bytes && len >= max_bytes) {
                st = mtl_fail(err, MTL_ERR_IO, "cannot read %s%s'%s': larger than the %zu MiB limit", kind, space,
                              path, max_bytes >> 20);
                break;
            }
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading %s%s'%s'", kind, space, path);
                break;
            }
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                st = mtl_fail(err, MTL_ERR_IO, "cannot read %s%s'%s': %s", kind, space, path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (st != MTL_OK) {
        free(buf);
        return st;
    }
    buf[len] = '\0';
    *out = buf;
    if (size)
        *size = len;
    return MTL_OK;
}
