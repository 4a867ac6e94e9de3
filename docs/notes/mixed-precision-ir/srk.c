#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
static uint64_t mix64(uint64_t z) { z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull; z = (z ^ (z >> 27)) * 0x94d049bb133111ebull; return z ^ (z >> 31); }
static uint32_t key_of(uint64_t seed, uint64_t step, uint64_t tensor)
{ return (uint32_t)(mix64(mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ step) ^ tensor) >> 32); }
static uint32_t lowbias32(uint32_t x) { x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16; return x; }
int main(int argc, char **argv)
{
    uint32_t k = atoi(argv[1]), L = atoi(argv[2]); long steps = atol(argv[3]), t0 = argc > 4 ? atol(argv[4]) : 0; long up = 0;
    for (long t = t0; t < t0 + steps; t++) up += (L + (lowbias32(k * 0x9E3779B9u + key_of(7, t, 3)) >> 16)) >= 65536;
    double p = L / 65536.0; printf("k=%u L=%u steps=%ld: z=%.2f\n", k, L, steps, (up - p * steps) / sqrt(steps * p * (1 - p)));
}
