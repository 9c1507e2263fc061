"""Scaled and block formats: a scalar element format plus one scale per group of elements.

``ScaledFormat(element, scale, group, rule, ...)`` covers OCP MX (block 32, E8M0 scale, the
spec's ``floor`` rule or the ``ceil``/``even``/``rceil`` rules stacks use instead), NVFP4 (e2m1
in blocks of 16, UE4M3 block scale, FP32 tensor scale), block floating point, integer
quantization per tensor, channel or group, codebooks such as NF4, and 2-D tiles.

Conventions
-----------
* ``group``: an int k = blocks of k consecutive elements along ``axis`` (the last block may be
  shorter: it is padded with zeros in concept, which changes neither its scale nor its other
  elements; pass ``pad=False`` to the format to make a ragged axis an error instead);
  ``"channel"`` = one scale per index along ``axis`` over all other elements; ``"tensor"`` =
  one scale for everything; a pair (tm, tn) = tiles over the last two axes.
* Scale rules.  Power-of-two rules need an ``e8m0`` scale: ``floor`` (OCP MX:
  ``floor(log2 amax) - emax_elem``, from amax's bits), ``ceil`` (one more when amax is not a
  power of two), ``even`` (amax rounded to the element's precision first, then floor), ``rceil``
  (the smallest power of two with ``amax <= elem_max * 2**E``, as NVIDIA's libraries do).  The
  ``amax`` rule stores ``amax / elem_max`` (divided by the tensor scale, if any) rounded into
  any scale format, ``scale_rounding`` ``nearest_even`` (default) or ``toward_positive``.
* Elements are rounded once from the exact ``x / scale`` in any rounding mode (stochastic
  included, keyed by the element's flat index in ``x``) and saturate to +-max of the element
  format; ``ScaledTensor.n_clipped`` counts elements whose exact scaled value lay outside the
  element format's range (beyond +-max; for integers outside the code range after the zero
  point), including those within half a step of it that round to its end anyway.
* Scales are clamped to the scale format's range (E8M0: 2**-127..2**127; others: a scale that
  rounds to 0 or past the largest value is held at the smallest positive or largest value),
  counted in ``ScaledTensor.n_scale_clamped``.  An all-zero group
  takes the smallest scale.  A group holding NaN or +-Inf gets the scale format's NaN code and
  decodes to NaN throughout (OCP MX's rule, applied to every scale format), counted in
  ``n_nan_groups``; for ``group="tensor"`` that is the whole tensor.
* Calibration (``calibration=`` of encode/quantize): ``"max"`` (default) scales each group by
  its amax; ``"percentile"`` by the ``percentile``-th percentile of its |x| (default 99.9);
  ``"mse"`` by whichever of ``mse_grid`` candidate ranges ``amax * (1 - 0.7 * j / mse_grid)``
  gives the group the smallest squared error after quantization (each candidate quantized
  with nearest-even; ties go to the larger range).  Values beyond the range saturate.
* ``hadamard=b`` applies :func:`formats.hadamard_transform` (blocks of b along ``axis``, signs
  from ``hadamard_seed``) before quantizing and undoes it exactly after decoding.
  ``hadamard_seed=None`` draws one random seed when the format is made, kept in
  ``hadamard_seed`` (both directions must use the same signs; None without ``hadamard``).
* Asymmetric integers: an unsigned integer element (``uint4``, ``uint8``, ...; ``amax`` rule)
  adds a zero point per group.  With ``lo = min(min x, 0)`` and ``hi = max(max x, 0)`` (so 0 is
  always exact), the scale is ``(hi - lo) / qmax`` rounded once into the scale format, the zero
  point ``zp = clamp(round_half_even(-lo / scale), 0, qmax)`` (exact), each element
  ``k = clamp(round(x / scale) + zp, 0, qmax)`` and its value ``(k - zp) * scale``, as PyTorch's
  and GPTQ's affine quantization define it.  Zero points are stored in ``ScaledTensor.zero_points``
  (the element's width; counted in ``bits_per_element``).  Calibration clips ``lo`` and ``hi``
  separately: percentiles ``100 - p`` and ``p`` of x, or ``mse`` candidates
  ``(lo, hi) * (1 - 0.7 * j / mse_grid)``.
* ``backend=`` of encode/decode/quantize: ``"auto"`` (the GPU for CuPy input), ``"cpu"`` (the
  Numba kernels) or ``"gpu"`` (the CUDA kernels of ``formats/gpu/scaled.cu``, bit for bit the
  same results); arrays come back in the caller's kind (CuPy in, CuPy out).
* ``tensor_scale=True`` adds a second-level FP32 scale ``amax_tensor / (scale_max * elem_max)``
  (NVFP4's per-tensor scale; amax over the finite values; 1 when that is 0; at least fp32's
  smallest positive value 2**-149).
* ``name``: given, or ``element/scale/group/rule`` followed by each option that differs from
  its default (``scale_toward_positive``, ``tensor_scale``, ``int_min``, ``no_pad``,
  ``hadamard<b>[_seed<s>]``); a tile is written ``<rows>x<cols>``.
"""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import float_kernels as fk
from . import gpu
from . import scaled_kernels as sk
from .codebook import CodebookFormat
from .floats import FloatFormat
from .gpu.scaled_kernels import ScaledKernels
from .hadamard import hadamard_transform
from .integers import IntFormat
from .packing import pack_codes
from .rounding import (IEEE, NEAREST_EVEN, SATURATE, check_seed, mode_id, resolve_sr_bits,
                       seed_key)
