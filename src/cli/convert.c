/* mtl convert: packs an image list with K labels per line (or a COCO detection annotation file)
 * into an mtl LMDB (docs/data-format.md). Reading and checking the whole list comes first, so a bad
 * line fails before any image is decoded; the database appears under its name only when complete. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "core/file.h"
#include "core/rng.h"
#include "data/coco.h"
#include "data/db.h"
#include "data/image.h"
#include "data/record.h"
#include "layers/labels.h"

static const char convert_usage[] =
    "usage: mtl convert [options] LISTFILE ROOT DB\n"
    "       mtl convert --coco ANNOTATIONS.json [options] IMAGES DB\n"
    "\n"
    "Packs images and their labels into an LMDB database DB (format: docs/data-format.md).\n"
    "Each line of LISTFILE is `relative/path label1 ... labelK` (paths relative to ROOT, no spaces);\n"
    "labels are integers or floats, `-` marks a missing label (skipped by every loss). K is the same\n"
    "on every line. With --coco, the images of a COCO annotation file (relative to IMAGES) are stored\n"
    "with their boxes (class = category_id, x, y, w, h); images without annotations keep 0 boxes.\n"
    "DB appears only once it is complete; an interrupted or failed run leaves nothing under DB.\n"
    "\n"
    "  --labels K          labels per line (default: as many as the first line has)\n"
    "  --label-names a,b   names of the K labels, stored in the metadata\n"
    "  --gray              store grey images (1 channel)\n"
    "  --color             store RGB images (3 channels); default: each file's own (grey or RGB)\n"
    "  --resize WxH        resize every image to W x H pixels (boxes are scaled with it)\n"
    "  --check-size        fail unless every image has the size of the first\n"
    "  --encoded           store the PNG/JPEG file bytes (decoded when read) instead of pixels;\n"
    "                      with --resize or a channel change the result is stored as PNG\n"
    "  --shuffle           store the images in a random order ...\n"
    "  --seed N            ... drawn from seed N (default 1)\n"
    "  --skip-bad          skip (and count) unreadable or corrupt images instead of stopping\n";

#define CONVERT_DEFAULT_SEED 1

static volatile sig_atomic_t convert_stop;

static void on_signal(int sig)
{
    (void)sig;
    convert_stop = 1;
}

/* One image to convert: its path relative to the root, where it was listed, and its labels or boxes. */
typedef struct convert_item {
    const char *path;
    int line;          /* list-file line, or the index in the COCO "images" array */
    int64_t coco_id;   /* COCO image id */
    int width, height; /* COCO's stated size, 0 if not given */
    int n_boxes;
    float *boxes;      /* n_boxes x 5 (class, x, y, w, h), pointing into convert_job.boxes */
} convert_item;

typedef struct convert_job {
    const char *source; /* the list or annotation file, named in errors */
    const char *root;
    const char *db_path;
    int n_labels;       /* K */
    char **label_names;
    int *category_ids;
    int channels;       /* 0: each file's own, 1 or 3 */
    int resize_w, resize_h;
    int encoded, check_size, skip_bad, has_boxes;
    convert_item *items;
    int64_t n_items;
    float *labels;      /* n_items x K */
    float *boxes;       /* all boxes */
    int64_t crowd_skipped;
    char *text;         /* the list file's bytes; items point into them */
    mtl_coco coco;      /* the annotation file; items point into it */
} convert_job;

static void job_free(convert_job *job)
{
    if (job->label_names)
        for (int i = 0; job->label_names[i]; i++)
            free(job->label_names[i]);
    free(job->label_names);
    free(job->category_ids);
    free(job->items);
    free(job->labels);
    free(job->boxes);
    free(job->text);
    mtl_coco_free(&job->coco);
}

/* ---- the list file ---- */

