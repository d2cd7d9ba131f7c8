/* transform_param: reading it (with Caffe's deprecated data_param spellings), checking it against
 * the first sample, and applying crop, mirror, mean and scale from 8-bit pixels into floats, with
 * mtl's rotation, zoom and landmark labels moved along. Also the reader for Caffe's
 * mean.binaryproto, a BlobProto parsed straight from the protobuf wire format (its handful of
 * fields do not justify a protobuf dependency). */
#include "data/transform.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

mtl_pixels mtl_pixels_chw(const uint8_t *data, int channels, int height, int width)
{
    return (mtl_pixels){.data = data, .channels = channels, .height = height, .width = width,
                        .channel_stride = (ptrdiff_t)height * width, .row_stride = width, .pixel_stride = 1};
}

mtl_pixels mtl_pixels_hwc(const uint8_t *data, int channels, int height, int width)
{
    return (mtl_pixels){.data = data, .channels = channels, .height = height, .width = width,
                        .channel_stride = 1, .row_stride = (ptrdiff_t)width * channels, .pixel_stride = channels};
}

/* ---- reading the config ---------------------------------------------------------------------- */

/* A field that transform_param and the legacy message both give is ambiguous. */
static mtl_status legacy_clash(mtl_cfg_node *tp, mtl_cfg_node *legacy, const char *name, mtl_error *err)
{
    if (mtl_cfg_count(tp, name) > 0 && mtl_cfg_count(legacy, name) > 0)
        return mtl_cfg_fail(mtl_cfg_field(legacy, name, 0), err, MTL_ERR_CONFIG,
                            "%s is given both here and in transform_param; keep the transform_param one "
                            "(this spelling is Caffe's deprecated one)",
                            name);
    return MTL_OK;
}

/* The message that holds `name`: transform_param unless only the legacy message gives it. */
static mtl_cfg_node *holder(mtl_cfg_node *tp, mtl_cfg_node *legacy, const char *name)
{
    return mtl_cfg_count(legacy, name) > 0 ? legacy : tp;
}

int mtl_landmarks_parse_pairs(const char *text, int count, int *flip, char *why, size_t size)
{
    for (int i = 0; i < count; i++)
        flip[i] = i;
    int pending = -1, n = 0;
    for (const char *c = text;;) {
        while (*c == ',' || isspace((unsigned char)*c))
            c++;
        if (!*c)
            break;
        if (!isdigit((unsigned char)*c)) {
            snprintf(why, size, "'%c' is not part of a point index", *c);
            return 0;
        }
        long v = 0;
        while (isdigit((unsigned char)*c) && v <= count)
            v = 10 * v + (*c++ - '0');
        if (isdigit((unsigned char)*c) || v >= count) {
            snprintf(why, size, "point %ld%s is not below the %d points", v, isdigit((unsigned char)*c) ? "..." : "",
                     count);
            return 0;
        }
        if (flip[v] != (int)v || (int)v == pending) {
            snprintf(why, size, "point %ld is in two pairs", v);
            return 0;
        }
        if (pending < 0) {
            pending = (int)v;
        } else {
            flip[pending] = (int)v;
            flip[v] = pending;
            pending = -1;
        }
        n++;
    }
    if (pending >= 0) {
        snprintf(why, size, "%d indices do not make pairs (point %d has no partner)", n, pending);
        return 0;
    }
    return 1;
}

