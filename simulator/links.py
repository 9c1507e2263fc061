"""What the capturers (:mod:`simulator.capture`, :mod:`simulator.onnx_capture`) share about
graph links: the warning that names the ops that read a value depending on the recorded ops
without a link to it."""
from __future__ import annotations


def unlinked_message(names: list[str]) -> str:
    """The warning for the ops ``names`` (up to three named, the rest counted)."""
    named = ", ".join(names[:3]) + (f" and {len(names) - 3} more ops" if len(names) > 3 else "")
    return (f"{named}: an input depends on the recorded ops but is not linked to them (an "
            f"operation capture does not record lies between, such as concatenation or a "
            f"narrowing cast, or the op reads it where a link cannot go, as the first operand "
            f"of a matmul whose second is a constant), so propagated replay feeds the captured "
            f"input there and the error of the ops before does not reach it")
