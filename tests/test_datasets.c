/* The Fashion-MNIST IDX reader and the four data set builders, on tiny synthetic IDX files this test
 * writes itself (never the installed data set): the specification checked against hand
 * computations, reproducibility from the seed, interrupted builds and error messages. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "data/builders.h"
#include "data/fashion.h"
#include "data/image.h"
#include "mtl/mtl.h"

#define N_SOURCE 200 /* items per synthetic split */
#define PI_D 3.14159265358979323846

static char work[64];

static const char *wpath(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A path under the work directory, in one of a few rotating buffers. */
static const char *wpath(const char *fmt, ...)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    int n = snprintf(b, sizeof(bufs[0]), "%s/", work);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b + n, sizeof(bufs[0]) - (size_t)n, fmt, ap);
    va_end(ap);
    return b;
}

/* ================================================================== synthetic sources */

/* Item k: a rectangle of varying values (all above 16) on zeros; the rectangle moves with k and is
 * off-centre horizontally, so a mirrored item differs from the original. Its class is k % 10. */
static void synth_rect(int k, int *top, int *bottom, int *left, int *right)
{
    *top = 2 + k % 5;
    *bottom = 25 - k % 3; /* exclusive */
    *left = 3 + k % 4;
    *right = 22 - k % 6; /* exclusive */
}

static uint8_t synth_pixel(int k, int r, int c)
{
    int top, bottom, left, right;
    synth_rect(k, &top, &bottom, &left, &right);
    if (r < top || r >= bottom || c < left || c >= right)
        return 0;
    return (uint8_t)(40 + (r * 7 + c * 13 + k * 29) % 200);
}

static void synth_item(int k, uint8_t *out)
{
    for (int r = 0; r < 28; r++)
        for (int c = 0; c < 28; c++)
            out[r * 28 + c] = synth_pixel(k, r, c);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Writes an IDX file: magic, dims, then `payload` bytes of data (fewer than the dims announce makes
 * a truncated file). gz selects gzip or plain. */
static void write_idx(const char *path, uint32_t magic, int n_dims, const uint32_t *dims, const uint8_t *data,
                      size_t payload, int gz)
{
    uint8_t header[16];
    put_be32(header, magic);
    for (int d = 0; d < n_dims; d++)
        put_be32(header + 4 + 4 * d, dims[d]);
    size_t header_size = 4 + 4 * (size_t)n_dims;
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (!f) {
            CHECK_MSG(0, "cannot write %s", path);
            return;
        }
        gzwrite(f, header, (unsigned)header_size);
        if (payload)
            gzwrite(f, data, (unsigned)payload);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        if (!f) {
            CHECK_MSG(0, "cannot write %s", path);
            return;
        }
        fwrite(header, 1, header_size, f);
        fwrite(data, 1, payload, f);
        fclose(f);
    }
}

/* A Fashion-MNIST-like directory with N_SOURCE items per split; test items are offset by 1000 so
 * the splits differ. */
static void write_source(const char *dir)
{
    mkdir(dir, 0777);
    static uint8_t images[N_SOURCE * 784];
    uint8_t labels[N_SOURCE];
    const char *splits[2] = {"train", "t10k"};
    for (int s = 0; s < 2; s++) {
        for (int k = 0; k < N_SOURCE; k++) {
            synth_item(k + 1000 * s, images + k * 784);
            labels[k] = (uint8_t)(k % 10);
        }
        uint32_t idims[3] = {N_SOURCE, 28, 28}, ldims[1] = {N_SOURCE};
        char path[600];
        snprintf(path, sizeof(path), "%s/%s-images-idx3-ubyte.gz", dir, splits[s]);
        write_idx(path, MTL_IDX_IMAGES_MAGIC, 3, idims, images, sizeof(images), 1);
        snprintf(path, sizeof(path), "%s/%s-labels-idx1-ubyte.gz", dir, splits[s]);
        write_idx(path, MTL_IDX_LABELS_MAGIC, 1, ldims, labels, sizeof(labels), 1);
    }
}

/* ================================================================== helpers */

static char *read_text(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[n] = '\0';
    if (size)
        *size = (size_t)n;
    fclose(f);
    return buf;
}

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* 1 when both files exist and hold the same bytes. */
static int same_file(const char *p, const char *q)
{
    size_t np = 0, nq = 0;
    char *a = read_text(p, &np), *b = read_text(q, &nq);
    int same = a && b && np == nq && memcmp(a, b, np) == 0;
    free(a);
    free(b);
    return same;
}

static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

/* Checksum of the first records of a build: its list (or JSON) file and its first n images. */
static uint64_t checksum_build(const char *dir, const char *list, int n)
{
    char path[600];
    uint64_t h = 0xcbf29ce484222325ULL;
    snprintf(path, sizeof(path), "%s/%s", dir, list);
    size_t size;
    char *text = read_text(path, &size);
    if (!text)
        return 0;
    h = fnv(h, text, size);
    free(text);
    for (int k = 0; k < n; k++) {
        snprintf(path, sizeof(path), "%s/train/%05d.png", dir, k);
        if (!(text = read_text(path, &size)))
            return 0;
        h = fnv(h, text, size);
        free(text);
    }
    return h;
}

static int load_png(const char *dir, const char *rel, mtl_image *img)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    mtl_error err = {0};
    if (mtl_image_load(path, 1, img, &err) != MTL_OK) {
        CHECK_MSG(0, "cannot load %s: %s", path, err.message);
        return -1;
    }
    return 0;
}

static mtl_status build(mtl_dataset_kind kind, const char *out, uint64_t seed, int64_t limit, mtl_dataset_summary *sum,
                        mtl_error *err)
{
    mtl_dataset_options o = {.source = wpath("src"), .out = out, .seed = seed, .limit = limit};
    return mtl_dataset_build(kind, &o, sum, err);
}

/* ================================================================== IDX reader */

