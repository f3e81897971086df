"""The generic config serializer: a stored document that lacks a field reads as what its absence
meant (the haq that wrote it), a document a person writes gets the default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from haq.core import config as serial
from haq.core.errors import ConfigError
from haq.evaluation.config import EvalConfig
from haq.problem.config import EnvConfig
from haq.search.config import SearchConfig


@dataclass(frozen=True)
class Inner:
    rates: tuple[float, ...] = field(default=(1.0, 2.0), metadata=serial.absent_means(()))
    width: int = 4


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    mode: str = field(default="new", metadata=serial.absent_means("old"))
    seed: int = 0


def test_a_stored_document_lacking_a_field_reads_as_what_its_absence_meant_nested_too() -> None:
    old = {"inner": {"width": 5}, "seed": 3}  # written before ``rates`` and ``mode`` existed
    assert serial.from_dict(Outer, old, stored=True) == Outer(Inner(rates=(), width=5), mode="old", seed=3)
    assert serial.from_dict(Outer, old) == Outer(Inner(width=5), seed=3)  # a person's document: the defaults
    assert serial.fill_absent(Outer(), old) == {"inner": {"width": 5, "rates": []}, "seed": 3, "mode": "old"}
    assert serial.fill_absent({"run": Outer()}, {"run": old, "other": 1}) == {"run": serial.fill_absent(Outer(), old), "other": 1}


def test_filling_never_touches_what_a_document_holds_and_a_full_document_reads_back_unchanged() -> None:
    for cfg in (Outer(), Outer(Inner((3.0,), 2), "x", 7), Outer(Inner((), 1), "old", 1)):
        stored = serial.to_dict(cfg)
        assert serial.fill_absent(cfg, stored) == stored and serial.fill_absent(Outer(), stored) == stored
        assert serial.from_dict(Outer, stored, stored=True) == cfg == serial.from_dict(Outer, stored)
    with pytest.raises(ConfigError, match="unknown field"):
        serial.from_dict(Outer, {"colour": 1}, stored=True)


def test_a_search_config_stored_before_rates_were_chosen_fine_tunes_at_its_stored_rate() -> None:
    stored = serial.to_dict(SearchConfig())
    del stored["env"]["evaluation"]["finetune_lrs"]
    old = serial.from_dict(SearchConfig, stored, stored=True)
    assert old.env.evaluation.finetune_lrs == () and old.env.evaluation.finetune_lr == EvalConfig().finetune_lr
    assert serial.from_dict(SearchConfig, stored).env.evaluation.finetune_lrs == EvalConfig().finetune_lrs
    assert old == dataclasses.replace(
        SearchConfig(), env=dataclasses.replace(EnvConfig(), evaluation=EvalConfig(finetune_lrs=()))
    )
