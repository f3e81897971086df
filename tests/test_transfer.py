"""Policy transfer: reusing a trained search agent on another device table and another model,
the errors that guard it, the reward baseline a DDPG agent keeps, resumable fine-tuning, and a
policy's cost on every shipped device."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import latency_tables
from envs.mixed_precision import MixedPrecisionEnv
from haq.cli import main
from haq.core import config as serial
from haq.core.errors import ConfigError, RunDirError, TableError
from haq.evaluation.config import EvalConfig
from haq.evaluation.metrics import PolicyMetrics
from haq.jobs.problems import make_problem
from haq.problem.allocation import estimated_error, least_cost_at_error, sensitivity_rungs
from haq.problem.config import EnvConfig
from haq.quant import QuantPolicy
from haq.runs.manifest import write_manifest
from haq.runs.proposer import RunResult
from haq.runs.rundir import EpisodeRecord, RunDir
from haq.search.agents import make_agent, save_agent
from haq.search.baseline import RewardBaseline
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search
from haq.search.rungs import CENTRE, RUNG, centre_at, centre_at_accuracy, centre_fraction, centre_rung
from haq.tables.compare import cost_on_devices, promote_pair
from haq.tables.table import save_table
from haq.transfer import agent as transfer_agent
from haq.transfer.agent import load_on, rollout
from haq.transfer.config import TransferConfig
from haq.transfer.run import run_transfer, target_env_config, transfer_env
from haq.transfer.source import load_source

CHEAP = EvalConfig(kind="cheap", val_samples=120)
CPU_TABLE = next(n for n in latency_tables.available() if "cpu" in n)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A short per-layer SAC search of the digits CNN on Bit Fusion: the agent most tests transfer
    (the default there, an objective agent, transfers to no other model)."""
    out = tmp_path_factory.mktemp("source") / "run"
    agent = AgentConfig(algo="sac", decision="layer", warmup_episodes=2, hidden=(16,))
    cfg = SearchConfig(env=EnvConfig(evaluation=CHEAP), agent=agent, episodes=4, seed=0)
    run_search(cfg, make_problem(cfg.env, cache_dir=cache_dir), out)
    return out


def _transfer(
    source: Path,
    table: str,
    out: Path,
    cache_dir: Path,
    episodes: int = 0,
    model: str | None = None,
    resume: bool = False,
    reuse: bool = True,
) -> RunResult:
    cfg = TransferConfig(source=str(source), table=table, episodes=episodes, model=model, reuse_source=reuse)
    return run_transfer(cfg, make_problem(transfer_env(cfg), cache_dir=cache_dir), out, resume=resume)


def test_saved_agent_round_trips_with_its_metadata(source_run: Path, tmp_path: Path, cache_dir: Path) -> None:
    src = load_source(source_run)
    assert src.table == "bitfusion" and src.model == "digits_cnn" and src.episodes_done == 4
    assert (src.meta["min_bits"], src.meta["max_bits"]) == (2, 8) and src.meta["reward"] == dataclasses.asdict(
        src.config.env.reward
    )
    env = MixedPrecisionEnv(problem=make_problem(src.config.env, cache_dir=cache_dir))
    model = load_on(src.checkpoint, env)
    save_agent(model, tmp_path / "again", src.meta)
    again = load_on(tmp_path / "again", env)
    assert load_source(source_run).meta == json.loads((tmp_path / "again" / "agent.json").read_text())
    rng = np.random.default_rng(0)
    for obs in rng.uniform(0, 1, (5, env.observation_space.shape[0])).astype(np.float32):
        assert np.array_equal(model.predict(obs, deterministic=True)[0], again.predict(obs, deterministic=True)[0])
    for agent in (model, again):
        groups = [g for opt in (agent.actor.optimizer, agent.critic.optimizer) for g in opt.param_groups]
        assert groups and all(g["fused"] for g in groups)


@pytest.mark.parametrize("algo", ["sac", "td3", "ddpg", "ppo"])
def test_every_agent_steps_with_fused_adam_and_ppo_keeps_its_eps(algo: str, cache_dir: Path) -> None:
    env = MixedPrecisionEnv(problem=make_problem(EnvConfig(evaluation=CHEAP), cache_dir=cache_dir))
    model = make_agent(AgentConfig(algo=algo, hidden=(8,)), env, episode_len=env.num_layers, total_episodes=4, seed=0)
    optimizers = [model.policy.optimizer] if algo == "ppo" else [model.actor.optimizer, model.critic.optimizer]
    groups = [g for opt in optimizers for g in opt.param_groups]
    assert groups and all(g["fused"] for g in groups)
    assert all(g["eps"] == (1e-5 if algo == "ppo" else 1e-8) for g in groups)


