/* The four Fashion-MNIST data set builders (docs/datasets.md). Each output item draws its random
 * choices, in a fixed order, from its own stream seeded by (seed, data set, split, index): items
 * are rendered and written in parallel, yet the files are the same bit for bit whatever the thread
 * count, and a limited build is a prefix of the full one. List files and JSON go last. */
#include "data/builders.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/rng.h"
#include "data/fashion.h"
#include "data/image.h"

#define PI_D 3.14159265358979323846
#define ITEM MTL_FASHION_SIZE /* 28 */
#define ITEM_PIXELS (ITEM * ITEM)
#define CHUNK 1024 /* items between progress reports and stop checks */

#define DET_MAX_ITEMS 5
#define DET_MIN_SIZE 24
#define DET_MAX_SIZE 64
#define DET_TRIES 50
#define DET_MAX_IOU 0.3
#define DET_NOISE_SIGMA 8.0f
#define VERIFY_FOLDS 10
#define VERIFY_PAIRS_PER_FOLD 600
#define VERIFY_PAIR_TRIES 100 /* redraws of a pair already listed (only tiny --limit builds run out) */

enum { SPLIT_TRAIN, SPLIT_TEST, STREAM_PAIRS };
static const char *const split_names[2] = {"train", "test"};

/* Full-size split counts per data set (train, test); 0 means "every source item". */
static const int64_t full_counts[MTL_DATASET_COUNT][2] = {
    [MTL_DATASET_MULTIFASHION] = {0, 0},
    [MTL_DATASET_FASHIONDET] = {10000, 2000},
    [MTL_DATASET_FASHIONPOSE] = {30000, 5000},
    [MTL_DATASET_FASHIONVERIFY] = {0, 0},
};

static const char *const dataset_names[MTL_DATASET_COUNT] = {"multifashion", "fashiondet", "fashionpose",
                                                              "fashionverify"};

const char *mtl_dataset_name(mtl_dataset_kind kind)
{
    return (int)kind >= 0 && kind < MTL_DATASET_COUNT ? dataset_names[kind] : "?";
}

int mtl_dataset_from_name(const char *name, mtl_dataset_kind *kind)
{
    for (int k = 0; k < MTL_DATASET_COUNT; k++)
        if (name && strcmp(name, dataset_names[k]) == 0) {
            *kind = (mtl_dataset_kind)k;
            return 0;
        }
    return -1;
}

/* ================================================================== random streams */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A stream per (seed, data set, split or purpose, item index): hashing all four keeps streams of
 * neighbouring seeds or items unrelated. */
static void item_rng(mtl_rng *rng, uint64_t seed, mtl_dataset_kind kind, int stream, int64_t index)
{
    uint64_t h = mix64(seed ^ 0x6d746c2d64617461ULL);
    h = mix64(h ^ ((uint64_t)kind << 8 | (uint64_t)stream));
    h = mix64(h ^ (uint64_t)index);
    mtl_rng_seed(rng, h);
}

/* ================================================================== geometry */

int mtl_dataset_tight_box(const uint8_t *img, int w, int h, int threshold, int box[4])
{
    int x0 = w, y0 = h, x1 = -1, y1 = -1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (img[y * w + x] > threshold) {
                x0 = x < x0 ? x : x0;
                x1 = x > x1 ? x : x1;
                y0 = y < y0 ? y : y0;
                y1 = y > y1 ? y : y1;
            }
    if (x1 < 0) {
        box[0] = box[1] = box[2] = box[3] = 0;
        return 0;
    }
    box[0] = x0;
    box[1] = y0;
    box[2] = x1 - x0 + 1;
    box[3] = y1 - y0 + 1;
    return 1;
}

double mtl_dataset_iou(const int a[4], const int b[4])
{
    int ix = (a[0] + a[2] < b[0] + b[2] ? a[0] + a[2] : b[0] + b[2]) - (a[0] > b[0] ? a[0] : b[0]);
    int iy = (a[1] + a[3] < b[1] + b[3] ? a[1] + a[3] : b[1] + b[3]) - (a[1] > b[1] ? a[1] : b[1]);
    double inter = ix > 0 && iy > 0 ? (double)ix * iy : 0.0;
    double uni = (double)a[2] * a[3] + (double)b[2] * b[3] - inter;
    return uni > 0 ? inter / uni : 0.0;
}

int mtl_multifashion_source(int dst)
{
    return (2 * dst + 1) * MTL_MULTIFASHION_CANVAS / (2 * ITEM);
}

