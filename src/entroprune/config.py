"""The main job's configuration: typed dataclasses, loadable from YAML, validated strictly.

Unknown keys and wrong types are errors naming the key, so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from .errors import SETTING, ConfigError, as_keys
from .search.config import RewardConfig, SearchConfig
from .settings import (
    DEFAULT_FORMAT,
    DEFAULT_MODEL,
    DEFAULT_OPSET,
    DEFAULT_REFIT,
    DEFAULT_REFIT_HEAD,
    DEFAULT_REFIT_NORMS,
    FRESH_PROCESSES,
    check_image_size,
    check_types,
)

_STRICT = ConfigDict(extra="forbid")


@dataclass
class BaselineConfig:
    """Training of the unpruned model (cached and reused by later runs)."""

    __pydantic_config__ = _STRICT
    epochs: int = 3
    lr: float = 0.1
    batch_size: int = 128
    width_mult: float = 1.0
    augment: str = "flip"
    train_limit: int | None = None
    # An image folder's images read at this many pixels square (null: the size most of them have): photos of a
    # few megapixels are far more than the zoo's small nets need, and more than memory holds
    image_size: int | None = None


@dataclass
class FinetuneConfig:
    """Fine-tuning of the pruned model.

    :param epochs: passes over the training split.
    :param lr: initial learning rate of the cosine schedule.
    :param distill: distil from the unpruned network (knowledge distillation).
    :param nproc: data-parallel processes on this machine (torch.distributed); the batch stays global.
    """

    __pydantic_config__ = _STRICT
    epochs: int = 3
    lr: float = 0.02
    batch_size: int = 128
    distill: bool = True
    nproc: Annotated[int, Field(ge=1)] = 1


@dataclass
class PruneConfig:
    """Cutting the searched policy out of the model.

    :param refit: refit the kept weights by least squares so each layer's outputs on the calibration images
        match the unpruned net's (:mod:`entroprune.refit`; label-free): the pruned net works before any
        fine-tune (the main job's VGG at 20% of the MACs: 90.5% instead of 26%). On by default, with the search's
        re-ranking scoring its candidates refitted too (``SearchConfig.rerank_refit``): that pair of defaults
        (the arena's ``default-scored-refit`` source) beat the uniform policy's plain cut by 0.02-0.30 points
        on four of the arena's five pairs and lost 0.02 on the fifth (three seeds each; docs/arena.md), where
        the plain cut with the recovered re-ranking had reached 0.29 at most. Off: a plain cut.
    :param refit_norms: after the refit, scale each refitted conv's filters back to the norms the plain cut
        leaves them, and the BatchNorm reading the conv alike (the same function), so the fine-tune takes the
        plain cut's effective SGD steps on them (:func:`entroprune.refit.match_cut_norms`). Off: after the main
        job's fine-tune it gained 0.07 points over the refit alone on that VGG but lost 1.5-3.3 on ResNet-20, 1.53
        on VGG at 10% and 0.35 on VGG-16 (three seeds; docs/arena.md, the ``*-refit-norms`` sources): the
        refit's larger filters protect what it fitted.
    :param refit_head: with ``refit``, refit the layers whose outputs the model returns too (a classifier),
        each only where the calibration images give it ``entroprune.refit.REFIT_HEAD_ROWS`` (3) equations per
        kept input; under that it stays as cut, with a warning. No normalisation follows such a layer, so its
        scale is the logits': MobileNetV2's classifier, refitted on 1024 images for 600 kept inputs, came out
        19.6x its RMS and the main job's fine-tune ended 7.6-10.0 points below the plain cut; left as cut,
        +0.02 ± 0.36 over it (three seeds) (docs/arena.md, the ``*-refit-body`` sources). Elsewhere (4.3-42.7 equations per input) leaving
        it gained nothing (-0.11 to +0.03 against the head refitted on three pairs), so it stays on.
    :param bn_recalibration: re-estimate BatchNorm statistics on the calibration images.
    """

    __pydantic_config__ = _STRICT
    refit: bool = DEFAULT_REFIT
    refit_norms: bool = DEFAULT_REFIT_NORMS
    refit_head: bool = DEFAULT_REFIT_HEAD
    bn_recalibration: bool = True

    def __post_init__(self) -> None:
        if self.refit_norms and not self.refit:
            raise ConfigError("`refit_norms` rescales the filters the refit fits, and nothing is refitted; set "
                              "`refit` too, or leave `refit_norms` off")


# The images of the main job's zoo baseline when the config names none
ZOO_DATASET = "fashion-mnist"
#: Images per batch when a checkpoint is scored (memory, not results: evaluation is deterministic).
EVAL_BATCH_SIZE = 512
#: Calibration images behind `inspect`'s per-layer entropy.
INSPECT_CALIB_SIZE = 256


@dataclass
class RunConfig:
    """Everything ``entroprune run`` does, end to end."""

    __pydantic_config__ = _STRICT
    # A trained entroprune checkpoint (`entroprune train`, or entroprune.save_checkpoint) to prune instead of
    # training the zoo baseline: the run takes the checkpoint's model (model and baseline describe a baseline
    # to train and are then unused).
    checkpoint: str | None = None
    model: str = DEFAULT_MODEL
    # The images: the zoo baseline's (null: ZOO_DATASET, fashion-mnist), or with a checkpoint those the
    # search, prune and fine-tunes run on and the report scores on (null: the checkpoint's own dataset;
    # unlabelled images make the run label-free). data_dir, if set, says where they live.
    dataset: str | None = None
    data_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    # Ray actors scoring the search's episode batches (extra entroprune[ray]); 1 = in-process.
    # Unless search.episode_batch is set, it follows workers, as on the command line.
    workers: Annotated[int, Field(ge=1)] = 1
    ray_address: str | None = None
    out_root: str = "runs"
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    export_format: str = DEFAULT_FORMAT
    # ONNX's opset (of an onnx export and of the int8 one) and a fixed batch size for onnx and pt2 (0: any batch),
    # for deployment toolchains that take only lower opsets or static shapes
    export_opset: int = DEFAULT_OPSET
    export_batch: int = 0
    # Also write model.int8.onnx: int8 ONNX (QDQ), calibrated on the calibration images and checked on the test
    # split (top-1 agreement with the float net), in export_opset and export_batch
    export_int8: bool = False
    latency_repeats: int = 20
    # Fresh Python processes the evaluation's latencies are timed in (the median over them), as a deployment
    # starts; 0 times them in the run's own process, after training (less like a deployment, no start-up cost).
    latency_processes: Annotated[int, Field(ge=0)] = FRESH_PROCESSES
    # Also cut the uniform policy (one keep ratio for every group) plainly, by L1 (the arena's `uniform`) and without
    # the refit, and give it the same fine-tune: the report's reference line, which shows what the tool (search,
    # ranking and refit) bought over the trivial choice.
    reference_uniform: bool = True
    # For a latency-targeted run (search.latency_target), also run the default MACs-targeted search aimed at
    # the same predicted latency and give its net the same fine-tune and timing: the report's second reference,
    # which shows what targeting measured time bought over targeting MACs.
    reference_macs: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Everything checkable before the run writes anything: a bad value found after the search and
        the fine-tune would leave a half-made run folder behind."""
        import inspect

        from .export import FORMATS, check_export_options
        from .search.agents.ddpg import DDPGAgent
        from .train import TrainConfig

        def at(key: str, check: Callable[[], Any]) -> None:
            try:
                check()
            except ConfigError as exc:  # a message naming its settings names them as keys under this one
                text = str(exc)
                raise ConfigError(as_keys(text, key) if SETTING.search(text) else f"config key {key!r}: {text}") from None

        check_types(self)
        b, f = self.baseline, self.finetune
        at("baseline", lambda: TrainConfig(epochs=b.epochs, lr=b.lr, batch_size=b.batch_size, augment=b.augment).validate())
        at("finetune", lambda: TrainConfig(epochs=f.epochs, lr=f.lr, batch_size=f.batch_size).validate())
        if self.baseline.width_mult <= 0 or (b.train_limit is not None and b.train_limit < 1):
            raise ConfigError("config key 'baseline': width_mult must be > 0 and train_limit >= 1 (or null)")
        if self.checkpoint is None:  # a given checkpoint's run trains no baseline: its keys are unused
            at("baseline", lambda: check_image_size(b.image_size, self.dataset or "fashion-mnist"))
        if self.checkpoint is None and b.epochs < 1:  # checked here, not when the run folder already exists
            raise ConfigError(f"config key 'baseline.epochs' must be >= 1 to train a baseline, got {b.epochs}")
        at("search", self.search.validate)
        known = set(inspect.signature(DDPGAgent.__init__).parameters) - {"self", "obs_dim", "seed", "warmup"}
        unknown = sorted(set(self.search.ddpg) - known)
        if unknown:
            raise ConfigError(f"config key 'search.ddpg': unknown DDPG setting(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
        layers = self.search.reward.layers
        if layers not in ("all", "last") and not layers.startswith("last:") and not layers.replace(",", "").strip():
            raise ConfigError("config key 'search.reward.layers': give all, last, last:K or conv names")
        if layers.startswith("last:") and not layers[5:].isdigit():
            raise ConfigError(f"config key 'search.reward.layers': {layers!r} is not last:K with K a whole number")
        if self.export_format not in FORMATS:
            raise ConfigError(f"config key 'export_format': {self.export_format!r} is not one of {', '.join(FORMATS)}")
        try:
            check_export_options(self.export_format, self.export_opset if self.export_format == "onnx" else None,
                                 self.export_batch)
            if self.export_int8:  # always ONNX, in export_opset, whatever export_format is
                check_export_options("onnx", self.export_opset, self.export_batch, int8=True)
        except ConfigError as exc:
            raise ConfigError(as_keys(str(exc), lambda name: f"export_{name}")) from None
        if self.latency_repeats < 1:
            raise ConfigError(f"config key 'latency_repeats' must be >= 1, got {self.latency_repeats}")


SearchConfig.__pydantic_config__ = _STRICT  # type: ignore[attr-defined]
RewardConfig.__pydantic_config__ = _STRICT  # type: ignore[attr-defined]


def quick_config() -> RunConfig:
    """A smoke run of the whole pipeline in well under a minute (used by the tests)."""
    cfg = RunConfig(dataset="digits")
    cfg.baseline = BaselineConfig(epochs=2, width_mult=0.5)
    cfg.search = SearchConfig(macs_target=0.3, episodes=12, warmup=4, calib_size=64, val_size=128,
                              checkpoint_every=4)
    cfg.finetune = FinetuneConfig(epochs=1)
    cfg.latency_repeats = 3
    cfg.latency_processes = 1  # the fresh-process path, once: each process costs an interpreter's start-up
    return cfg


def parse_config(data: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Validate a (partial) config mapping on top of ``base``'s values."""
    _refuse_bool_numbers(RunConfig, data)
    merged = _merge((base or RunConfig()).to_dict(), data)
    search = data.get("search")
    if "seed" in data and not (isinstance(search, dict) and "seed" in search):
        merged["search"]["seed"] = merged["seed"]
    if "workers" in data and not (isinstance(search, dict) and "episode_batch" in search):
        merged["search"]["episode_batch"] = merged["workers"]
    try:
        cfg = TypeAdapter(RunConfig).validate_python(merged, strict=False)
    except ValidationError as exc:
        err = exc.errors()[0]
        # pydantic names the member of a union it tried (`round_to: 7.5` gave 'search.round_to.int')
        where = ".".join(str(p) for p in err["loc"] if not re.fullmatch(r"int|float|str|bool|none|.*\[.*", str(p)))
        close = _close_key(where) if err["type"] == "unexpected_keyword_argument" else None
        fix = f"did you mean {close!r}? Fix or remove it" if close else "fix or remove it"
        if err["type"] == "dataclass_type":  # a section given a value: `reward: accuracy`, `search:` left empty
            section = where.rsplit(".", 1)[-1]
            fix = (f"it is a section of keys: write `{section}: {{kind: {err['input']}}}`"
                   if isinstance(err["input"], str) and "kind" in _section_keys(where)
                   else "it is a section of keys, or leave it out for its defaults")
        raise ConfigError(f"config key {where!r}: {err['msg']}; {fix} (see configs/default.yaml for every key)") from None
    for key in ("checkpoint", "model", "dataset", "data_dir", "out_root", "ray_address"):
        if isinstance(getattr(cfg, key), str) and not getattr(cfg, key).strip():  # '' read as '.' or as the default
            raise ConfigError(f"`{key}` is empty; give it a value, or leave it out for its default")
    if cfg.search.seed != cfg.seed:  # one seed drives every stage of the run
        raise ConfigError(f"config key 'search.seed' ({cfg.search.seed}) differs from 'seed' ({cfg.seed}); "
                          "the top-level seed seeds every stage of the run, set that one and remove search.seed")
    return cfg


def _section_keys(path: str) -> list[str]:
    """The keys of the config section at ``path`` (``search.reward``: kind, variant, ...); [] if it is none."""
    import dataclasses
    import typing

    cls: Any = RunConfig
    for name in path.split(".") if path else []:
        cls = typing.get_type_hints(cls).get(name)
        if not dataclasses.is_dataclass(cls):
            return []
    return [f.name for f in dataclasses.fields(cls)]


def _close_key(where: str) -> str | None:
    """The key a misspelt one (``search.macs_targt``) most likely meant (``search.macs_target``), if any is close."""
    import difflib

    *parents, key = where.split(".")
    close = difflib.get_close_matches(key, _section_keys(".".join(parents)), n=1)
    return ".".join([*parents, close[0]]) if close else None


def _refuse_bool_numbers(cls: type, data: dict[str, Any], prefix: str = "") -> None:
    """pydantic's lax mode reads a boolean as the number 1 or 0 (`seed: true` ran with seed 1, `episodes: yes` one
    episode); a number key given a boolean is an error naming it."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            _refuse_bool_numbers(hint, value, f"{prefix}{key}.")  # type: ignore[arg-type]
        elif isinstance(value, bool) and hint is not None:
            kinds = typing.get_args(hint) or (hint,)
            if bool not in kinds and (int in kinds or float in kinds):
                raise ConfigError(f"config key {prefix + key!r} must be a number, got {str(value).lower()} (YAML "
                                  "reads true, false, yes, no, on and off as booleans); fix or remove it")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _strict_loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """Safe YAML without aliases (a config needs none; nested ones can expand without bound, the
        'billion laughs') and without duplicate keys (the second would silently win)."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise ConfigError("YAML aliases (*name) are not supported in configs; write the values out")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise ConfigError(f"key {key!r} appears twice (line {key_node.start_mark.line + 1}); keep one")
                seen.add(key)
            return super().construct_mapping(node, deep)

    return StrictLoader


def load_config(path: str | Path | None, quick: bool = False, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The config file's settings (or none) over the defaults, or over the quick preset's with ``quick``;
    ``overrides`` (a command line's flags, as config keys) win over the file. The quick preset's dataset is
    its baseline's: a run with a checkpoint keeps the checkpoint's unless the file or an override names one."""
    data = _merge(_anchor_paths(_read_config(path), Path(path).parent) if path is not None else {}, overrides or {})
    base = quick_config() if quick else RunConfig()
    if quick and data.get("checkpoint") is not None and "dataset" not in data:
        base.dataset = None
    return parse_config(data, base) if data else base


#: A config file's keys that name input files or folders, (section or None, key): relative ones are read from
#: the file's folder, so a YAML file kept beside its checkpoint means the same wherever the command runs
#: (out_root, an output, stays the command's).
PATH_KEYS = ((None, "checkpoint"), (None, "data_dir"), ("search", "latency_model"))


def _anchor_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, key in PATH_KEYS:
        holder = data if section is None else data.get(section)
        value = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            holder[key] = str(folder / value)
    return data


def _read_config(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass an existing YAML file")
    try:
        data = yaml.load(p.read_text(), Loader=_strict_loader()) or {}
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} is not valid YAML ({str(exc).splitlines()[0]}); fix its syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a YAML mapping of settings, not {type(data).__name__}")
    return data


def dump_config(cfg: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


__all__ = ["ZOO_DATASET", "EVAL_BATCH_SIZE", "INSPECT_CALIB_SIZE", "RunConfig", "BaselineConfig", "FinetuneConfig", "PruneConfig", "load_config", "parse_config", "dump_config",
           "quick_config"]
