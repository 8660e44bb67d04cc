"""docs/config.md is generated from the schema, and every key of the schema is explained."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

import imgcls.config
from imgcls.config_docs import REGENERATE, render, sections, slug

ROOT = Path(__file__).resolve().parents[1]
CONFIG_MD = ROOT / "docs" / "config.md"


def schema_models() -> list[type[BaseModel]]:
    """Every model defined in imgcls.config that holds config keys."""
    return [m for _, m in inspect.getmembers(imgcls.config, inspect.isclass)
            if issubclass(m, BaseModel) and m.__module__ == imgcls.config.__name__
            and m.model_fields]


def test_config_md_is_up_to_date():
    assert CONFIG_MD.is_file(), f"{CONFIG_MD} is missing; generate it with `{REGENERATE}`"
    assert CONFIG_MD.read_text() == render(), (
        f"docs/config.md differs from the schema in src/imgcls/config.py; regenerate it from "
        f"the repository root with `{REGENERATE}` (or `python -m imgcls.config_docs --write`)")


@pytest.mark.parametrize("model", schema_models(), ids=lambda m: m.__name__)
def test_every_field_has_a_description(model):
    missing = [name for name, info in model.model_fields.items()
               if not (info.description or "").strip()]
    assert not missing, (f"{model.__name__}: give these fields Field(..., description=...) "
                         f"in src/imgcls/config.py: {', '.join(missing)}")


def test_every_section_is_documented():
    documented = {s.model for s in sections()}
    assert set(schema_models()) <= documented
    keys = [s.key for s in sections()]
    for key in ("data", "model", "augment", "augment.mix", "optim", "optim.sam", "schedule",
                "schedule.plateau", "train", "train.checkpoint", "train.early_stopping",
                "train.ema", "stages[]"):
        assert key in keys


def test_every_key_has_a_row():
    text = render()
    for section in sections():
        body = text.split(f"\n## {section.title}\n", 1)[1].split("\n## ", 1)[0]
        for name in section.model.model_fields:
            assert f"\n| `{name}` |" in body, f"{section.key or 'top level'}.{name}"


def test_internal_links_resolve():
    text = render()
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    for target in re.findall(r"\]\(#([^)]+)\)", text):
        assert target in anchors, target
    for target in re.findall(r"\]\(([^)#:]+\.md)\)", text):
        assert (CONFIG_MD.parent / target).is_file(), target


def test_types_bounds_and_defaults():
    text = render()
    assert "| `image_size` | integer in [8, 1024] or `null` | `null` |" in text
    assert "| `val_fraction` | number in [0.0, 1.0) | `0.1` |" in text
    assert "| `resize` | `center_crop` \\| `squash` \\| `pad` | `center_crop` |" in text
    assert "| `std` | [number > 0, number > 0, number > 0] or `null` | `null` |" in text
    assert "| `eps` | number > 0 | `1.0e-08` |" in text
    assert "| `epochs` | integer >= 1 | required |" in text
    assert "| `sam` | section [optim.sam](#optimsam) or `null` | `null` |" in text
