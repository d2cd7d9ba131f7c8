/* Per-task backward passes for task balancing: the trunk/head split of a net, each head's backward
 * from its own loss down to the shared representation, and trunk backwards from any gradient at
 * that representation. Everything is reached through mtl_net's task analysis; net.c is unchanged. */
#include "core/net_tasks.h"

#include <stdlib.h>
#include <string.h>

static void *alloc_zeroed(size_t n, size_t size) { return calloc(n ? n : 1, size); }

static mtl_status classify_slots(mtl_net_tasks *nt, mtl_error *err)
{
    mtl_net *net = nt->net;
    int *owner = malloc((size_t)(net->n_slots ? net->n_slots : 1) * sizeof(int));
    if (!owner)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int s = 0; s < net->n_slots; s++)
        owner[s] = MTL_ROLE_NONE;
    mtl_status st = MTL_OK;
    for (int i = 0; i < net->n_layers && st == MTL_OK; i++) {
        const mtl_layer *l = net->layers[i];
        int role = net->layer_role[i];
        if (role == MTL_ROLE_NONE || !net->layer_needs_backward[i])
            continue;
        for (int p = 0; p < l->n_params; p++) {
            if (!mtl_layer_param_needs_grad(l, p))
                continue;
            int s = net->layer_param_slot[i][p];
            if (owner[s] == MTL_ROLE_NONE) {
                owner[s] = role;
            } else if (owner[s] != role) {
                const char *a = owner[s] == MTL_ROLE_SHARED ? "the shared trunk" : net->tasks[owner[s]].name;
                const char *b = role == MTL_ROLE_SHARED ? "the shared trunk" : net->tasks[role].name;
                st = mtl_fail(err, MTL_ERR_UNSUPPORTED,
                              "parameter '%s' is used by %s and by %s (layer '%s'); per-task gradients need each "
                              "learnable parameter to belong to the trunk or to one task's head",
                              net->slots[s].name, a, b, l->name);
                break;
            }
        }
    }
    for (int s = 0; s < net->n_slots && st == MTL_OK; s++) {
        if (owner[s] == MTL_ROLE_SHARED) {
            nt->shared_slots[nt->n_shared_slots] = s;
            nt->shared_offset[nt->n_shared_slots++] = nt->n_shared;
            nt->n_shared += net->slots[s].count;
        } else if (owner[s] >= 0) {
            int t = owner[s];
            nt->head_slots[t][nt->n_head_slots[t]++] = s;
            nt->n_head_values[t] += net->slots[s].count;
        }
    }
    free(owner);
    return st;
}

static void find_edges(mtl_net_tasks *nt)
{
    mtl_net *net = nt->net;
    for (int t = 0; t < nt->n_tasks; t++)
        for (int k = 0; k < nt->n_head_layers[t]; k++) {
            int i = nt->head_layers[t][k];
            mtl_layer *l = net->layers[i];
            for (int b = 0; b < l->n_bottoms; b++) {
                int p = net->bottom_producer[i][b];
                if (!l->propagate_down[b] || p < 0 || net->layer_role[p] != MTL_ROLE_SHARED)
                    continue;
                /* behind an automatic Split, the trunk's blob is the Split's bottom */
                mtl_tensor *source = net->layer_is_auto_split[p] ? net->layers[p]->bottoms[0] : l->bottoms[b];
                int s = 0;
                while (s < nt->n_sources && nt->sources[s] != source)
                    s++;
                if (s == nt->n_sources) {
                    nt->sources[s] = source;
                    nt->source_edge[s] = nt->n_edges;
                    nt->n_sources++;
                }
                nt->edges[nt->n_edges++] = (mtl_net_edge){.layer = i, .bottom = b, .task = t, .source = s};
            }
        }
}

