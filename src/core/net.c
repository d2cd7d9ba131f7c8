/* Building a net from a NetParameter tree: phase filtering, automatic splits, blob wiring with
 * in-place layers, shape inference, parameter sharing in flat buffers, which layers need
 * backward, and the task structure (which layers each loss depends on). */
#include "core/net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/filler.h"
#include "core/layer_build.h"

/* ---- the layer list after phase filtering and split insertion ---- */

typedef struct layer_desc {
    mtl_cfg_node *cfg;   /* NULL for an automatic split */
    char *name;
    const mtl_layer_ops *ops;
    int n_bottoms, n_tops;
    char **bottoms;      /* names after split rewiring */
    char **source_bottoms; /* names as written */
    char **tops;
    float *loss_weights; /* per top, after moving weights onto splits */
} layer_desc;

typedef struct desc_list {
    layer_desc *items;
    int n, cap;
} desc_list;

static void desc_clear(layer_desc *d)
{
    for (int i = 0; i < d->n_bottoms; i++) {
        free(d->bottoms[i]);
        free(d->source_bottoms[i]);
    }
    for (int i = 0; i < d->n_tops; i++)
        free(d->tops[i]);
    free(d->bottoms);
    free(d->source_bottoms);
    free(d->tops);
    free(d->loss_weights);
    free(d->name);
}

static void desc_list_free(desc_list *list)
{
    for (int i = 0; i < list->n; i++)
        desc_clear(&list->items[i]);
    free(list->items);
    list->items = NULL;
    list->n = list->cap = 0;
}

static layer_desc *desc_push(desc_list *list, mtl_error *err)
{
    if (list->n == list->cap) {
        int cap = list->cap ? list->cap * 2 : 16;
        layer_desc *items = realloc(list->items, (size_t)cap * sizeof(*items));
        if (!items) {
            mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
            return NULL;
        }
        list->items = items;
        list->cap = cap;
    }
    layer_desc *d = &list->items[list->n++];
    memset(d, 0, sizeof(*d));
    return d;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Marks a whole subtree as read: layers filtered out by phase are not validated in this net. */
static void mark_subtree_used(mtl_cfg_node *node)
{
    node->used = 1;
    for (int i = 0; i < node->n_fields; i++)
        mark_subtree_used(node->fields[i]);
}

/* ---- phase filtering (Caffe's NetStateRule) ---- */

typedef struct net_state {
    mtl_phase phase;
    int64_t level;
    int n_stages;
    const char *stages[32];
} net_state;

static const char *const phase_names[] = {"TRAIN", "TEST"};

static mtl_status rule_met(mtl_cfg_node *rule, const net_state *state, int *met, mtl_error *err)
{
    int phase;
    int64_t min_level, max_level;
    *met = 0;
    int has_phase = mtl_cfg_count(rule, "phase") > 0;
    MTL_TRY(mtl_cfg_enum(rule, "phase", phase_names, 2, 0, &phase, err));
    int has_min = mtl_cfg_count(rule, "min_level") > 0, has_max = mtl_cfg_count(rule, "max_level") > 0;
    MTL_TRY(mtl_cfg_int(rule, "min_level", 0, &min_level, err));
    MTL_TRY(mtl_cfg_int(rule, "max_level", 0, &max_level, err));
    if (has_phase && (mtl_phase)phase != state->phase)
        return MTL_OK;
    if (has_min && state->level < min_level)
        return MTL_OK;
    if (has_max && state->level > max_level)
        return MTL_OK;
    for (int i = 0; i < mtl_cfg_count(rule, "stage"); i++) {
        const char *stage;
        MTL_TRY(mtl_cfg_string_at(rule, "stage", i, &stage, err));
        int found = 0;
        for (int s = 0; s < state->n_stages; s++)
            found |= strcmp(state->stages[s], stage) == 0;
        if (!found)
            return MTL_OK;
    }
    for (int i = 0; i < mtl_cfg_count(rule, "not_stage"); i++) {
        const char *stage;
        MTL_TRY(mtl_cfg_string_at(rule, "not_stage", i, &stage, err));
        for (int s = 0; s < state->n_stages; s++)
            if (strcmp(state->stages[s], stage) == 0)
                return MTL_OK;
    }
    *met = 1;
    return MTL_OK;
}

static mtl_status layer_included(mtl_cfg_node *layer, const net_state *state, int *included, mtl_error *err)
{
    int n_include = mtl_cfg_count(layer, "include"), n_exclude = mtl_cfg_count(layer, "exclude");
    if (n_include && n_exclude)
        return mtl_cfg_fail(layer, err, MTL_ERR_CONFIG, "a layer may have include or exclude rules, not both");
    *included = n_include == 0;
    for (int i = 0; i < n_exclude; i++) {
        int met;
        MTL_TRY(rule_met(mtl_cfg_field(layer, "exclude", i), state, &met, err));
        if (met)
            *included = 0;
    }
    for (int i = 0; i < n_include; i++) {
        int met;
        MTL_TRY(rule_met(mtl_cfg_field(layer, "include", i), state, &met, err));
        if (met)
            *included = 1;
    }
    return MTL_OK;
}

/* ---- reading layer descriptions ---- */

static mtl_status read_names(mtl_cfg_node *layer, const char *field, char ***out, int *n, mtl_error *err)
{
    *n = mtl_cfg_count(layer, field);
    *out = calloc((size_t)(*n ? *n : 1), sizeof(char *));
    if (!*out)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < *n; i++) {
        const char *name;
        MTL_TRY(mtl_cfg_string_at(layer, field, i, &name, err));
        if (!((*out)[i] = mtl_strdup(name)))
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    }
    return MTL_OK;
}

