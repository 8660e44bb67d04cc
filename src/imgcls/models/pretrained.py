"""Pretrained weights for transfer learning, and the preprocessing that belongs to them.

`model.pretrained` is `true` (timm's hub weights for a `timm:` model, downloaded once into
the Hugging Face cache), or a path: a state dict (`.pt`, `.pth`, `.bin`; loaded with
`weights_only=True`), a `.safetensors` file, or an imgcls checkpoint; or `package:NAME`, the
weights file that an installed Python package ships (found on disk, never imported). An
imgcls run folder's best weights and preprocessing are read by the trainer's setup, which
owns run folders, and handed in as `Weights`. Every tensor of the model is either loaded or,
for the classifier head only, newly initialized; anything else is an error, so a typo never
trains from scratch.

A file from another implementation of the same architecture names its tensors its own way
(efficientnet_pytorch's `_blocks.0._depthwise_conv.weight` is timm's
`blocks.0.0.conv_dw.weight`); `model.pretrained_keys` maps them, by order or by regex
renames, and the mapping is recorded with the load report.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from imgcls.log import exception_line
from imgcls.models.parts import head_name, input_channels
from imgcls.models.timm_models import TIMM_PREFIX, is_timm, timm_id

STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
PACKAGE_PREFIX = "package:"
KeyMapping = Literal["by_name", "by_order"] | dict[str, str]
IMAGENET_HINT = ("download the weights on a machine that is online (e.g. `timm.create_model"
                 "(NAME, pretrained=True)` and `torch.save(model.state_dict(), 'NAME.pth')`, "
                 "or the hub's model.safetensors) and set model.pretrained: /path/to/that file")


class PretrainedError(ValueError):
    pass


@dataclass
class Preprocess:
    """What the weights were trained on; None where the weights do not say."""

    input_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None
    classes: list[str] | None = None


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # initialized fresh (the head)
    skipped: list[str] = field(default_factory=list)  # in the file, unused
    adapted: list[str] = field(default_factory=list)  # loaded, RGB stem summed for gray input
    keys: str = "by_name"  # how the file's names were matched: by_name, by_order or renames
    mapping: dict[str, str] = field(default_factory=dict)  # file name -> model name, renamed

    def summary(self) -> str:
        text = (f"pretrained weights from {self.source}: {len(self.loaded)} tensors loaded, "
                f"{len(self.new)} new ({', '.join(self.new) or 'none'}), "
                f"{len(self.skipped)} skipped")
        if self.adapted:
            text += f", {', '.join(self.adapted)} summed over RGB for 1-channel input"
        if self.mapping:
            text += f", {len(self.mapping)} matched {self.keys.replace('_', ' ')}"
        return text + (f" ({', '.join(self.skipped[:6])}{', ...' if len(self.skipped) > 6 else ''})"
                       if self.skipped else "")

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": self.loaded, "new": self.new,
                "skipped": self.skipped, "adapted": self.adapted, "keys": self.keys,
                "mapping": self.mapping}


def timm_preprocess(model: nn.Module) -> Preprocess:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    return Preprocess(size[-1] if size else None, cfg.get("mean"), cfg.get("std"),
                      cfg.get("interpolation"))


@dataclass
class Weights:
    """A state dict with what its source says about the preprocessing it was trained with."""

    state: dict[str, torch.Tensor]
    preprocess: Preprocess = field(default_factory=Preprocess)


def package_weights(value: str) -> Path:
    """The one weights file inside the installed package of `package:NAME` (`NAME` the import
    or the pip name), or `package:NAME/sub/path.pth` when it ships several."""
    spec_name, _, inner = value.removeprefix(PACKAGE_PREFIX).partition("/")
    module = spec_name.replace("-", "_")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedError(f"model.pretrained = {value!r}: no installed package {module!r} "
                              f"(pip install {spec_name.replace('_', '-')})")
    root = Path(next(iter(spec.submodule_search_locations)))
    if inner:
        return root / inner
    found = sorted(p for p in root.rglob("*") if p.suffix in STATE_DICT_SUFFIXES)
    if len(found) != 1:
        listed = ", ".join(str(p.relative_to(root)) for p in found[:8]) or "none"
        raise PretrainedError(f"model.pretrained = {value!r}: the package holds "
                              f"{len(found)} weights files ({listed}); name one as "
                              f"{PACKAGE_PREFIX}{spec_name}/PATH")
    return found[0]


def read_weights(path: str | Path) -> Weights:
    """The state dict in the file `path` (or in the package `package:NAME`)."""
    path = package_weights(path) if str(path).startswith(PACKAGE_PREFIX) else Path(path)
    if path.is_dir():
        raise PretrainedError(f"model.pretrained = {str(path)!r}: a folder, but not an imgcls "
                              "run with checkpoints/best.pt")
    if not path.is_file():
        raise PretrainedError(f"model.pretrained = {str(path)!r}: no such file or folder; "
                              f"expected a state dict ({', '.join(STATE_DICT_SUFFIXES)}) or an "
                              "imgcls run folder")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return Weights(load_file(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise PretrainedError(f"model.pretrained = {str(path)!r}: not a loadable state dict "
                              f"({exception_line(exc)})") from None
    return Weights(unwrap(state, path))


def unwrap(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """A bare state dict from imgcls checkpoints ({'model': ...}), training checkpoints
    ({'state_dict': ...}) and DDP-saved ones ('module.' prefixes)."""
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise PretrainedError(f"{path}: not a state dict (a mapping of tensor names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def map_keys(model: nn.Module, state: dict[str, torch.Tensor], keys: KeyMapping,
             source: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The file's tensors under the model's names, and the renames made (file -> model)."""
    if keys == "by_name":
        return state, {}
    mapping = (by_order(model, state, source) if keys == "by_order"
               else renamed(state, keys, source))
    return ({mapping.get(k, k): v for k, v in state.items()},
            {k: v for k, v in mapping.items() if k != v})


