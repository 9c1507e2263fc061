"""The CUDA sources of the MAC models (``mac.cu``), registered with :mod:`formats.gpu` at import,
and their adapter :class:`MacKernels` (see :mod:`mac_models.gpu.kernels`)."""
from pathlib import Path

from formats import gpu

gpu.register_sources(Path(__file__).parent)
