/* kernel_float.c: float accumulators (FloatAcc) in the array's register blocks on AVX-512,
 * sixteen binary32 lanes to a vector.
 *
 * One step is acc <- round(acc + a*b) onto the accumulator's grid with one rounding of the
 * exact sum.  The fused multiply-add forms a*b + acc exactly and rounds it once; AVX-512 lets
 * each instruction carry its own rounding direction, so the sum rounded down and rounded up
 * are two instructions, and of those two neighbours the one with an odd last bit is the sum
 * rounded to odd at binary32's precision (both are the sum when it is exact).  Rounding to odd
 * at p bits and then to q <= p - 2 bits in any mode equals one rounding to q bits (the odd last
 * bit stands for everything that was dropped), subnormal, overflowing and infinite sums
 * included, as long as the grid's spacing is at least four times binary32's at every
 * magnitude.  The second rounding is then exact bit work on the binary32 pattern (or the
 * hardware's conversion to binary16, for IEEE half).
 *
 * Which grids (acs_float_plan_of):
 * - FK_FP32, binary32 itself: the fused multiply-add in the accumulator's direction is the
 *   step (rne, rtz, rup, rdn); rto is the round-to-odd sum; rna is round-to-nearest with the
 *   sum's exact error (TwoSum, valid when every product is a binary32: their error is one),
 *   moved one unit away from zero on an exact tie.
 * - FK_HALF: IEEE binary16 (rne and the directed modes, IEEE overflow): vcvtps2ph.
 * - FK_WIDE: binary32's exponent range (emin -126, emax 127; bf16 and other 8-bit-exponent
 *   grids) with at most 21 fraction bits: rounding the pattern at a fixed bit is right for
 *   subnormals and overflow alike, because binary32 shares the grid's exponent field.
 * - FK_NARROW: a smaller range (emin > -126, emax <= 127, at most 21 fraction bits): the
 *   kernel keeps every value times 2^s, s = -126 - emin, which moves the grid's smallest
 *   normal onto binary32's, so the same pattern rounding holds for subnormals; one operand's
 *   values are scaled when loaded (exact: the plan checks each code's value stays a binary32),
 *   and sums past the largest finite value take the overflow policy's value.
 * - FK_SR: stochastic rounding onto grids of at most 19 fraction bits, in binary64 lanes (below).
 * Sums that join the accumulator buffer (weight/input stationary) are the same step with b = 1.
 * A block is ACS_FK_MR rows by two panels of ACS_FK_NR columns: eight independent chains hide
 * the step's latency.
 * Any other accumulator keeps array.c's kernels. */
#include "internal.h"
#include <math.h>
#include <string.h>

enum { FK_NONE = 0, FK_FP32, FK_HALF, FK_WIDE, FK_NARROW, FK_SR };

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>

#define FK_ISA "avx512f,avx512dq,avx512bw,avx512vl,f16c,fma"

/* Whether every finite value of the operand table times 2^s is a binary32 (s <= 0). */
static int scales_exactly(const float *v, int bits, int s)
{
    for (uint64_t c = 0; c < (1ULL << bits); c++) {
        float x = fabsf(v[c]);
        if (x > 0 && x <= 3.4028234663852886e38f && ldexpf(ldexpf(x, s), -s) != x) return 0;
    }
    return 1;
}

