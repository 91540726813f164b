/* metrics.c: the error sums behind Result.metrics (accel_sim/_metrics.py) in one pass.
 *
 * Per element, the reference is formed as _metrics.py defines it, r = (R * (sa_i * sb_j)) + bias_j
 * (R the product block, float64 or float32, or the exact integer sums an accumulator already
 * holds; a scale of 1 and a bias of -0.0 are exact identities), and out^2, r^2, out * r and
 * (out - r)^2 are summed and max |out - r| kept, reading out and R once.  Element j of a row
 * goes to lane j mod 16 of each sum, the lanes added in a fixed order at the end: the portable,
 * AVX2 and AVX-512 (DQ, VL: int64 conversions in vector) builds give the same bits (no fused
 * multiply-adds: fp-contract is off).  A NaN error makes the maximum NaN. */
#include <math.h>
#include <string.h>
#include "internal.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ES_X86 1
#endif
typedef double vd4m __attribute__((vector_size(32)));
typedef float vf4m __attribute__((vector_size(16)));
typedef int32_t vi4m __attribute__((vector_size(16)));
typedef int64_t vl4m __attribute__((vector_size(32)));

#define ES_LANES 16
#define ES_VECS (ES_LANES / 4)

/* (vectors go by pointer: by value their ABI differs between the ISA builds) */
static inline __attribute__((always_inline))
void es_load(vd4m *v, const void *p, int type, int64_t j)
{
    if (type == ACS_ES_F64) {
        memcpy(v, (const double *)p + j, sizeof *v);
    } else if (type == ACS_ES_F32) {
        vf4m f;
        memcpy(&f, (const float *)p + j, sizeof f);
        *v = __builtin_convertvector(f, vd4m);
    } else if (type == ACS_ES_I32) {
        vi4m x;
        memcpy(&x, (const int32_t *)p + j, sizeof x);
        *v = __builtin_convertvector(x, vd4m);
    } else {
        vl4m x;
        memcpy(&x, (const int64_t *)p + j, sizeof x);
        *v = __builtin_convertvector(x, vd4m);
    }
}

static inline __attribute__((always_inline))
double es_load1(const void *p, int type, int64_t j)
{
    switch (type) {
    case ACS_ES_F64: return ((const double *)p)[j];
    case ACS_ES_F32: return ((const float *)p)[j];
    case ACS_ES_I32: return ((const int32_t *)p)[j];
    default: return (double)((const int64_t *)p)[j];
    }
}

/* m takes |e| where larger: nonnegative doubles order as their bits do, as signed integers,
 * and a NaN's bits (sign cleared) exceed infinity's, so a NaN error stays the maximum. */
static inline __attribute__((always_inline))
void es_max(vd4m *m, const vd4m *e)
{
    vl4m ae = (vl4m)*e & (vl4m){ INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX }, mb = (vl4m)*m;
    vl4m take = ae > mb;
    *m = (vd4m)((take & ae) | (~take & mb));
}

/* Adds elements j..j+15 of a row (out at o, R at r) into their lanes. */
static inline __attribute__((always_inline))
void es_step(vd4m acc[5][ES_VECS], const void *o, int out_type, const void *r, int ref_type, int64_t j,
             const vd4m *sav, const double *col_scale, const double *bias)
{
    _Pragma("GCC unroll 4")
    for (int h = 0; h < ES_VECS; h++) {
        vd4m sb, b, x, y;
        memcpy(&sb, col_scale + j + 4 * h, sizeof sb);
        memcpy(&b, bias + j + 4 * h, sizeof b);
        es_load(&x, o, out_type, j + 4 * h);
        es_load(&y, r, ref_type, j + 4 * h);
        y = y * (*sav * sb) + b;
        vd4m e = x - y;
        acc[0][h] += x * x;
        acc[1][h] += y * y;
        acc[2][h] += x * y;
        acc[3][h] += e * e;
        es_max(&acc[4][h], &e);
    }
}

static inline __attribute__((always_inline))
void es_rows(const void *out, int out_type, int64_t out_ld, const void *ref, int ref_type, int64_t ref_ld,
             int64_t rows, int64_t cols, const double *row_scale, int64_t row_step, const double *col_scale,
             const double *bias, vd4m sums[5][ES_VECS])
{
    vd4m acc[5][ES_VECS];    /* in registers: the stores through sums could alias the inputs */
    memcpy(acc, sums, sizeof acc);
    int64_t body = cols - cols % ES_LANES;
    for (int64_t i = 0; i < rows; i++) {
        const void *o = out_type == ACS_ES_F32 ? (const void *)((const float *)out + i * out_ld)
                                               : (const void *)((const double *)out + i * out_ld);
        const void *r = ref_type == ACS_ES_F64 ? (const void *)((const double *)ref + i * ref_ld)
                      : ref_type == ACS_ES_F32 ? (const void *)((const float *)ref + i * ref_ld)
                      : ref_type == ACS_ES_I32 ? (const void *)((const int32_t *)ref + i * ref_ld)
                                               : (const void *)((const int64_t *)ref + i * ref_ld);
        double sa = row_scale[i * row_step];
        vd4m sav = { sa, sa, sa, sa };
        for (int64_t j = 0; j < body; j += ES_LANES)
            es_step(acc, o, out_type, r, ref_type, j, &sav, col_scale, bias);
        if (body < cols) {    /* the tail, zero-padded: zeros add nothing (no sum is ever -0) */
            double x[ES_LANES] = { 0 }, y[ES_LANES] = { 0 }, sb[ES_LANES] = { 0 }, b[ES_LANES] = { 0 };
            for (int64_t t = 0; t < cols - body; t++) {
                x[t] = es_load1(o, out_type, body + t);
                y[t] = es_load1(r, ref_type, body + t);
                sb[t] = col_scale[body + t];
                b[t] = bias[body + t];
            }
            es_step(acc, x, ACS_ES_F64, y, ACS_ES_F64, 0, &sav, sb, b);
        }
    }
    memcpy(sums, acc, sizeof acc);
}

