"""Cost producers: what turns a device into prices a search can use.

Pricing: ``analytical`` (Bit Fusion and BISMO formulas) with their table backends in
``build_analytical``, ``measured`` (single layers timed with onnxruntime on this CPU) and
``build`` (build or extend a table, whatever prices it). Whole-model validation: ``networks``,
``check``, ``accuracy``, ``fit`` and ``graph_fit``. ``feedback`` makes the measured latency of
the whole model a cost source. The tables themselves are data in :mod:`haq.tables`.

``haq.hardware.device`` (the measurement protocol, local / remote runners, the device agent)
imports no torch, and this file imports nothing, so the agent stays importable on a target
that has onnxruntime and numpy but no torch. Import submodules directly.
"""
