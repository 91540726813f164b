/* formats.c: codes <-> values for every number format.  Values are rounded by acs_round()
 * (round.c); this file only knows how each format lays out its bits. */
#include <math.h>
#include "internal.h"

static inline uint64_t mask64(int bits) { return bits >= 64 ? ~0ULL : (1ULL << bits) - 1; }

static inline uint64_t sign_bit(const acs_format *f) { return 1ULL << (f->bits - 1); }

static inline uint64_t exp_field_ones(const acs_format *f)
{
    return mask64(f->exp_bits) << f->grid.man_bits;
}

static uint64_t nan_code(const acs_format *f, int neg)
{
    int m = f->grid.man_bits;
    uint64_t sign = neg ? sign_bit(f) : 0;
    switch (f->nan_style) {
    case ACS_NAN_POW2: return mask64(f->bits);
    case ACS_NAN_FNUZ: return sign_bit(f);                 /* the would-be negative zero */
    case ACS_NAN_FN: return sign | exp_field_ones(f) | mask64(m);
    default: return sign | exp_field_ones(f) | (1ULL << (m - 1)); /* canonical quiet NaN */
    }
}

static uint64_t pack_code(const acs_format *f, const acs_rounded *r)
{
    if (f->grid.kind == ACS_GRID_FIXED) {
        uint64_t k = r->cls == ACS_FINITE ? (uint64_t)r->kept : 0;
        return (r->neg ? (uint64_t)0 - k : k) & mask64(f->bits);
    }
    int m = f->grid.man_bits;
    uint64_t sign = r->neg && f->nan_style != ACS_NAN_POW2 ? sign_bit(f) : 0;
    switch (r->cls) {
    case ACS_ZERO: return f->nan_style == ACS_NAN_FNUZ ? 0 : sign;
    case ACS_INF: return sign | exp_field_ones(f);
    case ACS_NAN: return nan_code(f, r->neg);
    default:
        if (r->kept >> m) {
            uint64_t e = (uint64_t)(r->q + m + f->bias);
            return sign | (e << m) | ((uint64_t)r->kept & mask64(m));
        }
        return sign | (uint64_t)r->kept; /* subnormal: exponent field 0 */
    }
}

acs_operand acs_decode_operand(const acs_format *f, uint64_t c)
{
    acs_operand v = { 0, 0, 0, ACS_ZERO, 0 };
    if (f->grid.kind == ACS_GRID_FIXED) {
        uint64_t k = c;
        v.neg = f->grid.is_signed && (c & sign_bit(f)) && f->bits < 64;
        if (v.neg) k = ((uint64_t)0 - (c | ~mask64(f->bits)));
        v.sig = k;
        v.exp = -f->grid.frac_bits;
        v.bexp = k ? v.exp + 63 - __builtin_clzll(k) : 0;
        v.cls = k ? ACS_FINITE : ACS_ZERO;
        return v;
    }
    if (f->nan_style == ACS_NAN_POW2) {
        v.cls = c == mask64(f->bits) ? ACS_NAN : ACS_FINITE;
        v.sig = 1;
        v.exp = v.bexp = (int32_t)c - f->bias;
        return v;
    }
    int m = f->grid.man_bits;
    uint64_t e = (c >> m) & mask64(f->exp_bits);
    uint64_t mant = c & mask64(m);
    v.neg = (int16_t)((c >> (f->bits - 1)) & 1);
    if ((f->nan_style == ACS_NAN_FNUZ && c == sign_bit(f))
        || (f->nan_style == ACS_NAN_IEEE && e == mask64(f->exp_bits) && (mant || !f->has_inf))
        || (f->nan_style == ACS_NAN_FN && e == mask64(f->exp_bits) && mant == mask64(m))) {
        v.cls = ACS_NAN;
    } else if (f->nan_style == ACS_NAN_IEEE && e == mask64(f->exp_bits)) {
        v.cls = ACS_INF;
    } else if (e == 0) {
        /* subnormal (or zero); a format without subnormals reads them as zero */
        v.sig = f->grid.subnormals ? mant : 0;
        v.exp = f->grid.emin - m;
        v.cls = v.sig ? ACS_FINITE : ACS_ZERO;
    } else {
        v.sig = mant | (1ULL << m);
        v.exp = (int32_t)e - f->bias - m;
        v.cls = ACS_FINITE;
    }
    v.bexp = v.exp + m; /* normal: floor(log2|x|); subnormal: emin */
    return v;
}

