"""Fit a measured table's graph-aware terms on whole models timed end to end.

:func:`fit_table` measures uniform and random policies of each network (all networks in one
round-robin batch), fits the per-device terms (boundary rules, per-layer terms) jointly over
all of them and, per network, terms of its own or a correction on top (the numerics are
:mod:`haq.hardware.graph_fit`, :func:`fit_graph` the timing-free step) and saves the table.
The whole-model measurements it used are kept in a small JSON-lines file beside the table
(:mod:`haq.hardware.fit_observations`), so a refit (a new fitting method, another model added)
re-measures only what that file lacks.
Both are tied to a machine: a table that records one (``meta.machine``) is fitted only by a
runner on the same machine, and kept measurements are reused only on the machine that took them.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from haq.core import validate
from haq.core.types import BitPair, Log
from haq.hardware.device.runner import Runner
from haq.hardware.device.sentinel import sentinel_model
from haq.hardware.fit_observations import (
    MeasuredCache,
    check_table_machine,
    load_observations,
    runner_identity,
    save_observations,
)
from haq.hardware.graph_fit import (
    FLOOR_SLACK,
    OWN_FORM,
    PRIOR_WEIGHT,
    DeviceFit,
    Observation,
    fit_correction,
    fit_device,
    fit_set,
)
from haq.hardware.measured import entry_model, retimed_entry
from haq.hardware.networks import Network, bits_of, export_all, policy_of, sample_policies, supported_pairs
from haq.hardware.parts import (
    NodeSet,
    bounded_overhead,
    call_cost_models,
    fit_overhead,
    parts_ms,
    timed_call_cost,
    uniform,
)
from haq.quant import LayerInfo, QuantPolicy
from haq.tables.schema import (
    FAMILIES,
    KERNELS,
    Correction,
    Entry,
    FamilyTerms,
    GraphExtras,
    LayerTerm,
    NetworkTerms,
    PartsCall,
    RunOverhead,
    TransitionRule,
    kernel_share,
    network_family,
    network_fingerprint,
)
from haq.tables.table import CostTable, save_table

Exported = dict[tuple[str, tuple[BitPair, ...]], bytes]
"""Configurations already exported in this fit: (network fingerprint, per-layer bits) -> ONNX bytes."""

FIT_CONFIGS = 24
"""Whole-model configurations measured per network for a fit, by default. Why 24: on one run of
``bench/tables.py`` whose first 12 fit configurations per network are those of a 12-configuration
run, the checks within ±10 % of the networks' own terms averaged 91 % over eight networks with all
24 against 86 % with the first 12 (fewest 81 % against 62 %). It costs time: ResNet-20's fit
took 136 s against 81 s with 12 (``--configs 12``; latency_tables/README.md)."""
DRAWS_PER_CONFIG = 20
"""Random policies drawn per fit configuration wanted, to find that many distinct ones."""


def fit_table(
    table: CostTable,
    nets: Sequence[Network],
    runner: Runner,
    n: int,
    out: Path,
    seed: int = 0,
    log: Log | None = None,
    observations: Path | None = None,
    form: str | None = None,
    by_parts: Sequence[str] = (),
    blend: bool = False,
) -> CostTable:
    """Measure ``n`` configurations per network, fit device terms and corrections, save to ``out``.

    Every network's configurations are timed together, round-robin (one session per
    configuration per round), so drift hits all networks alike. With ``observations``,
    measurements recorded there for this very table (same ``created`` stamp and protocol) are
    reused and the new ones are added to the file. The networks named in ``by_parts`` are never
    timed whole: each configuration is priced from its layers and the nodes between them
    (:func:`price_by_parts`, the call overhead fitted on the other networks' measurements, or
    timed when every network is priced so); with ``blend``, where networks are measured whole
    beside them, each such price is blended with the device terms those fit
    (:func:`blend_with_terms`). Nothing of theirs is added to ``observations``.
    """
    machine = runner_identity(runner)
    check_table_machine(table, machine)
    whole = [net for net in nets if net.name not in by_parts]
    obs: list[Observation] = []
    overhead: RunOverhead | None = None
    exported: Exported = {}
    if whole:
        known = load_observations(observations, table, machine) if observations is not None and observations.exists() else {}
        table, obs, overhead = measure_all(table, whole, runner, n, seed, known, log, exported)
        if observations is not None:
            save_observations(observations, table, known, machine)
    parts = [net for net in nets if net.name in by_parts]
    parts_call: PartsCall | None = None
    if parts:
        stored = table.data.graph.parts_call
        priced, overhead, parts_call = price_by_parts(table, parts, runner, n, seed, log, obs, whole, exported, stored)
        if blend and whole:
            priced = blend_with_terms(priced, fit_graph(table, whole, obs, overhead, form=form), parts)
            if log:
                log(f"each price by parts blended with the device terms of {', '.join(n.name for n in whole)} (geometric mean)")
        obs = [*obs, *priced]
    named = [net.name for net in parts]
    result = fit_graph(table, nets, obs, overhead, form=form, log=log, by_parts=named, parts_call=parts_call)
    save_table(result.data, out)
    return result


def fit_graph(
    table: CostTable,
    nets: Sequence[Network],
    obs: Sequence[Observation],
    overhead: RunOverhead | None = None,
    form: str | None = None,
    corrected: Sequence[str] | None = None,
    log: Log | None = None,
    by_family: bool = True,
    prior_weight: float = PRIOR_WEIGHT,
    by_parts: Sequence[str] = (),
    parts_call: PartsCall | None = None,
    own_form: str | None = OWN_FORM,
) -> CostTable:
    """``table`` with device terms fitted on ``obs`` (every network in it; the call overhead
    too, bounded by ``overhead.probe_ms``), with ``by_family`` a family's own terms where
    :func:`~haq.hardware.graph_fit.fit_set` fits that family on fewer networks (dense networks
    beside depthwise ones), and for each network of ``corrected`` (default: every network with
    observations) device terms of its own in ``own_form`` (pulled toward its family's, fitted in
    that form too, by ``prior_weight``; None: the device terms' form) or a correction on top of
    its family's terms (:func:`_own_or_correction`). Nothing is timed.

    Own terms and corrections of networks outside this fit are dropped: they were fitted beside
    other device terms. A network with neither is priced by its family's device terms alone.
    Own terms of the networks named in ``by_parts`` are recorded as fitted on configurations
    priced by parts (:func:`price_by_parts`), and ``parts_call`` is kept in the table (default:
    the one it had).
    """
    by_name = {net.name: net for net in nets}
    obs = [replace(o, overhead_weight=overhead_weight(table, by_name[o.network].layers, o.bits)) for o in obs]
    probe = overhead.probe_ms if overhead is not None else 0.0
    cap = overhead_cap(table, probe)
    layers_of = {net.name: net.layers for net in nets}
    families = {o.network: network_family(layers_of[o.network]) for o in obs}
    pairs = sorted({p for net in nets for s in supported_pairs(table, net.layers) for p in s})

    own_sets = {fam: on for fam in (FAMILIES if by_family else ()) if set(on := fit_set(fam, families)) != set(families)}

    def device_terms(on: Sequence[str], family: str = "", in_form: str | None = form) -> tuple[DeviceFit, FamilyTerms]:
        """Terms fitted on the networks ``on``, as ``family``'s own (empty: the shared ones), with
        the cheapest configuration of every measured network they price floored."""
        priced = [by_name[n] for n in sorted(families) if (families[n] == family) or (not family and families[n] not in own_sets)]
        mine = [o for o in obs if o.network in on]
        fit = _floored(
            table,
            priced,
            lambda floors: fit_device(mine, layers_of, in_form, max_overhead_ms=cap, floors=floors),
            pairs,
            probe,
            obs,
        )
        return fit, FamilyTerms(family, *_table_terms(fit, pairs, probe))

    fit, shared = device_terms(sorted(families))
    own = [device_terms(on, fam) for fam, on in own_sets.items()]
    graph = GraphExtras(
        table.data.graph.transitions,
        shared.rules,
        (),
        shared.layer_terms,
        shared.run_overhead,
        tuple(terms for _, terms in own),
        parts_call=parts_call if parts_call is not None else table.data.graph.parts_call,
    )
    staged = table.with_graph(graph)
    names = set(corrected) if corrected is not None else {o.network for o in obs}
    family_fit = {terms.family: f for f, terms in own}
    priors = {fam: [family_fit.get(fam, fit)] for fam in set(families.values())}
    if own_form is not None and own_form != fit.form:  # the own form first, the device terms' form where it has too many unknowns
        shared_own = device_terms(sorted(families), in_form=own_form)[0]
        in_own = {fam: device_terms(on, fam, own_form)[0] for fam, on in own_sets.items()}
        priors = {fam: [in_own.get(fam, shared_own), *first] for fam, first in priors.items()}
    made = [
        _own_or_correction(
            staged,
            net,
            [o for o in obs if o.network == net.name],
            priors[families[net.name]],
            cap,
            probe,
            pairs,
            prior_weight,
            "parts" if net.name in by_parts else "measurement",
        )
        for net in nets
        if net.name in names
    ]
    corrections = tuple(m for m in made if isinstance(m, Correction))
    networks = tuple(m for m in made if isinstance(m, NetworkTerms))
    kept = {x.fingerprint for x in made}
    dropped = [c.network for c in (*table.data.graph.corrections, *table.data.graph.networks) if c.fingerprint not in kept]
    result = staged.with_graph(replace(graph, corrections=corrections, networks=networks))
    if log:
        log(
            f"device fit ({fit.form}, {fit.fitted_on} configurations of {', '.join(fit.networks)}): {_describe(fit)}; "
            + f"call overhead {1000 * fit.run_overhead_ms:.2f} µs (probe {1000 * probe:.2f} µs); "
            + "".join(
                f"{terms.family} networks' own ({f.fitted_on} configurations of {', '.join(f.networks)}): {_describe(f)}; "
                + f"call overhead {1000 * f.run_overhead_ms:.2f} µs; "
                for f, terms in own
            )
            + "corrections: "
            + (", ".join(f"{c.network} x{c.scale:.3f} {c.offset:+.4f} ms" for c in corrections) or "none")
            + (f"; own terms of {', '.join(n.network for n in networks)}" if networks else "")
            + (f"; dropped stale terms or corrections of {', '.join(dropped)}" if dropped else "")
        )
        held, low = _at_floor(result, nets, obs, probe)
        if held:
            log(
                f"the cheapest configuration of {', '.join(held)} is priced at the fit's floor, an empty model's call time: "
                "terms fitted freely priced it below (price_floor in haq/hardware/fit.py)"
            )
        if low:
            log(
                f"warning: the fit could not keep the cheapest configuration of {', '.join(low)} above an "
                "empty model's call time; measure more configurations (haq tables fit --configs N)"
            )
    return result


def _own_or_correction(
    staged: CostTable,
    net: Network,
    mine: Sequence[Observation],
    families: Sequence[DeviceFit],
    cap: float,
    probe: float,
    pairs: Sequence[BitPair],
    prior_weight: float = PRIOR_WEIGHT,
    priced_by: str = "measurement",
) -> Correction | NetworkTerms:
    """Device terms of the network's own in the form of the first of ``families`` (its family's
    terms fitted in each candidate form, :data:`~haq.hardware.graph_fit.OWN_FORM` first, pulled
    toward them) whose unknowns its distinct configurations outnumber, else its correction on top
    of its family's terms.

    Why: the correction only rescales the family's prediction, which holds where the network's
    graph costs what its family's does; where it does not (where its pools sit, the ops between
    its layers), only terms of its own follow it. On two runs of ``bench/tables.py`` (eight
    networks, 12 fit configurations and 16 checked policies each) its own terms put 75-100 % and
    81-100 % of a network's checks within ±10 %, its correction 56-100 % on both: better on 6 and
    5 networks of 8, worse on one each (latency_tables/README.md). Leave-one-out on the fit
    configurations did not predict which is better on the checks, so the rule is the count.

    Either keeps the network's cheapest configuration at or above :func:`price_floor`."""
    distinct = len({o.bits for o in mine})
    for family in families if distinct >= 3 else ():
        fit = _floored(
            staged,
            [net],
            lambda floors, family=family: fit_device(
                mine,
                {net.name: net.layers},
                family.form,
                max_overhead_ms=cap,
                prior=family,
                prior_weight=prior_weight,
                floors=floors,
            ),
            pairs,
            probe,
            mine,
        )
        if distinct > fit.identified:
            return NetworkTerms(mine[0].fingerprint, net.name, len(mine), *_table_terms(fit, pairs, probe), priced_by=priced_by)
    raw = [staged.policy_cost(net.layers, policy_of(net.layers, o.bits)) for o in mine]
    _, cheapest, least = _against_floor(staged, net, mine, probe)
    return fit_correction(raw, [o.measured_ms for o in mine], net.name, mine[0].fingerprint, cheapest=(cheapest, least))


