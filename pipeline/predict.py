"""Classify new cell images with a trained model, applying the training preprocessing.

    python -m pipeline.predict models/synthetic/resnet50 path/to/image.png
    python -m pipeline.predict models:/all-detect-synthetic/1 path/to/folder --output preds.csv
    python -m pipeline.predict models/synthetic/resnet50 folder --explain heatmaps/

A folder gives one CSV row per image; unreadable files are reported in the `error` column and
do not stop the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from pipeline.io import ImageReadError, read_image
from pipeline.models.base import Classifier, load_model
from pipeline.preprocess.crop import crop_and_resize
from pipeline.preprocess.segment import apply_mask_and_crop, segment_cell

PREPROCESS_CARD = "preprocess.json"


def save_preprocessing(directory: Path, cfg) -> None:
    """Store with the model exactly how its training images were prepared."""
    card = {
        "segment": bool(cfg.dataset.segment) and cfg.segment.method != "none",
        "segment_config": OmegaConf.to_container(cfg.segment, resolve=True),
        "crop_config": OmegaConf.to_container(cfg.crop, resolve=True),
        "dataset": cfg.dataset.name,
    }
    (Path(directory) / PREPROCESS_CARD).write_text(json.dumps(card, indent=2, sort_keys=True))


class Predictor:
    """A model plus the preprocessing it was trained with."""

    def __init__(self, model: Classifier, card: dict) -> None:
        self.model = model
        self.segment = card["segment"]
        self.segment_cfg = OmegaConf.create(card["segment_config"])
        self.crop_cfg = OmegaConf.create(card["crop_config"])

    @classmethod
    def load(cls, source: str | Path) -> Predictor:
        directory = _resolve_model_dir(str(source))
        card_path = directory / PREPROCESS_CARD
        if not card_path.exists():
            raise FileNotFoundError(
                f"{directory}: no {PREPROCESS_CARD}; not a trained model folder"
            )
        return cls(load_model(directory), json.loads(card_path.read_text()))

    def prepare(self, image: np.ndarray) -> np.ndarray:
        if self.segment:
            image, _ = apply_mask_and_crop(image, segment_cell(image, self.segment_cfg))
        return crop_and_resize(image, self.crop_cfg)

    def predict_files(self, files: Sequence[Path]) -> pd.DataFrame:
        rows, prepared = [], []
        for path in files:
            try:
                prepared.append(self.prepare(read_image(path)))
                rows.append({"path": str(path), "error": ""})
            except ImageReadError as exc:
                rows.append({"path": str(path), "error": str(exc)})
        p_all = self.model.predict_proba(prepared) if prepared else np.array([])
        good = iter(p_all)
        for row in rows:
            p = float(next(good)) if not row["error"] else float("nan")
            row["p_all"] = p
            row["prediction"] = "" if row["error"] else ("all" if p >= 0.5 else "hem")
            row["probability"] = max(p, 1 - p) if not row["error"] else float("nan")
        return pd.DataFrame(rows, columns=["path", "prediction", "probability", "p_all", "error"])


def _resolve_model_dir(source: str) -> Path:
    """A model folder, or a registry URI `models:/<name>/<version|alias>` fetched from MLflow."""
    if source.startswith("models:/"):
        import mlflow

        from pipeline.config import load
        from pipeline.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri(load()))
        target = Path(tempfile.mkdtemp(prefix="all-detect-model-"))
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target))
        cards = list(Path(local).rglob(PREPROCESS_CARD))
        if not cards:
            raise FileNotFoundError(f"{source}: registered model has no {PREPROCESS_CARD}")
        return cards[0].parent
    directory = Path(source)
    if not directory.is_dir():
        raise FileNotFoundError(f"{source}: model folder not found")
    return directory


def list_images(target: Path) -> list[Path]:
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise FileNotFoundError(f"{target}: no such file or folder")
    return sorted(p for p in target.rglob("*") if p.is_file() and not p.name.startswith("."))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="model folder (models/<dataset>/<model>) or models:/name/ver")
    parser.add_argument("target", type=Path, help="an image or a folder of images")
    parser.add_argument("--output", type=Path, help="write the CSV here instead of stdout")
    parser.add_argument(
        "--explain",
        type=Path,
        metavar="DIR",
        help="write Grad-CAM overlays for CNN models into DIR",
    )
    args = parser.parse_args(argv)
    try:
        predictor = Predictor.load(args.model)
        files = list_images(args.target)
        if args.explain:
            from pipeline.evaluate.explain import require_cam_target

            require_cam_target(predictor.model)  # fail before predicting, not after
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    table = predictor.predict_files(files)
    if args.target.is_file() and not args.output:
        row = table.iloc[0]
        if row["error"]:
            print(f"error: {row['error']}", file=sys.stderr)
            return 1
        print(f"{row['path']}: {row['prediction']} (p={row['probability']:.3f})")
    elif args.output:
        table.to_csv(args.output, index=False)
        print(f"wrote {len(table)} predictions to {args.output}")
    else:
        table.to_csv(sys.stdout, index=False)
    if args.explain:
        from pipeline.evaluate.explain import write_overlays

        # After the predictions: a failure here does not lose them.
        good = [Path(p) for p in table.loc[table["error"] == "", "path"]]
        images = [predictor.prepare(read_image(p)) for p in good]
        root = args.target if args.target.is_dir() else args.target.parent
        names = [p.relative_to(root).with_suffix("").as_posix() for p in good]
        try:
            overlays = write_overlays(predictor.model, images, names, args.explain)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {len(overlays)} Grad-CAM overlay(s) to {args.explain}", file=sys.stderr)
    bad = int((table["error"] != "").sum())
    if bad:
        print(f"{bad} file(s) could not be read (see the error column)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
