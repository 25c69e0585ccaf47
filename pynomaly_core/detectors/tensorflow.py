"""TensorFlow/Keras detectors (extra `tensorflow`): autoencoder, VAE and Deep SVDD, small and seeded.

Keras models do not pickle reliably, so the fitted networks travel as their weights
(`__getstate__`) and are rebuilt from the hyper-parameters on load (`__setstate__`).
"""

from __future__ import annotations

import numpy as np

from .base import ModelDetector
from .packages import missing_dependency
from .spec import DetectorSpec


def _keras():
    try:
        import tensorflow as tf
        import keras
    except ModuleNotFoundError as err:
        raise missing_dependency("tf_autoencoder/tf_vae/tf_deepsvdd", err) from None
    return tf, keras


class KerasDetector(ModelDetector):
    """`model` is "autoencoder", "vae" or "deepsvdd". Scores: reconstruction error (from the latent
    mean for the VAE) or the squared distance to the hypersphere centre (Deep SVDD)."""

    backend = "tensorflow"
    gpu = True
    python_dependencies = ("tensorflow",)


    def _settings(self) -> dict:
        defaults = dict(hidden=(64, 32), latent_dim=4, epochs=30, batch_size=64, lr=1e-3)
        return defaults | (self.params or {})

    def _build(self, n_features: int) -> dict:
        tf, keras = _keras()
        s = self._settings()

        def mlp(sizes, out, bias=True, name=None):
            layers = [keras.Input((sizes[0],))]
            layers += [keras.layers.Dense(w, activation="relu", use_bias=bias) for w in sizes[1:]]
            layers += [keras.layers.Dense(out, use_bias=bias)]
            return keras.Sequential(layers, name=name)

        widths = [n_features, *s["hidden"]]
        if self.model == "deepsvdd":  # no biases: a network with biases can map everything to the centre
            return {"net": mlp(widths, s["latent_dim"], bias=False)}
        code = 2 * s["latent_dim"] if self.model == "vae" else s["latent_dim"]
        return {"encoder": mlp(widths, code), "decoder": mlp([s["latent_dim"], *s["hidden"][::-1]], n_features)}

    def _embed(self, x):
        """The deterministic view used for scoring: reconstruction, or the SVDD embedding."""
        if self.model == "deepsvdd":
            return self.nets_["net"](x)
        code = self.nets_["encoder"](x)
        if self.model == "vae":
            code = code[:, : self._settings()["latent_dim"]]
        return self.nets_["decoder"](code)

    def _loss(self, x, eps):
        tf, _ = _keras()
        if self.model == "deepsvdd":
            return tf.reduce_mean(tf.reduce_sum((self.nets_["net"](x) - self.center_) ** 2, axis=1))
        if self.model == "autoencoder":
            return tf.reduce_mean((self.nets_["decoder"](self.nets_["encoder"](x)) - x) ** 2)
        mean, log_var = tf.split(self.nets_["encoder"](x), 2, axis=1)
        log_var = tf.clip_by_value(log_var, -10.0, 10.0)
        z = mean + tf.exp(0.5 * log_var) * eps
        recon = tf.reduce_sum((self.nets_["decoder"](z) - x) ** 2, axis=1)
        kl = -0.5 * tf.reduce_sum(1 + log_var - mean**2 - tf.exp(log_var), axis=1)
        return tf.reduce_mean(recon + kl)

    def _fit(self, X, y):
        tf, keras = _keras()
        s = self._settings()
        seed = 0 if self.random_state is None else self.random_state
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        self.nets_ = self._build(X.shape[1])
        data = tf.constant(X, dtype=tf.float32)
        if self.model == "deepsvdd":
            center = tf.reduce_mean(self.nets_["net"](data), axis=0)
            # Ruff et al.: keep centre coordinates away from 0, where a trivial solution lies.
            self.center_ = tf.where(tf.abs(center) < 0.1, tf.where(center < 0, -0.1, 0.1), center)
        weights = [w for net in self.nets_.values() for w in net.trainable_variables]
        optimizer = keras.optimizers.Adam(s["lr"])

        @tf.function
        def step(x, eps):
            with tf.GradientTape() as tape:
                loss = self._loss(x, eps)
            optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
            return loss

        rng = np.random.default_rng(seed)
        for _ in range(s["epochs"]):
            order = rng.permutation(len(X))
            for start in range(0, len(X), s["batch_size"]):
                rows = order[start:start + s["batch_size"]]
                eps = rng.standard_normal((len(rows), s["latent_dim"])).astype(np.float32)
                step(tf.gather(data, rows), tf.constant(eps))
        return self._score(X)

    def _score(self, X):
        tf, _ = _keras()
        x = tf.constant(X, dtype=tf.float32)
        out = self._embed(x)
        target = self.center_ if self.model == "deepsvdd" else x
        return tf.reduce_sum((out - target) ** 2, axis=1).numpy()

    def __getstate__(self):
        state = self.__dict__.copy()
        if "nets_" in state:
            state["nets_"] = {name: net.get_weights() for name, net in self.nets_.items()}
            if "center_" in state:
                state["center_"] = np.asarray(self.center_)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "nets_" in state:
            weights = state["nets_"]
            self.nets_ = self._build(self.n_features_in_)
            for name, net in self.nets_.items():
                net.set_weights(weights[name])
            if "center_" in state:
                tf, _ = _keras()
                self.center_ = tf.constant(state["center_"])


def _space(prefix):
    return lambda t: {
        "epochs": t.suggest_int(f"{prefix}.epochs", 10, 60, step=10),
        "lr": t.suggest_float(f"{prefix}.lr", 1e-4, 1e-2, log=True),
        "latent_dim": t.suggest_int(f"{prefix}.latent_dim", 2, 8),
    }


SPECS = [
    DetectorSpec(f"tf_{model}", KerasDetector, model, _space(f"tf_{model}"), {"epochs": 15, "hidden": [16]})
    for model in ("autoencoder", "vae", "deepsvdd")
]
