"""Energy and area proxies: mac_models.components, technology, costs, memory and layers.

Expected numbers are published figures, never the code's own output (shared/REFERENCES.md):

* [H] M. Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, 0.9 V: int add 8/16/32 b
  0.03/0.05/0.1 pJ, 36/67/137 um^2; int mult 8 b 0.2 pJ/282 um^2, 32 b 3.1 pJ/3,495 um^2; FP add
  16/32 b 0.4/0.9 pJ, 1,360/4,184 um^2; FP mult 16/32 b 1.1/3.7 pJ, 1,640/7,700 um^2; SRAM
  64-bit access 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ; 32-bit SRAM read (8 KB) 5 pJ; 32-bit DRAM
  read 640 pJ.
* [SB] A. Stillmaker and B. Baas, Integration 58 (2017), Table 2 (area vs 45 nm) and the
  corrigendum's example EnergyFactor(32 nm HP, 0.9 V) = 0.4571, EnergyFactor(65 nm, 1.3 V) =
  2.604.
* [vB] van Baalen et al. 2023, "FP8 versus INT8 for efficient deep learning inference": FP8
  compute is 50-180 % less efficient than INT8 in dedicated hardware (1.5-2.8x).
* [OCP MX] OCP Microscaling Formats v1.0: one 8-bit E8M0 scale per block of 32 elements.
* [NV] NVFP4: E2M1 elements, one 8-bit E4M3 scale per 16 elements, one FP32 scale per tensor.

Everything else here is structure that follows from the design (more bits never cost less, work
shared by more products costs each product less, extra hardware costs more), not numbers.
"""
import math

import numpy as np
import pytest

import formats
import mac_models as mm
from formats import FloatFormat, IntFormat, PositFormat, ScaledFormat
from mac_models import (MAC, AlignedAccumulator, Conv2d, ExactAccumulator, FloatAccumulator,
                        IntAccumulator, Matmul, QuireAccumulator, Technology, cost, layer_cost,
                        memory_cost)
from mac_models import components as C

EXACT = 1e-12          # "reproduces the table": relative tolerance of a floating-point sum
SLACK = 1e-12          # "non-decreasing": relative slack for rounding noise between equal sums


# ---- helpers -----------------------------------------------------------------------------------

def _ea(x):
    """(energy pJ, area um^2) of a Part, a list of Parts, a MacCost or a MemoryCost."""
    if isinstance(x, C.Part):
        return x.energy_pj, x.area_um2
    if isinstance(x, list):
        return C.total(x)
    if isinstance(x, mm.MemoryCost):
        return x.energy_pj, x.bits
    return x.energy_pj, x.area_um2


def assert_nondecreasing(items, what, grows=True):
    """``items`` is a list of (label, priced thing) in order of growing width: energy and area
    must never fall from one to the next; with ``grows`` the last must cost more than the first
    (so a sweep that priced every width the same would fail too)."""
    vals = [(label, *_ea(x)) for label, x in items]
    for (la, ea, aa), (lb, eb, ab) in zip(vals, vals[1:]):
        assert eb >= ea * (1 - SLACK), f"{what}: energy falls from {la} ({ea}) to {lb} ({eb})"
        assert ab >= aa * (1 - SLACK), f"{what}: area falls from {la} ({aa}) to {lb} ({ab})"
    if grows:
        (l0, e0, a0), (l1, e1, a1) = vals[0], vals[-1]
        assert e1 > e0 and a1 > a0, f"{what}: {l1} costs no more than {l0}"


def sweep_cost(make_mac, widths, what, k=None, tech=None):
    """cost() of make_mac(w) for each width, checked non-decreasing."""
    assert_nondecreasing([(w, cost(make_mac(w), tech=tech, k=k)) for w in widths], what)


def arithmetic_pj(c):
    """Energy of a MacCost without its register rows (Horowitz's table lists no registers)."""
    df = c.breakdown()
    return df[~df.component.str.contains("register")].energy_pj.sum()


def arithmetic_um2(c):
    df = c.breakdown()
    return df[~df.component.str.contains("register")].area_um2.sum()


def share(c, *prefixes):
    """Fraction of a MacCost's energy in parts whose component starts with one of prefixes."""
    df = c.breakdown()
    return df[df.component.str.startswith(prefixes)].energy_pj.sum() / c.energy_pj


# ---- Horowitz's table, reproduced ------------------------------------------------------------

@pytest.mark.parametrize("w, pj, um2", [(8, 0.03, 36), (16, 0.05, 67), (32, 0.1, 137)])
def test_integer_adds_reproduce_horowitz(w, pj, um2):
    """[H] 8/16/32-bit integer adds."""
    p = C.adder(w)
    assert (p.energy_pj, p.area_um2) == pytest.approx((pj, um2), rel=EXACT)


@pytest.mark.parametrize("w, pj, um2", [(8, 0.2, 282), (32, 3.1, 3495)])
def test_integer_multiplies_reproduce_horowitz(w, pj, um2):
    """[H] 8- and 32-bit integer multiplies."""
    p = C.multiplier(w, w)
    assert (p.energy_pj, p.area_um2) == pytest.approx((pj, um2), rel=EXACT)


@pytest.mark.parametrize("e, p, pj, um2", [(5, 11, 0.4, 1360), (8, 24, 0.9, 4184)])
def test_fp_adds_reproduce_horowitz(e, p, pj, um2):
    """[H] 16- and 32-bit FP adds (p counts the hidden bit)."""
    assert C.total(C.fp_adder(e, p)) == pytest.approx((pj, um2), rel=EXACT)


@pytest.mark.parametrize("e, p, pj, um2", [(5, 11, 1.1, 1640), (8, 24, 3.7, 7700)])
def test_fp_multiplies_reproduce_horowitz(e, p, pj, um2):
    """[H] 16- and 32-bit FP multiplies (product rounded back to p bits)."""
    assert C.total(C.fp_multiplier(e, p, p, round_to=p)) == pytest.approx((pj, um2), rel=EXACT)


def test_memory_accesses_reproduce_horowitz():
    """[H] SRAM 64-bit accesses at 8 KB, 32 KB, 1 MB; a 32-bit 8 KB read; a 32-bit DRAM read."""
    assert C.sram_pj_per_bit(8) * 64 == pytest.approx(10, rel=EXACT)
    assert C.sram_pj_per_bit(32) * 64 == pytest.approx(20, rel=EXACT)
    assert C.sram_pj_per_bit(1024) * 64 == pytest.approx(100, rel=EXACT)
    assert C.sram_pj_per_bit(8) * 32 == pytest.approx(5, rel=EXACT)
    assert C.DRAM_PJ_PER_BIT * 32 == pytest.approx(640, rel=EXACT)
    assert memory_cost("fp32", 1, "dram").energy_pj == pytest.approx(640, rel=EXACT)
    assert memory_cost("fp32", 2, "sram", kilobytes=8).energy_pj == pytest.approx(10, rel=EXACT)


@pytest.mark.parametrize("mac, pj, um2", [
    # [H] FP16 mult 1.1 + FP16 add 0.4; areas 1,640 + 1,360
    (MAC("fp16", accumulator=FloatAccumulator("fp16"), fused=False), 1.5, 3000),
    # [H] FP32 mult 3.7 + FP32 add 0.9; areas 7,700 + 4,184
    (MAC("fp32", accumulator=FloatAccumulator("fp32"), fused=False), 4.6, 11884),
    # [H] 8b mult 0.2 + 32b add 0.1; areas 282 + 137
    ("int8->int32", 0.3, 419),
    # [H] 8b mult 0.2 + 16b add 0.05; areas 282 + 67
    ("int8->int16", 0.25, 349),
], ids=["fp16-unfused", "fp32-unfused", "int8->int32", "int8->int16"])
def test_mac_arithmetic_is_horowitz_multiply_plus_add(mac, pj, um2):
    """A separate multiply and add of the table's widths is the table's multiply plus its add
    (registers aside: the table lists none)."""
    c = cost(mac)
    assert arithmetic_pj(c) == pytest.approx(pj, rel=EXACT)
    assert arithmetic_um2(c) == pytest.approx(um2, rel=EXACT)


