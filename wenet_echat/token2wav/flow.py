"""Conditional flow matching from 25 Hz speech tokens to a log-mel spectrogram (CosyVoice-style, CPU-sized).

Pipeline (module names follow CosyVoice's ``MaskedDiffWithXvec`` where the role is the same)
    ``input_embedding`` (codebook + 1 pad row) -> ``encoder`` (residual dilated 1-D convs at the token rate) ->
    ``encoder_proj`` (to ``n_mels`` channels) -> ``length_regulator``: each mel frame ``j`` reads the token
    position ``(j + 0.5) / ratio - 0.5`` (``ratio = mel_rate / token_rate``, fixed, so a prefix of the tokens gives
    a prefix of the frames) by linear interpolation (``upsample: linear``) or repetition (``repeat``), then a
    residual conv stack refines it into ``mu``. ``T`` tokens give ``round(T * ratio)`` frames (half up).

Vector field (``estimator``): a 1-D U-Net over ``[x_t, mu, spk, cond]`` (4 x n_mels channels, like CosyVoice's
320) with a sinusoidal time embedding (``1000 t``) feeding FiLM scale/shift into every residual block;
``channels`` gives the width per level, each level but the last halves the frame rate. Normalisation is per frame
(layer norm over channels) and every operator is a finite convolution, so a frame depends only on nearby frames:
the streaming synthesizer can run the flow on a window of tokens and get (nearly) the frames of whole-utterance
synthesis. The sequence is right-padded to a multiple of ``2 ** (levels - 1)`` (``frame_multiple``).

Speaker: ``spk_embed_dim: 0`` -> one learned vector (a single voice, the mini recipe); otherwise an external
embedding (e.g. 192-d CAM++ x-vector) is L2-normalised and projected by ``spk_embed_affine_layer`` to ``n_mels``.

Training (:meth:`FlowMatching.compute_loss`): OT-CFM with ``t`` uniform (or ``t_scheduler: cosine``:
``1 - cos(pi t / 2)``), ``x_t = (1 - (1 - sigma_min) t) x0 + t x1``, target ``x1 - (1 - sigma_min) x0``, MSE.
Mels are normalised per bin with stored statistics (``mel_mean``/``mel_std`` buffers, set from data). With
probability ``prompt_prob`` a random prefix (at most ``prompt_max_ratio`` of the frames) of the target is given
as ``cond`` and masked out of the loss; with probability ``training_cfg_rate`` ``mu``, ``spk`` and ``cond`` are
zeroed (classifier-free guidance). ``prior_loss_weight`` > 0 adds MSE(mu, x1) on the same frames, which makes
``mu`` a coarse mel estimate and speeds up small-budget training.

Inference (:meth:`FlowMatching.inference`): Euler steps over ``t`` in ``[0, 1]`` (``n_steps``, same scheduler),
guidance ``v = (1 + cfg) v(mu, spk, cond) - cfg v(0, 0, 0)`` (``cfg_rate`` 0 runs the conditional pass only).
``x0`` is a fixed noise tensor indexed by absolute frame (blocks of 256 frames drawn from ``noise_seed``), so any
frame range (``frame_start``/``frame_end`` with ``token_offset``) sees the noise the whole utterance would. A
prompt (``prompt_tokens`` + ``prompt_mel``) is prepended as in CosyVoice: its mel is the ``cond`` of its frames
and those frames are dropped from the output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

NOISE_BLOCK = 256  # frames per block of the fixed inference noise
PROMPT_NOISE_STREAM = 1  # prompt frames draw from their own noise stream


def mel_frames(n_tokens: int, ratio: float) -> int:
    """Mel frames of ``n_tokens`` tokens: ``round(n_tokens * ratio)`` with halves rounded up."""
    return int(math.floor(n_tokens * ratio + 0.5))


class ChannelNorm(nn.Module):
    """Layer norm over the channels of every frame of a (B, C, T) tensor (no statistics across time)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class ConvBlock(nn.Module):
    """Pre-norm residual block: ``x + pw(gelu(conv_k,d(norm(x))))``."""

    def __init__(self, channels: int, kernel: int, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.norm = ChannelNorm(channels)
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.pw = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.pw(F.gelu(self.conv(self.norm(x)))))


