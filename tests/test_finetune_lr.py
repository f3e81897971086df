"""The DQ fine-tune's learning rate chosen per workload: probes, the choice, the cache, and the
problem that searches with it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from haq.core.errors import ConfigError, DataError, DivergedError
from haq.evaluation.config import EvalConfig
from haq.jobs.problems import FINETUNE_LR_CACHE, make_problem
from haq.problem import finetune_lr
from haq.problem.config import EnvConfig
from haq.problem.finetune_lr import LrChoice, choose_finetune_lr, finetune_lr_key, needs_choice, probe_policies
from haq.runs.finetune_lr_file import LrCache, read_choice
from haq.workload import load_workload

LAYERS = ["conv1", "conv2", "conv3", "fc"]


def test_probes_are_fixed_low_widths_and_keep_a_pinned_first_and_last_layer() -> None:
    probes = probe_policies(EnvConfig(), LAYERS)
    assert len(probes) == finetune_lr.PROBES and probes == probe_policies(EnvConfig(), LAYERS)  # the same every time
    widths = {b for p in probes for lb in p.layers.values() for b in (lb.w_bits, lb.a_bits)}
    assert widths <= {2, 3, 4, 5} and len(widths) > 1
    pinned = probe_policies(EnvConfig(pin_first_last=8), LAYERS)
    for p in pinned:
        assert (p.layers["conv1"].w_bits, p.layers["fc"].a_bits) == (8, 8) and p.layers["conv2"].w_bits <= 5
    assert {lb.w_bits for lb in probe_policies(EnvConfig(min_bits=6, max_bits=7), LAYERS)[0].layers.values()} <= {6, 7}


def test_only_a_fine_tuning_evaluator_with_candidates_asks_for_a_choice() -> None:
    lrs = (1e-3, 3e-4)
    assert needs_choice(EnvConfig(evaluation=EvalConfig(kind="full", finetune_lrs=lrs)))
    assert needs_choice(EnvConfig(evaluation=EvalConfig(kind="multi", finetune_lrs=lrs)))
    assert not needs_choice(EnvConfig(evaluation=EvalConfig(kind="cheap", finetune_lrs=lrs)))
    assert not needs_choice(EnvConfig(evaluation=EvalConfig(kind="full", finetune_lrs=lrs, finetune_epochs=0)))
    assert not needs_choice(EnvConfig(evaluation=EvalConfig(kind="full", finetune_lrs=())))
    assert needs_choice(EnvConfig(evaluation=EvalConfig(kind="full")))  # the default chooses among FINETUNE_LRS
    with pytest.raises(ConfigError, match="finetune_lrs"):
        EvalConfig(finetune_lrs=(1e-3, -1.0))
    with pytest.raises(ConfigError, match="repeat"):
        EvalConfig(finetune_lrs=(1e-3, 1e-3))


def test_the_rate_that_ruins_the_fine_tune_loses_and_the_choice_is_kept_for_the_next_run(cache_dir: Path) -> None:
    env = EnvConfig(evaluation=EvalConfig(kind="full", finetune_lrs=(50.0, 1e-3)))  # 50: Adam's steps wreck the weights
    workload = load_workload(env.workload, torch.device("cpu"), cache_dir=cache_dir)
    store = LrCache(cache_dir / FINETUNE_LR_CACHE)
    store.path(finetune_lr_key(env, workload)).unlink(missing_ok=True)  # measured here, not by an earlier session
    said: list[str] = []
    problem = make_problem(env, cache_dir=cache_dir, log=said.append)
    assert problem.config.evaluation.finetune_lr == 1e-3 and problem.config.evaluation.finetune_lrs == ()
    assert any(line.startswith("choosing the DQ fine-tune's learning rate among 50, 0.001") for line in said)
    kept = store.get(finetune_lr_key(env, workload))
    assert kept is not None and kept.lr == 1e-3 and kept.scores[1e-3] > kept.scores[50.0] + 1.0
    again: list[str] = []
    second = make_problem(env, cache_dir=cache_dir, log=again.append)
    assert second.config.evaluation.finetune_lr == 1e-3 and not any("choosing" in line for line in again)  # reused
    assert "DQ fine-tune learning rate 0.001 (chosen for this model before; kept in the cache)" in again
    other = dataclasses.replace(env, reward=dataclasses.replace(env.reward, robust_weight=0.5))
    assert finetune_lr_key(other, workload) != finetune_lr_key(env, workload)  # another reward weighs probes otherwise


def test_a_diverging_rate_is_left_out_and_all_diverging_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    env = EnvConfig(evaluation=EvalConfig(kind="full", finetune_lrs=(1.0, 1e-3, 1e-4)))
    heard: list[tuple[float, int]] = []

    def score(workload: object, table: object, cfg: EnvConfig, lr: float, seed: int, probe: object) -> float | None:
        heard.append((lr, seed))
        if lr == 1.0 and seed == finetune_lr.EVALUATOR_SEEDS[-1]:
            return None  # diverged under one seed: the rate is out
        return 2.0 if lr == 1e-4 else 1.0

    monkeypatch.setattr(finetune_lr, "probe_score", score)
    workload = type("W", (), {"layer_names": LAYERS})()
    said: list[str] = []
    assert choose_finetune_lr(env, workload, None, log=said.append) == LrChoice(1e-4, {1e-3: 1.0, 1e-4: 2.0})  # type: ignore[arg-type]
    per_rate = finetune_lr.PROBES * len(finetune_lr.EVALUATOR_SEEDS)
    assert (
        len(heard) == 3 * per_rate
        and len(said) == 3
        and said[-1].startswith(f"choosing the DQ fine-tune's rate: {3 * per_rate}/")
    )
    ruined = EnvConfig(evaluation=EvalConfig(kind="full", finetune_lrs=(1.0, 2.0)))
    monkeypatch.setattr(finetune_lr, "probe_score", lambda *_: None)
    with pytest.raises(DivergedError, match=r"every candidate learning rate \(1, 2\); give lower ones"):
        choose_finetune_lr(ruined, workload, None)  # type: ignore[arg-type]


def test_a_cached_choice_that_is_not_one_is_named_and_measured_again(tmp_path: Path) -> None:
    said: list[str] = []
    store = LrCache(tmp_path, said.append)
    key = "0" * 32
    store.put(key, LrChoice(3e-4, {1e-3: 1.5, 3e-4: 2.5}))
    assert store.get(key) == LrChoice(3e-4, {1e-3: 1.5, 3e-4: 2.5})  # read back as written
    for text in ("{not json", json.dumps({"format": "haq.finetune_lr", "version": 1, "lr": -1, "scores": {}})):
        store.path(key).write_text(text)
        with pytest.raises(DataError, match=f"{key}.json"):  # one line naming the file
            read_choice(store.path(key))
        assert store.get(key) is None
    assert len(said) == 2 and all("measuring it again" in line for line in said)
    with pytest.raises(Exception, match="not a 32-digit hex digest"):
        store.path("../elsewhere")


def test_a_search_records_the_rate_it_chose_and_evaluate_fine_tunes_with_it(tmp_path: Path) -> None:
    from haq.cli import main
    from haq.runs.final_pick import PICK_FILE, POLICY_FILE

    out = tmp_path / "run"
    search = ["search", "--evaluator", "full", "--episodes", "3", "--warmup", "2", "--seed", "0", "--out", str(out)]
    assert main([*search, "--finetune-lrs", "50", "1e-3", "--pick", "2", "--select-seeds", "1", "--report-seeds", "1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["finetune_lr"] == 1e-3 and config["config"]["env"]["evaluation"]["finetune_lrs"] == [50.0, 0.001]
    assert json.loads((out / PICK_FILE).read_text())["select_seeds"] == [201]  # chosen under a seed the search did not use
    tiny = ["--samples", "60", "--robust-samples", "20", "--dq-epochs", "1"]
    assert main(["evaluate", "--policy", str(out / POLICY_FILE), "--dq-lr", str(config["finetune_lr"]), *tiny]) == 0
    assert main(["evaluate", "--policy", str(out / POLICY_FILE), "--dq-lr", "-1", *tiny]) == 2  # one line, not a traceback


def test_a_problem_with_its_rate_chosen_counts_as_built_from_the_config_that_asked() -> None:
    from haq.problem.finetune_lr import built_from

    asked = EnvConfig(evaluation=EvalConfig(kind="full", finetune_lrs=(1e-3, 1e-4)))
    chosen = dataclasses.replace(asked, evaluation=EvalConfig(kind="full", finetune_lr=1e-4, finetune_lrs=()))
    assert built_from(asked, asked) and built_from(chosen, asked)
    other = EvalConfig(kind="full", finetune_lr=3e-4, finetune_lrs=())
    assert not built_from(dataclasses.replace(asked, evaluation=other), asked)  # not a candidate
    assert not built_from(dataclasses.replace(chosen, min_bits=3), asked) and not built_from(chosen, EnvConfig())


def test_a_run_started_before_rates_were_chosen_resumes_at_its_rate_not_at_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from haq.cli import main

    out = tmp_path / "run"
    search = [
        "search",
        "--evaluator",
        "cheap",
        "--episodes",
        "2",
        "--warmup",
        "2",
        "--seed",
        "0",
        "--pick",
        "0",
        "--out",
        str(out),
    ]
    assert main(search) == 0
    path = out / "config.json"
    doc = json.loads(path.read_text())
    del doc["config"]["env"]["evaluation"]["finetune_lrs"]  # as a run of an earlier haq wrote it
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main([*search, "--episodes", "3", "--resume"]) == 2  # today's default would choose a rate: refused
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "written by a haq before env.evaluation.finetune_lrs existed, which ran as env.evaluation.finetune_lrs=[]" in err
    assert "give that setting to continue it" in err and "Traceback" not in err
    assert main([*search, "--episodes", "3", "--resume", "--finetune-lrs"]) == 0  # none: the stored rate, unchosen
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 3


def test_with_workers_the_rate_is_chosen_on_them_as_here_and_they_evaluate_at_it(cache_dir: Path) -> None:
    pytest.importorskip("ray")
    from haq.evaluation.evaluators import build_evaluator

    # the workers start at 3e-4, which is no candidate: what they evaluate at shows the chosen rate reached them
    env = EnvConfig(evaluation=EvalConfig(kind="full", finetune_lr=3e-4, finetune_lrs=(1e-3, 1e-4)))
    workload = load_workload(env.workload, torch.device("cpu"), cache_dir=cache_dir)
    LrCache(cache_dir / FINETUNE_LR_CACHE).path(finetune_lr_key(env, workload)).unlink(missing_ok=True)
    said: list[str] = []
    problem = make_problem(env, cache_dir=cache_dir, log=said.append, workers=2)
    try:
        here = choose_finetune_lr(env, workload, problem.table)
        evaluation = problem.config.evaluation
        assert evaluation == dataclasses.replace(env.evaluation, finetune_lr=here.lr, finetune_lrs=())
        assert problem.pool.spec.evaluation == evaluation  # type: ignore[union-attr]
        assert "choosing the DQ fine-tune's learning rate among 0.001, 0.0001 (18 fine-tunes on 2 workers)" in said
        progress = [line.split(" (")[0] for line in said if line.startswith("choosing the DQ fine-tune's rate")]
        assert progress == [f"choosing the DQ fine-tune's rate: {k}/18 fine-tunes done" for k in (9, 18)]
        scores = next(line for line in said if line.startswith(f"DQ fine-tune learning rate {here.lr:g} (mean"))
        assert all(f"{lr:g} {s:+.3f}" in scores for lr, s in here.scores.items())  # the workers measured what this process does
        policy = probe_policies(env, workload.layer_names)[0]
        at = {
            lr: build_evaluator(workload, problem.table, dataclasses.replace(evaluation, finetune_lr=lr)).evaluate(policy)
            for lr in (3e-4, here.lr)
        }
        remote = problem.evaluator.evaluate(policy)
        assert (remote.clean_acc, remote.robust_acc) == (at[here.lr].clean_acc, at[here.lr].robust_acc)
        assert (at[3e-4].clean_acc, at[3e-4].robust_acc) != (at[here.lr].clean_acc, at[here.lr].robust_acc)
    finally:
        problem.close()


def test_a_resumed_run_keeps_the_rate_it_began_with_not_a_new_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from haq.cli import main

    out = tmp_path / "run"
    search = ["search", "--episodes", "2", "--warmup", "2", "--seed", "0", "--pick", "0", "--finetune-lrs", "1e-3", "1e-4"]
    assert main([*search, "--out", str(out)]) == 0
    path = out / "config.json"
    doc = json.loads(path.read_text())
    other = 1e-4 if doc["finetune_lr"] == 1e-3 else 1e-3
    doc["finetune_lr"] = other  # as if the run had begun on a machine whose probes chose the other rate
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main([*search, "--episodes", "3", "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"DQ fine-tune learning rate {other:g} (the rate the resumed run began with)" in err and "choosing" not in err
    assert json.loads(path.read_text())["finetune_lr"] == other
    from haq.jobs import stored_job
    from haq.jobs.execute import run_job

    job = stored_job(out)
    assert job is not None
    said: list[str] = []
    run_job(job, out, resume=True, log=said.append)  # the service's way in: a job resumed after a crash
    assert f"DQ fine-tune learning rate {other:g} (the rate the resumed run began with)" in said
