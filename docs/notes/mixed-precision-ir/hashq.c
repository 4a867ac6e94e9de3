#include <math.h>
#include <stdint.h>
#include <stdio.h>
static uint64_t mix64(uint64_t z) { z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull; z = (z ^ (z >> 27)) * 0x94d049bb133111ebull; return z ^ (z >> 31); }
static uint32_t lowbias32(uint32_t x) { x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16; return x; }
static uint32_t triple32(uint32_t x) { x ^= x >> 17; x *= 0xed5ad4bbu; x ^= x >> 11; x *= 0xac4c1b51u; x ^= x >> 15; x *= 0x31848babu; x ^= x >> 14; return x; }
static uint32_t fmix32(uint32_t h) { h ^= h >> 16; h *= 0x85ebca6bu; h ^= h >> 13; h *= 0xc2b2ae35u; h ^= h >> 16; return h; }
static uint32_t v_a(uint32_t i, uint32_t k) { return lowbias32(i ^ k); }
static uint32_t v_b(uint32_t i, uint32_t k) { return lowbias32(i * 0x9E3779B9u + k); }
static uint32_t v_c(uint32_t i, uint32_t k) { return triple32(i ^ k); }
static uint32_t v_d(uint32_t i, uint32_t k) { return fmix32(i ^ k); }
static uint32_t v_e(uint32_t i, uint32_t k) { return lowbias32((i ^ k) * 0x9E3779B9u + k); }
static uint32_t v_f(uint32_t i, uint32_t k) { return lowbias32(lowbias32(i) ^ k); }
typedef uint32_t (*H)(uint32_t, uint32_t);
int main(void)
{
    H hs[] = {v_a, v_b, v_c, v_d, v_e, v_f}; const char *nm[] = {"lowbias32(i^k)", "lowbias32(i*phi+k)", "triple32(i^k)", "fmix32(i^k)", "lowbias32((i^k)*phi+k)", "lowbias32(lowbias32(i)^k)"};
    for (int h = 0; h < 6; h++) {
        double worst[2] = {0, 0};
        for (int t = 0; t < 64; t++) {
            uint32_t key = (uint32_t)(mix64(t * 0x9e3779b97f4a7c15ull + 7) >> 32);
            long bins[2][256] = {{0}}; long n = 1 << 22;
            for (long i = 0; i < n; i++) { uint32_t r = hs[h]((uint32_t)i, key) >> 16; bins[0][r >> 8]++; bins[1][r & 255]++; }
            for (int w = 0; w < 2; w++) { double chi = 0, e = n / 256.0; for (int b = 0; b < 256; b++) chi += (bins[w][b] - e) * (bins[w][b] - e) / e; if (chi > worst[w]) worst[w] = chi; }
        }
        printf("%-28s worst chi2 over 64 keys: top byte %.1f, low byte %.1f\n", nm[h], worst[0], worst[1]);
    }
}