static void test_idx_reader(void)
{
    /* 3 images of 2x4 and their labels, hand-made */
    const uint8_t pixels[24] = {0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 255, 254, 253, 252, 9, 8, 7, 6};
    const uint8_t labels[3] = {7, 0, 9};
    uint32_t idims[3] = {3, 2, 4}, ldims[1] = {3};
    write_idx(wpath("img.gz"), MTL_IDX_IMAGES_MAGIC, 3, idims, pixels, sizeof(pixels), 1);
    write_idx(wpath("lab.gz"), MTL_IDX_LABELS_MAGIC, 1, ldims, labels, sizeof(labels), 1);
    write_idx(wpath("img.raw"), MTL_IDX_IMAGES_MAGIC, 3, idims, pixels, sizeof(pixels), 0);

    mtl_error err = {0};
    int64_t count = 0;
    int rows = 0, cols = 0;
    uint8_t *data = NULL;
    CHECK_OK(mtl_idx_read_images(wpath("img.gz"), &count, &rows, &cols, &data, &err), &err);
    CHECK_INT(count, 3);
    CHECK_INT(rows, 2);
    CHECK_INT(cols, 4);
    CHECK(data && memcmp(data, pixels, sizeof(pixels)) == 0);
    free(data);
    CHECK_OK(mtl_idx_read_images(wpath("img.raw"), &count, &rows, &cols, &data, &err), &err);
    CHECK(data && memcmp(data, pixels, sizeof(pixels)) == 0);
    free(data);
    CHECK_OK(mtl_idx_read_labels(wpath("lab.gz"), &count, &data, &err), &err);
    CHECK_INT(count, 3);
    CHECK(data && data[0] == 7 && data[1] == 0 && data[2] == 9);
    free(data);

    /* errors name the file and say what is wrong */
    CHECK_FAILS(mtl_idx_read_images(wpath("lab.gz"), &count, &rows, &cols, &data, &err), &err, MTL_ERR_CORRUPT,
                "magic number 0x00000801");
    CHECK(strstr(err.message, "lab.gz") != NULL);
    CHECK_FAILS(mtl_idx_read_labels(wpath("img.gz"), &count, &data, &err), &err, MTL_ERR_CORRUPT, "magic number");
    write_idx(wpath("short.gz"), MTL_IDX_IMAGES_MAGIC, 3, idims, pixels, 20, 1);
    CHECK_FAILS(mtl_idx_read_images(wpath("short.gz"), &count, &rows, &cols, &data, &err), &err, MTL_ERR_CORRUPT,
                "truncated");
    CHECK(strstr(err.message, "short.gz") && strstr(err.message, "24 bytes") && strstr(err.message, "has 20"));
    write_idx(wpath("header.gz"), MTL_IDX_IMAGES_MAGIC, 1, idims, pixels, 0, 1); /* header cut after 8 bytes */
    CHECK_FAILS(mtl_idx_read_images(wpath("header.gz"), &count, &rows, &cols, &data, &err), &err, MTL_ERR_CORRUPT,
                "truncated");
    uint32_t more[1] = {2};
    write_idx(wpath("long.gz"), MTL_IDX_LABELS_MAGIC, 1, more, labels, 3, 1);
    CHECK_FAILS(mtl_idx_read_labels(wpath("long.gz"), &count, &data, &err), &err, MTL_ERR_CORRUPT, "extra data");
    uint32_t zero[3] = {0, 28, 28};
    write_idx(wpath("empty.gz"), MTL_IDX_IMAGES_MAGIC, 3, zero, pixels, 0, 1);
    CHECK_FAILS(mtl_idx_read_images(wpath("empty.gz"), &count, &rows, &cols, &data, &err), &err, MTL_ERR_CORRUPT,
                "empty");
    uint32_t huge[3] = {0xffffffffu, 28, 28};
    write_idx(wpath("huge.gz"), MTL_IDX_IMAGES_MAGIC, 3, huge, pixels, 24, 1);
    CHECK_FAILS(mtl_idx_read_images(wpath("huge.gz"), &count, &rows, &cols, &data, &err), &err, MTL_ERR_CORRUPT,
                "corrupt");
    CHECK_FAILS(mtl_idx_read_images(wpath("none.gz"), &count, &rows, &cols, &data, &err), &err, MTL_ERR_NOT_FOUND,
                "none.gz");
    /* a damaged gzip stream: valid gzip header, garbage after it */
    FILE *f = fopen(wpath("damaged.gz"), "wb");
    const uint8_t junk[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0x12, 0x34, 0x56, 0x78};
    fwrite(junk, 1, sizeof(junk), f);
    fclose(f);
    CHECK_FAILS(mtl_idx_read_images(wpath("damaged.gz"), &count, &rows, &cols, &data, &err), &err, MTL_ERR_CORRUPT,
                "damaged.gz");

    /* mtl_fashion_load: split files by name, 28x28 items, counts that agree, labels 0-9 */
    mkdir(wpath("fm"), 0777);
    static uint8_t items[4 * 784];
    for (int k = 0; k < 4; k++)
        synth_item(k, items + k * 784);
    uint8_t lab4[4] = {0, 3, 9, 5};
    uint32_t d4[3] = {4, 28, 28}, l4[1] = {4};
    write_idx(wpath("fm/train-images-idx3-ubyte.gz"), MTL_IDX_IMAGES_MAGIC, 3, d4, items, sizeof(items), 1);
    write_idx(wpath("fm/train-labels-idx1-ubyte.gz"), MTL_IDX_LABELS_MAGIC, 1, l4, lab4, 4, 1);
    mtl_fashion_set set;
    CHECK_OK(mtl_fashion_load(wpath("fm"), "train", &set, &err), &err);
    CHECK_INT(set.count, 4);
    CHECK(set.images && memcmp(set.images, items, sizeof(items)) == 0);
    CHECK(set.labels && set.labels[1] == 3);
    mtl_fashion_free(&set);
    mtl_fashion_free(NULL);
    CHECK_FAILS(mtl_fashion_load(wpath("fm"), "t10k", &set, &err), &err, MTL_ERR_NOT_FOUND,
                "t10k-images-idx3-ubyte.gz");
    uint32_t l3[1] = {3};
    write_idx(wpath("fm/train-labels-idx1-ubyte.gz"), MTL_IDX_LABELS_MAGIC, 1, l3, lab4, 3, 1);
    CHECK_FAILS(mtl_fashion_load(wpath("fm"), "train", &set, &err), &err, MTL_ERR_CORRUPT, "3 labels");
    lab4[2] = 10;
    write_idx(wpath("fm/train-labels-idx1-ubyte.gz"), MTL_IDX_LABELS_MAGIC, 1, l4, lab4, 4, 1);
    CHECK_FAILS(mtl_fashion_load(wpath("fm"), "train", &set, &err), &err, MTL_ERR_CORRUPT, "label 10 of item 2");
    write_idx(wpath("fm/train-images-idx3-ubyte.gz"), MTL_IDX_IMAGES_MAGIC, 3, idims, pixels, sizeof(pixels), 1);
    CHECK_FAILS(mtl_fashion_load(wpath("fm"), "train", &set, &err), &err, MTL_ERR_CORRUPT, "2x4 images");

    CHECK(strcmp(mtl_fashion_class_name(0), "T-shirt/top") == 0);
    CHECK(strcmp(mtl_fashion_class_name(9), "Ankle boot") == 0);
    const int groups[10] = {0, 1, 0, 1, 0, 2, 0, 2, 3, 2};
    for (int c = 0; c < 10; c++)
        CHECK_INT(mtl_fashion_group(c), groups[c]);
}

