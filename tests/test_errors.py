"""Bad input gets a ValueError or TypeError whose message names the problem."""
from __future__ import annotations

import numpy as np
import pytest

import formats
from formats import FloatFormat, IntFormat

FMTS = ["bf16", "fp8_e4m3", "fp4_e2m1", "e8m0", "int8", "fix8_4", "uint4"]


def _ops(fmt):
    """(label, callable taking **kw) for every entry point that takes rounding options."""
    x = np.array([1.0, 2.0])
    c = fmt.encode(x)
    other = formats.get("fp8_e5m2")
    return [
        ("encode", lambda **kw: fmt.encode(x, **kw)),
        ("quantize", lambda **kw: fmt.quantize(x, **kw)),
        ("add", lambda **kw: fmt.add(c, c, **kw)),
        ("sub", lambda **kw: fmt.sub(c, c, **kw)),
        ("mul", lambda **kw: fmt.mul(c, c, **kw)),
        ("fma", lambda **kw: fmt.fma(c, c, c, **kw)),
        ("convert", lambda **kw: fmt.convert(c, other, **kw)),
    ]


# ---- names -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,close", [("fp8_e4m2", "fp8_e4m3"), ("bf61", "bf16"),
                                        ("fp8_e5m2fnz", "fp8_e5m2fnuz"), ("int9x", "int8"),
                                        ("fp_32", "fp32")])
def test_unknown_name_lists_close_matches(name, close):
    with pytest.raises(ValueError) as info:
        formats.get(name)
    msg = str(info.value)
    assert name in msg and close in msg, msg


@pytest.mark.parametrize("name", ["", "foo", "e4m3fnx", "int", "fixed8", "e4m3_b", "E4M3",
                                  "e4m3fn_bx", "fp8"])
def test_unknown_name(name):
    with pytest.raises(ValueError, match="unknown format"):
        formats.get(name)


@pytest.mark.parametrize("name", [42, None, 8.0, b"fp32"])
def test_name_not_a_string(name):
    with pytest.raises(TypeError, match="string"):
        formats.get(name)


# ---- rounding modes and overflow policies ------------------------------------------------------

@pytest.mark.parametrize("name", FMTS)
@pytest.mark.parametrize("bad", ["nearest", "NEAREST_EVEN", "round_half_even", "stochastic ",
                                 "", None, 0])
def test_unknown_rounding_mode(name, bad):
    for label, op in _ops(formats.get(name)):
        with pytest.raises(ValueError) as info:
            op(rounding=bad)
        msg = str(info.value)
        assert "rounding" in msg and repr(bad) in msg and "nearest_even" in msg, (label, msg)


@pytest.mark.parametrize("name", FMTS)
@pytest.mark.parametrize("bad", ["clamp", "Saturate", "", 1])
def test_unknown_overflow_policy(name, bad):
    for label, op in _ops(formats.get(name)):
        with pytest.raises(ValueError) as info:
            op(overflow=bad)
        msg = str(info.value)
        assert "overflow" in msg and repr(bad) in msg and "saturate" in msg, (label, msg)


@pytest.mark.parametrize("name", ["bf16", "fp8_e4m3", "fp4_e2m1", "e8m0", "ue4m3fn"])
def test_wrap_is_not_a_float_policy(name):
    for label, op in _ops(formats.get(name)):
        if label == "convert":
            continue                     # the policy belongs to the target (fp8_e5m2)
        with pytest.raises(ValueError, match="overflow policy 'wrap'.*ieee"):
            op(overflow="wrap")


@pytest.mark.parametrize("name", ["int8", "uint4", "fix8_4"])
def test_ieee_is_not_an_integer_policy(name):
    fmt = formats.get(name)
    with pytest.raises(ValueError, match="overflow policy 'ieee'.*wrap"):
        fmt.encode(np.array([1.0]), overflow="ieee")
    c = fmt.encode(np.array([1.0]))
    with pytest.raises(ValueError, match="overflow policy 'ieee'"):
        fmt.add(c, c, overflow="ieee")
    with pytest.raises(ValueError, match="overflow policy 'ieee'"):
        formats.get("bf16").convert(np.array([0x3F80], dtype=np.uint16), fmt, overflow="ieee")


# ---- widths and kinds ------------------------------------------------------------------------

