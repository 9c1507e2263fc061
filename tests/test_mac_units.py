"""MAC designs beyond the plain accumulators: the aligned (tensor-core) adder, Kulisch and quire
accumulation, block-scaled operands, conv2d, the presets and bad input.

Oracles: Python's ``fractions.Fraction`` for exact sums, MPFR (``tests/mpfr_oracle``) for every
rounding into a float format, SoftPosit's quire16, a literal re-statement of the aligned-adder
model in Fractions (``aligned_reference``, written from the model's definition in
``mac_models.accumulators``), direct convolution loops, and numpy float64 where sums of small
integers are exact.
"""
from __future__ import annotations

import math
from fractions import Fraction

import gmpy2
import ml_dtypes
import numpy as np
import pytest
import softposit as sp

import formats
import mac_models as mm
from tests.mpfr_oracle import FloatSpec, oracle_round

FP32 = FloatSpec(8, 23, 127)


def to_fp32(x: Fraction, mode: str = "nearest_even") -> float:
    """``x`` rounded once into fp32 by MPFR."""
    with gmpy2.context(precision=4096):
        exact = gmpy2.mpfr(gmpy2.mpq(x.numerator, x.denominator))
    return float(oracle_round(np.array([exact], dtype=object), FP32, mode, "ieee")[0])


def binade(x: Fraction) -> int:
    """floor(log2 |x|) of a nonzero Fraction."""
    x = abs(x)
    e = x.numerator.bit_length() - x.denominator.bit_length()
    return e if x >= Fraction(2) ** e else e - 1


def aligned_reference(products: list[Fraction], n: int, p: int, truncate: bool,
                      mode: str = "toward_zero", promote_every: int | None = None) -> float:
    """The aligned adder as its definition states: per group of n products, E = the largest
    binade among the group and the running sum, every term kept to multiples of 2**(E-p+1),
    the kept terms summed exactly and rounded into fp32; every ``promote_every`` products the
    sum is added into an fp32 nearest-even total and restarts at zero."""
    total, acc = Fraction(0), Fraction(0)
    seg = promote_every or len(products) or 1
    for s0 in range(0, len(products), seg):
        acc = Fraction(0)
        piece = products[s0:s0 + seg]
        for g0 in range(0, len(piece), n):
            terms = [acc] + piece[g0:g0 + n]
            nonzero = [t for t in terms if t != 0]
            if not nonzero:
                continue
            unit = Fraction(2) ** (max(binade(t) for t in nonzero) - p + 1)
            kept = 0
            for t in terms:
                q = t / unit
                kept += (math.trunc(q) if truncate else round(q)) * unit   # round(): half-even
            acc = Fraction(to_fp32(kept, mode))
        total = Fraction(to_fp32(total + acc)) if promote_every else acc
    return float(total)


def fractions_of_products(a: np.ndarray, b: np.ndarray) -> list[list[list[Fraction]]]:
    return [[[Fraction(float(a[i, k])) * Fraction(float(b[k, j])) for k in range(a.shape[1])]
             for j in range(b.shape[1])] for i in range(a.shape[0])]


# ---- the aligned adder ------------------------------------------------------------------------
def test_aligned_truncation_loses_small_products_hand_computed():
    # group of 4: 1.0 sets E = 0; with p = 4 bits kept the unit is 2**-3, so 2**-4 products
    # vanish entirely while an exact (or fp32) sum would keep them
    a = np.array([[1.0, 2.0 ** -4, 2.0 ** -4, 2.0 ** -4]])
    b = np.ones((4, 1))
    mac = mm.MAC("fp32", accumulator=mm.AlignedAccumulator(n=4, p=4))
    r = mm.matmul(a, b, mac)
    assert r.values[0, 0] == 1.0
    assert r.swamped == 3
    exact = mm.matmul(a, b, mm.MAC("fp32", accumulator=mm.ExactAccumulator()))
    assert exact.values[0, 0] == 1.0 + 3 * 2.0 ** -4
    # rounding instead of truncation keeps 2**-4 * 3 = 0.1875 -> rounds each 0.5 unit to even 0
    r = mm.matmul(a, b, mm.MAC("fp32", accumulator=mm.AlignedAccumulator(4, 4, "round")))
    assert r.values[0, 0] == 1.0
    # with 3 * 2**-3 the terms are exactly representable at p = 4: nothing lost
    a2 = np.array([[1.0, 2.0 ** -3, 2.0 ** -3, 2.0 ** -3]])
    assert mm.matmul(a2, b, mac).values[0, 0] == 1.375


def test_aligned_counts_swamped_only_in_finite_groups():
    """As a float register counts events only on steps with finite inputs: an Inf or NaN
    product is not a swamped product, nor is a finite one truncated beside it, nor one added
    to a register already at Inf (the float register on the same data counts 0 too)."""
    a = np.array([[np.inf, 1.0, np.nan, 2.0 ** -20]])
    acc = mm.AlignedAccumulator(4, 4)
    assert mm.matmul(a, np.ones((4, 1)), mm.MAC("fp16", accumulator=acc)).swamped == 0
    a = np.array([[6e4, 6e4, 1.0, 2.0 ** -20]])
    aligned = mm.MAC("fp16", accumulator=mm.AlignedAccumulator(2, 11, format="fp16",
                                                                rounding="nearest_even"))
    r = mm.matmul(a, np.ones((4, 1)), aligned)
    assert r.values[0, 0] == np.inf and r.overflows == 1 and r.swamped == 0
    assert mm.matmul(a, np.ones((4, 1)), mm.MAC(
        "fp16", accumulator=mm.FloatAccumulator("fp16"))).swamped == 0
    # a finite group still counts: 2**-20 beside 1.0 keeps nothing at p = 11
    assert mm.matmul(np.array([[1.0, 2.0 ** -20]]), np.ones((2, 1)), aligned).swamped == 1
    # finite products whose float64 sum overflows in one order but not the other: 1 is
    # truncated beside X**2 either way (exact sum 1, kept sum 0), so both count it
    x = 1.5 * 2.0 ** 511
    wide = mm.MAC(formats.FloatFormat(10, 3, bias=511),
                  accumulator=mm.AlignedAccumulator(5, 11, format="fp32"))
    b = np.array([[x], [x], [x], [x], [1.0]])
    for row in ([x, x, -x, -x, 1.0], [x, -x, x, -x, 1.0]):
        r = mm.matmul(np.array([row]), b, wide)
        assert r.values[0, 0] == 0.0 and r.swamped == 1