/* mtl's geometric fields: max_rotation, zoom_min, zoom_max and the landmarks message. */
static mtl_status read_geometry(mtl_cfg_node *tp, mtl_transform *t, mtl_error *err)
{
    double max_rotation, zoom_min, zoom_max;
    MTL_TRY(mtl_cfg_float(tp, "max_rotation", 0.0, &max_rotation, err));
    MTL_TRY(mtl_cfg_float(tp, "zoom_min", 1.0, &zoom_min, err));
    MTL_TRY(mtl_cfg_float(tp, "zoom_max", 1.0, &zoom_max, err));
    if (!(max_rotation >= 0 && max_rotation <= 180))
        return mtl_cfg_fail(mtl_cfg_field(tp, "max_rotation", 0), err, MTL_ERR_CONFIG,
                            "max_rotation is in degrees and must lie in [0, 180] (it is %g)", max_rotation);
    if (!(zoom_min >= 0.01 && zoom_min <= zoom_max && zoom_max <= 100))
        return mtl_cfg_fail(mtl_cfg_field(tp, mtl_cfg_count(tp, "zoom_min") ? "zoom_min" : "zoom_max", 0), err,
                            MTL_ERR_CONFIG,
                            "zoom_min and zoom_max need 0.01 <= zoom_min <= zoom_max <= 100 (they are %g and %g)",
                            zoom_min, zoom_max);
    t->max_rotation = (float)max_rotation;
    t->zoom_min = (float)zoom_min;
    t->zoom_max = (float)zoom_max;
    if (t->mean_file && (max_rotation > 0 || zoom_min != 1 || zoom_max != 1))
        return mtl_cfg_fail(mtl_cfg_field(tp, max_rotation > 0 ? "max_rotation" : "zoom_min", 0), err,
                            MTL_ERR_UNSUPPORTED, "rotation and zoom cannot be combined with a mean_file (the mean "
                            "image would have to be warped too); give mean_value instead");

    mtl_cfg_node *lm;
    MTL_TRY(mtl_cfg_message(tp, "landmarks", &lm, err));
    if (!lm)
        return MTL_OK;
    int64_t first, count;
    const char *pairs;
    MTL_TRY(mtl_cfg_int_range(lm, "first_label", 0, 0, 1 << 20, &first, err));
    MTL_TRY(mtl_cfg_int_range(lm, "count", 0, 0, 1 << 16, &count, err));
    MTL_TRY(mtl_cfg_string(lm, "mirror_pairs", "", &pairs, err));
    MTL_TRY(mtl_cfg_bool(lm, "normalize", 0, &t->landmarks.normalize, err));
    if (count == 0)
        return mtl_cfg_fail(lm, err, MTL_ERR_CONFIG,
                            "landmarks needs count: the number of (x, y) points in the labels from first_label on");
    if (!(t->landmarks.flip = mtl_calloc_or_fail((size_t)count, sizeof(int), err, "landmark flip map")))
        return MTL_ERR_NOMEM;
    char why[160];
    if (!mtl_landmarks_parse_pairs(pairs, (int)count, t->landmarks.flip, why, sizeof(why)))
        return mtl_cfg_fail(mtl_cfg_field(lm, "mirror_pairs", 0), err, MTL_ERR_CONFIG,
                            "mirror_pairs \"%s\": %s; give pairs of point indices swapped by a mirror, such as "
                            "\"0,1,2,3\" for 0<->1 and 2<->3",
                            pairs, why);
    t->landmarks.count = (int)count;
    t->landmarks.first_label = (int)first;
    return MTL_OK;
}

