"""Columns that vote: several learning modules, each on its own sensor patch, share their leading hypotheses.

A vote is a (object, location, rotation) hypothesis of the sending column. Before it reaches another column its
location is moved by the offset between the two sensors, rotated into the hypothesis' object frame (loc + R^T
offset), so it says where the receiving sensor should be on the object if the sender is right. The receiver raises
the hypotheses the votes support. The ensemble stops when `min_lms_match` columns are decided; its answer is the
object most of them chose.
"""
from __future__ import annotations

import numpy as np

from frugalnet.frames.learning_module import EvidenceLM
from frugalnet.frames.observations import Observation


class ColumnEnsemble:
    """A list of learning modules fed by a sensor array with one patch per module."""

    def __init__(self, columns: list[EvidenceLM], min_lms_match: int = 1, vote: bool = True) -> None:
        if not columns:
            raise ValueError("ColumnEnsemble needs at least one column")
        if not 1 <= min_lms_match <= len(columns):
            raise ValueError(f"min_lms_match must be in [1, {len(columns)}], got {min_lms_match}")
        self.columns, self.min_lms_match, self.vote = columns, min_lms_match, vote

    def reset(self) -> None:
        for c in self.columns:
            c.reset()

    def step(self, observations: list[Observation], displacements: list[np.ndarray]) -> None:
        if len(observations) != len(self.columns):
            raise ValueError(f"got {len(observations)} observations for {len(self.columns)} columns")
        for col, obs, disp in zip(self.columns, observations, displacements):
            col.step(obs, disp)
        every = self.columns[0].config.vote_every
        steps = self.columns[0].steps
        if self.vote and len(self.columns) > 1 and steps > 1 and steps % every == 0:
            self._vote(observations)

    def _vote(self, observations: list[Observation]) -> None:
        """Every column sends its votes to every other, all senders in one call per receiver; a vote every
        `vote_every` steps counts that many steps' worth (the evidence a column gets from voting stays the same)."""
        sent = [c.votes() for c in self.columns]
        n = len(self.columns)
        every = self.columns[0].config.vote_every
        for r, receiver in enumerate(self.columns):
            objs, locs, rots, ids = [], [], [], []
            for s in range(n):
                if s == r:
                    continue
                obj, loc, rot = sent[s]
                offset = observations[r].location - observations[s].location
                objs.append(obj)
                locs.append(loc + np.einsum("hji,j->hi", rot, offset))
                rots.append(rot)
                ids.append(np.full(len(obj), s))
            receiver.receive_votes(np.concatenate(objs), np.concatenate(locs), np.concatenate(rots),
                                   share=every / (n - 1), sender=np.concatenate(ids))

    def decided(self) -> bool:
        flags = [c.decided() for c in self.columns]
        return sum(flags) >= self.min_lms_match

    def answer(self) -> tuple[int, int]:
        """(object index, index of the column whose pose estimate to use): majority over decided columns (all
        columns when none is decided), ties to the column with more evidence."""
        bests = [c.best() for c in self.columns]
        decided = [i for i, c in enumerate(self.columns) if c._lead_steps > 0] or list(range(len(self.columns)))
        counts: dict[int, float] = {}
        for i in decided:
            counts[bests[i][0]] = counts.get(bests[i][0], 0) + 1 + 1e-6 * bests[i][3]
        obj = max(counts, key=counts.get)
        col = max((i for i in decided if bests[i][0] == obj), key=lambda i: bests[i][3])
        return obj, col
