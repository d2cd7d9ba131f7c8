/* The solver: SolverParameter parsing, net construction, Caffe's training loop (Solver::Step and
 * Solve), testing, display and the JSON-lines log, and snapshots. The arithmetic of an update lives
 * in core/update.c; the file format in core/snapshot.c; task balancing (each pass's backward and the
 * display diagnostics) in balance/. */
#include "core/solver.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/snapshot.h"

#define LOG_LINE_MAX 4096
/* the snapshot entry (among the layer states) holding the task balancer's state */
#define BALANCE_STATE_NAME "#task_balance"
/* and the task-wise early stopping record */
#define EARLY_STOP_STATE_NAME "#task_early_stop"
/* layers whose statistics one display shows, at most */
#define MTL_SOLVER_MAX_STATS 8

/* ================================================================== small helpers */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* dir joined with p, unless p is absolute or dir is empty. */
static char *resolve_path(const char *dir, const char *p)
{
    if (p[0] == '/' || !dir || !dir[0])
        return mtl_strdup(p);
    return str_printf("%s/%s", dir, p);
}

/* The directory part of path ("" when it has none). */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return mtl_strdup("");
    if (slash == path)
        return mtl_strdup("/");
    return str_printf("%.*s", (int)(slash - path), path);
}

/* path without its directory and extension. */
static char *stem_of(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    return str_printf("%.*s", (int)n, base);
}

/* ---------------------------------------------------------------- growable text (JSON lines) */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->p && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *grown = realloc(b->p, cap);
        if (!grown) {
            b->failed = 1;
            return;
        }
        b->p = grown;
        b->cap = cap;
    }
}

/* A JSON number with the fewest digits that read back as the same float (every value reported
 * comes from float arithmetic, so more digits would only show rounding noise). NaN and infinities
 * have no JSON form: null. */
static void sb_number(sbuf *b, double v)
{
    if (!isfinite(v)) {
        sb_printf(b, "null");
        return;
    }
    char text[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(text, sizeof(text), "%.*g", digits, v);
        if (strtof(text, NULL) == (float)v)
            break;
    }
    sb_printf(b, "%s", text);
}

static void sb_string(sbuf *b, const char *s)
{
    sb_printf(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            sb_printf(b, "\\%c", c);
        else if (c < 0x20)
            sb_printf(b, "\\u%04x", c);
        else
            sb_printf(b, "%c", c);
    }
    sb_printf(b, "\"");
}

/* ================================================================== logging */

static void say(const mtl_solver *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const mtl_solver *s, const char *fmt, ...)
{
    if (!s->opts.log_fn && !s->opts.log)
        return;
    char line[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (s->opts.log_fn) {
        s->opts.log_fn(s->opts.log_user, line);
    } else {
        fprintf(s->opts.log, "%s\n", line);
        fflush(s->opts.log);
    }
}

static void json_emit(const mtl_solver *s, sbuf *b)
{
    if (s->opts.json && !b->failed && b->p) {
        fprintf(s->opts.json, "%s\n", b->p);
        fflush(s->opts.json);
    }
    free(b->p);
}

static int stop_requested(const mtl_solver *s) { return s->opts.stop_flag && *s->opts.stop_flag; }

/* ================================================================== outputs */

static void outputs_free(mtl_solver_outputs *o)
{
    free(o->blob);
    free(o->index);
    free(o->weight);
    free(o->value);
    memset(o, 0, sizeof(*o));
}

static float blob_loss_weight(const mtl_net *net, int blob)
{
    for (int t = 0; t < net->n_tasks; t++) {
        const mtl_layer *l = net->layers[net->tasks[t].layer];
        if (l->tops[net->tasks[t].top] == net->blobs[blob])
            return net->tasks[t].weight;
    }
    return 0.0f;
}

/* The values a net reports: its output blobs, then loss tops some layer reads (in net order). */
static mtl_status outputs_init(const mtl_net *net, mtl_solver_outputs *o, mtl_error *err)
{
    int n_blobs = 0;
    int *blobs = calloc((size_t)net->n_blobs + 1, sizeof(int));
    if (!blobs)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < net->n_outputs; i++)
        blobs[n_blobs++] = net->output_blobs[i];
    for (int t = 0; t < net->n_tasks; t++) {
        const mtl_layer *l = net->layers[net->tasks[t].layer];
        int b = mtl_net_tensor_index(net, l->tops[net->tasks[t].top]);
        int seen = b < 0;
        for (int i = 0; i < n_blobs && !seen; i++)
            seen = blobs[i] == b;
        if (!seen)
            blobs[n_blobs++] = b;
    }
    int64_t n = 0;
    for (int i = 0; i < n_blobs; i++)
        n += net->blobs[blobs[i]]->count;
    o->n = (int)n;
    o->blob = calloc((size_t)n + 1, sizeof(int));
    o->index = calloc((size_t)n + 1, sizeof(int));
    o->weight = calloc((size_t)n + 1, sizeof(float));
    o->value = calloc((size_t)n + 1, sizeof(double));
    if (!o->blob || !o->index || !o->weight || !o->value) {
        free(blobs);
        outputs_free(o);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    }
    int k = 0;
    for (int i = 0; i < n_blobs; i++) {
        const mtl_tensor *t = net->blobs[blobs[i]];
        float w = blob_loss_weight(net, blobs[i]);
        for (int64_t j = 0; j < t->count; j++, k++) {
            o->blob[k] = blobs[i];
            o->index[k] = (int)j;
            o->weight[k] = w;
        }
    }
    free(blobs);
    return MTL_OK;
}

/* Adds the net's current output values to sum[]. */
static void outputs_accumulate(const mtl_net *net, const mtl_solver_outputs *o, double *sum)
{
    for (int k = 0; k < o->n; k++) {
        const mtl_tensor *t = net->blobs[o->blob[k]];
        sum[k] += o->index[k] < t->count ? (double)t->data[o->index[k]] : NAN;
    }
}

/* "    Train net output #3: loss_a = 0.53 (* 0.5 = 0.265 loss)" for every value. */
static void outputs_say(const mtl_solver *s, const mtl_net *net, const mtl_solver_outputs *o, const char *label)
{
    for (int k = 0; k < o->n; k++) {
        const char *name = net->blobs[o->blob[k]]->name;
        if (o->weight[k] != 0.0f)
            say(s, "    %s net output #%d: %s = %g (* %g = %g loss)", label, k, name, o->value[k], o->weight[k],
                o->weight[k] * o->value[k]);
        else
            say(s, "    %s net output #%d: %s = %g", label, k, name, o->value[k]);
    }
}

/* "outputs":{"name":{"value":v or [..],"weight":w},...} */
static void outputs_json(sbuf *b, const mtl_net *net, const mtl_solver_outputs *o)
{
    sb_printf(b, "\"outputs\":{");
    for (int k = 0; k < o->n;) {
        int blob = o->blob[k], end = k;
        while (end < o->n && o->blob[end] == blob)
            end++;
        sb_printf(b, "%s", k ? "," : "");
        sb_string(b, net->blobs[blob]->name);
        sb_printf(b, ":{\"value\":");
        if (end - k == 1 && net->blobs[blob]->count == 1) {
            sb_number(b, o->value[k]);
        } else {
            sb_printf(b, "[");
            for (int j = k; j < end; j++) {
                sb_printf(b, "%s", j > k ? "," : "");
                sb_number(b, o->value[j]);
            }
            sb_printf(b, "]");
        }
        sb_printf(b, ",\"weight\":");
        sb_number(b, o->weight[k]);
        sb_printf(b, "}");
        k = end;
    }
    sb_printf(b, "}");
}

/* ---------------------------------------------------------------- the smoothing window */

static void window_push(mtl_solver *s, double loss, const double *values)
{
    float *row = s->window + s->window_pos * s->window_width;
    row[0] = (float)loss;
    for (int k = 0; k < s->train_out.n; k++)
        row[1 + k] = (float)values[k];
    s->window_pos = (s->window_pos + 1) % s->window_size;
    if (s->window_fill < s->window_size)
        s->window_fill++;
}

/* The smoothed loss and outputs: means over the filled rows, summed in row order. */
static void window_mean(mtl_solver *s)
{
    if (s->window_fill == 0)
        return;
    for (int c = 0; c < s->window_width; c++) {
        double sum = 0;
        for (int64_t r = 0; r < s->window_fill; r++)
            sum += s->window[r * s->window_width + c];
        double mean = sum / (double)s->window_fill;
        if (c == 0)
            s->train_out.loss = mean;
        else
            s->train_out.value[c - 1] = mean;
    }
}

/* ================================================================== configuration */

/* Reading comes in two phases: every field is read first (so the unknown-field check, with its
 * "did you mean", runs before any complaint about a missing or inconsistent value, which a typo
 * would otherwise cause), then the values are checked against each other. */

static const char *const solver_mode_names[] = {"CPU", "GPU"};
static const char *const snapshot_format_names[] = {"HDF5", "BINARYPROTO"};
static const char *const legacy_type_names[] = {"SGD", "NESTEROV", "ADAGRAD", "RMSPROP", "ADADELTA", "ADAM"};
static const mtl_update_type legacy_types[] = {MTL_UPDATE_SGD, MTL_UPDATE_NESTEROV, MTL_UPDATE_ADAGRAD,
                                               MTL_UPDATE_RMSPROP, MTL_UPDATE_COUNT, MTL_UPDATE_ADAM};
static const char *const phase_names[] = {"TRAIN", "TEST"};
static const char *const solver_types_text = "SGD, Nesterov, Adam, AdamW, RMSProp and AdaGrad";
static const char *const lr_policies_text = "fixed, step, multistep, exp, inv, poly, sigmoid and cosine";