/* ================================================================== per-item constructions */

static void test_geometry(void)
{
    const int a[4] = {0, 0, 10, 10}, b[4] = {5, 5, 10, 10}, c[4] = {10, 0, 4, 4};
    CHECK_NEAR(mtl_dataset_iou(a, b), 25.0 / 175.0, 1e-12);
    CHECK_NEAR(mtl_dataset_iou(a, c), 0.0, 1e-12); /* touching edges do not overlap */
    CHECK_NEAR(mtl_dataset_iou(a, a), 1.0, 1e-12);

    uint8_t img[5 * 4] = {0};
    int box[4];
    CHECK_INT(mtl_dataset_tight_box(img, 5, 4, 16, box), 0);
    img[1 * 5 + 2] = 17; /* row 1, col 2 */
    img[3 * 5 + 4] = 200;
    img[0 * 5 + 0] = 16; /* not above the threshold */
    CHECK_INT(mtl_dataset_tight_box(img, 5, 4, 16, box), 1);
    CHECK(box[0] == 2 && box[1] == 1 && box[2] == 3 && box[3] == 3);

    /* MultiFashion's nearest-neighbour rows: floor((dst + 0.5) * 36 / 28), worked out by hand */
    const int expect_src[28] = {0,  1,  3,  4,  5,  7,  8,  9,  10, 12, 13, 14, 16, 17,
                                18, 19, 21, 22, 23, 25, 26, 27, 28, 30, 31, 32, 34, 35};
    for (int d = 0; d < 28; d++)
        CHECK_INT(mtl_multifashion_source(d), expect_src[d]);

    /* bilinear item scaling: s = 28 is the identity; s = 56 interpolates halfway steps */
    uint8_t item[784], out[64 * 64];
    for (int r = 0; r < 28; r++)
        for (int x = 0; x < 28; x++)
            item[r * 28 + x] = (uint8_t)(x * 8 + r);
    mtl_fashiondet_scale(item, 28, out);
    CHECK(memcmp(item, out, 784) == 0);
    mtl_fashiondet_scale(item, 56, out);
    /* out x = 0: source -0.25 clamps to 0; x = 1: 0.25 -> 0.75 * 0 + 0.25 * 8 = 2; x = 2: 0.75 -> 6;
     * x = 55: 27.25 clamps to 27 -> 216; rows likewise: y = 3 -> 1.25 -> 1.25 */
    CHECK_INT(out[0], 0);
    CHECK_INT(out[1], 2);
    CHECK_INT(out[2], 6);
    CHECK_INT(out[55], 216);
    CHECK_INT(out[3 * 56 + 1], 3); /* 2 + 1.25 = 3.25 -> 3 */
    mtl_fashiondet_scale(item, 24, out);
    /* s = 24: x = 0 samples 0.5 * 28 / 24 - 0.5 = 0.0833 -> 0.667; y = 0 the same -> 0.667 + 0.0833 = 0.75 -> 1 */
    CHECK_INT(out[0], 1);

    /* FashionPose, by hand: theta 0, scale 1, centre (32, 32) puts item pixel (r, c) at (r + 18, c + 18) */
    uint8_t canvas[64 * 64];
    float lm[10];
    synth_item(7, item);
    int top, bottom, left, right;
    synth_rect(7, &top, &bottom, &left, &right);
    mtl_pose_params p = {.mirrored = 0, .theta = 0, .scale = 1, .cx = 32, .cy = 32};
    mtl_fashionpose_render(item, &p, canvas, lm);
    int same = 1;
    for (int r = 0; r < 64; r++)
        for (int x = 0; x < 64; x++) {
            int ir = r - 18, ic = x - 18;
            uint8_t want = ir >= 0 && ir < 28 && ic >= 0 && ic < 28 ? item[ir * 28 + ic] : 0;
            same &= canvas[r * 64 + x] == want;
        }
    CHECK_MSG(same, "pose render with the identity transform is a shift by 18");
    CHECK_NEAR(lm[0], left + 18, 1e-4);
    CHECK_NEAR(lm[1], top + 18, 1e-4);
    CHECK_NEAR(lm[2], right + 18, 1e-4); /* top-right corner: the box's right edge */
    CHECK_NEAR(lm[5], bottom + 18, 1e-4);
    CHECK_NEAR(lm[8], (left + right) / 2.0 + 18, 1e-4);
    /* mirrored: column c goes to 27 - c, and the box edges to 28 - right .. 28 - left */
    p.mirrored = 1;
    mtl_fashionpose_render(item, &p, canvas, lm);
    same = 1;
    for (int r = 0; r < 28; r++)
        for (int x = 0; x < 28; x++)
            same &= canvas[(r + 18) * 64 + (27 - x) + 18] == item[r * 28 + x];
    CHECK_MSG(same, "mirrored pose render");
    CHECK_NEAR(lm[0], 28 - right + 18, 1e-4);
    CHECK_NEAR(lm[2], 28 - left + 18, 1e-4);
    /* theta 90 (clockwise on screen), scale 2: frame offset (u, v) from (14, 14) lands at C + 2 * (-v, u) */
    p = (mtl_pose_params){.mirrored = 0, .theta = 90, .scale = 2, .cx = 30, .cy = 34};
    mtl_fashionpose_render(item, &p, canvas, lm);
    CHECK_NEAR(lm[0], 30 + 2 * -(top - 14), 1e-3);
    CHECK_NEAR(lm[1], 34 + 2 * (left - 14), 1e-3);
}

