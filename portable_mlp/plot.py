"""Pictures of training, as at the end of the scratch_mlp article: accuracy on the left, the learned
decision boundary in the middle, the loss on the right; and an animated GIF of them over training.

Needs matplotlib (and Pillow, which matplotlib brings): the ``plot`` extra, e.g.
``pip install '.[plot]'`` from a clone (the error names the command for this copy).
``import portable_mlp`` never imports this module. Figures are drawn on matplotlib's Agg canvas
with no pyplot state, so this works without a screen and inside other programs.

The decision boundary is the model's own prediction over a grid, evaluated on the model's backend
and device; only the predicted classes come back to the host.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from portable_mlp import _backend, validation
from portable_mlp.callback_base import Callback

try:
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image
except ImportError as exc:  # pragma: no cover - depends on the environment
    from portable_mlp._install import pip_install

    raise ImportError(f"portable_mlp.plot needs matplotlib and Pillow ({exc}); "
                      f"try: {pip_install('plot')}") from exc

if TYPE_CHECKING:
    from portable_mlp.model import Sequential
    from portable_mlp.train import Trainer

__all__ = ["Snapshot", "Snapshots", "animate_training", "decision_regions", "plot_training"]

FIGSIZE = (12.0, 3.6)   # inches: three panels side by side
DPI = 80


class Snapshot(NamedTuple):
    """The parameters (host NumPy copies) after ``epoch`` epochs of training."""

    epoch: int
    params: list[np.ndarray]


class Snapshots(Callback):
    """A callback that keeps host copies of the parameters every ``every`` epochs (and after
    the last), and the history of every epoch, for :func:`animate_training`.

    Epochs are counted across calls to ``fit``, like the history it keeps.

    Parameters
    ----------
    every : int, default 10
        Epochs between two snapshots.
    """

    def __init__(self, every: int = 10) -> None:
        self.every = validation.positive("every", every, integer=True)
        self.frames: list[Snapshot] = []
        self.history: dict[str, list[float]] = {}
        self.epochs = 0

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        self.epochs += 1
        if self.epochs % self.every == 0:
            self._take(trainer.model)

    def on_train_end(self, trainer: Trainer) -> None:
        if not self.frames or self.frames[-1].epoch != self.epochs:
            self._take(trainer.model)

    def _take(self, model: Sequential) -> None:
        # copies: on NumPy, host_params are the model's own arrays, which a user may change
        self.frames.append(Snapshot(self.epochs, [np.array(p, copy=True)
                                                  for p in model.host_params()]))


# --- the decision boundary -----------------------------------------------------

class _Scene(NamedTuple):
    """What stays the same in every frame: the data on the host and the grid."""

    X: np.ndarray
    y: np.ndarray
    n_classes: int
    grid: np.ndarray
    extent: tuple[float, float, float, float]
    resolution: int


def _scene(model: Sequential, X: Any, y: Any | None, resolution: int, margin: float = 0.1
           ) -> _Scene:
    """Check the data, bring it to the host, and lay a grid over it (``y`` None: no labels)."""
    if model.n_features != 2:
        raise ValueError(f"a decision boundary needs a model with 2 inputs; this one has "
                         f"{model.n_features}")
    resolution = validation.positive("resolution", resolution, integer=True)
    Xh = np.asarray(_backend.to_host(X), dtype=np.float64)
    if Xh.ndim != 2 or Xh.shape[1] != 2 or Xh.shape[0] == 0:
        raise ValueError(f"X must be a non-empty (n, 2) array, got shape {Xh.shape}")
    if not np.isfinite(Xh).all():
        raise ValueError("X contains NaN or inf; expected finite values")
    yh = np.zeros(Xh.shape[0], np.int64) if y is None else np.asarray(_backend.to_host(y))
    if yh.ndim == 2:  # one-hot
        yh = yh.argmax(axis=1)
    if yh.shape != (Xh.shape[0],) or not np.issubdtype(yh.dtype, np.integer) or yh.min() < 0:
        raise ValueError(f"y must hold {Xh.shape[0]} non-negative integer labels (or one-hot "
                         f"rows), got an array of shape {yh.shape} and dtype {yh.dtype}")
    n_classes = max(int(yh.max()) + 1, model.n_outputs, 2)
    low, high = Xh.min(axis=0), Xh.max(axis=0)
    pad = np.maximum(high - low, 1e-3) * margin
    low, high = low - pad, high + pad
    xs = np.linspace(low[0], high[0], resolution)
    ys = np.linspace(low[1], high[1], resolution)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    extent = (float(low[0]), float(high[0]), float(low[1]), float(high[1]))
    return _Scene(Xh, yh.astype(np.int64), n_classes, grid, extent, resolution)


def decision_regions(model: Sequential, X: Any, resolution: int = 200
                     ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The model's predicted class over a ``resolution`` x ``resolution`` grid covering ``X``.

    Returns the classes (host int64, rows from the bottom of the grid up) and the grid's extent
    ``(left, right, bottom, top)``: the range of X's first column, then of its second, each
    widened by 10%. The model runs on its own backend and device.

    Parameters
    ----------
    model : Sequential
        A model of 2 inputs.
    X : array of shape (n, 2)
        The points the grid must cover.
    resolution : int, default 200
        Grid points per side.
    """
    scene = _scene(model, X, None, resolution)
    return _predict_grid(model, scene), scene.extent


