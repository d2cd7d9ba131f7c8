/* The data layers: Data (an mtl LMDB written by `mtl convert`), ImageData (a list file of images
 * read directly) and MemoryData (arrays handed over through the C API). Data and ImageData share
 * one loader: a background thread prefetches batches, and every random choice (an epoch's order,
 * crop offsets, flips) is a hash of (seed, epoch or sample position), never a generator carried
 * from batch to batch. A layer's whole state is then the number of batches it has served: a
 * snapshot stores it, and a resumed run reads exactly the batches the interrupted one would have.
 * Landmark labels (transform_param.landmarks) move with the image through resize, crop, rotation,
 * zoom and mirror (data/transform.h). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/db.h"
#include "data/image.h"
#include "data/prefetch.h"
#include "data/record.h"
#include "data/transform.h"
#include "layers/layers.h"
#include "layers/memory_data.h"

/* ---- deterministic randomness ---------------------------------------------------------------- */

static uint64_t splitmix64_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t mix64(uint64_t x) { return splitmix64_next(&x); }

/* Random bits that depend only on (seed, stream, counter); streams keep the uses apart. */
enum { STREAM_ORDER = 1, STREAM_SAMPLE = 2, STREAM_SKIP = 3 };
static uint64_t hash3(uint64_t seed, uint64_t stream, uint64_t counter)
{
    return mix64(mix64(seed ^ mix64(stream)) ^ counter);
}

/* Without a configured seed: one drawn from a copy of the net's generator (so it follows the net's
 * seed without shifting the draws of the fillers after it) and the layer's name. */
static uint64_t default_seed(const mtl_layer *l)
{
    uint64_t s = 0x6d746c2064617461ull;
    if (l->rng) {
        mtl_rng copy = *l->rng;
        s ^= (uint64_t)mtl_rng_u32(&copy) << 32;
        s ^= mtl_rng_u32(&copy);
    }
    for (const char *c = l->name; c && *c; c++)
        s = mix64(s ^ (uint8_t)*c);
    return s;
}

/* ---- small helpers ---------------------------------------------------------------------------- */

/* Re-issues an error filled by a lower layer (db, image, transform) with the layer's name and
 * position in front, and `what` (may be NULL) before the original message. */
static mtl_status layer_wrap(const mtl_layer *l, mtl_error *err, mtl_status st, const char *what)
{
    char msg[MTL_ERROR_MAX];
    snprintf(msg, sizeof(msg), "%s", err ? err->message : "");
    return mtl_layer_fail(l, err, st, "%s%s%s", what ? what : "", what ? ": " : "", msg);
}

/* A relative path is taken from the current directory, as Caffe does; errors show where that is. */
static char *absolute_path(const char *path)
{
    if (path[0] == '/')
        return mtl_strdup(path);
    char cwd[4096];
    if (!getcwd(cwd, sizeof(cwd)))
        return mtl_strdup(path);
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", cwd, path);
    return out;
}

static void put_u64(uint8_t *buf, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *buf)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | buf[i];
    return v;
}

/* ---- the loader shared by Data and ImageData -------------------------------------------------- */

typedef struct loader loader;

/* Writes sample `index` (0..n) into data (one transformed sample) and labels (n_labels values, or
 * NULL without a label top), with `bits` for its random crop and flip. Runs on the worker thread.
 * Errors name the record or file; the caller adds the layer. */
typedef mtl_status (*loader_sample_fn)(loader *ld, int64_t index, uint64_t bits, float *data, float *labels,
                                       mtl_error *err);

struct loader {
    mtl_layer *layer;          /* names errors; read-only on the worker */
    loader_sample_fn sample;
    int batch_size, depth, shuffle;
    uint64_t seed;
    int64_t n;                 /* samples in one epoch */
    int64_t skip;              /* rand_skip: samples skipped at the very start */
    int n_labels;              /* K per sample */
    int label_top;             /* the layer has a label top (gt_boxes in a detection database) */
    int64_t label_count;       /* floats per sample in the label array: K, or 1 + 5 max_boxes with boxes */
    mtl_transform tf;
    int64_t sample_count;      /* floats in one transformed sample */

    /* worker only: the order of epoch order_epoch (a cache: a pure function of seed and epoch) */
    int64_t *order;
    int64_t order_epoch;

    /* consumer only */
    mtl_prefetch *pf;          /* started by the first forward */
    int64_t consumed;          /* batches served: the layer's whole state */
    float *stage[2];           /* exchanged instead of a top's storage when that cannot be */
    double wait_s;             /* waiting for data since the last stats call */
    int64_t n_waits;

    /* Data */
    mtl_db *db;
    char *source;              /* absolute path */
    int64_t shard_rank, shard_count;
    int decode_channels;       /* for encoded records: 0 keep, 1 grey, 3 colour */
    int has_boxes;             /* detection: tops data, gt_boxes (G, 6), optional im_info (N, 3) */
    int max_boxes;             /* the most boxes a record of this shard holds */
    const mtl_db_meta *meta;   /* category ids: a box's class becomes its position among them + 1 */

    /* ImageData */
    char *list;                /* absolute path of the list file */
    char **paths;              /* n image paths, root_folder applied */
    int *lines;                /* their lines in the list */
    float *labels;             /* n x n_labels */
    int image_channels, new_height, new_width;
};

static void epoch_order(loader *ld, int64_t epoch)
{
    for (int64_t i = 0; i < ld->n; i++)
        ld->order[i] = i;
    uint64_t state = hash3(ld->seed, STREAM_ORDER, (uint64_t)epoch);
    for (int64_t i = ld->n - 1; i > 0; i--) {
        int64_t j = (int64_t)(splitmix64_next(&state) % (uint64_t)(i + 1));
        int64_t t = ld->order[i];
        ld->order[i] = ld->order[j];
        ld->order[j] = t;
    }
    ld->order_epoch = epoch;
}

