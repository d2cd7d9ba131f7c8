/* mtl plot: draws the JSON-lines log of `mtl train --log` as an SVG, one panel for each task's
 * training loss, one for the test outputs (accuracy and the like), and one more for any other
 * object of numbers a log line carries (task-balancing diagnostics): every number gets a curve. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"

static const char plot_usage[] =
    "usage: mtl plot LOG.jsonl [-o|--output CURVES.svg]\n"
    "\n"
    "Draws the JSON-lines log written by 'mtl train --log' as an SVG image with curves against the\n"
    "iteration: the training loss of each task (outputs with a loss weight; their test values dashed)\n"
    "with the total loss, and the test outputs (accuracy etc.; training values of unweighted outputs\n"
    "dashed). Other objects of numbers in the log get a panel each. The default output is the log's\n"
    "name with .svg in place of .jsonl.\n";

enum { PANEL_LOSS, PANEL_TEST };

typedef struct point {
    double x, y; /* y NaN: the log had null (a gap in the curve) */
    long seq;    /* line order, so sorting by x keeps equal iterations in log order */
} point;

typedef struct series {
    char *label;  /* legend text */
    char *colour_key;
    int panel, dashed;
    point *pts;
    int n, cap;
} series;

typedef struct plot {
    series *s;
    int n, cap;
    char **panels; /* titles; [0] and [1] fixed, then one per extra object */
    int n_panels;
    char **keys;   /* colour keys in order of first appearance */
    int n_keys;
    long seq;
} plot;

static void plot_free(plot *p)
{
    for (int i = 0; i < p->n; i++) {
        free(p->s[i].label);
        free(p->s[i].colour_key);
        free(p->s[i].pts);
    }
    for (int i = 0; i < p->n_panels; i++)
        free(p->panels[i]);
    for (int i = 0; i < p->n_keys; i++)
        free(p->keys[i]);
    free(p->s);
    free(p->panels);
    free(p->keys);
}

static int grow(void **array, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return 0;
    int n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    void *q = realloc(*array, (size_t)n * elem);
    if (!q)
        return -1;
    *array = q;
    *cap = n;
    return 0;
}

static int panel_id(plot *p, const char *title, mtl_error *err)
{
    for (int i = 0; i < p->n_panels; i++)
        if (strcmp(p->panels[i], title) == 0)
            return i;
    char **q = realloc(p->panels, (size_t)(p->n_panels + 1) * sizeof(char *));
    if (!q)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory"), -1;
    p->panels = q;
    if (!(p->panels[p->n_panels] = mtl_strdup(title)))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory"), -1;
    return p->n_panels++;
}

static mtl_status add_point(plot *p, int panel, const char *label, const char *colour_key, int dashed, double x,
                            double y, mtl_error *err)
{
    series *s = NULL;
    for (int i = 0; i < p->n && !s; i++)
        if (p->s[i].panel == panel && strcmp(p->s[i].label, label) == 0)
            s = &p->s[i];
    if (!s) {
        if (grow((void **)&p->s, &p->cap, p->n + 1, sizeof(series)))
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        s = &p->s[p->n];
        memset(s, 0, sizeof(*s));
        s->label = mtl_strdup(label);
        s->colour_key = mtl_strdup(colour_key);
        s->panel = panel;
        s->dashed = dashed;
        if (!s->label || !s->colour_key) {
            free(s->label);
            free(s->colour_key);
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        }
        p->n++;
        int known = 0;
        for (int i = 0; i < p->n_keys && !known; i++)
            known = strcmp(p->keys[i], colour_key) == 0;
        if (!known) {
            char **q = realloc(p->keys, (size_t)(p->n_keys + 1) * sizeof(char *));
            if (!q || !(q[p->n_keys] = mtl_strdup(colour_key))) {
                if (q)
                    p->keys = q;
                return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
            }
            p->keys = q;
            p->n_keys++;
        }
    }
    if (grow((void **)&s->pts, &s->cap, s->n + 1, sizeof(point)))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    s->pts[s->n++] = (point){x, y, p->seq++};
    return MTL_OK;
}

/* A number, or null (a non-finite value the solver wrote as null). Returns 0 for anything else. */
static int numeric(const cJSON *v, double *out)
{
    if (cJSON_IsNumber(v)) {
        *out = v->valuedouble;
        return 1;
    }
    if (cJSON_IsNull(v)) {
        *out = NAN;
        return 1;
    }
    return 0;
}

