/* Images in memory and on disk: decoding (PNG, JPEG, BMP, ... through stb_image from Debian's
 * libstb), grey conversion, bilinear resizing and PNG encoding. Pixels are 8-bit, interleaved
 * (HWC) as decoders give them; mtl_image_to_chw gives the planar layout records and blobs use. */
#ifndef MTL_DATA_IMAGE_H
#define MTL_DATA_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct mtl_image {
    int width, height, channels; /* channels 1 (grey) or 3 (RGB) */
    uint8_t *pixels;             /* height * width * channels, interleaved; malloc'd */
} mtl_image;

/* Decodes a file; channels 1 forces grey, 3 forces RGB, 0 keeps the file's (grey stays 1, anything
 * else becomes 3). Errors name the path and the decoder's reason. */
mtl_status mtl_image_load(const char *path, int channels, mtl_image *out, mtl_error *err);
/* The same from encoded bytes in memory; `what` names them in errors (a path or record key). */
mtl_status mtl_image_decode(const uint8_t *bytes, size_t size, int channels, const char *what, mtl_image *out,
                            mtl_error *err);
/* Reads just the size of an encoded file without decoding pixels. */
mtl_status mtl_image_probe(const char *path, int *width, int *height, int *channels, mtl_error *err);
/* The same from encoded bytes in memory (channels as decoding with channels 0 would give: 1 or 3). */
mtl_status mtl_image_probe_bytes(const uint8_t *bytes, size_t size, const char *what, int *width, int *height,
                                 int *channels, mtl_error *err);
void mtl_image_free(mtl_image *img); /* frees pixels; the struct itself is the caller's */

/* Bilinear resize to width x height (a new image in out). */
mtl_status mtl_image_resize(const mtl_image *in, int width, int height, mtl_image *out, mtl_error *err);

/* Interleaved HWC -> planar CHW (dst holds channels*height*width bytes). */
void mtl_image_to_chw(const mtl_image *img, uint8_t *dst);

/* PNG encoding, to a file (written atomically: temp file then rename) or to memory (malloc'd). */
mtl_status mtl_image_write_png(const char *path, const mtl_image *img, mtl_error *err);
mtl_status mtl_image_encode_png(const mtl_image *img, uint8_t **bytes, size_t *size, mtl_error *err);

#endif
