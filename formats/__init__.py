"""numsim formats: what the bits mean.

``formats.get(name)`` returns a format object with ``encode``/``decode``/``quantize``, correctly
rounded ``add``/``sub``/``mul``/``fma``/``convert`` on codes, and its properties.  See
:mod:`formats.floats`, :mod:`formats.integers`, :mod:`formats.posits`, :mod:`formats.quire`,
:mod:`formats.codebook`, :mod:`formats.scaled`, :mod:`formats.rounding` and the name grammar in
:mod:`formats.registry`.
"""
from .kernel_cache import use_source_keyed_cache

use_source_keyed_cache()            # before the kernel modules below define their kernels

from .floats import FloatFormat  # noqa: E402
from .integers import IntFormat  # noqa: E402
from .posits import PositFormat  # noqa: E402
from .quire import Quire, fused_dot  # noqa: E402
from .codebook import CodebookFormat  # noqa: E402
from .scaled import ScaledFormat, ScaledTensor  # noqa: E402
from .packing import pack_codes, unpack_codes  # noqa: E402
from .hadamard import hadamard_transform  # noqa: E402
from .registry import get, names, scaled_names, table  # noqa: E402
from .rounding import MODES  # noqa: E402
from .scalar import ScalarFormat, chunk_size, get_chunk_size, set_chunk_size  # noqa: E402

__all__ = ["FloatFormat", "IntFormat", "PositFormat", "CodebookFormat", "ScalarFormat",
           "Quire", "fused_dot", "ScaledFormat", "ScaledTensor", "pack_codes", "unpack_codes",
           "hadamard_transform", "MODES", "get", "names", "scaled_names", "table", "chunk_size",
           "get_chunk_size", "set_chunk_size"]
