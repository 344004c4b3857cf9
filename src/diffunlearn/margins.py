"""The per-example model output for KLOM (docs/design.md, Margin), the diffusion analogue of a margin.

    m(theta, x0) = -(1/K) sum_k mean_pixels (eps_k - eps_theta(sqrt(abar_t_k) x0 + sqrt(1 - abar_t_k) eps_k, t_k))^2

The K pairs (t_k, eps_k) of an example depend only on (seed, the example's index, k): they come
from Philox streams keyed by (seed, index), one stream for the timesteps and one for the noise,
so every model is scored on exactly the same noisy inputs whatever the batch, the other examples
in the call, the device or the number of pairs asked for (pair k is the same for every K > k).
"""
from __future__ import annotations

import os

import numpy as np

# The high word of a Philox counter names the stream; the low words count blocks within it.
_TIMESTEP_STREAM = 0
_NOISE_STREAM = 1

# On the CPU, noisy inputs per forward are capped at this many pixels (rows x H x W): measured on the
# 2-core development VM, 8x8 inputs run fastest per input at 256-1024 rows and 32x32 ones are flat from
# 4 to 64 rows and slower beyond (0.7x at 512 rows), as activations outgrow the caches.
CPU_FORWARD_PIXELS = 32768


def margin_noise(
    example_indices: np.ndarray,
    num_pairs: int,
    sample_shape: tuple[int, int, int],
    num_train_timesteps: int,
    seed: int,
    timesteps: str | list | tuple = "uniform",
) -> tuple[np.ndarray, np.ndarray]:
    """The (t, eps) pairs of some examples: timesteps int64 [P, K], noise float32 [P, K, C, H, W].

    ``timesteps``: "uniform" (uniform in [0, T)), [lo, hi] (uniform in lo..hi inclusive) or "stratified" (t_k
    uniform in the k-th of K equal bins of [0, T)). Row i depends only on (seed, example_indices[i]); pair k of
    a row only on k as well, except under "stratified", where the bins depend on K.
    """
    indices = _example_index_array(example_indices)
    if int(num_pairs) != num_pairs or num_pairs < 1:
        raise ValueError(f"num_pairs must be a positive integer, got {num_pairs!r}")
    if int(num_train_timesteps) != num_train_timesteps or num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed!r}")
    sample_shape = tuple(int(size) for size in sample_shape)
    t_low, t_high = timestep_bounds(timesteps, num_pairs, num_train_timesteps)
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
        timesteps[row] = generator.integers(t_low, t_high, size=num_pairs, dtype=np.int64)
        counter[3] = _NOISE_STREAM
        bit_generator.state = state
        generator.standard_normal(dtype=np.float32, out=noise[row])
    return timesteps, noise


