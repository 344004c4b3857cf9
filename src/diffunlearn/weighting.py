"""Loss weighting and timestep sampling for denoising training (config ``train.loss_weighting`` and ``train.timesteps``).

A training step draws timesteps ``t`` from a sampler and minimises ``mean_i  s(t_i) * w(t_i) * L_i`` where ``L_i`` is
the per-example denoising MSE, ``w`` the fixed loss weighting (``loss_weights``) and ``s`` the sampler's own weight
(``TimestepSampler.weights``: 1 for every scheme but the importance-weighted ones). SNR_t = abar_t / (1 - abar_t).

Fixed weightings (``loss_weights``), one value per timestep:

- ``uniform``: w_t = 1 (DDPM's L_simple).
- ``min_snr`` (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"): with gamma = 5,
  w_t = min(SNR_t, gamma) / SNR_t for epsilon prediction, min(SNR_t, gamma) / (SNR_t + 1) for v prediction and
  min(SNR_t, gamma) for x0 ("sample") prediction; SNR from diffusers' ``compute_snr``.
- ``p2`` (Choi et al. 2022, "Perception Prioritized Training of Diffusion Models"): w_t = 1 / (k + SNR_t)^gamma,
  k = 1, gamma in {0.5, 1}; unnormalised, as its authors trained.
- ``speed`` (Wang et al. 2024, "A Closer Look at Time Steps is Worthy of Triple Speed-Up for Diffusion Model
  Training", change-aware weighting): with g_t = d(1 - abar_t)/dt (central differences) min-max normalised over
  the schedule, w_t = (1 - lam) + (2 lam - 1) * g_t for t < tau and w_t = 1 for t >= tau; lam in [0.5, 1] is the
  paper's symmetric ceiling (weights span [1 - lam, lam] before tau), the convergence-area split as in the
  authors' code.

Timestep distributions (``timestep_probs``) and samplers (``make_sampler``):

- ``uniform``: p_t = 1 / T (the draws are exactly those of ``torch.randint``, as before this module).
- ``speed`` (Wang et al. 2024, asymmetric sampling): p_t proportional to k for t < tau and to 1 for t >= tau, i.e.
  the convergence area t >= tau is suppressed k:1 (k = 5: the seed project's variant). tau: the first step at which
  d sqrt(1 - abar_t)/dt falls below 1e-4 (642 for the linear 1000-step schedule). The authors' antithetic "dual"
  draws are not used (they change the marginal distribution away from the one stated here).
- ``importance`` (Nichol & Dhariwal 2021, Improved DDPM, section 3.3): the last ``history`` = 10 losses of every t
  are kept; until every t has 10 the draws are uniform; then p_t proportional to sqrt(E[L_t^2]) mixed with a
  uniform share 0.001, and every term is weighted by 1 / (T p_t), so the objective is unchanged in expectation.
- ``loss_decrease`` (ours, after the idea of adaptive non-uniform timestep sampling, Kim et al. 2024,
  arXiv 2411.09998: sample where training currently reduces the loss): timesteps fall in ``bins`` equal bins; each
  bin keeps a fast and a slow exponential moving average of its mean loss, updated once per visit (a step that drew
  the bin); the relative decrease per visit is r_b = max(slow_b - fast_b, 0) / slow_b (the lag between the two
  averages turns a falling loss into a positive gap). Uniform until every bin has ``warmup_visits`` visits; then
  p_t = (1 - u) * r_b(t) / (sum_b r_b * |b(t)|) + u / T with the uniform share u = 0.3, so every t keeps being
  trained. By default the terms are not re-weighted (``unbiased: false``): the scheme is a curriculum that moves
  effort to where the loss still falls, like SpeeD's fixed re-allocation; ``unbiased: true`` adds 1 / (T p_t).
- ``fast_importance`` (ours): Improved DDPM's importance sampler made to act from the first steps of a run and to
  draw with less variance. Timesteps fall in ``bins`` equal bins (50); each bin keeps an exponential moving average
  (``decay`` 0.9, one update per visit) of the squared per-example loss, so a bin is ready after ``warmup_visits``
  = 2 visits (about 8 steps at batch 64) instead of 10 losses at each of the T timesteps (hundreds of steps). Then
  p_t = (1 - u) * s_b(t) / (sum_b s_b * |b|) + u / T with s_b = sqrt(EMA_b)^``power`` (power 1: the RMS loss, as
  Improved DDPM) and u = 0.05, which bounds every weight 1 / (T p_t) by 1 / u = 20. ``stratified: true`` draws the
  batch by inverse CDF at one uniform point in each of the B quantile strata (i + U_i) / B, then shuffles: each
  draw still has marginal p, so with the 1 / (T p_t) weights (``unbiased: true``) the objective is unchanged in
  expectation, and the batch covers the distribution evenly (less variance between batches than B independent
  draws). ``k`` (5) keeps SpeeD's k:1 allocation as the objective instead of the uniform one: with q the ``speed``
  distribution of the same ``k`` / ``tau`` / ``threshold``, p_t = (1 - u) * q_t s_b(t) / sum_t' q_t' s_b(t') + u q_t
  and every term is weighted by q_t / p_t (at most 1 / u), so E_p[w_t L_t] = sum_t q_t L_t: SpeeD's objective with
  the variance of its draws reduced. k = 1 is the uniform objective (q_t = 1 / T, weights 1 / (T p_t)).

Every sampler draws only from the generator it is given (deterministic) and its ``state_dict`` holds plain Python
numbers, so a checkpoint restores it exactly.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

# scheme -> its parameters and their defaults (None: derived from the schedule)
WEIGHTING_SCHEMES = {
    "uniform": {},
    "min_snr": {"gamma": 5.0},
    "p2": {"k": 1.0, "gamma": 1.0},
    "speed": {"lam": 0.6, "tau": None, "threshold": 1e-4},
}
TIMESTEP_SCHEMES = {
    "uniform": {},
    "speed": {"k": 5.0, "tau": None, "threshold": 1e-4},
    "importance": {"history": 10, "uniform_share": 0.001},
    "loss_decrease": {"bins": 20, "uniform_share": 0.3, "fast": 0.8, "slow": 0.95, "warmup_visits": 20,
                      "unbiased": False},
    "fast_importance": {"bins": 50, "decay": 0.9, "power": 1.0, "uniform_share": 0.05, "warmup_visits": 2,
                        "stratified": True, "unbiased": True, "k": 5.0, "tau": None, "threshold": 1e-4},
}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def resolve(cfg: dict | None, key: str) -> dict:
    """``{"scheme": ..., **params}`` of train.<key> with every parameter of the scheme filled with its default.
    key: "timesteps" or "loss_weighting". A missing block is the uniform scheme."""
    table = TIMESTEP_SCHEMES if key == "timesteps" else WEIGHTING_SCHEMES
    cfg = dict(cfg or {})
    scheme = cfg.pop("scheme", "uniform")
    if scheme not in table:
        raise ValueError(f"config error at train.{key}.scheme: unknown scheme {scheme!r} (known: {', '.join(table)})")
    unknown = sorted(set(cfg) - set(table[scheme]))
    if unknown:
        raise ValueError(f"config error at train.{key}.{unknown[0]}: not a parameter of scheme {scheme!r} "
                         f"(its parameters: {', '.join(table[scheme]) or 'none'})")
    return {"scheme": scheme, **table[scheme], **cfg}


def job_params(train_cfg: dict) -> dict:
    """The train config as it enters job params and run fingerprints: train.timesteps / train.loss_weighting are
    left out when uniform (so the default leaves today's params byte-identical), and resolved otherwise."""
    out = {k: v for k, v in train_cfg.items() if k not in ("timesteps", "loss_weighting")}
    for key in ("timesteps", "loss_weighting"):
        if key in train_cfg:
            resolved = resolve(train_cfg[key], key)
            if resolved["scheme"] != "uniform":
                out[key] = resolved
    return out


def snr(alphas_cumprod):
    """SNR_t = abar_t / (1 - abar_t) for every t, through diffusers' ``compute_snr`` (float32)."""
    import torch
    from diffusers.training_utils import compute_snr

    ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu()
    return compute_snr(SimpleNamespace(alphas_cumprod=ac), torch.arange(len(ac)))


def speed_tau(alphas_cumprod, threshold: float = 1e-4) -> int:
    """SpeeD's boundary of the convergence area: one past the first t at which d sqrt(1 - abar_t)/dt < threshold
    (642 for the linear 1000-step schedule); T when the slope never falls that low."""
    ac = np.asarray(_as_numpy(alphas_cumprod), dtype=np.float64)
    small = np.gradient(np.sqrt(1.0 - ac)) < threshold
    return int(np.argmax(small)) + 1 if small.any() else len(ac)


def _as_numpy(x):
    return x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float64)


