/* toggles.c: the bit flips the energy model charges, in the order the dataflow moves operands:
 * on the PEs' operand registers (every code loaded), and on the multipliers' inputs, which
 * operand isolation holds while a multiply with a zero operand is gated (docs/energy.md). */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static inline int64_t tg_ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

/* Operand codes are 8 or 16 bits wide here (acs_gemm refuses wider ones). */
static inline __attribute__((always_inline)) uint16_t tg_code(const void *codes, int64_t i, int wide)
{
    return wide ? ((const uint16_t *)codes)[i] : ((const uint8_t *)codes)[i];
}

/* Bit flips on the operand registers.  A streaming operand passes through every active PE
 * of its row (OS: A along rows, B down columns; WS: A along rows; IS: B along rows), so its
 * flips count once per PE that sees it; a stationary operand (WS: B, IS: A) flips when a fold
 * loads a different code into its PE.  Registers keep their code between folds and start at 0;
 * each of the `terms` lanes of an n-term PE is a register of its own.
 * Folds are visited row-fold major.  A register sees the same stream in every fold of a
 * row-fold (OS columns: of a column index), so the flips inside a stream are counted once and
 * only the step from the previous fold's last code to the stream's first is counted per fold.
 * Registers of different array rows (OS: columns) never interact, so workers split them. */
typedef struct {
    const acs_mac *mac;
    int dataflow;
    int64_t R, C, m, n, k;
    const void *a, *bt;
    int64_t lo, hi;          /* array rows [lo, hi), and for OS also array columns [lo, hi) */
    int64_t ta, tb;          /* operand-register flips */
    int64_t ma, mb;          /* multiplier-input flips, over the active multiplies */
    const uint8_t *nza, *nzb;   /* 1 where a code's value is nonzero */
    const uint16_t *bkn, *mkn;  /* OS: B's codes K x np, and 0xFFFF where nonzero (0 past n) */
    int64_t np;
    int status;
} toggle_job;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ACS_POPCNT_CLONES __attribute__((target_clones("popcnt", "default")))
#else
#define ACS_POPCNT_CLONES
#endif

/* Flips along a stream of len codes starting `first`, each `step` codes apart; its first and
 * last codes go to *head and *tail. */
ACS_POPCNT_CLONES
static int64_t stream_flips(const void *codes, int bits, int64_t first, int64_t step, int64_t len,
                            uint16_t *head, uint16_t *tail)
{
    int64_t flips = 0;
    uint16_t prev = (uint16_t)tg_code(codes, first, bits > 8);
    *head = prev;
    for (int64_t x = 1; x < len; x++) {
        uint16_t v = (uint16_t)tg_code(codes, first + x * step, bits > 8);
        flips += __builtin_popcount(prev ^ v);
        prev = v;
    }
    *tail = prev;
    return flips;
}

/* Bit flips between two runs of `bytes` bytes (a code's flips are its bytes' flips). */
static inline __attribute__((always_inline)) int64_t xor_flips(const uint8_t *p, const uint8_t *q, int64_t bytes)
{
    int64_t flips = 0, x = 0;
    for (; x + 8 <= bytes; x += 8) {
        uint64_t u, v;
        memcpy(&u, p + x, 8);
        memcpy(&v, q + x, 8);
        flips += __builtin_popcountll(u ^ v);
    }
    for (; x < bytes; x++) flips += __builtin_popcount((unsigned)(p[x] ^ q[x]));
    return flips;
}

/* WS and IS: array row i holds, in row-fold fr, the K index kidx = (fr*R + i)*nt + t of each
 * lane t.  The streaming operand (WS: A[:, kidx], IS: B[kidx, :]) passes along the row; the
 * stationary one (WS: B[col, kidx], IS: A[col, kidx]) is loaded into PE (i, j) per fold.  The
 * kidx of this worker's array rows are contiguous, so every stream and load is a run of codes
 * of a source row, compared with the previous run a machine word at a time; lanes past k hold
 * zeros.  A row-fold streams the same codes in each column-fold, so its flips inside the stream
 * count once per active column, plus the step from the register's previous code to the first;
 * each register keeps its state from fold to fold in (row-fold, column-fold) order. */
