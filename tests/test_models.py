"""The model zoo: published sizes, shapes at several input sizes, a training step per
family, timm heads and stems, and the profile tables behind `imgcls models`."""

import pytest
import torch
from typer.testing import CliRunner

from conftest import LEARN_SEED, at_most
from imgcls.cli import app
from imgcls.config import ConfigError
from imgcls.configure import load_config
from imgcls.models import MODELS, create_model
from imgcls.models.profile import count_parameters, forward_gflops, layer_summary, statistics_count

PUBLISHED = {  # trainable parameters, 10 classes, 32x32x3 (source notes 001 and 004)
    "baseline_cnn": 198_494, "lenet5": 62_006, "alexnet8": 9_638_474,
    "vgg16_bn": 15_253_578, "resnet18_cifar": 11_173_962, "vgg6": 1_186_378,
}
KNOWN = {  # the usual counts of the reference implementations
    "resnet34_cifar": 21_282_122, "wrn16_8": 10_961_370, "wrn28_10": 36_479_194,
    "densenet121_cifar": 6_956_298,
}


def n_trainable(model: torch.nn.Module) -> int:
    return count_parameters(model)[0]


@pytest.mark.parametrize("name,count", [*PUBLISHED.items(), *KNOWN.items()])
def test_models_have_the_published_size(name, count):
    assert n_trainable(create_model(name, 10)) == count


def test_keras_totals_count_batchnorm_statistics_too():
    """Note 004's summaries list BN moving statistics as non-trainable params."""
    for name, keras_total in (("baseline_cnn", 198_506), ("alexnet8", 9_639_178),
                              ("vgg16_bn", 15_262_026), ("resnet18_cifar", 11_183_562)):
        model = create_model(name, 10)
        assert n_trainable(model) + statistics_count(model) == keras_total


def test_every_registry_model_trains_forward_and_backward_at_batch_8():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 7
    for name in MODELS.names():
        model = create_model(name, 7, 32)
        logits = model(x)
        assert logits.shape == (8, 7), name
        torch.nn.functional.cross_entropy(logits, y).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name


@pytest.mark.parametrize("size", [32, 64])
def test_output_shapes_at_32_and_64_px(size):
    for name in MODELS.names():
        model = create_model(name, 5, size).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 3, size, size)).shape == (2, 5), name


@pytest.mark.parametrize("name", ["baseline_cnn", "lenet5", "vgg6", "resnet18_cifar",
                                  "preact_resnet18", "densenet121_cifar", "inception_cifar",
                                  "fastnet94", "flowers_cnn", "timm:resnet18"])
def test_one_step_reduces_the_loss_on_a_fixed_batch(name):
    """One family each: classic Keras nets, VGG, ResNet, pre-activation/wide ResNet,
    DenseNet, Inception, the fast net, note 002's CNN, timm."""
    torch.manual_seed(LEARN_SEED)
    model = create_model(name, 4, 32)
    x = torch.randn(16, 3, 32, 32)
    y = torch.arange(16) % 4
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.05)

    def loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks before and after the step
        return torch.nn.functional.cross_entropy(model(x), y)

    before = loss()
    before.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)  # a small step for every family
    optimizer.step()
    with torch.no_grad():
        at_most(loss().item() / before.item(), 1.0, "loss after / before the step")


def test_input_sizes_that_do_not_fit_are_named():
    with pytest.raises(ValueError, match="alexnet8 needs data.image_size >= 21, got 16"):
        create_model("alexnet8", 10, 16)
    with pytest.raises(ValueError, match="vgg16_bn needs data.image_size >= 32, got 31"):
        create_model("vgg16_bn", 10, 31)
    with pytest.raises(ValueError, match="flowers_cnn needs data.image_size >= 22, got 16"):
        create_model("flowers_cnn", 5, 16)


def test_flatten_heads_grow_with_the_input_unless_globally_pooled():
    assert n_trainable(create_model("alexnet8", 10, 64)) > 2 * PUBLISHED["alexnet8"]
    pooled = [n_trainable(create_model("alexnet8", 10, s, global_pool=True)) for s in (32, 224)]
    assert pooled[0] == pooled[1]
    big = create_model("vgg16_bn", 10, 224, global_pool=True).eval()
    with torch.no_grad():
        assert big(torch.randn(1, 3, 224, 224)).shape == (1, 10)


def test_bad_model_args_are_named():
    with pytest.raises(ValueError, match="model.args for 'flowers_cnn'.*widht"):
        create_model("flowers_cnn", 5, 64, widht=3)
    with pytest.raises(ValueError, match="model.args.activation for 'lenet5': 'relu6'"):
        create_model("lenet5", 10, activation="relu6")
    with pytest.raises(ValueError, match="depth must be 6n \\+ 4"):
        from imgcls.models.resnet_cifar import wide_resnet
        wide_resnet(20, 2)


def test_unknown_model_names_list_the_closest_matches():
    with pytest.raises(ValueError, match="unknown model 'resnet18' \\(did you mean "
                                         "'resnet18_cifar', 'preact_resnet18'.*\\) "
                                         "\\(timm:resnet18 is timm's\\)"):
        create_model("resnet18", 10)
    with pytest.raises(ConfigError, match="model.name.*did you mean 'wrn28_10'"):
        load_config(None, ["model.name=wrn28_1O"])
    with pytest.raises(ValueError, match="unknown timm model 'resnet181'.*timm:resnet18"):
        create_model("timm:resnet181", 10)