@pytest.mark.parametrize("mode", ["toward_negative", "nearest_even"])
def test_aligned_exact_zero_is_positive_in_every_mode(mode):
    """The aligned adder sums integers: 1 - 1 is the integer 0, read as +0 even where an IEEE
    float register rounding toward negative gives -0 (documented in the README)."""
    mac = mm.MAC("fp16", accumulator=mm.AlignedAccumulator(4, 14, rounding=mode))
    r = mm.dot([1.0, -1.0], [1.0, 1.0], mac)
    assert r.values == 0.0 and not np.signbit(r.values)
    ieee = mm.dot([1.0, -1.0], [1.0, 1.0], mm.MAC("fp16", accumulator=mm.FloatAccumulator(
        "fp32", mode)))
    assert bool(np.signbit(ieee.values)) == (mode == "toward_negative")


def test_aligned_running_sum_is_aligned_too():
    # first group sums to 1.0 exactly; the second group's largest product (2**6) sets E = 6,
    # so with p = 4 the running sum 1.0 (unit 2**3) is truncated to 0
    a = np.array([[0.5, 0.5, 64.0, 0.0]])
    b = np.ones((4, 1))
    r = mm.matmul(a, b, mm.MAC("fp32", accumulator=mm.AlignedAccumulator(n=2, p=4)))
    assert r.values[0, 0] == 64.0


@pytest.mark.parametrize("n,p,truncate,fmt", [(4, 10, True, "fp16"), (8, 14, True, "fp8_e4m3"),
                                             (4, 12, False, "bf16"), (32, 14, True, "fp8_e5m2")])
def test_aligned_matches_reference(n, p, truncate, fmt):
    rng = np.random.default_rng(n * 100 + p)
    a = rng.standard_normal((3, 70)) * np.exp2(rng.integers(-6, 6, (3, 70)))
    b = rng.standard_normal((70, 4))
    f = formats.get(fmt)
    qa, qb = f.quantize(a), f.quantize(b)
    acc = mm.AlignedAccumulator(n, p, "truncate" if truncate else "round")
    r = mm.matmul(qa, qb, mm.MAC(fmt, accumulator=acc))
    prods = fractions_of_products(qa, qb)
    want = [[aligned_reference(prods[i][j], n, p, truncate) for j in range(4)] for i in range(3)]
    np.testing.assert_array_equal(r.values, want)


def test_aligned_with_promotion_matches_reference():
    rng = np.random.default_rng(7)
    f = formats.get("fp8_e4m3")
    a = f.quantize(rng.standard_normal((2, 300)))
    b = f.quantize(rng.standard_normal((300, 3)))
    r = mm.matmul(a, b, "fp8_e4m3->fp32_h100")
    prods = fractions_of_products(a, b)
    want = [[aligned_reference(prods[i][j], 32, 14, True, promote_every=128) for j in range(3)]
            for i in range(2)]
    np.testing.assert_array_equal(r.values, want)


def test_deepseek_experiment_error_grows_with_k_and_promotion_cures_it():
    """DeepSeek-V3 section 3.3.2: 14-bit aligned accumulation of FP8 products loses accuracy as
    K grows (the report quotes ~2% max relative error at K = 4096); promotion every 128 into
    FP32 brings it back near the FP32 level."""
    rng = np.random.default_rng(0)
    f = formats.get("fp8_e4m3")
    errors = {}
    for k in (256, 4096):
        a = f.quantize(np.abs(rng.standard_normal((4, k))) + 0.1)   # same-sign: no cancellation
        b = f.quantize(np.abs(rng.standard_normal((k, 8))) + 0.1)
        exact = a @ b                                 # float64: far more precise than either
        for name in ("fp8_e4m3->fp32_h100_nopromote", "fp8_e4m3->fp32_h100", "fp8_e4m3->fp32"):
            got = mm.matmul(a, b, name).values
            errors[name, k] = float(np.max(np.abs(got - exact) / np.abs(exact)))
    no_promo = "fp8_e4m3->fp32_h100_nopromote"
    assert errors[no_promo, 4096] > 4 * errors[no_promo, 256]
    assert errors[no_promo, 4096] > 1e-3
    assert errors["fp8_e4m3->fp32_h100", 4096] < errors[no_promo, 4096] / 10
    assert errors["fp8_e4m3->fp32", 4096] < errors[no_promo, 4096] / 10


# ---- the multiplier ------------------------------------------------------------------------------
def test_products_rounded_into_a_product_format():
    # fp32 operands, each exact product rounded once into bf16 (MPFR), then summed in numpy float32
    rng = np.random.default_rng(21)
    a = rng.standard_normal((2, 40)).astype(np.float32).astype(float)
    b = rng.standard_normal((40, 3)).astype(np.float32).astype(float)
    mac = mm.MAC("fp32", accumulator=mm.FloatAccumulator("fp32"), product_format="bf16",
                 product_rounding="toward_zero")
    r = mm.matmul(a, b, mac)
    bf16 = FloatSpec(8, 7, 127)
    for i in range(2):
        for j in range(3):
            prods = oracle_round(a[i] * b[:, j], bf16, "toward_zero", "ieee")  # exact products
            acc = np.float32(0)
            for v in prods:
                acc = acc + np.float32(v)
            assert r.values[i, j] == acc


