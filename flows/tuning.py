"""Parallel trials: `train.workers` processes on a Dask cluster join one Optuna study in RDB storage."""

from __future__ import annotations

from prefect import flow

from pynomaly_core.config import PipelineConfig
from tasks import training as stages


def dask_runner(config: PipelineConfig):
    from prefect_dask import DaskTaskRunner  # the `dask` extra; only parallel runs need it

    if config.train.dask_address:
        return DaskTaskRunner(address=config.train.dask_address)
    # One single-threaded process per worker: the detectors hold the GIL.
    return DaskTaskRunner(cluster_kwargs={"n_workers": config.train.workers, "threads_per_worker": 1, "processes": True})


@flow(name="tuning", log_prints=True)
def tuning_flow(config: PipelineConfig) -> str:
    """Fill the training study with `train.n_trials` trials from `train.workers` parallel tasks."""
    study_name = stages.create_study(config)
    futures = [stages.tune.submit(config, worker) for worker in range(config.train.workers)]
    for future in futures:
        future.result()
    return study_name


def tune_in_parallel(config: PipelineConfig) -> str:
    return tuning_flow.with_options(task_runner=dask_runner(config))(config)
