"""What the capturers (:mod:`simulator.capture`, :mod:`simulator.onnx_capture`) share about
graph links: the warning that names the ops that read a value depending on the recorded ops
without a link to it."""
from __future__ import annotations


def unlinked_message(names: list[str]) -> str:
    """The warning for the ops ``names`` (up to three named, the rest counted)."""
    named = ", ".join(names[:3]) + (f" and {len(names) - 3} more ops" if len(names) > 3 else "")
    return (f"{named}: an input depends on the recorded ops but is not linked to them (an "
            f"operation capture does not record lies between, such as a narrowing cast, a "
            f"reduction other than mean, an einsum that is no single matmul, or the op reads "
            f"it where a link cannot go, "
            f"as the second operand of a matmul whose first is a constant), so propagated "
            f"replay feeds the captured input there and the error of the ops before does not "
            f"reach it")
