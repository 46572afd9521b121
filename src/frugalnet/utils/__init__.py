"""Small helpers shared across frugalnet: atomic I/O, progress bars, seeding, argument validation."""
from frugalnet.utils.checksum import FileCheckError
from frugalnet.utils.io import (append_jsonl, atomic_torch_save, atomic_write_json, atomic_write_text, load_checkpoint,
                             read_json, read_jsonl)
from frugalnet.utils.progress import progress, set_quiet, is_quiet
from frugalnet.utils.seeding import seed_everything, make_generator
from frugalnet.utils.validation import check_fraction, check_positive_int

__all__ = [
    "atomic_write_json", "atomic_write_text", "atomic_torch_save", "append_jsonl", "read_jsonl", "read_json",
    "load_checkpoint", "FileCheckError",
    "progress", "set_quiet", "is_quiet", "seed_everything", "make_generator",
    "check_fraction", "check_positive_int",
]
