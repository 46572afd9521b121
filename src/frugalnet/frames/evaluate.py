"""The measurements of the `frames` study as plain functions returning JSON-ready results (no report writing).

`Setting` holds what every 3D measurement shares (sampling, sensor noise, policy, learning-module knobs); each
function takes names of objects (see `catalog.object_set`), a Setting, a seed and a `progress` wrapper (an
iterable -> iterable, e.g. tqdm or `lambda it, desc="": it`), and returns dicts and lists of numbers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from frugalnet.frames.abstract import (BagOfFeatures, GridCellNetwork, IdealObserver, make_abstract_objects,
                                       recognition_steps, share_recognised)
from frugalnet.frames.baselines import D2Classifier, PointNetClassifier, training_walks
from frugalnet.frames.catalog import make_object
from frugalnet.frames.episodes import EpisodeConfig, learn_models, make_ensemble, run_episode, sweep_at_pose
from frugalnet.frames.learning_module import EvidenceLM, LMConfig, ObjectModel
from frugalnet.frames.sensors import SensorNoise, random_rotations

Progress = Callable[..., Iterable]


def silent(iterable: Iterable, desc: str = "", **_) -> Iterable:
    """A progress wrapper that shows nothing."""
    return iterable


@dataclass(frozen=True)
class Setting:
    """What the 3D measurements share. The learning sample of each object is drawn with seed `seed + 1`, the test
    sample (the object the sensor meets) with `seed + 1000`: another set of surface points than the one learned."""

    spacing: float = 0.02
    voxel: float = 0.04
    noise: SensorNoise = field(default_factory=SensorNoise)
    policy: str = "random"
    max_steps: int = 80
    lm: LMConfig = field(default_factory=LMConfig)
    step: float = 0.05               # sensor step length (object diameters)

    def episode(self, min_lms_match: int = 1) -> EpisodeConfig:
        return EpisodeConfig(max_steps=self.max_steps, policy=self.policy, step=self.step, noise=self.noise,
                             min_lms_match=min_lms_match)


def poses(seed: int, tag: int, n: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """n uniformly random rotations, translations in [-1, 1]^3 and the generator that drew them."""
    rng = np.random.default_rng([seed, tag])
    return random_rotations(n, rng), rng.uniform(-1, 1, (n, 3)), rng


def learn(names: Sequence[str], s: Setting, seed: int) -> list[ObjectModel]:
    """One model per object, one exposure at one pose."""
    return learn_models(tuple(names), s.voxel, s.spacing, seed + 1)


def run_episodes(names: Sequence[str], models: list[ObjectModel], s: Setting, n: int, columns: int, seed: int,
                 tag: int, progress: Progress = silent, desc: str = "", objects: list[int] | None = None,
                 history: bool = False, min_lms_match: int = 1) -> list[dict]:
    """n recognition episodes at random poses, objects in turn; one record per episode (sensed points included so
    that baselines can be scored on exactly the same data). Episode e's sensor start, walk and noise come from its
    own generator (seed, tag, e), so every variant (columns, knobs) meets exactly the same episodes."""
    tests = [make_object(name, s.spacing, seed + 1000) for name in names]
    ensemble = make_ensemble(models, columns, s.lm, min_lms_match)
    rots, trans, _ = poses(seed, tag, n)
    objects = objects if objects is not None else list(range(len(names)))
    out = []
    for e in progress(range(n), desc=desc):
        o = objects[e % len(objects)]
        rng = np.random.default_rng([seed, tag, e])
        r = run_episode(ensemble, tests[o], rots[e], trans[e], s.episode(min_lms_match), rng, true_index=o,
                        keep_history=history and e == 0)
        rec = {"object": names[o], "true": o, "predicted": r["predicted"], "correct": r["correct"],
               "steps": r["steps"], "decided": r["decided"], "add_s": r["add_s"], "cpu_s": r["cpu_s"],
               "wall_s": r["wall_s"], "hypotheses_first": r["hypotheses_first"],
               "hypotheses_mean": r["hypotheses_mean"], "true_rank": r["true_rank"],
               "predicted_name": r["name"], "sensed": np.round(r["sensed"], 5).tolist()}
        if "history" in r:
            rec["history"] = np.where(np.isfinite(r["history"]), r["history"], np.nan).tolist()
        out.append(rec)
    return out


def diagnose(records: list[dict]) -> list[dict]:
    """One line per episode for studying failures: object, outcome ('correct', 'wrong': decided on another object,
    'undecided': the step cap was reached), steps (the decision step when decided), the object answered and the true
    object's evidence rank at the end (0: it led)."""
    return [{"episode": i, "object": r["object"], "outcome": "undecided" if not r["decided"]
             else ("correct" if r["correct"] else "wrong"), "correct": bool(r["correct"]), "steps": int(r["steps"]),
             "predicted": r.get("predicted_name"), "true_rank": r.get("true_rank")} for i, r in enumerate(records)]


