/* Tests for landmarks: the landmark-aware transforms (mirror with its flip map, crop, resize,
 * rotation, zoom, normalisation) against hand-computed coordinates, and pixels that follow their
 * points; the ImageData layer moving landmark labels; EuclideanLoss with coordinate weights, a
 * weight bottom and missing targets (values by hand and gradient checks); the NME metric by hand;
 * task-wise early stopping on a hand-made sequence of validation losses. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "balance/early_stop.h"
#include "check.h"
#include "test_util.h"
#include "config/config.h"
#include "data/db.h"
#include "data/image.h"
#include "data/record.h"
#include "data/transform.h"
#include "gradcheck.h"
#include "layers/labels.h"

/* Removes a directory tree (the test's temporary files). */
/* ---- the transforms ---------------------------------------------------------------------------- */

/* Reads a transform_param body and sets it up for C x H x W images; 0 on failure (checked). */
static int transform_of(const char *text, mtl_phase phase, int c, int h, int w, mtl_transform *t)
{
    mtl_cfg_node *root = NULL;
    mtl_error err = {0};
    memset(t, 0, sizeof(*t));
    mtl_status st = mtl_cfg_parse_string(text, "<transform>", &root, &err);
    if (st == MTL_OK)
        st = mtl_transform_read(root, NULL, phase, t, &err);
    if (st == MTL_OK)
        st = mtl_cfg_check_unused(root, &err);
    if (st == MTL_OK)
        st = mtl_transform_setup(t, c, h, w, &err);
    CHECK_MSG(st == MTL_OK, "transform '%s': %s", text, err.message);
    mtl_cfg_free(root);
    return st == MTL_OK;
}

/* The error reading a transform_param body gives (status, and the message in err). */
static mtl_status transform_error(const char *text, mtl_error *err)
{
    mtl_cfg_node *root = NULL;
    mtl_transform t;
    memset(&t, 0, sizeof(t));
    mtl_status st = mtl_cfg_parse_string(text, "<transform>", &root, err);
    if (st == MTL_OK)
        st = mtl_transform_read(root, NULL, MTL_PHASE_TRAIN, &t, err);
    if (st == MTL_OK)
        st = mtl_cfg_check_unused(root, err);
    mtl_transform_free(&t);
    mtl_cfg_free(root);
    return st;
}

static const mtl_warp no_warp = {.rotation = 0.0f, .zoom = 1.0f};

/* Labels [99, x0 y0, x1 y1, x2 y2, 77]: three points from column 1 on, columns 0 and 7 are other
 * labels that must not move. Image 4 (H) x 6 (W). */
static void test_mirror_flip_map(void)
{
    mtl_transform t;
    if (!transform_of("mirror: true landmarks { first_label: 1 count: 3 mirror_pairs: '0,1' }", MTL_PHASE_TRAIN, 1,
                      4, 6, &t))
        return;
    float labels[8] = {99, 1, 0.5f, 5, 1.5f, 2.5f, 3, 77};
    /* x' = 6 - x: (5, .5) (1, 1.5) (3.5, 3); then points 0 and 1 trade places */
    mtl_transform_points(&t, (mtl_crop){.mirror = 1}, no_warp, labels);
    test_check_values("mirror", labels, (float[]){99, 1, 1.5f, 5, 0.5f, 3.5f, 3, 77}, 8, 1e-6);
    /* unmirrored: nothing moves */
    float same[8] = {99, 1, 0.5f, 5, 1.5f, 2.5f, 3, 77};
    mtl_transform_points(&t, (mtl_crop){.mirror = 0}, no_warp, same);
    test_check_values("no mirror", same, (float[]){99, 1, 0.5f, 5, 1.5f, 2.5f, 3, 77}, 8, 0);
    /* a missing point stays missing, in both coordinates, and still moves with its pair */
    float missing[8] = {99, NAN, 0.5f, 5, 1.5f, 2.5f, 3, 77};
    mtl_transform_points(&t, (mtl_crop){.mirror = 1}, no_warp, missing);
    test_check_values("mirror missing", missing, (float[]){99, 1, 1.5f, NAN, NAN, 3.5f, 3, 77}, 8, 1e-6);
    mtl_transform_free(&t);

    /* the FashionPose map: TL<->TR, BR<->BL, the centre stays */
    int flip[5];
    char why[128];
    CHECK(mtl_landmarks_parse_pairs("0,1,2,3", 5, flip, why, sizeof(why)));
    CHECK(flip[0] == 1 && flip[1] == 0 && flip[2] == 3 && flip[3] == 2 && flip[4] == 4);
    CHECK(mtl_landmarks_parse_pairs(" 0 1 , 2 3 ", 5, flip, why, sizeof(why)));
    CHECK(mtl_landmarks_parse_pairs("", 5, flip, why, sizeof(why)) && flip[0] == 0 && flip[3] == 3);
}

/* Crop: points shift by the window's corner; TEST centres the window. */
static void test_crop_shift(void)
{
    mtl_transform t;
    if (!transform_of("crop_size: 3 landmarks { count: 2 }", MTL_PHASE_TEST, 1, 4, 6, &t))
        return;
    mtl_crop c = mtl_transform_choose(&t, 4, 6, 0);
    CHECK(c.h_off == 0 && c.w_off == 1); /* (4 - 3) / 2, (6 - 3) / 2 */
    float labels[4] = {2.5f, 1.5f, 4, 3};
    mtl_transform_points(&t, (mtl_crop){.h_off = 1, .w_off = 2}, no_warp, labels);
    test_check_values("crop", labels, (float[]){0.5f, 0.5f, 2, 2}, 4, 1e-6);
    /* crop then mirror over the 3-wide window: x = 3 - (x - w_off) */
    float both[4] = {2.5f, 1.5f, 4, 3};
    mtl_transform_points(&t, (mtl_crop){.h_off = 1, .w_off = 2, .mirror = 1}, no_warp, both);
    test_check_values("crop and mirror", both, (float[]){2.5f, 0.5f, 1, 2}, 4, 1e-6);
    mtl_transform_free(&t);
}

