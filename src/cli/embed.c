/* mtl embed: runs a trained net over images (a list file or an LMDB) and writes one embedding per
 * image, the values of a chosen blob, with the image's label and name, in the MTLEMB1 format that
 * `mtl verify` reads (the layout is in the usage text below). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/file.h"
#include "core/net.h"
#include "core/snapshot.h"
#include "core/solver.h"
#include "data/db.h"
#include "data/image.h"
#include "mtl/mtl.h"

static const char embed_usage[] =
    "usage: mtl embed --model NET.prototxt [--weights SNAPSHOT] --blob FEATURE --out FILE\n"
    "                 (--list LIST --root DIR | --db LMDB) [--input NAME] [--scale S] [--mean M]\n"
    "                 [--batch N] [--threads T]\n"
    "\n"
    "Runs the TEST phase of a deploy-style net over images and writes, for each image, the values of\n"
    "blob FEATURE (flattened per sample: D values), the image's label and its name. The net takes\n"
    "the images through an Input blob of shape N x C x H x W ('data' unless --input names another);\n"
    "every parameter of the net must be found in the snapshot (weights are matched by layer name,\n"
    "so a deploy net that repeats the training net's layer names takes a training snapshot); only a\n"
    "net without parameters (raw pixels through Flatten, say) runs without --weights.\n"
    "\n"
    "Images come from one of:\n"
    "  --list LIST   lines 'path label ...' as for 'mtl convert' (paths relative to --root DIR, no\n"
    "                spaces); the first label is kept ('-' or none: no label); the name is the path\n"
    "                as written in LIST\n"
    "  --db LMDB     a database written by 'mtl convert': each record's first label; the name is\n"
    "                the record index (0, 1, ...)\n"
    "Each image is decoded to C channels and resized (bilinear) to W x H when its size differs;\n"
    "pixels enter the net as (pixel - M) * S, as Caffe's transform_param mean_value and scale do:\n"
    "  --scale S     default 1; give the training net's value (0.00390625 for 1/256)\n"
    "  --mean M      default 0\n"
    "  --batch N     images per forward pass (default 64)\n"
    "  --threads T   threads for the layers (default: all cores)\n"
    "\n"
    "FILE (little-endian; written whole under FILE.tmp, then renamed into place):\n"
    "  8 bytes  magic \"MTLEMB1\\0\"\n"
    "  u32 n    u32 dim\n"
    "  f32      embeddings[n][dim]    row i is the i-th image of the list or database\n"
    "  f32      labels[n]             NaN where an image has no label\n"
    "  n times  u32 length, then that many bytes of the image's name (no terminator)\n"
    "numpy reads the embeddings with numpy.fromfile(FILE, '<f4', n * dim, offset=16).\n";

static const char embed_magic[8] = {'M', 'T', 'L', 'E', 'M', 'B', '1', '\0'};

/* The images to embed: a list file's entries or an LMDB's records. */
typedef struct embed_source {
    const char *name;   /* the list or database path, for messages */
    const char *root;   /* list: directory the paths are relative to */
    char *text;         /* list: the file's contents; paths point into it */
    int64_t n;
    char **paths;       /* list: [n] */
    int *lines;         /* list: [n] line numbers */
    float *labels;      /* list: [n] */
    mtl_db *db;
} embed_source;

static void source_free(embed_source *s)
{
    free(s->text);
    free(s->paths);
    free(s->lines);
    free(s->labels);
    mtl_db_close(s->db);
}

static mtl_status read_text(const char *path, char **out, mtl_error *err)
{
    return mtl_read_file(path, NULL, 0, out, NULL, err);
}

