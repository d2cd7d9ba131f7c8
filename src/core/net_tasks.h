/* Per-task backward passes on top of core/net.h, for task balancing: after one forward pass, the
 * gradient of each task's loss with respect to the shared representation (where the task heads
 * leave the trunk) and with respect to the trunk's parameters, and a trunk backward from any
 * gradient at the representation, so that a method such as MGDA-UB runs each head once and the
 * trunk once.
 *
 * The split comes from the net's task analysis: layers whose role is MTL_ROLE_SHARED form the
 * trunk, layers whose role is task t form t's head. An edge is a bottom of a head layer that a
 * trunk layer produced (and that gets a gradient); its source is the blob the trunk hands over:
 * the bottom of the automatic Split feeding the heads, or the blob itself where no Split sits in
 * between. The representation is the concatenation of the sources, in order of first use; a
 * gradient "at the representation" is one value per source value.
 *
 * Usage per pass: mtl_net_forward, mtl_net_tasks_begin, then mtl_net_tasks_head_backward for each
 * task (the net's parameter gradients are left untouched), then any of shared_grads (per-task
 * trunk parameter gradients), add_head_grads and trunk_backward to accumulate the update that the
 * balancing method chose. Dropout masks and other forward-time state stay fixed, since nothing
 * here runs forward again. */
#ifndef MTL_CORE_NET_TASKS_H
#define MTL_CORE_NET_TASKS_H

#include <stdint.h>

#include "core/net.h"

typedef struct mtl_net_edge {
    int layer, bottom; /* the head layer and which of its bottoms */
    int task;          /* the layer's role */
    int source;        /* index into sources */
} mtl_net_edge;

typedef struct mtl_net_tasks {
    mtl_net *net;                /* borrowed */
    int n_tasks;

    int n_trunk_layers;
    int *trunk_layers;           /* shared layers that run backward, net order */
    int *n_head_layers;          /* [task] */
    int **head_layers;           /* [task][k]: the task's layers that run backward, net order */

    /* parameters: every slot that gets a gradient belongs to the trunk or to exactly one head */
    int n_shared_slots;
    int *shared_slots;           /* slot indices, net order */
    int64_t *shared_offset;      /* [k]: where shared_slots[k] starts in a shared vector */
    int64_t n_shared;            /* values in a shared vector (per-task trunk gradients) */
    int *n_head_slots;           /* [task] */
    int **head_slots;            /* [task][k] */
    int64_t *n_head_values;      /* [task] */
    float **head_delta;          /* [task][n_head_values]: d L_t / d head params after head_backward */
    float *head_save;            /* scratch: the net's gradients of one head's slots */
    float *shared_save;          /* scratch: the net's gradients of the shared slots */

    /* representation */
    int n_edges;
    mtl_net_edge *edges;
    int n_sources;
    mtl_tensor **sources;        /* borrowed blobs */
    int *source_edge;            /* [source]: its first edge, where a trunk backward injects */
    int64_t *source_offset;      /* [source]: where it starts in the representation (this batch) */
    int64_t n_rep;               /* values of the representation for the current batch */
    int64_t rep_capacity;
    float **rep_grad;            /* [task][n_rep]: d L_t / d representation after head_backward */
    float *rep_scratch;          /* [n_rep] */

    /* GradNorm's W: the first parameter of the trunk layer with learnable parameters closest to
     * the branch point; -1 when the trunk has none */
    int last_shared_layer, last_shared_slot;
    int64_t last_shared_offset, last_shared_count; /* its place in a shared vector */

    float *seed;                 /* [n_tasks]: one-hot loss weights */
} mtl_net_tasks;

/* Analyses a built net (TRAIN phase). Fails with MTL_ERR_UNSUPPORTED, naming the parameter, when
 * a learnable parameter is used both by the trunk and a head or by two heads (weight sharing across
 * that boundary), since its per-task gradient would then have no single owner. A net with fewer
 * than two tasks, or without a trunk, is analysed all the same (empty representation). */
mtl_status mtl_net_tasks_create(mtl_net *net, mtl_net_tasks **out, mtl_error *err);
void mtl_net_tasks_free(mtl_net_tasks *nt);

/* After each forward pass: sizes the representation for the current batch. */
mtl_status mtl_net_tasks_begin(mtl_net_tasks *nt, mtl_error *err);

/* Backward through task `task`'s head only, from its loss at weight 1 (the loss top's value, not
 * multiplied by loss_weight) down to the representation: fills rep_grad[task] and
 * head_delta[task]. The net's parameter gradients are restored afterwards, so heads can be run in
 * any order and as often as needed. */
void mtl_net_tasks_head_backward(mtl_net_tasks *nt, int task);

/* Adds weights[t] * head_delta[t] to every head's parameter gradients (weights[t] == 0: nothing). */
void mtl_net_tasks_add_head_grads(mtl_net_tasks *nt, const float *weights);

/* rep (n_rep values) = sum over tasks of weights[t] * rep_grad[t]. */
void mtl_net_tasks_combine(const mtl_net_tasks *nt, const float *weights, float *rep);

/* Backward through the trunk from the gradient `rep` (n_rep values) at the representation: the
 * trunk layers with index >= stop run in reverse net order (stop 0: the whole trunk) and, as a
 * normal backward does, accumulate into the trunk's parameter gradients. */
void mtl_net_tasks_trunk_backward(mtl_net_tasks *nt, const float *rep, int stop);

/* Per-task gradients on the shared parameters: g[t] (n_shared values, shared_slots in order) =
 * d L_t / d theta_shared, one trunk backward per task from rep_grad[t] (run head_backward for every
 * task first). With stop > 0 only trunk layers from index stop on run and the other slots read 0
 * (GradNorm needs only the last shared layer). The net's parameter gradients are left as they
 * were. */
void mtl_net_tasks_shared_grads(mtl_net_tasks *nt, float *const *g, int stop);

/* Adds g (n_shared values) to the shared parameters' gradients. */
void mtl_net_tasks_add_shared(mtl_net_tasks *nt, const float *g);

/* The backward of sum_t weights[t] * L_t done the per-task way (each head once, the trunk once):
 * head_backward for every task, then add_head_grads, combine and trunk_backward. Equal, up to
 * rounding, to mtl_net_backward_weighted(net, weights). */
void mtl_net_tasks_backward_weighted(mtl_net_tasks *nt, const float *weights);

#endif