ACS_POPCNT_CLONES
static void count_toggles_stationary(toggle_job *tj, int nt, int64_t sr, int64_t sc, int64_t frs, int64_t fcs)
{
    int ws = tj->dataflow == ACS_WS;
    const uint8_t *src = ws ? tj->a : tj->bt, *st = ws ? tj->bt : tj->a;
    int64_t ss = (ws ? tj->mac->a.bits : tj->mac->b.bits) > 8 ? 2 : 1;   /* bytes per code */
    int64_t ts = (ws ? tj->mac->b.bits : tj->mac->a.bits) > 8 ? 2 : 1;
    int64_t R = tj->R, C = tj->C, k = tj->k, len = ws ? tj->m : tj->n;
    int64_t lo = tj->lo, hi = tj->hi < R ? tj->hi : R, lanes = (hi > lo ? hi - lo : 0) * nt;
    uint8_t *reg = calloc((size_t)(lanes > 0 ? lanes * ss : 1), 1);
    uint8_t *pe = calloc((size_t)(lanes > 0 ? lanes * ts * C : 1), 1);   /* [j][lane] */
    uint8_t *zero = calloc((size_t)(lanes > 0 ? lanes * 2 : 1), 1);
    int64_t *streamed = ws ? &tj->ta : &tj->tb, *stationary = ws ? &tj->tb : &tj->ta;
    if (!reg || !pe || !zero) tj->status = ACS_ERR_ARG;
    for (int64_t fr = 0; fr < frs && !tj->status; fr++) {
        int64_t rows = (sr - fr * R < hi ? sr - fr * R : hi) - lo;   /* this worker's active array rows */
        if (rows <= 0) break;
        int64_t k0 = (fr * R + lo) * nt, e_end = rows * nt;              /* lane e holds kidx k0 + e */
        int64_t e_in = k - k0 < e_end ? (k - k0 > 0 ? k - k0 : 0) : e_end;   /* lanes with kidx < k */
        int64_t in = e_in * ss, out = (e_end - e_in) * ss;
        const uint8_t *head = src + k0 * ss, *tail = src + ((len - 1) * k + k0) * ss;
        int64_t flips = 0;
        for (int64_t x = 1; x < len; x++) flips += xor_flips(src + (x * k + k0) * ss, src + ((x - 1) * k + k0) * ss, in);
        for (int64_t fc = 0; fc < fcs; fc++) {
            int64_t c_act = sc - fc * C < C ? sc - fc * C : C;
            *streamed += (flips + xor_flips(reg, head, in) + xor_flips(reg + in, zero, out)) * c_act;
            memcpy(reg, tail, (size_t)in);
            memset(reg + in, 0, (size_t)out);
            int64_t loads = 0;
            for (int64_t j = 0; j < c_act; j++) {
                uint8_t *r = pe + j * lanes * ts;
                const uint8_t *v = st + ((fc * C + j) * k + k0) * ts;
                loads += xor_flips(r, v, e_in * ts) + xor_flips(r + e_in * ts, zero, (e_end - e_in) * ts);
                memcpy(r, v, (size_t)(e_in * ts));
                memset(r + e_in * ts, 0, (size_t)((e_end - e_in) * ts));
            }
            *stationary += loads;
        }
    }
    free(reg); free(pe); free(zero);
}

