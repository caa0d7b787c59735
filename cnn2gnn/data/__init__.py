"""The data layer: on-disk format readers (IDX, CIFAR pickles, STL-10 binaries, ImageFolder), datasets loaded into
memory as uint8 tensors with seeded stratified splits, and an in-memory batch iterator with vectorised augmentation.
"""

from cnn2gnn.data.datasets import DATASETS, DataBundle, Split, load_dataset, resolve_root
from cnn2gnn.data.formats import read_cifar, read_idx, read_image_folder, read_stl10
from cnn2gnn.data.loader import Augment, Batch, BatchIterator, normalize

__all__ = [
    "DATASETS",
    "Augment",
    "Batch",
    "BatchIterator",
    "DataBundle",
    "Split",
    "load_dataset",
    "normalize",
    "read_cifar",
    "read_idx",
    "read_image_folder",
    "read_stl10",
    "resolve_root",
]
