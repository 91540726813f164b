/* kernel_wide.c: register accumulators (FixedAcc, Kulisch, the quire) whose operands, as
 * integers in the units accumulate.c's fixed_values chose, exceed 31 bits (e5m2: 2^-16 ..
 * 57344, 33 bits; posit8es2: 2^-24 .. 2^24, 49 bits).  The sum of products is exact in
 * binary64 only over a narrow band of magnitudes, so each value v = u * 2^(h*w) is put in band
 * h by its trailing zeros (h = tz(v) / w): a band's values u have at most w - 1 + (the
 * format's significand bits) bits.  Each A row is packed by band (its nonzero values in band
 * order, with their k: a sum of products does not depend on order when it is exact, or
 * taken modulo 2^128 for a wrapping register), B panels hold one plane per band of B (most of
 * B fits one).  Products of a band pair are summed in binary64 FMAs in runs short enough
 * that every partial sum is an integer below 2^51 (exact), each run becomes an int64 exactly
 * (adding 1.5 * 2^52 puts it in the low mantissa bits), the runs' int64 sum (below 2^62) is
 * shifted by the pair's band weights into an acs_i128 per output.  kernel_fixed.c's plan says
 * when that sum is the register (acs_fixed_plan_of); acs_fixed_out reads it out.
 * Portable C twin, AVX2 and AVX-512 builds chosen at run time; all form the same integers. */
#include <math.h>
#include <string.h>
#include "internal.h"

#define WK_NR ACS_WK_NR

static int bit_len(uint64_t x) { return x ? 64 - __builtin_clzll(x) : 0; }

/* The widest band of a format's values in bands of w trailing zeros: the most bits of v >> (h*w). */
static int band_bits(const int64_t *v, int bits, int w)
{
    int most = 0;
    for (uint64_t c = 0; c < (1ULL << bits); c++) {
        uint64_t u = v[c] < 0 ? -(uint64_t)v[c] : (uint64_t)v[c];
        if (u) {
            int h = __builtin_ctzll(u) / w, b = bit_len(u) - h * w;
            most = b > most ? b : most;
        }
    }
    return most;
}

static int max_tz(const int64_t *v, int bits)
{
    int most = 0;
    for (uint64_t c = 0; c < (1ULL << bits); c++) {
        int tz = v[c] ? __builtin_ctzll((uint64_t)v[c]) : 0;   /* of |v| too */
        most = tz > most ? tz : most;
    }
    return most;
}

/* Bands for a plan of kernel_fixed.c (mode SUM, its shift and bound set): the fewest B bands,
 * then the fewest A bands, such that runs of at least min(k, 256) products sum below 2^51 and
 * all k of a band pair below 2^62.  ACS_FAST_NONE (plan cleared) when none do. */
int acs_wide_bands(const acs_mac_ctx *ctx, int64_t k, acs_fixed_plan *plan)
{
    int abits = ctx->mac->a.bits, bbits = ctx->mac->b.bits;
    int need = bit_len((uint64_t)(k > 1 ? k - 1 : 0)), run = need < 8 ? need : 8;   /* k <= 2^need */
    int ta = max_tz(ctx->ia, abits) + 1, tb = max_tz(ctx->ib, bbits) + 1;
    for (int nb = 1; nb <= 4 && k <= (1 << 20); nb++) {
        int wb = (tb + nb - 1) / nb, bb = band_bits(ctx->ib, bbits, wb);
        for (int wa = ta; wa >= 1; wa--) {
            int ba = band_bits(ctx->ia, abits, wa);
            if (51 - ba - bb < run || ba + bb + need > 62) continue;
            int lg = 51 - ba - bb < 30 ? 51 - ba - bb : 30;
            plan->wide = 3;
            plan->na = (ta + wa - 1) / wa;
            plan->wa = wa;
            plan->nb = (tb + wb - 1) / wb;
            plan->wb = wb;
            plan->chunk = (int64_t)1 << lg;
            plan->direct = plan->wrap64 = 0;
            plan->scale = 0.0;
            return ACS_FAST_FIXED;
        }
    }
    memset(plan, 0, sizeof *plan);
    return ACS_FAST_NONE;
}

/* Segments per A row: its entries of each K tile of WK_KT, each band (starts has one more). */
#define WK_KT 64
int64_t acs_wide_segments(const acs_fixed_plan *plan, int64_t k)
{
    return (k + WK_KT - 1) / WK_KT * plan->na;
}

