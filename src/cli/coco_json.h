/* COCO detection files for `mtl evaluate-detections` and `mtl detect` (docs/detection.md): the
 * annotation file (images, categories, annotations with [x, y, w, h] boxes) and the results file
 * ([{image_id, category_id, bbox, score}]). Images and categories are kept sorted by id, and boxes
 * and results refer to them by their place in that order, the dense indices the evaluation takes. */
#ifndef MTL_CLI_COCO_JSON_H
#define MTL_CLI_COCO_JSON_H

#include <stdint.h>

#include "core/error.h"
#include "detection/evaluate.h"

typedef struct cli_coco_category {
    int64_t id;
    char *name;
} cli_coco_category;

typedef struct cli_coco_image {
    int64_t id;
    char *file_name; /* NULL when the file gives none */
} cli_coco_image;

typedef struct cli_coco {
    const char *path;               /* named in errors */
    int n_categories;
    cli_coco_category *categories;  /* by increasing id */
    int64_t n_images;
    cli_coco_image *images;         /* by increasing id */
    int64_t n_boxes;
    mtl_det_gt *boxes;              /* x1 y1 x2 y2 (x + w, y + h); crowd = iscrowd */
} cli_coco;

/* Reads an annotation file: "images" (each an integer "id", "file_name" optional) and "categories"
 * (integer "id", string "name") must be lists with unique ids; with_annotations also reads
 * "annotations" (each "image_id" and "category_id" of listed ones, "bbox" [x, y, w, h] with w, h
 * >= 0, "iscrowd" 0/1 or a boolean, optional). Errors name the file and the entry at fault. */
mtl_status cli_coco_read(const char *path, int with_annotations, cli_coco *out, mtl_error *err);
void cli_coco_free(cli_coco *c);

/* The place of an id in the sorted lists, or -1. */
int64_t cli_coco_image_index(const cli_coco *c, int64_t id);
int cli_coco_category_index(const cli_coco *c, int64_t id);

/* Reads a results file: a list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"}, each
 * image and category one of gt's. *out (malloc'd, *n entries) uses gt's indices. */
mtl_status cli_coco_read_results(const char *path, const cli_coco *gt, mtl_det_result **out, int64_t *n,
                                 mtl_error *err);

#endif
