"""MPFR reference rounding (through gmpy2) for numsim's scalar floating-point formats.

Test-side helper, deliberately independent of ``formats``: a format is described by a
plain :class:`FloatSpec` (exponent bits, mantissa bits, bias, kind, subnormals, signed) and
this module decodes codes itself, forms exact results in MPFR and rounds them with MPFR.

How a value is rounded (``Rounder``):

1. The exact real value is rounded to ``mbits + 1`` bits by MPFR with the format's
   subnormal range (``emin`` set at the smallest subnormal, ``subnormalize=True``) but an
   exponent range unbounded above.  MPFR's significand lies in [0.5, 1), so a value
   2**k has MPFR exponent k + 1: the smallest subnormal 2**(emin - m) gives MPFR
   ``emin = 1 - bias - m + 1``.
   ``nearest_even``, ``toward_zero``, ``toward_positive`` and ``toward_negative`` map to
   MPFR's RNDN, RNDZ, RNDU and RNDD.  MPFR has no "nearest, ties away" mode:
   ``nearest_away`` takes the two neighbours from RNDD and RNDU and compares the exact value
   with their midpoint (formed exactly at high precision).
2. The rounded magnitude is then compared with the format's largest finite value and the
   overflow policy of the numsim contract is applied:
   ``saturate`` -> +-max in every mode; ``ieee`` -> nearest modes give +-Inf,
   ``toward_zero`` gives +-max, ``toward_positive`` gives +Inf / -max,
   ``toward_negative`` gives +max / -Inf; an Inf the format cannot hold becomes NaN, and
   where the format has no NaN either, +-max.
   An exactly infinite value (Inf input, or Inf operands) gives +-Inf under ``ieee``
   (NaN / +-max where the format lacks Inf / NaN) and +-max under ``saturate``.
3. Zeros: the sign of the exact value is kept (MPFR keeps it through underflow); ``fnuz``
   formats have no -0, so every zero is +0.  With ``subnormals=False`` a result that
   would be subnormal (after rounding with subnormals) becomes a zero of the same sign.
4. Unsigned formats (``signed=False``: no sign bit, codes are ``exponent | mantissa``) follow
   numsim's contract: a negative value that does not round to zero (in the mode, after the
   overflow policy and any flush) becomes NaN, or 0 where the format has no NaN; a zero
   that would be -0 is +0.  Rounding itself is the same as for the signed twin.

Exact results of add/sub/mul/fma are formed in an MPFR context of ``EXACT_PREC`` bits
that traps on inexact results, with RNDD for ``toward_negative`` and RNDN otherwise, so
that the IEEE 754 sign of exact-zero sums comes out right (+0, or -0 when rounding toward
negative; x + x keeps the sign of zero operands).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import gmpy2
import numpy as np

MODES = ("nearest_even", "nearest_away", "toward_zero", "toward_positive", "toward_negative")
POLICIES = ("ieee", "saturate")
KINDS = ("ieee", "fn", "fnuz", "finite")

# Enough for every exact result here: an fp32 fma spans 2**256 .. 2**-298.
EXACT_PREC = 2048
# MPFR exponent ceiling used while rounding: far above anything a float64 can hold.
_EMAX_UNBOUNDED = 1 << 20

_MPFR_MODE = {
    "nearest_even": gmpy2.RoundToNearest,
    "toward_zero": gmpy2.RoundToZero,
    "toward_positive": gmpy2.RoundUp,
    "toward_negative": gmpy2.RoundDown,
}


def default_bias(ebits: int) -> int:
    return 2 ** (ebits - 1) - 1


@dataclass(frozen=True)
class FloatSpec:
    """Plain description of a sign/exponent/mantissa format (sign bit on top, if signed)."""

    ebits: int
    mbits: int
    bias: int
    kind: str = "ieee"
    subnormals: bool = True
    signed: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}")
        if self.kind == "fnuz" and not self.signed:
            raise ValueError("fnuz keeps NaN at the negative-zero code: it needs a sign bit")

    @property
    def bits(self) -> int:
        return int(self.signed) + self.ebits + self.mbits

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal binade."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite binade."""
        top = 2**self.ebits - 1
        return (top - 1 if self.kind == "ieee" else top) - self.bias

    @property
    def max(self) -> float:
        m = self.mbits
        frac = 2.0 - 2.0 ** (1 - m) if self.kind == "fn" else 2.0 - 2.0**-m
        return math.ldexp(frac, self.emax)

    @property
    def ulp_top(self) -> float:
        """Spacing of the largest binade."""
        return math.ldexp(1.0, self.emax - self.mbits)

    @property
    def next_above_max(self) -> float:
        """The value after max if the exponent range were unbounded above."""
        return self.max + self.ulp_top

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float:
        return math.ldexp(1.0, self.emin - self.mbits)

    @property
    def epsilon(self) -> float:
        return math.ldexp(1.0, -self.mbits)

    @property
    def has_inf(self) -> bool:
        return self.kind == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.kind in ("ieee", "fn", "fnuz")

    @property
    def has_neg_zero(self) -> bool:
        return self.signed and self.kind != "fnuz"

    @property
    def default_overflow(self) -> str:
        return "ieee" if self.has_nan else "saturate"

    def replace(self, **kw) -> "FloatSpec":
        d = dict(ebits=self.ebits, mbits=self.mbits, bias=self.bias, kind=self.kind,
                 subnormals=self.subnormals, signed=self.signed)
        d.update(kw)
        return FloatSpec(**d)


