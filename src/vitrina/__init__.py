"""Vitrina: Kedro pipelines for e-commerce product machine learning."""

__version__ = "0.1.0"
