"""Rounding modes, overflow policies and the shared rounding decision.

Conventions
-----------
* Modes: ``nearest_even`` (default), ``nearest_away``, ``toward_zero``, ``toward_positive``,
  ``toward_negative`` and ``stochastic``.
* Stochastic rounding rounds a value away from zero with probability
  ``floor(f * 2**sr_bits) / 2**sr_bits``, where ``f`` in [0, 1) is the discarded fraction of one unit
  in the last place.  ``sr_bits`` is 1..32, default 32.  Hardware keeps a few random bits (8 to 16 is common); 32 is
  close to ideal stochastic rounding.
  The random bits come from :func:`random_bits`, a counter-based generator keyed by
  ``(seed, flat element index)``: the same seed gives the same bits whatever the chunk size, thread
  count or backend.
* Overflow policies: ``saturate``, ``ieee`` (floats), ``wrap`` (integers).

The numba helpers below work on unsigned 64-bit integers; every constant is an explicit
``np.uint64`` so numba never promotes the arithmetic to float64.
"""
from __future__ import annotations

import secrets

import numpy as np

from .kernel_cache import njit

NEAREST_EVEN, NEAREST_AWAY, TOWARD_ZERO, TOWARD_POSITIVE, TOWARD_NEGATIVE, STOCHASTIC = range(6)
MODES: dict[str, int] = {
    "nearest_even": NEAREST_EVEN,
    "nearest_away": NEAREST_AWAY,
    "toward_zero": TOWARD_ZERO,
    "toward_positive": TOWARD_POSITIVE,
    "toward_negative": TOWARD_NEGATIVE,
    "stochastic": STOCHASTIC,
}

SATURATE, IEEE, WRAP = range(3)
OVERFLOWS: dict[str, int] = {"saturate": SATURATE, "ieee": IEEE, "wrap": WRAP}

SR_BITS_DEFAULT = 32
SR_BITS_MAX = 32

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def mode_id(rounding: str) -> int:
    """Return the integer id of a rounding mode name; ValueError names the valid modes."""
    if not isinstance(rounding, str) or rounding not in MODES:
        raise ValueError(f"unknown rounding mode {rounding!r}; choose one of {', '.join(MODES)}")
    return MODES[rounding]


def overflow_id(overflow: str, allowed: tuple[str, ...]) -> int:
    """Return the integer id of an overflow policy, checking it is one of ``allowed``."""
    if not isinstance(overflow, str) or overflow not in allowed:
        raise ValueError(f"unknown overflow policy {overflow!r}; choose one of {', '.join(allowed)}")
    return OVERFLOWS[overflow]


def resolve_sr_bits(sr_bits: int | None) -> int:
    """Validate the number of random bits for stochastic rounding (1..32, default 32)."""
    if sr_bits is None:
        return SR_BITS_DEFAULT
    if isinstance(sr_bits, bool) or not isinstance(sr_bits, (int, np.integer)):
        raise TypeError(f"sr_bits must be an integer, got {type(sr_bits).__name__}")
    if not 1 <= int(sr_bits) <= SR_BITS_MAX:
        raise ValueError(f"sr_bits must be in 1..{SR_BITS_MAX}, got {sr_bits}")
    return int(sr_bits)


def check_seed(seed: int | None, what: str = "seed") -> int | None:
    """``seed`` if it is an integer or None, else a TypeError naming ``what``."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"{what} must be an integer or None, got {type(seed).__name__}")
    return seed


def resolve_seed(seed: int | None) -> np.uint64:
    """Turn a user seed (any int, or None for a fresh random one) into the generator key."""
    seed = secrets.randbits(64) if check_seed(seed) is None else seed
    return np.uint64(mix64(np.uint64(int(seed) % (1 << 64))))   # numba returns a Python int


def seed_key(seed: int | None, rounding: str) -> np.uint64:
    """The generator key of ``rounding``: :func:`resolve_seed` for stochastic rounding, else 0.
    A bad seed is refused in every mode, though only stochastic rounding uses it."""
    check_seed(seed)
    return resolve_seed(seed) if rounding == "stochastic" else np.uint64(0)


@njit
def mix64(z: np.uint64) -> np.uint64:
    """SplitMix64's finalizer (Steele, Lea, Flood 2014): a bijective 64-bit mixer."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit
