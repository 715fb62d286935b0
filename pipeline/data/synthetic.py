"""Synthetic ALL-IDB2-like and C-NMC-like images, so the whole pipeline runs without real data.

Blasts and healthy lymphocytes differ the way hematologists describe them (blasts: larger,
higher nucleus:cytoplasm ratio, fine homogeneous chromatin with nucleoli, irregular indented
outline; healthy: small round dense nucleus with coarse clumped chromatin, thin cytoplasm rim),
but every trait is drawn from overlapping distributions (`difficulty`) and stain, blur and
noise are drawn from one distribution for both classes: models must look at the cell, cannot
reach 100 %, and the background carries no label (unlike the real ALL-IDB2).

Every image has its own RNG seeded from (seed, style, index), so the output is byte-identical
whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.config import ALL_IDB2_MASK_CODE
from pipeline.io import atomic_path, write_image
from pipeline.parallel import parallel_map

STYLES = ("smear", "cnmc")
# Trait -> (healthy lymphocyte, blast) value; each image interpolates between them.
TRAITS = {
    "radius": (0.165, 0.25),  # cell radius / image side (smear style)
    "nucleus_fraction": (0.76, 0.9),  # nucleus radius / cell radius
    "irregularity": (0.015, 0.06),  # amplitude of outline harmonics
    "indent": (0.0, 0.45),  # depth of a nuclear cleft / nucleus radius
    "clump_size": (0.16, 0.05),  # chromatin texture scale / nucleus radius
    "chromatin_contrast": (0.38, 0.14),
    "nucleoli": (0.0, 2.2),  # expected count
    "nucleus_lightness": (0.8, 1.0),
}
# Colours (RGB, 0..1) before stain jitter.
BACKGROUND = (0.85, 0.83, 0.86)
RED_CELL = (0.80, 0.62, 0.63)
RED_CELL_CENTRE = (0.87, 0.76, 0.77)
CYTOPLASM = (0.66, 0.64, 0.83)
NUCLEUS = (0.42, 0.24, 0.62)
NUCLEOLUS = (0.58, 0.45, 0.74)


@dataclass(frozen=True)
class Job:
    style: str
    index: int  # seeds the image; a duplicate reuses its original's index
    blast: bool
    side: int
    difficulty: float
    seed: int
    path: str  # relative to the output folder
    mask_path: str | None = None
    stain_key: int | None = None  # images sharing it share a base stain (one C-NMC subject)


def sample_traits(rng: np.random.Generator, blast: bool, difficulty: float) -> dict[str, float]:
    """Traits from overlapping class distributions; one shared latent makes them correlate."""
    gap = float(np.clip(1.0 - 0.65 * difficulty, 0.05, 1.0))
    centre = 0.5 + (gap if blast else -gap) / 2
    shared = rng.standard_normal()
    traits = {}
    for name, (healthy, malignant) in TRAITS.items():
        u = np.clip(centre + 0.2 * (0.6 * shared + 0.8 * rng.standard_normal()), 0, 1)
        traits[name] = healthy + u * (malignant - healthy)
    return traits


def sample_stain(rng: np.random.Generator) -> dict[str, float]:
    """Hue / saturation / brightness / blur / noise of one acquisition, class-independent."""
    return {
        "hue": rng.normal(0, 7),  # degrees
        "saturation": rng.uniform(0.75, 1.25),
        "value": rng.uniform(0.88, 1.06),
        "blur": rng.uniform(0.3, 1.0),
        "noise": rng.uniform(0.006, 0.018),
    }


def noise_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth unit-variance noise: texture for chromatin and background."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), max(sigma, 0.3))
    return field / (field.std() + 1e-6)


def blob(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centre: tuple[float, float],
    radius: float,
    irregularity: float,
    elongation: float = 0.08,
) -> np.ndarray:
    """Filled perturbed polygon (radius modulated by low harmonics) as a bool mask."""
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = np.ones_like(theta) + rng.normal(0, elongation) * np.cos(2 * theta + rng.uniform(0, 6.3))
    for k in range(3, 7):
        r += (
            irregularity * rng.standard_normal() / (k - 2) * np.cos(k * theta + rng.uniform(0, 6.3))
        )
    points = np.stack(
        [centre[0] + radius * r * np.cos(theta), centre[1] + radius * r * np.sin(theta)]
    )
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points.T * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray | tuple, soft: float) -> None:
    """Alpha-composite `colour` (RGB or per-pixel) into `canvas` where `mask`, edges softened."""
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), soft)[..., None]
    canvas *= 1 - alpha
    canvas += alpha * np.asarray(colour, np.float32)


def draw_cell(
    rng: np.random.Generator, canvas: np.ndarray, centre: tuple[float, float], scale: float, t: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one white cell into `canvas`; return (cell mask, nucleus mask)."""
    shape = canvas.shape[:2]
    radius = t["radius"] * scale
    cell = blob(rng, shape, centre, radius, t["irregularity"])
    n_radius = radius * t["nucleus_fraction"]
    offset = rng.uniform(0, (1 - t["nucleus_fraction"]) * radius * 0.7)
    angle = rng.uniform(0, 2 * np.pi)
    n_centre = (centre[0] + offset * np.cos(angle), centre[1] + offset * np.sin(angle))
    nucleus = blob(rng, shape, n_centre, n_radius, t["irregularity"] * 1.3) & cv2.erode(
        cell.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=1
    ).astype(bool)
    if t["indent"] > 0.1:  # nuclear cleft: carve a notch into the nucleus rim
        notch_at = (
            n_centre[0] + 1.05 * n_radius * np.cos(angle + np.pi),
            n_centre[1] + 1.05 * n_radius * np.sin(angle + np.pi),
        )
        notch = blob(rng, shape, notch_at, t["indent"] * n_radius, 0.05)
        nucleus &= ~notch
    soft = 0.6
    cyto_shade = CYTOPLASM * (1 + 0.04 * noise_field(rng, shape, 3)[..., None])
    paint(canvas, cell, cyto_shade, soft)
    chromatin = noise_field(rng, shape, t["clump_size"] * n_radius)
    grain = noise_field(rng, shape, 0.6)
    shade = t["nucleus_lightness"] * (
        1 - t["chromatin_contrast"] * np.tanh(chromatin) - 0.05 * grain
    )
    paint(canvas, nucleus, np.asarray(NUCLEUS, np.float32) * shade[..., None], soft)
    for _ in range(rng.poisson(t["nucleoli"])):
        spot_angle, spot_r = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.55) * n_radius
        spot_at = (
            n_centre[0] + spot_r * np.cos(spot_angle),
            n_centre[1] + spot_r * np.sin(spot_angle),
        )
        spot = blob(rng, shape, spot_at, rng.uniform(0.09, 0.15) * n_radius, 0.1) & nucleus
        paint(canvas, spot, NUCLEOLUS, 1.2)
    return cell, nucleus


