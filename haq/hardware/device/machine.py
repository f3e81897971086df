"""What a measurement ran on: stored beside every figure, since a latency means nothing
without the CPU, runtime versions and thread count that produced it.

Two machines can report the same brand string ("Intel(R) Xeon(R) Processor") and still time a
layer 1.5-2x apart, so a measured table records a :class:`MachineFingerprint`: CPU identity
(vendor, family / model / stepping), the instruction-set flags that select onnxruntime's
kernels, core counts, cache sizes, the onnxruntime build, and a short timing probe. The
non-timing parts hash to a stable :attr:`~MachineFingerprint.identity`; the probe is compared
with a tolerance (:data:`PROBE_TOLERANCE`). Everything here reads files, never runs
subprocesses, and imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnxruntime as ort

from haq.hardware.device.session import open_session, random_feeds, run_once, session_options
from haq.hardware.device.settings import ProtocolConfig

CPUINFO = Path("/proc/cpuinfo")
CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")

X86_ARCHS = frozenset({"x86_64", "amd64", "i686"})
WIDE_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
"""x86 flags whose int8 dot products accumulate in 32 bits (onnxruntime picks those kernels)."""
KERNEL_FLAG_PREFIXES = ("avx", "amx", "asimd", "sve")
"""Flag families that select onnxruntime's MLAS kernels: avx/avx2/avx512*/avx_vnni, AMX tiles,
arm64 NEON (asimddp: dot products) and SVE."""
KERNEL_FLAGS = frozenset({"fma", "f16c", "ssse3", "sse4_1", "sse4_2", "sme", "sme2", "i8mm", "bf16", "fphp", "dotprod"})
"""Single flags that do too; the rest (``rdrand``, ``smep``, ...) never change a kernel."""

PROBE_TOLERANCE = 0.5
"""How much slower (or, symmetrically, faster: ratio below 1 / 1.5) the probe may run before
two machines are told apart.

Wider than the ±35 % one might expect, because load moves it that much: 20 probes on one
shared 2-core VM at load average ~2 spread 1.38-1.43x from fastest to slowest (the 10th
percentile of samples as much as the median: the slow phases last seconds, longer than the
probe), so ±35 % would make a busy machine warn about its own table. Everything that
identifies a machine without timing it (model, stepping, flags, caches, cores, runtime) is
compared exactly; the probe only catches what those miss (another clock or power setting),
which costs more than 1.5x."""

PROBE_ROWS, PROBE_SIZE = 32, 256
PROBE_SAMPLES = 25
PROBE_SAMPLE_S = 0.002
PROBE_WARMUP_S = 0.1
PROBE = (
    f"median of {PROBE_SAMPLES} samples (>= {PROBE_SAMPLE_S * 1000:g} ms each) of one fp32 MatMul "
    f"[{PROBE_ROWS}x{PROBE_SIZE}] x [{PROBE_SIZE}x{PROBE_SIZE}], onnxruntime CPU, 1 thread, ms per run"
)


@dataclass(frozen=True)
class MachineFingerprint:
    """Identity of the machine that timed a table, plus a speed probe (``probe_ms``).

    Fields read from ``/proc/cpuinfo`` are strings as the kernel prints them (x86: family,
    model, stepping; arm64: architecture, part, variant/revision); an empty string means the
    platform did not say.
    """

    cpu: str
    vendor: str = ""
    family: str = ""
    model: str = ""
    stepping: str = ""
    arch: str = ""
    flags: tuple[str, ...] = ()
    logical_cores: int = 0
    physical_cores: int | None = None
    caches_kib: Mapping[str, int] = field(default_factory=dict, hash=False)
    onnxruntime: str = ""
    ort_build: str = ""
    probe_ms: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "flags", tuple(sorted(set(self.flags))))  # a set, kept as a sorted tuple: order means nothing

    @property
    def identity(self) -> str:
        """16 hex digits over every non-timing field: equal on one machine and runtime, stable across runs."""
        blob = json.dumps(self._identity_fields(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _identity_fields(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "vendor": self.vendor,
            "family": self.family,
            "model": self.model,
            "stepping": self.stepping,
            "arch": self.arch,
            "flags": list(self.flags),
            "logical_cores": self.logical_cores,
            "physical_cores": self.physical_cores,
            "caches_kib": dict(sorted(self.caches_kib.items())),
            "onnxruntime": self.onnxruntime,
            "ort_build": self.ort_build,
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``meta.machine`` record of a table (the identity is stored for people and cache names)."""
        probe = None if self.probe_ms is None else round(self.probe_ms, 6)
        return {"identity": self.identity, **self._identity_fields(), "probe_ms": probe, "probe": PROBE}

    @property
    def saturates_int8_weights(self) -> bool:
        """Whether onnxruntime multiplies uint8 activations by int8 weights here by adding pairs of
        products in 16 bits, which saturates: an x86 CPU without VNNI or AMX (AVX2 and older
        AVX-512 parts). Its uint8-weight kernel widens first, and VNNI / AMX add in 32 bits."""
        return self.arch.lower() in X86_ARCHS and not set(self.flags) & WIDE_INT8_FLAGS

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MachineFingerprint:
        """Read a record written by :meth:`to_dict` (already shape-checked by the table loader);
        fields an older writer did not record are left empty and are not compared."""
        caches = d.get("caches_kib") or {}
        probe = d.get("probe_ms")
        physical = d.get("physical_cores")
        return cls(
            cpu=str(d.get("cpu", "")),
            vendor=str(d.get("vendor", "")),
            family=str(d.get("family", "")),
            model=str(d.get("model", "")),
            stepping=str(d.get("stepping", "")),
            arch=str(d.get("arch", "")),
            flags=tuple(str(f) for f in d.get("flags") or ()),
            logical_cores=int(d.get("logical_cores") or 0),
            physical_cores=int(physical) if physical is not None else None,
            caches_kib={str(k): int(v) for k, v in caches.items()} if isinstance(caches, Mapping) else {},
            onnxruntime=str(d.get("onnxruntime", "")),
            ort_build=str(d.get("ort_build", "")),
            probe_ms=float(probe) if probe is not None else None,
        )


