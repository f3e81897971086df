"""Mutation score of haq's core: how many deliberately planted bugs (mutants) the tests catch.

Runs mutmut (3.x, configured by ``[tool.mutmut]`` in pyproject.toml) once per core module,
each against only the tests that are about that module, and prints the share of mutants killed
per module. Each module runs in a fresh copy of the source tree (haq, envs, latency_tables,
tests, pyproject.toml) in a temporary directory, so the working tree is never touched and edits
made meanwhile do not leak into a run. Target: at least 85 % killed on every module; the
survivors judged equivalent are listed, with a reason each, in bench/mutation-survivors.md.

Trained zoo models are shared by every mutant through one warm cache (``HAQ_TEST_CACHE_DIR``,
a temporary directory unless given), so a mutant costs its tests, not a training run.

    python bench/mutation.py [--module primitives budget ...] [--survivors FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("haq", "envs", "latency_tables", "tests", "pyproject.toml")
TARGET = 0.85


@dataclass(frozen=True)
class Module:
    """One core module (a few source files) and the test files that are about it."""

    title: str
    sources: tuple[str, ...]
    tests: tuple[str, ...]


MODULES: dict[str, Module] = {
    "primitives": Module(
        "quantization primitives",
        ("haq/quant/primitives.py", "haq/quant/quantizers.py"),
        ("tests/test_primitives.py", "tests/test_golden_quant.py", "tests/test_policy.py"),
    ),
    "network": Module("network pricing", ("haq/tables/network.py",), ("tests/test_tables.py", "tests/test_network_pricing.py")),
    "budget": Module(
        "budget projection", ("haq/problem/budget.py",), ("tests/test_budget.py", "tests/test_env.py", "tests/test_cpu_bits.py")
    ),
    "attacks": Module("attacks", ("haq/robust/attacks.py",), ("tests/test_attacks.py", "tests/test_worst_case.py")),
    "worst_case": Module("worst case", ("haq/robust/evaluate.py",), ("tests/test_worst_case.py", "tests/test_attacks.py")),
    "dq": Module("Defensive Quantization", ("haq/robust/dq.py",), ("tests/test_dq.py",)),
}


def _strip_mutmut_section(text: str) -> str:
    """pyproject.toml without its ``[tool.mutmut]`` table (replaced per module)."""
    return re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)


def _mutmut_section(base: dict[str, object], module: Module) -> str:
    """The repository's mutmut settings, narrowed to one module and its tests (TOML arrays as JSON)."""
    settings = {**base, "only_mutate": list(module.sources), "pytest_add_cli_args_test_selection": list(module.tests)}
    lines = ["", "[tool.mutmut]"]
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def _workspace(module: Module, base: dict[str, object], parent: Path) -> Path:
    """A fresh copy of the tree with ``[tool.mutmut]`` set for ``module``."""
    work = parent / module.sources[0].replace("/", "_").removesuffix(".py")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=ignore)
        else:
            work.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / name)
    pyproject = work / "pyproject.toml"
    pyproject.write_text(_strip_mutmut_section(pyproject.read_text()) + _mutmut_section(base, module))
    return work


def _base_settings() -> dict[str, object]:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(data.get("tool", {}).get("mutmut", {}))


def _mutmut(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("mutmut")
    return subprocess.run([str(exe), *args], cwd=work, env=env, capture_output=True, text=True, check=False)


def run_module(key: str, module: Module, base: dict[str, object], parent: Path, env: dict[str, str]) -> dict[str, object]:
    """Run mutmut on one module; its counts, survivors (with diffs) and wall time."""
    missing = [t for t in module.tests if not (ROOT / t).is_file()]
    tests = tuple(t for t in module.tests if t not in missing)
    work = _workspace(Module(module.title, module.sources, tests), base, parent)
    start = time.monotonic()
    run = _mutmut(work, env, "run")
    if run.returncode != 0:
        tail = (run.stdout + run.stderr)[-2000:]
        return {"module": key, "error": f"mutmut run failed with exit code {run.returncode}: {tail}"}
    _mutmut(work, env, "export-cicd-stats")
    stats = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
    listing = _mutmut(work, env, "results").stdout
    survivors = [line.split(":")[0].strip() for line in listing.splitlines() if line.strip().endswith(": survived")]
    diffs = {name: _mutmut(work, env, "show", name).stdout for name in survivors}
    return {
        "module": key,
        "title": module.title,
        "stats": stats,
        "survivors": diffs,
        "seconds": time.monotonic() - start,
        "missing_tests": missing,
    }


def _score(stats: dict[str, int]) -> float:
    """Killed (including timeouts and crashes, which a test run notices) over all mutants that ran."""
    caught = stats["killed"] + stats["timeout"] + stats["segfault"] + stats["suspicious"]
    total = stats["total"] - stats["skipped"]
    return caught / total if total else 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", nargs="+", choices=sorted(MODULES), default=list(MODULES), help="modules to run")
    parser.add_argument("--survivors", type=Path, help="write every survivor's diff to this file (markdown)")
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (for `mutmut show` / `browse`)")
    ns = parser.parse_args()

    base = _base_settings()
    parent = ns.keep or Path(tempfile.mkdtemp(prefix="haq-mutation-"))
    parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HAQ_TEST_CACHE_DIR": os.environ.get("HAQ_TEST_CACHE_DIR", str(parent / "model-cache"))}
    env.pop("CI", None)
    results = []
    try:
        for key in ns.module:
            print(f"mutating {MODULES[key].title} ({', '.join(MODULES[key].sources)}) ...", flush=True)
            results.append(run_module(key, MODULES[key], base, parent, env))
            r = results[-1]
            if "error" in r:
                print(f"  {r['error']}", flush=True)
            else:
                stats = r["stats"]
                print(
                    f"  {stats['killed']}/{stats['total']} killed, {stats['survived']} survived, "
                    f"{stats['timeout']} timed out, {stats['no_tests']} without tests "
                    f"({r['seconds']:.0f} s)",
                    flush=True,
                )
    finally:
        if ns.keep is None:
            shutil.rmtree(parent, ignore_errors=True)

    print("\n| module | files | killed | survived | no tests | score |\n|---|---|---|---|---|---|")
    ok = True
    for r in results:
        if "error" in r:
            print(f"| {r['module']} | | | | | error |")
            ok = False
            continue
        s = r["stats"]
        score = _score(s)
        ok &= score >= TARGET
        files = ", ".join(MODULES[r["module"]].sources)
        print(
            f"| {r['title']} | {files} | {s['killed'] + s['timeout']} / {s['total']} | {s['survived']} | {s['no_tests']} | "
            f"{100 * score:.1f} % |"
        )
    if ns.survivors:
        parts = ["# Surviving mutants\n"]
        for r in results:
            for name, diff in r.get("survivors", {}).items():
                parts.append(f"## {name}\n\n```diff\n{diff.strip()}\n```\n")
        ns.survivors.write_text("\n".join(parts))
    print(f"\ntarget: >= {100 * TARGET:.0f} % killed on every module: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
