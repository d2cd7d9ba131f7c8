/* Tests for the data layers (Data, ImageData, MemoryData), the transforms and the prefetch thread:
 * databases written with the db writer API into a temporary directory are read back exactly, every
 * transform is checked against hand-computed arrays, shuffling is seeded, many epochs run through
 * the prefetch thread, state_save/state_load resumes with the same batches, and every error path
 * gives its message. */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/solver.h"
#include "test_util.h"
#include "core/net.h"
#include "data/db.h"
#include "data/image.h"
#include "data/prefetch.h"
#include "data/record.h"
#include "data/transform.h"
#include "gradcheck.h"
#include "layers/layers.h"
#include "layers/memory_data.h"

static char tmp_dir[256];

/* A path inside the temporary directory (a static buffer per call site is enough: copies are made). */
static char *tmp_path(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 512, "%s/%s", tmp_dir, name);
    return b;
}

/* Removes a directory tree (the test's temporary files). */
/* ---- writing test databases ----------------------------------------------------------------- */

/* Pixel c,h,w of record i (as stored), and its label k (NaN where missing_every divides i + k). */
static uint8_t pixel_of(int i, int c, int h, int w) { return (uint8_t)((i * 37 + c * 11 + h * 5 + w * 3) % 251); }
static float label_of(int i, int k) { return (float)(i * 10 + k) + 0.25f; }

typedef struct db_spec {
    int count, channels, height, width, n_labels;
    int encoded;       /* store PNG bytes */
    int missing_every; /* label k of record i is missing when (i + k) % missing_every == 0; 0: never */
} db_spec;

static int write_db(const char *path, const db_spec *s)
{
    mtl_error err = {0};
    mtl_db_writer *w = NULL;
    CHECK_OK(mtl_db_writer_open(path, &w, &err), &err);
    if (!w)
        return 0;
    size_t plane = (size_t)s->channels * s->height * s->width;
    uint8_t *chw = malloc(plane), *hwc = malloc(plane);
    float *labels = malloc((size_t)(s->n_labels ? s->n_labels : 1) * sizeof(float));
    int ok = 1;
    for (int i = 0; i < s->count && ok; i++) {
        for (int c = 0; c < s->channels; c++)
            for (int h = 0; h < s->height; h++)
                for (int x = 0; x < s->width; x++) {
                    uint8_t v = pixel_of(i, c, h, x);
                    chw[((size_t)c * s->height + h) * s->width + x] = v;
                    hwc[((size_t)h * s->width + x) * s->channels + c] = v;
                }
        for (int k = 0; k < s->n_labels; k++)
            labels[k] = (s->missing_every && (i + k) % s->missing_every == 0) ? NAN : label_of(i, k);
        mtl_record r = {.channels = s->channels, .height = s->height, .width = s->width, .n_labels = s->n_labels,
                        .labels = labels, .n_bytes = plane, .data = chw};
        uint8_t *png = NULL;
        if (s->encoded) {
            mtl_image img = {.width = s->width, .height = s->height, .channels = s->channels, .pixels = hwc};
            size_t size = 0;
            CHECK_OK(mtl_image_encode_png(&img, &png, &size, &err), &err);
            r.flags = MTL_RECORD_ENCODED;
            r.data = png;
            r.n_bytes = size;
        }
        mtl_status st = mtl_db_writer_put(w, i, &r, &err);
        CHECK_OK(st, &err);
        ok = st == MTL_OK;
        free(png);
    }
    free(chw);
    free(hwc);
    free(labels);
    if (!ok) {
        mtl_db_writer_abort(w);
        return 0;
    }
    mtl_db_meta meta = {.count = s->count, .n_labels = s->n_labels, .channels = s->channels, .height = s->height,
                        .width = s->width, .encoded = s->encoded};
    mtl_status st = mtl_db_writer_finish(w, &meta, &err);
    CHECK_OK(st, &err);
    return st == MTL_OK;
}

/* ---- building and running layers --------------------------------------------------------------- */

typedef struct built {
    mtl_layer *layer;
    mtl_tensor *tops[3];
    int n_tops;
} built;

static mtl_status build_layer(const char *text, mtl_phase phase, int n_tops, built *b, mtl_error *err)
{
    memset(b, 0, sizeof(*b));
    b->n_tops = n_tops;
    b->tops[0] = mtl_tensor_create("data");
    b->tops[1] = mtl_tensor_create("label");
    b->tops[2] = mtl_tensor_create("im_info");
    mtl_status st = gradcheck_build(text, phase, NULL, 0, b->tops, n_tops, &b->layer, err);
    return st;
}

static void free_built(built *b)
{
    gradcheck_free_layer(b->layer);
    mtl_tensor_free(b->tops[0]);
    mtl_tensor_free(b->tops[1]);
    mtl_tensor_free(b->tops[2]);
    memset(b, 0, sizeof(*b));
}

/* Builds a layer that must build; 0 (and a failed check) if it does not. */
static int build_ok(const char *text, mtl_phase phase, int n_tops, built *b)
{
    mtl_error err = {0};
    mtl_status st = build_layer(text, phase, n_tops, b, &err);
    CHECK_MSG(st == MTL_OK, "building %s: %s", text, err.message);
    if (st != MTL_OK)
        free_built(b);
    return st == MTL_OK;
}

static mtl_status step(built *b, mtl_error *err)
{
    MTL_TRY(b->layer->ops->reshape(b->layer, err));
    return b->layer->ops->forward(b->layer, err);
}

static int step_ok(built *b)
{
    mtl_error err = {0};
    mtl_status st = step(b, &err);
    CHECK_MSG(st == MTL_OK, "forward failed: %s", err.message);
    return st == MTL_OK;
}

static char *layer_text(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *layer_text(const char *fmt, ...)
{
    static char buf[4][4096];
    static int next;
    char *b = buf[next++ % 4];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, 4096, fmt, ap);
    va_end(ap);
    return b;
}

static int shape_is(const mtl_tensor *t, int ndim, int d0, int d1, int d2, int d3)
{
    int d[4] = {d0, d1, d2, d3};
    if (t->ndim != ndim)
        return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != d[i])
            return 0;
    return 1;
}

/* Which record a sample holds, recognised by its first label (label_of(i, 0)). */
static int record_of_label(float label) { return (int)lrintf((label - 0.25f) / 10.0f); }

/* ---- Data: reading back in order -------------------------------------------------------------- */

