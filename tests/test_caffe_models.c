/* Caffe's own example and model-zoo nets (tests/data/caffe/) must load as users bring them: deploy
 * nets build with the right shapes and parameter counts, and train_val nets fail only at their Data
 * layers, whose databases the fixtures do not ship; with their Data layers rewritten into Input
 * layers they build in both phases. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/net.h"

#define FIXTURES "tests/data/caffe/"

/* ---- text helpers: the fixtures are read once and edited as strings ---- */

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    CHECK_MSG(f != NULL, "cannot open %s (tests run from the repository root)", path);
    if (!f)
        return NULL;
    char *text = NULL;
    size_t len = 0, cap = 0, got;
    char chunk[4096];
    while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (len + got + 1 > cap) {
            cap = 2 * (len + got + 1);
            char *grown = realloc(text, cap);
            if (!grown) {
                free(text);
                fclose(f);
                return NULL;
            }
            text = grown;
        }
        memcpy(text + len, chunk, got);
        len += got;
    }
    fclose(f);
    if (text)
        text[len] = '\0';
    return text;
}

/* A copy of text with the first `from` replaced by `to`; NULL (and a failed check) if absent. */
static char *replace_first(const char *text, const char *from, const char *to)
{
    const char *at = text ? strstr(text, from) : NULL;
    CHECK_MSG(at != NULL, "'%s' not found in the fixture", from);
    if (!at)
        return NULL;
    size_t head = (size_t)(at - text), nf = strlen(from), nt = strlen(to), tail = strlen(at + nf);
    char *out = malloc(head + nt + tail + 1);
    if (!out)
        return NULL;
    memcpy(out, text, head);
    memcpy(out + head, to, nt);
    memcpy(out + head + nt, at + nf, tail + 1);
    return out;
}

/* Skips a quoted string or a # comment starting at text[i]; returns the index after it. */
static size_t skip_string_or_comment(const char *text, size_t i)
{
    if (text[i] == '#') {
        while (text[i] && text[i] != '\n')
            i++;
        return i;
    }
    char quote = text[i++];
    while (text[i] && text[i] != quote) {
        if (text[i] == '\\' && text[i + 1])
            i++;
        i++;
    }
    return text[i] ? i + 1 : i;
}

/* The next top-level `layer { ... }` at or after `from`: [*start, *end) runs from the field name
 * through the closing brace. Returns 0 when there is none. */
static int next_layer_block(const char *text, size_t from, size_t *start, size_t *end)
{
    size_t i = from;
    int depth = 0;
    while (text[i]) {
        char c = text[i];
        if (c == '#' || c == '"' || c == '\'') {
            i = skip_string_or_comment(text, i);
            continue;
        }
        if (c == '{') {
            depth++;
        } else if (c == '}') {
            depth--;
        } else if (depth == 0 && strncmp(text + i, "layer", 5) == 0 && (i == 0 || strchr(" \t\r\n}", text[i - 1]))) {
            size_t j = i + 5;
            while (strchr(" \t\r\n:", text[j]) && text[j])
                j++;
            if (text[j] == '{') {
                int d = 0;
                while (text[j]) {
                    if (text[j] == '#' || text[j] == '"' || text[j] == '\'') {
                        j = skip_string_or_comment(text, j);
                        continue;
                    }
                    if (text[j] == '{')
                        d++;
                    else if (text[j] == '}' && --d == 0)
                        break;
                    j++;
                }
                if (!text[j])
                    return 0;
                *start = i;
                *end = j + 1;
                return 1;
            }
        }
        i++;
    }
    return 0;
}

/* Whether text[start, end) contains needle. */
static int range_has(const char *text, size_t start, size_t end, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = start; i + n <= end; i++)
        if (memcmp(text + i, needle, n) == 0)
            return 1;
    return 0;
}

/* A copy of text where every layer with `type: "<type>"` is removed and the first one is replaced
 * by `replacement` (NULL: removed too). NULL and a failed check when no such layer exists. */