/* Batch b holds the stream positions b * batch_size + s (+ skip); position g is sample g % n of
 * epoch g / n, so epochs wrap inside a batch just as between batches. */
static mtl_status loader_fill(void *ctx, int64_t batch, float *const *arrays, mtl_error *err)
{
    loader *ld = ctx;
    for (int s = 0; s < ld->batch_size; s++) {
        int64_t g = batch * ld->batch_size + s + ld->skip;
        int64_t epoch = g / ld->n, index = g % ld->n;
        if (ld->shuffle) {
            if (ld->order_epoch != epoch)
                epoch_order(ld, epoch);
            index = ld->order[index];
        }
        float *labels = ld->label_top ? arrays[1] + (size_t)s * (size_t)ld->label_count : NULL;
        mtl_status st = ld->sample(ld, index, hash3(ld->seed, STREAM_SAMPLE, (uint64_t)g),
                                   arrays[0] + (size_t)s * (size_t)ld->sample_count, labels, err);
        if (st != MTL_OK)
            return layer_wrap(ld->layer, err, st, NULL);
    }
    return MTL_OK;
}

/* The geometry one sample got, for its landmark labels. */
typedef struct sample_geometry {
    mtl_crop crop;
    mtl_warp warp;
} sample_geometry;

/* Checks one sample's size against the batch and writes it transformed. */
static mtl_status put_sample(loader *ld, const mtl_pixels *px, uint64_t bits, float *data, const char *what,
                             sample_geometry *geometry, mtl_error *err)
{
    mtl_status st = mtl_transform_check(&ld->tf, px->channels, px->height, px->width, err);
    if (st != MTL_OK) {
        char msg[MTL_ERROR_MAX];
        snprintf(msg, sizeof(msg), "%s", err->message);
        return mtl_fail(err, st, "%s: %s", what, msg);
    }
    geometry->crop = mtl_transform_choose(&ld->tf, px->height, px->width, bits);
    geometry->warp = mtl_transform_choose_warp(&ld->tf, bits);
    mtl_transform_apply_warped(&ld->tf, px, geometry->crop, geometry->warp, data);
    return MTL_OK;
}

static mtl_status loader_new(mtl_layer *l, loader **out, mtl_error *err)
{
    loader *ld = mtl_calloc_or_fail(1, sizeof(*ld), err, "data layer state");
    *out = ld;
    if (!ld)
        return MTL_ERR_NOMEM;
    ld->layer = l;
    ld->order_epoch = -1;
    ld->shard_count = 1;
    l->priv = ld;
    return MTL_OK;
}

/* The common end of setup: the start offset, the shuffle order's storage and the top shapes. */
static mtl_status loader_finish_setup(mtl_layer *l, loader *ld, int64_t rand_skip, mtl_error *err)
{
    if (rand_skip > 0)
        ld->skip = (int64_t)(hash3(ld->seed, STREAM_SKIP, 0) % (uint64_t)(rand_skip + 1));
    if (ld->shuffle && !(ld->order = mtl_calloc_or_fail((size_t)ld->n, sizeof(int64_t), err, "shuffle order")))
        return MTL_ERR_NOMEM;
    ld->sample_count = (int64_t)ld->tf.out_channels * ld->tf.out_height * ld->tf.out_width;
    if (!ld->has_boxes)
        ld->label_count = ld->n_labels;
    return l->ops->reshape(l, err);
}

static mtl_status loader_reshape(mtl_layer *l, mtl_error *err)
{
    loader *ld = l->priv;
    MTL_TRY(mtl_tensor_reshape4(l->tops[0], ld->batch_size, ld->tf.out_channels, ld->tf.out_height,
                                ld->tf.out_width, err));
    if (ld->has_boxes) {
        /* the box count changes with every batch: forward sets it; until then an empty list */
        if (l->tops[1]->ndim != 2 || l->tops[1]->shape[1] != 6)
            MTL_TRY(mtl_tensor_reshape(l->tops[1], 2, (int[]){0, 6}, err));
        if (l->n_tops > 2)
            MTL_TRY(mtl_tensor_reshape(l->tops[2], 2, (int[]){ld->batch_size, 3}, err));
    } else if (l->n_tops > 1) {
        int shape[2] = {ld->batch_size, ld->n_labels};
        MTL_TRY(mtl_tensor_reshape(l->tops[1], ld->n_labels == 1 ? 1 : 2, shape, err));
    }
    return MTL_OK;
}

static int64_t loader_count(const loader *ld, int i)
{
    return (int64_t)ld->batch_size * (i == 0 ? ld->sample_count : ld->label_count);
}

static mtl_status loader_start(mtl_layer *l, loader *ld, mtl_error *err)
{
    mtl_prefetch_config cfg = {.depth = ld->depth, .n_arrays = ld->label_top ? 2 : 1, .fill = loader_fill, .ctx = ld};
    for (int i = 0; i < cfg.n_arrays; i++)
        cfg.counts[i] = loader_count(ld, i);
    mtl_status st = mtl_prefetch_create(&cfg, ld->consumed, &ld->pf, err);
    return st == MTL_OK ? MTL_OK : layer_wrap(l, err, st, NULL);
}

/* Detection: each sample's slot holds its box count and that many (class, x1, y1, x2, y2); the
 * gt_boxes top lists them all as rows (batch index, x1, y1, x2, y2, class), im_info gives each
 * image's (height, width, scale). */
