"""Dataset adapters (C-NMC, ALL-IDB2, folder-per-class, synthetic demo) -> one manifest."""

from pipeline.data.build import build_manifest

__all__ = ["build_manifest"]