/* ================================================================== MultiFashion */

/* The construction written out independently: canvas max, then the hand-derived NN rows. */
static uint8_t mf_pixel(const uint8_t *l, const uint8_t *r, int y, int x)
{
    int sy = (2 * y + 1) * 36 / 56, sx = (2 * x + 1) * 36 / 56;
    uint8_t a = sy < 28 && sx < 28 ? l[sy * 28 + sx] : 0;
    uint8_t b = sy >= 6 && sy < 34 && sx >= 6 && sx < 34 ? r[(sy - 6) * 28 + sx - 6] : 0;
    return a > b ? a : b;
}

static void test_multifashion(void)
{
    mtl_error err = {0};
    mtl_dataset_summary sum;
    const char *out = wpath("mf");
    CHECK_OK(build(MTL_DATASET_MULTIFASHION, out, 7, 0, &sum, &err), &err);
    CHECK_INT(sum.images[0], N_SOURCE);
    CHECK_INT(sum.images[1], N_SOURCE);
    const char *splits[2] = {"train", "test"};
    int partner_seen[N_SOURCE] = {0};
    for (int s = 0; s < 2; s++) {
        char *text = read_text(wpath("mf/%s.txt", splits[s]), NULL);
        CHECK(text != NULL);
        if (!text)
            return;
        int lines = 0, matched = 0;
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), lines++) {
            char rel[64], want_rel[64];
            int lab_l = -1, lab_r = -1;
            CHECK_INT(sscanf(line, "%63s %d %d", rel, &lab_l, &lab_r), 3);
            snprintf(want_rel, sizeof(want_rel), "%s/%05d.png", splits[s], lines);
            CHECK(strcmp(rel, want_rel) == 0);
            CHECK_INT(lab_l, lines % 10); /* item i is the left one, in order */
            if (lines >= 40 && s == 1)
                continue; /* the pixel checks below are the same for every line */
            mtl_image img = {0};
            if (load_png(out, rel, &img))
                break;
            CHECK(img.width == 28 && img.height == 28 && img.channels == 1);
            uint8_t left[784], right[784];
            synth_item(lines + 1000 * s, left);
            /* find the partner: exactly one source item reproduces the image */
            int partner = -1, n_match = 0;
            for (int j = 0; j < N_SOURCE; j++) {
                synth_item(j + 1000 * s, right);
                int eq = 1;
                for (int y = 0; y < 28 && eq; y++)
                    for (int x = 0; x < 28 && eq; x++)
                        eq = img.pixels[y * 28 + x] == mf_pixel(left, right, y, x);
                if (eq) {
                    partner = j;
                    n_match++;
                }
            }
            CHECK_MSG(n_match == 1, "%s line %d: %d partners reproduce the image", splits[s], lines, n_match);
            if (partner >= 0) {
                matched++;
                CHECK_INT(lab_r, partner % 10);
                if (s == 0)
                    partner_seen[partner]++;
                /* a few pixels by hand: (0,0) <- canvas (0,0), left only; (5,5) <- (7,7) = max(left(7,7),
                 * right(1,1)); (14,14) <- (18,18) = max(left(18,18), right(12,12)); (22,22) <- (28,28) =
                 * right(22,22); (26,3) <- (34,4): outside both items */
                synth_item(partner + 1000 * s, right);
                CHECK_INT(img.pixels[0], left[0]);
                CHECK_INT(img.pixels[5 * 28 + 5], left[7 * 28 + 7] > right[1 * 28 + 1] ? left[7 * 28 + 7]
                                                                                          : right[1 * 28 + 1]);
                CHECK_INT(img.pixels[14 * 28 + 14], left[18 * 28 + 18] > right[12 * 28 + 12] ? left[18 * 28 + 18]
                                                                                                : right[12 * 28 + 12]);
                CHECK_INT(img.pixels[22 * 28 + 22], right[22 * 28 + 22]);
                CHECK_INT(img.pixels[26 * 28 + 3], 0);
            }
            mtl_image_free(&img);
        }
        CHECK_INT(lines, N_SOURCE);
        CHECK(matched >= 40);
        free(text);
    }
    /* partners are drawn uniformly: 200 draws from 200 items hit well over a third of them */
    int distinct = 0;
    for (int j = 0; j < N_SOURCE; j++)
        distinct += partner_seen[j] > 0;
    CHECK_MSG(distinct > 90 && distinct < 170, "%d distinct partners", distinct);
}

/* ================================================================== FashionDet */

