"""Device cost: measurement protocol, local/remote runners, the device agent, cost tables.

Submodules are imported directly (``haq.hardware.device.protocol``, ``haq.hardware.device.agent``) so the
device agent stays importable on a target that has onnxruntime and numpy but no torch.

Cost tables: ``schema`` (file format and validation, with ``fields``), ``table``
(:class:`CostTable`: load / save, query API), ``network`` (one network's precompiled costs),
``analytical`` (Bit Fusion and BISMO formulas), ``build_analytical`` (their table backends),
``build`` (build / extend a table, device dispatch). ``latency_tables.load(name)`` is the
usual entry point.
"""