static double decode_one(const acs_format *f, uint64_t c)
{
    acs_operand v = acs_decode_operand(f, c);
    double x = v.cls == ACS_NAN ? NAN : v.cls == ACS_INF ? INFINITY : ldexp((double)v.sig, v.exp);
    return v.neg ? -x : x;
}

static inline void store_code(void *codes, int64_t i, int bits, uint64_t c)
{
    if (bits <= 8) ((uint8_t *)codes)[i] = (uint8_t)c;
    else if (bits <= 16) ((uint16_t *)codes)[i] = (uint16_t)c;
    else if (bits <= 32) ((uint32_t *)codes)[i] = (uint32_t)c;
    else ((uint64_t *)codes)[i] = c;
}

uint64_t acs_load_code(const void *codes, int64_t i, int bits)
{
    if (bits <= 8) return ((const uint8_t *)codes)[i];
    if (bits <= 16) return ((const uint16_t *)codes)[i];
    if (bits <= 32) return ((const uint32_t *)codes)[i];
    return ((const uint64_t *)codes)[i];
}

static int check_encode_args(const acs_format *f, int rounding, int overflow)
{
    if (!f || f->bits < 1 || f->bits > 64 || rounding < ACS_RNE || rounding > ACS_SR) return ACS_ERR_ARG;
    if (f->grid.kind == ACS_GRID_FLOAT) {
        if (overflow == ACS_OVF_WRAP || (overflow == ACS_OVF_INF && !f->has_inf)) return ACS_ERR_ARG;
        if (overflow == ACS_OVF_NAN && f->nan_style == ACS_NAN_NONE) return ACS_ERR_ARG;
        if (f->grid.man_bits < 0 || f->grid.man_bits > 62 || f->exp_bits < 1) return ACS_ERR_ARG;
        if (f->nan_style == ACS_NAN_POW2 && (f->grid.man_bits || f->grid.subnormals || f->bits != f->exp_bits))
            return ACS_ERR_ARG;
    } else if (overflow != ACS_OVF_SATURATE && overflow != ACS_OVF_ERROR && overflow != ACS_OVF_WRAP) {
        return ACS_ERR_ARG;
    }
    return ACS_OK;
}

/* Round one IEEE bit pattern (binary32 or binary64) onto the format.  Bit 31 of the result
 * marks a value the overflow policy refuses; *status is set on NaN into a fixed format. */
#define ACS_CODE_ERROR 0x80000000u
static inline uint64_t encode_one(const acs_format *f, uint64_t bits, int in_bits, int rounding,
                                  int overflow, uint64_t seed, int64_t index, int *status)
{
    int cls;
    acs_real v = acs_real_from_bits(bits, in_bits, &cls);
    acs_rounded r = { cls, v.neg, 0, 0, 0 };
    if (f->nan_style == ACS_NAN_POW2 && (v.neg || cls == ACS_ZERO))
        cls = r.cls = ACS_NAN;  /* no zero, no sign: as ml_dtypes' float8_e8m0fnu */
    switch (cls) {
    case ACS_NAN:
        if (f->grid.kind == ACS_GRID_FIXED || f->nan_style == ACS_NAN_NONE) *status = ACS_ERR_NAN;
        break;
    case ACS_INF:
        r = acs_round_infinity(&f->grid, v.neg, overflow);
        break;
    case ACS_FINITE:
        r = acs_round(&f->grid, v, rounding, overflow,
                      rounding == ACS_SR ? acs_rand32(seed, (uint64_t)index, 0) : 0);
        if (r.cls == ACS_ZERO && f->nan_style == ACS_NAN_POW2) { /* no zero: the smallest value */
            r.cls = ACS_FINITE;
            r.kept = 1;
            r.q = f->grid.emin;
        }
        break;
    }
    if (r.flags & ACS_OUT_OF_RANGE) *status = ACS_ERR_RANGE;
    return pack_code(f, &r);
}

/* ---- Encode tables ------------------------------------------------------------------
 * For the monotone deterministic modes, the code of |x| is a step function of x's bit
 * pattern.  Cut the patterns into buckets one target unit (ulp) wide, aligned to binades:
 * target values then sit at bucket starts and the only step in a bucket is at a value, a
 * midpoint, or one pattern after either.  Below lo_pat every nonzero input gives one code,
 * from hi_pat on every input overflows, so a table covers [lo_pat, hi_pat) plus two
 * sentinels; each entry is found by calling encode_one, so the table is a memo of
 * acs_round and not a second rounding rule. */