/* Adds v (a number, null, or an array of them: one curve per element, "name[j]"). */
static mtl_status add_value(plot *p, int panel, const char *name, const char *suffix, const char *colour_key,
                            int dashed, double x, const cJSON *v, mtl_error *err)
{
    char label[512];
    double y;
    if (numeric(v, &y)) {
        snprintf(label, sizeof(label), "%s%s", name, suffix);
        return add_point(p, panel, label, colour_key, dashed, x, y, err);
    }
    if (cJSON_IsArray(v)) {
        int j = 0;
        for (const cJSON *e = v->child; e; e = e->next, j++) {
            if (!numeric(e, &y))
                continue;
            char key[512];
            snprintf(label, sizeof(label), "%s[%d]%s", name, j, suffix);
            snprintf(key, sizeof(key), "%s[%d]", colour_key, j);
            MTL_TRY(add_point(p, panel, label, key, dashed, x, y, err));
        }
    }
    return MTL_OK;
}

/* Numbers anywhere inside obj, named by their path below it ("a.b"). The colour follows the last
 * name, so a per-task diagnostic ("loss_left") takes the colour of its task's loss. */
static mtl_status add_leaves(plot *p, int panel, const char *prefix, const char *suffix, int dashed, double x,
                             const cJSON *obj, mtl_error *err)
{
    for (const cJSON *m = obj->child; m; m = m->next) {
        const char *leaf = m->string ? m->string : "?";
        char name[512];
        snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "", leaf);
        if (cJSON_IsObject(m))
            MTL_TRY(add_leaves(p, panel, name, suffix, dashed, x, m, err));
        else
            MTL_TRY(add_value(p, panel, name, suffix, leaf, dashed, x, m, err));
    }
    return MTL_OK;
}

/* A top-level object other than "outputs" (task-balancing diagnostics and the like): each object in
 * it gets a panel of its own ("balance: weights"), as its numbers share a scale; numbers directly in
 * it share one panel ("balance"). */
static mtl_status add_extra(plot *p, const cJSON *obj, const char *suffix, int dashed, double x, mtl_error *err)
{
    for (const cJSON *m = obj->child; m; m = m->next) {
        const char *leaf = m->string ? m->string : "?";
        char title[512];
        if (cJSON_IsObject(m))
            snprintf(title, sizeof(title), "%s: %s", obj->string, leaf);
        else
            snprintf(title, sizeof(title), "%s", obj->string);
        int panel = panel_id(p, title, err);
        if (panel < 0)
            return err->status;
        if (cJSON_IsObject(m))
            MTL_TRY(add_leaves(p, panel, "", suffix, dashed, x, m, err));
        else
            MTL_TRY(add_value(p, panel, leaf, suffix, leaf, dashed, x, m, err));
    }
    return MTL_OK;
}

/* One train or test record: the total loss, each output by its weight, and extra objects. */
static mtl_status add_record(plot *p, const cJSON *line, int test, double iter, mtl_error *err)
{
    char suffix[64] = "";
    const cJSON *net = cJSON_GetObjectItemCaseSensitive(line, "net");
    if (test && cJSON_IsNumber(net) && net->valuedouble != 0)
        snprintf(suffix, sizeof(suffix), " (test net %d)", net->valueint);
    char loss_suffix[80];
    snprintf(loss_suffix, sizeof(loss_suffix), "%s%s", test ? " (test)" : "", suffix);

    const cJSON *loss = cJSON_GetObjectItemCaseSensitive(line, "loss");
    double y;
    if (loss && numeric(loss, &y))
        MTL_TRY(add_value(p, PANEL_LOSS, "total loss", loss_suffix, "total loss", test, iter, loss, err));
    const cJSON *outputs = cJSON_GetObjectItemCaseSensitive(line, "outputs");
    for (const cJSON *o = cJSON_IsObject(outputs) ? outputs->child : NULL; o; o = o->next) {
        const cJSON *value = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "value") : o;
        const cJSON *weight = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "weight") : NULL;
        int weighted = cJSON_IsNumber(weight) && weight->valuedouble != 0;
        const char *name = o->string ? o->string : "?";
        if (weighted)
            MTL_TRY(add_value(p, PANEL_LOSS, name, loss_suffix, name, test, iter, value, err));
        else
            MTL_TRY(add_value(p, PANEL_TEST, name, test ? suffix : " (train)", name, !test, iter, value, err));
    }
    for (const cJSON *m = line->child; m; m = m->next) {
        if (cJSON_IsObject(m) && m->string && strcmp(m->string, "outputs") != 0)
            MTL_TRY(add_extra(p, m, test ? loss_suffix : "", test, iter, err));
    }
    return MTL_OK;
}

