"""Run directories (``rundir``), the checkpoint core the proposers share (``checkpoint``) with its
manifest of file hashes (``manifest``), the proposer interface and its result (``proposer``) and
per-episode progress (``progress``)."""