def smear_background(rng: np.random.Generator, side: int) -> np.ndarray:
    """Light, slightly textured background crowded with red cells (pale centres)."""
    canvas = np.empty((side, side, 3), np.float32)
    canvas[:] = BACKGROUND
    canvas *= 1 + 0.015 * noise_field(rng, (side, side), side / 12)[..., None]
    for _ in range(rng.integers(7, 14)):
        centre = tuple(rng.uniform(-0.05, 1.05, 2) * side)
        radius = rng.uniform(0.1, 0.135) * side
        tint = np.asarray(RED_CELL, np.float32) * rng.uniform(0.96, 1.04)
        paint(canvas, blob(rng, (side, side), centre, radius, 0.02), tint, 0.8)
        pale = blob(rng, (side, side), centre, radius * rng.uniform(0.35, 0.55), 0.05)
        paint(canvas, pale, RED_CELL_CENTRE, 2.0)
    return canvas


def apply_stain(
    image: np.ndarray, stain: Mapping[str, float], rng: np.random.Generator
) -> np.ndarray:
    """HSV jitter, defocus blur and sensor noise; float RGB in, float RGB out."""
    hsv = cv2.cvtColor(np.clip(image, 0, 1), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + stain["hue"]) % 360
    hsv[..., 1] = np.clip(hsv[..., 1] * stain["saturation"], 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * stain["value"], 0, 1)
    image = cv2.GaussianBlur(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), (0, 0), stain["blur"])
    return image + rng.normal(0, stain["noise"], image.shape).astype(np.float32)


