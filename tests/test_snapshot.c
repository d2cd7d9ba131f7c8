/* Snapshot files: a bit-exact round trip of parameters and solver state, refusal of truncated,
 * damaged, foreign and too-new files with clear messages, the atomic write, and by-name weight
 * loading into a net with different heads (the --weights report). */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "core/net.h"
#include "core/snapshot.h"

static char tmp_dir[64];

static void make_tmp_dir(void)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/mtl_test_snapshot_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        exit(1);
    }
}

static void remove_tmp_dir(void)
{
    DIR *d = opendir(tmp_dir);
    if (!d)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", tmp_dir, e->d_name);
        remove(path);
    }
    closedir(d);
    rmdir(tmp_dir);
}

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 512, "%s/%s", tmp_dir, name);
    return p;
}

static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    *size = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

static void write_all(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
}

/* Rewrites the trailing CRC32 after a deliberate change. */
static void reseal(unsigned char *b, size_t size)
{
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), b, (uInt)(size - 4));
    for (int i = 0; i < 4; i++)
        b[size - 4 + i] = (unsigned char)(crc >> (8 * i));
}

static int same_bits(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

/* A snapshot with two parameters and a full solver state; values include -0, a denormal and NaN so
 * that the round trip is checked bit for bit. */
static float p0[6] = {1.5f, -0.0f, 3.0e-39f, -7.25f, 1e30f, 0.1f};
static float p1[2] = {-1.0f, 2.0f};
static float hist0[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
static float hist1[4] = {-1, -2, -3, -4};
static float window[6] = {0.5f, 0.25f, 0.4f, 0.2f, 0.0f, 0.0f};

static void build_sample(mtl_snapshot *s, mtl_snapshot_array *params, mtl_snapshot_array *hist, mtl_rng *rngs)
{
    p0[5] = NAN;
    memset(s, 0, sizeof(*s));
    params[0] = (mtl_snapshot_array){.name = "conv1/0", .ndim = 2, .shape = {2, 3}, .count = 6, .data = p0};
    params[1] = (mtl_snapshot_array){.name = "conv1/1", .ndim = 1, .shape = {2}, .count = 2, .data = p1};
    hist[0] = (mtl_snapshot_array){.name = "conv1/0", .ndim = 2, .shape = {2, 6}, .count = 12, .data = hist0};
    hist[1] = (mtl_snapshot_array){.name = "shared_w", .ndim = 2, .shape = {2, 2}, .count = 4, .data = hist1};
    mtl_rng_seed(&rngs[0], 11);
    mtl_rng_seed(&rngs[1], 12);
    s->n_params = 2;
    s->params = params;
    s->has_state = 1;
    s->state.iter = 42;
    snprintf(s->state.solver_type, sizeof(s->state.solver_type), "Adam");
    s->state.n_history = 2;
    s->state.n_slots = 2;
    s->state.history = hist;
    s->state.n_rngs = 2;
    s->state.rngs = rngs;
    s->state.window_size = 3;
    s->state.window_width = 2;
    s->state.window_fill = 2;
    s->state.window_pos = 2;
    s->state.window = (mtl_snapshot_array){.ndim = 2, .shape = {3, 2}, .count = 6, .data = window};
}

static void test_round_trip(void)
{
    mtl_error err = {0};
    mtl_snapshot s;
    mtl_snapshot_array params[2], hist[2];
    mtl_rng rngs[2];
    build_sample(&s, params, hist, rngs);
    const char *path = tmp_path("round.mtlsnap");
    CHECK_OK(mtl_snapshot_write(path, &s, &err), &err);
    CHECK(access(tmp_path("round.mtlsnap.tmp"), F_OK) != 0); /* renamed into place */

    size_t size = 0;
    unsigned char *bytes = read_all(path, &size);
    CHECK(bytes && size > 24 && memcmp(bytes, "MTLSNAP\0", 8) == 0);
    CHECK(bytes && bytes[8] == 1 && bytes[9] == 0 && bytes[10] == 0 && bytes[11] == 0); /* version 1, LE */
    free(bytes);

    mtl_snapshot *r = NULL;
    CHECK_OK(mtl_snapshot_read(path, &r, &err), &err);
    if (!r)
        return;
    CHECK_INT(r->version, 1);
    CHECK_INT(r->n_params, 2);
    CHECK(strcmp(r->params[0].name, "conv1/0") == 0);
    CHECK_INT(r->params[0].ndim, 2);
    CHECK_INT(r->params[0].shape[0], 2);
    CHECK_INT(r->params[0].shape[1], 3);
    CHECK_INT(r->params[1].count, 2);
    float got[12];
    mtl_snapshot_copy(r, &r->params[0], got);
    CHECK(same_bits(got, p0, 6));
    mtl_snapshot_copy(r, mtl_snapshot_find_param(r, "conv1/1"), got);
    CHECK(same_bits(got, p1, 2));
    CHECK(mtl_snapshot_find_param(r, "conv2/0") == NULL);

    CHECK(r->has_state);
    CHECK_INT(r->state.iter, 42);
    CHECK(strcmp(r->state.solver_type, "Adam") == 0);
    CHECK_INT(r->state.n_history, 2);
    CHECK_INT(r->state.n_slots, 2);
    CHECK(strcmp(r->state.history[1].name, "shared_w") == 0);
    mtl_snapshot_copy(r, &r->state.history[0], got);
    CHECK(same_bits(got, hist0, 12));
    mtl_snapshot_copy(r, &r->state.history[1], got);
    CHECK(same_bits(got, hist1, 4));
    CHECK_INT(r->state.n_rngs, 2);
    CHECK(memcmp(&r->state.rngs[1], &rngs[1], sizeof(mtl_rng)) == 0);
    CHECK_INT(r->state.window_size, 3);
    CHECK_INT(r->state.window_width, 2);
    CHECK_INT(r->state.window_fill, 2);
    CHECK_INT(r->state.window_pos, 2);
    mtl_snapshot_copy(r, &r->state.window, got);
    CHECK(same_bits(got, window, 6));
    mtl_snapshot_free(r);

    /* weights only: no state section */
    s.has_state = 0;
    CHECK_OK(mtl_snapshot_write(tmp_path("weights.mtlsnap"), &s, &err), &err);
    CHECK_OK(mtl_snapshot_read(tmp_path("weights.mtlsnap"), &r, &err), &err);
    if (r) {
        CHECK(!r->has_state);
        CHECK_INT(r->n_params, 2);
        mtl_snapshot_free(r);
    }
    mtl_snapshot_free(NULL);
}

static void test_refusals(void)
{
    mtl_error err = {0};
    mtl_snapshot s;
    mtl_snapshot_array params[2], hist[2];
    mtl_rng rngs[2];
    build_sample(&s, params, hist, rngs);
    const char *good = tmp_path("good.mtlsnap");
    CHECK_OK(mtl_snapshot_write(good, &s, &err), &err);
    size_t size = 0;
    unsigned char *bytes = read_all(good, &size);
    if (!bytes)
        return;
    mtl_snapshot *r = NULL;

    /* truncated: at several places, including inside the header and just before the checksum */
    const size_t cuts[] = {size - 1, size - 4, size / 2, 30, 20, 5};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        const char *p = tmp_path("cut.mtlsnap");
        write_all(p, bytes, cuts[i]);
        CHECK_FAILS(mtl_snapshot_read(p, &r, &err), &err, MTL_ERR_CORRUPT, "truncated");
        CHECK(strstr(err.message, p) != NULL);
        CHECK(r == NULL);
    }

    /* one flipped bit in the values: the checksum catches it */
    unsigned char *bad = malloc(size);
    memcpy(bad, bytes, size);
    bad[size / 2] ^= 0x10;
    write_all(tmp_path("flip.mtlsnap"), bad, size);
    CHECK_FAILS(mtl_snapshot_read(tmp_path("flip.mtlsnap"), &r, &err), &err, MTL_ERR_CORRUPT, "checksum");
    CHECK(strstr(err.message, "flip.mtlsnap") != NULL);
    /* a flipped byte in the checksum itself */
    memcpy(bad, bytes, size);
    bad[size - 1] ^= 0xff;
    write_all(tmp_path("flip2.mtlsnap"), bad, size);
    CHECK_FAILS(mtl_snapshot_read(tmp_path("flip2.mtlsnap"), &r, &err), &err, MTL_ERR_CORRUPT, "checksum");

    /* wrong magic: not a snapshot at all */
    memcpy(bad, bytes, size);
    memcpy(bad, "GARBAGE!", 8);
    write_all(tmp_path("magic.mtlsnap"), bad, size);
    CHECK_FAILS(mtl_snapshot_read(tmp_path("magic.mtlsnap"), &r, &err), &err, MTL_ERR_CORRUPT,
                "is not an mtl snapshot");
    const char *text = "name: 'lenet'\n";
    write_all(tmp_path("net.prototxt"), (const unsigned char *)text, strlen(text));
    CHECK_FAILS(mtl_snapshot_read(tmp_path("net.prototxt"), &r, &err), &err, MTL_ERR_CORRUPT,
                "is not an mtl snapshot");
    write_all(tmp_path("empty.mtlsnap"), bytes, 0);
    CHECK_FAILS(mtl_snapshot_read(tmp_path("empty.mtlsnap"), &r, &err), &err, MTL_ERR_CORRUPT,
                "is not an mtl snapshot");

    /* a newer format version */
    memcpy(bad, bytes, size);
    bad[8] = 99;
    write_all(tmp_path("v99.mtlsnap"), bad, size);
    CHECK_FAILS(mtl_snapshot_read(tmp_path("v99.mtlsnap"), &r, &err), &err, MTL_ERR_CORRUPT, "version 99");

    /* trailing bytes after the checksum */
    unsigned char *longer = malloc(size + 3);
    memcpy(longer, bytes, size);
    memset(longer + size, 0, 3);
    write_all(tmp_path("long.mtlsnap"), longer, size + 3);
    CHECK_FAILS(mtl_snapshot_read(tmp_path("long.mtlsnap"), &r, &err), &err, MTL_ERR_CORRUPT, "header says");
    free(longer);

    /* damage that keeps a valid checksum (a writer bug, say) is still caught by the structure checks:
     * the PARM section's length (bytes 32..39) and its array count (bytes 40..43) */
    memcpy(bad, bytes, size);
    bad[36] = 0x7f;
    reseal(bad, size);
    write_all(tmp_path("len.mtlsnap"), bad, size);
    CHECK_FAILS(mtl_snapshot_read(tmp_path("len.mtlsnap"), &r, &err), &err, MTL_ERR_CORRUPT,
                "section 'PARM' at byte 40: its length runs past the end of the file");
    memcpy(bad, bytes, size);
    bad[41] = 0x10;
    reseal(bad, size);
    write_all(tmp_path("count.mtlsnap"), bad, size);
    CHECK_FAILS(mtl_snapshot_read(tmp_path("count.mtlsnap"), &r, &err), &err, MTL_ERR_CORRUPT,
                "more arrays announced than fit");
    memcpy(bad, bytes, size);
    bad[40] = 1; /* one array fewer: the second one is left over */
    reseal(bad, size);
    write_all(tmp_path("left.mtlsnap"), bad, size);
    CHECK_FAILS(mtl_snapshot_read(tmp_path("left.mtlsnap"), &r, &err), &err, MTL_ERR_CORRUPT, "bytes left over");

    /* missing file */
    CHECK_FAILS(mtl_snapshot_read(tmp_path("nope.mtlsnap"), &r, &err), &err, MTL_ERR_NOT_FOUND, "nope.mtlsnap");
    /* unwritable place */
    CHECK_FAILS(mtl_snapshot_write(tmp_path("no/such/dir.mtlsnap"), &s, &err), &err, MTL_ERR_IO, "no/such/dir");
    free(bad);
    free(bytes);
}

/* Nets for by-name loading: B keeps A's trunk, resizes A's head, adds a new layer and drops one. */
#define NET_INPUT                                                                                                  \
    "layer { name: 'in' type: 'Input' top: 'data' top: 'target' input_param { shape { dim: 2 dim: 4 } shape { "     \
    "dim: 2 dim: 2 } } }\n"
#define IP(name, bottom, top, n)                                                                                   \
    "layer { name: '" name "' type: 'InnerProduct' bottom: '" bottom "' top: '" top "'\n"                          \
    "  inner_product_param { num_output: " #n " weight_filler { type: 'gaussian' std: 0.5 } } }\n"

static const char *net_a = NET_INPUT IP("trunk", "data", "feat", 3) IP("head", "feat", "out", 2)
    IP("old_head", "feat", "old", 2)
    "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'out' bottom: 'target' top: 'loss' }\n"
    "layer { name: 'old_loss' type: 'EuclideanLoss' bottom: 'old' bottom: 'target' top: 'old_loss' }\n";
static const char *net_b = NET_INPUT IP("trunk", "data", "feat", 3) IP("head", "feat", "out5", 5)
    IP("extra", "feat", "out2", 2)
    "layer { name: 'loss' type: 'EuclideanLoss' bottom: 'out2' bottom: 'target' top: 'loss' }\n"
    "layer { name: 'silence' type: 'Silence' bottom: 'out5' }\n";

static void test_load_weights(void)
{
    mtl_error err = {0};
    mtl_net *a = NULL, *b = NULL, *a2 = NULL;
    mtl_net_options o1 = {.phase = MTL_PHASE_TRAIN, .seed = 1}, o2 = {.phase = MTL_PHASE_TRAIN, .seed = 2};
    CHECK_OK(mtl_net_from_string(net_a, &o1, &a, &err), &err);
    CHECK_OK(mtl_net_from_string(net_b, &o2, &b, &err), &err);
    CHECK_OK(mtl_net_from_string(net_a, &o2, &a2, &err), &err);
    if (!a || !b || !a2)
        goto done;

    mtl_snapshot w = {0};
    CHECK_OK(mtl_snapshot_add_net_params(&w, a, &err), &err);
    CHECK_INT(w.n_params, 6);
    CHECK(strcmp(w.params[0].name, "trunk/0") == 0);
    CHECK(strcmp(w.params[1].name, "trunk/1") == 0);
    const char *path = tmp_path("a.mtlsnap");
    CHECK_OK(mtl_snapshot_write(path, &w, &err), &err);
    for (int i = 0; i < w.n_params; i++)
        free(w.params[i].name);
    free(w.params);

    mtl_snapshot *r = NULL;
    CHECK_OK(mtl_snapshot_read(path, &r, &err), &err);
    if (!r)
        goto done;

    mtl_layer *b_head = b->layers[mtl_net_layer_index(b, "head")];
    float head_before[15];
    memcpy(head_before, b_head->params[0]->data, sizeof(head_before));

    char *report = NULL;
    size_t report_size = 0;
    FILE *f = open_memstream(&report, &report_size);
    mtl_snapshot_match m = {0};
    CHECK_OK(mtl_snapshot_load_weights(r, b, f, &m, &err), &err);
    fclose(f);
    CHECK_INT(m.copied, 2);     /* trunk weight and bias */
    CHECK_INT(m.mismatched, 2); /* head is 5x3 here, 2x3 in the file */
    CHECK_INT(m.missing, 2);    /* extra is new */
    CHECK_INT(m.unused, 2);     /* old_head is gone */
    CHECK_MSG(report && strstr(report, "copied    trunk/0 (3x4)"), "report: %s", report);
    CHECK_MSG(report && strstr(report, "mismatch  head/0: 5x3 in the net, 2x3 in the file"), "report: %s", report);
    CHECK_MSG(report && strstr(report, "missing   extra/0 (2x3)"), "report: %s", report);
    CHECK_MSG(report && strstr(report, "unused    old_head/1 (2)"), "report: %s", report);
    CHECK_MSG(report && strstr(report, "2 copied, 2 missing, 2 shape mismatches, 2 unused"), "report: %s", report);
    free(report);

    mtl_layer *a_trunk = a->layers[mtl_net_layer_index(a, "trunk")];
    mtl_layer *b_trunk = b->layers[mtl_net_layer_index(b, "trunk")];
    CHECK(same_bits(a_trunk->params[0]->data, b_trunk->params[0]->data, 12));
    CHECK(same_bits(a_trunk->params[1]->data, b_trunk->params[1]->data, 3));
    CHECK(same_bits(head_before, b_head->params[0]->data, 15)); /* kept its own initial values */

    /* exact restore (resume) refuses a different net, naming what differs */
    CHECK_FAILS(mtl_snapshot_restore_params(r, b, &err), &err, MTL_ERR_CONFIG, "head/0");
    /* and restores the same net (other seed, so other initial values) bit for bit */
    CHECK_OK(mtl_snapshot_restore_params(r, a2, &err), &err);
    CHECK(same_bits(a->param_data, a2->param_data, a->n_param_values));

    /* a file with nothing in common is an error, not a silent no-op */
    mtl_snapshot_array only = {.name = "unrelated/0", .ndim = 1, .shape = {1}, .count = 1, .data = p1};
    mtl_snapshot other = {.n_params = 1, .params = &only};
    CHECK_OK(mtl_snapshot_write(tmp_path("other.mtlsnap"), &other, &err), &err);
    mtl_snapshot *ro = NULL;
    CHECK_OK(mtl_snapshot_read(tmp_path("other.mtlsnap"), &ro, &err), &err);
    if (ro) {
        CHECK_FAILS(mtl_snapshot_load_weights(ro, b, NULL, NULL, &err), &err, MTL_ERR_NOT_FOUND, "right file");
        mtl_snapshot_free(ro);
    }
    mtl_snapshot_free(r);
done:
    mtl_net_free(a);
    mtl_net_free(a2);
    mtl_net_free(b);
}

int main(void)
{
    make_tmp_dir();
    test_round_trip();
    test_refusals();
    test_load_weights();
    remove_tmp_dir();
    return check_finish();
}
