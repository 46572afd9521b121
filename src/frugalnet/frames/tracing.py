"""Evidence traces for tuning the decision rule without re-running episodes.

With a policy that ignores the hypotheses (the random walk), the evidence each object gathers does not depend on
when the module stops, so one run per episode to a step cap, recording every object's best evidence and whether the
leader's poses agree after each step, lets any decision rule be replayed in microseconds (`replay`). The same
episodes as `evaluate.run_episodes` (same poses, sensor start, walk and noise for a given seed and tag).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from frugalnet.frames.catalog import make_object
from frugalnet.frames.episodes import make_ensemble, patch_offsets
from frugalnet.frames.evaluate import Setting, poses
from frugalnet.frames.learning_module import ObjectModel
from frugalnet.frames.sensors import SurfaceSensor, make_policy


def trace_episodes(names: Sequence[str], models: list[ObjectModel], s: Setting, episodes: Sequence[int], seed: int,
                   steps: int, tag: int = 10, n_poses: int | None = None,
                   on_episode: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """For each episode index: {"episode", "true", "object", "evidence": (steps, objects) best evidence per object
    (-1e9 where pruned), "settled": (steps,) whether the leader's poses agreed}. `n_poses` (default: max index + 1)
    must equal the episode count of the run being mirrored, because poses are drawn for all episodes at once.
    `on_episode` is called with the traces so far after each episode (to save them as they come)."""
    if s.policy != "random":
        raise ValueError(f"traces replay only for the 'random' policy (it ignores hypotheses), got {s.policy!r}")
    tests = [make_object(name, s.spacing, seed + 1000) for name in names]
    rots, trans, _ = poses(seed, tag, n_poses or max(episodes) + 1)
    ens = make_ensemble(models, 1, s.lm)
    col, ep = ens.columns[0], s.episode()
    out = []
    for e in episodes:
        o = e % len(names)
        rng = np.random.default_rng([seed, tag, e])
        ens.reset()
        sensor = SurfaceSensor(tests[o], rots[e], trans[e], make_policy(ep.policy, ep.step), ep.noise,
                               patch_offsets(1, ep.patch_spacing), rng)
        evidence, settled = [], []
        for _ in range(steps):
            obs, disp = sensor.sense()
            ens.step(obs, disp)
            ev = col.object_evidence()
            lead = int(np.argmax(ev))
            evidence.append(np.where(np.isfinite(ev), ev, -1e9))
            settled.append(bool(np.isfinite(ev[lead]) and col._pose_settled(lead, ev[lead])))
            sensor.move()
        out.append({"episode": int(e), "true": o, "object": names[o], "evidence": np.stack(evidence),
                    "settled": np.array(settled)})
        if on_episode is not None:
            on_episode(out)
    return out


def replay(traces: list[dict], max_steps: int, min_steps: int = 20, x_percent: float = 0.2, min_lead: float = 5.0,
           lead_per_step: float = 0.0, min_lead_steps: int = 2, symmetry_steps: int = 25) -> dict:
    """Accuracy, median steps, wrong and undecided counts of a decision rule on recorded traces: decide when the
    leader is ahead by max(x_percent * |best|, min_lead, lead_per_step * step) for min_lead_steps steps in a row
    and its poses agree (or it has led symmetry_steps steps); undecided episodes answer the leader at the cap."""
    answers = []
    for t in traces:
        ev, st = t["evidence"], t["settled"]
        cap = min(max_steps, len(ev))
        run, answer = 0, None
        for i in range(cap):
            order = np.argsort(ev[i])[::-1]
            e1, e2 = ev[i, order[0]], ev[i, order[1]] if ev.shape[1] > 1 else -np.inf
            n = i + 1
            if n < min_steps or not e1 - e2 > max(x_percent * max(abs(e1), 1.0), min_lead, lead_per_step * n):
                run = 0
                continue
            run += 1                                    # as EvidenceLM.decided counts it
            if run >= min_lead_steps and (st[i] or run >= symmetry_steps):
                answer = (int(order[0]), n, True)
                break
        answers.append(answer or (int(np.argmax(ev[cap - 1])), cap, False))
    truth = [t["true"] for t in traces]
    return {"episodes": len(traces), "accuracy": float(np.mean([a[0] == y for a, y in zip(answers, truth)])),
            "median_steps": float(np.median([a[1] for a in answers])),
            "wrong": int(sum(a[2] and a[0] != y for a, y in zip(answers, truth))),
            "undecided": int(sum(not a[2] for a in answers))}
