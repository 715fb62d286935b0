"""Scoring: test-split metrics with intervals, CV (nested too), probes, tuning, Grad-CAM."""
