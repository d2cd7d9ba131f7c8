/* Layers that only produce blobs: Input (shaped by the config, filled from outside, as in deploy
 * nets) and DummyData (filled by fillers, for tests and benchmarks). Neither has a backward. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/filler.h"
#include "layers/layers.h"

/* A BlobShape message: `dim` repeated, each >= 0. */
static mtl_status read_blob_shape(mtl_layer *l, mtl_cfg_node *msg, int *ndim, int *dims, mtl_error *err)
{
    if (msg->kind != MTL_CFG_MESSAGE)
        return mtl_cfg_fail(msg, err, MTL_ERR_CONFIG, "layer '%s': shape must be a message { dim: ... }", l->name);
    int n = mtl_cfg_count(msg, "dim");
    if (n > MTL_MAX_AXES)
        return mtl_cfg_fail(msg, err, MTL_ERR_UNSUPPORTED, "layer '%s': shape has %d dims, mtl supports at most %d",
                            l->name, n, MTL_MAX_AXES);
    for (int i = 0; i < n; i++) {
        int64_t d;
        MTL_TRY(mtl_cfg_int_at(msg, "dim", i, &d, err));
        if (d < 0 || d > INT_MAX)
            return mtl_cfg_fail(mtl_cfg_field(msg, "dim", i), err, MTL_ERR_CONFIG,
                                "layer '%s': dim %lld is not a valid axis size", l->name, (long long)d);
        dims[i] = (int)d;
    }
    *ndim = n;
    return MTL_OK;
}

/* ---- Input ---------------------------------------------------------------------------------- */

static mtl_status input_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "input_param", &p, err));
    int n_shapes = mtl_cfg_count(p, "shape");
    if (n_shapes != 0 && n_shapes != 1 && n_shapes != l->n_tops)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "give 'shape' once, once per top blob, or not at all: %d tops vs. %d shapes",
                              l->n_tops, n_shapes);
    /* shaped once here; later the owner may reshape the tops (batch size) and reshape leaves them */
    for (int i = 0; i < l->n_tops && n_shapes > 0; i++) {
        int ndim, dims[MTL_MAX_AXES];
        MTL_TRY(read_blob_shape(l, mtl_cfg_field(p, "shape", n_shapes == 1 ? 0 : i), &ndim, dims, err));
        MTL_TRY(mtl_tensor_reshape(l->tops[i], ndim, dims, err));
    }
    return MTL_OK;
}

static mtl_status input_reshape(mtl_layer *l, mtl_error *err)
{
    (void)l;
    (void)err;
    return MTL_OK;
}

static mtl_status input_forward(mtl_layer *l, mtl_error *err)
{
    (void)l;
    (void)err;
    return MTL_OK;
}

const mtl_layer_ops mtl_layer_input = {
    .type = "Input",
    .min_bottoms = 0,
    .max_bottoms = 0,
    .min_tops = 1,
    .max_tops = -1,
    .no_backward = 1,
    .setup = input_setup,
    .reshape = input_reshape,
    .forward = input_forward,
};

/* ---- DummyData ------------------------------------------------------------------------------ */

typedef struct dummy_top {
    int ndim, dims[MTL_MAX_AXES];
    mtl_cfg_node *filler;     /* NULL: constant 0 */
    int constant;             /* filled when (re)allocated only, not every forward */
    const float *filled_data; /* storage the constant fill went into */
} dummy_top;

typedef struct dummy_priv {
    dummy_top *tops; /* n_tops */
} dummy_priv;

/* Legacy num/channels/height/width: each given once or once per top. */
static mtl_status dummy_legacy_dim(mtl_layer *l, mtl_cfg_node *p, const char *name, int top, int *out,
                                   mtl_error *err)
{
    int n = mtl_cfg_count(p, name);
    if (n != 1 && n != l->n_tops)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "give '%s' once, or once per top blob (%d); %d given", name,
                              l->n_tops, n);
    int64_t v;
    MTL_TRY(mtl_cfg_int_at(p, name, n == 1 ? 0 : top, &v, err));
    if (v < 0 || v > INT_MAX)
        return mtl_cfg_fail(mtl_cfg_field(p, name, n == 1 ? 0 : top), err, MTL_ERR_CONFIG,
                            "layer '%s': %s %lld is not a valid axis size", l->name, name, (long long)v);
    *out = (int)v;
    return MTL_OK;
}