/* Parses one label: a finite number, or '-' for a missing one. */
static int parse_label(const char *tok, float *out)
{
    if (strcmp(tok, "-") == 0) {
        *out = MTL_LABEL_MISSING;
        return 0;
    }
    char *end;
    float v = strtof(tok, &end);
    if (end == tok || *end != '\0' || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* Splits a line into whitespace-separated tokens, ending each with a zero byte when tokens is not
 * NULL; returns their count. */
static int split_tokens(char *line, char **tokens)
{
    int n = 0;
    char *p = line;
    for (;;) {
        while (*p && isspace((unsigned char)*p))
            p++;
        if (!*p)
            return n;
        if (tokens)
            tokens[n] = p;
        n++;
        while (*p && !isspace((unsigned char)*p))
            p++;
        if (*p && tokens)
            *p++ = '\0';
    }
}

static mtl_status read_list(convert_job *job, int k_given, mtl_error *err)
{
    size_t size;
    MTL_TRY(mtl_read_file(job->source, NULL, 0, &job->text, &size, err));
    if (memchr(job->text, '\0', size))
        return mtl_fail(err, MTL_ERR_PARSE, "'%s' is not a text file (it holds zero bytes)", job->source);
    int64_t n_lines = 1;
    for (size_t i = 0; i < size; i++)
        n_lines += job->text[i] == '\n';
    if (n_lines > INT_MAX)
        return mtl_fail(err, MTL_ERR_UNSUPPORTED, "'%s' has more than %d lines", job->source, INT_MAX);
    job->items = calloc((size_t)n_lines, sizeof(*job->items));
    if (!job->items)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", job->source);

    int max_tokens = 1024;
    char **tokens = malloc((size_t)max_tokens * sizeof(char *));
    size_t label_cap = 0;
    mtl_status st = tokens ? MTL_OK : mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    int first_line = 0;
    char *line = job->text;
    for (int line_no = 1; st == MTL_OK && line; line_no++) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        int n = split_tokens(line, NULL);
        if (n > max_tokens) {
            char **grown = realloc(tokens, (size_t)n * sizeof(char *));
            if (!grown) {
                st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", job->source);
                break;
            }
            tokens = grown;
            max_tokens = n;
        }
        split_tokens(line, tokens);
        if (n == 0) {
            line = next;
            continue; /* blank lines (a final newline, spacing) are allowed */
        }
        if (job->n_labels < 0) {
            job->n_labels = n - 1; /* K from the first line */
            first_line = line_no;
        }
        if (n - 1 != job->n_labels) {
            if (k_given)
                st = mtl_fail(err, MTL_ERR_PARSE, "%s:%d: %d label%s, expected %d (--labels %d)", job->source,
                              line_no, n - 1, n == 2 ? "" : "s", job->n_labels, job->n_labels);
            else
                st = mtl_fail(err, MTL_ERR_PARSE,
                              "%s:%d: %d label%s, expected %d as on line %d (every line has the same number of "
                              "labels; write '-' for a missing one)",
                              job->source, line_no, n - 1, n == 2 ? "" : "s", job->n_labels, first_line);
            break;
        }
        size_t need = (size_t)(job->n_items + 1) * (size_t)job->n_labels;
        if (need > label_cap) {
            size_t cap = label_cap ? label_cap * 2 : 1024;
            while (cap < need)
                cap *= 2;
            float *grown = realloc(job->labels, cap * sizeof(float));
            if (!grown) {
                st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", job->source);
                break;
            }
            job->labels = grown;
            label_cap = cap;
        }
        float *labels = job->labels ? job->labels + (size_t)job->n_items * (size_t)job->n_labels : NULL;
        for (int i = 0; i < job->n_labels && st == MTL_OK; i++)
            if (parse_label(tokens[i + 1], &labels[i]) != 0)
                st = mtl_fail(err, MTL_ERR_PARSE,
                              "%s:%d: label %d '%s' is not a number (labels are integers or floats; '-' marks a "
                              "missing label)",
                              job->source, line_no, i + 1, tokens[i + 1]);
        convert_item *item = &job->items[job->n_items++];
        item->path = tokens[0];
        item->line = line_no;
        line = next;
    }
    free(tokens);
    if (st == MTL_OK && job->n_items == 0)
        st = mtl_fail(err, MTL_ERR_PARSE, "'%s' lists no images", job->source);
    return st;
}

/* ---- COCO annotations ---- */

/* Takes the annotation file's images in its order, each with its non-crowd boxes [class, x, y, w,
 * h] in the order of the annotations. Crowd regions mark many objects at once, not boxes to learn
 * from: they are left out and counted. */
static mtl_status read_coco(convert_job *job, mtl_error *err)
{
    const mtl_coco *c = &job->coco;
    MTL_TRY(mtl_coco_read(job->source, MTL_COCO_ANNOTATIONS | MTL_COCO_IMAGE_FILES, &job->coco, err));
    const mtl_coco_category *bad = NULL; /* the metadata stores category ids as ints: the first that does not fit */
    for (int k = 0; k < c->n_categories; k++) {
        const mtl_coco_category *cat = &c->categories[k];
        if ((cat->id < INT_MIN || cat->id > INT_MAX) && (!bad || cat->index < bad->index))
            bad = cat;
    }
    if (bad)
        return mtl_fail(err, MTL_ERR_PARSE, "%s: category %d has id %lld, beyond the 32-bit ids a database stores",
                        job->source, bad->index, (long long)bad->id);
    job->label_names = calloc((size_t)c->n_categories + 1, sizeof(char *));
    job->category_ids = calloc((size_t)c->n_categories + 1, sizeof(int));
    job->items = calloc((size_t)c->n_images, sizeof(*job->items));
    job->boxes = calloc(5 * (size_t)c->n_boxes + 1, sizeof(float));
    if (!job->label_names || !job->category_ids || !job->items || !job->boxes)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", job->source);
    for (int k = 0; k < c->n_categories; k++) {
        if (!(job->label_names[k] = mtl_strdup(c->categories[k].name)))
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", job->source);
        job->category_ids[k] = (int)c->categories[k].id;
    }
    job->n_items = c->n_images;
    for (int64_t i = 0; i < c->n_images; i++) {
        const mtl_coco_image *im = &c->images[i];
        convert_item *item = &job->items[im->index];
        item->path = im->file_name;
        item->line = (int)im->index;
        item->coco_id = im->id;
        item->width = im->width;
        item->height = im->height;
    }
    /* count each image's boxes, then lay them out contiguously */
    for (int64_t b = 0; b < c->n_boxes; b++)
        if (c->boxes[b].crowd)
            job->crowd_skipped++;
        else
            job->items[c->images[c->boxes[b].image].index].n_boxes++;
    int64_t offset = 0;
    for (int64_t i = 0; i < job->n_items; i++) {
        job->items[i].boxes = job->boxes + 5 * offset;
        offset += job->items[i].n_boxes;
        job->items[i].n_boxes = 0;
    }
    for (int64_t b = 0; b < c->n_boxes; b++) {
        const mtl_det_gt *g = &c->boxes[b];
        if (g->crowd)
            continue;
        convert_item *item = &job->items[c->images[g->image].index];
        float *box = item->boxes + 5 * (size_t)item->n_boxes++;
        box[0] = (float)c->categories[g->class_id].id;
        memcpy(box + 1, c->xywh + 4 * b, 4 * sizeof(float));
    }
    return MTL_OK;
}

/* ---- converting ---- */

typedef struct convert_stats {
    int64_t written, skipped, missing_labels, boxes;
    int channels, height, width; /* of the first record */
    int shape_varies;
    char first_path[256];
} convert_stats;

typedef struct progress {
    int enabled, shown;
    struct timespec start, last;
} progress;

static double seconds_between(struct timespec a, struct timespec b)
{
    return (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
}

static void progress_clear(progress *p)
{
    if (p->shown) {
        fprintf(stderr, "\r%79s\r", "");
        p->shown = 0;
    }
}

/* One updating line on a terminal: done/total, images per second and the time left. */
static void progress_update(progress *p, int64_t done, int64_t total, int force)
{
    if (!p->enabled)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!force && seconds_between(p->last, now) < 0.25)
        return;
    p->last = now;
    double elapsed = seconds_between(p->start, now), rate = elapsed > 0 ? (double)done / elapsed : 0;
    char eta[32] = "?";
    if (rate > 0) {
        long left = (long)((double)(total - done) / rate + 0.5);
        snprintf(eta, sizeof(eta), "%ldm%02lds", left / 60, left % 60);
    }
    fprintf(stderr, "\rconverting %" PRId64 "/%" PRId64 " (%.1f%%)  %.0f images/s  ETA %s   ", done, total,
            100.0 * (double)done / (double)total, rate, eta);
    fflush(stderr);
    p->shown = 1;
}

/* Converts one listed image into record number stats->written. A bad image (unreadable, not
 * decodable) returns MTL_ERR_IO/NOT_FOUND/CORRUPT with *bad set, which --skip-bad turns into a skip. */
static mtl_status convert_item_run(const convert_job *job, convert_item *item, mtl_db_writer *w,
                                   const float *labels, convert_stats *stats, int *bad, mtl_error *err)
{
    *bad = 0;
    char *full = malloc(strlen(job->root) + strlen(item->path) + 2);
    if (!full)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    sprintf(full, "%s/%s", job->root, item->path);
    uint8_t *bytes = NULL, *chw = NULL, *png = NULL;
    size_t size = 0, png_size = 0;
    mtl_image img = {0}, resized = {0};
    mtl_status st = MTL_OK;
    FILE *f = fopen(full, "rb");
    /* read the file once: its bytes are decoded and, with --encoded, stored as they are */
    if (!f) {
        st = mtl_fail(err, errno == ENOENT ? MTL_ERR_NOT_FOUND : MTL_ERR_IO, "cannot open image '%s': %s", full,
                      strerror(errno));
    } else {
        struct stat sb;
        if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode))
            st = mtl_fail(err, MTL_ERR_IO, "cannot read image '%s': not a regular file", full);
        else if ((uint64_t)sb.st_size > UINT32_MAX / 2)
            st = mtl_fail(err, MTL_ERR_IO, "image '%s' is too large (%lld bytes)", full, (long long)sb.st_size);
        else if (!(bytes = malloc((size_t)sb.st_size + 1)))
            st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", full);
        else if ((size = fread(bytes, 1, (size_t)sb.st_size, f)) != (size_t)sb.st_size)
            st = mtl_fail(err, MTL_ERR_IO, "cannot read image '%s'", full);
        fclose(f);
    }
    if (st == MTL_OK)
        st = mtl_image_decode(bytes, size, job->channels, full, &img, err);
    if (st != MTL_OK)
        *bad = 1;
    if (st == MTL_OK && item->width && (item->width != img.width || item->height != img.height))
        st = mtl_fail(err, MTL_ERR_SHAPE, "image '%s' is %dx%d, but the annotations say %dx%d", full, img.width,
                      img.height, item->width, item->height);
    int transformed = 0;
    if (st == MTL_OK && job->resize_w && (img.width != job->resize_w || img.height != job->resize_h)) {
        float sx = (float)job->resize_w / (float)img.width, sy = (float)job->resize_h / (float)img.height;
        for (int b = 0; b < item->n_boxes; b++) {
            float *box = item->boxes + 5 * (size_t)b;
            box[1] *= sx;
            box[3] *= sx;
            box[2] *= sy;
            box[4] *= sy;
        }
        st = mtl_image_resize(&img, job->resize_w, job->resize_h, &resized, err);
        if (st == MTL_OK) {
            mtl_image_free(&img);
            img = resized;
            transformed = 1;
        }
    }
    if (st == MTL_OK && job->check_size && stats->written > 0 &&
        (img.width != stats->width || img.height != stats->height))
        st = mtl_fail(err, MTL_ERR_SHAPE, "image '%s' is %dx%d, but the first image ('%s') is %dx%d (--check-size)",
                      full, img.width, img.height, stats->first_path, stats->width, stats->height);
    mtl_record r = {.channels = img.channels, .height = img.height, .width = img.width, .n_labels = job->n_labels,
                    .labels = labels, .n_boxes = item->n_boxes, .boxes = item->boxes};
    if (st == MTL_OK && job->encoded) {
        /* the file's bytes decode to the same pixels unless the pixels were changed here */
        int w0, h0, natural = 0;
        if (!transformed && job->channels)
            st = mtl_image_probe_bytes(bytes, size, full, &w0, &h0, &natural, err);
        if (st == MTL_OK && (transformed || (job->channels && natural != job->channels)))
            st = mtl_image_encode_png(&img, &png, &png_size, err);
        r.flags = MTL_RECORD_ENCODED;
        r.data = png ? png : bytes;
        r.n_bytes = png ? png_size : size;
    } else if (st == MTL_OK) {
        r.n_bytes = (size_t)img.channels * (size_t)img.height * (size_t)img.width;
        if (!(chw = malloc(r.n_bytes)))
            st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory converting '%s'", full);
        else
            mtl_image_to_chw(&img, chw);
        r.data = chw;
    }
    if (st == MTL_OK)
        st = mtl_db_writer_put(w, stats->written, &r, err);
    if (st == MTL_OK) {
        if (stats->written == 0) {
            snprintf(stats->first_path, sizeof(stats->first_path), "%s", full);
            stats->channels = img.channels;
            stats->height = img.height;
            stats->width = img.width;
        } else if (img.channels != stats->channels || img.height != stats->height || img.width != stats->width) {
            stats->shape_varies = 1;
        }
        stats->written++;
        stats->boxes += item->n_boxes;
        for (int i = 0; i < job->n_labels; i++)
            stats->missing_labels += mtl_label_is_missing(labels[i]);
    }
    mtl_image_free(&img);
    free(bytes);
    free(chw);
    free(png);
    free(full);
    return st;
}

