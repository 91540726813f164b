/* accumulate.c: one accumulation step for every accumulator kind, and chains of them.
 * Products of two operands are exact; every rounding goes through acs_round() (round.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include "internal.h"

/* An exact product (or accumulator value): (-1)^neg * sig * 2^exp when cls is ACS_FINITE. */
typedef struct {
    int cls;
    int neg;
    int64_t exp;
    int64_t bexp;   /* alignment exponent for the block fused adder */
    acs_u128 sig;
} term;

static inline term product(const acs_operand *x, const acs_operand *y)
{
    term p = { ACS_FINITE, x->neg ^ y->neg, (int64_t)x->exp + y->exp, (int64_t)x->bexp + y->bexp,
               (acs_u128)x->sig * y->sig };
    if (x->cls == ACS_NAN || y->cls == ACS_NAN) p.cls = ACS_NAN;
    else if (x->cls == ACS_INF || y->cls == ACS_INF)
        p.cls = (x->cls == ACS_ZERO || y->cls == ACS_ZERO) ? ACS_NAN : ACS_INF;
    else if (x->cls == ACS_ZERO || y->cls == ACS_ZERO) p.cls = ACS_ZERO;
    return p;
}

/* floor(log2|r|) clamped below at the grid's emin (r may lie on a wider addend grid). */
static inline int64_t rounded_binade(const acs_grid *g, const acs_rounded *r)
{
    int64_t e = r->q + 127 - acs_clz128(r->kept);
    return e > g->emin ? e : g->emin;
}

/* IEEE 754: an exact zero sum of zeros all of one sign keeps that sign; any other exact zero
 * sum is +0, or -0 when rounding down. */
static inline acs_rounded zero_sum(int all_pos_zeros, int all_neg_zeros, int rounding)
{
    acs_rounded z = { ACS_ZERO, all_neg_zeros || (!all_pos_zeros && rounding == ACS_RDN), 0, 0, 0 };
    return z;
}

/* x + y exactly, or with a sticky bit far below any bit rounding can see: both significands
 * (at most 106 bits) are normalised to bit 125, so a shift that loses bits (>= 20 places)
 * leaves the result's top bit at 124 or above, and the sticky at bit -1. */
acs_real acs_add_exact(int xneg, acs_u128 xs, int64_t xe, int yneg, acs_u128 ys, int64_t ye)
{
    int lx = acs_clz128(xs), ly = acs_clz128(ys);
    xs <<= lx - 2; xe -= lx - 2;   /* top bit at 125 */
    ys <<= ly - 2; ye -= ly - 2;
    if (ye > xe || (ye == xe && ys > xs)) { /* make x the larger magnitude */
        int tn = xneg; xneg = yneg; yneg = tn;
        acs_u128 ts = xs; xs = ys; ys = ts;
        int64_t te = xe; xe = ye; ye = te;
    }
    int64_t d = xe - ye;
    int sticky = 0;
    if (d >= 126) { sticky = 1; ys = 0; }
    else if (d > 0) { sticky = (ys & (((acs_u128)1 << d) - 1)) != 0; ys >>= d; }
    acs_real s = { xneg, 0, xe, 0 };
    if (xneg == yneg) { s.sig = xs + ys; s.sticky = sticky; }
    else { s.sig = xs - ys - (acs_u128)sticky; s.sticky = sticky; }
    return s;
}

/* ---- FloatAcc: acc <- round(acc + p), one rounding of the exact sum --------------------- */
static acs_rounded float_step(const acs_acc *acc, acs_rounded c, term p, uint32_t rand)
{
    const acs_grid *g = &acc->grid;
    acs_rounded nan = { ACS_NAN, 0, 0, 0, 0 };
    if (c.cls == ACS_NAN || p.cls == ACS_NAN) return nan;
    if (c.cls == ACS_INF) return (p.cls == ACS_INF && p.neg != c.neg) ? nan : c;
    if (p.cls == ACS_INF) return acs_round_infinity(g, p.neg, acc->overflow);
    if (p.cls == ACS_ZERO) {
        if (c.cls == ACS_ZERO) return zero_sum(!c.neg && !p.neg, c.neg && p.neg, acc->rounding);
        return c;
    }
    acs_real s;
    if (c.cls == ACS_ZERO) {
        acs_real x = { p.neg, 0, p.exp, p.sig };
        s = x;
    } else {
        s = acs_add_exact(c.neg, c.kept, c.q, p.neg, p.sig, p.exp);
        if (s.sig == 0 && !s.sticky) return zero_sum(0, 0, acc->rounding);
    }
    return acs_round(g, s, acc->rounding, acc->overflow, rand);
}

/* ---- FixedAcc / IntAcc: an exact two's complement register -------------------------------- */
static inline acs_i128 clamp_register(const acs_acc *acc, acs_i128 v)
{
    int bits = acc->grid.total_bits;
    acs_i128 hi = (((acs_i128)1) << (bits - 1)) - 1, lo = -hi - 1;
    if (acc->overflow == ACS_OVF_SATURATE) return v > hi ? hi : v < lo ? lo : v;
    acs_u128 m = (((acs_u128)1) << bits) - 1;
    acs_u128 u = (acs_u128)v & m;
    return (u >> (bits - 1)) & 1 ? (acs_i128)(u | ~m) : (acs_i128)u;
}