mtl_status mtl_transform_read(mtl_cfg_node *tp, mtl_cfg_node *legacy, mtl_phase phase, mtl_transform *t,
                              mtl_error *err)
{
    memset(t, 0, sizeof(*t));
    t->phase = phase;
    static const char *const legacy_names[] = {"scale", "mean_file", "crop_size", "mirror"};
    for (int i = 0; i < 4; i++) {
        mtl_cfg_accept(legacy, legacy_names[i]);
        MTL_TRY(legacy_clash(tp, legacy, legacy_names[i], err));
    }
    double scale;
    int64_t crop;
    const char *mean_file = NULL;
    MTL_TRY(mtl_cfg_float(holder(tp, legacy, "scale"), "scale", 1.0, &scale, err));
    MTL_TRY(mtl_cfg_bool(holder(tp, legacy, "mirror"), "mirror", 0, &t->mirror, err));
    MTL_TRY(mtl_cfg_int_range(holder(tp, legacy, "crop_size"), "crop_size", 0, 0, 1 << 20, &crop, err));
    MTL_TRY(mtl_cfg_string(holder(tp, legacy, "mean_file"), "mean_file", NULL, &mean_file, err));
    MTL_TRY(mtl_cfg_bool(tp, "force_color", 0, &t->force_color, err));
    MTL_TRY(mtl_cfg_bool(tp, "force_gray", 0, &t->force_gray, err));
    t->scale = (float)scale;
    t->crop_size = (int)crop;
    if (t->force_color && t->force_gray)
        return mtl_cfg_fail(mtl_cfg_field(tp, "force_gray", 0), err, MTL_ERR_CONFIG,
                            "force_color and force_gray cannot both be set");

    int n = mtl_cfg_count(tp, "mean_value");
    if (n > 0 && mean_file)
        return mtl_cfg_fail(mtl_cfg_field(tp, "mean_value", 0), err, MTL_ERR_CONFIG,
                            "give mean_file or mean_value, not both");
    if (n > 0) {
        if (!(t->mean_values = mtl_calloc_or_fail((size_t)n, sizeof(float), err, "mean values")))
            return MTL_ERR_NOMEM;
        for (int i = 0; i < n; i++) {
            double v;
            MTL_TRY(mtl_cfg_float_at(tp, "mean_value", i, &v, err));
            t->mean_values[i] = (float)v;
        }
        t->n_mean_values = n;
    }
    if (mean_file && mean_file[0] && !(t->mean_file = mtl_strdup(mean_file)))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    return read_geometry(tp, t, err);
}

/* ---- checks against the samples ------------------------------------------------------------- */

mtl_status mtl_transform_setup(mtl_transform *t, int channels, int height, int width, mtl_error *err)
{
    if (channels <= 0 || height <= 0 || width <= 0)
        return mtl_fail(err, MTL_ERR_CORRUPT, "the first sample has an empty %dx%dx%d image", channels, height,
                        width);
    if ((t->force_color || t->force_gray) && channels != 1 && channels != 3)
        return mtl_fail(err, MTL_ERR_UNSUPPORTED, "%s needs grey or colour images; these have %d channels",
                        t->force_color ? "force_color" : "force_gray", channels);
    t->channels = channels;
    t->height = height;
    t->width = width;
    t->out_channels = t->force_gray ? 1 : t->force_color ? 3 : channels;
    if (t->crop_size > height || t->crop_size > width)
        return mtl_fail(err, MTL_ERR_CONFIG, "crop_size %d is larger than the %dx%d (HxW) images", t->crop_size,
                        height, width);
    t->out_height = t->crop_size ? t->crop_size : height;
    t->out_width = t->crop_size ? t->crop_size : width;
    if (t->n_mean_values > 1 && t->n_mean_values != t->out_channels)
        return mtl_fail(err, MTL_ERR_CONFIG,
                        "%d mean_value given for %d-channel images: give one for all channels or one per channel",
                        t->n_mean_values, t->out_channels);
    if (t->mean_file) {
        free(t->mean);
        t->mean = NULL;
        MTL_TRY(mtl_mean_file_read(t->mean_file, &t->mean, &t->mean_channels, &t->mean_height, &t->mean_width, err));
        if (t->mean_channels != t->out_channels || t->mean_height != height || t->mean_width != width)
            return mtl_fail(err, MTL_ERR_SHAPE, "mean_file '%s' is %dx%dx%d (CxHxW), the images are %dx%dx%d",
                            t->mean_file, t->mean_channels, t->mean_height, t->mean_width, t->out_channels, height,
                            width);
    }
    return MTL_OK;
}

mtl_status mtl_transform_check(const mtl_transform *t, int channels, int height, int width, mtl_error *err)
{
    int oc = t->out_channels;
    int channels_ok = channels == oc || (channels == 1 && oc == 3 && t->force_color) ||
                      (channels == 3 && oc == 1 && t->force_gray);
    if (!channels_ok)
        return mtl_fail(err, MTL_ERR_SHAPE, "a %d-channel image in a batch of %d-channel images%s", channels, oc,
                        (channels == 1 || channels == 3) ? " (force_color or force_gray makes them agree)" : "");
    if (!t->crop_size || t->mean) {
        if (height != t->height || width != t->width)
            return mtl_fail(err, MTL_ERR_SHAPE, "a %dx%d (HxW) image in a batch of %dx%d images%s", height, width,
                            t->height, t->width,
                            t->crop_size ? " (the mean_file fixes the size)"
                                         : ": give crop_size, or convert with --resize");
        return MTL_OK;
    }
    if (height < t->crop_size || width < t->crop_size)
        return mtl_fail(err, MTL_ERR_SHAPE, "a %dx%d (HxW) image is smaller than crop_size %d", height, width,
                        t->crop_size);
    return MTL_OK;
}

