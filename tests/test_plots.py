"""``haq plot``: PNGs from tiny hand-written run directories, and one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from haq.cli import main as haq_main
from haq.core.errors import ConfigError, HaqError
from haq.evaluation.metrics import PolicyMetrics
from haq.plots import lower_fence, pareto_front, plot_run, running_max
from haq.runs.rundir import EpisodeRecord, RunDir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAYERS = ("conv1", "conv2", "conv3", "fc")


def write_run(
    path: Path, kind: str, label: dict[str, object], rewards: list[float], robust: bool = True, metric: str = "latency"
) -> Path:
    """A run directory with one episode per reward (costs and accuracies derived from it)."""
    run = RunDir(path)
    run.write_config(
        label,
        kind=kind,
        budget={"metric": metric, "target": 1.0, "reference": 2.0, "cheapest": 0.2, "dearest": 2.0},
        reference={"clean_acc": 0.98, "robust_acc": 0.4 if robust else None},
        layers=list(LAYERS),
    )
    best = None
    for i, reward in enumerate(rewards):
        bits = 2 + (i * 3) % 7
        metrics = PolicyMetrics(0.9 + 0.01 * reward, 0.3 + 0.01 * i if robust else None, 0.3 + 0.07 * bits, None, 1000 * bits)
        record = EpisodeRecord(i, {n: (bits, 8 - (i % 3)) for n in LAYERS}, metrics, reward, {})
        run.append_episode(record)
        if best is None or reward > best.reward:
            best = record
            run.write_best(record)
    return path


def test_plot_writes_three_readable_pngs(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "search", {"agent": {"algo": "td3"}}, [-0.5, -0.2, -3.0, 0.1, -0.1, 0.05])
    ilp = write_run(tmp_path / "ilp", "baseline", {"baseline": {"method": "ilp"}}, [-0.1, 0.0])
    rnd = write_run(tmp_path / "random", "baseline", {"baseline": {"method": "random"}}, [-0.4, -0.3, 0.2], robust=False)
    paths = plot_run(run, [ilp, rnd], tmp_path / "figs")
    assert [p.name for p in paths] == ["reward.png", "accuracy_vs_cost.png", "bits.png"]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert not list((tmp_path / "figs").glob("*.tmp*"))


def test_plot_command_defaults_to_the_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", "search", {"agent": {"algo": "ddpg"}}, [0.1, 0.3], robust=False, metric="size")
    assert haq_main(["plot", str(run)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(run / n) for n in ("reward.png", "accuracy_vs_cost.png", "bits.png")]
    assert all((run / n).stat().st_size > 0 for n in ("reward.png", "accuracy_vs_cost.png", "bits.png"))


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda p: None, "run directory .* does not exist"),
        (lambda p: p.mkdir(), "cannot read run config"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text("{}")), "not a haq run config"),
        (lambda p: RunDir(p).write_config({}, budget={"metric": "latency", "target": 1.0}), "holds no finished episode yet"),
        (
            lambda p: (write_run(p, "search", {}, [0.1]), (p / "episodes.jsonl").write_text('{"episode": 0}\n')),
            "malformed episode line",
        ),
        (
            lambda p: (
                write_run(p, "search", {}, [0.1]),
                (p / "episodes.jsonl").write_text('{"episode": 0, "policy": [[8, 8]]}\n'),  # a list, not layer -> pair
            ),
            "malformed episode line",
        ),
    ],
)
def test_bad_run_dirs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: object, match: str) -> None:
    path = tmp_path / "run"
    setup(path)  # type: ignore[operator]
    with pytest.raises(HaqError, match=match):
        plot_run(path)
    assert haq_main(["plot", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("haq: error: ") and "\n" not in err


def test_baselines_must_share_the_budget_metric(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", "search", {}, [0.1])
    other = write_run(tmp_path / "other", "baseline", {"baseline": {"method": "ilp"}}, [0.1], metric="energy")
    with pytest.raises(ConfigError, match="budgeted on energy, the run on latency"):
        plot_run(run, [other])


def test_missing_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = write_run(tmp_path / "run", "search", {}, [0.1])
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(HaqError, match=r"pip install 'haq\[plot\]'"):
        plot_run(run)


def test_pareto_front_running_max_and_fence() -> None:
    points = [(3.0, 90.0), (1.0, 80.0), (2.0, 85.0), (2.5, 84.0), (1.0, 70.0), (4.0, 90.0)]
    assert pareto_front(points) == [1, 2, 0]
    assert running_max([1.0, 0.5, 2.0, 1.5]) == [1.0, 1.0, 2.0, 2.0]
    rewards = [0.0, -0.1, 0.1, -0.05, 0.05, -5.0]
    fence = lower_fence(rewards)
    assert -5.0 < fence < -0.1
    assert lower_fence([1.0]) == 1.0