/* Where a net comes from: a file or an inline NetParameter, with the NetState the solver gives it. */
typedef struct net_source {
    char *file;               /* resolved path, or NULL */
    mtl_cfg_node *inline_cfg; /* borrowed from the solver's tree */
    mtl_cfg_node *state;      /* borrowed NetState message, or NULL */
    mtl_phase phase;
} net_source;

/* Fields as read, before they are checked. Strings and nodes belong to the solver's tree. */
typedef struct raw_fields {
    const char *net_file, *train_file;
    mtl_cfg_node *net_param, *train_param, *train_state;
    int n_test_params, n_test_files, n_test_states, n_weights;
    const char *type, *lr_policy, *regularization, *snapshot_prefix;
    int legacy_type, has_type, has_legacy_type;
    int has_base_lr, has_gamma, has_power, has_min_lr, has_warmup_start_lr;
    int solver_mode;
} raw_fields;

typedef struct parse_ctx {
    mtl_cfg_node *root;
    raw_fields raw;
    net_source train;
    int n_tests;
    net_source *tests;
    int n_weights;
    char **weights;
} parse_ctx;

static void parse_ctx_free(parse_ctx *c)
{
    free(c->train.file);
    for (int i = 0; i < c->n_tests; i++)
        free(c->tests[i].file);
    free(c->tests);
    for (int i = 0; i < c->n_weights; i++)
        free(c->weights[i]);
    free(c->weights);
    mtl_cfg_free(c->root);
}

static mtl_status read_float(mtl_cfg_node *root, const char *name, double def, float *out, mtl_error *err)
{
    double v;
    MTL_TRY(mtl_cfg_float(root, name, def, &v, err));
    *out = (float)v;
    return MTL_OK;
}

/* The node of field `name` for an error message, or `fallback` when the field is absent. */
static mtl_cfg_node *at(mtl_cfg_node *root, const char *name, mtl_cfg_node *fallback)
{
    mtl_cfg_node *node = mtl_cfg_field(root, name, 0);
    return node ? node : fallback;
}

/* ---------------------------------------------------------------- phase 1: reading */

/* A NetState message the solver gives a net (train_state, test_state): its fields are read here,
 * where their positions are the solver file's, and the message is copied into the net's config. */
static mtl_status read_net_state(mtl_cfg_node *state, mtl_phase def, mtl_phase *phase, mtl_error *err)
{
    int p;
    int64_t level;
    MTL_TRY(mtl_cfg_enum(state, "phase", phase_names, 2, (int)def, &p, err));
    MTL_TRY(mtl_cfg_int(state, "level", 0, &level, err));
    int n = mtl_cfg_count(state, "stage");
    for (int i = 0; i < n; i++) {
        const char *stage;
        MTL_TRY(mtl_cfg_string_at(state, "stage", i, &stage, err));
    }
    *phase = (mtl_phase)p;
    return MTL_OK;
}

static mtl_status read_net_fields(mtl_cfg_node *root, parse_ctx *ctx, mtl_solver_config *c, mtl_error *err)
{
    raw_fields *r = &ctx->raw;
    MTL_TRY(mtl_cfg_string(root, "net", NULL, &r->net_file, err));
    MTL_TRY(mtl_cfg_message(root, "net_param", &r->net_param, err));
    MTL_TRY(mtl_cfg_string(root, "train_net", NULL, &r->train_file, err));
    MTL_TRY(mtl_cfg_message(root, "train_net_param", &r->train_param, err));
    MTL_TRY(mtl_cfg_message(root, "train_state", &r->train_state, err));
    ctx->train.phase = MTL_PHASE_TRAIN;
    if (r->train_state)
        MTL_TRY(read_net_state(r->train_state, MTL_PHASE_TRAIN, &ctx->train.phase, err));
    r->n_test_params = mtl_cfg_count(root, "test_net_param");
    for (int i = 0; i < r->n_test_params; i++)
        mtl_cfg_field(root, "test_net_param", i);
    r->n_test_files = mtl_cfg_count(root, "test_net");
    for (int i = 0; i < r->n_test_files; i++) {
        const char *f;
        MTL_TRY(mtl_cfg_string_at(root, "test_net", i, &f, err));
    }
    c->n_test_iter = mtl_cfg_count(root, "test_iter");
    c->test_iter = calloc((size_t)c->n_test_iter + 1, sizeof(int64_t));
    if (!c->test_iter)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < c->n_test_iter; i++)
        MTL_TRY(mtl_cfg_int_at(root, "test_iter", i, &c->test_iter[i], err));
    r->n_test_states = mtl_cfg_count(root, "test_state");
    for (int i = 0; i < r->n_test_states; i++) {
        mtl_phase ignored;
        MTL_TRY(read_net_state(mtl_cfg_field(root, "test_state", i), MTL_PHASE_TEST, &ignored, err));
    }
    r->n_weights = mtl_cfg_count(root, "weights");
    for (int i = 0; i < r->n_weights; i++) {
        const char *w;
        MTL_TRY(mtl_cfg_string_at(root, "weights", i, &w, err));
    }
    /* the inline nets are built from copies, whose fields the net checks */
    mtl_cfg_accept(root, "net_param");
    mtl_cfg_accept(root, "train_net_param");
    mtl_cfg_accept(root, "test_net_param");
    return MTL_OK;
}

static mtl_status read_schedule(mtl_cfg_node *root, raw_fields *r, mtl_solver_config *c,
                                const mtl_solver_options *opts, mtl_error *err)
{
    MTL_TRY(mtl_cfg_int_range(root, "max_iter", 0, 0, INT64_MAX, &c->max_iter, err));
    if (opts->max_iter > 0)
        c->max_iter = opts->max_iter;
    MTL_TRY(mtl_cfg_int_range(root, "iter_size", 1, 1, INT32_MAX, &c->iter_size, err));
    MTL_TRY(mtl_cfg_int_range(root, "display", 0, 0, INT64_MAX, &c->display, err));
    MTL_TRY(mtl_cfg_int_range(root, "average_loss", 1, 1, 1 << 20, &c->average_loss, err));
    MTL_TRY(mtl_cfg_int_range(root, "test_interval", 0, 0, INT64_MAX, &c->test_interval, err));
    MTL_TRY(mtl_cfg_bool(root, "test_initialization", 1, &c->test_initialization, err));
    MTL_TRY(mtl_cfg_bool(root, "test_compute_loss", 0, &c->test_compute_loss, err));
    MTL_TRY(mtl_cfg_int_range(root, "snapshot", 0, 0, INT64_MAX, &c->snapshot, err));
    MTL_TRY(mtl_cfg_string(root, "snapshot_prefix", NULL, &r->snapshot_prefix, err));
    MTL_TRY(mtl_cfg_bool(root, "snapshot_after_train", 1, &c->snapshot_after_train, err));
    MTL_TRY(mtl_cfg_bool(root, "snapshot_diff", 0, &c->snapshot_diff, err));
    MTL_TRY(mtl_cfg_bool(root, "debug_info", 0, &c->debug_info, err));
    int format, layer_wise_reduce;
    int64_t device_id, seed;
    /* mtl writes its own format whichever of Caffe's is named */
    MTL_TRY(mtl_cfg_enum(root, "snapshot_format", snapshot_format_names, 2, 1, &format, err));
    MTL_TRY(mtl_cfg_enum(root, "solver_mode", solver_mode_names, 2, 0, &r->solver_mode, err));
    MTL_TRY(mtl_cfg_int(root, "device_id", 0, &device_id, err));
    MTL_TRY(mtl_cfg_bool(root, "layer_wise_reduce", 1, &layer_wise_reduce, err));
    MTL_TRY(mtl_cfg_int(root, "random_seed", -1, &seed, err));
    c->seed = seed >= 0 ? (uint64_t)seed : MTL_SOLVER_DEFAULT_SEED;
    return MTL_OK;
}

static mtl_status read_update_fields(mtl_cfg_node *root, raw_fields *r, mtl_solver_config *c, mtl_error *err)
{
    mtl_update_config *u = &c->update;
    MTL_TRY(mtl_cfg_string(root, "type", "SGD", &r->type, err));
    MTL_TRY(mtl_cfg_enum(root, "solver_type", legacy_type_names, 6, 0, &r->legacy_type, err));
    r->has_type = mtl_cfg_count(root, "type") > 0;
    r->has_legacy_type = mtl_cfg_count(root, "solver_type") > 0;
    MTL_TRY(read_float(root, "momentum", 0.0, &u->momentum, err));
    MTL_TRY(read_float(root, "momentum2", 0.999, &u->momentum2, err));
    MTL_TRY(read_float(root, "delta", 1e-8, &u->delta, err));
    MTL_TRY(read_float(root, "rms_decay", 0.99, &u->rms_decay, err));
    MTL_TRY(read_float(root, "weight_decay", 0.0, &u->weight_decay, err));
    MTL_TRY(read_float(root, "clip_gradients", -1.0, &c->clip_gradients, err));
    return mtl_cfg_string(root, "regularization_type", "L2", &r->regularization, err);
}

