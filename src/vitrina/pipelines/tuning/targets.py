"""Tuning targets: what each trainable step exposes to Optuna.

A target knows which parameters it accepts, where they live in the step's own parameters
(``params_path``), how to score a parameter set on the *validation* split (reporting
intermediate values for pruning) and how to score the best set once on the *test* split.

Targets here: :class:`PairClassifierTarget` (``pair_classifier``), :class:`ClipFinetuneTarget`
(``clip_finetune``) and :class:`CaptioningTarget` (``captioning``); the interface is
:class:`~vitrina.pipelines.tuning.base.TuningTarget`, the probing targets are
:class:`~vitrina.pipelines.tuning.probing_target.ProbingTarget`.
"""

from .captioning_target import CaptioningTarget
from .clip_target import ClipFinetuneTarget
from .pair_target import PairClassifierTarget

__all__ = ["CaptioningTarget", "ClipFinetuneTarget", "PairClassifierTarget"]
