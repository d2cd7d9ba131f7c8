/* Fashion-MNIST as Debian's dataset-fashion-mnist ships it: gzipped IDX files (read with zlib, so
 * plain uncompressed IDX files work too). The readers check magic numbers, dimensions and sizes
 * and name the file in every error. */
#ifndef MTL_DATA_FASHION_H
#define MTL_DATA_FASHION_H

#include <stdint.h>

#include "core/error.h"

#define MTL_FASHION_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define MTL_FASHION_CLASSES 10
#define MTL_FASHION_GROUPS 4
#define MTL_FASHION_SIZE 28 /* items are 28x28 grey */

/* IDX magic numbers: two zero bytes, the element type (0x08: unsigned byte), the number of dims. */
#define MTL_IDX_IMAGES_MAGIC 0x00000803u
#define MTL_IDX_LABELS_MAGIC 0x00000801u

/* One split: count items of rows x cols pixels (row-major, one byte each) and their labels. */
typedef struct mtl_fashion_set {
    int64_t count;
    int rows, cols;
    uint8_t *images; /* count * rows * cols */
    uint8_t *labels; /* count, each < MTL_FASHION_CLASSES */
} mtl_fashion_set;

/* Reads an IDX3 unsigned-byte image file (gzipped or not). *pixels is malloc'd (count*rows*cols). */
mtl_status mtl_idx_read_images(const char *path, int64_t *count, int *rows, int *cols, uint8_t **pixels,
                               mtl_error *err);
/* Reads an IDX1 unsigned-byte label file (gzipped or not). *labels is malloc'd (count). */
mtl_status mtl_idx_read_labels(const char *path, int64_t *count, uint8_t **labels, mtl_error *err);

/* Loads split "train" or "t10k" from dir (NULL: MTL_FASHION_DEFAULT_DIR): <split>-images-idx3-ubyte.gz
 * and <split>-labels-idx1-ubyte.gz (or the same names without .gz). Checks that the counts agree,
 * that items are 28x28 and labels below 10. */
mtl_status mtl_fashion_load(const char *dir, const char *split, mtl_fashion_set *out, mtl_error *err);
void mtl_fashion_free(mtl_fashion_set *set); /* frees the arrays; NULL is a no-op */

/* "T-shirt/top", "Trouser", ... ("?" out of range). */
const char *mtl_fashion_class_name(int label);
/* Coarse group: upper body {0,2,4,6} 0, lower or full body {1,3} 1, footwear {5,7,9} 2, bag {8} 3. */
int mtl_fashion_group(int label);
const char *mtl_fashion_group_name(int group); /* "upper", "lower/full", "footwear", "bag" */

#endif
