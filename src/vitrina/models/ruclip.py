"""ruCLIP checkpoints as ``transformers.CLIPModel`` + a youtokentome-exact tokenizer.

A ruCLIP checkpoint directory (``ai-forever/ruclip-vit-base-patch32-384`` and siblings on
the Hugging Face hub) holds three files:

* ``config.json`` -- :class:`RuClipConfig` (the ``ruclip.CLIP`` constructor arguments plus
  the image ``mean``/``std``);
* ``pytorch_model.bin`` -- a ``torch.save``-d state dict in the OpenAI CLIP key layout
  (``visual.conv1.weight``, ``transformer.resblocks.0.attn.in_proj_weight``, ...);
* ``bpe.model`` -- a youtokentome BPE model (:mod:`vitrina.models.yttm`).

The ``ruclip`` package itself cannot be imported with current ``huggingface_hub`` and needs
``youtokentome``, so Vitrina converts instead:

* weights -> :class:`transformers.CLIPModel` (:func:`convert_openai_state_dict`; inverse
  :func:`to_openai_state_dict`), text config ``hidden_act="quick_gelu"``, ``pad_token_id=0``,
  ``bos_token_id=2``, ``eos_token_id=3`` so that ``CLIPModel`` pools the text features at the
  (first) eos position exactly like ``ruclip.CLIP.encode_text``
  (``x[arange, torch.where(input_ids == 3)[1]] @ text_projection``);
* ``bpe.model`` -> :class:`RuClipTokenizer` (lower-case, youtokentome ids, truncate to
  ``context_length - 2``, wrap in bos 2 / eos 3, pad with 0 -- ``ruclip.RuCLIPProcessor``);
* images -> :func:`make_image_processor` (shortest-edge resize + centre crop to
  ``image_resolution``, config ``mean``/``std``).

Everything here runs offline; only :func:`resolve_checkpoint` may reach the hub.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel

from vitrina.models.yttm import (
    YttmConversionError,
    YttmModel,
    YttmSpecialTokens,
    read_yttm_model,
    train_yttm_bpe,
    write_yttm_model,
    yttm_to_tokenizer,
)
from vitrina.utils import new_temporary

__all__ = [
    "CHECKPOINT_FILES",
    "CheckpointNotFoundError",
    "RuClipBundle",
    "RuClipConfig",
    "RuClipTokenizer",
    "convert_openai_state_dict",
    "image_features",
    "load_ruclip",
    "make_image_processor",
    "resolve_checkpoint",
    "save_ruclip_checkpoint",
    "text_features",
    "to_openai_state_dict",
    "write_tiny_ruclip_checkpoint",
]

#: The files of a ruCLIP checkpoint directory.
CHECKPOINT_FILES = ("bpe.model", "config.json", "pytorch_model.bin")
#: Hub organisation used for bare ``ruclip-*`` model names (formerly ``sberbank-ai``).
HUB_ORG = "ai-forever"

# ruclip.RuCLIPProcessor class constants.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
RUCLIP_SPECIAL_TOKENS = YttmSpecialTokens(
    pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID
)

# OpenAI CLIP image normalisation; ruclip.RuCLIPProcessor falls back to these when
# config.json has no mean/std.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Keys found in some OpenAI state dicts (JIT archives) that are not parameters.
_IGNORED_OPENAI_KEYS = frozenset({"input_resolution", "context_length", "vocab_size"})


class CheckpointNotFoundError(FileNotFoundError):
    """A ruCLIP checkpoint is neither a local directory nor obtainable from the hub."""


# ---------------------------------------------------------------------- config
@dataclass(frozen=True)
class RuClipConfig:
    """ruCLIP ``config.json``: the ``ruclip.CLIP`` constructor arguments + image mean/std.

    All architecture fields are required (they come from the checkpoint).  ``mean``/``std``
    default to the OpenAI CLIP values, which is what ``ruclip.RuCLIPProcessor`` uses when the
    config has none.  Derived quantities follow ``ruclip.CLIP`` / OpenAI CLIP (Radford et al.
    2021): vision heads = ``vision_width // 64``, MLP width = 4 x width.

    Attributes:
        embed_dim: joint embedding size (output of ``visual.proj`` / ``text_projection``).
        image_resolution: square input image side in pixels.
        vision_layers, vision_width, vision_patch_size: the ViT image tower.
        context_length: text positions (77 in all ruCLIP models), bos and eos included.
        vocab_size: rows of ``token_embedding``; must be >= the BPE vocabulary size.
        transformer_width, transformer_heads, transformer_layers: the text tower.
        mean, std: per-channel RGB normalisation applied after scaling pixels to [0, 1].
    """

    embed_dim: int
    image_resolution: int
    vision_layers: int
    vision_width: int
    vision_patch_size: int
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in ("mean", "std"):
                if len(v) != 3:
                    raise ValueError(f"{f.name} must have 3 values (RGB), got {v}")
            elif not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{f.name} must be a positive int, got {v!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.image_resolution % self.vision_patch_size:
            raise ValueError(
                f"image_resolution {self.image_resolution} is not a multiple of "
                f"vision_patch_size {self.vision_patch_size}"
            )
        if self.vision_width < 64 or self.vision_width % 64:
            raise ValueError(
                f"vision_width must be a multiple of 64 (ruclip uses vision_width // 64 heads), "
                f"got {self.vision_width}"
            )
        if self.transformer_width % self.transformer_heads:
            raise ValueError(
                f"transformer_width {self.transformer_width} is not divisible by "
                f"transformer_heads {self.transformer_heads}"
            )
        if self.context_length < 2:
            raise ValueError("context_length must be >= 2 (bos + eos)")

    @property
    def vision_heads(self) -> int:
        """Attention heads of the image tower: ``vision_width // 64`` (ruclip / OpenAI CLIP)."""
        return self.vision_width // 64

    @property
    def grid_size(self) -> int:
        """Patches per image side: ``image_resolution // vision_patch_size``."""
        return self.image_resolution // self.vision_patch_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in ruCLIP key order (``mean``/``std`` as lists)."""
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuClipConfig:
        """Build from a ``config.json`` dict; unknown keys are ignored.

        Raises:
            ValueError: a required key is missing or a value is invalid.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        required = [n for n in names if n not in ("mean", "std")]
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"ruCLIP config is missing keys: {missing}")
        kwargs = {k: data[k] for k in names if k in data and data[k] is not None}
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> RuClipConfig:
        """Read ``config.json`` (a file, or a checkpoint directory containing one).

        Raises:
            FileNotFoundError: no such file.  ValueError: invalid content.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` (indented, ruCLIP key order); returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def to_clip_config(self) -> CLIPConfig:
        """The equivalent :class:`transformers.CLIPConfig` (quick_gelu, eps 1e-5, eos id 3)."""
        text = dict(
            vocab_size=self.vocab_size,
            hidden_size=self.transformer_width,
            intermediate_size=4 * self.transformer_width,
            projection_dim=self.embed_dim,
            num_hidden_layers=self.transformer_layers,
            num_attention_heads=self.transformer_heads,
            max_position_embeddings=self.context_length,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            pad_token_id=PAD_ID,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
        )
        vision = dict(
            hidden_size=self.vision_width,
            intermediate_size=4 * self.vision_width,
            projection_dim=self.embed_dim,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads,
            num_channels=3,
            image_size=self.image_resolution,
            patch_size=self.vision_patch_size,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        )
        return CLIPConfig(
            text_config=text,
            vision_config=vision,
            projection_dim=self.embed_dim,
            logit_scale_init_value=math.log(1 / 0.07),
        )

    @classmethod
    def from_clip_model(
        cls,
        model: CLIPModel,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
    ) -> RuClipConfig:
        """Read the architecture back from a ``CLIPModel`` (mean/std are not stored there).

        Raises:
            ValueError: the model cannot be expressed in the ruclip layout (activation other
                than quick_gelu, MLP width != 4 x width, vision heads != width // 64, eos id
                other than 3, ...).
        """
        t, v = model.config.text_config, model.config.vision_config
        problems = []
        for name, c in (("text", t), ("vision", v)):
            if c.hidden_act != "quick_gelu":
                problems.append(f"{name} hidden_act={c.hidden_act!r} (ruclip uses quick_gelu)")
            if c.intermediate_size != 4 * c.hidden_size:
                problems.append(f"{name} intermediate_size={c.intermediate_size} != 4 x width")
        if v.num_attention_heads * 64 != v.hidden_size:
            problems.append(f"vision heads {v.num_attention_heads} != vision width // 64")
        if t.eos_token_id != EOS_ID:
            problems.append(f"text eos_token_id={t.eos_token_id} (ruCLIP pools at id {EOS_ID})")
        if problems:
            raise ValueError("not a ruCLIP-compatible CLIPModel: " + "; ".join(problems))
        return cls(
            embed_dim=model.config.projection_dim,
            image_resolution=int(v.image_size),
            vision_layers=v.num_hidden_layers,
            vision_width=v.hidden_size,
            vision_patch_size=int(v.patch_size),
            context_length=t.max_position_embeddings,
            vocab_size=t.vocab_size,
            transformer_width=t.hidden_size,
            transformer_heads=t.num_attention_heads,
            transformer_layers=t.num_hidden_layers,
            mean=tuple(mean),
            std=tuple(std),
        )


# ---------------------------------------------------------------------- checkpoint location
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


# ---------------------------------------------------------------------- tokenizer
class RuClipTokenizer:
    """ruCLIP text tokenizer (``ruclip.RuCLIPProcessor.encode_text``) without youtokentome.

    For each text: ``text.lower()`` (Python's), youtokentome BPE ids (dropout 0), truncate
    to ``context_length - 2`` ids, prepend bos (2), append eos (3), pad with 0.  The BPE runs
    in the ``tokenizers`` Rust library (:func:`~vitrina.models.yttm.yttm_to_tokenizer`) and
    falls back to the exact pure-Python encoder if the model cannot be converted.

    Args:
        bpe: the youtokentome model; its special ids must be pad 0, unk 1, bos 2, eos 3.
        context_length: maximum length including bos/eos (``config.json``; 77 in ruCLIP).
        lowercase: lower-case texts first (ruCLIP does).

    Raises:
        ValueError: special ids differ from ruCLIP's, or ``context_length`` < 2.
    """

    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, bpe: YttmModel, context_length: int = 77, *, lowercase: bool = True):
        if bpe.special != RUCLIP_SPECIAL_TOKENS:
            raise ValueError(
                f"ruCLIP needs special ids pad 0, unk 1, bos 2, eos 3; got {bpe.special.as_dict()}"
            )
        if context_length < 2:
            raise ValueError("context_length must be >= 2 (bos + eos)")
        self.bpe = bpe
        self.context_length = int(context_length)
        self.lowercase = lowercase
        try:
            self._fast = yttm_to_tokenizer(bpe)
        except YttmConversionError as err:
            warnings.warn(f"using the slow pure-Python BPE encoder: {err}", stacklevel=2)
            self._fast = None

    @property
    def backend(self) -> str:
        """``"tokenizers"`` (Rust) or ``"python"`` (fallback encoder)."""
        return "python" if self._fast is None else "tokenizers"

    @property
    def vocab_size(self) -> int:
        """BPE vocabulary size (ids are < this)."""
        return self.bpe.vocab_size

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], context_length: int = 77, **kwargs: Any
    ) -> RuClipTokenizer:
        """Load from a ``bpe.model`` file or a checkpoint directory containing one."""
        path = Path(path)
        if path.is_dir():
            path = path / "bpe.model"
        return cls(read_yttm_model(path), context_length, **kwargs)

    def bpe_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Raw youtokentome ids (after lower-casing), no bos/eos, no truncation."""
        texts = [t.lower() if self.lowercase else t for t in texts]
        if self._fast is None:
            return self.bpe.encode(texts)
        return [e.ids for e in self._fast.encode_batch(texts, add_special_tokens=False)]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """ruCLIP token ids without padding: ``[2] + bpe_ids[: context_length - 2] + [3]``."""
        keep = self.context_length - 2
        return [[self.bos_id, *ids[:keep], self.eos_id] for ids in self.bpe_ids(texts)]

    def __call__(
        self,
        texts: str | Sequence[str],
        padding: Literal["longest", "max_length"] = "longest",
    ) -> dict[str, torch.Tensor]:
        """Tokenize a batch.

        Args:
            texts: a string or a sequence of strings.
            padding: ``"max_length"`` pads every row to ``context_length`` (what
                ``ruclip.RuCLIPProcessor`` does); ``"longest"`` pads only to the longest row
                of the batch -- faster, and the eos-pooled text features are identical
                because the text transformer is causal.

        Returns:
            ``{"input_ids": LongTensor[B, L], "attention_mask": LongTensor[B, L]}``; the mask
            is 1 on bos..eos and 0 on padding.  ``L`` is ``context_length`` or the longest
            row (>= 2); an empty batch gives shape ``[0, context_length]``.

        Raises:
            ValueError: unknown ``padding``.  TypeError: texts are not strings.
        """
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings, got {bad[:3]}")
        rows = self.encode(texts)
        if padding == "max_length" or not rows:
            length = self.context_length
        else:
            length = max(len(r) for r in rows)
        ids = np.full((len(rows), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of one row of ids, skipping pad/unk/bos/eos (``RuCLIPProcessor.decode_text``)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.bpe.decode(ids, ignore_ids=(PAD_ID, UNK_ID, BOS_ID, EOS_ID))

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``bpe.model`` into ``directory`` (created if needed); returns the file path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return write_yttm_model(self.bpe, directory / "bpe.model")


# ---------------------------------------------------------------------- weights
def _expected_openai_shapes(cfg: RuClipConfig) -> dict[str, tuple[int, ...]]:
    """OpenAI/ruclip CLIP parameter shapes, in ``ruclip.CLIP.state_dict()`` order."""
    vw, tw, e = cfg.vision_width, cfg.transformer_width, cfg.embed_dim
    p = cfg.vision_patch_size
    shapes: dict[str, tuple[int, ...]] = {
        "positional_embedding": (cfg.context_length, tw),
        "text_projection": (tw, e),
        "logit_scale": (),
        "visual.class_embedding": (vw,),
        "visual.positional_embedding": (cfg.grid_size**2 + 1, vw),
        "visual.proj": (vw, e),
        "visual.conv1.weight": (vw, 3, p, p),
        "visual.ln_pre.weight": (vw,),
        "visual.ln_pre.bias": (vw,),
    }

    def blocks(prefix: str, width: int, layers: int) -> None:
        for i in range(layers):
            b = f"{prefix}.resblocks.{i}"
            shapes.update(
                {
                    f"{b}.attn.in_proj_weight": (3 * width, width),
                    f"{b}.attn.in_proj_bias": (3 * width,),
                    f"{b}.attn.out_proj.weight": (width, width),
                    f"{b}.attn.out_proj.bias": (width,),
                    f"{b}.ln_1.weight": (width,),
                    f"{b}.ln_1.bias": (width,),
                    f"{b}.mlp.c_fc.weight": (4 * width, width),
                    f"{b}.mlp.c_fc.bias": (4 * width,),
                    f"{b}.mlp.c_proj.weight": (width, 4 * width),
                    f"{b}.mlp.c_proj.bias": (width,),
                    f"{b}.ln_2.weight": (width,),
                    f"{b}.ln_2.bias": (width,),
                }
            )

    blocks("visual.transformer", vw, cfg.vision_layers)
    shapes.update({"visual.ln_post.weight": (vw,), "visual.ln_post.bias": (vw,)})
    blocks("transformer", tw, cfg.transformer_layers)
    shapes.update(
        {
            "token_embedding.weight": (cfg.vocab_size, tw),
            "ln_final.weight": (tw,),
            "ln_final.bias": (tw,),
        }
    )
    return shapes


def _block_map(openai_prefix: str, hf_prefix: str, layers: int) -> dict[str, str]:
    """OpenAI resblock key -> HF encoder layer key (``in_proj`` handled separately)."""
    m = {}
    for i in range(layers):
        o, h = f"{openai_prefix}.resblocks.{i}", f"{hf_prefix}.layers.{i}"
        for pn in ("weight", "bias"):
            m[f"{o}.attn.out_proj.{pn}"] = f"{h}.self_attn.out_proj.{pn}"
            m[f"{o}.ln_1.{pn}"] = f"{h}.layer_norm1.{pn}"
            m[f"{o}.mlp.c_fc.{pn}"] = f"{h}.mlp.fc1.{pn}"
            m[f"{o}.mlp.c_proj.{pn}"] = f"{h}.mlp.fc2.{pn}"
            m[f"{o}.ln_2.{pn}"] = f"{h}.layer_norm2.{pn}"
    return m


def _key_map(cfg: RuClipConfig) -> dict[str, str]:
    """OpenAI key -> HF ``CLIPModel`` key for all 1:1 tensors (no transpose, no split)."""
    m = {
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
    }
    m.update(_block_map("visual.transformer", "vision_model.encoder", cfg.vision_layers))
    m.update(_block_map("transformer", "text_model.encoder", cfg.transformer_layers))
    return m


# (OpenAI in_proj prefix, HF attention prefix, layers) for both towers.
def _attn_pairs(cfg: RuClipConfig) -> list[tuple[str, str]]:
    pairs = []
    for o, h, n in (
        ("visual.transformer", "vision_model.encoder", cfg.vision_layers),
        ("transformer", "text_model.encoder", cfg.transformer_layers),
    ):
        pairs += [(f"{o}.resblocks.{i}.attn", f"{h}.layers.{i}.self_attn") for i in range(n)]
    return pairs


def convert_openai_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: RuClipConfig
) -> CLIPModel:
    """Build a :class:`transformers.CLIPModel` from an OpenAI/ruclip-layout state dict.

    Mapping: ``attn.in_proj_weight``/``in_proj_bias`` ``[3W, W]``/``[3W]`` are split into
    ``q_proj``/``k_proj``/``v_proj``; ``visual.proj`` ``[Wv, E]`` and ``text_projection``
    ``[Wt, E]`` become the transposed ``visual_projection``/``text_projection`` Linear
    weights ``[E, W]``; everything else is renamed (``ln_1`` -> ``layer_norm1``,
    ``mlp.c_fc`` -> ``mlp.fc1``, ``ln_pre`` -> ``pre_layrnorm``, ...).  Tensors of any float
    dtype are copied into the float32 model; the input is not modified.

    Args:
        state_dict: ``torch.load("pytorch_model.bin")`` of a ruCLIP checkpoint.  The
            non-tensor keys ``input_resolution``/``context_length``/``vocab_size`` of OpenAI
            JIT archives are ignored.
        config: the checkpoint's :class:`RuClipConfig`.

    Returns:
        A float32 ``CLIPModel`` in eval mode on the CPU.

    Raises:
        ValueError: missing or unexpected keys, or shapes that do not match ``config``.
    """
    expected = _expected_openai_shapes(config)
    keys = set(state_dict) - _IGNORED_OPENAI_KEYS
    missing = sorted(set(expected) - keys)
    unexpected = sorted(keys - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"state dict does not match the ruCLIP config: missing {missing[:10]}"
            f"{'...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
            f"{'...' if len(unexpected) > 10 else ''}"
        )
    bad = [
        f"{k}: {tuple(state_dict[k].shape)} != {shape}"
        for k, shape in expected.items()
        if tuple(state_dict[k].shape) != shape
    ]
    if bad:
        raise ValueError(f"state dict shapes do not match the ruCLIP config: {bad[:10]}")

    hf: dict[str, torch.Tensor] = {}
    for o, h in _key_map(config).items():
        hf[h] = state_dict[o]
    for o, h in _attn_pairs(config):
        for name, t in (
            ("weight", state_dict[f"{o}.in_proj_weight"]),
            ("bias", state_dict[f"{o}.in_proj_bias"]),
        ):
            q, k, v = t.chunk(3, dim=0)
            hf[f"{h}.q_proj.{name}"], hf[f"{h}.k_proj.{name}"], hf[f"{h}.v_proj.{name}"] = q, k, v
    hf["visual_projection.weight"] = state_dict["visual.proj"].t()
    hf["text_projection.weight"] = state_dict["text_projection"].t()

    model = CLIPModel(config.to_clip_config())
    result = model.load_state_dict(hf, strict=False)
    # position_ids buffers are not persistent; anything else missing is a mapping bug.
    missing_hf = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing_hf or result.unexpected_keys:
        raise ValueError(
            f"conversion bug: missing {missing_hf}, unexpected {result.unexpected_keys}"
        )
    return model.eval()


def to_openai_state_dict(model: CLIPModel) -> dict[str, torch.Tensor]:
    """Inverse of :func:`convert_openai_state_dict`: a ruclip/OpenAI-layout state dict.

    ``to_openai_state_dict(convert_openai_state_dict(sd, cfg))`` equals ``sd`` exactly
    (same keys, dtypes and values).  Tensors are detached, contiguous CPU copies in the
    model's dtype, ordered like ``ruclip.CLIP.state_dict()``, ready for ``torch.save``.

    Raises:
        ValueError: ``model`` is not a ruCLIP-compatible ``CLIPModel`` (e.g. vision width not
            a multiple of 64).
    """
    cfg = RuClipConfig.from_clip_model(model)
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    key_map = _key_map(cfg)
    attn = dict(_attn_pairs(cfg))
    for key in _expected_openai_shapes(cfg):
        if key in key_map:
            t = sd[key_map[key]]
        elif key == "visual.proj":
            t = sd["visual_projection.weight"].t()
        elif key == "text_projection":
            t = sd["text_projection.weight"].t()
        elif key.endswith(".in_proj_weight") or key.endswith(".in_proj_bias"):
            o = key.rsplit(".", 1)[0]
            name = "weight" if key.endswith("weight") else "bias"
            t = torch.cat([sd[f"{attn[o]}.{p}_proj.{name}"] for p in "qkv"], dim=0)
        else:  # pragma: no cover - _expected_openai_shapes and the maps are in sync
            raise KeyError(key)
        out[key] = t.detach().to("cpu", copy=True).contiguous()
    return out


# ---------------------------------------------------------------------- features
def text_features(
    model: CLIPModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Projected (not normalised) text features ``[B, embed_dim]`` = ``ruclip.CLIP.encode_text``.

    Inputs are moved to the model's device.  Works with ``transformers`` 4 (tensor return)
    and 5 (``BaseModelOutputWithPooling`` return) ``get_text_features``.
    """
    device = model.text_projection.weight.device
    out = model.get_text_features(
        input_ids=input_ids.to(device),
        attention_mask=None if attention_mask is None else attention_mask.to(device),
    )
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def image_features(model: CLIPModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected (not normalised) image features ``[B, embed_dim]`` = ``ruclip.CLIP.encode_image``.

    ``pixel_values``: float ``[B, 3, R, R]`` from :func:`make_image_processor`.
    """
    p = model.visual_projection.weight
    out = model.get_image_features(pixel_values=pixel_values.to(device=p.device, dtype=p.dtype))
    return out if isinstance(out, torch.Tensor) else out.pooler_output


# ---------------------------------------------------------------------- images
def make_image_processor(config: RuClipConfig):
    """A ``transformers`` CLIP image processor for ``config``.

    Converts to RGB, resizes the shortest edge to ``image_resolution`` (bilinear, like the
    torchvision default in ``ruclip.RuCLIPProcessor``), centre-crops to
    ``image_resolution`` x ``image_resolution``, scales to [0, 1] and normalises with
    ``config.mean``/``config.std``.  ruclip crops the centre square first and then resizes;
    the two orders differ only by resampling round-off.

    Returns:
        A ``CLIPImageProcessorPil`` (transformers >= 5; PIL backend, no torchvision needed) or a
        ``CLIPImageProcessor``; call it as ``proc(images=[PIL images], return_tensors="pt")``
        to get ``pixel_values`` float32 ``[B, 3, R, R]``.
    """
    kwargs = dict(
        do_convert_rgb=True,
        do_resize=True,
        size={"shortest_edge": config.image_resolution},
        resample=2,  # PIL.Image.BILINEAR
        do_center_crop=True,
        crop_size={"height": config.image_resolution, "width": config.image_resolution},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(config.mean),
        image_std=list(config.std),
    )
    try:  # transformers >= 5: the PIL backend (ruclip resizes PIL images too)
        from transformers import CLIPImageProcessorPil as processor_cls
    except ImportError:  # pragma: no cover - transformers 4
        from transformers import CLIPImageProcessor as processor_cls
    return processor_cls(**kwargs)


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


# ---------------------------------------------------------------------- tiny checkpoints
def _random_openai_state_dict(cfg: RuClipConfig, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic random float32 weights in the OpenAI layout.

    Scales follow ``ruclip.CLIP.initialize_parameters`` / OpenAI CLIP (token embedding std
    0.02, positional std 0.01, attention std width^-0.5, ...).  Unlike a fresh model, every
    LayerNorm weight/bias and every bias is random too (1 + 0.1 N(0,1), 0.1 N(0,1)), so a
    conversion that swapped two LayerNorms or dropped a bias would change the outputs.
    """
    g = torch.Generator().manual_seed(seed)
    shapes = _expected_openai_shapes(cfg)
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        width = cfg.vision_width if key.startswith("visual.") else cfg.transformer_width
        layers = cfg.vision_layers if key.startswith("visual.") else cfg.transformer_layers
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        noise = torch.randn(shape, generator=g)
        if key == "logit_scale":
            t = torch.tensor(math.log(1 / 0.07))  # CLIP paper: temperature 0.07
        elif key.endswith(".weight") and (".ln_" in key or key.startswith("ln_")):
            t = 1.0 + 0.1 * noise
        elif key.endswith("bias"):
            t = 0.1 * noise
        elif key == "token_embedding.weight":
            t = 0.02 * noise
        elif key == "positional_embedding":
            t = 0.01 * noise
        elif key in (
            "visual.class_embedding",
            "visual.positional_embedding",
            "visual.proj",
            "text_projection",
        ):
            t = width**-0.5 * noise
        elif key == "visual.conv1.weight":
            t = (3 * cfg.vision_patch_size**2) ** -0.5 * noise
        elif key.endswith("attn.in_proj_weight"):
            t = width**-0.5 * noise
        elif key.endswith("mlp.c_fc.weight"):
            t = (2 * width) ** -0.5 * noise
        elif key.endswith("out_proj.weight") or key.endswith("mlp.c_proj.weight"):
            t = proj_std * noise
        else:  # pragma: no cover - every key is handled above
            raise KeyError(key)
        out[key] = t.to(torch.float32).contiguous()
    return out


def write_tiny_ruclip_checkpoint(
    out_dir: str | os.PathLike[str],
    texts: Sequence[str],
    *,
    seed: int = 0,
    vocab_size: int = 512,
    coverage: float = 1.0,
    embed_dim: int = 32,
    image_resolution: int = 64,
    vision_layers: int = 2,
    vision_width: int = 64,
    vision_patch_size: int = 16,
    context_length: int = 77,
    transformer_width: int = 64,
    transformer_heads: int = 2,
    transformer_layers: int = 2,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> Path:
    """Write a tiny random-weight ruCLIP checkpoint (for tests and CPU smoke runs).

    Trains a youtokentome-format BPE on ``texts`` (:func:`~vitrina.models.yttm.train_yttm_bpe`,
    special ids pad 0 / unk 1 / bos 2 / eos 3), draws deterministic random weights from
    ``seed`` in the OpenAI layout, and saves the three ruCLIP files atomically with
    :func:`save_ruclip_checkpoint`.  Same ``texts`` + arguments -> identical files' contents.

    Defaults (1 vision head of width 64, 2+2 layers, 64 px images / 16 px patches = 17 image
    tokens, text width 64 with 2 heads, embed_dim 32, 77 text positions as in ruCLIP) keep a
    CPU forward of ~1000 texts + images to about a second.  The text embedding has
    ``vocab_size`` rows even if the BPE ends up smaller.

    Returns:
        ``Path(out_dir)``.

    Raises:
        ValueError: invalid sizes, or ``vocab_size`` too small for the texts' alphabet.
    """
    config = RuClipConfig(
        embed_dim=embed_dim,
        image_resolution=image_resolution,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=vision_patch_size,
        context_length=context_length,
        vocab_size=vocab_size,
        transformer_width=transformer_width,
        transformer_heads=transformer_heads,
        transformer_layers=transformer_layers,
        mean=tuple(mean),
        std=tuple(std),
    )
    bpe = train_yttm_bpe(texts, vocab_size, coverage=coverage, special=RUCLIP_SPECIAL_TOKENS)
    tokenizer = RuClipTokenizer(bpe, context_length)
    model = convert_openai_state_dict(_random_openai_state_dict(config, seed), config)
    return save_ruclip_checkpoint(model, tokenizer, config, out_dir)
