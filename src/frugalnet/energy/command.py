"""`frugalnet energy [options] -- COMMAND ...`: run a command under a Meter and print its energy table.

The child's CPU time is read from the kernel's accounting of waited-for children, so a Python script, a shell
pipeline or `torchrun` are all counted; its exit code is returned. Without power counters the energy is an estimate
and every line of the table says so.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

from frugalnet.energy.meter import CPU_WATTS_SOURCE, Meter, format_table
from frugalnet.utils.io import atomic_write_json


def build_parser(prog: str = "frugalnet energy") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Meter the energy and carbon of any command.",
                                usage=f"{prog} [options] -- COMMAND [ARGS ...]", allow_abbrev=False)
    p.add_argument("--cpu-watts", type=float, default=None,
                   help=f"power per busy core for the estimate (default 12; {CPU_WATTS_SOURCE})")
    p.add_argument("--country", default=None, help="ISO 3166 code for the grid intensity (default: world average)")
    p.add_argument("--intensity", type=float, default=None, help="grid intensity in g CO2e/kWh (overrides --country)")
    p.add_argument("--pue", type=float, default=None, help="data-centre PUE, >= 1 (default 1.0)")
    p.add_argument("--codecarbon", action="store_true", help="also report CodeCarbon's figures (energy extra)")
    p.add_argument("--json", dest="json_path", default=None, help="also write the result as JSON to this file")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="the command to run, after --")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command under a Meter, print the table to stderr, return the command's exit code (2 on bad use)."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        parser.print_usage(sys.stderr)
        print("frugalnet energy: error: no command given after --", file=sys.stderr)
        return 2
    try:
        meter = Meter(cpu_watts=args.cpu_watts, country=args.country, intensity=args.intensity, pue=args.pue,
                      use_codecarbon=args.codecarbon)
    except ValueError as exc:
        print(f"frugalnet energy: error: {exc}", file=sys.stderr)
        return 2
    try:
        with meter:
            code = subprocess.call(cmd)
    except FileNotFoundError:
        print(f"frugalnet energy: error: command not found: {cmd[0]}", file=sys.stderr)
        return 127
    result = meter.result
    assert result is not None
    print(f"\nfrugalnet energy: {' '.join(cmd)}  (exit code {code}; energy {result.label})", file=sys.stderr)
    print(format_table(result), file=sys.stderr)
    if args.json_path:
        atomic_write_json(args.json_path, {"command": cmd, "exit_code": code, **result.to_dict()})
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
