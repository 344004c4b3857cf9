"""The per-example model output for KLOM (DESIGN.md section 4), the diffusion analogue of a margin.

    m(theta, x0) = -(1/K) sum_k mean_pixels (eps_k - eps_theta(sqrt(abar_t_k) x0 + sqrt(1 - abar_t_k) eps_k, t_k))^2

The K pairs (t_k, eps_k) of an example depend only on (seed, the example's index, k): they come
from Philox streams keyed by (seed, index), one stream for the timesteps and one for the noise,
so every model is scored on exactly the same noisy inputs whatever the batch, the other examples
in the call, the device or the number of pairs asked for (pair k is the same for every K > k).
"""
from __future__ import annotations

import numpy as np

# The high word of a Philox counter names the stream; the low words count blocks within it.
_TIMESTEP_STREAM = 0
_NOISE_STREAM = 1


def margin_noise(
    example_indices: np.ndarray,
    num_pairs: int,
    sample_shape: tuple[int, int, int],
    num_train_timesteps: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The (t, eps) pairs of some examples: timesteps int64 [P, K] uniform in [0, T), noise float32 [P, K, C, H, W].

    Row i depends only on (seed, example_indices[i]); pair k of a row only on k as well.
    """
    indices = _example_index_array(example_indices)
    if int(num_pairs) != num_pairs or num_pairs < 1:
        raise ValueError(f"num_pairs must be a positive integer, got {num_pairs!r}")
    if int(num_train_timesteps) != num_train_timesteps or num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed!r}")
    sample_shape = tuple(int(size) for size in sample_shape)
    timesteps = np.empty((indices.size, num_pairs), dtype=np.int64)
    noise = np.empty((indices.size, num_pairs, *sample_shape), dtype=np.float32)

    # One bit generator whose state is reset per (example, stream): about half the cost of
    # building a Generator per example (~7 us per example with its draws, on 2 slow cores).
    bit_generator = np.random.Philox(key=0)
    generator = np.random.Generator(bit_generator)
    state = bit_generator.state
    key, counter = state["state"]["key"], state["state"]["counter"]
    key[0] = seed
    for row, index in enumerate(indices):
        key[1] = index
        counter[:] = 0
        counter[3] = _TIMESTEP_STREAM
        bit_generator.state = state
        timesteps[row] = generator.integers(0, num_train_timesteps, size=num_pairs, dtype=np.int64)
        counter[3] = _NOISE_STREAM
        bit_generator.state = state
        generator.standard_normal(dtype=np.float32, out=noise[row])
    return timesteps, noise


def compute_margins(
    unet,
    x0,
    example_indices: np.ndarray,
    alphas_cumprod,
    num_pairs: int = 8,
    seed: int = 0,
    batch_size: int = 512,
    device=None,
    dtype=None,
) -> np.ndarray:
    """Margins float64 [P] of the examples ``x0`` [P, C, H, W] (model space) under ``unet``.

    ``unet(x_t, t).sample`` is called once per chunk of ``batch_size`` noisy inputs (the P x K
    (example, pair) inputs taken in order), under torch.inference_mode and in eval mode, on
    ``device`` (default: the unet's) with inputs of ``dtype`` (default: the unet's). The noise of
    a chunk is drawn when it is needed, so memory stays at a few batches.
    """
    import torch

    x0 = torch.as_tensor(x0)
    indices = _example_index_array(example_indices)
    if x0.ndim != 4:
        raise ValueError(f"x0 must be [examples, channels, height, width], got shape {tuple(x0.shape)}")
    if x0.shape[0] != indices.size:
        raise ValueError(f"x0 has {x0.shape[0]} examples but example_indices has {indices.size}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    alphas_cumprod = torch.as_tensor(alphas_cumprod)
    if alphas_cumprod.ndim != 1:
        raise ValueError(f"alphas_cumprod must be 1-D [T], got shape {tuple(alphas_cumprod.shape)}")
    parameter = next(unet.parameters(), None)
    if device is None:
        device = parameter.device if parameter is not None else torch.device("cpu")
    device = torch.device(device)
    if dtype is None:
        dtype = parameter.dtype if parameter is not None else torch.float32

    n_examples, sample_shape = indices.size, tuple(x0.shape[1:])
    n_inputs = n_examples * num_pairs
    alphas_cumprod = alphas_cumprod.to(device=device, dtype=torch.float32)
    losses = np.empty(n_inputs, dtype=np.float64)
    was_training = unet.training
    unet.eval()
    try:
        with torch.inference_mode():
            for first in range(0, n_inputs, batch_size):
                last = min(first + batch_size, n_inputs)
                first_example, end_example = first // num_pairs, (last - 1) // num_pairs + 1
                timesteps, noise = margin_noise(
                    indices[first_example:end_example], num_pairs, sample_shape, len(alphas_cumprod), seed
                )
                in_chunk = slice(first - first_example * num_pairs, last - first_example * num_pairs)
                timesteps = torch.from_numpy(timesteps.reshape(-1)[in_chunk]).to(device)
                noise = torch.from_numpy(noise.reshape(-1, *sample_shape)[in_chunk]).to(device)
                example_of_input = torch.arange(first, last) // num_pairs - first_example
                clean = x0[first_example:end_example].to(device=device, dtype=torch.float32)[example_of_input.to(device)]
                losses[first:last] = _denoising_losses(unet, clean, noise, timesteps, alphas_cumprod, dtype)
    finally:
        unet.train(was_training)
    return -losses.reshape(n_examples, num_pairs).mean(axis=1)


def _denoising_losses(unet, clean, noise, timesteps, alphas_cumprod, dtype) -> np.ndarray:
    """Per input: mean over pixels of (eps - eps_theta(x_t, t))^2, in float64."""
    import torch

    alpha_bar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise
    predicted = unet(noisy.to(dtype), timesteps).sample
    error = noise - predicted.float()
    return error.pow(2).flatten(1).mean(dim=1, dtype=torch.float64).cpu().numpy()


def _example_index_array(example_indices) -> np.ndarray:
    indices = np.asarray(example_indices)
    if indices.ndim != 1:
        raise ValueError(f"example_indices must be 1-D, got shape {indices.shape}")
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"example_indices must be integers, got dtype {indices.dtype}")
    if indices.size and indices.min() < 0:
        raise ValueError(f"example_indices must be non-negative, got {int(indices.min())}")
    return indices.astype(np.uint64)
