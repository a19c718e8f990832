"""CLIP models in Vitrina: one bundle for every checkpoint layout, and contrastive
fine-tuning on the Lightning engine.

* :mod:`.bundle` — :class:`ClipBundle` (ruCLIP and Hugging Face CLIP behind one interface)
  and :func:`load_base_model`; :mod:`.hf` — the ``save_pretrained`` files;
* :mod:`.config` — ``clip_finetune.train`` (the engine's settings + :class:`ClipOptions`);
* :mod:`.pairs` — the (image, title) pairs tables and their grouped split;
* :mod:`.data` — tokenised titles, decoded images, seeded batches per rank;
* :mod:`.loss` — InfoNCE with duplicate-aware targets, gathered across ranks;
* :mod:`.metrics` — recall@k, median rank, chance;
* :mod:`.task` — the LightningModule; :mod:`.finetune` — :func:`fine_tune`,
  :func:`evaluate_retrieval`.
"""

from .bundle import ClipBundle, HfClipBundle, RuClipCheckpointBundle, load_base_model
from .config import ClipFinetuneConfig, ClipOptions

__all__ = [
    "ClipBundle",
    "ClipFinetuneConfig",
    "ClipOptions",
    "HfClipBundle",
    "RuClipCheckpointBundle",
    "load_base_model",
]
