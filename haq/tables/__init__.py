"""Device cost tables as data: what a layer costs at (w, a) on a device, and a network under a policy.

``schema`` (the file format, its records and validation, with ``fields``), ``table``
(:class:`~haq.tables.table.CostTable`: load / save and the query API), ``network`` (one
network's precompiled costs), ``compare`` (a policy's cost on several devices) and
``protocols`` (what the layers above rely on). Nothing here measures or computes costs: the
producers live in :mod:`haq.hardware`, the shipped tables in the top-level ``latency_tables``.
"""
