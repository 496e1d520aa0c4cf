"""Evaluators of grid points: logits of a batch of parameter vectors c (METHOD 6).

A pixel manipulation changes only a few input dimensions, so most of the network's work is the
same for every grid point. Three evaluators, chosen automatically:
- `PlainEvaluator` runs the whole network on every point (any family; the reference).
- `DifferenceEvaluator` computes the base activations once and, per point, recomputes only the
  neurons the chosen dimensions reach: new = base + W[affected rows][:, moved cols] @ delta.
- `TableEvaluator` goes further: before the layers that mix everything (the first dense layer),
  each affected neuron reads only a few chosen pixels, so the output of an affine step there is
  the base plus a sum of small tables, one per group of neurons reading the same pixels, indexed
  by those pixels' grid positions; affine steps right after it fold into the tables. When only
  affine steps follow (pooled features -> Gemm -> logits), the logits are base + sum of tables.
`choose_evaluator` picks the evaluator estimated to get furthest within the time left (the whole
grid in the least time when it can), table building included; tables never take more than
TABLE_BYTES, and a table build that overruns its share of the time is abandoned for the
difference evaluator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import sparse

from .budget import Deadline, OutOfTime
from .errors import SmtVerifyError
from .manipulations import Manipulation, PixelManipulation
from .network import Network
from .chain import Chain, chain_of
from .steps import Affine, Elementwise, MaxPool

CHUNK_BYTES = 1 << 26          # working memory of one evaluated chunk
MAX_CHUNK = 1 << 16
TABLE_CONFIGS = 1 << 20        # table rows in all: beyond this, tables cost more than they save
TABLE_BYTES = 1 << 28          # float32 table entries in all (256 MB): memory stays flat whatever the grid
UNIT_SECONDS = 1e-9            # the cost estimates' unit
BUILD_SHARE = 0.5              # tables are planned only if their estimated build fits in this share of the time left
ABANDON_SHARE = 0.75           # a build still running at this share of the time left is given up
MERGE_ROWS = 4096              # tables merge (one lookup fewer) while they stay this small
MASK_BITS = 62                 # pixel sets are int64 bit masks


def chunk_for(values_per_point: int, itemsize: int = 4) -> int:
    """How many points to evaluate at once, so that a chunk's values fill about CHUNK_BYTES."""
    return int(np.clip(CHUNK_BYTES // max(1, values_per_point * itemsize), 64, MAX_CHUNK))


class PlainEvaluator:
    """The whole network on every point: works for every family."""

    name = "plain"

    def __init__(self, network: Network, manipulation: Manipulation) -> None:
        self.network = network
        self.manipulation = manipulation
        widest = max((int(np.prod(layer.shape)) for layer in network.order if layer.shape), default=1)
        self.chunk_size = chunk_for(3 * max(widest, network.n_inputs))

    def logits(self, c: np.ndarray) -> np.ndarray:
        return self.network.logits(self.manipulation.apply(c))


def _matrix(M: sparse.csr_matrix, dtype: np.dtype) -> np.ndarray | sparse.csr_matrix:
    """Dense (for BLAS) when M is small or dense enough, else sparse."""
    size = M.shape[0] * M.shape[1]
    return M.toarray().astype(dtype) if M.nnz > 0.05 * size or size <= 1 << 16 else M.astype(dtype)


@dataclass
class _Stage:
    """One chain step restricted to the neurons the chosen dimensions reach."""

    rows: np.ndarray                               # affected output neurons, sorted
    run: Callable[[np.ndarray], np.ndarray]        # (affected inputs, B) -> (rows, B)
    reads: sparse.csr_matrix                       # rows x affected inputs: which inputs each row reads
    cost: float                                    # estimated time per point (about 1 ns a unit)


def _affine_stage(step: Affine, cols: np.ndarray, base_in: np.ndarray, base_out: np.ndarray,
                  dtype: np.dtype) -> _Stage:
    sub = sparse.csc_matrix(step.W)[:, cols]
    sub.eliminate_zeros()
    rows = np.unique(sub.indices)
    sub = sparse.csr_matrix(sub)[rows]
    matrix = _matrix(sub, dtype)
    b_out, b_in = base_out[rows, None].astype(dtype), base_in[cols, None].astype(dtype)

    def run(v: np.ndarray) -> np.ndarray:
        out = np.asarray(matrix @ (v - b_in))
        out += b_out
        return out

    products = sub.shape[0] * sub.shape[1] / 16 if isinstance(matrix, np.ndarray) else 2 * sub.nnz
    return _Stage(rows, run, (sub != 0).astype(np.int8).tocsr(), products + 4 * len(rows) + len(cols))


def _elementwise_stage(step: Elementwise, cols: np.ndarray) -> _Stage:
    return _Stage(cols, step.forward, sparse.identity(len(cols), np.int8, "csr"), len(cols))


def _pool_stage(step: MaxPool, cols: np.ndarray, base_in: np.ndarray, dtype: np.dtype) -> _Stage:
    n_in = len(base_in)
    position = np.full(n_in + 1, -1)                # position[-1] = -1 also maps the padding index
    position[cols] = np.arange(len(cols))
    local = position[step.groups]
    rows = np.flatnonzero((local >= 0).any(axis=1))
    local, members = local[rows], step.groups[rows]
    padded_base = np.append(base_in, -np.inf)
    fixed = np.where(local < 0, padded_base[members], -np.inf).max(axis=1, initial=-np.inf)[:, None].astype(dtype)
    gather = np.where(local >= 0, local, len(cols))

    def run(v: np.ndarray) -> np.ndarray:
        padded = np.concatenate([v, np.full((1, v.shape[1]), -np.inf, dtype=v.dtype)])
        out = np.maximum(fixed, padded[gather[:, 0]])
        for column in gather.T[1:]:
            np.maximum(out, padded[column], out=out)
        return out

    hit = local >= 0
    reads = sparse.csr_matrix((np.ones(hit.sum(), np.int8), (np.nonzero(hit)[0], local[hit])),
                              shape=(len(rows), len(cols)))
    return _Stage(rows, run, reads, 6 * gather.size)


class DifferenceEvaluator:
    """Base activations once; per point only the affected neurons of each step (any chain)."""

    name = "difference"

    def __init__(self, chain: Chain, manipulation: PixelManipulation, dtype: type = np.float32) -> None:
        self.chain = chain
        self.manipulation = manipulation
        self.dtype = np.dtype(dtype)
        self.order = np.argsort(manipulation.dims)
        self.base = [v[0] for v in chain.forward_all(manipulation.original.reshape(1, -1).astype(np.float64))]
        self.stages: list[_Stage] = []
        cols = self.affected_before(0)
        for step, base_in, base_out in zip(chain.steps, self.base, self.base[1:]):
            if step.linear:
                stage = _affine_stage(step, cols, base_in, base_out, self.dtype)
            elif step.elementwise:
                stage = _elementwise_stage(step, cols)
            else:
                stage = _pool_stage(step, cols, base_in, self.dtype)
            self.stages.append(stage)
            cols = stage.rows
        self.cost = sum(stage.cost for stage in self.stages)
        widest = max((len(stage.rows) for stage in self.stages), default=1)
        self.chunk_size = chunk_for(3 * widest, self.dtype.itemsize)

    def affected_before(self, step: int) -> np.ndarray:
        """The affected neurons of the input of chain step `step`, sorted."""
        return self.stages[step - 1].rows if step else self.manipulation.dims[self.order]

    def inputs(self, c: np.ndarray) -> np.ndarray:
        """The moved input values (d, B), in the order of the sorted input indices.

        Values are neuron-major (neurons, batch) throughout, so gathering neurons copies rows."""
        return np.ascontiguousarray(self.manipulation.values(c)[:, self.order].T, dtype=self.dtype)

    def propagate(self, v: np.ndarray, start: int, stop: int) -> np.ndarray:
        for stage in self.stages[start:stop]:
            v = stage.run(v)
        return v

    def expand(self, v: np.ndarray) -> np.ndarray:
        """The logits (B, n_outputs), as a transposed view: the last step's affected values placed
        among the base ones."""
        rows = self.stages[-1].rows
        if len(rows) == len(self.base[-1]):
            return v.T
        out = np.repeat(self.base[-1].astype(self.dtype)[:, None], v.shape[1], axis=1)
        out[rows] = v
        return out.T

    def logits(self, c: np.ndarray) -> np.ndarray:
        return self.expand(self.propagate(self.inputs(c), 0, len(self.stages)))


def _pixel_sets(evaluator: DifferenceEvaluator, stop: int) -> np.ndarray:
    """For each affected neuron before step `stop`, the chosen pixels it reads, as a bit mask."""
    masks = np.left_shift(np.int64(1), evaluator.order.astype(np.int64))
    for stage in evaluator.stages[:stop]:
        reads = stage.reads
        masks = (np.bitwise_or.reduceat(masks[reads.indices], reads.indptr[:-1]) if reads.nnz
                 else np.zeros(len(stage.rows), np.int64))
    return masks


def _groups(masks: np.ndarray, radices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel sets, one table each, and for each neuron the set whose table holds it.

    Each neuron goes to a maximal set containing its own; then, since every table costs a lookup
    per point, the two sets whose union has the fewest grid positions merge while that union has
    at most MERGE_ROWS of them."""
    if not len(masks):                                    # the chosen pixels reach no neuron here
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    unique, inverse = np.unique(masks, return_inverse=True)
    contains = (unique[:, None] & unique[None, :]) == unique[None, :]         # [i, j]: set i holds set j
    maximal = np.flatnonzero(contains.sum(axis=0) == 1)                       # held by itself only
    owner = np.argmax(contains[maximal], axis=0)[inverse]                     # first maximal holder
    sets = unique[maximal]
    while len(sets) > 1:
        sizes = np.triu(_positions(sets[:, None] | sets[None, :], radices), 1)
        i, j = np.unravel_index(np.argmin(np.where(sizes > 0, sizes, np.inf)), sizes.shape)
        if sizes[i, j] > MERGE_ROWS:
            break
        sets = np.delete(np.where(np.arange(len(sets)) == i, sets[i] | sets[j], sets), j)
        owner = np.where(owner == j, i, owner - (owner > j))
    return sets, owner


def _positions(masks: np.ndarray, radices: np.ndarray) -> np.ndarray:
    """Grid positions of pixel sets (bit masks): the rows of their tables."""
    bits = (masks[..., None] >> np.arange(len(radices))) & 1
    return np.prod(np.where(bits == 1, radices.astype(np.float64), 1.0), axis=-1)


def _bits(mask: int) -> np.ndarray:
    return np.flatnonzero((np.int64(mask) >> np.arange(MASK_BITS)) & 1)


@dataclass
class _Table:
    params: np.ndarray        # the chosen pixels (parameter indices) this table reads
    strides: np.ndarray       # mixed-radix strides over their grid positions
    shift: int                # sum of m_p * stride: c = -m_p maps to position 0
    values: np.ndarray        # (configurations, width) contributions to the tables' layer

    def lookup(self, columns: np.ndarray) -> np.ndarray:
        """The rows for a batch given as c transposed, (d, B) int32."""
        index = np.full(columns.shape[1], self.shift, np.int32)
        for p, stride in zip(self.params, self.strides):
            index += columns[p] * np.int32(stride)
        return np.take(self.values, index, axis=0)


def _resume(chain: Chain, cut: int) -> int:
    """The first step after `cut` that is not affine: tables fold the affine steps before it."""
    resume = cut + 1
    while resume < len(chain.steps) and chain.steps[resume].linear:
        resume += 1
    return resume


class TableEvaluator:
    """The affected outputs of the affine step `cut` (and the affine steps right after it) as
    base + sum of tables, then difference propagation through the rest of the chain."""

    name = "tables"

    def __init__(self, chain: Chain, manipulation: PixelManipulation, cut: int, fast: DifferenceEvaluator,
                 deadline: Deadline = Deadline()) -> None:
        """Builds the tables, polling `deadline` between chunks of table rows (OutOfTime when it passes)."""
        self.fast = fast
        self.resume = _resume(chain, cut)
        exact = DifferenceEvaluator(chain, manipulation, np.float64)
        keep = fast.stages[self.resume - 1].rows
        sets, owner = _groups(_pixel_sets(fast, cut), 2 * manipulation.steps + 1)
        self.tables = [self._table(exact, cut, np.flatnonzero(owner == g), keep, _bits(mask), deadline)
                       for g, mask in enumerate(sets)]
        self.base = exact.base[self.resume][keep].astype(np.float32)
        self.chunk_size = chunk_for(3 * max([len(keep)] + [len(s.rows) for s in fast.stages[self.resume:]]))

    def _table(self, exact: DifferenceEvaluator, cut: int, local: np.ndarray, keep: np.ndarray,
               params: np.ndarray, deadline: Deadline) -> _Table:
        """The contribution, through step `cut` and the affine steps after it, of the cut layer's
        neurons `local` (positions among its affected ones) for every grid position of `params`.
        Rows are computed a chunk at a time straight into the table: no copy of it is ever held."""
        steps = exact.manipulation.steps[params]
        radices = 2 * steps + 1
        strides = np.cumprod(np.append(1, radices[:0:-1]))[::-1]
        members = exact.affected_before(cut)[local]
        folded = exact.chain.steps[cut + 1:self.resume]
        W = sparse.csr_matrix(exact.chain.steps[cut].W)[:, members]
        table = np.empty((int(np.prod(radices)), len(keep)), np.float32)
        if not folded:                            # no affine step after the cut: only the kept rows matter
            W, keep = W[keep], slice(None)
        for start in range(0, len(table), exact.chunk_size):
            deadline.check("building the evaluator's tables")
            stop = min(start + exact.chunk_size, len(table))
            c = np.zeros((stop - start, exact.manipulation.n_params), np.int64)
            c[:, params] = np.stack(np.unravel_index(np.arange(start, stop), radices), axis=1) - steps
            moved = exact.propagate(exact.inputs(c), 0, cut)[local]
            values = W @ (moved - exact.base[cut][members, None])
            for step in folded:
                values = step.W @ values
            table[start:stop] = np.asarray(values)[keep].T
        return _Table(params, strides, int(steps @ strides), table)

    def logits(self, c: np.ndarray) -> np.ndarray:
        columns = np.ascontiguousarray(c.T, dtype=np.int32)
        v = np.broadcast_to(self.base, (len(c), len(self.base))).copy()
        for table in self.tables:
            v += table.lookup(columns)
        return self.fast.expand(self.fast.propagate(v.T, self.resume, len(self.fast.stages)))


def _lookup_cost(n_tables: int, width: int, params: int) -> float:
    """Per point: each table's index (a few integer operations per pixel) and one gathered row."""
    return n_tables * 3 * width + 2 * params


@dataclass(frozen=True)
class TablePlan:
    """Tables at one affine step, in cost units (about a nanosecond each)."""

    cut: int
    build: float                  # building every table row (a row costs the difference propagation to the cut)
    per_point: float              # lookups and the rest of the chain, per point
    table_bytes: int              # the tables' memory (float32), at most TABLE_BYTES


def table_plans(chain: Chain, manipulation: PixelManipulation, fast: DifferenceEvaluator) -> list[TablePlan]:
    """Tables at every affine step where they fit: at most TABLE_CONFIGS rows and TABLE_BYTES in all."""
    if manipulation.n_params > MASK_BITS:
        return []
    radices = 2 * manipulation.steps + 1
    plans = []
    for cut, step in enumerate(chain.steps):
        if not step.linear:
            continue
        sets, _ = _groups(_pixel_sets(fast, cut), radices)
        configs = float(np.sum(_positions(sets, radices)))
        resume = _resume(chain, cut)
        width = len(fast.stages[resume - 1].rows)
        table_bytes = int(configs) * width * np.dtype(np.float32).itemsize
        if configs > TABLE_CONFIGS or table_bytes > TABLE_BYTES:
            continue
        build = configs * (sum(stage.cost for stage in fast.stages[:cut + 1]) + width)
        per_point = (_lookup_cost(len(sets), width, sum(len(_bits(mask)) for mask in sets))
                     + sum(stage.cost for stage in fast.stages[resume:]))
        plans.append(TablePlan(cut, build, per_point, table_bytes))
    return plans


def reach(build: float, per_point: float, points: int, seconds: float) -> tuple[float, float]:
    """(points evaluated within `seconds`, at most `points`; cost units spent on them): an
    evaluator's score. A build estimated past BUILD_SHARE of the time evaluates nothing: the
    estimates are good to a factor of about two, and the build must leave time to evaluate."""
    units = seconds / UNIT_SECONDS
    if build > BUILD_SHARE * units:
        return 0.0, build
    done = min(float(points), (units - build) / max(per_point, 1.0))     # a point costs at least a unit
    return done, build + done * per_point


def _best_plan(plans: list[TablePlan], points: int, seconds: float) -> TablePlan | None:
    """The plan reaching the most points in time, the cheapest of those."""
    def score(plan: TablePlan) -> tuple[float, float]:
        done, spent = reach(plan.build, plan.per_point, points, seconds)
        return done, -spent
    return max(plans, key=score, default=None)


Evaluator = PlainEvaluator | DifferenceEvaluator | TableEvaluator
KINDS = ("auto", "plain", "difference", "tables")


def choose_evaluator(network: Network, manipulation: Manipulation, kind: str = "auto",
                     points: int | None = None, deadline: Deadline = Deadline()) -> Evaluator:
    """The evaluator estimated to evaluate the most of about `points` points (default: the whole
    grid) before `deadline`, the fastest of those; `kind` forces one, and a forced kind that does
    not apply raises ValueError.

    Estimates are in about-a-nanosecond units per point (stage costs above); the plain executor
    costs about two units per weight of the whole chain. Chosen tables that are still being built
    at ABANDON_SHARE of the time left give way to the difference evaluator; forced tables raise
    OutOfTime instead.
    """
    if kind not in KINDS:
        raise ValueError(f"evaluator must be one of {', '.join(KINDS)}")
    plain = PlainEvaluator(network, manipulation)
    if kind == "plain" or not isinstance(manipulation, PixelManipulation):
        return _forced(plain, kind)
    try:
        chain = chain_of(network)
    except SmtVerifyError:
        return _forced(plain, kind)
    fast = DifferenceEvaluator(chain, manipulation)
    if kind == "difference":
        return fast
    target, seconds = min(points or manipulation.grid_size, manipulation.grid_size), deadline.left()
    plan = _best_plan(table_plans(chain, manipulation, fast), target, seconds)
    if kind == "tables":
        return _forced(None if plan is None else TableEvaluator(chain, manipulation, plan.cut, fast, deadline), kind)
    plain_cost = 2 * sum(s.W.nnz if sparse.issparse(s.W) else s.W.size for s in chain.steps if s.linear)
    scores = {"plain": reach(0.0, plain_cost, target, seconds), "difference": reach(0.0, fast.cost, target, seconds),
              "tables": (-1.0, 0.0) if plan is None else reach(plan.build, plan.per_point, target, seconds)}
    best = max(scores, key=lambda name: (scores[name][0], -scores[name][1]))
    if best != "tables":
        return {"plain": plain, "difference": fast}[best]
    try:
        return TableEvaluator(chain, manipulation, plan.cut, fast, deadline.share(ABANDON_SHARE))
    except OutOfTime:
        return fast


def _forced(evaluator: Evaluator | None, kind: str) -> Evaluator:
    if evaluator is None or kind not in ("auto", evaluator.name):
        raise ValueError(f"the '{kind}' evaluator does not apply to this network and manipulation")
    return evaluator