static mtl_status boxes_to_tops(mtl_layer *l, loader *ld, const float *slots, mtl_error *err)
{
    int total = 0;
    for (int s = 0; s < ld->batch_size; s++)
        total += (int)slots[(size_t)s * (size_t)ld->label_count];
    MTL_TRY(mtl_tensor_reshape(l->tops[1], 2, (int[]){total, 6}, err));
    float *row = l->tops[1]->data;
    for (int s = 0; s < ld->batch_size; s++) {
        const float *slot = slots + (size_t)s * (size_t)ld->label_count;
        for (int b = 0; b < (int)slot[0]; b++, row += 6) {
            const float *box = slot + 1 + 5 * b;
            row[0] = (float)s;
            memcpy(row + 1, box + 1, 4 * sizeof(float));
            row[5] = box[0];
        }
    }
    if (l->n_tops > 2)
        for (int s = 0; s < ld->batch_size; s++) {
            float *info = l->tops[2]->data + 3 * s;
            info[0] = (float)ld->tf.out_height;
            info[1] = (float)ld->tf.out_width;
            info[2] = 1.0f;
        }
    return MTL_OK;
}

/* Takes the next prefetched batch. A top whose storage is exactly one batch trades it with the
 * ring (no copy); otherwise the batch arrives in a staging buffer and is copied. */
static mtl_status loader_forward(mtl_layer *l, mtl_error *err)
{
    loader *ld = l->priv;
    if (!ld->pf)
        MTL_TRY(loader_start(l, ld, err));
    int n = ld->label_top ? 2 : 1, direct[2] = {0, 0};
    float *bufs[2] = {NULL, NULL};
    for (int i = 0; i < n; i++) {
        mtl_tensor *t = l->tops[i];
        int64_t count = loader_count(ld, i);
        /* box lists are compacted from their fixed-size slots, never traded */
        direct[i] = t->owns_storage && t->capacity == count && t->count == count && !(i == 1 && ld->has_boxes);
        if (!direct[i] && !ld->stage[i] && !(ld->stage[i] = mtl_aligned_alloc((size_t)count * sizeof(float))))
            return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory for a batch");
        bufs[i] = direct[i] ? t->data : ld->stage[i];
    }
    MTL_TRY(mtl_prefetch_take(ld->pf, bufs, &ld->wait_s, err));
    ld->consumed++;
    ld->n_waits++;
    for (int i = 0; i < n; i++) {
        if (direct[i]) {
            l->tops[i]->data = bufs[i];
        } else {
            if (i == 1 && ld->has_boxes)
                MTL_TRY(boxes_to_tops(l, ld, bufs[1], err));
            else
                memcpy(l->tops[i]->data, bufs[i], (size_t)loader_count(ld, i) * sizeof(float));
            ld->stage[i] = bufs[i];
        }
    }
    return MTL_OK;
}

static int loader_stats(mtl_layer *l, char *buf, size_t size)
{
    loader *ld = l->priv;
    if (!ld || ld->n_waits == 0 || size == 0)
        return 0;
    int n = snprintf(buf, size, "data wait %.2f ms/iter", 1e3 * ld->wait_s / (double)ld->n_waits);
    ld->wait_s = 0;
    ld->n_waits = 0;
    return n < 0 ? 0 : (size_t)n >= size ? (int)size - 1 : n;
}

/* Every data layer's saved state is its read position: a u64 count of what it has consumed. */
static size_t position_state_size(const mtl_layer *l)
{
    (void)l;
    return 8;
}

static mtl_status read_position(mtl_layer *l, const uint8_t *buf, size_t size, uint64_t max, uint64_t *out,
                                mtl_error *err)
{
    if (size != 8)
        return mtl_layer_fail(l, err, MTL_ERR_CORRUPT, "saved read position is %zu bytes, expected 8", size);
    *out = get_u64(buf);
    if (*out > max)
        return mtl_layer_fail(l, err, MTL_ERR_CORRUPT, "saved read position %llu is not a batch count",
                              (unsigned long long)*out);
    return MTL_OK;
}

static void loader_state_save(const mtl_layer *l, uint8_t *buf)
{
    const loader *ld = l->priv;
    put_u64(buf, (uint64_t)ld->consumed);
}

/* Restarts the prefetcher at the saved batch: what it had loaded ahead is dropped. */
static mtl_status loader_state_load(mtl_layer *l, const uint8_t *buf, size_t size, mtl_error *err)
{
    loader *ld = l->priv;
    uint64_t v = 0;
    MTL_TRY(read_position(l, buf, size, (uint64_t)INT64_MAX / 2 / (uint64_t)ld->batch_size, &v, err));
    mtl_prefetch_free(ld->pf);
    ld->pf = NULL;
    ld->consumed = (int64_t)v;
    return loader_start(l, ld, err);
}

static void loader_release(mtl_layer *l)
{
    loader *ld = l->priv;
    if (!ld)
        return;
    mtl_prefetch_free(ld->pf); /* first: joins the worker, which reads everything below */
    if (ld->db)
        mtl_db_close(ld->db);
    mtl_transform_free(&ld->tf);
    free(ld->order);
    for (int i = 0; i < 2; i++)
        mtl_aligned_free(ld->stage[i]);
    free(ld->source);
    free(ld->list);
    if (ld->paths)
        for (int64_t i = 0; i < ld->n; i++)
            free(ld->paths[i]);
    free(ld->paths);
    free(ld->lines);
    free(ld->labels);
    free(ld);
    l->priv = NULL;
}

