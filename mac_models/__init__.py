"""What the units do: multipliers, accumulators and MAC units (see DESIGN.md).

``MAC`` describes a design (operand formats, multiplier, accumulator, order, promotion);
``dot``, ``matmul`` and ``conv2d`` run it and return a ``MacResult`` with event statistics;
``preset(name)`` gives the common designs; ``cost``, ``memory_cost`` and ``layer_cost`` price them
(energy and area proxies, :mod:`mac_models.costs`).  It imports only from ``formats``.
"""
from pathlib import Path

from formats.kernel_cache import use_source_keyed_cache

use_source_keyed_cache(Path(__file__).parent / "kernels.py")   # they inline formats' helpers

from .accumulators import (AlignedAccumulator, ExactAccumulator, FloatAccumulator,  # noqa: E402
                           IntAccumulator, QuireAccumulator)
from .costs import MacCost, cost  # noqa: E402
from .layers import Conv2d, LayerCost, Matmul, layer_cost  # noqa: E402
from .mac import MAC  # noqa: E402
from .memory import MemoryCost, memory_cost  # noqa: E402
from .ops import MacResult, conv2d, dot, matmul  # noqa: E402
from .presets import preset, preset_names  # noqa: E402
from .technology import Technology  # noqa: E402

__all__ = ["AlignedAccumulator", "ExactAccumulator", "FloatAccumulator", "IntAccumulator",
           "QuireAccumulator", "Conv2d", "LayerCost", "MAC", "MacCost", "MacResult", "Matmul",
           "MemoryCost", "Technology", "conv2d", "cost", "dot", "layer_cost", "matmul",
           "memory_cost", "preset", "preset_names"]
