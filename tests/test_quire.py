"""The quire: posit8 dot products bit for bit against SoftPosit's quire8 (q8_fdp_add, then
q8_to_p8), posit8es2 ones against the exact Fraction sum rounded by the standard's rule
(test_posit.round_posit), in accumulate and on the array in every dataflow; its energy."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import softposit as sp

import accel_sim as acs
from accel_sim.mac import MAC, Quire

from conftest import assert_codes_equal, assert_values_equal, fmt
from test_posit import posit_value, round_posit

NAR = 0x80


def real_codes(rng, name, shape):
    c = fmt(name).all_codes()
    return rng.choice(c[c != NAR], shape).astype(np.uint8)


def softposit_quire8(a, b):
    q = sp.q8Clr()
    for x, y in zip(a, b):
        px, py = sp.posit8_t(), sp.posit8_t()
        px.v, py.v = int(x), int(y)
        q = sp.q8_fdp_add(q, px, py)
    return sp.q8_to_p8(q).v


def exact_dot_code(a, b, es):
    s = sum((posit_value(int(x), 8, es) * posit_value(int(y), 8, es) for x, y in zip(a, b)), Fraction(0))
    return 0 if s == 0 else round_posit(s, 8, es, "rne")


def test_widths_and_names():
    q, q2 = Quire(), Quire("posit8es2")
    assert (q.bits, q.frac_bits, q.max_terms, q.name) == (56, 12, 2**31 - 1, "quire")
    assert (q2.bits, q2.frac_bits, q2.int_bits) == (128, 48, 80)  # the standard's 16n bits
    assert acs.mac.get_acc("quire") == q and q2.name == "quire(posit8es2,30)"
    assert Quire(carry_bits=10).bits == 36


def test_posit8_dot_products_match_softposit_quire8(rng):
    mac = MAC("posit8", "posit8", "quire")
    f = fmt("posit8")
    lengths = list(range(1, 60)) + [100, 255, 256, 500, 999, 1000]
    for k in lengths:
        a, b = real_codes(rng, "posit8", k), real_codes(rng, "posit8", k)
        exact = sum(Fraction(float(x)) * Fraction(float(y)) for x, y in zip(f.decode(a), f.decode(b)))
        assert abs(exact) < 2**19  # inside SoftPosit's 32-bit quire8, so it is exact too
        got = f.encode(acs.accumulate(a, b, mac))
        assert int(got) == softposit_quire8(a, b), k


def test_posit8_batch_and_cancellation(rng):
    """Many chains at once; and sums that cancel to zero or to tiny values (no double rounding)."""
    mac = MAC("posit8", "posit8", "quire")
    f = fmt("posit8")
    a, b = real_codes(rng, "posit8", (200, 40)), real_codes(rng, "posit8", (200, 40))
    b[:50, 20:] = b[:50, :20]
    a[:50, 20:] = (256 - a[:50, :20].astype(np.int64)) % 256  # -a: the second half cancels the first
    got = f.encode(acs.accumulate(a, b, mac))
    assert_codes_equal(got, [softposit_quire8(a[r], b[r]) for r in range(200)])
    assert np.all(got[:50] == 0)


def test_posit8es2_dot_products_are_exact_sums_rounded_once(rng):
    q = Quire("posit8es2")
    mac = MAC("posit8es2", "posit8es2", q)
    f = fmt("posit8es2")
    for k in list(range(1, 40)) + [300, 1000]:
        a, b = real_codes(rng, "posit8es2", k), real_codes(rng, "posit8es2", k)
        got = f.encode(acs.accumulate(a, b, mac))
        assert int(got) == exact_dot_code(a, b, 2), k


def test_posit8es2_extreme_products_stay_exact():
    """maxpos^2 + minpos^2 - maxpos^2 = minpos^2, which rounds to minpos: the register holds
    both ends at once (a float64 sum would lose the tiny term)."""
    mac = MAC("posit8es2", "posit8es2", Quire("posit8es2"))
    a = np.array([0x7F, 0x01, 0x81], np.uint8)
    b = np.array([0x7F, 0x01, 0x7F], np.uint8)
    assert acs.accumulate(a, b, mac) == 2.0**-24
    assert acs.accumulate(np.array([0x01, 0x01], np.uint8), np.array([0x01, 0x01], np.uint8), mac) == 2.0**-24


def test_nar_operand_gives_nar():
    for name, q in (("posit8", "quire"), ("posit8es2", Quire("posit8es2"))):
        mac = MAC(name, name, q)
        out = acs.accumulate(np.array([[0x40, NAR, 0x40], [0x40, 0x40, 0x40]], np.uint8),
                             np.array([0x40, 0x40, 0x40], np.uint8), mac)
        assert math.isnan(out[0]) and out[1] == 3.0
        three = sp.convertDoubleToP8(3.0).v if name == "posit8" else sp.convertDoubleToPX2(3.0, 8).v >> 24
        assert fmt(name).encode(out).tolist() == [NAR, three]


def test_small_quire_wraps(rng):
    """A quire with 0 carry bits holds one maxpos^2 product; two of them wrap (two's complement)."""
    q = Quire("posit8", carry_bits=0)
    mac = MAC("posit8", "posit8", q)
    assert q.max_terms == 1
    one = acs.accumulate(np.array([0x7F], np.uint8), np.array([0x7F], np.uint8), mac)
    two = acs.accumulate(np.array([0x7F, 0x7F], np.uint8), np.array([0x7F, 0x7F], np.uint8), mac)
    assert one == 64.0  # 4096 rounds to maxpos
    assert two == -64.0  # 2 * 2^24 units = 2^25 wraps to -2^25 in a 26-bit register: -2^13 -> -maxpos


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("name", ["posit8", "posit8es2"])
def test_array_gemm_with_quire(name, dataflow, rng):
    """Tile sums join the buffer quire exactly: every output is the whole dot product rounded once."""
    q = Quire(name)
    mac = MAC(name, name, q)
    A, B = real_codes(rng, name, (6, 45)), real_codes(rng, name, (45, 5))
    res = acs.Array(4, 3, dataflow=dataflow, mac=mac).gemm(acs.QTensor(A, name), acs.QTensor(B, name))
    got = fmt(name).encode(res.acc)
    if name == "posit8":
        want = [[softposit_quire8(A[i], B[:, j]) for j in range(5)] for i in range(6)]
    else:
        want = [[exact_dot_code(A[i], B[:, j], 2) for j in range(5)] for i in range(6)]
    assert_codes_equal(got, want)
    assert_values_equal(res.acc, fmt(name).decode(np.array(want)))


def test_quire_energy(rng):
    A, B = real_codes(rng, "posit8", (8, 32)), real_codes(rng, "posit8", (32, 8))
    table = acs.energy.EnergyTable.default()
    for dataflow in ("os", "ws"):
        res = acs.Array(4, 4, dataflow=dataflow, mac=MAC("posit8", "posit8", "quire")).gemm(
            acs.QTensor(A, "posit8"), acs.QTensor(B, "posit8"))
        assert np.isfinite(res.energy_pj) and res.energy_pj > 0
        assert math.isclose(sum(res.energy_breakdown.values()), res.energy_pj, rel_tol=1e-12)
        assert res.energy_breakdown["mult"] > 0 and res.energy_breakdown["pe_add"] > 0
    adds = {c: acs.energy.add_energy(table, Quire("posit8", carry_bits=c)) for c in (0, 30, 72)}
    widths = {c: Quire("posit8", carry_bits=c).bits for c in adds}
    assert adds[0] < adds[30] < adds[72]
    slope = (table.int_add_32 - table.int_add_8) / 24
    assert math.isclose(adds[72] - adds[30], slope * (widths[72] - widths[30]))
    assert acs.energy.add_energy(table, Quire("posit8es2")) == table.int_add(128)
    mult = acs.energy.mult_energy(table, MAC("posit8", "posit8", "quire"))
    assert mult > table.fp_mult(4, 5, 4, 5) > 0  # decoders and encoder on top of the core


def test_bad_quires():
    with pytest.raises(ValueError, match="a Quire needs a posit format, got fmt=e4m3fn"):
        Quire("e4m3fn")
    with pytest.raises(ValueError, match="at most 128 are supported"):
        Quire("posit8es2", carry_bits=31)
    with pytest.raises(ValueError, match="carry_bits must be in"):
        Quire(carry_bits=-1)
    with pytest.raises(ValueError, match="needs posit operands within its range; a is posit8es2"):
        MAC("posit8es2", "posit8", "quire")
    with pytest.raises(ValueError, match="needs posit operands within its range; a is e4m3fn"):
        MAC("e4m3fn", "e4m3fn", "quire")
    with pytest.raises(ValueError, match="init must be finite"):
        acs.accumulate(np.array([0x40], np.uint8), np.array([0x40], np.uint8), MAC("posit8", "posit8", "quire"),
                       init=np.inf)


def test_readout_to_posit16_matches_softposit_rounding_of_the_exact_sum(rng):
    """Quire(posit8, readout=posit16): the exact sum (a double here: multiples of 2^-12 below
    2^19) rounded once to posit16, as SoftPosit's convertDoubleToP16 rounds it; and the array
    gives the same bits.  Also through mac_from_names' "quire:posit16"."""
    f, r = fmt("posit8"), fmt("posit16")
    mac = acs.mac.mac_from_names("posit8", "posit8", "quire:posit16")
    assert mac.acc == Quire("posit8", readout="posit16") and mac.acc.name == "quire(posit8,30,posit16)"
    for k in (1, 7, 64, 300):
        a, b = real_codes(rng, "posit8", (5, k)), real_codes(rng, "posit8", (5, k))
        got = r.encode(acs.accumulate(a, b, mac))
        for row in range(5):
            exact = sum(Fraction(float(x)) * Fraction(float(y)) for x, y in zip(f.decode(a[row]), f.decode(b[row])))
            assert float(exact) == exact
            assert int(got[row]) == sp.convertDoubleToP16(float(exact)).v, (k, row)
        arr = acs.Array(4, 4, "ws", mac)
        res = arr.gemm(acs.QTensor(a, f), acs.QTensor(b.T.copy(), f), metrics=False)
        assert_values_equal(np.diag(res.acc), acs.accumulate(a, b, mac))
    with pytest.raises(ValueError, match="reads out to a posit format"):
        Quire("posit8", readout="fp16")
    with pytest.raises(ValueError, match="one posit format"):
        acs.mac.mac_from_names("posit8", "posit8es2", "quire")