def by_order(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, str]:
    """Pair the file's tensors with the model's in order (BatchNorm's `num_batches_tracked`
    counters left out on both sides, then following their modules), every body tensor's
    shape checked. The file may end with its own head, which pairs with the model's head
    and is replaced as usual."""
    full = model.state_dict()
    own = {k: v for k, v in full.items() if not k.endswith("num_batches_tracked")}
    theirs = [k for k in state if not k.endswith("num_batches_tracked")]
    head = head_name(model) + "."
    body = [k for k in own if not k.startswith(head)]
    heads = [k for k in own if k.startswith(head)]
    if len(theirs) not in (len(body), len(body) + len(heads)):
        raise PretrainedError(
            f"model.pretrained = {source!r} with pretrained_keys: by_order: the file has "
            f"{len(theirs)} tensors, the model {len(body)} before its head and {len(heads)} "
            "in it (num_batches_tracked not counted); by_order needs the same architecture "
            "(model.name, model.args); use regex renames for partial matches")
    pairs = list(zip(theirs, body + heads, strict=False))
    for index, (mine, yours) in enumerate(pairs[:len(body)]):
        a, b = state[mine], own[yours]
        if a.shape != b.shape and not is_rgb_stem_for_gray(a, b):
            raise PretrainedError(
                f"model.pretrained = {source!r} with pretrained_keys: by_order: tensor "
                f"{index} is {mine} {tuple(a.shape)} in the file but {yours} {tuple(b.shape)} "
                "in the model; the tensors are not in the same order (a different "
                "architecture or variant?)")
    mapping = dict(pairs)
    # each BatchNorm's counter follows the module its statistics were paired with
    modules = {a.rpartition(".")[0]: b.rpartition(".")[0] for a, b in pairs}
    for name in state:
        module, _, leaf = name.rpartition(".")
        if leaf == "num_batches_tracked" and f"{modules.get(module)}.{leaf}" in full:
            mapping[name] = f"{modules[module]}.{leaf}"
    return mapping


def renamed(state: dict[str, torch.Tensor], renames: dict[str, str],
            source: str) -> dict[str, str]:
    """Each file name with the regex renames applied in order."""
    mapping: dict[str, str] = {}
    for name in state:
        new = name
        for pattern, replacement in renames.items():
            new = re.sub(pattern, replacement, new)
        mapping[name] = new
    seen: dict[str, str] = {}
    for name, new in mapping.items():
        if new in seen:
            raise PretrainedError(f"model.pretrained = {source!r}: pretrained_keys renames "
                                  f"both {seen[new]} and {name} to {new}")
        seen[new] = name
    return mapping