static mtl_status read_lr_fields(mtl_cfg_node *root, raw_fields *r, mtl_solver_config *c, mtl_error *err)
{
    mtl_lr_policy *p = &c->lr;
    MTL_TRY(mtl_cfg_string(root, "lr_policy", NULL, &r->lr_policy, err));
    MTL_TRY(mtl_cfg_float(root, "base_lr", 0.0, &p->base_lr, err));
    MTL_TRY(mtl_cfg_float(root, "gamma", 0.0, &p->gamma, err));
    MTL_TRY(mtl_cfg_float(root, "power", 0.0, &p->power, err));
    MTL_TRY(mtl_cfg_float(root, "min_lr", 0.0, &p->min_lr, err));
    MTL_TRY(mtl_cfg_int(root, "stepsize", 0, &p->stepsize, err));
    MTL_TRY(mtl_cfg_int_range(root, "warmup_iter", 0, 0, INT64_MAX, &p->warmup_iter, err));
    MTL_TRY(mtl_cfg_float(root, "warmup_start_lr", 0.0, &p->warmup_start_lr, err));
    r->has_base_lr = mtl_cfg_count(root, "base_lr") > 0;
    r->has_gamma = mtl_cfg_count(root, "gamma") > 0;
    r->has_power = mtl_cfg_count(root, "power") > 0;
    r->has_min_lr = mtl_cfg_count(root, "min_lr") > 0;
    r->has_warmup_start_lr = mtl_cfg_count(root, "warmup_start_lr") > 0;
    int n_steps = mtl_cfg_count(root, "stepvalue");
    c->stepvalues = calloc((size_t)n_steps + 1, sizeof(int64_t));
    if (!c->stepvalues)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n_steps; i++)
        MTL_TRY(mtl_cfg_int_at(root, "stepvalue", i, &c->stepvalues[i], err));
    p->stepvalues = c->stepvalues;
    p->n_stepvalues = n_steps;
    p->max_iter = c->max_iter;
    return MTL_OK;
}

/* ---------------------------------------------------------------- phase 2: checking */

static mtl_status add_test_source(parse_ctx *ctx, const char *dir, const char *file, mtl_cfg_node *inline_cfg,
                                  mtl_error *err)
{
    net_source *grown = realloc(ctx->tests, (size_t)(ctx->n_tests + 1) * sizeof(*grown));
    if (!grown)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    ctx->tests = grown;
    net_source *src = &ctx->tests[ctx->n_tests++];
    *src = (net_source){.inline_cfg = inline_cfg, .phase = MTL_PHASE_TEST};
    if (file && !(src->file = resolve_path(dir, file)))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    return MTL_OK;
}

/* The train and test nets, in Caffe's order: train from exactly one of train_net_param, train_net,
 * net_param, net; tests from test_net_param, then test_net, then as many instances of
 * net/net_param as test_iter entries remain. */
static mtl_status check_nets(mtl_cfg_node *root, const char *dir, parse_ctx *ctx, mtl_solver_config *c,
                             mtl_error *err)
{
    const raw_fields *r = &ctx->raw;
    int n_train = (r->net_file != NULL) + (r->net_param != NULL) + (r->train_file != NULL) + (r->train_param != NULL);
    if (n_train == 0)
        return mtl_cfg_fail(root, err, MTL_ERR_CONFIG,
                            "no train net: give one of net, net_param, train_net or train_net_param");
    if (n_train > 1)
        return mtl_cfg_fail(root, err, MTL_ERR_CONFIG,
                            "more than one train net: give only one of net, net_param, train_net and "
                            "train_net_param");
    const char *file = r->train_file ? r->train_file : r->net_file;
    if (file && !(ctx->train.file = resolve_path(dir, file)))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    ctx->train.inline_cfg = r->train_param ? r->train_param : r->net_param;
    ctx->train.state = r->train_state;

    for (int i = 0; i < r->n_test_params; i++)
        MTL_TRY(add_test_source(ctx, dir, NULL, mtl_cfg_field(root, "test_net_param", i), err));
    for (int i = 0; i < r->n_test_files; i++) {
        const char *f;
        MTL_TRY(mtl_cfg_string_at(root, "test_net", i, &f, err));
        MTL_TRY(add_test_source(ctx, dir, f, NULL, err));
    }
    int explicit_tests = ctx->n_tests;
    int has_generic = r->net_file || r->net_param;
    if (has_generic ? c->n_test_iter < explicit_tests : c->n_test_iter != explicit_tests)
        return mtl_cfg_fail(at(root, "test_iter", root), err, MTL_ERR_CONFIG,
                            "test_iter must be given once for each test net (%d test_iter, %d test nets)",
                            c->n_test_iter, explicit_tests);
    for (int i = explicit_tests; i < c->n_test_iter; i++)
        MTL_TRY(add_test_source(ctx, dir, r->net_file, r->net_param, err));
    for (int i = 0; i < c->n_test_iter; i++)
        if (c->test_iter[i] <= 0)
            return mtl_cfg_fail(mtl_cfg_field(root, "test_iter", i), err, MTL_ERR_CONFIG, "test_iter must be > 0");
    if (r->n_test_states > 0 && r->n_test_states != ctx->n_tests)
        return mtl_cfg_fail(mtl_cfg_field(root, "test_state", 0), err, MTL_ERR_CONFIG,
                            "test_state must be given once for each test net or not at all (%d test_state, %d test "
                            "nets)",
                            r->n_test_states, ctx->n_tests);
    for (int i = 0; i < r->n_test_states; i++) {
        ctx->tests[i].state = mtl_cfg_field(root, "test_state", i);
        MTL_TRY(read_net_state(ctx->tests[i].state, MTL_PHASE_TEST, &ctx->tests[i].phase, err));
    }

    ctx->weights = calloc((size_t)r->n_weights + 1, sizeof(char *));
    if (!ctx->weights)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < r->n_weights; i++) {
        const char *w;
        MTL_TRY(mtl_cfg_string_at(root, "weights", i, &w, err));
        if (!(ctx->weights[i] = resolve_path(dir, w)))
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        ctx->n_weights = i + 1;
    }
    return MTL_OK;
}

static mtl_status check_solver_type(mtl_cfg_node *root, const raw_fields *r, mtl_update_type *type, mtl_error *err)
{
    if (r->has_type && r->has_legacy_type)
        return mtl_cfg_fail(mtl_cfg_field(root, "solver_type", 0), err, MTL_ERR_CONFIG,
                            "both 'type' and the deprecated 'solver_type' are given; keep only 'type'");
    if (r->has_legacy_type) {
        if (legacy_types[r->legacy_type] == MTL_UPDATE_COUNT)
            return mtl_cfg_fail(mtl_cfg_field(root, "solver_type", 0), err, MTL_ERR_UNSUPPORTED,
                                "solver type ADADELTA is not supported; mtl has %s", solver_types_text);
        *type = legacy_types[r->legacy_type];
        return MTL_OK;
    }
    const char *names[MTL_UPDATE_COUNT];
    for (int t = 0; t < MTL_UPDATE_COUNT; t++) {
        names[t] = mtl_update_type_name((mtl_update_type)t);
        if (strcmp(r->type, names[t]) == 0) {
            *type = (mtl_update_type)t;
            return MTL_OK;
        }
    }
    mtl_cfg_node *node = at(root, "type", root);
    if (strcmp(r->type, "AdaDelta") == 0)
        return mtl_cfg_fail(node, err, MTL_ERR_UNSUPPORTED, "solver type 'AdaDelta' is not supported; mtl has %s",
                            solver_types_text);
    char near[256];
    if (mtl_cfg_suggest(r->type, names, MTL_UPDATE_COUNT, 2, near, sizeof(near)) > 0)
        return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "unknown solver type '%s'; did you mean %s?", r->type, near);
    return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "unknown solver type '%s'; the types are %s", r->type,
                        solver_types_text);
}

static mtl_status check_update(mtl_cfg_node *root, const raw_fields *r, mtl_solver_config *c, mtl_error *err)
{
    mtl_update_config *u = &c->update;
    if (r->solver_mode == 1)
        return mtl_cfg_fail(mtl_cfg_field(root, "solver_mode", 0), err, MTL_ERR_UNSUPPORTED,
                            "solver_mode GPU is not supported yet: this mtl runs on the CPU; use solver_mode: CPU or "
                            "remove the line");
    MTL_TRY(check_solver_type(root, r, &u->type, err));
    if (strcmp(r->regularization, "L2") == 0)
        u->regularization = MTL_REGULARIZATION_L2;
    else if (strcmp(r->regularization, "L1") == 0)
        u->regularization = MTL_REGULARIZATION_L1;
    else
        return mtl_cfg_fail(mtl_cfg_field(root, "regularization_type", 0), err, MTL_ERR_CONFIG,
                            "unknown regularization_type '%s'; use \"L2\" or \"L1\"", r->regularization);
    const char *type = mtl_update_type_name(u->type);
    if (!isfinite(u->momentum) || u->momentum < 0 || u->momentum >= 1)
        return mtl_cfg_fail(at(root, "momentum", root), err, MTL_ERR_CONFIG, "momentum must lie in [0, 1)");
    if ((u->type == MTL_UPDATE_RMSPROP || u->type == MTL_UPDATE_ADAGRAD) && u->momentum != 0)
        return mtl_cfg_fail(at(root, "momentum", root), err, MTL_ERR_CONFIG,
                            "momentum cannot be used with %s (as in Caffe)", type);
    if (!isfinite(u->momentum2) || u->momentum2 < 0 || u->momentum2 >= 1)
        return mtl_cfg_fail(at(root, "momentum2", root), err, MTL_ERR_CONFIG, "momentum2 must lie in [0, 1)");
    if (!isfinite(u->rms_decay) || u->rms_decay < 0 || u->rms_decay >= 1)
        return mtl_cfg_fail(at(root, "rms_decay", root), err, MTL_ERR_CONFIG, "rms_decay must lie in [0, 1)");
    if (!isfinite(u->delta) || u->delta < 0)
        return mtl_cfg_fail(at(root, "delta", root), err, MTL_ERR_CONFIG, "delta must be >= 0");
    if (!isfinite(u->weight_decay) || u->weight_decay < 0)
        return mtl_cfg_fail(at(root, "weight_decay", root), err, MTL_ERR_CONFIG, "weight_decay must be >= 0");
    if (!isfinite(c->clip_gradients))
        return mtl_cfg_fail(at(root, "clip_gradients", root), err, MTL_ERR_CONFIG,
                            "clip_gradients must be finite (negative: off)");
    return MTL_OK;
}

