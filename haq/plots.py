"""PNG figures of a search run, with baselines overlaid: what a user looks at after ``haq search``.

* ``reward.png`` — reward per episode and best-so-far, plus each baseline's best-so-far over
  its own evaluations (equal x-axis = equal numbers of evaluated policies);
* ``accuracy_vs_cost.png`` — clean (and, when measured, robust) accuracy against the budget
  metric, the run's Pareto front, the budget line, and each baseline's policies and best;
* ``bits.png`` — weight and activation bits per layer of the run's best policy.

matplotlib is an optional dependency (``pip install 'haq[plot]'``), imported only here and only
when a figure is drawn; figures are drawn on the Agg canvas without pyplot's global state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from haq.core.errors import ConfigError, HaqError, RunDirError
from haq.runs.rundir import EpisodeRecord, RunDir, best_of

_UNITS = {"latency": "latency (ms)", "energy": "energy (mJ)", "size": "weight size (KiB)"}
_COLORS = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
_MARKERS = ("s", "D", "^", "v", "P", "X", "h", "<")


@dataclass(frozen=True)
class RunView:
    """The parts of a run directory the figures need."""

    label: str
    episodes: tuple[EpisodeRecord, ...]
    metric: str
    budget: float | None

    @property
    def best(self) -> EpisodeRecord:
        """Highest reward, earliest on ties (``load_run`` refuses a run without episodes)."""
        best = best_of(self.episodes)
        if best is None:
            raise RunDirError(f"run '{self.label}' holds no finished episode yet; nothing to plot")
        return best

    def cost(self, record: EpisodeRecord) -> float:
        """The budget metric of one episode in plotting units."""
        return _plot_units(record.metrics.cost(self.metric), self.metric)


def _plot_units(value: float, metric: str) -> float:
    """Sizes are stored in bits and drawn in KiB; latency and energy as stored."""
    return value / 8192.0 if metric == "size" else value


def load_run(path: str | Path) -> RunView:
    """Read a search or baseline run directory; a missing or empty one is a one-line :class:`RunDirError`."""
    run = RunDir(path)
    if not run.path.is_dir():
        raise RunDirError(f"run directory {run.path} does not exist")
    doc = run.read_config()
    episodes = tuple(run.read_episodes())
    if not episodes:
        raise RunDirError(f"{run.episodes_path} holds no finished episode yet; nothing to plot")
    budget = doc.get("budget")
    if not isinstance(budget, dict):
        raise RunDirError(f"{run.config_path}: 'budget' must be an object with 'metric' and 'target'")
    metric = str(budget.get("metric", "latency"))
    if metric not in _UNITS:
        raise RunDirError(f"{run.config_path}: unknown budget metric '{metric}'; expected one of {', '.join(_UNITS)}")
    target = budget.get("target")
    limit = _plot_units(float(target), metric) if isinstance(target, (int, float)) else None
    return RunView(_label(run.path, doc), episodes, metric, limit)


def _label(path: Path, doc: dict[str, Any]) -> str:
    baseline = (doc.get("config") or {}).get("baseline")
    if doc.get("kind") == "baseline" and isinstance(baseline, dict) and "method" in baseline:
        return str(baseline["method"])
    agent = (doc.get("config") or {}).get("agent")
    if isinstance(agent, dict) and "algo" in agent:
        return f"{agent['algo']} search"
    return path.name


def _figure_api() -> tuple[Any, Any]:
    """matplotlib's Figure and Agg canvas, or a one-line install hint."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise HaqError("plots need matplotlib: pip install 'haq[plot]'") from exc
    return Figure, FigureCanvasAgg


def plot_run(run_dir: str | Path, baseline_dirs: Sequence[str | Path] = (), out_dir: str | Path | None = None) -> list[Path]:
    """Write the three PNGs for ``run_dir`` (into ``out_dir``, default the run dir); returns their paths."""
    run = load_run(run_dir)
    baselines = [load_run(b) for b in baseline_dirs]
    for b in baselines:
        if b.metric != run.metric:
            raise ConfigError(
                f"baseline '{b.label}' is budgeted on {b.metric}, the run on {run.metric}; "
                "compare runs with the same budget metric"
            )
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure, canvas = _figure_api()
    return [
        _save(_reward_figure(figure(figsize=(7.5, 4.5)), run, baselines), canvas, out / "reward.png"),
        _save(_accuracy_figure(figure, run, baselines), canvas, out / "accuracy_vs_cost.png"),
        _save(_bits_figure(figure(figsize=(max(6.0, 0.45 * len(run.best.policy) + 2.5), 4.5)), run), canvas, out / "bits.png"),
    ]


def _save(fig: Any, canvas_cls: Any, path: Path) -> Path:
    canvas_cls(fig)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(path)
    return path