/* Fields both loaders take: prefetch depth aside, the seed (an mtl extension). */
static mtl_status read_seed(mtl_layer *l, mtl_cfg_node *p, loader *ld, mtl_error *err)
{
    if (mtl_cfg_count(p, "seed") > 0) {
        int64_t seed;
        MTL_TRY(mtl_cfg_int(p, "seed", 0, &seed, err));
        ld->seed = mix64((uint64_t)seed);
    } else {
        mtl_cfg_accept(p, "seed");
        ld->seed = default_seed(l);
    }
    return MTL_OK;
}

static mtl_status check_batch_size(mtl_layer *l, const char *param, int64_t batch, mtl_error *err)
{
    if (batch <= 0)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%s.batch_size must be positive (it is %lld)", param,
                              (long long)batch);
    return MTL_OK;
}

/* ---- Data ------------------------------------------------------------------------------------ */

/* The class a network sees for a box: the position of its category id among the database's
 * categories, plus one (0 is background); without a category list, the id itself. */
static int box_class(const mtl_db_meta *meta, float id)
{
    if (!meta->category_ids)
        return id >= 1.0f && id == floorf(id) && id < 1e6f ? (int)id : -1;
    for (int c = 0; meta->label_names && meta->label_names[c]; c++)
        if ((float)meta->category_ids[c] == id)
            return c + 1;
    return -1;
}

/* Writes one record's boxes into its slot (count, then class x1 y1 x2 y2 each), moved with the
 * image's geometry; boxes that leave the image are dropped. */
static mtl_status boxes_of_record(loader *ld, const mtl_record *r, const sample_geometry *geometry,
                                  const char *what, float *slot, mtl_error *err)
{
    if (r->n_boxes > ld->max_boxes)
        return mtl_fail(err, MTL_ERR_CORRUPT, "%s has %d boxes, more than the %d the layer found at setup", what,
                        r->n_boxes, ld->max_boxes);
    int kept = 0;
    for (int b = 0; b < r->n_boxes; b++) {
        float v[5];
        for (int k = 0; k < 5; k++)
            v[k] = mtl_record_box(r, 5 * b + k);
        int cls = box_class(ld->meta, v[0]);
        if (cls < 0)
            return mtl_fail(err, MTL_ERR_CORRUPT, "%s: box %d has category %g, not one of the database's categories",
                            what, b, v[0]);
        float *out = slot + 1 + 5 * kept;
        float box[4] = {v[1], v[2], v[1] + v[3], v[2] + v[4]};
        if (!(v[3] > 0.0f && v[4] > 0.0f) || !mtl_transform_box(&ld->tf, geometry->crop, geometry->warp, box))
            continue;
        out[0] = (float)cls;
        memcpy(out + 1, box, sizeof(box));
        kept++;
    }
    slot[0] = (float)kept;
    return MTL_OK;
}

static mtl_status data_sample(loader *ld, int64_t index, uint64_t bits, float *data, float *labels, mtl_error *err)
{
    int64_t rec = ld->shard_rank + index * ld->shard_count;
    char what[512];
    snprintf(what, sizeof(what), "record %lld of '%s'", (long long)rec, ld->source);
    mtl_record r;
    sample_geometry geometry = {.warp = {.zoom = 1.0f}};
    MTL_TRY(mtl_db_get(ld->db, rec, &r, err));
    if (r.n_labels != ld->n_labels)
        return mtl_fail(err, MTL_ERR_CORRUPT, "%s has %d labels, the database's metadata says %d", what, r.n_labels,
                        ld->n_labels);
    if (r.flags & MTL_RECORD_ENCODED) {
        mtl_image img = {0};
        MTL_TRY(mtl_image_decode(r.data, r.n_bytes, ld->decode_channels, what, &img, err));
        mtl_pixels px = mtl_pixels_hwc(img.pixels, img.channels, img.height, img.width);
        mtl_status st = put_sample(ld, &px, bits, data, what, &geometry, err);
        mtl_image_free(&img);
        MTL_TRY(st);
    } else {
        if (r.channels <= 0 || r.height <= 0 || r.width <= 0 ||
            (uint64_t)r.channels * (uint64_t)r.height * (uint64_t)r.width != (uint64_t)r.n_bytes)
            return mtl_fail(err, MTL_ERR_CORRUPT, "%s: %zu pixel bytes for a %dx%dx%d image", what, r.n_bytes,
                            r.channels, r.height, r.width);
        /* straight from the memory map into the batch */
        mtl_pixels px = mtl_pixels_chw(r.data, r.channels, r.height, r.width);
        MTL_TRY(put_sample(ld, &px, bits, data, what, &geometry, err));
    }
    if (labels && ld->has_boxes)
        return boxes_of_record(ld, &r, &geometry, what, labels, err);
    if (labels) {
        for (int k = 0; k < ld->n_labels; k++)
            labels[k] = mtl_record_label(&r, k);
        mtl_transform_points(&ld->tf, geometry.crop, geometry.warp, labels);
    }
    return MTL_OK;
}

/* A detection database's box slots are as large as its fullest record: one pass over the shard's
 * record headers at setup finds it. Landmarks make no sense there. */
static mtl_status scan_boxes(mtl_layer *l, loader *ld, mtl_error *err)
{
    if (ld->tf.landmarks.count)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "transform_param.landmarks needs label columns, and '%s' holds "
                              "box lists", ld->source);
    ld->max_boxes = 0;
    for (int64_t i = 0; i < ld->n; i++) {
        mtl_record r;
        mtl_status st = mtl_db_get(ld->db, ld->shard_rank + i * ld->shard_count, &r, err);
        if (st != MTL_OK)
            return layer_wrap(l, err, st, NULL);
        if (r.n_boxes > ld->max_boxes)
            ld->max_boxes = r.n_boxes;
    }
    ld->label_count = 1 + 5 * (int64_t)ld->max_boxes;
    return MTL_OK;
}

