"""Data: embedded sets that work offline, loaders for local copies of the standard ones, the paper's noise."""
from frugalnet.data import embedded, local  # noqa: F401  (register the loaders)
from frugalnet.data.core import DataBundle, Split, available_datasets, load, register_dataset, stratified_split
from frugalnet.data.embedded import load_digits, load_mnist1d, load_mnist_5k
from frugalnet.data.local import (load_cifar10, load_fashion_mnist, load_mnist, load_speech_commands, log_mel_32x32,
                                  read_idx)
from frugalnet.data.noise import add_pixel_noise

__all__ = ["DataBundle", "Split", "available_datasets", "load", "register_dataset", "stratified_split",
           "load_mnist_5k", "load_digits", "load_mnist1d", "load_mnist", "load_fashion_mnist", "load_cifar10",
           "load_speech_commands", "log_mel_32x32", "read_idx", "add_pixel_noise"]