static mtl_status convert_all(const convert_job *job, const int64_t *order, convert_stats *stats, mtl_error *err)
{
    mtl_db_writer *w = NULL;
    MTL_TRY(mtl_db_writer_open(job->db_path, &w, err));
    progress prog = {.enabled = isatty(STDERR_FILENO)};
    clock_gettime(CLOCK_MONOTONIC, &prog.start);
    prog.last = prog.start;
    mtl_status st = MTL_OK;
    for (int64_t k = 0; k < job->n_items && st == MTL_OK; k++) {
        if (convert_stop)
            break;
        int64_t i = order ? order[k] : k;
        convert_item *item = &job->items[i];
        const float *labels = job->labels ? job->labels + (size_t)i * (size_t)job->n_labels : NULL;
        int bad;
        st = convert_item_run(job, item, w, labels, stats, &bad, err);
        if (st != MTL_OK && convert_stop)
            break; /* the signal interrupted a read: not the image's fault */
        if (st != MTL_OK) {
            if (job->has_boxes)
                mtl_error_prefix(err, "%s (image id %" PRId64 "): ", job->source, item->coco_id);
            else
                mtl_error_prefix(err, "%s:%d: ", job->source, item->line);
        }
        if (st != MTL_OK && bad && job->skip_bad) {
            progress_clear(&prog);
            fprintf(stderr, "mtl convert: skipping: %s\n", err->message);
            stats->skipped++;
            st = MTL_OK;
        } else if (st != MTL_OK && bad) {
            size_t len = strlen(err->message);
            snprintf(err->message + len, sizeof(err->message) - len, " (--skip-bad skips bad images)");
        }
        progress_update(&prog, k + 1, job->n_items, 0);
    }
    if (st == MTL_OK && !convert_stop)
        progress_update(&prog, job->n_items, job->n_items, 1);
    progress_clear(&prog);
    if (convert_stop)
        st = mtl_fail(err, MTL_ERR_INTERRUPTED, "interrupted after %" PRId64 " images; no database written at '%s'",
                      stats->written + stats->skipped, job->db_path);
    if (st == MTL_OK && stats->written == 0)
        st = mtl_fail(err, MTL_ERR_IO, "no image of '%s' could be converted (%" PRId64 " skipped)", job->source,
                      stats->skipped);
    if (st != MTL_OK) {
        mtl_db_writer_abort(w);
        return st;
    }
    mtl_db_meta meta = {.count = stats->written,
                        .n_labels = job->n_labels,
                        .label_names = job->label_names,
                        .channels = stats->shape_varies ? 0 : stats->channels,
                        .height = stats->shape_varies ? 0 : stats->height,
                        .width = stats->shape_varies ? 0 : stats->width,
                        .encoded = job->encoded,
                        .skipped = stats->skipped,
                        .missing_labels = stats->missing_labels,
                        .has_boxes = job->has_boxes,
                        .category_ids = job->category_ids};
    return mtl_db_writer_finish(w, &meta, err);
}

