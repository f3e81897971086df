"""Datasets: the embedded default (digits), and local CIFAR-10 / image folders. Never downloads."""

from haq.data.catalog import DATASETS, load_dataset
from haq.data.splits import DataSplits, iterate_batches, make_loader, stratified_split

__all__ = ["DATASETS", "DataSplits", "iterate_batches", "load_dataset", "make_loader", "stratified_split"]
