"""Unlearning methods as training objectives, and structured magnitude pruning of a UNet.

Methods (docs/design.md): do_nothing (the original), ga (gradient ascent on the forget set), gd (fine-tuning on
the retain set), ascent_descent (alternating), prune_fine_tune (prune the original, fine-tune on all data;
once per seed), sparsified (gd on the retain set from the pruned-and-fine-tuned model, pruned channels kept
at zero), retrain (the oracle: training from scratch on the retain set).

Pruning is structured: within every ResNet block, whole hidden channels (conv1 filters) with the smallest
L1 norm are zeroed together with everything that feeds or reads them (bias, time-embedding rows, norm
scale/shift, conv2 input columns), and kept at zero while fine-tuning. The tensors keep their shapes, so a
pruned model is still a plain ``UNet2DModel`` checkpoint that diffusers loads.
"""
from __future__ import annotations

# The method names, and which of them fine-tune in a job of their own: diffunlearn.naming (METHODS,
# FINE_TUNING_METHODS); the objective and the data each one reads: below.


def objective(method: str, hp: dict):
    """The (source, sign) pairs of each step: sources are 'forget', 'retain' or 'train'."""
    if method == "ga":
        return lambda step: [("forget", -1.0)]
    if method in ("gd", "sparsified"):
        return lambda step: [("retain", 1.0)]
    if method == "ascent_descent":
        a, d = hp["ascent_steps"], hp["descent_steps"]
        return lambda step: [("forget", -1.0)] if step % (a + d) < a else [("retain", 1.0)]
    if method in ("prune_fine_tune", "fine_tune_all"):  # fine_tune_all: gd's fine-tuning on all data, a control
        return lambda step: [("train", 1.0)]
    raise ValueError(f"method {method!r} has no fine-tuning objective")


def sources_of(method: str) -> tuple[str, ...]:
    """The data a method's objective reads."""
    return {"ga": ("forget",), "gd": ("retain",), "sparsified": ("retain",), "ascent_descent": ("forget", "retain"),
            "prune_fine_tune": ("train",), "fine_tune_all": ("train",)}[method]


def _resnet_blocks(unet):
    from diffusers.models.resnet import ResnetBlock2D

    return [m for m in unet.modules() if isinstance(m, ResnetBlock2D)]


def _channel_params(block):
    """(parameter, dim) pairs indexed by a ResNet block's hidden channel."""
    pairs = [(block.conv1.weight, 0), (block.conv2.weight, 1)]
    if block.conv1.bias is not None:
        pairs.append((block.conv1.bias, 0))
    if getattr(block, "time_emb_proj", None) is not None:
        pairs += [(block.time_emb_proj.weight, 0), (block.time_emb_proj.bias, 0)]
    if block.norm2.weight is not None:
        pairs += [(block.norm2.weight, 0), (block.norm2.bias, 0)]
    return pairs


def structured_prune_(unet, ratio: float) -> dict:
    """Zero the ``ratio`` smallest-L1 hidden channels of every ResNet block (rounded to whole norm groups)."""
    import torch

    if not 0 <= ratio < 1:
        raise ValueError(f"pruning_ratio must be in [0, 1), got {ratio}")
    pruned = total = 0
    with torch.no_grad():
        for block in _resnet_blocks(unet):
            channels = block.conv1.out_channels
            groups = block.norm2.num_groups
            per_group = channels // groups
            keep = max(per_group, int(round((1 - ratio) * channels / per_group)) * per_group)
            # keep a multiple of the group width so the group statistics stay well defined
            scores = block.conv1.weight.abs().flatten(1).sum(1)
            order = torch.argsort(scores, descending=True)
            mask = torch.zeros(channels, dtype=torch.bool)
            mask[order[:keep]] = True
            for param, dim in _channel_params(block):
                shape = [1] * param.ndim
                shape[dim] = channels
                param.mul_(mask.view(shape).to(param.dtype))
            pruned += channels - keep
            total += channels
    return {"pruning_ratio": ratio, "pruned_channels": pruned, "total_channels": total}


def channel_masks(unet) -> list:
    """Per ResNet block, which hidden channels are alive (a pruned channel has an all-zero conv1 filter)."""
    return [block.conv1.weight.detach().flatten(1).abs().sum(1) > 0 for block in _resnet_blocks(unet)]


def keep_pruned_at_zero(unet):
    """A post-step hook that re-zeroes pruned channels in the raw and EMA weights after each update."""
    masks = channel_masks(unet)

    def post_step(raw, ema):
        for model in (raw, ema):
            for block, mask in zip(_resnet_blocks(model), masks):
                for param, dim in _channel_params(block):
                    shape = [1] * param.ndim
                    shape[dim] = len(mask)
                    param.mul_(mask.to(param.device, param.dtype).view(shape))

    return post_step


def nonzero_fraction(unet) -> float:
    n = z = 0
    for p in unet.parameters():
        n += p.numel()
        z += int((p != 0).sum())
    return z / n
