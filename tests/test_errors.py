"""Library errors name settings as Python users write them; each front end renders its own names."""

import ast
import subprocess
import sys
from pathlib import Path

from entroprune.cli import FLAG_NAMES, _config_keys
from entroprune.errors import as_flags, as_keys

SRC = Path(__file__).resolve().parents[1] / "src" / "entroprune"


def test_library_errors_name_settings_not_flags():
    """Only the CLI writes flags: a `raise` elsewhere that says --something would show a flag to YAML and
    Python users."""
    shell = ("ray start --head",)  # commands of other tools, quoted whole
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                for sub in ast.walk(node.exc):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        text = sub.value
                        for cmd in shell:
                            text = text.replace(cmd, "")
                        if " --" in f" {text}":
                            hits.append(f"{path.relative_to(SRC)}:{node.lineno}: {text.strip()}")
    assert not hits, "\n".join(hits)


def test_settings_render_as_flags_and_as_config_keys():
    msg = ("`macs_target` 0.01 is unreachable; lower `min_keep`, use `reward.kind=combined`, pass `force=True` "
           "or `distill=False`, leave `ignored_layers=conv1` whole, choose another `out_dir`")
    assert as_flags(msg, FLAG_NAMES) == (
        "--macs-target 0.01 is unreachable; lower --min-keep, use --reward combined, pass --force or --no-distill, "
        "leave --ignore conv1 whole, choose another --out")
    assert _config_keys(msg) == (
        "'search.macs_target' 0.01 is unreachable; lower 'search.min_keep', use 'search.reward.kind: combined', "
        "pass 'force: true' or 'distill: false', leave 'search.ignored_layers: conv1' whole, choose another 'out_dir'")
    assert _config_keys("prune without it (`refit=False`), re-rank without it (`rerank_refit=False`)") == (
        "prune without it ('prune.refit: false'), re-rank without it ('search.rerank_refit: false')")
    assert as_keys("`lr` must be positive", "finetune") == "'finetune.lr' must be positive"
    assert as_flags("no setting named here") == "no setting named here"

    # a library's exception quoted in a refusal keeps its words: torch's backticks are no settings of ours
    from entroprune.errors import ConfigError, one_line

    quoted = ConfigError(f"cannot prune ({one_line(RuntimeError('`embed_dim` must divide evenly by `num_heads`'))}); "
                         "leave it whole with ignored layers (`ignored_layers=c1`)")
    assert as_flags(str(quoted), FLAG_NAMES) == ("cannot prune (RuntimeError: 'embed_dim' must divide evenly by "
                                                 "'num_heads'); leave it whole with ignored layers (--ignore c1)")


def test_the_cli_and_the_config_name_their_own_settings(tmp_path):
    """The same check, reached from the command line and from a run config."""
    cli = subprocess.run([sys.executable, "-m", "entroprune.cli", "search", str(tmp_path / "none.pt"),
                          "--episodes", "0", "--out", str(tmp_path / "s")], capture_output=True, text=True)
    (tmp_path / "c.yaml").write_text("search:\n  episodes: 0\n")
    run = subprocess.run([sys.executable, "-m", "entroprune.cli", "run", "--config", str(tmp_path / "c.yaml"),
                          "--out-root", str(tmp_path)], capture_output=True, text=True)
    assert cli.returncode == 2 and "--episodes must be >= 1" in cli.stderr, cli.stderr
    assert run.returncode == 2 and "'search.episodes' must be >= 1" in run.stderr, run.stderr


def test_a_diverged_training_is_a_run_error_exit_1(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", "train", "--dataset", "digits", "--epochs", "1",
                           "--lr", "1e30", "--out", str(tmp_path / "t"), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 1 and "training diverged" in proc.stderr and "lower --lr" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_flops_target_still_works_with_a_deprecation_warning(tmp_path, digits_ckpt):
    """The old name of macs_target is accepted, with a warning, in the API, a YAML config and on the CLI."""
    import pytest

    from entroprune.config import load_config
    from entroprune.errors import EntropruneDeprecationWarning
    from entroprune.search import SearchConfig

    with pytest.warns(EntropruneDeprecationWarning, match="`flops_target` is deprecated, use `macs_target`"):
        assert SearchConfig(flops_target=0.3).macs_target == 0.3
    (tmp_path / "c.yaml").write_text("search:\n  flops_target: 0.4\n")
    with pytest.warns(EntropruneDeprecationWarning):
        assert load_config(tmp_path / "c.yaml").search.macs_target == 0.4
    proc = subprocess.run([sys.executable, "-m", "entroprune.cli", "search", str(digits_ckpt), "--flops-target",
                           "0.5", "--agent", "uniform", "--out", str(tmp_path / "s"), "--quiet", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "warning: --flops-target is deprecated, use --macs-target" in proc.stderr
    assert "(target 50.0%)" in proc.stdout
