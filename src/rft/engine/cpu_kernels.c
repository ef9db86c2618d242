/* Fused CPU kernels for the fast decoder's bf16 decode step (see cpu_kernels.py).

   Between the four weight products of a layer, a decode step at batch 16 runs ~50 small PyTorch ops
   (norms, rotary embedding, KV-cache writes, attention, SiLU), each paying ~5-15 us of dispatch for
   microseconds of work: at batch 16 that glue cost as much as the weight products themselves. These
   functions do that work in three calls per layer. The weight products stay in oneDNN.

   Conventions: bf16 tensors are uint16_t (the top half of an IEEE float32); everything is computed in
   float32 and rounded to bf16 (round to nearest even) only where the result is stored as bf16. The residual
   stream is float32. Every row (sequence position) is computed by the same code independently of how many
   rows a call has, so a call on m rows gives bit for bit the results of m one-row calls (the decoder's
   multi-token `verify` relies on it). No global state, no libm calls in hot loops; attention's work items run on the process's OpenMP
   threads when built with OpenMP (loaded after torch, the library binds to torch's libgomp, so no second pool). */

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define LANES 16 /* partial sums kept apart so loops vectorise without reassociation flags */

static inline float bf2f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16; /* round to nearest even */
    return (uint16_t)(nan ? ((u >> 16) | 0x40u) : r);
}

/* exp for x <= 88 (inputs below -87 give ~1e-38, not 0). Cody-Waite range reduction and the Cephes
   polynomial: within 2 ulp of expf over the range; branch-free so loops over it vectorise. */
static inline float fexp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, 4);
    return p * s;
}

/* Sum of LANES partial sums, pairwise (a fixed tree: short dependency chain, same order every call). */
static inline float reduce_lanes(float *acc) {
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

static inline float dot_f(const float *a, const float *b, int64_t n) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += a[i + l] * b[i + l];
    for (int l = 0; i < n; i++, l++) acc[l] += a[i] * b[i];
    return reduce_lanes(acc);
}

/* 16-lane float vectors (GCC/Clang vector extensions: AVX-512 registers where the CPU has them, two
   AVX2 halves otherwise). Used for attention when the head dimension is a multiple of 16. */
typedef float v16f __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