ACS_POPCNT_CLONES
static void count_toggles_part(toggle_job *tj)
{
    const acs_mac *mac = tj->mac;
    int df = tj->dataflow, nt = mac->acc.kind == ACS_ACC_BLOCK ? mac->acc.terms : 1;
    int ab = mac->a.bits, bb = mac->b.bits;
    int64_t R = tj->R, C = tj->C, m = tj->m, n = tj->n, k = tj->k, kp = tg_ceil_div(k, nt);
    int64_t sr = df == ACS_OS ? m : kp, sc = df == ACS_IS ? m : n;
    int64_t frs = tg_ceil_div(sr, R), fcs = tg_ceil_div(sc, C);
    if (df != ACS_OS) { count_toggles_stationary(tj, nt, sr, sc, frs, fcs); return; }
    for (int64_t i = tj->lo; i < tj->hi && i < R; i++)
        for (int t = 0; t < nt; t++) {
            uint16_t reg = 0, head, tail;
            for (int64_t fr = 0; fr < frs && fr * R + i < sr; fr++) {   /* A[row, t::nt] along row i */
                int64_t row = fr * R + i;
                int64_t valid = kp - (kp * nt - k > 0 && t >= nt - (kp * nt - k) ? 1 : 0);
                int64_t flips = valid ? stream_flips(tj->a, ab, row * k + t, nt, valid, &head, &tail) : 0;
                if (!valid) head = tail = 0;
                if (valid < kp) { flips += __builtin_popcount(tail); tail = 0; }   /* zero padding past k */
                for (int64_t fc = 0; fc < fcs; fc++) {
                    int64_t c_act = sc - fc * C < C ? sc - fc * C : C;
                    tj->ta += (flips + __builtin_popcount(reg ^ head)) * c_act;
                    reg = tail;
                }
            }
        }
    {                                 /* B[col, t::nt] streams down column j in every row-fold */
        int64_t *flips = malloc((size_t)fcs * sizeof *flips);
        uint16_t *heads = malloc((size_t)fcs * sizeof *heads), *tails = malloc((size_t)fcs * sizeof *tails);
        if (!flips || !heads || !tails) tj->status = ACS_ERR_ARG;
        for (int64_t j = tj->lo; j < tj->hi && j < C && !tj->status; j++)
            for (int t = 0; t < nt; t++) {
                int64_t valid = kp - (kp * nt - k > 0 && t >= nt - (kp * nt - k) ? 1 : 0), cols = 0;
                for (int64_t fc = 0; fc < fcs && fc * C + j < sc; fc++, cols++) {
                    flips[fc] = valid ? stream_flips(tj->bt, bb, (fc * C + j) * k + t, nt, valid, &heads[fc], &tails[fc]) : 0;
                    if (!valid) heads[fc] = tails[fc] = 0;
                    if (valid < kp) { flips[fc] += __builtin_popcount(tails[fc]); tails[fc] = 0; }
                }
                uint16_t reg = 0;
                for (int64_t fr = 0; fr < frs; fr++) {
                    int64_t r_act = sr - fr * R < R ? sr - fr * R : R;
                    for (int64_t fc = 0; fc < cols; fc++) {
                        tj->tb += (flips[fc] + __builtin_popcount(reg ^ heads[fc])) * r_act;
                        reg = tails[fc];
                    }
                }
            }
        free(flips); free(heads); free(tails);
    }
}

/* ---- Multiplier inputs ----------------------------------------------------------------------
 * Operand isolation: a multiply with a zero operand is gated and its multiplier's inputs hold
 * the last active pair, so the multiplier switches only between consecutive active multiplies
 * of its PE lane.  Each lane's inputs start at 0 and keep their codes from fold to fold; the
 * folds come in the registers' order (row-fold major).  Per lane the multiplies are:
 *   OS: fold (fr, fc), PE (i, j): A[row, kidx] x B[kidx, col] for kidx = t, t + n, ... < k,
 *       row = fr*R + i, col = fc*C + j;
 *   WS: fold (fr, fc): A[x, kidx] x B[kidx, col] for x = 0..m-1, kidx = (fr*R + i)*n + t;
 *   IS: fold (fr, fc): A[row, kidx] x B[kidx, x] for x = 0..n-1, row = fc*C + j.
 * (n: the terms of a BlockFMA PE; lanes with kidx >= k multiply padding zeros: always gated.) */