def _tau(p: dict, alphas_cumprod) -> int:
    return int(p["tau"]) if p.get("tau") is not None else speed_tau(alphas_cumprod, p["threshold"])


def loss_weights(kind: str, alphas_cumprod, prediction_type: str = "epsilon", **params):
    """One loss weight per timestep (a float32 tensor of length T) of the fixed weighting ``kind``."""
    import torch

    p = resolve({"scheme": kind, **params}, "loss_weighting")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
    T = len(alphas_cumprod)
    if kind == "uniform":
        return torch.ones(T)
    if kind == "min_snr":
        s = snr(alphas_cumprod)
        clipped = torch.clamp(s, max=p["gamma"])
        denominator = {"epsilon": s, "v_prediction": s + 1, "sample": torch.ones_like(s)}[prediction_type]
        return (clipped / denominator).float()
    if kind == "p2":
        return (1.0 / (p["k"] + snr(alphas_cumprod)) ** p["gamma"]).float()
    # speed: change-aware weighting
    ac = _as_numpy(alphas_cumprod)
    g = np.gradient(1.0 - ac)
    g = (g - g.min()) / (g.max() - g.min())
    w = (1.0 - p["lam"]) + (2.0 * p["lam"] - 1.0) * g
    w[_tau(p, alphas_cumprod):] = 1.0
    return torch.from_numpy(w).float()


