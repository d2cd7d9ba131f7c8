/* Caffe's transform_param for the data layers: crop (random at TRAIN, centred at TEST), mirror
 * (random at TRAIN only), mean subtraction (mean_value per channel or a mean_file binaryproto) and
 * scale, applied straight from 8-bit pixels (a record in the memory map or a decoded image) into a
 * float batch: out = (pixel - mean) * scale. Randomness comes in as bits chosen by the caller, so a
 * sample's transform is a pure function of those bits. */
#ifndef MTL_DATA_TRANSFORM_H
#define MTL_DATA_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/error.h"
#include "mtl/mtl.h"

/* Where one sample's 8-bit pixels lie. Strides are in bytes, so planar records (CHW) and
 * interleaved decoded images (HWC) read alike. */
typedef struct mtl_pixels {
    const uint8_t *data;
    int channels, height, width;
    ptrdiff_t channel_stride, row_stride, pixel_stride;
} mtl_pixels;

/* Planar CHW bytes (records) / interleaved HWC bytes (decoded images). */
mtl_pixels mtl_pixels_chw(const uint8_t *data, int channels, int height, int width);
mtl_pixels mtl_pixels_hwc(const uint8_t *data, int channels, int height, int width);

typedef struct mtl_transform {
    mtl_phase phase;
    float scale;
    int mirror;
    int crop_size;              /* 0: no crop */
    int force_color, force_gray;
    int n_mean_values;
    float *mean_values;         /* n_mean_values */
    char *mean_file;            /* NULL if none */
    float *mean;                /* the mean_file's C x H x W values, loaded by mtl_transform_setup */
    int mean_channels, mean_height, mean_width;
    /* fixed by mtl_transform_setup from the first sample */
    int channels, height, width;             /* the samples' size as stored (before crop) */
    int out_channels, out_height, out_width; /* one transformed sample */
} mtl_transform;

/* The crop window and flip chosen for one sample. */
typedef struct mtl_crop {
    int h_off, w_off, mirror;
} mtl_crop;

/* Reads transform_param (tp, may be NULL). `legacy` (may be NULL) is a data_param or
 * image_data_param whose deprecated scale / mean_file / crop_size / mirror fields Caffe still
 * honours; giving one in both places is an error. Every field is read so none is "unknown". */
mtl_status mtl_transform_read(mtl_cfg_node *tp, mtl_cfg_node *legacy, mtl_phase phase, mtl_transform *t,
                              mtl_error *err);

/* Fixes the sample size from the first sample (channels as stored, before force_color/force_gray)
 * and checks the settings against it: crop_size within the image, one mean_value or one per
 * channel, the mean_file loaded and of the image's size. */
mtl_status mtl_transform_setup(mtl_transform *t, int channels, int height, int width, mtl_error *err);

/* Checks that a sample of this stored size fits the size fixed by setup (with a crop, any image at
 * least crop_size on each side fits, unless a mean_file pins the size). */
mtl_status mtl_transform_check(const mtl_transform *t, int channels, int height, int width, mtl_error *err);

/* Crop offsets and flip for a sample of the given size: drawn from `bits` at TRAIN, centred and
 * unflipped at TEST (Caffe also flips at TEST when mirror is set; mtl does not). */
mtl_crop mtl_transform_choose(const mtl_transform *t, int height, int width, uint64_t bits);

/* Writes one transformed sample (out_channels x out_height x out_width floats) to dst. A grey
 * source feeds every channel of a colour output; a colour source becomes grey with stb_image's
 * weights (77 r + 150 g + 29 b) / 256, so raw and encoded records give the same values. */
void mtl_transform_apply(const mtl_transform *t, const mtl_pixels *src, mtl_crop crop, float *dst);

void mtl_transform_free(mtl_transform *t);

/* Reads a Caffe mean file (a serialized BlobProto: num/channels/height/width or shape, float or
 * double data, packed or not); *values is malloc'd, C x H x W. */
mtl_status mtl_mean_file_read(const char *path, float **values, int *channels, int *height, int *width,
                              mtl_error *err);

#endif
