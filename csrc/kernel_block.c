/* kernel_block.c: BlockFMA (tensor-core) blocks on AVX-512 for array.c: each A row's 16
 * outputs in the float32 / int32 lanes of one register, where every product is exact in float32
 * and every block sum fits int32.  Per block of n products and the accumulator (accumulate.c's
 * block_step):
 *   E, the largest alignment exponent: the products' as saturating int16 sums of the decoded
 *     operand exponents (a zero operand's -30000 keeps its products below everything), the
 *     accumulator's from its float32 exponent field, clamped below at the grid's emin;
 *   each term a*b (exact) times 2^(F-E) truncated toward zero by the hardware (cvttps2dq) and
 *     summed in int32 lanes: terms lie below 2^(F+2), and F + 2 + log2(n + 1) <= 30;
 *   the sum S, worth S * 2^(E-F), rounded onto the grid in integers: from |S|'s leading bit
 *     (lzcnt) the grid's spacing is 2^sh units (sh <= 31), |S|'s low sh bits go by rne, rtz or
 *     rup, and the result (at most 24 significant bits) is converted exactly to float32 and
 *     scaled by 2^(E-F) (scalef), then checked against the grid's largest value; binary32's
 *     own grid under rtz or rup takes the conversion and scalef with that rounding instead.
 * Tile sums join the buffer in binary64: the sum is exact where TwoSum's error is zero, and is
 * rounded onto the grid by scalef / roundscale / scalef.  Lanes that end non-finite, whose join
 * is inexact, or whose nonzero block sum rounds to -0 (the general step then follows the signs
 * of zero products) are marked for array.c to recompute by the general step. */
#include <math.h>
#include "internal.h"

#define BK_MR ACS_BK_MR
#define BK_NR ACS_BK_NR

/* Over a format's finite nonzero codes: the most significant bits of an odd significand, the
 * lowest set bit's exponent, the bound 2^top above every magnitude, and the alignment
 * exponents' range. */
typedef struct { int sig; int64_t lsb, top, bmin, bmax; } bk_range;

static bk_range bk_range_of(const acs_operand *t, int bits)
{
    bk_range r = { 0, INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN };
    for (uint64_t c = 0; c < (1ULL << bits); c++) {
        if (t[c].cls != ACS_FINITE) continue;
        int tz = __builtin_ctzll(t[c].sig), len = 64 - __builtin_clzll(t[c].sig);
        if (len - tz > r.sig) r.sig = len - tz;
        if (t[c].exp + tz < r.lsb) r.lsb = t[c].exp + tz;
        if (t[c].exp + len > r.top) r.top = t[c].exp + len;
        if (t[c].bexp < r.bmin) r.bmin = t[c].bexp;
        if (t[c].bexp > r.bmax) r.bmax = t[c].bexp;
    }
    return r;
}

/* The kernel applies to an ACS_FAST_BLOCK64 MAC: a CPU with AVX-512 F/BW/DQ/VL/CD, an
 * accumulator grid inside float32 (at most 23 fraction bits, emin >= -126), block sums below
 * 2^30, products exact in float32, scale factors 2^(F-E) normal in float32 whenever a product
 * is nonzero, and rounding shifts below 32 (E is at least the smallest product exponent or emin). */