/* The product rounded onto the register's 2^-frac_bits grid, on a 127-bit grid: a wrapping
 * register only needs it modulo 2^127 (its width divides that), a saturating one only its
 * sign when it is that large. */
static inline int fixed_product(const acs_acc *acc, term p, uint32_t rand, acs_i128 *k)
{
    if (p.cls == ACS_NAN) return ACS_ERR_NAN;
    if (p.cls == ACS_INF) return ACS_ERR_RANGE;
    *k = 0;
    if (p.cls == ACS_ZERO) return ACS_OK;
    acs_grid wide = acc->grid;
    wide.total_bits = 127;
    acs_real x = { p.neg, 0, p.exp, p.sig };
    acs_rounded r = acs_round(&wide, x, acc->rounding, acc->overflow, rand);
    *k = r.neg ? -(acs_i128)r.kept : (acs_i128)r.kept;
    return ACS_OK;
}

/* ---- Quire: an exact register of posit products, wrapping at its width (<= 128 bits) ------
 * NaR is kept in the state's v.cls (ACS_NAN), the register in reg. */
static inline void quire_add(const acs_acc *acc, acs_acc_state *s, term p)
{
    if (p.cls == ACS_NAN || p.cls == ACS_INF) s->v.cls = ACS_NAN;
    if (p.cls != ACS_FINITE || s->v.cls == ACS_NAN) return;
    acs_i128 k = 0;
    fixed_product(acc, p, 0, &k); /* exact: posit products lie on the register's grid */
    acs_i128 sum = (acs_i128)((acs_u128)s->reg + (acs_u128)k); /* wraps modulo 2^128 */
    s->reg = acc->grid.total_bits < 128 ? clamp_register(acc, sum) : sum;
}

/* ---- BlockFMA: `n` products and the accumulator in one fused step ---------------------------- */
static acs_rounded block_step(const acs_acc *acc, acs_rounded c, const term *p, int n, uint32_t rand)
{
    const acs_grid *g = &acc->grid;
    acs_rounded nan = { ACS_NAN, 0, 0, 0, 0 };
    int pos_inf = c.cls == ACS_INF && !c.neg, neg_inf = c.cls == ACS_INF && c.neg;
    int all_neg_zeros = c.cls == ACS_ZERO && c.neg, all_pos_zeros = c.cls == ACS_ZERO && !c.neg;
    int any_nonzero = c.cls == ACS_FINITE;
    if (c.cls == ACS_NAN) return nan;
    int64_t e_max = c.cls == ACS_FINITE ? rounded_binade(g, &c) : INT64_MIN;
    for (int j = 0; j < n; j++) {
        if (p[j].cls == ACS_NAN) return nan;
        pos_inf |= p[j].cls == ACS_INF && !p[j].neg;
        neg_inf |= p[j].cls == ACS_INF && p[j].neg;
        all_neg_zeros &= p[j].cls == ACS_ZERO && p[j].neg;
        all_pos_zeros &= p[j].cls == ACS_ZERO && !p[j].neg;
        if (p[j].cls == ACS_FINITE) {
            any_nonzero = 1;
            if (p[j].bexp > e_max) e_max = p[j].bexp;
        }
    }
    if (pos_inf && neg_inf) return nan;
    if (pos_inf || neg_inf) {
        if (c.cls == ACS_INF) return c;
        return acs_round_infinity(g, neg_inf, acc->overflow);
    }
    if (!any_nonzero) return zero_sum(all_pos_zeros, all_neg_zeros, acc->rounding);
    /* Each term truncated toward zero onto the grid 2^(e_max - align_bits), summed exactly. */
    int64_t base = e_max - acc->align_bits;
    acs_i128 sum = 0;
    for (int j = -1; j < n; j++) {
        acs_u128 sig;
        int64_t exp;
        int neg;
        if (j < 0) {
            if (c.cls != ACS_FINITE) continue;
            sig = c.kept; exp = c.q; neg = c.neg;
        } else {
            if (p[j].cls != ACS_FINITE) continue;
            sig = p[j].sig; exp = p[j].exp; neg = p[j].neg;
        }
        int64_t shift = exp - base;
        acs_u128 t = shift >= 0 ? sig << shift : (-shift >= 128 ? 0 : sig >> -shift);
        sum += neg ? -(acs_i128)t : (acs_i128)t;
    }
    if (sum == 0) return zero_sum(0, 0, acc->rounding);
    acs_real s = { sum < 0, 0, base, sum < 0 ? (acs_u128)(-sum) : (acs_u128)sum };
    return acs_round(g, s, acc->rounding, acc->overflow, rand);
}

