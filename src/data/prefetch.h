/* Background batch loading for the data layers: one worker thread (pthread) fills a ring of batch
 * buffers ahead of the consumer, and the consumer takes a finished batch by exchanging buffer
 * pointers, so a forward pass never copies or waits unless reading is slower than training.
 * Batch b must be a pure function of b (the fill callback's job: no generator shared across
 * batches), so a loader's whole state is the number of the next batch, and a loader created at
 * batch b continues a stream exactly where another one stopped. */
#ifndef MTL_DATA_PREFETCH_H
#define MTL_DATA_PREFETCH_H

#include <stdint.h>

#include "core/error.h"

#define MTL_PREFETCH_MAX_ARRAYS 4

/* Fills batch `batch` into arrays[0..n_arrays) (counts[i] floats each). Runs on the worker thread
 * only, one batch at a time. */
typedef mtl_status (*mtl_prefetch_fill_fn)(void *ctx, int64_t batch, float *const *arrays, mtl_error *err);

typedef struct mtl_prefetch_config {
    int depth;                               /* batches loaded ahead (the ring), >= 1 */
    int n_arrays;                            /* arrays per batch (data, labels): 1..MTL_PREFETCH_MAX_ARRAYS */
    int64_t counts[MTL_PREFETCH_MAX_ARRAYS]; /* floats in each array */
    mtl_prefetch_fill_fn fill;
    void *ctx;                               /* must stay valid until mtl_prefetch_free */
} mtl_prefetch_config;

typedef struct mtl_prefetch mtl_prefetch;

/* Allocates the ring and starts the worker at batch `first`. */
mtl_status mtl_prefetch_create(const mtl_prefetch_config *cfg, int64_t first, mtl_prefetch **out, mtl_error *err);

/* Takes the next batch. Waits until it is loaded, then for each array i exchanges the loaded buffer
 * with bufs[i]: on entry bufs[i] is a buffer of the caller's (counts[i] floats from
 * mtl_aligned_alloc, so the ring can refill it), on return it holds the batch. The time spent
 * waiting is added to *waited_s (may be NULL). A batch whose fill failed returns that error, as
 * does every later call; bufs is then left as it was. */
mtl_status mtl_prefetch_take(mtl_prefetch *p, float **bufs, double *waited_s, mtl_error *err);

/* The number of the batch the next take returns. */
int64_t mtl_prefetch_next(const mtl_prefetch *p);

/* Stops the worker (after the batch it is filling) and frees the ring; NULL is a no-op. */
void mtl_prefetch_free(mtl_prefetch *p);

#endif