mtl_status mtl_transform_check_labels(const mtl_transform *t, int n_labels, mtl_error *err)
{
    const mtl_landmarks *lm = &t->landmarks;
    if (lm->count && (int64_t)lm->first_label + 2 * (int64_t)lm->count > n_labels)
        return mtl_fail(err, MTL_ERR_CONFIG,
                        "transform_param.landmarks: %d points from label column %d need %lld label columns, but "
                        "the samples have %d labels",
                        lm->count, lm->first_label, (long long)lm->first_label + 2 * (long long)lm->count, n_labels);
    return MTL_OK;
}

/* ---- applying ------------------------------------------------------------------------------- */

/* Uniform in [0, n) from 24 random bits. */
static int below(uint64_t bits24, int n) { return (int)((bits24 * (uint64_t)n) >> 24); }

/* Uniform in [0, 1) from 24 random bits. */
static double unit24(uint64_t bits24) { return (double)(bits24 & 0xffffff) / 16777216.0; }

/* More bits from the caller's, for the rotation and zoom (splitmix64's finaliser). */
static uint64_t remix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int warp_is_plain(mtl_warp w) { return w.rotation == 0.0f && w.zoom == 1.0f; }

/* The map of mtl_warp's comment: q = centre_out + zoom R (p - centre_in), before the flip. Angles
 * that are multiples of 90 degrees get exact cosines and sines, so such turns move pixels and
 * points exactly. */
typedef struct geometry {
    double cs, sn, zoom;
    double cx, cy;   /* the crop window's centre in the source */
    double ox, oy;   /* the output's centre */
} geometry;

static geometry geometry_of(const mtl_transform *t, mtl_crop c, mtl_warp w)
{
    geometry g;
    double a = (double)w.rotation * 3.14159265358979323846 / 180.0;
    g.cs = cos(a);
    g.sn = sin(a);
    if (fabs(g.cs) < 1e-12)
        g.cs = 0.0;
    if (fabs(g.sn) < 1e-12)
        g.sn = 0.0;
    g.zoom = w.zoom > 0.0f ? (double)w.zoom : 1.0;
    g.ox = t->out_width / 2.0;
    g.oy = t->out_height / 2.0;
    g.cx = c.w_off + g.ox;
    g.cy = c.h_off + g.oy;
    return g;
}

mtl_crop mtl_transform_choose(const mtl_transform *t, int height, int width, uint64_t bits)
{
    mtl_crop c = {0, 0, 0};
    if (t->crop_size) {
        if (t->phase == MTL_PHASE_TRAIN) {
            c.h_off = below(bits >> 40, height - t->crop_size + 1);
            c.w_off = below((bits >> 16) & 0xffffff, width - t->crop_size + 1);
        } else {
            c.h_off = (height - t->crop_size) / 2;
            c.w_off = (width - t->crop_size) / 2;
        }
    }
    /* bits 40..63 and 16..39 place the crop; the flip takes bit 0 */
    c.mirror = t->mirror && t->phase == MTL_PHASE_TRAIN && (bits & 1);
    return c;
}

mtl_warp mtl_transform_choose_warp(const mtl_transform *t, uint64_t bits)
{
    mtl_warp w = {.rotation = 0.0f, .zoom = 1.0f};
    if (t->phase != MTL_PHASE_TRAIN)
        return w;
    /* a remix of the bits, so that these draws do not repeat the crop's and the flip's */
    uint64_t more = remix(bits);
    if (t->max_rotation > 0)
        w.rotation = (float)((2.0 * unit24(more >> 40) - 1.0) * t->max_rotation);
    if (t->zoom_max > t->zoom_min)
        w.zoom = (float)(t->zoom_min + unit24(more >> 16) * (t->zoom_max - t->zoom_min));
    else if (t->zoom_min > 0)
        w.zoom = t->zoom_min;
    return w;
}

