"""Stage labels_table: a copy of the csv adapter's labels table (an empty file otherwise).

DVC tracks `dataset.root`, but a labels table may lie outside it (`labels_file: ../labels.csv`,
where the shipped csv datasets keep it), so an edited label left ingest's manifest as it was.
This stage runs on every `dvc repro` (always_changed: copying one table is cheap) and ingest
depends on the copy: ingest re-runs when, and only when, the table's content changes. A missing
table gives an empty copy; ingest then names it.
"""

import sys

from pipeline import paths
from pipeline.config import workspace_root
from pipeline.data.build import labels_table
from pipeline.io import atomic_path
from pipeline.stages.common import stage


@stage
def run(cfg) -> None:
    table = labels_table(cfg.dataset, workspace_root())
    content = table.read_bytes() if table is not None and table.is_file() else b""
    with atomic_path(paths.labels_copy(cfg.dataset.name)) as staged:
        staged.write_bytes(content)


main = run
if __name__ == "__main__":
    sys.exit(main())
