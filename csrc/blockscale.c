/* blockscale.c: block-scaled dot products (OCP MX, VS-Quant).  Each K-block's partial sum
 * (a block of the array's usual accumulation) is multiplied exactly by the product of its two
 * block scales and joins a running output register, the MAC's scale accumulator, with that
 * register's one rounding per step (acs_acc_add).  No rounding code of its own: the scaled
 * partial is an exact product, and the join is accumulate.c's buffer add. */
#include <math.h>
#include <string.h>
#include "internal.h"

int64_t acs_join_state_size(void) { return (int64_t)sizeof(acs_acc_state); }

/* A float64's exact value with trailing zero bits stripped from its significand. */
static acs_real exact_double(double v, int *cls)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    acs_real x = acs_real_from_bits(u, 64, cls);
    if (*cls == ACS_FINITE) {
        int tz = __builtin_ctzll((uint64_t)x.sig);
        x.sig >>= tz;
        x.exp += tz;
    }
    return x;
}

static inline int bit_length(acs_u128 x) { return x ? 128 - acs_clz128(x) : 0; }

/* p * sa * sb as an accumulator state of kind FLOAT (its rounded value exact), or an error
 * when the exact product would not fit 127 bits (scales are powers of two or small integers). */
static int scaled_partial(acs_real p, int pcls, double sa, double sb, acs_acc_state *out)
{
    int acls, bcls;
    acs_real a = exact_double(sa, &acls), b = exact_double(sb, &bcls);
    memset(out, 0, sizeof *out);
    out->v.neg = p.neg ^ a.neg ^ b.neg;
    int any_nan = pcls == ACS_NAN || acls == ACS_NAN || bcls == ACS_NAN;
    int any_inf = pcls == ACS_INF || acls == ACS_INF || bcls == ACS_INF;
    int any_zero = pcls == ACS_ZERO || acls == ACS_ZERO || bcls == ACS_ZERO;
    if (any_nan || (any_inf && any_zero)) { out->v.cls = ACS_NAN; out->v.neg = 0; return ACS_OK; }
    if (any_inf) { out->v.cls = ACS_INF; return ACS_OK; }
    if (any_zero) { out->v.cls = ACS_ZERO; return ACS_OK; }
    if (bit_length(p.sig) + bit_length(a.sig) + bit_length(b.sig) > 127) return ACS_ERR_ARG;
    out->v.cls = ACS_FINITE;
    out->v.kept = p.sig * a.sig * b.sig;
    out->v.q = p.exp + a.exp + b.exp;
    return ACS_OK;
}

int acs_join_start(const acs_acc *scale_acc, void *state, int64_t count)
{
    if (!scale_acc || count < 0 || (count && !state) || acs_check_acc(scale_acc) != ACS_OK
        || (scale_acc->kind != ACS_ACC_FLOAT && scale_acc->kind != ACS_ACC_FIXED))
        return ACS_ERR_ARG;
    acs_acc_state s = acs_acc_start(scale_acc, 0.0);
    for (int64_t i = 0; i < count; i++) memcpy((char *)state + i * (int64_t)sizeof s, &s, sizeof s);
    return ACS_OK;
}

/* One output's join: state <- state + partial * sa * sb, rounded once (acs_join_block's step). */
static int join_one(const acs_acc *scale_acc, acs_acc_state *state, double partial, const int64_t *partial_int,
                    double sa, double sb, uint64_t seed, uint64_t element, uint64_t step)
{
    static const acs_acc from = { ACS_ACC_FLOAT };  /* the scaled partial: an exact float value */
    acs_real p = { 0, 0, 0, 0 };
    int pcls;
    if (partial_int) {
        int64_t v = *partial_int;
        pcls = v ? ACS_FINITE : ACS_ZERO;
        p.neg = v < 0;
        p.sig = v < 0 ? (acs_u128)(-(v + 1)) + 1 : (acs_u128)v;
    } else {
        p = exact_double(partial, &pcls);
    }
    acs_acc_state term;
    int status = scaled_partial(p, pcls, sa, sb, &term);
    if (status) return status;
    uint32_t rand = scale_acc->rounding == ACS_SR ? acs_rand32(seed, element, step) : 0;
    return acs_acc_add(scale_acc, state, &from, &term, rand);
}

int acs_join_block(const acs_acc *scale_acc, void *state, const double *partial, const int64_t *partial_int,
                   int64_t m, int64_t n, const double *sa, int64_t sa_stride, const double *sb,
                   int64_t sb_stride, uint64_t seed, uint64_t step)
{
    if (!scale_acc || m < 0 || n < 0 || (m && n && (!state || (!partial && !partial_int) || !sa || !sb))
        || (n && m > INT64_MAX / n) || acs_check_acc(scale_acc) != ACS_OK
        || (scale_acc->kind != ACS_ACC_FLOAT && scale_acc->kind != ACS_ACC_FIXED))
        return ACS_ERR_ARG;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            int64_t e = i * n + j;
            acs_acc_state s;
            memcpy(&s, (char *)state + e * (int64_t)sizeof s, sizeof s);
            int status = join_one(scale_acc, &s, partial_int ? 0.0 : partial[e], partial_int ? partial_int + e : NULL,
                                  sa[i * sa_stride], sb[j * sb_stride], seed, (uint64_t)e, step);
            if (status) return status;
            memcpy((char *)state + e * (int64_t)sizeof s, &s, sizeof s);
        }
    return ACS_OK;
}

int acs_join_read(const acs_acc *scale_acc, const void *state, int64_t count, double *out)
{
    if (!scale_acc || count < 0 || (count && (!state || !out)))
        return ACS_ERR_ARG;
    for (int64_t i = 0; i < count; i++) {
        acs_acc_state s;
        memcpy(&s, (const char *)state + i * (int64_t)sizeof s, sizeof s);
        acs_acc_read(scale_acc, &s, out + i, NULL);
    }
    return ACS_OK;
}

/* ---- The whole block-scaled GEMM in one call ------------------------------------------------
 * Each K-block's partial is the array's usual accumulation over that block alone (from zero,
 * in dataflow order, stochastic rounding seeded per block as docs/scaling.md states), joined
 * into the output register by join_one's rule.  Where array.c's fp32 or 16-bit integer vector
 * kernel would run each block, the partials are made here by kernels of the same arithmetic on
 * operands decoded once, MR x NR outputs at a time, and joined at once; every other MAC runs
 * acs_gemm per block.  When every scaled partial is provably exact in binary32 and the register
 * is IEEE fp32 (rne), the join is one native fp32 add, kept in vector registers. */
#include <pthread.h>
#include <stdlib.h>