static inline v16f ld_bf16x16(const uint16_t *p) {
    v16h h;
    memcpy(&h, p, sizeof h);
    v16u u = __builtin_convertvector(h, v16u) << 16;
    v16f f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#if defined(__clang__)
#define SHUF16(v, ...) __builtin_shufflevector(v, v, __VA_ARGS__)
#else
#define SHUF16(v, ...) __builtin_shuffle(v, (v16i){__VA_ARGS__})
#endif

static inline float hsum16(v16f v) { /* fixed pairwise tree */
    v16f t = v + SHUF16(v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    t = t + SHUF16(t, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3);
    t = t + SHUF16(t, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1);
    t = t + SHUF16(t, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0);
    return t[0];
}

/* x [rows, E] float32 residual stream. If y is not NULL, x += y (bf16 [rows, E]) first. Then
   out [rows, E] = bf16(w * x * rsqrt(mean(x^2) + eps)), the Llama RMSNorm. */
void rft_add_rmsnorm(float *x, const uint16_t *y, const uint16_t *w, uint16_t *out, int64_t rows, int64_t E,
                     float eps) {
    for (int64_t r = 0; r < rows; r++) {
        float *xr = x + r * E;
        if (y) {
            const uint16_t *yr = y + r * E;
            for (int64_t i = 0; i < E; i++) xr[i] += bf2f(yr[i]);
        }
        float ss = dot_f(xr, xr, E);
        float inv = 1.0f / sqrtf(ss / (float)E + eps);
        uint16_t *o = out + r * E;
        for (int64_t i = 0; i < E; i++) o[i] = f2bf(bf2f(w[i]) * (xr[i] * inv));
    }
}

/* gu [rows, 2I] bf16 (gate | up) -> out [rows, I] bf16 = silu(gate) * up. */
void rft_silu_mul(const uint16_t *gu, uint16_t *out, int64_t rows, int64_t I) {
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *g = gu + r * 2 * I, *u = g + I;
        uint16_t *o = out + r * I;
        for (int64_t i = 0; i < I; i++) {
            float a = bf2f(g[i]);
            o[i] = f2bf(a / (1.0f + fexp(-a)) * bf2f(u[i]));
        }
    }
}

/* Rotary embedding (rotate-half form, as Llama): y = x * cos + rotate_half(x) * sin, rotate_half(x) =
   [-x2, x1]. x bf16 [D], cos/sin float32 [D]; y float32 [D]. */
static inline void rope_f(const uint16_t *x, const float *c, const float *s, float *y, int64_t D) {
    int64_t h = D / 2;
    for (int64_t d = 0; d < h; d++) y[d] = bf2f(x[d]) * c[d] - bf2f(x[d + h]) * s[d];
    for (int64_t d = h; d < D; d++) y[d] = bf2f(x[d]) * c[d] + bf2f(x[d - h]) * s[d];
}

/* One query (row r, new token j) for the G query heads of kv head g: scores against the valid slots among
   [0, n), softmax, weighted sum of values -> o [G, D] bf16. ws: per-thread float workspace. */
static void attend(const uint16_t *src, const float *c, const float *s, const uint16_t *kb, const uint16_t *vb,
                   const uint8_t *ok, int64_t n, int64_t g, int64_t G, int64_t D, float scale, uint16_t *o,
                   float *ws) {
    float *q = ws;          /* [G, D] rotated, scaled queries (64-byte aligned) */
    float *acc = q + G * D; /* [G, D] weighted value sums (64-byte aligned when D % 16 == 0) */
    float *kv = acc + G * D; /* [D] one key or value in float32 */
    float *sc = kv + D;      /* [G, n] scores, then probabilities */
    for (int64_t e = 0; e < G; e++) {
        rope_f(src + (g * G + e) * D, c, s, q + e * D, D);
        for (int64_t d = 0; d < D; d++) q[e * D + d] *= scale;
    }
    int any = 0;
    if (D % 16 == 0) {
        const int64_t DC = D / 16;
        const v16f *qv = (const v16f *)q;
        for (int64_t p = 0; p < n; p++) {
            if (!ok[p]) continue;
            any = 1;
            const uint16_t *kp = kb + p * D;
            for (int64_t e = 0; e < G; e++) {
                v16f a = {0};
                for (int64_t cc = 0; cc < DC; cc++) a += qv[e * DC + cc] * ld_bf16x16(kp + 16 * cc);
                sc[e * n + p] = hsum16(a);
            }
        }
    } else {
        for (int64_t p = 0; p < n; p++) {
            if (!ok[p]) continue;
            any = 1;
            const uint16_t *kp = kb + p * D;
            for (int64_t d = 0; d < D; d++) kv[d] = bf2f(kp[d]);
            for (int64_t e = 0; e < G; e++) sc[e * n + p] = dot_f(q + e * D, kv, D);
        }
    }
    if (!any) {
        memset(o, 0, (size_t)(G * D) * sizeof(uint16_t));
        return;
    }
    for (int64_t e = 0; e < G; e++) { /* softmax over the valid slots */
        float *se = sc + e * n, mx = -INFINITY;
        for (int64_t p = 0; p < n; p++)
            if (ok[p] && se[p] > mx) mx = se[p];
        for (int64_t p = 0; p < n; p++) se[p] = ok[p] ? fexp(se[p] - mx) : 0.0f;
        float part[LANES] = {0};
        int64_t p = 0;
        for (; p + LANES <= n; p += LANES)
            for (int l = 0; l < LANES; l++) part[l] += se[p + l];
        for (int l = 0; p < n; p++, l++) part[l] += se[p];
        float inv = 1.0f / reduce_lanes(part);
        for (p = 0; p < n; p++) se[p] *= inv;
    }
    memset(acc, 0, (size_t)(G * D) * sizeof(float));
    if (D % 16 == 0) {
        const int64_t DC = D / 16;
        v16f *av = (v16f *)acc;
        for (int64_t p = 0; p < n; p++) {
            if (!ok[p]) continue;
            const uint16_t *vp = vb + p * D;
            for (int64_t cc = 0; cc < DC; cc++) {
                v16f v = ld_bf16x16(vp + 16 * cc);
                for (int64_t e = 0; e < G; e++) av[e * DC + cc] += sc[e * n + p] * v;
            }
        }
    } else {
        for (int64_t p = 0; p < n; p++) {
            if (!ok[p]) continue;
            const uint16_t *vp = vb + p * D;
            for (int64_t d = 0; d < D; d++) kv[d] = bf2f(vp[d]);
            for (int64_t e = 0; e < G; e++) {
                float w = sc[e * n + p];
                float *a = acc + e * D;
                for (int64_t d = 0; d < D; d++) a[d] += w * kv[d];
            }
        }
    }
    for (int64_t i = 0; i < G * D; i++) o[i] = f2bf(acc[i]);
}

/* Per-thread workspace of rft_attention, in floats (a multiple of 16, so slices stay 64-byte aligned). */
int64_t rft_attention_workspace(int64_t H, int64_t K, int64_t D, int64_t S) {
    int64_t G = H / K, n = 2 * G * D + D + G * S;
    return (n + 15) / 16 * 16;
}

/* Attention for m new tokens per row, against a per-layer KV cache.

   qkv [b, m, (H + 2K) * D] bf16: the fused q/k/v projection of the new tokens.
   cos, sin [b, m, D] float32: rotary tables at the new tokens' positions.
   kc, vc: this layer's cache, bf16, row r / kv head g / slot s / dim d at [r * cache_row + g * Tmax * D +
     s * D + d]. The new tokens' K (rotated) and V are written at slots [t, t + m).
   valid [b, valid_row] bytes: slot s of row r holds a real token (the caller marks [t, t + m) valid).
   Query j of row r attends to the valid slots among [0, t + j] (causal; left padding is invalid), with the
   scores scaled by `scale`; GQA: query head h uses kv head h / (H / K).
   out [b, m, H * D] bf16. A query with no valid slot gets zeros.
   scratch: n_ws slices of rft_attention_workspace(H, K, D, t + m) floats, 64-byte aligned; the (row, token,
   kv head) work items are spread over up to n_ws OpenMP threads (the process's runtime: torch's). */
void rft_attention(const uint16_t *qkv, const float *cos_, const float *sin_, uint16_t *kc, uint16_t *vc,
                   int64_t cache_row, int64_t Tmax, const uint8_t *valid, int64_t valid_row, int64_t b, int64_t m,
                   int64_t t, int64_t H, int64_t K, int64_t D, float scale, uint16_t *out, float *scratch,
                   int64_t n_ws) {
    const int64_t G = H / K, QKV = (H + 2 * K) * D, ws = rft_attention_workspace(H, K, D, t + m);
    /* write the new tokens' rotated keys and values into the cache */
    for (int64_t r = 0; r < b; r++)
        for (int64_t j = 0; j < m; j++) {
            const uint16_t *src = qkv + (r * m + j) * QKV;
            const float *c = cos_ + (r * m + j) * D, *s = sin_ + (r * m + j) * D;
            float *tmp = scratch;
            for (int64_t g = 0; g < K; g++) {
                uint16_t *kd = kc + r * cache_row + g * Tmax * D + (t + j) * D;
                uint16_t *vd = vc + r * cache_row + g * Tmax * D + (t + j) * D;
                rope_f(src + (H + g) * D, c, s, tmp, D);
                for (int64_t d = 0; d < D; d++) kd[d] = f2bf(tmp[d]);
                memcpy(vd, src + (H + K + g) * D, (size_t)D * sizeof(uint16_t));
            }
        }
    const int64_t items = b * m * K;
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
    if (nt > n_ws) nt = (int)n_ws;
    if (items * (t + m) < 256) nt = 1; /* too little work to wake a second thread */
#endif
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t w = 0; w < items; w++) {
        int64_t r = w / (m * K), j = (w / K) % m, g = w % K;
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        const int64_t x = r * m + j;
        attend(qkv + x * QKV, cos_ + x * D, sin_ + x * D, kc + r * cache_row + g * Tmax * D,
               vc + r * cache_row + g * Tmax * D, valid + r * valid_row, t + j + 1, g, G, D, scale,
               out + x * H * D + g * G * D, scratch + tid * ws);
    }
}

