/* The example data sets built from Fashion-MNIST (docs/datasets.md specifies them): MultiFashion,
 * FashionDet, FashionPose and FashionVerify, written as PNG files plus list files (COCO JSON for
 * FashionDet, a pair list for FashionVerify). Every random choice comes from a seeded stream per
 * item, so a build is reproducible bit for bit and independent of the thread count, and a build
 * with a limit writes exactly the first items of the full build. */
#ifndef MTL_DATA_BUILDERS_H
#define MTL_DATA_BUILDERS_H

#include <signal.h>
#include <stdint.h>

#include "core/error.h"

typedef enum mtl_dataset_kind {
    MTL_DATASET_MULTIFASHION,
    MTL_DATASET_FASHIONDET,
    MTL_DATASET_FASHIONPOSE,
    MTL_DATASET_FASHIONVERIFY,
    MTL_DATASET_COUNT
} mtl_dataset_kind;

/* Progress after each chunk of items: split is "train" or "test" (or "pairs"). A non-zero return
 * stops the build (as the stop flag does). */
typedef int (*mtl_dataset_progress_fn)(void *user, const char *split, int64_t done, int64_t total);

typedef struct mtl_dataset_options {
    const char *source;              /* Fashion-MNIST directory; NULL: MTL_FASHION_DEFAULT_DIR */
    const char *out;                 /* output directory, created if missing */
    uint64_t seed;
    int64_t limit;                   /* > 0: at most this many items per split (images; pairs scale too) */
    mtl_dataset_progress_fn progress; /* may be NULL */
    void *progress_user;
    volatile sig_atomic_t *stop_flag; /* may be NULL; set (e.g. by SIGINT) to stop between chunks */
} mtl_dataset_options;

typedef struct mtl_dataset_summary {
    int64_t images[2];  /* written per split: [0] train, [1] test */
    int64_t objects[2]; /* FashionDet: boxes; others: one per image */
    int64_t dropped[2]; /* FashionDet: items given up after 50 placements (or with no pixel above 16) */
    int64_t per_class[2][10];
    int64_t pairs, same_pairs; /* FashionVerify */
} mtl_dataset_summary;

/* Canonical names "multifashion", "fashiondet", "fashionpose", "fashionverify". */
const char *mtl_dataset_name(mtl_dataset_kind kind);
/* Returns 0 and sets *kind for a known name, -1 otherwise. */
int mtl_dataset_from_name(const char *name, mtl_dataset_kind *kind);

/* Builds one data set under opts->out. List files (and JSON) are written last, through a temporary
 * name renamed into place, and an old one is removed before a split's images are rewritten: a build
 * that stops early never leaves a list that looks complete. summary may be NULL. */
mtl_status mtl_dataset_build(mtl_dataset_kind kind, const mtl_dataset_options *opts, mtl_dataset_summary *summary,
                             mtl_error *err);

/* ---- The per-item constructions, exposed so tests can check them against hand computations. */

/* Tight box of the pixels above threshold in a w x h image: box = {x, y, width, height}, with
 * width = last column - first column + 1. Returns 0 (box all zero) when no pixel is above it. */
int mtl_dataset_tight_box(const uint8_t *img, int w, int h, int threshold, int box[4]);
/* Intersection over union of two {x, y, w, h} boxes, as areas of the pixel rectangles. */
double mtl_dataset_iou(const int a[4], const int b[4]);

/* MultiFashion's nearest-neighbour source row (or column) on the 36x36 canvas for output row dst of
 * 28: floor((dst + 0.5) * 36 / 28), centre-aligned like PIL's NEAREST that scipy's imresize used. */
int mtl_multifashion_source(int dst);
/* left, right: 28x28 items (row-major); out: 28x28. Canvas 36x36 zeros, left at rows/cols [0,28),
 * right at [6,34), pixel-wise maximum, then nearest-neighbour resize to 28x28. */
void mtl_multifashion_compose(const uint8_t *left, const uint8_t *right, uint8_t *out);

/* Bilinear scaling of a 28x28 item to s x s: output pixel centre X + 0.5 samples the item at
 * (X + 0.5) * 28 / s - 0.5, clamped to [0, 27]; rounded to the nearest integer. */
void mtl_fashiondet_scale(const uint8_t *item, int s, uint8_t *out);

/* FashionPose geometry: the item (28x28), mirrored left-right if mirrored, rotated by theta degrees
 * (clockwise on screen: x right, y down), scaled by scale about its centre (14, 14), with that centre
 * placed at (cx, cy) on the 64x64 canvas. Coordinates are continuous: pixel (row r, column c) covers
 * [c, c+1) x [r, r+1). */
typedef struct mtl_pose_params {
    int mirrored;
    float theta, scale, cx, cy;
} mtl_pose_params;

/* Renders by inverse mapping with bilinear sampling (zero outside the item) into canvas (64x64) and
 * writes the 5 landmarks (x0 y0 ... x4 y4): the corners of the tight box (pixels above 16) of the
 * mirrored item, top-left, top-right, bottom-right, bottom-left, then its centre, mapped forward. */
void mtl_fashionpose_render(const uint8_t *item, const mtl_pose_params *p, uint8_t *canvas, float landmarks[10]);

#define MTL_MULTIFASHION_CANVAS 36
#define MTL_FASHIONDET_SIZE 128
#define MTL_FASHIONPOSE_SIZE 64
#define MTL_DATASET_BOX_THRESHOLD 16 /* box pixels are those above this */

#endif
