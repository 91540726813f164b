/* kernel_fixround.c: FixedAcc whose exact products need rounding onto the register's grid
 * (ACS_FAST_FIXROUND, issue 16), over array.c's blocks of ACS_FX_MR x ACS_FX_NR outputs.
 * A's values come scaled by 2^frac_bits, so a product x = a*b, exact in binary32, is the product
 * in register lsbs, and rounding x to an integer is the general step's rounding onto the grid
 * (round.c rounds the magnitude; each mode below is that rule written on the signed value).
 * AVX-512's conversions with embedded rounding give rne, rtz, rup and rdn; rna truncates x + 1/2
 * (signed) added toward zero (exact below 2^23, where the integers are binary32s, and x itself
 * above); rto sets the truncation's last bit of magnitude when it is inexact; sr steps the
 * truncation t away from zero iff R < |d| * 2^32, d = x - t exact (t = 0, or |t| >= |x|/2)
 * (round.c: R < frac32, or R = frac32 with bits below), that is R < ceil(|d| * 2^32), R being
 * acs_rand32's draw for (seed, i*n + j, k).
 * The rounded products (below 2^30) then sum as kernel_fixed.c's kernels do: int32 lanes over
 * runs that cannot overflow them, then int64 lanes; a saturating register is clamped after a
 * step only when it could reach a bound (its largest |partial| plus the run's steps times the
 * largest rounded product), and each tile's sum joins the buffer (the same grid) with one clamp.
 * A portable C twin (binary64 rounding by comparisons) and the AVX-512 kernel compute the same
 * integers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define FR_MR ACS_FX_MR
#define FR_NR ACS_FX_NR
#define FR_STEP_MUL 0xAEF17502108EF2D9ULL   /* acs_rand32's step multiplier */

/* Whether len products of magnitude <= r always fit a `bits`-bit register. */
static int fr_fits(int64_t len, int64_t r, int bits)
{
    return len <= 0 || r <= 0 || (acs_u128)len * (acs_u128)r <= ((acs_u128)1 << (bits - 1)) - 1;
}

/* A table's finite nonzero values: the widest significand, the lowest set bit, the top (|v| <
 * 2^top) and the largest magnitude; 0 when there is none. */
static int fr_range(const acs_operand *t, int bits, int *sig, int64_t *low, int64_t *top, double *big)
{
    int any = 0;
    for (uint64_t c = 0; c < (1ULL << bits); c++) {
        if (t[c].cls != ACS_FINITE) continue;
        int len = 64 - __builtin_clzll(t[c].sig), tz = __builtin_ctzll(t[c].sig);
        double v = ldexp((double)t[c].sig, t[c].exp);
        if (!any || len - tz > *sig) *sig = len - tz;
        if (!any || t[c].exp + tz < *low) *low = t[c].exp + tz;
        if (!any || t[c].exp + len > *top) *top = t[c].exp + len;
        if (!any || v > *big) *big = v;
        any = 1;
    }
    return any;
}

/* A FixedAcc MAC of operands that fit: ctx->fa (A's values times 2^frac_bits) and ctx->fb as
 * binary32 (non-finite codes 0: the driver sends them to the general step), every product
 * exact in binary32 and below 2^30 lsbs; ctx->max_product the largest rounded |product|. */
int acs_fixround_open(acs_mac_ctx *ctx)
{
    const acs_mac *mac = ctx->mac;
    int64_t f = mac->acc.grid.frac_bits, la = 0, lb = 0, ta = 0, tb = 0;
    int sa = 0, sb = 0;
    double ma = 0, mb = 0;
    if (mac->acc.kind != ACS_ACC_FIXED || !ctx->ta || !ctx->tb
        || !fr_range(ctx->ta, mac->a.bits, &sa, &la, &ta, &ma) || !fr_range(ctx->tb, mac->b.bits, &sb, &lb, &tb, &mb)
        || sa + sb > 24 || la + lb + f < -149 || ta + tb + f > 30 || la + f < -149 || ta + f > 127 || lb < -149 || tb > 127)
        return 0;
    ctx->fa = malloc(sizeof(float) << mac->a.bits);
    ctx->fb = malloc(sizeof(float) << mac->b.bits);
    if (!ctx->fa || !ctx->fb) return 0;
    for (int s = 0; s < 2; s++) {
        const acs_operand *t = s ? ctx->tb : ctx->ta;
        float *v = s ? ctx->fb : ctx->fa;
        for (uint64_t c = 0; c < (1ULL << (s ? mac->b.bits : mac->a.bits)); c++) {
            double x = t[c].cls == ACS_FINITE ? ldexp((double)t[c].sig, t[c].exp + (s ? 0 : (int)f)) : 0.0;
            v[c] = (float)(t[c].neg ? -x : x);
        }
    }
    ctx->max_product = (int64_t)ceil(ldexp(ma * mb, (int)f));   /* an exact product, at most 2^30 */
    return 1;
}

