/* Reading COCO annotation and results files (coco.h) with cJSON: every field is checked, and an
 * error names the file, the entry (by its place in its list) and what is wrong with it. */
#include <cjson/cJSON.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "data/coco.h"

/* An integer-valued JSON number (ids are integers in COCO). */
static int json_integer(const cJSON *v, int64_t *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 9.0e15)
        return -1;
    *out = (int64_t)v->valuedouble;
    return 0;
}

/* [x, y, w, h] of finite numbers with w, h >= 0, as x1 y1 x2 y2 and, when xywh is not NULL, as given. */
static int json_box(const cJSON *bbox, float *box, float *xywh)
{
    if (!cJSON_IsArray(bbox) || cJSON_GetArraySize(bbox) != 4)
        return -1;
    double v[4];
    for (int i = 0; i < 4; i++) {
        const cJSON *x = cJSON_GetArrayItem(bbox, i);
        if (!cJSON_IsNumber(x) || !(fabs(x->valuedouble) <= FLT_MAX / 2) || (i >= 2 && x->valuedouble < 0))
            return -1; /* also keeps x + w a finite float */
        v[i] = x->valuedouble;
    }
    box[0] = (float)v[0];
    box[1] = (float)v[1];
    box[2] = (float)(v[0] + v[2]);
    box[3] = (float)(v[1] + v[3]);
    for (int i = 0; xywh && i < 4; i++)
        xywh[i] = (float)v[i];
    return 0;
}

/* The parsed file, or a PARSE error giving the line where cJSON stopped. */
static mtl_status parse_file(const char *path, cJSON **json, mtl_error *err)
{
    char *text;
    size_t size;
    MTL_TRY(mtl_read_file(path, NULL, 0, &text, &size, err));
    *json = cJSON_ParseWithLength(text, size);
    if (!*json) {
        const char *at = cJSON_GetErrorPtr();
        int line = 1;
        for (const char *p = text; at && p < at && p < text + size; p++)
            line += *p == '\n';
        free(text);
        return mtl_fail(err, MTL_ERR_PARSE, "%s:%d: not valid JSON", path, line);
    }
    free(text);
    return MTL_OK;
}

static const cJSON *get_list(const cJSON *root, const char *name, const char *path, mtl_status *st, mtl_error *err)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!cJSON_IsArray(a))
        *st = mtl_fail(err, MTL_ERR_PARSE, "%s: '%s' is %s; a COCO annotation file has a list there", path, name,
                       a ? "not a list" : "missing");
    return a;
}

static int compare_categories(const void *a, const void *b)
{
    int64_t x = ((const mtl_coco_category *)a)->id, y = ((const mtl_coco_category *)b)->id;
    return (x > y) - (x < y);
}

static int compare_images(const void *a, const void *b)
{
    int64_t x = ((const mtl_coco_image *)a)->id, y = ((const mtl_coco_image *)b)->id;
    return (x > y) - (x < y);
}

int64_t mtl_coco_image_index(const mtl_coco *c, int64_t id)
{
    mtl_coco_image key = {.id = id};
    const mtl_coco_image *at = bsearch(&key, c->images, (size_t)c->n_images, sizeof(key), compare_images);
    return at ? at - c->images : -1;
}

int mtl_coco_category_index(const mtl_coco *c, int64_t id)
{
    mtl_coco_category key = {.id = id};
    const mtl_coco_category *at =
        bsearch(&key, c->categories, (size_t)c->n_categories, sizeof(key), compare_categories);
    return at ? (int)(at - c->categories) : -1;
}

static mtl_status read_categories(const cJSON *root, mtl_coco *c, mtl_error *err)
{
    mtl_status st = MTL_OK;
    const cJSON *list = get_list(root, "categories", c->path, &st, err);
    if (st != MTL_OK)
        return st;
    int n = cJSON_GetArraySize(list);
    if (!(c->categories = calloc((size_t)n + 1, sizeof(*c->categories))))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", c->path);
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
        int64_t id;
        if (json_integer(cJSON_GetObjectItemCaseSensitive(item, "id"), &id) != 0 || !cJSON_IsString(name))
            return mtl_fail(err, MTL_ERR_PARSE, "%s: category %d needs an integer 'id' and a string 'name'", c->path,
                            c->n_categories);
        mtl_coco_category *cat = &c->categories[c->n_categories];
        cat->id = id;
        cat->index = c->n_categories++;
        if (!(cat->name = mtl_strdup(name->valuestring)))
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", c->path);
    }
    qsort(c->categories, (size_t)c->n_categories, sizeof(*c->categories), compare_categories);
    for (int k = 1; k < c->n_categories; k++)
        if (c->categories[k].id == c->categories[k - 1].id)
            return mtl_fail(err, MTL_ERR_PARSE, "%s: category id %" PRId64 " appears twice", c->path,
                            c->categories[k].id);
    return MTL_OK;
}