from .scalar import (ScalarFormat, as_real_array, check_bool, check_int, checked_out, deliver,
                     read_only, writes_directly)

SCALE_ROUNDINGS = ("nearest_even", "toward_positive")


@dataclass(frozen=True)
class ScaledTensor:
    """What :meth:`ScaledFormat.encode` returns: codes, scales and the layout to decode them.

    ``elements`` has the input's shape; ``scales`` (and ``zero_points``, ``clipped``,
    ``flags``) has the input's rank, each axis holding the number of groups along it (1 for
    axes a group spans entirely).
    """

    format: "ScaledFormat"
    elements: np.ndarray
    scales: np.ndarray
    axis: int
    tensor_scale: float
    clipped: np.ndarray          # per group: elements beyond the element format's range
    flags: np.ndarray            # per group: sk.FLAG_CLAMPED | sk.FLAG_NAN
    zero_points: np.ndarray | None = None    # per group, for asymmetric integer elements

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the encoded tensor."""
        return self.elements.shape

    @property
    def n_clipped(self) -> int:
        """Elements whose exact scaled value (after the zero point) lay outside the element
        format's range [min, max].  Those within half a step of the range round to its end
        anyway; they are counted all the same (the count says how much of the distribution
        the scale leaves outside, not how many codes changed)."""
        return int(self.clipped.sum())

    @property
    def n_scale_clamped(self) -> int:
        """Groups whose scale was clamped to the scale format's range."""
        return int(np.count_nonzero(self.flags & sk.FLAG_CLAMPED))

    def packed_elements(self) -> np.ndarray:
        """The element codes as a little-endian bitstream, e.g. two 4-bit codes per byte (see
        :func:`formats.pack_codes`)."""
        return pack_codes(self.elements, self.format.element.bits)

    @property
    def n_nan_groups(self) -> int:
        """Groups that held NaN or Inf (they decode to NaN)."""
        return int(np.count_nonzero(self.flags & sk.FLAG_NAN))


def _int_grid_desc(fmt: IntFormat, allow_min: bool) -> tuple[int, ...]:
    """A float descriptor whose values are exactly the integer grid ``k * 2**-frac_bits``,
    all subnormal (emin = mbits - frac_bits): signed, |k| <= qmax (mbits = bits - 1), or with
    ``allow_min`` |k| <= 2**(bits-1); unsigned (zero point), |k| <= qmax = 2**bits - 1
    (mbits = bits), wide enough for any ``k - zp``.  The kernel clamps to the code range."""
    mb = fmt.bits - 1 if fmt.signed else fmt.bits
    max_mag = (1 << mb) if (allow_min and fmt.signed) else (1 << mb) - 1
    fields = {"mbits": mb, "emin": mb - fmt.frac_bits, "max_mag": max_mag,
              "sign_bit": 1 << (mb + 1),
              "nan_code": -1, "inf_mag": -1, "subnormals": 1, "no_zero": 0, "neg_zero": 0,
              "fnuz_nan": 0}
    return tuple(fields[f] for f in fk.FIELDS)