/* Parses a list file: per non-blank line a path and optionally labels, the first of which is kept. */
static mtl_status load_list(embed_source *s, const char *list, const char *root, mtl_error *err)
{
    s->name = list;
    s->root = root;
    MTL_TRY(read_text(list, &s->text, err));
    int64_t cap = 1;
    for (const char *c = s->text; *c; c++)
        cap += *c == '\n';
    s->paths = malloc((size_t)cap * sizeof(*s->paths));
    s->lines = malloc((size_t)cap * sizeof(*s->lines));
    s->labels = malloc((size_t)cap * sizeof(*s->labels));
    if (!s->paths || !s->lines || !s->labels)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", list);
    char *line = s->text;
    for (int line_no = 1; line; line_no++) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *save = NULL, *path = strtok_r(line, " \t\r", &save), *label = strtok_r(NULL, " \t\r", &save);
        line = next;
        if (!path)
            continue; /* blank lines are allowed */
        float value = NAN;
        if (label && strcmp(label, "-") != 0) {
            char *end;
            value = strtof(label, &end);
            if (*end != '\0' || !isfinite(value))
                return mtl_fail(err, MTL_ERR_PARSE, "%s:%d: label '%s' is not a number ('-' marks a missing label)",
                                list, line_no, label);
        }
        s->paths[s->n] = path;
        s->lines[s->n] = line_no;
        s->labels[s->n] = value;
        s->n++;
    }
    if (s->n == 0)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "'%s' lists no images", list);
    return MTL_OK;
}

static mtl_status open_db(embed_source *s, const char *path, mtl_error *err)
{
    s->name = path;
    MTL_TRY(mtl_db_open(path, &s->db, err));
    s->n = mtl_db_meta_of(s->db)->count;
    if (s->n <= 0)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "database '%s' holds no records", path);
    return MTL_OK;
}

/* Image k of the source as an interleaved image with `channels` channels, and its label. */
static mtl_status source_image(const embed_source *s, int64_t k, int channels, mtl_image *img, float *label,
                               mtl_error *err)
{
    if (!s->db) {
        *label = s->labels[k];
        const char *path = s->paths[k];
        const char *root = path[0] == '/' || !s->root ? "" : s->root;
        size_t size = strlen(root) + strlen(path) + 2;
        char *full = malloc(size);
        if (!full)
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        snprintf(full, size, "%s%s%s", root, root[0] ? "/" : "", path);
        mtl_status st = mtl_image_load(full, channels, img, err);
        free(full);
        if (st != MTL_OK)
            mtl_error_prefix(err, "%s:%d: ", s->name, s->lines[k]);
        return st;
    }
    mtl_record r;
    MTL_TRY(mtl_db_get(s->db, k, &r, err));
    *label = r.n_labels > 0 ? mtl_record_label(&r, 0) : NAN;
    char what[64];
    snprintf(what, sizeof(what), "record %lld", (long long)k);
    if (r.flags & MTL_RECORD_ENCODED)
        return mtl_image_decode(r.data, r.n_bytes, channels, what, img, err);
    if (r.channels != channels)
        return mtl_fail(err, MTL_ERR_SHAPE, "%s of '%s' has %d channel%s, the net's input takes %d (convert the "
                        "database with --gray or --color to match)", what, s->name, r.channels,
                        r.channels == 1 ? "" : "s", channels);
    size_t plane = (size_t)r.height * (size_t)r.width;
    if (r.n_bytes != plane * (size_t)r.channels)
        return mtl_fail(err, MTL_ERR_CORRUPT, "%s of '%s' holds %zu pixel bytes for %dx%dx%d", what, s->name,
                        r.n_bytes, r.channels, r.height, r.width);
    img->width = r.width;
    img->height = r.height;
    img->channels = channels;
    img->pixels = malloc(plane * (size_t)channels + 1);
    if (!img->pixels)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int c = 0; c < channels; c++)
        for (size_t p = 0; p < plane; p++)
            img->pixels[p * (size_t)channels + (size_t)c] = r.data[(size_t)c * plane + p];
    return MTL_OK;
}

/* Writes image k of the source into dst, a C x H x W slot of the input blob. */
static mtl_status fill_input(const embed_source *s, int64_t k, int channels, int height, int width, float mean,
                             float scale, float *dst, float *label, mtl_error *err)
{
    mtl_image img = {0}, sized = {0};
    MTL_TRY(source_image(s, k, channels, &img, label, err));
    const mtl_image *use = &img;
    mtl_status st = MTL_OK;
    if (img.width != width || img.height != height) {
        st = mtl_image_resize(&img, width, height, &sized, err);
        use = &sized;
    }
    if (st == MTL_OK) {
        size_t plane = (size_t)height * (size_t)width;
        for (int c = 0; c < channels; c++)
            for (size_t p = 0; p < plane; p++)
                dst[(size_t)c * plane + p] = ((float)use->pixels[p * (size_t)channels + (size_t)c] - mean) * scale;
    }
    mtl_image_free(&img);
    mtl_image_free(&sized);
    return st;
}

