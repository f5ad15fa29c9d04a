"""The README and code comments say why, not when: history lives in git (issue 19)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# "commit 9b88e4c", "pre-f9e7896", "before 2ef43f5": a short hash next to a word of history
HASH = re.compile(r"\b(?:commit|pre-|before|after|since|until)\s*[0-9a-f]{7,12}\b")


def test_no_commit_hashes_in_readme_or_code():
    files = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "src" / "entroprune").rglob("*.py"))]
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text().splitlines(), 1) if HASH.search(line)]
    assert not hits, "\n".join(hits)


def test_readme_names_the_two_commands_and_its_generated_blocks():
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
    for block in ("main-job", "arena"):
        assert f"<!-- {block}:begin -->" in text and f"<!-- {block}:end -->" in text


def test_every_api_name_the_readme_writes_resolves_from_a_plain_import():
    """`ep.data.register_dataset`, `entroprune.export.deployed_eager`: each dotted name the README writes works
    after `import entroprune as ep` alone (submodules were reachable only once something had imported them:
    `ep.models.build_model` failed in a fresh interpreter). A fresh interpreter, since this one has them all."""
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    names = sorted({m for m in re.findall(r"(?<![\w./-])(?:ep|entroprune)\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", text)})
    assert {"data.register_dataset", "search.rewards.register_reward", "export.deployed_eager"} <= set(names), names
    script = ("import functools, entroprune\n"
              f"for name in {names!r}:\n"
              "    functools.reduce(getattr, name.split('.'), entroprune)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1]