static char *rewrite_layers(const char *text, const char *type, const char *replacement)
{
    if (!text)
        return NULL;
    char needle[128];
    snprintf(needle, sizeof(needle), "type: \"%s\"", type);
    size_t len = strlen(text), rlen = replacement ? strlen(replacement) : 0;
    char *out = malloc(len + rlen + 1);
    if (!out)
        return NULL;
    size_t pos = 0, n = 0, start, end;
    int found = 0;
    while (next_layer_block(text, pos, &start, &end)) {
        if (range_has(text, start, end, needle)) {
            memcpy(out + n, text + pos, start - pos);
            n += start - pos;
            if (!found && replacement) {
                memcpy(out + n, replacement, rlen);
                n += rlen;
            }
            found = 1;
        } else {
            memcpy(out + n, text + pos, end - pos);
            n += end - pos;
        }
        pos = end;
    }
    memcpy(out + n, text + pos, len - pos + 1);
    CHECK_MSG(found, "no layer of type %s in the fixture", type);
    if (!found) {
        free(out);
        return NULL;
    }
    return out;
}

/* 1-based line of the first occurrence of needle, 0 if absent. */
static int line_of(const char *text, const char *needle)
{
    const char *at = text ? strstr(text, needle) : NULL;
    if (!at)
        return 0;
    int line = 1;
    for (const char *p = text; p < at; p++)
        line += *p == '\n';
    return line;
}

/* ---- net helpers ---- */

static mtl_net *build_text(const char *text, mtl_phase phase, const char *what)
{
    if (!text)
        return NULL;
    mtl_error err = {0};
    mtl_net *net = NULL;
    mtl_net_options opts = {.phase = phase, .seed = 5};
    mtl_status st = mtl_net_from_string(text, &opts, &net, &err);
    CHECK_MSG(st == MTL_OK, "%s (%s) does not build: %s", what, phase == MTL_PHASE_TRAIN ? "TRAIN" : "TEST",
              err.message);
    return st == MTL_OK ? net : NULL;
}

static mtl_net *build_file(const char *path, mtl_phase phase)
{
    mtl_error err = {0};
    mtl_net *net = NULL;
    mtl_net_options opts = {.phase = phase, .seed = 5};
    mtl_status st = mtl_net_from_file(path, &opts, &net, &err);
    CHECK_MSG(st == MTL_OK, "%s (%s) does not build: %s", path, phase == MTL_PHASE_TRAIN ? "TRAIN" : "TEST",
              err.message);
    return st == MTL_OK ? net : NULL;
}

static void check_shape(const mtl_net *net, const char *blob, const char *expect)
{
    mtl_tensor *t = mtl_net_blob(net, blob);
    char buf[128] = "missing";
    if (t)
        mtl_tensor_shape_str(t, buf, sizeof(buf));
    CHECK_MSG(t && strcmp(buf, expect) == 0, "blob '%s' is %s, expected %s", blob, buf, expect);
}

/* Learnable values in the net (shared parameters count once). */
static int64_t param_total(const mtl_net *net)
{
    int64_t total = 0;
    for (int s = 0; s < net->n_slots; s++)
        total += net->slots[s].count;
    return total;
}

static int64_t slot_count(const mtl_net *net, const char *layer, int param)
{
    int l = mtl_net_layer_index(net, layer);
    CHECK_MSG(l >= 0, "no layer '%s'", layer);
    if (l < 0 || param >= net->layers[l]->n_params)
        return -1;
    return net->slots[net->layer_param_slot[l][param]].count;
}

static int has_layer(const mtl_net *net, const char *name) { return mtl_net_layer_index(net, name) >= 0; }

static int role_of(const mtl_net *net, const char *layer)
{
    int l = mtl_net_layer_index(net, layer);
    CHECK_MSG(l >= 0, "no layer '%s'", layer);
    return l < 0 ? MTL_ROLE_NONE - 1 : net->layer_role[l];
}

static int task_index(const mtl_net *net, const char *name)
{
    for (int t = 0; t < net->n_tasks; t++)
        if (strcmp(net->tasks[t].name, name) == 0)
            return t;
    return -1;
}

/* Deterministic values in [-scale, scale] for inputs and parameters. */
static void fill_pattern(float *x, int64_t n, uint32_t seed, float scale)
{
    uint32_t s = seed * 2654435761u + 1;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = scale * ((float)(s >> 8) / (float)(1u << 24) * 2.0f - 1.0f);
    }
}

