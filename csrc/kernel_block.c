/* kernel_block.c: BlockFMA (tensor-core) blocks on AVX-512 for array.c: each A row's 16
 * outputs in the float32 / int32 lanes of one register, where every product is exact in float32.
 * Per block of n products and the accumulator (accumulate.c's block_step):
 *   E, the largest alignment exponent: the products' as saturating int16 sums of the decoded
 *     operand exponents (a zero operand's -30000 keeps its products below everything), the
 *     accumulator's from its float32 exponent field, clamped below at the grid's emin;
 *   each term a*b (exact) times 2^(F-E) truncated toward zero by the hardware (cvttps2dq) and
 *     summed in int32 lanes: terms lie below 2^(F+2), and F + 2 + log2(n + 1) <= 30.  Wider
 *     alignments (F <= 29) sum chunks of 2^(29-F) terms in int32 lanes and the chunks in int64
 *     lanes ("wide");
 *   the sum S, worth S * 2^(E-F), rounded onto the grid in integers: from |S|'s leading bit
 *     (lzcnt) the grid's spacing is 2^sh units, |S|'s low sh bits go by the rounding mode (sr:
 *     acs_round's rule on the first 32 of them and a sticky bit, drawing acs_rand32(seed, output,
 *     block index)), and the result (at most 24 significant bits) is converted exactly to float32
 *     and scaled by 2^(E-F) (scalef), then checked against the grid's largest value; binary32's
 *     own grid under rtz, rup or rdn takes the conversion and scalef with that rounding instead.
 * Operand formats whose products leave float32 (bfloat16) are taken too: a block whose E lies
 * outside the range where the above holds marks its lanes.  Tile sums join the buffer in
 * binary64: the sum is exact where TwoSum's error is zero, and is rounded onto the grid by
 * scalef / roundscale / scalef (rna, rto, sr by hand on the integral part).  Lanes that end
 * non-finite, whose join is inexact, or whose nonzero block sum rounds to -0 (the general step
 * then follows the signs of zero products; under rdn a -0 behaves like +0 except in a block with
 * no nonzero term and a +0 accumulator, which is marked) go to array.c to recompute by the
 * general step. */
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

static int bk_sum_bits(const acs_acc *acc)
{
    int bits = 0;
    while ((1 << bits) < acc->terms + 1) bits++;
    return acc->align_bits + 2 + bits;
}

/* The kernel applies to an ACS_FAST_BLOCK64 MAC: a CPU with AVX-512 F/BW/DQ/VL/CD, an
 * accumulator grid inside float32 (at most 23 fraction bits, emin >= -126), F <= 29, and
 * products of at most 24 significant bits.  Where every product is exact in float32, every
 * scale factor 2^(F-E) normal whenever a product is nonzero, and every rounding shift below 32
 * (wide: 63), nothing more; otherwise each block's E must lie in [e_lo, e_hi], where the
 * products that reach the grid 2^(E-F) are exact in float32 (the others stay below it), none
 * overflows, and the scale factor and shift are in range. */
