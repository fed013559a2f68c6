"""Nodes: every element of every node site, with one flat numbering per model.

A `NodeId` is `(site, index)`, e.g. `("blocks.1.attn.q", 37)`. Pruning works on one flat vector
of mask scores; `NodeLayout` maps between that vector and per-site index sets, in the model's
forward order (layer by layer, the eight site kinds in `SITE_KINDS` order).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class NodeId(NamedTuple):
    site: str
    index: int

    def __str__(self) -> str:
        return f"{self.site}[{self.index}]"


class NodeLayout:
    """Site names, sizes and offsets of one model's nodes."""

    def __init__(self, model):
        self.sites = model.site_names()
        self.sizes = [model.site_dim(name.split(".", 2)[2]) for name in self.sites]
        self.offsets = [0]
        for n in self.sizes:
            self.offsets.append(self.offsets[-1] + n)
        self.total = self.offsets[-1]
        self._index = {s: i for i, s in enumerate(self.sites)}

    def slices(self) -> dict[str, slice]:
        return {s: slice(self.offsets[i], self.offsets[i + 1]) for i, s in enumerate(self.sites)}

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-site views of a flat (total,) vector."""
        return dict(zip(self.sites, flat.split(self.sizes)))

    def join(self, per_site: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([per_site[s].reshape(-1) for s in self.sites])

    def flat_index(self, node: NodeId | tuple[str, int]) -> int:
        site, index = node
        return self.offsets[self._index[site]] + index

    def node(self, flat: int) -> NodeId:
        i = int(torch.searchsorted(torch.tensor(self.offsets), flat, right=True)) - 1
        return NodeId(self.sites[i], flat - self.offsets[i])

    def to_sets(self, keep: torch.Tensor) -> dict[str, list[int]]:
        """A boolean (total,) keep vector as {site: sorted kept indices} (all sites present)."""
        return {s: torch.nonzero(k).flatten().tolist() for s, k in self.split(keep.bool()).items()}

    def from_sets(self, nodes: dict[str, list[int]]) -> torch.Tensor:
        keep = torch.zeros(self.total, dtype=torch.bool)
        for site, idx in nodes.items():
            i = self._index[site]
            keep[torch.as_tensor(idx, dtype=torch.long) + self.offsets[i]] = True
        return keep