def timestep_probs(kind: str, alphas_cumprod, **params):
    """The distribution (float64 tensor of length T) of the fixed timestep sampler ``kind`` (uniform, speed)."""
    import torch

    p = resolve({"scheme": kind, **params}, "timesteps")
    T = len(alphas_cumprod)
    if kind == "uniform":
        return torch.full((T,), 1.0 / T, dtype=torch.float64)
    if kind == "speed":
        tau = _tau(p, alphas_cumprod)
        w = torch.ones(T, dtype=torch.float64)
        w[:tau] = float(p["k"])
        return w / w.sum()
    raise ValueError(f"timestep scheme {kind!r} is adaptive: its distribution changes during training "
                     "(make_sampler(...).probs() gives the current one)")


class TimestepSampler:
    """A fixed distribution over timesteps. Adaptive samplers override ``probs``, ``update`` and the state.

    Also the training engine's sampler protocol (:class:`diffunlearn.objectives.TimestepSampler`): ``observe``
    is ``update``; ``needs_losses`` says whether the engine must compute per-example losses for it."""

    needs_losses = False

    def __init__(self, probs):
        import torch

        self._probs = torch.as_tensor(probs, dtype=torch.float64)
        self.num_timesteps = len(self._probs)
        self._drawn = None  # the distribution of the last draw (importance weights refer to it)

    def probs(self):
        """The current distribution over the T timesteps (float64)."""
        return self._probs

    def sample(self, batch: int, generator):
        """``batch`` timesteps (int64, on the generator's device), drawn from ``generator`` only."""
        import torch

        self._drawn = self.probs()
        return torch.multinomial(self._drawn.to(generator.device), batch, replacement=True, generator=generator)

    def drawn_probs(self):
        """The distribution the last ``sample`` drew from (the current one before any draw): importance weights
        use it, so they stay those of the draw whether the engine reads them before or after ``observe``."""
        return self._drawn if self._drawn is not None else self.probs()

    def weights(self, timesteps):
        """The sampler's weight of each drawn term (1: the draws change the objective, as SpeeD intends)."""
        import torch

        return torch.ones(timesteps.shape, device=timesteps.device)

    def update(self, timesteps, losses) -> None:
        """Feed back the per-example losses of the drawn timesteps (the whole global batch). Fixed: nothing."""

    def observe(self, timesteps, losses) -> None:
        self.update(timesteps, losses)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class UniformSampler(TimestepSampler):
    """Uniform timesteps, drawn with ``torch.randint`` exactly as the training loop always drew them."""

    def __init__(self, num_timesteps: int):
        super().__init__([1.0 / num_timesteps] * num_timesteps)

    def sample(self, batch: int, generator):
        import torch

        return torch.randint(0, self.num_timesteps, (batch,), device=generator.device, generator=generator)