/* One instance per operand type pair, so each inner loop is straight-line code. */
#define ES_CASES(out_t, ref_t)                                                                        \
    es_rows(out, out_t, out_ld, ref, ref_t, ref_ld, rows, cols, row_scale, row_step, col_scale, bias, acc)
#define ES_KERNEL(name, attr)                                                                          \
    attr __attribute__((optimize("fp-contract=off")))                                                  \
    static void name(const void *out, int out_type, int64_t out_ld, const void *ref, int ref_type,       \
                     int64_t ref_ld, int64_t rows, int64_t cols, const double *row_scale, int64_t row_step, \
                     const double *col_scale, const double *bias, vd4m acc[5][ES_VECS])                \
    {                                                                                                  \
        switch (ref_type * 2 + (out_type == ACS_ES_F32)) {                                             \
        case ACS_ES_F64 * 2: ES_CASES(ACS_ES_F64, ACS_ES_F64); break;                                  \
        case ACS_ES_F64 * 2 + 1: ES_CASES(ACS_ES_F32, ACS_ES_F64); break;                              \
        case ACS_ES_F32 * 2: ES_CASES(ACS_ES_F64, ACS_ES_F32); break;                                  \
        case ACS_ES_F32 * 2 + 1: ES_CASES(ACS_ES_F32, ACS_ES_F32); break;                              \
        case ACS_ES_I32 * 2: ES_CASES(ACS_ES_F64, ACS_ES_I32); break;                                  \
        case ACS_ES_I32 * 2 + 1: ES_CASES(ACS_ES_F32, ACS_ES_I32); break;                              \
        case ACS_ES_I64 * 2: ES_CASES(ACS_ES_F64, ACS_ES_I64); break;                                  \
        default: ES_CASES(ACS_ES_F32, ACS_ES_I64);                                                     \
        }                                                                                              \
    }
ES_KERNEL(es_portable, )
#ifdef ES_X86
ES_KERNEL(es_avx2, __attribute__((target("avx2"))))
ES_KERNEL(es_avx512, __attribute__((target("avx2,avx512f,avx512dq,avx512vl"))))
#endif

__attribute__((optimize("fp-contract=off")))
int acs_error_sums(const void *out, int out_type, int64_t out_ld, const void *ref, int ref_type, int64_t ref_ld,
                   int64_t rows, int64_t cols, const double *row_scale, int64_t row_step, const double *col_scale,
                   const double *bias, double sums[5])
{
    if (!out || !ref || !row_scale || !col_scale || !bias || !sums || rows < 0 || cols < 0
        || (out_type != ACS_ES_F32 && out_type != ACS_ES_F64) || ref_type < ACS_ES_F64 || ref_type > ACS_ES_F32
        || (row_step != 0 && row_step != 1))
        return ACS_ERR_ARG;
    vd4m acc[5][ES_VECS];
    memset(acc, 0, sizeof acc);
    void (*kernel)(const void *, int, int64_t, const void *, int, int64_t, int64_t, int64_t, const double *,
                   int64_t, const double *, const double *, vd4m[5][ES_VECS]) = es_portable;
#ifdef ES_X86
    if (acs_vector_avx512()) kernel = es_avx512;
    else if (acs_vector_avx2()) kernel = es_avx2;
#endif
    kernel(out, out_type, out_ld, ref, ref_type, ref_ld, rows, cols, row_scale, row_step, col_scale, bias, acc);
    for (int s = 0; s < 4; s++) {    /* lanes in a fixed order */
        double t = 0.0;
        for (int l = 0; l < ES_LANES; l++) t += acc[s][l / 4][l % 4];
        sums[s] = t;
    }
    vd4m m = acc[4][0];
    for (int q = 1; q < ES_VECS; q++) es_max(&m, &acc[4][q]);
    sums[4] = m[0];
    for (int l = 1; l < 4; l++)
        sums[4] = m[l] > sums[4] || m[l] != m[l] ? m[l] : sums[4];
    for (int s = 0; s < 5; s++)    /* one NaN: which operand's sign and payload survive varies with the build */
        if (sums[s] != sums[s]) sums[s] = NAN;
    return ACS_OK;
}
