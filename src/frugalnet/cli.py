"""The `frugalnet` command: run, resume and list studies; the demo."""
from __future__ import annotations

import argparse
import dataclasses
import os
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
    result = resume_run(args.run_dir, allow_changed_config=args.force, **overrides)
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


class _StrictParser(argparse.ArgumentParser):
    """An ArgumentParser that takes no abbreviated options."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frugalnet", description="Deep learning that costs less energy, and proves it.",
                                     allow_abbrev=False)
    # no abbreviations anywhere: `--epoch` must not be taken as `--epochs`
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_StrictParser)

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
    study_sub = p.add_subparsers(dest="study", required=True, metavar="STUDY", parser_class=_StrictParser)
    for name, spec in available_studies().items():
        sp = study_sub.add_parser(name, help=spec.description, description=spec.description)
        add_config_arguments(sp, spec.config_cls)
        sp.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue an interrupted run from its folder")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--force", action="store_true",
                   help="accept a config.json changed since the run started (results may then mix two configs)")
    p.set_defaults(func=cmd_resume)
    return parser


def _restart_with_passive_openmp(argv: list[str]) -> None:
    """Re-run the command once with OMP_WAIT_POLICY=PASSIVE when the user has not chosen a policy.

    Why: PyTorch's OpenMP threads spin for milliseconds after every op by default. Between ops they take the cores
    from our numba kernels and inflate the CPU time the energy meter reads (measured on 2 cores: a demo training
    step 316 ms of CPU time dense / 486 ms sparse with spinning threads, 36 / 35 ms passive). OpenMP reads the
    policy once, when torch loads, which `import frugalnet` has already done here, so the only way to apply it is
    to start again. `frugalnet energy` is left alone, so the metered command sees the user's environment. Set
    OMP_WAIT_POLICY yourself (e.g. ACTIVE) or FRUGALNET_KEEP_OPENMP=1 to keep the current process.
    """
    if (os.name != "posix" or argv[:1] == ["energy"] or "OMP_WAIT_POLICY" in os.environ or os.environ.get("FRUGALNET_KEEP_OPENMP")
            or not sys.executable):
        return
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "frugalnet", *argv], env)


def main(argv: list[str] | None = None) -> int:
    if argv is None:   # launched as a command (not called from Python): see _restart_with_passive_openmp
        _restart_with_passive_openmp(sys.argv[1:])
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
    except KeyboardInterrupt:
        print("\nfrugalnet: interrupted; continue with `frugalnet resume <run folder>`", file=sys.stderr)
        return 130
    except Exception as exc:  # every error becomes one line; FRUGALNET_TRACEBACK=1 shows the traceback
        if os.environ.get("FRUGALNET_TRACEBACK"):
            raise
        print("frugalnet: error: " + " ".join(error_message(exc).split()), file=sys.stderr)
        return 2 if isinstance(exc, (ValueError, TypeError, OSError)) else 1


def error_message(exc: BaseException) -> str:
    """One line for an error: ours name the file or option already; OS errors get their file; anything else is
    labelled as unexpected."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}; check the path and its permissions"
    if isinstance(exc, (ValueError, TypeError, OSError)):
        return str(exc) or type(exc).__name__
    return (f"unexpected {type(exc).__name__}: {exc} (this is a frugalnet bug; rerun with FRUGALNET_TRACEBACK=1 "
            "and report the traceback)")


if __name__ == "__main__":
    sys.exit(main())
