/* A small, fast, serialisable random generator (xoshiro128+ seeded by splitmix64). Its whole state
 * is four words, so snapshots store it and a resumed run draws the same numbers. */
#ifndef MTL_CORE_RNG_H
#define MTL_CORE_RNG_H

#include <stdint.h>

typedef struct mtl_rng {
    uint32_t s[4];
} mtl_rng;

void mtl_rng_seed(mtl_rng *rng, uint64_t seed);
uint32_t mtl_rng_u32(mtl_rng *rng);
/* Uniform in [0, 1). */
float mtl_rng_uniform(mtl_rng *rng);
/* Uniform in [lo, hi). */
float mtl_rng_range(mtl_rng *rng, float lo, float hi);
/* Standard normal scaled: mean + std * N(0, 1). */
float mtl_rng_gaussian(mtl_rng *rng, float mean, float std);
/* Uniform integer in [0, n). */
uint32_t mtl_rng_below(mtl_rng *rng, uint32_t n);

#endif
