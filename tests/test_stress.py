"""The heterogeneity stress dataset (MNIST + Fashion-MNIST, 20 classes) and the AUROC check."""
import pytest
import torch

from sbnlib import load_dataset
from sbnlib.assess import domain_auroc
from sbnlib.data import DERIVED, dataset_names

from .test_data import make_idx_layout


@pytest.fixture
def two_domains(tmp_path):
    m = make_idx_layout(tmp_path, "MNIST/raw", n_train=40, n_test=20, seed=1)
    f = make_idx_layout(tmp_path, "FashionMNIST/raw", n_train=40, n_test=20, seed=2)
    return tmp_path, m, f


def test_mix_is_registered_like_the_other_datasets():
    assert "mnist_fmnist_mix" in DERIVED and "mnist_fmnist_mix" in dataset_names()


def test_mix_concatenates_both_domains_with_shifted_labels(two_domains):
    root, m, f = two_domains
    ds = load_dataset("mnist_fmnist_mix", root=root)
    assert ds.x_train.shape == (80, 1, 28, 28) and ds.num_classes == 20
    assert torch.equal(ds.x_train[:40, 0], torch.from_numpy(m["train-images-idx3-ubyte"]))
    assert torch.equal(ds.x_train[40:, 0], torch.from_numpy(f["train-images-idx3-ubyte"]))
    assert ds.y_train[:40].tolist() == m["train-labels-idx1-ubyte"].tolist()
    assert ds.y_train[40:].tolist() == (f["train-labels-idx1-ubyte"].astype(int) + 10).tolist()
    assert ds.classes[0] == "digit 0" and ds.classes[10] == "T-shirt/top"
    assert torch.equal(ds.domain_train, ds.y_train // 10)
    prov = ds.provenance
    assert any(k.startswith("MNIST/") for k in prov["files"]) and any(k.startswith("FashionMNIST/") for k in prov["files"])
    pix = ds.x_train.double() / 255
    assert ds.mean[0] == pytest.approx(pix.mean().item()) and ds.std[0] == pytest.approx(pix.std(correction=0).item())


def test_mix_subsample_is_stratified_and_deterministic(two_domains):
    root, _, _ = two_domains
    a = load_dataset("mnist_fmnist_mix", root=root, n_train=40, seed=3)
    b = load_dataset("mnist_fmnist_mix", root=root, n_train=40, seed=3)
    assert torch.equal(a.x_train, b.x_train) and a.x_train.shape[0] == 40
    assert (a.y_train < 10).sum() == 20  # half from each domain


def test_domain_auroc_separates_known_heterogeneity():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g) + 3.0])
    domain = torch.cat([torch.zeros(200), torch.ones(200)])
    r = domain_auroc(x, domain, 8, "feature_std", n_batches=100)
    assert r["auroc"] > 0.95 and r["score_mean_mixed"] > r["score_mean_pure"]
    same = torch.randn(400, 16, generator=g)
    assert abs(domain_auroc(same, domain, 8, "feature_std", n_batches=200)["auroc"] - 0.5) < 0.1
    with pytest.raises(ValueError, match="at least 2 samples"):
        domain_auroc(x, domain, 1)


def test_ordinary_datasets_have_no_domains(two_domains):
    root, _, _ = two_domains
    assert load_dataset("mnist", root=root).domain_train is None
