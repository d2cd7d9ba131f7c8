/* Gzipped IDX readers for Fashion-MNIST through zlib's gzopen/gzread (which read uncompressed files
 * transparently). Sizes in the header are checked against what the file holds, in both directions. */
#include "data/fashion.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* A header announcing more than this is corrupt, not a data set (Fashion-MNIST train is 47 MB). */
#define IDX_MAX_BYTES ((int64_t)1 << 32)

static const char *const class_names[MTL_FASHION_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};
static const int class_groups[MTL_FASHION_CLASSES] = {0, 1, 0, 1, 0, 2, 0, 2, 3, 2};
static const char *const group_names[MTL_FASHION_GROUPS] = {"upper", "lower/full", "footwear", "bag"};

const char *mtl_fashion_class_name(int label)
{
    return label >= 0 && label < MTL_FASHION_CLASSES ? class_names[label] : "?";
}

int mtl_fashion_group(int label) { return label >= 0 && label < MTL_FASHION_CLASSES ? class_groups[label] : -1; }

const char *mtl_fashion_group_name(int group)
{
    return group >= 0 && group < MTL_FASHION_GROUPS ? group_names[group] : "?";
}

static mtl_status gz_open(const char *path, gzFile *out, mtl_error *err)
{
    errno = 0;
    *out = gzopen(path, "rb");
    if (!*out) {
        int e = errno;
        return mtl_fail(err, e == ENOENT ? MTL_ERR_NOT_FOUND : MTL_ERR_IO, "cannot open '%s': %s", path,
                        e ? strerror(e) : "zlib could not allocate its state");
    }
    return MTL_OK;
}

/* Reads exactly n bytes; a short read is a truncated file (or a damaged gzip stream). */
static mtl_status gz_read_exact(gzFile f, const char *path, void *buf, int64_t n, const char *what, mtl_error *err)
{
    uint8_t *p = buf;
    int64_t done = 0;
    while (done < n) {
        int64_t want = n - done;
        if (want > (1 << 30))
            want = 1 << 30;
        int got = gzread(f, p + done, (unsigned)want);
        if (got < 0) {
            int code;
            const char *msg = gzerror(f, &code);
            return mtl_fail(err, MTL_ERR_CORRUPT, "'%s': damaged gzip data while reading %s: %s", path, what, msg);
        }
        if (got == 0)
            break;
        done += got;
    }
    if (done < n) {
        int code;
        const char *msg = gzerror(f, &code);
        return mtl_fail(err, MTL_ERR_CORRUPT, "'%s' is truncated: %s needs %lld bytes, the file has %lld%s%s", path,
                        what, (long long)n, (long long)done, code != Z_OK ? " (zlib: " : "",
                        code != Z_OK ? msg : "");
    }
    return MTL_OK;
}