def test_zero_shot_on_another_table_is_a_valid_policy_within_its_budget(
    source_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    result = _transfer(source_run, "bismo-edge", tmp_path / "t", cache_dir)
    zero = result.records[0]
    assert zero.extra["phase"] == "zero-shot" and zero.extra["source_table"] == "bitfusion"
    target = make_problem(dataclasses.replace(load_source(source_run).config.env, table="bismo-edge"), cache_dir=cache_dir)
    pairs = [zero.policy[c.name] for c in target.budget_model.layers]
    assert all(p in c.pairs for p, c in zip(pairs, target.budget_model.layers))
    assert target.budget_model.policy_cost(pairs) <= target.budget.target * (1 + 1e-9)
    assert zero.metrics.latency_ms == pytest.approx(target.table.policy_cost(target.workload.layers, zero.quant_policy()))
    # the agent saw the new device: its table-derived observation features differ from the source's
    source_env = MixedPrecisionEnv(problem=make_problem(load_source(source_run).config.env, cache_dir=cache_dir))
    assert not np.allclose(source_env.reset(seed=0)[0][14:16], MixedPrecisionEnv(problem=target).reset(seed=0)[0][14:16])
    again = _transfer(source_run, "bismo-edge", tmp_path / "t2", cache_dir)
    assert again.records[0].policy == zero.policy


def test_table_that_cannot_cost_a_layer_is_one_line_naming_it(source_run: Path, tmp_path: Path, cache_dir: Path) -> None:
    table = latency_tables.load("bitfusion")
    layers = make_problem(EnvConfig(evaluation=CHEAP), cache_dir=cache_dir).workload.layers
    key = table._key(layers[1].signature)  # noqa: SLF001 - the test removes exactly one layer's entries
    data = dataclasses.replace(table.data, entries=tuple(e for e in table.data.entries if e.key != key))
    save_table(data, tmp_path / "partial.json")
    with pytest.raises(TableError, match=f"cannot cost layer '{layers[1].name}'"):
        _transfer(source_run, str(tmp_path / "partial.json"), tmp_path / "t", cache_dir)
    assert not (tmp_path / "t").exists()


def test_budget_the_new_device_cannot_meet_prints_the_achievable_range(source_run: Path, tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(ConfigError, match="achievable range"):
        _transfer(source_run, CPU_TABLE, tmp_path / "t", cache_dir)
    with pytest.raises(ConfigError, match="means nothing on bismo-edge"):
        absolute = dataclasses.replace(
            load_source(source_run).config.env, budget=dataclasses.replace(EnvConfig().budget, absolute=0.002)
        )
        target_env_config(absolute, TransferConfig(source=str(source_run), table="bismo-edge"))


def test_not_a_search_run_or_another_observation_layout_is_refused(source_run: Path, tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="not a search run"):
        _transfer(tmp_path / "empty", "bismo-edge", tmp_path / "t", cache_dir)
    RunDir(tmp_path / "base").write_config({}, kind="baseline")
    with pytest.raises(RunDirError, match="'baseline' run has no trained agent"):
        _transfer(tmp_path / "base", "bismo-edge", tmp_path / "t", cache_dir)
    other = tmp_path / "other"
    shutil.copytree(source_run, other)
    meta_path = next(other.glob("checkpoint/ep-*/agent.json"))
    meta = json.loads(meta_path.read_text())
    meta["observation"]["features"] = meta["observation"]["features"][:-2]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RunDirError, match="does not match the SHA-256"):  # an edited checkpoint is not read
        _transfer(other, "bismo-edge", tmp_path / "t", cache_dir)
    write_manifest(meta_path.parent)  # as a haq observing other features would have written it
    with pytest.raises(RunDirError, match="incompatible observation layout"):
        _transfer(other, "bismo-edge", tmp_path / "t", cache_dir)


def _state(run: Path) -> dict[str, object]:
    """The latest checkpoint's state.json (the search's and transfer's keep one checkpoint)."""
    (path,) = run.glob("checkpoint/ep-*/state.json")
    return json.loads(path.read_text())


def test_a_ddpg_agent_keeps_its_reward_baseline_through_transfer(
    source_run: Path,
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DDPG trains on rewards minus a moving average (``AgentConfig.uses_baseline``): the zero-shot
    episode runs through that wrapper, its checkpoint stores the average, and fine-tuning continues it."""
    ddpg = tmp_path / "ddpg"
    cfg = SearchConfig(
        env=EnvConfig(evaluation=CHEAP), agent=AgentConfig(algo="ddpg", warmup_episodes=1, hidden=(16,)), episodes=2
    )
    assert cfg.agent.reward_baseline is None and cfg.agent.uses_baseline
    run_search(cfg, make_problem(cfg.env, cache_dir=cache_dir), ddpg)
    seen: list[object] = []
    real = transfer_agent.rollout

    def spy(model: object, env: object, *args: object) -> object:
        seen.append(env)
        return real(model, env, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(transfer_agent, "rollout", spy)
    zero = _transfer(ddpg, "bismo-edge", tmp_path / "t", cache_dir, reuse=False).records[0]
    assert len(seen) == 1 and isinstance(seen[0], RewardBaseline)
    assert _state(tmp_path / "t")["baseline"] == zero.reward
    tuned = _transfer(ddpg, "bismo-edge", tmp_path / "t", cache_dir, episodes=1, resume=True, reuse=False)
    momentum = cfg.agent.baseline_momentum
    assert _state(tmp_path / "t")["baseline"] == pytest.approx(momentum * zero.reward + (1 - momentum) * tuned.records[1].reward)
    sac = _transfer(source_run, "bismo-edge", tmp_path / "sac", cache_dir)  # SAC trains on the raw reward
    assert _state(tmp_path / "sac")["baseline"] is None and sac.records[0].extra["phase"] == "zero-shot"


def test_fine_tuning_writes_a_resumable_run_dir(source_run: Path, tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "t"
    first = _transfer(source_run, "bismo-cloud", out, cache_dir, episodes=2)
    rd = RunDir(out)
    assert [r.episode for r in rd.read_episodes()] == [0, 1, 2] and first.resumed_from == 0
    doc = rd.read_config()
    assert doc["kind"] == "transfer" and doc["config"]["env"]["table"] == "bismo-cloud"
    assert doc["transfer"]["source"]["table"] == "bitfusion" and doc["config"]["agent"]["warmup_episodes"] == 0
    assert QuantPolicy.load(rd.best_path).meta["reward"] == max(r.reward for r in rd.read_episodes())
    with pytest.raises(RunDirError, match="--resume"):
        _transfer(source_run, "bismo-cloud", out, cache_dir, episodes=2)
    more = _transfer(source_run, "bismo-cloud", out, cache_dir, episodes=4, resume=True)
    assert [r.episode for r in rd.read_episodes()] == [0, 1, 2, 3, 4] and more.resumed_from == 3
    assert load_source(out).meta["source_table"] == "bismo-cloud"  # the fine-tuned agent can be transferred again
    with pytest.raises(RunDirError, match="table='bismo-cloud'.*table='bismo-edge'"):
        _transfer(source_run, "bismo-edge", out, cache_dir, episodes=4, resume=True)


def test_agent_trained_on_one_model_rolls_out_and_fine_tunes_on_another(
    source_run: Path, tmp_path: Path, cache_dir: Path
) -> None:
    result = _transfer(source_run, "bitfusion", tmp_path / "t", cache_dir, episodes=1, model="digits_mlp")
    rd = RunDir(tmp_path / "t")
    target = make_problem(
        EnvConfig(workload=dataclasses.replace(EnvConfig().workload, model="digits_mlp"), evaluation=CHEAP), cache_dir=cache_dir
    )
    assert rd.read_config()["layers"] == target.layer_names and len(target.layer_names) != 4
    for record in rd.read_episodes():
        pairs = [record.policy[c.name] for c in target.budget_model.layers]
        assert target.budget_model.policy_cost(pairs) <= target.budget.target * (1 + 1e-9)
    assert result.records[0].extra["source_model"] == "digits_cnn"


def test_transfer_config_round_trips_and_validates() -> None:
    cfg = TransferConfig(source="runs/a", table="bismo-edge", model="digits_mlp", budget_ratio=0.4, evaluator="full")
    assert serial.from_dict(TransferConfig, json.loads(json.dumps(serial.to_dict(cfg)))) == cfg
    for bad, match in (
        ({"episodes": -1}, "episodes"),
        ({"budget_ratio": 0.0}, "budget_ratio"),
        ({"evaluator": "fast"}, "cheap, screen, full"),
        ({"noise_decay": 1.5}, "noise_decay"),
        ({"table": ""}, "--device"),
    ):
        with pytest.raises(ConfigError, match=match):
            dataclasses.replace(cfg, **bad)


def test_promotion_to_the_narrowest_wider_pair() -> None:
    costs = {(8, 8): 4.0, (4, 4): 1.0, (8, 32): 6.0, (32, 32): 3.0, (4, 32): 2.0, (32, 4): 5.0}
    assert promote_pair((4, 4), costs) == (4, 4)
    assert promote_pair((5, 3), costs) == (8, 8)  # not float, although float is cheaper here
    assert promote_pair((8, 16), costs) == (8, 32)
    assert promote_pair((2, 5), costs) == (8, 8)
    assert promote_pair((2, 2), {(1, 1): 1.0}) is None


def test_policy_cost_on_every_shipped_device(cache_dir: Path) -> None:
    problem = make_problem(EnvConfig(evaluation=CHEAP), cache_dir=cache_dir)
    layers = problem.workload.layers
    uniform = cost_on_devices(layers, QuantPolicy.uniform(problem.layer_names, 8), latency_tables.load_all())
    assert [c.table for c in uniform] == latency_tables.available()
    assert all(c.speedup_vs_uniform == pytest.approx(1.0) and not c.promoted for c in uniform)
    low = {c.table: c for c in cost_on_devices(layers, QuantPolicy.uniform(problem.layer_names, 4), latency_tables.load_all())}
    assert low["bitfusion"].latency_ms == pytest.approx(
        problem.table.policy_cost(layers, QuantPolicy.uniform(problem.layer_names, 4))
    )
    assert low["bitfusion"].energy_mj is not None and low["bitfusion"].speedup_vs_uniform > 1.0  # type: ignore[operator]
    assert set(low[CPU_TABLE].promoted) == set(problem.layer_names)  # an int8 CPU runs 4-bit layers as 8-bit
    assert low[CPU_TABLE].latency_ms == pytest.approx(low[CPU_TABLE].uniform_latency_ms)
    with pytest.raises(Exception, match="unknown layer"):
        cost_on_devices(layers, QuantPolicy.uniform(["nope"], 8), [])


def test_cli_cost_and_transfer(source_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = source_run / "best_policy.json"
    assert main(["cost", "--policy", str(policy), str(policy)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in latency_tables.available()) and out.count(str(policy)) == 2
    assert main(["transfer", "--from", str(tmp_path / "nope"), "--device", "bismo-edge", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("haq: error:") and "no such directory" in err[0]


def test_a_transfer_acts_around_the_least_cost_allocation_as_accurate_as_its_sources_rung(
    rung_source: Path, tmp_path: Path, cache_dir: Path
) -> None:
    records = RunDir(rung_source).read_episodes()
    rungs = [r for r in records if RUNG in r.extra]
    assert len(rungs) == 2
    source = load_source(rung_source).config
    fraction = centre_fraction(records, source.agent, source.env, "source")
    best = max(rungs, key=lambda r: r.reward)
    assert fraction == best.extra[RUNG] == 0.5 and centre_rung(records, source.agent, source.env, "source") == best
    zero = _transfer(rung_source, "bismo-edge", tmp_path / "t", cache_dir, reuse=False).records[0]
    cfg = TransferConfig(source=str(rung_source), table="bismo-edge", episodes=0)
    target = make_problem(transfer_env(cfg), cache_dir=cache_dir)
    centred, matched = centre_at_accuracy(target, dict(best.policy))
    assert zero.extra[CENTRE] == matched != fraction  # the same estimated accuracy sits elsewhere on Bismo-edge's budget
    solved = sensitivity_rungs(target.budget_model, target.sensitivity, [matched * target.budget.target])
    assert centred.prior == solved[0][1] != target.prior
    assert estimated_error(target.sensitivity, dict(zip(target.layer_names, centred.prior))) <= estimated_error(
        target.sensitivity, dict(best.policy)
    )
    env = MixedPrecisionEnv(problem=centred)
    assert rollout(load_on(load_source(rung_source).checkpoint, env), env, 0).policy == zero.policy
    # a transfer of the transfer (no rungs of its own) keeps the frame its agent was trained in
    again = _transfer(tmp_path / "t", "bitfusion", tmp_path / "t2", cache_dir).records[0]
    assert again.extra[CENTRE] == matched
    # another model's estimated errors are on another scale: it takes the same budget fraction
    mlp = _transfer(rung_source, "bitfusion", tmp_path / "t3", cache_dir, model="digits_mlp", reuse=False).records[0]
    assert mlp.extra[CENTRE] == fraction


@pytest.mark.parametrize("seed", range(3))
def test_the_least_cost_allocation_at_an_error_is_as_accurate_and_no_cheaper_one_is(cache_dir: Path, seed: int) -> None:
    problem = make_problem(
        EnvConfig(evaluation=CHEAP, table=["bitfusion", "bismo-edge", "bismo-cloud"][seed]), cache_dir=cache_dir
    )
    model, sensitivity, names = problem.budget_model, problem.sensitivity, problem.layer_names
    assert sensitivity is not None

    def error(pairs: tuple[tuple[int, int], ...]) -> float:
        return estimated_error(sensitivity, dict(zip(names, pairs)))

    lo = model.budget.cheapest / model.budget.target
    ladder = sensitivity_rungs(model, sensitivity, [f * model.budget.target for f in np.linspace(1.0, lo, 9)])
    levels = sorted({error(pairs) for _, pairs in ladder})
    rng = np.random.default_rng(seed)
    for level in [*levels, *rng.uniform(min(levels), max(levels), 4)]:
        fraction, pairs = least_cost_at_error(model, sensitivity, level)
        assert error(pairs) <= level + 1e-12 and lo <= fraction <= 1.0
        if fraction > lo + 1e-9:  # a step cheaper is less accurate than asked
            step = (1.0 - lo) / 2**10
            [(_, cheaper)] = sensitivity_rungs(model, sensitivity, [(fraction - step) * model.budget.target])
            assert error(cheaper) > level
    full = sensitivity_rungs(model, sensitivity, [model.budget.target])[0][1]
    assert least_cost_at_error(model, sensitivity, error(full) / 2) == (1.0, full)  # unreachable: the full budget's


def test_the_centre_fraction_is_the_centre_rungs_or_the_inherited_one(cache_dir: Path) -> None:
    def record(reward: float, **extra: float) -> EpisodeRecord:
        return EpisodeRecord(
            0, {}, PolicyMetrics(clean_acc=0.9, robust_acc=None, latency_ms=1.0, energy_mj=None, size_bits=8), reward, dict(extra)
        )

    env, best, tied = EnvConfig(), AgentConfig(prior_centre="best"), AgentConfig()
    # one standard error of a 90 % accuracy on 300 images at weight 0.1: 10 * sqrt(0.09 / 300) = 0.173
    rungs = [record(-0.10, **{RUNG: 1.0}), record(-0.25, **{RUNG: 0.75}), record(-0.30, **{RUNG: 0.5}), record(0.5)]
    assert centre_fraction(rungs, best, env, "run") == 1.0
    assert centre_fraction(rungs, tied, env, "run") == 0.75  # 0.5 is 0.20 behind: outside the noise
    few = dataclasses.replace(env, evaluation=dataclasses.replace(env.evaluation, val_samples=150))
    assert centre_fraction(rungs, tied, few, "run") == 0.5  # on half the images 0.20 is inside it (0.245)
    assert centre_fraction([record(-0.2, **{CENTRE: 0.625}), record(0.1)], tied, env, "run") == 0.625
    assert centre_fraction([record(-0.2), record(0.1)], tied, env, "run") is None
    for bad in (0.0, 1.5, "half", True, float("nan")):
        with pytest.raises(RunDirError, match=r"^run: episode 0's 'centre_fraction' must be a budget fraction in \(0, 1\]"):
            centre_fraction([EpisodeRecord(0, {}, record(0.1).metrics, 0.1, {CENTRE: bad})], tied, env, "run")
    uniform = make_problem(EnvConfig(evaluation=CHEAP, action_prior="uniform"), cache_dir=cache_dir)
    assert centre_at(uniform, 0.5) is uniform


def test_a_source_with_a_damaged_rung_is_refused_before_anything_is_written(
    rung_source: Path, tmp_path: Path, cache_dir: Path
) -> None:
    source = tmp_path / "source"
    shutil.copytree(rung_source, source)
    log = source / "episodes.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    for row in rows:
        if RUNG in row.get("extra", {}):
            row["extra"][RUNG] = "half"
    log.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(RunDirError, match=r"'prior_rung' must be a budget fraction in \(0, 1\], got 'half'"):
        _transfer(source, "bismo-edge", tmp_path / "t", cache_dir)
    assert not (tmp_path / "t" / "config.json").exists()