/* ---- bf16 weight products for small row counts (AVX512-BF16) -------------------------------------------

   y [M, N] = x [M, K] @ W^T (+ bias), W [N, K] bf16 pre-packed by rft_pack_vnni into blocks of 16 output
   columns x pairs of k ([N/16][K/2][16][2]), the layout VDPBF16PS consumes. Each block of 16 columns keeps
   up to 16 rows' accumulators in registers and streams its weights once per 16 rows, so at decode sizes
   (M <= 16) the weights are read exactly once, sequentially; blocks are split over the OpenMP threads.
   Every output row is computed by the same instruction sequence whatever M is (row-invariant by
   construction), which the decoder's multi-token verify relies on. Accumulation is float32; bf16 outputs
   are rounded to nearest even. */

int rft_has_gemm(void) {
#if defined(__AVX512BF16__) && defined(__AVX512F__)
    return 1;
#else
    return 0;
#endif
}

/* W [N, K] bf16 -> P [N/16][K/2][16][2]. Needs N % 16 == 0 and K % 2 == 0. */
void rft_pack_vnni(const uint16_t *W, uint16_t *P, int64_t N, int64_t K) {
    const int64_t NB = N / 16, KP = K / 2;
#pragma omp parallel for schedule(static)
    for (int64_t nb = 0; nb < NB; nb++)
        for (int64_t c = 0; c < 16; c++) {
            const uint16_t *w = W + (nb * 16 + c) * K;
            uint16_t *p = P + nb * KP * 32 + c * 2;
            for (int64_t kp = 0; kp < KP; kp++) {
                p[kp * 32] = w[2 * kp];
                p[kp * 32 + 1] = w[2 * kp + 1];
            }
        }
}

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#ifndef PFH
#define PFH _MM_HINT_T1 /* into L2, 4 KB ahead: measured best of T0/T1/T2 x 0.5-8 KB on Zen 4 (1.5x vs none) */
#endif
#ifndef PF
#define PF 4096 /* software prefetch distance in bytes along the packed weights */
#endif