/* One A row's k values (units) packed by (K tile, band): nonzero values only, in k order. */
void acs_wide_pack_a(const acs_fixed_plan *plan, const int64_t *v, int64_t k, acs_wide_entry *e, int32_t *starts)
{
    int na = plan->na;
    int32_t at[64];   /* na <= 64 */
    uint8_t band[64];   /* by trailing zeros: no division per value */
    for (int tz = 0; tz < 64; tz++) band[tz] = (uint8_t)(tz / plan->wa);
    starts[0] = 0;
    for (int64_t k0 = 0, g = 0; k0 < k; k0 += WK_KT, g += na) {
        int64_t k1 = k - k0 < WK_KT ? k : k0 + WK_KT;
        int32_t count[64] = { 0 };
        for (int64_t kk = k0; kk < k1; kk++)
            if (v[kk]) count[band[__builtin_ctzll((uint64_t)v[kk])]]++;
        for (int h = 0; h < na; h++) starts[g + h + 1] = starts[g + h] + count[h];
        for (int h = 0; h < na; h++) at[h] = starts[g + h];
        for (int64_t kk = k0; kk < k1; kk++)
            if (v[kk]) {
                int h = band[__builtin_ctzll((uint64_t)v[kk])];
                acs_wide_entry x = { (double)(v[kk] >> (h * plan->wa)), kk };   /* exact: whole, below 2^51 */
                e[at[h]++] = x;
            }
    }
}

/* A B value into its band's plane (planes `plane` doubles apart; the others keep their zero). */
void acs_wide_put_b(const acs_fixed_plan *plan, int64_t v, double *plane0, int64_t plane)
{
    if (!v) return;
    int h = __builtin_ctzll((uint64_t)v) / plan->wb;
    plane0[h * plane] = (double)(v >> (h * plan->wb));
}

/* An upper bound on the 2-norm of k values: the binary64 sum of squares (relative error below
 * (k + 1) 2^-53 <= 2^-32 for k <= 2^20) and its root raised by 2^-30, which also covers the
 * rounding of a product of two such norms. */
double acs_wide_norm(const int64_t *v, int64_t k)
{
    double s = 0.0;
    for (int64_t kk = 0; kk < k; kk++) s += (double)v[kk] * (double)v[kk];
    return sqrt(s) * (1.0 + ldexp(1.0, -30));
}

/* Rows are taken WK_MR at a time, K in tiles of WK_KT: a tile of a B plane (WK_KT x NR doubles,
 * 16 KiB) stays in L1 while every row's entries of that tile meet it.  A row's entries of one
 * band and tile (a segment: k increasing within a band) are at most WK_KT <= min(k, 256) <=
 * chunk products, so each segment's binary64 sum is exact and joins its band pair's int64 lanes. */
#define WK_MR ACS_WK_MR
_Static_assert(WK_KT <= 256, "a segment fits the plan's shortest run");

typedef void (*wk_seg_fn)(const acs_wide_entry *e, int64_t n, const double *plane, int64_t t[WK_NR]);

static void seg_portable(const acs_wide_entry *e, int64_t n, const double *plane, int64_t t[WK_NR])
{
    double s[WK_NR] = { 0 };
    for (int64_t q = 0; q < n; q++) {
        const double *b = plane + e[q].k * WK_NR;
        for (int j = 0; j < WK_NR; j++) s[j] += e[q].v * b[j];   /* exact */
    }
    for (int j = 0; j < WK_NR; j++) t[j] += (int64_t)s[j];
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define WK_MAGIC 6755399441055744.0   /* 1.5 * 2^52: an integer below 2^51 lands in the low mantissa bits */

/* Entries two at a time into two sets of accumulators (FMA latency), one set per entry parity;
 * each set's sum is a partial sum of the segment: exact. */
__attribute__((target("avx2,fma")))
static void seg_avx2(const acs_wide_entry *e, int64_t n, const double *plane, int64_t t[WK_NR])
{
    __m256d s[2][8];
    for (int h = 0; h < 8; h++) s[0][h] = s[1][h] = _mm256_setzero_pd();
    int64_t q = 0;
    for (; q + 1 < n; q += 2)
        _Pragma("GCC unroll 2")
        for (int u = 0; u < 2; u++) {
            __m256d x = _mm256_broadcast_sd(&e[q + u].v);
            const double *b = plane + e[q + u].k * WK_NR;
            _Pragma("GCC unroll 8")
            for (int h = 0; h < 8; h++) s[u][h] = _mm256_fmadd_pd(x, _mm256_loadu_pd(b + 4 * h), s[u][h]);
        }
    if (q < n) {
        __m256d x = _mm256_broadcast_sd(&e[q].v);
        const double *b = plane + e[q].k * WK_NR;
        for (int h = 0; h < 8; h++) s[0][h] = _mm256_fmadd_pd(x, _mm256_loadu_pd(b + 4 * h), s[0][h]);
    }
    const __m256d magic = _mm256_set1_pd(WK_MAGIC);
    for (int h = 0; h < 8; h++) {
        __m256i v = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(_mm256_add_pd(s[0][h], s[1][h]), magic)),
                                     _mm256_castpd_si256(magic));
        _mm256_storeu_si256((__m256i *)(t + 4 * h), _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(t + 4 * h)), v));
    }
}

