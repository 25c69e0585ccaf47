"""Time-series detectors, a home for TODS's algorithms (TODS itself cannot install on Python 3.11).

A series becomes a table of sliding windows (`data.series.series_windows`): one row per timestamp,
holding the last `window` values, oldest first. Every detector here takes those rows, so the tabular
contract, threshold, pipeline and pyfunc all carry series unchanged, and the tabular
detectors run on windows too.
"""

from __future__ import annotations

import numpy as np

from .base import ModelDetector
from .torch import on_one_thread
from .spec import DetectorSpec


def _znorm(X: np.ndarray) -> np.ndarray:
    std = X.std(axis=1, keepdims=True)
    return (X - X.mean(axis=1, keepdims=True)) / np.where(std < 1e-8, 1.0, std)


class SeriesDetector(ModelDetector):
    input = "series"



class MatrixProfileDiscord(SeriesDetector):
    """Discords: a window's score is its z-normalised Euclidean distance to the nearest other
    window, i.e. its matrix-profile value (Yeh et al., 2016). Training rows exclude their
    trivial matches (windows overlapping by more than 3/4); new rows are compared with all
    training windows (an AB-join). Exact and blockwise in NumPy: stumpy computes the same, but
    its numba compilation costs over a minute on the first call of every process here.
    """

    backend = "numpy"
    python_dependencies = ("numpy",)

    def _distances(self, Z: np.ndarray, exclude_self: bool) -> np.ndarray:
        w = Z.shape[1]
        out = np.empty(len(Z))
        for start in range(0, len(Z), 512):
            block = Z[start:start + 512]
            d2 = np.maximum(2 * w * (1 - block @ self.train_.T / w), 0)
            if exclude_self:
                rows = np.arange(start, start + len(block))[:, None]
                d2[np.abs(rows - np.arange(len(self.train_))[None]) <= w // 4] = np.inf
            out[start:start + len(block)] = np.sqrt(d2.min(axis=1))
        return out

    def _fit(self, X, y):
        self.train_ = _znorm(X)
        return self._distances(self.train_, exclude_self=True)

    def _score(self, X):
        return self._distances(_znorm(X), exclude_self=False)


class LSTMForecaster(SeriesDetector):
    """Telemanom-style (Hundman et al., KDD 2018): an LSTM predicts each window's last value from
    the ones before it; the score is the absolute prediction error."""

    backend = "torch"
    gpu = True
    python_dependencies = ("torch",)

    def _settings(self):
        return dict(hidden=32, epochs=30, batch_size=64, lr=1e-2, device="auto") | (self.params or {})

    def _tensors(self, X):
        import torch

        Z = (X - self.mean_) / self.std_
        return torch.as_tensor(Z[:, :-1, None], dtype=torch.float32), torch.as_tensor(Z[:, -1], dtype=torch.float32)

    def _predict(self, net, history):
        out, _ = net["lstm"](history)
        return net["head"](out[:, -1]).squeeze(1)

    @on_one_thread
    def _fit(self, X, y):
        from .torch import import_torch, seed_torch, torch_device

        torch = import_torch(self.model)

        s = self._settings()
        seed_torch(self.random_state)
        self.mean_, self.std_ = float(X.mean()), float(X.std()) or 1.0
        device = torch_device(s["device"])
        net = torch.nn.ModuleDict({"lstm": torch.nn.LSTM(1, s["hidden"], batch_first=True), "head": torch.nn.Linear(s["hidden"], 1)})
        net.to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=s["lr"])
        history, target = (t.to(device) for t in self._tensors(X))
        generator = torch.Generator().manual_seed(0 if self.random_state is None else self.random_state)
        for _ in range(s["epochs"]):
            for batch in torch.randperm(len(X), generator=generator).split(s["batch_size"]):
                batch = batch.to(device)
                loss = torch.nn.functional.mse_loss(self._predict(net, history[batch]), target[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.net_ = net.cpu().eval()  # on the CPU, so the pickled pipeline loads anywhere
        return self._score(X)

    @on_one_thread
    def _score(self, X):
        import torch

        history, target = self._tensors(X)
        with torch.no_grad():
            return (self._predict(self.net_, history) - target).abs().double().numpy() * self.std_


class PyODSeriesDetector(SeriesDetector):
    """PyOD's inductive time-series detectors, run on each window; a row's score is the score
    PyOD gives the window's last timestamp. (PyOD's MatrixProfile is transductive and its LSTMAD
    does not pickle; `mp_discord` and `lstm_forecast` cover them.)"""

    backend = "pyod"
    python_dependencies = ("pyod",)

    def _fit(self, X, y):
        import importlib

        module, name = {"spectral_residual": ("pyod.models.ts_spectral_residual", "SpectralResidual"),
                        "kshape": ("pyod.models.ts_kshape", "KShape")}[self.model]
        cls = getattr(importlib.import_module(module), name)
        params = dict(self.params or {})
        if self.model == "kshape":  # clusters the training series' windows; seeded
            params |= {"window_size": X.shape[1], "random_state": self.random_state}
            series = np.concatenate([X[0], X[1:, -1]])
        else:
            series = X[0]  # spectral residual is parameter-free per window; fit only sets PyOD's state
        self.estimator_ = cls(contamination=self.contamination, **params).fit(series)
        return self._score(X)

    def _score(self, X):
        return np.array([self.estimator_.decision_function(row)[-1] for row in X])


SPECS = [
    DetectorSpec("mp_discord", MatrixProfileDiscord, "mp_discord", lambda t: {}, default=True),
    DetectorSpec(
        "lstm_forecast", LSTMForecaster, "lstm_forecast",
        lambda t: {
            "hidden": t.suggest_categorical("lstm_forecast.hidden", [16, 32, 64]),
            "epochs": t.suggest_int("lstm_forecast.epochs", 10, 50, step=10),
            "lr": t.suggest_float("lstm_forecast.lr", 1e-3, 3e-2, log=True),
        },
        {"hidden": 16, "epochs": 10, "device": "cpu"},
    ),
    DetectorSpec("spectral_residual", PyODSeriesDetector, "spectral_residual",
                 lambda t: {"score_window": t.suggest_int("spectral_residual.score_window", 2, 10)}),
    DetectorSpec("kshape", PyODSeriesDetector, "kshape",
                 lambda t: {"n_clusters": t.suggest_int("kshape.n_clusters", 2, 6)}, {"n_clusters": 2, "max_iter": 20}),
]