@pytest.mark.parametrize("args,field", [((0, 3), "ebits"), ((11, 3), "ebits"), ((-1, 3), "ebits"),
                                        ((5, 24), "mbits"), ((5, -1), "mbits"),
                                        ((8, 100), "mbits")])
def test_float_widths_out_of_range(args, field):
    with pytest.raises(ValueError, match=field):
        FloatFormat(*args)


@pytest.mark.parametrize("args,field", [((4.0, 3), "ebits"), ((4, 3.0), "mbits"),
                                        (("4", 3), "ebits"), ((True, 3), "ebits")])
def test_float_widths_not_integers(args, field):
    with pytest.raises(TypeError, match=field):
        FloatFormat(*args)


@pytest.mark.parametrize("kw,field", [({"bits": 0}, "bits"), ({"bits": 33}, "bits"),
                                      ({"bits": -8}, "bits"), ({"bits": 8, "frac_bits": 33},
                                                               "frac_bits"),
                                      ({"bits": 8, "frac_bits": -1}, "frac_bits")])
def test_int_widths_out_of_range(kw, field):
    with pytest.raises(ValueError, match=field):
        IntFormat(**kw)


@pytest.mark.parametrize("kw,field", [({"bits": 8.0}, "bits"), ({"bits": 8, "frac_bits": 2.0},
                                                                 "frac_bits")])
def test_int_widths_not_integers(kw, field):
    with pytest.raises(TypeError, match=field):
        IntFormat(**kw)


@pytest.mark.parametrize("name,field", [("e11m2", "ebits"), ("e0m3", "ebits"), ("e5m24", "mbits"),
                                        ("int33", "bits"), ("int0", "bits"), ("uint64", "bits"),
                                        ("fix8_33", "frac_bits"), ("ufix40_8", "bits")])
def test_grammar_widths_out_of_range(name, field):
    with pytest.raises(ValueError, match=field):
        formats.get(name)


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind 'ocp'.*fnuz"):
        FloatFormat(4, 3, kind="ocp")


@pytest.mark.parametrize("make", [lambda: FloatFormat(4, 3, kind="fnuz", signed=False),
                                  lambda: formats.get("ue4m3fnuz"),
                                  lambda: formats.get("ue5m2fnuz_b16")])
def test_fnuz_unsigned(make):
    with pytest.raises(ValueError, match="fnuz.*signed"):
        make()


@pytest.mark.parametrize("make", [lambda: FloatFormat(5, 0), lambda: formats.get("e5m0"),
                                  lambda: FloatFormat(8, 0, kind="ieee", signed=False)])
def test_ieee_needs_a_mantissa(make):
    with pytest.raises(ValueError, match="mbits"):
        make()


@pytest.mark.parametrize("kw", [{"signed": True}, {"signed": False, "mbits": 1}])
def test_e8m0_shape(kw):
    args = {"ebits": 8, "mbits": 0, "kind": "e8m0", **kw}
    with pytest.raises(ValueError, match="e8m0"):
        FloatFormat(**args)


# Biases that put the smallest step below 2**-537 or the largest value at/above 2**512.
# e8m7 (bf16-like, default bias 127): max = 1.99 * 2**(254 - bias), min step 2**(-6 - bias).
BAD_BIASES = [
    (8, 7, "ieee", 600),          # min step 2**-606
    (8, 7, "ieee", 532),          # min step 2**-538 (one binade too small)
    (8, 7, "ieee", -258),         # max ~ 2**512
    (8, 7, "ieee", -500),
    (8, 7, "ieee", -775),         # max ~ 2**1029: beyond float64 itself
    (8, 7, "ieee", -1000),
    (10, 23, "ieee", -10),        # max ~ 2**1032
    (10, 23, "ieee", 0),
    (5, 2, "fn", -995),
    (10, 0, "fn", -1000),
    (8, 0, "e8m0", -800),
]


@pytest.mark.parametrize("e,m,kind,bias", BAD_BIASES,
                         ids=[f"e{e}m{m}{k}_b{b}" for e, m, k, b in BAD_BIASES])
def test_bias_out_of_float64_range(e, m, kind, bias):
    kw = {"signed": False} if kind == "e8m0" else {}
    with pytest.raises(ValueError, match=r"bias.*2\*\*-537"):
        FloatFormat(e, m, bias=bias, kind=kind, **kw)


