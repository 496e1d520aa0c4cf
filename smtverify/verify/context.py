"""What the engines of one verifier share: the chain, its bound propagators and solvers (built once
per network), and per case the case itself and the statistics it adds to."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bounds import BoundPropagator
from ..chain import Chain
from ..leaves import LeafSolver
from ..network import Network
from ..slopes import SlopeOptimiser, supports as slopes_supported
from ..vnnlib import Case
from .outcome import Statistics
from .progress import ProgressReporter
from .settings import Settings


@dataclass
class Tools:
    """The network's chain and everything built on it, once per verifier."""

    network: Network
    chain: Chain
    bounds: BoundPropagator               # back-substitution, the bounds every proof rests on
    interval_bounds: BoundPropagator      # interval arithmetic within inherited bounds: deep ReLU-splitting domains
    refresh_bounds: BoundPropagator       # ... and back-substitution again near the root
    slope_optimiser: SlopeOptimiser | None   # None where the chain has steps it cannot optimise
    leaf_solver: LeafSolver
    rng: np.random.Generator
    # Z3 decides input splitting's boxes only where its encoding is exact: Sigmoid and Tanh are
    # over-approximated there, so a leaf could prove a box but never find a counterexample, and
    # splitting proves it sooner (a 3-input Tanh net: 27 s with Z3 on its 441 open boxes, 0.8 s without).
    exact_leaves: bool
    point_seconds: float | None = None    # one point through the chain, measured on first use

    @classmethod
    def build(cls, network: Network, chain: Chain, settings: Settings) -> "Tools":
        bounds = BoundPropagator(chain)
        return cls(network, chain, bounds,
                   BoundPropagator(chain, symbolic=False, backsub=False, flat_too=False),
                   BoundPropagator(chain, symbolic=False, backsub=True, flat_too=False),
                   SlopeOptimiser(bounds, settings.bounds.slopes) if slopes_supported(chain) else None,
                   LeafSolver(chain), np.random.default_rng(settings.seed),
                   all(step.exact_encoding for step in chain.steps))


@dataclass
class Job:
    """One case being decided: the shared tools, the case, the settings of this call, and the
    statistics it adds to."""

    tools: Tools
    case: Case
    settings: Settings
    stats: Statistics
    progress: ProgressReporter | None = None

    def report(self, phase: str, open: int | None = None) -> None:
        """Tell the progress listener, if any, where the decision is (cheap: rate-limited there)."""
        if self.progress is not None:
            self.progress.update(phase, self.stats, open)

    @property
    def chain(self) -> Chain:
        return self.tools.chain
