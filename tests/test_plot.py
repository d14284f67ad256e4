"""The pictures: drawn, written, and right when read back as images."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

import portable_mlp as pm  # noqa: E402
from portable_mlp import plot  # noqa: E402

XOR_QUADRANTS = {(1.5, 1.5): 0, (-1.5, -1.5): 0, (1.5, -1.5): 1, (-1.5, 1.5): 1}


@pytest.fixture(scope="module")
def xor_run():
    X, y = pm.datasets.xor(n=300, seed=0)
    model = pm.MLP([2, 8, 2], seed=2017)
    snapshots = plot.Snapshots(every=100)
    trainer = pm.Trainer(model, optimizer=pm.SGD(lr=2.0, momentum=0.9))
    history = trainer.fit(X, pm.one_hot(y, 2), epochs=500, callbacks=[snapshots], progress=False)
    assert history["accuracy"][-1] >= 0.98
    return model, history, snapshots, X, y


def _region_colour(k):
    """The light colour the boundary panel paints class k's region with, as RGB bytes."""
    return np.round((plot._class_colours(k + 1)[k] * 0.35 + 0.65) * 255)


def _mode_colour(pixels):
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    return colours[counts.argmax()].astype(float)


def test_png_boundary_panel_colours_the_xor_quadrants_by_class(xor_run, tmp_path):
    model, history, _, X, y = xor_run
    path = tmp_path / "xor.png"
    fig = plot.plot_training(model, history, X, y, path, title="XOR")
    image = np.asarray(Image.open(path).convert("RGB"))
    width, height = (fig.get_size_inches() * fig.dpi).round().astype(int)
    assert image.shape == (height, width, 3)
    acc_ax, map_ax, loss_ax = fig.axes[:3]
    assert acc_ax.get_title().startswith("accuracy") and acc_ax.get_xlabel() == "epoch"
    assert map_ax.get_title() == "decision boundary, epoch 500"
    assert loss_ax.get_title().startswith("loss") and loss_ax.get_ylabel() == "loss"
    assert [t.get_text() for t in map_ax.get_legend().get_texts()] == ["class 0", "class 1"]
    seen = {}
    for (x0, x1), label in XOR_QUADRANTS.items():
        px, py = map_ax.transData.transform((x0, x1))
        row, col = round(height - py), round(px)
        seen[(x0, x1)] = colour = _mode_colour(image[row - 6:row + 7, col - 6:col + 7])
        np.testing.assert_allclose(colour, _region_colour(label), atol=3)
    assert not np.allclose(seen[(1.5, 1.5)], seen[(1.5, -1.5)], atol=10)


def test_gif_has_one_frame_per_snapshot(xor_run, tmp_path):
    model, _, snapshots, X, y = xor_run
    assert [s.epoch for s in snapshots.frames] == [100, 200, 300, 400, 500]
    path = tmp_path / "xor.gif"
    assert plot.animate_training(model, snapshots, X, y, path, fps=10) == 5
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5 and gif.is_animated
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB"), dtype=float))
    assert frames[0].shape[:2] == (288, 960)
    assert np.abs(frames[0] - frames[-1]).mean() > 1.0  # training changed the picture


def test_snapshots_copy_and_count_epochs_across_fits():
    X, y = pm.datasets.moons(n=60, seed=1)
    model = pm.MLP([2, 4, 2], seed=0)
    snapshots = plot.Snapshots(every=4)
    trainer = pm.Trainer(model, optimizer=pm.SGD(lr=0.5))
    trainer.fit(X, pm.one_hot(y, 2), epochs=10, callbacks=[snapshots], progress=False)
    first = [p.copy() for p in snapshots.frames[0].params]
    trainer.fit(X, pm.one_hot(y, 2), epochs=3, callbacks=[snapshots], progress=False)
    assert [s.epoch for s in snapshots.frames] == [4, 8, 10, 12, 13]
    assert len(snapshots.history["loss"]) == 13
    for kept, copied in zip(snapshots.frames[0].params, first, strict=True):
        np.testing.assert_array_equal(kept, copied)
    with pytest.raises(ValueError, match="every must be positive"):
        plot.Snapshots(every=0)


def test_decision_regions_are_computed_on_the_models_backend(xor_run, backend):
    model = xor_run[0]
    X = xor_run[3]
    on_host, extent = plot.decision_regions(model, X, resolution=60)
    there, extent_there = plot.decision_regions(model.to(backend), X, resolution=60)
    assert extent == extent_there and there.shape == (60, 60) and there.dtype == np.int64
    assert (on_host != there).mean() < 0.01  # float32 backends may flip a pixel on the boundary


def test_any_number_of_classes_and_one_output(tmp_path):
    X, y = pm.datasets.spirals(n=90, n_classes=3, seed=0)
    model = pm.MLP([2, 16, 3], activation="tanh", output="identity", init="glorot", seed=0)
    history = pm.fit(model, X, pm.one_hot(y, 3), loss="cross_entropy",
                     optimizer=pm.Adam(lr=0.05), epochs=60, progress=False)
    fig = plot.plot_training(model, history, X, pm.one_hot(y, 3), tmp_path / "spirals.png")
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["class 0", "class 1", "class 2"]
    regions, _ = plot.decision_regions(model, X, resolution=40)
    assert set(np.unique(regions)) == {0, 1, 2}

    binary = pm.MLP([2, 4, 1], seed=0)
    Xm, ym = pm.datasets.moons(n=40, seed=0)
    history = pm.fit(binary, Xm, ym[:, None].astype(float), epochs=5, progress=False)
    plot.plot_training(binary, history, Xm, ym, tmp_path / "binary.svg")
    assert (tmp_path / "binary.svg").read_text().lstrip().startswith("<?xml")


def test_bad_input_is_refused_clearly(xor_run, tmp_path):
    model, history, _, X, y = xor_run
    with pytest.raises(ValueError, match="2 inputs"):
        plot.plot_training(pm.MLP([3, 2, 2]), history, np.zeros((4, 3)), np.zeros(4, int))
    with pytest.raises(ValueError, match="history must be"):
        plot.plot_training(model, {"loss": []}, X, y)
    with pytest.raises(ValueError, match="300 non-negative integer labels"):
        plot.plot_training(model, history, X, y[:10])
    with pytest.raises(ValueError, match="NaN or inf"):
        plot.plot_training(model, history, np.full((3, 2), np.nan), np.zeros(3, int))
    with pytest.raises(ValueError, match="no snapshots"):
        plot.animate_training(model, plot.Snapshots(), X, y, tmp_path / "a.gif")
    with pytest.raises(TypeError, match="Snapshots callback"):
        plot.animate_training(model, [], X, y, tmp_path / "a.gif")