int acs_check_acc(const acs_acc *acc)
{
    if (!acc || acc->rounding < ACS_RNE || acc->rounding > ACS_SR) return ACS_ERR_ARG;
    switch (acc->kind) {
    case ACS_ACC_FLOAT:
    case ACS_ACC_BLOCK:
        if (acc->grid.kind != ACS_GRID_FLOAT || acc->grid.man_bits < 0 || acc->grid.man_bits > 52) return ACS_ERR_ARG;
        if (acc->addend.kind != ACS_GRID_FLOAT || acc->addend.man_bits < 0 || acc->addend.man_bits > 52) return ACS_ERR_ARG;
        if (acc->overflow != ACS_OVF_INF && acc->overflow != ACS_OVF_SATURATE) return ACS_ERR_ARG;
        if (acc->kind == ACS_ACC_BLOCK && (acc->terms < 1 || acc->terms > 64 || acc->align_bits < 0 || acc->align_bits > 100))
            return ACS_ERR_ARG;
        return ACS_OK;
    case ACS_ACC_QUIRE:
        if (acc->grid.kind != ACS_GRID_FIXED || !acc->grid.is_signed || acc->overflow != ACS_OVF_WRAP
            || acc->grid.total_bits < 2 || acc->grid.total_bits > 128 || acc->readout.grid.kind != ACS_GRID_POSIT
            || acc->readout.bits < 3 || acc->readout.bits > 16 || acc->readout.exp_bits < 0 || acc->readout.exp_bits > 3)
            return ACS_ERR_ARG;
        return ACS_OK;
    case ACS_ACC_INT:
    case ACS_ACC_FIXED:
        if (acc->grid.kind != ACS_GRID_FIXED || !acc->grid.is_signed) return ACS_ERR_ARG;
        if (acc->grid.total_bits < 2 || acc->grid.total_bits > (acc->kind == ACS_ACC_INT ? 64 : 120)) return ACS_ERR_ARG;
        if (acc->kind == ACS_ACC_INT && acc->grid.frac_bits) return ACS_ERR_ARG;
        if (acc->overflow != ACS_OVF_WRAP && acc->overflow != ACS_OVF_SATURATE) return ACS_ERR_ARG;
        return ACS_OK;
    }
    return ACS_ERR_ARG;
}

static int check_mac(const acs_mac *mac)
{
    int status = acs_check_acc(&mac->acc);
    if (status == ACS_OK && mac->acc.kind == ACS_ACC_INT
        && (mac->a.grid.kind != ACS_GRID_FIXED || mac->b.grid.kind != ACS_GRID_FIXED
            || mac->a.grid.frac_bits || mac->b.grid.frac_bits))
        return ACS_ERR_ARG;
    return status;
}

/* Decoded fields of every code of a format of at most 16 bits (operands are looked up). */
static acs_operand *build_operand_table(const acs_format *f)
{
    acs_operand *t = malloc(sizeof *t << f->bits);
    if (t)
        for (uint64_t c = 0; c < (1ULL << f->bits); c++) t[c] = acs_decode_operand(f, c);
    return t;
}

static int same_format(const acs_format *x, const acs_format *y)
{
    const acs_grid *g = &x->grid, *h = &y->grid;
    return g->kind == h->kind && g->man_bits == h->man_bits && g->emin == h->emin && g->emax == h->emax
        && g->max_sig == h->max_sig && g->subnormals == h->subnormals && g->total_bits == h->total_bits
        && g->frac_bits == h->frac_bits && g->is_signed == h->is_signed && x->bits == y->bits
        && x->exp_bits == y->exp_bits && x->bias == y->bias && x->has_inf == y->has_inf
        && x->nan_style == y->nan_style;
}

/* The decoded codes of a format of at most 16 bits.  Tables of formats wider than 8 bits take
 * milliseconds to build (65536 codes), so the first few such formats keep theirs for the
 * process (*shared set: not the caller's to free); the rest are built per call. */
#define OPERAND_TABLES_KEPT 16
static struct { acs_format f; acs_operand *t; } kept_tables[OPERAND_TABLES_KEPT];
static int kept_count;
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;

static acs_operand *operand_table(const acs_format *f, int *shared)
{
    *shared = 0;
    if (f->bits > 16) return NULL;
    if (f->bits <= 8) return build_operand_table(f);
    acs_operand *t = NULL;
    pthread_mutex_lock(&kept_lock);
    for (int i = 0; i < kept_count && !t; i++)
        if (same_format(&kept_tables[i].f, f)) t = kept_tables[i].t;
    if (!t && kept_count < OPERAND_TABLES_KEPT && (t = build_operand_table(f))) {
        kept_tables[kept_count].f = *f;
        kept_tables[kept_count++].t = t;
    }
    pthread_mutex_unlock(&kept_lock);
    if (t) *shared = 1;
    else t = build_operand_table(f);
    return t;
}

static inline acs_operand operand(const acs_format *f, const acs_operand *table, const void *codes, int64_t i)
{
    uint64_t c = acs_load_code(codes, i, f->bits);
    return table ? table[c] : acs_decode_operand(f, c);
}

/* The starting value, rounded to nearest-even onto the addend register of a float
 * accumulator (e.g. fp32 C of a tensor core whose blocks round to 13 bits, or fp16 C of an
 * fp16-output one); registers take it on their 2^-frac_bits grid. */
acs_acc_state acs_acc_start(const acs_acc *acc, double init)
{
    int cls;
    uint64_t u;
    memcpy(&u, &init, sizeof u);
    acs_real x = acs_real_from_bits(u, 64, &cls);
    acs_acc_state s = { { cls, x.neg, 0, 0, 0 }, 0 };
    acs_grid g = acc->grid.kind == ACS_GRID_FLOAT ? acc->addend : acc->grid;
    if (g.kind == ACS_GRID_FIXED) g.total_bits = 127; /* range: the register's policy */
    if (cls == ACS_INF) s.v = acs_round_infinity(&g, x.neg, acc->overflow);
    if (cls == ACS_FINITE) s.v = acs_round(&g, x, ACS_RNE, acc->overflow, 0);
    if (acc->kind == ACS_ACC_INT || acc->kind == ACS_ACC_FIXED || acc->kind == ACS_ACC_QUIRE) {
        s.reg = s.v.cls != ACS_FINITE ? 0 : s.v.neg ? -(acs_i128)s.v.kept : (acs_i128)s.v.kept;
        if (acc->kind != ACS_ACC_QUIRE || acc->grid.total_bits < 128) s.reg = clamp_register(acc, s.reg);
        if (acc->kind == ACS_ACC_QUIRE && s.v.cls == ACS_NAN) s.reg = 0; /* stays NaR */
    }
    return s;
}

