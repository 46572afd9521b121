"""The 50-task continual-learning benchmark (not a CI test): every strategy on 50 permuted tasks of the embedded
MNIST digits, in one run, with the same table as the 10-task study.

    python benchmarks/continual_50.py                      # 50 tasks, all strategies (long: see the run's timing)
    python benchmarks/continual_50.py --tasks 20 --strategies si dendrites-si joint
    python benchmarks/continual_50.py --resume runs/continual/<time>-bench50   # continue an interrupted run

Cheaper variants that fit a laptop (with the study's current defaults, 2 cores, OMP_NUM_THREADS=1):

    python benchmarks/continual_50.py --strategies dendrites-si joint --num-segments 10 --eval-every 10
        # about 16 minutes: 10 segments shared by the 50 tasks instead of one segment per task
    python benchmarks/continual_50.py --strategies finetune si dendrites-si joint --epochs 1 --num-segments 10 \
        --eval-every 10                                   # about 7 minutes

Extra `--option value` pairs are passed to the study config (as in `frugalnet run continual`). Full rows of the
accuracy matrix are measured every 5 tasks (`--eval-every`), the diagonal and the last row always. Prints the table
and whether dendrites + SI reach 0.9 x joint training.
"""
from __future__ import annotations

import argparse
import sys

from frugalnet.studies import resume_run, run_study
from frugalnet.studies.continual import ContinualConfig


def _config(argv: list[str]) -> ContinualConfig:
    from frugalnet.cli import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, ContinualConfig)
    parser.set_defaults(tasks=50, eval_every=5, name="bench50")
    return config_from_args(ContinualConfig, parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--resume"]:
        if len(argv) != 2:
            raise SystemExit("usage: continual_50.py --resume RUN_FOLDER")
        result = resume_run(argv[1])
    else:
        result = run_study("continual", _config(argv))
    res = result.results["strategies"]
    joint = res.get("joint", {}).get("average_accuracy")
    print(f"{'strategy':14s} {'avg acc':>8s} {'x joint':>8s} {'forgetting':>10s} {'context':>8s} {'train s':>8s}")
    for name, r in res.items():
        ratio = r["average_accuracy"] / joint if joint else float("nan")
        fg = r["forgetting"] if r["forgetting"] is not None else float("nan")
        cx = r["context_acc"] if r["context_acc"] is not None else float("nan")
        print(f"{name:14s} {r['average_accuracy']:8.4f} {ratio:8.3f} {fg:10.4f} {cx:8.3f} {r['train_seconds']:8.1f}")
    for c in result.results["checks"]:
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {c['check']}")
    print(f"report: {result.dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