static mtl_status read_log(const char *path, plot *p, mtl_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return mtl_fail(err, errno == ENOENT ? MTL_ERR_NOT_FOUND : MTL_ERR_IO, "cannot read the log '%s': %s", path,
                        strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long line_no = 0, records = 0, nonblank = 0;
    mtl_status st = MTL_OK;
    while (st == MTL_OK && (len = getline(&line, &cap, f)) >= 0) {
        line_no++;
        size_t start = strspn(line, " \t\r\n");
        if (line[start] == '\0')
            continue;
        nonblank++;
        cJSON *j = cJSON_Parse(line);
        if (!cJSON_IsObject(j)) {
            st = mtl_fail(err, MTL_ERR_PARSE, "%s:%ld: not a JSON object (a log line of 'mtl train --log' is one)",
                          path, line_no);
            cJSON_Delete(j);
            break;
        }
        const cJSON *phase = cJSON_GetObjectItemCaseSensitive(j, "phase");
        const char *ph = cJSON_IsString(phase) ? phase->valuestring : "";
        int train = strcmp(ph, "train") == 0, test = strcmp(ph, "test") == 0;
        if (train || test) {
            const cJSON *iter = cJSON_GetObjectItemCaseSensitive(j, "iter");
            if (!cJSON_IsNumber(iter))
                st = mtl_fail(err, MTL_ERR_PARSE, "%s:%ld: a %s record without a numeric \"iter\"", path, line_no, ph);
            else
                st = add_record(p, j, test, iter->valuedouble, err);
            records++;
        }
        cJSON_Delete(j);
    }
    if (st == MTL_OK && ferror(f))
        st = mtl_fail(err, MTL_ERR_IO, "cannot read the log '%s': %s", path, strerror(errno));
    free(line);
    fclose(f);
    if (st == MTL_OK && nonblank == 0)
        st = mtl_fail(err, MTL_ERR_PARSE, "the log '%s' is empty", path);
    else if (st == MTL_OK && (records == 0 || p->n == 0))
        st = mtl_fail(err, MTL_ERR_PARSE, "the log '%s' has no train or test records with values "
                      "(is it the --log of 'mtl train'?)", path);
    return st;
}

/* ================================================================== drawing */

#define SVG_W 960
#define PANEL_H 340
#define TOP 44
#define LEFT 78
#define PLOT_W 600
#define PLOT_TOP 34  /* panel title above the plot area */
#define PLOT_H 250
#define LEGEND_X (LEFT + PLOT_W + 24)

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};

static const char *colour_of(const plot *p, const char *key)
{
    if (strcmp(key, "total loss") == 0)
        return "#333333";
    int k = 0, idx = 0;
    for (int i = 0; i < p->n_keys; i++) {
        if (strcmp(p->keys[i], "total loss") == 0)
            continue;
        if (strcmp(p->keys[i], key) == 0)
            idx = k;
        k++;
    }
    return palette[idx % (int)(sizeof(palette) / sizeof(palette[0]))];
}

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f); break;
        }
    }
}