/* One source value of channel sc at (y, x), 0 outside the image, grey-converted when asked. */
static inline float source_value(const mtl_pixels *src, int sc, int to_grey, int y, int x)
{
    if (y < 0 || y >= src->height || x < 0 || x >= src->width)
        return 0.0f;
    const uint8_t *px = src->data + sc * src->channel_stride + (ptrdiff_t)y * src->row_stride +
                        (ptrdiff_t)x * src->pixel_stride;
    const ptrdiff_t cs = src->channel_stride;
    return to_grey ? (float)((px[0] * 77 + px[cs] * 150 + px[2 * cs] * 29) >> 8) : (float)px[0];
}

/* The inverse of mtl_warp's map takes each output pixel centre back into the source. */
void mtl_transform_apply_warped(const mtl_transform *t, const mtl_pixels *src, mtl_crop crop, mtl_warp warp,
                                float *dst)
{
    if (warp_is_plain(warp)) {
        mtl_transform_apply(t, src, crop, dst);
        return;
    }
    const int oc = t->out_channels, oh = t->out_height, ow = t->out_width;
    const int to_grey = src->channels == 3 && oc == 1;
    const geometry g = geometry_of(t, crop, warp);
    for (int c = 0; c < oc; c++) {
        const int sc = src->channels == 1 || to_grey ? 0 : c;
        const float mv = t->n_mean_values == 0 ? 0.0f : t->mean_values[t->n_mean_values == 1 ? 0 : c];
        for (int h = 0; h < oh; h++) {
            float *d = dst + ((size_t)c * oh + (size_t)h) * (size_t)ow;
            const double vy = h + 0.5 - g.oy;
            for (int w = 0; w < ow; w++) {
                double qx = w + 0.5;
                if (crop.mirror)
                    qx = ow - qx;
                const double vx = qx - g.ox;
                /* pixel (i, j) has its centre at (j + .5, i + .5) */
                const double fx = g.cx + (g.cs * vx + g.sn * vy) / g.zoom - 0.5;
                const double fy = g.cy + (-g.sn * vx + g.cs * vy) / g.zoom - 0.5;
                const double x0 = floor(fx), y0 = floor(fy), wx = fx - x0, wy = fy - y0;
                const int ix = (int)x0, iy = (int)y0; /* zoom >= 0.01 keeps them within int */
                const double top = (1 - wx) * source_value(src, sc, to_grey, iy, ix) +
                                   wx * source_value(src, sc, to_grey, iy, ix + 1);
                const double bottom = (1 - wx) * source_value(src, sc, to_grey, iy + 1, ix) +
                                      wx * source_value(src, sc, to_grey, iy + 1, ix + 1);
                d[w] = ((float)((1 - wy) * top + wy * bottom) - mv) * t->scale;
            }
        }
    }
}

void mtl_transform_apply(const mtl_transform *t, const mtl_pixels *src, mtl_crop crop, float *dst)
{
    const int oc = t->out_channels, oh = t->out_height, ow = t->out_width;
    const int to_grey = src->channels == 3 && oc == 1;
    const ptrdiff_t cs = src->channel_stride, rs = src->row_stride, ps = src->pixel_stride;
    const float scale = t->scale;
    for (int c = 0; c < oc; c++) {
        const int sc = src->channels == 1 ? 0 : c; /* a grey source feeds every output channel */
        const float mv = t->n_mean_values == 0 ? 0.0f : t->mean_values[t->n_mean_values == 1 ? 0 : c];
        for (int h = 0; h < oh; h++) {
            const uint8_t *p = src->data + sc * cs + (ptrdiff_t)(crop.h_off + h) * rs + (ptrdiff_t)crop.w_off * ps;
            /* Caffe subtracts the mean at the source position, before the flip */
            const float *m = t->mean ? t->mean + ((size_t)c * t->mean_height + (size_t)(crop.h_off + h)) *
                                                     (size_t)t->mean_width + (size_t)crop.w_off
                                     : NULL;
            float *d = dst + ((size_t)c * oh + (size_t)h) * (size_t)ow;
            for (int w = 0; w < ow; w++) {
                const uint8_t *px = p + w * ps;
                float v = to_grey ? (float)((px[0] * 77 + px[cs] * 150 + px[2 * cs] * 29) >> 8) : (float)px[0];
                v = (v - (m ? m[w] : mv)) * scale;
                d[crop.mirror ? ow - 1 - w : w] = v;
            }
        }
    }
}

