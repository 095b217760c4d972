"""The spherical baseline `deepsphere`: HEALPix graph, Laplacian, Chebyshev filters, rotation equivariance, pooling,
the NESTED layout, and training / predicting / loading through the shared learned-method machinery."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import healpy as hp
import numpy as np
import pytest
import torch
from numpy.polynomial import chebyshev

from cosmobench.cmb.dataset import CMBDataset
from cosmobench.cmb.methods import get_method, is_learned, method_defaults
from cosmobench.cmb.methods.deepsphere import DeepSphereUNet, NestedLayout
from cosmobench.cmb.methods.unet_fullsky import FullSkyUNet
from cosmobench.cmb.separate import model_dir
from cosmobench.cmb.sphere import (
    ChebConv,
    SparseOperator,
    SphereUNet,
    edge_weights,
    laplacian,
    neighbour_edges,
    pool,
    unpool,
)
from cosmobench.core.io import array_sha256, read_healpix
from cosmobench.core.seeds import rng

from .conftest import TINY


def ring_shift(nside: int, quarter: bool = True) -> np.ndarray:
    """RING pixel (ring, j) -> (ring, j + n_ring / 4): the grid's rotation by +90 degrees about the polar axis;
    ``quarter=False``: (ring, j) -> (ring, j + 1), a different angle on every ring size (not a symmetry)."""
    rings = np.arange(1, 4 * nside)
    per_ring = 4 * np.minimum(np.minimum(rings, nside), 4 * nside - rings)
    starts = np.concatenate([[0], np.cumsum(per_ring)])
    pix = np.arange(12 * nside**2)
    ring = np.searchsorted(starts, pix, side="right") - 1
    step = per_ring[ring] // 4 if quarter else 1
    return starts[ring] + (pix - starts[ring] + step) % per_ring[ring]


def nest_permutation(nside: int, ring_perm: np.ndarray) -> np.ndarray:
    """The NESTED form of a RING pixel permutation: NESTED pixel i goes to NESTED pixel out[i]."""
    return hp.ring2nest(nside, ring_perm[hp.nest2ring(nside, np.arange(12 * nside**2))])


def rotate(x: torch.Tensor, perm: np.ndarray) -> torch.Tensor:
    """Move the value of pixel i (last axis) to pixel perm[i]."""
    out = torch.empty_like(x)
    out[..., torch.from_numpy(perm)] = x
    return out


# ------------------------------------------------------------------------------------------------ the graph
def test_the_rotation_is_a_symmetry_of_the_grid():
    """ring_rotation is exactly phi -> phi + pi/2 at fixed theta (checked against healpy's pixel centres)."""
    nside = 8
    perm = ring_shift(nside)
    assert np.array_equal(np.sort(perm), np.arange(12 * nside**2))
    theta, phi = hp.pix2ang(nside, np.arange(12 * nside**2))
    theta_r, phi_r = hp.pix2ang(nside, perm)
    np.testing.assert_allclose(theta_r, theta, atol=1e-14)
    np.testing.assert_allclose(np.mod(phi_r - phi, 2 * np.pi), np.pi / 2, atol=1e-12)


@pytest.mark.parametrize("nside", [1, 4, 16])
def test_edges_are_healpix_neighbours_with_gaussian_weights(nside):
    rows, cols = neighbour_edges(nside)
    npix = 12 * nside**2
    assert len(rows) == 8 * npix - 24  # 7 neighbours at the 24 pixels where three faces meet
    assert np.all(rows != cols)
    pairs = set(zip(rows.tolist(), cols.tolist()))
    assert len(pairs) == len(rows) and all((c, r) in pairs for r, c in pairs)  # symmetric, no duplicates
    ring_neighbours = hp.get_all_neighbours(nside, hp.nest2ring(nside, rows), nest=False)
    assert np.all(np.any(ring_neighbours == hp.nest2ring(nside, cols), axis=0))
    # weights: exp(-chord^2 / (2 <chord^2>)), chord from healpy's angular distance
    ang = hp.rotator.angdist(hp.pix2ang(nside, rows, nest=True), hp.pix2ang(nside, cols, nest=True))
    chord2 = 2 - 2 * np.cos(ang)
    np.testing.assert_allclose(edge_weights(nside), np.exp(-chord2 / (2 * chord2.mean())), rtol=1e-10)


@pytest.mark.parametrize("nside", [1, 4, 8])
def test_laplacian_is_normalised_symmetric_psd(nside):
    lap = laplacian(nside).to_dense().numpy()
    npix = 12 * nside**2
    assert lap.shape == (npix, npix) and np.array_equal(lap, lap.T)
    np.testing.assert_array_equal(np.diag(lap), 1.0)
    eig = np.linalg.eigvalsh(lap)
    assert abs(eig[0]) < 1e-12 and eig[1] > 1e-3  # one connected component
    assert 1.3 < eig[-1] < 2.0  # within [0, 2]; 1.38 (nside 1) to 1.45 (nside 8): not bipartite
    rows, _ = neighbour_edges(nside)
    degree = np.bincount(rows, weights=edge_weights(nside), minlength=npix)
    np.testing.assert_allclose(lap @ np.sqrt(degree), 0.0, atol=1e-13)  # the null space is D^1/2 1
    rescaled = laplacian(nside, rescaled=True).to_dense().numpy()
    np.testing.assert_allclose(rescaled, lap - np.eye(npix), atol=1e-15)


def test_chebconv_is_the_chebyshev_polynomial_of_the_laplacian():
    """ChebConv with K terms = U diag(sum_k c_k T_k(lambda - 1)) U^T x, from the dense eigendecomposition."""
    nside, k = 4, 4
    lap = laplacian(nside).to_dense().numpy()
    eig, vec = np.linalg.eigh(lap)
    conv = ChebConv(2, 3, k).double()
    g = rng(0, "chebconv")
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(g.standard_normal((k, 2, 3))))
        conv.bias.copy_(torch.from_numpy(g.standard_normal(3)))
    x = g.standard_normal((12 * nside**2, 5, 2))
    out = conv(torch.from_numpy(x), SparseOperator(laplacian(nside, rescaled=True)).double()).detach().numpy()
    w = conv.weight.detach().numpy()
    expected = np.zeros((12 * nside**2, 5, 3)) + conv.bias.detach().numpy()
    for i in range(2):
        for o in range(3):
            response = chebyshev.chebval(eig - 1, w[:, i, o])
            expected[..., o] += vec @ (response[:, None] * (vec.T @ x[..., i]))
    np.testing.assert_allclose(out, expected, atol=1e-11)


