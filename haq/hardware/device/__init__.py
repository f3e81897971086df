"""The torch-free device side: how haq times an ONNX model, here or on a target device.

Nothing in this package imports torch (directly or through another haq package), so
``haq device serve`` runs on a target that has only onnxruntime and numpy. Modules are
imported directly; this file imports none of them.

Shared 2-core machines are noisy (max samples reach 3-30x the median; two threads spread
medians by 74 %), so every figure haq stores comes from one documented procedure:

1. **Pinned runtime** (:mod:`.session`). onnxruntime CPU provider,
   ``intra_op_num_threads = threads`` (1 by default), ``inter_op_num_threads = 1``, sequential
   execution, all graph optimizations, and ``session.intra_op.allow_spinning = "0"`` so an idle
   worker never burns the other core.
2. **Seeded inputs** (:mod:`.session`). One random input per model input, shaped from the model
   (symbolic dimensions become 1), drawn from ``numpy.random.default_rng(seed)``: every session
   of a model sees the same data.
3. **Fresh sessions, interleaved** (:mod:`.timing`). ``sessions`` rounds; in each round every
   model gets a fresh ``InferenceSession``, in an order rotated by one per round, so slow drift
   of the machine hits every model alike instead of whichever was measured last.
4. **Warm-up.** Before the first round of a batch, the first model runs untimed for
   ``batch_warmup_s`` seconds (the CPU's clock and caches); then every session runs at least
   ``warmup_runs`` runs *and* ``warmup_s`` seconds before timing (its own allocations and
   weight packing).
5. **Timed samples.** ``repeats`` samples; one sample times ``k`` back-to-back runs and stores
   their mean, with ``k`` chosen from the warm-up so a sample lasts at least ``min_repeat_ms``
   (TVM's ``min_repeat_ms``): microsecond kernels are not timed at timer resolution. The
   default is 0.2 ms, far below TVM's tens of ms, because on a shared, oversubscribed machine
   a longer sample often spans a scheduler preemption: at load average 7 on 2 cores a third of
   1 ms samples did, which made IQR / median 3-7 instead of 0.1-0.3, and 20 ms samples raised
   the median itself 2-3x (``bench/protocol.py``). Short samples that were preempted are
   outliers the floor ignores. On a dedicated device either choice gives the same latency.
6. **Statistics** (:mod:`.measurement`). Raw samples are kept. A session's floor is the 10th
   percentile of its samples; a model's latency is the second-lowest of its session floors (a
   shared machine switches between a fast and a slow state every 10-100 ms; the floor is the
   fast one, and two sessions must reach it), and the early stop waits for the two lowest
   floors to agree within ``ci_rel``. Its noise is the interquartile range of all samples over
   their median. Means are never used.
7. **Re-measurement** (:mod:`.timing`). Models whose noise exceeds ``max_noise`` are measured
   again (the whole interleaved procedure, at most ``max_retries`` times; one by default, since
   a retry cures a burst of load but not a machine that stays busy); the least noisy attempt is
   kept and the number of attempts recorded.
8. **Drift sentinel** (:mod:`.sentinel`). Optionally a fixed sentinel model is measured at the
   start of every round and after every ``sentinel_every`` models; the spread of its medians
   (``drift``) says whether the machine changed speed during the batch.
9. **Realized kernels** (:mod:`.profile`). One extra, untimed session with profiling on lists
   the op types of the optimized graph that actually ran (``QLinearConv`` vs ``Conv``), because
   what runs is not always what was exported.

Modules: ``settings`` (:class:`ProtocolConfig`, the knobs above; its ``record()`` is what a cost
table stores as ``protocol`` metadata), ``measurement`` (the raw record and its statistics),
``session`` / ``timing`` / ``profile`` / ``sentinel`` (the steps), ``machine`` (what a
measurement ran on), ``runner`` (local or remote, one interface), and the agent that times on a
target: ``agent`` (the TCP server), ``client`` (the host's side), ``wire`` (the frame format and
its challenge-response signatures), ``worker`` (the child process that measures) and ``guard``
(what a device refuses to run: external data above all; ``SECURITY.md`` has the threat model).
Failures are
:class:`haq.core.errors.DeviceError`; bad settings are :class:`haq.core.errors.ConfigError`.
"""