/* A positive int 'width' or 'height', when given. */
static int json_size(const cJSON *v, int *out)
{
    int64_t size;
    if (v && (json_integer(v, &size) != 0 || size <= 0 || size > INT_MAX))
        return -1;
    *out = v ? (int)size : 0;
    return 0;
}

static mtl_status read_images(const cJSON *root, int files, mtl_coco *c, mtl_error *err)
{
    mtl_status st = MTL_OK;
    const cJSON *list = get_list(root, "images", c->path, &st, err);
    if (st != MTL_OK)
        return st;
    int n = cJSON_GetArraySize(list);
    if (files && n == 0)
        return mtl_fail(err, MTL_ERR_PARSE, "%s lists no images", c->path);
    if (!(c->images = calloc((size_t)n + 1, sizeof(*c->images))))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", c->path);
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(item, "file_name");
        int64_t id;
        int bad_id = json_integer(cJSON_GetObjectItemCaseSensitive(item, "id"), &id) != 0;
        if (files && (bad_id || !cJSON_IsString(file) || !file->valuestring[0]))
            return mtl_fail(err, MTL_ERR_PARSE, "%s: image %" PRId64 " needs an integer 'id' and a 'file_name'",
                            c->path, c->n_images);
        if (bad_id || (file && !cJSON_IsString(file)))
            return mtl_fail(err, MTL_ERR_PARSE, "%s: image %" PRId64 " needs an integer 'id' ('file_name', if given, "
                            "is a string)",
                            c->path, c->n_images);
        mtl_coco_image *im = &c->images[c->n_images];
        if (files && (json_size(cJSON_GetObjectItemCaseSensitive(item, "width"), &im->width) != 0 ||
                      json_size(cJSON_GetObjectItemCaseSensitive(item, "height"), &im->height) != 0))
            return mtl_fail(err, MTL_ERR_PARSE, "%s: image %" PRId64 " ('%s') has a bad 'width' or 'height'", c->path,
                            c->n_images, file->valuestring);
        im->id = id;
        im->index = c->n_images++;
        if (file && !(im->file_name = mtl_strdup(file->valuestring)))
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", c->path);
    }
    qsort(c->images, (size_t)c->n_images, sizeof(*c->images), compare_images);
    for (int64_t k = 1; k < c->n_images; k++)
        if (c->images[k].id == c->images[k - 1].id)
            return mtl_fail(err, MTL_ERR_PARSE, "%s: image id %" PRId64 " appears twice", c->path, c->images[k].id);
    return MTL_OK;
}

static mtl_status read_annotations(const cJSON *root, mtl_coco *c, mtl_error *err)
{
    mtl_status st = MTL_OK;
    const cJSON *list = get_list(root, "annotations", c->path, &st, err);
    if (st != MTL_OK)
        return st;
    int n = cJSON_GetArraySize(list);
    c->boxes = calloc((size_t)n + 1, sizeof(*c->boxes));
    c->xywh = calloc(4 * (size_t)n + 1, sizeof(*c->xywh));
    if (!c->boxes || !c->xywh)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", c->path);
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        const int64_t a = c->n_boxes;
        mtl_det_gt *g = &c->boxes[a];
        int64_t image_id, category_id, crowd = 0;
        if (json_integer(cJSON_GetObjectItemCaseSensitive(item, "image_id"), &image_id) != 0 ||
            json_integer(cJSON_GetObjectItemCaseSensitive(item, "category_id"), &category_id) != 0)
            return mtl_fail(err, MTL_ERR_PARSE, "%s: annotation %" PRId64 " needs an integer 'image_id' and "
                            "'category_id'",
                            c->path, a);
        const cJSON *iscrowd = cJSON_GetObjectItemCaseSensitive(item, "iscrowd");
        int bad_crowd = 0;
        if (cJSON_IsBool(iscrowd))
            crowd = cJSON_IsTrue(iscrowd);
        else if (iscrowd)
            bad_crowd = json_integer(iscrowd, &crowd) != 0 || (crowd != 0 && crowd != 1);
        if (bad_crowd)
            return mtl_fail(err, MTL_ERR_PARSE, "%s: annotation %" PRId64 " has an 'iscrowd' other than 0 or 1",
                            c->path, a);
        g->image = mtl_coco_image_index(c, image_id);
        g->class_id = mtl_coco_category_index(c, category_id);
        if (g->image < 0 || g->class_id < 0)
            return mtl_fail(err, MTL_ERR_PARSE,
                            "%s: annotation %" PRId64 " refers to %s %" PRId64 ", which is not listed", c->path, a,
                            g->image < 0 ? "image" : "category", g->image < 0 ? image_id : category_id);
        if (json_box(cJSON_GetObjectItemCaseSensitive(item, "bbox"), g->box, c->xywh + 4 * a) != 0)
            return mtl_fail(err, MTL_ERR_PARSE, "%s: annotation %" PRId64 " needs a 'bbox' [x, y, width, height] of "
                            "numbers (sizes not negative)",
                            c->path, a);
        g->crowd = (int)crowd;
        c->n_boxes++;
    }
    return MTL_OK;
}