static void test_resize_scale(void)
{
    mtl_transform t;
    if (!transform_of("landmarks { first_label: 2 count: 2 }", MTL_PHASE_TEST, 1, 4, 4, &t))
        return;
    float labels[6] = {7, 8, 1, 2, 3.5f, NAN};
    mtl_transform_points_resize(&t, 0.5f, 2.0f, labels);
    test_check_values("resize", labels, (float[]){7, 8, 0.5f, 4, 1.75f, NAN}, 6, 1e-6);
    mtl_transform_free(&t);
}

/* A 90 degree turn about the centre (2, 2) of a 4x4 image: u = p - c goes to R u = (-u.y, u.x), so
 * (3, 2) -> (2, 3) and (0.5, 0.5) -> (3.5, 0.5): the content turns clockwise on screen. Pixels
 * then read out[i][j] = src[3 - j][i]. */
static void test_rotation_90(void)
{
    mtl_transform t;
    if (!transform_of("landmarks { count: 2 }", MTL_PHASE_TRAIN, 1, 4, 4, &t))
        return;
    mtl_warp quarter = {.rotation = 90.0f, .zoom = 1.0f};
    float labels[4] = {3, 2, 0.5f, 0.5f};
    mtl_transform_points(&t, (mtl_crop){0, 0, 0}, quarter, labels);
    test_check_values("rotate 90", labels, (float[]){2, 3, 3.5f, 0.5f}, 4, 1e-12);

    uint8_t src[16];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            src[i * 4 + j] = (uint8_t)(10 * i + j);
    mtl_pixels px = mtl_pixels_chw(src, 1, 4, 4);
    float out[16], want[16];
    mtl_transform_apply_warped(&t, &px, (mtl_crop){0, 0, 0}, quarter, out);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            want[i * 4 + j] = (float)(10 * (3 - j) + i);
    test_check_values("rotate 90 pixels", out, want, 16, 0);
    CHECK(out[0] == 30 && out[3] == 0 && out[12] == 33);

    /* 180 degrees and a mirror give back the vertical flip: y -> 4 - y, x unchanged */
    float flipped[4] = {3, 2, 0.5f, 0.5f};
    mtl_transform_points(&t, (mtl_crop){.mirror = 1}, (mtl_warp){.rotation = 180.0f, .zoom = 1.0f}, flipped);
    test_check_values("rotate 180 + mirror", flipped, (float[]){3, 2, 0.5f, 3.5f}, 4, 1e-12);
    mtl_transform_free(&t);
}

/* Zoom 2 about the centre (2, 2): (3, 2) -> (4, 2), (2.5, 1.5) -> (3, 1). Pixels: the output
 * pixel centre j + .5 maps back to x = 2 + (j + .5 - 2) / 2, which is pixel index x - .5. */
static void test_zoom(void)
{
    mtl_transform t;
    if (!transform_of("landmarks { count: 2 }", MTL_PHASE_TRAIN, 1, 4, 4, &t))
        return;
    float labels[4] = {3, 2, 2.5f, 1.5f};
    mtl_transform_points(&t, (mtl_crop){0, 0, 0}, (mtl_warp){.rotation = 0.0f, .zoom = 2.0f}, labels);
    test_check_values("zoom 2", labels, (float[]){4, 2, 3, 1}, 4, 1e-12);

    /* source value = 8 * column: bilinear reads 8 * x exactly inside the image */
    uint8_t src[16];
    for (int i = 0; i < 16; i++)
        src[i] = (uint8_t)(8 * (i % 4));
    mtl_pixels px = mtl_pixels_chw(src, 1, 4, 4);
    float out[16];
    mtl_transform_apply_warped(&t, &px, (mtl_crop){0, 0, 0}, (mtl_warp){.rotation = 0.0f, .zoom = 2.0f}, out);
    /* column j reads source x = (j + .5 - 2) / 2 + 2 - .5 = j / 2 + .75: 6, 10, 14, 18 */
    test_check_values("zoom 2 pixels", out + 4, (float[]){6, 10, 14, 18}, 4, 1e-5);
    mtl_transform_free(&t);
}

/* Normalisation over a 4 (H) x 6 (W) output: x' = 2 x / 6 - 1, y' = 2 y / 4 - 1. */
static void test_normalize(void)
{
    mtl_transform t;
    if (!transform_of("landmarks { count: 3 normalize: true }", MTL_PHASE_TEST, 1, 4, 6, &t))
        return;
    float labels[6] = {1.5f, 1, 6, 4, 0, 0};
    mtl_transform_points(&t, (mtl_crop){0, 0, 0}, no_warp, labels);
    test_check_values("normalize", labels, (float[]){-0.5f, -0.5f, 1, 1, -1, -1}, 6, 1e-6);
    mtl_transform_free(&t);

    /* after a crop to 2x2 at (1, 2) and a mirror: (3, 1.5) -> (1, 0.5) -> (1, 0.5) -> (0, -0.5) */
    if (!transform_of("crop_size: 2 mirror: true landmarks { count: 1 normalize: true }", MTL_PHASE_TRAIN, 1, 4, 6,
                      &t))
        return;
    float one[2] = {3, 1.5f};
    mtl_transform_points(&t, (mtl_crop){.h_off = 1, .w_off = 2, .mirror = 1}, no_warp, one);
    test_check_values("crop, mirror, normalize", one, (float[]){0, -0.5f}, 2, 1e-6);
    mtl_transform_free(&t);
}

/* Pixels follow points: a single bright pixel with a landmark at its centre ends, after any mix of
 * crop, mirror, rotation by a quarter turn and zoom 1, on the output pixel whose centre is the
 * moved landmark. */
static void test_pixels_follow_points(void)
{
    mtl_transform t;
    if (!transform_of("crop_size: 5 mirror: true max_rotation: 90 landmarks { count: 1 }", MTL_PHASE_TRAIN, 1, 7, 8,
                      &t))
        return;
    uint8_t src[7 * 8];
    mtl_pixels px = mtl_pixels_chw(src, 1, 7, 8);
    const float rotations[4] = {0, 90, -90, 180};
    int fails = 0;
    for (int r = 0; r < 4; r++)
        for (int mirror = 0; mirror < 2; mirror++)
            for (int y = 1; y < 6; y++)
                for (int x = 2; x < 7; x++) {
                    memset(src, 0, sizeof(src));
                    src[y * 8 + x] = 200;
                    mtl_crop c = {.h_off = 1, .w_off = 2, .mirror = mirror};
                    mtl_warp w = {.rotation = rotations[r], .zoom = 1.0f};
                    float out[25], point[2] = {x + 0.5f, y + 0.5f};
                    mtl_transform_apply_warped(&t, &px, c, w, out);
                    mtl_transform_points(&t, c, w, point);
                    int qx = (int)floorf(point[0]), qy = (int)floorf(point[1]);
                    int inside = qx >= 0 && qx < 5 && qy >= 0 && qy < 5;
                    float sum = 0;
                    for (int k = 0; k < 25; k++)
                        sum += out[k];
                    if (inside ? out[qy * 5 + qx] != 200 || sum != 200 : sum != 0)
                        fails++;
                }
    CHECK_MSG(fails == 0, "%d of 200 placements: the bright pixel did not land where its landmark did", fails);
    mtl_transform_free(&t);
}

