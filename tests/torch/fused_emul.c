/*
 * fused_emul.c - the arithmetic of torch 2.13's fused=True CPU optimizer
 * kernels on bfloat16 and float16 tensors, written out in plain C, one
 * element at a time.  check_fused_emul.py compares it with torch bit for bit
 * (random and special values, and every fused fixture in tests/fixtures/mixed).
 *
 * What it mirrors: ATen's FusedAdamKernel.cpp, FusedSGDKernel.cpp and
 * FusedAdagradKernel.cpp as compiled into libtorch_cpu.so 2.13.0 for the AVX2
 * capability (AVX-512 machines run the same code: these kernels are
 * registered with REGISTER_DISPATCH, which leaves the AVX512 slot empty, and
 * DispatchStub falls back to AVX2).  GCC contracted some a*b+c into FMAs
 * there, and not the same ones in the vectorized loop and in the scalar tail
 * loop, so each kernel has two paths:
 *
 *   W > 0: elements [0, n - n % W) take the vectorized path, the rest the
 *          scalar tail (what torch does; W = 16 for 16-bit types);
 *   W = 0: every element takes the scalar-tail path;
 *   W < 0: every element takes the vectorized path.
 *
 * Build: cc -O2 -ffp-contract=off -mfma -mf16c -shared -fPIC (fmaf is always
 * an explicit single-rounding fma; nothing else may be contracted).
 * dt: 1 = bfloat16, 2 = float16 (raw 16-bit arrays).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static float f_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t u_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* c10::BFloat16 -> float and at::vec's cvtbf16_fp32: the bits shifted up */
static float bf16_to_f32(uint16_t h) { return f_of((uint32_t)h << 16); }

