"""ruCLIP ``config.json`` (:class:`RuClipConfig`) and the special token ids ruCLIP uses.

The config holds the ``ruclip.CLIP`` constructor arguments plus the image ``mean``/``std``;
:meth:`RuClipConfig.to_clip_config` gives the equivalent :class:`transformers.CLIPConfig`
(text ``hidden_act="quick_gelu"``, ``pad_token_id=0``, ``bos_token_id=2``,
``eos_token_id=3``, so that ``CLIPModel`` pools the text features at the (first) eos
position exactly like ``ruclip.CLIP.encode_text``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import CLIPConfig, CLIPModel

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PAD_ID",
    "UNK_ID",
    "RuClipConfig",
]

# ruclip.RuCLIPProcessor class constants.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

# OpenAI CLIP image normalisation; ruclip.RuCLIPProcessor falls back to these when
# config.json has no mean/std.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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