@pytest.mark.parametrize("name", ["e8m7_b600", "e8m7_b-500", "e8m7_b-800", "e10m23_b0"])
def test_bias_out_of_range_by_name(name):
    with pytest.raises(ValueError, match="bias"):
        formats.get(name)


@pytest.mark.parametrize("bias", [531, -257])
def test_bias_at_the_edge_is_accepted(bias):
    """The limits themselves are fine: e8m7 with bias 531 has min step exactly 2**-537, with
    bias -257 its max is just below 2**512."""
    f = FloatFormat(8, 7, bias=bias)
    assert f.min_subnormal == 2.0**(-6 - bias)
    assert f.max == (2 - 2.0**-7) * 2.0**(254 - bias)


def test_bias_not_an_integer():
    with pytest.raises(TypeError, match="bias"):
        FloatFormat(4, 3, bias=7.0)
    with pytest.raises(ValueError, match="bias"):
        FloatFormat(4, 3, bias=5000)


# ---- bad arrays ------------------------------------------------------------------------------

BAD_REALS = [np.array([1 + 2j]), np.array([1.0], dtype=np.complex64), np.array(["1.5"]),
             np.array([b"1"]), np.array([1.0, None], dtype=object), np.array([1], dtype=object),
             "1.5", [1.0, "a"], np.array(["2020-01-01"], dtype="datetime64[D]")]
if np.dtype(np.longdouble).itemsize > 8 and np.finfo(np.longdouble).nmant > 52:
    BAD_REALS.append(np.array([1.0], dtype=np.longdouble))


@pytest.mark.parametrize("name", FMTS)
@pytest.mark.parametrize("k", range(len(BAD_REALS)))
def test_non_real_input(name, k):
    fmt = formats.get(name)
    x = BAD_REALS[k]
    with pytest.raises(TypeError, match="dtype|real|precision"):
        fmt.encode(x)
    with pytest.raises(TypeError, match="dtype|real|precision"):
        fmt.quantize(x, "stochastic")


@pytest.mark.parametrize("name", FMTS)
@pytest.mark.parametrize("codes", [np.array([1.0]), np.array([1.0], dtype=np.float32),
                                   np.array([1 + 0j]), np.array(["1"]),
                                   np.array([1], dtype=object), 1.0, [1.5, 2.0]])
def test_non_integer_codes(name, codes):
    fmt = formats.get(name)
    with pytest.raises(TypeError, match="integer"):
        fmt.decode(codes)
    good = fmt.encode(np.array([1.0]))
    with pytest.raises(TypeError, match="integer"):
        fmt.add(codes, good)
    with pytest.raises(TypeError, match="integer"):
        fmt.fma(good, good, codes)
    with pytest.raises(TypeError, match="integer"):
        fmt.convert(codes, formats.get("bf16"))


@pytest.mark.parametrize("name,bad", [("fp8_e4m3", 256), ("fp8_e4m3", -1), ("fp4_e2m1", 16),
                                      ("int4", 16), ("bf16", 1 << 16), ("e5m7", 1 << 13),
                                      ("fp32", 1 << 32), ("fp32", 2**64 - 1), ("int8", -128),
                                      ("fix8_4", 300), ("ue4m3fn", 128), ("uint2", 4)])
def test_codes_outside_the_width(name, bad):
    fmt = formats.get(name)
    dt = np.uint64 if bad >= 2**63 else np.int64
    codes = np.array([0, bad, 1], dtype=dt)
    with pytest.raises(ValueError, match=f"code {bad}.*{fmt.bits}-bit"):
        fmt.decode(codes)
    with pytest.raises(ValueError, match=str(bad)):
        fmt.add(codes, codes[::-1])
    with pytest.raises(ValueError, match=str(bad)):
        fmt.mul(np.zeros(3, dtype=np.uint8), codes)
    with pytest.raises(ValueError, match=str(bad)):
        fmt.convert(codes, formats.get("fp32"))


def test_codes_in_a_wider_dtype_are_fine():
    """Only the values matter: codes of an 8-bit format in an int64 array decode normally."""
    f = formats.get("fp8_e4m3")
    assert f.decode(np.array([0x38, 0x40], dtype=np.int64)).tolist() == [1.0, 2.0]
    assert f.decode(np.array([0x38], dtype=np.uint64)).tolist() == [1.0]