#define BS_MR 4
#define BS_NR 16
#define BS_CHUNK 16   /* blocks of partials kept per tile when joined one by one */
typedef float bs_vf8 __attribute__((vector_size(32)));
#pragma GCC diagnostic ignored "-Wpsabi"   /* vector helpers are always inlined: no ABI crosses */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define BS_X86 1
#endif

enum { BS_KERNEL_NONE = 0, BS_KERNEL_FP32 = 1, BS_KERNEL_INT = 2 };

static inline uint64_t bs_block_seed(uint64_t seed, int64_t blk)   /* docs/scaling.md: the seed of block blk's chains */
{
    return seed + (uint64_t)(blk + 1) * 0x9E3779B97F4A7C15ULL;
}

static inline __attribute__((always_inline)) uint64_t bs_code(const void *codes, int64_t i, int wide)
{
    return wide ? ((const uint16_t *)codes)[i] : ((const uint8_t *)codes)[i];
}

/* Which of the kernels here gives acs_gemm's bits for a block of `bs`: the conditions of
 * array.c's vector_path for its fp32 and integer kernels. */
static int bs_kernel_of(const acs_mac_ctx *ctx, const acs_acc *buffer, int dataflow, int64_t bs)
{
    const acs_acc *pe = &ctx->mac->acc;
    if (ctx->fast == ACS_FAST_FP32)
        return dataflow == ACS_OS || (buffer->kind == ACS_ACC_FLOAT && buffer->rounding == ACS_RNE
            && buffer->overflow == ACS_OVF_INF && !memcmp(&buffer->grid, &pe->grid, sizeof pe->grid)
            && !memcmp(&buffer->addend, &pe->addend, sizeof pe->addend)) ? BS_KERNEL_FP32 : BS_KERNEL_NONE;
    if ((ctx->fast == ACS_FAST_INT_WRAP || acs_int_sat_exact(ctx, 0, bs)) && pe->grid.total_bits <= 32) {
        for (int s = 0; s < 2; s++)   /* operand values must fit int16 */
            for (uint64_t c = 0; c < (1ULL << (s ? ctx->mac->b.bits : ctx->mac->a.bits)); c++) {
                int64_t v = (s ? ctx->ib : ctx->ia)[c];
                if (v < INT16_MIN || v > INT16_MAX) return BS_KERNEL_NONE;
            }
        return dataflow == ACS_OS || (buffer->kind == ACS_ACC_INT && buffer->overflow == pe->overflow
            && buffer->grid.total_bits == pe->grid.total_bits) ? BS_KERNEL_INT : BS_KERNEL_NONE;
    }
    return BS_KERNEL_NONE;
}

/* A finite nonzero value as odd * 2^lsb (odd an odd integer); 0 for zero, inf, NaN. */
static inline int bs_split(double x, double *odd, int *lsb)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    int e = (int)((u >> 52) & 0x7FF);
    uint64_t sig = u & ((1ULL << 52) - 1);
    if (e == 0x7FF || (e == 0 && sig == 0)) return 0;
    if (e) sig |= 1ULL << 52;
    int tz = __builtin_ctzll(sig);
    *odd = (double)(sig >> tz);
    *lsb = (e ? e : 1) - 1075 + tz;
    return 1;
}

/* Bounds over the finite nonzero values: largest magnitude, smallest lsb, largest odd part;
 * 0 when one is not a binary32 (normal or subnormal). */
static int bs_bounds(const double *v, int64_t count, double *max, double *lsb, double *odd)
{
    double top = 0, o, big = 1;
    int low = 0, l, any = 0;
    for (int64_t i = 0; i < count; i++) {
        double x = fabs(v[i]);
        if (!bs_split(x, &o, &l)) continue;
        if (o >= 0x1p24 || l < -149 || x >= 0x1p127) return 0;
        if (!any || l < low) low = l;
        if (x > top) top = x;
        if (o > big) big = o;
        any = 1;
    }
    *max = top;
    *lsb = ldexp(1.0, low);
    *odd = big;
    return 1;
}

static int bs_ieee_fp32(const acs_acc *acc)   /* an IEEE binary32 register, rne */
{
    const acs_grid *g = &acc->grid;
    return acc->kind == ACS_ACC_FLOAT && acc->rounding == ACS_RNE && acc->overflow == ACS_OVF_INF
        && g->man_bits == 23 && g->emin == -126 && g->emax == 127 && g->max_sig == (1ULL << 24) - 1 && g->subnormals;
}

/* The join may be native fp32: an IEEE fp32 register (rne) and every partial * sa * sb exact in
 * binary32.  A partial is c * L with |c| < 2^B (L: the products' common lsb, or 1 for
 * integers; B from the block's largest |partial|, at most 24 for fp32 partials), a scale is
 * odd * lsb; so c * odd_a * odd_b < 2^24, L * lsb_a * lsb_b >= 2^-149 and the largest product
 * below 2^127 make it exact.  NaN, inf and zero partials or scales then follow IEEE arithmetic,
 * as the exact join does. */
static int bs_fast_join(const acs_mac_ctx *ctx, const acs_acc *sacc, int kernel, int64_t bs, const double *sa,
                        int64_t na, const double *sb, int64_t nbv)
{
    if (!bs_ieee_fp32(sacc) || bs > (1 << 20)) return 0;   /* 2x: room for 2 * 2^20 fp32 roundings */
    double max_a, lsb_a, odd_a, max_b, lsb_b, odd_b, P, L;
    int B;
    if (!bs_bounds(sa, na, &max_a, &lsb_a, &odd_a) || !bs_bounds(sb, nbv, &max_b, &lsb_b, &odd_b)) return 0;
    if (kernel == BS_KERNEL_FP32) {
        double top[2] = { 0, 0 }, low[2] = { 1, 1 };
        for (int s = 0; s < 2; s++) {
            int any = 0;
            for (uint64_t c = 0; c < (1ULL << (s ? ctx->mac->b.bits : ctx->mac->a.bits)); c++) {
                double o, x = fabs((double)(s ? ctx->fb : ctx->fa)[c]);
                int e;
                if (!bs_split(x, &o, &e)) continue;
                double l = ldexp(1.0, e);
                if (!any || l < low[s]) low[s] = l;
                if (x > top[s]) top[s] = x;
                any = 1;
            }
        }
        P = 2.0 * (double)bs * top[0] * top[1];   /* with room for the chain's roundings */
        L = low[0] * low[1];
        B = P < L ? 1 : ilogb(P / L) + 1;
        if (B > 24) B = 24;
    } else {
        int64_t ma = 0, mb = 0;
        for (uint64_t c = 0; c < (1ULL << ctx->mac->a.bits); c++) ma = llabs(ctx->ia[c]) > ma ? llabs(ctx->ia[c]) : ma;
        for (uint64_t c = 0; c < (1ULL << ctx->mac->b.bits); c++) mb = llabs(ctx->ib[c]) > mb ? llabs(ctx->ib[c]) : mb;
        P = ldexp(1.0, ctx->mac->acc.grid.total_bits - 1);   /* a wrapped partial's bound */
        if ((double)bs * (double)ma * (double)mb < P) P = (double)bs * (double)ma * (double)mb;
        L = 1;
        B = P < 1 ? 1 : ilogb(P) + 1;
    }
    return ldexp(odd_a * odd_b, B) <= 0x1p24 && L * lsb_a * lsb_b >= 0x1p-149 && P * max_a * max_b < 0x1p127
        && odd_a * odd_b <= 0x1p24 && lsb_a * lsb_b >= 0x1p-149 && max_a * max_b < 0x1p127;
}