static void test_fashiondet(void)
{
    mtl_error err = {0};
    mtl_dataset_summary sum;
    const char *out = wpath("det");
    CHECK_OK(build(MTL_DATASET_FASHIONDET, out, 3, 40, &sum, &err), &err);
    CHECK_INT(sum.images[0], 40);
    CHECK_INT(sum.images[1], 40);
    const char *splits[2] = {"train", "test"};
    for (int s = 0; s < 2; s++) {
        char *text = read_text(wpath("det/%s.json", splits[s]), NULL);
        cJSON *root = text ? cJSON_Parse(text) : NULL;
        free(text);
        CHECK_MSG(root != NULL, "%s.json parses", splits[s]);
        if (!root)
            continue;
        cJSON *images = cJSON_GetObjectItem(root, "images"), *anns = cJSON_GetObjectItem(root, "annotations");
        cJSON *cats = cJSON_GetObjectItem(root, "categories");
        CHECK_INT(cJSON_GetArraySize(images), 40);
        CHECK_INT(cJSON_GetArraySize(cats), 10);
        for (int c = 0; c < cJSON_GetArraySize(cats); c++) {
            cJSON *cat = cJSON_GetArrayItem(cats, c);
            CHECK_INT(cJSON_GetObjectItem(cat, "id")->valueint, c + 1);
            CHECK(strcmp(cJSON_GetObjectItem(cat, "name")->valuestring, mtl_fashion_class_name(c)) == 0);
        }
        CHECK_INT(cJSON_GetArraySize(anns), sum.objects[s]);
        int boxes[40][5][4], n_boxes[40] = {0}, last_id = 0, bad = 0;
        cJSON *a;
        cJSON_ArrayForEach(a, anns)
        {
            int id = cJSON_GetObjectItem(a, "id")->valueint, image = cJSON_GetObjectItem(a, "image_id")->valueint;
            int cat = cJSON_GetObjectItem(a, "category_id")->valueint;
            cJSON *bbox = cJSON_GetObjectItem(a, "bbox");
            int b[4];
            for (int q = 0; q < 4; q++)
                b[q] = cJSON_GetArrayItem(bbox, q)->valueint;
            bad += id != last_id + 1;
            last_id = id;
            bad += cat < 1 || cat > 10;
            bad += cJSON_GetObjectItem(a, "iscrowd")->valueint != 0;
            bad += cJSON_GetObjectItem(a, "area")->valueint != b[2] * b[3];
            /* inside the canvas, at most the largest scaled frame */
            bad += b[0] < 0 || b[1] < 0 || b[2] < 1 || b[3] < 1 || b[0] + b[2] > 128 || b[1] + b[3] > 128;
            bad += b[2] > 64 || b[3] > 64;
            if (image < 1 || image > 40 || n_boxes[image - 1] >= 5) {
                bad++;
                continue;
            }
            memcpy(boxes[image - 1][n_boxes[image - 1]++], b, sizeof(b));
        }
        CHECK_MSG(bad == 0, "%s: %d annotation fields off the specification", splits[s], bad);
        int iou_bad = 0, edge_bad = 0, empty = 0;
        for (int k = 0; k < 40; k++) {
            empty += n_boxes[k] == 0;
            for (int i = 0; i < n_boxes[k]; i++)
                for (int j = i + 1; j < n_boxes[k]; j++) {
                    int *p = boxes[k][i], *q = boxes[k][j];
                    int ix = (p[0] + p[2] < q[0] + q[2] ? p[0] + p[2] : q[0] + q[2]) - (p[0] > q[0] ? p[0] : q[0]);
                    int iy = (p[1] + p[3] < q[1] + q[3] ? p[1] + p[3] : q[1] + q[3]) - (p[1] > q[1] ? p[1] : q[1]);
                    double inter = ix > 0 && iy > 0 ? (double)ix * iy : 0;
                    iou_bad += inter / (p[2] * p[3] + q[2] * q[3] - inter) > 0.3;
                }
            /* tight boxes: each edge row and column of a box holds an item pixel above 16 (the max
             * compositing keeps it), and the image is 128x128 grey */
            char rel[32];
            snprintf(rel, sizeof(rel), "%s/%05d.png", splits[s], k);
            mtl_image img = {0};
            if (load_png(out, rel, &img))
                break;
            CHECK(img.width == 128 && img.height == 128);
            for (int i = 0; i < n_boxes[k]; i++) {
                int *b = boxes[k][i], hit[4] = {0};
                for (int t = 0; t < b[2]; t++) {
                    hit[0] |= img.pixels[b[1] * 128 + b[0] + t] > 16;
                    hit[1] |= img.pixels[(b[1] + b[3] - 1) * 128 + b[0] + t] > 16;
                }
                for (int t = 0; t < b[3]; t++) {
                    hit[2] |= img.pixels[(b[1] + t) * 128 + b[0]] > 16;
                    hit[3] |= img.pixels[(b[1] + t) * 128 + b[0] + b[2] - 1] > 16;
                }
                edge_bad += !(hit[0] && hit[1] && hit[2] && hit[3]);
            }
            /* faint noise: most background pixels are dark but not all zero */
            int zeros = 0, dark = 0;
            for (int i = 0; i < 128 * 128; i++) {
                zeros += img.pixels[i] == 0;
                dark += img.pixels[i] < 40;
            }
            CHECK_MSG(zeros > 2000 && zeros < 128 * 128 - 1000 && dark > 4000, "image %d: %d zeros", k, zeros);
            mtl_image_free(&img);
        }
        CHECK_MSG(iou_bad == 0, "%s: %d box pairs with IoU above 0.3", splits[s], iou_bad);
        CHECK_MSG(edge_bad == 0, "%s: %d boxes not tight", splits[s], edge_bad);
        CHECK_INT(empty, 0); /* the first item always finds a place */
        cJSON_Delete(root);
    }
}

/* ================================================================== FashionPose */

/* Renders the item with parameters recovered from the listed landmarks, for one mirroring choice,
 * and counts the pixels that differ from the written image by more than 8. */
