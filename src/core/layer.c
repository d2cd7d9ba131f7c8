/* Layer-side helpers and the common part of building a layer, shared by the net and by
 * standalone layers (tests, tools). */
#include "core/layer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/filler.h"
#include "core/layer_build.h"

mtl_status mtl_layer_fail(const mtl_layer *l, mtl_error *err, mtl_status status, const char *fmt, ...)
{
    char what[MTL_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return mtl_fail(err, status, "%s:%d: layer '%s' (%s): %s", l->file ? l->file : "<net>", l->line,
                    l->name ? l->name : "?", l->ops ? l->ops->type : "?", what);
}

mtl_status mtl_layer_param_message(mtl_layer *l, const char *name, mtl_cfg_node **out, mtl_error *err)
{
    return mtl_cfg_message(l->cfg, name, out, err);
}

mtl_status mtl_layer_add_param(mtl_layer *l, int ndim, const int *shape, mtl_cfg_node *filler,
                               mtl_error *err)
{
    int n = l->n_params + 1;
    mtl_tensor **params = realloc(l->params, (size_t)n * sizeof(*params));
    if (!params)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    l->params = params;
    mtl_param_spec *specs = realloc(l->param_specs, (size_t)n * sizeof(*specs));
    if (!specs)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    l->param_specs = specs;
    int *needs = realloc(l->param_needs_grad, (size_t)n * sizeof(*needs));
    if (!needs)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    l->param_needs_grad = needs;

    char pname[512];
    snprintf(pname, sizeof(pname), "%s/%d", l->name ? l->name : "layer", l->n_params);
    mtl_tensor *t = mtl_tensor_create(pname);
    if (!t)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    if (ndim < 0 || ndim > MTL_MAX_AXES) {
        mtl_tensor_free(t);
        return mtl_layer_fail(l, err, MTL_ERR_SHAPE, "parameter with %d axes", ndim);
    }
    /* shape only: storage is bound later by the owner */
    t->ndim = ndim;
    t->count = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->count *= shape[i];
    }
    params[l->n_params] = t;
    specs[l->n_params] = (mtl_param_spec){.share_name = NULL, .lr_mult = 1.0f, .decay_mult = 1.0f, .filler = filler};
    needs[l->n_params] = 1;
    l->n_params = n;
    return MTL_OK;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

mtl_status mtl_layer_begin(mtl_cfg_node *cfg, const mtl_layer_ops *ops, const char *name, mtl_phase phase,
                           mtl_tensor **bottoms, int n_bottoms, mtl_tensor **tops, int n_tops, mtl_rng *rng,
                           mtl_layer **out, mtl_error *err)
{
    *out = NULL;
    mtl_layer *l = calloc(1, sizeof(*l));
    if (!l)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    l->ops = ops;
    l->name = mtl_strdup(name ? name : "");
    l->file = cfg ? cfg->file : NULL;
    l->line = cfg ? cfg->line : 0;
    l->cfg = cfg;
    l->phase = phase;
    l->rng = rng;
    l->n_bottoms = n_bottoms;
    l->n_tops = n_tops;
    l->bottoms = calloc((size_t)(n_bottoms ? n_bottoms : 1), sizeof(*l->bottoms));
    l->tops = calloc((size_t)(n_tops ? n_tops : 1), sizeof(*l->tops));
    l->propagate_down = calloc((size_t)(n_bottoms ? n_bottoms : 1), sizeof(int));
    l->loss_weights = calloc((size_t)(n_tops ? n_tops : 1), sizeof(float));
    *out = l;
    if (!l->name || !l->bottoms || !l->tops || !l->propagate_down || !l->loss_weights)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n_bottoms; i++) {
        l->bottoms[i] = bottoms[i];
        l->propagate_down[i] = 1;
    }
    for (int i = 0; i < n_tops; i++)
        l->tops[i] = tops[i];

    /* blob counts are the net's contract, checked once here for every layer type */
    if (n_bottoms < ops->min_bottoms || (ops->max_bottoms >= 0 && n_bottoms > ops->max_bottoms)) {
        if (ops->min_bottoms == ops->max_bottoms)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "takes %d bottom blob(s), %d given", ops->min_bottoms,
                                  n_bottoms);
        if (ops->max_bottoms < 0)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "takes at least %d bottom blob(s), %d given",
                                  ops->min_bottoms, n_bottoms);
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "takes %d to %d bottom blobs, %d given", ops->min_bottoms,
                              ops->max_bottoms, n_bottoms);
    }
    if (n_tops < ops->min_tops || (ops->max_tops >= 0 && n_tops > ops->max_tops)) {
        if (ops->min_tops == ops->max_tops)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "produces %d top blob(s), %d given", ops->min_tops,
                                  n_tops);
        if (ops->max_tops < 0)
            return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "produces at least %d top blob(s), %d given", ops->min_tops,
                                  n_tops);
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "produces %d to %d top blobs, %d given", ops->min_tops,
                              ops->max_tops, n_tops);
    }

    /* loss_weight: types ending in Loss weigh their first top 1 by default, others 0 */
    int n_weights = mtl_cfg_count(cfg, "loss_weight");
    if (n_weights > 0 && n_weights != n_tops)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%d loss_weight values for %d top blobs", n_weights, n_tops);
    for (int i = 0; i < n_tops; i++) {
        double w = (i == 0 && ends_with(ops->type, "Loss")) ? 1.0 : 0.0;
        if (n_weights)
            MTL_TRY(mtl_cfg_float_at(cfg, "loss_weight", i, &w, err));
        l->loss_weights[i] = (float)w;
    }
    int n_prop = mtl_cfg_count(cfg, "propagate_down");
    if (n_prop > 0 && n_prop != n_bottoms)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%d propagate_down values for %d bottom blobs", n_prop,
                              n_bottoms);
    for (int i = 0; i < n_prop; i++) {
        mtl_cfg_node *node = mtl_cfg_field(cfg, "propagate_down", i);
        int64_t v = 0;
        if (node->kind == MTL_CFG_IDENT)
            v = strcmp(node->text, "true") == 0 || strcmp(node->text, "True") == 0;
        else
            MTL_TRY(mtl_cfg_node_int(node, &v, err));
        l->propagate_down[i] = v != 0;
    }

    if (ops->setup)
        MTL_TRY(ops->setup(l, err));

    /* param { name lr_mult decay_mult } per learnable blob, in order */
    int n_specs = mtl_cfg_count(cfg, "param");
    if (n_specs > l->n_params)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "%d param specs given, but the layer has %d learnable blob(s)",
                              n_specs, l->n_params);
    for (int i = 0; i < n_specs; i++) {
        mtl_cfg_node *p = mtl_cfg_field(cfg, "param", i);
        const char *share = NULL;
        double lr, decay;
        static const char *const share_modes[] = {"STRICT", "PERMISSIVE"};
        int mode;
        MTL_TRY(mtl_cfg_string(p, "name", NULL, &share, err));
        MTL_TRY(mtl_cfg_float(p, "lr_mult", 1.0, &lr, err));
        MTL_TRY(mtl_cfg_float(p, "decay_mult", 1.0, &decay, err));
        MTL_TRY(mtl_cfg_enum(p, "share_mode", share_modes, 2, 0, &mode, err));
        l->param_specs[i].lr_mult = (float)lr;
        l->param_specs[i].decay_mult = (float)decay;
        if (share && share[0] && !(l->param_specs[i].share_name = mtl_strdup(share)))
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        l->param_needs_grad[i] = lr != 0.0;
    }
    return MTL_OK;
}