def _at_floor(table: CostTable, nets: Sequence[Network], obs: Sequence[Observation], probe: float) -> tuple[list[str], list[str]]:
    """The measured networks ``table`` prices at their :func:`price_floor` (their cheapest
    configuration), and those it prices below it."""
    held: list[str] = []
    low: list[str] = []
    for net in nets:
        mine = [o for o in obs if o.network == net.name]
        if not mine:
            continue
        _, cost, least = _against_floor(table, net, mine, probe)
        if cost < least * (1.0 - FLOOR_SLACK):
            low.append(net.name)
        elif cost <= least * (1.0 + FLOOR_SLACK):
            held.append(net.name)
    return held, low


def _against_floor(
    table: CostTable, net: Network, mine: Sequence[Observation], probe: float
) -> tuple[tuple[BitPair, ...], float, float]:
    """The network's cheapest configuration on ``table``, its cost and the network's :func:`price_floor` (ms)."""
    bits, cost = cheapest_configuration(table, net.layers)
    return bits, cost, price_floor(probe, mine)


FLOOR_ROUNDS = 8
"""Most refits :func:`_floored` makes: each round floors the configurations that came out cheapest
(a floored fit can make another configuration the cheapest); two sufficed on the fits seen."""


def price_floor(probe: float, mine: Sequence[Observation]) -> float:
    """The least a measured network's cheapest configuration may be priced at (ms): the call time of
    a near-empty model (``probe``), or without one :data:`OVERHEAD_FLOOR` of its fastest measurement.

    Why a floor at all: a fixed per-layer term may be negative (an int8 layer costs less inside a
    network than its isolated entry), and fitted freely on configurations that all keep some layers
    in float, the terms priced digits_cnn's all-int8 configuration at -0.20 ms (the made-up timings
    of tests/test_fingerprint.py): a search would be paid for a cost no device has."""
    return max(probe, OVERHEAD_FLOOR * min(o.measured_ms for o in mine))


