"""The augmentation library: every op on whole batches, per-image randomness, policies,
MixUp/CutMix, config errors; colour ops agree with torchvision's reference functions."""

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from imgcls.augment import AUGMENTS, AugmentContext, Mixer, build_op
from imgcls.augment import functional as AF
from imgcls.augment.mix import target_hits
from imgcls.augment.policies import RAND_OPS
from imgcls.config import AugmentConfig, ConfigError, MixConfig
from imgcls.configure import load_config, validate

POLICIES = {"randaugment", "trivialaugment", "autoaugment"}
SINGLE_OPS = sorted(set(AUGMENTS) - POLICIES)
# ops without random parameters: every chosen image gets the same change
DETERMINISTIC = {"flip", "grayscale", "invert", "solarize", "posterize", "equalize", "autocontrast"}


def ctx(n: int, seed: int = 0, epoch: int = 0) -> AugmentContext:
    return AugmentContext(torch.arange(n), n, epoch, torch.Generator().manual_seed(seed), seed)


def images(n: int = 32, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random low-contrast uint8 images (50-150): every op visibly changes them, including
    autocontrast and equalize, which leave full-range images almost alone (and equalize,
    like PIL's, leaves images of under ~512 pixels alone)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(50, 151, (n, 3, size, size), dtype=torch.uint8, generator=g)


def changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() != b.float()).flatten(1).any(1)


def test_every_op_the_issue_names_is_registered():
    assert set(SINGLE_OPS) >= {
        "flip", "rotate", "zoom", "translate", "crop", "resized_crop", "shear", "contrast",
        "brightness", "saturation", "hue", "grayscale", "solarize", "posterize", "equalize",
        "autocontrast", "sharpness", "cutout", "erasing"}


@pytest.mark.parametrize("name", sorted(AUGMENTS))
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shape_dtype_and_range_are_kept(name, dtype):
    x = images()
    x = x if dtype == torch.uint8 else x.float() / 255
    y = build_op({"name": name, "p": 1.0})(x, ctx(len(x)))
    assert y.shape == x.shape and y.dtype == x.dtype
    top = 255 if dtype == torch.uint8 else 1.0
    assert y.min() >= 0 and y.max() <= top


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_p_zero_is_the_identity(name):
    x = images()
    assert torch.equal(build_op({"name": name, "p": 0.0})(x, ctx(len(x))), x)


@pytest.mark.parametrize("name", SINGLE_OPS)
def test_p_one_changes_every_image(name):
    # float input: a contrast factor of 1.002 changes no uint8 value, but it is not identity
    x = images(64).float() / 255
    assert changed(build_op({"name": name, "p": 1.0})(x, ctx(64)), x).all()


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policies_change_most_images(name):
    # policies include the identity (and AutoAugment's steps have their own probabilities)
    x = images(256)
    assert changed(build_op(name)(x, ctx(256)), x).float().mean() > 0.6


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_same_seed_same_output_other_seed_other_output(name):
    x = images(64)
    op = build_op({"name": name, "p": 0.7})
    a, b, c = op(x, ctx(64, 0)), op(x, ctx(64, 0)), op(x, ctx(64, 1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(AUGMENTS))
def test_each_image_draws_its_own_parameters(name):
    # one image repeated: with one draw per batch every copy would come out the same
    x = images(1).expand(64, -1, -1, -1).contiguous()
    p = 0.5 if name in DETERMINISTIC else 1.0  # their only randomness is the per-image coin
    out = build_op({"name": name, "p": p})(x, ctx(64))
    distinct = {o.numpy().tobytes() for o in out}
    assert len(distinct) >= (2 if name in DETERMINISTIC else 8)


def marked(size: int = 9, row: int = 1, col: int = 2) -> torch.Tensor:
    x = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    x[0, :, row, col] = 255
    return x


def mark(x: torch.Tensor) -> list[list[int]]:
    return (x[0, 0] > 127).nonzero().tolist()


@pytest.mark.parametrize("mode,expected", [("horizontal", [[1, 6]]), ("vertical", [[7, 2]])])
def test_flip_moves_a_marked_pixel_where_it_must_go(mode, expected):
    assert mark(build_op({"name": "flip", "mode": mode, "p": 1.0})(marked(), ctx(1))) == expected


def test_flip_both_is_one_of_the_three_mirrors_evenly():
    x = marked().expand(3000, -1, -1, -1)
    out = build_op({"name": "flip", "mode": "both", "p": 1.0})(x, ctx(3000))
    where = [tuple(map(tuple, mark(o[None]))) for o in out]
    counts = {k: where.count(k) for k in set(where)}
    assert set(counts) == {((1, 6),), ((7, 2),), ((7, 6),)}
    assert all(900 < c < 1100 for c in counts.values())


def test_rotation_turns_counter_clockwise_like_torchvision():
    x = marked()  # a pixel 3 rows above the center, 2 columns left of it
    op = AF.affine(x, AF.rotation_matrix(torch.tensor([90.0])), None, "constant", 0.0,
                   "nearest")
    assert mark(op) == mark(TF.rotate(x, 90.0)) == [[6, 1]]


def test_rotation_keeps_within_frac_of_a_turn():
    # frac 0.05 = up to 18 degrees: a pixel 4 px right of the center stays near the row
    x = marked(size=17, row=8, col=12).expand(200, -1, -1, -1)
    out = build_op({"name": "rotate", "frac": 0.05, "fill": "constant",
                    "interpolation": "nearest"})(x, ctx(200))
    for o in out:
        for r, c in mark(o[None]):
            angle = np.degrees(np.arctan2(8 - r, c - 8))
            assert abs(angle) <= 18 + 8  # plus the rounding of a 4-px radius
    assert len({tuple(mark(o[None])[0]) for o in out}) >= 3


def test_translate_moves_by_whole_pixels_within_frac_and_never_zero():
    x = marked(size=21, row=10, col=10).expand(2000, -1, -1, -1)
    out = build_op({"name": "translate", "frac": 0.1, "fill": "constant"})(x, ctx(2000))
    shifts = [(r - 10, c - 10) for o in out for r, c in mark(o[None])]
    assert len(shifts) == 2000  # exactly one marked pixel each: moved, not blurred
    assert {abs(d) for s in shifts for d in s} == {0, 1, 2}  # round(0.1 * 21) = 2
    assert (0, 0) not in shifts
    assert len(set(shifts)) == 24


def test_crop_pads_with_the_fill_value():
    x = torch.full((64, 3, 8, 8), 200, dtype=torch.uint8)
    out = build_op({"name": "crop", "padding": 2})(x, ctx(64))
    assert (out == 0).any() and set(out.unique().tolist()) == {0, 200}
    gray = build_op({"name": "crop", "padding": 2, "fill_value": 0.5})(x, ctx(64))
    assert set(gray.unique().tolist()) == {128, 200}


def test_zoom_keeps_the_center_and_scales_around_it():
    x = marked(size=21, row=10, col=16).expand(300, -1, -1, -1)  # 6 px right of the center
    out = build_op({"name": "zoom", "frac": 0.3, "fill": "constant",
                    "interpolation": "nearest"})(x, ctx(300))
    cols = [c for o in out for r, c in mark(o[None]) if r == 10]
    assert cols and min(cols) >= 10 + 6 / 1.3 - 1 and max(cols) <= 10 + 6 / 0.7 + 1
    center = build_op({"name": "zoom", "frac": 0.3})(marked(21, 10, 10), ctx(1))
    assert mark(center) == [[10, 10]]


def test_resized_crop_shows_a_part_of_the_image_enlarged():
    x = torch.zeros(100, 3, 32, 32, dtype=torch.uint8)
    x[:, :, :, 16:] = 255  # left half black, right half white
    out = build_op({"name": "resized_crop", "scale": [0.1, 0.2]})(x, ctx(100))
    white = (out[:, 0] > 127).float().mean((1, 2))
    # a small box usually lies on one side: many outputs are (almost) all black or white
    assert ((white < 0.05) | (white > 0.95)).float().mean() > 0.5


def test_cutout_and_erasing_fill_boxes():
    x = torch.full((16, 3, 16, 16), 200, dtype=torch.uint8)
    cut = build_op({"name": "cutout", "frac": 0.25, "value": 0.0})(x, ctx(16))
    holes = (cut[:, 0] == 0).sum((1, 2))
    assert (holes >= 4).all() and (holes <= 16).all()  # a 4 x 4 square, maybe clipped
    erased = build_op({"name": "erasing", "p": 1.0, "value": 0.0})(x, ctx(16))
    area = (erased[:, 0] == 0).float().mean((1, 2))
    assert (area >= 0.01).all() and (area <= 0.4).all()


@pytest.mark.parametrize("name,ours,reference", [
    ("equalize", lambda x: AF.equalize(x), TF.equalize),
    ("autocontrast", lambda x: AF.autocontrast(x), TF.autocontrast),
    ("posterize", lambda x: AF.posterize(x, torch.full((len(x),), 3)),
     lambda i: TF.posterize(i, 3)),
    ("solarize", lambda x: AF.solarize(x, torch.full((len(x),), 0.5)),
     lambda i: TF.solarize(i, 127.5)),
    ("sharpness", lambda x: AF.sharpness(x, torch.full((len(x),), 1.7)),
     lambda i: TF.adjust_sharpness(i, 1.7)),
    ("contrast", lambda x: AF.contrast(x, torch.full((len(x),), 0.6)),
     lambda i: TF.adjust_contrast(i, 0.6)),
    ("saturation", lambda x: AF.saturation(x, torch.full((len(x),), 0.6)),
     lambda i: TF.adjust_saturation(i, 0.6)),
    ("hue", lambda x: AF.hue(x, torch.full((len(x),), 0.2)), lambda i: TF.adjust_hue(i, 0.2)),
    ("brightness", lambda x: AF.brightness(x, torch.full((len(x),), 1.3)),
     lambda i: TF.adjust_brightness(i, 1.3)),
])
def test_colour_functions_match_torchvision(name, ours, reference):
    x = torch.randint(30, 200, (4, 3, 16, 16), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(1))
    expected = torch.stack([reference(i) for i in x])
    assert (ours(x).int() - expected.int()).abs().max() <= 1, name  # rounding only


def test_randaugment_picks_different_ops_for_different_images(monkeypatch):
    from imgcls.augment import policies

    picked = []
    original = policies.apply_steps

    def spy(x, names, choice, magnitude, fill):
        picked.append(choice.clone())
        return original(x, names, choice, magnitude, fill)

    monkeypatch.setattr(policies, "apply_steps", spy)
    x = images(1).expand(128, -1, -1, -1).contiguous()
    out = build_op({"name": "randaugment", "num_ops": 2, "magnitude": 9})(x, ctx(128))
    assert len(picked) == 2
    for choice in picked:  # each image its own op, spread over all 14
        assert len(choice.unique()) == len(RAND_OPS)
    assert not torch.equal(picked[0], picked[1])
    assert len({o.numpy().tobytes() for o in out}) > 64


def test_policy_config_is_validated():
    with pytest.raises(ValueError, match="magnitude 31 must be below bins"):
        build_op({"name": "randaugment", "magnitude": 31})


# -- MixUp / CutMix --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixing_blends_images_and_labels_consistently(kind):
    n, classes = 64, 10
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 8, 8, generator=g)
    y = torch.arange(n) % classes
    cfg = MixConfig(**{f"{kind}_alpha": 1.0})
    mixed, target = Mixer(cfg, classes)(x, y, torch.Generator().manual_seed(0))
    assert mixed.shape == x.shape and target.shape == (n, classes)
    torch.testing.assert_close(target.sum(1), torch.ones(n))
    own = target[torch.arange(n), y]  # lam (the partner may share the class)
    assert (own > 0).all() and (own < 1).any()
    if kind == "cutmix":  # every pixel is the image's own or its partner's
        from_self = (mixed == x).all(1).float().mean((1, 2))
        same_class = target.max(1).values == 1
        torch.testing.assert_close(from_self[~same_class], own[~same_class])


def test_mixed_targets_count_accuracy_by_their_weights():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0]])
    target = torch.tensor([[0.7, 0.3, 0], [0.7, 0.3, 0]])
    assert target_hits(logits, target).item() == pytest.approx(1.0)
    assert target_hits(logits, torch.tensor([0, 0])).item() == 1


