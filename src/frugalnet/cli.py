"""The `frugalnet` command: run, resume and list studies; the demo."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from frugalnet.experiment.registry import StudyConfig, available_studies, get_study


def _field_parser_kwargs(f: dataclasses.Field, default) -> dict:
    help_text = f.metadata.get("help", "")
    hint = f"{help_text} (default: {default!r})".strip()
    if isinstance(default, bool):
        return {"action": argparse.BooleanOptionalAction, "default": default, "help": hint}
    if isinstance(default, tuple):
        elem = type(default[0]) if default else str
        return {"nargs": "+", "type": elem, "default": default, "help": hint}
    if isinstance(default, (int, float, str)):
        return {"type": type(default), "default": default, "help": hint}
    if default is None:
        return {"type": str, "default": None, "help": hint}
    return {"type": str, "default": default, "help": hint}


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type[StudyConfig]) -> None:
    """One --option per config field, typed from its default."""
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            continue
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **_field_parser_kwargs(f, default))


def config_from_args(config_cls: type[StudyConfig], args: argparse.Namespace) -> StudyConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls) if hasattr(args, f.name)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return config_cls(**values)


def _print_summary(result) -> None:
    print(f"\nresults: {result.dir / 'results.json'}")
    print(f"report:  {result.dir / 'report.md'}  (and report.html)")


def cmd_list(args: argparse.Namespace) -> int:
    from frugalnet.data import available_datasets

    print("studies:")
    for name, spec in available_studies().items():
        print(f"  {name:20s} {spec.description}")
    print("data sets:")
    for name, desc in available_datasets().items():
        print(f"  {name:20s} {desc}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from frugalnet.experiment.runner import run_study

    spec = get_study(args.study)
    config = config_from_args(spec.config_cls, args)
    result = run_study(spec, config)
    _print_summary(result)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from frugalnet.experiment.runner import resume_run

    overrides = {"quiet": True} if args.quiet else {}
    result = resume_run(args.run_dir, **overrides)
    _print_summary(result)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from frugalnet.studies.sparse_vs_dense import demo_config, print_headline
    from frugalnet.experiment.runner import run_study

    config = demo_config(tiny=args.tiny, seeds=args.seeds, runs_dir=args.runs_dir, quiet=args.quiet)
    result = run_study("sparse-vs-dense", config)
    print_headline(result.results)
    _print_summary(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frugalnet", description="Deep learning that costs less energy, and proves it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list studies and data sets")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("demo", help="a short sparse-vs-dense study on the embedded MNIST digits (a few minutes)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default: 3)")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (tests use it)")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    sub.add_parser("bench", add_help=False,
                   help="sparse-inference benchmark: layers and whole models, engine vs PyTorch, torch.compile, "
                        "ONNX Runtime, OpenVINO (--help)")

    sub.add_parser("energy", add_help=False,
                   help="meter any command: frugalnet energy [--cpu-watts W] [--country XX] [--intensity G] -- CMD ...")

    p = sub.add_parser("run", help="run a study: frugalnet run STUDY --help lists its options")
    study_sub = p.add_subparsers(dest="study", required=True, metavar="STUDY")
    for name, spec in available_studies().items():
        sp = study_sub.add_parser(name, help=spec.description, description=spec.description)
        add_config_arguments(sp, spec.config_cls)
        sp.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue an interrupted run from its folder")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_resume)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["energy"]:   # its own parser: everything after -- belongs to the metered command
        from frugalnet.energy.command import main as energy_main

        return energy_main(argv[1:])
    if argv[:1] == ["bench"]:    # the benchmark's own parser
        from frugalnet.bench.sparse_inference import main as bench_main

        return bench_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"frugalnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nfrugalnet: interrupted; continue with `frugalnet resume <run folder>`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
