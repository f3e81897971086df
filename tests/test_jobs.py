"""Job documents: validated by the CLI's config classes with the field named, written as TOML that
reads back as the same job, and ``--config`` on the run commands with typed flags over the file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest

from haq.cli import build_parser
from haq.core.errors import ConfigError
from haq.jobs import KINDS, Job, parse_job, sections, stored_job, to_toml, write_job
from haq.jobs.document import get_path
from haq.jobs.flags import FLAG_PATHS, RUN_FLAGS, resolve_job

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

MINIMAL: dict[str, dict[str, Any]] = {
    "search": {},
    "baseline": {"baseline": {"method": "uniform"}},
    "transfer": {"transfer": {"source": "runs/a", "table": "bismo-edge"}},
    "table_build": {"build": {"models": ["digits_cnn"], "device": "bitfusion", "out": "t.json"}},
    "table_check": {
        "check": {
            "model": "digits_cnn",
            "table": "example-cpu-xeon",
            "n": 5,
            "sessions": 1,
            "seed": 0,
            "save": None,
            "rescore": None,
        }
    },
}
COMMANDS = {"search": ["search"], "baseline": ["baseline"], "transfer": ["transfer"], "table_build": ["tables", "build"]}


def _job(kind: str, **extra: Any) -> Job:
    return parse_job({"version": 1, "kind": kind, **MINIMAL[kind], **extra})


@pytest.mark.skipif(tomllib is None, reason="reading TOML needs Python 3.11+")
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_round_trips_through_toml(kind: str) -> None:
    job = _job(kind, tracking={"mlflow": "file:/tmp/mlruns"})
    assert set(job.configs) == set(sections(kind))
    text = to_toml(job.to_dict())
    assert parse_job(tomllib.loads(text)) == job
    assert parse_job(job.to_dict()) == job


def test_resolved_document_is_stored_and_read_back(tmp_path: Path) -> None:
    job = _job("search", search={"episodes": 7, "env": {"budget": {"ratio": 0.4}}})
    path = write_job(tmp_path, job)
    assert path.name == "job.toml" and stored_job(tmp_path) == job
    assert "ratio = 0.4" in path.read_text()


def test_toml_writer_escapes_strings_and_keys() -> None:
    if tomllib is None:
        pytest.skip("reading TOML needs Python 3.11+")
    doc = {"plain": 'quote " backslash \\ tab \t newline \n del \x7f é', "nested": {"odd key": [1, 2.5, True], "empty": {}}}
    assert tomllib.loads(to_toml(doc)) == doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"version": 1, "kind": "search", "search": {"episodes": -1}}, "search.episodes must be an integer >= 1"),
        ({"version": 1, "kind": "search", "search": {"seed": True}}, "search.seed must be an integer"),
        ({"version": 1, "kind": "search", "search": {"env": {"min_bits": 9}}}, "search.env:"),
        ({"version": 1, "kind": "search", "search": {"env": {"evaluation": {"attacks": []}}}}, "search.env.evaluation"),
        ({"version": 1, "kind": "search", "search": {"env": {"table": "bad\nname"}}}, "search.env.table must be printable"),
        ({"version": 1, "kind": "search", "search": {"env": {"budget": {"metric": None}}}}, "search.env.budget.metric must be"),
        ({"version": 1, "kind": "search", "search": {"agent": "sac"}}, "search.agent must be a table"),
        ({"version": 1, "kind": "search", "search": {"colour": 1}}, "search: unknown field(s) colour"),
        ({"version": 2, "kind": "search"}, "version"),
        ({"format": "other", "version": 1, "kind": "search"}, "format"),
        (
            {"version": 1, "kind": "table_build", "build": {"models": "digits_cnn", "device": "x", "out": "t.json"}},
            "build.models must be a list",
        ),
        ({"version": 1, "kind": "transfer"}, "transfer.source"),
    ],
)
def test_bad_documents_name_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_job(doc)
    assert message in str(err.value)


def _parse(argv: list[str]) -> argparse.Namespace:
    command = "tables" if argv[0] == "tables" else argv[0]
    return build_parser(command).parse_args(argv)


def _config_file(tmp_path: Path, kind: str, body: dict[str, Any]) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(to_toml({"version": 1, "kind": kind, **body}))
    return path


def test_config_file_gives_settings_and_typed_flags_override_it(tmp_path: Path) -> None:
    path = _config_file(
        tmp_path, "search", {"search": {"episodes": 10, "env": {"table": "bismo-edge", "budget": {"ratio": 0.3}}}}
    )
    ns, job = resolve_job(_parse(["search", "--config", str(path), "--episodes", "60", "--seed", "3"]), "search", lambda n: {})
    cfg = job.section("search")
    assert cfg.episodes == 60, "a typed flag wins even when it equals the flag's default"
    assert cfg.seed == 3 and cfg.env.workload.seed == 3
    assert cfg.env.table == "bismo-edge" and cfg.env.budget.ratio == 0.3, "untyped flags leave the file's values"
    assert cfg.env.evaluation.kind == "cheap", "the document's defaults are the config classes', not the flags'"
    assert ns.out is None and ns.threads == 1 and ns.episodes == 60


def test_without_config_the_flags_make_the_job(tmp_path: Path) -> None:
    from haq.commands.search import search_config

    ns, job = resolve_job(
        _parse(["search", "--episodes", "5", "--device", "bismo-cloud", "--mlflow", "file:/x"]),
        "search",
        lambda n: {"search": search_config(n)},
    )
    assert job.section("search").episodes == 5 and job.section("search").env.table == "bismo-cloud"
    assert job.section("search").env.evaluation.kind == "full", "the CLI's own defaults stay as they were"
    assert job.tracking.mlflow == "file:/x"


def test_required_flags_and_kind_mismatch_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--method is required"):
        resolve_job(_parse(["baseline"]), "baseline", lambda n: {}, required={"method": "--method"})
    with pytest.raises(ConfigError, match="--from, --device is required"):
        resolve_job(_parse(["transfer"]), "transfer", lambda n: {}, required={"source": "--from", "device": "--device"})
    path = _config_file(tmp_path, "search", {})
    with pytest.raises(ConfigError, match="is a search job; this command runs baseline jobs"):
        resolve_job(_parse(["baseline", "--config", str(path)]), "baseline", lambda n: {})
    path = _config_file(tmp_path, "baseline", {"baseline": {"method": "uniform"}})
    with pytest.raises(ConfigError, match="baseline method"):
        resolve_job(_parse(["baseline", "--config", str(path), "--method", "best"]), "baseline", lambda n: {})
    (tmp_path / "broken.toml").write_text("version = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_job(_parse(["search", "--config", str(tmp_path / "broken.toml")]), "search", lambda n: {})


@pytest.mark.parametrize("kind", list(COMMANDS))
def test_every_flag_of_the_command_maps_into_the_document(kind: str) -> None:
    argv = COMMANDS[kind]
    parser = build_parser(argv[0])
    sub = next(a for a in parser._actions if a.dest == "command").choices[argv[0]]  # noqa: SLF001
    if len(argv) > 1:
        sub = next(a for a in sub._actions if a.dest == "tables_action").choices[argv[1]]  # noqa: SLF001
    dests = {a.dest for a in sub._actions if a.dest != "help"}  # noqa: SLF001
    unmapped = dests - set(FLAG_PATHS[kind]) - RUN_FLAGS[kind]
    assert not unmapped, f"haq {' '.join(argv)} flags {sorted(unmapped)} need a document path in haq.jobs.flags.FLAG_PATHS"
    assert set(FLAG_PATHS[kind]) <= dests, "FLAG_PATHS names a flag the command no longer has"
    doc = _job(kind).to_dict()
    for paths in FLAG_PATHS[kind].values():
        for path in paths:
            get_path(doc, path)
