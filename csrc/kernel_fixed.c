/* kernel_fixed.c: vector kernels for register accumulators (FixedAcc, Kulisch accumulators,
 * the posit quire, and IntAcc where array.c's int16-pair wrap kernel does not apply), over
 * blocks of ACS_FX_MR x ACS_FX_NR outputs.  Operands are integers in units chosen when the
 * MAC is opened (accumulate.c, fixed_values: every product is a whole number of units),
 * decoded to int16 by array.c.
 * Sum: each output's integer sum of products modulo 2^64.  The plan takes it only where that
 * is the register's value: every register on the way wraps (adds modulo 2^bits, at most 64
 * bits above a product unit, do not depend on order or grouping), or none can wrap or
 * saturate (the sum is exact).  Pairs of products go through pmaddwd into int32 lanes for at
 * most `chunk` pairs (no int32 overflow), then into int64 lanes.  Operands of up to 31 bits
 * (FP8 values in units of their smallest step: e4m3fn up to 448 * 2^9) take the same sum from
 * exact products in int64 lanes (pmuldq), or from binary64 FMAs in runs short enough to be
 * exact when products are below 2^44; their clamps run in int64 lanes on pmuldq products.
 * Clamp: a saturating register of at most 62 bits whose products are whole lsbs, in int64
 * lanes, clamped after every product in each output's k order, each tile's sum then joining
 * a saturating buffer of the same grid with one clamp, as the general step does.  Steps that
 * provably cannot reach a bound (the largest |partial| plus steps * max|a*b| stays inside) go
 * unclamped through pmaddwd.  Registers of at most 30 bits use int32 lanes.
 * Each kernel has a portable C twin and AVX2 / AVX-512 builds chosen at run time (the sum also
 * an AVX-512 VNNI one, vpdpwssd for pmaddwd + add); all compute the same integers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define FX_MR ACS_FX_MR
#define FX_NR ACS_FX_NR

/* Whether len products of magnitude <= mp, each worth 2^shift lsbs, always fit a register of
 * `bits` bits: len * mp * 2^shift <= 2^(bits-1) - 1. */
static int fixed_fits(int64_t len, acs_u128 mp, int shift, int bits)
{
    if (len <= 0 || mp == 0) return 1;
    acs_u128 limit = ((acs_u128)1 << (bits - 1)) - 1;
    acs_u128 cap = shift >= 128 ? 0 : limit >> shift;
    return mp <= cap / (acs_u128)len;
}

/* Register kinds whose joins act alike: the quire with the quire, integer with fixed point. */
static int same_family(const acs_acc *x, const acs_acc *y)
{
    return (x->kind == ACS_ACC_QUIRE) == (y->kind == ACS_ACC_QUIRE)
        && (x->kind == ACS_ACC_QUIRE || x->kind == ACS_ACC_INT || x->kind == ACS_ACC_FIXED)
        && (y->kind == ACS_ACC_QUIRE || y->kind == ACS_ACC_INT || y->kind == ACS_ACC_FIXED);
}

/* A FixedAcc output whose register is the kernel's int64 shifted left (no wrap: the sum is
 * exact and fits, or the register holds all 64 bits) is that int64 rounded once to binary64
 * (rne, by the conversion) times 2^(shift - frac_bits), exact in binary64's normal range. */
static int fixed_plan_done(const acs_acc *out, acs_fixed_plan *plan, int exact)
{
    int bits = out->grid.total_bits, shift = plan->mode == ACS_FIXED_SUM ? plan->shift : 0;
    plan->direct = out->kind == ACS_ACC_FIXED && (exact || bits - shift >= 64);
    plan->scale = plan->direct ? ldexp(1.0, shift - out->grid.frac_bits) : 0.0;
    /* A FixedAcc of at most 64 bits that wraps: the int64 shifted and wrapped in 64 bits, then
     * rounded once to binary64 (rne, by the conversion) times 2^-frac_bits. */
    plan->wrap64 = !plan->direct && out->kind == ACS_ACC_FIXED && bits <= 64 && shift < bits;
    if (plan->wrap64) plan->scale = ldexp(1.0, -out->grid.frac_bits);
    return ACS_FAST_FIXED;
}