int acs_float_plan_of(const acs_mac_ctx *ctx, int isa, acs_float_plan *p)
{
    const acs_mac *mac = ctx->mac;
    const acs_acc *acc = &mac->acc;
    const acs_grid *g = &acc->grid;
    memset(p, 0, sizeof *p);
    __builtin_cpu_init();
    if (isa != 1 || !__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512dq")
        || !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl")
        || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c"))
        return 0;
    int m = acc->rounding, sat = acc->overflow == ACS_OVF_SATURATE;
    if (acc->kind != ACS_ACC_FLOAT || !g->subnormals || memcmp(&acc->addend, g, sizeof *g)
        || (acc->overflow != ACS_OVF_INF && !sat) || g->max_sig != (2ULL << g->man_bits) - 1 || g->emax > 127)
        return 0;
    p->mode = m;
    p->sat = sat;
    if (m == ACS_SR) {
        /* binary64 lanes: rounded to odd at 53 bits, the sum keeps the 32 bits below the
         * grid's last place that the draw is compared with, and a sticky bit below them */
        if (g->man_bits > 19 || g->emin - g->man_bits < -1000) return 0;
        p->max64 = ldexp((double)g->max_sig, g->emax - g->man_bits);
        p->over64 = sat ? p->max64 : INFINITY;
        p->man_shift = (int64_t)g->man_bits << 52;
        p->ulp_min = (int64_t)(g->emin - g->man_bits + 1023) << 52;
        p->emin64 = (int64_t)(g->emin + 1023) << 52;
        p->sh64 = 52 - g->man_bits;
        return p->kind = FK_SR;
    }
    p->sh = 23 - g->man_bits;
    p->scale = 1.0f;
    p->unscale = 1.0;
    if (g->man_bits == 23 && g->emin == -126) {
        /* rna needs every product to be a binary32 (its TwoSum error is then exact). */
        if (m == ACS_RNA && !ctx->products_f32) return 0;
        p->kind = FK_FP32;
    } else if (g->man_bits > 21 || g->emin < -126) {
        return 0;
    } else if (g->man_bits == 10 && g->emin == -14 && g->emax == 15 && !sat && m != ACS_RNA && m != ACS_RTO) {
        p->kind = FK_HALF;
    } else {
        int s = -126 - g->emin;
        if (scales_exactly(ctx->fa, mac->a.bits, s)) p->scale_a = 1;
        else if (!scales_exactly(ctx->fb, mac->b.bits, s)) return 0;
        p->scale = ldexpf(1.0f, s);
        p->unscale = ldexp(1.0, -s);
        p->kind = s == 0 && g->emax == 127 ? FK_WIDE : FK_NARROW;
    }
    /* The largest finite value (scaled), and what a finite sum past it becomes, by sign:
     * IEEE (inf, or max by direction), or max when saturating. */
    float fmax = (float)(ldexp((double)g->max_sig, g->emax - g->man_bits) * p->scale);   /* exact */
    memcpy(&p->max_bits, &fmax, 4);
    uint32_t inf = 0x7F800000u;
    p->over_pos = sat || m == ACS_RTZ || m == ACS_RDN || m == ACS_RTO ? p->max_bits : inf;
    p->over_neg = (sat || m == ACS_RTZ || m == ACS_RUP || m == ACS_RTO ? p->max_bits : inf) | 0x80000000u;
    return p->kind;
}

#define V(x) _mm512_set1_epi32((int)(x))

/* The exact a*b + x rounded to odd at binary32's precision.  Of the two neighbours the odd one
 * is taken; when both are even the sum is exact and either serves, except for a zero: +0 (IEEE
 * rounding up), or -0 when the step rounds down (IEEE: an exact zero sum is -0 then). */
static inline __attribute__((always_inline, target(FK_ISA)))
__m512 fk_odd(int mode, __m512 x, __m512 a, __m512 b)
{
    __m512 lo = _mm512_fmadd_round_ps(a, b, x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 hi = _mm512_fmadd_round_ps(a, b, x, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    if (mode == ACS_RDN)
        return _mm512_mask_blend_ps(_mm512_test_epi32_mask(_mm512_castps_si512(hi), V(1)), lo, hi);
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(_mm512_castps_si512(lo), V(1)), hi, lo);
}

/* One binary32 step (FK_FP32). */
static inline __attribute__((always_inline, target(FK_ISA)))
__m512 fk_fp32(const acs_float_plan *p, int mode, __m512 x, __m512 a, __m512 b)
{
    const __m512i sign = V(0x80000000u), mag = V(0x7FFFFFFFu), inf = V(0x7F800000u);
    __m512 r;
    if (mode == ACS_RTO) r = fk_odd(mode, x, a, b);
    else if (mode == ACS_RTZ) r = _mm512_fmadd_round_ps(a, b, x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    else if (mode == ACS_RUP) r = _mm512_fmadd_round_ps(a, b, x, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    else if (mode == ACS_RDN) r = _mm512_fmadd_round_ps(a, b, x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    else if (mode == ACS_RNE) r = _mm512_fmadd_ps(a, b, x);
    else {
        /* rna: TwoSum's error e of s = pr + x is exact (pr = a*b is a binary32).  The sum is a
         * tie exactly when s + 2e is a binary32 neighbour of s, that is when e != 0 and
         * (s + 2e) - s gives 2e back (|2e| below s's spacing otherwise: the difference is 0 or
         * a whole spacing); rna then takes the neighbour farther from zero. */
        __m512 pr = _mm512_mul_ps(a, b), s = _mm512_add_ps(pr, x);
        __m512 pv = _mm512_sub_ps(s, x), e = _mm512_add_ps(_mm512_sub_ps(x, _mm512_sub_ps(s, pv)),
                                                             _mm512_sub_ps(pr, pv));
        __m512 e2 = _mm512_add_ps(e, e), t = _mm512_add_ps(s, e2);
        __mmask16 tie = _mm512_cmp_ps_mask(_mm512_sub_ps(t, s), e2, _CMP_EQ_OQ)
            & _mm512_cmp_ps_mask(e, _mm512_setzero_ps(), _CMP_NEQ_OQ);
        __mmask16 away = _mm512_cmp_ps_mask(_mm512_abs_ps(t), _mm512_abs_ps(s), _CMP_GT_OQ);
        r = _mm512_mask_mov_ps(s, tie & away, t);
    }
    if (p->sat) {   /* clamp finite and infinite sums to +-max; NaN stays */
        __m512i rb = _mm512_castps_si512(r);
        __mmask16 over = _mm512_cmpgt_epi32_mask(_mm512_and_si512(rb, mag), V(p->max_bits))
            & _mm512_cmple_epi32_mask(_mm512_and_si512(rb, mag), inf);
        r = _mm512_castsi512_ps(_mm512_mask_or_epi32(rb, over, _mm512_and_si512(rb, sign), V(p->max_bits)));
    }
    return r;
}

/* One step of a FK_HALF, FK_WIDE or FK_NARROW grid: the sum rounded to odd, then its pattern
 * rounded at bit sh in `mode` (on the whole pattern: a carry never reaches the sign of a
 * finite value; the directed modes add by sign). */
static inline __attribute__((always_inline, target(FK_ISA)))
__m512 fk_step(const acs_float_plan *p, int kind, int mode, __m512 x, __m512 a, __m512 b)
{
    if (kind == FK_FP32) return fk_fp32(p, mode, x, a, b);
    __m512 o = fk_odd(mode, x, a, b);
    if (kind == FK_HALF) {
        __m256i h = mode == ACS_RUP ? _mm512_cvt_roundps_ph(o, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC)
            : mode == ACS_RDN ? _mm512_cvt_roundps_ph(o, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)
            : mode == ACS_RTZ ? _mm512_cvt_roundps_ph(o, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)
            : _mm512_cvt_roundps_ph(o, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        return _mm512_cvtph_ps(h);
    }
    const int sh = p->sh;
    const __m512i low = V((1u << sh) - 1), keep = V(~((1u << sh) - 1));
    __m512i u = _mm512_castps_si512(o);
    switch (mode) {
    case ACS_RNE:
        u = _mm512_add_epi32(u, _mm512_add_epi32(V((1u << (sh - 1)) - 1),
                                                 _mm512_and_si512(_mm512_srli_epi32(u, sh), V(1))));
        break;
    case ACS_RNA: u = _mm512_add_epi32(u, V(1u << (sh - 1))); break;
    case ACS_RUP: u = _mm512_mask_add_epi32(u, (__mmask16)~_mm512_movepi32_mask(u), u, low); break;
    case ACS_RDN: u = _mm512_mask_add_epi32(u, _mm512_movepi32_mask(u), u, low); break;
    case ACS_RTO: u = _mm512_mask_or_epi32(u, _mm512_test_epi32_mask(u, low), u, V(1u << sh)); break;
    default: break;   /* rtz */
    }
    u = _mm512_and_si512(u, keep);
    if (kind == FK_NARROW || p->sat) {
        /* past the largest finite value (an ordered compare: NaN stays): the policy's value.
         * An infinite sum stays infinite unless the register saturates or the policy's value
         * is infinite anyway. */
        __m512 a = _mm512_abs_ps(_mm512_castsi512_ps(u));
        __mmask16 over = _mm512_cmp_ps_mask(a, _mm512_castsi512_ps(V(p->max_bits)), _CMP_GT_OQ);
        if (!p->sat && (p->over_pos != 0x7F800000u || p->over_neg != 0xFF800000u))
            over &= _mm512_cmp_ps_mask(a, _mm512_castsi512_ps(V(0x7F800000u)), _CMP_LT_OQ);
        if ((p->over_pos | 0x80000000u) == p->over_neg)   /* the same magnitude either way */
            u = _mm512_mask_ternarylogic_epi32(u, over, V(0x80000000u), V(p->over_pos), 0xEA);   /* (u & sign) | value */
        else
            u = _mm512_mask_mov_epi32(u, over, _mm512_mask_mov_epi32(V(p->over_pos), _mm512_movepi32_mask(u),
                                                                     V(p->over_neg)));
    }
    return _mm512_castsi512_ps(u);
}

static inline __attribute__((always_inline, target(FK_ISA)))
void fk_store(double *out, __m512 v, __m512d unscale)
{
    _mm512_storeu_pd(out, _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), unscale));
    _mm512_storeu_pd(out + 8, _mm512_mul_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))),
                                            unscale));
}

