/* Status codes returned by every mtl library call. A call that fails also leaves a readable
 * message (what, where, and a hint) that mtl_last_error() returns; the library never exits. */
#ifndef MTL_STATUS_H
#define MTL_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mtl_status {
    MTL_OK = 0,
    MTL_ERR_ARGUMENT,    /* a caller passed something invalid */
    MTL_ERR_PARSE,       /* prototxt syntax */
    MTL_ERR_CONFIG,      /* a well-formed config that asks for something invalid */
    MTL_ERR_SHAPE,       /* blob shapes that do not fit together */
    MTL_ERR_IO,          /* a file could not be read or written */
    MTL_ERR_CORRUPT,     /* a snapshot or database that fails its checks */
    MTL_ERR_NOMEM,
    MTL_ERR_NUMERIC,     /* NaN or Inf in a loss or blob */
    MTL_ERR_UNSUPPORTED, /* a layer type or option mtl does not have */
    MTL_ERR_NOT_FOUND,   /* a blob, layer or file that does not exist */
    MTL_ERR_INTERRUPTED, /* stopped by a signal */
    MTL_STATUS_COUNT
} mtl_status;

/* Short name of a status ("MTL_ERR_PARSE"). */
const char *mtl_status_name(mtl_status status);

/* Message of the last failing public call on this thread ("" if none). */
const char *mtl_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
