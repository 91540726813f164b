/* engine.h: the one public header of the accel_sim C engine.
 *
 * The engine does the arithmetic that must be fast and exact; Python validates every
 * argument first.  The part between the cdef markers is also fed to cffi's cdef, so it
 * is kept to plain C declarations (no macros, no __int128).
 */
#ifndef ACS_ENGINE_H
#define ACS_ENGINE_H
#include <stdint.h>

/* cdef-begin */
enum acs_rounding { ACS_RNE = 0, ACS_RNA = 1, ACS_RTZ = 2, ACS_RUP = 3, ACS_RDN = 4, ACS_RTO = 5, ACS_SR = 6 };

/* What a result beyond the grid's range becomes.  INF and NAN follow IEEE: modes that round
 * away from zero give inf (or NaN for formats without inf), the others the largest finite value. */
enum acs_overflow { ACS_OVF_INF = 0, ACS_OVF_NAN = 1, ACS_OVF_SATURATE = 2, ACS_OVF_WRAP = 3, ACS_OVF_ERROR = 4 };

enum acs_grid_kind { ACS_GRID_FLOAT = 0, ACS_GRID_FIXED = 1, ACS_GRID_POSIT = 2 };

/* Which codes of a float format are special (names as in ml_dtypes).
 * IEEE: all-ones exponent is inf (mantissa 0, if has_inf) or NaN; FN: only all-ones exponent
 * and mantissa is NaN; FNUZ: only the negative-zero code is NaN (no -0, no inf); NONE: no
 * special codes, every code is a number (float4_e2m1fn, float6_*); POW2: unsigned powers of
 * two, no sign, mantissa or zero, field e is 2^(e - bias) and the all-ones code is NaN
 * (float8_e8m0fnu; grid: man_bits 0, emin -bias, no subnormals). */
enum acs_nan_style { ACS_NAN_IEEE = 0, ACS_NAN_FN = 1, ACS_NAN_FNUZ = 2, ACS_NAN_NONE = 3, ACS_NAN_POW2 = 4 };

enum acs_status { ACS_OK = 0, ACS_ERR_NAN = 1, ACS_ERR_RANGE = 2, ACS_ERR_ARG = 3 };

/* A grid of representable values.
 * Float: sig * 2^(e - man_bits), sig < 2^(man_bits+1), e in [emin, emax]; the largest finite
 *   value is max_sig * 2^(emax - man_bits).
 * Fixed: k * 2^-frac_bits, k a total_bits-wide integer (two's complement when is_signed). */
typedef struct {
    int kind;
    int man_bits;
    int emin;
    int emax;
    uint64_t max_sig;
    int subnormals;
    int total_bits;
    int frac_bits;
    int is_signed;
} acs_grid;

/* A number format with codes: a grid plus the bit layout of its codes.
 * Posits (grid.kind ACS_GRID_POSIT, Posit Standard 2022): `bits` = n (3..16), exp_bits = es
 * (0..3); the grid only describes the values' extent: man_bits the widest fraction, emin and
 * emax the scales of minpos and maxpos, and total_bits/frac_bits a fixed grid holding every
 * value (so bounds computed as for fixed formats stay true).  Encoding rounds the bit pattern
 * (see formats.c); acs_round never sees a posit grid. */
typedef struct {
    acs_grid grid;
    int bits;          /* code width, 1..64 */
    int exp_bits;      /* float formats; es of posits */
    int bias;
    int has_inf;
    int nan_style;
} acs_format;

/* A memo of acs_round for one (format, input width, rounding, overflow): inputs are cut into
 * buckets one target unit wide by their bit patterns; in a bucket the code is `lo` below
 * remainder `thr` and `hi` from it on (bit 31 of a code marks an out-of-range result). */
typedef struct {
    uint64_t thr;
    uint32_t lo;
    uint32_t hi;
} acs_encode_entry;

/* Entries needed for an encode table, or 0 where no table applies (stochastic or round-to-odd
 * rounding, or a format too fine for a table of at most 2^21 entries). */
