"""Record an `entroprune sweep` folder as the sweep measurement: docs/measurements/sweep.{md,json}, its plot, and
the README's sweep block, so that every number there comes from the sweep itself.

usage: python benchmarks/sweep_page.py SWEEP_DIR [--wall SECONDS]

The folder's sweep.md is written again first (by `entroprune.sweep.write_sweep_report`), so the page has this
commit's layout; --wall is the whole command (set-up included) as timed by the caller.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from entroprune.sweep import SWEEP_FILE, write_sweep_report

sys.path.insert(0, str(Path(__file__).parent))
from common import replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", help="a finished `entroprune sweep` folder")
    ap.add_argument("--wall", type=float, help="seconds the whole command took, set-up included")
    ap.add_argument("--out-dir", default=str(ROOT / "docs" / "measurements"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    args = ap.parse_args()
    sweep_dir = Path(args.sweep_dir)
    if not (sweep_dir / SWEEP_FILE).exists():
        sys.exit(f"{sweep_dir} has no {SWEEP_FILE}; is it an `entroprune sweep` folder?")
    page = write_sweep_report(sweep_dir).read_text()
    out = Path(args.out_dir)
    (out / "sweep").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sweep_dir / "plots" / "tradeoff.png", out / "sweep" / "tradeoff.png")
    record = json.loads((sweep_dir / SWEEP_FILE).read_text())
    made = ("Made by `entroprune sweep` (default targets and settings) from a clean clone, recorded by "
            "`python benchmarks/sweep_page.py SWEEP_DIR`" + (f"; the command took {args.wall / 60:.0f} min, set-up "
                                                               "and the baseline's training included." if args.wall
                                                               else "."))
    (out / "sweep.md").write_text(page.replace("](plots/tradeoff.png)", "](sweep/tradeoff.png)") + "\n" + made + "\n")
    (out / "sweep.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = page.splitlines()
    machine = next(line for line in lines if line.startswith("Machine:"))
    table = [line for line in lines if line.startswith("|")]
    verdict = next(line for line in lines if line.startswith("**"))
    block = ["", machine, "", *table, "", verdict, "", made, ""]
    replace_block(Path(args.readme), "sweep", block)
    print("\n".join(block))


if __name__ == "__main__":
    main()