int acs_fixed_plan_of(const acs_mac_ctx *ctx, const acs_acc *buffer, int dataflow, int64_t k, int64_t tile,
                      acs_fixed_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    const acs_acc *pe = &ctx->mac->acc;
    if ((ctx->fast != ACS_FAST_FIXED && ctx->fast != ACS_FAST_INT_WRAP && ctx->fast != ACS_FAST_INT_SAT)
        || !ctx->ia || !ctx->ib)
        return ACS_FAST_NONE;
    int64_t m[2] = { 0, 0 };
    int narrow = 1, wide = ctx->fixed_wide;   /* narrow: int16 operands whose pair sums fit int32 (pmaddwd) */
    for (int s = 0; s < 2; s++)
        for (uint64_t c = 0; c < (1ULL << (s ? ctx->mac->b.bits : ctx->mac->a.bits)); c++) {
            int64_t v = (s ? ctx->ib : ctx->ia)[c];
            if (!wide && (v <= INT32_MIN || v > INT32_MAX)) return ACS_FAST_NONE;
            if (v < INT16_MIN || v > INT16_MAX) narrow = 0;
            if ((v < 0 ? -v : v) > m[s]) m[s] = v < 0 ? -v : v;
        }
    acs_u128 mp = (acs_u128)m[0] * (acs_u128)m[1];   /* below 2^62, or 2^124 when wide */
    if (2 * mp > INT32_MAX) narrow = 0;
    /* Wide operands: binary64 FMAs while products are small enough that long runs of them sum
     * exactly below 2^51 (acs_fixed_sum_f64), else int32 multiplies (acs_fixed_sum_wide); beyond
     * 31 bits, kernel_wide.c's bands. */
    plan->wide = wide ? 3 : narrow ? 0 : mp <= ((acs_u128)1 << 44) ? 2 : 1;
    plan->max_product = wide ? 0 : (int64_t)mp;
    plan->chunk = narrow ? (mp ? INT32_MAX / (2 * (int64_t)mp) : INT32_MAX)
                : plan->wide == 2 ? (mp ? (((int64_t)1 << 51) - 1) / (int64_t)mp : INT32_MAX) : 0;
    int os = dataflow == ACS_OS, bits = pe->grid.total_bits, s = ctx->fixed_shift;
    const acs_acc *out = os ? pe : buffer;
    int64_t len = os || tile > k ? k : tile;
    int same = os || (same_family(pe, buffer) && buffer->grid.total_bits == bits
                      && buffer->grid.frac_bits == pe->grid.frac_bits && buffer->overflow == pe->overflow);
    /* the kernel's sum (int64, or acs_i128 when wide: wrapping modulo 2^64 or 2^128) is the exact sum */
    int exact = fixed_fits(k, mp, 0, wide ? 127 : 64);
    plan->mode = ACS_FIXED_SUM;
    plan->shift = s;
    if (pe->overflow == ACS_OVF_WRAP && same && (bits - s <= 64 || exact || wide))
        return wide ? acs_wide_bands(ctx, k, plan) : fixed_plan_done(out, plan, exact && fixed_fits(k, mp, s, bits));
    /* No register wraps or saturates: the PE over a tile, the buffer (on a grid holding every
     * product) over k. */
    int64_t s_out = (int64_t)s - pe->grid.frac_bits + out->grid.frac_bits;
    if (exact && (os || same_family(pe, buffer)) && s_out >= 0 && fixed_fits(len, mp, s, bits)
        && fixed_fits(k, mp, (int)(s_out < 128 ? s_out : 128), out->grid.total_bits)) {
        plan->shift = (int)s_out;
        return wide ? acs_wide_bands(ctx, k, plan) : fixed_plan_done(out, plan, 1);
    }
    /* Wide operands into saturating FixedAccs (the PE's, the buffer's) that may reach a bound:
     * an output none of whose partial sums can (each at most sum |a*b| <= |a| |b|, the rows'
     * and columns' 2-norms) is the exact sum; the others take the general step (array.c). */
    if (wide && exact && pe->kind == ACS_ACC_FIXED && pe->overflow == ACS_OVF_SATURATE && out->kind == ACS_ACC_FIXED
        && (os || buffer->overflow == ACS_OVF_SATURATE) && s_out >= 0 && s_out < 128
        && bits >= 32 && out->grid.total_bits >= 32) {
        int ob = out->grid.total_bits;   /* (1 - 2^-30) 2^(b-1) < 2^(b-1) - 1: a bound in product units */
        double lp = ldexp(1.0 - ldexp(1.0, -30), bits - 1 - s), lo = ldexp(1.0 - ldexp(1.0, -30), ob - 1 - (int)s_out);
        plan->bound = 1;
        plan->limit = os || lp > lo ? lo : lp;
        plan->shift = (int)s_out;
        return acs_wide_bands(ctx, k, plan);
    }
    if (!wide && pe->overflow == ACS_OVF_SATURATE && pe->kind != ACS_ACC_QUIRE && s == 0 && bits <= 62 && same) {
        plan->mode = ACS_FIXED_CLAMP;
        plan->wide = !narrow;   /* int32 operands: acs_fixed_clamp_wide (a partial plus a product < 2^63) */
        plan->hi = ((int64_t)1 << (bits - 1)) - 1;
        plan->lo = -plan->hi - 1;
        plan->direct = out->kind == ACS_ACC_FIXED;   /* the register itself, below 2^62 */
        plan->scale = ldexp(1.0, -out->grid.frac_bits);
        return ACS_FAST_FIXED;
    }
    memset(plan, 0, sizeof *plan);
    return ACS_FAST_NONE;
}

/* Quire readouts memoised: acs_posit_code reads a magnitude's bit length L (its scale), its
 * bits down to the pattern's rounding position (the leading one, up to fb fraction bits, the
 * round bit) and whether any bit below is set, nothing else.  So every magnitude below 2^64
 * with the same (L, those bits, sticky) reads out as one representative, computed once by
 * acs_acc_read (the one rounding routine); posits are symmetric, so the sign is put back. */
int acs_posit_memo_init(acs_posit_memo *m, const acs_acc *acc)
{
    memset(m, 0, sizeof *m);
    m->acc = acc;
    int n = acc->readout.bits, es = acc->readout.exp_bits;
    if (acc->kind != ACS_ACC_QUIRE || ((n - 2) << es) > 126) return 1;   /* floats hold every value read */
    int64_t size = 0;
    for (int len = 1; len <= 64; len++) {
        int64_t scale = len - 1 - (int64_t)acc->grid.frac_bits, w = (int64_t)1 << es;
        int64_t regime = scale >= 0 ? scale / w : -((-scale + w - 1) / w);   /* floor */
        int64_t fb = n - 1 - es - (regime >= 0 ? regime + 2 : -regime + 1);
        m->keep[len] = (int)(fb > 0 ? fb : 0) + 1;
        m->base[len] = size;
        size += (int64_t)2 << m->keep[len];
    }
    m->val = calloc((size_t)size, sizeof *m->val);   /* 0: not yet read (no nonzero reads 0) */
    return m->val != NULL;
}

void acs_posit_memo_free(acs_posit_memo *m)
{
    free(m->val);
    m->val = NULL;
}

static double posit_readout(acs_posit_memo *m, acs_i128 reg)
{
    acs_u128 mag = reg < 0 ? (acs_u128)0 - (acs_u128)reg : (acs_u128)reg;
    acs_acc_state st;
    memset(&st, 0, sizeof st);
    st.v.cls = ACS_FINITE;
    double x;
    if (!m->val || !reg || mag >> 64) {
        st.reg = reg;
        acs_acc_read(m->acc, &st, &x, NULL);
        return x;
    }
    uint64_t u = (uint64_t)mag;
    int len = 64 - __builtin_clzll(u), keep = m->keep[len], t = len - 1 - keep;
    uint64_t top = t > 0 ? u >> t : u << -t, sticky = t > 0 && (u & ((1ULL << t) - 1)) != 0;
    float *slot = m->val + m->base[len] + (int64_t)(((top - (1ULL << keep)) << 1) | sticky);
    if (*slot == 0) {
        st.reg = t > 0 ? (acs_i128)(((top << 1) | sticky) << (t - 1)) : (acs_i128)u;   /* same L, bits, sticky */
        acs_acc_read(m->acc, &st, &x, NULL);
        *slot = (float)x;   /* exact: a posit of at most 16 bits, scales within +-126 */
    }
    return reg < 0 ? -(double)*slot : (double)*slot;
}

/* The output register from a kernel's result, read out as the general path reads it (a quire
 * through the memo, when one is given). */