static void test_data_in_order(void)
{
    const char *db = tmp_path("order_lmdb");
    db_spec spec = {.count = 5, .channels = 2, .height = 3, .width = 4, .n_labels = 2};
    if (!write_db(db, &spec))
        return;
    built b;
    if (!build_ok(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 2 backend: LMDB }", db),
                  MTL_PHASE_TRAIN, 2, &b))
        return;
    CHECK(shape_is(b.tops[0], 4, 2, 2, 3, 4));
    CHECK(shape_is(b.tops[1], 2, 2, 2, 0, 0));
    /* batches (0,1) (2,3) (4,0) (1,2): the epoch wraps inside the third batch */
    static const int expect[4][2] = {{0, 1}, {2, 3}, {4, 0}, {1, 2}};
    for (int batch = 0; batch < 4; batch++) {
        if (!step_ok(&b))
            break;
        int bad = 0;
        for (int s = 0; s < 2; s++) {
            int i = expect[batch][s];
            for (int c = 0; c < 2; c++)
                for (int h = 0; h < 3; h++)
                    for (int w = 0; w < 4; w++)
                        bad += b.tops[0]->data[((s * 2 + c) * 3 + h) * 4 + w] != (float)pixel_of(i, c, h, w);
            CHECK_NEAR(b.tops[1]->data[s * 2 + 0], label_of(i, 0), 0);
            CHECK_NEAR(b.tops[1]->data[s * 2 + 1], label_of(i, 1), 0);
        }
        CHECK_MSG(bad == 0, "batch %d: %d pixels differ from the records", batch, bad);
    }
    char line[128];
    int n = b.layer->ops->stats(b.layer, line, sizeof(line));
    CHECK_MSG(n > 0 && strncmp(line, "data wait ", 10) == 0 && strstr(line, "ms/iter"), "stats line '%s'",
              n > 0 ? line : "");
    CHECK_INT(b.layer->ops->stats(b.layer, line, sizeof(line)), 0); /* nothing since the last call */
    free_built(&b);

    /* one label per record: the label top is N, as in Caffe; one top: no labels read */
    const char *db1 = tmp_path("order1_lmdb");
    db_spec one = {.count = 3, .channels = 1, .height = 2, .width = 2, .n_labels = 1};
    if (!write_db(db1, &one))
        return;
    if (build_ok(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 4 }", db1),
                 MTL_PHASE_TEST, 2, &b)) {
        CHECK(shape_is(b.tops[1], 1, 4, 0, 0, 0));
        if (step_ok(&b)) {
            static const int recs[4] = {0, 1, 2, 0};
            for (int s = 0; s < 4; s++)
                CHECK_NEAR(b.tops[1]->data[s], label_of(recs[s], 0), 0);
        }
        free_built(&b);
    }
    if (build_ok(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 2 }", db1),
                 MTL_PHASE_TEST, 1, &b)) {
        CHECK(step_ok(&b) && b.tops[0]->data[4] == (float)pixel_of(1, 0, 0, 0));
        free_built(&b);
    }
}

/* Encoded records (PNG bytes) decode to the same pixels; missing labels come through as NaN. */
static void test_encoded_and_missing(void)
{
    const char *db = tmp_path("encoded_lmdb");
    db_spec spec = {.count = 4, .channels = 3, .height = 5, .width = 6, .n_labels = 3, .encoded = 1,
                    .missing_every = 2};
    if (!write_db(db, &spec))
        return;
    built b;
    if (!build_ok(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 4 }", db), MTL_PHASE_TEST,
                  2, &b))
        return;
    CHECK(shape_is(b.tops[0], 4, 4, 3, 5, 6));
    CHECK(shape_is(b.tops[1], 2, 4, 3, 0, 0));
    if (step_ok(&b)) {
        int bad = 0;
        for (int i = 0; i < 4; i++)
            for (int c = 0; c < 3; c++)
                for (int h = 0; h < 5; h++)
                    for (int w = 0; w < 6; w++)
                        bad += b.tops[0]->data[((i * 3 + c) * 5 + h) * 6 + w] != (float)pixel_of(i, c, h, w);
        CHECK_MSG(bad == 0, "%d decoded pixels differ", bad);
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 3; k++) {
                float v = b.tops[1]->data[i * 3 + k];
                if ((i + k) % 2 == 0)
                    CHECK_MSG(isnan(v), "label %d of record %d = %g, expected missing (NaN)", k, i, v);
                else
                    CHECK_NEAR(v, label_of(i, k), 0);
            }
    }
    free_built(&b);

    /* force_gray on colour PNGs: stb's grey, (77 r + 150 g + 29 b) >> 8 */
    if (build_ok(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 1 } "
                            "transform_param { force_gray: true }",
                            db),
                 MTL_PHASE_TEST, 1, &b)) {
        CHECK(shape_is(b.tops[0], 4, 1, 1, 5, 6));
        if (step_ok(&b)) {
            int r = pixel_of(0, 0, 2, 3), g = pixel_of(0, 1, 2, 3), bl = pixel_of(0, 2, 2, 3);
            CHECK_NEAR(b.tops[0]->data[2 * 6 + 3], (r * 77 + g * 150 + bl * 29) >> 8, 1);
        }
        free_built(&b);
    }
}

/* ---- transforms against hand-computed arrays --------------------------------------------------- */

/* Appends a varint / a little-endian float to a byte buffer. */
static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

static size_t put_float(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(u >> (8 * i));
    return 4;
}

/* A Caffe BlobProto, written by hand: modern (shape {1 C H W}, packed data) or legacy
 * (num/channels/height/width, one fixed32 field per value). */
static void write_binaryproto(const char *path, int legacy, int c, int h, int w, const float *values, int n)
{
    uint8_t buf[4096];
    size_t len = 0;
    if (legacy) {
        int dims[4] = {1, c, h, w};
        for (int i = 0; i < 4; i++) {
            buf[len++] = (uint8_t)((i + 1) << 3);
            len += put_varint(buf + len, (uint64_t)dims[i]);
        }
        for (int i = 0; i < n; i++) {
            buf[len++] = (5 << 3) | 5;
            len += put_float(buf + len, values[i]);
        }
    } else {
        uint8_t dims[32];
        size_t nd = 0;
        int d[4] = {1, c, h, w};
        for (int i = 0; i < 4; i++)
            nd += put_varint(dims + nd, (uint64_t)d[i]);
        buf[len++] = (5 << 3) | 2; /* data first, as Caffe's field order does not matter */
        len += put_varint(buf + len, (uint64_t)n * 4);
        for (int i = 0; i < n; i++)
            len += put_float(buf + len, values[i]);
        buf[len++] = (7 << 3) | 2; /* shape { dim: packed } */
        len += put_varint(buf + len, nd + 2);
        buf[len++] = (1 << 3) | 2;
        len += put_varint(buf + len, nd);
        memcpy(buf + len, dims, nd);
        len += nd;
        buf[len++] = (6 << 3) | 2; /* an empty diff, to be skipped */
        buf[len++] = 0;
    }
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fwrite(buf, 1, len, f);
        fclose(f);
    }
}

/* The Data layer's first sample of a one-record database, for transform checks. */
static void check_first_sample(const char *what, const char *db, const char *transform, mtl_phase phase,
                               const float *want, int n)
{
    built b;
    if (!build_ok(layer_text("name: 't' type: 'Data' data_param { source: '%s' batch_size: 1 } "
                             "transform_param { %s }",
                             db, transform),
                  phase, 1, &b))
        return;
    CHECK_MSG(b.tops[0]->count == n, "%s: %lld values, expected %d", what, (long long)b.tops[0]->count, n);
    if (b.tops[0]->count == n && step_ok(&b))
        for (int i = 0; i < n; i++)
            CHECK_MSG(fabsf(b.tops[0]->data[i] - want[i]) <= 1e-5f, "%s: value %d = %.6g, expected %.6g", what, i,
                      b.tops[0]->data[i], want[i]);
    free_built(&b);
}

