"""The Keras networks of note 004 (a TensorFlow 2 course's CIFAR-10 models), rebuilt layer
for layer so that their trainable parameter counts match the published `model.summary()`
exactly at 32x32x3 with 10 classes: Baseline 198,494; LeNet-5 62,006; AlexNet8 9,638,474;
VGG16 with BatchNorm 15,253,578.

Keras details that the counts depend on: convolutions keep their bias even before
BatchNorm; BatchNorm's scale and shift are trainable (its running statistics are buffers
here, "non-trainable params" in Keras). The dense heads are sized by the flattened feature
map, so they grow with the input; `global_pool=True` averages the map instead.
"""

from __future__ import annotations

from torch import nn

from imgcls.models.sizing import flatten_classifier

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid,
                                           "tanh": nn.Tanh, "gelu": nn.GELU}


def _activation(name: str, model: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"model.args.activation for {model!r}: {name!r} is not one of "
                         f"{', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def conv_bn_relu(cin: int, cout: int, kernel: int, padding: str | int,
                 stride: int = 1) -> list[nn.Module]:
    """Keras' Conv2D -> BatchNormalization -> ReLU: the conv keeps its bias."""
    return [nn.Conv2d(cin, cout, kernel, stride, padding=padding), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def baseline_cnn(num_classes: int = 10, image_size: int = 32, dropout: float = 0.2,
                 global_pool: bool = False) -> nn.Sequential:
    """Note 004's Baseline: conv 6@5x5 -> BN -> ReLU -> max-pool -> dropout -> dense 128."""
    features = nn.Sequential(*conv_bn_relu(3, 6, 5, "same"), nn.MaxPool2d(2))
    return flatten_classifier(features, image_size, "baseline_cnn", [128], num_classes,
                              global_pool, dropout=dropout, feature_dropout=dropout)


def lenet5(num_classes: int = 10, image_size: int = 32, activation: str = "sigmoid",
           global_pool: bool = False) -> nn.Sequential:
    """LeNet-5 (LeCun et al. 1998) as note 004 builds it: two valid 5x5 convs with max-pools,
    dense 120 and 84, sigmoid activations as in the course code it follows."""
    act = _activation(activation, "lenet5")
    features = nn.Sequential(nn.Conv2d(3, 6, 5), act(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 16, 5), act(), nn.MaxPool2d(2))
    return flatten_classifier(features, image_size, "lenet5", [120, 84], num_classes,
                              global_pool, activation=act)


def alexnet8(num_classes: int = 10, image_size: int = 32, dropout: float = 0.5,
             global_pool: bool = False) -> nn.Sequential:
    """AlexNet shrunk to 32 px (5 convs, 3 dense): 3x3 kernels, overlapping 3/2 max-pools,
    BatchNorm in place of LRN, two dense 2048 layers with dropout."""
    features = nn.Sequential(
        *conv_bn_relu(3, 96, 3, 0), nn.MaxPool2d(3, 2),
        *conv_bn_relu(96, 256, 3, 0), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding="same"), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding="same"), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(3, 2))
    return flatten_classifier(features, image_size, "alexnet8", [2048, 2048], num_classes,
                              global_pool, dropout=dropout)


def vgg16_bn(num_classes: int = 10, image_size: int = 32, dropout: float = 0.2,
             global_pool: bool = False) -> nn.Sequential:
    """VGG16 (Simonyan & Zisserman 2014) with BatchNorm after every conv, dropout after every
    stage and a 512-512 dense head, as note 004 trains it on CIFAR-10."""
    layers: list[nn.Module] = []
    cin = 3
    for width, convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(convs):
            layers += conv_bn_relu(cin, width, 3, "same")
            cin = width
        layers += [nn.MaxPool2d(2), nn.Dropout(dropout)]
    return flatten_classifier(nn.Sequential(*layers), image_size, "vgg16_bn", [512, 512],
                              num_classes, global_pool, dropout=dropout)