/* Loads every parameter of the net from the snapshot; a parameter it lacks (or has with another shape)
 * would keep its random initial values and give meaningless embeddings, so that is an error. */
static mtl_status load_all_weights(mtl_net *net, const char *path, mtl_error *err)
{
    mtl_snapshot *snap = NULL;
    MTL_TRY(mtl_snapshot_read(path, &snap, err));
    char *report = NULL;
    size_t report_size = 0;
    FILE *f = open_memstream(&report, &report_size);
    mtl_snapshot_match match = {0};
    mtl_status st = mtl_snapshot_load_weights(snap, net, f, &match, err);
    if (f)
        fclose(f);
    if (st == MTL_OK && (match.missing || match.mismatched)) {
        const char *line = report ? strstr(report, "  missing") : NULL;
        if (!line && report)
            line = strstr(report, "  mismatch");
        int len = line ? (int)strcspn(line + 2, "\n") : 0;
        st = mtl_fail(err, MTL_ERR_NOT_FOUND,
                      "'%s' lacks %d of the net's parameters and has %d with another shape (first: %.*s); "
                      "embeddings need every parameter trained",
                      path, match.missing, match.mismatched, len, line ? line + 2 : "");
    }
    free(report);
    mtl_snapshot_free(snap);
    return st;
}

static mtl_status write_u32(FILE *f, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return fwrite(b, 1, 4, f) == 4 ? MTL_OK : MTL_ERR_IO;
}

/* float32 values in little-endian order (the host's on every machine mtl builds on, checked here). */
static mtl_status write_floats(FILE *f, const float *v, size_t n)
{
    _Static_assert(sizeof(float) == 4, "float32");
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1)
        return MTL_ERR_UNSUPPORTED;
    return fwrite(v, sizeof(float), n, f) == n ? MTL_OK : MTL_ERR_IO;
}

typedef struct embed_config {
    const char *model, *input, *blob;
    float scale, mean;
    int batch;
} embed_config;

/* Runs the net over every image of the source and streams the embeddings to f (header included);
 * labels go to labels[n]. */
