/* array.c: a GEMM on a systolic array, in the order its dataflow dictates, with the counts
 * the energy model needs.  The arithmetic is accumulate.c's chains; this file only orders
 * them and watches the operand registers. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static inline int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

/* Operand codes are 8 or 16 bits wide here (acs_gemm refuses wider ones). */
/* Row (or column) r of a register block of mr from i0: those past the matrix's end read i0 again
 * (their results are never stored). */
static inline int64_t block_row(int64_t i0, int64_t mr, int r) { return i0 + (r < mr ? r : 0); }

static inline __attribute__((always_inline)) uint64_t code_of(const void *codes, int64_t i, int wide)
{
    return wide ? ((const uint16_t *)codes)[i] : ((const uint8_t *)codes)[i];
}

/* ---- The GEMM: workers over blocks of output rows ------------------------------------------
 * Every output's chain (and its tile order) is fixed by the dataflow and independent of the
 * others, so splitting rows among threads, or computing 16 outputs in the lanes of a vector,
 * never changes a bit. */
typedef struct {
    const acs_mac_ctx *ctx;
    const acs_acc *buffer, *out_acc;
    int dataflow, nt, fast;
    int64_t tile, kp, m, n, k, i0, i1;
    int64_t p0, p1;                  /* the B column panels this worker decodes */
    const void *a, *bt;
    double *out;
    int64_t *out_int;
    uint64_t seed;
    int64_t zeros;
    int status;
    int64_t *za, *zb;                /* fast paths: zero operands per k in its A rows, B panels */
    float *a_f32, *b_f32;            /* fast paths: decoded operands, shared by the workers */
    int16_t *a_i16, *b_i16;
    int16_t *a_bx, *b_bx;            /* BlockFMA: the operands' alignment exponents (zero: -30000) */
    int64_t kpair;                   /* k rounded up to even: int16 operands go in pairs */
    uint8_t *a_spec, *b_spec;        /* BlockFMA: A rows, B columns holding a NaN or inf code */
    acs_fixed_plan fixed;            /* ACS_FAST_FIXED: kernel_fixed.c's plan */
    acs_wide_entry *a_wide;          /* fixed.wide 3: A rows packed by band (kernel_wide.c), k entries each */
    int32_t *a_starts;               /* fixed.wide 3: each row's segment starts (acs_wide_segments + 1) */
    double *a_norm, *b_norm;         /* fixed.bound: 2-norms of A rows and B columns (bounds) */
    int block_avx512;                /* ACS_FAST_BLOCK64: kernel_block.c takes it, checking each block's E */
    int block_e_lo, block_e_hi;      /* within these (none: lo > hi) */
    int float_kernel;                /* ACS_FAST_EXACT64: kernel_float.c takes it, with this plan */
    acs_float_plan float_plan;
    int pe_clamps;                   /* count tile sums at the PE's clamp (pe_at_clamp) */
    int64_t pe_saturated;
} gemm_job;

/* Whether the PE register's value is at the bound it clamps to: a saturating register's, or
 * +-max of a float register whose rounding (toward zero, directed, stochastic) turns an
 * overflow into +-max. */
static int pe_at_clamp(const acs_acc *pe, const acs_acc_state *s)
{
    if (pe->kind == ACS_ACC_INT || pe->kind == ACS_ACC_FIXED) {
        acs_i128 hi = (((acs_i128)1) << (pe->grid.total_bits - 1)) - 1;
        return s->reg == hi || s->reg == -hi - 1;
    }
    if (s->v.cls != ACS_FINITE) return 0;
    double v = fabs(acs_rounded_to_double(&s->v));
    return v == ldexp((double)pe->grid.max_sig, pe->grid.emax - pe->grid.man_bits);
}

/* Tile sums are watched where a clamp in the PE would not show in the output register: ws/is
 * with a buffer of another grid, rounding or overflow (an integer and a fixed register of one
 * grid are alike, as are a float and a block register).  The general step then runs: no fast
 * path takes a buffer unlike the PE register where a clamp can happen. */
static int pe_clamps(const acs_acc *pe, const acs_acc *buffer, int dataflow)
{
    if (dataflow == ACS_OS || pe->kind == ACS_ACC_QUIRE) return 0;
    int float_reg = pe->kind == ACS_ACC_FLOAT || pe->kind == ACS_ACC_BLOCK;
    int clamps = pe->overflow == ACS_OVF_SATURATE
        || (float_reg && pe->rounding != ACS_RNE && pe->rounding != ACS_RNA && pe->rounding != ACS_RTO);
    if (!clamps) return 0;
    if (float_reg)
        return !(buffer->kind == ACS_ACC_FLOAT || buffer->kind == ACS_ACC_BLOCK) || buffer->overflow != pe->overflow
            || buffer->rounding != pe->rounding || memcmp(&buffer->grid, &pe->grid, sizeof pe->grid);
    return !(buffer->kind == ACS_ACC_INT || buffer->kind == ACS_ACC_FIXED) || buffer->overflow != pe->overflow
        || buffer->grid.total_bits != pe->grid.total_bits || buffer->grid.frac_bits != pe->grid.frac_bits;
}

/* One output through the general step; zero-operand MACs are added to *zeros if it is given. */
static void general_output(gemm_job *jb, int64_t i, int64_t j, int64_t *zeros)
{
    const acs_mac_ctx *ctx = jb->ctx;
    const acs_mac *mac = ctx->mac;
    int64_t n = jb->n, k = jb->k;
    uint64_t element = (uint64_t)(i * n + j);
    acs_acc_state total = acs_acc_start(jb->out_acc, 0.0);
    int clamped = 0;
    for (int64_t t0 = 0, t = 0; t0 < k && jb->status == ACS_OK; t0 += jb->tile, t++) {
        int64_t len = k - t0 < jb->tile ? k - t0 : jb->tile;
        if (jb->dataflow == ACS_OS) {
            jb->status = acs_chain(ctx, jb->a, i * k, jb->bt, j * k, len, &total, jb->seed, element, 0, zeros);
        } else {
            acs_acc_state part = acs_acc_start(&mac->acc, 0.0);
            jb->status = acs_chain(ctx, jb->a, i * k + t0, jb->bt, j * k + t0, len, &part, jb->seed, element,
                                   (uint64_t)(t0 / jb->nt), zeros);
            if (jb->pe_clamps && !clamped) clamped = pe_at_clamp(&mac->acc, &part);
            uint32_t rand = jb->buffer->rounding == ACS_SR ? acs_rand32(jb->seed, element, (uint64_t)(jb->kp + t)) : 0;
            if (jb->status == ACS_OK) jb->status = acs_acc_add(jb->buffer, &total, &mac->acc, &part, rand);
        }
    }
    jb->pe_saturated += clamped;
    int64_t o = i * n + j;
    acs_acc_read(jb->out_acc, &total, jb->out ? jb->out + o : NULL, jb->out_int ? jb->out_int + o : NULL);
}

static void gemm_rows_general(gemm_job *jb)
{
    for (int64_t i = jb->i0; i < jb->i1 && jb->status == ACS_OK; i++)
        for (int64_t j = 0; j < jb->n && jb->status == ACS_OK; j++) general_output(jb, i, j, &jb->zeros);
}

/* ---- Vectorised exact fast paths ------------------------------------------------------------
 * A block of MR rows x NR columns lives in vector registers; A and B are decoded once per GEMM
 * (B into column panels of NR).  fp32: each output still adds its products in k order, tile by
 * tile, and its tile sums into the buffer in order: the same sequence of IEEE fp32 roundings as
 * the general path; a fused multiply-add gives the same bits because every product is exact.
 * Integer wrap: sums modulo 2^32 do not depend on grouping, so 16-bit operands go in pairs
 * through AVX2's multiply-and-add-pairs (pmaddwd).  Each kernel has a portable C version and an
 * AVX2(+FMA) one chosen when the CPU has it; tests compare the two. */
#define MR 4
#define NR 16
typedef float vf8 __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define ACS_X86 1
#endif

static int isa_enabled = 1;

int acs_set_vector_isa(int enabled)
{
    int old = isa_enabled;
    isa_enabled = enabled == 2 ? 2 : enabled != 0;
    return old;
}

