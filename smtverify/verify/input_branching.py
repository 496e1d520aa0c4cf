"""Input splitting's branching: which dimensions of a box to try, which to split, and its halves.

A box is split along the dimension whose worse half is bounded best among a few candidates,
chosen by how much the linear bound stands to gain from each (its input coefficient times the
dimension's width), the widest always among them.
"""
from __future__ import annotations

import numpy as np


def split_dimension(margins: np.ndarray, parent: np.ndarray, widths: np.ndarray, candidate: np.ndarray | None = None,
                    max_aspect: float = 256.0) -> np.ndarray:
    """Per box, the dimension to split among its candidates: the one whose worse half is bounded
    best, unless even that gains less than 0.1% of the box's own bound, or some dimension is
    max_aspect times wider (relative to the root box); then the widest candidate.
    Choosing by the bound alone, a box whose bound is held by its wide dimensions was cut along
    narrow ones that each gained a little, forever: ACAS Xu 3_3/prop_2 cut X_2 27 times for 1e-8
    each, and 3_3/prop_9 cut X_0 and X_1 to 1e-6 of their width and never X_3."""
    candidate = np.ones(widths.shape, bool) if candidate is None else candidate
    worse_half = np.where(candidate, margins.min(axis=2), -np.inf)      # (B, D)
    best = np.argmax(worse_half, axis=1)
    gain = worse_half[np.arange(len(best)), best] - parent              # inf at the root
    stuck = np.isfinite(parent) & (gain <= 1e-3 * np.abs(parent))
    lopsided = widths.max(axis=1) > max_aspect * widths.min(axis=1)
    return np.where(stuck | lopsided, np.argmax(np.where(candidate, widths, -np.inf), axis=1), best)


def candidates(widths: np.ndarray, scores: list, k: int) -> np.ndarray:
    """Per box, a mask (B, D) of the free dimensions whose halves get bounded: the k of highest
    score (a row's input coefficient times the width: what the linear bound stands to gain), the
    widest among them; every dimension where a box has no score or k is 0."""
    B, D = widths.shape
    mask = np.ones((B, D), bool)
    guessed = np.array([s is not None for s in scores], bool)
    if k <= 0 or k >= D or not np.any(guessed):
        return mask
    ranked = np.argsort(-np.stack([s for s in scores if s is not None]), axis=1)[:, :k]
    widest = np.argmax(widths[guessed], axis=1)
    if k == 1:
        lopsided = widths[guessed].max(axis=1) > 256.0 * widths[guessed].min(axis=1)
        ranked[lopsided, 0] = widest[lopsided]
    else:
        missing = ~np.any(ranked == widest[:, None], axis=1)
        ranked[missing, -1] = widest[missing]
    chosen = np.zeros((len(ranked), D), bool)
    np.put_along_axis(chosen, ranked, True, axis=1)
    mask[guessed] = chosen
    return mask


def halves(lo: np.ndarray, hi: np.ndarray, dims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both halves of box p along dimension dims[p]: lower and upper (P, 2, n)."""
    P, n = lo.shape
    child_lo = np.repeat(lo[:, None, :], 2, axis=1)
    child_hi = np.repeat(hi[:, None, :], 2, axis=1)
    mid = (lo[np.arange(P), dims] + hi[np.arange(P), dims]) / 2
    child_hi[np.arange(P), 0, dims] = mid
    child_lo[np.arange(P), 1, dims] = mid
    return child_lo, child_hi