/* Integer scales folded into integer operands (VS-Quant): a * sa and b * sb still fit int16 and
 * the block's sum of their products, partial * sa * sb, stays below 2^24 (no wrap, exact in
 * binary32, and the partial itself does not wrap either), so the join is one add. */
static int bs_fold(const acs_mac_ctx *ctx, int64_t bs, const double *sa, int64_t na, const double *sb, int64_t nbv)
{
    double top[2] = { 0, 0 }, smax[2] = { 0, 0 };
    for (int s = 0; s < 2; s++) {
        for (uint64_t c = 0; c < (1ULL << (s ? ctx->mac->b.bits : ctx->mac->a.bits)); c++) {
            double v = fabs((double)(s ? ctx->ib : ctx->ia)[c]);
            if (v > top[s]) top[s] = v;
        }
        const double *v = s ? sb : sa;
        for (int64_t i = 0; i < (s ? nbv : na); i++) {
            double x = fabs(v[i]);
            if (!(x <= 32767) || (double)(int)x != x) return 0;   /* NaN and fractions too */
            if (x > smax[s]) smax[s] = x;
        }
    }
    double p = (double)bs * top[0] * top[1];
    return top[0] * smax[0] <= 32767 && top[1] * smax[1] <= 32767 && p * smax[0] * smax[1] < 0x1p24
        && p < ldexp(1.0, ctx->mac->acc.grid.total_bits - 1);
}

/* One tile (BS_MR rows x BS_NR columns) over blocks [b0, b1): partials to parts[blk - b0], or
 * joined into T (fp32) when parts is NULL. */
typedef struct {
    const float *arows[BS_MR], *panel;      /* fp32 kernel: A rows, the B panel (K x BS_NR) */
    const int16_t *irows[BS_MR], *ipanel;   /* integer kernel: the same, B in pairs of k */
    const float *sa[BS_MR], *sb;            /* fast join: row scales (nb each), panel scales (nb x BS_NR) */
    int64_t b0, b1, bsp, bs, tile;          /* blocks bsp codes apart, bs long, tiles of the dataflow */
    int sh;                                 /* integer kernel: 32 - register bits */
    int fold;                               /* integer kernel: scales folded into the operands */
} bs_tile;

/* As array.c's fp32_block per block: each tile of the block summed from zero in k order, the
 * tile sums added to a zero buffer in order. */
static inline __attribute__((always_inline))
void bs_fp32_tile(const bs_tile *w, float T[BS_MR][BS_NR], float (*parts)[BS_MR][BS_NR])
{
    for (int64_t blk = w->b0; blk < w->b1; blk++) {
        int64_t k0 = blk * w->bsp, k1 = k0 + w->bs;
        bs_vf8 total[BS_MR][2], acc[BS_MR][2];
        for (int r = 0; r < BS_MR; r++) total[r][0] = total[r][1] = (bs_vf8){0};
        for (int64_t t0 = k0; t0 < k1; t0 += w->tile) {
            int64_t t1 = t0 + w->tile < k1 ? t0 + w->tile : k1;
            for (int r = 0; r < BS_MR; r++) acc[r][0] = acc[r][1] = (bs_vf8){0};
            for (int64_t kk = t0; kk < t1; kk++) {
                bs_vf8 b0, b1;
                memcpy(&b0, w->panel + kk * BS_NR, sizeof b0);
                memcpy(&b1, w->panel + kk * BS_NR + 8, sizeof b1);
                _Pragma("GCC unroll 8")
                for (int r = 0; r < BS_MR; r++) {
                    float x = w->arows[r][kk];
                    bs_vf8 av = { x, x, x, x, x, x, x, x };
                    acc[r][0] = acc[r][0] + av * b0;
                    acc[r][1] = acc[r][1] + av * b1;
                }
            }
            for (int r = 0; r < BS_MR; r++) {   /* one tile: 0 + acc is acc (never -0; NaN stays NaN) */
                total[r][0] = w->tile >= w->bs ? acc[r][0] : total[r][0] + acc[r][0];
                total[r][1] = w->tile >= w->bs ? acc[r][1] : total[r][1] + acc[r][1];
            }
        }
        if (parts) {
            for (int r = 0; r < BS_MR; r++) {
                memcpy(parts[blk - w->b0][r], &total[r][0], sizeof total[r][0]);
                memcpy(parts[blk - w->b0][r] + 8, &total[r][1], sizeof total[r][1]);
            }
            continue;
        }
        bs_vf8 s0, s1, t;
        memcpy(&s0, w->sb + blk * BS_NR, sizeof s0);
        memcpy(&s1, w->sb + blk * BS_NR + 8, sizeof s1);
        for (int r = 0; r < BS_MR; r++) {   /* exact products: one fp32 rounding per add */
            float x = w->sa[r][blk];
            bs_vf8 av = { x, x, x, x, x, x, x, x };
            memcpy(&t, T[r], sizeof t);
            t = t + total[r][0] * (av * s0);
            memcpy(T[r], &t, sizeof t);
            memcpy(&t, T[r] + 8, sizeof t);
            t = t + total[r][1] * (av * s1);
            memcpy(T[r] + 8, &t, sizeof t);
        }
    }
}

static void bs_fp32_tile_portable(const bs_tile *w, float T[BS_MR][BS_NR], float (*parts)[BS_MR][BS_NR])
{
    bs_fp32_tile(w, T, parts);
}