def cheapest_configuration(table: CostTable, layers: Sequence[LayerInfo]) -> tuple[tuple[BitPair, ...], float]:
    """The network's cheapest configuration on ``table`` over every pair it prices, boundaries
    included, and its cost (ms)."""
    allowed = [sorted(costs) for costs in table.layer_costs_in(layers)]
    bits = tuple(table.plan(layers, allowed).path())
    return bits, table.policy_cost(layers, policy_of(layers, bits))


def _floored(
    table: CostTable,
    priced: Sequence[Network],
    fit_with: Callable[[Sequence[Observation]], DeviceFit],
    pairs: Sequence[BitPair],
    probe: float,
    obs: Sequence[Observation],
) -> DeviceFit:
    """``fit_with`` refitted until the cheapest configuration of every network of ``priced`` (each
    with observations in ``obs``) is priced at least at its :func:`price_floor`, each round adding
    the configurations that broke it as floors (:func:`~haq.hardware.graph_fit.fit_device`), at most
    :data:`FLOOR_ROUNDS` times."""
    floors: list[Observation] = []
    measured = {net.name: [o for o in obs if o.network == net.name] for net in priced}
    priced = [net for net in priced if measured[net.name]]
    for _ in range(FLOOR_ROUNDS):
        fit = fit_with(floors)
        if not priced:
            return fit
        rules, terms, overhead = _table_terms(fit, pairs, probe)
        staged = table.with_graph(GraphExtras(table.data.graph.transitions, rules, (), terms, overhead))
        broken = False
        for net in priced:
            bits, cost, least = _against_floor(staged, net, measured[net.name], probe)
            if cost < least * (1.0 - FLOOR_SLACK):
                broken = True
                fp = measured[net.name][0].fingerprint
                floor = Observation(net.name, fp, layer_sum(table, net.layers, policy_of(net.layers, bits)), bits, least)
                floors.append(replace(floor, overhead_weight=overhead_weight(table, net.layers, bits)))
        if not broken:
            return fit
    return fit


