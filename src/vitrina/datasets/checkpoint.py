"""Kedro dataset for a CLIP checkpoint directory (ruCLIP layout or ``save_pretrained``)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import VersionNotFoundError
from kedro_datasets._typing import JSONPreview

RUCLIP_FILES = ("bpe.model", "config.json", "pytorch_model.bin")


class RuClipCheckpointDataset(AbstractVersionedDataset[Any, Any]):
    """A CLIP checkpoint directory, optionally versioned.

    ``load()`` returns a :class:`vitrina.models.ruclip.RuClipBundle` for a ruCLIP
    checkpoint (``bpe.model``, ``config.json``, ``pytorch_model.bin``: the layout of the
    hub's ``ai-forever/ruclip-*`` checkpoints, which the old ruclip package loads too) and
    a :class:`vitrina.models.hf_clip.HfClipBundle` for a ``save_pretrained`` directory (any
    other Hugging Face CLIP).  ``save(bundle)`` writes the layout of the bundle's kind
    through a temporary directory renamed into place, so the directory is always complete.

    With ``versioned: true`` every save is a new directory
    ``<path>/<timestamp>/<name>/`` and ``load()`` takes the latest one (Kedro dataset
    versioning; pin one with ``--load-versions=<dataset>:<timestamp>``).

    Example catalogue entry::

        "{model}_finetuned.checkpoint":
          type: vitrina.datasets.RuClipCheckpointDataset
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
        from vitrina.models.hf_clip import is_hf_checkpoint, load_hf_clip
        from vitrina.models.ruclip import load_ruclip

        path = self._directory()
        if is_hf_checkpoint(path) and not (path / "bpe.model").is_file():
            return load_hf_clip(path)
        missing = [f for f in RUCLIP_FILES if not (path / f).is_file()]
        if missing:
            raise DatasetError(f"Checkpoint directory '{path}' lacks {missing}: {self._hint()}")
        return load_ruclip(path)

    def save(self, data: Any) -> None:
        from vitrina.models.hf_clip import HfClipBundle, save_hf_clip
        from vitrina.models.ruclip import RuClipBundle, save_ruclip_checkpoint

        path = Path(str(self._get_save_path()))
        if isinstance(data, RuClipBundle):
            save_ruclip_checkpoint(data.model, data.tokenizer, data.config, path)
        elif isinstance(data, HfClipBundle):
            save_hf_clip(data, path)
        else:
            raise DatasetError(
                "RuClipCheckpointDataset saves a RuClipBundle (ruCLIP layout) or an "
                f"HfClipBundle (save_pretrained), got {type(data).__name__}"
            )

    def _exists(self) -> bool:
        from vitrina.models.hf_clip import is_hf_checkpoint

        path = Path(str(self._get_load_path()))
        return all((path / f).is_file() for f in RUCLIP_FILES) or is_hf_checkpoint(path)

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