static int have_avx2_fma(void)
{
#ifdef ACS_X86
    __builtin_cpu_init();
    return isa_enabled && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static inline __attribute__((always_inline))
void fp32_block(const float *arows[MR], const float *panel, int64_t k, int64_t tile, float out[MR][NR])
{
    vf8 total[MR][2], acc[MR][2];
    for (int r = 0; r < MR; r++) total[r][0] = total[r][1] = (vf8){0};
    for (int64_t t0 = 0; t0 < k; t0 += tile) {
        int64_t t1 = t0 + tile < k ? t0 + tile : k;
        for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = (vf8){0};
        for (int64_t kk = t0; kk < t1; kk++) {
            vf8 b0, b1;
            memcpy(&b0, panel + kk * NR, sizeof b0);
            memcpy(&b1, panel + kk * NR + 8, sizeof b1);
            _Pragma("GCC unroll 8")   /* keeps the accumulators in registers */
            for (int r = 0; r < MR; r++) {
                float x = arows[r][kk];
                vf8 av = { x, x, x, x, x, x, x, x };
                acc[r][0] = acc[r][0] + av * b0;
                acc[r][1] = acc[r][1] + av * b1;
            }
        }
        for (int r = 0; r < MR; r++) {
            total[r][0] = total[r][0] + acc[r][0];
            total[r][1] = total[r][1] + acc[r][1];
        }
    }
    for (int r = 0; r < MR; r++) {
        memcpy(out[r], &total[r][0], sizeof total[r][0]);
        memcpy(out[r] + 8, &total[r][1], sizeof total[r][1]);
    }
}

static void fp32_block_portable(const float *arows[MR], const float *panel, int64_t k, int64_t tile, float out[MR][NR])
{
    fp32_block(arows, panel, k, tile, out);
}

/* panel: for each pair q of k, NR lanes of (B[2q][j], B[2q+1][j]); a row: k codes' values (+0). */
static void int16_block_portable(const int16_t *arows[MR], const int16_t *panel, int64_t pairs, uint32_t out[MR][NR])
{
    uint32_t acc[MR][NR] = { { 0 } };
    for (int64_t q = 0; q < pairs; q++)
        for (int r = 0; r < MR; r++) {
            uint32_t a0 = (uint32_t)(int32_t)arows[r][2 * q], a1 = (uint32_t)(int32_t)arows[r][2 * q + 1];
            const int16_t *b = panel + q * 2 * NR;
            for (int j = 0; j < NR; j++)
                acc[r][j] += a0 * (uint32_t)(int32_t)b[2 * j] + a1 * (uint32_t)(int32_t)b[2 * j + 1];
        }
    memcpy(out, acc, sizeof acc);
}

#ifdef ACS_X86
__attribute__((target("avx2,fma")))
static void fp32_block_avx2(const float *arows[MR], const float *panel, int64_t k, int64_t tile, float out[MR][NR])
{
    fp32_block(arows, panel, k, tile, out);
}

__attribute__((target("avx2")))
static void int16_block_avx2(const int16_t *arows[MR], const int16_t *panel, int64_t pairs, uint32_t out[MR][NR])
{
    __m256i acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    for (int64_t q = 0; q < pairs; q++) {
        __m256i b0 = _mm256_loadu_si256((const __m256i *)(panel + q * 2 * NR));
        __m256i b1 = _mm256_loadu_si256((const __m256i *)(panel + q * 2 * NR + 16));
        _Pragma("GCC unroll 8")
        for (int r = 0; r < MR; r++) {
            int32_t pair;
            memcpy(&pair, arows[r] + 2 * q, sizeof pair);
            __m256i av = _mm256_set1_epi32(pair);
            acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
            acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
        }
    }
    for (int r = 0; r < MR; r++) {
        _mm256_storeu_si256((__m256i *)out[r], acc[r][0]);
        _mm256_storeu_si256((__m256i *)(out[r] + 8), acc[r][1]);
    }
}
#endif

/* Narrow float accumulators (ACS_FAST_EXACT64): acc + a*b is exact in binary64, so one
 * rounding of that double onto the accumulator's grid is the fused step.  The rounding: the
 * spacing 2^(e - man_bits) from the sum's exponent e (at least the subnormal spacing), the sum
 * scaled to units of it and rounded to an integer (1.5 * 2^52 added and taken away rounds to
 * nearest-even; directed modes then step by one), scaled back; overflow and the sign of exact
 * zero sums as IEEE 754 says.  Every operation is exact or one IEEE binary64 rounding, so the
 * AVX2 and portable builds agree bit for bit.
 * rna, rto and sr round the magnitude a = |t| (< 2^52: man_bits <= 51) from its nearest
 * integer n and the exact remainder d = a - n in [-1/2, 1/2]: rna steps up on d = 1/2, rto
 * takes floor(a) | 1 when d != 0, and sr, with F = d * 2^32, steps up iff rand < F and down
 * iff rand - 2^32 >= F (from the floor, that is round.c's rand < frac32 || (rand == frac32 &&
 * frac_rest)).  sr's rand is round.c's acs_rand32(seed, index, step): the first two rounds of
 * its hash depend only on (seed, index), so each lane keeps their state and a step costs one
 * round (exact64_lanes). */
typedef double vd4 __attribute__((vector_size(32)));
typedef int64_t vi4 __attribute__((vector_size(32)));
typedef uint64_t vu4 __attribute__((vector_size(32)));
#pragma GCC diagnostic ignored "-Wpsabi"   /* vector helpers are always inlined: no ABI crosses */

typedef struct {
    int mode;
    int64_t man_shift;           /* man_bits << 52: from a value's exponent field to its spacing's */
    int64_t ulp_min;             /* bits of the subnormal spacing 2^(emin - man_bits) */
    double max;
    double over_pos, over_neg;   /* what an overflow becomes, by sign (magnitudes) */
    int64_t keep_inf;            /* all ones: infinite sums stay infinite (IEEE); 0: they saturate */
    int proven;                  /* every finite sum is exact in binary64 (exact_sums) */
    const uint64_t *lanes;       /* sr: each lane's hash state after (seed, index), [MR][NR] */
    uint64_t kp;                 /* sr: the buffer's first step (its draws are kp + tile index) */
} exact64_grid;

static exact64_grid exact64_grid_of(const acs_acc *acc)
{
    const acs_grid *g = &acc->grid;
    double max = ldexp((double)g->max_sig, g->emax - g->man_bits);
    int sat = acc->overflow == ACS_OVF_SATURATE, m = acc->rounding;
    exact64_grid e = { m, (int64_t)g->man_bits << 52, (int64_t)(g->emin - g->man_bits + 1023) << 52, max,
                       sat || m == ACS_RTZ || m == ACS_RDN || m == ACS_RTO ? max : INFINITY,
                       sat || m == ACS_RTZ || m == ACS_RUP || m == ACS_RTO ? max : INFINITY, sat ? 0 : -1,
                       0, NULL, 0 };
    return e;
}

/* round.c's mix64 (the splitmix64 finaliser), on one lane and on four. */
static inline uint64_t exact64_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline __attribute__((always_inline)) vu4 exact64_vmix(vu4 z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

#define EXACT64_STEP 0xAEF17502108EF2D9ULL   /* acs_rand32's step multiplier */
#define EXACT64_PROVEN 16                    /* ORed into rna/rto/sr: sums need no exactness check */

/* sr: the hash state of output (i0 + r, j0 + c) after acs_rand32's first two rounds, for MR
 * rows of `width` columns (lanes past the matrix take a neighbour's; their results are never
 * stored). */
static void exact64_lanes(uint64_t seed, int64_t i0, int64_t mr, int64_t j0, int64_t nr, int64_t n, int width,
                          uint64_t *lanes)
{
    uint64_t z0 = exact64_mix(seed + 0x9E3779B97F4A7C15ULL);
    for (int64_t r = 0; r < MR; r++)
        for (int64_t c = 0; c < width; c++) {
            uint64_t index = (uint64_t)block_row(i0, mr, r) * (uint64_t)n + (uint64_t)block_row(j0, nr, c);
            lanes[r * width + c] = exact64_mix(z0 ^ (index * 0xD1B54A32D192ED03ULL));
        }
}

static inline __attribute__((always_inline)) vd4 vd(double x) { return (vd4){ x, x, x, x }; }
static inline __attribute__((always_inline)) vi4 vi(int64_t x) { return (vi4){ x, x, x, x }; }

/* The grid's constants in vector registers. */
typedef struct { vi4 man_shift, ulp_min, not_keep_inf; vd4 max, over_pos, over_neg; } exact64_vconst;

static inline __attribute__((always_inline)) exact64_vconst exact64_vconst_of(const exact64_grid *g)
{
    exact64_vconst c = { vi(g->man_shift), vi(g->ulp_min), ~vi(g->keep_inf), vd(g->max), vd(g->over_pos),
                         vd(g->over_neg) };
    return c;
}

/* round(x + p) onto the grid; `mode` is a constant in each instance.  With `inexact`, lanes
 * where binary64 could not hold x + p exactly (TwoSum's error nonzero; finite operands) are
 * marked there: their result is not the fused step's, and the caller recomputes them.
 * rna, rto and sr (`inexact` required) leave everything but finite sums that stay in range to
 * the general step: they mark lanes whose sum is inexact (s - x == p and s - p == x hold
 * exactly when x + p is exact: Fast2Sum's error is one of the two differences; left out when
 * mode has EXACT64_PROVEN) and lanes whose rounded sum is not finite or exceeds the largest
 * finite value.  sr: hz is each lane's hash state before acs_rand32's last round. */
static inline __attribute__((always_inline))
vd4 exact64_add_sr(const exact64_vconst *c, int mode, vd4 x, vd4 p, vi4 *inexact, vu4 hz)
{
    const vi4 sign = vi(INT64_MIN), one = (vi4)vd(1.0);
    const vd4 magic = vd(6755399441055744.0);               /* 1.5 * 2^52 */
    int proven = mode & EXACT64_PROVEN;
    mode &= ~EXACT64_PROVEN;
    int narrow = mode == ACS_RNA || mode == ACS_RTO || mode == ACS_SR;
    vd4 s = x + p;
    if (narrow) {
        if (!proven) *inexact |= ~((vi4)(s - x == p) & (vi4)(s - p == x));
    } else if (inexact) {
        vd4 pv = s - x, err = (x - (s - pv)) + (p - pv);   /* NaN for infinite operands: not marked */
        *inexact |= (vi4)(err > vd(0.0)) | (vi4)(err < vd(0.0));
    }
    vi4 sb = (vi4)s;
    if (mode == ACS_RDN) sb |= (vi4)(s == vd(0.0)) & ((vi4)x | (vi4)p) & sign;
    vi4 ub = (sb & vi(0x7FF0000000000000)) - c->man_shift;
    vi4 small = ub < c->ulp_min;
    ub = (small & c->ulp_min) | (~small & ub);
    vd4 t = (vd4)sb * (vd4)(vi((int64_t)2046 << 52) - ub);  /* the sum in units of its spacing */
    vd4 r;
    if (narrow) {                                               /* on the magnitude */
        const vd4 m52 = vd(4503599627370496.0);                 /* 2^52 */
        vd4 a = (vd4)((vi4)t & ~sign), u = a + m52, d;
        r = u - m52;                                            /* a to nearest */
        d = a - r;
        if (mode == ACS_RNA) r = r + (vd4)(one & (vi4)(d == vd(0.5)));
        else if (mode == ACS_RTO) {
            vi4 inexact_sum = (vi4)(d != vd(0.0));
            vd4 odd = (vd4)(((vi4)u + (vi4)(d < vd(0.0))) | vi(1)) - m52;   /* floor(a) | 1 */
            r = (vd4)((inexact_sum & (vi4)odd) | (~inexact_sum & (vi4)a));
        } else {
            vd4 rand = (vd4)((vi4)(exact64_vmix(hz) >> 32) | (vi4)m52);  /* 2^52 + rand, exactly */
            vd4 f = d * vd(4294967296.0);
            r = r + (vd4)(one & (vi4)(rand - m52 < f)) - (vd4)(one & (vi4)(rand - vd(4503603922337792.0) >= f));
        }
    } else {
        r = (t + magic) - magic;
        if (mode == ACS_RUP) r = r + (vd4)(one & (vi4)(r < t));
        else if (mode == ACS_RDN) r = r - (vd4)(one & (vi4)(r > t));
        else if (mode == ACS_RTZ)
            r = r - (vd4)((one | ((vi4)t & sign)) & (vi4)((vd4)((vi4)r & ~sign) > (vd4)((vi4)t & ~sign)));
    }
    r = (vd4)((vi4)r | ((vi4)t & sign)) * (vd4)ub;            /* a zero keeps the sum's sign */
    if (narrow) {
        *inexact |= ~(vi4)((vd4)((vi4)r & ~sign) <= c->max);   /* NaN too */
        return r;
    }
    vi4 over = (vi4)((vd4)((vi4)r & ~sign) > c->max)
        & ((vi4)((vd4)(sb & ~sign) <= vd(1.7976931348623157e308)) | c->not_keep_inf);
    vi4 neg = (vi4)(r < vd(0.0));
    vi4 ov = (neg & (vi4)c->over_neg) | (~neg & (vi4)c->over_pos) | ((vi4)r & sign);
    return (vd4)((over & ov) | (~over & (vi4)r));
}

static inline __attribute__((always_inline))
vd4 exact64_add(const exact64_vconst *c, int mode, vd4 x, vd4 p, vi4 *inexact)
{
    return exact64_add_sr(c, mode, x, p, inexact, (vu4){ 0, 0, 0, 0 });
}

static inline __attribute__((always_inline))
void exact64_block(const exact64_grid *g, int mode, const float *arows[MR], const float *panel, int64_t k,
                   int64_t tile, int chain_only, double out[MR][NR], vi4 bad[MR][NR / 4])
{
    exact64_vconst c = exact64_vconst_of(g);
    vd4 total[MR][NR / 4], part[MR][NR / 4];
    vu4 hz = { 0, 0, 0, 0 };   /* sr: hash input of the step (lane state + step * multiplier) */
    for (int r = 0; r < MR; r++)
        for (int q = 0; q < NR / 4; q++) { total[r][q] = vd(0.0); bad[r][q] = vi(0); }
    for (int64_t t0 = 0, ti = 0; t0 < k; t0 += tile, ti++) {
        int64_t t1 = t0 + tile < k ? t0 + tile : k;
        uint64_t hstep = (uint64_t)t0 * EXACT64_STEP;   /* chain steps are counted over all of k */
        for (int r = 0; r < MR; r++)
            for (int q = 0; q < NR / 4; q++) part[r][q] = vd(0.0);
        for (int64_t kk = t0; kk < t1; kk++, hstep += EXACT64_STEP) {
            vd4 b[NR / 4];
            for (int q = 0; q < NR / 4; q++)
                b[q] = (vd4){ panel[kk * NR + 4 * q], panel[kk * NR + 4 * q + 1], panel[kk * NR + 4 * q + 2],
                              panel[kk * NR + 4 * q + 3] };
            for (int r = 0; r < MR; r++) {
                vd4 av = vd(arows[r][kk]);
                _Pragma("GCC unroll 4")
                for (int q = 0; q < NR / 4; q++) {
                    if ((mode & ~EXACT64_PROVEN) == ACS_SR) {
                        memcpy(&hz, g->lanes + r * NR + 4 * q, sizeof hz);
                        hz += hstep;
                    }
                    part[r][q] = exact64_add_sr(&c, mode, part[r][q], av * b[q], &bad[r][q], hz);
                }
            }
        }
        hstep = (g->kp + (uint64_t)ti) * EXACT64_STEP;
        for (int r = 0; r < MR; r++)     /* os: one tile, the chain is the result */
            for (int q = 0; q < NR / 4; q++) {
                if ((mode & ~EXACT64_PROVEN) == ACS_SR && !chain_only) {
                    memcpy(&hz, g->lanes + r * NR + 4 * q, sizeof hz);
                    hz += hstep;
                }
                total[r][q] = chain_only ? part[r][q]
                    : exact64_add_sr(&c, mode, total[r][q], part[r][q], &bad[r][q], hz);
            }
    }
    for (int r = 0; r < MR; r++) memcpy(out[r], total[r], sizeof total[r]);
}

/* One instance per rounding mode (rna/rto/sr: two, with and without exactness checks), so each
 * inner loop is straight-line code. */
#define EXACT64_NARROW(m)                                                                         \
    (g->proven ? exact64_block(g, (m) | EXACT64_PROVEN, arows, panel, k, tile, chain_only, out, bad)  \
               : exact64_block(g, (m), arows, panel, k, tile, chain_only, out, bad))
#define EXACT64_KERNEL(name, attr)                                                                      \
    attr static void name(const exact64_grid *g, const float *arows[MR], const float *panel, int64_t k,     \
                          int64_t tile, int chain_only, double out[MR][NR], vi4 bad[MR][NR / 4])         \
    {                                                                                                    \
        switch (g->mode) {                                                                               \
        case ACS_RUP: exact64_block(g, ACS_RUP, arows, panel, k, tile, chain_only, out, bad); break;     \
        case ACS_RDN: exact64_block(g, ACS_RDN, arows, panel, k, tile, chain_only, out, bad); break;     \
        case ACS_RTZ: exact64_block(g, ACS_RTZ, arows, panel, k, tile, chain_only, out, bad); break;     \
        case ACS_RNA: EXACT64_NARROW(ACS_RNA); break;                                                    \
        case ACS_RTO: EXACT64_NARROW(ACS_RTO); break;                                                    \
        case ACS_SR: EXACT64_NARROW(ACS_SR); break;                                                      \
        default: exact64_block(g, ACS_RNE, arows, panel, k, tile, chain_only, out, bad);                 \
        }                                                                                                \
    }
EXACT64_KERNEL(exact64_block_portable, )
#ifdef ACS_X86
EXACT64_KERNEL(exact64_block_avx2, __attribute__((target("avx2,fma"))))
/* AVX-512 (DQ, VL) adds a 64-bit vector multiply (sr's hash) and 32 vector registers. */
EXACT64_KERNEL(exact64_block_avx512, __attribute__((target("avx2,fma,avx512f,avx512dq,avx512vl"))))

static int have_avx512dq(void)
{
    __builtin_cpu_init();
    return isa_enabled == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vl");
}
#endif

/* IEEE half accumulators (binary16 grid, IEEE overflow) on CPUs with F16C: the exact sum s
 * is rounded to odd at binary32's precision (its low 29 fraction bits' stickiness ORed into
 * binary32's last bit, those bits cleared, so the conversion to binary32 is exact), then
 * converted to binary16 by the hardware in the accumulator's mode.  Rounding to odd at 24 bits
 * and then to 11 equals one rounding of s (24 >= 11 + 2), subnormals, overflow and signed
 * zeros included.  Valid while every nonzero |s| lies in binary32's normal range:
 * f16c_range_ok checks the operand values. */
#ifdef ACS_X86
static inline __attribute__((always_inline, target("avx2,fma,f16c")))
__m256d f16c_round(int mode, __m256d x, __m256d p, __m256d s)
{
    __m256i sb = _mm256_castpd_si256(s);
    const __m256i low = _mm256_set1_epi64x(0x1FFFFFFF);
    if (mode == ACS_RDN)   /* IEEE: an exact zero sum is -0 when rounding down, unless both are +0 */
        sb = _mm256_or_si256(sb, _mm256_and_si256(_mm256_castpd_si256(_mm256_cmp_pd(s, _mm256_setzero_pd(), _CMP_EQ_OQ)),
                                                  _mm256_and_si256(_mm256_castpd_si256(_mm256_or_pd(x, p)),
                                                                   _mm256_set1_epi64x(INT64_MIN))));
    __m256i odd = _mm256_andnot_si256(low, _mm256_or_si256(sb, _mm256_add_epi64(_mm256_and_si256(sb, low), low)));
    __m128 f = _mm256_cvtpd_ps(_mm256_castsi256_pd(odd));   /* exact */
    __m128i h = mode == ACS_RUP ? _mm_cvtps_ph(f, _MM_FROUND_TO_POS_INF)
        : mode == ACS_RDN ? _mm_cvtps_ph(f, _MM_FROUND_TO_NEG_INF)
        : mode == ACS_RTZ ? _mm_cvtps_ph(f, _MM_FROUND_TO_ZERO) : _mm_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT);
    return _mm256_cvtps_pd(_mm_cvtph_ps(h));
}

static inline __attribute__((always_inline, target("avx2,fma,f16c")))
void f16c_block(int mode, const float *arows[MR], const float *panel, int64_t k, int64_t tile, int chain_only,
                double out[MR][NR])
{
    __m256d total[MR][NR / 4], part[MR][NR / 4];
    for (int r = 0; r < MR; r++)
        for (int q = 0; q < NR / 4; q++) total[r][q] = _mm256_setzero_pd();
    for (int64_t t0 = 0; t0 < k; t0 += tile) {
        int64_t t1 = t0 + tile < k ? t0 + tile : k;
        for (int r = 0; r < MR; r++)
            for (int q = 0; q < NR / 4; q++) part[r][q] = _mm256_setzero_pd();
        for (int64_t kk = t0; kk < t1; kk++) {
            __m256d b[NR / 4];
            for (int q = 0; q < NR / 4; q++) b[q] = _mm256_cvtps_pd(_mm_loadu_ps(panel + kk * NR + 4 * q));
            for (int r = 0; r < MR; r++) {
                __m256d av = _mm256_set1_pd(arows[r][kk]);
                _Pragma("GCC unroll 4")
                for (int q = 0; q < NR / 4; q++) {
                    __m256d p = _mm256_mul_pd(av, b[q]);   /* exact */
                    part[r][q] = f16c_round(mode, part[r][q], p, _mm256_add_pd(part[r][q], p));
                }
            }
        }
        for (int r = 0; r < MR; r++)     /* os: one tile, the chain is the result */
            for (int q = 0; q < NR / 4; q++)
                total[r][q] = chain_only ? part[r][q]
                    : f16c_round(mode, total[r][q], part[r][q], _mm256_add_pd(total[r][q], part[r][q]));
    }
    for (int r = 0; r < MR; r++)
        for (int q = 0; q < NR / 4; q++) _mm256_storeu_pd(out[r] + 4 * q, total[r][q]);
}

__attribute__((target("avx2,fma,f16c")))
static void exact64_block_f16c(const exact64_grid *g, const float *arows[MR], const float *panel, int64_t k,
                               int64_t tile, int chain_only, double out[MR][NR], vi4 bad[MR][NR / 4])
{
    memset(bad, 0, sizeof(vi4) * MR * (NR / 4));   /* taken only where every sum is provably exact */
    switch (g->mode) {
    case ACS_RUP: f16c_block(ACS_RUP, arows, panel, k, tile, chain_only, out); break;
    case ACS_RDN: f16c_block(ACS_RDN, arows, panel, k, tile, chain_only, out); break;
    case ACS_RTZ: f16c_block(ACS_RTZ, arows, panel, k, tile, chain_only, out); break;
    default: f16c_block(ACS_RNE, arows, panel, k, tile, chain_only, out);
    }
}
/* The F16C kernel applies: an IEEE half accumulator (buffers match it: vector_path), a CPU
 * with F16C, and operands whose nonzero sums stay in binary32's normal range: a sum is a
 * multiple of the smallest of the products' and the grid's last-bit values, and below
 * 2 * 65504 + max|a| max|b|. */
static int f16c_range_ok(const acs_mac_ctx *ctx)
{
    const acs_mac *mac = ctx->mac;
    const acs_acc *acc = &mac->acc;
    const acs_grid *g = &acc->grid;
    if (g->man_bits != 10 || g->emin != -14 || g->emax != 15 || g->max_sig != 2047 || !g->subnormals
        || acc->overflow != ACS_OVF_INF || acc->rounding == ACS_RNA || acc->rounding == ACS_RTO
        || acc->rounding == ACS_SR)   /* the hardware conversion has rne and directed modes only */
        return 0;
    if (!__builtin_cpu_supports("f16c")) return 0;
    double top[2] = { 0, 0 };
    int lsb[2] = { 0, 0 };
    for (int s = 0; s < 2; s++)
        for (uint64_t c = 0; c < (1ULL << (s ? mac->b.bits : mac->a.bits)); c++) {
            double v = fabs((double)(s ? ctx->fb : ctx->fa)[c]);
            if (!(v > 0) || v > 3.4028234663852886e38) continue;   /* zero, NaN, inf */
            int e;
            double m = frexp(v, &e);
            int low = e - 53 + __builtin_ctzll((uint64_t)ldexp(m, 53));
            if (v > top[s]) top[s] = v;
            if (low < lsb[s]) lsb[s] = low;
        }
    return lsb[0] + lsb[1] >= -126 && top[0] * top[1] < 0x1p126;
}
#endif

/* BlockFMA (ACS_FAST_BLOCK64): per block, the alignment exponent E is the largest of the
 * accumulator's binade and the products' operand exponents; every term scaled by 2^(F-E) is
 * truncated to an integer (exact: below 2^51), the n + 1 integers summed exactly, and the sum
 * times 2^(E-F) rounded once onto the grid, as block_step does.  Lanes that end non-finite
 * or whose tile sum joins the buffer inexactly are marked, and outputs whose A row or B column
 * holds a NaN or inf code (flagged when decoding), recomputed by the general step. */
static inline __attribute__((always_inline)) vd4 vtrunc(vd4 x)   /* |x| < 2^51 */
{
    const vi4 sign = vi(INT64_MIN);
    vd4 r = (x + vd(6755399441055744.0)) - vd(6755399441055744.0);
    r = r - (vd4)(((vi4)vd(1.0) | ((vi4)x & sign)) & (vi4)((vd4)((vi4)r & ~sign) > (vd4)((vi4)x & ~sign)));
    return (vd4)((vi4)r | ((vi4)x & sign));
}

static inline __attribute__((always_inline)) vi4 vmax(vi4 a, vi4 b)
{
    vi4 gt = a > b;
    return (gt & a) | (~gt & b);
}

typedef acs_block_args block64_args;
_Static_assert(MR == ACS_BK_MR && NR == ACS_BK_NR, "kernel_block.c blocks");

/* Sums to +0 (and lane marks cleared). */
static inline __attribute__((always_inline)) void block64_clear(vd4 sums[MR][NR / 4], vi4 bad[MR][NR / 4])
{
    for (int r = 0; r < MR; r++)
        for (int q = 0; q < NR / 4; q++) {
            sums[r][q] = vd(0.0);
            if (bad) bad[r][q] = vi(0);
        }
}

/* sr: the hash input of the 4 outputs (r, 4q..4q+3) at a step. */
static inline __attribute__((always_inline)) vu4 block64_hz(const exact64_grid *g, int mode, int r, int q, uint64_t step)
{
    vu4 hz = { 0, 0, 0, 0 };
    if (mode == ACS_SR) {
        memcpy(&hz, g->lanes + r * NR + 4 * q, sizeof hz);
        hz += step * EXACT64_STEP;
    }
    return hz;
}

/* Tile ti's sums join the buffer (os: the chain is the result); a join that binary64 cannot
 * make exactly marks its lane for the general step. */
static inline __attribute__((always_inline))
void block64_join(const exact64_grid *g, const exact64_vconst *c, int mode, int chain_only, int64_t ti,
                  vd4 total[MR][NR / 4], vd4 part[MR][NR / 4], vi4 bad[MR][NR / 4])
{
    for (int r = 0; r < MR; r++)
        for (int q = 0; q < NR / 4; q++) {
            total[r][q] = chain_only ? part[r][q]
                : exact64_add_sr(c, mode, total[r][q], part[r][q], &bad[r][q], block64_hz(g, mode, r, q, g->kp + (uint64_t)ti));
        }
}

/* A block's exact sum p rounded onto the grid as block_step does: a zero sum is +0 after a
 * nonzero term, else the zeros' sum (p keeps its sign: -0 if all were -0), and -0 under rdn,
 * except that a block with no nonzero term (none) and a +0 accumulator is +0 only if every
 * product was: marked.  signless: p lost the zeros' signs (integer sums), so a -0 accumulator
 * with no nonzero term is marked too.  sr draws at the block's index (hz). */
static inline __attribute__((always_inline))
vd4 block64_round(const exact64_vconst *c, int mode, int signless, vi4 none, vd4 acc, vd4 p, vu4 hz, vi4 *bad)
{
    int narrow = mode == ACS_RNA || mode == ACS_RTO || mode == ACS_SR;
    if (mode == ACS_RDN) *bad |= none & (vi4)((vi4)acc == vi(0));
    else if (signless) *bad |= none & (vi4)((vi4)acc == vi(INT64_MIN));
    vd4 x = (vd4)((mode == ACS_RDN ? vi(-1) : none) & vi(INT64_MIN));   /* -0 + p is p, +0 + p is +0 for p = -0 */
    return narrow ? exact64_add_sr(c, mode | EXACT64_PROVEN, x, p, bad, hz)   /* marks overflows */
                  : exact64_add(c, mode, x, p, NULL);
}

/* The results out, non-finite ones marked for the general step. */
static inline __attribute__((always_inline))
void block64_finish(vd4 total[MR][NR / 4], double out[MR][NR], vi4 bad[MR][NR / 4])
{
    for (int r = 0; r < MR; r++) {
        memcpy(out[r], total[r], sizeof total[r]);
        for (int q = 0; q < NR / 4; q++)
            bad[r][q] |= ~(vi4)((vd4)((vi4)total[r][q] & ~vi(INT64_MIN)) <= vd(1.7976931348623157e308));
    }
}

static inline __attribute__((always_inline))
void block64_block(const exact64_grid *g, int mode, const block64_args *w, double out[MR][NR], vi4 bad[MR][NR / 4])
{
    exact64_vconst c = exact64_vconst_of(g);
    vd4 total[MR][NR / 4], part[MR][NR / 4];
    block64_clear(total, bad);
    for (int64_t t0 = 0; t0 < w->k; t0 += w->tile) {
        int64_t t1 = t0 + w->tile < w->k ? t0 + w->tile : w->k;
        block64_clear(part, NULL);
        for (int64_t b0 = t0; b0 < t1; b0 += w->terms) {
            int64_t b1 = b0 + w->terms < t1 ? b0 + w->terms : t1;
            for (int r = 0; r < MR; r++)
                for (int q = 0; q < NR / 4; q++) {
                    vd4 acc = part[r][q];
                    vi4 e = vmax((((vi4)acc >> 52) & vi(0x7FF)) - vi(1023), vi(w->emin));
                    e = ((vi4)(acc == vd(0.0)) & vi(-30000)) | (~(vi4)(acc == vd(0.0)) & e);
                    for (int64_t kk = b0; kk < b1; kk++) {
                        const int16_t *xp = w->xpanel + kk * NR + 4 * q;
                        e = vmax(e, vi(w->xrows[r][kk]) + (vi4){ xp[0], xp[1], xp[2], xp[3] });
                    }
                    vi4 none = e < vi(-20000);
                    e = vmax(e, vi(-900));
                    vd4 up = (vd4)((vi(w->align + 1023) - e) << 52), down = (vd4)((e - vi(w->align - 1023)) << 52);
                    vd4 sum = vtrunc(acc * up);
                    for (int64_t kk = b0; kk < b1; kk++) {
                        const float *bp = w->panel + kk * NR + 4 * q;
                        sum += vtrunc(vd(w->arows[r][kk]) * (vd4){ bp[0], bp[1], bp[2], bp[3] } * up);
                    }
                    part[r][q] = block64_round(&c, mode, 0, none, acc, sum * down,
                                               block64_hz(g, mode, r, q, (uint64_t)(b0 / w->terms)), &bad[r][q]);
                }
        }
        block64_join(g, &c, mode, w->chain_only, t0 / w->tile, total, part, bad);
    }
    block64_finish(total, out, bad);
}

/* One instance per rounding mode of a block64 body. */
#define BLOCK64_KERNEL(name, attr, body)                                                               \
    attr static void name(const exact64_grid *g, const block64_args *w, double out[MR][NR], vi4 bad[MR][NR / 4]) \
    {                                                                                                   \
        switch (g->mode) {                                                                              \
        case ACS_RNA: body(g, ACS_RNA, w, out, bad); break;                                             \
        case ACS_RUP: body(g, ACS_RUP, w, out, bad); break;                                             \
        case ACS_RDN: body(g, ACS_RDN, w, out, bad); break;                                             \
        case ACS_RTZ: body(g, ACS_RTZ, w, out, bad); break;                                             \
        case ACS_RTO: body(g, ACS_RTO, w, out, bad); break;                                             \
        case ACS_SR: body(g, ACS_SR, w, out, bad); break;                                               \
        default: body(g, ACS_RNE, w, out, bad);                                                         \
        }                                                                                               \
    }
BLOCK64_KERNEL(block64_block_portable, , block64_block)
#ifdef ACS_X86
BLOCK64_KERNEL(block64_block_avx2, __attribute__((target("avx2,fma"))), block64_block)

/* The same with every scaled term below 2^31 and their sum too (align_bits + 2 + log2(terms
 * + 1) <= 31, at most 64 terms): the alignment exponents' maxima in 8 int32 lanes, each term truncated by the
 * hardware (cvttpd: always toward zero), summed in int32 lanes.  A block's non-finite partial
 * is marked at once (its truncation would be garbage). */
static inline __attribute__((always_inline, target("avx2,fma")))
void block64_cvtt(const exact64_grid *g, int mode, const block64_args *w, double out[MR][NR], vi4 bad[MR][NR / 4])
{
    exact64_vconst c = exact64_vconst_of(g);
    const vi4 sign = vi(INT64_MIN);
    vd4 total[MR][NR / 4], part[MR][NR / 4];
    block64_clear(total, bad);
    for (int64_t t0 = 0; t0 < w->k; t0 += w->tile) {
        int64_t t1 = t0 + w->tile < w->k ? t0 + w->tile : w->k;
        block64_clear(part, NULL);
        for (int64_t b0 = t0; b0 < t1; b0 += w->terms) {
            int64_t b1 = b0 + w->terms < t1 ? b0 + w->terms : t1;
            __m256i ex[MR][2];
            __m256d bd[64][NR / 4];   /* the block's B values as doubles, shared by the rows */
            for (int r = 0; r < MR; r++) ex[r][0] = ex[r][1] = _mm256_set1_epi32(-60000);
            for (int64_t kk = b0; kk < b1; kk++) {
                for (int q = 0; q < NR / 4; q++) bd[kk - b0][q] = _mm256_cvtps_pd(_mm_loadu_ps(w->panel + kk * NR + 4 * q));
                __m256i x0 = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(w->xpanel + kk * NR)));
                __m256i x1 = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(w->xpanel + kk * NR + 8)));
                for (int r = 0; r < MR; r++) {
                    __m256i xa = _mm256_set1_epi32(w->xrows[r][kk]);
                    ex[r][0] = _mm256_max_epi32(ex[r][0], _mm256_add_epi32(xa, x0));
                    ex[r][1] = _mm256_max_epi32(ex[r][1], _mm256_add_epi32(xa, x1));
                }
            }
            for (int r = 0; r < MR; r++) {
                __m256d up[NR / 4];
                vd4 down[NR / 4];
                __m128i sum[NR / 4];
                vi4 none[NR / 4];
                for (int q = 0; q < NR / 4; q++) {
                    vd4 acc = part[r][q];
                    vi4 e = vmax((((vi4)acc >> 52) & vi(0x7FF)) - vi(1023), vi(w->emin));
                    e = ((vi4)(acc == vd(0.0)) & vi(-30000)) | (~(vi4)(acc == vd(0.0)) & e);
                    __m128i half = q & 1 ? _mm256_extracti128_si256(ex[r][q / 2], 1) : _mm256_castsi256_si128(ex[r][q / 2]);
                    e = vmax(e, (vi4)_mm256_cvtepi32_epi64(half));
                    none[q] = e < vi(-20000);
                    e = vmax(e, vi(-900));
                    up[q] = (__m256d)((vi(w->align + 1023) - e) << 52);
                    down[q] = (vd4)((e - vi(w->align - 1023)) << 52);
                    sum[q] = _mm256_cvttpd_epi32(_mm256_mul_pd((__m256d)acc, up[q]));
                }
                for (int64_t kk = b0; kk < b1; kk++) {
                    __m256d av = _mm256_set1_pd(w->arows[r][kk]);
                    _Pragma("GCC unroll 4")
                    for (int q = 0; q < NR / 4; q++)
                        sum[q] = _mm_add_epi32(sum[q], _mm256_cvttpd_epi32(_mm256_mul_pd(_mm256_mul_pd(av, bd[kk - b0][q]), up[q])));
                }
                for (int q = 0; q < NR / 4; q++) {
                    part[r][q] = block64_round(&c, mode, 1, none[q], part[r][q], (vd4)_mm256_cvtepi32_pd(sum[q]) * down[q],
                                               block64_hz(g, mode, r, q, (uint64_t)(b0 / w->terms)), &bad[r][q]);
                    bad[r][q] |= ~(vi4)((vd4)((vi4)part[r][q] & ~sign) <= vd(1.7976931348623157e308));
                }
            }
        }
        block64_join(g, &c, mode, w->chain_only, t0 / w->tile, total, part, bad);
    }
    block64_finish(total, out, bad);
}

