"""`python -m frugalnet ...` (what torchrun launches): the same as the `frugalnet` command."""
import sys

from frugalnet.cli import main

sys.exit(main())