static void fill_labels(mtl_tensor *label, int classes)
{
    for (int64_t i = 0; i < label->count; i++)
        label->data[i] = (float)((i * 7 + 3) % classes);
}

/* Every row of an N x K probability blob is finite, in [0, 1] and sums to 1. */
static void check_prob_rows(const mtl_net *net, const char *blob)
{
    mtl_tensor *p = mtl_net_blob(net, blob);
    CHECK_MSG(p != NULL, "no blob '%s'", blob);
    if (!p || p->ndim < 2)
        return;
    int64_t n = p->shape[0], k = p->count / n;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double sum = 0;
        for (int64_t j = 0; j < k; j++) {
            float v = p->data[i * k + j];
            bad += !(v >= 0.0f && v <= 1.0f);
            sum += v;
        }
        bad += fabs(sum - 1.0) > 1e-4;
    }
    CHECK_MSG(bad == 0, "%s: %d rows or values are not probabilities", blob, bad);
}

/* ---- deploy nets ---- */

static void test_lenet_deploy(void)
{
    mtl_net *net = build_file(FIXTURES "lenet_deploy.prototxt", MTL_PHASE_TEST);
    if (!net)
        return;
    check_shape(net, "data", "64x1x28x28");
    check_shape(net, "conv1", "64x20x24x24");
    check_shape(net, "pool2", "64x50x4x4");
    check_shape(net, "prob", "64x10");
    CHECK_INT(net->n_slots, 8);
    CHECK_INT(param_total(net), 431080);
    CHECK_INT(net->n_tasks, 0);
    CHECK_INT(net->n_inputs, 1);

    mtl_tensor *data = mtl_net_blob(net, "data");
    fill_pattern(data->data, data->count, 1, 1.0f);
    mtl_error err = {0};
    CHECK_OK(mtl_net_forward(net, NULL, &err), &err);
    check_prob_rows(net, "prob");
    mtl_net_free(net);
}

/* Builds a deploy net at batch 1 (the text edited from the fixture), fills its weights with small
 * values and runs one forward pass: the class probabilities must be proper distributions. */
static void forward_at_batch_1(const char *path, const char *batch_text, const char *batch_1_text, float scale)
{
    char *text = read_text(path);
    char *small = replace_first(text, batch_text, batch_1_text);
    mtl_net *net = build_text(small, MTL_PHASE_TEST, path);
    if (net) {
        for (int s = 0; s < net->n_slots; s++)
            fill_pattern(net->slots[s].data, net->slots[s].count, (uint32_t)s + 7, scale);
        mtl_tensor *data = mtl_net_blob(net, "data");
        fill_pattern(data->data, data->count, 3, 1.0f);
        mtl_error err = {0};
        CHECK_OK(mtl_net_forward(net, NULL, &err), &err);
        mtl_tensor *prob = mtl_net_blob(net, "prob");
        CHECK_INT(prob ? prob->shape[0] : -1, 1);
        check_prob_rows(net, "prob");
        mtl_net_free(net);
    }
    free(small);
    free(text);
}

/* AlexNet and CaffeNet: 60,965,224 parameters, conv2/4/5 in two groups. */
static void check_alexnet_family(const mtl_net *net)
{
    check_shape(net, "data", "10x3x227x227");
    check_shape(net, "conv1", "10x96x55x55");
    check_shape(net, "conv2", "10x256x27x27");
    check_shape(net, "conv5", "10x256x13x13");
    check_shape(net, "pool5", "10x256x6x6");
    check_shape(net, "fc6", "10x4096");
    check_shape(net, "fc7", "10x4096");
    check_shape(net, "prob", "10x1000");
    CHECK_INT(net->n_slots, 16);
    CHECK_INT(param_total(net), 60965224);
    CHECK_INT(slot_count(net, "conv2", 0), 256 * 48 * 5 * 5);
    CHECK_INT(slot_count(net, "conv4", 0), 384 * 192 * 3 * 3);
    CHECK_INT(slot_count(net, "fc6", 0), 4096 * 9216);
    CHECK_INT(net->n_tasks, 0);
}