def fingerprint_differences(
    recorded: MachineFingerprint, here: MachineFingerprint, tolerance: float = PROBE_TOLERANCE
) -> list[str]:
    """What tells ``here`` apart from ``recorded``, one short phrase per field (empty: same machine).

    A field the recorded fingerprint left empty is not compared; the probe counts only when
    both have one and one is more than ``1 + tolerance`` times the other.
    """
    out: list[str] = []
    for name, old, new in (
        ("cpu", recorded.cpu, here.cpu),
        ("vendor", recorded.vendor, here.vendor),
        ("arch", recorded.arch, here.arch),
        ("family/model/stepping", _fms(recorded), _fms(here)),
        ("logical cores", recorded.logical_cores or "", here.logical_cores),
        ("physical cores", recorded.physical_cores or "", here.physical_cores or "?"),
        ("onnxruntime", recorded.onnxruntime, here.onnxruntime),
        ("onnxruntime build", recorded.ort_build if recorded.onnxruntime == here.onnxruntime else "", here.ort_build),
    ):  # another version is another build: it is said once
        if old not in ("", "//") and old != new:
            out.append(f"{name} {old} -> {new}")
    if recorded.flags and set(recorded.flags) != set(here.flags):
        lost, gained = sorted(set(recorded.flags) - set(here.flags)), sorted(set(here.flags) - set(recorded.flags))
        out.append("flags " + _short([f"-{f}" for f in lost] + [f"+{f}" for f in gained]))
    for level in sorted(set(recorded.caches_kib) | set(here.caches_kib)):
        old_kib, new_kib = recorded.caches_kib.get(level), here.caches_kib.get(level)
        if recorded.caches_kib and old_kib != new_kib:
            out.append(f"{level} {_kib(old_kib)} -> {_kib(new_kib)}")
    if recorded.probe_ms and here.probe_ms:
        ratio = here.probe_ms / recorded.probe_ms
        if abs(math.log(ratio)) > math.log1p(tolerance):
            out.append(f"probe {recorded.probe_ms:.3g} -> {here.probe_ms:.3g} ms ({ratio - 1.0:+.0%})")
    return out


