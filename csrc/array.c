/* array.c: a GEMM on a systolic array, in the order its dataflow dictates, with the counts
 * the energy model needs.  The arithmetic is accumulate.c's chains; this file only orders
 * them and watches the operand registers. */
#include <math.h>
#include <pthread.h>
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
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("popcnt", "default")))
#endif
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

/* ---- The GEMM: workers over blocks of output rows ------------------------------------------
 * Every output's chain (and its tile order) is fixed by the dataflow and independent of the
 * others, so splitting rows among threads, or computing 16 outputs in the lanes of a vector,
 * never changes a bit. */
typedef struct {
    const acs_mac_ctx *ctx;
    const acs_acc *buffer, *out_acc;
    int dataflow, nt, fast;
    int64_t tile, kp, m, n, k, i0, i1;
    const void *a, *bt;
    double *out;
    int64_t *out_int;
    uint64_t seed;
    int64_t zeros;
    int status;
    const float *a_f32, *b_f32;      /* the vector kernels' decoded operands */
    const int32_t *a_i32, *b_i32;
} gemm_job;

static void gemm_rows_general(gemm_job *jb)
{
    const acs_mac_ctx *ctx = jb->ctx;
    const acs_mac *mac = ctx->mac;
    int64_t n = jb->n, k = jb->k;
    for (int64_t i = jb->i0; i < jb->i1 && jb->status == ACS_OK; i++)
        for (int64_t j = 0; j < n && jb->status == ACS_OK; j++) {
            uint64_t element = (uint64_t)(i * n + j);
            acs_acc_state total = acs_acc_start(jb->out_acc, 0.0);
            for (int64_t t0 = 0, t = 0; t0 < k && jb->status == ACS_OK; t0 += jb->tile, t++) {
                int64_t len = k - t0 < jb->tile ? k - t0 : jb->tile;
                if (jb->dataflow == ACS_OS) {
                    jb->status = acs_chain(ctx, jb->a, i * k, jb->bt, j * k, len, &total, jb->seed, element, 0, &jb->zeros);
                } else {
                    acs_acc_state part = acs_acc_start(&mac->acc, 0.0);
                    jb->status = acs_chain(ctx, jb->a, i * k + t0, jb->bt, j * k + t0, len, &part, jb->seed, element,
                                           (uint64_t)(t0 / jb->nt), &jb->zeros);
                    uint32_t rand = jb->buffer->rounding == ACS_SR
                        ? acs_rand32(jb->seed, element, (uint64_t)(jb->kp + t)) : 0;
                    if (jb->status == ACS_OK) jb->status = acs_acc_add(jb->buffer, &total, &mac->acc, &part, rand);
                }
            }
            int64_t o = i * n + j;
            acs_acc_read(jb->out_acc, &total, jb->out ? jb->out + o : NULL, jb->out_int ? jb->out_int + o : NULL);
        }
}

/* ---- Vectorised exact fast paths ------------------------------------------------------------
 * A block of MR rows x NR columns lives in vector registers; B's column panel is decoded once
 * per panel into a small buffer (operands otherwise stay codes).  Each output still adds its
 * products in k order, tile by tile, and its tile sums into the buffer in order: the same
 * sequence of IEEE fp32 roundings (or integer adds modulo 2^32) as the general path.  A fused
 * multiply-add would give the same bits because every product is exact.  target_clones builds
 * an AVX2 version and a portable one and picks by the CPU's features at load time. */
#define MR 4
#define NR 16
typedef float vf8 __attribute__((vector_size(32)));
typedef uint32_t vu8 __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ACS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ACS_CLONES
#endif

