/* The public C API (include/mtl/mtl.h): thin wrappers that turn internal errors into a status and
 * the thread's last-error message. */
#include "mtl/mtl.h"

#include <string.h>

#ifdef MTL_OPENMP
#include <omp.h>
#endif

#include "core/net.h"
#include "core/snapshot.h"
#include "core/solver.h"

void mtl_set_num_threads(int threads)
{
#ifdef MTL_OPENMP
    static int default_threads;
    if (!default_threads)
        default_threads = omp_get_max_threads();
    omp_set_num_threads(threads > 0 ? threads : default_threads);
#else
    (void)threads;
#endif
}

static mtl_status publish(mtl_status status, const mtl_error *err)
{
    if (status != MTL_OK)
        mtl_error_publish(err);
    return status;
}

mtl_status mtl_net_open(const char *prototxt_path, mtl_phase phase, mtl_net **out)
{
    mtl_error err = {0};
    if (!prototxt_path || !out)
        return publish(mtl_fail(&err, MTL_ERR_ARGUMENT, "mtl_net_open: NULL argument"), &err);
    mtl_net_options opts = {.phase = phase, .seed = 1701};
    return publish(mtl_net_from_file(prototxt_path, &opts, out, &err), &err);
}

mtl_status mtl_net_open_string(const char *prototxt_text, mtl_phase phase, mtl_net **out)
{
    mtl_error err = {0};
    if (!prototxt_text || !out)
        return publish(mtl_fail(&err, MTL_ERR_ARGUMENT, "mtl_net_open_string: NULL argument"), &err);
    mtl_net_options opts = {.phase = phase, .seed = 1701};
    return publish(mtl_net_from_string(prototxt_text, &opts, out, &err), &err);
}

void mtl_net_close(mtl_net *net) { mtl_net_free(net); }

mtl_status mtl_net_set_input(mtl_net *net, const char *name, const float *data, int ndim, const int *shape)
{
    mtl_error err = {0};
    if (!net || !name || !data || (ndim > 0 && !shape))
        return publish(mtl_fail(&err, MTL_ERR_ARGUMENT, "mtl_net_set_input: NULL argument"), &err);
    int index = mtl_net_blob_index(net, name);
    int is_input = 0;
    for (int i = 0; i < net->n_inputs; i++)
        is_input |= net->input_blobs[i] == index;
    if (index < 0 || !is_input)
        return publish(mtl_fail(&err, MTL_ERR_NOT_FOUND, "net '%s' has no input blob '%s'", net->name, name), &err);
    mtl_tensor *t = net->blobs[index];
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        mtl_status st = mtl_tensor_reshape(t, ndim, shape, &err);
        if (st == MTL_OK)
            st = mtl_net_reshape(net, &err);
        if (st != MTL_OK)
            return publish(st, &err);
    }
    memcpy(t->data, data, (size_t)t->count * sizeof(float));
    return MTL_OK;
}

mtl_status mtl_net_predict(mtl_net *net, float *loss)
{
    mtl_error err = {0};
    if (!net)
        return publish(mtl_fail(&err, MTL_ERR_ARGUMENT, "mtl_net_predict: NULL net"), &err);
    double total = 0;
    mtl_status st = mtl_net_forward(net, &total, &err);
    if (loss)
        *loss = (float)total;
    return publish(st, &err);
}

mtl_status mtl_net_get_output(const mtl_net *net, const char *name, const float **data, int *ndim, int *shape)
{
    mtl_error err = {0};
    if (!net || !name || !data)
        return publish(mtl_fail(&err, MTL_ERR_ARGUMENT, "mtl_net_get_output: NULL argument"), &err);
    mtl_tensor *t = mtl_net_blob(net, name);
    if (!t)
        return publish(mtl_fail(&err, MTL_ERR_NOT_FOUND, "net '%s' has no blob '%s'", net->name, name), &err);
    *data = t->data;
    if (ndim)
        *ndim = t->ndim;
    if (shape)
        for (int i = 0; i < t->ndim; i++)
            shape[i] = t->shape[i];
    return MTL_OK;
}

int mtl_net_num_tasks(const mtl_net *net) { return net ? net->n_tasks : 0; }

const char *mtl_net_task_name(const mtl_net *net, int task)
{
    return net && task >= 0 && task < net->n_tasks ? net->tasks[task].name : NULL;
}

mtl_status mtl_net_load_weights(mtl_net *net, const char *snapshot_path)
{
    mtl_error err = {0};
    if (!net || !snapshot_path)
        return publish(mtl_fail(&err, MTL_ERR_ARGUMENT, "mtl_net_load_weights: NULL argument"), &err);
    mtl_snapshot *snap = NULL;
    mtl_status st = mtl_snapshot_read(snapshot_path, &snap, &err);
    if (st == MTL_OK)
        st = mtl_snapshot_load_weights(snap, net, NULL, NULL, &err);
    mtl_snapshot_free(snap);
    return publish(st, &err);
}

mtl_status mtl_solver_open(const char *solver_path, mtl_solver **out)
{
    mtl_error err = {0};
    if (!solver_path || !out)
        return publish(mtl_fail(&err, MTL_ERR_ARGUMENT, "mtl_solver_open: NULL argument"), &err);
    return publish(mtl_solver_from_file(solver_path, NULL, out, &err), &err);
}

void mtl_solver_close(mtl_solver *solver) { mtl_solver_free(solver); }

mtl_status mtl_solver_train(mtl_solver *solver, int iterations, float *loss)
{
    mtl_error err = {0};
    if (!solver || iterations < 0)
        return publish(mtl_fail(&err, MTL_ERR_ARGUMENT, "mtl_solver_train: NULL solver or negative count"), &err);
    mtl_status st = mtl_solver_step(solver, iterations, &err);
    if (loss)
        *loss = (float)solver->loss;
    return publish(st, &err);
}

mtl_net *mtl_solver_train_net(mtl_solver *solver) { return solver ? solver->train_net : NULL; }

mtl_status mtl_solver_save(mtl_solver *solver, const char *path)
{
    mtl_error err = {0};
    if (!solver)
        return publish(mtl_fail(&err, MTL_ERR_ARGUMENT, "mtl_solver_save: NULL solver"), &err);
    return publish(mtl_solver_snapshot(solver, path, &err), &err);
}
