"""all-detect: ALL vs healthy white-cell classification, as a DVC + Hydra + MLflow pipeline."""