mtl_status mtl_layer_create(mtl_cfg_node *cfg, mtl_phase phase, mtl_tensor **bottoms, int n_bottoms,
                            mtl_tensor **tops, int n_tops, mtl_rng *rng, mtl_layer **out, mtl_error *err)
{
    *out = NULL;
    const char *type = NULL, *name = NULL;
    MTL_TRY(mtl_cfg_string(cfg, "type", NULL, &type, err));
    MTL_TRY(mtl_cfg_string(cfg, "name", "layer", &name, err));
    mtl_cfg_accept(cfg, "bottom");
    mtl_cfg_accept(cfg, "top");
    if (!type)
        return mtl_cfg_fail(cfg, err, MTL_ERR_CONFIG, "layer '%s' has no type", name);
    const mtl_layer_ops *ops = NULL;
    MTL_TRY(mtl_layer_find_type(cfg, type, &ops, err));
    mtl_status st = mtl_layer_begin(cfg, ops, name, phase, bottoms, n_bottoms, tops, n_tops, rng, out, err);
    if (st == MTL_OK)
        st = mtl_layer_bind_own_params(*out, err);
    if (st == MTL_OK)
        st = mtl_cfg_check_unused(cfg, err);
    if (st == MTL_OK && (*out)->ops->reshape)
        st = (*out)->ops->reshape(*out, err);
    if (st != MTL_OK) {
        mtl_layer_free(*out);
        *out = NULL;
    }
    return st;
}

mtl_status mtl_layer_find_type(mtl_cfg_node *cfg, const char *type, const mtl_layer_ops **ops, mtl_error *err)
{
    *ops = mtl_layer_ops_find(type);
    if (*ops)
        return MTL_OK;
    const char *const *names;
    int n = mtl_layer_type_names(&names);
    char hint[512];
    int found = mtl_cfg_suggest(type, names, n, 3, hint, sizeof(hint));
    mtl_cfg_node *where = mtl_cfg_field(cfg, "type", 0);
    return mtl_cfg_fail(where ? where : cfg, err, MTL_ERR_UNSUPPORTED, "layer type '%s' is not one mtl has%s%s", type,
                        found ? "; did you mean " : "", found ? hint : "");
}

mtl_status mtl_layer_bind_own_params(mtl_layer *l, mtl_error *err)
{
    for (int i = 0; i < l->n_params; i++) {
        mtl_tensor *t = l->params[i];
        int ndim = t->ndim, shape[MTL_MAX_AXES];
        memcpy(shape, t->shape, sizeof(shape));
        t->count = 0;
        t->ndim = 0;
        MTL_TRY(mtl_tensor_reshape(t, ndim, shape, err));
        mtl_status st = mtl_filler_fill(l->param_specs[i].filler, t, l->rng, err);
        if (st != MTL_OK)
            return st;
    }
    return MTL_OK;
}

void mtl_layer_free(mtl_layer *l)
{
    if (!l)
        return;
    if (l->ops && l->ops->release)
        l->ops->release(l);
    for (int i = 0; i < l->n_params; i++) {
        mtl_tensor_free(l->params[i]);
        free(l->param_specs[i].share_name);
    }
    free(l->params);
    free(l->param_specs);
    free(l->param_needs_grad);
    free(l->bottoms);
    free(l->tops);
    free(l->propagate_down);
    free(l->loss_weights);
    free(l->name);
    free(l);
}
