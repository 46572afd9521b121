"""Full 3D recognition benchmark with per-episode timing on one core.

Each object of the set is learned once at one pose; then `--episodes` episodes at uniformly random rotations and
translations, with sensor noise, are recognised and timed one by one (CPU seconds of this process, one thread).

    python benchmarks/frames_3d.py --set distinct --episodes 100
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")          # one core: set before numpy loads its thread pools
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from frugalnet.frames import evaluate as ev  # noqa: E402
from frugalnet.studies.frames import FramesConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--set", default="distinct", choices=["distinct", "similar"])
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--columns", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-deg", type=float, default=2.0)
    p.add_argument("--policy", default="random")
    p.add_argument("--json", default="", help="also write the per-episode records here")
    a = p.parse_args()

    cfg = FramesConfig(episodes=a.episodes, columns=a.columns, noise_deg=a.noise_deg, policy=a.policy, seed=a.seed)
    cfg.validate()
    names = cfg.names(a.set)
    t0 = time.process_time()
    setting = cfg.setting(a.set)
    models = ev.learn(names, setting, a.seed)
    print(f"learned {len(names)} objects once each ({sum(len(m) for m in models)} stored points) in "
          f"{time.process_time() - t0:.1f} CPU s (sampling the shapes included)")
    recs = ev.run_episodes(names, models, setting, a.episodes, a.columns, a.seed, 10)
    print(f"{'ep':>3} {'object':>10} {'answer':>10} {'steps':>5} {'ADD-S %':>8} {'CPU s':>6} {'wall s':>6}")
    for i, r in enumerate(recs):
        ans = names[r["predicted"]] if r["predicted"] >= 0 else "-"
        adds = f"{100 * r['add_s']:.2f}" if r["add_s"] is not None else "-"
        print(f"{i:>3} {r['object']:>10} {ans:>10} {r['steps']:>5} {adds:>8} {r['cpu_s']:>6.2f} {r['wall_s']:>6.2f}")
    s = ev.summarise(recs)
    print(f"\n{a.set}, {a.columns} column(s), {a.episodes} episodes, noise {a.noise_deg} deg: accuracy "
          f"{s['accuracy']:.3f}, median steps {s['median_steps']:.0f}, median ADD-S {100 * s['median_add_s']:.2f}% "
          f"of object size (90th pct {100 * s['p90_add_s']:.2f}%), CPU s/episode median {s['median_cpu_s']:.3f} "
          f"max {s['max_cpu_s']:.3f}, undecided {s['undecided']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": s, "episodes": [{k: v for k, v in r.items() if k != "sensed"} for r in recs]}, f)


if __name__ == "__main__":
    main()
