"""A small network with every kind of convolution layer a suite from a model must get right.

Input (2, 3, 32, 32). Its forward pass runs these convolutions, in this order:

* ``stem``: 5x5 stride 2, padding 2, no bias: 3 -> 16 channels, 32x32 -> 16x16;
* ``layer1``: three identical residual bottlenecks (16 -> 8 -> 8 -> 16 at 16x16):
  ``conv1`` 1x1, ``conv2`` 3x3 padding 1, ``conv3`` 1x1, each run three times;
* ``layer2.0``: a strided bottleneck, 16 -> 32 at 16x16 -> 8x8, the stride in its
  3x3 (``conv2``), and its shortcut ``down``, a strided 1x1;
* ``layer2.1``: a bottleneck whose 3x3 has 4 groups;
* ``layer2.2``: a bottleneck whose 3x3 has 4 groups and dilation 2 (padding 2);
  its 1x1s are the same as ``layer2.1``'s;
* ``dw``: a depthwise 3x3, ``padding="same"``, with bias;
* ``pad`` then ``reduce``: ``nn.ZeroPad2d((0, 1, 0, 1))`` (right 1, bottom 1), then a
  3x3 stride 2 with no padding of its own: 32 -> 64, on the 9x9 padded input -> 4x4;
* ``wide``: a 1x4 with ``padding="same"`` (left 1, right 2) and dilation 1;
* ``head``: 1x1, 64 -> 10, with bias.
"""

import torch
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, channels, mid, out, stride=1, groups=1, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, mid, 1, bias=False)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=dilation, dilation=dilation,
                               groups=groups, bias=False)
        self.conv3 = nn.Conv2d(mid, out, 1, bias=False)
        self.relu = nn.ReLU()
        self.down = (nn.Conv2d(channels, out, 1, stride=stride, bias=False)
                     if stride != 1 or channels != out else None)

    def forward(self, x):
        y = self.relu(self.conv1(x))
        y = self.relu(self.conv2(y))
        y = self.conv3(y)
        return self.relu(y + (x if self.down is None else self.down(x)))


class ToyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 5, stride=2, padding=2, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.layer1 = nn.Sequential(*(Bottleneck(16, 8, 16) for _ in range(3)))
        self.layer2 = nn.Sequential(Bottleneck(16, 16, 32, stride=2),
                                    Bottleneck(32, 16, 32, groups=4),
                                    Bottleneck(32, 16, 32, groups=4, dilation=2))
        self.dw = nn.Conv2d(32, 32, 3, padding="same", groups=32)
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.reduce = nn.Conv2d(32, 64, 3, stride=2, bias=False)
        self.wide = nn.Conv2d(64, 64, (1, 4), padding="same", bias=False)
        self.head = nn.Conv2d(64, 10, 1)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = self.layer2(self.layer1(x))
        x = self.reduce(self.pad(torch.relu(self.dw(x))))
        return self.head(self.wide(x))


class Unmodellable(nn.Module):
    """Convolutions convbench cannot model beside two it can (a Conv1d and a 'valid' 3x3)."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Conv1d(4, 8, 3, stride=2, padding=1, dilation=2)
        self.reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
        self.valid = nn.Conv2d(4, 4, 3, padding="valid")
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.volume = nn.Conv3d(1, 2, 3)

    def forward(self, x):
        seq = self.seq(x.flatten(2))
        img = self.up(self.valid(self.reflect(x)))
        vol = self.volume(img.unsqueeze(1))
        return seq.sum() + img.sum() + vol.sum()


def toy_net():
    return ToyNet()


def unmodellable():
    return Unmodellable()