/* As array.c's int16 kernel per block: the block's sum modulo 2^32, wrapped to the register. */
static void bs_int_tile_portable(const bs_tile *w, float T[BS_MR][BS_NR], int32_t (*parts)[BS_MR][BS_NR])
{
    for (int64_t blk = w->b0; blk < w->b1; blk++) {
        uint32_t acc[BS_MR][BS_NR] = { { 0 } };
        const int16_t *pan = w->ipanel + blk * w->bsp * BS_NR;
        for (int64_t q = 0; q < w->bsp / 2; q++)
            for (int r = 0; r < BS_MR; r++) {
                const int16_t *ar = w->irows[r] + blk * w->bsp + 2 * q, *b = pan + q * 2 * BS_NR;
                uint32_t a0 = (uint32_t)(int32_t)ar[0], a1 = (uint32_t)(int32_t)ar[1];
                for (int j = 0; j < BS_NR; j++)
                    acc[r][j] += a0 * (uint32_t)(int32_t)b[2 * j] + a1 * (uint32_t)(int32_t)b[2 * j + 1];
            }
        for (int r = 0; r < BS_MR; r++)
            for (int j = 0; j < BS_NR; j++) {
                int32_t v = (int32_t)(acc[r][j] << w->sh) >> w->sh;
                if (parts) parts[blk - w->b0][r][j] = v;
                else if (w->fold) T[r][j] = T[r][j] + (float)v;
                else T[r][j] = T[r][j] + (float)v * (w->sa[r][blk] * w->sb[blk * BS_NR + j]);
            }
    }
}

#ifdef BS_X86
__attribute__((target("avx2,fma")))
static void bs_fp32_tile_avx2(const bs_tile *w, float T[BS_MR][BS_NR], float (*parts)[BS_MR][BS_NR])
{
    bs_fp32_tile(w, T, parts);
}

/* `pairs` is a constant in the common instances (blocks of 16 and 32): straight-line code. */
static inline __attribute__((always_inline, target("avx2,fma")))
void bs_int_avx2_body(const bs_tile *w, float T[BS_MR][BS_NR], int32_t (*parts)[BS_MR][BS_NR], int64_t pairs)
{
    const int16_t *ir[BS_MR];
    for (int r = 0; r < BS_MR; r++) ir[r] = w->irows[r];
    const int sh = w->sh;
    const __m128i shv = _mm_cvtsi32_si128(sh);
    for (int64_t blk = w->b0; blk < w->b1; blk++) {
        __m256i acc[BS_MR][2];
        _Pragma("GCC unroll 8")
        for (int r = 0; r < BS_MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
        const int16_t *pan = w->ipanel + blk * w->bsp * BS_NR;
        int64_t a0 = blk * w->bsp;
        _Pragma("GCC unroll 1")   /* unrolled, the sums get reassociated and spilled */
        for (int64_t q = 0; q < pairs; q++) {
            __m256i b0 = _mm256_loadu_si256((const __m256i *)(pan + q * 2 * BS_NR));
            __m256i b1 = _mm256_loadu_si256((const __m256i *)(pan + q * 2 * BS_NR + 16));
            _Pragma("GCC unroll 8")
            for (int r = 0; r < BS_MR; r++) {
                int32_t pair;
                memcpy(&pair, ir[r] + a0 + 2 * q, sizeof pair);
                __m256i av = _mm256_set1_epi32(pair);
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
            }
        }
        if (sh)
            _Pragma("GCC unroll 8")   /* here and below: acc stays in registers */
            for (int r = 0; r < BS_MR; r++)
                _Pragma("GCC unroll 2")
                for (int h = 0; h < 2; h++)
                    acc[r][h] = _mm256_sra_epi32(_mm256_sll_epi32(acc[r][h], shv), shv);
        if (parts) {
            _Pragma("GCC unroll 8")
            for (int r = 0; r < BS_MR; r++) {
                _mm256_storeu_si256((__m256i *)parts[blk - w->b0][r], acc[r][0]);
                _mm256_storeu_si256((__m256i *)(parts[blk - w->b0][r] + 8), acc[r][1]);
            }
            continue;
        }
        if (w->fold) {   /* the sums are partial * sa * sb already, exact in binary32 */
            _Pragma("GCC unroll 8")
            for (int r = 0; r < BS_MR; r++)
                _Pragma("GCC unroll 2")
                for (int h = 0; h < 2; h++)
                    _mm256_storeu_ps(T[r] + 8 * h, _mm256_add_ps(_mm256_loadu_ps(T[r] + 8 * h),
                                                                 _mm256_cvtepi32_ps(acc[r][h])));
            continue;
        }
        __m256 s0 = _mm256_loadu_ps(w->sb + blk * BS_NR), s1 = _mm256_loadu_ps(w->sb + blk * BS_NR + 8);
        _Pragma("GCC unroll 8")
        for (int r = 0; r < BS_MR; r++) {   /* exact products: the fused add rounds once, as the add does */
            __m256 av = _mm256_set1_ps(w->sa[r][blk]);
            _mm256_storeu_ps(T[r], _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][0]), _mm256_mul_ps(av, s0),
                                                   _mm256_loadu_ps(T[r])));
            _mm256_storeu_ps(T[r] + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][1]), _mm256_mul_ps(av, s1),
                                                       _mm256_loadu_ps(T[r] + 8)));
        }
    }
}

__attribute__((target("avx2,fma")))
static void bs_int_tile_avx2(const bs_tile *w, float T[BS_MR][BS_NR], int32_t (*parts)[BS_MR][BS_NR])
{
    if (w->bsp == 16) bs_int_avx2_body(w, T, parts, 8);
    else if (w->bsp == 32) bs_int_avx2_body(w, T, parts, 16);
    else bs_int_avx2_body(w, T, parts, w->bsp / 2);
}

/* The same on AVX-512 VNNI: a row's 16 columns in one register, each pair of products added by
 * vpdpwssd (modulo 2^32, as pmaddwd and the add), the joins lane for lane as above. */
#define BS_VNNI "avx512f,avx512bw,avx512vnni,fma"
static inline __attribute__((always_inline, target(BS_VNNI)))
void bs_int_vnni_body(const bs_tile *w, float T[BS_MR][BS_NR], int32_t (*parts)[BS_MR][BS_NR], int64_t pairs)
{
    const int16_t *ir[BS_MR];
    for (int r = 0; r < BS_MR; r++) ir[r] = w->irows[r];
    const __m128i shv = _mm_cvtsi32_si128(w->sh);
    for (int64_t blk = w->b0; blk < w->b1; blk++) {
        __m512i acc[BS_MR];
        _Pragma("GCC unroll 8")
        for (int r = 0; r < BS_MR; r++) acc[r] = _mm512_setzero_si512();
        const int16_t *pan = w->ipanel + blk * w->bsp * BS_NR;
        int64_t a0 = blk * w->bsp;
        for (int64_t q = 0; q < pairs; q++) {
            __m512i b = _mm512_loadu_si512(pan + q * 2 * BS_NR);
            _Pragma("GCC unroll 8")
            for (int r = 0; r < BS_MR; r++) {
                int32_t pair;
                memcpy(&pair, ir[r] + a0 + 2 * q, sizeof pair);
                acc[r] = _mm512_dpwssd_epi32(acc[r], _mm512_set1_epi32(pair), b);
            }
        }
        if (w->sh)
            _Pragma("GCC unroll 8")
            for (int r = 0; r < BS_MR; r++) acc[r] = _mm512_sra_epi32(_mm512_sll_epi32(acc[r], shv), shv);
        if (parts) {
            _Pragma("GCC unroll 8")
            for (int r = 0; r < BS_MR; r++) _mm512_storeu_si512(parts[blk - w->b0][r], acc[r]);
            continue;
        }
        if (w->fold) {
            _Pragma("GCC unroll 8")
            for (int r = 0; r < BS_MR; r++)
                _mm512_storeu_ps(T[r], _mm512_add_ps(_mm512_loadu_ps(T[r]), _mm512_cvtepi32_ps(acc[r])));
            continue;
        }
        __m512 s = _mm512_loadu_ps(w->sb + blk * BS_NR);
        _Pragma("GCC unroll 8")
        for (int r = 0; r < BS_MR; r++)
            _mm512_storeu_ps(T[r], _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r]), _mm512_mul_ps(_mm512_set1_ps(w->sa[r][blk]), s),
                                                   _mm512_loadu_ps(T[r])));
    }
}