typedef struct { int64_t count, flips; uint16_t first, last; } nz_run;

/* The nonzero codes among len codes from `first`, `step` apart: how many, the flips between
 * consecutive ones, the first and the last. */
ACS_POPCNT_CLONES
static nz_run nonzero_run(const void *codes, int wide, const uint8_t *nz, int64_t first, int64_t step, int64_t len)
{
    nz_run r = { 0, 0, 0, 0 };
    for (int64_t x = 0; x < len; x++) {
        uint16_t v = tg_code(codes, first + x * step, wide);
        if (!nz[v]) continue;
        if (r.count++) r.flips += __builtin_popcount((unsigned)(r.last ^ v));
        else r.first = v;
        r.last = v;
    }
    return r;
}

/* WS and IS: the stationary operand is constant through a fold, so a lane's active multiplies
 * are the nonzero codes of its stream when the stationary code is nonzero, none otherwise; the
 * stream's run (computed once per row-fold) serves every column-fold. */
static void count_mult_stationary(toggle_job *tj, int nt, int64_t sr, int64_t sc, int64_t frs, int64_t fcs)
{
    int ws = tj->dataflow == ACS_WS;
    const void *src = ws ? tj->a : tj->bt, *st = ws ? tj->bt : tj->a;
    int sw = (ws ? tj->mac->a.bits : tj->mac->b.bits) > 8, tw = (ws ? tj->mac->b.bits : tj->mac->a.bits) > 8;
    const uint8_t *nzs = ws ? tj->nza : tj->nzb, *nzt = ws ? tj->nzb : tj->nza;
    int64_t R = tj->R, C = tj->C, k = tj->k, len = ws ? tj->m : tj->n;
    int64_t *streamed = ws ? &tj->ma : &tj->mb, *stationary = ws ? &tj->mb : &tj->ma;
    uint16_t *ls = malloc((size_t)C * sizeof *ls), *lt = malloc((size_t)C * sizeof *lt);   /* per column */
    if (!ls || !lt) tj->status = ACS_ERR_ARG;
    for (int64_t i = tj->lo; i < tj->hi && i < R && !tj->status; i++)
        for (int t = 0; t < nt; t++) {
            memset(ls, 0, (size_t)C * sizeof *ls);
            memset(lt, 0, (size_t)C * sizeof *lt);
            for (int64_t fr = 0; fr < frs && fr * R + i < sr; fr++) {
                int64_t kidx = (fr * R + i) * nt + t;
                if (kidx >= k) break;                       /* padding: gated from here on */
                nz_run run = nonzero_run(src, sw, nzs, kidx, k, len);
                if (!run.count) continue;
                for (int64_t fc = 0; fc < fcs; fc++)
                    for (int64_t j = 0; j < C && fc * C + j < sc; j++) {
                        uint16_t v = tg_code(st, (fc * C + j) * k + kidx, tw);
                        if (!nzt[v]) continue;
                        *streamed += run.flips + __builtin_popcount((unsigned)(ls[j] ^ run.first));
                        *stationary += __builtin_popcount((unsigned)(lt[j] ^ v));
                        ls[j] = run.last;
                        lt[j] = v;
                    }
            }
        }
    free(ls); free(lt);
}

/* OS: a lane's pairs are A's row and B's column along K.  Where neither has a zero among the
 * lane's codes every pair is active and the two runs give the flips at once.  Otherwise the
 * pairs are walked in order, the C columns of a fold side by side in vectors of 16 (B laid out
 * K x N with a nonzero mask, tj->bkn and tj->mkn): a zero A code skips the step for all of them. */
