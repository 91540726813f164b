/* internal.h: types shared by the engine's C files, not seen by Python. */
#ifndef ACS_INTERNAL_H
#define ACS_INTERNAL_H
#include <stddef.h>
#include "engine.h"

typedef unsigned __int128 acs_u128;
typedef __int128 acs_i128;

static inline int acs_clz128(acs_u128 x) /* x != 0 */
{
    uint64_t hi = (uint64_t)(x >> 64);
    return hi ? __builtin_clzll(hi) : 64 + __builtin_clzll((uint64_t)x);
}

/* An exact real: (-1)^neg * (sig + sticky*tiny) * 2^exp.  sticky marks nonzero bits that were
 * shifted out below sig (only ever below bit 0 of a sig whose top bit is set far above). */
typedef struct {
    int neg;
    int sticky;
    int64_t exp;
    acs_u128 sig;
} acs_real;

enum acs_class { ACS_ZERO = 0, ACS_FINITE = 1, ACS_INF = 2, ACS_NAN = 3 };

enum acs_flag { ACS_INEXACT = 1, ACS_OVERFLOWED = 2, ACS_OUT_OF_RANGE = 4 };

/* A rounded result: (-1)^neg * kept * 2^q when cls is ACS_FINITE.  For float grids kept is
 * either below 2^man_bits (subnormal, q = emin - man_bits) or in [2^man_bits, 2^(man_bits+1)). */
typedef struct {
    int cls;
    int neg;
    int flags;
    int64_t q;
    acs_u128 kept;
} acs_rounded;

/* An operand code's exact value: (-1)^neg * sig * 2^exp when cls is ACS_FINITE.  bexp is the
 * exponent the block fused adder aligns by: floor(log2|x|), clamped below at the format's emin. */
typedef struct {
    uint64_t sig;
    int32_t exp;
    int32_t bexp;
    int16_t cls;
    int16_t neg;
} acs_operand;

acs_operand acs_decode_operand(const acs_format *f, uint64_t code);
uint64_t acs_posit_code(const acs_format *f, acs_real x, int rounding);
uint64_t acs_load_code(const void *codes, int64_t i, int bits);

acs_real acs_add_exact(int xneg, acs_u128 xs, int64_t xe, int yneg, acs_u128 ys, int64_t ye);
extern const acs_grid acs_fp32_grid;
acs_rounded acs_round(const acs_grid *g, acs_real x, int rounding, int overflow, uint32_t rand);
acs_rounded acs_round_infinity(const acs_grid *g, int neg, int overflow);
double acs_rounded_to_double(const acs_rounded *r);
acs_real acs_real_from_bits(uint64_t u, int in_bits, int *cls);
uint64_t acs_pow2_pattern(int in_bits, int64_t e);

/* Chains of accumulation steps (accumulate.c), shared by accumulate and the array. */
typedef struct {
    acs_rounded v;   /* float and block accumulators */
    acs_i128 reg;    /* integer and fixed registers */
} acs_acc_state;

enum acs_fast_path { ACS_FAST_NONE = 0, ACS_FAST_FP32 = 1, ACS_FAST_INT_WRAP = 2, ACS_FAST_EXACT64 = 3,
                     ACS_FAST_INT_SAT = 4, ACS_FAST_BLOCK64 = 5, ACS_FAST_FIXED = 6,
                     ACS_FAST_FIXROUND = 7 };

