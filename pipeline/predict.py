"""Classify new cell images with a trained model, applying the training preprocessing.

    python -m pipeline.predict models/synthetic/resnet50 path/to/image.png
    python -m pipeline.predict models:/all-detect-synthetic/1 path/to/folder --output preds.csv
    python -m pipeline.predict models/synthetic/resnet50 folder --explain heatmaps/

A folder gives one CSV row per image; unreadable files are reported in the `error` column and
do not stop the rest. Exit status 1 when no image could be predicted (the CSV is still written,
saying why for each), or on a bad argument; 0 when at least one was.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pipeline.data.adapters import visible_below
from pipeline.errors import PipelineError
from pipeline.evaluate.explain import require_cam_target, write_overlays
from pipeline.inference import Predictor
from pipeline.io import OutputKindError, atomic_write_text, read_image


def list_images(target: Path) -> list[Path]:
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise FileNotFoundError(f"{target}: no such file or folder")
    # What ingest would read below a class folder: linked folders followed, hidden files and
    # OS clutter left out; a broken link or a pipe is listed and gets an error row.
    files = visible_below(target)
    if not files:
        raise FileNotFoundError(f"{target}: no files to predict in this folder")
    return sorted(files, key=natural_order)


def natural_order(path: Path) -> list[str | int]:
    """Numbers in a path compare as numbers (2.bmp before 10.bmp), so a numbered test set
    such as C-NMC's reads in its own order. Splitting on a captured group alternates text and
    digits, so items at one index are always of one type."""
    parts = re.split(r"(\d+)", path.as_posix())
    return [int(part) if index % 2 else part for index, part in enumerate(parts)]


def overlay_names(relative: Sequence[Path]) -> list[str]:
    """Each image's overlay name: its path without the suffix, or with it where two images
    differ only by their suffix (a.png and a.jpg)."""
    bare = [path.with_suffix("").as_posix() for path in relative]
    taken = Counter(bare)
    pairs = zip(relative, bare, strict=True)
    return [path.as_posix() if taken[name] > 1 else name for path, name in pairs]


def check_output_file(output: Path) -> None:
    """`--output` names a CSV file whose folder exists or can be made; never a folder (the
    atomic write would replace it, and everything in it, by the CSV)."""
    if output.is_dir():
        raise OutputKindError(
            f"--output {output} is a folder: give a file name, e.g. {output / 'predictions.csv'}"
        )
    blocking = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputKindError(f"--output {output}: {blocking} is a file, not a folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:  # a read-only folder: say so now, not in a traceback after every prediction
        with tempfile.TemporaryFile(dir=output.parent):
            pass
    except OSError as exc:
        raise PipelineError(
            f"--output {output}: its folder cannot be written ({exc.strerror})"
        ) from None


def check_explain_dir(folder: Path) -> None:
    """`--explain` names a folder that exists or can be made; never a file (the overlays
    would fail after every prediction, with a traceback)."""
    if folder.exists() and not folder.is_dir():
        raise OutputKindError(f"--explain {folder} is a file: give a folder for the overlays")
    blocking = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputKindError(f"--explain {folder}: {blocking} is a file, not a folder")


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
            require_cam_target(predictor.model)  # fail before predicting, not after
            check_explain_dir(args.explain)
        if args.output:  # fail now, not after every prediction
            check_output_file(args.output)
    except (PipelineError, OSError, ValueError) as exc:
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
        try:
            atomic_write_text(args.output, table.to_csv(index=False))
        except OSError as exc:  # a full disk: the previous file is kept, nothing half-written
            print(f"error: --output {args.output} cannot be written: {exc.strerror or exc}",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(f"wrote {len(table)} predictions to {args.output}")
    else:
        table.to_csv(sys.stdout, index=False)
    if args.explain:
        # After the predictions: a failure here does not lose them.
        good = [Path(p) for p in table.loc[table["error"] == "", "path"]]
        images = [predictor.prepare(read_image(p)) for p in good]
        root = args.target if args.target.is_dir() else args.target.parent
        names = overlay_names([p.relative_to(root) for p in good])
        try:
            overlays = write_overlays(predictor.model, images, names, args.explain)
        except (ValueError, OSError) as exc:  # OSError: e.g. a file where a subfolder goes
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {len(overlays)} Grad-CAM overlay(s) to {args.explain}", file=sys.stderr)
    bad = int((table["error"] != "").sum())
    if bad:
        print(f"{bad} file(s) could not be predicted (see the error column)", file=sys.stderr)
    return 1 if bad == len(table) else 0  # nothing predicted: a script must not carry on


if __name__ == "__main__":
    sys.exit(main())
