/* Caffe's transform_param for the data layers: crop (random at TRAIN, centred at TEST), mirror
 * (random at TRAIN only), mean subtraction (mean_value per channel or a mean_file binaryproto) and
 * scale, applied straight from 8-bit pixels (a record in the memory map or a decoded image) into a
 * float batch: out = (pixel - mean) * scale. mtl adds random rotation and zoom (TRAIN only) and
 * landmark labels that follow the image through every geometric step (docs/landmarks.md).
 * Randomness comes in as bits chosen by the caller, so a sample's transform is a pure function of
 * those bits. */
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

/* Landmark labels: `count` points whose coordinates are the label columns first_label ..
 * first_label + 2 count - 1, as x0 y0 x1 y1 ..., in pixels of the stored image with its top-left
 * corner at (0, 0) and pixel (i, j) covering [j, j + 1) x [i, i + 1) (so pixel centres lie at .5).
 * transform_param { landmarks { first_label count mirror_pairs normalize } } (an mtl extension). */
typedef struct mtl_landmarks {
    int count;                  /* points; 0: the labels hold no landmarks */
    int first_label;            /* label column of x0 */
    int *flip;                  /* [count]: after a mirror, point i is the mirrored point flip[i] */
    int normalize;              /* map coordinates to [-1, 1] over the output image */
} mtl_landmarks;

typedef struct mtl_transform {
    mtl_phase phase;
    float scale;
    int mirror;
    int crop_size;              /* 0: no crop */
    int force_color, force_gray;
    float max_rotation;         /* degrees: TRAIN rotates by a uniform angle in [-max, max] (mtl) */
    float zoom_min, zoom_max;   /* TRAIN scales by a uniform factor in [min, max] (mtl; 1 1: none) */
    mtl_landmarks landmarks;
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

/* The rotation and zoom chosen for one sample (mtl). They act about the crop window's centre: in
 * continuous coordinates (pixel centres at .5) a source point p lands at
 *   q = (ow / 2, oh / 2) + zoom * R(rotation) * (p - (w_off + ow / 2, h_off + oh / 2)),
 *   x = ow - q.x when mirrored,
 * with R(a) = [cos a, -sin a; sin a, cos a] on (x, y-down) coordinates: a positive angle turns the
 * content clockwise on screen (the convention of `mtl dataset fashionpose`). Rotation 0 and zoom 1
 * leave a plain crop, copied pixel for pixel. */
typedef struct mtl_warp {
    float rotation;             /* degrees */
    float zoom;                 /* 1: none */
} mtl_warp;

/* Reads transform_param (tp, may be NULL): Caffe's fields and mtl's max_rotation, zoom_min,
 * zoom_max and landmarks message. `legacy` (may be NULL) is a data_param or
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

/* Checks the landmark columns against the labels each sample has (a data layer calls it once it
 * knows; no landmarks: always fine). */
mtl_status mtl_transform_check_labels(const mtl_transform *t, int n_labels, mtl_error *err);

/* Crop offsets and flip for a sample of the given size: drawn from `bits` at TRAIN, centred and
 * unflipped at TEST (Caffe also flips at TEST when mirror is set; mtl does not). */
mtl_crop mtl_transform_choose(const mtl_transform *t, int height, int width, uint64_t bits);
/* Rotation and zoom from the same bits (independent of the crop's and flip's draws): uniform in
 * [-max_rotation, max_rotation] and [zoom_min, zoom_max] at TRAIN, none at TEST. */
mtl_warp mtl_transform_choose_warp(const mtl_transform *t, uint64_t bits);

/* Writes one transformed sample (out_channels x out_height x out_width floats) to dst. A grey
 * source feeds every channel of a colour output; a colour source becomes grey with stb_image's
 * weights (77 r + 150 g + 29 b) / 256, so raw and encoded records give the same values. */
void mtl_transform_apply(const mtl_transform *t, const mtl_pixels *src, mtl_crop crop, float *dst);
/* The same with a rotation and zoom: each output pixel centre is mapped back into the source and
 * read bilinearly, 0 outside the image (before mean and scale); without rotation or zoom it is
 * mtl_transform_apply. mtl_transform_read refuses a mean_file with rotation or zoom. */
void mtl_transform_apply_warped(const mtl_transform *t, const mtl_pixels *src, mtl_crop crop, mtl_warp warp,
                                float *dst);

/* Moves the landmark labels of one sample (labels: all its label columns) with the geometry the
 * image got: the mapping of mtl_warp above, the mirror's reordering by the flip map, then the
 * optional normalisation to [-1, 1] (x' = 2 x / ow - 1, y' = 2 y / oh - 1). A point with a
 * missing (NaN) coordinate comes out missing in both. Other label columns are left alone. */
void mtl_transform_points(const mtl_transform *t, mtl_crop crop, mtl_warp warp, float *labels);

/* Moves one box (x1 y1 x2 y2, continuous pixel coordinates of the stored image) with the geometry
 * the image got: its four corners are mapped as landmarks are, the box becomes their bounding box,
 * clipped to the output image. Returns 0 when too little of it stays visible to be a target (under
 * 2 pixels wide or high, or under a quarter of its mapped area): the caller drops it. */
int mtl_transform_box(const mtl_transform *t, mtl_crop crop, mtl_warp warp, float *box /* 4 */);
/* Scales the landmark labels by (sx, sy): the image was resized by these factors before the
 * transform (ImageData's new_width / new_height). */
void mtl_transform_points_resize(const mtl_transform *t, float sx, float sy, float *labels);

/* Parses a flip map: pairs of point indices "a,b,c,d" (commas or spaces) swapped by a mirror, each
 * index below count and in at most one pair. flip[count] receives the permutation; returns 0 and
 * writes a reason into why (size bytes) when the text is not such a list. */
int mtl_landmarks_parse_pairs(const char *text, int count, int *flip, char *why, size_t size);

void mtl_transform_free(mtl_transform *t);

/* Reads a Caffe mean file (a serialized BlobProto: num/channels/height/width or shape, float or
 * double data, packed or not); *values is malloc'd, C x H x W. */
mtl_status mtl_mean_file_read(const char *path, float **values, int *channels, int *height, int *width,
                              mtl_error *err);

#endif
