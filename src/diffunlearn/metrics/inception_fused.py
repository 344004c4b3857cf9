"""Inference-only rewrite of the FID-Inception blocks: the same function with fewer, larger kernels.

* Every conv + eval BatchNorm pair is folded into one conv with bias.
* In each mixed block, the 1x1 convs that read the block input are concatenated into one conv.
  The average-pool branch's ``relu(conv1x1(avgpool(x)))`` is computed as
  ``relu(avgpool(conv1x1(x)))``: both maps are linear and the pool (``count_include_pad=False``)
  averages with weights summing to 1, so the bias passes through unchanged, and the pool then
  runs on 32-192 channels instead of 192-1280.

Results equal the original network up to float rounding (tested against pytorch-fid).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Conv followed by eval-mode BatchNorm as one conv with bias (computed in float64)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True)
    bias = bn.bias.double() - bn.running_mean.double() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.double() * scale
    with torch.no_grad():
        fused.weight.copy_((conv.weight.double() * scale.reshape(-1, 1, 1, 1)).float())
        fused.bias.copy_(bias.float())
    return fused


class ConvReLU(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return F.relu(self.conv(x), inplace=True)


def concat_convs(convs: list[nn.Conv2d]) -> nn.Conv2d:
    """1x1 convs on the same input as one conv whose output channels are theirs, in order."""
    out = nn.Conv2d(convs[0].in_channels, sum(c.out_channels for c in convs), 1, bias=True)
    with torch.no_grad():
        out.weight.copy_(torch.cat([c.weight for c in convs]))
        out.bias.copy_(torch.cat([c.bias for c in convs]))
    return out


def _avg_pool(x):
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _Head(nn.Module):
    """The merged 1x1 convs of a block; ``forward`` returns the per-branch outputs, ReLU applied.

    With ``avg_pool_last`` the last output is the pool branch: avg-pooled before its ReLU.
    """

    def __init__(self, branches: list[ConvReLU], avg_pool_last: bool):
        super().__init__()
        self.conv = concat_convs([b.conv for b in branches])
        self.sizes = [b.conv.out_channels for b in branches]
        self.avg_pool_last = avg_pool_last

    def forward(self, x):
        parts = list(self.conv(x).split(self.sizes, dim=1))
        if self.avg_pool_last:
            parts[-1] = _avg_pool(parts[-1])
        return [F.relu(p) for p in parts]


class FusedA(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.head = _Head([m.branch1x1, m.branch5x5_1, m.branch3x3dbl_1, m.branch_pool], avg_pool_last=True)
        self.branch5x5_2, self.branch3x3dbl_2, self.branch3x3dbl_3 = m.branch5x5_2, m.branch3x3dbl_2, m.branch3x3dbl_3

    def forward(self, x):
        b1, b5, b3, bp = self.head(x)
        return torch.cat([b1, self.branch5x5_2(b5), self.branch3x3dbl_3(self.branch3x3dbl_2(b3)), bp], 1)


class FusedC(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.head = _Head([m.branch1x1, m.branch7x7_1, m.branch7x7dbl_1, m.branch_pool], avg_pool_last=True)
        self.b7 = nn.Sequential(m.branch7x7_2, m.branch7x7_3)
        self.b7dbl = nn.Sequential(m.branch7x7dbl_2, m.branch7x7dbl_3, m.branch7x7dbl_4, m.branch7x7dbl_5)

    def forward(self, x):
        b1, b7, b7dbl, bp = self.head(x)
        return torch.cat([b1, self.b7(b7), self.b7dbl(b7dbl), bp], 1)


class FusedD(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.head = _Head([m.branch3x3_1, m.branch7x7x3_1], avg_pool_last=False)
        self.b3 = m.branch3x3_2
        self.b7 = nn.Sequential(m.branch7x7x3_2, m.branch7x7x3_3, m.branch7x7x3_4)

    def forward(self, x):
        b3, b7 = self.head(x)
        return torch.cat([self.b3(b3), self.b7(b7), F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FusedE(nn.Module):
    """FID InceptionE: the first (Mixed_7b) pools by average, the second (Mixed_7c) by max."""

    def __init__(self, m, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        heads = [m.branch1x1, m.branch3x3_1, m.branch3x3dbl_1] + ([] if max_pool else [m.branch_pool])
        self.head = _Head(heads, avg_pool_last=not max_pool)
        self.pool_conv = m.branch_pool if max_pool else None
        self.b3a, self.b3b = m.branch3x3_2a, m.branch3x3_2b
        self.dbl2, self.dbl3a, self.dbl3b = m.branch3x3dbl_2, m.branch3x3dbl_3a, m.branch3x3dbl_3b

    def forward(self, x):
        parts = self.head(x)
        b1, b3, bd = parts[:3]
        bp = self.pool_conv(F.max_pool2d(x, kernel_size=3, stride=1, padding=1)) if self.max_pool else parts[3]
        bd = self.dbl2(bd)
        return torch.cat([b1, self.b3a(b3), self.b3b(b3), self.dbl3a(bd), self.dbl3b(bd), bp], 1)


def fold_all_bn(module: nn.Module) -> None:
    """Replace every torchvision ``BasicConv2d`` (conv, BN, ReLU) by a folded conv + ReLU, in place."""
    from torchvision.models.inception import BasicConv2d

    for name, child in module.named_children():
        if isinstance(child, BasicConv2d):
            setattr(module, name, ConvReLU(fold_bn(child.conv, child.bn)))
        else:
            fold_all_bn(child)


def fuse_inception(net: nn.Module) -> nn.Module:
    """pytorch-fid's FID-Inception (eval mode) with folded BN and merged mixed-block heads, in place."""
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2
    from torchvision.models.inception import InceptionD

    fold_all_bn(net)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                 "Mixed_7a", "Mixed_7b", "Mixed_7c"):
        m = getattr(net, name)
        if isinstance(m, FIDInceptionA):
            setattr(net, name, FusedA(m))
        elif isinstance(m, FIDInceptionC):
            setattr(net, name, FusedC(m))
        elif isinstance(m, InceptionD):
            setattr(net, name, FusedD(m))
        elif isinstance(m, (FIDInceptionE_1, FIDInceptionE_2)):
            setattr(net, name, FusedE(m, max_pool=isinstance(m, FIDInceptionE_2)))
        else:
            raise TypeError(f"unexpected block {name}: {type(m).__name__}")
    return net
