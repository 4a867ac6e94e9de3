/* harness.c - correctness against c10's conversions and throughput of the
 * kernels in kernels.ll (compiled for this host's CPU or x86-64-v3).
 * usage: ./harness [N]   (default 16M elements) */
#define _GNU_SOURCE
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void k2(void *out, const void *in, int64_t n);
typedef void k2k(void *out, const void *in, int64_t n, uint32_t key);
typedef void k2k64(void *out, const void *in, int64_t n, uint64_t key);
typedef void kadam(void *p, void *g, void *m, void *v, int64_t n, float w, float c2, float b2,
                   float bc2s, float eps, float nss);
typedef void kadam_sr(void *p, void *g, void *m, void *v, int64_t n, float w, float c2, float b2,
                      float bc2s, float eps, float nss, uint32_t kp, uint32_t km, uint32_t kv);
k2 bf16_load_int, bf16_load_fpext, bf16_store_int_c10, bf16_store_int_vecnan, bf16_store_fptrunc,
    f16_load_fpext, f16_load_intrinsic, f16_store_fptrunc, f16_store_intrinsic, f16_store_soft,
    f16_load_fpext_forcevf, f16_store_fptrunc_forcevf, bf16_load_fpext_forcevf,
    bf16_store_fptrunc_forcevf;
k2k bf16_sr_lowbias32, hash_lowbias32, bf16_sr_weyl_lowbias32, hash_weyl_lowbias32, bf16_sr_philox, hash_philox;
k2k64 bf16_sr_splitmix64, hash_splitmix64;
kadam adam_f32, adam_bf16pg_f32state, adam_bf16_all_rne, adam_f16pg_f32state,
    adam_f16pg_f32state_forcevf;
kadam_sr adam_bf16_all_sr;

static float f_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t u_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* libgcc 12 has no __truncsfbf2: this stands in for it so the libcall form links
 * (result in the low 16 bits of xmm0). Same rounding as c10, NaN -> quiet. */
float __truncsfbf2(float x)
{
    uint32_t u = u_of(x), r;
    if (isnan(x)) r = (u >> 16) | 0x40;
    else r = (u + 0x7fff + ((u >> 16) & 1)) >> 16;
    return f_of(r);
}