/* The register kernel's plan (kernel_fixed.c's struct, products in register lsbs, shift 0):
 * sums when no register overflows or every one wraps within 64 bits, clamps for saturating
 * registers below 63 bits; ws/is only with a buffer on the PE's grid (tile sums join exactly). */
int acs_fixround_plan_of(const acs_mac_ctx *ctx, const acs_acc *buffer, int dataflow, int64_t k,
                         acs_fixed_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    const acs_acc *pe = &ctx->mac->acc;
    int bits = pe->grid.total_bits;
    if (ctx->fast != ACS_FAST_FIXROUND) return ACS_FAST_NONE;
    if (dataflow != ACS_OS && (buffer->kind != ACS_ACC_FIXED || buffer->grid.total_bits != bits
                               || buffer->grid.frac_bits != pe->grid.frac_bits || buffer->overflow != pe->overflow))
        return ACS_FAST_NONE;
    int64_t r = ctx->max_product;
    plan->max_product = r;
    plan->chunk = r ? INT32_MAX / r : INT32_MAX;
    plan->mode = ACS_FIXED_SUM;
    plan->scale = ldexp(1.0, -pe->grid.frac_bits);
    if (fr_fits(k, r, bits < 64 ? bits : 64)) {   /* nothing overflows: the exact sum */
        plan->direct = 1;
    } else if (pe->overflow == ACS_OVF_WRAP && bits <= 64) {
        plan->direct = bits == 64;
        plan->wrap64 = !plan->direct;
    } else if (pe->overflow == ACS_OVF_SATURATE && bits <= 62) {
        plan->mode = ACS_FIXED_CLAMP;
        plan->hi = ((int64_t)1 << (bits - 1)) - 1;
        plan->lo = -plan->hi - 1;
        plan->direct = 1;
    } else {
        memset(plan, 0, sizeof *plan);
        return ACS_FAST_NONE;
    }
    return ACS_FAST_FIXROUND;
}

static inline uint64_t fr_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline int64_t fr_clamp(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : x > hi ? hi : x; }

/* x (exact) rounded to an integer by comparisons on its binary64 fraction. */
static inline int64_t fr_round(double x, int mode, uint32_t rand)
{
    double t = trunc(x), d = fabs(x - t);
    int64_t q = (int64_t)t;
    int up = 0;
    switch (mode) {
    case ACS_RNE: up = d > 0.5 || (d == 0.5 && (q & 1)); break;
    case ACS_RNA: up = d >= 0.5; break;
    case ACS_RUP: up = d > 0 && x > 0; break;
    case ACS_RDN: up = d > 0 && x < 0; break;
    case ACS_RTO: up = d > 0 && !(q & 1); break;
    case ACS_SR:  up = (double)rand < d * 4294967296.0; break;
    default: break;   /* rtz */
    }
    return up ? (x < 0 ? q - 1 : q + 1) : q;
}

static void fr_portable(const acs_fixed_plan *pl, int mode, const float *const arows[FR_MR], const float *panel,
                        int64_t k, int64_t tile, const uint64_t *lanes, int64_t out[FR_MR][FR_NR])
{
    int clamp = pl->mode == ACS_FIXED_CLAMP;
    for (int r = 0; r < FR_MR; r++)
        for (int j = 0; j < FR_NR; j++) {
            uint64_t total = 0;
            for (int64_t t0 = 0; t0 < k; t0 += tile) {
                int64_t t1 = k - t0 < tile ? k : t0 + tile;
                uint64_t part = 0;
                for (int64_t kk = t0; kk < t1; kk++) {
                    uint32_t rand = mode == ACS_SR ? (uint32_t)(fr_mix(lanes[r * FR_NR + j] + (uint64_t)kk * FR_STEP_MUL) >> 32) : 0;
                    int64_t q = fr_round((double)arows[r][kk] * panel[kk * FR_NR + j], mode, rand);
                    part = clamp ? (uint64_t)fr_clamp((int64_t)part + q, pl->lo, pl->hi) : part + (uint64_t)q;
                }
                total = clamp ? (uint64_t)fr_clamp((int64_t)total + (int64_t)part, pl->lo, pl->hi) : total + part;
            }
            out[r][j] = (int64_t)total;
        }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define FR_X86 1
#define FR_ISA "avx512f,avx512dq,avx512bw,avx512vl"

static inline __attribute__((always_inline, target(FR_ISA))) __m512i fr_mix512(__m512i z)
{
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), _mm512_set1_epi64((int64_t)0xBF58476D1CE4E5B9ULL));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), _mm512_set1_epi64((int64_t)0x94D049BB133111EBULL));
    return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