static mtl_status check_lr_policy(mtl_cfg_node *root, const raw_fields *r, mtl_solver_config *c, mtl_error *err)
{
    mtl_lr_policy *p = &c->lr;
    const char *name = r->lr_policy;
    if (!name)
        return mtl_cfg_fail(root, err, MTL_ERR_CONFIG, "lr_policy is required (%s)", lr_policies_text);
    mtl_cfg_node *node = mtl_cfg_field(root, "lr_policy", 0);
    int kind = -1;
    const char *names[MTL_LR_POLICY_COUNT];
    for (int k = 0; k < MTL_LR_POLICY_COUNT; k++) {
        names[k] = mtl_lr_policy_name((mtl_lr_policy_kind)k);
        if (strcmp(name, names[k]) == 0)
            kind = k;
    }
    if (kind < 0) {
        char near[256];
        if (mtl_cfg_suggest(name, names, MTL_LR_POLICY_COUNT, 2, near, sizeof(near)) > 0)
            return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "unknown lr_policy '%s'; did you mean %s?", name, near);
        return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "unknown lr_policy '%s'; the policies are %s", name,
                            lr_policies_text);
    }
    p->kind = (mtl_lr_policy_kind)kind;
    if (!r->has_base_lr)
        return mtl_cfg_fail(root, err, MTL_ERR_CONFIG, "base_lr is required");
    if (!isfinite(p->base_lr) || p->base_lr < 0)
        return mtl_cfg_fail(mtl_cfg_field(root, "base_lr", 0), err, MTL_ERR_CONFIG,
                            "base_lr must be a finite number >= 0");
    for (int i = 0; i < p->n_stepvalues; i++)
        if (p->stepvalues[i] < 0 || (i > 0 && p->stepvalues[i] <= p->stepvalues[i - 1]))
            return mtl_cfg_fail(mtl_cfg_field(root, "stepvalue", i), err, MTL_ERR_CONFIG,
                                "stepvalue must be non-negative and strictly increasing (%lld after %lld)",
                                (long long)p->stepvalues[i], (long long)(i > 0 ? p->stepvalues[i - 1] : 0));
    int uses_gamma = p->kind == MTL_LR_STEP || p->kind == MTL_LR_MULTISTEP || p->kind == MTL_LR_EXP ||
                     p->kind == MTL_LR_INV || p->kind == MTL_LR_SIGMOID;
    if (uses_gamma && (!r->has_gamma || !(p->gamma >= 0)))
        return mtl_cfg_fail(at(root, "gamma", node), err, MTL_ERR_CONFIG, "lr_policy '%s' needs gamma >= 0", name);
    if ((p->kind == MTL_LR_STEP || p->kind == MTL_LR_SIGMOID) && p->stepsize <= 0)
        return mtl_cfg_fail(at(root, "stepsize", node), err, MTL_ERR_CONFIG, "lr_policy '%s' needs stepsize > 0",
                            name);
    if (p->kind == MTL_LR_MULTISTEP && p->n_stepvalues == 0)
        return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "lr_policy 'multistep' needs at least one stepvalue");
    if ((p->kind == MTL_LR_INV || p->kind == MTL_LR_POLY) && !r->has_power)
        return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "lr_policy '%s' needs power", name);
    if ((p->kind == MTL_LR_POLY || p->kind == MTL_LR_COSINE) && p->max_iter <= 0)
        return mtl_cfg_fail(node, err, MTL_ERR_CONFIG, "lr_policy '%s' needs max_iter > 0", name);
    if (p->kind != MTL_LR_COSINE && r->has_min_lr)
        return mtl_cfg_fail(mtl_cfg_field(root, "min_lr", 0), err, MTL_ERR_CONFIG,
                            "min_lr is only used by lr_policy 'cosine'");
    if (p->warmup_iter == 0 && r->has_warmup_start_lr)
        return mtl_cfg_fail(mtl_cfg_field(root, "warmup_start_lr", 0), err, MTL_ERR_CONFIG,
                            "warmup_start_lr needs warmup_iter > 0");
    return MTL_OK;
}

static mtl_status check_snapshot_prefix(mtl_cfg_node *root, const raw_fields *r, mtl_solver_config *c,
                                        const char *stem, mtl_error *err)
{
    const char *prefix = r->snapshot_prefix;
    char *joined = NULL;
    if (!prefix) /* Caffe's default: the solver file's name without its extension */
        joined = mtl_strdup(stem);
    else if (prefix[0] && prefix[strlen(prefix) - 1] == '/') /* a directory: name the files after the solver */
        joined = str_printf("%s%s", prefix, stem);
    else
        joined = mtl_strdup(prefix);
    if (!joined)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    c->snapshot_prefix = resolve_path(c->dir, joined);
    free(joined);
    if (!c->snapshot_prefix)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    if (c->snapshot == 0 && !c->snapshot_after_train)
        return MTL_OK;
    /* fail now rather than after hours of training */
    char *pdir = dir_of(c->snapshot_prefix);
    if (!pdir)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    const char *check = pdir[0] ? pdir : ".";
    mtl_status st = MTL_OK;
    if (access(check, W_OK) != 0)
        st = mtl_cfg_fail(at(root, "snapshot_prefix", root), err, MTL_ERR_CONFIG,
                          "snapshots would go to '%s_iter_<N>%s' but directory '%s' is not writable (%s); create it, "
                          "or set snapshot_after_train: false and snapshot: 0",
                          c->snapshot_prefix, MTL_SNAPSHOT_EXTENSION, check, strerror(errno));
    free(pdir);
    return st;
}

/* task_balance { method ... }: mtl's own message (Caffe has none), checked as it is read */
static mtl_status read_balance(mtl_cfg_node *root, mtl_solver_config *c, mtl_error *err)
{
    mtl_cfg_node *msg;
    MTL_TRY(mtl_cfg_message(root, "task_balance", &msg, err));
    c->has_balance = msg != NULL;
    return mtl_balance_read_config(msg, &c->balance, err);
}

static mtl_status parse_solver(parse_ctx *ctx, mtl_solver_config *c, const char *stem,
                               const mtl_solver_options *opts, mtl_error *err)
{
    mtl_cfg_node *root = ctx->root;
    MTL_TRY(read_net_fields(root, ctx, c, err));
    MTL_TRY(read_schedule(root, &ctx->raw, c, opts, err));
    MTL_TRY(read_update_fields(root, &ctx->raw, c, err));
    MTL_TRY(read_lr_fields(root, &ctx->raw, c, err));
    MTL_TRY(read_balance(root, c, err));
    MTL_TRY(mtl_early_stop_read(root, &c->early_stop, &c->has_early_stop, err));
    MTL_TRY(mtl_cfg_check_unused(root, err));
    MTL_TRY(check_nets(root, c->dir, ctx, c, err));
    MTL_TRY(check_update(root, &ctx->raw, c, err));
    MTL_TRY(check_lr_policy(root, &ctx->raw, c, err));
    return check_snapshot_prefix(root, &ctx->raw, c, stem, err);
}

/* ================================================================== building nets */

/* A deep copy of a message as the root of a tree of its own (same positions, same file name). */
static mtl_cfg_node *clone_node(const mtl_cfg_node *src, const char *file)
{
    mtl_cfg_node *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->file = file;
    n->line = src->line;
    n->column = src->column;
    n->kind = src->kind;
    n->value_line = src->value_line;
    n->value_column = src->value_column;
    int ok = 1;
    if (src->name && !(n->name = mtl_strdup(src->name)))
        ok = 0;
    if (src->text && !(n->text = mtl_strdup(src->text)))
        ok = 0;
    if (ok && src->n_fields) {
        n->fields = calloc((size_t)src->n_fields, sizeof(*n->fields));
        ok = n->fields != NULL;
        n->fields_cap = src->n_fields;
        for (int i = 0; ok && i < src->n_fields; i++) {
            n->fields[i] = clone_node(src->fields[i], file);
            ok = n->fields[i] != NULL;
            n->n_fields = i + 1;
        }
    }
    if (!ok) {
        mtl_cfg_free(n);
        return NULL;
    }
    return n;
}

static mtl_cfg_node *clone_root(const mtl_cfg_node *msg)
{
    mtl_cfg_node *root = calloc(1, sizeof(*root));
    if (!root)
        return NULL;
    root->file_storage = mtl_strdup(msg->file ? msg->file : "<solver>");
    mtl_cfg_node *body = root->file_storage ? clone_node(msg, root->file_storage) : NULL;
    if (!body) {
        mtl_cfg_free(root);
        return NULL;
    }
    root->file = root->file_storage;
    root->kind = MTL_CFG_MESSAGE;
    root->used = 1;
    root->fields = body->fields;
    root->n_fields = body->n_fields;
    root->fields_cap = body->fields_cap;
    body->fields = NULL;
    body->n_fields = body->fields_cap = 0;
    mtl_cfg_free(body);
    return root;
}

static void clear_positions(mtl_cfg_node *node)
{
    node->line = node->column = node->value_line = node->value_column = 0;
    for (int i = 0; i < node->n_fields; i++)
        clear_positions(node->fields[i]);
}

/* Replaces the net's own `state` with the solver's NetState (Caffe gives the solver's the final
 * word). The copy keeps no positions: they belong to another file. */