def _equal_bins(num_timesteps: int, bins: int):
    """The bin of every t (``bins`` contiguous, near-equal bins) and each bin's size."""
    bin_of = np.arange(num_timesteps) * bins // num_timesteps
    return bin_of, np.bincount(bin_of, minlength=bins).astype(np.float64)


def stratified_draws(probs, batch: int, generator):
    """``batch`` draws from ``probs`` by inverse CDF at one uniform point in each stratum [i / B, (i + 1) / B),
    in shuffled order: each draw has marginal ``probs``, and the batch covers the distribution evenly. Computed on
    the generator's device (no copy back to the host)."""
    import torch

    device = generator.device
    u = torch.rand(batch, dtype=torch.float64, generator=generator, device=device)
    cdf = torch.cumsum(probs.to(device), 0)
    strata = torch.arange(batch, dtype=torch.float64, device=device)
    t = torch.searchsorted(cdf, (strata + u) / batch * cdf[-1]).clamp_(max=len(probs) - 1)
    return t[torch.randperm(batch, generator=generator, device=device)]


def _bin_means(bin_of_draw, values, bins: int):
    """The bins that were drawn and the mean of ``values`` over each one's draws (one visit per drawn bin)."""
    counts = np.bincount(bin_of_draw, minlength=bins)
    sums = np.bincount(bin_of_draw, weights=values, minlength=bins)
    visited = np.flatnonzero(counts)
    return visited, sums[visited] / counts[visited]


def _importance_weights(probs, timesteps, prior=None):
    """q_t / p_t of each drawn t: E_p[w_t L_t] = sum_t q_t L_t, the objective of drawing from q (uniform q:
    1 / (T p_t), mean_t L_t)."""
    ratio = 1.0 / (len(probs) * probs) if prior is None else prior / probs  # on the host: one copy to the device
    return ratio.to(timesteps.device)[timesteps].float()


