/* array.c: a GEMM on a systolic array, in the order its dataflow dictates, with the counts
 * the energy model needs.  The arithmetic is accumulate.c's chains; this file only orders
 * them and watches the operand registers. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static inline int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

/* Code at (row, col) of a row-major matrix with `width` columns, or 0 (every format's +0
 * code) in the padding beyond `valid` columns. */
static inline uint64_t code_at(const void *codes, int bits, int64_t row, int64_t col, int64_t width, int64_t valid)
{
    return col < valid ? acs_load_code(codes, row * width + col, bits) : 0;
}

/* Bit flips on the operand registers.  A streaming operand passes through every active PE
 * of its row (OS: A along rows, B down columns; WS: A along rows; IS: B along rows), so its
 * flips count once per PE that sees it; a stationary operand (WS: B, IS: A) flips when a fold
 * loads a different code into its PE.  Registers keep their code between folds and start at 0;
 * each of the `terms` lanes of an n-term PE is a register of its own. */
static int count_toggles(const acs_mac *mac, int dataflow, int64_t R, int64_t C, const void *a,
                         const void *bt, int64_t m, int64_t n, int64_t k, acs_gemm_counts *counts)
{
    int nt = mac->acc.kind == ACS_ACC_BLOCK ? mac->acc.terms : 1;
    int ab = mac->a.bits, bb = mac->b.bits;
    int64_t kp = ceil_div(k, nt);
    int64_t sr = dataflow == ACS_OS ? m : kp, sc = dataflow == ACS_IS ? m : n;
    uint16_t *row_reg = calloc((size_t)(R * nt), sizeof *row_reg);  /* streaming along rows */
    uint16_t *col_reg = calloc((size_t)(C * nt), sizeof *col_reg);  /* OS: B down columns */
    uint16_t *pe_reg = dataflow == ACS_OS ? NULL : calloc((size_t)(R * C * nt), sizeof *pe_reg);
    if (!row_reg || !col_reg || (dataflow != ACS_OS && !pe_reg)) {
        free(row_reg); free(col_reg); free(pe_reg);
        return ACS_ERR_ARG;
    }
    int64_t ta = 0, tb = 0;
    for (int64_t fr = 0; fr < ceil_div(sr, R); fr++) {
        int64_t r_act = sr - fr * R < R ? sr - fr * R : R;
        for (int64_t fc = 0; fc < ceil_div(sc, C); fc++) {
            int64_t c_act = sc - fc * C < C ? sc - fc * C : C;
            for (int64_t i = 0; i < r_act; i++)
                for (int t = 0; t < nt; t++) {
                    uint16_t *reg = &row_reg[i * nt + t];
                    int64_t flips = 0;
                    if (dataflow == ACS_OS) {        /* A[fr*R+i, :] streams along row i */
                        for (int64_t kk = 0; kk < kp; kk++) {
                            uint16_t v = (uint16_t)code_at(a, ab, fr * R + i, kk * nt + t, k, k);
                            flips += __builtin_popcount(*reg ^ v); *reg = v;
                        }
                        ta += flips * c_act;
                    } else {
                        int64_t kidx = (fr * R + i) * nt + t;
                        const void *src = dataflow == ACS_WS ? a : bt;
                        int bits = dataflow == ACS_WS ? ab : bb;
                        int64_t len = dataflow == ACS_WS ? m : n;  /* WS: A[:, kidx]; IS: B[kidx, :] */
                        for (int64_t x = 0; x < len; x++) {
                            uint16_t v = (uint16_t)code_at(src, bits, x, kidx, k, k);
                            flips += __builtin_popcount(*reg ^ v); *reg = v;
                        }
                        if (dataflow == ACS_WS) ta += flips * c_act; else tb += flips * c_act;
                        for (int64_t j = 0; j < c_act; j++) {  /* the stationary operand */
                            uint16_t *p = &pe_reg[(i * C + j) * nt + t];
                            uint16_t v = dataflow == ACS_WS
                                ? (uint16_t)code_at(bt, bb, fc * C + j, kidx, k, k)
                                : (uint16_t)code_at(a, ab, fc * C + j, kidx, k, k);
                            if (dataflow == ACS_WS) tb += __builtin_popcount(*p ^ v); else ta += __builtin_popcount(*p ^ v);
                            *p = v;
                        }
                    }
                }
            if (dataflow == ACS_OS)                     /* B[:, fc*C+j] streams down column j */
                for (int64_t j = 0; j < c_act; j++)
                    for (int t = 0; t < nt; t++) {
                        uint16_t *reg = &col_reg[j * nt + t];
                        int64_t flips = 0;
                        for (int64_t kk = 0; kk < kp; kk++) {
                            uint16_t v = (uint16_t)code_at(bt, bb, fc * C + j, kk * nt + t, k, k);
                            flips += __builtin_popcount(*reg ^ v); *reg = v;
                        }
                        tb += flips * r_act;
                    }
        }
    }
    counts->toggles_a = ta;
    counts->toggles_b = tb;
    free(row_reg); free(col_reg); free(pe_reg);
    return ACS_OK;
}

