"""Sparse inference benchmark (see frugalnet.bench.sparse_inference): `python benchmarks/sparse_inference.py --quick
--json out.json` prints the side-by-side table and writes a report folder with a plot."""
import sys

from frugalnet.bench.sparse_inference import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