/* data_param as Caffe defines it, plus mtl's extensions:
 *   shuffle: true      a new order every epoch, drawn from the seed (default false: record order)
 *   seed: N            the seed of the order, crops and flips (default: from the net's seed)
 *   shard_rank: r      read only records with index % shard_count == r (distributed training);
 *   shard_count: c     each rank then has its own epochs over its share
 * rand_skip moves the start by a seeded draw in [0, rand_skip] (Caffe draws it unseeded).
 * backend: mtl reads LMDB only. Caffe's default backend is LEVELDB; mtl takes a missing backend as
 * LMDB (its databases are all LMDB) and refuses an explicit LEVELDB. */
static mtl_status data_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p, *tp;
    MTL_TRY(mtl_layer_param_message(l, "data_param", &p, err));
    MTL_TRY(mtl_layer_param_message(l, "transform_param", &tp, err));
    loader *ld;
    MTL_TRY(loader_new(l, &ld, err));
    ld->sample = data_sample;

    static const char *const backends[] = {"LEVELDB", "LMDB"};
    const char *source = NULL;
    int64_t batch, rand_skip, prefetch;
    int backend, force_encoded_color;
    int backend_given = mtl_cfg_count(p, "backend") > 0;
    MTL_TRY(mtl_cfg_string(p, "source", NULL, &source, err));
    MTL_TRY(mtl_cfg_int_range(p, "batch_size", 0, 0, INT_MAX, &batch, err));
    MTL_TRY(mtl_cfg_int_range(p, "rand_skip", 0, 0, INT32_MAX, &rand_skip, err));
    MTL_TRY(mtl_cfg_enum(p, "backend", backends, 2, 1, &backend, err));
    MTL_TRY(mtl_cfg_int_range(p, "prefetch", 4, 1, 1024, &prefetch, err));
    MTL_TRY(mtl_cfg_bool(p, "force_encoded_color", 0, &force_encoded_color, err));
    MTL_TRY(mtl_cfg_bool(p, "shuffle", 0, &ld->shuffle, err));
    MTL_TRY(mtl_cfg_int_range(p, "shard_rank", 0, 0, INT32_MAX, &ld->shard_rank, err));
    MTL_TRY(mtl_cfg_int_range(p, "shard_count", 1, 1, INT32_MAX, &ld->shard_count, err));
    MTL_TRY(read_seed(l, p, ld, err));
    MTL_TRY(mtl_transform_read(tp, p, l->phase, &ld->tf, err));
    ld->depth = (int)prefetch;
    ld->batch_size = (int)batch;
    ld->label_top = l->n_tops > 1;
    ld->decode_channels = ld->tf.force_gray ? 1 : (ld->tf.force_color || force_encoded_color) ? 3 : 0;

    if (!source || !source[0])
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "data_param needs a source: the LMDB database written by `mtl convert`");
    MTL_TRY(check_batch_size(l, "data_param", batch, err));
    if (backend == 0)
        return mtl_layer_fail(l, err, MTL_ERR_UNSUPPORTED,
                              "backend LEVELDB is not supported: mtl reads LMDB databases (write one with `mtl "
                              "convert`, or drop the backend field)");
    if (ld->shard_rank >= ld->shard_count)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "shard_rank %lld is not below shard_count %lld",
                              (long long)ld->shard_rank, (long long)ld->shard_count);

    if (!(ld->source = absolute_path(source)))
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory");
    struct stat sb;
    if (stat(ld->source, &sb) != 0) {
        int e = errno;
        return mtl_layer_fail(l, err, e == ENOENT ? MTL_ERR_NOT_FOUND : MTL_ERR_IO,
                              "data_param.source '%s' %s%s (looked for %s; a relative source is taken from the "
                              "current directory, as in Caffe)",
                              source, e == ENOENT ? "does not exist" : "cannot be read: ",
                              e == ENOENT ? "" : strerror(e), ld->source);
    }
    mtl_status st = mtl_db_open(ld->source, &ld->db, err);
    if (st != MTL_OK)
        return layer_wrap(l, err, st,
                          backend_given ? "data_param.source"
                                        : "data_param.source (no backend given: Caffe would read LEVELDB, mtl "
                                          "reads only its own LMDB databases)");
    const mtl_db_meta *meta = mtl_db_meta_of(ld->db);
    int64_t count = meta->count;
    ld->n = count / ld->shard_count + (ld->shard_rank < count % ld->shard_count);
    if (ld->n <= 0)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "database '%s' holds %lld records: none for shard %lld of %lld",
                              ld->source, (long long)count, (long long)ld->shard_rank, (long long)ld->shard_count);
    ld->n_labels = meta->n_labels;
    ld->meta = meta;
    ld->has_boxes = meta->has_boxes;
    if (ld->has_boxes && (st = scan_boxes(l, ld, err)) != MTL_OK)
        return st;
    if (!ld->has_boxes && l->n_tops > 2)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "%d tops, but '%s' is not a detection database: its tops are data and label", l->n_tops,
                              ld->source);
    if (!ld->has_boxes && ld->label_top && ld->n_labels <= 0)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "top '%s' wants labels, but the records of '%s' have none",
                              l->tops[1]->name ? l->tops[1]->name : "1", ld->source);
    if (!ld->has_boxes && ld->label_top && (st = mtl_transform_check_labels(&ld->tf, ld->n_labels, err)) != MTL_OK)
        return layer_wrap(l, err, st, NULL);

    /* the first record of this shard fixes the batch's shape, as in Caffe */
    mtl_record first;
    if ((st = mtl_db_get(ld->db, ld->shard_rank, &first, err)) != MTL_OK)
        return layer_wrap(l, err, st, NULL);
    int channels = first.channels;
    if ((first.flags & MTL_RECORD_ENCODED) && ld->decode_channels)
        channels = ld->decode_channels;
    if ((st = mtl_transform_setup(&ld->tf, channels, first.height, first.width, err)) != MTL_OK)
        return layer_wrap(l, err, st, NULL);
    return loader_finish_setup(l, ld, rand_skip, err);
}