static void test_alexnet_deploy(void)
{
    mtl_net *net = build_file(FIXTURES "alexnet_deploy.prototxt", MTL_PHASE_TEST);
    if (net) {
        check_alexnet_family(net);
        check_shape(net, "norm1", "10x96x55x55");
        check_shape(net, "pool1", "10x96x27x27");
        mtl_net_free(net);
    }
    forward_at_batch_1(FIXTURES "alexnet_deploy.prototxt", "dim: 10 dim: 3", "dim: 1 dim: 3", 0.01f);
}

static void test_caffenet_deploy(void)
{
    mtl_net *net = build_file(FIXTURES "caffenet_deploy.prototxt", MTL_PHASE_TEST);
    if (net) {
        check_alexnet_family(net);
        check_shape(net, "pool1", "10x96x27x27");
        check_shape(net, "norm1", "10x96x27x27");
        CHECK_INT(net->n_inputs, 1);
        mtl_net_free(net);
    }
    forward_at_batch_1(FIXTURES "caffenet_deploy.prototxt", "input_dim: 10", "input_dim: 1", 0.01f);
}

static const char *const inception_names[] = {"3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"};
static const char *const inception_outputs[] = {"256x28x28", "480x28x28", "512x14x14", "512x14x14", "512x14x14",
                                                "528x14x14", "832x14x14", "832x7x7", "1024x7x7"};

static void check_googlenet_trunk(const mtl_net *net, int batch)
{
    char blob[64], shape[64];
    snprintf(shape, sizeof(shape), "%dx64x112x112", batch);
    check_shape(net, "conv1/7x7_s2", shape);
    snprintf(shape, sizeof(shape), "%dx64x56x56", batch);
    check_shape(net, "pool1/3x3_s2", shape);
    snprintf(shape, sizeof(shape), "%dx192x28x28", batch);
    check_shape(net, "pool2/3x3_s2", shape);
    for (int i = 0; i < 9; i++) {
        snprintf(blob, sizeof(blob), "inception_%s/output", inception_names[i]);
        snprintf(shape, sizeof(shape), "%dx%s", batch, inception_outputs[i]);
        check_shape(net, blob, shape);
    }
    snprintf(shape, sizeof(shape), "%dx1024x1x1", batch);
    check_shape(net, "pool5/7x7_s1", shape);
    snprintf(shape, sizeof(shape), "%dx1000", batch);
    check_shape(net, "loss3/classifier", shape);
}

static void test_googlenet_deploy(void)
{
    mtl_net *net = build_file(FIXTURES "googlenet_deploy.prototxt", MTL_PHASE_TEST);
    if (net) {
        check_googlenet_trunk(net, 10);
        check_shape(net, "prob", "10x1000");
        CHECK_INT(net->n_slots, 2 * (3 + 9 * 6 + 1));
        CHECK_INT(param_total(net), 6998552);
        CHECK_INT(net->n_tasks, 0);
        mtl_net_free(net);
    }
    forward_at_batch_1(FIXTURES "googlenet_deploy.prototxt", "dim: 10\n", "dim: 1\n", 0.02f);
}

/* ---- train_val nets: their Data layers read databases the fixtures do not ship ---- */

/* The n-th (0-based) `source: "..."` of a fixture, copied into buf. */
static const char *nth_source(const char *text, int n, char *buf, size_t size)
{
    const char *at = text;
    for (int i = 0; at && i <= n; i++) {
        at = strstr(at, "source: \"");
        if (at && i < n)
            at++;
    }
    buf[0] = '\0';
    if (at) {
        at += strlen("source: \"");
        const char *end = strchr(at, '"');
        size_t len = end ? (size_t)(end - at) : 0;
        if (len < size) {
            memcpy(buf, at, len);
            buf[len] = '\0';
        }
    }
    return buf;
}

/* Building fails with MTL_ERR_NOT_FOUND at the phase's Data layer (the first layer of the file for
 * TRAIN, the second for TEST), naming the layer and the source path it looked for (relative to the
 * current directory, as in Caffe), and nothing fails before it. */