/* The sixteen draws of a row at one step: the top halves of the last hash round. */
static inline __attribute__((always_inline, target(FR_ISA))) __m512i fr_rand512(const __m512i h[2], __m512i step)
{
    __m256i lo = _mm512_cvtepi64_epi32(_mm512_srli_epi64(fr_mix512(_mm512_add_epi64(h[0], step)), 32));
    __m256i hi = _mm512_cvtepi64_epi32(_mm512_srli_epi64(fr_mix512(_mm512_add_epi64(h[1], step)), 32));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

static inline __attribute__((always_inline, target(FR_ISA))) __m512i fr_round512(__m512 x, int mode, __m512i rand)
{
    const __m512i one = _mm512_set1_epi32(1);
    __m512i s = _mm512_srai_epi32(_mm512_castps_si512(x), 31);   /* -1 where x is negative, else 0 */
    __m512i q = _mm512_cvtt_roundps_epi32(x, _MM_FROUND_NO_EXC);
    switch (mode) {
    case ACS_RNE: return _mm512_cvt_roundps_epi32(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    case ACS_RTZ: return q;
    case ACS_RUP: return _mm512_cvt_roundps_epi32(x, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    case ACS_RDN: return _mm512_cvt_roundps_epi32(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    case ACS_RNA: {   /* trunc(x +- 1/2), the sum rounded toward zero: it never reaches the next integer */
        __m512 h = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN),
                                                                 _mm512_castps_si512(_mm512_set1_ps(0.5f)), 0xEA));
        return _mm512_cvtt_roundps_epi32(_mm512_add_round_ps(x, h, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC),
                                         _MM_FROUND_NO_EXC);
    }
    case ACS_RTO:   /* inexact: |q| | 1, which is (q - 1) | 1 for negative x */
        return _mm512_mask_or_epi32(q, _mm512_cmp_ps_mask(x, _mm512_cvtepi32_ps(q), _CMP_NEQ_OQ), _mm512_add_epi32(q, s), one);
    default: {
        __m512 d = _mm512_sub_ps(x, _mm512_roundscale_ps(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC));
        __m512i c = _mm512_cvt_roundps_epu32(_mm512_mul_ps(_mm512_abs_ps(d), _mm512_set1_ps(4294967296.0f)),
                                             _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
        return _mm512_mask_add_epi32(q, _mm512_cmplt_epu32_mask(rand, c), q, _mm512_or_si512(s, one));   /* away from 0 */
    }
    }
}

static inline __attribute__((always_inline, target(FR_ISA)))
void fr_block512(const acs_fixed_plan *pl, int mode, const float *const arows[FR_MR], const float *panel, int64_t k,
                 int64_t tile, const uint64_t *lanes, int64_t out[FR_MR][FR_NR])
{
    int clamp = pl->mode == ACS_FIXED_CLAMP;
    const __m512i lo = _mm512_set1_epi64(pl->lo), hi = _mm512_set1_epi64(pl->hi), zero = _mm512_setzero_si512();
    __m512i hz[FR_MR][2], total[FR_MR][2], part[FR_MR][2];
    for (int r = 0; r < FR_MR; r++)
        for (int h = 0; h < 2; h++) {
            hz[r][h] = mode == ACS_SR ? _mm512_loadu_si512((const void *)(lanes + r * FR_NR + 8 * h)) : zero;
            total[r][h] = zero;
        }
    for (int64_t t0 = 0; t0 < k; t0 += tile) {
        int64_t t1 = k - t0 < tile ? k : t0 + tile, kk = t0;
        for (int r = 0; r < FR_MR; r++) part[r][0] = part[r][1] = zero;
        while (kk < t1) {
            int64_t limit = pl->chunk;
            if (clamp && pl->max_product) {   /* steps that cannot reach a bound */
                __m512i m = zero;
                for (int r = 0; r < FR_MR; r++)
                    m = _mm512_max_epi64(m, _mm512_max_epi64(_mm512_abs_epi64(part[r][0]), _mm512_abs_epi64(part[r][1])));
                int64_t free = (pl->hi - _mm512_reduce_max_epi64(m)) / pl->max_product;
                limit = free < limit ? free : limit;
            }
            if (limit > t1 - kk) limit = t1 - kk;
            if (limit > 0) {
                __m512i s[FR_MR];
                for (int r = 0; r < FR_MR; r++) s[r] = zero;
                for (int64_t end = kk + limit; kk < end; kk++) {
                    __m512 b = _mm512_loadu_ps(panel + kk * FR_NR);
                    __m512i step = _mm512_set1_epi64((int64_t)((uint64_t)kk * FR_STEP_MUL));
                    _Pragma("GCC unroll 4")
                    for (int r = 0; r < FR_MR; r++) {
                        __m512 x = _mm512_mul_ps(_mm512_set1_ps(arows[r][kk]), b);
                        s[r] = _mm512_add_epi32(s[r], fr_round512(x, mode, mode == ACS_SR ? fr_rand512(hz[r], step) : zero));
                    }
                }
                for (int r = 0; r < FR_MR; r++) {
                    part[r][0] = _mm512_add_epi64(part[r][0], _mm512_cvtepi32_epi64(_mm512_castsi512_si256(s[r])));
                    part[r][1] = _mm512_add_epi64(part[r][1], _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(s[r], 1)));
                }
                continue;
            }
            for (int64_t end = kk + (t1 - kk < 8 ? t1 - kk : 8); kk < end; kk++) {   /* near a bound: clamp each step */
                __m512 b = _mm512_loadu_ps(panel + kk * FR_NR);
                __m512i step = _mm512_set1_epi64((int64_t)((uint64_t)kk * FR_STEP_MUL));
                for (int r = 0; r < FR_MR; r++) {
                    __m512 x = _mm512_mul_ps(_mm512_set1_ps(arows[r][kk]), b);
                    __m512i q = fr_round512(x, mode, mode == ACS_SR ? fr_rand512(hz[r], step) : zero);
                    __m512i v0 = _mm512_add_epi64(part[r][0], _mm512_cvtepi32_epi64(_mm512_castsi512_si256(q)));
                    __m512i v1 = _mm512_add_epi64(part[r][1], _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(q, 1)));
                    part[r][0] = _mm512_max_epi64(_mm512_min_epi64(v0, hi), lo);
                    part[r][1] = _mm512_max_epi64(_mm512_min_epi64(v1, hi), lo);
                }
            }
        }
        for (int r = 0; r < FR_MR; r++)
            for (int h = 0; h < 2; h++) {
                __m512i v = _mm512_add_epi64(total[r][h], part[r][h]);
                total[r][h] = clamp ? _mm512_max_epi64(_mm512_min_epi64(v, hi), lo) : v;
            }
    }
    for (int r = 0; r < FR_MR; r++) {
        _mm512_storeu_si512((void *)out[r], total[r][0]);
        _mm512_storeu_si512((void *)(out[r] + 8), total[r][1]);
    }
}

