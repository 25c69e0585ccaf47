"""JAX detectors (extra `jax`): autoencoder and VAE, with jit-compiled training steps and scoring.

Parameters are a list of (weights, bias) pairs kept as NumPy arrays after fitting, so the
detector pickles like any scikit-learn estimator; the jitted functions are rebuilt on use.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .base import ModelDetector
from .packages import missing_dependency
from .spec import DetectorSpec


def _jax():
    try:
        import jax
        import jax.numpy as jnp
        from jax.example_libraries import optimizers
    except ModuleNotFoundError as err:
        raise missing_dependency("jax_autoencoder/jax_vae", err) from None
    return jax, jnp, optimizers


def _mlp(params, x):
    jax, jnp, _ = _jax()
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def _init(key, sizes):
    jax, jnp, _ = _jax()
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (a, b)) * jnp.sqrt(2.0 / a), jnp.zeros(b)))
    return key, params


def _reconstruct(params, x, latent_dim, vae):
    code = _mlp(params["encoder"], x)
    return _mlp(params["decoder"], code[:, :latent_dim] if vae else code)


def _loss(params, x, eps, latent_dim, vae):
    _, jnp, _ = _jax()
    if not vae:
        return jnp.mean((_reconstruct(params, x, latent_dim, vae) - x) ** 2)
    code = _mlp(params["encoder"], x)
    mean, log_var = code[:, :latent_dim], jnp.clip(code[:, latent_dim:], -10.0, 10.0)
    recon = _mlp(params["decoder"], mean + jnp.exp(0.5 * log_var) * eps)
    kl = -0.5 * jnp.sum(1 + log_var - mean**2 - jnp.exp(log_var), axis=1)
    return jnp.mean(jnp.sum((recon - x) ** 2, axis=1) + kl)


def _score(params, x, latent_dim, vae):
    _, jnp, _ = _jax()
    return jnp.sum((_reconstruct(params, x, latent_dim, vae) - x) ** 2, axis=1)


class JaxDetector(ModelDetector):
    """`model` is "autoencoder" or "vae"; the score is the reconstruction error (the VAE decodes its latent mean)."""

    backend = "jax"
    gpu = True
    python_dependencies = ("jax",)


    def _settings(self) -> dict:
        return dict(hidden=(64, 32), latent_dim=4, epochs=30, batch_size=64, lr=1e-3) | (self.params or {})

    def _fit(self, X, y):
        jax, jnp, optimizers = _jax()
        s = self._settings()
        vae = self.model == "vae"
        seed = 0 if self.random_state is None else self.random_state
        key, encoder = _init(jax.random.PRNGKey(seed), [X.shape[1], *s["hidden"], s["latent_dim"] * (2 if vae else 1)])
        key, decoder = _init(key, [s["latent_dim"], *s["hidden"][::-1], X.shape[1]])
        opt_init, opt_update, get_params = optimizers.adam(s["lr"])
        loss = partial(_loss, latent_dim=s["latent_dim"], vae=vae)

        @jax.jit
        def step(i, state, x, eps):
            grads = jax.grad(loss)(get_params(state), x, eps)
            return opt_update(i, grads, state)

        state = opt_init({"encoder": encoder, "decoder": decoder})
        data = jnp.asarray(X, dtype=jnp.float32)
        rng, i = np.random.default_rng(seed), 0
        for _ in range(s["epochs"]):
            order = rng.permutation(len(X))
            # Full batches only, so `step` compiles once; the remainder rows join the next epoch's shuffle.
            for start in range(0, max(len(X) - s["batch_size"], 0) + 1, s["batch_size"]):
                rows = order[start:start + s["batch_size"]]
                eps = rng.standard_normal((len(rows), s["latent_dim"])).astype(np.float32)
                state = step(i, state, data[rows], eps)
                i += 1
        self.weights_ = jax.tree.map(np.asarray, get_params(state))
        return self._score(X)

    def _score(self, X):
        jax, jnp, _ = _jax()
        s = self._settings()
        score = jax.jit(partial(_score, latent_dim=s["latent_dim"], vae=self.model == "vae"))
        return np.asarray(score(self.weights_, jnp.asarray(X, dtype=jnp.float32)))


SPECS = [
    DetectorSpec(
        f"jax_{model}", JaxDetector, model,
        lambda t, p=f"jax_{model}": {
            "epochs": t.suggest_int(f"{p}.epochs", 10, 60, step=10),
            "lr": t.suggest_float(f"{p}.lr", 1e-4, 1e-2, log=True),
            "latent_dim": t.suggest_int(f"{p}.latent_dim", 2, 8),
        },
        {"epochs": 20, "hidden": [16], "batch_size": 32},
    )
    for model in ("autoencoder", "vae")
]
