"""Structured pruning of a diffusers ``UNet2DModel`` with torch-pruning, and the shapes that rebuild it.

As the attribution paper (Diff-Pruning's recipe): ``MagnitudePruner`` with L1 ``MagnitudeImportance``, one
channel sparsity for every layer but the output convolution ``conv_out``, channels physically removed, so a
pruned model has fewer parameters and every step costs fewer FLOPs. torch-pruning's dependency graph keeps
coupled layers consistent (residual adds, skip concatenations, time-embedding projections). GroupNorm layers
are pruned group-wise (the same number of channels leaves every group), so channel counts stay divisible by
``norm_num_groups``; attention projections are pruned head-wise, so ``heads`` still divides them. Removing
``ratio`` of each group's channels is rounded down to whole channels by torch-pruning (``group_size -
int(group_size * (1 - ratio))``): with 2 channels per group a ratio of 0.3 removes half of them. The realised
fraction is recorded (:func:`prune_unet`).

A pruned model is saved as the usual diffusers folder (``config.json`` of the unpruned architecture,
``diffusion_pytorch_model.safetensors`` with the pruned tensors) plus ``pruned.json``: the channel counts of
every convolution, linear and GroupNorm layer. :func:`rebuild_pruned` builds the architecture from the config
and swaps in layers of those shapes, so loading never unpickles anything.
"""
from __future__ import annotations

import json
from pathlib import Path

PRUNED_JSON = "pruned.json"
FORMAT = "diffunlearn-pruned-unet/1"


def _layer_types():
    import torch

    return torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm


def layer_shapes(unet) -> dict:
    """{module name: [in, out]} channel counts of every Conv2d / Linear (and [channels] of every GroupNorm)."""
    import torch

    out = {}
    for name, m in unet.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            out[name] = [m.in_channels, m.out_channels]
        elif isinstance(m, torch.nn.Linear):
            out[name] = [m.in_features, m.out_features]
        elif isinstance(m, torch.nn.GroupNorm):
            out[name] = [m.num_channels]
    return out


def architecture_shapes(unet) -> dict:
    """The layer shapes of the unpruned architecture of ``unet`` (built from its config on the meta device)."""
    import torch

    with torch.device("meta"):
        return layer_shapes(type(unet).from_config(unet.config))


def is_pruned(unet) -> bool:
    return layer_shapes(unet) != architecture_shapes(unet)