def _table_terms(
    fit: DeviceFit, pairs: Sequence[BitPair], probe: float
) -> tuple[tuple[TransitionRule, ...], tuple[LayerTerm, ...], RunOverhead | None]:
    """A device fit as a table stores it: boundary rules for ``pairs``, layer terms and the call
    overhead (bounded by the measured ``probe``; none without one)."""
    ov = RunOverhead("latency", fit.run_overhead_ms, probe) if probe > 0 else None
    return tuple(fit.rules(pairs)), fit.terms(), ov


def fit_policies(table: CostTable, net: Network, n: int, seed: int) -> list[QuantPolicy]:
    """Uniform fp32, uniform int8 (where every layer runs it) and random policies, all distinct:
    ``n`` in all, fewer only where the network has fewer to draw.

    Distinct because a repeat identifies nothing new: drawn freely, 4 of MobileNetV2's 12 fit
    configurations were repeats (runs of one precision that covered every layer), which left
    fewer distinct configurations than the device terms have unknowns."""
    validate.count("configurations per network", n, 3)
    supported = supported_pairs(table, net.layers)
    names = [layer.name for layer in net.layers]
    policies = [QuantPolicy.uniform(names, 32)]
    if all((8, 8) in s for s in supported):
        policies.append(QuantPolicy.uniform(names, 8))
    seen = {bits_of(net.layers, p) for p in policies}
    for p in sample_policies(net.layers, supported, DRAWS_PER_CONFIG * n, seed):
        if len(policies) >= n:
            break
        bits = bits_of(net.layers, p)
        if bits not in seen:
            seen.add(bits)
            policies.append(p)
    return policies


