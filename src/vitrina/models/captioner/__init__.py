"""Product image captioning: a ViT encoder and a GPT-2 decoder, laid out as transformers
lays out a model and open_clip its training.

* :mod:`.configuration` — :class:`CaptionerConfig` (sizes, ``captioning.models.<name>``),
  :class:`CaptioningOptions` and :func:`training_settings` (``captioning.training``);
* :mod:`.tokenization` — the byte-level BPE, pretrained tokenizers, the tokenizer fingerprint;
* :mod:`.processing` — square padding, image loading, the ViT image processor;
* :mod:`.modeling` — build, save, load, :func:`check_compatible`;
* :mod:`.quantization` — inference precision, dynamic int8 encoder and decoder;
* :mod:`.inference` — :class:`Captioner` (targets, generation) and :func:`caption_paths`;
* :mod:`.splits` — items and grouped train/validation/test splits;
* :mod:`.data` — pixels decoded once, seeded length-bucketed batches (a LightningDataModule);
* :mod:`.task` — encoder pre-training and captioning as LightningModules;
* :mod:`.train` — both phases on :func:`vitrina.training.fit_resumable`;
* :mod:`.evaluation` — test captions and corpus SacreBLEU.
"""

from .configuration import (
    CAPTIONER_FILES,
    DECODINGS,
    META_FILE,
    SPECIAL_TOKENS,
    CaptionerConfig,
    CaptioningOptions,
    select_config,
    settings_dict,
    training_settings,
)
from .evaluation import caption_test_split, corpus_sacrebleu
from .inference import Captioner, caption_paths
from .modeling import (
    CaptionerMismatchError,
    build_captioner,
    check_compatible,
    count_parameters,
    load_captioner,
    resolve_pretrained,
    save_captioner,
)
from .processing import load_image, make_image_processor, pad_to_square
from .quantization import inference_dtype, inference_precision, quantize_captioner_int8
from .splits import grouped_split, make_captioning_splits, split_rows
from .tokenization import tokenizer_fingerprint, train_bpe_tokenizer
from .train import (
    ReportValidation,
    TrainingResult,
    build_initial_captioner,
    fit_captioner,
    fit_on_splits,
)

__all__ = [
    "CAPTIONER_FILES",
    "DECODINGS",
    "META_FILE",
    "SPECIAL_TOKENS",
    "Captioner",
    "CaptionerConfig",
    "CaptionerMismatchError",
    "CaptioningOptions",
    "ReportValidation",
    "TrainingResult",
    "build_captioner",
    "build_initial_captioner",
    "caption_paths",
    "caption_test_split",
    "check_compatible",
    "corpus_sacrebleu",
    "count_parameters",
    "fit_captioner",
    "fit_on_splits",
    "grouped_split",
    "inference_dtype",
    "inference_precision",
    "load_captioner",
    "load_image",
    "make_captioning_splits",
    "make_image_processor",
    "pad_to_square",
    "quantize_captioner_int8",
    "resolve_pretrained",
    "save_captioner",
    "select_config",
    "settings_dict",
    "split_rows",
    "tokenizer_fingerprint",
    "train_bpe_tokenizer",
    "training_settings",
]