/* ---- options ---- */

static int parse_count(const char *text, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (!*text || *end || errno || v < 0 || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_size(const char *text, int *w, int *h)
{
    char *end;
    long a = strtol(text, &end, 10);
    if (end == text || (*end != 'x' && *end != 'X'))
        return -1;
    const char *rest = end + 1;
    long b = strtol(rest, &end, 10);
    if (end == rest || *end || a <= 0 || b <= 0 || a > 65535 || b > 65535)
        return -1;
    *w = (int)a;
    *h = (int)b;
    return 0;
}

/* Splits "a,b,c" into a NULL-terminated list of names. */
static char **split_names(const char *text, int *count)
{
    int n = 1;
    for (const char *p = text; *p; p++)
        n += *p == ',';
    char **names = calloc((size_t)n + 1, sizeof(char *));
    if (!names)
        return NULL;
    const char *start = text;
    for (int i = 0; i < n; i++) {
        const char *end = strchr(start, ',');
        size_t len = end ? (size_t)(end - start) : strlen(start);
        names[i] = malloc(len + 1);
        if (!names[i]) {
            for (int k = 0; k < i; k++)
                free(names[k]);
            free(names);
            return NULL;
        }
        memcpy(names[i], start, len);
        names[i][len] = '\0';
        start = end ? end + 1 : start + len;
    }
    *count = n;
    return names;
}

static void print_summary(const convert_job *job, const convert_stats *s)
{
    char shape[64];
    if (s->shape_varies)
        snprintf(shape, sizeof(shape), "sizes vary");
    else
        snprintf(shape, sizeof(shape), "%dx%dx%d", s->channels, s->height, s->width);
    printf("wrote %" PRId64 " records to '%s' (%s, %s", s->written, job->db_path, shape,
           job->encoded ? "encoded" : "raw");
    if (job->has_boxes)
        printf(", %" PRId64 " boxes", s->boxes);
    else
        printf(", %d label%s each", job->n_labels, job->n_labels == 1 ? "" : "s");
    printf("); skipped %" PRId64 " bad images; %" PRId64 " missing labels", s->skipped, s->missing_labels);
    if (job->crowd_skipped)
        printf("; %" PRId64 " crowd annotations left out", job->crowd_skipped);
    printf("\n");
    if (s->shape_varies && !job->resize_w)
        fprintf(stderr, "mtl convert: note: the images differ in size or channels; --resize WxH and --gray or "
                        "--color make them uniform\n");
}

static int run_convert(int argc, char **argv)
{
    cli_option options[] = {{"labels", 1, NULL},   {"label-names", 1, NULL}, {"gray", 0, NULL},
                            {"color", 0, NULL},    {"resize", 1, NULL},      {"check-size", 0, NULL},
                            {"encoded", 0, NULL},  {"shuffle", 0, NULL},     {"seed", 1, NULL},
                            {"skip-bad", 0, NULL}, {"coco", 1, NULL}};
    const int n_opts = (int)(sizeof(options) / sizeof(options[0]));
    const char *positional[3];
    int n_pos;
    int rc = cli_parse(&cli_convert, argc, argv, options, n_opts, positional, 3, &n_pos);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    const char *coco = cli_value(options, n_opts, "coco");
    const char *labels_opt = cli_value(options, n_opts, "labels");
    const char *names_opt = cli_value(options, n_opts, "label-names");
    const char *resize = cli_value(options, n_opts, "resize"), *seed_opt = cli_value(options, n_opts, "seed");
    if (n_pos != (coco ? 2 : 3))
        return cli_usage_error(&cli_convert, coco ? "--coco needs IMAGES and DB" : "LISTFILE, ROOT and DB are needed");
    if (coco && (labels_opt || names_opt))
        return cli_usage_error(&cli_convert, "--labels and --label-names do not apply to --coco (categories name "
                                             "the classes)");
    if (cli_value(options, n_opts, "gray") && cli_value(options, n_opts, "color"))
        return cli_usage_error(&cli_convert, "give --gray or --color, not both");
    if (seed_opt && !cli_value(options, n_opts, "shuffle"))
        return cli_usage_error(&cli_convert, "--seed only applies with --shuffle");

    convert_job job = {.source = coco ? coco : positional[0],
                       .root = positional[n_pos - 2],
                       .db_path = positional[n_pos - 1],
                       .n_labels = coco ? 0 : -1,
                       .channels = cli_value(options, n_opts, "gray") ? 1 : cli_value(options, n_opts, "color") ? 3 : 0,
                       .encoded = cli_value(options, n_opts, "encoded") != NULL,
                       .check_size = cli_value(options, n_opts, "check-size") != NULL,
                       .skip_bad = cli_value(options, n_opts, "skip-bad") != NULL,
                       .has_boxes = coco != NULL};
    long k = -1, seed = CONVERT_DEFAULT_SEED;
    if (labels_opt && parse_count(labels_opt, 1 << 20, &k) != 0)
        return cli_usage_error(&cli_convert, "--labels needs a count (0 or more), not '%s'", labels_opt);
    if (labels_opt)
        job.n_labels = (int)k;
    if (resize && parse_size(resize, &job.resize_w, &job.resize_h) != 0)
        return cli_usage_error(&cli_convert, "--resize needs WIDTHxHEIGHT (for example 28x28), not '%s'", resize);
    if (seed_opt && parse_count(seed_opt, LONG_MAX, &seed) != 0)
        return cli_usage_error(&cli_convert, "--seed needs a non-negative integer, not '%s'", seed_opt);
    int n_names = 0;
    if (names_opt && !(job.label_names = split_names(names_opt, &n_names))) {
        fprintf(stderr, "mtl: error: out of memory\n");
        return CLI_FAILED;
    }
    for (int i = 0; i < n_names; i++)
        if (!job.label_names[i][0]) {
            job_free(&job);
            return cli_usage_error(&cli_convert, "--label-names has an empty name (name %d of '%s')", i + 1,
                                   names_opt);
        }

    mtl_error err = {0};
    mtl_status st = coco ? read_coco(&job, &err) : read_list(&job, labels_opt != NULL, &err);
    if (st == MTL_OK && names_opt && n_names != job.n_labels)
        st = mtl_fail(&err, MTL_ERR_CONFIG, "--label-names gives %d name%s but '%s' has %d label%s per line", n_names,
                      n_names == 1 ? "" : "s", job.source, job.n_labels, job.n_labels == 1 ? "" : "s");
    int64_t *order = NULL;
    if (st == MTL_OK && cli_value(options, n_opts, "shuffle")) {
        /* Fisher-Yates from the seeded generator: the same seed gives the same order everywhere */
        if (!(order = malloc((size_t)job.n_items * sizeof(int64_t))))
            st = mtl_fail(&err, MTL_ERR_NOMEM, "out of memory");
        mtl_rng rng;
        mtl_rng_seed(&rng, (uint64_t)seed);
        for (int64_t i = 0; order && i < job.n_items; i++)
            order[i] = i;
        for (int64_t i = job.n_items - 1; order && i > 0; i--) {
            int64_t j = (int64_t)mtl_rng_below(&rng, (uint32_t)(i + 1));
            int64_t t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
    }
    convert_stats stats = {0};
    if (st == MTL_OK) {
        struct sigaction sa, old_int, old_term;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal; /* no SA_RESTART: a read blocked on a slow file returns at Ctrl-C */
        convert_stop = 0;
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
        st = convert_all(&job, order, &stats, &err);
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
    }
    if (st == MTL_OK)
        print_summary(&job, &stats);
    free(order);
    job_free(&job);
    if (st == MTL_ERR_INTERRUPTED) {
        fprintf(stderr, "mtl convert: %s\n", err.message);
        return CLI_INTERRUPTED;
    }
    return st == MTL_OK ? CLI_OK : cli_fail(&err);
}

const cli_command cli_convert = {"convert", "pack an image list with several labels per line into an LMDB",
                                 convert_usage, run_convert};
