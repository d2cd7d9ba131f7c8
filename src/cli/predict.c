/* mtl predict: runs a trained net (a deploy prototxt with an Input blob) on image files and prints
 * every output per image: the top classes with their probabilities for a probability output, the
 * values for any other (regression, landmarks, embeddings); as text or as JSON lines (cJSON).
 * With --draw, also a PNG per image with the predicted landmarks as dots and the other outputs as
 * text, in a small built-in 5x7 bitmap font. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/net.h"
#include "data/image.h"
#include "draw.h"
#include "image_input.h"
#include "mtl/mtl.h"

static const char predict_usage[] =
    "usage: mtl predict --model NET.prototxt --weights SNAPSHOT [--scale S] [--mean M[,M2,M3]]\n"
    "                   [--gray | --color] [--labels OUTPUT=name0,name1,...]... [--top K] [--json]\n"
    "                   [--batch N] [--threads T] [--draw DIR [--landmarks OUTPUT] [--normalized]]\n"
    "                   IMAGE...\n"
    "\n"
    "Runs the TEST phase of NET, a deploy net whose input blob ('data', else the first input blob)\n"
    "is 1xCxHxW, with the weights of SNAPSHOT (every parameter of the net must be found in it by\n"
    "layer name), on each image, and prints every output blob (a blob no layer reads) per image.\n"
    "An output whose values for an image are non-negative and sum to 1 (a Softmax) prints its top\n"
    "classes with their probabilities; any other output prints its values.\n"
    "\n"
    "Images are decoded to C channels (1: grey, 3: RGB), resized to HxW when their size differs,\n"
    "and fed as (pixel - mean) * scale, Caffe's order. Give the transform_param the weights were\n"
    "trained with: the MultiFashion example trains with scale 0.00390625, so predict with\n"
    "--scale 0.00390625.\n"
    "  --scale S         multiply each pixel after subtracting the mean (default 1)\n"
    "  --mean M[,M2,M3]  subtract from each pixel: one value for every channel or one per channel (0)\n"
    "  --gray            decode images to grey (repeated over the channels of a 3-channel input)\n"
    "  --color           decode images to RGB (the input must have 3 channels)\n"
    "  --labels O=a,b,c  class names of output O by class index; repeat for each output\n"
    "  --top K           classes printed per probability output (default 1)\n"
    "  --json            one JSON object per image and line:\n"
    "                    {\"image\": P, \"outputs\": {O: {\"class\": 3, \"name\": \"Dress\", \"prob\": 0.91,\n"
    "                    \"top\": [[3, 0.91], ...]}, O2: {\"values\": [...]}}}\n"
    "  --batch N         images per forward pass (default 64)\n"
    "  --threads T       threads for the layers (default: all cores)\n"
    "  --draw DIR        also write DIR/NNNNN_NAME.png per image (NNNNN: its place among the IMAGE\n"
    "                    arguments, from 00000): the image as the net saw it, enlarged, with the\n"
    "                    landmarks as numbered dots and every other output's prediction as text\n"
    "  --landmarks O     the output holding landmarks x0 y0 x1 y1 ..., in pixels of the net's input\n"
    "  --normalized      ... in [-1, 1] over the input instead (transform_param.landmarks.normalize)\n"
    "\n"
    "Text lines read: IMAGE  prob_left: 3 (Dress) 0.912  prob_right: 7 (Sneaker) 0.881\n"
    "(with --top K, a probability output lists K 'class (name) prob' separated by commas; a values\n"
    "output prints [v1 v2 ...]). Exit status: 1 when the net, the weights or an image cannot be used\n"
    "(the first bad image stops the run, after the results of the images before it), 2 on bad\n"
    "arguments.\n";

enum { PREDICT_DEFAULT_BATCH = 64 };

/* Class names given with --labels for one output blob. */
typedef struct label_set {
    const char *output; /* points into the argument */
    size_t output_len;
    char *buffer;       /* the names, NUL-separated */
    int n_names;
    char **names;
} label_set;

typedef struct predict_config {
    const char *model, *weights;
    cli_pixels pixels;
    int top_k, json, batch;
    int n_labels;
    label_set *labels;
    const char *draw_dir;       /* --draw; NULL: none */
    const char *landmarks;      /* --landmarks output; NULL: none */
    int normalized;
} predict_config;