/* One build per rounding mode (the mode a constant in each). */
__attribute__((target(FR_ISA)))
static void fr_avx512(const acs_fixed_plan *pl, int mode, const float *const arows[FR_MR], const float *panel,
                      int64_t k, int64_t tile, const uint64_t *lanes, int64_t out[FR_MR][FR_NR])
{
    switch (mode) {
    case ACS_RNE: fr_block512(pl, ACS_RNE, arows, panel, k, tile, lanes, out); break;
    case ACS_RNA: fr_block512(pl, ACS_RNA, arows, panel, k, tile, lanes, out); break;
    case ACS_RTZ: fr_block512(pl, ACS_RTZ, arows, panel, k, tile, lanes, out); break;
    case ACS_RUP: fr_block512(pl, ACS_RUP, arows, panel, k, tile, lanes, out); break;
    case ACS_RDN: fr_block512(pl, ACS_RDN, arows, panel, k, tile, lanes, out); break;
    case ACS_RTO: fr_block512(pl, ACS_RTO, arows, panel, k, tile, lanes, out); break;
    default: fr_block512(pl, ACS_SR, arows, panel, k, tile, lanes, out); break;
    }
}
#endif

/* A block's registers: A rows of k scaled values, a B panel of NR values per k; lanes (sr) each
 * output's hash state after (seed, index); a sum plan takes k as one tile. */
void acs_fixround_block(int isa, const acs_fixed_plan *pl, int mode, const float *const arows[FR_MR],
                        const float *panel, int64_t k, int64_t tile, const uint64_t *lanes,
                        int64_t out[FR_MR][FR_NR])
{
    if (pl->mode != ACS_FIXED_CLAMP || tile < 1) tile = k > 0 ? k : 1;
#ifdef FR_X86
    if (isa == 2 && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
        fr_avx512(pl, mode, arows, panel, k, tile, lanes, out);
        return;
    }
#endif
    (void)isa;
    fr_portable(pl, mode, arows, panel, k, tile, lanes, out);
}

#undef FR_MR
#undef FR_NR