static mtl_status read_layer_desc(mtl_cfg_node *layer, layer_desc *d, mtl_error *err)
{
    const char *name, *type;
    d->cfg = layer;
    MTL_TRY(mtl_cfg_string(layer, "name", "", &name, err));
    MTL_TRY(mtl_cfg_string(layer, "type", NULL, &type, err));
    if (!(d->name = mtl_strdup(name)))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    if (!type)
        return mtl_cfg_fail(layer, err, MTL_ERR_CONFIG, "layer '%s' has no type", name);
    MTL_TRY(mtl_layer_find_type(layer, type, &d->ops, err));
    mtl_cfg_accept(layer, "phase"); /* a layer's own phase is set by the net */
    MTL_TRY(read_names(layer, "bottom", &d->bottoms, &d->n_bottoms, err));
    MTL_TRY(read_names(layer, "top", &d->tops, &d->n_tops, err));
    d->source_bottoms = calloc((size_t)(d->n_bottoms ? d->n_bottoms : 1), sizeof(char *));
    d->loss_weights = calloc((size_t)(d->n_tops ? d->n_tops : 1), sizeof(float));
    if (!d->source_bottoms || !d->loss_weights)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < d->n_bottoms; i++)
        if (!(d->source_bottoms[i] = mtl_strdup(d->bottoms[i])))
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    int n_weights = mtl_cfg_count(layer, "loss_weight");
    for (int i = 0; i < d->n_tops; i++) {
        double w = (i == 0 && ends_with(type, "Loss")) ? 1.0 : 0.0;
        if (i < n_weights)
            MTL_TRY(mtl_cfg_float_at(layer, "loss_weight", i, &w, err));
        d->loss_weights[i] = (float)w;
    }
    return MTL_OK;
}

/* ---- automatic splits (as Caffe's insert_splits) ---- */

typedef struct top_ref {
    int layer, top;
} top_ref;

static mtl_status insert_splits(desc_list *in, desc_list *out, mtl_error *err)
{
    int n = in->n;
    /* for every (layer, top): how many consumers, and which k-th consumer each bottom is */
    /* consumers[i][t] counts readers of top t of layer i; weighted[i][t] whether a loss weighs it
     * (taken before layers move to `out`, where weights may move onto splits) */
    int **consumers = calloc((size_t)(n ? n : 1), sizeof(int *));
    int **weighted = calloc((size_t)(n ? n : 1), sizeof(int *));
    const char **names = calloc((size_t)(n ? n : 1), sizeof(char *)); /* strings survive the move */
    int **bottom_split_index = calloc((size_t)(n ? n : 1), sizeof(int *));
    top_ref **bottom_source = calloc((size_t)(n ? n : 1), sizeof(top_ref *));
    mtl_status st = MTL_OK;
    if (!consumers || !weighted || !names || !bottom_split_index || !bottom_source) {
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        layer_desc *d = &in->items[i];
        consumers[i] = calloc((size_t)(d->n_tops ? d->n_tops : 1), sizeof(int));
        weighted[i] = calloc((size_t)(d->n_tops ? d->n_tops : 1), sizeof(int));
        bottom_split_index[i] = calloc((size_t)(d->n_bottoms ? d->n_bottoms : 1), sizeof(int));
        bottom_source[i] = calloc((size_t)(d->n_bottoms ? d->n_bottoms : 1), sizeof(top_ref));
        if (!consumers[i] || !weighted[i] || !bottom_split_index[i] || !bottom_source[i]) {
            st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int t = 0; t < d->n_tops; t++)
            weighted[i][t] = d->loss_weights[t] != 0.0f;
        names[i] = d->name;
    }
    for (int i = 0; i < n; i++) {
        layer_desc *d = &in->items[i];
        for (int b = 0; b < d->n_bottoms; b++) {
            bottom_source[i][b] = (top_ref){-1, -1};
            /* the latest earlier producer of this name */
            for (int j = i - 1; j >= 0 && bottom_source[i][b].layer < 0; j--)
                for (int t = 0; t < in->items[j].n_tops; t++)
                    if (strcmp(in->items[j].tops[t], d->bottoms[b]) == 0)
                        bottom_source[i][b] = (top_ref){j, t};
            top_ref src = bottom_source[i][b];
            if (src.layer >= 0)
                bottom_split_index[i][b] = consumers[src.layer][src.top]++;
        }
    }
    for (int i = 0; i < n; i++) {
        layer_desc *d = &in->items[i];
        for (int b = 0; b < d->n_bottoms; b++) {
            top_ref src = bottom_source[i][b];
            if (src.layer < 0)
                continue;
            int count = consumers[src.layer][src.top] + weighted[src.layer][src.top];
            if (count > 1) {
                char name[1024];
                int k = bottom_split_index[i][b] + weighted[src.layer][src.top];
                snprintf(name, sizeof(name), "%s_%s_%d_split_%d", d->bottoms[b], names[src.layer],
                         src.top, k);
                free(d->bottoms[b]);
                if (!(d->bottoms[b] = mtl_strdup(name))) {
                    st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
                    goto done;
                }
            }
        }
        /* move the layer into the output list, then its splits */
        layer_desc *moved = desc_push(out, err);
        if (!moved) {
            st = err->status;
            goto done;
        }
        *moved = *d;
        memset(d, 0, sizeof(*d));
        d = moved;
        for (int t = 0; t < d->n_tops; t++) {
            int is_weighted = d->loss_weights[t] != 0.0f;
            int count = consumers[i][t] + is_weighted;
            if (count <= 1)
                continue;
            char *blob = d->tops[t];
            char split_name[1024];
            snprintf(split_name, sizeof(split_name), "%s_%s_%d_split", blob, d->name, t);
            int layer_index = (int)(d - out->items);
            layer_desc *s = desc_push(out, err);
            if (!s) {
                st = err->status;
                goto done;
            }
            d = &out->items[layer_index]; /* the push may have moved the array */
            s->name = mtl_strdup(split_name);
            s->ops = mtl_layer_ops_find("Split");
            s->n_bottoms = 1;
            s->n_tops = count;
            s->bottoms = calloc(1, sizeof(char *));
            s->source_bottoms = calloc(1, sizeof(char *));
            s->tops = calloc((size_t)count, sizeof(char *));
            s->loss_weights = calloc((size_t)count, sizeof(float));
            if (!s->name || !s->ops || !s->bottoms || !s->source_bottoms || !s->tops || !s->loss_weights) {
                st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
                goto done;
            }
            s->bottoms[0] = mtl_strdup(d->tops[t]);
            s->source_bottoms[0] = mtl_strdup(d->tops[t]);
            for (int k = 0; k < count; k++) {
                char name[1024];
                snprintf(name, sizeof(name), "%s_%s_%d_split_%d", d->tops[t], d->name, t, k);
                s->tops[k] = mtl_strdup(name);
                if (!s->tops[k]) {
                    st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
                    goto done;
                }
            }
            if (is_weighted) { /* the loss keeps its weight on the split's first output */
                s->loss_weights[0] = d->loss_weights[t];
                d->loss_weights[t] = 0.0f;
            }
        }
    }
done:
    for (int i = 0; i < n; i++) {
        if (consumers)
            free(consumers[i]);
        if (weighted)
            free(weighted[i]);
        if (bottom_split_index)
            free(bottom_split_index[i]);
        if (bottom_source)
            free(bottom_source[i]);
    }
    free(consumers);
    free(weighted);
    free(names);
    free(bottom_split_index);
    free(bottom_source);
    return st;
}

