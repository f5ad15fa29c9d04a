"""The ``entroprune`` command line: a thin shell over the Python API.

Every command turns an :class:`EntropruneError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .errors import ConfigError, EntropruneError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Structured filter pruning of CNNs with an entropy-rewarded RL agent.")
out = Console()
err = Console(stderr=True)

Seed = Annotated[int, typer.Option(help="Random seed; same seed, same result.")]
Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")]
Threads = Annotated[int, typer.Option(help="Torch CPU threads (0 = torch default).")]
DataDir = Annotated[str | None, typer.Option(help="Dataset folder or file (else $ENTROPRUNE_DATA, "
                                                  "then /usr/share/datasets).")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def handle_errors(fn):
    """Bad input ends in one readable line and exit 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EntropruneError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def _setup(seed: int, device: str, threads: int):
    from .utils import resolve_device, seed_everything, set_threads

    set_threads(threads)
    seed_everything(seed)
    return resolve_device(device)


def _prepare_out(path: Path, marker: str, force: bool) -> Path:
    from .utils import check_writable_dir

    if (path / marker).exists() and not force:
        raise ConfigError(f"{path} already holds {marker}; pass --force to overwrite it or "
                          "choose another --out")
    return check_writable_dir(path)


@app.command()
@handle_errors
def train(
    model: Annotated[str, typer.Option(help="Zoo model name.")] = "vgg",
    dataset: Annotated[str, typer.Option(help="Dataset name.")] = "fashion-mnist",
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/base"),
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 3,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 128,
    width_mult: Annotated[float, typer.Option(help="Channel width multiplier.")] = 1.0,
    train_limit: Annotated[int | None, typer.Option(help="Use only this many training images.")] = None,
    augment: Annotated[str, typer.Option(help="none, flip or shift (+flip).")] = "flip",
    data_dir: DataDir = None,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing checkpoint.")] = False,
    quiet: Quiet = False,
) -> None:
    """Train a zoo model from scratch and save model.pt + metrics.json."""
    from .api import train_baseline

    dev = _setup(seed, device, threads)
    result = train_baseline(model, dataset, out_dir, epochs=epochs, lr=lr, batch_size=batch_size,
                            width_mult=width_mult, data_dir=data_dir, seed=seed, device=dev,
                            train_limit=train_limit, force=force, quiet=quiet, augment=augment)
    out.print(f"test accuracy {result['test_accuracy']:.2f}%  params {result['params']:,}  "
              f"MACs {result['macs']:,}  ({result['train_time_s']:.0f} s)")
    out.print(f"checkpoint: {result['checkpoint']}")


@app.command()
@handle_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A model.pt written by entroprune.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the checkpoint's).")] = None,
    data_dir: DataDir = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 512,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results here.")] = None,
    trust_pickle: Annotated[bool, typer.Option(help="Allow pickled objects (runs code from the file).")] = False,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = 0,
) -> None:
    """Test accuracy, parameters and MACs of a checkpoint."""
    from .api import evaluate_checkpoint

    dev = _setup(seed, device, threads)
    rows = evaluate_checkpoint(checkpoint, dataset=dataset, data_dir=data_dir,
                               batch_size=batch_size, device=dev, trust_pickle=trust_pickle)
    from rich.table import Table

    table = Table(title=str(checkpoint))
    keys = [k for k in rows[0] if k != "name"]
    table.add_column("model")
    for k in keys:
        table.add_column(k, justify="right")
    for row in rows:
        table.add_row(row["name"], *[_fmt(row.get(k)) for k in keys])
    out.print(table)
    if json_out:
        from .utils import write_json

        write_json(json_out, rows)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

