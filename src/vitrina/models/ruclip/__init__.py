"""ruCLIP checkpoints as ``transformers.CLIPModel`` + a youtokentome-exact tokenizer.

A ruCLIP checkpoint directory (``ai-forever/ruclip-vit-base-patch32-384`` and siblings on
the Hugging Face hub) holds three files:

* ``config.json`` -- :class:`RuClipConfig` (the ``ruclip.CLIP`` constructor arguments plus
  the image ``mean``/``std``);
* ``pytorch_model.bin`` -- a ``torch.save``-d state dict in the OpenAI CLIP key layout
  (``visual.conv1.weight``, ``transformer.resblocks.0.attn.in_proj_weight``, ...);
* ``bpe.model`` -- a youtokentome BPE model (:mod:`vitrina.models.ruclip.yttm`).

The ``ruclip`` package itself cannot be imported with current ``huggingface_hub`` and needs
``youtokentome``, so Vitrina converts instead.  The package is laid out like a
``transformers`` model:

* :mod:`~vitrina.models.ruclip.configuration` -- :class:`RuClipConfig` and its
  :class:`transformers.CLIPConfig` (text ``hidden_act="quick_gelu"``, ``pad_token_id=0``,
  ``bos_token_id=2``, ``eos_token_id=3`` so that ``CLIPModel`` pools the text features at the
  (first) eos position exactly like ``ruclip.CLIP.encode_text``
  (``x[arange, torch.where(input_ids == 3)[1]] @ text_projection``));
* :mod:`~vitrina.models.ruclip.convert` -- weights -> :class:`transformers.CLIPModel`
  (:func:`convert_openai_state_dict`; inverse :func:`to_openai_state_dict`);
* :mod:`~vitrina.models.ruclip.modeling` -- :func:`text_features` / :func:`image_features`;
* :mod:`~vitrina.models.ruclip.tokenization` -- ``bpe.model`` -> :class:`RuClipTokenizer`
  (lower-case, youtokentome ids, truncate to ``context_length - 2``, wrap in bos 2 / eos 3,
  pad with 0 -- ``ruclip.RuCLIPProcessor``), on :mod:`~vitrina.models.ruclip.yttm` (the BPE
  model, file format and reference encoder) and :mod:`~vitrina.models.ruclip.yttm_tokenizers`
  (the same BPE on ``tokenizers``, and training);
* :mod:`~vitrina.models.ruclip.processing` -- images -> :func:`make_image_processor`
  (shortest-edge resize + centre crop to ``image_resolution``, config ``mean``/``std``);
* :mod:`~vitrina.models.ruclip.checkpoint` -- :func:`resolve_checkpoint` (local directory or
  hub), :func:`load_ruclip` -> :class:`RuClipBundle`, :func:`save_ruclip_checkpoint`;
* :mod:`~vitrina.models.ruclip.tiny` -- :func:`write_tiny_ruclip_checkpoint` (random weights,
  for tests, benchmarks and the offline demo).

Everything here runs offline; only :func:`resolve_checkpoint` may reach the hub.
"""

from __future__ import annotations

from vitrina.models.ruclip.checkpoint import (
    CHECKPOINT_FILES,
    CheckpointNotFoundError,
    RuClipBundle,
    load_ruclip,
    resolve_checkpoint,
    save_ruclip_checkpoint,
)
from vitrina.models.ruclip.configuration import RuClipConfig
from vitrina.models.ruclip.convert import convert_openai_state_dict, to_openai_state_dict
from vitrina.models.ruclip.modeling import image_features, text_features
from vitrina.models.ruclip.processing import make_image_processor
from vitrina.models.ruclip.tiny import write_tiny_ruclip_checkpoint
from vitrina.models.ruclip.tokenization import RuClipTokenizer
from vitrina.models.ruclip.yttm import (
    SPACE_TOKEN,
    YTTM_WHITESPACE,
    YttmFormatError,
    YttmModel,
    YttmSpecialTokens,
    read_yttm_model,
    write_yttm_model,
)
from vitrina.models.ruclip.yttm_tokenizers import (
    YttmConversionError,
    train_yttm_bpe,
    yttm_to_tokenizer,
)

__all__ = [
    "CHECKPOINT_FILES",
    "SPACE_TOKEN",
    "YTTM_WHITESPACE",
    "CheckpointNotFoundError",
    "RuClipBundle",
    "RuClipConfig",
    "RuClipTokenizer",
    "YttmConversionError",
    "YttmFormatError",
    "YttmModel",
    "YttmSpecialTokens",
    "convert_openai_state_dict",
    "image_features",
    "load_ruclip",
    "make_image_processor",
    "read_yttm_model",
    "resolve_checkpoint",
    "save_ruclip_checkpoint",
    "text_features",
    "to_openai_state_dict",
    "train_yttm_bpe",
    "write_tiny_ruclip_checkpoint",
    "write_yttm_model",
    "yttm_to_tokenizer",
]
