"""The epoch's batches (``portable_mlp.batches.minibatches``): NumPy's order on every
backend for data in one piece, block-local shuffling for dask arrays chunked by rows."""

from __future__ import annotations

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend
from portable_mlp.batches import minibatches

N, BATCH = 103, 10


def _rows(n: int = N) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X whose first column is the row's index, Y, and weights with a run of zeros."""
    X = np.stack([np.arange(n, dtype=np.float64), np.ones(n)], axis=1)
    w = np.linspace(0.5, 2.0, n)
    w[20:45] = 0.0  # whole batches of zero weight, in NumPy's unshuffled order
    return X, np.stack([X[:, 0] * 2, X[:, 0] * 3], axis=1), w


def _numpy_reference(X, Y, w, shuffle, seed):
    """The batches as Trainer._epoch cut them before this module: a host permutation,
    ``take``, then slices; batches of zero weight skipped."""
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    if shuffle:
        order = rng.permutation(n)
        X, Y, w = X[order], Y[order], w[order]
    out = []
    for start in range(0, n, BATCH):
        s = slice(start, start + BATCH)
        if w[s].sum() > 0:
            out.append((X[s], Y[s], w[s], float(np.sum(w[s], dtype=np.float64))))
    return out


def _batches(placement, X, Y, w, shuffle, seed, batch_size=BATCH):
    place = placement.from_host
    return [(*(None if a is None else _backend.to_host(a) for a in arrays), c)
            for arrays, c in minibatches(placement, [place(X), place(Y), place(w)], w,
                                         batch_size, shuffle, np.random.default_rng(seed))]


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_in_one_piece_follow_numpys_order_on_every_backend(backend, shuffle):
    X, Y, w = _rows()
    placement = _backend.Placement.create(backend, dtype="float64")
    got = _batches(placement, X, Y, w, shuffle, seed=7)
    want = _numpy_reference(X, Y, w, shuffle, seed=7)
    assert len(got) == len(want)
    if not shuffle:
        assert len(got) < -(-N // BATCH), "the batches of zero weight were yielded"
    for g, r in zip(got, want):
        for a, b in zip(g[:3], r[:3]):
            np.testing.assert_array_equal(a, b)
        assert g[3] == pytest.approx(r[3], rel=1e-15)


def test_a_full_batch_comes_once_with_its_weight(backend):
    X, Y, w = _rows()
    placement = _backend.Placement.create(backend, dtype="float64")
    for size in (None, N, N + 5):
        (batch,) = _batches(placement, X, Y, w, True, seed=0, batch_size=size)
        np.testing.assert_array_equal(batch[0], X)
        assert batch[3] == pytest.approx(w.sum())
    Xd, Yd = placement.from_host(X), placement.from_host(Y)
    ((Xb, Yb, wb), count), = minibatches(placement, [Xd, Yd, None], None, None, True,
                                         np.random.default_rng(0))
    assert Xb is Xd and Yb is Yd and wb is None and count == N


def test_dask_blocks_are_shuffled_where_they_lie():
    da = pytest.importorskip("dask.array")
    X, Y, w = _rows()
    placement = _backend.Placement.create("dask", dtype="float64")
    blocks = (30, 30, 30, 13)
    Xd, Yd, wd = (da.from_array(a, chunks=(blocks, *a.shape[1:])) for a in (X, Y, w))
    Xd, Yd, wd = placement.persist_rows(Xd, Yd, wd)
    epoch = [(*arrays, count) for arrays, count in
             minibatches(placement, [Xd, Yd, wd], w, BATCH, True, np.random.default_rng(3))]
    rows = np.concatenate([_backend.to_host(b[0])[:, 0] for b in epoch]).astype(int)
    for Xb, Yb, wb, count in epoch:
        index = _backend.to_host(Xb)[:, 0].astype(int)
        np.testing.assert_array_equal(_backend.to_host(Yb), Y[index])  # rows stay together
        np.testing.assert_array_equal(_backend.to_host(wb), w[index])
        assert count == pytest.approx(w[index].sum()) and count > 0
        # the shuffled blocks (in memory) and a slice of one or two: no gather over them
        assert len(Xb.__dask_graph__()) <= len(blocks) + 2
    kept = np.isin(np.arange(N), rows)
    assert np.all(w[~kept] == 0), "a batch with weight was not yielded"
    assert len(set(rows.tolist())) == len(rows), "a row came twice"
    # block-local: each block's rows come in one run, in a shuffled order of the blocks
    owner = np.searchsorted(np.cumsum(blocks), rows, side="right")
    runs = owner[np.r_[True, owner[1:] != owner[:-1]]]
    assert len(runs) == len(set(runs.tolist())), f"a block's rows are split: {runs}"
    assert not np.all(np.diff(rows) > 0), "the rows were not shuffled"
    again = list(minibatches(placement, [Xd, Yd, wd], w, BATCH, True, np.random.default_rng(3)))
    np.testing.assert_array_equal(_backend.to_host(again[0][0][0]),
                                  _backend.to_host(epoch[0][0]))


def test_dask_fit_in_one_block_follows_numpy():
    pytest.importorskip("dask")
    X, y = pm.datasets.xor(n=120, seed=0)
    Y = pm.one_hot(y, 2)
    results = []
    for backend in ("numpy", "dask"):
        model = pm.MLP([2, 4, 2], seed=0, backend=backend, dtype="float64")
        pm.fit(model, X, Y, epochs=2, batch_size=32, seed=5, progress=False,
               optimizer=pm.SGD(lr=0.5, momentum=0.9))
        results.append(model.host_params())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_dask_fit_takes_weights_and_targets_cut_in_other_blocks():
    da = pytest.importorskip("dask.array")
    X, y = pm.datasets.xor(n=120, seed=0)
    Y, w = pm.one_hot(y, 2), np.linspace(0.0, 2.0, 120)
    params = []
    for shuffle in (True, False):
        model = pm.MLP([2, 4, 2], seed=0, backend="dask", dtype="float64")
        pm.fit(model, da.from_array(X, chunks=(40, 1)), da.from_array(Y, chunks=(60, 2)),
               sample_weight=da.from_array(w, chunks=30), epochs=2, batch_size=32,
               shuffle=shuffle, progress=False, optimizer=pm.SGD(lr=0.5))
        params.append(model.host_params())
    reference = pm.MLP([2, 4, 2], seed=0, dtype="float64")
    pm.fit(reference, X, Y, sample_weight=w, epochs=2, batch_size=32, shuffle=False,
           progress=False, optimizer=pm.SGD(lr=0.5))
    for got, want in zip(params[1], reference.params):  # unshuffled: NumPy's batches
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert not np.allclose(params[0][0], params[1][0])  # shuffled: another order