BLOCK64_KERNEL(block64_block_cvtt, __attribute__((target("avx2,fma"))), block64_cvtt)

/* kernel_block.c's AVX-512 kernel (float32 lanes) behind the block64 kernels' signature. */
static void block64_block_avx512(const exact64_grid *g, const block64_args *w, double out[MR][NR], vi4 bad[MR][NR / 4])
{
    (void)g;
    acs_block_avx512(w, out, (int64_t (*)[NR])bad);   /* the same bytes */
}
#endif

/* Register accumulators (ACS_FAST_FIXED) through kernel_fixed.c, FixedAcc that rounds its
 * products (ACS_FAST_FIXROUND) through kernel_fixround.c.  A NaN or infinite operand
 * (a posit NaR) makes an output NaR on a quire; on a FixedAcc it is an error, which the general
 * path reports exactly as it would (every output of its row or column meets it). */
_Static_assert(MR == ACS_FX_MR && NR == ACS_FX_NR, "kernel_fixed.c blocks");
_Static_assert(MR == ACS_FK_MR && NR == ACS_FK_NR, "kernel_float.c blocks");

static int special_in(const acs_operand *t, const void *codes, int wide, int64_t at, int64_t len)
{
    for (int64_t x = 0; x < len; x++)
        if (t[code_of(codes, at + x, wide)].cls >= ACS_INF) return 1;
    return 0;
}