/* Writes a one-record raw database whose pixels are given (CHW). */
static int write_pixels_db(const char *path, int c, int h, int w, const uint8_t *chw)
{
    mtl_error err = {0};
    mtl_db_writer *wr = NULL;
    CHECK_OK(mtl_db_writer_open(path, &wr, &err), &err);
    if (!wr)
        return 0;
    float label = 7;
    mtl_record r = {.channels = c, .height = h, .width = w, .n_labels = 1, .labels = &label,
                    .n_bytes = (size_t)c * h * w, .data = chw};
    mtl_status st = mtl_db_writer_put(wr, 0, &r, &err);
    CHECK_OK(st, &err);
    if (st != MTL_OK) {
        mtl_db_writer_abort(wr);
        return 0;
    }
    mtl_db_meta meta = {.count = 1, .n_labels = 1, .channels = c, .height = h, .width = w};
    st = mtl_db_writer_finish(wr, &meta, &err);
    CHECK_OK(st, &err);
    return st == MTL_OK;
}

static void test_transforms(void)
{
    /* one grey 4x5 image, pixel (h, w) = 10 h + w:
     *    0  1  2  3  4
     *   10 11 12 13 14
     *   20 21 22 23 24
     *   30 31 32 33 34 */
    uint8_t grey[20];
    for (int h = 0; h < 4; h++)
        for (int w = 0; w < 5; w++)
            grey[h * 5 + w] = (uint8_t)(10 * h + w);
    const char *db = tmp_path("grey_lmdb");
    if (!write_pixels_db(db, 1, 4, 5, grey))
        return;

    /* crop 2 at TEST: the centre, offsets ((4-2)/2, (5-2)/2) = (1, 1) */
    static const float centre[4] = {11, 12, 21, 22};
    check_first_sample("centre crop", db, "crop_size: 2", MTL_PHASE_TEST, centre, 4);
    /* crop 3: offsets (0, 1) */
    static const float centre3[9] = {1, 2, 3, 11, 12, 13, 21, 22, 23};
    check_first_sample("centre crop 3", db, "crop_size: 3", MTL_PHASE_TEST, centre3, 9);
    /* mean then scale: (p - 1) * 0.5 */
    static const float mean_scale[4] = {5, 5.5f, 10, 10.5f};
    check_first_sample("mean_value and scale", db, "crop_size: 2 mean_value: 1 scale: 0.5", MTL_PHASE_TEST,
                       mean_scale, 4);
    /* mirror at TEST does nothing */
    check_first_sample("mirror at TEST", db, "crop_size: 2 mirror: true", MTL_PHASE_TEST, centre, 4);
    /* the deprecated data_param spelling works the same */
    {
        built b;
        if (build_ok(layer_text("name: 't' type: 'Data' data_param { source: '%s' batch_size: 1 crop_size: 2 "
                                "scale: 0.5 }",
                                db),
                     MTL_PHASE_TEST, 1, &b)) {
            CHECK(step_ok(&b) && b.tops[0]->data[0] == 5.5f && b.tops[0]->data[3] == 11.0f);
            free_built(&b);
        }
    }

    /* mean_file (4x5 mean, m(h, w) = h + 0.5 w) with the centre crop:
     *   value = (p - m) * 2 at source positions (1,1) (1,2) (2,1) (2,2):
     *   (11 - 1.5) 2 = 19, (12 - 2) 2 = 20, (21 - 2.5) 2 = 37, (22 - 3) 2 = 38 */
    float mean[20];
    for (int h = 0; h < 4; h++)
        for (int w = 0; w < 5; w++)
            mean[h * 5 + w] = (float)h + 0.5f * (float)w;
    const char *mean_path = tmp_path("mean.binaryproto"), *legacy_path = tmp_path("mean_legacy.binaryproto");
    write_binaryproto(mean_path, 0, 1, 4, 5, mean, 20);
    write_binaryproto(legacy_path, 1, 1, 4, 5, mean, 20);
    static const float with_mean[4] = {19, 20, 37, 38};
    check_first_sample("mean_file", db, layer_text("crop_size: 2 scale: 2 mean_file: '%s'", mean_path), MTL_PHASE_TEST,
                       with_mean, 4);
    check_first_sample("legacy mean_file", db, layer_text("crop_size: 2 scale: 2 mean_file: '%s'", legacy_path),
                       MTL_PHASE_TEST, with_mean, 4);
    int c, h, w;
    float *values = NULL;
    mtl_error err = {0};
    CHECK_OK(mtl_mean_file_read(legacy_path, &values, &c, &h, &w, &err), &err);
    CHECK(c == 1 && h == 4 && w == 5 && values && values[19] == 5.0f);
    free(values);

    /* mirror at TRAIN with no crop: every sample is the image or its mirror, and both occur */
    built b;
    if (build_ok(layer_text("name: 't' type: 'Data' data_param { source: '%s' batch_size: 16 seed: 3 } "
                            "transform_param { mirror: true }",
                            db),
                 MTL_PHASE_TRAIN, 1, &b)) {
        int plain = 0, flipped = 0, other = 0;
        if (step_ok(&b))
            for (int s = 0; s < 16; s++) {
                const float *x = b.tops[0]->data + s * 20;
                int is_plain = 1, is_flip = 1;
                for (int hh = 0; hh < 4; hh++)
                    for (int ww = 0; ww < 5; ww++) {
                        is_plain &= x[hh * 5 + ww] == (float)(10 * hh + ww);
                        is_flip &= x[hh * 5 + ww] == (float)(10 * hh + 4 - ww);
                    }
                plain += is_plain;
                flipped += is_flip && !is_plain;
                other += !is_plain && !is_flip;
            }
        CHECK_MSG(plain > 0 && flipped > 0 && other == 0, "mirror: %d plain, %d flipped, %d neither", plain, flipped,
                  other);
        free_built(&b);
    }

    /* random crops at TRAIN: every sample is a 2x2 window of the image, mirrored or not; offsets vary */
    if (build_ok(layer_text("name: 't' type: 'Data' data_param { source: '%s' batch_size: 32 seed: 9 } "
                            "transform_param { crop_size: 2 mirror: true }",
                            db),
                 MTL_PHASE_TRAIN, 1, &b)) {
        int seen[3][4] = {{0}}, bad = 0;
        if (step_ok(&b))
            for (int s = 0; s < 32; s++) {
                const float *x = b.tops[0]->data + s * 4;
                float lo = fminf(x[0], x[1]);
                int hh = (int)lo / 10, ww = (int)lo % 10;
                int ok = hh <= 2 && ww <= 3 && x[2] == x[0] + 10 && x[3] == x[1] + 10 && fabsf(x[0] - x[1]) == 1;
                bad += !ok;
                if (ok)
                    seen[hh][ww] = 1;
            }
        int windows = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++)
                windows += seen[i][j];
        CHECK_MSG(bad == 0 && windows >= 4, "random crops: %d bad samples, %d distinct windows", bad, windows);
        free_built(&b);
    }

    /* 3 channels with one mean_value per channel: (p - m_c) * s */
    uint8_t rgb[3 * 2 * 2] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120};
    const char *db3 = tmp_path("rgb_lmdb");
    if (write_pixels_db(db3, 3, 2, 2, rgb)) {
        static const float want[12] = {9, 19, 29, 39, 48, 58, 68, 78, 87, 97, 107, 117};
        check_first_sample("mean_value per channel", db3, "mean_value: 1 mean_value: 2 mean_value: 3", MTL_PHASE_TEST,
                           want, 12);
        static const float halves[12] = {5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60};
        check_first_sample("scale", db3, "scale: 0.5", MTL_PHASE_TEST, halves, 12);
    }
    /* grey records with force_color feed all three channels */
    static const float rep[3 * 4] = {11, 12, 21, 22, 11, 12, 21, 22, 11, 12, 21, 22};
    check_first_sample("force_color", db, "crop_size: 2 force_color: true", MTL_PHASE_TEST, rep, 12);
}

