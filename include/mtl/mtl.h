/* mtl: the C library API. A device application links libmtl and uses only this header.
 *
 *   mtl_net *net;
 *   if (mtl_net_open("deploy.prototxt", MTL_PHASE_TEST, &net) != MTL_OK ||
 *       mtl_net_load_weights(net, "model.mtlsnap") != MTL_OK)
 *       fprintf(stderr, "%s\n", mtl_last_error());
 *   int shape[4] = {1, 1, 28, 28};
 *   mtl_net_set_input(net, "data", pixels, 4, shape);
 *   mtl_net_predict(net, NULL);
 *   const float *prob; int ndim, out_shape[8];
 *   mtl_net_get_output(net, "prob_left", &prob, &ndim, out_shape);
 *   mtl_net_close(net);
 *
 * Every call returns a status; on failure mtl_last_error() says what went wrong and where. The
 * library never exits the process. Objects are not safe for concurrent use from several threads. */
#ifndef MTL_MTL_H
#define MTL_MTL_H

#include "mtl/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MTL_VERSION_MAJOR 0
#define MTL_VERSION_MINOR 1

typedef enum mtl_phase { MTL_PHASE_TRAIN = 0, MTL_PHASE_TEST = 1 } mtl_phase;

typedef struct mtl_net mtl_net;
typedef struct mtl_solver mtl_solver;

/* Threads used by every later call (OpenMP); <= 0 restores the default. */
void mtl_set_num_threads(int threads);

/* Nets. */
mtl_status mtl_net_open(const char *prototxt_path, mtl_phase phase, mtl_net **out);
mtl_status mtl_net_open_string(const char *prototxt_text, mtl_phase phase, mtl_net **out);
void mtl_net_close(mtl_net *net); /* NULL is a no-op */

/* Copies parameters from a snapshot by layer name; layers absent from the snapshot keep their
 * initial values. */
mtl_status mtl_net_load_weights(mtl_net *net, const char *snapshot_path);

/* Copies data into input blob `name`, reshaping the net when the shape changed. */
mtl_status mtl_net_set_input(mtl_net *net, const char *name, const float *data, int ndim, const int *shape);

/* Runs the forward pass; *loss (may be NULL) receives the weighted total loss. */
mtl_status mtl_net_predict(mtl_net *net, float *loss);

/* Points *data at blob `name` (valid until the next call on the net); shape needs room for 8. */
mtl_status mtl_net_get_output(const mtl_net *net, const char *name, const float **data, int *ndim, int *shape);

/* Tasks found in the graph (one per weighted loss). */
int mtl_net_num_tasks(const mtl_net *net);
const char *mtl_net_task_name(const mtl_net *net, int task);

/* Solvers: a solver prototxt with its TRAIN and TEST nets. */
mtl_status mtl_solver_open(const char *solver_path, mtl_solver **out);
void mtl_solver_close(mtl_solver *solver); /* NULL is a no-op */
/* Runs `iterations` training steps (forward, backward, update); *loss gets the last loss. */
mtl_status mtl_solver_train(mtl_solver *solver, int iterations, float *loss);
/* The solver's TRAIN net (owned by the solver), for reading outputs or setting inputs. */
mtl_net *mtl_solver_train_net(mtl_solver *solver);
/* Writes a snapshot of weights and solver state. */
mtl_status mtl_solver_save(mtl_solver *solver, const char *path);

#ifdef __cplusplus
}
#endif
#endif