static void fixed_rows(gemm_job *jb)
{
    const acs_mac_ctx *ctx = jb->ctx;
    int64_t n = jb->n, k = jb->k, rows = jb->i1 - jb->i0;
    int wa = ctx->mac->a.bits > 8, wb = ctx->mac->b.bits > 8, isa = have_avx2_fma();
#ifdef ACS_X86
    if (isa && isa_enabled != 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) isa = 2;
#endif
    if (rows <= 0) return;
    uint8_t *nar = calloc((size_t)(rows + n), 1);   /* A rows, then B columns */
    if (!nar) { jb->status = ACS_ERR_ARG; return; }
    int any = 0;
    for (int64_t i = 0; i < rows; i++) any |= nar[i] = (uint8_t)special_in(ctx->ta, jb->a, wa, (jb->i0 + i) * k, k);
    for (int64_t j = 0; j < n; j++) any |= nar[rows + j] = (uint8_t)special_in(ctx->tb, jb->bt, wb, j * k, k);
    if (any && jb->out_acc->kind != ACS_ACC_QUIRE) {
        free(nar);
        gemm_rows_general(jb);
        return;
    }
    acs_posit_memo memo;
    int memo_ok = acs_posit_memo_init(&memo, jb->out_acc);   /* without one, each output reads out alone */
    if (jb->fixed.wide == 3) {   /* kernel_wide.c: ACS_WK_MR A rows by ACS_WK_NR columns */
        int64_t *t = malloc(sizeof(int64_t) * ACS_WK_MR * (size_t)jb->fixed.na * ACS_WK_NR);
        int64_t segs = acs_wide_segments(&jb->fixed, k);
        if (!t) jb->status = ACS_ERR_ARG;
        for (int64_t j0 = 0; j0 < n && t; j0 += ACS_WK_NR)
            for (int64_t i0 = jb->i0; i0 < jb->i1; i0 += ACS_WK_MR) {
                int64_t mr = jb->i1 - i0 < ACS_WK_MR ? jb->i1 - i0 : ACS_WK_MR;
                acs_i128 res[ACS_WK_MR][ACS_WK_NR];
                acs_wide_rows(isa, &jb->fixed, jb->a_wide + i0 * k, jb->a_starts + i0 * (segs + 1), mr, (const double *)jb->b_i16 + j0 / ACS_WK_NR * jb->fixed.nb * k * ACS_WK_NR,
                              k, t, res);
                for (int64_t r = 0; r < mr; r++)
                    for (int64_t c = 0; c < ACS_WK_NR && j0 + c < n; c++) {
                        int64_t i = i0 + r, o = i * n + j0 + c;
                        if (jb->fixed.bound && jb->a_norm[i] * jb->b_norm[j0 + c] > jb->fixed.limit)
                            general_output(jb, i, j0 + c, NULL);   /* a partial sum might saturate */
                        else acs_fixed_out(jb->out_acc, &jb->fixed, res[r][c], nar[i - jb->i0] | nar[rows + j0 + c],
                                           memo_ok ? &memo : NULL, jb->out ? jb->out + o : NULL,
                                           jb->out_int ? jb->out_int + o : NULL);
                    }
            }
        free(t);
    }
    for (int64_t j0 = 0, p = 0; j0 < n && jb->fixed.wide != 3; j0 += NR, p++) {
        int64_t nr = n - j0 < NR ? n - j0 : NR;
        for (int64_t i0 = jb->i0; i0 < jb->i1; i0 += MR) {
            int64_t mr = jb->i1 - i0 < MR ? jb->i1 - i0 : MR;
            const int16_t *arows[MR];
            for (int r = 0; r < MR; r++)
                arows[r] = jb->a_i16 + block_row(i0, mr, r) * jb->kpair;
            int64_t res[MR][NR];
            const int16_t *panel = jb->b_i16 + p * jb->kpair * NR;
            if (jb->fast == ACS_FAST_FIXROUND) {   /* binary32 buffers (decode_part_w) */
                const float *rowsf[MR];
                uint64_t lanes[MR * NR];
                for (int r = 0; r < MR; r++) rowsf[r] = jb->a_f32 + block_row(i0, mr, r) * k;
                if (jb->ctx->mac->acc.rounding == ACS_SR) exact64_lanes(jb->seed, i0, mr, j0, nr, n, NR, lanes);
                acs_fixround_block(isa, &jb->fixed, jb->ctx->mac->acc.rounding, rowsf, jb->b_f32 + p * k * NR, k,
                                   jb->tile, lanes, res);
            } else if (jb->fixed.wide == 2) {   /* the buffers hold doubles (decode_part_w) */
                const double *rowsd[MR];
                for (int r = 0; r < MR; r++) rowsd[r] = (const double *)jb->a_i16 + block_row(i0, mr, r) * jb->kpair;
                acs_fixed_sum_f64(isa, rowsd, (const double *)jb->b_i16 + p * jb->kpair * NR, k, jb->fixed.chunk, res);
            } else if (jb->fixed.wide) {   /* the buffers hold int32 / int64 values (decode_part_w) */
                const int32_t *rows32[MR];
                for (int r = 0; r < MR; r++) rows32[r] = (const int32_t *)jb->a_i16 + block_row(i0, mr, r) * jb->kpair;
                const int64_t *panel64 = (const int64_t *)jb->b_i16 + p * jb->kpair * NR;
                if (jb->fixed.mode == ACS_FIXED_SUM) acs_fixed_sum_wide(isa, rows32, panel64, k, res);
                else acs_fixed_clamp_wide(isa, &jb->fixed, rows32, panel64, k, jb->tile, res);
            } else if (jb->fixed.mode == ACS_FIXED_SUM) acs_fixed_sum(isa, arows, panel, jb->kpair / 2, jb->fixed.chunk, res);
            else acs_fixed_clamp(isa, &jb->fixed, arows, panel, k, jb->tile, res);
            for (int64_t r = 0; r < mr; r++)
                for (int64_t c = 0; c < nr; c++) {
                    int64_t o = (i0 + r) * n + j0 + c;
                    acs_fixed_out(jb->out_acc, &jb->fixed, res[r][c], nar[i0 + r - jb->i0] | nar[rows + j0 + c],
                                  memo_ok ? &memo : NULL, jb->out ? jb->out + o : NULL,
                                  jb->out_int ? jb->out_int + o : NULL);
                }
        }
    }
    acs_posit_memo_free(&memo);
    free(nar);
}