void acs_fixed_out(const acs_acc *acc, const acs_fixed_plan *plan, acs_i128 sum, int nar, acs_posit_memo *memo,
                   double *out, int64_t *out_int)
{
    if (plan->direct) {
        *out = (double)(int64_t)sum * plan->scale;
        return;
    }
    if (plan->wrap64) {
        int bits = acc->grid.total_bits;
        uint64_t u = (uint64_t)sum << plan->shift;
        if (bits < 64) {
            uint64_t mask = (1ULL << bits) - 1;
            u = (u >> (bits - 1)) & 1 ? u | ~mask : u & mask;
        }
        int64_t reg;
        memcpy(&reg, &u, sizeof reg);   /* two's complement, without an out-of-range conversion */
        *out = (double)reg * plan->scale;
        return;
    }
    acs_i128 reg = sum;
    int bits = acc->grid.total_bits;
    if (plan->mode == ACS_FIXED_SUM) {
        acs_u128 u = plan->shift < 128 ? (acs_u128)reg << plan->shift : 0;
        if (bits < 128) {   /* wraps; an exact sum is already inside */
            acs_u128 mask = ((acs_u128)1 << bits) - 1;
            u &= mask;
            if ((u >> (bits - 1)) & 1) u |= ~mask;
        }
        reg = (acs_i128)u;
    }
    if (acc->kind == ACS_ACC_INT) {
        *out_int = (int64_t)reg;
        return;
    }
    if (acc->kind == ACS_ACC_FIXED) {
        /* acs_acc_read's correctly rounded readout: the int128 conversion is the one rne rounding
         * and 2^-frac_bits is exact (|reg| < 2^120, -64 <= frac_bits <= 119: binary64's normal range) */
        uint64_t p = (uint64_t)(1023 - acc->grid.frac_bits) << 52;
        double unit;
        memcpy(&unit, &p, sizeof unit);
        *out = (double)reg * unit;
        return;
    }
    if (acc->kind == ACS_ACC_QUIRE && memo && !nar) {
        *out = posit_readout(memo, reg);
        return;
    }
    acs_acc_state st;
    memset(&st, 0, sizeof st);
    st.v.cls = nar ? ACS_NAN : ACS_FINITE;
    st.reg = nar ? 0 : reg;
    acs_acc_read(acc, &st, out, out_int);
}

/* ---- Sum ---------------------------------------------------------------------------------- */
static void sum_portable(const int16_t *const arows[FX_MR], const int16_t *panel, int64_t pairs,
                         int64_t out[FX_MR][FX_NR])
{
    uint64_t acc[FX_MR][FX_NR] = { { 0 } };
    for (int64_t q = 0; q < pairs; q++)
        for (int r = 0; r < FX_MR; r++) {
            int64_t a0 = arows[r][2 * q], a1 = arows[r][2 * q + 1];
            const int16_t *b = panel + q * 2 * FX_NR;
            for (int j = 0; j < FX_NR; j++) acc[r][j] += (uint64_t)(a0 * b[2 * j] + a1 * b[2 * j + 1]);
        }
    memcpy(out, acc, sizeof acc);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define FX_X86 1

__attribute__((target("avx2")))
static void sum_avx2(const int16_t *const arows[FX_MR], const int16_t *panel, int64_t pairs, int64_t chunk,
                     int64_t out[FX_MR][FX_NR])
{
    int64_t wide[FX_MR][FX_NR];   /* touched once per chunk */
    memset(wide, 0, sizeof wide);
    for (int64_t q0 = 0; q0 < pairs; q0 += chunk) {
        int64_t q1 = pairs - q0 < chunk ? pairs : q0 + chunk;
        __m256i acc[FX_MR][2];
        for (int r = 0; r < FX_MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
        for (int64_t q = q0; q < q1; q++) {
            __m256i b0 = _mm256_loadu_si256((const __m256i *)(panel + q * 2 * FX_NR));
            __m256i b1 = _mm256_loadu_si256((const __m256i *)(panel + q * 2 * FX_NR + 16));
            _Pragma("GCC unroll 4")
            for (int r = 0; r < FX_MR; r++) {
                int32_t pair;
                memcpy(&pair, arows[r] + 2 * q, sizeof pair);
                __m256i av = _mm256_set1_epi32(pair);
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
            }
        }
        for (int r = 0; r < FX_MR; r++)
            for (int h = 0; h < 4; h++) {
                __m128i x = h & 1 ? _mm256_extracti128_si256(acc[r][h / 2], 1) : _mm256_castsi256_si128(acc[r][h / 2]);
                __m256i w = _mm256_loadu_si256((const __m256i *)(wide[r] + 4 * h));
                _mm256_storeu_si256((__m256i *)(wide[r] + 4 * h), _mm256_add_epi64(w, _mm256_cvtepi32_epi64(x)));
            }
    }
    memcpy(out, wide, sizeof wide);
}

/* The AVX-512 sum; with VNNI, vpdpwssd for pmaddwd + add (both sum modulo 2^32). */
#define SUM_AVX512(name, isa, STEP)                                                                          \
__attribute__((target(isa)))                                                                                 \
static void name(const int16_t *const arows[FX_MR], const int16_t *panel, int64_t pairs, int64_t chunk,       \
                 int64_t out[FX_MR][FX_NR])                                                                  \
{                                                                                                            \
    __m512i wide[FX_MR][2];                                                                                  \
    for (int r = 0; r < FX_MR; r++) wide[r][0] = wide[r][1] = _mm512_setzero_si512();                        \
    for (int64_t q0 = 0; q0 < pairs; q0 += chunk) {                                                          \
        int64_t q1 = pairs - q0 < chunk ? pairs : q0 + chunk;                                                \
        __m512i acc[FX_MR];                                                                                  \
        for (int r = 0; r < FX_MR; r++) acc[r] = _mm512_setzero_si512();                                     \
        for (int64_t q = q0; q < q1; q++) {                                                                  \
            __m512i b = _mm512_loadu_si512((const void *)(panel + q * 2 * FX_NR));                           \
            _Pragma("GCC unroll 4")                                                                          \
            for (int r = 0; r < FX_MR; r++) {                                                                \
                int32_t pair;                                                                                \
                memcpy(&pair, arows[r] + 2 * q, sizeof pair);                                                \
                acc[r] = STEP(acc[r], _mm512_set1_epi32(pair), b);                                           \
            }                                                                                                \
        }                                                                                                    \
        for (int r = 0; r < FX_MR; r++) {                                                                    \
            wide[r][0] = _mm512_add_epi64(wide[r][0], _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc[r]))); \
            wide[r][1] = _mm512_add_epi64(wide[r][1], _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc[r], 1))); \
        }                                                                                                    \
    }                                                                                                        \
    for (int r = 0; r < FX_MR; r++) {                                                                        \
        _mm512_storeu_si512((void *)out[r], wide[r][0]);                                                     \
        _mm512_storeu_si512((void *)(out[r] + 8), wide[r][1]);                                               \
    }                                                                                                        \
}
#define MADD_ADD(acc, a, b) _mm512_add_epi32(acc, _mm512_madd_epi16(a, b))
SUM_AVX512(sum_avx512, "avx512f,avx512bw", MADD_ADD)
SUM_AVX512(sum_vnni, "avx512f,avx512bw,avx512vnni", _mm512_dpwssd_epi32)
#endif

