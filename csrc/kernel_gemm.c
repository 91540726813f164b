/* kernel_gemm.c: AVX-512 builds of array.c's fp32 and int16-pair GEMM kernels (ACS_FAST_FP32,
 * ACS_FAST_INT_WRAP / INT_SAT), on the same decoded operands: blocks of ACS_FX_MR A rows against
 * one or two of array.c's B panels of ACS_FX_NR columns a pass (one zmm per row and panel; with
 * 32 registers two panels' accumulators and totals fit, and each broadcast of A feeds both).
 * fp32: each output's products go in k order into a chain from +0 per tile, and the tile sums
 * join the total in order: the same fused roundings as array.c's kernels and the general path.
 * Integer: pair sums modulo 2^32 by vpdpwssd (AVX-512 VNNI), which wraps like pmaddwd + add.
 * The results go straight to the output matrix (binary64 with NaN made canonical, or int64
 * wrapped to the register's width), as array.c stores its kernels' blocks. */
#include <math.h>
#include <string.h>
#include "internal.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

#define GM_MR ACS_FX_MR
#define GM_NR ACS_FX_NR

/* Whether the CPU runs this file's code: which 0 the fp32 kernel, 1 the int16 one (VNNI), 2 the
 * epilogue (DQ, VL). */
int acs_gemm_avx512(int which)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && (which != 1 || __builtin_cpu_supports("avx512vnni"))
        && (which != 2 || (__builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")));
}

/* The mask of the first n of 16 lanes, and of 8-lane halves. */
static inline __mmask16 lanes16(int n) { return (__mmask16)(n >= 16 ? 0xFFFF : (1u << (n > 0 ? n : 0)) - 1); }

static inline __attribute__((always_inline, target("avx512f")))
void store_f64(double *dst, __m512 v, int nc)
{
    const __m512d nan = _mm512_set1_pd(NAN);
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    lo = _mm512_mask_mov_pd(lo, _mm512_cmp_pd_mask(lo, lo, _CMP_UNORD_Q), nan);   /* canonical NaN */
    hi = _mm512_mask_mov_pd(hi, _mm512_cmp_pd_mask(hi, hi, _CMP_UNORD_Q), nan);
    __mmask16 m = lanes16(nc);
    _mm512_mask_storeu_pd(dst, (__mmask8)m, lo);
    _mm512_mask_storeu_pd(dst + 8, (__mmask8)(m >> 8), hi);
}

static inline __attribute__((always_inline, target("avx512f")))
void fp32_pass(const float *const arows[GM_MR], const float *panel, int64_t pstride, int np, int64_t k,
               int64_t tile, int mr, int nc, double *out, int64_t ldo)
{
    __m512 total[GM_MR][2], acc[GM_MR][2];
    for (int r = 0; r < GM_MR; r++) total[r][0] = total[r][1] = _mm512_setzero_ps();
    for (int64_t t0 = 0; t0 < k; t0 += tile) {
        int64_t t1 = t0 + tile < k ? t0 + tile : k;
        for (int r = 0; r < GM_MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        for (int64_t kk = t0; kk < t1; kk++) {
            __m512 b0 = _mm512_loadu_ps(panel + kk * GM_NR);
            __m512 b1 = np == 2 ? _mm512_loadu_ps(panel + pstride + kk * GM_NR) : b0;
            _Pragma("GCC unroll 4")
            for (int r = 0; r < GM_MR; r++) {
                __m512 av = _mm512_set1_ps(arows[r][kk]);
                acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                if (np == 2) acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            }
        }
        for (int r = 0; r < GM_MR; r++) {
            total[r][0] = _mm512_add_ps(total[r][0], acc[r][0]);
            if (np == 2) total[r][1] = _mm512_add_ps(total[r][1], acc[r][1]);
        }
    }
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < np; c++) store_f64(out + r * ldo + c * GM_NR, total[r][c], nc - c * GM_NR);
}

/* Rows arows[0..MR) (only the first mr stored) against np panels, the second pstride floats on. */
__attribute__((target("avx512f")))
void acs_fp32_block_avx512(const float *const arows[GM_MR], const float *panel, int64_t pstride, int np, int64_t k,
                           int64_t tile, int mr, int nc, double *out, int64_t ldo)
{
    if (np == 2) fp32_pass(arows, panel, pstride, 2, k, tile, mr, nc, out, ldo);
    else fp32_pass(arows, panel, pstride, 1, k, tile, mr, nc, out, ldo);
}

static inline __attribute__((always_inline, target("avx512f,avx512vnni")))
void int16_pass(const int16_t *const arows[GM_MR], const int16_t *panel, int64_t pstride, int np, int64_t pairs,
                int sh, int mr, int nc, int64_t *out, int64_t ldo)
{
    __m512i acc[GM_MR][2];
    for (int r = 0; r < GM_MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
    for (int64_t q = 0; q < pairs; q++) {
        __m512i b0 = _mm512_loadu_si512(panel + q * 2 * GM_NR);
        __m512i b1 = np == 2 ? _mm512_loadu_si512(panel + pstride + q * 2 * GM_NR) : b0;
        _Pragma("GCC unroll 4")
        for (int r = 0; r < GM_MR; r++) {
            int32_t pair;
            memcpy(&pair, arows[r] + 2 * q, sizeof pair);
            __m512i av = _mm512_set1_epi32(pair);
            acc[r][0] = _mm512_dpwssd_epi32(acc[r][0], av, b0);
            if (np == 2) acc[r][1] = _mm512_dpwssd_epi32(acc[r][1], av, b1);
        }
    }
    __m128i s = _mm_cvtsi32_si128(sh);
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < np; c++) {   /* sign-extend, then wrap to the register: (x << sh) >> sh */
            __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc[r][c]));
            __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc[r][c], 1));
            lo = _mm512_sra_epi64(_mm512_sll_epi64(lo, s), s);
            hi = _mm512_sra_epi64(_mm512_sll_epi64(hi, s), s);
            __mmask16 m = lanes16(nc - c * GM_NR);
            _mm512_mask_storeu_epi64(out + r * ldo + c * GM_NR, (__mmask8)m, lo);
            _mm512_mask_storeu_epi64(out + r * ldo + c * GM_NR + 8, (__mmask8)(m >> 8), hi);
        }
}

