"""What the units do: multipliers, accumulators and MAC units, and their cost models.

This room holds integer (wrap/saturate), floating-point, fixed-point/alignment-truncating
multi-term and exact (Kulisch/quire) accumulators, MAC units combining them, ``dot``,
``matmul`` and ``conv2d`` built from MACs with event counters, and the energy and area
proxies per operation and per MAC configuration. It imports only from ``formats``.

Empty for now: it is built by a later issue (see DESIGN.md).
"""
