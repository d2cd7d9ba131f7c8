/* Net building: splits, sharing, phases, loss weights, backward needs, task structure, and every
 * build error; plus a whole-net finite-difference check through splits and shared weights. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/net.h"
#include "layers/layers.h"

static const char *two_task_net =
    "name: 'two_task'\n"
    "layer { name: 'in' type: 'Input' top: 'data' top: 'label'\n"
    "  input_param { shape { dim: 4 dim: 6 } shape { dim: 4 dim: 2 } } }\n"
    "layer { name: 'slice' type: 'Slice' bottom: 'label' top: 'label_a' top: 'label_b'\n"
    "  slice_param { axis: 1 slice_point: 1 } }\n"
    "layer { name: 'trunk' type: 'InnerProduct' bottom: 'data' top: 'feat'\n"
    "  inner_product_param { num_output: 5 weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    "layer { name: 'relu' type: 'ReLU' bottom: 'feat' top: 'feat' }\n"
    "layer { name: 'head_a' type: 'InnerProduct' bottom: 'feat' top: 'score_a'\n"
    "  inner_product_param { num_output: 3 weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    "layer { name: 'head_b' type: 'InnerProduct' bottom: 'feat' top: 'score_b'\n"
    "  inner_product_param { num_output: 3 weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    "layer { name: 'loss_a' type: 'SoftmaxWithLoss' bottom: 'score_a' bottom: 'label_a' top: 'loss_a'\n"
    "  loss_weight: 0.25 }\n"
    "layer { name: 'loss_b' type: 'SoftmaxWithLoss' bottom: 'score_b' bottom: 'label_b' top: 'loss_b'\n"
    "  loss_weight: 0.75 }\n"
    "layer { name: 'acc_a' type: 'Accuracy' bottom: 'score_a' bottom: 'label_a' top: 'acc_a'\n"
    "  include { phase: TEST } }\n";

static void fill_inputs(mtl_net *net)
{
    mtl_tensor *data = mtl_net_blob(net, "data"), *label = mtl_net_blob(net, "label");
    for (int64_t i = 0; i < data->count; i++)
        data->data[i] = (float)((i * 37) % 11) / 5.0f - 1.0f;
    for (int64_t i = 0; i < label->count; i++)
        label->data[i] = (float)((i * 7) % 3);
}

static void test_structure(void)
{
    mtl_error err = {0};
    mtl_net *net = NULL;
    mtl_net_options train = {.phase = MTL_PHASE_TRAIN, .seed = 3};
    CHECK_OK(mtl_net_from_string(two_task_net, &train, &net, &err), &err);
    if (!net)
        return;
    /* feat feeds two heads: one automatic split; label_a feeds only the loss at TRAIN */
    int splits = 0;
    for (int i = 0; i < net->n_layers; i++)
        splits += net->layer_is_auto_split[i];
    CHECK_INT(splits, 1);
    CHECK(mtl_net_layer_index(net, "acc_a") < 0);
    CHECK_INT(net->n_tasks, 2);
    CHECK(strcmp(net->tasks[0].name, "loss_a") == 0);
    CHECK_NEAR(net->tasks[1].weight, 0.75, 1e-7);
    CHECK_INT(net->layer_role[mtl_net_layer_index(net, "trunk")], MTL_ROLE_SHARED);
    CHECK_INT(net->layer_role[mtl_net_layer_index(net, "relu")], MTL_ROLE_SHARED);
    CHECK_INT(net->layer_role[mtl_net_layer_index(net, "head_a")], 0);
    CHECK_INT(net->layer_role[mtl_net_layer_index(net, "head_b")], 1);
    CHECK_INT(net->layer_role[mtl_net_layer_index(net, "in")], MTL_ROLE_SHARED);
    /* input and slice need no backward; the trunk does */
    CHECK(!net->layer_needs_backward[mtl_net_layer_index(net, "in")]);
    CHECK(!net->layer_needs_backward[mtl_net_layer_index(net, "slice")]);
    CHECK(net->layer_needs_backward[mtl_net_layer_index(net, "trunk")]);
    CHECK(!net->layers[mtl_net_layer_index(net, "trunk")]->propagate_down[0]);
    /* three InnerProducts with weight and bias */
    CHECK_INT(net->n_slots, 6);
    CHECK_INT(net->n_param_values, 32 + 16 + 16 + 16 + 16 + 16);

    fill_inputs(net);
    double loss = 0;
    CHECK_OK(mtl_net_forward(net, &loss, &err), &err);
    double expect = 0.25 * mtl_net_task_loss(net, 0) + 0.75 * mtl_net_task_loss(net, 1);
    CHECK_NEAR(loss, expect, 1e-6);
    CHECK(loss > 0);

    mtl_net *test = NULL;
    mtl_net_options test_opts = {.phase = MTL_PHASE_TEST, .share = net};
    CHECK_OK(mtl_net_from_string(two_task_net, &test_opts, &test, &err), &err);
    if (test) {
        CHECK(mtl_net_layer_index(test, "acc_a") >= 0);
        /* the TEST net views the TRAIN net's weights */
        int a = mtl_net_layer_index(test, "head_a"), b = mtl_net_layer_index(net, "head_a");
        CHECK(test->layers[a]->params[0]->data == net->layers[b]->params[0]->data);
        fill_inputs(test);
        double test_loss = 0;
        CHECK_OK(mtl_net_forward(test, &test_loss, &err), &err);
        CHECK_NEAR(test_loss, loss, 1e-6);
        mtl_net_free(test);
    }
    mtl_net_free(net);
}