static int set_net_state(mtl_cfg_node *root, const mtl_cfg_node *state)
{
    mtl_cfg_node *copy = clone_node(state, root->file);
    if (!copy)
        return 0;
    free(copy->name);
    copy->name = mtl_strdup("state");
    if (!copy->name) {
        mtl_cfg_free(copy);
        return 0;
    }
    clear_positions(copy);
    int kept = 0;
    for (int i = 0; i < root->n_fields; i++) {
        if (root->fields[i]->name && strcmp(root->fields[i]->name, "state") == 0)
            mtl_cfg_free(root->fields[i]);
        else
            root->fields[kept++] = root->fields[i];
    }
    root->n_fields = kept;
    if (root->n_fields == root->fields_cap) {
        int cap = root->fields_cap ? root->fields_cap * 2 : 4;
        mtl_cfg_node **grown = realloc(root->fields, (size_t)cap * sizeof(*grown));
        if (!grown) {
            mtl_cfg_free(copy);
            return 0;
        }
        root->fields = grown;
        root->fields_cap = cap;
    }
    root->fields[root->n_fields++] = copy;
    return 1;
}

static mtl_status build_net(const mtl_solver *s, const net_source *src, const mtl_net *share, const char *what,
                            mtl_net **out, mtl_error *err)
{
    mtl_cfg_node *root = NULL;
    mtl_status st = MTL_OK;
    if (src->file) {
        st = mtl_cfg_parse_file(src->file, &root, err);
    } else if (!(root = clone_root(src->inline_cfg))) {
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    }
    if (st == MTL_OK && src->state && !set_net_state(root, src->state)) {
        mtl_cfg_free(root);
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    }
    if (st == MTL_OK) {
        mtl_net_options o = {.phase = src->phase, .seed = s->cfg.seed, .share = share};
        st = mtl_net_from_config(root, &o, out, err);
    }
    if (st != MTL_OK)
        mtl_error_prefix(err, "%s: %s: ", s->cfg.path, what);
    return st;
}

/* ================================================================== construction */

static mtl_status solver_init(mtl_solver *s, parse_ctx *ctx, mtl_error *err)
{
    MTL_TRY(build_net(s, &ctx->train, NULL, "train net", &s->train_net, err));
    s->test_nets = calloc((size_t)ctx->n_tests + 1, sizeof(mtl_net *));
    s->test_out = calloc((size_t)ctx->n_tests + 1, sizeof(mtl_solver_outputs));
    if (!s->test_nets || !s->test_out)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < ctx->n_tests; i++) {
        char what[64];
        snprintf(what, sizeof(what), "test net #%d", i);
        MTL_TRY(build_net(s, &ctx->tests[i], s->train_net, what, &s->test_nets[i], err));
        s->n_test_nets = i + 1;
        MTL_TRY(outputs_init(s->test_nets[i], &s->test_out[i], err));
        for (int k = 0; k < s->test_out[i].n; k++)
            s->test_out[i].value[k] = NAN;
    }

    const mtl_net *net = s->train_net;
    s->n_history = mtl_update_history_count(s->cfg.update.type);
    s->history_offset = calloc((size_t)net->n_slots + 1, sizeof(int64_t));
    if (!s->history_offset)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    int64_t total = 0;
    for (int i = 0; i < net->n_slots; i++) {
        s->history_offset[i] = total;
        total += s->n_history * net->slots[i].count;
    }
    s->history = calloc((size_t)total + 1, sizeof(float));
    if (!s->history)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory for the solver history (%lld values)", (long long)total);

    MTL_TRY(outputs_init(net, &s->train_out, err));
    s->iter_values = calloc((size_t)s->train_out.n + 1, sizeof(double));
    s->window_size = s->cfg.average_loss;
    s->window_width = 1 + s->train_out.n;
    s->window = calloc((size_t)(s->window_size * s->window_width), sizeof(float));
    if (!s->iter_values || !s->window)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");

    for (int i = 0; i < ctx->n_weights; i++) {
        mtl_snapshot *snap = NULL;
        mtl_snapshot_match m;
        mtl_status st = mtl_snapshot_read(ctx->weights[i], &snap, err);
        if (st == MTL_OK)
            st = mtl_snapshot_load_weights(snap, s->train_net, NULL, &m, err);
        mtl_snapshot_free(snap);
        if (st != MTL_OK)
            return mtl_error_prefix(err, "%s: weights: ", s->cfg.path);
        say(s, "Initialized weights from %s: %d copied, %d missing, %d shape mismatches, %d unused", ctx->weights[i],
            m.copied, m.missing, m.mismatched, m.unused);
    }
    /* a balancer for task_balance, and for the diagnostics of any multi-task net */
    if (s->cfg.has_balance || net->n_tasks >= 2) {
        if (mtl_balancer_create(&s->cfg.balance, s->train_net, s->cfg.seed, s->cfg.display, &s->balancer, err) !=
            MTL_OK)
            return mtl_error_prefix(err, "%s: task_balance: ", s->cfg.path);
        if (!s->balancer->nt && s->cfg.balance.diagnostics && net->n_tasks >= 2)
            say(s, "Note: no task gradient diagnostics for this net: %s", s->balancer->nt_error);
    }
    /* task-wise early stopping switches auxiliary tasks off through the balancer's multipliers */
    if (s->cfg.has_early_stop) {
        if (!s->cfg.test_interval || s->n_test_nets == 0 || !s->balancer)
            return mtl_cfg_fail(s->cfg.early_stop.where, err, MTL_ERR_CONFIG,
                                "task_early_stopping needs a test net, test_interval > 0 and two or more tasks");
        const char **names = calloc((size_t)net->n_tasks, sizeof(char *));
        if (!names)
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        for (int t = 0; t < net->n_tasks; t++)
            names[t] = net->tasks[t].name;
        mtl_status st = mtl_early_stop_create(&s->cfg.early_stop, net->n_tasks, names, &s->early_stop, err);
        free(names);
        MTL_TRY(st);
    }
    s->last_snapshot_iter = -1;
    s->timer_start = now_seconds();
    return MTL_OK;
}

static mtl_status solver_create(mtl_cfg_node *root, const char *path, const char *dir, const char *stem,
                                const mtl_solver_options *opts, mtl_solver **out, mtl_error *err)
{
    *out = NULL;
    parse_ctx ctx = {.root = root};
    mtl_solver *s = calloc(1, sizeof(*s));
    if (!s) {
        parse_ctx_free(&ctx);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    }
    if (opts)
        s->opts = *opts;
    s->cfg.path = mtl_strdup(path);
    s->cfg.dir = mtl_strdup(dir ? dir : "");
    mtl_status st = s->cfg.path && s->cfg.dir ? MTL_OK : mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    if (st == MTL_OK)
        st = parse_solver(&ctx, &s->cfg, stem, &s->opts, err);
    if (st == MTL_OK)
        st = solver_init(s, &ctx, err);
    parse_ctx_free(&ctx);
    if (st != MTL_OK) {
        mtl_solver_free(s);
        return st;
    }
    *out = s;
    return MTL_OK;
}

mtl_status mtl_solver_from_file(const char *path, const mtl_solver_options *opts, mtl_solver **out,
                                mtl_error *err)
{
    if (!out || !path)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_solver_from_file: path or out is NULL");
    *out = NULL;
    mtl_cfg_node *root;
    MTL_TRY(mtl_cfg_parse_file(path, &root, err));
    char *dir = dir_of(path), *stem = stem_of(path);
    mtl_status st;
    if (!dir || !stem) {
        mtl_cfg_free(root);
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    } else {
        st = solver_create(root, path, dir, stem, opts, out, err);
    }
    free(dir);
    free(stem);
    return st;
}

mtl_status mtl_solver_from_string(const char *text, const char *dir, const mtl_solver_options *opts,
                                  mtl_solver **out, mtl_error *err)
{
    if (!out || !text)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_solver_from_string: text or out is NULL");
    *out = NULL;
    mtl_cfg_node *root;
    MTL_TRY(mtl_cfg_parse_string(text, "<solver>", &root, err));
    return solver_create(root, "<solver>", dir, "solver", opts, out, err);
}

void mtl_solver_free(mtl_solver *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_test_nets; i++) {
        mtl_net_free(s->test_nets[i]);
        outputs_free(&s->test_out[i]);
    }
    free(s->test_nets);
    free(s->test_out);
    mtl_balancer_free(s->balancer);
    mtl_early_stop_free(s->early_stop);
    mtl_net_free(s->train_net);
    outputs_free(&s->train_out);
    free(s->iter_values);
    free(s->window);
    free(s->history);
    free(s->history_offset);
    free(s->last_snapshot_path);
    free(s->cfg.path);
    free(s->cfg.dir);
    free(s->cfg.stepvalues);
    free(s->cfg.test_iter);
    free(s->cfg.snapshot_prefix);
    free(s);
}

double mtl_solver_lr_at(const mtl_solver *s, int64_t iter) { return mtl_lr_at(&s->cfg.lr, iter); }

/* ================================================================== testing */

static mtl_status feed(mtl_solver *s, mtl_net *net, int test_net, int64_t iter, int64_t pass, mtl_error *err)
{
    if (!s->opts.feed)
        return MTL_OK;
    return s->opts.feed(s->opts.feed_user, net, test_net, iter, pass, err);
}