static void check_fails_on_data(const char *path, const char *layer)
{
    char *text = read_text(path);
    CHECK_MSG(line_of(text, "type: \"Data\"") > 0, "%s has no Data layer", path);
    char cwd[1024];
    CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
    char who[256];
    snprintf(who, sizeof(who), "layer '%s' (Data)", layer);
    for (int phase = MTL_PHASE_TRAIN; phase <= MTL_PHASE_TEST; phase++) {
        char source[512], looked[2048];
        nth_source(text, phase == MTL_PHASE_TRAIN ? 0 : 1, source, sizeof(source));
        CHECK_MSG(source[0] != '\0', "%s: no source for phase %d", path, phase);
        snprintf(looked, sizeof(looked), "%s/%s", cwd, source);
        mtl_error err = {0};
        mtl_net *net = NULL;
        mtl_net_options opts = {.phase = (mtl_phase)phase, .seed = 5};
        CHECK_FAILS(mtl_net_from_file(path, &opts, &net, &err), &err, MTL_ERR_NOT_FOUND, looked);
        CHECK_MSG(strncmp(err.message, path, strlen(path)) == 0 && err.message[strlen(path)] == ':',
                  "%s: error not placed in the file: %s", path, err.message);
        CHECK_MSG(strstr(err.message, who) != NULL, "%s: error does not name %s: %s", path, who, err.message);
        CHECK(net == NULL);
        mtl_net_free(net);
    }
    free(text);
}

static void test_train_val_data_layers(void)
{
    check_fails_on_data(FIXTURES "lenet_train_test.prototxt", "mnist");
    check_fails_on_data(FIXTURES "mnist_siamese_train_test.prototxt", "pair_data");
    check_fails_on_data(FIXTURES "cifar10_quick_train_test.prototxt", "cifar");
    check_fails_on_data(FIXTURES "googlenet_train_val.prototxt", "data");
}

/* The fixture with its Data layers replaced by one Input layer of the shapes they would produce. */
static char *with_input_layer(const char *path, const char *input_layer)
{
    char *text = read_text(path);
    char *out = rewrite_layers(text, "Data", input_layer);
    free(text);
    return out;
}

static void test_lenet_train_test(void)
{
    char *text = with_input_layer(FIXTURES "lenet_train_test.prototxt",
                                  "layer { name: \"mnist\" type: \"Input\" top: \"data\" top: \"label\"\n"
                                  "  input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } shape { dim: 64 } } }\n");
    mtl_net *train = build_text(text, MTL_PHASE_TRAIN, "lenet_train_test (Input)");
    if (train) {
        CHECK_INT(train->n_tasks, 1);
        CHECK(train->n_tasks == 1 && strcmp(train->tasks[0].name, "loss") == 0);
        CHECK_NEAR(train->n_tasks ? train->tasks[0].weight : 0, 1.0, 1e-7);
        CHECK(!has_layer(train, "accuracy"));
        CHECK_INT(param_total(train), 431080);
        /* lr_mult 1 for weights, 2 for biases */
        int conv1 = mtl_net_layer_index(train, "conv1");
        CHECK_NEAR(train->slots[train->layer_param_slot[conv1][1]].lr_mult, 2.0, 1e-7);

        fill_pattern(mtl_net_blob(train, "data")->data, mtl_net_blob(train, "data")->count, 2, 1.0f);
        fill_labels(mtl_net_blob(train, "label"), 10);
        double loss = 0;
        mtl_error err = {0};
        CHECK_OK(mtl_net_forward(train, &loss, &err), &err);
        CHECK_MSG(isfinite(loss) && loss > 0, "LeNet loss %g", loss);
        mtl_net_zero_param_grad(train);
        mtl_net_backward(train);
        int64_t nonzero = 0;
        for (int64_t i = 0; i < train->n_param_values; i++)
            nonzero += train->param_grad[i] != 0.0f;
        CHECK_MSG(nonzero > 0, "LeNet backward left every parameter gradient zero");

        mtl_net *test = build_text(text, MTL_PHASE_TEST, "lenet_train_test (Input)");
        if (test) {
            CHECK(has_layer(test, "accuracy"));
            CHECK_INT(test->n_tasks, 1);
            mtl_net_free(test);
        }
        /* the TEST net a solver builds views the TRAIN net's weights */
        mtl_net_options opts = {.phase = MTL_PHASE_TEST, .share = train};
        CHECK_OK(mtl_net_from_string(text, &opts, &test, &err), &err);
        if (test) {
            int a = mtl_net_layer_index(test, "ip2"), b = mtl_net_layer_index(train, "ip2");
            CHECK(a >= 0 && b >= 0 && test->layers[a]->params[0]->data == train->layers[b]->params[0]->data);
            mtl_net_free(test);
        }
        mtl_net_free(train);
    }
    free(text);
}