/* ---- Exact fast paths ------------------------------------------------------------------
 * FloatAcc fp32 rne: when every product of two operand values is exact in fp32 (significands
 * of at most 24 bits together, no product below 2^-149's grid or beyond 2^128), a native fp32
 * add rounds acc + a*b exactly once to nearest-even, with IEEE's overflow, subnormals, signed
 * zeros and NaN rules: the general step's result bit for bit (the engine is built without
 * fast-math, on SSE arithmetic with no flush-to-zero).
 * IntAcc wrap: two's complement wrapping after every step equals wrapping the exact sum once,
 * and an int64 sum of products of <= 16-bit integers cannot overflow below 2^30 steps. */
static int fast_paths_enabled = 1;

int acs_set_fast_paths(int enabled)
{
    int old = fast_paths_enabled;
    fast_paths_enabled = enabled != 0;
    return old;
}

/* Over a format's finite nonzero values (from its operand table): the most significant bits
 * of an odd significand, the lowest set bit's exponent, and top with every |x| < 2^top.  A
 * product of two such values has at most sig_a + sig_b significant bits between 2^(lsb_a +
 * lsb_b) and 2^(top_a + top_b). */
static void value_range(const acs_operand *t, int bits, int *sig, int64_t *lsb, int64_t *top)
{
    *sig = 0; *lsb = INT32_MAX; *top = INT32_MIN;
    for (uint64_t c = 0; c < (1ULL << bits); c++) {
        if (t[c].cls != ACS_FINITE) continue;
        int tz = __builtin_ctzll(t[c].sig), len = 64 - __builtin_clzll(t[c].sig);
        if (len - tz > *sig) *sig = len - tz;
        if (t[c].exp + tz < *lsb) *lsb = t[c].exp + tz;
        if (t[c].exp + len > *top) *top = t[c].exp + len;
    }
}

/* FloatAcc with subnormals and IEEE or saturating overflow and at most 50 fraction bits (rna,
 * rto and sr: 51), so that the sum in units of its spacing, t, rounds to an integer by adding
 * and taking away 1.5 * 2^52 (|t| < 2^51; rna/rto/sr take 2^52 onto |t| < 2^52), products exact in binary64
 * and every value between 2^lo and 2^hi: the array's vector kernel
 * forms acc + a*b natively and rounds it once onto the grid (array.c).  Returns 2 when every
 * such sum is provably exact in binary64 (hi + 1 - lo <= 53), 1 when the kernel must check each
 * sum (and leave an output whose sum was not exact to the general step), 0 when it does not
 * apply.  The chains here keep the general step. */
static int exact64_path(const acs_mac *mac, int sa, int sb, int64_t lo_ab, int64_t top_ab)
{
    const acs_acc *acc = &mac->acc;
    const acs_grid *g = &acc->grid;
    int narrow = acc->rounding == ACS_RNA || acc->rounding == ACS_RTO || acc->rounding == ACS_SR;
    if (acc->kind != ACS_ACC_FLOAT || !g->subnormals || memcmp(&acc->addend, g, sizeof *g)
        || (acc->rounding != ACS_RNE && acc->rounding != ACS_RTZ && acc->rounding != ACS_RUP
            && acc->rounding != ACS_RDN && !narrow)
        || g->man_bits > (narrow ? 51 : 50)
        || (acc->overflow != ACS_OVF_INF && acc->overflow != ACS_OVF_SATURATE))
        return 0;
    int64_t lo = (int64_t)g->emin - g->man_bits, hi = (int64_t)g->emax + 1;
    if (lo_ab < lo) lo = lo_ab;
    if (top_ab > hi) hi = top_ab;
    if (sa + sb > 53 || lo < -1022 || hi > 1000) return 0;
    return hi + 1 - lo <= 53 ? 2 : 1;
}

/* BlockFMA in any rounding mode, with subnormals and IEEE or saturating overflow, at most 50
 * fraction bits (rna, rto, sr: 51, as exact64_path), whose block sum (n + 1 terms below
 * 2^(F+2) on the aligned grid) is exact in binary64: the array's vector kernel forms it
 * natively (array.c). */
static int block64_path(const acs_mac *mac, int sa, int sb)
{
    const acs_acc *acc = &mac->acc;
    int bits = 0, narrow = acc->rounding == ACS_RNA || acc->rounding == ACS_RTO || acc->rounding == ACS_SR;
    while ((1 << bits) < acc->terms + 1) bits++;
    return acc->kind == ACS_ACC_BLOCK && acc->grid.subnormals && sa + sb <= 53 && acc->grid.man_bits <= (narrow ? 51 : 50)
        && (acc->overflow == ACS_OVF_INF || acc->overflow == ACS_OVF_SATURATE)
        && acc->align_bits + 2 + bits <= 53 && acc->grid.emin - acc->grid.man_bits >= -1000 && acc->grid.emax <= 1000;
}