void mtl_multifashion_compose(const uint8_t *left, const uint8_t *right, uint8_t *out)
{
    enum { C = MTL_MULTIFASHION_CANVAS, OFF = 6 }; /* the right item covers rows/cols [6, 34) */
    uint8_t canvas[C * C];
    memset(canvas, 0, sizeof(canvas));
    for (int r = 0; r < ITEM; r++)
        memcpy(canvas + r * C, left + r * ITEM, ITEM);
    for (int r = 0; r < ITEM; r++)
        for (int c = 0; c < ITEM; c++) {
            uint8_t *p = &canvas[(r + OFF) * C + c + OFF];
            uint8_t v = right[r * ITEM + c];
            *p = v > *p ? v : *p;
        }
    for (int r = 0; r < ITEM; r++)
        for (int c = 0; c < ITEM; c++)
            out[r * ITEM + c] = canvas[mtl_multifashion_source(r) * C + mtl_multifashion_source(c)];
}

static uint8_t round_pixel(double v)
{
    v = floor(v + 0.5);
    return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v;
}

/* Source coordinate of an output pixel centre under a centre-aligned resize, clamped to the item. */
static void bilinear_axis(int dst, int out_size, int *i0, int *i1, double *w)
{
    double f = (dst + 0.5) * ITEM / out_size - 0.5;
    if (f < 0)
        f = 0;
    if (f > ITEM - 1)
        f = ITEM - 1;
    *i0 = (int)f;
    *i1 = *i0 + 1 < ITEM ? *i0 + 1 : ITEM - 1;
    *w = f - *i0;
}

void mtl_fashiondet_scale(const uint8_t *item, int s, uint8_t *out)
{
    for (int y = 0; y < s; y++) {
        int y0, y1;
        double wy;
        bilinear_axis(y, s, &y0, &y1, &wy);
        for (int x = 0; x < s; x++) {
            int x0, x1;
            double wx;
            bilinear_axis(x, s, &x0, &x1, &wx);
            double top = (1 - wx) * item[y0 * ITEM + x0] + wx * item[y0 * ITEM + x1];
            double bottom = (1 - wx) * item[y1 * ITEM + x0] + wx * item[y1 * ITEM + x1];
            out[y * s + x] = round_pixel((1 - wy) * top + wy * bottom);
        }
    }
}

static double item_pixel_or_zero(const uint8_t *item, int x, int y)
{
    return x >= 0 && x < ITEM && y >= 0 && y < ITEM ? item[y * ITEM + x] : 0.0;
}

void mtl_fashionpose_render(const uint8_t *item, const mtl_pose_params *p, uint8_t *canvas, float landmarks[10])
{
    enum { S = MTL_FASHIONPOSE_SIZE };
    uint8_t frame[ITEM_PIXELS];
    for (int r = 0; r < ITEM; r++)
        for (int c = 0; c < ITEM; c++)
            frame[r * ITEM + c] = item[r * ITEM + (p->mirrored ? ITEM - 1 - c : c)];
    double th = p->theta * PI_D / 180.0, cs = cos(th), sn = sin(th), half = ITEM / 2.0;

    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            double dx = x + 0.5 - p->cx, dy = y + 0.5 - p->cy;
            double fx = (cs * dx + sn * dy) / p->scale + half - 0.5;
            double fy = (-sn * dx + cs * dy) / p->scale + half - 0.5;
            double x0 = floor(fx), y0 = floor(fy), wx = fx - x0, wy = fy - y0;
            int ix = (int)x0, iy = (int)y0;
            double top = (1 - wx) * item_pixel_or_zero(frame, ix, iy) + wx * item_pixel_or_zero(frame, ix + 1, iy);
            double bottom =
                (1 - wx) * item_pixel_or_zero(frame, ix, iy + 1) + wx * item_pixel_or_zero(frame, ix + 1, iy + 1);
            canvas[y * S + x] = round_pixel((1 - wy) * top + wy * bottom);
        }

    int box[4];
    if (!mtl_dataset_tight_box(frame, ITEM, ITEM, MTL_DATASET_BOX_THRESHOLD, box)) {
        box[0] = box[1] = 0;
        box[2] = box[3] = ITEM;
    }
    double bx0 = box[0], by0 = box[1], bx1 = box[0] + box[2], by1 = box[1] + box[3];
    const double points[5][2] = {{bx0, by0}, {bx1, by0}, {bx1, by1}, {bx0, by1}, {(bx0 + bx1) / 2, (by0 + by1) / 2}};
    for (int k = 0; k < 5; k++) {
        double ux = points[k][0] - half, uy = points[k][1] - half;
        landmarks[2 * k] = (float)(p->cx + p->scale * (cs * ux - sn * uy));
        landmarks[2 * k + 1] = (float)(p->cy + p->scale * (sn * ux + cs * uy));
    }
}

/* ================================================================== files */