def test_timm_models_load_with_a_changed_head():
    model = create_model("timm:resnet18", 7, 32).eval()
    assert model.num_classes == 7 and model.get_classifier().out_features == 7
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    gray = create_model("timm:resnet18", 3, 32, in_chans=1).eval()
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_small_input_stems_keep_a_useful_feature_map_at_32_px():
    x = torch.randn(1, 3, 32, 32)
    imagenet = create_model("timm:resnet18", 10, 32).eval()
    small = create_model("timm:resnet18", 10, 32, small_input=True).eval()
    with torch.no_grad():
        assert imagenet.forward_features(x).shape[-1] == 1  # /32: nothing left to pool
        assert small.forward_features(x).shape[-1] == 4  # /8, like resnet18_cifar
    assert n_trainable(small) == n_trainable(imagenet)  # same weights: pretrained ones load
    assert forward_gflops(small, 32) > 10 * forward_gflops(imagenet, 32)
    deep = create_model("timm:resnet18d", 10, 32, small_input=True).eval()
    with torch.no_grad():
        assert deep.forward_features(x).shape[-1] == 4
    with pytest.raises(ValueError, match="patchify stem \\(patch_embed.proj: kernel 16"):
        create_model("timm:vit_tiny_patch16_224", 10, 32, small_input=True)
    with pytest.raises(ConfigError, match="small_input applies to timm:<name> models"):
        load_config(None, ["model.name=vgg6", "model.small_input=true"])


def test_layer_summary_matches_the_keras_table_of_note_004():
    model = create_model("baseline_cnn", 10)
    rows = layer_summary(model, 32)
    assert [(r.kind, r.params) for r in rows if r.params] == [
        ("Conv2d", 456), ("BatchNorm2d", 12), ("Linear", 196_736), ("Linear", 1_290)]
    assert rows[0].output_shape == "6 x 32 x 32" and rows[-1].output_shape == "10"
    top = layer_summary(create_model("resnet18_cifar", 10), 32, depth=1)
    assert [r.name for r in top] == ["features", "fc"]
    assert sum(r.params for r in top) == PUBLISHED["resnet18_cifar"]


def test_fastnet_widths_follow_the_94_95_96_recipes():
    convs = {n: [m.out_channels for m in create_model(n, 10).modules()
                 if isinstance(m, torch.nn.Conv2d)][1:] for n in ("fastnet94", "fastnet95",
                                                                   "fastnet96")}
    assert convs["fastnet94"] == [64, 64, 256, 256, 256, 256]
    assert convs["fastnet95"] == [128, 128, 384, 384, 384, 384]
    assert convs["fastnet96"] == [128] * 3 + [384] * 3 + [512] * 3


def test_fastnet_starts_as_whitening_plus_identity():
    torch.manual_seed(0)
    net = create_model("fastnet94", 10)
    images = torch.randn(256, 3, 32, 32) @ torch.eye(32) * 0.5  # any data
    images = images + torch.roll(images, 1, -1)  # correlated neighbouring pixels
    net.init_from_data(images)
    out = torch.nn.functional.conv2d(images, net.whiten.weight[:12])  # the first half
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = flat.T @ flat / len(flat)  # second moments of the whitened patch coordinates
    torch.testing.assert_close(torch.diag(cov), torch.ones(12), atol=0.1, rtol=0.1)
    off = cov - torch.diag(torch.diag(cov))
    assert off.abs().max() < 0.1  # decorrelated
    conv = net.groups[2].conv1  # identity (Dirac) init on the first in-channels
    assert conv.weight[0, 0, 1, 1] == 1 and conv.weight[0, 0].sum() == 1


def test_fastnet_options_of_the_2025_record():
    net = create_model("fastnet94", 10, activation="silu", norm_momentum=0.44,
                       whiten_images=1024)
    group = net.groups[1]
    assert isinstance(group.act, torch.nn.SiLU) and group.norm1.momentum == 0.44
    assert isinstance(net.groups[0], torch.nn.GELU)  # after the whitening, as published
    assert net.whiten_images == 1024
    for bad, match in (({"activation": "relu6"}, "'gelu', 'silu'"),
                       ({"norm_momentum": 0.0}, "norm_momentum"),
                       ({"whiten_images": 0}, "whiten_images")):
        with pytest.raises(ValueError, match=match):
            create_model("fastnet94", 10, **bad)


def test_models_command_lists_sizes_flops_and_speed():
    runner = CliRunner()
    result = runner.invoke(app, ["models", "--markdown"])
    assert result.exit_code == 0, result.output
    for name, count in PUBLISHED.items():
        assert f"| {name} | imgcls | {count:,} |" in result.output
    result = runner.invoke(app, ["models", "lenet*", "--bench", "--batch-size", "8",
                                 "--markdown"])
    assert result.exit_code == 0, result.output
    speed = float(result.output.splitlines()[2].split("|")[5])
    assert speed > 0
    result = runner.invoke(app, ["models", "baseline_cnn", "--summary"])
    assert result.exit_code == 0 and "198,506" in result.output  # Keras' total, explained
    result = runner.invoke(app, ["models", "resnet*", "--summary"])
    assert result.exit_code == 2 and "--summary needs one model" in result.output