int acs_gemm(const acs_mac *mac, const acs_acc *buffer, int dataflow, int64_t rows, int64_t cols,
             const void *a, const void *bt, int64_t m, int64_t n, int64_t k,
             double *out, int64_t *out_int, uint64_t seed, acs_gemm_counts *counts)
{
    if (rows < 1 || cols < 1 || m < 0 || n < 0 || k < 0 || dataflow < ACS_OS || dataflow > ACS_IS)
        return ACS_ERR_ARG;
    if (mac->a.bits > 16 || mac->b.bits > 16) return ACS_ERR_ARG;
    int status = dataflow == ACS_OS ? ACS_OK : acs_check_acc(buffer);
    if (status) return status;
    if (dataflow != ACS_OS && buffer->kind == ACS_ACC_INT && mac->acc.kind != ACS_ACC_INT) return ACS_ERR_ARG;
    acs_mac_ctx ctx;
    status = acs_mac_open(&ctx, mac);
    int nt = mac->acc.kind == ACS_ACC_BLOCK ? mac->acc.terms : 1;
    int64_t tile = dataflow == ACS_OS ? (k > 0 ? k : 1) : rows * nt;
    int64_t kp = ceil_div(k, nt), zeros = 0;
    const acs_acc *out_acc = dataflow == ACS_OS ? &mac->acc : buffer;
    for (int64_t i = 0; i < m && status == ACS_OK; i++)
        for (int64_t j = 0; j < n && status == ACS_OK; j++) {
            uint64_t element = (uint64_t)(i * n + j);
            acs_acc_state total = acs_acc_start(out_acc, 0.0);
            for (int64_t t0 = 0, t = 0; t0 < k && status == ACS_OK; t0 += tile, t++) {
                int64_t len = k - t0 < tile ? k - t0 : tile;
                if (dataflow == ACS_OS) {
                    status = acs_chain(&ctx, a, i * k, bt, j * k, len, &total, seed, element, 0, &zeros);
                } else {
                    acs_acc_state part = acs_acc_start(&mac->acc, 0.0);
                    status = acs_chain(&ctx, a, i * k + t0, bt, j * k + t0, len, &part, seed, element,
                                       (uint64_t)(t0 / nt), &zeros);
                    uint32_t rand = buffer->rounding == ACS_SR ? acs_rand32(seed, element, (uint64_t)(kp + t)) : 0;
                    if (status == ACS_OK) status = acs_acc_add(buffer, &total, &mac->acc, &part, rand);
                }
            }
            int64_t o = i * n + j;
            acs_acc_read(out_acc, &total, out ? out + o : NULL, out_int ? out_int + o : NULL);
        }
    acs_mac_close(&ctx);
    if (status) return status;
    counts->macs = m * n * k;
    counts->zero_macs = zeros;
    return count_toggles(mac, dataflow, rows, cols, a, bt, m, n, k, counts);
}

/* ---- Epilogue: scale (and bias) in fp32, as the array's output stage does --------------- */
static const acs_grid fp32_grid = { ACS_GRID_FLOAT, 23, -126, 127, (1ULL << 24) - 1, 1, 0, 0, 0 };

static acs_real real_of(uint64_t bits, int in_bits, int *cls)
{
    return acs_real_from_bits(bits, in_bits, cls);
}

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
    acs_real yr = real_of(yb, 32, &ycls);
    acs_rounded r = { ACS_FINITE, x.neg ^ yr.neg, 0, 0, 0 };
    if (xcls == ACS_NAN || ycls == ACS_NAN || (xcls == ACS_INF && ycls == ACS_ZERO)
        || (ycls == ACS_INF && xcls == ACS_ZERO)) { r.cls = ACS_NAN; return r; }
    if (xcls == ACS_INF || ycls == ACS_INF) { r.cls = ACS_INF; return r; }
    if (xcls == ACS_ZERO || ycls == ACS_ZERO) { r.cls = ACS_ZERO; return r; }
    acs_real p = { r.neg, 0, x.exp + yr.exp, x.sig * yr.sig };
    return acs_round(&fp32_grid, p, ACS_RNE, ACS_OVF_INF, 0);
}

int acs_epilogue(const double *acc, const int64_t *acc_int, int64_t m, int64_t n,
                 const float *sa, int64_t sa_stride, const float *sb, int64_t sb_stride,
                 const float *bias, float *out)
{
    if (m < 0 || n < 0 || (!acc && !acc_int)) return ACS_ERR_ARG;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            int cls;
            uint32_t sab;
            memcpy(&sab, &sa[i * sa_stride], sizeof sab);
            acs_real sa_r = real_of(sab, 32, &cls);
            float s = fp32_of(mul_round(sa_r, cls, sb[j * sb_stride]));
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
                x = real_of(ab, 64, &cls);
            }
            acs_rounded y = mul_round(x, cls, s);
            if (bias && y.cls != ACS_NAN) {
                uint32_t bb;
                memcpy(&bb, &bias[j], sizeof bb);
                int bcls;
                acs_real b = real_of(bb, 32, &bcls);
                if (bcls == ACS_NAN || (y.cls == ACS_INF && bcls == ACS_INF && y.neg != b.neg)) {
                    y.cls = ACS_NAN;
                } else if (bcls == ACS_INF) {
                    y.cls = ACS_INF; y.neg = b.neg;
                } else if (y.cls == ACS_ZERO && bcls == ACS_ZERO) {
                    y.neg = y.neg && b.neg;          /* IEEE: -0 + -0 = -0, else +0 */
                } else if (y.cls == ACS_ZERO) {
                    y = acs_round(&fp32_grid, b, ACS_RNE, ACS_OVF_INF, 0);
                } else if (y.cls == ACS_FINITE && bcls == ACS_FINITE) {
                    acs_real s2 = acs_add_exact(y.neg, y.kept, y.q, b.neg, b.sig, b.exp);
                    if (s2.sig == 0 && !s2.sticky) { y.cls = ACS_ZERO; y.neg = 0; }
                    else y = acs_round(&fp32_grid, s2, ACS_RNE, ACS_OVF_INF, 0);
                }
            }
            out[i * n + j] = fp32_of(y);
        }
    return ACS_OK;
}