/* Rotation and zoom draws: a pure function of the bits, inside their ranges, none at TEST; the crop
 * and flip draws are those of a transform without rotation. */
static void test_warp_draws(void)
{
    mtl_transform t, plain, test;
    if (!transform_of("crop_size: 3 mirror: true max_rotation: 30 zoom_min: 0.9 zoom_max: 1.2", MTL_PHASE_TRAIN, 1,
                      6, 6, &t) ||
        !transform_of("crop_size: 3 mirror: true", MTL_PHASE_TRAIN, 1, 6, 6, &plain) ||
        !transform_of("crop_size: 3 mirror: true max_rotation: 30 zoom_min: 0.9 zoom_max: 1.2", MTL_PHASE_TEST, 1, 6,
                      6, &test))
        return;
    int in_range = 1, same = 1, test_none = 1, crops_same = 1;
    double rmin = 1e9, rmax = -1e9, zmin = 1e9, zmax = -1e9;
    for (uint64_t i = 0; i < 2000; i++) {
        uint64_t bits = i * 0x9e3779b97f4a7c15ull + 12345;
        mtl_warp w = mtl_transform_choose_warp(&t, bits), w2 = mtl_transform_choose_warp(&t, bits);
        same &= w.rotation == w2.rotation && w.zoom == w2.zoom;
        in_range &= w.rotation >= -30 && w.rotation <= 30 && w.zoom >= 0.9f && w.zoom <= 1.2f;
        rmin = fmin(rmin, w.rotation);
        rmax = fmax(rmax, w.rotation);
        zmin = fmin(zmin, w.zoom);
        zmax = fmax(zmax, w.zoom);
        mtl_warp tw = mtl_transform_choose_warp(&test, bits);
        test_none &= tw.rotation == 0 && tw.zoom == 1;
        mtl_crop a = mtl_transform_choose(&t, 6, 6, bits), b = mtl_transform_choose(&plain, 6, 6, bits);
        crops_same &= a.h_off == b.h_off && a.w_off == b.w_off && a.mirror == b.mirror;
    }
    CHECK(same && in_range && test_none && crops_same);
    CHECK_MSG(rmin < -25 && rmax > 25 && zmin < 0.93 && zmax > 1.17, "draws cover [%g, %g] and [%g, %g]", rmin, rmax,
              zmin, zmax);
    mtl_warp none = mtl_transform_choose_warp(&plain, 777);
    CHECK(none.rotation == 0 && none.zoom == 1);
    mtl_transform_free(&t);
    mtl_transform_free(&plain);
    mtl_transform_free(&test);
}

static void test_transform_errors(void)
{
    mtl_error err = {0};
    CHECK_FAILS(transform_error("landmarks { count: 5 mirror_pairs: '0,1,2' }", &err), &err, MTL_ERR_CONFIG,
                "no partner");
    CHECK_FAILS(transform_error("landmarks { count: 5 mirror_pairs: '0,5' }", &err), &err, MTL_ERR_CONFIG,
                "not below the 5 points");
    CHECK_FAILS(transform_error("landmarks { count: 5 mirror_pairs: '0,1,1,2' }", &err), &err, MTL_ERR_CONFIG,
                "in two pairs");
    CHECK_FAILS(transform_error("landmarks { count: 5 mirror_pairs: '0,0' }", &err), &err, MTL_ERR_CONFIG,
                "in two pairs");
    CHECK_FAILS(transform_error("landmarks { count: 5 mirror_pairs: 'a,b' }", &err), &err, MTL_ERR_CONFIG,
                "not part of a point index");
    CHECK_FAILS(transform_error("landmarks { first_label: 2 }", &err), &err, MTL_ERR_CONFIG, "needs count");
    CHECK_FAILS(transform_error("landmarks { count: 2 flip: 1 }", &err), &err, MTL_ERR_CONFIG, "flip");
    CHECK_FAILS(transform_error("max_rotation: -5", &err), &err, MTL_ERR_CONFIG, "max_rotation");
    CHECK_FAILS(transform_error("zoom_min: 1.2 zoom_max: 1.1", &err), &err, MTL_ERR_CONFIG, "zoom_min");
    CHECK_FAILS(transform_error("zoom_min: 0", &err), &err, MTL_ERR_CONFIG, "zoom_min");
    CHECK_FAILS(transform_error("mean_file: 'm.binaryproto' max_rotation: 10", &err), &err, MTL_ERR_UNSUPPORTED,
                "mean_value");
    mtl_transform t;
    if (transform_of("landmarks { first_label: 6 count: 5 }", MTL_PHASE_TRAIN, 1, 4, 4, &t)) {
        CHECK_OK(mtl_transform_check_labels(&t, 16, &err), &err);
        CHECK_FAILS(mtl_transform_check_labels(&t, 15, &err), &err, MTL_ERR_CONFIG, "need 16 label columns");
        mtl_transform_free(&t);
    }
}

/* ---- ImageData moves the labels ------------------------------------------------------------------ */

/* An 8x4 (W x H) image listed with 2 points and one other label, read by ImageData resized to
 * 4x8 (x halves, y doubles), centre-cropped at TEST to 4x4 (window at (0, 2)), normalised:
 *   (6, 1) -> (3, 2) -> (3, 0) -> (0.5, -1);  (2.5, 3.5) -> (1.25, 7) -> (1.25, 5) -> (-0.375, 1.5).
 * At TRAIN with mirror the points trade places after x -> 4 - x. */