typedef struct {
    const acs_mac *mac;
    acs_operand *ta, *tb;  /* decoded operand codes, for formats of at most 16 bits */
    int ta_shared, tb_shared;  /* kept for the process (accumulate.c): not freed on close */
    int fast;              /* an exact fast path (acs_fast_path) this MAC allows */
    int exact_sums;        /* ACS_FAST_EXACT64: every acc + a*b provably exact in binary64 */
    int products_f32;      /* every product of two finite operands is a binary32 */
    float *fa, *fb;        /* ACS_FAST_FP32, ACS_FAST_EXACT64, ACS_FAST_BLOCK64: operand values (FIXROUND: A's
                              times 2^frac_bits) */
    int64_t *ia, *ib;      /* ACS_FAST_INT_WRAP, ACS_FAST_INT_SAT: operand values */
    int64_t max_product;   /* ACS_FAST_INT_SAT, ACS_FAST_FIXED: the largest |a*b| (in ia*ib units; 0 when wide);
                              FIXROUND: the largest rounded product in register lsbs */
    int fixed_shift;       /* ACS_FAST_FIXED: register lsbs per unit of ia*ib (>= 0) */
    int fixed_wide;        /* ACS_FAST_FIXED: some ia or ib beyond 31 bits (below 2^62): kernel_wide.c's bands */
} acs_mac_ctx;

int acs_check_acc(const acs_acc *acc);
int acs_mac_open(acs_mac_ctx *ctx, const acs_mac *mac);
void acs_mac_close(acs_mac_ctx *ctx);
acs_acc_state acs_acc_start(const acs_acc *acc, double init);
int acs_int_sat_exact(const acs_mac_ctx *ctx, acs_i128 start, int64_t len);
int acs_chain(const acs_mac_ctx *ctx, const void *a, int64_t ia, const void *b, int64_t ib,
              int64_t len, acs_acc_state *s, uint64_t seed, uint64_t element, uint64_t step0,
              int64_t *zero_macs);
int acs_acc_add(const acs_acc *into, acs_acc_state *s, const acs_acc *from, const acs_acc_state *partial,
                uint32_t rand);
void acs_acc_read(const acs_acc *acc, const acs_acc_state *s, double *out, int64_t *out_int);

/* Register accumulators across blocks of ACS_FX_MR x ACS_FX_NR outputs (kernel_fixed.c), on
 * array.c's int16 operands: A rows of k values, B panels of pairs (B[2q][j], B[2q+1][j]). */
#define ACS_FX_MR 4
#define ACS_FX_NR 16
enum acs_fixed_mode { ACS_FIXED_SUM = 1, ACS_FIXED_CLAMP = 2 };
typedef struct {
    int mode;
    int shift;             /* SUM: output register lsbs per product unit */
    int64_t chunk;         /* pairs of products whose int32 sum cannot overflow */
    int64_t lo, hi;        /* CLAMP: the saturating register's bounds (the buffer shares them) */
    int64_t max_product;
    int wide;              /* operands below 2^31, not int16 pairs: 1 acs_fixed_sum_wide / clamp_wide (A
                              int32, B panels int64), 2 acs_fixed_sum_f64 (SUM; both as doubles); 3 wider
                              operands through kernel_wide.c's bands (SUM; the sum an acs_i128) */
    int na, wa, nb, wb;    /* wide 3: A in na bands of wa trailing-zero counts, B in nb bands of wb */
    int bound;             /* wide 3: an output whose norms' product exceeds `limit` takes the general step */
    double limit;
    int direct;            /* a FixedAcc output that is the kernel's int64 times `scale` (a power of two) */
    int wrap64;            /* a wrapping FixedAcc output of at most 64 bits, wrapped in uint64, times `scale` */
    double scale;
} acs_fixed_plan;
int acs_fixed_plan_of(const acs_mac_ctx *ctx, const acs_acc *buffer, int dataflow, int64_t k, int64_t tile,
                      acs_fixed_plan *plan);
void acs_fixed_sum(int isa, const int16_t *const arows[ACS_FX_MR], const int16_t *panel, int64_t pairs,
                   int64_t chunk, int64_t out[ACS_FX_MR][ACS_FX_NR]);
void acs_fixed_sum_wide(int isa, const int32_t *const arows[ACS_FX_MR], const int64_t *panel, int64_t k,
                        int64_t out[ACS_FX_MR][ACS_FX_NR]);
void acs_fixed_sum_f64(int isa, const double *const arows[ACS_FX_MR], const double *panel, int64_t k, int64_t chunk,
                       int64_t out[ACS_FX_MR][ACS_FX_NR]);