/* The transform on its own over an interleaved (HWC) image, with a mirror. */
static void test_transform_direct(void)
{
    /* 2x3 RGB, interleaved: pixel (h, w) channel c = 100 c + 10 h + w */
    uint8_t hwc[2 * 3 * 3];
    for (int h = 0; h < 2; h++)
        for (int w = 0; w < 3; w++)
            for (int c = 0; c < 3; c++)
                hwc[(h * 3 + w) * 3 + c] = (uint8_t)(100 * c + 10 * h + w);
    mtl_transform t = {.phase = MTL_PHASE_TRAIN, .scale = 1, .mirror = 1};
    mtl_error err = {0};
    CHECK_OK(mtl_transform_setup(&t, 3, 2, 3, &err), &err);
    mtl_pixels px = mtl_pixels_hwc(hwc, 3, 2, 3);
    float out[18];
    mtl_transform_apply(&t, &px, (mtl_crop){0, 0, 1}, out);
    /* channel 1, row 1 mirrored: 112 111 110 */
    CHECK(out[9] == 112 && out[10] == 111 && out[11] == 110);
    CHECK(out[0] == 2 && out[17] == 210);
    /* the choice is a pure function of the bits */
    mtl_crop a = mtl_transform_choose(&t, 2, 3, 12345), b2 = mtl_transform_choose(&t, 2, 3, 12345);
    CHECK(a.mirror == b2.mirror && a.h_off == b2.h_off && a.w_off == b2.w_off);
    CHECK(mtl_transform_choose(&t, 2, 3, 0).mirror == 0 && mtl_transform_choose(&t, 2, 3, 1).mirror == 1);
    mtl_transform_free(&t);
}

/* ---- shuffling, epochs and the prefetch thread --------------------------------------------------- */

/* The record numbers of `batches` batches of a Data layer (labels of record i start with i*10). */
static int read_order(const char *text, int batches, int batch_size, int *out)
{
    built b;
    if (!build_ok(text, MTL_PHASE_TRAIN, 2, &b))
        return 0;
    int ok = 1;
    int k = b.tops[1]->ndim == 1 ? 1 : b.tops[1]->shape[1];
    for (int i = 0; i < batches && ok; i++) {
        ok = step_ok(&b);
        for (int s = 0; s < batch_size && ok; s++)
            out[i * batch_size + s] = record_of_label(b.tops[1]->data[s * k]);
    }
    free_built(&b);
    return ok;
}

static int is_permutation(const int *v, int n)
{
    int seen[256] = {0};
    for (int i = 0; i < n; i++) {
        if (v[i] < 0 || v[i] >= n || seen[v[i]])
            return 0;
        seen[v[i]] = 1;
    }
    return 1;
}

static void test_shuffle(void)
{
    const char *db = tmp_path("shuffle_lmdb");
    db_spec spec = {.count = 12, .channels = 1, .height = 2, .width = 2, .n_labels = 1};
    if (!write_db(db, &spec))
        return;
    int a[36], b[36], c[36];
    const char *fmt = "name: 'd' type: 'Data' data_param { source: '%s' batch_size: 4 shuffle: true seed: %d }";
    if (!read_order(layer_text(fmt, db, 7), 9, 4, a) || !read_order(layer_text(fmt, db, 7), 9, 4, b) ||
        !read_order(layer_text(fmt, db, 8), 9, 4, c))
        return;
    CHECK_MSG(memcmp(a, b, sizeof(a)) == 0, "the same seed gave different orders");
    CHECK_MSG(memcmp(a, c, sizeof(a)) != 0, "different seeds gave the same order");
    for (int e = 0; e < 3; e++)
        CHECK_MSG(is_permutation(a + 12 * e, 12), "epoch %d is not a permutation of the 12 records", e);
    CHECK_MSG(memcmp(a, a + 12, 12 * sizeof(int)) != 0, "epochs 0 and 1 have the same order");
    int sorted = 1;
    for (int i = 0; i < 12; i++)
        sorted &= a[i] == i;
    CHECK_MSG(!sorted, "the shuffled epoch is in record order");

    /* shards: rank r of 3 reads records r, r+3, ... as its own epochs */
    int s0[8], s2[8];
    if (read_order(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 2 shard_rank: 0 "
                              "shard_count: 5 }",
                              db),
                   4, 2, s0) &&
        read_order(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 2 shard_rank: 2 "
                              "shard_count: 5 }",
                              db),
                   4, 2, s2)) {
        static const int want0[8] = {0, 5, 10, 0, 5, 10, 0, 5}, want2[8] = {2, 7, 2, 7, 2, 7, 2, 7};
        CHECK_MSG(memcmp(s0, want0, sizeof(s0)) == 0, "shard 0 of 5 read %d %d %d %d ...", s0[0], s0[1], s0[2], s0[3]);
        CHECK_MSG(memcmp(s2, want2, sizeof(s2)) == 0, "shard 2 of 5 read %d %d %d %d ...", s2[0], s2[1], s2[2], s2[3]);
    }
}

/* 50 epochs of a 37-record database in batches of 8 through the prefetch thread (run under the
 * sanitizer build too): every batch holds exactly the records the stream says, in order and shuffled. */
static void test_many_epochs(void)
{
    const char *db = tmp_path("epochs_lmdb");
    db_spec spec = {.count = 37, .channels = 1, .height = 3, .width = 3, .n_labels = 2};
    if (!write_db(db, &spec))
        return;
    const int batches = (37 * 50 + 7) / 8;
    for (int depth = 1; depth <= 4; depth += 3) {
        built b;
        if (!build_ok(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 8 prefetch: %d }", db,
                                 depth),
                      MTL_PHASE_TRAIN, 2, &b))
            return;
        int bad = 0;
        for (int i = 0; i < batches && step_ok(&b); i++)
            for (int s = 0; s < 8; s++) {
                int want = (i * 8 + s) % 37;
                bad += b.tops[1]->data[s * 2] != label_of(want, 0) || b.tops[1]->data[s * 2 + 1] != label_of(want, 1) ||
                       b.tops[0]->data[s * 9 + 4] != (float)pixel_of(want, 0, 1, 1);
            }
        CHECK_MSG(bad == 0, "prefetch depth %d: %d samples out of order over 50 epochs", depth, bad);
        free_built(&b);
    }

    built b;
    if (!build_ok(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 8 shuffle: true seed: 1 } "
                             "transform_param { mirror: true }",
                             db),
                  MTL_PHASE_TRAIN, 2, &b))
        return;
    int *seen = calloc((size_t)batches * 8, sizeof(int));
    int ok = 1;
    for (int i = 0; i < batches && (ok = step_ok(&b)); i++)
        for (int s = 0; s < 8; s++)
            seen[i * 8 + s] = record_of_label(b.tops[1]->data[s * 2]);
    int bad_epochs = 0;
    for (int e = 0; ok && e < 50; e++)
        bad_epochs += !is_permutation(seen + 37 * e, 37);
    CHECK_MSG(ok && bad_epochs == 0, "%d of 50 shuffled epochs are not permutations", bad_epochs);
    free(seen);
    /* freed while the worker is still loading ahead */
    free_built(&b);
}

/* state_save after some batches, state_load into a fresh layer: the same batches follow, crops and
 * flips included. */
