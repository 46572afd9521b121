"""Abstract objects of Lewis et al. (2019): features at locations on a small grid, recognised by sensing and moving.

An object is `features_per_object` features placed at distinct cells of a `grid` x `grid` board, each drawn from a
pool of `n_features`. A sensation reads the feature under the sensor; a movement is the (integer) displacement to
the next cell. Three observers keep what is consistent with the sensations so far:

- `IdealObserver`: the exact set of (object, location) pairs (the best any observer can do);
- `GridCellNetwork`: location-union narrowing in grid-cell-like modules. Each module is a small torus of cells; an
  object's locations are coded by a random per-object phase plus an integer linear map of the location, so a
  movement shifts every active cell by the same amount (path integration). Learning associates each active cell
  with the feature sensed there. Recognition keeps, per module, the union of cells that could be the location,
  shifts it by each movement and intersects it with the cells associated with the new feature; an (object,
  location) stays a candidate while its cells are active in every module. Modules narrow independently, so unions
  can alias: with few or small modules the network needs more sensations than the ideal observer.
- `BagOfFeatures`: ignores locations, keeps the objects whose feature multiset contains the one sensed.

Columns vote by intersecting the sets of candidate objects.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AbstractObjects:
    """features: (n_objects, grid * grid) int feature ids, -1 where a cell is empty."""

    features: np.ndarray
    grid: int
    n_features: int

    @property
    def n_objects(self) -> int:
        return len(self.features)

    def locations(self, o: int) -> np.ndarray:
        return np.flatnonzero(self.features[o] >= 0)


def make_abstract_objects(n_objects: int = 100, n_features: int = 10, features_per_object: int = 10, grid: int = 4,
                          seed: int = 0) -> AbstractObjects:
    if n_objects < 1 or n_features < 1:
        raise ValueError(f"n_objects and n_features must be >= 1, got {n_objects}, {n_features}")
    if not 1 <= features_per_object <= grid * grid:
        raise ValueError(f"features_per_object must be in [1, {grid * grid}], got {features_per_object}")
    rng = np.random.default_rng(seed)
    feats = np.full((n_objects, grid * grid), -1, dtype=np.int64)
    for o in range(n_objects):
        cells = rng.choice(grid * grid, features_per_object, replace=False)
        feats[o, cells] = rng.integers(0, n_features, features_per_object)
    return AbstractObjects(feats, grid, n_features)


def _xy(cell: int | np.ndarray, grid: int) -> np.ndarray:
    return np.stack([np.asarray(cell) // grid, np.asarray(cell) % grid], axis=-1)


class IdealObserver:
    """Exact (object, location) candidates: cand[o, cell]."""

    def __init__(self, objects: AbstractObjects) -> None:
        self.objects = objects
        self.reset()

    def reset(self) -> None:
        self.cand: np.ndarray | None = None

    def sense(self, feature: int, move: np.ndarray | None) -> None:
        match = self.objects.features == feature
        if self.cand is None:
            self.cand = match.copy()
            return
        g = self.objects.grid
        board = self.cand.reshape(-1, g, g)
        shifted = np.zeros_like(board)
        dx, dy = int(move[0]), int(move[1])
        src = board[:, max(0, -dx):g - max(0, dx), max(0, -dy):g - max(0, dy)]
        shifted[:, max(0, dx):g - max(0, -dx), max(0, dy):g - max(0, -dy)] = src
        self.cand = shifted.reshape(len(board), -1) & match

    def restrict(self, objects: np.ndarray) -> None:
        self.cand &= objects[:, None]

    def candidates(self) -> np.ndarray:
        return self.cand.any(axis=1)


class BagOfFeatures:
    """Objects whose feature counts cover the counts sensed so far (locations ignored)."""

    def __init__(self, objects: AbstractObjects) -> None:
        self.objects = objects
        self.counts = np.stack([np.bincount(f[f >= 0], minlength=objects.n_features) for f in objects.features])
        self.reset()

    def reset(self) -> None:
        self.sensed = np.zeros(self.objects.n_features, np.int64)
        self.allowed = np.ones(self.objects.n_objects, bool)

    def sense(self, feature: int, move: np.ndarray | None) -> None:
        self.sensed[feature] += 1

    def restrict(self, objects: np.ndarray) -> None:
        self.allowed &= objects

    def candidates(self) -> np.ndarray:
        return (self.counts >= self.sensed).all(axis=1) & self.allowed


class GridCellNetwork:
    """Location-union narrowing over `modules` grid-cell modules of `cells` x `cells` cells each."""

    def __init__(self, objects: AbstractObjects, modules: int = 10, cells: int = 10, seed: int = 0) -> None:
        if modules < 1 or cells < 2:
            raise ValueError(f"modules must be >= 1 and cells >= 2, got {modules}, {cells}")
        self.objects, self.m, self.k = objects, modules, cells
        rng = np.random.default_rng(seed)
        self.maps = np.stack([self._invertible(rng) for _ in range(modules)])            # (M, 2, 2)
        self.phase = rng.integers(0, cells, (objects.n_objects, modules, 2))            # (O, M, 2)
        xy = _xy(np.arange(objects.grid ** 2), objects.grid)                             # (L, 2)
        code = (self.phase[:, None] + np.einsum("mij,lj->lmi", self.maps, xy)[None]) % cells   # (O, L, M, 2)
        self.code = code[..., 0] * cells + code[..., 1]                                  # (O, L, M)
        self.assoc = np.zeros((modules, cells * cells, objects.n_features), bool)
        occupied = objects.features >= 0
        o_idx, l_idx = np.nonzero(occupied)
        f = objects.features[o_idx, l_idx]
        for mod in range(modules):
            self.assoc[mod, self.code[o_idx, l_idx, mod], f] = True
        self.occupied = occupied
        self.reset()

    def _invertible(self, rng: np.random.Generator) -> np.ndarray:
        while True:
            a = rng.integers(0, self.k, (2, 2))
            if np.gcd(int(round(np.linalg.det(a))) % self.k, self.k) == 1:
                return a

    @property
    def size(self) -> int:
        """Number of location cells (the model size)."""
        return self.m * self.k * self.k

    def reset(self) -> None:
        self.active: np.ndarray | None = None      # (M, k*k)
        self.allowed = np.ones(self.objects.n_objects, bool)

    def sense(self, feature: int, move: np.ndarray | None) -> None:
        assoc = self.assoc[:, :, feature]
        if self.active is None:
            self.active = assoc.copy()
            return
        shift = np.einsum("mij,j->mi", self.maps, np.asarray(move)) % self.k
        board = self.active.reshape(self.m, self.k, self.k)
        moved = np.stack([np.roll(board[i], tuple(shift[i]), axis=(0, 1)) for i in range(self.m)])
        self.active = moved.reshape(self.m, -1) & assoc

    def restrict(self, objects: np.ndarray) -> None:
        self.allowed &= objects

    def candidates(self) -> np.ndarray:
        on = np.take_along_axis(self.active.T[None], self.code.reshape(1, -1, self.m), axis=1)
        on = on.reshape(self.code.shape).all(axis=2) & self.occupied                      # (O, L)
        return on.any(axis=1) & self.allowed


OBSERVERS = {"ideal": IdealObserver, "network": GridCellNetwork, "bag": BagOfFeatures}


def recognition_steps(objects: AbstractObjects, observer, max_sensations: int = 10, columns: int = 1,
                      seed: int = 0) -> np.ndarray:
    """Sensations (per column) each object needed until it was the only candidate; max_sensations + 1 if never.

    One column visits the object's cells in a random order without repeats; with several columns, each step every
    column senses a different random cell and the columns vote by intersecting their candidate objects."""
    rng = np.random.default_rng(seed)
    out = np.full(objects.n_objects, max_sensations + 1)
    observers = observer if isinstance(observer, list) else [observer]
    if len(observers) != columns:
        raise ValueError(f"need one observer per column: got {len(observers)} for {columns} columns")
    g = objects.grid
    for o in range(objects.n_objects):
        for ob in observers:
            ob.reset()
        locs = objects.locations(o)
        order = rng.permutation(locs)
        prev = [None] * columns
        for t in range(max_sensations):
            if columns == 1:
                cells = [order[t % len(order)]]
            else:
                cells = rng.choice(locs, columns, replace=columns > len(locs))
            for c, ob in enumerate(observers):
                move = None if prev[c] is None else _xy(cells[c], g) - _xy(prev[c], g)
                ob.sense(int(objects.features[o, cells[c]]), move)
                prev[c] = cells[c]
            cand = np.logical_and.reduce([ob.candidates() for ob in observers])
            if columns > 1:
                for ob in observers:
                    ob.restrict(cand)
            if cand[o] and cand.sum() == 1:
                out[o] = t + 1
                break
    return out


def share_recognised(steps: np.ndarray, max_sensations: int) -> list[float]:
    """Share of objects recognised after 1..max_sensations sensations."""
    return [float((steps <= n).mean()) for n in range(1, max_sensations + 1)]