void acs_fixed_clamp_wide(int isa, const acs_fixed_plan *plan, const int32_t *const arows[ACS_FX_MR],
                          const int64_t *panel, int64_t k, int64_t tile, int64_t out[ACS_FX_MR][ACS_FX_NR]);
void acs_fixed_clamp(int isa, const acs_fixed_plan *plan, const int16_t *const arows[ACS_FX_MR],
                     const int16_t *panel, int64_t k, int64_t tile, int64_t out[ACS_FX_MR][ACS_FX_NR]);
/* FixedAcc whose products are rounded onto its grid (kernel_fixround.c), in the same blocks and
 * plans, on array.c's binary32 operands (A rows of k values, B panels of NR values per k). */
int acs_fixround_open(acs_mac_ctx *ctx);
int acs_fixround_plan_of(const acs_mac_ctx *ctx, const acs_acc *buffer, int dataflow, int64_t k, acs_fixed_plan *plan);
void acs_fixround_block(int isa, const acs_fixed_plan *pl, int mode, const float *const arows[ACS_FX_MR],
                        const float *panel, int64_t k, int64_t tile, const uint64_t *lanes,
                        int64_t out[ACS_FX_MR][ACS_FX_NR]);
typedef struct {
    const acs_acc *acc;
    float *val;                     /* values read out, by (bit length, leading bits, sticky) */
    int64_t base[65];
    int keep[65];
} acs_posit_memo;
int acs_posit_memo_init(acs_posit_memo *m, const acs_acc *acc);
void acs_posit_memo_free(acs_posit_memo *m);
void acs_fixed_out(const acs_acc *acc, const acs_fixed_plan *plan, acs_i128 sum, int nar, acs_posit_memo *memo,
                   double *out, int64_t *out_int);

/* Register sums of operands beyond 31 bits (kernel_wide.c), over up to ACS_WK_MR A rows and
 * ACS_WK_NR columns.  A row's k values are packed by band (entries of a value and its k; starts[h]
 * the first of band h, starts[na] = its count); B panels hold nb band planes of k x NR doubles;
 * acs_wide_rows takes scratch of ACS_WK_MR * na * ACS_WK_NR int64. */
#define ACS_WK_MR 16
#define ACS_WK_NR 32
typedef struct { double v; int64_t k; } acs_wide_entry;
int acs_wide_bands(const acs_mac_ctx *ctx, int64_t k, acs_fixed_plan *plan);
int64_t acs_wide_segments(const acs_fixed_plan *plan, int64_t k);
void acs_wide_pack_a(const acs_fixed_plan *plan, const int64_t *v, int64_t k, acs_wide_entry *e, int32_t *starts);
void acs_wide_put_b(const acs_fixed_plan *plan, int64_t v, double *plane0, int64_t plane);
double acs_wide_norm(const int64_t *v, int64_t k);
void acs_wide_rows(int isa, const acs_fixed_plan *plan, const acs_wide_entry *e, const int32_t *starts, int64_t rows,
                   const double *panel, int64_t k, int64_t *t, acs_i128 out[][ACS_WK_NR]);

/* Float accumulators on AVX-512 (kernel_float.c), in blocks of ACS_FK_MR rows by two panels of
 * ACS_FK_NR columns: A rows of k binary32 operand values, B panels of NR values per k (array.c's
 * layout).  acs_float_plan_of returns nonzero when a kernel applies to the MAC with vector ISA
 * setting `isa` (array.c's: 1 is the best the CPU has). */
