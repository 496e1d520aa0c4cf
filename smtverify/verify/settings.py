"""The decision procedure's knobs, in one section per phase.

Each section is a frozen dataclass, so no call can change a caller's settings: derive a variant
with `dataclasses.replace` (or `Settings.with_timeout`). The defaults were measured on the shared
suites; docs/tuning.md keeps the measurements behind them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

from ..refine import RefineSettings
from ..slopes import SlopeSettings


@dataclass(frozen=True)
class FalsifySettings:
    """Looking for a counterexample before proving anything (cheap, and most sat instances end here)."""

    random_points: int = 4096       # uniform points after the box's centre and corners (0: none)
    restarts: int = 256             # PGD starts per unsafe constraint (0: no PGD)
    steps: int = 60                 # PGD steps per start
    share: float = 0.1              # at most about this share of the timeout
    # A low-dimensional box still open after the first round of input splitting gets a deeper
    # search: many uniform points, then local descent from those nearest to unsafe.
    deep_random_points: int = 1_000_000
    deep_share: float = 0.05
    deep_seeds: int = 512
    # Input splitting: every this many rounds, PGD inside the worst open boxes.
    local_attack_every: int = 10
    local_attack_boxes: int = 8


@dataclass(frozen=True)
class BoundSettings:
    """Sound bounds on the whole input box (the root of either kind of splitting)."""

    root_slope_steps: int = 5       # an open root: its hidden neurons' ReLU slopes optimised (output rows 5x as long)
    lp_tighten_share: float = 0.3   # at most this share of the time tightens neuron bounds by LP
    # The slope ascent's step sizes. (Its `iterations` is the optimiser's default for callers that
    # give none; the engine always gives one: root_slope_steps and the sections' slope_steps.)
    slopes: SlopeSettings = field(default_factory=SlopeSettings)


@dataclass(frozen=True)
class InputSplitSettings:
    """Branch and bound on the input box, for inputs with few free dimensions (ACAS Xu: 5)."""

    max_dims: int = 12              # only up to this many free input dimensions
    batch_halves: int = 640         # halves bounded per bounding call
    candidates: int = 3             # dimensions whose halves are bounded to pick the split (0: all)
    guess_gain: float = 0.1         # a split that gained less than this share of its box's bound: all candidates next
    slope_steps: int = 5            # open boxes get their output rows' ReLU slopes optimised (0: never)
    leaf_relus: int = 0             # the LP and Z3 decide a box once this few of its ReLUs are unstable
    lp_after: float = 0.05          # still open after this share of the time: LP-tighten the root and go on


@dataclass(frozen=True)
class ReluSplitSettings:
    """Branch and bound on ReLU phases, for high-dimensional inputs."""

    # True: domains bounded in batches with optimised slopes and multipliers (where the slope
    # optimiser supports the chain); False: one node at a time with LP bounds, a second complete
    # method to check the first against.
    batched: bool = True
    batch_domains: int = 16         # domains bounded per call
    slope_steps: int = 20           # the slope and multiplier ascent's steps per batch
    branch_candidates: int = 3      # ReLUs whose children are bounded to choose the split (1: costliest alone)
    corner_descents: int = 4        # local descent from the minimising corners of this many worst open domains
    corner_descent_share: float = 0.15   # ... within at most this share of the splitting's time
    # Domains with at most this many decisions have the neuron bounds after their newest decision
    # bounded again, by this many slope steps (0: back-substitution); deeper ones inherit them.
    refresh_depth: int = 6
    refresh_steps: int = 5
    # Still open after this share of the time: the root's neuron bounds are refined by branch and
    # bound (Settings.refine) within at most refine_share of the time, and splitting starts again.
    refine_after: float = 0.05
    refine_share: float = 0.45


@dataclass(frozen=True)
class LeafSettings:
    """Exact decisions at the leaves of branch and bound."""

    relus: int = 10                 # ReLU splitting: Z3 decides a domain with at most this many unstable ReLUs
    timeout: float = 20.0           # seconds per Z3 leaf
    first_timeout: float = 1.0      # ReLU splitting: a domain's first Z3 call; its children's twice their parent's
    max_leaves: int = 200_000       # closed leaves after which a search gives up (UNKNOWN)


@dataclass(frozen=True)
class Settings:
    """Every knob of the decision procedure: the budget, the seed, and one section per phase."""

    timeout: float = 60.0
    seed: int = 0
    falsify: FalsifySettings = field(default_factory=FalsifySettings)
    bounds: BoundSettings = field(default_factory=BoundSettings)
    input_split: InputSplitSettings = field(default_factory=InputSplitSettings)
    relu_split: ReluSplitSettings = field(default_factory=ReluSplitSettings)
    leaves: LeafSettings = field(default_factory=LeafSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)

    def with_timeout(self, seconds: float) -> "Settings":
        """The same settings with another budget (a copy: the caller's stay as they were)."""
        return replace(self, timeout=seconds)

    def replaced(self, changes: dict[str, Any]) -> "Settings":
        """A copy with some knobs changed, each named "section.field" (or "timeout", "seed"):
        `Settings().replaced({"falsify.restarts": 0, "leaves.relus": 4})`."""
        top: dict[str, Any] = {}
        by_section: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            section, _, knob = name.rpartition(".")
            if not section:
                top[knob] = value
            else:
                by_section.setdefault(section, {})[knob] = value
        for section, knobs in by_section.items():
            if section not in {f.name for f in fields(self)} or not is_dataclass(getattr(self, section)):
                raise ValueError(f"no settings section '{section}'")
            current = getattr(self, section)
            unknown = set(knobs) - {f.name for f in fields(current)}
            if unknown:
                raise ValueError(f"no setting '{section}.{sorted(unknown)[0]}'")
            top[section] = replace(current, **knobs)
        unknown = set(top) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"no setting '{sorted(unknown)[0]}'")
        return replace(self, **top)

