"""numsim formats: what the bits mean.

``formats.get(name)`` returns a format object with ``encode``/``decode``/``quantize``, correctly
rounded ``add``/``sub``/``mul``/``fma``/``convert`` on codes, and its properties.  See
:mod:`formats.floats`, :mod:`formats.integers`, :mod:`formats.rounding` and the name grammar in
:mod:`formats.registry`.
"""
from .floats import FloatFormat
from .integers import IntFormat
from .registry import get, names, table
from .rounding import MODES
from .scalar import ScalarFormat, chunk_size, get_chunk_size, set_chunk_size

__all__ = ["FloatFormat", "IntFormat", "ScalarFormat", "MODES", "get", "names", "table",
           "chunk_size", "get_chunk_size", "set_chunk_size"]