static void test_cifar10_quick(void)
{
    char *text = with_input_layer(FIXTURES "cifar10_quick_train_test.prototxt",
                                  "layer { name: \"cifar\" type: \"Input\" top: \"data\" top: \"label\"\n"
                                  "  input_param { shape { dim: 8 dim: 3 dim: 32 dim: 32 } shape { dim: 8 } } }\n");
    mtl_net *net = build_text(text, MTL_PHASE_TRAIN, "cifar10_quick_train_test (Input)");
    if (net) {
        /* 3x3 stride-2 pooling rounds up as in Caffe: 32 -> 16 -> 8 -> 4 */
        check_shape(net, "pool1", "8x32x16x16");
        check_shape(net, "pool2", "8x32x8x8");
        check_shape(net, "pool3", "8x64x4x4");
        check_shape(net, "ip2", "8x10");
        CHECK_INT(net->n_tasks, 1);
        CHECK_INT(param_total(net), 2432 + 25632 + 51264 + 65600 + 650);
        fill_pattern(mtl_net_blob(net, "data")->data, mtl_net_blob(net, "data")->count, 4, 1.0f);
        fill_labels(mtl_net_blob(net, "label"), 10);
        double loss = 0;
        mtl_error err = {0};
        CHECK_OK(mtl_net_forward(net, &loss, &err), &err);
        CHECK_MSG(isfinite(loss) && loss > 0, "CIFAR-10 quick loss %g", loss);
        mtl_net_free(net);
    }
    net = build_text(text, MTL_PHASE_TEST, "cifar10_quick_train_test (Input)");
    if (net) {
        CHECK(has_layer(net, "accuracy"));
        mtl_net_free(net);
    }
    free(text);
}

static void test_siamese(void)
{
    char *text = with_input_layer(FIXTURES "mnist_siamese_train_test.prototxt",
                                  "layer { name: \"pair_data\" type: \"Input\" top: \"pair_data\" top: \"sim\"\n"
                                  "  input_param { shape { dim: 4 dim: 2 dim: 28 dim: 28 } shape { dim: 4 } } }\n");
    if (!text)
        return;
    /* the whole siamese net builds, its ContrastiveLoss (margin 1, Caffe's form) the one task */
    mtl_error err = {0};
    mtl_net *net = build_text(text, MTL_PHASE_TRAIN, "mnist_siamese_train_test (Input)");
    if (net) {
        CHECK_INT(net->n_tasks, 1);
        CHECK(net->n_tasks == 1 && net->tasks[0].layer == mtl_net_layer_index(net, "loss"));
        CHECK(net->n_tasks == 1 && strcmp(net->tasks[0].name, "loss") == 0);
        mtl_tensor *pair = mtl_net_blob(net, "pair_data"), *sim = mtl_net_blob(net, "sim");
        fill_pattern(pair->data, pair->count, 21, 1.0f);
        fill_labels(sim, 2);
        double loss = 0;
        CHECK_OK(mtl_net_forward(net, &loss, &err), &err);
        CHECK_MSG(isfinite(loss) && loss >= 0, "siamese contrastive loss %g", loss);
        mtl_net_free(net);
    }

    /* without the loss, the two branches build and share every weight by name */
    char *no_loss = rewrite_layers(text, "ContrastiveLoss", NULL);
    net = build_text(no_loss, MTL_PHASE_TRAIN, "mnist_siamese_train_test (Input, no loss)");
    if (net) {
        static const char *const shared[] = {"conv1_w", "conv1_b", "conv2_w", "conv2_b", "ip1_w",
                                             "ip1_b",   "ip2_w",   "ip2_b",   "feat_w",  "feat_b"};
        CHECK_INT(net->n_slots, 10);
        for (int i = 0; i < 10; i++) {
            int found = -1;
            for (int s = 0; s < net->n_slots; s++)
                if (strcmp(net->slots[s].name, shared[i]) == 0)
                    found = s;
            CHECK_MSG(found >= 0 && net->slots[found].n_users == 2, "slot %s: %s", shared[i],
                      found < 0 ? "missing" : "not shared by both branches");
        }
        CHECK_INT(param_total(net), 431080 + 2 * 10 + 2);
        int a = mtl_net_layer_index(net, "conv1"), b = mtl_net_layer_index(net, "conv1_p");
        CHECK(a >= 0 && b >= 0 && net->layers[a]->params[0]->data == net->layers[b]->params[0]->data);
        CHECK_INT(net->n_tasks, 0);
        check_shape(net, "data", "4x1x28x28");
        check_shape(net, "feat_p", "4x2");

        /* the same image in both halves of each pair gives the same features */
        mtl_tensor *pair = mtl_net_blob(net, "pair_data");
        for (int n = 0; n < 4; n++) {
            fill_pattern(pair->data + n * 2 * 784, 784, (uint32_t)n + 11, 1.0f);
            memcpy(pair->data + n * 2 * 784 + 784, pair->data + n * 2 * 784, 784 * sizeof(float));
        }
        CHECK_OK(mtl_net_forward(net, NULL, &err), &err);
        mtl_tensor *f = mtl_net_blob(net, "feat"), *fp = mtl_net_blob(net, "feat_p");
        CHECK(f && fp && f->count == fp->count && memcmp(f->data, fp->data, (size_t)f->count * sizeof(float)) == 0);
        mtl_net_free(net);
    }
    free(no_loss);
    free(text);
}

