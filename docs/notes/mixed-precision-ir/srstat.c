/* srstat.c - statistics of stochastic rounding to bf16 with
 *   key  = splitmix64 finalizer of (seed, step, tensor), 32 bits (per tensor and step, uniform)
 *   r    = lowbias32((uint32)index * 0x9E3779B9 + key) >> 16        (16 random bits per element)
 *   bf16 = (bits(x) + r) >> 16                         (NaN kept apart)
 * 1. unbiasedness: mean over steps of SR(x) vs x, for many x;
 * 2. uniformity of r over elements (chi-square, 256 bins) for several keys;
 * 3. independence: correlation of r between neighbouring elements, and of the same
 *    element across consecutive steps. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
static uint64_t mix64(uint64_t z) { z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull; z = (z ^ (z >> 27)) * 0x94d049bb133111ebull; return z ^ (z >> 31); }
static uint32_t key_of(uint64_t seed, uint64_t step, uint64_t tensor)
{ return (uint32_t)(mix64(mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ step) ^ tensor) >> 32); }
static uint32_t lowbias32(uint32_t x) { x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16; return x; }
static float f_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t u_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static uint32_t H(uint32_t i, uint32_t key) { return lowbias32(i * 0x9E3779B9u + key); }
static float sr(float x, uint32_t r32) { return f_of(((u_of(x) + (r32 >> 16)) >> 16) << 16); }
int main(void)
{
    /* 1. unbiasedness */
    double worst = 0; int nx = 2000, steps = 1 << 16;
    uint64_t s = 12345;
    for (int k = 0; k < nx; k++) {
        s = mix64(s + k); float x = f_of(0x3f800000u | (uint32_t)(s & 0x7fffff)) * ((k & 1) ? -1.f : 1.f) * (float)ldexp(1, (int)(s >> 40) % 40 - 20);
        double sum = 0; for (int t = 0; t < steps; t++) sum += sr(x, H((uint32_t)k, key_of(7, t, 3)));
        double mean = sum / steps, ulp = ldexp(1, ilogb(x) - 7);
        double p = (u_of(x) & 0xffff) / 65536.0;               /* chance of rounding away from zero */
        double z = (mean - x) / (ulp * sqrt(p * (1 - p) / steps) + 1e-300);  /* in standard errors */
        if (fabs(z) > worst) worst = fabs(z);
    }
    printf("unbiasedness: %d values x %d steps: worst |mean - x| = %.2f standard errors "
           "(the largest of %d normal draws is ~3.5)\n", nx, steps, worst, nx);
    /* 2. uniformity of the 16 random bits over elements, per (step, tensor) key */
    double worstchi = 0;
    for (int t = 0; t < 64; t++) {
        uint32_t key = key_of(7, t, t % 5); long bins[256] = {0}; long n = 1 << 22;
        for (long i = 0; i < n; i++) bins[(H((uint32_t)i, key) >> 16) >> 8]++;
        double chi = 0, e = n / 256.0; for (int b = 0; b < 256; b++) chi += (bins[b] - e) * (bins[b] - e) / e;
        if (chi > worstchi) worstchi = chi;
    }
    printf("uniformity: 64 keys x 4M elements, 256 bins: worst chi-square %.1f (255 dof; 99.9%% point 330.5)\n", worstchi);
    /* 3. correlations */
    long n = 1 << 22; double sa = 0, sb = 0, sab = 0, saa = 0, sbb = 0; uint32_t k0 = key_of(7, 0, 0), k1 = key_of(7, 1, 0);
    for (long i = 0; i < n; i++) { double a = H((uint32_t)i, k0) >> 16, b = H((uint32_t)(i + 1), k0) >> 16; sa += a; sb += b; sab += a * b; saa += a * a; sbb += b * b; }
    double c1 = (sab / n - sa / n * sb / n) / sqrt((saa / n - sa * sa / n / n) * (sbb / n - sb * sb / n / n));
    sa = sb = sab = saa = sbb = 0;
    for (long i = 0; i < n; i++) { double a = H((uint32_t)i, k0) >> 16, b = H((uint32_t)i, k1) >> 16; sa += a; sb += b; sab += a * b; saa += a * a; sbb += b * b; }
    double c2 = (sab / n - sa / n * sb / n) / sqrt((saa / n - sa * sa / n / n) * (sbb / n - sb * sb / n / n));
    printf("correlation of r: neighbouring elements %.5f, same element next step %.5f (4M pairs; 1/sqrt(n) = %.5f)\n", c1, c2, 1 / sqrt((double)n));
    return 0;
}
