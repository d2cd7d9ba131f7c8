/* mtl detect: runs a deploy detection net (Faster R-CNN ending in DetectionOutput) on image files
 * and writes the detections as a COCO results file, with image and category ids taken from a COCO
 * annotation file when one is given. With --draw, also a PNG per image with the boxes, labels and
 * scores. docs/detection.md describes the net's blobs and the file formats. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/net.h"
#include "data/coco.h"
#include "data/image.h"
#include "draw.h"
#include "image_input.h"
#include "mtl/mtl.h"

static const char detect_usage[] =
    "usage: mtl detect --model NET.prototxt --weights SNAPSHOT [--threshold T] [--categories GT.json]\n"
    "                  [--output RESULTS.json] [--draw DIR] [--blob NAME] [--scale S] [--mean M[,M2,M3]]\n"
    "                  [--gray | --color] [--threads N] IMAGE...\n"
    "\n"
    "Runs the TEST phase of NET, a deploy detection net, with the weights of SNAPSHOT (every\n"
    "parameter must be found in it by layer name) on each image, and writes the detections as a COCO\n"
    "results file: [{\"image_id\", \"category_id\", \"bbox\": [x, y, w, h], \"score\"}, ...] in pixels of\n"
    "the image file, for `mtl evaluate-detections`.\n"
    "\n"
    "NET has an input blob 'data' (1 x C x H x W, C 1 or 3) and, if the net reads it, an input blob\n"
    "'im_info' (1 x 3), and a layer of type DetectionOutput whose top holds one row per detection:\n"
    "[batch_index, x1, y1, x2, y2, score, class] with class 1..K (0 is the background). Each image\n"
    "is decoded, resized to H x W when its size differs, and fed as (pixel - mean) * scale, as\n"
    "training fed it (give the transform_param's scale and mean); im_info gets [H, W, s] with s the\n"
    "resize factor (1 for an image of the input's size). Boxes are mapped back to the image file.\n"
    "  --threshold T      keep detections scoring at least T (default 0.5; for mAP take a low one,\n"
    "                     such as 0.05, so the precision/recall curve is complete)\n"
    "  --categories F     a COCO annotation file: each IMAGE takes the id of the entry of 'images'\n"
    "                     whose file_name it ends with (else whose base name it shares), and class k\n"
    "                     becomes the k-th category by increasing id, with its name for --draw.\n"
    "                     Without it: image_id is the IMAGE's place among the arguments (from 0) and\n"
    "                     category_id the class number\n"
    "  --output F         write the results to F instead of standard output\n"
    "  --draw DIR         also write DIR/NNNNN_NAME.png per image (NNNNN: its place among the IMAGE\n"
    "                     arguments, from 00000): the image, enlarged to at least 256 pixels, with each\n"
    "                     kept detection's box and a 'name 0.93' label in a colour per class\n"
    "  --blob NAME        the detections blob, when it is not the top of a DetectionOutput layer\n"
    "  --scale S          multiply each pixel after subtracting the mean (default 1)\n"
    "  --mean M[,M2,M3]   subtract from each pixel: one value for every channel or one per channel\n"
    "  --gray             decode images to grey (repeated over the channels of a 3-channel input)\n"
    "  --color            decode images to RGB (the input must have 3 channels)\n"
    "  --threads N        threads for the layers (default: all cores)\n"
    "\n"
    "A summary (images, detections, images per second) goes to standard error. Exit status: 1 when\n"
    "the net, the weights, an image or the output cannot be used (no results are written then), 2 on\n"
    "bad arguments.\n";

typedef struct detect_config {
    const char *model, *weights, *categories, *output, *draw_dir, *blob;
    float threshold;
    cli_pixels pixels;
} detect_config;

/* What one image needs beyond its path: its ids and its size in the file. */
typedef struct detect_image {
    const char *path;
    int64_t image_id;
    int width, height;
} detect_image;