static mtl_status make_dir(const char *path, mtl_error *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return mtl_fail(err, MTL_ERR_ARGUMENT, "output path '%s' is too long", path);
    for (char *p = buf + 1;; p++) {
        int end = *p == '\0';
        if (*p == '/' || end) {
            *p = '\0';
            struct stat sb;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return mtl_fail(err, MTL_ERR_IO, "cannot create the directory '%s': %s", buf, strerror(errno));
            if (stat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode))
                return mtl_fail(err, MTL_ERR_IO, "'%s' exists and is not a directory", buf);
            if (end)
                break;
            *p = '/';
        }
    }
    return MTL_OK;
}

/* A file written under "<path>.partial" and renamed to path once complete. */
typedef struct atomic_file {
    FILE *f;
    char path[PATH_MAX], tmp[PATH_MAX + 16];
} atomic_file;

static mtl_status atomic_open(atomic_file *a, const char *dir, const char *name, mtl_error *err)
{
    a->f = NULL;
    if (snprintf(a->path, sizeof(a->path), "%s/%s", dir, name) >= (int)sizeof(a->path))
        return mtl_fail(err, MTL_ERR_ARGUMENT, "output path '%s/%s' is too long", dir, name);
    snprintf(a->tmp, sizeof(a->tmp), "%s.partial", a->path);
    if (!(a->f = fopen(a->tmp, "w")))
        return mtl_fail(err, MTL_ERR_IO, "cannot write '%s': %s", a->tmp, strerror(errno));
    return MTL_OK;
}

static void atomic_abort(atomic_file *a)
{
    if (a->f) {
        fclose(a->f);
        remove(a->tmp);
        a->f = NULL;
    }
}

static mtl_status atomic_commit(atomic_file *a, mtl_error *err)
{
    int bad = fflush(a->f) != 0 || ferror(a->f);
    int e = errno;
    bad |= fclose(a->f) != 0;
    a->f = NULL;
    if (bad || rename(a->tmp, a->path) != 0) {
        e = bad ? e : errno;
        remove(a->tmp);
        return mtl_fail(err, MTL_ERR_IO, "cannot write '%s': %s", a->path, strerror(e));
    }
    return MTL_OK;
}

/* ================================================================== the build */

typedef struct det_box {
    int category; /* 0-9 */
    int box[4];   /* x, y, w, h on the canvas */
} det_box;

typedef struct pose_item {
    mtl_pose_params params;
    float landmarks[10];
    int label;
} pose_item;

typedef struct build_ctx {
    const mtl_dataset_options *opts;
    mtl_dataset_kind kind;
    const mtl_fashion_set *src[2];
    char dir[2][PATH_MAX];
    int64_t n[2];            /* output items per split */
    uint8_t *labels[2];      /* MultiFashion: left, right per item; FashionVerify: class per item */
    int64_t *source[2];      /* FashionVerify: source item of each output */
    det_box *det[2];         /* FashionDet: DET_MAX_ITEMS per image */
    uint8_t *det_count[2];   /* boxes placed per image */
    uint8_t *det_dropped[2]; /* items given up per image */
    pose_item *pose[2];
} build_ctx;

typedef mtl_status (*item_fn)(build_ctx *b, int split, int64_t k, mtl_error *err);

static mtl_status write_item_png(const build_ctx *b, int split, int64_t k, int size, uint8_t *pixels, mtl_error *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/%05lld.png", b->dir[split], (long long)k) >= (int)sizeof(path))
        return mtl_fail(err, MTL_ERR_ARGUMENT, "output path '%s' is too long", b->dir[split]);
    mtl_image img = {.width = size, .height = size, .channels = 1, .pixels = pixels};
    return mtl_image_write_png(path, &img, err);
}

static mtl_status multifashion_item(build_ctx *b, int split, int64_t k, mtl_error *err)
{
    const mtl_fashion_set *s = b->src[split];
    mtl_rng rng;
    item_rng(&rng, b->opts->seed, b->kind, split, k);
    int64_t j = mtl_rng_below(&rng, (uint32_t)s->count);
    uint8_t out[ITEM_PIXELS];
    mtl_multifashion_compose(s->images + k * ITEM_PIXELS, s->images + j * ITEM_PIXELS, out);
    b->labels[split][2 * k] = s->labels[k];
    b->labels[split][2 * k + 1] = s->labels[j];
    return write_item_png(b, split, k, ITEM, out, err);
}