static void test_image_data_landmarks(const char *dir)
{
    char png[512], list[512];
    snprintf(png, sizeof(png), "%s/a.png", dir);
    snprintf(list, sizeof(list), "%s/list.txt", dir);
    uint8_t pixels[4 * 8] = {0};
    mtl_image img = {.width = 8, .height = 4, .channels = 1, .pixels = pixels};
    mtl_error err = {0};
    CHECK_OK(mtl_image_write_png(png, &img, &err), &err);
    FILE *f = fopen(list, "w");
    if (!f) {
        CHECK_MSG(0, "cannot write %s", list);
        return;
    }
    fprintf(f, "%s 6 1 2.5 3.5 4\n", png);
    fclose(f);
    for (int phase = 0; phase < 2; phase++) {
        char text[1024];
        snprintf(text, sizeof(text),
                 "name: 'd' type: 'ImageData' top: 'data' top: 'label' "
                 "image_data_param { source: '%s' batch_size: 2 new_height: 8 new_width: 4 is_color: false } "
                 "transform_param { crop_size: 4 mirror: %s landmarks { count: 2 mirror_pairs: '0 1' normalize: true "
                 "} }",
                 list, phase ? "true" : "false");
        mtl_tensor *tops[2] = {mtl_tensor_create("data"), mtl_tensor_create("label")};
        mtl_layer *l = NULL;
        mtl_phase ph = phase ? MTL_PHASE_TRAIN : MTL_PHASE_TEST;
        CHECK_OK(gradcheck_build(text, ph, NULL, 0, tops, 2, &l, &err), &err);
        if (l) {
            CHECK_OK(l->ops->reshape(l, &err), &err);
            CHECK_OK(l->ops->forward(l, &err), &err);
            const float *lab = tops[1]->data;
            CHECK_INT(tops[1]->count, 10);
            if (phase == 0) {
                test_check_values("ImageData TEST", lab, (float[]){0.5f, -1, -0.375f, 1.5f, 4}, 5, 1e-6);
                test_check_values("ImageData TEST (2nd)", lab + 5, (float[]){0.5f, -1, -0.375f, 1.5f, 4}, 5, 1e-6);
            } else {
                /* the window is as wide as the resized image, so x is fixed; it moves down by a
                 * random h_off in [0, 4]. Unmirrored: x 0.5 and -0.375, y1 - y0 = (7 - 2) / 2 = 2.5.
                 * Mirrored: x -> 4 - x gives -0.5 and 0.375, then the points trade places. */
                for (int s = 0; s < 2; s++) {
                    const float *v = lab + 5 * s;
                    int mirrored = v[0] < 0.45f;
                    float y0 = mirrored ? v[3] : v[1], y1 = mirrored ? v[1] : v[3];
                    float h_off = 2 - 2 * (y0 + 1); /* y0 = (2 - h_off) / 2 - 1 */
                    if (mirrored)
                        test_check_values("ImageData TRAIN mirrored x", (float[]){v[0], v[2]}, (float[]){0.375f, -0.5f}, 2,
                                     1e-6);
                    else
                        test_check_values("ImageData TRAIN x", (float[]){v[0], v[2]}, (float[]){0.5f, -0.375f}, 2, 1e-6);
                    CHECK_NEAR(y1 - y0, 2.5, 1e-6);
                    CHECK_MSG(h_off >= 0 && h_off <= 4 && h_off == roundf(h_off), "sample %d: h_off %g", s, h_off);
                    CHECK(v[4] == 4);
                }
            }
        }
        gradcheck_free_layer(l);
        mtl_tensor_free(tops[0]);
        mtl_tensor_free(tops[1]);
    }
    remove(png);
    remove(list);
}

/* The Data layer over an LMDB: one 4x6 record with labels [1 .5 5 1.5 7], centre-cropped at TEST
 * to 4x4 (window at column 1) and normalised: (1, .5) -> (0, .5) -> (-1, -.75), (5, 1.5) ->
 * (4, 1.5) -> (1, -.25); the 7 stays. Landmarks beyond the labels are an error. */
static void test_data_landmarks(const char *dir)
{
    char db[512];
    snprintf(db, sizeof(db), "%s/lm_lmdb", dir);
    mtl_error err = {0};
    mtl_db_writer *w = NULL;
    CHECK_OK(mtl_db_writer_open(db, &w, &err), &err);
    if (!w)
        return;
    uint8_t pixels[24] = {0};
    const float labels[5] = {1, 0.5f, 5, 1.5f, 7};
    mtl_record r = {.channels = 1, .height = 4, .width = 6, .n_labels = 5, .labels = labels, .n_bytes = 24,
                    .data = pixels};
    CHECK_OK(mtl_db_writer_put(w, 0, &r, &err), &err);
    mtl_db_meta meta = {.count = 1, .n_labels = 5, .channels = 1, .height = 4, .width = 6};
    CHECK_OK(mtl_db_writer_finish(w, &meta, &err), &err);
    for (int bad = 0; bad < 2; bad++) {
        char text[1024];
        snprintf(text, sizeof(text),
                 "name: 'd' type: 'Data' top: 'data' top: 'label' data_param { source: '%s' batch_size: 1 } "
                 "transform_param { crop_size: 4 landmarks { count: %d normalize: true } }",
                 db, bad ? 3 : 2);
        mtl_tensor *tops[2] = {mtl_tensor_create("data"), mtl_tensor_create("label")};
        mtl_layer *l = NULL;
        if (bad) {
            CHECK_FAILS(gradcheck_build(text, MTL_PHASE_TEST, NULL, 0, tops, 2, &l, &err), &err, MTL_ERR_CONFIG,
                        "need 6 label columns, but the samples have 5 labels");
        } else {
            CHECK_OK(gradcheck_build(text, MTL_PHASE_TEST, NULL, 0, tops, 2, &l, &err), &err);
            if (l) {
                CHECK_OK(l->ops->reshape(l, &err), &err);
                CHECK_OK(l->ops->forward(l, &err), &err);
                test_check_values("Data TEST", tops[1]->data, (float[]){-1, -0.75f, 1, -0.25f, 7}, 5, 1e-6);
            }
        }
        gradcheck_free_layer(l);
        mtl_tensor_free(tops[0]);
        mtl_tensor_free(tops[1]);
    }
}