# ---- published ratios -------------------------------------------------------------------------

def test_fp32_against_int8_mac_matches_horowitz_ratio():
    """[H] FP32 MAC (3.7 + 0.9 = 4.6 pJ) over INT8 MAC (0.2 + 0.03..0.1 = 0.23..0.3 pJ) is
    15.3..20x on the arithmetic; the 32-bit accumulator registers both carry dilute the full
    ratio (the README says so)."""
    fp32 = cost(MAC("fp32", accumulator=FloatAccumulator("fp32"), fused=False))
    int8 = cost("int8->int32")
    ratio = arithmetic_pj(fp32) / arithmetic_pj(int8)
    assert 4.6 / 0.3 * (1 - 1e-9) <= ratio <= 4.6 / 0.23 * (1 + 1e-9)
    assert fp32.energy_pj / int8.energy_pj < ratio


def test_fp8_against_int8_mac_matches_van_baalen():
    """[vB] an FP8 MAC costs 1.5..2.8x an INT8 MAC."""
    ratio = cost("fp8_e4m3->fp32").energy_pj / cost("int8->int32").energy_pj
    assert 1.5 <= ratio <= 2.8


# ---- every primitive grows with every width -------------------------------------------------

@pytest.mark.parametrize("part", [C.adder, C.register, C.leading_zero_count, C.shifter,
                                  C.normalize_round], ids=lambda f: f.__name__)
def test_primitive_grows_with_width(part):
    """One-width primitives over 1..128 bits (integers, and every quarter bit up to 40, which
    crosses the interpolation knots)."""
    widths = list(range(1, 129)) + [1 + i / 4 for i in range(157)]
    assert_nondecreasing([(w, part(w)) for w in sorted(set(widths))], part.__name__)


def test_multiplier_grows_with_both_widths():
    """wa x wb over the whole 1..64 square, along each axis."""
    grid = {(a, b): C.multiplier(a, b) for a in range(1, 65) for b in range(1, 65)}
    for x in range(1, 65):
        assert_nondecreasing([(b, grid[x, b]) for b in range(1, 65)], f"multiplier({x}, wb)")
        assert_nondecreasing([(a, grid[a, x]) for a in range(1, 65)], f"multiplier(wa, {x})")


def test_shifter_grows_with_positions_and_mux_with_inputs():
    for w in (4, 14, 27, 64):
        assert_nondecreasing([(p, C.shifter(w, positions=p)) for p in range(2, 600)],
                             f"shifter({w}, positions)")
    for w in (1, 8, 32):
        assert_nondecreasing([(n, C.mux(w, n)) for n in range(2, 300)], f"mux({w}, inputs)")
    assert_nondecreasing([(w, C.mux(w, 16)) for w in range(1, 129)], "mux(w, 16)")


def test_fp_units_grow_with_exponent_and_significand():
    for e in (2, 5, 8, 11):
        assert_nondecreasing([(p, C.fp_adder(e, p)) for p in range(1, 65)], f"fp_adder({e}, p)")
        assert_nondecreasing([(p, C.fp_multiplier(e, p, p, round_to=p)) for p in range(1, 65)],
                             f"fp_multiplier({e}, p, p, round_to=p)")
    for p in (2, 11, 24, 53):
        assert_nondecreasing([(e, C.fp_adder(e, p)) for e in range(1, 16)], f"fp_adder(e, {p})")
        assert_nondecreasing([(e, C.fp_multiplier(e, p, p, round_to=p)) for e in range(0, 16)],
                             f"fp_multiplier(e, {p})")
        assert_nondecreasing([(r, C.fp_multiplier(8, p, p, round_to=r)) for r in range(1, 65)],
                             f"fp_multiplier(8, {p}, round_to)")


def test_sram_energy_grows_with_size():
    """From a 64-byte register file to a 64 MB array, every 1/8 octave."""
    sizes = [2 ** (i / 8) for i in range(-80, 129)]
    energies = [C.sram_pj_per_bit(kb) for kb in sizes]
    assert all(b > a for a, b in zip(energies, energies[1:]))


def test_primitives_refuse_widths_below_one_bit():
    for bad in (0, 0.5, -3, float("nan")):
        for part in (C.adder, C.shifter, C.normalize_round):
            with pytest.raises(ValueError):
                part(bad)
        with pytest.raises(ValueError):
            C.multiplier(8, bad)
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError):
            C.sram_pj_per_bit(bad)


# ---- cost() grows with every width of a design ------------------------------------------------

FLOAT_ACCS = {"fp16": FloatAccumulator("fp16"), "bf16": FloatAccumulator("bf16"),
              "fp32": FloatAccumulator("fp32"), "e6m12": FloatAccumulator(FloatFormat(6, 12))}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("acc", list(FLOAT_ACCS), ids=str)
def test_cost_grows_with_float_operand_widths(acc, fused):
    """FloatFormat(e, m) operands: cost grows with m at fixed e and with e at fixed m."""
    a = FLOAT_ACCS[acc]
    for e in (2, 4, 5, 8):
        sweep_cost(lambda m: MAC(FloatFormat(e, m), accumulator=a, fused=fused), range(1, 24),
                   f"e{e}mM operands into {acc}, fused={fused}")
    for m in (1, 3, 7, 10, 23):
        sweep_cost(lambda e: MAC(FloatFormat(e, m), accumulator=a, fused=fused), range(2, 11),
                   f"eEm{m} operands into {acc}, fused={fused}")


def _rounds_products(c):
    return c.breakdown().component.str.contains("normalize and round").any()


def _sweep_accumulators(op, fused, accs, what):
    """cost() grows with the accumulator format; unfused, it drops where the format starts to
    hold every product exactly (no rounding: the fused design), so there the designs that round
    and those that do not are swept apart, and those that do not cost what the fused one does."""
    if fused:
        return sweep_cost(lambda f: MAC(op, accumulator=FloatAccumulator(f)), accs, what)
    costs = [(f, cost(MAC(op, accumulator=FloatAccumulator(f), fused=False))) for f in accs]
    rounding = [x for x in costs if _rounds_products(x[1])]
    exact = [x for x in costs if not _rounds_products(x[1])]
    for part in (rounding, exact):
        assert_nondecreasing(part, what, grows=len(part) > 1)
    for f, c in exact:
        assert _ea(c) == _ea(cost(MAC(op, accumulator=FloatAccumulator(f)))), (what, f)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_cost_grows_with_float_accumulator_widths(fused):
    for op in ("fp8_e4m3", "fp16", "bf16", "fp32"):
        for e in (5, 8):
            _sweep_accumulators(op, fused, [FloatFormat(e, m) for m in range(1, 24)],
                                f"{op} into e{e}mM, fused={fused}")
        _sweep_accumulators(op, fused, [FloatFormat(e, 10) for e in range(2, 11)],
                            f"{op} into eEm10, fused={fused}")


def test_cost_grows_with_aligned_accumulator_width():
    """AlignedAccumulator: p (bits kept per term) and the format it rounds into."""
    for n in (1, 4, 32):
        for op in ("fp8_e4m3", "bf16"):
            sweep_cost(lambda p: MAC(op, accumulator=AlignedAccumulator(n=n, p=p)),
                       range(1, 49), f"{op} aligned n={n} over p")
    sweep_cost(lambda m: MAC("fp8_e4m3", accumulator=AlignedAccumulator(32, 14,
                                                                        format=FloatFormat(8, m))),
               range(1, 24), "aligned into e8mM")
    sweep_cost(lambda e: MAC("fp8_e4m3", accumulator=AlignedAccumulator(32, 14,
                                                                        format=FloatFormat(e, 10))),
               range(2, 11), "aligned into eEm10")