static mtl_status fashiondet_item(build_ctx *b, int split, int64_t k, mtl_error *err)
{
    enum { S = MTL_FASHIONDET_SIZE };
    const mtl_fashion_set *s = b->src[split];
    mtl_rng rng;
    item_rng(&rng, b->opts->seed, b->kind, split, k);
    uint8_t *canvas = malloc(S * S);
    if (!canvas)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < S * S; i++)
        canvas[i] = round_pixel(mtl_rng_gaussian(&rng, 0.0f, DET_NOISE_SIGMA));

    det_box *boxes = b->det[split] + k * DET_MAX_ITEMS;
    int placed = 0, dropped = 0;
    int n_items = 1 + (int)mtl_rng_below(&rng, DET_MAX_ITEMS);
    for (int t = 0; t < n_items; t++) {
        int64_t src = mtl_rng_below(&rng, (uint32_t)s->count);
        int size = DET_MIN_SIZE + (int)mtl_rng_below(&rng, DET_MAX_SIZE - DET_MIN_SIZE + 1);
        uint8_t scaled[DET_MAX_SIZE * DET_MAX_SIZE];
        mtl_fashiondet_scale(s->images + src * ITEM_PIXELS, size, scaled);
        int tight[4];
        if (!mtl_dataset_tight_box(scaled, size, size, MTL_DATASET_BOX_THRESHOLD, tight)) {
            dropped++;
            continue;
        }
        int ok = 0, x = 0, y = 0, box[4];
        for (int attempt = 0; attempt < DET_TRIES && !ok; attempt++) {
            x = (int)mtl_rng_below(&rng, S - size + 1);
            y = (int)mtl_rng_below(&rng, S - size + 1);
            box[0] = x + tight[0];
            box[1] = y + tight[1];
            box[2] = tight[2];
            box[3] = tight[3];
            ok = 1;
            for (int q = 0; q < placed && ok; q++)
                ok = mtl_dataset_iou(box, boxes[q].box) <= DET_MAX_IOU;
        }
        if (!ok) {
            dropped++;
            continue;
        }
        for (int r = 0; r < size; r++)
            for (int c = 0; c < size; c++) {
                uint8_t *p = &canvas[(y + r) * S + x + c];
                *p = scaled[r * size + c] > *p ? scaled[r * size + c] : *p;
            }
        boxes[placed].category = s->labels[src];
        memcpy(boxes[placed].box, box, sizeof(box));
        placed++;
    }
    b->det_count[split][k] = (uint8_t)placed;
    b->det_dropped[split][k] = (uint8_t)dropped;
    mtl_status st = write_item_png(b, split, k, S, canvas, err);
    free(canvas);
    return st;
}

static mtl_status fashionpose_item(build_ctx *b, int split, int64_t k, mtl_error *err)
{
    enum { S = MTL_FASHIONPOSE_SIZE };
    const mtl_fashion_set *s = b->src[split];
    mtl_rng rng;
    item_rng(&rng, b->opts->seed, b->kind, split, k);
    pose_item *it = &b->pose[split][k];
    mtl_pose_params *p = &it->params;
    p->mirrored = mtl_rng_uniform(&rng) < 0.5f;
    p->theta = mtl_rng_range(&rng, -40.0f, 40.0f);
    p->scale = mtl_rng_range(&rng, 0.9f, 1.6f);
    /* half the extent of the rotated, scaled 28x28 frame: at most 14 * 1.6 * 1.41 < 32, so the
     * whole frame, and with it the item and its landmarks, always fits on the canvas */
    double th = p->theta * PI_D / 180.0;
    float e = (float)(ITEM / 2.0 * p->scale * (fabs(cos(th)) + fabs(sin(th))));
    p->cx = mtl_rng_range(&rng, e, S - e);
    p->cy = mtl_rng_range(&rng, e, S - e);
    it->label = s->labels[k];
    uint8_t canvas[S * S];
    mtl_fashionpose_render(s->images + k * ITEM_PIXELS, p, canvas, it->landmarks);
    return write_item_png(b, split, k, S, canvas, err);
}

static mtl_status fashionverify_item(build_ctx *b, int split, int64_t k, mtl_error *err)
{
    const mtl_fashion_set *s = b->src[split];
    uint8_t pixels[ITEM_PIXELS];
    memcpy(pixels, s->images + b->source[split][k] * ITEM_PIXELS, ITEM_PIXELS);
    return write_item_png(b, split, k, ITEM, pixels, err);
}

/* Runs fn over the split's items in chunks: parallel inside a chunk, progress and the stop flag
 * between chunks. Of several failures the lowest item's error is kept, so it does not depend on
 * thread timing. */
