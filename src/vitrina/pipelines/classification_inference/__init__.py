"""Classification inference: a trained task's model over images, a folder or a catalogue group."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