static int fast_path_of(acs_mac_ctx *ctx)
{
    const acs_mac *mac = ctx->mac;
    const acs_acc *acc = &mac->acc;
    if (!fast_paths_enabled || mac->a.bits > 16 || mac->b.bits > 16) return ACS_FAST_NONE;
    if (acc->kind == ACS_ACC_INT) return acc->overflow == ACS_OVF_WRAP ? ACS_FAST_INT_WRAP : ACS_FAST_INT_SAT;
    if (acc->kind == ACS_ACC_FIXED || acc->kind == ACS_ACC_QUIRE) return ACS_FAST_FIXED; /* if fixed_values agrees */
    int sa, sb;
    int64_t la, lb, ta, tb;
    value_range(ctx->ta, mac->a.bits, &sa, &la, &ta);
    value_range(ctx->tb, mac->b.bits, &sb, &lb, &tb);
    const acs_grid *g = &acc->grid, *ad = &acc->addend;
    int fp32 = acc->kind == ACS_ACC_FLOAT && acc->rounding == ACS_RNE && acc->overflow == ACS_OVF_INF
        && g->man_bits == 23 && g->emin == -126 && g->emax == 127 && g->max_sig == (1ULL << 24) - 1 && g->subnormals
        && ad->man_bits == 23 && ad->emin == -126 && ad->emax == 127 && ad->max_sig == (1ULL << 24) - 1 && ad->subnormals;
    ctx->products_f32 = sa + sb <= 24 && la + lb >= -149 && ta + tb <= 128;
    if (fp32 && ctx->products_f32) return ACS_FAST_FP32;
    if (block64_path(mac, sa, sb)) return ACS_FAST_BLOCK64;
    int exact = exact64_path(mac, sa, sb, la + lb, ta + tb);
    ctx->exact_sums = exact == 2;
    return exact ? ACS_FAST_EXACT64 : ACS_FAST_NONE;
}

/* Every code's value as a float (exact for the formats of at most 16 bits the fast paths take)
 * or an integer. */
static float *float_values(const acs_operand *t, int bits)
{
    float *v = malloc(sizeof(float) << bits);
    for (uint64_t c = 0; v && c < (1ULL << bits); c++) {
        double x = t[c].cls == ACS_NAN ? NAN : t[c].cls == ACS_INF ? INFINITY : ldexp((double)t[c].sig, t[c].exp);
        v[c] = (float)(t[c].neg ? -x : x);
    }
    return v;
}

static int64_t *int_values(const acs_operand *t, int bits)
{
    int64_t *v = malloc(sizeof(int64_t) << bits);
    for (uint64_t c = 0; v && c < (1ULL << bits); c++) v[c] = t[c].neg ? -(int64_t)t[c].sig : (int64_t)t[c].sig;
    return v;
}

/* Whether every finite value of the table is an int16 in units 2^u (u at most each one's
 * lowest set bit): int8 -128 in units 2^-8 is -32768, one more than a bound by magnitude allows. */
static int fits_int16(const acs_operand *t, int bits, int64_t u)
{
    for (uint64_t c = 0; c < (1ULL << bits); c++) {
        if (t[c].cls != ACS_FINITE) continue;
        int64_t sh = t[c].exp - u, len = 64 - __builtin_clzll(t[c].sig);
        if (sh + len > 16) return 0;
        int64_t x = (int64_t)(t[c].sig << (sh > 0 ? sh : 0)) >> (sh < 0 ? -sh : 0);
        if (t[c].neg ? -x < INT16_MIN : x > INT16_MAX) return 0;
    }
    return 1;
}

/* FixedAcc and the quire (ACS_FAST_FIXED), when every product lies on the register's grid
 * (no rounding): the operands as integers in units 2^ua and 2^ub, ua + ub + frac_bits =
 * fixed_shift >= 0 register lsbs per unit product.  B takes the finer unit -frac_bits - ua
 * when its values still fit 16 bits, so that products are whole lsbs (shift 0, which lets a
 * saturating register be clamped in lanes).  Non-finite codes get 0 (the kernels look for
 * them).  0 when it does not apply. */
static int fixed_values(acs_mac_ctx *ctx)
{
    const acs_mac *mac = ctx->mac;
    int sa, sb;
    int64_t la, lb, ta, tb, frac = mac->acc.grid.frac_bits;
    value_range(ctx->ta, mac->a.bits, &sa, &la, &ta);
    value_range(ctx->tb, mac->b.bits, &sb, &lb, &tb);
    if (la == INT32_MAX) la = ta = 0;   /* no finite nonzero value: every product is zero */
    if (lb == INT32_MAX) lb = tb = 0;
    if (la + lb < -frac) return 0;
    int64_t ub = -frac - la;
    if (!fits_int16(ctx->tb, mac->b.bits, ub)) ub = lb;
    if (ta - la > 62 || tb - ub > 62) return 0;
    ctx->fixed_wide = ta - la > 31 || tb - ub > 31;   /* else products below 2^62 */
    ctx->fixed_shift = (int)(la + ub + frac);
    ctx->ia = malloc(sizeof(int64_t) << mac->a.bits);
    ctx->ib = malloc(sizeof(int64_t) << mac->b.bits);
    if (!ctx->ia || !ctx->ib) return 0;
    int64_t m[2] = { 0, 0 };
    for (int s = 0; s < 2; s++) {
        const acs_operand *t = s ? ctx->tb : ctx->ta;
        int64_t *v = s ? ctx->ib : ctx->ia, u = s ? ub : la;
        for (uint64_t c = 0; c < (1ULL << (s ? mac->b.bits : mac->a.bits)); c++) {
            int tz = t[c].cls == ACS_FINITE ? __builtin_ctzll(t[c].sig) : 0;   /* u <= its lowest bit */
            int64_t x = t[c].cls == ACS_FINITE ? (int64_t)((t[c].sig >> tz) << (t[c].exp + tz - u)) : 0;
            v[c] = t[c].neg ? -x : x;
            if (x > m[s]) m[s] = x;
        }
    }
    ctx->max_product = ctx->fixed_wide ? 0 : m[0] * m[1];
    return 1;
}