/* ---- EuclideanLoss ------------------------------------------------------------------------------- */

static float forward_loss(const char *text, mtl_tensor **bs, int nb, mtl_layer **keep)
{
    mtl_error err = {0};
    mtl_tensor *top = mtl_tensor_create("loss");
    mtl_layer *l = NULL;
    float v = NAN;
    CHECK_OK(gradcheck_build(text, MTL_PHASE_TRAIN, bs, nb, &top, 1, &l, &err), &err);
    if (l) {
        mtl_status st = l->ops->reshape(l, &err);
        if (st == MTL_OK)
            st = l->ops->forward(l, &err);
        CHECK_OK(st, &err);
        v = top->data[0];
    }
    if (keep) {
        *keep = l;
    } else {
        gradcheck_free_layer(l);
        mtl_tensor_free(top);
    }
    return v;
}

/* a = [1 2 3 4 | 0 0 1 1], b = [0 2 5 - | 1 1 1 1], coord_weight 1 2 (x, y): differences
 * [1 0 -2 0 | -1 -1 0 0], weights [1 2 1 2 | 1 2 1 2], weighted squares 1 + 4 | 1 + 2 = 8.
 *   default Z = N = 2: 8 / 4 = 2;  normalize_present: Z = 7 present / 4 per sample = 1.75: 8 / 3.5.
 *   gradient of a (weight 1, Z = 2): w d / Z = [0.5 0 -1 0 | -0.5 -1 0 0].
 * With a weight bottom [1 1 .5 1 | 2 2 2 2]: squares 1 + .5 * 4 | 2 + 4 = 9, 9 / 4; its gradient
 * c d^2 / (2 Z) = [.25 0 1 0 | .25 .5 0 0]. */