static void test_resume(void)
{
    const char *db = tmp_path("resume_lmdb");
    db_spec spec = {.count = 11, .channels = 2, .height = 6, .width = 5, .n_labels = 1};
    if (!write_db(db, &spec))
        return;
    const char *text = layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 3 shuffle: true "
                                  "seed: 4 } transform_param { crop_size: 4 mirror: true }",
                                  db);
    built a, b;
    if (!build_ok(text, MTL_PHASE_TRAIN, 2, &a))
        return;
    /* b's tops are larger than a batch, so b takes the copying path and a the exchanging one */
    mtl_error err = {0};
    memset(&b, 0, sizeof(b));
    b.tops[0] = mtl_tensor_create("data");
    b.tops[1] = mtl_tensor_create("label");
    b.n_tops = 2;
    CHECK_OK(mtl_tensor_reshape4(b.tops[0], 1000, 1, 1, 1, &err), &err);
    CHECK_OK(mtl_tensor_reshape4(b.tops[1], 1000, 1, 1, 1, &err), &err);
    CHECK_OK(gradcheck_build(text, MTL_PHASE_TRAIN, NULL, 0, b.tops, 2, &b.layer, &err), &err);
    if (!b.layer) {
        free_built(&a);
        free_built(&b);
        return;
    }
    for (int i = 0; i < 5; i++)
        step_ok(&a);
    size_t size = a.layer->ops->state_size(a.layer);
    uint8_t state[64];
    CHECK(size > 0 && size <= sizeof(state));
    a.layer->ops->state_save(a.layer, state);
    /* b has already read ahead: loading must drop that */
    step_ok(&b);
    CHECK_OK(b.layer->ops->state_load(b.layer, state, size, &err), &err);
    int64_t n = a.tops[0]->count;
    for (int i = 0; i < 6; i++) {
        if (!step_ok(&a) || !step_ok(&b))
            break;
        CHECK_MSG(memcmp(a.tops[0]->data, b.tops[0]->data, (size_t)n * sizeof(float)) == 0 &&
                      memcmp(a.tops[1]->data, b.tops[1]->data, 3 * sizeof(float)) == 0,
                  "batch %d after resuming differs", 5 + i);
    }
    CHECK_FAILS(b.layer->ops->state_load(b.layer, state, 3, &err), &err, MTL_ERR_CORRUPT, "expected 8");
    free_built(&a);
    free_built(&b);
}

/* A Data layer inside a net: the net's blobs take the prefetched batches. */
static void test_in_net(void)
{
    const char *db = tmp_path("net_lmdb");
    db_spec spec = {.count = 9, .channels = 1, .height = 4, .width = 4, .n_labels = 2};
    if (!write_db(db, &spec))
        return;
    char *text = layer_text(
        "layer { name: 'data' type: 'Data' top: 'data' top: 'label' data_param { source: '%s' batch_size: 4 } "
        "transform_param { scale: 0.00390625 } }\n"
        "layer { name: 'slice' type: 'Slice' bottom: 'label' top: 'a' top: 'b' slice_param { axis: 1 } }\n"
        "layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip' inner_product_param { num_output: 3 "
        "weight_filler { type: 'xavier' } } }\n"
        "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'ip' bottom: 'ip' top: 'loss' }\n"
        "layer { name: 'silence' type: 'Silence' bottom: 'a' bottom: 'b' }\n",
        db);
    mtl_net_options opts = {.phase = MTL_PHASE_TRAIN, .seed = 3};
    mtl_net *net = NULL;
    mtl_error err = {0};
    CHECK_OK(mtl_net_from_string(text, &opts, &net, &err), &err);
    if (!net)
        return;
    for (int i = 0; i < 5; i++) {
        double loss;
        CHECK_OK(mtl_net_forward(net, &loss, &err), &err);
        mtl_tensor *a = mtl_net_blob(net, "a"), *d = mtl_net_blob(net, "data");
        for (int s = 0; a && d && s < 4; s++) {
            int want = (i * 4 + s) % 9;
            CHECK_NEAR(a->data[s], label_of(want, 0), 0);
            CHECK_NEAR(d->data[s * 16 + 5], pixel_of(want, 0, 1, 1) / 256.0, 1e-6);
        }
    }
    mtl_net_free(net);
}

/* Through the solver: a resumed run reads the batches the uninterrupted run read, and a snapshot
 * without the data layer's read position is refused. */
static void test_solver_resume(void)
{
    const char *db = tmp_path("resume_lmdb");
    db_spec spec = {.count = 7, .channels = 1, .height = 4, .width = 4, .n_labels = 2};
    if (!write_db(db, &spec))
        return;
    const char *tail = "layer { name: 'slice' type: 'Slice' bottom: 'label' top: 'a' top: 'b' slice_param { axis: 1 } }\n"
                       "layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip' inner_product_param { "
                       "num_output: 1 weight_filler { type: 'xavier' } } }\n"
                       "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'ip' bottom: 'a' top: 'loss' }\n"
                       "layer { name: 'silence' type: 'Silence' bottom: 'b' }\n";
    const char *solver = "base_lr: 0.000001 lr_policy: 'fixed' max_iter: 20 snapshot_after_train: false\n";
    char *with_data = layer_text("net_param { layer { name: 'data' type: 'Data' top: 'data' top: 'label' "
                                 "data_param { source: '%s' batch_size: 3 shuffle: true } } %s }\n%s",
                                 db, tail, solver);
    char *with_input = layer_text("net_param { layer { name: 'data' type: 'Input' top: 'data' top: 'label' "
                                  "input_param { shape { dim: 3 dim: 1 dim: 4 dim: 4 } shape { dim: 3 dim: 2 } } } "
                                  "%s }\n%s",
                                  tail, solver);
    const char *snap = tmp_path("resume.mtlsnap"), *plain = tmp_path("plain.mtlsnap");
    mtl_error err = {0};
    mtl_solver *a = NULL, *b = NULL;
    float straight[6] = {0}, resumed[6] = {0};
    CHECK_OK(mtl_solver_from_string(with_data, tmp_dir, NULL, &a, &err), &err);
    if (a) {
        CHECK_OK(mtl_solver_step(a, 4, &err), &err);
        CHECK_OK(mtl_solver_snapshot(a, snap, &err), &err);
        CHECK_OK(mtl_solver_step(a, 3, &err), &err);
        memcpy(straight, mtl_net_blob(a->train_net, "label")->data, sizeof(straight));
        mtl_solver_free(a);
    }
    CHECK_OK(mtl_solver_from_string(with_data, tmp_dir, NULL, &b, &err), &err);
    if (b) {
        CHECK_OK(mtl_solver_restore(b, snap, &err), &err);
        CHECK_OK(mtl_solver_step(b, 3, &err), &err);
        memcpy(resumed, mtl_net_blob(b->train_net, "label")->data, sizeof(resumed));
        CHECK(memcmp(straight, resumed, sizeof(straight)) == 0);
        CHECK(straight[0] != 0.0f);
        mtl_solver_free(b);
    }
    CHECK_OK(mtl_solver_from_string(with_input, tmp_dir, NULL, &a, &err), &err);
    if (a) {
        CHECK_OK(mtl_solver_snapshot(a, plain, &err), &err);
        mtl_solver_free(a);
    }
    CHECK_OK(mtl_solver_from_string(with_data, tmp_dir, NULL, &b, &err), &err);
    if (b) {
        CHECK_FAILS(mtl_solver_restore(b, plain, &err), &err, MTL_ERR_CONFIG, "has no saved position for layer 'data'");
        mtl_solver_free(b);
    }
}