def summarise(records: list[dict]) -> dict:
    """Accuracy, steps, ADD-S and CPU time of a list of episode records."""
    adds = [r["add_s"] for r in records if r["add_s"] is not None]
    per_step = [r["cpu_s"] / max(r["steps"], 1) for r in records]
    out = {"episodes": len(records), "accuracy": float(np.mean([r["correct"] for r in records])),
           "median_steps": float(np.median([r["steps"] for r in records])),
           "mean_steps": float(np.mean([r["steps"] for r in records])),
           "median_add_s": float(np.median(adds)) if adds else float("nan"),
           "p90_add_s": float(np.percentile(adds, 90)) if adds else float("nan"),
           "median_cpu_s": float(np.median([r["cpu_s"] for r in records])),
           "max_cpu_s": float(np.max([r["cpu_s"] for r in records])),
           "median_wall_s": float(np.median([r["wall_s"] for r in records])),
           "median_ms_per_step": 1000 * float(np.median(per_step)),
           "undecided": int(sum(not r["decided"] for r in records))}
    if all("hypotheses_first" in r for r in records):
        out["median_hypotheses_first"] = float(np.median([r["hypotheses_first"] for r in records]))
        out["median_hypotheses_mean"] = float(np.median([r["hypotheses_mean"] for r in records]))
    return out


def scaling(names: Sequence[str], counts: Sequence[int], s: Setting, n: int, seed: int,
            progress: Progress = silent) -> dict:
    """Accuracy, steps and time against the number of known objects: the first `count` objects of `names`."""
    out = {}
    for count in counts:
        sub = tuple(names[:count])
        t0 = time.process_time()
        models = learn(sub, s, seed)
        learn_s = time.process_time() - t0
        recs = run_episodes(sub, models, s, n, 1, seed, 700 + count, progress, f"scaling {count} objects")
        out[str(count)] = {**summarise(recs), "stored_points": int(sum(len(m) for m in models)),
                           "learn_cpu_s": learn_s}
    return out


def baselines(names: Sequence[str], s: Setting, records: list[dict], walks: int, epochs: int, seed: int) -> dict:
    """PointNet (without and with rotation augmentation) and D2 + nearest neighbour, trained on walks over each
    object at its learning pose and scored on the points sensed in `records`."""
    return baseline_views(names, s, records, (1,), walks, epochs, seed)["1"]


def baseline_views(names: Sequence[str], s: Setting, records: list[dict], views: Sequence[int], walks_per_view: int,
                   epochs: int, seed: int) -> dict:
    """Baseline accuracy on the episodes' sensed points when trained on `v` views (poses) of each object, for each v
    in `views`: {"v": {"pointnet": acc, "pointnet_rot_aug": acc, "d2_nn": acc}}."""
    clouds = [make_object(n, s.spacing, seed + 1) for n in names]           # the learning sample
    test = [np.asarray(r["sensed"]) for r in records]
    truth = np.array([r["true"] for r in records])
    out = {}
    for v in views:
        sets, labels = training_walks(clouds, walks_per_view, 8, s.max_steps, s.noise, seed + v, policy=s.policy,
                                      step=s.step, views=v)
        accs = {}
        for key, clf in (("pointnet", PointNetClassifier(len(names), False, epochs, seed=seed)),
                         ("pointnet_rot_aug", PointNetClassifier(len(names), True, epochs, seed=seed)),
                         ("d2_nn", D2Classifier())):
            accs[key] = float((clf.fit(sets, labels).predict(test) == truth).mean())
        out[str(v)] = accs
    return out