static void test_euclidean_weights(void)
{
    const char *xy = "type: 'EuclideanLoss' euclidean_loss_param { coord_weight: 1 coord_weight: 2 }";
    mtl_tensor *bs[3] = {test_tensor((int[]){2, 4, 0}, (float[]){1, 2, 3, 4, 0, 0, 1, 1}),
                         test_tensor((int[]){2, 4, 0}, (float[]){0, 2, 5, NAN, 1, 1, 1, 1}),
                         test_tensor((int[]){2, 4, 0}, (float[]){1, 1, 0.5f, 1, 2, 2, 2, 2})};
    mtl_layer *l = NULL;
    CHECK_NEAR(forward_loss(xy, bs, 2, &l), 2.0, 1e-6);
    if (l) {
        l->tops[0]->grad[0] = 1.0f;
        l->ops->backward(l);
        test_check_values("weighted grad a", bs[0]->grad, (float[]){0.5f, 0, -1, 0, -0.5f, -1, 0, 0}, 8, 1e-6);
        test_check_values("weighted grad b", bs[1]->grad, (float[]){-0.5f, 0, 1, 0, 0.5f, 1, 0, 0}, 8, 1e-6);
        mtl_tensor *top = l->tops[0];
        gradcheck_free_layer(l);
        mtl_tensor_free(top);
    }
    CHECK_NEAR(forward_loss("type: 'EuclideanLoss' euclidean_loss_param { coord_weight: 1 coord_weight: 2 "
                            "normalize_present: true }",
                            bs, 2, NULL),
               8.0 / 3.5, 1e-6);
    /* per-value weights: eight coord_weight values equal to the pattern give the same */
    CHECK_NEAR(forward_loss("type: 'EuclideanLoss' euclidean_loss_param { coord_weight: 1 coord_weight: 2 "
                            "coord_weight: 1 coord_weight: 2 }",
                            bs, 2, NULL),
               2.0, 1e-6);
    CHECK_NEAR(forward_loss(xy, bs, 3, &l), 2.25, 1e-6);
    if (l) {
        l->tops[0]->grad[0] = 1.0f;
        for (int i = 0; i < 3; i++)
            l->propagate_down[i] = 1;
        l->ops->backward(l);
        test_check_values("weight bottom grad", bs[2]->grad, (float[]){0.25f, 0, 1, 0, 0.25f, 0.5f, 0, 0}, 8, 1e-6);
        mtl_tensor *top = l->tops[0];
        gradcheck_free_layer(l);
        mtl_tensor_free(top);
    }
    /* without weights, present-normalised: squares 1 + 4 | 1 + 1 = 7 over Z = 1.75 */
    CHECK_NEAR(forward_loss("type: 'EuclideanLoss' euclidean_loss_param { normalize_present: true }", bs, 2, NULL),
               7.0 / 3.5, 1e-6);

    /* every target missing: loss 0 and zero gradients, whatever the normalisation */
    mtl_tensor *none[2] = {bs[0], test_tensor((int[]){2, 4, 0}, (float[]){NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN})};
    CHECK_NEAR(forward_loss("type: 'EuclideanLoss' euclidean_loss_param { normalize_present: true }", none, 2, &l), 0,
               0);
    if (l) {
        l->tops[0]->grad[0] = 1.0f;
        l->ops->backward(l);
        test_check_values("all missing grad", bs[0]->grad, (float[]){0, 0, 0, 0, 0, 0, 0, 0}, 8, 0);
        mtl_tensor *top = l->tops[0];
        gradcheck_free_layer(l);
        mtl_tensor_free(top);
    }

    mtl_error err = {0};
    mtl_tensor *top = mtl_tensor_create("loss");
    CHECK_FAILS(gradcheck_build("type: 'EuclideanLoss' euclidean_loss_param { coord_weight: -1 }", MTL_PHASE_TRAIN,
                                bs, 2, &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, ">= 0");
    CHECK_FAILS(gradcheck_build("type: 'EuclideanLoss' euclidean_loss_param { coord_weight: 1 coord_weight: 2 "
                                "coord_weight: 3 }",
                                MTL_PHASE_TRAIN, bs, 2, &top, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "do not divide the 4 values");
    mtl_tensor *short_w = test_tensor((int[]){2, 3, 0}, NULL);
    mtl_tensor *bad3[3] = {bs[0], bs[1], short_w};
    CHECK_FAILS(gradcheck_build("type: 'EuclideanLoss'", MTL_PHASE_TRAIN, bad3, 3, &top, 1, &l, &err), &err,
                MTL_ERR_SHAPE, "one value per prediction");
    mtl_tensor *neg = test_tensor((int[]){2, 4, 0}, (float[]){1, 1, 1, 1, 1, -1, 1, 1});
    mtl_tensor *negs[3] = {bs[0], bs[1], neg};
    l = NULL;
    CHECK_OK(gradcheck_build("type: 'EuclideanLoss'", MTL_PHASE_TRAIN, negs, 3, &top, 1, &l, &err), &err);
    if (l) {
        CHECK_OK(l->ops->reshape(l, &err), &err);
        CHECK_FAILS(l->ops->forward(l, &err), &err, MTL_ERR_ARGUMENT, "sample 1, value 1");
        gradcheck_free_layer(l);
    }
    mtl_tensor_free(neg);
    mtl_tensor_free(short_w);
    mtl_tensor_free(top);
    mtl_tensor_free(none[1]);
    for (int i = 0; i < 3; i++)
        mtl_tensor_free(bs[i]);
}

static void test_euclidean_gradcheck(void)
{
    const gradcheck_case cases[] = {
        {.layer = "type: 'EuclideanLoss' euclidean_loss_param { coord_weight: 2 coord_weight: 0.5 }",
         .n_bottoms = 2, .shapes = {{3, 10}, {3, 10}}},
        {.layer = "type: 'EuclideanLoss' euclidean_loss_param { coord_weight: 1 coord_weight: 2 coord_weight: 3 }",
         .n_bottoms = 2, .shapes = {{2, 3, 1, 1}, {2, 3}}, .lo = -2, .hi = 2},
        {.layer = "type: 'EuclideanLoss' euclidean_loss_param { normalize_present: true coord_weight: 0.5 }",
         .n_bottoms = 2, .shapes = {{5, 4}, {5, 4}}},
        {.layer = "type: 'EuclideanLoss' euclidean_loss_param { coord_weight: 1 coord_weight: 3 }", .n_bottoms = 3,
         .shapes = {{3, 6}, {3, 6}, {3, 6}}, .lo = 0.1f, .hi = 2},
        {.layer = "type: 'EuclideanLoss'", .n_bottoms = 3, .shapes = {{4, 2}, {4, 2}, {4, 2}}, .lo = 0.1f, .hi = 1,
         .no_check = {0, 0, 1}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char label[64];
        snprintf(label, sizeof(label), "EuclideanLoss weights #%zu", i);
        CHECK_MSG(gradcheck_run(label, &cases[i]) == 0, "%s", label);
    }
}

/* ---- NME ----------------------------------------------------------------------------------------- */

/* Three points, reference 0 -> 2.
 *   sample 0: target (0,0) (3,0) (0,4), reference 4; predicted (1,0) (3,2) (0,4): distances 1 2 0,
 *             mean 1, NME 0.25.
 *   sample 1: target (0,0) (missing) (6,8), reference 10; predicted (.3,.4) (5,5) (6,8): distances
 *             .5 and 0 over the 2 present points, mean .25, NME 0.025.
 *   sample 2: reference point 0 missing: not counted.
 * NME (0.25 + 0.025) / 2 = 0.1375; failures above 0.1: 1 of 2. */
static void test_nme(void)
{
    float target[18] = {0, 0, 3, 0, 0, 4, 0, 0, NAN, NAN, 6, 8, NAN, NAN, 1, 1, 2, 2};
    float pred[18] = {1, 0, 3, 2, 0, 4, 0.3f, 0.4f, 5, 5, 6, 8, 0, 0, 1, 1, 2, 2};
    mtl_tensor *bs[2] = {test_tensor((int[]){3, 6, 0}, pred), test_tensor((int[]){3, 6, 0}, target)};
    mtl_tensor *tops[2] = {mtl_tensor_create("nme"), mtl_tensor_create("fail")};
    mtl_layer *l = NULL;
    mtl_error err = {0};
    CHECK_OK(gradcheck_build("type: 'NME' nme_param { norm_from: 0 norm_to: 2 }", MTL_PHASE_TEST, bs, 2, tops, 2, &l,
                             &err),
             &err);
    if (l) {
        CHECK_OK(l->ops->reshape(l, &err), &err);
        CHECK_OK(l->ops->forward(l, &err), &err);
        CHECK_NEAR(tops[0]->data[0], 0.1375, 1e-7);
        CHECK_NEAR(tops[1]->data[0], 0.5, 0);
        CHECK(tops[0]->ndim == 0 && tops[1]->ndim == 0);
        gradcheck_free_layer(l);
    }
    CHECK_OK(gradcheck_build("type: 'NME' nme_param { norm_from: 2 norm_to: 0 failure_threshold: 0.3 }",
                             MTL_PHASE_TEST, bs, 2, tops, 2, &l, &err),
             &err);
    if (l) {
        CHECK_OK(l->ops->reshape(l, &err), &err);
        CHECK_OK(l->ops->forward(l, &err), &err);
        CHECK_NEAR(tops[0]->data[0], 0.1375, 1e-7);
        CHECK_NEAR(tops[1]->data[0], 0.0, 0);
        gradcheck_free_layer(l);
    }
    /* a batch with no countable sample reports 0 */
    for (int i = 0; i < 18; i++)
        bs[1]->data[i] = NAN;
    CHECK_OK(gradcheck_build("type: 'NME' nme_param { norm_from: 0 norm_to: 1 }", MTL_PHASE_TEST, bs, 2, tops, 1, &l,
                             &err),
             &err);
    if (l) {
        CHECK_OK(l->ops->reshape(l, &err), &err);
        CHECK_OK(l->ops->forward(l, &err), &err);
        CHECK_NEAR(tops[0]->data[0], 0.0, 0);
        gradcheck_free_layer(l);
    }

    CHECK_FAILS(gradcheck_build("type: 'NME' nme_param { norm_from: 0 }", MTL_PHASE_TEST, bs, 2, tops, 1, &l, &err),
                &err, MTL_ERR_CONFIG, "needs norm_from and norm_to");
    CHECK_FAILS(gradcheck_build("type: 'NME'", MTL_PHASE_TEST, bs, 2, tops, 1, &l, &err), &err, MTL_ERR_CONFIG,
                "needs norm_from and norm_to");
    CHECK_FAILS(gradcheck_build("type: 'NME' nme_param { norm_from: 1 norm_to: 1 }", MTL_PHASE_TEST, bs, 2, tops, 1,
                                &l, &err),
                &err, MTL_ERR_CONFIG, "give two landmarks");
    CHECK_FAILS(gradcheck_build("type: 'NME' nme_param { norm_from: 0 norm_to: 3 }", MTL_PHASE_TEST, bs, 2, tops, 1,
                                &l, &err),
                &err, MTL_ERR_CONFIG, "not among the 3 points");
    mtl_tensor *odd[2] = {test_tensor((int[]){2, 3, 0}, NULL), test_tensor((int[]){2, 3, 0}, NULL)};
    CHECK_FAILS(gradcheck_build("type: 'NME' nme_param { norm_from: 0 norm_to: 1 }", MTL_PHASE_TEST, odd, 2, tops, 1,
                                &l, &err),
                &err, MTL_ERR_SHAPE, "not (x, y) pairs");
    mtl_tensor *other[2] = {bs[0], odd[0]};
    CHECK_FAILS(gradcheck_build("type: 'NME' nme_param { norm_from: 0 norm_to: 1 }", MTL_PHASE_TEST, other, 2, tops,
                                1, &l, &err),
                &err, MTL_ERR_SHAPE, "the same first dimension");
    for (int i = 0; i < 2; i++) {
        mtl_tensor_free(odd[i]);
        mtl_tensor_free(bs[i]);
        mtl_tensor_free(tops[i]);
    }
}

/* ---- task-wise early stopping -------------------------------------------------------------------- */

/* Tasks lm (main), pose and size (auxiliary); patience 2, min_delta 0.01:
 *   iter   lm    pose   size    record after the test
 *   0      1.0   0.9    0.5     every best set
 *   100    0.8   0.85   0.495   pose improves (0.85 < 0.89); size: 0.495 is not < 0.49: 1 bad
 *   200    0.7   0.86   0.3     pose 1 bad; size improves (best 0.3)
 *   300    0.75  0.845  0.31    pose: 0.845 is not < 0.84: 2 bad, stops; size 1 bad; lm 1 bad
 *   400    0.76  0.5    NaN     pose stopped (ignored); size: no value, still 1 bad; lm 2 bad, main
 *   500    0.77  0.5    0.35    size 2 bad, stops; lm 3 bad, still running */
static const double es_losses[6][3] = {{1.0, 0.9, 0.5},    {0.8, 0.85, 0.495}, {0.7, 0.86, 0.3},
                                       {0.75, 0.845, 0.31}, {0.76, 0.5, NAN},  {0.77, 0.5, 0.35}};
static const char *const es_tasks[3] = {"loss_lm", "loss_pose", "loss_size"};

static mtl_early_stop *es_make(int64_t min_iter)
{
    mtl_early_stop_config cfg = {.patience = 2, .min_delta = 0.01, .min_iter = min_iter, .n_auxiliary = 2,
                                 .auxiliary = {"loss_pose", "loss_size"}};
    mtl_early_stop *es = NULL;
    mtl_error err = {0};
    CHECK_OK(mtl_early_stop_create(&cfg, 3, es_tasks, &es, &err), &err);
    return es;
}

static void test_early_stop_sequence(void)
{
    mtl_early_stop *es = es_make(0);
    if (!es)
        return;
    static const int want_stops[6][3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}, {0, 1, 0}, {0, 0, 0}, {0, 0, 1}};
    static const float want_mult[6][3] = {{1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 0, 1}, {1, 0, 1}, {1, 0, 0}};
    uint8_t saved[512];
    size_t saved_size = 0;
    for (int k = 0; k < 6; k++) {
        int now[3];
        int n = mtl_early_stop_update(es, 100 * k, es_losses[k], now);
        float mult[3];
        mtl_early_stop_multipliers(es, mult);
        for (int t = 0; t < 3; t++) {
            CHECK_MSG(now[t] == want_stops[k][t], "test %d task %d: stopped_now %d", k, t, now[t]);
            CHECK_MSG(mult[t] == want_mult[k][t], "test %d task %d: multiplier %g", k, t, mult[t]);
        }
        CHECK_INT(n, want_stops[k][1] + want_stops[k][2]);
        if (k == 3) {
            saved_size = mtl_early_stop_state_size(es);
            CHECK(saved_size <= sizeof(saved));
            mtl_early_stop_state_save(es, saved);
        }
    }
    CHECK_INT(mtl_early_stop_stopped_at(es, 0), -1);
    CHECK_INT(mtl_early_stop_stopped_at(es, 1), 300);
    CHECK_INT(mtl_early_stop_stopped_at(es, 2), 500);
    CHECK(!mtl_early_stop_is_auxiliary(es, 0) && mtl_early_stop_is_auxiliary(es, 1));
    char line[512];
    mtl_early_stop_describe(es, 1, line, sizeof(line));
    CHECK_MSG(strstr(line, "'loss_pose' stops at iteration 300") && strstr(line, "0.845") &&
                  strstr(line, "not improved on 0.85 (iteration 100) for 2 tests (patience 2)"),
              "describe: %s", line);
    mtl_early_stop_describe(es, 0, line, sizeof(line));
    CHECK_MSG(strstr(line, "main task 'loss_lm' runs"), "describe: %s", line);

    /* a resumed run continues the same record: load the state after test 3, replay tests 4 and 5 */
    mtl_early_stop *again = es_make(0);
    mtl_error err = {0};
    if (again) {
        CHECK_OK(mtl_early_stop_state_load(again, saved, saved_size, &err), &err);
        CHECK(mtl_early_stop_multiplier(again, 1) == 0 && mtl_early_stop_multiplier(again, 2) == 1);
        mtl_early_stop_update(again, 400, es_losses[4], NULL);
        int now[3];
        CHECK_INT(mtl_early_stop_update(again, 500, es_losses[5], now), 1);
        CHECK(now[2] == 1 && mtl_early_stop_stopped_at(again, 2) == 500);
        CHECK_FAILS(mtl_early_stop_state_load(again, saved, saved_size - 1, &err), &err, MTL_ERR_CORRUPT,
                    "3 tasks");
        mtl_early_stop_free(again);
    }
    mtl_early_stop_free(es);

    /* min_iter holds every stop back until iteration 1000 */
    es = es_make(1000);
    if (es) {
        int total = 0;
        for (int k = 0; k < 6; k++)
            total += mtl_early_stop_update(es, 100 * k, es_losses[k], NULL);
        CHECK_INT(total, 0);
        const double later[3] = {0.9, 0.9, 0.9};
        int now[3];
        CHECK_INT(mtl_early_stop_update(es, 1000, later, now), 2);
        CHECK(now[0] == 0 && now[1] == 1 && now[2] == 1);
        mtl_early_stop_free(es);
    }
}

/* relative: true, min_delta 0.1, patience 1, one auxiliary task: 1.0, then 0.85 (below 0.9:
 * better, best 0.85), then 0.8 (not below 0.765: stops at once). */
static void test_early_stop_relative(void)
{
    static const char *const names[2] = {"main", "aux"};
    mtl_early_stop_config cfg = {.patience = 1, .min_delta = 0.1, .relative = 1, .n_auxiliary = 1,
                                 .auxiliary = {"aux"}};
    mtl_early_stop *es = NULL;
    mtl_error err = {0};
    CHECK_OK(mtl_early_stop_create(&cfg, 2, names, &es, &err), &err);
    if (!es)
        return;
    const double seq[3][2] = {{1, 1.0}, {1, 0.85}, {1, 0.8}};
    int now[2];
    CHECK_INT(mtl_early_stop_update(es, 0, seq[0], now), 0);
    CHECK_INT(mtl_early_stop_update(es, 10, seq[1], now), 0);
    CHECK_INT(mtl_early_stop_update(es, 20, seq[2], now), 1);
    CHECK(now[1] == 1 && now[0] == 0 && mtl_early_stop_multiplier(es, 1) == 0);
    mtl_early_stop_free(es);
    cfg.min_delta = 1.0;
    CHECK_FAILS(mtl_early_stop_create(&cfg, 2, names, &es, &err), &err, MTL_ERR_CONFIG, "below 1 when relative");
}

static mtl_status es_from_text(const char *text, mtl_early_stop **out, int *present, mtl_error *err)
{
    mtl_cfg_node *root = NULL;
    *out = NULL;
    mtl_status st = mtl_cfg_parse_string(text, "<solver>", &root, err);
    mtl_early_stop_config cfg;
    if (st == MTL_OK)
        st = mtl_early_stop_read(root, &cfg, present, err);
    if (st == MTL_OK)
        st = mtl_cfg_check_unused(root, err);
    if (st == MTL_OK && *present)
        st = mtl_early_stop_create(&cfg, 3, es_tasks, out, err);
    mtl_cfg_free(root);
    return st;
}

static void test_early_stop_config(void)
{
    mtl_error err = {0};
    mtl_early_stop *es = NULL;
    int present = -1;
    CHECK_OK(es_from_text("", &es, &present, &err), &err);
    CHECK(present == 0 && es == NULL);
    CHECK_OK(es_from_text("task_early_stopping { patience: 3 min_iter: 10 auxiliary: 'loss_size' }", &es, &present,
                          &err),
             &err);
    CHECK(present == 1 && es && mtl_early_stop_is_auxiliary(es, 2) && !mtl_early_stop_is_auxiliary(es, 1));
    mtl_early_stop_free(es);
    CHECK_FAILS(es_from_text("task_early_stopping { patience: 3 auxiliary: 'loss_poze' }", &es, &present, &err), &err,
                MTL_ERR_CONFIG, "did you mean loss_pose");
    CHECK_FAILS(es_from_text("task_early_stopping { patience: 3 auxiliary: 'nothing_like_it' }", &es, &present, &err),
                &err, MTL_ERR_CONFIG, "the tasks (loss tops) are 'loss_lm' 'loss_pose' 'loss_size'");
    CHECK_FAILS(es_from_text("task_early_stopping { patience: 3 auxiliary: 'loss_lm' auxiliary: 'loss_pose' "
                             "auxiliary: 'loss_size' }",
                             &es, &present, &err),
                &err, MTL_ERR_CONFIG, "main task never stops");
    CHECK_FAILS(es_from_text("task_early_stopping { patience: 3 auxiliary: 'loss_pose' auxiliary: 'loss_pose' }", &es,
                             &present, &err),
                &err, MTL_ERR_CONFIG, "given twice");
    CHECK_FAILS(es_from_text("task_early_stopping { auxiliary: 'loss_pose' }", &es, &present, &err), &err,
                MTL_ERR_CONFIG, "needs patience");
    CHECK_FAILS(es_from_text("task_early_stopping { patience: 0 auxiliary: 'loss_pose' }", &es, &present, &err), &err,
                MTL_ERR_CONFIG, "patience");
    CHECK_FAILS(es_from_text("task_early_stopping { patience: 2 }", &es, &present, &err), &err, MTL_ERR_CONFIG,
                "at least one auxiliary");
    CHECK_FAILS(es_from_text("task_early_stopping { patience: 2 min_delta: -1 auxiliary: 'loss_pose' }", &es,
                             &present, &err),
                &err, MTL_ERR_CONFIG, "min_delta");
    CHECK_FAILS(es_from_text("task_early_stopping { patience: 2 min_delta: 1 relative: true auxiliary: 'loss_pose' }",
                             &es, &present, &err),
                &err, MTL_ERR_CONFIG, "below 1 when relative");
    CHECK_FAILS(es_from_text("task_early_stopping { patience: 2 auxiliary: 'loss_pose' patients: 3 }", &es, &present,
                             &err),
                &err, MTL_ERR_CONFIG, "patients");
}

int main(void)
{
    test_mirror_flip_map();
    test_crop_shift();
    test_resize_scale();
    test_rotation_90();
    test_zoom();
    test_normalize();
    test_pixels_follow_points();
    test_warp_draws();
    test_transform_errors();

    char dir[256];
    snprintf(dir, sizeof(dir), "%s/mtl_landmarks_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(dir)) {
        test_image_data_landmarks(dir);
        test_data_landmarks(dir);
        test_remove_tree(dir);
    } else {
        CHECK_MSG(0, "mkdtemp %s failed", dir);
    }

    test_euclidean_weights();
    test_euclidean_gradcheck();
    test_nme();
    test_early_stop_sequence();
    test_early_stop_relative();
    test_early_stop_config();
    return check_finish();
}