def random_bits(key: np.uint64, index: np.int64, nbits: np.int64) -> np.uint64:
    """``nbits`` uniform random bits for element ``index`` under ``key`` (counter-based)."""
    return mix64(key + np.uint64(index) * _GOLDEN) >> np.uint64(64 - nbits)


@njit
def sr_threshold(rem: np.uint64, shift: np.int64, below: bool, sr_bits: np.int64) -> np.uint64:
    """``floor(f * 2**sr_bits)`` for the discarded fraction ``f = rem / 2**shift``.

    ``below`` says the exact remainder is a hair less than ``rem`` (a negative tail beyond the
    bits held in ``rem``); it is applied only when ``shift >= sr_bits``; with fewer discarded bits
    than ``sr_bits`` the caller adds the tail's own bits.  Branch-free (selects only).
    """
    up = np.uint64(max(sr_bits - shift, 0))
    drop = np.uint64(max(shift - sr_bits, 0))
    low_zero = (rem & ((_U1 << drop) - _U1)) == _U0
    return (rem << up >> drop) - np.uint64(below & low_zero & (shift >= sr_bits))


@njit
def round_away(mode: np.int64, neg: bool, odd: bool, rem: np.uint64, half: np.uint64,
               tail: np.int64, threshold: np.uint64, rnd: np.uint64) -> bool:
    """Decide whether a truncated magnitude moves one unit away from zero.

    ``rem`` is the discarded part in units where ``half`` is half a unit in the last place;
    ``tail`` is the sign (-1, 0, +1) of anything beyond ``rem`` (from the low word of a TwoSum
    pair), ``odd`` the parity of the truncated code, ``threshold``/``rnd`` the stochastic
    comparison (``rnd < threshold`` rounds away).
    """
    # Branch only on the (loop-invariant) mode; the data tests are bitwise so they compile to
    # selects rather than unpredictable branches.
    if mode == STOCHASTIC:
        return rnd < threshold
    at_half = (rem == half) & (tail == 0)
    above = (rem > half) | ((rem == half) & (tail > 0))
    if mode == NEAREST_EVEN:
        return above | (at_half & odd)
    if mode == NEAREST_AWAY:
        return above | at_half
    inexact = (rem != _U0) | (tail != 0)
    if mode == TOWARD_POSITIVE:
        return inexact & (not neg)
    if mode == TOWARD_NEGATIVE:
        return inexact & neg
    return False


@njit
def overflow_to_inf(mode: np.int64, neg: bool) -> bool:
    """IEEE 754 overflow: does this mode send an overflowing value to infinity (else to max)?"""
    if mode == TOWARD_ZERO:
        return False
    if mode == TOWARD_POSITIVE:
        return not neg
    if mode == TOWARD_NEGATIVE:
        return neg
    return True


JAM_SHIFT = 62   # remainders are kept in at most this many bits, the rest jammed into a sticky bit


@njit(inline="always")
def jam(sig: np.uint64, shift: np.int64):
    """Shift ``sig`` right so that at most JAM_SHIFT discarded bits remain, OR-ing what falls off
    into the lowest bit.  Rounding decisions (including stochastic thresholds of up to 32 bits)
    are unchanged.  Branch-free.  Returns the new (sig, shift)."""
    kept = min(shift, JAM_SHIFT)
    drop = np.uint64(min(shift - kept, 63))   # shift > 62 only for 53-bit significands: 63 clears
    return (sig >> drop) | np.uint64((sig & ((_U1 << drop) - _U1)) != _U0), kept