int acs_block_avx512_ok(const acs_mac_ctx *ctx, int *e_lo, int *e_hi)
{
    *e_lo = 1;
    *e_hi = 0;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    const acs_acc *acc = &ctx->mac->acc;
    const acs_grid *g = &acc->grid;
    int f = acc->align_bits, shmax = bk_sum_bits(acc) > 30 ? 62 : 31;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512dq")
        || !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512cd"))
        return 0;
    if (acc->terms > 64 || f > 29 || g->man_bits > 23 || g->emin < -126 || g->emin - g->man_bits < -149 || g->emax > 127)
        return 0;
    bk_range a = bk_range_of(ctx->ta, ctx->mac->a.bits), b = bk_range_of(ctx->tb, ctx->mac->b.bits);
    if (a.sig == 0 || b.sig == 0) return 1;   /* every product is zero */
    if (a.sig + b.sig > 24) return 0;
    int64_t lo = a.bmin + b.bmin, hi = a.bmax + b.bmax > g->emax ? a.bmax + b.bmax : g->emax;
    int64_t e_low = lo < g->emin ? lo : g->emin;
    if (a.lsb + b.lsb >= -149 && a.top + b.top <= 128 && lo >= f - 126 && hi <= f + 126
        && g->emin - g->man_bits - (e_low - f) <= shmax)
        return 1;
    int l0 = f - 126, l1 = f - 148 + a.sig + b.sig, l2 = f + g->emin - g->man_bits - shmax;
    *e_lo = l0 > l1 ? (l0 > l2 ? l0 : l2) : (l1 > l2 ? l1 : l2);
    *e_hi = 126;
    return 1;
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
#define BK_STEP 0xAEF17502108EF2D9ULL    /* acs_rand32's step multiplier */

typedef struct {
    int f, emin, man, chunk;         /* chunk: wide sums' terms per int32 partial sum */
    int b32;                         /* the grid is binary32's and the rounding directed (rtz, rup, rdn) */
    int e_lo, e_hi;                  /* each block's E must lie here (no check: e_lo > e_hi) */
    float max, over_pos, over_neg;   /* what an overflow becomes, by sign (magnitudes) */
} bk_grid;

static bk_grid bk_grid_of(const acs_block_args *w)
{
    const acs_acc *acc = w->acc;
    const acs_grid *g = &acc->grid;
    int sat = acc->overflow == ACS_OVF_SATURATE, m = acc->rounding;
    float max = (float)ldexp((double)g->max_sig, g->emax - g->man_bits);
    bk_grid k = { acc->align_bits, g->emin, g->man_bits, 1 << (29 - acc->align_bits),
                  g->man_bits == 23 && g->emin == -126 && g->emax == 127 && g->max_sig == (1 << 24) - 1
                      && (m == ACS_RTZ || m == ACS_RUP || m == ACS_RDN),
                  w->e_lo, w->e_hi, max,
                  sat || m == ACS_RTZ || m == ACS_RTO || m == ACS_RDN ? max : INFINITY,
                  sat || m == ACS_RTZ || m == ACS_RTO || m == ACS_RUP ? max : INFINITY };
    return k;
}

/* round.c's mix64 on 8 lanes, and acs_rand32 of 16 outputs at one step from their hash states
 * after its first two rounds (array.c's exact64_lanes). */
BK_INLINE __m512i bk_mix(__m512i z)
{
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), _mm512_set1_epi64((int64_t)0xBF58476D1CE4E5B9ULL));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), _mm512_set1_epi64((int64_t)0x94D049BB133111EBULL));
    return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

BK_INLINE __m512i bk_rand64(__m512i lane, uint64_t step)
{
    return _mm512_srli_epi64(bk_mix(_mm512_add_epi64(lane, _mm512_set1_epi64((int64_t)(step * BK_STEP)))), 32);
}

