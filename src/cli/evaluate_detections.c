/* mtl evaluate-detections: the VOC and COCO average precision of a COCO results file against a COCO
 * annotation file, per category and overall, as a table or one JSON object. The metrics are
 * src/detection/evaluate.c's; this file reads the files and prints. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "data/coco.h"
#include "detection/evaluate.h"

static const char evaluate_usage[] =
    "usage: mtl evaluate-detections GT.json RESULTS.json [--json]\n"
    "\n"
    "Scores the detections of RESULTS.json against the ground truth of GT.json, per category and\n"
    "overall (docs/detection.md):\n"
    "  AP@0.5       PASCAL VOC average precision: a detection is right when its IoU with an object\n"
    "               of its category is above 0.5 (each object found once; duplicates are wrong),\n"
    "               area under the interpolated precision/recall curve at every point (VOC2010+)\n"
    "  AP@[.5:.95]  COCO average precision: 101-point interpolated AP averaged over IoU thresholds\n"
    "               0.50, 0.55, ..., 0.95, matching as pycocotools does (at most 100 detections per\n"
    "               image and category, crowd regions ignored)\n"
    "mAP@0.5 and mAP@[.5:.95] are the means over the categories that have ground truth.\n"
    "\n"
    "GT.json is a COCO annotation file: {\"images\": [{\"id\", \"file_name\"}], \"categories\": [{\"id\",\n"
    "\"name\"}], \"annotations\": [{\"image_id\", \"category_id\", \"bbox\": [x, y, w, h], \"iscrowd\"}]}.\n"
    "RESULTS.json is a COCO results file: [{\"image_id\", \"category_id\", \"bbox\": [x, y, w, h],\n"
    "\"score\"}], as `mtl detect` writes it; every image and category must be in GT.json.\n"
    "  --json   print one JSON object instead of the table:\n"
    "           {\"map50\": .., \"map\": .., \"coco_ap50\": .., \"coco_ap75\": .., \"categories\": [{\"id\",\n"
    "           \"name\", \"gt\", \"crowd\", \"detections\", \"ap50\", \"ap\", \"coco_ap50\", \"coco_ap75\"}], ...}\n"
    "           (APs of a category without ground truth, and means without any, are null)\n"
    "\n"
    "Exit status: 1 when a file cannot be read or is not what it should be, 2 on bad arguments.\n";

/* A value for the table: 4 decimals, '-' when undefined (NaN). */
static void print_value(double v, int width)
{
    if (isnan(v))
        printf(" %*s", width, "-");
    else
        printf(" %*.4f", width, v);
}

static void print_table(const mtl_coco *gt, int64_t n_dets, const mtl_det_class_eval *e, const mtl_det_summary *s)
{
    int name_w = 8;
    for (int c = 0; c < gt->n_categories; c++) {
        int len = (int)strlen(gt->categories[c].name);
        name_w = len > name_w ? (len > 40 ? 40 : len) : name_w;
    }
    int64_t crowd = 0;
    for (int64_t i = 0; i < gt->n_boxes; i++)
        crowd += gt->boxes[i].crowd != 0;
    printf("%lld images, %d categories (%d with ground truth), %lld ground-truth boxes (%lld crowd), %lld "
           "detections\n\n",
           (long long)gt->n_images, gt->n_categories, s->n_classes_with_gt, (long long)gt->n_boxes, (long long)crowd,
           (long long)n_dets);
    printf("%-*s %8s %7s %7s %8s %11s\n", name_w, "category", "id", "gt", "dets", "AP@0.5", "AP@[.5:.95]");
    for (int c = 0; c < gt->n_categories; c++) {
        printf("%-*.*s %8lld %7lld %7lld", name_w, name_w, gt->categories[c].name, (long long)gt->categories[c].id,
               (long long)e[c].n_gt, (long long)e[c].n_dets);
        print_value(e[c].voc_ap, 8);
        print_value(e[c].coco_ap, 11);
        putchar('\n');
    }
    printf("\nmAP@0.5     ");
    print_value(s->voc_map, 7);
    printf("   (VOC: IoU > 0.5, all-point interpolation)\nmAP@[.5:.95]");
    print_value(s->coco_map, 7);
    printf("   (COCO: IoU 0.50:0.05:0.95, 101-point interpolation)\nCOCO AP50   ");
    print_value(s->coco_map_at[0], 7);
    printf("   AP75");
    print_value(s->coco_map_at[5], 7);
    putchar('\n');
}

/* A number for JSON, null when undefined. */
static cJSON *json_value(double v)
{
    return isnan(v) ? cJSON_CreateNull() : cJSON_CreateNumber(v);
}