int64_t acs_encode_table_size(const acs_format *f, int in_bits, int rounding);
int acs_encode_table_build(const acs_format *f, int in_bits, int rounding, int overflow,
                           acs_encode_entry *table, int64_t n_entries);

/* Encode n values into codes of width 1, 2, 4 or 8 bytes (by f->bits).  Element i uses the
 * stochastic-rounding stream acs_rand32(seed, index0 + i, 0).  `table` (may be NULL) must come
 * from acs_encode_table_build with the same arguments.  On error returns the status and
 * stores the index of the first bad element in *bad_index. */
int acs_encode_f64(const acs_format *f, const double *x, int64_t n, void *codes,
                   int rounding, int overflow, uint64_t seed, int64_t index0,
                   const acs_encode_entry *table, int64_t *bad_index);
int acs_encode_f32(const acs_format *f, const float *x, int64_t n, void *codes,
                   int rounding, int overflow, uint64_t seed, int64_t index0,
                   const acs_encode_entry *table, int64_t *bad_index);

/* Decode n codes (width by f->bits) into exact float64 values. */
void acs_decode(const acs_format *f, const void *codes, int64_t n, double *out);

/* Accumulators.  FLOAT: acc <- round(acc + a*b) on `grid` (IEEE-style float grid).
 * INT: exact integer sum in a grid.total_bits register, wrapped or saturated each step.
 * FIXED: each product rounded onto the 2^-frac_bits grid, added exactly to the register,
 * then wrapped or saturated.  BLOCK: the multi-term fused adder of tensor cores (`terms`
 * products per step, aligned to the largest exponent and truncated to `align_bits` fraction
 * bits, one rounding onto the float `grid` per block).  QUIRE: the exact fixed-point register
 * of posit dot products (grid: signed, total_bits <= 128, wrapping), products added exactly,
 * a NaR product makes it NaR; read out once, rounded (rne) to the posit format `readout`. */
enum acs_acc_kind { ACS_ACC_FLOAT = 0, ACS_ACC_INT = 1, ACS_ACC_FIXED = 2, ACS_ACC_BLOCK = 3, ACS_ACC_QUIRE = 4 };

typedef struct {
    int kind;
    acs_grid grid;
    acs_grid addend;   /* FLOAT/BLOCK: the register init is rounded onto (nearest-even) */
    int rounding;
    int overflow;
    int terms;
    int align_bits;
    acs_format readout;  /* QUIRE only */
} acs_acc;

typedef struct {
    acs_format a;
    acs_format b;
    acs_acc acc;
} acs_mac;

/* rows independent chains of k steps: chain r multiplies a[r*k + j] by b[r*k + j] (codes of
 * the operand formats' widths) in order j = 0..k-1, starting from init[r] (rounded to
 * nearest-even onto acc.addend for float accumulators, onto the register grid otherwise).  Results go to out[r] (float64) or, for INT
 * accumulators, out_int[r].  Stochastic rounding in chain r, step j draws
 * acs_rand32(seed, element0 + r, j) (j counts blocks for BLOCK). */
int acs_accumulate(const acs_mac *mac, const void *a, const void *b, int64_t rows, int64_t k,
                   const double *init, double *out, int64_t *out_int, uint64_t seed, int64_t element0);

/* A GEMM out[i,j] = sum_k a[i,k] b[k,j] on a rows x cols systolic array, in its dataflow's order:
 * OS: one chain over all of K per output.  WS, IS: K cut into tiles of rows*terms; each tile's
 * chain starts from zero, and the tile sums join `buffer` (the accumulator buffer) in order.
 * a is m x k, bt is b transposed (n x k), both codes.  Stochastic rounding: chain steps draw
 * acs_rand32(seed, i*n + j, step) with step counted over the whole K (in blocks), buffer adds
 * step ceil(k/terms) + tile.  out (float64) or out_int (IntAcc output) is m x n.  Output rows
 * are shared among `threads` workers; the bits do not depend on their number. */
enum acs_dataflow { ACS_OS = 0, ACS_WS = 1, ACS_IS = 2 };