def _predict_grid(model: Sequential, scene: _Scene) -> np.ndarray:
    classes = model.classes_of(model(scene.grid))   # on the model's backend and device
    return np.asarray(_backend.to_host(classes), dtype=np.int64).reshape(
        scene.resolution, scene.resolution)


def _class_colours(n: int) -> np.ndarray:
    if n <= 10:
        return colormaps["tab10"](np.arange(n))[:, :3]
    return colormaps["turbo"](np.linspace(0.05, 0.95, n))[:, :3]


def _regions_image(classes: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Light class colours, with the boundary between regions drawn dark."""
    light = colours * 0.35 + 0.65
    image = light[classes]
    edge = np.zeros(classes.shape, dtype=bool)
    edge[:, 1:] |= classes[:, 1:] != classes[:, :-1]
    edge[1:, :] |= classes[1:, :] != classes[:-1, :]
    image[edge] = 0.25
    return image


# --- the three panels ----------------------------------------------------------

class _Panels:
    """The three panels' axes and artists, made once; ``update`` redraws them for one state
    of training (so an animation lays out the figure once and only swaps data per frame)."""

    def __init__(self, fig: Figure, scene: _Scene, epochs: int, keys: Sequence[str],
                 loss_range: tuple[float, float] | None, title: str | None) -> None:
        self.scene = scene
        self.colours = _class_colours(scene.n_classes)
        acc_ax, map_ax, loss_ax = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1, 1.1]})
        self.acc_ax, self.map_ax, self.loss_ax = acc_ax, map_ax, loss_ax
        xlim = (1, max(epochs, 2))
        self.lines = {}
        for ax, metric, colour in ((acc_ax, "accuracy", "tab:blue"), (loss_ax, "loss", "tab:red")):
            for key, label, style in ((metric, "train", "-"),
                                      (f"val_{metric}", "validation", "--")):
                if key in keys:
                    self.lines[key] = ax.plot([], [], style, color=colour, label=label)[0]
            ax.set(xlabel="epoch", xlim=xlim)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right" if metric == "accuracy" else "upper right",
                      fontsize="x-small")
        acc_ax.set(ylabel="accuracy (%)", ylim=(0, 102))
        loss_ax.set(ylabel="loss")
        if loss_range is not None:
            low, high = loss_range
            if low > 0 and high >= 10 * low:  # a loss that falls by a decade or more
                loss_ax.set_yscale("log")
                loss_ax.set_ylim(low / 1.2, high * 1.2)
            else:
                loss_ax.set_ylim(low, high + 0.05 * (high - low) + 1e-12)

        blank = np.zeros((scene.resolution, scene.resolution), dtype=np.int64)
        self.image = map_ax.imshow(_regions_image(blank, self.colours), origin="lower",
                                   extent=scene.extent, interpolation="nearest", aspect="auto")
        for k in range(scene.n_classes):
            mine = scene.y == k
            if mine.any():
                map_ax.scatter(scene.X[mine, 0], scene.X[mine, 1], s=10, color=self.colours[k],
                               edgecolors="black", linewidths=0.25, label=f"class {k}")
        map_ax.set(xlabel="$x_1$", ylabel="$x_2$", xlim=scene.extent[:2], ylim=scene.extent[2:])
        map_ax.legend(loc="upper right", fontsize="x-small", framealpha=0.85, markerscale=1.5)
        if title:
            fig.suptitle(title, fontsize="medium")

    def update(self, model: Sequential, history: Mapping[str, Sequence[float]],
               epoch: int) -> None:
        for key, line in self.lines.items():
            values = np.asarray(history[key], dtype=np.float64)
            scale = 100.0 if key.endswith("accuracy") else 1.0
            line.set_data(np.arange(1, values.size + 1), values * scale)
        self.acc_ax.set_title(f"accuracy: {history['accuracy'][-1]:.1%}")
        self.loss_ax.set_title(f"loss: {history['loss'][-1]:.4g}")
        self.image.set_data(_regions_image(_predict_grid(model, self.scene), self.colours))
        self.map_ax.set_title(f"decision boundary, epoch {epoch}")


def _loss_range(history: Mapping[str, Sequence[float]]) -> tuple[float, float] | None:
    values = [v for key in ("loss", "val_loss") for v in history.get(key, ()) if math.isfinite(v)]
    return (min(values), max(values)) if values else None


def _check_history(history: Mapping[str, Sequence[float]]) -> None:
    if not isinstance(history, Mapping) or not history.get("loss") or "accuracy" not in history:
        raise ValueError("history must be what fit returns: a dict with non-empty 'loss' and "
                         "'accuracy' lists")


def _new_figure(dpi: int) -> tuple[Figure, FigureCanvasAgg]:
    fig = Figure(figsize=FIGSIZE, dpi=dpi, layout="constrained")
    return fig, FigureCanvasAgg(fig)


def plot_training(model: Sequential, history: Mapping[str, Sequence[float]], X: Any, y: Any,
                  path: str | Path | None = None, *, title: str | None = None,
                  resolution: int = 200, dpi: int = DPI) -> Figure:
    """Draw the three panels for ``model`` after training with ``history`` (what ``fit``
    returns) on 2-D data ``X`` with labels ``y`` (class indices or one-hot rows).

    Returns the matplotlib Figure; writes it to ``path`` too when given (PNG, SVG, PDF: by
    the file's suffix).

    Parameters
    ----------
    model : Sequential
        The trained model (2 inputs).
    history : mapping of str to list of float
        What ``fit`` returned.
    X : array of shape (n, 2)
        The points.
    y : array of shape (n,) or (n, k)
        Their class indices or one-hot rows.
    path : str or Path or None, default None
        Write the figure there too.
    title : str or None, default None
        The figure's title.
    resolution : int, default 200
        Grid points per side of the decision regions.
    dpi : int, default DPI
        The figure's resolution.
    """
    _check_history(history)
    scene = _scene(model, X, y, resolution)
    fig, _ = _new_figure(dpi)
    epochs = len(history["loss"])
    panels = _Panels(fig, scene, epochs, list(history), _loss_range(history), title)
    panels.update(model, history, epochs)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def animate_training(model: Sequential, snapshots: Snapshots, X: Any, y: Any,
                     path: str | Path, *, title: str | None = None, fps: float = 8,
                     resolution: int = 120, dpi: int = DPI) -> int:
    """Write an animated GIF of training to ``path``: one frame of the three panels per
    snapshot that ``snapshots`` (a :class:`Snapshots` callback passed to ``fit``) took.
    The last frame stays on screen a little longer. Returns the number of frames.

    ``model`` gives the architecture and the backend: each frame's boundary is computed on a
    copy of it, with the snapshot's parameters.

    Parameters
    ----------
    model : Sequential
        The model (architecture and backend) the snapshots were taken of.
    snapshots : Snapshots
        The callback passed to ``fit``.
    X : array of shape (n, 2)
        The points.
    y : array of shape (n,) or (n, k)
        Their class indices or one-hot rows.
    path : str or Path
        The GIF to write.
    title : str or None, default None
        The figure's title.
    fps : float, default 8
        Frames per second.
    resolution : int, default 120
        Grid points per side of the decision regions.
    dpi : int, default DPI
        The figure's resolution.
    """
    if not isinstance(snapshots, Snapshots):
        raise TypeError(f"snapshots must be a portable_mlp.plot.Snapshots callback, got "
                        f"{type(snapshots).__name__}")
    if not snapshots.frames:
        raise ValueError("no snapshots were taken: pass the Snapshots callback to fit first")
    fps = validation.positive("fps", fps)
    _check_history(snapshots.history)
    scene = _scene(model, X, y, resolution)
    frame_model = model.to()  # a copy on the same backend, device and dtype
    fig, canvas = _new_figure(dpi)
    panels = _Panels(fig, scene, snapshots.epochs, list(snapshots.history),
                     _loss_range(snapshots.history), title)
    images = []
    for snap in snapshots.frames:
        frame_model.load_params(snap.params)
        history = {key: values[:snap.epoch] for key, values in snapshots.history.items()}
        panels.update(frame_model, history, snap.epoch)
        canvas.draw()
        fig.set_layout_engine("none")  # laid out once, on the first frame
        rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
        images.append(rgb.quantize(colors=128, method=Image.Quantize.MEDIANCUT))
    frame_ms = max(20, round(1000 / fps))
    durations = [frame_ms] * (len(images) - 1) + [max(frame_ms, 1500)]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=durations, loop=0)
    return len(images)
