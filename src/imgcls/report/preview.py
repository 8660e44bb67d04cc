"""`imgcls augment preview` as a function: the augmentation blocks of a config (one per op,
then all of them in order), of an experiment file (one per variant) or of ops given by hand,
each applied to the same real training images, written as one PNG grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from imgcls.augment import AugmentOp, build_op, create_augment
from imgcls.augment.preview import augmented_rows, pick_images
from imgcls.config import Config, ConfigError, read_yaml
from imgcls.configure import load_config
from imgcls.data import load_data
from imgcls.experiment.spec import load_experiment
from imgcls.report.plots import plt, save_figure


def preview_blocks(config: Path, overrides: list[str] = (), ops: list[str] = ()
                   ) -> tuple[Config, dict[str, list[AugmentOp]]]:
    """The config whose training images are shown, and the named blocks of ops."""
    raw = read_yaml(config)
    if {"base", "variants", "grid"} & set(raw):  # an experiment: its variants
        plan = load_experiment(config)
        configs = {name: plan.config(name, plan.seeds[0]) for name, _ in plan.variants}
        cfg = next(iter(configs.values()))
        blocks = {name: create_augment(c.augment) for name, c in configs.items()}
    else:
        cfg = load_config(config, list(overrides))
        chain = create_augment(cfg.augment)
        blocks = {str(o.spec()): [o] for o in chain}
        if len(chain) > 1:
            blocks["all of the above, in order"] = chain
    if ops:
        blocks = {text: [build_op(yaml.safe_load(text))] for text in ops}
    if not blocks:
        raise ConfigError(f"{config}: augment.ops is empty; nothing to preview (try --op "
                          "randaugment)")
    return cfg, blocks


def write_augment_preview(config: Path, out: Path, overrides: list[str] = (),
                          ops: list[str] = (), images: int = 3, versions: int = 6,
                          seed: int = 0) -> int:
    """Write the grid to `out`; returns the number of blocks in it."""
    cfg, blocks = preview_blocks(config, overrides, ops)
    data = load_data(cfg.data).train
    picked = data.images[pick_images(data.labels, images, seed)]
    rows = {name: augmented_rows(chain, picked, versions, seed)
            for name, chain in blocks.items()}
    save_figure(preview_figure(rows, f"{Path(config).name}: {len(rows)} augmentation(s)"), out)
    return len(rows)


def _tile(rows: np.ndarray, gap: int) -> np.ndarray:
    """One image of a block: rows of tiles with white gaps, half a tile after the original."""
    n, k, h, w, _ = rows.shape
    canvas = np.full((n * (h + gap) - gap, k * (w + gap) - gap + w // 2, 3), 255, np.uint8)
    for r in range(n):
        for c in range(k):
            x = c * (w + gap) + (w // 2 if c else 0)
            canvas[r * (h + gap):r * (h + gap) + h, x:x + w] = rows[r, c]
    return canvas


def preview_figure(blocks: dict[str, np.ndarray], title: str):
    """A figure with one labelled block per op; `blocks` from `augmented_rows`."""
    tiles = {name: _tile(rows, gap=max(1, rows.shape[2] // 16)) for name, rows in blocks.items()}
    width = max(t.shape[1] for t in tiles.values())
    heights = [t.shape[0] for t in tiles.values()]
    scale = 9.0 / width  # inches per pixel: 9 inches wide
    fig, axes = plt.subplots(len(tiles), 1, squeeze=False, gridspec_kw={"height_ratios": heights},
                             figsize=(10, sum(heights) * scale + 0.45 * len(tiles) + 0.6))
    for ax, (name, tile) in zip(axes[:, 0], tiles.items(), strict=True):
        ax.imshow(tile, interpolation="nearest")
        ax.set_title(name, loc="left", fontsize=10, family="monospace")
        ax.axis("off")
    fig.suptitle(title + "\n(left: the original; right: augmented versions)", fontsize=11,
                 y=1.0 + 0.5 / fig.get_figheight())
    fig.tight_layout()
    return fig