# ---- Kulisch and quire --------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["fp16", "fp8_e5m2", "fp32", "bf16"])
@pytest.mark.parametrize("mode", ["nearest_even", "toward_zero", "toward_positive"])
def test_exact_accumulator_matches_fractions(fmt, mode):
    rng = np.random.default_rng(len(fmt) + len(mode))
    f = formats.get(fmt)
    spread = 20 if f.max > 1e30 else 6                 # keep |a| finite in the format
    a = f.quantize(rng.standard_normal((3, 50)) * np.exp2(rng.integers(-spread, spread, (3, 50))))
    b = f.quantize(rng.standard_normal((50, 3)))
    a[0, :2] = [f.max, -f.max]                        # cancellation of huge terms
    b[:2, 0] = [1.0, 1.0]
    r = mm.matmul(a, b, mm.MAC(fmt, accumulator=mm.ExactAccumulator("fp32", mode)))
    prods = fractions_of_products(a, b)
    want = [[to_fp32(sum(prods[i][j]), mode) for j in range(3)] for i in range(3)]
    np.testing.assert_array_equal(r.values, want)
    assert np.isnan(r.max_abs_partial)


def test_exact_accumulator_ieee_specials():
    a = np.array([[np.inf, 1.0], [np.inf, -np.inf], [np.nan, 1.0]])
    b = np.array([[1.0], [1.0]])
    r = mm.matmul(a, b, mm.MAC("fp16", accumulator=mm.ExactAccumulator()))
    assert r.values[0, 0] == np.inf
    assert np.isnan(r.values[1, 0]) and np.isnan(r.values[2, 0])


def test_quire_matches_softposit():
    rng = np.random.default_rng(3)
    f = formats.get("posit16_1")
    a = f.quantize(rng.standard_normal((3, 40)) * np.exp2(rng.integers(-8, 8, (3, 40))))
    b = f.quantize(rng.standard_normal((40, 2)))
    r = mm.matmul(a, b, "posit16_quire")
    for i in range(3):
        for j in range(2):
            q = sp.quire16()
            for k in range(40):
                q.qma(sp.posit16(float(a[i, k])), sp.posit16(float(b[k, j])))
            assert r.values[i, j] == float(q.toPosit())


# ---- block-scaled operands ----------------------------------------------------------------------
def scaled_reference(a, b, fmt_name: str) -> np.ndarray:
    """sum over blocks of (sum of element products accumulated in fp32 RNE from zero) times the
    two block scales, each added into an fp32 RNE total; then times the tensor scales.  Element
    codes and scales come from the format's encode (checked against its own references)."""
    fmt = formats.get(fmt_name)
    sta, stb = fmt.encode(a, axis=1), fmt.encode(b, axis=0)
    ea, eb = fmt.element.decode(sta.elements), fmt.element.decode(stb.elements)
    xa, xb = fmt.scale.decode(sta.scales), fmt.scale.decode(stb.scales)
    g = fmt.group
    out = np.zeros((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            total = Fraction(0)
            for blk in range(-(-a.shape[1] // g)):
                acc = Fraction(0)
                for k in range(blk * g, min(a.shape[1], (blk + 1) * g)):
                    acc = Fraction(to_fp32(acc + Fraction(ea[i, k]) * Fraction(eb[k, j])))
                term = acc * Fraction(xa[i, blk]) * Fraction(xb[blk, j])
                total = Fraction(to_fp32(total + term))
            t = Fraction(sta.tensor_scale) * Fraction(stb.tensor_scale)
            out[i, j] = to_fp32(total * t)
    return out


@pytest.mark.parametrize("name", ["mxfp4", "mxfp8_e4m3", "nvfp4", "mxint8"])
def test_block_scaled_matmul_matches_reference(name):
    rng = np.random.default_rng(11)
    a = rng.standard_normal((3, 80)) * np.exp2(rng.integers(-3, 3, (3, 80)))
    b = rng.standard_normal((80, 2))
    r = mm.matmul(a, b, mm.MAC(name, accumulator=mm.FloatAccumulator("fp32")))
    np.testing.assert_array_equal(r.values, scaled_reference(a, b, name))


def test_int_groups_into_int32_with_fp32_promotion():
    # int8 per-channel weights x int8 per-tensor activations: integer sums, scaled once
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 64))
    b = rng.standard_normal((64, 3))
    mac = mm.MAC("int8_tensor", "int8_channel", accumulator=mm.IntAccumulator(32))
    r = mm.matmul(a, b, mac)
    fa, fb = formats.get("int8_tensor"), formats.get("int8_channel")
    sta, stb = fa.encode(a, axis=1), fb.encode(b, axis=1)
    ia, ib = sta.elements.view(np.int8).astype(int), stb.elements.view(np.int8).astype(int)
    xa = fa.scale.decode(sta.scales)[0, 0]
    xb = fb.scale.decode(stb.scales)[0]
    want = [[to_fp32(Fraction(int(ia[i] @ ib[:, j])) * Fraction(xa) * Fraction(xb[j]))
             for j in range(3)] for i in range(4)]
    np.testing.assert_array_equal(r.values, want)


# ---- conv2d ----------------------------------------------------------------------------------
def direct_conv(x, w, stride, padding, dilation, groups):
    nb, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((nb, o, ho, wo))
    og = o // groups
    for n in range(nb):
        for oc in range(o):
            g = oc // og
            for y in range(ho):
                for z in range(wo):
                    s = 0.0
                    for ci in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                s += (xp[n, g * cg + ci, y * stride + i * dilation,
                                         z * stride + j * dilation] * w[oc, ci, i, j])
                    out[n, oc, y, z] = s
    return out


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 1),
                                                            (1, 2, 2, 2), (2, 1, 1, 4)])