void acs_fixed_sum(int isa, const int16_t *const arows[FX_MR], const int16_t *panel, int64_t pairs,
                   int64_t chunk, int64_t out[FX_MR][FX_NR])
{
#ifdef FX_X86
    if (isa == 2 && __builtin_cpu_supports("avx512vnni")) { sum_vnni(arows, panel, pairs, chunk, out); return; }
    if (isa == 2) { sum_avx512(arows, panel, pairs, chunk, out); return; }
    if (isa == 1) { sum_avx2(arows, panel, pairs, chunk, out); return; }
#endif
    (void)isa; (void)chunk;
    sum_portable(arows, panel, pairs, out);
}

/* ---- Sum of int32 operands ---------------------------------------------------------------
 * Operands below 2^31 in magnitude (FP8 values in units of their smallest step): products of
 * at most 62 bits, each formed exactly in an int64 lane (pmuldq: signed 32 x 32 -> 64 from the
 * low half of each 64-bit lane) and added modulo 2^64 as the int16 kernels' sums are.  A rows
 * of k int32 values; B panels of NR values per k, stored sign-extended to int64 so that a
 * plain load puts each in its lane's low half (and an A value broadcast to every 32-bit
 * element is in every low half). */
static void sum_wide_portable(const int32_t *const arows[FX_MR], const int64_t *panel, int64_t k,
                              int64_t out[FX_MR][FX_NR])
{
    uint64_t acc[FX_MR][FX_NR] = { { 0 } };
    for (int64_t kk = 0; kk < k; kk++)
        for (int r = 0; r < FX_MR; r++) {
            int64_t a = arows[r][kk];
            const int64_t *b = panel + kk * FX_NR;
            for (int j = 0; j < FX_NR; j++) acc[r][j] += (uint64_t)(a * b[j]);   /* |a*b| < 2^62 */
        }
    memcpy(out, acc, sizeof acc);
}

#ifdef FX_X86
__attribute__((target("avx2")))
static void sum_wide_avx2(const int32_t *const arows[FX_MR], const int64_t *panel, int64_t k,
                          int64_t out[FX_MR][FX_NR])
{
    for (int r0 = 0; r0 < FX_MR; r0 += 2) {   /* two rows at a time: 8 sums in registers */
        __m256i acc[2][4];
        for (int r = 0; r < 2; r++)
            for (int h = 0; h < 4; h++) acc[r][h] = _mm256_setzero_si256();
        const int32_t *a0 = arows[r0], *a1 = arows[r0 + 1];
        for (int64_t kk = 0; kk < k; kk++) {
            __m256i x0 = _mm256_set1_epi32(a0[kk]), x1 = _mm256_set1_epi32(a1[kk]);
            _Pragma("GCC unroll 4")
            for (int h = 0; h < 4; h++) {
                __m256i b = _mm256_loadu_si256((const __m256i *)(panel + kk * FX_NR + 4 * h));
                acc[0][h] = _mm256_add_epi64(acc[0][h], _mm256_mul_epi32(x0, b));
                acc[1][h] = _mm256_add_epi64(acc[1][h], _mm256_mul_epi32(x1, b));
            }
        }
        for (int r = 0; r < 2; r++)
            for (int h = 0; h < 4; h++) _mm256_storeu_si256((__m256i *)(out[r0 + r] + 4 * h), acc[r][h]);
    }
}