def timestep_bounds(timesteps, num_pairs: int, num_train_timesteps: int):
    """(low, high) for ``Generator.integers``: scalars, or per-pair arrays [K] under "stratified"."""
    if timesteps == "uniform":
        return 0, num_train_timesteps
    if timesteps == "stratified":
        if num_pairs > num_train_timesteps:
            raise ValueError(f"margins.timesteps: stratified needs num_pairs <= {num_train_timesteps} timesteps, got {num_pairs}")
        edges = np.arange(num_pairs + 1, dtype=np.int64) * num_train_timesteps // num_pairs
        return edges[:-1], edges[1:]
    if isinstance(timesteps, (list, tuple)) and len(timesteps) == 2 and all(isinstance(t, (int, np.integer)) for t in timesteps):
        low, high = (int(t) for t in timesteps)
        if 0 <= low <= high < num_train_timesteps:
            return low, high + 1
    raise ValueError(f"margins.timesteps must be 'uniform', 'stratified' or [lo, hi] with 0 <= lo <= hi < "
                     f"{num_train_timesteps}, got {timesteps!r}")


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
    *,
    compile: bool = False,
    channels_last: bool = False,
    noise_workers: int | None = None,
    timesteps: str | list | tuple = "uniform",
) -> np.ndarray:
    """Margins float64 [P] of the examples ``x0`` [P, C, H, W] (model space) under ``unet``.

    ``unet(x_t, t).sample`` is called once per chunk of ``batch_size`` noisy inputs (the P x K
    (example, pair) inputs taken in order), under torch.inference_mode and in eval mode, on
    ``device`` (default: the unet's) with inputs of ``dtype`` (default: the unet's). On the CPU a
    chunk goes through the model in slices of at most ``CPU_FORWARD_PIXELS`` (rows x height x width),
    where the caches keep a forward fastest: larger slices are slower per input there. The noise of
    a chunk is drawn when it is needed, so memory stays at a few batches.

    Fast path (results equal within float tolerance): the per-input losses stay on the device and are
    read once at the end, so the device never waits for the host between chunks; off the CPU the noise
    of the next chunk is drawn by ``noise_workers`` host threads (default: up to 4) while the device
    runs the current one. ``compile``: ``torch.compile`` the UNet (a short last slice is padded, so
    one graph serves every forward); ``channels_last``: NHWC activations and weights.
    """
    import torch

    x0, indices, alphas_cumprod, device, dtype = _checked_inputs(unet, x0, example_indices, alphas_cumprod, batch_size,
                                                                 device, dtype)
    n_examples, sample_shape = indices.size, tuple(x0.shape[1:])
    timestep_choice = timesteps  # the name is reused for each chunk's timesteps below
    timestep_bounds(timestep_choice, num_pairs, len(alphas_cumprod))  # a bad choice fails before any forward
    n_inputs = n_examples * num_pairs
    alphas_cumprod = alphas_cumprod.to(device=device, dtype=torch.float32)
    losses = torch.empty(n_inputs, dtype=torch.float64, device=device)
    chunks = [(first, min(first + batch_size, n_inputs)) for first in range(0, n_inputs, batch_size)]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    forward_rows = min(batch_size, n_inputs)
    if device.type == "cpu":
        forward_rows = min(forward_rows, max(1, CPU_FORWARD_PIXELS // (sample_shape[1] * sample_shape[2])))

    def chunk_noise(first, last):
        """Host arrays (timesteps [last-first], noise [last-first, C, H, W]) of the inputs first..last."""
        first_example, end_example = first // num_pairs, (last - 1) // num_pairs + 1
        timesteps, noise = margin_noise(indices[first_example:end_example], num_pairs, sample_shape, len(alphas_cumprod), seed,
                                        timestep_choice)
        in_chunk = slice(first - first_example * num_pairs, last - first_example * num_pairs)
        return timesteps.reshape(-1)[in_chunk], noise.reshape(-1, *sample_shape)[in_chunk]

    # Off the CPU the noise of the next chunks is drawn by host threads while the device runs the current one.
    workers = noise_workers or min(4, os.cpu_count() or 1) if device.type != "cpu" and len(chunks) > 1 else 0
    from diffunlearn.speed import fast_inference

    with fast_inference(unet, compile=compile, cuda_graphs=device.type == "cuda", channels_last=channels_last) as model, \
            torch.inference_mode():
        for (first, last), (timesteps, noise) in zip(chunks, _prefetched(chunk_noise, chunks, workers)):
            first_example = first // num_pairs
            timesteps = torch.from_numpy(timesteps).to(device)
            noise = torch.from_numpy(noise).to(device)
            example_of_input = torch.arange(first, last) // num_pairs - first_example
            end_example = (last - 1) // num_pairs + 1
            clean = x0[first_example:end_example].to(device=device, dtype=torch.float32)[example_of_input.to(device)]
            losses[first:last] = _denoising_losses(model, clean, noise, timesteps, alphas_cumprod, dtype, forward_rows,
                                                   pad=compile, memory_format=memory_format)
        values = losses.cpu().numpy()  # the only host sync
    return -values.reshape(n_examples, num_pairs).mean(axis=1)


def _checked_inputs(unet, x0, example_indices, alphas_cumprod, batch_size, device, dtype):
    """compute_margins' arguments checked (one-line errors) and defaulted: x0 and alphas_cumprod as tensors, the
    indices as uint64, the device and dtype (the unet's unless given)."""
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
    if device.type == "cpu":
        from diffunlearn.speed import tune_cpu_allocator

        tune_cpu_allocator()
    if dtype is None:
        dtype = parameter.dtype if parameter is not None else torch.float32
    return x0, indices, alphas_cumprod, device, dtype


def _prefetched(make, chunks, workers: int):
    """``make(*chunk)`` for every chunk in order; with ``workers`` > 0 computed ahead by that many threads."""
    if not workers:
        for chunk in chunks:
            yield make(*chunk)
        return
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        pending = [pool.submit(make, *chunk) for chunk in chunks[: workers + 1]]
        for j in range(len(chunks)):
            result = pending[j].result()
            if len(pending) < len(chunks):
                pending.append(pool.submit(make, *chunks[len(pending)]))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _denoising_losses(unet, clean, noise, timesteps, alphas_cumprod, dtype, forward_rows, pad=False, memory_format=None):
    """Per input: mean over pixels of (eps - eps_theta(x_t, t))^2, float64, on the device.

    The model sees slices of ``forward_rows`` inputs; ``pad``: the last slice is padded to that many rows
    (a compiled model sees one shape).
    """
    import torch

    alpha_bar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise
    if memory_format is not None:
        noisy = noisy.contiguous(memory_format=memory_format)
    noisy = noisy.to(dtype)
    predicted = []
    for start in range(0, noisy.shape[0], forward_rows):
        x, t = noisy[start : start + forward_rows], timesteps[start : start + forward_rows]
        n = x.shape[0]
        if pad and n < forward_rows:
            x = torch.cat([x, x.new_zeros((forward_rows - n, *x.shape[1:]))])
            t = torch.cat([t, t.new_zeros(forward_rows - n)])
        predicted.append(unet(x, t).sample[:n].float())
    predicted = predicted[0] if len(predicted) == 1 else torch.cat(predicted)
    error = noise - predicted
    return error.pow(2).flatten(1).mean(dim=1, dtype=torch.float64)


def _example_index_array(example_indices) -> np.ndarray:
    indices = np.asarray(example_indices)
    if indices.ndim != 1:
        raise ValueError(f"example_indices must be 1-D, got shape {indices.shape}")
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"example_indices must be integers, got dtype {indices.dtype}")
    if indices.size and indices.min() < 0:
        raise ValueError(f"example_indices must be non-negative, got {int(indices.min())}")
    return indices.astype(np.uint64)
