"""Datasets the search spaces are scored for: class count and input resolution.

Proxies are data-free by default, so a dataset here only fixes the network's output width and the
input shape; real images are never loaded during search.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dataset:
    """A classification task as the proxies see it."""

    name: str
    num_classes: int
    resolution: int
    channels: int = 3


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("cifar10", 10, 32),
        Dataset("cifar100", 100, 32),
        Dataset("ImageNet16-120", 120, 16),
        Dataset("imagenet", 1000, 224),
    )
}


def get_dataset(name: str) -> Dataset:
    """Return the dataset called ``name`` (case-insensitive), or raise ``ValueError`` naming the choices."""
    for key, dataset in DATASETS.items():
        if key.lower() == name.lower():
            return dataset
    raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
