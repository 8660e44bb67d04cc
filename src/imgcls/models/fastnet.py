"""The fast CIFAR network: the techniques of the airbench speed records (arXiv 2404.00498),
written for imgcls.

- a frozen 2x2 "whitening" conv initialized from the eigenvectors of the training patches'
  covariance (plus their negatives), so the first layer decorrelates pixels from step one;
- three groups conv3x3 -> maxpool -> BN -> GELU -> conv3x3 -> BN -> GELU, plus (for the 96%
  recipe) a third conv whose output is added back to the group's first activation;
- conv filters initialized as identity (Dirac) kernels, so the untrained net passes its
  input through;
- BatchNorm with frozen scale, tiny eps and fast-moving statistics;
- a bias-free linear head scaled down by the width.

The 2025 record's changes to the network are options (`model.args`), off by default until
measured: `activation: silu`, `norm_momentum` and `whiten_images` (its whitening from
1,024 images instead of 5,000).
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "silu": nn.SiLU}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"model.args.activation for fastnet: one of {sorted(ACTIVATIONS)}, "
                         f"got {name!r}")
    return ACTIVATIONS[name]()


class FastBatchNorm(nn.BatchNorm2d):
    """`momentum` in PyTorch's sense: the weight of the new batch's statistics (0.4 is
    Keras's and airbench's 0.6)."""

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)  # only the shift is learned


class IdentityConv(nn.Conv2d):
    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, kernel_size=3, padding="same", bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[: min(cin, cout)])


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, depth: int = 2, activation: str = "gelu",
                 norm_momentum: float = 0.4):
        super().__init__()
        if depth not in (2, 3):
            raise ValueError(f"model.args.depth for fastnet: 2 or 3 convs per group, got {depth}")
        self.conv1 = IdentityConv(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FastBatchNorm(cout, norm_momentum)
        self.conv2 = IdentityConv(cout, cout)
        self.norm2 = FastBatchNorm(cout, norm_momentum)
        self.conv3 = IdentityConv(cout, cout) if depth == 3 else None
        self.norm3 = FastBatchNorm(cout, norm_momentum) if depth == 3 else None
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        y = self.act(self.norm2(self.conv2(x)))
        if self.conv3 is not None:
            y = self.act(self.norm3(self.conv3(y)) + x)
        return y


class ScaledLinear(nn.Linear):
    """A bias-free linear layer whose output is scaled down (by the width): the whole head
    in one module, so that transfer learning can replace it and cache its inputs."""

    def __init__(self, cin: int, cout: int, scale: float):
        super().__init__(cin, cout, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale


class FastNet(nn.Module):
    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (64, 256, 256),
                 depth: int = 2, whiten_kernel: int = 2, whiten_bias_epochs: float = 3.0,
                 in_chans: int = 3, activation: str = "gelu", norm_momentum: float = 0.4,
                 whiten_images: int = 5000):
        super().__init__()
        if not 0.0 < norm_momentum <= 1.0:
            raise ValueError("model.args.norm_momentum for fastnet: above 0, at most 1 (the "
                             f"new batch's weight in the running statistics), got {norm_momentum}")
        if whiten_images < 1:
            raise ValueError(f"model.args.whiten_images for fastnet: at least 1, got "
                             f"{whiten_images}")
        whiten_width = 2 * in_chans * whiten_kernel**2
        self.whiten = nn.Conv2d(in_chans, whiten_width, whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.whiten_bias_epochs = whiten_bias_epochs
        self.whiten_images = whiten_images  # the first ones, for `init_from_data`
        group = {"depth": depth, "activation": activation, "norm_momentum": norm_momentum}
        self.groups = nn.Sequential(
            nn.GELU(),
            ConvGroup(whiten_width, widths[0], **group),
            ConvGroup(widths[0], widths[1], **group),
            ConvGroup(widths[1], widths[2], **group),
            nn.AdaptiveMaxPool2d(1),  # = MaxPool2d(3) at 32 px; any input size works
            nn.Flatten(),
        )
        self.head = ScaledLinear(widths[2], num_classes, scale=1.0 / widths[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.groups(self.whiten(x)))

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4,
                       rank_tolerance: float = 1e-6) -> None:
        """Whitening weights from the patch covariance of (normalized) training images.

        Each filter is an eigenvector scaled by 1/sqrt(eigenvalue). Directions without
        variance (eigenvalue below `rank_tolerance` of the largest: identical or constant
        channels, e.g. grayscale stored as RGB) get no filter of their own: scaled up, their
        rounding noise (or, with a zero filter, a constant) would reach BatchNorm, which
        makes any variance unit variance, and the network would be dominated by noise.
        Their places repeat the filters of the directions that have variance."""
        k = self.whiten.kernel_size[0]
        c = images.shape[1]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        order = eigenvalues.argsort(descending=True)
        eigenvalues, eigenvectors = eigenvalues[order], eigenvectors.T[order]
        filters = eigenvectors / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]
        rank = max(1, int((eigenvalues > rank_tolerance * eigenvalues[0]).sum()))
        filters = filters[torch.arange(len(filters)) % rank]  # identity at full rank
        filters = filters.reshape(-1, c, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))

    def lr_horizons(self) -> dict[str, float]:
        """Parameters whose learning rate runs its schedule over fewer epochs than the run:
        the whitening bias is tuned only early, then frozen."""
        return {"whiten.bias": self.whiten_bias_epochs}


def fastnet94(num_classes: int = 10, image_size: int = 32, in_chans: int = 3,
              **kwargs) -> FastNet:
    """The airbench94 network: widths 64/256/256, two convs per group."""
    return FastNet(num_classes, widths=(64, 256, 256), in_chans=in_chans, **kwargs)


def fastnet95(num_classes: int = 10, image_size: int = 32, in_chans: int = 3,
              **kwargs) -> FastNet:
    """The airbench95 network: widths 128/384/384, two convs per group."""
    return FastNet(num_classes, widths=(128, 384, 384), in_chans=in_chans, **kwargs)


def fastnet96(num_classes: int = 10, image_size: int = 32, in_chans: int = 3,
              **kwargs) -> FastNet:
    """The airbench96 network: widths 128/384/512, three convs per group with a residual."""
    return FastNet(num_classes, widths=(128, 384, 512), depth=3, in_chans=in_chans, **kwargs)