/* One block of MR rows x two panels: each tile's chain from +0 in k order, each tile sum
 * joining the total in order (os: one tile, the chain is the result). */
static inline __attribute__((always_inline, target(FK_ISA)))
void fk_block(const acs_float_plan *p, int kind, int mode, const float *const arows[ACS_FK_MR],
              const float *const panels[2], int64_t k, int64_t tile, int chain_only,
              double out[ACS_FK_MR][2 * ACS_FK_NR])
{
    __m512 total[ACS_FK_MR][2], part[ACS_FK_MR][2];
    const __m512 one = _mm512_set1_ps(1.0f), sa = _mm512_set1_ps(p->scale_a ? p->scale : 1.0f),
        sb = _mm512_set1_ps(p->scale_a ? 1.0f : p->scale);
    _Pragma("GCC unroll 8")
    for (int r = 0; r < ACS_FK_MR; r++) total[r][0] = total[r][1] = _mm512_setzero_ps();
    for (int64_t t0 = 0; t0 < k; t0 += tile) {
        int64_t t1 = t0 + tile < k ? t0 + tile : k;
        _Pragma("GCC unroll 8")
        for (int r = 0; r < ACS_FK_MR; r++) part[r][0] = part[r][1] = _mm512_setzero_ps();
        for (int64_t kk = t0; kk < t1; kk++) {
            __m512 b0 = _mm512_loadu_ps(panels[0] + kk * ACS_FK_NR), b1 = _mm512_loadu_ps(panels[1] + kk * ACS_FK_NR);
            if (kind == FK_NARROW) { b0 = _mm512_mul_ps(b0, sb); b1 = _mm512_mul_ps(b1, sb); }
            _Pragma("GCC unroll 8")
            for (int r = 0; r < ACS_FK_MR; r++) {
                __m512 a = _mm512_set1_ps(arows[r][kk]);
                if (kind == FK_NARROW) a = _mm512_mul_ps(a, sa);
                part[r][0] = fk_step(p, kind, mode, part[r][0], a, b0);
                part[r][1] = fk_step(p, kind, mode, part[r][1], a, b1);
            }
        }
        _Pragma("GCC unroll 8")
        for (int r = 0; r < ACS_FK_MR; r++)
            for (int h = 0; h < 2; h++)
                total[r][h] = chain_only ? part[r][h] : fk_step(p, kind, mode, total[r][h], part[r][h], one);
    }
    const __m512d unscale = _mm512_set1_pd(p->unscale);
    for (int r = 0; r < ACS_FK_MR; r++) {
        fk_store(out[r], total[r][0], unscale);
        fk_store(out[r] + ACS_FK_NR, total[r][1], unscale);
    }
}