static mtl_status test_one(mtl_solver *s, int k, mtl_error *err)
{
    mtl_net *net = s->test_nets[k];
    mtl_solver_outputs *o = &s->test_out[k];
    int64_t n_iter = s->cfg.test_iter[k];
    say(s, "Iteration %lld, Testing net (#%d)", (long long)s->iter, k);
    double *sum = calloc((size_t)o->n + 1, sizeof(double));
    if (!sum)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    double loss_sum = 0;
    for (int64_t i = 0; i < n_iter; i++) {
        if (stop_requested(s)) {
            free(sum);
            return mtl_fail(err, MTL_ERR_INTERRUPTED, "stopped while testing net #%d at iteration %lld", k,
                            (long long)s->iter);
        }
        double loss = 0;
        mtl_status st = feed(s, net, k, s->iter, i, err);
        if (st == MTL_OK)
            st = mtl_net_forward(net, &loss, err);
        if (st != MTL_OK) {
            free(sum);
            return mtl_error_prefix(err, "iteration %lld, testing net #%d, test pass %lld: ", (long long)s->iter, k,
                                    (long long)i);
        }
        loss_sum += loss;
        outputs_accumulate(net, o, sum);
    }
    for (int j = 0; j < o->n; j++)
        o->value[j] = sum[j] / (double)n_iter;
    o->loss = loss_sum / (double)n_iter;
    free(sum);

    if (s->cfg.test_compute_loss)
        say(s, "Test loss: %g", o->loss);
    outputs_say(s, net, o, "Test");
    if (s->opts.json) {
        sbuf b = {0};
        sb_printf(&b, "{\"iter\":%lld,\"phase\":\"test\",\"net\":%d,", (long long)s->iter, k);
        if (s->cfg.test_compute_loss) {
            sb_printf(&b, "\"loss\":");
            sb_number(&b, o->loss);
            sb_printf(&b, ",");
        }
        outputs_json(&b, net, o);
        sb_printf(&b, "}");
        json_emit(s, &b);
    }
    return MTL_OK;
}

mtl_status mtl_solver_test(mtl_solver *s, mtl_error *err)
{
    for (int k = 0; k < s->n_test_nets; k++)
        MTL_TRY(test_one(s, k, err));
    return MTL_OK;
}

double mtl_solver_test_value(const mtl_solver *s, int test_net, const char *blob)
{
    if (test_net < 0 || test_net >= s->n_test_nets || !blob)
        return NAN;
    const mtl_solver_outputs *o = &s->test_out[test_net];
    for (int k = 0; k < o->n; k++)
        if (strcmp(s->test_nets[test_net]->blobs[o->blob[k]]->name, blob) == 0)
            return o->value[k];
    return NAN;
}

/* ================================================================== training */

/* One "name = value" list per diagnostic (weights, trunk gradient norms, cosines of task pairs). */
static void balance_say(const mtl_solver *s)
{
    const mtl_balancer *bal = s->balancer;
    const mtl_balance_report *r = &bal->report;
    const mtl_net *net = s->train_net;
    int T = bal->n_tasks;
    sbuf b = {0};
    sb_printf(&b, "    Task weights (%s):", mtl_balance_method_name(bal->cfg.method));
    for (int t = 0; t < T; t++)
        sb_printf(&b, "%s %s = %g", t ? "," : "", net->tasks[t].name, r->weights[t]);
    if (!b.failed)
        say(s, "%s", b.p);
    if (r->valid) {
        b.len = 0;
        sb_printf(&b, "    Task gradient norms on the shared trunk:");
        for (int t = 0; t < T; t++)
            sb_printf(&b, "%s %s = %g", t ? "," : "", net->tasks[t].name, r->grad_norm[t]);
        if (!b.failed)
            say(s, "%s", b.p);
        b.len = 0;
        sb_printf(&b, "    Task gradient cosines:");
        for (int i = 0, k = 0; i < T; i++)
            for (int j = i + 1; j < T; j++, k++)
                sb_printf(&b, "%s %s|%s = %g", k ? "," : "", net->tasks[i].name, net->tasks[j].name, r->cosine[k]);
        if (!b.failed)
            say(s, "%s", b.p);
    }
    free(b.p);
}

/* ,"balance":{"weights":{task:w,...},"grad_norm":{...},"cosine":{"a|b":c,...},"log_var":{...}} */
static void balance_json(sbuf *b, const mtl_balancer *bal)
{
    const mtl_balance_report *r = &bal->report;
    const mtl_net *net = bal->net;
    int T = bal->n_tasks;
    sb_printf(b, ",\"balance\":{\"weights\":{");
    for (int t = 0; t < T; t++) {
        sb_printf(b, "%s", t ? "," : "");
        sb_string(b, net->tasks[t].name);
        sb_printf(b, ":");
        sb_number(b, r->weights[t]);
    }
    sb_printf(b, "}");
    if (r->valid) {
        sb_printf(b, ",\"grad_norm\":{");
        for (int t = 0; t < T; t++) {
            sb_printf(b, "%s", t ? "," : "");
            sb_string(b, net->tasks[t].name);
            sb_printf(b, ":");
            sb_number(b, r->grad_norm[t]);
        }
        sb_printf(b, "},\"cosine\":{");
        for (int i = 0, k = 0; i < T; i++)
            for (int j = i + 1; j < T; j++, k++) {
                char pair[1024];
                snprintf(pair, sizeof(pair), "%s|%s", net->tasks[i].name, net->tasks[j].name);
                sb_printf(b, "%s", k ? "," : "");
                sb_string(b, pair);
                sb_printf(b, ":");
                sb_number(b, r->cosine[k]);
            }
        sb_printf(b, "}");
    }
    if (bal->cfg.method == MTL_BALANCE_UNCERTAINTY) {
        sb_printf(b, ",\"log_var\":{");
        for (int t = 0; t < T; t++) {
            sb_printf(b, "%s", t ? "," : "");
            sb_string(b, net->tasks[t].name);
            sb_printf(b, ":");
            sb_number(b, r->log_var[t]);
        }
        sb_printf(b, "}");
    }
    sb_printf(b, "}");
}

static void display_train(mtl_solver *s, double lr)
{
    double now = now_seconds();
    double lapse = now - s->timer_start;
    double per_s = (double)(s->iter - s->timer_iter) / (lapse > 0 ? lapse : 1.0);
    s->timer_start = now;
    s->timer_iter = s->iter;
    const mtl_net *net = s->train_net;
    say(s, "Iteration %lld (%.1f iter/s), loss = %g", (long long)s->iter, per_s, s->train_out.loss);
    outputs_say(s, net, &s->train_out, "Train");
    if (s->balancer)
        balance_say(s);
    /* layers' own statistics (data layers: time the solver waited for data since the last display) */
    char stats[MTL_SOLVER_MAX_STATS][160];
    const char *stats_layer[MTL_SOLVER_MAX_STATS];
    int n_stats = 0;
    for (int i = 0; i < net->n_layers && n_stats < MTL_SOLVER_MAX_STATS; i++) {
        mtl_layer *l = net->layers[i];
        if (l->ops->stats && l->ops->stats(l, stats[n_stats], sizeof(stats[n_stats])) > 0) {
            stats_layer[n_stats] = l->name;
            say(s, "    %s: %s", l->name, stats[n_stats]);
            n_stats++;
        }
    }
    say(s, "Iteration %lld, lr = %g", (long long)s->iter, lr);
    if (s->opts.json) {
        sbuf b = {0};
        sb_printf(&b, "{\"iter\":%lld,\"phase\":\"train\",\"lr\":", (long long)s->iter);
        sb_number(&b, lr);
        sb_printf(&b, ",\"loss\":");
        sb_number(&b, s->train_out.loss);
        sb_printf(&b, ",\"iter_loss\":");
        sb_number(&b, s->loss);
        sb_printf(&b, ",");
        outputs_json(&b, net, &s->train_out);
        if (s->balancer)
            balance_json(&b, s->balancer);
        for (int k = 0; k < n_stats; k++) {
            sb_printf(&b, k ? "," : ",\"layer_stats\":{");
            sb_string(&b, stats_layer[k]);
            sb_printf(&b, ":");
            sb_string(&b, stats[k]);
        }
        if (n_stats)
            sb_printf(&b, "}");
        sb_printf(&b, ",\"iter_per_s\":");
        sb_number(&b, per_s);
        sb_printf(&b, "}");
        json_emit(s, &b);
    }
}

/* Averages accumulated gradients over iter_size, clips, regularizes and updates every slot that has
 * a gradient (Caffe's ApplyUpdate, but averaging before clipping, so the clip threshold means the
 * same whatever iter_size is). */
static void apply_update(mtl_solver *s, float rate, int display)
{
    mtl_net *net = s->train_net;
    if (s->cfg.iter_size > 1) {
        const float norm = 1.0f / (float)s->cfg.iter_size;
        for (int i = 0; i < net->n_slots; i++)
            if (net->slots[i].needs_grad)
                mtl_update_scale(net->slots[i].grad, net->slots[i].count, norm);
    }
    if (s->cfg.clip_gradients >= 0) {
        double sumsq = 0;
        for (int i = 0; i < net->n_slots; i++)
            if (net->slots[i].needs_grad)
                sumsq += mtl_update_sumsq(net->slots[i].grad, net->slots[i].count);
        float factor = mtl_update_clip_factor(sumsq, s->cfg.clip_gradients);
        if (factor != 1.0f) {
            if (display)
                say(s, "Gradient clipping: scaling down gradients (L2 norm %g > %g) by scale factor %g", sqrt(sumsq),
                    s->cfg.clip_gradients, factor);
            for (int i = 0; i < net->n_slots; i++)
                if (net->slots[i].needs_grad)
                    mtl_update_scale(net->slots[i].grad, net->slots[i].count, factor);
        }
    }
    for (int i = 0; i < net->n_slots; i++) {
        mtl_param_slot *slot = &net->slots[i];
        if (!slot->needs_grad)
            continue;
        mtl_update_step(&s->cfg.update, s->iter, rate * slot->lr_mult, s->cfg.update.weight_decay * slot->decay_mult,
                        slot->data, slot->grad, s->history + s->history_offset[i], slot->count);
    }
}