static mtl_status analyse(mtl_net_tasks *nt, mtl_error *err)
{
    mtl_net *net = nt->net;
    int n = net->n_layers, T = nt->n_tasks;
    int max_edges = 0;
    for (int i = 0; i < n; i++)
        max_edges += net->layers[i]->n_bottoms;
    nt->trunk_layers = alloc_zeroed((size_t)n, sizeof(int));
    nt->n_head_layers = alloc_zeroed((size_t)T, sizeof(int));
    nt->head_layers = alloc_zeroed((size_t)T, sizeof(int *));
    nt->shared_slots = alloc_zeroed((size_t)net->n_slots, sizeof(int));
    nt->shared_offset = alloc_zeroed((size_t)net->n_slots, sizeof(int64_t));
    nt->n_head_slots = alloc_zeroed((size_t)T, sizeof(int));
    nt->head_slots = alloc_zeroed((size_t)T, sizeof(int *));
    nt->n_head_values = alloc_zeroed((size_t)T, sizeof(int64_t));
    nt->head_delta = alloc_zeroed((size_t)T, sizeof(float *));
    nt->edges = alloc_zeroed((size_t)max_edges, sizeof(mtl_net_edge));
    nt->sources = alloc_zeroed((size_t)max_edges, sizeof(mtl_tensor *));
    nt->source_edge = alloc_zeroed((size_t)max_edges, sizeof(int));
    nt->source_offset = alloc_zeroed((size_t)max_edges, sizeof(int64_t));
    nt->rep_grad = alloc_zeroed((size_t)T, sizeof(float *));
    nt->seed = alloc_zeroed((size_t)T, sizeof(float));
    if (!nt->trunk_layers || !nt->n_head_layers || !nt->head_layers || !nt->shared_slots || !nt->shared_offset ||
        !nt->n_head_slots || !nt->head_slots || !nt->n_head_values || !nt->head_delta || !nt->edges ||
        !nt->sources || !nt->source_edge || !nt->source_offset || !nt->rep_grad || !nt->seed)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    for (int t = 0; t < T; t++) {
        nt->head_layers[t] = alloc_zeroed((size_t)n, sizeof(int));
        nt->head_slots[t] = alloc_zeroed((size_t)net->n_slots, sizeof(int));
        if (!nt->head_layers[t] || !nt->head_slots[t])
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        if (!net->layer_needs_backward[i])
            continue;
        int role = net->layer_role[i];
        if (role == MTL_ROLE_SHARED)
            nt->trunk_layers[nt->n_trunk_layers++] = i;
        else if (role >= 0)
            nt->head_layers[role][nt->n_head_layers[role]++] = i;
    }
    MTL_TRY(classify_slots(nt, err));
    find_edges(nt);

    int64_t head_max = 0;
    for (int t = 0; t < T; t++) {
        if (!(nt->head_delta[t] = alloc_zeroed((size_t)nt->n_head_values[t], sizeof(float))))
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
        if (nt->n_head_values[t] > head_max)
            head_max = nt->n_head_values[t];
    }
    nt->head_save = alloc_zeroed((size_t)head_max, sizeof(float));
    nt->shared_save = alloc_zeroed((size_t)nt->n_shared, sizeof(float));
    if (!nt->head_save || !nt->shared_save)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory for per-task gradients (%lld shared values)",
                        (long long)nt->n_shared);

    nt->last_shared_layer = nt->last_shared_slot = -1;
    for (int k = nt->n_trunk_layers - 1; k >= 0 && nt->last_shared_layer < 0; k--) {
        int i = nt->trunk_layers[k];
        const mtl_layer *l = net->layers[i];
        for (int p = 0; p < l->n_params && nt->last_shared_slot < 0; p++)
            if (mtl_layer_param_needs_grad(l, p)) {
                nt->last_shared_layer = i;
                nt->last_shared_slot = net->layer_param_slot[i][p];
            }
    }
    for (int k = 0; k < nt->n_shared_slots; k++)
        if (nt->shared_slots[k] == nt->last_shared_slot) {
            nt->last_shared_offset = nt->shared_offset[k];
            nt->last_shared_count = net->slots[nt->last_shared_slot].count;
        }
    return MTL_OK;
}

mtl_status mtl_net_tasks_create(mtl_net *net, mtl_net_tasks **out, mtl_error *err)
{
    *out = NULL;
    mtl_net_tasks *nt = calloc(1, sizeof(*nt));
    if (!nt)
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory");
    nt->net = net;
    nt->n_tasks = net->n_tasks;
    mtl_status st = analyse(nt, err);
    if (st != MTL_OK) {
        mtl_net_tasks_free(nt);
        return st;
    }
    *out = nt;
    return MTL_OK;
}