def test_cost_grows_with_exact_accumulator_format_and_operands():
    """Kulisch: the output format (its final rounding, counted when k is given) and the
    operand widths (the register spans the products)."""
    sweep_cost(lambda m: MAC("bf16", accumulator=ExactAccumulator(FloatFormat(8, m))),
               range(1, 24), "bf16 into exact e8mM", k=16)
    for e in (3, 5):
        sweep_cost(lambda m: MAC(FloatFormat(e, m), accumulator=ExactAccumulator("fp32")),
                   range(1, 24), f"e{e}mM into exact fp32")
    sweep_cost(lambda e: MAC(FloatFormat(e, 3), accumulator=ExactAccumulator("fp32")),
               range(2, 9), "eEm3 into exact fp32")


def test_cost_grows_with_integer_widths():
    sweep_cost(lambda b: MAC(IntFormat(b), accumulator=IntAccumulator(32)), range(1, 17),
               "intB operands into int32")
    sweep_cost(lambda b: MAC("int8", accumulator=IntAccumulator(b)), range(16, 63),
               "int8 operands into intB")
    sweep_cost(lambda b: MAC("int8", accumulator=IntAccumulator(b, "saturate")), range(16, 63),
               "int8 operands into intB saturating")
    sweep_cost(lambda b: MAC(IntFormat(b), accumulator=IntAccumulator(32), promote_every=64),
               range(1, 17), "intB into int32 promoted")


@pytest.mark.parametrize("es", [0, 1, 2, 3])
def test_cost_grows_with_posit_width(es):
    """positN_es at fixed es, into its quire (k given: the posit encode is counted) and into
    fp32 (as long as the products stay within 53 bits)."""
    sweep_cost(lambda n: MAC(PositFormat(n, es), accumulator=QuireAccumulator(PositFormat(n, es))),
               range(3, 33), f"posit_N_{es} quire", k=256)
    top = max(n for n in range(3, 33) if 2 * PositFormat(n, es).precision[0] <= 53)
    sweep_cost(lambda n: MAC(PositFormat(n, es), accumulator=FloatAccumulator("fp32")),
               range(3, top + 1), f"posit_N_{es} into fp32")


def test_cost_grows_with_scaled_element_width():
    """Block-scaled elements: float elements with E8M0 scales, integer elements with E8M0 and
    with FP32 group scales (integer accumulator)."""
    fp32 = FloatAccumulator("fp32")
    for e in (2, 3, 4):
        sweep_cost(lambda m: MAC(ScaledFormat(FloatFormat(e, m), "e8m0", 32), accumulator=fp32),
                   range(1, 12), f"scaled e{e}mM")
    sweep_cost(lambda e: MAC(ScaledFormat(FloatFormat(e, 2), "e8m0", 32), accumulator=fp32),
               range(2, 9), "scaled eEm2")
    sweep_cost(lambda b: MAC(ScaledFormat(IntFormat(b), "e8m0", 32),
                             accumulator=IntAccumulator(32)),
               range(2, 17), "scaled intB, e8m0")
    sweep_cost(lambda b: MAC(ScaledFormat(IntFormat(b), "fp32", 128, "amax"),
                             accumulator=IntAccumulator(32)),
               range(2, 17), "scaled intB, fp32 per 128", k=512)


def test_memory_bits_grow_with_format_width():
    n = 1000
    assert_nondecreasing([(m, memory_cost(FloatFormat(5, m), n)) for m in range(1, 24)],
                         "memory e5mM")
    assert_nondecreasing([(b, memory_cost(IntFormat(b), n, "sram")) for b in range(1, 33)],
                         "memory intB")
    assert_nondecreasing([(m, memory_cost(ScaledFormat(FloatFormat(2, m), "e8m0", 32), n, "rf"))
                          for m in range(1, 12)], "memory scaled e2mM")


# ---- technology scaling ------------------------------------------------------------------------

# [SB] Table 2, the 45 nm row: area at node n over area at 45 nm.
SB_AREA = {65: 1.5, 45: 1.0, 32: 0.46, 20: 0.21, 16: 0.19, 14: 0.17, 10: 0.1, 7: 0.059}


@pytest.mark.parametrize("node", list(SB_AREA))
def test_area_scale_is_stillmaker_baas_table_2(node):
    assert Technology(node).area_scale == pytest.approx(SB_AREA[node], rel=EXACT)


def test_45nm_is_horowitz_operating_point():
    """The default is 45 nm at 0.9 V, the point [H] was measured at: scale exactly 1."""
    for t in (Technology(), Technology(45), Technology(45, vdd=0.9),
              mm.technology.technology(None)):
        assert t.vdd == 0.9
        assert t.energy_scale == 1.0 and t.area_scale == 1.0
    c = cost("fp16->fp32")
    assert cost("fp16->fp32", tech=45).energy_pj == c.energy_pj
    assert cost("fp16->fp32", tech=Technology()).area_um2 == c.area_um2


def test_energy_scale_matches_corrigendum_example():
    """[SB] corrigendum: EnergyFactor(32 nm HP, 0.9 V) / EnergyFactor(65 nm, 1.3 V) =
    0.4571 / 2.604."""
    ratio = Technology(32, vdd=0.9).energy_scale / Technology(65, vdd=1.3).energy_scale
    assert ratio == pytest.approx(0.4571 / 2.604, rel=1e-3)


def test_scales_fall_from_65_to_7_nm():
    """At nominal supplies, strictly at the paper's nodes and never rising in between."""
    paper = [Technology(n) for n in sorted(SB_AREA, reverse=True)]
    for big, small in zip(paper, paper[1:]):
        assert small.energy_scale < big.energy_scale, (big.name, small.name)
        assert small.area_scale < big.area_scale, (big.name, small.name)
    fine = [Technology(65 - i / 4) for i in range(0, 233)]       # 65 .. 7 nm
    for big, small in zip(fine, fine[1:]):
        assert small.energy_scale <= big.energy_scale, (big.name, small.name)
        assert small.area_scale <= big.area_scale, (big.name, small.name)


def test_28nm_is_interpolated_between_32_and_20():
    t28, t32, t20 = Technology(28), Technology(32), Technology(20)
    assert t20.energy_scale < t28.energy_scale < t32.energy_scale
    assert t20.area_scale < t28.area_scale < t32.area_scale
    assert t20.vdd <= t28.vdd <= t32.vdd
    assert cost("int8->int32", tech=28).energy_pj < cost("int8->int32", tech=32).energy_pj


@pytest.mark.parametrize("node", [0, 5, 6.9, 65.1, 90, 180, -7, float("nan"), float("inf")])
def test_nodes_outside_7_to_65_nm_are_refused(node):
    with pytest.raises(ValueError):
        Technology(node)
    with pytest.raises(ValueError):
        cost("int8->int32", tech=node)


@pytest.mark.parametrize("vdd", [0.0, 0.1, 0.29, 2.01, 5, -0.9, float("nan")])
def test_bad_supply_is_refused(vdd):
    with pytest.raises(ValueError):
        Technology(32, vdd=vdd)


@pytest.mark.parametrize("vdd", ["0.9", True, [0.9]])
def test_supply_must_be_a_number(vdd):
    with pytest.raises(TypeError):
        Technology(32, vdd=vdd)


def test_numpy_numbers_are_accepted():
    assert Technology(np.int64(7), vdd=np.float32(0.7)).energy_scale == pytest.approx(
        Technology(7, vdd=0.7).energy_scale, rel=1e-6)


def test_node_must_be_a_number():
    for bad in ("45", True, None, [45]):
        with pytest.raises(TypeError):
            Technology(bad)