static mtl_status run_split(build_ctx *b, int split, item_fn fn, mtl_error *err)
{
    const mtl_dataset_options *o = b->opts;
    int64_t n = b->n[split];
    if (o->progress && o->progress(o->progress_user, split_names[split], 0, n))
        return mtl_fail(err, MTL_ERR_INTERRUPTED, "stopped before the %s images", split_names[split]);
    for (int64_t start = 0; start < n; start += CHUNK) {
        if (o->stop_flag && *o->stop_flag)
            return mtl_fail(err, MTL_ERR_INTERRUPTED, "interrupted after %lld of %lld %s images; %s's list was not "
                            "written, so this build is visibly incomplete", (long long)start, (long long)n,
                            split_names[split], split_names[split]);
        int64_t end = start + CHUNK < n ? start + CHUNK : n, fail_at = -1;
        mtl_error *first = malloc(sizeof(*first));
        if (!first)
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
#pragma omp parallel for schedule(dynamic, 8)
        for (int64_t k = start; k < end; k++) {
            mtl_error e = {0};
            if (fn(b, split, k, &e) != MTL_OK) {
#pragma omp critical(mtl_dataset_failure)
                if (fail_at < 0 || k < fail_at) {
                    fail_at = k;
                    *first = e;
                }
            }
        }
        if (fail_at >= 0) {
            if (err)
                *err = *first;
            free(first);
            return mtl_error_prefix(err, "%s item %lld: ", split_names[split], (long long)fail_at);
        }
        free(first);
        if (o->progress && o->progress(o->progress_user, split_names[split], end, n))
            return mtl_fail(err, MTL_ERR_INTERRUPTED, "stopped after %lld of %lld %s images", (long long)end,
                            (long long)n, split_names[split]);
    }
    return MTL_OK;
}

/* ---------------------------------------------------------------- lists */

static void item_name(char *buf, size_t size, int split, int64_t k)
{
    snprintf(buf, size, "%s/%05lld.png", split_names[split], (long long)k);
}

static mtl_status write_list(build_ctx *b, int split, mtl_error *err)
{
    char name[32];
    snprintf(name, sizeof(name), "%s.txt", split_names[split]);
    atomic_file a;
    MTL_TRY(atomic_open(&a, b->opts->out, name, err));
    for (int64_t k = 0; k < b->n[split]; k++) {
        char path[32];
        item_name(path, sizeof(path), split, k);
        if (b->kind == MTL_DATASET_MULTIFASHION) {
            fprintf(a.f, "%s %d %d\n", path, b->labels[split][2 * k], b->labels[split][2 * k + 1]);
        } else if (b->kind == MTL_DATASET_FASHIONVERIFY) {
            fprintf(a.f, "%s %d\n", path, b->labels[split][k]);
        } else {
            const pose_item *it = &b->pose[split][k];
            const mtl_pose_params *p = &it->params;
            fprintf(a.f, "%s", path);
            for (int q = 0; q < 10; q++)
                fprintf(a.f, " %.3f", it->landmarks[q]);
            int pose = p->theta < -15.0f ? 0 : p->theta > 15.0f ? 2 : 1;
            fprintf(a.f, " %d %d %d %d %d\n", it->label, mtl_fashion_group(it->label), pose, p->mirrored,
                    p->scale < 1.25f ? 0 : 1);
        }
    }
    return atomic_commit(&a, err);
}

/* cJSON reports allocation failures by NULL returns; one flag collects them. */
static cJSON *json_add(cJSON *obj, const char *name, cJSON *item, int *ok)
{
    if (!item || !cJSON_AddItemToObject(obj, name, item)) {
        cJSON_Delete(item);
        *ok = 0;
        return NULL;
    }
    return item;
}

static void json_append(cJSON *array, cJSON *item, int *ok)
{
    if (!item || !cJSON_AddItemToArray(array, item)) {
        cJSON_Delete(item);
        *ok = 0;
    }
}

static cJSON *json_box(const int box[4])
{
    double v[4] = {box[0], box[1], box[2], box[3]};
    return cJSON_CreateDoubleArray(v, 4);
}