typedef struct {
    int shift;          /* bits of a pattern below its bucket index */
    uint64_t lo_pat;    /* first pattern of the tabulated range */
    uint64_t hi_pat;    /* first pattern past it */
    uint64_t inf_pat;   /* patterns from here on are inf/NaN: always the direct path */
    uint64_t ilo;       /* bucket index of lo_pat */
    int64_t nb;         /* buckets in [lo_pat, hi_pat); each sign has nb + 2 entries */
} table_geometry;

static int table_geometry_of(const acs_format *f, int in_bits, int rounding, table_geometry *t)
{
    if ((in_bits != 32 && in_bits != 64) || f->bits > 16) return 0;
    if (rounding == ACS_SR || rounding == ACS_RTO || rounding < ACS_RNE || rounding > ACS_SR) return 0;
    int man = in_bits == 32 ? 23 : 52;
    int64_t in_emin = in_bits == 32 ? -126 : -1022;
    int64_t k, e_lo, e_hi; /* k: index bits below the exponent, so a bucket is <= one unit */
    if (f->grid.kind == ACS_GRID_FLOAT) {
        if (f->grid.emin < in_emin) return 0; /* input subnormal buckets would be too wide */
        k = f->grid.man_bits;
        e_lo = (int64_t)f->grid.emin - k - 2;
        e_hi = (int64_t)f->grid.emax + 2;
    } else {
        e_hi = (int64_t)f->grid.total_bits - f->grid.is_signed + 1 - f->grid.frac_bits;
        e_lo = -(int64_t)f->grid.frac_bits - 2;
        k = e_hi - 1 + f->grid.frac_bits;
    }
    if (k < 0 || k > man) return 0;
    t->shift = (int)(man - k);
    t->inf_pat = acs_pow2_pattern(in_bits, 1 << 20);
    t->lo_pat = acs_pow2_pattern(in_bits, e_lo);
    if (t->lo_pat == 0) t->lo_pat = 1;
    t->hi_pat = acs_pow2_pattern(in_bits, e_hi);
    if (t->hi_pat <= t->lo_pat) return 0;
    t->ilo = t->lo_pat >> t->shift;
    t->nb = (int64_t)(((t->hi_pat - 1) >> t->shift) - t->ilo + 1);
    return 2 * (t->nb + 2) <= (1 << 21);
}

static uint32_t memo_code(const acs_format *f, int in_bits, uint64_t pattern, int neg,
                          int rounding, int overflow)
{
    int status = ACS_OK;
    uint64_t bits = pattern | ((uint64_t)neg << (in_bits - 1));
    uint64_t c = encode_one(f, bits, in_bits, rounding, overflow, 0, 0, &status);
    return (uint32_t)c | (status ? ACS_CODE_ERROR : 0);
}

int64_t acs_encode_table_size(const acs_format *f, int in_bits, int rounding)
{
    table_geometry t;
    return f && table_geometry_of(f, in_bits, rounding, &t) ? 2 * (t.nb + 2) : 0;
}

int acs_encode_table_build(const acs_format *f, int in_bits, int rounding, int overflow,
                           acs_encode_entry *table, int64_t n_entries)
{
    table_geometry t;
    int status = check_encode_args(f, rounding, overflow);
    if (status) return status;
    if (!table_geometry_of(f, in_bits, rounding, &t) || n_entries != 2 * (t.nb + 2)) return ACS_ERR_ARG;
    uint64_t width = 1ULL << t.shift;
    for (int neg = 0; neg < 2; neg++) {
        acs_encode_entry *e = table + neg * (t.nb + 2);
        /* sentinel below: zero, then one code for every tiny nonzero input */
        e[0].thr = 1;
        e[0].lo = memo_code(f, in_bits, 0, neg, rounding, overflow);
        e[0].hi = memo_code(f, in_bits, t.lo_pat - 1, neg, rounding, overflow);
        /* sentinel above: everything overflows alike */
        uint64_t top = t.hi_pat < t.inf_pat ? t.hi_pat : t.inf_pat - 1;
        e[t.nb + 1].thr = 0;
        e[t.nb + 1].lo = e[t.nb + 1].hi = memo_code(f, in_bits, top, neg, rounding, overflow);
        for (int64_t j = 0; j < t.nb; j++) {
            uint64_t start = (t.ilo + (uint64_t)j) << t.shift;
            uint64_t p0 = start > t.lo_pat ? start : t.lo_pat;
            uint64_t p1 = (start + width < t.hi_pat ? start + width : t.hi_pat) - 1;
            uint32_t lo = memo_code(f, in_bits, p0, neg, rounding, overflow);
            uint32_t hi = memo_code(f, in_bits, p1, neg, rounding, overflow);
            uint64_t first_hi = p0; /* the bucket's one step: first pattern giving hi */
            if (lo != hi) {
                uint64_t a = p0, b = p1; /* code(a) == lo, code(b) == hi */
                while (b - a > 1) {
                    uint64_t mid = a + (b - a) / 2;
                    if (memo_code(f, in_bits, mid, neg, rounding, overflow) == hi) b = mid; else a = mid;
                }
                first_hi = b;
            }
            e[j + 1].thr = first_hi - start;
            e[j + 1].lo = lo;
            e[j + 1].hi = hi;
        }
    }
    return ACS_OK;
}