__attribute__((target(BS_VNNI)))
static void bs_int_tile_vnni(const bs_tile *w, float T[BS_MR][BS_NR], int32_t (*parts)[BS_MR][BS_NR])
{
    if (w->bsp == 16) bs_int_vnni_body(w, T, parts, 8);
    else if (w->bsp == 32) bs_int_vnni_body(w, T, parts, 16);
    else bs_int_vnni_body(w, T, parts, w->bsp / 2);
}
#endif

typedef struct {
    const acs_mac_ctx *ctx;
    const acs_acc *scale_acc;
    int kernel, fast_join, avx2, sh, fold;   /* avx2: 0 portable, 1 AVX2, 2 also AVX-512 VNNI */
    int64_t m, n, k, bs, bsp, kd, nb, tile, i0, i1, p0, p1;
    const void *a, *bt;
    const double *sa, *sb;            /* m x nb, nb x n */
    const float *sa_f, *sb_f;         /* fast join: sa as binary32, sb in panels of nb x BS_NR */
    float *a_f32, *b_f32;             /* decoded: A rows of kd, B panels of kd x BS_NR */
    int16_t *a_i16, *b_i16;           /* the same, each block bsp (even) long, B in pairs */
    int64_t *za, *zb;                 /* zero operands per k: this worker's A rows, B panels */
    double *out;
    uint64_t seed;
    int status;
} bs_job;

/* A worker's A rows and B panels, decoded, with their zero operands counted. */
static inline __attribute__((always_inline)) void bs_decode_w(bs_job *jb, int wa, int wb)
{
    const acs_mac_ctx *ctx = jb->ctx;
    int64_t n = jb->n, k = jb->k, bs = jb->bs, bsp = jb->bsp, kd = jb->kd;
    uint8_t zero_a[1 << 16], zero_b[1 << 16];
    for (uint64_t c = 0; c < (1ULL << ctx->mac->a.bits); c++) zero_a[c] = ctx->ta[c].cls == ACS_ZERO;
    for (uint64_t c = 0; c < (1ULL << ctx->mac->b.bits); c++) zero_b[c] = ctx->tb[c].cls == ACS_ZERO;
    for (int64_t i = jb->i0; i < jb->i1; i++)
        for (int64_t blk = 0; blk < jb->nb; blk++) {
            const int64_t kk0 = blk * bs, *ia = ctx->ia;
            if (jb->a_f32) {
                float *dst = jb->a_f32 + i * kd + blk * bsp;
                for (int64_t x = 0; x < bs; x++) {
                    uint64_t code = bs_code(jb->a, i * k + kk0 + x, wa);
                    jb->za[kk0 + x] += zero_a[code];
                    dst[x] = ctx->fa[code];
                }
                continue;
            }
            int16_t *dst = jb->a_i16 + i * kd + blk * bsp;
            int64_t sc = jb->fold ? (int64_t)jb->sa[i * jb->nb + blk] : 1;   /* bs_fold: exact, fits */
            for (int64_t x = 0; x < bs; x++) {
                uint64_t code = bs_code(jb->a, i * k + kk0 + x, wa);
                jb->za[kk0 + x] += zero_a[code];
                dst[x] = (int16_t)(ia[code] * sc);
            }
        }
    for (int64_t p = jb->p0; p < jb->p1; p++)
        for (int64_t j = p * BS_NR; j < n && j < (p + 1) * BS_NR; j++) {
            int64_t lane = j % BS_NR;
            for (int64_t blk = 0; blk < jb->nb; blk++) {
                const int64_t kk0 = blk * bs, d0 = blk * bsp;
                if (jb->b_f32) {
                    float *dst = jb->b_f32 + (p * kd + d0) * BS_NR + lane;
                    for (int64_t x = 0; x < bs; x++) {
                        uint64_t code = bs_code(jb->bt, j * k + kk0 + x, wb);
                        jb->zb[kk0 + x] += zero_b[code];
                        dst[x * BS_NR] = ctx->fb[code];
                    }
                    continue;
                }
                int16_t *dst = jb->b_i16 + p * kd * BS_NR + d0 * BS_NR + 2 * lane;   /* d0 even: pairs */
                int64_t sc = jb->fold ? (int64_t)jb->sb[blk * n + j] : 1;
                for (int64_t x = 0; x < bs; x++) {
                    uint64_t code = bs_code(jb->bt, j * k + kk0 + x, wb);
                    jb->zb[kk0 + x] += zero_b[code];
                    dst[(x / 2) * 2 * BS_NR + x % 2] = (int16_t)(ctx->ib[code] * sc);
                }
            }
        }
}

static void bs_decode(void *p)
{
    bs_job *jb = p;
    int wa = jb->ctx->mac->a.bits > 8, wb = jb->ctx->mac->b.bits > 8;
    if (!wa && !wb) bs_decode_w(jb, 0, 0);
    else bs_decode_w(jb, wa, wb);
}