static void labels_free(label_set *labels, int n)
{
    for (int i = 0; i < n; i++) {
        free(labels[i].buffer);
        free(labels[i].names);
    }
    free(labels);
}

/* Splits "OUTPUT=a,b,c" into an output name and its class names. */
static int parse_labels(const char *text, label_set *set)
{
    const char *eq = strchr(text, '=');
    if (!eq || eq == text || !eq[1])
        return cli_usage_error(&cli_predict, "--labels needs OUTPUT=name0,name1,..., not '%s'", text);
    set->output = text;
    set->output_len = (size_t)(eq - text);
    if (!(set->buffer = mtl_strdup(eq + 1)))
        return cli_usage_error(&cli_predict, "out of memory");
    int n = 1;
    for (const char *c = set->buffer; *c; c++)
        n += *c == ',';
    if (!(set->names = calloc((size_t)n, sizeof(char *))))
        return cli_usage_error(&cli_predict, "out of memory");
    char *p = set->buffer;
    for (int i = 0; i < n; i++) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (!*p)
            return cli_usage_error(&cli_predict, "--labels '%s': class name %d is empty", text, i);
        set->names[i] = p;
        p = comma ? comma + 1 : p + strlen(p);
    }
    set->n_names = n;
    return 0;
}

/* Takes the repeatable --labels out of argv (cli_parse keeps one value per option); the rest goes
 * to rest[] in order. Options in `options` that take a value keep their value with them, so a
 * value that happens to read "--labels" is not mistaken for the option. */
static int extract_labels(int argc, char **argv, const cli_option *options, int n_options, char **rest,
                          int *n_rest, predict_config *cfg)
{
    *n_rest = 0;
    rest[(*n_rest)++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = NULL;
        if (strcmp(arg, "--labels") == 0) {
            if (i + 1 >= argc)
                return cli_usage_error(&cli_predict, "option '--labels' needs a value");
            value = argv[++i];
        } else if (strncmp(arg, "--labels=", 9) == 0) {
            value = arg + 9;
        }
        if (value) {
            label_set *grown = realloc(cfg->labels, (size_t)(cfg->n_labels + 1) * sizeof(*grown));
            if (!grown)
                return cli_usage_error(&cli_predict, "out of memory");
            cfg->labels = grown;
            memset(&grown[cfg->n_labels], 0, sizeof(*grown));
            int rc = parse_labels(value, &grown[cfg->n_labels++]);
            if (rc)
                return rc;
            for (int k = 0; k < cfg->n_labels - 1; k++)
                if (cfg->labels[k].output_len == grown[cfg->n_labels - 1].output_len &&
                    strncmp(cfg->labels[k].output, value, cfg->labels[k].output_len) == 0)
                    return cli_usage_error(&cli_predict, "--labels for output '%.*s' given twice",
                                           (int)cfg->labels[k].output_len, value);
            continue;
        }
        rest[(*n_rest)++] = argv[i];
        if (strncmp(arg, "--", 2) == 0 && !strchr(arg, '='))
            for (int k = 0; k < n_options; k++)
                if (options[k].takes_value && strcmp(arg + 2, options[k].name) == 0 && i + 1 < argc) {
                    rest[(*n_rest)++] = argv[++i];
                    break;
                }
    }
    return 0;
}