void mtl_net_tasks_free(mtl_net_tasks *nt)
{
    if (!nt)
        return;
    for (int t = 0; t < nt->n_tasks; t++) {
        if (nt->head_layers)
            free(nt->head_layers[t]);
        if (nt->head_slots)
            free(nt->head_slots[t]);
        if (nt->head_delta)
            free(nt->head_delta[t]);
        if (nt->rep_grad)
            free(nt->rep_grad[t]);
    }
    free(nt->trunk_layers);
    free(nt->n_head_layers);
    free(nt->head_layers);
    free(nt->shared_slots);
    free(nt->shared_offset);
    free(nt->n_head_slots);
    free(nt->head_slots);
    free(nt->n_head_values);
    free(nt->head_delta);
    free(nt->head_save);
    free(nt->shared_save);
    free(nt->edges);
    free(nt->sources);
    free(nt->source_edge);
    free(nt->source_offset);
    free(nt->rep_grad);
    free(nt->rep_scratch);
    free(nt->seed);
    free(nt);
}

mtl_status mtl_net_tasks_begin(mtl_net_tasks *nt, mtl_error *err)
{
    int64_t n = 0;
    for (int s = 0; s < nt->n_sources; s++) {
        nt->source_offset[s] = n;
        n += nt->sources[s]->count;
    }
    nt->n_rep = n;
    if (n <= nt->rep_capacity && nt->rep_scratch)
        return MTL_OK;
    /* the batch grew: contents need not survive */
    for (int t = 0; t < nt->n_tasks; t++) {
        free(nt->rep_grad[t]);
        if (!(nt->rep_grad[t] = alloc_zeroed((size_t)n, sizeof(float))))
            return mtl_fail(err, MTL_ERR_NOMEM, "out of memory for the representation's gradients");
    }
    free(nt->rep_scratch);
    if (!(nt->rep_scratch = alloc_zeroed((size_t)n, sizeof(float))))
        return mtl_fail(err, MTL_ERR_NOMEM, "out of memory for the representation's gradients");
    nt->rep_capacity = n;
    return MTL_OK;
}

static mtl_tensor *edge_tensor(const mtl_net_tasks *nt, const mtl_net_edge *e)
{
    return nt->net->layers[e->layer]->bottoms[e->bottom];
}

void mtl_net_tasks_head_backward(mtl_net_tasks *nt, int task)
{
    mtl_net *net = nt->net;
    memset(nt->seed, 0, (size_t)nt->n_tasks * sizeof(float));
    nt->seed[task] = 1.0f;
    mtl_net_seed_loss_grads(net, nt->seed);
    /* backward accumulates: run the head on zeroed gradients, keep the result, put the net's back */
    int64_t off = 0;
    for (int k = 0; k < nt->n_head_slots[task]; k++) {
        mtl_param_slot *s = &net->slots[nt->head_slots[task][k]];
        memcpy(nt->head_save + off, s->grad, (size_t)s->count * sizeof(float));
        memset(s->grad, 0, (size_t)s->count * sizeof(float));
        off += s->count;
    }
    for (int k = nt->n_head_layers[task] - 1; k >= 0; k--) {
        mtl_layer *l = net->layers[nt->head_layers[task][k]];
        l->ops->backward(l);
    }
    off = 0;
    for (int k = 0; k < nt->n_head_slots[task]; k++) {
        mtl_param_slot *s = &net->slots[nt->head_slots[task][k]];
        memcpy(nt->head_delta[task] + off, s->grad, (size_t)s->count * sizeof(float));
        memcpy(s->grad, nt->head_save + off, (size_t)s->count * sizeof(float));
        off += s->count;
    }
    float *rep = nt->rep_grad[task];
    memset(rep, 0, (size_t)nt->n_rep * sizeof(float));
    for (int e = 0; e < nt->n_edges; e++) {
        const mtl_net_edge *edge = &nt->edges[e];
        if (edge->task != task)
            continue;
        const mtl_tensor *t = edge_tensor(nt, edge);
        const mtl_tensor *src = nt->sources[edge->source];
        int64_t n = t->count < src->count ? t->count : src->count;
        float *dst = rep + nt->source_offset[edge->source];
        for (int64_t i = 0; i < n; i++)
            dst[i] += t->grad[i];
    }
}