#pragma GCC diagnostic ignored "-Wpsabi"   /* vector helpers are always inlined: no ABI crosses */
typedef uint16_t tg_v16 __attribute__((vector_size(32)));

static inline __attribute__((always_inline)) tg_v16 tg_pop16(tg_v16 x)
{
    x = x - ((x >> 1) & 0x5555);
    x = (x & 0x3333) + ((x >> 2) & 0x3333);
    x = (x + (x >> 4)) & 0x0F0F;
    return (x + (x >> 8)) & 0x1F;
}

static inline int64_t tg_hsum(tg_v16 x)
{
    int64_t s = 0;
    for (int q = 0; q < 16; q++) s += x[q];
    return s;
}

/* The walked pairs of one A row-lane against the columns [c0, c0 + cact) of a fold; la, lb
 * hold the columns' multiplier inputs (16 * chunks entries). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void walk_os_fold(toggle_job *tj, int nt, int t, int64_t row, int64_t c0, int64_t cact, int chunks,
                         uint16_t *la, uint16_t *lb)
{
    int wa = tj->mac->a.bits > 8;
    int64_t k = tj->k, np = tj->np;
    tg_v16 fa = { 0 }, fb = { 0 }, lanes[16];
    for (int q = 0; q < chunks; q++)
        for (int x = 0; x < 16; x++) lanes[q][x] = q * 16 + x < cact ? 0xFFFF : 0;
    int flush = 4095 / chunks, steps = 0;
    for (int64_t kidx = t; kidx < k; kidx += nt) {
        uint16_t u = tg_code(tj->a, row * k + kidx, wa);
        if (!tj->nza[u]) continue;
        tg_v16 uu = (tg_v16){ 0 } + u;
        const uint16_t *brow = tj->bkn + kidx * np + c0, *mrow = tj->mkn + kidx * np + c0;
        for (int q = 0; q < chunks; q++) {
            tg_v16 v, m, pa, pb;
            memcpy(&v, brow + 16 * q, sizeof v);
            memcpy(&m, mrow + 16 * q, sizeof m);
            memcpy(&pa, la + 16 * q, sizeof pa);
            memcpy(&pb, lb + 16 * q, sizeof pb);
            m &= lanes[q];
            fa += tg_pop16((pa ^ uu) & m);
            fb += tg_pop16((pb ^ v) & m);
            pa = (pa & ~m) | (uu & m);
            pb = (pb & ~m) | (v & m);
            memcpy(la + 16 * q, &pa, sizeof pa);
            memcpy(lb + 16 * q, &pb, sizeof pb);
        }
        if (++steps == flush) {          /* a lane gains at most 16 per chunk and step */
            tj->ma += tg_hsum(fa);
            tj->mb += tg_hsum(fb);
            fa = fb = (tg_v16){ 0 };
            steps = 0;
        }
    }
    tj->ma += tg_hsum(fa);
    tj->mb += tg_hsum(fb);
}

