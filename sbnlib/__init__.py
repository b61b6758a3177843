"""sbnlib: selective batch normalisation, a reproducible replication suite.

Decide before training, from the feature heterogeneity of each training batch, whether that batch
goes through Batch Normalization. See README.md and ../shared/PAPER.md.
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
