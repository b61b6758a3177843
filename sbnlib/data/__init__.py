"""Datasets: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 from their standard on-disk layouts.

:func:`load_dataset` reads the files that torchvision's downloaders write, with readers of our own
(IDX parsed with numpy, CIFAR pickles through a restricted unpickler), and returns a
:class:`Dataset`: uint8 images ``(N, C, H, W)``, int64 labels, class names, per-channel
normalisation constants and a JSON-serialisable ``provenance`` record.

Where the files live (:func:`resolve_root`): the ``root`` argument, else the environment variable
``SBN_DATA_ROOT``, else ``./data``. Below the root, the layouts are torchvision's:

* ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (or the same names + ``.gz``),
  likewise ``FashionMNIST/raw/``;
* ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``;
* ``cifar-100-python/{train,test,meta}``.

Provenance. The md5 of every file read is recorded and compared with torchvision's reference
checksums (taken from ``torchvision.datasets.*``, never typed here):

* all files match: ``status="verified"``, ``verified=True``;
* some file differs (a re-packed or mirrored copy): the data still loads, but
  ``status="unverified copy"``, ``verified=False``, and a :class:`DataWarning` is issued and
  recorded in ``provenance["warnings"]``; results must be labelled as coming from that copy;
* uncompressed IDX files (torchvision only knows the md5s of the ``.gz`` archives):
  ``status="unchecked (no reference md5 for uncompressed IDX)"``, ``verified=False``. When the
  ``.gz`` archives are present they are the files read (and checked), so ``verified`` always
  describes the bytes actually loaded.

Subsets (``n_train`` / ``n_test``) are stratified and seeded (:func:`stratified_subsample`);
asking for more images than a copy holds uses all of them and says so in the provenance.

The parts, one job each: :mod:`.registry` (specifications, :class:`Dataset`, errors),
:mod:`.files` (data root, expected files, download), :mod:`.provenance` (checksums),
:mod:`.safe_pickle` (restricted unpickler), :mod:`.parsers` (IDX and CIFAR readers),
:mod:`.subsample` (stratified subsets, validation split), :mod:`.loader` (:func:`load_dataset`,
derived datasets). The batch plan is part of the core: :mod:`sbnlib.batches`.
"""
from .files import resolve_root
from .loader import load_dataset, mnist_fmnist_mix
from .provenance import file_md5, reference_md5s
from .registry import DATASETS, DERIVED, DataError, Dataset, DatasetSpec, DataWarning, dataset_names, register_derived
from .safe_pickle import UnsafePickleError, safe_pickle_load
from .subsample import stratified_subsample, validation_split

__all__ = ["DATASETS", "DatasetSpec", "Dataset", "DataError", "DataWarning", "load_dataset", "validation_split",
           "resolve_root", "stratified_subsample", "safe_pickle_load", "UnsafePickleError", "reference_md5s",
           "file_md5", "DERIVED", "register_derived", "dataset_names", "mnist_fmnist_mix"]