/* Stochastic rounding (FK_SR), eight binary64 lanes to a vector.  The sum rounded to odd at
 * 53 bits, t = the sum in units of its grid spacing (the spacing from its binade, at least the
 * subnormal one), n = t's magnitude to nearest and d = |t| - n in [-1/2, 1/2]: with
 * F = d * 2^32 and the draw R, round.c's rule (up from the floor iff R < frac32, or R = frac32
 * with nonzero bits below) steps up iff R < F and down iff R - 2^32 >= F.  R is acs_rand32's:
 * its last hash round over each lane's state after (seed, index) plus step * multiplier. */
#define FK_STEP_MUL 0xAEF17502108EF2D9ULL

static inline __attribute__((always_inline, target(FK_ISA)))
__m512i fk_mix(__m512i z)
{
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), _mm512_set1_epi64((int64_t)0xBF58476D1CE4E5B9ULL));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), _mm512_set1_epi64((int64_t)0x94D049BB133111EBULL));
    return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

static inline __attribute__((always_inline, target(FK_ISA)))
__m512d fk_sr(const acs_float_plan *p, __m512d x, __m512d a, __m512d b, __m512i hz)
{
    const __m512i sign = _mm512_set1_epi64(INT64_MIN), one = _mm512_set1_epi64(1);
    const __m512d m52 = _mm512_set1_pd(4503599627370496.0);
    __m512d lo = _mm512_fmadd_round_pd(a, b, x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512d hi = _mm512_fmadd_round_pd(a, b, x, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    __m512i o = _mm512_castpd_si512(_mm512_mask_blend_pd(_mm512_test_epi64_mask(_mm512_castpd_si512(lo), one), hi, lo));
    __m512i ub = _mm512_max_epi64(_mm512_sub_epi64(_mm512_and_si512(o, _mm512_set1_epi64(0x7FF0000000000000LL)),
                                                   _mm512_set1_epi64(p->man_shift)), _mm512_set1_epi64(p->ulp_min));
    __m512d t = _mm512_mul_pd(_mm512_castsi512_pd(o), _mm512_castsi512_pd(_mm512_sub_epi64(_mm512_set1_epi64((int64_t)2046 << 52), ub)));
    __m512d mag = _mm512_abs_pd(t), n = _mm512_sub_pd(_mm512_add_pd(mag, m52), m52);
    __m512d f = _mm512_mul_pd(_mm512_sub_pd(mag, n), _mm512_set1_pd(4294967296.0));
    __m512d r = _mm512_sub_pd(_mm512_castsi512_pd(_mm512_or_si512(_mm512_srli_epi64(fk_mix(hz), 32),
                                                                 _mm512_castpd_si512(m52))), m52);
    n = _mm512_mask_add_pd(n, _mm512_cmp_pd_mask(r, f, _CMP_LT_OQ), n, _mm512_set1_pd(1.0));
    n = _mm512_mask_sub_pd(n, _mm512_cmp_pd_mask(_mm512_sub_pd(r, _mm512_set1_pd(4294967296.0)), f, _CMP_GE_OQ), n,
                           _mm512_set1_pd(1.0));
    __m512d res = _mm512_mul_pd(_mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(n),
                                                                    _mm512_and_si512(_mm512_castpd_si512(t), sign))),
                                _mm512_castsi512_pd(ub));
    /* past the largest finite value (ordered: NaN stays): inf, or max when saturating */
    __mmask8 over = _mm512_cmp_pd_mask(_mm512_abs_pd(res), _mm512_set1_pd(p->max64), _CMP_GT_OQ);
    return _mm512_mask_mov_pd(res, over, _mm512_castsi512_pd(_mm512_ternarylogic_epi64(
        _mm512_castpd_si512(res), sign, _mm512_castpd_si512(_mm512_set1_pd(p->over64)), 0xEA)));
}

