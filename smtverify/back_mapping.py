"""DLV's questions about a hidden layer over eta_0, answered on the prefix program (prefix_program.py)
by HiGHS, every "no" certified (mixed_program.py):

- eta_k: each chosen dimension minimised and maximised over the LP relaxation; a certified bound
  replaces the propagated one only where tighter, so eta_k always contains the image of eta_0.
- Back-mapping a hidden point t (values on the chosen dimensions): is there an input of eta_0 whose
  values there equal t exactly? Spurious only with a proof: t outside a constant dimension's sound
  bounds ("bounds"), the LP relaxation's certified least violation sum |y_p - t_p| above 0 ("lp"),
  or branch and bound on the undecided phases the target depends on (its cone), every leaf so
  certified ("branch and bound"). These run on the cone's rows alone: a relaxation of the whole
  program, so their proofs stand, and far smaller where the layer reads few neurons (a verivital
  net's max-pool: 156 of 4,945 columns, and the candidates that 64 nodes over every 0/1 column
  left unknown are proven so, one in 1.5 s). A preimage is searched for on activation patterns: from the image
  and from the LP optimum's input, the network's own phases there are fixed (the program then is
  exact and linear), the LP solved again, and so on for a few rounds; HiGHS's point counts only once the network run in float64 at that input meets t
  to within PREIMAGE_TOLERANCE. Its classification is then the confirming executor's business.
  Neither: unknown.
- Condition 2 (refinement) on the chosen dimensions: two copies of the program, their inputs one
  input step apart (x' = x + sp_q e_q, q moved); "holds" when branch and bound proves every chosen
  dimension moves by at most its span plus the tolerance, in either direction, for every q; "fails"
  when a pair is found whose float64 values move further (by more than a rounding margin); else
  "unknown". (The two copies' phases are relaxed independently, so on a conv layer the LP is
  loose and "holds" is rarely proven in seconds: "unknown" then says so.)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import sparse

from .budget import Deadline
from .mixed_program import MixedProgram, lp_minimum, prove_above
from .prefix_program import PrefixProgram

PREIMAGE_TOLERANCE = 1e-6      # relative: a float64 run this close to the target is a preimage
PATTERN_ROUNDS = 8             # activation patterns tried per candidate
MARGIN = 1e-9                  # relative: what float64 rounding could account for in a refinement pair
SAMPLES = 64                   # random pairs per input dimension looked at for a refinement witness


@dataclass
class Preimage:
    """The answer for one hidden point: found (x, an input of eta_0 meeting it), spurious (with
    the proof's kind and, for "lp", its certified least violation) or unknown."""

    status: str                  # found | spurious | unknown
    x: np.ndarray | None = None
    proof: str = ""              # bounds | lp | branch and bound
    bound: float = 0.0           # "lp": the certified least violation (> 0)


class BackMapper:
    """One eta_0 and hidden layer: its prefix program and the questions above."""

    def __init__(self, prefix: PrefixProgram, nodes: int = 512) -> None:
        self.prefix, self.nodes = prefix, nodes

    def _values(self, x: np.ndarray) -> np.ndarray:
        return self.prefix.chain.forward(np.asarray(x, np.float64).reshape(1, -1))[0]

    def region(self, dims: np.ndarray, deadline: Deadline) -> tuple[np.ndarray, np.ndarray, int]:
        """eta_k on the chosen dimensions: the propagated bounds, each replaced by its certified LP
        bound where tighter (until the deadline); and how many were."""
        p = self.prefix
        lower, upper, tightened = p.lower[dims].copy(), p.upper[dims].copy(), 0
        for i, column in enumerate(p.columns[dims]):
            for sign in (1.0, -1.0):
                if column < 0 or deadline.passed():
                    continue
                c = np.zeros(p.program.n_cols)
                c[column] = sign
                bound = sign * lp_minimum(p.program, c, deadline.left()).bound
                if sign > 0 and bound > lower[i]:
                    lower[i], tightened = bound, tightened + 1
                elif sign < 0 and bound < upper[i]:
                    upper[i], tightened = bound, tightened + 1
        return lower, upper, tightened

    def preimage(self, dims: np.ndarray, target: np.ndarray, origin: np.ndarray, deadline: Deadline) -> Preimage:
        """An input of eta_0 whose chosen hidden values equal `target`, or a proof there is none;
        activation patterns are followed from `origin` (the image, inside eta_0) and from the LP
        relaxation's optimum."""
        p = self.prefix
        columns = p.columns[dims]
        constant = columns < 0
        if np.any((target[constant] < p.lower[dims][constant]) | (target[constant] > p.upper[dims][constant])):
            return Preimage("spurious", proof="bounds")
        whole, cost = self._violation(columns[~constant], target[~constant])
        keep = np.ones(whole.n_cols, bool)             # the target's cone and the slack columns
        keep[:p.program.n_cols] = p.cone(columns[~constant])
        program, cost = whole.restricted(keep), cost[keep]

        def full(v: np.ndarray) -> np.ndarray:
            out = np.zeros(whole.n_cols)
            out[keep] = v
            return p.input_of(out)

        answer = lp_minimum(program, cost, deadline.left())
        if answer.bound > 0:
            return Preimage("spurious", proof="lp", bound=answer.bound)
        for start in (origin, None if answer.point is None else full(answer.point)):
            x = self._follow_patterns(program, cost, keep, full, start, dims, target, deadline)
            if x is not None:
                return Preimage("found", x)
        status, v = prove_above(program, cost, 0.0, time.perf_counter() + deadline.left(), self.nodes)
        if status == "proved":
            return Preimage("spurious", proof="branch and bound")
        if status == "reached" and self._meets(full(v), dims, target):
            return Preimage("found", full(v))
        return Preimage("unknown")

    def _follow_patterns(self, program: MixedProgram, cost: np.ndarray, keep: np.ndarray,
                         full: Callable[[np.ndarray], np.ndarray], x: np.ndarray | None, dims: np.ndarray,
                         target: np.ndarray, deadline: Deadline) -> np.ndarray | None:
        """From input x: fix the network's phases at x, take the LP's least-violation point, repeat
        (PATTERN_ROUNDS times); the first input that meets the target, or None. (`program` holds
        the columns of `keep`; `full` maps its solutions to inputs.)"""
        p = self.prefix
        for _ in range(PATTERN_ROUNDS):
            if x is None or deadline.passed():
                return None
            if self._meets(x, dims, target):
                return x
            phases = np.zeros(len(keep))
            phases[:p.program.n_cols] = p.phases_at(x)
            phases = phases[keep]
            fixed = MixedProgram(program.A, program.row_lower, program.row_upper,
                                 np.where(program.integral, phases, program.col_lower),
                                 np.where(program.integral, phases, program.col_upper), program.integral)
            v = lp_minimum(fixed, cost, deadline.left()).point
            x = None if v is None else full(v)
        return x if x is not None and self._meets(x, dims, target) else None

    def _meets(self, x: np.ndarray, dims: np.ndarray, target: np.ndarray) -> bool:
        return bool(np.all(np.abs(self._values(x)[dims] - target) <= PREIMAGE_TOLERANCE * (1 + np.abs(target))))

    def _violation(self, columns: np.ndarray, target: np.ndarray) -> tuple[MixedProgram, np.ndarray]:
        """The program with y_p - s+_p + s-_p = t_p per dimension, and the cost sum(s+ + s-)."""
        p = self.prefix.program
        k, n = len(columns), p.n_cols
        room = np.maximum(np.abs(p.col_lower[columns] - target), np.abs(p.col_upper[columns] - target))
        program = p.with_columns(np.zeros(2 * k), np.concatenate([room, room]))
        rows = np.tile(np.arange(k), 3)
        cols = np.concatenate([columns, n + np.arange(k), n + k + np.arange(k)])
        values = np.concatenate([np.ones(k), -np.ones(k), np.ones(k)])
        program = program.with_rows(sparse.csr_matrix((values, (rows, cols)), shape=(k, program.n_cols)),
                                    target, target)
        cost = np.concatenate([np.zeros(n), np.ones(2 * k)])
        return program, cost

    def refinement(self, input_dims: np.ndarray, input_span: np.ndarray, dims: np.ndarray, span: np.ndarray,
                   lower: np.ndarray, upper: np.ndarray, tolerance: float, deadline: Deadline) -> str:
        """Condition 2 on the chosen dimensions (eta_k = [lower, upper] on them): holds | fails | unknown.
        Witnesses are looked for first among SAMPLES random pairs per input dimension (cheap, numpy),
        then every question's root LP is tried before any is branched on, each on the pair program
        restricted to its dimension's cone (fewer rows: a relaxation, so a proof on it stands)."""
        p = self.prefix
        limits = span + tolerance
        open_ = [i for i in range(len(dims)) if upper[i] - lower[i] > limits[i]]   # else it cannot move further
        steps = [(int(q), float(sp)) for q, sp in zip(np.asarray(input_dims), np.broadcast_to(input_span, (len(input_dims),)))
                 if p.box_upper[q] - p.box_lower[q] >= sp]      # else no two points of eta_0 a step apart along q
        if not open_ or not steps:
            return "holds"
        if self._sampled_witness(steps, dims[open_], limits[open_], deadline=deadline):
            return "fails"
        if any(p.columns[dims[i]] < 0 for i in open_):
            return "unknown"
        pending = [(q, sp, i, sign) for q, sp in steps for i in open_ for sign in (1.0, -1.0)]
        pairs: dict[tuple[int, int], tuple[MixedProgram, np.ndarray]] = {}
        n = p.program.n_cols
        for nodes in (1, self.nodes):                  # every root first, then branch and bound
            still = []
            for q, sp, i, sign in pending:
                if deadline.passed():
                    return "unknown"
                if (q, i) not in pairs:                # the pair on the cone of dimension i alone
                    cone = p.cone(p.columns[dims[i:i + 1]])
                    keep = np.concatenate([cone, cone])
                    pairs[q, i] = self._pair(q, sp).restricted(keep), keep
                pair, keep = pairs[q, i]
                c = np.zeros(2 * n)
                c[p.columns[dims[i]]], c[n + p.columns[dims[i]]] = sign, -sign     # sign (y - y')
                status, v = prove_above(pair, c[keep], -limits[i], time.perf_counter() + deadline.left(), nodes)
                if status == "reached":
                    point = np.zeros(2 * n)
                    point[keep] = v
                    if self._sampled_witness([(q, sp)], dims[i:i + 1], limits[i:i + 1], p.input_of(point[:n])[None]):
                        return "fails"
                if status != "proved":
                    still.append((q, sp, i, sign))
            pending = still
            if not pending:
                return "holds"
        return "unknown"

    def _pair(self, q: int, sp: float) -> MixedProgram:
        """Two copies of the program, the second's inputs the first's moved by sp along q."""
        p = self.prefix
        n, k = p.program.n_cols, len(p.inputs)
        shift = np.where(p.inputs == q, sp, 0.0)
        coupling = sparse.csr_matrix((np.concatenate([np.ones(k), -np.ones(k)]),
                                      (np.tile(np.arange(k), 2), np.concatenate([n + p.input_columns,
                                                                                 p.input_columns]))), shape=(k, 2 * n))
        return p.program.twice().with_rows(coupling, shift, shift)

    def _sampled_witness(self, steps: list[tuple[int, float]], dims: np.ndarray, limits: np.ndarray,
                         starts: np.ndarray | None = None, deadline: Deadline = Deadline()) -> bool:
        """Whether a pair x, x + sp e_q of eta_0 (from `starts`, else SAMPLES random ones per step,
        seeded; until the deadline) moves a chosen dimension, run in float64, by more than its limit plus a rounding margin."""
        p = self.prefix
        rng = np.random.default_rng(0)
        for q, sp in steps:
            if deadline.passed():
                break
            if starts is None:
                x = np.broadcast_to(p.box_lower, (SAMPLES, len(p.box_lower))).copy()
                x[:, p.inputs] = rng.uniform(p.box_lower[p.inputs], p.box_upper[p.inputs], (SAMPLES, len(p.inputs)))
                x[:, q] = rng.uniform(p.box_lower[q], p.box_upper[q] - sp, SAMPLES)
            else:
                x = starts
            moved = x.copy()
            moved[:, q] = x[:, q] + sp
            inside = (moved[:, q] <= p.box_upper[q]) & (x[:, q] >= p.box_lower[q])
            a, b = (p.chain.forward(v)[:, dims] for v in (x, moved))
            excess = np.abs(b - a) - limits - MARGIN * (1 + np.abs(a) + np.abs(b))
            if np.any(inside & np.any(excess > 0, axis=1)):
                return True
        return False