static uint32_t big_endian(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* Reads the header (magic and dims sizes), checks the magic, then the payload of dims-product bytes,
 * and makes sure nothing follows it. */
static mtl_status idx_read(const char *path, uint32_t magic, int n_dims, uint32_t *dims, uint8_t **data,
                           mtl_error *err)
{
    *data = NULL;
    gzFile f;
    MTL_TRY(gz_open(path, &f, err));
    uint8_t header[16];
    mtl_status st = gz_read_exact(f, path, header, 4, "the IDX magic number", err);
    if (st == MTL_OK && big_endian(header) != magic)
        st = mtl_fail(err, MTL_ERR_CORRUPT,
                      "'%s' is not an IDX %s file: magic number 0x%08x, expected 0x%08x (unsigned bytes, %d dims)",
                      path, n_dims == 3 ? "image" : "label", big_endian(header), magic, n_dims);
    if (st == MTL_OK)
        st = gz_read_exact(f, path, header + 4, 4 * (int64_t)n_dims, "the IDX header", err);
    int64_t total = 1;
    for (int d = 0; st == MTL_OK && d < n_dims; d++) {
        dims[d] = big_endian(header + 4 + 4 * d);
        total *= dims[d];
        if (dims[d] == 0)
            st = mtl_fail(err, MTL_ERR_CORRUPT, "'%s': the header announces an empty data set (dimension %d is 0)",
                          path, d);
        else if (total > IDX_MAX_BYTES)
            st = mtl_fail(err, MTL_ERR_CORRUPT, "'%s': the header announces more than %lld bytes; the file is corrupt",
                          path, (long long)IDX_MAX_BYTES);
    }
    if (st == MTL_OK && !(*data = malloc((size_t)total)))
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s' (%lld bytes)", path, (long long)total);
    if (st == MTL_OK)
        st = gz_read_exact(f, path, *data, total, n_dims == 3 ? "the pixels" : "the labels", err);
    if (st == MTL_OK) {
        uint8_t extra;
        int got = gzread(f, &extra, 1);
        if (got != 0)
            st = mtl_fail(err, MTL_ERR_CORRUPT, "'%s' %s after the %u items its header announces", path,
                          got > 0 ? "has extra data" : "has damaged gzip data", dims[0]);
    }
    gzclose(f);
    if (st != MTL_OK) {
        free(*data);
        *data = NULL;
    }
    return st;
}

mtl_status mtl_idx_read_images(const char *path, int64_t *count, int *rows, int *cols, uint8_t **pixels,
                               mtl_error *err)
{
    uint32_t dims[3];
    MTL_TRY(idx_read(path, MTL_IDX_IMAGES_MAGIC, 3, dims, pixels, err));
    *count = dims[0];
    *rows = (int)dims[1];
    *cols = (int)dims[2];
    return MTL_OK;
}

mtl_status mtl_idx_read_labels(const char *path, int64_t *count, uint8_t **labels, mtl_error *err)
{
    uint32_t dims[1];
    MTL_TRY(idx_read(path, MTL_IDX_LABELS_MAGIC, 1, dims, labels, err));
    *count = dims[0];
    return MTL_OK;
}

/* dir/name.gz, or dir/name when only the uncompressed file is there. */
static void source_path(char *buf, size_t size, const char *dir, const char *split, const char *kind)
{
    struct stat sb;
    snprintf(buf, size, "%s/%s-%s-ubyte", dir, split, kind);
    if (stat(buf, &sb) == 0)
        return;
    snprintf(buf, size, "%s/%s-%s-ubyte.gz", dir, split, kind);
}

void mtl_fashion_free(mtl_fashion_set *set)
{
    if (!set)
        return;
    free(set->images);
    free(set->labels);
    set->images = set->labels = NULL;
    set->count = 0;
}

mtl_status mtl_fashion_load(const char *dir, const char *split, mtl_fashion_set *out, mtl_error *err)
{
    memset(out, 0, sizeof(*out));
    if (!dir)
        dir = MTL_FASHION_DEFAULT_DIR;
    char images_path[PATH_MAX], labels_path[PATH_MAX];
    source_path(images_path, sizeof(images_path), dir, split, "images-idx3");
    source_path(labels_path, sizeof(labels_path), dir, split, "labels-idx1");

    int64_t n_labels = 0;
    mtl_status st = mtl_idx_read_images(images_path, &out->count, &out->rows, &out->cols, &out->images, err);
    if (st == MTL_OK)
        st = mtl_idx_read_labels(labels_path, &n_labels, &out->labels, err);
    if (st == MTL_ERR_NOT_FOUND && strcmp(dir, MTL_FASHION_DEFAULT_DIR) == 0)
        mtl_error_prefix(err,
                         "Fashion-MNIST is missing (install Debian's dataset-fashion-mnist or pass --source DIR): ");
    if (st == MTL_OK && (out->rows != MTL_FASHION_SIZE || out->cols != MTL_FASHION_SIZE))
        st = mtl_fail(err, MTL_ERR_CORRUPT, "'%s' holds %dx%d images; Fashion-MNIST items are %dx%d", images_path,
                      out->rows, out->cols, MTL_FASHION_SIZE, MTL_FASHION_SIZE);
    if (st == MTL_OK && n_labels != out->count)
        st = mtl_fail(err, MTL_ERR_CORRUPT, "'%s' has %lld labels but '%s' has %lld images", labels_path,
                      (long long)n_labels, images_path, (long long)out->count);
    for (int64_t i = 0; st == MTL_OK && i < out->count; i++)
        if (out->labels[i] >= MTL_FASHION_CLASSES)
            st = mtl_fail(err, MTL_ERR_CORRUPT, "'%s': label %u of item %lld is not a class 0-%d", labels_path,
                          out->labels[i], (long long)i, MTL_FASHION_CLASSES - 1);
    if (st != MTL_OK)
        mtl_fashion_free(out);
    return st;
}