class ScaledFormat:
    """An element format, a scale format, a grouping and a scale rule (see the module doc)."""

    def __init__(self, element: ScalarFormat | str, scale: ScalarFormat | str = "e8m0",
                 group: int | str | tuple[int, int] = 32, rule: str = "floor",
                 scale_rounding: str = "nearest_even", tensor_scale: bool = False,
                 int_min: bool = False, pad: bool = True, hadamard: int | None = None,
                 hadamard_seed: int | None = 0, name: str | None = None):
        from .registry import get                        # the registry builds ScaledFormats
        self.element = get(element)
        self.scale = get(scale)
        if not isinstance(self.element, (FloatFormat, IntFormat, CodebookFormat)):
            raise TypeError(f"element format {self.element.name} is not a float, integer or "
                            f"codebook format")
        if not isinstance(self.scale, FloatFormat) or not self.scale.has_nan:
            raise ValueError(f"the scale format must be a float format with NaN (fp32, fp16, "
                             f"bf16, e8m0, e4m3, ...), got {self.scale.name}")
        self.group = _check_group(group)
        if rule not in sk.RULES:
            raise ValueError(f"unknown scale rule {rule!r}; choose one of {', '.join(sk.RULES)}")
        if rule != "amax" and self.scale.kind != "e8m0":
            raise ValueError(f"scale rule {rule!r} makes power-of-two scales: it needs an e8m0 "
                             f"scale, not {self.scale.name} (use rule='amax')")
        self.rule = rule
        tensor_scale = check_bool("tensor_scale", tensor_scale)
        int_min = check_bool("int_min", int_min)
        self.pad = check_bool("pad", pad)
        if int_min and not (isinstance(self.element, IntFormat) and self.element.signed):
            raise ValueError(f"int_min lets a signed integer element reach -2**(bits-1); "
                             f"{self.element.name} is not one")
        self.zero_point = isinstance(self.element, IntFormat) and not self.element.signed
        if self.zero_point and (rule != "amax" or tensor_scale or self.element.frac_bits):
            raise ValueError(f"unsigned element {self.element.name} means an asymmetric format "
                             f"with a zero point: it needs rule='amax', a plain uintN (no "
                             f"fraction bits) and no tensor scale")
        if scale_rounding not in SCALE_ROUNDINGS:
            raise ValueError(f"scale_rounding must be one of {', '.join(SCALE_ROUNDINGS)}, got "
                             f"{scale_rounding!r}")
        self.scale_rounding = scale_rounding
        self.tensor_scale = tensor_scale
        self.int_min = int_min
        self.hadamard = hadamard
        check_seed(hadamard_seed, "hadamard_seed")
        self.hadamard_seed = None                 # without a rotation the seed means nothing
        if hadamard is not None:
            self.hadamard_seed = secrets.randbits(64) if hadamard_seed is None else hadamard_seed
            hadamard_transform(np.zeros(hadamard), hadamard, seed=self.hadamard_seed)  # validates
        self.name = name or self._default_name()
        self._plan, self._elem = self._build_plan()

    def _default_name(self) -> str:
        """``element/scale/group/rule`` and every option that differs from its default, so
        that two formats that quantize differently never share a name."""
        group = "x".join(map(str, self.group)) if isinstance(self.group, tuple) else self.group
        parts = [self.element.name, self.scale.name, str(group), self.rule]
        if self.scale_rounding != "nearest_even":
            parts.append(f"scale_{self.scale_rounding}")
        if self.tensor_scale:
            parts.append("tensor_scale")
        if self.int_min:
            parts.append("int_min")
        if not self.pad:
            parts.append("no_pad")
        if self.hadamard:
            parts.append(f"hadamard{self.hadamard}"
                         + (f"_seed{self.hadamard_seed}" if self.hadamard_seed else ""))
        return "/".join(parts)

    # ---- the kernel parameters -----------------------------------------------------------
    def _build_plan(self):
        el, sc = self.element, self.scale
        table = by_code = np.zeros(1)
        tcodes = np.zeros(1, dtype=np.int64)
        int_bits = int_qmin = int_qmax = 0
        if isinstance(el, CodebookFormat):
            kind, ed = sk.ELEM_CODEBOOK, sc._desc          # ed unused: any float descriptor
            table, tcodes, by_code = el._sorted, el._sorted_codes, el.table
            elem_max, prec = float(np.max(np.abs(el.table))), 53
        elif isinstance(el, IntFormat):
            kind, ed = sk.ELEM_INT, _int_grid_desc(el, self.int_min)
            # signed elements are symmetric (-qmax) unless int_min allows -2**(bits-1)
            int_bits, int_qmax = el.bits, el.qmax
            int_qmin = -el.qmax if el.signed and not self.int_min else el.qmin
            elem_max, prec = el.max, el.bits - 1
        else:
            kind, ed = sk.ELEM_FLOAT, el._desc
            elem_max, prec = el.max, el.mbits + 1
        if not elem_max > 0:
            raise ValueError(f"element format {el.name} has no positive values to scale")
        scale_min = 0 if sc.kind == "e8m0" else (1 if sc.subnormals and sc.mbits else
                                                 1 << sc.mbits)
        plan = {"rule": sk.RULES[self.rule], "elem_kind": kind,
                "elem_emax": math.floor(math.log2(elem_max)), "elem_prec": prec,
                "int_bits": int_bits, "int_qmin": int_qmin, "int_qmax": int_qmax,
                "zero_point": int(self.zero_point),
                "scale_nan": sc._desc[fk.NAN_CODE], "scale_min": scale_min,
                "scale_mode": mode_id(self.scale_rounding), "scale_lo_exp": sc.emin,
                "scale_hi_exp": sc.emin + 254, "fast_nearest": 0, "fast_scale": 0}
        elem = {"desc": ed, "kind": kind, "max": float(elem_max), "table": table,
                "codes": tcodes, "by_code": by_code}
        return tuple(int(plan[f]) for f in sk.PLAN), elem

    @property
    def bits_per_element(self) -> float:
        """Element bits plus the stored scale bits (a whole byte or word: NVFP4's 7-bit UE4M3 is
        kept in 8) and zero-point bits (the element's width) spread over a full group: MXFP4
        4 + 8/32 = 4.25, NVFP4 4 + 8/16 = 4.5, uint4_g128 4 + (32 + 4)/128.  The tensor scale
        and per-tensor/channel scales are counted as 0 per element (they amortise over the
        tensor)."""
        scale_bits = 8 * self.scale.code_dtype.itemsize + (
            self.element.bits if self.zero_point else 0)
        if isinstance(self.group, int):
            return self.element.bits + scale_bits / self.group
        if isinstance(self.group, tuple):
            return self.element.bits + scale_bits / (self.group[0] * self.group[1])
        return float(self.element.bits)

    # ---- layout --------------------------------------------------------------------------
    def _layout(self, shape: tuple[int, ...], axis: int):
        """(3-D view shape, group sizes, scales shape in the input's rank); an empty input has
        no scales (each scales axis is at most the input's axis)."""
        view, groups, scales = self._grouping(shape, axis)
        return view, groups, tuple(min(s, n) for s, n in zip(scales, shape))

    def _grouping(self, shape: tuple[int, ...], axis: int):
        ndim = len(shape)
        if isinstance(self.group, tuple):
            if ndim < 2:
                raise ValueError(f"{self.name} tiles the last two axes; got a {ndim}-D array")
            tm, tn = self.group
            a, m, n = math.prod(shape[:-2]), shape[-2], shape[-1]
            self._check_ragged(m, tm, ndim - 2)
            self._check_ragged(n, tn, ndim - 1)
            scales = shape[:-2] + (-(-m // tm), -(-n // tn))
            return (a, m, n), (1, tm, tn), scales
        before, size, after = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
        if self.group == "tensor":
            return (1, before * size * after, 1), (1, max(before * size * after, 1), 1), \
                (1,) * ndim
        if self.group == "channel":
            return (before, size, after), (max(before, 1), 1, max(after, 1)), tuple(
                size if d == axis else 1 for d in range(ndim))
        self._check_ragged(size, self.group, axis)
        scales = shape[:axis] + (-(-size // self.group),) + shape[axis + 1:]
        return (before, size, after), (1, self.group, 1), scales

    def _check_ragged(self, size: int, block: int, axis: int) -> None:
        if not self.pad and size % block:
            raise ValueError(f"{self.name}: axis {axis} has {size} elements, not a multiple of "
                             f"the block size {block} (padding is off)")

    def _prepare(self, x, axis: int, launch=None):
        arr = as_real_array(x)
        xp = gpu.array_module(launch)
        if launch is not None:
            arr = gpu.to_backend(launch, arr)
        if arr.ndim == 0:
            raise ValueError(f"{self.name} needs at least a 1-D array (a group of elements); "
                             f"got a 0-d array")
        axis = _normalize_axis(axis, arr.ndim)
        if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
            # float16 (Numba cannot read it) widens exactly; integers go through float64,
            # which must hold them exactly (a second rounding would be silently wrong)
            half = arr.dtype.newbyteorder("=") == np.float16
            wide = arr.astype(np.float32 if half else np.float64)
            if arr.dtype.kind in "iu" and arr.size:
                beyond = 2.0 ** (8 * arr.dtype.itemsize - (arr.dtype.kind == "i"))  # 2**63, 2**64
                if not (bool((wide < beyond).all())                 # max rounds up to it
                        and bool(xp.array_equal(wide.astype(arr.dtype), arr))):
                    raise ValueError(f"{self.name}: integer inputs that float64 cannot hold "
                                     f"exactly (some beyond 2**53) cannot be scaled exactly; "
                                     f"convert them to float64 first if that rounding is "
                                     f"acceptable")
            arr = wide
        if self.hadamard is not None:
            arr = self._rotate(gpu.as_float64(launch, arr), axis, launch)
        arr = read_only(xp.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("=")))
        view, groups, scales_shape = self._layout(arr.shape, axis)
        n_groups = tuple(-(-v // g) if v else 0 for v, g in zip(view, groups))
        return arr, axis, arr.reshape(view), groups, scales_shape, n_groups

    def _tensor_scale(self, flat, launch=None) -> float:
        if not self.tensor_scale:
            return 1.0
        amax = _kernels(launch).finite_amax(_bits(flat)) if flat.size else 0.0
        if amax == 0.0:
            return 1.0
        fp32 = FloatFormat(8, 23)._desc
        # amax / (scale_max * elem_max), rounded once to fp32 (the divisor is exact), held at
        # fp32's smallest positive value rather than underflowing to 0
        scale = sk.round_quotient(amax, self.scale.max * self._elem["max"], fp32,
                                  fk.special_codes(fp32, 0, SATURATE))
        return max(scale, 2.0 ** -149)

    def _fast_nearest(self, dtype: np.dtype) -> bool:
        """Whether nearest-even quantize and encode may round ``x / scale`` computed in float64
        in the value domain.  With power-of-two scales the quotient is exact.  Otherwise
        q = fl(x / s) is within half an ulp of x / s.  A rounding midpoint m of the element grid
        (pm significant bits) times s (ps bits, the tensor scale included) is exact in float64
        when pm + ps <= 53, so x / s equals m only if x == m * s (then q == m too), and
        otherwise |x - m*s| is at least the float64 spacing at x (or half of it just below a
        power of two, where the quotient's binade drops with it), which over s exceeds half an
        ulp of q: q lies strictly on the same side of m as x / s.  The bound on the input's
        precision px (float32 inputs pass, float64 ones do not) is a margin kept on top."""
        el = self.element
        if isinstance(el, CodebookFormat) or (isinstance(el, FloatFormat) and el.mbits < 1):
            return False
        if self.rule != "amax":
            return True
        px = np.finfo(dtype).nmant + 1
        pm = (el.mbits + 2) if isinstance(el, FloatFormat) else el.bits + int(self.zero_point)
        ps = self.scale._precision()[0] + (24 if self.tensor_scale else 0)
        return max(px - 1, pm + ps - 2) + 1 < 53

    def _fast_scale(self, dtype: np.dtype) -> bool:
        """Whether quantize may round an ``amax`` scale to nearest-even in the value domain from
        the float64 quotient ``amax / (elem_max * tensor_scale)``: the argument of
        :meth:`_fast_nearest` with the scale format's midpoints (mbits + 2 bits) times the
        divisor (pd bits) exact in float64; it holds for any float64 amax (a calibrated one
        too).  The px bound is kept as the same margin."""
        sc = self.scale
        if (self.rule != "amax" or self.zero_point or self.scale_rounding != "nearest_even"
                or sc.mbits < 1):
            return False
        px = np.finfo(dtype).nmant + 1
        pd = _significant_bits(self._elem["max"]) + (24 if self.tensor_scale else 0)
        return pd <= 53 and max(px - 1, sc.mbits + 2 + pd - 2) + 1 < 53

    def _kernel(self, view, groups, n_groups, dtype, mode: int, key, sr: int,
                clip: np.ndarray, to_value: bool, t_scale: float, launch=None, values=None):
        """One pass of the group kernel: (codes, values, scales, zero points, clipped, flags),
        flat, as arrays of the launcher's module (NumPy on the CPU: ``launch`` None).  ``values``:
        a flat float64 array of the launcher's module to write the values into."""
        el = self._elem
        esp = fk.special_codes(el["desc"], mode, SATURATE)
        espv = fk.special_values(el["desc"], mode, SATURATE)    # floats and integer grids
        sd = self.scale._desc
        ssp = fk.special_codes(sd, mode_id(self.scale_rounding), IEEE)   # see the kernel
        sspv = fk.special_values(sd, NEAREST_EVEN, IEEE)
        size = view.size
        # one buffer dtype for every format's codes and scales: one compiled kernel per mode
        # and input dtype, not per (element, scale) dtype pair (compiling is the slow part)
        xp, kernels = gpu.array_module(launch), _kernels(launch)
        codes = xp.empty(size if not to_value else 1, dtype=np.uint32)
        if values is None:
            values = xp.empty(size if to_value else 1, dtype=np.float64)
        scales = xp.empty(math.prod(n_groups), dtype=np.int64)
        zps = xp.zeros(scales.size, dtype=np.int64)
        clipped = xp.zeros(scales.size, dtype=np.int64)
        flags = xp.zeros(scales.size, dtype=np.int8)
        if size:
            plan = self._plan[:sk.P_FAST] + (int(self._fast_nearest(dtype)),
                                             int(self._fast_scale(dtype)))
            flat = view.reshape(-1)
            if (self.group == "channel" and view.shape[2] == 1 and mode == NEAREST_EVEN
                    and plan[sk.P_FAST]):               # channels along the last axis
                kernels.channel_loop(flat, _bits(flat), view.shape[0], view.shape[1], plan,
                                     el["max"], t_scale, el["desc"], esp, espv, sd, ssp, sspv,
                                     clip, to_value, codes, scales, zps, values, clipped, flags)
            else:
                kernels.group_loop(flat, _bits(flat), view.shape, groups, plan, el["max"],
                                   t_scale, el["desc"], esp, espv, sd, ssp, sspv, el["table"],
                                   el["codes"], mode, key, sr, clip, to_value, codes, scales,
                                   zps, values, clipped, flags)
        return (codes.astype(self.element.code_dtype), values,
                scales.astype(self.scale.code_dtype), zps.astype(self.element.code_dtype),
                clipped, flags)

    def _run(self, x, axis, rounding, seed, sr_bits, to_value, calibration, percentile,
             mse_grid, launch, values=None):
        arr, axis, view, groups, scales_shape, n_groups = self._prepare(x, axis, launch)
        mode = mode_id(rounding)
        key = seed_key(seed, rounding)
        sr = resolve_sr_bits(sr_bits)
        t_scale = self._tensor_scale(arr.reshape(-1), launch)
        clip = self._calibrate(view, groups, n_groups, t_scale, calibration, percentile,
                               mse_grid, launch)
        out = self._kernel(view, groups, n_groups, arr.dtype, mode, key, sr, clip, to_value,
                           t_scale, launch, values)
        return (arr, axis, scales_shape, t_scale) + out

    # ---- calibration ---------------------------------------------------------------------
    def _calibrate(self, view, groups, n_groups, t_scale: float, method: str,
                   percentile: float, mse_grid: int, launch=None) -> np.ndarray:
        """Per-group clipping ranges, rows [lo, hi] (empty for ``"max"``: the kernel uses each
        group's measured range).  Symmetric formats clip |x|, so lo = -hi.  The statistics are
        computed with NumPy (on a host copy for the GPU); the MSE candidates are quantized on
        ``launch``'s engine."""
        if method == "max":
            return np.empty((0, 2))
        if method not in ("percentile", "mse"):
            raise ValueError(f"unknown calibration {method!r}; choose max, percentile or mse")
        if method == "percentile" and (isinstance(percentile, bool) or not isinstance(
                percentile, (int, float, np.integer, np.floating))):
            raise TypeError(f"percentile must be a number, got {percentile!r}")
        if method == "percentile" and not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        if method == "percentile" and self.zero_point and percentile < 50:
            raise ValueError(f"{self.name} clips x at its (100 - p)th and p-th percentiles: "
                             f"percentile must be at least 50, got {percentile}")
        if method == "mse":
            mse_grid = check_int("mse_grid", mse_grid, 1, 1 << 12)
        exact = _group_matrix(_host(launch, view), groups)
        if not exact.size:
            return np.empty((0, 2))
        with np.errstate(all="ignore"):
            if self.zero_point:
                pcts = (100 - percentile, percentile) if method == "percentile" else (0, 100)
                lo, hi = (np.nanpercentile(exact, q, axis=1) for q in pcts)
            else:
                hi = np.nanpercentile(np.abs(exact), percentile if method == "percentile"
                                      else 100, axis=1)
                lo = -hi
        bounds = np.stack([lo, hi], axis=1)
        if method == "percentile":
            return bounds
        best = bounds.copy()
        best_err = np.full(len(bounds), np.inf)
        for j in range(mse_grid):
            candidate = bounds * (1.0 - 0.7 * j / mse_grid)
            values = _host(launch, self._kernel(view, groups, n_groups, view.dtype,
                                                NEAREST_EVEN, np.uint64(0), 32, candidate,
                                                True, t_scale, launch)[1])
            err = np.nansum((_group_matrix(values.reshape(view.shape), groups) - exact) ** 2,
                            axis=1)
            better = err < best_err
            best[better] = candidate[better]
            best_err[better] = err[better]
        return best

    # ---- the public interface ------------------------------------------------------------
    def encode(self, x, axis: int = -1, rounding: str = "nearest_even", seed: int | None = None,
               sr_bits: int | None = None, calibration: str = "max", percentile: float = 99.9,
               mse_grid: int = 32, backend: str = "auto") -> ScaledTensor:
        """Element codes and group scales of ``x`` (groups along ``axis``; calibration of each
        group's range as in the module doc).  ``backend``: "auto" (the GPU for CuPy input),
        "cpu" or "gpu" (see :mod:`formats.gpu`); the arrays come back in ``x``'s kind."""
        launch = gpu.resolve(backend, x)
        arr, axis, scales_shape, t_scale, codes, _, scales, zps, clipped, flags = self._run(
            x, axis, rounding, seed, sr_bits, False, calibration, percentile, mse_grid, launch)

        def back(a, shape):
            return gpu.to_caller(launch, a.reshape(shape), x)
        return ScaledTensor(self, back(codes, arr.shape), back(scales, scales_shape), axis,
                            t_scale, back(clipped, scales_shape), back(flags, scales_shape),
                            back(zps, scales_shape) if self.zero_point else None)

    def decode(self, st: ScaledTensor, backend: str = "auto") -> np.ndarray:
        """float64 values of a :class:`ScaledTensor` (exact: element value times scale), on
        ``backend`` (see :meth:`encode`; "auto" follows the kind of ``st.elements``)."""
        if not isinstance(st, ScaledTensor):
            raise TypeError(f"decode takes a ScaledTensor (from encode), got {type(st).__name__}")
        if st.format != self:
            raise ValueError(f"this ScaledTensor was encoded with {st.format.name}, not "
                             f"{self.name}")
        launch = gpu.resolve(backend, st.elements)
        view, groups, scales_shape = self._layout(st.shape, st.axis)
        n_groups = tuple(-(-v // g) if v else 0 for v, g in zip(view, groups))
        out = gpu.array_module(launch).empty(view, dtype=np.float64)
        zps = st.zero_points if self.zero_point else np.zeros(st.scales.shape, np.int64)
        if out.size:
            _kernels(launch).decode_groups(
                st.elements.reshape(view), st.scales.reshape(n_groups), zps.reshape(n_groups),
                *groups, self._plan, st.tensor_scale, self._elem["desc"], self.scale._desc,
                self._elem["by_code"], out)
        return gpu.to_caller(launch, self._unrotate(out.reshape(st.shape), st.axis, launch),
                             st.elements)

    def _rotate(self, arr, axis: int, launch=None, inverse: bool = False):
        """The Hadamard transform of the format (or its inverse) along ``axis``, with the array
        module of ``launch`` (NumPy arrays go through the Numba kernel)."""
        return hadamard_transform(arr, self.hadamard, axis, self.hadamard_seed, inverse,
                                  xp=None if launch is None else launch.xp)

    def _unrotate(self, values, axis: int, launch=None):
        if self.hadamard is None:
            return values
        return self._rotate(values, axis, launch, inverse=True)

    def quantize(self, x, axis: int = -1, rounding: str = "nearest_even",
                 seed: int | None = None, sr_bits: int | None = None, calibration: str = "max",
                 percentile: float = 99.9, mse_grid: int = 32,
                 backend: str = "auto", out: Any = None) -> np.ndarray:
        """``decode(encode(x))`` in one pass, as float64 (``backend``: see :meth:`encode`).
        ``out``: a float64 array of ``x``'s shape to write the values into and return; every
        check runs before anything is written.  The kernels write into ``out`` directly (so
        repeated quantizes of one shape skip the first-touch cost of a new array's pages)
        unless it overlaps ``x``, the format has a Hadamard transform, or ``out`` lives on the
        other engine's side: then a new result is copied into it."""
        launch = gpu.resolve(backend, x)
        src = as_real_array(x)
        direct = None
        if out is not None:
            checked_out(out, src.shape, np.float64, x)
            if self.hadamard is None and writes_directly(out, launch, src):
                direct = out.reshape(-1)
        arr, axis, _, _, _, values, _, _, _, _ = self._run(src, axis, rounding, seed, sr_bits, True,
                                                        calibration, percentile, mse_grid, launch,
                                                        direct)
        result = self._unrotate(values.reshape(arr.shape), axis, launch)
        return deliver(out, out if direct is not None else gpu.to_caller(launch, result, x))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScaledFormat) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        return (self.element, self.scale, self.group, self.rule, self.scale_rounding,
                self.tensor_scale, self.int_min, self.pad, self.hadamard, self.hadamard_seed)

    def __repr__(self) -> str:
        return f"<ScaledFormat {self.name}>"


def _group_matrix(view: np.ndarray, groups) -> np.ndarray:
    """The groups of a 3-D view as rows of a float64 matrix, NaN-padded to full groups."""
    padded = [-(-n // g) * g for n, g in zip(view.shape, groups)]
    full = np.full(padded, np.nan)
    full[:view.shape[0], :view.shape[1], :view.shape[2]] = view
    (gp, gq, gr), (pp, pq, pr) = groups, padded
    blocks = full.reshape(pp // gp, gp, pq // gq, gq, pr // gr, gr).transpose(0, 2, 4, 1, 3, 5)
    return blocks.reshape(-1, gp * gq * gr)


def _kernels(launch):
    """The Numba kernels, or their CUDA twins on ``launch`` (see formats.gpu)."""
    return sk if launch is None else ScaledKernels(launch)


def _host(launch, a) -> np.ndarray:
    """``a`` as a NumPy array (a host copy of a device array)."""
    return np.asarray(gpu.to_caller(launch, a, None))


def _bits(flat: np.ndarray) -> np.ndarray:
    """The IEEE bits of a flat float32/float64 array, as a uint32/uint64 view (no copy)."""
    return flat.view(np.uint32 if flat.itemsize == 4 else np.uint64)


def _significant_bits(v: float) -> int:
    """Significant bits of a finite nonzero float64 (6.0: 2, 448.0: 3, 127.0: 7)."""
    m = int(math.ldexp(math.frexp(abs(v))[0], 53))
    return 53 - ((m & -m).bit_length() - 1)


def _check_group(group):
    if group in ("tensor", "channel"):
        return group
    if isinstance(group, tuple) and len(group) == 2 and all(
            isinstance(g, (int, np.integer)) and not isinstance(g, bool) and g >= 1
            for g in group):
        return (int(group[0]), int(group[1]))
    if isinstance(group, (int, np.integer)) and not isinstance(group, bool) and group >= 1:
        return int(group)
    raise ValueError(f"group must be a positive block size, 'channel', 'tensor' or a (rows, "
                     f"cols) tile, got {group!r}")


def _normalize_axis(axis, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}-D array")
    return int(axis) % ndim