def test_conv2d_exact_equals_direct_convolution(stride, padding, dilation, groups):
    rng = np.random.default_rng(stride + 10 * padding + 100 * groups)
    x = rng.integers(-8, 8, (2, 4, 7, 6)).astype(float)      # small integers: float64 sums exact
    w = rng.integers(-8, 8, (4, 4 // groups, 3, 3)).astype(float)
    r = mm.conv2d(x, w, mm.MAC("fp16", accumulator=mm.ExactAccumulator()), stride, padding,
                  dilation, groups)
    np.testing.assert_array_equal(r.values, direct_conv(x, w, stride, padding, dilation, groups))
    assert r.macs == r.values.size * 4 // groups * 9


def test_conv2d_is_matmul_on_patches_in_row_column_channel_order():
    """The order of an NHWC implicit GEMM: each output adds its products kernel row by kernel
    row, column by column, and channel by channel within a tap."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 3, 5, 5))
    w = rng.standard_normal((2, 3, 3, 3))
    mac = mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16"))   # order-sensitive
    r = mm.conv2d(x, w, mac, padding=1)
    cols = np.zeros((25, 27))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for y in range(5):
        for z in range(5):
            cols[y * 5 + z] = xp[0, :, y:y + 3, z:z + 3].transpose(1, 2, 0).reshape(-1)
    want = mm.matmul(cols, w.transpose(0, 2, 3, 1).reshape(2, 27).T, mac).values
    np.testing.assert_array_equal(r.values, want.T.reshape(1, 2, 5, 5))


@pytest.mark.parametrize("fmt,channels,groups", [("mxfp8_e4m3", 40, 1), ("mxfp8_e4m3", 40, 2),
                                                 ("mxfp6_e2m3", 64, 1), ("bfp4_16", 36, 3)])
def test_conv2d_block_formats_quantize_the_stored_tensors(fmt, channels, groups):
    """x is stored once, in blocks along each pixel's channels, and w in blocks along the
    channels of each kernel tap, as fmt.quantize along the channel axis gives them; a channel
    count that is not a multiple of the block leaves a short last block.  Groups that neither
    fill whole blocks nor fit in one (20 channels in blocks of 32, 12 in 16) are stored group
    by group.  Integer data
    keep every quantized value and every sum an integer below 2**24, so the fp32 MAC is exact
    and equals a float64 convolution of the quantized tensors in any order."""
    rng = np.random.default_rng(channels + groups)
    x = rng.integers(-40, 41, (2, channels, 6, 5)).astype(float)
    w = rng.integers(-40, 41, (6, channels // groups, 3, 3)).astype(float)
    f = formats.get(fmt)
    cg = channels // groups
    xq = np.concatenate([f.quantize(x[:, g * cg:(g + 1) * cg], axis=1) for g in range(groups)],
                        axis=1)
    wq = f.quantize(w, axis=1)
    assert not np.array_equal(xq, x) and not np.array_equal(wq, w)      # quantization bites
    r = mm.conv2d(x, w, mm.MAC(fmt, accumulator=mm.FloatAccumulator("fp32")), stride=(1, 2),
                  padding=1, groups=groups)
    want = direct_conv(xq, wq, 1, 1, 1, groups)[..., ::2]
    np.testing.assert_array_equal(r.values, want)
    assert r.macs == want.size * cg * 9                # the padded channels' products not counted


@pytest.mark.parametrize("fmt,channels,groups", [
    ("mxfp8_e4m3", 64, 64), ("mxfp8_e4m3", 64, 4), ("mxfp6_e2m3", 64, 2),
    ("mxfp8_e4m3", 24, 8), ("bfp4_16", 12, 4), ("mxfp8_e4m3", 48, 3)])
def test_conv2d_blocks_holding_whole_groups_quantize_all_channels(fmt, channels, groups):
    """A depthwise or grouped conv whose groups each sit inside a block (1, 16 or 3 channels per
    group in blocks of 32, 3 in 16; 16 per group where 3 groups span two blocks) reads the
    input as stored, blocks along all of each pixel's channels; 32 per group fill whole blocks,
    the same either way.  Exact as in the test above."""
    rng = np.random.default_rng(channels + groups)
    x = rng.integers(-40, 41, (2, channels, 5, 5)).astype(float)
    x[:, 0] *= 3                                    # group 0 sets the scales of its blocks
    w = rng.integers(-40, 41, (channels, channels // groups, 3, 3)).astype(float)
    f = formats.get(fmt)
    r = mm.conv2d(x, w, mm.MAC(fmt, accumulator=mm.FloatAccumulator("fp32")), padding=1,
                  groups=groups)
    want = direct_conv(f.quantize(x, axis=1), f.quantize(w, axis=1), 1, 1, 1, groups)
    np.testing.assert_array_equal(r.values, want)
    assert r.macs == want.size * channels // groups * 9


def test_conv2d_without_padding_refuses_ragged_stored_channels():
    """A format made with pad=False refuses what it would have to pad as stored: groups of 20
    channels in blocks of 32, or a depthwise conv's weights (1 channel per kernel tap); a
    depthwise input of 64 channels is stored in whole blocks and runs as with padding."""
    strict = formats.ScaledFormat("fp8_e4m3", "e8m0", 32, "floor", pad=False)
    fp32 = mm.FloatAccumulator("fp32")
    rng = np.random.default_rng(13)
    x, w = rng.standard_normal((1, 64, 4, 4)), rng.standard_normal((64, 1, 3, 3))
    np.testing.assert_array_equal(
        mm.conv2d(x, w, mm.MAC(strict, "fp16", accumulator=fp32), groups=64).values,
        mm.conv2d(x, w, mm.MAC("mxfp8_e4m3", "fp16", accumulator=fp32), groups=64).values)
    with pytest.raises(ValueError, match="stores 1 channels per kernel tap"):
        mm.conv2d(x, w, mm.MAC("fp16", strict, accumulator=fp32), groups=64)
    with pytest.raises(ValueError, match="stores 20 channels per input pixel"):
        mm.conv2d(x[:, :40], rng.standard_normal((4, 20, 3, 3)),
                  mm.MAC(strict, "fp16", accumulator=fp32), groups=2)


def test_conv2d_per_pixel_scales_span_all_channels():
    """int8_channel gives each input pixel one scale over all its channels, not one per group:
    group 1 holds 127 at every pixel, so the scale is 1 and group 0's integers (|x| <= 60) stay
    exact (a scale of group 0's own would round them); weights of amax 127 per output channel
    are exact too, and the integer sums are exact in fp32."""
    rng = np.random.default_rng(12)
    x = rng.integers(-60, 61, (2, 8, 4, 4)).astype(float)
    x[:, 5] = 127
    w = rng.integers(-127, 128, (6, 4, 3, 3)).astype(float)
    w[:, 0, 0, 0] = 127
    r = mm.conv2d(x, w, mm.MAC("int8_channel", accumulator=mm.FloatAccumulator("fp32")),
                  padding=1, groups=2)
    np.testing.assert_array_equal(r.values, direct_conv(x, w, 1, 1, 1, 2))


@pytest.mark.parametrize("fmt", ["int8_tensor", "nvfp4", "int8_channel", "mxfp4"])
def test_conv2d_quantizes_pixels_a_stride_skips(fmt):
    """The stored input's scales cover all of it: a strided conv equals the unit-stride conv
    sampled at the strided outputs, even when the largest pixel is one the stride skips."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 32, 6, 6))
    x[1, :, 1, 3] *= 1000                             # read by no output of stride 2
    w = rng.standard_normal((3, 32, 1, 1))
    mac = mm.MAC(fmt, accumulator=mm.FloatAccumulator("fp32"))
    np.testing.assert_array_equal(mm.conv2d(x, w, mac, stride=2).values,
                                  mm.conv2d(x, w, mac).values[:, :, ::2, ::2])


@pytest.mark.parametrize("fmt", ["int8_channel", "nvfp4", "mxfp8_e4m3", "fp8_e4m3_1x128"])
def test_a_1x1_conv2d_is_the_matmul_of_its_pixels(fmt):
    """A 1x1 convolution is the matmul of the (pixels, channels) matrix, so a per-channel
    format gives x a scale per pixel, as matmul gives one per row (per token)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 256, 3, 4)) * rng.lognormal(0, 2, (2, 1, 3, 4))
    w = rng.standard_normal((5, 256, 1, 1))
    mac = mm.MAC(fmt, accumulator=mm.FloatAccumulator("fp32"))
    pixels = x.transpose(0, 2, 3, 1).reshape(-1, 256)
    want = mm.matmul(pixels, w[:, :, 0, 0].T, mac).values.reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(mm.conv2d(x, w, mac).values, want.transpose(0, 3, 1, 2))


def test_conv2d_promotes_per_pixel_scales_at_kernel_taps():
    """A per-pixel input scale changes at each kernel tap, so promotion must fall on the taps.
    With promote_every a multiple of the 3 channels, each tap's integer sum times the pixel's
    and the output channel's scales is added into fp32 with one rounding (MPFR); another
    promote_every is refused."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 3, 4, 4))
    w = rng.standard_normal((2, 3, 2, 2))
    mac = mm.MAC("int8_channel", accumulator=mm.IntAccumulator(32), promote_every=6)
    r = mm.conv2d(x, w, mac)
    f = formats.get("int8_channel")
    sx = f.encode(x[0].transpose(1, 2, 0).reshape(16, 3), axis=0)      # a scale per pixel
    sw = f.encode(w.transpose(2, 3, 1, 0).reshape(12, 2), axis=1)      # per output channel
    ex, ew = f.element.decode(sx.elements), f.element.decode(sw.elements)
    px, pw = f.scale.decode(sx.scales)[:, 0], f.scale.decode(sw.scales)[0]
    for o in range(2):
        for y in range(3):
            for z in range(3):
                acc = Fraction(0)
                for i in range(2):
                    for j in range(2):
                        p, t = (y + i) * 4 + z + j, (i * 2 + j) * 3
                        tap = sum(int(ex[p, c]) * int(ew[t + c, o]) for c in range(3))
                        acc = Fraction(to_fp32(acc + tap * Fraction(px[p]) * Fraction(pw[o])))
                assert r.values[0, o, y, z] == acc
    assert r.macs == 2 * 9 * 12
    with pytest.raises(ValueError, match="one scale, .* the 3 channels of a group: promote_every=64"):
        mm.conv2d(x, w, mm.MAC("int8_channel", accumulator=mm.IntAccumulator(32),
                               promote_every=64))


def test_conv2d_refuses_unequal_blocks_along_the_channels():
    with pytest.raises(ValueError, match="different blocks along a conv's 64 channels"):
        mm.conv2d(np.ones((1, 64, 3, 3)), np.ones((2, 64, 3, 3)),
                  mm.MAC("int8_channel", "mxfp8_e4m3", accumulator=mm.FloatAccumulator("fp32")))


def test_conv2d_reads_integers_exactly_and_returns_them():
    """int64 inputs beyond 2**53 reach the MAC exactly (as in matmul, not via float64), and an
    integer accumulator's integers come back in the output's layout, group by group."""
    v = 2**60 + 2**36 + 1
    mac = mm.MAC("fp32", accumulator=mm.FloatAccumulator("fp32"))
    got = mm.conv2d(np.array([v]).reshape(1, 1, 1, 1), np.ones((1, 1, 1, 1), np.int64), mac)
    assert got.values[0, 0, 0, 0] == mm.matmul([[v]], [[1]], mac).values[0, 0] == 2**60 + 2**37
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, (2, 4, 5, 5))
    w = rng.integers(-128, 128, (6, 2, 3, 3))
    r = mm.conv2d(x, w, "int8->int32", padding=1, groups=2)
    direct = np.zeros((2, 6, 5, 5), dtype=np.int64)           # the same sums, exact in int64
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for o in range(6):
        g = o // 3
        for y in range(5):
            for z in range(5):
                patch = xp[:, 2 * g:2 * g + 2, y:y + 3, z:z + 3]
                direct[:, o, y, z] = (patch * w[o]).sum((1, 2, 3))
    assert r.integers.dtype == np.int64 and np.array_equal(r.integers, direct)
    assert np.array_equal(r.values, direct)
    assert mm.conv2d(x.astype(float), w.astype(float), "fp16->fp32", groups=2).integers is None


@pytest.mark.parametrize("fmt", ["int8_tensor", "nvfp4", "mxfp8_e4m3"])
def test_a_batched_operand_shares_its_tensor_scale(fmt):
    """A per-tensor scale (int8_tensor's, NVFP4's second level) is one scale for the whole
    tensor, not one per batch entry (head): a batched product equals the 2-D product of the
    stacked slices, whose one operand is the whole tensor.  One head is 100x larger, so per-slice
    scales would differ; MX has no tensor scale, so it is the same either way."""
    rng = np.random.default_rng(21)
    a = rng.standard_normal((3, 4, 32))
    a[0] *= 100
    b = rng.standard_normal((32, 5))
    mac = mm.MAC(fmt, accumulator=mm.FloatAccumulator("fp32"))
    stacked = mm.matmul(a.reshape(12, 32), b, mac).values.reshape(3, 4, 5)
    np.testing.assert_array_equal(mm.matmul(a, b, mac).values, stacked)
    bb = np.moveaxis(a, 1, 2) / 3                  # (3, 32, 4): B's slices side by side
    wide = mm.matmul(b.T, np.concatenate(list(bb), axis=1), mac).values
    np.testing.assert_array_equal(mm.matmul(b.T, bb, mac).values,
                                  np.stack(np.split(wide, 3, axis=1)))
    f = formats.get(fmt)
    got, _ = mm.ops.quantized_slices(list(a), f, 1)
    np.testing.assert_array_equal(np.stack(got), f.quantize(a, axis=-1))
    per_slice = np.stack([f.quantize(s, axis=-1) for s in a])
    assert np.array_equal(per_slice, f.quantize(a, axis=-1)) == (fmt == "mxfp8_e4m3")


def test_grouped_conv_shares_its_tensor_scales():
    """A grouped conv with int8_tensor operands equals the dense conv with the block-diagonal
    weight (zeros elsewhere): the same products in the same order, and one scale per tensor
    for both the input and the weight (a group 50x larger sets it)."""
    rng = np.random.default_rng(22)
    x = rng.standard_normal((1, 4, 5, 5))
    w = rng.standard_normal((4, 2, 3, 3))
    w[0] *= 50
    dense = np.zeros((4, 4, 3, 3))
    for o in range(4):
        g = o // 2
        dense[o, 2 * g:2 * g + 2] = w[o]
    mac = mm.MAC("int8_tensor", accumulator=mm.FloatAccumulator("fp32"))
    np.testing.assert_array_equal(mm.conv2d(x, w, mac, padding=1, groups=2).values,
                                  mm.conv2d(x, dense, mac, padding=1).values)


def test_an_empty_batch_keeps_the_kind_of_result():
    del_me = np.full((3, 4), np.nan)        # freed memory that np.empty may hand out next
    del del_me
    r = mm.matmul(np.ones((0, 2, 3)), np.ones((3, 4)), "int8->int32")
    assert r.values.shape == r.integers.shape == (0, 2, 4) and r.integers.dtype == np.int64
    assert mm.matmul(np.ones((0, 2, 3)), np.ones((3, 4)), "fp16->fp32").integers is None
    promoted = mm.MAC("int8", accumulator=mm.IntAccumulator(32), promote_every=16)
    for k in (0, 32):                        # K = 0 too: the MAC, not the data, decides
        assert mm.matmul(np.ones((2, k)), np.ones((k, 3)), promoted).integers is None
        r = mm.matmul(np.ones((2, k)), np.ones((k, 3)), "int8->int32")
        assert np.array_equal(r.integers, np.full((2, 3), k))


# ---- presets and bad input ---------------------------------------------------------------------
@pytest.mark.parametrize("name", mm.preset_names())
def test_every_preset_runs_close_to_float64(name):
    rng = np.random.default_rng(1)
    scale = 20.0 if name.startswith("int") else 1.0
    a = np.rint(rng.standard_normal((3, 96)) * scale) if scale > 1 else \
        rng.standard_normal((3, 96))
    b = np.rint(rng.standard_normal((96, 4)) * scale) if scale > 1 else \
        rng.standard_normal((96, 4))
    r = mm.matmul(a, b, name)
    assert r.values.shape == (3, 4) and r.macs == 3 * 4 * 96
    ref = a @ b
    tol = 0.35 if "fp4" in name else 0.08
    assert np.max(np.abs(r.values - ref)) <= tol * np.max(np.abs(ref)), name
    assert mm.preset(name).name == name


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="do not match"):
        mm.matmul(np.ones((2, 3)), np.ones((4, 2)), "fp16->fp32")
    with pytest.raises(ValueError, match="cannot hold a product"):
        mm.MAC("int16", accumulator=mm.IntAccumulator(16))
    with pytest.raises(TypeError, match="integer or fixed-point"):
        mm.MAC("fp16", accumulator=mm.IntAccumulator(32))
    with pytest.raises(ValueError, match="NaN"):
        mm.matmul(np.array([[np.nan]]), np.ones((1, 1)), "int8->int32")
    with pytest.raises(ValueError, match="unknown MAC preset"):
        mm.matmul(np.ones((1, 1)), np.ones((1, 1)), "fp16->fp31")
    with pytest.raises(ValueError, match="more than float64"):
        mm.MAC("posit32_2", accumulator=mm.FloatAccumulator("fp32"))
    with pytest.raises(ValueError, match="block size"):
        mm.matmul(np.ones((1, 64)), np.ones((64, 1)), mm.MAC("mxfp4", "nvfp4"))
    promoted = mm.MAC("mxfp8_e4m3", accumulator=mm.FloatAccumulator("fp32"), promote_every=48)
    with pytest.raises(ValueError, match="48 is not a multiple of the 32 products each scale"):
        mm.matmul(np.ones((1, 64)), np.ones((64, 1)), promoted)
    # a conv whose groups hold 16 channels scales each kernel tap's 16: 48 is 3 taps, 40 is not
    x, w = np.ones((1, 32, 4, 4)), np.ones((4, 16, 3, 3))
    assert mm.conv2d(x, w, promoted, groups=2).values.shape == (1, 4, 2, 2)
    with pytest.raises(ValueError, match="40 is not a multiple of the 16 products each scale"):
        mm.conv2d(x, w, mm.MAC("mxfp8_e4m3", accumulator=mm.FloatAccumulator("fp32"),
                               promote_every=40), groups=2)
    with pytest.raises(ValueError, match=r"batch axes .* \(2,\) against \(3,\)"):
        mm.matmul(np.ones((2, 1, 4)), np.ones((3, 4, 1)), "fp16->fp32")
    with pytest.raises(ValueError, match="dot takes two vectors"):
        mm.dot(np.ones((2, 2)), np.ones(2), "fp16->fp32")
    with pytest.raises(ValueError, match="channels do not match"):
        mm.conv2d(np.ones((1, 3, 4, 4)), np.ones((2, 2, 3, 3)), "fp16->fp32")
    for seed in ("x", 1.5):                     # refused when the accumulator is made
        with pytest.raises(TypeError, match="seed"):
            mm.FloatAccumulator("fp16", "stochastic", seed=seed)
        with pytest.raises(TypeError, match="seed"):
            mm.ExactAccumulator("fp16", seed=seed)
        with pytest.raises(TypeError, match="seed"):
            mm.QuireAccumulator("posit8_0", seed=seed)
    with pytest.raises(ValueError, match="sr_bits"):
        mm.FloatAccumulator("fp16", "stochastic", sr_bits=0)
    for arg in ("stride", "padding", "dilation"):
        with pytest.raises(ValueError, match=f"{arg} must be an integer"):
            mm.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), "fp16->fp32", **{arg: 1.0})