int acs_mac_open(acs_mac_ctx *ctx, const acs_mac *mac)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->mac = mac;
    int status = check_mac(mac);
    if (status) return status;
    ctx->ta = operand_table(&mac->a, &ctx->ta_shared);
    ctx->tb = operand_table(&mac->b, &ctx->tb_shared);
    ctx->fast = ctx->ta && ctx->tb ? fast_path_of(ctx) : ACS_FAST_NONE;
    if (ctx->fast == ACS_FAST_FP32 || ctx->fast == ACS_FAST_EXACT64 || ctx->fast == ACS_FAST_BLOCK64) {
        ctx->fa = float_values(ctx->ta, mac->a.bits);
        ctx->fb = float_values(ctx->tb, mac->b.bits);
        if (!ctx->fa || !ctx->fb) ctx->fast = ACS_FAST_NONE;
    } else if (ctx->fast == ACS_FAST_INT_WRAP || ctx->fast == ACS_FAST_INT_SAT) {
        ctx->ia = int_values(ctx->ta, mac->a.bits);
        ctx->ib = int_values(ctx->tb, mac->b.bits);
        if (!ctx->ia || !ctx->ib) ctx->fast = ACS_FAST_NONE;
        int64_t ma = 0, mb = 0;
        for (uint64_t c = 0; ctx->ia && c < (1ULL << mac->a.bits); c++) ma = llabs(ctx->ia[c]) > ma ? llabs(ctx->ia[c]) : ma;
        for (uint64_t c = 0; ctx->ib && c < (1ULL << mac->b.bits); c++) mb = llabs(ctx->ib[c]) > mb ? llabs(ctx->ib[c]) : mb;
        ctx->max_product = ma * mb;   /* operands of at most 16 bits: below 2^32 */
    } else if (ctx->fast == ACS_FAST_FIXED && !fixed_values(ctx)) {
        free(ctx->ia); free(ctx->ib);
        ctx->ia = ctx->ib = NULL;
        ctx->fast = acs_fixround_open(ctx) ? ACS_FAST_FIXROUND : ACS_FAST_NONE;   /* products off the grid */
    }
    return ACS_OK;
}

void acs_mac_close(acs_mac_ctx *ctx)
{
    if (!ctx->ta_shared) free(ctx->ta);
    if (!ctx->tb_shared) free(ctx->tb);
    free(ctx->fa); free(ctx->fb);
    free(ctx->ia); free(ctx->ib);
    memset(ctx, 0, sizeof *ctx);
}

/* The fp32 fast path's chain: the state converts to a float and back exactly (it lies on the
 * fp32 grid). */
static void chain_fp32(const acs_mac_ctx *ctx, const void *a, int64_t ia, const void *b, int64_t ib,
                       int64_t len, acs_acc_state *s, int64_t *zeros)
{
    float acc = (float)acs_rounded_to_double(&s->v);
    int64_t z = 0;
    int ab = ctx->mac->a.bits, bb = ctx->mac->b.bits;
    for (int64_t j = 0; j < len; j++) {
        uint64_t ca = acs_load_code(a, ia + j, ab), cb = acs_load_code(b, ib + j, bb);
        z += ctx->ta[ca].cls == ACS_ZERO || ctx->tb[cb].cls == ACS_ZERO;
        float p = ctx->fa[ca] * ctx->fb[cb];
        acc = acc + p;
    }
    uint32_t u;
    memcpy(&u, &acc, sizeof u);
    int cls;
    acs_real x = acs_real_from_bits(u, 32, &cls);
    acs_rounded r = { cls, cls == ACS_NAN ? 0 : x.neg, 0, 0, 0 }; /* NaN: canonical, as the general path */
    if (cls == ACS_FINITE) r = acs_round(&acs_fp32_grid, x, ACS_RNE, ACS_OVF_INF, 0);
    s->v = r;
    *zeros += z;
}

static void chain_int_wrap(const acs_mac_ctx *ctx, const void *a, int64_t ia, const void *b, int64_t ib,
                           int64_t len, acs_acc_state *s, int64_t *zeros)
{
    int64_t sum = 0, z = 0;
    int ab = ctx->mac->a.bits, bb = ctx->mac->b.bits;
    for (int64_t j = 0; j < len; j++) {
        int64_t x = ctx->ia[acs_load_code(a, ia + j, ab)], y = ctx->ib[acs_load_code(b, ib + j, bb)];
        z += x == 0 || y == 0;
        sum += x * y;
    }
    s->reg = clamp_register(&ctx->mac->acc, s->reg + sum);
    *zeros += z;
}

/* IntAcc saturate: whether no partial sum of len more products after `start` can leave the
 * register, so that saturating after every step is the exact sum (the wrap path's). */