__attribute__((target("avx512f")))
static void seg_avx512(const acs_wide_entry *e, int64_t n, const double *plane, int64_t t[WK_NR])
{
    __m512d s[2][4];
    for (int h = 0; h < 4; h++) s[0][h] = s[1][h] = _mm512_setzero_pd();
    int64_t q = 0;
    for (; q + 1 < n; q += 2)
        _Pragma("GCC unroll 2")
        for (int u = 0; u < 2; u++) {
            __m512d x = _mm512_set1_pd(e[q + u].v);
            const double *b = plane + e[q + u].k * WK_NR;
            _Pragma("GCC unroll 4")
            for (int h = 0; h < 4; h++) s[u][h] = _mm512_fmadd_pd(x, _mm512_loadu_pd(b + 8 * h), s[u][h]);
        }
    if (q < n) {
        __m512d x = _mm512_set1_pd(e[q].v);
        const double *b = plane + e[q].k * WK_NR;
        for (int h = 0; h < 4; h++) s[0][h] = _mm512_fmadd_pd(x, _mm512_loadu_pd(b + 8 * h), s[0][h]);
    }
    const __m512d magic = _mm512_set1_pd(WK_MAGIC);
    for (int h = 0; h < 4; h++) {
        __m512i v = _mm512_sub_epi64(_mm512_castpd_si512(_mm512_add_pd(_mm512_add_pd(s[0][h], s[1][h]), magic)),
                                     _mm512_castpd_si512(magic));
        _mm512_storeu_si512((void *)(t + 8 * h), _mm512_add_epi64(_mm512_loadu_si512((const void *)(t + 8 * h)), v));
    }
}
#undef WK_MAGIC
#define WK_X86 1
#endif

/* Up to WK_MR rows (entries k apart, starts acs_wide_segments + 1 apart) by one panel's NR columns; `t` is
 * scratch of WK_MR * na * NR int64 (acs_wide_scratch). */
void acs_wide_rows(int isa, const acs_fixed_plan *pl, const acs_wide_entry *e, const int32_t *starts, int64_t rows,
                   const double *panel, int64_t k, int64_t *t, acs_i128 out[][WK_NR])
{
    wk_seg_fn seg = seg_portable;
#ifdef WK_X86
    if (isa == 2) seg = seg_avx512;
    else if (isa == 1) seg = seg_avx2;
#endif
    (void)isa;
    acs_u128 acc[WK_MR][WK_NR] = { { 0 } };
    int na = pl->na;
    int64_t segs = acs_wide_segments(pl, k);
    for (int hb = 0; hb < pl->nb; hb++) {
        const double *plane = panel + hb * k * WK_NR;
        memset(t, 0, sizeof(int64_t) * (size_t)(rows * na * WK_NR));
        for (int64_t g = 0; g < segs; g += na)
            for (int64_t r = 0; r < rows; r++) {
                const int32_t *st = starts + r * (segs + 1) + g;
                for (int ha = 0; ha < na; ha++)
                    if (st[ha + 1] > st[ha])
                        seg(e + r * k + st[ha], st[ha + 1] - st[ha], plane, t + (r * na + ha) * WK_NR);
            }
        for (int64_t r = 0; r < rows; r++)   /* band pairs join at weight 2^sh, modulo 2^128 */
            for (int ha = 0; ha < na; ha++) {
                int sh = ha * pl->wa + hb * pl->wb;
                for (int j = 0; j < WK_NR; j++) acc[r][j] += (acs_u128)(acs_i128)t[(r * na + ha) * WK_NR + j] << sh;
            }
    }
    for (int64_t r = 0; r < rows; r++)
        for (int j = 0; j < WK_NR; j++) out[r][j] = (acs_i128)acc[r][j];
}

#undef WK_KT
#undef WK_MR
#undef WK_NR