@pytest.mark.parametrize("tech", [7, 16, Technology(10, vdd=0.8), Technology(28), 65])
@pytest.mark.parametrize("name", ["int8->int32", "fp8_e4m3->fp32_h100", "posit16_quire"])
def test_cost_at_a_node_is_cost_at_45nm_times_the_scales(name, tech):
    t = tech if isinstance(tech, Technology) else Technology(tech)
    base, scaled = cost(name, k=128), cost(name, tech=tech, k=128)
    assert scaled.energy_pj == pytest.approx(base.energy_pj * t.energy_scale, rel=EXACT)
    assert scaled.area_um2 == pytest.approx(base.area_um2 * t.area_scale, rel=EXACT)
    b, s = base.breakdown(), scaled.breakdown()
    assert list(b.component) == list(s.component)
    assert list(s.energy_pj) == pytest.approx(list(b.energy_pj * t.energy_scale), rel=EXACT)


# ---- cost() over every preset and format family ---------------------------------------------

def _check_priced(c):
    assert math.isfinite(c.energy_pj) and c.energy_pj > 0
    assert math.isfinite(c.area_um2) and c.area_um2 > 0
    df = c.breakdown()
    assert df.component.is_unique
    assert (df.energy_pj > 0).all() and (df.area_um2 > 0).all()
    assert df.energy_pj.sum() == pytest.approx(c.energy_pj, rel=EXACT)
    assert df.area_um2.sum() == pytest.approx(c.area_um2, rel=EXACT)


@pytest.mark.parametrize("name", mm.preset_names())
def test_every_preset_is_priced(name):
    for tech in (None, 7):
        for k in (None, 1, 1024):
            c = cost(name, tech=tech, k=k)
            _check_priced(c)
            assert c.mac == name and c.k == k


FAMILIES = {
    "float fp8_e5m2": MAC("fp8_e5m2", accumulator=FloatAccumulator("fp16")),
    "float fp16 x bf16": MAC("fp16", "bf16", accumulator=FloatAccumulator("fp32")),
    "float product_format": MAC("bf16", accumulator=FloatAccumulator("fp32"),
                                product_format="bf16"),
    "posit8 fp32": MAC("posit8_0", accumulator=FloatAccumulator("fp32")),
    "posit16 fp32": MAC("posit16_1", accumulator=FloatAccumulator("fp32")),
    "posit8 quire": MAC("posit8_0", accumulator=QuireAccumulator("posit8_0")),
    "int16": MAC("int16", accumulator=IntAccumulator(32)),
    "mxfp8_e4m3": MAC("mxfp8_e4m3", accumulator=FloatAccumulator("fp32")),
    "mxfp6_e3m2": MAC("mxfp6_e3m2", accumulator=FloatAccumulator("fp32")),
    "mxfp4": MAC("mxfp4", accumulator=FloatAccumulator("fp32")),
    "mxint8": MAC("mxint8", accumulator=IntAccumulator(32)),
    "nvfp4": MAC("nvfp4", accumulator=FloatAccumulator("fp32")),
    "int4_g128": MAC("int4_g128", accumulator=IntAccumulator(32)),
    "uint4_g128": MAC("uint4_g128", accumulator=IntAccumulator(32)),
    "int8_channel": MAC("int8_channel", accumulator=IntAccumulator(32)),
    "nf4": MAC("nf4", accumulator=FloatAccumulator("fp32")),
    "nf4_g64": MAC("nf4_g64", accumulator=FloatAccumulator("fp32")),
    "fp8 x int4_g128": MAC("fp8_e4m3", "int4_g128", accumulator=FloatAccumulator("fp32")),
    "exact fp16": MAC("fp16", accumulator=ExactAccumulator("fp32")),
    "aligned bf16": MAC("bf16", accumulator=AlignedAccumulator(8, 24)),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_format_family_is_priced(name):
    for k in (None, 4096):
        _check_priced(cost(FAMILIES[name], k=k))


def test_decode_is_charged_where_the_format_needs_it():
    """Posits decode their regime, codebooks look values up, asymmetric integers subtract a
    zero point; IEEE-style floats and symmetric integers decode nothing."""
    def rows(mac):
        return " | ".join(cost(mac).breakdown().component)
    assert "posit decode" in rows(FAMILIES["posit16 fp32"])
    assert "codebook lookup" in rows(FAMILIES["nf4"])
    assert "zero-point" in rows(FAMILIES["uint4_g128"])
    for plain in ("fp16->fp32", "int8->int32", "fp8_e4m3->fp32"):
        assert not any(w in rows(plain) for w in ("decode", "lookup", "zero-point"))
    assert cost(FAMILIES["uint4_g128"]).energy_pj > cost(FAMILIES["int4_g128"]).energy_pj


# ---- structure of the designs -------------------------------------------------------------------

def test_per_output_work_is_shared_by_k():
    """The quire's final rounding and posit encode: k=64 > k=4096 > k=None, each product paying
    1/k of the same per-output work, so k=None is the limit as k grows."""
    none, k64, k4096 = (cost("posit16_quire", k=k).energy_pj for k in (None, 64, 4096))
    assert k64 > k4096 > none
    assert (k64 - none) * 64 == pytest.approx((k4096 - none) * 4096, rel=1e-9)
    assert cost("posit16_quire", k=2 ** 40).energy_pj == pytest.approx(none, rel=1e-9)
    a64, anone = cost("posit16_quire", k=64).area_um2, cost("posit16_quire").area_um2
    assert a64 > anone


def test_nvfp4_tensor_scale_is_per_output_work():
    """NVFP4's FP32 per-tensor scale multiplies each output once: it is shared by k."""
    assert cost("nvfp4->fp32", k=16).energy_pj > cost("nvfp4->fp32", k=1024).energy_pj \
        > cost("nvfp4->fp32").energy_pj
    for k in (32, 4096):                # whole blocks of 32: MXFP4 has no per-output work
        assert cost("mxfp4->fp32", k=k).energy_pj == cost("mxfp4->fp32").energy_pj


def test_block_scales_cost_and_their_share_falls_with_block_size():
    """mxfp4 costs more than its bare e2m1 elements; the share of per-block work (scale
    products, promotion) falls as the block grows 16 -> 32 -> 64."""
    fp32 = FloatAccumulator("fp32")
    bare = cost(MAC("fp4_e2m1", accumulator=fp32))
    assert cost(MAC("mxfp4", accumulator=fp32)).energy_pj > bare.energy_pj
    assert cost(MAC("mxfp4", accumulator=fp32)).area_um2 > bare.area_um2
    costs = [cost(MAC(ScaledFormat("fp4_e2m1", "e8m0", g), accumulator=fp32)) for g in (16, 32, 64)]
    shares = [share(c, "block scales", "promote") for c in costs]
    assert 0 < shares[2] < shares[1] < shares[0]
    assert all(share(c, "block scales") > 0 for c in costs)
    energies = [c.energy_pj for c in costs]
    assert energies[0] > energies[1] > energies[2] > bare.energy_pj


def test_promotion_costs_more_the_more_often():
    """promote_every=32 > 128 > no promotion, for the aligned FP8 design and for INT8."""
    def h100(every):
        return MAC("fp8_e4m3", accumulator=AlignedAccumulator(32, 14), promote_every=every)
    for make in (h100, lambda every: MAC("int8", accumulator=IntAccumulator(32),
                                         promote_every=every)):
        e32, e128, none = (cost(make(x)).energy_pj for x in (32, 128, None))
        assert e32 > e128 > none
    assert cost("fp8_e4m3->fp32_h100").energy_pj > cost("fp8_e4m3->fp32_h100_nopromote").energy_pj


def test_extra_hardware_costs_more():
    """Kahan > plain; stochastic > nearest even; saturate > wrap; unfused > fused (fp32)."""
    def both(a, b):
        ca, cb = cost(a), cost(b)
        assert ca.energy_pj > cb.energy_pj and ca.area_um2 > cb.area_um2, (a.name, b.name)
    for fmt in ("fp16", "bf16", "fp32"):
        both(MAC("bf16", accumulator=FloatAccumulator(fmt, kahan=True)),
             MAC("bf16", accumulator=FloatAccumulator(fmt)))
        both(MAC("bf16", accumulator=FloatAccumulator(fmt, rounding="stochastic")),
             MAC("bf16", accumulator=FloatAccumulator(fmt)))
    for bits in (16, 32):
        both(MAC("int8", accumulator=IntAccumulator(bits, "saturate")),
             MAC("int8", accumulator=IntAccumulator(bits, "wrap")))
    both(mm.preset("int16->int32_sat"), mm.preset("int16->int32_wrap"))
    both(MAC("fp32", accumulator=FloatAccumulator("fp32"), fused=False),
         MAC("fp32", accumulator=FloatAccumulator("fp32"), fused=True))


def test_quire_register_is_the_posit_standard_width():
    """Posit Standard (2022): the quire of an es = 2 posit is 16 n bits; the quire MAC carries
    that register."""
    from mac_models.costs import exact_register_bits
    for n in (8, 16, 32):
        f = PositFormat(n, 2)
        assert exact_register_bits(MAC(f, accumulator=QuireAccumulator(f))) == 16 * n


# ---- bad input to cost() ------------------------------------------------------------------------

def test_cost_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown MAC preset"):
        cost("int8->int33")
    for bad in (42, None, formats.get("fp16"), FloatAccumulator("fp32")):
        with pytest.raises(TypeError):
            cost(bad)
    for k in (0, -1, True, False, 2.0, "64"):
        with pytest.raises(ValueError):
            cost("int8->int32", k=k)


# ---- memory traffic ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, n, bits", [
    ("fp16", 1000, 16_000),
    ("int8", 7, 56),
    ("mxfp4", 320, 320 * 4 + 10 * 8),              # [OCP MX] 4.25 bits/element: 1360
    ("mxfp8_e4m3", 64, 64 * 8 + 2 * 8),            # [OCP MX]
    ("nvfp4", 320, 320 * 4 + 20 * 8 + 32),         # [NV] 4.5 bits/element + FP32 per tensor
    ("int4_g128", 256, 256 * 4 + 2 * 32),          # int4, one FP32 scale per 128
    ("uint4_g128", 256, 256 * 4 + 2 * (32 + 4)),   # + a 4-bit zero point per group
    ("nf4_g64", 128, 128 * 4 + 2 * 32),            # NF4, one FP32 absmax per 64 (QLoRA)
    ("nf4", 10, 40),
    ("int8_tensor", 100, 800 + 32),                # one FP32 scale for the tensor
])
def test_memory_bits_include_scales(fmt, n, bits):
    m = memory_cost(fmt, n)
    assert m.bits == bits
    assert m.energy_pj == pytest.approx(bits * 20, rel=EXACT)       # [H] 640 pJ / 32 bits