/* ---- ImageData ---------------------------------------------------------------------------------- */

static int write_png(const char *path, int channels, int height, int width, int seed)
{
    uint8_t *px = malloc((size_t)channels * height * width);
    for (int h = 0; h < height; h++)
        for (int w = 0; w < width; w++)
            for (int c = 0; c < channels; c++)
                px[(h * width + w) * channels + c] = pixel_of(seed, c, h, w);
    mtl_image img = {.width = width, .height = height, .channels = channels, .pixels = px};
    mtl_error err = {0};
    mtl_status st = mtl_image_write_png(path, &img, &err);
    CHECK_OK(st, &err);
    free(px);
    return st == MTL_OK;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_image_data(void)
{
    mkdir(tmp_path("images"), 0700);
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof(name), "images/img%d.png", i);
        if (!write_png(tmp_path(name), 3, 4, 5, i))
            return;
    }
    const char *list = tmp_path("list.txt");
    write_text(list, "img0.png 0 1.5\n\nimg1.png 1 -\nimg2.png - 2.5\n");
    built b;
    if (!build_ok(layer_text("name: 'img' type: 'ImageData' image_data_param { source: '%s' root_folder: '%s' "
                             "batch_size: 2 }",
                             list, tmp_path("images")),
                  MTL_PHASE_TEST, 2, &b))
        return;
    CHECK(shape_is(b.tops[0], 4, 2, 3, 4, 5));
    CHECK(shape_is(b.tops[1], 2, 2, 2, 0, 0));
    static const int order[4] = {0, 1, 2, 0};
    static const float labels[3][2] = {{0, 1.5f}, {1, NAN}, {NAN, 2.5f}};
    for (int batch = 0; batch < 2; batch++) {
        if (!step_ok(&b))
            break;
        int bad = 0;
        for (int s = 0; s < 2; s++) {
            int i = order[batch * 2 + s];
            for (int c = 0; c < 3; c++)
                for (int h = 0; h < 4; h++)
                    for (int w = 0; w < 5; w++)
                        bad += b.tops[0]->data[((s * 3 + c) * 4 + h) * 5 + w] != (float)pixel_of(i, c, h, w);
            for (int k = 0; k < 2; k++) {
                float got = b.tops[1]->data[s * 2 + k], want = labels[i][k];
                CHECK_MSG(isnan(want) ? isnan(got) : got == want, "image %d label %d = %g, expected %g", i, k, got,
                          want);
            }
        }
        CHECK_MSG(bad == 0, "ImageData batch %d: %d pixels differ", batch, bad);
    }
    free_built(&b);

    /* grey and resized: shape only (the resize is image.c's) */
    if (build_ok(layer_text("name: 'img' type: 'ImageData' image_data_param { source: '%s' root_folder: '%s/' "
                            "batch_size: 3 is_color: false new_height: 8 new_width: 6 shuffle: true } "
                            "transform_param { crop_size: 5 mirror: true }",
                            list, tmp_path("images")),
                 MTL_PHASE_TRAIN, 1, &b)) {
        CHECK(shape_is(b.tops[0], 4, 3, 1, 5, 5));
        CHECK(step_ok(&b) && step_ok(&b));
        free_built(&b);
    }

    /* errors name the list file and line */
    mtl_error err = {0};
    const char *bad_list = tmp_path("bad_list.txt");
    write_text(bad_list, "img0.png 1 2\nimg1.png 1 x2\n");
    CHECK_FAILS(build_layer(layer_text("name: 'img' type: 'ImageData' image_data_param { source: '%s' }", bad_list),
                            MTL_PHASE_TEST, 2, &b, &err),
                &err, MTL_ERR_CONFIG, "line 2: label 2 'x2' is not a number");
    free_built(&b);
    write_text(bad_list, "img0.png 1 2\nimg1.png 1\n");
    CHECK_FAILS(build_layer(layer_text("name: 'img' type: 'ImageData' image_data_param { source: '%s' }", bad_list),
                            MTL_PHASE_TEST, 2, &b, &err),
                &err, MTL_ERR_CONFIG, "line 2: 1 labels, but line 1 has 2");
    free_built(&b);
    CHECK_FAILS(build_layer("name: 'img' type: 'ImageData' image_data_param { source: 'no_such_list.txt' }",
                            MTL_PHASE_TEST, 2, &b, &err),
                &err, MTL_ERR_NOT_FOUND, "no_such_list.txt");
    free_built(&b);
    write_text(bad_list, "img0.png 1\nmissing.png 2\n");
    if (build_ok(layer_text("name: 'img' type: 'ImageData' image_data_param { source: '%s' root_folder: '%s' "
                            "batch_size: 2 }",
                            bad_list, tmp_path("images")),
                 MTL_PHASE_TEST, 2, &b)) {
        mtl_status st = step(&b, &err);
        CHECK_MSG(st != MTL_OK && strstr(err.message, "layer 'img'") && strstr(err.message, "bad_list.txt' line 2") &&
                      strstr(err.message, "missing.png"),
                  "a missing image: %s", err.message);
        free_built(&b);
    }
    CHECK_FAILS(build_layer(layer_text("name: 'img' type: 'ImageData' image_data_param { source: '%s' new_height: 4 }",
                                       list),
                            MTL_PHASE_TEST, 1, &b, &err),
                &err, MTL_ERR_CONFIG, "give both new_height and new_width");
    free_built(&b);
}

/* ---- MemoryData -------------------------------------------------------------------------------- */