static int pose_fit(const uint8_t *item, const uint8_t *png, const float *lm, int mirrored, float theta, float scale)
{
    int box[4];
    uint8_t frame[784], canvas[64 * 64];
    for (int r = 0; r < 28; r++)
        for (int c = 0; c < 28; c++)
            frame[r * 28 + c] = item[r * 28 + (mirrored ? 27 - c : c)];
    mtl_dataset_tight_box(frame, 28, 28, 16, box);
    double ux = box[0] + box[2] / 2.0 - 14, uy = box[1] + box[3] / 2.0 - 14;
    double th = theta * PI_D / 180, cs = cos(th), sn = sin(th);
    mtl_pose_params p = {.mirrored = mirrored, .theta = theta, .scale = scale};
    p.cx = (float)(lm[8] - scale * (cs * ux - sn * uy));
    p.cy = (float)(lm[9] - scale * (sn * ux + cs * uy));
    float unused[10];
    mtl_fashionpose_render(item, &p, canvas, unused);
    int differ = 0;
    for (int i = 0; i < 64 * 64; i++)
        differ += abs(canvas[i] - png[i]) > 8;
    return differ;
}

static void test_fashionpose(void)
{
    mtl_error err = {0};
    mtl_dataset_summary sum;
    const char *out = wpath("pose");
    CHECK_OK(build(MTL_DATASET_FASHIONPOSE, out, 11, 0, &sum, &err), &err);
    CHECK_INT(sum.images[0], N_SOURCE); /* 30000 wanted, the source has fewer */
    CHECK_INT(sum.images[1], N_SOURCE);
    char *text = read_text(wpath("pose/train.txt"), NULL);
    CHECK(text != NULL);
    if (!text)
        return;
    int lines = 0, bad = 0, mirror_bad = 0, buckets[3] = {0}, mirrors = 0, sizes = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), lines++) {
        char rel[64];
        float lm[10];
        int cls, group, pose, mirrored, size;
        int got = sscanf(line, "%63s %f %f %f %f %f %f %f %f %f %f %d %d %d %d %d", rel, &lm[0], &lm[1], &lm[2], &lm[3],
                         &lm[4], &lm[5], &lm[6], &lm[7], &lm[8], &lm[9], &cls, &group, &pose, &mirrored, &size);
        CHECK_INT(got, 16);
        if (got != 16)
            break;
        int top, bottom, left, right;
        synth_rect(lines, &top, &bottom, &left, &right);
        double bw = right - left, bh = bottom - top;
        /* landmark 4 is the centre of the four corners */
        bad += fabs(lm[8] - (lm[0] + lm[2] + lm[4] + lm[6]) / 4) > 2e-3;
        bad += fabs(lm[9] - (lm[1] + lm[3] + lm[5] + lm[7]) / 4) > 2e-3;
        for (int q = 0; q < 10; q++)
            bad += lm[q] < 0 || lm[q] > 64; /* the item stays inside the canvas */
        /* TL->TR is the box's top edge turned by theta and scaled; TL->BL its left edge, turned the
         * same way (a rotation, so the corners keep their order) */
        double ex = lm[2] - lm[0], ey = lm[3] - lm[1], fx = lm[6] - lm[0], fy = lm[7] - lm[1];
        double scale = hypot(ex, ey) / bw, theta = atan2(ey, ex) * 180 / PI_D;
        bad += fabs(hypot(fx, fy) / bh - scale) > 2e-3;
        bad += fabs(fx / hypot(fx, fy) + sin(theta * PI_D / 180)) > 1e-3;
        bad += fabs(fy / hypot(fx, fy) - cos(theta * PI_D / 180)) > 1e-3;
        bad += theta < -40.01 || theta > 40.01 || scale < 0.899 || scale > 1.601;
        /* attributes against the drawn parameters (away from the bucket edges, where %.3f rounding
         * could tip the recovered value) */
        bad += cls != lines % 10 || group != mtl_fashion_group(cls);
        if (fabs(fabs(theta) - 15) > 0.05)
            bad += pose != (theta < -15 ? 0 : theta > 15 ? 2 : 1);
        if (fabs(scale - 1.25) > 0.005)
            bad += size != (scale < 1.25 ? 0 : 1);
        buckets[pose >= 0 && pose < 3 ? pose : 0]++;
        mirrors += mirrored == 1;
        sizes += size == 1;
        if (lines < 40) {
            /* mirroring: the image matches the listed choice and not the other */
            mtl_image img = {0};
            if (load_png(out, rel, &img))
                break;
            uint8_t item[784];
            synth_item(lines, item);
            int fit = pose_fit(item, img.pixels, lm, mirrored, (float)theta, (float)scale);
            int other = pose_fit(item, img.pixels, lm, !mirrored, (float)theta, (float)scale);
            mirror_bad += !(fit <= 10 && other >= 100);
            mtl_image_free(&img);
        }
    }
    free(text);
    CHECK_INT(lines, N_SOURCE);
    CHECK_MSG(bad == 0, "%d landmark or attribute values off the specification", bad);
    CHECK_MSG(mirror_bad == 0, "%d images that do not match their mirrored attribute", mirror_bad);
    /* the draws cover every bucket in plausible proportions (theta U[-40,40]: 31/37/31 %) */
    CHECK_MSG(buckets[0] > 30 && buckets[1] > 40 && buckets[2] > 30, "pose buckets %d %d %d", buckets[0], buckets[1],
              buckets[2]);
    CHECK_MSG(mirrors > 60 && mirrors < 140, "%d mirrored", mirrors);
    CHECK_MSG(sizes > 60 && sizes < 150, "%d large", sizes);
}

/* ================================================================== FashionVerify */

static int read_classes(const char *path, const char *split, int *cls, int max)
{
    char *text = read_text(path, NULL);
    if (!text)
        return -1;
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && n < max; line = strtok_r(NULL, "\n", &save), n++) {
        char rel[64], want[64];
        if (sscanf(line, "%63s %d", rel, &cls[n]) != 2)
            cls[n] = -1;
        snprintf(want, sizeof(want), "%s/%05d.png", split, n);
        if (strcmp(rel, want) != 0)
            cls[n] = -1;
    }
    free(text);
    return n;
}