/* ---- net construction ---- */

static mtl_status add_blob(mtl_net *net, const char *name, int *index, mtl_error *err)
{
    mtl_tensor **blobs = realloc(net->blobs, (size_t)(net->n_blobs + 1) * sizeof(*blobs));
    if (!blobs)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    net->blobs = blobs;
    if (!(blobs[net->n_blobs] = mtl_tensor_create(name)))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    *index = net->n_blobs++;
    return MTL_OK;
}

int mtl_net_blob_index(const mtl_net *net, const char *name)
{
    for (int i = net->n_blobs - 1; i >= 0; i--) /* the latest version of a name */
        if (strcmp(net->blobs[i]->name, name) == 0)
            return i;
    return -1;
}

mtl_tensor *mtl_net_blob(const mtl_net *net, const char *name)
{
    int i = mtl_net_blob_index(net, name);
    return i < 0 ? NULL : net->blobs[i];
}

int mtl_net_layer_index(const mtl_net *net, const char *name)
{
    for (int i = 0; i < net->n_layers; i++)
        if (strcmp(net->layers[i]->name, name) == 0)
            return i;
    return -1;
}

static mtl_status read_net_inputs(mtl_net *net, mtl_cfg_node *root, int *blob_writer, mtl_error *err)
{
    int n_inputs = mtl_cfg_count(root, "input");
    int n_shapes = mtl_cfg_count(root, "input_shape");
    int n_dims = mtl_cfg_count(root, "input_dim");
    if (n_shapes && n_dims)
        return mtl_cfg_fail(root, err, MTL_ERR_CONFIG, "give input shapes with input_shape or input_dim, not both");
    if (n_shapes && n_shapes != n_inputs)
        return mtl_cfg_fail(mtl_cfg_field(root, "input_shape", 0), err, MTL_ERR_CONFIG,
                            "%d input_shape for %d input blobs", n_shapes, n_inputs);
    if (n_dims && n_dims != 4 * n_inputs)
        return mtl_cfg_fail(mtl_cfg_field(root, "input_dim", 0), err, MTL_ERR_CONFIG,
                            "input_dim needs 4 values per input (%d inputs, %d values)", n_inputs, n_dims);
    if (n_inputs && !n_shapes && !n_dims)
        return mtl_cfg_fail(mtl_cfg_field(root, "input", 0), err, MTL_ERR_CONFIG,
                            "input blobs need input_shape or input_dim");
    for (int i = 0; i < n_inputs; i++) {
        const char *name;
        MTL_TRY(mtl_cfg_string_at(root, "input", i, &name, err));
        if (mtl_net_blob_index(net, name) >= 0)
            return mtl_cfg_fail(mtl_cfg_field(root, "input", i), err, MTL_ERR_CONFIG, "input '%s' given twice", name);
        int shape[MTL_MAX_AXES], ndim = 0;
        if (n_shapes) {
            mtl_cfg_node *s = mtl_cfg_field(root, "input_shape", i);
            ndim = mtl_cfg_count(s, "dim");
            if (ndim > MTL_MAX_AXES)
                return mtl_cfg_fail(s, err, MTL_ERR_SHAPE, "input_shape has %d axes, at most %d", ndim, MTL_MAX_AXES);
            for (int a = 0; a < ndim; a++) {
                int64_t v;
                MTL_TRY(mtl_cfg_int_at(s, "dim", a, &v, err));
                if (v < 0 || v > INT32_MAX)
                    return mtl_cfg_fail(s, err, MTL_ERR_SHAPE, "input_shape dim %lld out of range", (long long)v);
                shape[a] = (int)v;
            }
        } else {
            ndim = 4;
            for (int a = 0; a < 4; a++) {
                int64_t v;
                MTL_TRY(mtl_cfg_int_at(root, "input_dim", 4 * i + a, &v, err));
                if (v < 0 || v > INT32_MAX)
                    return mtl_cfg_fail(root, err, MTL_ERR_SHAPE, "input_dim %lld out of range", (long long)v);
                shape[a] = (int)v;
            }
        }
        int index = -1;
        MTL_TRY(add_blob(net, name, &index, err));
        MTL_TRY(mtl_tensor_reshape(net->blobs[index], ndim, shape, err));
        blob_writer[index] = -1;
        int *inputs = realloc(net->input_blobs, (size_t)(net->n_inputs + 1) * sizeof(int));
        if (!inputs)
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        net->input_blobs = inputs;
        inputs[net->n_inputs++] = index;
    }
    return MTL_OK;
}

/* Whether desc `later` depends (through earlier producers, by name) on desc `target`. */
static int depends_on(const desc_list *list, int later, int target, int depth)
{
    if (later == target)
        return 1;
    if (depth > list->n)
        return 0;
    const layer_desc *d = &list->items[later];
    for (int b = 0; b < d->n_bottoms; b++)
        for (int j = 0; j < list->n; j++) {
            if (j == later)
                continue;
            for (int t = 0; t < list->items[j].n_tops; t++)
                if (strcmp(list->items[j].tops[t], d->bottoms[b]) == 0 && depends_on(list, j, target, depth + 1))
                    return 1;
        }
    return 0;
}