const mtl_layer_ops mtl_layer_data = {
    .type = "Data",
    .min_bottoms = 0,
    .max_bottoms = 0,
    .min_tops = 1,
    .max_tops = 3,
    .no_backward = 1,
    .setup = data_setup,
    .reshape = loader_reshape,
    .forward = loader_forward,
    .release = loader_release,
    .stats = loader_stats,
    .state_size = position_state_size,
    .state_save = loader_state_save,
    .state_load = loader_state_load,
};

/* ---- ImageData ------------------------------------------------------------------------------- */

static mtl_status image_sample(loader *ld, int64_t index, uint64_t bits, float *data, float *labels, mtl_error *err)
{
    char what[512];
    snprintf(what, sizeof(what), "image list '%s' line %d", ld->list, ld->lines[index]);
    mtl_image img = {0};
    sample_geometry geometry = {.warp = {.zoom = 1.0f}};
    float sx = 1.0f, sy = 1.0f; /* the resize's factors, for landmark labels */
    mtl_status st = mtl_image_load(ld->paths[index], ld->image_channels, &img, err);
    if (st == MTL_OK && ld->new_height > 0) {
        sx = (float)ld->new_width / (float)img.width;
        sy = (float)ld->new_height / (float)img.height;
        mtl_image resized = {0};
        st = mtl_image_resize(&img, ld->new_width, ld->new_height, &resized, err);
        mtl_image_free(&img);
        img = resized;
    }
    if (st == MTL_OK) {
        mtl_pixels px = mtl_pixels_hwc(img.pixels, img.channels, img.height, img.width);
        char where[1024];
        snprintf(where, sizeof(where), "%s ('%s')", what, ld->paths[index]);
        st = put_sample(ld, &px, bits, data, where, &geometry, err);
    } else {
        char msg[MTL_ERROR_MAX];
        snprintf(msg, sizeof(msg), "%s", err->message);
        mtl_fail(err, st, "%s: %s", what, msg);
    }
    mtl_image_free(&img);
    MTL_TRY(st);
    if (labels) {
        memcpy(labels, ld->labels + (size_t)index * (size_t)ld->n_labels, (size_t)ld->n_labels * sizeof(float));
        if (sx != 1.0f || sy != 1.0f)
            mtl_transform_points_resize(&ld->tf, sx, sy, labels);
        mtl_transform_points(&ld->tf, geometry.crop, geometry.warp, labels);
    }
    return MTL_OK;
}

/* root_folder joined to a list entry; Caffe concatenates, mtl adds the '/' a folder name lacks. */
static char *join_root(const char *root, const char *path)
{
    if (!root || !root[0] || path[0] == '/')
        return mtl_strdup(path);
    size_t nr = strlen(root), np = strlen(path);
    int slash = root[nr - 1] != '/';
    char *out = malloc(nr + (size_t)slash + np + 1);
    if (!out)
        return NULL;
    memcpy(out, root, nr);
    if (slash)
        out[nr] = '/';
    memcpy(out + nr + (size_t)slash, path, np + 1);
    return out;
}

/* Parses a label: a number, or '-' for a missing one (NaN, which loss layers skip). */
static int parse_label(const char *s, float *out)
{
    if (strcmp(s, "-") == 0) {
        *out = NAN;
        return 1;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(v))
        return 0;
    *out = (float)v;
    return 1;
}