static void test_fashionverify(void)
{
    mtl_error err = {0};
    mtl_dataset_summary sum;
    const char *out = wpath("ver");
    CHECK_OK(build(MTL_DATASET_FASHIONVERIFY, out, 5, 0, &sum, &err), &err);
    int train_cls[N_SOURCE], test_cls[N_SOURCE];
    int n_train = read_classes(wpath("ver/train.txt"), "train", train_cls, N_SOURCE);
    int n_test = read_classes(wpath("ver/test.txt"), "test", test_cls, N_SOURCE);
    CHECK_INT(n_train, N_SOURCE * 6 / 10); /* classes 0-5 of the train split */
    CHECK_INT(n_test, N_SOURCE * 4 / 10);  /* classes 6-9 of t10k */
    int bad = 0;
    for (int k = 0; k < n_train; k++)
        bad += train_cls[k] < 0 || train_cls[k] > 5;
    for (int k = 0; k < n_test; k++)
        bad += test_cls[k] < 6 || test_cls[k] > 9;
    CHECK_INT(bad, 0);
    /* the images are the source items, in order: train k = source item (k / 6) * 10 + k % 6 */
    mtl_image img = {0};
    if (load_png(out, "train/00007.png", &img) == 0) {
        uint8_t item[784];
        synth_item(11, item);
        CHECK(img.width == 28 && memcmp(img.pixels, item, 784) == 0);
        mtl_image_free(&img);
    }
    if (load_png(out, "test/00005.png", &img) == 0) {
        uint8_t item[784];
        synth_item(1000 + 17, item); /* t10k items 6,7,8,9,16,17: the sixth */
        CHECK(memcmp(img.pixels, item, 784) == 0);
        mtl_image_free(&img);
    }

    /* 6000 pairs, 10 folds of 600, each 300 same-class and 300 different-class, among test images */
    char *text = read_text(wpath("ver/pairs.txt"), NULL);
    CHECK(text != NULL);
    if (!text)
        return;
    int per_fold[10][2] = {{0}}, n = 0;
    bad = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), n++) {
        int fold, same, a, b;
        if (sscanf(line, "%d test/%d.png test/%d.png %d", &fold, &a, &b, &same) != 4 || fold < 0 || fold > 9 ||
            a < 0 || b < 0 || a >= n_test || b >= n_test) {
            bad++;
            continue;
        }
        per_fold[fold][same == 1]++;
        bad += (same == 1) != (test_cls[a] == test_cls[b]) || a == b;
    }
    free(text);
    CHECK_INT(n, 6000);
    CHECK_INT(bad, 0);
    for (int f = 0; f < 10; f++)
        CHECK_MSG(per_fold[f][0] == 300 && per_fold[f][1] == 300, "fold %d: %d different, %d same", f,
                  per_fold[f][0], per_fold[f][1]);
    CHECK_INT(sum.pairs, 6000);
    CHECK_INT(sum.same_pairs, 3000);

    /* with --limit the pair count shrinks too, and pairs do not repeat while distinct ones remain */
    CHECK_OK(build(MTL_DATASET_FASHIONVERIFY, wpath("ver_small"), 5, 60, &sum, &err), &err);
    CHECK_INT(sum.images[0], 60);
    CHECK_INT(sum.images[1], 60);
    CHECK_INT(sum.pairs, 60);
    text = read_text(wpath("ver_small/pairs.txt"), NULL);
    int keys[60], nk = 0, repeats = 0;
    save = NULL;
    for (char *line = text ? strtok_r(text, "\n", &save) : NULL; line && nk < 60; line = strtok_r(NULL, "\n", &save)) {
        int fold, same, a, b;
        if (sscanf(line, "%d test/%d.png test/%d.png %d", &fold, &a, &b, &same) != 4)
            continue;
        int key = a < b ? a * 1000 + b : b * 1000 + a;
        for (int i = 0; i < nk; i++)
            repeats += keys[i] == key;
        keys[nk++] = key;
    }
    free(text);
    CHECK_INT(nk, 60);
    CHECK_INT(repeats, 0);
}

/* ================================================================== reproducibility */

static void test_reproducible(void)
{
    static const struct {
        mtl_dataset_kind kind;
        const char *list;
    } kinds[] = {{MTL_DATASET_MULTIFASHION, "train.txt"},
                 {MTL_DATASET_FASHIONDET, "train.json"},
                 {MTL_DATASET_FASHIONPOSE, "train.txt"},
                 {MTL_DATASET_FASHIONVERIFY, "pairs.txt"}};
    mtl_error err = {0};
    for (int i = 0; i < 4; i++) {
        const char *name = mtl_dataset_name(kinds[i].kind);
        mtl_set_num_threads(1);
        CHECK_OK(build(kinds[i].kind, wpath("r_%s_a", name), 42, 30, NULL, &err), &err);
        mtl_set_num_threads(3); /* the thread count does not change a byte */
        CHECK_OK(build(kinds[i].kind, wpath("r_%s_b", name), 42, 30, NULL, &err), &err);
        mtl_set_num_threads(0);
        CHECK_OK(build(kinds[i].kind, wpath("r_%s_c", name), 43, 30, NULL, &err), &err);
        uint64_t a = checksum_build(wpath("r_%s_a", name), kinds[i].list, 5);
        uint64_t b = checksum_build(wpath("r_%s_b", name), kinds[i].list, 5);
        uint64_t c = checksum_build(wpath("r_%s_c", name), kinds[i].list, 5);
        CHECK_MSG(a != 0 && a == b, "%s: same seed, checksums %016llx and %016llx", name, (unsigned long long)a,
                  (unsigned long long)b);
        CHECK_MSG(a != c, "%s: seeds 42 and 43 give the same files", name);
        if (kinds[i].kind != MTL_DATASET_FASHIONVERIFY) { /* its images are the source items, whatever the seed */
            CHECK_MSG(file_exists(wpath("r_%s_c/train/00000.png", name)) &&
                          !same_file(wpath("r_%s_a/train/00000.png", name), wpath("r_%s_c/train/00000.png", name)),
                      "%s: seeds 42 and 43 draw the same first image", name);
        }
    }
    /* a limited build is the start of the full one */
    CHECK_OK(build(MTL_DATASET_MULTIFASHION, wpath("mf_prefix"), 7, 5, NULL, &err), &err);
    char *full = read_text(wpath("mf/train.txt"), NULL), *part = read_text(wpath("mf_prefix/train.txt"), NULL);
    CHECK(full && part && strncmp(full, part, strlen(part)) == 0 && strlen(part) > 0);
    free(full);
    free(part);
    CHECK(same_file(wpath("mf/train/00004.png"), wpath("mf_prefix/train/00004.png")));
}

