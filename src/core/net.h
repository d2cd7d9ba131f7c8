/* A net: layers in execution order over named blobs, built from a NetParameter prototxt for one
 * phase. All learnable parameters live in one flat buffer and their gradients in another; layer
 * parameter tensors are views. A TEST net built with `share` views the TRAIN net's buffers.
 *
 * The multi-task structure is computed from the graph: each weighted loss top is a task; for each
 * task the set of layers it depends on; layers reached by several tasks form the shared trunk. */
#ifndef MTL_CORE_NET_H
#define MTL_CORE_NET_H

#include <stdint.h>

#include "config/config.h"
#include "core/layer.h"

/* One learnable tensor in the flat buffers (shared params appear once). */
typedef struct mtl_param_slot {
    char *name;          /* "<layer>/<index>" or the shared param name */
    int64_t offset;      /* into net->param_data / net->param_grad; -1 when viewing another net's */
    int64_t count;
    float *data, *grad;  /* the slot's values (inside the flat buffers, or the shared net's) */
    float lr_mult, decay_mult;
    int owner_layer, owner_index; /* the first layer that declared it */
    int n_users;         /* layers viewing it (2+ for shared weights) */
    int needs_grad;      /* some user computes a gradient for it */
} mtl_param_slot;

/* A task: one loss top with a non-zero weight. */
typedef struct mtl_task {
    char *name;          /* the loss top's blob name ("loss_left") */
    int layer, top;      /* where the loss is produced */
    float weight;        /* loss_weight */
    uint8_t *layer_mask; /* [n_layers]: 1 if the task's loss depends on the layer */
} mtl_task;

/* Role of a layer in the task structure. */
enum { MTL_ROLE_NONE = -2, MTL_ROLE_SHARED = -1 }; /* >= 0: the task owning it */

typedef struct mtl_net {
    char *name;
    mtl_phase phase;
    mtl_cfg_node *cfg_root;    /* owned parse tree (layers point into it) */

    int n_layers;
    mtl_layer **layers;        /* in execution order, auto Splits included */
    int *layer_is_auto_split;
    int *layer_needs_backward;

    int n_blobs;
    mtl_tensor **blobs;        /* owned; distinct storage per name (in-place reuses one) */
    int n_inputs;
    int *input_blobs;          /* blob indices fed from outside (Input layers, net-level inputs) */
    int n_outputs;
    int *output_blobs;         /* blobs no layer consumes */

    /* flat parameters */
    int64_t n_param_values;
    float *param_data, *param_grad; /* owned unless shares_params */
    int shares_params;
    int n_slots;
    mtl_param_slot *slots;
    int **layer_param_slot;    /* [layer][param] -> slot index */
    int **bottom_producer;     /* [layer][bottom] -> layer that last wrote it, -1 for inputs */
    int n_dangling;
    mtl_tensor **dangling;     /* tops nobody reads and no loss weighs: grads zeroed before backward */

    int n_tasks;
    mtl_task *tasks;
    int *layer_role;           /* [n_layers]: MTL_ROLE_* or task index */

    mtl_rng rng;
} mtl_net;

typedef struct mtl_net_options {
    mtl_phase phase;
    uint64_t seed;             /* fillers and dropout */
    const mtl_net *share;      /* view this net's parameters (matched by layer name) */
    int force_backward;        /* backward to every bottom (gradient checks) */
} mtl_net_options;

/* Builds a net from a NetParameter message / file / string. The tree is consumed (owned by the
 * net) in the _config form. Errors name the layer and its line. */
mtl_status mtl_net_from_config(mtl_cfg_node *root, const mtl_net_options *opts, mtl_net **out,
                               mtl_error *err);
mtl_status mtl_net_from_file(const char *path, const mtl_net_options *opts, mtl_net **out, mtl_error *err);
mtl_status mtl_net_from_string(const char *text, const mtl_net_options *opts, mtl_net **out, mtl_error *err);
void mtl_net_free(mtl_net *net);

/* Runs every layer (reshaping first). *loss is the weighted sum of all loss tops (may be NULL).
 * A loss that is not finite fails with MTL_ERR_NUMERIC naming the first layer whose output went
 * non-finite. */
mtl_status mtl_net_forward(mtl_net *net, double *loss, mtl_error *err);
/* Backward from all losses with their loss weights: accumulates into param_grad. */
void mtl_net_backward(mtl_net *net);
/* Backward with weights[t] for task t instead of loss_weight (per-task gradients, balancing). */
void mtl_net_backward_weighted(mtl_net *net, const float *task_weights);
void mtl_net_zero_param_grad(mtl_net *net);
/* The first step of backward: loss tops' gradients set to their weight (or task_weights[t] when
 * not NULL) and unread tops' gradients zeroed. For callers that run the layers themselves. */
void mtl_net_seed_loss_grads(mtl_net *net, const float *task_weights);

/* Re-runs shape inference after an input blob changed shape. */
mtl_status mtl_net_reshape(mtl_net *net, mtl_error *err);

int mtl_net_blob_index(const mtl_net *net, const char *name);   /* -1 if absent */
mtl_tensor *mtl_net_blob(const mtl_net *net, const char *name); /* NULL if absent */
int mtl_net_layer_index(const mtl_net *net, const char *name);  /* -1 if absent */
int mtl_net_tensor_index(const mtl_net *net, const mtl_tensor *t); /* -1 if not the net's */

/* The value of task t's loss top after a forward (unweighted). */
float mtl_net_task_loss(const mtl_net *net, int task);

#endif
