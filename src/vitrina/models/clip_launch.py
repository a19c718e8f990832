"""Run :func:`~vitrina.models.clip_training.train_clip` in this process or data-parallel.

:func:`run_training` is what the ``clip_finetune`` pipeline calls.  With
``nproc_per_node > 1`` it writes a job directory (base checkpoint, the two splits, the
configuration) into the state directory and launches
``python -m torch.distributed.run --standalone --nproc_per_node=N -m vitrina.models.clip_launch JOB``
(``torchrun``, PyTorch's own launcher): every process trains a
``DistributedDataParallel`` replica on its share of each batch (NCCL on GPUs, gloo on
CPUs), rank 0 validates, logs to MLflow and checkpoints.  The same job directory can be
launched by hand on a multi-node cluster::

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
        -m vitrina.models.clip_launch data/06_models/<catalogue>/clip_finetune_state/job

(then ``kedro run --pipeline=clip_finetune`` picks the finished checkpoint up).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from vitrina.models.clip_training import (
    ClipAdapter,
    TrainConfig,
    TrainResult,
    _Progress,
    load_training_state,
    pair_data_from_frame,
    train_clip,
)

logger = logging.getLogger(__name__)

JOB_FILE = "job.json"


class MlflowTrainingLogger:
    """Training hooks that log to an MLflow run: ``<prefix>.train.<metric>`` per step
    (loss, lr, grad_norm, logit_scale, pairs_per_s) and ``<prefix>.val.<metric>`` per
    epoch (recall@k, median rank, losses)."""

    def __init__(
        self, run_id: str, prefix: str = "clip_finetune", tracking_uri: str | None = None
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self.prefix = prefix
        self.client = MlflowClient(tracking_uri)

    @classmethod
    def for_active_run(cls, prefix: str = "clip_finetune") -> MlflowTrainingLogger | None:
        """A logger for the active MLflow run (kedro-mlflow opens one), else ``None``."""
        try:
            import mlflow
        except ImportError:  # pragma: no cover - mlflow is a dependency
            return None
        run = mlflow.active_run()
        if run is None:
            return None
        return cls(run.info.run_id, prefix, mlflow.get_tracking_uri())

    def _log(self, group: str, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(f"{self.prefix}.{group}.{k}", float(v), now, int(step))
            for k, v in metrics.items()
            if k not in ("epoch", "step") and isinstance(v, int | float)
        ]
        try:
            self.client.log_batch(self.run_id, metrics=batch)
        except Exception as err:  # tracking must never stop training
            logger.warning("clip_finetune: MLflow logging failed: %s", err)

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        self._log("train", step, metrics)

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._log("val", epoch, metrics)


def resolve_nproc(nproc_per_node: int | str | None) -> int:
    """``auto`` → the number of visible GPUs (1 without CUDA); an int is used as is.

    Raises:
        ValueError: not ``auto`` and not a positive integer.
    """
    if nproc_per_node in (None, "auto"):
        return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
    n = int(nproc_per_node)
    if n < 1:
        raise ValueError(f"clip_finetune.nproc_per_node must be >= 1 or 'auto', got {n}")
    return n


def run_training(
    bundle: Any,
    train_pairs: pd.DataFrame,
    val_pairs: pd.DataFrame,
    config: TrainConfig,
    *,
    text_column: str = "title",
    state_dir: str | Path | None = None,
    resume: bool = True,
    nproc_per_node: int | str = 1,
    fingerprint_extra: str = "",
    mlflow_prefix: str = "clip_finetune",
) -> TrainResult:
    """Fine-tune a copy of ``bundle.model`` on the pairs (the bundle is left untouched).

    Args:
        bundle: base :class:`~vitrina.models.ruclip.RuClipBundle` or
            :class:`~vitrina.models.hf_clip.HfClipBundle`.
        train_pairs, val_pairs: pairs tables (``text_column``, ``processed_path``,
            ``image_key``, ``text_key``).
        config: training hyper-parameters.
        state_dir: checkpoints (required with more than one process).
        resume: continue from a matching checkpoint.
        nproc_per_node: data-parallel processes on this machine (``auto``: one per GPU).
        fingerprint_extra: digest of the data for the checkpoint fingerprint.
        mlflow_prefix: metric name prefix in the active MLflow run.

    Returns:
        :class:`~vitrina.models.clip_training.TrainResult` with the best weights.

    Raises:
        RuntimeError: a distributed worker failed (its log precedes the error).
        ValueError: more than one process without ``state_dir``.
    """
    nproc = resolve_nproc(nproc_per_node)
    if nproc > 1:
        if state_dir is None:
            raise ValueError("data-parallel training needs a state_dir for its job and results")
        return _launch(
            bundle,
            train_pairs,
            val_pairs,
            config,
            text_column=text_column,
            state_dir=Path(state_dir),
            resume=resume,
            nproc=nproc,
            fingerprint_extra=fingerprint_extra,
            mlflow_prefix=mlflow_prefix,
        )
    adapter = ClipAdapter(bundle)
    logger_hook = MlflowTrainingLogger.for_active_run(mlflow_prefix)
    return _train_in_process(
        adapter,
        copy.deepcopy(bundle.model),
        train_pairs,
        val_pairs,
        config,
        text_column=text_column,
        state_dir=state_dir,
        resume=resume,
        fingerprint_extra=fingerprint_extra,
        hooks=[logger_hook] if logger_hook else [],
    )


def _train_in_process(
    adapter: ClipAdapter,
    model: torch.nn.Module,
    train_pairs: pd.DataFrame,
    val_pairs: pd.DataFrame,
    config: TrainConfig,
    *,
    text_column: str,
    state_dir: str | Path | None,
    resume: bool,
    fingerprint_extra: str,
    hooks: list[Any],
) -> TrainResult:
    kwargs = dict(
        text_column=text_column,
        match_duplicates=config.match_duplicates,
        cache_mb=config.image_cache_mb,
        num_workers=config.num_workers,
        progress=config.progress,
    )
    train = pair_data_from_frame(adapter, train_pairs, **kwargs)
    val = pair_data_from_frame(adapter, val_pairs, **kwargs)
    return train_clip(
        model,
        train,
        val,
        config,
        state_dir=state_dir,
        resume=resume,
        fingerprint_extra=fingerprint_extra,
        hooks=hooks,
    )


def _save_bundle(bundle: Any, path: Path) -> None:
    from vitrina.models.hf_clip import HfClipBundle, save_hf_clip
    from vitrina.models.ruclip import save_ruclip_checkpoint

    if isinstance(bundle, HfClipBundle):
        save_hf_clip(bundle, path)
    else:
        save_ruclip_checkpoint(bundle.model, bundle.tokenizer, bundle.config, path)


def _load_bundle(path: Path) -> Any:
    from vitrina.models.hf_clip import load_clip_checkpoint

    return load_clip_checkpoint(path)


def _launch(
    bundle: Any,
    train_pairs: pd.DataFrame,
    val_pairs: pd.DataFrame,
    config: TrainConfig,
    *,
    text_column: str,
    state_dir: Path,
    resume: bool,
    nproc: int,
    fingerprint_extra: str,
    mlflow_prefix: str,
) -> TrainResult:
    """Write the job directory, run ``torchrun`` on it, read the best model back."""
    job = state_dir / "job"
    job.mkdir(parents=True, exist_ok=True)
    _save_bundle(bundle, job / "base")
    train_pairs.to_parquet(job / "train.parquet")
    val_pairs.to_parquet(job / "val.parquet")
    mlflow_hook = MlflowTrainingLogger.for_active_run(mlflow_prefix)
    spec = {
        "config": config.to_dict(),
        "text_column": text_column,
        "state_dir": str(state_dir.resolve()),
        "resume": bool(resume),
        "fingerprint_extra": fingerprint_extra,
        "mlflow": None
        if mlflow_hook is None
        else {
            "run_id": mlflow_hook.run_id,
            "tracking_uri": _absolute_tracking_uri(),
            "prefix": mlflow_prefix,
        },
    }
    (job / JOB_FILE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "vitrina.models.clip_launch",
        str(job.resolve()),
    ]
    logger.info("clip_finetune: launching %d data-parallel processes: %s", nproc, " ".join(cmd))
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"clip_finetune: distributed training failed (torchrun exit status "
            f"{done.returncode}; the workers' errors are in the log above). The last good "
            f"checkpoint stays in {state_dir}; rerun to resume from it"
        )
    return _result_from_state(copy.deepcopy(bundle.model), state_dir)


def _absolute_tracking_uri() -> str:
    """The MLflow tracking URI with a relative ``sqlite:///`` path made absolute."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def _result_from_state(model: torch.nn.Module, state_dir: Path) -> TrainResult:
    """The finished run's :class:`TrainResult`, best weights loaded into ``model``."""
    state = load_training_state(state_dir)
    if state is None or not state["progress"]["finished"]:
        raise RuntimeError(f"clip_finetune: no finished training run in {state_dir}")
    progress = state["progress"]
    best = torch.load(state_dir / progress["best_file"], map_location="cpu", weights_only=True)
    model.load_state_dict(best)
    return _Progress(**progress).result(model.eval(), None)


def worker_main(argv: list[str] | None = None) -> int:
    """Entry point of one ``torchrun`` process: ``python -m vitrina.models.clip_launch JOB``."""
    import torch.distributed as dist

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)  # noqa: T201
        return 2
    job = Path(argv[0])
    spec = json.loads((job / JOB_FILE).read_text(encoding="utf-8"))
    config = TrainConfig.from_dict(spec["config"])
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    use_cuda = torch.cuda.is_available() and config.device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        bundle = _load_bundle(job / "base")
        hooks = []
        if rank == 0 and spec.get("mlflow"):
            m = spec["mlflow"]
            hooks.append(MlflowTrainingLogger(m["run_id"], m["prefix"], m["tracking_uri"]))
        _train_in_process(
            ClipAdapter(bundle),
            bundle.model,
            pd.read_parquet(job / "train.parquet"),
            pd.read_parquet(job / "val.parquet"),
            dataclasses.replace(config, progress=config.progress and rank == 0),
            text_column=spec["text_column"],
            state_dir=spec["state_dir"],
            resume=spec["resume"],
            fingerprint_extra=spec["fingerprint_extra"],
            hooks=hooks,
        )
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