def test_per_channel_scales_need_channels():
    assert memory_cost("int8_channel", 100, channels=10).bits == 800 + 10 * 32
    with pytest.raises(ValueError, match="channels"):
        memory_cost("int8_channel", 100)


def test_dram_does_not_scale_with_node_but_on_chip_memory_does():
    dram = memory_cost("bf16", 4096, "dram").energy_pj
    for node in (7, 16, 65):
        t = Technology(node)
        assert memory_cost("bf16", 4096, "dram", tech=node).energy_pj == dram
        for level, kb in (("sram", 32), ("sram", None), ("rf", None), ("rf", 0.5)):
            base = memory_cost("bf16", 4096, level, kilobytes=kb).energy_pj
            scaled = memory_cost("bf16", 4096, level, kilobytes=kb, tech=node).energy_pj
            assert scaled == pytest.approx(base * t.energy_scale, rel=EXACT)
    # [H] 32 KB: 20 pJ per 64 bits, times the node's energy scale
    assert memory_cost("fp32", 2, "sram", kilobytes=32, tech=7).energy_pj == pytest.approx(
        20 * Technology(7).energy_scale, rel=EXACT)


def test_on_chip_levels_cost_less_than_dram_and_more_with_size():
    rf, sram, dram = (memory_cost("fp16", 1024, lv).energy_pj for lv in ("rf", "sram", "dram"))
    assert rf < sram < dram
    assert memory_cost("fp16", 1024, "sram", kilobytes=64).energy_pj < \
        memory_cost("fp16", 1024, "sram", kilobytes=512).energy_pj


def test_memory_cost_refuses_bad_input():
    for bad in ("l2", "DRAM", None):
        with pytest.raises(ValueError):
            memory_cost("fp16", 10, bad)
    for n in (-1, 1.5, True):
        with pytest.raises(ValueError):
            memory_cost("fp16", n)
    with pytest.raises(ValueError):
        memory_cost("fp16", 10, "dram", kilobytes=8)
    with pytest.raises(ValueError):
        memory_cost("fp16", 10, "sram", kilobytes=0)
    with pytest.raises(ValueError):
        memory_cost("no_such_format", 10)


# ---- whole layers -------------------------------------------------------------------------------

def test_matmul_shape():
    op = Matmul(m=3, k=5, n=7, batch=2)
    assert op.macs == 2 * 3 * 5 * 7 and op.dot_length == 5
    assert op.sizes() == {"a": 2 * 3 * 5, "b": 5 * 7, "out": 2 * 3 * 7}
    assert Matmul(3, 5, 7, batch=2, b_batched=True).sizes()["b"] == 2 * 5 * 7


def test_conv2d_shape_against_hand_formula():
    """batch 2, 6 channels of 10x10, 4 out, 3x3 kernel, stride 2, padding 1, 2 groups:
    output (10 + 2 - 3) // 2 + 1 = 5 per side, dot length 6/2 * 9 = 27."""
    op = Conv2d(2, 6, 10, 10, 4, kernel=3, stride=2, padding=1, groups=2)
    assert op.dot_length == 27
    assert op.macs == 2 * 4 * 25 * 27
    assert op.sizes() == {"a": 2 * 6 * 100, "b": 4 * 3 * 9, "out": 2 * 4 * 25}
    # rectangular kernel, dilation: (9 - 2*(3-1) - 1) // 1 + 1 = 5 rows, 12 - 4 = 8 columns
    op2 = Conv2d(1, 2, 9, 12, 3, kernel=(3, 5), dilation=(2, 1))
    assert op2.dot_length == 2 * 15 and op2.macs == 3 * 5 * 8 * 30