/* c10::detail::round_to_nearest_even without the NaN case */
static uint16_t bf16_rne(float f)
{
    uint32_t u = u_of(f);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static float ld(int dt, const void *a, int64_t i)
{
    uint16_t h = ((const uint16_t *)a)[i];
    return dt == 1 ? bf16_to_f32(h) : _cvtsh_ss(h); /* both exact */
}

/* A float stored into a 16-bit tensor.  bfloat16: round to nearest even; a
 * NaN becomes 0xffff on the vectorized path (at::vec cvtfp32_bf16 blends in
 * 0xffff) and 0x7fc0 on the scalar path (c10::BFloat16(float)).  float16:
 * vcvtps2ph with round-to-nearest-even on both paths (the scalar path's
 * c10::Half uses _cvtss_sh when built with F16C, which the AVX2 build is);
 * a NaN keeps its sign and the top 10 bits of its payload, quieted. */
static void st(int dt, void *a, int64_t i, float f, int vec)
{
    uint16_t h;
    if (dt == 1)
        h = isnan(f) ? (vec ? 0xffff : 0x7fc0) : bf16_rne(f);
    else
        h = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
    ((uint16_t *)a)[i] = h;
}

/* float(scalar_t(x)) for a double x: to float, then to the 16-bit type */
static float via_scalar_t(int dt, double x)
{
    float f = (float)x;
    if (dt == 1)
        return isnan(f) ? f : bf16_to_f32(bf16_rne(f));
    return _cvtsh_ss(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

/* at::vec::maximum on AVX2: _mm256_max_ps(a, b) | cmp_unord(a, b): a NaN in
 * either operand gives the all-ones NaN 0xffffffff */
static float vec_maximum(float a, float b)
{
    if (isnan(a) || isnan(b))
        return f_of(0xffffffffu);
    return a > b ? a : b;
}

static int64_t vector_end(int64_t n, int W)
{
    return W > 0 ? n - n % W : (W < 0 ? n : 0);
}

/*
 * Adam (adamw = 0) and AdamW (adamw = 1); step is the count after this
 * step's increment (state_step.item<float>(), then double).  State has the
 * parameter's dtype; the update uses the unrounded float moments.
 */
void emu_adam(int dt, int adamw, int64_t n, void *P, void *G, void *M, void *V, void *X,
              double lr, double beta1, double beta2, double wd, double eps, int amsgrad,
              int maximize, const float *grad_scale, double step, int W)
{
    double bc1 = 1 - pow(beta1, step), bc2 = 1 - pow(beta2, step);
    double step_size = lr / bc1;
    float w = (float)(1 - beta1), c2 = (float)(1 - beta2), b2 = (float)beta2;
    float bc2_sqrt = (float)sqrt(bc2), e = (float)eps, wdf = (float)wd;
    float neg_step_size = (float)(-step_size), step_size_f = (float)step_size;
    float decay = (float)fma(-lr, wd, 1.0); /* GCC fused 1 - lr*wd (in double) */
    int64_t nv = vector_end(n, W);
    for (int64_t i = 0; i < n; i++) {
        int vec = i < nv;
        float g = ld(dt, G, i), p = ld(dt, P, i);
        if (grad_scale) {
            g = g / *grad_scale; /* a division, and the result written back */
            st(dt, G, i, g, vec);
        }
        if (maximize)
            g = -g;
        if (wd != 0) {
            if (!adamw)
                g = fmaf(p, wdf, g);
            else
                p = p * decay;
        }
        /* exp_avg.lerp_(grad, 1 - beta1) */
        float m = ld(dt, M, i), d = g - m;
        m = fabsf(w) < 0.5f ? fmaf(w, d, m) : fmaf(w - 1.0f, d, g);
        st(dt, M, i, m, vec);
        /* v * beta2 + (1 - beta2) * g * g: the two paths fused different products */
        float v = ld(dt, V, i);
        v = vec ? fmaf(c2 * g, g, v * b2) : fmaf(v, b2, (c2 * g) * g);
        st(dt, V, i, v, vec);
        float vv = v;
        if (amsgrad) {
            float x = ld(dt, X, i);
            x = vec ? vec_maximum(x, v) : (x < v ? v : x); /* std::max(x, v) */
            st(dt, X, i, x, vec);
            vv = x;
        }
        float denom = sqrtf(vv) / bc2_sqrt + e;
        p = vec ? p + (neg_step_size * m) / denom : p - (step_size_f * m) / denom;
        st(dt, P, i, p, vec);
    }
}

/*
 * SGD.  The scalar path is the intended arithmetic.  torch 2.13's vectorized
 * path for 16-bit types (pytorch#191763) divides and writes back the gradient
 * but never stores the parameter, and reads the 16-bit momentum buffer as
 * float32 (past the end of its block); emulated here as "parameter and
 * momentum buffer unchanged" (torch writes garbage into the buffer).
 */
void emu_sgd(int dt, int64_t n, void *P, void *G, void *B, double wd, double momentum,
             double lr, double dampening, int nesterov, int maximize, int first_step,
             const float *grad_scale, int W)
{
    float wdf = (float)wd, mom = (float)momentum, lrf = (float)lr;
    float one_minus_damp = (float)(1 - dampening);
    int64_t nv = vector_end(n, W);
    for (int64_t i = 0; i < n; i++) {
        int vec = i < nv;
        float g = ld(dt, G, i), p = ld(dt, P, i);
        if (grad_scale) {
            g = g / *grad_scale;
            st(dt, G, i, g, vec);
        }
        if (vec)
            continue; /* the bug: nothing else reaches memory */
        if (maximize)
            g = -g;
        if (wd != 0)
            g = fmaf(p, wdf, g);
        if (momentum != 0) {
            float b = first_step ? g : fmaf(ld(dt, B, i), mom, g * one_minus_damp);
            st(dt, B, i, b, 0);
            g = nesterov ? fmaf(b, mom, g) : b;
        }
        p = fmaf(-g, lrf, p);
        st(dt, P, i, p, 0);
    }
}

/*
 * Adagrad; step as for Adam.  The vectorized path rounds its constants (lr
 * after decay, eps, weight_decay) to the parameter's 16-bit type first
 * (fVec(scalar_t(x))); the scalar path keeps them float.
 */
void emu_adagrad(int dt, int64_t n, void *P, void *G, void *S, double lr, double lr_decay,
                 double wd, double eps, int maximize, const float *grad_scale, double step,
                 int W)
{
    double clr = lr / (1.0 + (step - 1.0) * lr_decay);
    float v_wd = via_scalar_t(dt, wd), v_eps = via_scalar_t(dt, eps), v_clr = via_scalar_t(dt, clr);
    float s_wd = (float)wd, s_eps = (float)eps, s_clr = (float)clr;
    int64_t nv = vector_end(n, W);
    for (int64_t i = 0; i < n; i++) {
        int vec = i < nv;
        float wdf = vec ? v_wd : s_wd, e = vec ? v_eps : s_eps, c = vec ? v_clr : s_clr;
        float g = ld(dt, G, i), p = ld(dt, P, i);
        if (grad_scale) {
            g = g / *grad_scale;
            st(dt, G, i, g, vec);
        }
        if (maximize)
            g = -g;
        if (wd != 0)
            g = fmaf(p, wdf, g);
        float s = fmaf(g, g, ld(dt, S, i));
        st(dt, S, i, s, vec);
        float std_ = sqrtf(s) + e;
        p = p - (c * g) / std_;
        st(dt, P, i, p, vec);
    }
}
