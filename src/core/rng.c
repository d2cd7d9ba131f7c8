/* xoshiro128+ with splitmix64 seeding; Gaussian by Box-Muller (no cached second value, so the
 * state stays four words). */
#include "core/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void mtl_rng_seed(mtl_rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    uint64_t a = splitmix64(&x), b = splitmix64(&x);
    rng->s[0] = (uint32_t)a;
    rng->s[1] = (uint32_t)(a >> 32);
    rng->s[2] = (uint32_t)b;
    rng->s[3] = (uint32_t)(b >> 32);
    if (!(rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3]))
        rng->s[0] = 1;
}

static uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

uint32_t mtl_rng_u32(mtl_rng *rng)
{
    uint32_t *s = rng->s;
    uint32_t result = s[0] + s[3];
    uint32_t t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
}

float mtl_rng_uniform(mtl_rng *rng) { return (float)(mtl_rng_u32(rng) >> 8) * (1.0f / 16777216.0f); }

float mtl_rng_range(mtl_rng *rng, float lo, float hi) { return lo + (hi - lo) * mtl_rng_uniform(rng); }

float mtl_rng_gaussian(mtl_rng *rng, float mean, float std)
{
    double u1 = ((double)(mtl_rng_u32(rng) >> 8) + 1.0) / 16777217.0; /* (0, 1]: log is finite */
    double u2 = (double)(mtl_rng_u32(rng) >> 8) / 16777216.0;
    double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
    return mean + std * (float)z;
}

uint32_t mtl_rng_below(mtl_rng *rng, uint32_t n)
{
    return n ? (uint32_t)(((uint64_t)mtl_rng_u32(rng) * n) >> 32) : 0;
}