void mtl_transform_points(const mtl_transform *t, mtl_crop crop, mtl_warp warp, float *labels)
{
    const mtl_landmarks *lm = &t->landmarks;
    if (!lm->count)
        return;
    float *xy = labels + lm->first_label;
    const geometry g = geometry_of(t, crop, warp);
    const int ow = t->out_width, oh = t->out_height;
    for (int i = 0; i < lm->count; i++) {
        double x = xy[2 * i], y = xy[2 * i + 1];
        if (isnan(x) || isnan(y)) {
            xy[2 * i] = xy[2 * i + 1] = NAN;
            continue;
        }
        double ux = x - g.cx, uy = y - g.cy;
        double qx = g.ox + g.zoom * (g.cs * ux - g.sn * uy);
        double qy = g.oy + g.zoom * (g.sn * ux + g.cs * uy);
        if (crop.mirror)
            qx = ow - qx;
        if (lm->normalize) {
            qx = 2.0 * qx / ow - 1.0;
            qy = 2.0 * qy / oh - 1.0;
        }
        xy[2 * i] = (float)qx;
        xy[2 * i + 1] = (float)qy;
    }
    /* a mirror turns the left point into the right one: the flip map is a set of swaps */
    if (crop.mirror && lm->flip)
        for (int i = 0; i < lm->count; i++) {
            int j = lm->flip[i];
            if (j > i) {
                float ax = xy[2 * i], ay = xy[2 * i + 1];
                xy[2 * i] = xy[2 * j];
                xy[2 * i + 1] = xy[2 * j + 1];
                xy[2 * j] = ax;
                xy[2 * j + 1] = ay;
            }
        }
}

int mtl_transform_box(const mtl_transform *t, mtl_crop crop, mtl_warp warp, float *box)
{
    const geometry g = geometry_of(t, crop, warp);
    const int ow = t->out_width, oh = t->out_height;
    double lo_x = INFINITY, lo_y = INFINITY, hi_x = -INFINITY, hi_y = -INFINITY;
    for (int corner = 0; corner < 4; corner++) {
        double ux = box[corner & 1 ? 2 : 0] - g.cx, uy = box[corner & 2 ? 3 : 1] - g.cy;
        double qx = g.ox + g.zoom * (g.cs * ux - g.sn * uy);
        double qy = g.oy + g.zoom * (g.sn * ux + g.cs * uy);
        if (crop.mirror)
            qx = ow - qx;
        lo_x = fmin(lo_x, qx);
        hi_x = fmax(hi_x, qx);
        lo_y = fmin(lo_y, qy);
        hi_y = fmax(hi_y, qy);
    }
    double area = (hi_x - lo_x) * (hi_y - lo_y);
    box[0] = (float)fmin(fmax(lo_x, 0.0), ow);
    box[1] = (float)fmin(fmax(lo_y, 0.0), oh);
    box[2] = (float)fmin(fmax(hi_x, 0.0), ow);
    box[3] = (float)fmin(fmax(hi_y, 0.0), oh);
    double w = box[2] - box[0], h = box[3] - box[1];
    return w >= 2.0 && h >= 2.0 && w * h >= 0.25 * area;
}

void mtl_transform_points_resize(const mtl_transform *t, float sx, float sy, float *labels)
{
    const mtl_landmarks *lm = &t->landmarks;
    float *xy = labels + lm->first_label;
    for (int i = 0; i < lm->count; i++) {
        xy[2 * i] *= sx;
        xy[2 * i + 1] *= sy;
    }
}