# ----------------------------------------------------------------------------------------
# Codes <-> values, from the bit fields (independent of formats.decode)
# ----------------------------------------------------------------------------------------

def ref_decode(codes, spec: FloatSpec) -> np.ndarray:
    """Exact float64 value of every code (subnormal codes decode as subnormals)."""
    c = np.asarray(codes)
    if c.size and (int(c.min()) < 0 or int(c.max()) >= 1 << spec.bits):
        raise ValueError(f"code out of range for a {spec.bits}-bit format")
    c = c.astype(np.int64)
    m, e = spec.mbits, spec.ebits
    mant = c & ((1 << m) - 1)
    expf = (c >> m) & ((1 << e) - 1)
    neg = ((c >> (m + e)) & 1).astype(bool) if spec.signed else np.zeros(c.shape, bool)
    sub = np.ldexp(mant.astype(np.float64), spec.emin - m)
    nrm = np.ldexp(1.0 + np.ldexp(mant.astype(np.float64), -m), (expf - spec.bias).astype(np.int64))
    mag = np.where(expf == 0, sub, nrm)
    top = (1 << e) - 1
    if spec.kind == "ieee":
        mag = np.where((expf == top) & (mant == 0), np.inf, mag)
        mag = np.where((expf == top) & (mant != 0), np.nan, mag)
    elif spec.kind == "fn":
        mag = np.where((expf == top) & (mant == (1 << m) - 1), np.nan, mag)
    val = np.where(neg, -mag, mag)
    if spec.kind == "fnuz":
        val = np.where(c == (1 << (spec.bits - 1)), np.nan, val)
    return val


def ref_encode_exact(values, spec: FloatSpec) -> np.ndarray:
    """Code of values that the format holds exactly (NaN -> one canonical NaN code)."""
    v = np.asarray(values, dtype=np.float64)
    m, e = spec.mbits, spec.ebits
    neg = np.signbit(v)
    a = np.abs(v)
    fin = np.isfinite(a)
    af = np.where(fin, a, 1.0)
    _, k = np.frexp(af)                       # af = f * 2**k, f in [0.5, 1)
    unb = k.astype(np.int64) - 1
    normal = af >= spec.min_normal
    expf = np.where(normal, unb + spec.bias, 0)
    with np.errstate(over="ignore"):          # the subnormal branch of a huge normal value
        mant = np.where(normal, np.ldexp(np.ldexp(af, -unb) - 1.0, m), af / spec.min_subnormal)
    if np.any(fin & (mant != np.round(mant))):
        raise ValueError("value not exactly representable")
    code = (expf.astype(np.int64) << m) | mant.astype(np.int64)
    top = (1 << e) - 1
    if spec.kind == "ieee":
        code = np.where(np.isinf(a), top << m, code)
    if not spec.signed and np.any(neg & (a != 0) & ~np.isnan(v)):
        raise ValueError("negative value in an unsigned format")
    code = np.where(neg & (spec.has_neg_zero | (a != 0)) & spec.signed, code | (1 << (m + e)),
                    code)
    if np.any(np.isnan(v)):
        if spec.kind == "ieee":
            nan_code = (top << m) | (1 << (m - 1) if m else 1)
        elif spec.kind == "fn":
            nan_code = (top << m) | ((1 << m) - 1)
        elif spec.kind == "fnuz":
            nan_code = 1 << (spec.bits - 1)
        else:
            raise ValueError("format has no NaN")
        code = np.where(np.isnan(v), nan_code, code)
    if np.any(np.isinf(a)) and not spec.has_inf:
        raise ValueError("format has no Inf")
    back = ref_decode(code, spec)
    ok = (back.view(np.uint64) == v.view(np.uint64)) | np.isnan(v) | (~spec.has_neg_zero & (v == 0))
    if not ok.all():
        raise ValueError("value not exactly representable")
    return code.astype(np.uint64)


