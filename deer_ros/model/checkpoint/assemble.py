"""The one strict assembler: tensors under our names from any number of sources -> a model, nothing left over.

Every expected tensor must be provided (later sources win, as the reference's load order), with the right shape,
and no source may bring a tensor the model does not know. Tensors of layers that are not built (max_exit) are
skipped, never an error. The reference loads everything with strict=False, which silently leaves random heads
when a key is renamed (reference 8.14); here that is a CheckpointError naming the keys and the file to add.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from deer_ros.model.checkpoint.errors import CheckpointError


@dataclass
class Mapped:
    """Tensors of one source under our names, plus the source keys deliberately not used and those not understood."""
    source: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    read: int = 0  # tensors the source held

    def put(self, name: str, tensor: torch.Tensor, origin: str) -> None:
        """Add a tensor; a second copy under an alias must be identical (the reference stores some twice)."""
        if name in self.tensors:
            other = self.tensors[name]
            if not (other.is_meta or tensor.is_meta) and not torch.equal(other, tensor):
                raise CheckpointError(self.source, hint=f"'{origin}' and another alias of '{name}' hold different "
                                                        "values: the file is inconsistent")
            return
        self.tensors[name] = tensor


@dataclass
class Assembly:
    """What a strict assembly took from its sources (the converter prints it)."""
    tensors: dict[str, torch.Tensor]  # our name -> tensor, exactly the model's keys
    skipped: list[str]  # our names of tensors for layers / aux heads that are not built
    per_source: list[dict[str, int]]  # per source: read, mapped, ignored, used (after later sources won)


def assemble(expected: dict[str, torch.Size], sources: list[Mapped], *, built_layers: int, full_layers: int,
             aux_heads_built: int | None, fresh: tuple[str, ...] = ()) -> Assembly:
    """Check `sources` against the `expected` names and shapes, strictly; return what to load.

    built_layers / full_layers: LLM layers built and in the config (keys of layers in between are skipped);
    aux_heads_built: aux heads built (None: the config has none). `fresh`: name prefixes left as initialised.
    """
    unknown = [f"{s.source}: {k}" for s in sources for k in s.unknown]
    merged: dict[str, torch.Tensor] = {}
    owner: dict[str, int] = {}
    for i, s in enumerate(sources):
        merged.update(s.tensors)
        owner.update(dict.fromkeys(s.tensors, i))
    skipped = [k for k in merged if k not in expected and _not_built(k, built_layers, full_layers, aux_heads_built)]
    for k in skipped:
        del merged[k]
    missing = [k for k in expected if k not in merged and not k.startswith(fresh)]
    unexpected = unknown + [k for k in merged if k not in expected]
    mis_shaped = [f"{k} {tuple(merged[k].shape)} (model {tuple(expected[k])})" for k in merged
                  if k in expected and tuple(merged[k].shape) != tuple(expected[k])]
    if missing or unexpected or mis_shaped:
        names = " + ".join(s.source for s in sources) or "no source"
        raise CheckpointError(names, missing, unexpected, mis_shaped, hint=_hint(missing, mis_shaped))
    per_source = [{"read": s.read, "mapped": len(s.tensors), "ignored": len(s.ignored),
                   "used": sum(1 for k in merged if owner[k] == i)} for i, s in enumerate(sources)]
    return Assembly(merged, skipped, per_source)


def load_state(model, sources: list[Mapped], fresh: tuple[str, ...] = ()) -> list[str]:
    """Load tensors from `sources` into `model` (a DeerModel), strictly; returns the keys skipped as not built.

    `fresh` prefixes keep the model's current values, so build such a model initialised, not with empty=True.
    Raises CheckpointError.
    """
    expected = model.state_dict()
    done = assemble({k: v.shape for k, v in expected.items()}, sources, built_layers=model.n_layers,
                    full_layers=model.config.n_layers,
                    aux_heads_built=len(model.exit_layers) if model.config.aux_heads else None, fresh=fresh)
    fresh_state = {k: v for k, v in expected.items() if k not in done.tensors}
    model.load_state_dict({**fresh_state, **done.tensors}, strict=True)
    return done.skipped


def _not_built(key: str, built_layers: int, full_layers: int, aux_heads_built: int | None) -> bool:
    """True for tensors of LLM layers / aux heads beyond what the model built (max_exit)."""
    m = re.match(r"(blocks|xattn)\.(\d+)\.", key)
    if m:
        return built_layers <= int(m[2]) < full_layers
    m = re.match(r"aux_heads\.(\d+)\.", key)
    return bool(m) and aux_heads_built is not None and int(m[1]) >= aux_heads_built


_NEEDS = {"vision": "CLIP weights (vision_weights=... / --vision-weights)",
          "blocks": "MPT weights (mpt_weights=... / --mpt-weights)",
          "head": "a trained head (a DeeR checkpoint)", "perceiver": "an OpenFlamingo or DeeR checkpoint",
          "xattn": "an OpenFlamingo or DeeR checkpoint", "wte": "an OpenFlamingo or DeeR checkpoint"}


def _hint(missing: list[str], mis_shaped: list[str]) -> str:
    hints = ["mis-shaped tensors: the model config (preset, sizes) is not the one the file was made with"] \
        if mis_shaped else []
    groups = sorted({k.split(".")[0] for k in missing})
    if not groups:
        return "; ".join(hints) or "the file has tensors this model does not know: check the preset/config"
    return "; ".join(hints + ["missing parts need: " + ", ".join(f"{g} <- {_NEEDS.get(g, 'a file that has them')}"
                                                                  for g in groups)])