int acs_block_avx512_ok(const acs_mac_ctx *ctx)
{
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    const acs_acc *acc = &ctx->mac->acc;
    const acs_grid *g = &acc->grid;
    int bits = 0, f = acc->align_bits;
    while ((1 << bits) < acc->terms + 1) bits++;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512dq")
        || !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512cd"))
        return 0;
    if (acc->terms > 64 || f + 2 + bits > 30 || g->man_bits > 23 || g->emin < -126 || g->emin - g->man_bits < -149
        || g->emax > 127)
        return 0;
    bk_range a = bk_range_of(ctx->ta, ctx->mac->a.bits), b = bk_range_of(ctx->tb, ctx->mac->b.bits);
    if (a.sig == 0 || b.sig == 0) return 1;   /* every product is zero */
    int64_t lo = a.bmin + b.bmin, hi = a.bmax + b.bmax > g->emax ? a.bmax + b.bmax : g->emax;
    int64_t e_low = lo < g->emin ? lo : g->emin;
    return a.sig + b.sig <= 24 && a.lsb + b.lsb >= -149 && a.top + b.top <= 128 && lo >= f - 126 && hi <= f + 126
        && g->emin - g->man_bits - (e_low - f) <= 31;
#else
    (void)ctx;
    return 0;
#endif
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define BK_TARGET __attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512cd")))
#define BK_INLINE static inline __attribute__((always_inline)) BK_TARGET
#define BK_ROWS _Pragma("GCC unroll 4")   /* rows unrolled: their values stay in registers */

typedef struct {
    int f, emin, man;
    int b32;                         /* the grid is binary32's and the rounding directed (rtz, rup) */
    float max, over_pos, over_neg;   /* what an overflow becomes, by sign (magnitudes) */
} bk_grid;

static bk_grid bk_grid_of(const acs_acc *acc)
{
    const acs_grid *g = &acc->grid;
    int sat = acc->overflow == ACS_OVF_SATURATE, m = acc->rounding;
    float max = (float)ldexp((double)g->max_sig, g->emax - g->man_bits);
    bk_grid k = { acc->align_bits, g->emin, g->man_bits,
                  g->man_bits == 23 && g->emin == -126 && g->emax == 127 && g->max_sig == (1 << 24) - 1 && m != ACS_RNE,
                  max, sat || m == ACS_RTZ ? max : INFINITY, sat || m == ACS_RTZ || m == ACS_RUP ? max : INFINITY };
    return k;
}

/* S * 2^d rounded onto the grid (see the top); marks lanes that end non-finite or -0.  On
 * binary32's own grid the conversion of S and the scaling round by the mode themselves (a
 * directed rounding twice, onto nested grids, is that rounding once). */
BK_INLINE __m512 bk_round_block(const bk_grid *k, int mode, __m512i s, __m512i d, __mmask16 *bad)
{
    const int rc = (mode == ACS_RTZ ? _MM_FROUND_TO_ZERO : _MM_FROUND_TO_POS_INF) | _MM_FROUND_NO_EXC;
    __m512 v;
    if (mode != ACS_RNE && k->b32) {
        v = _mm512_scalef_round_ps(_mm512_cvt_roundepi32_ps(s, rc), _mm512_cvtepi32_ps(d), rc);
    } else {
        const __m512i one = _mm512_set1_epi32(1);
        __m512i a = _mm512_abs_epi32(s);
        __m512i sh = _mm512_max_epi32(_mm512_sub_epi32(_mm512_set1_epi32(31 - k->man), _mm512_lzcnt_epi32(a)),
                                      _mm512_sub_epi32(_mm512_set1_epi32(k->emin - k->man), d));
        sh = _mm512_max_epi32(sh, _mm512_setzero_si512());
        __m512i x = a, shr = sh;
        if (mode == ACS_RUP) {   /* positive sums up to the next multiple of 2^sh */
            __m512i bias = _mm512_sub_epi32(_mm512_sllv_epi32(one, sh), one);
            x = _mm512_mask_add_epi32(a, _mm512_cmpgt_epi32_mask(s, _mm512_setzero_si512()), a, bias);
        } else if (mode == ACS_RNE) {   /* (2|S| + 2^sh - 1 + lsb) >> (sh + 1): sh = 0 needs no case; below 2^32 */
            __m512i lsb = _mm512_and_si512(_mm512_srlv_epi32(a, sh), one);
            x = _mm512_add_epi32(_mm512_add_epi32(a, a), _mm512_add_epi32(_mm512_sub_epi32(_mm512_sllv_epi32(one, sh), one), lsb));
            shr = _mm512_add_epi32(sh, one);
        }
        __m512i r = _mm512_sllv_epi32(_mm512_srlv_epi32(x, shr), sh);
        v = _mm512_or_ps(_mm512_cvtepu32_ps(r), _mm512_castsi512_ps(_mm512_and_si512(s, _mm512_set1_epi32(INT32_MIN))));
        v = _mm512_scalef_ps(v, _mm512_cvtepi32_ps(d));   /* exact, or infinite past binary32 */
    }
    __mmask16 over = _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(k->max), _CMP_GT_OQ);
    if (over) {
        __m512 ov = _mm512_mask_blend_ps(_mm512_movepi32_mask(s), _mm512_set1_ps(k->over_pos), _mm512_set1_ps(k->over_neg));
        v = _mm512_mask_or_ps(v, over, ov, _mm512_and_ps(v, _mm512_set1_ps(-0.0f)));
    }
    *bad |= _mm512_fpclass_ps_mask(v, 0x9D);   /* NaN, infinities, -0 */
    return v;
}