def test_sparse_product_gradient():
    op = SparseOperator(laplacian(2, rescaled=True)).double()
    x = torch.from_numpy(rng(0, "grad").standard_normal((48, 3))).requires_grad_()
    assert torch.autograd.gradcheck(op, (x,))


# --------------------------------------------------------------------------------- equivariance and pooling
def test_filtering_commutes_with_the_90_degree_rotation():
    """Filter-then-rotate == rotate-then-filter to float64 round-off, for one ChebConv and the whole UNet (pooling
    and unpooling included); a one-pixel shift along each ring, not a symmetry of the grid, does not commute."""
    nside = 8
    perm = nest_permutation(nside, ring_shift(nside))
    lap = laplacian(nside).to_dense()
    np.testing.assert_allclose(lap[perm][:, perm], lap, atol=1e-14)  # L(rotated) = L: invariant graph

    g = rng(0, "equivariance")
    x = torch.from_numpy(g.standard_normal((2, 3, 1, 12 * nside**2)))
    net = SphereUNet(3, nside, [4, 6, 8, 8], k=3).double().eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.copy_(torch.from_numpy(0.1 * g.standard_normal(module.num_features)))
                module.running_var.copy_(torch.from_numpy(g.uniform(0.5, 2, module.num_features)))
        y = net(x)
        assert y.shape == (2, 1, 1, 12 * nside**2) and y.std() > 0.1
        np.testing.assert_allclose(net(rotate(x, perm)), rotate(y, perm), atol=1e-12)

        conv, op = ChebConv(3, 2, 5).double(), net.laplacians[0]
        h = x[:, :, 0].permute(2, 0, 1)  # (V, B, C)
        np.testing.assert_allclose(conv(h[perm.argsort()], op), conv(h, op)[perm.argsort()], atol=1e-12)

        bad = nest_permutation(nside, ring_shift(nside, quarter=False))
        assert torch.max(torch.abs(net(rotate(x, bad)) - rotate(y, bad))) > 0.1 * torch.max(torch.abs(y))