static mtl_status train_iteration(mtl_solver *s, mtl_error *err)
{
    mtl_net *net = s->train_net;
    const int64_t iter_size = s->cfg.iter_size;
    const int display = s->cfg.display && s->iter % s->cfg.display == 0;
    mtl_net_zero_param_grad(net);
    if (s->balancer)
        mtl_balancer_begin_iteration(s->balancer, display);
    double loss = 0;
    for (int k = 0; k < s->train_out.n; k++)
        s->iter_values[k] = 0;
    for (int64_t pass = 0; pass < iter_size; pass++) {
        double pass_loss = 0;
        mtl_status st = feed(s, net, -1, s->iter, pass, err);
        if (st == MTL_OK)
            st = mtl_net_forward(net, &pass_loss, err);
        if (st != MTL_OK) {
            if (iter_size > 1)
                return mtl_error_prefix(err, "iteration %lld (pass %lld of iter_size %lld): ", (long long)s->iter,
                                        (long long)pass + 1, (long long)iter_size);
            return mtl_error_prefix(err, "iteration %lld: ", (long long)s->iter);
        }
        loss += pass_loss;
        outputs_accumulate(net, &s->train_out, s->iter_values);
        if (s->balancer) {
            if ((st = mtl_balancer_backward(s->balancer, err)) != MTL_OK)
                return mtl_error_prefix(err, "iteration %lld: task balancing: ", (long long)s->iter);
        } else {
            mtl_net_backward(net);
        }
    }
    s->loss = loss / (double)iter_size;
    for (int k = 0; k < s->train_out.n; k++)
        s->iter_values[k] /= (double)iter_size;
    window_push(s, s->loss, s->iter_values);
    window_mean(s);

    const double lr = mtl_lr_at(&s->cfg.lr, s->iter);
    const float rate = (float)lr; /* Caffe's GetLearningRate returns Dtype */
    s->lr = lr;
    if (s->balancer)
        mtl_balancer_end_iteration(s->balancer, rate);
    if (display)
        display_train(s, lr);
    apply_update(s, rate, display);
    s->iter++;
    return MTL_OK;
}

static mtl_status interrupted(mtl_solver *s, mtl_error *err)
{
    if (s->last_snapshot_iter != s->iter)
        MTL_TRY(mtl_solver_snapshot(s, NULL, err));
    say(s, "Optimization stopped early at iteration %lld; snapshot %s", (long long)s->iter,
        s->last_snapshot_path ? s->last_snapshot_path : "(none)");
    return mtl_fail(err, MTL_ERR_INTERRUPTED, "stopped by request at iteration %lld; resume from %s",
                    (long long)s->iter, s->last_snapshot_path ? s->last_snapshot_path : "(no snapshot)");
}

/* Feeds a test's task losses to task-wise early stopping and switches stopped tasks off. */
static mtl_status early_stop_after_test(mtl_solver *s, mtl_error *err)
{
    if (!s->early_stop)
        return MTL_OK;
    const mtl_net *net = s->train_net;
    double *losses = calloc((size_t)net->n_tasks, sizeof(double));
    int *stopped = calloc((size_t)net->n_tasks, sizeof(int));
    float *multipliers = calloc((size_t)net->n_tasks, sizeof(float));
    if (!losses || !stopped || !multipliers) {
        free(losses);
        free(stopped);
        free(multipliers);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    }
    for (int t = 0; t < net->n_tasks; t++)
        losses[t] = mtl_solver_test_value(s, 0, net->tasks[t].name);
    if (mtl_early_stop_update(s->early_stop, s->iter, losses, stopped) > 0) {
        for (int t = 0; t < net->n_tasks; t++) {
            if (!stopped[t])
                continue;
            char line[512];
            mtl_early_stop_describe(s->early_stop, t, line, sizeof(line));
            say(s, "%s", line);
            if (s->opts.json) {
                sbuf b = {0};
                sb_printf(&b, "{\"iter\":%lld,\"event\":\"task_stopped\",\"task\":", (long long)s->iter);
                sb_string(&b, net->tasks[t].name);
                sb_printf(&b, "}");
                json_emit(s, &b);
            }
        }
    }
    mtl_early_stop_multipliers(s->early_stop, multipliers);
    mtl_balancer_set_multipliers(s->balancer, multipliers);
    free(losses);
    free(stopped);
    free(multipliers);
    return MTL_OK;
}

mtl_status mtl_solver_step(mtl_solver *s, int64_t n_iters, mtl_error *err)
{
    if (!s)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_solver_step: solver is NULL");
    const int64_t stop_iter = s->iter + (n_iters > 0 ? n_iters : 0);
    while (s->iter < stop_iter) {
        if (stop_requested(s))
            return interrupted(s, err);
        if (s->cfg.test_interval && s->iter % s->cfg.test_interval == 0 &&
            (s->iter > 0 || s->cfg.test_initialization)) {
            mtl_status st = mtl_solver_test(s, err);
            if (st == MTL_ERR_INTERRUPTED)
                return interrupted(s, err);
            MTL_TRY(st);
            MTL_TRY(early_stop_after_test(s, err));
        }
        MTL_TRY(train_iteration(s, err));
        if (s->cfg.snapshot && s->iter % s->cfg.snapshot == 0)
            MTL_TRY(mtl_solver_snapshot(s, NULL, err));
        if (stop_requested(s))
            return interrupted(s, err);
    }
    return MTL_OK;
}

mtl_status mtl_solver_solve(mtl_solver *s, mtl_error *err)
{
    if (!s)
        return mtl_fail(err, MTL_ERR_ARGUMENT, "mtl_solver_solve: solver is NULL");
    say(s, "Solving %s", s->train_net->name && s->train_net->name[0] ? s->train_net->name : "(unnamed net)");
    say(s, "Learning Rate Policy: %s", mtl_lr_policy_name(s->cfg.lr.kind));
    if (s->cfg.has_balance)
        say(s, "Task balancing: %s", mtl_balance_method_name(s->cfg.balance.method));
    if (s->iter < s->cfg.max_iter)
        MTL_TRY(mtl_solver_step(s, s->cfg.max_iter - s->iter, err));
    if (s->cfg.snapshot_after_train && (!s->cfg.snapshot || s->iter % s->cfg.snapshot != 0) &&
        s->last_snapshot_iter != s->iter)
        MTL_TRY(mtl_solver_snapshot(s, NULL, err));
    /* Like Caffe: one more forward to show the loss of the final weights, and a final test. */
    if (s->cfg.display && s->iter % s->cfg.display == 0) {
        double loss = 0;
        for (int k = 0; k < s->train_out.n; k++)
            s->iter_values[k] = 0;
        mtl_status st = feed(s, s->train_net, -1, s->iter, 0, err);
        if (st == MTL_OK)
            st = mtl_net_forward(s->train_net, &loss, err);
        if (st != MTL_OK)
            return mtl_error_prefix(err, "iteration %lld (final loss): ", (long long)s->iter);
        outputs_accumulate(s->train_net, &s->train_out, s->iter_values);
        window_push(s, loss, s->iter_values);
        window_mean(s);
        say(s, "Iteration %lld, loss = %g", (long long)s->iter, s->train_out.loss);
        if (s->opts.json) {
            sbuf b = {0};
            sb_printf(&b, "{\"iter\":%lld,\"phase\":\"train\",\"final\":true,\"loss\":", (long long)s->iter);
            sb_number(&b, s->train_out.loss);
            sb_printf(&b, ",\"iter_loss\":");
            sb_number(&b, loss);
            sb_printf(&b, ",");
            outputs_json(&b, s->train_net, &s->train_out);
            sb_printf(&b, "}");
            json_emit(s, &b);
        }
    }
    /* unlike Caffe, always test the final weights (max_iter need not be a multiple of
     * test_interval, for example with `mtl train --max-iter`) */
    if (s->cfg.test_interval && s->n_test_nets > 0) {
        mtl_status st = mtl_solver_test(s, err);
        if (st == MTL_ERR_INTERRUPTED)
            return interrupted(s, err);
        MTL_TRY(st);
    }
    say(s, "Optimization Done.");
    return MTL_OK;
}

/* ================================================================== snapshots */