def measure_all(
    table: CostTable,
    nets: Sequence[Network],
    runner: Runner,
    n: int,
    seed: int,
    known: MeasuredCache | None = None,
    log: Log | None = None,
    exported: Exported | None = None,
) -> tuple[CostTable, list[Observation], RunOverhead]:
    """The :func:`fit_policies` of every network measured end to end in one interleaved batch
    (round-robin over all configurations of all networks; those in ``known`` are reused),
    and the call time of a near-empty model (the drift sentinel at size 1) in the same rounds:
    the bound of the fitted call overhead (``probe_ms``; ``latency_ms`` is left 0 here). What it
    exports is added to ``exported``.

    Where every configuration is measured now (none reused), the networks' single-layer entries
    are timed again in the same batch and the returned table holds them (:func:`retimed_entry`):
    the fit prices the difference between whole models and their layer sums, so both must describe
    the same machine state, and this machine's speed moves over minutes. On four runs of
    ``bench/tables.py``, fitting on entries timed beside the whole models put the checks of the
    networks' own terms within ±10 % in 97 % of cases against 94 % on the build's entries (100 %
    on all eight networks on the run whose entries had moved most, 12-22 %, since the build; a
    few points worse on the two runs whose entries had not moved); latency_tables/README.md.
    Kept measurements were taken beside the entries they were fitted on, so a fit that reuses
    any keeps the entries as they are."""
    known = known if known is not None else {}
    plans = []
    todo: list[tuple[str, tuple[BitPair, ...]]] = []
    models: list[bytes] = []
    reused = False
    for net in nets:
        policies = fit_policies(table, net, n, seed)
        fp = network_fingerprint(net.layers, table.batch)
        bits = [bits_of(net.layers, p) for p in policies]
        fresh = [i for i, b in enumerate(bits) if (fp, b) not in known and (fp, b) not in todo]
        models += export_all(net, [policies[i] for i in fresh], log, table.export_weights)
        todo += [(fp, bits[i]) for i in fresh]
        reused = reused or len(fresh) < len(policies)
        if log and len(fresh) < len(policies):
            log(f"{net.name}: reused {len(policies) - len(fresh)} of {len(policies)} whole-model measurements")
        plans.append((net, fp, policies, bits))
    if exported is not None:
        exported.update(zip(todo, models))
    entries = [] if reused or not todo else _measured_entries(table, nets)
    singles = [entry_model(table, e) for e in entries]
    if log and singles:
        log(f"timing the {len(singles)} single-layer entries of {', '.join(n.name for n in nets)} again beside the whole models")
    timed = runner.measure_many([*models, *singles, sentinel_model(1)])
    known.update(dict(zip(todo, (m.latency_ms for m in timed))))
    if entries:
        again = {(e.key, e.w_bits, e.a_bits): retimed_entry(e, m) for e, m in zip(entries, timed[len(models) : -1])}
        table = table.with_entries([again.get((e.key, e.w_bits, e.a_bits), e) for e in table.entries()])
    overhead = RunOverhead("latency", 0.0, timed[-1].latency_ms)
    obs = [observe(table, net, p, known[(fp, b)]) for net, fp, policies, bits in plans for p, b in zip(policies, bits)]
    return table, obs, overhead