def all_codes(spec: FloatSpec) -> np.ndarray:
    return np.arange(1 << spec.bits, dtype=np.int64)


def finite_codes(spec: FloatSpec) -> np.ndarray:
    c = all_codes(spec)
    return c[np.isfinite(ref_decode(c, spec))]


def values_grid(spec: FloatSpec) -> np.ndarray:
    """Sorted non-negative finite values: 0, min_subnormal, ..., max (spec.bits <= 20)."""
    codes = all_codes(spec)
    v = ref_decode(codes[: 1 << (spec.bits - 1)] if spec.signed else codes, spec)
    v = v[np.isfinite(v)]
    return np.unique(v)


# ----------------------------------------------------------------------------------------
# Exact arithmetic in MPFR
# ----------------------------------------------------------------------------------------

def _exact_ctx(mode: str):
    rnd = gmpy2.RoundDown if mode == "toward_negative" else gmpy2.RoundToNearest
    return gmpy2.context(precision=EXACT_PREC, round=rnd, trap_inexact=True)


def _pack(objs) -> np.ndarray:
    """float64 array if every exact value is a float64, else an object array of mpfr."""
    f = np.array([float(x) for x in objs], dtype=np.float64)
    if all((fx == x) or (fx != fx) for fx, x in zip(f.tolist(), objs)):
        return f
    out = np.empty(len(objs), dtype=object)
    out[:] = objs
    return out


def exact_op(op: str, mode: str, a, b, c=None) -> np.ndarray:
    """Exact result of op on float64 operand arrays (sign of zero per IEEE 754 for mode)."""
    ctx = _exact_ctx(mode)
    a = np.asarray(a, dtype=np.float64).ravel().tolist()
    b = np.asarray(b, dtype=np.float64).ravel().tolist()
    if op == "add":
        f = ctx.add
        res = [f(x, y) for x, y in zip(a, b)]
    elif op == "sub":
        f = ctx.sub
        res = [f(x, y) for x, y in zip(a, b)]
    elif op == "mul":
        f = ctx.mul
        res = [f(x, y) for x, y in zip(a, b)]
    elif op == "fma":
        f = ctx.fma
        c = np.asarray(c, dtype=np.float64).ravel().tolist()
        res = [f(x, y, z) for x, y, z in zip(a, b, c)]
    else:
        raise ValueError(op)
    return _pack(res)


# ----------------------------------------------------------------------------------------
# Rounding
# ----------------------------------------------------------------------------------------

class Rounded:
    """Result of rounding exact values in an unbounded exponent range, before the policy."""

    def __init__(self, spec, mode, r, nan, inf_sign):
        self.spec, self.mode = spec, mode
        self.r = r                 # float64, rounded (finite entries), may exceed max
        self.nan = nan             # exact value was NaN
        self.inf_sign = inf_sign   # +1 / -1 where the exact value was +-Inf, else 0

    def finalize(self, policy: str | None) -> np.ndarray:
        spec, mode = self.spec, self.mode
        if policy is None:
            policy = spec.default_overflow
        if policy not in POLICIES:
            raise ValueError(policy)
        r = self.r.copy()
        mx = spec.max
        neg = np.signbit(r)
        inf_val = np.inf if spec.has_inf else (np.nan if spec.has_nan else mx)
        big = np.abs(r) > mx
        if policy == "saturate":
            over = np.full(r.shape, mx)
        else:
            if mode in ("nearest_even", "nearest_away"):
                to_inf = np.ones(r.shape, bool)
            elif mode == "toward_zero":
                to_inf = np.zeros(r.shape, bool)
            elif mode == "toward_positive":
                to_inf = ~neg
            elif mode == "toward_negative":
                to_inf = neg
            else:
                raise ValueError(mode)
            over = np.where(to_inf, inf_val, mx)
        r = np.where(big, np.where(neg, -over, over), r)
        # exact infinities
        if policy == "saturate":
            inf_res = mx
        else:
            inf_res = inf_val
        r = np.where(self.inf_sign > 0, inf_res, r)
        r = np.where(self.inf_sign < 0, -inf_res, r)
        r = np.where(self.nan, np.nan, r)
        if not spec.subnormals:
            tiny = (np.abs(r) < spec.min_normal) & (r != 0)
            r = np.where(tiny, np.copysign(0.0, r), r)
        if not spec.signed:
            # no sign: a negative value that did not round to zero is NaN (0 without NaN)
            r = np.where(r < 0, np.nan if spec.has_nan else 0.0, r)
        if not spec.has_neg_zero:
            r = np.where(r == 0, 0.0, r)
        return r