static mtl_status write_coco(build_ctx *b, int split, mtl_error *err)
{
    int ok = 1;
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory building the COCO JSON");
    cJSON *info = json_add(root, "info", cJSON_CreateObject(), &ok);
    if (info) {
        char text[160];
        snprintf(text, sizeof(text), "FashionDet %s split, built by mtl dataset fashiondet --seed %llu",
                 split_names[split], (unsigned long long)b->opts->seed);
        json_add(info, "description", cJSON_CreateString(text), &ok);
    }
    cJSON *images = json_add(root, "images", cJSON_CreateArray(), &ok);
    cJSON *annotations = json_add(root, "annotations", cJSON_CreateArray(), &ok);
    cJSON *categories = json_add(root, "categories", cJSON_CreateArray(), &ok);
    int64_t ann_id = 1;
    for (int64_t k = 0; ok && k < b->n[split]; k++) {
        char path[32];
        item_name(path, sizeof(path), split, k);
        cJSON *img = cJSON_CreateObject();
        json_append(images, img, &ok);
        if (!ok)
            break;
        json_add(img, "id", cJSON_CreateNumber((double)(k + 1)), &ok);
        json_add(img, "file_name", cJSON_CreateString(path), &ok);
        json_add(img, "width", cJSON_CreateNumber(MTL_FASHIONDET_SIZE), &ok);
        json_add(img, "height", cJSON_CreateNumber(MTL_FASHIONDET_SIZE), &ok);
        for (int t = 0; ok && t < b->det_count[split][k]; t++) {
            const det_box *d = &b->det[split][k * DET_MAX_ITEMS + t];
            cJSON *ann = cJSON_CreateObject();
            json_append(annotations, ann, &ok);
            if (!ok)
                break;
            json_add(ann, "id", cJSON_CreateNumber((double)ann_id++), &ok);
            json_add(ann, "image_id", cJSON_CreateNumber((double)(k + 1)), &ok);
            json_add(ann, "category_id", cJSON_CreateNumber(d->category + 1), &ok);
            json_add(ann, "bbox", json_box(d->box), &ok);
            json_add(ann, "area", cJSON_CreateNumber((double)d->box[2] * d->box[3]), &ok);
            json_add(ann, "iscrowd", cJSON_CreateNumber(0), &ok);
        }
    }
    for (int c = 0; ok && c < MTL_FASHION_CLASSES; c++) {
        cJSON *cat = cJSON_CreateObject();
        json_append(categories, cat, &ok);
        if (!ok)
            break;
        json_add(cat, "id", cJSON_CreateNumber(c + 1), &ok);
        json_add(cat, "name", cJSON_CreateString(mtl_fashion_class_name(c)), &ok);
        json_add(cat, "supercategory", cJSON_CreateString(mtl_fashion_group_name(mtl_fashion_group(c))), &ok);
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory building the COCO JSON for %s", split_names[split]);
    char name[32];
    snprintf(name, sizeof(name), "%s.json", split_names[split]);
    atomic_file a;
    mtl_status st = atomic_open(&a, b->opts->out, name, err);
    if (st == MTL_OK) {
        fputs(text, a.f);
        fputc('\n', a.f);
        st = atomic_commit(&a, err);
    }
    free(text);
    return st;
}

/* ---------------------------------------------------------------- FashionVerify pairs */

typedef struct pair_set {
    uint64_t *keys; /* open addressing; 0 is empty, keys are (a * n + b + 1) with a < b */
    size_t mask;
} pair_set;

/* Adds the unordered pair; returns 0 if it was already there. */
static int pair_set_add(pair_set *ps, int64_t a, int64_t b, int64_t n)
{
    if (a > b) {
        int64_t t = a;
        a = b;
        b = t;
    }
    uint64_t key = (uint64_t)(a * n + b) + 1;
    for (size_t i = mix64(key) & ps->mask;; i = (i + 1) & ps->mask) {
        if (ps->keys[i] == key)
            return 0;
        if (!ps->keys[i]) {
            ps->keys[i] = key;
            return 1;
        }
    }
}

/* The r-th test image (in class order) whose class is not c. */
static int64_t other_class_member(int64_t *const *members, const int64_t *count, int c, int64_t r)
{
    for (int q = 0; q < MTL_FASHION_CLASSES; q++) {
        if (q == c)
            continue;
        if (r < count[q])
            return members[q][r];
        r -= count[q];
    }
    return -1;
}

/* Pairs among the test images, fold by fold: the fold's same-class pairs, then its different-class
 * pairs (as LFW's pairs.txt lists them). A pair already listed (in either order) is redrawn. */
static mtl_status write_pairs(build_ctx *b, mtl_dataset_summary *sum, mtl_error *err)
{
    const int64_t n = b->n[SPLIT_TEST];
    const uint8_t *cls = b->labels[SPLIT_TEST];
    int64_t half = VERIFY_PAIRS_PER_FOLD / 2;
    if (b->opts->limit > 0 && b->opts->limit / 20 < half)
        half = b->opts->limit / 20 > 0 ? b->opts->limit / 20 : 1;

    int64_t count[MTL_FASHION_CLASSES] = {0}, *members[MTL_FASHION_CLASSES] = {0};
    int64_t *position = calloc((size_t)n + 1, sizeof(int64_t)), *eligible = calloc((size_t)n + 1, sizeof(int64_t));
    pair_set ps = {0};
    size_t cap = 1;
    while (cap < (size_t)(4 * VERIFY_FOLDS * 2 * half))
        cap <<= 1;
    ps.keys = calloc(cap, sizeof(uint64_t));
    ps.mask = cap - 1;
    mtl_status st = position && eligible && ps.keys ? MTL_OK : mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; st == MTL_OK && i < n; i++)
        count[cls[i]]++;
    for (int c = 0; st == MTL_OK && c < MTL_FASHION_CLASSES; c++) {
        members[c] = malloc(((size_t)count[c] + 1) * sizeof(int64_t));
        if (!members[c])
            st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        count[c] = 0;
    }
    int64_t n_eligible = 0;
    int n_classes = 0;
    for (int64_t i = 0; st == MTL_OK && i < n; i++) {
        position[i] = count[cls[i]];
        members[cls[i]][count[cls[i]]++] = i;
    }
    for (int64_t i = 0; st == MTL_OK && i < n; i++)
        if (count[cls[i]] >= 2)
            eligible[n_eligible++] = i;
    for (int c = 0; c < MTL_FASHION_CLASSES; c++)
        n_classes += count[c] > 0;
    if (st == MTL_OK && (n_eligible == 0 || n_classes < 2))
        st = mtl_fail(err, MTL_ERR_ARGUMENT,
                      "cannot draw verification pairs from %lld test images of %d classes: same-class pairs need "
                      "a class with two images and different-class pairs two classes (raise --limit)",
                      (long long)n, n_classes);

    atomic_file a = {0};
    if (st == MTL_OK)
        st = atomic_open(&a, b->opts->out, "pairs.txt", err);
    mtl_rng rng;
    item_rng(&rng, b->opts->seed, b->kind, STREAM_PAIRS, 0);
    for (int fold = 0; st == MTL_OK && fold < VERIFY_FOLDS; fold++)
        for (int64_t t = 0; t < 2 * half; t++) {
            int same = t < half;
            int64_t p = 0, q = 0;
            for (int attempt = 0; attempt < VERIFY_PAIR_TRIES; attempt++) {
                if (same) {
                    p = eligible[mtl_rng_below(&rng, (uint32_t)n_eligible)];
                    int c = cls[p];
                    int64_t r = mtl_rng_below(&rng, (uint32_t)(count[c] - 1));
                    q = members[c][r >= position[p] ? r + 1 : r];
                } else {
                    p = mtl_rng_below(&rng, (uint32_t)n);
                    int c = cls[p];
                    q = other_class_member(members, count, c, mtl_rng_below(&rng, (uint32_t)(n - count[c])));
                }
                if (pair_set_add(&ps, p, q, n))
                    break;
            }
            char pa[32], qa[32];
            item_name(pa, sizeof(pa), SPLIT_TEST, p);
            item_name(qa, sizeof(qa), SPLIT_TEST, q);
            fprintf(a.f, "%d %s %s %d\n", fold, pa, qa, same);
            sum->pairs++;
            sum->same_pairs += same;
        }
    if (st == MTL_OK)
        st = atomic_commit(&a, err);
    else
        atomic_abort(&a);
    for (int c = 0; c < MTL_FASHION_CLASSES; c++)
        free(members[c]);
    free(position);
    free(eligible);
    free(ps.keys);
    return st;
}