def continual(names: Sequence[str], s: Setting, first: int, episodes: int, seed: int,
              progress: Progress = silent) -> dict:
    """Objects added one by one (each model learned once); accuracy on the first `first` as more are added."""
    models = learn(names, s, seed)
    first = min(first, len(names))
    out = {}
    for k in sorted({first, (first + len(names)) // 2, len(names)}):
        recs = run_episodes(names[:k], models[:k], s, first * episodes, 1, seed, 500 + k, progress,
                            f"continual {k} objects", objects=list(range(first)))
        out[str(k)] = float(np.mean([r["correct"] for r in recs]))
    return {"first": first, "accuracy_on_first": out}


def unsupervised(names: Sequence[str], s: Setting, repeats: int, seed: int, progress: Progress = silent) -> dict:
    """Objects shown in a random order, each `repeats` times, with no labels: a sensation stream no model fits
    starts a new model."""
    tests = [make_object(n, s.spacing, seed + 1000) for n in names]
    learn_clouds = [make_object(n, s.spacing, seed + 1) for n in names]
    order = np.random.default_rng([seed, 7]).permutation(np.repeat(np.arange(len(names)), repeats))
    rots, trans, rng = poses(seed, 900, len(order))
    lm = EvidenceLM([], s.lm)
    owner: list[int] = []                  # which true object created each model (for scoring only)
    seen: set[int] = set()
    right = 0
    for e in progress(range(len(order)), desc="unsupervised"):
        o = int(order[e])
        r = run_episode(make_ensemble(lm.models, 1, s.lm), tests[o], rots[e], trans[e], s.episode(), rng,
                        stop_on_no_match=True)
        new = r["no_match"] or not r["decided"]
        if new:
            obs = sweep_at_pose(learn_clouds[o], rots[e], trans[e], s.noise, rng)
            lm.add_model(ObjectModel.learn(f"model{len(lm.models)}", obs, s.voxel))
            owner.append(o)
        right += (new and o not in seen) or (not new and owner[r["predicted"]] == o)
        seen.add(o)
    return {"presentations": int(len(order)), "objects": len(names), "models_created": len(lm.models),
            "correct": float(right / len(order)),
            "models_per_object": {names[o]: owner.count(o) for o in range(len(names))}}


# --- abstract objects (Lewis et al. 2019) ------------------------------------------------------------------------------
def abstract_curves(n_objects: int, n_features: int, max_sensations: int, columns: Sequence[int], modules: int,
                    cells: int, seed: int) -> dict:
    """Share recognised after 1..max_sensations sensations per observer, and mean sensations vs columns."""
    objs = make_abstract_objects(n_objects, n_features, seed=seed)
    curves = {}
    for name, ob in (("ideal", IdealObserver(objs)), ("network", GridCellNetwork(objs, modules, cells, seed)),
                     ("bag", BagOfFeatures(objs))):
        curves[name] = share_recognised(recognition_steps(objs, ob, max_sensations, seed=seed), max_sensations)
    cols = {}
    for c in columns:
        row = {}
        for name, make in (("ideal", lambda i: IdealObserver(objs)),
                           ("network", lambda i: GridCellNetwork(objs, modules, cells, seed + 101 * i))):
            steps = recognition_steps(objs, [make(i) for i in range(c)], max_sensations, columns=c, seed=seed)
            row[name] = float(steps.mean())
        cols[str(c)] = row
    return {"curves": curves, "columns": cols}


def abstract_capacity(cells_options: Sequence[int], object_counts: Sequence[int], n_features: int,
                      max_sensations: int, modules: int, seed: int) -> dict:
    """Share recognised within `max_sensations` vs number of objects, per module size; capacity at >= 90%."""
    out = {}
    for cells in cells_options:
        shares = {}
        for n in object_counts:
            objs = make_abstract_objects(n, n_features, seed=seed)
            net = GridCellNetwork(objs, modules, cells, seed)
            shares[str(n)] = float((recognition_steps(objs, net, max_sensations, seed=seed) <= max_sensations).mean())
        ok = [n for n in object_counts if shares[str(n)] >= 0.9]
        out[str(cells)] = {"cells_total": modules * cells * cells, "shares": shares, "capacity": max(ok) if ok else 0}
    return out