class ConvEncoder(nn.Module):
    """Token-rate encoder: residual conv blocks with dilations cycling 1, 2, 4 and a final norm."""

    def __init__(self, dim: int, layers: int = 4, kernel: int = 5, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(ConvBlock(dim, kernel, 2 ** (i % 3), dropout) for i in range(layers))
        self.after_norm = ChannelNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.after_norm(x)


def frame_positions(frame_start: int, frame_end: int, ratio: float, token_offset: int, n_tokens: int,
                    mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For absolute frames ``[frame_start, frame_end)``: (left index, right index, right weight) into a token window
    that starts at absolute token ``token_offset`` and holds ``n_tokens`` tokens (indices clamped to the window)."""
    frames = torch.arange(frame_start, frame_end, dtype=torch.float64)
    if mode == "repeat":
        pos = torch.floor((frames + 0.5) / ratio) - token_offset
    else:
        pos = (frames + 0.5) / ratio - 0.5 - token_offset
    pos = pos.clamp(0, max(n_tokens - 1, 0))
    left = torch.floor(pos).long()
    right = (left + 1).clamp(max=max(n_tokens - 1, 0))
    return left, right, (pos - left).float()


class LengthRegulator(nn.Module):
    """Token rate -> frame rate at a fixed ``ratio`` (see :func:`frame_positions`), then a residual conv stack."""

    def __init__(self, channels: int, ratio: float, layers: int = 2, kernel: int = 3, mode: str = "linear"):
        super().__init__()
        if mode not in ("linear", "repeat"):
            raise ValueError(f"upsample must be 'linear' or 'repeat', got '{mode}'")
        self.ratio = ratio
        self.mode = mode
        self.blocks = nn.ModuleList(ConvBlock(channels, kernel) for _ in range(layers))

    def expand(self, h: torch.Tensor, frame_start: int, frame_end: int, token_offset: int = 0,
               ratio: float | None = None) -> torch.Tensor:
        """(B, C, T) token features -> (B, C, frame_end - frame_start) frame features (before refinement)."""
        left, right, w = frame_positions(frame_start, frame_end, ratio or self.ratio, token_offset, h.shape[-1],
                                         self.mode)
        left, right, w = left.to(h.device), right.to(h.device), w.to(h.device, h.dtype)
        return h[..., left] * (1 - w) + h[..., right] * w

    def refine(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of flow times ``t`` (B,) in [0, 1]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    args = scale * t.float().unsqueeze(1) * freqs.unsqueeze(0)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim - emb.shape[1]))


class ResBlock1D(nn.Module):
    """U-Net block: norm -> SiLU -> conv, FiLM from the time embedding, norm -> SiLU -> conv, plus a skip."""

    def __init__(self, cin: int, cout: int, temb_dim: int, kernel: int = 5, dropout: float = 0.0):
        super().__init__()
        self.norm1 = ChannelNorm(cin)
        self.conv1 = nn.Conv1d(cin, cout, kernel, padding=kernel // 2)
        self.time_proj = nn.Linear(temb_dim, 2 * cout)
        self.norm2 = ChannelNorm(cout)
        self.conv2 = nn.Conv1d(cout, cout, kernel, padding=kernel // 2)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.time_proj(temb).unsqueeze(-1).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class UNet1D(nn.Module):
    """The vector-field estimator: (B, in_channels, F) and times (B,) -> (B, out_channels, F)."""

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int] = (128, 192), blocks: int = 2,
                 mid_blocks: int = 2, kernel: int = 5, dropout: float = 0.0):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or blocks < 1:
            raise ValueError(f"estimator needs at least one level and one block, got {channels}, blocks={blocks}")
        self.channels = channels
        self.multiple = 2 ** (len(channels) - 1)
        temb = 4 * channels[0]
        self.time_mlp = nn.Sequential(nn.Linear(channels[0], temb), nn.SiLU(), nn.Linear(temb, temb))
        self.in_conv = nn.Conv1d(in_channels, channels[0], 1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        prev = channels[0]
        for i, c in enumerate(channels):
            self.down_blocks.append(nn.ModuleList(
                ResBlock1D(prev if j == 0 else c, c, temb, kernel, dropout) for j in range(blocks)))
            prev = c
            if i < len(channels) - 1:
                self.downsamples.append(nn.Conv1d(c, c, 3, stride=2, padding=1))
        self.mid_blocks = nn.ModuleList(ResBlock1D(prev, prev, temb, kernel, dropout) for _ in range(mid_blocks))
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in reversed(range(len(channels))):
            c = channels[i]
            self.up_blocks.append(nn.ModuleList(
                ResBlock1D(2 * c if j == 0 else c, c, temb, kernel, dropout) for j in range(blocks)))
            if i > 0:
                self.upsamples.append(nn.Conv1d(c, channels[i - 1], 3, padding=1))
        self.final_norm = ChannelNorm(channels[0])
        self.final_proj = nn.Conv1d(channels[0], out_channels, 1)
        nn.init.zeros_(self.final_proj.weight)
        nn.init.zeros_(self.final_proj.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        x = F.pad(x, (0, (-n) % self.multiple))
        temb = self.time_mlp(timestep_embedding(t, self.channels[0]))
        h = self.in_conv(x)
        skips = []
        for i, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, temb)
            skips.append(h)
            if i < len(self.downsamples):
                h = self.downsamples[i](h)
        for block in self.mid_blocks:
            h = block(h, temb)
        for i, blocks in enumerate(self.up_blocks):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, temb)
            if i < len(self.upsamples):
                h = self.upsamples[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.final_proj(F.silu(self.final_norm(h)))[..., :n]


class FlowMatching(nn.Module):
    """Tokens -> log-mel by conditional flow matching; see the module docstring for the design."""

    def __init__(self, codebook_size: int, n_mels: int = 80, mel_rate: float = 100.0, token_rate: float = 25.0,
                 encoder_dim: int = 192, encoder_layers: int = 4, encoder_kernel: int = 5, upsample: str = "linear",
                 regulator_layers: int = 2, channels: Sequence[int] = (128, 192), blocks: int = 2, mid_blocks: int = 2,
                 kernel: int = 5, dropout: float = 0.0, spk_embed_dim: int = 0, sigma_min: float = 1e-6,
                 t_scheduler: str = "cosine", training_cfg_rate: float = 0.2, inference_cfg_rate: float = 0.7,
                 n_steps: int = 10, temperature: float = 1.0, prompt_prob: float = 0.5,
                 prompt_max_ratio: float = 0.3, prior_loss_weight: float = 0.0, noise_seed: int = 0):
        super().__init__()
        if codebook_size < 1 or n_mels < 1 or mel_rate <= 0 or token_rate <= 0:
            raise ValueError("flow needs codebook_size, n_mels, mel_rate and token_rate > 0")
        if t_scheduler not in ("linear", "cosine"):
            raise ValueError(f"t_scheduler must be 'linear' or 'cosine', got '{t_scheduler}'")
        self.codebook_size = codebook_size
        self.n_mels = n_mels
        self.ratio = mel_rate / token_rate
        self.sigma_min = sigma_min
        self.t_scheduler = t_scheduler
        self.training_cfg_rate = training_cfg_rate
        self.inference_cfg_rate = inference_cfg_rate
        self.n_steps = n_steps
        self.temperature = temperature
        self.prompt_prob = prompt_prob
        self.prompt_max_ratio = prompt_max_ratio
        self.prior_loss_weight = prior_loss_weight
        self.noise_seed = noise_seed
        self.spk_embed_dim = spk_embed_dim

        self.input_embedding = nn.Embedding(codebook_size + 1, encoder_dim, padding_idx=codebook_size)
        self.encoder = ConvEncoder(encoder_dim, encoder_layers, encoder_kernel, dropout)
        self.encoder_proj = nn.Linear(encoder_dim, n_mels)
        self.length_regulator = LengthRegulator(n_mels, self.ratio, regulator_layers, 3, upsample)
        if spk_embed_dim:
            self.spk_embed_affine_layer = nn.Linear(spk_embed_dim, n_mels)
        else:
            self.spk_embed = nn.Parameter(torch.zeros(n_mels))
        self.estimator = UNet1D(4 * n_mels, n_mels, channels, blocks, mid_blocks, kernel, dropout)
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))
        self._noise_blocks: dict[tuple[int, int], torch.Tensor] = {}

    # ---- helpers

    @property
    def pad_id(self) -> int:
        return self.codebook_size

    @property
    def frame_multiple(self) -> int:
        """Frame windows must start at a multiple of this for the U-Net grid to line up with whole synthesis."""
        return self.estimator.multiple

    def mel_frames(self, n_tokens: int) -> int:
        return mel_frames(n_tokens, self.ratio)

    def set_mel_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-bin statistics of training log-mels (std floored at 1e-3)."""
        self.mel_mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(self.n_mels))
        self.mel_std.copy_(torch.as_tensor(std, dtype=torch.float32).reshape(self.n_mels).clamp(min=1e-3))

    def normalize(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.mel_mean.view(-1, 1)) / self.mel_std.view(-1, 1)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mel_std.view(-1, 1) + self.mel_mean.view(-1, 1)

    def _check_tokens(self, tokens: torch.Tensor | Sequence[int], name: str = "tokens") -> torch.Tensor:
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.mel_mean.device)
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.dim() != 2:
            raise ValueError(f"{name} must be (T,) or (B, T), got shape {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.codebook_size):
            bad = tokens[(tokens < 0) | (tokens >= self.codebook_size)][0]
            raise ValueError(f"{name}: code {int(bad)} is outside [0, {self.codebook_size})")
        return tokens

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token features (B, n_mels, T) at the token rate (before the length regulator)."""
        h = self.encoder(self.input_embedding(tokens).transpose(1, 2))
        return self.encoder_proj(h.transpose(1, 2)).transpose(1, 2)

    def speaker(self, spk_embedding: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, n_mels) speaker condition: the projected external embedding, or the single learned voice."""
        if self.spk_embed_dim:
            if spk_embedding is None:
                raise ValueError(f"this flow model needs a {self.spk_embed_dim}-d speaker embedding")
            emb = torch.as_tensor(spk_embedding, dtype=torch.float32, device=self.mel_mean.device)
            emb = emb.reshape(-1, self.spk_embed_dim).expand(batch, -1)
            return self.spk_embed_affine_layer(F.normalize(emb, dim=1))
        if spk_embedding is not None:
            raise ValueError("this flow model has one fixed voice (spk_embed_dim 0); do not pass a speaker embedding")
        return self.spk_embed.unsqueeze(0).expand(batch, -1)

    def time_grid(self, n_steps: int) -> torch.Tensor:
        t = torch.linspace(0.0, 1.0, n_steps + 1, device=self.mel_mean.device)
        return 1.0 - torch.cos(t * 0.5 * math.pi) if self.t_scheduler == "cosine" else t

    def _noise_block(self, stream: int, index: int) -> torch.Tensor:
        key = (stream, index)
        if key not in self._noise_blocks:
            gen = torch.Generator().manual_seed(self.noise_seed * 1_000_003 + stream * 7_919 + index)
            self._noise_blocks[key] = torch.randn(self.n_mels, NOISE_BLOCK, generator=gen)
        return self._noise_blocks[key]

    def fixed_noise(self, frame_start: int, frame_end: int, stream: int = 0) -> torch.Tensor:
        """The inference noise of absolute frames ``[frame_start, frame_end)``: (n_mels, frames), deterministic."""
        if frame_end <= frame_start:
            return torch.zeros(self.n_mels, 0, device=self.mel_mean.device)
        first, last = frame_start // NOISE_BLOCK, (frame_end - 1) // NOISE_BLOCK
        noise = torch.cat([self._noise_block(stream, i) for i in range(first, last + 1)], dim=1)
        offset = first * NOISE_BLOCK
        return noise[:, frame_start - offset : frame_end - offset].to(self.mel_mean.device)

    # ---- vector field

    def _field(self, x: torch.Tensor, mu: torch.Tensor, spk: torch.Tensor, cond: torch.Tensor,
               t: torch.Tensor) -> torch.Tensor:
        spk = spk.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        return self.estimator(torch.cat([x, mu, spk, cond], dim=1), t)

    def velocity(self, x: torch.Tensor, mu: torch.Tensor, spk: torch.Tensor, cond: torch.Tensor, t: float,
                 cfg_rate: float) -> torch.Tensor:
        """The (guided) vector field at time ``t`` for a batch ``x`` (B, n_mels, F)."""
        b = x.shape[0]
        if cfg_rate == 0:
            return self._field(x, mu, spk, cond, x.new_full((b,), t))
        both = self._field(torch.cat([x, x]), torch.cat([mu, torch.zeros_like(mu)]),
                           torch.cat([spk, torch.zeros_like(spk)]), torch.cat([cond, torch.zeros_like(cond)]),
                           x.new_full((2 * b,), t))
        v_cond, v_uncond = both[:b], both[b:]
        return (1.0 + cfg_rate) * v_cond - cfg_rate * v_uncond

    def solve_euler(self, x0: torch.Tensor, mu: torch.Tensor, spk: torch.Tensor, cond: torch.Tensor, n_steps: int,
                    cfg_rate: float) -> torch.Tensor:
        """Integrate the flow from ``x0`` (t = 0) to t = 1 with ``n_steps`` Euler steps."""
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        grid = self.time_grid(n_steps).tolist()
        x = x0
        for t0, t1 in zip(grid[:-1], grid[1:]):
            x = x + (t1 - t0) * self.velocity(x, mu, spk, cond, t0, cfg_rate)
        return x

    # ---- training

    def _prompt_split(self, batch: int, frames: int, gen: torch.Generator | None) -> torch.Tensor:
        """Prompt length (frames) per utterance: 0 or a random prefix of at most ``prompt_max_ratio``."""
        use = torch.rand(batch, generator=gen) < self.prompt_prob
        limit = int(frames * self.prompt_max_ratio)
        lengths = torch.randint(0, limit + 1, (batch,), generator=gen)
        return torch.where(use, lengths, torch.zeros_like(lengths))

    def compute_loss(self, tokens: torch.Tensor, mel: torch.Tensor, spk_embedding: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """OT-CFM loss on a batch of equal-length crops: tokens (B, T), log-mel (B, n_mels, >= frames(T))."""
        tokens = self._check_tokens(tokens)
        b, n_tok = tokens.shape
        frames = self.mel_frames(n_tok)
        if mel.dim() != 3 or mel.shape[0] != b or mel.shape[1] != self.n_mels or mel.shape[2] < frames:
            raise ValueError(f"mel must be (B={b}, {self.n_mels}, >= {frames}) for {n_tok} tokens, "
                             f"got {tuple(mel.shape)}")
        dev = self.mel_mean.device
        x1 = self.normalize(mel[..., :frames].to(dev))
        mu = self.length_regulator.refine(self.length_regulator.expand(self.encode(tokens), 0, frames))
        spk = self.speaker(spk_embedding, b)

        prompt = self._prompt_split(b, frames, generator).to(dev)
        in_prompt = torch.arange(frames, device=dev).unsqueeze(0) < prompt.unsqueeze(1)  # (B, F)
        cond = x1 * in_prompt.unsqueeze(1)
        loss_mask = (~in_prompt).unsqueeze(1).float()

        t = torch.rand(b, generator=generator).to(dev)
        if self.t_scheduler == "cosine":
            t = 1.0 - torch.cos(t * 0.5 * math.pi)
        x0 = torch.randn(x1.shape, generator=generator).to(dev)
        tt = t.view(-1, 1, 1)
        xt = (1 - (1 - self.sigma_min) * tt) * x0 + tt * x1
        target = x1 - (1 - self.sigma_min) * x0

        keep = (torch.rand(b, generator=generator) >= self.training_cfg_rate).float().to(dev)
        pred = self._field(xt, mu * keep.view(-1, 1, 1), spk * keep.view(-1, 1), cond * keep.view(-1, 1, 1), t)
        denom = loss_mask.sum().clamp(min=1.0) * self.n_mels
        fm_loss = ((pred - target).square() * loss_mask).sum() / denom
        prior_loss = ((mu - x1).square() * loss_mask).sum() / denom
        total = fm_loss + self.prior_loss_weight * prior_loss if self.prior_loss_weight else fm_loss
        return {"loss": total, "fm_loss": fm_loss.detach(), "prior_loss": prior_loss.detach()}

    # ---- inference

    @torch.inference_mode()
    def inference(self, tokens: torch.Tensor | Sequence[int], *, spk_embedding: torch.Tensor | None = None,
                  prompt_tokens: torch.Tensor | Sequence[int] | None = None, prompt_mel: torch.Tensor | None = None,
                  n_steps: int | None = None, cfg_rate: float | None = None, temperature: float | None = None,
                  token_offset: int = 0, frame_start: int = 0, frame_end: int | None = None) -> torch.Tensor:
        """Log-mel (B, n_mels, frames) of absolute frames ``[frame_start, frame_end)`` of an utterance whose tokens
        from absolute index ``token_offset`` on are ``tokens``; defaults give the whole utterance."""
        tokens = self._check_tokens(tokens)
        b = tokens.shape[0]
        if frame_end is None:
            frame_end = self.mel_frames(token_offset + tokens.shape[1])
        if not 0 <= frame_start <= frame_end:
            raise ValueError(f"bad frame range [{frame_start}, {frame_end})")
        reg = self.length_regulator
        h = self.encode(tokens if prompt_tokens is None else torch.cat([self._prompt_tokens(prompt_tokens, b),
                                                                         tokens], dim=1))
        n_prompt_tok = h.shape[-1] - tokens.shape[1]
        mu = reg.expand(h[..., n_prompt_tok:], frame_start, frame_end, token_offset)
        cond = torch.zeros_like(mu)
        x0 = self.fixed_noise(frame_start, frame_end).unsqueeze(0).expand(b, -1, -1)
        n_prompt = 0
        if prompt_tokens is not None:
            p_mel = self._prompt_mel(prompt_mel, b)
            n_prompt = p_mel.shape[-1]
            mu = torch.cat([reg.expand(h[..., :n_prompt_tok], 0, n_prompt, ratio=n_prompt / n_prompt_tok), mu], -1)
            cond = torch.cat([self.normalize(p_mel), cond], dim=-1)
            x0 = torch.cat([self.fixed_noise(0, n_prompt, PROMPT_NOISE_STREAM).unsqueeze(0).expand(b, -1, -1), x0], -1)
        elif prompt_mel is not None:
            raise ValueError("prompt_mel given without prompt_tokens")
        temp = self.temperature if temperature is None else temperature
        out = self.solve_euler(x0 * temp, reg.refine(mu), self.speaker(spk_embedding, b), cond,
                               self.n_steps if n_steps is None else n_steps,
                               self.inference_cfg_rate if cfg_rate is None else cfg_rate)
        return self.denormalize(out[..., n_prompt:])

    def _prompt_tokens(self, prompt_tokens: torch.Tensor | Sequence[int], batch: int) -> torch.Tensor:
        p = self._check_tokens(prompt_tokens, "prompt_tokens")
        if p.shape[1] == 0:
            raise ValueError("prompt_tokens is empty")
        return p.expand(batch, -1)

    def _prompt_mel(self, prompt_mel: torch.Tensor | None, batch: int) -> torch.Tensor:
        if prompt_mel is None:
            raise ValueError("prompt_tokens given without prompt_mel")
        p = torch.as_tensor(prompt_mel, dtype=torch.float32, device=self.mel_mean.device)
        if p.dim() == 2:
            p = p.unsqueeze(0)
        if p.dim() != 3 or p.shape[1] != self.n_mels or p.shape[2] == 0:
            raise ValueError(f"prompt_mel must be ({self.n_mels}, P) or (B, {self.n_mels}, P), got {tuple(p.shape)}")
        return p.expand(batch, -1, -1)


def build_flow(conf: dict[str, Any], codebook_size: int, n_mels: int, mel_rate: float,
               token_rate: float) -> FlowMatching:
    """A :class:`FlowMatching` from the ``flow`` section of a token2wav config (sizes and flow settings)."""
    try:
        return FlowMatching(codebook_size=codebook_size, n_mels=n_mels, mel_rate=mel_rate, token_rate=token_rate,
                            **conf)
    except TypeError as e:
        raise TypeError(f"bad token2wav flow config: {e}") from None