static void test_memory_data(void)
{
    built b;
    if (!build_ok("name: 'mem' type: 'MemoryData' memory_data_param { batch_size: 2 channels: 1 height: 1 width: 2 }",
                  MTL_PHASE_TRAIN, 2, &b))
        return;
    mtl_error err = {0};
    CHECK(shape_is(b.tops[0], 4, 2, 1, 1, 2));
    CHECK_FAILS(step(&b, &err), &err, MTL_ERR_ARGUMENT, "mtl_memory_data_set");
    /* 5 samples of 2 values: sample i = (i, -i), label i + 0.5 */
    float data[10], labels[5];
    for (int i = 0; i < 5; i++) {
        data[2 * i] = (float)i;
        data[2 * i + 1] = (float)-i;
        labels[i] = (float)i + 0.5f;
    }
    CHECK_OK(mtl_memory_data_set(b.layer, data, labels, 5, 1, &err), &err);
    memset(data, 0, sizeof(data)); /* copied */
    static const int order[8] = {0, 1, 2, 3, 4, 0, 1, 2};
    for (int batch = 0; batch < 4; batch++) {
        if (!step_ok(&b))
            break;
        CHECK(shape_is(b.tops[1], 1, 2, 0, 0, 0));
        for (int s = 0; s < 2; s++) {
            int i = order[batch * 2 + s];
            CHECK(b.tops[0]->data[2 * s] == (float)i && b.tops[0]->data[2 * s + 1] == (float)-i);
            CHECK_NEAR(b.tops[1]->data[s], i + 0.5, 0);
        }
    }
    /* the position survives a snapshot */
    uint8_t state[8];
    b.layer->ops->state_save(b.layer, state);
    step_ok(&b);
    float next0 = b.tops[0]->data[0];
    CHECK_OK(b.layer->ops->state_load(b.layer, state, 8, &err), &err);
    CHECK(step_ok(&b) && b.tops[0]->data[0] == next0);

    /* two labels per sample: the label top becomes N x 2 */
    float two[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    CHECK_OK(mtl_memory_data_set(b.layer, two, two, 5, 2, &err), &err);
    CHECK(step_ok(&b) && shape_is(b.tops[1], 2, 2, 2, 0, 0) && b.tops[1]->data[3] == 4);
    CHECK_FAILS(mtl_memory_data_set(b.layer, two, NULL, 5, 0, &err), &err, MTL_ERR_ARGUMENT, "label top");
    CHECK_FAILS(mtl_memory_data_set(b.layer, two, two, 0, 1, &err), &err, MTL_ERR_ARGUMENT, "0 samples");
    free_built(&b);

    if (build_ok("name: 'in' type: 'Input' input_param { shape { dim: 1 } }", MTL_PHASE_TRAIN, 1, &b)) {
        CHECK_FAILS(mtl_memory_data_set(b.layer, two, two, 5, 1, &err), &err, MTL_ERR_ARGUMENT,
                    "not a MemoryData layer");
        free_built(&b);
    }
    CHECK_FAILS(build_layer("name: 'mem' type: 'MemoryData' memory_data_param { batch_size: 0 channels: 1 height: 1 "
                            "width: 1 }",
                            MTL_PHASE_TRAIN, 2, &b, &err),
                &err, MTL_ERR_CONFIG, "batch_size must be positive");
    free_built(&b);
}

/* ---- error paths ----------------------------------------------------------------------------- */

static void check_build_fails(const char *text, int n_tops, mtl_status status, const char *needle)
{
    built b;
    mtl_error err = {0};
    mtl_status st = build_layer(text, MTL_PHASE_TRAIN, n_tops, &b, &err);
    CHECK_MSG(st == status && strstr(err.message, needle), "%s: got %s '%s', expected %s containing '%s'", text,
              mtl_status_name(st), err.message, mtl_status_name(status), needle);
    free_built(&b);
}

static void test_errors(void)
{
    const char *db = tmp_path("grey_lmdb"); /* one grey 4x5 record, from test_transforms */
    char cwd[1024];
    CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
    /* a missing source names the path tried, made absolute from the current directory */
    char abs[1200];
    snprintf(abs, sizeof(abs), "%s/no/such_lmdb", cwd);
    check_build_fails("name: 'dl' type: 'Data' data_param { source: 'no/such_lmdb' batch_size: 2 }", 2,
                      MTL_ERR_NOT_FOUND, abs);
    check_build_fails("name: 'dl' type: 'Data' data_param { source: 'no/such_lmdb' batch_size: 2 }", 2,
                      MTL_ERR_NOT_FOUND, "layer 'dl' (Data)");
    /* a directory that is not an mtl database: the database's own error */
    mkdir(tmp_path("not_a_db"), 0700);
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 2 backend: LMDB }",
                                 tmp_path("not_a_db")),
                      2, MTL_ERR_CORRUPT, "is not an LMDB database");
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 2 }",
                                 tmp_path("not_a_db")),
                      2, MTL_ERR_CORRUPT, "Caffe would read LEVELDB");
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 2 backend: LEVELDB }",
                                 db),
                      2, MTL_ERR_UNSUPPORTED, "backend LEVELDB is not supported");
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' }", db), 2, MTL_ERR_CONFIG,
                      "data_param.batch_size must be positive (it is 0)");
    check_build_fails("name: 'dl' type: 'Data' data_param { batch_size: 2 }", 2, MTL_ERR_CONFIG,
                      "data_param needs a source");
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 1 } "
                                 "transform_param { crop_size: 5 }",
                                 db),
                      2, MTL_ERR_CONFIG, "crop_size 5 is larger than the 4x5 (HxW) images");
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 1 } "
                                 "transform_param { mean_value: 1 mean_value: 2 }",
                                 db),
                      2, MTL_ERR_CONFIG, "2 mean_value given for 1-channel images");
    const char *small_mean = tmp_path("small_mean.binaryproto");
    float m[6] = {0};
    write_binaryproto(small_mean, 0, 1, 2, 3, m, 6);
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 1 } "
                                 "transform_param { mean_file: '%s' }",
                                 db, small_mean),
                      2, MTL_ERR_SHAPE, "is 1x2x3 (CxHxW), the images are 1x4x5");
    write_binaryproto(small_mean, 0, 1, 2, 3, m, 5);
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 1 } "
                                 "transform_param { mean_file: '%s' }",
                                 db, small_mean),
                      2, MTL_ERR_CORRUPT, "holds a different number of values");
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 1 } "
                                 "transform_param { mean_file: 'no_mean.binaryproto' }",
                                 db),
                      2, MTL_ERR_NOT_FOUND, "no_mean.binaryproto");
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 1 } "
                                 "transform_param { mean_file: '%s' mean_value: 3 }",
                                 db, small_mean),
                      2, MTL_ERR_CONFIG, "give mean_file or mean_value, not both");
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 1 scale: 2 } "
                                 "transform_param { scale: 3 }",
                                 db),
                      2, MTL_ERR_CONFIG, "scale is given both here and in transform_param");
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 1 } "
                                 "transform_param { force_color: true force_gray: true }",
                                 db),
                      2, MTL_ERR_CONFIG, "force_color and force_gray cannot both be set");
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 1 shard_rank: 2 "
                                 "shard_count: 2 }",
                                 db),
                      2, MTL_ERR_CONFIG, "shard_rank 2 is not below shard_count 2");
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 1 shard_rank: 1 "
                                 "shard_count: 2 }",
                                 db),
                      2, MTL_ERR_CONFIG, "none for shard 1 of 2");
    check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 1 bogus: 1 }", db), 2,
                      MTL_ERR_CONFIG, "bogus");

    /* no labels in the database, but a label top */
    const char *nolabel = tmp_path("nolabel_lmdb");
    db_spec spec = {.count = 2, .channels = 1, .height = 2, .width = 2, .n_labels = 0};
    if (write_db(nolabel, &spec))
        check_build_fails(layer_text("name: 'dl' type: 'Data' data_param { source: '%s' batch_size: 1 }", nolabel), 2,
                          MTL_ERR_CONFIG, "have none");
}

/* The prefetcher alone: a failing fill reaches the consumer at its batch, and stays. */
static mtl_status fill_fails_at_3(void *ctx, int64_t batch, float *const *arrays, mtl_error *err)
{
    (void)ctx;
    if (batch == 3)
        return mtl_fail(err, MTL_ERR_CORRUPT, "batch 3 is bad");
    arrays[0][0] = (float)batch;
    return MTL_OK;
}

static void test_prefetch_errors(void)
{
    mtl_prefetch_config cfg = {.depth = 2, .n_arrays = 1, .counts = {1}, .fill = fill_fails_at_3};
    mtl_prefetch *p = NULL;
    mtl_error err = {0};
    CHECK_OK(mtl_prefetch_create(&cfg, 1, &p, &err), &err);
    if (!p)
        return;
    float *mine = mtl_aligned_alloc(sizeof(float));
    double waited = 0;
    CHECK_OK(mtl_prefetch_take(p, &mine, &waited, &err), &err);
    CHECK(mine[0] == 1.0f);
    CHECK_OK(mtl_prefetch_take(p, &mine, &waited, &err), &err);
    CHECK(mine[0] == 2.0f && mtl_prefetch_next(p) == 3);
    CHECK_FAILS(mtl_prefetch_take(p, &mine, &waited, &err), &err, MTL_ERR_CORRUPT, "batch 3 is bad");
    CHECK_FAILS(mtl_prefetch_take(p, &mine, &waited, &err), &err, MTL_ERR_CORRUPT, "batch 3 is bad");
    mtl_prefetch_free(p);
    mtl_aligned_free(mine);
}