/* t + p (binary64, both on the grid) rounded onto the grid; marks lanes where binary64 could
 * not hold the sum exactly. */
BK_INLINE __m512d bk_join(const bk_grid *k, int mode, __m512d t, __m512d p, __mmask8 *bad)
{
    __m512d s = _mm512_add_pd(t, p), pv = _mm512_sub_pd(s, t);
    __m512d err = _mm512_add_pd(_mm512_sub_pd(t, _mm512_sub_pd(s, pv)), _mm512_sub_pd(p, pv));
    *bad |= _mm512_cmp_pd_mask(err, _mm512_setzero_pd(), _CMP_NEQ_UQ);
    __m512d q = _mm512_sub_pd(_mm512_set1_pd(k->man), _mm512_max_pd(_mm512_getexp_pd(s), _mm512_set1_pd(k->emin)));
    __m512d u = _mm512_scalef_pd(s, q);   /* in units of the spacing */
    u = mode == ACS_RTZ ? _mm512_roundscale_pd(u, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)
        : mode == ACS_RUP ? _mm512_roundscale_pd(u, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC)
        : _mm512_roundscale_pd(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_scalef_pd(u, _mm512_sub_pd(_mm512_setzero_pd(), q));
    __m512d sign = _mm512_set1_pd(-0.0), mag = _mm512_andnot_pd(sign, r);
    __mmask8 over = _mm512_cmp_pd_mask(mag, _mm512_set1_pd(k->max), _CMP_GT_OQ);
    __m512d ov = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(r, _mm512_setzero_pd(), _CMP_LT_OQ),
                                      _mm512_set1_pd(k->over_pos), _mm512_set1_pd(k->over_neg));
    return _mm512_mask_or_pd(r, over, ov, _mm512_and_pd(r, sign));
}

/* One block's products of MR rows into their sums (see the top). */
BK_INLINE void bk_block(const bk_grid *k, int mode, const acs_block_args *w, int64_t b0, int64_t b1,
                        __m512 part[BK_MR], __mmask16 bad[BK_MR])
{
    __m256i ex[BK_MR];
    BK_ROWS
    for (int r = 0; r < BK_MR; r++) ex[r] = _mm256_set1_epi16(INT16_MIN);
    for (int64_t kk = b0; kk < b1; kk++) {
        __m256i xb = _mm256_loadu_si256((const __m256i *)(w->xpanel + kk * BK_NR));
        BK_ROWS
        for (int r = 0; r < BK_MR; r++)
            ex[r] = _mm256_max_epi16(ex[r], _mm256_adds_epi16(xb, _mm256_set1_epi16(w->xrows[r][kk])));
    }
    __m512 up[BK_MR];
    __m512i sum[BK_MR], d[BK_MR];
    BK_ROWS
    for (int r = 0; r < BK_MR; r++) {
        __m512i e = _mm512_cvtepi16_epi32(ex[r]), ab = _mm512_castps_si512(part[r]);
        __m512i field = _mm512_srli_epi32(_mm512_slli_epi32(ab, 1), 24);
        __m512i eacc = _mm512_max_epi32(_mm512_sub_epi32(field, _mm512_set1_epi32(127)), _mm512_set1_epi32(k->emin));
        e = _mm512_mask_max_epi32(e, _mm512_test_epi32_mask(ab, _mm512_set1_epi32(INT32_MAX)), e, eacc);
        d[r] = _mm512_sub_epi32(e, _mm512_set1_epi32(k->f));
        /* 2^(F-E)'s exponent field, at least 1 (E <= F + 126); E alone too small for it: no product */
        __m512i ub = _mm512_min_epi32(_mm512_sub_epi32(_mm512_set1_epi32(127), d[r]), _mm512_set1_epi32(253));
        up[r] = _mm512_castsi512_ps(_mm512_slli_epi32(ub, 23));
        sum[r] = _mm512_cvttps_epi32(_mm512_scalef_ps(part[r], _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_setzero_si512(), d[r]))));
    }
    for (int64_t kk = b0; kk < b1; kk++) {
        __m512 b = _mm512_loadu_ps(w->panel + kk * BK_NR);
        BK_ROWS
        for (int r = 0; r < BK_MR; r++)
            sum[r] = _mm512_add_epi32(sum[r], _mm512_cvttps_epi32(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(w->arows[r][kk]), b), up[r])));
    }
    BK_ROWS
    for (int r = 0; r < BK_MR; r++) part[r] = bk_round_block(k, mode, sum[r], d[r], &bad[r]);
}