ACS_CLONES
void acs_fp32_block(const float *arows[MR], const float *panel, int64_t k, int64_t tile, float out[MR][NR])
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
            for (int r = 0; r < MR; r++) {
                vf8 av = (vf8){0} + arows[r][kk];
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

ACS_CLONES
void acs_int_block(const int32_t *arows[MR], const int32_t *panel, int64_t k, uint32_t out[MR][NR])
{
    vu8 acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = (vu8){0};
    for (int64_t kk = 0; kk < k; kk++) {
        vu8 b0, b1;
        memcpy(&b0, panel + kk * NR, sizeof b0);
        memcpy(&b1, panel + kk * NR + 8, sizeof b1);
        for (int r = 0; r < MR; r++) {
            vu8 av = (vu8){0} + (uint32_t)arows[r][kk];
            acc[r][0] += av * b0;
            acc[r][1] += av * b1;
        }
    }
    for (int r = 0; r < MR; r++) {
        memcpy(out[r], &acc[r][0], sizeof acc[r][0]);
        memcpy(out[r] + 8, &acc[r][1], sizeof acc[r][1]);
    }
}

/* Rows [i0, i1) through the vector kernels, from A decoded row-major (m x k) and B decoded
 * into column panels of NR (panel p holds k x NR values), both prepared once per GEMM.
 * Integer wrap sums are taken modulo 2^32 and wrapped to the register once. */
static void gemm_rows_fast(gemm_job *jb)
{
    const acs_mac *mac = jb->ctx->mac;
    int64_t n = jb->n, k = jb->k;
    int fp = jb->fast == ACS_FAST_FP32;
    for (int64_t j0 = 0, p = 0; j0 < n; j0 += NR, p++) {
        int64_t nr = n - j0 < NR ? n - j0 : NR;
        for (int64_t i0 = jb->i0; i0 < jb->i1; i0 += MR) {
            int64_t mr = jb->i1 - i0 < MR ? jb->i1 - i0 : MR;
            const void *arows[MR];
            for (int r = 0; r < MR; r++)   /* rows past the end read row i0 again; never stored */
                arows[r] = fp ? (const void *)(jb->a_f32 + (i0 + (r < mr ? r : 0)) * k)
                              : (const void *)(jb->a_i32 + (i0 + (r < mr ? r : 0)) * k);
            if (fp) {
                float res[MR][NR];
                acs_fp32_block((const float **)arows, jb->b_f32 + p * k * NR, k, jb->tile, res);
                for (int64_t r = 0; r < mr; r++)
                    for (int64_t c = 0; c < nr; c++) {
                        float v = res[r][c];
                        jb->out[(i0 + r) * n + j0 + c] = v != v ? NAN : (double)v; /* canonical NaN */
                    }
            } else {
                uint32_t res[MR][NR];
                acs_int_block((const int32_t **)arows, jb->b_i32 + p * k * NR, k, res);
                int sh = 64 - mac->acc.grid.total_bits;   /* wrap to the register's width */
                for (int64_t r = 0; r < mr; r++)
                    for (int64_t c = 0; c < nr; c++)
                        jb->out_int[(i0 + r) * n + j0 + c] = (int64_t)((uint64_t)(int64_t)(int32_t)res[r][c] << sh) >> sh;
            }
        }
    }
}

/* Operand values for the vector kernels: A row-major, B in column panels (zero-padded). */
static int decode_for_vectors(gemm_job *jb, const acs_mac_ctx *ctx)
{
    int64_t m = jb->m, n = jb->n, k = jb->k, panels = ceil_div(n, NR);
    int fp = jb->fast == ACS_FAST_FP32;
    size_t esz = fp ? sizeof(float) : sizeof(int32_t);
    void *a = malloc((size_t)(m * k > 0 ? m * k : 1) * esz);
    void *b = calloc((size_t)(panels * k * NR > 0 ? panels * k * NR : 1), esz);
    if (!a || !b) { free(a); free(b); return ACS_ERR_ARG; }
    for (int64_t i = 0; i < m * k; i++) {
        uint64_t code = acs_load_code(jb->a, i, ctx->mac->a.bits);
        if (fp) ((float *)a)[i] = ctx->fa[code]; else ((int32_t *)a)[i] = (int32_t)ctx->ia[code];
    }
    for (int64_t j = 0; j < n; j++)
        for (int64_t kk = 0; kk < k; kk++) {
            uint64_t code = acs_load_code(jb->bt, j * k + kk, ctx->mac->b.bits);
            int64_t at = (j / NR) * k * NR + kk * NR + j % NR;
            if (fp) ((float *)b)[at] = ctx->fb[code]; else ((int32_t *)b)[at] = (int32_t)ctx->ib[code];
        }
    if (fp) { jb->a_f32 = a; jb->b_f32 = b; } else { jb->a_i32 = a; jb->b_i32 = b; }
    return ACS_OK;
}

/* The vector kernels apply: an exact fast path, and for ws/is a buffer that rounds (or wraps)
 * exactly like the PE accumulator, so tile sums join it by the same native operation. */
static int vector_path(const acs_mac_ctx *ctx, const acs_acc *buffer, int dataflow)
{
    const acs_acc *pe = &ctx->mac->acc;
    if (ctx->fast == ACS_FAST_FP32)
        return dataflow == ACS_OS || (buffer->kind == ACS_ACC_FLOAT && buffer->rounding == ACS_RNE
            && buffer->overflow == ACS_OVF_INF && !memcmp(&buffer->grid, &pe->grid, sizeof pe->grid)
            && !memcmp(&buffer->addend, &pe->addend, sizeof pe->addend));
    if (ctx->fast == ACS_FAST_INT_WRAP && pe->grid.total_bits <= 32)
        return dataflow == ACS_OS || (buffer->kind == ACS_ACC_INT && buffer->overflow == ACS_OVF_WRAP
            && buffer->grid.total_bits == pe->grid.total_bits);
    return 0;
}

/* MACs with a zero operand: sum over k of zA_k*N + zB_k*M - zA_k*zB_k. */
static int64_t count_zero_macs(const acs_mac_ctx *ctx, const void *a, const void *bt, int64_t m, int64_t n, int64_t k)
{
    int64_t *za = calloc((size_t)(k > 0 ? k : 1), sizeof *za), *zb = calloc((size_t)(k > 0 ? k : 1), sizeof *zb);
    int64_t total = 0;
    if (!za || !zb) { free(za); free(zb); return -1; }
    for (int64_t i = 0; i < m; i++)
        for (int64_t kk = 0; kk < k; kk++)
            za[kk] += ctx->ta[acs_load_code(a, i * k + kk, ctx->mac->a.bits)].cls == ACS_ZERO;
    for (int64_t j = 0; j < n; j++)
        for (int64_t kk = 0; kk < k; kk++)
            zb[kk] += ctx->tb[acs_load_code(bt, j * k + kk, ctx->mac->b.bits)].cls == ACS_ZERO;
    for (int64_t kk = 0; kk < k; kk++) total += za[kk] * n + zb[kk] * m - za[kk] * zb[kk];
    free(za);
    free(zb);
    return total;
}

static void *gemm_worker(void *p)
{
    gemm_job *jb = p;
    if (jb->fast) gemm_rows_fast(jb); else gemm_rows_general(jb);
    return NULL;
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
    gemm_job base = { &ctx, buffer, dataflow == ACS_OS ? &mac->acc : buffer, dataflow, nt,
                      vector_path(&ctx, buffer, dataflow) ? ctx.fast : ACS_FAST_NONE,
                      dataflow == ACS_OS ? (k > 0 ? k : 1) : rows * nt, ceil_div(k, nt), m, n, k, 0, m,
                      a, bt, out, out_int, seed, 0, ACS_OK, NULL, NULL, NULL, NULL };
    if (base.fast && decode_for_vectors(&base, &ctx) != ACS_OK) base.fast = ACS_FAST_NONE;
    /* Rows in blocks of MR, spread over at most `threads` workers. */
    int64_t blocks = ceil_div(m, MR);
    int workers = (int)(threads < blocks ? threads : (blocks > 0 ? blocks : 1));
    gemm_job jobs[256];
    pthread_t tids[256];
    int started[256] = { 0 };
    jobs[0] = base;
    for (int w = 0; w < workers; w++) {
        jobs[w] = base;
        jobs[w].i0 = blocks * w / workers * MR;
        jobs[w].i1 = blocks * (w + 1) / workers * MR;
        if (jobs[w].i1 > m) jobs[w].i1 = m;
        if (jobs[w].i0 > m) jobs[w].i0 = m;
    }
    for (int w = 1; w < workers; w++)
        started[w] = pthread_create(&tids[w], NULL, gemm_worker, &jobs[w]) == 0;
    gemm_worker(&jobs[0]);
    for (int w = 1; w < workers; w++) {
        if (started[w]) pthread_join(tids[w], NULL);
        else gemm_worker(&jobs[w]);   /* no thread to be had: run it here */
    }
    int64_t zeros = 0;
    for (int w = 0; w < workers; w++) {
        if (jobs[w].status && !status) status = jobs[w].status;
        zeros += jobs[w].zeros;
    }
    if (status == ACS_OK && base.fast) {
        zeros = count_zero_macs(&ctx, a, bt, m, n, k);
        if (zeros < 0) status = ACS_ERR_ARG;
    }
    free((void *)base.a_f32); free((void *)base.b_f32);
    free((void *)base.a_i32); free((void *)base.b_i32);
    acs_mac_close(&ctx);
    if (status) return status;
    counts->macs = m * n * k;
    counts->zero_macs = zeros;
    return count_toggles(mac, dataflow, rows, cols, a, bt, m, n, k, counts);
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

int acs_epilogue(const double *acc, const int64_t *acc_int, int64_t m, int64_t n,
                 const float *sa, int64_t sa_stride, const float *sb, int64_t sb_stride,
                 const float *bias, float *out)
{
    if (m < 0 || n < 0 || (m && n && ((!acc && !acc_int) || !sa || !sb || !out))) return ACS_ERR_ARG;
    if (m && n > INT64_MAX / m) return ACS_ERR_ARG;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            int cls;
            /* two binary32 values multiply exactly in binary64; the cast rounds once */
            float s = (float)((double)sa[i * sa_stride] * (double)sb[j * sb_stride]);
            /* Exact fast case: an accumulator value of at most 24 significant bits times the fp32
             * scale is exact in double, so one cast rounds it once to nearest-even, and the
             * fp32 add of the bias is the IEEE add the general branch computes. */
            double xd = acc_int ? (double)acc_int[i * n + j] : acc[i * n + j];
            if ((!acc_int || (acc_int[i * n + j] < (1LL << 53) && acc_int[i * n + j] > -(1LL << 53)))
                && (double)(float)xd == xd) {
                float y = (float)(xd * (double)s);
                out[i * n + j] = bias ? y + bias[j] : y;
                continue;
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
    return ACS_OK;
}