/* A 1-2-5 step giving about `target` ticks over [lo, hi]. */
static double nice_step(double lo, double hi, int target)
{
    double raw = (hi - lo) / target;
    double mag = pow(10, floor(log10(raw)));
    double norm = raw / mag;
    return (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
}

static void format_tick(char *buf, size_t size, double v, double step)
{
    int decimals = 0;
    while (decimals < 8 && fabs(step * pow(10, decimals) - floor(step * pow(10, decimals) + 0.5)) > 1e-6)
        decimals++;
    if (fabs(v) < step * 1e-6)
        v = 0;
    snprintf(buf, size, "%.*f", decimals, v);
}

/* Data range widened to whole ticks; a flat range gets some height. */
static void axis_range(double lo, double hi, double *out_lo, double *out_hi, double *step)
{
    if (!(hi > lo)) {
        double pad = lo != 0 ? fabs(lo) * 0.1 : 1.0;
        lo -= pad;
        hi += pad;
    }
    *step = nice_step(lo, hi, 5);
    *out_lo = floor(lo / *step + 1e-9) * *step;
    *out_hi = ceil(hi / *step - 1e-9) * *step;
}

static int cmp_point(const void *a, const void *b)
{
    const point *p = a, *q = b;
    if (p->x != q->x)
        return p->x < q->x ? -1 : 1;
    return p->seq < q->seq ? -1 : p->seq > q->seq;
}

static void draw_panel(FILE *f, const plot *p, int panel, double y0, double x_lo, double x_hi, double x_step)
{
    double y_min = INFINITY, y_max = -INFINITY;
    int n_series = 0;
    for (int i = 0; i < p->n; i++) {
        if (p->s[i].panel != panel)
            continue;
        n_series++;
        for (int k = 0; k < p->s[i].n; k++) {
            double y = p->s[i].pts[k].y;
            if (isfinite(y)) {
                y_min = fmin(y_min, y);
                y_max = fmax(y_max, y);
            }
        }
    }
    if (!isfinite(y_min))
        y_min = y_max = 0;
    double lo, hi, step;
    axis_range(y_min, y_max, &lo, &hi, &step);
    double top = y0 + PLOT_TOP, bottom = top + PLOT_H;
#define SX(v) (LEFT + ((v) - x_lo) / (x_hi - x_lo) * PLOT_W)
#define SY(v) (bottom - ((v) - lo) / (hi - lo) * PLOT_H)

    const char *title = panel == PANEL_LOSS ? "Training loss per task" : panel == PANEL_TEST ? "Test outputs"
                                                                                           : p->panels[panel];
    fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"15\" font-weight=\"bold\">", LEFT, y0 + 20);
    xml_text(f, title);
    fprintf(f, "</text>\n");
    fprintf(f, "<rect x=\"%d\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"#ffffff\" stroke=\"#000000\"/>\n", LEFT,
            top, PLOT_W, PLOT_H);
    char label[64];
    for (double t = lo; t <= hi + step * 1e-6; t += step) {
        format_tick(label, sizeof(label), t, step);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", LEFT, SY(t),
                LEFT + PLOT_W, SY(t));
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#000000\"/>\n", LEFT - 5, SY(t), LEFT,
                SY(t));
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%s</text>\n", LEFT - 8,
                SY(t) + 4, label);
    }
    for (double t = x_lo; t <= x_hi + x_step * 1e-6; t += x_step) {
        format_tick(label, sizeof(label), t, x_step);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000000\"/>\n", SX(t), bottom, SX(t),
                bottom + 5);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">%s</text>\n", SX(t),
                bottom + 18, label);
    }
    fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">iteration</text>\n",
            LEFT + PLOT_W / 2, bottom + 36);
    fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 %d %.1f)\">"
               "%s</text>\n",
            LEFT - 52, top + PLOT_H / 2.0, LEFT - 52, top + PLOT_H / 2.0, panel == PANEL_LOSS ? "loss" : "value");

    int row = 0;
    double legend_step = n_series > 0 && n_series * 18 > PLOT_H + 30 ? (PLOT_H + 30.0) / n_series : 18;
    for (int k = 0; k < 2 * p->n; k++) { /* solid curves first, then dashed ones */
        const series *s = &p->s[k % p->n];
        if (s->panel != panel || s->dashed != (k >= p->n))
            continue;
        const char *colour = colour_of(p, s->colour_key);
        const char *dash = s->dashed ? " stroke-dasharray=\"6 3\"" : "";
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\"%s d=\"", colour, dash);
        int pen_down = 0;
        for (int k = 0; k < s->n; k++) {
            if (!isfinite(s->pts[k].y)) {
                pen_down = 0;
                continue;
            }
            fprintf(f, "%s%.1f %.1f ", pen_down ? "L" : "M", SX(s->pts[k].x), SY(s->pts[k].y));
            pen_down = 1;
        }
        fprintf(f, "\"/>\n");
        if (s->n <= 60)
            for (int k = 0; k < s->n; k++)
                if (isfinite(s->pts[k].y))
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", SX(s->pts[k].x),
                            SY(s->pts[k].y), colour);
        double ly = top + 6 + row * legend_step;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
                LEGEND_X, ly, LEGEND_X + 26, ly, colour, dash);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"12\">", LEGEND_X + 32, ly + 4);
        xml_text(f, s->label);
        fprintf(f, "</text>\n");
        row++;
    }
#undef SX
#undef SY
}

