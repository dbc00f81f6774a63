"""Outcomes: the prompts x models table of quality, cost and latency, and where tables come from (recorded
datasets, files, traces). Shared data below the lab and the providers."""

from gearshift.outcomes.table import Outcomes, concat

__all__ = ["Outcomes", "concat"]
