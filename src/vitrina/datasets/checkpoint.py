"""Kedro dataset for a CLIP checkpoint directory (ruCLIP layout or ``save_pretrained``)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import VersionNotFoundError
from kedro_datasets._typing import JSONPreview


class ClipCheckpointDataset(AbstractVersionedDataset[Any, Any]):
    """A CLIP checkpoint directory, optionally versioned.

    ``load()`` returns a :class:`vitrina.models.clip.ClipBundle` of either layout: ruCLIP
    (``bpe.model``, ``config.json``, ``pytorch_model.bin``: the hub's ``ai-forever/ruclip-*``
    checkpoints, which the old ruclip package loads too) or ``save_pretrained`` (any other
    Hugging Face CLIP), detected from the files. ``save(bundle)`` writes the bundle's own
    layout through a temporary directory renamed into place, so the directory is always
    complete.

    With ``versioned: true`` every save is a new directory
    ``<path>/<timestamp>/<name>/`` and ``load()`` takes the latest one (Kedro dataset
    versioning; pin one with ``--load-versions=<dataset>:<timestamp>``).

    Example catalogue entry::

        "{model}_finetuned.checkpoint":
          type: vitrina.datasets.ClipCheckpointDataset
          path: data/06_models/${globals:catalogue}/{model}_finetuned
          versioned: true
    """

    def __init__(
        self,
        path: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(PurePosixPath(Path(path).as_posix()), version)
        self._path = Path(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "version": self._version}

    def _hint(self) -> str:
        name = self._path.name
        return (
            f"run the pipeline that writes it first: `kedro run` (everything, in order), "
            f"`kedro run --pipeline=clip_finetune` for a fine-tuned model, or `kedro run "
            f"--pipeline=embeddings --to-outputs={name}.checkpoint` for the tiny model"
        )

    def _directory(self) -> Path:
        try:
            return Path(str(self._get_load_path()))
        except VersionNotFoundError as err:
            raise DatasetError(
                f"No version of checkpoint '{self._path.name}' has been saved under "
                f"'{self._path}' yet: {self._hint()}"
            ) from err

    def load(self) -> Any:
        from vitrina.models.clip import ClipBundle
        from vitrina.models.clip.hf import is_hf_checkpoint, is_ruclip_checkpoint

        path = self._directory()
        if not (is_ruclip_checkpoint(path) or is_hf_checkpoint(path)):
            present = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
            raise DatasetError(
                f"Checkpoint directory '{path}' holds neither a ruCLIP checkpoint (bpe.model, "
                "config.json, pytorch_model.bin) nor a save_pretrained one (config.json, "
                f"model.safetensors, processor_config.json); it has {present}: {self._hint()}"
            )
        return ClipBundle.load(path)

    def save(self, data: Any) -> None:
        from vitrina.models.clip import ClipBundle

        if not isinstance(data, ClipBundle):
            raise DatasetError(
                f"ClipCheckpointDataset saves a vitrina.models.clip.ClipBundle, got "
                f"{type(data).__name__}"
            )
        data.save(Path(str(self._get_save_path())))

    def _exists(self) -> bool:
        from vitrina.models.clip.hf import is_hf_checkpoint, is_ruclip_checkpoint

        path = Path(str(self._get_load_path()))
        return is_ruclip_checkpoint(path) or is_hf_checkpoint(path)

    def preview(self) -> JSONPreview:
        """kedro-viz preview: the checkpoint's ``config.json``, file sizes (MB), versions."""
        if not self.exists():
            return JSONPreview(json.dumps({"status": "not written yet", "path": str(self._path)}))
        path = self._directory()
        out: dict[str, Any] = {"config": json.loads((path / "config.json").read_text())}
        out["size_mb"] = {
            p.name: round(p.stat().st_size / 1e6, 3) for p in sorted(path.iterdir()) if p.is_file()
        }
        if self._version is not None:
            out["versions"] = self.list_versions(full_path=False)
        return JSONPreview(json.dumps(out, indent=2))