/* ---------------------------------------------------------------- driver */

static void ctx_free(build_ctx *b)
{
    for (int s = 0; s < 2; s++) {
        free(b->labels[s]);
        free(b->source[s]);
        free(b->det[s]);
        free(b->det_count[s]);
        free(b->det_dropped[s]);
        free(b->pose[s]);
    }
}

/* Output counts and per-item storage for one split. */
static mtl_status plan_split(build_ctx *b, int split, mtl_error *err)
{
    const mtl_fashion_set *s = b->src[split];
    int64_t n = full_counts[b->kind][split] ? full_counts[b->kind][split] : s->count;
    if (b->kind == MTL_DATASET_FASHIONPOSE && n > s->count)
        n = s->count;
    if (b->kind == MTL_DATASET_FASHIONVERIFY) {
        /* identities seen in training: classes 0-5 of train; unseen ones: classes 6-9 of t10k */
        n = 0;
        if (!(b->source[split] = malloc(((size_t)s->count + 1) * sizeof(int64_t))))
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; i < s->count; i++)
            if ((s->labels[i] < 6) == (split == SPLIT_TRAIN) && (b->opts->limit <= 0 || n < b->opts->limit))
                b->source[split][n++] = i;
    }
    if (b->opts->limit > 0 && n > b->opts->limit)
        n = b->opts->limit;
    b->n[split] = n;
    size_t m = (size_t)n + 1;
    int ok = 1;
    switch (b->kind) {
    case MTL_DATASET_MULTIFASHION:
        ok = (b->labels[split] = malloc(2 * m)) != NULL;
        break;
    case MTL_DATASET_FASHIONVERIFY:
        ok = (b->labels[split] = malloc(m)) != NULL;
        for (int64_t k = 0; ok && k < n; k++)
            b->labels[split][k] = s->labels[b->source[split][k]];
        break;
    case MTL_DATASET_FASHIONDET:
        ok = (b->det[split] = calloc(m * DET_MAX_ITEMS, sizeof(det_box))) && (b->det_count[split] = calloc(m, 1)) &&
             (b->det_dropped[split] = calloc(m, 1));
        break;
    case MTL_DATASET_FASHIONPOSE:
        ok = (b->pose[split] = calloc(m, sizeof(pose_item))) != NULL;
        break;
    default:
        break;
    }
    return ok ? MTL_OK : mtl_fail(err, MTL_ERR_NOMEM, "out of memory planning %lld %s items", (long long)n,
                                  split_names[split]);
}