mtl_status mtl_coco_read(const char *path, int flags, mtl_coco *out, mtl_error *err)
{
    memset(out, 0, sizeof(*out));
    out->path = path;
    cJSON *json = NULL;
    MTL_TRY(parse_file(path, &json, err));
    mtl_status st = cJSON_IsObject(json) ? MTL_OK
                                         : mtl_fail(err, MTL_ERR_PARSE, "%s: a COCO annotation file is a JSON object "
                                                    "with 'images', 'categories' and 'annotations'",
                                                    path);
    if (st == MTL_OK)
        st = read_categories(json, out, err);
    if (st == MTL_OK)
        st = read_images(json, (flags & MTL_COCO_IMAGE_FILES) != 0, out, err);
    if (st == MTL_OK && (flags & MTL_COCO_ANNOTATIONS))
        st = read_annotations(json, out, err);
    cJSON_Delete(json);
    if (st != MTL_OK)
        mtl_coco_free(out);
    return st;
}

void mtl_coco_free(mtl_coco *c)
{
    if (!c)
        return;
    for (int i = 0; c->categories && i < c->n_categories; i++)
        free(c->categories[i].name);
    for (int64_t i = 0; c->images && i < c->n_images; i++)
        free(c->images[i].file_name);
    free(c->categories);
    free(c->images);
    free(c->boxes);
    free(c->xywh);
    memset(c, 0, sizeof(*c));
}

mtl_status mtl_coco_read_results(const char *path, const mtl_coco *gt, mtl_det_result **out, int64_t *n,
                                 mtl_error *err)
{
    *out = NULL;
    *n = 0;
    cJSON *json = NULL;
    MTL_TRY(parse_file(path, &json, err));
    mtl_status st = MTL_OK;
    if (!cJSON_IsArray(json))
        st = mtl_fail(err, MTL_ERR_PARSE, "%s: a COCO results file is a JSON list of {\"image_id\", \"category_id\", "
                      "\"bbox\", \"score\"}",
                      path);
    int count = st == MTL_OK ? cJSON_GetArraySize(json) : 0;
    mtl_det_result *r = st == MTL_OK ? calloc((size_t)count + 1, sizeof(*r)) : NULL;
    if (st == MTL_OK && !r)
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory reading '%s'", path);
    int64_t k = 0;
    const cJSON *item;
    for (item = st == MTL_OK ? json->child : NULL; item && st == MTL_OK; item = item->next, k++) {
        int64_t image_id, category_id;
        const cJSON *score = cJSON_GetObjectItemCaseSensitive(item, "score");
        if (!cJSON_IsObject(item) ||
            json_integer(cJSON_GetObjectItemCaseSensitive(item, "image_id"), &image_id) != 0 ||
            json_integer(cJSON_GetObjectItemCaseSensitive(item, "category_id"), &category_id) != 0) {
            st = mtl_fail(err, MTL_ERR_PARSE, "%s: result %" PRId64 " needs an integer 'image_id' and 'category_id'",
                          path, k);
        } else if (!cJSON_IsNumber(score) || !(fabs(score->valuedouble) <= FLT_MAX)) {
            st = mtl_fail(err, MTL_ERR_PARSE, "%s: result %" PRId64 " needs a number 'score'", path, k);
        } else if (json_box(cJSON_GetObjectItemCaseSensitive(item, "bbox"), r[k].box, NULL) != 0) {
            st = mtl_fail(err, MTL_ERR_PARSE, "%s: result %" PRId64 " needs a 'bbox' [x, y, width, height] of numbers "
                          "(sizes not negative)",
                          path, k);
        } else if ((r[k].image = mtl_coco_image_index(gt, image_id)) < 0) {
            st = mtl_fail(err, MTL_ERR_PARSE, "%s: result %" PRId64 " is for image %" PRId64 ", which %s does not list",
                          path, k, image_id, gt->path);
        } else if ((r[k].class_id = mtl_coco_category_index(gt, category_id)) < 0) {
            st = mtl_fail(err, MTL_ERR_PARSE, "%s: result %" PRId64 " has category %" PRId64 ", which %s does not list",
                          path, k, category_id, gt->path);
        } else {
            r[k].score = (float)score->valuedouble;
        }
    }
    cJSON_Delete(json);
    if (st != MTL_OK) {
        free(r);
        return st;
    }
    *out = r;
    *n = k;
    return MTL_OK;
}
