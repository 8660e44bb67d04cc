import pytest
import torch

from imgcls.models import create_model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,count", [("resnet18_cifar", 11_173_962), ("vgg6", 1_186_378)])
def test_models_have_the_published_size(name, count):
    assert n_params(create_model(name, 10)) == count


@pytest.mark.parametrize("name,size", [("fastnet94", 32), ("fastnet94", 64),
                                       ("resnet18_cifar", 32), ("resnet18_cifar", 64),
                                       ("flowers_cnn", 32), ("flowers_cnn", 128),
                                       ("vgg6", 32), ("vgg6", 64)])
def test_models_take_num_classes_and_sizes(name, size):
    model = create_model(name, 7, size).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_flowers_cnn_rejects_tiny_inputs():
    with pytest.raises(ValueError, match="3 blocks needs data.image_size >= 22, got 16"):
        create_model("flowers_cnn", 5, 16)


def test_bad_model_args_are_named():
    with pytest.raises(ValueError, match="model.args for 'flowers_cnn'.*widht"):
        create_model("flowers_cnn", 5, 64, widht=3)


def test_timm_passthrough_adapts_the_head():
    model = create_model("timm:resnet18", 7, 32).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


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
    conv = net.groups[2][0]  # identity (Dirac) init on the first in-channels
    assert conv.weight[0, 0, 1, 1] == 1 and conv.weight[0, 0].sum() == 1
