"""Presenting results: format property and error tables, plots, and the design report.

This room reads result tables and format/MAC objects and turns them into pandas tables,
matplotlib plots and a self-contained HTML/Markdown hardware-design report; it never
runs a simulation. It imports from ``formats`` and ``mac_models`` only.

Modules: :mod:`~reports.tables` (format property and error tables), :mod:`~reports.plots`
(matplotlib figures) and :mod:`~reports.report` (the HTML and Markdown report).  (The
accumulation-error plot runs short dot products through :mod:`mac_models` to draw its curve.)
"""
