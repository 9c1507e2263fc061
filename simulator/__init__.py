"""Running real work: traces, replay, error metrics, sweeps and the ``numsim`` command line.

This room captures traces (PyTorch hooks, ONNX or plain arrays), reads and validates
trace folders, replays them through many format/MAC configurations into tidy result
tables, and runs sweeps across processes or a Dask cluster. It may import every other
room; nothing imports it.

Modules: :mod:`~simulator.traces` (trace folders), :mod:`~simulator.capture` (from arrays and
PyTorch), :mod:`~simulator.onnx_capture`, :mod:`~simulator.graph_ops` (the ops between the
MACs, as replay runs them), :mod:`~simulator.minilm` (the real-transformer extra),
:mod:`~simulator.digits` (the built-in model), :mod:`~simulator.metrics`,
:mod:`~simulator.configs`,
:mod:`~simulator.replay`, :mod:`~simulator.standard` (the standard configurations),
:mod:`~simulator.sweep` (TOML sweeps on processes or Dask) and :mod:`~simulator.cli`.
"""

# ml_dtypes registers bfloat16 with NumPy, through which safetensors reads BF16 tensors
import ml_dtypes  # noqa: F401,E402