BK_INLINE __m512i bk_rand32(const __m512i lane[2], uint64_t step)
{
    __m256i lo = _mm512_cvtepi64_epi32(bk_rand64(lane[0], step)), hi = _mm512_cvtepi64_epi32(bk_rand64(lane[1], step));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* |S| (a, W-bit lanes; neg: S < 0) rounded to a multiple of 2^sh by the mode: round.c's rules
 * on kept = a >> sh and the remainder; sr's draw (below 2^32) against the remainder's first 32
 * bits, then any bits below them.  Shifts of W or more give 0 (vpsllv / vpsrlv). */
#define BK_ROUND_INT(W, MASK)                                                                               \
    BK_INLINE __m512i bk_round_int##W(int mode, __m512i a, MASK neg, __m512i sh, __m512i rand)             \
    {                                                                                                       \
        const __m512i one = _mm512_set1_epi##W(1), c32 = _mm512_set1_epi##W(32);                           \
        __m512i unit = _mm512_sllv_epi##W(one, sh), kept = _mm512_srlv_epi##W(a, sh);                      \
        __m512i rem = _mm512_andnot_si512(_mm512_sllv_epi##W(_mm512_set1_epi##W(-1), sh), a);               \
        __m512i twice = _mm512_add_epi##W(rem, rem);                                                        \
        MASK up = 0, inexact = _mm512_test_epi##W##_mask(rem, rem);                                         \
        if (mode == ACS_RNE)                                                                                \
            up = _mm512_cmpgt_epu##W##_mask(twice, unit)                                                    \
                | _mm512_mask_cmpeq_epu##W##_mask(_mm512_test_epi##W##_mask(kept, one), twice, unit);       \
        else if (mode == ACS_RNA) up = _mm512_cmpge_epu##W##_mask(twice, unit);                             \
        else if (mode == ACS_RUP) up = inexact & (MASK)~neg;                                                \
        else if (mode == ACS_RDN) up = inexact & neg;                                                       \
        else if (mode == ACS_RTO) kept = _mm512_mask_or_epi##W(kept, inexact, kept, one);                   \
        else if (mode == ACS_SR) {                                                                          \
            __m512i f32 = _mm512_or_si512(_mm512_srlv_epi##W(rem, _mm512_sub_epi##W(sh, c32)),             \
                                          _mm512_sllv_epi##W(rem, _mm512_sub_epi##W(c32, sh)));             \
            MASK rest = _mm512_test_epi##W##_mask(rem, _mm512_srlv_epi##W(_mm512_set1_epi##W(-1),         \
                                                                          _mm512_sub_epi##W(_mm512_set1_epi##W(W + 32), sh))); \
            up = _mm512_cmplt_epu##W##_mask(rand, f32) | _mm512_mask_cmpeq_epu##W##_mask(rest, rand, f32);   \
        }                                                                                                   \
        return _mm512_sllv_epi##W(_mm512_mask_add_epi##W(kept, up, kept, one), sh);                        \
    }
BK_ROUND_INT(32, __mmask16)
BK_ROUND_INT(64, __mmask8)

/* S * 2^d rounded onto the grid (see the top), S in int32 lanes.  On binary32's own grid the
 * conversion of S and the scaling round by the mode themselves (a directed rounding twice, onto
 * nested grids, is that rounding once). */
BK_INLINE __m512 bk_round32(const bk_grid *k, int mode, __m512i s, __m512i d, __m512i rand)
{
    if (k->b32 && (mode == ACS_RTZ || mode == ACS_RUP || mode == ACS_RDN)) {
        const int rc = (mode == ACS_RTZ ? _MM_FROUND_TO_ZERO : mode == ACS_RUP ? _MM_FROUND_TO_POS_INF
                        : _MM_FROUND_TO_NEG_INF) | _MM_FROUND_NO_EXC;
        return _mm512_scalef_round_ps(_mm512_cvt_roundepi32_ps(s, rc), _mm512_cvtepi32_ps(d), rc);
    }
    __m512i a = _mm512_abs_epi32(s);
    __m512i sh = _mm512_max_epi32(_mm512_sub_epi32(_mm512_set1_epi32(31 - k->man), _mm512_lzcnt_epi32(a)),
                                  _mm512_sub_epi32(_mm512_set1_epi32(k->emin - k->man), d));
    sh = _mm512_max_epi32(sh, _mm512_setzero_si512());
    __m512i r = bk_round_int32(mode, a, _mm512_movepi32_mask(s), sh, rand);
    __m512 v = _mm512_or_ps(_mm512_cvtepu32_ps(r), _mm512_castsi512_ps(_mm512_and_si512(s, _mm512_set1_epi32(INT32_MIN))));
    return _mm512_scalef_ps(v, _mm512_cvtepi32_ps(d));   /* exact, or infinite past binary32 */
}

/* The same with S in two halves of int64 lanes (wide sums). */
BK_INLINE __m512 bk_round64(const bk_grid *k, int mode, const __m512i s[2], __m512i d, __m512i rand)
{
    __m256 h[2];
    for (int i = 0; i < 2; i++) {
        __m256i di = i ? _mm512_extracti64x4_epi64(d, 1) : _mm512_castsi512_si256(d);
        __m256i ri = i ? _mm512_extracti64x4_epi64(rand, 1) : _mm512_castsi512_si256(rand);
        __m512i a = _mm512_abs_epi64(s[i]);
        __m512i sh = _mm512_max_epi64(_mm512_sub_epi64(_mm512_set1_epi64(63 - k->man), _mm512_lzcnt_epi64(a)),
                                      _mm512_sub_epi64(_mm512_set1_epi64(k->emin - k->man), _mm512_cvtepi32_epi64(di)));
        sh = _mm512_max_epi64(sh, _mm512_setzero_si512());
        h[i] = _mm512_cvtepu64_ps(bk_round_int64(mode, a, _mm512_movepi64_mask(s[i]), sh, _mm512_cvtepu32_epi64(ri)));
    }
    __m512 v = _mm512_insertf32x8(_mm512_castps256_ps512(h[0]), h[1], 1);
    __mmask16 neg = (__mmask16)(_mm512_movepi64_mask(s[0]) | (_mm512_movepi64_mask(s[1]) << 8));
    v = _mm512_mask_or_ps(v, neg, v, _mm512_set1_ps(-0.0f));
    return _mm512_scalef_ps(v, _mm512_cvtepi32_ps(d));
}

/* A rounded block result: the overflow policy by sign, rdn's -0 for a zero sum, and marks for
 * lanes that end NaN, infinite or (but under rdn) -0. */
BK_INLINE __m512 bk_settle(const bk_grid *k, int mode, __m512 v, __mmask16 zero, __mmask16 *bad)
{
    __mmask16 over = _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(k->max), _CMP_GT_OQ);
    if (over) {
        __m512 ov = _mm512_mask_blend_ps(_mm512_movepi32_mask(_mm512_castps_si512(v)), _mm512_set1_ps(k->over_pos),
                                         _mm512_set1_ps(k->over_neg));
        v = _mm512_mask_or_ps(v, over, ov, _mm512_and_ps(v, _mm512_set1_ps(-0.0f)));
    }
    if (mode == ACS_RDN) v = _mm512_mask_mov_ps(v, zero, _mm512_set1_ps(-0.0f));
    *bad |= _mm512_fpclass_ps_mask(v, mode == ACS_RDN ? 0x99 : 0x9D);   /* NaN, infinities (, -0) */
    return v;
}

/* t + p (binary64, both on the grid) rounded onto the grid; marks lanes where binary64 could
 * not hold the sum exactly.  rna, rto and sr round the magnitude in units of the spacing u by
 * hand (below 2^25: u + 1/2 and the fraction times 2^32 are exact); sr: rand, 8 draws. */
BK_INLINE __m512d bk_join(const bk_grid *k, int mode, __m512d t, __m512d p, __m512i rand, __mmask8 *bad)
{
    __m512d s = _mm512_add_pd(t, p), pv = _mm512_sub_pd(s, t);
    __m512d err = _mm512_add_pd(_mm512_sub_pd(t, _mm512_sub_pd(s, pv)), _mm512_sub_pd(p, pv));
    *bad |= _mm512_cmp_pd_mask(err, _mm512_setzero_pd(), _CMP_NEQ_UQ);
    const __m512d sign = _mm512_set1_pd(-0.0), one = _mm512_set1_pd(1.0);
    __m512d q = _mm512_sub_pd(_mm512_set1_pd(k->man), _mm512_max_pd(_mm512_getexp_pd(s), _mm512_set1_pd(k->emin)));
    __m512d u = _mm512_scalef_pd(s, q), a = _mm512_andnot_pd(sign, u), r;   /* in units of the spacing */
    if (mode == ACS_RNE) r = _mm512_roundscale_pd(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    else if (mode == ACS_RTZ) r = _mm512_roundscale_pd(u, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    else if (mode == ACS_RUP) r = _mm512_roundscale_pd(u, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    else if (mode == ACS_RDN) r = _mm512_roundscale_pd(u, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    else {
        __m512d tr = _mm512_roundscale_pd(mode == ACS_RNA ? _mm512_add_pd(a, _mm512_set1_pd(0.5)) : a,
                                          _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        if (mode == ACS_RTO) {   /* inexact and even: one up */
            __m512d h = _mm512_mul_pd(tr, _mm512_set1_pd(0.5));
            __mmask8 m = _mm512_cmp_pd_mask(tr, a, _CMP_NEQ_OQ)
                & _mm512_cmp_pd_mask(_mm512_roundscale_pd(h, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC), h, _CMP_EQ_OQ);
            tr = _mm512_mask_add_pd(tr, m, tr, one);
        } else if (mode == ACS_SR) {
            __m512d f = _mm512_mul_pd(_mm512_sub_pd(a, tr), _mm512_set1_pd(4294967296.0));
            tr = _mm512_mask_add_pd(tr, _mm512_cmp_pd_mask(_mm512_cvtepu64_pd(rand), f, _CMP_LT_OQ), tr, one);
        }
        r = _mm512_or_pd(tr, _mm512_and_pd(u, sign));
    }
    r = _mm512_scalef_pd(r, _mm512_sub_pd(_mm512_setzero_pd(), q));
    if (mode == ACS_RDN)   /* IEEE: an exact zero sum is -0 when rounding down, unless both are +0 */
        r = _mm512_mask_or_pd(r, _mm512_cmp_pd_mask(s, _mm512_setzero_pd(), _CMP_EQ_OQ), r,
                              _mm512_and_pd(_mm512_or_pd(t, p), sign));
    __m512d mag = _mm512_andnot_pd(sign, r);
    __mmask8 over = _mm512_cmp_pd_mask(mag, _mm512_set1_pd(k->max), _CMP_GT_OQ);
    __m512d ov = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(r, _mm512_setzero_pd(), _CMP_LT_OQ),
                                      _mm512_set1_pd(k->over_pos), _mm512_set1_pd(k->over_neg));
    return _mm512_mask_or_pd(r, over, ov, _mm512_and_pd(r, sign));
}

/* One block's products of MR rows into their sums (see the top); sr draws at the block's index. */
BK_INLINE void bk_block(const bk_grid *k, int mode, int wide, const acs_block_args *w, int64_t b0, int64_t b1,
                        __m512 part[BK_MR], __mmask16 bad[BK_MR], __m512i lanes[BK_MR][2])
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
    __m512i sum[BK_MR], s64[BK_MR][2], d[BK_MR];
    __mmask16 lone[BK_MR];   /* rdn: no nonzero term and a +0 accumulator */
    BK_ROWS
    for (int r = 0; r < BK_MR; r++) {
        __m512i e = _mm512_cvtepi16_epi32(ex[r]), ab = _mm512_castps_si512(part[r]);
        __m512i field = _mm512_srli_epi32(_mm512_slli_epi32(ab, 1), 24);
        __m512i eacc = _mm512_max_epi32(_mm512_sub_epi32(field, _mm512_set1_epi32(127)), _mm512_set1_epi32(k->emin));
        e = _mm512_mask_max_epi32(e, _mm512_test_epi32_mask(ab, _mm512_set1_epi32(INT32_MAX)), e, eacc);
        __mmask16 some = _mm512_cmpgt_epi32_mask(e, _mm512_set1_epi32(-20000));
        if (mode == ACS_RDN) lone[r] = _mm512_mask_testn_epi32_mask((__mmask16)~some, ab, ab);
        if (k->e_lo <= k->e_hi)
            bad[r] |= _mm512_mask_cmplt_epi32_mask(some, e, _mm512_set1_epi32(k->e_lo))
                | _mm512_mask_cmpgt_epi32_mask(some, e, _mm512_set1_epi32(k->e_hi));
        d[r] = _mm512_sub_epi32(e, _mm512_set1_epi32(k->f));
        /* 2^(F-E)'s exponent field, at least 1 (E <= F + 126); E alone too small for it: no product */
        __m512i ub = _mm512_min_epi32(_mm512_sub_epi32(_mm512_set1_epi32(127), d[r]), _mm512_set1_epi32(253));
        up[r] = _mm512_castsi512_ps(_mm512_slli_epi32(ub, 23));
        __m512 acc = _mm512_scalef_ps(part[r], _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_setzero_si512(), d[r])));
        if (wide) {
            s64[r][0] = _mm512_cvttps_epi64(_mm512_castps512_ps256(acc));
            s64[r][1] = _mm512_cvttps_epi64(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
        } else {
            sum[r] = _mm512_cvttps_epi32(acc);
        }
    }
    for (int64_t c0 = b0; c0 < b1; c0 += wide ? k->chunk : b1 - b0) {
        int64_t c1 = wide && c0 + k->chunk < b1 ? c0 + k->chunk : b1;
        if (wide) {
            BK_ROWS
            for (int r = 0; r < BK_MR; r++) sum[r] = _mm512_setzero_si512();
        }
        for (int64_t kk = c0; kk < c1; kk++) {
            __m512 b = _mm512_loadu_ps(w->panel + kk * BK_NR);
            BK_ROWS
            for (int r = 0; r < BK_MR; r++)
                sum[r] = _mm512_add_epi32(sum[r], _mm512_cvttps_epi32(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(w->arows[r][kk]), b), up[r])));
        }
        if (wide) {
            BK_ROWS
            for (int r = 0; r < BK_MR; r++) {
                s64[r][0] = _mm512_add_epi64(s64[r][0], _mm512_cvtepi32_epi64(_mm512_castsi512_si256(sum[r])));
                s64[r][1] = _mm512_add_epi64(s64[r][1], _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(sum[r], 1)));
            }
        }
    }
    BK_ROWS
    for (int r = 0; r < BK_MR; r++) {
        __m512i rand = mode == ACS_SR ? bk_rand32(lanes[r], (uint64_t)(b0 / w->terms)) : _mm512_setzero_si512();
        __mmask16 zero;
        __m512 v;
        if (wide) {
            zero = (__mmask16)(_mm512_testn_epi64_mask(s64[r][0], s64[r][0]) | (_mm512_testn_epi64_mask(s64[r][1], s64[r][1]) << 8));
            v = bk_round64(k, mode, s64[r], d[r], rand);
        } else {
            zero = _mm512_testn_epi32_mask(sum[r], sum[r]);
            v = bk_round32(k, mode, sum[r], d[r], rand);
        }
        part[r] = bk_settle(k, mode, v, zero, &bad[r]);
        if (mode == ACS_RDN) bad[r] |= lone[r];
    }
}

BK_INLINE void bk_body(const bk_grid *k, int mode, int wide, const acs_block_args *w, double out[BK_MR][BK_NR],
                       int64_t bad[BK_MR][BK_NR])
{
    __m512d total[BK_MR][2];
    __mmask16 marks[BK_MR];
    __m512i lanes[BK_MR][2];
    BK_ROWS
    for (int r = 0; r < BK_MR; r++) {
        total[r][0] = total[r][1] = _mm512_setzero_pd();
        marks[r] = 0;
        for (int h = 0; h < 2; h++)
            lanes[r][h] = mode == ACS_SR ? _mm512_loadu_si512(w->lanes + r * BK_NR + 8 * h) : _mm512_setzero_si512();
    }
    for (int64_t t0 = 0, ti = 0; t0 < w->k; t0 += w->tile, ti++) {
        int64_t t1 = t0 + w->tile < w->k ? t0 + w->tile : w->k;
        __m512 part[BK_MR];
        BK_ROWS
        for (int r = 0; r < BK_MR; r++) part[r] = _mm512_setzero_ps();
        for (int64_t b0 = t0; b0 < t1; b0 += w->terms)
            bk_block(k, mode, wide, w, b0, b0 + w->terms < t1 ? b0 + w->terms : t1, part, marks, lanes);
        BK_ROWS
        for (int r = 0; r < BK_MR; r++) {   /* os: one tile, the chain is the result */
            __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(part[r]));
            __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(part[r]), 1)));
            if (w->chain_only) {
                total[r][0] = lo;
                total[r][1] = hi;
            } else {
                __mmask8 m0 = 0, m1 = 0;
                uint64_t step = w->kp + (uint64_t)ti;
                __m512i z = _mm512_setzero_si512();
                total[r][0] = bk_join(k, mode, total[r][0], lo, mode == ACS_SR ? bk_rand64(lanes[r][0], step) : z, &m0);
                total[r][1] = bk_join(k, mode, total[r][1], hi, mode == ACS_SR ? bk_rand64(lanes[r][1], step) : z, &m1);
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

/* One instance per rounding mode and sum width. */
#define BK_MODE(m)                                            \
    case m:                                                   \
        if (wide) bk_body(&k, m, 1, w, out, bad);             \
        else bk_body(&k, m, 0, w, out, bad);                  \
        break;

BK_TARGET void acs_block_avx512(const acs_block_args *w, double out[BK_MR][BK_NR], int64_t bad[BK_MR][BK_NR])
{
    bk_grid k = bk_grid_of(w);
    int wide = bk_sum_bits(w->acc) > 30;
    switch (w->acc->rounding) {
    BK_MODE(ACS_RNA)
    BK_MODE(ACS_RTZ)
    BK_MODE(ACS_RUP)
    BK_MODE(ACS_RDN)
    BK_MODE(ACS_RTO)
    BK_MODE(ACS_SR)
    default:
        if (wide) bk_body(&k, ACS_RNE, 1, w, out, bad);
        else bk_body(&k, ACS_RNE, 0, w, out, bad);
    }
}
#endif
