"""Running real work: traces, replay, error metrics, sweeps and the ``numsim`` command line.

This room will capture traces (PyTorch hooks, ONNX or plain arrays), read and validate
trace folders, replay them through many format/MAC configurations into tidy result
tables, and run sweeps across processes or a Dask cluster. It may import every other
room; nothing imports it.

So far it holds only the command line (:mod:`simulator.cli`); the rest is built by later
issues (see DESIGN.md).
"""