/* Rows [i0, i1): every tile over all its K-blocks, joined as they come. */
static void bs_rows(void *arg)
{
    bs_job *jb = arg;
    int64_t n = jb->n, nb = jb->nb, kd = jb->kd;
    void (*fk)(const bs_tile *, float (*)[BS_NR], float (*)[BS_MR][BS_NR]) = bs_fp32_tile_portable;
    void (*ik)(const bs_tile *, float (*)[BS_NR], int32_t (*)[BS_MR][BS_NR]) = bs_int_tile_portable;
#ifdef BS_X86
    if (jb->avx2) { fk = bs_fp32_tile_avx2; ik = jb->avx2 == 2 ? bs_int_tile_vnni : bs_int_tile_avx2; }
#endif
    for (int64_t j0 = 0, p = 0; j0 < n; j0 += BS_NR, p++) {
        int64_t nr = n - j0 < BS_NR ? n - j0 : BS_NR;
        for (int64_t i0 = jb->i0; i0 < jb->i1; i0 += BS_MR) {
            int64_t mr = jb->i1 - i0 < BS_MR ? jb->i1 - i0 : BS_MR;
            bs_tile w;
            memset(&w, 0, sizeof w);
            for (int r = 0; r < BS_MR; r++) {   /* rows past the end repeat row i0; never stored */
                int64_t i = i0 + (r < mr ? r : 0);
                if (jb->a_f32) w.arows[r] = jb->a_f32 + i * kd; else w.irows[r] = jb->a_i16 + i * kd;
                if (jb->fast_join) w.sa[r] = jb->sa_f + i * nb;
            }
            if (jb->b_f32) w.panel = jb->b_f32 + p * kd * BS_NR; else w.ipanel = jb->b_i16 + p * kd * BS_NR;
            if (jb->fast_join) w.sb = jb->sb_f + p * nb * BS_NR;
            w.bsp = jb->bsp; w.bs = jb->bs; w.tile = jb->tile; w.sh = jb->sh; w.fold = jb->fold;
            if (jb->fast_join) {
                float T[BS_MR][BS_NR] = { { 0 } };
                w.b0 = 0; w.b1 = nb;
                if (jb->kernel == BS_KERNEL_FP32) fk(&w, T, NULL); else ik(&w, T, NULL);
                for (int64_t r = 0; r < mr; r++)
                    for (int64_t c = 0; c < nr; c++) {
                        float v = T[r][c];
                        jb->out[(i0 + r) * n + j0 + c] = v != v ? NAN : (double)v;   /* canonical NaN */
                    }
                continue;
            }
            acs_acc_state S[BS_MR][BS_NR];
            acs_acc_state zero = acs_acc_start(jb->scale_acc, 0.0);
            for (int r = 0; r < BS_MR; r++)
                for (int c = 0; c < BS_NR; c++) S[r][c] = zero;
            union { float f[BS_CHUNK][BS_MR][BS_NR]; int32_t i[BS_CHUNK][BS_MR][BS_NR]; } parts;
            for (int64_t b0 = 0; b0 < nb; b0 += BS_CHUNK) {
                w.b0 = b0; w.b1 = b0 + BS_CHUNK < nb ? b0 + BS_CHUNK : nb;
                if (jb->kernel == BS_KERNEL_FP32) fk(&w, NULL, parts.f); else ik(&w, NULL, parts.i);
                for (int64_t blk = w.b0; blk < w.b1; blk++)
                    for (int64_t r = 0; r < mr; r++)
                        for (int64_t c = 0; c < nr; c++) {
                            int64_t i = i0 + r, j = j0 + c, pi = 0;
                            double pf = 0.0;
                            if (jb->kernel == BS_KERNEL_INT) pi = parts.i[blk - b0][r][c];
                            else pf = parts.f[blk - b0][r][c];
                            int status = join_one(jb->scale_acc, &S[r][c], pf, jb->kernel == BS_KERNEL_INT ? &pi : NULL,
                                                  jb->sa[i * nb + blk], jb->sb[blk * n + j], jb->seed,
                                                  (uint64_t)(i * n + j), (uint64_t)blk);
                            if (status) { jb->status = status; return; }
                        }
            }
            for (int64_t r = 0; r < mr; r++)
                for (int64_t c = 0; c < nr; c++) acs_acc_read(jb->scale_acc, &S[r][c], jb->out + (i0 + r) * n + j0 + c, NULL);
        }
    }
}

/* Run fn on `workers` jobs `stride` bytes apart, jobs 1.. on threads of their own (or here,
 * when no thread can be had). */
typedef struct { void (*fn)(void *); void *arg; } bs_call;

static void *bs_entry(void *p)
{
    bs_call *c = p;
    c->fn(c->arg);
    return NULL;
}

static void bs_parallel(void (*fn)(void *), void *jobs, size_t stride, int workers)
{
    pthread_t tids[256];
    bs_call calls[256];
    int started[256] = { 0 };
    for (int w = 1; w < workers; w++) {
        calls[w].fn = fn;
        calls[w].arg = (char *)jobs + w * stride;
        started[w] = pthread_create(&tids[w], NULL, bs_entry, &calls[w]) == 0;
    }
    fn(jobs);
    for (int w = 1; w < workers; w++) {
        if (started[w]) pthread_join(tids[w], NULL);
        else fn((char *)jobs + w * stride);
    }
}

/* Contiguous copies of K-block blk's codes (m x bs of A, n x bs of B^T). */
static void bs_copy_block(const void *src, int64_t rows, int64_t k, int64_t bs, int64_t blk, int width, void *dst)
{
    for (int64_t i = 0; i < rows; i++)
        memcpy((char *)dst + i * bs * width, (const char *)src + (i * k + blk * bs) * width, (size_t)(bs * width));
}

/* Per-block toggles (each block a GEMM of its own: registers start at 0) into counts. */
static int bs_toggles(const acs_mac *mac, int dataflow, int64_t rows, int64_t cols, const void *a, const void *bt,
                      int64_t m, int64_t n, int64_t k, int64_t bs, int threads, acs_gemm_counts *counts)
{
    int wa = mac->a.bits > 8 ? 2 : 1, wb = mac->b.bits > 8 ? 2 : 1;
    void *ab = malloc((size_t)(m * bs * wa > 0 ? m * bs * wa : 1)), *bb = malloc((size_t)(n * bs * wb > 0 ? n * bs * wb : 1));
    int status = ab && bb ? ACS_OK : ACS_ERR_ARG;
    for (int64_t blk = 0; blk < k / bs && !status; blk++) {
        acs_gemm_counts c;
        bs_copy_block(a, m, k, bs, blk, wa, ab);
        bs_copy_block(bt, n, k, bs, blk, wb, bb);
        status = acs_gemm_toggles(mac, dataflow, rows, cols, ab, bb, m, n, bs, threads, &c);
        counts->toggles_a += c.toggles_a;
        counts->toggles_b += c.toggles_b;
        counts->mult_toggles_a += c.mult_toggles_a;
        counts->mult_toggles_b += c.mult_toggles_b;
    }
    free(ab); free(bb);
    return status;
}