static inline __attribute__((always_inline)) void gemm_block(int MR, const uint16_t *x, int64_t ldx,
                                                             const uint16_t *pw, int64_t KP, const float *bias,
                                                             void *y, int64_t ldy, int out_f32) {
    __m512 acc[16];
#pragma GCC unroll 16
    for (int m = 0; m < MR; m++) acc[m] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < KP; kp++) {
        __m512bh w = (__m512bh)_mm512_loadu_si512((const void *)(pw + kp * 32));
        if (PF) _mm_prefetch((const char *)(pw + kp * 32) + PF, PFH);
#pragma GCC unroll 16
        for (int m = 0; m < MR; m++) {
            int32_t xv;
            memcpy(&xv, x + m * ldx + 2 * kp, 4);
            acc[m] = _mm512_dpbf16_ps(acc[m], (__m512bh)_mm512_set1_epi32(xv), w);
        }
    }
    __m512 b = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int m = 0; m < MR; m++) {
        __m512 v = bias ? _mm512_add_ps(acc[m], b) : acc[m];
        if (out_f32)
            _mm512_storeu_ps((float *)y + m * ldy, v);
        else
            _mm256_storeu_si256((__m256i *)((uint16_t *)y + m * ldy), (__m256i)_mm512_cvtneps_pbh(v));
    }
}

#define GEMM_CASE(R) \
    case R: gemm_block(R, xr, K, pw, KP, bb, yr, N, out_f32); break;

void rft_gemm_bf16(const uint16_t *x, int64_t M, int64_t K, const uint16_t *P, int64_t N, const float *bias,
                   void *y, int out_f32) {
    const int64_t NB = N / 16, KP = K / 2;
    const size_t osz = out_f32 ? 4 : 2;
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
    if (NB < 2 * nt) nt = 1;
#endif
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t nb = 0; nb < NB; nb++) {
        const uint16_t *pw = P + nb * KP * 32;
        const float *bb = bias ? bias + nb * 16 : NULL;
        for (int64_t m0 = 0; m0 < M; m0 += 16) {
            const uint16_t *xr = x + m0 * K;
            void *yr = (char *)y + (m0 * N + nb * 16) * osz;
            switch (M - m0 >= 16 ? 16 : (int)(M - m0)) {
                GEMM_CASE(1) GEMM_CASE(2) GEMM_CASE(3) GEMM_CASE(4) GEMM_CASE(5) GEMM_CASE(6) GEMM_CASE(7)
                GEMM_CASE(8) GEMM_CASE(9) GEMM_CASE(10) GEMM_CASE(11) GEMM_CASE(12) GEMM_CASE(13)
                GEMM_CASE(14) GEMM_CASE(15) GEMM_CASE(16)
            }
        }
    }
}
#else
void rft_gemm_bf16(const uint16_t *x, int64_t M, int64_t K, const uint16_t *P, int64_t N, const float *bias,
                   void *y, int out_f32) {
    (void)x, (void)M, (void)K, (void)P, (void)N, (void)bias, (void)y, (void)out_f32;
}
#endif
