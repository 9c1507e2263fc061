"""The MAC kernels of ``mac_models/gpu/mac.cu`` against the Numba kernels, bit for bit.

Each case runs ``matmul`` / ``dot`` / ``conv2d`` with ``backend="cpu"`` and with
``backend="gpu"`` on the ``gpu_engine`` fixture (the CUDA sources compiled for the host, and a
real GPU when there is one) and asks for the same values (as bit patterns) and the same
statistics: every preset, and custom MACs covering each accumulator kind, rounding mode, Kahan,
fused and unfused products, the three orders, promotion and block-scaled operands, on random and
adversarial matrices.
"""
import numpy as np
import pytest

from formats import FloatFormat, ScaledFormat, get, gpu
from mac_models import (MAC, AlignedAccumulator, ExactAccumulator, FloatAccumulator,
                        IntAccumulator, QuireAccumulator, conv2d, dot, matmul, preset,
                        preset_names)
from tests.conftest import GpuEngine

FA, IA, AA, EA, QA = (FloatAccumulator, IntAccumulator, AlignedAccumulator, ExactAccumulator,
                      QuireAccumulator)
MODES = ("nearest_even", "nearest_away", "toward_zero", "toward_positive", "toward_negative")
STATS = ("overflows", "saturations", "swamped", "macs")


def assert_same_result(cpu, dev, engine, what: str) -> None:
    """Values and every MacResult statistic of the two engines identical."""
    assert type(engine.back(dev.values)) is np.ndarray
    engine.same(dev.values, cpu.values, what)
    for field in STATS:
        assert getattr(dev, field) == getattr(cpu, field), (what, field, getattr(dev, field),
                                                            getattr(cpu, field))
    engine.same(np.float64(dev.max_abs_partial), np.float64(cpu.max_abs_partial),
                f"{what} max_abs_partial")
    assert (dev.integers is None) == (cpu.integers is None), what
    if cpu.integers is not None:
        np.testing.assert_array_equal(engine.back(dev.integers), cpu.integers, err_msg=what)


def compare(engine, op, arrays, mac, what: str, **kw) -> None:
    """``op`` on the CPU and on the engine; the same exception, or the same result."""
    try:
        cpu = op(*arrays, mac, backend="cpu", **kw)
    except (ValueError, TypeError) as err:
        with pytest.raises(type(err)):
            op(*map(engine.to, arrays), mac, backend="gpu", **kw)
        return
    dev = op(*map(engine.to, arrays), mac, backend="gpu", **kw)
    assert gpu.is_device_array(dev.values) == (engine.name != "host")
    assert_same_result(cpu, dev, engine, what)


