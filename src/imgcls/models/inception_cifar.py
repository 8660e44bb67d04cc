"""Note 004's small Inception-style net for 32x32 ("Inception10" in the course it follows):
a conv-BN-ReLU stem, then blocks of GoogLeNet-like modules whose four branches (1x1;
1x1 -> 3x3; 1x1 -> 5x5; 3x3 max-pool -> 1x1) each give `width` channels and are
concatenated; each block halves the map in its first module and doubles the width after;
global average pooling and one dense layer."""

from __future__ import annotations

import torch
from torch import nn

from imgcls.models.classic import conv_bn_relu


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    # Keras' padding="same": stride-2 1x1 convs give ceil(n / 2), as here with padding 0
    return nn.Sequential(*conv_bn_relu(cin, cout, kernel, kernel // 2, stride))


class InceptionModule(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.branch1 = _conv_bn_relu(cin, width, 1, stride)
        self.branch3 = nn.Sequential(_conv_bn_relu(cin, width, 1, stride),
                                     _conv_bn_relu(width, width, 3))
        self.branch5 = nn.Sequential(_conv_bn_relu(cin, width, 1, stride),
                                     _conv_bn_relu(width, width, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, padding=1),
                                         _conv_bn_relu(cin, width, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x),
                          self.branch_pool(x)], 1)


def inception_cifar(num_classes: int = 10, image_size: int = 32, blocks: int = 2,
                    width: int = 16) -> nn.Sequential:
    """Note 004's Inception-style net: stem + `blocks` x 2 GoogLeNet-like modules."""
    layers: list[nn.Module] = [_conv_bn_relu(3, width, 3)]
    cin = width
    for _ in range(blocks):
        layers += [InceptionModule(cin, width, 2), InceptionModule(4 * width, width, 1)]
        cin = 4 * width
        width *= 2
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(cin, num_classes))