typedef struct {
    int64_t macs;        /* products that are not padding: m*n*k */
    int64_t zero_macs;   /* of which with a zero operand (a gated multiplier) */
    int64_t toggles_a;   /* bit flips on the PEs' A-operand registers, in dataflow order */
    int64_t toggles_b;   /* likewise for B */
    int64_t mult_toggles_a;   /* bit flips on the multipliers' A inputs over the active multiplies:
                                 a gated multiply holds its inputs (operand isolation) */
    int64_t mult_toggles_b;   /* likewise for B */
    int64_t pe_saturated;    /* ws/is with a buffer unlike the PE register: outputs one of whose tile
                                sums reached the buffer at the PE's clamp (a saturating register's
                                bounds, or +-max of a float one rounding toward zero or directed) */
    /* set by acs_epilogue_counted (acs_gemm leaves them as they are): */
    int64_t acc_nonfinite;   /* output registers holding inf or NaN */
    int64_t acc_saturated;   /* output registers at a saturating register's clamp */
    int64_t out_nonfinite;   /* epilogue outputs that are inf or NaN */
} acs_gemm_counts;

int acs_gemm(const acs_mac *mac, const acs_acc *buffer, int dataflow, int64_t rows, int64_t cols,
             const void *a, const void *bt, int64_t m, int64_t n, int64_t k,
             double *out, int64_t *out_int, uint64_t seed, int threads, acs_gemm_counts *counts);

/* dst (cols x rows) = src (rows x cols) transposed, elements of `bytes` (1, 2, 4, 8) bytes;
 * the work is shared among `threads`. */
int acs_transpose(const void *src, void *dst, int64_t rows, int64_t cols, int bytes, int threads);

/* The epilogue y = fp32(fp32(acc * fp32(sa * sb)) + bias), each step one nearest-even
 * rounding of the exact value, stored as float64 (exactly).  acc (float64) or acc_int is m x n;
 * sa has m entries (or 1 when sa_stride is 0), sb and bias n (or 1); bias may be NULL.  Rows
 * are shared among `threads` workers. */
int acs_epilogue(const double *acc, const int64_t *acc_int, int64_t m, int64_t n,
                 const float *sa, int64_t sa_stride, const float *sb, int64_t sb_stride,
                 const float *bias, double *out, int threads);
/* acs_epilogue that also counts, row by row as it writes them, the outputs that overflowed:
 * counts->acc_nonfinite (acc entries that are inf or NaN),
 * counts->acc_saturated (entries equal to clamp[0] or clamp[1] (float64 acc) or to
 * clamp_int[0] or clamp_int[1] (acc_int); NULL: nothing counted) and counts->out_nonfinite
 * (outputs that are inf or NaN).  The three are set, not added to. */
int acs_epilogue_counted(const double *acc, const int64_t *acc_int, int64_t m, int64_t n,
                         const float *sa, int64_t sa_stride, const float *sb, int64_t sb_stride,
                         const float *bias, double *out, int threads, const double *clamp,
                         const int64_t *clamp_int, acs_gemm_counts *counts);

/* Block-scaled GEMMs (blockscale.c): a running output register per output, of the MAC's
 * scale accumulator (FLOAT or FIXED), kept in caller memory of acs_join_state_size() bytes
 * per output.  acs_join_start sets count registers to +0.  acs_join_block joins one K-block:
 * out[i,j] <- out[i,j] + partial[i,j] * sa[i*sa_stride] * sb[j*sb_stride], the product exact
 * (scales are powers of two or small integers; ACS_ERR_ARG if it would exceed 127 bits) and
 * the sum rounded once with the register's rules; partial (float64) or partial_int is m x n.
 * Stochastic rounding draws acs_rand32(seed, i*n + j, step).  acs_join_read gives float64. */
int64_t acs_join_state_size(void);
int acs_join_start(const acs_acc *scale_acc, void *state, int64_t count);
int acs_join_block(const acs_acc *scale_acc, void *state, const double *partial, const int64_t *partial_int,
                   int64_t m, int64_t n, const double *sa, int64_t sa_stride, const double *sb,
                   int64_t sb_stride, uint64_t seed, uint64_t step);
