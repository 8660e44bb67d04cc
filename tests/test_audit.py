"""`imgcls audit` on generated photos-like images with planted problems: copies of training
images in the test split (resized and recompressed, mirrored, cropped, and one byte for
byte), images filed under the wrong class, a blank and a dark image. It must find them by
name, and its suggested lists must be usable as `data.exclude` / `data.relabel`."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import tiny_config
from imgcls.audit import Findings, audit
from imgcls.cli import app
from imgcls.data import load_data

SIZE = 64
TINTS = [(200, 60, 50), (50, 170, 60), (60, 80, 210)]  # one colour cast per class


def scene(rng: np.random.Generator, tint: tuple[int, int, int]) -> np.ndarray:
    """A smooth random layout (a 4 x 4 colour grid upsampled) under the class's colour cast:
    every image its own structure, every class its own colour."""
    grid = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    layout = np.asarray(Image.fromarray(grid).resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    mixed = 0.55 * layout + 0.45 * np.array(tint) + rng.normal(0, 6, (SIZE, SIZE, 3))
    return np.clip(mixed, 0, 255).astype(np.uint8)


def save(array: np.ndarray, path: Path, quality: int = 95) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=quality)


def planted_folder(root: Path) -> dict[str, object]:
    """train/ and test/ class folders with the problems listed in the module docstring."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 36), ("test", 10)):
        for c, tint in enumerate(TINTS):
            for i in range(count):
                save(scene(rng, tint), root / split / f"class_{c}" / f"{i:02d}.jpg")
    original = {k: np.asarray(Image.open(root / f"train/class_{k}/0{k}.jpg")) for k in range(3)}
    small = Image.fromarray(original[0]).resize((40, 40), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=60)
    (root / "test/class_0/copy_resized.jpg").write_bytes(buffer.getvalue())
    save(original[1][:, ::-1], root / "test/class_1/copy_mirrored.jpg")
    crop = Image.fromarray(original[2][3:-2, 2:-3]).resize((SIZE, SIZE))
    save(np.asarray(crop), root / "test/class_2/copy_cropped.jpg")
    shutil.copy(root / "train/class_0/10.jpg", root / "test/class_0/copy_exact.jpg")
    wrong = []
    for k, (src, dst) in enumerate(((0, 1), (1, 2), (2, 0))):
        name = f"train/class_{dst}/wrong_{k}.jpg"
        save(scene(rng, TINTS[src]), root / name)
        wrong.append(name)
    save(np.full((SIZE, SIZE, 3), 128, np.uint8), root / "train/class_0/blank.jpg")
    save((scene(rng, TINTS[1]) * 0.04).astype(np.uint8), root / "train/class_1/dark.jpg")
    return {"copies": {"test/class_0/copy_resized.jpg": "train/class_0/00.jpg",
                       "test/class_1/copy_mirrored.jpg": "train/class_1/01.jpg",
                       "test/class_2/copy_cropped.jpg": "train/class_2/02.jpg",
                       "test/class_0/copy_exact.jpg": "train/class_0/10.jpg"},
            "wrong": wrong}


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("audit") / "images"
    return root, planted_folder(root)


@pytest.fixture(scope="module")
def audited(planted, tmp_path_factory) -> tuple[Findings, Path]:
    root, _ = planted
    out = tmp_path_factory.mktemp("audit-out")
    data = tiny_config(data={"path": str(root), "image_size": SIZE, "val_fraction": 0.0}).data
    return audit(data, out, features="lite0"), out


def test_audit_finds_every_planted_copy_across_the_splits_and_little_else(planted, audited):
    _, truth = planted
    findings, _ = audited
    across = {frozenset((p.a.name, p.b.name)): p for p in findings.duplicates if p.across}
    planted_pairs = {frozenset(pair) for pair in truth["copies"].items()}
    assert planted_pairs <= set(across), sorted(map(sorted, set(across)))
    assert len(set(across) - planted_pairs) <= 1  # the generated scenes are all different
    assert across[frozenset(("test/class_0/copy_exact.jpg", "train/class_0/10.jpg"))].exact
    assert findings.leakage.test_leaking >= 4 and findings.leakage.test_images == 34
    assert findings.threshold.twins_below <= 0.1


def test_audit_ranks_the_mislabelled_images_first(planted, audited):
    _, truth = planted
    findings, _ = audited
    top = [s.image.name for s in findings.label_suspects[:6]]
    assert set(truth["wrong"]) <= set(top), top
    first = next(s for s in findings.label_suspects if s.image.name == truth["wrong"][0])
    assert (first.image.label, first.suggested) == ("class_1", "class_0")
    assert findings.label_accuracy > 0.8


def test_audit_flags_blank_and_dark_images(audited):
    findings, _ = audited
    kinds = {(o.image.name, o.kind) for o in findings.outliers}
    assert ("train/class_0/blank.jpg", "constant") in kinds
    assert ("train/class_1/dark.jpg", "dark") in kinds
    assert not any(k in ("constant", "dark") for n, k in kinds if "blank" not in n
                   and "dark" not in n)


def test_audit_writes_a_page_findings_and_lists_that_the_data_keys_take(planted, audited):
    root, truth = planted
    findings, out = audited
    assert Findings.model_validate_json((out / "findings.json").read_text()) == findings
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64") >= 4 and "Likely label errors" in page
    excluded = (out / "exclude-suggested.txt").read_text()
    assert "train/class_0/10.jpg" in excluded and "train/class_0/blank.jpg" in excluded
    splits = load_data(tiny_config(data={
        "path": str(root), "image_size": SIZE, "val_fraction": 0.0,
        "exclude": str(out / "exclude-suggested.txt"),
        "relabel": str(out / "relabel-suggested.csv")}).data)
    assert splits.overlap.test_in_train == 0
    assert 0 < splits.edits.relabeled <= len(findings.label_suspects)


def test_audit_without_weights_still_finds_resized_and_recompressed_copies(planted, tmp_path):
    root, truth = planted
    data = tiny_config(data={"path": str(root), "image_size": SIZE}).data
    findings = audit(data, tmp_path, features="pixels")
    across = {frozenset((p.a.name, p.b.name)) for p in findings.duplicates if p.across}
    assert frozenset(("test/class_0/copy_resized.jpg", "train/class_0/00.jpg")) in across
    assert frozenset(("test/class_1/copy_mirrored.jpg", "train/class_1/01.jpg")) in across
    assert findings.label_suspects == [] and findings.label_method.startswith("none")
    assert json.loads((tmp_path / "findings.json").read_text())["features"].startswith("pixel")


def test_audit_cli_on_a_folder(planted, tmp_path):
    root, _ = planted
    result = CliRunner().invoke(app, ["audit", str(root), "--out", str(tmp_path / "a"),
                                      "--features", "pixels", "--set", "data.image_size=64"])
    assert result.exit_code == 0, result.output
    assert "test images" in result.output and (tmp_path / "a" / "report.html").is_file()


def test_alignment_undoes_crops_resizes_and_mirrors_but_does_not_match_another_scene():
    from imgcls.audit.align import aligned_similarity, gray
    from imgcls.audit.duplicates import edited_copies

    rng = np.random.default_rng(3)
    originals = np.stack([scene(rng, TINTS[c % 3]) for c in range(8)])
    copies, origin = edited_copies(originals, seed=0)
    copy = aligned_similarity(gray(copies), gray(originals)[origin])
    other = aligned_similarity(gray(copies), gray(np.roll(originals, 1, axis=0))[origin])
    assert copy.min() > 0.9, copy
    assert other.max() < copy.min() - 0.1, (other.max(), copy.min())