/* d(loss)/d(params) by central differences over the whole net, through the split and ReLU. */
static void check_net_gradients(const char *text, const char *label)
{
    mtl_error err = {0};
    mtl_net *net = NULL;
    mtl_net_options opts = {.phase = MTL_PHASE_TRAIN, .seed = 11};
    CHECK_OK(mtl_net_from_string(text, &opts, &net, &err), &err);
    if (!net)
        return;
    fill_inputs(net);
    double loss;
    mtl_net_zero_param_grad(net);
    CHECK_OK(mtl_net_forward(net, &loss, &err), &err);
    mtl_net_backward(net);
    int bad = 0, checked = 0;
    for (int s = 0; s < net->n_slots; s++) {
        if (!net->slots[s].needs_grad)
            continue;
        for (int64_t k = 0; k < net->slots[s].count; k++) {
            float *x = &net->slots[s].data[k], saved = *x, h = 1e-2f;
            double fp, fm;
            *x = saved + h;
            mtl_net_forward(net, &fp, &err);
            *x = saved - h;
            mtl_net_forward(net, &fm, &err);
            *x = saved;
            double numeric = (fp - fm) / (2 * h), analytic = net->slots[s].grad[k];
            double scale = fmax(fmax(fabs(numeric), fabs(analytic)), 1.0);
            checked++;
            if (fabs(numeric - analytic) / scale > 2e-3) {
                if (bad++ < 3)
                    fprintf(stderr, "%s: slot %s[%lld]: analytic %g numeric %g\n", label, net->slots[s].name,
                            (long long)k, analytic, numeric);
            }
        }
    }
    CHECK_MSG(bad == 0, "%s: %d of %d parameter gradients differ", label, bad, checked);
    CHECK(checked > 0);
    mtl_net_free(net);
}