def sync_attributes(unet) -> None:
    """Bring the channel attributes diffusers reads or asserts (down/upsamplers, ResNet blocks, attention) in
    line with the layers' shapes after pruning or rebuilding."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

    for m in unet.modules():
        if isinstance(m, (Downsample2D, Upsample2D)) and getattr(m, "conv", None) is not None:
            m.channels, m.out_channels = m.conv.in_channels, m.conv.out_channels
        elif isinstance(m, ResnetBlock2D):
            m.in_channels, m.out_channels = m.conv1.in_channels, m.conv2.out_channels
        elif isinstance(m, Attention):
            m.query_dim, m.inner_dim, m.out_dim = m.to_q.in_features, m.to_q.out_features, m.to_out[0].out_features
            m.inner_kv_dim = m.to_k.out_features


def _attention_heads(unet) -> dict:
    from diffusers.models.attention_processor import Attention

    heads = {}
    for m in unet.modules():
        if isinstance(m, Attention):
            for proj in (m.to_q, m.to_k, m.to_v):
                heads[proj] = m.heads
    return heads


def prune_unet(unet, ratio: float, example_shape) -> dict:
    """Remove ``ratio`` of the channels of every layer but ``conv_out`` (L1 magnitude, torch-pruning), in place.

    ``example_shape``: [B, C, H, W] of an input batch (torch-pruning traces one forward). Returns the record of
    the cost file: ratio asked, parameters before / after, realised fraction of channels removed."""
    import torch
    import torch_pruning as tp

    if not 0 <= ratio < 1:
        raise ValueError(f"unlearning.prune_fine_tune.pruning_ratio must be in [0, 1), got {ratio}")
    before_params, before_shapes = _n_params(unet), layer_shapes(unet)
    device = next(unet.parameters()).device
    example = {"sample": torch.zeros(tuple(example_shape), device=device),
               "timestep": torch.zeros(example_shape[0], dtype=torch.long, device=device)}
    if ratio > 0:
        was_training = unet.training
        pruner = tp.pruner.MagnitudePruner(
            unet.eval(), example_inputs=example, importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio, ignored_layers=[unet.conv_out], num_heads=_attention_heads(unet))
        pruner.step()
        sync_attributes(unet)
        unet.train(was_training)
    after_shapes = layer_shapes(unet)
    out_before = sum(s[-1] for s in before_shapes.values())
    out_after = sum(s[-1] for s in after_shapes.values())
    return {"pruning_ratio": ratio, "parameters_before": before_params, "parameters_after": _n_params(unet),
            "channels_before": out_before, "channels_after": out_after,
            "removed_channel_fraction": 1 - out_after / out_before}


def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _resized(module, shape):
    """A fresh layer like ``module`` with the channel counts ``shape`` (weights uninitialised)."""
    import torch

    kw = {"device": module.weight.device if module.weight is not None else None,
          "dtype": module.weight.dtype if module.weight is not None else None}
    if isinstance(module, torch.nn.Conv2d):
        return torch.nn.Conv2d(shape[0], shape[1], module.kernel_size, module.stride, module.padding,
                               module.dilation, module.groups, module.bias is not None, module.padding_mode, **kw)
    if isinstance(module, torch.nn.Linear):
        return torch.nn.Linear(shape[0], shape[1], module.bias is not None, **kw)
    return torch.nn.GroupNorm(module.num_groups, shape[0], module.eps, module.affine, **kw)


def resize_like(unet, shapes: dict) -> None:
    """Swap every layer whose channel counts differ from ``shapes`` for one of those counts, in place."""
    current = layer_shapes(unet)
    unknown = sorted(set(shapes) - set(current))
    if unknown:
        raise ValueError(f"pruned shapes name layers the model does not have: {unknown[:3]}")
    modules = dict(unet.named_modules())
    for name, shape in shapes.items():
        if list(shape) != current[name]:
            parent_name, _, child = name.rpartition(".")
            setattr(modules[parent_name] if parent_name else unet, child, _resized(modules[name], shape))
    sync_attributes(unet)


def write_pruned_json(unet_dir, unet, record: dict | None = None) -> None:
    """``pruned.json`` beside a saved UNet: the layer shapes (and the pruning record) that rebuild it."""
    from diffunlearn.io import write_json_atomic

    write_json_atomic(Path(unet_dir) / PRUNED_JSON, {"format": FORMAT, "layers": layer_shapes(unet), **(record or {})})


def read_pruned_json(unet_dir) -> dict | None:
    path = Path(unet_dir) / PRUNED_JSON
    if not path.exists():
        return None
    spec = json.loads(path.read_text())
    if spec.get("format") != FORMAT or not isinstance(spec.get("layers"), dict):
        raise ValueError(f"{path}: not a {FORMAT} file")
    return spec


def rebuild_pruned(unet_dir):
    """A ``UNet2DModel`` from a saved folder with ``pruned.json``: architecture from config.json, layers resized,
    weights from the safetensors file (strict: every tensor must fit)."""
    from safetensors.torch import load_file

    from diffunlearn.models import unet_class

    unet_dir = Path(unet_dir)
    spec = read_pruned_json(unet_dir)
    UNet2DModel = unet_class()
    unet = UNet2DModel.from_config(UNet2DModel.load_config(unet_dir))
    resize_like(unet, spec["layers"])
    unet.load_state_dict(load_file(unet_dir / "diffusion_pytorch_model.safetensors"))
    return unet.eval()


def match_shapes(target, source) -> None:
    """Give ``target`` the layer shapes of ``source`` (e.g. the EMA copy of a freshly pruned model)."""
    resize_like(target, layer_shapes(source))


def pruning_prepare(ratio: float, example_shape, record: dict):
    """A ``TrainRun.prepare`` for prune_fine_tune: prune the raw model, give the EMA copy its shapes, and put
    the pruning record plus the unpruned model's size and FLOPs per micro-batch into ``record``."""
    from diffunlearn.flops import train_step_flops

    def prepare(raw, ema):
        flops_before = train_step_flops(raw, example_shape)
        record.update(prune_unet(raw, ratio, [1, *example_shape[1:]]))
        match_shapes(ema, raw)
        record.update(train_step_flops_before=flops_before, train_step_flops_after=train_step_flops(raw, example_shape))

    return prepare


def size_record(unet, batch_shape) -> dict:
    """Parameters and FLOPs of one training micro-batch (forward + backward, diffunlearn.flops) of a model."""
    from diffunlearn.flops import train_step_flops

    return {"parameters": _n_params(unet), "train_step_flops": train_step_flops(unet, batch_shape),
            "pruned": is_pruned(unet)}