def apply_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                     keep_head: bool = False) -> LoadReport:
    """Load every matching tensor; the head is replaced (new) unless `keep_head` and its
    shape fits. Anything else missing or misshapen is an error naming the tensor."""
    head = head_name(model)
    own = model.state_dict()
    report = LoadReport(source)
    loadable = {}
    problems = []
    for name, tensor in own.items():
        in_head = name.startswith(head + ".")
        theirs = state.get(name)
        if in_head and not (keep_head and theirs is not None and theirs.shape == tensor.shape):
            report.new.append(name)
        elif theirs is None:
            if not name.endswith("num_batches_tracked"):
                problems.append(f"{name} is missing")
        elif is_rgb_stem_for_gray(theirs, tensor):  # an RGB model's stem, gray images
            loadable[name] = theirs.sum(1, keepdim=True)
            report.loaded.append(name)
            report.adapted.append(name)
        elif theirs.shape != tensor.shape:
            problems.append(f"{name} has shape {tuple(theirs.shape)} in the file, "
                            f"{tuple(tensor.shape)} in the model")
        else:
            loadable[name] = theirs
            report.loaded.append(name)
    report.skipped = [k for k in state if k not in loadable]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        raise PretrainedError(f"model.pretrained = {source!r} does not fit "
                              f"{type(model).__name__}: {shown}. Is it the same architecture "
                              "(model.name, model.args)?")
    model.load_state_dict(loadable, strict=False)
    zero_new_classifier(model, report.new)
    return report


def zero_new_classifier(model: nn.Module, new: list[str]) -> None:
    """A new head's output layer starts at zero: every class equally likely (loss ln C) and
    no random signal sent back into the pretrained features. Constructors initialize it for
    the 1000 ImageNet classes or worse (timm's EfficientNets draw U(+-1/sqrt(classes)):
    +-0.45 for 5 classes, initial losses near 5 and a head-only stage 20 points behind)."""
    head_path = head_name(model)
    head = model.get_submodule(head_path)
    linears = [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return
    path, last = linears[-1]
    prefix = ".".join(p for p in (head_path, path) if p)
    with torch.no_grad():
        for name, param in last.named_parameters():
            if f"{prefix}.{name}" in new:
                param.zero_()


def is_rgb_stem_for_gray(theirs: torch.Tensor, own: torch.Tensor) -> bool:
    """A conv weight for 3 input channels where the model's takes 1 (else the same)."""
    return (theirs.ndim == own.ndim == 4 and theirs.shape[1] == 3 and own.shape[1] == 1
            and theirs.shape[0] == own.shape[0] and theirs.shape[2:] == own.shape[2:])


def load_pretrained(model: nn.Module, pretrained: bool | str, model_name: str,
                    classes: list[str], weights: Weights | None = None,
                    keys: KeyMapping = "by_name") -> tuple[LoadReport, Preprocess]:
    """Put the pretrained weights into `model` (built for `classes`): timm's hub weights
    (`pretrained` true), `weights` when the caller has read them, else the file
    `pretrained`, its names matched to the model's as `keys` says."""
    if pretrained is True:
        return _load_from_hub(model, model_name, len(classes))
    weights = weights or read_weights(pretrained)
    pre = weights.preprocess
    if pre.input_size is None:
        pre = timm_preprocess(model) if is_timm(model_name) else pre
    state, mapping = map_keys(model, weights.state, keys, str(pretrained))
    # the head carries over only from a run trained on exactly these classes
    report = apply_state_dict(model, state, str(pretrained), keep_head=pre.classes == classes)
    report.keys = keys if isinstance(keys, str) else "renames"
    report.mapping = mapping
    return report, pre


def _load_from_hub(model: nn.Module, model_name: str,
                   num_classes: int) -> tuple[LoadReport, Preprocess]:
    if not is_timm(model_name):
        raise PretrainedError(f"model.pretrained: true downloads timm's weights, but "
                              f"{model_name!r} is not a {TIMM_PREFIX} model; give a file or "
                              "an imgcls run folder instead")
    from timm.models import load_pretrained as timm_load

    cfg = getattr(model, "pretrained_cfg", None) or {}
    where = cfg.get("hf_hub_id") or cfg.get("url")
    if not where:
        raise PretrainedError(f"{model_name} has no pretrained weights in timm; "
                              "`timm.list_pretrained()` lists the models that do")
    try:
        timm_load(model, num_classes=num_classes, in_chans=input_channels(model))
    except Exception as exc:  # noqa: BLE001 - offline, proxy, hub errors all end here
        raise PretrainedError(
            f"model.pretrained: could not fetch the weights of {model_name} from {where} "
            f"({exception_line(exc)}). Offline? "
            + IMAGENET_HINT.replace("NAME", timm_id(model_name))) from None
    head = head_name(model)
    new = [k for k in model.state_dict() if k.startswith(head + ".")]  # timm drops its head
    loaded = [k for k in model.state_dict() if k not in new]
    zero_new_classifier(model, new)
    return LoadReport(f"hub {where}", loaded, new, []), timm_preprocess(model)
