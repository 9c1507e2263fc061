"""Two-operand einsums that are one batched matmul, as the capturers record them.

``plan(equation, shape_a, shape_b)`` says how: each operand permuted to (batch, m, k) and
(batch, k, n) and reshaped to 3-D (2-D without batch letters), multiplied, and the product
reshaped and permuted back to the output.  Letters: batch ones in both operands and the output
(equal sizes), m ones in the first operand and the output, n ones in the second and the output,
k ones (at least one: an outer product or a scaling multiplies, it does not accumulate) in both
operands only; each once per term.  Anything else (a diagonal, a sum over one operand's letter,
three operands, sizes that broadcast) has no plan.  Reshapes are not recorded: replay reshapes
a link to the operand it feeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def terms(equation: str, ndims: tuple) -> Union[tuple, None]:
    """The index letters of the two operands and of the output of ``equation`` on operands of
    ``ndims`` axes, with '...' spelled out in letters the equation leaves unused (right
    aligned, as broadcasting aligns them) and an implicit output made explicit as torch and
    ONNX make it (the ellipsis, then the letters met once, in alphabetical order); None where
    the equation does not have two operands or does not fit them."""
    lhs, arrow, out = equation.replace(" ", "").partition("->")
    parts = lhs.split(",")
    if len(parts) != 2:
        return None
    spare = [c for c in _LETTERS if c not in equation]
    wide = max(nd - len(t) + 3 if "..." in t else 0 for t, nd in zip(parts, ndims))
    if wide < 0 or wide > len(spare):
        return None
    dots = "".join(spare[:wide])
    spelt = [t.replace("...", dots[wide - (nd - len(t) + 3):]) if "..." in t else t
             for t, nd in zip(parts, ndims)]
    if not arrow:
        once = sorted(c for c in lhs if c.isalpha() and lhs.count(c) == 1)
        out = ("..." if "..." in lhs else "") + "".join(once)
    out = out.replace("...", dots)
    if any(len(t) != nd for t, nd in zip(spelt, ndims)) or not all(
            t.isalpha() for t in spelt + [out] if t):
        return None
    return spelt[0], spelt[1], out


def contracts(equation: str) -> bool:
    """Whether ``equation`` multiplies operands and sums over a letter (one its output lacks;
    with an implicit output, one met more than once): whether it multiply-accumulates (a
    one-operand sum or trace only adds)."""
    lhs, arrow, out = equation.replace(" ", "").partition("->")
    letters = [c for c in lhs if c.isalpha()]
    return "," in lhs and any(c not in out if arrow else letters.count(c) > 1 for c in letters)


def moves(perm: list) -> bool:
    """Whether the permutation ``perm`` moves any axis (the identity needs no op)."""
    return list(perm) != sorted(perm)


def groups(a: str, b: str, out: str, sa: tuple, sb: tuple) -> Union[tuple, None]:
    """(batch, m, k, n) letters of the einsum ``a,b->out`` on operands of shapes ``sa``,
    ``sb`` where it is a batched matmul (see the module doc), else None."""
    if any(len(set(t)) != len(t) for t in (a, b, out)):
        return None
    batch = [c for c in out if c in a and c in b]
    m = [c for c in out if c in a and c not in b]
    n = [c for c in out if c in b and c not in a]
    k = [c for c in a if c in b and c not in out]
    if not k or sorted(a) != sorted(batch + m + k) or sorted(b) != sorted(batch + k + n) or \
            sorted(out) != sorted(batch + m + n) or \
            any(sa[a.index(c)] != sb[b.index(c)] for c in batch + k):
        return None
    return batch, m, k, n


@dataclass(frozen=True)
class Plan:
    """How an einsum runs as a matmul: ``a_perm`` and ``b_perm`` put the operands' axes in
    (batch, m, k) and (batch, k, n) order, ``a_shape`` and ``b_shape`` are the matmul's
    operands, ``product`` its output's shape, ``middle`` that output with its letters' own
    axes back (batch, m, n order), ``out_perm`` the permutation from there to the output."""

    a_perm: list
    a_shape: tuple
    b_perm: list
    b_shape: tuple
    product: tuple
    middle: tuple
    out_perm: list

    @property
    def back(self) -> list:
        """The permutation from the output to ``middle`` (the inverse of ``out_perm``)."""
        return [self.out_perm.index(i) for i in range(len(self.out_perm))]


def plan(equation: str, sa: tuple, sb: tuple, swap: bool = False) -> Union[Plan, None]:
    """The :class:`Plan` of ``equation`` on operands of shapes ``sa`` and ``sb`` (``swap``:
    the second operand goes first, as the matmul's A: a plan for ``b, a``), or None where it
    is no batched matmul."""
    t = terms(equation, (len(sa), len(sb)))
    g = t and groups(*t, sa, sb)
    if not g:
        return None
    (ta, tb, to), (batch, m, k, n) = t, g
    if swap:
        ta, tb, sa, sb, m, n = tb, ta, sb, sa, n, m
    size = {**dict(zip(tb, sb)), **dict(zip(ta, sa))}
    nb, nm, nk, nn = (math.prod(size[c] for c in grp) for grp in (batch, m, k, n))
    lead = (nb,) if batch else ()
    order = batch + m + n
    return Plan([ta.index(c) for c in batch + m + k], lead + (nm, nk),
                [tb.index(c) for c in batch + k + n], lead + (nk, nn), lead + (nm, nn),
                tuple(size[c] for c in order), [order.index(c) for c in to])