static mtl_status unknown_bottom(const mtl_net *net, const desc_list *list, int i, int b, mtl_error *err)
{
    const layer_desc *d = &list->items[i];
    const char *name = d->source_bottoms[b];
    const char *file = d->cfg ? d->cfg->file : "<net>";
    int line = d->cfg ? d->cfg->line : 0;
    for (int j = i + 1; j < list->n; j++)
        for (int t = 0; t < list->items[j].n_tops; t++)
            if (strcmp(list->items[j].tops[t], name) == 0) {
                int jline = list->items[j].cfg ? list->items[j].cfg->line : 0;
                if (depends_on(list, j, i, 0))
                    return mtl_fail(err, MTL_ERR_CONFIG,
                                    "%s:%d: layer '%s': bottom '%s' comes from layer '%s' (line %d), which itself "
                                    "depends on '%s': the net has a cycle",
                                    file, line, d->name, name, list->items[j].name, jline, d->name);
                return mtl_fail(err, MTL_ERR_CONFIG,
                                "%s:%d: layer '%s': bottom '%s' is produced by layer '%s' further down (line %d); "
                                "layers run in file order, so move '%s' above '%s'",
                                file, line, d->name, name, list->items[j].name, jline, list->items[j].name, d->name);
            }
    const char **names = calloc((size_t)(net->n_blobs ? net->n_blobs : 1), sizeof(char *));
    char hint[512] = "";
    int found = 0;
    if (names) {
        for (int k = 0; k < net->n_blobs; k++)
            names[k] = net->blobs[k]->name;
        found = mtl_cfg_suggest(name, names, net->n_blobs, 3, hint, sizeof(hint));
        free(names);
    }
    return mtl_fail(err, MTL_ERR_CONFIG, "%s:%d: layer '%s': unknown bottom blob '%s'%s%s", file, line, d->name,
                    name, found ? "; did you mean " : "", found ? hint : "");
}

/* Creates the layer for desc i: wires bottoms and tops, runs setup and the first reshape. */
static mtl_status build_layer(mtl_net *net, const desc_list *list, int i, int *blob_writer, mtl_error *err)
{
    const layer_desc *d = &list->items[i];
    const char *file = d->cfg ? d->cfg->file : "<net>";
    int line = d->cfg ? d->cfg->line : 0;
    mtl_tensor **bottoms = calloc((size_t)(d->n_bottoms ? d->n_bottoms : 1), sizeof(*bottoms));
    mtl_tensor **tops = calloc((size_t)(d->n_tops ? d->n_tops : 1), sizeof(*tops));
    int *producers = calloc((size_t)(d->n_bottoms ? d->n_bottoms : 1), sizeof(int));
    int *bottom_blob = calloc((size_t)(d->n_bottoms ? d->n_bottoms : 1), sizeof(int));
    mtl_status st = MTL_OK;
    if (!bottoms || !tops || !producers || !bottom_blob) {
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int b = 0; b < d->n_bottoms; b++) {
        int index = mtl_net_blob_index(net, d->bottoms[b]);
        if (index < 0) {
            st = unknown_bottom(net, list, i, b, err);
            goto done;
        }
        bottoms[b] = net->blobs[index];
        bottom_blob[b] = index;
        producers[b] = blob_writer[index];
    }
    for (int t = 0; t < d->n_tops; t++) {
        int in_place = -1;
        for (int b = 0; b < d->n_bottoms; b++)
            if (strcmp(d->bottoms[b], d->tops[t]) == 0)
                in_place = b;
        for (int u = 0; u < t; u++)
            if (strcmp(d->tops[u], d->tops[t]) == 0) {
                st = mtl_fail(err, MTL_ERR_CONFIG, "%s:%d: layer '%s': top '%s' given twice", file, line, d->name,
                              d->tops[t]);
                goto done;
            }
        if (in_place >= 0) {
            if (!d->ops->allows_in_place || in_place != 0 || t != 0) {
                st = mtl_fail(err, MTL_ERR_CONFIG,
                              "%s:%d: layer '%s' (%s): cannot compute in place (top '%s' is also its bottom); "
                              "give the top another name",
                              file, line, d->name, d->ops->type, d->tops[t]);
                goto done;
            }
            tops[t] = bottoms[in_place];
            blob_writer[bottom_blob[in_place]] = i;
            continue;
        }
        int existing = mtl_net_blob_index(net, d->tops[t]);
        int renamed_bottom = 0; /* a split rewired our read of this name: a new version is fine */
        for (int b = 0; b < d->n_bottoms; b++)
            renamed_bottom |= strcmp(d->source_bottoms[b], d->tops[t]) == 0;
        if (existing >= 0 && !renamed_bottom) {
            int other = blob_writer[existing];
            if (other >= 0)
                st = mtl_fail(err, MTL_ERR_CONFIG,
                              "%s:%d: layer '%s': top '%s' is already produced by layer '%s'; each blob needs one "
                              "producer (in-place layers name the same blob as bottom and top)",
                              file, line, d->name, d->tops[t], net->layers[other]->name);
            else
                st = mtl_fail(err, MTL_ERR_CONFIG, "%s:%d: layer '%s': top '%s' is already a net input", file, line,
                              d->name, d->tops[t]);
            goto done;
        }
        int index = -1;
        if ((st = add_blob(net, d->tops[t], &index, err)) != MTL_OK)
            goto done;
        tops[t] = net->blobs[index];
        blob_writer[index] = i;
    }

    mtl_layer *l = NULL;
    st = mtl_layer_begin(d->cfg, d->ops, d->name, net->phase, bottoms, d->n_bottoms, tops, d->n_tops, &net->rng, &l,
                         err);
    net->layers[i] = l;
    net->bottom_producer[i] = producers;
    producers = NULL;
    if (st != MTL_OK)
        goto done;
    l->file = file;
    l->line = line;
    memcpy(l->loss_weights, d->loss_weights, (size_t)d->n_tops * sizeof(float));
    if (l->ops->reshape)
        st = l->ops->reshape(l, err);
done:
    free(bottoms);
    free(tops);
    free(producers);
    free(bottom_blob);
    return st;
}

/* ---- parameters: flat buffers, sharing by name, sharing with another net ---- */

static int find_shared_slot(const mtl_net *net, const char *name)
{
    for (int s = 0; s < net->n_slots; s++)
        if (strcmp(net->slots[s].name, name) == 0)
            return s;
    return -1;
}