static mtl_status dummy_fill(mtl_layer *l, int i, mtl_error *err)
{
    dummy_priv *d = l->priv;
    if (!l->rng)
        return mtl_layer_fail(l, err, MTL_ERR_ARGUMENT, "no random generator to fill from");
    MTL_TRY(mtl_filler_fill(d->tops[i].filler, l->tops[i], l->rng, err));
    d->tops[i].filled_data = l->tops[i]->data;
    return MTL_OK;
}

static mtl_status dummy_setup(mtl_layer *l, mtl_error *err)
{
    mtl_cfg_node *p;
    MTL_TRY(mtl_layer_param_message(l, "dummy_data_param", &p, err));
    dummy_priv *d = mtl_calloc_or_fail(1, sizeof(*d), err, "DummyData state");
    if (!d)
        return MTL_ERR_NOMEM;
    l->priv = d;
    if (!(d->tops = mtl_calloc_or_fail((size_t)l->n_tops, sizeof(*d->tops), err, "DummyData state")))
        return MTL_ERR_NOMEM;

    int n_fillers = mtl_cfg_count(p, "data_filler");
    if (n_fillers != 0 && n_fillers != 1 && n_fillers != l->n_tops)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "give 0, 1 or one data_filler per top blob (%d tops); %d given", l->n_tops, n_fillers);
    int n_shapes = mtl_cfg_count(p, "shape");
    int legacy = mtl_cfg_count(p, "num") || mtl_cfg_count(p, "channels") || mtl_cfg_count(p, "height") ||
                 mtl_cfg_count(p, "width");
    if (legacy && n_shapes)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG,
                              "give either 'shape' or the legacy num/channels/height/width, not both");
    if (!legacy && n_shapes != 1 && n_shapes != l->n_tops)
        return mtl_layer_fail(l, err, MTL_ERR_CONFIG, "give 'shape' once, or once per top blob (%d); %d given",
                              l->n_tops, n_shapes);

    for (int i = 0; i < l->n_tops; i++) {
        dummy_top *t = &d->tops[i];
        if (legacy) {
            static const char *const names[4] = {"num", "channels", "height", "width"};
            t->ndim = 4;
            for (int a = 0; a < 4; a++)
                MTL_TRY(dummy_legacy_dim(l, p, names[a], i, &t->dims[a], err));
        } else {
            MTL_TRY(read_blob_shape(l, mtl_cfg_field(p, "shape", n_shapes == 1 ? 0 : i), &t->ndim, t->dims, err));
        }
        t->filler = n_fillers ? mtl_cfg_field(p, "data_filler", n_fillers == 1 ? 0 : i) : NULL;
        if (t->filler && t->filler->kind != MTL_CFG_MESSAGE)
            return mtl_cfg_fail(t->filler, err, MTL_ERR_CONFIG,
                                "layer '%s': data_filler must be a message { type: ... }", l->name);
        const char *type = "constant";
        MTL_TRY(mtl_cfg_string(t->filler, "type", "constant", &type, err));
        /* Caffe refills every forward unless the filler is constant */
        t->constant = strcmp(type, "constant") == 0;
        MTL_TRY(mtl_tensor_reshape(l->tops[i], t->ndim, t->dims, err));
        /* every top is filled once now, so bad filler settings fail at setup and data is never unset */
        MTL_TRY(dummy_fill(l, i, err));
    }
    return MTL_OK;
}

static mtl_status dummy_reshape(mtl_layer *l, mtl_error *err)
{
    dummy_priv *d = l->priv;
    for (int i = 0; i < l->n_tops; i++) {
        dummy_top *t = &d->tops[i];
        MTL_TRY(mtl_tensor_reshape(l->tops[i], t->ndim, t->dims, err));
        /* a constant top whose storage moved has lost its values */
        if (t->constant && l->tops[i]->data != t->filled_data)
            MTL_TRY(dummy_fill(l, i, err));
    }
    return MTL_OK;
}

static mtl_status dummy_forward(mtl_layer *l, mtl_error *err)
{
    dummy_priv *d = l->priv;
    for (int i = 0; i < l->n_tops; i++)
        if (!d->tops[i].constant)
            MTL_TRY(dummy_fill(l, i, err));
    return MTL_OK;
}

static void dummy_release(mtl_layer *l)
{
    dummy_priv *d = l->priv;
    if (d)
        free(d->tops);
    free(d);
    l->priv = NULL;
}

const mtl_layer_ops mtl_layer_dummy_data = {
    .type = "DummyData",
    .min_bottoms = 0,
    .max_bottoms = 0,
    .min_tops = 1,
    .max_tops = -1,
    .no_backward = 1,
    .setup = dummy_setup,
    .reshape = dummy_reshape,
    .forward = dummy_forward,
    .release = dummy_release,
};