void mtl_transform_free(mtl_transform *t)
{
    if (!t)
        return;
    free(t->landmarks.flip);
    t->landmarks.flip = NULL;
    t->landmarks.count = 0;
    free(t->mean_values);
    free(t->mean_file);
    free(t->mean);
    t->mean_values = NULL;
    t->mean_file = NULL;
    t->mean = NULL;
    t->n_mean_values = 0;
}

/* ---- mean.binaryproto ------------------------------------------------------------------------ */

typedef struct wire {
    const uint8_t *p, *end;
} wire;

static int wire_varint(wire *w, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && w->p < w->end; shift += 7) {
        uint8_t b = *w->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

static int wire_bytes(wire *w, size_t n, const uint8_t **out)
{
    if ((size_t)(w->end - w->p) < n)
        return 0;
    *out = w->p;
    w->p += n;
    return 1;
}

/* Skips a field of the given wire type; 0 if the data ends early or the type is unknown. */
static int wire_skip(wire *w, unsigned type)
{
    uint64_t v;
    const uint8_t *unused;
    switch (type) {
    case 0: return wire_varint(w, &v);
    case 1: return wire_bytes(w, 8, &unused);
    case 2: return wire_varint(w, &v) && v <= SIZE_MAX && wire_bytes(w, (size_t)v, &unused);
    case 5: return wire_bytes(w, 4, &unused);
    default: return 0;
    }
}

/* Growing array of values read from the data / double_data fields. */
typedef struct values {
    float *v;
    size_t n, cap;
} values;

static int values_push(values *vs, float x)
{
    if (vs->n == vs->cap) {
        size_t cap = vs->cap ? 2 * vs->cap : 1024;
        float *grown = realloc(vs->v, cap * sizeof(float));
        if (!grown)
            return 0;
        vs->v = grown;
        vs->cap = cap;
    }
    vs->v[vs->n++] = x;
    return 1;
}

static float read_f32(const uint8_t *b)
{
    uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double read_f64(const uint8_t *b)
{
    uint64_t u = 0;
    for (int i = 7; i >= 0; i--)
        u = u << 8 | b[i];
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* The values of field 5 (float) or 8 (double), packed (wire type 2) or one per field. */
static int read_values(wire *w, unsigned type, int is_double, values *vs)
{
    size_t width = is_double ? 8 : 4;
    const uint8_t *b;
    if (type == (is_double ? 1u : 5u)) {
        if (!wire_bytes(w, width, &b))
            return 0;
        return values_push(vs, is_double ? (float)read_f64(b) : read_f32(b));
    }
    uint64_t len;
    if (type != 2 || !wire_varint(w, &len) || len % width != 0 || len > SIZE_MAX || !wire_bytes(w, (size_t)len, &b))
        return 0;
    for (size_t i = 0; i < len / width; i++)
        if (!values_push(vs, is_double ? (float)read_f64(b + i * width) : read_f32(b + i * width)))
            return 0;
    return 1;
}

/* BlobShape { repeated int64 dim = 1 [packed] }. */
static int read_shape(const uint8_t *b, size_t size, int64_t *dims, int *ndim)
{
    wire w = {b, b + size};
    *ndim = 0;
    while (w.p < w.end) {
        uint64_t key, v;
        if (!wire_varint(&w, &key))
            return 0;
        unsigned field = (unsigned)(key >> 3), type = (unsigned)(key & 7);
        if (field != 1) {
            if (!wire_skip(&w, type))
                return 0;
            continue;
        }
        if (type == 0) {
            if (!wire_varint(&w, &v) || *ndim >= 8)
                return 0;
            dims[(*ndim)++] = (int64_t)v;
        } else if (type == 2) {
            uint64_t len;
            const uint8_t *inner;
            if (!wire_varint(&w, &len) || len > SIZE_MAX || !wire_bytes(&w, (size_t)len, &inner))
                return 0;
            wire in = {inner, inner + len};
            while (in.p < in.end) {
                if (!wire_varint(&in, &v) || *ndim >= 8)
                    return 0;
                dims[(*ndim)++] = (int64_t)v;
            }
        } else {
            return 0;
        }
    }
    return 1;
}

static mtl_status read_whole_file(const char *path, uint8_t **out, size_t *size, mtl_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        char cwd[2048] = "";
        if (path[0] != '/' && !getcwd(cwd, sizeof(cwd)))
            cwd[0] = '\0';
        return mtl_fail(err, e == ENOENT ? MTL_ERR_NOT_FOUND : MTL_ERR_IO, "cannot open mean_file '%s': %s%s%s%s", path,
                        strerror(e), cwd[0] ? " (relative to the current directory, " : "", cwd,
                        cwd[0] ? ", as in Caffe)" : "");
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, got;
    uint8_t chunk[65536];
    while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (len + got > cap) {
            cap = 2 * (len + got);
            uint8_t *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(f);
                return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading mean_file '%s'", path);
            }
            buf = grown;
        }
        memcpy(buf + len, chunk, got);
        len += got;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return mtl_fail(err, MTL_ERR_IO, "cannot read mean_file '%s'", path);
    }
    *out = buf;
    *size = len;
    return MTL_OK;
}

mtl_status mtl_mean_file_read(const char *path, float **values_out, int *channels, int *height, int *width,
                              mtl_error *err)
{
    *values_out = NULL;
    uint8_t *buf = NULL;
    size_t size = 0;
    MTL_TRY(read_whole_file(path, &buf, &size, err));
    wire w = {buf, buf + size};
    int64_t legacy[4] = {0, 0, 0, 0}; /* num, channels, height, width */
    int64_t dims[8];
    int ndim = -1;
    values vs = {0};
    int ok = 1;
    while (ok && w.p < w.end) {
        uint64_t key;
        if (!(ok = wire_varint(&w, &key)))
            break;
        unsigned field = (unsigned)(key >> 3), type = (unsigned)(key & 7);
        uint64_t v;
        if (field >= 1 && field <= 4 && type == 0) {
            ok = wire_varint(&w, &v);
            legacy[field - 1] = (int64_t)(int32_t)v;
        } else if (field == 5 || field == 8) {
            ok = read_values(&w, type, field == 8, &vs);
        } else if (field == 7 && type == 2) {
            uint64_t len;
            const uint8_t *inner;
            ok = wire_varint(&w, &len) && len <= SIZE_MAX && wire_bytes(&w, (size_t)len, &inner) &&
                 read_shape(inner, (size_t)len, dims, &ndim);
        } else {
            ok = wire_skip(&w, type);
        }
    }
    free(buf);
    if (!ok) {
        free(vs.v);
        return mtl_fail(err, MTL_ERR_CORRUPT, "mean_file '%s' is not a Caffe BlobProto (.binaryproto)", path);
    }

    /* the mean is one C x H x W image: leading axes must be 1 */
    int64_t c = 1, h = 1, wd = 1, lead = 1;
    if (ndim >= 0) {
        for (int i = 0; i < ndim; i++) {
            int from_end = ndim - i;
            if (from_end == 1)
                wd = dims[i];
            else if (from_end == 2)
                h = dims[i];
            else if (from_end == 3)
                c = dims[i];
            else
                lead *= dims[i];
        }
    } else {
        lead = legacy[0] ? legacy[0] : 1;
        c = legacy[1];
        h = legacy[2];
        wd = legacy[3];
    }
    const char *problem = NULL;
    if (lead != 1)
        problem = "holds more than one image";
    else if (c <= 0 || h <= 0 || wd <= 0 || c > 1 << 16 || h > 1 << 20 || wd > 1 << 20)
        problem = "has no valid shape";
    else if ((int64_t)vs.n != c * h * wd)
        problem = "holds a different number of values than its shape says";
    if (problem) {
        mtl_status st = mtl_fail(err, MTL_ERR_CORRUPT, "mean_file '%s' %s (%lldx%lldx%lld, %zu values)", path,
                                 problem, (long long)c, (long long)h, (long long)wd, vs.n);
        free(vs.v);
        return st;
    }
    *values_out = vs.v;
    *channels = (int)c;
    *height = (int)h;
    *width = (int)wd;
    return MTL_OK;
}