__attribute__((target("avx512f")))
static void sum_wide_avx512(const int32_t *const arows[FX_MR], const int64_t *panel, int64_t k,
                            int64_t out[FX_MR][FX_NR])
{
    __m512i acc[FX_MR][2];
    for (int r = 0; r < FX_MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
    for (int64_t kk = 0; kk < k; kk++) {
        __m512i b0 = _mm512_loadu_si512((const void *)(panel + kk * FX_NR));
        __m512i b1 = _mm512_loadu_si512((const void *)(panel + kk * FX_NR + 8));
        _Pragma("GCC unroll 4")
        for (int r = 0; r < FX_MR; r++) {
            __m512i x = _mm512_set1_epi32(arows[r][kk]);
            acc[r][0] = _mm512_add_epi64(acc[r][0], _mm512_mul_epi32(x, b0));
            acc[r][1] = _mm512_add_epi64(acc[r][1], _mm512_mul_epi32(x, b1));
        }
    }
    for (int r = 0; r < FX_MR; r++) {
        _mm512_storeu_si512((void *)out[r], acc[r][0]);
        _mm512_storeu_si512((void *)(out[r] + 8), acc[r][1]);
    }
}
#endif

void acs_fixed_sum_wide(int isa, const int32_t *const arows[FX_MR], const int64_t *panel, int64_t k,
                        int64_t out[FX_MR][FX_NR])
{
#ifdef FX_X86
    if (isa == 2) { sum_wide_avx512(arows, panel, k, out); return; }
    if (isa == 1) { sum_wide_avx2(arows, panel, k, out); return; }
#endif
    (void)isa;
    sum_wide_portable(arows, panel, k, out);
}

/* ---- Sum of int32 operands in binary64 -------------------------------------------------------
 * The same integers (operands and products below 2^44 in magnitude, exact in binary64) through
 * FMAs: runs of `chunk` products have every partial sum an integer below 2^51, so each FMA is
 * exact; a run's sum then becomes an int64 exactly (adding 1.5 * 2^52 puts it in the low
 * mantissa bits) and joins the int64 sums modulo 2^64.  A rows of k values and B panels of NR
 * values per k, as doubles. */
static void sum_f64_portable(const double *const arows[FX_MR], const double *panel, int64_t k,
                             int64_t out[FX_MR][FX_NR])
{
    uint64_t acc[FX_MR][FX_NR] = { { 0 } };
    for (int64_t kk = 0; kk < k; kk++)
        for (int r = 0; r < FX_MR; r++) {
            int64_t a = (int64_t)arows[r][kk];   /* integers below 2^31 */
            const double *b = panel + kk * FX_NR;
            for (int j = 0; j < FX_NR; j++) acc[r][j] += (uint64_t)(a * (int64_t)b[j]);
        }
    memcpy(out, acc, sizeof acc);
}

#ifdef FX_X86
#define F64_MAGIC 6755399441055744.0   /* 1.5 * 2^52 */

__attribute__((target("avx2,fma")))
static void sum_f64_avx2(const double *const arows[FX_MR], const double *panel, int64_t k, int64_t chunk,
                         int64_t out[FX_MR][FX_NR])
{
    const __m256d magic = _mm256_set1_pd(F64_MAGIC);
    for (int r0 = 0; r0 < FX_MR; r0 += 2) {   /* two rows at a time: 8 sums in registers */
        __m256i wide[2][4];
        for (int r = 0; r < 2; r++)
            for (int h = 0; h < 4; h++) wide[r][h] = _mm256_setzero_si256();
        const double *a0 = arows[r0], *a1 = arows[r0 + 1];
        for (int64_t q0 = 0; q0 < k; q0 += chunk) {
            int64_t q1 = k - q0 < chunk ? k : q0 + chunk;
            __m256d acc[2][4];
            for (int r = 0; r < 2; r++)
                for (int h = 0; h < 4; h++) acc[r][h] = _mm256_setzero_pd();
            for (int64_t kk = q0; kk < q1; kk++) {
                __m256d x0 = _mm256_broadcast_sd(a0 + kk), x1 = _mm256_broadcast_sd(a1 + kk);
                _Pragma("GCC unroll 4")
                for (int h = 0; h < 4; h++) {
                    __m256d b = _mm256_loadu_pd(panel + kk * FX_NR + 4 * h);
                    acc[0][h] = _mm256_fmadd_pd(x0, b, acc[0][h]);
                    acc[1][h] = _mm256_fmadd_pd(x1, b, acc[1][h]);
                }
            }
            for (int r = 0; r < 2; r++)
                for (int h = 0; h < 4; h++)
                    wide[r][h] = _mm256_add_epi64(wide[r][h], _mm256_sub_epi64(
                        _mm256_castpd_si256(_mm256_add_pd(acc[r][h], magic)), _mm256_castpd_si256(magic)));
        }
        for (int r = 0; r < 2; r++)
            for (int h = 0; h < 4; h++) _mm256_storeu_si256((__m256i *)(out[r0 + r] + 4 * h), wide[r][h]);
    }
}

__attribute__((target("avx512f")))
static void sum_f64_avx512(const double *const arows[FX_MR], const double *panel, int64_t k, int64_t chunk,
                           int64_t out[FX_MR][FX_NR])
{
    const __m512d magic = _mm512_set1_pd(F64_MAGIC);
    __m512i wide[FX_MR][2];
    for (int r = 0; r < FX_MR; r++) wide[r][0] = wide[r][1] = _mm512_setzero_si512();
    for (int64_t q0 = 0; q0 < k; q0 += chunk) {
        int64_t q1 = k - q0 < chunk ? k : q0 + chunk;
        __m512d acc[FX_MR][2];
        for (int r = 0; r < FX_MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_pd();
        for (int64_t kk = q0; kk < q1; kk++) {
            __m512d b0 = _mm512_loadu_pd(panel + kk * FX_NR), b1 = _mm512_loadu_pd(panel + kk * FX_NR + 8);
            _Pragma("GCC unroll 4")
            for (int r = 0; r < FX_MR; r++) {
                __m512d x = _mm512_set1_pd(arows[r][kk]);
                acc[r][0] = _mm512_fmadd_pd(x, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_pd(x, b1, acc[r][1]);
            }
        }
        for (int r = 0; r < FX_MR; r++)
            for (int h = 0; h < 2; h++)
                wide[r][h] = _mm512_add_epi64(wide[r][h], _mm512_sub_epi64(
                    _mm512_castpd_si512(_mm512_add_pd(acc[r][h], magic)), _mm512_castpd_si512(magic)));
    }
    for (int r = 0; r < FX_MR; r++) {
        _mm512_storeu_si512((void *)out[r], wide[r][0]);
        _mm512_storeu_si512((void *)(out[r] + 8), wide[r][1]);
    }
}
#undef F64_MAGIC
#endif

void acs_fixed_sum_f64(int isa, const double *const arows[FX_MR], const double *panel, int64_t k, int64_t chunk,
                       int64_t out[FX_MR][FX_NR])
{
#ifdef FX_X86
    if (isa == 2) { sum_f64_avx512(arows, panel, k, chunk, out); return; }
    if (isa == 1) { sum_f64_avx2(arows, panel, k, chunk, out); return; }
#endif
    (void)isa; (void)chunk;
    sum_f64_portable(arows, panel, k, out);
}

/* ---- Clamp -------------------------------------------------------------------------------- */
static inline int64_t clamp64(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : x > hi ? hi : x; }

static void clamp_portable(const acs_fixed_plan *pl, const int16_t *const arows[FX_MR], const int16_t *panel,
                           int64_t k, int64_t tile, int64_t out[FX_MR][FX_NR])
{
    for (int r = 0; r < FX_MR; r++)
        for (int j = 0; j < FX_NR; j++) {
            int64_t total = 0;
            for (int64_t t0 = 0; t0 < k; t0 += tile) {
                int64_t t1 = k - t0 < tile ? k : t0 + tile, part = 0;
                for (int64_t kk = t0; kk < t1; kk++)
                    part = clamp64(part + (int64_t)arows[r][kk] * panel[(kk / 2) * 2 * FX_NR + 2 * j + (kk & 1)],
                                   pl->lo, pl->hi);
                total = clamp64(total + part, pl->lo, pl->hi);
            }
            out[r][j] = total;
        }
}

/* Steps that cannot reach a bound from partials whose largest magnitude is `big`. */
static inline int64_t free_steps(const acs_fixed_plan *pl, int64_t big)
{
    return pl->max_product ? (pl->hi - big) / pl->max_product : INT64_MAX;
}

/* a[kk] alone in a pmaddwd pair, at B's slot for kk. */
static inline int32_t single_pair(const int16_t *a, int64_t kk)
{
    uint32_t u = (uint16_t)a[kk];
    return (int32_t)(kk & 1 ? u << 16 : u);
}

#ifdef FX_X86
/* The widest run of unclamped steps from kk (at most `limit`, none past t1), through int32
 * pmaddwd sums: lanes of columns 0-7 in s[0], 8-15 in s[1]. */
#define CLAMP_RUN(zero)                                                                             \
    do {                                                                                             \
        s[0] = s[1] = zero;                                                                          \
        int64_t end_ = kk + limit;                                                                   \
        if (kk & 1) {                                                                                \
            madd_one(kk);                                                                            \
            kk++;                                                                                    \
        }                                                                                            \
        for (; kk + 1 < end_; kk += 2) {                                                             \
            int32_t pr_;                                                                             \
            memcpy(&pr_, a + kk, sizeof pr_);                                                        \
            madd_pair(pr_, kk);                                                                      \
        }                                                                                            \
        if (kk < end_) {                                                                             \
            madd_one(kk);                                                                            \
            kk++;                                                                                    \
        }                                                                                            \
    } while (0)

__attribute__((target("avx2")))
static void clamp_avx2(const acs_fixed_plan *pl, const int16_t *const arows[FX_MR], const int16_t *panel,
                       int64_t k, int64_t tile, int64_t out[FX_MR][FX_NR])
{
    const __m256i lo = _mm256_set1_epi64x(pl->lo), hi = _mm256_set1_epi64x(pl->hi);
    int64_t span32 = pl->max_product ? INT32_MAX / pl->max_product : INT64_MAX;   /* int32 sums stay exact */
    for (int r = 0; r < FX_MR; r++) {
        const int16_t *a = arows[r];
        __m256i total[4], part[4], s[2];
        for (int h = 0; h < 4; h++) total[h] = _mm256_setzero_si256();
#define madd_one(kk_)                                                                                \
        do {                                                                                         \
            __m256i av_ = _mm256_set1_epi32(single_pair(a, kk_));                                    \
            const int16_t *bp_ = panel + ((kk_) / 2) * 2 * FX_NR;                                    \
            s[0] = _mm256_add_epi32(s[0], _mm256_madd_epi16(av_, _mm256_loadu_si256((const __m256i *)bp_))); \
            s[1] = _mm256_add_epi32(s[1], _mm256_madd_epi16(av_, _mm256_loadu_si256((const __m256i *)(bp_ + 16)))); \
        } while (0)
#define madd_pair(pr, kk_)                                                                           \
        do {                                                                                         \
            __m256i av_ = _mm256_set1_epi32(pr);                                                     \
            const int16_t *bp_ = panel + ((kk_) / 2) * 2 * FX_NR;                                    \
            s[0] = _mm256_add_epi32(s[0], _mm256_madd_epi16(av_, _mm256_loadu_si256((const __m256i *)bp_))); \
            s[1] = _mm256_add_epi32(s[1], _mm256_madd_epi16(av_, _mm256_loadu_si256((const __m256i *)(bp_ + 16)))); \
        } while (0)
        for (int64_t t0 = 0; t0 < k; t0 += tile) {
            int64_t t1 = k - t0 < tile ? k : t0 + tile, kk = t0;
            for (int h = 0; h < 4; h++) part[h] = _mm256_setzero_si256();
            while (kk < t1) {
                int64_t lanes[FX_NR], big = 0;
                for (int h = 0; h < 4; h++) _mm256_storeu_si256((__m256i *)(lanes + 4 * h), part[h]);
                for (int j = 0; j < FX_NR; j++) {
                    int64_t v = lanes[j] < 0 ? -lanes[j] : lanes[j];
                    big = v > big ? v : big;
                }
                int64_t limit = free_steps(pl, big);
                if (limit > span32) limit = span32;
                if (limit > t1 - kk) limit = t1 - kk;
                if (limit >= 2) {
                    CLAMP_RUN(_mm256_setzero_si256());
                    for (int h = 0; h < 4; h++) {
                        __m128i x = h & 1 ? _mm256_extracti128_si256(s[h / 2], 1) : _mm256_castsi256_si128(s[h / 2]);
                        part[h] = _mm256_add_epi64(part[h], _mm256_cvtepi32_epi64(x));
                    }
                    continue;
                }
                for (int64_t end = kk + (t1 - kk < 8 ? t1 - kk : 8); kk < end; kk++) {
                    s[0] = s[1] = _mm256_setzero_si256();
                    madd_one(kk);
                    for (int h = 0; h < 4; h++) {
                        __m128i x = h & 1 ? _mm256_extracti128_si256(s[h / 2], 1) : _mm256_castsi256_si128(s[h / 2]);
                        __m256i v = _mm256_add_epi64(part[h], _mm256_cvtepi32_epi64(x));
                        v = _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
                        part[h] = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
                    }
                }
            }
            for (int h = 0; h < 4; h++) {
                __m256i v = _mm256_add_epi64(total[h], part[h]);
                v = _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
                total[h] = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
            }
        }
#undef madd_one
#undef madd_pair
        for (int h = 0; h < 4; h++) _mm256_storeu_si256((__m256i *)(out[r] + 4 * h), total[h]);
    }
}

__attribute__((target("avx512f,avx512bw")))
static void clamp_avx512(const acs_fixed_plan *pl, const int16_t *const arows[FX_MR], const int16_t *panel,
                         int64_t k, int64_t tile, int64_t out[FX_MR][FX_NR])
{
    const __m512i lo = _mm512_set1_epi64(pl->lo), hi = _mm512_set1_epi64(pl->hi);
    int64_t span32 = pl->max_product ? INT32_MAX / pl->max_product : INT64_MAX;
    for (int r = 0; r < FX_MR; r++) {
        const int16_t *a = arows[r];
        __m512i total[2], part[2], s[2];
        total[0] = total[1] = _mm512_setzero_si512();
#define madd_one(kk_)                                                                                \
        s[0] = _mm512_add_epi32(s[0], _mm512_madd_epi16(_mm512_set1_epi32(single_pair(a, kk_)),      \
                                                        _mm512_loadu_si512((const void *)(panel + ((kk_) / 2) * 2 * FX_NR))))
#define madd_pair(pr, kk_)                                                                           \
        s[0] = _mm512_add_epi32(s[0], _mm512_madd_epi16(_mm512_set1_epi32(pr),                       \
                                                        _mm512_loadu_si512((const void *)(panel + ((kk_) / 2) * 2 * FX_NR))))
        for (int64_t t0 = 0; t0 < k; t0 += tile) {
            int64_t t1 = k - t0 < tile ? k : t0 + tile, kk = t0;
            part[0] = part[1] = _mm512_setzero_si512();
            while (kk < t1) {
                int64_t big = _mm512_reduce_max_epi64(_mm512_max_epi64(_mm512_abs_epi64(part[0]), _mm512_abs_epi64(part[1])));
                int64_t limit = free_steps(pl, big);
                if (limit > span32) limit = span32;
                if (limit > t1 - kk) limit = t1 - kk;
                if (limit >= 2) {
                    CLAMP_RUN(_mm512_setzero_si512());
                    part[0] = _mm512_add_epi64(part[0], _mm512_cvtepi32_epi64(_mm512_castsi512_si256(s[0])));
                    part[1] = _mm512_add_epi64(part[1], _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(s[0], 1)));
                    continue;
                }
                for (int64_t end = kk + (t1 - kk < 8 ? t1 - kk : 8); kk < end; kk++) {
                    s[0] = _mm512_setzero_si512();
                    madd_one(kk);
                    __m512i v0 = _mm512_add_epi64(part[0], _mm512_cvtepi32_epi64(_mm512_castsi512_si256(s[0])));
                    __m512i v1 = _mm512_add_epi64(part[1], _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(s[0], 1)));
                    part[0] = _mm512_max_epi64(_mm512_min_epi64(v0, hi), lo);
                    part[1] = _mm512_max_epi64(_mm512_min_epi64(v1, hi), lo);
                }
            }
            total[0] = _mm512_max_epi64(_mm512_min_epi64(_mm512_add_epi64(total[0], part[0]), hi), lo);
            total[1] = _mm512_max_epi64(_mm512_min_epi64(_mm512_add_epi64(total[1], part[1]), hi), lo);
        }
#undef madd_one
#undef madd_pair
        _mm512_storeu_si512((void *)out[r], total[0]);
        _mm512_storeu_si512((void *)(out[r] + 8), total[1]);
    }
}
#undef CLAMP_RUN

/* Registers of at most 30 bits with products below 2^29: the same in int32 lanes (a partial
 * plus a product, or two partials, stay below 2^31), the MR rows together so that their
 * clamps overlap. */
#define CLAMP32_BODY(V, NV, set1, add, madd, vmin, vmax, load, zero, big_of)                         \
    const V lo = set1((int32_t)pl->lo), hi = set1((int32_t)pl->hi);                                  \
    V total[FX_MR][NV], part[FX_MR][NV];                                                             \
    for (int r = 0; r < FX_MR; r++)                                                                  \
        for (int h = 0; h < NV; h++) total[r][h] = zero;                                             \
    for (int64_t t0 = 0; t0 < k; t0 += tile) {                                                       \
        int64_t t1 = k - t0 < tile ? k : t0 + tile, kk = t0;                                         \
        for (int r = 0; r < FX_MR; r++)                                                              \
            for (int h = 0; h < NV; h++) part[r][h] = zero;                                          \
        while (kk < t1) {                                                                            \
            int64_t limit = free_steps(pl, big_of(part));                                            \
            if (limit > t1 - kk) limit = t1 - kk;                                                    \
            int clamp = limit < 2;                                                                   \
            int64_t end = kk + (clamp ? (t1 - kk < 8 ? t1 - kk : 8) : limit);                       \
            while (kk < end) {                                                                       \
                int two = !clamp && !(kk & 1) && kk + 1 < end;   /* a whole pair, unclamped */       \
                V b[NV];                                                                             \
                for (int h = 0; h < NV; h++) b[h] = load(panel + (kk / 2) * 2 * FX_NR + h * (2 * FX_NR / NV)); \
                _Pragma("GCC unroll 4")                                                              \
                for (int r = 0; r < FX_MR; r++) {                                                    \
                    int32_t pr;                                                                      \
                    if (two) memcpy(&pr, arows[r] + kk, sizeof pr);                                  \
                    else pr = single_pair(arows[r], kk);                                             \
                    V av = set1(pr);                                                                 \
                    for (int h = 0; h < NV; h++) {                                                   \
                        V v = add(part[r][h], madd(av, b[h]));                                       \
                        part[r][h] = clamp ? vmax(vmin(v, hi), lo) : v;                              \
                    }                                                                                \
                }                                                                                    \
                kk += two ? 2 : 1;                                                                   \
            }                                                                                        \
        }                                                                                            \
        for (int r = 0; r < FX_MR; r++)                                                              \
            for (int h = 0; h < NV; h++) total[r][h] = vmax(vmin(add(total[r][h], part[r][h]), hi), lo); \
    }

static inline __attribute__((always_inline, target("avx2"))) int64_t big_avx2(__m256i part[FX_MR][2])
{
    __m256i m = _mm256_setzero_si256();
    for (int r = 0; r < FX_MR; r++)
        for (int h = 0; h < 2; h++) m = _mm256_max_epi32(m, _mm256_abs_epi32(part[r][h]));
    int32_t lanes[8], big = 0;
    _mm256_storeu_si256((__m256i *)lanes, m);
    for (int j = 0; j < 8; j++) big = lanes[j] > big ? lanes[j] : big;
    return big;
}

static inline __attribute__((always_inline, target("avx2"))) __m256i load_avx2(const int16_t *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

__attribute__((target("avx2")))
static void clamp32_avx2(const acs_fixed_plan *pl, const int16_t *const arows[FX_MR], const int16_t *panel,
                         int64_t k, int64_t tile, int64_t out[FX_MR][FX_NR])
{
    CLAMP32_BODY(__m256i, 2, _mm256_set1_epi32, _mm256_add_epi32, _mm256_madd_epi16, _mm256_min_epi32,
                 _mm256_max_epi32, load_avx2, _mm256_setzero_si256(), big_avx2)
    for (int r = 0; r < FX_MR; r++)
        for (int h = 0; h < 4; h++) {
            __m128i x = h & 1 ? _mm256_extracti128_si256(total[r][h / 2], 1) : _mm256_castsi256_si128(total[r][h / 2]);
            _mm256_storeu_si256((__m256i *)(out[r] + 4 * h), _mm256_cvtepi32_epi64(x));
        }
}

static inline __attribute__((always_inline, target("avx512f,avx512bw"))) int64_t big_avx512(__m512i part[FX_MR][1])
{
    __m512i m = _mm512_abs_epi32(part[0][0]);
    for (int r = 1; r < FX_MR; r++) m = _mm512_max_epi32(m, _mm512_abs_epi32(part[r][0]));
    return _mm512_reduce_max_epi32(m);
}

static inline __attribute__((always_inline, target("avx512f,avx512bw"))) __m512i load_avx512(const int16_t *p)
{
    return _mm512_loadu_si512((const void *)p);
}

__attribute__((target("avx512f,avx512bw")))
static void clamp32_avx512(const acs_fixed_plan *pl, const int16_t *const arows[FX_MR], const int16_t *panel,
                           int64_t k, int64_t tile, int64_t out[FX_MR][FX_NR])
{
    CLAMP32_BODY(__m512i, 1, _mm512_set1_epi32, _mm512_add_epi32, _mm512_madd_epi16, _mm512_min_epi32,
                 _mm512_max_epi32, load_avx512, _mm512_setzero_si512(), big_avx512)
    for (int r = 0; r < FX_MR; r++) {
        _mm512_storeu_si512((void *)out[r], _mm512_cvtepi32_epi64(_mm512_castsi512_si256(total[r][0])));
        _mm512_storeu_si512((void *)(out[r] + 8), _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(total[r][0], 1)));
    }
}
#undef CLAMP32_BODY
#endif

/* Clamp over int32 operands (A rows of k values, B panels of NR int64 values per k): products
 * exact in int64 lanes (pmuldq), each row's 16 outputs clamped after every step, steps that
 * cannot reach a bound (free_steps) added unclamped. */
static void clamp_wide_portable(const acs_fixed_plan *pl, const int32_t *const arows[FX_MR], const int64_t *panel,
                                int64_t k, int64_t tile, int64_t out[FX_MR][FX_NR])
{
    for (int r = 0; r < FX_MR; r++)
        for (int j = 0; j < FX_NR; j++) {
            int64_t total = 0;
            for (int64_t t0 = 0; t0 < k; t0 += tile) {
                int64_t t1 = k - t0 < tile ? k : t0 + tile, part = 0;
                for (int64_t kk = t0; kk < t1; kk++)
                    part = clamp64(part + (int64_t)arows[r][kk] * panel[kk * FX_NR + j], pl->lo, pl->hi);
                total = clamp64(total + part, pl->lo, pl->hi);
            }
            out[r][j] = total;
        }
}

#ifdef FX_X86
__attribute__((target("avx2")))
static void clamp_wide_avx2(const acs_fixed_plan *pl, const int32_t *const arows[FX_MR], const int64_t *panel,
                            int64_t k, int64_t tile, int64_t out[FX_MR][FX_NR])
{
    const __m256i lo = _mm256_set1_epi64x(pl->lo), hi = _mm256_set1_epi64x(pl->hi);
    for (int r = 0; r < FX_MR; r++) {
        const int32_t *a = arows[r];
        __m256i total[4], part[4];
        for (int h = 0; h < 4; h++) total[h] = _mm256_setzero_si256();
        for (int64_t t0 = 0; t0 < k; t0 += tile) {
            int64_t t1 = k - t0 < tile ? k : t0 + tile, kk = t0;
            for (int h = 0; h < 4; h++) part[h] = _mm256_setzero_si256();
            while (kk < t1) {
                int64_t lanes[FX_NR], big = 0;
                for (int h = 0; h < 4; h++) _mm256_storeu_si256((__m256i *)(lanes + 4 * h), part[h]);
                for (int j = 0; j < FX_NR; j++) {
                    int64_t v = lanes[j] < 0 ? -lanes[j] : lanes[j];
                    big = v > big ? v : big;
                }
                int64_t limit = free_steps(pl, big);
                if (limit > t1 - kk) limit = t1 - kk;
                int clamp = limit < 2;
                int64_t end = kk + (clamp ? (t1 - kk < 8 ? t1 - kk : 8) : limit);
                for (; kk < end; kk++) {
                    __m256i x = _mm256_set1_epi32(a[kk]);
                    for (int h = 0; h < 4; h++) {
                        __m256i v = _mm256_add_epi64(part[h], _mm256_mul_epi32(x, _mm256_loadu_si256((const __m256i *)(panel + kk * FX_NR + 4 * h))));
                        if (clamp) {
                            v = _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
                            v = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
                        }
                        part[h] = v;
                    }
                }
            }
            for (int h = 0; h < 4; h++) {
                __m256i v = _mm256_add_epi64(total[h], part[h]);
                v = _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
                total[h] = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
            }
        }
        for (int h = 0; h < 4; h++) _mm256_storeu_si256((__m256i *)(out[r] + 4 * h), total[h]);
    }
}

__attribute__((target("avx512f")))
static void clamp_wide_avx512(const acs_fixed_plan *pl, const int32_t *const arows[FX_MR], const int64_t *panel,
                              int64_t k, int64_t tile, int64_t out[FX_MR][FX_NR])
{
    /* The MR rows together (B loaded once per step): free runs are bounded by the largest
     * partial of the block, which is no more than each row's own bound allows. */
    const __m512i lo = _mm512_set1_epi64(pl->lo), hi = _mm512_set1_epi64(pl->hi);
    __m512i total[FX_MR][2], part[FX_MR][2];
    for (int r = 0; r < FX_MR; r++) total[r][0] = total[r][1] = _mm512_setzero_si512();
    for (int64_t t0 = 0; t0 < k; t0 += tile) {
        int64_t t1 = k - t0 < tile ? k : t0 + tile, kk = t0;
        for (int r = 0; r < FX_MR; r++) part[r][0] = part[r][1] = _mm512_setzero_si512();
        while (kk < t1) {
            __m512i m = _mm512_setzero_si512();
            for (int r = 0; r < FX_MR; r++)
                m = _mm512_max_epi64(m, _mm512_max_epi64(_mm512_abs_epi64(part[r][0]), _mm512_abs_epi64(part[r][1])));
            int64_t limit = free_steps(pl, _mm512_reduce_max_epi64(m));
            if (limit > t1 - kk) limit = t1 - kk;
            int clamp = limit < 2;
            int64_t end = kk + (clamp ? (t1 - kk < 8 ? t1 - kk : 8) : limit);
            for (; kk < end; kk++) {
                __m512i b0 = _mm512_loadu_si512((const void *)(panel + kk * FX_NR));
                __m512i b1 = _mm512_loadu_si512((const void *)(panel + kk * FX_NR + 8));
                _Pragma("GCC unroll 4")
                for (int r = 0; r < FX_MR; r++) {
                    __m512i x = _mm512_set1_epi32(arows[r][kk]);
                    __m512i v0 = _mm512_add_epi64(part[r][0], _mm512_mul_epi32(x, b0));
                    __m512i v1 = _mm512_add_epi64(part[r][1], _mm512_mul_epi32(x, b1));
                    part[r][0] = clamp ? _mm512_max_epi64(_mm512_min_epi64(v0, hi), lo) : v0;
                    part[r][1] = clamp ? _mm512_max_epi64(_mm512_min_epi64(v1, hi), lo) : v1;
                }
            }
        }
        for (int r = 0; r < FX_MR; r++)
            for (int h = 0; h < 2; h++)
                total[r][h] = _mm512_max_epi64(_mm512_min_epi64(_mm512_add_epi64(total[r][h], part[r][h]), hi), lo);
    }
    for (int r = 0; r < FX_MR; r++) {
        _mm512_storeu_si512((void *)out[r], total[r][0]);
        _mm512_storeu_si512((void *)(out[r] + 8), total[r][1]);
    }
}
#endif

void acs_fixed_clamp_wide(int isa, const acs_fixed_plan *plan, const int32_t *const arows[FX_MR],
                          const int64_t *panel, int64_t k, int64_t tile, int64_t out[FX_MR][FX_NR])
{
#ifdef FX_X86
    if (isa == 2) { clamp_wide_avx512(plan, arows, panel, k, tile, out); return; }
    if (isa == 1) { clamp_wide_avx2(plan, arows, panel, k, tile, out); return; }
#endif
    (void)isa;
    clamp_wide_portable(plan, arows, panel, k, tile, out);
}

void acs_fixed_clamp(int isa, const acs_fixed_plan *plan, const int16_t *const arows[FX_MR],
                     const int16_t *panel, int64_t k, int64_t tile, int64_t out[FX_MR][FX_NR])
{
#ifdef FX_X86
    int narrow = plan->hi < ((int64_t)1 << 29) && plan->max_product < ((int64_t)1 << 29);
    if (isa == 2) { (narrow ? clamp32_avx512 : clamp_avx512)(plan, arows, panel, k, tile, out); return; }
    if (isa == 1) { (narrow ? clamp32_avx2 : clamp_avx2)(plan, arows, panel, k, tile, out); return; }
#endif
    (void)isa;
    clamp_portable(plan, arows, panel, k, tile, out);
}

#undef FX_MR
#undef FX_NR
