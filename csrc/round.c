/* round.c: the one rounding routine.  Every conversion and every accumulator step in the
 * engine funnels an exact value into acs_round(), which puts it onto a float or fixed-point
 * grid in any rounding mode and applies the overflow policy (cf. Berkeley SoftFloat's
 * roundPack).  Format-specific packing into codes lives in formats.c. */
#include <math.h>
#include "internal.h"

static inline acs_u128 low_mask(int64_t bits) /* bits in 0..128 */
{
    return bits >= 128 ? ~(acs_u128)0 : (((acs_u128)1 << bits) - 1);
}

/* Modes that move an overflowing magnitude to infinity rather than to the largest finite value. */
static inline int rounds_away(int rounding, int neg)
{
    switch (rounding) {
    case ACS_RTZ: case ACS_RTO: return 0;
    case ACS_RUP: return !neg;
    case ACS_RDN: return neg;
    default: return 1; /* rne, rna, sr */
    }
}

static acs_rounded largest_finite(const acs_grid *g, int neg)
{
    acs_rounded r = { ACS_FINITE, neg, 0, 0, 0 };
    if (g->kind == ACS_GRID_FLOAT) {
        r.kept = g->max_sig;
        r.q = (int64_t)g->emax - g->man_bits;
    } else {
        int payload = g->is_signed ? g->total_bits - 1 : g->total_bits;
        r.q = -(int64_t)g->frac_bits;
        if (neg) r.kept = g->is_signed ? (acs_u128)1 << payload : 0;
        else r.kept = ((acs_u128)1 << payload) - 1;
        if (r.kept == 0) r.cls = ACS_ZERO;
    }
    return r;
}

/* Wrap a signed integer magnitude into a total_bits-wide register (two's complement). */
static acs_rounded wrap_fixed(const acs_grid *g, int neg, acs_u128 mag)
{
    acs_rounded r = { ACS_FINITE, 0, ACS_OVERFLOWED, -(int64_t)g->frac_bits, 0 };
    acs_u128 mask = low_mask(g->total_bits);
    acs_u128 k = (neg ? (acs_u128)0 - mag : mag) & mask;
    if (g->is_signed && (k >> (g->total_bits - 1)) & 1) {
        r.neg = 1;
        r.kept = ((acs_u128)0 - k) & mask;
    } else {
        r.kept = k;
    }
    if (r.kept == 0) r.cls = ACS_ZERO;
    return r;
}

/* mag: the rounded magnitude modulo 2^128, for wrapping fixed grids. */
static acs_rounded overflowed(const acs_grid *g, int neg, int rounding, int overflow, acs_u128 mag)
{
    acs_rounded r;
    switch (overflow) {
    case ACS_OVF_WRAP:
        if (g->kind == ACS_GRID_FIXED) return wrap_fixed(g, neg, mag);
        r = largest_finite(g, neg); /* floats do not wrap */
        break;
    case ACS_OVF_SATURATE:
        r = largest_finite(g, neg);
        break;
    case ACS_OVF_ERROR:
        r = largest_finite(g, neg);
        r.flags |= ACS_OUT_OF_RANGE;
        break;
    default: /* INF, NAN */
        if (rounds_away(rounding, neg)) {
            acs_rounded s = { overflow == ACS_OVF_INF ? ACS_INF : ACS_NAN, neg, 0, 0, 0 };
            r = s;
        } else {
            r = largest_finite(g, neg);
        }
    }
    r.flags |= ACS_OVERFLOWED | ACS_INEXACT;
    return r;
}

/* An infinite input: exact where the grid has infinities, else the overflow policy. */
acs_rounded acs_round_infinity(const acs_grid *g, int neg, int overflow)
{
    acs_rounded r = { ACS_INF, neg, 0, 0, 0 };
    if (g->kind == ACS_GRID_FLOAT && overflow == ACS_OVF_INF) return r;
    if (g->kind == ACS_GRID_FLOAT && overflow == ACS_OVF_NAN) { r.cls = ACS_NAN; return r; }
    r = largest_finite(g, neg);
    if (overflow != ACS_OVF_SATURATE) r.flags |= ACS_OUT_OF_RANGE;
    return r;
}

