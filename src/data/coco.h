/* COCO detection files: the annotation file (images, categories, annotations with [x, y, w, h]
 * boxes) that `mtl convert --coco` packs and `mtl detect` / `mtl evaluate-detections` read, and the
 * results file ([{image_id, category_id, bbox, score}]) the evaluation scores. Images and categories
 * are kept sorted by id; boxes and results refer to them by their place in that order, the dense
 * indices detection/evaluate.h takes. Formats: docs/data-format.md and docs/detection.md. */
#ifndef MTL_DATA_COCO_H
#define MTL_DATA_COCO_H

#include <stdint.h>

#include "core/error.h"
#include "detection/evaluate.h"

/* What mtl_coco_read reads and checks beyond the images and categories. */
enum {
    MTL_COCO_ANNOTATIONS = 1, /* also read "annotations" (else they are not looked at) */
    /* the caller reads the image files: each image needs a non-empty 'file_name', its 'width' and
     * 'height' (optional) are positive integers, and the list holds at least one image */
    MTL_COCO_IMAGE_FILES = 2
};

typedef struct mtl_coco_category {
    int64_t id;
    char *name;
    int index; /* place in the file's "categories" list */
} mtl_coco_category;

typedef struct mtl_coco_image {
    int64_t id;
    char *file_name;   /* NULL when the file gives none */
    int width, height; /* 0 when not given, or not read (without MTL_COCO_IMAGE_FILES) */
    int64_t index;     /* place in the file's "images" list */
} mtl_coco_image;

typedef struct mtl_coco {
    const char *path;              /* named in errors; the caller's string */
    int n_categories;
    mtl_coco_category *categories; /* by increasing id */
    int64_t n_images;
    mtl_coco_image *images;        /* by increasing id */
    int64_t n_boxes;               /* every annotation, crowd ones included, in the file's order */
    mtl_det_gt *boxes;             /* x1 y1 x2 y2 (x + w, y + h); crowd = iscrowd */
    float *xywh;                   /* n_boxes x 4: each 'bbox' [x, y, w, h] as the file gives it */
} mtl_coco;

/* Reads an annotation file: "images" (each an integer "id", "file_name" optional unless
 * MTL_COCO_IMAGE_FILES) and "categories" (integer "id", string "name") must be lists with unique
 * ids; MTL_COCO_ANNOTATIONS also reads "annotations" (each "image_id" and "category_id" of listed
 * ones, "bbox" [x, y, w, h] with w, h >= 0, "iscrowd" 0/1 or a boolean, optional). Errors (PARSE)
 * name the file and the entry at fault by its place in its list. *out is zeroed on failure. */
mtl_status mtl_coco_read(const char *path, int flags, mtl_coco *out, mtl_error *err);
void mtl_coco_free(mtl_coco *c); /* NULL is a no-op */

/* The place of an id in the sorted lists, or -1. */
int64_t mtl_coco_image_index(const mtl_coco *c, int64_t id);
int mtl_coco_category_index(const mtl_coco *c, int64_t id);

/* Reads a results file: a list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"}, each
 * image and category one of gt's. *out (malloc'd, *n entries) uses gt's indices. */
mtl_status mtl_coco_read_results(const char *path, const mtl_coco *gt, mtl_det_result **out, int64_t *n,
                                 mtl_error *err);

#endif