/* ================================================================== errors and interruptions */

static int stop_after_first_chunk(void *user, const char *split, int64_t done, int64_t total)
{
    (void)split;
    (void)total;
    int *calls = user;
    return done > 0 && ++*calls >= 1;
}

static void test_errors(void)
{
    mtl_error err = {0};
    mtl_dataset_options o = {.source = wpath("nowhere"), .out = wpath("e1"), .seed = 1};
    CHECK_FAILS(mtl_dataset_build(MTL_DATASET_MULTIFASHION, &o, NULL, &err), &err, MTL_ERR_NOT_FOUND,
                "nowhere/train-images-idx3-ubyte.gz");
    CHECK(strstr(err.message, "multifashion") != NULL);
    o.source = wpath("src");
    o.out = NULL;
    CHECK_FAILS(mtl_dataset_build(MTL_DATASET_MULTIFASHION, &o, NULL, &err), &err, MTL_ERR_ARGUMENT, "output");
    FILE *f = fopen(wpath("afile"), "w");
    fclose(f);
    o.out = wpath("afile/sub");
    CHECK_FAILS(mtl_dataset_build(MTL_DATASET_FASHIONPOSE, &o, NULL, &err), &err, MTL_ERR_IO, "afile");
    CHECK_FAILS(mtl_dataset_build(MTL_DATASET_COUNT, &o, NULL, &err), &err, MTL_ERR_ARGUMENT, "kind");
    mtl_dataset_kind kind;
    CHECK(mtl_dataset_from_name("fashiondet", &kind) == 0 && kind == MTL_DATASET_FASHIONDET);
    CHECK(mtl_dataset_from_name("fashion", &kind) == -1);

    /* a stop before the first chunk: no list; a rebuild over a finished build removes its old list */
    volatile sig_atomic_t stop = 1;
    o.out = wpath("mf");
    o.seed = 7;
    o.stop_flag = &stop;
    CHECK(file_exists(wpath("mf/train.txt")));
    CHECK_FAILS(mtl_dataset_build(MTL_DATASET_MULTIFASHION, &o, NULL, &err), &err, MTL_ERR_INTERRUPTED, "incomplete");
    CHECK(!file_exists(wpath("mf/train.txt")) && !file_exists(wpath("mf/test.txt")));
    /* stopped by the progress callback after the train split: train list written, test list not */
    int calls = 0;
    o.stop_flag = NULL;
    o.out = wpath("stopped");
    o.progress = stop_after_first_chunk;
    o.progress_user = &calls;
    CHECK_FAILS(mtl_dataset_build(MTL_DATASET_MULTIFASHION, &o, NULL, &err), &err, MTL_ERR_INTERRUPTED, "train");
    CHECK(!file_exists(wpath("stopped/train.txt")) && !file_exists(wpath("stopped/train.txt.partial")));

    /* too few test images for verification pairs */
    mkdir(wpath("tiny"), 0777);
    static uint8_t items[12 * 784];
    uint8_t labels[12];
    for (int k = 0; k < 12; k++) {
        synth_item(k, items + k * 784);
        labels[k] = (uint8_t)(k < 11 ? k % 6 : 7); /* a single item of an unseen class */
    }
    uint32_t d[3] = {12, 28, 28}, l[1] = {12};
    write_idx(wpath("tiny/train-images-idx3-ubyte.gz"), MTL_IDX_IMAGES_MAGIC, 3, d, items, sizeof(items), 1);
    write_idx(wpath("tiny/train-labels-idx1-ubyte.gz"), MTL_IDX_LABELS_MAGIC, 1, l, labels, 12, 1);
    write_idx(wpath("tiny/t10k-images-idx3-ubyte.gz"), MTL_IDX_IMAGES_MAGIC, 3, d, items, sizeof(items), 1);
    write_idx(wpath("tiny/t10k-labels-idx1-ubyte.gz"), MTL_IDX_LABELS_MAGIC, 1, l, labels, 12, 1);
    mtl_dataset_options t = {.source = wpath("tiny"), .out = wpath("tiny_out"), .seed = 1};
    CHECK_FAILS(mtl_dataset_build(MTL_DATASET_FASHIONVERIFY, &t, NULL, &err), &err, MTL_ERR_ARGUMENT,
                "verification pairs");
    CHECK(!file_exists(wpath("tiny_out/pairs.txt")));
}

int main(void)
{
    snprintf(work, sizeof(work), "/tmp/mtl_test_datasets_XXXXXX");
    if (!mkdtemp(work)) {
        perror("mkdtemp");
        return 1;
    }
    write_source(wpath("src"));
    test_idx_reader();
    test_geometry();
    test_multifashion();
    test_fashiondet();
    test_fashionpose();
    test_fashionverify();
    test_reproducible();
    test_errors();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work);
    if (check_failed == 0 && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", work);
    return check_finish();
}