def test_mix_prob_zero_leaves_the_batch_alone():
    x, y = torch.rand(16, 3, 8, 8), torch.arange(16) % 4
    mixed, target = Mixer(MixConfig(mixup_alpha=1.0, prob=0.0), 4)(
        x, y, torch.Generator().manual_seed(0))
    assert torch.equal(mixed, x) and torch.equal(target.argmax(1), y)
    assert (target.max(1).values == 1).all()


# -- config ----------------------------------------------------------------------------------
def test_ops_are_resolved_with_every_default_written_out():
    ops = validate({"augment": {"ops": ["flip", {"name": "translate", "frac": 0.1, "p": 0.5}]}}
                   ).augment.ops
    assert ops[0] == {"name": "flip", "p": 0.5, "mode": "horizontal", "alternate": False}
    assert ops[1]["fill"] == "reflect" and ops[1]["p"] == 0.5
    assert validate({"augment": {"ops": ops}}).augment.ops == ops  # a saved config reads back


def test_foundation_shorthand_becomes_ops():
    ops = validate({"augment": {"flip": "alternate", "translate": 2}}).augment.ops
    assert [op["name"] for op in ops] == ["flip", "translate"]
    assert ops[0]["alternate"] and ops[1]["pixels"] == 2
    assert AugmentConfig(flip="none").ops == []


@pytest.mark.parametrize("entry,words", [
    ({"name": "rotaet"}, ["unknown augmentation 'rotaet'", "did you mean 'rotate'"]),
    ({"name": "rotate", "factor": 0.2}, ["rotate", "unknown key 'factor'", "frac"]),
    ({"name": "rotate", "frac": 2}, ["rotate", "frac = 2", "less than or equal to 0.5"]),
    ({"name": "translate", "frac": 0.1, "pixels": 3}, ["frac or pixels, not both"]),
    ({"name": "flip", "p": 1.5}, ["p = 1.5", "less than or equal to 1"]),
    ({"p": 0.5}, ["`name` key"]),
])
def test_bad_ops_name_the_entry_key_and_what_is_valid(entry, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"augment.ops=[{entry}]".replace("'", "")])
    text = str(err.value)
    assert "augment.ops.0" in text
    for word in words:
        assert word in text