#define ACS_FK_MR 4
#define ACS_FK_NR 16
typedef struct {
    int kind, mode, sat, sh;
    int scale_a;                   /* the operand scaled on loading: A (1) or B (0) */
    float scale;                   /* 2^s: values are kept times it */
    double unscale;
    uint32_t max_bits;             /* the largest finite value (scaled), as a binary32 pattern */
    uint32_t over_pos, over_neg;   /* what a sum past it becomes, by sign (patterns) */
    double max64, over64;          /* sr: the largest finite value, and what a sum past it becomes */
    int64_t man_shift, ulp_min;    /* sr: man_bits << 52; the subnormal spacing's binary64 pattern */
    int64_t emin64;                /* sr: 2^emin's binary64 pattern */
    int sh64;                      /* sr: 52 - man_bits */
} acs_float_plan;
int acs_float_plan_of(const acs_mac_ctx *ctx, int isa, acs_float_plan *p);
/* sr: lanes holds each output's hash state after (seed, index) (row-major, MR x 2 NR), kp the
 * buffer's first draw step. */
void acs_float_block(const acs_float_plan *p, const float *const arows[ACS_FK_MR], const float *const panels[2],
                     int64_t k, int64_t tile, int chain_only, const uint64_t *lanes, uint64_t kp,
                     double out[ACS_FK_MR][2 * ACS_FK_NR]);

/* BlockFMA blocks of ACS_BK_MR x ACS_BK_NR outputs on AVX-512 (kernel_block.c), on array.c's
 * decoded operands: MR A rows of k values and alignment exponents, B panels of NR per k; out
 * gets the accumulators, bad all ones where the general step must recompute one. */
#define ACS_BK_MR 4
#define ACS_BK_NR 16
typedef struct {
    const float *const *arows;
    const int16_t *const *xrows;
    const float *panel;
    const int16_t *xpanel;
    int64_t k, tile;
    int terms, align, emin, chain_only;
    const acs_acc *acc;
    const uint64_t *lanes;   /* sr: each output's hash state (array.c's exact64_lanes) */
    uint64_t kp;             /* sr: the buffer's first step (tile joins) */
    int e_lo, e_hi;          /* a block whose alignment exponent E lies outside goes to the general step */
} acs_block_args;
/* Whether kernel_block.c takes the MAC; sets the E range its lanes must check (none: lo > hi). */
int acs_block_avx512_ok(const acs_mac_ctx *ctx, int *e_lo, int *e_hi);
void acs_block_avx512(const acs_block_args *w, double out[ACS_BK_MR][ACS_BK_NR], int64_t bad[ACS_BK_MR][ACS_BK_NR]);

/* kernel_gemm.c (x86): AVX-512 builds of array.c's fp32 and int16-pair kernels, over ACS_FX_MR rows
 * and np (1 or 2) B panels pstride elements apart, storing mr rows and nc columns at out; and of
 * its epilogue's fast case. */
int acs_gemm_avx512(int which);
void acs_fp32_block_avx512(const float *const arows[ACS_FX_MR], const float *panel, int64_t pstride, int np, int64_t k,
                           int64_t tile, int mr, int nc, double *out, int64_t ldo);
void acs_int16_block_vnni(const int16_t *const arows[ACS_FX_MR], const int16_t *panel, int64_t pstride, int np,
                          int64_t pairs, int sh, int mr, int nc, int64_t *out, int64_t ldo);
int64_t acs_epilogue_avx512(const double *acc, const int64_t *acc_int, float sa, const float *sb, int64_t sb_stride,
                            const float *bias, double *out, int64_t j0, int64_t n);

/* array.c: how many of `threads` workers `work` (elements, or vector-kernel MACs) in `units`
 * pieces deserves (acs_set_thread_grain). */
int acs_workers_for(int threads, int64_t units, double work);

/* array.c: fn on each of `workers` jobs `stride` bytes apart, the first on this thread. */
void acs_run_parallel(void (*fn)(void *), void *jobs, size_t stride, int workers);

/* toggles.c, for array.c and blockscale.c: acs_gemm's register and multiplier-input flips. */
int acs_gemm_toggles(const acs_mac *mac, int dataflow, int64_t rows, int64_t cols, const void *a, const void *bt,
                     int64_t m, int64_t n, int64_t k, int threads, acs_gemm_counts *counts);

/* array.c, for blockscale.c and metrics.c: the vector ISA in use. */
int acs_vector_avx2(void);
int acs_vector_avx512(void);

#endif