# ---- matrices ----------------------------------------------------------------------------------
def _data(kind: str, m: int, k: int, n: int, seed: int = 0, scale: float = 3.0):
    """(A, B) of one kind: random, huge dynamic range, growing sums, cancellation, swamping,
    overflow and special values."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)) * scale
    b = rng.standard_normal((k, n)) * scale
    if kind == "range":                       # 2**-20 .. 2**6: within fp8_e4m3 mostly
        a *= 2.0 ** rng.integers(-20, 6, (m, k))
        b *= 2.0 ** rng.integers(-20, 6, (k, n))
    elif kind == "positive":                  # sums that only grow: wraps, saturation
        a, b = np.abs(a), np.abs(b)
    elif kind == "cancel":                      # pairs of products that cancel exactly
        a[:, 1::2] = -a[:, 0::2][:, :k // 2]
        b[1::2] = b[0::2][:k // 2]
        a[0, -1] = 0.0 if k % 2 else a[0, -1]
    elif kind == "swamp":                       # a big first product, then small ones
        a[:, 0] = 2.0 ** 8
        b[0] = 2.0 ** 6
        a[:, 1:] *= 2.0 ** -6
    elif kind == "overflow":                    # within fp8_e4m3, beyond fp16 when multiplied
        a = np.clip(a * 100, -440, 440)
        b = np.clip(b * 100, -440, 440)
    elif kind == "special":
        a[0, 3], a[1, 5], b[7, 2], b[2, 4] = np.inf, -np.inf, np.nan, np.inf
        a[2, :] = 6e4
        a[3, 0], a[3, 1], b[1] = np.inf, -np.inf, b[0]       # Inf - Inf within one group
    return a, b


KINDS = ("random", "range", "positive", "cancel", "swamp", "overflow", "special")


# ---- the designs ------------------------------------------------------------------------------
def _custom_macs() -> dict:
    fp8 = "fp8_e4m3"
    macs = {f"fp16_{r}": MAC(fp8, accumulator=FA("fp16", r)) for r in MODES}
    macs.update({
        "fp16_sr32": MAC(fp8, accumulator=FA("fp16", "stochastic", seed=7)),
        "bf16_sr1": MAC(fp8, accumulator=FA("bf16", "stochastic", seed=8, sr_bits=1)),
        "e5m2_sr8": MAC(fp8, accumulator=FA("fp8_e5m2", "stochastic", seed=9, sr_bits=8)),
        "e5m2_up_sat": MAC("fp8_e5m2", accumulator=FA("fp8_e5m2", "toward_positive",
                                                       overflow="saturate")),
        "fp16_sat": MAC(fp8, accumulator=FA("fp16", overflow="saturate")),
        "tf32_away": MAC("bf16", accumulator=FA("tf32", "nearest_away")),
        "kahan_fp16": MAC(fp8, accumulator=FA("fp16", kahan=True)),
        "kahan_bf16_rz": MAC(fp8, accumulator=FA("bf16", "toward_zero", kahan=True)),
        "kahan_sr": MAC(fp8, accumulator=FA("fp16", "stochastic", kahan=True, seed=5,
                                             sr_bits=8)),
        "unfused_fp16": MAC("fp16", accumulator=FA("fp16"), fused=False),
        "unfused_sr": MAC("bf16", accumulator=FA("bf16", "stochastic", seed=4), fused=False),
        "unfused_sat": MAC("bf16", accumulator=FA("fp16", overflow="saturate"), fused=False),
        "prodfmt_bf16": MAC("fp16", accumulator=FA("fp32"), product_format="bf16",
                            product_rounding="toward_zero"),
        "pairwise_fp16": MAC(fp8, accumulator=FA("fp16"), order="pairwise"),
        "pairwise_sr": MAC(fp8, accumulator=FA("bf16", "stochastic", seed=3),
                           order="pairwise"),
        "pairwise_unfused": MAC("fp16", accumulator=FA("fp16", "toward_negative"),
                                order="pairwise", fused=False),
        # fp32 with 32 random bits: thresholds reach below float64's bits of the sum
        "pairwise_fp32_sr": MAC("bf16", accumulator=FA("fp32", "stochastic", seed=7),
                                order="pairwise"),
        "fp32_sr": MAC("bf16", accumulator=FA("fp32", "stochastic", seed=8)),
        "kahan_fp32_sr": MAC("bf16", accumulator=FA("fp32", "stochastic", kahan=True, seed=9)),
        "chunks3": MAC(fp8, accumulator=FA("fp16"), chunks=3),
        "chunks_sr": MAC(fp8, accumulator=FA("bf16", "stochastic", seed=2), chunks=5),
        "promote16": MAC(fp8, accumulator=FA("fp16"), promote_every=16),
        "promote_sr": MAC(fp8, accumulator=FA("fp16", "toward_zero"), promote_every=10,
                          promote_to=FA("bf16", "stochastic", seed=6)),
        "fp32_native": MAC("bf16", accumulator=FA("fp32")),
        "fp32_exactpath": MAC("bf16", accumulator=FA("fp32", "toward_zero")),
        "int16_sat": MAC("int8", accumulator=IA(16, "saturate")),
        "int12_wrap": MAC("int4", accumulator=IA(12, "wrap")),
        "int40_wrap": MAC("int16", accumulator=IA(40, "wrap")),
        "int32_sat_int16": MAC("int16", accumulator=IA(32, "saturate")),
        "fix_int24": MAC("fix8_6", accumulator=IA(24)),
        "int_promote": MAC("int8", accumulator=IA(18, "wrap"), promote_every=12,
                           promote_to=FA("fp16", "toward_positive")),
        "int_promote_sat": MAC("int8", accumulator=IA(18, "saturate"), promote_every=24),
        "aligned4x14": MAC(fp8, accumulator=AA(4, 14)),
        "aligned8x10r": MAC(fp8, accumulator=AA(8, 10, "round", "fp16", "nearest_even")),
        "aligned4x10_e4m3": MAC("fp16", accumulator=AA(4, 10, "truncate", fp8)),   # no Inf
        "aligned3x20_promote": MAC("bf16", accumulator=AA(3, 20, "round", "bf16",
                                                          "toward_positive"),
                                   promote_every=12),
        "exact_fp32": MAC("bf16", accumulator=EA("fp32")),
        "exact_fp16_down": MAC(fp8, accumulator=EA("fp16", "toward_negative")),
        "exact_sr": MAC(fp8, accumulator=EA("bf16", "stochastic", seed=11, sr_bits=8)),
        "exact_e4m3_rz": MAC("fp8_e5m2", accumulator=EA(fp8, "toward_zero")),
        "quire8_sr": MAC("posit8_0", accumulator=QA("posit8_0", "stochastic", seed=12)),
        "quire16_2_rz": MAC("posit16_2", accumulator=QA("posit16_2", "toward_zero")),
        "mx_mixed": MAC("mxfp8_e4m3", b_format="mxfp4", accumulator=FA("fp32")),
        "int8_channel": MAC("int8_channel", accumulator=FA("fp16", "toward_zero")),
        "nvfp4_sr": MAC("nvfp4", accumulator=FA("bf16", "stochastic", seed=1)),
        "uint8_g16": MAC("uint8_g16", accumulator=FA("fp32")),
        "mxint8_int": MAC("mxint8", accumulator=IA(24)),
        "mx_aligned": MAC("mxfp8_e4m3", accumulator=AA(8, 12)),
    })
    return macs


CUSTOM = _custom_macs()


@pytest.mark.parametrize("name", preset_names())
def test_presets(gpu_engine, name):
    mac = preset(name)
    scale = 60.0 if isinstance(mac.accumulator, IA) else 3.0
    for kind in ("random", "range", "positive"):
        a, b = _data(kind, 8, 64, 8, seed=1, scale=scale)
        compare(gpu_engine, matmul, (a, b), name, f"{name}/{kind}")


@pytest.mark.parametrize("name", ["fp8_e4m3->fp32_h100", "mxfp4->fp32", "nvfp4->fp32",
                                  "int8->int16", "posit16_quire"])
def test_presets_long_k(gpu_engine, name):
    a, b = _data("random", 3, 300, 4, seed=2, scale=40.0)
    compare(gpu_engine, matmul, (a, b), name, f"{name}/K=300")


@pytest.mark.parametrize("name", list(CUSTOM))
def test_custom(gpu_engine, name):
    mac = CUSTOM[name]
    scale = 30.0 if isinstance(mac.accumulator, IA) else 3.0
    for kind in KINDS:
        a, b = _data(kind, 8, 64, 8, seed=3, scale=scale)
        compare(gpu_engine, matmul, (a, b), mac, f"{name}/{kind}")


@pytest.mark.parametrize("k", [1, 2, 3, 7, 33, 100])
@pytest.mark.parametrize("name", ["pairwise_sr", "pairwise_unfused", "pairwise_fp32_sr",
                                  "chunks_sr", "aligned4x14", "promote_sr", "exact_sr",
                                  "int_promote"])
def test_odd_lengths(gpu_engine, name, k):
    a, b = _data("random", 3, k, 5, seed=k)
    compare(gpu_engine, matmul, (a, b), CUSTOM[name], f"{name}/K={k}")


def test_swamping_and_overflow_counted(gpu_engine):
    """The adversarial cases do raise the events (so equal statistics mean something)."""
    a, b = _data("swamp", 4, 64, 4)
    r = matmul(gpu_engine.to(a), gpu_engine.to(b), CUSTOM["fp16_nearest_even"], backend="gpu")
    assert r.swamped > 0
    a, b = _data("overflow", 4, 64, 4)
    r = matmul(gpu_engine.to(a), gpu_engine.to(b), CUSTOM["fp16_sat"], backend="gpu")
    assert r.saturations > 0
    r = matmul(gpu_engine.to(a * 10), gpu_engine.to(b * 10), "int8->int16", backend="gpu")
    assert r.overflows > 0


def test_native_fp32_overflow(gpu_engine):
    a, b = _data("random", 4, 32, 4)
    compare(gpu_engine, matmul, (a * 1e19, b * 1e19), CUSTOM["fp32_native"], "fp32 overflow")


def test_scale_all_tensor_scale(gpu_engine):
    """nvfp4's per-tensor scale applied to the results (scale_all) on both engines."""
    a, b = _data("range", 6, 32, 5, seed=4)
    compare(gpu_engine, matmul, (a, b), MAC("nvfp4", accumulator=FA("fp16", "toward_zero"),
                                            promote_to=FA("fp16", "stochastic", seed=3,
                                                                 overflow="saturate")),
            "nvfp4 tensor scale")


