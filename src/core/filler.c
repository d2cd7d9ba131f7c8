/* Parameter fillers with Caffe's definitions, so weights initialise as users expect from Caffe. */
#include "core/filler.h"

#include <math.h>
#include <string.h>

static const char *const filler_types[] = {"constant", "uniform", "gaussian", "xavier", "msra",
                                           "positive_unitball", "bilinear"};
enum { FILLER_CONSTANT, FILLER_UNIFORM, FILLER_GAUSSIAN, FILLER_XAVIER, FILLER_MSRA,
       FILLER_POSITIVE_UNITBALL, FILLER_BILINEAR, FILLER_COUNT };
_Static_assert(sizeof(filler_types) / sizeof(filler_types[0]) == FILLER_COUNT, "filler names");

static const char *const variance_norms[] = {"FAN_IN", "FAN_OUT", "AVERAGE"};

typedef struct filler_spec {
    int kind;
    double value, lo, hi, mean, std;
    int64_t sparse;
    int norm;
} filler_spec;

/* Reads every field of a filler message (so none is reported unknown) and checks the type. */
static mtl_status read_filler(mtl_cfg_node *filler, filler_spec *f, mtl_error *err)
{
    const char *type = "constant";
    MTL_TRY(mtl_cfg_string(filler, "type", "constant", &type, err));
    MTL_TRY(mtl_cfg_float(filler, "value", 0.0, &f->value, err));
    MTL_TRY(mtl_cfg_float(filler, "min", 0.0, &f->lo, err));
    MTL_TRY(mtl_cfg_float(filler, "max", 1.0, &f->hi, err));
    MTL_TRY(mtl_cfg_float(filler, "mean", 0.0, &f->mean, err));
    MTL_TRY(mtl_cfg_float(filler, "std", 1.0, &f->std, err));
    MTL_TRY(mtl_cfg_int(filler, "sparse", -1, &f->sparse, err));
    MTL_TRY(mtl_cfg_enum(filler, "variance_norm", variance_norms, 3, 0, &f->norm, err));
    f->kind = -1;
    for (int i = 0; i < FILLER_COUNT; i++)
        if (strcmp(type, filler_types[i]) == 0)
            f->kind = i;
    if (f->kind < 0) {
        char hint[256];
        int n = mtl_cfg_suggest(type, filler_types, FILLER_COUNT, 3, hint, sizeof(hint));
        return mtl_cfg_fail(mtl_cfg_field(filler, "type", 0), err, MTL_ERR_CONFIG,
                            "unknown filler type '%s'; %s%s", type, n ? "did you mean " : "valid types: ",
                            n ? hint : "constant, uniform, gaussian, xavier, msra, positive_unitball, bilinear");
    }
    return MTL_OK;
}

mtl_status mtl_filler_check(mtl_cfg_node *filler, mtl_error *err)
{
    filler_spec f;
    return read_filler(filler, &f, err);
}

mtl_status mtl_filler_fill(mtl_cfg_node *filler, mtl_tensor *t, mtl_rng *rng, mtl_error *err)
{
    filler_spec f;
    MTL_TRY(read_filler(filler, &f, err));
    double value = f.value, lo = f.lo, hi = f.hi, mean = f.mean, std = f.std;
    int64_t sparse = f.sparse;
    int norm = f.norm, kind = f.kind;
    float *data = t->data;
    int64_t count = t->count;
    int64_t fan_in = t->ndim > 0 && t->shape[0] ? count / t->shape[0] : count;
    int64_t fan_out = t->ndim > 1 && t->shape[1] ? count / t->shape[1] : count;
    double fan = norm == 0 ? (double)fan_in : norm == 1 ? (double)fan_out : (fan_in + fan_out) / 2.0;
    if (fan <= 0)
        fan = 1;

    switch (kind) {
    case FILLER_CONSTANT:
        for (int64_t i = 0; i < count; i++)
            data[i] = (float)value;
        break;
    case FILLER_UNIFORM:
        for (int64_t i = 0; i < count; i++)
            data[i] = mtl_rng_range(rng, (float)lo, (float)hi);
        break;
    case FILLER_GAUSSIAN: {
        /* sparse: keep each weight with probability sparse / fan-in, as Caffe does */
        double keep = sparse >= 0 ? (double)sparse / (double)(t->ndim > 1 ? t->shape[1] : 1) : 1.0;
        for (int64_t i = 0; i < count; i++) {
            data[i] = mtl_rng_gaussian(rng, (float)mean, (float)std);
            if (sparse >= 0 && mtl_rng_uniform(rng) >= keep)
                data[i] = 0.0f;
        }
        break;
    }
    case FILLER_XAVIER: {
        float scale = (float)sqrt(3.0 / fan);
        for (int64_t i = 0; i < count; i++)
            data[i] = mtl_rng_range(rng, -scale, scale);
        break;
    }
    case FILLER_MSRA: {
        float s = (float)sqrt(2.0 / fan);
        for (int64_t i = 0; i < count; i++)
            data[i] = mtl_rng_gaussian(rng, 0.0f, s);
        break;
    }
    case FILLER_POSITIVE_UNITBALL: {
        int64_t rows = t->ndim > 0 && t->shape[0] ? t->shape[0] : 1, dim = count / rows;
        for (int64_t r = 0; r < rows; r++) {
            double sum = 0;
            for (int64_t i = 0; i < dim; i++)
                sum += data[r * dim + i] = mtl_rng_uniform(rng);
            for (int64_t i = 0; i < dim; i++)
                data[r * dim + i] = (float)(data[r * dim + i] / (sum > 0 ? sum : 1));
        }
        break;
    }
    case FILLER_BILINEAR: {
        /* upsampling kernels for deconvolution: needs a square kernel in the last two axes */
        if (t->ndim < 2 || t->shape[t->ndim - 1] != t->shape[t->ndim - 2])
            return mtl_cfg_fail(filler, err, MTL_ERR_CONFIG, "bilinear filler needs a square kernel");
        int k = t->shape[t->ndim - 1];
        float f = ceilf(k / 2.0f);
        float c = (2 * f - 1 - fmodf(f, 2.0f)) / (2.0f * f);
        for (int64_t i = 0; i < count; i++) {
            float x = (float)(i % k), y = (float)((i / k) % k);
            data[i] = (1 - fabsf(x / f - c)) * (1 - fabsf(y / f - c));
        }
        break;
    }
    default:
        break;
    }
    return MTL_OK;
}