ACS_POPCNT_CLONES
static void count_mult_os(toggle_job *tj, int nt, int64_t frs, int64_t fcs)
{
    int wa = tj->mac->a.bits > 8, wb = tj->mac->b.bits > 8;
    int64_t R = tj->R, C = tj->C, m = tj->m, n = tj->n, k = tj->k;
    int chunks = (int)tg_ceil_div(C < 256 ? C : 256, 16);
    nz_run *ra = malloc((size_t)(m * nt) * sizeof *ra), *rb = malloc((size_t)(n * nt) * sizeof *rb);
    int64_t *lane_len = malloc((size_t)nt * sizeof *lane_len);
    uint16_t *la = malloc((size_t)C * sizeof *la + 512), *lb = malloc((size_t)C * sizeof *lb + 512);
    if (!ra || !rb || !lane_len || !la || !lb) tj->status = ACS_ERR_ARG;
    for (int t = 0; t < nt && !tj->status; t++) lane_len[t] = t < k ? tg_ceil_div(k - t, nt) : 0;
    /* the runs of this worker's A rows, and of every B column */
    for (int64_t i = tj->lo; i < tj->hi && i < R && !tj->status; i++)
        for (int64_t row = i; row < m; row += R)
            for (int t = 0; t < nt; t++) ra[row * nt + t] = nonzero_run(tj->a, wa, tj->nza, row * k + t, nt, lane_len[t]);
    for (int64_t col = 0; col < n && !tj->status && tj->lo < R; col++)
        for (int t = 0; t < nt; t++) rb[col * nt + t] = nonzero_run(tj->bt, wb, tj->nzb, col * k + t, nt, lane_len[t]);
    for (int64_t i = tj->lo; i < tj->hi && i < R && !tj->status; i++)
        for (int t = 0; t < nt; t++) {
            memset(la, 0, (size_t)C * sizeof *la + 512);
            memset(lb, 0, (size_t)C * sizeof *lb + 512);
            for (int64_t fr = 0; fr < frs && fr * R + i < m; fr++) {
                int64_t row = fr * R + i;
                const nz_run *sa = &ra[row * nt + t];
                if (!sa->count) continue;                   /* every multiply gated */
                for (int64_t fc = 0; fc < fcs; fc++) {
                    int64_t c0 = fc * C, cact = n - c0 < C ? n - c0 : C, b_dense = 1;
                    for (int64_t j = 0; j < cact && b_dense; j++) b_dense = rb[(c0 + j) * nt + t].count == lane_len[t];
                    if (b_dense && sa->count < lane_len[t]) {
                        /* B has no zero here: the active pairs are A's nonzero codes, and B's
                         * inputs step between the B rows of consecutive ones, all columns at once */
                        int64_t prev = -1;
                        for (int64_t kidx = t; kidx < k; kidx += nt) {
                            if (!tj->nza[tg_code(tj->a, row * k + kidx, wa)]) continue;
                            const uint16_t *cur = tj->bkn + kidx * tj->np + c0;
                            if (prev < 0)
                                for (int64_t j = 0; j < cact; j++) tj->mb += __builtin_popcount((unsigned)(lb[j] ^ cur[j]));
                            else
                                tj->mb += xor_flips((const uint8_t *)cur, (const uint8_t *)(tj->bkn + prev * tj->np + c0),
                                                    cact * 2);
                            prev = kidx;
                        }
                        memcpy(lb, tj->bkn + prev * tj->np + c0, (size_t)cact * sizeof *lb);
                        for (int64_t j = 0; j < cact; j++) {
                            tj->ma += sa->flips + __builtin_popcount((unsigned)(la[j] ^ sa->first));
                            la[j] = sa->last;
                        }
                        continue;
                    }
                    if (!b_dense) {
                        for (int64_t j0 = 0; j0 < cact; j0 += 256)   /* at most 16 vectors at a time */
                            walk_os_fold(tj, nt, t, row, c0 + j0, cact - j0 < 256 ? cact - j0 : 256, chunks,
                                         la + j0, lb + j0);
                        continue;
                    }
                    for (int64_t j = 0; j < cact; j++) {
                        const nz_run *sb = &rb[(c0 + j) * nt + t];
                        tj->ma += sa->flips + __builtin_popcount((unsigned)(la[j] ^ sa->first));
                        tj->mb += sb->flips + __builtin_popcount((unsigned)(lb[j] ^ sb->first));
                        la[j] = sa->last;
                        lb[j] = sb->last;
                    }
                }
            }
        }
    free(ra); free(rb); free(lane_len); free(la); free(lb);
}

