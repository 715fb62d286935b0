"""Stage augment: write the image-folder dataset `<split>/<class>/<id>.png`, adding flipped and
rotated copies to the augmented splits (train only by default; split before augmenting)."""

import shutil
import sys
from functools import partial

import pandas as pd

from pipeline import manifest, paths
from pipeline.io import atomic_path, read_image, write_image
from pipeline.parallel import parallel_map
from pipeline.preprocess.augment import apply_op, plan_augmentation
from pipeline.stages.common import log, stage


def _place(row: dict, out_dir) -> None:
    target = out_dir / row["split"] / row["label"] / f"{row['id']}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    if row["augmented_from"]:
        write_image(target, apply_op(read_image(row["source_path"]), row["op"]))
    else:
        shutil.copyfile(row["source_path"], target)


@stage
def run(cfg) -> None:
    name = cfg.dataset.name
    frame = manifest.read(paths.split_table(name))
    plan = plan_augmentation(frame, cfg.augment, cfg.seed)
    sources = frame.set_index("id")
    copies = sources.loc[plan["source_id"]].reset_index()
    copies["augmented_from"] = plan["source_id"].values
    copies["op"] = plan["op"].values
    copies["id"] = [
        f"{src}__{op}{'' if n == 0 else n}"
        for src, op, n in zip(
            plan["source_id"], plan["op"], plan.groupby(["source_id", "op"]).cumcount(), strict=True
        )
    ]
    originals = frame.assign(augmented_from="", op="")
    table = pd.concat([originals, copies], ignore_index=True)
    table["source_path"] = table["path"]
    final = paths.prepared(name)
    with atomic_path(final) as staged:
        parallel_map(partial(_place, out_dir=staged), table.to_dict("records"), f"augment {name}")
        table["path"] = [
            str(final / s / c / f"{i}.png")
            for s, c, i in zip(table["split"], table["label"], table["id"], strict=True)
        ]
        manifest.write(table.drop(columns=["source_path"]), staged / "manifest.csv")
    log.info("dataset sizes:\n%s", table.groupby(["split", "label"]).size().unstack())


main = run
if __name__ == "__main__":
    sys.exit(main())