static void summarize(const build_ctx *b, int split, mtl_dataset_summary *sum)
{
    int64_t n = b->n[split];
    sum->images[split] = n;
    for (int64_t k = 0; k < n; k++) {
        switch (b->kind) {
        case MTL_DATASET_MULTIFASHION:
            sum->objects[split]++;
            sum->per_class[split][b->labels[split][2 * k]]++;
            break;
        case MTL_DATASET_FASHIONVERIFY:
            sum->objects[split]++;
            sum->per_class[split][b->labels[split][k]]++;
            break;
        case MTL_DATASET_FASHIONDET:
            sum->objects[split] += b->det_count[split][k];
            sum->dropped[split] += b->det_dropped[split][k];
            for (int t = 0; t < b->det_count[split][k]; t++)
                sum->per_class[split][b->det[split][k * DET_MAX_ITEMS + t].category]++;
            break;
        case MTL_DATASET_FASHIONPOSE:
            sum->objects[split]++;
            sum->per_class[split][b->pose[split][k].label]++;
            break;
        default:
            break;
        }
    }
}

/* Removes the list files of an earlier build before images are rewritten under them. */
static mtl_status remove_lists(const char *out, mtl_error *err)
{
    static const char *const names[] = {"train.txt", "test.txt", "train.json", "test.json", "pairs.txt"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof(path), "%s/%s", out, names[i]) >= (int)sizeof(path))
            return mtl_fail(err, MTL_ERR_ARGUMENT, "output path '%s' is too long", out);
        if (unlink(path) != 0 && errno != ENOENT)
            return mtl_fail(err, MTL_ERR_IO, "cannot remove the old '%s': %s", path, strerror(errno));
    }
    return MTL_OK;
}

mtl_status mtl_dataset_build(mtl_dataset_kind kind, const mtl_dataset_options *opts, mtl_dataset_summary *summary,
                             mtl_error *err)
{
    static const item_fn item_fns[MTL_DATASET_COUNT] = {multifashion_item, fashiondet_item, fashionpose_item,
                                                        fashionverify_item};
    if ((int)kind < 0 || kind >= MTL_DATASET_COUNT)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "unknown data set kind %d", (int)kind);
    if (!opts || !opts->out || !*opts->out)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "no output directory given");
    if (opts->limit < 0)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "limit %lld is negative", (long long)opts->limit);
    mtl_dataset_summary local;
    mtl_dataset_summary *sum = summary ? summary : &local;
    memset(sum, 0, sizeof(*sum));

    mtl_fashion_set sets[2] = {{0}};
    build_ctx b = {.opts = opts, .kind = kind, .src = {&sets[0], &sets[1]}};
    mtl_status st = mtl_fashion_load(opts->source, "train", &sets[0], err);
    if (st == MTL_OK)
        st = mtl_fashion_load(opts->source, "t10k", &sets[1], err);
    for (int s = 0; st == MTL_OK && s < 2; s++) {
        if (snprintf(b.dir[s], sizeof(b.dir[s]), "%s/%s", opts->out, split_names[s]) >= (int)sizeof(b.dir[s]))
            st = mtl_fail(err, MTL_ERR_ARGUMENT, "output path '%s' is too long", opts->out);
        else
            st = plan_split(&b, s, err);
    }
    if (st == MTL_OK)
        st = make_dir(opts->out, err);
    if (st == MTL_OK)
        st = remove_lists(opts->out, err);
    for (int s = 0; st == MTL_OK && s < 2; s++) {
        st = make_dir(b.dir[s], err);
        if (st == MTL_OK)
            st = run_split(&b, s, item_fns[kind], err);
        if (st == MTL_OK)
            st = kind == MTL_DATASET_FASHIONDET ? write_coco(&b, s, err) : write_list(&b, s, err);
        if (st == MTL_OK)
            summarize(&b, s, sum);
    }
    if (st == MTL_OK && kind == MTL_DATASET_FASHIONVERIFY)
        st = write_pairs(&b, sum, err);
    ctx_free(&b);
    mtl_fashion_free(&sets[0]);
    mtl_fashion_free(&sets[1]);
    if (st != MTL_OK && st != MTL_ERR_INTERRUPTED)
        mtl_error_prefix(err, "%s: ", mtl_dataset_name(kind));
    return st;
}