static const char *siamese_net =
    "layer { name: 'in' type: 'Input' top: 'data' top: 'label'\n"
    "  input_param { shape { dim: 4 dim: 6 } shape { dim: 4 dim: 2 } } }\n"
    "layer { name: 'ip_a' type: 'InnerProduct' bottom: 'data' top: 'fa'\n"
    "  param { name: 'w' } param { name: 'b' }\n"
    "  inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    "layer { name: 'ip_b' type: 'InnerProduct' bottom: 'data' top: 'fb'\n"
    "  param { name: 'w' } param { name: 'b' }\n"
    "  inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 0.5 } } }\n"
    "layer { name: 'sq' type: 'Eltwise' bottom: 'fa' bottom: 'fb' top: 'prod' eltwise_param { operation: PROD } }\n"
    "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'prod' bottom: 'label' top: 'loss' }\n";

static void test_sharing(void)
{
    mtl_error err = {0};
    mtl_net *net = NULL;
    CHECK_OK(mtl_net_from_string(siamese_net, NULL, &net, &err), &err);
    if (!net)
        return;
    CHECK_INT(net->n_slots, 2);
    CHECK_INT(net->slots[0].n_users, 2);
    int a = mtl_net_layer_index(net, "ip_a"), b = mtl_net_layer_index(net, "ip_b");
    CHECK(net->layers[a]->params[0]->data == net->layers[b]->params[0]->data);
    mtl_net_free(net);
    check_net_gradients(siamese_net, "siamese");
}

static void expect_build_error(const char *text, mtl_status status, const char *needle)
{
    mtl_error err = {0};
    mtl_net *net = NULL;
    CHECK_FAILS(mtl_net_from_string(text, NULL, &net, &err), &err, status, needle);
    CHECK(net == NULL);
    mtl_net_free(net);
}

#define INPUT "layer { name: 'in' type: 'Input' top: 'data' input_param { shape { dim: 2 dim: 3 } } }\n"

static void test_errors(void)
{
    expect_build_error(INPUT "layer { name: 'r' type: 'ReLU' bottom: 'dta' top: 'r' }\n", MTL_ERR_CONFIG,
                       "<net>:2: layer 'r': unknown bottom blob 'dta'; did you mean data");
    expect_build_error(INPUT "layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'x' }\n"
                             "layer { name: 's' type: 'ReLU' bottom: 'data' top: 'x' }\n",
                       MTL_ERR_CONFIG, "top 'x' is already produced by layer 'r'");
    expect_build_error(INPUT "layer { name: 'a' type: 'ReLU' bottom: 'y' top: 'x' }\n"
                             "layer { name: 'b' type: 'ReLU' bottom: 'x' top: 'y' }\n",
                       MTL_ERR_CONFIG, "the net has a cycle");
    expect_build_error(INPUT "layer { name: 'a' type: 'ReLU' bottom: 'y' top: 'x' }\n"
                             "layer { name: 'b' type: 'ReLU' bottom: 'data' top: 'y' }\n",
                       MTL_ERR_CONFIG, "move 'b' above 'a'");
    expect_build_error(INPUT "layer { name: 'c' type: 'Convolutoin' bottom: 'data' top: 'c' }\n",
                       MTL_ERR_UNSUPPORTED, "<net>:2:19: layer type 'Convolutoin' is not one mtl has; did you mean Convolution");
    expect_build_error(INPUT "layer { name: 'd' type: 'HDF5Data' top: 'x' }\n", MTL_ERR_UNSUPPORTED,
                       "layer type 'HDF5Data' is not one mtl has");
    expect_build_error(INPUT "layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' relu_param { negative_slop: 1 } }\n",
                       MTL_ERR_CONFIG, "did you mean 'negative_slope'");
    expect_build_error(INPUT "layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' botom: 'x' }\n", MTL_ERR_CONFIG,
                       "did you mean 'bottom'");
    expect_build_error(INPUT "layer { name: 's' type: 'InnerProduct' bottom: 'data' top: 'data' inner_product_param { num_output: 3 } }\n", MTL_ERR_CONFIG,
                       "cannot compute in place");
    expect_build_error(INPUT "layer { name: 'a' type: 'InnerProduct' bottom: 'data' top: 'a' param { name: 'w' }\n"
                             "  inner_product_param { num_output: 2 } }\n"
                             "layer { name: 'b' type: 'InnerProduct' bottom: 'data' top: 'b' param { name: 'w' }\n"
                             "  inner_product_param { num_output: 3 } }\n",
                       MTL_ERR_SHAPE, "shared parameter 'w' has shape 3x3 here but 2x3 in layer 'a'");
    expect_build_error("layers { name: 'a' type: RELU }\n", MTL_ERR_UNSUPPORTED, "V1 'layers' format");
    expect_build_error(INPUT "layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' include { phase: TRIAN } }\n",
                       MTL_ERR_CONFIG, "TRAIN");
}

static void test_phases_and_inputs(void)
{
    mtl_error err = {0};
    mtl_net *net = NULL;
    const char *deploy = "input: 'data' input_shape { dim: 2 dim: 3 dim: 4 dim: 4 }\n"
                         "layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' exclude { phase: TEST } }\n"
                         "layer { name: 's' type: 'Sigmoid' bottom: 'data' top: 's' include { phase: TEST } }\n";
    mtl_net_options test = {.phase = MTL_PHASE_TEST};
    CHECK_OK(mtl_net_from_string(deploy, &test, &net, &err), &err);
    if (net) {
        CHECK_INT(net->n_layers, 1);
        CHECK(strcmp(net->layers[0]->name, "s") == 0);
        CHECK_INT(net->n_inputs, 1);
        CHECK_INT(mtl_net_blob(net, "s")->count, 96);
        CHECK_INT(net->n_tasks, 0);
        mtl_net_free(net);
    }
    const char *dims = "input: 'data' input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 3\n"
                       "layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'data' }\n";
    CHECK_OK(mtl_net_from_string(dims, NULL, &net, &err), &err);
    if (net) {
        CHECK_INT(mtl_net_blob(net, "data")->shape[3], 3);
        mtl_net_free(net);
    }
}

static void test_frozen_and_nan(void)
{
    mtl_error err = {0};
    mtl_net *net = NULL;
    const char *frozen = INPUT "layer { name: 'a' type: 'InnerProduct' bottom: 'data' top: 'a'\n"
                               "  param { lr_mult: 0 } param { lr_mult: 0 } inner_product_param { num_output: 2 } }\n"
                               "layer { name: 'b' type: 'InnerProduct' bottom: 'a' top: 'b' inner_product_param { num_output: 2 } }\n"
                               "layer { name: 'c' type: 'InnerProduct' bottom: 'data' top: 'c' inner_product_param { num_output: 2 } }\n"
                               "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'b' bottom: 'b' top: 'loss' }\n"
                               "layer { name: 'silence' type: 'Silence' bottom: 'c' }\n";
    CHECK_OK(mtl_net_from_string(frozen, NULL, &net, &err), &err);
    if (net) {
        CHECK(!net->layer_needs_backward[mtl_net_layer_index(net, "a")]);
        CHECK(net->layer_needs_backward[mtl_net_layer_index(net, "b")]);
        CHECK(!net->layers[mtl_net_layer_index(net, "b")]->propagate_down[0]);
        CHECK(!net->layer_needs_backward[mtl_net_layer_index(net, "c")]); /* no path to a loss */
        mtl_net_free(net);
    }
    const char *nan_net = INPUT "layer { name: 'lg' type: 'Sigmoid' bottom: 'data' top: 's' }\n"
                                "layer { name: 'ip' type: 'InnerProduct' bottom: 's' top: 'y' inner_product_param { num_output: 1 } }\n"
                                "layer { name: 't' type: 'Input' top: 't' input_param { shape { dim: 2 dim: 1 } } }\n"
                                "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'y' bottom: 't' top: 'loss' }\n";
    CHECK_OK(mtl_net_from_string(nan_net, NULL, &net, &err), &err);
    if (net) {
        net->slots[0].data[1] = NAN;
        double loss;
        CHECK_FAILS(mtl_net_forward(net, &loss, &err), &err, MTL_ERR_NUMERIC, "layer 'ip' (InnerProduct, line 3)");
        mtl_net_free(net);
    }
}

/* The table of layer types: every enum value has an entry, with a type name found by its own name
 * and used once (a new type without its table entry fails here, not at a user's run). */
static void test_layer_table(void)
{
    for (int i = 0; i < MTL_LAYER_TYPE_COUNT; i++) {
        const mtl_layer_ops *ops = mtl_layer_table[i];
        CHECK_MSG(ops && ops->type && ops->forward, "layer table entry %d is empty", i);
        if (!ops || !ops->type)
            continue;
        CHECK_MSG(mtl_layer_ops_find(ops->type) == ops, "type '%s' (entry %d) is not found as itself", ops->type, i);
        CHECK_MSG(ops->no_backward || ops->backward, "type '%s' has neither a backward nor no_backward", ops->type);
    }
}

int main(void)
{
    test_layer_table();
    test_structure();
    test_sharing();
    check_net_gradients(two_task_net, "two_task");
    test_errors();
    test_phases_and_inputs();
    test_frozen_and_nan();
    return check_finish();
}
