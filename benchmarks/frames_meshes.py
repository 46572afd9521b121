"""Recognising real meshes on one core: the 77 pybullet_data meshes (or your own folder), each learned once at one
pose, recognised at uniformly random rotations with sensor noise; how accuracy, steps and time grow with the number
of objects; the same episodes with columns voting; the baselines on the same sensed points.

    pip install pybullet            # the meshes ship in its wheel (pybullet_data); nothing is downloaded
    python benchmarks/frames_meshes.py --episodes 100 --columns 5
    python benchmarks/frames_meshes.py --set folder:my_meshes/ --scaling 5 10
    python benchmarks/frames_meshes.py --set meshes_v1 --step 0.05    # the first draw, as the earlier figures

Times are CPU seconds of this process with one thread (process_time), per episode; the machine's load inflates wall
time and, through cache sharing, CPU time too, so the load average is printed beside them. Sampled meshes are cached
(frames.mesh_cache), so only the first run pays the ~40 CPU s of sampling.

Measured (issue 21, fourth session; AMD EPYC AVX-512, 2 cores shared with 4 other jobs, nice 15). The set is now
77 DISTINCT meshes (catalog: a random_urdfs candidate closer than 1.25 x the two meshes' own resampling noise to one
already chosen is skipped; 13 of the first draw's near-duplicates replaced; the rule was fixed before any run on it)
and mesh episodes walk with 0.08-size steps (the study's mesh_step; 0.05 before). Step 0.08 was chosen on seed 1
(77 episodes, load 2.8: 0.05 -> 0.08 gave 0.948 -> 0.961, median 66 -> 47 steps, 4.49 -> 3.88 CPU s); seeds 0 and 3
were not tuned on.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 15 python -m frugalnet run frames --object-sets meshes \
        --parts 3d baselines --columns-sweep 1 --sweep-episodes 1 --mesh-columns 1 --quiet --name meshes
    seed 0, 100 episodes (the same episodes as this script's --parts main --seed 0): 0.950 correct, median 39.5
    steps (mean 55.5), median 3.60 CPU s per episode (max 11.63; 90.8 ms per step; load 2-3.5), 1 wrong decision
    (urdf106 -> urdf214), 10 undecided at 150 steps (6 answered right; urdf115 <-> urdf464, urdf106 -> urdf115,
    urdf673 -> urdf786, urdf378 -> urdf066).

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 15 python benchmarks/frames_meshes.py --episodes 100 --columns 1 \
        --parts main --seed 3
    seed 3, 100 episodes: 0.960 correct, median 44 steps, median 3.90 CPU s per episode (max 11.85; 90.0 ms per
    step; load 3.3), 3 wrong decisions (urdf429 -> urdf594, urdf189 -> urdf311, urdf225 -> urdf311), 9 undecided
    at 150 steps (8 answered right).

    Scaling (the study's run above: first n objects, 40 episodes each, seed 0; 77: the 100 episodes; load 1-3.5):
    objects  accuracy  median steps  median CPU s  max CPU s  ms/step
         10     1.000          26.5          1.65       2.54     44.6
         25     0.975          33.5          2.03       3.88     62.1
         50     0.950          43.5          2.66       6.08     57.6
         77     0.950          39.5          3.60      11.63     90.8
    The first sensation seeds up to the cap (80000 hypotheses) at every size and pruning keeps ~11500 on average, so
    time per step grows far less than objects x rotations (44.6 -> 90.8 ms for 7.7x the objects).

    Baselines in the same study run, on the same sensed points of the 100 seed-0 episodes, trained on 60 walks over
    each object at its learning pose (the one exposure ours had): PointNet 0.030, PointNet with rotation
    augmentation 0.100, D2 + nearest neighbour 0.160 (ours 0.950). The study's views curve (1/4/16 views) was cut
    short for time this session; the previous set's: 0.03 / 0.01 / 0.05, 0.03 / 0.05 / 0.03, 0.04 / 0.10 / 0.08.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 15 python benchmarks/frames_meshes.py --episodes 40 --columns 5 \
        --parts voting --seed 0
    5 columns voting (VOTING_KNOBS, stop when 3 are decided), the first 40 seed-0 episodes: 0.925 correct (one
    column on the same 40: 0.925, median 36 steps, 3.45 CPU s), median 29 steps, median 5.18 CPU s per episode (max
    12.45; 165.2 ms per step; load 1.3), 2 wrong decisions, 3 undecided. Voting saves steps, not errors, and costs
    ~1.5x the CPU time of one column.

First draw (`--set meshes_v1 --step 0.05` reproduces these; near-duplicates included) and earlier knobs. Seeds 0 and
3 were not tuned on: the knobs were chosen on seeds 1 and 2. The meshes preset of the third session (feature_sigma
1.5, plane_tol 0.03):

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 15 python benchmarks/frames_meshes.py --episodes 100 --columns 1 \
        --parts main --seed 0          # (--seed 3)
    seed 0: 0.870 correct (0.850 with the previous preset, 0.800 before re-localisation), median 66 steps, median
    4.46 CPU s per episode (max 7.82; 64.4 ms per step; load 3.8), 4 wrong decisions, 28 undecided at 150 steps (19
    of them answered right). seed 3: 0.890, median 64 steps, 4.54 CPU s (max 13.47; 74.1 ms per step; load 2.3), 3
    wrong, 22 undecided (14 answered right).

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 15 python benchmarks/frames_meshes.py --parts scaling --scaling 10 25 50
    Scaling (seed 0, 40 episodes each, load 1-1.5): 10 objects 1.000, median 32 steps, 1.73 CPU s; 25: 0.975, 44,
    2.25 s; 50: 0.925, 60, 3.19 s (previous preset: 1.000, 31, 1.14 s; 1.000, 32, 1.56 s; 0.925, 56, 2.67 s): the
    wider tolerance seeds more first-step hypotheses (10 objects: 41797 -> 80000, the cap) and costs small sets steps.

With the previous preset (feature_sigma 1.0, plane_tol 0.02; second session, load 3-4):

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 15 python benchmarks/frames_meshes.py --episodes 100 --columns 1 \
        --parts main scaling baselines
    1 column, 77 objects, 100 episodes: 0.850 correct (0.800 before re-localisation), median 54 steps, median 3.93
    CPU s per episode (max 12.75), 7 wrong decisions, 15 undecided at 150 steps (7 of them answered right).
    Scaling (40 episodes each): 10 objects 1.000, 31 steps, 1.14 s; 25: 1.000, 32, 1.56 s; 50: 0.925, 56, 2.67 s.
    Baselines on the same sensed points (1 / 4 / 16 training views): PointNet 0.03 / 0.01 / 0.05, PointNet with
    rotation augmentation 0.03 / 0.05 / 0.03, D2 + nearest neighbour 0.04 / 0.10 / 0.08.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 15 python benchmarks/frames_meshes.py --episodes 40 --columns 5 \
        --parts voting
    5 columns voting (VOTING_KNOBS, stop when 3 are decided), 40 episodes: 0.825 correct (0.775 before; 0.750 with
    these knobs but stopping when 1 column is decided), median 36 steps, median 4.61 CPU s per episode (9.9 before;
    max 24.35), load 1-3. Voting still does not beat one column (0.850 on 100 episodes).

Tuning the decision rule cannot reach 95%: on 77 seed-1 traces to 200 steps (previous preset; --replay --max-steps 200
--save-traces) the true object led at 150 steps in 0.896 of episodes and at 200 in 0.883, so longer episodes do not
help; the best replayed rule (min_lead 8 held 5, cap 150) gave 0.896 against the preset's 0.870.
The preset's feature_sigma 1.5 and plane_tol 0.03 were chosen on 16 hard and 10 easy seed-1 episodes (0.692 -> 0.808 by
the preset's rule; the old knobs with --lm feature_sigma=1.0 plane_tol=0.02):

    PYTHONPATH=src nice -n 15 python benchmarks/frames_meshes.py --replay --episodes 77 --seed 1 --max-steps 150 \
        --only 15 33 36 41 43 59 62 66 72 12 17 25 51 56 63 65 0 1 2 3 4 5 6 7 8 9

In the first draw several random_urdfs meshes are near-duplicates at this sampling: no sensor could tell them apart,
whatever the recogniser (the `meshes` set now skips them; catalog.distinct_mesh_draw):

    PYTHONPATH=src nice -n 15 python benchmarks/frames_meshes.py --parts duplicates --set meshes_v1
    two samples of one mesh: 0.022-0.028 (symmetric chamfer after ICP from 24 starts, in object sizes); closest pairs:
    urdf083/urdf643 0.024, urdf115/urdf464 0.026, urdf083/urdf229 0.028, urdf229/urdf643 0.028, urdf359/urdf910
    0.028, urdf000/urdf188 0.028, then urdf630/urdf779 0.031 ... (the pairs the seed-0 episodes confused most,
    e.g. urdf106/urdf115, urdf642/urdf484, urdf779/urdf359, measured 0.035-0.05).

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 15 python benchmarks/frames_meshes.py --episodes 40 --columns 5 \
        --parts voting            # third session's preset
    5 columns, 40 episodes (seed 0): 0.850 correct (0.825 with the previous preset), median 36 steps, 2 wrong, 4
    undecided, median 6.94 CPU s per episode (max 21.13; 163.6 ms per step; load 1.7): over the 5 s of one column.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")          # one core: set before numpy loads its thread pools
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from frugalnet.bench.harness import machine_summary  # noqa: E402


def row(cols, widths) -> str:
    return " ".join(f"{c:>{w}}" for c, w in zip(cols, widths))


def with_overrides(s, lm: list[str], max_steps: int):
    """The Setting `s` with LMConfig knobs KEY=VALUE (parsed as the knob's type) and a step cap (0: unchanged)."""
    from dataclasses import fields, replace

    types = {f.name: type(getattr(s.lm, f.name)) for f in fields(s.lm)}
    knobs = {}
    for kv in lm:
        key, sep, value = kv.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"--lm wants KEY=VALUE with KEY one of {sorted(types)}, got {kv!r}")
        knobs[key] = value.lower() in ("1", "true", "yes") if types[key] is bool else types[key](value)
    s = replace(s, lm=replace(s.lm, **knobs))
    s.lm.validate()
    return replace(s, max_steps=max_steps) if max_steps > 0 else s


