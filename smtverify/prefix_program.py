"""The layers before a hidden layer as a mixed-integer program over the manipulated inputs only.

A DLV input region eta_0 moves a few input dimensions and fixes the rest at the image, so most
neurons of a conv net do not depend on the moved ones at all: they are constants. And of those
that do, most have a phase the sound bounds over eta_0 (bounds.BoundPropagator) already decide. On
the bundled MNIST CNN with 8 moved pixels of examples/digit.png (span 0.25, m = 2), 7,000+ neurons
before relu3 come down to about 1,600 columns, 286 of them 0/1 (53 unstable ReLUs, the rest max-pool
choices). So the program has a column only for each neuron that depends on
a moved input, a 0/1 column only where a phase (a ReLU's, or which input wins a max-pool window)
is undecided, and:

- affine step: z_j - sum over dependent inputs of W_ji v_i in [r_lo, r_hi], the range of the
  constant part b_j + sum over constant inputs of W_ji c_i, taken over the constants' sound bounds
  and widened by its rounding (gamma_n) and the step's own rel_error: a range row, exact in the
  sense that it holds for the network as stored;
- kink y = max(z, a z): a decided phase is y = z or y = a z (a ReLU that is always off makes a
  constant 0); an undecided one is the exact big-M form with one 0/1 column d (1: active),
  y >= z, y >= a z, y - z <= (1 - a)(-l)(1 - d), y - a z <= (1 - a) u d, M's rounded up;
- max-pool: y >= each dependent input; y equals the only input that can win, else one 0/1 column
  per input that can win (upper bound at least the window's largest lower bound), summing to 1,
  and y <= v_i + (U - l_i)(1 - d_i), U the window's largest upper bound.

Every column's range is the neuron's sound bounds. With its 0/1 columns integral the program holds
exactly the network's behaviour on eta_0 (every input of eta_0, with its true phases, meets it);
relaxed, it is the triangle (and max-pool) LP relaxation. Both contain the image of eta_0, which
is what makes a certified bound over them sound (mixed_program.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .bounds import ChainBounds
from .chain import Chain
from .errors import UnsupportedOperatorError
from .mixed_program import MixedProgram
from .rounding import gamma_n
from .steps import Kink, MaxPool

INF = float("inf")


@dataclass
class PrefixProgram:
    """The program, where each value of the layer sits, and eta_0."""

    program: MixedProgram
    inputs: np.ndarray           # the moved input dimensions (those of eta_0 with width)
    input_columns: np.ndarray    # their columns
    columns: np.ndarray          # per value of the hidden layer: its column, -1 where it is a constant
    lower: np.ndarray            # sound bounds of the hidden layer over eta_0
    upper: np.ndarray
    box_lower: np.ndarray        # eta_0
    box_upper: np.ndarray
    chain: Chain                 # steps 0..stop-1
    phases: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]   # per 0/1 block: see phases_at
    col_step: np.ndarray         # per column: 0 for an input, k + 1 for one step k made

    def cone(self, columns: np.ndarray) -> np.ndarray:
        """Per column, whether the given columns' values depend on it: the columns of every row that
        defines one of them (a row defines the columns of its latest step), and so on back to the
        inputs. Branching only on the 0/1 columns of this cone is enough: with those integral, the
        given columns hold the network's own values at the program's input."""
        A = self.program.A.tocoo()
        step = self.col_step[A.col]
        row_step = np.full(A.shape[0], -1)
        np.maximum.at(row_step, A.row, step)
        defining = step == row_step[A.row]
        inside = np.zeros(self.program.n_cols, bool)
        inside[columns] = True
        while True:
            rows = np.zeros(A.shape[0], bool)
            rows[A.row[defining & inside[A.col]]] = True
            grown = inside.copy()
            grown[A.col[rows[A.row]]] = True
            if np.array_equal(grown, inside):
                return inside
            inside = grown

    def phases_at(self, x: np.ndarray) -> np.ndarray:
        """The 0/1 columns' values (other entries 0) on the network's own run on input x: a block (k, columns, neurons,
        windows) says column i is 1 where neuron i of value k is at least 0 (windows None: a kink's
        phase) or wins its max-pool window (the first largest value)."""
        values = self.chain.forward_all(np.asarray(x, np.float64).reshape(1, -1))
        d = np.zeros(self.program.n_cols)
        for k, columns, neurons, windows in self.phases:
            v = values[k][0]
            if windows is None:
                d[columns] = v[neurons] >= 0
            else:
                padded = np.append(v, -INF)[windows]
                d[columns] = windows[np.arange(len(windows)), padded.argmax(axis=1)] == neurons
        return d

    def input_of(self, v: np.ndarray) -> np.ndarray:
        """The input a solution stands for: the fixed dimensions at the image, the moved ones from v."""
        x = self.box_lower.copy()
        x[self.inputs] = np.clip(v[self.input_columns], self.box_lower[self.inputs], self.box_upper[self.inputs])
        return x


class _Builder:
    """Columns and rows, appended step by step."""

    def __init__(self) -> None:
        self.col_lower: list[float] = []
        self.col_upper: list[float] = []
        self.integral: list[bool] = []
        self.col_step: list[int] = []      # per column: 0 for an input, k + 1 for one step k made
        self.step = 0
        self.entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []   # (rows, cols, values)
        self.row_lower: list[np.ndarray] = []
        self.row_upper: list[np.ndarray] = []
        self.n_rows = 0

    def columns(self, lower: np.ndarray, upper: np.ndarray, integral: bool = False) -> np.ndarray:
        first = len(self.col_lower)
        self.col_lower += list(lower)
        self.col_upper += list(upper)
        self.integral += [integral] * len(lower)
        self.col_step += [self.step] * len(lower)
        return np.arange(first, first + len(lower))

    def rows(self, terms: list[tuple[np.ndarray, np.ndarray | float]], lower: np.ndarray | float,
             upper: np.ndarray | float, count: int) -> None:
        """`count` rows, row i being sum over terms (columns, coefficients) of coefficient[i] v[column[i]]."""
        index = self.n_rows + np.arange(count)
        for cols, coefficients in terms:
            self.entries.append((index, np.asarray(cols), np.broadcast_to(coefficients, (count,)).astype(float)))
        self.row_lower.append(np.broadcast_to(np.asarray(lower, float), (count,)))
        self.row_upper.append(np.broadcast_to(np.asarray(upper, float), (count,)))
        self.n_rows += count

    def program(self) -> MixedProgram:
        rows, cols, values = (np.concatenate(part) if self.entries else np.zeros(0)
                              for part in zip(*self.entries)) if self.entries else (np.zeros(0),) * 3
        n_cols = len(self.col_lower)
        A = sparse.csr_matrix((values, (rows.astype(int), cols.astype(int))), shape=(self.n_rows, n_cols))
        return MixedProgram(A, np.concatenate(self.row_lower or [np.zeros(0)]),
                            np.concatenate(self.row_upper or [np.zeros(0)]), np.array(self.col_lower, float),
                            np.array(self.col_upper, float), np.array(self.integral, bool))


def _up(x: np.ndarray) -> np.ndarray:
    return np.nextafter(x, INF)


def prefix_program(chain: Chain, bounds: ChainBounds, stop: int) -> PrefixProgram:
    """The program of steps 0..stop-1 over box 0 of `bounds` (sound bounds over eta_0 of every step's
    input, e.g. BoundPropagator.forward's); the box's dimensions of nonzero width are the moved ones."""
    box_lo, box_hi = bounds.box_lower[0], bounds.box_upper[0]
    inputs = np.flatnonzero(box_hi > box_lo)
    build = _Builder()
    column = np.full(chain.n_inputs, -1)
    column[inputs] = build.columns(box_lo[inputs], box_hi[inputs])
    phases: list = []
    input_columns = column[inputs].copy()
    for k, step in enumerate(chain.steps[:stop]):
        build.step = k + 1
        lo, hi = bounds.lower[k][0], bounds.upper[k][0]
        out_lo, out_hi = bounds.lower[k + 1][0], bounds.upper[k + 1][0]
        if step.linear:
            column = _affine(build, step, column, lo, hi, out_lo, out_hi)
        elif isinstance(step, Kink):
            column = _kink(build, step.negative_slope, column, lo, hi, out_lo, out_hi, phases, k)
        elif isinstance(step, MaxPool):
            column = _max_pool(build, step.groups, column, lo, hi, out_lo, out_hi, phases, k)
        else:
            raise UnsupportedOperatorError(f"a hidden-layer search back-maps through affine, ReLU, LeakyRelu and "
                                           f"max-pool steps, not {type(step).__name__}",
                                           file=chain.network.path, node=(step.layers or ["?"])[0])
    return PrefixProgram(build.program(), inputs, input_columns, column, bounds.lower[stop][0],
                         bounds.upper[stop][0], box_lo, box_hi, chain.prefix(stop), phases,
                         np.array(build.col_step, dtype=np.int64))


def _affine(build: _Builder, step, column: np.ndarray, lo: np.ndarray, hi: np.ndarray, out_lo: np.ndarray,
            out_hi: np.ndarray) -> np.ndarray:
    W = sparse.csr_matrix(step.W)
    W.eliminate_zeros()
    dependent = column >= 0
    W_dep, W_const = W[:, dependent].tocsr(), W[:, ~dependent].tocsr()
    out = np.flatnonzero(np.diff(W_dep.indptr) > 0)
    new = np.full(W.shape[0], -1)
    if len(out) == 0:
        return new
    new[out] = build.columns(out_lo[out], out_hi[out])
    c_lo, c_hi = lo[~dependent], hi[~dependent]
    plus, minus = W_const.maximum(0)[out], W_const.minimum(0)[out]
    b = step.b[out]
    r_lo = plus @ c_lo + minus @ c_hi + b
    r_hi = plus @ c_hi + minus @ c_lo + b
    magnitude = np.maximum(np.abs(lo), np.abs(hi))
    abs_W = abs(W)[out]
    terms = np.diff(W[out].indptr) + 2
    error = (gamma_n(int(terms.max(initial=2))) * (abs(W_const)[out] @ np.maximum(np.abs(c_lo), np.abs(c_hi))
                                                    + np.abs(b))
             + step.rel_error * (abs_W @ magnitude + np.abs(b)))
    r_lo, r_hi = np.nextafter(r_lo - error, -INF), np.nextafter(r_hi + error, INF)
    coo = W_dep[out].tocoo()
    dep_columns = column[dependent]
    index = build.n_rows + np.arange(len(out))
    build.entries.append((index, new[out], np.ones(len(out))))
    build.entries.append((index[coo.row], dep_columns[coo.col], -coo.data))
    build.row_lower.append(r_lo)
    build.row_upper.append(r_hi)
    build.n_rows += len(out)
    return new


def _kink(build: _Builder, a: float, column: np.ndarray, lo: np.ndarray, hi: np.ndarray, out_lo: np.ndarray,
          out_hi: np.ndarray, phases: list, k: int) -> np.ndarray:
    dependent = column >= 0
    new = np.full(len(column), -1)
    active = dependent & (lo >= 0)
    new[active] = column[active]                                    # y = z: the same column
    inactive = np.flatnonzero(dependent & (hi <= 0))
    if a and len(inactive):                                         # y = a z
        new[inactive] = build.columns(out_lo[inactive], out_hi[inactive])
        build.rows([(new[inactive], 1.0), (column[inactive], -a)], 0.0, 0.0, len(inactive))
    split = np.flatnonzero(dependent & (lo < 0) & (hi > 0))
    if len(split):
        n = len(split)
        y, z = build.columns(out_lo[split], out_hi[split]), column[split]
        d = build.columns(np.zeros(n), np.ones(n), integral=True)
        new[split] = y
        phases.append((k, d, split, None))
        one_minus_a = _up(np.float64(1.0) - a)
        m_active = _up(one_minus_a * -lo[split])
        m_inactive = _up(one_minus_a * hi[split])
        build.rows([(y, 1.0), (z, -1.0)], 0.0, INF, n)                          # y >= z
        if a:
            build.rows([(y, 1.0), (z, -a)], 0.0, INF, n)                        # y >= a z
        build.rows([(y, 1.0), (z, -1.0), (d, m_active)], -INF, m_active, n)     # y - z <= M (1 - d)
        build.rows([(y, 1.0), (z, -a), (d, -m_inactive)], -INF, 0.0, n)         # y - a z <= M d
    return new


def _max_pool(build: _Builder, groups: np.ndarray, column: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              out_lo: np.ndarray, out_hi: np.ndarray, phases: list, k: int) -> np.ndarray:
    new = np.full(len(groups), -1)
    for j, window in enumerate(groups):
        window = window[window >= 0]
        if not np.any(column[window] >= 0):
            continue
        floor = lo[window].max()
        can_win = window[hi[window] >= floor]
        if len(can_win) == 1:
            new[j] = column[can_win[0]]          # -1 if that input is a constant: then so is y
            continue
        (y,) = build.columns(out_lo[j:j + 1], out_hi[j:j + 1])
        new[j] = y
        for i in window[column[window] >= 0]:
            build.rows([(np.array([y]), 1.0), (column[i:i + 1], -1.0)], 0.0, INF, 1)         # y >= v_i
        d = build.columns(np.zeros(len(can_win)), np.ones(len(can_win)), integral=True)
        phases.append((k, d, can_win, np.broadcast_to(groups[j], (len(d), groups.shape[1]))))
        top = hi[window].max()
        for i, d_i in zip(can_win, d):
            m = _up(top - lo[i])
            if column[i] >= 0:                   # y - v_i + M d_i <= M
                build.rows([(np.array([y]), 1.0), (column[i:i + 1], -1.0), (np.array([d_i]), m)], -INF, m, 1)
            else:                                # y + M d_i <= c_i + M, c_i at most its upper bound
                build.rows([(np.array([y]), 1.0), (np.array([d_i]), m)], -INF, _up(hi[i] + m), 1)
        build.entries.append((np.full(len(d), build.n_rows), d, np.ones(len(d))))      # sum d = 1
        build.row_lower.append(np.ones(1))
        build.row_upper.append(np.ones(1))
        build.n_rows += 1
    return new
