/* blockscale.c: block-scaled dot products (OCP MX, VS-Quant).  Each K-block's partial sum
 * (a block of the array's usual accumulation) is multiplied exactly by the product of its two
 * block scales and joins a running output register, the MAC's scale accumulator, with that
 * register's one rounding per step (acs_acc_add).  No rounding code of its own: the scaled
 * partial is an exact product, and the join is accumulate.c's buffer add. */
#include <math.h>
#include <string.h>
#include "internal.h"

int64_t acs_join_state_size(void) { return (int64_t)sizeof(acs_acc_state); }

/* A float64's exact value with trailing zero bits stripped from its significand. */
static acs_real exact_double(double v, int *cls)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    acs_real x = acs_real_from_bits(u, 64, cls);
    if (*cls == ACS_FINITE) {
        int tz = __builtin_ctzll((uint64_t)x.sig);
        x.sig >>= tz;
        x.exp += tz;
    }
    return x;
}

static inline int bit_length(acs_u128 x) { return x ? 128 - acs_clz128(x) : 0; }

/* p * sa * sb as an accumulator state of kind FLOAT (its rounded value exact), or an error
 * when the exact product would not fit 127 bits (scales are powers of two or small integers). */
static int scaled_partial(acs_real p, int pcls, double sa, double sb, acs_acc_state *out)
{
    int acls, bcls;
    acs_real a = exact_double(sa, &acls), b = exact_double(sb, &bcls);
    memset(out, 0, sizeof *out);
    out->v.neg = p.neg ^ a.neg ^ b.neg;
    int any_nan = pcls == ACS_NAN || acls == ACS_NAN || bcls == ACS_NAN;
    int any_inf = pcls == ACS_INF || acls == ACS_INF || bcls == ACS_INF;
    int any_zero = pcls == ACS_ZERO || acls == ACS_ZERO || bcls == ACS_ZERO;
    if (any_nan || (any_inf && any_zero)) { out->v.cls = ACS_NAN; out->v.neg = 0; return ACS_OK; }
    if (any_inf) { out->v.cls = ACS_INF; return ACS_OK; }
    if (any_zero) { out->v.cls = ACS_ZERO; return ACS_OK; }
    if (bit_length(p.sig) + bit_length(a.sig) + bit_length(b.sig) > 127) return ACS_ERR_ARG;
    out->v.cls = ACS_FINITE;
    out->v.kept = p.sig * a.sig * b.sig;
    out->v.q = p.exp + a.exp + b.exp;
    return ACS_OK;
}

int acs_join_start(const acs_acc *scale_acc, void *state, int64_t count)
{
    if (!scale_acc || count < 0 || (count && !state) || acs_check_acc(scale_acc) != ACS_OK
        || (scale_acc->kind != ACS_ACC_FLOAT && scale_acc->kind != ACS_ACC_FIXED))
        return ACS_ERR_ARG;
    acs_acc_state s = acs_acc_start(scale_acc, 0.0);
    for (int64_t i = 0; i < count; i++) memcpy((char *)state + i * (int64_t)sizeof s, &s, sizeof s);
    return ACS_OK;
}

int acs_join_block(const acs_acc *scale_acc, void *state, const double *partial, const int64_t *partial_int,
                   int64_t m, int64_t n, const double *sa, int64_t sa_stride, const double *sb,
                   int64_t sb_stride, uint64_t seed, uint64_t step)
{
    if (!scale_acc || m < 0 || n < 0 || (m && n && (!state || (!partial && !partial_int) || !sa || !sb))
        || (n && m > INT64_MAX / n) || acs_check_acc(scale_acc) != ACS_OK
        || (scale_acc->kind != ACS_ACC_FLOAT && scale_acc->kind != ACS_ACC_FIXED))
        return ACS_ERR_ARG;
    acs_acc from;  /* the scaled partial is carried as an exact float accumulator value */
    memset(&from, 0, sizeof from);
    from.kind = ACS_ACC_FLOAT;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            int64_t e = i * n + j;
            acs_real p = { 0, 0, 0, 0 };
            int pcls;
            if (partial_int) {
                int64_t v = partial_int[e];
                pcls = v ? ACS_FINITE : ACS_ZERO;
                p.neg = v < 0;
                p.sig = v < 0 ? (acs_u128)(-(v + 1)) + 1 : (acs_u128)v;
            } else {
                p = exact_double(partial[e], &pcls);
            }
            acs_acc_state term, s;
            int status = scaled_partial(p, pcls, sa[i * sa_stride], sb[j * sb_stride], &term);
            if (status) return status;
            memcpy(&s, (char *)state + e * (int64_t)sizeof s, sizeof s);
            uint32_t rand = scale_acc->rounding == ACS_SR ? acs_rand32(seed, (uint64_t)e, step) : 0;
            status = acs_acc_add(scale_acc, &s, &from, &term, rand);
            if (status) return status;
            memcpy((char *)state + e * (int64_t)sizeof s, &s, sizeof s);
        }
    return ACS_OK;
}

int acs_join_read(const acs_acc *scale_acc, const void *state, int64_t count, double *out)
{
    if (!scale_acc || count < 0 || (count && (!state || !out)))
        return ACS_ERR_ARG;
    for (int64_t i = 0; i < count; i++) {
        acs_acc_state s;
        memcpy(&s, (const char *)state + i * (int64_t)sizeof s, sizeof s);
        acs_acc_read(scale_acc, &s, out + i, NULL);
    }
    return ACS_OK;
}