/* Reads the options; returns 0, CLI_USAGE, or -1 after --help. */
static int parse_arguments(int argc, char **argv, predict_config *cfg, const char ***images, int *n_images)
{
    cli_option options[] = {{"model", 1, NULL}, {"weights", 1, NULL}, {"scale", 1, NULL}, {"mean", 1, NULL},
                            {"gray", 0, NULL},  {"color", 0, NULL},   {"top", 1, NULL},   {"json", 0, NULL},
                            {"batch", 1, NULL}, {"threads", 1, NULL}, {"draw", 1, NULL}, {"landmarks", 1, NULL},
                            {"normalized", 0, NULL}};
    const int n_opts = (int)(sizeof(options) / sizeof(options[0]));
    char **rest = malloc((size_t)argc * sizeof(char *));
    *images = malloc((size_t)argc * sizeof(char *));
    if (!rest || !*images) {
        free(rest);
        return cli_usage_error(&cli_predict, "out of memory");
    }
    int n_rest;
    int rc = extract_labels(argc, argv, options, n_opts, rest, &n_rest, cfg);
    if (!rc)
        rc = cli_parse(&cli_predict, n_rest, rest, options, n_opts, *images, argc, n_images);
    free(rest);
    if (rc)
        return rc;

    cfg->model = cli_value(options, n_opts, "model");
    cfg->weights = cli_value(options, n_opts, "weights");
    if (!cfg->model || !cfg->weights)
        return cli_usage_error(&cli_predict, "--model and --weights are required");
    if (*n_images == 0)
        return cli_usage_error(&cli_predict, "no IMAGE given");
    if ((rc = cli_pixels_parse(&cli_predict, options, n_opts, &cfg->pixels)))
        return rc;
    const char *text;
    cfg->json = cli_value(options, n_opts, "json") != NULL;
    long v;
    if ((text = cli_value(options, n_opts, "top"))) {
        if ((v = cli_positive(&cli_predict, "top", text)) < 0)
            return CLI_USAGE;
        cfg->top_k = v > 1000000 ? 1000000 : (int)v;
    }
    if ((text = cli_value(options, n_opts, "batch"))) {
        if ((v = cli_positive(&cli_predict, "batch", text)) < 0)
            return CLI_USAGE;
        cfg->batch = v > 65536 ? 65536 : (int)v;
    }
    if ((text = cli_value(options, n_opts, "threads"))) {
        if ((v = cli_positive(&cli_predict, "threads", text)) < 0)
            return CLI_USAGE;
        mtl_set_num_threads((int)v);
    }
    cfg->draw_dir = cli_value(options, n_opts, "draw");
    cfg->landmarks = cli_value(options, n_opts, "landmarks");
    cfg->normalized = cli_value(options, n_opts, "normalized") != NULL;
    if ((cfg->landmarks || cfg->normalized) && !cfg->draw_dir)
        return cli_usage_error(&cli_predict, "--landmarks and --normalized go with --draw DIR");
    if (cfg->normalized && !cfg->landmarks)
        return cli_usage_error(&cli_predict, "--normalized needs --landmarks OUTPUT");
    if (cfg->draw_dir && !cfg->draw_dir[0])
        return cli_usage_error(&cli_predict, "--draw needs a directory");
    return 0;
}

static int is_input(const mtl_net *net, int blob)
{
    for (int k = 0; k < net->n_inputs; k++)
        if (net->input_blobs[k] == blob)
            return 1;
    return 0;
}

static const label_set *labels_for(const predict_config *cfg, const char *output)
{
    for (int i = 0; i < cfg->n_labels; i++)
        if (strlen(output) == cfg->labels[i].output_len &&
            strncmp(output, cfg->labels[i].output, cfg->labels[i].output_len) == 0)
            return &cfg->labels[i];
    return NULL;
}

/* Every --labels names an output with as many values per image as it gives names. Needs the
 * output shapes, so runs after the net was reshaped to the first batch. */
static int check_labels(const predict_config *cfg, const mtl_net *net, int batch)
{
    for (int i = 0; i < cfg->n_labels; i++) {
        const label_set *set = &cfg->labels[i];
        const mtl_tensor *found = NULL;
        for (int k = 0; k < net->n_outputs; k++) {
            const mtl_tensor *t = net->blobs[net->output_blobs[k]];
            if (!is_input(net, net->output_blobs[k]) && strlen(t->name) == set->output_len &&
                strncmp(t->name, set->output, set->output_len) == 0)
                found = t;
        }
        if (!found) {
            char names[1024] = "";
            size_t used = 0;
            for (int k = 0; k < net->n_outputs && used < sizeof(names); k++)
                if (!is_input(net, net->output_blobs[k]))
                    used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s", used ? ", " : "",
                                             net->blobs[net->output_blobs[k]]->name);
            return cli_usage_error(&cli_predict, "--labels names output '%.*s', but the net's outputs are: %s",
                                   (int)set->output_len, set->output, names[0] ? names : "(none)");
        }
        int64_t per_image = found->count / (batch > 0 ? batch : 1);
        if (per_image != set->n_names)
            return cli_usage_error(&cli_predict, "--labels gives %d names for output '%s', which has %lld values "
                                   "per image",
                                   set->n_names, found->name, (long long)per_image);
    }
    return 0;
}

/* A probability vector: at least two values, none negative, summing to 1 (within float rounding
 * of a Softmax over thousands of classes). */