def _measured_entries(table: CostTable, nets: Sequence[Network]) -> list[Entry]:
    """The measured entries of every layer of ``nets`` (:func:`supported_pairs`' pairs), each once."""
    seen: dict[tuple[str, int, int], Entry] = {}
    for net in nets:
        for layer, pairs in zip(net.layers, supported_pairs(table, net.layers)):
            for w, a in pairs:
                e = table.entry(layer.signature, w, a)
                seen.setdefault((e.key, e.w_bits, e.a_bits), e)
    return list(seen.values())


def price_by_parts(
    table: CostTable,
    nets: Sequence[Network],
    runner: Runner,
    n: int,
    seed: int,
    log: Log | None = None,
    measured: Sequence[Observation] = (),
    measured_nets: Sequence[Network] = (),
    exported: Exported | None = None,
    stored: PartsCall | None = None,
) -> tuple[list[Observation], RunOverhead, PartsCall | None]:
    """The :func:`fit_policies` of every network of ``nets`` priced by parts, none timed whole:
    each is compiled here, every distinct node of it, layer kernels included, is timed alone (all
    networks' nodes in one interleaved batch, with the call-time probe), and a configuration's
    time is :func:`~haq.hardware.parts.parts_ms` of its nodes, less the call overhead of each
    isolated model but one and the cost of the output each hands back (timed in the same batch,
    :func:`~haq.hardware.parts.timed_call_cost`). Returns the observations, the probe, and the
    call costs to keep in the table (``graph.parts_call``).

    The overhead, one for every call, is fitted (:func:`~haq.hardware.parts.fit_overhead`) on
    ``measured``, the whole-model observations of ``measured_nets``, whose configurations are
    priced by parts in the same batch; without them it is the one ``stored`` in the table by such
    an earlier fit by kernels on this machine, else one timed with the two call-overhead models,
    which on two benchmark runs scored worse (latency_tables/README.md). A measured configuration
    in ``exported`` (what :func:`measure_all` exported) is not exported again."""
    exported = exported if exported is not None else {}
    nodes = NodeSet()
    plans = []
    for net in nets:
        policies = fit_policies(table, net, n, seed)
        rows = [nodes.add(b, len(net.layers), net.name) for b in export_all(net, policies, log, table.export_weights)]
        plans.append((net, policies, rows))
    by_name = {net.name: net for net in measured_nets}
    calibration = []
    for o in measured:
        net = by_name[o.network]
        policy = policy_of(net.layers, o.bits)
        onnx_bytes = exported.get((o.fingerprint, o.bits)) or export_all(net, [policy], weights=table.export_weights)[0]
        calibration.append((net, policy, nodes.add(onnx_bytes, len(net.layers), net.name), o.measured_ms))
    if log:
        log(
            f"timing {len(nodes.models)} distinct compiled nodes (layer kernels and the nodes between them) of "
            f"{len(nets) + len(by_name)} network(s)"
        )
    kept = stored if stored is not None and stored.layers == KERNELS else None
    timing = kept is None or bool(calibration)
    timed = runner.measure_many([*nodes.models, *(call_cost_models() if timing else ()), sentinel_model(1)])
    node_ms = [m.latency_ms for m in timed[: len(nodes.models)]]
    if timing:
        timed_call, per_byte = timed_call_cost([m.latency_ms for m in timed[len(nodes.models) : -1]])
    else:  # the call cost a fit by kernels kept in the table, nothing here to fit it on
        timed_call, per_byte = stored.latency_ms, stored.per_byte_ms
    if calibration:
        pooled, _ = fit_overhead([(nodes.parts(node_ms, row), ms) for _, _, row, ms in calibration], per_byte)
        kept = PartsCall(pooled, tuple(sorted(by_name)), len(calibration), layers=KERNELS, per_byte_ms=per_byte)
        how = f"fitted on {len(calibration)} whole-model measurements of {', '.join(kept.fitted_on)}"
    elif kept is not None:
        how = f"kept in the table, fitted on {kept.measurements} whole-model measurements of {', '.join(kept.fitted_on)}"
    elif stored is not None:
        how = "timed (the one kept in the table was fitted on layers priced by their entries, an older fit by parts)"
    else:
        how = "timed (no network measured whole beside it, none kept in the table)"
    call = uniform(kept.latency_ms if kept is not None else timed_call)
    priced = [(net, policy, nodes.parts(node_ms, row)) for net, policies, rows in plans for policy, row in zip(policies, rows)]
    call, per_byte, scaled = bounded_overhead([p for *_, p in priced], call, per_byte)
    if scaled:
        how += ", scaled down so that every configuration keeps a positive price"
    obs = [observe(table, net, policy, parts_ms(p, call, per_byte)) for net, policy, p in priced]
    if log:
        probe = f"probe {1000 * timed[-1].latency_ms:.2f} µs"
        log(
            f"call overhead of an isolated model: {1000 * call[0]:.2f} µs for every call and "
            f"{1024e6 * per_byte:.1f} ns per KiB of output (timed); {how} ({probe})"
        )
    return obs, RunOverhead("latency", 0.0, timed[-1].latency_ms), kept