static mtl_status write_svg(const char *path, const char *log_path, plot *p, mtl_error *err)
{
    double x_min = INFINITY, x_max = -INFINITY;
    int used[64] = {0}, n_used = 0;
    for (int i = 0; i < p->n; i++) {
        series *s = &p->s[i];
        qsort(s->pts, (size_t)s->n, sizeof(point), cmp_point);
        for (int k = 0; k < s->n; k++) {
            x_min = fmin(x_min, s->pts[k].x);
            x_max = fmax(x_max, s->pts[k].x);
        }
        if (s->panel < 64)
            used[s->panel] = 1;
    }
    for (int k = 0; k < p->n_panels && k < 64; k++)
        n_used += used[k];
    double x_lo, x_hi, x_step;
    axis_range(x_min, x_max, &x_lo, &x_hi, &x_step);
    if (x_min >= 0 && x_lo < 0)
        x_lo = 0;

    size_t len = strlen(path);
    char *tmp = malloc(len + 16);
    if (!tmp)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    snprintf(tmp, len + 16, "%s.partial", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        mtl_status st = mtl_fail(err, MTL_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    int height = TOP + n_used * PANEL_H + 10;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\">\n", SVG_W, height, SVG_W, height);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n");
    fprintf(f, "<text x=\"%d\" y=\"26\" font-size=\"17\">Training curves: ", LEFT);
    xml_text(f, log_path);
    fprintf(f, "</text>\n");
    int row = 0;
    for (int k = 0; k < p->n_panels && k < 64; k++)
        if (used[k])
            draw_panel(f, p, k, TOP + (row++) * PANEL_H, x_lo, x_hi, x_step);
    fprintf(f, "</svg>\n");
    int bad = fflush(f) != 0 || ferror(f);
    int e = errno;
    bad |= fclose(f) != 0;
    mtl_status st = MTL_OK;
    if (bad || rename(tmp, path) != 0) {
        st = mtl_fail(err, MTL_ERR_IO, "cannot write '%s': %s", path, strerror(bad ? e : errno));
        remove(tmp);
    }
    free(tmp);
    return st;
}

static int run_plot(int argc, char **argv)
{
    /* "-o FILE" is the usual spelling; the shared parser knows long options only */
    char **args = malloc(((size_t)argc + 1) * sizeof(char *));
    if (!args) {
        fprintf(stderr, "mtl: error: out of memory\n");
        return CLI_FAILED;
    }
    for (int i = 0; i < argc; i++)
        args[i] = strcmp(argv[i], "-o") == 0 ? "--output" : argv[i];
    args[argc] = NULL;
    cli_option options[] = {{"output", 1, NULL}};
    const char *positional[1];
    int n_pos;
    int rc = cli_parse(&cli_plot, argc, args, options, 1, positional, 1, &n_pos);
    free(args);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    if (n_pos != 1)
        return cli_usage_error(&cli_plot, "expected one LOG.jsonl");
    const char *log_path = positional[0];
    const char *out = cli_value(options, 1, "output");
    char *default_out = NULL;
    if (!out) {
        size_t len = strlen(log_path);
        const char *ext = len > 6 && strcmp(log_path + len - 6, ".jsonl") == 0 ? log_path + len - 6 : log_path + len;
        if (!(default_out = malloc(len + 5))) {
            fprintf(stderr, "mtl: error: out of memory\n");
            return CLI_FAILED;
        }
        snprintf(default_out, len + 5, "%.*s.svg", (int)(ext - log_path), log_path);
        out = default_out;
    }
    if (!*out)
        return cli_usage_error(&cli_plot, "the output name is empty");

    plot p = {0};
    mtl_error err = {0};
    mtl_status st = MTL_OK;
    if (panel_id(&p, "loss", &err) != PANEL_LOSS || panel_id(&p, "test", &err) != PANEL_TEST)
        st = err.status;
    if (st == MTL_OK)
        st = read_log(log_path, &p, &err);
    if (st == MTL_OK)
        st = write_svg(out, log_path, &p, &err);
    if (st == MTL_OK) {
        int panels = 0;
        for (int k = 0; k < p.n_panels; k++)
            for (int i = 0; i < p.n; i++)
                if (p.s[i].panel == k) {
                    panels++;
                    break;
                }
        printf("wrote %s: %d curves in %d panels\n", out, p.n, panels);
    }
    plot_free(&p);
    free(default_out);
    return st == MTL_OK ? CLI_OK : cli_fail(&err);
}

const cli_command cli_plot = {"plot", "draw per-task curves from a JSON-lines training log", plot_usage, run_plot};