def test_conv2d_block_scales_run_along_channels():
    """conv2d stores its operands NHWC with blocks along channels: 40 channels in blocks of 32
    are two blocks (the second short) for each of the 2 * 4 * 4 input pixels, for each of the
    8 * 9 kernel taps, and, for the 8 output channels, each of the 2 * 2 * 2 output pixels."""
    op = Conv2d(2, 40, 4, 4, 8, kernel=3)
    assert op.rows() == {"a": 32, "b": 72, "out": 8}
    lc = layer_cost(op, MAC("mxfp8_e4m3", accumulator=FloatAccumulator("fp32")),
                    formats={"out": "mxfp8_e4m3"})
    assert lc.memory["a"].bits == 2 * 40 * 16 * 8 + 32 * 2 * 8
    assert lc.memory["b"].bits == 8 * 40 * 9 * 8 + 72 * 2 * 8
    assert lc.memory["out"].bits == 2 * 8 * 4 * 8 + 8 * 1 * 8
    # per-channel scales: one per input pixel (over all its channels), one per output channel
    # of the weights
    lc = layer_cost(Conv2d(2, 40, 4, 4, 8, kernel=3, groups=2), "int8->int32",
                    formats={"a": "int8_channel", "b": "int8_channel"})
    assert lc.memory["a"].bits == 2 * 40 * 16 * 8 + 2 * 16 * 32
    assert lc.memory["b"].bits == 8 * 20 * 9 * 8 + 8 * 32
    # blocks that hold whole groups run along all of a pixel's channels: a depthwise conv of
    # 64 channels in blocks of 32 stores 2 scales per pixel (64 if blocks were per group);
    # groups of 20 channels in blocks of 32 are stored one by one, 2 blocks per pixel each
    mx = MAC("mxfp8_e4m3", accumulator=FloatAccumulator("fp32"))
    depthwise = Conv2d(2, 64, 4, 4, 64, kernel=3, groups=64)
    assert depthwise.rows("mxfp8_e4m3")["a"] == 32 and depthwise.rows()["a"] == 2048
    assert Conv2d(1, 24, 4, 4, 8, kernel=1, groups=8).rows("mxfp8_e4m3")["a"] == 16
    assert layer_cost(depthwise, mx).memory["a"].bits == 2 * 64 * 16 * 8 + 32 * 2 * 8
    assert layer_cost(Conv2d(2, 40, 4, 4, 8, kernel=3, groups=2), mx).memory["a"].bits == \
        2 * 40 * 16 * 8 + 2 * 16 * 2 * 8


def test_conv2d_compute_is_charged_for_padded_channels():
    """40 channels in blocks of 32 run as 9 taps of 64 products, 18 block-scale steps per
    output: the unit's energy at k = 576 for each of them, while macs counts the 360 real
    products of each of the 2 * 8 * 2 * 2 outputs."""
    mac = MAC("mxfp8_e4m3", accumulator=FloatAccumulator("fp32"))
    op = Conv2d(2, 40, 4, 4, 8, kernel=3)
    assert op.padded_dot_length(mac) == 576 and op.dot_length == 360
    lc = layer_cost(op, mac)
    assert lc.macs == 64 * 360
    assert lc.compute_pj == pytest.approx(64 * 576 * cost(mac, k=576).energy_pj, rel=EXACT)
    assert Conv2d(2, 64, 4, 4, 8, kernel=3).padded_dot_length(mac) == 576
    assert Conv2d(2, 40, 4, 4, 8, kernel=3).padded_dot_length("int8->int32") == 360
    assert op.tap_segment(mac) is None