class Rounder:
    """MPFR rounding into one FloatSpec (contexts built once)."""

    def __init__(self, spec: FloatSpec):
        self.spec = spec
        p = spec.mbits + 1
        emin = spec.emin - spec.mbits + 1    # MPFR exponent of the smallest subnormal
        self.ctx = {
            name: gmpy2.context(precision=p, emin=emin, emax=_EMAX_UNBOUNDED,
                                subnormalize=True, round=rnd)
            for name, rnd in _MPFR_MODE.items()
        }
        self.hp = gmpy2.context(precision=EXACT_PREC, trap_inexact=True)

    # -- one list of finite exact values (float or mpfr) --------------------------------
    def _round_list(self, xs: list, mode: str) -> list:
        if mode == "nearest_away":
            down, up = self.ctx["toward_negative"].plus, self.ctx["toward_positive"].plus
            add, mul = self.hp.add, self.hp.mul
            out = []
            for x in xs:
                d, u = down(x), up(x)
                if d == u:
                    out.append(d)
                    continue
                mid = mul(add(d, u), 0.5)   # exact: d and u are (m+1)-bit numbers one ulp apart
                if x > 0:
                    out.append(u if x >= mid else d)
                else:
                    out.append(d if x <= mid else u)
            return out
        plus = self.ctx[mode].plus
        return [plus(x) for x in xs]

    def _round_objs(self, objs: list, mode: str) -> Rounded:
        n = len(objs)
        approx = np.array([float(x) for x in objs], dtype=np.float64)
        nan = np.isnan(approx)
        # float() reads a finite value beyond float64 as infinite: ask the exact value
        for i in np.flatnonzero(np.isinf(approx)).tolist():   # 0.0 marks it finite: MPFR
            approx[i] = approx[i] if gmpy2.is_infinite(objs[i]) else 0.0   # rounds it below
        inf_sign = np.where(np.isposinf(approx), 1, np.where(np.isneginf(approx), -1, 0))
        fin = np.flatnonzero(np.isfinite(approx))
        r = np.zeros(n, dtype=np.float64)
        if fin.size:
            rr = self._round_list([objs[i] for i in fin.tolist()], mode)
            with np.errstate(over="ignore"):
                r[fin] = np.array([float(x) for x in rr], dtype=np.float64)
        return Rounded(self.spec, mode, r, nan, inf_sign)

    def round(self, exact, mode: str) -> Rounded:
        """Round exact values (float64 array, or object array of mpfr) without policy."""
        if mode not in MODES:
            raise ValueError(mode)
        if isinstance(exact, np.ndarray) and exact.dtype == np.float64:
            flat = exact.ravel()
            keys, inv = np.unique(flat.view(np.uint64), return_inverse=True)
            res = self._round_objs(keys.view(np.float64).tolist(), mode)
            inv = inv.reshape(-1)
            return Rounded(self.spec, mode, res.r[inv], res.nan[inv], res.inf_sign[inv])
        return self._round_objs(list(np.asarray(exact, dtype=object).ravel()), mode)

    def __call__(self, exact, mode: str, policy: str | None) -> np.ndarray:
        return self.round(exact, mode).finalize(policy)


_ROUNDERS: dict = {}


def rounder(spec: FloatSpec) -> Rounder:
    if spec not in _ROUNDERS:
        _ROUNDERS[spec] = Rounder(spec)
    return _ROUNDERS[spec]


def oracle_round(exact, spec: FloatSpec, mode: str, policy: str | None) -> np.ndarray:
    """Final float64 value of each exact value rounded into spec (mode, overflow policy)."""
    return rounder(spec)(exact, mode, policy)


# ----------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------

def same_values(got, exp) -> np.ndarray:
    """Elementwise: identical float64 bit patterns (so zero signs count), or both NaN."""
    g = np.ascontiguousarray(got, dtype=np.float64)
    e = np.ascontiguousarray(exp, dtype=np.float64)
    return (g.view(np.uint64) == e.view(np.uint64)) | (np.isnan(g) & np.isnan(e))


def mismatch_report(ok, columns: dict, limit: int = 12) -> str:
    """Text table of the first mismatches; columns maps a name to an array."""
    bad = np.flatnonzero(~np.asarray(ok).ravel())
    lines = [f"{bad.size} mismatches of {np.asarray(ok).size}"]
    for i in bad[:limit].tolist():
        parts = []
        for k, v in columns.items():
            x = np.asarray(v).ravel()[i]
            if isinstance(x, (float, np.floating)):
                parts.append(f"{k}={float(x)!r}")
            else:
                parts.append(f"{k}={x!r}" if not isinstance(x, (np.integer,)) else f"{k}={int(x):#x}")
        lines.append("  " + " ".join(parts))
    return "\n".join(lines)