int acs_join_read(const acs_acc *scale_acc, const void *state, int64_t count, double *out);

/* A whole block-scaled GEMM: the joins above over K-blocks of `block` codes (k a multiple),
 * each block's partial that of acs_gemm on the block alone with seed seed + (blk+1) *
 * 0x9E3779B97F4A7C15 (mod 2^64), the joins drawing acs_rand32(seed, i*n + j, blk).  sa is
 * m x k/block, sb k/block x n (float64 scale values); out (m x n) gets the registers' values.
 * counts are the sums over blocks of acs_gemm's.  On failure *in_join says whether a join
 * (rather than the array's accumulation) failed.  Output rows are shared among `threads`. */
int acs_gemm_blocks(const acs_mac *mac, const acs_acc *buffer, const acs_acc *scale_acc, int dataflow,
                    int64_t rows, int64_t cols, const void *a, const void *bt, int64_t m, int64_t n, int64_t k,
                    int64_t block, const double *sa, const double *sb, double *out, uint64_t seed, int threads,
                    acs_gemm_counts *counts, int *in_join);

/* Exact fast paths (on by default): FloatAcc fp32 rne whose operand products are exact in
 * fp32 runs on native float adds, IntAcc wrap on native integer sums.  0 turns them off so
 * tests can compare them with the general path; returns the previous setting. */
int acs_set_fast_paths(int enabled);

/* The vector kernels use AVX2 (and FMA) where the CPU has them; 0 keeps them on their portable
 * C versions so tests can compare the two, 2 on AVX2 where a kernel also has an AVX-512 build;
 * returns the previous setting. */
int acs_set_vector_isa(int enabled);

/* The float-accumulator kernel (kernel_float.c) the array's GEMM takes for this MAC on this CPU
 * under the current vector ISA setting: 0 none (array.c's kernels or the general step), 1
 * binary32, 2 IEEE half (the hardware's conversion), 3 grids with binary32's exponent range,
 * 4 narrower grids, 5 stochastic rounding (binary64 lanes).  For tests and benchmarks. */
int acs_float_kernel(const acs_mac *mac);

/* The register-accumulator kernel (kernel_fixed.c, kernel_wide.c) the array's GEMM takes for a
 * FixedAcc or quire MAC with this buffer (its PE's for os), dataflow, array rows and K: 0 none
 * (the general step), 1 sums, 2 clamped sums, 3 kernel_wide.c's bands (operands beyond 31 bits).
 * For tests and benchmarks. */
int acs_fixed_kernel(const acs_mac *mac, const acs_acc *buffer, int dataflow, int64_t rows, int64_t k);

/* Error sums of a block (accel_sim/_metrics.py, csrc/metrics.c): out (rows x cols, row stride
 * out_ld elements, float32 or float64) against r_ij = (R_ij * (row_scale[i * row_step] *
 * col_scale[j])) + bias[j], R (row stride ref_ld) float64, int32, int64 or float32.  sums gets
 * sum out^2, sum r^2, sum out * r, sum (out - r)^2 and max |out - r| (NaN if any error is). */
enum acs_es_type { ACS_ES_F64 = 0, ACS_ES_I32 = 1, ACS_ES_I64 = 2, ACS_ES_F32 = 3 };
int acs_error_sums(const void *out, int out_type, int64_t out_ld, const void *ref, int ref_type, int64_t ref_ld,
                   int64_t rows, int64_t cols, const double *row_scale, int64_t row_step, const double *col_scale,
                   const double *bias, double sums[5]);

/* The least work (output elements, or vector-kernel MACs) the engine gives a thread of its own
 * (default 2^18; 0: every call splits among all its threads, as tests want); returns the
 * previous setting.  The bits never depend on it. */
int64_t acs_set_thread_grain(int64_t grain);

/* The counter-based generator behind stochastic rounding (see docs/numerics.md). */
uint32_t acs_rand32(uint64_t seed, uint64_t index, uint64_t step);
/* cdef-end */

#endif
