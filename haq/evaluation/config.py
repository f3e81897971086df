"""How a policy is scored: the evaluator's settings (validated on construction)."""

from __future__ import annotations

from dataclasses import dataclass, field

from haq.core.config import absent_means
from haq.core.errors import ConfigError
from haq.core.validate import choice, count, finite, positive

EVALUATORS = ("cheap", "screen", "full", "multi")
SINGLE_FIDELITY = ("cheap", "screen", "full")
"""The evaluators one process runs; ``multi`` screens with one of the first two and judges with ``full``."""
SCREENS = ("cheap", "screen")
"""What a ``multi`` search may screen with."""
SEEDED = ("screen", "full")
"""The evaluators whose scores depend on the workload's seed (attack starts; the full one's DQ
fine-tune too): ``cheap`` only calibrates, so another seed gives the same score."""


FINETUNE_LRS = (1e-3, 3e-4, 1e-4)
"""The DQ fine-tune rates a workload's rate is chosen among by default (``EvalConfig.finetune_lrs``)."""


@dataclass(frozen=True)
class EvalConfig:
    """How a policy is scored at the end of an episode.

    kind: ``cheap`` (calibrated post-training quantization, clean accuracy only), ``screen``
        (cheap, plus accuracy on PGD examples crafted once on the float model: a robust term for
        one more forward pass over ``robust_samples`` images), ``full`` (calibrate, DQ fine-tune, clean + worst-case robust
        accuracy) or ``multi`` (every policy screened first; the full evaluation only for those
        that can still beat the best full reward: :mod:`haq.problem.fidelity`).
    val_samples: size of the fixed held-out subset (first samples of the val split).
    calib_batches: calibration batches of ``batch_size`` training images.
    batch_size: calibration / fine-tuning batch size.
    finetune_epochs: DQ fine-tuning epochs (full evaluator).
    finetune_batches: cap on fine-tuning batches per epoch (keeps an episode short).
    finetune_lr: DQ fine-tuning learning rate.
    finetune_lrs: candidate learning rates for the DQ fine-tune, one chosen per workload before
        the search (:mod:`haq.problem.finetune_lr`: the one whose fine-tune recovers the most
        reward on probe policies) and written into ``finetune_lr``; empty: ``finetune_lr`` as
        given. Why: at 1e-3 the digits MLP's fine-tune lowered the reward it should recover and
        drew most of the full reward's noise (a policy's reward std over evaluator seeds, mean of
        8 policies: 0.50; at 3e-4 0.17, at 1e-4 0.12), while the digits CNN's recovered more at
        1e-3 than at either (docs/measurements.md, the full evaluator's DQ fine-tune rate). The
        default since 2026-12-06, by a rule written before it was measured: what a user deploys
        (``haq evaluate`` of haq's pick, at the run's rate; ``bench/deployed.py``) from digits
        MLP searches at the chosen 1e-4 against 1e-3, 10 unseen seeds each: median +1.579
        against +1.316 (rl), +1.576 against +1.275 (multi-fidelity); the CNN keeps 1e-3. A run
        stored before the field existed fine-tuned at ``finetune_lr`` and resumes so (empty).
    dq_beta: weight of the orthogonality penalty during fine-tuning.
    attack_eps: L-inf radius of the robustness attacks (full evaluator).
    attack_steps: PGD iterations.
    attacks: attack names for the worst case (``haq.robust.ATTACKS``); transfer attacks are
        crafted on the float model, which gradient masking in low-bit layers cannot fool.
    robust_samples: how many of the val subset are attacked (attacks are the expensive part).
    hardware_feedback: cost the latency by measuring the policy instead of reading the table.
    screen_kind: ``multi``: the evaluator that screens, ``screen`` (default) or ``cheap`` (clean
        accuracy only, the screen before it; measured against each other in
        :class:`~haq.evaluation.evaluators.ScreenEvaluator`).
    screen_calibration: ``multi``: policies scored at both fidelities before any is screened out
        (they calibrate the cheap → full reward prediction, and the agent's first updates see
        only full rewards). 20, not 10: with 10, 2 of 10 digits-CNN searches (100 evaluations)
        never left the region the unfine-tuned screen favours (final test reward -0.46 / -0.46);
        with 20 (and the allowance below) none did, and the median final test reward went
        +1.085 -> +1.193 (CNN) and +1.051 -> +1.121 (MLP; full-only searches +1.114 / +1.196 on
        the same day), every run with 33 full evaluations (``bench/search_quality.py --methods
        rl-multi``, seeds 0-9; over seeds 0-19: +1.111 / +1.126 against full-only +1.102 / +1.138;
        over seeds 20-39: +1.068 / +1.022 against +1.182 / +1.178, behind on both).
    screen_patience: ``multi``: end the calibration early, once at least half of
        ``screen_calibration`` policies are calibrated and the best full reward has not improved
        over the last ``screen_patience`` of them (0: calibrate them all). Why: both digits
        searches find the region that matters within their first few policies, and the
        calibrating policies after that are full evaluations the screen cannot spend there. With
        5 the calibration ended after a median of 10 policies; over seeds 20-59 (100 evaluations,
        full evaluator as judge) the median final test reward went +1.026 -> +1.129 on the MLP
        (95 % interval of the gap -0.047..+0.206, 25 seeds better, 15 worse) and +1.114 -> +1.123
        on the CNN (-0.071..+0.070, 20 / 18); decided before seeds 40-59 ran: the default only if
        both models gained on them too, and the CNN did not (-0.033), so it is off. Full-only
        searches stay ahead over seeds 20-59 (+1.178 / +1.168), by 0.050 / 0.045 with patience
        and 0.152 / 0.054 without (``bench/search_quality.py --full --models digits_mlp
        --evaluations 100 --seeds 20 ... 59 --methods rl-multi rl-multi-patience``). With the
        portfolio agent and 300 evaluations, decided the same way on seeds 40-49 of both models:
        paired median -0.073 (7 better, 12 worse; MLP -0.184), so still off.
    screen_z: ``multi``: a policy gets the full evaluation when its predicted full reward plus
        ``screen_z`` residual standard deviations reaches the best full reward so far.
    screen_min_fraction: ``multi``: the least fraction of policies evaluated in full.
    screen_max_fraction: ``multi``: the most distinct policies a search evaluates in full, as a
        fraction of its episodes (its final pick's promotion tops up to its own fraction, a
        third by default, and never beyond what the search already spent). Without it, 3 of 10
        digits-CNN searches of 100 episodes passed 50 full evaluations (54, 67, 50).
    """

    kind: str = "cheap"
    val_samples: int = 300
    calib_batches: int = 2
    batch_size: int = 128
    finetune_epochs: int = 1
    finetune_batches: int = 8
    finetune_lr: float = 1e-3
    finetune_lrs: tuple[float, ...] = field(default=FINETUNE_LRS, metadata=absent_means(()))
    dq_beta: float = 3e-3
    attack_eps: float = 0.1
    attack_steps: int = 10
    attacks: tuple[str, ...] = ("fgsm", "pgd", "transfer_pgd")
    robust_samples: int = 100
    hardware_feedback: bool = False
    screen_kind: str = "screen"
    screen_calibration: int = 20
    screen_patience: int = 0
    screen_z: float = 1.0
    screen_min_fraction: float = 0.15
    screen_max_fraction: float = 1 / 3

    @property
    def fine_tunes(self) -> bool:
        """Whether the evaluator that judges (the full one, also of a ``multi`` search) DQ fine-tunes."""
        return self.kind in ("full", "multi") and self.finetune_epochs > 0

    def __post_init__(self) -> None:
        choice("evaluator", self.kind, EVALUATORS)
        for name in ("val_samples", "calib_batches", "batch_size", "finetune_batches", "attack_steps", "robust_samples"):
            count(name, getattr(self, name))
        count("finetune_epochs", self.finetune_epochs, 0)
        positive("finetune_lr", self.finetune_lr)
        object.__setattr__(self, "finetune_lrs", tuple(self.finetune_lrs))
        for lr in self.finetune_lrs:
            positive("each of finetune_lrs", lr)
        if len(set(self.finetune_lrs)) != len(self.finetune_lrs):
            raise ConfigError(f"finetune_lrs must not repeat a rate, got {list(self.finetune_lrs)}")
        finite("dq_beta", self.dq_beta, 0.0)
        positive("attack_eps", self.attack_eps)
        choice("screen_kind", self.screen_kind, SCREENS)
        count("screen_calibration", self.screen_calibration, 2)
        count("screen_patience", self.screen_patience, 0)
        finite("screen_z", self.screen_z, 0.0)
        finite("screen_min_fraction", self.screen_min_fraction, 0.0, 1.0)
        finite("screen_max_fraction", self.screen_max_fraction, 0.0, 1.0)
        if self.screen_max_fraction < self.screen_min_fraction:
            raise ConfigError(
                f"screen_max_fraction ({self.screen_max_fraction}) must be >= screen_min_fraction ({self.screen_min_fraction})"
            )
        object.__setattr__(self, "attacks", tuple(self.attacks))
        if not self.attacks or not all(isinstance(a, str) for a in self.attacks):
            raise ConfigError(f"attacks must be a non-empty list of attack names, got {self.attacks!r}")