/* Rows [i0, i1) through kernel_float.c's float accumulators, two B panels at a time. */
static void float_rows(gemm_job *jb, const acs_float_plan *plan)
{
    int64_t n = jb->n, k = jb->k, panels = ceil_div(n, NR);
    for (int64_t p = 0; p < panels; p += 2) {
        const float *bp[2] = { jb->b_f32 + p * k * NR, jb->b_f32 + (p + 1 < panels ? p + 1 : p) * k * NR };
        int64_t j0 = p * NR, nc = n - j0 < 2 * NR ? n - j0 : 2 * NR;
        for (int64_t i0 = jb->i0; i0 < jb->i1; i0 += MR) {
            int64_t mr = jb->i1 - i0 < MR ? jb->i1 - i0 : MR;
            const float *arows[MR];
            for (int r = 0; r < MR; r++)
                arows[r] = jb->a_f32 + block_row(i0, mr, r) * k;
            double res[MR][2 * NR];
            uint64_t lanes[MR * 2 * NR];
            if (plan->mode == ACS_SR) exact64_lanes(jb->seed, i0, mr, j0, nc, n, 2 * NR, lanes);
            acs_float_block(plan, arows, bp, k, jb->tile, jb->dataflow == ACS_OS, lanes, (uint64_t)jb->kp, res);
            for (int64_t r = 0; r < mr; r++)
                for (int64_t c = 0; c < nc; c++) {
                    double v = res[r][c];
                    jb->out[(i0 + r) * n + j0 + c] = v != v ? NAN : v;   /* canonical NaN */
                }
        }
    }
}

/* fp32 sums, and integer wrap sums taken modulo 2^32 and wrapped to the register once, through
 * native vector arithmetic.  With AVX-512 (kernel_gemm.c) a pass covers two B panels and stores
 * its block itself. */
static void native_rows(gemm_job *jb)
{
    int64_t n = jb->n, k = jb->k, kpair = jb->kpair;
    int fp = jb->fast == ACS_FAST_FP32, avx2 = have_avx2_fma(), x512 = 0, np = 1;
    int sh = 64 - jb->ctx->mac->acc.grid.total_bits;   /* integers: wrap to the register's width */
    void (*fp32_kernel)(const float **, const float *, int64_t, int64_t, float (*)[NR]) = fp32_block_portable;
    void (*int_kernel)(const int16_t **, const int16_t *, int64_t, uint32_t (*)[NR]) = int16_block_portable;
#ifdef ACS_X86
    if (avx2) { fp32_kernel = fp32_block_avx2; int_kernel = int16_block_avx2; }
    x512 = avx2 && isa_enabled == 1 && acs_gemm_avx512(!fp);
#endif
    for (int64_t j0 = 0, p = 0; j0 < n; j0 += np * NR, p += np) {
        np = x512 && n - j0 > NR ? 2 : 1;
        int64_t nc = n - j0 < np * NR ? n - j0 : np * NR;
        for (int64_t i0 = jb->i0; i0 < jb->i1; i0 += MR) {
            int64_t mr = jb->i1 - i0 < MR ? jb->i1 - i0 : MR;
            if (fp) {
                const float *arows[MR];
                for (int r = 0; r < MR; r++)
                    arows[r] = jb->a_f32 + block_row(i0, mr, r) * k;
                const float *panel = jb->b_f32 + p * k * NR;
#ifdef ACS_X86
                if (x512) {
                    acs_fp32_block_avx512(arows, panel, k * NR, np, k, jb->tile, (int)mr, (int)nc,
                                          jb->out + i0 * n + j0, n);
                    continue;
                }
#endif
                float res[MR][NR];
                fp32_kernel(arows, panel, k, jb->tile, res);
                for (int64_t r = 0; r < mr; r++)
                    for (int64_t c = 0; c < nc; c++) {
                        float v = res[r][c];
                        jb->out[(i0 + r) * n + j0 + c] = v != v ? NAN : (double)v; /* canonical NaN */
                    }
            } else {
                const int16_t *arows[MR];
                for (int r = 0; r < MR; r++)
                    arows[r] = jb->a_i16 + block_row(i0, mr, r) * kpair;
                const int16_t *panel = jb->b_i16 + p * kpair * NR;
#ifdef ACS_X86
                if (x512) {
                    acs_int16_block_vnni(arows, panel, kpair * NR, np, kpair / 2, sh, (int)mr, (int)nc,
                                         jb->out_int + i0 * n + j0, n);
                    continue;
                }
#endif
                uint32_t res[MR][NR];
                int_kernel(arows, panel, kpair / 2, res);
                for (int64_t r = 0; r < mr; r++)
                    for (int64_t c = 0; c < nc; c++)
                        jb->out_int[(i0 + r) * n + j0 + c] = (int64_t)((uint64_t)(int64_t)(int32_t)res[r][c] << sh) >> sh;
            }
        }
    }
}

/* Rows [i0, i1) through the vector kernels. */
static void gemm_rows_fast(gemm_job *jb)
{
    if (jb->fast == ACS_FAST_FIXED || jb->fast == ACS_FAST_FIXROUND) { fixed_rows(jb); return; }
    if (jb->float_kernel) { float_rows(jb, &jb->float_plan); return; }
    if (jb->fast == ACS_FAST_FP32 || jb->fast == ACS_FAST_INT_WRAP || jb->fast == ACS_FAST_INT_SAT) {
        native_rows(jb);
        return;
    }
    const acs_mac *mac = jb->ctx->mac;
    int64_t n = jb->n, k = jb->k;
    int avx2 = have_avx2_fma();
    void (*exact64_kernel)(const exact64_grid *, const float **, const float *, int64_t, int64_t, int, double (*)[NR],
                           vi4 (*)[NR / 4]) = exact64_block_portable;
    void (*block_kernel)(const exact64_grid *, const block64_args *, double (*)[NR], vi4 (*)[NR / 4])
        = block64_block_portable, (*block_binary64)(const exact64_grid *, const block64_args *, double (*)[NR],
                                                   vi4 (*)[NR / 4]) = NULL;
#ifdef ACS_X86
    if (avx2) {
        exact64_kernel = exact64_block_avx2;
        block_kernel = block64_block_avx2;
        if ((mac->acc.rounding == ACS_SR || mac->acc.rounding == ACS_RNA || mac->acc.rounding == ACS_RTO)
            && have_avx512dq())
            exact64_kernel = exact64_block_avx512;
        if (jb->fast == ACS_FAST_EXACT64 && jb->ctx->exact_sums && f16c_range_ok(jb->ctx))
            exact64_kernel = exact64_block_f16c;
        int bits = 0;
        while ((1 << bits) < mac->acc.terms + 1) bits++;
        if (jb->fast == ACS_FAST_BLOCK64 && mac->acc.align_bits + 2 + bits <= 31 && mac->acc.terms <= 64)
            block_kernel = block64_block_cvtt;
        if (jb->block_avx512) {   /* blocks whose E it cannot take (bfloat16's range): binary64 lanes */
            if (jb->block_e_lo <= jb->block_e_hi) block_binary64 = block_kernel;
            block_kernel = block64_block_avx512;
        }
    }
#endif
    exact64_grid g = exact64_grid_of(&mac->acc);
    uint64_t lanes[MR * NR];
    g.lanes = lanes;
    g.kp = (uint64_t)jb->kp;
    g.proven = jb->ctx->exact_sums;
    int skip = 0;
    for (int64_t j0 = 0, p = 0; j0 < n; j0 += NR, p++) {
        int64_t nr = n - j0 < NR ? n - j0 : NR;
        for (int64_t i0 = jb->i0; i0 < jb->i1; i0 += MR) {
            int64_t mr = jb->i1 - i0 < MR ? jb->i1 - i0 : MR;
            if (jb->fast == ACS_FAST_BLOCK64) {
                const float *arows[MR];
                const int16_t *xrows[MR];
                for (int r = 0; r < MR; r++) {
                    arows[r] = jb->a_f32 + block_row(i0, mr, r) * k;
                    xrows[r] = jb->a_bx + block_row(i0, mr, r) * k;
                }
                if (mac->acc.rounding == ACS_SR) exact64_lanes(jb->seed, i0, mr, j0, nr, n, NR, lanes);
                block64_args w = { arows, xrows, jb->b_f32 + p * k * NR, jb->b_bx + p * k * NR, k, jb->tile,
                                   mac->acc.terms, mac->acc.align_bits, mac->acc.grid.emin, jb->dataflow == ACS_OS,
                                   &mac->acc, lanes, (uint64_t)jb->kp, jb->block_e_lo, jb->block_e_hi };
                double res[MR][NR];
                vi4 bad[MR][NR / 4];
                if (skip) {   /* after a block it could not take, binary64 for the next few (same bits) */
                    skip--;
                    block_binary64(&g, &w, res, bad);
                } else {
                    block_kernel(&g, &w, res, bad);
                    vi4 any = { 0, 0, 0, 0 };
                    for (int r = 0; r < MR && block_binary64; r++)
                        for (int q = 0; q < NR / 4; q++) any |= bad[r][q];
                    if (any[0] | any[1] | any[2] | any[3]) {
                        block_binary64(&g, &w, res, bad);
                        skip = 16;
                    }
                }
                for (int64_t r = 0; r < mr; r++)
                    for (int64_t c = 0; c < nr; c++) {
                        if (bad[r][c / 4][c % 4] || jb->a_spec[i0 + r] || jb->b_spec[j0 + c])
                            general_output(jb, i0 + r, j0 + c, NULL);
                        else jb->out[(i0 + r) * n + j0 + c] = res[r][c];
                    }
            } else if (jb->fast == ACS_FAST_EXACT64) {
                const float *arows[MR];
                for (int r = 0; r < MR; r++)
                    arows[r] = jb->a_f32 + block_row(i0, mr, r) * k;
                double res[MR][NR];
                vi4 bad[MR][NR / 4];
                if (mac->acc.rounding == ACS_SR) exact64_lanes(jb->seed, i0, mr, j0, nr, n, NR, lanes);
                exact64_kernel(&g, arows, jb->b_f32 + p * k * NR, k, jb->tile, jb->dataflow == ACS_OS, res, bad);
                for (int64_t r = 0; r < mr; r++)
                    for (int64_t c = 0; c < nr; c++) {
                        double v = res[r][c];
                        if (bad[r][c / 4][c % 4]) general_output(jb, i0 + r, j0 + c, NULL);
                        else jb->out[(i0 + r) * n + j0 + c] = v != v ? NAN : v;
                    }
            }
        }
    }
}