static void check_googlenet_tasks(const mtl_net *net)
{
    CHECK_INT(net->n_tasks, 3);
    int t1 = task_index(net, "loss1/loss1"), t2 = task_index(net, "loss2/loss1"), t3 = task_index(net, "loss3/loss3");
    CHECK_MSG(t1 >= 0 && t2 >= 0 && t3 >= 0, "tasks are not loss1/loss1, loss2/loss1, loss3/loss3");
    if (t1 < 0 || t2 < 0 || t3 < 0)
        return;
    CHECK_NEAR(net->tasks[t1].weight, 0.3, 1e-7);
    CHECK_NEAR(net->tasks[t2].weight, 0.3, 1e-7);
    CHECK_NEAR(net->tasks[t3].weight, 1.0, 1e-7);
    CHECK_INT(net->tasks[t1].layer, mtl_net_layer_index(net, "loss1/loss"));
    CHECK_INT(net->tasks[t3].layer, mtl_net_layer_index(net, "loss3/loss3"));

    /* each auxiliary head belongs to its own loss only */
    static const char *const head[] = {"ave_pool", "conv", "relu_conv", "fc", "relu_fc", "drop_fc", "classifier",
                                       "loss"};
    for (int i = 0; i < 8; i++) {
        char name[64];
        snprintf(name, sizeof(name), "loss1/%s", head[i]);
        CHECK_MSG(role_of(net, name) == t1, "%s has role %d, expected task %d", name, role_of(net, name), t1);
        snprintf(name, sizeof(name), "loss2/%s", head[i]);
        CHECK_MSG(role_of(net, name) == t2, "%s has role %d, expected task %d", name, role_of(net, name), t2);
    }
    /* the stem and inception 3a..4a feed all three losses; 4b..4d feed loss2 and loss3; 4e on is loss3's */
    static const char *const shared[] = {"conv1/7x7_s2", "pool1/norm1", "conv2/3x3", "inception_3a/1x1",
                                         "inception_3a/relu_3x3", "inception_3a/5x5", "inception_3a/pool_proj",
                                         "inception_3a/output", "inception_4a/output", "inception_4b/3x3",
                                         "inception_4d/output"};
    for (int i = 0; i < (int)(sizeof(shared) / sizeof(shared[0])); i++)
        CHECK_MSG(role_of(net, shared[i]) == MTL_ROLE_SHARED, "%s has role %d, expected shared", shared[i],
                  role_of(net, shared[i]));
    static const char *const main_only[] = {"inception_4e/1x1", "inception_5a/output", "inception_5b/1x1",
                                            "inception_5b/3x3", "inception_5b/pool", "inception_5b/output",
                                            "pool5/7x7_s1", "loss3/classifier", "loss3/loss3"};
    for (int i = 0; i < (int)(sizeof(main_only) / sizeof(main_only[0])); i++)
        CHECK_MSG(role_of(net, main_only[i]) == t3, "%s has role %d, expected task %d", main_only[i],
                  role_of(net, main_only[i]), t3);
    int l3a = mtl_net_layer_index(net, "inception_3a/1x1"), l4b = mtl_net_layer_index(net, "inception_4b/1x1");
    if (l3a >= 0 && l4b >= 0) {
        CHECK(net->tasks[t1].layer_mask[l3a] && net->tasks[t2].layer_mask[l3a] && net->tasks[t3].layer_mask[l3a]);
        CHECK(!net->tasks[t1].layer_mask[l4b] && net->tasks[t2].layer_mask[l4b] && net->tasks[t3].layer_mask[l4b]);
    }
}