acs_rounded acs_round(const acs_grid *g, acs_real x, int rounding, int overflow, uint32_t rand)
{
    acs_rounded r = { ACS_ZERO, x.neg, 0, 0, 0 };
    if (x.sig == 0) {
        if (!x.sticky) return r;
        x.sig = 1;              /* a value known only to be tiny and nonzero */
        x.exp = INT64_MIN / 4;
    }
    /* Normalise: top bit of sig at bit 127, so |x| lies in [2^top, 2^(top+1)). */
    int lz = acs_clz128(x.sig);
    x.sig <<= lz;
    x.exp -= lz;
    int64_t top = x.exp + 127;

    /* q: exponent of the grid's unit (ulp) where x lies. */
    int64_t q;
    if (g->kind == ACS_GRID_FLOAT)
        q = (g->subnormals && top < g->emin ? g->emin : top) - g->man_bits;
    else
        q = -(int64_t)g->frac_bits;
    int64_t shift = q - x.exp; /* bits of sig below the unit */

    acs_u128 kept;
    int half_cmp;   /* discarded part compared with half a unit: -1, 0, +1 */
    int inexact;
    uint32_t frac32 = 0; /* first 32 bits of the discarded fraction, and whether more follow */
    int frac_rest = 0;
    if (shift <= 0) {
        /* Already on the grid; only fixed grids can get here, and any left shift overflows. */
        if (shift < 0)
            return overflowed(g, x.neg, rounding, overflow, -shift >= 128 ? 0 : x.sig << -shift);
        kept = x.sig;
        half_cmp = -1;
        inexact = x.sticky;
        frac_rest = x.sticky;
    } else if (shift <= 128) {
        acs_u128 rem = x.sig & low_mask(shift);
        acs_u128 half = (acs_u128)1 << (shift - 1);
        kept = shift == 128 ? 0 : x.sig >> shift;
        half_cmp = rem > half ? 1 : rem < half ? -1 : (x.sticky ? 1 : 0);
        inexact = rem != 0 || x.sticky;
        if (rounding == ACS_SR) {
            if (shift >= 32) {
                frac32 = (uint32_t)(rem >> (shift - 32));
                frac_rest = (rem & low_mask(shift - 32)) != 0 || x.sticky;
            } else {
                frac32 = (uint32_t)(rem << (32 - shift));
                frac_rest = x.sticky;
            }
        }
    } else {
        /* Everything lies below half a unit. */
        kept = 0;
        half_cmp = -1;
        inexact = 1;
        if (rounding == ACS_SR) {
            int64_t s = shift - 32;
            frac32 = s < 128 ? (uint32_t)(x.sig >> s) : 0;
            frac_rest = s >= 128 || (x.sig & low_mask(s)) != 0 || x.sticky;
        }
    }

    int up = 0;
    switch (rounding) {
    case ACS_RNE: up = half_cmp > 0 || (half_cmp == 0 && (kept & 1)); break;
    case ACS_RNA: up = half_cmp >= 0; break;
    case ACS_RTZ: break;
    case ACS_RUP: up = inexact && !x.neg; break;
    case ACS_RDN: up = inexact && x.neg; break;
    case ACS_RTO: if (inexact) kept |= 1; break;
    case ACS_SR:  up = rand < frac32 || (rand == frac32 && frac_rest); break;
    }
    kept += up;
    r.flags = inexact ? ACS_INEXACT : 0;

    if (g->kind == ACS_GRID_FLOAT) {
        if (kept >> (g->man_bits + 1)) { /* carried into the next binade */
            kept >>= 1;
            q += 1;
        }
        if (kept == 0) return r;
        int64_t binade = kept >> g->man_bits ? q + g->man_bits : g->emin;
        if (!g->subnormals && binade < g->emin) return r;
        if (binade > g->emax || (binade == g->emax && kept > g->max_sig))
            return overflowed(g, x.neg, rounding, overflow, 0);
    } else {
        if (kept == 0) return r;
        int payload = g->is_signed ? g->total_bits - 1 : g->total_bits;
        acs_u128 limit = x.neg ? (g->is_signed ? (acs_u128)1 << payload : 0)
                               : ((acs_u128)1 << payload) - 1;
        if (kept > limit) return overflowed(g, x.neg, rounding, overflow, kept);
    }
    r.cls = ACS_FINITE;
    r.kept = kept;
    r.q = q;
    return r;
}

double acs_rounded_to_double(const acs_rounded *r)
{
    double v;
    switch (r->cls) {
    case ACS_ZERO: v = 0.0; break;
    case ACS_INF: v = INFINITY; break;
    case ACS_NAN: v = NAN; break;
    default: {
        /* kept may exceed 2^64 only on wide fixed grids; split so the conversion is exact
         * whenever the value fits in 53 bits. */
        uint64_t hi = (uint64_t)(r->kept >> 64), lo = (uint64_t)r->kept;
        v = ldexp((double)hi, (int)r->q + 64) + ldexp((double)lo, (int)r->q);
    }
    }
    return r->neg ? -v : v;
}

/* The binary32 grid (fp32 accumulators, the epilogue). */
const acs_grid acs_fp32_grid = { ACS_GRID_FLOAT, 23, -126, 127, (1ULL << 24) - 1, 1, 0, 0, 0 };

/* Decompose an IEEE binary32 (in_bits 32) or binary64 bit pattern exactly. */
acs_real acs_real_from_bits(uint64_t u, int in_bits, int *cls)
{
    int man = in_bits == 32 ? 23 : 52;
    int64_t emask = in_bits == 32 ? 0xff : 0x7ff, bias = in_bits == 32 ? 127 : 1023;
    acs_real x = { (int)(u >> (in_bits - 1)) & 1, 0, 0, 0 };
    int64_t e = (int64_t)(u >> man) & emask;
    uint64_t m = u & ((1ULL << man) - 1);
    if (e == emask) { *cls = m ? ACS_NAN : ACS_INF; return x; }
    *cls = (e || m) ? ACS_FINITE : ACS_ZERO;
    x.sig = e ? m | (1ULL << man) : m;
    x.exp = (e ? e : 1) - bias - man;
    return x;
}

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Counter-based: the value depends only on (seed, index, step), never on call order,
 * memory layout or thread count.  Three rounds of the splitmix64 finaliser. */
uint32_t acs_rand32(uint64_t seed, uint64_t index, uint64_t step)
{
    uint64_t z = mix64(seed + 0x9E3779B97F4A7C15ULL);
    z = mix64(z ^ (index * 0xD1B54A32D192ED03ULL));
    z = mix64(z + step * 0xAEF17502108EF2D9ULL);
    return (uint32_t)(z >> 32);
}

/* Bit pattern of 2^e in IEEE binary32/binary64, clamped to [+0, +inf]. */
uint64_t acs_pow2_pattern(int in_bits, int64_t e)
{
    int man = in_bits == 32 ? 23 : 52;
    int64_t bias = in_bits == 32 ? 127 : 1023, field_inf = in_bits == 32 ? 0xff : 0x7ff;
    int64_t field = e + bias;
    if (field >= field_inf) return (uint64_t)field_inf << man;
    if (field >= 1) return (uint64_t)field << man;
    int64_t j = e - (1 - bias - man); /* a subnormal pattern: 2^j units of the smallest one */
    return j < 0 ? 0 : 1ULL << j;
}