static inline uint32_t table_code(const table_geometry *t, const acs_encode_entry *table,
                                  uint64_t a, int neg)
{
    int64_t idx = t->nb + 1;
    uint64_t r = 0;
    if (a < t->lo_pat) { idx = 0; r = a; }
    else if (a < t->hi_pat) { idx = (int64_t)((a >> t->shift) - t->ilo) + 1; r = a & ((1ULL << t->shift) - 1); }
    const acs_encode_entry *e = &table[idx + (neg ? t->nb + 2 : 0)];
    return r >= e->thr ? e->hi : e->lo;
}

static int encode_loop(const acs_format *f, const void *x, int in_bits, int64_t n, void *codes,
                       int rounding, int overflow, uint64_t seed, int64_t index0,
                       const acs_encode_entry *table, int64_t *bad_index)
{
    int status = check_encode_args(f, rounding, overflow);
    table_geometry t;
    if (status) return status;
    if (n < 0 || (n && (!x || !codes || !bad_index))) return ACS_ERR_ARG;
    if (table && !table_geometry_of(f, in_bits, rounding, &t)) return ACS_ERR_ARG;
    uint64_t abs_mask = in_bits == 32 ? 0x7fffffffULL : 0x7fffffffffffffffULL;
    for (int64_t i = 0; i < n; i++) {
        uint64_t u = in_bits == 32 ? ((const uint32_t *)x)[i] : ((const uint64_t *)x)[i];
        uint64_t c;
        if (table && (u & abs_mask) < t.inf_pat) {
            uint32_t tc = table_code(&t, table, u & abs_mask, (int)(u >> (in_bits - 1)));
            if (tc & ACS_CODE_ERROR) status = ACS_ERR_RANGE;
            c = tc;
        } else {
            c = encode_one(f, u, in_bits, rounding, overflow, seed, index0 + i, &status);
        }
        if (status) { *bad_index = i; return status; }
        store_code(codes, i, f->bits, c);
    }
    return ACS_OK;
}

int acs_encode_f64(const acs_format *f, const double *x, int64_t n, void *codes,
                   int rounding, int overflow, uint64_t seed, int64_t index0,
                   const acs_encode_entry *table, int64_t *bad_index)
{
    return encode_loop(f, x, 64, n, codes, rounding, overflow, seed, index0, table, bad_index);
}

int acs_encode_f32(const acs_format *f, const float *x, int64_t n, void *codes,
                   int rounding, int overflow, uint64_t seed, int64_t index0,
                   const acs_encode_entry *table, int64_t *bad_index)
{
    return encode_loop(f, x, 32, n, codes, rounding, overflow, seed, index0, table, bad_index);
}

void acs_decode(const acs_format *f, const void *codes, int64_t n, double *out)
{
    if (!f || n <= 0 || !codes || !out || f->bits < 1 || f->bits > 64) return;
    if (f->bits <= 8 && n > 256) { /* small formats: decode each code once */
        double table[256];
        for (uint64_t c = 0; c < (1ULL << f->bits); c++) table[c] = decode_one(f, c);
        const uint8_t *c8 = (const uint8_t *)codes;
        for (int64_t i = 0; i < n; i++) out[i] = table[c8[i] & mask64(f->bits)];
        return;
    }
    for (int64_t i = 0; i < n; i++) out[i] = decode_one(f, acs_load_code(codes, i, f->bits));
}