/* int16 pairs as array.c's int16_block; outputs wrapped to 64 - sh bits. */
__attribute__((target("avx512f,avx512vnni")))
void acs_int16_block_vnni(const int16_t *const arows[GM_MR], const int16_t *panel, int64_t pstride, int np,
                          int64_t pairs, int sh, int mr, int nc, int64_t *out, int64_t ldo)
{
    if (np == 2) int16_pass(arows, panel, pstride, 2, pairs, sh, mr, nc, out, ldo);
    else int16_pass(arows, panel, pstride, 1, pairs, sh, mr, nc, out, ldo);
}

/* array.c's epilogue fast case on outputs j0.. of one row, 8 at a time: an accumulator value of
 * at most 24 significant bits (integers: 29) times the fp32 scale fp32(sa * sb[j]) is exact in binary64, one
 * conversion rounds it (rne), then the fp32 add of the bias.  Stops at the first group with a
 * lane outside that case, or whose product is a NaN (its payload is left to array.c's own add);
 * returns where it stopped. */
__attribute__((target("avx512f,avx512dq,avx512vl")))
int64_t acs_epilogue_avx512(const double *acc, const int64_t *acc_int, float sa, const float *sb, int64_t sb_stride,
                            const float *bias, double *out, int64_t j0, int64_t n)
{
    const __m512d sad = _mm512_set1_pd((double)sa);
    const __m512i big = _mm512_set1_epi64(1LL << 53), nbig = _mm512_set1_epi64(-(1LL << 53));
    int64_t j = j0;
    for (; j < n; j += 8) {
        __mmask8 m = (__mmask8)(n - j >= 8 ? 0xFF : (1u << (n - j)) - 1), ok = m;
        __m256 sbv = sb_stride ? _mm256_maskz_loadu_ps(m, sb + j) : _mm256_set1_ps(sb[0]);
        __m512d s = _mm512_cvtps_pd(_mm512_cvtpd_ps(_mm512_mul_pd(sad, _mm512_cvtps_pd(sbv))));
        __m512d x;
        if (acc_int) {
            __m512i v = _mm512_maskz_loadu_epi64(m, acc_int + j);
            ok &= _mm512_cmplt_epi64_mask(v, big) & _mm512_cmpgt_epi64_mask(v, nbig);
            x = _mm512_cvtepi64_pd(v);
            ok &= _mm512_testn_epi64_mask(_mm512_castpd_si512(x), _mm512_set1_epi64(0xFFFFFF));
        } else {
            x = _mm512_maskz_loadu_pd(m, acc + j);
            ok &= _mm512_cmp_pd_mask(_mm512_cvtps_pd(_mm512_cvtpd_ps(x)), x, _CMP_EQ_OQ);
        }
        __m512d p = _mm512_mul_pd(x, s);
        ok &= _mm512_cmp_pd_mask(p, p, _CMP_ORD_Q);
        if (ok != m) break;
        __m256 y = _mm512_cvtpd_ps(p);
        if (bias) y = _mm256_add_ps(y, _mm256_maskz_loadu_ps(m, bias + j));
        _mm512_mask_storeu_pd(out + j, m, _mm512_cvtps_pd(y));
    }
    return j < n ? j : n;
}
#endif