# ---- cases a cold review found ---------------------------------------------------------------
def test_aligned_wide_terms_sum_exactly():
    # p = 48 and n = 65: the kept terms need 55 bits together; the sticky 2**-47 must survive
    a = np.array([[2.0 ** -47] + [1.0] * 64])
    b = np.ones((65, 1))
    acc = mm.AlignedAccumulator(n=65, p=48, rounding="toward_positive")
    r = mm.matmul(a, b, mm.MAC("fp32", accumulator=acc))
    want = aligned_reference(fractions_of_products(a, b)[0][0], 65, 48, True, "toward_positive")
    assert r.values[0, 0] == want == float(np.nextafter(np.float32(64), np.float32(np.inf)))
    with pytest.raises(ValueError, match="62 bits"):
        mm.AlignedAccumulator(n=1 << 16, p=48)


@pytest.mark.parametrize("product_format", [None, "fp32"])   # native float32 and exact paths
def test_statistics_after_a_register_became_infinite(product_format):
    mac = mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp32"), product_format=product_format)
    r = mm.dot([np.inf, 1.0, 1.0, 1.0], np.ones(4), mac)
    assert r.values == np.inf
    assert r.max_abs_partial == np.inf
    assert r.swamped == 0 and r.overflows == 0      # an Inf operand is not an overflow