def blend_with_terms(priced: Sequence[Observation], reference: CostTable, nets: Sequence[Network]) -> list[Observation]:
    """Configurations priced by parts, each moved to the geometric mean of that price and what
    ``reference`` (device terms fitted on the networks measured whole, none of ``nets``) predicts.

    Why: the two prices of a network never timed whole err for different reasons (the device
    terms where its graph differs from the fitted networks', the parts where a node costs
    otherwise timed alone than in the graph), so their errors partly cancel. On four runs of
    ``bench/tables.py`` (8 networks each, every network left out in turn) the network's checks
    were within ±10 % of their measurements in 62 % of cases against 51 % (device terms alone)
    and 56 % (parts alone), and on three runs after the choice 73 % against 63 and 68 %, 66 %
    against 56 and 20 %, 73 % against 71 and 24 %. With the call overhead fitted per kind
    (:func:`~haq.hardware.parts.fit_overhead`) the parts got better than the terms they were
    blended with: on three quiet runs (retest ceiling 100 %) the blend put 16 of 24 network-runs
    at >= 80 % within ±10 % against 19 of 24 without it (mean 81 against 87 %), so it is an
    option (``haq tables fit --blend-with-terms``), not the default; latency_tables/README.md. A
    configuration the reference does not price above zero keeps its parts price."""
    by_name = {net.name: net for net in nets}
    out = []
    for o in priced:
        layers = by_name[o.network].layers
        terms_ms = reference.policy_cost(layers, policy_of(layers, o.bits))
        out.append(replace(o, measured_ms=math.sqrt(o.measured_ms * terms_ms)) if terms_ms > 0.0 else o)
    return out