def test_huge_block_scales(gpu_engine):
    """Scales near 2**511 (an e8m0 scale biased up): the combine step's addends lie beyond
    float64, and block sums of both signs meet in the register, in every mode."""
    scale = FloatFormat(8, 0, bias=-257, kind="e8m0", signed=False)
    fmt = ScaledFormat("fp8_e4m3", scale=scale, group=16)
    a, b = _data("random", 4, 64, 5, seed=8, scale=2.0 ** 512)
    a[0, :16] = 2.0 ** 260                  # a block near the smallest scale
    for r in MODES + ("stochastic",):
        acc = FA("fp32", r, seed=2)
        compare(gpu_engine, matmul, (a, b), MAC(fmt, accumulator=acc, promote_to=acc),
                f"huge scales {r}")


def test_batched_and_dot(gpu_engine):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 3, 6, 16))
    b = rng.standard_normal((16, 5))
    for name in ("fp16_sr32", "int16_sat", "quire8_sr"):
        scale = 30.0 if name == "int16_sat" else 1.0
        compare(gpu_engine, matmul, (a * scale, b * scale), CUSTOM[name], f"batched {name}")
    compare(gpu_engine, dot, (a[0, 0, 0], b[:, 0]), CUSTOM["kahan_sr"], "dot")
    compare(gpu_engine, dot, (a[0, 0, 0] * 40, b[:, 0] * 40), "int8->int32", "dot int")