/* c10::detail::round_to_nearest_even (scalar) */
static uint16_t c10_bf16(float f)
{
    if (isnan(f)) return 0x7fc0;
    uint32_t u = u_of(f);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
static uint16_t c10_f16(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
/* c10's software fp16_ieee_from_fp32_value (no F16C): NaN -> sign | 0x7e00 */
static uint16_t c10_f16_soft(float f) { return isnan(f) ? (uint16_t)((u_of(f) >> 16 & 0x8000) | 0x7e00) : c10_f16(f); }

/* the hashes, as in gen.py */
static uint32_t lowbias32(uint32_t x)
{
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16; return x;
}
static uint32_t splitmix(uint64_t i, uint64_t key)
{
    uint64_t z = (i + key) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull; z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31; return (uint32_t)(z >> 32);
}
static uint32_t philox(uint32_t c0, uint32_t k)
{
    uint32_t c1 = 0;
    for (int r = 0; r < 10; r++) {
        uint64_t p = (uint64_t)c0 * 0xD256D193u;
        uint32_t hi = (uint32_t)(p >> 32), lo = (uint32_t)p;
        c0 = hi ^ k ^ c1; c1 = lo; k += 0x9E3779B9u;
    }
    return c0;
}
static uint16_t sr_ref(float f, uint32_t r32)
{
    if (isnan(f)) return 0x7fc0;
    return (uint16_t)((u_of(f) + (r32 >> 16)) >> 16);
}

static double now(void)
{
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static uint64_t rng = 0x1234567;
static uint64_t xr(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

/* test floats: random bits of every class, plus ties for bf16 and f16 */
static float test_value(int64_t i)
{
    uint32_t r = (uint32_t)xr();
    switch (i % 16) {
    case 0: return f_of(r);                                        /* any bits: NaN payloads, both signs */
    case 1: return f_of((r & 0x807fffffu));                        /* subnormal or zero */
    case 2: return f_of((r & 0xffff0000u) | 0x8000u);              /* exact bf16 tie */
    case 3: return f_of((r & 0x80000000u) | 0x7f800000u | ((r & 1) ? 0x400000u | (r & 0x3fffff) : 0)); /* inf or NaN */
    case 4: { uint32_t e = 103 + r % 40; return f_of((r & 0x80000000u) | (e << 23) | ((r >> 9) & 0x7fe000u) | 0x1000u); } /* f16 tie */
    case 5: return f_of((r & 0x80000000u) | 0x7f7f8000u | (r & 0x7fff)); /* near FLT_MAX: rounds to inf */
    case 6: return f_of((r & 0x8000ffffu) | (113u << 23));         /* near f16 subnormal boundary */
    default: return (float)((int32_t)r) * 1e-9f;                    /* ordinary */
    }
}

static int64_t N, INNER = 1;
static void *A, *Bv, *C, *Dv;
static double best(void (*fn)(void *), void *arg, int reps)
{
    double b = 1e9;
    for (int r = 0; r < reps; r++) { double t = now(); fn(arg); t = now() - t; if (t < b) b = t; }
    return b;
}
static void report(const char *name, double t, double bytes)
{
    t /= INNER;
    printf("  %-30s %7.3f ns/elem  %6.1f GB/s\n", name, 1e9 * t / N, bytes * N / t / 1e9);
}
#define TIME2(fn, bytes) do { double b = 1e9; for (int r = 0; r < 5; r++) { double t = now(); for (int64_t q = 0; q < INNER; q++) fn(C, A, N); t = now() - t; if (t < b) b = t; } report(#fn, b, bytes); } while (0)
#define TIME2K(fn, key, bytes) do { double b = 1e9; for (int r = 0; r < 5; r++) { double t = now(); for (int64_t q = 0; q < INNER; q++) fn(C, A, N, key); t = now() - t; if (t < b) b = t; } report(#fn, b, bytes); } while (0)

static int64_t mism16(const uint16_t *got, uint16_t (*ref)(float), const float *in, int64_t n, int64_t *cls)
{
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (got[i] != ref(in[i])) { bad++; cls[i % 16]++; }
    return bad;
}

int main(int argc, char **argv)
{
    N = argc > 1 ? atoll(argv[1]) : (1 << 24);
    INNER = argc > 2 ? atoll(argv[2]) : 1;   /* repeat each timed call: small N stays in cache */
    A = aligned_alloc(64, N * 4); Bv = aligned_alloc(64, N * 4); C = aligned_alloc(64, N * 4); Dv = aligned_alloc(64, N * 4);
    float *in = A; uint16_t *o16 = C; float *of = C;
    for (int64_t i = 0; i < N; i++) in[i] = test_value(i);
    int64_t cls[16];

    printf("correctness on %lld values (NaN/Inf/subnormal/ties included):\n", (long long)N);
#define CHECK16(fn, ref) do { memset(cls, 0, sizeof cls); fn(C, A, N); int64_t b = mism16(o16, ref, in, N, cls); \
    printf("  %-28s %lld mismatches", #fn, (long long)b); if (b) { printf(" (by class:"); for (int k = 0; k < 8; k++) if (cls[k]) printf(" %d:%lld", k, (long long)cls[k]); printf(")"); } printf("\n"); } while (0)
    CHECK16(bf16_store_int_c10, c10_bf16);
    CHECK16(bf16_store_fptrunc, c10_bf16);
    CHECK16(f16_store_fptrunc, c10_f16);
    CHECK16(f16_store_fptrunc_forcevf, c10_f16);
    CHECK16(f16_store_intrinsic, c10_f16);
    CHECK16(f16_store_soft, c10_f16_soft);
    { /* vector NaN variant: 0xffff for every NaN */
        bf16_store_int_vecnan(C, A, N); int64_t b = 0;
        for (int64_t i = 0; i < N; i++) if (o16[i] != (isnan(in[i]) ? 0xffff : c10_bf16(in[i]))) b++;
        printf("  %-28s %lld mismatches (against at::vec's NaN -> 0xffff)\n", "bf16_store_int_vecnan", (long long)b);
    }
    { /* loads: every 16-bit pattern */
        uint16_t *h = Bv; int64_t b1 = 0, b2 = 0, b3 = 0, b4 = 0, M = 65536;
        for (int64_t i = 0; i < M; i++) h[i] = (uint16_t)i;
        bf16_load_int(C, Bv, M); for (int64_t i = 0; i < M; i++) b1 += u_of(of[i]) != (uint32_t)i << 16;
        bf16_load_fpext(C, Bv, M); for (int64_t i = 0; i < M; i++) b2 += u_of(of[i]) != (uint32_t)i << 16;
        f16_load_fpext(C, Bv, M); for (int64_t i = 0; i < M; i++) b3 += u_of(of[i]) != u_of(_cvtsh_ss((uint16_t)i));
        f16_load_intrinsic(C, Bv, M); for (int64_t i = 0; i < M; i++) b4 += u_of(of[i]) != u_of(_cvtsh_ss((uint16_t)i));
        printf("  loads over all 65536 patterns: bf16 int %lld, bf16 fpext %lld, f16 fpext %lld, f16 intrinsic %lld mismatches\n",
               (long long)b1, (long long)b2, (long long)b3, (long long)b4);
    }
    { /* stochastic rounding: same bits as the C reference */
        uint32_t key = 0xC0FFEE11u; int64_t b = 0;
        bf16_sr_lowbias32(C, A, N, key);
        for (int64_t i = 0; i < N; i++) b += o16[i] != sr_ref(in[i], lowbias32((uint32_t)i ^ key));
        printf("  bf16_sr_lowbias32 vs C reference: %lld mismatches\n", (long long)b);
        b = 0; bf16_sr_weyl_lowbias32(C, A, N, key);
        for (int64_t i = 0; i < N; i++) b += o16[i] != sr_ref(in[i], lowbias32((uint32_t)i * 0x9E3779B9u + key));
        printf("  bf16_sr_weyl_lowbias32 vs C reference: %lld mismatches\n", (long long)b);
        b = 0; bf16_sr_splitmix64(C, A, N, 0x123456789abcdefull);
        for (int64_t i = 0; i < N; i++) b += o16[i] != sr_ref(in[i], splitmix((uint64_t)i, 0x123456789abcdefull));
        printf("  bf16_sr_splitmix64 vs C reference: %lld mismatches\n", (long long)b);
        b = 0; bf16_sr_philox(C, A, N, key);
        for (int64_t i = 0; i < N; i++) b += o16[i] != sr_ref(in[i], philox((uint32_t)i, key));
        printf("  bf16_sr_philox vs C reference: %lld mismatches\n", (long long)b);
    }

    /* throughput: ordinary inputs (no subnormals, which slow float ops down) */
    for (int64_t i = 0; i < N; i++) in[i] = (float)((int32_t)xr()) * 1e-9f;
    printf("throughput, %lld elements, 1 thread (best of 5):\n", (long long)N);
    { double b = 1e9; for (int r = 0; r < 5; r++) { double t = now(); for (int64_t q = 0; q < INNER; q++) memcpy(C, A, N * 4); t = now() - t; if (t < b) b = t; } report("memcpy f32 (read+write)", b, 8); }
    bf16_store_int_c10(Bv, A, N);
    TIME2(bf16_load_int, 6); TIME2(bf16_load_fpext, 6); TIME2(bf16_load_fpext_forcevf, 6);
    TIME2(bf16_store_int_c10, 6); TIME2(bf16_store_int_vecnan, 6); TIME2(bf16_store_fptrunc, 6);
    TIME2(f16_load_fpext, 6); TIME2(f16_load_fpext_forcevf, 6); TIME2(f16_load_intrinsic, 6);
    TIME2(f16_store_fptrunc, 6); TIME2(f16_store_fptrunc_forcevf, 6); TIME2(f16_store_intrinsic, 6);
    TIME2(f16_store_soft, 6);
    TIME2K(hash_lowbias32, 77u, 4); TIME2K(hash_weyl_lowbias32, 77u, 4); TIME2K(hash_philox, 77u, 4); TIME2K(hash_splitmix64, 77ull, 4);
    TIME2K(bf16_sr_lowbias32, 77u, 6); TIME2K(bf16_sr_weyl_lowbias32, 77u, 6); TIME2K(bf16_sr_philox, 77u, 6); TIME2K(bf16_sr_splitmix64, 77ull, 6);
    { /* Adam, one step: bytes moved per element in the name */
        float *p = A, *g = Bv, *m = C, *v = Dv;
        for (int64_t i = 0; i < N; i++) { p[i] = 0.1f; g[i] = 0.01f; m[i] = 0; v[i] = 0; }
#define TA(fn, bytes) do { double b = 1e9; for (int r = 0; r < 5; r++) { double t = now(); for (int64_t q = 0; q < INNER; q++) fn(A, Bv, C, Dv, N, 0.1f, 0.001f, 0.999f, 0.03f, 1e-8f, -0.01f); t = now() - t; if (t < b) b = t; } report(#fn, b, bytes); } while (0)
        TA(adam_f32, 28); TA(adam_bf16pg_f32state, 20);
        uint16_t *ph = A, *gh = Bv, *mh = C, *vh = Dv;
        for (int64_t i = 0; i < N; i++) { ph[i] = 0x3dcc; gh[i] = 0x3c23; mh[i] = 0; vh[i] = 0; }
        TA(adam_bf16_all_rne, 12);
        { double b = 1e9; for (int r = 0; r < 5; r++) { double t = now(); for (int64_t q = 0; q < INNER; q++) adam_bf16_all_sr(A, Bv, C, Dv, N, 0.1f, 0.001f, 0.999f, 0.03f, 1e-8f, -0.01f, 1, 2, 3); t = now() - t; if (t < b) b = t; } report("adam_bf16_all_sr", b, 12); }
        for (int64_t i = 0; i < N; i++) { ph[i] = 0x2e66; gh[i] = 0x211f; }
        for (int64_t i = 0; i < N; i++) { m[i] = 0; v[i] = 0; }
        TA(adam_f16pg_f32state, 20); TA(adam_f16pg_f32state_forcevf, 20);
    }
    return 0;
}