int acs_int_sat_exact(const acs_mac_ctx *ctx, acs_i128 start, int64_t len)
{
    if (ctx->fast != ACS_FAST_INT_SAT || len < 0 || len >= ((int64_t)1 << 40)) return 0;
    acs_i128 limit = ((acs_i128)1 << (ctx->mac->acc.grid.total_bits - 1)) - 1;
    return (start < 0 ? -start : start) + (acs_i128)len * ctx->max_product <= limit;
}

/* FixedAcc and the quire (ACS_FAST_FIXED) when the chain holds no NaN, inf or NaR and the
 * state is not NaR: every product is ia*ib << fixed_shift register lsbs, no rounding.  A
 * wrapping register (the quire too) adds modulo 2^128 and wraps once; a saturating one is
 * clamped after every step, exactly, while its products stay below 2^100 (no i128 overflow).
 * 0 (nothing changed) where it does not apply. */
static int chain_fixed(const acs_mac_ctx *ctx, const void *a, int64_t ia, const void *b, int64_t ib,
                       int64_t len, acs_acc_state *s, int64_t *zeros)
{
    const acs_acc *acc = &ctx->mac->acc;
    int ab = ctx->mac->a.bits, bb = ctx->mac->b.bits, sh = ctx->fixed_shift;
    int wrap = acc->overflow == ACS_OVF_WRAP;
    if (s->v.cls == ACS_NAN && acc->kind == ACS_ACC_QUIRE) return 0;
    if (!wrap && (ctx->fixed_wide || (ctx->max_product && sh + 64 - __builtin_clzll((uint64_t)ctx->max_product) > 100)))
        return 0;
    for (int64_t j = 0; j < len; j++)
        if (ctx->ta[acs_load_code(a, ia + j, ab)].cls >= ACS_INF || ctx->tb[acs_load_code(b, ib + j, bb)].cls >= ACS_INF)
            return 0;
    acs_u128 sum = (acs_u128)s->reg;
    int64_t z = 0;
    for (int64_t j = 0; j < len; j++) {
        uint64_t ca = acs_load_code(a, ia + j, ab), cb = acs_load_code(b, ib + j, bb);
        z += ctx->ta[ca].cls == ACS_ZERO || ctx->tb[cb].cls == ACS_ZERO;
        acs_u128 p = sh < 128 ? (acs_u128)((acs_i128)ctx->ia[ca] * ctx->ib[cb]) << sh : 0;   /* |ia*ib| < 2^124 */
        sum += p;
        if (!wrap) sum = (acs_u128)clamp_register(acc, (acs_i128)sum);
    }
    s->reg = acc->grid.total_bits < 128 ? clamp_register(acc, (acs_i128)sum) : (acs_i128)sum;
    *zeros += z;
    return 1;
}

/* Products a[ia + j] * b[ib + j], j = 0..len-1, into the accumulator in order (blocks of
 * `terms` for a BlockFMA, padded with +0).  Stochastic rounding at step s of this call draws
 * acs_rand32(seed, element, step0 + s). */
int acs_chain(const acs_mac_ctx *ctx, const void *a, int64_t ia, const void *b, int64_t ib,
              int64_t len, acs_acc_state *s, uint64_t seed, uint64_t element, uint64_t step0,
              int64_t *zero_macs)
{
    const acs_mac *mac = ctx->mac;
    const acs_acc *acc = &mac->acc;
    int n = acc->kind == ACS_ACC_BLOCK ? acc->terms : 1;
    int64_t zeros = 0;
    term block[64];
    if (ctx->fast == ACS_FAST_FP32 || (ctx->fast == ACS_FAST_INT_WRAP && len < (1 << 30))
        || acs_int_sat_exact(ctx, s->reg, len)) {
        (ctx->fast == ACS_FAST_FP32 ? chain_fp32 : chain_int_wrap)(ctx, a, ia, b, ib, len, s, &zeros);
        if (zero_macs) *zero_macs += zeros;
        return ACS_OK;
    }
    if (ctx->fast == ACS_FAST_FIXED && chain_fixed(ctx, a, ia, b, ib, len, s, &zeros)) {
        if (zero_macs) *zero_macs += zeros;
        return ACS_OK;
    }
    for (int64_t j0 = 0, step = 0; j0 < len; j0 += n, step++) {
        uint32_t rand = acc->rounding == ACS_SR ? acs_rand32(seed, element, step0 + (uint64_t)step) : 0;
        for (int t = 0; t < n; t++) {
            acs_operand x = { 0, 0, 0, ACS_ZERO, 0 }, y = x; /* padding: +0 * +0 */
            if (j0 + t < len) {
                x = operand(&mac->a, ctx->ta, a, ia + j0 + t);
                y = operand(&mac->b, ctx->tb, b, ib + j0 + t);
                zeros += x.cls == ACS_ZERO || y.cls == ACS_ZERO;
            }
            block[t] = product(&x, &y);
        }
        acs_i128 pk;
        switch (acc->kind) {
        case ACS_ACC_BLOCK: s->v = block_step(acc, s->v, block, n, rand); break;
        case ACS_ACC_FLOAT: s->v = float_step(acc, s->v, block[0], rand); break;
        case ACS_ACC_QUIRE: quire_add(acc, s, block[0]); break;
        case ACS_ACC_INT:
            pk = block[0].cls == ACS_FINITE ? (block[0].neg ? -(acs_i128)block[0].sig : (acs_i128)block[0].sig) : 0;
            s->reg = clamp_register(acc, s->reg + pk);
            break;
        default: {
            int status = fixed_product(acc, block[0], rand, &pk);
            if (status) return status;
            s->reg = clamp_register(acc, s->reg + pk);
        }
        }
    }
    if (zero_macs) *zero_macs += zeros;
    return ACS_OK;
}