static int is_probability(const float *v, int64_t n)
{
    if (n < 2)
        return 0;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!(v[i] >= 0.0f))
            return 0;
        sum += v[i];
    }
    return fabs(sum - 1.0) < 1e-3;
}

/* The k largest values' indices, largest first (ties: lower index first). */
static int top_classes(const float *v, int64_t n, int k, int64_t *idx)
{
    if (k > n)
        k = (int)n;
    for (int j = 0; j < k; j++) {
        int64_t best = -1;
        for (int64_t i = 0; i < n; i++) {
            int taken = 0;
            for (int p = 0; p < j && !taken; p++)
                taken = idx[p] == i;
            if (!taken && (best < 0 || v[i] > v[best]))
                best = i;
        }
        idx[j] = best;
    }
    return k;
}

/* A float for JSON with 6 significant digits, so 0.912f prints 0.912, not 0.91200000047683716. */
static double json_number(float v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%.6g", (double)v);
    return strtod(buf, NULL);
}

static void print_text(const char *image, const predict_config *cfg, const mtl_net *net, int sample,
                       int64_t *idx)
{
    fputs(image, stdout);
    for (int k = 0; k < net->n_outputs; k++) {
        if (is_input(net, net->output_blobs[k]))
            continue;
        const mtl_tensor *t = net->blobs[net->output_blobs[k]];
        int64_t n = t->count / t->shape[0];
        const float *v = t->data + (size_t)sample * (size_t)n;
        printf("  %s:", t->name);
        if (is_probability(v, n)) {
            const label_set *names = labels_for(cfg, t->name);
            int m = top_classes(v, n, cfg->top_k, idx);
            for (int j = 0; j < m; j++) {
                printf("%s %lld", j ? "," : "", (long long)idx[j]);
                if (names && idx[j] < names->n_names)
                    printf(" (%s)", names->names[idx[j]]);
                printf(" %.3f", (double)v[idx[j]]);
            }
        } else {
            printf(" [");
            for (int64_t i = 0; i < n; i++)
                printf("%s%g", i ? " " : "", (double)v[i]);
            printf("]");
        }
    }
    putchar('\n');
}