def test_conv2d(gpu_engine):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 7, 7))
    w = rng.standard_normal((6, 2, 3, 3))
    scaled = [MAC(f, accumulator=FA("fp32")) for f in ("nvfp4", "int8_channel")]
    for mac in (CUSTOM["chunks_sr"], "int8->int32", CUSTOM["aligned8x10r"], *scaled):
        scale = 40.0 if mac == "int8->int32" else 1.0
        compare(gpu_engine, conv2d, (x * scale, w * scale), mac, f"conv2d {mac}", stride=2,
                padding=1, groups=2)
    x6, w6 = rng.standard_normal((1, 6, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    for mac in scaled:      # 3 channels a group: nvfp4 stores each group on its own, padded
        compare(gpu_engine, conv2d, (x6, w6), mac, f"conv2d {mac}, 3 per group", padding=1,
                groups=2)
    xd, wd = rng.standard_normal((2, 8, 5, 5)), rng.standard_normal((8, 1, 3, 3))
    for mac in (MAC("mxfp8_e4m3", accumulator=FA("fp32")), *scaled):   # taps are blocks
        compare(gpu_engine, conv2d, (xd, wd), mac, f"conv2d {mac}, depthwise", groups=8)


def test_empty_operands(gpu_engine):
    """K = 0 (empty sums, exactly zero) and M = 0 on the engine's arrays, as on the CPU."""
    for m, k, n in ((3, 0, 4), (0, 8, 4)):
        a, b = _data("random", m, k, n)
        for mac in ("int8->int32", CUSTOM["fp16_sr32"]):
            compare(gpu_engine, matmul, (a, b), mac, f"{m}x{k}x{n} {mac}")


def test_ml_dtypes_numpy_operands_on_the_gpu(stand_in):
    """NumPy arrays of ml_dtypes types (which CuPy cannot hold) are read as float64 before they
    move to the GPU: matmul, conv2d and the formats with backend="gpu", and a bfloat16 NumPy
    operand beside a CuPy one, give the CPU's result for the same values in float64."""
    import ml_dtypes
    rng = np.random.default_rng(8)
    a = rng.standard_normal((4, 32)).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal((32, 3)).astype(ml_dtypes.float8_e5m2)
    wa, wb = a.astype(np.float64), b.astype(np.float64)
    engine = GpuEngine("stand-in", stand_in.asarray, stand_in.asnumpy)
    for mac in ("bf16->fp32", CUSTOM["fp16_sr32"]):
        cpu = matmul(wa, wb, mac, backend="cpu")
        assert_same_result(cpu, matmul(a, b, mac, backend="gpu"), engine, f"gpu {mac}")
        assert_same_result(cpu, matmul(stand_in.asarray(wa), b, mac), engine, f"mixed {mac}")
    x, w = a.reshape(1, 2, 8, 8), b.ravel()[:18].reshape(3, 2, 3, 1)
    assert_same_result(conv2d(x.astype(np.float64), w.astype(np.float64), "bf16->fp32",
                              backend="cpu"),
                       conv2d(x, w, "bf16->fp32", backend="gpu"), engine, "conv2d")
    for name in ("fp8_e4m3", "mxfp4"):
        fmt = get(name)
        np.testing.assert_array_equal(stand_in.asnumpy(fmt.quantize(a, backend="gpu")),
                                      fmt.quantize(wa, backend="cpu"))


def test_errors_match(gpu_engine):
    """Operand errors raise the CPU's exception on the GPU path too."""
    a, b = _data("special", 4, 16, 8)
    compare(gpu_engine, matmul, (a, b), "int8->int32", "int with NaN")
    compare(gpu_engine, matmul, (a[:, :8], b), CUSTOM["fp16_sr32"], "shape mismatch")


def test_float_format_object_accumulator(gpu_engine):
    """An accumulator of an arbitrary FloatFormat (no subnormals, few exponent bits)."""
    fmt = FloatFormat(4, 6, subnormals=False)
    a, b = _data("range", 5, 40, 5, seed=7, scale=0.5)
    for r in ("nearest_even", "stochastic"):
        compare(gpu_engine, matmul, (a, b), MAC("fp8_e4m3", accumulator=FA(fmt, r, seed=1)),
                f"{fmt.name} {r}")