def replay_grid(names, models, s, a) -> None:
    """Traces of --episodes episodes to s.max_steps, and a grid of decision rules replayed on them."""
    import itertools

    from frugalnet.frames.tracing import replay, trace_episodes

    def save(traces: list[dict]) -> None:       # after every episode, for replaying other rules later
        import numpy as np

        if a.save_traces:                       # written whole, then renamed: a reader never sees half a file
            tmp = a.save_traces + ".partial.npz"
            np.savez_compressed(tmp, evidence=np.stack([t["evidence"] for t in traces]),
                                settled=np.stack([t["settled"] for t in traces]),
                                true=np.array([t["true"] for t in traces]), names=np.array(list(names)))
            os.replace(tmp, a.save_traces)

    which = a.only if a.only else range(a.episodes)
    if any(not 0 <= e < a.episodes for e in which):
        raise SystemExit(f"--only takes episode indices in [0, {a.episodes}), got {a.only}")
    traces = trace_episodes(names, models, s, which, a.seed, s.max_steps, n_poses=a.episodes, on_episode=save)
    lm, rows = s.lm, []
    now = replay(traces, s.max_steps, lm.min_steps, lm.x_percent, lm.min_lead, lm.lead_per_step, lm.min_lead_steps,
                 lm.symmetry_steps)
    print(f"{len(traces)} traces of {s.max_steps} steps; the preset's rule (min_lead {lm.min_lead}, held "
          f"{lm.min_lead_steps}): {now}")
    for cap, lead, per_step, held in itertools.product(sorted({100, 150, s.max_steps}), (5, 8, 12, 16), (0, 0.1, 0.2),
                                                       (2, 5, 10)):
        if cap <= s.max_steps:
            r = replay(traces, cap, lm.min_steps, lm.x_percent, lead, per_step, held, lm.symmetry_steps)
            rows.append(((cap, lead, per_step, held), r))
    rows.sort(key=lambda kr: (-kr[1]["accuracy"], kr[1]["median_steps"]))
    widths = (4, 8, 8, 5, 8, 6, 5, 9)
    print(row(("cap", "min_lead", "per_step", "held", "accuracy", "median", "wrong", "undecided"), widths))
    for (cap, lead, per_step, held), r in rows:
        print(row((cap, lead, per_step, held, f"{r['accuracy']:.3f}", f"{r['median_steps']:.0f}", r["wrong"],
                   r["undecided"]), widths))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"traces": len(traces), "rules": [dict(zip(("cap", "min_lead", "lead_per_step", "held"), k),
                                                              **r) for k, r in rows]}, f, indent=1)