/* A detection database: 3 records of 8x10 pixels with 2, 0 and 1 boxes of categories 3 and 7 (with
 * `stray`, record 2's box has category 5, which the metadata does not list). */
static int write_box_db(const char *path, int stray)
{
    static const float boxes0[] = {3, 1, 2, 3, 4, /* class x y w h */ 7, 6, 0, 4, 8};
    static const float boxes2[] = {7, 0.5f, 0.5f, 2, 2}, stray2[] = {5, 0.5f, 0.5f, 2, 2};
    const float *boxes[3] = {boxes0, NULL, stray ? stray2 : boxes2};
    const int n_boxes[3] = {2, 0, 1};
    uint8_t pixels[80] = {0};
    mtl_error err = {0};
    mtl_db_writer *w = NULL;
    CHECK_OK(mtl_db_writer_open(path, &w, &err), &err);
    if (!w)
        return 0;
    for (int i = 0; i < 3; i++) {
        mtl_record r = {.channels = 1, .height = 8, .width = 10, .n_boxes = n_boxes[i], .boxes = boxes[i],
                        .n_bytes = sizeof(pixels), .data = pixels};
        CHECK_OK(mtl_db_writer_put(w, i, &r, &err), &err);
    }
    char *names[] = {"shirt", "shoe", NULL};
    int ids[] = {3, 7};
    mtl_db_meta meta = {.count = 3, .channels = 1, .height = 8, .width = 10, .has_boxes = 1, .label_names = names,
                        .category_ids = ids};
    mtl_status st = mtl_db_writer_finish(w, &meta, &err);
    CHECK_OK(st, &err);
    return st == MTL_OK;
}

/* Detection data: box lists become gt_boxes rows (batch index, x1, y1, x2, y2, class) with the
 * categories numbered from 1, im_info rows give the image size, and boxes follow a crop. */
static void test_detection_data(void)
{
    const char *db = tmp_path("boxes_lmdb");
    if (!write_box_db(db, 0))
        return;
    built b;
    if (!build_ok(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 3 }", db),
                  MTL_PHASE_TEST, 3, &b))
        return;
    CHECK(shape_is(b.tops[1], 2, 0, 6, 0, 0));
    if (step_ok(&b)) {
        static const float want[3][6] = {{0, 1, 2, 4, 6, 1}, {0, 6, 0, 10, 8, 2}, {2, 0.5f, 0.5f, 2.5f, 2.5f, 2}};
        CHECK(shape_is(b.tops[1], 2, 3, 6, 0, 0));
        for (int r = 0; r < 3 && b.tops[1]->count == 18; r++)
            for (int k = 0; k < 6; k++)
                CHECK_NEAR(b.tops[1]->data[6 * r + k], want[r][k], 1e-6);
        CHECK(shape_is(b.tops[2], 2, 3, 3, 0, 0));
        for (int s = 0; s < 3; s++) {
            CHECK_NEAR(b.tops[2]->data[3 * s], 8, 0);
            CHECK_NEAR(b.tops[2]->data[3 * s + 1], 10, 0);
            CHECK_NEAR(b.tops[2]->data[3 * s + 2], 1, 0);
        }
    }
    free_built(&b);

    /* a centred 6x6 crop at TEST starts at (2, 1): the boxes move by (-2, -1) and are clipped; the
     * third (0.5..2.5) keeps 0.5 x 1.5 pixels and is dropped */
    if (!build_ok(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 3 } "
                             "transform_param { crop_size: 6 }", db),
                  MTL_PHASE_TEST, 2, &b))
        return;
    if (step_ok(&b)) {
        static const float want[2][6] = {{0, 0, 1, 2, 5, 1}, {0, 4, 0, 6, 6, 2}};
        CHECK(shape_is(b.tops[1], 2, 2, 6, 0, 0));
        for (int r = 0; r < 2 && b.tops[1]->count == 12; r++)
            for (int k = 0; k < 6; k++)
                CHECK_NEAR(b.tops[1]->data[6 * r + k], want[r][k], 1e-6);
    }
    free_built(&b);

    /* a mirror maps x to width - x */
    mtl_transform t = {.out_width = 10, .out_height = 8, .channels = 1, .height = 8, .width = 10};
    float box[4] = {1, 2, 4, 5};
    CHECK(mtl_transform_box(&t, (mtl_crop){0, 0, 1}, (mtl_warp){0.0f, 1.0f}, box));
    CHECK_NEAR(box[0], 6, 1e-6);
    CHECK_NEAR(box[1], 2, 1e-6);
    CHECK_NEAR(box[2], 9, 1e-6);
    CHECK_NEAR(box[3], 5, 1e-6);
    /* a 90 degree turn about the centre (5, 4) maps the box's corners to a box of swapped sides */
    float turned[4] = {4, 3, 6, 7};
    CHECK(mtl_transform_box(&t, (mtl_crop){0, 0, 0}, (mtl_warp){90.0f, 1.0f}, turned));
    CHECK_NEAR(turned[0], 2, 1e-5);
    CHECK_NEAR(turned[1], 3, 1e-5);
    CHECK_NEAR(turned[2], 6, 1e-5);
    CHECK_NEAR(turned[3], 5, 1e-5);

    check_build_fails(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 1 } "
                                 "transform_param { landmarks { first_label: 0 count: 1 } }", db),
                      2, MTL_ERR_CONFIG, "box lists");

    /* a third top needs a detection database */
    const char *plain = tmp_path("plain_for_boxes_lmdb");
    db_spec spec = {.count = 2, .channels = 1, .height = 2, .width = 2, .n_labels = 1};
    if (write_db(plain, &spec))
        check_build_fails(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 1 }", plain), 3,
                          MTL_ERR_CONFIG, "is not a detection database: its tops are data and label");

    /* a box whose category the metadata does not list is named when its batch is read */
    const char *stray = tmp_path("stray_boxes_lmdb");
    if (write_box_db(stray, 1) &&
        build_ok(layer_text("name: 'd' type: 'Data' data_param { source: '%s' batch_size: 3 }", stray), MTL_PHASE_TEST,
                 2, &b)) {
        mtl_error err = {0};
        mtl_status st = step(&b, &err);
        CHECK_MSG(st == MTL_ERR_CORRUPT && strstr(err.message, "record 2") &&
                      strstr(err.message, "box 0 has category 5, not one of the database's categories"),
                  "stray category: got %s '%s'", mtl_status_name(st), err.message);
        free_built(&b);
    }
}

int main(void)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/mtl_data_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_data_in_order();
    test_encoded_and_missing();
    test_transforms();
    test_transform_direct();
    test_shuffle();
    test_many_epochs();
    test_resume();
    test_in_net();
    test_solver_resume();
    test_image_data();
    test_memory_data();
    test_errors();
    test_prefetch_errors();
    test_detection_data();
    test_remove_tree(tmp_dir);
    return check_finish();
}