BK_INLINE void bk_body(const bk_grid *k, int mode, const acs_block_args *w, double out[BK_MR][BK_NR],
                       int64_t bad[BK_MR][BK_NR])
{
    __m512d total[BK_MR][2];
    __mmask16 marks[BK_MR];
    BK_ROWS
    for (int r = 0; r < BK_MR; r++) {
        total[r][0] = total[r][1] = _mm512_setzero_pd();
        marks[r] = 0;
    }
    for (int64_t t0 = 0; t0 < w->k; t0 += w->tile) {
        int64_t t1 = t0 + w->tile < w->k ? t0 + w->tile : w->k;
        __m512 part[BK_MR];
        BK_ROWS
        for (int r = 0; r < BK_MR; r++) part[r] = _mm512_setzero_ps();
        for (int64_t b0 = t0; b0 < t1; b0 += w->terms)
            bk_block(k, mode, w, b0, b0 + w->terms < t1 ? b0 + w->terms : t1, part, marks);
        BK_ROWS
        for (int r = 0; r < BK_MR; r++) {   /* os: one tile, the chain is the result */
            __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(part[r]));
            __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(part[r]), 1)));
            if (w->chain_only) {
                total[r][0] = lo;
                total[r][1] = hi;
            } else {
                __mmask8 m0 = 0, m1 = 0;
                total[r][0] = bk_join(k, mode, total[r][0], lo, &m0);
                total[r][1] = bk_join(k, mode, total[r][1], hi, &m1);
                marks[r] |= (__mmask16)(m0 | (m1 << 8));
            }
        }
    }
    BK_ROWS
    for (int r = 0; r < BK_MR; r++) {
        for (int h = 0; h < 2; h++) {
            _mm512_storeu_pd(out[r] + 8 * h, total[r][h]);
            __mmask8 inf = _mm512_cmp_pd_mask(_mm512_abs_pd(total[r][h]), _mm512_set1_pd(1.7976931348623157e308),
                                              _CMP_NLE_UQ);
            marks[r] |= (__mmask16)(inf << (8 * h));
        }
        for (int c = 0; c < BK_NR; c++) bad[r][c] = -(int64_t)((marks[r] >> c) & 1);
    }
}

BK_TARGET void acs_block_avx512(const acs_block_args *w, double out[BK_MR][BK_NR], int64_t bad[BK_MR][BK_NR])
{
    bk_grid k = bk_grid_of(w->acc);
    switch (w->acc->rounding) {   /* one instance per rounding mode */
    case ACS_RUP: bk_body(&k, ACS_RUP, w, out, bad); break;
    case ACS_RTZ: bk_body(&k, ACS_RTZ, w, out, bad); break;
    default: bk_body(&k, ACS_RNE, w, out, bad);
    }
}
#endif
