"""Presenting results: format property and error tables, plots, and the design report.

This room reads result tables and format/MAC objects and turns them into pandas tables,
matplotlib plots and a self-contained HTML/Markdown hardware-design report; it never
runs a simulation. It imports from ``formats`` and ``mac_models`` only.

Empty for now: it is built by a later issue (see DESIGN.md).
"""