@pytest.mark.parametrize("register", ["fp16", "fp8_e4m3", "fp8_e5m2"])
def test_aligned_nonfinite_group_follows_the_register_rule(register):
    # IEEE sums Inf and NaN, then cast to the register as ml_dtypes casts them (e4m3 has no Inf)
    a = np.array([[np.inf, 1.0, 2.0, 3.0], [np.inf, -np.inf, 1.0, 0.5]])
    acc = mm.AlignedAccumulator(n=4, p=10, format=register)
    r = mm.matmul(a, np.ones((4, 1)), mm.MAC("fp16", accumulator=acc))
    dtype = {"fp16": np.float16, "fp8_e4m3": ml_dtypes.float8_e4m3fn,
             "fp8_e5m2": ml_dtypes.float8_e5m2}[register]
    want = np.array([[np.inf], [np.nan]]).astype(dtype).astype(np.float64)
    np.testing.assert_array_equal(r.values, want)


def test_stochastic_batches_and_groups_draw_different_bits():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((1, 1, 64))
    b = rng.standard_normal((1, 64, 1))
    mac = mm.MAC("fp32", accumulator=mm.FloatAccumulator("bf16", "stochastic", seed=7))
    batch = mm.matmul(np.concatenate([a] * 8), np.concatenate([b] * 8), mac).values.ravel()
    assert len(set(batch.tolist())) > 1
    assert batch[0] == mm.matmul(a[0], b[0], mac).values[0, 0]    # entry 0 is the 2-D draw