def test_fits_in_takes_a_float_dtype():
    with pytest.raises(TypeError, match="float dtype"):
        formats.get("int8").fits_in(np.int32)
    import ml_dtypes                       # NumPy's finfo knows its floats
    assert formats.get("fp8_e4m3").fits_in(ml_dtypes.bfloat16)
    assert not formats.get("fp16").fits_in(ml_dtypes.bfloat16)


def test_values_only_for_small_formats():
    with pytest.raises(ValueError, match="16 bits"):
        formats.get("fp32").values()
    with pytest.raises(ValueError, match="16 bits"):
        formats.get("int32").values()


# ---- values a format cannot hold --------------------------------------------------------------

NO_NAN = ["fp4_e2m1", "fp6_e3m2", "fp6_e2m3", "ue2m1finite", "int8", "uint8", "fix8_4", "int32"]
MODES = ["nearest_even", "nearest_away", "toward_zero", "toward_positive", "toward_negative",
         "stochastic"]


@pytest.mark.parametrize("name", NO_NAN)
def test_nan_into_a_format_without_nan(name):
    fmt = formats.get(name)
    policies = fmt.overflow_policies
    for dt in (np.float64, np.float32, np.float16):
        x = np.array([1.0, np.nan, 2.0], dtype=dt)
        for mode in MODES:
            for policy in policies:
                with pytest.raises(ValueError, match="NaN"):
                    fmt.encode(x, mode, overflow=policy)
                with pytest.raises(ValueError, match="NaN"):
                    fmt.quantize(x, mode, overflow=policy)
    with pytest.raises(ValueError, match=f"{name}.*NaN"):
        fmt.encode(np.array(-np.nan))
    # converting a NaN code from another format
    bf = formats.get("bf16")
    with pytest.raises(ValueError, match="NaN"):
        bf.convert(bf.encode(np.array([1.0, np.nan])), fmt)


@pytest.mark.parametrize("name", ["int8", "uint8", "fix8_4", "int32", "uint4"])
def test_inf_into_integer_with_wrap(name):
    fmt = formats.get(name)
    for x in (np.array([1.0, np.inf]), np.array([-np.inf, 0.0], dtype=np.float32)):
        for mode in MODES:
            with pytest.raises(ValueError, match="infinite.*wrap|wrap.*infinite"):
                fmt.encode(x, mode, overflow="wrap")
            with pytest.raises(ValueError, match="infinite"):
                fmt.quantize(x, mode, overflow="wrap")
    bf = formats.get("bf16")
    with pytest.raises(ValueError, match="infinite"):
        bf.convert(bf.encode(np.array([np.inf])), fmt, overflow="wrap")
    # saturate is fine
    assert fmt.encode(np.array([np.inf]), overflow="saturate").item() == \
        fmt.encode(np.array([fmt.max])).item()


# ---- other arguments ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1.5, "7", [1, 2], True])
def test_bad_seed(seed):
    with pytest.raises(TypeError, match="seed"):
        formats.get("bf16").encode(np.array([1.3]), "stochastic", seed=seed)
    with pytest.raises(TypeError, match="seed"):
        formats.get("int8").encode(np.array([1.3]), "stochastic", seed=seed)
    with pytest.raises(TypeError, match="seed"):                  # unused, but still wrong
        formats.get("fp16").quantize(np.array([1.3]), seed=seed)


@pytest.mark.parametrize("n", [0, -5, 1.5, "1000", True])
def test_bad_chunk_size(n):
    old = formats.get_chunk_size()
    with pytest.raises(ValueError, match="chunk size"):
        formats.set_chunk_size(n)
    with pytest.raises(ValueError, match="chunk size"):
        with formats.chunk_size(n):
            pass
    assert formats.get_chunk_size() == old


def test_convert_takes_a_name_and_refuses_scaled_formats():
    fp16 = formats.get("fp16")
    codes = fp16.encode([1.0, 2.0**-11, 3.0e4])
    assert np.array_equal(fp16.convert(codes, "bf16"), fp16.convert(codes, formats.get("bf16")))
    with pytest.raises(TypeError, match="mxfp4 is not one"):
        fp16.convert(codes, "mxfp4")
    with pytest.raises(ValueError, match="unknown format"):
        fp16.convert(codes, "bf17")


def test_operand_shapes_must_broadcast():
    f = formats.get("bf16")
    with pytest.raises(ValueError):
        f.add(np.zeros(3, dtype=np.uint16), np.zeros(4, dtype=np.uint16))