static mtl_status fill_snapshot(const mtl_solver *s, mtl_snapshot *snap, mtl_error *err)
{
    const mtl_net *net = s->train_net;
    MTL_TRY(mtl_snapshot_add_net_params(snap, net, err));
    mtl_snapshot_state *st = &snap->state;
    snap->has_state = 1;
    st->iter = s->iter;
    snprintf(st->solver_type, sizeof(st->solver_type), "%s", mtl_update_type_name(s->cfg.update.type));
    st->n_history = s->n_history;
    st->history = calloc((size_t)net->n_slots + 1, sizeof(*st->history));
    st->rngs = calloc((size_t)s->n_test_nets + 1, sizeof(mtl_rng));
    if (!st->history || !st->rngs)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < net->n_slots; i++) {
        mtl_snapshot_array *a = &st->history[i];
        st->n_slots = i + 1;
        if (!(a->name = mtl_strdup(net->slots[i].name)))
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        a->ndim = 2;
        a->shape[0] = s->n_history;
        a->shape[1] = (int)net->slots[i].count;
        a->count = s->n_history * net->slots[i].count;
        a->data = s->history + s->history_offset[i];
    }
    st->n_rngs = 1 + s->n_test_nets;
    st->rngs[0] = net->rng;
    for (int i = 0; i < s->n_test_nets; i++)
        st->rngs[1 + i] = s->test_nets[i]->rng;
    /* layers with state beyond parameters (data read positions), and the task balancer's state
     * under a name no prototxt layer is likely to take */
    int n_states = (s->balancer != NULL) + (s->early_stop != NULL);
    for (int i = 0; i < net->n_layers; i++)
        n_states += net->layers[i]->ops->state_size != NULL;
    if (n_states) {
        st->layer_states = calloc((size_t)n_states, sizeof(*st->layer_states));
        if (!st->layer_states)
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        for (int i = 0; i < net->n_layers; i++) {
            const mtl_layer *l = net->layers[i];
            if (!l->ops->state_size)
                continue;
            mtl_snapshot_layer_state *ls = &st->layer_states[st->n_layer_states++];
            ls->size = l->ops->state_size(l);
            uint8_t *bytes = malloc(ls->size ? (size_t)ls->size : 1);
            ls->bytes = bytes;
            if (!(ls->name = mtl_strdup(l->name)) || !bytes)
                return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
            l->ops->state_save(l, bytes);
        }
        if (s->balancer) {
            mtl_snapshot_layer_state *ls = &st->layer_states[st->n_layer_states++];
            ls->size = mtl_balancer_state_size(s->balancer);
            uint8_t *bytes = malloc((size_t)ls->size);
            ls->bytes = bytes;
            if (!(ls->name = mtl_strdup(BALANCE_STATE_NAME)) || !bytes)
                return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
            mtl_balancer_state_save(s->balancer, bytes);
        }
        if (s->early_stop) {
            mtl_snapshot_layer_state *ls = &st->layer_states[st->n_layer_states++];
            ls->size = mtl_early_stop_state_size(s->early_stop);
            uint8_t *bytes = malloc((size_t)ls->size);
            ls->bytes = bytes;
            if (!(ls->name = mtl_strdup(EARLY_STOP_STATE_NAME)) || !bytes)
                return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
            mtl_early_stop_state_save(s->early_stop, bytes);
        }
    }
    st->window_size = s->window_size;
    st->window_fill = s->window_fill;
    st->window_pos = s->window_pos;
    st->window_width = s->window_width;
    st->window = (mtl_snapshot_array){.ndim = 2,
                                      .shape = {(int)s->window_size, s->window_width},
                                      .count = s->window_size * s->window_width,
                                      .data = s->window};
    return MTL_OK;
}

mtl_status mtl_solver_snapshot(mtl_solver *s, const char *path, mtl_error *err)
{
    char *name = path ? mtl_strdup(path)
                      : str_printf("%s_iter_%lld%s", s->cfg.snapshot_prefix, (long long)s->iter,
                                   MTL_SNAPSHOT_EXTENSION);
    if (!name)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    say(s, "Snapshotting to %s", name);
    mtl_snapshot *snap = calloc(1, sizeof(*snap));
    mtl_status st = snap ? fill_snapshot(s, snap, err) : mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    if (st == MTL_OK)
        st = mtl_snapshot_write(name, snap, err);
    mtl_snapshot_free(snap);
    if (st != MTL_OK) {
        free(name);
        return mtl_error_prefix(err, "iteration %lld: ", (long long)s->iter);
    }
    if (s->opts.json) {
        sbuf b = {0};
        sb_printf(&b, "{\"iter\":%lld,\"phase\":\"snapshot\",\"path\":", (long long)s->iter);
        sb_string(&b, name);
        sb_printf(&b, "}");
        json_emit(s, &b);
    }
    free(s->last_snapshot_path);
    s->last_snapshot_path = name;
    s->last_snapshot_iter = s->iter;
    return MTL_OK;
}

static mtl_status restore_state(mtl_solver *s, const mtl_snapshot *snap, mtl_error *err)
{
    const char *path = snap->path;
    const mtl_snapshot_state *st = &snap->state;
    mtl_net *net = s->train_net;
    const char *type = mtl_update_type_name(s->cfg.update.type);
    if (!snap->has_state)
        return mtl_fail(err, MTL_ERR_CONFIG,
                        "snapshot '%s' holds weights only, no solver state: load it with --weights instead", path);
    if (strcmp(st->solver_type, type) != 0)
        return mtl_fail(err, MTL_ERR_CONFIG,
                        "snapshot '%s' was written by a %s solver, this one is %s: resume with the same type, or "
                        "start afresh from its weights (--weights)",
                        path, st->solver_type, type);
    if (st->n_history != s->n_history || st->n_slots != net->n_slots)
        return mtl_fail(err, MTL_ERR_CONFIG, "snapshot '%s' does not fit this net: %d parameter slots in the file, %d "
                        "in the net", path, st->n_slots, net->n_slots);
    for (int i = 0; i < net->n_slots; i++) {
        const mtl_snapshot_array *a = &st->history[i];
        if (strcmp(a->name, net->slots[i].name) != 0 || a->count != s->n_history * net->slots[i].count)
            return mtl_fail(err, MTL_ERR_CONFIG,
                            "snapshot '%s' does not fit this net: history of '%s' (%lld values) where the net has "
                            "'%s' (%lld values)",
                            path, a->name, (long long)a->count, net->slots[i].name,
                            (long long)(s->n_history * net->slots[i].count));
    }
    MTL_TRY(mtl_snapshot_restore_params(snap, net, err));
    for (int i = 0; i < net->n_slots; i++)
        mtl_snapshot_copy(snap, &st->history[i], s->history + s->history_offset[i]);
    for (int i = 0; i < net->n_layers; i++) {
        mtl_layer *l = net->layers[i];
        if (!l->ops->state_load)
            continue;
        const mtl_snapshot_layer_state *found = NULL;
        for (int k = 0; k < st->n_layer_states; k++)
            if (strcmp(st->layer_states[k].name, l->name) == 0)
                found = &st->layer_states[k];
        if (!found)
            return mtl_fail(err, MTL_ERR_CONFIG,
                            "snapshot '%s' has no saved position for layer '%s', so the run cannot continue "
                            "exactly; start afresh from its weights (--weights)",
                            path, l->name);
        MTL_TRY(l->ops->state_load(l, found->bytes, (size_t)found->size, err));
    }
    if (s->balancer) {
        const mtl_snapshot_layer_state *found = NULL;
        for (int k = 0; k < st->n_layer_states; k++)
            if (strcmp(st->layer_states[k].name, BALANCE_STATE_NAME) == 0)
                found = &st->layer_states[k];
        /* FIXED keeps nothing that matters, so only the other methods mention a missing state */
        int stateful = s->balancer->cfg.method != MTL_BALANCE_FIXED;
        mtl_error note = {0};
        if (!found && stateful)
            say(s, "Note: the snapshot has no task balancing state; balancing starts afresh");
        else if (found && mtl_balancer_state_load(s->balancer, found->bytes, (size_t)found->size, &note) != MTL_OK &&
                 stateful)
            say(s, "Note: %s; balancing starts afresh", note.message);
    }
    if (s->early_stop) {
        const mtl_snapshot_layer_state *found = NULL;
        for (int k = 0; k < st->n_layer_states; k++)
            if (strcmp(st->layer_states[k].name, EARLY_STOP_STATE_NAME) == 0)
                found = &st->layer_states[k];
        if (!found)
            return mtl_fail(err, MTL_ERR_CONFIG,
                            "snapshot '%s' has no task-wise early stopping record, so the run cannot continue "
                            "exactly; start afresh from its weights (--weights)",
                            path);
        MTL_TRY(mtl_early_stop_state_load(s->early_stop, found->bytes, (size_t)found->size, err));
        float *multipliers = calloc((size_t)net->n_tasks, sizeof(float));
        if (!multipliers)
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        mtl_early_stop_multipliers(s->early_stop, multipliers);
        mtl_balancer_set_multipliers(s->balancer, multipliers);
        free(multipliers);
    }
    if (st->n_rngs >= 1)
        net->rng = st->rngs[0];
    for (int i = 0; i < s->n_test_nets && 1 + i < st->n_rngs; i++)
        s->test_nets[i]->rng = st->rngs[1 + i];
    if (st->window_size == s->window_size && st->window_width == s->window_width) {
        mtl_snapshot_copy(snap, &st->window, s->window);
        s->window_fill = st->window_fill;
        s->window_pos = st->window_pos;
        window_mean(s);
    } else {
        say(s, "Note: average_loss or the net's outputs changed since the snapshot; loss smoothing starts afresh");
        memset(s->window, 0, (size_t)(s->window_size * s->window_width) * sizeof(float));
        s->window_fill = s->window_pos = 0;
    }
    s->iter = st->iter;
    s->last_snapshot_iter = s->iter;
    s->timer_start = now_seconds();
    s->timer_iter = s->iter;
    return MTL_OK;
}

mtl_status mtl_solver_restore(mtl_solver *s, const char *path, mtl_error *err)
{
    say(s, "Restoring previous solver status from %s", path);
    mtl_snapshot *snap = NULL;
    MTL_TRY(mtl_snapshot_read(path, &snap, err));
    mtl_status st = restore_state(s, snap, err);
    mtl_snapshot_free(snap);
    if (st == MTL_OK) {
        free(s->last_snapshot_path);
        s->last_snapshot_path = mtl_strdup(path);
        say(s, "Resuming at iteration %lld", (long long)s->iter);
    }
    return st;
}

mtl_status mtl_solver_load_weights(mtl_solver *s, const char *path, FILE *report, mtl_error *err)
{
    mtl_snapshot *snap = NULL;
    MTL_TRY(mtl_snapshot_read(path, &snap, err));
    mtl_snapshot_match m;
    mtl_status st = mtl_snapshot_load_weights(snap, s->train_net, report, &m, err);
    mtl_snapshot_free(snap);
    if (st == MTL_OK)
        say(s, "Initialized weights from %s: %d copied, %d missing, %d shape mismatches, %d unused", path, m.copied,
            m.missing, m.mismatched, m.unused);
    return st;
}