def test_empty_sums_are_zero_for_every_kind():
    for name in ("mxfp8->fp32", "nvfp4->fp32", "int8->int32", "fp16->fp16", "posit16_quire"):
        r = mm.matmul(np.ones((2, 0)), np.ones((0, 3)), name)
        np.testing.assert_array_equal(r.values, np.zeros((2, 3)))
        assert r.macs == 0
        assert mm.matmul(np.ones((2, 4)), np.ones((4, 0)), name).values.shape == (2, 0)
        # no rows: NVFP4's tensor scale once indexed the statistics of row 0
        assert mm.matmul(np.ones((0, 4)), np.ones((4, 2)), name).values.shape == (0, 2)
        assert mm.conv2d(np.ones((0, 1, 4, 4)), np.ones((2, 1, 3, 3)), name).values.shape == \
            (0, 2, 2, 2)
    exact = mm.MAC("fp16", accumulator=mm.ExactAccumulator())
    for a, b in ((np.ones((2, 0)), np.ones((0, 3))), (np.ones((0, 4)), np.ones((4, 3))),
                 (np.ones((0, 2, 3)), np.ones((3, 4)))):        # no K, no rows, no batch
        assert math.isnan(mm.matmul(a, b, exact).max_abs_partial)
        assert mm.matmul(a, b, "fp16->fp32").max_abs_partial == 0.0