static void count_mult_part(toggle_job *tj)
{
    const acs_mac *mac = tj->mac;
    int df = tj->dataflow, nt = mac->acc.kind == ACS_ACC_BLOCK ? mac->acc.terms : 1;
    int64_t kp = tg_ceil_div(tj->k, nt), sr = df == ACS_OS ? tj->m : kp, sc = df == ACS_IS ? tj->m : tj->n;
    int64_t frs = tg_ceil_div(sr, tj->R), fcs = tg_ceil_div(sc, tj->C);
    if (df == ACS_OS) count_mult_os(tj, nt, frs, fcs);
    else count_mult_stationary(tj, nt, sr, sc, frs, fcs);
}

static void toggle_worker(void *p)
{
    toggle_job *tj = p;
    count_toggles_part(tj);
    if (!tj->status) count_mult_part(tj);
}

/* 1 for each code whose decoded value is nonzero (+0 and -0 are zeros). */
static uint8_t *nonzero_table(const acs_operand *decoded, int bits)
{
    uint8_t *nz = malloc((size_t)1 << bits);
    if (nz)
        for (int64_t c = 0; c < ((int64_t)1 << bits); c++) nz[c] = decoded[c].cls != ACS_ZERO;
    return nz;
}

/* The register and multiplier-input flips of acs_gemm's counts (blockscale.c counts K-blocks
 * with it). */
int acs_gemm_toggles(const acs_mac *mac, int dataflow, int64_t rows, int64_t cols, const void *a, const void *bt,
                     int64_t m, int64_t n, int64_t k, int threads, acs_gemm_counts *counts)
{
    counts->toggles_a = counts->toggles_b = counts->mult_toggles_a = counts->mult_toggles_b = 0;
    if (!m || !n || !k) return ACS_OK;
    acs_mac_ctx ctx;
    int status = acs_mac_open(&ctx, mac);
    if (status) return status;
    uint8_t *nza = ctx.ta ? nonzero_table(ctx.ta, mac->a.bits) : NULL;
    uint8_t *nzb = ctx.tb ? nonzero_table(ctx.tb, mac->b.bits) : NULL;
    acs_mac_close(&ctx);
    if (!nza || !nzb) { free(nza); free(nzb); return ACS_ERR_ARG; }
    /* OS walks B a row of K at a time, the columns of a fold side by side */
    int64_t np = dataflow == ACS_OS ? tg_ceil_div(n, 16) * 16 + 256 : 0;
    uint16_t *bkn = np ? malloc((size_t)(k * np) * sizeof *bkn) : NULL;
    uint16_t *mkn = np ? calloc((size_t)(k * np), sizeof *mkn) : NULL;
    if (np && (!bkn || !mkn)) { free(nza); free(nzb); free(bkn); free(mkn); return ACS_ERR_ARG; }
    for (int64_t col = 0; col < n && np; col++)
        for (int64_t kk = 0; kk < k; kk++) {
            uint16_t v = tg_code(bt, col * k + kk, mac->b.bits > 8);
            bkn[kk * np + col] = v;
            mkn[kk * np + col] = nzb[v] ? 0xFFFF : 0;
        }
    /* array rows (OS: and columns, for the registers) shared among the workers */
    int64_t lanes = rows > cols ? rows : cols;
    int tw = (int)(threads < lanes ? threads : lanes);
    toggle_job tjobs[256];
    for (int w = 0; w < tw; w++) {
        toggle_job t = { mac, dataflow, rows, cols, m, n, k, a, bt, lanes * w / tw, lanes * (w + 1) / tw,
                         0, 0, 0, 0, nza, nzb, bkn, mkn, np, ACS_OK };
        tjobs[w] = t;
    }
    acs_run_parallel(toggle_worker, tjobs, sizeof tjobs[0], tw);
    for (int w = 0; w < tw && !status; w++) {
        status = tjobs[w].status;
        counts->toggles_a += tjobs[w].ta;
        counts->toggles_b += tjobs[w].tb;
        counts->mult_toggles_a += tjobs[w].ma;
        counts->mult_toggles_b += tjobs[w].mb;
    }
    free(nza); free(nzb); free(bkn); free(mkn);
    return status;
}