static mtl_status setup_params(mtl_net *net, const mtl_net *share, mtl_error *err)
{
    int total = 0;
    for (int i = 0; i < net->n_layers; i++)
        total += net->layers[i]->n_params;
    net->slots = calloc((size_t)(total ? total : 1), sizeof(*net->slots));
    net->layer_param_slot = calloc((size_t)(net->n_layers ? net->n_layers : 1), sizeof(int *));
    if (!net->slots || !net->layer_param_slot)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    /* which slots view another net's memory */
    const mtl_param_slot **external = calloc((size_t)(total ? total : 1), sizeof(*external));
    if (!external)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    mtl_status st = MTL_OK;
    int64_t offset = 0;
    for (int i = 0; i < net->n_layers && st == MTL_OK; i++) {
        mtl_layer *l = net->layers[i];
        net->layer_param_slot[i] = calloc((size_t)(l->n_params ? l->n_params : 1), sizeof(int));
        if (!net->layer_param_slot[i]) {
            st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
            break;
        }
        for (int p = 0; p < l->n_params; p++) {
            mtl_param_spec *spec = &l->param_specs[p];
            mtl_tensor *t = l->params[p];
            char buf[64], buf2[64];
            int slot = spec->share_name ? find_shared_slot(net, spec->share_name) : -1;
            if (slot >= 0) {
                mtl_param_slot *s = &net->slots[slot];
                mtl_tensor *owner = net->layers[s->owner_layer]->params[s->owner_index];
                if (!mtl_tensor_same_shape(owner, t)) {
                    st = mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                                        "shared parameter '%s' has shape %s here but %s in layer '%s'",
                                        spec->share_name, mtl_tensor_shape_str(t, buf, sizeof(buf)),
                                        mtl_tensor_shape_str(owner, buf2, sizeof(buf2)),
                                        net->layers[s->owner_layer]->name);
                    break;
                }
                if (s->lr_mult != spec->lr_mult || s->decay_mult != spec->decay_mult) {
                    st = mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                                        "shared parameter '%s' has lr_mult %g decay_mult %g here but %g and %g in "
                                        "layer '%s'",
                                        spec->share_name, spec->lr_mult, spec->decay_mult, s->lr_mult, s->decay_mult,
                                        net->layers[s->owner_layer]->name);
                    break;
                }
                s->n_users++;
                net->layer_param_slot[i][p] = slot;
                continue;
            }
            slot = net->n_slots++;
            mtl_param_slot *s = &net->slots[slot];
            char name[512];
            snprintf(name, sizeof(name), "%s/%d", l->name, p);
            s->name = mtl_strdup(spec->share_name ? spec->share_name : name);
            if (!s->name) {
                st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
                break;
            }
            s->count = t->count;
            s->lr_mult = spec->lr_mult;
            s->decay_mult = spec->decay_mult;
            s->owner_layer = i;
            s->owner_index = p;
            s->n_users = 1;
            net->layer_param_slot[i][p] = slot;
            /* a TEST net views the TRAIN net's parameter of the same layer name and index */
            int other = share ? mtl_net_layer_index(share, l->name) : -1;
            if (other >= 0 && p < share->layers[other]->n_params) {
                const mtl_param_slot *src = &share->slots[share->layer_param_slot[other][p]];
                mtl_tensor *srct = share->layers[other]->params[p];
                if (!mtl_tensor_same_shape(srct, t)) {
                    st = mtl_layer_fail(l, err, MTL_ERR_SHAPE,
                                        "parameter %d has shape %s here but %s in the %s net's layer of that name", p,
                                        mtl_tensor_shape_str(t, buf, sizeof(buf)),
                                        mtl_tensor_shape_str(srct, buf2, sizeof(buf2)),
                                        share->phase == MTL_PHASE_TRAIN ? "TRAIN" : "TEST");
                    break;
                }
                external[slot] = src;
                s->offset = -1;
                continue;
            }
            s->offset = offset;
            offset += (t->count + 15) / 16 * 16; /* 64-byte aligned slots */
        }
    }
    if (st == MTL_OK) {
        net->n_param_values = offset;
        net->param_data = mtl_aligned_alloc((size_t)(offset ? offset : 1) * sizeof(float));
        net->param_grad = mtl_aligned_alloc((size_t)(offset ? offset : 1) * sizeof(float));
        if (!net->param_data || !net->param_grad)
            st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory for %lld parameters", (long long)offset);
    }
    if (st == MTL_OK) {
        memset(net->param_data, 0, (size_t)(offset ? offset : 1) * sizeof(float));
        memset(net->param_grad, 0, (size_t)(offset ? offset : 1) * sizeof(float));
        net->shares_params = share != NULL;
        for (int s = 0; s < net->n_slots; s++) {
            mtl_param_slot *slot = &net->slots[s];
            slot->data = external[s] ? external[s]->data : net->param_data + slot->offset;
            slot->grad = external[s] ? external[s]->grad : net->param_grad + slot->offset;
        }
        for (int i = 0; i < net->n_layers; i++)
            for (int p = 0; p < net->layers[i]->n_params; p++) {
                mtl_param_slot *slot = &net->slots[net->layer_param_slot[i][p]];
                mtl_tensor_set_view(net->layers[i]->params[p], slot->data, slot->grad);
            }
        /* fillers run once per slot that this net owns; the others are only checked */
        for (int i = 0; i < net->n_layers && st == MTL_OK; i++)
            for (int p = 0; p < net->layers[i]->n_params && st == MTL_OK; p++) {
                int s = net->layer_param_slot[i][p];
                if (external[s] || net->slots[s].owner_layer != i || net->slots[s].owner_index != p)
                    st = mtl_filler_check(net->layers[i]->param_specs[p].filler, err);
            }
        for (int s = 0; s < net->n_slots && st == MTL_OK; s++) {
            if (external[s])
                continue;
            mtl_layer *l = net->layers[net->slots[s].owner_layer];
            int p = net->slots[s].owner_index;
            st = mtl_filler_fill(l->param_specs[p].filler, l->params[p], &net->rng, err);
            if (st != MTL_OK)
                mtl_error_prefix(err, "layer '%s' parameter %d: ", l->name, p);
        }
    }
    free(external);
    return st;
}

/* ---- which layers need backward (as Caffe's Net::Init) ---- */