def render(job: Job) -> tuple[np.ndarray, np.ndarray | None]:
    """One image (RGB uint8) and, for the smear style, its ALL-IDB2-coded mask."""
    rng = np.random.default_rng([job.seed, STYLES.index(job.style), job.index])
    traits = sample_traits(rng, job.blast, job.difficulty)
    stain = sample_stain(rng)
    if job.stain_key is not None:  # a subject's base stain, plus a little per-image jitter
        base = sample_stain(
            np.random.default_rng([job.seed, STYLES.index(job.style), job.stain_key])
        )
        stain = {key: base[key] + 0.25 * (stain[key] - base[key]) for key in base}
    side = job.side
    jitter = rng.normal(0, 0.02 * side, 2)
    centre = (side / 2 + jitter[0], side / 2 + jitter[1])
    if job.style == "smear":
        canvas = smear_background(rng, side)
        cell, nucleus = draw_cell(rng, canvas, centre, side, traits)
    else:  # C-NMC crops are tighter around the cell: a larger cell for the same traits
        canvas = np.zeros((side, side, 3), np.float32)
        cell, nucleus = draw_cell(rng, canvas, centre, 1.35 * side, traits)
    image = apply_stain(canvas, stain, rng)
    if job.style == "cnmc":  # segmented cell on pure black, as C-NMC ships it
        image[~cell] = 0
        return to_uint8(image), None
    mask = np.empty((side, side, 3), np.uint8)
    mask[:] = ALL_IDB2_MASK_CODE["background"]
    mask[cell] = ALL_IDB2_MASK_CODE["cytoplasm"]
    mask[nucleus] = ALL_IDB2_MASK_CODE["nucleus"]
    return to_uint8(image), mask


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def write_job(out_dir: Path, job: Job) -> None:
    image, mask = render(job)
    write_image(out_dir / job.path, image)
    if job.mask_path:
        write_image(out_dir / job.mask_path, mask)


def smear_jobs(demo: Mapping[str, Any], seed: int) -> list[Job]:
    """ALL-IDB2 naming: blasts Im001_1.. first, then healthy; Im067_1 duplicates Im001_1 (n=100)."""
    n = int(demo["n_per_class"])
    width = max(3, len(str(2 * n)))
    duplicate = 2 * n // 3 if n >= 3 else None
    jobs = []
    for i in range(2 * n):
        blast = i < n
        name = f"Im{i + 1:0{width}d}_{int(blast)}.png"
        jobs.append(
            Job(
                style="smear",
                index=0 if i == duplicate else i,
                blast=blast,
                side=int(demo["smear_side"]),
                difficulty=float(demo["difficulty"]),
                seed=seed,
                path=f"smear/{name}",
                mask_path=f"smear_masks/{name}",
            )
        )
    return jobs


def cnmc_jobs(demo: Mapping[str, Any], seed: int) -> list[Job]:
    """C-NMC naming: subjects 1..k (ALL) and Hk+1..H2k (healthy), several cells per subject."""
    n, k = int(demo["n_per_class"]), int(demo["cnmc_subjects"])
    fold = "cnmc/C-NMC_Leukemia/training_data/fold_0"
    jobs = []
    for i in range(2 * n):
        blast, j = i < n, i % n
        number = j % k + 1 + (0 if blast else k)
        subject, label = (str(number), "all") if blast else (f"H{number}", "hem")
        image, cell = divmod(j // k, 3)
        jobs.append(
            Job(
                style="cnmc",
                index=i,
                blast=blast,
                side=int(demo["cnmc_side"]),
                difficulty=float(demo["difficulty"]),
                seed=seed,
                path=f"{fold}/{label}/UID_{subject}_{image + 1}_{cell + 1}_{label}.bmp",
                stain_key=10**6 + number,
            )
        )
    return jobs


def generate_demo(demo: Mapping[str, Any], seed: int, out_dir: Path) -> None:
    """Write smear/, smear_masks/ and cnmc/ under `out_dir`, replacing it atomically.

    `demo` is the `demo` config section (n_per_class, smear_side, cnmc_side, cnmc_subjects,
    difficulty).
    """
    if int(demo["n_per_class"]) < 1 or int(demo["cnmc_subjects"]) < 1:
        raise ValueError("demo.n_per_class and demo.cnmc_subjects must be >= 1")
    jobs = smear_jobs(demo, seed) + cnmc_jobs(demo, seed)
    with atomic_path(out_dir) as staged:
        parallel_map(partial(write_job, staged), jobs, desc="generate demo")