def test_pooling_is_the_nested_children_mean_and_unpooling_repeats():
    nside = 8
    g = rng(0, "pool")
    x = torch.from_numpy(g.integers(-64, 64, (12 * nside**2, 2, 3)) / 8.0)  # dyadic: sums are exact
    coarse = pool(x)
    assert coarse.shape == (12 * (nside // 2) ** 2, 2, 3) and unpool(coarse).shape == x.shape
    assert torch.equal(pool(unpool(x)), x)
    assert torch.equal(unpool(coarse)[4 * 7 + 2], coarse[7])  # children 28..31 of pixel 7
    m = g.standard_normal(12 * nside**2)
    expected = hp.ud_grade(m, nside // 2, order_in="NESTED", order_out="NESTED")
    np.testing.assert_allclose(pool(torch.from_numpy(m)).numpy(), expected, rtol=1e-13)
    with pytest.raises(ValueError, match="nside >= 16"):
        SphereUNet(3, 8, [4, 4, 4, 4, 4])


# --------------------------------------------------------------------------------------------- the layout
@pytest.mark.parametrize("nside", [2, 16])
def test_nested_layout_round_trip_is_exact(nside):
    layout = NestedLayout(nside)
    npix = 12 * nside**2
    maps = rng(0, "layout", nside).standard_normal((3, npix)).astype(np.float32)  # any number of channels
    images = layout.images(maps)
    assert images.shape == (1, 3, 1, npix) and layout.image_shape == layout.target_shape == (1, npix)
    for c in range(3):
        np.testing.assert_array_equal(images[0, c, 0], hp.reorder(maps[c], r2n=True))
    np.testing.assert_array_equal(layout.to_map(images), maps)
    assert torch.equal(layout.to_map(layout.images(torch.from_numpy(maps))), torch.from_numpy(maps))
    assert layout.describe() == {"kind": "nested", "nside": nside} and layout.images_per_map == 1
    with pytest.raises(ValueError, match="expected images"):
        layout.to_map(images[..., :-1])


# ------------------------------------------------------------------------------------------ the method
@dataclasses.dataclass(frozen=True)
class ToyChannel:
    band: str
    fwhm_arcmin: float
    fields: str


class LinearToy:
    """Duck-typed CMBDataset at nside 8, per field (I, or I, Q, U): channel a = s + f, b = s + 2 f (s, f white
    Gaussian, std 1 and 3 uK), target s = 2 a - b, so the identity (predicting a) leaves f (3 uK rms) and zero
    leaves s (1 uK rms)."""

    bands = ["a", "b"]
    nside = 8

    def __init__(self, root: Path, splits: dict[str, int], fields: str = "I"):
        self.root, self.splits, self.fields = root, splits, fields
        self.channels = [ToyChannel(b, 0.0, fields) for b in self.bands]

    def sim_indices(self, split):
        return list(range(self.splits[split]))

    def _fields(self, split, i):
        g = rng(0, "toy", split, int(i))
        shape = (len(self.fields), 12 * self.nside**2)
        return g.standard_normal(shape), 3 * g.standard_normal(shape)

    def load_obs(self, split, i, bands=None):
        s, f = self._fields(split, i)
        obs = {"a": s + f, "b": s + 2 * f}
        return {b: obs[b] for b in (bands or self.bands)}

    def load_target(self, split, i):
        return self._fields(split, i)[0]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepsphere")
    data = LinearToy(root / "data", {"Train": 16, "Valid": 2})
    settings = dict(bands=["a", "b"], levels=2, base_channels=8, batch_size=2, lr=1e-2, epochs=30)
    method = DeepSphereUNet(**settings, progress=False, device="cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as every test runs (tests/conftest.py); a module fixture is set up before that
    try:
        facts = method.fit(data, root / "run")
    finally:
        torch.set_num_threads(before)
    return data, method, facts, root / "run"


def rms(a) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


def test_learns_a_linear_combination_and_beats_the_identity(toy_run):
    data, method, facts, _ = toy_run
    assert facts["n_train_maps"] == 16 and facts["n_params"] > 1000 and facts["seconds"] > 0
    # the record names what its float32 bits depend on (core.runtime.compute_context)
    assert facts["threads"] == torch.get_num_threads() == 1 and facts["device"] == "cpu"
    assert facts["cpu_capability"] == torch.backends.cpu.get_cpu_capability() != ""
    # and the digest of the arrays it read, train and valid (inputs, then targets)
    cache = Path(toy_run[3]) / "cache"
    arrays = {s: [np.load(cache / s / f"{k}.npy") for k in ("inputs", "targets")] for s in ("Train", "Valid")}
    assert facts["data_sha256"] == {"train": array_sha256(*arrays["Train"]), "valid": array_sha256(*arrays["Valid"])}
    history = np.loadtxt(Path(toy_run[3]) / "train_log.csv", delimiter=",", skiprows=1)
    assert history[-1, 1] < 0.1 * history[0, 1]
    for i in data.sim_indices("Valid"):
        obs, truth = data.load_obs("Valid", i), data.load_target("Valid", i)[0]
        pred = method.predict(obs, data.channels)
        assert pred.shape == truth.shape and pred.dtype == np.float64
        identity, zero = rms(obs["a"][0] - truth), rms(truth)
        assert identity > 2.5 and 0.8 < zero < 1.2
        assert rms(pred - truth) < 0.1 * zero < 0.04 * identity  # measured: 0.04-0.05 uK


def test_iqu_fields_come_through_the_shared_machinery(tmp_path):
    """fields="IQU": the layout carries the 6 input planes and 3 target fields, the prediction is (3, npix)."""
    data = LinearToy(tmp_path / "data", {"Train": 16, "Valid": 1}, fields="IQU")
    settings = dict(bands=["a", "b"], levels=2, base_channels=8, batch_size=2, lr=1e-2, epochs=60, fields="IQU")
    method = DeepSphereUNet(**settings, progress=False, device="cpu")
    method.fit(data, tmp_path / "run")
    obs, truth = data.load_obs("Valid", 0), data.load_target("Valid", 0)
    pred = method.predict(obs, data.channels)
    assert pred.shape == truth.shape == (3, 12 * 8**2)
    for f in range(3):
        assert rms(pred[f] - truth[f]) < 0.15 * rms(truth[f])  # measured: 0.04-0.06 against 1


def test_a_saved_model_loads_and_predicts_the_same_map(toy_run, monkeypatch):
    """... and loading it for the CPU keeps freed memory for reuse (docs/execution.md, "Memory on the CPU")."""
    data, method, _, run = toy_run
    calls = []
    monkeypatch.setattr("cosmobench.cmb.learned.retain_freed_memory", lambda: calls.append(1) or True)
    loaded = get_method("deepsphere").load(run, device="cpu")
    assert calls == [1]
    obs = data.load_obs("Valid", 0)
    np.testing.assert_array_equal(loaded.predict(obs, data.channels), method.predict(obs, data.channels))
    assert loaded.settings == method.settings
    with pytest.raises(ValueError, match="not 'cmbnncs'"):
        FullSkyUNet.load(run)


def test_registered_with_its_settings():
    assert get_method("deepsphere") is DeepSphereUNet and is_learned("deepsphere")
    defaults = method_defaults("deepsphere")
    assert {k: defaults[k] for k in ("levels", "base_channels", "cheb_k", "batch_norm")} == {
        "levels": 5,
        "base_channels": 32,
        "cheb_k": 3,
        "batch_norm": True,
    }
    with pytest.raises(ValueError, match="cheb_k"):
        DeepSphereUNet(cheb_k=0)
    with pytest.raises(TypeError, match="chebk"):
        DeepSphereUNet(chebk=3)
    net = DeepSphereUNet(levels=3, base_channels=4, cheb_k=2)._network(5, 8, out_channels=2)
    assert net(torch.zeros(1, 5, 1, 768)).shape == (1, 2, 1, 768)
    # two 2-term convolutions per block (no bias: BatchNorm follows), widths 4, 8, 16, and a per-pixel head
    convs = (
        2 * (5 * 4 + 4 * 4) + 2 * (4 * 8 + 8 * 8) + 2 * (8 * 16 + 16 * 16) + 2 * (24 * 8 + 8 * 8) + 2 * (12 * 4 + 4 * 4)
    )
    norms = 2 * 2 * (4 + 8 + 16 + 8 + 4)
    assert sum(p.numel() for p in net.parameters()) == convs + norms + 4 * 2 + 2


def test_trains_and_separates_through_the_cli(tiny_copy, cli):
    """The registry entry and the tiny preset's size: `cmb train` then `cmb separate` write the method's map."""
    for stage in ("train", "separate"):
        rc, err = cli("cmb", stage, *TINY, "method=deepsphere", f"out_dir={tiny_copy}")
        assert rc == 0, err
    data = CMBDataset(tiny_copy)
    method = DeepSphereUNet.load(model_dir(tiny_copy, "deepsphere"), device="cpu")
    assert method.settings.levels == 2 and method.settings.base_channels == 4  # conf/cmb_preset/tiny.yaml
    pred = read_healpix(tiny_copy / "deepsphere" / "Test" / "sim0000" / "cmb_pred.fits", dtype=np.float64)
    expected = method.predict(data.load_obs("Test", 0), data.channels)
    assert expected.shape == (12 * 8**2,) and np.std(expected) > 0
    np.testing.assert_allclose(np.ravel(pred), expected, rtol=1e-6, atol=1e-6 * np.max(np.abs(expected)))


@pytest.mark.gpu
def test_cuda_forward_and_gradients_match_the_cpu():
    """The graph UNet on CUDA (sparse Laplacian products on the device, float32) gives the CPU's outputs and
    gradients to float32 round-off, and keeps the rotation symmetry there."""
    import copy

    nside = 8
    g = rng(0, "cuda")
    x = torch.from_numpy(g.standard_normal((2, 3, 1, 12 * nside**2)).astype(np.float32))
    net = SphereUNet(3, nside, [4, 6, 8, 8], k=3).train()
    gpu = copy.deepcopy(net).cuda()
    y_cpu, y_gpu = net(x), gpu(x.cuda())
    np.testing.assert_allclose(y_gpu.detach().cpu(), y_cpu.detach(), rtol=1e-4, atol=1e-5)
    y_cpu.square().sum().backward()
    y_gpu.square().sum().backward()
    for (name, p_cpu), p_gpu in zip(net.named_parameters(), gpu.parameters()):
        np.testing.assert_allclose(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-3, atol=1e-4, err_msg=name)
    perm = nest_permutation(nside, ring_shift(nside))
    with torch.no_grad():
        gpu.eval()
        np.testing.assert_allclose(
            gpu(rotate(x, perm).cuda()).cpu(), rotate(gpu(x.cuda()).cpu(), perm), rtol=1e-4, atol=1e-5
        )
