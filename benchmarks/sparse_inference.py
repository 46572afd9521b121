"""Sparse inference benchmark (see frugalnet.engine.benchmark): `python benchmarks/sparse_inference.py --quick
--json out.json` prints the side-by-side table and writes a report folder with a plot."""
import sys

from frugalnet.engine.benchmark import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