@pytest.mark.parametrize("name", ["int1", "int2", "int3"])
def test_exact_accumulator_sizes_its_register_by_the_most_negative_value(name):
    """Integer products reach qmin**2 (int1: -1 * -1 = 1 while max is 0); the exact sum is
    the integers' sum, rounded once into fp32."""
    fmt = formats.get(name)
    rng = np.random.default_rng(5)
    a = rng.integers(int(fmt.min), int(fmt.max) + 1, (3, 50))
    b = rng.integers(int(fmt.min), int(fmt.max) + 1, (50, 4))
    a[0], b[:, 0] = fmt.min, fmt.min                          # the largest products
    r = mm.matmul(a.astype(float), b.astype(float),
                  mm.MAC(name, accumulator=mm.ExactAccumulator("fp32")))
    np.testing.assert_array_equal(r.values, a @ b)


@pytest.mark.parametrize("mode,negative", [("toward_negative", True), ("nearest_even", False)])
def test_exact_zero_sum_sign_follows_ieee(mode, negative):
    mac = mm.MAC("fp16", accumulator=mm.ExactAccumulator("fp32", mode))
    r = mm.dot([1.0, -1.0], [1.0, 1.0], mac)
    seq = mm.dot([1.0, -1.0], [1.0, 1.0], mm.MAC("fp16", accumulator=mm.FloatAccumulator(
        "fp32", mode), product_format="fp32"))
    assert r.values == 0.0 and bool(np.signbit(r.values)) == negative == bool(
        np.signbit(seq.values))


def test_integer_formats_refuse_infinities():
    with pytest.raises(ValueError, match="cannot hold NaN or Inf"):
        mm.dot([1.0, np.inf], [1.0, 1.0], "int8->int32")


def test_promotion_applies_even_when_k_is_shorter_than_the_interval():
    # one int32 partial sum, 4097**2 = 2**24 + 8193, promoted into fp32 must round there
    mac = mm.MAC("int16", accumulator=mm.IntAccumulator(32), promote_every=128)
    r = mm.dot([4097.0], [4097.0], mac)
    assert r.values == float(np.float32(4097 * 4097)) != 4097 * 4097
    assert r.integers is None


def test_float32_and_float16_operands_compute_as_float64_ones():
    """Operands stored in float32/float16 are the same values in float64: the MAC's products and
    sums must not be carried out in the narrower dtype (a replay regression)."""
    rng = np.random.default_rng(11)
    a = rng.standard_normal((7, 40)).astype(np.float32)
    b = rng.standard_normal((40, 5)).astype(np.float32)
    for mac in (mm.MAC("fp32", accumulator=mm.FloatAccumulator("fp32")), "fp16->fp32",
                mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16", "toward_zero"))):
        ref = mm.matmul(a.astype(np.float64), b.astype(np.float64), mac).values
        assert np.array_equal(mm.matmul(a, b, mac).values, ref)
        h = mm.matmul(a.astype(np.float16), b.astype(np.float16), mac).values
        assert np.array_equal(h, mm.matmul(a.astype(np.float16).astype(np.float64),
                                           b.astype(np.float16).astype(np.float64), mac).values)
    # the fp32 x fp32 products need 48 bits: MPFR's fused multiply-add at 24 bits, one
    # rounding per step (the magnitudes here stay far from fp32's range limits)
    mac = mm.MAC("fp32", accumulator=mm.FloatAccumulator("fp32"))
    got = mm.matmul(a, b, mac).values
    with gmpy2.context(precision=24, round=gmpy2.RoundToNearest):
        for i in range(2):
            for j in range(2):
                s = gmpy2.mpfr(0)
                for k in range(40):
                    s = gmpy2.fma(gmpy2.mpfr(float(a[i, k])), gmpy2.mpfr(float(b[k, j])), s)
                assert got[i, j] == float(s)