/* Reads the list file: one image per line, `path label1 ... labelK`, K fixed by the first line. */
static mtl_status read_list(mtl_layer *l, loader *ld, const char *shown, const char *root, mtl_error *err)
{
    FILE *f = fopen(ld->list, "r");
    if (!f) {
        int e = errno;
        return mtl_layer_fail(l, err, e == ENOENT ? MTL_ERR_NOT_FOUND : MTL_ERR_IO,
                              "image_data_param.source '%s' %s%s (looked for %s; a relative source is taken from "
                              "the current directory, as in Caffe)",
                              shown, e == ENOENT ? "does not exist" : "cannot be read: ",
                              e == ENOENT ? "" : strerror(e), ld->list);
    }
    char *line = NULL;
    size_t line_cap = 0;
    int line_no = 0, first_line = 0;
    int64_t cap = 0;
    mtl_status st = MTL_OK;
    while (st == MTL_OK && getline(&line, &line_cap, f) >= 0) {
        line_no++;
        char *save = NULL, *path = strtok_r(line, " \t\r\n", &save);
        if (!path)
            continue;
        char *tok[4096];
        int k = 0;
        for (char *t; (t = strtok_r(NULL, " \t\r\n", &save));) {
            if (k == (int)(sizeof(tok) / sizeof(tok[0]))) {
                st = mtl_layer_fail(l, err, MTL_ERR_CONFIG, "image list '%s' line %d: more than %d labels", ld->list,
                                    line_no, k);
                break;
            }
            tok[k++] = t;
        }
        if (st != MTL_OK)
            break;
        if (!first_line) {
            first_line = line_no;
            ld->n_labels = k;
        } else if (k != ld->n_labels) {
            st = mtl_layer_fail(l, err, MTL_ERR_CONFIG, "image list '%s' line %d: %d labels, but line %d has %d",
                                ld->list, line_no, k, first_line, ld->n_labels);
            break;
        }
        if (ld->n == cap) {
            cap = cap ? 2 * cap : 256;
            char **paths = realloc(ld->paths, (size_t)cap * sizeof(*paths));
            if (paths)
                ld->paths = paths;
            int *lines = realloc(ld->lines, (size_t)cap * sizeof(*lines));
            if (lines)
                ld->lines = lines;
            float *labels = realloc(ld->labels, (size_t)cap * (size_t)(k ? k : 1) * sizeof(*labels));
            if (labels)
                ld->labels = labels;
            if (!paths || !lines || !labels) {
                st = mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory reading image list '%s'", ld->list);
                break;
            }
        }
        for (int i = 0; i < k && st == MTL_OK; i++)
            if (!parse_label(tok[i], &ld->labels[ld->n * k + i]))
                st = mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                                    "image list '%s' line %d: label %d '%s' is not a number (write '-' for a "
                                    "missing label)",
                                    ld->list, line_no, i + 1, tok[i]);
        if (st != MTL_OK)
            break;
        if (!(ld->paths[ld->n] = join_root(root, path))) {
            st = mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory reading image list '%s'", ld->list);
            break;
        }
        ld->lines[ld->n] = line_no;
        ld->n++;
    }
    if (st == MTL_OK && ferror(f))
        st = mtl_layer_fail(l, err, MTL_ERR_IO, "cannot read image list '%s'", ld->list);
    free(line);
    fclose(f);
    if (st == MTL_OK && ld->n == 0)
        st = mtl_layer_fail(l, err, MTL_ERR_CONFIG, "image list '%s' names no images", ld->list);
    return st;
}

/* image_data_param as Caffe defines it (labels generalised: K per line, '-' for missing), plus
 * mtl's `seed` (rand_skip and seed as in data_param). */
static mtl_status image_data_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p, *tp;
    MTL_TRY(mtl_layer_param_message(l, "image_data_param", &p, err));
    MTL_TRY(mtl_layer_param_message(l, "transform_param", &tp, err));
    loader *ld;
    MTL_TRY(loader_new(l, &ld, err));
    ld->sample = image_sample;

    const char *source = NULL, *root = NULL;
    int64_t batch, rand_skip, new_height, new_width;
    int is_color;
    MTL_TRY(mtl_cfg_string(p, "source", NULL, &source, err));
    MTL_TRY(mtl_cfg_int_range(p, "batch_size", 1, 0, INT_MAX, &batch, err));
    MTL_TRY(mtl_cfg_int_range(p, "rand_skip", 0, 0, INT32_MAX, &rand_skip, err));
    MTL_TRY(mtl_cfg_bool(p, "shuffle", 0, &ld->shuffle, err));
    MTL_TRY(mtl_cfg_int_range(p, "new_height", 0, 0, 1 << 16, &new_height, err));
    MTL_TRY(mtl_cfg_int_range(p, "new_width", 0, 0, 1 << 16, &new_width, err));
    MTL_TRY(mtl_cfg_bool(p, "is_color", 1, &is_color, err));
    MTL_TRY(mtl_cfg_string(p, "root_folder", "", &root, err));
    MTL_TRY(read_seed(l, p, ld, err));
    MTL_TRY(mtl_transform_read(tp, p, l->phase, &ld->tf, err));
    ld->depth = 4;
    ld->batch_size = (int)batch;
    ld->label_top = l->n_tops > 1;
    ld->image_channels = is_color ? 3 : 1;
    ld->new_height = (int)new_height;
    ld->new_width = (int)new_width;

    if (!source || !source[0])
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "image_data_param needs a source: a list file of images");
    MTL_TRY(check_batch_size(l, "image_data_param", batch, err));
    if ((new_height > 0) != (new_width > 0))
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "give both new_height and new_width, or neither");
    if (!(ld->list = absolute_path(source)))
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "out of memory");
    MTL_TRY(read_list(l, ld, source, root, err));
    if (ld->label_top && ld->n_labels == 0)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "top '%s' wants labels, but image list '%s' has none",
                              l->tops[1]->name ? l->tops[1]->name : "1", ld->list);
    if (ld->label_top && mtl_transform_check_labels(&ld->tf, ld->n_labels, err) != MTL_OK)
        return layer_wrap(l, err, MTL_ERR_CONFIG, NULL);

    /* the first image fixes the batch's shape, as in Caffe */
    int height = ld->new_height, width = ld->new_width;
    if (!height) {
        int c;
        mtl_status st = mtl_image_probe(ld->paths[0], &width, &height, &c, err);
        if (st != MTL_OK) {
            char what[512];
            snprintf(what, sizeof(what), "image list '%s' line %d", ld->list, ld->lines[0]);
            return layer_wrap(l, err, st, what);
        }
    }
    mtl_status st = mtl_transform_setup(&ld->tf, ld->image_channels, height, width, err);
    if (st != MTL_OK)
        return layer_wrap(l, err, st, NULL);
    return loader_finish_setup(l, ld, rand_skip, err);
}