static inline int16_t alignment_exponent(const acs_operand *x)
{
    return x->cls == ACS_FINITE ? (int16_t)x->bexp : x->cls == ACS_ZERO ? -30000 : 0;
}

/* A worker's share of the decoding: its A rows and its B panels, counting zero operands.  The
 * loops are specialised by code width and destination (this runs once per operand element). */
static inline __attribute__((always_inline)) void decode_part_w(gemm_job *jb, int wa, int wb)
{
    const acs_mac_ctx *ctx = jb->ctx;
    int64_t n = jb->n, k = jb->k, kpair = jb->kpair;
    uint8_t zero_a[1 << 16], zero_b[1 << 16];   /* 1 where the code is a zero */
    for (uint64_t c = 0; c < (1ULL << ctx->mac->a.bits); c++) zero_a[c] = ctx->ta[c].cls == ACS_ZERO;
    for (uint64_t c = 0; c < (1ULL << ctx->mac->b.bits); c++) zero_b[c] = ctx->tb[c].cls == ACS_ZERO;
    for (int64_t i = jb->i0; i < jb->i1; i++) {
        if (jb->a_f32)
            for (int64_t kk = 0; kk < k; kk++) {
                uint64_t code = code_of(jb->a, i * k + kk, wa);
                jb->za[kk] += zero_a[code];
                jb->a_f32[i * k + kk] = ctx->fa[code];
            }
        else if (jb->fixed.wide == 2)   /* doubles in the same buffer (alloc_decoded) */
            for (int64_t kk = 0; kk < k; kk++) {
                uint64_t code = code_of(jb->a, i * k + kk, wa);
                jb->za[kk] += zero_a[code];
                ((double *)jb->a_i16)[i * kpair + kk] = (double)ctx->ia[code];   /* exact: below 2^31 */
            }
        else if (jb->fixed.wide)   /* int32 values */
            for (int64_t kk = 0; kk < k; kk++) {
                uint64_t code = code_of(jb->a, i * k + kk, wa);
                jb->za[kk] += zero_a[code];
                ((int32_t *)jb->a_i16)[i * kpair + kk] = (int32_t)ctx->ia[code];
            }
        else
            for (int64_t kk = 0; kk < k; kk++) {
                uint64_t code = code_of(jb->a, i * k + kk, wa);
                jb->za[kk] += zero_a[code];
                jb->a_i16[i * kpair + kk] = (int16_t)ctx->ia[code];
            }
        if (jb->a_bx)
            for (int64_t kk = 0; kk < k; kk++) {
                const acs_operand *x = &ctx->ta[code_of(jb->a, i * k + kk, wa)];
                jb->a_bx[i * k + kk] = alignment_exponent(x);
                if (x->cls >= ACS_INF) jb->a_spec[i] = 1;
            }
    }
    for (int64_t p = jb->p0; p < jb->p1; p++)
        for (int64_t j = p * NR; j < n && j < (p + 1) * NR; j++) {
            int64_t lane = j % NR;
            if (jb->b_f32)
                for (int64_t kk = 0; kk < k; kk++) {
                    uint64_t code = code_of(jb->bt, j * k + kk, wb);
                    jb->zb[kk] += zero_b[code];
                    jb->b_f32[p * k * NR + kk * NR + lane] = ctx->fb[code];
                }
            else if (jb->fixed.wide == 2)   /* panels of NR values per k, as doubles */
                for (int64_t kk = 0; kk < k; kk++) {
                    uint64_t code = code_of(jb->bt, j * k + kk, wb);
                    jb->zb[kk] += zero_b[code];
                    ((double *)jb->b_i16)[p * kpair * NR + kk * NR + lane] = (double)ctx->ib[code];
                }
            else if (jb->fixed.wide)   /* panels of NR values per k, int32 values as int64 */
                for (int64_t kk = 0; kk < k; kk++) {
                    uint64_t code = code_of(jb->bt, j * k + kk, wb);
                    jb->zb[kk] += zero_b[code];
                    ((int64_t *)jb->b_i16)[p * kpair * NR + kk * NR + lane] = ctx->ib[code];
                }
            else
                for (int64_t kk = 0; kk < k; kk++) {
                    uint64_t code = code_of(jb->bt, j * k + kk, wb);
                    jb->zb[kk] += zero_b[code];
                    jb->b_i16[p * kpair * NR + (kk / 2) * 2 * NR + 2 * lane + kk % 2] = (int16_t)ctx->ib[code];
                }
            if (jb->b_bx)
                for (int64_t kk = 0; kk < k; kk++) {
                    const acs_operand *x = &ctx->tb[code_of(jb->bt, j * k + kk, wb)];
                    jb->b_bx[p * k * NR + kk * NR + lane] = alignment_exponent(x);
                    if (x->cls >= ACS_INF) jb->b_spec[j] = 1;
                }
        }
}

/* kernel_wide.c's operands: A rows packed by band, B values into their band planes of
 * ACS_WK_NR columns, the norms when the plan bounds outputs. */
static void decode_wide(gemm_job *jb, int64_t *v)
{
    const acs_mac_ctx *ctx = jb->ctx;
    int64_t n = jb->n, k = jb->k;
    int wa = ctx->mac->a.bits > 8, wb = ctx->mac->b.bits > 8;
    const acs_fixed_plan *pl = &jb->fixed;
    for (int64_t i = jb->i0; i < jb->i1; i++) {
        for (int64_t kk = 0; kk < k; kk++) {
            uint64_t code = code_of(jb->a, i * k + kk, wa);
            jb->za[kk] += ctx->ta[code].cls == ACS_ZERO;
            v[kk] = ctx->ia[code];
        }
        acs_wide_pack_a(pl, v, k, jb->a_wide + i * k, jb->a_starts + i * (acs_wide_segments(pl, k) + 1));
        if (pl->bound) jb->a_norm[i] = acs_wide_norm(v, k);
    }
    for (int64_t j = jb->p0 * NR; j < n && j < jb->p1 * NR; j++) {
        double *plane0 = (double *)jb->b_i16 + j / ACS_WK_NR * pl->nb * k * ACS_WK_NR + j % ACS_WK_NR;
        for (int64_t kk = 0; kk < k; kk++) {
            uint64_t code = code_of(jb->bt, j * k + kk, wb);
            jb->zb[kk] += ctx->tb[code].cls == ACS_ZERO;
            v[kk] = ctx->ib[code];
            acs_wide_put_b(pl, v[kk], plane0 + kk * ACS_WK_NR, k * ACS_WK_NR);
        }
        if (pl->bound) jb->b_norm[j] = acs_wide_norm(v, k);
    }
}

static void decode_part(gemm_job *jb)
{
    if (jb->fast == ACS_FAST_FIXED && jb->fixed.wide == 3) {
        int64_t *v = malloc((size_t)(jb->k > 0 ? jb->k : 1) * sizeof *v);
        if (v) decode_wide(jb, v);
        else jb->status = ACS_ERR_ARG;
        free(v);
        return;
    }
    int wa = jb->ctx->mac->a.bits > 8, wb = jb->ctx->mac->b.bits > 8;
    if (!wa && !wb) decode_part_w(jb, 0, 0);
    else decode_part_w(jb, wa, wb);
}

/* The vector kernels apply: an exact fast path whose operands fit the kernel, and for ws/is a
 * buffer that rounds (or wraps) exactly like the PE accumulator, so tile sums join it by the
 * same native operation. */
static int vector_path(const acs_mac_ctx *ctx, const acs_acc *buffer, int dataflow, int64_t k)
{
    const acs_acc *pe = &ctx->mac->acc;
    if (ctx->fast == ACS_FAST_FP32)
        return dataflow == ACS_OS || (buffer->kind == ACS_ACC_FLOAT && buffer->rounding == ACS_RNE
            && buffer->overflow == ACS_OVF_INF && !memcmp(&buffer->grid, &pe->grid, sizeof pe->grid)
            && !memcmp(&buffer->addend, &pe->addend, sizeof pe->addend));
    if (ctx->fast == ACS_FAST_BLOCK64)
        return dataflow == ACS_OS || ((buffer->kind == ACS_ACC_FLOAT || buffer->kind == ACS_ACC_BLOCK)
            && buffer->rounding == pe->rounding && buffer->overflow == pe->overflow
            && !memcmp(&buffer->grid, &pe->grid, sizeof pe->grid));
    if (ctx->fast == ACS_FAST_EXACT64)
        return dataflow == ACS_OS || (buffer->kind == ACS_ACC_FLOAT && buffer->rounding == pe->rounding
            && buffer->overflow == pe->overflow && !memcmp(&buffer->grid, &pe->grid, sizeof pe->grid)
            && !memcmp(&buffer->addend, &pe->addend, sizeof pe->addend));
    if ((ctx->fast == ACS_FAST_INT_WRAP || acs_int_sat_exact(ctx, 0, k)) && pe->grid.total_bits <= 32) {
        for (int s = 0; s < 2; s++)   /* operand values must fit int16 */
            for (uint64_t c = 0; c < (1ULL << (s ? ctx->mac->b.bits : ctx->mac->a.bits)); c++) {
                int64_t v = (s ? ctx->ib : ctx->ia)[c];
                if (v < INT16_MIN || v > INT16_MAX) return 0;
            }
        return dataflow == ACS_OS || (buffer->kind == ACS_ACC_INT && buffer->overflow == pe->overflow
            && buffer->grid.total_bits == pe->grid.total_bits);
    }
    return 0;
}

/* Run fn on `workers` jobs `stride` bytes apart, jobs 1.. on threads of their own (or here,
 * when no thread can be had). */
typedef struct { void (*fn)(void *); void *arg; } thread_call;

static void *thread_entry(void *p)
{
    thread_call *c = p;
    c->fn(c->arg);
    return NULL;
}

/* The least work (elements; MACs of the vector kernels) worth a thread of its own: starting one
 * costs tens of microseconds, far more when the machine is busy.  Tests set 0 (split whatever
 * there is) so that small shapes still meet every thread count. */
static int64_t thread_grain = (int64_t)1 << 18;

