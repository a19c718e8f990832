"""A trained image classifier as a self-describing folder, and loading it safely.

Layout (written atomically as one folder by :meth:`ImageClassifier.save`):

```
config.json        kind, task, classes, thresholds, image size, mean/std, backbone spec,
                   metrics, source checkpoint, git commit
model.safetensors  the task's weights (backbone + head (+ ArcFace centres))
gallery.npz        metric learning only: ids [N] str, labels [N] str, embeddings [N, E]
```

No pickle anywhere: weights are safetensors, the rest JSON and a plain NPZ
(``allow_pickle=False``). Lightning checkpoints are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitrina.utils import atomic_path

from .backbones import backbone_from_spec
from .kinds import task_class
from .task_base import ImageTask


class CheckpointMismatchError(ValueError):
    """A checkpoint's kind or classes differ from what the caller expects."""


def task_from_hparams(hparams: dict[str, Any]) -> ImageTask:
    """Rebuild a task (random weights) from its saved hyper-parameters, offline."""
    cls = task_class(hparams["kind"])
    return cls(
        backbone_from_spec(hparams["backbone_spec"]),
        classes=list(hparams["classes"]),
        training=dict(hparams["training"]),
        options=dict(hparams.get("options") or {}),
        image_size=int(hparams["image_size"]),
    )


def load_lightning_checkpoint(path: str | Path) -> ImageTask:
    """A task with the weights of a Lightning checkpoint (``best.ckpt``).

    Raises:
        FileNotFoundError: no such file.
        pickle.UnpicklingError: the file holds more than tensors and plain containers
            (``weights_only=True`` refuses it).
    """
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    task = task_from_hparams(ckpt["hyper_parameters"])
    task.load_state_dict(ckpt["state_dict"])
    return task.eval()


def check_compatible(
    config: dict[str, Any],
    *,
    kind: str | None = None,
    n_classes: int | None = None,
    source: str = "",
) -> None:
    """Refuse a checkpoint of another kind or class count, naming both.

    Raises:
        CheckpointMismatchError: ``kind`` or ``n_classes`` differs from the checkpoint's.
    """
    have_kind, have_n = config.get("kind"), len(config.get("classes", []))
    if kind is not None and have_kind != kind:
        raise CheckpointMismatchError(
            f"checkpoint {source} is a {have_kind!r} model; this task is {kind!r}"
        )
    if n_classes is not None and have_n != n_classes:
        raise CheckpointMismatchError(
            f"checkpoint {source} has {have_n} classes; this task has {n_classes}. Set "
            "init.new_head: true to keep only its backbone weights."
        )


@dataclass
class ImageClassifier:
    """A trained task with everything inference needs.

    Attributes:
        task: the LightningModule, in eval mode.
        config: JSON-serialisable description (see the module docstring).
        gallery: metric learning: ``{"ids", "labels", "embeddings"}`` of the reference
            items that queries are matched against; ``None`` otherwise.
    """

    task: ImageTask
    config: dict[str, Any]
    gallery: dict[str, np.ndarray] | None = field(default=None)

    @property
    def kind(self) -> str:
        return self.config["kind"]

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    def save(self, path: str | Path) -> None:
        """Write the folder atomically (an existing one is replaced)."""
        from safetensors.torch import save_file

        with atomic_path(path, is_dir=True) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.task.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(
                json.dumps(self.config, indent=2, default=_json_default)
            )
            if self.gallery is not None:
                np.savez(
                    tmp / "gallery.npz",
                    ids=np.asarray(self.gallery["ids"], dtype=str),
                    labels=np.asarray(self.gallery["labels"], dtype=str),
                    embeddings=np.asarray(self.gallery["embeddings"], dtype=np.float32),
                )

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        kind: str | None = None,
        n_classes: int | None = None,
        device: str = "cpu",
    ) -> ImageClassifier:
        """Load a saved folder; optionally check its kind and class count.

        Raises:
            FileNotFoundError: ``config.json`` or ``model.safetensors`` is missing (naming it).
            CheckpointMismatchError: see :func:`check_compatible`.
        """
        from safetensors.torch import load_file

        path = Path(path)
        for name in ("config.json", "model.safetensors"):
            if not (path / name).is_file():
                raise FileNotFoundError(
                    f"{path / name} is missing: {path} is not a trained Vitrina classifier"
                )
        config = json.loads((path / "config.json").read_text())
        check_compatible(config, kind=kind, n_classes=n_classes, source=str(path))
        task = task_from_hparams(config["hparams"])
        task.load_state_dict(load_file(str(path / "model.safetensors")))
        gallery = None
        if (path / "gallery.npz").is_file():
            with np.load(path / "gallery.npz", allow_pickle=False) as data:
                gallery = {k: data[k] for k in ("ids", "labels", "embeddings")}
        return cls(task.to(device).eval(), config, gallery)

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities ``[N, C]`` or embeddings ``[N, E]`` of ``uint8 [N, S, S, 3]`` images."""
        return self.task.predict_images(images, batch_size=batch_size)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
