"""Study `frames`: sensorimotor object recognition in reference frames (Lewis et al. 2019; Monty-style 3D).

Parts (each a resumable unit):
- abstract: 100 abstract objects (pool of 10 features) recognised after 1..10 sensations by the grid-cell network,
  the ideal observer and bag-of-features; sensations needed vs columns; capacity vs model size.
- 3d: each object learned once at one pose, recognised at uniformly random rotations with sensor noise; accuracy,
  steps, ADD-S, CPU seconds per episode; steps vs columns; an example episode's evidence.
- baselines: PointNet (with and without rotation augmentation) and D2 + nearest neighbour on the same sensed points.
- continual: objects added one by one; accuracy on the first ones as more are added.
- unsupervised: no labels, objects shown in turn; a sensation stream no model fits starts a new model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from frugalnet.frames.abstract import (BagOfFeatures, GridCellNetwork, IdealObserver, make_abstract_objects,
                                       recognition_steps, share_recognised)
from frugalnet.frames.baselines import D2Classifier, PointNetClassifier, training_walks
from frugalnet.frames.episodes import (EpisodeConfig, learn_models, make_ensemble, run_episode, sweep_at_pose)
from frugalnet.frames.learning_module import EvidenceLM, LMConfig, ObjectModel
from frugalnet.frames.objects3d import make_object, object_set
from frugalnet.frames.sensors import POLICIES, SensorNoise, random_rotations
from frugalnet.utils.plotting import pyplot
from frugalnet.experiment.registry import StudyConfig, register_study

PARTS = ("abstract", "3d", "baselines", "continual", "unsupervised")


@dataclass
class FramesConfig(StudyConfig):
    parts: tuple = PARTS
    # abstract objects
    abstract_objects: int = 100
    abstract_features: int = 10
    max_sensations: int = 10
    abstract_columns: tuple = (1, 2, 3, 4, 5)
    modules: int = 10
    cells: int = 16
    abstract_repeats: int = 5          # object sets drawn (mean reported)
    capacity_cells: tuple = (3, 4, 6, 10)
    capacity_objects: tuple = (50, 100, 200, 400, 800)
    capacity_features: int = 100
    # 3D objects
    object_sets: tuple = ("distinct", "similar")
    episodes: int = 100
    columns: int = 1
    columns_sweep: tuple = (1, 2, 4)
    sweep_episodes: int = 20
    noise_deg: float = 2.0
    location_noise: float = 0.005
    feature_noise: float = 0.1
    policy: str = "random"
    max_steps: int = 80
    spacing: float = 0.02
    voxel: float = 0.04
    n_objects: int = 0                 # 0: the whole set; else its first n (small runs and tests)
    # baselines
    baseline_walks: int = 60
    baseline_epochs: int = 25
    # continual / unsupervised
    continual_first: int = 3
    continual_episodes: int = 10
    unsupervised_repeats: int = 2

    def validate(self) -> None:
        super().validate()
        bad = sorted(set(self.parts) - set(PARTS))
        if bad or not self.parts:
            raise ValueError(f"parts must be a non-empty subset of {PARTS}, got {self.parts}")
        for s in self.object_sets:
            object_set(s)
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {self.policy!r}")
        for name in ("abstract_objects", "abstract_features", "max_sensations", "modules", "episodes", "columns",
                     "sweep_episodes", "max_steps", "baseline_walks", "baseline_epochs", "continual_first",
                     "continual_episodes", "unsupervised_repeats", "capacity_features", "abstract_repeats"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.cells < 2:
            raise ValueError(f"cells must be >= 2, got {self.cells}")
        if not 0 <= self.n_objects <= 10 or self.n_objects == 1:
            raise ValueError(f"n_objects must be 0 (all) or in [2, 10], got {self.n_objects}")
        for name in ("noise_deg", "location_noise", "feature_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.005 <= self.spacing <= 0.1:
            raise ValueError(f"spacing must be in [0.005, 0.1], got {self.spacing}")
        if not self.spacing <= self.voxel <= 0.2:
            raise ValueError(f"voxel must be in [spacing={self.spacing}, 0.2], got {self.voxel}")
        if any(c < 1 for c in tuple(self.columns_sweep) + tuple(self.abstract_columns)):
            raise ValueError("columns_sweep and abstract_columns must hold integers >= 1")

    # helpers -----------------------------------------------------------------------------------------------------
    def names(self, set_name: str) -> tuple[str, ...]:
        names = object_set(set_name)
        return names[: self.n_objects] if self.n_objects else names

    def noise(self) -> SensorNoise:
        return SensorNoise(self.location_noise, self.noise_deg, self.feature_noise)

    def lm(self) -> LMConfig:
        return LMConfig(voxel=self.voxel, radius=1.5 * self.voxel)

    def episode(self) -> EpisodeConfig:
        return EpisodeConfig(max_steps=self.max_steps, policy=self.policy, noise=self.noise())


# --- abstract objects ------------------------------------------------------------------------------------------------
def _abstract(cfg: FramesConfig, seed: int) -> dict:
    objs = make_abstract_objects(cfg.abstract_objects, cfg.abstract_features, seed=seed)
    curves = {}
    for name, ob in (("ideal", IdealObserver(objs)), ("network", GridCellNetwork(objs, cfg.modules, cfg.cells, seed)),
                     ("bag", BagOfFeatures(objs))):
        steps = recognition_steps(objs, ob, cfg.max_sensations, seed=seed)
        curves[name] = share_recognised(steps, cfg.max_sensations)
    cols = {}
    for c in cfg.abstract_columns:
        row = {}
        for name, make in (("ideal", lambda i: IdealObserver(objs)),
                           ("network", lambda i: GridCellNetwork(objs, cfg.modules, cfg.cells, seed + 101 * i))):
            steps = recognition_steps(objs, [make(i) for i in range(c)], cfg.max_sensations, columns=c, seed=seed)
            row[name] = float(steps.mean())
        cols[str(c)] = row
    return {"curves": curves, "columns": cols}


def _capacity(cfg: FramesConfig, seed: int) -> dict:
    out = {}
    for cells in cfg.capacity_cells:
        shares = {}
        for n in cfg.capacity_objects:
            objs = make_abstract_objects(n, cfg.capacity_features, seed=seed)
            net = GridCellNetwork(objs, cfg.modules, cells, seed)
            shares[str(n)] = float((recognition_steps(objs, net, cfg.max_sensations, seed=seed)
                                    <= cfg.max_sensations).mean())
        ok = [n for n in cfg.capacity_objects if shares[str(n)] >= 0.9]
        out[str(cells)] = {"cells_total": cfg.modules * cells * cells, "shares": shares,
                           "capacity": max(ok) if ok else 0}
    return out


# --- 3D ---------------------------------------------------------------------------------------------------------------
def _poses(seed: int, tag: int, n: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng([seed, tag])
    return random_rotations(n, rng), rng.uniform(-1, 1, (n, 3)), rng


def _episodes(ctx, cfg: FramesConfig, names, models: list[ObjectModel], n: int, columns: int, seed: int, tag: int,
              desc: str, objects: list[int] | None = None, history: bool = False) -> list[dict]:
    tests = [make_object(name, cfg.spacing, seed + 1000) for name in names]   # a different surface sample
    ensemble = make_ensemble(models, columns, cfg.lm())
    rots, trans, rng = _poses(seed, tag, n)
    objects = objects if objects is not None else list(range(len(names)))
    out = []
    for e in ctx.progress(range(n), desc=desc):
        o = objects[e % len(objects)]
        r = run_episode(ensemble, tests[o], rots[e], trans[e], cfg.episode(), rng, true_index=o,
                        keep_history=history and e == 0)
        rec = {"object": names[o], "true": o, "predicted": r["predicted"], "correct": r["correct"],
               "steps": r["steps"], "decided": r["decided"], "add_s": r["add_s"], "cpu_s": r["cpu_s"],
               "wall_s": r["wall_s"], "sensed": np.round(r["sensed"], 5).tolist()}
        if "history" in r:
            rec["history"] = np.where(np.isfinite(r["history"]), r["history"], np.nan).tolist()
        out.append(rec)
    return out


def summarise(records: list[dict]) -> dict:
    adds = [r["add_s"] for r in records if r["add_s"] is not None]
    return {"episodes": len(records), "accuracy": float(np.mean([r["correct"] for r in records])),
            "median_steps": float(np.median([r["steps"] for r in records])),
            "mean_steps": float(np.mean([r["steps"] for r in records])),
            "median_add_s": float(np.median(adds)) if adds else float("nan"),
            "p90_add_s": float(np.percentile(adds, 90)) if adds else float("nan"),
            "median_cpu_s": float(np.median([r["cpu_s"] for r in records])),
            "max_cpu_s": float(np.max([r["cpu_s"] for r in records])),
            "undecided": int(sum(not r["decided"] for r in records))}


def _baselines(cfg: FramesConfig, names, records: list[dict], seed: int) -> dict:
    clouds = [make_object(n, cfg.spacing, seed + 1) for n in names]          # the learning sample, identity pose
    sets, labels = training_walks(clouds, cfg.baseline_walks, 8, cfg.max_steps, cfg.noise(), seed,
                                  policy=cfg.policy)
    test = [np.asarray(r["sensed"]) for r in records]
    truth = np.array([r["true"] for r in records])
    out = {}
    for key, clf in (("pointnet", PointNetClassifier(len(names), False, cfg.baseline_epochs, seed=seed)),
                     ("pointnet_rot_aug", PointNetClassifier(len(names), True, cfg.baseline_epochs, seed=seed)),
                     ("d2_nn", D2Classifier())):
        out[key] = float((clf.fit(sets, labels).predict(test) == truth).mean())
    return out


def _continual(ctx, cfg: FramesConfig, seed: int) -> dict:
    names = cfg.names("distinct")
    models = learn_models(names, cfg.voxel, cfg.spacing, seed + 1, )
    first = min(cfg.continual_first, len(names))
    stages = sorted({first, (first + len(names)) // 2, len(names)})
    out = {}
    for k in stages:
        recs = _episodes(ctx, cfg, names[:k], models[:k], first * cfg.continual_episodes, cfg.columns, seed,
                         tag=500 + k, desc=f"continual {k} objects", objects=list(range(first)))
        out[str(k)] = float(np.mean([r["correct"] for r in recs]))
    return {"first": first, "accuracy_on_first": out}


def _unsupervised(ctx, cfg: FramesConfig, seed: int) -> dict:
    """Objects shown in a random order, each `unsupervised_repeats` times, with no labels."""
    names = cfg.names("distinct")
    tests = [make_object(n, cfg.spacing, seed + 1000) for n in names]
    learn = [make_object(n, cfg.spacing, seed + 1) for n in names]
    order = np.random.default_rng([seed, 7]).permutation(np.repeat(np.arange(len(names)), cfg.unsupervised_repeats))
    rots, trans, rng = _poses(seed, 900, len(order))
    lm = EvidenceLM([], cfg.lm())
    owner: list[int] = []                  # which true object created each model (for scoring only)
    seen: set[int] = set()
    right = 0
    for e in ctx.progress(range(len(order)), desc="unsupervised"):
        o = int(order[e])
        r = run_episode(make_ensemble(lm.models, 1, cfg.lm()), tests[o], rots[e], trans[e], cfg.episode(), rng,
                        stop_on_no_match=True)
        new = r["no_match"] or not r["decided"]
        if new:
            lm.add_model(ObjectModel.learn(f"model{len(lm.models)}",
                                           sweep_at_pose(learn[o], rots[e], trans[e], cfg.noise(), rng), cfg.voxel))
            owner.append(o)
        right += (new and o not in seen) or (not new and owner[r["predicted"]] == o)
        seen.add(o)
    return {"presentations": int(len(order)), "objects": len(names), "models_created": len(lm.models),
            "correct": float(right / len(order)),
            "models_per_object": {names[o]: owner.count(o) for o in range(len(names))}}


# --- the study ---------------------------------------------------------------------------------------------------------
@register_study("frames", FramesConfig, "reference frames: sensorimotor object recognition (abstract and 3D objects)")
def frames_study(ctx) -> dict:
    cfg: FramesConfig = ctx.config
    seed = ctx.seeds[0]
    rep = ctx.report
    results: dict = {}
    rep.text("Objects are learned as features at locations in their own reference frame from one exposure, and "
             "recognised by a moving sensor whose displacements are path-integrated in each hypothesised frame.")

    if "abstract" in cfg.parts:
        res = [ctx.unit(f"abstract-s{s}", lambda s=s: _abstract(cfg, s))
               for s in range(seed, seed + cfg.abstract_repeats)]
        cap = ctx.unit(f"capacity-s{seed}", lambda: _capacity(cfg, seed))
        curves = {k: np.mean([r["curves"][k] for r in res], axis=0).tolist() for k in ("ideal", "network", "bag")}
        cols = {c: {k: float(np.mean([r["columns"][c][k] for r in res])) for k in ("ideal", "network")}
                for c in res[0]["columns"]}
        results["abstract"] = {"curves": curves, "columns": cols, "capacity": cap}
        rep.heading("Abstract objects (Lewis et al. 2019)")
        rep.table(["sensations", "grid-cell network", "ideal observer", "bag of features"],
                  [[n + 1, curves["network"][n], curves["ideal"][n], curves["bag"][n]]
                   for n in range(cfg.max_sensations)],
                  f"Share of {cfg.abstract_objects} objects (pool of {cfg.abstract_features} features) recognised "
                  f"after n sensations; network: {cfg.modules} modules of {cfg.cells}x{cfg.cells} cells; "
                  f"mean over {len(res)} object sets.")
        rep.table(["columns", "network: mean sensations", "ideal: mean sensations"],
                  [[c, v["network"], v["ideal"]] for c, v in cols.items()],
                  "Sensations per column until recognised, columns voting on object identity.")
        rep.table(["cells per module", "location cells", "capacity (objects, >=90% in "
                   f"{cfg.max_sensations} sensations)"] + [f"{n} objects" for n in cfg.capacity_objects],
                  [[k, v["cells_total"], v["capacity"]] + [v["shares"][str(n)] for n in cfg.capacity_objects]
                   for k, v in cap.items()],
                  f"Capacity vs model size ({cfg.modules} modules, pool of {cfg.capacity_features} features).")
        fig, ax = pyplot().subplots(figsize=(5, 3.4))
        x = np.arange(1, cfg.max_sensations + 1)
        for k, lab in (("network", "grid-cell network"), ("ideal", "ideal observer"), ("bag", "bag of features")):
            ax.plot(x, curves[k], marker="o", label=lab)
        ax.set_xlabel("sensations")
        ax.set_ylabel("share recognised")
        ax.legend()
        fig.tight_layout()
        rep.figure(fig, "abstract_accuracy_vs_sensations", "Abstract objects: accuracy vs sensations.")

    table3d, episodes_by_set = [], {}
    if any(p in cfg.parts for p in ("3d", "baselines")):
        results["3d"] = {}
        for si, set_name in enumerate(cfg.object_sets):
            names = cfg.names(set_name)
            models = learn_models(names, cfg.voxel, cfg.spacing, seed + 1)
            recs = ctx.unit(f"3d-{set_name}-c{cfg.columns}-s{seed}",
                            lambda: _episodes(ctx, cfg, names, models, cfg.episodes, cfg.columns, seed, 10 + si,
                                              f"3d {set_name}", history=True))
            episodes_by_set[set_name] = recs
            summ = summarise(recs)
            results["3d"][set_name] = {"evidence_lm": summ}
            for r in recs:
                ctx.log(part="3d", set=set_name, object=r["object"], correct=r["correct"], steps=r["steps"],
                        add_s=r["add_s"], cpu_s=r["cpu_s"])
            table3d.append([set_name, f"evidence LM ({cfg.columns} column)", summ["accuracy"], summ["median_steps"],
                            100 * summ["median_add_s"], summ["median_cpu_s"], summ["max_cpu_s"]])
            if "baselines" in cfg.parts:
                base = ctx.unit(f"baselines-{set_name}-s{seed}", lambda: _baselines(cfg, names, recs, seed))
                results["3d"][set_name]["baselines"] = base
                for key, lab in (("pointnet", "PointNet, one pose"), ("pointnet_rot_aug", "PointNet + rotation aug."),
                                 ("d2_nn", "D2 + nearest neighbour")):
                    table3d.append([set_name, lab, base[key], summ["median_steps"], float("nan"), float("nan"),
                                    float("nan")])
        rep.heading("3D objects: one exposure, random rotations, noisy sensor")
        rep.table(["object set", "method", "accuracy", "median steps (points)", "median ADD-S (% size)",
                   "median CPU s/episode", "max CPU s/episode"], table3d,
                  f"{cfg.episodes} episodes per set at uniformly random rotations; noise: location "
                  f"{cfg.location_noise}, pose {cfg.noise_deg} deg, features {cfg.feature_noise}; policy "
                  f"{cfg.policy}. Baselines see the same sensed points of the same episodes.")
        first = episodes_by_set[cfg.object_sets[0]][0]
        if "history" in first:
            hist = np.asarray(first["history"], float)
            names = cfg.names(cfg.object_sets[0])
            fig, ax = pyplot().subplots(figsize=(5.5, 3.4))
            for o in range(hist.shape[1]):
                ax.plot(np.arange(1, len(hist) + 1), hist[:, o], lw=2.5 if o == first["true"] else 1,
                        label=names[o])
            ax.set_xlabel("step")
            ax.set_ylabel("best evidence")
            ax.legend(fontsize=6, ncol=2)
            fig.tight_layout()
            rep.figure(fig, "example_episode_evidence",
                       f"Example episode ({first['object']}): best evidence per object over steps (pruned objects "
                       "drop out).")

    if "3d" in cfg.parts and cfg.columns_sweep:
        names = cfg.names(cfg.object_sets[0])
        models = learn_models(names, cfg.voxel, cfg.spacing, seed + 1)
        sweep = {}
        for c in cfg.columns_sweep:
            recs = ctx.unit(f"columns-{c}-s{seed}",
                            lambda c=c: _episodes(ctx, cfg, names, models, cfg.sweep_episodes, c, seed, 40,
                                                  f"{c} columns"))
            sweep[str(c)] = {k: v for k, v in summarise(recs).items()}
        results["columns"] = sweep
        rep.table(["columns", "accuracy", "median steps", "mean steps", "median CPU s/episode"],
                  [[c, v["accuracy"], v["median_steps"], v["mean_steps"], v["median_cpu_s"]]
                   for c, v in sweep.items()],
                  f"Steps vs number of columns ({cfg.object_sets[0]} set, {cfg.sweep_episodes} episodes each, "
                  "same poses).")
        fig, ax = pyplot().subplots(figsize=(4.5, 3.2))
        ax.plot([int(c) for c in sweep], [v["mean_steps"] for v in sweep.values()], marker="o", label="3D (mean)")
        if "abstract" in results:
            ac = results["abstract"]["columns"]
            ax.plot([int(c) for c in ac], [v["network"] for v in ac.values()], marker="s", label="abstract network")
        ax.set_xlabel("columns")
        ax.set_ylabel("steps to recognition")
        ax.legend()
        fig.tight_layout()
        rep.figure(fig, "steps_vs_columns", "Steps (sensations per column) vs number of voting columns.")

    if "continual" in cfg.parts:
        cont = ctx.unit(f"continual-s{seed}", lambda: _continual(ctx, cfg, seed))
        results["continual"] = cont
        rep.heading("Continual and unsupervised learning")
        rep.table(["objects learned", f"accuracy on the first {cont['first']}"],
                  [[k, v] for k, v in cont["accuracy_on_first"].items()],
                  "Objects added one by one (each model learned once, never retrained).")
    if "unsupervised" in cfg.parts:
        uns = ctx.unit(f"unsupervised-s{seed}", lambda: _unsupervised(ctx, cfg, seed))
        results["unsupervised"] = uns
        rep.table(["presentations", "objects", "models created", "correct (new when new, else its own model)"],
                  [[uns["presentations"], uns["objects"], uns["models_created"], uns["correct"]]],
                  "Learning from scratch without labels: a stream no model fits starts a new model.")
    return results
