"""sbnlib: selective batch normalisation, a reproducible replication suite.

Decide before training, from the feature heterogeneity of each training batch, whether that batch
goes through Batch Normalization. See README.md and ../shared/PAPER.md.

The layout shows the design. The core, at the top of the package (torch, numpy, torchvision for
the dataset loaders, tqdm): :mod:`sbnlib.scoring` (how heterogeneous a batch is),
:mod:`sbnlib.threshold` (which batches need BN), :mod:`sbnlib.layers` (the selective BN layers),
:mod:`sbnlib.batches` (the batch plan), :mod:`sbnlib.norms` (the normalisation registry) and
:mod:`sbnlib.checks` (argument validation). Then the parts: :mod:`sbnlib.data` (the benchmark
datasets), :mod:`sbnlib.experiments` (training, sweeps, statistics, tables, report, notebooks'
pipelines) and :mod:`sbnlib.assess.core` (your own data: readers, streaming, evidence, advice, HTML);
:mod:`sbnlib.io`, :mod:`sbnlib.provenance` and :mod:`sbnlib.cli` serve them all.
"""
__version__ = "0.1.0"

from .data import load_dataset  # noqa: E402
from .layers import (  # noqa: E402
    SelectiveBatchNorm1d,
    SelectiveBatchNorm2d,
    convert_to_selective,
    selective_bn,
)
from .scoring import score_batches  # noqa: E402
from .threshold import classify_batches, fit_threshold  # noqa: E402

__all__ = [
    "score_batches",
    "fit_threshold",
    "classify_batches",
    "SelectiveBatchNorm1d",
    "SelectiveBatchNorm2d",
    "selective_bn",
    "convert_to_selective",
    "load_dataset",
]
