/* Reading whole files, the one way every module does it. */
#ifndef MTL_CORE_FILE_H
#define MTL_CORE_FILE_H

#include <stddef.h>

#include "core/error.h"

/* Reads all of path into a malloc'd buffer with a NUL after the last byte (text callers can use it
 * as a string; *size excludes the NUL). Reads in chunks rather than trusting the file size, so
 * pipes work too. `what` names the file in errors ("snapshot" gives "cannot open snapshot 'x'");
 * NULL names it by path alone. max_bytes 0 means no limit. A missing file is MTL_ERR_NOT_FOUND,
 * other failures MTL_ERR_IO or MTL_ERR_NOMEM. */
mtl_status mtl_read_file(const char *path, const char *what, size_t max_bytes, char **out, size_t *size,
                         mtl_error *err);

#endif
