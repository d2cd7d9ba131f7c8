/* The prefetch ring: batch b lives in slot b % depth. The worker fills batch next_fill while it is
 * fewer than `depth` batches ahead of the consumer; the consumer takes batch next_take once the
 * worker has passed it. Both counters change only under the lock, and the two sides never touch
 * the same slot at once (the worker's slot is always one the consumer has already given back). */
#include "data/prefetch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/tensor.h"

struct mtl_prefetch {
    mtl_prefetch_config cfg;
    float **slots; /* depth x n_arrays buffers: slot s, array i at [s * n_arrays + i] */
    pthread_t thread;
    int thread_started, sync_ready;
    pthread_mutex_t lock;
    pthread_cond_t loaded; /* the worker finished a batch (or stopped) */
    pthread_cond_t space;  /* the consumer freed a slot (or asked to stop) */
    int64_t next_fill, next_take;
    int stop, worker_done, failed;
    mtl_error fail_err; /* the error of batch next_fill when failed */
};

static void *worker_main(void *arg)
{
    mtl_prefetch *p = arg;
    const int n = p->cfg.n_arrays;
    mtl_error err = {0};
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && p->next_fill - p->next_take >= p->cfg.depth)
            pthread_cond_wait(&p->space, &p->lock);
        if (p->stop)
            break;
        int64_t b = p->next_fill;
        float *const *arrays = p->slots + (size_t)(b % p->cfg.depth) * (size_t)n;
        pthread_mutex_unlock(&p->lock);
        mtl_status st = p->cfg.fill(p->cfg.ctx, b, arrays, &err);
        pthread_mutex_lock(&p->lock);
        if (st != MTL_OK) {
            if (err.status == MTL_OK)
                err.status = st;
            p->fail_err = err;
            p->failed = 1;
            break;
        }
        p->next_fill = b + 1;
        pthread_cond_signal(&p->loaded);
    }
    p->worker_done = 1;
    pthread_cond_broadcast(&p->loaded);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

mtl_status mtl_prefetch_create(const mtl_prefetch_config *cfg, int64_t first, mtl_prefetch **out, mtl_error *err)
{
    *out = NULL;
    if (cfg->depth < 1 || cfg->n_arrays < 1 || cfg->n_arrays > MTL_PREFETCH_MAX_ARRAYS || !cfg->fill || first < 0)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "prefetch: bad configuration (depth %d, %d arrays, first batch %lld)",
                        cfg->depth, cfg->n_arrays, (long long)first);
    mtl_prefetch *p = mtl_calloc_or_fail(1, sizeof(*p), err, "prefetch ring");
    if (!p)
        return MTL_ERR_NOMEM;
    p->cfg = *cfg;
    p->next_fill = p->next_take = first;
    size_t n_slots = (size_t)cfg->depth * (size_t)cfg->n_arrays;
    if (!(p->slots = mtl_calloc_or_fail(n_slots, sizeof(float *), err, "prefetch ring"))) {
        free(p);
        return MTL_ERR_NOMEM;
    }
    for (size_t i = 0; i < n_slots; i++) {
        int64_t count = cfg->counts[i % (size_t)cfg->n_arrays];
        if (!(p->slots[i] = mtl_aligned_alloc((size_t)count * sizeof(float)))) {
            mtl_prefetch_free(p);
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory for %d prefetched batches", cfg->depth);
        }
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->loaded, NULL);
    pthread_cond_init(&p->space, NULL);
    p->sync_ready = 1;
    int rc = pthread_create(&p->thread, NULL, worker_main, p);
    if (rc != 0) {
        mtl_prefetch_free(p);
        return mtl_fail(err, MTL_ERR_NOMEM, "cannot start the prefetch thread: %s", strerror(rc));
    }
    p->thread_started = 1;
    *out = p;
    return MTL_OK;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

mtl_status mtl_prefetch_take(mtl_prefetch *p, float **bufs, double *waited_s, mtl_error *err)
{
    pthread_mutex_lock(&p->lock);
    if (p->next_fill <= p->next_take && !p->worker_done) {
        double t0 = now_s();
        while (p->next_fill <= p->next_take && !p->worker_done)
            pthread_cond_wait(&p->loaded, &p->lock);
        if (waited_s)
            *waited_s += now_s() - t0;
    }
    if (p->next_fill <= p->next_take) {
        mtl_status st;
        if (p->failed) {
            if (err)
                *err = p->fail_err;
            st = p->fail_err.status;
        } else {
            st = mtl_fail(err, MTL_ERR_ARGUMENT, "prefetch: the loader was stopped");
        }
        pthread_mutex_unlock(&p->lock);
        return st;
    }
    float **slot = p->slots + (size_t)(p->next_take % p->cfg.depth) * (size_t)p->cfg.n_arrays;
    for (int i = 0; i < p->cfg.n_arrays; i++) {
        float *loaded = slot[i];
        slot[i] = bufs[i];
        bufs[i] = loaded;
    }
    p->next_take++;
    pthread_cond_signal(&p->space);
    pthread_mutex_unlock(&p->lock);
    return MTL_OK;
}

int64_t mtl_prefetch_next(const mtl_prefetch *p)
{
    /* only the consumer changes next_take, and only the consumer asks */
    return p->next_take;
}

void mtl_prefetch_free(mtl_prefetch *p)
{
    if (!p)
        return;
    if (p->thread_started) {
        pthread_mutex_lock(&p->lock);
        p->stop = 1;
        pthread_cond_broadcast(&p->space);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->thread, NULL);
    }
    if (p->slots) {
        size_t n_slots = (size_t)p->cfg.depth * (size_t)p->cfg.n_arrays;
        for (size_t i = 0; i < n_slots; i++)
            mtl_aligned_free(p->slots[i]);
        free(p->slots);
    }
    if (p->sync_ready) {
        pthread_cond_destroy(&p->space);
        pthread_cond_destroy(&p->loaded);
        pthread_mutex_destroy(&p->lock);
    }
    free(p);
}