static mtl_status analyse_backward(mtl_net *net, int force_backward, mtl_error *err)
{
    int n = net->n_layers;
    uint8_t *blob_needs_grad = calloc((size_t)(net->n_blobs ? net->n_blobs : 1), 1);
    uint8_t *blob_under_loss = calloc((size_t)(net->n_blobs ? net->n_blobs : 1), 1);
    net->layer_needs_backward = calloc((size_t)(n ? n : 1), sizeof(int));
    if (!blob_needs_grad || !blob_under_loss || !net->layer_needs_backward) {
        free(blob_needs_grad);
        free(blob_under_loss);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    }
    int *needs = net->layer_needs_backward;
    for (int i = 0; i < n; i++) {
        mtl_layer *l = net->layers[i];
        int need = 0;
        if (!l->ops->no_backward) {
            for (int p = 0; p < l->n_params; p++)
                need |= l->param_specs[p].lr_mult != 0.0f;
            for (int b = 0; b < l->n_bottoms; b++)
                need |= blob_needs_grad[mtl_net_tensor_index(net, l->bottoms[b])];
            need |= force_backward;
        }
        needs[i] = need;
        for (int t = 0; t < l->n_tops; t++)
            blob_needs_grad[mtl_net_tensor_index(net, l->tops[t])] |= (uint8_t)need;
    }
    /* keep only what some loss depends on */
    for (int i = n - 1; i >= 0; i--) {
        mtl_layer *l = net->layers[i];
        int under_loss = 0;
        for (int t = 0; t < l->n_tops; t++)
            under_loss |= l->loss_weights[t] != 0.0f || blob_under_loss[mtl_net_tensor_index(net, l->tops[t])];
        if (!under_loss && !force_backward)
            needs[i] = 0;
        if (under_loss)
            for (int b = 0; b < l->n_bottoms; b++)
                blob_under_loss[mtl_net_tensor_index(net, l->bottoms[b])] = 1;
    }
    for (int i = 0; i < n; i++) {
        mtl_layer *l = net->layers[i];
        for (int b = 0; b < l->n_bottoms; b++) {
            int id = mtl_net_tensor_index(net, l->bottoms[b]);
            int configured = l->propagate_down[b];
            l->propagate_down[b] = needs[i] && configured && (blob_needs_grad[id] || force_backward);
            /* inputs get gradients only when forced */
            if (!force_backward && net->bottom_producer[i][b] < 0)
                l->propagate_down[b] = 0;
        }
        for (int p = 0; p < l->n_params; p++)
            l->param_needs_grad[p] = needs[i] && l->param_specs[p].lr_mult != 0.0f;
    }
    for (int s = 0; s < net->n_slots; s++)
        net->slots[s].needs_grad = 0;
    for (int i = 0; i < n; i++)
        for (int p = 0; p < net->layers[i]->n_params; p++)
            net->slots[net->layer_param_slot[i][p]].needs_grad |= net->layers[i]->param_needs_grad[p];
    free(blob_needs_grad);
    free(blob_under_loss);
    return MTL_OK;
}

int mtl_net_tensor_index(const mtl_net *net, const mtl_tensor *t)
{
    for (int i = 0; i < net->n_blobs; i++)
        if (net->blobs[i] == t)
            return i;
    return -1;
}

/* ---- outputs, dangling tops, tasks ---- */