static void test_googlenet_train_val(void)
{
    char *text = with_input_layer(FIXTURES "googlenet_train_val.prototxt",
                                  "layer { name: \"data\" type: \"Input\" top: \"data\" top: \"label\"\n"
                                  "  input_param { shape { dim: 2 dim: 3 dim: 224 dim: 224 } shape { dim: 2 } } }\n");
    mtl_net *train = build_text(text, MTL_PHASE_TRAIN, "googlenet_train_val (Input)");
    if (train) {
        check_googlenet_trunk(train, 2);
        check_shape(train, "loss1/ave_pool", "2x512x4x4");
        check_shape(train, "loss2/ave_pool", "2x528x4x4");
        check_shape(train, "loss1/fc", "2x1024");
        CHECK_INT(param_total(train), 6998552 + 3188840 + 3190888);
        CHECK(!has_layer(train, "loss1/top-1") && !has_layer(train, "loss3/top-5"));
        check_googlenet_tasks(train);

        fill_pattern(mtl_net_blob(train, "data")->data, mtl_net_blob(train, "data")->count, 6, 1.0f);
        fill_labels(mtl_net_blob(train, "label"), 1000);
        double loss = 0;
        mtl_error err = {0};
        CHECK_OK(mtl_net_forward(train, &loss, &err), &err);
        CHECK_MSG(isfinite(loss) && loss > 0, "GoogLeNet loss %g", loss);
        for (int t = 0; t < train->n_tasks; t++)
            CHECK_MSG(isfinite(mtl_net_task_loss(train, t)), "task %d loss not finite", t);

        mtl_net *test = build_text(text, MTL_PHASE_TEST, "googlenet_train_val (Input)");
        if (test) {
            static const char *const acc[] = {"loss1/top-1", "loss1/top-5", "loss2/top-1",
                                              "loss2/top-5", "loss3/top-1", "loss3/top-5"};
            for (int i = 0; i < 6; i++)
                CHECK_MSG(has_layer(test, acc[i]), "TEST net lacks %s", acc[i]);
            check_googlenet_tasks(test);
            mtl_net_free(test);
        }
        mtl_net_options opts = {.phase = MTL_PHASE_TEST, .share = train};
        CHECK_OK(mtl_net_from_string(text, &opts, &test, &err), &err);
        if (test) {
            int a = mtl_net_layer_index(test, "loss3/classifier"), b = mtl_net_layer_index(train, "loss3/classifier");
            CHECK(a >= 0 && b >= 0 && test->layers[a]->params[0]->data == train->layers[b]->params[0]->data);
            mtl_net_free(test);
        }
        mtl_net_free(train);
    }
    free(text);
}

int main(void)
{
    test_lenet_deploy();
    test_alexnet_deploy();
    test_caffenet_deploy();
    test_googlenet_deploy();
    test_train_val_data_layers();
    test_lenet_train_test();
    test_cifar10_quick();
    test_siamese();
    test_googlenet_train_val();
    return check_finish();
}