class ImportanceSampler(TimestepSampler):
    """Improved DDPM's loss-second-moment sampler (see the module docstring)."""

    needs_losses = True

    def __init__(self, num_timesteps: int, history: int = 10, uniform_share: float = 0.001):
        super().__init__([1.0 / num_timesteps] * num_timesteps)
        self.history, self.uniform_share = int(history), float(uniform_share)
        self._losses = np.zeros((num_timesteps, self.history))
        self._counts = np.zeros(num_timesteps, dtype=np.int64)

    def warmed_up(self) -> bool:
        return bool((self._counts == self.history).all())

    def probs(self):
        import torch

        if not self.warmed_up():
            return self._probs
        rms = np.sqrt(np.mean(self._losses**2, axis=1))
        p = (1.0 - self.uniform_share) * rms / rms.sum() + self.uniform_share / self.num_timesteps
        return torch.from_numpy(p)

    def weights(self, timesteps):
        return _importance_weights(self.drawn_probs(), timesteps)

    def update(self, timesteps, losses) -> None:
        for t, loss in zip(_as_numpy(timesteps).astype(np.int64).tolist(), _as_numpy(losses).tolist()):
            if self._counts[t] == self.history:
                self._losses[t, :-1] = self._losses[t, 1:]
                self._losses[t, -1] = loss
            else:
                self._losses[t, self._counts[t]] = loss
                self._counts[t] += 1

    def state_dict(self) -> dict:
        return {"losses": self._losses.tolist(), "counts": self._counts.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self._losses = np.array(state["losses"], dtype=np.float64).reshape(self.num_timesteps, self.history)
        self._counts = np.array(state["counts"], dtype=np.int64)


class LossDecreaseSampler(TimestepSampler):
    """Ours: timesteps where the loss currently falls fastest per visit (see the module docstring)."""

    needs_losses = True

    def __init__(self, num_timesteps: int, bins: int = 20, uniform_share: float = 0.3, fast: float = 0.8,
                 slow: float = 0.95, warmup_visits: int = 20, unbiased: bool = False):
        super().__init__([1.0 / num_timesteps] * num_timesteps)
        if not 0 < fast < slow < 1:
            raise ValueError(f"loss_decrease: need 0 < fast ({fast}) < slow ({slow}) < 1")
        self.bins = min(int(bins), num_timesteps)
        self.uniform_share, self.fast, self.slow = float(uniform_share), float(fast), float(slow)
        self.warmup_visits, self.unbiased = int(warmup_visits), bool(unbiased)
        self._bin_of, self._size = _equal_bins(num_timesteps, self.bins)
        self._fast_ema, self._slow_ema = np.zeros(self.bins), np.zeros(self.bins)
        self._visits = np.zeros(self.bins, dtype=np.int64)

    def decrease(self) -> np.ndarray:
        """r_b: the relative loss decrease per visit of every bin (0 where the loss does not fall)."""
        gap = np.maximum(self._slow_ema - self._fast_ema, 0.0)
        return np.where(self._slow_ema > 0, gap / np.where(self._slow_ema > 0, self._slow_ema, 1.0), 0.0)

    def probs(self):
        import torch

        r = self.decrease()
        if (self._visits < self.warmup_visits).any() or r.sum() <= 0:
            return self._probs
        per_t = (r / (r * self._size).sum())[self._bin_of]
        return torch.from_numpy((1.0 - self.uniform_share) * per_t + self.uniform_share / self.num_timesteps)

    def weights(self, timesteps):
        return _importance_weights(self.drawn_probs(), timesteps) if self.unbiased else super().weights(timesteps)

    def update(self, timesteps, losses) -> None:
        b = self._bin_of[_as_numpy(timesteps).astype(np.int64)]
        visited, means = _bin_means(b, _as_numpy(losses), self.bins)
        for k, m in zip(visited.tolist(), means.tolist()):
            if self._visits[k] == 0:
                self._fast_ema[k] = self._slow_ema[k] = m
            else:
                self._fast_ema[k] = self.fast * self._fast_ema[k] + (1.0 - self.fast) * m
                self._slow_ema[k] = self.slow * self._slow_ema[k] + (1.0 - self.slow) * m
            self._visits[k] += 1

    def state_dict(self) -> dict:
        return {"fast": self._fast_ema.tolist(), "slow": self._slow_ema.tolist(), "visits": self._visits.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self._fast_ema = np.array(state["fast"], dtype=np.float64)
        self._slow_ema = np.array(state["slow"], dtype=np.float64)
        self._visits = np.array(state["visits"], dtype=np.int64)


class FastImportanceSampler(TimestepSampler):
    """Ours: importance sampling that is active after a few steps, with stratified draws (module docstring).
    ``prior``: the allocation q whose objective the weighted draws keep (None: uniform)."""

    needs_losses = True

    def __init__(self, num_timesteps: int, bins: int = 50, decay: float = 0.9, power: float = 1.0,
                 uniform_share: float = 0.05, warmup_visits: int = 2, stratified: bool = True, unbiased: bool = True,
                 prior=None):
        super().__init__([1.0 / num_timesteps] * num_timesteps if prior is None else prior)
        self.bins = min(int(bins), num_timesteps)
        self.decay, self.power, self.uniform_share = float(decay), float(power), float(uniform_share)
        self.warmup_visits, self.stratified, self.unbiased = int(warmup_visits), bool(stratified), bool(unbiased)
        self._bin_of, _ = _equal_bins(num_timesteps, self.bins)
        self._second_moment = np.zeros(self.bins)
        self._visits = np.zeros(self.bins, dtype=np.int64)

    @property
    def prior(self):
        """q: the allocation whose objective the weighted draws keep (uniform: L_simple)."""
        return self._probs

    def probs(self):
        import torch

        if (self._visits < self.warmup_visits).any():
            return self.prior
        score = np.sqrt(self._second_moment) ** self.power
        if score.sum() <= 0:
            return self.prior
        q = self.prior.numpy()
        scored = q * score[self._bin_of]
        return torch.from_numpy((1.0 - self.uniform_share) * scored / scored.sum() + self.uniform_share * q)

    def sample(self, batch: int, generator):
        if not self.stratified:
            return super().sample(batch, generator)
        self._drawn = self.probs()
        return stratified_draws(self._drawn, batch, generator)

    def weights(self, timesteps):
        if not self.unbiased:
            return super().weights(timesteps)
        return _importance_weights(self.drawn_probs(), timesteps, self.prior)

    def update(self, timesteps, losses) -> None:
        b = self._bin_of[_as_numpy(timesteps).astype(np.int64)]
        visited, means = _bin_means(b, _as_numpy(losses) ** 2, self.bins)
        for k, m in zip(visited.tolist(), means.tolist()):
            first = self._visits[k] == 0
            self._second_moment[k] = m if first else self.decay * self._second_moment[k] + (1 - self.decay) * m
            self._visits[k] += 1

    def state_dict(self) -> dict:
        return {"second_moment": self._second_moment.tolist(), "visits": self._visits.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self._second_moment = np.array(state["second_moment"], dtype=np.float64)
        self._visits = np.array(state["visits"], dtype=np.int64)


def make_sampler(cfg: dict | None, alphas_cumprod) -> TimestepSampler:
    """The sampler of train.timesteps (``{"scheme": ..., **params}``; None or missing: uniform)."""
    p = resolve(cfg, "timesteps")
    scheme, T = p.pop("scheme"), len(alphas_cumprod)
    if scheme == "uniform":
        return UniformSampler(T)
    if scheme == "speed":
        return TimestepSampler(timestep_probs("speed", alphas_cumprod, **p))
    if scheme == "importance":
        return ImportanceSampler(T, **p)
    if scheme == "fast_importance":
        allocation = {k: p.pop(k) for k in ("k", "tau", "threshold")}  # k = 1: speed's q is uniform
        return FastImportanceSampler(T, prior=timestep_probs("speed", alphas_cumprod, **allocation), **p)
    return LossDecreaseSampler(T, **p)


def make_loss_weights(cfg: dict | None, alphas_cumprod, prediction_type: str = "epsilon"):
    """The per-timestep weights of train.loss_weighting, or None for uniform (the loss is then computed as before)."""
    p = resolve(cfg, "loss_weighting")
    scheme = p.pop("scheme")
    return None if scheme == "uniform" else loss_weights(scheme, alphas_cumprod, prediction_type, **p)


def effective_share(probs) -> float:
    """exp(entropy) / T: 1 for uniform draws, smaller the more the draws concentrate (a log line for runs)."""
    p = _as_numpy(probs)
    nz = p[p > 0]
    return float(math.exp(-(nz * np.log(nz)).sum()) / len(p))


def _sampler_of(cfg, scheduler):
    return make_sampler(cfg, scheduler.alphas_cumprod)


def _weights_of(cfg, prediction_type, scheduler):
    return make_loss_weights(cfg, scheduler.alphas_cumprod, prediction_type)


def engine_hooks(train_cfg: dict) -> dict:
    """The training engine's ``timesteps`` / ``weighting`` hooks (``TrainRun`` fields, each ``(scheduler) -> ...``)
    of train.timesteps / train.loss_weighting; a uniform scheme gives no hook (the engine's own default path)."""
    import functools

    hooks = {}
    timesteps = resolve(train_cfg.get("timesteps"), "timesteps")
    if timesteps["scheme"] != "uniform":
        if train_cfg.get("num_processes", 1) > 1 and make_sampler(timesteps, [0.5, 0.5]).needs_losses:
            raise ValueError(f"config error at train.timesteps.scheme: {timesteps['scheme']!r} learns from the losses "
                             "of the whole batch; it needs train.num_processes 1")
        hooks["timesteps"] = functools.partial(_sampler_of, timesteps)
    weighting = resolve(train_cfg.get("loss_weighting"), "loss_weighting")
    if weighting["scheme"] != "uniform":
        hooks["weighting"] = functools.partial(_weights_of, weighting, "epsilon")
    return hooks