void mtl_net_tasks_add_head_grads(mtl_net_tasks *nt, const float *weights)
{
    for (int t = 0; t < nt->n_tasks; t++) {
        if (weights[t] == 0.0f)
            continue;
        const float *d = nt->head_delta[t];
        for (int k = 0; k < nt->n_head_slots[t]; k++) {
            mtl_param_slot *s = &nt->net->slots[nt->head_slots[t][k]];
            for (int64_t i = 0; i < s->count; i++)
                s->grad[i] += weights[t] * d[i];
            d += s->count;
        }
    }
}

void mtl_net_tasks_combine(const mtl_net_tasks *nt, const float *weights, float *rep)
{
    memset(rep, 0, (size_t)nt->n_rep * sizeof(float));
    for (int t = 0; t < nt->n_tasks; t++) {
        if (weights[t] == 0.0f)
            continue;
        const float *g = nt->rep_grad[t];
        for (int64_t i = 0; i < nt->n_rep; i++)
            rep[i] += weights[t] * g[i];
    }
}

void mtl_net_tasks_trunk_backward(mtl_net_tasks *nt, const float *rep, int stop)
{
    mtl_net *net = nt->net;
    /* a source's whole gradient goes to one of its edges and the others read zero, so the Split
     * that joins them hands the trunk exactly `rep` */
    for (int e = 0; e < nt->n_edges; e++) {
        const mtl_net_edge *edge = &nt->edges[e];
        mtl_tensor *t = edge_tensor(nt, edge);
        if (nt->source_edge[edge->source] == e) {
            const mtl_tensor *src = nt->sources[edge->source];
            int64_t n = t->count < src->count ? t->count : src->count;
            memcpy(t->grad, rep + nt->source_offset[edge->source], (size_t)n * sizeof(float));
        } else {
            mtl_tensor_zero_grad(t);
        }
    }
    for (int k = nt->n_trunk_layers - 1; k >= 0; k--) {
        int i = nt->trunk_layers[k];
        if (i < stop)
            break;
        net->layers[i]->ops->backward(net->layers[i]);
    }
}

static void shared_copy(mtl_net_tasks *nt, float *dst, int to_slots)
{
    for (int k = 0; k < nt->n_shared_slots; k++) {
        mtl_param_slot *s = &nt->net->slots[nt->shared_slots[k]];
        float *v = dst + nt->shared_offset[k];
        if (to_slots)
            memcpy(s->grad, v, (size_t)s->count * sizeof(float));
        else
            memcpy(v, s->grad, (size_t)s->count * sizeof(float));
    }
}

void mtl_net_tasks_shared_grads(mtl_net_tasks *nt, float *const *g, int stop)
{
    shared_copy(nt, nt->shared_save, 0);
    for (int t = 0; t < nt->n_tasks; t++) {
        for (int k = 0; k < nt->n_shared_slots; k++) {
            mtl_param_slot *s = &nt->net->slots[nt->shared_slots[k]];
            memset(s->grad, 0, (size_t)s->count * sizeof(float));
        }
        mtl_net_tasks_trunk_backward(nt, nt->rep_grad[t], stop);
        shared_copy(nt, g[t], 0);
    }
    shared_copy(nt, nt->shared_save, 1);
}

void mtl_net_tasks_add_shared(mtl_net_tasks *nt, const float *g)
{
    for (int k = 0; k < nt->n_shared_slots; k++) {
        mtl_param_slot *s = &nt->net->slots[nt->shared_slots[k]];
        const float *v = g + nt->shared_offset[k];
        for (int64_t i = 0; i < s->count; i++)
            s->grad[i] += v[i];
    }
}

void mtl_net_tasks_backward_weighted(mtl_net_tasks *nt, const float *weights)
{
    for (int t = 0; t < nt->n_tasks; t++)
        mtl_net_tasks_head_backward(nt, t);
    mtl_net_tasks_add_head_grads(nt, weights);
    mtl_net_tasks_combine(nt, weights, nt->rep_scratch);
    mtl_net_tasks_trunk_backward(nt, nt->rep_scratch, 0);
}