static mtl_status print_json(const char *image, const predict_config *cfg, const mtl_net *net, int sample,
                             int64_t *idx, mtl_error *err)
{
    cJSON *root = cJSON_CreateObject(), *outputs = cJSON_CreateObject();
    int ok = root && outputs && cJSON_AddStringToObject(root, "image", image);
    if (ok)
        cJSON_AddItemToObject(root, "outputs", outputs);
    else
        cJSON_Delete(outputs);
    for (int k = 0; ok && k < net->n_outputs; k++) {
        if (is_input(net, net->output_blobs[k]))
            continue;
        const mtl_tensor *t = net->blobs[net->output_blobs[k]];
        int64_t n = t->count / t->shape[0];
        const float *v = t->data + (size_t)sample * (size_t)n;
        cJSON *o = cJSON_AddObjectToObject(outputs, t->name);
        ok = o != NULL;
        if (ok && is_probability(v, n)) {
            const label_set *names = labels_for(cfg, t->name);
            int m = top_classes(v, n, cfg->top_k, idx);
            ok = cJSON_AddNumberToObject(o, "class", (double)idx[0]) &&
                 (!names || idx[0] >= names->n_names || cJSON_AddStringToObject(o, "name", names->names[idx[0]])) &&
                 cJSON_AddNumberToObject(o, "prob", json_number(v[idx[0]]));
            cJSON *top = ok ? cJSON_AddArrayToObject(o, "top") : NULL;
            ok = top != NULL;
            for (int j = 0; ok && j < m; j++) {
                cJSON *pair = cJSON_CreateArray(), *c = cJSON_CreateNumber((double)idx[j]),
                      *p = cJSON_CreateNumber(json_number(v[idx[j]]));
                ok = pair && c && p;
                if (ok) {
                    cJSON_AddItemToArray(pair, c);
                    cJSON_AddItemToArray(pair, p);
                    cJSON_AddItemToArray(top, pair);
                } else {
                    cJSON_Delete(pair);
                    cJSON_Delete(c);
                    cJSON_Delete(p);
                }
            }
        } else if (ok) {
            cJSON *values = cJSON_AddArrayToObject(o, "values");
            ok = values != NULL;
            for (int64_t i = 0; ok && i < n; i++) {
                cJSON *x = cJSON_CreateNumber(json_number(v[i]));
                ok = x != NULL;
                if (ok)
                    cJSON_AddItemToArray(values, x);
            }
        }
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory writing the JSON of '%s'", image);
    puts(text);
    cJSON_free(text);
    return MTL_OK;
}

/* ---- --draw ----------------------------------------------------------------------------------- */

enum { LINE_H = 10 };

/* A dot of radius r with a dark rim, so it shows on light and dark items alike. */
static void draw_dot(cli_canvas *c, double cx, double cy, int r, const uint8_t color[3])
{
    static const uint8_t rim[3] = {0, 0, 0};
    for (int dy = -r - 1; dy <= r + 1; dy++)
        for (int dx = -r - 1; dx <= r + 1; dx++) {
            double d2 = (double)dx * dx + (double)dy * dy;
            if (d2 <= (r + 1.0) * (r + 1.0))
                cli_put_pixel(c, (int)floor(cx) + dx, (int)floor(cy) + dy, d2 <= (double)r * r ? color : rim);
        }
}

/* One output's prediction as a line of text: "prob_class: 3 (Dress) 0.912", "prob_mirrored: 0.731"
 * (one value) or "name: [v1 v2 ...]" (cut to fit). */
static void output_line(const predict_config *cfg, const mtl_tensor *t, const float *v, int64_t n, int64_t *idx,
                        char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "%s:", t->name);
    if (is_probability(v, n)) {
        const label_set *names = labels_for(cfg, t->name);
        top_classes(v, n, 1, idx);
        if (used < size)
            used += (size_t)snprintf(buf + used, size - used, " %lld", (long long)idx[0]);
        if (names && idx[0] < names->n_names && used < size)
            used += (size_t)snprintf(buf + used, size - used, " (%s)", names->names[idx[0]]);
        if (used < size)
            snprintf(buf + used, size - used, " %.3f", (double)v[idx[0]]);
        return;
    }
    if (n == 1) { /* a sigmoid's probability, or one regressed value */
        if (used < size)
            snprintf(buf + used, size - used, " %.3g", (double)v[0]);
        return;
    }
    for (int64_t i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%.3g", i ? " " : " [", (double)v[i]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

static const uint8_t point_colors[8][3] = {{255, 64, 64}, {64, 224, 64},  {64, 128, 255}, {255, 224, 32},
                                           {255, 64, 255}, {32, 224, 224}, {255, 160, 32}, {255, 255, 255}};

/* Draws image `sample` of the batch: the image resized to the net's input (what the net saw),
 * enlarged by a whole factor to at least CLI_DRAW_MIN_SIDE pixels, the landmarks as dots numbered in
 * their order, and a text panel below with one line per other output. */
static mtl_status draw_image(const char *image, int index, const predict_config *cfg, const mtl_net *net,
                             int sample, int height, int width, int64_t *idx, mtl_error *err)
{
    mtl_image img = {0};
    MTL_TRY(mtl_image_load(image, 3, &img, err));
    if (img.width != width || img.height != height) {
        mtl_image resized = {0};
        mtl_status st = mtl_image_resize(&img, width, height, &resized, err);
        mtl_image_free(&img);
        if (st != MTL_OK)
            return mtl_error_prefix(err, "resizing '%s' to %dx%d: ", image, width, height);
        img = resized;
    }
    const int side = width > height ? width : height;
    const int f = side >= CLI_DRAW_MIN_SIDE ? 1 : (CLI_DRAW_MIN_SIDE + side - 1) / side;
    char lines[16][256];
    int n_lines = 0, longest = 0;
    const mtl_tensor *points = NULL;
    for (int k = 0; k < net->n_outputs; k++) {
        if (is_input(net, net->output_blobs[k]))
            continue;
        const mtl_tensor *t = net->blobs[net->output_blobs[k]];
        int64_t n = t->count / t->shape[0];
        const float *v = t->data + (size_t)sample * (size_t)n;
        if (cfg->landmarks && strcmp(t->name, cfg->landmarks) == 0) {
            points = t;
            continue;
        }
        if (n_lines == 16)
            continue;
        output_line(cfg, t, v, n, idx, lines[n_lines], sizeof(lines[n_lines]));
        int len = (int)strlen(lines[n_lines++]);
        longest = len > longest ? len : longest;
    }
    cli_canvas c = {.width = width * f, .height = height * f + (n_lines ? n_lines * LINE_H + 4 : 0)};
    if (longest * CLI_FONT_ADVANCE + 4 > c.width)
        c.width = longest * CLI_FONT_ADVANCE + 4;
    if (!(c.rgb = calloc((size_t)c.width * (size_t)c.height, 3))) {
        mtl_image_free(&img);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory drawing '%s'", image);
    }
    for (int y = 0; y < height * f; y++)
        for (int x = 0; x < width * f; x++)
            memcpy(c.rgb + ((size_t)y * (size_t)c.width + (size_t)x) * 3,
                   img.pixels + ((size_t)(y / f) * (size_t)width + (size_t)(x / f)) * 3, 3);
    mtl_image_free(&img);
    if (points) {
        int64_t n = points->count / points->shape[0];
        const float *v = points->data + (size_t)sample * (size_t)n;
        for (int64_t p = 0; p + 1 < n; p += 2) {
            double x = v[p], y = v[p + 1];
            if (!isfinite(x) || !isfinite(y))
                continue;
            if (cfg->normalized) {
                x = (x + 1.0) * width / 2.0;
                y = (y + 1.0) * height / 2.0;
            }
            const uint8_t *color = point_colors[(p / 2) % 8];
            int r = f < 3 ? 2 : f > 5 ? 4 : f - 1;
            draw_dot(&c, x * f, y * f, r, color);
            char label[24];
            snprintf(label, sizeof(label), "%lld", (long long)(p / 2));
            cli_draw_text(&c, (int)floor(x * f) + r + 3, (int)floor(y * f) - CLI_FONT_H / 2, label, color);
        }
    }
    static const uint8_t white[3] = {255, 255, 255};
    for (int i = 0; i < n_lines; i++)
        cli_draw_text(&c, 2, height * f + 4 + i * LINE_H, lines[i], white);
    char path[4096];
    cli_draw_path(cfg->draw_dir, index, image, path, sizeof(path));
    mtl_image out = {.width = c.width, .height = c.height, .channels = 3, .pixels = c.rgb};
    mtl_status st = mtl_image_write_png(path, &out, err);
    free(c.rgb);
    return st;
}

/* The --draw directory, made when missing; --landmarks must name an output with (x, y) pairs. */
static int check_draw(const predict_config *cfg, const mtl_net *net, int batch)
{
    if (!cfg->draw_dir)
        return 0;
    int rc = cli_draw_dir(&cli_predict, cfg->draw_dir);
    if (rc)
        return rc;
    if (!cfg->landmarks)
        return 0;
    for (int k = 0; k < net->n_outputs; k++) {
        const mtl_tensor *t = net->blobs[net->output_blobs[k]];
        if (is_input(net, net->output_blobs[k]) || strcmp(t->name, cfg->landmarks) != 0)
            continue;
        int64_t per_image = t->count / (batch > 0 ? batch : 1);
        if (per_image % 2 != 0)
            return cli_usage_error(&cli_predict, "--landmarks: output '%s' has %lld values per image, not (x, y) "
                                   "pairs",
                                   t->name, (long long)per_image);
        return 0;
    }
    return cli_usage_error(&cli_predict, "--landmarks names output '%s', which the net does not have",
                           cfg->landmarks);
}

/* Forward pass over n loaded images, then one line per image (and its drawing with --draw);
 * `first` is the first image's place among the arguments. */
static mtl_status run_batch(mtl_net *net, mtl_tensor *input, const predict_config *cfg, const char **images, int n,
                            int first, int64_t *idx, mtl_error *err)
{
    int shape[4] = {n, input->shape[1], input->shape[2], input->shape[3]};
    /* the images already sit in input->data: shrinking the batch never reallocates */
    MTL_TRY(mtl_tensor_reshape(input, 4, shape, err));
    MTL_TRY(mtl_net_forward(net, NULL, err));
    char shape_text[128];
    for (int k = 0; k < net->n_outputs; k++) {
        const mtl_tensor *t = net->blobs[net->output_blobs[k]];
        if (!is_input(net, net->output_blobs[k]) && (t->ndim < 1 || t->shape[0] != n))
            return mtl_fail(err, MTL_ERR_SHAPE, "output '%s' has shape %s for %d images: its first axis must be the "
                            "images",
                            t->name, mtl_tensor_shape_str(t, shape_text, sizeof(shape_text)), n);
    }
    for (int i = 0; i < n; i++) {
        if (cfg->json)
            MTL_TRY(print_json(images[i], cfg, net, i, idx, err));
        else
            print_text(images[i], cfg, net, i, idx);
        if (cfg->draw_dir)
            MTL_TRY(draw_image(images[i], first + i, cfg, net, i, input->shape[2], input->shape[3], idx, err));
    }
    fflush(stdout);
    return MTL_OK;
}

static int predict(const predict_config *cfg, const char **images, int n_images)
{
    mtl_error err = {0};
    mtl_net *net = NULL;
    mtl_net_options opts = {.phase = MTL_PHASE_TEST, .seed = 1701};
    if (mtl_net_from_file(cfg->model, &opts, &net, &err) != MTL_OK)
        return cli_fail(&err);
    mtl_tensor *input = NULL;
    mtl_status st = cli_find_image_input(net, cfg->model, "predict", &input, &err);
    if (st == MTL_OK)
        st = cli_load_weights(net, cfg->weights, &err);
    if (st != MTL_OK) {
        mtl_net_free(net);
        return cli_fail(&err);
    }
    const int channels = input->shape[1], height = input->shape[2], width = input->shape[3];
    int rc = cli_pixels_check(&cli_predict, &cfg->pixels, input);
    const int batch = n_images < cfg->batch ? n_images : cfg->batch;
    int shape[4] = {batch, channels, height, width};
    if (rc == CLI_OK) {
        st = mtl_tensor_reshape(input, 4, shape, &err);
        if (st == MTL_OK)
            st = mtl_net_reshape(net, &err);
        if (st == MTL_OK)
            rc = check_labels(cfg, net, batch);
        if (st == MTL_OK && rc == CLI_OK)
            rc = check_draw(cfg, net, batch);
    }
    /* room for the top-K indices of the largest output */
    int64_t most = 1;
    for (int k = 0; st == MTL_OK && rc == CLI_OK && k < net->n_outputs; k++)
        if (net->blobs[net->output_blobs[k]]->count > most)
            most = net->blobs[net->output_blobs[k]]->count;
    int64_t *idx = st == MTL_OK && rc == CLI_OK ? malloc((size_t)(most < cfg->top_k ? most : cfg->top_k) *
                                                         sizeof(int64_t))
                                                : NULL;
    if (st == MTL_OK && rc == CLI_OK && !idx)
        st = mtl_fail(&err, MTL_ERR_NOMEM, "out of memory");

    const size_t per_image = (size_t)channels * (size_t)height * (size_t)width;
    for (int start = 0; st == MTL_OK && rc == CLI_OK && start < n_images; start += batch) {
        int n = n_images - start < batch ? n_images - start : batch;
        shape[0] = n;
        st = mtl_tensor_reshape(input, 4, shape, &err);
        int loaded = 0;
        mtl_status load_st = MTL_OK;
        mtl_error load_err = {0};
        while (st == MTL_OK && loaded < n) {
            load_st = cli_load_image(images[start + loaded], &cfg->pixels, channels, height, width,
                                     input->data + (size_t)loaded * per_image, NULL, NULL, &load_err);
            if (load_st != MTL_OK)
                break;
            loaded++;
        }
        /* the images before a bad one still get their results, whatever the batch size */
        if (st == MTL_OK && loaded > 0)
            st = run_batch(net, input, cfg, images + start, loaded, start, idx, &err);
        if (st == MTL_OK && load_st != MTL_OK) {
            st = load_st;
            err = load_err;
        }
    }
    free(idx);
    mtl_net_free(net);
    if (rc != CLI_OK)
        return rc;
    return st == MTL_OK ? CLI_OK : cli_fail(&err);
}

static int run_predict(int argc, char **argv)
{
    predict_config cfg = {.pixels = CLI_PIXELS_DEFAULT, .top_k = 1, .batch = PREDICT_DEFAULT_BATCH};
    const char **images = NULL;
    int n_images = 0;
    int rc = parse_arguments(argc, argv, &cfg, &images, &n_images);
    if (rc == 0)
        rc = predict(&cfg, images, n_images);
    else if (rc < 0)
        rc = CLI_OK;
    free(images);
    labels_free(cfg.labels, cfg.n_labels);
    return rc;
}

const cli_command cli_predict = {"predict", "run a trained multi-task net on image files", predict_usage, run_predict};