static int add(cJSON *obj, const char *name, cJSON *item)
{
    if (!item)
        return 0;
    cJSON_AddItemToObject(obj, name, item);
    return 1;
}

static int print_json(const char *gt_path, const char *results_path, const mtl_coco *gt, int64_t n_dets,
                      const mtl_det_class_eval *e, const mtl_det_summary *s)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *cats = cJSON_CreateArray();
    int ok = root && cats;
    if (ok) {
        ok = add(root, "gt", cJSON_CreateString(gt_path)) && add(root, "results", cJSON_CreateString(results_path)) &&
             add(root, "images", cJSON_CreateNumber((double)gt->n_images)) &&
             add(root, "ground_truth", cJSON_CreateNumber((double)gt->n_boxes)) &&
             add(root, "detections", cJSON_CreateNumber((double)n_dets)) &&
             add(root, "categories_with_gt", cJSON_CreateNumber(s->n_classes_with_gt)) &&
             add(root, "map50", json_value(s->voc_map)) && add(root, "map", json_value(s->coco_map)) &&
             add(root, "coco_ap50", json_value(s->coco_map_at[0])) &&
             add(root, "coco_ap75", json_value(s->coco_map_at[5]));
        cJSON_AddItemToObject(root, "categories", cats);
    } else {
        cJSON_Delete(cats);
    }
    for (int c = 0; ok && c < gt->n_categories; c++) {
        cJSON *o = cJSON_CreateObject();
        ok = o != NULL;
        if (ok)
            cJSON_AddItemToArray(cats, o);
        ok = ok && add(o, "id", cJSON_CreateNumber((double)gt->categories[c].id)) &&
             add(o, "name", cJSON_CreateString(gt->categories[c].name)) &&
             add(o, "gt", cJSON_CreateNumber((double)e[c].n_gt)) &&
             add(o, "crowd", cJSON_CreateNumber((double)e[c].n_crowd)) &&
             add(o, "detections", cJSON_CreateNumber((double)e[c].n_dets)) && add(o, "ap50", json_value(e[c].voc_ap)) &&
             add(o, "ap", json_value(e[c].coco_ap)) && add(o, "coco_ap50", json_value(e[c].coco_ap_at[0])) &&
             add(o, "coco_ap75", json_value(e[c].coco_ap_at[5]));
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) {
        fprintf(stderr, "mtl: error: out of memory writing the JSON report\n");
        return CLI_FAILED;
    }
    puts(text);
    cJSON_free(text);
    return CLI_OK;
}

static int run_evaluate(int argc, char **argv)
{
    cli_option options[] = {{"json", 0, NULL}};
    const int n_opts = (int)(sizeof(options) / sizeof(options[0]));
    const char *pos[2];
    int n_pos = 0;
    int rc = cli_parse(&cli_evaluate_detections, argc, argv, options, n_opts, pos, 2, &n_pos);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    if (n_pos != 2)
        return cli_usage_error(&cli_evaluate_detections, "GT.json and RESULTS.json are needed");
    const int json = cli_value(options, n_opts, "json") != NULL;

    mtl_error err = {0};
    mtl_coco gt;
    if (mtl_coco_read(pos[0], MTL_COCO_ANNOTATIONS, &gt, &err) != MTL_OK)
        return cli_fail(&err);
    mtl_det_result *dets = NULL;
    int64_t n_dets = 0;
    mtl_det_class_eval *per_class = calloc((size_t)gt.n_categories + 1, sizeof(*per_class));
    mtl_det_summary summary;
    mtl_status st = per_class ? mtl_coco_read_results(pos[1], &gt, &dets, &n_dets, &err)
                              : mtl_fail(&err, MTL_ERR_NOMEM, "out of memory");
    if (st == MTL_OK)
        st = mtl_det_evaluate(gt.boxes, gt.n_boxes, dets, n_dets, gt.n_images, gt.n_categories, per_class, &summary,
                              &err);
    if (st == MTL_OK) {
        if (json)
            rc = print_json(pos[0], pos[1], &gt, n_dets, per_class, &summary);
        else
            print_table(&gt, n_dets, per_class, &summary);
    }
    free(dets);
    free(per_class);
    mtl_coco_free(&gt);
    return st == MTL_OK ? rc : cli_fail(&err);
}

const cli_command cli_evaluate_detections = {
    "evaluate-detections", "VOC mAP@0.5 and COCO mAP@[.5:.95] of detections against COCO ground truth",
    evaluate_usage, run_evaluate};