/* The kernels here: decode once, then every tile over its K-blocks. */
static int bs_fused(const acs_mac_ctx *ctx, const acs_acc *scale_acc, int kernel, int dataflow, int64_t rows,
                    const void *a, const void *bt, int64_t m, int64_t n, int64_t k, int64_t bs, const double *sa,
                    const double *sb, double *out, uint64_t seed, int threads, acs_gemm_counts *counts, int *in_join)
{
    const acs_mac *mac = ctx->mac;
    int64_t nb = k / bs, bsp = kernel == BS_KERNEL_INT ? bs + (bs & 1) : bs, kd = nb * bsp;
    int64_t panels = (n + BS_NR - 1) / BS_NR, blocks = (m + BS_MR - 1) / BS_MR;
    int workers = acs_workers_for(threads, blocks, (double)m * (double)n * (double)k);
    int fast_join = bs_fast_join(ctx, scale_acc, kernel, bs, sa, m * nb, sb, nb * n);
    int fold = fast_join && kernel == BS_KERNEL_INT && bs_fold(ctx, bs, sa, m * nb, sb, nb * n);
    int64_t za_len = k > 0 ? k : 1;
    int64_t *z = calloc((size_t)(2 * workers * za_len), sizeof *z);
    size_t esz = kernel == BS_KERNEL_FP32 ? sizeof(float) : sizeof(int16_t);
    void *ad = calloc((size_t)(m * kd > 0 ? m * kd : 1), esz);
    void *bd = calloc((size_t)(panels * kd * BS_NR > 0 ? panels * kd * BS_NR : 1), esz);
    float *sa_f = fast_join ? malloc((size_t)(m * nb > 0 ? m * nb : 1) * sizeof(float)) : NULL;
    float *sb_f = fast_join ? calloc((size_t)(panels * nb * BS_NR > 0 ? panels * nb * BS_NR : 1), sizeof(float)) : NULL;
    int status = ACS_OK;
    if (!z || !ad || !bd || (fast_join && (!sa_f || !sb_f))) status = ACS_ERR_ARG;
    if (!status && fast_join) {   /* exact: bs_fast_join checked every scale is a binary32 */
        for (int64_t x = 0; x < m * nb; x++) sa_f[x] = (float)sa[x];
        for (int64_t blk = 0; blk < nb; blk++)
            for (int64_t j = 0; j < n; j++) sb_f[((j / BS_NR) * nb + blk) * BS_NR + j % BS_NR] = (float)sb[blk * n + j];
    }
    bs_job jobs[256];
    int sh = kernel == BS_KERNEL_INT && !fold ? 32 - mac->acc.grid.total_bits : 0;   /* fold: never wraps */
    int vector_level = acs_vector_avx2() ? (acs_vector_avx512() && acs_gemm_avx512(1) ? 2 : 1) : 0;
    for (int w = 0; w < workers && !status; w++) {
        bs_job jb = { ctx, scale_acc, kernel, fast_join, vector_level, sh, fold, m, n, k, bs, bsp, kd, nb,
                      dataflow == ACS_OS ? bs : rows, blocks * w / workers * BS_MR, blocks * (w + 1) / workers * BS_MR,
                      panels * w / workers, panels * (w + 1) / workers, a, bt, sa, sb, sa_f, sb_f,
                      kernel == BS_KERNEL_FP32 ? ad : NULL, kernel == BS_KERNEL_FP32 ? bd : NULL,
                      kernel == BS_KERNEL_INT ? ad : NULL, kernel == BS_KERNEL_INT ? bd : NULL,
                      z + 2 * w * za_len, z + (2 * w + 1) * za_len, out, seed, ACS_OK };
        if (jb.i1 > m) jb.i1 = m;
        if (jb.i0 > m) jb.i0 = m;
        jobs[w] = jb;
    }
    if (!status) {
        bs_parallel(bs_decode, jobs, sizeof jobs[0], workers);
        bs_parallel(bs_rows, jobs, sizeof jobs[0], workers);
        for (int w = 0; w < workers; w++)
            if (jobs[w].status && !status) status = jobs[w].status;
        if (status) *in_join = 1;   /* the kernels cannot fail: a join did */
    }
    if (!status) {   /* MACs with a zero operand: sum over k of zA*N + zB*M - zA*zB */
        for (int64_t kk = 0; kk < k; kk++) {
            int64_t za = 0, zb = 0;
            for (int w = 0; w < workers; w++) { za += jobs[w].za[kk]; zb += jobs[w].zb[kk]; }
            counts->zero_macs += za * n + zb * m - za * zb;
        }
    }
    free(z); free(ad); free(bd); free(sa_f); free(sb_f);
    return status;
}

/* Joins of one block's partials into rows [i0, i1) of the registers: acs_acc_state, or binary32
 * values (f32) when the register is IEEE fp32 with an fp32 addend. */
typedef struct {
    const acs_acc *scale_acc;
    acs_acc_state *state;
    float *f32;
    const double *partial;
    const int64_t *partial_int;
    const double *sa, *sb;
    int64_t n, nb, blk, i0, i1;
    uint64_t seed;
    int status;
} bs_join_job;

/* partial * sa * sb when it is provably a binary32 (checked products); 0 otherwise. */
static inline int bs_exact_term(double p, double sa, double sb, float *q)
{
    double s = sa * sb, t;
    if (!(s == 0 ? sa == 0 || sb == 0 : fabs(s) >= 0x1p-900) || fma(sa, sb, -s) != 0) return 0;
    t = p * s;
    if (!(t == 0 ? p == 0 || s == 0 : fabs(t) >= 0x1p-900) || fma(p, s, -t) != 0) return 0;
    if (!(fabs(t) <= 3.4028234663852886e38)) return 0;   /* NaN, inf, beyond binary32 */
    *q = (float)t;
    return (double)*q == t;   /* lost bits fail */
}

static void bs_join_rows(void *p)
{
    bs_join_job *jj = p;
    for (int64_t i = jj->i0; i < jj->i1; i++)
        for (int64_t j = 0; j < jj->n; j++) {
            int64_t e = i * jj->n + j;
            if (jj->f32) {
                double pv = jj->partial ? jj->partial[e] : (double)jj->partial_int[e];
                float q;
                if ((jj->partial || (jj->partial_int[e] < (1LL << 53) && jj->partial_int[e] > -(1LL << 53)))
                    && bs_exact_term(pv, jj->sa[i * jj->nb + jj->blk], jj->sb[jj->blk * jj->n + j], &q)) {
                    jj->f32[e] = jj->f32[e] + q;   /* exact term: IEEE's one rounding */
                    continue;
                }
                /* the exact join, from and back to the binary32 value (exact both ways) */
                acs_acc_state st = acs_acc_start(jj->scale_acc, (double)jj->f32[e]);
                int status = join_one(jj->scale_acc, &st, jj->partial ? jj->partial[e] : 0.0,
                                      jj->partial_int ? jj->partial_int + e : NULL, jj->sa[i * jj->nb + jj->blk],
                                      jj->sb[jj->blk * jj->n + j], jj->seed, (uint64_t)e, (uint64_t)jj->blk);
                if (status) { jj->status = status; return; }
                double v;
                acs_acc_read(jj->scale_acc, &st, &v, NULL);
                jj->f32[e] = (float)v;
                continue;
            }
            int status = join_one(jj->scale_acc, jj->state + e, jj->partial ? jj->partial[e] : 0.0,
                                  jj->partial_int ? jj->partial_int + e : NULL, jj->sa[i * jj->nb + jj->blk],
                                  jj->sb[jj->blk * jj->n + j], jj->seed, (uint64_t)e, (uint64_t)jj->blk);
            if (status) { jj->status = status; return; }
        }
}