const mtl_layer_ops mtl_layer_image_data = {
    .type = "ImageData",
    .min_bottoms = 0,
    .max_bottoms = 0,
    .min_tops = 1,
    .max_tops = 2,
    .no_backward = 1,
    .setup = image_data_setup,
    .reshape = loader_reshape,
    .forward = loader_forward,
    .release = loader_release,
    .stats = loader_stats,
    .state_size = position_state_size,
    .state_save = loader_state_save,
    .state_load = loader_state_load,
};

/* ---- MemoryData ------------------------------------------------------------------------------ */

typedef struct memory_data {
    int batch, channels, height, width;
    float *data;      /* n x channels x height x width */
    float *labels;    /* n x k */
    int64_t n;
    int k;
    int64_t consumed; /* batches served since the data was set */
} memory_data;

static mtl_status memory_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "memory_data_param", &p, err));
    memory_data *m = mtl_calloc_or_fail(1, sizeof(*m), err, "MemoryData state");
    if (!m)
        return MTL_ERR_NOMEM;
    l->priv = m;
    static const char *const names[4] = {"batch_size", "channels", "height", "width"};
    int *fields[4] = {&m->batch, &m->channels, &m->height, &m->width};
    for (int i = 0; i < 4; i++) {
        int64_t v;
        MTL_TRY(mtl_cfg_int_range(p, names[i], 0, 0, INT_MAX, &v, err));
        if (v <= 0)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "memory_data_param.%s must be positive (it is %lld)",
                                  names[i], (long long)v);
        *fields[i] = (int)v;
    }
    m->k = 1;
    return l->ops->reshape(l, err);
}

static mtl_status memory_reshape(mtl_layer *l, mtl_error *err)
{
    memory_data *m = l->priv;
    MTL_TRY(mtl_tensor_reshape4(l->tops[0], m->batch, m->channels, m->height, m->width, err));
    if (l->n_tops > 1) {
        int shape[2] = {m->batch, m->k};
        MTL_TRY(mtl_tensor_reshape(l->tops[1], m->k == 1 ? 1 : 2, shape, err));
    }
    return MTL_OK;
}

static mtl_status memory_forward(mtl_layer *l, mtl_error *err)
{
    memory_data *m = l->priv;
    if (!m->data)
        return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT,
                              "no samples yet: give them with mtl_memory_data_set before the first forward");
    size_t per = (size_t)m->channels * (size_t)m->height * (size_t)m->width;
    for (int s = 0; s < m->batch; s++) {
        int64_t i = (m->consumed * m->batch + s) % m->n;
        memcpy(l->tops[0]->data + (size_t)s * per, m->data + (size_t)i * per, per * sizeof(float));
        if (l->n_tops > 1)
            memcpy(l->tops[1]->data + (size_t)s * (size_t)m->k, m->labels + (size_t)i * (size_t)m->k,
                   (size_t)m->k * sizeof(float));
    }
    m->consumed = (m->consumed + 1) % m->n; /* the position only matters modulo n */
    return MTL_OK;
}

mtl_status mtl_memory_data_set(mtl_layer *l, const float *data, const float *labels, int n, int k, mtl_error *err)
{
    if (!l || l->ops != &mtl_layer_memory_data || !l->priv)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_memory_data_set: layer '%s' is not a MemoryData layer",
                        l && l->name ? l->name : "?");
    memory_data *m = l->priv;
    if (n <= 0 || !data)
        return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT, "mtl_memory_data_set: %d samples given, at least one needed",
                              n);
    if (k < 0 || (k > 0) != (labels != NULL))
        return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT,
                              "mtl_memory_data_set: give labels with k >= 1 per sample, or NULL with k = 0 (k is %d)",
                              k);
    if (l->n_tops > 1 && k == 0)
        return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT, "mtl_memory_data_set: the layer has a label top: give labels");
    size_t per = (size_t)m->channels * (size_t)m->height * (size_t)m->width;
    float *d = malloc((size_t)n * per * sizeof(float));
    float *lab = k ? malloc((size_t)n * (size_t)k * sizeof(float)) : NULL;
    if (!d || (k && !lab)) {
        free(d);
        free(lab);
        return mtl_layer_fail(l, err, MTL_ERR_NOMEM, "mtl_memory_data_set: out of memory for %d samples", n);
    }
    memcpy(d, data, (size_t)n * per * sizeof(float));
    if (k)
        memcpy(lab, labels, (size_t)n * (size_t)k * sizeof(float));
    free(m->data);
    free(m->labels);
    m->data = d;
    m->labels = lab;
    m->n = n;
    m->k = k ? k : 1;
    m->consumed = 0;
    return MTL_OK;
}

static void memory_state_save(const mtl_layer *l, uint8_t *buf)
{
    const memory_data *m = l->priv;
    put_u64(buf, (uint64_t)m->consumed);
}

static mtl_status memory_state_load(mtl_layer *l, const uint8_t *buf, size_t size, mtl_error *err)
{
    memory_data *m = l->priv;
    uint64_t v = 0;
    MTL_TRY(read_position(l, buf, size, INT64_MAX, &v, err));
    m->consumed = m->n ? (int64_t)(v % (uint64_t)m->n) : (int64_t)v;
    return MTL_OK;
}

static void memory_release(mtl_layer *l)
{
    memory_data *m = l->priv;
    if (m) {
        free(m->data);
        free(m->labels);
    }
    free(m);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_memory_data = {
    .type = "MemoryData",
    .min_bottoms = 0,
    .max_bottoms = 0,
    .min_tops = 1,
    .max_tops = 2,
    .no_backward = 1,
    .setup = memory_setup,
    .reshape = memory_reshape,
    .forward = memory_forward,
    .release = memory_release,
    .state_size = position_state_size,
    .state_save = memory_state_save,
    .state_load = memory_state_load,
};
