"""ruCLIP checkpoint directories: find (local or hub), load and save.

A ruCLIP checkpoint directory (``ai-forever/ruclip-vit-base-patch32-384`` and siblings on
the Hugging Face hub) holds :data:`CHECKPOINT_FILES`: ``bpe.model`` (youtokentome BPE),
``config.json`` (:class:`~vitrina.models.ruclip.configuration.RuClipConfig`) and
``pytorch_model.bin`` (OpenAI-layout state dict).  Only :func:`resolve_checkpoint` may reach
the hub.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPModel

from vitrina.models.ruclip.configuration import RuClipConfig
from vitrina.models.ruclip.convert import convert_openai_state_dict, to_openai_state_dict
from vitrina.models.ruclip.processing import make_image_processor
from vitrina.models.ruclip.tokenization import RuClipTokenizer
from vitrina.utils import new_temporary

__all__ = [
    "CHECKPOINT_FILES",
    "HUB_ORG",
    "CheckpointNotFoundError",
    "RuClipBundle",
    "load_ruclip",
    "resolve_checkpoint",
    "save_ruclip_checkpoint",
]

#: The files of a ruCLIP checkpoint directory.
CHECKPOINT_FILES = ("bpe.model", "config.json", "pytorch_model.bin")
#: Hub organisation used for bare ``ruclip-*`` model names (formerly ``sberbank-ai``).
HUB_ORG = "ai-forever"


class CheckpointNotFoundError(FileNotFoundError):
    """A ruCLIP checkpoint is neither a local directory nor obtainable from the hub."""


def _missing_files(path: Path, required: Sequence[str]) -> list[str]:
    return [f for f in required if not (path / f).is_file()]


# Weight formats a PyTorch user never needs; skipped when a whole hub repo is downloaded.
_HUB_IGNORE = [
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.onnx_data",
    "*.ot",
    "*.tflite",
    "*.mlmodel",
    "*.gguf",
]


def resolve_checkpoint(
    name_or_path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    required_files: Sequence[str] | None = CHECKPOINT_FILES,
) -> Path:
    """Find a checkpoint directory (by default a ruCLIP one), downloading it if needed.

    Resolution order:

    1. an existing local directory is used as is (it must contain ``required_files``);
    2. otherwise ``name_or_path`` is a hub repo id (a bare name without ``/`` gets the
       ``ai-forever/`` prefix, e.g. ``ruclip-vit-base-patch32-384``):
       :func:`huggingface_hub.snapshot_download` with ``local_files_only=True`` (the local HF
       cache, or ``cache_dir``) first, then -- unless ``HF_HUB_OFFLINE`` is set -- from the
       hub, fetching only ``required_files`` (or the whole repo minus non-PyTorch weight
       formats when ``required_files`` is ``None``).

    Args:
        name_or_path: local directory, hub repo id (``ai-forever/ruclip-vit-base-patch32-384``)
            or bare ruCLIP model name.
        cache_dir: hub cache directory (default: huggingface_hub's, ``HF_HUB_CACHE``).
        required_files: files the directory must hold; default :data:`CHECKPOINT_FILES`
            (ruCLIP).  Pass ``None`` for any other hub checkpoint (e.g. a ``transformers``
            CLIP/SigLIP repo), which is then accepted without a file check.

    Returns:
        The checkpoint directory.

    Raises:
        CheckpointNotFoundError (a ``FileNotFoundError``): a local directory lacks required
            files, or the id is neither cached nor downloadable (offline, unknown repo, no
            network, ...); the message names the id and explains how to pass a local
            checkpoint directory instead.  No network access happens when the checkpoint is
            a local directory, is cached, or ``HF_HUB_OFFLINE=1``.
    """
    required = list(required_files or [])
    raw = os.fspath(name_or_path)
    path = Path(raw).expanduser()
    if path.is_dir():
        missing = _missing_files(path, required)
        if missing:
            raise CheckpointNotFoundError(
                f"{path} is not a ruCLIP checkpoint directory: missing {missing} "
                f"(expected {required})"
            )
        return path
    if path.exists():
        raise CheckpointNotFoundError(f"{path} is a file; pass the checkpoint directory")

    repo_id = raw if "/" in raw else f"{HUB_ORG}/{raw}"
    how_to = (
        f"To work offline, download it on a machine with internet access (`hf download "
        f"{repo_id}{''.join(' ' + f for f in required)} --local-dir DIR`), copy DIR here and "
        f"pass the directory path instead of the hub id"
        + (f" (it must contain {required})." if required else ".")
    )
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)
    except Exception as err:
        raise CheckpointNotFoundError(
            f"{raw!r} is not an existing local directory, nor a valid hub repo id such as "
            f"'{HUB_ORG}/ruclip-vit-base-patch32-384'. Pass the path of a checkpoint directory"
            + (f" containing {required}." if required else ".")
        ) from err

    def offline() -> bool:
        return bool(getattr(constants, "is_offline_mode", lambda: constants.HF_HUB_OFFLINE)())

    errors: list[BaseException] = []
    for local_only in [True] if offline() else [True, False]:
        try:
            folder = Path(
                snapshot_download(
                    repo_id,
                    cache_dir=cache_dir,
                    local_files_only=local_only,
                    allow_patterns=required or None,
                    ignore_patterns=None if required else _HUB_IGNORE,
                )
            )
        except Exception as err:  # LocalEntryNotFoundError, network / auth / 404 errors, ...
            errors.append(err)
            continue
        missing = _missing_files(folder, required)
        if not missing:
            return folder
        errors.append(FileNotFoundError(f"{folder} lacks {missing}"))
    why = " (HF_HUB_OFFLINE is set)" if offline() else ""
    raise CheckpointNotFoundError(
        f"Checkpoint {repo_id!r} is not a local directory, not in the Hugging Face cache and "
        f"could not be downloaded from the hub{why}: {type(errors[-1]).__name__}: "
        f"{str(errors[-1])[:300].rstrip('.')}. {how_to}"
    ) from errors[-1]


# ---------------------------------------------------------------------- load / save
@dataclass
class RuClipBundle:
    """A loaded ruCLIP checkpoint.

    Attributes:
        model: ``transformers.CLIPModel`` in eval mode on the requested device.
        tokenizer: :class:`RuClipTokenizer` (``context_length`` from the config).
        image_processor: from :func:`make_image_processor`.
        config: the checkpoint's :class:`RuClipConfig`.
        path: the resolved checkpoint directory (``None`` if built in memory).
    """

    model: CLIPModel
    tokenizer: RuClipTokenizer
    image_processor: Any
    config: RuClipConfig
    path: Path | None = None


def load_ruclip(
    name_or_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
) -> RuClipBundle:
    """Load a ruCLIP checkpoint (local directory or hub id) as a :class:`RuClipBundle`.

    Args:
        name_or_path: see :func:`resolve_checkpoint`.
        device: where to put the model.
        cache_dir: hub cache directory for :func:`resolve_checkpoint`.

    Raises:
        CheckpointNotFoundError: see :func:`resolve_checkpoint`.
        ValueError: config / state dict / tokenizer inconsistent (e.g. the BPE has more tokens
            than ``config.vocab_size``).
    """
    path = resolve_checkpoint(name_or_path, cache_dir=cache_dir)
    config = RuClipConfig.from_json(path / "config.json")
    tokenizer = RuClipTokenizer.from_file(path / "bpe.model", config.context_length)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"{path}: bpe.model has {tokenizer.vocab_size} tokens but config vocab_size is "
            f"{config.vocab_size}"
        )
    state_dict = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    model = convert_openai_state_dict(state_dict, config).to(device).eval()
    return RuClipBundle(model, tokenizer, make_image_processor(config), config, path)


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished ``tmp`` directory to ``out_dir``, replacing an old checkpoint."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.replace(out_dir, old / out_dir.name)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old / out_dir.name, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_ruclip_checkpoint(
    model: CLIPModel,
    tokenizer: RuClipTokenizer,
    config: RuClipConfig,
    out_dir: str | os.PathLike[str],
) -> Path:
    """Save a checkpoint in the ruCLIP layout (``bpe.model``, ``config.json``, ``pytorch_model.bin``).

    The weights go through :func:`to_openai_state_dict`, so the directory loads with
    :func:`load_ruclip` and with the original ``ruclip`` package.  Files are written into a
    temporary directory next to ``out_dir`` and then renamed into place, so ``out_dir`` never
    holds a partial checkpoint.  An existing ``out_dir`` is replaced only if it is empty or
    holds nothing but checkpoint files.

    Returns:
        ``Path(out_dir)``.

    Raises:
        ValueError: ``config`` does not describe ``model``, or the tokenizer vocabulary is
            larger than ``config.vocab_size`` / its ``context_length`` differs.
        FileExistsError: ``out_dir`` exists and holds other files (or is a file).
    """
    out_dir = Path(out_dir)
    arch = RuClipConfig.from_clip_model(model, config.mean, config.std)
    if arch != config:
        diff = {
            k: (v, getattr(arch, k)) for k, v in config.to_dict().items() if arch.to_dict()[k] != v
        }
        raise ValueError(f"config does not match the model (config, model): {diff}")
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"tokenizer has {tokenizer.vocab_size} tokens > vocab_size {config.vocab_size}"
        )
    if tokenizer.context_length != config.context_length:
        raise ValueError(
            f"tokenizer context_length {tokenizer.context_length} != config {config.context_length}"
        )
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} exists and is not a directory")
        extra = sorted(p.name for p in out_dir.iterdir() if p.name not in CHECKPOINT_FILES)
        if extra:
            raise FileExistsError(
                f"refusing to replace {out_dir}: it holds non-checkpoint files {extra[:5]}"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temporary(out_dir, is_dir=True)  # 0o777 less the umask
    try:
        tokenizer.save(tmp)
        config.to_json(tmp / "config.json")
        torch.save(to_openai_state_dict(model), tmp / "pytorch_model.bin")
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