int64_t acs_set_thread_grain(int64_t grain)
{
    int64_t old = thread_grain;
    thread_grain = grain > 0 ? grain : 0;
    return old;
}

/* At most `threads` workers, one per unit at most, each with at least the grain of `work`. */
int acs_workers_for(int threads, int64_t units, double work)
{
    double w = threads < units ? threads : (double)units;
    if (thread_grain && w > work / (double)thread_grain) w = work / (double)thread_grain;
    return w < 1 ? 1 : (int)w;
}

static void run_parallel(void (*fn)(void *), void *jobs, size_t stride, int workers)
{
    pthread_t tids[256];
    thread_call calls[256];
    int started[256] = { 0 };
    for (int w = 1; w < workers; w++) {
        calls[w].fn = fn;
        calls[w].arg = (char *)jobs + w * stride;
        started[w] = pthread_create(&tids[w], NULL, thread_entry, &calls[w]) == 0;
    }
    fn(jobs);
    for (int w = 1; w < workers; w++) {
        if (started[w]) pthread_join(tids[w], NULL);
        else fn((char *)jobs + w * stride);
    }
}

void acs_run_parallel(void (*fn)(void *), void *jobs, size_t stride, int workers)
{
    run_parallel(fn, jobs, stride, workers);
}

/* ---- B's codes transposed (acs_transpose): 64 x 64 tiles, the output's rows among workers. */
typedef struct { const uint8_t *src; uint8_t *dst; int64_t rows, cols, j0, j1; int bytes; } transpose_job;

static inline __attribute__((always_inline)) void transpose_tiles(const transpose_job *t, int bytes)
{
    for (int64_t j0 = t->j0; j0 < t->j1; j0 += 64)
        for (int64_t i0 = 0; i0 < t->rows; i0 += 64) {
            int64_t j1 = j0 + 64 < t->j1 ? j0 + 64 : t->j1, i1 = i0 + 64 < t->rows ? i0 + 64 : t->rows;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t i = i0; i < i1; i++)
                    memcpy(t->dst + (j * t->rows + i) * bytes, t->src + (i * t->cols + j) * bytes, bytes);
        }
}

static void transpose_part(void *p)
{
    const transpose_job *t = p;
    if (t->bytes == 1) transpose_tiles(t, 1);
    else if (t->bytes == 2) transpose_tiles(t, 2);
    else if (t->bytes == 4) transpose_tiles(t, 4);
    else transpose_tiles(t, 8);
}

int acs_transpose(const void *src, void *dst, int64_t rows, int64_t cols, int bytes, int threads)
{
    if (rows < 0 || cols < 0 || (rows && cols && (!src || !dst)) || (bytes != 1 && bytes != 2 && bytes != 4 && bytes != 8)
        || threads < 1 || threads > 256)
        return ACS_ERR_ARG;
    int workers = acs_workers_for(threads, cols, (double)rows * (double)cols);
    transpose_job jobs[256];
    for (int w = 0; w < workers; w++) {
        transpose_job t = { src, dst, rows, cols, cols * w / workers, cols * (w + 1) / workers, bytes };
        jobs[w] = t;
    }
    run_parallel(transpose_part, jobs, sizeof jobs[0], workers);
    return ACS_OK;
}

static void gemm_worker(void *p)
{
    gemm_job *jb = p;
    if (jb->fast) gemm_rows_fast(jb); else gemm_rows_general(jb);
}

static void decode_worker(void *p) { decode_part(p); }

/* The fast paths' shared operand buffers and per-worker zero counts; 0 when out of memory. */
static int alloc_decoded(gemm_job *jobs, int workers)
{
    gemm_job *b = &jobs[0];
    int64_t m = b->m, k = b->k, panels = ceil_div(b->n, NR);
    int64_t *z = calloc((size_t)(2 * workers * (k > 0 ? k : 1)), sizeof *z);
    if (b->fast == ACS_FAST_FP32 || b->fast == ACS_FAST_EXACT64 || b->fast == ACS_FAST_BLOCK64
        || b->fast == ACS_FAST_FIXROUND) {
        b->a_f32 = malloc((size_t)(m * k > 0 ? m * k : 1) * sizeof(float));
        b->b_f32 = calloc((size_t)(panels * k * NR > 0 ? panels * k * NR : 1), sizeof(float));
        if (b->fast == ACS_FAST_BLOCK64) {
            b->a_bx = malloc((size_t)(m * k > 0 ? m * k : 1) * sizeof(int16_t));
            b->b_bx = calloc((size_t)(panels * k * NR > 0 ? panels * k * NR : 1), sizeof(int16_t));
            b->a_spec = calloc((size_t)(m > 0 ? m : 1), 1);
            b->b_spec = calloc((size_t)(panels * NR > 0 ? panels * NR : 1), 1);
        }
    } else if (b->fast == ACS_FAST_FIXED && b->fixed.wide == 3) {   /* kernel_wide.c's packed rows, band planes */
        int64_t sp = ceil_div(b->n, ACS_WK_NR), one = m * k > 0 ? m * k : 1;
        b->a_wide = malloc((size_t)one * sizeof *b->a_wide);
        b->a_starts = malloc((size_t)(m > 0 ? m : 1) * (size_t)(acs_wide_segments(&b->fixed, k) + 1) * sizeof *b->a_starts);
        b->b_i16 = calloc((size_t)(sp * b->fixed.nb * k * ACS_WK_NR > 0 ? sp * b->fixed.nb * k * ACS_WK_NR : 1),
                          sizeof(double));
        if (b->fixed.bound) {
            b->a_norm = malloc((size_t)(m > 0 ? m : 1) * sizeof(double));
            b->b_norm = malloc((size_t)(sp * ACS_WK_NR) * sizeof(double) + 1);
        }
    } else {
        int wide = b->fast == ACS_FAST_FIXED ? b->fixed.wide : 0;   /* A int32 (2: double), B int64 (double) */
        b->a_i16 = calloc((size_t)(m * b->kpair > 0 ? m * b->kpair : 1),
                          wide == 2 ? sizeof(double) : wide ? sizeof(int32_t) : sizeof(int16_t));
        b->b_i16 = calloc((size_t)(panels * b->kpair * NR > 0 ? panels * b->kpair * NR : 1),
                          wide ? sizeof(int64_t) : sizeof(int16_t));
    }
    int wide3 = b->fast == ACS_FAST_FIXED && b->fixed.wide == 3;
    if (!z || !(b->a_f32 || b->a_i16 || b->a_wide) || !(b->b_f32 || b->b_i16)
        || (b->fast == ACS_FAST_BLOCK64 && (!b->a_bx || !b->b_bx || !b->a_spec || !b->b_spec))
        || (wide3 && (!b->a_wide || !b->a_starts || (b->fixed.bound && (!b->a_norm || !b->b_norm))))) {
        free(z); free(b->a_f32); free(b->b_f32); free(b->a_i16); free(b->b_i16); free(b->a_bx); free(b->b_bx);
        free(b->a_spec); free(b->b_spec); free(b->a_wide); free(b->a_starts); free(b->a_norm); free(b->b_norm);
        b->a_f32 = b->b_f32 = NULL; b->a_i16 = b->b_i16 = b->a_bx = b->b_bx = NULL;
        b->a_spec = b->b_spec = NULL;
        b->a_wide = NULL; b->a_starts = NULL; b->a_norm = b->b_norm = NULL;
        return 0;
    }
    for (int w = 0; w < workers; w++) {
        jobs[w].a_f32 = b->a_f32; jobs[w].b_f32 = b->b_f32;
        jobs[w].a_i16 = b->a_i16; jobs[w].b_i16 = b->b_i16;
        jobs[w].a_bx = b->a_bx; jobs[w].b_bx = b->b_bx;
        jobs[w].a_spec = b->a_spec; jobs[w].b_spec = b->b_spec;
        jobs[w].a_wide = b->a_wide; jobs[w].a_starts = b->a_starts;
        jobs[w].a_norm = b->a_norm; jobs[w].b_norm = b->b_norm;
        jobs[w].za = z + 2 * w * (k > 0 ? k : 1);
        jobs[w].zb = jobs[w].za + (k > 0 ? k : 1);
        jobs[w].p0 = panels * w / workers;
        jobs[w].p1 = panels * (w + 1) / workers;
    }
    return 1;
}

/* The fast path and vector kernels a GEMM takes, from its MAC (b->ctx), buffer, dataflow, tile
 * and K: acs_gemm and the kernel queries below share this choice. */
static void choose_kernels(gemm_job *b)
{
    const acs_mac_ctx *ctx = b->ctx;
    b->fast = vector_path(ctx, b->buffer, b->dataflow, b->k) ? ctx->fast : ACS_FAST_NONE;
    if (!b->fast) b->fast = acs_fixed_plan_of(ctx, b->buffer, b->dataflow, b->k, b->tile, &b->fixed);
    if (!b->fast) b->fast = acs_fixround_plan_of(ctx, b->buffer, b->dataflow, b->k, &b->fixed);
    if (b->fast == ACS_FAST_EXACT64) b->float_kernel = acs_float_plan_of(ctx, isa_enabled, &b->float_plan);
#ifdef ACS_X86
    b->block_avx512 = b->fast == ACS_FAST_BLOCK64 && have_avx2_fma() && have_avx512dq()
        && acs_block_avx512_ok(ctx, &b->block_e_lo, &b->block_e_hi);
#endif
}

int acs_gemm(const acs_mac *mac, const acs_acc *buffer, int dataflow, int64_t rows, int64_t cols,
             const void *a, const void *bt, int64_t m, int64_t n, int64_t k,
             double *out, int64_t *out_int, uint64_t seed, int threads, acs_gemm_counts *counts)
{
    if (rows < 1 || cols < 1 || m < 0 || n < 0 || k < 0 || dataflow < ACS_OS || dataflow > ACS_IS
        || threads < 1 || threads > 256)
        return ACS_ERR_ARG;
    if (!mac || !counts || mac->a.bits > 16 || mac->b.bits > 16) return ACS_ERR_ARG;
    if (m && n && k && (m > INT64_MAX / n || m * n > INT64_MAX / k)) return ACS_ERR_ARG; /* m*n*k fits */
    if (m && n && ((k && (!a || !bt)) || (!out && !out_int))) return ACS_ERR_ARG;
    int status = dataflow == ACS_OS ? ACS_OK : acs_check_acc(buffer);
    if (status) return status;
    if (dataflow != ACS_OS && buffer->kind == ACS_ACC_INT && mac->acc.kind != ACS_ACC_INT) return ACS_ERR_ARG;
    acs_mac_ctx ctx;
    status = acs_mac_open(&ctx, mac);
    if (status) return status;
    int nt = mac->acc.kind == ACS_ACC_BLOCK ? mac->acc.terms : 1;
    gemm_job base = { &ctx, buffer, dataflow == ACS_OS ? &mac->acc : buffer, dataflow, nt, ACS_FAST_NONE,
                      dataflow == ACS_OS ? (k > 0 ? k : 1) : rows * nt, ceil_div(k, nt), m, n, k, 0, m, 0, 0,
                      a, bt, out, out_int, seed, 0, ACS_OK, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, k + (k & 1) };
    choose_kernels(&base);
    base.pe_clamps = pe_clamps(&mac->acc, buffer, dataflow);
    base.pe_saturated = 0;
    /* Rows in blocks of MR, spread over at most `threads` workers. */
    int64_t blocks = ceil_div(m, MR);   /* the general step costs ~100 vector-kernel MACs */
    int workers = acs_workers_for(threads, blocks, (double)m * (double)n * (double)k * (base.fast ? 1 : 100));
    gemm_job jobs[256];
    for (int w = 0; w < workers; w++) {
        jobs[w] = base;
        jobs[w].i0 = blocks * w / workers * MR;
        jobs[w].i1 = blocks * (w + 1) / workers * MR;
        if (jobs[w].i1 > m) jobs[w].i1 = m;
        if (jobs[w].i0 > m) jobs[w].i0 = m;
    }
    if (base.fast && !alloc_decoded(jobs, workers))
        for (int w = 0; w < workers; w++) jobs[w].fast = ACS_FAST_NONE;
    if (jobs[0].fast) run_parallel(decode_worker, jobs, sizeof jobs[0], workers);
    run_parallel(gemm_worker, jobs, sizeof jobs[0], workers);
    int64_t zeros = 0;
    counts->pe_saturated = 0;
    for (int w = 0; w < workers; w++) {
        if (jobs[w].status && !status) status = jobs[w].status;
        zeros += jobs[w].zeros;
        counts->pe_saturated += jobs[w].pe_saturated;
    }
    if (jobs[0].fast) {   /* MACs with a zero operand: sum over k of zA*N + zB*M - zA*zB */
        for (int64_t kk = 0; kk < k; kk++) {
            int64_t za = 0, zb = 0;
            for (int w = 0; w < workers; w++) { za += jobs[w].za[kk]; zb += jobs[w].zb[kk]; }
            zeros += za * n + zb * m - za * zb;
        }
        free(jobs[0].za);
        free(jobs[0].a_f32); free(jobs[0].b_f32);
        free(jobs[0].a_i16); free(jobs[0].b_i16);
        free(jobs[0].a_bx); free(jobs[0].b_bx);
        free(jobs[0].a_spec); free(jobs[0].b_spec);
        free(jobs[0].a_wide); free(jobs[0].a_starts); free(jobs[0].a_norm); free(jobs[0].b_norm);
    }
    acs_mac_close(&ctx);
    if (status) return status;
    counts->macs = m * n * k;
    counts->zero_macs = zeros;
    return acs_gemm_toggles(mac, dataflow, rows, cols, a, bt, m, n, k, threads, counts);
}