@pytest.mark.parametrize("channels,groups,width", [(64, 64, 1), (64, 4, 16), (24, 8, 3)])
def test_conv2d_taps_that_divide_the_block_are_blocks_of_their_own(channels, groups, width):
    """A depthwise conv (1 channel per group) and 16 channels per group in blocks of 32 run
    each kernel tap's channels as one block, unpadded: 9 * width products per output and one
    block-scale step per tap (9 per output, where a dot of 9 products in blocks of 32 would
    take one); 3 channels do not divide 32 and are padded as before."""
    mac = MAC("mxfp8_e4m3", accumulator=FloatAccumulator("fp32"))
    op = Conv2d(2, channels, 4, 4, channels, kernel=3, groups=groups)
    padded = width % 32 and 32 % width
    k = 9 * (32 if padded else width)
    assert op.padded_dot_length(mac) == k and op.dot_length == 9 * width
    assert op.tap_segment(mac) == (None if padded else width)
    lc = layer_cost(op, mac)
    outputs = 2 * channels * 2 * 2
    assert lc.macs == outputs * 9 * width
    unit = cost(mac, k=k, segment=op.tap_segment(mac))
    assert lc.compute_pj == pytest.approx(outputs * k * unit.energy_pj, rel=EXACT)

    def steps(c):                 # the energy of the promotion and block-scale steps per product
        return sum(p.energy_pj for p in c.parts
                   if p.component.startswith(("promote", "block scales")))
    assert steps(unit) > 0
    if not padded:                # 9 steps per output, not ceil(k / 32)
        assert steps(unit) == pytest.approx(steps(cost(mac, k=k)) * 9 / -(-k // 32), rel=EXACT)
    else:
        assert steps(unit) == pytest.approx(steps(cost(mac, k=k)), rel=EXACT)


def test_layer_cost_is_compute_plus_memory():
    op = Conv2d(2, 6, 10, 10, 4, kernel=3, stride=2, padding=1, groups=2)
    lc = layer_cost(op, "int8->int32")
    assert lc.macs == 5400
    assert lc.compute_pj == pytest.approx(5400 * cost("int8->int32", k=27).energy_pj, rel=EXACT)
    assert lc.area_um2 == cost("int8->int32").area_um2
    # int8 input and weights read, int32 sums written, at [H]'s 20 pJ per DRAM bit
    assert lc.memory_pj == pytest.approx((1200 * 8 + 108 * 8 + 200 * 32) * 20, rel=EXACT)
    for name, n in op.sizes().items():
        assert lc.memory[name].n_elements == n
    assert lc.total_pj == pytest.approx(lc.compute_pj + lc.memory_pj, rel=EXACT)
    row = lc.as_dict()
    assert set(row) == {"mac", "macs", "compute_pj", "memory_pj", "total_pj",
                        "area_um2_per_mac_unit"} | {f"{t}_{f}" for t in ("a", "b", "out")
                                                    for f in ("format", "bits", "pj")}
    assert row["total_pj"] == lc.total_pj and row["out_bits"] == 200 * 32


def test_layer_cost_uses_k_for_per_output_work():
    op = Matmul(4, 16, 4)
    assert layer_cost(op, "posit16_quire").compute_pj == pytest.approx(
        op.macs * cost("posit16_quire", k=16).energy_pj, rel=EXACT)
    assert layer_cost(op, "posit16_quire").compute_pj > op.macs * cost("posit16_quire").energy_pj


def test_layer_cost_formats_level_and_node():
    op = Matmul(m=8, k=64, n=32)
    lc = layer_cost(op, "mxfp4->fp32", formats={"out": "bf16", "a": "fp16"})
    assert lc.memory["out"].bits == 8 * 32 * 16
    assert lc.memory["a"].bits == 8 * 64 * 16
    assert lc.memory["b"].bits == 64 * 32 * 4.25                 # [OCP MX]
    assert layer_cost(op, "mxfp4->fp32").memory["out"].bits == 8 * 32 * 32   # fp32 promotion
    sram = layer_cost(op, "int8->int32", level="sram", kilobytes=32)
    assert sram.memory_pj == pytest.approx((8 * 64 * 8 + 64 * 32 * 8 + 8 * 32 * 32) * 20 / 64,
                                           rel=EXACT)               # [H] 32 KB
    at7 = layer_cost(op, "int8->int32", level="sram", kilobytes=32, tech=7)
    assert at7.memory_pj == pytest.approx(sram.memory_pj * Technology(7).energy_scale, rel=EXACT)
    assert at7.compute_pj == pytest.approx(sram.compute_pj * Technology(7).energy_scale, rel=EXACT)
    # per-channel weights: one FP32 scale per column of B
    ch = layer_cost(op, MAC("int8_channel", accumulator=IntAccumulator(32)))
    assert ch.memory["b"].bits == 64 * 32 * 8 + 32 * 32


def test_layer_cost_refuses_bad_input():
    for args in ((0, 1, 1), (1, -2, 1), (1, 1, 1.5), (1, 1, True)):
        with pytest.raises(ValueError):
            Matmul(*args)
    with pytest.raises(ValueError):
        Matmul(1, 1, 1, batch=0)
    with pytest.raises(TypeError, match="b_batched"):
        Matmul(1, 1, 1, b_batched="False")
    with pytest.raises(ValueError):
        Conv2d(1, 3, 5, 5, 4, kernel=7)                      # kernel too big
    with pytest.raises(ValueError):
        Conv2d(1, 6, 10, 10, 4, groups=4)                    # 4 does not divide 6
    with pytest.raises(ValueError):
        Conv2d(1, 6, 10, 10, 4, stride=0)
    with pytest.raises(ValueError):
        Conv2d(0, 6, 10, 10, 4)
    op = Matmul(2, 2, 2)
    with pytest.raises(ValueError):
        layer_cost(op, "int8->int32", formats={"c": "fp16"})
    with pytest.raises(ValueError):
        layer_cost(op, "no_such_preset")
    with pytest.raises(ValueError):
        layer_cost(op, "int8->int32", level="l3")
    with pytest.raises(TypeError):
        layer_cost((2, 2, 2), "int8->int32")
    with pytest.raises(ValueError):                           # int48 sums have no stored format
        layer_cost(op, MAC("int8", accumulator=IntAccumulator(48)))


# ---- regressions from review ------------------------------------------------------------------
def test_integer_products_into_an_aligned_adder_are_priced():
    c = cost(MAC("int8", accumulator=AlignedAccumulator(n=16, p=20)))
    assert c.energy_pj > cost(MAC("int4", accumulator=AlignedAccumulator(n=16, p=20))).energy_pj


def test_a_ragged_last_block_takes_a_whole_scale():
    # 33 MXFP4 values: 33 * 4 element bits and two 8-bit E8M0 scales (OCP MX: blocks of 32)
    assert memory_cost("mxfp4", 33).bits == 33 * 4 + 2 * 8
    # two rows of 33: each row's last block is padded
    assert memory_cost("mxfp4", 66, rows=2).bits == 66 * 4 + 4 * 8
    with pytest.raises(ValueError):
        memory_cost("mxfp4", 67, rows=2)


def test_rounding_options_are_priced():
    plain = cost(MAC("fp16", accumulator=ExactAccumulator("fp32")), k=16).energy_pj
    sr = cost(MAC("fp16", accumulator=ExactAccumulator("fp32", "stochastic")), k=16).energy_pj
    assert sr > plain
    rounded = MAC("fp16", accumulator=FloatAccumulator("fp32"), product_format="bf16")
    rounded_sr = MAC("fp16", accumulator=FloatAccumulator("fp32"), product_format="bf16",
                     product_rounding="stochastic")
    assert cost(rounded_sr).energy_pj > cost(rounded).energy_pj
    trunc = cost(MAC("fp8_e4m3", accumulator=AlignedAccumulator(32, 14, "truncate")))
    near = cost(MAC("fp8_e4m3", accumulator=AlignedAccumulator(32, 14, "round")))
    assert near.energy_pj > trunc.energy_pj


# ---- regressions from the cold tester's cost review ---------------------------------------

def _same_price(a, b):
    assert a.energy_pj == pytest.approx(b.energy_pj, rel=EXACT)
    assert a.area_um2 == pytest.approx(b.area_um2, rel=EXACT)


def test_a_dot_shorter_than_its_segment_takes_one_step_per_output():
    """Two MACs that compute bit-identical outputs are priced the same.  On a K = 64 dot, INT8
    partial sums promoted every 64 or every 4096 products are promoted once per output either
    way; int8 with one scale per 64 or per 1024 values has one scale per row either way; on a
    K = 16 dot, MXFP4 (blocks of 32) and e2m1 with an E8M0 scale per 16 both apply one scale."""
    def promoted(every):
        return MAC("int8", accumulator=IntAccumulator(32), promote_every=every,
                   promote_to=FloatAccumulator("fp16"))
    _same_price(cost(promoted(64), k=64), cost(promoted(4096), k=64))
    op = Matmul(4, 64, 4)
    assert layer_cost(op, promoted(64)).compute_pj == pytest.approx(
        layer_cost(op, promoted(4096)).compute_pj, rel=EXACT)
    _same_price(cost(MAC("int8_g64", accumulator=IntAccumulator(32)), k=64),
                cost(MAC("int8_g1024", accumulator=IntAccumulator(32)), k=64))
    fp32 = FloatAccumulator("fp32")
    _same_price(cost(MAC("mxfp4", accumulator=fp32), k=16),
                cost(MAC(ScaledFormat("fp4_e2m1", "e8m0", 16), accumulator=fp32), k=16))


@pytest.mark.parametrize("mac", [
    MAC("int8", accumulator=IntAccumulator(32), promote_every=32),
    MAC("fp8_e4m3", accumulator=AlignedAccumulator(32, 14)),       # normalization per 32
], ids=["promotion", "aligned group"])
def test_a_step_every_32_products_is_shared_by_ceil_k_over_32(mac):
    """A step taken every 32 products and after the last: a k-product dot takes ceil(k / 32) of
    them, so each product pays S * ceil(k / 32) / k against S / 32 without k.  Over that
    baseline: k = 32 and 64 pay nothing more; k = 16 pays S (1/16 - 1/32) = S/32; k = 8 pays
    S (1/8 - 1/32) = 3 S/32; k = 48 pays S (2/48 - 1/32) = S/96."""
    base = _ea(cost(mac))
    extra = {k: [x - b for x, b in zip(_ea(cost(mac, k=k)), base)] for k in (8, 16, 32, 48, 64)}
    for i in (0, 1):                                   # energy, area
        s = extra[16][i] * 32
        assert s > 0
        assert extra[32][i] == pytest.approx(0, abs=1e-12 * base[i])
        assert extra[64][i] == pytest.approx(0, abs=1e-12 * base[i])
        assert extra[8][i] == pytest.approx(3 * s / 32, rel=1e-9)
        assert extra[48][i] == pytest.approx(s / 96, rel=1e-9)


def test_rounding_a_product_into_a_format_that_holds_it_is_free():
    """An e4m3 x e4m3 product has 2 * (3 + 1) = 8 significant bits, a magnitude of at most
    448**2 = 200,704 and is a multiple of 2**-9 * 2**-9 = 2**-18: fp32 (24 bits, max ~3.4e38,
    quantum 2**-149) and bf16 (8 bits, max ~3.4e38, quantum 2**-133) hold it exactly, so rounding
    it there first computes what the fused MAC computes, and costs the same.  So do fp16
    products (22 bits, 65,504**2 < 2**32, multiples of 2**-48) rounded into fp32, in any mode."""
    fp32 = FloatAccumulator("fp32")
    _same_price(cost(MAC("fp8_e4m3", accumulator=fp32, fused=False)),
                cost(MAC("fp8_e4m3", accumulator=fp32)))
    _same_price(cost(MAC("fp8_e4m3", accumulator=fp32, product_format="bf16")),
                cost(MAC("fp8_e4m3", accumulator=fp32)))
    for mode in ("nearest_even", "stochastic"):
        _same_price(cost(MAC("fp16", accumulator=fp32, product_format="fp32",
                             product_rounding=mode)), cost("fp16->fp32"))
    assert "normalize and round" not in " ".join(
        cost(MAC("fp8_e4m3", accumulator=fp32, fused=False)).breakdown().component)


@pytest.mark.parametrize("op, acc", [
    ("bf16", "fp32"),        # (2 - 2**-7)**2 * 2**254 > fp32's max ~2**128; 2**-266 < 2**-149
    ("fp8_e4m3", "fp16"),    # 448**2 = 200,704 > fp16's 65,504
    ("fp16", "fp16"),        # 22 significant bits > 11
])
def test_rounding_a_product_that_does_not_fit_is_charged(op, acc):
    unfused = cost(MAC(op, accumulator=FloatAccumulator(acc), fused=False))
    fused = cost(MAC(op, accumulator=FloatAccumulator(acc)))
    assert "normalize and round" in " ".join(unfused.breakdown().component)
    assert unfused.energy_pj > fused.energy_pj


def test_2d_tiles_take_one_scale_per_tile():
    """DeepSeek-V3's FP8 layout, FP32 scales: a 768 x 3072 weight in 128 x 128 tiles is
    (768 / 128) * (3072 / 128) = 144 tiles, 4,608 scale bits; a 128 x 768 activation in 1 x 128
    tiles is 128 * 6 = 768 tiles."""
    mac = MAC("fp8_e4m3_1x128", "fp8_e4m3_128x128", promote_every=128,
              accumulator=AlignedAccumulator(32, 14, format="fp32"))
    lc = layer_cost(Matmul(m=128, k=768, n=3072), mac)
    assert lc.memory["b"].bits == 768 * 3072 * 8 + 144 * 32
    assert lc.memory["a"].bits == 128 * 768 * 8 + 768 * 32
    # B's tiles run (K, N) as the MAC multiplies it: 128 x 1 tiles are 6 * 3072 of them
    tall = ScaledFormat("fp8_e4m3", "fp32", (128, 1), "amax")
    lc = layer_cost(Matmul(m=128, k=768, n=3072), mac, formats={"b": tall})
    assert lc.memory["b"].bits == 768 * 3072 * 8 + 6 * 3072 * 32
    # ragged edges are padded per matrix: 12 heads of 197 x 64 keys, ceil(197/128) = 2 tiles
    # each; one 128 x 256 matrix is 2 tiles
    att = layer_cost(Matmul(m=197, k=64, n=197, batch=12, b_batched=True), mac)
    assert att.memory["b"].bits == 12 * 64 * 197 * 8 + 12 * 2 * 32
    assert memory_cost("fp8_e4m3_128x128", 32768, rows=128).bits == 32768 * 8 + 2 * 32
    assert memory_cost("fp8_e4m3_128x128", 3 * 200 * 300, matrix=(200, 300)).bits == \
        3 * 200 * 300 * 8 + 3 * 2 * 3 * 32
    # a grouped conv: 2 groups of 3 * 3 kernel taps, each tap's (4/2 channels) x (8/2) weights
    # padded to a tile of their own (as conv2d stores them), 18 tiles; the input stored NHWC,
    # (2 * 10 * 10 = 200 pixels) x 4 channels, tiles 128 wide holding both groups: 2 tiles
    conv = layer_cost(Conv2d(2, 4, 10, 10, 8, kernel=3, groups=2), mac,
                      formats={"a": "fp8_e4m3_128x128"})
    assert conv.memory["b"].bits == 8 * 18 * 8 + 18 * 32
    assert conv.memory["a"].bits == 2 * 4 * 100 * 8 + 2 * 32


def test_tf32_is_stored_in_32_bit_words():
    """TF32 is a tensor-core input mode: its operands are FP32 words in memory (NVIDIA A100
    whitepaper), 32 bits each, not the 19 it computes with."""
    assert memory_cost("tf32", 10).bits == 320
    assert memory_cost("tf32", 10).energy_pj == pytest.approx(320 * 20, rel=EXACT)   # [H]


@pytest.mark.parametrize("level", ["rf", "sram", "dram"])
def test_every_memory_level_validates_the_node(level):
    with pytest.raises(TypeError):
        memory_cost("fp16", 10, level, tech="7nm")
    with pytest.raises(ValueError):
        memory_cost("fp16", 10, level, tech=3)


def test_numpy_integers_are_accepted_as_sizes_and_dot_lengths():
    assert cost("int8->int32", k=np.int64(64)).energy_pj == cost("int8->int32", k=64).energy_pj
    assert cost("int8->int32", k=np.int64(64)).k == 64
    op = Matmul(m=np.int64(4), k=np.int32(16), n=np.uint8(4), batch=np.int16(2))
    assert op == Matmul(4, 16, 4, batch=2) and type(op.macs) is int
    assert Conv2d(np.int64(1), np.int64(6), 10, 10, 4, groups=np.int64(2)).dot_length == 27
    for bad in (np.float64(64), np.bool_(True), True):
        with pytest.raises(ValueError, match="k must"):
            cost("int8->int32", k=bad)
        with pytest.raises(ValueError, match="segment must"):
            cost("mxfp8->fp32", k=9, segment=bad)
        with pytest.raises(ValueError, match="m must"):
            Matmul(m=bad, k=4, n=4)


def test_layer_cost_names_a_bad_mac_or_formats():
    op = Matmul(2, 2, 2)
    with pytest.raises(TypeError, match="mac"):
        layer_cost(op, None)
    with pytest.raises(TypeError, match="formats"):
        layer_cost(op, "int8->int32", formats="int8")
    with pytest.raises(TypeError, match="preset is named by a string"):
        mm.preset(None)


def test_sram_size_must_be_a_finite_number():
    for kb in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="KB"):
            memory_cost("fp16", 10, "sram", kilobytes=kb)
    with pytest.raises(TypeError, match="kilobytes"):
        memory_cost("fp16", 10, "sram", kilobytes="8")


def test_a_multiplexer_has_at_least_two_inputs():
    for inputs in (0, 1, -3):
        with pytest.raises(ValueError, match="inputs"):
            C.mux(8, inputs=inputs)
    with pytest.raises(TypeError, match="inputs"):
        C.mux(8, inputs=2.0)


def test_supply_below_the_energy_fits_vertex_is_refused():
    """[SB] Table 5, 65 nm: 3.755 V**2 - 4.398 V + 1.975 is least at 4.398 / (2 * 3.755) =
    0.5856 V and rises again below it, so 65 nm (and nodes interpolated from it) refuses
    supplies at or below 0.5856 V; the other nodes' vertices lie under the 0.3 V floor."""
    for vdd in (0.3, 0.5, 0.58):
        with pytest.raises(ValueError, match="0.586"):
            Technology(65, vdd=vdd)
        with pytest.raises(ValueError):
            Technology(55, vdd=vdd)
    Technology(65, vdd=0.59)
    Technology(45, vdd=0.3)
    Technology(7, vdd=0.3)
    # where a supply is accepted, energy rises with it at every node
    for node in (65, 55, 45, 38, 32, 28, 20, 16, 14, 12, 10, 8, 7):
        scales = []
        for vdd in (i / 100 for i in range(30, 201)):          # 0.30 .. 2.00 V
            try:
                scales.append(Technology(node, vdd=vdd).energy_scale)
            except ValueError:
                assert not scales, (node, vdd)         # refused only below the accepted range
        assert all(b > a for a, b in zip(scales, scales[1:])), node


@pytest.mark.parametrize("n,channels,groups,per_output", [
    (16, 64, 64, 9), (16, 64, 4, 9), (4, 64, 64, 9), (4, 64, 4, 36), (16, 40, 1, 9 * 4),
    (10, 64, 1, 9 * 2 * 4)])
def test_aligned_groups_start_afresh_in_every_segment(n, channels, groups, per_output):
    """The aligned adder's groups of n restart at every block (as the engine runs them): a
    depthwise conv's 9 one-product taps are 9 groups per output, not ceil(9 / n); 16
    channels a tap in groups of 4, 4 per tap; 40 channels padded to two blocks of 32 per tap,
    2 groups of 16 each; blocks of 32 in groups of 10, 4 per block (not ceil(576 / 10))."""
    mac = MAC("mxfp8_e4m3", accumulator=AlignedAccumulator(n=n, p=14, format="fp32"))
    op = Conv2d(2, channels, 4, 4, channels, kernel=3, groups=groups)
    k = op.padded_dot_length(mac)
    unit = cost(mac, k=k, segment=op.tap_segment(mac))
    step = next(p.energy_pj for p in unit.parts
                if p.component == "aligned: running-sum alignment")
    one = next(p.energy_pj for p in cost(mac, k=n).parts          # one group in a dot of n
               if p.component == "aligned: running-sum alignment") * n
    assert step * k == pytest.approx(per_output * one, rel=EXACT)