/* An accumulator's value as an exact term. */
static term state_term(const acs_acc *acc, const acs_acc_state *s)
{
    term t = { s->v.cls, s->v.neg, s->v.q, 0, s->v.kept };
    if (acc->kind == ACS_ACC_QUIRE && s->v.cls == ACS_NAN) return t;
    if (acc->kind == ACS_ACC_INT || acc->kind == ACS_ACC_FIXED || acc->kind == ACS_ACC_QUIRE) {
        t.cls = s->reg ? ACS_FINITE : ACS_ZERO;
        t.neg = s->reg < 0;
        t.sig = s->reg < 0 ? (acs_u128)(-s->reg) : (acs_u128)s->reg;
        t.exp = -(int64_t)acc->grid.frac_bits;
    }
    return t;
}

/* into <- into + partial (a tile's sum joining the accumulator buffer), with into's rules:
 * a float buffer rounds the exact sum once; a register adds exactly (a fixed one after
 * rounding the partial onto its grid) and then wraps or saturates. */
int acs_acc_add(const acs_acc *into, acs_acc_state *s, const acs_acc *from, const acs_acc_state *partial,
                uint32_t rand)
{
    term p = state_term(from, partial);
    acs_i128 pk;
    switch (into->kind) {
    case ACS_ACC_FLOAT:
    case ACS_ACC_BLOCK:
        s->v = float_step(into, s->v, p, rand);
        return ACS_OK;
    case ACS_ACC_QUIRE:
        quire_add(into, s, p);
        return ACS_OK;
    case ACS_ACC_INT:
        if (p.cls == ACS_NAN) return ACS_ERR_NAN;
        if (p.cls == ACS_INF) return ACS_ERR_RANGE;
        pk = p.cls != ACS_FINITE ? 0 : p.exp >= 0 ? (acs_i128)(p.sig << p.exp) : (acs_i128)(p.sig >> -p.exp);
        s->reg = clamp_register(into, s->reg + (p.neg ? -pk : pk));
        return ACS_OK;
    default: {
        int status = fixed_product(into, p, rand, &pk);
        if (status) return status;
        s->reg = clamp_register(into, s->reg + pk);
        return ACS_OK;
    }
    }
}

void acs_acc_read(const acs_acc *acc, const acs_acc_state *s, double *out, int64_t *out_int)
{
    if (acc->kind == ACS_ACC_INT) {
        *out_int = (int64_t)s->reg;
    } else if (acc->kind == ACS_ACC_QUIRE) {
        /* rounded once, from the exact register, to the posit format */
        uint64_t code = 0;
        if (s->v.cls == ACS_NAN) {
            code = 1ULL << (acc->readout.bits - 1);
        } else if (s->reg) {
            acs_real x = { s->reg < 0, 0, -(int64_t)acc->grid.frac_bits,
                           s->reg < 0 ? (acs_u128)0 - (acs_u128)s->reg : (acs_u128)s->reg };
            code = acs_posit_code(&acc->readout, x, ACS_RNE);
        }
        acs_operand v = acs_decode_operand(&acc->readout, code);
        *out = v.cls == ACS_NAN ? NAN : v.cls == ACS_ZERO ? 0.0 : (v.neg ? -1.0 : 1.0) * ldexp((double)v.sig, v.exp);
    } else if (acc->kind == ACS_ACC_FIXED) {
        /* read out once, correctly rounded to float64 (exact when it fits 53 bits) */
        acs_grid f64 = { ACS_GRID_FLOAT, 52, -1022, 1023, (1ULL << 53) - 1, 1, 0, 0, 0 };
        acs_real x = { s->reg < 0, 0, -(int64_t)acc->grid.frac_bits,
                       s->reg < 0 ? (acs_u128)(-s->reg) : (acs_u128)s->reg };
        acs_rounded v = acs_round(&f64, x, ACS_RNE, ACS_OVF_INF, 0);
        *out = acs_rounded_to_double(&v);
    } else {
        *out = acs_rounded_to_double(&s->v);
    }
}

int acs_accumulate(const acs_mac *mac, const void *a, const void *b, int64_t rows, int64_t k,
                   const double *init, double *out, int64_t *out_int, uint64_t seed, int64_t element0)
{
    if (!mac || rows < 0 || k < 0 || (rows && k > INT64_MAX / rows) || (rows && (!init || (!out && !out_int))))
        return ACS_ERR_ARG;
    acs_mac_ctx ctx;
    int status = acs_mac_open(&ctx, mac);
    for (int64_t r = 0; r < rows && status == ACS_OK; r++) {
        acs_acc_state s = acs_acc_start(&mac->acc, init[r]);
        status = acs_chain(&ctx, a, r * k, b, r * k, k, &s, seed, (uint64_t)(element0 + r), 0, NULL);
        acs_acc_read(&mac->acc, &s, out ? out + r : NULL, out_int ? out_int + r : NULL);
    }
    acs_mac_close(&ctx);
    return status;
}