/* The same step when no lane's sum rounded to odd lies strictly between 0 and 2^emin (else
 * fk_sr): the grid's last place is then bit sh = 52 - man_bits of the pattern, the 32 bits
 * below it are frac32 and the rest below them the sticky part, so round.c's rule is one
 * unsigned compare, R * 2^(sh-32) < the bits below sh, and a step up is adding 2^sh to the
 * pattern (a carry runs into the exponent; infinities and NaN have nothing below sh). */
static inline __attribute__((always_inline, target(FK_ISA)))
__m512d fk_sr_normal(const acs_float_plan *p, __m512d x, __m512d a, __m512d b, __m512i hz)
{
    const __m512i one = _mm512_set1_epi64(1), low = _mm512_set1_epi64((int64_t)((1ULL << p->sh64) - 1));
    __m512d lo = _mm512_fmadd_round_pd(a, b, x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512d hi = _mm512_fmadd_round_pd(a, b, x, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    __m512i o = _mm512_castpd_si512(_mm512_mask_blend_pd(_mm512_test_epi64_mask(_mm512_castpd_si512(lo), one), hi, lo));
    __m512i mag = _mm512_and_si512(o, _mm512_set1_epi64(INT64_MAX));
    if (_mm512_cmplt_epu64_mask(_mm512_sub_epi64(mag, one), _mm512_set1_epi64(p->emin64 - 1)))
        return fk_sr(p, x, a, b, hz);
    __m512i draw = _mm512_sll_epi64(_mm512_srli_epi64(fk_mix(hz), 32), _mm_cvtsi32_si128(p->sh64 - 32));
    __mmask8 up = _mm512_cmplt_epu64_mask(draw, _mm512_and_si512(o, low));
    o = _mm512_andnot_si512(low, o);
    o = _mm512_mask_add_epi64(o, up, o, _mm512_slli_epi64(one, p->sh64));
    /* past the largest finite value (ordered: NaN stays): inf, or max when saturating */
    __m512d res = _mm512_castsi512_pd(o);
    __mmask8 over = _mm512_cmp_pd_mask(_mm512_abs_pd(res), _mm512_set1_pd(p->max64), _CMP_GT_OQ);
    return _mm512_castsi512_pd(_mm512_mask_ternarylogic_epi64(o, over, _mm512_set1_epi64(INT64_MIN),
                                                              _mm512_castpd_si512(_mm512_set1_pd(p->over64)), 0xEA));
}

/* The sr block: MR rows x two panels, each of two vectors of eight lanes. */
__attribute__((target(FK_ISA)))
static void fk_block_sr(const acs_float_plan *p, const float *const arows[ACS_FK_MR], const float *const panels[2],
                        int64_t k, int64_t tile, int chain_only, const uint64_t *lanes, uint64_t kp,
                        double out[ACS_FK_MR][2 * ACS_FK_NR])
{
    enum { Q = 2 * ACS_FK_NR / 8 };
    __m512d total[ACS_FK_MR][Q], part[ACS_FK_MR][Q];
    const __m512d one = _mm512_set1_pd(1.0);
    for (int r = 0; r < ACS_FK_MR; r++)
        for (int q = 0; q < Q; q++) total[r][q] = _mm512_setzero_pd();
    for (int64_t t0 = 0, ti = 0; t0 < k; t0 += tile, ti++) {
        int64_t t1 = t0 + tile < k ? t0 + tile : k;
        for (int r = 0; r < ACS_FK_MR; r++)
            for (int q = 0; q < Q; q++) part[r][q] = _mm512_setzero_pd();
        for (int64_t kk = t0; kk < t1; kk++) {
            __m512i step = _mm512_set1_epi64((int64_t)((uint64_t)kk * FK_STEP_MUL));   /* steps count over all of k */
            __m512d b[Q];
            for (int q = 0; q < Q; q++)
                b[q] = _mm512_cvtps_pd(_mm256_loadu_ps(panels[q / 2] + kk * ACS_FK_NR + 8 * (q % 2)));
            _Pragma("GCC unroll 4")
            for (int r = 0; r < ACS_FK_MR; r++) {
                __m512d a = _mm512_set1_pd(arows[r][kk]);
                _Pragma("GCC unroll 4")
                for (int q = 0; q < Q; q++)
                    part[r][q] = fk_sr_normal(p, part[r][q], a, b[q],
                                       _mm512_add_epi64(_mm512_loadu_si512(lanes + (r * Q + q) * 8), step));
            }
        }
        __m512i step = _mm512_set1_epi64((int64_t)((kp + (uint64_t)ti) * FK_STEP_MUL));
        for (int r = 0; r < ACS_FK_MR; r++)
            for (int q = 0; q < Q; q++)
                total[r][q] = chain_only ? part[r][q]
                    : fk_sr_normal(p, total[r][q], part[r][q], one, _mm512_add_epi64(_mm512_loadu_si512(lanes + (r * Q + q) * 8), step));
    }
    for (int r = 0; r < ACS_FK_MR; r++)
        for (int q = 0; q < Q; q++) _mm512_storeu_pd(out[r] + 8 * q, total[r][q]);
}

#define FK_MODES(kind)                                                                              \
    switch (p->mode) {                                                                              \
    case ACS_RNA: fk_block(p, kind, ACS_RNA, arows, panels, k, tile, chain_only, out); return;     \
    case ACS_RTZ: fk_block(p, kind, ACS_RTZ, arows, panels, k, tile, chain_only, out); return;     \
    case ACS_RUP: fk_block(p, kind, ACS_RUP, arows, panels, k, tile, chain_only, out); return;     \
    case ACS_RDN: fk_block(p, kind, ACS_RDN, arows, panels, k, tile, chain_only, out); return;     \
    case ACS_RTO: fk_block(p, kind, ACS_RTO, arows, panels, k, tile, chain_only, out); return;     \
    default: fk_block(p, kind, ACS_RNE, arows, panels, k, tile, chain_only, out); return;          \
    }

__attribute__((target(FK_ISA)))
void acs_float_block(const acs_float_plan *p, const float *const arows[ACS_FK_MR], const float *const panels[2],
                     int64_t k, int64_t tile, int chain_only, const uint64_t *lanes, uint64_t kp,
                     double out[ACS_FK_MR][2 * ACS_FK_NR])
{
    switch (p->kind) {
    case FK_SR: fk_block_sr(p, arows, panels, k, tile, chain_only, lanes, kp, out); return;
    case FK_FP32: FK_MODES(FK_FP32);
    case FK_HALF: FK_MODES(FK_HALF);
    case FK_WIDE: FK_MODES(FK_WIDE);
    default: FK_MODES(FK_NARROW);
    }
}
#undef V
#else
int acs_float_plan_of(const acs_mac_ctx *ctx, int isa, acs_float_plan *p)
{
    (void)ctx; (void)isa;
    memset(p, 0, sizeof *p);
    return 0;
}

void acs_float_block(const acs_float_plan *p, const float *const arows[ACS_FK_MR], const float *const panels[2],
                     int64_t k, int64_t tile, int chain_only, const uint64_t *lanes, uint64_t kp,
                     double out[ACS_FK_MR][2 * ACS_FK_NR])
{
    (void)p; (void)arows; (void)panels; (void)k; (void)tile; (void)chain_only; (void)lanes; (void)kp; (void)out;
}
#endif
