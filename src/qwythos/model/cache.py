"""The KV cache: preallocated keys/values for every layer, for a batch whose rows come and go (continuous
batching in the engine; a plain cache for one fixed batch is the same object, never resized).

Every row shares the slot count ``length``; a row that joined later (or had a shorter prompt) has invalid,
left-padded slots before its first token, marked False in ``valid``. Keys are stored after RoPE with each
row's own positions, so a row's slots can be moved left or right without changing attention. The model's
forward calls ``length`` and ``update``; the native decode step (inference/native.py) reads ``k``, ``v`` and
``valid`` directly, which stay contiguous. The batch grows (``reserve``), drops rows (``select``) and takes
in rows prefilled elsewhere (``merge``).
"""

from __future__ import annotations

import torch

from .config import ArchConfig


class BatchCache:
    def __init__(
        self,
        arch: ArchConfig,
        batch: int,
        capacity: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ):
        shape = (arch.num_hidden_layers, batch, arch.num_key_value_heads, capacity, arch.head_dim)
        self._set(
            torch.zeros(shape, dtype=dtype, device=device),  # (L, B, KVH, S, D)
            torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(batch, capacity, dtype=torch.bool, device=device),  # (B, S)
        )
        self.length = 0

    def _set(self, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor) -> None:
        self.k, self.v, self.valid = k, v, valid
        self._k = [k[i] for i in range(k.shape[0])]  # per-layer views: one indexing op less per access
        self._v = [v[i] for i in range(v.shape[0])]

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v (B, KVH, T, D) after the filled slots; return every key/value so far (views)."""
        start, end = self.length, self.length + k.shape[2]
        assert end <= self.capacity, "reserve() slots before the forward"
        keys, values = self._k[layer], self._v[layer]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return keys[:, :, :end], values[:, :, :end]

    def reserve(self, n: int, valid: torch.Tensor) -> None:
        """Make room for n more slots and mark them valid per row: valid (B, n) bool."""
        need = self.length + n
        if need > self.capacity:
            self._resize(max(need, 2 * self.capacity), offset=0)
        self.valid[:, self.length : need] = valid

    def key_valid(self, n: int) -> torch.Tensor | None:
        """The key mask for a forward of n new slots, or None when no row has padding."""
        v = self.valid[:, : self.length + n]
        return None if bool(v.all()) else v

    def select(self, rows: list[int]) -> None:
        """Keep only these rows, then drop leading slots that no remaining row uses."""
        idx = torch.tensor(rows, dtype=torch.long, device=self.k.device)
        self._set(self.k[:, idx], self.v[:, idx], self.valid[idx])
        used = self.valid[:, : self.length].any(0).nonzero()
        first = int(used[0]) if len(used) else self.length
        if first > 0:
            self._resize(self.capacity, offset=-first)

    def merge(self, other: BatchCache) -> None:
        """Append other's rows, aligning both on their last slot (the shorter side is left-padded)."""
        length = max(self.length, other.length)
        a, b = self._shifted(length - self.length, length), other._shifted(length - other.length, length)
        self._set(torch.cat([a[0], b[0]], dim=1), torch.cat([a[1], b[1]], dim=1), torch.cat([a[2], b[2]]))
        self.length = length

    def _shifted(self, offset: int, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k, v, valid moved right by offset into a capacity with some headroom past ``length``."""
        cap = length + max(16, length // 4)
        L, B, H, _, D = self.k.shape
        k = self.k.new_zeros(L, B, H, cap, D)
        v = self.v.new_zeros(L, B, H, cap, D)
        valid = self.valid.new_zeros(B, cap)
        n = self.length
        k[:, :, :, offset : offset + n] = self.k[:, :, :, :n]
        v[:, :, :, offset : offset + n] = self.v[:, :, :, :n]
        valid[:, offset : offset + n] = self.valid[:, :n]
        return k, v, valid

    def _resize(self, capacity: int, offset: int) -> None:
        """New capacity; slots move by offset (negative: drop the first -offset slots)."""
        L, B, H, _, D = self.k.shape
        n = self.length + min(offset, 0)
        src = slice(-offset, self.length) if offset < 0 else slice(0, self.length)
        dst = slice(0, n) if offset < 0 else slice(offset, offset + self.length)
        k, v = self.k.new_zeros(L, B, H, capacity, D), self.v.new_zeros(L, B, H, capacity, D)
        valid = self.valid.new_zeros(B, capacity)
        k[:, :, :, dst], v[:, :, :, dst], valid[:, dst] = (
            self.k[:, :, :, src],
            self.v[:, :, :, src],
            self.valid[:, src],
        )
        self._set(k, v, valid)
        self.length = n if offset < 0 else self.length + offset