static mtl_status embed_all(mtl_net *net, const embed_source *src, const embed_config *cfg, FILE *f, float *labels,
                            int64_t *dim_out, mtl_error *err)
{
    int in = mtl_net_blob_index(net, cfg->input), is_input = 0;
    for (int i = 0; in >= 0 && i < net->n_inputs; i++)
        is_input |= net->input_blobs[i] == in;
    if (!is_input)
        return mtl_fail(err, MTL_ERR_NOT_FOUND,
                        "'%s' has no input blob '%s': embed feeds images to a deploy-style net through an Input "
                        "layer (give its top with --input)", cfg->model, cfg->input);
    mtl_tensor *data = net->blobs[in];
    char shape[128];
    if (data->ndim != 4 || (data->shape[1] != 1 && data->shape[1] != 3) || data->shape[2] <= 0 || data->shape[3] <= 0)
        return mtl_fail(err, MTL_ERR_SHAPE, "input blob '%s' is %s; embed needs N x C x H x W images with C 1 or 3",
                        cfg->input, mtl_tensor_shape_str(data, shape, sizeof(shape)));
    mtl_tensor *feature = mtl_net_blob(net, cfg->blob);
    if (!feature)
        return mtl_fail(err, MTL_ERR_NOT_FOUND, "'%s' has no blob '%s' (--blob)", cfg->model, cfg->blob);
    const int channels = data->shape[1], height = data->shape[2], width = data->shape[3];
    const int64_t image_values = (int64_t)channels * height * width;
    int64_t dim = -1;
    for (int64_t start = 0; start < src->n; start += cfg->batch) {
        int b = (int)(src->n - start < cfg->batch ? src->n - start : cfg->batch);
        if (data->shape[0] != b) {
            int dims[4] = {b, channels, height, width};
            MTL_TRY(mtl_tensor_reshape(data, 4, dims, err));
            MTL_TRY(mtl_net_reshape(net, err));
        }
        if (feature->ndim < 1 || feature->shape[0] != b)
            return mtl_fail(err, MTL_ERR_SHAPE, "blob '%s' is %s for a batch of %d images: its first axis must be the "
                            "batch", cfg->blob, mtl_tensor_shape_str(feature, shape, sizeof(shape)), b);
        if (dim < 0) {
            dim = feature->count / b;
            if (dim <= 0 || dim > UINT32_MAX || src->n > UINT32_MAX)
                return mtl_fail(err, MTL_ERR_SHAPE, "blob '%s' is %s: %lld values per image do not make an embedding",
                                cfg->blob, mtl_tensor_shape_str(feature, shape, sizeof(shape)), (long long)dim);
            if (fwrite(embed_magic, 1, 8, f) != 8 || write_u32(f, (uint32_t)src->n) || write_u32(f, (uint32_t)dim))
                return mtl_fail(err, MTL_ERR_IO, "cannot write the embeddings");
        } else if (feature->count != (int64_t)b * dim) {
            return mtl_fail(err, MTL_ERR_SHAPE, "blob '%s' is %s for a batch of %d images but held %lld values per "
                            "image before", cfg->blob, mtl_tensor_shape_str(feature, shape, sizeof(shape)), b,
                            (long long)dim);
        }
        for (int i = 0; i < b; i++)
            MTL_TRY(fill_input(src, start + i, channels, height, width, cfg->mean, cfg->scale,
                               data->data + i * image_values, &labels[start + i], err));
        MTL_TRY(mtl_net_forward(net, NULL, err));
        for (int64_t v = 0; v < (int64_t)b * dim; v++)
            if (!isfinite(feature->data[v])) {
                int64_t k = start + v / dim;
                if (src->db)
                    return mtl_fail(err, MTL_ERR_NUMERIC, "record %lld gave a non-finite embedding value",
                                    (long long)k);
                return mtl_fail(err, MTL_ERR_NUMERIC, "%s:%d: '%s' gave a non-finite embedding value", src->name,
                                src->lines[k], src->paths[k]);
            }
        mtl_status st = write_floats(f, feature->data, (size_t)b * (size_t)dim);
        if (st != MTL_OK)
            return mtl_fail(err, st, st == MTL_ERR_IO ? "cannot write the embeddings" : "big-endian hosts are not "
                            "supported");
    }
    *dim_out = dim;
    return MTL_OK;
}

/* The labels and names that follow the embeddings. */
static mtl_status write_tail(FILE *f, const embed_source *src, const float *labels, mtl_error *err)
{
    if (write_floats(f, labels, (size_t)src->n) != MTL_OK)
        return mtl_fail(err, MTL_ERR_IO, "cannot write the labels");
    for (int64_t k = 0; k < src->n; k++) {
        char index[32];
        const char *name = src->db ? index : src->paths[k];
        if (src->db)
            snprintf(index, sizeof(index), "%lld", (long long)k);
        size_t len = strlen(name);
        if (write_u32(f, (uint32_t)len) != MTL_OK || fwrite(name, 1, len, f) != len)
            return mtl_fail(err, MTL_ERR_IO, "cannot write the names");
    }
    return MTL_OK;
}

