"""Reviewing masks: the ``vitrina review`` commands and the local review page."""
