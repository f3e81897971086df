"""Datasets: the embedded default (digits), and local CIFAR-10 / image folders. Never downloads."""

from haq.data.catalog import DATASETS, DatasetSpec, check_shape, dataset_classes, dataset_spec, load_dataset
from haq.data.space import IMAGENET_MEAN, IMAGENET_STD, PIXELS, InputRange
from haq.data.splits import DataSplits, TrainBatches, iterate_batches, make_loader, stratified_split

__all__ = [
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PIXELS",
    "DataSplits",
    "DatasetSpec",
    "InputRange",
    "TrainBatches",
    "check_shape",
    "dataset_classes",
    "dataset_spec",
    "iterate_batches",
    "load_dataset",
    "make_loader",
    "stratified_split",
]