def _reward_figure(fig: Any, run: RunView, baselines: Sequence[RunView]) -> Any:
    ax = fig.add_subplot(1, 1, 1)
    xs = [r.episode + 1 for r in run.episodes]
    rewards = [r.reward for r in run.episodes]
    ax.plot(xs, rewards, ".", color="tab:blue", alpha=0.35, label=f"{run.label}: per episode")
    ax.step(xs, running_max(rewards), where="post", color="tab:blue", lw=2, label=f"{run.label}: best so far")
    for i, b in enumerate(baselines):
        bx = [r.episode + 1 for r in b.episodes]
        ax.step(
            bx,
            running_max([r.reward for r in b.episodes]),
            where="post",
            color=_COLORS[i % len(_COLORS)],
            lw=1.5,
            ls="--",
            marker=_MARKERS[i % len(_MARKERS)],
            ms=4,
            label=f"{b.label}: best so far",
        )
    everything = rewards + [r.reward for b in baselines for r in b.episodes]
    floor = lower_fence(everything)
    hidden = sum(v < floor for v in everything)
    title = "Reward"
    if hidden:
        top = max(everything)
        ax.set_ylim(floor - 0.05 * (top - floor), top + 0.05 * (top - floor))
        title += f" ({hidden} outlying low episode{'s' if hidden > 1 else ''} below the axis)"
    ax.set_xlabel("evaluated policies (episodes)")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def _accuracy_figure(figure_cls: Any, run: RunView, baselines: Sequence[RunView]) -> Any:
    panels = [("clean_acc", "clean accuracy")]
    if any(r.metrics.robust_acc is not None for r in run.episodes):
        panels.append(("robust_acc", "robust accuracy (worst case)"))
    fig = figure_cls(figsize=(6.5 * len(panels), 4.8))
    for j, (field_name, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), j + 1)
        _accuracy_panel(ax, run, baselines, field_name)
        ax.set_title(f"{title} vs {run.metric}")
        ax.set_ylabel(title)
    return fig


def _accuracy_panel(ax: Any, run: RunView, baselines: Sequence[RunView], field_name: str) -> None:
    def points(view: RunView) -> list[tuple[float, float]]:
        out = []
        for r in view.episodes:
            acc = getattr(r.metrics, field_name)
            if acc is not None:
                out.append((view.cost(r), 100.0 * acc))
        return out

    pts = points(run)
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color="tab:blue", alpha=0.35, label=f"{run.label}: episodes")
    front = [pts[i] for i in pareto_front(pts)]
    right = max([p[0] for p in pts] + ([run.budget] if run.budget is not None else []))
    if front:  # hold the last level to the right edge: the best accuracy any larger cost reached
        front.append((right, front[-1][1]))
    ax.step(
        [p[0] for p in front], [p[1] for p in front], where="post", color="tab:blue", lw=1.8, label=f"{run.label}: Pareto front"
    )
    best = run.best
    best_acc = getattr(best.metrics, field_name)
    if best_acc is not None:
        ax.scatter(
            [run.cost(best)],
            [100.0 * best_acc],
            marker="*",
            s=220,
            color="tab:blue",
            edgecolor="black",
            zorder=5,
            label=f"{run.label}: best reward",
        )
    for i, b in enumerate(baselines):
        color, marker = _COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)]
        bp = points(b)
        ax.scatter([p[0] for p in bp], [p[1] for p in bp], s=10, color=color, alpha=0.25, marker=marker)
        acc = getattr(b.best.metrics, field_name)
        if acc is not None:
            ax.scatter(
                [b.cost(b.best)],
                [100.0 * acc],
                marker=marker,
                s=90,
                color=color,
                edgecolor="black",
                zorder=5,
                label=f"{b.label}: best reward",
            )
    if run.budget is not None:
        ax.axvline(run.budget, color="gray", ls=":", lw=1.5, label="budget")
    ax.set_xlabel(_UNITS[run.metric])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _bits_figure(fig: Any, run: RunView) -> Any:
    best = run.best
    names = list(best.policy)
    xs = list(range(len(names)))
    ax = fig.add_subplot(1, 1, 1)
    w = [best.policy[n][0] for n in names]
    a = [best.policy[n][1] for n in names]
    ax.bar([x - 0.2 for x in xs], w, width=0.4, color="tab:blue", label="weight bits")
    ax.bar([x + 0.2 for x in xs], a, width=0.4, color="tab:orange", label="activation bits")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=60 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center", fontsize=8)
    ax.set_ylim(0, max(w + a + [8]) + 1)
    ax.set_yticks(range(0, max(w + a + [8]) + 1))
    ax.set_ylabel("bits")
    acc = f"clean {100 * best.metrics.clean_acc:.1f}%"
    if best.metrics.robust_acc is not None:
        acc += f", robust {100 * best.metrics.robust_acc:.1f}%"
    ax.set_title(f"Best policy of {run.label} (episode {best.episode + 1}, reward {best.reward:.3f}, {acc})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def running_max(values: Sequence[float]) -> list[float]:
    """Best-so-far of a sequence."""
    out: list[float] = []
    for v in values:
        out.append(v if not out else max(out[-1], v))
    return out


def lower_fence(values: Sequence[float]) -> float:
    """Tukey's lower fence (Q1 − 1.5·IQR): rewards below it are outliers that would flatten the
    curve, so the axis stops there (and the title says how many were cut)."""
    ordered = sorted(values)
    q1, q3 = _quantile(ordered, 0.25), _quantile(ordered, 0.75)
    return min(q1 - 1.5 * (q3 - q1), ordered[-1])


def _quantile(ordered: Sequence[float], q: float) -> float:
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of (cost, accuracy) points no other point beats (cheaper or equal and at least
    as accurate, one strictly), ordered by rising cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