static mtl_status analyse_outputs_and_tasks(mtl_net *net, mtl_error *err)
{
    int n = net->n_layers;
    int *consumed = calloc((size_t)(net->n_blobs ? net->n_blobs : 1), sizeof(int));
    if (!consumed)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        for (int b = 0; b < net->layers[i]->n_bottoms; b++)
            consumed[mtl_net_tensor_index(net, net->layers[i]->bottoms[b])]++;
    net->output_blobs = calloc((size_t)(net->n_blobs ? net->n_blobs : 1), sizeof(int));
    net->dangling = calloc((size_t)(net->n_blobs ? net->n_blobs : 1), sizeof(mtl_tensor *));
    net->layer_role = calloc((size_t)(n ? n : 1), sizeof(int));
    mtl_status st = MTL_OK;
    if (!net->output_blobs || !net->dangling || !net->layer_role) {
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < net->n_blobs; i++) {
        if (consumed[i])
            continue;
        /* an in-place chain writes one tensor; it is an output if its last writer's top is unread */
        net->output_blobs[net->n_outputs++] = i;
    }
    /* tops whose gradient no reader writes (unread, or read only by layers without backward,
     * such as Accuracy) are zeroed before each backward, so their producer reads zeros */
    uint8_t *grad_written = calloc((size_t)(net->n_blobs ? net->n_blobs : 1), 1);
    if (!grad_written) {
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++)
        for (int b = 0; b < net->layers[i]->n_bottoms; b++)
            if (net->layer_needs_backward[i] && net->layers[i]->propagate_down[b])
                grad_written[mtl_net_tensor_index(net, net->layers[i]->bottoms[b])] = 1;
    for (int i = 0; i < n; i++) {
        mtl_layer *l = net->layers[i];
        for (int t = 0; t < l->n_tops; t++)
            if (l->loss_weights[t] == 0.0f && !grad_written[mtl_net_tensor_index(net, l->tops[t])] &&
                net->layer_needs_backward[i])
                net->dangling[net->n_dangling++] = l->tops[t];
    }
    free(grad_written);
    /* tasks: every weighted top */
    for (int i = 0; i < n; i++)
        for (int t = 0; t < net->layers[i]->n_tops; t++)
            net->n_tasks += net->layers[i]->loss_weights[t] != 0.0f;
    net->tasks = calloc((size_t)(net->n_tasks ? net->n_tasks : 1), sizeof(*net->tasks));
    if (!net->tasks) {
        st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        goto done;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        mtl_layer *l = net->layers[i];
        for (int t = 0; t < l->n_tops; t++) {
            if (l->loss_weights[t] == 0.0f)
                continue;
            mtl_task *task = &net->tasks[k++];
            /* a weight moved onto a split keeps the name of the blob the user wrote */
            const char *name = l->tops[t]->name;
            if (net->layer_is_auto_split[i])
                name = l->bottoms[0]->name;
            task->name = mtl_strdup(name);
            task->layer = i;
            task->top = t;
            task->weight = l->loss_weights[t];
            task->layer_mask = calloc((size_t)(n ? n : 1), 1);
            if (!task->name || !task->layer_mask) {
                st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
                goto done;
            }
            task->layer_mask[i] = 1;
            for (int j = i; j >= 0; j--) {
                if (!task->layer_mask[j])
                    continue;
                for (int b = 0; b < net->layers[j]->n_bottoms; b++)
                    if (net->bottom_producer[j][b] >= 0)
                        task->layer_mask[net->bottom_producer[j][b]] = 1;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        int owners = 0, owner = MTL_ROLE_NONE;
        for (int t = 0; t < net->n_tasks; t++)
            if (net->tasks[t].layer_mask[i]) {
                owners++;
                owner = t;
            }
        net->layer_role[i] = owners == 0 ? MTL_ROLE_NONE : owners == 1 ? owner : MTL_ROLE_SHARED;
    }
done:
    free(consumed);
    return st;
}

/* ---- the whole build ---- */

static mtl_status build(mtl_net *net, mtl_cfg_node *root, const mtl_net_options *opts, mtl_error *err)
{
    const char *name;
    int force_backward = opts->force_backward;
    MTL_TRY(mtl_cfg_string(root, "name", "", &name, err));
    if (!(net->name = mtl_strdup(name)))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    int fb;
    MTL_TRY(mtl_cfg_bool(root, "force_backward", 0, &fb, err));
    force_backward |= fb;
    mtl_cfg_accept(root, "debug_info");
    if (mtl_cfg_count(root, "layers") > 0)
        return mtl_cfg_fail(mtl_cfg_field(root, "layers", 0), err, MTL_ERR_UNSUPPORTED,
                            "this net uses Caffe's V1 'layers' format; convert it to 'layer' with Caffe's "
                            "upgrade_net_proto_text");

    net_state state = {.phase = net->phase};
    mtl_cfg_node *state_cfg;
    MTL_TRY(mtl_cfg_message(root, "state", &state_cfg, err));
    if (state_cfg) {
        int phase;
        MTL_TRY(mtl_cfg_enum(state_cfg, "phase", phase_names, 2, net->phase, &phase, err));
        MTL_TRY(mtl_cfg_int(state_cfg, "level", 0, &state.level, err));
        state.n_stages = mtl_cfg_count(state_cfg, "stage");
        if (state.n_stages > 32)
            return mtl_cfg_fail(state_cfg, err, MTL_ERR_CONFIG, "at most 32 stages");
        for (int i = 0; i < state.n_stages; i++)
            MTL_TRY(mtl_cfg_string_at(state_cfg, "stage", i, &state.stages[i], err));
    }

    desc_list written = {0}, list = {0};
    mtl_status st = MTL_OK;
    int n_layer_cfgs = mtl_cfg_count(root, "layer");
    for (int i = 0; i < n_layer_cfgs && st == MTL_OK; i++) {
        mtl_cfg_node *layer = mtl_cfg_field(root, "layer", i);
        int included = 0;
        if (layer->kind != MTL_CFG_MESSAGE) {
            st = mtl_cfg_fail(layer, err, MTL_ERR_CONFIG, "'layer' must be a message: layer { ... }");
            break;
        }
        if ((st = layer_included(layer, &state, &included, err)) != MTL_OK)
            break;
        if (!included) {
            const char *type;
            /* a layer type mtl lacks is reported whichever phase uses it */
            if ((st = mtl_cfg_string(layer, "type", NULL, &type, err)) != MTL_OK)
                break;
            const mtl_layer_ops *ops;
            if (type && (st = mtl_layer_find_type(layer, type, &ops, err)) != MTL_OK)
                break;
            mark_subtree_used(layer);
            continue;
        }
        layer_desc *d = desc_push(&written, err);
        if (!d) {
            st = err->status;
            break;
        }
        st = read_layer_desc(layer, d, err);
    }
    if (st == MTL_OK)
        st = insert_splits(&written, &list, err);
    desc_list_free(&written);

    int *blob_writer = NULL;
    if (st == MTL_OK) {
        /* blobs are at most the inputs plus every top */
        int max_blobs = mtl_cfg_count(root, "input") + 1;
        for (int i = 0; i < list.n; i++)
            max_blobs += list.items[i].n_tops;
        blob_writer = calloc((size_t)max_blobs, sizeof(int));
        net->layers = calloc((size_t)(list.n ? list.n : 1), sizeof(*net->layers));
        net->bottom_producer = calloc((size_t)(list.n ? list.n : 1), sizeof(int *));
        net->layer_is_auto_split = calloc((size_t)(list.n ? list.n : 1), sizeof(int));
        if (!blob_writer || !net->layers || !net->bottom_producer || !net->layer_is_auto_split)
            st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    }
    if (st == MTL_OK)
        st = read_net_inputs(net, root, blob_writer, err);
    for (int i = 0; i < list.n && st == MTL_OK; i++) {
        net->n_layers = i + 1;
        net->layer_is_auto_split[i] = list.items[i].cfg == NULL;
        st = build_layer(net, &list, i, blob_writer, err);
        if (st == MTL_OK && net->layers[i]->ops == mtl_layer_ops_find("Input")) {
            for (int t = 0; t < net->layers[i]->n_tops; t++) {
                int *inputs = realloc(net->input_blobs, (size_t)(net->n_inputs + 1) * sizeof(int));
                if (!inputs) {
                    st = mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
                    break;
                }
                net->input_blobs = inputs;
                inputs[net->n_inputs++] = mtl_net_tensor_index(net, net->layers[i]->tops[t]);
            }
        }
    }
    free(blob_writer);
    desc_list_free(&list);
    if (st != MTL_OK)
        return st;
    MTL_TRY(setup_params(net, opts->share, err)); /* fillers read their fields here */
    MTL_TRY(mtl_cfg_check_unused(root, err));
    MTL_TRY(analyse_backward(net, force_backward, err));
    MTL_TRY(analyse_outputs_and_tasks(net, err));
    return MTL_OK;
}

mtl_status mtl_net_from_config(mtl_cfg_node *root, const mtl_net_options *opts, mtl_net **out, mtl_error *err)
{
    *out = NULL;
    mtl_net_options defaults = {.phase = MTL_PHASE_TRAIN, .seed = 1701};
    if (!opts)
        opts = &defaults;
    mtl_net *net = calloc(1, sizeof(*net));
    if (!net) {
        mtl_cfg_free(root);
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    }
    net->cfg_root = root;
    net->phase = opts->phase;
    mtl_rng_seed(&net->rng, opts->seed);
    mtl_status st = build(net, root, opts, err);
    if (st != MTL_OK) {
        mtl_net_free(net);
        return st;
    }
    *out = net;
    return MTL_OK;
}

mtl_status mtl_net_from_file(const char *path, const mtl_net_options *opts, mtl_net **out, mtl_error *err)
{
    mtl_cfg_node *root;
    *out = NULL;
    MTL_TRY(mtl_cfg_parse_file(path, &root, err));
    return mtl_net_from_config(root, opts, out, err);
}

mtl_status mtl_net_from_string(const char *text, const mtl_net_options *opts, mtl_net **out, mtl_error *err)
{
    mtl_cfg_node *root;
    *out = NULL;
    MTL_TRY(mtl_cfg_parse_string(text, "<net>", &root, err));
    return mtl_net_from_config(root, opts, out, err);
}

void mtl_net_free(mtl_net *net)
{
    if (!net)
        return;
    for (int i = 0; i < net->n_layers; i++) {
        mtl_layer_free(net->layers[i]);
        if (net->bottom_producer)
            free(net->bottom_producer[i]);
        if (net->layer_param_slot)
            free(net->layer_param_slot[i]);
    }
    for (int i = 0; i < net->n_blobs; i++)
        mtl_tensor_free(net->blobs[i]);
    for (int s = 0; s < net->n_slots; s++)
        free(net->slots[s].name);
    for (int t = 0; t < net->n_tasks; t++) {
        free(net->tasks[t].name);
        free(net->tasks[t].layer_mask);
    }
    free(net->tasks);
    free(net->layer_role);
    free(net->slots);
    free(net->layer_param_slot);
    free(net->bottom_producer);
    free(net->layer_is_auto_split);
    free(net->layer_needs_backward);
    free(net->layers);
    free(net->blobs);
    free(net->input_blobs);
    free(net->output_blobs);
    free(net->dangling);
    mtl_aligned_free(net->param_data);
    mtl_aligned_free(net->param_grad);
    free(net->name);
    mtl_cfg_free(net->cfg_root);
    free(net);
}

/* ---- running ---- */

static int all_finite(const mtl_tensor *t)
{
    for (int64_t i = 0; i < t->count; i++)
        if (!isfinite(t->data[i]))
            return 0;
    return 1;
}

/* Re-runs the forward pass from the same generator state, checking every output, to name the first
 * layer that produced a non-finite value. */
static mtl_status explain_non_finite(mtl_net *net, mtl_rng start, double loss, mtl_error *err)
{
    for (int k = 0; k < net->n_inputs; k++) {
        mtl_tensor *t = net->blobs[net->input_blobs[k]];
        if (!all_finite(t))
            return mtl_fail(err, MTL_ERR_NUMERIC, "loss is %g: input blob '%s' contains NaN or Inf", loss, t->name);
    }
    net->rng = start;
    for (int i = 0; i < net->n_layers; i++) {
        mtl_layer *l = net->layers[i];
        for (int b = 0; b < l->n_bottoms; b++)
            if (net->bottom_producer[i][b] < 0 && !all_finite(l->bottoms[b]))
                return mtl_fail(err, MTL_ERR_NUMERIC, "loss is %g: layer '%s' reads non-finite values from '%s'",
                                loss, l->name, l->bottoms[b]->name);
        if (l->ops->reshape && l->ops->reshape(l, err) != MTL_OK)
            return err->status;
        if (l->ops->forward(l, err) != MTL_OK)
            return err->status;
        for (int t = 0; t < l->n_tops; t++)
            if (!all_finite(l->tops[t]))
                return mtl_fail(err, MTL_ERR_NUMERIC,
                                "loss is %g: layer '%s' (%s, line %d) is the first to output a non-finite value "
                                "(top '%s')",
                                loss, l->name, l->ops->type, l->line, l->tops[t]->name);
        for (int p = 0; p < l->n_params; p++)
            if (!all_finite(l->params[p]))
                return mtl_fail(err, MTL_ERR_NUMERIC, "loss is %g: layer '%s' has non-finite parameter %d", loss,
                                l->name, p);
    }
    return mtl_fail(err, MTL_ERR_NUMERIC, "loss is %g", loss);
}

mtl_status mtl_net_forward(mtl_net *net, double *loss_out, mtl_error *err)
{
    mtl_rng start = net->rng;
    double loss = 0;
    for (int i = 0; i < net->n_layers; i++) {
        mtl_layer *l = net->layers[i];
        if (l->ops->reshape)
            MTL_TRY(l->ops->reshape(l, err));
        MTL_TRY(l->ops->forward(l, err));
        for (int t = 0; t < l->n_tops; t++) {
            float w = l->loss_weights[t];
            if (w == 0.0f)
                continue;
            double sum = 0;
            for (int64_t k = 0; k < l->tops[t]->count; k++)
                sum += l->tops[t]->data[k];
            loss += w * sum;
        }
    }
    if (!isfinite(loss))
        return explain_non_finite(net, start, loss, err);
    if (loss_out)
        *loss_out = loss;
    return MTL_OK;
}

void mtl_net_seed_loss_grads(mtl_net *net, const float *task_weights)
{
    for (int i = 0; i < net->n_dangling; i++)
        mtl_tensor_zero_grad(net->dangling[i]);
    int task = 0;
    for (int i = 0; i < net->n_layers; i++) {
        mtl_layer *l = net->layers[i];
        for (int t = 0; t < l->n_tops; t++) {
            if (l->loss_weights[t] == 0.0f)
                continue;
            float w = task_weights ? task_weights[task] : l->loss_weights[t];
            task++;
            for (int64_t k = 0; k < l->tops[t]->count; k++)
                l->tops[t]->grad[k] = w;
        }
    }
}

static void backward_with(mtl_net *net, const float *task_weights)
{
    mtl_net_seed_loss_grads(net, task_weights);
    for (int i = net->n_layers - 1; i >= 0; i--)
        if (net->layer_needs_backward[i])
            net->layers[i]->ops->backward(net->layers[i]);
}

void mtl_net_backward(mtl_net *net) { backward_with(net, NULL); }

void mtl_net_backward_weighted(mtl_net *net, const float *task_weights) { backward_with(net, task_weights); }

void mtl_net_zero_param_grad(mtl_net *net)
{
    if (!net->shares_params) {
        memset(net->param_grad, 0, (size_t)net->n_param_values * sizeof(float));
        return;
    }
    for (int s = 0; s < net->n_slots; s++)
        memset(net->slots[s].grad, 0, (size_t)net->slots[s].count * sizeof(float));
}

mtl_status mtl_net_reshape(mtl_net *net, mtl_error *err)
{
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i]->ops->reshape)
            MTL_TRY(net->layers[i]->ops->reshape(net->layers[i], err));
    return MTL_OK;
}

float mtl_net_task_loss(const mtl_net *net, int task)
{
    const mtl_task *t = &net->tasks[task];
    const mtl_tensor *top = net->layers[t->layer]->tops[t->top];
    double sum = 0;
    for (int64_t k = 0; k < top->count; k++)
        sum += top->data[k];
    return (float)sum;
}