def machine_fingerprint(probe: bool = True) -> MachineFingerprint:
    """This machine's fingerprint; ``probe`` also times the calibration probe (about 0.3 s)."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    fp = parse_cpuinfo(text)
    return MachineFingerprint(
        cpu=fp.cpu or platform.processor() or platform.machine() or "unknown",
        vendor=fp.vendor,
        family=fp.family,
        model=fp.model,
        stepping=fp.stepping,
        arch=platform.machine(),
        flags=fp.flags,
        logical_cores=os.cpu_count() or fp.logical_cores,
        physical_cores=fp.physical_cores,
        caches_kib=read_caches(CACHE_DIR),
        onnxruntime=ort.__version__,
        ort_build=ort_build(),
        probe_ms=probe_ms() if probe else None,
    )


def parse_cpuinfo(text: str) -> MachineFingerprint:
    """The CPU part of a fingerprint from ``/proc/cpuinfo`` text (x86 or arm64); empty fields where absent."""
    blocks = [dict(_pairs(b)) for b in text.split("\n\n") if b.strip()]
    cpus = [b for b in blocks if "processor" in b]
    first = cpus[0] if cpus else (blocks[0] if blocks else {})
    flags = first.get("flags") or first.get("Features") or ""
    cores = {(b.get("physical id"), b.get("core id")) for b in cpus if "core id" in b}
    return MachineFingerprint(
        cpu=first.get("model name", ""),
        vendor=first.get("vendor_id") or first.get("CPU implementer", ""),
        family=first.get("cpu family") or first.get("CPU architecture", ""),
        model=first.get("model") or first.get("CPU part", ""),
        stepping=first.get("stepping") or "/".join(v for v in (first.get("CPU variant"), first.get("CPU revision")) if v),
        flags=tuple(sorted(f for f in set(flags.split()) if f.startswith(KERNEL_FLAG_PREFIXES) or f in KERNEL_FLAGS)),
        logical_cores=len(cpus),
        physical_cores=len(cores) or None,
    )


def read_caches(root: Path) -> dict[str, int]:
    """Cache sizes in KiB by level (``L1d``, ``L1i``, ``L2``, ``L3``) from sysfs; empty where absent."""
    out: dict[str, int] = {}
    for index in sorted(root.glob("index*")):
        try:
            level, kind, size = ((index / f).read_text(encoding="utf-8").strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        kib = _size_kib(size)
        if kib is not None:
            out[f"L{level}{suffix}"] = kib
    return out


def ort_build() -> str:
    """onnxruntime's device, execution providers and build string (git commit, build type)."""
    providers = ",".join(ort.get_available_providers())
    build = ort.get_build_info() if hasattr(ort, "get_build_info") else ""
    return f"{ort.get_device()}; {providers}; {build}".strip("; ")


def probe_model() -> bytes:
    """The fixed probe: one fp32 MatMul with seeded weights (needs the ``onnx`` package)."""
    import onnx  # only hosts that build or check tables run the probe; a device agent has no onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((PROBE_SIZE, PROBE_SIZE)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "haq_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [PROBE_ROWS, PROBE_SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [PROBE_ROWS, PROBE_SIZE])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model.SerializeToString()


def probe_ms() -> float:
    """Time the probe: warm-up, then the median of short batched samples (ms per run)."""
    sess = open_session(probe_model(), session_options(ProtocolConfig(threads=1)))
    feeds = random_feeds(sess, 0)
    start, runs = time.perf_counter(), 0
    while runs < 10 or time.perf_counter() - start < PROBE_WARMUP_S:
        run_once(sess, feeds)
        runs += 1
    per_run = (time.perf_counter() - start) / runs
    k = max(1, math.ceil(PROBE_SAMPLE_S / per_run))
    samples = []
    for _ in range(PROBE_SAMPLES):
        t0 = time.perf_counter()
        for _ in range(k):
            run_once(sess, feeds)
        samples.append((time.perf_counter() - t0) / k)
    return float(np.median(samples)) * 1000.0


def device_info(cfg: ProtocolConfig | None = None) -> dict[str, Any]:
    """CPU model, core count, OS, runtime versions and threads of this machine, and its
    fingerprint without the probe (a device agent reports it to the host that builds a table)."""
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count() or 0,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "threads": (cfg or ProtocolConfig()).threads,
        "fingerprint": machine_fingerprint(probe=False).to_dict(),
    }


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, else what platform reports)."""
    try:
        with open(CPUINFO, encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _pairs(block: str) -> list[tuple[str, str]]:
    out = []
    for line in block.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            out.append((key.strip(), value.strip()))
    return out


def _size_kib(size: str) -> int | None:
    units = {"K": 1, "M": 1024, "G": 1024 * 1024}
    text = size.strip().upper()
    if text and text[-1] in units and text[:-1].isdigit():
        return int(text[:-1]) * units[text[-1]]
    return int(text) // 1024 if text.isdigit() else None


def _fms(fp: MachineFingerprint) -> str:
    return f"{fp.family}/{fp.model}/{fp.stepping}"


def _kib(kib: int | None) -> str:
    if kib is None:
        return "none"
    return f"{kib // 1024} MiB" if kib >= 1024 and kib % 1024 == 0 else f"{kib} KiB"


def _short(items: list[str], most: int = 4) -> str:
    return " ".join(items[:most]) + (f" (+{len(items) - most} more)" if len(items) > most else "")