def observe(table: CostTable, net: Network, policy: QuantPolicy, measured_ms: float) -> Observation:
    """One whole-model measurement of ``net`` under ``policy``, as the fit takes it (its layer
    sum on ``table``)."""
    fp = network_fingerprint(net.layers, table.batch)
    return Observation(net.name, fp, layer_sum(table, net.layers, policy), bits_of(net.layers, policy), measured_ms)


OVERHEAD_FLOOR = 0.05
"""Share of its isolated time an entry keeps at least once the call overhead is taken out."""


def overhead_cap(table: CostTable, probe_ms: float) -> float:
    """The most the fitted call overhead may be: the probe's call time, and less than every
    isolated single-layer time (each of those paid it once), so every entry stays positive."""
    isolated = min(e.latency_ms / kernel_share(e) for e in table.entries())
    return min(probe_ms, (1.0 - OVERHEAD_FLOOR) * isolated)


def overhead_weight(table: CostTable, layers: Sequence[LayerInfo], bits: Sequence[BitPair]) -> float:
    """Call overheads a configuration's layer sum holds beyond the network's one: its entries'
    kernel shares summed, minus 1 (:class:`~haq.tables.schema.RunOverhead`)."""
    return sum(kernel_share(table.entry(layer.signature, *b)) for layer, b in zip(layers, bits)) - 1.0


def layer_sum(table: CostTable, layers: Sequence[LayerInfo], policy: QuantPolicy) -> float:
    """The sum of the table's per-layer costs, without boundaries or correction."""
    return float(sum(table.layer_cost(layer.signature, policy[layer.name].w_bits, policy[layer.name].a_bits) for layer in layers))


def _describe(fit: DeviceFit) -> str:
    keyed = [*fit.per_direction.items(), *((f"{d} into {op}", t) for (d, op), t in fit.op_boundaries.items())]
    bounds = [f"{d}: {1000 * f:.1f} µs + {1e6 * p:.2f} ns/elem" for d, (f, p) in keyed]
    if fit.pool_per_elem > 0:
        bounds.append(f"float->int8 behind a max-pool: + {1e6 * fit.pool_per_elem:.2f} ns per element entering the pool")
    terms = [
        f"{t.domain}{' ' + t.op if t.op else ''} layer: {1000 * t.fixed:+.1f} µs + {1e6 * t.per_in_elem:.2f} ns/in "
        f"+ {1e6 * t.per_out_elem:.2f} ns/out elem"
        for t in fit.terms()
    ]
    return "; ".join(bounds + terms)