static int run_embed(int argc, char **argv)
{
    cli_option options[] = {{"model", 1, NULL}, {"weights", 1, NULL}, {"blob", 1, NULL},  {"out", 1, NULL},
                            {"list", 1, NULL},  {"root", 1, NULL},    {"db", 1, NULL},    {"input", 1, NULL},
                            {"scale", 1, NULL}, {"mean", 1, NULL},    {"batch", 1, NULL}, {"threads", 1, NULL}};
    const int n_opts = (int)(sizeof(options) / sizeof(options[0]));
    const char *positional[1];
    int n_pos;
    int rc = cli_parse(&cli_embed, argc, argv, options, n_opts, positional, 0, &n_pos);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    const char *model = cli_value(options, n_opts, "model"), *weights = cli_value(options, n_opts, "weights");
    const char *out = cli_value(options, n_opts, "out"), *list = cli_value(options, n_opts, "list");
    const char *root = cli_value(options, n_opts, "root"), *db = cli_value(options, n_opts, "db");
    const char *text;
    embed_config cfg = {
        .model = model, .input = "data", .blob = cli_value(options, n_opts, "blob"), .scale = 1.0f, .batch = 64};
    if (!model || !cfg.blob || !out)
        return cli_usage_error(&cli_embed, "--model, --blob and --out are required");
    if (!list == !db)
        return cli_usage_error(&cli_embed, "give the images with --list (and --root) or with --db, one of them");
    if (db && root)
        return cli_usage_error(&cli_embed, "--root goes with --list; a database holds its images");
    if ((text = cli_value(options, n_opts, "input")))
        cfg.input = text;
    const char *names[2] = {"scale", "mean"};
    float *values[2] = {&cfg.scale, &cfg.mean};
    for (int i = 0; i < 2; i++) {
        if (!(text = cli_value(options, n_opts, names[i])))
            continue;
        char *end;
        *values[i] = strtof(text, &end);
        if (*text == '\0' || *end != '\0' || !isfinite(*values[i]))
            return cli_usage_error(&cli_embed, "--%s needs a number, not '%s'", names[i], text);
    }
    long value;
    if ((text = cli_value(options, n_opts, "batch"))) {
        if ((value = cli_positive(&cli_embed, "batch", text)) < 0)
            return CLI_USAGE;
        if (value > 65536)
            return cli_usage_error(&cli_embed, "--batch %ld is more than 65536 images per pass", value);
        cfg.batch = (int)value;
    }
    if ((text = cli_value(options, n_opts, "threads"))) {
        if ((value = cli_positive(&cli_embed, "threads", text)) < 0)
            return CLI_USAGE;
        mtl_set_num_threads((int)value);
    }

    mtl_error err = {0};
    embed_source src = {0};
    mtl_net *net = NULL;
    float *labels = NULL;
    FILE *f = NULL;
    size_t tmp_size = strlen(out) + 5;
    char *tmp = malloc(tmp_size);
    mtl_status st = tmp ? MTL_OK : mtl_fail(&err, MTL_ERR_NOMEM, "out of memory");
    if (st == MTL_OK)
        st = list ? load_list(&src, list, root, &err) : open_db(&src, db, &err);
    mtl_net_options opts = {.phase = MTL_PHASE_TEST, .seed = MTL_SOLVER_DEFAULT_SEED};
    if (st == MTL_OK)
        st = mtl_net_from_file(model, &opts, &net, &err);
    if (st == MTL_OK && weights)
        st = load_all_weights(net, weights, &err);
    else if (st == MTL_OK && net->n_slots > 0)
        st = mtl_fail(&err, MTL_ERR_ARGUMENT, "'%s' has %d learnable parameters: give their values with --weights",
                      model, net->n_slots);
    if (st == MTL_OK && !(labels = malloc((size_t)src.n * sizeof(float))))
        st = mtl_fail(&err, MTL_ERR_NOMEM, "out of memory");
    if (st == MTL_OK) {
        snprintf(tmp, tmp_size, "%s.tmp", out);
        if (!(f = fopen(tmp, "wb")))
            st = mtl_fail(&err, MTL_ERR_IO, "cannot write '%s'", tmp);
    }
    int64_t dim = 0;
    if (st == MTL_OK)
        st = embed_all(net, &src, &cfg, f, labels, &dim, &err);
    if (st == MTL_OK)
        st = write_tail(f, &src, labels, &err);
    if (f && fclose(f) != 0 && st == MTL_OK)
        st = mtl_fail(&err, MTL_ERR_IO, "cannot write '%s'", tmp);
    if (st == MTL_OK && rename(tmp, out) != 0)
        st = mtl_fail(&err, MTL_ERR_IO, "cannot rename '%s' to '%s'", tmp, out);
    if (st != MTL_OK && f)
        remove(tmp);
    int64_t labelled = 0;
    for (int64_t k = 0; st == MTL_OK && k < src.n; k++)
        labelled += !isnan(labels[k]);
    if (st == MTL_OK)
        printf("embedded %lld images (%lld labelled) from '%s': blob '%s', %lld values each -> %s\n",
               (long long)src.n, (long long)labelled, src.name, cfg.blob, (long long)dim, out);
    free(labels);
    free(tmp);
    mtl_net_free(net);
    source_free(&src);
    return st == MTL_OK ? CLI_OK : cli_fail(&err);
}

const cli_command cli_embed = {"embed", "write a net's embeddings of images (a list or an LMDB) to a file",
                               embed_usage, run_embed};