/* ---- Epilogue: scale (and bias) in fp32, as the array's output stage does --------------- */
static float fp32_of(acs_rounded r)
{
    return (float)acs_rounded_to_double(&r); /* exact: r lies on the fp32 grid */
}

/* fp32(x * y), x from a binary64/int64 and y a binary32, exactly rounded once. */
static acs_rounded mul_round(acs_real x, int xcls, float y)
{
    uint32_t yb;
    memcpy(&yb, &y, sizeof yb);
    int ycls;
    acs_real yr = acs_real_from_bits(yb, 32, &ycls);
    acs_rounded r = { ACS_FINITE, x.neg ^ yr.neg, 0, 0, 0 };
    if (xcls == ACS_NAN || ycls == ACS_NAN || (xcls == ACS_INF && ycls == ACS_ZERO)
        || (ycls == ACS_INF && xcls == ACS_ZERO)) { r.cls = ACS_NAN; return r; }
    if (xcls == ACS_INF || ycls == ACS_INF) { r.cls = ACS_INF; return r; }
    if (xcls == ACS_ZERO || ycls == ACS_ZERO) { r.cls = ACS_ZERO; return r; }
    acs_real p = { r.neg, 0, x.exp + yr.exp, x.sig * yr.sig };
    return acs_round(&acs_fp32_grid, p, ACS_RNE, ACS_OVF_INF, 0);
}

typedef struct {
    const double *acc;
    const int64_t *acc_int;
    int64_t i0, i1, n;
    const float *sa, *sb, *bias;
    int64_t sa_stride, sb_stride;
    double *out;
    const double *clamp;         /* a saturating float register's bounds, or NULL */
    const int64_t *clamp_int;    /* a saturating integer register's bounds, or NULL */
    int64_t acc_nonfinite, acc_saturated, out_nonfinite;   /* this job's overflow counts */
} epilogue_job;

/* Output (i, j) of the epilogue. */
static void epilogue_one(const epilogue_job *e, int64_t i, int64_t j)
{
    const double *acc = e->acc;
    const int64_t *acc_int = e->acc_int;
    const float *sa = e->sa, *sb = e->sb, *bias = e->bias;
    int64_t n = e->n, sa_stride = e->sa_stride, sb_stride = e->sb_stride;
    double *out = e->out;
    int cls;
    /* two binary32 values multiply exactly in binary64; the cast rounds once */
    float s = (float)((double)sa[i * sa_stride] * (double)sb[j * sb_stride]);
    /* Exact fast case: a float accumulator value of at most 24 significant bits (a binary32),
     * or an integer one of at most 29 (the low 24 bits of its binary64 fraction clear), times
     * the 24-bit fp32 scale is exact in double, so one cast rounds it once to nearest-even,
     * and the fp32 add of the bias is the IEEE add the general branch computes. */
    double xd = acc_int ? (double)acc_int[i * n + j] : acc[i * n + j];
    uint64_t xb;
    memcpy(&xb, &xd, sizeof xb);
    if (acc_int ? acc_int[i * n + j] < (1LL << 53) && acc_int[i * n + j] > -(1LL << 53) && !(xb & 0xFFFFFF)
                : (double)(float)xd == xd) {
        float y = (float)(xd * (double)s);
        out[i * n + j] = bias ? y + bias[j] : y;
        return;
    }
    acs_real x;
    if (acc_int) {
        int64_t v = acc_int[i * n + j];
        uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v; /* |INT64_MIN| fits */
        acs_real xi = { v < 0, 0, 0, (acs_u128)mag };
        x = xi;
        cls = v ? ACS_FINITE : ACS_ZERO;
    } else {
        uint64_t ab;
        memcpy(&ab, &acc[i * n + j], sizeof ab);
        x = acs_real_from_bits(ab, 64, &cls);
    }
    acs_rounded y = mul_round(x, cls, s);
    if (bias && y.cls != ACS_NAN) {
        uint32_t bb;
        memcpy(&bb, &bias[j], sizeof bb);
        int bcls;
        acs_real b = acs_real_from_bits(bb, 32, &bcls);
        if (bcls == ACS_NAN || (y.cls == ACS_INF && bcls == ACS_INF && y.neg != b.neg)) {
            y.cls = ACS_NAN;
        } else if (bcls == ACS_INF) {
            y.cls = ACS_INF; y.neg = b.neg;
        } else if (y.cls == ACS_ZERO && bcls == ACS_ZERO) {
            y.neg = y.neg && b.neg;          /* IEEE: -0 + -0 = -0, else +0 */
        } else if (y.cls == ACS_ZERO) {
            y = acs_round(&acs_fp32_grid, b, ACS_RNE, ACS_OVF_INF, 0);
        } else if (y.cls == ACS_FINITE && bcls == ACS_FINITE) {
            acs_real s2 = acs_add_exact(y.neg, y.kept, y.q, b.neg, b.sig, b.exp);
            if (s2.sig == 0 && !s2.sticky) { y.cls = ACS_ZERO; y.neg = 0; }
            else y = acs_round(&acs_fp32_grid, s2, ACS_RNE, ACS_OVF_INF, 0);
        }
    }
    out[i * n + j] = fp32_of(y);
}

/* Row i's overflowed outputs, counted while the row is in cache just after it is written. */
static void count_overflows(epilogue_job *e, int64_t i)
{
    int64_t n = e->n, nf = 0, sat = 0, onf = 0;
    const double *out = e->out + i * n;
    if (e->acc) {
        const double *acc = e->acc + i * n;
        for (int64_t j = 0; j < n; j++) {
            nf += !isfinite(acc[j]);
            sat += e->clamp && (acc[j] == e->clamp[0] || acc[j] == e->clamp[1]);
        }
    } else if (e->clamp_int) {
        const int64_t *acc = e->acc_int + i * n;
        for (int64_t j = 0; j < n; j++) sat += acc[j] == e->clamp_int[0] || acc[j] == e->clamp_int[1];
    }
    for (int64_t j = 0; j < n; j++) onf += !isfinite(out[j]);
    e->acc_nonfinite += nf;
    e->acc_saturated += sat;
    e->out_nonfinite += onf;
}

static void epilogue_rows(void *p)
{
    epilogue_job *e = p;
    int64_t n = e->n;
    int x512 = 0;
#ifdef ACS_X86
    x512 = have_avx2_fma() && isa_enabled == 1 && (e->sb_stride == 0 || e->sb_stride == 1)
           && acs_gemm_avx512(2);
#endif
    for (int64_t i = e->i0; i < e->i1; i++) {
        for (int64_t j = 0; j < n;) {
            int64_t stop = j, end = n;
#ifdef ACS_X86
            if (x512) {   /* the vector fast case runs to the first group of 8 it cannot take */
                int64_t o = i * n;
                stop = acs_epilogue_avx512(e->acc ? e->acc + o : NULL, e->acc_int ? e->acc_int + o : NULL,
                                           e->sa[i * e->sa_stride], e->sb, e->sb_stride, e->bias, e->out + o, j, n);
                end = stop + 8 < n ? stop + 8 : n;
            }
#endif
            for (j = stop; j < end; j++) epilogue_one(e, i, j);
        }
        count_overflows(e, i);
    }
}

int acs_epilogue_counted(const double *acc, const int64_t *acc_int, int64_t m, int64_t n,
                         const float *sa, int64_t sa_stride, const float *sb, int64_t sb_stride,
                         const float *bias, double *out, int threads, const double *clamp,
                         const int64_t *clamp_int, acs_gemm_counts *counts)
{
    if (m < 0 || n < 0 || (m && n && ((!acc && !acc_int) || !sa || !sb || !out))) return ACS_ERR_ARG;
    if (m && n > INT64_MAX / m) return ACS_ERR_ARG;
    if (threads < 1 || threads > 256) return ACS_ERR_ARG;
    int workers = acs_workers_for(threads, m, (double)m * (double)n);   /* rows are independent */
    epilogue_job jobs[256];
    for (int w = 0; w < workers; w++) {
        epilogue_job e = { acc, acc_int, m * w / workers, m * (w + 1) / workers, n, sa, sb, bias, sa_stride,
                           sb_stride, out, clamp, clamp_int, 0, 0, 0 };
        jobs[w] = e;
    }
    run_parallel(epilogue_rows, jobs, sizeof jobs[0], workers);
    if (counts) {
        counts->acc_nonfinite = counts->acc_saturated = counts->out_nonfinite = 0;
        for (int w = 0; w < workers; w++) {
            counts->acc_nonfinite += jobs[w].acc_nonfinite;
            counts->acc_saturated += jobs[w].acc_saturated;
            counts->out_nonfinite += jobs[w].out_nonfinite;
        }
    }
    return ACS_OK;
}

int acs_epilogue(const double *acc, const int64_t *acc_int, int64_t m, int64_t n,
                 const float *sa, int64_t sa_stride, const float *sb, int64_t sb_stride,
                 const float *bias, double *out, int threads)
{
    return acs_epilogue_counted(acc, acc_int, m, n, sa, sa_stride, sb, sb_stride, bias, out, threads,
                                NULL, NULL, NULL);
}

/* Whether the vector kernels take their AVX2 versions (blockscale.c's kernels follow suit). */
int acs_vector_avx2(void) { return have_avx2_fma(); }

/* acs_gemm's choice of kernels for a MAC (os: the buffer is the PE's accumulator), or 0 where
 * the MAC is refused. */
static int kernels_of(const acs_mac *mac, const acs_acc *buffer, int dataflow, int64_t rows, int64_t k,
                      gemm_job *b, acs_mac_ctx *ctx)
{
    memset(b, 0, sizeof *b);
    if (acs_mac_open(ctx, mac) != ACS_OK) return 0;
    int nt = mac->acc.kind == ACS_ACC_BLOCK ? mac->acc.terms : 1;
    b->ctx = ctx;
    b->buffer = dataflow == ACS_OS ? &mac->acc : buffer;
    b->dataflow = dataflow;
    b->k = k;
    b->tile = dataflow == ACS_OS ? (k > 0 ? k : 1) : rows * nt;
    choose_kernels(b);
    return 1;
}

int acs_float_kernel(const acs_mac *mac)
{
    acs_mac_ctx ctx;
    gemm_job b;
    int kind = kernels_of(mac, NULL, ACS_OS, 1, 1, &b, &ctx) ? b.float_kernel : 0;
    acs_mac_close(&ctx);
    return kind;
}

int acs_fixed_kernel(const acs_mac *mac, const acs_acc *buffer, int dataflow, int64_t rows, int64_t k)
{
    acs_mac_ctx ctx;
    gemm_job b;
    int kind = kernels_of(mac, buffer, dataflow, rows, k, &b, &ctx) && b.fast == ACS_FAST_FIXED
        ? (b.fixed.wide == 3 ? 3 : b.fixed.mode) : 0;
    acs_mac_close(&ctx);
    return kind;
}

/* Whether kernels with an AVX-512 (F, DQ, VL) build take it (metrics.c's). */
int acs_vector_avx512(void)
{
#ifdef ACS_X86
    return have_avx512dq();
#else
    return 0;
#endif
}