static int parse_arguments(int argc, char **argv, detect_config *cfg, const char ***images, int *n_images)
{
    cli_option options[] = {{"model", 1, NULL},  {"weights", 1, NULL},    {"threshold", 1, NULL},
                            {"categories", 1, NULL}, {"output", 1, NULL}, {"draw", 1, NULL},
                            {"blob", 1, NULL},   {"scale", 1, NULL},      {"mean", 1, NULL},
                            {"gray", 0, NULL},   {"color", 0, NULL},      {"threads", 1, NULL}};
    const int n_opts = (int)(sizeof(options) / sizeof(options[0]));
    if (!(*images = malloc((size_t)argc * sizeof(char *))))
        return cli_usage_error(&cli_detect, "out of memory");
    int rc = cli_parse(&cli_detect, argc, argv, options, n_opts, *images, argc, n_images);
    if (rc)
        return rc;
    cfg->model = cli_value(options, n_opts, "model");
    cfg->weights = cli_value(options, n_opts, "weights");
    if (!cfg->model || !cfg->weights)
        return cli_usage_error(&cli_detect, "--model and --weights are required");
    if (*n_images == 0)
        return cli_usage_error(&cli_detect, "no IMAGE given");
    const char *text;
    if ((text = cli_value(options, n_opts, "threshold")) &&
        (rc = cli_parse_float(&cli_detect, "threshold", text, &cfg->threshold)))
        return rc;
    if ((rc = cli_pixels_parse(&cli_detect, options, n_opts, &cfg->pixels)))
        return rc;
    if ((text = cli_value(options, n_opts, "threads"))) {
        long v = cli_positive(&cli_detect, "threads", text);
        if (v < 0)
            return CLI_USAGE;
        mtl_set_num_threads(v > 4096 ? 4096 : (int)v);
    }
    cfg->categories = cli_value(options, n_opts, "categories");
    cfg->output = cli_value(options, n_opts, "output");
    cfg->draw_dir = cli_value(options, n_opts, "draw");
    cfg->blob = cli_value(options, n_opts, "blob");
    if (cfg->output && !cfg->output[0])
        return cli_usage_error(&cli_detect, "--output needs a file name");
    if (cfg->draw_dir && (rc = cli_draw_dir(&cli_detect, cfg->draw_dir)))
        return rc;
    return 0;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The annotation file's image for an IMAGE argument: the one whose file_name the path ends with
 * (at a '/'), else the one whose file_name has the same base name; two candidates are an error. */
static mtl_status match_image(const mtl_coco *gt, const char *path, int64_t *id, mtl_error *err)
{
    const size_t len = strlen(path);
    for (int pass = 0; pass < 2; pass++) {
        int64_t found = -1, n_found = 0;
        for (int64_t i = 0; i < gt->n_images; i++) {
            const char *name = gt->images[i].file_name;
            if (!name)
                continue;
            size_t n = strlen(name);
            int hit;
            if (pass == 0)
                hit = n <= len && strcmp(path + len - n, name) == 0 && (n == len || path[len - n - 1] == '/');
            else
                hit = strcmp(base_name(path), base_name(name)) == 0;
            if (hit) {
                found = found < 0 ? i : found;
                n_found++;
            }
        }
        if (n_found > 1)
            return mtl_fail(err, MTL_ERR_ARGUMENT, "image '%s' matches %lld images of '%s' by %s; give a longer path",
                            path, (long long)n_found, gt->path, pass == 0 ? "file_name" : "base name");
        if (found >= 0) {
            *id = gt->images[found].id;
            return MTL_OK;
        }
    }
    return mtl_fail(err, MTL_ERR_NOT_FOUND, "image '%s' is not among the images of '%s' (matched by file_name)", path,
                    gt->path);
}

/* The detections blob: --blob, else the top of the (first) DetectionOutput layer. */
static mtl_status find_detections(const mtl_net *net, const detect_config *cfg, mtl_tensor **out, mtl_error *err)
{
    if (cfg->blob) {
        if (!(*out = mtl_net_blob(net, cfg->blob)))
            return mtl_fail(err, MTL_ERR_NOT_FOUND, "--blob: net '%s' has no blob '%s'", cfg->model, cfg->blob);
        return MTL_OK;
    }
    for (int i = 0; i < net->n_layers; i++)
        if (strcmp(net->layers[i]->ops->type, "DetectionOutput") == 0 && net->layers[i]->n_tops > 0) {
            *out = net->layers[i]->tops[0];
            return MTL_OK;
        }
    return mtl_fail(err, MTL_ERR_CONFIG,
                    "net '%s' has no DetectionOutput layer; give the blob holding the detections with --blob",
                    cfg->model);
}

/* The net's im_info input, when it has one. */
static mtl_tensor *find_im_info(const mtl_net *net)
{
    for (int k = 0; k < net->n_inputs; k++)
        if (strcmp(net->blobs[net->input_blobs[k]]->name, "im_info") == 0)
            return net->blobs[net->input_blobs[k]];
    return NULL;
}

/* A number for JSON rounded to `digits` significant digits, so 0.912f prints 0.912. */
static double rounded(double v, int digits)
{
    char buf[40];
    snprintf(buf, sizeof(buf), "%.*g", digits, v);
    return strtod(buf, NULL);
}

/* A colour per class, far apart for neighbouring class numbers. */
static const uint8_t palette[12][3] = {{230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},
                                       {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230},
                                       {210, 245, 60}, {250, 190, 212}, {0, 128, 128}, {170, 110, 40}};

/* Draws the image with the detections rows[0..n) (x1 y1 x2 y2 in the file's pixels, score, class). */
static mtl_status draw_detections(const detect_config *cfg, const mtl_coco *gt, const detect_image *im, int index,
                                  const float *rows, int n, mtl_error *err)
{
    mtl_image img = {0};
    MTL_TRY(mtl_image_load(im->path, 3, &img, err));
    const int side = img.width > img.height ? img.width : img.height;
    const int f = side >= CLI_DRAW_MIN_SIDE ? 1 : (CLI_DRAW_MIN_SIDE + side - 1) / side;
    cli_canvas c = {.width = img.width * f, .height = img.height * f};
    if (!(c.rgb = malloc((size_t)c.width * (size_t)c.height * 3))) {
        mtl_image_free(&img);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory drawing '%s'", im->path);
    }
    for (int y = 0; y < c.height; y++)
        for (int x = 0; x < c.width; x++)
            memcpy(c.rgb + ((size_t)y * (size_t)c.width + (size_t)x) * 3,
                   img.pixels + ((size_t)(y / f) * (size_t)img.width + (size_t)(x / f)) * 3, 3);
    mtl_image_free(&img);
    const int thick = c.width >= 512 || c.height >= 512 ? 3 : 2;
    /* lowest score first, so the most confident boxes and labels end up on top */
    for (int i = n - 1; i >= 0; i--) {
        const float *r = rows + (size_t)i * 6;
        int cls = (int)r[5];
        const uint8_t *color = palette[(cls - 1 + 12) % 12];
        int x0 = (int)floorf(r[0] * f), y0 = (int)floorf(r[1] * f);
        int x1 = (int)ceilf(r[2] * f) - 1, y1 = (int)ceilf(r[3] * f) - 1;
        cli_draw_rect(&c, x0, y0, x1 < x0 ? x0 : x1, y1 < y0 ? y0 : y1, thick, color);
        char label[96];
        if (gt && cls - 1 < gt->n_categories)
            snprintf(label, sizeof(label), "%.60s %.2f", gt->categories[cls - 1].name, (double)r[4]);
        else
            snprintf(label, sizeof(label), "%d %.2f", cls, (double)r[4]);
        /* above the box, or inside its top when the box touches the top edge */
        int lw = cli_text_width(label) + 4, lh = CLI_FONT_H + 4;
        int ly = y0 - lh >= 0 ? y0 - lh : y0;
        int lx = x0 + lw <= c.width ? x0 : c.width - lw;
        lx = lx < 0 ? 0 : lx;
        cli_fill_rect(&c, lx, ly, lx + lw - 1, ly + lh - 1, color);
        static const uint8_t black[3] = {0, 0, 0}, white[3] = {255, 255, 255};
        int bright = 299 * color[0] + 587 * color[1] + 114 * color[2] > 140000;
        cli_draw_text(&c, lx + 2, ly + 2, label, bright ? black : white);
    }
    char path[4096];
    cli_draw_path(cfg->draw_dir, index, im->path, path, sizeof(path));
    mtl_image out = {.width = c.width, .height = c.height, .channels = 3, .pixels = c.rgb};
    mtl_status st = mtl_image_write_png(path, &out, err);
    free(c.rgb);
    return st;
}

/* Runs the net on one image (already in the input blob) and appends its kept detections to
 * `results`; with --draw, draws them. */
static mtl_status detect_one(mtl_net *net, const mtl_tensor *dets, const detect_config *cfg, const mtl_coco *gt,
                             const detect_image *im, int index, int in_w, int in_h, cJSON *results, int64_t *n_kept,
                             mtl_error *err)
{
    MTL_TRY(mtl_net_forward(net, NULL, err));
    char shape[128];
    if (dets->ndim != 2 || dets->shape[1] != 7)
        return mtl_fail(err, MTL_ERR_SHAPE, "detections blob '%s' is %s; expected (D, 7) rows [batch_index, x1, y1, "
                        "x2, y2, score, class]",
                        dets->name, mtl_tensor_shape_str(dets, shape, sizeof(shape)));
    const int n = dets->shape[0];
    float *kept = malloc((size_t)(n > 0 ? n : 1) * 6 * sizeof(float));
    if (!kept)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading the detections of '%s'", im->path);
    /* input pixels to the file's: each axis by its own factor, the resize having been per axis */
    const double sx = (double)im->width / in_w, sy = (double)im->height / in_h;
    int m = 0;
    mtl_status st = MTL_OK;
    for (int i = 0; i < n && st == MTL_OK; i++) {
        const float *r = dets->data + (size_t)i * 7;
        int finite = 1;
        for (int k = 0; k < 7; k++)
            finite = finite && isfinite(r[k]);
        if (!finite || r[0] != 0.0f || r[6] != floorf(r[6]) || r[6] < 1 ||
            (gt && r[6] > (float)gt->n_categories)) {
            st = mtl_fail(err, MTL_ERR_SHAPE, "detection %d of '%s' in blob '%s' is [%g %g %g %g %g %g %g]: expected "
                          "batch index 0, finite values and a class in 1..%d",
                          i, im->path, dets->name, (double)r[0], (double)r[1], (double)r[2], (double)r[3],
                          (double)r[4], (double)r[5], (double)r[6], gt ? gt->n_categories : 1 << 20);
            break;
        }
        if (r[5] < cfg->threshold)
            continue;
        float *k = kept + (size_t)m * 6;
        k[0] = (float)(r[1] * sx);
        k[1] = (float)(r[2] * sy);
        k[2] = (float)(r[3] * sx);
        k[3] = (float)(r[4] * sy);
        k[4] = r[5];
        k[5] = r[6];
        cJSON *o = cJSON_CreateObject(), *box = cJSON_CreateArray();
        int cls = (int)r[6];
        double id = gt ? (double)gt->categories[cls - 1].id : (double)cls;
        double v[4] = {k[0], k[1], fmax(0.0, (double)k[2] - k[0]), fmax(0.0, (double)k[3] - k[1])};
        int ok = o && box && cJSON_AddNumberToObject(o, "image_id", (double)im->image_id) &&
                 cJSON_AddNumberToObject(o, "category_id", id);
        for (int j = 0; ok && j < 4; j++) {
            cJSON *x = cJSON_CreateNumber(round(v[j] * 100.0) / 100.0); /* centipixels are plenty */
            ok = x != NULL;
            if (ok)
                cJSON_AddItemToArray(box, x);
        }
        if (ok) {
            cJSON_AddItemToObject(o, "bbox", box);
            box = NULL;
            ok = cJSON_AddNumberToObject(o, "score", rounded(r[5], 6)) != NULL;
        }
        cJSON_Delete(box);
        if (!ok) {
            cJSON_Delete(o);
            st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory collecting detections");
            break;
        }
        cJSON_AddItemToArray(results, o);
        m++;
    }
    if (st == MTL_OK && cfg->draw_dir)
        st = draw_detections(cfg, gt, im, index, kept, m, err);
    free(kept);
    *n_kept += m;
    return st;
}

/* The results as a COCO results file, one detection per line. */
static mtl_status write_results(const detect_config *cfg, const cJSON *results, mtl_error *err)
{
    char tmp[4096];
    FILE *f = stdout;
    if (cfg->output) {
        snprintf(tmp, sizeof(tmp), "%s.tmp", cfg->output);
        if (!(f = fopen(tmp, "w")))
            return mtl_fail(err, MTL_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
    }
    int ok = fputs("[", f) >= 0;
    const cJSON *item;
    int first = 1;
    cJSON_ArrayForEach(item, results)
    {
        char *text = cJSON_PrintUnformatted(item);
        ok = ok && text && fprintf(f, "%s\n%s", first ? "" : ",", text) >= 0;
        cJSON_free(text);
        first = 0;
    }
    ok = ok && fputs("]\n", f) >= 0;
    if (!cfg->output)
        return ok && fflush(f) == 0 ? MTL_OK
                                    : mtl_fail(err, MTL_ERR_IO, "cannot write the results: %s", strerror(errno));
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, cfg->output) != 0) {
        mtl_status st = mtl_fail(err, MTL_ERR_IO, "cannot write '%s': %s", cfg->output, strerror(errno));
        remove(tmp);
        return st;
    }
    return MTL_OK;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int detect(const detect_config *cfg, const char **paths, int n_images)
{
    mtl_error err = {0};
    mtl_coco gt = {0};
    detect_image *images = calloc((size_t)n_images, sizeof(*images));
    cJSON *results = cJSON_CreateArray();
    mtl_net *net = NULL;
    mtl_status st = images && results ? MTL_OK : mtl_fail(&err, MTL_ERR_NOMEM, "out of memory");
    /* the annotation file first: a bad one or an unknown image fails before any work */
    if (st == MTL_OK && cfg->categories)
        st = mtl_coco_read(cfg->categories, 0, &gt, &err);
    for (int i = 0; st == MTL_OK && i < n_images; i++) {
        images[i].path = paths[i];
        images[i].image_id = i;
        if (cfg->categories)
            st = match_image(&gt, paths[i], &images[i].image_id, &err);
    }
    mtl_net_options opts = {.phase = MTL_PHASE_TEST, .seed = 1701};
    if (st == MTL_OK)
        st = mtl_net_from_file(cfg->model, &opts, &net, &err);
    mtl_tensor *input = NULL, *dets = NULL, *info = NULL;
    if (st == MTL_OK)
        st = cli_find_image_input(net, cfg->model, "detect", &input, &err);
    if (st == MTL_OK)
        st = find_detections(net, cfg, &dets, &err);
    if (st == MTL_OK)
        st = cli_load_weights(net, cfg->weights, &err);
    int rc = st == MTL_OK ? cli_pixels_check(&cli_detect, &cfg->pixels, input) : CLI_OK;
    const int channels = input ? input->shape[1] : 0, height = input ? input->shape[2] : 0,
              width = input ? input->shape[3] : 0;
    if (st == MTL_OK && rc == CLI_OK) {
        st = mtl_tensor_reshape(input, 4, (int[]){1, channels, height, width}, &err);
        if (st == MTL_OK && (info = find_im_info(net)))
            st = mtl_tensor_reshape(info, 2, (int[]){1, 3}, &err);
        if (st == MTL_OK)
            st = mtl_net_reshape(net, &err);
    }
    int64_t n_kept = 0;
    const double start = now_seconds();
    for (int i = 0; st == MTL_OK && rc == CLI_OK && i < n_images; i++) {
        detect_image *im = &images[i];
        st = cli_load_image(im->path, &cfg->pixels, channels, height, width, input->data, &im->width, &im->height,
                            &err);
        if (st == MTL_OK && info) {
            /* the resize factor; one number, so the mean of the two axes' when they differ */
            info->data[0] = (float)height;
            info->data[1] = (float)width;
            info->data[2] = (float)sqrt((double)height / im->height * ((double)width / im->width));
        }
        if (st == MTL_OK)
            st = detect_one(net, dets, cfg, cfg->categories ? &gt : NULL, im, i, width, height, results, &n_kept, &err);
    }
    const double seconds = now_seconds() - start;
    if (st == MTL_OK && rc == CLI_OK)
        st = write_results(cfg, results, &err);
    if (st == MTL_OK && rc == CLI_OK)
        fprintf(stderr, "detect: %d images, %lld detections scoring >= %g, %.2f s (%.1f images/s)\n", n_images,
                (long long)n_kept, (double)cfg->threshold, seconds, seconds > 0 ? n_images / seconds : 0.0);
    mtl_net_free(net);
    cJSON_Delete(results);
    free(images);
    mtl_coco_free(&gt);
    if (rc != CLI_OK)
        return rc;
    return st == MTL_OK ? CLI_OK : cli_fail(&err);
}

static int run_detect(int argc, char **argv)
{
    detect_config cfg = {.threshold = 0.5f, .pixels = CLI_PIXELS_DEFAULT};
    const char **images = NULL;
    int n_images = 0;
    int rc = parse_arguments(argc, argv, &cfg, &images, &n_images);
    if (rc == 0)
        rc = detect(&cfg, images, n_images);
    else if (rc < 0)
        rc = CLI_OK;
    free(images);
    return rc;
}

const cli_command cli_detect = {"detect", "run a detection net on image files, write COCO results (and drawings)",
                                detect_usage, run_detect};