def duplicates(names, s, seed: int, out: dict) -> None:
    """The closest pairs of shapes in the set (frames.similarity), beside two samples of one mesh: pairs as close as
    those cannot be told apart at this sampling, whatever the recogniser."""
    from frugalnet.frames.catalog import make_object
    from frugalnet.frames.similarity import near_duplicates, shape_distance

    clouds = {n: make_object(n, s.spacing, seed + 1).points for n in names}
    same = {n: shape_distance(clouds[n], make_object(n, s.spacing, seed + 1000).points, 24, seed=seed)
            for n in names[-3:]}
    pairs = near_duplicates(clouds, candidates=40, starts=24, seed=seed)
    print("\nClosest shapes (symmetric chamfer after ICP from 24 starts, in object sizes); two samples of one mesh: "
          + ", ".join(f"{n} {d:.3f}" for n, d in same.items()))
    print("  " + ", ".join(f"{a_}/{b_} {d:.3f}" for d, a_, b_ in pairs[:12]))
    out["duplicates"] = {"same_mesh": same, "pairs": [[d, a_, b_] for d, a_, b_ in pairs]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", default="meshes", help="'meshes' (pybullet_data) or 'folder:<path>'")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--columns", type=int, default=5, help="also run the same episodes with this many columns (1: no)")
    p.add_argument("--scaling", type=int, nargs="*", default=[10, 25, 50, 77])
    p.add_argument("--scaling-episodes", type=int, default=40)
    p.add_argument("--views", type=int, nargs="*", default=[1, 4, 16], help="baseline training views ([]: none)")
    p.add_argument("--parts", nargs="+", default=["main", "scaling", "voting", "baselines"],
                   choices=["main", "scaling", "voting", "baselines", "duplicates"],
                   help="what to run (baselines need main: they are scored on its episodes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=0, help="step cap per episode (0: the study's mesh_max_steps)")
    p.add_argument("--policy", default="", help="sensor policy over the study's ('random' or 'curvature')")
    p.add_argument("--step", type=float, default=0.0, help="sensor step length over the study's (object sizes)")
    p.add_argument("--lm", nargs="*", default=[], metavar="KEY=VALUE",
                   help="learning-module knobs over the 'meshes' preset, e.g. --lm min_lead=8 min_lead_steps=5")
    p.add_argument("--voting-lm", nargs="*", default=None, metavar="KEY=VALUE",
                   help="knobs of the columns-voting run over --lm (default: lm_config.VOTING_KNOBS['meshes'])")
    p.add_argument("--min-lms-match", type=int, default=3,
                   help="columns voting: stop when this many columns are decided (the answer is their majority; "
                        "seed 1, 40 episodes: 1 -> 0.775, 3 -> 0.900)")
    p.add_argument("--replay", action="store_true",
                   help="tuning: record evidence traces of the episodes to --max-steps without deciding, then print "
                        "the decision rules of a small grid replayed on them (nothing else is run)")
    p.add_argument("--only", type=int, nargs="*", default=[], metavar="EPISODE",
                   help="with --replay: trace only these of the --episodes episodes (same poses and walks)")
    p.add_argument("--save-traces", default="", metavar="PATH.npz",
                   help="with --replay: also save the traces (evidence, settled, true object) here")
    p.add_argument("--json", default="", help="also write every summary and the per-episode diagnostics here")
    a = p.parse_args()

    import torch

    torch.set_num_threads(1)
    from frugalnet.frames import evaluate as ev
    from frugalnet.studies.frames import FramesConfig

    cfg = FramesConfig(set=a.set, episodes=a.episodes, seed=a.seed)
    cfg.validate()
    names, s = cfg.names(a.set), cfg.setting(a.set)
    s = with_overrides(s, a.lm, a.max_steps)
    if a.policy or a.step:
        from dataclasses import replace

        s = replace(s, policy=a.policy or s.policy, step=a.step or s.step)
    print(f"CPU: {machine_summary()}; one thread; load average at start {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    t0 = time.process_time()
    models = ev.learn(names, s, a.seed)
    print(f"learned {len(names)} objects once each, one pose ({sum(len(m) for m in models)} stored points) in "
          f"{time.process_time() - t0:.1f} CPU s (sampling the meshes included); max steps {s.max_steps}")
    out: dict = {"cpu": machine_summary(), "objects": len(names)}
    if a.replay:
        return replay_grid(names, models, s, a)

    def show(label: str, v: dict) -> None:
        print(f"  {label:18s} accuracy {v['accuracy']:.3f}, median steps {v['median_steps']:.0f}, median ADD-S "
              f"{100 * v['median_add_s']:.2f}% of size, CPU s/episode median {v['median_cpu_s']:.2f} max "
              f"{v['max_cpu_s']:.2f}, wall s median {v['median_wall_s']:.2f}, {v['median_ms_per_step']:.1f} ms/step, "
              f"hypotheses at step 1 {v['median_hypotheses_first']:.0f}, mean {v['median_hypotheses_mean']:.0f}, "
              f"undecided {v['undecided']} (load {os.getloadavg()[0]:.1f})", flush=True)

    if "duplicates" in a.parts:
        duplicates(names, s, a.seed, out)
    main_summary, recs = None, []
    if "main" in a.parts:
        print(f"\n{len(names)} objects, {a.episodes} noisy episodes at uniformly random rotations:")
        recs = ev.run_episodes(names, models, s, a.episodes, 1, a.seed, 10)
        out["one_column"] = main_summary = ev.summarise(recs)
        out["one_column_episodes"] = diag = ev.diagnose(recs)
        show("1 column", main_summary)
        bad = [d for d in diag if d["outcome"] != "correct"]
        print(f"  not decided correctly ({len(bad)}): " + ", ".join(
            f"{d['object']}:{d['outcome']}@{d['steps']}->{d['predicted']} rank {d['true_rank']}" for d in bad))

    widths = (7, 8, 6, 6, 7, 7, 8, 9, 9)
    scaling = sorted(set(c for c in a.scaling if c <= len(names))) if "scaling" in a.parts else []
    if scaling:
        print(f"\nScaling (first n objects; {a.scaling_episodes} episodes each, the full set: the {a.episodes} above)")
        print(row(("objects", "accuracy", "median", "mean", "CPU s", "CPU s", "ms/step", "hyps", "hyps"), widths))
        print(row(("", "", "steps", "steps", "median", "max", "median", "step 1", "mean"), widths))
    out["scaling"] = {}
    for n in scaling:
        full = n == len(names) and main_summary is not None
        v = main_summary if full else ev.scaling(names, (n,), s, a.scaling_episodes, a.seed)[str(n)]
        out["scaling"][str(n)] = v
        print(row((n, f"{v['accuracy']:.3f}", f"{v['median_steps']:.0f}", f"{v['mean_steps']:.1f}",
                   f"{v['median_cpu_s']:.2f}", f"{v['max_cpu_s']:.2f}", f"{v['median_ms_per_step']:.1f}",
                   f"{v['median_hypotheses_first']:.0f}", f"{v['median_hypotheses_mean']:.0f}"), widths), flush=True)

    if a.columns > 1 and "voting" in a.parts:
        print(f"\n{len(names)} objects, the same {a.episodes} episodes with {a.columns} columns voting:")
        from frugalnet.frames.lm_config import VOTING_KNOBS

        vknobs = a.voting_lm if a.voting_lm is not None else [f"{k}={v}" for k, v in VOTING_KNOBS["meshes"].items()]
        sv = with_overrides(s, vknobs, 0)
        print(f"  voting knobs: {' '.join(vknobs) or '(none)'}; stop when {a.min_lms_match} columns are decided")
        vrecs = ev.run_episodes(names, models, sv, a.episodes, a.columns, a.seed, 10,
                                min_lms_match=a.min_lms_match)
        out["voting"], out["voting_episodes"] = ev.summarise(vrecs), ev.diagnose(vrecs)
        out["voting"]["knobs"], out["voting"]["min_lms_match"] = vknobs, a.min_lms_match
        show(f"{a.columns} columns voting", out["voting"])

    if a.views and "baselines" in a.parts and recs:
        curves = ev.baseline_views(names, s, recs, a.views, cfg.view_walks, cfg.baseline_epochs, a.seed)
        out["baseline_views"] = curves
        print(f"\nBaselines on the same sensed points ({cfg.view_walks} walks per view; ours: 1 view, "
              f"{main_summary['accuracy']:.3f})")
        print(row(("views", "PointNet", "PN+aug", "D2+NN"), (6, 9, 9, 9)))
        for v, accs in curves.items():
            print(row((v, f"{accs['pointnet']:.3f}", f"{accs['pointnet_rot_aug']:.3f}", f"{accs['d2_nn']:.3f}"),
                      (6, 9, 9, 9)))
    out["settings"] = {"max_steps": s.max_steps, "lm": {k: v for k, v in vars(s.lm).items()}}
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