/* Every other MAC: acs_gemm per block (all its kernels), each block's partials joined at once. */
static int bs_per_block(const acs_mac *mac, const acs_acc *buffer, const acs_acc *scale_acc, int dataflow,
                        int64_t rows, int64_t cols, const void *a, const void *bt, int64_t m, int64_t n, int64_t k,
                        int64_t bs, const double *sa, const double *sb, double *out, uint64_t seed, int threads,
                        acs_gemm_counts *counts, int *in_join)
{
    const acs_acc *out_acc = dataflow == ACS_OS ? &mac->acc : buffer;
    int int_out = out_acc->kind == ACS_ACC_INT, wa = mac->a.bits > 8 ? 2 : 1, wb = mac->b.bits > 8 ? 2 : 1;
    int64_t mn = m * n > 0 ? m * n : 1, nb = k / bs;
    int f32 = bs_ieee_fp32(scale_acc) && !memcmp(&scale_acc->addend, &scale_acc->grid, sizeof scale_acc->grid);
    acs_acc_state *state = f32 ? NULL : malloc((size_t)mn * sizeof *state);
    float *t32 = f32 ? calloc((size_t)mn, sizeof *t32) : NULL;   /* +0 */
    void *partial = malloc((size_t)mn * 8);
    void *ab = malloc((size_t)(m * bs * wa > 0 ? m * bs * wa : 1)), *bb = malloc((size_t)(n * bs * wb > 0 ? n * bs * wb : 1));
    int status = (state || t32) && partial && ab && bb ? ACS_OK : ACS_ERR_ARG;
    if (!status && state) {
        acs_acc_state zero = acs_acc_start(scale_acc, 0.0);
        for (int64_t e = 0; e < m * n; e++) state[e] = zero;
    }
    int workers = acs_workers_for(threads, m, (double)m * (double)n);
    for (int64_t blk = 0; blk < nb && !status; blk++) {
        acs_gemm_counts c;
        bs_copy_block(a, m, k, bs, blk, wa, ab);
        bs_copy_block(bt, n, k, bs, blk, wb, bb);
        status = acs_gemm(mac, buffer, dataflow, rows, cols, ab, bb, m, n, bs, int_out ? NULL : partial,
                          int_out ? partial : NULL, bs_block_seed(seed, blk), threads, &c);
        if (status) break;
        counts->zero_macs += c.zero_macs;
        counts->pe_saturated += c.pe_saturated;
        counts->toggles_a += c.toggles_a;
        counts->toggles_b += c.toggles_b;
        counts->mult_toggles_a += c.mult_toggles_a;
        counts->mult_toggles_b += c.mult_toggles_b;
        bs_join_job jobs[256];
        for (int w = 0; w < workers; w++) {
            bs_join_job jj = { scale_acc, state, t32, int_out ? NULL : partial, int_out ? partial : NULL, sa, sb, n, nb, blk,
                               m * w / workers, m * (w + 1) / workers, seed, ACS_OK };
            jobs[w] = jj;
        }
        bs_parallel(bs_join_rows, jobs, sizeof jobs[0], workers);
        for (int w = 0; w < workers && !status; w++) status = jobs[w].status;
        if (status) *in_join = 1;
    }
    for (int64_t e = 0; e < m * n && !status; e++) {
        if (state) acs_acc_read(scale_acc, &state[e], out + e, NULL);
        else out[e] = t32[e] != t32[e] ? NAN : (double)t32[e];   /* canonical NaN, as acs_acc_read */
    }
    free(state); free(t32); free(partial); free(ab); free(bb);
    return status;
}

int acs_gemm_blocks(const acs_mac *mac, const acs_acc *buffer, const acs_acc *scale_acc, int dataflow,
                    int64_t rows, int64_t cols, const void *a, const void *bt, int64_t m, int64_t n, int64_t k,
                    int64_t block, const double *sa, const double *sb, double *out, uint64_t seed, int threads,
                    acs_gemm_counts *counts, int *in_join)
{
    if (!mac || !counts || !in_join || !scale_acc || rows < 1 || cols < 1 || m < 0 || n < 0 || k < 0 || block < 1
        || k % block || dataflow < ACS_OS || dataflow > ACS_IS || threads < 1 || threads > 256
        || mac->a.bits > 16 || mac->b.bits > 16)
        return ACS_ERR_ARG;
    *in_join = 0;
    if (m && n && k && (m > INT64_MAX / n || m * n > INT64_MAX / k)) return ACS_ERR_ARG;
    if (m && n && (!out || (k && (!a || !bt || !sa || !sb)))) return ACS_ERR_ARG;
    if (acs_check_acc(scale_acc) != ACS_OK || (scale_acc->kind != ACS_ACC_FLOAT && scale_acc->kind != ACS_ACC_FIXED))
        return ACS_ERR_ARG;
    int status = dataflow == ACS_OS ? ACS_OK : acs_check_acc(buffer);
    if (status) return status;
    if (dataflow != ACS_OS && buffer->kind == ACS_ACC_INT && mac->acc.kind != ACS_ACC_INT) return ACS_ERR_ARG;
    memset(counts, 0, sizeof *counts);
    counts->macs = m * n * k;
    if (!m || !n) return ACS_OK;
    acs_mac_ctx ctx;
    status = acs_mac_open(&ctx, mac);
    if (status) return status;
    int kernel = k ? bs_kernel_of(&ctx, buffer, dataflow, block) : BS_KERNEL_NONE;
    if (kernel) {
        status = bs_fused(&ctx, scale_acc, kernel, dataflow, rows, a, bt, m, n, k, block, sa, sb, out, seed, threads, counts,
                          in_join);
        if (!status) status = bs_toggles(mac, dataflow, rows, cols, a, bt, m, n, k, block, threads, counts);
    }
    acs_mac_close(&ctx);
    if (!kernel)
        status = bs_per_block(mac, buffer, scale_acc, dataflow, rows, cols, a, bt, m, n, k, block, sa, sb, out, seed,
                              threads, counts, in_join);
    return status;
}
